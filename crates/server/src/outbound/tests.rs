//! The guarded client and the probe proxy against a real HTTP server on loopback. A fake
//! resolver makes `public.example` a public address and routes it (after the check) to that
//! server, so every hop check runs exactly as it does in service.

use super::{vet::tests::FakeNet, *};
use axum::{
    body::Body,
    extract::Path as UrlPath,
    http::{header, HeaderMap as AxumHeaders, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use std::sync::atomic::{AtomicUsize, Ordering};

const CLIP: &[u8] = &[7u8; 1000];

struct Host {
    port: u16,
    video_hits: Arc<AtomicUsize>,
}

fn redirect(to: String) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, to)]).into_response()
}

async fn host() -> Host {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let router = Router::new()
        .route(
            "/video.mp4",
            get(move |h: AxumHeaders| {
                counted.fetch_add(1, Ordering::SeqCst);
                async move {
                    match h.get(header::RANGE).and_then(|r| r.to_str().ok()) {
                        Some("bytes=10-") => (
                            StatusCode::PARTIAL_CONTENT,
                            [
                                (header::CONTENT_TYPE, "video/mp4".to_string()),
                                (header::CONTENT_RANGE, format!("bytes 10-999/{}", CLIP.len())),
                            ],
                            CLIP[10..].to_vec(),
                        )
                            .into_response(),
                        Some("bytes=5000-") => StatusCode::RANGE_NOT_SATISFIABLE.into_response(),
                        _ => ([(header::CONTENT_TYPE, "video/mp4")], CLIP.to_vec()).into_response(),
                    }
                }
            }),
        )
        .route("/to-loopback", get(move || async move { redirect(format!("http://127.0.0.1:{port}/video.mp4")) }))
        .route("/to-mapped", get(move || async move { redirect(format!("http://[::ffff:7f00:1]:{port}/video.mp4")) }))
        .route("/to-internal", get(move || async move { redirect(format!("http://internal.example:{port}/video.mp4")) }))
        .route("/to-file", get(|| async { redirect("file:///etc/passwd".into()) }))
        .route("/to-public", get(|| async { redirect("/video.mp4".into()) }))
        .route("/loop/{n}", get(|UrlPath(n): UrlPath<u32>| async move { redirect(format!("/loop/{}", n + 1)) }))
        .route("/page.html", get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], "<html></html>") }))
        .route("/data.json", get(|| async { axum::Json(serde_json::json!({"a": 1})) }))
        .route(
            "/chunked.mp4",
            get(|| async {
                let parts = futures::stream::iter([Ok::<_, std::io::Error>(vec![1u8; 10])]);
                ([(header::CONTENT_TYPE, "video/mp4")], Body::from_stream(parts))
            }),
        );
    tokio::spawn(async move { axum::serve(listener, router).await });
    Host {
        port,
        video_hits: hits,
    }
}

fn outbound(policy: Policy) -> Outbound {
    let mut net = FakeNet::new(&[
        ("public.example", &["93.184.215.14"]),
        ("internal.example", &["10.0.0.7"]),
    ]);
    net.routes.insert(
        "93.184.215.14".parse().unwrap(),
        "127.0.0.1".parse().unwrap(),
    );
    Outbound::new(policy, Arc::new(net))
}

fn strict() -> Policy {
    super::vet::tests::strict()
}

#[tokio::test]
async fn redirects_are_followed_only_to_vetted_hosts() {
    let h = host().await;
    let out = outbound(strict());
    let url = |path: &str| format!("http://public.example:{}{path}", h.port);

    // The pinned client reaches the vetted address though the name exists nowhere else.
    let (_, r) = out.open_source(&url("/video.mp4"), 10_000).await.unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), CLIP);
    let (_, r) = out.open_source(&url("/to-public"), 10_000).await.unwrap();
    assert_eq!(
        r.bytes().await.unwrap().len(),
        CLIP.len(),
        "a redirect to a public host is followed"
    );
    let hits = h.video_hits.load(Ordering::SeqCst);

    for (path, code, says) in [
        ("/to-loopback", ErrorCode::PrivateIpBlocked, "hop 1"),
        ("/to-mapped", ErrorCode::PrivateIpBlocked, "loopback"),
        ("/to-internal", ErrorCode::PrivateIpBlocked, "10.0.0.7"),
        ("/to-file", ErrorCode::InvalidUrl, "file:"),
        ("/loop/0", ErrorCode::InvalidUrl, "more than 5"),
    ] {
        let e = out.open_source(&url(path), 10_000).await.unwrap_err();
        assert_eq!(e.code(), code, "{path}: {e}");
        assert!(e.to_string().contains(says), "{path}: {e}");
    }
    assert_eq!(
        h.video_hits.load(Ordering::SeqCst),
        hits,
        "no refused redirect target was ever requested"
    );

    // Allowing private networks opens the loopback hop, and the list checks still apply.
    let open = outbound(Policy {
        allow_private: true,
        blocklist: vec![HostPattern::parse("internal.example").unwrap()],
        ..strict()
    });
    assert!(open.open_source(&url("/to-loopback"), 10_000).await.is_ok());
    let e = open
        .open_source(&url("/to-internal"), 10_000)
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::UrlHostBlocked, "{e}");
}

#[tokio::test]
async fn source_responses_are_checked() {
    let h = host().await;
    let url = |path: &str| format!("http://public.example:{}{path}", h.port);
    let out = outbound(strict());
    for (path, code) in [
        ("/page.html", ErrorCode::UnsupportedContentType),
        ("/data.json", ErrorCode::UnsupportedContentType),
        ("/missing.mp4", ErrorCode::ProbeFailed),
    ] {
        let e = out.open_source(&url(path), 10_000).await.unwrap_err();
        assert_eq!(e.code(), code, "{path}: {e}");
    }
    let e = out.open_source(&url("/video.mp4"), 999).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::FileTooLarge);
    assert_eq!(e.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(out.open_source(&url("/chunked.mp4"), 999).await.is_ok());

    let strict_length = outbound(Policy {
        require_content_length: true,
        ..strict()
    });
    let e = strict_length
        .open_source(&url("/chunked.mp4"), 999)
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::MissingContentLength, "{e}");
    assert!(strict_length
        .open_source(&url("/video.mp4"), 10_000)
        .await
        .is_ok());
}

#[test]
fn content_types_that_cannot_be_video_are_refused() {
    for ok in [
        "",
        "video/mp4",
        "video/x-matroska",
        "Video/WebM; codecs=vp9",
        "application/octet-stream",
        "binary/octet-stream",
        "application/mp4",
        "image/gif",
    ] {
        assert!(content_type_allowed(ok), "{ok}");
    }
    for bad in [
        "text/html",
        "text/plain",
        "application/json",
        "application/xml",
        "image/png",
        "image/svg+xml",
        "application/x-mpegURL",
        "application/vnd.apple.mpegurl",
        "audio/x-mpegurl",
        "application/dash+xml",
        "audio/mpeg",
    ] {
        assert!(!content_type_allowed(bad), "{bad}");
    }
}

#[tokio::test]
async fn the_probe_proxy_forwards_ranges_and_keeps_refusals() {
    let h = host().await;
    let out = outbound(strict());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (proxy, task) = ProbeProxy::start(out.clone(), shutdown.clone())
        .await
        .unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();

    let first = out
        .vet(&format!("http://public.example:{}/video.mp4", h.port))
        .await
        .unwrap();
    let ticket = proxy.open(first.clone(), 10_000, Duration::from_secs(30));
    assert!(
        ticket.url().starts_with("http://127.0.0.1:"),
        "{}",
        ticket.url()
    );
    assert!(ticket.url().ends_with("/source.mp4"));
    let r = client
        .get(ticket.url())
        .header("Range", "bytes=10-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 10-999/1000");
    assert_eq!(r.bytes().await.unwrap().len(), 990);
    let r = client.head(ticket.url()).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-length"], "1000");
    let r = client
        .get(ticket.url())
        .header("Range", "bytes=5000-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 416);
    assert!(
        ticket.refusal().is_none(),
        "asking past the end is no fault"
    );
    // Guessing tokens gets nothing; a closed ticket is gone.
    let wrong = ticket.url().replace("/p/", "/p/x");
    assert_eq!(
        client.get(&wrong).send().await.unwrap().status().as_u16(),
        404
    );
    let url = ticket.url().to_string();
    drop(ticket);
    assert_eq!(
        client.get(&url).send().await.unwrap().status().as_u16(),
        404
    );
    assert_eq!(proxy.open_tickets(), 0);

    // A redirect to loopback is refused inside the proxy; ffprobe would see a 502 and the
    // ticket keeps the reason.
    let bad = out
        .vet(&format!("http://public.example:{}/to-loopback", h.port))
        .await
        .unwrap();
    let ticket = proxy.open(bad, 10_000, Duration::from_secs(30));
    let r = client.get(ticket.url()).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 502);
    assert_eq!(
        ticket.refusal().map(|e| e.code()),
        Some(ErrorCode::PrivateIpBlocked)
    );
    // The cap holds per response, and expired tickets answer nothing.
    let small = proxy.open(first.clone(), 999, Duration::from_secs(30));
    assert_eq!(
        client
            .get(small.url())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        502
    );
    assert_eq!(
        small.refusal().map(|e| e.code()),
        Some(ErrorCode::FileTooLarge)
    );
    let expired = proxy.open(first, 10_000, Duration::ZERO);
    assert_eq!(
        client
            .get(expired.url())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        404
    );
    shutdown.cancel();
    task.await.unwrap();
}
