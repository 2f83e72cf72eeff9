-- +goose Up
-- Issue 20: a canary is routed once the scheduler has seen its service run
-- the canary's generation (routed_at, set by the status it writes; reset
-- when a new canary replaces the row): before, its service may still hold
-- the tasks of the canary it replaces (a drain taken over by a rolling
-- update). Once set it stays, through scaling and lost replicas, as
-- routing did before. Canaries routed when this lands stay routed.
ALTER TABLE deployments ADD COLUMN routed_at timestamptz;
UPDATE deployments SET routed_at = now() WHERE track = 'canary' AND rollout_state IN ('active', 'promoting');

-- +goose Down
ALTER TABLE deployments DROP COLUMN routed_at;
