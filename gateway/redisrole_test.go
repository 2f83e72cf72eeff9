package gateway

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/loadreport"
	"github.com/nlpswarm/nlpswarm/internal/rdb/rdbtest"
)

// The gateway runs on the stack's Redis as the ACL user "gateway" (issue 17
// finding 4): everything it does (key verdicts, quotas seeded and settled,
// rate limits, load figures, wake-ups) passes on that user's rules, and
// what it does not need is refused: server commands, other keys.
func TestGatewayRedisRole(t *testing.T) {
	e := newEnv(t, true)
	admin := e.rdb
	e.rdb = rdbtest.Role(t, admin, e.prefix, "gateway")
	ctx := context.Background()
	acc := e.account("acme", "")
	plan := e.id(`INSERT INTO plans(name, requests_per_second, burst, monthly_quota) VALUES ('q', 100, 100, 4) RETURNING id`)
	e.exec(`UPDATE accounts SET plan_id = $1 WHERE id = $2`, plan, acc)
	key, _ := e.key(acc, "inference")
	e.model("sentiment", "text-classification", 0, newRuntime(t, "text-classification"))
	g := e.start(Config{LoadReport: 20 * time.Millisecond, LimitSync: 10 * time.Millisecond})
	var got []int
	for i := 0; i < 6; i++ {
		got = append(got, e.post(key, "/v1/sentiment/sentiment", `{"text":"x"}`).status)
		time.Sleep(15 * time.Millisecond) // settlements in between
	}
	if got[0] != 200 || got[3] != 200 || got[4] != 429 || got[5] != 429 {
		t.Fatalf("statuses %v, want 4 × 200 then quota_exceeded", got)
	}
	if err := loadreport.Wake(ctx, e.rdb, e.prefix, loadreport.Wakeup{Model: "sentiment", Held: 1}); err != nil {
		t.Fatalf("wake-up as the gateway user: %v", err)
	}
	time.Sleep(100 * time.Millisecond) // a load report or more
	if n := metricValue(g.m.failOpen); n != 0 {
		t.Fatalf("%v requests failed open: a command of the gateway is not in its rules", n)
	}
	for _, pattern := range []string{"apikey:*", "quota:*", "load:gw:*", "load:gateways", "load:wake"} {
		if n, _ := admin.Keys(ctx, e.prefix+pattern).Result(); len(n) == 0 {
			t.Errorf("no %s%s written through the gateway user", e.prefix, pattern)
		}
	}
	if n, _ := admin.Keys(ctx, "rate:"+e.prefix+"rl:*").Result(); len(n) == 0 {
		t.Errorf("no rate limit state written through the gateway user")
	}
	refused := map[string][]any{
		"CONFIG SET":              {"CONFIG", "SET", "dir", "/tmp"},
		"FLUSHALL":                {"FLUSHALL"},
		"KEYS":                    {"KEYS", "*"},
		"ACL":                     {"ACL", "LIST"},
		"another prefix":          {"SET", "other:" + e.prefix + "apikey:x", "1"},
		"outside its keys":        {"SET", e.prefix + "session:x", "1"},
		"SCRIPT FLUSH":            {"SCRIPT", "FLUSH"},
		"a command it never runs": {"LRANGE", e.prefix + "load:wake", "0", "-1"},
	}
	for name, args := range refused {
		if err := e.rdb.Do(ctx, args...).Err(); err == nil || !strings.Contains(err.Error(), "NOPERM") {
			t.Errorf("%s as the gateway user: %v, want NOPERM", name, err)
		}
	}
}

// Token budgets (issue 15) pass on the gateway user's rules too: counts
// read, charged, seeded.
func TestGatewayRedisRoleTokens(t *testing.T) {
	e := newEnv(t, true)
	admin := e.rdb
	e.rdb = rdbtest.Role(t, admin, e.prefix, "gateway")
	acc := e.account("acme", "")
	plan := e.id(`INSERT INTO plans(name, requests_per_second, burst, tokens_per_minute, tokens_per_month) VALUES ('t', 100, 100, 1000, 1000) RETURNING id`)
	e.exec(`UPDATE accounts SET plan_id = $1 WHERE id = $2`, plan, acc)
	key, _ := e.key(acc, "inference")
	e.genModel("gen", 0)
	g := e.start(Config{})
	for range 2 {
		if a := e.post(key, "/v1/gen/generation", `{"text":"x"}`); a.status != 200 {
			t.Fatalf("%d %s", a.status, a.raw)
		}
	}
	if n := metricValue(g.m.failOpen); n != 0 {
		t.Fatalf("%v token checks or charges failed open: a command of the gateway is not in its rules", n)
	}
	for _, pattern := range []string{"tokens:*", "tpm:*"} {
		if n, _ := admin.Keys(context.Background(), e.prefix+pattern).Result(); len(n) == 0 {
			t.Errorf("no %s%s written through the gateway user", e.prefix, pattern)
		}
	}
}
