package deployments

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"

	"github.com/nlpswarm/nlpswarm/apiserver"
	"github.com/nlpswarm/nlpswarm/internal/artifactcred"
	"github.com/nlpswarm/nlpswarm/internal/dockertest"
	"github.com/nlpswarm/nlpswarm/internal/pg/pgtest"
	"github.com/nlpswarm/nlpswarm/internal/rdb/rdbtest"
	"github.com/nlpswarm/nlpswarm/modelmgr"
	"github.com/nlpswarm/nlpswarm/modelmgr/onnxcheck/onnxtest"
	"github.com/nlpswarm/nlpswarm/scheduler"
)

// TestAutoscaleInSwarm is issue 10's "must show", in the real swarm with the
// sentiment fixture: the real apiserver (artifacts, desired state), scheduler
// (reconciler and autoscaler) and Postgres/Redis run on this host, the
// gateway runs as a Swarm service on an overlay network (it finds replicas by
// tasks.<service> DNS, as in the stack) and the model replicas are real
// runtimes. It shows, printing the figures:
//
//  1. a model at zero answers its first request correctly, and how long the
//     request took (goal ≤ 3 s with the image present; logged, not asserted:
//     speed is for benchmarks and figures, not timed tests);
//  2. 100 requests at once for a model at zero: one wake-up and one
//     scale-up (the wake-up carries the burst's size), every request
//     answered (or refused with 503 + Retry-After);
//  3. a load ramp 1 → 32 concurrent → 0 with min 0, max 4: the replica count
//     follows it up and back to zero, no request fails;
//  4. a second scale from zero, the artifact now in the node's cache, and
//     `nlpswarm status` with every replica's cold-start breakdown.
func TestAutoscaleInSwarm(t *testing.T) {
	if testing.Short() {
		t.Skip("swarm test in -short mode")
	}
	f := newFleet(t)

	// 1. first request for a model at zero (the artifact is not on the node yet)
	first := f.timedRequest(t, "first request, model at zero, artifact not cached")
	f.waitZero(t)

	// 2. 100 requests at once for the model at zero
	f.burst(t, 100)
	f.waitZero(t)

	// 3. ramp 1 → 32 → 0 concurrent clients
	f.ramp(t)
	f.waitZero(t)

	// 4. again from zero, artifact cached on the node; then the breakdown
	second := f.timedRequest(t, "first request, model at zero, artifact cached")
	t.Logf("scale from zero, request → answer: %s (artifact downloaded), %s (artifact cached); goal ≤ 3 s",
		first.Round(time.Millisecond), second.Round(time.Millisecond))
	f.showStatus(t)
	// speed is reported, not asserted (a loaded CI machine must not fail a
	// correct platform); README.md keeps the figures measured here
	if second > 3*time.Second {
		t.Logf("goal NOT met: %s from zero with the image and the artifact present (goal ≤ 3 s)", second.Round(time.Millisecond))
	}
}

// fleet is everything one run of the test set up.
type fleet struct {
	cl       *client.Client
	db       *pgtest.DB
	model    string
	service  string
	key      string
	admin    string
	api      string // apiserver URL, reachable from the host and the containers
	gateway  string // gateway URL on loopback
	input    string // a reference input and its expected answer
	label    string
	score    float64
	logs     *lockedBuffer
	schedLog *slog.Logger
}

func newFleet(t *testing.T) *fleet {
	cl := dockertest.Swarm(t)
	root := dockertest.RepoRoot(t)
	fixtures := filepath.Join(root, "..", "shared", "fixtures", "nlp")
	if _, err := os.Stat(filepath.Join(fixtures, "sentiment")); err != nil {
		t.Skipf("fixtures absent: %v", err)
	}
	image := dockertest.Image(t)
	f := &fleet{cl: cl, db: pgtest.New(t, true), logs: &lockedBuffer{}}
	rdb, prefix := rdbtest.New(t)
	ctx := context.Background()
	f.schedLog = slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("scheduler log:\n%s", f.logs.String())
			out, _ := exec.Command("docker", "service", "logs", "--tail", "40", f.service).CombinedOutput()
			t.Logf("%s logs:\n%s", f.service, out)
		}
	})

	// the host side of docker_gwbridge: containers on an overlay reach the
	// host there, so the apiserver, Postgres and Redis of this test are
	// offered on it (Postgres and Redis through forwarders)
	gw, err := cl.NetworkInspect(ctx, "docker_gwbridge", client.NetworkInspectOptions{})
	if err != nil || len(gw.Network.IPAM.Config) == 0 {
		pgtest.Unavailable(t, "docker_gwbridge (swarm's bridge to the host)", err)
	}
	hostIP := gw.Network.IPAM.Config[0].Gateway.String()
	pgURL, _ := url.Parse(f.db.URL)
	pgFwd := forward(t, hostIP, pgURL.Host)
	redisFwd := forward(t, hostIP, rdbtest.Addr())

	// the real apiserver, on the bridge address
	const internalToken = "autoscale-test-internal"
	f.admin = "autoscale-test-admin"
	store, err := modelmgr.NewFSStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	api := apiserver.New(apiserver.Config{AdminToken: f.admin, InternalToken: internalToken}, f.db.Pool, store,
		modelmgr.Validator{Extract: modelmgr.Extract}, slog.New(slog.DiscardHandler))
	ln, err := net.Listen("tcp", net.JoinHostPort(hostIP, "0"))
	if err != nil {
		t.Fatal(err)
	}
	// the backoffice and, as on the stack's ops listener, /internal/blobs
	mux := http.NewServeMux()
	mux.Handle("/", api.Handler())
	mux.Handle("/internal/", api.InternalHandler())
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	f.api = "http://" + ln.Addr().String()

	// Swarm objects, unique to this run; cleanups run in reverse order
	netName := dockertest.Name("nlpswarm-as-net")
	nw, err := cl.NetworkCreate(ctx, netName, client.NetworkCreateOptions{Driver: "overlay", Attachable: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for i := 0; i < 60; i++ { // busy until the tasks' containers are gone
			if _, err := cl.NetworkRemove(context.Background(), nw.ID, client.NetworkRemoveOptions{}); err == nil {
				return
			}
			time.Sleep(500 * time.Millisecond)
		}
	})
	volume := dockertest.Name("nlpswarm-as-artifacts")
	t.Cleanup(func() { dockertest.RemoveVolume(t, cl, volume) })

	// the model, a customer and a key with limits far above the test's load
	f.model = dockertest.Name("as")
	f.service = scheduler.ServiceName(f.model)
	f.call(t, "POST", "/api/v1/plans", map[string]any{"name": "as-load", "requests_per_second": 100000, "burst": 100000}, nil)
	var acc struct {
		ID int64 `json:"id"`
	}
	f.call(t, "POST", "/api/v1/accounts", map[string]any{"name": "as", "plan": "as-load"}, &acc)
	var key struct {
		Key string `json:"key"`
	}
	f.call(t, "POST", fmt.Sprintf("/api/v1/accounts/%d/keys", acc.ID), map[string]any{"name": "as"}, &key)
	f.key = key.Key
	f.call(t, "POST", "/api/v1/models", map[string]any{"name": f.model, "task": "text-classification"}, nil)
	f.upload(t, filepath.Join(fixtures, "sentiment"))
	ref := loadReference(t, fixtures)
	f.input, f.label, f.score = ref.Sentiment[0].Input, ref.Sentiment[0].Output[0].Label, ref.Sentiment[0].Output[0].Score

	// the scheduler: reconciler and autoscaler, in this process
	sctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		stop()
		wg.Wait()
		list, _ := cl.ServiceList(context.Background(), client.ServiceListOptions{Filters: client.Filters{}.Add("name", f.service)})
		for _, s := range list.Items {
			cl.ServiceRemove(context.Background(), s.ID, client.ServiceRemoveOptions{})
		}
	})
	owner := dockertest.Name("as-test")
	rec := &scheduler.Reconciler{DB: f.db.Pool, Docker: cl, Log: f.schedLog, Metrics: scheduler.NewMetrics(nil), Spec: scheduler.SpecConfig{
		Owner: owner, Image: image, Network: nw.ID, ArtifactBaseURL: f.api,
		ArtifactKey: artifactcred.Key(internalToken), ArtifactVolume: volume,
	}}
	as := &scheduler.Autoscaler{DB: f.db.Pool, Redis: rdb, Prefix: prefix, Log: f.schedLog, Metrics: scheduler.NewMetrics(nil)}
	leader, err := scheduler.AcquireLeadership(ctx, f.db.Pool, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		defer leader.Release()
		if err := rec.Loop(sctx, leader, 2*time.Second); err != nil {
			t.Errorf("reconciler: %v", err)
		}
	}()
	go func() {
		defer wg.Done()
		as.Run(sctx)
	}()

	// deploy autoscaled, at zero: min 0, max 4, 4 in flight per replica
	f.call(t, "PUT", "/api/v1/models/"+f.model+"/deployment", map[string]any{
		"replicas": 0, "resources": map[string]any{"memory": "512M"},
		"autoscale": map[string]any{"min": 0, "max": 4, "target_inflight": 4, "scale_down_delay": "4s", "idle_to_zero": "6s"},
	}, nil)
	waitUntil(t, "the model service at 0 replicas", time.Minute, func() bool {
		insp, err := cl.ServiceInspect(ctx, f.service, client.ServiceInspectOptions{})
		return err == nil && insp.Service.Spec.Mode.Replicated != nil && *insp.Service.Spec.Mode.Replicated.Replicas == 0
	})

	// the gateway: the real role as a Swarm service on the overlay network
	port := freePort(t)
	gwDB := *pgURL
	gwDB.Host = pgFwd
	one := uint64(1)
	gwName := dockertest.Name("nlpswarm-as-gateway")
	created, err := cl.ServiceCreate(ctx, client.ServiceCreateOptions{Spec: swarm.ServiceSpec{
		Annotations: swarm.Annotations{Name: gwName},
		TaskTemplate: swarm.TaskSpec{
			ContainerSpec: &swarm.ContainerSpec{Image: image, Args: []string{"gateway", "--listen=:8080", "--draindelay=0s",
				"--db.url=" + gwDB.String(), "--redis.addr=" + redisFwd, "--redisprefix=" + prefix, "--discovery=dns", "--gatewayid=as-gw"}},
			Networks:      []swarm.NetworkAttachmentConfig{{Target: nw.ID}},
			RestartPolicy: &swarm.RestartPolicy{Condition: swarm.RestartPolicyConditionNone},
		},
		Mode: swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &one}},
		EndpointSpec: &swarm.EndpointSpec{Mode: swarm.ResolutionModeDNSRR, Ports: []swarm.PortConfig{{
			Protocol: network.TCP, TargetPort: 8080, PublishedPort: uint32(port), PublishMode: swarm.PortConfigPublishModeHost,
		}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := exec.Command("docker", "service", "logs", "--tail", "60", gwName).CombinedOutput()
			t.Logf("gateway logs:\n%s", out)
		}
		cl.ServiceRemove(context.Background(), created.ID, client.ServiceRemoveOptions{})
	})
	f.gateway = fmt.Sprintf("http://127.0.0.1:%d", port)
	// the gateway knows the model once a wrong task gets 400 (not 404); that
	// request never reaches a replica, so the model stays at zero
	waitUntil(t, "the gateway up with the model in its catalogue", 2*time.Minute, func() bool {
		code, _, _ := f.request(context.Background(), "/v1/"+f.model+"/embeddings")
		return code == http.StatusBadRequest
	})
	return f
}

// request sends one sentiment request (path overrides the route when set).
func (f *fleet) request(ctx context.Context, path string) (int, string, []byte) {
	if path == "" {
		path = "/v1/" + f.model + "/sentiment"
	}
	body, _ := json.Marshal(map[string]string{"text": f.input})
	req, _ := http.NewRequestWithContext(ctx, "POST", f.gateway+path, bytes.NewReader(body))
	req.Header.Set("Authorization", "Token "+f.key)
	resp, err := gatewayClient.Do(req)
	if err != nil {
		return 0, "", []byte(err.Error())
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Retry-After"), b
}

// gatewayClient keeps up to 256 connections to the gateway alive (net/http's
// default client keeps 2), so that a burst goes out on connections already
// open (fleet.connect).
var gatewayClient = &http.Client{Transport: &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256}}

// connect opens n connections to the gateway and leaves them idle in
// gatewayClient: "n requests at once" are then n requests from clients
// already connected, which arrive within milliseconds, rather than n
// connection set-ups, which on a loaded machine spread the burst over
// more than the gateway's wake-up coalescing window (a fresh-clone CI run
// saw 2 requests held, then the other 98 over 50 ms later: two scale-ups).
func (f *fleet) connect(t *testing.T, n int) {
	t.Helper()
	var got, done sync.WaitGroup
	release := make(chan struct{})
	for range n {
		got.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			resp, err := gatewayClient.Get(f.gateway + "/healthz")
			got.Done() // (every answer held open until all are in: n connections, not fewer reused)
			<-release
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	got.Wait()
	close(release)
	done.Wait()
}

// checkAnswer compares a 200's body with transformers' reference output.
func (f *fleet) checkAnswer(body []byte) error {
	var got struct {
		Labels []struct {
			Label string  `json:"label"`
			Score float64 `json:"score"`
		} `json:"scored_labels"`
	}
	if err := json.Unmarshal(body, &got); err != nil || len(got.Labels) == 0 ||
		got.Labels[0].Label != f.label || math.Abs(got.Labels[0].Score-f.score) > 1e-4 {
		return fmt.Errorf("answer %s, want %s %.6f (transformers)", body, f.label, f.score)
	}
	return nil
}

// timedRequest sends one request to the model at zero and returns how long
// the answer took.
func (f *fleet) timedRequest(t *testing.T, what string) time.Duration {
	t.Helper()
	start := time.Now()
	code, _, body := f.request(context.Background(), "")
	took := time.Since(start)
	if code != 200 {
		t.Fatalf("%s: %d %s", what, code, body)
	}
	if err := f.checkAnswer(body); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	t.Logf("%s: answered correctly (%s) in %s", what, f.label, took.Round(time.Millisecond))
	return took
}

// replicas is the desired count and the running tasks.
func (f *fleet) replicas(t *testing.T) (desired, running int, reason string) {
	t.Helper()
	ctx := context.Background()
	if err := f.db.Pool.QueryRow(ctx, `SELECT d.replicas, d.scale_reason FROM deployments d JOIN models m ON m.id = d.model_id WHERE m.name = $1`,
		f.model).Scan(&desired, &reason); err != nil {
		t.Fatal(err)
	}
	tl, err := f.cl.TaskList(ctx, client.TaskListOptions{Filters: client.Filters{}.Add("service", f.service).Add("desired-state", "running")})
	if err == nil {
		for _, task := range tl.Items {
			if task.Status.State == swarm.TaskStateRunning {
				running++
			}
		}
	}
	return desired, running, reason
}

// gatewayReplicas is the number of replicas the gateway discovered.
func (f *fleet) gatewayReplicas() float64 {
	resp, err := http.Get(f.gateway + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	prefix := `nlpswarm_gateway_replicas{model="` + f.model + `"} `
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			n, _ := strconv.ParseFloat(v, 64)
			return n
		}
	}
	return 0
}

// gatewayCounter sums a counter of the gateway for the model.
func (f *fleet) gatewayCounter(name string) float64 {
	resp, err := http.Get(f.gateway + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sum := 0.0
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, name+"{") && strings.Contains(line, `model="`+f.model+`"`) {
			n, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			sum += n
		}
	}
	return sum
}

// waitZero waits until the autoscaler has taken the model to zero and the
// gateway no longer sees a replica.
func (f *fleet) waitZero(t *testing.T) {
	t.Helper()
	start := time.Now()
	waitUntil(t, "the model back at zero", 90*time.Second, func() bool {
		d, r, _ := f.replicas(t)
		return d == 0 && r == 0 && f.gatewayReplicas() == 0
	})
	_, _, reason := f.replicas(t)
	t.Logf("back at zero %s later (%s)", time.Since(start).Round(100*time.Millisecond), reason)
}

// timeline samples the desired and running replicas every 250 ms.
type timeline struct {
	mu    sync.Mutex
	start time.Time
	rows  []sample
}

type sample struct {
	at                time.Duration
	clients           int
	desired, running  int
	ok, refused, fail int64
}

// tally counts answers: 200, 503 with Retry-After (the documented refusal
// of a full hold or a hold past its deadline), anything else a failure.
type tally struct {
	ok, refused, failed atomic.Int64
	mu                  sync.Mutex
	bad                 map[string]int
}

func (c *tally) count(code int, retry string, body []byte) {
	switch {
	case code == 200:
		c.ok.Add(1)
	case code == 503 && retry != "":
		c.refused.Add(1)
	default:
		c.failed.Add(1)
		c.mu.Lock()
		if c.bad == nil {
			c.bad = map[string]int{}
		}
		c.bad[fmt.Sprintf("%d %.120s", code, body)]++
		c.mu.Unlock()
	}
}

func (f *fleet) record(t *testing.T, clients *atomic.Int64, c *tally) (*timeline, func()) {
	tl := &timeline{start: time.Now()}
	stop := make(chan struct{})
	done := make(chan struct{})
	snap := func() {
		d, r, _ := f.replicas(t)
		tl.mu.Lock()
		tl.rows = append(tl.rows, sample{at: time.Since(tl.start), clients: int(clients.Load()), desired: d, running: r,
			ok: c.ok.Load(), refused: c.refused.Load(), fail: c.failed.Load()})
		tl.mu.Unlock()
	}
	go func() {
		defer close(done)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			snap()
			select {
			case <-stop:
				snap() // the final state
				return
			case <-tick.C:
			}
		}
	}()
	return tl, func() { close(stop); <-done }
}

// print logs one row a second, and every change of the replica counts.
func (tl *timeline) print(t *testing.T) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "%6s %7s %7s %7s %8s %8s %6s\n", "t", "clients", "desired", "running", "ok", "refused", "failed")
	var last sample
	lastSec := -1
	for i, s := range tl.rows {
		sec := int(s.at / time.Second)
		if i == 0 || sec != lastSec || s.desired != last.desired || s.running != last.running || s.clients != last.clients {
			fmt.Fprintf(&b, "%5.1fs %7d %7d %7d %8d %8d %6d\n", s.at.Seconds(), s.clients, s.desired, s.running, s.ok, s.refused, s.fail)
			last, lastSec = s, sec
		}
	}
	t.Logf("replicas over time:\n%s", b.String())
}

// burst sends n requests at once to the model at zero.
func (f *fleet) burst(t *testing.T, n int) {
	t.Helper()
	f.connect(t, n)
	wakes0 := f.gatewayCounter("nlpswarm_gateway_wakeups_total")
	var clients atomic.Int64
	var c tally
	tl, stop := f.record(t, &clients, &c)
	clients.Store(int64(n))
	start := time.Now()
	var firstOK atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, retry, body := f.request(context.Background(), "")
			c.count(code, retry, body)
			if code == 200 {
				if err := f.checkAnswer(body); err != nil {
					t.Error(err)
				}
				firstOK.CompareAndSwap(0, int64(time.Since(start)))
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	clients.Store(0)
	time.Sleep(2 * time.Second) // the count keeps moving for a moment after the burst
	stop()
	tl.print(t)
	wakes := f.gatewayCounter("nlpswarm_gateway_wakeups_total") - wakes0
	// the scale-ups: every rise of the desired count (the wake-up carries
	// the burst, so the first one should be the only one)
	ups, peak := 0, 0
	prev := 0
	for _, s := range tl.rows {
		if s.desired > prev {
			ups++
		}
		prev = s.desired
		peak = max(peak, s.desired)
	}
	t.Logf("%d requests at once for the model at zero: %d answered 200 (first after %s, all within %s), %d refused with 503 + Retry-After, %d failed; %v wake-up(s) sent, %d scale-up(s) (to %d replicas)",
		n, c.ok.Load(), time.Duration(firstOK.Load()).Round(time.Millisecond), took.Round(time.Millisecond), c.refused.Load(), c.failed.Load(), wakes, ups, peak)
	if c.failed.Load() > 0 {
		t.Fatalf("failed requests: %v", c.bad)
	}
	if wakes != 1 || ups != 1 {
		t.Fatalf("%v wake-ups and %d scale-ups for %d requests at once: want exactly 1 and 1", wakes, ups, n)
	}
}

// ramp runs closed-loop clients 1 → 2 → 4 → … → 32 → … → 1 → 0.
func (f *fleet) ramp(t *testing.T) {
	t.Helper()
	// The peak step holds at least 8 s and, beyond, until 3 replicas run
	// (2 minutes at most): the test checks that the running count follows
	// the load, not how fast a loaded machine starts containers. On a
	// loaded CI machine a replica took 13 s from scheduled to running, so
	// the ones asked for at the peak could still be starting when a fixed
	// 8 s ended and the load fell.
	steps := []struct {
		clients      int
		hold         time.Duration
		untilRunning int
	}{{1, 3 * time.Second, 0}, {2, 2 * time.Second, 0}, {4, 2 * time.Second, 0}, {8, 2 * time.Second, 0}, {16, 2 * time.Second, 0},
		{32, 8 * time.Second, 3}, {16, 2 * time.Second, 0}, {8, 2 * time.Second, 0}, {4, 2 * time.Second, 0}, {2, 2 * time.Second, 0}, {1, 2 * time.Second, 0}}
	var clients atomic.Int64
	var c tally
	tl, stopRecord := f.record(t, &clients, &c)
	var workers []context.CancelFunc
	var wg sync.WaitGroup
	maxDesired := 0
	for _, st := range steps {
		for len(workers) < st.clients {
			ctx, cancel := context.WithCancel(context.Background())
			workers = append(workers, cancel)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					c.count(f.request(context.Background(), ""))
				}
			}()
		}
		for len(workers) > st.clients {
			workers[len(workers)-1]()
			workers = workers[:len(workers)-1]
		}
		clients.Store(int64(st.clients))
		stepStart := time.Now()
		end, limit := stepStart.Add(st.hold), stepStart.Add(2*time.Minute)
		for {
			d, r, _ := f.replicas(t)
			maxDesired = max(maxDesired, d)
			now := time.Now()
			if now.After(limit) || now.After(end) && r >= st.untilRunning {
				if st.untilRunning > 0 {
					t.Logf("%d clients held %s: %d replica(s) running (step ends at %s and %d running)",
						st.clients, now.Sub(stepStart).Round(100*time.Millisecond), r, st.hold, st.untilRunning)
				}
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	for _, c := range workers {
		c()
	}
	wg.Wait()
	clients.Store(0)
	// load gone: back to one after the scale-down delay, to zero after idle_to_zero
	start := time.Now()
	waitUntil(t, "the ramp's replicas back at zero", 90*time.Second, func() bool {
		d, r, _ := f.replicas(t)
		return d == 0 && r == 0
	})
	stopRecord()
	tl.print(t)
	t.Logf("ramp 1 → 32 → 0 clients: %d answered, %d refused (503 + Retry-After), %d failed; replicas peaked at %d desired; zero %s after the last request",
		c.ok.Load(), c.refused.Load(), c.failed.Load(), maxDesired, time.Since(start).Round(100*time.Millisecond))
	if c.failed.Load() > 0 || c.refused.Load() > 0 {
		t.Fatalf("requests failed during the ramp (none may at 32 clients, well under the hold bound): %v", c.bad)
	}
	if maxDesired != 4 {
		t.Fatalf("replicas peaked at %d at 32 clients: want max 4", maxDesired)
	}
	// the running count rose with the load
	peak := 0
	tl.mu.Lock()
	for _, s := range tl.rows {
		peak = max(peak, s.running)
	}
	tl.mu.Unlock()
	if peak < 3 {
		t.Fatalf("at most %d replicas ran at 32 clients", peak)
	}
}

// showStatus prints `nlpswarm status MODEL` and checks the cold starts.
func (f *fleet) showStatus(t *testing.T) {
	t.Helper()
	bin := filepath.Join(dockertest.RepoRoot(t), "bin", "nlpswarm")
	cmd := exec.Command(bin, "status", f.model, "--server", f.api)
	cmd.Env = append(os.Environ(), "NLPSWARM_TOKEN="+f.admin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("nlpswarm status: %v\n%s", err, out)
	}
	t.Logf("nlpswarm status %s:\n%s", f.model, out)
	// every replica this run started (status shows the 5 most recent)
	rows, err := f.db.Pool.Query(context.Background(), `SELECT s.slot, s.scheduled_at, s.started_at, s.fetch_seconds, s.artifact_bytes,
			s.artifact_cached, s.load_seconds, s.warmup_seconds, s.ready_at, s.running_at
		FROM replica_starts s WHERE s.started_at IS NOT NULL AND s.running_at IS NOT NULL ORDER BY s.scheduled_at`)
	if err != nil {
		t.Fatal(err)
	}
	var all strings.Builder
	fmt.Fprintf(&all, "%4s %9s %8s %16s %7s %7s %7s %9s %7s\n", "slot", "→started", "→fetched", "(bytes, cached)", "→loaded", "→warmed", "→ready", "→running", "total")
	for rows.Next() {
		var slot int
		var sched, started, ready, running time.Time
		var fetch, load, warm float64
		var size int64
		var cached bool
		if err := rows.Scan(&slot, &sched, &started, &fetch, &size, &cached, &load, &warm, &ready, &running); err != nil {
			t.Fatal(err)
		}
		rest := ready.Sub(started).Seconds() - fetch - load - warm
		fmt.Fprintf(&all, "%4d %8.2fs %7.2fs %16s %6.2fs %6.2fs %6.2fs %8.2fs %6.2fs\n", slot, started.Sub(sched).Seconds(), fetch,
			fmt.Sprintf("(%d, %v)", size, cached), load, warm, rest, running.Sub(ready).Seconds(), running.Sub(sched).Seconds())
	}
	rows.Close()
	t.Logf("every replica's cold start (scheduled → process started → artifact fetched → loaded → warmed → ready → Swarm running):\n%s", all.String())
	var d apiserver.Deployment
	f.call(t, "GET", "/api/v1/models/"+f.model+"/deployment", nil, &d)
	var cached, downloaded int
	for _, cs := range d.ColdStarts {
		if cs.StartedAt == nil || cs.RunningAt == nil || cs.FetchSeconds == nil {
			continue
		}
		if *cs.ArtifactCached {
			cached++
		} else {
			downloaded++
		}
	}
	// the 5 most recent are shown: after the first start, replicas hit the node's cache
	if cached == 0 {
		t.Fatalf("no recent cold start served by the node's artifact cache (%d downloaded)", downloaded)
	}
}

func (f *fleet) call(t *testing.T, method, path string, body, out any) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, f.api+path, r)
	req.Header.Set("Authorization", "Bearer "+f.admin)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
	}
}

// upload packs a fixture folder as tar.gz and pushes it as a version.
func (f *fleet) upload(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".json") && e.Name() != "model.onnx" {
			continue
		}
		if files[e.Name()], err = os.ReadFile(filepath.Join(dir, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	if status, _, b := upload(t, f.api, f.model, "Bearer "+f.admin, onnxtest.TarGz(files)); status != http.StatusCreated {
		t.Fatalf("upload: %d %s", status, b)
	}
}

// forward listens on host:0 and relays every connection to target; it
// returns the address it listens on.
func forward(t *testing.T, host, target string) string {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	var conns sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		conns.Wait()
	})
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			conns.Add(1)
			go func() {
				defer conns.Done()
				done := make(chan struct{}, 2)
				go func() { io.Copy(out, in); done <- struct{}{} }()
				go func() { io.Copy(in, out); done <- struct{}{} }()
				<-done
				in.Close()
				out.Close()
				<-done
			}()
		}
	}()
	return ln.Addr().String()
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitUntil(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// lockedBuffer is a bytes.Buffer safe for concurrent writers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
