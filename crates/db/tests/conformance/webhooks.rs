//! Managed webhooks: subscriptions scoped to their account and capped per account, messages
//! written with the job changes they report and handed out one per webhook, each job's in
//! order, and the log of attempts. The caps and the one-per-webhook rule are also checked
//! with creators and dispatchers racing each other.

use super::{
    backends, job,
    ledger::{account, success},
    LEASE,
};
use convertrilo_core::{time::now_ms, JobId, Neu, UserId};
use convertrilo_db::{webhooks::JOB_EVENTS, *};
use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

fn hook(owner: UserId, events: &[&str], created_at: i64) -> Webhook {
    Webhook {
        id: uuid::Uuid::now_v7(),
        user_id: owner,
        url: "http://127.0.0.1:9/hook".into(),
        events: events.iter().map(|e| e.to_string()).collect(),
        secret: "whsec_test".into(),
        is_active: true,
        failure_count: 0,
        last_triggered_at: None,
        last_failed_at: None,
        created_at,
    }
}

fn attempt(m: &DueMessage, success: bool, at: i64) -> Delivery {
    Delivery {
        id: uuid::Uuid::now_v7(),
        message_id: m.id.clone(),
        webhook_id: m.webhook.id,
        job_id: m.job.as_ref().map(|j| j.id),
        event: m.event.clone(),
        success,
        status_code: Some(if success { 200 } else { 500 }),
        duration_ms: Some(5),
        response_body: Some("ok".into()),
        error: (!success).then(|| "HTTP 500".into()),
        attempt: m.attempts + 1,
        next_retry_at: None,
        retried_at: None,
        created_at: at,
    }
}

/// Records an attempt at `m` made at `at` (the body sent is always "payload").
async fn record(repos: &Repos, m: &DueMessage, ok: bool, after: AfterAttempt, at: i64, off: bool) {
    repos
        .webhooks
        .record_attempt(&attempt(m, ok, at), "payload", after, off, 10)
        .await
        .unwrap();
}

fn events(due: &[DueMessage]) -> Vec<(uuid::Uuid, &str)> {
    due.iter()
        .map(|m| (m.webhook.id, m.event.as_str()))
        .collect()
}

/// Queues, runs and completes a new job of `owner`.
async fn complete_a_job(repos: &Repos, owner: UserId) -> JobId {
    let j = job(owner);
    repos.jobs.insert_job(&j).await.unwrap();
    repos.jobs.enqueue(j.id, None, 0, None).await.unwrap();
    let any = ClaimFilter::any();
    let c = repos
        .jobs
        .claim("w", LEASE, 3, &any)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.id, j.id);
    assert!(repos
        .jobs
        .finish(j.id, "w", &success(Neu::ZERO))
        .await
        .unwrap());
    j.id
}

#[tokio::test]
async fn subscriptions_are_scoped_limited_and_editable() {
    for b in backends().await {
        b.run(|repos| async move {
            let hooks = &repos.webhooks;
            let (a, b) = (
                account(&repos, "a@x.io", 0, None).await,
                account(&repos, "b@x.io", 0, None).await,
            );
            let now = now_ms();
            let h1 = hook(a, &["job.created"], now);
            let h2 = hook(a, &["job.completed"], now + 1);
            let h3 = hook(a, &["job.failed"], now + 2);
            assert!(hooks.create_webhook(&h1, 2).await.unwrap());
            assert!(hooks.create_webhook(&h2, 2).await.unwrap());
            assert!(
                !hooks.create_webhook(&h3, 2).await.unwrap(),
                "over the limit"
            );
            assert!(
                hooks
                    .create_webhook(&hook(b, &["job.created"], now), 2)
                    .await
                    .unwrap(),
                "the limit is per account"
            );
            assert_eq!(hooks.webhooks(a).await.unwrap(), [h1.clone(), h2.clone()]);
            assert_eq!(hooks.webhook(h1.id, a).await.unwrap(), Some(h1.clone()));
            assert_eq!(hooks.webhook(h1.id, b).await.unwrap(), None);

            let change = WebhookUpdate {
                url: Some("http://127.0.0.1:9/new".into()),
                events: Some(vec!["job.failed".into(), "job.canceled".into()]),
                is_active: Some(false),
            };
            assert_eq!(hooks.update_webhook(h1.id, b, &change).await.unwrap(), None);
            let changed = hooks
                .update_webhook(h1.id, a, &change)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                (
                    changed.url.as_str(),
                    changed.events.clone(),
                    changed.is_active
                ),
                (
                    "http://127.0.0.1:9/new",
                    change.events.clone().unwrap(),
                    false
                )
            );
            assert_eq!(
                (changed.secret.as_str(), changed.created_at),
                ("whsec_test", now)
            );
            let same = hooks
                .update_webhook(h1.id, a, &WebhookUpdate::default())
                .await
                .unwrap();
            assert_eq!(same, Some(changed), "an empty update changes nothing");

            assert!(!hooks.delete_webhook(h2.id, b).await.unwrap());
            assert!(hooks.delete_webhook(h2.id, a).await.unwrap());
            assert!(!hooks.delete_webhook(h2.id, a).await.unwrap());
            assert!(
                hooks.create_webhook(&h3, 2).await.unwrap(),
                "a deleted webhook frees its place"
            );
        })
        .await;
    }
}

#[tokio::test]
async fn messages_follow_job_changes_one_at_a_time_per_webhook() {
    for b in backends().await {
        b.run(|repos| async move {
            let hooks = repos.webhooks.clone();
            let a = account(&repos, "a@x.io", 10, None).await;
            let now = now_ms();
            let all = hook(a, &JOB_EVENTS, now);
            let done = hook(a, &["job.completed"], now + 1);
            let other = account(&repos, "b@x.io", 0, None).await;
            for h in [&all, &done, &hook(other, &JOB_EVENTS, now)] {
                assert!(hooks.create_webhook(h, 10).await.unwrap());
            }
            let j = complete_a_job(&repos, a).await;

            // Messages are due from the moment of their event.
            let now = now_ms();
            let lease = now + 60_000;
            let due = hooks.due_messages(now, lease, 10).await.unwrap();
            assert_eq!(
                events(&due),
                [(all.id, "job.created"), (done.id, "job.completed")],
                "one message per webhook, each job's oldest first; none for another account"
            );
            assert_eq!(due[0].job.as_ref().map(|j| j.id), Some(j));
            assert_eq!(
                (
                    due[0].status.as_deref(),
                    due[0].attempts,
                    due[0].payload.as_deref()
                ),
                (Some("created"), 0, None)
            );
            assert!(
                hooks.due_messages(now, lease, 10).await.unwrap().is_empty(),
                "both webhooks have an attempt in flight"
            );

            // Delivered: the job's next event is due.
            record(
                &repos,
                &due[0],
                true,
                AfterAttempt::Delivered,
                now + 1,
                false,
            )
            .await;
            let next = hooks.due_messages(now, lease, 10).await.unwrap();
            assert_eq!(events(&next), [(all.id, "job.queued")]);
            // Failed and retried later: the job's later events wait behind it.
            let retry_at = now + 1_000;
            record(
                &repos,
                &next[0],
                false,
                AfterAttempt::RetryAt(retry_at),
                now + 2,
                false,
            )
            .await;
            assert!(hooks.due_messages(now, lease, 10).await.unwrap().is_empty());
            let w = hooks.webhook(all.id, a).await.unwrap().unwrap();
            assert_eq!(
                (w.failure_count, w.last_failed_at, w.is_active),
                (1, Some(now + 2), true)
            );
            let retry = hooks.due_messages(retry_at, lease, 10).await.unwrap();
            assert_eq!(events(&retry), [(all.id, "job.queued")]);
            assert_eq!(
                (&retry[0].id, retry[0].attempts, retry[0].payload.as_deref()),
                (&next[0].id, 1, Some("payload")),
                "the same message, with the body of its first attempt"
            );
            // An abandoned attempt is due again at once.
            hooks.release_lease(&retry[0].id).await.unwrap();
            let again = hooks.due_messages(retry_at, lease, 10).await.unwrap();
            assert_eq!(again.len(), 1);
            assert_eq!(again[0].id, retry[0].id);
            record(
                &repos,
                &again[0],
                true,
                AfterAttempt::Delivered,
                now + 3,
                false,
            )
            .await;
            let w = hooks.webhook(all.id, a).await.unwrap().unwrap();
            assert_eq!(
                (w.failure_count, w.last_triggered_at),
                (0, Some(now + 3)),
                "a success resets the failures"
            );

            // A failure that disables the webhook: its messages wait while it is off.
            record(&repos, &due[1], false, AfterAttempt::GiveUp, now + 4, true).await;
            assert!(!hooks.webhook(done.id, a).await.unwrap().unwrap().is_active);
            let j2 = complete_a_job(&repos, a).await;
            let (later, mut at, mut sent) = (now + 5_000, now + 10, Vec::new());
            loop {
                let due = hooks.due_messages(later, later + 60_000, 10).await.unwrap();
                if due.is_empty() {
                    break;
                }
                assert_eq!(due.len(), 1, "only the active webhook is served");
                sent.push((due[0].job.as_ref().unwrap().id, due[0].event.clone()));
                at += 1;
                record(&repos, &due[0], true, AfterAttempt::Delivered, at, false).await;
            }
            let want: Vec<(JobId, String)> = [
                (j, "job.running"),
                (j, "job.completed"),
                (j2, "job.created"),
                (j2, "job.queued"),
                (j2, "job.running"),
                (j2, "job.completed"),
            ]
            .into_iter()
            .map(|(j, e)| (j, e.to_string()))
            .collect();
            assert_eq!(sent, want);
            let on = WebhookUpdate {
                is_active: Some(true),
                ..Default::default()
            };
            hooks
                .update_webhook(done.id, a, &on)
                .await
                .unwrap()
                .unwrap();
            let due = hooks.due_messages(later, later + 60_000, 10).await.unwrap();
            assert_eq!(events(&due), [(done.id, "job.completed")]);
            assert_eq!(
                due[0].job.as_ref().map(|j| j.id),
                Some(j2),
                "j's was given up"
            );

            // The log: newest first, and test deliveries too.
            let log = hooks.deliveries(all.id, 100).await.unwrap();
            assert_eq!(log.len(), 9);
            assert!(log.windows(2).all(|w| w[0].created_at > w[1].created_at));
            assert_eq!(log.iter().filter(|d| !d.success).count(), 1);
            assert_eq!(log[0].created_at, at);
            let mut test = attempt(&due[0], true, at + 100);
            test.webhook_id = all.id;
            test.message_id = "msg_test".into();
            test.job_id = None;
            test.event = "webhook.test".into();
            hooks.log_test_delivery(&test).await.unwrap();
            assert_eq!(hooks.deliveries(all.id, 1).await.unwrap(), [test]);
            let w = hooks.webhook(all.id, a).await.unwrap().unwrap();
            assert_eq!((w.last_triggered_at, w.failure_count), (Some(at + 100), 0));
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_webhook_limit_holds_under_concurrent_creations() {
    for b in backends().await {
        b.run(|repos| async move {
            for round in 0..3 {
                let a = account(&repos, &format!("a{round}@x.io"), 0, None).await;
                let tasks: Vec<_> = (0..12)
                    .map(|i| {
                        let repos = repos.clone();
                        tokio::spawn(async move {
                            let h = hook(a, &["job.created"], now_ms() + i);
                            repos.webhooks.create_webhook(&h, 5).await.unwrap()
                        })
                    })
                    .collect();
                let mut created = 0;
                for t in tasks {
                    created += usize::from(t.await.unwrap());
                }
                assert_eq!(created, 5, "round {round}");
                assert_eq!(repos.webhooks.webhooks(a).await.unwrap().len(), 5);
            }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_dispatchers_never_share_a_webhook_and_keep_job_order() {
    for b in backends().await {
        b.run(|repos| async move {
            let a = account(&repos, "a@x.io", 0, None).await;
            for i in 0..4 {
                let h = hook(a, &["job.created", "job.queued"], now_ms() + i);
                assert!(repos.webhooks.create_webhook(&h, 10).await.unwrap());
            }
            // Queued jobs emit job.created and job.queued: 4 webhooks × 6 jobs × 2 events.
            for _ in 0..6 {
                let mut j = job(a);
                j.status = convertrilo_core::JobStatus::Queued;
                repos.jobs.insert_job(&j).await.unwrap();
            }
            let expected = 48;
            let in_flight = Arc::new(Mutex::new(HashSet::new()));
            let sent = Arc::new(Mutex::new(Vec::new()));
            let deadline = now_ms() + 30_000;
            let tasks: Vec<_> = (0..4)
                .map(|_| {
                    let (repos, in_flight, sent) = (repos.clone(), in_flight.clone(), sent.clone());
                    tokio::spawn(async move {
                        while sent.lock().unwrap().len() < expected {
                            assert!(now_ms() < deadline, "dispatch stalled");
                            let now = now_ms();
                            let due = repos
                                .webhooks
                                .due_messages(now, now + 60_000, 3)
                                .await
                                .unwrap();
                            for m in &due {
                                assert!(
                                    in_flight.lock().unwrap().insert(m.webhook.id),
                                    "two messages of one webhook in flight"
                                );
                            }
                            // Hold the leases a moment, as a real delivery would.
                            tokio::time::sleep(Duration::from_millis(2)).await;
                            for m in &due {
                                let job = m.job.as_ref().unwrap().id;
                                sent.lock().unwrap().push((
                                    m.id.clone(),
                                    m.webhook.id,
                                    job,
                                    m.event.clone(),
                                ));
                                // Out of the set before the lease ends, so no false alarm.
                                in_flight.lock().unwrap().remove(&m.webhook.id);
                                let d = attempt(m, true, now_ms());
                                repos
                                    .webhooks
                                    .record_attempt(
                                        &d,
                                        "payload",
                                        AfterAttempt::Delivered,
                                        false,
                                        10,
                                    )
                                    .await
                                    .unwrap();
                            }
                            if due.is_empty() {
                                tokio::time::sleep(Duration::from_millis(2)).await;
                            }
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            let sent = sent.lock().unwrap().clone();
            assert_eq!(sent.len(), expected);
            let ids: HashSet<_> = sent.iter().map(|s| &s.0).collect();
            assert_eq!(ids.len(), expected, "each message sent once");
            let mut per_pair: HashMap<_, Vec<&str>> = HashMap::new();
            for (_, hook, job, event) in &sent {
                per_pair.entry((hook, job)).or_default().push(event);
            }
            assert!(
                per_pair
                    .values()
                    .all(|e| e == &["job.created", "job.queued"]),
                "each job's events in order: {per_pair:?}"
            );
        })
        .await;
    }
}
