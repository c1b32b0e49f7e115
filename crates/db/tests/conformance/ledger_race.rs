//! Many tasks enqueue with reservations, cancel, claim and finish against one account with
//! too few tokens for all of them, on a multi-threaded runtime: the account is never
//! overdrawn, and every job's reservation is taken once and settled once, exactly.

use super::{
    backends,
    ledger::{account, check, failed, neu, new_job, sleep_past, success, whole},
    LEASE,
};
use convertrilo_core::{time::now_ms, JobId, Neu};
use convertrilo_db::*;
use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

/// xorshift64*: enough randomness for interleavings, and the seed is printed to replay one.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
    pub(crate) async fn pause(&mut self, max_ms: u64) {
        tokio::time::sleep(Duration::from_millis(self.below(max_ms + 1))).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_moves_never_overdraw_and_settle_each_job_once() {
    for b in backends().await {
        b.run(|repos| async move {
            let seed = now_ms() as u64 | 1;
            println!("seed {seed}");
            // 50 jobs with 2–4 NEU estimates against 25 paid + 15 trial tokens: many but not all can
            // hold a reservation at once, and the trial lapses mid-run.
            let trial = Trial {
                amount: whole(15),
                expires_at: now_ms() + 150,
            };
            let a = account(&repos, "a@x.io", 25, Some(trial)).await;
            let mut ids = Vec::new();
            for _ in 0..50 {
                ids.push(new_job(&repos, a).await);
            }

            // Watches the balance while the tasks run: never overdrawn, the identity always holds.
            let stop = Arc::new(AtomicBool::new(false));
            let monitor = {
                let (repos, stop) = (repos.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut reads = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let b = repos.ledger.balance(a, now_ms()).await.unwrap();
                        for bb in [b.trial, b.paid] {
                            let parts = [bb.available, bb.reserved, bb.spent, bb.expired];
                            assert!(parts.iter().all(|p| *p >= Neu::ZERO), "overdrawn: {b:?}");
                            let sum: i64 = parts.iter().map(|p| p.millis()).sum();
                            assert_eq!(sum, bb.granted.millis());
                        }
                        reads += 1;
                        tokio::task::yield_now().await;
                    }
                    reads
                })
            };

            // What each job reserved on enqueue and what a successful finish charged.
            let estimates = Arc::new(Mutex::new(HashMap::<JobId, Neu>::new()));
            let short = Arc::new(AtomicUsize::new(0));
            let costs = Arc::new(Mutex::new(HashMap::<JobId, Neu>::new()));
            let mut tasks = Vec::new();
            for (i, id) in ids.iter().copied().enumerate() {
                let (repos, estimates, costs) = (repos.clone(), estimates.clone(), costs.clone());
                let short = short.clone();
                tasks.push(tokio::spawn(async move {
                    let mut rng = Rng(seed.wrapping_mul(i as u64 + 1) | 1);
                    let worker = format!("w{i}");
                    rng.pause(20).await;
                    let estimate = neu(2_000 + rng.below(2_001) as i64);
                    for _ in 0..4 {
                        match repos
                            .jobs
                            .enqueue(id, None, 0, Some(estimate))
                            .await
                            .unwrap()
                        {
                            Enqueued::Queued(_) => {
                                estimates.lock().unwrap().insert(id, estimate);
                                break;
                            }
                            Enqueued::Insufficient {
                                required,
                                available,
                            } => {
                                assert!(required > available);
                                short.fetch_add(1, Ordering::Relaxed);
                                rng.pause(15).await;
                            }
                            Enqueued::NotCreated => break,
                        }
                    }
                    rng.pause(10).await;
                    if rng.below(3) == 0 {
                        repos.jobs.cancel(id, a).await.unwrap();
                        return;
                    }
                    // Claim whatever is next (not necessarily this task's job) and finish it.
                    let Some(claimed) = repos
                        .jobs
                        .claim(&worker, LEASE, 3, &ClaimFilter::any())
                        .await
                        .unwrap()
                    else {
                        return;
                    };
                    rng.pause(10).await;
                    if rng.below(4) == 0 {
                        // Its owner cancels it mid-encode; the worker's finish then moves nothing.
                        repos.jobs.cancel(claimed.id, a).await.unwrap();
                    }
                    let outcome = if rng.below(4) == 0 {
                        failed()
                    } else {
                        success(neu(rng.below(5_001) as i64))
                    };
                    let done = repos
                        .jobs
                        .finish(claimed.id, &worker, &outcome)
                        .await
                        .unwrap();
                    if let (true, Outcome::Success { cost, .. }) = (done, outcome) {
                        costs.lock().unwrap().insert(claimed.id, cost);
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            // Settle what is left: finish the queued jobs, cancel the ones never queued.
            while let Some(j) = repos
                .jobs
                .claim("drain", LEASE, 3, &ClaimFilter::any())
                .await
                .unwrap()
            {
                let cost = whole(1);
                assert!(repos
                    .jobs
                    .finish(j.id, "drain", &success(cost))
                    .await
                    .unwrap());
                costs.lock().unwrap().insert(j.id, cost);
            }
            for id in &ids {
                repos.jobs.cancel(*id, a).await.unwrap();
            }
            stop.store(true, Ordering::Relaxed);
            assert!(monitor.await.unwrap() > 0);
            sleep_past(trial.expires_at).await;

            let b = check(&repos, a).await;
            let (estimates, costs) = (
                estimates.lock().unwrap().clone(),
                costs.lock().unwrap().clone(),
            );
            println!(
                "{} reserved, {} refused for want of tokens, {} charged, {b:?}",
                estimates.len(),
                short.load(Ordering::Relaxed),
                costs.len()
            );
            let entries = repos.ledger.entries(a).await.unwrap();
            let mut want_spent = 0;
            for id in &ids {
                let job = repos.jobs.job(*id, None).await.unwrap().unwrap();
                assert!(job.status.is_terminal(), "{id} is {:?}", job.status);
                let sum = |kind| -> i64 {
                    entries
                        .iter()
                        .filter(|e| e.job_id == Some(*id) && e.kind == kind)
                        .map(|e| e.amount.millis())
                        .sum()
                };
                let reserved = estimates.get(id).map_or(0, |e| e.millis());
                let spent = costs.get(id).map_or(0, |c| c.millis().min(reserved));
                assert_eq!(sum(EntryKind::Reserve), reserved, "job {id} reserved once");
                assert_eq!(sum(EntryKind::Deduct), spent, "job {id} charged once");
                assert_eq!(
                    sum(EntryKind::Release),
                    reserved - spent,
                    "job {id} released once"
                );
                want_spent += spent;
            }
            assert_eq!(b.reserved, Neu::ZERO);
            assert_eq!(b.spent.millis(), want_spent);
            assert_eq!(
                b.trial.available,
                Neu::ZERO,
                "the trial lapsed during the run"
            );
            assert_eq!(
                b.available.millis() + b.spent.millis() + b.expired.millis(),
                whole(40).millis()
            );
        })
        .await;
    }
}
