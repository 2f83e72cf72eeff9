package deployment

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Errors of the record; callers test them with errors.Is.
var (
	ErrNotFound = errors.New("not found")
	ErrInvalid  = errors.New("invalid")
)

// Querier is the part of a pgx pool or transaction the functions use.
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Defaults of the autoscaling bounds a deployment leaves out.
const (
	DefaultTargetInflight = 4
	DefaultScaleDownDelay = 30 * time.Second
	DefaultIdleToZero     = 5 * time.Minute
	// MaxAutoscaleReplicas bounds Max, as the deployment API bounds replicas.
	MaxAutoscaleReplicas = 100
)

// Autoscale are a deployment's autoscaling bounds as stored; Max 0 means not
// autoscaled. The record owns their defaults and validation, so the API and
// the CLI refuse the same things; scheduler/autoscale's rule reads them
// (autoscale.Bounds is this type).
type Autoscale struct {
	Min            int           // floor; 0 allows scale to zero
	Max            int           // ceiling, ≥ 1 when autoscaled
	TargetInflight float64       // requests in flight per replica the rule aims at
	ScaleDownDelay time.Duration // how long a lower recommendation must hold before replicas go down
	IdleToZero     time.Duration // with Min 0: no request for this long → 0 replicas
}

// WithDefaults fills the zero fields that have a default.
func (a Autoscale) WithDefaults() Autoscale {
	if a.TargetInflight == 0 {
		a.TargetInflight = DefaultTargetInflight
	}
	if a.ScaleDownDelay == 0 {
		a.ScaleDownDelay = DefaultScaleDownDelay
	}
	if a.IdleToZero == 0 {
		a.IdleToZero = DefaultIdleToZero
	}
	return a
}

// Validate says what is wrong with a (after WithDefaults).
func (a Autoscale) Validate() error {
	switch {
	case a.Max < 1 || a.Max > MaxAutoscaleReplicas:
		return fmt.Errorf("autoscale.max must be 1..%d", MaxAutoscaleReplicas)
	case a.Min < 0 || a.Min > a.Max:
		return errors.New("autoscale.min must be 0..max")
	case !(a.TargetInflight > 0) || a.TargetInflight > 10000 || math.IsInf(a.TargetInflight, 0):
		return errors.New("autoscale.target_inflight must be above 0 (and at most 10000)")
	case a.ScaleDownDelay < time.Second || a.ScaleDownDelay > 24*time.Hour:
		return errors.New("autoscale.scale_down_delay must be 1s..24h")
	case a.IdleToZero < time.Second || a.IdleToZero > 30*24*time.Hour:
		return errors.New("autoscale.idle_to_zero must be 1s..720h")
	}
	return nil
}

// Enabled reports whether the autoscaler sets the replica count.
func (a Autoscale) Enabled() bool { return a.Max > 0 }

// clamp bounds n to [Min, Max] when autoscaled.
func (a Autoscale) clamp(n int) int {
	if !a.Enabled() {
		return n
	}
	return min(max(n, a.Min), a.Max)
}

// MinMemory is the floor of every replica's memory reservation: the
// model manager's default estimate never goes below it, and the scheduler
// raises a smaller reservation to it.
const MinMemory = 256 << 20

// Inference engines a deployment may ask for (the runtime's
// --engine.backend); BackendDefault leaves the choice to the scheduler,
// which resolves it (ORT when it has an ORT runtime image, else go) and
// records the result in Observed.Backend.
const (
	BackendDefault = ""
	BackendGo      = "go"
	BackendORT     = "ort"
)

// ValidateBackend says whether b is a backend a deployment may ask for.
func ValidateBackend(b string) error {
	switch b {
	case BackendDefault, BackendGo, BackendORT:
		return nil
	}
	return fmt.Errorf("%w: backend must be \"go\", \"ort\" or empty (the platform's default), got %q", ErrInvalid, b)
}

// Formats of a deployed version's archive (modelmgr's FormatONNX and
// FormatGGUF; a test holds them equal): the runtime that serves it. Put
// records the version's (GGUF: its metadata has a GGUF header), in the
// deployments table's format column, so that the gateway, which may not
// read model_versions, routes by it too.
const (
	FormatONNX = "onnx" // the models runtime (encoders)
	FormatGGUF = "gguf" // the generation runtime (llama.cpp): text generation, and embedding GGUFs
)

// Resources are what each replica of a deployment needs.
type Resources struct {
	CPUs              float64
	MemoryBytes       int64 // limit; 0: twice the reservation
	MemoryReservation int64
	GPUs              int               // per replica
	GPUMemory         int64             // per replica
	Labels            map[string]string // node labels the replicas need
}

// Desired is one deployment's desired state with its model and version, as
// the reconciler acts on it.
type Desired struct {
	Model     string
	Track     string // TrackStable or TrackCanary: the service is ServiceName(Model, Track)
	Task      string
	Version   int
	Digest    string
	SizeBytes int64
	Replicas  int
	Resources
	Backend    string // as asked for; BackendDefault: the scheduler's choice
	Generation int64
	// Format is the version's archive format (FormatONNX, FormatGGUF).
	Format string
}

// Key names d among every deployment (Key(Model, Track)).
func (d Desired) Key() string { return Key(d.Model, d.Track) }

// TaskState is one replica as observed.
type TaskState struct {
	Slot int    `json:"slot"`
	Node string `json:"node"`
	// GPUs are the UUIDs of the GPUs a GPU replica was given.
	GPUs  []string `json:"gpus,omitempty"`
	State string   `json:"state"`
	Error string   `json:"error,omitempty"`
	// PID is the replica's main process on its node (Swarm's task status,
	// the node's PID namespace, 0 until it runs): the nodes page tells the
	// platform's GPU processes from others' by it.
	PID int `json:"pid,omitempty"`
}

// Observed is what the reconciler saw of a deployment's replicas
// (deployments.observed).
type Observed struct {
	Running int         `json:"running"`
	Desired int         `json:"desired"`
	Tasks   []TaskState `json:"tasks"`
	// Backend is the engine the reconciler runs the replicas on: the
	// deployment's own, or the platform's default it resolved.
	Backend string `json:"backend,omitempty"`
}

// Status values the reconciler writes.
const (
	StatusPending     = "pending"
	StatusDeploying   = "deploying"
	StatusRunning     = "running"
	StatusFailed      = "failed"
	StatusUnplaceable = "unplaceable"
	StatusUnknown     = "unknown"
)

// Record is a deployment as stored: desired and observed state together.
type Record struct {
	ID       int64
	Model    string
	Track    string // TrackStable or TrackCanary
	Version  int
	Replicas int
	Resources
	Backend            string // as asked for; BackendDefault: the platform's default
	Generation         int64
	ObservedGeneration int64
	Status             string
	StatusMessage      string
	Observed           Observed
	UpdatedAt          time.Time
	ObservedAt         *time.Time
	Autoscale          Autoscale
	ScaledAt           time.Time // when replicas last changed
	ScaleReason        string    // why: deploy, manual scale or the autoscaler's rule
	// Canary is the canary row's split, rule and rollout (nil on a stable
	// row).
	Canary *Canary
}

// Key names r among every deployment (Key(Model, Track)).
func (r Record) Key() string { return Key(r.Model, r.Track) }

// EffectiveBackend is the engine the replicas run on: the one the
// reconciler resolved, else the one asked for; "" while the platform's
// default has not been resolved yet.
func (r Record) EffectiveBackend() string {
	if r.Observed.Backend != "" {
		return r.Observed.Backend
	}
	return r.Backend
}

// Stale reports whether the reconciler has not acted on the latest desired
// state yet.
func (r Record) Stale() bool { return r.ObservedGeneration < r.Generation }

// collect reads every row of a query with scan, wrapping a failure of
// either with what was being read.
func collect[T any](rows pgx.Rows, err error, what string, scan pgx.RowToFunc[T]) ([]T, error) {
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	out, err := pgx.CollectRows(rows, scan)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
}
