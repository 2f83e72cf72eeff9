//go:build !agentonly

package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/nlpswarm/nlpswarm/apiserver"
	"github.com/nlpswarm/nlpswarm/modelmgr"

	"github.com/nlpswarm/nlpswarm/internal/httpserver"
	"github.com/nlpswarm/nlpswarm/internal/pg"
	"github.com/nlpswarm/nlpswarm/internal/rdb"
	"github.com/nlpswarm/nlpswarm/internal/secret"
)

type apiserverConfig struct {
	httpserver.Options
	LogLevel string    `description:"log level: debug, info, warn, error"`
	DB       pg.Config `description:"Postgres"`
	Store    struct {
		Dir        string        `description:"blob store directory (content-addressed archives)"`
		GCGrace    time.Duration `description:"a blob no version references is removed once this old (stored, or last uploaded again, this long ago); a database error never removes one"`
		GCInterval time.Duration `description:"how often unreferenced blobs are looked for"`
	} `description:"model blob store"`
	Admin struct {
		TokenFile string `description:"file holding the admin bearer token (a Docker secret)"`
	} `description:"admin authentication"`
	Internal struct {
		TokenFile string `description:"file holding the internal token runtimes use to fetch artifacts"`
	} `description:"internal authentication"`
	Web struct {
		SecureCookie     bool          `description:"always mark the web session cookie Secure (behind a TLS-terminating proxy); otherwise it is Secure only on requests that came over TLS"`
		SessionTTL       time.Duration `description:"how long a web login lasts"`
		RandomSessionKey bool          `description:"sign web sessions with a key made at start (a restart logs everyone out) instead of one derived from the admin token"`
	} `description:"backoffice web pages (/ui)"`
	Migrate    bool          `description:"apply schema migrations at start (under an advisory lock); the stack runs them in its one-shot migrate service instead"`
	SchemaWait time.Duration `description:"how long to wait at start until Postgres holds at least the schema version this binary carries (applied by nlpswarm migrate up, or --migrate); 0: do not check"`
	MigrateDB  pg.Config     `description:"Postgres as the schema's owner, used for --migrate only and closed after it, so that the API serves with --db, a role that cannot change the schema (empty url: --db)"`
	Upload     struct {
		MaxBytes     int64         `description:"largest accepted model archive, in bytes"`
		SmokeTimeout time.Duration `description:"time limit of the smoke inference run on every upload"`
		Idle         time.Duration `description:"an upload that sends nothing for this long is cut off (the server's readtimeout does not apply to uploads)"`
		Timeout      time.Duration `description:"the longest an upload, validation included, may take"`
	} `description:"model uploads"`
	Scheduler struct {
		URL       string `description:"a scheduler's HTTP address; GET /api/v1/plan (nlpswarm status --plan) relays its dry run"`
		TokenFile string `description:"file holding the scheduler's read token, sent as bearer token with that relay (a Docker secret; empty: none)"`
	} `description:"the scheduler"`
	Redis       rdb.Config `description:"Redis, where the gateways count rate limits and quotas (the account pages show them; empty addr: not shown)"`
	RedisPrefix string     `description:"the gateways' Redis key prefix"`
	Prometheus  struct {
		URL string `description:"Prometheus's address; the monitoring pages draw from its query API (empty: not shown)"`
	} `description:"Prometheus"`
}

func init() {
	register(command{Name: "apiserver", Summary: "backoffice REST API and web pages", Role: true, Run: runAPIServer})
}

func runAPIServer(ctx context.Context, args []string) error {
	cfg := &apiserverConfig{Options: httpserver.Defaults(":8081"), LogLevel: "info", DB: pg.DefaultConfig(), Migrate: true}
	cfg.MigrateDB = pg.Config{MaxConns: 2, ConnTimeout: cfg.DB.ConnTimeout}
	cfg.Store.Dir = "/var/lib/nlpswarm/store"
	cfg.Store.GCGrace, cfg.Store.GCInterval = 24*time.Hour, 10*time.Minute
	cfg.Scheduler.URL = "http://scheduler:8082"
	cfg.Admin.TokenFile = "/run/secrets/admin_token"
	cfg.Internal.TokenFile = "/run/secrets/internal_token"
	cfg.Upload.MaxBytes = 10 << 30
	cfg.Upload.SmokeTimeout = 2 * time.Minute
	cfg.Upload.Idle = apiserver.DefaultUploadIdle
	cfg.Upload.Timeout = apiserver.DefaultUploadTimeout
	cfg.Web.SessionTTL = 12 * time.Hour
	cfg.SchemaWait = schemaWaitDefault
	cfg.Redis, cfg.RedisPrefix = rdb.DefaultConfig(), "nlpswarm:"
	cfg.Redis.Addr = ""
	if err := loadConfig("apiserver", cfg, args); err != nil {
		return err
	}
	log, err := newLogger("apiserver", cfg.LogLevel)
	if err != nil {
		return err
	}
	adminToken, err := secret.Read("admin token", cfg.Admin.TokenFile)
	if err != nil {
		return err
	}
	internalToken, err := secret.Read("internal token", cfg.Internal.TokenFile)
	if err != nil {
		return err
	}
	schedulerToken, err := secret.Optional("scheduler read token", cfg.Scheduler.TokenFile, "")
	if err != nil {
		return err
	}
	store, err := modelmgr.NewFSStore(cfg.Store.Dir)
	if err != nil {
		return err
	}
	pool, err := pg.Connect(ctx, cfg.DB)
	if err != nil {
		return err
	}
	defer pool.Close()
	if cfg.Migrate {
		if err := migrateAtStart(ctx, cfg.MigrateDB, pool, log); err != nil {
			return err
		}
	}
	if err := waitSchema(ctx, pool, cfg.SchemaWait, false, log); err != nil {
		return err
	}
	var rc *redis.Client
	if cfg.Redis.Addr != "" {
		// not Connect: the pages say so when Redis is down, the API serves on
		if rc, err = rdb.New(cfg.Redis); err != nil {
			return err
		}
		defer rc.Close()
	}
	if cfg.Store.GCGrace > 0 && cfg.Store.GCInterval > 0 {
		go modelmgr.RunBlobGC(ctx, store, &modelmgr.Registry{DB: pool}, cfg.Store.GCGrace, cfg.Store.GCInterval, log)
	}
	reg := httpserver.NewRegistry()
	health := httpserver.NewHealth(postgresCheck(pool))
	acfg := apiserver.Config{
		AdminToken: adminToken, InternalToken: internalToken, MaxUploadBytes: cfg.Upload.MaxBytes,
		UploadIdle: cfg.Upload.Idle, UploadTimeout: cfg.Upload.Timeout,
		Web:          apiserver.WebConfig{SecureCookie: cfg.Web.SecureCookie, SessionTTL: cfg.Web.SessionTTL, RandomSessionKey: cfg.Web.RandomSessionKey},
		SchedulerURL: cfg.Scheduler.URL, SchedulerToken: schedulerToken, RedisPrefix: cfg.RedisPrefix, PrometheusURL: cfg.Prometheus.URL,
	}
	if rc != nil { // never a typed nil in the interface
		acfg.Redis = rc
	}
	probeValidationSandbox(reg, log)
	api := apiserver.New(acfg, pool, store, uploadValidator(cfg.Upload.SmokeTimeout), log)
	if rc != nil { // each key's quota use, for the stack's "quota near its end" alert
		reg.MustRegister(api.QuotaCollector())
	}
	// /internal/blobs only on the ops listener (the overlay); the published
	// port serves the backoffice alone
	var internal http.Handler
	if cfg.OpsListen != "" {
		internal = api.InternalHandler()
	} else {
		log.Warn("no --opslisten: /internal/blobs is not served, runtimes cannot download artifacts")
	}
	return httpserver.RunWithOps(ctx, cfg.Options, api.Handler(), internal, health, reg, log)
}

// migrateAtStart applies the schema, as the owner role of mc when it has a
// URL (on a pool of its own, closed at once), else on the service's pool.
func migrateAtStart(ctx context.Context, mc pg.Config, pool *pgxpool.Pool, log *slog.Logger) error {
	if mc.URL != "" {
		mp, err := pg.Connect(ctx, mc)
		if err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		defer mp.Close()
		pool = mp
	}
	lines, err := pg.Migrate(ctx, pool, "up", log)
	if err != nil {
		return err
	}
	log.Info("schema", "migrations", lines)
	return nil
}
