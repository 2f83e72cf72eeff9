package pg_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/nlpswarm/nlpswarm/internal/pg"
	"github.com/nlpswarm/nlpswarm/internal/pg/pgtest"
)

func TestClassifySchema(t *testing.T) {
	for _, c := range []struct {
		name          string
		applied, want int64
		err           error
		st            pg.SchemaState
	}{
		{"same version", 21, 21, nil, pg.SchemaReady},
		{"newer schema, older binary (rolling upgrade)", 22, 21, nil, pg.SchemaReady},
		{"older schema", 20, 21, nil, pg.SchemaOld},
		{"empty version table", 0, 21, nil, pg.SchemaOld},
		{"no version table yet", 0, 21, fmt.Errorf("schema version: %w", &pgconn.PgError{Code: "42P01"}), pg.SchemaOld},
		{"version table not granted yet", 0, 21, fmt.Errorf("schema version: %w", &pgconn.PgError{Code: "42501"}), pg.SchemaOld},
		{"postgres unreachable", 0, 21, errors.New("dial tcp: connection refused"), pg.SchemaUnknown},
		{"other postgres error", 30, 21, &pgconn.PgError{Code: "57P01"}, pg.SchemaUnknown},
	} {
		if got := pg.ClassifySchema(c.applied, c.want, c.err); got != c.st {
			t.Errorf("%s: %v, want %v", c.name, got, c.st)
		}
	}
}

func TestEmbeddedVersion(t *testing.T) {
	v, err := pg.EmbeddedVersion()
	if err != nil || v < 21 {
		t.Fatalf("embedded version %d, %v; want at least 21", v, err)
	}
}

// A role started against an older schema waits, and proceeds once
// `migrate up` has run; with nobody migrating it gives up at its limit.
func TestWaitSchemaUntilMigrated(t *testing.T) {
	db := pgtest.New(t, true)
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	want, err := pg.EmbeddedVersion()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := pg.Migrate(ctx, db.Pool, "down", nil); err != nil {
		t.Fatalf("down: %v %v", out, err)
	}
	if v, err := pg.AppliedVersion(ctx, db.Pool); err != nil || v >= want {
		t.Fatalf("after down: version %d, %v; want below %d", v, err, want)
	}

	st, err := pg.WaitSchema(ctx, db.Pool, pg.SchemaWait{Want: want, Limit: 200 * time.Millisecond, Interval: 20 * time.Millisecond}, log)
	if err == nil || st != pg.SchemaOld {
		t.Fatalf("older schema, nobody migrating: %v, %v; want SchemaOld and an error", st, err)
	}

	type result struct {
		st  pg.SchemaState
		err error
	}
	done := make(chan result, 1)
	go func() {
		st, err := pg.WaitSchema(ctx, db.Pool, pg.SchemaWait{Want: want, Limit: 30 * time.Second, Interval: 20 * time.Millisecond}, log)
		done <- result{st, err}
	}()
	select {
	case r := <-done:
		t.Fatalf("started on an older schema: %v, %v", r.st, r.err)
	case <-time.After(300 * time.Millisecond):
	}
	if out, err := pg.Migrate(ctx, db.Pool, "up", nil); err != nil {
		t.Fatalf("up: %v %v", out, err)
	}
	select {
	case r := <-done:
		if r.err != nil || r.st != pg.SchemaReady {
			t.Fatalf("after migrate up: %v, %v", r.st, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("still waiting 10s after migrate up")
	}

	// a cancelled start ends the wait
	if _, err := pg.Migrate(ctx, db.Pool, "down", nil); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := pg.WaitSchema(cctx, db.Pool, pg.SchemaWait{Want: want, Limit: time.Minute}, log); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

// A role that serves without Postgres (the gateway) starts at once when it
// does not answer, rather than waiting out its limit.
func TestWaitSchemaUnreachable(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	pool, err := pg.Open(context.Background(), pg.Config{URL: "postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=1"})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	start := time.Now()
	st, err := pg.WaitSchema(context.Background(), pool, pg.SchemaWait{Want: 21, Limit: time.Minute, ProceedUnknown: true}, log)
	if err != nil || st != pg.SchemaUnknown || time.Since(start) > 10*time.Second {
		t.Fatalf("unreachable, ProceedUnknown: %v, %v after %s", st, err, time.Since(start))
	}
	st, err = pg.WaitSchema(context.Background(), pool, pg.SchemaWait{Want: 21, Limit: 300 * time.Millisecond, Interval: 50 * time.Millisecond}, log)
	if err == nil || st != pg.SchemaUnknown {
		t.Fatalf("unreachable: %v, %v; want an error", st, err)
	}
}
