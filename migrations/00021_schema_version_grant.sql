-- +goose Up
-- The roles read the schema version at start and wait until it is at least
-- the one their binary carries (internal/pg WaitSchema), so that a rolling
-- upgrade never starts a new role on an old schema; `nlpswarm migrate up`,
-- a one-shot stack service, applies it as the owner. Read-only: no role
-- but the owner writes the version table.
GRANT SELECT ON goose_db_version TO nlpswarm_apiserver, nlpswarm_scheduler, nlpswarm_gateway, nlpswarm_agent;

-- +goose Down
REVOKE ALL ON goose_db_version FROM nlpswarm_apiserver, nlpswarm_scheduler, nlpswarm_gateway, nlpswarm_agent;
