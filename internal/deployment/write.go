package deployment

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Channel is the LISTEN/NOTIFY channel a change of a deployment is signalled
// on; the payload is the model's name.
const Channel = "nlpswarm_deployments"

// Notify signals a change of model's deployment on Channel; it is delivered
// when the transaction of q commits.
func Notify(ctx context.Context, q Querier, model string) error {
	if _, err := q.Exec(ctx, `SELECT pg_notify($1, $2)`, Channel, model); err != nil {
		return fmt.Errorf("notify %s: %w", model, err)
	}
	return nil
}

// Listen subscribes conn to Channel; wait with conn.WaitForNotification.
func Listen(ctx context.Context, conn *pgx.Conn) error {
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{Channel}.Sanitize()); err != nil {
		return fmt.Errorf("listen %s: %w", Channel, err)
	}
	return nil
}

// setReplicas is the one place a replica count is written: the SET of count
// r with reason why (SQL expressions) on the deployments row aliased d. It
// bumps the generation and, when the count changes, records when and why.
func setReplicas(r, why string) string {
	return fmt.Sprintf(`replicas = %[1]s, generation = d.generation + 1, updated_at = now(),
		scaled_at = CASE WHEN d.replicas <> %[1]s THEN now() ELSE d.scaled_at END,
		scale_reason = CASE WHEN d.replicas <> %[1]s THEN %[2]s ELSE d.scale_reason END`, r, why)
}

// Spec is the desired state a deploy writes.
type Spec struct {
	ModelID int64  // the model's row; the caller holds it (SELECT … FOR UPDATE)
	Model   string // its name, the NOTIFY payload
	Version int
	// Replicas is the count to run. With KeepReplicas an existing
	// deployment keeps its count instead (an autoscaled redeploy that names
	// none). An autoscaled count is clamped into the bounds.
	Replicas     int
	KeepReplicas bool
	Resources
	Backend   string // BackendDefault, BackendGo or BackendORT
	Autoscale Autoscale
}

// Put writes s as the desired state of its model (inserted or replaced),
// with its version's format (FormatGGUF when the version's metadata has a
// GGUF header), and notifies; it returns the replica count written.
func Put(ctx context.Context, q Querier, s Spec) (int, error) {
	if err := ValidateBackend(s.Backend); err != nil {
		return 0, err
	}
	replicas := s.Replicas
	if s.KeepReplicas {
		var cur int
		err := q.QueryRow(ctx, `SELECT replicas FROM deployments WHERE model_id = $1 AND track = 'stable' FOR UPDATE`, s.ModelID).Scan(&cur)
		switch {
		case err == nil:
			replicas = cur
		case !errors.Is(err, pgx.ErrNoRows):
			return 0, fmt.Errorf("deploy %s: read replicas: %w", s.Model, err)
		}
	}
	replicas = s.Autoscale.clamp(replicas)
	if replicas < 0 {
		return 0, fmt.Errorf("%w: replicas must be ≥ 0", ErrInvalid)
	}
	args, err := specArgs(s, replicas)
	if err != nil {
		return 0, err
	}
	_, err = q.Exec(ctx, upsertSQL(TrackStable, "", "", ""), args...)
	if err != nil {
		return 0, fmt.Errorf("deploy %s: %w", s.Model, err)
	}
	return replicas, Notify(ctx, q, s.Model)
}

// upsertSQL inserts or replaces the row of track of a model with a Spec's
// columns (specArgs: $1 to $15) and a canary's extra columns, values and
// SET items (cols and vals each start with a comma, set ends with one).
func upsertSQL(track, cols, vals, set string) string {
	return `INSERT INTO deployments AS d (model_id, track, version, replicas, cpus, memory_bytes, memory_reservation_bytes,
			gpus, gpu_memory_bytes, placement_labels, status, status_message, autoscale_min, autoscale_max,
			autoscale_target_inflight, autoscale_scale_down_delay_ms, autoscale_idle_to_zero_ms, scale_reason, backend, format` + cols + `)
		VALUES ($1,'` + track + `',$2,$3,$4,$5,$6,$7,$8,$9,'pending','waiting for the scheduler',$10,$11,$12,$13,$14,'deploy',$15,
			CASE WHEN EXISTS (SELECT 1 FROM model_versions v WHERE v.model_id = $1 AND v.version = $2 AND v.metadata ? 'gguf')
				THEN 'gguf' ELSE 'onnx' END` + vals + `)
		ON CONFLICT (model_id, track) DO UPDATE SET version = EXCLUDED.version,
			cpus = EXCLUDED.cpus, memory_bytes = EXCLUDED.memory_bytes,
			memory_reservation_bytes = EXCLUDED.memory_reservation_bytes, gpus = EXCLUDED.gpus,
			gpu_memory_bytes = EXCLUDED.gpu_memory_bytes, placement_labels = EXCLUDED.placement_labels,
			autoscale_min = EXCLUDED.autoscale_min, autoscale_max = EXCLUDED.autoscale_max,
			autoscale_target_inflight = EXCLUDED.autoscale_target_inflight,
			autoscale_scale_down_delay_ms = EXCLUDED.autoscale_scale_down_delay_ms,
			autoscale_idle_to_zero_ms = EXCLUDED.autoscale_idle_to_zero_ms, backend = EXCLUDED.backend,
			format = EXCLUDED.format, ` + set + setReplicas("$3", "'deploy'")
}

// specArgs are upsertSQL's $1 to $15 for s with replicas.
func specArgs(s Spec, replicas int) ([]any, error) {
	labels := s.Labels
	if labels == nil {
		labels = map[string]string{}
	}
	raw, err := json.Marshal(labels)
	if err != nil {
		return nil, fmt.Errorf("deploy %s: labels: %w", s.Model, err)
	}
	a := s.Autoscale
	return []any{s.ModelID, s.Version, replicas, s.CPUs, s.MemoryBytes, s.MemoryReservation, s.GPUs, s.GPUMemory, raw,
		a.Min, a.Max, a.TargetInflight, a.ScaleDownDelay.Milliseconds(), a.IdleToZero.Milliseconds(), s.Backend}, nil
}

// Change is a new replica count.
type Change struct {
	Replicas int
	Reason   string // why, in words: shown by `nlpswarm status`
	// IfReplicas, when set, applies the change only while the count is still
	// this (the autoscaler's guard against a concurrent scale).
	IfReplicas *int
}

// Scale writes c.Replicas as the desired replica count of the deployment
// key names (a model's name: its stable one; Key(model, TrackCanary): its
// canary) and notifies. It reports false when IfReplicas did not match (or
// the deployment is gone meanwhile); without IfReplicas a missing
// deployment is ErrNotFound.
func Scale(ctx context.Context, q Querier, key string, c Change) (bool, error) {
	if c.Replicas < 0 {
		return false, fmt.Errorf("%w: replicas must be ≥ 0", ErrInvalid)
	}
	model, track := SplitKey(key)
	tag, err := q.Exec(ctx, `UPDATE deployments d SET `+setReplicas("$2", "$3")+`
		FROM models m WHERE m.id = d.model_id AND m.name = $1 AND d.track = $5 AND ($4::integer IS NULL OR d.replicas = $4)`,
		model, c.Replicas, c.Reason, c.IfReplicas, track)
	if err != nil {
		return false, fmt.Errorf("scale %s: %w", model, err)
	}
	if tag.RowsAffected() == 0 {
		if c.IfReplicas != nil {
			return false, nil
		}
		return false, notDeployed(key)
	}
	return true, Notify(ctx, q, model)
}

func notDeployed(model string) error {
	return fmt.Errorf("deployment of %s: %w (deploy it first)", model, ErrNotFound)
}

// ManualScale is `nlpswarm scale MODEL n`. On a deployment that is not
// autoscaled it sets the count to n. On an autoscaled one it sets the floor:
// min becomes n (max rises to n if lower) and the count moves into the new
// bounds at once; the autoscaler then works above the floor instead of
// fighting the operator. It returns the replica count written.
func ManualScale(ctx context.Context, q Querier, model string, n int) (int, error) {
	var cur, lo, hi int
	var id int64
	err := q.QueryRow(ctx, `SELECT d.id, d.replicas, d.autoscale_min, d.autoscale_max FROM deployments d
		JOIN models m ON m.id = d.model_id WHERE m.name = $1 AND d.track = 'stable' FOR UPDATE OF d`, model).Scan(&id, &cur, &lo, &hi)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, notDeployed(model)
	}
	if err != nil {
		return 0, fmt.Errorf("scale %s: %w", model, err)
	}
	if hi == 0 {
		_, err := Scale(ctx, q, model, Change{Replicas: n, Reason: "manual scale"})
		return n, err
	}
	if n < 0 {
		return 0, fmt.Errorf("%w: replicas must be ≥ 0", ErrInvalid)
	}
	hi = max(hi, n)
	if _, err := q.Exec(ctx, `UPDATE deployments SET autoscale_min = $2, autoscale_max = $3 WHERE id = $1`, id, n, hi); err != nil {
		return 0, fmt.Errorf("scale %s: set floor: %w", model, err)
	}
	want := min(max(cur, n), hi)
	_, err = Scale(ctx, q, model, Change{Replicas: want, Reason: fmt.Sprintf("manual scale: autoscaler floor set to %d", n)})
	return want, err
}

// Delete removes model's deployments, stable and canary (the reconciler
// then removes their services), and notifies.
func Delete(ctx context.Context, q Querier, model string) error {
	tag, err := q.Exec(ctx, `DELETE FROM deployments d USING models m WHERE m.id = d.model_id AND m.name = $1`, model)
	if err != nil {
		return fmt.Errorf("undeploy %s: %w", model, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("deployment of %s: %w", model, ErrNotFound)
	}
	return Notify(ctx, q, model)
}

// WriteStatus records what the reconciler observed of the deployment key
// names (Key) at generation; a status of an older generation than the row's is dropped (a
// newer desired state came meanwhile). obs nil writes no replicas.
func WriteStatus(ctx context.Context, q Querier, model string, generation int64, status, msg string, obs *Observed) error {
	if obs == nil {
		obs = &Observed{}
	}
	if obs.Tasks == nil {
		obs.Tasks = []TaskState{}
	}
	raw, err := json.Marshal(obs)
	if err != nil {
		return fmt.Errorf("status of %s: %w", model, err)
	}
	name, track := SplitKey(model)
	// the first status running at the row's generation marks a canary
	// routable (routed_at, Routable), and the gateways are told
	var wasRouted, routed bool
	err = q.QueryRow(ctx, `WITH prev AS (
			SELECT d.id, d.routed_at IS NOT NULL AS routed
			FROM deployments d JOIN models m ON m.id = d.model_id WHERE m.name = $1 AND d.track = $6 FOR UPDATE OF d)
		UPDATE deployments d SET status = $2, status_message = $3, observed = $4,
			observed_generation = $5, observed_at = now(),
			routed_at = COALESCE(d.routed_at, CASE WHEN $2 = 'running' AND $5 >= d.generation THEN now() END)
		FROM prev WHERE d.id = prev.id AND d.generation <= $5
		RETURNING prev.routed, d.routed_at IS NOT NULL`,
		name, status, msg, raw, generation, track).Scan(&wasRouted, &routed)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("status of %s: %w", model, err)
	}
	if track == TrackCanary && routed != wasRouted {
		return Notify(ctx, q, name)
	}
	return nil
}

// WriteUnobserved records that the reconciler could not see the replicas of
// the deployment key names (Key) (status unknown, and why) while keeping what it last observed and
// the generation it last acted on: the replicas are most likely still
// serving, and the desired state is still to be applied.
func WriteUnobserved(ctx context.Context, q Querier, model, msg string) error {
	name, track := SplitKey(model)
	_, err := q.Exec(ctx, `UPDATE deployments d SET status = $2, status_message = $3
		FROM models m WHERE m.id = d.model_id AND m.name = $1 AND d.track = $4`, name, StatusUnknown, msg, track)
	if err != nil {
		return fmt.Errorf("status of %s: %w", model, err)
	}
	return nil
}
