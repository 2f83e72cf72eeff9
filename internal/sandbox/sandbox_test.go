package sandbox

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/pg/pgtest"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

func TestStatusOf(t *testing.T) {
	cases := []struct {
		name         string
		abi          int
		abiErr       error
		errata       int
		errataErr    error
		wantABI      int
		wantReason   string
		wantDescribe string
	}{
		{"this machine's kernel", 7, nil, 0x3, nil, 7, "", "Landlock ABI 7 denies files outside the policy, TCP, signals and abstract UNIX sockets to processes outside it"},
		{"ABI 6 without the signal-scoping fix is 5", 6, nil, 0x1, nil, 5, "", "Landlock ABI 5 denies files outside the policy, TCP"},
		{"errata unreadable counts as unfixed", 7, nil, 0, syscall.EINVAL, 5, "", "Landlock ABI 5 denies files outside the policy, TCP"},
		{"first ABI: files only", 1, nil, 0, nil, 1, "", "Landlock ABI 1 denies files outside the policy"},
		{"a kernel newer than the library", 14, nil, 0x3, nil, 11, "", "Landlock ABI 11 denies files outside the policy, TCP, signals and abstract UNIX sockets to processes outside it, pathname UNIX sockets, UDP"},
		{"old kernel or hidden by seccomp", -1, syscall.ENOSYS, 0, nil, 0, "not implemented (ENOSYS)", "no sandbox: the Landlock system calls are not implemented"},
		{"not enabled at boot", -1, syscall.EOPNOTSUPP, 0, nil, 0, "lsm= boot parameter", "no sandbox: Landlock is not enabled"},
		{"refused by a seccomp profile", -1, syscall.EPERM, 0, nil, 0, "seccomp profile", "no sandbox: the Landlock system calls are refused (EPERM)"},
		{"anything else", -1, syscall.EFAULT, 0, nil, 0, "Landlock ABI query: bad address", "no sandbox: Landlock ABI query"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := statusOf(c.abi, c.abiErr, c.errata, c.errataErr)
			if st.ABI != c.wantABI || st.Enforced() != (c.wantABI > 0) || !strings.Contains(st.Unavailable, c.wantReason) {
				t.Fatalf("%+v, want ABI %d and a reason with %q", st, c.wantABI, c.wantReason)
			}
			if (st.Unavailable == "") != st.Enforced() {
				t.Fatalf("%+v: a reason exactly when nothing is enforced", st)
			}
			if s := st.String(); !strings.HasPrefix(s, c.wantDescribe) {
				t.Fatalf("%q, want it to start with %q", s, c.wantDescribe)
			}
		})
	}
}

// childRun is what TestMain's child does: restrict itself to Policy, then
// try each Probe and report each one's errno ("ok" when allowed).
type childRun struct {
	Policy Policy
	Read   []string // read the whole file
	List   []string // list the folder
	Write  []string // create and write the file
	Dial   string   // TCP connect
	Listen bool     // TCP listen on 127.0.0.1, multipath off
	MPTCP  string   // multipath TCP connect (not covered by Landlock)
	UDP    string   // UDP "connect" and send
	Unix   string   // connect to a pathname UNIX socket
	Signal int      // kill(pid, 0)
}

type childReport struct {
	Status  Status
	Results map[string]string
}

// TestMain lets this test binary be a process that sandboxes itself: with
// the arguments "sandbox-child <childRun JSON>" it runs Restrict and its
// probes and prints a childReport.
func TestMain(m *testing.M) {
	if len(os.Args) == 3 && os.Args[1] == "sandbox-child" {
		var run childRun
		if err := json.Unmarshal([]byte(os.Args[2]), &run); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		st, err := Restrict(run.Policy)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		json.NewEncoder(os.Stdout).Encode(childReport{Status: st, Results: run.probe()})
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func errno(err error) string {
	if err == nil {
		return "ok"
	}
	var en syscall.Errno
	if errors.As(err, &en) {
		return en.Error()
	}
	return err.Error()
}

func (r childRun) probe() map[string]string {
	res := map[string]string{}
	for _, p := range r.Read {
		_, err := os.ReadFile(p)
		res["read "+p] = errno(err)
	}
	for _, p := range r.List {
		_, err := os.ReadDir(p)
		res["list "+p] = errno(err)
	}
	for _, p := range r.Write {
		res["write "+p] = errno(os.WriteFile(p, []byte("x"), 0o600))
	}
	if r.Dial != "" {
		c, err := net.DialTimeout("tcp", r.Dial, 5*time.Second)
		if err == nil {
			c.Close()
		}
		res["dial"] = errno(err)
	}
	if r.Listen {
		lc := net.ListenConfig{}
		lc.SetMultipathTCP(false)
		l, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
		if err == nil {
			l.Close()
		}
		res["listen"] = errno(err)
	}
	if r.MPTCP != "" {
		d := net.Dialer{Timeout: 5 * time.Second}
		d.SetMultipathTCP(true)
		c, err := d.Dial("tcp", r.MPTCP)
		if err == nil {
			c.Close()
		}
		res["mptcp"] = errno(err)
	}
	if r.UDP != "" {
		c, err := net.Dial("udp", r.UDP)
		if err == nil {
			_, err = c.Write([]byte("x"))
			c.Close()
		}
		res["udp"] = errno(err)
	}
	if r.Unix != "" {
		c, err := net.Dial("unix", r.Unix)
		if err == nil {
			c.Close()
		}
		res["unix"] = errno(err)
	}
	if r.Signal != 0 {
		res["signal"] = errno(syscall.Kill(r.Signal, 0))
	}
	return res
}

func runChild(t *testing.T, run childRun) childReport {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	arg, _ := json.Marshal(run)
	out, err := exec.Command(exe, "sandbox-child", string(arg)).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("child: %v\n%s", err, ee.Stderr)
		}
		t.Fatal(err)
	}
	var rep childReport
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("child answered %q: %v", out, err)
	}
	return rep
}

func write(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// A sandboxed process reads what its policy names and nothing else of the
// file system, even files its uid owns; writes only in its scratch folder;
// connects and listens on no TCP port; and cannot signal the process that
// started it. Without the sandbox (before issue 17's fix) every probe was
// allowed.
func TestRestrict(t *testing.T) {
	if st := Probe(); !st.Enforced() {
		pgtest.Unavailable(t, "Landlock", errors.New(st.Unavailable))
	}
	model, lib, scratch, outside := t.TempDir(), t.TempDir(), t.TempDir(), t.TempDir()
	archive := write(t, filepath.Join(outside, "model.tar.gz"), "archive")
	weights := write(t, filepath.Join(model, "model.onnx"), "weights")
	so := write(t, filepath.Join(lib, "libengine.so"), "library")
	secret := write(t, filepath.Join(outside, "internal_token"), "s3cr3t")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close() // connections complete in its backlog, never accepted

	rep := runChild(t, childRun{
		Policy: Policy{ReadFiles: []string{archive, filepath.Join(outside, "missing")}, ReadDirs: []string{model, lib, "/nonexistent"}, WriteDirs: []string{scratch}},
		Read:   []string{archive, weights, so, secret, "/etc/passwd", "/proc/self/environ"},
		List:   []string{model, outside, "/"},
		Write:  []string{filepath.Join(scratch, "unpacked"), filepath.Join(model, "planted"), filepath.Join(outside, "planted")},
		Dial:   l.Addr().String(),
		Listen: true,
		MPTCP:  l.Addr().String(),
		Signal: os.Getpid(),
	})
	if !rep.Status.Enforced() || rep.Status != Probe() {
		t.Fatalf("the child reports %+v, the probe %+v", rep.Status, Probe())
	}
	want := map[string]string{
		"read " + archive: "ok",
		"read " + weights: "ok",
		"read " + so:      "ok",
		"list " + model:   "ok",
		"write " + filepath.Join(scratch, "unpacked"): "ok",
		"read " + secret:          "permission denied",
		"read /etc/passwd":        "permission denied",
		"read /proc/self/environ": "permission denied",
		"list " + outside:         "permission denied",
		"list /":                  "permission denied",
		"write " + filepath.Join(model, "planted"):   "permission denied",
		"write " + filepath.Join(outside, "planted"): "permission denied",
	}
	if rep.Status.ABI >= 4 {
		want["dial"], want["listen"] = "permission denied", "permission denied"
	}
	if rep.Status.ABI >= 6 {
		want["signal"] = "operation not permitted"
	}
	for probe, w := range want {
		if got := rep.Results[probe]; got != w {
			t.Errorf("%s: %s, want %s", probe, got, w)
		}
	}
	// Landlock's TCP rules do not cover multipath TCP (landlock-lsm/linux
	// issue 54): logged, not asserted, so the gap stays visible
	t.Logf("%s; multipath TCP connect: %s", rep.Status, rep.Results["mptcp"])
}

// Where Landlock is unavailable Restrict changes nothing and says why; the
// same Status Probe gives.
func TestRestrictReportsWhatProbeSays(t *testing.T) {
	rep := runChild(t, childRun{Policy: Policy{WriteDirs: []string{t.TempDir()}}})
	if rep.Status != Probe() {
		t.Fatalf("Restrict reported %+v, Probe %+v", rep.Status, Probe())
	}
}

// With NoSockets a process creates no socket of any kind, also where
// Landlock is unavailable or does not reach: multipath TCP (which a
// Landlock-only child could still open), UDP and UNIX sockets; files are
// Landlock's business and stay as the policy says.
func TestRestrictNoSockets(t *testing.T) {
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	u, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	sock := filepath.Join(dir, "s.sock")
	ul, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	file := write(t, filepath.Join(dir, "model.onnx"), "weights")

	rep := runChild(t, childRun{
		Policy: Policy{ReadFiles: []string{file}, NoSockets: true},
		Read:   []string{file},
		Dial:   l.Addr().String(),
		MPTCP:  l.Addr().String(),
		UDP:    u.LocalAddr().String(),
		Unix:   sock,
	})
	if !rep.Status.NoSockets || rep.Status.SocketsAllowed != "" {
		t.Fatalf("status %+v, want the socket filter in force", rep.Status)
	}
	for _, probe := range []string{"dial", "mptcp", "udp", "unix"} {
		if got := rep.Results[probe]; got != "operation not permitted" {
			t.Errorf("%s: %s, want operation not permitted", probe, got)
		}
	}
	if got := rep.Results["read "+file]; got != "ok" {
		t.Errorf("read of the policy's file: %s", got)
	}
	if !strings.Contains(rep.Status.String(), "seccomp denies every new socket") {
		t.Errorf("status says %q", rep.Status)
	}
}

// The socket filter's decisions, run in x/net/bpf's VM on the kernel's
// seccomp_data layout: only socket and socketpair of this architecture are
// refused, and every call through another architecture's entry (i386's
// socketcall on x86-64) or x32's numbering.
func TestNoSocketsFilter(t *testing.T) {
	raw, err := noSocketsFilter(auditArch)
	if err != nil {
		t.Fatal(err)
	}
	var prog []bpf.Instruction
	for _, r := range raw {
		prog = append(prog, r.Disassemble())
	}
	vm, err := bpf.NewVM(prog)
	if err != nil {
		t.Fatal(err)
	}
	const (
		allow = unix.SECCOMP_RET_ALLOW
		eperm = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
	)
	cases := []struct {
		name     string
		nr, arch uint32
		want     uint32
	}{
		{"socket", unix.SYS_SOCKET, auditArch, eperm},
		{"socketpair", unix.SYS_SOCKETPAIR, auditArch, eperm},
		{"read", unix.SYS_READ, auditArch, allow},
		{"connect on a socket held from before", unix.SYS_CONNECT, auditArch, allow},
		{"openat", unix.SYS_OPENAT, auditArch, allow},
		{"x32 numbering of socket", unix.SYS_SOCKET | 0x40000000, auditArch, eperm},
		{"i386 entry (socketcall is 102 there)", 102, unix.AUDIT_ARCH_I386, eperm},
		{"i386 entry, anything", unix.SYS_READ, unix.AUDIT_ARCH_I386, eperm},
	}
	for _, c := range cases {
		// the kernel loads seccomp_data's words in the machine's order,
		// x/net/bpf's VM in network order: the test writes them so
		data := make([]byte, 64)
		binary.BigEndian.PutUint32(data[seccompNrOffset:], c.nr)
		binary.BigEndian.PutUint32(data[seccompArchOffset:], c.arch)
		got, err := vm.Run(data)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if uint32(got) != c.want {
			t.Errorf("%s: %#x, want %#x", c.name, got, c.want)
		}
	}
}
