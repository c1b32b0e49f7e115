//! Sessions, API key management, bans, scopes, rate limits and body limits.

use crate::helpers::*;
use convertrilo_core::{time::now_ms, ApiKeyId, Scope, WireEnum};
use convertrilo_server::accounts;
use serde_json::{json, Value};

async fn send(req: reqwest::RequestBuilder) -> (u16, Value, reqwest::header::HeaderMap) {
    let r = req.send().await.unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    (status, r.json().await.unwrap_or(Value::Null), headers)
}

async fn login(app: &TestApp, email: &str, password: &str) -> (u16, Value) {
    let (s, b, _) = send(
        app.client
            .post(app.url("/auth/login"))
            .json(&json!({"email": email, "password": password})),
    )
    .await;
    (s, b)
}

#[tokio::test]
async fn password_sessions_and_key_management() {
    let app = spawn_app().await;
    let repos = &app.app_state.repos;
    accounts::create_user(repos, "dev@example.com", "correct horse", false, None, None)
        .await
        .unwrap();

    let (s, b) = login(&app, "dev@example.com", "wrong horse!").await;
    assert_eq!((s, b["code"].as_str()), (401, Some("invalid_credentials")));
    let (s2, b2) = login(&app, "nobody@example.com", "correct horse").await;
    assert_eq!(
        (s2, &b2["message"]),
        (401, &b["message"]),
        "unknown emails look the same as wrong passwords"
    );
    let (s, b, _) = send(
        app.client
            .post(app.url("/auth/login"))
            .json(&json!({"email": 5})),
    )
    .await;
    assert_eq!((s, b["code"].as_str()), (400, Some("invalid_body")));
    assert_eq!(b["issues"].as_array().unwrap().len(), 2);

    let (s, tokens) = login(&app, "DEV@example.com", "correct horse").await;
    assert_eq!(s, 200, "{tokens}");
    let bearer = format!("Bearer {}", tokens["accessToken"].as_str().unwrap());
    let (s, job, _) = send(
        app.client
            .post(app.url("/jobs"))
            .header("Authorization", &bearer)
            .json(&job_spec("h264", "720p", 30, "mp4")),
    )
    .await;
    assert_eq!(s, 200, "a login token works on job routes: {job}");
    let (s, b, _) = send(
        app.client
            .get(app.url("/jobs/x/status"))
            .header("Authorization", "Bearer not.a.jwt"),
    )
    .await;
    assert_eq!((s, b["code"].as_str()), (401, Some("invalid_api_key")));

    // API keys: Bearer only; the raw key once.
    let (s, b, _) = send(
        app.client
            .get(app.url("/api-keys"))
            .header("X-API-Key", &app.api_key),
    )
    .await;
    assert_eq!((s, b["code"].as_str()), (403, Some("forbidden")));
    let (s, b, _) = send(
        app.client
            .post(app.url("/api-keys"))
            .header("Authorization", &bearer)
            .json(&json!({"scopes": ["jobs:fly"], "expiresInDays": 0})),
    )
    .await;
    assert_eq!((s, b["code"].as_str()), (400, Some("invalid_body")));
    let paths: Vec<&str> = b["issues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["name", "scopes", "expiresInDays"]);
    let (s, created, _) = send(
        app.client
            .post(app.url("/api-keys"))
            .header("Authorization", &bearer)
            .json(&json!({"name": "ci", "scopes": ["jobs:read"], "expiresInDays": 7})),
    )
    .await;
    assert_eq!(s, 200, "{created}");
    let raw = created["key"].as_str().unwrap().to_string();
    assert!(raw.starts_with(created["prefix"].as_str().unwrap()));
    assert_eq!(created["scopes"], json!(["jobs:read"]));
    let (_, list, _) = send(
        app.client
            .get(app.url("/api-keys"))
            .header("Authorization", &bearer),
    )
    .await;
    assert_eq!(list["keys"].as_array().unwrap().len(), 1);
    assert!(
        list["keys"][0].get("key").is_none(),
        "the secret is never shown again"
    );
    let status_url = app.url(&format!("/jobs/{}/status", job["jobId"].as_str().unwrap()));
    assert_eq!(
        send(app.client.get(&status_url).header("X-API-Key", &raw))
            .await
            .0,
        200
    );
    let id = created["id"].as_str().unwrap();
    let (s, _, _) = send(
        app.client
            .delete(app.url(&format!("/api-keys/{id}")))
            .header("Authorization", &bearer),
    )
    .await;
    assert_eq!(s, 204);
    let (s, b, _) = send(app.client.get(&status_url).header("X-API-Key", &raw)).await;
    assert_eq!((s, b["code"].as_str()), (401, Some("invalid_api_key")));
    let (s, _, _) = send(
        app.client
            .delete(app.url(&format!("/api-keys/{id}")))
            .header("Authorization", &bearer),
    )
    .await;
    assert_eq!(s, 404, "revoking twice: no such live key");

    // Refresh rotates; replaying a used token signs the whole login out.
    let refresh = |t: &str| {
        app.client
            .post(app.url("/auth/refresh"))
            .json(&json!({"refreshToken": t}))
    };
    let old = tokens["refreshToken"].as_str().unwrap().to_string();
    let (s, next, _) = send(refresh(&old)).await;
    assert_eq!(s, 200);
    let (s, b, _) = send(refresh(&old)).await;
    assert_eq!((s, b["code"].as_str()), (401, Some("invalid_credentials")));
    assert!(b["message"].as_str().unwrap().contains("already used"));
    let (s, _, _) = send(refresh(next["refreshToken"].as_str().unwrap())).await;
    assert_eq!(s, 401, "the descendant was revoked with its family");
    // Logout ends a fresh login's refresh token.
    let (_, fresh) = login(&app, "dev@example.com", "correct horse").await;
    let fresh_refresh = fresh["refreshToken"].as_str().unwrap();
    let (s, _, _) = send(
        app.client
            .post(app.url("/auth/logout"))
            .json(&json!({"refreshToken": fresh_refresh})),
    )
    .await;
    assert_eq!(s, 204);
    assert_eq!(send(refresh(fresh_refresh)).await.0, 401);
    app.stop().await;
}

#[tokio::test]
async fn banned_accounts_and_expired_keys() {
    let app = spawn_app().await;
    let repos = &app.app_state.repos;
    let user = accounts::create_user(repos, "b@example.com", "password123", false, None, None)
        .await
        .unwrap();
    let (_, key) = accounts::create_api_key(repos, "b@example.com", "k", Scope::ALL.to_vec(), None)
        .await
        .unwrap();
    let expired = convertrilo_db::ApiKey {
        id: ApiKeyId::new(),
        user_id: user.id,
        name: "old".into(),
        prefix: "cvt_old".into(),
        scopes: Scope::ALL.to_vec(),
        expires_at: Some(now_ms() - 1000),
        revoked_at: None,
        created_at: now_ms() - 10_000,
    };
    repos
        .accounts
        .create_api_key(&expired, &accounts::hash_api_key("cvt_expired_raw"))
        .await
        .unwrap();
    let url = app.url("/jobs");
    let (s, b, _) = send(
        app.client
            .post(&url)
            .header("X-API-Key", "cvt_expired_raw")
            .json(&job_spec("h264", "720p", 30, "mp4")),
    )
    .await;
    assert_eq!((s, b["code"].as_str()), (401, Some("api_key_expired")));

    repos.auth.set_banned(user.id, true).await.unwrap();
    let (s, b, _) = send(
        app.client
            .post(&url)
            .header("X-API-Key", &key)
            .json(&job_spec("h264", "720p", 30, "mp4")),
    )
    .await;
    assert_eq!((s, b["code"].as_str()), (403, Some("account_banned")));
    let (s, b) = login(&app, "b@example.com", "password123").await;
    assert_eq!((s, b["code"].as_str()), (403, Some("account_banned")));
    repos.auth.set_banned(user.id, false).await.unwrap();
    assert_eq!(
        send(
            app.client
                .post(&url)
                .header("X-API-Key", &key)
                .json(&job_spec("h264", "720p", 30, "mp4"))
        )
        .await
        .0,
        200
    );
    app.stop().await;
}

/// Every API-key endpoint enforces its declared scope: a key with every other scope is refused.
#[tokio::test]
async fn every_endpoint_enforces_its_scope() {
    let app = spawn_app().await;
    let (_, created) = app.post("/jobs", job_spec("h264", "720p", 30, "mp4")).await;
    let id = created["jobId"].as_str().unwrap();
    let table: Vec<(&str, String, Scope)> = vec![
        ("POST", "/jobs".into(), Scope::JobsCreate),
        ("GET", format!("/jobs/{id}/probe-duration"), Scope::JobsRead),
        (
            "POST",
            format!("/jobs/{id}/approve-unified"),
            Scope::JobsCreate,
        ),
        ("POST", format!("/jobs/{id}/confirm"), Scope::JobsCreate),
        ("POST", format!("/jobs/{id}/cancel"), Scope::JobsCancel),
        ("GET", format!("/jobs/{id}/status"), Scope::JobsRead),
        ("GET", "/tokens/balance".into(), Scope::TokensRead),
        ("POST", "/tokens/reserve".into(), Scope::TokensWrite),
        ("POST", "/tokens/release".into(), Scope::TokensWrite),
        ("POST", "/tokens/deduct".into(), Scope::TokensWrite),
        ("POST", "/jobs/bulk".into(), Scope::JobsCreate),
        (
            "GET",
            format!("/jobs/bulk/status?ids={id}"),
            Scope::JobsRead,
        ),
        ("POST", "/jobs/bulk/confirm".into(), Scope::JobsCreate),
        ("POST", "/ondemand/encode".into(), Scope::JobsCreate),
        ("GET", format!("/ondemand/status/{id}"), Scope::JobsRead),
        ("DELETE", format!("/ondemand/{id}"), Scope::JobsCancel),
        ("GET", "/webhooks".into(), Scope::WebhooksManage),
        ("POST", "/webhooks".into(), Scope::WebhooksManage),
    ];
    for (method, path, scope) in table {
        let others: Vec<Scope> = Scope::ALL.iter().copied().filter(|s| *s != scope).collect();
        let (_, without) =
            accounts::create_api_key(&app.app_state.repos, "admin@localhost", "t", others, None)
                .await
                .unwrap();
        let (_, only) = accounts::create_api_key(
            &app.app_state.repos,
            "admin@localhost",
            "t",
            vec![scope],
            None,
        )
        .await
        .unwrap();
        let req = |key: &str| {
            app.client
                .request(method.parse().unwrap(), app.url(&path))
                .header("X-API-Key", key)
                .json(&job_spec("h264", "720p", 30, "mp4"))
        };
        let (s, b, _) = send(req(&without)).await;
        assert_eq!(
            (s, b["code"].as_str(), b["requiredScope"].as_str()),
            (403, Some("missing_required_scope"), Some(scope.as_str())),
            "{method} {path}"
        );
        let (s, b, _) = send(req(&only)).await;
        assert_ne!(s, 403, "{method} {path} with only {scope}: {b}");
    }
    app.stop().await;
}

#[tokio::test]
async fn rate_and_body_limits() {
    let app = spawn_app_with(|c| {
        c.rate_limit_per_minute = 5;
        c.login_rate_limit_per_minute = 3;
        c.json_body_limit_bytes = 2000;
    })
    .await;
    let url = app.url("/jobs/01900000-0000-7000-8000-000000000000/status");
    for left in (0..5).rev() {
        let (s, _, h) = send(app.client.get(&url).header("X-API-Key", &app.api_key)).await;
        assert_eq!(s, 404);
        assert_eq!(h["ratelimit-limit"], "5");
        assert_eq!(h["ratelimit-remaining"], left.to_string().as_str());
        assert!(
            h["ratelimit-reset"]
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
                <= 60
        );
    }
    let (s, b, h) = send(app.client.get(&url).header("X-API-Key", &app.api_key)).await;
    assert_eq!((s, b["code"].as_str()), (429, Some("rate_limit_exceeded")));
    assert!(h.contains_key("retry-after"));
    // The limit is per account: another account is unaffected.
    accounts::create_user(
        &app.app_state.repos,
        "o@example.com",
        "password123",
        false,
        None,
        None,
    )
    .await
    .unwrap();
    let (_, other) = accounts::create_api_key(
        &app.app_state.repos,
        "o@example.com",
        "t",
        Scope::ALL.to_vec(),
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        send(app.client.get(&url).header("X-API-Key", &other))
            .await
            .0,
        404
    );

    let (s, b, _) = send(
        app.client
            .post(app.url("/jobs"))
            .header("X-API-Key", &other)
            .json(&json!({"metadata": {"x": "y".repeat(3000)}})),
    )
    .await;
    assert_eq!((s, b["code"].as_str()), (413, Some("invalid_body")));
    assert!(b["message"].as_str().unwrap().contains("larger"));

    for _ in 0..3 {
        assert_eq!(login(&app, "o@example.com", "wrong-password").await.0, 401);
    }
    let (s, b) = login(&app, "o@example.com", "password123").await;
    assert_eq!(
        (s, b["code"].as_str()),
        (429, Some("rate_limit_exceeded")),
        "per-IP login limit"
    );
    app.stop().await;
}
