package pg

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pressly/goose/v3"

	"github.com/nlpswarm/nlpswarm/migrations"
)

// SchemaState is what a role learns from the database's schema version.
type SchemaState int

const (
	// SchemaReady: the applied version is at least the binary's.
	SchemaReady SchemaState = iota
	// SchemaOld: the database answered with an older schema, or with none
	// this role may read (no version table yet, or the grant on it comes
	// with a migration still to apply).
	SchemaOld
	// SchemaUnknown: the database did not answer (unreachable, timed out).
	SchemaUnknown
)

func (s SchemaState) String() string {
	switch s {
	case SchemaReady:
		return "ready"
	case SchemaOld:
		return "older than this binary's"
	default:
		return "unknown (postgres did not answer)"
	}
}

// EmbeddedVersion is the newest migration version this binary carries.
func EmbeddedVersion() (int64, error) {
	names, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil {
		return 0, fmt.Errorf("migrations: %w", err)
	}
	var max int64
	for _, n := range names {
		v, err := goose.NumericComponent(n)
		if err != nil {
			return 0, fmt.Errorf("migration %s: %w", n, err)
		}
		max = maxInt64(max, v)
	}
	if max == 0 {
		return 0, errors.New("migrations: none embedded")
	}
	return max, nil
}

func maxInt64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

// AppliedVersion reads the schema version goose recorded (its provider
// deletes a rolled-back version's row, so the largest is the current one).
func AppliedVersion(ctx context.Context, pool *pgxpool.Pool) (int64, error) {
	var v *int64
	if err := pool.QueryRow(ctx, `SELECT max(version_id) FROM goose_db_version`).Scan(&v); err != nil {
		return 0, fmt.Errorf("schema version: %w", err)
	}
	if v == nil {
		return 0, nil
	}
	return *v, nil
}

// ClassifySchema decides, from the applied version read (or the error of
// reading it), whether a binary that needs the version want may start.
// A newer schema than the binary's is ready: migrations stay compatible
// with the previous release during a rolling upgrade.
func ClassifySchema(applied, want int64, readErr error) SchemaState {
	if readErr != nil {
		var pe *pgconn.PgError
		if errors.As(readErr, &pe) && (pe.Code == "42P01" || pe.Code == "42501") {
			return SchemaOld // undefined_table, insufficient_privilege
		}
		return SchemaUnknown
	}
	if applied >= want {
		return SchemaReady
	}
	return SchemaOld
}

// SchemaWait says how WaitSchema waits.
type SchemaWait struct {
	Want     int64         // the version needed (EmbeddedVersion)
	Limit    time.Duration // the longest wait; 0: check once
	Interval time.Duration // between checks; 0: one second
	// ProceedUnknown returns at once, with SchemaUnknown and no error, when
	// Postgres does not answer: for a role that serves without it (the
	// gateway, from its caches).
	ProceedUnknown bool
}

// WaitSchema waits until the database's schema version is at least w.Want,
// logging what it waits for, and returns the last state seen. It fails when
// w.Limit passes first or ctx ends.
func WaitSchema(ctx context.Context, pool *pgxpool.Pool, w SchemaWait, log *slog.Logger) (SchemaState, error) {
	interval := w.Interval
	if interval <= 0 {
		interval = time.Second
	}
	start := time.Now()
	deadline := start.Add(w.Limit)
	var lastLog time.Time
	for {
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		have, err := AppliedVersion(qctx, pool)
		cancel()
		st := ClassifySchema(have, w.Want, err)
		switch {
		case st == SchemaReady:
			if !lastLog.IsZero() {
				log.Info("schema ready", "version", have, "want", w.Want, "waited", time.Since(start).Round(time.Millisecond))
			}
			return st, nil
		case st == SchemaUnknown && w.ProceedUnknown:
			log.Warn("schema version unknown (postgres does not answer); starting anyway", "want", w.Want, "err", err)
			return st, nil
		}
		now := time.Now()
		if !now.Before(deadline) {
			return st, fmt.Errorf("schema version %d (%s) after %s, want %d (this binary's): has nlpswarm migrate up run? last error: %v",
				have, st, w.Limit, w.Want, err)
		}
		if now.Sub(lastLog) >= 10*time.Second {
			log.Info("waiting for the schema (nlpswarm migrate up)", "version", have, "state", st.String(), "want", w.Want, "err", err)
			lastLog = now
		}
		select {
		case <-ctx.Done():
			return st, fmt.Errorf("waiting for schema version %d: %w", w.Want, ctx.Err())
		case <-time.After(min(interval, time.Until(deadline))):
		}
	}
}
