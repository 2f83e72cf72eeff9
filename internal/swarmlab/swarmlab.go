package swarmlab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/nlpswarm/nlpswarm/internal/pg/pgtest"
)

// Fixed names and addresses: a new run clears what an earlier one left.
const (
	Prefix   = "nlpsl"
	HostAddr = "10.231.0.1"    // the host's end of the lab subnet (nlpsl-root)
	Subnet   = "10.231.0.0/24" // nodes are 10.231.0.11, .12, …
	AddrPool = "10.232.0.0/16" // the swarm's overlay networks
)

var (
	runRoot  = "/run/" + Prefix
	dataRoot = "/var/lib/" + Prefix
	lockPath = "/run/" + Prefix + ".lock"
	hubNS    = Prefix + "-hub"
	bridge   = Prefix + "-br"
	rootVeth = Prefix + "-root"
)

// Options shape a lab. Zero values take the defaults.
type Options struct {
	Nodes int // 3; node 1 is the manager, the others workers
	// Managers is how many nodes, from node 1 on, are swarm managers: 1
	// (node 1 alone), or 3 or 5 for a Raft quorum that survives losing one
	// or two of them; the rest are workers. At most Nodes.
	Managers      int
	StorageDriver string // overlay2; vfs works anywhere but copies every layer
	// LockWait is how long Start waits for another lab on this machine to end.
	LockWait time.Duration // 30 minutes
	Log      func(format string, args ...any)
}

// Lab is a running swarm of Nodes.
type Lab struct {
	Nodes []*Node
	opts  Options
	lock  *os.File
	log   func(string, ...any)
}

// Node is one dockerd in its own namespaces.
type Node struct {
	Index int    // 1-based
	Name  string // hostname, network namespace and cgroup parent: nlpsl-n1
	Addr  string // its address on the lab subnet
	Host  string // DOCKER_HOST: unix:///run/nlpsl/nlpsl-n1/docker.sock
	ID    string // swarm node ID once joined
	Role  string // "manager" or "worker"

	lab *Lab
	mu  sync.Mutex
	cmd *exec.Cmd
	cl  *client.Client
}

// Available reports why this machine cannot run a lab, or nil.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("not root (network namespaces and dockerd need it)")
	}
	for _, bin := range []string{"ip", "nsenter", "unshare", "dockerd", "docker", "mount"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("%s not on PATH", bin)
		}
	}
	probe := Prefix + "-probe"
	_ = run(context.Background(), "ip", "netns", "del", probe)
	if err := run(context.Background(), "ip", "netns", "add", probe); err != nil {
		return fmt.Errorf("cannot create a network namespace: %w", err)
	}
	_ = run(context.Background(), "ip", "netns", "del", probe)
	return nil
}

// Start brings up a lab of opts.Nodes nodes (nodes 1…opts.Managers the swarm
// managers, node 1 the one that initialised it, the others workers, joined
// over the lab subnet), or skips the test where the
// machine cannot (fails under CI=true). Everything is removed when the test
// ends, whatever its outcome.
func Start(t testing.TB, opts Options) *Lab {
	t.Helper()
	if err := Available(); err != nil {
		pgtest.Unavailable(t, "swarm lab", err)
	}
	if opts.Log == nil {
		opts.Log = t.Logf
	}
	l, err := New(context.Background(), opts)
	if err != nil {
		t.Fatalf("swarm lab: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range l.Nodes {
				t.Logf("%s dockerd log (tail):\n%s", n.Name, n.LogTail(15))
			}
		}
		if err := l.Close(); err != nil {
			t.Errorf("swarm lab cleanup: %v", err)
		}
	})
	return l
}

// New is Start without a test: the caller must Close the lab.
func New(ctx context.Context, opts Options) (*Lab, error) {
	if opts.Nodes <= 0 {
		opts.Nodes = 3
	}
	if opts.Nodes > 9 {
		return nil, errors.New("at most 9 nodes")
	}
	if opts.Managers <= 0 {
		opts.Managers = 1
	}
	if opts.Managers > opts.Nodes {
		return nil, fmt.Errorf("%d managers in a lab of %d nodes", opts.Managers, opts.Nodes)
	}
	if opts.StorageDriver == "" {
		opts.StorageDriver = pickStorageDriver(opts.Log)
	}
	if opts.LockWait <= 0 {
		opts.LockWait = 30 * time.Minute
	}
	if opts.Log == nil {
		opts.Log = func(string, ...any) {}
	}
	l := &Lab{opts: opts, log: opts.Log}
	lock, err := acquireLock(ctx, opts.LockWait, l.log)
	if err != nil {
		return nil, err
	}
	l.lock = lock
	ok := false
	defer func() {
		if !ok {
			_ = l.Close()
		}
	}()
	if err := Clear(l.log); err != nil {
		return nil, fmt.Errorf("clear leftovers: %w", err)
	}
	start := time.Now()
	if err := l.network(ctx, opts.Nodes); err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	for i := 1; i <= opts.Nodes; i++ {
		name := fmt.Sprintf("%s-n%d", Prefix, i)
		n := &Node{Index: i, Name: name, Addr: fmt.Sprintf("10.231.0.1%d", i),
			Host: "unix://" + filepath.Join(runRoot, name, "docker.sock"), Role: "worker", lab: l}
		if i <= opts.Managers {
			n.Role = "manager"
		}
		l.Nodes = append(l.Nodes, n)
		if err := os.MkdirAll(filepath.Join(dataRoot, name), 0o700); err != nil {
			return nil, err
		}
		cfg := fmt.Sprintf(`{"storage-driver": %q, "log-driver": "json-file", "log-opts": {"max-size": "10m", "max-file": "2"}}`, opts.StorageDriver)
		if err := os.WriteFile(filepath.Join(dataRoot, name, "daemon.json"), []byte(cfg), 0o600); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(l.SharedDir(), 0o755); err != nil {
		return nil, err
	}
	var wg sync.WaitGroup
	errs := make([]error, len(l.Nodes))
	for i, n := range l.Nodes {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = n.Boot(ctx) }()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if err := l.checkIsolation(); err != nil {
		return nil, err
	}
	l.log("swarmlab: %d dockerds up in %s (storage %s)", len(l.Nodes), time.Since(start).Round(100*time.Millisecond), opts.StorageDriver)
	if err := l.formSwarm(ctx); err != nil {
		return nil, fmt.Errorf("swarm: %w", err)
	}
	l.log("swarmlab: swarm of %d nodes (%d managers) formed after %s", len(l.Nodes), opts.Managers, time.Since(start).Round(100*time.Millisecond))
	ok = true
	return l, nil
}

// pickStorageDriver is overlay2 where an overlay mount works under the data
// folder (ext4, xfs), else fuse-overlayfs where it is installed with
// /dev/fuse (a data folder on overlayfs itself), else vfs, which works
// anywhere but copies every layer.
func pickStorageDriver(log func(string, ...any)) string {
	dir, err := os.MkdirTemp(filepath.Dir(dataRoot), Prefix+"-probe-")
	if err == nil {
		defer os.RemoveAll(dir)
		for _, d := range []string{"l", "u", "w", "m"} {
			_ = os.Mkdir(filepath.Join(dir, d), 0o700)
		}
		opts := fmt.Sprintf("lowerdir=%s/l,upperdir=%s/u,workdir=%s/w", dir, dir, dir)
		if err = syscall.Mount("overlay", filepath.Join(dir, "m"), "overlay", 0, opts); err == nil {
			_ = syscall.Unmount(filepath.Join(dir, "m"), 0)
			return "overlay2"
		}
	}
	if _, ferr := exec.LookPath("fuse-overlayfs"); ferr == nil {
		if _, ferr := os.Stat("/dev/fuse"); ferr == nil {
			log("swarmlab: no overlay mount under %s (%v): fuse-overlayfs", filepath.Dir(dataRoot), err)
			return "fuse-overlayfs"
		}
	}
	log("swarmlab: no overlay mount under %s (%v) and no fuse-overlayfs: vfs (slow, disk hungry)", filepath.Dir(dataRoot), err)
	return "vfs"
}

// Manager is node 1, the manager that initialised the swarm.
func (l *Lab) Manager() *Node { return l.Nodes[0] }

// Managers are the manager nodes, node 1 first (Options.Managers of them).
func (l *Lab) Managers() []*Node { return l.Nodes[:l.opts.Managers] }

// Node returns node i (1-based).
func (l *Lab) Node(i int) *Node { return l.Nodes[i-1] }

// StorageDriver is the nodes' storage driver.
func (l *Lab) StorageDriver() string { return l.opts.StorageDriver }

// SharedDir is a host folder every node sees at the same path (for bind
// mounts of test files into services).
func (l *Lab) SharedDir() string { return filepath.Join(dataRoot, "shared") }

// Close stops every node and removes everything the lab made.
func (l *Lab) Close() error {
	for _, n := range l.Nodes {
		n.mu.Lock()
		if n.cl != nil {
			n.cl.Close()
			n.cl = nil
		}
		n.mu.Unlock()
	}
	err := Clear(l.log)
	if l.lock != nil {
		_ = syscall.Flock(int(l.lock.Fd()), syscall.LOCK_UN)
		l.lock.Close()
		l.lock = nil
	}
	return err
}

func acquireLock(ctx context.Context, wait time.Duration, log func(string, ...any)) (*os.File, error) {
	f, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(wait)
	said := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", lockPath, err)
		}
		if !said {
			log("swarmlab: another lab runs on this machine; waiting up to %s for %s", wait, lockPath)
			said = true
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("another lab still holds %s after %s", lockPath, wait)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// network makes the hub namespace with its bridge, the host's veth into it,
// and one namespace per node with eth0 on the bridge.
func (l *Lab) network(ctx context.Context, nodes int) error {
	cmds := [][]string{
		{"ip", "netns", "add", hubNS},
		{"ip", "-n", hubNS, "link", "set", "lo", "up"},
		{"ip", "-n", hubNS, "link", "add", bridge, "type", "bridge"},
		{"ip", "-n", hubNS, "link", "set", bridge, "up"},
		{"ip", "link", "add", rootVeth, "type", "veth", "peer", "name", "host0", "netns", hubNS},
		{"ip", "-n", hubNS, "link", "set", "host0", "master", bridge, "up"},
		{"ip", "addr", "add", HostAddr + "/24", "dev", rootVeth},
		{"ip", "link", "set", rootVeth, "up"},
	}
	for i := 1; i <= nodes; i++ {
		ns := fmt.Sprintf("%s-n%d", Prefix, i)
		port := fmt.Sprintf("n%d", i) // the bridge port in the hub
		cmds = append(cmds,
			[]string{"ip", "netns", "add", ns},
			[]string{"ip", "-n", ns, "link", "set", "lo", "up"},
			[]string{"ip", "-n", hubNS, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns},
			[]string{"ip", "-n", hubNS, "link", "set", port, "master", bridge, "up"},
			[]string{"ip", "-n", ns, "addr", "add", fmt.Sprintf("10.231.0.1%d/24", i), "dev", "eth0"},
			[]string{"ip", "-n", ns, "link", "set", "eth0", "up"},
		)
	}
	for _, c := range cmds {
		if err := run(ctx, c[0], c[1:]...); err != nil {
			return err
		}
	}
	return nil
}

func (l *Lab) formSwarm(ctx context.Context) error {
	m := l.Manager()
	if _, err := m.Docker(ctx, "swarm", "init", "--advertise-addr", m.Addr, "--listen-addr", m.Addr+":2377",
		"--default-addr-pool", AddrPool, "--default-addr-pool-mask-length", "24"); err != nil {
		return err
	}
	tokens := map[string]string{}
	for _, role := range []string{"manager", "worker"} {
		tok, err := m.Docker(ctx, "swarm", "join-token", "-q", role)
		if err != nil {
			return err
		}
		tokens[role] = strings.TrimSpace(tok)
	}
	// one at a time: a manager joins the Raft group through the leader,
	// and a second join before the first is committed can fail
	for _, n := range l.Nodes[1:] {
		if _, err := n.Docker(ctx, "swarm", "join", "--token", tokens[n.Role],
			"--advertise-addr", n.Addr, "--listen-addr", n.Addr+":2377", m.Addr+":2377"); err != nil {
			return fmt.Errorf("%s: %w", n.Name, err)
		}
	}
	for _, n := range l.Nodes {
		id, err := n.Docker(ctx, "info", "--format", "{{.Swarm.NodeID}}")
		if err != nil {
			return err
		}
		n.ID = strings.TrimSpace(id)
	}
	return l.WaitNodes(ctx, len(l.Nodes), 60*time.Second)
}

// WaitNodes waits until want nodes are Ready in a manager's view (the
// first manager whose dockerd runs: node 1 unless it was stopped).
func (l *Lab) WaitNodes(ctx context.Context, want int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last string
	for {
		m := l.Manager()
		for _, n := range l.Managers() {
			if n.Running() {
				m = n
				break
			}
		}
		out, err := m.Docker(ctx, "node", "ls", "--format", "{{.Hostname}} {{.Status}}")
		if err == nil {
			ready := strings.Count(out, " Ready")
			if ready >= want {
				return nil
			}
		}
		last = fmt.Sprint(out, err)
		if time.Now().After(deadline) {
			return fmt.Errorf("%d nodes not ready after %s: %s", want, timeout, last)
		}
		time.Sleep(time.Second)
	}
}

// Label adds node labels (key=value).
func (n *Node) Label(ctx context.Context, labels ...string) error {
	args := []string{"node", "update"}
	for _, kv := range labels {
		args = append(args, "--label-add", kv)
	}
	_, err := n.lab.Manager().Docker(ctx, append(args, n.ID)...)
	return err
}

// Env is os.Environ with DOCKER_HOST pointing at this node.
func (n *Node) Env() []string {
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DOCKER_HOST=") && !strings.HasPrefix(kv, "DOCKER_CONTEXT=") {
			env = append(env, kv)
		}
	}
	return append(env, "DOCKER_HOST="+n.Host)
}

// Docker runs the docker CLI against this node and returns its output
// (stdout and stderr together on error).
func (n *Node) Docker(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Env = n.Env()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String() + errb.String(), fmt.Errorf("%s: docker %s: %v: %s", n.Name, strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// DockerCombined is Docker with stderr and stdout together, as a terminal
// shows them: what docker logs and docker service logs print.
func (n *Node) DockerCombined(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Env = n.Env()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: docker %s: %v: %s", n.Name, strings.Join(args, " "), err, lastLine(string(out)))
	}
	return string(out), nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// Client is an Engine API client of this node (API version negotiated).
func (n *Node) Client() (*client.Client, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cl != nil {
		return n.cl, nil
	}
	cl, err := client.New(client.WithHost(n.Host))
	if err != nil {
		return nil, err
	}
	n.cl = cl
	return cl, nil
}

// Exec runs a command in the node's network namespace (not its mount
// namespace) and returns its combined output.
func (n *Node) Exec(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + netnsPath(n.Name), "--", name}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %s %s: %v: %s", n.Name, name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

func netnsPath(name string) string { return "/run/netns/" + name }

func (n *Node) runDir() string  { return filepath.Join(runRoot, n.Name) }
func (n *Node) dataDir() string { return filepath.Join(dataRoot, n.Name) }

// LogTail is the end of the node's dockerd log.
func (n *Node) LogTail(lines int) string {
	b, err := os.ReadFile(filepath.Join(n.dataDir(), "dockerd.log"))
	if err != nil {
		return err.Error()
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// bootScript runs inside the node's network namespace in fresh UTS and mount
// namespaces: its own hostname, a sysfs of its network namespace (with the
// host's cgroup mounts moved under it), and its own /run, so that dockerd's
// exec-root, pidfile, socket and containerd state are the node's, and a
// container mounting /var/run/docker.sock gets this node's engine.
const bootScript = `set -e
hostname "$1"
mount --make-rslave /
mkdir -p "$3/cgroup"
mount --rbind /sys/fs/cgroup "$3/cgroup"
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
mount --move "$3/cgroup" /sys/fs/cgroup
mount --bind "$2" /run
exec dockerd --config-file="$3/daemon.json" --data-root="$3/docker" --cgroup-parent="/$1" \
  -H unix:///run/docker.sock --pidfile=/run/docker.pid
`

// Boot starts the node's dockerd (after Stop or Kill too: like a reboot, its
// /run starts empty) and waits until it answers.
func (n *Node) Boot(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		return fmt.Errorf("%s: dockerd already running", n.Name)
	}
	_ = run(ctx, "ip", "-n", n.Name, "link", "set", "eth0", "up")
	if err := os.RemoveAll(n.runDir()); err != nil {
		return err
	}
	if err := os.MkdirAll(n.runDir(), 0o755); err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(n.dataDir(), "dockerd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command("nsenter", "--net="+netnsPath(n.Name), "--", "unshare", "--uts", "--mount", "--",
		"/bin/sh", "-c", bootScript, "boot", n.Name, n.runDir(), n.dataDir())
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: start dockerd: %w", n.Name, err)
	}
	n.cmd = cmd
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(90 * time.Second)
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := exec.CommandContext(pctx, "docker", "-H", n.Host, "version", "--format", "{{.Server.Version}}").Run()
		cancel()
		if err == nil {
			go func() { <-exited }()
			return nil
		}
		select {
		case werr := <-exited:
			n.cmd = nil
			return fmt.Errorf("%s: dockerd exited (%v):\n%s", n.Name, werr, n.LogTail(10))
		case <-time.After(300 * time.Millisecond):
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s: dockerd not answering after 90s:\n%s", n.Name, n.LogTail(10))
		}
	}
}

// Running reports whether the node's dockerd process is alive.
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd != nil && syscall.Kill(n.cmd.Process.Pid, 0) == nil
}

// Stop stops the node's dockerd as `systemctl stop docker` would: SIGTERM,
// which stops its containers, then SIGKILL of whatever is left after timeout.
func (n *Node) Stop(timeout time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return
	}
	pid := n.cmd.Process.Pid
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(timeout)
	for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	killNode(n.Name)
	n.cmd = nil
}

// Kill is a power cut: every process of the node (dockerd, containerd, shims,
// containers) gets SIGKILL at once and its link goes down, so peers see
// silence rather than resets. Boot brings it back.
func (n *Node) Kill() {
	n.mu.Lock()
	defer n.mu.Unlock()
	_ = run(context.Background(), "ip", "-n", n.Name, "link", "set", "eth0", "down")
	killNode(n.Name)
	n.cmd = nil
}

// killNode SIGKILLs the processes of a node: those in its network namespace
// (dockerd, containerd, shims, host-network containers) and those in its
// cgroups (containers), repeating until none is left.
func killNode(name string) {
	for round := 0; round < 20; round++ {
		pids := nodePIDs(name)
		if len(pids) == 0 {
			return
		}
		for _, p := range pids {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// nodePIDs lists the live processes that belong to node name.
func nodePIDs(name string) []int {
	seen := map[int]bool{}
	var out []int
	add := func(p int) {
		if p > 1 && p != os.Getpid() && !seen[p] && syscall.Kill(p, 0) == nil {
			seen[p] = true
			out = append(out, p)
		}
	}
	if b, err := exec.Command("ip", "netns", "pids", name).Output(); err == nil {
		for _, f := range strings.Fields(string(b)) {
			if p, err := strconv.Atoi(f); err == nil {
				add(p)
			}
		}
	}
	for _, dir := range cgroupDirs(name) {
		_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
				return nil
			}
			b, _ := os.ReadFile(path)
			for _, f := range strings.Fields(string(b)) {
				if p, err := strconv.Atoi(f); err == nil {
					add(p)
				}
			}
			return nil
		})
	}
	return out
}

// cgroupDirs are the node's cgroup parents in every mounted hierarchy (v1)
// or the unified one (v2).
func cgroupDirs(name string) []string {
	var out []string
	if fi, err := os.Stat(filepath.Join("/sys/fs/cgroup", name)); err == nil && fi.IsDir() {
		out = append(out, filepath.Join("/sys/fs/cgroup", name))
	}
	ms, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", name))
	return append(out, ms...)
}

// checkIsolation makes sure each node's dockerd sees its own socket at
// /var/run/docker.sock: services that mount it (the scheduler, Prometheus)
// must drive the lab's engine, never the host's.
func (l *Lab) checkIsolation() error {
	for _, n := range l.Nodes {
		var want syscall.Stat_t
		if err := syscall.Stat(filepath.Join(n.runDir(), "docker.sock"), &want); err != nil {
			return err
		}
		pid := n.cmd.Process.Pid
		var got syscall.Stat_t
		if err := syscall.Stat(fmt.Sprintf("/proc/%d/root/run/docker.sock", pid), &got); err != nil {
			return fmt.Errorf("%s: /run/docker.sock in its mount namespace: %w", n.Name, err)
		}
		if got.Ino != want.Ino || got.Dev != want.Dev {
			return fmt.Errorf("%s: /var/run/docker.sock in its mount namespace is not its own socket", n.Name)
		}
	}
	return nil
}

// LoadImages copies images (references on the host engine) into nodes with
// docker save and docker load, so that no node ever pulls.
func (l *Lab) LoadImages(ctx context.Context, nodes []*Node, refs ...string) error {
	start := time.Now()
	tar := filepath.Join(dataRoot, fmt.Sprintf("images-%d.tar", time.Now().UnixNano()))
	defer os.Remove(tar)
	if out, err := exec.CommandContext(ctx, "docker", append([]string{"save", "-o", tar}, refs...)...).CombinedOutput(); err != nil {
		return fmt.Errorf("docker save %v on the host engine: %v: %s", refs, err, out)
	}
	fi, _ := os.Stat(tar)
	var wg sync.WaitGroup
	errs := make([]error, len(nodes))
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = n.Docker(ctx, "load", "-q", "-i", tar)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	l.log("swarmlab: loaded %v (%.0f MiB) into %d node(s) in %s", refs, float64(fi.Size())/(1<<20), len(nodes), time.Since(start).Round(100*time.Millisecond))
	return nil
}

// Clear removes whatever a lab (this one, or a crashed earlier run) left:
// dockerds and their processes, namespaces, the host veth, cgroups and
// folders. Call it only while holding the lab lock (Start does).
func Clear(log func(string, ...any)) error {
	if log == nil {
		log = func(string, ...any) {}
	}
	var names []string
	if b, err := exec.Command("ip", "netns", "list").Output(); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) > 0 && strings.HasPrefix(f[0], Prefix+"-") {
				names = append(names, f[0])
			}
		}
	}
	if ents, err := os.ReadDir(runRoot); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), Prefix+"-") && !contains(names, e.Name()) {
				names = append(names, e.Name())
			}
		}
	}
	found := false
	// dockerds first, gently: they stop their containers
	for _, name := range names {
		pid := dockerdPID(name)
		if pid > 0 {
			found = true
			_ = syscall.Kill(pid, syscall.SIGTERM)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, name := range names {
		for pid := dockerdPID(name); pid > 0 && syscall.Kill(pid, 0) == nil && time.Now().Before(deadline); {
			time.Sleep(200 * time.Millisecond)
		}
	}
	for _, name := range names {
		if len(nodePIDs(name)) > 0 {
			found = true
		}
		killNode(name)
	}
	var errs []error
	for _, name := range names {
		for _, dir := range cgroupDirs(name) {
			if err := removeCgroup(dir); err != nil {
				errs = append(errs, err)
			}
		}
		if _, err := os.Stat(netnsPath(name)); err == nil {
			found = true
			if err := run(context.Background(), "ip", "netns", "del", name); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if exec.Command("ip", "link", "show", rootVeth).Run() == nil {
		found = true
		// deleting the hub namespace above removes its peer, and with it
		// this end, a moment later: gone by itself is as good
		if err := run(context.Background(), "ip", "link", "del", rootVeth); err != nil && exec.Command("ip", "link", "show", rootVeth).Run() == nil {
			errs = append(errs, err)
		}
	}
	// no mount of ours should be visible here (nodes mount in their own
	// namespaces), but a lazy unmount costs nothing
	if b, err := os.ReadFile("/proc/self/mounts"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) > 1 && (strings.HasPrefix(f[1], runRoot+"/") || strings.HasPrefix(f[1], dataRoot+"/")) {
				_ = syscall.Unmount(f[1], syscall.MNT_DETACH)
			}
		}
	}
	for _, dir := range []string{runRoot, dataRoot} {
		if _, err := os.Stat(dir); err == nil {
			found = true
			if err := os.RemoveAll(dir); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if found {
		log("swarmlab: cleared %v", names)
	}
	return errors.Join(errs...)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// dockerdPID is the pid in the node's pidfile if that process is a dockerd
// in the node's network namespace (a recycled pid is never signalled).
func dockerdPID(name string) int {
	b, err := os.ReadFile(filepath.Join(runRoot, name, "docker.pid"))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !bytes.HasPrefix(cmdline, []byte("dockerd")) {
		return 0
	}
	var a, b2 syscall.Stat_t
	if syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &a) != nil || syscall.Stat(netnsPath(name), &b2) != nil || a.Ino != b2.Ino {
		return 0
	}
	return pid
}

// removeCgroup removes a cgroup folder tree, deepest first.
func removeCgroup(dir string) error {
	var dirs []string
	_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, path)
		}
		return nil
	})
	var last error
	for try := 0; try < 20; try++ {
		last = nil
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := syscall.Rmdir(dirs[i]); err != nil && !errors.Is(err, syscall.ENOENT) {
				last = fmt.Errorf("rmdir %s: %w", dirs[i], err)
			}
		}
		if last == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return last
}

func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
