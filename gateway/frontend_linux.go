package gateway

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// peerGone: the client closed or reset the connection (a peek that reads
// nothing, or an error other than no data yet). Bytes waiting (a pipelined
// request) leave them there and count as alive.
func peerGone(conn net.Conn) bool {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	gone := false
	_ = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		switch {
		case err == unix.EAGAIN || err == unix.EINTR:
		case err != nil:
			gone = true
		case n == 0:
			gone = true
		}
		return true
	})
	return gone
}
