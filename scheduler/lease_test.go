package scheduler

import (
	"context"
	"net"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nlpswarm/nlpswarm/internal/pg/pgtest"
)

// silentProxy forwards TCP on loopback to target until frozen: then it
// stops forwarding in both directions without closing anything, as a link
// whose far end lost power (no FIN, no RST, nothing).
type silentProxy struct {
	l      net.Listener
	target string
	frozen atomic.Bool
}

func newSilentProxy(t *testing.T, target string) *silentProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &silentProxy{l: l, target: target}
	var conns []net.Conn
	t.Cleanup(func() {
		l.Close()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			conns = append(conns, c, up)
			go p.copy(up, c)
			go p.copy(c, up)
		}
	}()
	return p
}

// copy forwards src to dst; once frozen, what it reads goes nowhere.
func (p *silentProxy) copy(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			dst.Close()
			return
		}
		if p.frozen.Load() {
			continue
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

// issue 18 item 3: the leader's link to Postgres goes silent (its node lost
// power: no FIN, no RST). With the session advisory lock this held
// leadership until Postgres's TCP noticed, about 2 h; with the lease
// another scheduler leads within the TTL, and the old leader has counted
// its lease lost before the new one holds it.
func TestLeaderLeaseAfterSilentCut(t *testing.T) {
	db := pgtest.New(t, true)
	ctx := context.Background()
	u, _ := url.Parse(db.URL)
	proxy := newSilentProxy(t, u.Host)
	u.Host = proxy.l.Addr().String()
	viaProxy, err := pgxpool.New(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer viaProxy.Close()

	a, err := AcquireLease(ctx, viaProxy, LeaseConfig{Poll: 200 * time.Millisecond, Holder: "a"})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Release()
	got := make(chan *Leader, 1)
	bctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		if b, err := AcquireLease(bctx, db.Pool, LeaseConfig{Poll: 200 * time.Millisecond, Holder: "b"}); err == nil {
			got <- b
		}
	}()
	select {
	case <-got:
		t.Fatal("two schedulers lead at once")
	case <-time.After(DefaultLeaseTTL / 2): // a renewal happened meanwhile
	}
	if err := a.Check(ctx); err != nil {
		t.Fatalf("the leader lost its lease before the cut: %v", err)
	}

	proxy.frozen.Store(true)
	cut := time.Now()
	var aLost time.Duration
	select {
	case <-a.Lost():
		aLost = time.Since(cut)
	case <-got:
		t.Fatal("a new leader while the old one still counted its lease valid")
	case <-time.After(30 * time.Second):
		t.Fatal("the old leader never noticed")
	}
	select {
	case b := <-got:
		took := time.Since(cut)
		defer b.Release()
		t.Logf("link cut silently: old leader stops after %s, new leader after %s (TTL %s)", aLost.Round(100*time.Millisecond), took.Round(100*time.Millisecond), DefaultLeaseTTL)
		if took > 30*time.Second {
			t.Errorf("new leader after %s, want within 30s", took)
		}
		if a.Check(ctx) == nil {
			t.Error("the old leader still counts its lease valid")
		}
	case <-time.After(30*time.Second - aLost):
		t.Fatal("no new leader within 30s of the cut")
	}
}
