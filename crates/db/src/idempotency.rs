//! Idempotency keys: "insert the key, or return the saved response". A request first claims
//! its key ([`IdempotencyRepo::begin`]); the response is saved by the same transaction that
//! writes the request's jobs and reservations ([`IdempotentResponse`] passed to
//! `JobRepo::insert_jobs`), so a crash leaves either both or neither. A request that fails
//! without writing anything gives its key back ([`IdempotencyRepo::abandon`]).

use async_trait::async_trait;
use convertrilo_core::UserId;

use crate::DbResult;

/// What `begin` found.
#[derive(Debug, Clone, PartialEq)]
pub enum IdemBegin {
    /// The key is this attempt's: do the work and save the response with it.
    Started,
    /// The same request was answered before: send this again.
    Replay { status: u16, body: Vec<u8> },
    /// The key was used with a different request.
    Conflict,
    /// The first request with this key is still being processed.
    InProgress,
}

/// Identifies one attempt's claim on a key.
#[derive(Debug, Clone, PartialEq)]
pub struct IdemClaim {
    pub user_id: UserId,
    pub key: String,
    pub request_hash: String,
    /// Random, per attempt: only the holder can save a response or give the key back.
    pub attempt: String,
}

/// The response to save with a claim, inside the transaction that did the work.
#[derive(Debug, Clone, PartialEq)]
pub struct IdempotentResponse {
    pub claim: IdemClaim,
    pub status: u16,
    pub body: Vec<u8>,
}

#[async_trait]
pub trait IdempotencyRepo: Send + Sync {
    /// Claims `claim.key` until `locked_until` (ms). A key first used before `expired_before`
    /// counts as unused; an unanswered claim whose lock has passed may be taken over.
    async fn begin(
        &self,
        claim: &IdemClaim,
        now: i64,
        locked_until: i64,
        expired_before: i64,
    ) -> DbResult<IdemBegin>;
    /// Keeps an unanswered claim held until `locked_until`; false when it is no longer ours.
    async fn extend(&self, claim: &IdemClaim, locked_until: i64) -> DbResult<bool>;
    /// Gives an unanswered key back, so a corrected retry can use it.
    async fn abandon(&self, claim: &IdemClaim) -> DbResult<()>;
    /// Deletes keys first used before `before` that are not being worked on; returns how many.
    async fn sweep(&self, before: i64, now: i64) -> DbResult<u64>;
}
