-- +goose Up
-- Issue 15: a plan may limit the tokens (input + output) its keys spend,
-- per minute and per UTC month, beside its requests; 0 = unlimited.
ALTER TABLE plans
    ADD COLUMN tokens_per_minute bigint NOT NULL DEFAULT 0 CHECK (tokens_per_minute >= 0),
    ADD COLUMN tokens_per_month bigint NOT NULL DEFAULT 0 CHECK (tokens_per_month >= 0);

-- +goose Down
ALTER TABLE plans DROP COLUMN tokens_per_month, DROP COLUMN tokens_per_minute;
