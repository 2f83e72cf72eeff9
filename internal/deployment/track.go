package deployment

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// Tracks of a model's deployments: a model has at most one of each
// (deployments.track, unique with the model). Stable is the deployment every
// model has; canary is a second version beside it (doc.go, "Canary and
// shadow").
const (
	TrackStable = "stable"
	TrackCanary = "canary"
)

// Modes of a canary deployment.
const (
	// ModeCanary: the canary answers Weight % of the requests.
	ModeCanary = "canary"
	// ModeShadow: the canary gets a copy of every request; the stable
	// version answers all of them and the canary's answers are only
	// compared.
	ModeShadow = "shadow"
)

// Rollout states of a canary deployment (deployments.rollout_state).
const (
	// RolloutActive: routed beside the stable version.
	RolloutActive = "active"
	// RolloutPromoting: the stable deployment is rolling to the canary's
	// version; the canary is still routed until that roll is done.
	RolloutPromoting = "promoting"
	// RolloutPromoted: the stable deployment runs the canary's version; the
	// canary is routed no more and its service goes after Drain.
	RolloutPromoted = "promoted"
	// RolloutRolledBack: routed no more (by `nlpswarm rollback` or the
	// automatic rule, Reason says which and why); its service goes after
	// Drain.
	RolloutRolledBack = "rolled_back"
)

// Drain is how long a retired canary's service outlives its leaving the
// routing: every gateway has had the NOTIFY and finished the requests it
// sent there before the replicas stop.
const Drain = 10 * time.Second

// canarySep joins a model's name and its canary track in Key and the
// service names. Model names are ^[a-z][a-z0-9-]{0,47}$, so no model's
// name (hence no stable key or service) contains it.
const canarySep = "_"

// Key names one deployment of a model among all deployments: the model's
// name for its stable track, the name and "_canary" for its canary. The
// scheduler keys its plan, GPU assignments and status writes by it; the
// record's functions that take a model (WriteStatus, AssignGPUs,
// RecordStart, Scale…) take a Key as well.
func Key(model, track string) string {
	if track == TrackCanary {
		return model + canarySep + TrackCanary
	}
	return model
}

// SplitKey is Key's inverse: the model and track a key names.
func SplitKey(key string) (model, track string) {
	if m, ok := strings.CutSuffix(key, canarySep+TrackCanary); ok {
		return m, TrackCanary
	}
	return key, TrackStable
}

// ServiceName is the Swarm service of one track of a model:
// "nlp-"+model for the stable one (as before tracks existed, so existing
// stacks do not roll), "nlp-"+model+"_canary" for the canary. Its
// tasks.<name> DNS answers the track's replicas, which the gateway
// discovers.
func ServiceName(model, track string) string { return "nlp-" + Key(model, track) }

// CanaryRoute is a model's canary as the gateway routes it (Route.Canary).
type CanaryRoute struct {
	Version    int
	Mode       string  // ModeCanary or ModeShadow
	Weight     float64 // percent 0–100 of requests the canary answers (ModeCanary)
	Sticky     bool    // the same API key → the same version
	Replicas   int     // desired
	Autoscaled bool
	Format     string
}

// RollbackRule is a canary's automatic rollback rule: the scheduler rolls
// the canary back when, over the last Window, its error rate is above
// MaxErrorRate or its p99 latency above MaxP99 (scheduler/canary decides).
// A zero Window is no rule; a zero bound is not checked.
type RollbackRule struct {
	MaxErrorRate float64 // fraction 0–1
	MaxP99       time.Duration
	Window       time.Duration
}

// Enabled reports whether the rule checks anything.
func (r RollbackRule) Enabled() bool { return r.Window > 0 && (r.MaxErrorRate > 0 || r.MaxP99 > 0) }

// MaxRollbackWindow bounds a rule's window.
const MaxRollbackWindow = 24 * time.Hour

// Validate says what is wrong with r.
func (r RollbackRule) Validate() error {
	switch {
	case r.Window < 0 || r.Window > MaxRollbackWindow:
		return fmt.Errorf("%w: rollback window must be 0..24h", ErrInvalid)
	case r.MaxErrorRate < 0 || r.MaxErrorRate > 1 || math.IsNaN(r.MaxErrorRate):
		return fmt.Errorf("%w: rollback error rate must be 0..100%%", ErrInvalid)
	case r.MaxP99 < 0:
		return fmt.Errorf("%w: rollback p99 must be positive", ErrInvalid)
	case (r.MaxErrorRate > 0 || r.MaxP99 > 0) && r.Window < time.Second:
		return fmt.Errorf("%w: a rollback bound needs a window of at least 1s", ErrInvalid)
	case r.Window > 0 && r.MaxErrorRate == 0 && r.MaxP99 == 0:
		return fmt.Errorf("%w: a rollback window needs an error-rate or p99 bound", ErrInvalid)
	}
	return nil
}

// Canary is a model's canary deployment's settings as stored on its row.
type Canary struct {
	Mode     string  // ModeCanary or ModeShadow
	Weight   float64 // ModeCanary: percent of requests, (0, 100]
	Sticky   bool
	Rollback RollbackRule
	State    string // RolloutActive…
	Reason   string // why it was rolled back (or promoted): shown by status
	// RetiredAt is when it left the routing (promoted or rolled back).
	RetiredAt *time.Time
}

// Routed reports whether the gateway routes requests to the canary.
func (c Canary) Routed() bool { return c.State == RolloutActive || c.State == RolloutPromoting }

// ValidateSplit says what is wrong with a canary's mode and weight.
func ValidateSplit(mode string, weight float64) error {
	switch mode {
	case ModeCanary:
		if !(weight > 0 && weight <= 100) {
			return fmt.Errorf("%w: canary weight must be above 0%% and at most 100%%, got %g", ErrInvalid, weight)
		}
	case ModeShadow:
		if weight != 0 {
			return fmt.Errorf("%w: a shadow gets a copy of every request and answers none: it takes no weight", ErrInvalid)
		}
	default:
		return fmt.Errorf("%w: mode must be %q or %q, got %q", ErrInvalid, ModeCanary, ModeShadow, mode)
	}
	return nil
}
