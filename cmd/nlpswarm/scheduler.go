//go:build !agentonly

package main

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/moby/moby/client"

	"github.com/nlpswarm/nlpswarm/internal/artifactcred"
	"github.com/nlpswarm/nlpswarm/internal/config"
	"github.com/nlpswarm/nlpswarm/internal/httpserver"
	"github.com/nlpswarm/nlpswarm/internal/pg"
	"github.com/nlpswarm/nlpswarm/internal/rdb"
	"github.com/nlpswarm/nlpswarm/internal/secret"
	"github.com/nlpswarm/nlpswarm/scheduler"
)

type schedulerConfig struct {
	httpserver.Options
	LogLevel          string        `description:"log level: debug, info, warn, error"`
	DB                pg.Config     `description:"Postgres"`
	SchemaWait        time.Duration `description:"how long to wait at start until Postgres holds at least the schema version this binary carries (applied by nlpswarm migrate up); 0: do not check"`
	Owner             string        `description:"name of this platform instance: only services with this owner label are managed (and removed as orphans)"`
	Image             string        `description:"runtime image of model services on the go engine (a tag is resolved to its image ID so no node pulls)"`
	ORTImage          string        `description:"ONNX Runtime runtime image (make ort-image; resolved like image): model services on the ort engine, the default when set; '' for none (ort deployments are then unplaceable)"`
	LlamaImage        string        `description:"generation runtime image on CPUs (make llama-image, nlpswarm-llama; resolved like image): text-generation deployments without GPUs; '' for none (they are then unplaceable)"`
	LlamaCUDAImage    string        `description:"generation runtime image with ggml's CUDA backend (make llama-cuda-image, nlpswarm-llama-cuda; resolved like image): text-generation deployments with GPUs; '' for none (they are then unplaceable)"`
	Network           string        `description:"overlay network model services join"`
	ArtifactBaseURL   string        `description:"base URL runtimes download artifacts from (the apiserver)"`
	InternalTokenFile string        `description:"file holding the internal token, the key of the per-digest artifact credentials model services get ('' for none: they cannot download)"`
	CallSecretFile    string        `description:"file holding the replica call secret (at least 32 bytes; the gateways hold it too), the key of the per-model call credential each model service requires on /predict, the v2 infer and metadata routes ('' for none: the runtimes answer anyone on their network)"`
	ReadTokenFile     string        `description:"file holding the read token /plan and /sd require as bearer token (the apiserver and Prometheus send it) ('' for none: they answer anyone on the control network)"`
	Placement         struct {
		Constraint string `description:"constraint every model service gets (besides the deployment's labels)"`
	} `description:"placement of model services"`
	Resync         time.Duration `description:"full reconcile interval (NOTIFY wakes it sooner)"`
	ArtifactVolume string        `description:"node-local volume mounted at the runtimes' artifact cache, so replicas on one node download once"`
	Redis          rdb.Config    `description:"Redis, where the gateways publish load figures and wake-ups for the autoscaler (without it, autoscaled deployments keep their replicas)"`
	RedisPrefix    string        `description:"the gateways' Redis key prefix"`
	Autoscale      struct {
		Interval time.Duration `description:"how often the autoscaler reads the load figures and applies its rule"`
	} `description:"autoscaler"`
}

func init() {
	register(command{Name: "scheduler", Summary: "reconcile desired deployments into one Swarm service per model", Role: true, Run: runScheduler})
}

func runScheduler(ctx context.Context, args []string) error {
	cfg := &schedulerConfig{Options: httpserver.Defaults(":8082"), LogLevel: "info", DB: pg.DefaultConfig(),
		Owner: "nlpswarm", Image: "nlpswarm:dev", Network: "nlpswarm", ArtifactBaseURL: "http://apiserver:8081",
		InternalTokenFile: "/run/secrets/internal_token", CallSecretFile: "/run/secrets/replica_call_secret",
		ReadTokenFile: "/run/secrets/scheduler_read_token", Resync: 10 * time.Second,
		ArtifactVolume: scheduler.DefaultArtifactVolume, Redis: rdb.DefaultConfig(), RedisPrefix: "nlpswarm:"}
	cfg.Autoscale.Interval = time.Second
	cfg.Placement.Constraint = "node.labels.type==machine-learning"
	cfg.DrainDelay = 0
	cfg.SchemaWait = schemaWaitDefault
	if err := loadConfig("scheduler", cfg, args); err != nil {
		return err
	}
	log, err := newLogger("scheduler", cfg.LogLevel)
	if err != nil {
		return err
	}
	// the secrets first, before anything connects. The internal token never
	// leaves the scheduler: each model service gets a credential for its
	// own digest (internal/artifactcred), and one for calls to its model
	internalToken, err := secret.Optional("internal token", cfg.InternalTokenFile, "")
	if err != nil {
		return err
	}
	if internalToken == "" {
		log.Warn("no --internaltokenfile: model services get no artifact credential and cannot download their models")
	}
	callKey, err := readCallKey(cfg.CallSecretFile)
	if err != nil {
		return err
	}
	if callKey == nil {
		log.Warn("no --callsecretfile: model services get no call credential; their /predict answers anyone on their network")
	}
	readToken, err := secret.Optional("scheduler read token", cfg.ReadTokenFile, "")
	if err != nil {
		return err
	}
	if readToken == "" {
		log.Warn("no --readtokenfile: /plan and /sd answer anyone who reaches the scheduler")
	}
	pool, err := pg.Connect(ctx, cfg.DB)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := waitSchema(ctx, pool, cfg.SchemaWait, false, log); err != nil {
		return err
	}
	docker, err := client.New(client.FromEnv)
	if err != nil {
		return &config.Error{Msg: fmt.Sprintf("docker client: %v", err)}
	}
	defer docker.Close()
	spec, err := scheduler.ResolveSpecConfig(ctx, docker, scheduler.SpecConfig{
		Owner: cfg.Owner, Image: cfg.Image, ORTImage: cfg.ORTImage, LlamaImage: cfg.LlamaImage, LlamaCUDAImage: cfg.LlamaCUDAImage, Network: cfg.Network, ArtifactBaseURL: cfg.ArtifactBaseURL,
		ArtifactKey: artifactcred.Key(internalToken), CallKey: callKey, PlacementConstraint: cfg.Placement.Constraint, ArtifactVolume: cfg.ArtifactVolume,
	})
	if err != nil {
		return err
	}
	// Redis may be down: reconciling goes on, autoscaling waits for it
	rc, err := rdb.New(cfg.Redis)
	if err != nil {
		return err
	}
	defer rc.Close()
	reg := httpserver.NewRegistry()
	metrics := scheduler.NewMetrics(reg)
	rec := &scheduler.Reconciler{DB: pool, Docker: docker, Events: docker, Spec: spec, Log: log, Metrics: metrics}
	as := &scheduler.Autoscaler{DB: pool, Redis: rc, Prefix: cfg.RedisPrefix, Interval: cfg.Autoscale.Interval, Log: log, Metrics: metrics}
	health := httpserver.NewHealth(postgresCheck(pool))
	errc := make(chan error, 1)
	// any replica answers the dry run (`nlpswarm status --plan`, through the apiserver)
	app := http.NewServeMux()
	app.Handle(scheduler.PlanPath, rec.PlanHandler(readToken))
	// Prometheus's scrape targets (http_sd_configs): it needs no Docker socket
	app.Handle(scheduler.SDPath, scheduler.SDHandler(func(ctx context.Context) (scheduler.SDSnapshot, error) {
		return scheduler.ReadSDSnapshot(ctx, docker)
	}, readToken, log))
	go func() { errc <- serve(ctx, log, cfg.Options, app, health, reg) }()
	log.Info("waiting for leadership")
	leader, err := scheduler.AcquireLeadership(ctx, pool, 2*time.Second)
	if err != nil {
		if ctx.Err() != nil {
			return <-errc
		}
		return err
	}
	defer leader.Release()
	log.Info("leading", "image", spec.Image, "ort_image", spec.ORTImage, "llama_image", spec.LlamaImage, "llama_cuda_image", spec.LlamaCUDAImage, "network", spec.Network)
	actx, stopAutoscaler := context.WithCancel(ctx)
	go as.Run(actx)
	// the canary rollouts: promotes finish, the automatic rollback rule
	cw := &scheduler.CanaryWatcher{DB: pool, Docker: docker, Redis: rc, Prefix: cfg.RedisPrefix, Log: log, Metrics: metrics}
	go cw.Run(actx)
	err = rec.Loop(ctx, leader, cfg.Resync)
	stopAutoscaler()
	if err != nil {
		return err
	}
	return <-errc
}
