package modelmgr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nlpswarm/nlpswarm/internal/deployment"
)

// NameRE is the rule for model names (also DNS-safe for nlp-<name> services).
var NameRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,47}$`)

// Errors the API maps to statuses.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	ErrInvalid  = errors.New("invalid")
)

// Model is a row of models.
type Model struct {
	ID          int64     `json:"id"`
	Name        string    `json:"name"`
	Task        string    `json:"task"`
	Description string    `json:"description"`
	Visibility  string    `json:"visibility"`
	Owner       *int64    `json:"owner_account_id,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	Versions    int       `json:"versions"`
	Deployed    bool      `json:"deployed"`
}

// Version is a row of model_versions.
type Version struct {
	Version   int             `json:"version"`
	Digest    string          `json:"digest"`
	Size      int64           `json:"size_bytes"`
	Task      string          `json:"task"`
	Metadata  json.RawMessage `json:"metadata"`
	Status    string          `json:"status"`
	CreatedAt time.Time       `json:"created_at"`
}

// Registry reads and writes models and versions.
type Registry struct{ DB *pgxpool.Pool }

// NewModel is a create request.
type NewModel struct {
	Name        string `json:"name"`
	Task        string `json:"task"`
	Description string `json:"description"`
	Visibility  string `json:"visibility"`
	Owner       *int64 `json:"owner_account_id"`
}

// Check validates a create request.
func (m *NewModel) Check() error {
	if !NameRE.MatchString(m.Name) {
		return fmt.Errorf("%w: name must match %s", ErrInvalid, NameRE)
	}
	if !ValidTask(m.Task) {
		return fmt.Errorf("%w: task must be one of %v", ErrInvalid, Tasks)
	}
	if m.Visibility == "" {
		m.Visibility = "public"
	}
	if m.Visibility != "public" && m.Visibility != "private" {
		return fmt.Errorf("%w: visibility must be public or private", ErrInvalid)
	}
	if m.Visibility == "private" && m.Owner == nil {
		return fmt.Errorf("%w: a private model needs owner_account_id", ErrInvalid)
	}
	if len(m.Description) > 4000 {
		return fmt.Errorf("%w: description longer than 4000 characters", ErrInvalid)
	}
	return nil
}

// Create inserts a model.
func (r *Registry) Create(ctx context.Context, m NewModel) (Model, error) {
	if err := m.Check(); err != nil {
		return Model{}, err
	}
	var out Model
	err := r.DB.QueryRow(ctx, `INSERT INTO models (name, task, description, visibility, owner_account_id)
		VALUES ($1,$2,$3,$4,$5) RETURNING id, name, task, description, visibility, owner_account_id, created_at`,
		m.Name, m.Task, m.Description, m.Visibility, m.Owner).
		Scan(&out.ID, &out.Name, &out.Task, &out.Description, &out.Visibility, &out.Owner, &out.CreatedAt)
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "23505":
			return Model{}, fmt.Errorf("model %s: %w", m.Name, ErrExists)
		case "23503":
			return Model{}, fmt.Errorf("%w: owner account does not exist", ErrInvalid)
		}
	}
	if err != nil {
		return Model{}, fmt.Errorf("create model %s: %w", m.Name, err)
	}
	return out, nil
}

const modelCols = `m.id, m.name, m.task, m.description, m.visibility, m.owner_account_id, m.created_at,
	(SELECT count(*) FROM model_versions v WHERE v.model_id = m.id),
	` + deployment.DeployedSQL

func scanModel(row pgx.Row) (Model, error) {
	var m Model
	err := row.Scan(&m.ID, &m.Name, &m.Task, &m.Description, &m.Visibility, &m.Owner, &m.CreatedAt, &m.Versions, &m.Deployed)
	return m, err
}

// Get returns a model by name.
func (r *Registry) Get(ctx context.Context, name string) (Model, error) {
	m, err := scanModel(r.DB.QueryRow(ctx, `SELECT `+modelCols+` FROM models m WHERE m.name = $1`, name))
	if errors.Is(err, pgx.ErrNoRows) {
		return Model{}, fmt.Errorf("model %s: %w", name, ErrNotFound)
	}
	return m, err
}

// List returns every model, by name.
func (r *Registry) List(ctx context.Context) ([]Model, error) {
	rows, err := r.DB.Query(ctx, `SELECT `+modelCols+` FROM models m ORDER BY m.name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Model{}
	for rows.Next() {
		m, err := scanModel(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// Delete removes a model with its versions (rows only; blobs may be shared).
func (r *Registry) Delete(ctx context.Context, name string) error {
	tag, err := r.DB.Exec(ctx, `DELETE FROM models WHERE name = $1`, name)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("model %s: %w", name, ErrNotFound)
	}
	return nil
}

// AddVersion records a validated archive as the model's next version. The
// model row is locked, so concurrent uploads get distinct numbers.
func (r *Registry) AddVersion(ctx context.Context, name, digest string, size int64, md Metadata) (Version, error) {
	mdJSON, _ := json.Marshal(md)
	var v Version
	err := pgx.BeginFunc(ctx, r.DB, func(tx pgx.Tx) error {
		var id int64
		var task string
		if err := tx.QueryRow(ctx, `SELECT id, task FROM models WHERE name = $1 FOR UPDATE`, name).Scan(&id, &task); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("model %s: %w", name, ErrNotFound)
			}
			return err
		}
		return tx.QueryRow(ctx, `INSERT INTO model_versions (model_id, version, digest, size_bytes, task, metadata)
			VALUES ($1, COALESCE((SELECT max(version) FROM model_versions WHERE model_id = $1), 0) + 1, $2, $3, $4, $5)
			RETURNING version, digest, size_bytes, task, metadata, status, created_at`,
			id, digest, size, task, mdJSON).
			Scan(&v.Version, &v.Digest, &v.Size, &v.Task, &v.Metadata, &v.Status, &v.CreatedAt)
	})
	return v, err
}

// Versions lists a model's versions, newest first.
func (r *Registry) Versions(ctx context.Context, name string) ([]Version, error) {
	if _, err := r.Get(ctx, name); err != nil {
		return nil, err
	}
	rows, err := r.DB.Query(ctx, `SELECT v.version, v.digest, v.size_bytes, v.task, v.metadata, v.status, v.created_at
		FROM model_versions v JOIN models m ON m.id = v.model_id WHERE m.name = $1 ORDER BY v.version DESC`, name)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Version{}
	for rows.Next() {
		var v Version
		if err := rows.Scan(&v.Version, &v.Digest, &v.Size, &v.Task, &v.Metadata, &v.Status, &v.CreatedAt); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// DigestInUse reports whether any version row still references digest.
func (r *Registry) DigestInUse(ctx context.Context, digest string) (bool, error) {
	var n int
	err := r.DB.QueryRow(ctx, `SELECT count(*) FROM model_versions WHERE digest = $1`, digest).Scan(&n)
	return n > 0, err
}
