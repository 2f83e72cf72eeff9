package apiserver

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"sort"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5"

	"github.com/nlpswarm/nlpswarm/internal/deployment"
	"github.com/nlpswarm/nlpswarm/internal/versionstats"
)

// CanaryRequest, in a deployment request, deploys the version as the
// model's canary beside its stable deployment instead of replacing it
// (issue 20): weight percent of the requests (or, with shadow, a copy of
// every request whose answers are only compared), with its own replicas,
// resources and autoscaling bounds (the request's), and an optional
// automatic rollback rule.
type CanaryRequest struct {
	Weight   float64          `json:"weight"` // percent, (0, 100]; absent with shadow
	Shadow   bool             `json:"shadow"`
	Sticky   bool             `json:"sticky"` // the same API key → the same version
	Rollback *RollbackRequest `json:"rollback"`
}

// RollbackRequest is the automatic rollback rule: the scheduler rolls the
// canary back when, over window, its error rate is above max_error_rate (a
// fraction: 0.05 is 5 %) or its p99 latency above max_p99.
type RollbackRequest struct {
	MaxErrorRate float64  `json:"max_error_rate"`
	MaxP99       Duration `json:"max_p99"`
	Window       Duration `json:"window"`
}

// split is the record's mode and weight of a canary request.
func (c CanaryRequest) split() (string, float64) {
	if c.Shadow {
		return deployment.ModeShadow, c.Weight
	}
	return deployment.ModeCanary, c.Weight
}

// rule is the record's rollback rule of a canary request.
func (c CanaryRequest) rule() deployment.RollbackRule {
	if c.Rollback == nil {
		return deployment.RollbackRule{}
	}
	return deployment.RollbackRule{MaxErrorRate: c.Rollback.MaxErrorRate, MaxP99: time.Duration(c.Rollback.MaxP99),
		Window: time.Duration(c.Rollback.Window)}
}

// check validates a canary request (the record validates again on write).
func (c CanaryRequest) check() error {
	if math.IsNaN(c.Weight) || math.IsInf(c.Weight, 0) {
		return fmt.Errorf("canary.weight must be a number")
	}
	mode, w := c.split()
	if err := deployment.ValidateSplit(mode, w); err != nil {
		return err
	}
	return c.rule().Validate()
}

// Canary is a model's canary as the API shows it: its own deployment (own
// version, replicas, resources, status) and its split, rule and rollout.
type Canary struct {
	Deployment
	Mode     string           `json:"mode"`   // canary or shadow
	Weight   float64          `json:"weight"` // percent of requests (canary mode)
	Sticky   bool             `json:"sticky"`
	Rollback *RollbackRequest `json:"rollback"` // null: no automatic rollback rule
	// State is active, promoting, promoted or rolled_back; Reason says why
	// (the automatic rule's words when it rolled the canary back).
	State     string     `json:"state"`
	Reason    string     `json:"reason"`
	RetiredAt *time.Time `json:"retired_at"`
}

// VersionStats are one version's live figures over the status window, as
// the gateways publish them (internal/versionstats).
type VersionStats struct {
	Version   int     `json:"version"`
	Shadow    bool    `json:"shadow"` // the figures are those of shadow copies
	Requests  int64   `json:"requests"`
	Errors    int64   `json:"errors"`
	RPS       float64 `json:"rps"`
	ErrorRate float64 `json:"error_rate"`
	P50MS     float64 `json:"p50_ms"`
	P99MS     float64 `json:"p99_ms"`
	// Shadow agreement: answers compared with the customer's, and the
	// fraction that agreed (same top label; embeddings: cosine ≥ 0.99)
	ShadowCompared int64   `json:"shadow_compared"`
	ShadowAgreed   int64   `json:"shadow_agreed"`
	Agreement      float64 `json:"agreement"`
}

// StatsWindow is the window of the per-version figures status shows.
const StatsWindow = time.Minute

func canaryOf(r deployment.Record) *Canary {
	c := &Canary{Deployment: deploymentOf(r), Mode: r.Canary.Mode, Weight: r.Canary.Weight, Sticky: r.Canary.Sticky,
		State: r.Canary.State, Reason: r.Canary.Reason, RetiredAt: r.Canary.RetiredAt}
	if rule := r.Canary.Rollback; rule.Enabled() {
		c.Rollback = &RollbackRequest{MaxErrorRate: rule.MaxErrorRate, MaxP99: Duration(rule.MaxP99), Window: Duration(rule.Window)}
	}
	return c
}

// addCanary adds model's canary (routed or retired) and the per-version
// figures to d.
func (s *Server) addCanary(ctx context.Context, d *Deployment) error {
	c, err := deployment.GetCanary(ctx, s.db, d.Model)
	switch {
	case err == nil:
		d.Canary = canaryOf(c)
	case !errors.Is(err, deployment.ErrNotFound):
		return err
	}
	d.Versions, d.VersionsError = s.versionStats(ctx, d.Model)
	return nil
}

// versionStats reads model's per-version figures over StatsWindow, by
// version; a reason instead when Redis is not there.
func (s *Server) versionStats(ctx context.Context, model string) ([]VersionStats, string) {
	if s.cfg.Redis == nil {
		return []VersionStats{}, "Redis is not configured (--redis.addr): per-version figures are not shown"
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	m, err := versionstats.Read(rctx, s.cfg.Redis, s.cfg.RedisPrefix, model, StatsWindow)
	if err != nil {
		s.log.Warn("version figures unread", "model", model, "err", err)
		return []VersionStats{}, "Redis is unreachable: per-version figures are not shown"
	}
	out := make([]VersionStats, 0, len(m))
	for _, st := range m {
		out = append(out, VersionStats{Version: st.Version, Shadow: st.Shadow, Requests: st.Requests, Errors: st.Errors, RPS: st.RPS,
			ErrorRate: st.ErrorRate, P50MS: ms(st.P50), P99MS: ms(st.P99), ShadowCompared: st.ShadowCompared,
			ShadowAgreed: st.ShadowAgreed, Agreement: st.Agreement})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, ""
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// promote starts moving all of the model's traffic to its canary's version
// (deployment.Promote): 202, the deployment as it is now.
func (s *Server) promote(c *gin.Context) {
	if err := s.promoteCanary(c.Request.Context(), c.Param("name")); err != nil {
		s.fail(c, err)
		return
	}
	s.writeDeployment(c, http.StatusAccepted)
}

func (s *Server) promoteCanary(ctx context.Context, name string) error {
	if err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error { _, err := deployment.Promote(ctx, tx, name); return err }); err != nil {
		return fmt.Errorf("promote %s: %w", name, err)
	}
	return nil
}

// rollback takes the model's canary out of the routing at once.
func (s *Server) rollback(c *gin.Context) {
	ctx := c.Request.Context()
	name := c.Param("name")
	if err := s.rollbackCanary(ctx, name, "rolled back by an operator"); err != nil {
		s.fail(c, err)
		return
	}
	s.writeDeployment(c, http.StatusOK)
}

func (s *Server) rollbackCanary(ctx context.Context, name, why string) error {
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		_, _, err := deployment.Rollback(ctx, tx, name, why, false)
		return err
	})
	if err != nil {
		return fmt.Errorf("rollback %s: %w", name, err)
	}
	return nil
}

func (s *Server) writeDeployment(c *gin.Context, status int) {
	d, err := s.loadDeployment(c.Request.Context(), c.Param("name"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(status, d)
}
