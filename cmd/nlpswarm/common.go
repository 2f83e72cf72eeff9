package main

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"os"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nlpswarm/nlpswarm/internal/config"
	"github.com/nlpswarm/nlpswarm/internal/httpserver"
	"github.com/nlpswarm/nlpswarm/internal/logging"
)

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
