//go:build !agentonly

package main

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/coldstart"
	"github.com/nlpswarm/nlpswarm/internal/config"
	"github.com/nlpswarm/nlpswarm/internal/httpserver"
	"github.com/nlpswarm/nlpswarm/models"
)

type runtimeConfig struct {
	httpserver.Options
	LogLevel           string              `description:"log level: debug, info, warn, error"`
	Name               string              `description:"model name (as served under /v2/models/NAME)"`
	Task               string              `description:"text-classification, token-classification or feature-extraction"`
	ModelDir           string              `description:"folder of a Hugging Face ONNX export (instead of artifact-url)"`
	ArtifactURL        string              `description:"URL of the model archive at the model manager"`
	Digest             string              `description:"sha256:<hex> the archive must have"`
	ArtifactCredential string              `description:"credential for the artifact URL: the scheduler's per-digest, expiring artifactcred token"`
	CallCredential     string              `description:"bearer token /predict, the v2 infer and metadata routes and /coldstart require: the model's call credential, which the scheduler derives (artifactcred.Call) and the gateway sends; empty: those routes answer anyone who reaches the port"`
	CacheDir           string              `description:"where archives are unpacked, by digest"`
	Batch              models.BatchConfig  `description:"dynamic batching"`
	Engine             models.EngineConfig `description:"inference engine"`
	Limits             models.Limits       `description:"request limits"`
}

func init() {
	register(command{Name: "runtime", Summary: "serve one model: /predict and Open Inference Protocol v2", Role: true, Run: runRuntime})
}

func runRuntime(ctx context.Context, args []string) error {
	cfg := &runtimeConfig{Options: httpserver.Defaults(":8080"), LogLevel: "info", CacheDir: "/tmp/nlpswarm-models",
		Batch: models.DefaultBatchConfig(), Limits: models.DefaultLimits(), Engine: models.DefaultEngineConfig()}
	if err := loadConfig("runtime", cfg, args); err != nil {
		return err
	}
	switch {
	case cfg.Name == "" || cfg.Task == "":
		return &config.Error{Msg: "--name and --task are required"}
	case (cfg.ModelDir == "") == (cfg.ArtifactURL == ""):
		return &config.Error{Msg: "give exactly one of --modeldir or --artifacturl (with --digest)"}
	case cfg.ArtifactURL != "" && cfg.Digest == "":
		return &config.Error{Msg: "--artifacturl needs --digest sha256:<hex>"}
	}
	log, err := newLogger("runtime", cfg.LogLevel)
	if err != nil {
		return err
	}
	log = log.With("model", cfg.Name)
	reg := httpserver.NewRegistry()
	metrics := models.NewMetrics(reg)
	health := httpserver.NewHealth()
	health.SetNotReady("loading model")
	start := time.Now()
	cs := coldstart.Report{Model: cfg.Name, Digest: cfg.Digest, Started: coldstart.ProcessStart}
	dir, err := modelFolder(ctx, log, cfg.ModelDir, cfg.ArtifactURL, cfg.Digest, cfg.ArtifactCredential, cfg.CacheDir, 10*time.Minute, &cs)
	if err != nil {
		return err
	}
	t := time.Now()
	m, err := models.LoadWith(dir, cfg.Name, cfg.Task, cfg.Engine)
	if err != nil {
		return err
	}
	defer m.Close()
	log.Info("model loaded", "backend", m.Backend)
	cs.LoadSeconds = time.Since(t).Seconds()
	batcher := models.NewBatcher(m, cfg.Batch, metrics)
	bctx, stopBatcher := context.WithCancel(context.Background())
	defer stopBatcher()
	go batcher.Run(bctx)
	srv := models.NewServer(cfg.Name, cfg.Task, cfg.Digest, batcher, cfg.Limits, metrics, log)
	srv.SetBackend(m.Backend)
	if cfg.CallCredential != "" {
		srv.SetCallCredential(cfg.CallCredential)
	} else {
		log.Warn("no --callcredential: /predict, the v2 infer and metadata routes answer anyone who reaches the port")
	}
	// warm up: the first pipeline call compiles and allocates
	t = time.Now()
	// compile the input-shape buckets before ready (bounded: big models on
	// the go backend take minutes for their largest shapes)
	wctx, cancelWarm := context.WithTimeout(ctx, cfg.Engine.WarmTimeout)
	shapes, err := m.Warm(wctx)
	cancelWarm()
	if err != nil {
		return err
	}
	log.Info("shapes warmed", "shapes", shapes)
	if _, err := batcher.Submit(ctx, []string{"warm up"}, warmParams(cfg.Task)); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	cs.WarmupSeconds = time.Since(t).Seconds()
	metrics.Loaded(cfg.Name, cfg.Task, cfg.Digest, time.Since(start))
	cs.Ready = time.Now()
	coldstart.NewMetrics(reg).Observe(cs)
	srv.SetColdStart(cs)
	// the scheduler reads this line back for `nlpswarm status`
	coldstart.Log(log, cs)
	srv.SetReady(true)
	health.SetNotReady("")
	go func() {
		<-ctx.Done()
		srv.SetReady(false) // readiness off at once on SIGTERM; in-flight requests finish
	}()
	return serve(ctx, log, cfg.Options, srv, health, reg)
}

// modelFolder is a runtime's model folder: dir as given, or the archive at
// url fetched (digest checked) and unpacked into cacheDir within limit, its
// time and size recorded in the cold-start report.
func modelFolder(ctx context.Context, log *slog.Logger, dir, url, digest, credential, cacheDir string, limit time.Duration, cs *coldstart.Report) (string, error) {
	if url == "" {
		return dir, nil
	}
	t := time.Now()
	fctx, cancel := context.WithTimeout(ctx, limit)
	res, err := models.Fetch(fctx, url, digest, credential, cacheDir)
	cancel()
	if err != nil {
		return "", err
	}
	cs.FetchSeconds, cs.ArtifactBytes, cs.Cached = time.Since(t).Seconds(), res.Bytes, res.Cached
	log.Info("artifact ready", "digest", digest, "bytes", res.Bytes, "cached", res.Cached, "seconds", cs.FetchSeconds)
	return res.Dir, nil
}

func warmParams(task string) models.Params {
	var p models.Params
	_ = p.Check(task)
	return p
}
