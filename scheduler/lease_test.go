package scheduler

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nlpswarm/nlpswarm/internal/faultproxy"
	"github.com/nlpswarm/nlpswarm/internal/pg/pgtest"
)

// issue 18 item 3: the leader's link to Postgres goes silent (its node lost
// power: no FIN, no RST). With the session advisory lock this held
// leadership until Postgres's TCP noticed, about 2 h; with the lease
// another scheduler leads within the TTL, and the old leader has counted
// its lease lost before the new one holds it.
func TestLeaderLeaseAfterSilentCut(t *testing.T) {
	db := pgtest.New(t, true)
	ctx := context.Background()
	u, _ := url.Parse(db.URL)
	proxy := faultproxy.New(t, u.Host)
	u.Host = proxy.Addr()
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
	got := standby(t, db.Pool, "b", DefaultLeaseTTL/2) // a renewal happens meanwhile
	if err := a.Check(ctx); err != nil {
		t.Fatalf("the leader lost its lease before the cut: %v", err)
	}

	proxy.Freeze()
	cut := time.Now()
	var aLost time.Duration
	select {
	case <-a.Lost():
		aLost = time.Since(cut)
	case b := <-got:
		b.Release()
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

// The leader's process dies (its connection closes, no Release): the
// standby leads at its next try, not at the lease's expiry, since the
// backend the lease names is gone.
func TestLeaderLeaseAfterCrash(t *testing.T) {
	db := pgtest.New(t, true)
	ctx := context.Background()
	a, err := AcquireLease(ctx, db.Pool, LeaseConfig{Poll: 200 * time.Millisecond, Holder: "a"})
	if err != nil {
		t.Fatal(err)
	}
	got := standby(t, db.Pool, "b", time.Second)
	// what SIGKILL does: renewals stop, the connection closes, no release
	a.cancel()
	<-a.done
	a.dropConn()
	crash := time.Now()
	select {
	case b := <-got:
		t.Logf("leader crashed: new leader after %s (TTL %s)", time.Since(crash).Round(10*time.Millisecond), DefaultLeaseTTL)
		b.Release()
	case <-time.After(DefaultLeaseTTL / 3):
		t.Fatalf("no new leader within %s of the crash: waiting for the expiry", DefaultLeaseTTL/3)
	}
}

// standby is a scheduler waiting for the lease as holder (poll 200 ms); it
// must not lead within wait, while another holds the lease.
func standby(t *testing.T, pool *pgxpool.Pool, holder string, wait time.Duration) <-chan *Leader {
	t.Helper()
	got := make(chan *Leader, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	// a lease nobody took from got is released, else its connection keeps
	// the test's pool from closing
	t.Cleanup(func() {
		cancel()
		<-done
		select {
		case b := <-got:
			b.Release()
		default:
		}
	})
	go func() {
		defer close(done)
		if b, err := AcquireLease(ctx, pool, LeaseConfig{Poll: 200 * time.Millisecond, Holder: holder}); err == nil {
			got <- b
		}
	}()
	select {
	case b := <-got:
		b.Release()
		t.Fatal("two schedulers lead at once")
	case <-time.After(wait):
	}
	return got
}
