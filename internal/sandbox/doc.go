// Package sandbox confines the calling process with Linux's Landlock LSM
// (through github.com/landlock-lsm/go-landlock): after Restrict it may read
// only the files and folders its Policy names, write only beneath the
// folders it names, and open no TCP connection or listener; where the
// kernel's Landlock ABI has them, it also may not signal or reach through
// abstract UNIX sockets a process outside its own sandbox (ABI 6) and may
// send no UDP (ABI 10). Landlock needs no privilege, so the apiserver's
// non-root validation child applies it to itself before it opens an
// uploaded model (modelmgr.ServeChild).
//
// Policy.NoSockets adds a seccomp filter (assembled with x/net/bpf, checked
// in its VM by a table test) under which socket and socketpair fail with
// EPERM, as does any system call through another architecture's entry or
// x32's numbering: no new socket of any family, which covers what
// Landlock's network rules leave out below.
//
// What Landlock does not cover, and what is still the child's other
// defences' job (clean environment, close-on-exec, rlimits, the socket
// filter where asked for): descriptors
// opened before Restrict (stdin, stdout, stderr, the Go runtime's cgroup
// files), path lookups and metadata (stat, readlink: names and sizes, not
// contents), connecting to pathname UNIX sockets below ABI 9, UDP below
// ABI 10, multipath TCP sockets (Landlock's TCP rules cover plain TCP only,
// landlock-lsm/linux#54: TestRestrict logs that a sandboxed MPTCP connect
// still succeeds where the kernel enables MPTCP), and the uid's other
// powers the kernel checks elsewhere.
//
// # When Landlock is unavailable
//
// Probe and Restrict report a Status: the ABI version enforced, or why none
// was (a kernel before 5.13, Landlock not enabled at boot, or a seccomp
// profile refusing its system calls; upstream Docker's default profile
// allows them since Engine 23.0 (moby#43199), and Debian 12's docker.io
// 20.10.24 on the project's machines already does: checked by running this
// package's tests in the apiserver's image as its user). Restrict then
// restricts nothing and says so in its Status rather than failing: the
// caller decides whether to run without a sandbox, and must say that it
// does (the apiserver logs it, exports the probed ABI as a metric and
// stores the child's Status with the version).
// A Landlock that is available but fails to apply is an error.
//
// The ABI used is exactly the one the kernel reports (up to the newest the
// library knows, V11), with the library's errata downgrade, so the Status
// never claims more than was enforced. Status and its description are pure;
// Probe and Restrict are the effects.
package sandbox
