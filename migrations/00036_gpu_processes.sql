-- +goose Up
-- Issue 16: the agent reports, per GPU, the processes NVML sees using it
-- (running compute processes: pid and GPU memory), so the nodes page can
-- show GPU memory used by something the platform did not place; and, per
-- node, why it reports no GPUs ('' when NVML answered).
ALTER TABLE gpus ADD COLUMN processes jsonb NOT NULL DEFAULT '[]';
ALTER TABLE nodes ADD COLUMN gpu_reason text NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE nodes DROP COLUMN gpu_reason;
ALTER TABLE gpus DROP COLUMN processes;
