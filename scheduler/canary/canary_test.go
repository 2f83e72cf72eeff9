package canary

import (
	"testing"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/deployment"
)

func TestDecide(t *testing.T) {
	rule := deployment.RollbackRule{MaxErrorRate: 0.05, MaxP99: 500 * time.Millisecond, Window: 30 * time.Second}
	active := func(f *Figures) Rollout {
		return Rollout{Model: "m", State: deployment.RolloutActive, Mode: deployment.ModeCanary, Version: 2, Rule: rule, StableVersion: 1, Figures: f}
	}
	promoting := func(v int, running, rolling bool) Rollout {
		return Rollout{Model: "m", State: deployment.RolloutPromoting, Version: 2, Rule: rule, StableVersion: v, StableRunning: running, StableRolling: rolling,
			Figures: &Figures{Requests: 100, Errors: 100}}
	}
	for _, c := range []struct {
		name   string
		r      Rollout
		want   Action
		reason string
	}{
		{"no figures", active(nil), Nothing, ""},
		{"healthy", active(&Figures{Requests: 1000, Errors: 10, P99: 40 * time.Millisecond}), Nothing, ""},
		{"at the bound is within it", active(&Figures{Requests: 100, Errors: 5, P99: 500 * time.Millisecond}), Nothing, ""},
		{"too few requests", active(&Figures{Requests: 4, Errors: 4}), Nothing, ""},
		{"error rate", active(&Figures{Requests: 200, Errors: 24, P99: time.Millisecond}), Rollback,
			"rolled back automatically: error rate 12% > 5% over 30s (24 of 200 requests failed)"},
		{"every request fails", active(&Figures{Requests: 5, Errors: 5}), Rollback,
			"rolled back automatically: error rate 100% > 5% over 30s (5 of 5 requests failed)"},
		{"p99", active(&Figures{Requests: 50, P99: 1200 * time.Millisecond}), Rollback,
			"rolled back automatically: p99 latency 1.2s > 500ms over 30s (50 requests)"},
		{"no rule", Rollout{State: deployment.RolloutActive, Figures: &Figures{Requests: 100, Errors: 100}}, Nothing, ""},
		{"p99 bound only", Rollout{State: deployment.RolloutActive, Rule: deployment.RollbackRule{MaxP99: time.Second, Window: time.Minute},
			Figures: &Figures{Requests: 100, Errors: 100, P99: time.Millisecond}}, Nothing, ""},
		{"error bound only, fractional", Rollout{State: deployment.RolloutActive, Rule: deployment.RollbackRule{MaxErrorRate: 0.001, Window: time.Minute},
			Figures: &Figures{Requests: 1000, Errors: 25, P99: time.Hour}}, Rollback,
			"rolled back automatically: error rate 2.5% > 0.1% over 1m0s (25 of 1000 requests failed)"},
		{"promoting: stable still old", promoting(1, true, false), Nothing, ""},
		{"promoting: stable not observed running", promoting(2, false, false), Nothing, ""},
		{"promoting: stable still rolling", promoting(2, true, true), Nothing, ""},
		{"promoting: done (the rule no longer applies)", promoting(2, true, false), FinishPromote, "promoted: version 2 serves all traffic"},
		{"retired", Rollout{State: deployment.RolloutRolledBack, Rule: rule, Figures: &Figures{Requests: 100, Errors: 100}}, Nothing, ""},
	} {
		a, why := Decide(c.r)
		if a != c.want || why != c.reason {
			t.Errorf("%s: %q %q, want %q %q", c.name, a, why, c.want, c.reason)
		}
	}
}
