package gateway

import (
	"errors"
	"sync/atomic"
	"time"
)

// cooldown remembers that Redis just failed: for a second afterwards its
// users skip Redis instead of each request waiting out a timeout. The rate
// limiter and the key cache each keep one.
type cooldown struct {
	until atomic.Int64 // unix nanos
	err   atomic.Pointer[error]
}

var errRedisCoolingDown = errors.New("redis failed recently; skipping it for a second")

// trip starts a cooldown of a second after err.
func (c *cooldown) trip(err error) { c.tripFor(err, time.Second) }

// tripFor starts a cooldown of d after err.
func (c *cooldown) tripFor(err error, d time.Duration) {
	c.err.Store(&err)
	c.until.Store(time.Now().Add(d).UnixNano())
}

// active reports whether Redis is to be skipped now. Several calls on every
// request: without a cooldown (until zero, once one has ended) it reads no
// clock.
func (c *cooldown) active() bool {
	until := c.until.Load()
	if until == 0 {
		return false
	}
	if time.Now().UnixNano() < until {
		return true
	}
	c.until.CompareAndSwap(until, 0) // (a trip meanwhile stores another)
	return false
}

// cause is the error that started the last cooldown.
func (c *cooldown) cause() error {
	if p := c.err.Load(); p != nil {
		return *p
	}
	return errRedisCoolingDown
}
