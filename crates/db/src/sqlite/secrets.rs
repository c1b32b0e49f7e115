//! Sealed job credentials on SQLite. The repository never sees them in clear: it stores and
//! hands back the blob the server sealed. Rows go in with their job and out with the job's
//! terminal transition, inside the same transactions (see `jobs` and `batch`).

use super::SqliteRepo;
use crate::DbResult;
use convertrilo_core::{time::now_ms, JobId};
use sqlx::{Row, SqliteConnection};

pub(super) async fn insert(conn: &mut SqliteConnection, id: JobId, sealed: &[u8]) -> DbResult<()> {
    sqlx::query("INSERT INTO job_secrets (job_id, sealed, updated_at) VALUES (?, ?, ?)")
        .bind(id.to_string())
        .bind(sealed)
        .bind(now_ms())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Forgets a job's credentials; called by every transition that ends a job.
pub(super) async fn delete(conn: &mut SqliteConnection, id: &str) -> DbResult<()> {
    sqlx::query("DELETE FROM job_secrets WHERE job_id = ?")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

impl SqliteRepo {
    pub(super) async fn job_secret_row(&self, id: JobId) -> DbResult<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT sealed FROM job_secrets WHERE job_id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("sealed")).transpose()?)
    }

    pub(super) async fn replace_job_secret_row(&self, id: JobId, sealed: &[u8]) -> DbResult<bool> {
        let r = sqlx::query("UPDATE job_secrets SET sealed = ?, updated_at = ? WHERE job_id = ?")
            .bind(sealed)
            .bind(now_ms())
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }
}
