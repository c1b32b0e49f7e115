-- On-demand and public jobs, priorities, one-off callbacks, idempotency keys.

-- standard (POST /jobs and bulk), ondemand or public.
ALTER TABLE jobs ADD COLUMN kind TEXT NOT NULL DEFAULT 'standard';
-- Queue order: higher is claimed first (on-demand `high` is above everything else).
ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
-- Multiplies the price list, in thousandths: the on-demand premium, or 0 for a free job.
ALTER TABLE jobs ADD COLUMN price_factor BIGINT NOT NULL DEFAULT 1000;
-- How long after finishing the output stays downloadable (on-demand `outputExpiry`).
ALTER TABLE jobs ADD COLUMN output_expiry_secs BIGINT;
-- The on-demand `webhook`: told once when the job ends.
ALTER TABLE jobs ADD COLUMN callback_url TEXT;
-- SHA-256 of a public job's status token.
ALTER TABLE jobs ADD COLUMN status_token_hash TEXT;
-- When housekeeping deleted the uploaded source (once the job ended) and the output (once
-- its expiry passed).
ALTER TABLE jobs ADD COLUMN input_purged_at BIGINT;
ALTER TABLE jobs ADD COLUMN output_purged_at BIGINT;

-- One row per (account, Idempotency-Key). While `status_code` is NULL the first request is
-- still at work (until `locked_until`; after that a retry may take over). The response is
-- written in the same transaction as the jobs and reservations the request created, and
-- only the attempt that holds the row can write it.
CREATE TABLE idempotency_keys (
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    key           TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    attempt       TEXT NOT NULL,
    locked_until  BIGINT,
    status_code   BIGINT,
    response_body BYTEA,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys(created_at);

-- The outbox of one-off callbacks: a row is written in the transaction that ends a job with
-- a callback URL, and stays until delivered or given up (next_attempt_at NULL then).
CREATE TABLE job_callbacks (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id          TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    event           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    delivered_at    BIGINT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL
);
CREATE INDEX job_callbacks_due ON job_callbacks(next_attempt_at) WHERE next_attempt_at IS NOT NULL;
