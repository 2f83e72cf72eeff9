package main

import (
	"context"
	"fmt"
	"os"

	"github.com/nlpswarm/nlpswarm/internal/config"
	"github.com/nlpswarm/nlpswarm/internal/pg"
)

type migrateConfig struct {
	DB pg.Config `description:"Postgres"`
}

func init() {
	register(command{Name: "migrate", Summary: "apply the Postgres schema: migrate up|down|status", Role: true, Run: runMigrate})
}

func runMigrate(ctx context.Context, args []string) error {
	cfg := &migrateConfig{DB: pg.DefaultConfig()}
	verb := "up"
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		verb, args = args[0], args[1:]
	}
	switch verb {
	case "up", "down", "status":
	default:
		return &config.Error{Msg: fmt.Sprintf("unknown migrate command %q (want up, down or status)", verb)}
	}
	if err := loadConfig("migrate", cfg, args); err != nil {
		return err
	}
	pool, err := pg.Connect(ctx, cfg.DB)
	if err != nil {
		return err
	}
	defer pool.Close()
	lines, err := pg.Migrate(ctx, pool, verb, nil)
	for _, l := range lines {
		fmt.Fprintln(os.Stdout, l)
	}
	return err
}
