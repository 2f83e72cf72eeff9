package deployment

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// ErrConflict is a rollout step the model's current rollout does not allow
// (a second canary while one is routed, a promote of a canary already
// promoting); the apiserver answers 409.
var ErrConflict = errors.New("conflict")

// CanarySpec is the desired state `deploy MODEL --version N --canary W%`
// (or --shadow) writes: the canary's own version, replicas, resources and
// autoscaling bounds (Spec), and its split and rollback rule.
type CanarySpec struct {
	Spec
	Mode     string // ModeCanary or ModeShadow
	Weight   float64
	Sticky   bool
	Rollback RollbackRule
}

// PutCanary writes s as model's canary beside its stable deployment and
// notifies. The model must be deployed (ErrNotFound), the version must not
// be the stable one (ErrInvalid), and no other canary may be routed
// (ErrConflict: promote or roll it back first); a retired canary's row is
// replaced. It returns the replica count written.
func PutCanary(ctx context.Context, q Querier, s CanarySpec) (int, error) {
	if err := ValidateSplit(s.Mode, s.Weight); err != nil {
		return 0, err
	}
	if err := s.Rollback.Validate(); err != nil {
		return 0, err
	}
	if err := ValidateBackend(s.Backend); err != nil {
		return 0, err
	}
	var stableVersion int
	err := q.QueryRow(ctx, `SELECT version FROM deployments WHERE model_id = $1 AND track = 'stable' FOR UPDATE`, s.ModelID).Scan(&stableVersion)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("canary of %s: %w: the model is not deployed (deploy a stable version first)", s.Model, ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("canary of %s: %w", s.Model, err)
	}
	if stableVersion == s.Version {
		return 0, fmt.Errorf("%w: version %d of %s is the stable version already; a canary runs another one", ErrInvalid, s.Version, s.Model)
	}
	var state string
	var cur int
	err = q.QueryRow(ctx, `SELECT rollout_state, replicas FROM deployments WHERE model_id = $1 AND track = 'canary' FOR UPDATE`, s.ModelID).Scan(&state, &cur)
	switch {
	case err == nil && (state == RolloutActive || state == RolloutPromoting):
		return 0, fmt.Errorf("%w: %s already has a canary (%s); promote or roll it back first", ErrConflict, s.Model, state)
	case err != nil && !errors.Is(err, pgx.ErrNoRows):
		return 0, fmt.Errorf("canary of %s: %w", s.Model, err)
	}
	replicas := s.Autoscale.clamp(s.Replicas)
	if replicas < 0 {
		return 0, fmt.Errorf("%w: replicas must be ≥ 0", ErrInvalid)
	}
	args, err := specArgs(s.Spec, replicas)
	if err != nil {
		return 0, err
	}
	r := s.Rollback
	var maxErr, maxP99 *float64
	if r.MaxErrorRate > 0 {
		maxErr = &r.MaxErrorRate
	}
	if r.MaxP99 > 0 {
		ms := float64(r.MaxP99.Microseconds()) / 1000
		maxP99 = &ms
	}
	_, err = q.Exec(ctx, upsertSQL(TrackCanary,
		`, mode, weight, sticky, rollback_max_error_rate, rollback_max_p99_ms, rollback_window_s, rollout_state, rollout_reason`,
		`, $16, $17, $18, $19, $20, $21, 'active', ''`,
		`mode = EXCLUDED.mode, weight = EXCLUDED.weight, sticky = EXCLUDED.sticky,
			rollback_max_error_rate = EXCLUDED.rollback_max_error_rate, rollback_max_p99_ms = EXCLUDED.rollback_max_p99_ms,
			rollback_window_s = EXCLUDED.rollback_window_s, rollout_state = 'active', rollout_reason = '',
			retired_at = NULL, promoted_from = NULL, routed_at = NULL, status = 'pending', status_message = 'waiting for the scheduler',
			observed = '{}', created_at = now(), `),
		append(args, s.Mode, s.Weight, s.Sticky, maxErr, maxP99, int(r.Window.Seconds()))...)
	if err != nil {
		return 0, fmt.Errorf("canary of %s: %w", s.Model, err)
	}
	return replicas, Notify(ctx, q, s.Model)
}

// stableState is the part of a stable deployment a promote replaces with
// the canary's and a rollback during the promote restores
// (deployments.promoted_from).
type stableState struct {
	Version           int             `json:"version"`
	CPUs              float64         `json:"cpus"`
	MemoryBytes       int64           `json:"memory_bytes"`
	MemoryReservation int64           `json:"memory_reservation_bytes"`
	GPUs              int             `json:"gpus"`
	GPUMemory         int64           `json:"gpu_memory_bytes"`
	Labels            json.RawMessage `json:"placement_labels"`
	Backend           string          `json:"backend"`
	Format            string          `json:"format"`
}

// stateCols are stableState's columns, in its order.
const stateCols = `version, cpus, memory_bytes, memory_reservation_bytes, gpus, gpu_memory_bytes, placement_labels, backend, format`

// lockCanary reads (FOR UPDATE) model's canary row's id, rollout state and
// version; ErrNotFound when the model has no routed canary.
func lockCanary(ctx context.Context, q Querier, model string) (id, modelID int64, state string, version int, err error) {
	err = q.QueryRow(ctx, `SELECT d.id, d.model_id, d.rollout_state, d.version FROM deployments d JOIN models m ON m.id = d.model_id
		WHERE m.name = $1 AND d.track = 'canary' FOR UPDATE OF d`, model).Scan(&id, &modelID, &state, &version)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && state != RolloutActive && state != RolloutPromoting) {
		return 0, 0, "", 0, fmt.Errorf("canary of %s: %w: it has none running (deploy one with --canary or --shadow)", model, ErrNotFound)
	}
	if err != nil {
		return 0, 0, "", 0, fmt.Errorf("canary of %s: %w", model, err)
	}
	return id, modelID, state, version, nil
}

// Promote starts moving model's traffic to its canary's version: the stable
// deployment takes the canary's version, resources and engine (keeping its
// own replica count and autoscaling bounds, sized for all the traffic) and
// its service rolls start-first; the canary stays routed as it was
// (RolloutPromoting) until the scheduler sees the stable service run the new
// version everywhere and retires it (FinishPromote). It returns the version
// promoted; ErrNotFound without a routed canary, ErrConflict when it is
// promoting already.
func Promote(ctx context.Context, q Querier, model string) (int, error) {
	id, modelID, state, version, err := lockCanary(ctx, q, model)
	if err != nil {
		return 0, err
	}
	if state == RolloutPromoting {
		return 0, fmt.Errorf("%w: %s is already being promoted to version %d", ErrConflict, model, version)
	}
	var prior []byte
	err = q.QueryRow(ctx, `SELECT row_to_json(s) FROM (SELECT `+stateCols+` FROM deployments WHERE model_id = $1 AND track = 'stable' FOR UPDATE) s`,
		modelID).Scan(&prior)
	if err != nil {
		return 0, fmt.Errorf("promote %s: read stable: %w", model, err)
	}
	if _, err := q.Exec(ctx, `UPDATE deployments d SET (`+stateCols+`) = (SELECT `+stateCols+` FROM deployments WHERE id = $2),
			generation = d.generation + 1, updated_at = now()
		WHERE d.model_id = $1 AND d.track = 'stable'`, modelID, id); err != nil {
		return 0, fmt.Errorf("promote %s: %w", model, err)
	}
	if _, err := q.Exec(ctx, `UPDATE deployments SET rollout_state = 'promoting', promoted_from = $2,
			rollout_reason = 'the stable service rolls to version ' || version, updated_at = now() WHERE id = $1`, id, prior); err != nil {
		return 0, fmt.Errorf("promote %s: %w", model, err)
	}
	return version, Notify(ctx, q, model)
}

// FinishPromote retires model's promoting canary once the stable service
// runs its version (the scheduler decides when: scheduler/canary): the
// gateway routes every request to the stable service from the NOTIFY on,
// and the canary's service goes after Drain. It reports false when the
// canary was not promoting (rolled back meanwhile).
func FinishPromote(ctx context.Context, q Querier, model string) (bool, error) {
	tag, err := q.Exec(ctx, `UPDATE deployments d SET rollout_state = 'promoted', retired_at = now(), updated_at = now(),
			rollout_reason = 'promoted: version ' || d.version || ' serves all traffic'
		FROM models m WHERE m.id = d.model_id AND m.name = $1 AND d.track = 'canary' AND d.rollout_state = 'promoting'`, model)
	if err != nil {
		return false, fmt.Errorf("finish promote of %s: %w", model, err)
	}
	if tag.RowsAffected() == 0 {
		return false, nil
	}
	return true, Notify(ctx, q, model)
}

// Rollback takes model's canary out of the routing at once, with reason
// (shown by status): the gateway stops sending it requests on the NOTIFY,
// and its service goes after Drain. During a promote the stable deployment
// gets back the version and resources it had. With onlyActive (the
// automatic rule) a canary already promoting is left alone (false). It
// returns the canary's version; ErrNotFound without a routed canary.
func Rollback(ctx context.Context, q Querier, model, reason string, onlyActive bool) (int, bool, error) {
	id, modelID, state, version, err := lockCanary(ctx, q, model)
	if err != nil {
		return 0, false, err
	}
	if onlyActive && state != RolloutActive {
		return version, false, nil
	}
	if state == RolloutPromoting {
		var raw []byte
		if err := q.QueryRow(ctx, `SELECT promoted_from FROM deployments WHERE id = $1`, id).Scan(&raw); err != nil {
			return 0, false, fmt.Errorf("rollback %s: %w", model, err)
		}
		var p stableState
		if err := json.Unmarshal(raw, &p); err != nil {
			return 0, false, fmt.Errorf("rollback %s: the stable state before the promote: %w", model, err)
		}
		if len(p.Labels) == 0 {
			p.Labels = json.RawMessage("{}")
		}
		if _, err := q.Exec(ctx, `UPDATE deployments d SET version = $2, cpus = $3, memory_bytes = $4, memory_reservation_bytes = $5,
				gpus = $6, gpu_memory_bytes = $7, placement_labels = $8, backend = $9, format = $10,
				generation = d.generation + 1, updated_at = now()
			WHERE d.model_id = $1 AND d.track = 'stable'`, modelID, p.Version, p.CPUs, p.MemoryBytes, p.MemoryReservation,
			p.GPUs, p.GPUMemory, []byte(p.Labels), p.Backend, p.Format); err != nil {
			return 0, false, fmt.Errorf("rollback %s: restore stable: %w", model, err)
		}
	}
	if _, err := q.Exec(ctx, `UPDATE deployments SET rollout_state = 'rolled_back', rollout_reason = $2, retired_at = now(),
			promoted_from = NULL, updated_at = now() WHERE id = $1`, id, reason); err != nil {
		return 0, false, fmt.Errorf("rollback %s: %w", model, err)
	}
	return version, true, Notify(ctx, q, model)
}
