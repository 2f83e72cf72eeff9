package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nlpswarm/nlpswarm/internal/customerapi"
	"github.com/nlpswarm/nlpswarm/internal/deployment"
	"github.com/nlpswarm/nlpswarm/internal/runtimeapi"
)

// Model is a deployed model as the gateway routes it (and as the catalogue
// snapshot keeps it).
type Model struct {
	ID      int64  `json:"id"`
	Name    string `json:"name"`
	Task    string `json:"task"` // text-classification, token-classification, feature-extraction
	Private bool   `json:"private"`
	Owner   int64  `json:"owner"` // owner account (0 when none)
	// Autoscaled: the scheduler's autoscaler sets its replicas, possibly to
	// zero; a request finding none is held while one starts.
	Autoscaled bool `json:"autoscaled"`
	// Replicas is the desired count (the autoscaler's when autoscaled): at
	// 0, no replica should be found (discoveryProvider.scan).
	Replicas int `json:"replicas"`
	// GGUF: the deployed version is a GGUF (deployment.FormatGGUF), served
	// by the generation runtime: a text-generation model, or an embedding
	// GGUF of task feature-extraction (its replicas answer /v1/embeddings,
	// not the models runtime's /predict). Absent from a snapshot written
	// before it existed: such a snapshot's models are taken as ONNX until
	// Postgres answers.
	GGUF bool `json:"gguf,omitempty"`
	// Version is the stable deployment's version (0 in a snapshot written
	// before versions were routed: no X-Model-Version then).
	Version int `json:"version,omitempty"`
	// Canary is the model's routed canary (issue 20), nil when none: a
	// second version on its own replicas (deployment.ServiceName(Name,
	// TrackCanary)) that answers Weight % of the requests, or, as a
	// shadow, gets a copy of every one (canary.go).
	Canary *CanaryModel `json:"canary,omitempty"`

	stableHdr []string // X-Model-Version's value for the stable version (prepare)
}

// CanaryModel is a model's canary as the gateway routes it
// (deployment.CanaryRoute).
type CanaryModel struct {
	Version    int     `json:"version"`
	Mode       string  `json:"mode"`   // deployment.ModeCanary or ModeShadow
	Weight     float64 `json:"weight"` // percent of requests (ModeCanary)
	Sticky     bool    `json:"sticky"` // the same API key, the same version
	Replicas   int     `json:"replicas"`
	Autoscaled bool    `json:"autoscaled"`

	key string   // deployment.Key(model, TrackCanary): its replica pool in the fleet
	hdr []string // X-Model-Version's value
}

// shadow reports whether c gets copies rather than a share of the requests.
func (c *CanaryModel) shadow() bool { return c.Mode == deployment.ModeShadow }

// prepare fills m's derived fields (after a load from Postgres or the
// snapshot).
func (m *Model) prepare() {
	if m.Version > 0 {
		m.stableHdr = []string{strconv.Itoa(m.Version)}
	}
	if c := m.Canary; c != nil {
		c.key = deployment.Key(m.Name, deployment.TrackCanary)
		c.hdr = []string{strconv.Itoa(c.Version)}
	}
}

// modelOf is the gateway's Model of r: its canary left out when its replicas
// run another runtime than the stable ones' (an ONNX model's canary as a
// GGUF, or the reverse), whose answers the routes of the model could not
// translate.
func modelOf(r deployment.Route) (*Model, string) {
	m := &Model{ID: r.ModelID, Name: r.Model, Task: r.Task, Private: r.Private, Owner: r.Owner, Autoscaled: r.Autoscaled, Replicas: r.Replicas,
		GGUF: r.Format == deployment.FormatGGUF, Version: r.Version}
	var skipped string
	if c := r.Canary; c != nil {
		if (c.Format == deployment.FormatGGUF) != m.GGUF {
			skipped = fmt.Sprintf("the canary's format %s is not served by the runtime of the stable format %s", c.Format, r.Format)
		} else {
			m.Canary = &CanaryModel{Version: c.Version, Mode: c.Mode, Weight: c.Weight, Sticky: c.Sticky, Replicas: c.Replicas, Autoscaled: c.Autoscaled}
		}
	}
	m.prepare()
	return m, skipped
}

// generationRuntime reports whether m's replicas are the generation
// runtime's (llama-server's OpenAI API): a text-generation model or any
// GGUF.
func (m *Model) generationRuntime() bool {
	return m.Task == customerapi.TextGeneration || m.GGUF
}

// ggufEmbeddings reports whether m is an embedding GGUF: task
// feature-extraction on the generation runtime's embeddings mode.
func (m *Model) ggufEmbeddings() bool {
	return m.GGUF && m.Task == runtimeapi.FeatureExtraction
}

// Catalog holds the deployed models (replicas > 0, or autoscaled: a model at
// zero still answers, from a replica started for it), reloaded from Postgres.
//
// With a snapshot file (Config.CatalogSnapshot, on a volume) each catalogue
// that differs from the last is written there, and a gateway that cannot
// reach Postgres at start serves from it until Postgres answers (issue 18
// item 1): a database outage does not keep gateways from starting.
type Catalog struct {
	db       *pgxpool.Pool
	models   atomic.Pointer[map[string]*Model]
	loaded   atomic.Bool // from Postgres or the snapshot, at least once
	snapshot string      // "" : none
	log      *slog.Logger
	warned   map[string]int // model -> canary version whose skipping was logged (Refresh's goroutine only)
	written  []byte         // the snapshot last written (Refresh's goroutine only)
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

// Models lists the deployed models.
func (c *Catalog) Models() []*Model {
	m := *c.models.Load()
	out := make([]*Model, 0, len(m))
	for _, x := range m {
		out = append(out, x)
	}
	return out
}

// Loaded says a catalogue was loaded, from Postgres or the snapshot.
func (c *Catalog) Loaded() bool { return c.loaded.Load() }

// Refresh reloads the catalogue from the deployment record; on error the
// previous one stays. A new catalogue goes to the snapshot file, if any (a
// failure to write it is returned, the catalogue is in use anyway).
func (c *Catalog) Refresh(ctx context.Context) error {
	routes, err := deployment.Routable(ctx, c.db)
	if err != nil {
		return err
	}
	next := make(map[string]*Model, len(routes))
	for _, r := range routes {
		m, skipped := modelOf(r)
		if skipped != "" && c.log != nil && c.warned[r.Model] != r.Canary.Version {
			c.log.Warn("canary not routed", "model", r.Model, "version", r.Canary.Version, "why", skipped)
			if c.warned == nil {
				c.warned = map[string]int{}
			}
			c.warned[r.Model] = r.Canary.Version // (once per canary)
		}
		next[r.Model] = m
	}
	c.models.Store(&next)
	c.loaded.Store(true)
	return c.save(next)
}

// save writes the snapshot when it changed (writeFileSynced).
func (c *Catalog) save(models map[string]*Model) error {
	if c.snapshot == "" {
		return nil
	}
	data, err := json.Marshal(models) // (map keys come out sorted)
	if err != nil || bytes.Equal(data, c.written) {
		return err
	}
	if err := writeFileSynced(c.snapshot, data); err != nil {
		return fmt.Errorf("catalogue snapshot: %w", err)
	}
	c.written = data
	return nil
}

// maxSnapshot bounds the snapshot read back (a catalogue of 100,000 models
// is about 15 MB).
const maxSnapshot = 64 << 20

// loadSnapshot serves the snapshot's catalogue (Postgres unreachable at
// start); it returns how many models it holds.
func (c *Catalog) loadSnapshot() (int, error) {
	if c.snapshot == "" {
		return 0, fmt.Errorf("no catalogue snapshot configured")
	}
	f, err := os.Open(c.snapshot)
	if err != nil {
		return 0, fmt.Errorf("catalogue snapshot: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxSnapshot+1))
	if err != nil || len(data) > maxSnapshot {
		return 0, fmt.Errorf("catalogue snapshot %s: unreadable or over %d bytes (%v)", filepath.Base(c.snapshot), maxSnapshot, err)
	}
	var models map[string]*Model
	if err := json.Unmarshal(data, &models); err != nil {
		return 0, fmt.Errorf("catalogue snapshot %s: %w", filepath.Base(c.snapshot), err)
	}
	for name, m := range models {
		if m == nil || m.Name != name || m.ID <= 0 {
			return 0, fmt.Errorf("catalogue snapshot %s: malformed entry %q", filepath.Base(c.snapshot), name)
		}
		m.prepare()
	}
	if !c.loaded.CompareAndSwap(false, true) {
		return 0, nil // Postgres answered meanwhile
	}
	c.models.Store(&models)
	c.written = data
	return len(models), nil
}
