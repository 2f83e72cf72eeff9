package apiserver

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/limitkeys"
	"github.com/nlpswarm/nlpswarm/internal/rdb/rdbtest"
)

func TestWebPlansAccountPlanRevokeByPrefix(t *testing.T) {
	e := newEnv(t)
	rc, prefix := rdbtest.New(t)
	e.cfg.Redis, e.cfg.RedisPrefix = rc, prefix
	e.start()
	account, _ := webFixture(e)
	w, token := e.login()

	// plans: create, refuse bad figures, update
	r := w.post("/ui/plans", url.Values{"csrf": {token}, "name": {"pro"}, "requests_per_second": {"20"}, "burst": {"40"}, "monthly_quota": {"100000"}})
	if r.status != http.StatusSeeOther {
		t.Fatalf("create plan: %d %s", r.status, r.body)
	}
	for _, bad := range []url.Values{
		{"name": {"cheap"}, "requests_per_second": {"fast"}, "burst": {"1"}},
		{"name": {"cheap"}, "requests_per_second": {"1"}, "burst": {"0"}},
		{"name": {"pro"}, "requests_per_second": {"1"}, "burst": {"1"}},
	} {
		bad.Set("csrf", token)
		if r := w.post("/ui/plans", bad); r.status < 400 || !strings.Contains(r.body, `role="alert"`) {
			t.Errorf("create plan %v: %d, want a refusal shown on the page", bad, r.status)
		}
	}
	r = w.post("/ui/plans/pro", url.Values{"csrf": {token}, "requests_per_second": {"2.5"}, "burst": {"40"}, "monthly_quota": {"100000"}})
	if r.status != http.StatusSeeOther || !strings.Contains(w.get(r.location).body, "Plan updated") {
		t.Fatalf("update plan: %d %s", r.status, r.body)
	}
	// token budgets (issue 15): set from the form; a form without them keeps them
	r = w.post("/ui/plans/pro", url.Values{"csrf": {token}, "requests_per_second": {"2.5"}, "burst": {"40"}, "monthly_quota": {"100000"},
		"tokens_per_minute": {"3000"}, "tokens_per_month": {"7000000"}})
	if r.status != http.StatusSeeOther {
		t.Fatalf("update plan's tokens: %d %s", r.status, r.body)
	}
	if r := w.post("/ui/plans/pro", url.Values{"csrf": {token}, "requests_per_second": {"2.5"}, "burst": {"40"}, "tokens_per_minute": {"many"}}); r.status < 400 {
		t.Errorf("tokens per minute not a number: %d", r.status)
	}
	var tpm, tpmonth int64
	e.db.Pool.QueryRow(context.Background(), `SELECT tokens_per_minute, tokens_per_month FROM plans WHERE name = 'pro'`).Scan(&tpm, &tpmonth)
	if tpm != 3000 || tpmonth != 7000000 {
		t.Errorf("plan pro's tokens: %d a minute, %d a month", tpm, tpmonth)
	}
	if r := w.post("/ui/plans/nosuch", url.Values{"csrf": {token}, "requests_per_second": {"1"}, "burst": {"1"}}); r.status != 404 {
		t.Errorf("update of a missing plan: %d", r.status)
	}
	page := w.get("/ui/accounts").body
	for _, want := range []string{`action="/ui/plans/pro"`, `value="2.5"`, `value="7000000"`, `action="/ui/keys/revoke"`} {
		if !strings.Contains(page, want) {
			t.Errorf("accounts page lacks %q", want)
		}
	}

	// the account moves to pro; its page shows the plan and the gateways' counts
	r = w.post(fmt.Sprintf("/ui/accounts/%d/plan", account), url.Values{"csrf": {token}, "plan": {"pro"}})
	if r.status != http.StatusSeeOther {
		t.Fatalf("change plan: %d %s", r.status, r.body)
	}
	if r := w.post(fmt.Sprintf("/ui/accounts/%d/plan", account), url.Values{"csrf": {token}, "plan": {"gold"}}); r.status != 400 {
		t.Errorf("unknown plan: %d", r.status)
	}
	var kid int64
	var kprefix string
	e.db.Pool.QueryRow(context.Background(), `SELECT id, prefix FROM api_keys`).Scan(&kid, &kprefix)
	rc.IncrBy(context.Background(), limitkeys.QuotaKey(prefix, kid, limitkeys.Month(time.Now())), 25000)
	page = w.get(r.location).body
	for _, want := range []string{"Plan changed", "pro: 2.5 req/s, burst 40, 100000 requests a month", "25000 requests counted", "25.0 %", `data-refresh="5"`} {
		if !strings.Contains(page, want) {
			t.Errorf("account page lacks %q", want)
		}
	}

	// revoke by prefix, from the accounts page
	if r := w.post("/ui/keys/revoke", url.Values{"csrf": {token}, "prefix": {"zzzzzzzz"}}); r.status != 404 {
		t.Errorf("revoke an unknown prefix: %d", r.status)
	}
	r = w.post("/ui/keys/revoke", url.Values{"csrf": {token}, "prefix": {kprefix}})
	if r.status != http.StatusSeeOther || r.location != fmt.Sprintf("/ui/accounts/%d?done=revoked", account) {
		t.Fatalf("revoke by prefix: %d %s", r.status, r.location)
	}
	if n := e.count(`SELECT count(*) FROM api_keys WHERE revoked_at IS NOT NULL`); n != 1 {
		t.Errorf("%d keys revoked, want 1", n)
	}
}
