//! Sign-in state: API keys listed and revoked per account, bans, and refresh tokens that
//! rotate once, so a replayed token revokes its whole family (also when the same token is
//! presented many times at once).

use super::{backends, ledger::account};
use convertrilo_core::{time::now_ms, ApiKeyId, Scope, UserId};
use convertrilo_db::*;

fn key(owner: UserId, created_at: i64) -> ApiKey {
    ApiKey {
        id: ApiKeyId::new(),
        user_id: owner,
        name: "k".into(),
        prefix: "cvt_abc".into(),
        scopes: vec![Scope::JobsRead],
        expires_at: None,
        revoked_at: None,
        created_at,
    }
}

fn token(owner: UserId, family: uuid::Uuid, hash: &str, expires_at: i64) -> RefreshToken {
    RefreshToken {
        id: uuid::Uuid::new_v4(),
        user_id: owner,
        family_id: family,
        token_hash: hash.into(),
        expires_at,
        created_at: now_ms(),
    }
}

#[tokio::test]
async fn api_keys_bans_and_refresh_tokens() {
    for b in backends().await {
        b.run(|repos| async move {
            let auth = &repos.auth;
            let (a, b) = (
                account(&repos, "a@x.io", 0, None).await,
                account(&repos, "b@x.io", 0, None).await,
            );
            let now = now_ms();
            let (k1, k2) = (key(a, now), key(a, now + 1));
            repos.accounts.create_api_key(&k1, "h1").await.unwrap();
            repos.accounts.create_api_key(&k2, "h2").await.unwrap();
            assert_eq!(
                auth.list_api_keys(a).await.unwrap(),
                [k2.clone(), k1.clone()]
            );
            assert!(auth.list_api_keys(b).await.unwrap().is_empty());
            assert!(!auth.revoke_api_key(b, k1.id, now).await.unwrap());
            assert!(auth.revoke_api_key(a, k1.id, now).await.unwrap());
            assert!(!auth.revoke_api_key(a, k1.id, now).await.unwrap());
            assert_eq!(auth.list_api_keys(a).await.unwrap(), [k2]);
            let (revoked, _) = repos.accounts.api_key_by_hash("h1").await.unwrap().unwrap();
            assert_eq!(revoked.revoked_at, Some(now));

            assert!(auth.set_banned(a, true).await.unwrap());
            assert!(repos.accounts.user(a).await.unwrap().unwrap().banned);
            assert!(!auth.set_banned(UserId::new(), true).await.unwrap());

            let later = now + 60_000;
            let family = uuid::Uuid::new_v4();
            auth.store_refresh_token(&token(a, family, "r1", later))
                .await
                .unwrap();
            assert_eq!(
                auth.rotate_refresh_token("r1", &token(a, family, "r2", later), now)
                    .await
                    .unwrap(),
                Rotation::Rotated { user_id: a }
            );
            assert_eq!(
                auth.rotate_refresh_token("r1", &token(a, family, "r3", later), now)
                    .await
                    .unwrap(),
                Rotation::Reused,
                "a used token presented again"
            );
            assert_eq!(
                auth.rotate_refresh_token("r2", &token(a, family, "r4", later), now)
                    .await
                    .unwrap(),
                Rotation::Invalid,
                "the replay revoked the whole family"
            );
            assert_eq!(
                auth.rotate_refresh_token("nope", &token(a, family, "r5", later), now)
                    .await
                    .unwrap(),
                Rotation::Invalid
            );
            let old = uuid::Uuid::new_v4();
            auth.store_refresh_token(&token(a, old, "r6", now - 1))
                .await
                .unwrap();
            assert_eq!(
                auth.rotate_refresh_token("r6", &token(a, old, "r7", later), now)
                    .await
                    .unwrap(),
                Rotation::Invalid,
                "expired"
            );

            // Logout revokes the family.
            let login = uuid::Uuid::new_v4();
            auth.store_refresh_token(&token(b, login, "s1", later))
                .await
                .unwrap();
            assert!(auth.revoke_refresh_family("s1", now).await.unwrap());
            assert!(!auth.revoke_refresh_family("unknown", now).await.unwrap());
            assert_eq!(
                auth.rotate_refresh_token("s1", &token(b, login, "s2", later), now)
                    .await
                    .unwrap(),
                Rotation::Invalid
            );
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refresh_token_rotates_once_under_concurrency() {
    for b in backends().await {
        b.run(|repos| async move {
            let a = account(&repos, "a@x.io", 0, None).await;
            for round in 0..3 {
                let (now, family) = (now_ms(), uuid::Uuid::new_v4());
                let first = format!("t{round}");
                repos
                    .auth
                    .store_refresh_token(&token(a, family, &first, now + 60_000))
                    .await
                    .unwrap();
                let tasks: Vec<_> = (0..8)
                    .map(|i| {
                        let (repos, first) = (repos.clone(), first.clone());
                        tokio::spawn(async move {
                            let next = token(a, family, &format!("t{round}-{i}"), now + 60_000);
                            repos
                                .auth
                                .rotate_refresh_token(&first, &next, now)
                                .await
                                .unwrap()
                        })
                    })
                    .collect();
                let mut outcomes = Vec::new();
                for t in tasks {
                    outcomes.push(t.await.unwrap());
                }
                let rotated = outcomes
                    .iter()
                    .filter(|o| matches!(o, Rotation::Rotated { .. }))
                    .count();
                assert_eq!(rotated, 1, "round {round}: {outcomes:?}");
                assert!(
                    outcomes
                        .iter()
                        .all(|o| matches!(o, Rotation::Rotated { .. } | Rotation::Reused)),
                    "round {round}: {outcomes:?}"
                );
            }
        })
        .await;
    }
}
