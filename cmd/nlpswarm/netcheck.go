//go:build !agentonly

package main

import (
	"context"
	"fmt"
	"net/http"
	"os"

	"github.com/nlpswarm/nlpswarm/internal/httpserver"
)

type netcheckConfig struct {
	httpserver.Options
}

func init() {
	register(command{Name: "netcheck", Summary: "tiny HTTP server answering its hostname, to check overlay networking and published ports", Run: runNetcheck})
}

func runNetcheck(ctx context.Context, args []string) error {
	cfg := &netcheckConfig{Options: httpserver.Defaults(":8080")}
	cfg.DrainDelay = 0
	if err := loadConfig("netcheck", cfg, args); err != nil {
		return err
	}
	log, err := newLogger("netcheck", "info")
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "netcheck %s\n", host)
	})
	return serve(ctx, log, cfg.Options, app, httpserver.NewHealth(), httpserver.NewRegistry())
}
