package gateway

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
)

// Limiter applies the plan of a key: a GCRA rate limit (redis_rate) and a
// monthly request quota counted in Redis. When Redis fails it lets the request
// through (fail-open) and says so in the result, so that an outage of Redis
// does not take the customer API down with it.
type Limiter struct {
	rdb    *redis.Client
	gcra   *redis_rate.Limiter
	prefix string
	now    func() time.Time
	// downUntil (unix nanos): after a Redis error, requests skip Redis for a
	// second instead of each waiting out a timeout.
	downUntil atomic.Int64
}

var errRedisCoolingDown = errors.New("redis failed recently; skipping it for a second")

func (l *Limiter) failed(err error) Verdict {
	l.downUntil.Store(l.now().Add(time.Second).UnixNano())
	return Verdict{Allowed: true, FailOpen: true, Err: err}
}

// Verdict is the outcome of Limiter.Allow.
type Verdict struct {
	Allowed    bool
	Reason     string // rate_limited or quota_exceeded when not allowed
	Limit      string // X-RateLimit-Limit
	Remaining  int
	Reset      time.Duration
	RetryAfter time.Duration
	FailOpen   bool // Redis failed; the request was let through
	Err        error
}

func newLimiter(rdb *redis.Client, prefix string) *Limiter {
	if rdb == nil {
		return nil
	}
	return &Limiter{rdb: rdb, gcra: redis_rate.NewLimiter(rdb), prefix: prefix, now: time.Now}
}

// planLimit turns a fractional requests-per-second into redis_rate's integer
// rate per period.
func planLimit(rps float64, burst int) redis_rate.Limit {
	if burst < 1 {
		burst = 1
	}
	if rps >= 1 && rps == math.Trunc(rps) {
		return redis_rate.Limit{Rate: int(rps), Period: time.Second, Burst: burst}
	}
	// e.g. 0.5 rps -> 30 per minute; 2.5 rps -> 150 per minute
	rate := int(math.Round(rps * 60))
	if rate < 1 {
		rate = 1
	}
	return redis_rate.Limit{Rate: rate, Period: time.Minute, Burst: burst}
}

// Allow checks k's rate limit, then its monthly quota.
func (l *Limiter) Allow(ctx context.Context, k *Key) Verdict {
	v := Verdict{Allowed: true}
	if l == nil || k.RPS <= 0 {
		return v
	}
	if l.now().UnixNano() < l.downUntil.Load() {
		return Verdict{Allowed: true, FailOpen: true, Err: errRedisCoolingDown}
	}
	ctx, cancel := context.WithTimeout(ctx, 250*time.Millisecond)
	defer cancel()
	lim := planLimit(k.RPS, k.Burst)
	v.Limit = strconv.FormatFloat(k.RPS, 'f', -1, 64)
	res, err := l.gcra.Allow(ctx, l.prefix+"rl:"+strconv.FormatInt(k.ID, 10), lim)
	if err != nil {
		return l.failed(err)
	}
	v.Remaining, v.Reset = res.Remaining, res.ResetAfter
	if res.Allowed == 0 {
		v.Allowed, v.Reason, v.RetryAfter = false, "rate_limited", res.RetryAfter
		return v
	}
	if k.Quota > 0 {
		now := l.now().UTC()
		key := fmt.Sprintf("%squota:%d:%s", l.prefix, k.ID, now.Format("200601"))
		pipe := l.rdb.TxPipeline()
		incr := pipe.Incr(ctx, key)
		pipe.Expire(ctx, key, 35*24*time.Hour)
		if _, err := pipe.Exec(ctx); err != nil {
			return l.failed(err)
		}
		if incr.Val() > k.Quota {
			next := time.Date(now.Year(), now.Month()+1, 1, 0, 0, 0, 0, time.UTC)
			v.Allowed, v.Reason, v.RetryAfter = false, "quota_exceeded", next.Sub(now)
		}
	}
	return v
}
