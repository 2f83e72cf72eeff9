package autoscale

import (
	"fmt"
	"math"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/deployment"
)

// Bounds are a deployment's autoscaling settings: the record's own type,
// with its defaults and validation (internal/deployment), so that the API,
// the CLI and this rule read one definition.
type Bounds = deployment.Autoscale

// Sample is one second of a model's load, summed over every gateway.
type Sample struct {
	At       time.Time
	Inflight float64 // average requests in flight (held ones included)
	Rate     float64 // requests per second that arrived
}

// Input is everything the rule looks at.
type Input struct {
	Now     time.Time
	Current int // replicas the deployment has now (desired)
	Bounds  Bounds
	// Samples are the recent seconds, oldest first; the rule reads those
	// within ScaleDownDelay of Now.
	Samples []Sample
	// SinceScale is the time since the replica count last changed (by
	// anyone: deploy, scale, the autoscaler).
	SinceScale time.Duration
	// LastRequest is when a request for the model last arrived at a gateway
	// (zero: none seen since the scheduler started).
	LastRequest time.Time
	// Wake: a gateway holds requests for the model at zero and asked for a replica.
	Wake bool
}

// Decision is the replica count the deployment should have, and why.
type Decision struct {
	Replicas int
	Reason   string
}

// Changed reports whether d differs from the current count.
func (d Decision) Changed(current int) bool { return d.Replicas != current }

// freshness: a sample older than this says nothing about now.
const freshness = 3 * time.Second

// recommend is ceil(inflight / target): the replicas that would carry the
// load at the target.
func recommend(inflight, target float64) int {
	if inflight <= 0 {
		return 0
	}
	return int(math.Ceil(inflight/target - 1e-9))
}

// Decide is the rule, in this order:
//
//  1. At zero: a held request (Wake) or any load → ceil(in-flight/target), at
//     least 1, at most Max, at once. Otherwise stay at zero (or rise to Min).
//  2. The floor is Min; with Min 0 it is 1 until IdleToZero has passed since
//     the last request (or since the last change, when no request was seen).
//  3. Up, at once: want = ceil(latest in-flight / target) clamped to
//     [floor, Max]; if want > current, go there.
//  4. Out of bounds (current above Max or below the floor): back inside at once.
//  5. Zero: Min 0, no request for IdleToZero, nothing in flight → 0.
//  6. Down, only when the last change is ScaleDownDelay old: the highest
//     recommendation over the last ScaleDownDelay of samples, clamped to
//     [floor, Max]; if below current, go there. A lower recommendation must
//     therefore hold for the whole delay, which is what prevents flapping.
//  7. Otherwise keep.
func Decide(in Input) Decision {
	b := in.Bounds.WithDefaults()
	var latest Sample
	if n := len(in.Samples); n > 0 && in.Now.Sub(in.Samples[n-1].At) <= freshness {
		latest = in.Samples[n-1]
	}
	recLatest := recommend(latest.Inflight, b.TargetInflight)

	idleSince := in.LastRequest
	if idleSince.IsZero() { // no request seen: count from the last change
		idleSince = in.Now.Add(-in.SinceScale)
	}
	idle := in.Now.Sub(idleSince)

	if in.Current == 0 {
		if in.Wake || latest.Inflight > 0 || latest.Rate > 0 {
			n := min(max(recLatest, 1), b.Max)
			return Decision{n, fmt.Sprintf("scale from zero: %s waiting", load(latest, in.Wake))}
		}
		if b.Min > 0 {
			return Decision{b.Min, fmt.Sprintf("raise to min %d", b.Min)}
		}
		return Decision{0, "at zero, no request"}
	}

	floor := b.Min
	if floor == 0 && (idle < b.IdleToZero || latest.Inflight > 0 || in.Wake) {
		floor = 1
	}
	if want := min(max(recLatest, floor), b.Max); recLatest > in.Current && want > in.Current {
		return Decision{want, fmt.Sprintf("scale up: %.1f in flight, target %g per replica", latest.Inflight, b.TargetInflight)}
	}
	if in.Current > b.Max {
		return Decision{b.Max, fmt.Sprintf("lower to max %d", b.Max)}
	}
	if in.Current < floor {
		return Decision{floor, fmt.Sprintf("raise to floor %d", floor)}
	}
	if floor == 0 {
		return Decision{0, fmt.Sprintf("scale to zero: no request for %s (idle_to_zero %s)", idle.Round(time.Second), b.IdleToZero)}
	}
	if in.SinceScale < b.ScaleDownDelay {
		return Decision{in.Current, "steady"}
	}
	stable, seen := 0, false
	for _, s := range in.Samples {
		if in.Now.Sub(s.At) <= b.ScaleDownDelay {
			stable = max(stable, recommend(s.Inflight, b.TargetInflight))
			seen = true
		}
	}
	if !seen { // no figures (Redis or the gateways silent): never scale down blind
		return Decision{in.Current, "no load figures; keeping replicas"}
	}
	if want := min(max(stable, floor), b.Max); want < in.Current {
		return Decision{want, fmt.Sprintf("scale down: %d replica(s) enough for the last %s", want, b.ScaleDownDelay)}
	}
	return Decision{in.Current, "steady"}
}

func load(s Sample, wake bool) string {
	switch {
	case s.Inflight > 0:
		return fmt.Sprintf("%.1f request(s) in flight", s.Inflight)
	case s.Rate > 0:
		return fmt.Sprintf("%.1f request(s)/s", s.Rate)
	case wake:
		return "a gateway holds requests"
	}
	return "requests"
}
