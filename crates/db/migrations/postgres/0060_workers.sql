-- Worker processes (see crates/db/src/workers.rs). A row not touched for a while belongs to
-- a process that died; its jobs come back through their expiring leases.
CREATE TABLE workers (
    id           TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    version      TEXT NOT NULL,
    -- JSON of convertrilo_core::capability::WorkerCaps, for operators.
    capabilities TEXT NOT NULL,
    -- ',h264,gpu:h264,': what claims and the unrunnable sweep match queue needs against.
    tokens       TEXT NOT NULL,
    vmaf         BOOLEAN NOT NULL,
    slots        BIGINT NOT NULL,
    started_at   BIGINT NOT NULL,
    last_seen    BIGINT NOT NULL,
    stopping     BOOLEAN NOT NULL DEFAULT FALSE
);

-- What a queued job needs from its worker (convertrilo_core::capability::Needs). Rows queued
-- before this migration need nothing in particular ('' matches every worker).
ALTER TABLE queue ADD COLUMN need_encoder TEXT NOT NULL DEFAULT '';
ALTER TABLE queue ADD COLUMN need_vmaf BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX queue_lease_owner ON queue(lease_owner) WHERE lease_owner IS NOT NULL;
