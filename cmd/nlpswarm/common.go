package main

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nlpswarm/nlpswarm/internal/artifactcred"
	"github.com/nlpswarm/nlpswarm/internal/config"
	"github.com/nlpswarm/nlpswarm/internal/httpserver"
	"github.com/nlpswarm/nlpswarm/internal/logging"
	"github.com/nlpswarm/nlpswarm/internal/pg"
	"github.com/nlpswarm/nlpswarm/internal/secret"
)

// readCallKey reads the replica call secret (--callsecretfile of the
// scheduler and the gateway; "" : none) into the key of the runtimes' call
// credentials (artifactcred.CallKey); nil without one.
func readCallKey(path string) ([]byte, error) {
	v, err := secret.Optional("replica call secret", path, "")
	if err != nil {
		return nil, &config.Error{Msg: err.Error()}
	}
	k, err := artifactcred.CallKey(v)
	if err != nil {
		return nil, &config.Error{Msg: "--callsecretfile: " + err.Error()}
	}
	return k, nil
}

// loadConfig loads cfg for a command; on --help it prints the options and
// returns errHelpShown.
func loadConfig(name string, cfg any, args []string) error {
	err := config.Load(cfg, args, os.Environ())
	if errors.Is(err, config.ErrHelp) {
		_ = config.Help(os.Stdout, name, commands[name].Summary, cfg)
		return errHelpShown
	}
	return err
}

// newLogger is the JSON logger of a role.
func newLogger(role, level string) (*slog.Logger, error) {
	l, err := logging.New(os.Stderr, role, level)
	if err != nil {
		return nil, &config.Error{Msg: err.Error()}
	}
	slog.SetDefault(l)
	return l, nil
}

// serve runs app behind the operational endpoints until ctx ends, then drains.
func serve(ctx context.Context, log *slog.Logger, opts httpserver.Options, app http.Handler, health *httpserver.Health, reg *prometheus.Registry) error {
	return httpserver.Run(ctx, opts, app, health, reg, log)
}

// postgresCheck is the readiness check of a role that serves on through a
// database outage (the apiserver answers 503s, the scheduler waits for its
// lease): a dead Postgres degrades /readyz without failing it, so that
// Swarm's healthcheck does not restart every such role during the outage
// (issue 18).
func postgresCheck(pool *pgxpool.Pool) httpserver.Check {
	return httpserver.Check{Name: "postgres", Fn: pool.Ping, Degrades: true}
}

// schemaWaitDefault bounds how long a role waits at start for the schema it
// was built for; past it the role exits and Swarm restarts it.
const schemaWaitDefault = 2 * time.Minute

// waitSchema holds a role's start until the database carries the schema
// its binary was built for, so that a rolling upgrade never runs a new role
// on an old schema. proceedUnknown lets a role that serves without
// Postgres start when Postgres does not answer.
func waitSchema(ctx context.Context, pool *pgxpool.Pool, limit time.Duration, proceedUnknown bool, log *slog.Logger) error {
	if limit <= 0 {
		return nil
	}
	want, err := pg.EmbeddedVersion()
	if err != nil {
		return err
	}
	_, err = pg.WaitSchema(ctx, pool, pg.SchemaWait{Want: want, Limit: limit, ProceedUnknown: proceedUnknown}, log)
	return err
}
