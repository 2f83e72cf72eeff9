package canary

import (
	"fmt"
	"strconv"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/deployment"
)

// MinRequests is how many requests the canary must have answered within the
// window before the rule judges it: one failure of one request is no error
// rate.
const MinRequests = 5

// Figures are the canary's live traffic over the rule's window (summed over
// the gateways).
type Figures struct {
	Requests, Errors int64
	P99              time.Duration
}

// Rollout is one model's canary as the decision sees it.
type Rollout struct {
	Model   string
	State   string // deployment.RolloutActive or RolloutPromoting (others are decided on no more)
	Mode    string // deployment.ModeCanary or ModeShadow
	Version int    // the canary's
	Rule    deployment.RollbackRule
	// The stable deployment: its desired version, whether the reconciler
	// observed it running at its latest generation, and whether Swarm is
	// still rolling its service(s).
	StableVersion int
	StableRunning bool
	StableRolling bool
	// Figures are the canary's over Rule.Window; nil when the gateways
	// published none (no traffic, or the figures could not be read).
	Figures *Figures
}

// Action is what to do.
type Action string

// The actions.
const (
	Nothing       Action = ""
	FinishPromote Action = "finish-promote"
	Rollback      Action = "rollback"
)

// Decide is the rule: a promoting canary is retired once the stable
// service runs its version, observed running and no longer rolling; an
// active canary with a rule is rolled back when, over the window and with
// at least MinRequests answered, its error rate is above the bound, or its
// p99 latency is. The reason says why in words (status shows it).
func Decide(r Rollout) (Action, string) {
	switch r.State {
	case deployment.RolloutPromoting:
		if r.StableVersion == r.Version && r.StableRunning && !r.StableRolling {
			return FinishPromote, fmt.Sprintf("promoted: version %d serves all traffic", r.Version)
		}
		return Nothing, ""
	case deployment.RolloutActive:
	default:
		return Nothing, ""
	}
	if !r.Rule.Enabled() || r.Figures == nil || r.Figures.Requests < MinRequests {
		return Nothing, ""
	}
	f, w := *r.Figures, r.Rule.Window.String()
	if rate := float64(f.Errors) / float64(f.Requests); r.Rule.MaxErrorRate > 0 && rate > r.Rule.MaxErrorRate {
		return Rollback, fmt.Sprintf("rolled back automatically: error rate %s > %s over %s (%d of %d requests failed)",
			percent(rate), percent(r.Rule.MaxErrorRate), w, f.Errors, f.Requests)
	}
	if r.Rule.MaxP99 > 0 && f.P99 > r.Rule.MaxP99 {
		return Rollback, fmt.Sprintf("rolled back automatically: p99 latency %s > %s over %s (%d requests)",
			f.P99.Round(time.Millisecond), r.Rule.MaxP99, w, f.Requests)
	}
	return Nothing, ""
}

// percent writes a fraction as a percentage with one decimal ("12.5%"),
// without a trailing ".0" for a whole one.
func percent(f float64) string {
	s := strconv.FormatFloat(f*100, 'f', 1, 64)
	if len(s) > 2 && s[len(s)-2:] == ".0" {
		s = s[:len(s)-2]
	}
	return s + "%"
}
