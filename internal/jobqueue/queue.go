package jobqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Item is one text of a claimed batch.
type Item struct {
	Index int
	Text  string
}

// Claim is a batch a worker holds until its lease ends: its job, its
// items not answered yet and the token that Complete and Release need.
type Claim struct {
	Job      *Job
	Batch    int
	Attempts int // claims of the batch so far, this one included
	Token    string
	Items    []Item
}

// Claim takes a batch that is due (pending, not_before passed: a new
// batch, one released for a retry, or one whose worker's lease ran out)
// for lease, on behalf of worker (a name for the logs); nil when none is
// due. The batch's job becomes running. Batches are taken round-robin
// across jobs: the lowest batch index first (then the oldest), so every
// job with work due gets one batch a round and a small job is not queued
// behind the whole of a large one accepted before it.
func (s *Store) Claim(ctx context.Context, worker string, lease time.Duration) (*Claim, error) {
	c := &Claim{Token: NewID()[4:]}
	var jobID string
	var first, n int
	err := s.DB.QueryRow(ctx, `WITH c AS (
			SELECT job_id, batch FROM job_batches
			WHERE state = 'pending' AND not_before <= now()
			ORDER BY batch, not_before, job_id LIMIT 1 FOR UPDATE SKIP LOCKED)
		UPDATE job_batches b SET claim = $1, claimed_by = $2, attempts = b.attempts + 1,
			not_before = now() + make_interval(secs => $3)
		FROM c WHERE b.job_id = c.job_id AND b.batch = c.batch
		RETURNING b.job_id, b.batch, b.first_idx, b.n, b.attempts`, c.Token, worker, lease.Seconds()).Scan(&jobID, &c.Batch, &first, &n, &c.Attempts)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("claim a batch: %w", err)
	}
	if _, err := s.DB.Exec(ctx, `UPDATE jobs SET state = 'running', started_at = now() WHERE id = $1 AND state = 'queued'`, jobID); err != nil {
		return nil, fmt.Errorf("start job %s: %w", jobID, err)
	}
	if c.Job, err = scanJob(s.DB.QueryRow(ctx, `SELECT `+jobColumns+` FROM jobs WHERE id = $1`, jobID)); err != nil {
		return nil, fmt.Errorf("read job %s: %w", jobID, err)
	}
	rows, err := s.DB.Query(ctx, `SELECT idx, text FROM job_items
		WHERE job_id = $1 AND idx >= $2 AND idx < $2 + $3 AND result IS NULL AND error_code IS NULL ORDER BY idx`, jobID, first, n)
	if err != nil {
		return nil, fmt.Errorf("read items of job %s: %w", jobID, err)
	}
	c.Items, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Item, error) {
		var it Item
		return it, r.Scan(&it.Index, &it.Text)
	})
	if err != nil {
		return nil, fmt.Errorf("read items of job %s: %w", jobID, err)
	}
	return c, nil
}

// Outcome is one item's end: its result, or its error (dead-lettered).
type Outcome struct {
	Index   int
	Result  json.RawMessage // the task's answer for the text
	ErrCode string          // set: the item failed for good
	ErrMsg  string
}

// Completed is what Complete did.
type Completed struct {
	Applied  bool // false: the claim was no longer the batch's (lease lost, job cancelled): nothing written
	Done     int  // items answered by this completion
	Failed   int  // items dead-lettered by this completion
	Finished bool // this completion ended the job
}

// Complete writes a claimed batch's outcomes and marks it done, once: only
// while the batch is pending under c's token and its job is running, and
// each item only while it has no outcome. The completion that answers the
// job's last item ends it (succeeded) and makes its webhook due.
func (s *Store) Complete(ctx context.Context, c *Claim, outs []Outcome) (Completed, error) {
	var res Completed
	idx := make([]int32, len(outs))
	results := make([]*string, len(outs))
	codes := make([]*string, len(outs))
	msgs := make([]*string, len(outs))
	for i, o := range outs {
		idx[i] = int32(o.Index)
		if o.ErrCode != "" {
			codes[i], msgs[i] = &outs[i].ErrCode, &outs[i].ErrMsg
		} else {
			r := string(o.Result)
			results[i] = &r
		}
	}
	err := pgx.BeginFunc(ctx, s.DB, func(tx pgx.Tx) error {
		var state string // the job's row first (Cancel's order: job, then batches)
		if err := tx.QueryRow(ctx, `SELECT state FROM jobs WHERE id = $1 FOR UPDATE`, c.Job.ID).Scan(&state); err != nil {
			return err
		}
		if state != StateRunning {
			return nil
		}
		tag, err := tx.Exec(ctx, `UPDATE job_batches SET state = 'done', claim = NULL
			WHERE job_id = $1 AND batch = $2 AND claim = $3 AND state = 'pending'`, c.Job.ID, c.Batch, c.Token)
		if err != nil || tag.RowsAffected() == 0 {
			return err
		}
		res.Applied = true
		if err := tx.QueryRow(ctx, `WITH up AS (
				UPDATE job_items i SET result = u.result::jsonb, error_code = u.code, error_message = u.msg
				FROM unnest($2::int[], $3::text[], $4::text[], $5::text[]) AS u(idx, result, code, msg)
				WHERE i.job_id = $1 AND i.idx = u.idx AND i.result IS NULL AND i.error_code IS NULL
				RETURNING u.code IS NULL AS ok)
			SELECT count(*) FILTER (WHERE ok), count(*) FILTER (WHERE NOT ok) FROM up`,
			c.Job.ID, idx, results, codes, msgs).Scan(&res.Done, &res.Failed); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `UPDATE jobs SET done = done + $2, failed = failed + $3,
				state = CASE WHEN done + $2 + failed + $3 >= total THEN 'succeeded' ELSE state END,
				finished_at = CASE WHEN done + $2 + failed + $3 >= total THEN now() END,
				webhook_state = CASE WHEN done + $2 + failed + $3 >= total AND webhook_url IS NOT NULL THEN 'pending' ELSE webhook_state END,
				webhook_next_at = CASE WHEN done + $2 + failed + $3 >= total AND webhook_url IS NOT NULL THEN now() ELSE webhook_next_at END
			WHERE id = $1 RETURNING state = 'succeeded'`, c.Job.ID, res.Done, res.Failed).Scan(&res.Finished)
	})
	if err != nil {
		return Completed{}, fmt.Errorf("complete batch %d of job %s: %w", c.Batch, c.Job.ID, err)
	}
	return res, nil
}

// Release gives a claimed batch back, due again after wait (a retry's
// backoff), if c's claim is still the batch's.
func (s *Store) Release(ctx context.Context, c *Claim, wait time.Duration) error {
	_, err := s.DB.Exec(ctx, `UPDATE job_batches SET claim = NULL, not_before = now() + make_interval(secs => $4)
		WHERE job_id = $1 AND batch = $2 AND claim = $3 AND state = 'pending'`, c.Job.ID, c.Batch, c.Token, wait.Seconds())
	if err != nil {
		return fmt.Errorf("release batch %d of job %s: %w", c.Batch, c.Job.ID, err)
	}
	return nil
}

// ItemRow is one answered or dead-lettered item, as the results pages list
// it.
type ItemRow struct {
	Index   int
	Result  json.RawMessage // nil for an error
	ErrCode string
	ErrMsg  string
}

// Items calls fn for each item of job with an outcome and an index above
// after, in index order, at most limit of them (errorsOnly: the
// dead-letter list). It streams: one row in memory at a time.
func (s *Store) Items(ctx context.Context, job string, after, limit int, errorsOnly bool, fn func(ItemRow) error) error {
	q := `SELECT idx, result, coalesce(error_code, ''), coalesce(error_message, '') FROM job_items
		WHERE job_id = $1 AND idx > $2 AND (result IS NOT NULL OR error_code IS NOT NULL) ORDER BY idx LIMIT $3`
	if errorsOnly {
		q = `SELECT idx, result, error_code, coalesce(error_message, '') FROM job_items
		WHERE job_id = $1 AND idx > $2 AND error_code IS NOT NULL ORDER BY idx LIMIT $3`
	}
	rows, err := s.DB.Query(ctx, q, job, after, limit)
	if err != nil {
		return fmt.Errorf("read items of job %s: %w", job, err)
	}
	defer rows.Close()
	var it ItemRow
	var result []byte
	for rows.Next() {
		if err := rows.Scan(&it.Index, &result, &it.ErrCode, &it.ErrMsg); err != nil {
			return fmt.Errorf("read items of job %s: %w", job, err)
		}
		it.Result = result
		if err := fn(it); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read items of job %s: %w", job, err)
	}
	return nil
}
