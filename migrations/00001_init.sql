-- +goose Up
-- Plans: request rate, burst and monthly quota (0 = unlimited) per API key.
CREATE TABLE plans (
    id                  bigserial PRIMARY KEY,
    name                text NOT NULL UNIQUE,
    requests_per_second double precision NOT NULL CHECK (requests_per_second > 0),
    burst               integer NOT NULL CHECK (burst > 0),
    monthly_quota       bigint NOT NULL DEFAULT 0 CHECK (monthly_quota >= 0),
    created_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE accounts (
    id         bigserial PRIMARY KEY,
    name       text NOT NULL UNIQUE,
    plan_id    bigint REFERENCES plans(id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- API keys are stored as a SHA-256 hash; prefix is the short visible part.
CREATE TABLE api_keys (
    id           bigserial PRIMARY KEY,
    account_id   bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name         text NOT NULL DEFAULT '',
    prefix       text NOT NULL UNIQUE,
    hash         bytea NOT NULL UNIQUE,
    kind         text NOT NULL DEFAULT 'inference' CHECK (kind IN ('inference', 'admin')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    last_used_at timestamptz
);
CREATE INDEX api_keys_account ON api_keys(account_id);

CREATE TABLE models (
    id               bigserial PRIMARY KEY,
    name             text NOT NULL UNIQUE CHECK (name ~ '^[a-z][a-z0-9-]{0,47}$'),
    task             text NOT NULL CHECK (task IN ('text-classification', 'token-classification', 'feature-extraction')),
    description      text NOT NULL DEFAULT '',
    visibility       text NOT NULL DEFAULT 'public' CHECK (visibility IN ('public', 'private')),
    owner_account_id bigint REFERENCES accounts(id) ON DELETE SET NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (visibility = 'public' OR owner_account_id IS NOT NULL)
);

-- One row per uploaded archive; digest is "sha256:<hex>" of the archive.
CREATE TABLE model_versions (
    id         bigserial PRIMARY KEY,
    model_id   bigint NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    version    integer NOT NULL CHECK (version > 0),
    digest     text NOT NULL,
    size_bytes bigint NOT NULL CHECK (size_bytes >= 0),
    task       text NOT NULL,
    metadata   jsonb NOT NULL DEFAULT '{}',
    status     text NOT NULL DEFAULT 'ready' CHECK (status IN ('ready', 'failed')),
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (model_id, version)
);
CREATE INDEX model_versions_digest ON model_versions(digest);

-- Desired state (written by the apiserver) and observed state (written by
-- the scheduler). generation grows with every desired change.
CREATE TABLE deployments (
    id                       bigserial PRIMARY KEY,
    model_id                 bigint NOT NULL UNIQUE REFERENCES models(id) ON DELETE CASCADE,
    version                  integer NOT NULL,
    replicas                 integer NOT NULL CHECK (replicas >= 0),
    cpus                     double precision NOT NULL DEFAULT 0 CHECK (cpus >= 0),
    memory_bytes             bigint NOT NULL DEFAULT 0 CHECK (memory_bytes >= 0),
    memory_reservation_bytes bigint NOT NULL DEFAULT 0 CHECK (memory_reservation_bytes >= 0),
    gpus                     integer NOT NULL DEFAULT 0 CHECK (gpus >= 0),
    gpu_memory_bytes         bigint NOT NULL DEFAULT 0 CHECK (gpu_memory_bytes >= 0),
    placement_labels         jsonb NOT NULL DEFAULT '{}',
    generation               bigint NOT NULL DEFAULT 1,
    observed_generation      bigint NOT NULL DEFAULT 0,
    status                   text NOT NULL DEFAULT 'pending',
    status_message           text NOT NULL DEFAULT '',
    observed                 jsonb NOT NULL DEFAULT '{}',
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now(),
    observed_at              timestamptz
);

-- Inventory: Swarm nodes and the GPUs the node agent reports on them.
CREATE TABLE nodes (
    id           text PRIMARY KEY,
    hostname     text NOT NULL DEFAULT '',
    role         text NOT NULL DEFAULT '',
    availability text NOT NULL DEFAULT '',
    state        text NOT NULL DEFAULT '',
    addr         text NOT NULL DEFAULT '',
    labels       jsonb NOT NULL DEFAULT '{}',
    nano_cpus    bigint NOT NULL DEFAULT 0,
    memory_bytes bigint NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE gpus (
    node_id      text NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
    uuid         text NOT NULL,
    idx          integer NOT NULL,
    name         text NOT NULL DEFAULT '',
    memory_total bigint NOT NULL DEFAULT 0,
    memory_used  bigint NOT NULL DEFAULT 0,
    memory_free  bigint NOT NULL DEFAULT 0,
    util_gpu     integer NOT NULL DEFAULT 0,
    util_mem     integer NOT NULL DEFAULT 0,
    mig_mode     integer NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (node_id, uuid)
);

-- GPU memory the scheduler assigned to one replica slot of a deployment.
CREATE TABLE gpu_assignments (
    deployment_id bigint NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
    slot          integer NOT NULL,
    node_id       text NOT NULL,
    gpu_uuid      text NOT NULL,
    memory_bytes  bigint NOT NULL,
    PRIMARY KEY (deployment_id, slot, gpu_uuid)
);

-- Usage per API key, model and UTC day, flushed by the gateway in batches.
CREATE TABLE usage (
    api_key_id bigint NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    model_id   bigint NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    day        date NOT NULL,
    requests   bigint NOT NULL DEFAULT 0,
    texts      bigint NOT NULL DEFAULT 0,
    errors     bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (api_key_id, model_id, day)
);

INSERT INTO plans (name, requests_per_second, burst, monthly_quota) VALUES
    ('free', 2, 10, 10000),
    ('standard', 50, 100, 0);

-- +goose Down
DROP TABLE usage;
DROP TABLE gpu_assignments;
DROP TABLE gpus;
DROP TABLE nodes;
DROP TABLE deployments;
DROP TABLE model_versions;
DROP TABLE models;
DROP TABLE api_keys;
DROP TABLE accounts;
DROP TABLE plans;
