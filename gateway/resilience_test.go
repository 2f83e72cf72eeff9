package gateway

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/nlpswarm/nlpswarm/internal/runtimeapi"
)

// deadAddr is a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

func TestRetryOnConnectionErrorAndEjection(t *testing.T) {
	eachUpstream(t, testRetryOnConnectionErrorAndEjection)
}

func testRetryOnConnectionErrorAndEjection(t *testing.T, upstream string) {
	e := newEnv(t, false)
	e.upstream = upstream
	key, _ := e.key(e.account("acme", ""), "inference")
	good := newRuntime(t, "text-classification")
	dead := deadAddr(t)
	e.model("sentiment", "text-classification", 0, good)
	e.static["sentiment"] = []string{dead, good.addr()}
	e.start(Config{EjectAfter: 3, ProbeInterval: 100 * time.Millisecond})
	for i := 0; i < 30; i++ {
		if a := e.post(key, "/v1/sentiment/sentiment", `{"text":"x"}`); a.status != 200 {
			t.Fatalf("request %d: %d %s (one replica is down; the retry should hide it)", i, a.status, a.raw)
		}
	}
	if n := metricValue(e.gw.m.ejections.WithLabelValues("sentiment")); n != 1 {
		t.Fatalf("ejections = %v, want 1", n)
	}
	retries := metricValue(e.gw.m.retries.WithLabelValues("sentiment"))
	if retries < 1 || retries > 3 {
		t.Fatalf("retries = %v: after ejection the dead replica should no longer be tried", retries)
	}
	var deadUp *Upstream
	for _, u := range e.gw.pool("sentiment").Upstreams() {
		if u.Addr == dead {
			deadUp = u
		}
	}
	if deadUp == nil || deadUp.Available() {
		t.Fatal("dead replica not ejected")
	}
	// Bring a runtime up on the dead address: the probe returns it to the pool.
	ln, err := net.Listen("tcp", dead)
	if err != nil {
		t.Skipf("cannot reuse %s: %v", dead, err)
	}
	srv := &http.Server{Handler: good.Config.Handler}
	go srv.Serve(ln)
	defer srv.Close()
	deadline := time.Now().Add(3 * time.Second)
	for !deadUp.Available() {
		if time.Now().After(deadline) {
			t.Fatal("recovered replica not returned by the health probe")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestProbeWaitsForReady(t *testing.T) { eachUpstream(t, testProbeWaitsForReady) }

func testProbeWaitsForReady(t *testing.T, upstream string) {
	e := newEnv(t, false)
	e.upstream = upstream
	key, _ := e.key(e.account("acme", ""), "inference")
	sick := newRuntime(t, "text-classification")
	sick.setReady(false)
	good := newRuntime(t, "text-classification")
	e.model("sentiment", "text-classification", 0, sick, good)
	e.start(Config{EjectAfter: 2, ProbeInterval: 50 * time.Millisecond})
	for i := 0; i < 20; i++ {
		if a := e.post(key, "/v1/sentiment/sentiment", `{"text":"x"}`); a.status != 200 {
			t.Fatalf("request %d: %d (503 from one replica must be retried on the other)", i, a.status)
		}
	}
	var su *Upstream
	for _, u := range e.gw.pool("sentiment").Upstreams() {
		if u.Addr == sick.addr() {
			su = u
		}
	}
	if su.Available() {
		t.Fatal("replica answering 503 not ejected")
	}
	time.Sleep(200 * time.Millisecond)
	if su.Available() {
		t.Fatal("returned to the pool while /v2/health/ready says 503")
	}
	sick.setReady(true)
	time.Sleep(300 * time.Millisecond)
	if !su.Available() {
		t.Fatal("not returned once ready")
	}
}

func TestAllReplicasBusy(t *testing.T) { eachUpstream(t, testAllReplicasBusy) }

func testAllReplicasBusy(t *testing.T, upstream string) {
	e := newEnv(t, false)
	e.upstream = upstream
	key, _ := e.key(e.account("acme", ""), "inference")
	a1, a2 := newRuntime(t, "text-classification"), newRuntime(t, "text-classification")
	a1.setReady(false) // both loading or draining: 503 not_ready
	a2.setReady(false)
	e.model("sentiment", "text-classification", 0, a1, a2)
	e.start(Config{EjectAfter: 100})
	a := e.post(key, "/v1/sentiment/sentiment", `{"text":"x"}`)
	if a.status != 503 || a.header.Get("Retry-After") == "" || a.code() != "no_replica" {
		t.Fatalf("%d %v %s", a.status, a.header, a.raw)
	}
	if h := a1.hits.Load() + a2.hits.Load(); h != 2 {
		t.Fatalf("%d attempts, want 2 (one retry)", h)
	}
	// (a full queue, 429, is TestFullRuntimeQueueIsNotEjected's)
	a1.setReady(true)
	a2.setReady(true)
	// A 500 is an answer about the input, not a dead replica: no retry. (The
	// runtime gives 500 for no input it is known to: forced.)
	a1.status.Store(500)
	a2.status.Store(500)
	before := a1.hits.Load() + a2.hits.Load()
	a = e.post(key, "/v1/sentiment/sentiment", `{"text":"x"}`)
	if a.status != 502 || a1.hits.Load()+a2.hits.Load() != before+1 {
		t.Fatalf("500: status %d, attempts %d", a.status, a1.hits.Load()+a2.hits.Load()-before)
	}
	// A 4xx from the runtime (the model failed on this input) keeps its status.
	a1.status.Store(0)
	a2.status.Store(0)
	a1.stub.fail.Store(true)
	a2.stub.fail.Store(true)
	if a = e.post(key, "/v1/sentiment/sentiment", `{"text":"x"}`); a.status != 422 {
		t.Fatalf("422 relayed as %d", a.status)
	}
}

func TestTimeoutAndClientDisconnect(t *testing.T) { eachUpstream(t, testTimeoutAndClientDisconnect) }

func testTimeoutAndClientDisconnect(t *testing.T, upstream string) {
	e := newEnv(t, false)
	e.upstream = upstream
	key, _ := e.key(e.account("acme", ""), "inference")
	slow := newRuntime(t, "text-classification")
	slow.stub.delay.Store(int64(2 * time.Second))
	e.model("slow", "text-classification", 0, slow)
	e.start(Config{Timeout: 10 * time.Second, ModelTimeouts: "slow=200ms"})
	start := time.Now()
	a := e.post(key, "/v1/slow/sentiment", `{"text":"x"}`)
	if a.status != 504 || a.code() != "upstream_timeout" || time.Since(start) > time.Second {
		t.Fatalf("per-model timeout: %d %s after %s", a.status, a.raw, time.Since(start))
	}

	// Client disconnect cancels the upstream call.
	e.gw.opts.modelTimeouts = nil
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", e.srv.URL+"/v1/slow/sentiment", strings.NewReader(`{"text":"x"}`))
	req.Header.Set("Authorization", "Token "+key)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		t.Fatal("request should have been cancelled")
	}
	// the upstream call ends first, then the request is counted: wait for both
	deadline := time.Now().Add(time.Second)
	for metricValue(e.gw.m.inflight.WithLabelValues("slow")) != 0 || metricValue(e.gw.m.requests.WithLabelValues("slow", "499")) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("a second after the client left: upstream in flight %v, 499 count %v",
				metricValue(e.gw.m.inflight.WithLabelValues("slow")), metricValue(e.gw.m.requests.WithLabelValues("slow", "499")))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := metricValue(e.gw.m.requests.WithLabelValues("slow", "499")); n != 1 {
		t.Fatalf("499 count %v", n)
	}
}

// metricValue reads a counter or gauge.
func metricValue(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		return -1
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}

// TestFullRuntimeQueueIsNotEjected: a healthy runtime whose queue is full
// answers 429 overloaded (runtimeapi); the gateway tries another replica,
// answers the customer 503 overloaded with Retry-After when none has room,
// and never counts it toward ejection. Before the wire contract the runtime
// answered 503 for a full queue and the gateway, expecting 429, counted it
// as a replica not ready: a saturated, healthy replica was ejected and
// probed back in a loop.
func TestFullRuntimeQueueIsNotEjected(t *testing.T) {
	eachUpstream(t, testFullRuntimeQueueIsNotEjected)
}

func testFullRuntimeQueueIsNotEjected(t *testing.T, upstream string) {
	e := newEnv(t, false)
	e.upstream = upstream
	key, _ := e.key(e.account("acme", ""), "inference")
	busy := runtimeOpts{queue: 1, maxSize: 1}
	full := newRuntimeWith(t, runtimeapi.TextClassification, busy)
	full2 := newRuntimeWith(t, runtimeapi.TextClassification, busy)
	free := newRuntime(t, runtimeapi.TextClassification)
	e.model("sentiment", runtimeapi.TextClassification, 0, full)
	e.model("pair", runtimeapi.TextClassification, 0, full2, free)
	e.start(Config{EjectAfter: 2, ProbeInterval: 50 * time.Millisecond})
	full.fill(t)
	full2.fill(t)

	for i := 0; i < 6; i++ {
		a := e.post(key, "/v1/sentiment/sentiment", `{"text":"x"}`)
		if a.status != 503 || a.code() != runtimeapi.CodeOverloaded || a.header.Get("Retry-After") == "" {
			t.Fatalf("request %d to a model whose one replica is full: %d %v %s", i, a.status, a.header, a.raw)
		}
	}
	for i := 0; i < 10; i++ {
		if a := e.post(key, "/v1/pair/sentiment", `{"text":"x"}`); a.status != 200 {
			t.Fatalf("request %d with one replica full and one free: %d %s (want the retry on the free one)", i, a.status, a.raw)
		}
	}
	for _, model := range []string{"sentiment", "pair"} {
		if n := metricValue(e.gw.m.ejections.WithLabelValues(model)); n != 0 {
			t.Errorf("%s: %v ejections of a healthy replica with a full queue", model, n)
		}
		for _, u := range e.gw.pool(model).Upstreams() {
			if !u.Available() {
				t.Errorf("%s: replica %s ejected for a full queue", model, u.Addr)
			}
		}
	}
	if n := metricValue(e.gw.m.upErrors.WithLabelValues("sentiment", "busy")); n < 6 {
		t.Errorf("busy answers counted %v, want at least 6", n)
	}
	full.release()
	deadline := time.Now().Add(3 * time.Second)
	for e.post(key, "/v1/sentiment/sentiment", `{"text":"x"}`).status != 200 {
		if time.Now().After(deadline) {
			t.Fatal("the replica does not serve once its queue drained")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
