package sandbox

import "golang.org/x/sys/unix"

// auditArch is how the kernel names this binary's system call entry in
// seccomp_data.arch.
const auditArch = unix.AUDIT_ARCH_AARCH64
