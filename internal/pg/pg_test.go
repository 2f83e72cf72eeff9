package pg_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/pg"
	"github.com/nlpswarm/nlpswarm/internal/pg/pgtest"
)

func tables(t *testing.T, db *pgtest.DB) map[string]bool {
	t.Helper()
	rows, err := db.Pool.Query(context.Background(), `SELECT tablename FROM pg_tables WHERE schemaname='public'`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got := map[string]bool{}
	for rows.Next() {
		var n string
		rows.Scan(&n)
		got[n] = true
	}
	return got
}

func TestMigrateUpDownUp(t *testing.T) {
	db := pgtest.New(t, false)
	ctx := context.Background()
	want := []string{"plans", "accounts", "api_keys", "models", "model_versions", "deployments", "nodes", "gpus", "gpu_assignments", "usage", "replica_starts"}

	for _, step := range []string{"up", "down", "up"} {
		out, err := pg.Migrate(ctx, db.Pool, step, nil)
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		// "down" rolls back one migration: repeat it until none is left, so
		// that every migration's Down runs
		for step == "down" && len(out) > 0 && out[0] != "nothing to roll back" {
			if out, err = pg.Migrate(ctx, db.Pool, step, nil); err != nil {
				t.Fatalf("%s: %v", step, err)
			}
		}
		got := tables(t, db)
		for _, tb := range want {
			if step == "down" && got[tb] {
				t.Errorf("after down, table %s still exists", tb)
			}
			if step == "up" && !got[tb] {
				t.Errorf("after up, table %s missing (%v)", tb, out)
			}
		}
	}
	out, err := pg.Migrate(ctx, db.Pool, "status", nil)
	if err != nil || len(out) == 0 || !strings.Contains(out[0], "applied") {
		t.Fatalf("status: %v %v", out, err)
	}
	if _, err := pg.Migrate(ctx, db.Pool, "sideways", nil); err == nil {
		t.Fatal("unknown command accepted")
	}
}

// Two replicas starting at once both migrate; the advisory lock serialises them.
func TestMigrateConcurrent(t *testing.T) {
	db := pgtest.New(t, false)
	migrateAtOnce(t, db, db, db, db)
}

// Databases of one cluster migrating at once (as the tests' do) all ALTER
// the same cluster-wide roles, which the per-database advisory lock does
// not serialise; Postgres answers the losers "tuple concurrently updated"
// and Migrate runs their migration again.
func TestMigrateConcurrentDatabases(t *testing.T) {
	dbs := make([]*pgtest.DB, 6)
	for i := range dbs {
		dbs[i] = pgtest.New(t, false)
	}
	migrateAtOnce(t, dbs...)
}

// migrateAtOnce runs "up" on each of dbs at the same time; every one must
// succeed.
func migrateAtOnce(t *testing.T, dbs ...*pgtest.DB) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(dbs))
	for _, db := range dbs {
		wg.Go(func() {
			_, err := pg.Migrate(context.Background(), db.Pool, "up", nil)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestConnectUnreachable(t *testing.T) {
	start := time.Now()
	_, err := pg.Connect(context.Background(), pg.Config{URL: "postgres://u:hunter2@127.0.0.1:1/x?sslmode=disable", ConnTimeout: 500 * time.Millisecond})
	if err == nil {
		t.Fatal("connected to port 1")
	}
	if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("error leaks the password or spans lines: %q", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("took %s", time.Since(start))
	}
}
