//go:build !linux

package gateway

import (
	"syscall"
	"time"
)

// userTimeout is Linux-only; elsewhere keep-alive probes alone find dead
// replicas.
func userTimeout(time.Duration) func(network, address string, c syscall.RawConn) error {
	return nil
}
