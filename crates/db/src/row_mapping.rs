//! Row ↔ model mapping, written once for both backends: their tables have the same columns
//! with types that decode to the same Rust types, so only the row type differs. Each backend's
//! `rows` module instantiates [`row_mapping!`] with its row type.

/// Defines `parse_id`, `user`, `scopes_to_text`, `api_key` and `job` for rows of type `$row`.
macro_rules! row_mapping {
    ($row:ty) => {
        use crate::{model::*, DbError, DbResult};
        use convertrilo_core::{pricing::Factor, JobStatus, Neu, Scope, WireEnum};
        use sqlx::Row;

        pub(super) fn parse_id<T: std::str::FromStr>(s: &str) -> DbResult<T> {
            s.parse()
                .map_err(|_| DbError::Corrupt(format!("bad id {s:?}")))
        }

        pub(super) fn user(row: &$row) -> DbResult<User> {
            Ok(User {
                id: parse_id(row.try_get::<&str, _>("id")?)?,
                email: row.try_get("email")?,
                password_hash: row.try_get("password_hash")?,
                is_admin: row.try_get("is_admin")?,
                banned: row.try_get("banned")?,
                created_at: row.try_get("created_at")?,
            })
        }

        pub(super) fn scopes_to_text(scopes: &[Scope]) -> String {
            scopes
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(",")
        }

        pub(super) fn api_key(row: &$row) -> DbResult<ApiKey> {
            let scopes: &str = row.try_get("scopes")?;
            Ok(ApiKey {
                id: parse_id(row.try_get::<&str, _>("id")?)?,
                user_id: parse_id(row.try_get::<&str, _>("user_id")?)?,
                name: row.try_get("name")?,
                prefix: row.try_get("prefix")?,
                scopes: scopes.split(',').filter_map(Scope::parse).collect(),
                expires_at: row.try_get("expires_at")?,
                revoked_at: row.try_get("revoked_at")?,
                created_at: row.try_get("created_at")?,
            })
        }

        fn json_col<T: serde::de::DeserializeOwned>(row: &$row, col: &str) -> DbResult<Option<T>> {
            let text: Option<String> = row.try_get(col)?;
            text.map(|t| {
                serde_json::from_str(&t).map_err(|e| DbError::Corrupt(format!("{col}: {e}")))
            })
            .transpose()
        }

        pub(super) fn job(row: &$row) -> DbResult<Job> {
            let status: &str = row.try_get("status")?;
            let ingest: &str = row.try_get("ingest")?;
            Ok(Job {
                id: parse_id(row.try_get::<&str, _>("id")?)?,
                user_id: parse_id(row.try_get::<&str, _>("user_id")?)?,
                status: JobStatus::parse(status)
                    .ok_or_else(|| DbError::Corrupt(format!("status {status}")))?,
                spec: json_col(row, "spec")?
                    .ok_or_else(|| DbError::Corrupt("spec missing".into()))?,
                ingest: Ingest::parse(ingest)
                    .ok_or_else(|| DbError::Corrupt(format!("ingest {ingest}")))?,
                source_url: row.try_get("source_url")?,
                input_key: row.try_get("input_key")?,
                input_size: row.try_get("input_size")?,
                output_key: row.try_get("output_key")?,
                output_size: row.try_get("output_size")?,
                original_filename: row.try_get("original_filename")?,
                source_filename: row.try_get("source_filename")?,
                output_filename: row.try_get("output_filename")?,
                external_id: row.try_get("external_id")?,
                metadata: json_col(row, "metadata")?,
                duration_sec: row.try_get("duration_sec")?,
                output_duration_sec: row.try_get("output_duration_sec")?,
                media_info: json_col(row, "media_info")?,
                per_minute: row
                    .try_get::<Option<i64>, _>("per_minute")?
                    .map(Neu::from_millis),
                estimate: row
                    .try_get::<Option<i64>, _>("estimate")?
                    .map(Neu::from_millis),
                encoder: row.try_get("encoder")?,
                pct: row.try_get("pct")?,
                failure_message: row.try_get("failure_message")?,
                attempts: row.try_get("attempts")?,
                auto_confirm: row.try_get("auto_confirm")?,
                created_at: row.try_get("created_at")?,
                queued_at: row.try_get("queued_at")?,
                started_at: row.try_get("started_at")?,
                finished_at: row.try_get("finished_at")?,
                kind: {
                    let kind: &str = row.try_get("kind")?;
                    JobKind::parse(kind).ok_or_else(|| DbError::Corrupt(format!("kind {kind}")))?
                },
                priority: row.try_get("priority")?,
                price_factor: Factor::from_thousandths(row.try_get("price_factor")?),
                output_expiry_secs: row.try_get("output_expiry_secs")?,
                callback_url: row.try_get("callback_url")?,
                status_token_hash: row.try_get("status_token_hash")?,
                output_purged_at: row.try_get("output_purged_at")?,
                source_ref: json_col(row, "source_ref")?,
                destination: json_col(row, "destination")?.unwrap_or_default(),
                vmaf: json_col(row, "vmaf")?,
            })
        }
    };
}

pub(crate) use row_mapping;
