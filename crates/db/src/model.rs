//! Rows as the rest of the system sees them.

use convertrilo_core::{spec::EncodeSpec, ApiKeyId, JobId, JobStatus, Neu, Scope, UserId};
use serde_json::{Map, Value};

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
}

impl Ingest {
    pub fn as_str(self) -> &'static str {
        match self {
            Ingest::Upload => "upload",
            Ingest::Url => "url",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "upload" => Some(Ingest::Upload),
            "url" => Some(Ingest::Url),
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
    },
    Failed {
        message: String,
    },
}
