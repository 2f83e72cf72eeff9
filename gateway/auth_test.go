package gateway

import (
	"context"
	"errors"
	"testing"
	"time"

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
