package scheduler

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nlpswarm/nlpswarm/internal/deployment"
)

// DefaultLeaseTTL is how long the scheduler's leadership lasts without a
// renewal: after a power cut of the leader's node another scheduler leads
// within it (plus one poll interval).
const DefaultLeaseTTL = 15 * time.Second

// Leader holds the scheduler's lease, a row of scheduler_lease whose expiry
// is on Postgres's clock, renewed every TTL/3 over a connection of its own
// whose backend the row names. Another scheduler takes the lease once it
// expired (a power cut: unlike a session advisory lock, held until
// Postgres's TCP notices a dead client, about 2 h, a lease nobody renews runs
// out) or once that backend is gone (the leader's process died: its
// connection closed, so the standby need not wait for the expiry). The
// leader counts its lease as lost TTL after the start of its last successful
// renewal, by its own monotonic clock, never later than Postgres's expiry,
// so it stops acting before anyone else can hold it.
type Leader struct {
	pool   *pgxpool.Pool
	holder string
	ttl    time.Duration
	conn   *pgxpool.Conn // the renewals' connection (the renewal goroutine's)

	mu         sync.Mutex
	validUntil time.Time // local: last renewal's start + ttl
	lostErr    error

	lost   context.Context // done once the lease is lost or released
	cancel context.CancelFunc
	done   chan struct{} // the renewal goroutine ended
}

// LeaseConfig tunes a lease.
type LeaseConfig struct {
	TTL    time.Duration // default DefaultLeaseTTL
	Poll   time.Duration // how often a candidate tries; default TTL/5
	Holder string        // default hostname and a random suffix
}

// AcquireLeadership waits until this process holds the lease (TTL
// DefaultLeaseTTL), trying every interval, or ctx ends.
func AcquireLeadership(ctx context.Context, pool *pgxpool.Pool, interval time.Duration) (*Leader, error) {
	return AcquireLease(ctx, pool, LeaseConfig{Poll: interval})
}

// takeLease takes the lease for holder, naming this connection's backend,
// when it is free, expired, its holder's backend is gone, or it is already
// holder's; it returns the holder afterwards (no row: someone else's).
const takeLease = `INSERT INTO scheduler_lease AS l (name, holder, backend_pid, expires_at)
	VALUES ('leader', $1, pg_backend_pid(), clock_timestamp() + make_interval(secs => $2))
	ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, backend_pid = EXCLUDED.backend_pid, expires_at = EXCLUDED.expires_at
	WHERE l.expires_at < clock_timestamp() OR l.holder = EXCLUDED.holder
		OR NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = l.backend_pid)
	RETURNING holder`

// AcquireLease waits until this process holds the lease, or ctx ends.
func AcquireLease(ctx context.Context, pool *pgxpool.Pool, c LeaseConfig) (*Leader, error) {
	if c.TTL <= 0 {
		c.TTL = DefaultLeaseTTL
	}
	if c.Poll <= 0 {
		c.Poll = c.TTL / 5
	}
	if c.Holder == "" {
		host, _ := os.Hostname()
		b := make([]byte, 4)
		_, _ = rand.Read(b)
		c.Holder = host + "-" + hex.EncodeToString(b)
	}
	l := &Leader{pool: pool, holder: c.Holder, ttl: c.TTL, done: make(chan struct{})}
	for {
		start := time.Now()
		ok, err := l.try(ctx, c.Poll)
		if err != nil {
			l.dropConn()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
		}
		if ok {
			l.validUntil = start.Add(c.TTL)
			l.lost, l.cancel = context.WithCancel(context.Background())
			go l.renew()
			return l, nil
		}
		// a Postgres that does not answer is no reason to stop waiting
		select {
		case <-ctx.Done():
			l.dropConn()
			return nil, ctx.Err()
		case <-time.After(c.Poll):
		}
	}
}

// try runs takeLease on the leader's connection (acquired when it has
// none) within timeout.
func (l *Leader) try(ctx context.Context, timeout time.Duration) (bool, error) {
	qctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if l.conn == nil {
		c, err := l.pool.Acquire(qctx)
		if err != nil {
			return false, fmt.Errorf("leader election: %w", err)
		}
		l.conn = c
	}
	var got string
	err := l.conn.QueryRow(qctx, takeLease, l.holder, l.ttl.Seconds()).Scan(&got)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		// the caller drops the connection (a fresh one next time), a leader
		// only after it stopped counting itself the leader
		return false, fmt.Errorf("leader election: %w", err)
	}
	return got == l.holder, nil
}

// dropConn closes the lease's connection (never back to the pool: its
// backend is named by the lease row).
func (l *Leader) dropConn() {
	if l.conn != nil {
		_ = l.conn.Hijack().Close(context.Background())
		l.conn = nil
	}
}

// renew extends the lease every TTL/3 until it is lost or released.
func (l *Leader) renew() {
	defer close(l.done)
	every := l.ttl / 3
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-l.lost.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		ok, err := l.try(l.lost, every)
		l.mu.Lock()
		switch {
		case ok:
			l.validUntil = start.Add(l.ttl)
		case err == nil:
			l.lostErr = errors.New("the lease is held by another scheduler")
		default:
			// The renewal failed and its connection is about to be closed:
			// once its backend is gone, a standby may take the lease at
			// once (takeLease), so this process stops counting itself the
			// leader first, not at validUntil.
			l.lostErr = fmt.Errorf("lease renewal failed: %w", err)
		}
		lost := l.lostErr != nil
		l.mu.Unlock()
		if lost {
			l.cancel()
			if err != nil {
				l.dropConn()
			}
			return
		}
	}
}

// Check reports whether this process still holds the lease.
func (l *Leader) Check(context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lostErr != nil {
		return l.lostErr
	}
	if !time.Now().Before(l.validUntil) {
		return fmt.Errorf("lease not renewed within %s", l.ttl)
	}
	return nil
}

// Lost is done once the lease is lost (or released).
func (l *Leader) Lost() <-chan struct{} { return l.lost.Done() }

// Release gives the lease up at once, so that another scheduler need not
// wait for it to run out.
func (l *Leader) Release() {
	l.cancel()
	<-l.done
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, _ = l.pool.Exec(ctx, `DELETE FROM scheduler_lease WHERE name = 'leader' AND holder = $1`, l.holder)
	l.dropConn()
}

// passTimeout bounds one reconcile pass (node sync, plan, apply): far above
// a pass's usual second, far below the minutes a frozen leader would cost.
const passTimeout = 90 * time.Second

// Loop reconciles on every NOTIFY, every Swarm node or service event (when
// r.Events is set: a power cut or a drain is seen when Swarm marks the
// node, not at the next resync) and every resync interval, until ctx ends
// or leadership is lost.
func (r *Reconciler) Loop(ctx context.Context, leader *Leader, resync time.Duration) error {
	listen, err := r.DB.Acquire(ctx)
	if err != nil {
		return err
	}
	defer listen.Release()
	if err := deployment.Listen(ctx, listen.Conn()); err != nil {
		return err
	}
	var wake chan struct{}
	if r.Events != nil {
		wake = make(chan struct{}, 1)
		wctx, stopWatch := context.WithCancel(ctx)
		defer stopWatch()
		go WatchSwarm(wctx, r.Events, wake, r.Log)
	}
	for {
		if err := leader.Check(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("lost leadership: %w", err)
		}
		// one pass, bounded: a statement stuck on a lock (a session of a
		// node that lost power, issue 18) or a Docker call that never
		// answers must not freeze the leader while its lease renews
		pctx, endPass := context.WithTimeout(ctx, passTimeout)
		if err := r.SyncNodes(pctx); err != nil {
			r.Log.Warn("node sync", "err", err)
		}
		res, err := r.Pass(pctx)
		if err != nil {
			r.Log.Warn("reconcile", "err", err)
		} else if res.Created+res.Updated+res.Removed > 0 {
			r.Log.Info("reconciled", "created", res.Created, "updated", res.Updated, "removed", res.Removed, "unchanged", res.Unchanged)
		}
		// wait for a change, but look again soon while replicas converge
		wait := resync
		if err != nil || r.converging(pctx) {
			wait = min(resync, time.Second)
		}
		endPass()
		wctx, cancel := context.WithTimeout(ctx, wait)
		stop := context.AfterFunc(leader.lost, cancel) // a lost lease ends the wait
		if wake != nil {
			go func() { // so does a Swarm event
				select {
				case <-wake:
					cancel()
				case <-wctx.Done():
				}
			}()
		}
		_, werr := listen.Conn().WaitForNotification(wctx)
		stop()
		cancel()
		if leader.lost.Err() != nil && ctx.Err() == nil {
			if err := leader.Check(ctx); err != nil {
				return fmt.Errorf("lost leadership: %w", err)
			}
			return errors.New("lost leadership: lease released")
		}
		if ctx.Err() != nil {
			return nil
		}
		if werr != nil && !errors.Is(werr, context.DeadlineExceeded) && !errors.Is(werr, context.Canceled) {
			return fmt.Errorf("listen: %w", werr)
		}
	}
}

// converging reports whether any deployment is not yet running as desired.
func (r *Reconciler) converging(ctx context.Context) bool {
	c, err := deployment.Converging(ctx, r.DB)
	return err == nil && c
}
