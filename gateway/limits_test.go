package gateway

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nlpswarm/nlpswarm/internal/limitkeys"
	"github.com/nlpswarm/nlpswarm/internal/rdb/rdbtest"
)

func TestRateLimit(t *testing.T) {
	e := newEnv(t, true)
	acc := e.account("acme", "")
	plan := e.id(`INSERT INTO plans(name, requests_per_second, burst, monthly_quota) VALUES ('tiny', 1, 3, 0) RETURNING id`)
	e.exec(`UPDATE accounts SET plan_id = $1 WHERE id = $2`, plan, acc)
	key, _ := e.key(acc, "inference")
	e.model("sentiment", "text-classification", 0, newRuntime(t, "text-classification"))
	e.start(Config{})
	var got []int
	var last answer
	for i := 0; i < 5; i++ {
		last = e.post(key, "/v1/sentiment/sentiment", `{"text":"x"}`)
		got = append(got, last.status)
		if last.header.Get("X-RateLimit-Limit") != "1" || last.header.Get("X-RateLimit-Remaining") == "" || last.header.Get("X-RateLimit-Reset") == "" {
			t.Fatalf("rate limit headers missing: %v", last.header)
		}
	}
	// burst 3 at 1 rps: three pass, then 429 (a fourth may slip through if a second went by).
	if got[0] != 200 || got[1] != 200 || got[2] != 200 || got[4] != 429 {
		t.Fatalf("statuses %v", got)
	}
	if ra, _ := strconv.Atoi(last.header.Get("Retry-After")); ra < 1 || last.code() != "rate_limited" {
		t.Fatalf("429 without Retry-After: %v %s", last.header, last.raw)
	}
	time.Sleep(1100 * time.Millisecond)
	if a := e.post(key, "/v1/sentiment/sentiment", `{"text":"x"}`); a.status != 200 {
		t.Fatalf("after a second: %d", a.status)
	}
}

func TestMonthlyQuota(t *testing.T) {
	e := newEnv(t, true)
	acc := e.account("acme", "")
	plan := e.id(`INSERT INTO plans(name, requests_per_second, burst, monthly_quota) VALUES ('q', 100, 100, 3) RETURNING id`)
	e.exec(`UPDATE accounts SET plan_id = $1 WHERE id = $2`, plan, acc)
	key, _ := e.key(acc, "inference")
	unlimited, _ := e.key(e.account("big", "standard"), "inference") // monthly_quota 0
	e.model("sentiment", "text-classification", 0, newRuntime(t, "text-classification"))
	e.start(Config{})
	for i := 0; i < 3; i++ {
		if a := e.post(key, "/v1/sentiment/sentiment", `{"text":"x"}`); a.status != 200 {
			t.Fatalf("request %d: %d", i, a.status)
		}
	}
	a := e.post(key, "/v1/sentiment/sentiment", `{"text":"x"}`)
	if a.status != 429 || a.code() != "quota_exceeded" || a.header.Get("Retry-After") == "" {
		t.Fatalf("over quota: %d %s", a.status, a.raw)
	}
	for i := 0; i < 10; i++ {
		if a := e.post(unlimited, "/v1/sentiment/sentiment", `{"text":"x"}`); a.status != 200 {
			t.Fatalf("unlimited quota: %d", a.status)
		}
	}
}

func TestRedisDownFailsOpen(t *testing.T) {
	e := newEnv(t, false)
	e.rdb = redis.NewClient(&redis.Options{Addr: deadAddr(t), DialTimeout: 100 * time.Millisecond, MaxRetries: -1})
	defer e.rdb.Close()
	key, _ := e.key(e.account("acme", "free"), "inference")
	e.model("sentiment", "text-classification", 0, newRuntime(t, "text-classification"))
	e.start(Config{})
	for i := 0; i < 3; i++ {
		if a := e.post(key, "/v1/sentiment/sentiment", `{"text":"x"}`); a.status != 200 {
			t.Fatalf("redis down: %d %s (want fail-open)", a.status, a.raw)
		}
	}
	if n := metricValue(e.gw.m.failOpen); n != 3 {
		t.Fatalf("fail-open count %v", n)
	}
}

func TestUsageFlush(t *testing.T) {
	e := newEnv(t, false)
	acc := e.account("acme", "")
	key, keyID := e.key(acc, "inference")
	rt := newRuntime(t, "text-classification")
	modelID := e.model("sentiment", "text-classification", 0, rt)
	g := e.start(Config{UsageFlush: time.Hour})
	e.post(key, "/v1/sentiment/sentiment", `{"text":"x"}`)
	e.post(key, "/v1/sentiment/sentiment", `{"texts":["a","b","c"]}`)
	e.post(key, "/v1/sentiment/sentiment", `{"texts":[]}`) // counted as an error
	if err := g.FlushUsage(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.post(key, "/v1/sentiment/sentiment", `{"text":"y"}`)
	// Graceful shutdown flushes what is left.
	e.srv.Close()
	if err := g.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	var req, texts, errs int64
	var day time.Time
	err := e.db.Pool.QueryRow(context.Background(),
		`SELECT requests, texts, errors, day FROM usage WHERE api_key_id=$1 AND model_id=$2`, keyID, modelID).Scan(&req, &texts, &errs, &day)
	if err != nil {
		t.Fatal(err)
	}
	if req != 4 || texts != 5 || errs != 1 || day.Format(time.DateOnly) != time.Now().UTC().Format(time.DateOnly) {
		t.Fatalf("usage requests=%d texts=%d errors=%d day=%s", req, texts, errs, day)
	}
}

func TestUsageKeptWhilePostgresDown(t *testing.T) {
	e := newEnv(t, false)
	u := newUsage(e.db.Pool)
	acc := e.account("acme", "")
	_, keyID := e.key(acc, "inference")
	modelID := e.model("sentiment", "text-classification", 0)
	u.Record(&Key{ID: keyID, AccountID: acc}, &Model{ID: modelID, Name: "sentiment"}, 2, false)
	e.db.Pool.Close()
	if err := u.Flush(context.Background()); err == nil {
		t.Fatal("flush on a closed pool succeeded")
	}
	if len(u.pending) != 1 || len(u.pending[0].rows) != 1 {
		t.Fatal("counts dropped on a connection failure")
	}
	_ = http.StatusOK
}

// Two gateways share one key's plan through Redis: each admits against its
// local bucket and settles with Redis every sync interval, so together they
// stay within the plan plus the documented slack (one burst and one interval
// of the rate each), and a key that one gateway alone exhausts is refused by
// the other after the next settlement.
func TestRateLimitSharedAcrossGateways(t *testing.T) {
	rdb, prefix := rdbtest.New(t)
	const rps, burst = 20, 5
	key := &Key{ID: 42, RPS: rps, Burst: burst}
	sync := 20 * time.Millisecond
	a, b := newLimiter(rdb, nil, prefix, sync), newLimiter(rdb, nil, prefix, sync)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go a.Run(ctx)
	go b.Run(ctx)

	// both gateways offer far more than the plan for 2 s
	var admitted [2]int
	start := time.Now()
	for time.Since(start) < 2*time.Second {
		for i, l := range []*Limiter{a, b} {
			if v := l.Allow(ctx, key); v.Allowed {
				admitted[i]++
			} else if v.RetryAfter <= 0 {
				t.Fatalf("refused without Retry-After: %+v", v)
			}
		}
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start).Seconds()
	total := admitted[0] + admitted[1]
	plan := burst + rps*elapsed
	slack := 2 * (burst + rps*2*sync.Seconds() + 1)
	t.Logf("two gateways admitted %d + %d = %d in %.1fs; the plan allows %.0f, slack %.0f", admitted[0], admitted[1], total, elapsed, plan, slack)
	if float64(total) > plan+slack {
		t.Fatalf("%d admitted, more than the plan (%.0f) and its slack (%.0f)", total, plan, slack)
	}
	if float64(total) < 0.8*plan {
		t.Fatalf("%d admitted, far below the plan's %.0f", total, plan)
	}
	if admitted[0] > int(plan) && admitted[1] > int(plan) {
		t.Fatalf("each gateway admitted its own full plan (%v): Redis did not share the budget", admitted)
	}
}

// holdPipelines is a go-redis hook that holds every pipeline until released,
// so a test can act while a settlement waits for Redis.
type holdPipelines struct{ entered, release chan struct{} }

func (h holdPipelines) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h holdPipelines) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h holdPipelines) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		select {
		case h.entered <- struct{}{}:
		default:
		}
		<-h.release
		return next(ctx, cmds)
	}
}

// settleHeld starts l's settlement and returns once its pipeline has
// reached Redis and is held there; release lets it go on and waits for it.
func settleHeld(t *testing.T, l *Limiter, rdb *redis.Client) (release func()) {
	t.Helper()
	hold := holdPipelines{entered: make(chan struct{}, 1), release: make(chan struct{})}
	rdb.AddHook(hold)
	done := make(chan error, 1)
	go func() { done <- l.Settle(context.Background()) }()
	select {
	case <-hold.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the settlement never reached Redis")
	}
	return func() {
		t.Helper()
		close(hold.release)
		if err := <-done; err != nil {
			t.Fatalf("settle: %v", err)
		}
	}
}

// A request admitted while a settlement waits for Redis still sees the
// quota counted in it. Before, those counts left the pending tally when the
// pipeline was sent and came back only with Redis's answer, so a key could
// pass its quota by a settlement's worth (seen as a flake of TestMonthlyQuota
// on a loaded machine).
func TestQuotaHoldsDuringSettlement(t *testing.T) {
	rdb, prefix := rdbtest.New(t)
	l := newLimiter(rdb, nil, prefix, time.Hour)
	k := &Key{ID: 7, RPS: 1000, Burst: 1000, Quota: 3}
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		if v := l.Allow(ctx, k); !v.Allowed {
			t.Fatalf("request %d refused: %+v", i, v)
		}
	}
	release := settleHeld(t, l, rdb)
	v := l.Allow(ctx, k)
	release()
	if v.Allowed || v.Reason != "quota_exceeded" {
		t.Fatalf("4th request during the settlement: %+v, want quota_exceeded", v)
	}
	if v := l.Allow(ctx, k); v.Allowed || v.Reason != "quota_exceeded" {
		t.Fatalf("4th request after the settlement: %+v, want quota_exceeded", v)
	}
}

// A refund (a cancelled job's unprocessed texts) that comes while the
// charge it refunds is in a settlement on its way to Redis is counted at
// once and taken off the count in Redis by the next settlement, after the
// charge has landed. Before, it was taken from the count in Redis at once,
// which did not hold the charge yet: the count stayed at zero (a refund
// never takes it below) and the charge landed whole after it, or, with the
// count lost, the refund was dropped and the charge seeded on top.
func TestQuotaRefundDuringSettlement(t *testing.T) {
	for _, lost := range []bool{false, true} {
		t.Run(fmt.Sprintf("count lost=%v", lost), func(t *testing.T) {
			rdb, prefix := rdbtest.New(t)
			l := newLimiter(rdb, nil, prefix, time.Hour)
			k := &Key{ID: 7, RPS: 1000, Burst: 1000, Quota: 10}
			ctx := context.Background()
			for i := 0; i < 6; i++ { // the first reads (seeds) the count: 0
				if v := l.Allow(ctx, k); !v.Allowed {
					t.Fatalf("request %d refused: %+v", i, v)
				}
			}
			month := limitkeys.Month(time.Now().UTC())
			if lost {
				rdb.Del(ctx, l.quotaKey(k.ID, month))
			}
			release := settleHeld(t, l, rdb)
			if err := l.refundQuota(ctx, k.ID, month, 4); err != nil {
				t.Fatalf("refund: %v", err)
			}
			release()
			if err := l.Settle(ctx); err != nil {
				t.Fatalf("second settle: %v", err)
			}
			if n, _ := rdb.Get(ctx, l.quotaKey(k.ID, month)).Int64(); n != 2 {
				t.Fatalf("count in Redis %d, want 6 charged - 4 refunded = 2", n)
			}
			allowed := 0
			for i := 0; i < 10; i++ {
				if l.Allow(ctx, k).Allowed {
					allowed++
				}
			}
			if allowed != 8 {
				t.Fatalf("%d more requests allowed, want 10 - 2 = 8", allowed)
			}
		})
	}
}

// A monthly quota's count survives Redis losing it (issue 17 finding 4:
// Redis keeps no data across a restart): a gateway that finds no count
// seeds it from the month's usage in Postgres, and one whose settlement
// finds the count gone puts back what it knew. Before, both started the
// month over at zero.
func TestQuotaSurvivesRedisLoss(t *testing.T) {
	e := newEnv(t, true)
	ctx := context.Background()
	_, keyID := e.key(e.account("acme", ""), "inference")
	model := e.model("sentiment", "text-classification", 0)
	now := time.Now().UTC()
	month := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	// (a day later in the month may be in the future: the query counts the
	// whole month)
	// 6 requests metered this month (over two days), 50 last month
	e.exec(`INSERT INTO usage(api_key_id, model_id, day, requests) VALUES ($1, $2, $3, 4), ($1, $2, $4, 2), ($1, $2, $5, 50)`,
		keyID, model, month, month.AddDate(0, 0, 14), month.AddDate(0, -1, 0))
	k := &Key{ID: keyID, RPS: 1000, Burst: 1000, Quota: 10}
	allowed := func(l *Limiter, n int) int {
		got := 0
		for i := 0; i < n; i++ {
			if v := l.Allow(ctx, k); v.Allowed {
				got++
			} else if v.Reason != "quota_exceeded" {
				t.Fatalf("refused for %+v", v)
			}
		}
		return got
	}
	quotaKey := newLimiter(e.rdb, nil, e.prefix, time.Hour).quotaKey(keyID, month.Format("200601"))
	// Redis empty (restarted): 4 of the 10 are left
	a := newLimiter(e.rdb, e.db.Pool, e.prefix, time.Hour)
	if got := allowed(a, 3); got != 3 {
		t.Fatalf("%d of 3 allowed", got)
	}
	if err := a.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	if n, _ := e.rdb.Get(ctx, quotaKey).Int64(); n != 9 {
		t.Fatalf("count in Redis %d, want 6 from usage + 3", n)
	}
	// lost again while this gateway runs: its settlement puts back what it
	// knew (9; usage in Postgres still says 6) with the new request on top
	e.rdb.Del(ctx, quotaKey)
	if got := allowed(a, 1); got != 1 {
		t.Fatal("10th request refused")
	}
	if err := a.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	if n, _ := e.rdb.Get(ctx, quotaKey).Int64(); n != 10 {
		t.Fatalf("count in Redis after a loss mid-month %d, want 10", n)
	}
	// a gateway started now sees the quota spent, as does the first one
	if got := allowed(newLimiter(e.rdb, e.db.Pool, e.prefix, time.Hour), 2); got != 0 {
		t.Fatalf("a new gateway allowed %d requests past the quota", got)
	}
	if got := allowed(a, 2); got != 0 {
		t.Fatalf("%d requests allowed past the quota", got)
	}
}
