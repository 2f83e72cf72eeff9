package desired

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/nlpswarm/nlpswarm/internal/pg"
	"github.com/nlpswarm/nlpswarm/modelmgr"
)

// Tx is the part of pgx.Tx (or a pool) the functions use.
type Tx interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Notify signals a change of model's deployment on pg.NotifyDeployments; it
// is delivered when tx commits.
func Notify(ctx context.Context, tx Tx, model string) error {
	_, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, pg.NotifyDeployments, model)
	return err
}

// Change is a new replica count.
type Change struct {
	Replicas int
	Reason   string // why, in words: shown by `nlpswarm status`
	// IfReplicas, when set, applies the change only while the count is still
	// this (the autoscaler's guard against a concurrent scale).
	IfReplicas *int
}

// Scale writes c.Replicas as model's desired replica count, bumps the
// generation and notifies. It reports false when IfReplicas did not match (or
// the deployment is gone meanwhile); without IfReplicas a missing deployment
// is an error wrapping modelmgr.ErrNotFound.
func Scale(ctx context.Context, tx Tx, model string, c Change) (bool, error) {
	if c.Replicas < 0 {
		return false, fmt.Errorf("%w: replicas must be ≥ 0", modelmgr.ErrInvalid)
	}
	tag, err := tx.Exec(ctx, `UPDATE deployments d SET replicas = $2, generation = d.generation + 1, updated_at = now(),
			scaled_at = CASE WHEN d.replicas <> $2 THEN now() ELSE d.scaled_at END,
			scale_reason = CASE WHEN d.replicas <> $2 THEN $3 ELSE d.scale_reason END
		FROM models m WHERE m.id = d.model_id AND m.name = $1 AND ($4::integer IS NULL OR d.replicas = $4)`,
		model, c.Replicas, c.Reason, c.IfReplicas)
	if err != nil {
		return false, err
	}
	if tag.RowsAffected() == 0 {
		if c.IfReplicas != nil {
			return false, nil
		}
		return false, fmt.Errorf("deployment of %s: %w (deploy it first)", model, modelmgr.ErrNotFound)
	}
	return true, Notify(ctx, tx, model)
}

// ManualScale is `nlpswarm scale MODEL n`. On a deployment that is not
// autoscaled it sets the count to n. On an autoscaled one it sets the floor:
// min becomes n (max rises to n if lower) and the count moves into the new
// bounds at once; the autoscaler then works above the floor instead of
// fighting the operator. It returns the replica count written.
func ManualScale(ctx context.Context, tx Tx, model string, n int) (int, error) {
	var cur, lo, hi int
	var id int64
	err := tx.QueryRow(ctx, `SELECT d.id, d.replicas, d.autoscale_min, d.autoscale_max FROM deployments d
		JOIN models m ON m.id = d.model_id WHERE m.name = $1 FOR UPDATE OF d`, model).Scan(&id, &cur, &lo, &hi)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("deployment of %s: %w (deploy it first)", model, modelmgr.ErrNotFound)
	}
	if err != nil {
		return 0, err
	}
	if hi == 0 {
		_, err := Scale(ctx, tx, model, Change{Replicas: n, Reason: "manual scale"})
		return n, err
	}
	hi = max(hi, n)
	if _, err := tx.Exec(ctx, `UPDATE deployments SET autoscale_min = $2, autoscale_max = $3 WHERE id = $1`, id, n, hi); err != nil {
		return 0, err
	}
	want := min(max(cur, n), hi)
	_, err = Scale(ctx, tx, model, Change{Replicas: want, Reason: fmt.Sprintf("manual scale: autoscaler floor set to %d", n)})
	return want, err
}
