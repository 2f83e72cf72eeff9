package gateway

import (
	"context"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nlpswarm/nlpswarm/internal/faultproxy"
	"github.com/nlpswarm/nlpswarm/internal/pg/pgtest"
)

// poolThrough is a pool on dbURL's database through the proxy.
func poolThrough(t *testing.T, dbURL string, p *faultproxy.Proxy) *pgxpool.Pool {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = p.Addr()
	pool, err := pgxpool.New(context.Background(), u.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// issue 18 item 1: Postgres goes away. The gateway stays ready and keeps
// answering keys it knows, beyond their cache TTL; a key it never saw gets
// a clean 503; a gateway started during the outage starts, from the
// catalogue snapshot, and serves once Postgres is back; and every request
// answered during the outage is in usage afterwards.
func TestGatewayThroughPostgresOutage(t *testing.T) {
	e := newEnv(t, false)
	rt := newRuntime(t, "text-classification")
	acc := e.account("acme", "")
	known, knownID := e.key(acc, "inference")
	fresh, _ := e.key(acc, "inference")
	modelID := e.model("sentiment", "text-classification", 0, rt)
	proxy := faultproxy.New(t, mustHost(t, e.db.URL))
	dir := t.TempDir()
	cfg := Config{KeyCacheTTL: 100 * time.Millisecond, UsageFlush: 200 * time.Millisecond, CatalogRefresh: 100 * time.Millisecond,
		UsageSpool: filepath.Join(dir, "spool"), CatalogSnapshot: filepath.Join(dir, "catalogue.json")}
	// the gateways reach Postgres through the proxy; the test's own
	// queries (e.db) go direct
	proxied := &pgtest.DB{URL: e.db.URL, Pool: poolThrough(t, e.db.URL, proxy)}
	ge := &env{t: t, db: proxied, static: e.static, reg: prometheus.NewRegistry(), callKey: e.callKey}
	g := ge.startWith(cfg, e.static)
	ok := 0
	if a := ge.post(known, "/v1/sentiment/sentiment", `{"text":"x"}`); a.status != 200 {
		t.Fatalf("before the outage: %d %s", a.status, a.raw)
	}
	ok++
	time.Sleep(300 * time.Millisecond) // a catalogue refresh through the proxy writes the snapshot

	proxy.Cut()
	start := time.Now()
	for time.Since(start) < 2*time.Second {
		a := ge.post(known, "/v1/sentiment/sentiment", `{"text":"x"}`)
		if a.status != 200 {
			t.Fatalf("a known key during the outage: %d %s", a.status, a.raw)
		}
		ok++
	}
	if err := g.Ready(context.Background()); err != nil {
		t.Errorf("not ready during the outage: %v", err)
	}
	if a := ge.post(fresh, "/v1/sentiment/sentiment", `{"text":"x"}`); a.status != 503 || errCode(a) != "unavailable" {
		t.Errorf("an unknown key during the outage: %d %s, want a clean 503", a.status, a.raw)
	}

	// a gateway that starts now, on its own spool, with the snapshot
	e2 := &env{t: t, db: proxied, static: e.static, reg: prometheus.NewRegistry(), callKey: e.callKey}
	cfg2 := cfg
	cfg2.UsageSpool = filepath.Join(dir, "spool2")
	g2 := e2.startWith(cfg2, e.static)
	if err := g2.Ready(context.Background()); err != nil {
		t.Fatalf("a gateway started during the outage is not ready: %v", err)
	}
	if _, ok := g2.catalog.Get("sentiment"); !ok {
		t.Fatalf("the snapshot's catalogue lacks sentiment: %v", g2.catalog.Names())
	}
	if a := e2.post(known, "/v1/sentiment/sentiment", `{"text":"x"}`); a.status != 503 {
		t.Errorf("a key the new gateway never saw, during the outage: %d %s, want 503", a.status, a.raw)
	}

	proxy.Restore()
	deadline := time.Now().Add(10 * time.Second)
	for {
		a := e2.post(known, "/v1/sentiment/sentiment", `{"text":"x"}`)
		if a.status == 200 {
			ok++
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gateway started during the outage still answers %d %s after it", a.status, a.raw)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := g.FlushUsage(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := g2.FlushUsage(context.Background()); err != nil {
		t.Fatal(err)
	}
	var requests int
	if err := e.db.Pool.QueryRow(context.Background(), `SELECT coalesce(sum(requests), 0) FROM usage WHERE api_key_id = $1 AND model_id = $2`,
		knownID, modelID).Scan(&requests); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d requests answered with a known key across a 2s outage; usage counts %d", ok, requests)
	if requests != ok {
		t.Errorf("usage counts %d requests, %d were answered", requests, ok)
	}
}

func mustHost(t *testing.T, raw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

func errCode(a answer) string {
	if m, ok := a.body["error"].(map[string]any); ok {
		s, _ := m["code"].(string)
		return s
	}
	return ""
}

// TestKnownKeyServedAtOnceThroughSilentPostgres: with Postgres silent (its
// link frozen: every query waits out keyQueryTimeout), a known key past its
// cache TTL waits for one failed lookup, then is served stale at once, its
// refresh in the background. Before, each request past the TTL waited the
// whole timeout: 2 requests per second for a cached key in the lab's 90 s
// outage (issue 18).
func TestKnownKeyServedAtOnceThroughSilentPostgres(t *testing.T) {
	e := newEnv(t, false)
	rt := newRuntime(t, "text-classification")
	known, _ := e.key(e.account("acme", ""), "inference")
	e.model("sentiment", "text-classification", 0, rt)
	proxy := faultproxy.New(t, mustHost(t, e.db.URL))
	dir := t.TempDir()
	cfg := Config{KeyCacheTTL: 100 * time.Millisecond, UsageFlush: 200 * time.Millisecond, CatalogRefresh: time.Hour,
		UsageSpool: filepath.Join(dir, "spool"), CatalogSnapshot: filepath.Join(dir, "catalogue.json")}
	ge := &env{t: t, db: &pgtest.DB{URL: e.db.URL, Pool: poolThrough(t, e.db.URL, proxy)}, static: e.static, reg: prometheus.NewRegistry(), callKey: e.callKey}
	ge.startWith(cfg, e.static)
	if a := ge.post(known, "/v1/sentiment/sentiment", `{"text":"x"}`); a.status != 200 {
		t.Fatalf("before the outage: %d %s", a.status, a.raw)
	}
	proxy.Freeze()
	defer func() { proxy.Cut(); proxy.Restore() }()
	n, slow := 0, 0
	for start := time.Now(); time.Since(start) < 3*keyQueryTimeout; n++ {
		t0 := time.Now()
		if a := ge.post(known, "/v1/sentiment/sentiment", `{"text":"x"}`); a.status != 200 {
			t.Fatalf("a known key with Postgres silent: %d %s", a.status, a.raw)
		}
		if time.Since(t0) > keyQueryTimeout/2 {
			slow++
		}
	}
	t.Logf("Postgres silent for %s: %d requests of a known key served, %d waited for a lookup", 3*keyQueryTimeout, n, slow)
	if slow > 1 {
		t.Errorf("%d of %d requests waited for Postgres; only the first after the TTL should", slow, n)
	}
}
