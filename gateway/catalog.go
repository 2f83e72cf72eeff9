package gateway

import (
	"context"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Model is a deployed model as the gateway routes it.
type Model struct {
	ID      int64
	Name    string
	Task    string // text-classification, token-classification, feature-extraction
	Private bool
	Owner   int64 // owner account (0 when none)
	// Autoscaled: the scheduler's autoscaler sets its replicas, possibly to
	// zero; a request finding none is held while one starts.
	Autoscaled bool
}

// Catalog holds the deployed models (replicas > 0, or autoscaled: a model at
// zero still answers, from a replica started for it), reloaded from Postgres.
type Catalog struct {
	db     *pgxpool.Pool
	models atomic.Pointer[map[string]*Model]
}

func newCatalog(db *pgxpool.Pool) *Catalog {
	c := &Catalog{db: db}
	empty := map[string]*Model{}
	c.models.Store(&empty)
	return c
}

// Get returns the deployed model called name.
func (c *Catalog) Get(name string) (*Model, bool) {
	m, ok := (*c.models.Load())[name]
	return m, ok
}

// Names lists the deployed models.
func (c *Catalog) Names() []string {
	m := *c.models.Load()
	out := make([]string, 0, len(m))
	for n := range m {
		out = append(out, n)
	}
	return out
}

// Refresh reloads the catalogue; on error the previous one stays.
func (c *Catalog) Refresh(ctx context.Context) error {
	rows, err := c.db.Query(ctx, `
		SELECT m.id, m.name, m.task, m.visibility = 'private', COALESCE(m.owner_account_id, 0), d.autoscale_max > 0
		FROM models m JOIN deployments d ON d.model_id = m.id
		WHERE d.replicas > 0 OR d.autoscale_max > 0`)
	if err != nil {
		return err
	}
	defer rows.Close()
	next := map[string]*Model{}
	for rows.Next() {
		m := &Model{}
		if err := rows.Scan(&m.ID, &m.Name, &m.Task, &m.Private, &m.Owner, &m.Autoscaled); err != nil {
			return err
		}
		next[m.Name] = m
	}
	if err := rows.Err(); err != nil {
		return err
	}
	c.models.Store(&next)
	return nil
}
