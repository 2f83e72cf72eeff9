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
	"github.com/jackc/pgx/v5/pgxpool"
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
// The quota's count survives Redis losing it (a restart: Redis keeps no
// data; a flush; an eviction): a count missing in Redis is seeded from the
// month's metered requests in Postgres (the usage table), or from what this
// gateway last knew when that is more, before it is counted on. What it can
// miss is the requests not yet flushed to Postgres by other gateways
// (--usageflush, 10 s of traffic) when Redis lost the count.
//
// When Redis fails the gateway keeps enforcing the local buckets, lets
// requests through that only Redis could refuse (fail-open: the verdict says
// so), skips Redis for a second, and settles what it admitted meanwhile once
// Redis answers again.
type Limiter struct {
	rdb    *redis.Client
	db     *pgxpool.Pool // optional: the usage a lost quota count is seeded from
	gcra   *redis_rate.Limiter
	prefix string
	now    func() time.Time
	sync   time.Duration

	mu   sync.Mutex
	keys map[int64]*keyLimit

	redisDown cooldown
	pgDown    cooldown // the usage query failed: no seeding for a second
}

// DefaultLimitSync is how often admitted requests are settled with Redis.
const DefaultLimitSync = 50 * time.Millisecond

// keyLimit is one key's local state.
type keyLimit struct {
	mu       sync.Mutex
	rps      float64
	limit    string // rps as X-RateLimit-Limit writes it
	burst    int
	local    *rate.Limiter
	pending  int // admitted since the last settlement
	blocked  time.Time
	month    string    // the quota figures below are for this UTC month (YYYYMM)
	used     int64     // the quota's count in Redis at the last settlement; -1: not read yet
	usedAt   time.Time // when used was read or settled
	qPending int64     // counted against the quota since the last settlement, less refunds (refundQuota; may be below zero)
	qFlight  int64     // counted, and in a settlement not yet answered
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

func newLimiter(rdb *redis.Client, db *pgxpool.Pool, prefix string, syncEvery time.Duration) *Limiter {
	if rdb == nil {
		return nil
	}
	if syncEvery <= 0 {
		syncEvery = DefaultLimitSync
	}
	return &Limiter{rdb: rdb, db: db, gcra: redis_rate.NewLimiter(rdb), prefix: prefix, now: time.Now, sync: syncEvery, keys: map[int64]*keyLimit{}}
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
		st.limit = strconv.FormatFloat(k.RPS, 'f', -1, 64)
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
	v.Limit = st.limit
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
		if st.used < 0 && !l.redisDown.active() && !l.pgDown.active() {
			used, err := l.rdb.Get(ctx, l.quotaKey(k.ID, st.month)).Int64()
			switch {
			case errors.Is(err, redis.Nil): // lost, or the key's first request this month
				used, err = l.seedQuota(ctx, k.ID, st.month, 0, 0)
			case err != nil:
				l.redisDown.trip(err)
			}
			if err != nil {
				v.FailOpen, v.Err = true, err
			} else {
				st.used, st.usedAt = used, now
			}
		}
		if st.used >= 0 && st.used+st.qFlight+st.qPending >= k.Quota && now.Sub(st.usedAt) > quotaRecheck &&
			!l.redisDown.active() {
			// refused on a count this gateway read a while ago: another
			// gateway may have refunded a cancelled job's texts since
			// (refundQuota); read it again, at most every quotaRecheck
			st.usedAt = now
			if used, err := l.rdb.Get(ctx, l.quotaKey(k.ID, st.month)).Int64(); err == nil {
				st.used = used
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

// quotaTTL keeps a month's count a few days past the month.
const quotaTTL = 35 * 24 * time.Hour

// usageQueryTimeout bounds the query that seeds a lost quota count.
const usageQueryTimeout = time.Second

// Sums of the usage table a lost count is seeded from (constants: never
// from input).
const (
	sumRequests = "requests"
	sumTokens   = "input_tokens + output_tokens"
)

// monthUsage is the sum (sumRequests or sumTokens) of key id's usage
// metered in Postgres for month (YYYYMM, UTC); 0 without Postgres.
func (l *Limiter) monthUsage(ctx context.Context, id int64, month, sum string) (int64, error) {
	if l.db == nil {
		return 0, nil
	}
	start, err := time.Parse("200601", month)
	if err != nil {
		return 0, fmt.Errorf("quota month %q: %w", month, err)
	}
	ctx, cancel := context.WithTimeout(ctx, usageQueryTimeout)
	defer cancel()
	var n int64
	err = l.db.QueryRow(ctx, `SELECT COALESCE(SUM(`+sum+`), 0)::bigint FROM usage
		WHERE api_key_id = $1 AND day >= $2::date AND day < $3::date`,
		id, start, start.AddDate(0, 1, 0)).Scan(&n)
	if err != nil {
		l.pgDown.trip(err)
		return 0, fmt.Errorf("seed count of key %d from usage: %w", id, err)
	}
	return n, nil
}

// seedQuota writes key id's count for month into Redis where it is missing:
// the month's usage in Postgres or floor (what this gateway knew), whichever
// is more, plus add (requests being settled, less refunds). When another gateway seeded it
// first, add goes on top of that. It returns the count in Redis.
func (l *Limiter) seedQuota(ctx context.Context, id int64, month string, floor, add int64) (int64, error) {
	return l.seedCount(ctx, l.quotaKey(id, month), id, month, sumRequests, floor, add)
}

// seedCount is seedQuota for any monthly counter key of key id, seeded
// from the usage table's sum.
func (l *Limiter) seedCount(ctx context.Context, key string, id int64, month, sum string, floor, add int64) (int64, error) {
	n, err := l.monthUsage(ctx, id, month, sum)
	if err != nil {
		return 0, err
	}
	n = max(max(n, floor)+add, 0) // (add below zero: a refund, never below zero)
	set, err := l.rdb.SetNX(ctx, key, n, quotaTTL).Result()
	switch {
	case err != nil:
	case set:
		return n, nil
	case add == 0:
		n, err = l.rdb.Get(ctx, key).Int64()
	default:
		n, err = l.rdb.IncrBy(ctx, key, add).Result()
		if err == nil && n < 0 { // a refund larger than what another gateway seeded
			n, err = 0, l.rdb.Set(ctx, key, 0, redis.KeepTTL).Err()
		}
	}
	if err != nil {
		l.redisDown.trip(err)
		return 0, fmt.Errorf("seed count of key %d: %w", id, err)
	}
	return n, nil
}

// quotaIncr adds ARGV[1] to an existing count, never below zero (a
// settlement carries a refund as a negative count), and renews its TTL
// (ARGV[2] seconds); a missing count (Redis lost it) is left alone and
// answers -1, for seedQuota.
var quotaIncr = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if n < 0 then redis.call('SET', KEYS[1], 0) n = 0 end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return n`)

// quotaRecheck is how often a key refused for its quota has its count
// read again from Redis.
const quotaRecheck = 5 * time.Second

// quotaRefund takes ARGV[1] from an existing count, never below zero; a
// missing count is left alone (seeded again from usage, which never held
// what is refunded) and answers -1.
var quotaRefund = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local n = redis.call('DECRBY', KEYS[1], ARGV[1])
if n < 0 then redis.call('SET', KEYS[1], 0, 'KEEPTTL') n = 0 end
return n`)

// refundQuota gives back n units of key id's quota count for month
// (YYYYMM): the texts of a cancelled job that were charged at its
// acceptance and never processed. Where this gateway keeps the key's count
// for that month, the refund is counted there at once, as a negative
// pending count, and the next settlement takes it off the count in Redis
// (below zero never): taken from Redis at once, it raced a settlement on
// its way there, which could find the count not yet raised by the charge
// (a refund never takes it below zero) or not yet seeded, or answer with a
// count from before the refund, and the refund was lost. Otherwise (another
// gateway charged it, or another month) it is taken from Redis at once.
// This gateway's own figure follows at once; the others' read the count
// again when it refuses them (quotaRecheck).
func (l *Limiter) refundQuota(ctx context.Context, id int64, month string, n int64) error {
	if l == nil || n <= 0 {
		return nil
	}
	l.mu.Lock() // (held while counting: Settle forgets idle keys under it)
	if st := l.keys[id]; st != nil {
		st.mu.Lock()
		mine := st.month == month
		if mine {
			st.qPending -= n
		}
		st.mu.Unlock()
		if mine {
			l.mu.Unlock()
			return nil
		}
	}
	l.mu.Unlock()
	if _, err := quotaRefund.Run(ctx, l.rdb, []string{l.quotaKey(id, month)}, n).Int64(); err != nil {
		return fmt.Errorf("refund %d of key %d's quota: %w", n, id, err)
	}
	return nil
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
	qFloor   int64 // the count this gateway knew (-1: none)
	rateRes  *redis_rate.Result
	quotaCmd *redis.Cmd
	qDone    bool // counted in Redis: qVal is the count
	qVal     int64
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
		if st.pending > 0 || st.qPending != 0 {
			work = append(work, &settlement{id: id, st: st, rps: st.rps, burst: st.burst, n: st.pending, month: st.month, qn: st.qPending, qFloor: st.used})
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
		case !w.qDone:
			if w.st.month == w.month {
				w.st.qPending += w.qn
			}
		case w.st.month == w.month:
			w.st.used, w.st.usedAt = w.qVal, now
		}
		w.st.mu.Unlock()
	}
	return err
}

func (l *Limiter) settle(ctx context.Context, work []*settlement) error {
	// quotas: one pipeline for every key
	var quotas []*settlement
	for _, w := range work {
		if w.qn != 0 && w.month != "" {
			quotas = append(quotas, w)
		}
	}
	if len(quotas) > 0 {
		// each script counts on its own: the answers are read one by one,
		// so that a count Redis made is never counted again
		_, _ = l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, w := range quotas {
				w.quotaCmd = quotaIncr.Eval(ctx, p, []string{l.quotaKey(w.id, w.month)}, w.qn, int64(quotaTTL/time.Second))
			}
			return nil
		})
		var first error
		for _, w := range quotas {
			n, err := w.quotaCmd.Int64()
			if err == nil && n < 0 { // lost: seed it again, this settlement on top
				n, err = l.seedQuota(ctx, w.id, w.month, max(w.qFloor, 0), w.qn)
			}
			if err != nil {
				if first == nil {
					first = fmt.Errorf("settle quota of key %d: %w", w.id, err)
				}
				continue
			}
			w.qDone, w.qVal = true, n
		}
		if first != nil {
			return first
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
