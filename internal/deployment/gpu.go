package deployment

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// GPUAssignment is GPU memory the reconciler assigned to one replica slot of
// a deployment (gpu_assignments): each GPU replica is placed on its own
// (scheduler/doc.go, "GPU replicas"), a row per slot and GPU.
type GPUAssignment struct {
	Model  string `json:"model"` // the deployment's Key
	Slot   int    `json:"slot"`
	Node   string `json:"node"`
	GPU    string `json:"gpu"`
	Memory int64  `json:"memory_bytes"`
}

// Assignments reads every GPU assignment, by model and GPU.
func Assignments(ctx context.Context, q Querier) ([]GPUAssignment, error) {
	rows, err := q.Query(ctx, `SELECT `+keySQL+`, a.slot, a.node_id, a.gpu_uuid, a.memory_bytes FROM gpu_assignments a
		JOIN deployments d ON d.id = a.deployment_id JOIN models m ON m.id = d.model_id ORDER BY 1, a.slot, a.gpu_uuid`)
	return collect(rows, err, "load gpu assignments", func(row pgx.CollectableRow) (GPUAssignment, error) {
		var a GPUAssignment
		return a, row.Scan(&a.Model, &a.Slot, &a.Node, &a.GPU, &a.Memory)
	})
}

// FreeGPUs deletes the GPU assignments of the given deployments (Keys).
func FreeGPUs(ctx context.Context, q Querier, models []string) error {
	if len(models) == 0 {
		return nil
	}
	if _, err := q.Exec(ctx, `DELETE FROM gpu_assignments a USING deployments d, models m
		WHERE a.deployment_id = d.id AND d.model_id = m.id AND `+keySQL+` = ANY($1)`, models); err != nil {
		return fmt.Errorf("free gpu assignments: %w", err)
	}
	return nil
}

// AssignGPUs replaces the GPU assignments of the deployment model names (a
// Key) with as (their Model fields
// are ignored); q should be a transaction, so that no half is seen.
func AssignGPUs(ctx context.Context, q Querier, model string, as []GPUAssignment) error {
	if _, err := q.Exec(ctx, `DELETE FROM gpu_assignments WHERE deployment_id =
		(SELECT d.id FROM deployments d JOIN models m ON m.id = d.model_id WHERE `+keySQL+` = $1)`, model); err != nil {
		return fmt.Errorf("assign gpus of %s: %w", model, err)
	}
	for _, a := range as {
		tag, err := q.Exec(ctx, `INSERT INTO gpu_assignments (deployment_id, slot, node_id, gpu_uuid, memory_bytes)
			SELECT d.id, $2, $3, $4, $5 FROM deployments d JOIN models m ON m.id = d.model_id WHERE `+keySQL+` = $1`,
			model, a.Slot, a.Node, a.GPU, a.Memory)
		if err != nil {
			return fmt.Errorf("assign gpus of %s: %w", model, err)
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("assign gpus: %w", notDeployed(model))
		}
	}
	return nil
}

// keySQL is Key of the deployment aliased d of the model aliased m.
const keySQL = `(CASE WHEN d.track = 'canary' THEN m.name || '_canary' ELSE m.name END)`
