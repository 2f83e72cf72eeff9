// Package gatewaytest starts a real gateway for the tests of its clients
// (client/, clients/python, the CLI): gateway.New on a fresh database and,
// with Options.Redis, a fresh Redis prefix, in front of real model runtimes
// (models.Server and its batcher) whose predictor is a stub giving canned
// outputs of its task, served as the gateway role serves it (with
// /healthz and /readyz), and a text-generation model (Gen) on a fake
// replica (fakellama). As in the stack, each runtime requires its model's
// call credential, which the gateway derives from the same call secret.
//
// It is test support only: no role imports it. The gateway's own tests
// keep their harness (helpers_test.go), which reaches its internals.
package gatewaytest

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nlpswarm/nlpswarm/gateway"
	"github.com/nlpswarm/nlpswarm/gateway/gatewaytest/fakellama"
	"github.com/nlpswarm/nlpswarm/internal/apikey"
	"github.com/nlpswarm/nlpswarm/internal/artifactcred"
	"github.com/nlpswarm/nlpswarm/internal/bearer"
	"github.com/nlpswarm/nlpswarm/internal/httpserver"
	"github.com/nlpswarm/nlpswarm/internal/pg/pgtest"
	"github.com/nlpswarm/nlpswarm/internal/rdb/rdbtest"
	"github.com/nlpswarm/nlpswarm/internal/runtimeapi"
	"github.com/nlpswarm/nlpswarm/models"
)

// The models every Env serves, one runtime each.
const (
	Sentiment = "sentiment" // text-classification: POSITIVE 0.9, NEGATIVE 0.1
	NER       = "ner"       // token-classification: the first word, PER
	Embed     = "embed"     // feature-extraction: [0.1, 0.2, len(text)]
	Asleep    = "asleep"    // deployed, no replica: 503 no_replica
	// Gen is a text-generation model served by a fake replica
	// (fakellama: llama-server's OpenAI JSON and event streams, canned
	// text, no model), for the generation routes and OpenAI's SDK.
	Gen = "gen"
)

// Options tune Start.
type Options struct {
	// Redis turns rate limits on (a fresh key prefix on the test Redis).
	Redis bool
	// Config is the gateway's (zero: the defaults).
	Config gateway.Config
}

// Env is a running gateway with its keys.
type Env struct {
	URL string // the gateway's base URL
	// Key is an inference key on plan standard (50 requests/s).
	Key string
	// SlowKey is an inference key on a plan of 1 request/s, burst 1: with
	// Options.Redis its second request within a second gets 429
	// rate_limited with Retry-After: 1.
	SlowKey string
	DB      *pgtest.DB
	Gateway *gateway.Gateway
	// Llama is Gen's fake replica (its knobs: chunks, pacing, failures).
	Llama *fakellama.Server
}

// Start starts the gateway; everything stops at the test's end.
func Start(t testing.TB, o Options) *Env {
	t.Helper()
	db := pgtest.New(t, true)
	ctx := context.Background()
	id := func(sql string, args ...any) int64 {
		t.Helper()
		var id int64
		if err := db.Pool.QueryRow(ctx, sql, args...).Scan(&id); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return id
	}
	key := func(plan string) string {
		acc := id(`INSERT INTO accounts(name, plan_id) VALUES ($1, (SELECT id FROM plans WHERE name=$1)) RETURNING id`, plan)
		k, prefix, hash, err := apikey.Generate()
		if err != nil {
			t.Fatal(err)
		}
		id(`INSERT INTO api_keys(account_id, prefix, hash, kind) VALUES ($1,$2,$3,'inference') RETURNING id`, acc, prefix, hash)
		return k
	}
	id(`INSERT INTO plans(name, requests_per_second, burst, monthly_quota) VALUES ('slow', 1, 1, 0) RETURNING id`)
	e := &Env{DB: db, Key: key("standard"), SlowKey: key("slow")}
	static := gateway.StaticDiscovery{}
	callKey, err := artifactcred.CallKey(strings.Repeat("gatewaytest call secret ", 2))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []struct{ name, task string }{
		{Sentiment, runtimeapi.TextClassification}, {NER, runtimeapi.TokenClassification},
		{Embed, runtimeapi.FeatureExtraction}, {Asleep, runtimeapi.TextClassification},
	} {
		mid := id(`INSERT INTO models(name, task) VALUES ($1,$2) RETURNING id`, m.name, m.task)
		id(`INSERT INTO deployments(model_id, version, replicas) VALUES ($1, 1, 1) RETURNING model_id`, mid)
		if m.name != Asleep {
			static[m.name] = []string{strings.TrimPrefix(startRuntime(t, m.name, m.task, artifactcred.Call(callKey, m.name)), "http://")}
		}
	}
	gid := id(`INSERT INTO models(name, task) VALUES ($1, 'text-generation') RETURNING id`, Gen)
	id(`INSERT INTO deployments(model_id, version, replicas) VALUES ($1, 1, 1) RETURNING model_id`, gid)
	e.Llama = fakellama.Start(bearer.Header(artifactcred.Call(callKey, Gen)))
	t.Cleanup(e.Llama.Close)
	static[Gen] = []string{e.Llama.Addr()}
	deps := gateway.Deps{DB: db.Pool, Discovery: static, Registry: prometheus.NewRegistry(), CallKey: callKey}
	if o.Redis {
		deps.Redis, o.Config.RedisPrefix = rdbtest.New(t)
	}
	g, err := gateway.New(ctx, o.Config, deps)
	if err != nil {
		t.Fatal(err)
	}
	e.Gateway = g
	srv := httptest.NewServer(httpserver.Handler(g, httpserver.NewHealth(), nil))
	e.URL = srv.URL
	t.Cleanup(func() {
		srv.Close()
		_ = g.Close(context.Background())
	})
	return e
}

// startRuntime serves model with the stub predictor, requiring the call
// credential cred; it returns its URL.
func startRuntime(t testing.TB, model, task, cred string) string {
	m := models.NewMetrics(nil)
	b := models.NewBatcher(stub{task}, models.DefaultBatchConfig(), m)
	ctx, cancel := context.WithCancel(context.Background())
	go b.Run(ctx)
	rt := models.NewServer(model, task, "sha256:test", b, models.DefaultLimits(), m, slog.New(slog.DiscardHandler))
	rt.SetReady(true)
	rt.SetCallCredential(cred)
	srv := httptest.NewServer(rt)
	t.Cleanup(func() {
		srv.Close()
		cancel()
	})
	return srv.URL
}

// stub answers like a model of its task, from the text alone.
type stub struct{ task string }

func (s stub) Predict(_ context.Context, texts []string, _ models.Params) ([]any, error) {
	outs := make([]any, len(texts))
	for i, text := range texts {
		switch s.task {
		case runtimeapi.TextClassification:
			outs[i] = []runtimeapi.Label{{Label: "POSITIVE", Score: 0.9}, {Label: "NEGATIVE", Score: 0.1}}
		case runtimeapi.TokenClassification:
			word, _, _ := strings.Cut(text, " ")
			outs[i] = []runtimeapi.Entity{{EntityGroup: "PER", Score: 0.99, Word: word, Start: 0, End: len(word)}}
		case runtimeapi.FeatureExtraction:
			outs[i] = runtimeapi.Embedding{Embedding: []float32{0.1, 0.2, float32(len(text))}}
		}
	}
	return outs, nil
}
