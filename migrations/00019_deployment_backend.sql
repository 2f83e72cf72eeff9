-- +goose Up
-- The inference engine a deployment asks for (issue 14): 'go' (hugot's
-- pure-Go backend, in the control-plane image), 'ort' (ONNX Runtime, the
-- nlpswarm-ort image) or '' for the platform's default, which the scheduler
-- resolves (ort when it has an ORT image, else go) and records in observed.
-- A new column of an existing table: the roles' table grants cover it.
ALTER TABLE deployments
    ADD COLUMN backend text NOT NULL DEFAULT '' CHECK (backend IN ('', 'go', 'ort'));

-- +goose Down
ALTER TABLE deployments DROP COLUMN backend;
