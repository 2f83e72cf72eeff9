package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// usageKey is one usage row: a key, a model and a UTC day. The key's account
// and the model's name ride along (denormalised, migration 00020), so that
// the row still says whose and what it was after the key or the model is
// deleted.
type usageKey struct {
	key, account, model int64
	modelName           string
	day                 string // YYYY-MM-DD, UTC
}

// usageCount is one row's counts: requests, texts, errors and, for
// generation, input (prompt) and output (completion) tokens.
type usageCount struct{ requests, texts, errors, inTokens, outTokens int64 }

func (c *usageCount) add(o usageCount) {
	c.requests += o.requests
	c.texts += o.texts
	c.errors += o.errors
	c.inTokens += o.inTokens
	c.outTokens += o.outTokens
}

// usageBatch is what one flush writes: the counts of one interval under an
// id that makes its write idempotent (usage_batches), so that a batch
// written twice (replayed from the spool after its commit's answer was lost)
// counts once.
type usageBatch struct {
	id   string
	rows map[usageKey]*usageCount
}

// Usage aggregates requests per key, model and UTC day in memory and upserts
// them into Postgres in batches. With a spool (usagespool.go) every request
// is also appended to a local journal before it is answered, and a batch not
// yet written stays on disk until Postgres has it: a gateway killed (SIGKILL,
// OOM) or shut down while Postgres is unreachable loses nothing, and the
// next gateway on the same spool replays it.
type Usage struct {
	db    *pgxpool.Pool
	log   *slog.Logger
	now   func() time.Time
	today atomic.Pointer[dayName] // day's

	flushMu sync.Mutex // one flush at a time
	mu      sync.Mutex
	agg     map[usageKey]*usageCount
	spool   *usageSpool   // nil: counts live in memory only
	pending []*usageBatch // oldest first; with a spool, each is also a file

	// rejected counts rows Postgres refused for their data (a statement
	// error of that row alone); they are skipped, logged and, with a spool,
	// kept in its rejected file. queued reports the pending batches.
	rejected func(n int)
	queued   func(n int)
}

func newUsage(db *pgxpool.Pool) *Usage {
	return &Usage{db: db, log: slog.New(slog.DiscardHandler), agg: map[usageKey]*usageCount{}, now: time.Now,
		rejected: func(int) {}, queued: func(int) {}}
}

// openSpool makes dir (a folder on a volume) the spool of u and queues what
// a previous gateway left there for the next flush. unspooled counts
// requests the spool could not take.
func (u *Usage) openSpool(dir string, max int64, unspooled func()) error {
	warn := func(msg string, err error) { u.log.Warn(msg, "err", err) }
	s, batches, err := openUsageSpool(dir, max, unspooled, warn)
	if err != nil {
		return err
	}
	u.mu.Lock()
	u.spool = s
	u.pending = append(batches, u.pending...)
	n := len(u.pending)
	u.mu.Unlock()
	u.queued(n)
	if len(batches) > 0 {
		u.log.Info("usage spool: batches left by a previous gateway will be replayed", "slot", s.dir, "batches", len(batches))
	}
	return nil
}

// closeSpool releases the spool's slot; what Postgres does not have yet
// stays in it for the next gateway.
func (u *Usage) closeSpool() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.spool != nil {
		u.spool.close()
		u.spool = nil
	}
}

// Record counts one request of texts texts; failed says it ended in error.
// With a spool the request is in the journal when Record returns: call it
// before the answer is written.
func (u *Usage) Record(k *Key, m *Model, texts int, failed bool) {
	uk := usageKey{key: k.ID, account: k.AccountID, model: m.ID, modelName: m.Name, day: u.day()}
	inc := usageCount{requests: 1, texts: int64(texts)}
	if failed {
		inc.errors = 1
	}
	u.count(uk, inc)
}

// day is today's date (UTC), as usage rows name it: formatted once a day,
// not on every request.
func (u *Usage) day() string {
	t := u.now().UTC()
	n := t.Unix() / 86400
	if d := u.today.Load(); d != nil && d.n == n {
		return d.s
	}
	s := t.Format(time.DateOnly)
	u.today.Store(&dayName{n, s})
	return s
}

// dayName is a day's number since the epoch and its date.
type dayName struct {
	n int64
	s string
}

// RecordTokens counts the input and output tokens of a generation request
// already counted by Record, once its answer's usage is known (a stream's
// comes at its end).
func (u *Usage) RecordTokens(k *Key, m *Model, in, out int64) {
	if in <= 0 && out <= 0 {
		return
	}
	uk := usageKey{key: k.ID, account: k.AccountID, model: m.ID, modelName: m.Name, day: u.day()}
	u.count(uk, usageCount{inTokens: max(in, 0), outTokens: max(out, 0)})
}

// count adds inc to row uk (and the journal).
func (u *Usage) count(uk usageKey, inc usageCount) {
	u.mu.Lock()
	c := u.agg[uk]
	if c == nil {
		c = &usageCount{}
		u.agg[uk] = c
	}
	c.add(inc)
	if u.spool != nil {
		u.spool.append(uk, inc)
	}
	u.mu.Unlock()
}

// newBatchID is 128 random bits in hex.
func newBatchID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// cut ends the current interval: its counts become a pending batch (on disk
// too with a spool).
func (u *Usage) cut() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.agg) == 0 {
		return nil
	}
	b := &usageBatch{id: newBatchID(), rows: u.agg}
	if u.spool != nil {
		if err := u.spool.cut(b); err != nil {
			// the journal still holds these requests; keep counting into
			// them and try again at the next flush
			return fmt.Errorf("usage spool: %w", err)
		}
	}
	u.agg = map[usageKey]*usageCount{}
	u.pending = append(u.pending, b)
	return nil
}

// Flush writes the counts gathered so far and any batch an earlier flush (or
// an earlier gateway, through the spool) could not write, oldest first. On a
// connection failure the batches are kept for the next flush, on disk with a
// spool; a row Postgres refuses for its own data is skipped and recorded,
// the rest of its batch is written (per-row outcome).
func (u *Usage) Flush(ctx context.Context) error {
	u.flushMu.Lock()
	defer u.flushMu.Unlock()
	cutErr := u.cut()
	u.mu.Lock()
	todo := append([]*usageBatch(nil), u.pending...)
	u.mu.Unlock()
	defer func() {
		u.mu.Lock()
		n := len(u.pending)
		u.mu.Unlock()
		u.queued(n)
	}()
	for _, b := range todo {
		rejected, err := writeUsageBatch(ctx, u.db, b)
		if err != nil {
			return errors.Join(fmt.Errorf("usage batch %s (%d rows): %w", b.id, len(b.rows), err), cutErr)
		}
		if len(rejected) > 0 {
			u.rejected(len(rejected))
			for _, r := range rejected {
				u.log.Error("usage row refused by postgres; skipped", "batch", b.id, "api_key_id", r.key.key, "model_id", r.key.model,
					"model", r.key.modelName, "day", r.key.day, "requests", r.count.requests, "texts", r.count.texts, "errors", r.count.errors,
					"input_tokens", r.count.inTokens, "output_tokens", r.count.outTokens, "err", r.err)
			}
		}
		u.mu.Lock()
		if u.spool != nil {
			if err := u.spool.done(b, rejected); err != nil {
				// written: a replay of the file would be skipped by its id
				u.log.Warn("usage spool: removing a written batch failed", "batch", b.id, "err", err)
			}
		}
		u.pending = u.pending[1:]
		u.mu.Unlock()
	}
	return cutErr
}

// rejectedRow is a usage row Postgres refused, and why.
type rejectedRow struct {
	key   usageKey
	count usageCount
	err   error
}

const upsertUsage = `INSERT INTO usage AS u (api_key_id, account_id, model_id, model_name, day, requests, texts, errors, input_tokens, output_tokens)
	SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::date[], $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[])
	ON CONFLICT (api_key_id, model_id, day) DO UPDATE SET
		requests = u.requests + EXCLUDED.requests,
		texts = u.texts + EXCLUDED.texts,
		errors = u.errors + EXCLUDED.errors,
		input_tokens = u.input_tokens + EXCLUDED.input_tokens,
		output_tokens = u.output_tokens + EXCLUDED.output_tokens,
		account_id = coalesce(u.account_id, EXCLUDED.account_id),
		model_name = CASE WHEN u.model_name = '' THEN EXCLUDED.model_name ELSE u.model_name END`

// writeUsageBatch writes b in one transaction with its id, once: a batch
// whose id is already in usage_batches was written before and is skipped.
// When the batch's one statement fails for its data, each row is tried
// alone under a savepoint and the rows that still fail come back as
// rejected; a connection failure (or any other error) returns err and
// writes nothing.
func writeUsageBatch(ctx context.Context, db *pgxpool.Pool, b *usageBatch) (rejected []rejectedRow, err error) {
	rows := byUsageRow(b.rows)
	keys := make([]usageKey, 0, len(rows))
	for k := range rows {
		keys = append(keys, k)
	}
	// one order for every writer, so that two gateways' batches lock the
	// same rows in the same order
	sort.Slice(keys, func(i, j int) bool {
		a, c := keys[i], keys[j]
		if a.key != c.key {
			return a.key < c.key
		}
		if a.model != c.model {
			return a.model < c.model
		}
		return a.day < c.day
	})
	err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO usage_batches (id, rows) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING`, b.id, len(keys))
		if err != nil {
			return fmt.Errorf("record batch id: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return nil // written before
		}
		sp, err := tx.Begin(ctx) // savepoint
		if err != nil {
			return err
		}
		if _, err := sp.Exec(ctx, upsertUsage, usageColumns(keys, rows)...); err == nil {
			return sp.Commit(ctx)
		} else if !isDataError(err) {
			return fmt.Errorf("upsert usage: %w", err)
		}
		if err := sp.Rollback(ctx); err != nil {
			return err
		}
		// per-row outcome: only the rows that fail alone are skipped
		rejected = rejected[:0]
		for _, k := range keys {
			sp, err := tx.Begin(ctx)
			if err != nil {
				return err
			}
			_, err = sp.Exec(ctx, upsertUsage, usageColumns([]usageKey{k}, rows)...)
			if err == nil {
				if err := sp.Commit(ctx); err != nil {
					return err
				}
				continue
			}
			if !isDataError(err) {
				return fmt.Errorf("upsert usage row: %w", err)
			}
			if err := sp.Rollback(ctx); err != nil {
				return err
			}
			rejected = append(rejected, rejectedRow{key: k, count: *rows[k], err: err})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return rejected, nil
}

// byUsageRow merges the counts that land on one usage row (key, model,
// day) whatever account or model name they carry, so that one statement
// never upserts a row twice (which Postgres refuses for the whole batch).
// The first non-empty account and name are kept.
func byUsageRow(in map[usageKey]*usageCount) map[usageKey]*usageCount {
	type row struct {
		key, model int64
		day        string
	}
	first := make(map[row]usageKey, len(in))
	out := make(map[usageKey]*usageCount, len(in))
	for k, c := range in {
		r := row{k.key, k.model, k.day}
		f, seen := first[r]
		if !seen {
			first[r] = k
			cc := *c
			out[k] = &cc
			continue
		}
		merged := f
		if merged.account == 0 {
			merged.account = k.account
		}
		if merged.modelName == "" {
			merged.modelName = k.modelName
		}
		sum := *out[f]
		sum.add(*c)
		delete(out, f)
		out[merged] = &sum
		first[r] = merged
	}
	return out
}

// usageColumns are upsertUsage's arguments for keys.
func usageColumns(keys []usageKey, rows map[usageKey]*usageCount) []any {
	n := len(keys)
	kid, acc, mid, req, txt, errs := make([]int64, n), make([]*int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
	tin, tout := make([]int64, n), make([]int64, n)
	names, days := make([]string, n), make([]string, n)
	for i, k := range keys {
		c := rows[k]
		kid[i], mid[i], names[i], days[i] = k.key, k.model, k.modelName, k.day
		if k.account != 0 {
			a := k.account
			acc[i] = &a
		}
		req[i], txt[i], errs[i], tin[i], tout[i] = c.requests, c.texts, c.errors, c.inTokens, c.outTokens
	}
	return []any{kid, acc, mid, names, days, req, txt, errs, tin, tout}
}

// isDataError says err is Postgres refusing a statement for the data it was
// given (SQLSTATE classes 22 data exception and 23 integrity constraint
// violation): the same row would fail again, so it is skipped rather than
// retried. Anything else (the connection, the server, permissions) keeps the
// batch for the next flush.
func isDataError(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || len(pe.Code) < 2 {
		return false
	}
	return pe.Code[:2] == "22" || pe.Code[:2] == "23"
}

// pruneUsageBatches forgets batch ids older than keep: a spooled batch is
// replayed within that long or counted as new.
func pruneUsageBatches(ctx context.Context, db *pgxpool.Pool, keep time.Duration) error {
	_, err := db.Exec(ctx, `DELETE FROM usage_batches WHERE applied_at < now() - make_interval(secs => $1)`, keep.Seconds())
	return err
}
