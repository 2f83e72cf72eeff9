-- +goose Up
-- Outages without loss (issue 18).
--
-- Billing rows outlive what they count (issue 18 item 2): deleting a model
-- (or an API key, or an account) no longer erases its usage. The foreign
-- keys that cascaded are dropped, and the names a report needs are kept in
-- the row itself (denormalised): the key's account and the model's name, as
-- the gateway saw them when it served the requests. Ids are never reused
-- (bigserial), so a row of a deleted model stays distinct from a new model
-- of the same name.
ALTER TABLE usage DROP CONSTRAINT IF EXISTS usage_api_key_id_fkey;
ALTER TABLE usage DROP CONSTRAINT IF EXISTS usage_model_id_fkey;
ALTER TABLE usage
    ADD COLUMN account_id bigint,
    ADD COLUMN model_name text NOT NULL DEFAULT '';
UPDATE usage u SET account_id = k.account_id FROM api_keys k WHERE k.id = u.api_key_id;
UPDATE usage u SET model_name = m.name FROM models m WHERE m.id = u.model_id;

-- One row per usage batch a gateway has written: the batch and its id
-- commit in one transaction, so that a batch replayed from a gateway's spool
-- (after a crash, or a flush whose answer was lost) counts once.
CREATE TABLE usage_batches (
    id         text PRIMARY KEY CHECK (length(id) BETWEEN 16 AND 64),
    rows       integer NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_batches_applied_at ON usage_batches (applied_at);

-- the gateway also prunes batch ids older than its retention
GRANT SELECT, INSERT, DELETE ON usage_batches TO nlpswarm_gateway;
GRANT SELECT ON usage_batches TO nlpswarm_apiserver;

-- The scheduler's leadership is a lease with an expiry on Postgres's clock
-- (issue 18 item 3), no longer a session advisory lock: after a power cut of
-- the leader's node the lock lived until Postgres's TCP noticed (about 2 h),
-- while a lease nobody renews runs out within its TTL.
-- backend_pid names the holder's renewal connection: when that backend is
-- gone (the leader's process died, its connection closed) a standby takes
-- the lease at once instead of at its expiry.
CREATE TABLE scheduler_lease (
    name        text PRIMARY KEY,
    holder      text NOT NULL,
    backend_pid integer NOT NULL,
    expires_at  timestamptz NOT NULL
);
GRANT SELECT, INSERT, UPDATE, DELETE ON scheduler_lease TO nlpswarm_scheduler;
GRANT SELECT ON scheduler_lease TO nlpswarm_apiserver;

-- +goose Down
DROP TABLE scheduler_lease;
DROP TABLE usage_batches;
DELETE FROM usage u WHERE NOT EXISTS (SELECT 1 FROM api_keys k WHERE k.id = u.api_key_id)
    OR NOT EXISTS (SELECT 1 FROM models m WHERE m.id = u.model_id);
ALTER TABLE usage DROP COLUMN account_id, DROP COLUMN model_name;
ALTER TABLE usage
    ADD CONSTRAINT usage_api_key_id_fkey FOREIGN KEY (api_key_id) REFERENCES api_keys(id) ON DELETE CASCADE,
    ADD CONSTRAINT usage_model_id_fkey FOREIGN KEY (model_id) REFERENCES models(id) ON DELETE CASCADE;
