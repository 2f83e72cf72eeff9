//go:build !amd64 && !arm64

package sandbox

// auditArch is unknown here: Policy.NoSockets is not enforced (Status says so).
const auditArch = 0
