-- +goose Up
-- Logged-out backoffice web sessions (issue 17): the session cookie is
-- signed and stateless, so a logout is only final everywhere (every
-- apiserver replica, after restarts) when the revocation is stored here.
-- Rows outlive nothing: the apiserver deletes them once the session would
-- have expired anyway.
CREATE TABLE web_session_revocations (
    session_id text PRIMARY KEY CHECK (length(session_id) = 32),
    expires_at timestamptz NOT NULL
);
CREATE INDEX web_session_revocations_expires_at ON web_session_revocations (expires_at);

-- +goose Down
DROP TABLE web_session_revocations;
