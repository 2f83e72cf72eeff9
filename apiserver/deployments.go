package apiserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5"

	"github.com/nlpswarm/nlpswarm/internal/pg"
	"github.com/nlpswarm/nlpswarm/modelmgr"
)

// DeploymentRequest is the desired state of a model's deployment.
type DeploymentRequest struct {
	Version   int  `json:"version"`
	Replicas  *int `json:"replicas"`
	Resources struct {
		CPUs      float64 `json:"cpus"`
		Memory    Bytes   `json:"memory"`
		GPUs      int     `json:"gpus"`
		GPUMemory Bytes   `json:"gpu_memory"`
	} `json:"resources"`
	Placement struct {
		Labels map[string]string `json:"labels"`
	} `json:"placement"`
}

var (
	labelRE      = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
	labelValueRE = regexp.MustCompile(`^[^"\x00-\x1f]*$`)
)

// MaxReplicas bounds one deployment.
const MaxReplicas = 100

// Check validates a request.
func (r *DeploymentRequest) Check() error {
	if r.Replicas == nil {
		one := 1
		r.Replicas = &one
	}
	switch {
	case *r.Replicas < 0 || *r.Replicas > MaxReplicas:
		return fmt.Errorf("replicas must be 0..%d", MaxReplicas)
	case r.Version < 0:
		return errors.New("version must be positive (0 = latest)")
	case r.Resources.CPUs < 0 || r.Resources.CPUs > 256:
		return errors.New("resources.cpus must be 0..256")
	case r.Resources.GPUs < 0 || r.Resources.GPUs > 16:
		return errors.New("resources.gpus must be 0..16")
	case r.Resources.GPUMemory > 0 && r.Resources.GPUs == 0:
		return errors.New("resources.gpu_memory needs resources.gpus")
	case r.Resources.Memory != 0 && r.Resources.Memory < 32<<20:
		return errors.New("resources.memory must be at least 32M")
	case len(r.Placement.Labels) > 16:
		return errors.New("at most 16 placement labels")
	}
	for k, v := range r.Placement.Labels {
		if !labelRE.MatchString(k) || len(v) > 128 || !labelValueRE.MatchString(v) {
			return fmt.Errorf("placement label %q: keys [a-z0-9._-], values printable without quotes", k)
		}
	}
	return nil
}

// Deployment is desired and observed state together.
type Deployment struct {
	Model              string            `json:"model"`
	Version            int               `json:"version"`
	Replicas           int               `json:"replicas"`
	CPUs               float64           `json:"cpus"`
	MemoryBytes        int64             `json:"memory_bytes"`
	MemoryReservation  int64             `json:"memory_reservation_bytes"`
	GPUs               int               `json:"gpus"`
	GPUMemoryBytes     int64             `json:"gpu_memory_bytes"`
	PlacementLabels    map[string]string `json:"placement_labels"`
	Generation         int64             `json:"generation"`
	ObservedGeneration int64             `json:"observed_generation"`
	Status             string            `json:"status"`
	StatusMessage      string            `json:"status_message"`
	Observed           json.RawMessage   `json:"observed"`
	UpdatedAt          time.Time         `json:"updated_at"`
	ObservedAt         *time.Time        `json:"observed_at"`
}

// queryDeployments reads desired and observed state of one model's
// deployment, or of every deployment when name is "".
func (s *Server) queryDeployments(ctx context.Context, name string) ([]Deployment, error) {
	rows, err := s.db.Query(ctx, `SELECT m.name, d.version, d.replicas, d.cpus, d.memory_bytes, d.memory_reservation_bytes,
		d.gpus, d.gpu_memory_bytes, d.placement_labels, d.generation, d.observed_generation, d.status,
		d.status_message, d.observed, d.updated_at, d.observed_at
		FROM deployments d JOIN models m ON m.id = d.model_id WHERE $1 = '' OR m.name = $1 ORDER BY m.name`, name)
	if err != nil {
		return nil, fmt.Errorf("query deployments: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Deployment, error) {
		var d Deployment
		var labels []byte
		err := r.Scan(&d.Model, &d.Version, &d.Replicas, &d.CPUs, &d.MemoryBytes, &d.MemoryReservation, &d.GPUs,
			&d.GPUMemoryBytes, &labels, &d.Generation, &d.ObservedGeneration, &d.Status, &d.StatusMessage,
			&d.Observed, &d.UpdatedAt, &d.ObservedAt)
		_ = json.Unmarshal(labels, &d.PlacementLabels)
		return d, err
	})
	if err != nil {
		return nil, fmt.Errorf("read deployments: %w", err)
	}
	return out, nil
}

func (s *Server) loadDeployment(ctx context.Context, name string) (Deployment, error) {
	ds, err := s.queryDeployments(ctx, name)
	if err != nil {
		return Deployment{}, err
	}
	if name == "" || len(ds) == 0 {
		return Deployment{}, fmt.Errorf("deployment of %s: %w", name, modelmgr.ErrNotFound)
	}
	return ds[0], nil
}

func (s *Server) getDeployment(c *gin.Context) {
	d, err := s.loadDeployment(c.Request.Context(), c.Param("name"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, d)
}

func notify(ctx context.Context, tx pgx.Tx, model string) error {
	_, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, pg.NotifyDeployments, model)
	return err
}

// putDeployment writes desired state; the scheduler does the rest.
func (s *Server) putDeployment(c *gin.Context) {
	var req DeploymentRequest
	if !decode(c, &req) {
		return
	}
	if err := s.deploy(c.Request.Context(), c.Param("name"), req); err != nil {
		s.fail(c, err)
		return
	}
	s.getDeployment(c)
}

// deploy checks req and writes it as the desired state of model name (the
// latest ready version when req.Version is 0), then NOTIFYs the scheduler.
func (s *Server) deploy(ctx context.Context, name string, req DeploymentRequest) error {
	if err := req.Check(); err != nil {
		return badRequest(err.Error())
	}
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		var modelID int64
		if err := tx.QueryRow(ctx, `SELECT id FROM models WHERE name = $1 FOR UPDATE`, name).Scan(&modelID); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("model %s: %w", name, modelmgr.ErrNotFound)
			}
			return err
		}
		var size int64
		q := `SELECT version, size_bytes FROM model_versions WHERE model_id = $1 AND status = 'ready' ORDER BY version DESC LIMIT 1`
		args := []any{modelID}
		if req.Version > 0 {
			q = `SELECT version, size_bytes FROM model_versions WHERE model_id = $1 AND version = $2 AND status = 'ready'`
			args = append(args, req.Version)
		}
		if err := tx.QueryRow(ctx, q, args...).Scan(&req.Version, &size); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("%w: model %s has no such version; push one first", modelmgr.ErrInvalid, name)
			}
			return err
		}
		reservation := modelmgr.DefaultMemory(size)
		if req.Resources.Memory > 0 && int64(req.Resources.Memory) < reservation {
			reservation = int64(req.Resources.Memory)
		}
		labels, _ := json.Marshal(req.Placement.Labels)
		if req.Placement.Labels == nil {
			labels = []byte("{}")
		}
		_, err := tx.Exec(ctx, `INSERT INTO deployments (model_id, version, replicas, cpus, memory_bytes, memory_reservation_bytes,
				gpus, gpu_memory_bytes, placement_labels, status, status_message)
			VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,'pending','waiting for the scheduler')
			ON CONFLICT (model_id) DO UPDATE SET version = EXCLUDED.version, replicas = EXCLUDED.replicas,
				cpus = EXCLUDED.cpus, memory_bytes = EXCLUDED.memory_bytes,
				memory_reservation_bytes = EXCLUDED.memory_reservation_bytes, gpus = EXCLUDED.gpus,
				gpu_memory_bytes = EXCLUDED.gpu_memory_bytes, placement_labels = EXCLUDED.placement_labels,
				generation = deployments.generation + 1, updated_at = now()`,
			modelID, req.Version, *req.Replicas, req.Resources.CPUs, int64(req.Resources.Memory), reservation,
			req.Resources.GPUs, int64(req.Resources.GPUMemory), labels)
		if err != nil {
			return err
		}
		return notify(ctx, tx, name)
	})
	if err != nil {
		return fmt.Errorf("deploy %s: %w", name, err)
	}
	return nil
}

// ScaleRequest sets the replica count.
type ScaleRequest struct {
	Replicas *int `json:"replicas"`
}

func (s *Server) scale(c *gin.Context) {
	var req ScaleRequest
	if !decode(c, &req) {
		return
	}
	if req.Replicas == nil {
		abort(c, http.StatusBadRequest, "invalid_request", fmt.Sprintf("replicas must be 0..%d", MaxReplicas))
		return
	}
	if err := s.setReplicas(c.Request.Context(), c.Param("name"), *req.Replicas); err != nil {
		s.fail(c, err)
		return
	}
	s.getDeployment(c)
}

// setReplicas writes the desired replica count of a deployed model and
// NOTIFYs the scheduler.
func (s *Server) setReplicas(ctx context.Context, name string, replicas int) error {
	if replicas < 0 || replicas > MaxReplicas {
		return badRequest(fmt.Sprintf("replicas must be 0..%d", MaxReplicas))
	}
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE deployments d SET replicas = $2, generation = generation + 1, updated_at = now()
			FROM models m WHERE m.id = d.model_id AND m.name = $1`, name, replicas)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("deployment of %s: %w (deploy it first)", name, modelmgr.ErrNotFound)
		}
		return notify(ctx, tx, name)
	})
	if err != nil {
		return fmt.Errorf("scale %s: %w", name, err)
	}
	return nil
}

func (s *Server) undeploy(ctx context.Context, name string) error {
	return pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM deployments d USING models m WHERE m.id = d.model_id AND m.name = $1`, name)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("deployment of %s: %w", name, modelmgr.ErrNotFound)
		}
		return notify(ctx, tx, name)
	})
}

func (s *Server) deleteDeployment(c *gin.Context) {
	if err := s.undeploy(c.Request.Context(), c.Param("name")); err != nil {
		s.fail(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}
