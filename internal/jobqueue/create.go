package jobqueue

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// NewJob is what a job is accepted with (its texts stream through an
// Upload).
type NewJob struct {
	ID         string
	AccountID  int64
	KeyID      int64
	ModelID    int64
	Model      string
	Task       string
	Parameters json.RawMessage // nil: none
	WebhookURL string          // "": none
}

// Upload is a job being accepted: one transaction into which its texts are
// copied as they arrive (memory bounded by one text, whatever the job's
// size); Commit adds the job's row and batches, Rollback drops it all.
type Upload struct {
	tx pgx.Tx
	id string
	n  int
}

// Begin starts accepting job id.
func (s *Store) Begin(ctx context.Context, id string) (*Upload, error) {
	tx, err := s.DB.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("begin job %s: %w", id, err)
	}
	return &Upload{tx: tx, id: id}, nil
}

// Texts copies the texts next gives (ok false: no more; an error ends the
// copy with it) as items n, n+1, ... of the job; it can be called more than
// once. It returns the job's count of texts so far.
func (u *Upload) Texts(ctx context.Context, next func() (text string, ok bool, err error)) (int, error) {
	var ferr error
	src := pgx.CopyFromFunc(func() ([]any, error) {
		t, ok, err := next()
		if err != nil {
			ferr = err
			return nil, err
		}
		if !ok {
			return nil, nil
		}
		row := []any{u.id, u.n, t}
		u.n++
		return row, nil
	})
	if _, err := u.tx.CopyFrom(ctx, pgx.Identifier{"job_items"}, []string{"job_id", "idx", "text"}, src); err != nil {
		if ferr != nil {
			return u.n, ferr // the caller's own error, as it gave it
		}
		return u.n, fmt.Errorf("copy texts of job %s: %w", u.id, err)
	}
	return u.n, nil
}

// Count is the number of texts copied so far.
func (u *Upload) Count() int { return u.n }

// Commit writes the job's row and its batches of at most batchSize items
// and commits the whole.
func (u *Upload) Commit(ctx context.Context, j NewJob, batchSize int) error {
	if u.n == 0 {
		return fmt.Errorf("job %s has no texts", u.id)
	}
	if batchSize <= 0 {
		batchSize = 1
	}
	var webhook *string
	if j.WebhookURL != "" {
		webhook = &j.WebhookURL
	}
	var params []byte
	if len(j.Parameters) > 0 {
		params = j.Parameters
	}
	if _, err := u.tx.Exec(ctx, `INSERT INTO jobs (id, account_id, api_key_id, model_id, model_name, task, parameters, total, webhook_url)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`, u.id, j.AccountID, j.KeyID, j.ModelID, j.Model, j.Task, params, u.n, webhook); err != nil {
		return fmt.Errorf("insert job %s: %w", u.id, err)
	}
	if _, err := u.tx.Exec(ctx, `INSERT INTO job_batches (job_id, batch, first_idx, n)
		SELECT $1, b, b * $2, least($2, $3 - b * $2) FROM generate_series(0, ($3 - 1) / $2) AS b`, u.id, batchSize, u.n); err != nil {
		return fmt.Errorf("insert batches of job %s: %w", u.id, err)
	}
	if err := u.tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit job %s: %w", u.id, err)
	}
	return nil
}

// Rollback drops what was copied (after Commit: nothing).
func (u *Upload) Rollback(ctx context.Context) { _ = u.tx.Rollback(ctx) }
