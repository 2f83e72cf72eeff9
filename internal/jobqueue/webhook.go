package jobqueue

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// SecretPrefix starts every webhook signing secret.
const SecretPrefix = "whsec_"

func newSecret() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return SecretPrefix + hex.EncodeToString(b[:])
}

// Secret is account's webhook signing secret, made on first use.
func (s *Store) Secret(ctx context.Context, account int64) (string, error) {
	var sec string
	err := s.DB.QueryRow(ctx, `WITH ins AS (
			INSERT INTO job_webhook_secrets (account_id, secret) VALUES ($1, $2)
			ON CONFLICT (account_id) DO NOTHING RETURNING secret)
		SELECT secret FROM ins UNION ALL SELECT secret FROM job_webhook_secrets WHERE account_id = $1 LIMIT 1`,
		account, newSecret()).Scan(&sec)
	if err != nil {
		return "", fmt.Errorf("webhook secret of account %d: %w", account, err)
	}
	return sec, nil
}

// RotateSecret replaces account's webhook signing secret; deliveries from
// then on are signed with the new one.
func (s *Store) RotateSecret(ctx context.Context, account int64) (string, error) {
	sec := newSecret()
	_, err := s.DB.Exec(ctx, `INSERT INTO job_webhook_secrets (account_id, secret) VALUES ($1, $2)
		ON CONFLICT (account_id) DO UPDATE SET secret = excluded.secret, created_at = now()`, account, sec)
	if err != nil {
		return "", fmt.Errorf("rotate webhook secret of account %d: %w", account, err)
	}
	return sec, nil
}

// Delivery is a due webhook, claimed for a lease.
type Delivery struct {
	Job     *Job
	Secret  string
	Attempt int // this one, from 1
}

// ClaimWebhook takes the oldest due webhook delivery for lease (a sender
// that dies leaves it due again then); nil when none is due.
func (s *Store) ClaimWebhook(ctx context.Context, lease time.Duration) (*Delivery, error) {
	var id string
	var account int64
	err := s.DB.QueryRow(ctx, `WITH c AS (
			SELECT id FROM jobs WHERE webhook_state = 'pending' AND webhook_next_at <= now()
			ORDER BY webhook_next_at LIMIT 1 FOR UPDATE SKIP LOCKED)
		UPDATE jobs j SET webhook_attempts = webhook_attempts + 1, webhook_next_at = now() + make_interval(secs => $1)
		FROM c WHERE j.id = c.id RETURNING j.id, j.account_id`, lease.Seconds()).Scan(&id, &account)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("claim a webhook: %w", err)
	}
	d := &Delivery{}
	if d.Job, err = scanJob(s.DB.QueryRow(ctx, `SELECT `+jobColumns+` FROM jobs WHERE id = $1`, id)); err != nil {
		return nil, fmt.Errorf("read job %s: %w", id, err)
	}
	d.Attempt = d.Job.WebhookAttempts
	if d.Secret, err = s.Secret(ctx, account); err != nil {
		return nil, err
	}
	return d, nil
}

// WebhookResult records a delivery's end: delivered; or failed with errMsg
// and due again after retry (retry 0: given up, state failed).
func (s *Store) WebhookResult(ctx context.Context, job string, delivered bool, errMsg string, retry time.Duration) error {
	var err error
	switch {
	case delivered:
		_, err = s.DB.Exec(ctx, `UPDATE jobs SET webhook_state = 'delivered', webhook_next_at = NULL, webhook_error = NULL WHERE id = $1`, job)
	case retry > 0:
		_, err = s.DB.Exec(ctx, `UPDATE jobs SET webhook_next_at = now() + make_interval(secs => $2), webhook_error = $3 WHERE id = $1`, job, retry.Seconds(), errMsg)
	default:
		_, err = s.DB.Exec(ctx, `UPDATE jobs SET webhook_state = 'failed', webhook_next_at = NULL, webhook_error = $2 WHERE id = $1`, job, errMsg)
	}
	if err != nil {
		return fmt.Errorf("record webhook of job %s: %w", job, err)
	}
	return nil
}
