package gateway

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nlpswarm/nlpswarm/internal/apikey"
)

// Key is what the gateway knows of a valid API key. It never holds the key.
type Key struct {
	ID        int64
	AccountID int64
	Prefix    string
	Kind      string  // inference or admin
	RPS       float64 // 0: no rate limit (account without plan)
	Burst     int
	Quota     int64 // monthly requests; 0 = unlimited
}

var errNoKey = errors.New("no such key")

// KeyStore resolves keys by hash in Postgres, with a short local cache so that
// a revoked key stops working within the cache TTL (plus the query time).
type KeyStore struct {
	db  *pgxpool.Pool
	ttl time.Duration

	mu    sync.Mutex
	cache map[string]keyEntry // by string(hash)
}

type keyEntry struct {
	key     *Key // nil: unknown or revoked
	expires time.Time
}

// staleIfError is how long a key once found valid keeps working while
// Postgres cannot be asked. Nobody can revoke a key meanwhile either: the
// revocation is a write to that same Postgres.
const staleIfError = 5 * time.Minute

func newKeyStore(db *pgxpool.Pool, ttl time.Duration) *KeyStore {
	return &KeyStore{db: db, ttl: ttl, cache: map[string]keyEntry{}}
}

// tokenFrom extracts the key from "Authorization: Token <key>" or "Bearer <key>".
func tokenFrom(r *http.Request) string {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !(strings.EqualFold(scheme, "Token") || strings.EqualFold(scheme, "Bearer")) {
		return ""
	}
	return strings.TrimSpace(tok)
}

// Lookup returns the live key for raw, or errNoKey.
func (s *KeyStore) Lookup(ctx context.Context, raw string) (*Key, error) {
	if _, ok := apikey.Prefix(raw); !ok {
		return nil, errNoKey
	}
	h := string(apikey.Hash(raw))
	now := time.Now()
	s.mu.Lock()
	e, ok := s.cache[h]
	s.mu.Unlock()
	if ok && now.Before(e.expires) {
		if e.key == nil {
			return nil, errNoKey
		}
		return e.key, nil
	}
	k := &Key{}
	var rps *float64
	var burst *int32
	var quota *int64
	err := s.db.QueryRow(ctx, `
		SELECT k.id, k.account_id, k.prefix, k.kind, p.requests_per_second, p.burst, p.monthly_quota
		FROM api_keys k JOIN accounts a ON a.id = k.account_id LEFT JOIN plans p ON p.id = a.plan_id
		WHERE k.hash = $1 AND k.revoked_at IS NULL`, []byte(h)).
		Scan(&k.ID, &k.AccountID, &k.Prefix, &k.Kind, &rps, &burst, &quota)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		k = nil
	case err != nil:
		if ok && e.key != nil && now.Before(e.expires.Add(staleIfError)) {
			return e.key, nil
		}
		return nil, err
	default:
		if rps != nil {
			k.RPS, k.Burst, k.Quota = *rps, int(*burst), *quota
		}
	}
	s.mu.Lock()
	if len(s.cache) > 100_000 {
		clear(s.cache)
	}
	s.cache[h] = keyEntry{key: k, expires: now.Add(s.ttl)}
	s.mu.Unlock()
	if k == nil {
		return nil, errNoKey
	}
	return k, nil
}
