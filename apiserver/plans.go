package apiserver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5"

	"github.com/nlpswarm/nlpswarm/internal/limitkeys"
	"github.com/nlpswarm/nlpswarm/modelmgr"
)

// Plans, an account's plan and its live limits, and revoking a key by its
// prefix. The gateways read a key's plan through their key cache (at most
// 2 s old), so a plan change reaches every request within seconds; they keep
// the counts in Redis under internal/limitkeys' names, which the account
// page reads.

// PlanPatch is a partial plan update: the fields left out keep their value.
type PlanPatch struct {
	RequestsPerSecond *float64 `json:"requests_per_second"`
	Burst             *int     `json:"burst"`
	MonthlyQuota      *int64   `json:"monthly_quota"`
	TokensPerMinute   *int64   `json:"tokens_per_minute"`
	TokensPerMonth    *int64   `json:"tokens_per_month"`
}

var planName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// validPlan is the one check of a plan's figures, for create and update.
func validPlan(p Plan) error {
	if !planName.MatchString(p.Name) {
		return badRequest("a plan's name is 1 to 64 letters, digits, '.', '_' or '-' (it goes in URLs)")
	}
	if p.RequestsPerSecond <= 0 || p.RequestsPerSecond > 1e6 || p.Burst <= 0 || p.Burst > 1e6 || p.MonthlyQuota < 0 {
		return badRequest("a plan needs 0 < requests_per_second ≤ 1000000, 0 < burst ≤ 1000000, monthly_quota ≥ 0 (0 = unlimited)")
	}
	if p.TokensPerMinute < 0 || p.TokensPerMonth < 0 {
		return badRequest("a plan's tokens_per_minute and tokens_per_month are ≥ 0 (0 = unlimited)")
	}
	return nil
}

// insertPlan creates plan p.
func (s *Server) insertPlan(ctx context.Context, p Plan) (Plan, error) {
	p.Name = strings.TrimSpace(p.Name)
	if err := validPlan(p); err != nil {
		return p, err
	}
	err := s.db.QueryRow(ctx, `INSERT INTO plans (name, requests_per_second, burst, monthly_quota, tokens_per_minute, tokens_per_month)
		VALUES ($1,$2,$3,$4,$5,$6) RETURNING id`,
		p.Name, p.RequestsPerSecond, p.Burst, p.MonthlyQuota, p.TokensPerMinute, p.TokensPerMonth).Scan(&p.ID)
	switch {
	case isUnique(err):
		return p, &requestError{status: http.StatusConflict, code: "conflict", message: "plan " + p.Name + " exists"}
	case err != nil:
		return p, fmt.Errorf("create plan: %w", err)
	}
	return p, nil
}

// updatePlan changes plan name's figures that patch sets, in one
// transaction (the row is locked between the read and the write).
func (s *Server) updatePlan(ctx context.Context, name string, patch PlanPatch) (Plan, error) {
	tx, err := s.db.Begin(ctx)
	if err != nil {
		return Plan{}, fmt.Errorf("update plan: %w", err)
	}
	defer tx.Rollback(ctx)
	var p Plan
	err = tx.QueryRow(ctx, `SELECT id, name, requests_per_second, burst, monthly_quota, tokens_per_minute, tokens_per_month
		FROM plans WHERE name = $1 FOR UPDATE`, name).
		Scan(&p.ID, &p.Name, &p.RequestsPerSecond, &p.Burst, &p.MonthlyQuota, &p.TokensPerMinute, &p.TokensPerMonth)
	if errors.Is(err, pgx.ErrNoRows) {
		return Plan{}, fmt.Errorf("plan %s: %w", name, modelmgr.ErrNotFound)
	}
	if err != nil {
		return Plan{}, fmt.Errorf("update plan: %w", err)
	}
	if patch.RequestsPerSecond != nil {
		p.RequestsPerSecond = *patch.RequestsPerSecond
	}
	if patch.Burst != nil {
		p.Burst = *patch.Burst
	}
	if patch.MonthlyQuota != nil {
		p.MonthlyQuota = *patch.MonthlyQuota
	}
	if patch.TokensPerMinute != nil {
		p.TokensPerMinute = *patch.TokensPerMinute
	}
	if patch.TokensPerMonth != nil {
		p.TokensPerMonth = *patch.TokensPerMonth
	}
	if err := validPlan(p); err != nil {
		return Plan{}, err
	}
	if _, err := tx.Exec(ctx, `UPDATE plans SET requests_per_second = $2, burst = $3, monthly_quota = $4,
		tokens_per_minute = $5, tokens_per_month = $6 WHERE id = $1`,
		p.ID, p.RequestsPerSecond, p.Burst, p.MonthlyQuota, p.TokensPerMinute, p.TokensPerMonth); err != nil {
		return Plan{}, fmt.Errorf("update plan: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return Plan{}, fmt.Errorf("update plan: %w", err)
	}
	return p, nil
}

func (s *Server) patchPlan(c *gin.Context) {
	var patch PlanPatch
	if !decode(c, &patch) {
		return
	}
	p, err := s.updatePlan(c.Request.Context(), c.Param("name"), patch)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, p)
}

// setAccountPlan moves account id to plan.
func (s *Server) setAccountPlan(ctx context.Context, id int64, plan string) (Account, error) {
	if plan == "" {
		return Account{}, badRequest("name the plan")
	}
	var pid int64
	err := s.db.QueryRow(ctx, `SELECT id FROM plans WHERE name = $1`, plan).Scan(&pid)
	if errors.Is(err, pgx.ErrNoRows) {
		return Account{}, badRequest("no plan named " + plan)
	}
	if err != nil {
		return Account{}, fmt.Errorf("read plan: %w", err)
	}
	tag, err := s.db.Exec(ctx, `UPDATE accounts SET plan_id = $2 WHERE id = $1`, id, pid)
	if err != nil {
		return Account{}, fmt.Errorf("set plan of account %d: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return Account{}, fmt.Errorf("account %d: %w", id, modelmgr.ErrNotFound)
	}
	accs, err := s.queryAccounts(ctx, id)
	if err != nil || len(accs) == 0 {
		return Account{}, cmpErr(err, fmt.Errorf("account %d: %w", id, modelmgr.ErrNotFound))
	}
	return accs[0], nil
}

func cmpErr(err, otherwise error) error {
	if err != nil {
		return err
	}
	return otherwise
}

func (s *Server) patchAccount(c *gin.Context) {
	id, ok := accountID(c)
	if !ok {
		return
	}
	var req struct {
		Plan string `json:"plan"`
	}
	if !decode(c, &req) {
		return
	}
	a, err := s.setAccountPlan(c.Request.Context(), id, req.Plan)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, a)
}

// revokePrefix revokes the key whose prefix is prefix (again is a no-op)
// and returns it.
func (s *Server) revokePrefix(ctx context.Context, prefix string) (Key, error) {
	var k Key
	if prefix == "" || len(prefix) > 64 {
		return k, badRequest("a key prefix is a few characters, as `keys ls` shows it")
	}
	err := s.db.QueryRow(ctx, `UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE prefix = $1
		RETURNING id, account_id, name, prefix, kind, created_at, revoked_at, last_used_at`, prefix).
		Scan(&k.ID, &k.AccountID, &k.Name, &k.Prefix, &k.Kind, &k.CreatedAt, &k.RevokedAt, &k.LastUsedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return k, &requestError{status: http.StatusNotFound, code: "not_found", message: "no key with prefix " + prefix}
	}
	if err != nil {
		return k, fmt.Errorf("revoke key %s: %w", prefix, err)
	}
	return k, nil
}

func (s *Server) revokeKeyByPrefix(c *gin.Context) {
	k, err := s.revokePrefix(c.Request.Context(), c.Param("prefix"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, k)
}

// KeyLimits is a key with what Redis counts for it now.
type KeyLimits struct {
	Key
	// QuotaUsed: requests counted against the monthly quota this month.
	QuotaUsed int64 `json:"quota_used"`
	// Backlog: requests beyond the plan's steady rate that the rate
	// limit's burst is absorbing now (0: at or under the rate).
	Backlog float64 `json:"backlog"`
	// TokensUsed: tokens counted against the monthly token budget this
	// month (0 without one).
	TokensUsed int64 `json:"tokens_used"`
}

// AccountDetail is an account with its plan and its keys' live limits.
type AccountDetail struct {
	Account
	Limits *Plan       `json:"limits,omitempty"` // the plan's figures; nil: no plan, no limits
	Month  string      `json:"month"`            // the quota month (UTC, YYYYMM)
	Keys   []KeyLimits `json:"keys"`
	// QuotaUsed sums the keys' counts this month (the quota applies to each
	// key).
	QuotaUsed int64 `json:"quota_used"`
	// LimitsError says why the live figures are missing (Redis unreachable
	// or not configured); the rest is from Postgres.
	LimitsError string `json:"limits_error,omitempty"`
}

// accountDetail reads account id, its plan and keys (Postgres) and its
// keys' quota counts and rate-limit backlogs (Redis).
func (s *Server) accountDetail(ctx context.Context, id int64) (AccountDetail, error) {
	accs, err := s.queryAccounts(ctx, id)
	if err != nil {
		return AccountDetail{}, err
	}
	if len(accs) == 0 {
		return AccountDetail{}, fmt.Errorf("account %d: %w", id, modelmgr.ErrNotFound)
	}
	d := AccountDetail{Account: accs[0], Month: limitkeys.Month(time.Now()), Keys: []KeyLimits{}}
	var p Plan
	err = s.db.QueryRow(ctx, `SELECT p.id, p.name, p.requests_per_second, p.burst, p.monthly_quota, p.tokens_per_minute, p.tokens_per_month
		FROM accounts a JOIN plans p ON p.id = a.plan_id WHERE a.id = $1`, id).
		Scan(&p.ID, &p.Name, &p.RequestsPerSecond, &p.Burst, &p.MonthlyQuota, &p.TokensPerMinute, &p.TokensPerMonth)
	switch {
	case err == nil:
		d.Limits = &p
	case !errors.Is(err, pgx.ErrNoRows):
		return d, fmt.Errorf("read plan of account %d: %w", id, err)
	}
	keys, err := s.queryKeys(ctx, id)
	if err != nil {
		return d, err
	}
	plans := make([]limitkeys.Plan, len(keys))
	for i, k := range keys {
		d.Keys = append(d.Keys, KeyLimits{Key: k})
		plans[i] = limitkeys.Plan{ID: k.ID, RPS: p.RequestsPerSecond}
	}
	if s.cfg.Redis == nil {
		d.LimitsError = "Redis is not configured (--redis.addr): live rate and quota figures are not shown"
		return d, nil
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	states, err := limitkeys.Read(rctx, s.cfg.Redis, s.cfg.RedisPrefix, plans, d.Month)
	if err != nil {
		s.log.Warn("account limits unread", "account", id, "err", err)
		d.LimitsError = "Redis is unreachable: live rate and quota figures are not shown"
		return d, nil
	}
	for i, st := range states {
		d.Keys[i].QuotaUsed, d.Keys[i].Backlog, d.Keys[i].TokensUsed = st.QuotaUsed, st.Backlog, st.TokensMonth
		d.QuotaUsed += st.QuotaUsed
	}
	return d, nil
}

func (s *Server) getAccount(c *gin.Context) {
	id, ok := accountID(c)
	if !ok {
		return
	}
	d, err := s.accountDetail(c.Request.Context(), id)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, d)
}
