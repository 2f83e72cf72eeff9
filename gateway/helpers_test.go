package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/nlpswarm/nlpswarm/internal/apikey"
	"github.com/nlpswarm/nlpswarm/internal/pg/pgtest"
	"github.com/nlpswarm/nlpswarm/internal/rdb/rdbtest"
)

// fakeRuntime stands in for the model runtime (models/): it answers
// /predict with canned outputs in the runtime's shape for its task.
type fakeRuntime struct {
	*httptest.Server
	task     string
	hits     atomic.Int64
	status   atomic.Int32 // forced status for /predict when non-zero
	ready    atomic.Bool
	delay    atomic.Int64 // nanoseconds
	lastRID  atomic.Value
	lastBody atomic.Value
}

func newFakeRuntime(t testing.TB, task string) *fakeRuntime {
	f := &fakeRuntime{task: task}
	f.ready.Store(true)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v2/health/ready", func(w http.ResponseWriter, r *http.Request) {
		if !f.ready.Load() {
			w.WriteHeader(503)
			return
		}
		w.WriteHeader(200)
	})
	mux.HandleFunc("POST /v2/models/{name}/infer", func(w http.ResponseWriter, r *http.Request) {
		f.hits.Add(1)
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"model_name":"` + r.PathValue("name") + `","echo":` + string(b) + `}`))
	})
	mux.HandleFunc("POST /predict", func(w http.ResponseWriter, r *http.Request) {
		f.hits.Add(1)
		f.lastRID.Store(r.Header.Get("X-Request-ID"))
		if d := f.delay.Load(); d > 0 {
			select {
			case <-time.After(time.Duration(d)):
			case <-r.Context().Done():
				return
			}
		}
		if s := f.status.Load(); s != 0 {
			w.WriteHeader(int(s))
			w.Write([]byte(`{"error":{"code":"x","message":"forced"}}`))
			return
		}
		var req runtimeRequest
		b, _ := io.ReadAll(r.Body)
		f.lastBody.Store(string(b))
		if err := json.Unmarshal(b, &req); err != nil {
			w.WriteHeader(400)
			return
		}
		outs := make([]any, len(req.Texts))
		for i, text := range req.Texts {
			switch f.task {
			case "text-classification":
				outs[i] = []map[string]any{{"label": "POSITIVE", "score": 0.9}, {"label": "NEGATIVE", "score": 0.1}}
			case "token-classification":
				end := strings.IndexByte(text, ' ')
				if end < 0 {
					end = len(text)
				}
				outs[i] = []map[string]any{{"entity_group": "PER", "score": 0.99, "word": strings.ToLower(text[:end]), "start": 0, "end": end}}
			case "feature-extraction":
				outs[i] = map[string]any{"embedding": []float64{0.1, 0.2, float64(len(text))}}
			}
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"model": "m", "task": f.task, "outputs": outs})
	})
	f.Server = httptest.NewServer(mux)
	t.Cleanup(f.Close)
	return f
}

func (f *fakeRuntime) addr() string { return strings.TrimPrefix(f.URL, "http://") }

// env is a gateway on a fresh database, with accounts, keys and models.
type env struct {
	t      testing.TB
	db     *pgtest.DB
	rdb    *redis.Client
	prefix string
	gw     *Gateway
	srv    *httptest.Server
	static StaticDiscovery
	reg    *prometheus.Registry
	log    *slog.Logger
}

func newEnv(t testing.TB, withRedis bool) *env {
	t.Helper()
	e := &env{t: t, db: pgtest.New(t, true), static: StaticDiscovery{}, reg: prometheus.NewRegistry()}
	if withRedis {
		e.rdb, e.prefix = rdbtest.New(t)
	}
	return e
}

func (e *env) exec(sql string, args ...any) {
	e.t.Helper()
	if _, err := e.db.Pool.Exec(context.Background(), sql, args...); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
}

func (e *env) id(sql string, args ...any) int64 {
	e.t.Helper()
	var id int64
	if err := e.db.Pool.QueryRow(context.Background(), sql, args...).Scan(&id); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
	return id
}

// account creates an account on plan ("free", "standard", or "" for none).
func (e *env) account(name, plan string) int64 {
	if plan == "" {
		return e.id(`INSERT INTO accounts(name) VALUES ($1) RETURNING id`, name)
	}
	return e.id(`INSERT INTO accounts(name, plan_id) VALUES ($1, (SELECT id FROM plans WHERE name=$2)) RETURNING id`, name, plan)
}

func (e *env) key(account int64, kind string) (string, int64) {
	key, prefix, hash, err := apikey.Generate()
	if err != nil {
		e.t.Fatal(err)
	}
	id := e.id(`INSERT INTO api_keys(account_id, prefix, hash, kind) VALUES ($1,$2,$3,$4) RETURNING id`, account, prefix, hash, kind)
	return key, id
}

// model creates a deployed model served by the given fake runtimes.
func (e *env) model(name, task string, owner int64, rts ...*fakeRuntime) int64 {
	var id int64
	if owner != 0 {
		id = e.id(`INSERT INTO models(name, task, visibility, owner_account_id) VALUES ($1,$2,'private',$3) RETURNING id`, name, task, owner)
	} else {
		id = e.id(`INSERT INTO models(name, task) VALUES ($1,$2) RETURNING id`, name, task)
	}
	e.exec(`INSERT INTO deployments(model_id, version, replicas) VALUES ($1, 1, $2)`, id, max(len(rts), 1))
	for _, rt := range rts {
		e.static[name] = append(e.static[name], rt.addr())
	}
	return id
}

func (e *env) start(opts Options) *Gateway {
	e.t.Helper()
	return e.startWith(opts, e.static)
}

// startWith starts the gateway on disc instead of the static discovery.
func (e *env) startWith(opts Options, disc Discoverer) *Gateway {
	e.t.Helper()
	if opts.RedisPrefix == "" {
		opts.RedisPrefix = e.prefix
	}
	deps := Deps{DB: e.db.Pool, Discovery: disc, Registry: e.reg, Log: e.log}
	if e.rdb != nil {
		deps.Redis = e.rdb
	}
	g, err := New(context.Background(), opts, deps)
	if err != nil {
		e.t.Fatal(err)
	}
	e.gw = g
	e.srv = httptest.NewServer(g)
	e.t.Cleanup(func() {
		e.srv.Close()
		g.Close(context.Background())
	})
	return g
}

type answer struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func (e *env) post(key, path, body string) answer {
	e.t.Helper()
	req, _ := http.NewRequest("POST", e.srv.URL+path, bytes.NewBufferString(body))
	if key != "" {
		req.Header.Set("Authorization", "Token "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	_ = json.Unmarshal(raw, &a.body)
	return a
}

func (a answer) code() string {
	if m, ok := a.body["error"].(map[string]any); ok {
		s, _ := m["code"].(string)
		return s
	}
	return ""
}

func newReq(url string, body io.Reader) (*http.Request, error) {
	return http.NewRequest("POST", url, body)
}
