package apiserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5"

	"github.com/nlpswarm/nlpswarm/internal/bearer"
	"github.com/nlpswarm/nlpswarm/internal/deployment"
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
	// Autoscale, when present, lets the scheduler's autoscaler set the
	// replicas within [min, max]; replicas is then the starting count.
	Autoscale *Autoscale `json:"autoscale"`
	// Backend is the inference engine: "go", "ort", or "" (absent) for the
	// platform's default, which the scheduler resolves (ort when it has an
	// ORT runtime image, else go).
	Backend string `json:"backend"`
	// Canary, when present, deploys the version as the model's canary
	// beside its stable deployment (issue 20) instead of replacing it.
	Canary *CanaryRequest `json:"canary"`
}

// Autoscale are a deployment's autoscaling bounds as the API writes them
// (the record, internal/deployment, owns their defaults and validation).
type Autoscale struct {
	Min            int      `json:"min"`
	Max            int      `json:"max"`
	TargetInflight float64  `json:"target_inflight"`
	ScaleDownDelay Duration `json:"scale_down_delay"`
	IdleToZero     Duration `json:"idle_to_zero"`
}

// Bounds converts a to the record's bounds.
func (a Autoscale) Bounds() deployment.Autoscale {
	return deployment.Autoscale{Min: a.Min, Max: a.Max, TargetInflight: a.TargetInflight,
		ScaleDownDelay: time.Duration(a.ScaleDownDelay), IdleToZero: time.Duration(a.IdleToZero)}
}

func autoscaleOf(b deployment.Autoscale) *Autoscale {
	return &Autoscale{Min: b.Min, Max: b.Max, TargetInflight: b.TargetInflight,
		ScaleDownDelay: Duration(b.ScaleDownDelay), IdleToZero: Duration(b.IdleToZero)}
}

// Duration is a duration given as a Go duration string ("30s", "5m") or a
// number of seconds; it is written as a string.
type Duration time.Duration

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(p []byte) error {
	var s string
	if err := json.Unmarshal(p, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("duration %q: want e.g. \"30s\" or \"5m\"", s)
		}
		*d = Duration(v)
		return nil
	}
	var f float64
	if err := json.Unmarshal(p, &f); err != nil || f < 0 || f > 1e9 {
		return errors.New("duration must be a string like \"30s\" or a number of seconds")
	}
	*d = Duration(f * float64(time.Second))
	return nil
}

// String is the duration as Go writes it ("30s").
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

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
	case deployment.ValidateBackend(r.Backend) != nil:
		return fmt.Errorf("backend must be \"go\", \"ort\" or absent (the platform's default), got %q", r.Backend)
	}
	for k, v := range r.Placement.Labels {
		if !labelRE.MatchString(k) || len(v) > 128 || !labelValueRE.MatchString(v) {
			return fmt.Errorf("placement label %q: keys [a-z0-9._-], values printable without quotes", k)
		}
	}
	if r.Canary != nil {
		if err := r.Canary.check(); err != nil {
			return err
		}
	}
	if r.Autoscale != nil {
		// GPU deployments autoscale too (issue 16): each GPU replica is
		// placed on its own, so a scale up places only the new replicas, a
		// scale down or to zero gives back only the removed ones' GPU memory
		b := r.Autoscale.Bounds().WithDefaults()
		if err := b.Validate(); err != nil {
			return err
		}
		if b.Max > MaxReplicas {
			return fmt.Errorf("autoscale.max must be 1..%d", MaxReplicas)
		}
		r.Autoscale = autoscaleOf(b)
	}
	return nil
}

// Deployment is desired and observed state together.
type Deployment struct {
	Model              string              `json:"model"`
	Version            int                 `json:"version"`
	Replicas           int                 `json:"replicas"`
	CPUs               float64             `json:"cpus"`
	MemoryBytes        int64               `json:"memory_bytes"`
	MemoryReservation  int64               `json:"memory_reservation_bytes"`
	GPUs               int                 `json:"gpus"`
	GPUMemoryBytes     int64               `json:"gpu_memory_bytes"`
	PlacementLabels    map[string]string   `json:"placement_labels"`
	Generation         int64               `json:"generation"`
	ObservedGeneration int64               `json:"observed_generation"`
	Status             string              `json:"status"`
	StatusMessage      string              `json:"status_message"`
	Observed           deployment.Observed `json:"observed"`
	UpdatedAt          time.Time           `json:"updated_at"`
	ObservedAt         *time.Time          `json:"observed_at"`
	// Autoscale is null when the deployment is not autoscaled.
	Autoscale   *Autoscale `json:"autoscale"`
	ScaledAt    time.Time  `json:"scaled_at"`    // when replicas last changed
	ScaleReason string     `json:"scale_reason"` // why: deploy, manual scale or the autoscaler's rule
	// Backend is the engine asked for ("" = the platform's default);
	// EffectiveBackend the one the replicas run, as the scheduler resolved
	// it ("" until it has).
	Backend          string `json:"backend"`
	EffectiveBackend string `json:"effective_backend"`
	// ColdStarts are the most recent replicas' start phases, newest first.
	ColdStarts []ReplicaStart `json:"cold_starts"`
	// Canary is the model's canary (routed, or retired with why), null when
	// it never had one (issue 20).
	Canary *Canary `json:"canary,omitempty"`
	// Versions are the live figures per version over the last minute
	// (model status only); VersionsError says why they are missing.
	Versions      []VersionStats `json:"versions,omitempty"`
	VersionsError string         `json:"versions_error,omitempty"`
}

// EngineText is the engine d's replicas run, for people: marked
// "(default)" when d leaves the choice to the platform, "default" alone until
// the scheduler has resolved it (the CLI's status and the pages).
func (d Deployment) EngineText() string {
	switch {
	case d.EffectiveBackend == "":
		return "default"
	case d.Backend == "":
		return d.EffectiveBackend + " (default)"
	}
	return d.EffectiveBackend
}

// ReplicaStart is one replica's cold start as the scheduler recorded it.
type ReplicaStart = deployment.ReplicaStart

// queryDeployments reads desired and observed state of one model's
// deployment, or of every deployment when name is "" (without cold starts;
// loadDeployment adds them). It returns the rows' ids beside them.
func (s *Server) queryDeployments(ctx context.Context, name string) ([]Deployment, []int64, error) {
	rs, err := deployment.List(ctx, s.db, name)
	if err != nil {
		return nil, nil, err
	}
	cs, err := deployment.ListCanaries(ctx, s.db, name)
	if err != nil {
		return nil, nil, err
	}
	canaries := map[string]deployment.Record{}
	for _, c := range cs {
		canaries[c.Model] = c
	}
	out := make([]Deployment, len(rs))
	ids := make([]int64, len(rs))
	for i, r := range rs {
		out[i], ids[i] = deploymentOf(r), r.ID
		if c, ok := canaries[r.Model]; ok {
			out[i].Canary = canaryOf(c)
		}
	}
	return out, ids, nil
}

// deploymentOf is the API's view of a stored deployment.
func deploymentOf(r deployment.Record) Deployment {
	d := Deployment{Model: r.Model, Version: r.Version, Replicas: r.Replicas, CPUs: r.CPUs, MemoryBytes: r.MemoryBytes,
		MemoryReservation: r.MemoryReservation, GPUs: r.GPUs, GPUMemoryBytes: r.GPUMemory, PlacementLabels: r.Labels,
		Generation: r.Generation, ObservedGeneration: r.ObservedGeneration, Status: r.Status, StatusMessage: r.StatusMessage,
		Observed: r.Observed, UpdatedAt: r.UpdatedAt, ObservedAt: r.ObservedAt, ScaledAt: r.ScaledAt, ScaleReason: r.ScaleReason,
		Backend: r.Backend, EffectiveBackend: r.EffectiveBackend()}
	if r.Autoscale.Enabled() {
		d.Autoscale = autoscaleOf(r.Autoscale)
	}
	return d
}

func (s *Server) loadDeployment(ctx context.Context, name string) (Deployment, error) {
	r, err := deployment.Get(ctx, s.db, name)
	if err != nil {
		return Deployment{}, err
	}
	d := deploymentOf(r)
	if d.ColdStarts, err = deployment.ColdStarts(ctx, s.db, r.ID, maxColdStarts); err != nil {
		return d, err
	}
	return d, s.addCanary(ctx, &d)
}

// maxColdStarts is how many recent replica starts a deployment shows.
const maxColdStarts = 5

func (s *Server) getDeployment(c *gin.Context) {
	d, err := s.loadDeployment(c.Request.Context(), c.Param("name"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, d)
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
	replicasGiven := req.Replicas != nil
	if err := req.Check(); err != nil {
		return badRequest(err.Error())
	}
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		var modelID int64
		var task string
		if err := tx.QueryRow(ctx, `SELECT id, task FROM models WHERE name = $1 FOR UPDATE`, name).Scan(&modelID, &task); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("model %s: %w", name, modelmgr.ErrNotFound)
			}
			return err
		}
		var size, estimate int64
		var gguf bool
		// the memory estimate of a GGUF version (ggufcheck, at upload: text
		// generation or embeddings); 0 for the others
		const cols = `version, size_bytes, COALESCE((metadata->>'memory_estimate_bytes')::bigint, 0), metadata ? 'gguf'`
		q := `SELECT ` + cols + ` FROM model_versions WHERE model_id = $1 AND status = 'ready' ORDER BY version DESC LIMIT 1`
		args := []any{modelID}
		if req.Version > 0 {
			q = `SELECT ` + cols + ` FROM model_versions WHERE model_id = $1 AND version = $2 AND status = 'ready'`
			args = append(args, req.Version)
		}
		if err := tx.QueryRow(ctx, q, args...).Scan(&req.Version, &size, &estimate, &gguf); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("%w: model %s has no such version; push one first", modelmgr.ErrInvalid, name)
			}
			return err
		}
		res := deployment.Resources{CPUs: req.Resources.CPUs, MemoryBytes: int64(req.Resources.Memory),
			GPUs: req.Resources.GPUs, GPUMemory: int64(req.Resources.GPUMemory), Labels: req.Placement.Labels}
		if task == modelmgr.TextGeneration || gguf { // the generation runtime's (an embedding GGUF too)
			var err error
			if res, err = generationResources(res, req.Backend, size, estimate); err != nil {
				return badRequest(fmt.Sprintf("model %s version %d: %v", name, req.Version, err))
			}
		} else {
			res.MemoryReservation = modelmgr.DefaultMemory(size)
			if res.MemoryBytes > 0 && res.MemoryBytes < res.MemoryReservation {
				res.MemoryReservation = res.MemoryBytes
			}
		}
		spec := deployment.Spec{ModelID: modelID, Model: name, Version: req.Version, Replicas: *req.Replicas,
			Resources: res, Backend: req.Backend}
		if req.Autoscale != nil {
			spec.Autoscale = deployment.Autoscale(req.Autoscale.Bounds())
			// a redeploy that names no count keeps the autoscaler's
			spec.KeepReplicas = !replicasGiven && req.Canary == nil
		}
		if c := req.Canary; c != nil {
			// a canary: its own row beside the stable one (GPU canaries
			// too: the scheduler places their replicas like any GPU
			// deployment's, and reports unplaceable when none fits)
			mode, weight := c.split()
			_, err := deployment.PutCanary(ctx, tx, deployment.CanarySpec{Spec: spec, Mode: mode, Weight: weight, Sticky: c.Sticky, Rollback: c.rule()})
			return err
		}
		_, err := deployment.Put(ctx, tx, spec)
		return err
	})
	if err != nil {
		return fmt.Errorf("deploy %s: %w", name, err)
	}
	return nil
}

// generationResources are the resources of a deployment on the generation
// runtime (issue 15: a text-generation model, or an embedding GGUF of task
// feature-extraction) from those asked for (r), defaulted from the version's memory
// estimate (ggufcheck at upload: the weights, the KV cache of the
// generation runtime's 4 slots of the model's context, and a margin; the
// file's size when a version has none). On CPUs the estimate is the
// memory reservation, and a memory limit below it is refused: the replica
// would be killed out of memory. On GPUs the estimate is the GPU memory,
// shared by the GPUs (llama.cpp splits the layers over them): gpu_memory
// defaults to each GPU's share and may not be below it, and the host
// reserves the file's size (llama.cpp reads the weights through host
// memory while it offloads them). A GGUF model runs on llama.cpp only: an
// encoder backend is refused.
func generationResources(r deployment.Resources, backend string, size, estimate int64) (deployment.Resources, error) {
	if backend != deployment.BackendDefault {
		return r, fmt.Errorf("a GGUF model (text generation or embeddings) runs on llama.cpp: leave backend out (%q is an encoder engine)", backend)
	}
	estimate = max(estimate, size)
	if r.GPUs == 0 {
		if r.MemoryBytes > 0 && r.MemoryBytes < estimate {
			return r, fmt.Errorf("resources.memory %s is below the model's memory estimate %s (weights, KV cache of 4 slots of its context, margin): give at least that, or leave it out",
				FormatBytes(r.MemoryBytes), FormatBytes(estimate))
		}
		r.MemoryReservation = max(estimate, deployment.MinMemory)
		return r, nil
	}
	share := (estimate + int64(r.GPUs) - 1) / int64(r.GPUs)
	if r.GPUMemory == 0 {
		r.GPUMemory = share
	} else if r.GPUMemory < share {
		return r, fmt.Errorf("resources.gpu_memory %s per GPU is below the model's share of its memory estimate on %d GPU(s), %s: give at least that, or leave it out",
			FormatBytes(r.GPUMemory), r.GPUs, FormatBytes(share))
	}
	r.MemoryReservation = max(size, deployment.MinMemory)
	if r.MemoryBytes > 0 {
		r.MemoryReservation = min(r.MemoryReservation, r.MemoryBytes)
	}
	return r, nil
}

// ScaleRequest sets the replica count; on an autoscaled deployment it sets
// the autoscaler's floor (min) instead (deployment.ManualScale).
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

// setReplicas writes the desired replica count of a deployed model (the
// autoscaler's floor when it is autoscaled) and NOTIFYs the scheduler.
func (s *Server) setReplicas(ctx context.Context, name string, replicas int) error {
	if replicas < 0 || replicas > MaxReplicas {
		return badRequest(fmt.Sprintf("replicas must be 0..%d", MaxReplicas))
	}
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		_, err := deployment.ManualScale(ctx, tx, name, replicas)
		return err
	})
	if err != nil {
		return fmt.Errorf("scale %s: %w", name, err)
	}
	return nil
}

func (s *Server) undeploy(ctx context.Context, name string) error {
	return pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error { return deployment.Delete(ctx, tx, name) })
}

func (s *Server) deleteDeployment(c *gin.Context) {
	if err := s.undeploy(c.Request.Context(), c.Param("name")); err != nil {
		s.fail(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}

// maxPlanBytes bounds the scheduler's dry-run answer the apiserver relays.
const maxPlanBytes = 8 << 20

// planTimeout bounds the relay of a dry run.
const planTimeout = 15 * time.Second

// getPlan relays the scheduler's dry run (GET <scheduler>/plan): what a
// reconcile pass would do now. The apiserver never talks to Docker itself.
func (s *Server) getPlan(c *gin.Context) {
	if s.cfg.SchedulerURL == "" {
		abort(c, http.StatusServiceUnavailable, "unavailable", "no scheduler URL is configured (--scheduler.url)")
		return
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), planTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(s.cfg.SchedulerURL, "/")+"/plan", nil)
	if err != nil {
		abort(c, http.StatusServiceUnavailable, "unavailable", "the scheduler URL is invalid")
		return
	}
	if s.cfg.SchedulerToken != "" {
		req.Header.Set("Authorization", bearer.Header(s.cfg.SchedulerToken))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.log.Warn("dry run: scheduler unreachable", "err", err)
		abort(c, http.StatusServiceUnavailable, "unavailable", "the scheduler is unreachable; retry shortly")
		return
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxPlanBytes+1))
	switch {
	case err != nil:
		abort(c, http.StatusBadGateway, "bad_gateway", "the scheduler's answer was cut off")
	case resp.StatusCode == http.StatusUnauthorized:
		s.log.Error("dry run: the scheduler refused the read token (--scheduler.tokenfile)")
		abort(c, http.StatusBadGateway, "bad_gateway", "the scheduler refused the apiserver's read token (--scheduler.tokenfile)")
	case resp.StatusCode != http.StatusOK:
		abort(c, http.StatusServiceUnavailable, "unavailable", fmt.Sprintf("the scheduler could not compute the plan (HTTP %d); retry shortly", resp.StatusCode))
	case len(body) > maxPlanBytes || !json.Valid(body):
		abort(c, http.StatusBadGateway, "bad_gateway", "the scheduler's answer is not a plan")
	default:
		c.Data(http.StatusOK, "application/json", body)
	}
}
