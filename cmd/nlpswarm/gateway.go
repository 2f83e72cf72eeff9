package main

import (
	"context"
	"fmt"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nlpswarm/nlpswarm/gateway"
	"github.com/nlpswarm/nlpswarm/internal/config"
	"github.com/nlpswarm/nlpswarm/internal/httpserver"
	"github.com/nlpswarm/nlpswarm/internal/pg"
	"github.com/nlpswarm/nlpswarm/internal/rdb"
	"github.com/nlpswarm/nlpswarm/internal/secret"
)

type gatewayConfig struct {
	httpserver.Options
	LogLevel  string     `description:"log level: debug, info, warn, error"`
	DB        pg.Config  `description:"Postgres (API keys, models, deployments, usage)"`
	Redis     rdb.Config `description:"Redis (rate limits and quotas; when it is down requests pass without limits: fail-open)"`
	Discovery string     `description:"replica discovery: dns (A records of tasks.nlp-<model>) or static"`
	Static    struct {
		Upstreams string `description:"static replicas: model=host:port|host:port,model2=host:port"`
	} `description:"static discovery"`
	UpstreamPort      int           `description:"runtime port on the replicas found by DNS"`
	Balancer          string        `description:"replica selection: least-outstanding (power of two choices) or round-robin"`
	Timeout           time.Duration `description:"deadline of a customer request, upstream retry included"`
	ModelTimeouts     string        `description:"per-model deadlines: model=30s,model2=2m"`
	MaxBodyBytes      int64         `description:"largest request body (413 beyond)"`
	MaxTexts          int           `description:"most texts in one request"`
	EjectAfter        int           `description:"consecutive failures that eject a replica until /v2/health/ready answers 200"`
	ProbeInterval     time.Duration `description:"how often an ejected replica is probed"`
	DiscoveryInterval time.Duration `description:"how often replicas are looked up (and at once after a connection error)"`
	CatalogRefresh    time.Duration `description:"how often the deployed models are reloaded from Postgres"`
	KeyCacheTTL       time.Duration `description:"how long an API key lookup is cached (at most 2s: a revoked key stops within 5s)"`
	UsageFlush        time.Duration `description:"how often usage counters are written to Postgres"`
	IdleConnTimeout   time.Duration `description:"keep-alive idle timeout of upstream connections (keep well under Swarm's 900s IPVS drop)"`
	DeadReplicaAfter  time.Duration `description:"a replica silent this long (its node gone: no reset, no answer to TCP keep-alive) fails the attempt, which is retried on another replica"`
	RedisPrefix       string        `description:"prefix of the gateway's Redis keys"`
	LimitSync         time.Duration `description:"how often the requests admitted against local rate limit buckets are settled with Redis, where every gateway's count meets"`
	GatewayID         string        `description:"names this gateway's load figures in Redis (default: hostname and a random suffix)"`
	LoadReport        time.Duration `description:"how often per-model in-flight and request figures go to Redis for the autoscaler (they expire after 3 periods)"`
	HoldMax           int           `description:"requests held per model while a model at zero starts a replica; beyond, 503 with Retry-After"`
	HoldRetryAfter    time.Duration `description:"Retry-After of a request refused by a full hold or held past its deadline"`
	HoldPoll          time.Duration `description:"how often a held model's replicas are looked up and probed for readiness"`
	WakeCoalesce      time.Duration `description:"how long the wake-up of a model at zero waits at most for the rest of a burst (it goes once no request joined for 50 ms), so that it asks for enough replicas at once"`
	GCPercent         int           `description:"Go GC target percent, as GOGC (ignored when GOGC is set): the heap is small, so 400 trades a few MB for about 10 % less CPU per request"`
}

func init() {
	register(command{Name: "gateway", Summary: "customer inference API: keys, limits, balancing across model replicas", Role: true, Run: runGateway})
}

func defaultGatewayConfig() *gatewayConfig {
	d := gateway.DefaultOptions()
	return &gatewayConfig{
		Options: httpserver.Defaults(":8080"), LogLevel: "info", DB: pg.DefaultConfig(), Redis: rdb.DefaultConfig(),
		Discovery: "dns", UpstreamPort: 8080, Balancer: "least-outstanding",
		Timeout: d.Timeout, MaxBodyBytes: d.MaxBodyBytes, MaxTexts: d.MaxTexts, EjectAfter: d.EjectAfter,
		ProbeInterval: d.ProbeInterval, DiscoveryInterval: d.DiscoveryInterval, CatalogRefresh: d.CatalogRefresh,
		KeyCacheTTL: d.KeyCacheTTL, UsageFlush: d.UsageFlush, IdleConnTimeout: d.IdleConnTimeout, RedisPrefix: d.RedisPrefix,
		DeadReplicaAfter: d.DeadReplicaTimeout, GCPercent: 400,
		LoadReport: d.LoadReport, HoldMax: d.HoldMax, HoldRetryAfter: d.HoldRetryAfter, HoldPoll: d.HoldPoll,
		WakeCoalesce: d.WakeCoalesce, LimitSync: d.LimitSync,
	}
}

func (c *gatewayConfig) options() (gateway.Options, error) {
	o := gateway.Options{
		Timeout: c.Timeout, MaxBodyBytes: c.MaxBodyBytes, MaxTexts: c.MaxTexts, EjectAfter: c.EjectAfter,
		ProbeInterval: c.ProbeInterval, DiscoveryInterval: c.DiscoveryInterval, CatalogRefresh: c.CatalogRefresh,
		KeyCacheTTL: c.KeyCacheTTL, UsageFlush: c.UsageFlush, IdleConnTimeout: c.IdleConnTimeout, RedisPrefix: c.RedisPrefix,
		DeadReplicaTimeout: c.DeadReplicaAfter, ModelTimeouts: map[string]time.Duration{}, GatewayID: c.GatewayID, LoadReport: c.LoadReport, HoldMax: c.HoldMax,
		HoldRetryAfter: c.HoldRetryAfter, HoldPoll: c.HoldPoll, WakeCoalesce: c.WakeCoalesce, LimitSync: c.LimitSync,
	}
	if c.KeyCacheTTL > 2*time.Second {
		return o, &config.Error{Msg: fmt.Sprintf("--keycachettl=%s: at most 2s, so that a revoked key stops within 5s", c.KeyCacheTTL)}
	}
	for _, part := range strings.Split(c.ModelTimeouts, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		name, val, ok := strings.Cut(part, "=")
		d, err := time.ParseDuration(strings.TrimSpace(val))
		if !ok || err != nil || d <= 0 {
			return o, &config.Error{Msg: fmt.Sprintf("--modeltimeouts: %q: want model=duration", part)}
		}
		o.ModelTimeouts[strings.TrimSpace(name)] = d
	}
	return o, nil
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
	opts, err := cfg.options()
	if err != nil {
		return err
	}
	if os.Getenv("GOGC") == "" && cfg.GCPercent > 0 {
		debug.SetGCPercent(cfg.GCPercent)
	}
	var disc gateway.Discoverer
	switch cfg.Discovery {
	case "dns":
		disc = gateway.DNSDiscovery{Port: cfg.UpstreamPort}
	case "static":
		s, err := gateway.ParseStatic(cfg.Static.Upstreams)
		if err != nil {
			return &config.Error{Msg: err.Error()}
		}
		if len(s) == 0 {
			return &config.Error{Msg: "--discovery=static needs --static.upstreams=model=host:port|host:port,..."}
		}
		disc = s
	default:
		return &config.Error{Msg: fmt.Sprintf("--discovery=%q: want dns or static", cfg.Discovery)}
	}
	var policy gateway.Policy
	switch cfg.Balancer {
	case "least-outstanding", "":
		policy = gateway.LeastOutstanding{}
	case "round-robin":
		policy = &gateway.RoundRobin{}
	default:
		return &config.Error{Msg: fmt.Sprintf("--balancer=%q: want least-outstanding or round-robin", cfg.Balancer)}
	}
	rpw, err := secret.Optional("redis password", cfg.Redis.PasswordFile, "")
	if err != nil {
		return err
	}

	pool, err := pg.Connect(ctx, cfg.DB)
	if err != nil {
		return err
	}
	defer pool.Close()
	// Redis may be down at start: the gateway serves anyway (fail-open) and
	// the client reconnects by itself.
	rc := redis.NewClient(&redis.Options{
		Addr: cfg.Redis.Addr, Password: rpw, DB: cfg.Redis.DB, DialTimeout: cfg.Redis.DialTimeout,
		ReadTimeout: 500 * time.Millisecond, WriteTimeout: 500 * time.Millisecond, PoolTimeout: time.Second, MaxRetries: 1,
	})
	defer rc.Close()
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	if err := rc.Ping(pctx).Err(); err != nil {
		log.Warn("redis unreachable at start; serving without rate limits until it answers (fail-open)", "addr", cfg.Redis.Addr, "err", err)
	}
	cancel()

	reg := httpserver.NewRegistry()
	gw, err := gateway.New(ctx, opts, gateway.Deps{DB: pool, Redis: rc, Discovery: disc, Policy: policy, Log: log, Registry: reg})
	if err != nil {
		return err
	}
	log.Info("gateway ready", "discovery", cfg.Discovery, "balancer", cfg.Balancer)
	health := httpserver.NewHealth(httpserver.Check{Name: "postgres", Fn: pool.Ping})
	serr := serve(ctx, log, cfg.Options, gw, health, reg)
	fctx, fcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer fcancel()
	if err := gw.Close(fctx); err != nil {
		log.Error("final usage flush failed", "err", err)
	}
	return serr
}
