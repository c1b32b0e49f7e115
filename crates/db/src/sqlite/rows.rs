//! Row ↔ model mapping for SQLite (see `crate::row_mapping`).

crate::row_mapping::row_mapping!(sqlx::sqlite::SqliteRow);
