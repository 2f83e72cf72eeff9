package gateway

import (
	"context"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestRateLimit(t *testing.T) {
	e := newEnv(t, true)
	acc := e.account("acme", "")
	plan := e.id(`INSERT INTO plans(name, requests_per_second, burst, monthly_quota) VALUES ('tiny', 1, 3, 0) RETURNING id`)
	e.exec(`UPDATE accounts SET plan_id = $1 WHERE id = $2`, plan, acc)
	key, _ := e.key(acc, "inference")
	e.model("sentiment", "text-classification", 0, newFakeRuntime(t, "text-classification"))
	e.start(Options{})
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
	e.model("sentiment", "text-classification", 0, newFakeRuntime(t, "text-classification"))
	e.start(Options{})
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
	e.model("sentiment", "text-classification", 0, newFakeRuntime(t, "text-classification"))
	e.start(Options{})
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
	rt := newFakeRuntime(t, "text-classification")
	modelID := e.model("sentiment", "text-classification", 0, rt)
	g := e.start(Options{UsageFlush: time.Hour})
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
	u.Record(keyID, modelID, 2, false)
	e.db.Pool.Close()
	if err := u.Flush(context.Background()); err == nil {
		t.Fatal("flush on a closed pool succeeded")
	}
	if len(u.agg) != 1 {
		t.Fatal("counts dropped on a connection failure")
	}
	_ = http.StatusOK
}
