package sandbox

import (
	"errors"
	"fmt"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// seccomp_data's layout (linux/seccomp.h): the system call number, then
// the architecture it was made through.
const (
	seccompNrOffset   = 0
	seccompArchOffset = 4
	// x32 system calls on x86-64 carry this bit in their number
	x32SyscallBit = 0x40000000
)

// noSocketsFilter is the seccomp program of Policy.NoSockets: socket and
// socketpair fail with EPERM; so does every system call made through
// another architecture than this binary's (the i386 entry point on x86-64,
// whose socketcall a filter on native numbers would not see) or through
// x32's numbering. Everything else is allowed: this filter only adds to
// Landlock what its network rules leave out (multipath TCP, UDP before ABI
// 10, UNIX sockets before ABI 9, raw and netlink sockets). Without
// protection from a new socket, a process keeps the ones it holds.
func noSocketsFilter(auditArch uint32) ([]bpf.RawInstruction, error) {
	deny := uint32(unix.SECCOMP_RET_ERRNO) | uint32(unix.EPERM)
	allow := uint32(unix.SECCOMP_RET_ALLOW)
	prog := []bpf.Instruction{
		bpf.LoadAbsolute{Off: seccompArchOffset, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: auditArch, SkipTrue: 1},
		bpf.RetConstant{Val: deny},
		bpf.LoadAbsolute{Off: seccompNrOffset, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: x32SyscallBit, SkipFalse: 1},
		bpf.RetConstant{Val: deny},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(unix.SYS_SOCKET), SkipFalse: 1},
		bpf.RetConstant{Val: deny},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(unix.SYS_SOCKETPAIR), SkipFalse: 1},
		bpf.RetConstant{Val: deny},
		bpf.RetConstant{Val: allow},
	}
	return bpf.Assemble(prog)
}

// errSeccompUnsupported is a kernel without seccomp filters or an
// architecture this package has no number for.
var errSeccompUnsupported = errors.New("seccomp filters unavailable")

// denySockets installs noSocketsFilter on every thread of this process,
// for good (no_new_privs is set first, as the kernel requires of an
// unprivileged filter, and synchronised to every thread with it).
func denySockets() error {
	if auditArch == 0 {
		return fmt.Errorf("%w: no audit architecture for %s", errSeccompUnsupported, runtime.GOARCH)
	}
	raw, err := noSocketsFilter(auditArch)
	if err != nil {
		return fmt.Errorf("assemble the socket filter: %w", err)
	}
	filter := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		filter[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	fprog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	if _, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&fprog))); e != 0 {
		// EINVAL, ENOSYS: no seccomp filters in this kernel; EPERM, EACCES:
		// a seccomp profile (a container's) refuses seccomp itself
		if e == syscall.EINVAL || e == syscall.ENOSYS || e == syscall.EPERM || e == syscall.EACCES {
			return fmt.Errorf("%w: %v", errSeccompUnsupported, e)
		}
		return fmt.Errorf("seccomp: %w", e)
	}
	runtime.KeepAlive(filter)
	return nil
}
