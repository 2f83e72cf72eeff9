package deployment

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// DeployedSQL is "model m has a deployment" as a column of a query over
// models aliased m (modelmgr's model listing).
const DeployedSQL = `EXISTS (SELECT 1 FROM deployments d WHERE d.model_id = m.id)`

// List reads desired and observed state of model's deployment, or of every
// deployment when model is "", by model name.
func List(ctx context.Context, q Querier, model string) ([]Record, error) {
	rows, err := q.Query(ctx, `SELECT d.id, m.name, d.version, d.replicas, d.cpus, d.memory_bytes, d.memory_reservation_bytes,
		d.gpus, d.gpu_memory_bytes, d.placement_labels, d.generation, d.observed_generation, d.status,
		d.status_message, d.observed, d.updated_at, d.observed_at, d.autoscale_min, d.autoscale_max,
		d.autoscale_target_inflight, d.autoscale_scale_down_delay_ms, d.autoscale_idle_to_zero_ms, d.scaled_at, d.scale_reason,
		d.backend FROM deployments d JOIN models m ON m.id = d.model_id WHERE $1 = '' OR m.name = $1 ORDER BY m.name`, model)
	return collect(rows, err, "query deployments", func(row pgx.CollectableRow) (Record, error) {
		var r Record
		var labels, observed []byte
		var downMS, idleMS int64
		a := &r.Autoscale
		if err := row.Scan(&r.ID, &r.Model, &r.Version, &r.Replicas, &r.CPUs, &r.MemoryBytes, &r.MemoryReservation, &r.GPUs,
			&r.GPUMemory, &labels, &r.Generation, &r.ObservedGeneration, &r.Status, &r.StatusMessage,
			&observed, &r.UpdatedAt, &r.ObservedAt, &a.Min, &a.Max, &a.TargetInflight, &downMS, &idleMS,
			&r.ScaledAt, &r.ScaleReason, &r.Backend); err != nil {
			return r, err
		}
		_ = json.Unmarshal(labels, &r.Labels)
		_ = json.Unmarshal(observed, &r.Observed)
		if r.Observed.Tasks == nil {
			r.Observed.Tasks = []TaskState{}
		}
		a.ScaleDownDelay, a.IdleToZero = time.Duration(downMS)*time.Millisecond, time.Duration(idleMS)*time.Millisecond
		return r, nil
	})
}

// Get reads model's deployment; ErrNotFound when it has none.
func Get(ctx context.Context, q Querier, model string) (Record, error) {
	if model == "" {
		return Record{}, fmt.Errorf("deployment of %q: %w", model, ErrNotFound)
	}
	rs, err := List(ctx, q, model)
	if err != nil {
		return Record{}, err
	}
	if len(rs) == 0 {
		return Record{}, fmt.Errorf("deployment of %s: %w", model, ErrNotFound)
	}
	return rs[0], nil
}

// LoadDesired reads every deployment with its model and version, by model
// name: the reconciler's input.
func LoadDesired(ctx context.Context, q Querier) ([]Desired, error) {
	rows, err := q.Query(ctx, `SELECT m.name, m.task, d.version, v.digest, v.size_bytes, d.replicas, d.cpus,
			d.memory_bytes, d.memory_reservation_bytes, d.gpus, d.gpu_memory_bytes, d.placement_labels, d.backend, d.generation, d.format
		FROM deployments d JOIN models m ON m.id = d.model_id
		JOIN model_versions v ON v.model_id = d.model_id AND v.version = d.version ORDER BY m.name`)
	return collect(rows, err, "load deployments", func(row pgx.CollectableRow) (Desired, error) {
		var d Desired
		err := row.Scan(&d.Model, &d.Task, &d.Version, &d.Digest, &d.SizeBytes, &d.Replicas, &d.CPUs,
			&d.MemoryBytes, &d.MemoryReservation, &d.GPUs, &d.GPUMemory, &d.Labels, &d.Backend, &d.Generation, &d.Format)
		return d, err
	})
}

// Autoscaled is an autoscaled deployment as the autoscaler reads it.
type Autoscaled struct {
	Model      string
	Replicas   int
	Autoscale  Autoscale
	SinceScale time.Duration // since the count last changed, by anyone
}

// ListAutoscaled reads the autoscaled deployments (only model's when model
// is not "").
func ListAutoscaled(ctx context.Context, q Querier, model string) ([]Autoscaled, error) {
	rows, err := q.Query(ctx, `SELECT m.name, d.replicas, d.autoscale_min, d.autoscale_max, d.autoscale_target_inflight,
			d.autoscale_scale_down_delay_ms, d.autoscale_idle_to_zero_ms, EXTRACT(EPOCH FROM now() - d.scaled_at)::float8
		FROM deployments d JOIN models m ON m.id = d.model_id
		WHERE d.autoscale_max > 0 AND ($1 = '' OR m.name = $1) ORDER BY m.name`, model)
	return collect(rows, err, "load autoscaled deployments", func(row pgx.CollectableRow) (Autoscaled, error) {
		var d Autoscaled
		var down, idle int64
		var since float64
		a := &d.Autoscale
		err := row.Scan(&d.Model, &d.Replicas, &a.Min, &a.Max, &a.TargetInflight, &down, &idle, &since)
		a.ScaleDownDelay, a.IdleToZero = time.Duration(down)*time.Millisecond, time.Duration(idle)*time.Millisecond
		d.SinceScale = time.Duration(since * float64(time.Second))
		return d, err
	})
}

// Route is a deployed model as the gateway routes it.
type Route struct {
	ModelID    int64
	Model      string
	Task       string
	Private    bool
	Owner      int64  // owner account; 0 when none
	Autoscaled bool   // may be at zero replicas: a request is held while one starts
	Replicas   int    // desired replicas (the autoscaler's count when autoscaled)
	Format     string // the deployed version's (FormatONNX, FormatGGUF): the runtime its replicas run
}

// Routable lists the models the gateway serves: deployed with replicas, or
// autoscaled (a model at zero still answers, from a replica started for it).
func Routable(ctx context.Context, q Querier) ([]Route, error) {
	rows, err := q.Query(ctx, `SELECT m.id, m.name, m.task, m.visibility = 'private', COALESCE(m.owner_account_id, 0), d.autoscale_max > 0, d.replicas, d.format
		FROM models m JOIN deployments d ON d.model_id = m.id
		WHERE d.replicas > 0 OR d.autoscale_max > 0 ORDER BY m.name`)
	return collect(rows, err, "load routable models", func(row pgx.CollectableRow) (Route, error) {
		var r Route
		return r, row.Scan(&r.ModelID, &r.Model, &r.Task, &r.Private, &r.Owner, &r.Autoscaled, &r.Replicas, &r.Format)
	})
}

// Converging reports whether any deployment is not yet running as desired.
func Converging(ctx context.Context, q Querier) (bool, error) {
	var n int
	if err := q.QueryRow(ctx, `SELECT count(*) FROM deployments WHERE status <> 'running' OR observed_generation < generation`).Scan(&n); err != nil {
		return false, fmt.Errorf("converging: %w", err)
	}
	return n > 0, nil
}
