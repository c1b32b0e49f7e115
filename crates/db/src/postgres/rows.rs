//! Row ↔ model mapping for PostgreSQL (see `crate::row_mapping`).

crate::row_mapping::row_mapping!(sqlx::postgres::PgRow);
