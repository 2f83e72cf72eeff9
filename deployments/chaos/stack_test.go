package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/dockertest"
	"github.com/nlpswarm/nlpswarm/internal/pg/pgtest"
	"github.com/nlpswarm/nlpswarm/internal/swarmlab"
)

// depsImages are the local third-party images deployments/images/build.sh
// makes; they run on the database/manager node only.
var depsImages = []string{"nlpswarm-postgres:local", "nlpswarm-redis:local", "nlpswarm-prometheus:local"}

// agentImage is the node agent's image (deployments/images/agent/build.sh),
// loaded on every node: the lab's agents read their fake GPUs with it.
const agentImage = "nlpswarm-agent:dev"

// fakeGPUNode is the lab node whose agent reports fake GPUs in TestChaos.
const fakeGPUNode = 3

// stack is the platform running on a lab.
type stack struct {
	t        *testing.T
	lab      *swarmlab.Lab
	root     string // the repository
	fixtures string // shared/fixtures/nlp
	state    string // up.sh's STATE: the secrets' values
	token    string // admin token
	gateway  string // http://10.231.0.11:8080
	// standbys: more gateways a request refused at connect by the first is
	// sent to, in order (stack.inferVia); none unless a scenario starts them
	standbys []string
	gwOps    string // the gateway's metrics, http://10.231.0.11:9100 (deployments/lab.yml)
	api      string // http://10.231.0.11:8081
	apiOps   string // the apiserver's /internal/blobs, http://10.231.0.11:9101 (deployments/lab.yml)
	key      string // an inference key with a generous plan
	keyID    int64
	account  int64
	upEnv    []string // up.sh's environment (a rerun of it upgrades the stack)
}

// with is s reporting to t (a subtest): its helpers fail t, not the parent.
func (s *stack) with(t *testing.T) *stack {
	c := *s
	c.t = t
	return &c
}

// optIn skips unless env is set to 1.
func optIn(t *testing.T, env, what string) {
	t.Helper()
	if os.Getenv(env) != "1" {
		t.Skipf("%s is opt-in: set %s=1 (make %s)", what, env, strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(env, "NLPSWARM_")), "_", "-"))
	}
}

// startStack starts a three-node lab (node 1: manager and databases; nodes
// 2 and 3: machine-learning workers, each of gpuNodes with two fake GPUs),
// loads the images, runs up.sh with the lab overlay and creates an account
// with a key whose plan does not limit the load.
func startStack(t *testing.T, gpuNodes ...int) *stack {
	t.Helper()
	return startLab(t, labLayout{nodes: 3, gpuNodes: gpuNodes})
}

// labLayout shapes the lab startLab runs the stack on. Node 1 is always a
// manager and the database node (Postgres, Redis, the apiserver, and the
// gateway the tests call).
type labLayout struct {
	nodes, managers int      // managers: nodes 1…managers (default 1)
	mlNodes         []int    // the machine-learning workers; default 2…nodes
	gpuNodes        []int    // of those, the nodes with two fake GPUs
	overlays        []string // compose files after deployments/lab.yml
}

// startLab is startStack on a lab of lay's shape.
func startLab(t *testing.T, lay labLayout) *stack {
	t.Helper()
	gpuNodes := lay.gpuNodes
	if len(lay.mlNodes) == 0 {
		for i := 2; i <= lay.nodes; i++ {
			lay.mlNodes = append(lay.mlNodes, i)
		}
	}
	root := dockertest.RepoRoot(t)
	fixtures := filepath.Join(root, "..", "shared", "fixtures", "nlp")
	if _, err := os.Stat(fixtures); err != nil {
		t.Skipf("fixtures absent: %v", err)
	}
	if err := swarmlab.Available(); err != nil {
		pgtest.Unavailable(t, "swarm lab", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	image := dockertest.Image(t)
	begin := time.Now()
	if out, err := exec.CommandContext(ctx, filepath.Join(root, "deployments", "images", "build.sh")).CombinedOutput(); err != nil {
		t.Fatalf("third-party images: %v\n%s", err, out)
	}
	agentBuild := exec.CommandContext(ctx, filepath.Join(root, "deployments", "images", "agent", "build.sh"))
	agentBuild.Env = append(os.Environ(), "AGENT_IMAGE="+agentImage)
	if out, err := agentBuild.CombinedOutput(); err != nil {
		t.Fatalf("agent image: %v\n%s", err, out)
	}
	lab := swarmlab.Start(t, swarmlab.Options{Nodes: lay.nodes, Managers: lay.managers})
	s := &stack{t: t, lab: lab, root: root, fixtures: fixtures, state: filepath.Join(t.TempDir(), "state")}
	m := lab.Manager()
	s.gateway, s.api, s.gwOps = "http://"+m.Addr+":8080", "http://"+m.Addr+":8081", "http://"+m.Addr+":9100"
	s.apiOps = "http://" + m.Addr + ":9101"
	must(t, m.Label(ctx, "type=database", "database=true", "gateway=true")) // deployments/lab.yml
	for _, i := range lay.mlNodes {
		must(t, lab.Node(i).Label(ctx, "type=machine-learning"))
	}
	must(t, os.MkdirAll(filepath.Join(lab.SharedDir(), "fakegpus"), 0o755))
	for _, i := range gpuNodes {
		n := lab.Node(i)
		must(t, n.Label(ctx, "gpu=fake"))
		must(t, os.WriteFile(filepath.Join(lab.SharedDir(), "fakegpus", n.Name+".json"), []byte(fakeGPUs(n.Name)), 0o644))
	}
	must(t, lab.LoadImages(ctx, lab.Nodes, dockertest.TestImage, agentImage))
	must(t, lab.LoadImages(ctx, lab.Nodes[:1], depsImages...))

	cmd := exec.CommandContext(ctx, filepath.Join(root, "deployments", "up.sh"))
	cmd.Dir = root
	cmd.Env = append(m.Env(), "STATE="+s.state, "WAIT=600",
		"NLPSWARM_IMAGE="+dockertest.TestImage, "NLPSWARM_IMAGE_ID="+image, "NLPSWARM_AGENT_IMAGE="+agentImage,
		"POSTGRES_IMAGE="+depsImages[0], "REDIS_IMAGE="+depsImages[1], "PROMETHEUS_IMAGE="+depsImages[2],
		"STACK_OVERLAYS="+strings.Join(append([]string{"deployments/lab.yml"}, lay.overlays...), " "), "LAB_SHARED="+lab.SharedDir(), "PUBLIC_HOST="+m.Addr)
	s.upEnv = cmd.Env
	upStart := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		ps, _ := m.Docker(ctx, "stack", "ps", "nlp", "--no-trunc", "--format", "{{.Name}} {{.Node}} {{.CurrentState}} {{.Error}}")
		t.Fatalf("up.sh on the lab: %v\n%s\n%s", err, out, ps)
	}
	t.Logf("up.sh on the lab: %s\n%s", time.Since(upStart).Round(time.Second), lastLines(string(out), 6))
	tok, err := os.ReadFile(filepath.Join(s.state, "admin_token"))
	must(t, err)
	s.token = strings.TrimSpace(string(tok))
	t.Cleanup(func() {
		if t.Failed() {
			s.dumpLogs()
		}
	})
	s.waitHTTP(s.gateway+"/readyz", 2*time.Minute)
	s.waitHTTP(s.api+"/readyz", 2*time.Minute)

	s.apiJSON("POST", "/api/v1/plans", map[string]any{"name": "chaos", "requests_per_second": 100000, "burst": 100000}, nil, 201)
	var acct struct {
		ID int64 `json:"id"`
	}
	s.apiJSON("POST", "/api/v1/accounts", map[string]any{"name": "chaos", "plan": "chaos"}, &acct, 201)
	s.account = acct.ID
	var k struct {
		ID  int64  `json:"id"`
		Key string `json:"key"`
	}
	s.apiJSON("POST", fmt.Sprintf("/api/v1/accounts/%d/keys", acct.ID), map[string]any{"name": "chaos"}, &k, 201)
	s.key, s.keyID = k.Key, k.ID
	t.Logf("stack up on the lab %s after start", time.Since(begin).Round(time.Second))
	return s
}

// fakeGPUs is what a fake-GPU node's agent reports: two 16 GiB devices,
// GPU-fake-<node>-0 and -1. Nothing uses them (the runtime is CPU-only); the
// scheduler places and pins by them.
func fakeGPUs(node string) string {
	return fmt.Sprintf(`{"driver":"fake (swarmlab)","cuda":0,"gpus":[
 {"index":0,"uuid":"GPU-fake-%[1]s-0","name":"FAKE GPU (swarmlab)","mem_total":17179869184,"mem_used":0,"mem_free":17179869184,"util_gpu":0,"util_mem":0,"mig_mode":0},
 {"index":1,"uuid":"GPU-fake-%[1]s-1","name":"FAKE GPU (swarmlab)","mem_total":17179869184,"mem_used":0,"mem_free":17179869184,"util_gpu":0,"util_mem":0,"mig_mode":0}]}`, node)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (s *stack) docker(args ...string) string {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := s.lab.Manager().Docker(ctx, args...)
	if err != nil {
		s.t.Fatal(err)
	}
	return out
}

// dockerOn runs the docker CLI on node i.
func (s *stack) dockerOn(i int, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return s.lab.Node(i).Docker(ctx, args...)
}

// logsOn is docker logs of a container on node i, stdout and stderr.
func (s *stack) logsOn(i int, id string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return s.lab.Node(i).DockerCombined(ctx, "logs", id)
}

// cli runs bin/nlpswarm against the lab's apiserver.
func (s *stack) cli(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(s.root, "bin", "nlpswarm"), args...)
	cmd.Env = append(os.Environ(), "NLPSWARM_SERVER="+s.api, "NLPSWARM_TOKEN="+s.token)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (s *stack) mustCLI(args ...string) string {
	s.t.Helper()
	out, err := s.cli(6*time.Minute, args...)
	if err != nil {
		s.t.Fatalf("nlpswarm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// apiJSON calls the backoffice API and decodes the answer into out, failing
// the test unless the status is want.
func (s *stack) apiJSON(method, path string, body, out any, want int) {
	s.t.Helper()
	code, raw, err := s.apiCall(method, path, body)
	if err != nil || code != want {
		s.t.Fatalf("%s %s: %d %v %s", method, path, code, err, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			s.t.Fatalf("%s %s: %v: %s", method, path, err, raw)
		}
	}
}

func (s *stack) apiCall(method, path string, body any) (int, []byte, error) {
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, s.api+path, r)
	req.Header.Set("Authorization", "Bearer "+s.token)
	req.Header.Set("Content-Type", "application/json")
	cl := &http.Client{Timeout: 30 * time.Second}
	resp, err := cl.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return resp.StatusCode, raw, err
}

func (s *stack) waitHTTP(url string, timeout time.Duration) {
	s.t.Helper()
	cl := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(timeout)
	var last any
	for time.Now().Before(deadline) {
		resp, err := cl.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
			last = resp.Status
		} else {
			last = err
		}
		time.Sleep(500 * time.Millisecond)
	}
	s.t.Fatalf("%s not ready after %s: %v", url, timeout, last)
}

// deployment is the part of GET /models/NAME/deployment the tests read.
type deployment struct {
	Version            int    `json:"version"`
	Replicas           int    `json:"replicas"`
	Generation         int64  `json:"generation"`
	ObservedGeneration int64  `json:"observed_generation"`
	Status             string `json:"status"`
	StatusMessage      string `json:"status_message"`
	Observed           struct {
		Running int       `json:"running"`
		Tasks   []replica `json:"tasks"`
	} `json:"observed"`
	ObservedAt *time.Time `json:"observed_at"`
}

// replica is one task of a deployment as the scheduler observed it.
type replica struct {
	Slot  int      `json:"slot"`
	Node  string   `json:"node"`
	GPUs  []string `json:"gpus"`
	State string   `json:"state"`
	Error string   `json:"error"`
}

func (d deployment) nodes() []string {
	var out []string
	for _, t := range d.Observed.Tasks {
		out = append(out, t.Node+":"+t.State)
	}
	return out
}

func (s *stack) deployment(model string) deployment {
	s.t.Helper()
	var d deployment
	s.apiJSON("GET", "/api/v1/models/"+model+"/deployment", nil, &d, 200)
	return d
}

// waitDeployment polls the deployment until ok says so.
func (s *stack) waitDeployment(model string, timeout time.Duration, ok func(deployment) bool) deployment {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	var d deployment
	for {
		d = s.deployment(model)
		if ok(d) {
			return d
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("deployment of %s after %s: %s %q %v", model, timeout, d.Status, d.StatusMessage, d.nodes())
		}
		time.Sleep(time.Second)
	}
}

// running is true once every desired replica runs and the scheduler has seen
// the latest generation.
func running(d deployment) bool {
	return d.Status == "running" && d.ObservedGeneration >= d.Generation && d.Observed.Running == d.Replicas
}

// serviceTasks lists the running tasks of a service as node names.
func (s *stack) serviceTasks(service string) []string {
	s.t.Helper()
	out := s.docker("service", "ps", service, "--filter", "desired-state=running", "--format", "{{.Node}} {{.CurrentState}}")
	var nodes []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[1] == "Running" {
			nodes = append(nodes, f[0])
		}
	}
	return nodes
}

// containersOf lists the IDs of a service's containers on node i.
func (s *stack) containersOf(i int, service string) []string {
	out, _ := s.dockerOn(i, "ps", "-q", "--no-trunc", "--filter", "label=com.docker.swarm.service.name="+service)
	return strings.Fields(out)
}

func (s *stack) dumpLogs() {
	for _, svc := range []string{"nlp_scheduler", "nlp_gateway", "nlp_apiserver", "nlp-sentiment", "nlp-ner"} {
		out, _ := s.lab.Manager().DockerCombined(context.Background(), "service", "logs", "--tail", "25", svc)
		s.t.Logf("%s logs:\n%s", svc, out)
	}
	out, _ := s.lab.Manager().Docker(context.Background(), "service", "ls")
	s.t.Logf("services:\n%s", out)
}
