//! Rows as the rest of the system sees them.

use convertrilo_core::{
    external::{Destination, SourceRef},
    pricing::Factor,
    spec::EncodeSpec,
    vmaf::VmafReport,
    ApiKeyId, JobId, JobStatus, Neu, Scope, UserId,
};
use serde_json::{Map, Value};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub password_hash: String,
    pub is_admin: bool,
    pub banned: bool,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub user_id: UserId,
    pub name: String,
    pub prefix: String,
    pub scopes: Vec<Scope>,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub created_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingest {
    Upload,
    Url,
    /// An object in the customer's S3-compatible bucket (`Job::source_ref`).
    S3,
    /// A file in the customer's Google Drive (`Job::source_ref`).
    GoogleDrive,
}

impl Ingest {
    pub fn as_str(self) -> &'static str {
        match self {
            Ingest::Upload => "upload",
            Ingest::Url => "url",
            Ingest::S3 => "s3",
            Ingest::GoogleDrive => "google-drive",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "upload" => Some(Ingest::Upload),
            "url" => Some(Ingest::Url),
            "s3" => Some(Ingest::S3),
            "google-drive" => Some(Ingest::GoogleDrive),
            _ => None,
        }
    }
}

/// Which surface created a job; it decides pricing, limits and what status shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// `POST /jobs` and `/jobs/bulk`.
    Standard,
    /// `POST /ondemand/encode`: queued at once, at a premium.
    OnDemand,
    /// `POST /public/jobs`: no account of the caller's, free, capped.
    Public,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Standard => "standard",
            JobKind::OnDemand => "ondemand",
            JobKind::Public => "public",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "standard" => Some(JobKind::Standard),
            "ondemand" => Some(JobKind::OnDemand),
            "public" => Some(JobKind::Public),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: JobId,
    pub user_id: UserId,
    pub status: JobStatus,
    pub spec: EncodeSpec,
    pub ingest: Ingest,
    pub source_url: Option<String>,
    pub input_key: String,
    /// Bytes received for an upload; `None` until the upload finished.
    pub input_size: Option<i64>,
    pub output_key: String,
    pub output_size: Option<i64>,
    pub original_filename: Option<String>,
    pub source_filename: Option<String>,
    pub output_filename: String,
    pub external_id: Option<String>,
    pub metadata: Option<Map<String, Value>>,
    pub duration_sec: Option<f64>,
    pub output_duration_sec: Option<f64>,
    /// The probe result as JSON, kept so workers and estimates agree on what was seen.
    pub media_info: Option<Value>,
    pub per_minute: Option<Neu>,
    pub estimate: Option<Neu>,
    pub encoder: Option<String>,
    pub pct: Option<f64>,
    pub failure_message: Option<String>,
    pub attempts: i32,
    /// Queue as soon as the upload finishes (created with `confirm: true`, no source yet).
    pub auto_confirm: bool,
    pub created_at: i64,
    pub queued_at: Option<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub kind: JobKind,
    /// Queue order: higher is claimed first.
    pub priority: i32,
    /// Multiplies the price list: the on-demand premium, or zero for a free public job.
    pub price_factor: Factor,
    /// How long after finishing the output stays downloadable; the server default when `None`.
    pub output_expiry_secs: Option<i64>,
    /// Told once, best effort, when the job ends (the on-demand `webhook`).
    pub callback_url: Option<String>,
    /// SHA-256 (hex) of a public job's status token.
    pub status_token_hash: Option<String>,
    /// When the output was deleted because its expiry passed.
    pub output_purged_at: Option<i64>,
    /// The customer-storage source of an `s3` or `google-drive` job.
    pub source_ref: Option<SourceRef>,
    /// Where the output is delivered.
    pub destination: Destination,
    /// What the VMAF search and measurement came to (`optimize: "vmaf"` jobs, on success).
    pub vmaf: Option<VmafReport>,
}

/// A job to insert: `created`, or `queued` with a queue row and (when `reserve` is given) a
/// reservation of that amount.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub job: Job,
    pub reserve: Option<Neu>,
    /// The job's credentials, already sealed (see `JobRepo::job_secret`); written with it.
    pub secret: Option<Vec<u8>>,
}

/// What `JobRepo::insert_jobs` did.
#[derive(Debug, Clone, PartialEq)]
pub enum Inserted {
    Done,
    /// The account cannot cover the batch's reservations together; nothing was written.
    Insufficient {
        required: Neu,
        available: Neu,
    },
    /// The idempotency key is no longer held by this attempt (it expired and another request
    /// took it over); nothing was written.
    KeyLost,
}

/// One job of `JobRepo::enqueue_many`.
#[derive(Debug, Clone, PartialEq)]
pub struct EnqueueItem {
    pub id: JobId,
    pub update: EstimateUpdate,
    pub reserve: Option<Neu>,
}

/// What `JobRepo::enqueue_many` did.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchEnqueued {
    /// Per item, in order: the queued job, or `None` when it was no longer `created`.
    Done(Vec<Option<Job>>),
    /// The account cannot cover the reservations together; nothing changed.
    Insufficient { required: Neu, available: Neu },
}

/// What `JobRepo::cancel` did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Canceled {
    /// The status the job had (its status now, for a job that had already finished).
    pub previous: JobStatus,
    /// Tokens handed back to the account.
    pub released: Neu,
}

/// Objects of one job to delete: its uploaded source, its expired output, or both.
#[derive(Debug, Clone, PartialEq)]
pub struct Purge {
    pub job_id: JobId,
    pub input_key: Option<String>,
    pub output_key: Option<String>,
}

/// A one-off callback due for delivery, with the job as it is now.
#[derive(Debug, Clone, PartialEq)]
pub struct Callback {
    pub id: i64,
    pub event: String,
    /// Attempts made before this one.
    pub attempts: i32,
    pub created_at: i64,
    pub job: Job,
}

/// What a probe and a price estimate add to a `created` job.
#[derive(Debug, Clone, PartialEq)]
pub struct EstimateUpdate {
    pub spec: EncodeSpec,
    /// Follows the spec: a container change renames the output.
    pub output_filename: String,
    pub duration_sec: Option<f64>,
    pub media_info: Option<Value>,
    pub per_minute: Option<Neu>,
    pub estimate: Option<Neu>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    pub pct: Option<f64>,
    pub encoder: Option<String>,
}

/// Why a worker gives a job it holds back to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandBack<'a> {
    /// The process is stopping: the job did nothing wrong, so its attempt is refunded and
    /// another worker may take it at once.
    Shutdown,
    /// A passing problem on our side (the store or the database failing for a while). The
    /// attempt is refunded too (`max_attempts` guards against inputs that kill workers), but
    /// the job waits as `backoff` says before its next claim, and is given up with `reason`
    /// in its message once `backoff` runs out.
    PassingError { reason: &'a str, backoff: Backoff },
}

impl HandBack<'_> {
    /// 1 when this hand-back is a passing problem (it adds to the job's count of them).
    pub(crate) fn retry_count(&self) -> i32 {
        i32::from(matches!(self, HandBack::PassingError { .. }))
    }

    /// What a hand-back comes to once the job has met `retries` passing problems: the wait
    /// before its next claim, or (its backoff run out) the message to give it up with.
    pub(crate) fn wait(&self, retries: i32) -> Result<Duration, String> {
        match *self {
            HandBack::Shutdown => Ok(Duration::ZERO),
            HandBack::PassingError { reason, backoff } if retries > backoff.retries => {
                Err(passing_problems_message(retries, reason))
            }
            HandBack::PassingError { backoff, .. } => Ok(backoff.delay(retries)),
        }
    }
}

/// How jobs handed back after passing problems wait, and for how many such problems.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first problem; it doubles after each further one...
    pub first: Duration,
    /// ...up to this.
    pub most: Duration,
    /// Problems a job may meet; the next one gives it up.
    pub retries: i32,
}

impl Backoff {
    /// The workers' schedule: 5 s doubling to a minute, eight times, so a store or database
    /// in trouble for about five minutes (315 s of waiting) is ridden out.
    pub const PASSING_ERRORS: Backoff = Backoff {
        first: Duration::from_secs(5),
        most: Duration::from_secs(60),
        retries: 8,
    };

    /// The wait after the `retry`-th problem (1-based).
    pub fn delay(&self, retry: i32) -> Duration {
        let doublings = retry.clamp(1, 17) as u32 - 1;
        self.first.saturating_mul(1 << doublings).min(self.most)
    }
}

/// What a hand-back did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandedBack {
    /// Queued again, claimable after the wait (zero at a shutdown).
    Queued { after: Duration },
    /// Failed for good, its reservation released.
    GivenUp,
    /// The worker no longer held the job (canceled or taken over meanwhile).
    NotHeld,
}

/// The message of a job that used up its attempts: each was cut off (its worker died or lost
/// its lease).
pub(crate) fn interrupted_message(attempts: i32) -> String {
    format!(
        "the job was interrupted {attempts} times (its worker stopped mid-encode each time) \
         and was given up; nothing was charged, create it again"
    )
}

/// The message of a job given up after `retries` passing problems, `reason` the last.
fn passing_problems_message(retries: i32, reason: &str) -> String {
    format!(
        "the job was given up after a problem on our side stopped it {retries} times over \
         several minutes (the last: {reason}); nothing was charged, create it again"
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    Continue,
    /// Canceled by the user, or the lease went to another worker.
    Lost,
}

/// What `JobRepo::enqueue` did.
// Returned once per enqueue and matched at once, like the `Option<Job>` it replaced: boxing
// the job would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Enqueued {
    /// Queued, with its reservation (if one was asked for) in place.
    Queued(Job),
    /// The job was not `created` (another confirm or a cancel came first); nothing changed.
    NotCreated,
    /// The account cannot cover the reservation; nothing changed.
    Insufficient { required: Neu, available: Neu },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Success {
        output_size: i64,
        duration_sec: Option<f64>,
        /// The price of the output; `finish` deducts up to the job's reservation of it and
        /// releases the rest.
        cost: Neu,
        /// A VMAF-targeted job's report, stored with the job.
        vmaf: Option<VmafReport>,
    },
    Failed {
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::Backoff;

    #[test]
    fn a_job_waits_longer_after_each_passing_problem_up_to_a_minute() {
        let b = Backoff::PASSING_ERRORS;
        let waits: Vec<u64> = (0..=8).map(|r| b.delay(r).as_secs()).collect();
        assert_eq!(waits, [5, 5, 10, 20, 40, 60, 60, 60, 60]);
        let total: u64 = (1..=b.retries).map(|r| b.delay(r).as_secs()).sum();
        assert_eq!(total, 315, "about five minutes of trouble is ridden out");
        assert_eq!(b.delay(i32::MAX).as_secs(), 60);
    }
}
