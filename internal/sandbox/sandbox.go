package sandbox

import (
	"errors"
	"fmt"
	"strings"
	"syscall"

	"github.com/landlock-lsm/go-landlock/landlock"
	ll "github.com/landlock-lsm/go-landlock/landlock/syscall"
)

// Policy is what a sandboxed process may still touch. Everything else of
// the file system is denied for reading, writing and executing, and TCP
// (and, from ABI 10, UDP) bind and connect are denied with no exception.
type Policy struct {
	// ReadFiles may be read; a missing one is skipped.
	ReadFiles []string
	// ReadDirs may be listed, and the files beneath them read and executed
	// (shared libraries); a missing one is skipped.
	ReadDirs []string
	// WriteDirs may be read and written beneath: files and folders created,
	// written, truncated and removed. Each must exist.
	WriteDirs []string
	// NoSockets denies creating any socket (socket and socketpair fail
	// with EPERM, by a seccomp filter): what Landlock's network rules do not
	// cover, multipath TCP, UDP before ABI 10, UNIX, raw and netlink
	// sockets. Applied whether or not Landlock is available.
	NoSockets bool
}

// Status is what Probe found or Restrict enforced.
type Status struct {
	// ABI is the Landlock ABI version enforced (or, from Probe, that would
	// be); 0 when none.
	ABI int `json:"landlock_abi"`
	// Unavailable says why there is no sandbox when ABI is 0.
	Unavailable string `json:"unavailable,omitempty"`
	// NoSockets is true when a seccomp filter denies creating sockets
	// (Policy.NoSockets); SocketsAllowed says why not when it was asked for
	// and could not be applied.
	NoSockets      bool   `json:"no_sockets,omitempty"`
	SocketsAllowed string `json:"sockets_allowed,omitempty"`
}

// Enforced reports whether a Landlock sandbox is (or would be) in force.
func (s Status) Enforced() bool { return s.ABI > 0 }

// String says what the sandbox denies, or why there is none.
func (s Status) String() string {
	sockets := ""
	switch {
	case s.NoSockets:
		sockets = "; seccomp denies every new socket"
	case s.SocketsAllowed != "":
		sockets = "; sockets allowed: " + s.SocketsAllowed
	}
	if !s.Enforced() {
		return "no sandbox: " + s.Unavailable + sockets
	}
	denied := []string{"files outside the policy"}
	if s.ABI >= 4 {
		denied = append(denied, "TCP")
	}
	if s.ABI >= 6 {
		denied = append(denied, "signals and abstract UNIX sockets to processes outside it")
	}
	if s.ABI >= 9 {
		denied = append(denied, "pathname UNIX sockets")
	}
	if s.ABI >= 10 {
		denied = append(denied, "UDP")
	}
	return fmt.Sprintf("Landlock ABI %d denies %s", s.ABI, strings.Join(denied, ", ")) + sockets
}

// configs are the library's ABI versions; configs[v-1] is V<v>.
var configs = []landlock.Config{landlock.V1, landlock.V2, landlock.V3, landlock.V4, landlock.V5,
	landlock.V6, landlock.V7, landlock.V8, landlock.V9, landlock.V10, landlock.V11}

// statusOf turns the kernel's answers to the ABI and errata queries into a
// Status: the version the library would enforce, or why none.
func statusOf(abi int, abiErr error, errata int, errataErr error) Status {
	switch {
	case errors.Is(abiErr, syscall.ENOSYS):
		return Status{Unavailable: "the Landlock system calls are not implemented (ENOSYS): a kernel before 5.13, or a seccomp profile that hides them"}
	case errors.Is(abiErr, syscall.EOPNOTSUPP):
		return Status{Unavailable: "Landlock is not enabled in this kernel (EOPNOTSUPP): add landlock to the lsm= boot parameter"}
	case errors.Is(abiErr, syscall.EPERM):
		return Status{Unavailable: "the Landlock system calls are refused (EPERM): a seccomp profile (a container's) blocks them"}
	case abiErr != nil:
		return Status{Unavailable: "Landlock ABI query: " + abiErr.Error()}
	case abi < 1:
		return Status{Unavailable: fmt.Sprintf("the kernel reports Landlock ABI %d", abi)}
	}
	// the library's own rule (landlock/internal): signal scoping (ABI 6)
	// counts only once the kernel reports its bug fixed (erratum 2)
	if abi >= 6 && (errataErr != nil || errata&0x2 == 0) {
		abi = 5
	}
	return Status{ABI: min(abi, len(configs))}
}

// Probe asks the kernel which Landlock ABI a Restrict would enforce.
func Probe() Status {
	abi, abiErr := ll.LandlockGetABIVersion()
	var errata int
	var errataErr error
	if abiErr == nil && abi >= 6 {
		errata, errataErr = ll.LandlockGetErrata()
	}
	return statusOf(abi, abiErr, errata, errataErr)
}

// Restrict confines every thread of this process to p, for good: it cannot
// be undone, and children inherit it. Where Landlock is unavailable it
// changes nothing and returns a Status saying why, not an error.
func Restrict(p Policy) (Status, error) {
	st := Probe()
	if p.NoSockets {
		switch err := denySockets(); {
		case errors.Is(err, errSeccompUnsupported):
			st.SocketsAllowed = err.Error()
		case err != nil:
			return Status{}, err
		default:
			st.NoSockets = true
		}
	}
	if !st.Enforced() {
		return st, nil
	}
	var rules []landlock.Rule
	if len(p.ReadFiles) > 0 {
		rules = append(rules, landlock.ROFiles(p.ReadFiles...).IgnoreIfMissing())
	}
	if len(p.ReadDirs) > 0 {
		rules = append(rules, landlock.RODirs(p.ReadDirs...).IgnoreIfMissing())
	}
	if len(p.WriteDirs) > 0 {
		rules = append(rules, landlock.RWDirs(p.WriteDirs...))
	}
	// exactly the probed version, not BestEffort: an error rather than a
	// silent downgrade to less than st says
	if err := configs[st.ABI-1].Restrict(rules...); err != nil {
		return Status{}, fmt.Errorf("landlock ABI %d: %w", st.ABI, err)
	}
	return st, nil
}
