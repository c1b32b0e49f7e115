//! Route tables, one module per resource.

pub mod api_keys;
pub mod auth;
pub mod docs;
pub mod files;
pub mod jobs;
pub mod tokens;
