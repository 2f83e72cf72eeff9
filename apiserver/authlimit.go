package apiserver

import (
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"golang.org/x/time/rate"
)

// authFailures slows down guessing of the admin and internal tokens: each
// client address may fail authFailureBurst times, then one more time every
// authFailureEvery; beyond that its token checks are refused with 429 and
// Retry-After. The right token always passes, throttled address or not:
// the throttle must not let a stranger behind the same NAT or proxy lock
// the admin out (issue 17); a guesser gains nothing from that, since a
// wrong token is refused either way and the tokens are 256-bit random
// values (make up), out of reach of online guessing. Successful checks cost
// nothing. The address is the connection's (the stack publishes the
// backoffice in host mode, so it is the client's), never a forwarded-for
// header, which the client writes itself.
type authFailures struct {
	mu    sync.Mutex
	every time.Duration
	burst int
	addrs map[string]*rate.Limiter
	now   func() time.Time
}

const (
	authFailureBurst = 10
	authFailureEvery = 6 * time.Second // 10 a minute once the burst is spent
	authFailureAddrs = 10000           // addresses remembered at most
)

func newAuthFailures() *authFailures {
	return &authFailures{every: authFailureEvery, burst: authFailureBurst, addrs: map[string]*rate.Limiter{}, now: time.Now}
}

// wait is how long addr must wait before its next token check (0: now).
func (a *authFailures) wait(addr string) time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	l := a.addrs[addr]
	if l == nil {
		return 0
	}
	now := a.now()
	if t := l.TokensAt(now); t < 1 {
		return time.Duration(math.Ceil((1 - t) * float64(a.every)))
	}
	return 0
}

// failed counts a failed check from addr.
func (a *authFailures) failed(addr string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	l := a.addrs[addr]
	if l == nil {
		if len(a.addrs) >= authFailureAddrs {
			a.forgetRested(now)
		}
		l = rate.NewLimiter(rate.Every(a.every), a.burst)
		a.addrs[addr] = l
	}
	l.AllowN(now, 1)
}

// forgetRested drops the addresses whose budget is whole again; if that
// frees nothing (a flood from many addresses), it starts over rather than
// grow without bound.
func (a *authFailures) forgetRested(now time.Time) {
	for k, l := range a.addrs {
		if l.TokensAt(now) >= float64(a.burst) {
			delete(a.addrs, k)
		}
	}
	if len(a.addrs) >= authFailureAddrs {
		clear(a.addrs)
	}
}

// refuseIfGuessing answers 429 when c's address spent its failures, and
// reports whether it did.
func (s *Server) refuseIfGuessing(c *gin.Context, page bool) bool {
	d := s.authFails.wait(c.RemoteIP())
	if d <= 0 {
		return false
	}
	secs := int(math.Ceil(d.Seconds()))
	c.Header("Retry-After", strconv.Itoa(secs))
	s.log.Warn("token check refused: too many failures from this address", "remote", c.RemoteIP(), "retry_after_s", secs)
	if page {
		s.render(c, http.StatusTooManyRequests, "login.html", &view{Title: "Log in", Data: localNext(c.PostForm("next")),
			Error: &viewError{Message: "Too many wrong tokens from your address: try again in " + strconv.Itoa(secs) + " s."}})
		c.Abort()
		return true
	}
	abort(c, http.StatusTooManyRequests, "too_many_attempts", "too many failed token checks from this address; retry after "+strconv.Itoa(secs)+" s")
	return true
}
