//! Sealed job credentials on PostgreSQL. The repository never sees them in clear: it stores and
//! hands back the blob the server sealed. Rows go in with their job and out with the job's
//! terminal transition, inside the same transactions (see `jobs` and `batch`).

use super::PgRepo;
use crate::DbResult;
use convertrilo_core::{time::now_ms, JobId};
use sqlx::{PgConnection, Row};

pub(super) async fn insert(conn: &mut PgConnection, id: JobId, sealed: &[u8]) -> DbResult<()> {
    sqlx::query("INSERT INTO job_secrets (job_id, sealed, updated_at) VALUES ($1, $2, $3)")
        .bind(id.to_string())
        .bind(sealed)
        .bind(now_ms())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Forgets a job's credentials; called by every transition that ends a job.
pub(super) async fn delete(conn: &mut PgConnection, id: &str) -> DbResult<()> {
    sqlx::query("DELETE FROM job_secrets WHERE job_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

impl PgRepo {
    pub(super) async fn job_secret_row(&self, id: JobId) -> DbResult<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT sealed FROM job_secrets WHERE job_id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("sealed")).transpose()?)
    }

    /// One statement: a concurrent end of the job either deletes the row first (nothing is
    /// written) or waits for this update and then deletes the new value.
    pub(super) async fn replace_job_secret_row(&self, id: JobId, sealed: &[u8]) -> DbResult<bool> {
        let r =
            sqlx::query("UPDATE job_secrets SET sealed = $1, updated_at = $2 WHERE job_id = $3")
                .bind(sealed)
                .bind(now_ms())
                .bind(id.to_string())
                .execute(&self.pool)
                .await?;
        Ok(r.rows_affected() == 1)
    }
}
