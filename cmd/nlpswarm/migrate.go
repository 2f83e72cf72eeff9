//go:build !agentonly

package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/nlpswarm/nlpswarm/internal/config"
	"github.com/nlpswarm/nlpswarm/internal/pg"
)

type migrateConfig struct {
	DB  pg.Config `description:"Postgres"`
	Yes bool      `description:"migrate down without asking (it drops tables and their data)"`
}

// In the stack, migrate up runs as a one-shot service (restart on failure
// only), the only one but Postgres holding the owner's password; the roles
// wait for the version it applies (waitSchema).
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
	if verb == "down" && !cfg.Yes {
		if err := confirmDown(os.Stdin, os.Stderr); err != nil {
			return err
		}
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

// confirmDown asks on in whether to roll back the latest migration, which
// drops what it created, data included; only "yes" goes on. With nothing
// to read (a script, no terminal) it refuses: --yes is the way to say so.
func confirmDown(in io.Reader, out io.Writer) error {
	fmt.Fprint(out, "migrate down rolls back the latest migration and drops what it created, data included. Type yes to go on: ")
	line, err := bufio.NewReader(io.LimitReader(in, 64)).ReadString('\n')
	if strings.TrimSpace(line) == "yes" {
		return nil
	}
	fmt.Fprintln(out)
	if err != nil {
		return &config.Error{Msg: "migrate down not confirmed (no answer on stdin); pass --yes to run it unattended"}
	}
	return &config.Error{Msg: "migrate down not confirmed; nothing was changed"}
}
