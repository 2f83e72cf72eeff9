package apiserver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/nlpswarm/nlpswarm/internal/apikey"
	"github.com/nlpswarm/nlpswarm/internal/deployment"
	"github.com/nlpswarm/nlpswarm/modelmgr"
)

// Plan is a row of plans.
type Plan struct {
	ID                int64   `json:"id"`
	Name              string  `json:"name"`
	RequestsPerSecond float64 `json:"requests_per_second"`
	Burst             int     `json:"burst"`
	MonthlyQuota      int64   `json:"monthly_quota"`
	// token budgets of generation requests per key (0 = unlimited)
	TokensPerMinute int64 `json:"tokens_per_minute"`
	TokensPerMonth  int64 `json:"tokens_per_month"`
}

func (s *Server) listPlans(c *gin.Context) {
	out, err := s.queryPlans(c.Request.Context())
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"plans": out})
}

func (s *Server) queryPlans(ctx context.Context) ([]Plan, error) {
	rows, err := s.db.Query(ctx, `SELECT id, name, requests_per_second, burst, monthly_quota, tokens_per_minute, tokens_per_month FROM plans ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("query plans: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Plan, error) {
		var p Plan
		return p, r.Scan(&p.ID, &p.Name, &p.RequestsPerSecond, &p.Burst, &p.MonthlyQuota, &p.TokensPerMinute, &p.TokensPerMonth)
	})
}

func (s *Server) createPlan(c *gin.Context) {
	var p Plan
	if !decode(c, &p) {
		return
	}
	p, err := s.insertPlan(c.Request.Context(), p)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusCreated, p)
}

// Account is a customer.
type Account struct {
	ID        int64     `json:"id"`
	Name      string    `json:"name"`
	Plan      string    `json:"plan"`
	CreatedAt time.Time `json:"created_at"`
}

func (s *Server) listAccounts(c *gin.Context) {
	out, err := s.queryAccounts(c.Request.Context(), 0)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"accounts": out})
}

// queryAccounts lists every account, or the one with id when id > 0.
func (s *Server) queryAccounts(ctx context.Context, id int64) ([]Account, error) {
	rows, err := s.db.Query(ctx, `SELECT a.id, a.name, COALESCE(p.name, ''), a.created_at
		FROM accounts a LEFT JOIN plans p ON p.id = a.plan_id WHERE $1 = 0 OR a.id = $1 ORDER BY a.id`, id)
	if err != nil {
		return nil, fmt.Errorf("query accounts: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Account, error) {
		var a Account
		return a, r.Scan(&a.ID, &a.Name, &a.Plan, &a.CreatedAt)
	})
}

func (s *Server) createAccount(c *gin.Context) {
	var req struct {
		Name string `json:"name"`
		Plan string `json:"plan"`
	}
	if !decode(c, &req) {
		return
	}
	a, err := s.insertAccount(c.Request.Context(), req.Name, req.Plan)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusCreated, a)
}

// insertAccount creates a customer on plan (default free).
func (s *Server) insertAccount(ctx context.Context, name, plan string) (Account, error) {
	if name == "" || len(name) > 128 {
		return Account{}, badRequest("account needs a name of at most 128 characters")
	}
	if plan == "" {
		plan = "free"
	}
	a := Account{Name: name, Plan: plan}
	err := s.db.QueryRow(ctx, `INSERT INTO accounts (name, plan_id)
		SELECT $1, id FROM plans WHERE name = $2 RETURNING id, created_at`, name, plan).Scan(&a.ID, &a.CreatedAt)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return a, badRequest("no plan named " + plan)
	case isUnique(err):
		return a, &requestError{status: http.StatusConflict, code: "conflict", message: "account " + name + " exists"}
	case err != nil:
		return a, fmt.Errorf("create account: %w", err)
	}
	return a, nil
}

// Key is an API key as listed: never the key itself.
type Key struct {
	ID         int64      `json:"id"`
	AccountID  int64      `json:"account_id"`
	Name       string     `json:"name"`
	Prefix     string     `json:"prefix"`
	Kind       string     `json:"kind"`
	CreatedAt  time.Time  `json:"created_at"`
	RevokedAt  *time.Time `json:"revoked_at,omitempty"`
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
	// Key is set only in the answer that creates it.
	Key string `json:"key,omitempty"`
}

func accountID(c *gin.Context) (int64, bool) {
	id, err := strconv.ParseInt(c.Param("id"), 10, 64)
	if err != nil || id <= 0 {
		abort(c, http.StatusBadRequest, "invalid_request", "account id must be a positive integer")
		return 0, false
	}
	return id, true
}

func (s *Server) createKey(c *gin.Context) {
	id, ok := accountID(c)
	if !ok {
		return
	}
	var req struct {
		Name string `json:"name"`
	}
	if c.Request.ContentLength != 0 && !decode(c, &req) {
		return
	}
	k, err := s.insertKey(c.Request.Context(), id, req.Name)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusCreated, k)
}

// insertKey makes a new inference key for account id. The answer is the
// only place the key itself ever appears; only its hash is stored.
func (s *Server) insertKey(ctx context.Context, id int64, name string) (Key, error) {
	if len(name) > 128 {
		return Key{}, badRequest("key name longer than 128 characters")
	}
	key, prefix, hash, err := apikey.Generate()
	if err != nil {
		return Key{}, fmt.Errorf("generate key: %w", err)
	}
	k := Key{AccountID: id, Name: name, Prefix: prefix, Kind: "inference", Key: key}
	err = s.db.QueryRow(ctx, `INSERT INTO api_keys (account_id, name, prefix, hash) VALUES ($1,$2,$3,$4) RETURNING id, created_at`,
		id, name, prefix, hash).Scan(&k.ID, &k.CreatedAt)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23503" {
		return Key{}, fmt.Errorf("account %d: %w", id, modelmgr.ErrNotFound)
	}
	if err != nil {
		return Key{}, fmt.Errorf("create key: %w", err)
	}
	return k, nil
}

func (s *Server) listKeys(c *gin.Context) {
	id, ok := accountID(c)
	if !ok {
		return
	}
	out, err := s.queryKeys(c.Request.Context(), id)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"keys": out})
}

// queryKeys lists an account's keys: never the keys themselves.
func (s *Server) queryKeys(ctx context.Context, account int64) ([]Key, error) {
	rows, err := s.db.Query(ctx, `SELECT id, account_id, name, prefix, kind, created_at, revoked_at, last_used_at
		FROM api_keys WHERE account_id = $1 ORDER BY id`, account)
	if err != nil {
		return nil, fmt.Errorf("query keys: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Key, error) {
		var k Key
		return k, r.Scan(&k.ID, &k.AccountID, &k.Name, &k.Prefix, &k.Kind, &k.CreatedAt, &k.RevokedAt, &k.LastUsedAt)
	})
}

func (s *Server) revokeKey(c *gin.Context) {
	id, ok := accountID(c)
	if !ok {
		return
	}
	kid, err := strconv.ParseInt(c.Param("kid"), 10, 64)
	if err != nil {
		abort(c, http.StatusBadRequest, "invalid_request", "key id must be an integer")
		return
	}
	if err := s.revoke(c.Request.Context(), id, kid); err != nil {
		s.fail(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}

// revoke marks key kid of account id revoked (again is a no-op).
func (s *Server) revoke(ctx context.Context, id, kid int64) error {
	tag, err := s.db.Exec(ctx, `UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1 AND account_id = $2`, kid, id)
	if err != nil {
		return fmt.Errorf("revoke key %d: %w", kid, err)
	}
	if tag.RowsAffected() == 0 {
		return &requestError{status: http.StatusNotFound, code: "not_found", message: "no such key for this account"}
	}
	return nil
}

// UsageRow is one account, model and day.
type UsageRow struct {
	Account  string `json:"account"`
	Model    string `json:"model"`
	Day      string `json:"day"`
	Requests int64  `json:"requests"`
	Texts    int64  `json:"texts"`
	Errors   int64  `json:"errors"`
	// generation's tokens (migration 00038; 0 for the encoder tasks)
	InputTokens  int64 `json:"input_tokens"`
	OutputTokens int64 `json:"output_tokens"`
}

func (s *Server) usage(c *gin.Context) {
	from, to := c.DefaultQuery("from", time.Now().UTC().AddDate(0, 0, -30).Format("2006-01-02")), c.DefaultQuery("to", time.Now().UTC().Format("2006-01-02"))
	for _, d := range []string{from, to} {
		if _, err := time.Parse("2006-01-02", d); err != nil {
			abort(c, http.StatusBadRequest, "invalid_request", "from and to are dates like 2026-11-24")
			return
		}
	}
	out, err := s.queryUsage(c.Request.Context(), from, to, c.Query("account"), c.Query("model"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"from": from, "to": to, "usage": out})
}

// queryUsage sums usage per account, model and day between from and to
// (dates, inclusive); account (name or id) and model filter when not "".
func (s *Server) queryUsage(ctx context.Context, from, to, account, model string) ([]UsageRow, error) {
	// usage outlives its key, model and account (migration 00020): the row's
	// own account id and model name stand in for what was deleted
	rows, err := s.db.Query(ctx, `WITH r AS (
			SELECT coalesce(u.account_id, k.account_id) AS account_id, coalesce(nullif(u.model_name, ''), m.name, 'model #' || u.model_id) AS model,
				u.day, u.requests, u.texts, u.errors, u.input_tokens, u.output_tokens
			FROM usage u LEFT JOIN api_keys k ON k.id = u.api_key_id LEFT JOIN models m ON m.id = u.model_id
			WHERE u.day BETWEEN $1::date AND $2::date)
		SELECT coalesce(a.name, 'deleted account #' || coalesce(r.account_id::text, '?')), r.model, to_char(r.day, 'YYYY-MM-DD'),
			sum(r.requests)::bigint, sum(r.texts)::bigint, sum(r.errors)::bigint, sum(r.input_tokens)::bigint, sum(r.output_tokens)::bigint
		FROM r LEFT JOIN accounts a ON a.id = r.account_id
		WHERE ($3 = '' OR a.name = $3 OR r.account_id::text = $3) AND ($4 = '' OR r.model = $4)
		GROUP BY 1, 2, r.day ORDER BY r.day, 1, 2`, from, to, account, model)
	if err != nil {
		return nil, fmt.Errorf("query usage: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (UsageRow, error) {
		var u UsageRow
		return u, r.Scan(&u.Account, &u.Model, &u.Day, &u.Requests, &u.Texts, &u.Errors, &u.InputTokens, &u.OutputTokens)
	})
}

// GPU is one GPU of a node's inventory.
type GPU struct {
	UUID        string `json:"uuid"`
	Index       int    `json:"index"`
	Name        string `json:"name"`
	MemoryTotal int64  `json:"memory_total"`
	MemoryUsed  int64  `json:"memory_used"`
	MemoryFree  int64  `json:"memory_free"`
	UtilGPU     int    `json:"util_gpu"`
	MIGMode     int    `json:"mig_mode"`
	// Placed lists the models the scheduler assigned to this GPU.
	Placed []GPUPlacement `json:"placed"`
	// Processes are the compute processes the node's agent saw on it,
	// each with the model whose replica it is, if any (attributeProcesses).
	Processes []GPUProcess `json:"processes"`
	// OtherMemory is the GPU memory of the processes the platform did not
	// place: what its placement cannot count on.
	OtherMemory int64 `json:"other_memory_bytes"`
}

// GPUProcess is one process using a GPU, as the agent reports it.
type GPUProcess struct {
	PID         int   `json:"pid"`
	MemoryBytes int64 `json:"mem_used"`
	// Model is the deployment whose replica this is; "" for a process the
	// platform did not place.
	Model string `json:"model,omitempty"`
}

// GPUPlacement is GPU memory the scheduler assigned to a model.
type GPUPlacement struct {
	Model       string `json:"model"`
	MemoryBytes int64  `json:"memory_bytes"`
}

// Node is a Swarm node with its GPUs.
type Node struct {
	ID           string            `json:"id"`
	Hostname     string            `json:"hostname"`
	Role         string            `json:"role"`
	Availability string            `json:"availability"`
	State        string            `json:"state"`
	Labels       map[string]string `json:"labels"`
	NanoCPUs     int64             `json:"nano_cpus"`
	MemoryBytes  int64             `json:"memory_bytes"`
	GPUs         []GPU             `json:"gpus"`
	// GPUReason is why the node's agent reports no GPU ("" with GPUs, or
	// where no agent runs).
	GPUReason string    `json:"gpu_reason,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
}

func (s *Server) nodes(c *gin.Context) {
	nodes, err := s.queryNodes(c.Request.Context())
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"nodes": nodes})
}

// queryNodes reads the node inventory with each node's GPUs and what the
// scheduler placed on them.
func (s *Server) queryNodes(ctx context.Context) ([]Node, error) {
	rows, err := s.db.Query(ctx, `SELECT id, hostname, role, availability, state, labels, nano_cpus, memory_bytes, gpu_reason, updated_at FROM nodes ORDER BY hostname, id`)
	if err != nil {
		return nil, fmt.Errorf("query nodes: %w", err)
	}
	nodes, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Node, error) {
		n := Node{GPUs: []GPU{}}
		return n, r.Scan(&n.ID, &n.Hostname, &n.Role, &n.Availability, &n.State, &n.Labels, &n.NanoCPUs, &n.MemoryBytes, &n.GPUReason, &n.UpdatedAt)
	})
	if err != nil {
		return nil, fmt.Errorf("read nodes: %w", err)
	}
	idx := map[string]int{}
	for i, n := range nodes {
		idx[n.ID] = i
	}
	// what the scheduler placed on each GPU comes from the deployment record
	held, err := deployment.Assignments(ctx, s.db)
	if err != nil {
		return nil, err
	}
	placed := map[[2]string][]GPUPlacement{}
	for _, a := range held {
		k := [2]string{a.Node, a.GPU}
		placed[k] = append(placed[k], GPUPlacement{Model: a.Model, MemoryBytes: a.Memory})
	}
	// and which process is whose from the replicas' pids the reconciler observed
	recs, err := deployment.List(ctx, s.db, "")
	if err != nil {
		return nil, err
	}
	grows, err := s.db.Query(ctx, `SELECT node_id, uuid, idx, name, memory_total, memory_used, memory_free, util_gpu, mig_mode, processes
		FROM gpus ORDER BY node_id, idx`)
	if err != nil {
		return nil, fmt.Errorf("query gpus: %w", err)
	}
	defer grows.Close()
	replicas := map[string]map[int]string{} // node ID → pid → model
	for grows.Next() {
		var node string
		var procs []GPUProcess
		g := GPU{Placed: []GPUPlacement{}}
		if err := grows.Scan(&node, &g.UUID, &g.Index, &g.Name, &g.MemoryTotal, &g.MemoryUsed, &g.MemoryFree, &g.UtilGPU, &g.MIGMode, &procs); err != nil {
			return nil, fmt.Errorf("read gpus: %w", err)
		}
		if p := placed[[2]string{node, g.UUID}]; p != nil {
			g.Placed = p
		}
		i, ok := idx[node]
		if !ok {
			continue
		}
		if _, done := replicas[node]; !done {
			replicas[node] = replicaPIDs(recs, nodes[i])
		}
		g.Processes, g.OtherMemory = attributeProcesses(procs, replicas[node])
		nodes[i].GPUs = append(nodes[i].GPUs, g)
	}
	if err := grows.Err(); err != nil {
		return nil, fmt.Errorf("read gpus: %w", err)
	}
	return nodes, nil
}

func isUnique(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}
