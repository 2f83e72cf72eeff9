package loadreport

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Figures are one model's load at one gateway over its last period.
type Figures struct {
	Inflight    float64 `json:"inflight"`     // average requests in flight over the period, held ones included
	Held        int     `json:"held"`         // requests held now, waiting for a replica
	Requests    int64   `json:"requests"`     // requests that arrived during the period
	Period      float64 `json:"period"`       // seconds the figures cover
	LastRequest int64   `json:"last_request"` // unix milliseconds of the last arrival (0: none yet)
}

// Total is one model's load summed over the live gateways.
type Total struct {
	Inflight    float64
	Rate        float64 // requests per second
	Held        int
	LastRequest time.Time // zero when no gateway saw one
	Gateways    int       // gateways that reported the model
}

func gwKey(prefix, id string) string { return prefix + "load:gw:" + id }
func setKey(prefix string) string    { return prefix + "load:gateways" }

// WakeKey is the list of wake-ups (tests and operators read its length).
func WakeKey(prefix string) string { return prefix + "load:wake" }

// Publish replaces gateway id's figures (atomically: a reader never sees
// half of them) and keeps them for ttl.
func Publish(ctx context.Context, rdb redis.Cmdable, prefix, id string, figures map[string]Figures, ttl time.Duration) error {
	now := time.Now()
	key := gwKey(prefix, id)
	_, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, key)
		if len(figures) > 0 {
			vals := make([]any, 0, 2*len(figures))
			for model, f := range figures {
				b, _ := json.Marshal(f)
				vals = append(vals, model, b)
			}
			p.HSet(ctx, key, vals...)
			p.PExpire(ctx, key, ttl)
		}
		p.ZAdd(ctx, setKey(prefix), redis.Z{Score: float64(now.UnixMilli()), Member: id})
		return nil
	})
	return err
}

// Read sums the figures of the gateways that reported within ttl, per model.
func Read(ctx context.Context, rdb redis.Cmdable, prefix string, ttl time.Duration) (map[string]Total, error) {
	now := time.Now()
	// forget gateways silent for long (their hashes expired already)
	rdb.ZRemRangeByScore(ctx, setKey(prefix), "-inf", strconv.FormatInt(now.Add(-10*ttl).UnixMilli(), 10))
	ids, err := rdb.ZRangeByScore(ctx, setKey(prefix), &redis.ZRangeBy{Min: strconv.FormatInt(now.Add(-ttl).UnixMilli(), 10), Max: "+inf"}).Result()
	if err != nil {
		return nil, err
	}
	out := map[string]Total{}
	if len(ids) == 0 {
		return out, nil
	}
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	if _, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HGetAll(ctx, gwKey(prefix, id))
		}
		return nil
	}); err != nil {
		return nil, err
	}
	for _, c := range cmds {
		for model, raw := range c.Val() {
			var f Figures
			if json.Unmarshal([]byte(raw), &f) != nil {
				continue
			}
			t := out[model]
			t.Inflight += f.Inflight
			if f.Period > 0 {
				t.Rate += float64(f.Requests) / f.Period
			}
			t.Held += f.Held
			if f.LastRequest > 0 {
				if lr := time.UnixMilli(f.LastRequest); lr.After(t.LastRequest) {
					t.LastRequest = lr
				}
			}
			t.Gateways++
			out[model] = t
		}
	}
	return out, nil
}

// maxWake bounds the wake-up list when no scheduler drains it.
const maxWake = 1000

// Wakeup asks the autoscaler for replicas of a model at zero. Held is how
// many requests the gateway holds for it when it sends the wake-up, so that
// a burst gets the replicas it needs in one scale-up.
type Wakeup struct {
	Model string `json:"model"`
	Held  int    `json:"held"`
}

// Wake asks the autoscaler for replicas of a model now at zero.
func Wake(ctx context.Context, rdb redis.Cmdable, prefix string, w Wakeup) error {
	b, err := json.Marshal(w)
	if err != nil {
		return err
	}
	_, err = rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.LPush(ctx, WakeKey(prefix), b)
		p.LTrim(ctx, WakeKey(prefix), 0, maxWake-1)
		return nil
	})
	return err
}

// WaitWake blocks until a wake-up arrives or timeout (at least 1 s, Redis'
// smallest blocking timeout) passes; on timeout the Wakeup is zero. An entry
// that is not a Wakeup (a bare model name, pushed by hand) wakes that model.
func WaitWake(ctx context.Context, rdb redis.Cmdable, prefix string, timeout time.Duration) (Wakeup, error) {
	timeout = max(timeout, time.Second).Round(time.Second)
	res, err := rdb.BRPop(ctx, timeout, WakeKey(prefix)).Result()
	if errors.Is(err, redis.Nil) {
		return Wakeup{}, nil
	}
	if err != nil {
		return Wakeup{}, err
	}
	var w Wakeup
	if json.Unmarshal([]byte(res[1]), &w) != nil || w.Model == "" {
		w = Wakeup{Model: res[1]}
	}
	return w, nil
}
