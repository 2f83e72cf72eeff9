package swarmlab

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/dockertest"
	"github.com/nlpswarm/nlpswarm/internal/pg/pgtest"
)

// TestLab starts a three-node swarm, runs the platform image as a dnsrr
// service spread over the nodes, reaches every replica through its node's
// host-mode port and, from a container on the manager, across the overlay
// (VXLAN between namespaces); then cuts a worker's power, watches Swarm mark
// it down and move its task, boots it back, and checks that closing the lab
// leaves nothing behind.
func TestLab(t *testing.T) {
	if testing.Short() {
		t.Skip("swarm lab in -short mode")
	}
	image := dockertest.Image(t) // before Start: skips without a host engine
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	start := time.Now()
	lab := Start(t, Options{Nodes: 3})
	t.Logf("lab of 3 nodes up in %s", time.Since(start).Round(100*time.Millisecond))
	m := lab.Manager()
	for _, n := range lab.Nodes {
		host, err := n.Docker(ctx, "info", "--format", "{{.Name}} {{.Driver}} {{.Swarm.LocalNodeState}} {{.Swarm.NodeAddr}}")
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("%s %s active %s", n.Name, lab.StorageDriver(), n.Addr); strings.TrimSpace(host) != want {
			t.Fatalf("docker info on %s: %q, want %q", n.Name, strings.TrimSpace(host), want)
		}
	}
	if err := lab.LoadImages(ctx, lab.Nodes, dockertest.TestImage); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Docker(ctx, "network", "create", "-d", "overlay", "--attachable", "labnet"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Docker(ctx, "service", "create", "-d", "--name", "probe", "--network", "labnet",
		"--endpoint-mode", "dnsrr", "--replicas", "3", "--placement-pref", "spread=node.id",
		"--restart-delay", "1s", "--publish", "mode=host,target=8080,published=18080",
		image, "netcheck", "--listen=:8080"); err != nil {
		t.Fatal(err)
	}
	// every node answers on its own address with its own replica
	for _, n := range lab.Nodes {
		body := waitGet(t, ctx, "http://"+n.Addr+":18080/", 90*time.Second)
		if !strings.HasPrefix(body, "netcheck ") {
			t.Fatalf("%s answered %q", n.Name, body)
		}
	}
	t.Logf("host-mode ports answer on all 3 node addresses")
	// the manager learns the other nodes' task endpoints through the
	// overlay's gossip, which lags its own tasks under load (CI once read
	// one of three right after every port answered)
	ips := taskIPs(t, ctx, m)
	for deadline := time.Now().Add(60 * time.Second); len(ips) != 3 && time.Now().Before(deadline); {
		time.Sleep(time.Second)
		ips = taskIPs(t, ctx, m)
	}
	if len(ips) != 3 {
		t.Fatalf("task addresses %v after 60 s, want 3", ips)
	}
	for _, ip := range ips {
		if out, err := m.Docker(ctx, "run", "--rm", "--network", "labnet", image, "healthcheck", "http://"+ip+":8080/healthz"); err != nil {
			t.Fatalf("from the manager across the overlay to %s: %v %s", ip, err, out)
		}
	}
	t.Logf("a container on %s reaches all task addresses %v across the overlay", m.Name, ips)

	// power cut on node 3: Swarm marks it down and moves its task (a
	// service without published ports: host-mode ports pin one task per node)
	if _, err := m.Docker(ctx, "service", "create", "-d", "--name", "mover", "--network", "labnet",
		"--endpoint-mode", "dnsrr", "--replicas", "2", "--placement-pref", "spread=node.id",
		"--constraint", "node.role==worker", image, "netcheck", "--listen=:8080"); err != nil {
		t.Fatal(err)
	}
	w := lab.Node(3)
	for {
		out, _ := m.Docker(ctx, "service", "ps", "mover", "--filter", "desired-state=running", "--format", "{{.Node}} {{.CurrentState}}")
		if strings.Count(out, "Running") == 2 && strings.Contains(out, w.Name) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("mover not running on both workers: %s", out)
		}
		time.Sleep(500 * time.Millisecond)
	}
	cut := time.Now()
	w.Kill()
	var downAfter time.Duration
	for {
		out, _ := m.Docker(ctx, "node", "inspect", "-f", "{{.Status.State}}", w.ID)
		if strings.TrimSpace(out) == "down" {
			downAfter = time.Since(cut)
			break
		}
		if time.Since(cut) > 2*time.Minute {
			t.Fatalf("node %s still %q 2 minutes after the power cut", w.Name, strings.TrimSpace(out))
		}
		time.Sleep(500 * time.Millisecond)
	}
	for {
		out, _ := m.Docker(ctx, "service", "ps", "mover", "--filter", "desired-state=running", "--format", "{{.Node}} {{.CurrentState}}")
		if strings.Count(out, "Running") == 2 && !strings.Contains(out, w.Name) {
			t.Logf("power cut on %s: node down after %s, its task running elsewhere after %s:\n%s",
				w.Name, downAfter.Round(100*time.Millisecond), time.Since(cut).Round(100*time.Millisecond), out)
			break
		}
		if time.Since(cut) > 3*time.Minute {
			t.Fatalf("task not moved 3 minutes after the power cut:\n%s", out)
		}
		time.Sleep(time.Second)
	}
	boot := time.Now()
	if err := w.Boot(ctx); err != nil {
		t.Fatal(err)
	}
	if err := lab.WaitNodes(ctx, 3, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s booted and ready again after %s", w.Name, time.Since(boot).Round(100*time.Millisecond))

	// a graceful stop (systemctl stop docker) and back
	stop := time.Now()
	w.Stop(30 * time.Second)
	if w.Running() {
		t.Fatal("dockerd still running after Stop")
	}
	if err := w.Boot(ctx); err != nil {
		t.Fatal(err)
	}
	if err := lab.WaitNodes(ctx, 3, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s stopped and ready again after %s", w.Name, time.Since(stop).Round(100*time.Millisecond))

	if err := lab.Close(); err != nil {
		t.Fatal(err)
	}
	assertNothingLeft(t)
}

// TestLabManagers starts a swarm of three managers (Options.Managers) and
// shows Raft's quorum: with one manager's power cut the swarm stays
// writable; with two it refuses writes (no leader) within a bounded time;
// once both boot again it is writable again.
func TestLabManagers(t *testing.T) {
	if testing.Short() {
		t.Skip("swarm lab in -short mode")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	lab := Start(t, Options{Nodes: 3, Managers: 3})
	m := lab.Manager()
	if got := len(lab.Managers()); got != 3 {
		t.Fatalf("%d managers, want 3", got)
	}
	out, err := m.Docker(ctx, "node", "ls", "--format", "{{.Hostname}} {{.ManagerStatus}}")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(out, "Leader") != 1 || strings.Count(out, "Reachable") != 2 {
		t.Fatalf("want one leader and two reachable managers:\n%s", out)
	}
	write := func(name string) (time.Duration, error) {
		wctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		defer cancel()
		start := time.Now()
		_, err := m.Docker(wctx, "network", "create", "-d", "overlay", name)
		return time.Since(start), err
	}
	lab.Node(3).Kill()
	// the two left elect a leader if node 3 led; a write then goes through
	var took time.Duration
	if !waitUntil(ctx, time.Minute, func() bool { took, err = write("one-lost"); return err == nil }) {
		t.Fatalf("no write with one manager of three lost: %v", err)
	}
	t.Logf("one manager of three lost: a write took %s", took.Round(10*time.Millisecond))
	lab.Node(2).Kill()
	took, err = write("two-lost")
	if err == nil {
		t.Fatalf("a write succeeded with two managers of three lost (took %s)", took)
	}
	t.Logf("two managers of three lost: the write failed after %s: %v", took.Round(10*time.Millisecond), err)
	for _, i := range []int{2, 3} {
		if err := lab.Node(i).Boot(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := lab.WaitNodes(ctx, 3, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	if !waitUntil(ctx, time.Minute, func() bool { took, err = write("back"); return err == nil }) {
		t.Fatalf("no write once the managers are back: %v", err)
	}
	t.Logf("managers back: a write took %s", took.Round(10*time.Millisecond))
}

// waitUntil polls cond every second until it holds, timeout passes or ctx
// ends.
func waitUntil(ctx context.Context, timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(time.Second)
	}
	return true
}

// TestLeftoversOfACrashedRun starts a lab in a child process, kills that
// process (no cleanup runs), and checks that the next lab clears what it
// left: dockerds, namespaces, the host veth, cgroups, folders.
func TestLeftoversOfACrashedRun(t *testing.T) {
	if os.Getenv("SWARMLAB_CRASH_CHILD") == "1" {
		l, err := New(context.Background(), Options{Nodes: 2})
		if err != nil {
			fmt.Println("child:", err)
			os.Exit(2)
		}
		fmt.Println("child: lab up", l.Nodes[0].Host)
		time.Sleep(10 * time.Minute) // killed long before
		return
	}
	if testing.Short() {
		t.Skip("swarm lab in -short mode")
	}
	if err := Available(); err != nil {
		pgtest.Unavailable(t, "swarm lab", err)
	}
	// hold the lab lock in between, so no other lab starts (and clears)
	cmd := exec.Command(os.Args[0], "-test.run=^TestLeftoversOfACrashedRun$", "-test.v")
	cmd.Env = append(os.Environ(), "SWARMLAB_CRASH_CHILD=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	got := ""
	deadline := time.Now().Add(3 * time.Minute)
	for !strings.Contains(got, "child: lab up") && !strings.Contains(got, "child: ") {
		n, err := out.Read(buf)
		got += string(buf[:n])
		if err != nil || time.Now().After(deadline) {
			break
		}
	}
	if !strings.Contains(got, "child: lab up") {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("child did not start a lab: %s", got)
	}
	_ = cmd.Process.Kill() // SIGKILL: no cleanup of any kind
	_ = cmd.Wait()
	if _, err := os.Stat(netnsPath(Prefix + "-n1")); err != nil {
		t.Fatalf("the crashed run left no namespace behind? %v", err)
	}
	if dockerdPID(Prefix+"-n1") == 0 {
		t.Fatal("the crashed run left no dockerd behind?")
	}
	lab := Start(t, Options{Nodes: 1})
	if got := len(nodePIDs(Prefix + "-n2")); got != 0 {
		t.Fatalf("%d processes of the crashed run's node 2 still alive", got)
	}
	if _, err := os.Stat(netnsPath(Prefix + "-n2")); err == nil {
		t.Fatal("the crashed run's node 2 namespace is still there")
	}
	if err := lab.Close(); err != nil {
		t.Fatal(err)
	}
	assertNothingLeft(t)
}

func assertNothingLeft(t *testing.T) {
	t.Helper()
	if b, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(b), Prefix+"-") {
		t.Fatalf("namespaces left: %s", b)
	}
	if exec.Command("ip", "link", "show", rootVeth).Run() == nil {
		t.Fatalf("%s left", rootVeth)
	}
	for _, dir := range []string{runRoot, dataRoot} {
		if _, err := os.Stat(dir); err == nil {
			t.Fatalf("%s left", dir)
		}
	}
	if ms, _ := filepath.Glob("/sys/fs/cgroup/*/" + Prefix + "-*"); len(ms) > 0 {
		t.Fatalf("cgroups left: %v", ms)
	}
}

func taskIPs(t *testing.T, ctx context.Context, m *Node) []string {
	t.Helper()
	out, err := m.Docker(ctx, "network", "inspect", "--verbose", "labnet", "--format",
		`{{range $k, $v := .Services}}{{range $v.Tasks}}{{.EndpointIP}} {{end}}{{end}}`)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(out)
}

func waitGet(t *testing.T, ctx context.Context, url string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	cl := &http.Client{Timeout: 2 * time.Second}
	var last error
	for time.Now().Before(deadline) && ctx.Err() == nil {
		resp, err := cl.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return string(b)
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		last = err
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("%s never answered: %v", url, last)
	return ""
}
