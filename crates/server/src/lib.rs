//! The Convertrilo API server and in-process workers: configuration, start-up, the HTTP
//! surface (routes, auth, errors, the generated OpenAPI document), job rules, and the worker
//! loop that claims jobs from the database queue and drives the media crate. Customers' own
//! storage (S3-compatible buckets, Google Drive) is reached through `external`, with their
//! credentials sealed by `secrets`.
//! Only this crate knows axum.

pub mod accounts;
pub mod callbacks;
pub mod config;
pub mod external;
pub mod housekeeping;
pub mod http;
pub mod idempotency;
pub mod jobs;
pub mod outbound;
pub mod ownstore;
pub mod queue_watch;
pub mod ratelimit;
pub mod secrets;
pub mod session;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod webhooks;
mod worker;
pub use worker::new_worker_id;

pub use config::Config;
pub use startup::{Application, BootstrapCredentials};
