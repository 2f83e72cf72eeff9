package gateway

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Gateways share key lookups through Redis: a second gateway answers from
// the shared cache even with Postgres gone, and a revocation still bites
// within two cache TTLs.
func TestKeyCacheSharedInRedis(t *testing.T) {
	e := newEnv(t, true)
	acc := e.account("acme", "standard")
	key, keyID := e.key(acc, "inference")
	ctx := context.Background()
	ttl := 500 * time.Millisecond
	first := newKeyStore(e.db.Pool, ttl, e.rdb, e.prefix)
	k, err := first.Lookup(ctx, key)
	if err != nil || k.ID != keyID || k.RPS != 50 {
		t.Fatalf("lookup through Postgres: %+v %v", k, err)
	}
	// a gateway whose Postgres is unreachable still knows the key from Redis
	dead, err := pgxpool.New(ctx, "postgres://nobody@127.0.0.1:1/none?connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	dead.Close()
	second := newKeyStore(dead, ttl, e.rdb, e.prefix)
	if k, err := second.Lookup(ctx, key); err != nil || k.ID != keyID || k.RPS != 50 {
		t.Fatalf("lookup from the shared cache: %+v %v", k, err)
	}
	if n, _ := e.rdb.Keys(ctx, e.prefix+"apikey:*").Result(); len(n) != 1 {
		t.Fatalf("want one cached key in Redis, got %v", n)
	}
	// revoked: both gateways refuse it within 2 × TTL
	e.exec(`UPDATE api_keys SET revoked_at = now() WHERE id = $1`, keyID)
	start := time.Now()
	for {
		_, err := first.Lookup(ctx, key)
		if errors.Is(err, errNoKey) {
			break
		}
		if time.Since(start) > 2*ttl+time.Second {
			t.Fatalf("revoked key still accepted after %s", time.Since(start))
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("revocation seen after %s (TTL %s)", time.Since(start).Round(time.Millisecond), ttl)
}

// countQueries counts the queries a pool sends.
type countQueries struct{ n atomic.Int64 }

func (c *countQueries) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.n.Add(1)
	return ctx
}
func (c *countQueries) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// A burst of requests with a key not in the cache asks Postgres once.
func TestKeyLookupsCoalesce(t *testing.T) {
	e := newEnv(t, false)
	key, keyID := e.key(e.account("acme", "standard"), "inference")
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(e.db.URL)
	if err != nil {
		t.Fatal(err)
	}
	var tr countQueries
	cfg.ConnConfig.Tracer = &tr
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	ks := newKeyStore(pool, time.Minute, nil, "")
	var wg sync.WaitGroup
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if k, err := ks.Lookup(ctx, key); err != nil || k.ID != keyID {
				t.Error(k, err)
			}
		}()
	}
	wg.Wait()
	if n := tr.n.Load(); n > 3 {
		t.Fatalf("100 concurrent lookups of one key sent %d queries", n)
	}
}
