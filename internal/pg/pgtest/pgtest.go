// Package pgtest gives tests a fresh, migrated Postgres database of their own
// on the real server named by NLPSWARM_TEST_DB_URL (default: the one .ci/run
// starts). Without a reachable server it skips, except under CI=true, where it
// fails: CI must never pass by skipping the database.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nlpswarm/nlpswarm/internal/pg"
)

// DefaultURL matches .ci/run.
const DefaultURL = "postgres://nlpswarm:nlpswarm@127.0.0.1:5432/nlpswarm_test?sslmode=disable"

// AdminURL is the server URL tests use to create their databases.
func AdminURL() string {
	if u := os.Getenv("NLPSWARM_TEST_DB_URL"); u != "" {
		return u
	}
	return DefaultURL
}

// Unavailable skips the test, or fails it under CI.
func Unavailable(t testing.TB, what string, err error) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s unavailable under CI: %v", what, err)
	}
	t.Skipf("%s unavailable (%v); run .ci/run or set the env", what, err)
}

// DB is a throwaway database.
type DB struct {
	URL  string
	Pool *pgxpool.Pool
}

// New creates an empty database, dropped when the test ends. migrate says
// whether to apply the schema.
func New(t testing.TB, migrate bool) *DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, AdminURL())
	if err != nil {
		Unavailable(t, "postgres", err)
	}
	defer admin.Close(context.Background())
	b := make([]byte, 6)
	rand.Read(b)
	name := "t_" + hex.EncodeToString(b)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database: %v", err)
	}
	u, _ := url.Parse(AdminURL())
	u.Path = "/" + name
	db := &DB{URL: u.String()}
	pool, err := pg.Connect(ctx, pg.Config{URL: db.URL, MaxConns: 8, ConnTimeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("connect %s: %v", name, err)
	}
	db.Pool = pool
	t.Cleanup(func() {
		pool.Close()
		c, err := pgx.Connect(context.Background(), AdminURL())
		if err != nil {
			return
		}
		defer c.Close(context.Background())
		_, _ = c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	if migrate {
		if _, err := pg.Migrate(ctx, pool, "up", nil); err != nil {
			t.Fatalf("migrate: %v", err)
		}
	}
	return db
}
