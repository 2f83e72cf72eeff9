package jobqueue

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Job states.
const (
	StateQueued    = "queued"
	StateRunning   = "running"
	StateSucceeded = "succeeded"
	StateCancelled = "cancelled"
)

// Webhook delivery states.
const (
	WebhookNone      = "none"
	WebhookPending   = "pending"
	WebhookDelivered = "delivered"
	WebhookFailed    = "failed"
)

// Limits of the contract.
const (
	MaxTexts      = 100_000 // texts in one job
	MaxWebhookURL = 2048    // bytes of a webhook URL
	MaxTextBytes  = 1 << 20 // bytes of one text
)

// ErrNotFound: no such job for this account.
var ErrNotFound = errors.New("no such job")

// NewID is a fresh job id: "job_" and 32 hex digits.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "job_" + hex.EncodeToString(b[:])
}

// ValidID says whether s has the shape of a job id (checked before any
// query: the id comes from the URL).
func ValidID(s string) bool {
	if len(s) != 36 || s[:4] != "job_" {
		return false
	}
	for _, c := range s[4:] {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// Job is one job's row.
type Job struct {
	ID              string
	AccountID       int64
	KeyID           int64
	ModelID         int64
	Model           string
	Task            string
	Parameters      json.RawMessage // nil: none
	State           string
	Total           int
	Done            int // items answered
	Failed          int // items dead-lettered
	WebhookURL      string
	WebhookState    string
	WebhookAttempts int
	WebhookError    string
	CreatedAt       time.Time
	StartedAt       *time.Time
	FinishedAt      *time.Time
}

// Finished says whether the job will do no more work.
func (j *Job) Finished() bool { return j.State == StateSucceeded || j.State == StateCancelled }

// Store is the queue on a Postgres pool.
type Store struct{ DB *pgxpool.Pool }

const jobColumns = `id, account_id, api_key_id, model_id, model_name, task, parameters, state, total, done, failed,
	coalesce(webhook_url, ''), webhook_state, webhook_attempts, coalesce(webhook_error, ''), created_at, started_at, finished_at`

func scanJob(row pgx.Row) (*Job, error) {
	var j Job
	var params []byte
	err := row.Scan(&j.ID, &j.AccountID, &j.KeyID, &j.ModelID, &j.Model, &j.Task, &params, &j.State, &j.Total, &j.Done, &j.Failed,
		&j.WebhookURL, &j.WebhookState, &j.WebhookAttempts, &j.WebhookError, &j.CreatedAt, &j.StartedAt, &j.FinishedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	if len(params) > 0 {
		j.Parameters = params
	}
	return &j, nil
}

// Get reads job id of account (another account's job is ErrNotFound).
func (s *Store) Get(ctx context.Context, account int64, id string) (*Job, error) {
	j, err := scanJob(s.DB.QueryRow(ctx, `SELECT `+jobColumns+` FROM jobs WHERE id = $1 AND account_id = $2`, id, account))
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("read job %s: %w", id, err)
	}
	return j, err
}

// Cancel cancels job id of account unless it has finished; it returns the
// job as it is then. Pending batches are cancelled with it; a batch in
// flight completes nothing (Complete). A job with a webhook gets its
// delivery (state cancelled).
func (s *Store) Cancel(ctx context.Context, account int64, id string) (*Job, error) {
	var j *Job
	err := pgx.BeginFunc(ctx, s.DB, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE jobs SET state = 'cancelled', finished_at = now(),
			webhook_state = CASE WHEN webhook_url IS NULL THEN 'none' ELSE 'pending' END,
			webhook_next_at = CASE WHEN webhook_url IS NULL THEN NULL ELSE now() END
			WHERE id = $1 AND account_id = $2 AND state IN ('queued', 'running')`, id, account)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 1 {
			if _, err := tx.Exec(ctx, `UPDATE job_batches SET state = 'cancelled', claim = NULL WHERE job_id = $1 AND state = 'pending'`, id); err != nil {
				return err
			}
		}
		j, err = scanJob(tx.QueryRow(ctx, `SELECT `+jobColumns+` FROM jobs WHERE id = $1 AND account_id = $2`, id, account))
		return err
	})
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("cancel job %s: %w", id, err)
	}
	return j, err
}
