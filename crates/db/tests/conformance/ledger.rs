//! The NEU ledger: reservations on enqueue, settlement on finish, releases on cancel and
//! give-up, and the generic token moves. After every step the balance is recomputed from the
//! journal and checked (`check`, shared with the trial checks in `ledger_trial.rs` and the
//! concurrency run in `ledger_race.rs`).

use super::{backends, job, LEASE};
use convertrilo_core::{time::now_ms, JobId, JobStatus, Neu, UserId};
use convertrilo_db::*;
use std::{collections::HashMap, time::Duration};

pub(crate) fn neu(millis: i64) -> Neu {
    Neu::from_millis(millis)
}

pub(crate) fn whole(n: i64) -> Neu {
    Neu::from_whole(n)
}

pub(crate) async fn account(repos: &Repos, email: &str, paid: i64, trial: Option<Trial>) -> UserId {
    let u = User {
        id: UserId::new(),
        email: email.into(),
        password_hash: "x".into(),
        is_admin: false,
        banned: false,
        created_at: now_ms(),
    };
    let grant = (paid > 0).then(|| whole(paid));
    repos.accounts.create_user(&u, grant, trial).await.unwrap();
    u.id
}

pub(crate) async fn new_job(repos: &Repos, owner: UserId) -> JobId {
    let j = job(owner);
    repos.jobs.insert_job(&j).await.unwrap();
    j.id
}

pub(crate) async fn enqueue(repos: &Repos, id: JobId, reserve: Neu) -> Enqueued {
    repos
        .jobs
        .enqueue(id, None, 0, Some(reserve))
        .await
        .unwrap()
}

pub(crate) async fn sleep_past(at_ms: i64) {
    let wait = (at_ms + 5 - now_ms()).max(0);
    tokio::time::sleep(Duration::from_millis(wait as u64)).await;
}

pub(crate) fn success(cost: Neu) -> Outcome {
    Outcome::Success {
        output_size: 1,
        duration_sec: Some(1.0),
        cost,
        vmaf: None,
    }
}

pub(crate) fn failed() -> Outcome {
    Outcome::Failed {
        message: "boom".into(),
    }
}

/// Recomputes the account from its journal, compares it with `balance` and checks that no
/// part of any bucket, nor any job's reservation, is negative. Call it when nothing else is
/// writing to the account.
pub(crate) async fn check(repos: &Repos, user: UserId) -> Balance {
    let b = repos.ledger.balance(user, now_ms()).await.unwrap();
    let entries = repos.ledger.entries(user).await.unwrap();
    let mut sums: HashMap<(Bucket, EntryKind), i64> = HashMap::new();
    let mut per_job: HashMap<JobId, i64> = HashMap::new();
    for e in &entries {
        assert!(e.amount > Neu::ZERO, "{e:?}");
        *sums.entry((e.bucket, e.kind)).or_default() += e.amount.millis();
        let sign = match e.kind {
            EntryKind::Reserve => 1,
            EntryKind::Release | EntryKind::Deduct => -1,
            _ => 0,
        };
        if let Some(j) = e.job_id {
            *per_job.entry(j).or_default() += sign * e.amount.millis();
        }
    }
    let mut total = [0i64; 5];
    for (bucket, got) in [(Bucket::Trial, b.trial), (Bucket::Paid, b.paid)] {
        let s = |k| sums.get(&(bucket, k)).copied().unwrap_or(0);
        let reserved = s(EntryKind::Reserve) - s(EntryKind::Release) - s(EntryKind::Deduct);
        let (granted, spent, expired) = (
            s(EntryKind::Grant),
            s(EntryKind::Deduct),
            s(EntryKind::Expire),
        );
        let available = granted - reserved - spent - expired;
        let want = [granted, available, reserved, spent, expired];
        let seen = [
            got.granted,
            got.available,
            got.reserved,
            got.spent,
            got.expired,
        ]
        .map(Neu::millis);
        assert_eq!(seen, want, "{bucket:?} bucket vs journal");
        assert!(
            want.iter().all(|v| *v >= 0),
            "{bucket:?} overdrawn: {got:?}"
        );
        assert_eq!(available + reserved + spent + expired, granted);
        for (t, v) in total.iter_mut().zip(want) {
            *t += v;
        }
    }
    let seen = [b.granted, b.available, b.reserved, b.spent, b.expired].map(Neu::millis);
    assert_eq!(seen, total, "totals are the sum of the buckets");
    assert_eq!(b.trial_remaining, b.trial.available);
    for (j, held) in &per_job {
        assert!(*held >= 0, "job {j} holds {held}");
        assert_eq!(repos.ledger.job_reserved(*j).await.unwrap().millis(), *held);
    }
    if b.trial_expires_at.is_some_and(|at| at <= now_ms()) {
        assert_eq!(
            b.trial.available,
            Neu::ZERO,
            "a lapsed trial keeps nothing available"
        );
    }
    b
}

pub(crate) async fn entry_count(repos: &Repos, user: UserId) -> usize {
    repos.ledger.entries(user).await.unwrap().len()
}

#[tokio::test]
async fn reserve_on_enqueue_and_nothing_written_when_short() {
    for b in backends().await {
        b.run(|repos| async move {
            let a = account(&repos, "a@x.io", 10, None).await;
            let (j1, j2) = (new_job(&repos, a).await, new_job(&repos, a).await);
            assert!(matches!(
                enqueue(&repos, j1, whole(6)).await,
                Enqueued::Queued(_)
            ));
            let b = check(&repos, a).await;
            assert_eq!((b.available, b.reserved), (whole(4), whole(6)));

            let before = entry_count(&repos, a).await;
            assert_eq!(
                enqueue(&repos, j2, whole(5)).await,
                Enqueued::Insufficient {
                    required: whole(5),
                    available: whole(4)
                }
            );
            assert_eq!(
                entry_count(&repos, a).await,
                before,
                "nothing written when short"
            );
            let j2_row = repos.jobs.job(j2, None).await.unwrap().unwrap();
            assert_eq!(
                j2_row.status,
                JobStatus::Created,
                "the status change rolled back"
            );
            assert_eq!(repos.jobs.queue_depth().await.unwrap(), 1);
            assert_eq!(
                repos.ledger.reserve_for_job(a, j2, whole(5)).await.unwrap(),
                Reservation::Insufficient {
                    required: whole(5),
                    available: whole(4)
                }
            );
            assert_eq!(entry_count(&repos, a).await, before);
            check(&repos, a).await;

            // Reserving is idempotent per job: it tops up to the amount, never past it.
            let reserved = |added, held| Reservation::Reserved { added, held };
            assert_eq!(
                repos
                    .ledger
                    .reserve_for_job(a, j2, neu(2_500))
                    .await
                    .unwrap(),
                reserved(neu(2_500), neu(2_500))
            );
            assert_eq!(
                repos
                    .ledger
                    .reserve_for_job(a, j2, neu(2_500))
                    .await
                    .unwrap(),
                reserved(Neu::ZERO, neu(2_500)),
                "a retried reserve changes nothing"
            );
            assert_eq!(
                repos.ledger.reserve_for_job(a, j2, whole(4)).await.unwrap(),
                reserved(neu(1_500), whole(4))
            );
            assert_eq!(
                repos.ledger.reserve_for_job(a, j2, whole(1)).await.unwrap(),
                reserved(Neu::ZERO, whole(4)),
                "a smaller reserve does not shrink it"
            );
            // Enqueue tops up to the estimate: the job already holds it, so nothing more is drawn.
            assert!(matches!(
                enqueue(&repos, j2, whole(4)).await,
                Enqueued::Queued(_)
            ));
            let b = check(&repos, a).await;
            assert_eq!((b.available, b.reserved), (Neu::ZERO, whole(10)));
            assert_eq!(repos.ledger.job_reserved(j2).await.unwrap(), whole(4));

            // Zero-cost estimates queue without a reservation.
            let j3 = new_job(&repos, a).await;
            assert!(matches!(
                enqueue(&repos, j3, Neu::ZERO).await,
                Enqueued::Queued(_)
            ));
            check(&repos, a).await;
        })
        .await;
    }
}

#[tokio::test]
async fn token_moves_check_owner_amount_and_state() {
    for b in backends().await {
        b.run(|repos| async move {
            let a = account(&repos, "a@x.io", 10, None).await;
            let b = account(&repos, "b@x.io", 10, None).await;
            let j = new_job(&repos, a).await;
            let not_found = |r: DbResult<Reservation>| matches!(r, Err(DbError::NotFound(_)));
            assert!(not_found(
                repos.ledger.reserve_for_job(b, j, whole(1)).await
            ));
            assert!(not_found(
                repos
                    .ledger
                    .reserve_for_job(a, JobId::new(), whole(1))
                    .await
            ));
            assert!(matches!(
                repos.ledger.release_for_job(b, j, whole(1)).await,
                Err(DbError::NotFound(_))
            ));
            assert!(matches!(
                repos.ledger.deduct_for_job(b, j, whole(1)).await,
                Err(DbError::NotFound(_))
            ));
            assert!(matches!(
                repos.ledger.reserve_for_job(a, j, Neu::ZERO).await,
                Err(DbError::Invalid(_))
            ));
            assert!(matches!(
                repos.ledger.grant(UserId::new(), whole(1)).await,
                Err(DbError::NotFound(_))
            ));

            // Partial release and capped deduct through the generic moves.
            repos.ledger.reserve_for_job(a, j, whole(6)).await.unwrap();
            assert_eq!(
                repos.ledger.release_for_job(a, j, whole(2)).await.unwrap(),
                whole(2)
            );
            check(&repos, a).await;
            assert_eq!(
                repos.ledger.deduct_for_job(a, j, whole(3)).await.unwrap(),
                whole(3)
            );
            assert_eq!(
                repos.ledger.deduct_for_job(a, j, whole(5)).await.unwrap(),
                whole(1),
                "capped at what the job holds"
            );
            assert_eq!(
                repos.ledger.release_for_job(a, j, whole(1)).await.unwrap(),
                Neu::ZERO
            );
            let bal = check(&repos, a).await;
            assert_eq!(
                (bal.available, bal.reserved, bal.spent),
                (whole(6), Neu::ZERO, whole(4))
            );

            // An admin grant adds paid tokens.
            let after = repos.ledger.grant(a, neu(2_500)).await.unwrap();
            assert_eq!((after.granted, after.available), (neu(12_500), neu(8_500)));
            assert_eq!(check(&repos, a).await, after);

            // A finished job takes no new reservation.
            repos.jobs.cancel(j, a).await.unwrap();
            assert_eq!(
                repos.ledger.reserve_for_job(a, j, whole(1)).await.unwrap(),
                Reservation::Finished(JobStatus::Canceled)
            );
            check(&repos, a).await;
        })
        .await;
    }
}

#[tokio::test]
async fn success_deducts_the_cost_and_releases_the_rest() {
    for b in backends().await {
        b.run(|repos| async move {
            let a = account(&repos, "a@x.io", 10, None).await;
            let j = new_job(&repos, a).await;
            enqueue(&repos, j, whole(5)).await;
            repos
                .jobs
                .claim("w1", LEASE, 3, &ClaimFilter::any())
                .await
                .unwrap()
                .unwrap();
            // A finish by a worker that lost the lease moves nothing.
            assert!(!repos
                .jobs
                .finish(j, "w2", &success(whole(1)))
                .await
                .unwrap());
            assert_eq!(check(&repos, a).await.reserved, whole(5));
            assert!(repos
                .jobs
                .finish(j, "w1", &success(neu(3_200)))
                .await
                .unwrap());
            let b = check(&repos, a).await;
            assert_eq!(
                (b.spent, b.reserved, b.available),
                (neu(3_200), Neu::ZERO, neu(6_800))
            );
            assert_eq!(repos.ledger.job_reserved(j).await.unwrap(), Neu::ZERO);

            // A cost above the reservation is capped at it.
            let k = new_job(&repos, a).await;
            enqueue(&repos, k, whole(2)).await;
            repos
                .jobs
                .claim("w1", LEASE, 3, &ClaimFilter::any())
                .await
                .unwrap()
                .unwrap();
            assert!(repos
                .jobs
                .finish(k, "w1", &success(whole(5)))
                .await
                .unwrap());
            let b = check(&repos, a).await;
            assert_eq!((b.spent, b.available), (neu(5_200), neu(4_800)));
        })
        .await;
    }
}

#[tokio::test]
async fn failure_cancel_and_give_up_release_everything() {
    for b in backends().await {
        b.run(|repos| async move {
            let a = account(&repos, "a@x.io", 20, None).await;

            // Failed.
            let j = new_job(&repos, a).await;
            enqueue(&repos, j, whole(3)).await;
            repos
                .jobs
                .claim("w", LEASE, 3, &ClaimFilter::any())
                .await
                .unwrap()
                .unwrap();
            assert!(repos.jobs.finish(j, "w", &failed()).await.unwrap());
            assert_eq!(check(&repos, a).await.available, whole(20));

            // Canceled while queued, while running, and while created with a reservation.
            let queued = new_job(&repos, a).await;
            enqueue(&repos, queued, whole(3)).await;
            assert_eq!(
                repos
                    .jobs
                    .cancel(queued, a)
                    .await
                    .unwrap()
                    .map(|c| c.previous),
                Some(JobStatus::Queued)
            );
            assert_eq!(check(&repos, a).await.available, whole(20));
            let running = new_job(&repos, a).await;
            enqueue(&repos, running, whole(3)).await;
            repos
                .jobs
                .claim("w", LEASE, 3, &ClaimFilter::any())
                .await
                .unwrap()
                .unwrap();
            // Handing a job back keeps its reservation.
            let back = HandBack::PassingError {
                reason: "test hiccup",
                backoff: super::NO_WAIT,
            };
            repos.jobs.release(running, "w", back).await.unwrap();
            assert_eq!(check(&repos, a).await.reserved, whole(3));
            repos
                .jobs
                .claim("w", LEASE, 3, &ClaimFilter::any())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                repos
                    .jobs
                    .cancel(running, a)
                    .await
                    .unwrap()
                    .map(|c| c.previous),
                Some(JobStatus::Running)
            );
            assert!(!repos
                .jobs
                .finish(running, "w", &success(whole(3)))
                .await
                .unwrap());
            assert_eq!(check(&repos, a).await.available, whole(20));
            let created = new_job(&repos, a).await;
            repos
                .ledger
                .reserve_for_job(a, created, whole(4))
                .await
                .unwrap();
            assert_eq!(
                repos
                    .jobs
                    .cancel(created, a)
                    .await
                    .unwrap()
                    .map(|c| c.previous),
                Some(JobStatus::Created)
            );
            // Canceling again moves nothing.
            assert_eq!(
                repos
                    .jobs
                    .cancel(created, a)
                    .await
                    .unwrap()
                    .map(|c| c.previous),
                Some(JobStatus::Canceled)
            );
            let b = check(&repos, a).await;
            assert_eq!(
                (b.available, b.reserved, b.spent),
                (whole(20), Neu::ZERO, Neu::ZERO)
            );

            // Given up after too many attempts.
            let poison = new_job(&repos, a).await;
            enqueue(&repos, poison, whole(3)).await;
            let short = Duration::from_millis(30);
            repos
                .jobs
                .claim("w1", short, 1, &ClaimFilter::any())
                .await
                .unwrap()
                .unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(repos
                .jobs
                .claim("w2", short, 1, &ClaimFilter::any())
                .await
                .unwrap()
                .is_none());
            let p = repos.jobs.job(poison, None).await.unwrap().unwrap();
            assert_eq!(p.status, JobStatus::Failed);
            assert_eq!(check(&repos, a).await.available, whole(20));
        })
        .await;
    }
}
