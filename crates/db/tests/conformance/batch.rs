//! Batches, idempotency keys and the callback outbox: inserts and queues that are all or
//! nothing, responses saved with the work they describe, callbacks queued with the state
//! change that causes them.

use super::{
    backends, job,
    ledger::{account, check, whole},
    LEASE,
};
use convertrilo_core::{time::now_ms, JobId, JobStatus, Neu};
use convertrilo_db::*;

fn queued(owner: convertrilo_core::UserId, reserve: Option<Neu>) -> NewJob {
    let mut j = job(owner);
    j.status = JobStatus::Queued;
    j.queued_at = Some(now_ms());
    NewJob {
        job: j,
        reserve,
        secret: None,
    }
}

fn claim_for(owner: convertrilo_core::UserId, key: &str, body: &str) -> IdemClaim {
    IdemClaim {
        user_id: owner,
        key: key.into(),
        request_hash: body.into(),
        attempt: uuid::Uuid::new_v4().to_string(),
    }
}

#[tokio::test]
async fn a_batch_is_inserted_and_reserved_all_or_nothing() {
    for b in backends().await {
        b.run(|repos| async move {
            let a = account(&repos, "a@x.io", 10, None).await;
            // 3 × 4 NEU does not fit 10: nothing is written.
            let batch: Vec<NewJob> = (0..3).map(|_| queued(a, Some(whole(4)))).collect();
            assert_eq!(
                repos.jobs.insert_jobs(&batch, None).await.unwrap(),
                Inserted::Insufficient {
                    required: whole(12),
                    available: whole(10)
                }
            );
            for n in &batch {
                assert!(repos.jobs.job(n.job.id, None).await.unwrap().is_none());
            }
            assert_eq!(repos.jobs.queue_depth().await.unwrap(), 0);
            check(&repos, a).await;
            // 2 × 4 plus one created job fits.
            let mut batch: Vec<NewJob> = (0..2).map(|_| queued(a, Some(whole(4)))).collect();
            batch.push(NewJob {
                job: job(a),
                reserve: None,
                secret: None,
            });
            assert_eq!(
                repos.jobs.insert_jobs(&batch, None).await.unwrap(),
                Inserted::Done
            );
            assert_eq!(repos.jobs.queue_depth().await.unwrap(), 2);
            assert_eq!(
                repos.ledger.job_reserved(batch[0].job.id).await.unwrap(),
                whole(4)
            );
            let b = repos.ledger.balance(a, now_ms()).await.unwrap();
            assert_eq!((b.available, b.reserved), (whole(2), whole(8)));
            check(&repos, a).await;

            // Read back in the caller's order; another account's ids are left out.
            let other = account(&repos, "b@x.io", 0, None).await;
            let ids: Vec<JobId> = vec![batch[2].job.id, JobId::new(), batch[0].job.id];
            let found = repos.jobs.jobs_by_ids(&ids, a).await.unwrap();
            assert_eq!(
                found.iter().map(|j| j.id).collect::<Vec<_>>(),
                [batch[2].job.id, batch[0].job.id]
            );
            assert!(repos
                .jobs
                .jobs_by_ids(&ids, other)
                .await
                .unwrap()
                .is_empty());
        })
        .await;
    }
}

#[tokio::test]
async fn enqueue_many_queues_what_is_still_created_or_nothing() {
    for b in backends().await {
        b.run(|repos| async move {
            let a = account(&repos, "a@x.io", 10, None).await;
            let jobs: Vec<Job> = (0..3).map(|_| job(a)).collect();
            for j in &jobs {
                repos.jobs.insert_job(j).await.unwrap();
            }
            repos.jobs.cancel(jobs[2].id, a).await.unwrap();
            let item = |j: &Job, reserve: i64| EnqueueItem {
                id: j.id,
                update: EstimateUpdate {
                    spec: j.spec.clone(),
                    output_filename: j.output_filename.clone(),
                    duration_sec: Some(60.0),
                    media_info: None,
                    per_minute: Some(whole(reserve)),
                    estimate: Some(whole(reserve)),
                },
                reserve: Some(whole(reserve)),
            };
            let too_much = [item(&jobs[0], 6), item(&jobs[1], 6), item(&jobs[2], 6)];
            assert_eq!(
                repos.jobs.enqueue_many(&too_much).await.unwrap(),
                BatchEnqueued::Insufficient {
                    required: whole(12),
                    available: whole(10)
                }
            );
            assert_eq!(
                repos
                    .jobs
                    .job(jobs[0].id, None)
                    .await
                    .unwrap()
                    .unwrap()
                    .status,
                JobStatus::Created,
                "nothing changed"
            );
            // The canceled job's share is not counted: 5 + 5 fits.
            let fits = [item(&jobs[0], 5), item(&jobs[1], 5), item(&jobs[2], 5)];
            let BatchEnqueued::Done(done) = repos.jobs.enqueue_many(&fits).await.unwrap() else {
                panic!("should fit")
            };
            assert!(done[0].is_some() && done[1].is_some() && done[2].is_none());
            assert_eq!(done[0].as_ref().unwrap().estimate, Some(whole(5)));
            assert_eq!(repos.jobs.queue_depth().await.unwrap(), 2);
            let b = repos.ledger.balance(a, now_ms()).await.unwrap();
            assert_eq!((b.available, b.reserved), (whole(0), whole(10)));
            check(&repos, a).await;
        })
        .await;
    }
}

#[tokio::test]
async fn idempotency_keys_replay_conflict_and_hand_over() {
    for b in backends().await {
        b.run(|repos| async move {
            let a = account(&repos, "a@x.io", 10, None).await;
            let now = now_ms();
            let idem = &repos.idempotency;
            let first = claim_for(a, "k1", "body-1");
            assert_eq!(
                idem.begin(&first, now, now + 60_000, 0).await.unwrap(),
                IdemBegin::Started
            );
            // While the first is at work: the same body waits, another body conflicts.
            let retry = claim_for(a, "k1", "body-1");
            assert_eq!(
                idem.begin(&retry, now, now + 60_000, 0).await.unwrap(),
                IdemBegin::InProgress
            );
            assert_eq!(
                idem.begin(&claim_for(a, "k1", "body-2"), now, now + 60_000, 0)
                    .await
                    .unwrap(),
                IdemBegin::Conflict
            );
            // Keys are per account.
            let b = account(&repos, "b@x.io", 0, None).await;
            assert_eq!(
                idem.begin(&claim_for(b, "k1", "body-9"), now, now + 60_000, 0)
                    .await
                    .unwrap(),
                IdemBegin::Started
            );
            // The response is saved with the job; only the holder can save it.
            let n = queued(a, Some(whole(3)));
            let lost = IdempotentResponse {
                claim: retry.clone(),
                status: 200,
                body: b"other".to_vec(),
            };
            assert_eq!(
                repos
                    .jobs
                    .insert_jobs(std::slice::from_ref(&n), Some(&lost))
                    .await
                    .unwrap(),
                Inserted::KeyLost
            );
            assert!(repos.jobs.job(n.job.id, None).await.unwrap().is_none());
            let saved = IdempotentResponse {
                claim: first.clone(),
                status: 200,
                body: b"{\"jobId\":1}".to_vec(),
            };
            assert_eq!(
                repos
                    .jobs
                    .insert_jobs(std::slice::from_ref(&n), Some(&saved))
                    .await
                    .unwrap(),
                Inserted::Done
            );
            assert_eq!(
                idem.begin(&retry, now, now + 60_000, 0).await.unwrap(),
                IdemBegin::Replay {
                    status: 200,
                    body: b"{\"jobId\":1}".to_vec()
                }
            );
            // A 402 leaves neither job nor saved response: the caller abandons the key.
            let k2 = claim_for(a, "k2", "body-3");
            idem.begin(&k2, now, now + 60_000, 0).await.unwrap();
            let short = IdempotentResponse {
                claim: k2.clone(),
                status: 200,
                body: vec![],
            };
            let big = queued(a, Some(whole(100)));
            assert!(matches!(
                repos.jobs.insert_jobs(&[big], Some(&short)).await.unwrap(),
                Inserted::Insufficient { .. }
            ));
            idem.abandon(&k2).await.unwrap();
            assert_eq!(
                idem.begin(&claim_for(a, "k2", "body-4"), now, now + 60_000, 0)
                    .await
                    .unwrap(),
                IdemBegin::Started,
                "an abandoned key is free for a corrected request"
            );
            // A claim whose lock passed (its process died) is taken over by the same request; the
            // old holder can then no longer save its response.
            let k3 = claim_for(a, "k3", "body-5");
            idem.begin(&k3, now, now + 10, 0).await.unwrap();
            let k3b = claim_for(a, "k3", "body-5");
            assert_eq!(
                idem.begin(&k3b, now + 20, now + 60_000, 0).await.unwrap(),
                IdemBegin::Started
            );
            let late = IdempotentResponse {
                claim: k3,
                status: 200,
                body: vec![],
            };
            assert_eq!(
                repos
                    .jobs
                    .insert_jobs(&[queued(a, None)], Some(&late))
                    .await
                    .unwrap(),
                Inserted::KeyLost
            );
            // Expired answered keys count as unused and are swept.
            assert_eq!(
                idem.begin(
                    &claim_for(a, "k1", "body-7"),
                    now + 5,
                    now + 60_000,
                    now + 1
                )
                .await
                .unwrap(),
                IdemBegin::Started,
                "a key older than the retention is reused"
            );
            assert!(idem.sweep(now + 100_000, now + 100_000).await.unwrap() >= 1);
            check(&repos, a).await;
        })
        .await;
    }
}

#[tokio::test]
async fn callbacks_are_queued_with_the_end_of_the_job_and_leased() {
    for b in backends().await {
        b.run(|repos| async move {
            let a = account(&repos, "a@x.io", 10, None).await;
            let mut with_cb = queued(a, None);
            with_cb.job.callback_url = Some("http://127.0.0.1:9/cb".into());
            let mut canceled = job(a);
            canceled.callback_url = Some("http://127.0.0.1:9/cb".into());
            let plain = queued(a, None);
            repos
                .jobs
                .insert_jobs(
                    &[
                        with_cb.clone(),
                        NewJob {
                            job: canceled.clone(),
                            reserve: None,
                            secret: None,
                        },
                        plain.clone(),
                    ],
                    None,
                )
                .await
                .unwrap();
            assert!(repos
                .jobs
                .due_callbacks(now_ms(), now_ms() + 60_000, 10)
                .await
                .unwrap()
                .is_empty());
            repos.jobs.cancel(canceled.id, a).await.unwrap();
            for _ in 0..2 {
                let c = repos
                    .jobs
                    .claim("w", LEASE, 3, &ClaimFilter::any())
                    .await
                    .unwrap()
                    .unwrap();
                repos
                    .jobs
                    .finish(
                        c.id,
                        "w",
                        &Outcome::Failed {
                            message: "x".into(),
                        },
                    )
                    .await
                    .unwrap();
            }
            let now = now_ms();
            let due = repos
                .jobs
                .due_callbacks(now, now + 60_000, 10)
                .await
                .unwrap();
            let events: Vec<(JobId, &str)> =
                due.iter().map(|c| (c.job.id, c.event.as_str())).collect();
            assert_eq!(
                events,
                [
                    (canceled.id, "job.canceled"),
                    (with_cb.job.id, "job.failed")
                ],
                "one per job with a callback URL, none for the job without"
            );
            // Leased: a second dispatcher sees nothing until the lease passes.
            assert!(repos
                .jobs
                .due_callbacks(now, now + 60_000, 10)
                .await
                .unwrap()
                .is_empty());
            repos
                .jobs
                .callback_attempted(due[0].id, Some("HTTP 500"), Some(now + 5))
                .await
                .unwrap();
            repos
                .jobs
                .callback_attempted(due[1].id, None, None)
                .await
                .unwrap();
            let again = repos
                .jobs
                .due_callbacks(now + 10, now + 60_000, 10)
                .await
                .unwrap();
            assert_eq!(again.len(), 1);
            assert_eq!((again[0].id, again[0].attempts), (due[0].id, 1));
            repos
                .jobs
                .callback_attempted(again[0].id, Some("HTTP 500"), None)
                .await
                .unwrap();
            assert!(
                repos
                    .jobs
                    .due_callbacks(now + 100_000, now + 200_000, 10)
                    .await
                    .unwrap()
                    .is_empty(),
                "given up"
            );
        })
        .await;
    }
}

#[tokio::test]
async fn ended_jobs_give_up_their_sources_and_expired_outputs() {
    for b in backends().await {
        b.run(|repos| async move {
            let a = account(&repos, "a@x.io", 10, None).await;
            // An uploaded job that succeeds with a one-hour output expiry, and one still queued.
            let mut done = queued(a, None);
            done.job.input_size = Some(10);
            done.job.output_expiry_secs = Some(3600);
            let mut waiting = queued(a, None);
            waiting.job.input_size = Some(10);
            repos
                .jobs
                .insert_jobs(&[done.clone(), waiting.clone()], None)
                .await
                .unwrap();
            let c = repos
                .jobs
                .claim("w", LEASE, 3, &ClaimFilter::any())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(c.id, done.job.id);
            repos
                .jobs
                .finish(c.id, "w", &super::ledger::success(Neu::ZERO))
                .await
                .unwrap();
            let now = now_ms();
            let due = repos.jobs.purgeable(now, 10).await.unwrap();
            assert_eq!(
                due,
                [Purge {
                    job_id: done.job.id,
                    input_key: Some(done.job.input_key.clone()),
                    output_key: None
                }],
                "the source of the ended job only; the output is not expired and the queued job is untouched"
            );
            repos.jobs.mark_purged(&due[0], now).await.unwrap();
            assert!(repos.jobs.purgeable(now, 10).await.unwrap().is_empty());
            let later = now + 3_601_000;
            let due = repos.jobs.purgeable(later, 10).await.unwrap();
            assert_eq!(due.len(), 1);
            assert_eq!(
                (due[0].input_key.as_deref(), due[0].output_key.as_deref()),
                (None, Some(done.job.output_key.as_str()))
            );
            repos.jobs.mark_purged(&due[0], later).await.unwrap();
            assert!(repos.jobs.purgeable(later, 10).await.unwrap().is_empty());
            let j = repos.jobs.job(done.job.id, None).await.unwrap().unwrap();
            assert_eq!(j.output_purged_at, Some(later));
        })
        .await;
    }
}
