package apiserver

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/nlpswarm/nlpswarm/internal/limitkeys"
	"github.com/nlpswarm/nlpswarm/internal/rdb/rdbtest"
)

func TestPlansCreateUpdate(t *testing.T) {
	e := newEnv(t)
	code, p := e.do("POST", "/api/v1/plans", adminTok, map[string]any{"name": "pro", "requests_per_second": 20, "burst": 40, "monthly_quota": 100000})
	if code != 201 || p["id"] == nil {
		t.Fatalf("create: %d %v", code, p)
	}
	if code, body := e.do("POST", "/api/v1/plans", adminTok, map[string]any{"name": "pro", "requests_per_second": 1, "burst": 1}); code != 409 {
		t.Errorf("create again: %d %v, want 409", code, body)
	}
	for _, name := range []string{"", "a/b", "../x", "pro plan", strings.Repeat("p", 65)} {
		if code, body := e.do("POST", "/api/v1/plans", adminTok, map[string]any{"name": name, "requests_per_second": 1, "burst": 1}); code != 400 {
			t.Errorf("create plan named %q: %d %v, want 400", name, code, body)
		}
	}
	// a partial update keeps what it does not name
	code, p = e.do("PATCH", "/api/v1/plans/pro", adminTok, map[string]any{"requests_per_second": 2.5})
	if code != 200 || p["requests_per_second"] != 2.5 || p["burst"] != 40.0 || p["monthly_quota"] != 100000.0 {
		t.Errorf("patch rps: %d %v", code, p)
	}
	for _, tc := range []struct {
		path string
		body map[string]any
		want int
	}{
		{"/api/v1/plans/pro", map[string]any{"burst": 0}, 400},
		{"/api/v1/plans/pro", map[string]any{"requests_per_second": -1}, 400},
		{"/api/v1/plans/pro", map[string]any{"monthly_quota": -5}, 400},
		{"/api/v1/plans/pro", map[string]any{"burst": "ten"}, 400},
		{"/api/v1/plans/pro", map[string]any{"colour": "red"}, 400},
		{"/api/v1/plans/nosuch", map[string]any{"burst": 3}, 404},
	} {
		if code, body := e.do("PATCH", tc.path, adminTok, tc.body); code != tc.want || body["error"] == nil {
			t.Errorf("PATCH %s %v: %d %v, want %d with an error envelope", tc.path, tc.body, code, body, tc.want)
		}
	}
	// token budgets (issue 15): set at creation or by a patch, never negative
	code, p = e.do("PATCH", "/api/v1/plans/pro", adminTok, map[string]any{"tokens_per_minute": 10000, "tokens_per_month": 5000000})
	if code != 200 || p["tokens_per_minute"] != 10000.0 || p["tokens_per_month"] != 5000000.0 || p["requests_per_second"] != 2.5 {
		t.Errorf("patch tokens: %d %v", code, p)
	}
	if code, body := e.do("PATCH", "/api/v1/plans/pro", adminTok, map[string]any{"tokens_per_minute": -1}); code != 400 {
		t.Errorf("negative tokens per minute: %d %v", code, body)
	}
	if code, p := e.do("POST", "/api/v1/plans", adminTok, map[string]any{"name": "llm", "requests_per_second": 5, "burst": 5, "tokens_per_month": 42}); code != 201 || p["tokens_per_month"] != 42.0 || p["tokens_per_minute"] != 0.0 {
		t.Errorf("create with a token budget: %d %v", code, p)
	}
	var rps float64
	var burst int
	e.db.Pool.QueryRow(context.Background(), `SELECT requests_per_second, burst FROM plans WHERE name = 'pro'`).Scan(&rps, &burst)
	if rps != 2.5 || burst != 40 {
		t.Errorf("after refused updates: %v/s burst %d, want 2.5/s burst 40 (refusals change nothing)", rps, burst)
	}
}

func TestAccountPlanAndRevokeByPrefix(t *testing.T) {
	e := newEnv(t)
	code, acc := e.do("POST", "/api/v1/accounts", adminTok, map[string]any{"name": "acme"})
	if code != 201 || acc["plan"] != "free" {
		t.Fatalf("account: %d %v", code, acc)
	}
	id := int(acc["id"].(float64))
	code, a := e.do("PATCH", fmt.Sprintf("/api/v1/accounts/%d", id), adminTok, map[string]any{"plan": "standard"})
	if code != 200 || a["plan"] != "standard" {
		t.Errorf("move to standard: %d %v", code, a)
	}
	if code, body := e.do("PATCH", fmt.Sprintf("/api/v1/accounts/%d", id), adminTok, map[string]any{"plan": "gold"}); code != 400 {
		t.Errorf("unknown plan: %d %v, want 400", code, body)
	}
	if code, body := e.do("PATCH", "/api/v1/accounts/99999", adminTok, map[string]any{"plan": "free"}); code != 404 {
		t.Errorf("unknown account: %d %v, want 404", code, body)
	}
	_, k1 := e.do("POST", fmt.Sprintf("/api/v1/accounts/%d/keys", id), adminTok, map[string]any{"name": "one"})
	_, k2 := e.do("POST", fmt.Sprintf("/api/v1/accounts/%d/keys", id), adminTok, map[string]any{"name": "two"})
	prefix := k1["prefix"].(string)
	code, k := e.do("DELETE", "/api/v1/keys/"+prefix, adminTok, nil)
	if code != 200 || k["revoked_at"] == nil || k["key"] != nil || k["account_id"] != float64(id) {
		t.Errorf("revoke %s: %d %v", prefix, code, k)
	}
	if code, _ := e.do("DELETE", "/api/v1/keys/"+prefix, adminTok, nil); code != 200 {
		t.Errorf("revoke again: %d, want 200 (no-op)", code)
	}
	if code, body := e.do("DELETE", "/api/v1/keys/zzzzzzzz", adminTok, nil); code != 404 {
		t.Errorf("unknown prefix: %d %v, want 404", code, body)
	}
	if n := e.count(`SELECT count(*) FROM api_keys WHERE revoked_at IS NOT NULL`); n != 1 {
		t.Errorf("%d keys revoked, want only %s (not %s)", n, prefix, k2["prefix"])
	}
}

// TestAccountDetailReadsTheGatewaysCounts writes what a gateway writes for a
// key (its quota count and its GCRA state, under internal/limitkeys' names)
// into the real Redis and reads it back through GET /api/v1/accounts/{id},
// logged in as the apiserver's own ACL user (roles.acl): reads only.
func TestAccountDetailReadsTheGatewaysCounts(t *testing.T) {
	e := newEnv(t)
	rc, prefix := rdbtest.New(t)
	e.cfg.Redis, e.cfg.RedisPrefix = rdbtest.Role(t, rc, prefix, "apiserver"), prefix
	e.start()
	_, acc := e.do("POST", "/api/v1/accounts", adminTok, map[string]any{"name": "acme"}) // free: 2/s, burst 10, 10000 a month
	id := int(acc["id"].(float64))
	_, key := e.do("POST", fmt.Sprintf("/api/v1/accounts/%d/keys", id), adminTok, map[string]any{"name": "prod"})
	kid := int64(key["id"].(float64))
	ctx := context.Background()
	t.Cleanup(func() { rc.Del(context.Background(), "rate:"+limitkeys.RateKey(prefix, kid)) })
	rc.IncrBy(ctx, limitkeys.QuotaKey(prefix, kid, limitkeys.Month(time.Now())), 2500)
	rc.IncrBy(ctx, limitkeys.TokenMonthKey(prefix, kid, limitkeys.Month(time.Now())), 777) // (issue 15)
	if _, err := redis_rate.NewLimiter(rc).AllowAtMost(ctx, limitkeys.RateKey(prefix, kid), redis_rate.Limit{Rate: 2, Period: time.Second, Burst: 10}, 6); err != nil {
		t.Fatal(err)
	}
	code, d := e.do("GET", fmt.Sprintf("/api/v1/accounts/%d", id), adminTok, nil)
	if code != 200 {
		t.Fatalf("detail: %d %v", code, d)
	}
	limits, _ := d["limits"].(map[string]any)
	keys, _ := d["keys"].([]any)
	if limits["name"] != "free" || limits["monthly_quota"] != 10000.0 || d["quota_used"] != 2500.0 || len(keys) != 1 || d["limits_error"] != nil {
		t.Fatalf("detail: %v", d)
	}
	k := keys[0].(map[string]any)
	if b := k["backlog"].(float64); k["quota_used"] != 2500.0 || b < 5 || b > 6 || k["key"] != nil || k["tokens_used"] != 777.0 {
		t.Errorf("key: %v, want 2500 used, 777 tokens and a backlog of about 6", k)
	}
	// Redis gone: the page's figures from Postgres stay, and it says why the rest is missing
	e.cfg.Redis = redisNowhere(t)
	e.start()
	code, d = e.do("GET", fmt.Sprintf("/api/v1/accounts/%d", id), adminTok, nil)
	if code != 200 || d["limits_error"] == nil || d["name"] != "acme" {
		t.Errorf("detail without Redis: %d %v", code, d)
	}
}

// redisNowhere is a client of a loopback port nobody listens on.
func redisNowhere(t *testing.T) *redis.Client {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 200 * time.Millisecond, MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	return c
}

// TestQuotaMetric: the apiserver exports each key's quota use from the
// gateways' counts, which the stack's quota alert reads.
func TestQuotaMetric(t *testing.T) {
	e := newEnv(t)
	rc, prefix := rdbtest.New(t)
	e.cfg.Redis, e.cfg.RedisPrefix = rc, prefix
	e.start()
	_, acc := e.do("POST", "/api/v1/accounts", adminTok, map[string]any{"name": "acme"}) // free: 10000 a month
	id := int(acc["id"].(float64))
	_, used := e.do("POST", fmt.Sprintf("/api/v1/accounts/%d/keys", id), adminTok, map[string]any{"name": "used"})
	e.do("POST", fmt.Sprintf("/api/v1/accounts/%d/keys", id), adminTok, map[string]any{"name": "idle"})
	rc.IncrBy(context.Background(), limitkeys.QuotaKey(prefix, int64(used["id"].(float64)), limitkeys.Month(time.Now())), 9500)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(e.srv.QuotaCollector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			got = append(got, fmt.Sprintf("%s %s %s %s %g", mf.GetName(), l["account"], l["key_prefix"], l["plan"], m.GetGauge().GetValue()))
		}
	}
	want := fmt.Sprintf("nlpswarm_apikey_quota_used_ratio acme %s free 0.95", used["prefix"])
	if strings.Join(got, "\n") != want {
		t.Errorf("gathered %q, want only %q (the idle key has no series)", got, want)
	}
}
