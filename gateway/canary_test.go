package gateway

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/deployment"
	"github.com/nlpswarm/nlpswarm/internal/runtimeapi"
	"github.com/nlpswarm/nlpswarm/internal/versionstats"
)

// The split's table: a request goes to the canary when its point is below
// the weight.
func TestToCanary(t *testing.T) {
	for _, c := range []struct {
		weight, point float64
		want          bool
	}{
		{0, 0, false}, {0, 99.9, false}, {5, 4.99, true}, {5, 5, false}, {5, 50, false},
		{50, 49.999, true}, {50, 50, false}, {100, 99.9999, true}, {100, 0, true},
	} {
		if got := toCanary(c.weight, c.point); got != c.want {
			t.Errorf("toCanary(%g, %g) = %v, want %v", c.weight, c.point, got, c.want)
		}
	}
}

// Over 10,000 requests the canary's share is within 2 points of its weight,
// random (each request) and sticky (10,000 keys); points lie in [0, 100).
func TestSplitWeights(t *testing.T) {
	const n = 10_000
	for _, sticky := range []bool{false, true} {
		for _, weight := range []float64{0, 1, 5, 12.5, 50, 95, 100} {
			canary := 0
			for i := range n {
				p := splitPoint("sentiment", sticky, int64(i+1))
				if p < 0 || p >= 100 {
					t.Fatalf("point %g out of [0, 100)", p)
				}
				if toCanary(weight, p) {
					canary++
				}
			}
			share := 100 * float64(canary) / n
			if math.Abs(share-weight) > 2 {
				t.Errorf("sticky=%v weight %g%%: %.2f%% of %d requests went to the canary", sticky, weight, share, n)
			}
		}
	}
}

// A sticky key always lands at the same point (so on the same side while
// the weight holds); a weight that grows only moves keys to the canary;
// models draw their canary's keys apart.
func TestStickyPoint(t *testing.T) {
	both, either := 0, 0
	for id := int64(1); id <= 1000; id++ {
		p := stickyPoint("sentiment", id)
		if stickyPoint("sentiment", id) != p {
			t.Fatalf("key %d: two points", id)
		}
		for _, w := range []float64{1, 5, 20, 50, 80} {
			if toCanary(w, p) && !toCanary(w+10, p) {
				t.Fatalf("key %d left the canary when its weight grew from %g%%", id, w)
			}
		}
		a, b := toCanary(10, p), toCanary(10, stickyPoint("ner", id))
		if a && b {
			both++
		}
		if a || b {
			either++
		}
	}
	// independent draws: about 1% of the keys on both canaries, 19% on one
	if both > 40 || either < 120 {
		t.Errorf("the canaries at 10%% of two models take the same keys: %d of 1000 on both, %d on either", both, either)
	}
}

// fakeReplica is a replica that answers /predict with a fixed body (or a
// forced status), optionally held until released, and ready on
// /v2/health/ready: a canary or shadow version whose answers a test picks.
type fakeReplica struct {
	*httptest.Server
	body     atomic.Pointer[string]
	status   atomic.Int32 // forced /predict status (0: 200)
	hold     atomic.Pointer[chan struct{}]
	hits     atomic.Int64 // requests received
	answered atomic.Int64 // requests answered
}

func newFakeReplica(t testing.TB, body string) *fakeReplica {
	f := &fakeReplica{}
	f.body.Store(&body)
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			w.WriteHeader(http.StatusOK)
			return
		}
		f.hits.Add(1)
		defer f.answered.Add(1)
		if h := f.hold.Load(); h != nil {
			select {
			case <-*h:
			case <-r.Context().Done():
				return
			}
		}
		if s := f.status.Load(); s != 0 {
			http.Error(w, `{"error":{"code":"forced","message":"forced by the test"}}`, int(s))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(*f.body.Load()))
	}))
	t.Cleanup(func() {
		f.release()
		f.Close()
	})
	return f
}

func (f *fakeReplica) addr() string { return strings.TrimPrefix(f.URL, "http://") }

func (f *fakeReplica) block() {
	ch := make(chan struct{})
	f.hold.Store(&ch)
}

func (f *fakeReplica) release() {
	if h := f.hold.Swap(nil); h != nil {
		close(*h)
	}
}

// canary deploys version of model (id) as its canary in mode, served at
// addrs (static discovery: set before the gateway starts).
func (e *env) canary(model string, id int64, version int, mode string, weight float64, sticky bool, addrs ...string) {
	e.t.Helper()
	if _, err := deployment.PutCanary(context.Background(), e.db.Pool, deployment.CanarySpec{
		Spec: deployment.Spec{ModelID: id, Model: model, Version: version, Replicas: max(len(addrs), 1)},
		Mode: mode, Weight: weight, Sticky: sticky,
	}); err != nil {
		e.t.Fatalf("canary of %s: %v", model, err)
	}
	// the scheduler's part: it saw the canary's service run this generation
	// (a canary is routed from then on, deployment.Routable)
	e.exec(`UPDATE deployments SET status = 'running', observed_generation = generation, routed_at = now() WHERE model_id = $1 AND track = 'canary'`, id)
	if len(addrs) > 0 {
		e.static[deployment.Key(model, deployment.TrackCanary)] = addrs
	}
}

// awaitCatalog waits until the gateway's catalogue entry of model satisfies
// ok (a change seen through LISTEN/NOTIFY).
func (e *env) awaitCatalog(model string, ok func(*Model) bool) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if m, found := e.gw.catalog.Get(model); found && ok(m) {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	e.t.Fatalf("the catalogue of %s did not change", model)
}

// sentimentEnv is an env (with Redis or not) with a key and the model
// sentiment deployed as version 1 on one runtime.
func sentimentEnv(t *testing.T, withRedis bool) (e *env, key string, id int64) {
	e = newEnv(t, withRedis)
	key, _ = e.key(e.account("acme", ""), "inference")
	id = e.model("sentiment", "text-classification", 0, newRuntime(t, "text-classification"))
	return e, key, id
}

// sendSentiment posts a sentiment request with key through c: the answer's
// status, its X-Model-Version and the start of its body (err: none came).
func (e *env) sendSentiment(c *http.Client, key string) (status int, version, body string, err error) {
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/sentiment/sentiment", strings.NewReader(`{"text":"great"}`))
	req.Header.Set("Authorization", "Token "+key)
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", "", err
	}
	defer resp.Body.Close()
	var buf [512]byte
	k, _ := io.ReadFull(resp.Body, buf[:])
	return resp.StatusCode, resp.Header.Get("X-Model-Version"), string(buf[:k]), nil
}

const (
	labelsPositive = `{"model":"sentiment","task":"text-classification","outputs":[[{"label":"POSITIVE","score":0.9},{"label":"NEGATIVE","score":0.1}]]}`
	labelsNegative = `{"model":"sentiment","task":"text-classification","outputs":[[{"label":"NEGATIVE","score":0.7},{"label":"POSITIVE","score":0.3}]]}`
)

// A canary answers its weight's share of the requests through the gateway
// (10,000 requests: within 2 points), each answer naming its version in
// X-Model-Version, and is counted per version (Prometheus and Redis).
func TestCanarySplit(t *testing.T) {
	e, key, id := sentimentEnv(t, true)
	canary := newFakeReplica(t, labelsNegative)
	e.canary("sentiment", id, 2, deployment.ModeCanary, 20, false, canary.addr())
	e.start(Config{})

	n, tolerance, workers := 10_000, 2.0, 8
	if testing.Short() { // (2,000 requests: within 4 points)
		n, tolerance = 2_000, 4
	}
	var versions [3]atomic.Int64
	var bad atomic.Int64
	var wg sync.WaitGroup
	next := atomic.Int64{}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	for range workers {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				status, v, body, err := e.sendSentiment(client, key)
				switch {
				case err != nil || status != 200:
					bad.Add(1)
				case v == "1" && strings.Contains(body, `"POSITIVE","score":0.9`):
					versions[1].Add(1)
				case v == "2" && strings.Contains(body, `"NEGATIVE","score":0.7`):
					versions[2].Add(1)
				default:
					bad.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d requests failed or answered with another version's answer", bad.Load())
	}
	share := 100 * float64(versions[2].Load()) / float64(n)
	t.Logf("canary at 20%%: %d of %d requests (%.2f%%)", versions[2].Load(), n, share)
	if math.Abs(share-20) > tolerance {
		t.Fatalf("the canary answered %.2f%%, want 20%% ± %g", share, tolerance)
	}
	if hits := canary.hits.Load(); hits != versions[2].Load() {
		t.Fatalf("canary replica saw %d requests, answers named it %d times", hits, versions[2].Load())
	}
	// the per-version figures: Prometheus at once, Redis within a second or two
	if ok := metricValue(e.gw.m.versionRequests.WithLabelValues("sentiment", "2", "live", "ok")); ok != float64(versions[2].Load()) {
		t.Fatalf("version 2 metric %v, want %d", ok, versions[2].Load())
	}
	got := awaitStats(t, e, "sentiment", func(s map[int]versionstats.Stats) bool {
		return s[1].Requests+s[2].Requests == int64(n)
	})
	if got[2].Requests != versions[2].Load() || got[2].Errors != 0 || got[1].Shadow || got[2].Shadow || got[2].P50 <= 0 {
		t.Fatalf("figures in Redis: %+v", got)
	}
}

// awaitStats reads model's figures in Redis (the last minute) until ok.
func awaitStats(t *testing.T, e *env, model string, ok func(map[int]versionstats.Stats) bool) map[int]versionstats.Stats {
	t.Helper()
	var got map[int]versionstats.Stats
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var err error
		if got, err = versionstats.Read(context.Background(), e.rdb, e.prefix, model, time.Minute); err != nil {
			t.Fatal(err)
		}
		if ok(got) {
			return got
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("figures of %s in Redis: %+v", model, got)
	return nil
}

// A sticky canary gives each API key one version, the same on every
// request; both versions get keys.
func TestCanarySticky(t *testing.T) {
	e := newEnv(t, false)
	acc := e.account("acme", "")
	id := e.model("sentiment", "text-classification", 0, newRuntime(t, "text-classification"))
	canary := newFakeReplica(t, labelsNegative)
	e.canary("sentiment", id, 2, deployment.ModeCanary, 50, true, canary.addr())
	e.start(Config{})
	seen := map[string]int{}
	for i := range 24 {
		key, _ := e.key(acc, "inference")
		first := ""
		for j := range 12 {
			a := e.post(key, "/v1/sentiment/sentiment", `{"text":"x"}`)
			v := a.header.Get("X-Model-Version")
			if a.status != 200 || v == "" {
				t.Fatalf("key %d: %d %q %s", i, a.status, v, a.raw)
			}
			if j == 0 {
				first = v
				seen[v]++
			} else if v != first {
				t.Fatalf("key %d: version %s, then %s", i, first, v)
			}
		}
	}
	if seen["1"] == 0 || seen["2"] == 0 {
		t.Fatalf("keys per version: %v", seen)
	}
}

// A canary with no available replica (not started yet) fails no request:
// the stable version answers them, counted as fallbacks.
func TestCanaryWithoutReplicaFallsBack(t *testing.T) {
	e, key, id := sentimentEnv(t, false)
	e.canary("sentiment", id, 2, deployment.ModeCanary, 100, false) // no replica found
	e.start(Config{})
	for range 20 {
		if a := e.post(key, "/v1/sentiment/sentiment", `{"text":"x"}`); a.status != 200 || a.header.Get("X-Model-Version") != "1" {
			t.Fatalf("%d %q %s", a.status, a.header.Get("X-Model-Version"), a.raw)
		}
	}
	if n := metricValue(e.gw.m.canaryFallbacks.WithLabelValues("sentiment")); n != 20 {
		t.Fatalf("fallbacks %v", n)
	}
}

// A canary that answers 500 fails at most its share of the requests (its
// replica, ejected after a few, sends the rest to stable until it is
// ready again), and its figures in Redis show its error rate, which the
// scheduler's rule rolls it back on; after the rollback no request fails.
func TestFailingCanary(t *testing.T) {
	e, key, id := sentimentEnv(t, true)
	canary := newFakeReplica(t, labelsPositive)
	canary.status.Store(500)
	e.canary("sentiment", id, 2, deployment.ModeCanary, 10, false, canary.addr())
	e.start(Config{})
	const n = 400
	failed := 0
	for range n {
		a := e.post(key, "/v1/sentiment/sentiment", `{"text":"x"}`)
		switch {
		case a.status == 502 && a.header.Get("X-Model-Version") == "2":
			failed++
		case a.status != 200:
			t.Fatalf("%d %s", a.status, a.raw)
		}
	}
	t.Logf("a 500-answering canary at 10%%: %d of %d requests failed", failed, n)
	if failed == 0 || failed > n*10/100+20 {
		t.Fatalf("%d failed requests, want some and at most about 10%% of %d", failed, n)
	}
	got := awaitStats(t, e, "sentiment", func(s map[int]versionstats.Stats) bool { return s[2].Requests == int64(failed) })
	if got[2].ErrorRate != 1 || got[1].ErrorRate != 0 || got[1].Requests != int64(n-failed) {
		t.Fatalf("figures: %+v", got)
	}
	if _, _, err := deployment.Rollback(context.Background(), e.db.Pool, "sentiment", "test", false); err != nil {
		t.Fatal(err)
	}
	e.awaitCatalog("sentiment", func(m *Model) bool { return m.Canary == nil })
	for range 50 {
		if a := e.post(key, "/v1/sentiment/sentiment", `{"text":"x"}`); a.status != 200 || a.header.Get("X-Model-Version") != "1" {
			t.Fatalf("after the rollback: %d %s", a.status, a.raw)
		}
	}
}

// A shadow gets a copy of each request once the customer has the stable
// answer: the customer's answers are the stable version's, unchanged, and
// arrive while the shadow still holds its copies; copies beyond the cap are
// dropped and counted; shadow copies are not billed; once the shadow
// answers, the agreement of the two answers is counted.
func TestShadow(t *testing.T) {
	e, key, id := sentimentEnv(t, true)
	shadow := newFakeReplica(t, labelsNegative) // disagrees with the stable version
	e.canary("sentiment", id, 2, deployment.ModeShadow, 0, false, shadow.addr())
	shadow.block()
	e.start(Config{ShadowInflight: 3})

	want := `{"scored_labels":[{"label":"POSITIVE","score":0.9},{"label":"NEGATIVE","score":0.1}]}` + "\n"
	const n = 10
	for i := range n {
		a := e.post(key, "/v1/sentiment/sentiment", `{"text":"great"}`)
		if a.status != 200 || a.raw != want || a.header.Get("X-Model-Version") != "1" {
			t.Fatalf("request %d: %d %q %s", i, a.status, a.header.Get("X-Model-Version"), a.raw)
		}
		if i < 3 { // the copy reaches the shadow, which holds it
			deadline := time.Now().Add(5 * time.Second)
			for shadow.hits.Load() != int64(i+1) && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
		}
	}
	// every answer came while the shadow held its copies
	if h, a := shadow.hits.Load(), shadow.answered.Load(); h != 3 || a != 0 {
		t.Fatalf("shadow: %d copies received, %d answered; want 3 (the cap), none answered", h, a)
	}
	if d := metricValue(e.gw.m.shadowDropped.WithLabelValues("sentiment", "full")); d != n-3 {
		t.Fatalf("dropped %v, want %d", d, n-3)
	}
	shadow.release()
	got := awaitStats(t, e, "sentiment", func(s map[int]versionstats.Stats) bool { return s[2].ShadowCompared == 3 })
	if s := got[2]; !s.Shadow || s.Requests != 3 || s.Errors != 0 || s.ShadowAgreed != 0 || s.Agreement != 0 {
		t.Fatalf("shadow figures: %+v", s)
	}
	if s := got[1]; s.Shadow || s.Requests != n || s.Errors != 0 {
		t.Fatalf("stable figures: %+v", s)
	}
	if d := metricValue(e.gw.m.shadowCompared.WithLabelValues("sentiment", "2", "disagreed")); d != 3 {
		t.Fatalf("disagreed %v", d)
	}
	// an agreeing shadow, one copy at a time (below the cap even when a
	// loaded machine is slow to answer them)
	shadow.body.Store(ptr(labelsPositive))
	inflight := &e.gw.fleet.get(deployment.Key("sentiment", deployment.TrackCanary)).shadows
	for range 4 {
		if a := e.post(key, "/v1/sentiment/sentiment", `{"text":"great"}`); a.status != 200 || a.raw != want {
			t.Fatalf("%d %s", a.status, a.raw)
		}
		waitFor(t, "the shadow copy answered and compared", 5*time.Second, func() bool { return inflight.Load() == 0 })
	}
	awaitStats(t, e, "sentiment", func(s map[int]versionstats.Stats) bool { return s[2].ShadowCompared == 7 && s[2].ShadowAgreed == 4 })
	// billed: the customer's requests only
	if err := e.gw.FlushUsage(context.Background()); err != nil {
		t.Fatal(err)
	}
	var billed int64
	if err := e.db.Pool.QueryRow(context.Background(), `SELECT COALESCE(sum(requests), 0) FROM usage WHERE model_id = $1`, id).Scan(&billed); err != nil {
		t.Fatal(err)
	}
	if billed != n+4 {
		t.Fatalf("billed %d requests, want %d (shadow copies are not billed)", billed, n+4)
	}
}

func ptr[T any](v T) *T { return &v }

// A failing shadow (500, or gone) changes nothing for the customer: the
// stable answers, counted errors for the shadow.
func TestFailingShadow(t *testing.T) {
	e, key, id := sentimentEnv(t, true)
	shadow := newFakeReplica(t, labelsPositive)
	shadow.status.Store(500)
	e.canary("sentiment", id, 2, deployment.ModeShadow, 0, false, shadow.addr())
	e.start(Config{})
	for range 20 {
		if a := e.post(key, "/v1/sentiment/sentiment", `{"text":"x"}`); a.status != 200 || a.header.Get("X-Model-Version") != "1" {
			t.Fatalf("%d %s", a.status, a.raw)
		}
	}
	got := awaitStats(t, e, "sentiment", func(s map[int]versionstats.Stats) bool { return s[2].Requests > 0 && s[1].Requests == 20 })
	if s := got[2]; s.ErrorRate != 1 || s.ShadowCompared != 0 {
		t.Fatalf("shadow figures: %+v", s)
	}
	// a shadow whose replicas are all busy (the runtime's 503 overloaded):
	// dropped copies, not the version's errors; one copy at a time (below
	// the in-flight cap even when a loaded machine is slow to answer them,
	// which would drop a copy at the cap instead)
	shadow.status.Store(int32(runtimeapi.StatusOverloaded))
	inflight := &e.gw.fleet.get(deployment.Key("sentiment", deployment.TrackCanary)).shadows
	for range 20 {
		if a := e.post(key, "/v1/sentiment/sentiment", `{"text":"x"}`); a.status != 200 {
			t.Fatalf("shadow busy: %d %s", a.status, a.raw)
		}
		waitFor(t, "the shadow copy refused", 5*time.Second, func() bool { return inflight.Load() == 0 })
	}
	waitFor(t, "20 busy shadow copies dropped", 5*time.Second, func() bool {
		return metricValue(e.gw.m.shadowDropped.WithLabelValues("sentiment", "busy")) == 20
	})
	got = awaitStats(t, e, "sentiment", func(s map[int]versionstats.Stats) bool { return s[1].Requests == 40 })
	if s := got[2]; s.Requests != 20 || s.Errors != 20 {
		t.Fatalf("shadow figures after busy copies: %+v; want the 20 earlier failures only", s)
	}
	shadow.Close() // gone: connection refused
	for range 20 {
		if a := e.post(key, "/v1/sentiment/sentiment", `{"text":"x"}`); a.status != 200 {
			t.Fatalf("shadow gone: %d %s", a.status, a.raw)
		}
	}
}

// The canary's whole life under load (a canary at 30%, a weight change, a
// rollback, a second canary, its promote and the end of the promote), each
// step seen through LISTEN/NOTIFY: not one request fails, and each phase's
// answers come from the versions it routes to.
func TestCanarySwitchUnderLoad(t *testing.T) {
	e := newEnv(t, false)
	acc := e.account("acme", "")
	key, _ := e.key(acc, "inference")
	id := e.model("sentiment", "text-classification", 0, newRuntime(t, "text-classification"), newRuntime(t, "text-classification"))
	c1, c2 := newFakeReplica(t, labelsNegative), newFakeReplica(t, labelsNegative)
	e.static[deployment.Key("sentiment", deployment.TrackCanary)] = []string{c1.addr(), c2.addr()}
	e.start(Config{})
	ctx := context.Background()

	var mu sync.Mutex
	seen := map[string]int{} // version -> answers in the current phase
	gen := 0                 // the phase (requests sent in an earlier one are not counted)
	var failures atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	for range 6 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				sent := gen
				mu.Unlock()
				status, v, body, err := e.sendSentiment(client, key)
				if err != nil || status != 200 {
					failures.Add(1)
					t.Errorf("request failed: %d %s %v", status, body, err)
					continue
				}
				mu.Lock()
				if sent == gen {
					seen[v]++
				}
				mu.Unlock()
			}
		})
	}
	phase := func(name string, want ...string) {
		t.Helper()
		mu.Lock()
		clear(seen)
		gen++
		mu.Unlock()
		// at least 300 ms of answers, and on a loaded machine (the first
		// phase's requests open connections to runtimes that have not
		// answered yet) until every wanted version has answered, 10 s at
		// most; a version not wanted fails the phase whenever it answers
		time.Sleep(300 * time.Millisecond)
		var got string
		var ok bool
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			mu.Lock()
			got = fmt.Sprint(seen)
			answered, unwanted := 0, false
			for v := range seen {
				if slices.Contains(want, v) {
					answered++
				} else {
					unwanted = true
				}
			}
			mu.Unlock()
			ok = !unwanted && answered == len(want)
			if ok || unwanted || time.Now().After(deadline) {
				break
			}
		}
		t.Logf("%s: answers per version %s", name, got)
		if !ok {
			t.Errorf("%s: answers per version %s, want from versions %v only", name, got, want)
		}
	}
	phase("stable alone", "1")
	e.canary("sentiment", id, 2, deployment.ModeCanary, 30, false)
	e.awaitCatalog("sentiment", func(m *Model) bool { return m.Canary != nil && m.Canary.Version == 2 })
	phase("canary 2 at 30%", "1", "2")
	if _, err := e.db.Pool.Exec(ctx, `UPDATE deployments SET weight = 100 WHERE model_id = $1 AND track = 'canary'`, id); err != nil {
		t.Fatal(err)
	}
	if err := deployment.Notify(ctx, e.db.Pool, "sentiment"); err != nil {
		t.Fatal(err)
	}
	e.awaitCatalog("sentiment", func(m *Model) bool { return m.Canary != nil && m.Canary.Weight == 100 })
	phase("canary 2 at 100%", "2")
	if _, _, err := deployment.Rollback(ctx, e.db.Pool, "sentiment", "test", false); err != nil {
		t.Fatal(err)
	}
	e.awaitCatalog("sentiment", func(m *Model) bool { return m.Canary == nil })
	phase("rolled back", "1")
	e.canary("sentiment", id, 3, deployment.ModeCanary, 50, true)
	e.awaitCatalog("sentiment", func(m *Model) bool { return m.Canary != nil && m.Canary.Version == 3 })
	keyID := e.id(`SELECT id FROM api_keys WHERE account_id = $1`, acc)
	sticky := "1" // (one key: all its requests on the side of its point)
	if toCanary(50, stickyPoint("sentiment", keyID)) {
		sticky = "3"
	}
	phase("canary 3 at 50%, sticky", sticky)
	if _, err := deployment.Promote(ctx, e.db.Pool, "sentiment"); err != nil {
		t.Fatal(err)
	}
	e.awaitCatalog("sentiment", func(m *Model) bool { return m.Version == 3 })
	phase("promoting: the stable service rolls to 3", "3")
	if ok, err := deployment.FinishPromote(ctx, e.db.Pool, "sentiment"); err != nil || !ok {
		t.Fatal(ok, err)
	}
	e.awaitCatalog("sentiment", func(m *Model) bool { return m.Canary == nil })
	phase("promoted", "3")
	close(stop)
	wg.Wait()
	if failures.Load() != 0 {
		t.Fatalf("%d requests failed during the switches", failures.Load())
	}
}

// The split of a canary survives the catalogue snapshot: a gateway that
// starts from it routes the canary as Postgres did.
func TestCanarySnapshot(t *testing.T) {
	m, skipped := modelOf(deployment.Route{ModelID: 1, Model: "sentiment", Task: "text-classification", Replicas: 1, Format: deployment.FormatONNX, Version: 4,
		Canary: &deployment.CanaryRoute{Version: 5, Mode: deployment.ModeCanary, Weight: 12.5, Sticky: true, Replicas: 2, Format: deployment.FormatONNX}})
	if skipped != "" || m.Canary == nil || m.Canary.key != "sentiment_canary" || m.stableHdr[0] != "4" || m.Canary.hdr[0] != "5" {
		t.Fatalf("%+v %+v %q", m, m.Canary, skipped)
	}
	dir := t.TempDir()
	c := newCatalog(nil)
	c.snapshot = dir + "/catalog.json"
	if err := c.save(map[string]*Model{"sentiment": m}); err != nil {
		t.Fatal(err)
	}
	c2 := newCatalog(nil)
	c2.snapshot = c.snapshot
	if _, err := c2.loadSnapshot(); err != nil {
		t.Fatal(err)
	}
	got, _ := c2.Get("sentiment")
	if got.Canary == nil || fmt.Sprintf("%+v", *got.Canary) != fmt.Sprintf("%+v", *m.Canary) || got.Version != 4 || got.stableHdr[0] != "4" {
		t.Fatalf("from the snapshot: %+v %+v", got, got.Canary)
	}
	// a canary another runtime serves is not routed
	if m, skipped := modelOf(deployment.Route{ModelID: 1, Model: "e", Task: "feature-extraction", Format: deployment.FormatONNX, Version: 1,
		Canary: &deployment.CanaryRoute{Version: 2, Mode: deployment.ModeCanary, Weight: 50, Format: deployment.FormatGGUF}}); m.Canary != nil || skipped == "" {
		t.Fatalf("a GGUF canary of an ONNX model: %+v %q", m.Canary, skipped)
	}
}

// DNS discovery finds a canary's replicas at its own service's tasks name.
func TestDNSDiscoveryOfCanary(t *testing.T) {
	r := &recordingResolver{}
	d := DNSDiscovery{Resolver: r, Port: 9000}
	for _, key := range []string{"sentiment", deployment.Key("sentiment", deployment.TrackCanary)} {
		if _, err := d.Lookup(context.Background(), key); err != nil {
			t.Fatal(err)
		}
	}
	if fmt.Sprint(r.hosts) != "[tasks.nlp-sentiment tasks.nlp-sentiment_canary]" {
		t.Fatalf("looked up %v", r.hosts)
	}
}

type recordingResolver struct{ hosts []string }

func (r *recordingResolver) LookupHost(_ context.Context, host string) ([]string, error) {
	r.hosts = append(r.hosts, host)
	return []string{"10.0.0.1"}, nil
}

// The agreement of two answers, output by output.
func TestAgreement(t *testing.T) {
	const (
		pos    = `{"outputs":[[{"label":"POSITIVE","score":0.9},{"label":"NEGATIVE","score":0.1}],[{"label":"NEGATIVE","score":0.6},{"label":"POSITIVE","score":0.4}]]}`
		posLow = `{"outputs":[[{"label":"NEGATIVE","score":0.2},{"label":"POSITIVE","score":0.8}],[{"label":"NEGATIVE","score":0.9}]]}`
		neg    = `{"outputs":[[{"label":"NEGATIVE","score":0.9}],[{"label":"NEGATIVE","score":0.9}]]}`
		ents   = `{"outputs":[[{"entity_group":"PER","score":0.9,"word":"Alice","start":0,"end":5},{"entity_group":"LOC","score":0.8,"word":"Paris","start":15,"end":20}]]}`
		entsRe = `{"outputs":[[{"entity_group":"LOC","score":0.5,"word":"paris","start":15,"end":20},{"entity_group":"PER","score":0.99,"word":"alice","start":0,"end":5}]]}`
		entsSh = `{"outputs":[[{"entity_group":"PER","score":0.9,"word":"Alic","start":0,"end":4},{"entity_group":"LOC","score":0.8,"word":"Paris","start":15,"end":20}]]}`
		emb    = `{"outputs":[{"embedding":[1,0,0.5]},{"embedding":[0,1,0]}]}`
		embNr  = `{"outputs":[{"embedding":[1.01,0.01,0.5]},{"embedding":[1,0,0]}]}`
		oai    = `{"data":[{"index":1,"embedding":[0,1]},{"index":0,"embedding":[1,0]}]}`
		oaiSw  = `{"data":[{"index":0,"embedding":[1,0.001]},{"index":1,"embedding":[1,0]}]}`
	)
	tc, tok, fe := runtimeapi.TextClassification, runtimeapi.TokenClassification, runtimeapi.FeatureExtraction
	for _, c := range []struct {
		name, task string
		gguf       bool
		path       string
		a, b       string
		n, agreed  int64
	}{
		{"same labels", tc, false, runtimeapi.PathPredict, pos, pos, 2, 2},
		{"same top labels, other scores, unsorted", tc, false, runtimeapi.PathPredict, pos, posLow, 2, 2},
		{"one top label differs", tc, false, runtimeapi.PathPredict, pos, neg, 2, 1},
		{"shadow malformed", tc, false, runtimeapi.PathPredict, pos, `{"outputs":`, 2, 0},
		{"shadow with fewer outputs", tc, false, runtimeapi.PathPredict, pos, `{"outputs":[[{"label":"POSITIVE","score":1}]]}`, 2, 0},
		{"stable malformed: nothing compared", tc, false, runtimeapi.PathPredict, `nope`, pos, 0, 0},
		{"same entities in another order", tok, false, runtimeapi.PathPredict, ents, entsRe, 1, 1},
		{"an entity's span differs", tok, false, runtimeapi.PathPredict, ents, entsSh, 1, 0},
		{"embeddings near and far", fe, false, runtimeapi.PathPredict, emb, embNr, 2, 1},
		{"GGUF embeddings by index", fe, true, "/v1/embeddings", oai, oaiSw, 2, 1},
		{"v2 infer: not compared", tc, false, runtimeapi.InferPath("m"), pos, neg, 0, 0},
		{"generation: not compared", "text-generation", true, "/v1/completions", `{}`, `{}`, 0, 0},
	} {
		n, agreed := agreement(c.task, c.gguf, c.path, []byte(c.a), []byte(c.b))
		if n != c.n || agreed != c.agreed {
			t.Errorf("%s: %d compared, %d agreed; want %d, %d", c.name, n, agreed, c.n, c.agreed)
		}
	}
}

// FuzzAgreement: no pair of replica answers makes agreement panic, and it
// never counts more agreed outputs than compared.
func FuzzAgreement(f *testing.F) {
	f.Add(runtimeapi.TextClassification, `{"outputs":[[{"label":"A","score":1}]]}`, `{"outputs":[[{"label":"B","score":1}]]}`, false)
	f.Add(runtimeapi.TokenClassification, `{"outputs":[[{"entity_group":"PER","start":0,"end":3}]]}`, `{"outputs":[[]]}`, false)
	f.Add(runtimeapi.FeatureExtraction, `{"outputs":[{"embedding":[1,0]}]}`, `{"outputs":[{"embedding":[0,0]}]}`, false)
	f.Add(runtimeapi.FeatureExtraction, `{"data":[{"index":0,"embedding":[1]}]}`, `{"data":[{"index":5,"embedding":[1]}]}`, true)
	f.Fuzz(func(t *testing.T, task, a, b string, gguf bool) {
		path := runtimeapi.PathPredict
		if gguf {
			path = "/v1/embeddings"
		}
		n, agreed := agreement(task, gguf, path, []byte(a), []byte(b))
		if n < 0 || agreed < 0 || agreed > n {
			t.Fatalf("%d compared, %d agreed", n, agreed)
		}
	})
}
