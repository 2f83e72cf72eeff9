-- +goose Up
-- Issue 20: asynchronous jobs (internal/jobqueue owns these tables). A job
-- is up to 100,000 texts for one model and task; its texts are items keyed
-- (job, index), cut into batches that the gateways' job workers claim with
-- a lease (FOR UPDATE SKIP LOCKED: Postgres as the queue's consumer group).
-- A batch is completed at most once (its claim token must still be the
-- batch's), and an item's result is written only while it has none, so a
-- batch re-delivered after its worker died never duplicates a result.
CREATE TABLE jobs (
    id              text PRIMARY KEY CHECK (id ~ '^job_[0-9a-f]{32}$'),
    account_id      bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    api_key_id      bigint NOT NULL,
    model_id        bigint NOT NULL,
    model_name      text NOT NULL,
    task            text NOT NULL,
    parameters      jsonb,
    state           text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'running', 'succeeded', 'cancelled')),
    total           integer NOT NULL CHECK (total > 0),
    done            integer NOT NULL DEFAULT 0 CHECK (done >= 0),
    failed          integer NOT NULL DEFAULT 0 CHECK (failed >= 0),
    webhook_url     text CHECK (length(webhook_url) <= 2048),
    webhook_state   text NOT NULL DEFAULT 'none' CHECK (webhook_state IN ('none', 'pending', 'delivered', 'failed')),
    webhook_attempts integer NOT NULL DEFAULT 0,
    webhook_next_at timestamptz,
    webhook_error   text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    CHECK (done + failed <= total)
);
CREATE INDEX jobs_account ON jobs (account_id, created_at DESC);
CREATE INDEX jobs_webhook_due ON jobs (webhook_next_at) WHERE webhook_state = 'pending';

-- the texts and their outcome: result (the task's answer for the text) or
-- error_code/error_message (the dead-letter list), never both. The FK is
-- checked at commit: the items are copied in as the upload streams, before
-- the job's row (whose model and task may come after the texts) exists.
CREATE TABLE job_items (
    job_id        text NOT NULL REFERENCES jobs(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    idx           integer NOT NULL CHECK (idx >= 0),
    text          text NOT NULL,
    result        jsonb,
    error_code    text,
    error_message text,
    PRIMARY KEY (job_id, idx),
    CHECK (result IS NULL OR error_code IS NULL)
);

-- the unit of work: items [first_idx, first_idx+n). A pending batch is
-- claimable once not_before has passed; a claim moves not_before to the
-- lease's end, so a batch whose worker died is claimed again then.
CREATE TABLE job_batches (
    job_id     text NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    batch      integer NOT NULL,
    first_idx  integer NOT NULL,
    n          integer NOT NULL CHECK (n > 0),
    state      text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'cancelled')),
    attempts   integer NOT NULL DEFAULT 0,
    claim      text,
    claimed_by text,
    not_before timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, batch)
);
CREATE INDEX job_batches_ready ON job_batches (not_before) WHERE state = 'pending';

-- the per-account secret that signs webhook deliveries (HMAC-SHA256); the
-- gateway makes it on first use and rotates it on the customer's request
CREATE TABLE job_webhook_secrets (
    account_id bigint PRIMARY KEY REFERENCES accounts(id) ON DELETE CASCADE,
    secret     text NOT NULL CHECK (length(secret) >= 32),
    created_at timestamptz NOT NULL DEFAULT now()
);

GRANT SELECT, INSERT, UPDATE ON jobs, job_items, job_batches, job_webhook_secrets TO nlpswarm_gateway;

-- +goose Down
DROP TABLE job_webhook_secrets;
DROP TABLE job_batches;
DROP TABLE job_items;
DROP TABLE jobs;
