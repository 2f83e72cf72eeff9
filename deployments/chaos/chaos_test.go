package chaos

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/artifactcred"
	"github.com/nlpswarm/nlpswarm/internal/swarmlab"
)

// TestChaos runs the platform on a three-node lab swarm and injects one
// fault after another under load through the gateway; see the README's
// "Reliability under faults" for the table a run prints. Opt-in:
// NLPSWARM_CHAOS=1 (make chaos). NLPSWARM_CHAOS_REPORT=FILE also writes the
// table to FILE.
func TestChaos(t *testing.T) {
	optIn(t, "NLPSWARM_CHAOS", "the chaos suite (about 5 minutes)")
	s := startStack(t, fakeGPUNode)
	rep := &report{}
	rep.logAtEnd(t)
	s.setupModels(t, rep)
	s.runScenarios(t, rep, []scenario{
		{"WorkerPowerCut", scenarioWorkerPowerCut},
		{"Drain", scenarioDrain},
		{"PostgresRestart", scenarioPostgresRestart},
		{"RedisRestart", scenarioRedisRestart},
		{"SchedulerKilledMidRollout", scenarioSchedulerKilled},
		{"ReplicaOutOfMemory", scenarioOOM},
		{"SecretsNeverShown", scenarioSecrets},
		{"ReplicasSpread", scenarioReplicasSpread},
		{"BlobsThroughDatabaseCut", scenarioBlobsThroughDatabaseCut},
		{"PostgresOutage90s", scenarioPostgresOutage},
		{"GatewaysKilled", scenarioGatewaysKilled},
		{"StackUpgrade", scenarioStackUpgrade},
	})
}

// scenario is one fault a suite injects, reporting to its subtest.
type scenario struct {
	name string
	fn   func(*testing.T, *stack, *report)
}

// runScenarios runs each scenario as a subtest, in order; one that fails
// ends the suite (the later ones would start from a broken stack) unless
// NLPSWARM_CHAOS_KEEPGOING=1.
func (s *stack) runScenarios(t *testing.T, rep *report, list []scenario) {
	for _, sc := range list {
		if !t.Run(sc.name, func(t *testing.T) { sc.fn(t, s.with(t), rep) }) && os.Getenv("NLPSWARM_CHAOS_KEEPGOING") != "1" {
			t.Fatalf("%s failed; the later scenarios would start from a broken stack", sc.name)
		}
	}
}

// logAtEnd logs the table when t ends, and writes it to
// NLPSWARM_CHAOS_REPORT if set.
func (r *report) logAtEnd(t *testing.T) {
	t.Cleanup(func() {
		md := r.markdown()
		t.Logf("chaos report (%s, %s):\n%s", time.Now().UTC().Format("2006-01-02"), machine(), md)
		if f := os.Getenv("NLPSWARM_CHAOS_REPORT"); f != "" {
			_ = os.WriteFile(f, []byte(md), 0o644)
		}
	})
}

func machine() string {
	host, _ := os.Hostname()
	cpus := 0
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		cpus = strings.Count(string(b), "\nprocessor") + 1
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		fmt.Sscanf(strings.TrimPrefix(strings.SplitN(string(b), "\n", 2)[0], "MemTotal:"), "%d", &kb)
		mem = fmt.Sprintf(", %.0f GiB", float64(kb)/(1<<20))
	}
	return fmt.Sprintf("%s, %d cores%s", host, cpus, mem)
}

// setupModels pushes the fixtures, deploys sentiment with two replicas
// (Swarm spreads them over the two workers) and checks GPU placement: a
// deployment asking for a GPU lands on the fake-GPU node, pinned to it.
func (s *stack) setupModels(t *testing.T, rep *report) {
	for _, m := range []struct{ name, task string }{{"sentiment", "text-classification"}, {"ner", "token-classification"}, {"embeddings", "feature-extraction"}} {
		s.mustCLI("models", "create", m.name, "--task", m.task)
		s.mustCLI("models", "push", m.name, filepath.Join(s.fixtures, m.name))
	}
	start := time.Now()
	s.mustCLI("deploy", "sentiment", "--replicas", "2", "--memory", "256M", "--wait", "--timeout", "5m")
	d := s.deployment("sentiment")
	t.Logf("sentiment: 2 replicas running on %v after %s", d.nodes(), time.Since(start).Round(100*time.Millisecond))
	if !s.spread("sentiment") {
		t.Fatalf("sentiment replicas not spread over the two workers: %v", d.nodes())
	}

	// GPU placement on the fake-GPU node (its agent's inventory)
	gpuNode := s.lab.Node(fakeGPUNode)
	s.waitFakeGPUs(t, fakeGPUNode)
	s.mustCLI("deploy", "embeddings", "--replicas", "1", "--memory", "256M", "--gpus", "1", "--gpu-memory", "4G", "--wait", "--timeout", "5m")
	d = s.waitDeployment("embeddings", 2*time.Minute, running)
	if why := gpuApart(d, 1, 1); why != "" || d.Observed.Tasks[0].Node != gpuNode.Name {
		t.Fatalf("GPU replica not on %s: %s %v", gpuNode.Name, why, gpuTasks(d))
	}
	spec := s.docker("service", "inspect", fmt.Sprintf("nlp-embeddings-g%d", d.Observed.Tasks[0].Slot), "--format",
		`{{json .Spec.TaskTemplate.Placement.Constraints}} {{json .Spec.TaskTemplate.ContainerSpec.Env}}`)
	if !strings.Contains(spec, "node.id=="+gpuNode.ID) || !strings.Contains(spec, "NVIDIA_VISIBLE_DEVICES="+d.Observed.Tasks[0].GPUs[0]) {
		t.Fatalf("GPU replica service not pinned to %s (%s): %s", gpuNode.Name, gpuNode.ID, spec)
	}
	cl := &http.Client{Timeout: 30 * time.Second}
	if code, msg := s.infer(cl, target{"/v1/embeddings/embeddings", `{"text":"hello"}`}); code != 200 {
		t.Fatalf("embeddings through the gateway: %d %s", code, msg)
	}
	t.Logf("GPU deployment placed on %s, pinned by node.id with a fake GPU's UUID, answering through the gateway", gpuNode.Name)
	rep.add(row{"GPU placement (setup)", "-", "-", "-", fmt.Sprintf("`--gpus 1 --gpu-memory 4G` placed on %s, the node whose agent reports 2 fake 16 GiB GPUs; pinned with node.id and NVIDIA_VISIBLE_DEVICES", gpuNode.Name)})
	s.mustCLI("undeploy", "embeddings") // two cores: keep only what the scenarios use
}

// spread reports whether a model's replicas run on both workers.
func (s *stack) spread(model string) bool {
	tasks := s.serviceTasks("nlp-" + model)
	on := map[string]bool{}
	for _, n := range tasks {
		on[n] = true
	}
	return on[s.lab.Node(2).Name] && on[s.lab.Node(3).Name]
}

// respread puts the two replicas back on both workers: Swarm does not move
// running tasks to a node that returns, and a forced rolling update
// (start-first) may well put both on one node. Scaling to one and back to
// two places the second where none runs (spread over node.id).
func (s *stack) respread(t *testing.T, model string) {
	t.Helper()
	for try := 0; try < 3 && !s.spread(model); try++ {
		s.mustCLI("scale", model, "1", "--wait", "--timeout", "3m")
		s.mustCLI("scale", model, "2", "--wait", "--timeout", "3m")
	}
	if !s.spread(model) {
		t.Fatalf("%s replicas not back on both workers: %v", model, s.serviceTasks("nlp-"+model))
	}
	s.waitDeployment(model, 2*time.Minute, running)
}

// runningOff is true once every replica runs and none on node.
func runningOff(node string) func(deployment) bool {
	return func(d deployment) bool {
		if !running(d) {
			return false
		}
		for _, tk := range d.Observed.Tasks {
			if tk.Node == node {
				return false
			}
		}
		return true
	}
}

// scenarioWorkerPowerCut: node 3 loses power (every process killed, link
// down) under load; Swarm marks it down and starts its replica on node 2;
// the gateway retries and ejects the dead replica. At most 0.1 % of the
// requests may fail, and the deployment status shows the move.
func scenarioWorkerPowerCut(t *testing.T, s *stack, rep *report) {
	s.respread(t, "sentiment")
	w := s.lab.Node(3)
	before := s.deployment("sentiment")
	l := s.startLoad(4)
	time.Sleep(5 * time.Second)
	cut := time.Now()
	downAfter := s.powerCut(w)
	after := s.waitDeployment("sentiment", 3*time.Minute, runningOff(w.Name))
	movedAfter := time.Since(cut)
	time.Sleep(5 * time.Second)
	l.end()
	l.log(t, "power cut on a worker")
	t.Logf("deployment status before: %v, after: %v (node down after %s, replica moved after %s)",
		before.nodes(), after.nodes(), downAfter.Round(100*time.Millisecond), movedAfter.Round(100*time.Millisecond))
	if l.failedPct() > 0.1 {
		t.Errorf("%.3f%% of requests failed (> 0.1 %%)", l.failedPct())
	}
	rep.add(row{"worker loses power", l.describe() + ", sentiment ×2 (one per worker)",
		"node 3: SIGKILL of dockerd, containerd, shims and replica, link down",
		lostOf(l), fmt.Sprintf("node down after %.0fs; status %v → %v after %.0fs", downAfter.Seconds(), before.nodes(), after.nodes(), movedAfter.Seconds())})
	boot := time.Now()
	must(t, w.Boot(context.Background()))
	must(t, s.lab.WaitNodes(context.Background(), 3, 2*time.Minute))
	t.Logf("%s back after %s", w.Name, time.Since(boot).Round(100*time.Millisecond))
}

// powerCut cuts w's power (swarmlab's Kill) and returns how long the
// manager took to mark it down (0 if it did not within 2 minutes).
func (s *stack) powerCut(w *swarmlab.Node) time.Duration {
	cut := time.Now()
	w.Kill()
	var downAfter time.Duration
	waitFor(context.Background(), 2*time.Minute, 500*time.Millisecond, func() bool {
		out, _ := s.dockerOn(1, "node", "inspect", "-f", "{{.Status.State}}", w.ID)
		if strings.TrimSpace(out) == "down" {
			downAfter = time.Since(cut)
			return true
		}
		return false
	})
	return downAfter
}

// scenarioDrain: node 3 is drained under load; Swarm stops its replica and
// starts one on node 2. No request may fail.
func scenarioDrain(t *testing.T, s *stack, rep *report) {
	s.respread(t, "sentiment")
	w := s.lab.Node(3)
	before := s.deployment("sentiment")
	l := s.startLoad(4)
	time.Sleep(5 * time.Second)
	start := time.Now()
	s.docker("node", "update", "--availability", "drain", w.ID)
	after := s.waitDeployment("sentiment", 3*time.Minute, runningOff(w.Name))
	moved := time.Since(start)
	time.Sleep(5 * time.Second)
	l.end()
	l.log(t, "drain")
	s.docker("node", "update", "--availability", "active", w.ID)
	t.Logf("deployment status before: %v, after: %v (moved in %s)", before.nodes(), after.nodes(), moved.Round(100*time.Millisecond))
	if l.failed.Load() != 0 {
		t.Errorf("%d requests failed during the drain", l.failed.Load())
	}
	rep.add(row{"node drained", l.describe() + ", sentiment ×2", "`docker node update --availability drain` node 3",
		lostOf(l), fmt.Sprintf("status %v → %v after %.0fs", before.nodes(), after.nodes(), moved.Seconds())})
}

// scenarioPostgresRestart: Postgres is killed (SIGKILL; Swarm starts it
// again) while model versions are uploaded and deployments changed in a
// loop, and clients call the gateway. Uploads and deploys in flight must fail
// cleanly (an error, within their timeout) and succeed on retry; no version
// may be half-written: each row's blob is there and hashes to its digest.
func scenarioPostgresRestart(t *testing.T, s *stack, rep *report) {
	var mu sync.Mutex
	type attempt struct {
		ok      bool
		took    time.Duration
		msg     string
		retries int
	}
	var uploads, deploys []attempt
	stop := make(chan struct{})
	var wg sync.WaitGroup
	retry := func(list *[]attempt, args ...string) {
		a := attempt{}
		for try := 0; ; try++ {
			t0 := time.Now()
			out, err := s.cli(90*time.Second, args...)
			d := time.Since(t0)
			if err == nil {
				a.ok = try == 0
				a.retries = try
				if try == 0 {
					a.took = d
				}
				break
			}
			if try == 0 {
				a.took, a.msg = d, lastLines(strings.TrimSpace(out), 1)
			}
			if try >= 20 {
				a.retries = -1 // never succeeded
				break
			}
			time.Sleep(2 * time.Second)
		}
		mu.Lock()
		*list = append(*list, a)
		mu.Unlock()
	}
	before := s.versions(t, "sentiment")
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			retry(&uploads, "models", "push", "sentiment", filepath.Join(s.fixtures, "sentiment"), "--timeout", "60s")
		}
	}()
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			retry(&deploys, "deploy", "ner", "--replicas", strconv.Itoa(i%2), "--memory", "128M", "--timeout", "60s")
			time.Sleep(500 * time.Millisecond)
		}
	}()
	l := s.startLoad(2)
	time.Sleep(5 * time.Second)
	pg, kill := s.killTask(t, "nlp_postgres")
	// back when the apiserver is ready again (it checks Postgres)
	back := waitFor(context.Background(), 3*time.Minute, 500*time.Millisecond, func() bool {
		resp, err := (&http.Client{Timeout: time.Second}).Get(s.api + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		ids := s.containersOf(1, "nlp_postgres")
		return resp.StatusCode == 200 && len(ids) == 1 && ids[0] != pg
	})
	downFor := time.Since(kill)
	if !back {
		t.Fatalf("postgres not back after %s", downFor)
	}
	time.Sleep(15 * time.Second)
	close(stop)
	wg.Wait()
	l.end()
	l.log(t, "inference while postgres restarts")

	failed, neverOK := 0, 0
	var slowest time.Duration
	var msgs []string
	count := func(list []attempt, what string) (int, int) {
		n := 0
		for _, a := range list {
			if !a.ok {
				failed++
				slowest = max(slowest, a.took)
				if len(msgs) < 4 {
					msgs = append(msgs, fmt.Sprintf("%s failed after %s: %s (ok after %d retries)", what, a.took.Round(100*time.Millisecond), a.msg, a.retries))
				}
				if a.retries < 0 {
					neverOK++
				}
			} else {
				n++
			}
		}
		return len(list), n
	}
	upN, upOK := count(uploads, "upload")
	depN, depOK := count(deploys, "deploy")
	for _, m := range msgs {
		t.Logf("  %s", m)
	}
	t.Logf("postgres down for %s: %d uploads (%d ok at once), %d deploys (%d ok at once); %d failed first, slowest failure %s, %d never succeeded",
		downFor.Round(100*time.Millisecond), upN, upOK, depN, depOK, failed, slowest.Round(100*time.Millisecond), neverOK)
	if neverOK > 0 {
		t.Errorf("%d uploads or deploys never succeeded on retry", neverOK)
	}
	if slowest > 65*time.Second {
		t.Errorf("a failing call took %s: not a clean, bounded failure", slowest)
	}
	// no half-written version: exactly the successful uploads were added,
	// and every version's blob is there and hashes to its digest
	after := s.versions(t, "sentiment")
	if got, want := len(after)-len(before), len(uploads); got != want {
		t.Errorf("%d versions added for %d uploads that succeeded (at once or on retry)", got, want)
	}
	internal, err := os.ReadFile(filepath.Join(s.state, "internal_token"))
	must(t, err)
	for _, v := range after {
		if err := s.checkBlob(v.Digest, strings.TrimSpace(string(internal))); err != nil {
			t.Errorf("version %d: %v", v.Version, err)
		}
	}
	d := s.deployment("ner")
	t.Logf("%d versions of sentiment, every blob verified; ner deployment: %d replica(s), %s", len(after), d.Replicas, d.Status)
	rep.add(row{"Postgres restarted", fmt.Sprintf("%d uploads and %d deploys in loops, inference %s", upN, depN, l.describe()),
		"SIGKILL of the Postgres container (Swarm restarts it)",
		fmt.Sprintf("uploads/deploys: %d failed cleanly (in ≤ %.1fs), all OK on retry; inference: %s", failed, slowest.Seconds(), lostOf(l)),
		fmt.Sprintf("back after %.0fs; %d versions, each blob present and matching its sha256", downFor.Seconds(), len(after))})
	s.mustCLI("undeploy", "ner")
}

// killTask SIGKILLs the one container of a stack service on node 1 (Swarm
// starts another after its restart delay) and returns its ID and when.
func (s *stack) killTask(t *testing.T, service string) (string, time.Time) {
	ids := s.containersOf(1, service)
	if len(ids) != 1 {
		t.Fatalf("%s containers on node 1: %v", service, ids)
	}
	at := time.Now()
	if _, err := s.dockerOn(1, "kill", ids[0]); err != nil {
		t.Fatal(err)
	}
	return ids[0], at
}

type version struct {
	Version int    `json:"version"`
	Digest  string `json:"digest"`
}

func (s *stack) versions(t *testing.T, model string) []version {
	var vs struct {
		Versions []version `json:"versions"`
	}
	s.apiJSON("GET", "/api/v1/models/"+model+"/versions", nil, &vs, 200)
	return vs.Versions
}

// checkBlob downloads a blob the way runtimes do and checks its hash.
func (s *stack) checkBlob(digest, token string) error {
	// a runtime's credential for this digest, minted as the scheduler does
	cred := artifactcred.Mint(artifactcred.Key(token), digest, time.Now().Add(time.Hour))
	req, _ := http.NewRequest("GET", s.apiOps+"/internal/blobs/"+digest, nil)
	req.Header.Set("Authorization", "Bearer "+cred)
	resp, err := (&http.Client{Timeout: time.Minute}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("blob %s: %s", digest, resp.Status)
	}
	h := sha256.New()
	if _, err := io.Copy(h, resp.Body); err != nil {
		return err
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != digest {
		return fmt.Errorf("blob %s hashes to %s", digest, got)
	}
	return nil
}

// gatewayMetric sums a counter of the gateway's /metrics whose line starts
// with name (labels included in the prefix if given).
func (s *stack) gatewayMetric(t *testing.T, prefix string) float64 {
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(s.gwOps + "/metrics")
	if err != nil {
		t.Fatalf("gateway metrics: %v", err)
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, prefix) {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			sum += v
		}
	}
	return sum
}

// usage is the requests recorded for the chaos account on a model today.
func (s *stack) usage(t *testing.T, model string) int64 {
	var u struct {
		Usage []struct {
			Requests int64 `json:"requests"`
		} `json:"usage"`
	}
	s.apiJSON("GET", "/api/v1/usage?account=chaos&model="+model, nil, &u, 200)
	var n int64
	for _, r := range u.Usage {
		n += r.Requests
	}
	return n
}

// settledUsage waits until the gateway's periodic flush (every 10 s) has
// written usage and the figure stops moving for longer than that period.
func (s *stack) settledUsage(t *testing.T, model string) int64 {
	last := s.usage(t, model)
	for i := 0; i < 10; i++ {
		time.Sleep(11 * time.Second)
		n := s.usage(t, model)
		if n == last {
			return n
		}
		last = n
	}
	return last
}

// scenarioRedisRestart: Redis is killed under load. The gateway fails open
// on rate limits (as documented), so no request fails; limits bite again
// once Redis is back; usage metering, which goes to Postgres, misses nothing.
func scenarioRedisRestart(t *testing.T, s *stack, rep *report) {
	// a tight plan, to see limits apply again after the restart
	s.apiJSON("POST", "/api/v1/plans", map[string]any{"name": "tight", "requests_per_second": 2, "burst": 2}, nil, 201)
	var acct struct {
		ID int64 `json:"id"`
	}
	s.apiJSON("POST", "/api/v1/accounts", map[string]any{"name": "tight", "plan": "tight"}, &acct, 201)
	var k struct {
		Key string `json:"key"`
	}
	s.apiJSON("POST", fmt.Sprintf("/api/v1/accounts/%d/keys", acct.ID), map[string]any{"name": "tight"}, &k, 201)
	limited := func() int {
		n := 0
		for i := 0; i < 10; i++ {
			req, _ := http.NewRequest("POST", s.gateway+sentimentTarget.path, strings.NewReader(sentimentTarget.body))
			req.Header.Set("Authorization", "Token "+k.Key)
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 429 {
					n++
				}
			}
		}
		return n
	}
	if n := limited(); n == 0 {
		t.Fatalf("the tight plan limits nothing before the restart")
	}
	usage0 := s.settledUsage(t, "sentiment")
	failOpen0 := s.gatewayMetric(t, "nlpswarm_gateway_ratelimit_failopen_total")
	l := s.startLoad(4)
	time.Sleep(5 * time.Second)
	rd, kill := s.killTask(t, "nlp_redis")
	back := waitFor(context.Background(), 3*time.Minute, 500*time.Millisecond, func() bool {
		ids := s.containersOf(1, "nlp_redis")
		if len(ids) != 1 || ids[0] == rd {
			return false
		}
		// Redis asks for a password (the ops user's, as deployments' tests use it)
		out, err := s.dockerOn(1, "exec", ids[0], "sh", "-c", `REDISCLI_AUTH=$(cat /run/secrets/redis_password) exec redis-cli --user ops ping`)
		return err == nil && strings.TrimSpace(out) == "PONG"
	})
	downFor := time.Since(kill)
	if !back {
		t.Fatalf("redis not back after %s", downFor)
	}
	time.Sleep(10 * time.Second)
	l.end()
	l.log(t, "redis restart")
	failOpen := s.gatewayMetric(t, "nlpswarm_gateway_ratelimit_failopen_total") - failOpen0
	var limitedAfter int
	waitFor(context.Background(), 30*time.Second, time.Second, func() bool { limitedAfter = limited(); return limitedAfter > 0 })
	usage := s.settledUsage(t, "sentiment") - usage0
	t.Logf("redis down for %s; %0.f requests passed fail-open; tight plan: %d of 10 limited after; usage recorded %d of %d requests",
		downFor.Round(100*time.Millisecond), failOpen, limitedAfter, usage, l.total())
	if l.failed.Load() != 0 {
		t.Errorf("%d requests failed while Redis restarted (the gateway fails open)", l.failed.Load())
	}
	if failOpen == 0 {
		t.Errorf("no request counted as fail-open while Redis was down")
	}
	if limitedAfter == 0 {
		t.Errorf("rate limits do not apply again after Redis is back")
	}
	if usage != l.total() {
		t.Errorf("usage recorded %d requests, the load sent %d", usage, l.total())
	}
	rep.add(row{"Redis restarted", l.describe() + ", sentiment ×2", "SIGKILL of the Redis container (Swarm restarts it)",
		lostOf(l), fmt.Sprintf("back after %.0fs; %.0f requests let through fail-open; limits bite again after; usage %d of %d requests recorded", downFor.Seconds(), failOpen, usage, l.total())})
}

// leader returns the container (on node 1) of the scheduler that leads,
// from its log, and the other one.
func (s *stack) schedulers(t *testing.T) (leader, standby string) {
	ids := s.containersOf(1, "nlp_scheduler")
	for _, id := range ids {
		out, _ := s.logsOn(1, id)
		if strings.Contains(out, `"msg":"leading"`) {
			leader = id
		} else {
			standby = id
		}
	}
	return leader, standby
}

// serviceVersion is the nlpswarm.version label of a model service and its
// update state.
func (s *stack) serviceVersion(model string) (string, string) {
	out, _ := s.dockerOn(1, "service", "inspect", "nlp-"+model, "--format",
		`{{index .Spec.Labels "nlpswarm.version"}} {{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}`)
	f := strings.Fields(out)
	for len(f) < 2 {
		f = append(f, "")
	}
	return f[0], f[1]
}

// pushCopy pushes the sentiment fixture from a fresh copy: a new archive,
// so a new digest, so a real rolling update when deployed.
func (s *stack) pushCopy(t *testing.T) int {
	dir := filepath.Join(t.TempDir(), "sentiment")
	must(t, os.MkdirAll(dir, 0o755))
	ents, err := os.ReadDir(filepath.Join(s.fixtures, "sentiment"))
	must(t, err)
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(s.fixtures, "sentiment", e.Name()))
		must(t, err)
		must(t, os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644))
	}
	now := time.Now().Add(time.Duration(len(t.Name())) * time.Second)
	for _, e := range ents {
		os.Chtimes(filepath.Join(dir, e.Name()), now, now)
	}
	s.mustCLI("models", "push", "sentiment", dir)
	vs := s.versions(t, "sentiment")
	return vs[0].Version
}

// scenarioSchedulerKilled: the leading scheduler is killed twice during
// rollouts of a new version under load: (a) after it started Swarm's rolling
// update, (b) frozen before it could act on the new desired state, then
// killed. Each time the standby takes the Postgres advisory lock and the
// rollout finishes; no request fails.
func scenarioSchedulerKilled(t *testing.T, s *stack, rep *report) {
	s.respread(t, "sentiment")
	l := s.startLoad(4)
	time.Sleep(3 * time.Second)
	var notes []string
	for _, phase := range []string{"during Swarm's update", "before it acted"} {
		v := s.pushCopy(t)
		leader, standby := s.schedulers(t)
		if leader == "" || standby == "" {
			t.Fatalf("want a leading and a standby scheduler on node 1, got %q %q", leader, standby)
		}
		if phase == "before it acted" {
			if _, err := s.dockerOn(1, "pause", leader); err != nil {
				t.Fatal(err)
			}
		}
		start := time.Now()
		s.mustCLI("deploy", "sentiment", "--version", strconv.Itoa(v), "--replicas", "2", "--memory", "256M")
		if phase == "during Swarm's update" {
			if !waitFor(context.Background(), time.Minute, 100*time.Millisecond, func() bool {
				ver, state := s.serviceVersion("sentiment")
				return ver == strconv.Itoa(v) && state == "updating"
			}) {
				t.Fatalf("the leader did not start the update to version %d", v)
			}
		} else {
			time.Sleep(3 * time.Second)
			if ver, _ := s.serviceVersion("sentiment"); ver == strconv.Itoa(v) {
				t.Fatalf("the frozen leader's standby updated the service without the lock")
			}
		}
		kill := time.Now()
		if _, err := s.dockerOn(1, "kill", leader); err != nil {
			t.Fatal(err)
		}
		var takeover time.Duration
		waitFor(context.Background(), time.Minute, 200*time.Millisecond, func() bool {
			out, _ := s.logsOn(1, standby)
			if strings.Contains(out, `"msg":"leading"`) {
				takeover = time.Since(kill)
				return true
			}
			return false
		})
		if takeover == 0 {
			t.Fatalf("%s: the standby never took the lead", phase)
		}
		d := s.waitDeployment("sentiment", 4*time.Minute, func(d deployment) bool {
			ver, state := s.serviceVersion("sentiment")
			return running(d) && d.Version == v && ver == strconv.Itoa(v) && state == "completed" && d.ObservedAt != nil && d.ObservedAt.After(kill)
		})
		done := time.Since(start)
		t.Logf("leader killed %s: standby leading after %s, version %d rolled out after %s, status %s %v",
			phase, takeover.Round(100*time.Millisecond), v, done.Round(100*time.Millisecond), d.Status, d.nodes())
		notes = append(notes, fmt.Sprintf("killed %s: standby led after %.1fs, v%d everywhere after %.0fs", phase, takeover.Seconds(), v, done.Seconds()))
		// the killed one is restarted by Swarm and becomes the standby
		waitFor(context.Background(), time.Minute, time.Second, func() bool { return len(s.containersOf(1, "nlp_scheduler")) == 2 })
	}
	l.end()
	l.log(t, "scheduler killed during rollouts")
	if l.failed.Load() != 0 {
		t.Errorf("%d requests failed during the rollouts", l.failed.Load())
	}
	rep.add(row{"scheduler killed mid-rollout", l.describe() + ", sentiment ×2, two rolling updates",
		"SIGKILL of the leading scheduler (a) during Swarm's update (b) paused before it acted, then killed",
		lostOf(l), strings.Join(notes, "; ")})
}

// oomBurst is how many 1 MiB ner requests the OOM scenario sends at once,
// and oomLimit the ner deployment's memory limit. Since the runtime caps
// and cuts tokens (1 Mi characters and 16,384 tokens per request, 4,096
// per batch, each text tokenized once on a prefix), a request no longer
// costs the replica memory in proportion to its characters: 4 at once were
// all answered 200 under 64 MiB (2026-12-06, bfe2279). What a request
// still costs is its body, its decoded texts and their cleaned copies,
// held while it is tokenized. Measured on this machine (the ner fixture's
// runtime, go engine, the same 64 texts × 15,000 characters, RSS from
// /proc): at rest 57 MiB resident, of which 29 MiB anonymous and 28 MiB the
// binary's file pages; the anonymous peak was 46 MiB with 4 requests at
// once, 63 with 8, 92 with 16, 162 with 32, about 4 MiB per request. So 16
// at once need about 1.4× the 64 MiB limit in anonymous memory alone
// (which the kernel cannot reclaim), while at rest the replica fits with
// room to restart and serve the small requests. 16 is well within the
// gateway's per-key in-flight cap (128) and its in-flight body bytes (a
// quarter of its Go memory limit: about 51 MiB under its 256 MiB). In the
// lab (2026-12-06) the replica sat at 27 MiB by docker stats (54 MiB
// resident, 26 MiB anonymous) and 16 at once killed it within the first
// round, its anonymous memory last read at 57 MiB 0.1 s before.
const (
	oomBurst = 16
	oomLimit = "64M"
)

// scenarioOOM: a burst of concurrent 1 MiB requests drives a replica of ner
// past its 64 MiB limit; the kernel kills it (OOMKilled), Swarm restarts
// it, the gateway ejects it meanwhile and answers its small requests 502 or
// 503 at once, and nothing else on its node is harmed: the sentiment
// replica and the agent there keep their containers and serve.
func scenarioOOM(t *testing.T, s *stack, rep *report) {
	s.respread(t, "sentiment")
	s.mustCLI("deploy", "ner", "--replicas", "1", "--memory", oomLimit, "--wait", "--timeout", "5m")
	nodes := s.serviceTasks("nlp-ner")
	if len(nodes) != 1 {
		t.Fatalf("ner tasks: %v", nodes)
	}
	idx := 0
	for _, n := range s.lab.Nodes {
		if n.Name == nodes[0] {
			idx = n.Index
		}
	}
	neighbours := map[string][]string{}
	for _, svc := range []string{"nlp-sentiment", "nlp_agent"} {
		neighbours[svc] = s.containersOf(idx, svc)
		if len(neighbours[svc]) != 1 {
			t.Fatalf("%s containers on %s: %v", svc, nodes[0], neighbours[svc])
		}
	}
	nerBefore := s.containersOf(idx, "nlp-ner")
	if len(nerBefore) != 1 {
		t.Fatalf("ner containers on %s: %v", nodes[0], nerBefore)
	}
	// the replica's memory at rest: docker stats (the cgroup's usage less
	// its inactive file pages) and the process's resident and anonymous
	// sets, from the host's /proc (the lab's dockerds share its PID
	// namespace)
	nerPID := 0
	if out, err := s.dockerOn(idx, "inspect", "-f", "{{.State.Pid}}", nerBefore[0]); err == nil {
		nerPID, _ = strconv.Atoi(strings.TrimSpace(out))
	}
	statsRest, _ := s.dockerOn(idx, "stats", "--no-stream", "--format", "{{.MemUsage}}", nerBefore[0])
	statsRest = strings.TrimSpace(statsRest)
	rest := procMemory(nerPID)
	t.Logf("ner replica at rest: docker stats %s; RSS %s, anonymous %s", statsRest, mib(rest.rss), mib(rest.anon))
	ejections0 := s.gatewayMetric(t, `nlpswarm_gateway_ejections_total{model="ner"}`)
	l := s.startLoad(4)
	nerTarget := target{"/v1/ner/entities", `{"text":"alice went to paris"}`}
	nl := s.startPaced(1, 50*time.Millisecond, nerTarget)
	time.Sleep(3 * time.Second)
	// the burst: 64 texts of 15,000 characters, within the gateway's limits
	words := []string{"alice", "went", "to", "paris", "with", "bob", "and", "google"}
	var sb strings.Builder
	for sb.Len() < 15000 {
		sb.WriteString(words[sb.Len()%len(words)] + " ")
	}
	texts := make([]string, 64)
	for i := range texts {
		texts[i] = sb.String()
	}
	bomb, _ := json.Marshal(map[string]any{"texts": texts})
	burst := time.Now()
	// the replica's memory while the burst lasts: the last figures read
	// before the kill (VmHWM is the process's own high-water mark)
	var peak procMem
	sampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if m := procMemory(nerPID); m.rss > 0 {
				peak.rss, peak.anon = max(peak.rss, m.hwm), max(peak.anon, m.anon)
			}
			select {
			case <-sampling:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	var oomAt time.Duration
	var bombs, bombCodes = 0, map[int]int{}
	var bmu sync.Mutex
	for time.Since(burst) < 90*time.Second && oomAt == 0 {
		var wg sync.WaitGroup
		for i := 0; i < oomBurst; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				code, _ := s.infer(&http.Client{Timeout: 40 * time.Second}, target{"/v1/ner/entities", string(bomb)})
				bmu.Lock()
				bombs++
				bombCodes[code]++
				bmu.Unlock()
			}()
		}
		wg.Wait()
		// a failed burst request is most likely the kill, which the
		// engine may record a moment after the gateway saw it: wait for it
		// rather than send another round to a replica already gone
		wait := time.Duration(0)
		bmu.Lock()
		if bombCodes[200] < bombs {
			wait = 5 * time.Second
		}
		bmu.Unlock()
		waitFor(context.Background(), wait, 250*time.Millisecond, func() bool {
			out, _ := s.dockerOn(idx, "inspect", "-f", "{{.State.OOMKilled}} {{.State.ExitCode}}", nerBefore[0])
			if strings.HasPrefix(out, "true") {
				oomAt = time.Since(burst)
			}
			return oomAt != 0
		})
	}
	close(sampling)
	<-sampled
	t.Logf("ner replica during the burst, last read before the kill: RSS high-water mark %s, anonymous %s (limit %s)", mib(peak.rss), mib(peak.anon), oomLimit)
	if oomAt == 0 {
		l.end()
		nl.end()
		t.Fatalf("no OOM kill of the ner replica after %d burst requests (%v); its RSS reached %s, anonymous %s", bombs, bombCodes, mib(peak.rss), mib(peak.anon))
	}
	// Swarm restarts it; ner serves again
	var backAfter time.Duration
	waitFor(context.Background(), 3*time.Minute, time.Second, func() bool {
		d := s.deployment("ner")
		ids := s.containersOf(idx, "nlp-ner")
		if d.Observed.Running == 1 && len(ids) == 1 && ids[0] != nerBefore[0] {
			backAfter = time.Since(burst)
			return true
		}
		// it may come back on the other worker
		if d.Observed.Running == 1 && len(s.serviceTasks("nlp-ner")) == 1 && len(ids) == 0 {
			backAfter = time.Since(burst)
			return true
		}
		return false
	})
	// and answers through the gateway once more (its prober readmits it)
	var answersAfter time.Duration
	if backAfter > 0 && waitFor(context.Background(), time.Minute, 200*time.Millisecond, func() bool {
		code, _ := s.infer(&http.Client{Timeout: 10 * time.Second}, nerTarget)
		return code == 200
	}) {
		answersAfter = time.Since(burst)
	}
	time.Sleep(5 * time.Second)
	l.end()
	nl.end()
	l.log(t, "sentiment while a ner replica is OOM-killed")
	nl.log(t, "ner (small requests) while its replica is OOM-killed")
	ejections := s.gatewayMetric(t, `nlpswarm_gateway_ejections_total{model="ner"}`) - ejections0
	harmed := []string{}
	for svc, ids := range neighbours {
		now := s.containersOf(idx, svc)
		if len(now) != 1 || now[0] != ids[0] {
			harmed = append(harmed, fmt.Sprintf("%s: %v → %v", svc, ids, now))
		}
	}
	state, _ := s.dockerOn(1, "node", "inspect", "-f", "{{.Status.State}}", nodes[0])
	t.Logf("ner replica OOM-killed after %s of burst (%d burst requests: %v), running again after %s, answering through the gateway after %s; gateway ejections of ner: %.0f; ner's failed small requests %v, the slowest answered in %s; node %s %s; neighbours harmed: %v",
		oomAt.Round(100*time.Millisecond), bombs, bombCodes, backAfter.Round(100*time.Millisecond), answersAfter.Round(100*time.Millisecond),
		ejections, nl.failCodes, nl.slowestFail.Round(10*time.Millisecond), nodes[0], strings.TrimSpace(state), harmed)
	if l.failed.Load() != 0 {
		t.Errorf("%d sentiment requests failed while ner was OOM-killed on the same node", l.failed.Load())
	}
	if len(harmed) > 0 {
		t.Errorf("containers beside the OOM-killed replica were restarted: %v", harmed)
	}
	if strings.TrimSpace(state) != "ready" {
		t.Errorf("node %s is %q after the OOM kill", nodes[0], state)
	}
	if backAfter == 0 {
		t.Errorf("ner not running again 3 minutes after the OOM kill")
	} else if answersAfter == 0 {
		t.Errorf("ner running again after %s but not answering through the gateway a minute later", backAfter.Round(time.Second))
	}
	if ejections < 1 {
		t.Errorf("the gateway never ejected the OOM-killed ner replica")
	}
	// the small ner requests the kill cost must fail fast and say why: 502
	// (the replica's connection gone) or 503 (ejected, none left), never
	// the gateway's 30 s deadline or no answer
	for code := range nl.failCodes {
		if code != http.StatusBadGateway && code != http.StatusServiceUnavailable {
			t.Errorf("ner's small requests failed with %d (%v); only 502 and 503 are expected", code, nl.failCodes)
			break
		}
	}
	if nl.slowestFail > 10*time.Second {
		t.Errorf("a failed ner request took %s to be answered; the gateway should answer 502/503 at once", nl.slowestFail.Round(100*time.Millisecond))
	}
	rep.add(row{"replica out of memory", l.describe() + fmt.Sprintf(" on sentiment, 1 client at 20 req/s on ner, then %d concurrent 1 MiB ner requests", oomBurst),
		fmt.Sprintf("ner limited to %s (at rest: docker stats %s, RSS %s, anonymous %s); 64 texts × 15,000 chars per request → anonymous %s, kernel OOM kill", oomLimit, statsRest, mib(rest.rss), mib(rest.anon), mib(peak.anon)),
		fmt.Sprintf("sentiment (same node): %s; ner (one replica): %s, answered %s within %.1fs (slowest %.1fs) while it restarted", lostOf(l), lostOf(nl), codesOf(nl.failCodes), nl.failWindow().Seconds(), nl.slowestFail.Seconds()),
		fmt.Sprintf("OOMKilled after %.0fs, running again after %.0fs, answering after %.0fs, %.0f ejection(s); sentiment replica and agent on %s untouched, node ready", oomAt.Seconds(), backAfter.Seconds(), answersAfter.Seconds(), ejections, nodes[0])})
	s.mustCLI("undeploy", "ner")
}

// procMem is a process's memory from /proc/PID/status, in bytes.
type procMem struct{ rss, hwm, anon int64 }

// procMemory reads pid's resident set, its high-water mark and its
// anonymous part (zero when the process is gone).
func procMemory(pid int) procMem {
	var m procMem
	if pid <= 0 {
		return m
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return m
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			m.rss = kb << 10
		case "VmHWM":
			m.hwm = kb << 10
		case "RssAnon":
			m.anon = kb << 10
		}
	}
	return m
}

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

// codesOf writes failed answers by status: "502 ×3, 503 ×80".
func codesOf(codes map[int]int) string {
	keys := make([]int, 0, len(codes))
	for c := range codes {
		keys = append(keys, c)
	}
	sort.Ints(keys)
	parts := make([]string, 0, len(keys))
	for _, c := range keys {
		parts = append(parts, fmt.Sprintf("%d ×%d", c, codes[c]))
	}
	if len(parts) == 0 {
		return "nothing failed"
	}
	return strings.Join(parts, ", ")
}
