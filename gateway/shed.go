package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Load shedding (issue 17 finding 5): one customer must not exhaust the
// gateway. Three guards, none of them on a lock of the common path:
//
//   - in-flight requests per API key: an atomic counter that the KeyStore
//     hands out with the key (Key.inflight, one per key ID, made when the
//     key is cached, so a request allocates nothing for it); beyond
//     MaxInflightPerKey, 429 too_many_inflight;
//   - in-flight body bytes overall: one atomic counter of the bodies being
//     read or held; a request reserves its declared length (the body cap when
//     it declares none) before reading; beyond MaxInflightBytes, 503
//     overloaded;
//   - 401s per remote address: a token bucket per address (a bounded
//     table), consulted only when a key is not in the positive cache, so a
//     flood of unknown keys costs no Postgres query once its bucket is empty
//     and valid keys, cached, are never throttled.

// inflightBytes is the gateway-wide count of body bytes reserved by
// requests in progress.
type inflightBytes struct {
	n   atomic.Int64
	max int64
}

// reserve takes n bytes, or none when that would pass the cap.
func (b *inflightBytes) reserve(n int64) bool {
	if b.n.Add(n) > b.max {
		b.n.Add(-n)
		return false
	}
	return true
}

func (b *inflightBytes) release(n int64) { b.n.Add(-n) }

// acquireKey counts one more request in flight for key k, or refuses when
// the key already has max (k.inflight nil: not counted, always admitted).
func acquireKey(k *Key, max int32) bool {
	if k.inflight == nil {
		return true
	}
	if k.inflight.Add(1) > max {
		k.inflight.Add(-1)
		return false
	}
	return true
}

func releaseKey(k *Key) {
	if k.inflight != nil {
		k.inflight.Add(-1)
	}
}

// defaultInflightBytes is a quarter of the Go memory limit when one is set
// (GOMEMLIMIT or the gateway role's cgroup-derived limit), else 256 MiB.
func defaultInflightBytes() int64 {
	if lim := debug.SetMemoryLimit(-1); lim > 0 && lim < math.MaxInt64 {
		return max(lim/4, 1<<20)
	}
	return 256 << 20
}

// addrThrottle is a token bucket of 401 answers per remote address.
type addrThrottle struct {
	every rate.Limit
	burst int
	size  int

	mu    sync.Mutex
	addrs map[string]*rate.Limiter
}

func newAddrThrottle(perSecond float64, burst, size int) *addrThrottle {
	return &addrThrottle{every: rate.Limit(perSecond), burst: burst, size: size, addrs: map[string]*rate.Limiter{}}
}

// blocked says whether addr has spent its 401s.
func (t *addrThrottle) blocked(addr string, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	l, ok := t.addrs[addr]
	return ok && l.TokensAt(now) < 1
}

// charge counts one 401 for addr. A full table drops the addresses whose
// bucket is full again, and if none is, starts over: bounded memory, at
// worst a flooder's bucket refilled early.
func (t *addrThrottle) charge(addr string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	l, ok := t.addrs[addr]
	if !ok {
		if len(t.addrs) >= t.size {
			for a, x := range t.addrs {
				if x.TokensAt(now) >= float64(t.burst) {
					delete(t.addrs, a)
				}
			}
			if len(t.addrs) >= t.size {
				clear(t.addrs)
			}
		}
		l = rate.NewLimiter(t.every, t.burst)
		t.addrs[addr] = l
	}
	l.AllowN(now, 1)
}

// remoteHost is the address part of a RemoteAddr (no allocation).
func remoteHost(remote string) string {
	if h, _, err := net.SplitHostPort(remote); err == nil {
		return h
	}
	return remote
}

// inferTexts counts the texts of an Open Inference Protocol request: the
// elements of its BYTES input "text" (its shape's product, which the runtime
// checks against the data). A body that does not parse counts one text: the
// runtime refuses it, and the attempt is metered.
func inferTexts(body []byte) (int, error) {
	var req struct {
		Inputs []struct {
			Name  string          `json:"name"`
			Shape []int64         `json:"shape"`
			Data  json.RawMessage `json:"data"`
		} `json:"inputs"`
	}
	if err := json.NewDecoder(bytes.NewReader(body)).Decode(&req); err != nil {
		return 1, nil
	}
	for _, in := range req.Inputs {
		if in.Name != "text" {
			continue
		}
		n := int64(1)
		for _, d := range in.Shape {
			if d < 0 || (d > 0 && n > math.MaxInt32/d) {
				return 0, errors.New(`input "text": shape out of range`)
			}
			n *= d
		}
		if len(in.Shape) == 0 {
			n = 1
		}
		return int(max(n, 1)), nil
	}
	return 1, nil
}

// checkInferTexts applies the task API's text limit to an infer body and
// returns the count to meter.
func checkInferTexts(body []byte, maxTexts int) (int, error) {
	n, err := inferTexts(body)
	if err != nil {
		return 0, err
	}
	if maxTexts > 0 && n > maxTexts {
		return n, fmt.Errorf(`input "text" has %d texts; at most %d per request`, n, maxTexts)
	}
	return n, nil
}
