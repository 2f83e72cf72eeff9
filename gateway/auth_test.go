package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nlpswarm/nlpswarm/internal/apikey"
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
	first := newKeyStore(e.db.Pool, ttl, e.rdb, e.prefix, testKeySecret)
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
	second := newKeyStore(dead, ttl, e.rdb, e.prefix, testKeySecret)
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
	ks := newKeyStore(pool, time.Minute, nil, "", nil)
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

// testKeySecret seals the tests' key verdicts in Redis.
var testKeySecret = []byte("the gateways' test key-verdict secret, 32+ bytes")

// A verdict opens only with its secret, for its hash, unaltered and before
// its expiry.
func TestVerdictSeal(t *testing.T) {
	now := time.Now()
	h := string(apikey.Hash("nlp_aaaaaaaa_" + strings.Repeat("b", 32)))
	other := string(apikey.Hash("nlp_aaaaaaaa_" + strings.Repeat("c", 32)))
	k := &Key{ID: 7, AccountID: 3, Prefix: "aaaaaaaa", Kind: "inference", RPS: 5, Burst: 10, Quota: 1000}
	good := sealVerdict(testKeySecret, h, k, now.Add(time.Second))
	tampered := bytes.Replace(good, []byte(`"RPS":5`), []byte(`"RPS":0`), 1)
	if bytes.Equal(tampered, good) {
		t.Fatalf("no RPS in %s", good)
	}
	forgedJSON, _ := json.Marshal(map[string]any{"key": k, "exp": now.Add(time.Hour).UnixMilli()})
	tests := []struct {
		name   string
		secret []byte
		hash   string
		value  []byte
		want   *Key
		ok     bool
	}{
		{"sealed", testKeySecret, h, good, k, true},
		{"sealed no such key", testKeySecret, h, sealVerdict(testKeySecret, h, nil, now.Add(time.Second)), nil, true},
		{"other secret", []byte("another secret of at least 32 bytes!!"), h, good, nil, false},
		{"no secret", nil, h, good, nil, false},
		{"moved to another hash", testKeySecret, other, good, nil, false},
		{"plan tampered", testKeySecret, h, tampered, nil, false},
		{"expired (kept past its TTL)", testKeySecret, h, sealVerdict(testKeySecret, h, k, now), nil, false},
		{"unsealed JSON (the format before)", testKeySecret, h, forgedJSON, nil, false},
		{"sealed by a forger's secret", testKeySecret, h, sealVerdict([]byte("forger"), h, k, now.Add(time.Hour)), nil, false},
		{"bad hex", testKeySecret, h, append(bytes.Repeat([]byte("z"), 64), good[64:]...), nil, false},
		{"empty", testKeySecret, h, nil, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := openVerdict(tt.secret, tt.hash, tt.value, now)
			if ok != tt.ok || (got == nil) != (tt.want == nil) || (got != nil && *got != *tt.want) {
				t.Fatalf("openVerdict = %+v, %v; want %+v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

// Whoever can write Redis cannot mint a key, change a key's plan or block a
// key (issue 17 finding 4): a forged or tampered verdict is ignored, the key
// is asked of Postgres, and Postgres's answer replaces the entry. Before,
// the forged entry was served as a valid key.
func TestForgedVerdictInRedisIgnored(t *testing.T) {
	e := newEnv(t, true)
	ctx := context.Background()
	acc := e.account("victim", "standard")
	real, realID := e.key(acc, "inference")
	ks := func() *KeyStore { return newKeyStore(e.db.Pool, time.Minute, e.rdb, e.prefix, testKeySecret) }
	set := func(raw string, v []byte) {
		t.Helper()
		if err := e.rdb.Set(ctx, ks().redisKey(string(apikey.Hash(raw))), v, time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
	}

	// a key nobody issued, billed to the victim's account, no limits: in
	// the format the gateway wrote before, and sealed with a guessed secret
	minted := "nlp_forgedaa_" + strings.Repeat("a", 32)
	fake := &Key{ID: realID, AccountID: acc, Prefix: "forgedaa", Kind: "admin"}
	old, _ := json.Marshal(map[string]any{"key": fake})
	for name, v := range map[string][]byte{
		"unsealed":     old,
		"guessed seal": sealVerdict([]byte("guessed"), string(apikey.Hash(minted)), fake, time.Now().Add(time.Hour)),
	} {
		set(minted, v)
		if k, err := ks().Lookup(ctx, minted); !errors.Is(err, errNoKey) {
			t.Fatalf("%s forged verdict: the minted key is accepted (%+v, %v)", name, k, err)
		}
	}

	// the real key's verdict with its plan changed: Postgres's plan applies
	s := ks()
	sealed := sealVerdict(testKeySecret, string(apikey.Hash(real)), &Key{ID: realID, AccountID: acc, Prefix: "x", Kind: "inference"}, time.Now().Add(time.Hour))
	set(real, bytes.Replace(sealed, []byte(`"RPS":0`), []byte(`"RPS":1`), 1)) // any change breaks the seal
	if k, err := s.Lookup(ctx, real); err != nil || k.ID != realID || k.RPS != 50 {
		t.Fatalf("tampered verdict: %+v %v, want the plan from Postgres (RPS 50)", k, err)
	}
	b, _ := e.rdb.Get(ctx, s.redisKey(string(apikey.Hash(real)))).Bytes()
	if k, ok := openVerdict(testKeySecret, string(apikey.Hash(real)), b, time.Now()); !ok || k == nil || k.RPS != 50 {
		t.Fatalf("the tampered entry was not replaced by Postgres's answer: %q", b)
	}

	// a forged "no such key" does not block the real key
	set(real, []byte(`{"key":null}`))
	if k, err := ks().Lookup(ctx, real); err != nil || k.ID != realID {
		t.Fatalf("forged negative verdict blocked a real key: %+v %v", k, err)
	}

	// without a secret the gateway keeps verdicts out of Redis altogether
	e.rdb.Del(ctx, s.redisKey(string(apikey.Hash(real))))
	if _, err := newKeyStore(e.db.Pool, time.Minute, e.rdb, e.prefix, nil).Lookup(ctx, real); err != nil {
		t.Fatal(err)
	}
	if n, _ := e.rdb.Exists(ctx, s.redisKey(string(apikey.Hash(real)))).Result(); n != 0 {
		t.Fatal("a gateway without a secret wrote its verdict to Redis")
	}
}
