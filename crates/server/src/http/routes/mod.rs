//! Route tables, one module per resource.

pub mod api_keys;
pub mod auth;
pub mod bulk;
pub mod docs;
pub mod files;
pub mod folder;
pub mod jobs;
pub mod ondemand;
pub mod ops;
pub mod public;
pub mod storage_docs;
pub mod stream;
pub mod tokens;
pub mod webhooks;
