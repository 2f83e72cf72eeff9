package limitkeys

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Month is the quota month of t: its UTC year and month as YYYYMM.
func Month(t time.Time) string { return t.UTC().Format("200601") }

// QuotaKey is the counter of key id's requests in month (YYYYMM).
func QuotaKey(prefix string, id int64, month string) string {
	return prefix + "quota:" + strconv.FormatInt(id, 10) + ":" + month
}

// TokenMonthKey is the counter of the tokens (input + output) key id spent
// in month (YYYYMM).
func TokenMonthKey(prefix string, id int64, month string) string {
	return prefix + "tokens:" + strconv.FormatInt(id, 10) + ":" + month
}

// Minute is the token-rate window of t: its UTC minute as YYYYMMDDHHMM.
func Minute(t time.Time) string { return t.UTC().Format("200601021504") }

// TokenMinuteKey is the counter of the tokens key id spent in minute
// (YYYYMMDDHHMM, Minute).
func TokenMinuteKey(prefix string, id int64, minute string) string {
	return prefix + "tpm:" + strconv.FormatInt(id, 10) + ":" + minute
}

// TTLs of the token counters: a minute's count outlives its minute a
// little; a month's, as the quota's, a few days past its month.
const (
	TokenMinuteTTL = 2 * time.Minute
	TokenMonthTTL  = 35 * 24 * time.Hour
)

// RateKey is the name the gateways give redis_rate for key id's GCRA.
func RateKey(prefix string, id int64) string { return prefix + "rl:" + strconv.FormatInt(id, 10) }

// gcraStoreKey is where redis_rate keeps RateKey's state (its own "rate:"
// prefix, see github.com/go-redis/redis_rate/v10).
func gcraStoreKey(prefix string, id int64) string { return "rate:" + RateKey(prefix, id) }

// gcraEpoch is redis_rate's epoch for the theoretical arrival time.
const gcraEpoch = 1483228800 // 2017-01-01T00:00:00Z

// Plan is what Read needs of a key's plan.
type Plan struct {
	ID  int64   // the API key's id
	RPS float64 // the plan's requests per second (0: no rate limit)
}

// State is one key's figures as Redis holds them now.
type State struct {
	ID int64 `json:"id"`
	// QuotaUsed is the requests counted against the quota this month (0
	// when nothing was counted, or the plan has no quota).
	QuotaUsed int64 `json:"quota_used"`
	// TokensMonth is the tokens (input + output) counted against the
	// plan's monthly token budget this month (0 when none were counted).
	TokensMonth int64 `json:"tokens_month"`
	// Backlog is how many requests beyond the plan's steady rate the rate
	// limit's bucket is absorbing now (0: at or under the rate).
	Backlog float64 `json:"backlog"`
}

// Read fetches the quota counts of month and the rate-limit backlogs of
// keys in one round trip; now comes from Redis's own clock, the clock
// redis_rate's script uses.
func Read(ctx context.Context, rdb redis.Cmdable, prefix string, keys []Plan, month string) ([]State, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	quota := make([]*redis.StringCmd, len(keys))
	tat := make([]*redis.StringCmd, len(keys))
	tokens := make([]*redis.StringCmd, len(keys))
	var now *redis.TimeCmd
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		now = p.Time(ctx)
		for i, k := range keys {
			quota[i] = p.Get(ctx, QuotaKey(prefix, k.ID, month))
			tat[i] = p.Get(ctx, gcraStoreKey(prefix, k.ID))
			tokens[i] = p.Get(ctx, TokenMonthKey(prefix, k.ID, month))
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read rate limits and quotas: %w", err)
	}
	t := now.Val()
	nowSec := float64(t.Unix()-gcraEpoch) + float64(t.Nanosecond())/1e9
	out := make([]State, len(keys))
	for i, k := range keys {
		out[i].ID = k.ID
		if v, err := quota[i].Int64(); err == nil {
			out[i].QuotaUsed = v
		}
		if v, err := tokens[i].Int64(); err == nil {
			out[i].TokensMonth = v
		}
		if v, err := tat[i].Float64(); err == nil {
			out[i].Backlog = Backlog(v, nowSec, k.RPS)
		}
	}
	return out, nil
}

// Backlog is the requests a GCRA bucket with theoretical arrival time tat
// holds beyond the steady rate rps at now (both in seconds since the same
// epoch), rounded to a tenth.
func Backlog(tat, now, rps float64) float64 {
	if rps <= 0 || tat <= now {
		return 0
	}
	return math.Round((tat-now)*rps*10) / 10
}
