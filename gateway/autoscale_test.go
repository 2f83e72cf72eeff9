package gateway

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/loadreport"
)

// switchDisc is a discovery whose answer the test changes while the gateway runs.
type switchDisc struct {
	mu    sync.Mutex
	addrs map[string][]string
}

func (d *switchDisc) Lookup(_ context.Context, model string) ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.addrs[model]...), nil
}

func (d *switchDisc) set(model string, addrs ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.addrs[model] = addrs
}

// atZero makes an autoscaled model with no replica (min 0, replicas 0).
func (e *env) atZero(name string) {
	id := e.id(`INSERT INTO models(name, task) VALUES ($1, 'text-classification') RETURNING id`, name)
	e.exec(`INSERT INTO deployments(model_id, version, replicas, autoscale_min, autoscale_max, autoscale_target_inflight)
		VALUES ($1, 1, 0, 0, 4, 4)`, id)
}

func (e *env) wakes() int64 {
	e.t.Helper()
	n, err := e.rdb.LLen(context.Background(), loadreport.WakeKey(e.prefix)).Result()
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

// fire sends n requests at once and collects their answers.
func (e *env) fire(n int, key, path, body string) <-chan answer {
	out := make(chan answer, n)
	for i := 0; i < n; i++ {
		go func() { out <- e.post(key, path, body) }()
	}
	return out
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// 100 requests at once for a model at zero: all are held, exactly one
// wake-up reaches Redis, a replica that is up but not ready releases none,
// and the first ready replica releases them all.
func TestHoldAtZeroReleasesOnReady(t *testing.T) {
	e := newEnv(t, true)
	key, _ := e.key(e.account("acme", ""), "inference")
	e.atZero("sentiment")
	disc := &switchDisc{addrs: map[string][]string{}}
	e.startWith(Config{}, disc)
	g := e.gw

	start := time.Now()
	answers := e.fire(100, key, "/v1/sentiment/sentiment", `{"text":"great"}`)
	waitFor(t, "100 held requests", 5*time.Second, func() bool { return g.load("sentiment").held.Load() == 100 })
	time.Sleep(300 * time.Millisecond) // let every held request try to wake the model
	if n := e.wakes(); n != 1 {
		t.Fatalf("%d wake-ups in Redis for 100 held requests, want exactly 1", n)
	}
	rt := newRuntime(t, "text-classification")
	rt.setReady(false) // started, still loading
	disc.set("sentiment", rt.addr())
	time.Sleep(3 * g.opts.HoldPoll)
	if n := g.load("sentiment").held.Load(); n != 100 || rt.hits.Load() != 0 {
		t.Fatalf("a replica that is not ready released requests: held %d, hits %d", n, rt.hits.Load())
	}
	readyAt := time.Now()
	rt.setReady(true)
	for i := 0; i < 100; i++ {
		if a := <-answers; a.status != 200 {
			t.Fatalf("held request answered %d %s", a.status, a.raw)
		}
	}
	t.Logf("100 held requests answered %s after the replica turned ready (%s after they arrived)",
		time.Since(readyAt).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	if n := e.wakes(); n != 1 {
		t.Fatalf("%d wake-ups after the release, want 1", n)
	}
	if rt.hits.Load() != 100 {
		t.Fatalf("replica got %d requests", rt.hits.Load())
	}
}

// Beyond HoldMax held requests per model: 503 with Retry-After at once; the
// held ones are answered when a replica comes.
func TestHoldBound(t *testing.T) {
	e := newEnv(t, true)
	key, _ := e.key(e.account("acme", ""), "inference")
	e.atZero("sentiment")
	disc := &switchDisc{addrs: map[string][]string{}}
	e.startWith(Config{HoldMax: 5, HoldRetryAfter: 2 * time.Second}, disc)
	answers := e.fire(12, key, "/v1/sentiment/sentiment", `{"text":"great"}`)
	refused := 0
	for refused < 7 {
		select {
		case a := <-answers:
			if a.status != 503 || a.code() != "model_starting" || a.header.Get("Retry-After") != "2" {
				t.Fatalf("request beyond the hold: %d %q Retry-After %q", a.status, a.raw, a.header.Get("Retry-After"))
			}
			refused++
		case <-time.After(5 * time.Second):
			t.Fatalf("only %d of 7 requests beyond the bound were refused", refused)
		}
	}
	if n := e.gw.load("sentiment").held.Load(); n != 5 {
		t.Fatalf("held %d, want 5", n)
	}
	disc.set("sentiment", newRuntime(t, "text-classification").addr())
	for i := 0; i < 5; i++ {
		if a := <-answers; a.status != 200 {
			t.Fatalf("held request: %d %s", a.status, a.raw)
		}
	}
	if v := metricValue(e.gw.m.holdRefused.WithLabelValues("sentiment")); v != 7 {
		t.Fatalf("hold_refused_total = %v", v)
	}
}

// A held request whose deadline passes gets 503 with Retry-After; a model
// that is not autoscaled is never held.
func TestHoldDeadlineAndNotAutoscaled(t *testing.T) {
	e := newEnv(t, true)
	key, _ := e.key(e.account("acme", ""), "inference")
	e.atZero("sentiment")
	e.model("fixed", "text-classification", 0) // replicas 1, none found
	e.startWith(Config{ModelTimeouts: "sentiment=400ms"}, &switchDisc{addrs: map[string][]string{}})
	start := time.Now()
	a := e.post(key, "/v1/sentiment/sentiment", `{"text":"x"}`)
	took := time.Since(start)
	if a.status != 503 || a.code() != "no_replica" || a.header.Get("Retry-After") != "3" || took < 400*time.Millisecond || took > 10*time.Second {
		t.Fatalf("held past its deadline: %d %s Retry-After %q after %s", a.status, a.raw, a.header.Get("Retry-After"), took)
	}
	start = time.Now()
	// not held: answered long before the 30 s deadline a hold would wait for
	if a := e.post(key, "/v1/fixed/sentiment", `{"text":"x"}`); a.status != 503 || a.code() != "no_replica" || time.Since(start) > 10*time.Second {
		t.Fatalf("model without autoscale and no replica: %d %s after %s (want an immediate 503)", a.status, a.raw, time.Since(start))
	}
	if n := e.wakes(); n != 1 {
		t.Fatalf("wake-ups %d, want 1 (for the autoscaled model only)", n)
	}
}

// The gateway publishes each model's in-flight average and arrivals to Redis
// every LoadReport, under its own id.
func TestLoadReport(t *testing.T) {
	e := newEnv(t, true)
	key, _ := e.key(e.account("acme", ""), "inference")
	rt := newRuntime(t, "text-classification")
	rt.stub.delay.Store(int64(700 * time.Millisecond))
	e.model("sentiment", "text-classification", 0, rt)
	e.start(Config{LoadReport: 300 * time.Millisecond, GatewayID: "gw-test"})
	var done atomic.Int64
	for i := 0; i < 4; i++ {
		go func() { e.post(key, "/v1/sentiment/sentiment", `{"text":"x"}`); done.Add(1) }()
	}
	var best loadreport.Total
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) && done.Load() < 4 {
		tot, err := loadreport.Read(context.Background(), e.rdb, e.prefix, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if s := tot["sentiment"]; s.Inflight > best.Inflight {
			best = s
		}
		time.Sleep(50 * time.Millisecond)
	}
	if best.Inflight < 3 || best.Inflight > 4 || best.Gateways != 1 || best.LastRequest.IsZero() {
		t.Fatalf("published figures while 4 requests were in flight: %+v", best)
	}
}
