//go:build !agentonly

package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nlpswarm/nlpswarm/generation"
	"github.com/nlpswarm/nlpswarm/internal/coldstart"
	"github.com/nlpswarm/nlpswarm/internal/config"
	"github.com/nlpswarm/nlpswarm/internal/httpserver"
)

type generateConfig struct {
	httpserver.Options
	LogLevel           string            `description:"log level: debug, info, warn, error"`
	ModelDir           string            `description:"folder holding model.gguf (instead of artifact-url)"`
	ArtifactURL        string            `description:"URL of the model archive at the model manager"`
	Digest             string            `description:"sha256:<hex> the archive must have"`
	ArtifactCredential string            `description:"credential for the artifact URL (the scheduler's artifactcred token)"`
	CallCredential     string            `description:"bearer token the /v1 routes require (the model's call credential, which the gateway sends); empty: they answer anyone who reaches the port"`
	CacheDir           string            `description:"where archives are unpacked, by digest"`
	Generation         generation.Config `description:"the llama-server child"`
}

func init() {
	register(command{Name: "generate", Summary: "serve one GGUF model for text generation: llama-server behind the OpenAI-compatible routes (issue 15)", Role: true, Run: runGenerate})
}

func runGenerate(ctx context.Context, args []string) error {
	opts := httpserver.Defaults(":8080")
	opts.WriteTimeout = 30 * time.Minute // a long generation streams for minutes; the client's leaving ends it sooner
	opts.ShutdownTimeout = generation.DefaultConfig().DrainTimeout
	cfg := &generateConfig{Options: opts, LogLevel: "info", CacheDir: "/tmp/nlpswarm-models", Generation: generation.DefaultConfig()}
	if err := loadConfig("generate", cfg, args); err != nil {
		return err
	}
	switch {
	case cfg.Generation.Name == "":
		return &config.Error{Msg: "--generation.name is required"}
	case (cfg.ModelDir == "") == (cfg.ArtifactURL == ""):
		return &config.Error{Msg: "give exactly one of --modeldir or --artifacturl (with --digest)"}
	case cfg.ArtifactURL != "" && cfg.Digest == "":
		return &config.Error{Msg: "--artifacturl needs --digest sha256:<hex>"}
	}
	log, err := newLogger("generate", cfg.LogLevel)
	if err != nil {
		return err
	}
	log = log.With("model", cfg.Generation.Name)
	reg := httpserver.NewRegistry()
	health := httpserver.NewHealth()
	health.SetNotReady("loading model")
	cs := coldstart.Report{Model: cfg.Generation.Name, Digest: cfg.Digest, Started: coldstart.ProcessStart}
	// GGUF files are GiBs: 30 minutes for the fetch
	dir, err := modelFolder(ctx, log, cfg.ModelDir, cfg.ArtifactURL, cfg.Digest, cfg.ArtifactCredential, cfg.CacheDir, 30*time.Minute, &cs)
	if err != nil {
		return err
	}
	t := time.Now()
	r, err := generation.Start(ctx, cfg.Generation, dir, log, generation.NewMetrics(reg))
	if err != nil {
		return err
	}
	cs.LoadSeconds = time.Since(t).Seconds()
	if cfg.CallCredential != "" {
		r.SetCallCredential(cfg.CallCredential)
	} else {
		log.Warn("no --callcredential: the /v1 routes answer anyone who reaches the port")
	}
	cs.Ready = time.Now()
	coldstart.NewMetrics(reg).Observe(cs)
	coldstart.Log(log, cs)
	health.SetNotReady("")

	// the child's death ends the role (Swarm starts a new task); SIGTERM
	// drains the routes, then stops the child
	sctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	go func() {
		select {
		case <-r.Exited():
			stop(fmt.Errorf("llama-server exited: %v", r.Err()))
		case <-sctx.Done():
		}
	}()
	err = serve(sctx, log, cfg.Options, r.Handler(), health, reg)
	r.Drain()
	if cause := context.Cause(sctx); cause != nil && !errors.Is(cause, context.Canceled) && ctx.Err() == nil {
		return cause
	}
	return err
}
