//! Vetting one URL: scheme, host lists, resolution and address ranges. [`pre_check`] is the
//! pure part (everything decidable without DNS, including literal IPs in any spelling);
//! [`Outbound::vet`] adds the one resolution and checks every address it returned.

use super::{
    ranges::{self, Kind},
    Network, Outbound, OutboundError, Policy,
};
use reqwest::Url;
use std::net::{IpAddr, SocketAddr};
use url::Host;

/// A URL that passed every check, with the addresses a connection to it may use.
#[derive(Debug, Clone)]
pub struct Vetted {
    pub url: Url,
    /// The host name to pin (`None` for a literal IP, which needs no resolution).
    pub(super) name: Option<String>,
    /// Where connections go (after [`Network::route`]); the URL's port is applied by the
    /// connector.
    pub(super) addrs: Vec<SocketAddr>,
}

/// A host list entry: a name (matching itself and every subdomain) or an exact IP address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Name(String),
    Ip(IpAddr),
}

impl HostPattern {
    /// `example.com`, `*.example.com` and `.example.com` all mean example.com and its
    /// subdomains; `10.1.2.3` and `[2001:db8::1]` mean that address.
    pub fn parse(entry: &str) -> Result<HostPattern, String> {
        let e = entry.trim().to_ascii_lowercase();
        let bare = e.trim_start_matches("*.").trim_start_matches('.');
        let bare = bare.trim_end_matches('.');
        let unbracketed = bare.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            return Ok(HostPattern::Ip(ip));
        }
        let valid = !bare.is_empty()
            && bare.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            });
        if valid {
            Ok(HostPattern::Name(bare.to_string()))
        } else {
            Err(format!(
                "{entry:?} is not a host name or IP address; write entries like \"example.com\" (which covers its subdomains) or \"203.0.113.7\""
            ))
        }
    }

    fn matches_name(&self, host: &str) -> bool {
        match self {
            HostPattern::Name(n) => {
                host == n
                    || host
                        .strip_suffix(n.as_str())
                        .is_some_and(|rest| rest.ends_with('.'))
            }
            HostPattern::Ip(_) => false,
        }
    }

    fn matches_ip(&self, ip: IpAddr) -> bool {
        matches!(self, HostPattern::Ip(p) if *p == ip)
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Name(n) => f.write_str(n),
            HostPattern::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// The host of a URL, as checks see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Target {
    /// A literal IP that passed the range checks.
    Ip(IpAddr),
    /// A name still to be resolved (lower case, as `url` gives it, trailing dot kept).
    Name(String),
}

/// How messages name the host: the first URL's, or a redirect's.
fn subject(hop: usize, host: &str) -> String {
    if hop == 0 {
        format!("the host {host}")
    } else {
        format!("a redirect (hop {hop}) leads to the host {host}, which")
    }
}

/// Names that mean this machine by definition (RFC 6761), refused before any lookup.
fn is_localhost_name(host: &str) -> bool {
    let h = host.trim_end_matches('.');
    h == "localhost" || h.ends_with(".localhost")
}

/// Checks an address (`literal`: written in the URL, else resolved) against the blocklist
/// and the refused ranges.
fn check_ip(
    policy: &Policy,
    hop: usize,
    host: &str,
    ip: IpAddr,
    literal: bool,
) -> Result<(), OutboundError> {
    if policy.blocklist.iter().any(|p| p.matches_ip(ip)) {
        return Err(OutboundError::HostBlocked(format!(
            "{} resolves to {ip}, which this server's blocklist refuses",
            subject(hop, host)
        )));
    }
    match ranges::refusal(ip) {
        Some(r) if r.kind == Kind::Never || !policy.allow_private => {
            let what = if literal {
                format!("{} is {}", subject(hop, host), r.range)
            } else {
                format!("{} resolves to {ip}, {}", subject(hop, host), r.range)
            };
            Err(OutboundError::PrivateAddress(format!(
                "{what}; this server only connects to public internet addresses"
            )))
        }
        _ => Ok(()),
    }
}

/// Everything that can be decided without DNS. Pure: the table tests call it directly.
pub(super) fn pre_check(
    policy: &Policy,
    raw: &str,
    hop: usize,
) -> Result<(Url, Target), OutboundError> {
    let url = Url::parse(raw.trim()).map_err(|e| {
        OutboundError::InvalidUrl(if hop == 0 {
            format!("not a valid URL ({e}); give an absolute http:// or https:// URL")
        } else {
            format!("a redirect (hop {hop}) names an invalid URL ({e})")
        })
    })?;
    check_parsed(policy, url, hop)
}

pub(super) fn check_parsed(
    policy: &Policy,
    url: Url,
    hop: usize,
) -> Result<(Url, Target), OutboundError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(OutboundError::InvalidUrl(if hop == 0 {
            format!(
                "the {}: scheme is not fetched; only http:// and https:// URLs are",
                url.scheme()
            )
        } else {
            format!(
                "a redirect (hop {hop}) leads to a {}: URL; only http:// and https:// are followed",
                url.scheme()
            )
        }));
    }
    let target = match url.host() {
        None => {
            return Err(OutboundError::InvalidUrl(
                "the URL has no host; give an absolute http:// or https:// URL".into(),
            ))
        }
        Some(Host::Ipv4(ip)) => Target::Ip(IpAddr::V4(ip)),
        Some(Host::Ipv6(ip)) => Target::Ip(IpAddr::V6(ip)),
        Some(Host::Domain(name)) => Target::Name(name.to_ascii_lowercase()),
    };
    let shown = url.host_str().unwrap_or_default().to_string();
    let listed = |p: &HostPattern| match &target {
        Target::Ip(ip) => p.matches_ip(*ip),
        Target::Name(n) => p.matches_name(n.trim_end_matches('.')),
    };
    if policy.blocklist.iter().any(listed) {
        return Err(OutboundError::HostBlocked(format!(
            "{} is on this server's blocklist",
            subject(hop, &shown)
        )));
    }
    if !policy.allowlist.is_empty() && !policy.allowlist.iter().any(listed) {
        let mut allowed: Vec<String> = policy
            .allowlist
            .iter()
            .take(5)
            .map(|p| p.to_string())
            .collect();
        if policy.allowlist.len() > 5 {
            allowed.push("…".into());
        }
        return Err(OutboundError::HostBlocked(format!(
            "{} is not among the hosts this server fetches from ({})",
            subject(hop, &shown),
            allowed.join(", ")
        )));
    }
    match &target {
        Target::Ip(ip) => check_ip(policy, hop, &shown, *ip, true)?,
        Target::Name(n) if is_localhost_name(n) && !policy.allow_private => {
            return Err(OutboundError::PrivateAddress(format!(
                "{} is a name for this machine (loopback); this server only connects to public internet addresses",
                subject(hop, &shown)
            )))
        }
        Target::Name(_) => {}
    }
    Ok((url, target))
}

impl Outbound {
    /// Vets a source URL a client gave: refused outright when URL ingest is off.
    pub async fn vet_source(&self, raw: &str) -> Result<Vetted, OutboundError> {
        if !self.policy.ingest_enabled {
            return Err(OutboundError::IngestDisabled);
        }
        self.vet(raw).await
    }

    /// The checks that need no lookup (scheme, host lists, `localhost` names, literal
    /// addresses): for places that cannot wait on DNS. [`Self::vet`] does these and more.
    pub fn check_without_lookup(&self, url: &Url) -> Result<(), OutboundError> {
        check_parsed(&self.policy, url.clone(), 0).map(drop)
    }

    /// Vets any URL a client gave (a source or a webhook).
    pub async fn vet(&self, raw: &str) -> Result<Vetted, OutboundError> {
        let (url, target) = pre_check(&self.policy, raw, 0)?;
        self.resolve(url, target, 0).await
    }

    /// Vets the target of redirect number `hop`.
    pub(super) async fn vet_hop(&self, url: Url, hop: usize) -> Result<Vetted, OutboundError> {
        let (url, target) = check_parsed(&self.policy, url, hop)?;
        self.resolve(url, target, hop).await
    }

    /// The one resolution of a name, every answer checked.
    async fn resolve(&self, url: Url, target: Target, hop: usize) -> Result<Vetted, OutboundError> {
        let port = url.port_or_known_default().unwrap_or(80);
        let shown = url.host_str().unwrap_or_default().to_string();
        let (name, ips) = match target {
            Target::Ip(ip) => (None, vec![ip]),
            Target::Name(name) => {
                let ips = resolve_name(self.net.as_ref(), &self.policy, &name, port, hop).await?;
                for ip in &ips {
                    check_ip(&self.policy, hop, &shown, *ip, false)?;
                }
                (Some(name), ips)
            }
        };
        let addrs = ips
            .into_iter()
            .map(|ip| SocketAddr::new(self.net.route(ip), port))
            .collect();
        Ok(Vetted { url, name, addrs })
    }
}

async fn resolve_name(
    net: &dyn Network,
    policy: &Policy,
    name: &str,
    port: u16,
    hop: usize,
) -> Result<Vec<IpAddr>, OutboundError> {
    let not_resolvable = |why: String| {
        OutboundError::NotResolvable(format!(
            "{} could not be resolved ({why}); check the spelling of the host name",
            subject(hop, name)
        ))
    };
    let mut ips = match tokio::time::timeout(policy.timeout, net.resolve(name, port)).await {
        Ok(Ok(ips)) => ips,
        Ok(Err(e)) => return Err(not_resolvable(e.to_string())),
        Err(_) => return Err(not_resolvable("the lookup timed out".into())),
    };
    ips.dedup();
    if ips.is_empty() {
        return Err(not_resolvable("it has no addresses".into()));
    }
    Ok(ips)
}

#[cfg(test)]
#[path = "vet_tests.rs"]
pub(super) mod tests;
