-- +goose Up
-- Issue 15: text-generation models (GGUF) can be created and their versions
-- uploaded and checked; their deployment comes with the generation runtime.
ALTER TABLE models DROP CONSTRAINT models_task_check;
ALTER TABLE models ADD CONSTRAINT models_task_check
    CHECK (task IN ('text-classification', 'token-classification', 'feature-extraction', 'text-generation'));

-- +goose Down
DELETE FROM models WHERE task = 'text-generation';
ALTER TABLE models DROP CONSTRAINT models_task_check;
ALTER TABLE models ADD CONSTRAINT models_task_check
    CHECK (task IN ('text-classification', 'token-classification', 'feature-extraction'));
