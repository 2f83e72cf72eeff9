package gateway

import (
	"net"
	"syscall"
	"testing"
	"time"
)

// TestUpstreamDialerFindsDeadPeers: connections to replicas carry keep-alive
// probes and TCP_USER_TIMEOUT sized by DeadReplicaTimeout, so a replica whose
// node vanished fails the attempt in seconds instead of holding the request
// for its whole deadline (the worker power cut of deployments/chaos measures
// the effect: no request waits the 30 s out).
func TestUpstreamDialerFindsDeadPeers(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	c, err := upstreamDialer(5*time.Second).Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	raw.Control(func(fd uintptr) {
		for name, opt := range map[string][2]int{
			"SO_KEEPALIVE":     {syscall.SOL_SOCKET, syscall.SO_KEEPALIVE},
			"TCP_KEEPIDLE":     {syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE},
			"TCP_KEEPINTVL":    {syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL},
			"TCP_KEEPCNT":      {syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT},
			"TCP_USER_TIMEOUT": {syscall.IPPROTO_TCP, tcpUserTimeout},
		} {
			v, err := syscall.GetsockoptInt(int(fd), opt[0], opt[1])
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
			got[name] = v
		}
	})
	want := map[string]int{"SO_KEEPALIVE": 1, "TCP_KEEPIDLE": 2, "TCP_KEEPINTVL": 1, "TCP_KEEPCNT": 3, "TCP_USER_TIMEOUT": 5000}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %d, want %d (all: %v)", k, got[k], v, got)
		}
	}
	// a dead peer is found within about the timeout: idle + count × interval
	if idle, total := got["TCP_KEEPIDLE"], got["TCP_KEEPIDLE"]+got["TCP_KEEPCNT"]*got["TCP_KEEPINTVL"]; idle < 1 || total > 5 {
		t.Errorf("keep-alive finds a dead peer after %d s", total)
	}
}
