//! Managed webhooks: subscriptions, the outbox of event messages (written by the transaction
//! that changes a job; see each backend's `webhooks::emit`), and the log of delivery attempts.
//! Messages of one (subscription, job) pair are handed out one at a time in event order, so a
//! receiver never sees `job.running` after `job.completed`.

use async_trait::async_trait;
use convertrilo_core::{JobId, UserId};

use crate::{DbResult, Job};

/// The events a subscription may ask for.
pub const JOB_EVENTS: [&str; 6] = [
    "job.created",
    "job.queued",
    "job.running",
    "job.completed",
    "job.failed",
    "job.canceled",
];

#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    pub id: uuid::Uuid,
    pub user_id: UserId,
    pub url: String,
    pub events: Vec<String>,
    pub secret: String,
    pub is_active: bool,
    pub failure_count: i32,
    pub last_triggered_at: Option<i64>,
    pub last_failed_at: Option<i64>,
    pub created_at: i64,
}

/// A change to a subscription; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WebhookUpdate {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    /// `Some(true)` re-enables (and forgets past failures).
    pub is_active: Option<bool>,
}

/// A message due for delivery, with what it takes to send it.
#[derive(Debug, Clone, PartialEq)]
pub struct DueMessage {
    pub id: String,
    pub webhook: Webhook,
    pub job: Option<Job>,
    pub event: String,
    pub status: Option<String>,
    /// Attempts made before this one.
    pub attempts: i32,
    /// The body sent by earlier attempts, if any.
    pub payload: Option<String>,
    pub created_at: i64,
}

/// One attempt, as recorded and listed.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: uuid::Uuid,
    pub message_id: String,
    pub webhook_id: uuid::Uuid,
    pub job_id: Option<JobId>,
    pub event: String,
    pub success: bool,
    pub status_code: Option<i32>,
    pub duration_ms: Option<i64>,
    pub response_body: Option<String>,
    pub error: Option<String>,
    pub attempt: i32,
    pub next_retry_at: Option<i64>,
    pub retried_at: Option<i64>,
    pub created_at: i64,
}

/// What to do with a message after an attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AfterAttempt {
    Delivered,
    RetryAt(i64),
    GiveUp,
}

#[async_trait]
pub trait WebhookRepo: Send + Sync {
    /// Creates the webhook unless its owner already has `limit`; false (nothing written) then.
    /// The count is checked with the insert, so simultaneous creations cannot pass the limit
    /// together.
    async fn create_webhook(&self, hook: &Webhook, limit: i64) -> DbResult<bool>;
    async fn webhooks(&self, user: UserId) -> DbResult<Vec<Webhook>>;
    async fn webhook(&self, id: uuid::Uuid, user: UserId) -> DbResult<Option<Webhook>>;
    /// Applies the update; `None` when there is no such webhook of this user.
    async fn update_webhook(
        &self,
        id: uuid::Uuid,
        user: UserId,
        update: &WebhookUpdate,
    ) -> DbResult<Option<Webhook>>;
    async fn delete_webhook(&self, id: uuid::Uuid, user: UserId) -> DbResult<bool>;

    /// Pending messages due at `now` of active webhooks, at most one per webhook (none for a
    /// webhook with an attempt in flight) and each the oldest pending message of its
    /// (webhook, job) pair, leased until `lease_until`.
    async fn due_messages(
        &self,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> DbResult<Vec<DueMessage>>;
    /// Records an attempt at a message and moves the message and its webhook on: a success
    /// resets the webhook's failures; a failure counts one, and `disable` (or reaching
    /// `max_failures`) turns the webhook off.
    async fn record_attempt(
        &self,
        delivery: &Delivery,
        payload: &str,
        after: AfterAttempt,
        disable: bool,
        max_failures: i32,
    ) -> DbResult<()>;
    /// Ends the lease of a message whose attempt was abandoned (the process is stopping), so
    /// that it is sent again at once rather than when the lease runs out.
    async fn release_lease(&self, message_id: &str) -> DbResult<()>;
    /// Logs a `webhook.test` attempt (no message, no effect on the webhook's failures).
    async fn log_test_delivery(&self, delivery: &Delivery) -> DbResult<()>;
    /// The `limit` most recent attempts for a webhook, newest first.
    async fn deliveries(&self, webhook: uuid::Uuid, limit: i64) -> DbResult<Vec<Delivery>>;
}
