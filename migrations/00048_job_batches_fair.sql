-- +goose Up
-- Issue 20: the job workers take batches round-robin across jobs (batch
-- index first, internal/jobqueue's Claim), so a small job accepted behind
-- a 100,000-text one is done after a few rounds, not after the whole big
-- job. This index serves that order over the claimable batches.
CREATE INDEX job_batches_fair ON job_batches (batch, not_before, job_id) WHERE state = 'pending';

-- +goose Down
DROP INDEX job_batches_fair;
