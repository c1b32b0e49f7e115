//! Concurrency beyond the ledger: idempotency keys claimed once, callbacks leased once, and
//! workers, owners and the unrunnable sweep acting on the same jobs at once without a
//! deadlock or a job ended twice. On PostgreSQL, also queue events reaching another process.

use super::{
    backends, job,
    ledger::{account, check, enqueue, failed, neu, new_job, success, whole},
    ledger_race::Rng,
    LEASE,
};
use convertrilo_core::{time::now_ms, JobStatus, Neu, UserId};
use convertrilo_db::*;
use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

fn claim_for(owner: UserId, key: &str) -> IdemClaim {
    IdemClaim {
        user_id: owner,
        key: key.into(),
        request_hash: "body".into(),
        attempt: uuid::Uuid::new_v4().to_string(),
    }
}

fn queued(owner: UserId) -> NewJob {
    let mut j = job(owner);
    j.status = JobStatus::Queued;
    j.queued_at = Some(now_ms());
    NewJob {
        job: j,
        reserve: Some(whole(1)),
        secret: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idempotency_key_is_claimed_once_under_concurrency() {
    for b in backends().await {
        b.run(|repos| async move {
            let a = account(&repos, "a@x.io", 10, None).await;
            let now = now_ms();
            // Fresh keys, and keys whose first holder died (its lock has passed).
            let mut dead = Vec::new();
            for round in 0..3 {
                let c = claim_for(a, &format!("taken-over-{round}"));
                let begun = repos.idempotency.begin(&c, now, now + 10, 0).await;
                assert_eq!(begun.unwrap(), IdemBegin::Started);
                dead.push(c);
            }
            for round in 0..3 {
                for (key, at) in [("fresh", now), ("taken-over", now + 20)] {
                    let key = format!("{key}-{round}");
                    let tasks: Vec<_> = (0..8)
                        .map(|_| {
                            let (repos, key) = (repos.clone(), key.clone());
                            tokio::spawn(async move {
                                let c = claim_for(a, &key);
                                let got = repos.idempotency.begin(&c, at, at + 60_000, 0).await;
                                (c, got.unwrap())
                            })
                        })
                        .collect();
                    let mut started = Vec::new();
                    for t in tasks {
                        match t.await.unwrap() {
                            (c, IdemBegin::Started) => started.push(c),
                            (_, IdemBegin::InProgress) => {}
                            (_, other) => panic!("{key}: {other:?}"),
                        }
                    }
                    assert_eq!(started.len(), 1, "{key}: one attempt holds the key");
                    let saved = IdempotentResponse {
                        claim: started.remove(0),
                        status: 200,
                        body: b"{}".to_vec(),
                    };
                    let inserted = repos.jobs.insert_jobs(&[queued(a)], Some(&saved)).await;
                    assert_eq!(inserted.unwrap(), Inserted::Done);
                }
            }
            for claim in dead {
                let late = IdempotentResponse {
                    claim,
                    status: 200,
                    body: vec![],
                };
                let inserted = repos.jobs.insert_jobs(&[queued(a)], Some(&late)).await;
                assert_eq!(
                    inserted.unwrap(),
                    Inserted::KeyLost,
                    "the dead holder's key"
                );
            }
            check(&repos, a).await;
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_dispatchers_lease_each_callback_once() {
    for b in backends().await {
        b.run(|repos| async move {
            let a = account(&repos, "a@x.io", 10, None).await;
            for _ in 0..20 {
                let mut j = job(a);
                j.callback_url = Some("http://127.0.0.1:9/cb".into());
                repos.jobs.insert_job(&j).await.unwrap();
                repos.jobs.cancel(j.id, a).await.unwrap();
            }
            let seen = Arc::new(Mutex::new(Vec::new()));
            let tasks: Vec<_> = (0..4)
                .map(|_| {
                    let (repos, seen) = (repos.clone(), seen.clone());
                    tokio::spawn(async move {
                        loop {
                            let now = now_ms();
                            let due = repos
                                .jobs
                                .due_callbacks(now, now + 60_000, 3)
                                .await
                                .unwrap();
                            if due.is_empty() {
                                break;
                            }
                            for c in due {
                                seen.lock().unwrap().push(c.id);
                                repos
                                    .jobs
                                    .callback_attempted(c.id, None, None)
                                    .await
                                    .unwrap();
                            }
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            let seen = seen.lock().unwrap().clone();
            let unique: HashSet<_> = seen.iter().collect();
            assert_eq!((seen.len(), unique.len()), (20, 20), "each callback once");
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_owners_and_sweeps_race_without_deadlock() {
    for b in backends().await {
        b.run(|repos| async move {
            let seed = now_ms() as u64 | 1;
            println!("seed {seed}");
            let a = account(&repos, "a@x.io", 100, None).await;
            let mut ids = Vec::new();
            for _ in 0..30 {
                let id = new_job(&repos, a).await;
                assert!(matches!(
                    enqueue(&repos, id, whole(1)).await,
                    Enqueued::Queued(_)
                ));
                ids.push(id);
            }
            // Workers claim, report progress, and finish, fail or hand back what they hold…
            let stop = Arc::new(AtomicBool::new(false));
            let workers: Vec<_> = (0..4u64)
                .map(|w| {
                    let (repos, stop) = (repos.clone(), stop.clone());
                    tokio::spawn(async move {
                        let mut rng = Rng(seed.wrapping_mul(w + 7) | 1);
                        let me = format!("w{w}");
                        let any = ClaimFilter::any();
                        loop {
                            let Some(j) = repos.jobs.claim(&me, LEASE, 3, &any).await.unwrap()
                            else {
                                if stop.load(Ordering::Relaxed) {
                                    break;
                                }
                                rng.pause(3).await;
                                continue;
                            };
                            for pct in [10.0, 60.0] {
                                let p = Progress {
                                    pct: Some(pct),
                                    encoder: None,
                                };
                                let beat = repos.jobs.heartbeat(j.id, &me, LEASE, &p).await;
                                if beat.unwrap() == Heartbeat::Lost {
                                    break;
                                }
                                rng.pause(3).await;
                            }
                            match rng.below(4) {
                                0 => {
                                    let back = HandBack::PassingError {
                                        reason: "race",
                                        backoff: super::NO_WAIT,
                                    };
                                    repos.jobs.release(j.id, &me, back).await.unwrap();
                                }
                                1 => {
                                    repos.jobs.finish(j.id, &me, &failed()).await.unwrap();
                                }
                                _ => {
                                    let done = success(neu(500));
                                    repos.jobs.finish(j.id, &me, &done).await.unwrap();
                                }
                            }
                        }
                    })
                })
                .collect();
            // …while the owner cancels a third of the jobs and a sweep fails another third
            // while they wait.
            let mut rng = Rng(seed);
            for (i, id) in ids.iter().enumerate() {
                rng.pause(4).await;
                match i % 3 {
                    0 => {
                        repos.jobs.cancel(*id, a).await.unwrap();
                    }
                    1 => {
                        repos.jobs.fail_queued(*id, "no worker").await.unwrap();
                    }
                    _ => {}
                }
            }
            stop.store(true, Ordering::Relaxed);
            for w in workers {
                w.await.unwrap();
            }
            for id in &ids {
                let j = repos.jobs.job(*id, None).await.unwrap().unwrap();
                assert!(j.status.is_terminal(), "{id} is {:?}", j.status);
                assert_eq!(repos.ledger.job_reserved(*id).await.unwrap(), Neu::ZERO);
            }
            assert_eq!(repos.jobs.queue_depth().await.unwrap(), 0);
            assert_eq!(check(&repos, a).await.reserved, Neu::ZERO);
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overlapping_batches_queue_each_job_once() {
    for b in backends().await {
        b.run(|repos| async move {
            let a = account(&repos, "a@x.io", 100, None).await;
            for round in 0..3 {
                let jobs: Vec<Job> = (0..8).map(|_| job(a)).collect();
                for j in &jobs {
                    repos.jobs.insert_job(j).await.unwrap();
                }
                let items: Vec<EnqueueItem> = jobs
                    .iter()
                    .map(|j| EnqueueItem {
                        id: j.id,
                        update: EstimateUpdate {
                            spec: j.spec.clone(),
                            output_filename: j.output_filename.clone(),
                            duration_sec: Some(60.0),
                            media_info: None,
                            per_minute: Some(whole(1)),
                            estimate: Some(whole(1)),
                        },
                        reserve: Some(whole(1)),
                    })
                    .collect();
                let reversed: Vec<_> = items.iter().rev().cloned().collect();
                let (one, two, three) = (repos.clone(), repos.clone(), repos.clone());
                let forward = tokio::spawn(async move { one.jobs.enqueue_many(&items).await });
                let backward = tokio::spawn(async move { two.jobs.enqueue_many(&reversed).await });
                // A single confirm and a cancel join in.
                let (confirmed, canceled) = (jobs[5].id, jobs[2].id);
                let single = tokio::spawn(async move {
                    three
                        .jobs
                        .enqueue(confirmed, None, 0, Some(whole(1)))
                        .await
                        .unwrap();
                    three.jobs.cancel(canceled, a).await.unwrap();
                });
                let (Ok(BatchEnqueued::Done(f)), Ok(BatchEnqueued::Done(r))) =
                    (forward.await.unwrap(), backward.await.unwrap())
                else {
                    panic!("round {round}: both batches fit")
                };
                single.await.unwrap();
                for (i, j) in jobs.iter().enumerate() {
                    let by_batches = usize::from(f[i].is_some()) + usize::from(r[7 - i].is_some());
                    assert!(by_batches <= 1, "round {round}: job {i} queued twice");
                    let status = repos.jobs.job(j.id, None).await.unwrap().unwrap().status;
                    let want = if j.id == canceled {
                        JobStatus::Canceled
                    } else {
                        JobStatus::Queued
                    };
                    assert_eq!(status, want, "round {round}: job {i}");
                }
                let waiting = 7 * (round + 1);
                assert_eq!(repos.jobs.queue_depth().await.unwrap(), waiting);
                assert_eq!(check(&repos, a).await.reserved, whole(waiting));
            }
        })
        .await;
    }
}

#[tokio::test]
async fn queue_events_reach_other_processes_on_postgres() {
    for b in backends().await {
        // SQLite has no cross-process notification: other processes find out by polling.
        if b.name != "PostgreSQL" {
            continue;
        }
        let url = b.url.clone();
        b.run(move |repos| async move {
            let other = connect(&url).await.unwrap();
            let (mut theirs, mut ours) = (other.events.subscribe(), repos.events.subscribe());
            let a = account(&repos, "a@x.io", 10, None).await;
            let id = new_job(&repos, a).await;
            assert!(matches!(
                enqueue(&repos, id, whole(1)).await,
                Enqueued::Queued(_)
            ));
            repos.jobs.cancel(id, a).await.unwrap();
            let within = Duration::from_secs(10);
            for want in [QueueEvent::Queued, QueueEvent::Canceled(id)] {
                let heard = tokio::time::timeout(within, theirs.recv()).await;
                assert_eq!(heard.expect("another process hears it").unwrap(), want);
                assert_eq!(ours.recv().await.unwrap(), want);
            }
            // A change that rolls back (an enqueue short of tokens) tells nobody, and this
            // process does not hear its own events a second time through the database.
            let big = new_job(&repos, a).await;
            let short = enqueue(&repos, big, whole(100)).await;
            assert!(matches!(short, Enqueued::Insufficient { .. }));
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(theirs.try_recv().is_err());
            assert!(ours.try_recv().is_err());
        })
        .await;
    }
}
