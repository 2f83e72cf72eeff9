-- +goose Up
-- Issue 15: usage counts the input (prompt) and output (completion) tokens
-- of generation requests per key, model and UTC day, as the replica's
-- usage object reports them; 0 for the encoder tasks.
ALTER TABLE usage
    ADD COLUMN input_tokens bigint NOT NULL DEFAULT 0 CHECK (input_tokens >= 0),
    ADD COLUMN output_tokens bigint NOT NULL DEFAULT 0 CHECK (output_tokens >= 0);

-- +goose Down
ALTER TABLE usage DROP COLUMN output_tokens, DROP COLUMN input_tokens;
