package desired_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nlpswarm/nlpswarm/internal/desired"
	"github.com/nlpswarm/nlpswarm/internal/pg"
	"github.com/nlpswarm/nlpswarm/internal/pg/pgtest"
	"github.com/nlpswarm/nlpswarm/modelmgr"
)

type row struct {
	replicas, lo, hi int
	gen              int64
	reason           string
}

func read(t *testing.T, db *pgtest.DB, model string) row {
	t.Helper()
	var r row
	if err := db.Pool.QueryRow(context.Background(), `SELECT d.replicas, d.autoscale_min, d.autoscale_max, d.generation, d.scale_reason
		FROM deployments d JOIN models m ON m.id = d.model_id WHERE m.name = $1`, model).Scan(&r.replicas, &r.lo, &r.hi, &r.gen, &r.reason); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestScaleAndManualScale(t *testing.T) {
	db := pgtest.New(t, true)
	ctx := context.Background()
	for _, q := range []string{
		`INSERT INTO models (name, task) VALUES ('plain', 'text-classification'), ('auto', 'text-classification')`,
		`INSERT INTO deployments (model_id, version, replicas) SELECT id, 1, 1 FROM models WHERE name = 'plain'`,
		`INSERT INTO deployments (model_id, version, replicas, autoscale_min, autoscale_max, autoscale_target_inflight)
			SELECT id, 1, 2, 0, 4, 4 FROM models WHERE name = 'auto'`,
	} {
		if _, err := db.Pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	listen, err := db.Pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer listen.Release()
	if _, err := listen.Exec(ctx, "LISTEN "+pg.NotifyDeployments); err != nil {
		t.Fatal(err)
	}
	notified := func(want string) {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		n, err := listen.Conn().WaitForNotification(wctx)
		if err != nil || n.Payload != want {
			t.Fatalf("notification: %v %v, want %s", n, err, want)
		}
	}
	tx := func(f func(pgx.Tx) error) {
		t.Helper()
		if err := pgx.BeginFunc(ctx, db.Pool, f); err != nil {
			t.Fatal(err)
		}
	}

	// the autoscaler's guarded write: applies once, then the guard refuses
	one, two := 1, 2
	for i, want := range []bool{true, false} {
		tx(func(tx pgx.Tx) error {
			ok, err := desired.Scale(ctx, tx, "auto", desired.Change{Replicas: 3, Reason: "scale up: test", IfReplicas: &two})
			if ok != want {
				t.Fatalf("attempt %d: changed %v, want %v", i, ok, want)
			}
			return err
		})
	}
	notified("auto")
	if r := read(t, db, "auto"); r.replicas != 3 || r.gen != 2 || r.reason != "scale up: test" {
		t.Fatalf("after guarded scale: %+v", r)
	}
	tx(func(tx pgx.Tx) error {
		ok, err := desired.Scale(ctx, tx, "nope", desired.Change{Replicas: 1, IfReplicas: &one})
		if ok || err != nil {
			t.Fatalf("guarded scale of a missing deployment: %v %v", ok, err)
		}
		return nil
	})
	if err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		_, err := desired.Scale(ctx, tx, "nope", desired.Change{Replicas: 1})
		return err
	}); !errors.Is(err, modelmgr.ErrNotFound) {
		t.Fatalf("scale of a missing deployment: %v", err)
	}

	// manual scale of a plain deployment sets the count
	tx(func(tx pgx.Tx) error {
		n, err := desired.ManualScale(ctx, tx, "plain", 5)
		if n != 5 {
			t.Fatalf("manual scale wrote %d", n)
		}
		return err
	})
	notified("plain")
	if r := read(t, db, "plain"); r.replicas != 5 || r.hi != 0 || r.reason != "manual scale" {
		t.Fatalf("plain after manual scale: %+v", r)
	}
	// manual scale of an autoscaled deployment sets the floor
	tx(func(tx pgx.Tx) error { _, err := desired.ManualScale(ctx, tx, "auto", 1); return err })
	if r := read(t, db, "auto"); r.replicas != 3 || r.lo != 1 || r.hi != 4 {
		t.Fatalf("auto after scale 1: %+v (want floor 1, count kept at 3)", r)
	}
	tx(func(tx pgx.Tx) error { _, err := desired.ManualScale(ctx, tx, "auto", 6); return err })
	if r := read(t, db, "auto"); r.replicas != 6 || r.lo != 6 || r.hi != 6 {
		t.Fatalf("auto after scale 6: %+v (want floor and max 6, count 6)", r)
	}
}
