//! Domain vocabulary of Convertrilo, free of I/O: ids, the encode spec and its wire enums,
//! the job state machine, request validation that names every bad field, NEU amounts and
//! pricing, what a VMAF-targeted encode reports, API key scopes, the contract's error codes, output file naming, and references to
//! customers' own storage (S3 buckets, Google Drive) with their secrets kept out of `Debug`.
//! Every other crate speaks in these types; nothing here knows HTTP, SQL or ffmpeg.

pub mod capability;
pub mod error_code;
pub mod external;
pub mod filename;
pub mod ids;
pub mod neu;
pub mod pricing;
pub mod request;
pub mod scope;
pub mod spec;
pub mod status;
pub mod time;
pub mod vmaf;
mod wire;

pub use error_code::ErrorCode;
pub use ids::{ApiKeyId, JobId, UserId};
pub use neu::Neu;
pub use pricing::PricingTable;
pub use scope::Scope;
pub use spec::EncodeSpec;
pub use status::JobStatus;
pub use wire::WireEnum;
