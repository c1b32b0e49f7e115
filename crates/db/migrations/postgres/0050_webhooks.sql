-- Managed webhooks: subscriptions, their outbox of messages, and the log of delivery attempts.

CREATE TABLE webhooks (
    id                TEXT PRIMARY KEY,
    user_id           TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    url               TEXT NOT NULL,
    -- JSON array of the event names the subscription receives.
    events            TEXT NOT NULL,
    -- The signing secret; returned once at creation, never in a delivery record.
    secret            TEXT NOT NULL,
    is_active         BOOLEAN NOT NULL DEFAULT TRUE,
    -- Consecutive failed attempts; 10 disable the webhook, a success resets it.
    failure_count     INTEGER NOT NULL DEFAULT 0,
    last_triggered_at BIGINT,
    last_failed_at    BIGINT,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);
CREATE INDEX webhooks_user ON webhooks(user_id);

-- The outbox: one row per (subscription, event), written by the transaction that changed the
-- job, so an event exists exactly when its change happened. `id` is the Standard Webhooks
-- message id, the same on every retry. A row is pending until delivered or given up
-- (`next_attempt_at` NULL then).
CREATE TABLE webhook_messages (
    seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    webhook_id      TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    job_id          TEXT,
    event           TEXT NOT NULL,
    -- The job's status at the event.
    status          TEXT,
    state           TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    -- Set while an attempt is in flight (until then); one message per webhook at a time.
    leased_until    BIGINT,
    -- The body, fixed at the first attempt so every retry sends the same bytes.
    payload         TEXT,
    created_at      BIGINT NOT NULL
);
CREATE INDEX webhook_messages_due ON webhook_messages(next_attempt_at) WHERE next_attempt_at IS NOT NULL;
CREATE INDEX webhook_messages_job ON webhook_messages(webhook_id, job_id, seq) WHERE state = 'pending';
CREATE INDEX webhook_messages_leased ON webhook_messages(webhook_id, leased_until) WHERE leased_until IS NOT NULL;

-- Every attempt, for GET /webhooks/{id}/deliveries. Bodies and errors are capped; no secret
-- is ever written here.
CREATE TABLE webhook_deliveries (
    id            TEXT PRIMARY KEY,
    message_id    TEXT NOT NULL,
    webhook_id    TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    job_id        TEXT,
    event         TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('success', 'failed')),
    status_code   INTEGER,
    duration_ms   BIGINT,
    response_body TEXT,
    error         TEXT,
    attempt       INTEGER NOT NULL,
    next_retry_at BIGINT,
    retried_at    BIGINT,
    created_at    BIGINT NOT NULL
);
CREATE INDEX webhook_deliveries_hook ON webhook_deliveries(webhook_id, created_at);
