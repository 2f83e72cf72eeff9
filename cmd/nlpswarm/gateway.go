//go:build !agentonly

package main

import (
	"context"
	"fmt"
	"os"
	"runtime/debug"
	"time"

	"github.com/nlpswarm/nlpswarm/gateway"
	"github.com/nlpswarm/nlpswarm/internal/config"
	"github.com/nlpswarm/nlpswarm/internal/httpserver"
	"github.com/nlpswarm/nlpswarm/internal/pg"
	"github.com/nlpswarm/nlpswarm/internal/rdb"
	"github.com/nlpswarm/nlpswarm/internal/secret"
)

// gatewayConfig is the gateway role's configuration: the gateway's own
// (gateway.Config, whose fields are flags as they are) and the process's.
type gatewayConfig struct {
	httpserver.Options
	gateway.Config
	LogLevel string    `description:"log level: debug, info, warn, error"`
	DB       pg.Config `description:"Postgres (API keys, models, deployments, usage)"`
	// a Postgres that does not answer does not hold the start: the gateway
	// serves from its caches meanwhile
	SchemaWait time.Duration `description:"how long to wait at start until Postgres holds at least the schema version this binary carries (applied by nlpswarm migrate up); a Postgres that does not answer is not waited for; 0: do not check"`
	Redis      rdb.Config    `description:"Redis (rate limits and quotas; when it is down requests pass without limits: fail-open)"`
	// only the gateways hold it: a verdict in Redis without its MAC is
	// ignored, so whoever can write Redis cannot mint a key
	KeySecretFile string `description:"file holding the secret (at least 32 bytes) that seals the API key verdicts gateways share in Redis (HMAC-SHA256); without it verdicts are not shared through Redis"`
	// the scheduler holds it too: each model's replicas require the call
	// credential derived from it for their model
	CallSecretFile string `description:"file holding the replica call secret (at least 32 bytes), the scheduler's: every request to a model's replicas carries the call credential derived from it for that model (internal/artifactcred); without it none is sent, and replicas that require one are answered 502"`
	GCPercent      int    `description:"Go GC target percent, as GOGC (ignored when GOGC is set): the heap is small, so 400 trades a few MB for about 10 % less CPU per request"`
	// the Go runtime's soft memory limit, so that GOGC=400 cannot carry the
	// heap past the container's limit (the OOM of issue 17 finding 5)
	MemoryLimit        int64 `description:"Go memory limit in bytes, as GOMEMLIMIT (ignored when GOMEMLIMIT is set); 0: --memorylimitpercent of the container's cgroup memory limit (none without one)"`
	MemoryLimitPercent int   `description:"share of the container's cgroup memory limit (memory.max, or v1's memory.limit_in_bytes) given to the Go runtime as its memory limit"`
}

// gatewayFinalFlush bounds the work after the server stopped (see
// defaultGatewayConfig).
const gatewayFinalFlush = 5 * time.Second

func init() {
	register(command{Name: "gateway", Summary: "customer inference API: keys, limits, balancing across model replicas", Role: true, Run: runGateway})
}

func defaultGatewayConfig() *gatewayConfig {
	// Redis fails fast: a request waits at most about half a second for it
	// before passing without limits (fail-open)
	r := rdb.DefaultConfig()
	r.Timeout = 500 * time.Millisecond
	// the whole shutdown fits in the stack's stop_grace_period (30s): drain
	// delay (2s), in-flight requests (at most 20s), then the last rate limit
	// settlement and usage flush (gatewayFinalFlush); what that flush cannot
	// write stays in the usage spool for the next gateway
	opts := httpserver.Defaults(":8080")
	opts.ShutdownTimeout = 20 * time.Second
	return &gatewayConfig{
		Options: opts, Config: gateway.DefaultConfig(), LogLevel: "info",
		DB: pg.DefaultConfig(), SchemaWait: schemaWaitDefault, Redis: r, GCPercent: 400, MemoryLimitPercent: 80,
	}
}

func runGateway(ctx context.Context, args []string) error {
	cfg := defaultGatewayConfig()
	if err := loadConfig("gateway", cfg, args); err != nil {
		return err
	}
	log, err := newLogger("gateway", cfg.LogLevel)
	if err != nil {
		return err
	}
	if err := cfg.Config.Check(); err != nil {
		return &config.Error{Msg: err.Error()}
	}
	if os.Getenv("GOGC") == "" && cfg.GCPercent > 0 {
		debug.SetGCPercent(cfg.GCPercent)
	}
	// before gateway.New: its in-flight body-byte cap defaults to a share of it
	if os.Getenv("GOMEMLIMIT") == "" {
		lim, ok, err := gateway.MemoryLimit(cfg.MemoryLimit, cfg.MemoryLimitPercent, gateway.CgroupV2MemoryMax, gateway.CgroupV1MemoryMax)
		switch {
		case err != nil:
			log.Warn("no Go memory limit set", "err", err)
		case ok:
			debug.SetMemoryLimit(lim)
			log.Info("go memory limit", "bytes", lim)
		}
	}
	// the body deadline never outlasts the server's read timeout (setting it
	// replaces the server's deadline)
	if cfg.ReadTimeout > 0 && (cfg.Config.BodyTimeout <= 0 || cfg.Config.BodyTimeout > cfg.ReadTimeout) {
		cfg.Config.BodyTimeout = cfg.ReadTimeout
	}
	var keySecret []byte
	if cfg.KeySecretFile != "" {
		v, err := secret.Read("key cache secret", cfg.KeySecretFile)
		if err != nil {
			return &config.Error{Msg: err.Error()}
		}
		if len(v) < gateway.MinKeyCacheSecret {
			return &config.Error{Msg: fmt.Sprintf("--keysecretfile: the secret in %s has %d bytes, at least %d", cfg.KeySecretFile, len(v), gateway.MinKeyCacheSecret)}
		}
		keySecret = []byte(v)
	}
	callKey, err := readCallKey(cfg.CallSecretFile)
	if err != nil {
		return err
	}
	// (warnings after every secret is read: a refused one is the only line)
	if keySecret == nil {
		log.Warn("no --keysecretfile: API key verdicts are not shared through Redis; each gateway asks Postgres")
	}
	if callKey == nil {
		log.Warn("no --callsecretfile: requests to the replicas carry no call credential (replicas that require one answer 401, the gateway 502)")
	}
	// Redis may be down at start: the gateway serves anyway (fail-open) and
	// the client reconnects by itself.
	rc, err := rdb.New(cfg.Redis)
	if err != nil {
		return err
	}
	defer rc.Close()

	// Postgres may be down at start: the gateway serves from its catalogue
	// snapshot and cached keys meanwhile (gateway.New)
	pool, err := pg.Open(ctx, cfg.DB)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := waitSchema(ctx, pool, cfg.SchemaWait, true, log); err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	if err := rc.Ping(pctx).Err(); err != nil {
		log.Warn("redis unreachable at start; serving without rate limits until it answers (fail-open)", "addr", cfg.Redis.Addr, "err", err)
	}
	cancel()

	reg := httpserver.NewRegistry()
	gw, err := gateway.New(ctx, cfg.Config, gateway.Deps{DB: pool, Redis: rc, Log: log, Registry: reg, KeySecret: keySecret, CallKey: callKey})
	if err != nil {
		return err
	}
	log.Info("gateway ready", "discovery", cfg.Discovery, "balancer", cfg.Balancer)
	// readiness is what the gateway itself needs (a catalogue), never
	// Postgres: Swarm's healthcheck would kill every gateway in a database
	// outage (issue 18 item 1)
	health := httpserver.NewHealth(httpserver.Check{Name: "catalogue", Fn: gw.Ready})
	var engine httpserver.EngineFunc // net/http's server, or the fast front end (--frontend)
	if cfg.Config.Frontend != gateway.FrontendNetHTTP {
		engine = gateway.FastEngine(cfg.Config, log)
	}
	serr := httpserver.RunEngine(ctx, cfg.Options, engine, gw, nil, health, reg, log)
	fctx, fcancel := context.WithTimeout(context.Background(), gatewayFinalFlush)
	defer fcancel()
	if err := gw.Close(fctx); err != nil {
		log.Error("final usage flush failed", "err", err)
	}
	return serr
}
