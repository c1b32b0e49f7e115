//! Table tests of URL vetting: hostile URLs refused without any network, and the resolution
//! step over a fake resolver.

use super::*;
use convertrilo_core::ErrorCode;
use std::{collections::HashMap, sync::Arc, time::Duration};

pub(crate) fn strict() -> Policy {
    Policy {
        ingest_enabled: true,
        allow_private: false,
        blocklist: Vec::new(),
        allowlist: Vec::new(),
        require_content_length: false,
        timeout: Duration::from_secs(2),
    }
}

fn code(policy: &Policy, url: &str) -> Option<ErrorCode> {
    pre_check(policy, url, 0).err().map(|e| e.code())
}

#[test]
fn hostile_urls_are_refused_without_dns() {
    use ErrorCode::{InvalidUrl, PrivateIpBlocked};
    let cases: &[(&str, ErrorCode)] = &[
        ("http://127.0.0.1/a.mp4", PrivateIpBlocked),
        ("http://2130706433/", PrivateIpBlocked),
        ("http://0177.0.0.1/", PrivateIpBlocked),
        ("http://0x7f.1/", PrivateIpBlocked),
        ("http://0x7f000001/", PrivateIpBlocked),
        ("http://127.1/", PrivateIpBlocked),
        ("http://127.0.1/", PrivateIpBlocked),
        ("http://127.0.0.1./", PrivateIpBlocked),
        ("http://%31%32%37.0.0.1/", PrivateIpBlocked),
        ("https://[::1]/", PrivateIpBlocked),
        ("http://[::ffff:127.0.0.1]/", PrivateIpBlocked),
        ("http://[::ffff:7f00:1]/", PrivateIpBlocked),
        ("http://[0:0:0:0:0:ffff:127.0.0.1]/", PrivateIpBlocked),
        ("http://[::127.0.0.1]/", PrivateIpBlocked),
        ("http://[fe80::1]/", PrivateIpBlocked),
        ("http://[fc00::1]/", PrivateIpBlocked),
        ("http://[fd00:ec2::254]/", PrivateIpBlocked),
        ("http://[::]/", PrivateIpBlocked),
        ("http://[64:ff9b::a9fe:a9fe]/", PrivateIpBlocked),
        ("http://[2002:7f00:1::]/", PrivateIpBlocked),
        ("http://localhost/", PrivateIpBlocked),
        ("http://localhost./", PrivateIpBlocked),
        ("http://LOCALHOST:8080/", PrivateIpBlocked),
        ("http://foo.localhost/", PrivateIpBlocked),
        ("http://0.0.0.0/", PrivateIpBlocked),
        ("http://0/", PrivateIpBlocked),
        ("http://169.254.169.254/latest/meta-data/", PrivateIpBlocked),
        ("http://100.64.0.1/", PrivateIpBlocked),
        ("http://10.0.0.1/", PrivateIpBlocked),
        ("http://172.16.5.4/", PrivateIpBlocked),
        ("http://192.168.1.1/", PrivateIpBlocked),
        ("http://198.18.0.1/", PrivateIpBlocked),
        ("http://192.0.2.1/", PrivateIpBlocked),
        ("http://224.0.0.1/", PrivateIpBlocked),
        ("http://255.255.255.255/", PrivateIpBlocked),
        ("http://example.com@127.0.0.1/", PrivateIpBlocked),
        ("http://user:pass@[::1]:8080/x.mp4", PrivateIpBlocked),
        ("http://127.0.0.1:80#@example.com/", PrivateIpBlocked),
        ("file:///etc/passwd", InvalidUrl),
        ("ftp://example.com/a.mp4", InvalidUrl),
        ("gopher://127.0.0.1:25/_HELO", InvalidUrl),
        ("data:video/mp4;base64,AAAA", InvalidUrl),
        ("javascript:alert(1)", InvalidUrl),
        ("dict://127.0.0.1:11211/stat", InvalidUrl),
        ("//example.com/a.mp4", InvalidUrl),
        ("not a url", InvalidUrl),
        ("http://[::1%25lo]/", InvalidUrl),
    ];
    assert!(cases.len() >= 25);
    for (url, want) in cases {
        assert_eq!(code(&strict(), url), Some(*want), "{url}");
    }
}

#[test]
fn messages_say_what_the_host_is() {
    let e = pre_check(&strict(), "http://0x7f.1/", 0).unwrap_err();
    assert!(
        e.to_string().contains("127.0.0.1 is a loopback address"),
        "{e}"
    );
    let e = pre_check(&strict(), "http://169.254.169.254/", 0).unwrap_err();
    assert!(e.to_string().contains("metadata"), "{e}");
    let e = pre_check(&strict(), "http://[::ffff:a00:1]/", 2).unwrap_err();
    assert!(e.to_string().starts_with("a redirect (hop 2)"), "{e}");
    assert!(
        e.to_string().contains("private address (10.0.0.0/8)"),
        "{e}"
    );
}

#[test]
fn public_urls_pass_and_names_wait_for_dns() {
    for url in [
        "https://cdn.example.com/v.mp4?sig=abc",
        "http://93.184.215.14/v.mp4",
        "http://[2606:4700::1]:8443/v.mp4",
    ] {
        assert!(pre_check(&strict(), url, 0).is_ok(), "{url}");
    }
    let (_, target) = pre_check(&strict(), "https://CDN.Example.COM./v.mp4", 0).unwrap();
    assert_eq!(target, Target::Name("cdn.example.com.".into()));
}

#[test]
fn allowing_private_networks_still_refuses_non_unicast() {
    let open = Policy {
        allow_private: true,
        ..strict()
    };
    for url in [
        "http://127.0.0.1/",
        "http://localhost/",
        "http://10.0.0.1/",
        "http://[fc00::1]/",
    ] {
        assert!(pre_check(&open, url, 0).is_ok(), "{url}");
    }
    for url in [
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://255.255.255.255/",
        "http://[ff02::1]/",
    ] {
        assert_eq!(code(&open, url), Some(ErrorCode::PrivateIpBlocked), "{url}");
    }
}

#[test]
fn host_lists_match_names_subdomains_and_addresses() {
    let p = |s: &str| HostPattern::parse(s).unwrap();
    assert_eq!(p("*.Example.com."), HostPattern::Name("example.com".into()));
    assert_eq!(
        p("[2001:db8::1]"),
        HostPattern::Ip("2001:db8::1".parse().unwrap())
    );
    for bad in [
        "",
        "http://example.com",
        "example.com/path",
        "a..b",
        "exa mple.com",
    ] {
        assert!(HostPattern::parse(bad).is_err(), "{bad:?}");
    }
    let blocked = Policy {
        blocklist: vec![p("evil.example"), p("93.184.215.14")],
        ..strict()
    };
    assert_eq!(
        code(&blocked, "http://evil.example/a"),
        Some(ErrorCode::UrlHostBlocked)
    );
    assert_eq!(
        code(&blocked, "http://cdn.EVIL.example./a"),
        Some(ErrorCode::UrlHostBlocked)
    );
    assert_eq!(
        code(&blocked, "http://93.184.215.14/a"),
        Some(ErrorCode::UrlHostBlocked)
    );
    assert_eq!(code(&blocked, "http://notevil.example/a"), None);

    let allowed = Policy {
        allowlist: vec![p("media.example")],
        ..strict()
    };
    assert_eq!(code(&allowed, "https://media.example/a"), None);
    assert_eq!(code(&allowed, "https://eu.media.example/a"), None);
    assert_eq!(
        code(&allowed, "https://othermedia.example/a"),
        Some(ErrorCode::UrlHostBlocked)
    );
    assert_eq!(
        code(&allowed, "https://93.184.215.14/a"),
        Some(ErrorCode::UrlHostBlocked)
    );
    let e = pre_check(&allowed, "https://x.test/a", 0).unwrap_err();
    assert!(
        e.to_string().contains("media.example"),
        "the message names what is allowed: {e}"
    );
    // The allowlist never opens private ranges.
    let allowed_ip = Policy {
        allowlist: vec![p("127.0.0.1")],
        ..strict()
    };
    assert_eq!(
        code(&allowed_ip, "http://127.0.0.1/a"),
        Some(ErrorCode::PrivateIpBlocked)
    );
}

/// A resolver from a table; unknown names do not exist.
pub(crate) struct FakeNet {
    pub names: HashMap<String, Vec<IpAddr>>,
    pub routes: HashMap<IpAddr, IpAddr>,
}

impl FakeNet {
    pub fn new(names: &[(&str, &[&str])]) -> FakeNet {
        FakeNet {
            names: names
                .iter()
                .map(|(n, ips)| {
                    (
                        n.to_string(),
                        ips.iter().map(|i| i.parse().unwrap()).collect(),
                    )
                })
                .collect(),
            routes: HashMap::new(),
        }
    }
}

#[async_trait::async_trait]
impl Network for FakeNet {
    async fn resolve(&self, host: &str, _port: u16) -> std::io::Result<Vec<IpAddr>> {
        self.names
            .get(host.trim_end_matches('.'))
            .cloned()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such host"))
    }
    fn route(&self, ip: IpAddr) -> IpAddr {
        self.routes.get(&ip).copied().unwrap_or(ip)
    }
}

#[tokio::test]
async fn every_resolved_address_is_checked() {
    let mut net = FakeNet::new(&[
        ("public.example", &["93.184.215.14", "2606:4700::6812:1"]),
        ("rebind.example", &["93.184.215.14", "127.0.0.1"]),
        ("metadata.example", &["169.254.169.254"]),
        ("mapped.example", &["::ffff:10.1.2.3"]),
        ("blocked-ip.example", &["203.0.114.9"]),
    ]);
    net.routes.insert(
        "93.184.215.14".parse().unwrap(),
        "127.0.0.1".parse().unwrap(),
    );
    let policy = Policy {
        blocklist: vec![HostPattern::parse("203.0.114.9").unwrap()],
        ..strict()
    };
    let out = Outbound::new(policy, Arc::new(net));
    let v = out.vet("https://public.example:8443/v.mp4").await.unwrap();
    assert_eq!(v.name.as_deref(), Some("public.example"));
    assert_eq!(
        v.addrs,
        vec![
            "127.0.0.1:8443".parse().unwrap(),
            "[2606:4700::6812:1]:8443".parse().unwrap()
        ],
        "vetted addresses are routed (tests only) and carry the URL's port"
    );
    for (url, want) in [
        ("http://rebind.example/", ErrorCode::PrivateIpBlocked),
        ("http://metadata.example/", ErrorCode::PrivateIpBlocked),
        ("http://mapped.example/", ErrorCode::PrivateIpBlocked),
        ("http://blocked-ip.example/", ErrorCode::UrlHostBlocked),
        ("http://nowhere.example/", ErrorCode::HostNotResolvable),
    ] {
        let e = out.vet(url).await.unwrap_err();
        assert_eq!(e.code(), want, "{url}: {e}");
    }
    let e = out.vet("http://metadata.example/").await.unwrap_err();
    assert!(e.to_string().contains("resolves to 169.254.169.254"), "{e}");

    let off = Outbound::new(
        Policy {
            ingest_enabled: false,
            ..strict()
        },
        Arc::new(FakeNet::new(&[])),
    );
    let e = off
        .vet_source("http://93.184.215.14/a.mp4")
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::UrlIngestDisabled);
    assert!(
        off.vet("http://93.184.215.14/hook").await.is_ok(),
        "webhooks are not ingest"
    );
}
