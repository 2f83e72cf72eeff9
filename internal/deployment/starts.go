package deployment

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// ReplicaStart is one replica's cold start as the scheduler recorded it:
// Swarm's task times and the runtime's own phases (nil until known).
type ReplicaStart struct {
	TaskID         string     `json:"task_id"`
	Slot           int        `json:"slot"`
	Node           string     `json:"node"`
	ScheduledAt    time.Time  `json:"scheduled_at"`    // Swarm created the task
	StartedAt      *time.Time `json:"started_at"`      // the runtime process started
	FetchSeconds   *float64   `json:"fetch_seconds"`   // artifact download and unpack (or cache hit)
	ArtifactBytes  *int64     `json:"artifact_bytes"`  // downloaded; 0 on a cache hit
	ArtifactCached *bool      `json:"artifact_cached"` // served by the node's artifact cache
	LoadSeconds    *float64   `json:"load_seconds"`
	WarmupSeconds  *float64   `json:"warmup_seconds"`
	ReadyAt        *time.Time `json:"ready_at"`   // the runtime answered ready
	RunningAt      *time.Time `json:"running_at"` // Swarm: healthcheck passed, in DNS
}

// KeepStarts is how many recent starts of a deployment are kept.
const KeepStarts = 50

// RecordStart stores (or completes) one replica start of the deployment
// model names (a Key) and drops its starts beyond the KeepStarts most recent.
func RecordStart(ctx context.Context, q Querier, model string, s ReplicaStart) error {
	_, err := q.Exec(ctx, `INSERT INTO replica_starts (task_id, deployment_id, slot, node, scheduled_at, started_at, fetch_seconds,
			artifact_bytes, artifact_cached, load_seconds, warmup_seconds, ready_at, running_at)
		SELECT $1, d.id, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13 FROM deployments d JOIN models m ON m.id = d.model_id WHERE `+keySQL+` = $2
		ON CONFLICT (task_id) DO UPDATE SET started_at = EXCLUDED.started_at, fetch_seconds = EXCLUDED.fetch_seconds,
			artifact_bytes = EXCLUDED.artifact_bytes, artifact_cached = EXCLUDED.artifact_cached, load_seconds = EXCLUDED.load_seconds,
			warmup_seconds = EXCLUDED.warmup_seconds, ready_at = EXCLUDED.ready_at, running_at = EXCLUDED.running_at`,
		s.TaskID, model, s.Slot, s.Node, s.ScheduledAt, s.StartedAt, s.FetchSeconds, s.ArtifactBytes, s.ArtifactCached,
		s.LoadSeconds, s.WarmupSeconds, s.ReadyAt, s.RunningAt)
	if err != nil {
		return fmt.Errorf("record start of %s: %w", model, err)
	}
	_, err = q.Exec(ctx, `DELETE FROM replica_starts WHERE task_id IN (
		SELECT s.task_id FROM replica_starts s JOIN deployments d ON d.id = s.deployment_id JOIN models m ON m.id = d.model_id
		WHERE `+keySQL+` = $1 ORDER BY s.scheduled_at DESC OFFSET $2)`, model, KeepStarts)
	if err != nil {
		return fmt.Errorf("trim starts of %s: %w", model, err)
	}
	return nil
}

// ColdStarts reads the limit most recent replica starts of the deployment
// with id, newest first.
func ColdStarts(ctx context.Context, q Querier, id int64, limit int) ([]ReplicaStart, error) {
	rows, err := q.Query(ctx, `SELECT task_id, slot, node, scheduled_at, started_at, fetch_seconds, artifact_bytes,
			artifact_cached, load_seconds, warmup_seconds, ready_at, running_at
		FROM replica_starts WHERE deployment_id = $1 ORDER BY scheduled_at DESC LIMIT $2`, id, limit)
	return collect(rows, err, "query cold starts", func(row pgx.CollectableRow) (ReplicaStart, error) {
		var r ReplicaStart
		err := row.Scan(&r.TaskID, &r.Slot, &r.Node, &r.ScheduledAt, &r.StartedAt, &r.FetchSeconds, &r.ArtifactBytes,
			&r.ArtifactCached, &r.LoadSeconds, &r.WarmupSeconds, &r.ReadyAt, &r.RunningAt)
		return r, err
	})
}
