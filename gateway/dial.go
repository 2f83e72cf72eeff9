package gateway

import (
	"net"
	"time"
)

// upstreamDialer dials the replicas. A replica whose node vanishes (power
// cut, network partition) sends no reset: without help, a request written to
// it, or waiting on it, sits there until the request's whole deadline. Two
// kernel mechanisms turn that silence into a connection error within about
// deadPeer, which forward then retries on another replica: keep-alive probes
// on a connection with nothing in flight (a request the replica is working
// on), and TCP_USER_TIMEOUT on written data nobody acknowledges (a request
// sent to a replica that is already gone). A live replica's kernel answers
// both however busy the model is, so slow models are not cut short.
func upstreamDialer(deadPeer time.Duration) *net.Dialer {
	const probes = 3
	// whole seconds: the kernel counts keep-alive times in seconds
	interval := max(time.Second, (deadPeer / (2 * probes)).Truncate(time.Second))
	idle := max(time.Second, (deadPeer - probes*interval).Truncate(time.Second))
	return &net.Dialer{
		Timeout:         2 * time.Second,
		KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: idle, Interval: interval, Count: probes},
		Control:         userTimeout(deadPeer),
	}
}
