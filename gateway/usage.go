package gateway

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

type usageKey struct {
	key, model int64
	day        string // YYYY-MM-DD, UTC
}

type usageCount struct{ requests, texts, errors int64 }

// Usage aggregates requests per key, model and UTC day in memory and upserts
// them into Postgres in batches.
type Usage struct {
	db  *pgxpool.Pool
	mu  sync.Mutex
	agg map[usageKey]*usageCount
	now func() time.Time
}

func newUsage(db *pgxpool.Pool) *Usage {
	return &Usage{db: db, agg: map[usageKey]*usageCount{}, now: time.Now}
}

// Record counts one request of texts texts; failed says it ended in error.
func (u *Usage) Record(keyID, modelID int64, texts int, failed bool) {
	k := usageKey{keyID, modelID, u.now().UTC().Format(time.DateOnly)}
	u.mu.Lock()
	c := u.agg[k]
	if c == nil {
		c = &usageCount{}
		u.agg[k] = c
	}
	c.requests++
	c.texts += int64(texts)
	if failed {
		c.errors++
	}
	u.mu.Unlock()
}

// Flush writes the counts gathered so far; on failure they are kept for the
// next flush.
func (u *Usage) Flush(ctx context.Context) error {
	u.mu.Lock()
	batch := u.agg
	u.agg = map[usageKey]*usageCount{}
	u.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	b := &pgx.Batch{}
	for k, c := range batch {
		b.Queue(`INSERT INTO usage (api_key_id, model_id, day, requests, texts, errors)
			VALUES ($1, $2, $3::date, $4, $5, $6)
			ON CONFLICT (api_key_id, model_id, day) DO UPDATE SET
				requests = usage.requests + EXCLUDED.requests,
				texts = usage.texts + EXCLUDED.texts,
				errors = usage.errors + EXCLUDED.errors`,
			k.key, k.model, k.day, c.requests, c.texts, c.errors)
	}
	err := u.db.SendBatch(ctx, b).Close()
	var pgErr *pgconn.PgError
	if err != nil && !errors.As(err, &pgErr) {
		// Postgres unreachable: keep the counts. A statement error (a key or
		// model deleted meanwhile) would fail forever, so that batch is dropped.
		u.mu.Lock()
		for k, c := range batch {
			if cur := u.agg[k]; cur != nil {
				cur.requests += c.requests
				cur.texts += c.texts
				cur.errors += c.errors
			} else {
				u.agg[k] = c
			}
		}
		u.mu.Unlock()
	}
	return err
}
