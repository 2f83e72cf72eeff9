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
const DeployedSQL = `EXISTS (SELECT 1 FROM deployments d WHERE d.model_id = m.id AND d.track = 'stable')`

// List reads desired and observed state of model's deployment, or of every
// deployment when model is "", by model name: the stable tracks (a model's
// canary is read with GetCanary or ListCanaries).
func List(ctx context.Context, q Querier, model string) ([]Record, error) {
	return list(ctx, q, model, TrackStable)
}

// ListCanaries reads the canary rows (model's, or every one when model is
// ""), routed or retired, by model name.
func ListCanaries(ctx context.Context, q Querier, model string) ([]Record, error) {
	return list(ctx, q, model, TrackCanary)
}

// GetCanary reads model's canary row (routed or retired); ErrNotFound when
// it has none.
func GetCanary(ctx context.Context, q Querier, model string) (Record, error) {
	rs, err := list(ctx, q, model, TrackCanary)
	if err != nil {
		return Record{}, err
	}
	if model == "" || len(rs) == 0 {
		return Record{}, fmt.Errorf("canary of %s: %w", model, ErrNotFound)
	}
	return rs[0], nil
}

func list(ctx context.Context, q Querier, model, track string) ([]Record, error) {
	rows, err := q.Query(ctx, `SELECT d.id, m.name, d.track, d.version, d.replicas, d.cpus, d.memory_bytes, d.memory_reservation_bytes,
		d.gpus, d.gpu_memory_bytes, d.placement_labels, d.generation, d.observed_generation, d.status,
		d.status_message, d.observed, d.updated_at, d.observed_at, d.autoscale_min, d.autoscale_max,
		d.autoscale_target_inflight, d.autoscale_scale_down_delay_ms, d.autoscale_idle_to_zero_ms, d.scaled_at, d.scale_reason,
		d.backend, d.mode, d.weight, d.sticky, COALESCE(d.rollback_max_error_rate, 0), COALESCE(d.rollback_max_p99_ms, 0),
		d.rollback_window_s, d.rollout_state, d.rollout_reason, d.retired_at
		FROM deployments d JOIN models m ON m.id = d.model_id WHERE ($1 = '' OR m.name = $1) AND d.track = $2 ORDER BY m.name`, model, track)
	return collect(rows, err, "query deployments", func(row pgx.CollectableRow) (Record, error) {
		var r Record
		var labels, observed []byte
		var downMS, idleMS int64
		var c Canary
		var p99MS float64
		var windowS int
		a := &r.Autoscale
		if err := row.Scan(&r.ID, &r.Model, &r.Track, &r.Version, &r.Replicas, &r.CPUs, &r.MemoryBytes, &r.MemoryReservation, &r.GPUs,
			&r.GPUMemory, &labels, &r.Generation, &r.ObservedGeneration, &r.Status, &r.StatusMessage,
			&observed, &r.UpdatedAt, &r.ObservedAt, &a.Min, &a.Max, &a.TargetInflight, &downMS, &idleMS,
			&r.ScaledAt, &r.ScaleReason, &r.Backend, &c.Mode, &c.Weight, &c.Sticky, &c.Rollback.MaxErrorRate, &p99MS,
			&windowS, &c.State, &c.Reason, &c.RetiredAt); err != nil {
			return r, err
		}
		_ = json.Unmarshal(labels, &r.Labels)
		_ = json.Unmarshal(observed, &r.Observed)
		if r.Observed.Tasks == nil {
			r.Observed.Tasks = []TaskState{}
		}
		a.ScaleDownDelay, a.IdleToZero = time.Duration(downMS)*time.Millisecond, time.Duration(idleMS)*time.Millisecond
		if r.Track == TrackCanary {
			c.Rollback.MaxP99 = time.Duration(p99MS * float64(time.Millisecond))
			c.Rollback.Window = time.Duration(windowS) * time.Second
			r.Canary = &c
		}
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

// serviceWantedSQL is "the deployment aliased d has a service": every
// stable row, and a canary row while routed or, once retired, for Drain
// after it left the routing.
var serviceWantedSQL = fmt.Sprintf(`(d.track = 'stable' OR d.rollout_state IN ('active', 'promoting')
	OR d.retired_at > now() - interval '%d milliseconds')`, Drain.Milliseconds())

// LoadDesired reads every deployment that has a service (every stable one,
// a canary while routed and for Drain after) with its model and version, by
// model name and track: the reconciler's input.
func LoadDesired(ctx context.Context, q Querier) ([]Desired, error) {
	rows, err := q.Query(ctx, `SELECT m.name, d.track, m.task, d.version, v.digest, v.size_bytes, d.replicas, d.cpus,
			d.memory_bytes, d.memory_reservation_bytes, d.gpus, d.gpu_memory_bytes, d.placement_labels, d.backend, d.generation, d.format
		FROM deployments d JOIN models m ON m.id = d.model_id
		JOIN model_versions v ON v.model_id = d.model_id AND v.version = d.version WHERE `+serviceWantedSQL+` ORDER BY m.name, d.track DESC`)
	return collect(rows, err, "load deployments", func(row pgx.CollectableRow) (Desired, error) {
		var d Desired
		err := row.Scan(&d.Model, &d.Track, &d.Task, &d.Version, &d.Digest, &d.SizeBytes, &d.Replicas, &d.CPUs,
			&d.MemoryBytes, &d.MemoryReservation, &d.GPUs, &d.GPUMemory, &d.Labels, &d.Backend, &d.Generation, &d.Format)
		return d, err
	})
}

// Autoscaled is an autoscaled deployment as the autoscaler reads it.
type Autoscaled struct {
	Model string
	Track string // TrackStable or TrackCanary: each is scaled on its own bounds
	// Share is the part of the model's traffic this track gets: 1 without
	// a canary; weight/100 for a canary and 1 - weight/100 for its stable
	// beside it; 1 for a shadow (a copy of everything) and its stable. The
	// autoscaler scales the model's load figures by it, so that each track
	// is sized on its own bounds for the traffic it serves.
	Share      float64
	Replicas   int
	Autoscale  Autoscale
	SinceScale time.Duration // since the count last changed, by anyone
}

// Key names d among every deployment (Key(Model, Track)).
func (d Autoscaled) Key() string { return Key(d.Model, d.Track) }

// ListAutoscaled reads the autoscaled deployments (only model's when model
// is not ""), a routed canary beside its stable one, by model and track.
func ListAutoscaled(ctx context.Context, q Querier, model string) ([]Autoscaled, error) {
	rows, err := q.Query(ctx, `SELECT m.name, d.track, CASE WHEN d.track = 'canary' THEN CASE WHEN d.mode = 'shadow' THEN 1 ELSE d.weight / 100 END
			ELSE 1 - COALESCE((SELECT c.weight / 100 FROM deployments c WHERE c.model_id = d.model_id AND c.track = 'canary'
				AND c.mode = 'canary' AND c.rollout_state IN ('active', 'promoting')), 0) END, d.replicas, d.autoscale_min, d.autoscale_max, d.autoscale_target_inflight,
			d.autoscale_scale_down_delay_ms, d.autoscale_idle_to_zero_ms, EXTRACT(EPOCH FROM now() - d.scaled_at)::float8
		FROM deployments d JOIN models m ON m.id = d.model_id
		WHERE d.autoscale_max > 0 AND ($1 = '' OR m.name = $1) AND (d.track = 'stable' OR d.rollout_state IN ('active', 'promoting'))
		ORDER BY m.name, d.track DESC`, model)
	return collect(rows, err, "load autoscaled deployments", func(row pgx.CollectableRow) (Autoscaled, error) {
		var d Autoscaled
		var down, idle int64
		var since float64
		a := &d.Autoscale
		err := row.Scan(&d.Model, &d.Track, &d.Share, &d.Replicas, &a.Min, &a.Max, &a.TargetInflight, &down, &idle, &since)
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
	Version    int    // the stable deployment's version
	// Canary is the model's routed canary (rollout active or promoting),
	// nil when none: its replicas are ServiceName(Model, TrackCanary)'s.
	Canary *CanaryRoute
}

// Routable lists the models the gateway serves: deployed with replicas, or
// autoscaled (a model at zero still answers, from a replica started for it),
// each with its routed canary. A canary is routed once the scheduler has
// seen its service run its generation (routed_at, set by WriteStatus,
// which notifies then; it stays set through scaling and lost replicas):
// until then its service may still hold the tasks of the canary it
// replaces (a rollback's or promote's drain, taken over by a rolling
// update), whose answers would carry the new version's name and figures.
func Routable(ctx context.Context, q Querier) ([]Route, error) {
	rows, err := q.Query(ctx, `SELECT m.id, m.name, m.task, m.visibility = 'private', COALESCE(m.owner_account_id, 0), d.autoscale_max > 0, d.replicas, d.format,
			d.version, c.version, c.mode, c.weight, c.sticky, c.replicas, c.autoscale_max > 0, c.format
		FROM models m JOIN deployments d ON d.model_id = m.id AND d.track = 'stable'
		LEFT JOIN deployments c ON c.model_id = m.id AND c.track = 'canary' AND c.rollout_state IN ('active', 'promoting')
			AND c.routed_at IS NOT NULL
		WHERE d.replicas > 0 OR d.autoscale_max > 0 ORDER BY m.name`)
	return collect(rows, err, "load routable models", func(row pgx.CollectableRow) (Route, error) {
		var r Route
		var cv, creps *int
		var cmode, cformat *string
		var cweight *float64
		var csticky, cauto *bool
		err := row.Scan(&r.ModelID, &r.Model, &r.Task, &r.Private, &r.Owner, &r.Autoscaled, &r.Replicas, &r.Format,
			&r.Version, &cv, &cmode, &cweight, &csticky, &creps, &cauto, &cformat)
		if err == nil && cv != nil {
			r.Canary = &CanaryRoute{Version: *cv, Mode: *cmode, Weight: *cweight, Sticky: *csticky, Replicas: *creps,
				Autoscaled: *cauto, Format: *cformat}
		}
		return r, err
	})
}

// Converging reports whether any deployment is not yet running as desired,
// or a retired canary's service is still to be removed after its drain.
func Converging(ctx context.Context, q Querier) (bool, error) {
	var n int
	if err := q.QueryRow(ctx, `SELECT count(*) FROM deployments WHERE ((track = 'stable' OR rollout_state IN ('active', 'promoting')) AND (status <> 'running' OR observed_generation < generation)) OR retired_at > now() - $1 * interval '1 millisecond'`, (Drain + 5*time.Second).Milliseconds()).Scan(&n); err != nil {
		return false, fmt.Errorf("converging: %w", err)
	}
	return n > 0, nil
}
