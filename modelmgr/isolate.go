package modelmgr

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/sandbox"
)

// ChildLimits bound the child process that validates an upload. The child is
// the platform's own binary; it sets these on itself before it reads a byte of
// the archive (ApplyLimits), so what the archive makes it do is bounded.
type ChildLimits struct {
	MemoryBytes uint64        // RLIMIT_AS: address space; past it allocations fail and Go exits
	CPUSeconds  uint64        // RLIMIT_CPU: the kernel kills the child past it
	FileBytes   uint64        // RLIMIT_FSIZE: the largest file it may write (the unpacked model)
	Wall        time.Duration // the parent kills it after this long
}

// DefaultChildLimits fit the smoke inference of models up to a few GiB on the
// pure-Go engine.
var DefaultChildLimits = ChildLimits{MemoryBytes: 16 << 30, CPUSeconds: 600, FileBytes: 16 << 30, Wall: 10 * time.Minute}

// ApplyLimits sets l on the calling process, and a Go memory limit below the
// address-space one so the collector works before allocations fail.
func ApplyLimits(l ChildLimits) error {
	set := func(res int, v uint64, name string) error {
		if v == 0 {
			return nil
		}
		if err := syscall.Setrlimit(res, &syscall.Rlimit{Cur: v, Max: v}); err != nil {
			return fmt.Errorf("set %s limit: %w", name, err)
		}
		return nil
	}
	if err := set(syscall.RLIMIT_AS, l.MemoryBytes, "memory"); err != nil {
		return err
	}
	if err := set(syscall.RLIMIT_CPU, l.CPUSeconds, "CPU time"); err != nil {
		return err
	}
	if err := set(syscall.RLIMIT_FSIZE, l.FileBytes, "file size"); err != nil {
		return err
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_CORE, &syscall.Rlimit{}); err != nil {
		return fmt.Errorf("set core limit: %w", err)
	}
	if l.MemoryBytes > 0 {
		debug.SetMemoryLimit(int64(l.MemoryBytes / 2))
	}
	return nil
}

// Isolation runs validation (extraction, checks, smoke inference) in a child
// process: a model that panics a goroutine, exhausts memory or spins takes
// down the child, not the apiserver, and the child holds none of the
// server's secrets (a clean environment, no file descriptor but
// stdin/stdout/stderr, its own process group) and, under Landlock, can read
// no file but the archive, its work folder and the engine's libraries
// (childPolicy), so not the server's Docker secrets either.
type Isolation struct {
	// Command is the child's argv: the platform binary and the subcommand
	// that calls ServeChild ([/proc/self/exe validate-artifact]).
	Command []string
	Limits  ChildLimits
}

// childRequest is what the parent sends on the child's stdin.
type childRequest struct {
	Archive      string        `json:"archive"`
	WorkDir      string        `json:"workdir"`
	Task         string        `json:"task"`
	SmokeTimeout time.Duration `json:"smoke_timeout"`
	Limits       ChildLimits   `json:"limits"`
}

// childResult is what the child answers on stdout.
type childResult struct {
	Metadata Metadata `json:"metadata"`
	Reasons  []string `json:"reasons,omitempty"`
	Error    string   `json:"error,omitempty"`
}

const maxChildOutput = 1 << 20

// ServeChild is the child side: it reads one request from r, applies its
// limits, confines itself (childPolicy), validates with v (in this process)
// and writes the result to w, with the sandbox's Status in the metadata.
// Where Landlock is unavailable it validates without it and says so there.
// An error is a failure of the child itself, not a refusal of the archive.
func ServeChild(ctx context.Context, r io.Reader, w io.Writer, v Validator) error {
	var req childRequest
	if err := json.NewDecoder(io.LimitReader(r, 1<<16)).Decode(&req); err != nil {
		return fmt.Errorf("validation request: %w", err)
	}
	if err := ApplyLimits(req.Limits); err != nil {
		return err
	}
	sb, err := sandbox.Restrict(childPolicy(req, v.Engine))
	if err != nil {
		return fmt.Errorf("validation sandbox: %w", err)
	}
	if !sb.Enforced() {
		fmt.Fprintln(os.Stderr, "validation child:", sb)
	}
	v.SmokeTimeout = req.SmokeTimeout
	md, err := v.validateHere(ctx, req.Archive, req.WorkDir, req.Task)
	md.Sandbox = sb
	res := childResult{Metadata: md}
	var ve *ValidationError
	switch {
	case errors.As(err, &ve):
		res.Reasons = ve.Reasons
	case err != nil:
		res.Error = err.Error()
	}
	return json.NewEncoder(w).Encode(res)
}

// childPolicy is all the validation child may touch once it has read its
// request: the archive (read), its work folder, where it unpacks the model
// and the engine keeps its temp files (TMPDIR), and what the engine reads
// to load (its shared libraries). Not the rest of the store (other
// tenants' blobs), not /run/secrets, not /etc, no network and no new
// socket of any kind.
func childPolicy(req childRequest, engine sandbox.Policy) sandbox.Policy {
	return sandbox.Policy{
		ReadFiles: append([]string{req.Archive}, engine.ReadFiles...),
		ReadDirs:  engine.ReadDirs,
		WriteDirs: append([]string{req.WorkDir}, engine.WriteDirs...),
		NoSockets: true,
	}
}

// validate runs one validation in a child process under iso's limits.
func (iso *Isolation) validate(ctx context.Context, archivePath, workDir, task string, smokeTimeout time.Duration) (Metadata, error) {
	if len(iso.Command) == 0 {
		return Metadata{}, errors.New("validation child: no command")
	}
	lim := iso.Limits
	if lim.Wall <= 0 {
		lim.Wall = DefaultChildLimits.Wall
	}
	req, err := json.Marshal(childRequest{Archive: archivePath, WorkDir: workDir, Task: task, SmokeTimeout: smokeTimeout, Limits: lim})
	if err != nil {
		return Metadata{}, err
	}
	wctx, cancel := context.WithTimeout(ctx, lim.Wall)
	defer cancel()
	cmd := exec.CommandContext(wctx, iso.Command[0], iso.Command[1:]...)
	// nothing of the server's environment: no *_FILE paths, no passwords
	cmd.Env = []string{"TMPDIR=" + workDir, "HOME=" + workDir, "PATH=/usr/bin:/bin"}
	cmd.Dir = workDir
	cmd.Stdin = bytes.NewReader(req)
	stdout := &capped{max: maxChildOutput}
	stderr := &capped{max: 64 << 10, tail: true}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	closeOnExec()
	start := time.Now()
	runErr := cmd.Run()
	// a process group member left behind must not outlive the upload
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	if err := ctx.Err(); err != nil {
		return Metadata{}, fmt.Errorf("validation: %w", err)
	}
	if reason := limitReason(cmd.ProcessState, stderr.String(), lim, wctx.Err() != nil, time.Since(start)); reason != "" {
		return Metadata{}, &ValidationError{Reasons: []string{reason}}
	}
	if runErr != nil {
		return Metadata{}, fmt.Errorf("validation child: %w: %s", runErr, lastLine(stderr.String()))
	}
	var res childResult
	if err := json.Unmarshal(stdout.buf.Bytes(), &res); err != nil {
		return Metadata{}, fmt.Errorf("validation child answered %d bytes that are not a result: %w", stdout.buf.Len(), err)
	}
	switch {
	case len(res.Reasons) > 0:
		return res.Metadata, &ValidationError{Reasons: res.Reasons}
	case res.Error != "":
		return Metadata{}, fmt.Errorf("validation child: %s", res.Error)
	}
	return res.Metadata, nil
}

// closeOnExec marks every descriptor of this process above stderr
// close-on-exec. Go opens its own files that way; this catches descriptors
// the server inherited from whoever started it, which exec would otherwise
// pass on to the child.
func closeOnExec() {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			syscall.CloseOnExec(fd)
		}
	}
}

// limitReason tells why a child ended that the archive is to blame for: a
// limit, or a crash (a panic in a goroutine of the engine). "" when it ended
// normally.
func limitReason(ps *os.ProcessState, stderr string, lim ChildLimits, wallHit bool, took time.Duration) string {
	if wallHit {
		return fmt.Sprintf("validation ran past its wall-time limit of %s and was stopped", lim.Wall)
	}
	if ps == nil {
		return ""
	}
	ws, _ := ps.Sys().(syscall.WaitStatus)
	cpu := ps.UserTime() + ps.SystemTime()
	switch {
	case ws.Signaled() && (ws.Signal() == syscall.SIGKILL || ws.Signal() == syscall.SIGXCPU) && lim.CPUSeconds > 0 &&
		cpu >= time.Duration(lim.CPUSeconds)*time.Second-time.Second:
		return fmt.Sprintf("validation used more than its CPU-time limit of %ds and was stopped", lim.CPUSeconds)
	case ps.Success():
		return ""
	case outOfMemory(stderr):
		return fmt.Sprintf("validation needed more than its memory limit of %d MiB and was stopped", lim.MemoryBytes>>20)
	case ws.Signaled():
		return fmt.Sprintf("validation was killed by signal %s after %s", ws.Signal(), took.Round(time.Millisecond))
	case strings.Contains(stderr, "panic:") || strings.Contains(stderr, "fatal error:"):
		return "the model crashed the validation: " + firstLine(stderr, "panic:", "fatal error:")
	}
	return ""
}

func outOfMemory(stderr string) bool {
	for _, s := range []string{"out of memory", "cannot allocate memory", "runtime: cannot map pages"} {
		if strings.Contains(stderr, s) {
			return true
		}
	}
	return false
}

// firstLine returns the first stderr line holding one of marks, shortened.
func firstLine(s string, marks ...string) string {
	for _, line := range strings.Split(s, "\n") {
		for _, m := range marks {
			if strings.Contains(line, m) {
				return shorten(strings.TrimSpace(line))
			}
		}
	}
	return "unknown"
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return shorten(s)
}

func shorten(s string) string {
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}

// capped keeps the first (or, with tail, the last) max bytes written to it.
type capped struct {
	buf  bytes.Buffer
	max  int
	tail bool
}

func (c *capped) Write(p []byte) (int, error) {
	n := len(p)
	if c.tail {
		c.buf.Write(p)
		if over := c.buf.Len() - c.max; over > 0 {
			c.buf.Next(over)
		}
		return n, nil
	}
	if room := c.max - c.buf.Len(); room > 0 {
		c.buf.Write(p[:min(room, len(p))])
	}
	return n, nil
}

func (c *capped) String() string { return c.buf.String() }
