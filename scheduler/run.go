package scheduler

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nlpswarm/nlpswarm/internal/deployment"
)

// leaderLockID is the Postgres advisory lock the leading scheduler holds.
const leaderLockID = 4_242_002

// Leader holds the scheduler's advisory lock on a dedicated connection; the
// lock is released if the connection (or the process) dies.
type Leader struct {
	conn *pgxpool.Conn
}

// AcquireLeadership waits until this process holds the lock, polling every
// interval, or ctx ends.
func AcquireLeadership(ctx context.Context, pool *pgxpool.Pool, interval time.Duration) (*Leader, error) {
	for {
		conn, err := pool.Acquire(ctx)
		if err != nil {
			return nil, fmt.Errorf("leader election: %w", err)
		}
		var ok bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, leaderLockID).Scan(&ok); err != nil {
			conn.Release()
			return nil, fmt.Errorf("leader election: %w", err)
		}
		if ok {
			return &Leader{conn: conn}, nil
		}
		conn.Release()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(interval):
		}
	}
}

// Check reports whether the lock's connection is still alive.
func (l *Leader) Check(ctx context.Context) error {
	return l.conn.Ping(ctx)
}

// Release gives the lock up.
func (l *Leader) Release() {
	_, _ = l.conn.Exec(context.Background(), `SELECT pg_advisory_unlock($1)`, leaderLockID)
	l.conn.Release()
}

// Loop reconciles on every NOTIFY and every resync interval until ctx ends
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
	for {
		if err := leader.Check(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("lost leadership: %w", err)
		}
		if err := r.SyncNodes(ctx); err != nil {
			r.Log.Warn("node sync", "err", err)
		}
		res, err := r.Pass(ctx)
		if err != nil {
			r.Log.Warn("reconcile", "err", err)
		} else if res.Created+res.Updated+res.Removed > 0 {
			r.Log.Info("reconciled", "created", res.Created, "updated", res.Updated, "removed", res.Removed, "unchanged", res.Unchanged)
		}
		// wait for a change, but look again soon while replicas converge
		wait := resync
		if err != nil || r.converging(ctx) {
			wait = min(resync, time.Second)
		}
		wctx, cancel := context.WithTimeout(ctx, wait)
		_, werr := listen.Conn().WaitForNotification(wctx)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if werr != nil && !errors.Is(werr, context.DeadlineExceeded) {
			return fmt.Errorf("listen: %w", werr)
		}
	}
}

// converging reports whether any deployment is not yet running as desired.
func (r *Reconciler) converging(ctx context.Context) bool {
	c, err := deployment.Converging(ctx, r.DB)
	return err == nil && c
}
