//! Route tables, one module per resource.

pub mod docs;
pub mod files;
pub mod jobs;
