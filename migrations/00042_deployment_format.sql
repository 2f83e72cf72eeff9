-- +goose Up
-- Issue 15: a deployment records its version's archive format (onnx, gguf),
-- the runtime that serves it: an embedding GGUF (task feature-extraction) runs
-- on the generation runtime like a text-generation model, and the gateway
-- (which may not read model_versions) routes it by this column.
ALTER TABLE deployments ADD COLUMN format text NOT NULL DEFAULT 'onnx' CHECK (format IN ('onnx', 'gguf'));
UPDATE deployments d SET format = 'gguf' FROM model_versions v
    WHERE v.model_id = d.model_id AND v.version = d.version AND v.metadata ? 'gguf';

-- +goose Down
ALTER TABLE deployments DROP COLUMN format;
