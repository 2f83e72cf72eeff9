package gateway

import (
	"math/rand/v2"
	"net/http"
	"sync/atomic"
	"time"
)

// Upstream is one runtime replica. Its counters are updated without locks on
// the request path.
type Upstream struct {
	Addr     string // host:port
	inflight atomic.Int64
	fails    atomic.Int32 // consecutive failures
	ejected  atomic.Bool
	probing  atomic.Bool
	lastFail atomic.Int64 // unix nanos
	conns    atomic.Pointer[connPool]
}

// NewUpstream returns a healthy upstream at addr.
func NewUpstream(addr string) *Upstream { return &Upstream{Addr: addr} }

// Inflight is the number of requests now outstanding on u.
func (u *Upstream) Inflight() int64 { return u.inflight.Load() }

// Available reports whether u may take requests (not ejected).
func (u *Upstream) Available() bool { return !u.ejected.Load() }

// markSuccess resets the failure count.
func (u *Upstream) markSuccess() { u.fails.Store(0) }

// markFailure counts one failure and ejects u once threshold consecutive
// failures are reached; it reports whether this call ejected it.
func (u *Upstream) markFailure(threshold int) bool {
	u.lastFail.Store(time.Now().UnixNano())
	n := u.fails.Add(1)
	if threshold > 0 && int(n) >= threshold {
		return u.ejected.CompareAndSwap(false, true)
	}
	return false
}

// Policy picks one upstream from a pool, in the style of Caddy's selection
// policies. It gets only the candidates (available and not yet tried) and
// returns nil when it has none.
type Policy interface {
	Select(pool []*Upstream, r *http.Request) *Upstream
}

// LeastOutstanding is least-outstanding-requests with power-of-two random
// choices: two distinct candidates drawn at random, the one with fewer
// requests in flight wins (ties to the first).
type LeastOutstanding struct{}

// Select implements Policy.
func (LeastOutstanding) Select(pool []*Upstream, _ *http.Request) *Upstream {
	switch len(pool) {
	case 0:
		return nil
	case 1:
		return pool[0]
	}
	i := rand.IntN(len(pool))
	j := rand.IntN(len(pool) - 1)
	if j >= i {
		j++
	}
	a, b := pool[i], pool[j]
	if b.Inflight() < a.Inflight() {
		return b
	}
	return a
}

// RoundRobin cycles through the candidates.
type RoundRobin struct{ n atomic.Uint64 }

// Select implements Policy.
func (p *RoundRobin) Select(pool []*Upstream, _ *http.Request) *Upstream {
	if len(pool) == 0 {
		return nil
	}
	return pool[int(p.n.Add(1)-1)%len(pool)]
}

// candidates returns the available upstreams of pool, minus the excluded one.
func candidates(pool []*Upstream, exclude *Upstream) []*Upstream {
	out := make([]*Upstream, 0, len(pool))
	for _, u := range pool {
		if u != exclude && u.Available() {
			out = append(out, u)
		}
	}
	return out
}

// Pool is the replica set of one model; Set swaps it atomically.
type Pool struct {
	ups atomic.Pointer[[]*Upstream]
}

// Upstreams returns the current replica set (do not modify it).
func (p *Pool) Upstreams() []*Upstream {
	if v := p.ups.Load(); v != nil {
		return *v
	}
	return nil
}

// Set replaces the replica set with addrs, keeping the state (in-flight
// count, health) of replicas already known. It reports whether the set changed.
func (p *Pool) Set(addrs []string) bool {
	old := p.Upstreams()
	byAddr := make(map[string]*Upstream, len(old))
	for _, u := range old {
		byAddr[u.Addr] = u
	}
	next := make([]*Upstream, 0, len(addrs))
	seen := map[string]bool{}
	changed := len(addrs) != len(old)
	for _, a := range addrs {
		if seen[a] {
			continue
		}
		seen[a] = true
		if u, ok := byAddr[a]; ok {
			next = append(next, u)
		} else {
			changed = true
			next = append(next, NewUpstream(a))
		}
	}
	if changed || len(next) != len(old) {
		p.ups.Store(&next)
		for _, u := range old { // replicas gone: their kept-alive connections too
			if c := u.conns.Load(); c != nil && !seen[u.Addr] {
				c.close()
			}
		}
		return true
	}
	return false
}
