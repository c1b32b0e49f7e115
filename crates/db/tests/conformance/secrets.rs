//! Sealed job credentials: written with the job, replaceable while it lives, and gone in the
//! same transaction as every transition that ends it (finish either way, cancel, give-up).

use super::{backends, job, ledger::account, LEASE};
use convertrilo_core::{time::now_ms, JobStatus};
use convertrilo_db::*;

fn queued_with_secret(owner: convertrilo_core::UserId, sealed: &[u8]) -> NewJob {
    let mut j = job(owner);
    j.status = JobStatus::Queued;
    j.queued_at = Some(now_ms());
    NewJob {
        job: j,
        reserve: None,
        secret: Some(sealed.to_vec()),
    }
}

#[tokio::test]
async fn secrets_live_exactly_as_long_as_their_job() {
    for b in backends().await {
        b.run(|repos| async move {
            let a = account(&repos, "a@x.io", 10, None).await;
            let jobs = &repos.jobs;

            // finish (success and failure), cancel, and the give-up of claim.
            let batch: Vec<NewJob> = (0..4)
                .map(|i| queued_with_secret(a, &[i as u8; 8]))
                .collect();
            jobs.insert_jobs(&batch, None).await.unwrap();
            for (i, n) in batch.iter().enumerate() {
                assert_eq!(
                    jobs.job_secret(n.job.id).await.unwrap(),
                    Some(vec![i as u8; 8])
                );
            }
            assert!(jobs
                .replace_job_secret(batch[0].job.id, b"fresh")
                .await
                .unwrap());
            assert_eq!(
                jobs.job_secret(batch[0].job.id).await.unwrap().as_deref(),
                Some(&b"fresh"[..])
            );

            // Cancel the last one before anything is claimed.
            let last = batch[3].job.id;
            jobs.cancel(last, a).await.unwrap().unwrap();
            assert_eq!(jobs.job_secret(last).await.unwrap(), None);
            assert!(!jobs.replace_job_secret(last, b"late").await.unwrap());

            let first = jobs
                .claim("w", LEASE, 3, &ClaimFilter::any())
                .await
                .unwrap()
                .unwrap();
            let outcome = Outcome::Success {
                output_size: 1,
                duration_sec: Some(1.0),
                cost: convertrilo_core::Neu::ZERO,
                vmaf: None,
            };
            assert!(jobs.finish(first.id, "w", &outcome).await.unwrap());
            assert_eq!(jobs.job_secret(first.id).await.unwrap(), None);

            let second = jobs
                .claim("w", LEASE, 3, &ClaimFilter::any())
                .await
                .unwrap()
                .unwrap();
            // A worker that holds no lease cannot end the job, so its secrets stay.
            assert!(!jobs.finish(second.id, "other", &outcome).await.unwrap());
            assert!(jobs.job_secret(second.id).await.unwrap().is_some());
            let failed = Outcome::Failed {
                message: "no".into(),
            };
            assert!(jobs.finish(second.id, "w", &failed).await.unwrap());
            assert_eq!(jobs.job_secret(second.id).await.unwrap(), None);

            // The third is claimed by workers that die (leases of zero), until it is given up.
            let third = batch[2].job.id;
            for _ in 0..2 {
                let c = jobs
                    .claim("dying", std::time::Duration::ZERO, 2, &ClaimFilter::any())
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(c.id, third);
                assert!(jobs.job_secret(third).await.unwrap().is_some());
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            assert!(jobs
                .claim("w", LEASE, 2, &ClaimFilter::any())
                .await
                .unwrap()
                .is_none());
            let given_up = jobs.job(third, None).await.unwrap().unwrap();
            assert_eq!(given_up.status, JobStatus::Failed);
            assert_eq!(jobs.job_secret(third).await.unwrap(), None);
        })
        .await;
    }
}
