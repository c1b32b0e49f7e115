-- The PostgreSQL twin of migrations/sqlite/0001_initial.sql: the same tables, columns and
-- constraints, with each column typed as the Rust value bound to it (sqlx-postgres refuses a
-- mismatch): i64 BIGINT, i32 INTEGER, bool BOOLEAN, f64 DOUBLE PRECISION, bytes BYTEA.
-- Times are integer milliseconds since the Unix epoch (UTC). Amounts are integer thousandths of a NEU.
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    is_admin      BOOLEAN NOT NULL DEFAULT FALSE,
    banned        BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    BIGINT NOT NULL,
    -- Bumped by every ledger transaction as its first write: the per-account row lock, taken
    -- before the balance is read.
    ledger_seq    BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    prefix      TEXT NOT NULL,
    key_hash    TEXT NOT NULL UNIQUE,
    scopes      TEXT NOT NULL,
    expires_at  BIGINT,
    revoked_at  BIGINT,
    created_at  BIGINT NOT NULL
);
CREATE INDEX api_keys_user ON api_keys(user_id);

-- Append-only journal of token moves; balances are sums over it (see crates/db/src/ledger.rs).
-- job_id has no foreign key: the journal must outlive the jobs it mentions.
CREATE TABLE ledger_entries (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    job_id     TEXT,
    kind       TEXT NOT NULL CHECK (kind IN ('grant', 'reserve', 'release', 'deduct', 'expire')),
    bucket     TEXT NOT NULL CHECK (bucket IN ('trial', 'paid')),
    amount     BIGINT NOT NULL CHECK (amount > 0),
    -- Trial grants only, and always on them.
    expires_at BIGINT CHECK ((expires_at IS NOT NULL) = (kind = 'grant' AND bucket = 'trial')),
    created_at BIGINT NOT NULL,
    CHECK (job_id IS NOT NULL OR kind NOT IN ('reserve', 'release', 'deduct'))
);
CREATE INDEX ledger_entries_user ON ledger_entries(user_id, bucket, kind);
CREATE INDEX ledger_entries_job ON ledger_entries(job_id) WHERE job_id IS NOT NULL;
-- One trial per account, so "the trial" and its expiry are unambiguous.
CREATE UNIQUE INDEX ledger_entries_one_trial ON ledger_entries(user_id)
    WHERE kind = 'grant' AND bucket = 'trial';
CREATE FUNCTION ledger_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger_entries is append-only';
END;
$$;
CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_entries_append_only();

CREATE TABLE jobs (
    id                TEXT PRIMARY KEY,
    user_id           TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    status            TEXT NOT NULL,
    spec              TEXT NOT NULL,
    ingest            TEXT NOT NULL,
    source_url        TEXT,
    input_key         TEXT NOT NULL,
    input_size        BIGINT,
    output_key        TEXT NOT NULL,
    output_size       BIGINT,
    original_filename TEXT,
    source_filename   TEXT,
    output_filename   TEXT NOT NULL,
    external_id       TEXT,
    metadata          TEXT,
    duration_sec      DOUBLE PRECISION,
    -- Duration of the encoded file (what billing charges for).
    output_duration_sec DOUBLE PRECISION,
    media_info        TEXT,
    per_minute        BIGINT,
    estimate          BIGINT,
    encoder           TEXT,
    pct               DOUBLE PRECISION,
    failure_message   TEXT,
    attempts          INTEGER NOT NULL DEFAULT 0,
    -- Created with confirm: true before its upload: queue it as soon as the bytes arrive.
    auto_confirm      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at        BIGINT NOT NULL,
    queued_at         BIGINT,
    started_at        BIGINT,
    finished_at       BIGINT,
    updated_at        BIGINT NOT NULL
);
CREATE INDEX jobs_user_created ON jobs(user_id, created_at);

-- The work queue: one row per queued or running job. A row with a live lease is being worked
-- on; a row whose lease has expired belongs to a worker that died and is claimed again.
-- `seq` breaks ties between rows queued at the same millisecond (SQLite uses its rowid).
CREATE TABLE queue (
    job_id      TEXT PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
    priority    INTEGER NOT NULL DEFAULT 0,
    enqueued_at BIGINT NOT NULL,
    lease_owner TEXT,
    lease_until BIGINT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    seq         BIGINT GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX queue_order ON queue(priority DESC, enqueued_at, seq);

-- Server-wide values shared by every process on this database (e.g. the URL-signing secret).
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
