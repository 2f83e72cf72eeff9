package pg

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/nlpswarm/nlpswarm/internal/secret"
	"github.com/nlpswarm/nlpswarm/migrations"
)

// Config is the Postgres part of a role's configuration.
type Config struct {
	URL          string        `description:"Postgres URL (postgres://user@host:5432/db?sslmode=disable); the password is better given by passwordfile"`
	PasswordFile string        `description:"file holding the Postgres password (a Docker secret); overrides a password in the URL"`
	MaxConns     int32         `description:"max pool connections"`
	ConnTimeout  time.Duration `description:"how long to wait for Postgres at start"`
}

// DefaultConfig matches the local setup of .ci/run and make up.
func DefaultConfig() Config {
	return Config{URL: "postgres://nlpswarm@127.0.0.1:5432/nlpswarm?sslmode=disable", MaxConns: 10, ConnTimeout: 10 * time.Second}
}

// Redacted returns the URL with its password hidden, for logs and errors.
func Redacted(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// Connect opens a pool and waits until Postgres answers or ConnTimeout ends.
func Connect(ctx context.Context, c Config) (*pgxpool.Pool, error) {
	pool, err := Open(ctx, c)
	if err != nil {
		return nil, err
	}
	timeout := c.ConnTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		if last = pool.Ping(wctx); last == nil {
			return pool, nil
		}
		select {
		case <-wctx.Done():
			pool.Close()
			return nil, fmt.Errorf("postgres %s unreachable after %s: %s", Redacted(c.URL), timeout, firstLine(last))
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// Open opens a pool without waiting for Postgres: its connections are made
// as queries need them, so a role that can work without Postgres for a while
// (the gateway, on its caches) starts while Postgres is down.
func Open(ctx context.Context, c Config) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(c.URL)
	if err != nil {
		return nil, fmt.Errorf("postgres URL %s: invalid", Redacted(c.URL))
	}
	if c.PasswordFile != "" {
		pw, err := secret.Read("postgres password", c.PasswordFile)
		if err != nil {
			return nil, err
		}
		pc.ConnConfig.Password = pw
	}
	if c.MaxConns > 0 {
		pc.MaxConns = c.MaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("postgres %s: %w", Redacted(c.URL), err)
	}
	return pool, nil
}

func firstLine(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

// catalogRace reports whether err is Postgres's "tuple concurrently
// updated": two databases of one cluster migrating at once (the tests' do)
// both ALTER the same cluster-wide role (00041), which the per-database
// advisory lock does not serialise. The losing migration's transaction is
// rolled back, so running it again is safe.
func catalogRace(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "XX000" && strings.Contains(pe.Message, "tuple concurrently updated")
	}
	return strings.Contains(err.Error(), "tuple concurrently updated")
}

// migrationLockID is the advisory lock key goose holds while migrating.
const migrationLockID = 4_242_001

func provider(pool *pgxpool.Pool, log *slog.Logger) (*goose.Provider, func() error, error) {
	db := stdlib.OpenDBFromPool(pool)
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(migrationLockID), lock.WithLockTimeout(1, 120))
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, migrations.FS,
		goose.WithSessionLocker(locker), goose.WithSlog(log))
	if err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("migrations: %w", err)
	}
	return p, db.Close, nil
}

// Migrate runs a migration command: "up", "down" (one step) or "status". It
// returns human-readable lines describing what it did.
func Migrate(ctx context.Context, pool *pgxpool.Pool, command string, log *slog.Logger) ([]string, error) {
	p, closeDB, err := provider(pool, log)
	if err != nil {
		return nil, err
	}
	defer closeDB()
	var out []string
	switch command {
	case "up":
		for attempt := 0; ; attempt++ {
			res, err := p.Up(ctx)
			for _, r := range res {
				out = append(out, fmt.Sprintf("applied %s (%s)", r.Source.Path, r.Duration.Round(time.Millisecond)))
			}
			if err != nil && catalogRace(err) && attempt < 4 {
				// (its transaction rolled back: the migration runs again)
				select {
				case <-ctx.Done():
					return out, fmt.Errorf("migrate up: %w", err)
				case <-time.After(time.Duration(attempt+1) * 100 * time.Millisecond):
				}
				continue
			}
			if err != nil {
				return out, fmt.Errorf("migrate up: %w", err)
			}
			break
		}
		if len(out) == 0 { // (only this loop appends to out)
			out = append(out, "schema is up to date")
		}
	case "down":
		r, err := p.Down(ctx)
		if err != nil {
			if errors.Is(err, goose.ErrNoNextVersion) {
				return []string{"nothing to roll back"}, nil
			}
			return nil, fmt.Errorf("migrate down: %w", err)
		}
		out = append(out, fmt.Sprintf("rolled back %s", r.Source.Path))
	case "status":
		st, err := p.Status(ctx)
		if err != nil {
			return nil, fmt.Errorf("migrate status: %w", err)
		}
		for _, s := range st {
			when := "pending"
			if s.State == goose.StateApplied {
				when = "applied " + s.AppliedAt.UTC().Format(time.RFC3339)
			}
			out = append(out, fmt.Sprintf("%-28s %s", s.Source.Path, when))
		}
	default:
		return nil, fmt.Errorf("migrate: unknown command %q (want up, down or status)", command)
	}
	return out, nil
}
