-- +goose Up
-- Autoscaling bounds of a deployment (issue 10). autoscale_max = 0 means the
-- deployment is not autoscaled: replicas is then whatever deploy/scale set.
-- When it is, the scheduler's autoscaler writes replicas within
-- [autoscale_min, autoscale_max] through the same function as the scale API.
ALTER TABLE deployments
    ADD COLUMN autoscale_min                 integer NOT NULL DEFAULT 0 CHECK (autoscale_min >= 0),
    ADD COLUMN autoscale_max                 integer NOT NULL DEFAULT 0 CHECK (autoscale_max >= 0),
    ADD COLUMN autoscale_target_inflight     double precision NOT NULL DEFAULT 0 CHECK (autoscale_target_inflight >= 0),
    ADD COLUMN autoscale_scale_down_delay_ms bigint NOT NULL DEFAULT 0 CHECK (autoscale_scale_down_delay_ms >= 0),
    ADD COLUMN autoscale_idle_to_zero_ms     bigint NOT NULL DEFAULT 0 CHECK (autoscale_idle_to_zero_ms >= 0),
    -- when replicas last changed, and why (manual scale, deploy or the autoscaler's rule)
    ADD COLUMN scaled_at                     timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN scale_reason                  text NOT NULL DEFAULT '',
    ADD CONSTRAINT deployments_autoscale_bounds CHECK (autoscale_max = 0 OR autoscale_max >= autoscale_min);

-- Cold start of each replica: Swarm's task times (created = scheduled,
-- running = healthcheck passed) and the runtime's own phases, read by the
-- scheduler from the replica's "cold start" log line.
CREATE TABLE replica_starts (
    task_id         text PRIMARY KEY,
    deployment_id   bigint NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
    slot            integer NOT NULL DEFAULT 0,
    node            text NOT NULL DEFAULT '',
    scheduled_at    timestamptz NOT NULL,
    started_at      timestamptz,
    fetch_seconds   double precision,
    artifact_bytes  bigint,
    artifact_cached boolean,
    load_seconds    double precision,
    warmup_seconds  double precision,
    ready_at        timestamptz,
    running_at      timestamptz,
    recorded_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX replica_starts_deployment ON replica_starts(deployment_id, scheduled_at DESC);

-- +goose Down
DROP TABLE replica_starts;
ALTER TABLE deployments
    DROP CONSTRAINT deployments_autoscale_bounds,
    DROP COLUMN scale_reason,
    DROP COLUMN scaled_at,
    DROP COLUMN autoscale_idle_to_zero_ms,
    DROP COLUMN autoscale_scale_down_delay_ms,
    DROP COLUMN autoscale_target_inflight,
    DROP COLUMN autoscale_max,
    DROP COLUMN autoscale_min;
