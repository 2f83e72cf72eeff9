-- +goose Up
-- One database role per service, with only the grants its code uses
-- (issue 17 finding 7): the internet-facing gateway reads keys, plans and
-- deployments and writes usage, nothing else; no role but the migrating one
-- may change the schema. The roles are created here without LOGIN when
-- missing; the stack's postgres image (deployments/images/postgres) gives
-- them LOGIN and their passwords from Docker secrets at every start.
-- Roles are cluster-wide: several databases of one cluster share them.
--
-- A later migration that adds a table must GRANT on it to the roles that
-- use it; nothing is granted by default.
-- +goose StatementBegin
DO $$
DECLARE r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['nlpswarm_apiserver', 'nlpswarm_scheduler', 'nlpswarm_gateway', 'nlpswarm_agent'] LOOP
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL; -- made by the image's entrypoint, or by another database's migration at the same time
        END;
    END LOOP;
END $$;
-- +goose StatementEnd

-- the backoffice: all rows of every table (it is the admin's plane), no DDL
GRANT SELECT, INSERT, UPDATE, DELETE ON plans, accounts, api_keys, models, model_versions, deployments,
    nodes, gpus, gpu_assignments, usage, replica_starts, web_session_revocations TO nlpswarm_apiserver;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO nlpswarm_apiserver;

-- the scheduler: reads desired state, writes observed state, the node
-- inventory, GPU assignments and cold-start records
GRANT SELECT ON plans, accounts, models, model_versions TO nlpswarm_scheduler;
GRANT SELECT, UPDATE ON deployments TO nlpswarm_scheduler;
GRANT SELECT, INSERT, UPDATE, DELETE ON nodes, gpus, gpu_assignments, replica_starts TO nlpswarm_scheduler;

-- the gateway (internet-facing): key, plan and route look-ups, usage counts
GRANT SELECT ON plans, accounts, api_keys, models, deployments TO nlpswarm_gateway;
GRANT SELECT, INSERT, UPDATE ON usage TO nlpswarm_gateway;

-- the node agent: its node's row and GPU inventory
GRANT SELECT, INSERT, UPDATE ON nodes TO nlpswarm_agent;
GRANT SELECT, INSERT, UPDATE, DELETE ON gpus TO nlpswarm_agent;

-- +goose Down
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM nlpswarm_apiserver, nlpswarm_scheduler, nlpswarm_gateway, nlpswarm_agent;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM nlpswarm_apiserver, nlpswarm_scheduler, nlpswarm_gateway, nlpswarm_agent;
