-- +goose Up
-- Issue 20, canary and shadow: a model has at most two deployments, track
-- 'stable' (every existing row) and track 'canary' (a second version beside
-- it, with its own service, resources and autoscaling bounds). The canary
-- row carries the split (mode, weight, sticky), its automatic rollback rule
-- and its rollout state and reason; internal/deployment owns them.
-- New columns of an existing table: the roles' table grants cover them.
ALTER TABLE deployments DROP CONSTRAINT deployments_model_id_key;
ALTER TABLE deployments
    ADD COLUMN track text NOT NULL DEFAULT 'stable' CHECK (track IN ('stable', 'canary')),
    ADD CONSTRAINT deployments_model_track_key UNIQUE (model_id, track),
    -- canary rows only: 'canary' (answers weight % of requests) or 'shadow'
    -- (gets a copy of every request, answers none)
    ADD COLUMN mode text NOT NULL DEFAULT '' CHECK (mode IN ('', 'canary', 'shadow')),
    ADD COLUMN weight double precision NOT NULL DEFAULT 0 CHECK (weight >= 0 AND weight <= 100),
    ADD COLUMN sticky boolean NOT NULL DEFAULT false,
    -- the automatic rollback rule; NULL bound: not checked; window 0: no rule
    ADD COLUMN rollback_max_error_rate double precision CHECK (rollback_max_error_rate >= 0 AND rollback_max_error_rate <= 1),
    ADD COLUMN rollback_max_p99_ms double precision CHECK (rollback_max_p99_ms > 0),
    ADD COLUMN rollback_window_s integer NOT NULL DEFAULT 0 CHECK (rollback_window_s >= 0 AND rollback_window_s <= 86400),
    -- rollout: active, promoting, promoted, rolled_back (canary rows); '' (stable)
    ADD COLUMN rollout_state text NOT NULL DEFAULT '' CHECK (rollout_state IN ('', 'active', 'promoting', 'promoted', 'rolled_back')),
    ADD COLUMN rollout_reason text NOT NULL DEFAULT '',
    -- when the canary left the routing (promoted or rolled back): its
    -- service is kept a drain period past it, then removed
    ADD COLUMN retired_at timestamptz,
    -- promoting: the stable row's desired state before the promote, which a
    -- rollback during the promote restores
    ADD COLUMN promoted_from jsonb,
    ADD CONSTRAINT deployments_track_mode CHECK ((track = 'stable') = (mode = '') AND (track = 'stable') = (rollout_state = ''));

-- +goose Down
DELETE FROM deployments WHERE track <> 'stable';
ALTER TABLE deployments DROP CONSTRAINT deployments_track_mode, DROP CONSTRAINT deployments_model_track_key,
    DROP COLUMN track, DROP COLUMN mode, DROP COLUMN weight, DROP COLUMN sticky, DROP COLUMN rollback_max_error_rate,
    DROP COLUMN rollback_max_p99_ms, DROP COLUMN rollback_window_s, DROP COLUMN rollout_state, DROP COLUMN rollout_reason,
    DROP COLUMN retired_at, DROP COLUMN promoted_from;
ALTER TABLE deployments ADD CONSTRAINT deployments_model_id_key UNIQUE (model_id);
