package gateway

import (
	"context"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nlpswarm/nlpswarm/internal/deployment"
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

// Refresh reloads the catalogue from the deployment record; on error the
// previous one stays.
func (c *Catalog) Refresh(ctx context.Context) error {
	routes, err := deployment.Routable(ctx, c.db)
	if err != nil {
		return err
	}
	next := make(map[string]*Model, len(routes))
	for _, r := range routes {
		next[r.Model] = &Model{ID: r.ModelID, Name: r.Model, Task: r.Task, Private: r.Private, Owner: r.Owner, Autoscaled: r.Autoscaled}
	}
	c.models.Store(&next)
	return nil
}
