//! Trial buckets: spent first, closed lazily once lapsed (exactly once), and reserved trial
//! tokens that outlive the trial can be spent but expire when released.

use super::{
    backends,
    ledger::{account, check, enqueue, entry_count, neu, new_job, sleep_past, success, whole},
    LEASE,
};
use convertrilo_core::{time::now_ms, JobStatus, Neu};
use convertrilo_db::*;
use std::time::Duration;

#[tokio::test]
async fn trial_tokens_are_reserved_and_spent_first() {
    for b in backends().await {
        b.run(|repos| async move {
            let far = now_ms() + 3_600_000;
            let trial = Trial {
                amount: whole(5),
                expires_at: far,
            };
            let a = account(&repos, "a@x.io", 10, Some(trial)).await;
            let b = check(&repos, a).await;
            assert_eq!(
                (b.granted, b.available, b.trial_remaining),
                (whole(15), whole(15), whole(5))
            );
            assert_eq!(b.trial_expires_at, Some(far));

            let j = new_job(&repos, a).await;
            assert!(matches!(
                enqueue(&repos, j, whole(7)).await,
                Enqueued::Queued(_)
            ));
            let b = check(&repos, a).await;
            assert_eq!((b.trial.reserved, b.paid.reserved), (whole(5), whole(2)));
            assert_eq!(b.trial_remaining, Neu::ZERO);

            repos
                .jobs
                .claim("w", LEASE, 3, &ClaimFilter::any())
                .await
                .unwrap()
                .unwrap();
            assert!(repos.jobs.finish(j, "w", &success(whole(6))).await.unwrap());
            let b = check(&repos, a).await;
            assert_eq!((b.trial.spent, b.paid.spent), (whole(5), whole(1)));
            assert_eq!((b.reserved, b.available), (Neu::ZERO, whole(9)));
        })
        .await;
    }
}

#[tokio::test]
async fn a_lapsed_trial_expires_lazily_and_exactly_once() {
    for b in backends().await {
        b.run(|repos| async move {
            let past = Trial {
                amount: whole(5),
                expires_at: now_ms() - 1,
            };
            let a = account(&repos, "a@x.io", 3, Some(past)).await;
            let before = entry_count(&repos, a).await;
            let b = check(&repos, a).await;
            assert_eq!(
                (b.trial.expired, b.available, b.trial_remaining),
                (whole(5), whole(3), Neu::ZERO)
            );
            assert_eq!(entry_count(&repos, a).await, before + 1, "one expire entry");
            check(&repos, a).await;
            assert_eq!(entry_count(&repos, a).await, before + 1, "and only one");
            let j = new_job(&repos, a).await;
            assert_eq!(
                enqueue(&repos, j, whole(4)).await,
                Enqueued::Insufficient {
                    required: whole(4),
                    available: whole(3)
                },
                "expired trial tokens cannot be reserved"
            );

            // A job-coupled move closes a lapsed trial too, before reserving.
            let soon = Trial {
                amount: whole(5),
                expires_at: now_ms() + 1,
            };
            let c = account(&repos, "c@x.io", 3, Some(soon)).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
            let j = new_job(&repos, c).await;
            assert!(matches!(
                enqueue(&repos, j, whole(2)).await,
                Enqueued::Queued(_)
            ));
            let b = check(&repos, c).await;
            assert_eq!(
                (b.trial.expired, b.paid.reserved, b.trial.reserved),
                (whole(5), whole(2), Neu::ZERO)
            );
        })
        .await;
    }
}

#[tokio::test]
async fn reserved_trial_tokens_survive_expiry_but_expire_when_released() {
    for b in backends().await {
        b.run(|repos| async move {
            // Long enough for the steps before the expiry on a busy machine.
            let trial = Trial {
                amount: whole(5),
                expires_at: now_ms() + 1_000,
            };
            let a = account(&repos, "a@x.io", 10, Some(trial)).await;
            let (canceled, spent) = (new_job(&repos, a).await, new_job(&repos, a).await);
            assert!(matches!(
                enqueue(&repos, canceled, whole(3)).await,
                Enqueued::Queued(_)
            ));
            // `spent` reserves while still created (manual moves apply only then)…
            assert!(matches!(
                repos
                    .ledger
                    .reserve_for_job(a, spent, whole(2))
                    .await
                    .unwrap(),
                Reservation::Reserved { .. }
            ));
            let b = check(&repos, a).await;
            assert_eq!((b.trial.reserved, b.trial.available), (whole(5), Neu::ZERO));
            // The worker takes `canceled` (queued first) before the trial ends.
            assert_eq!(
                repos
                    .jobs
                    .claim("w", LEASE, 3, &ClaimFilter::any())
                    .await
                    .unwrap()
                    .unwrap()
                    .id,
                canceled
            );
            // Release one trial token of `spent` before expiry: it returns to the trial bucket.
            assert_eq!(
                repos
                    .ledger
                    .release_for_job(a, spent, whole(1))
                    .await
                    .unwrap(),
                whole(1)
            );
            assert_eq!(check(&repos, a).await.trial.available, whole(1));
            // …and is queued holding the one token left (enqueue tops up to 1: nothing to add).
            assert!(matches!(
                enqueue(&repos, spent, whole(1)).await,
                Enqueued::Queued(_)
            ));
            assert!(
                matches!(
                    repos.ledger.release_for_job(a, spent, whole(1)).await,
                    Err(DbError::Invalid(_))
                ),
                "a queued job's reservation is the service's to settle"
            );
            assert!(
                now_ms() < trial.expires_at,
                "the machine is too slow for this test's timing"
            );

            sleep_past(trial.expires_at).await;
            let b = check(&repos, a).await;
            assert_eq!(
                (b.trial.expired, b.trial.reserved, b.trial.available),
                (whole(1), whole(4), Neu::ZERO),
                "the available part expired; the reserved part stays reserved"
            );

            // Releasing reserved trial tokens after expiry expires them.
            assert_eq!(
                repos
                    .jobs
                    .cancel(canceled, a)
                    .await
                    .unwrap()
                    .map(|c| c.previous),
                Some(JobStatus::Running)
            );
            let b = check(&repos, a).await;
            assert_eq!((b.trial.expired, b.trial.reserved), (whole(4), whole(1)));
            assert_eq!(b.available, whole(10), "paid tokens are untouched");
            let expire_for_job = repos
                .ledger
                .entries(a)
                .await
                .unwrap()
                .into_iter()
                .filter(|e| e.kind == EntryKind::Expire && e.job_id == Some(canceled))
                .count();
            assert_eq!(
                expire_for_job, 1,
                "the expiry names the release that caused it"
            );

            // Reserved trial tokens can still be spent after expiry.
            assert_eq!(
                repos
                    .jobs
                    .claim("w", LEASE, 3, &ClaimFilter::any())
                    .await
                    .unwrap()
                    .unwrap()
                    .id,
                spent
            );
            assert!(repos
                .jobs
                .finish(spent, "w", &success(neu(500)))
                .await
                .unwrap());
            let b = check(&repos, a).await;
            assert_eq!(
                (
                    b.trial.spent,
                    b.trial.expired,
                    b.trial.reserved,
                    b.trial.granted
                ),
                (neu(500), neu(4_500), Neu::ZERO, whole(5))
            );
            assert_eq!(b.available, whole(10));
        })
        .await;
    }
}
