package gateway

import (
	"net"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestUpstreamDialerFindsDeadPeers: connections to replicas carry keep-alive
// probes and TCP_USER_TIMEOUT sized by DeadReplicaAfter, so a replica whose
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
			"TCP_USER_TIMEOUT": {syscall.IPPROTO_TCP, unix.TCP_USER_TIMEOUT},
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

// blackhole is a loopback address whose listen queue is full and never
// drained: further SYNs are dropped, so a dial there times out, as one to a
// replica on a node that lost power does.
func blackhole(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, _ := syscall.Getsockname(fd)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	// fill the queue
	for i := 0; i < 4; i++ {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			break
		}
		t.Cleanup(func() { c.Close() })
	}
	if c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond); err == nil {
		c.Close()
		t.Skip("this kernel accepts beyond a full listen queue")
	}
	return addr
}

// TestDialTimeoutIsRetried: a dial that times out (the replica's node is
// gone) is a failed attempt, retried on another replica, not the request's
// deadline: found by deployments/chaos, where such requests came back 504
// "did not answer within 30s" a few seconds after a worker's power cut.
func TestDialTimeoutIsRetried(t *testing.T) { eachUpstream(t, testDialTimeoutIsRetried) }

func testDialTimeoutIsRetried(t *testing.T, upstream string) {
	e := newEnv(t, false)
	e.upstream = upstream
	key, _ := e.key(e.account("acme", ""), "inference")
	good := newRuntime(t, "text-classification")
	e.model("sentiment", "text-classification", 0, good)
	e.static["sentiment"] = []string{blackhole(t), good.addr()}
	e.start(Config{EjectAfter: 100})
	var wg sync.WaitGroup
	codes := make(chan int, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes <- e.post(key, "/v1/sentiment/sentiment", `{"text":"x"}`).status
		}()
	}
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 200 {
			t.Errorf("request answered %d with one replica unreachable (dial timeout): want the retry on the other", c)
		}
	}
	if n := metricValue(e.gw.m.retries.WithLabelValues("sentiment")); n == 0 {
		t.Error("no retry counted: the black hole was never tried")
	}
}
