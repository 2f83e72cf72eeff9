-- +goose Up
-- A role whose process can vanish with its node (a power cut: no FIN, no
-- RST) must not hold row locks for the two hours TCP takes to notice. Seen
-- in make chaos-gpu: the agent of a node cut between its INSERT INTO gpus
-- and its COMMIT left its session "idle in transaction" holding the node's
-- rows, and the scheduler's node sync waited on that lock for good: no
-- re-placement, while its lease kept renewing (issue 18). Postgres now ends
-- such a session after 10 s idle inside a transaction (its locks go with
-- it), and the scheduler's statements give up on a lock after 20 s rather
-- than wait forever (the next pass tries again). The stack's Postgres also
-- probes idle client connections (tcp_keepalives_*, deployments/images/
-- postgres/entrypoint.sh), which ends dead sessions outside transactions.
-- Roles are cluster-wide: the settings follow the role into every database.
ALTER ROLE nlpswarm_agent SET idle_in_transaction_session_timeout = '10s';
ALTER ROLE nlpswarm_gateway SET idle_in_transaction_session_timeout = '10s';
ALTER ROLE nlpswarm_scheduler SET idle_in_transaction_session_timeout = '10s';
ALTER ROLE nlpswarm_scheduler SET lock_timeout = '20s';

-- +goose Down
ALTER ROLE nlpswarm_agent RESET idle_in_transaction_session_timeout;
ALTER ROLE nlpswarm_gateway RESET idle_in_transaction_session_timeout;
ALTER ROLE nlpswarm_scheduler RESET idle_in_transaction_session_timeout;
ALTER ROLE nlpswarm_scheduler RESET lock_timeout;
