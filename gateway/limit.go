package gateway

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"

	"github.com/nlpswarm/nlpswarm/internal/limitkeys"
)

// Limiter applies the plan of a key: a rate limit and a monthly request
// quota, both kept in Redis (the rate limit as redis_rate's GCRA) and so
// shared by every gateway replica.
//
// Redis stays off each request's path: a gateway admits requests against a
// local token bucket of the same plan (golang.org/x/time/rate) and settles
// what it admitted with Redis every SyncInterval (50 ms): redis_rate's
// AllowAtMost for the requests admitted, INCRBY for the quota. When Redis
// answers that the key's shared budget is spent (other gateways used it),
// the requests it did not take are carried to the next settlements as a
// debt, and this gateway refuses the key until the shared bucket can have
// absorbed the debt, and empties its local bucket. One gateway thus enforces a plan exactly; N gateways together may
// admit at most one sync interval's worth (plus a burst) each beyond the plan
// before the settlement stops them. The quota's count is read from Redis
// once per key and month, then kept up to date by the settlements.
//
// When Redis fails the gateway keeps enforcing the local buckets, lets
// requests through that only Redis could refuse (fail-open: the verdict says
// so), skips Redis for a second, and settles what it admitted meanwhile once
// Redis answers again.
type Limiter struct {
	rdb    *redis.Client
	gcra   *redis_rate.Limiter
	prefix string
	now    func() time.Time
	sync   time.Duration

	mu   sync.Mutex
	keys map[int64]*keyLimit

	redisDown cooldown
}

// DefaultLimitSync is how often admitted requests are settled with Redis.
const DefaultLimitSync = 50 * time.Millisecond

// keyLimit is one key's local state.
type keyLimit struct {
	mu       sync.Mutex
	rps      float64
	burst    int
	local    *rate.Limiter
	pending  int // admitted since the last settlement
	blocked  time.Time
	month    string // the quota figures below are for this UTC month (YYYYMM)
	used     int64  // the quota's count in Redis at the last settlement; -1: not read yet
	qPending int64  // counted against the quota since the last settlement
	qFlight  int64  // counted, and in a settlement not yet answered
	lastSeen time.Time
}

// Verdict is the outcome of Limiter.Allow.
type Verdict struct {
	Allowed    bool
	Reason     string // rate_limited or quota_exceeded when not allowed
	Limit      string // X-RateLimit-Limit
	Remaining  int
	Reset      time.Duration
	RetryAfter time.Duration
	FailOpen   bool // Redis is failing: what only Redis could refuse was let through
	Err        error
}

func newLimiter(rdb *redis.Client, prefix string, syncEvery time.Duration) *Limiter {
	if rdb == nil {
		return nil
	}
	if syncEvery <= 0 {
		syncEvery = DefaultLimitSync
	}
	return &Limiter{rdb: rdb, gcra: redis_rate.NewLimiter(rdb), prefix: prefix, now: time.Now, sync: syncEvery, keys: map[int64]*keyLimit{}}
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
	r := int(math.Round(rps * 60))
	if r < 1 {
		r = 1
	}
	return redis_rate.Limit{Rate: r, Period: time.Minute, Burst: burst}
}

// state returns k's local state, made or updated for k's current plan.
func (l *Limiter) state(k *Key, now time.Time) *keyLimit {
	l.mu.Lock()
	st, ok := l.keys[k.ID]
	if !ok {
		st = &keyLimit{used: -1}
		l.keys[k.ID] = st
	}
	l.mu.Unlock()
	st.mu.Lock()
	if st.local == nil || st.rps != k.RPS || st.burst != k.Burst {
		burst := max(k.Burst, 1)
		if st.local == nil {
			st.local = rate.NewLimiter(rate.Limit(k.RPS), burst)
		} else {
			st.local.SetLimitAt(now, rate.Limit(k.RPS))
			st.local.SetBurstAt(now, burst)
		}
		st.rps, st.burst = k.RPS, k.Burst
	}
	st.lastSeen = now
	return st // locked
}

// Allow checks k's rate limit, then its monthly quota, and counts the
// request against both when it is allowed.
func (l *Limiter) Allow(ctx context.Context, k *Key) Verdict {
	v := Verdict{Allowed: true}
	if l == nil || k.RPS <= 0 {
		return v
	}
	now := l.now()
	st := l.state(k, now)
	defer st.mu.Unlock()
	v.Limit = strconv.FormatFloat(k.RPS, 'f', -1, 64)
	if l.redisDown.active() {
		v.FailOpen, v.Err = true, l.redisDown.cause()
	}
	if now.Before(st.blocked) { // Redis said the shared budget is spent
		v.Allowed, v.Reason, v.RetryAfter, v.Reset = false, "rate_limited", st.blocked.Sub(now), st.blocked.Sub(now)
		return v
	}
	if k.Quota > 0 {
		utc := now.UTC()
		if month := limitkeys.Month(utc); st.month != month {
			st.month, st.used, st.qPending, st.qFlight = month, -1, 0, 0
		}
		if st.used < 0 && !l.redisDown.active() {
			used, err := l.rdb.Get(ctx, l.quotaKey(k.ID, st.month)).Int64()
			switch {
			case err == nil || errors.Is(err, redis.Nil):
				st.used = used
			default:
				l.redisDown.trip(err)
				v.FailOpen, v.Err = true, err
			}
		}
		if st.used >= 0 && st.used+st.qFlight+st.qPending >= k.Quota {
			next := time.Date(utc.Year(), utc.Month()+1, 1, 0, 0, 0, 0, time.UTC)
			v.Allowed, v.Reason, v.RetryAfter = false, "quota_exceeded", next.Sub(utc)
			return v
		}
	}
	r := st.local.ReserveN(now, 1)
	if d := r.DelayFrom(now); !r.OK() || d > 0 {
		r.CancelAt(now)
		v.Allowed, v.Reason, v.RetryAfter, v.Reset = false, "rate_limited", d, st.full(now)
		return v
	}
	st.pending++
	if k.Quota > 0 {
		st.qPending++
	}
	v.Remaining, v.Reset = int(st.local.TokensAt(now)), st.full(now)
	return v
}

// full is how long until the local bucket is full again.
func (st *keyLimit) full(now time.Time) time.Duration {
	missing := float64(st.local.Burst()) - st.local.TokensAt(now)
	if missing <= 0 || st.rps <= 0 {
		return 0
	}
	return time.Duration(missing / st.rps * float64(time.Second))
}

// the key names are internal/limitkeys', which the backoffice reads too
func (l *Limiter) quotaKey(id int64, month string) string {
	return limitkeys.QuotaKey(l.prefix, id, month)
}

func (l *Limiter) rateKey(id int64) string { return limitkeys.RateKey(l.prefix, id) }

// Run settles with Redis every sync interval until ctx ends.
func (l *Limiter) Run(ctx context.Context) {
	if l == nil {
		return
	}
	t := time.NewTicker(l.sync)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = l.Settle(ctx)
		}
	}
}

// forgetAfter: the state of a key idle this long (and settled) is dropped.
const forgetAfter = 10 * time.Minute

type settlement struct {
	id       int64
	st       *keyLimit
	rps      float64
	burst    int
	n        int
	month    string
	qn       int64
	rateRes  *redis_rate.Result
	quotaCmd *redis.IntCmd
}

// Settle tells Redis what this gateway admitted since the last call and
// applies its answers. A failed settlement is kept for the next one.
func (l *Limiter) Settle(ctx context.Context) error {
	if l == nil || l.redisDown.active() {
		return nil
	}
	now := l.now()
	var work []*settlement
	l.mu.Lock()
	for id, st := range l.keys {
		st.mu.Lock()
		if st.pending > 0 || st.qPending > 0 {
			work = append(work, &settlement{id: id, st: st, rps: st.rps, burst: st.burst, n: st.pending, month: st.month, qn: st.qPending})
			// still counted while Redis answers: a request admitted meanwhile
			// sees them, or the quota could be passed by a settlement's worth
			st.qFlight += st.qPending
			st.pending, st.qPending = 0, 0
		} else if now.Sub(st.lastSeen) > forgetAfter {
			delete(l.keys, id)
		}
		st.mu.Unlock()
	}
	l.mu.Unlock()
	if len(work) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	err := l.settle(ctx, work)
	if err != nil {
		l.redisDown.trip(err)
	}
	for _, w := range work {
		w.st.mu.Lock()
		if w.rateRes == nil { // not settled: count it again next time
			w.st.pending = min(w.st.pending+w.n, max(w.burst, 1)+int(w.rps))
		} else if debt := w.n - w.rateRes.Allowed; debt > 0 {
			// other gateways spent the shared budget: what this one admitted
			// beyond it is charged at the next settlements, and the key is
			// refused here until the shared bucket has absorbed it
			debt = min(debt, max(w.burst, 1)+int(w.rps))
			w.st.pending += debt
			wait := time.Duration(float64(debt) / w.rps * float64(time.Second))
			w.st.blocked = now.Add(max(wait, w.rateRes.RetryAfter, l.sync))
			if t := int(w.st.local.TokensAt(now)); t > 0 {
				w.st.local.AllowN(now, t)
			}
		}
		if w.st.month == w.month {
			w.st.qFlight -= w.qn
		}
		switch {
		case w.qn == 0:
		case w.quotaCmd == nil || w.quotaCmd.Err() != nil:
			if w.st.month == w.month {
				w.st.qPending += w.qn
			}
		case w.st.month == w.month:
			w.st.used = w.quotaCmd.Val()
		}
		w.st.mu.Unlock()
	}
	return err
}

func (l *Limiter) settle(ctx context.Context, work []*settlement) error {
	// quotas: one pipeline for every key
	var quotas []*settlement
	for _, w := range work {
		if w.qn > 0 && w.month != "" {
			quotas = append(quotas, w)
		}
	}
	if len(quotas) > 0 {
		if _, err := l.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			for _, w := range quotas {
				key := l.quotaKey(w.id, w.month)
				w.quotaCmd = p.IncrBy(ctx, key, w.qn)
				p.Expire(ctx, key, 35*24*time.Hour)
			}
			return nil
		}); err != nil {
			return fmt.Errorf("settle quotas: %w", err)
		}
	}
	// rate limits: the GCRA script per key. The requests of one interval
	// arrive together, so the shared bucket's burst gets one interval of the
	// plan's rate on top: a key at its plan's rate is never refused here.
	for _, w := range work {
		if w.n == 0 {
			continue
		}
		extra := int(math.Ceil(w.rps * 2 * l.sync.Seconds()))
		res, err := l.gcra.AllowAtMost(ctx, l.rateKey(w.id), planLimit(w.rps, max(w.burst, 1)+extra), w.n)
		if err != nil {
			return fmt.Errorf("settle rate limit of key %d: %w", w.id, err)
		}
		w.rateRes = res
	}
	return nil
}
