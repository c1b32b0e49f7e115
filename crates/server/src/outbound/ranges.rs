//! Which IP addresses a customer-given URL may reach: public unicast only. Every other range
//! (loopback, private, carrier-grade NAT, link-local with the cloud metadata service,
//! documentation, benchmarking, reserved, multicast, broadcast, unique-local…) is refused.
//! IPv6 forms that carry an IPv4 address (mapped, compatible, NAT64, 6to4) are judged by the
//! IPv4 address inside, so `::ffff:127.0.0.1` is loopback like `127.0.0.1`.
//! Pure functions over `IpAddr`; the tables are the IANA special-purpose registries.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// How strongly an address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Never a server's address (unspecified, multicast, broadcast, reserved): always refused.
    Never,
    /// Reachable only inside some network; allowed when `ingest_allow_private_networks` is on.
    Internal,
}

/// Why an address is refused: its kind and a name for the range fit for a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub kind: Kind,
    pub range: &'static str,
}

const fn refuse(kind: Kind, range: &'static str) -> Refusal {
    Refusal { kind, range }
}

/// (network, prefix length, refusal); the first match wins, so more specific entries first.
const V4: &[(u32, u8, Refusal)] = &[
    (
        0x0000_0000,
        8,
        refuse(Kind::Never, "a \"this network\" address (0.0.0.0/8)"),
    ),
    (
        0x0a00_0000,
        8,
        refuse(Kind::Internal, "a private address (10.0.0.0/8)"),
    ),
    (
        0x6440_0000,
        10,
        refuse(
            Kind::Internal,
            "a carrier-grade NAT address (100.64.0.0/10)",
        ),
    ),
    (
        0x7f00_0000,
        8,
        refuse(Kind::Internal, "a loopback address (127.0.0.0/8)"),
    ),
    (
        0xa9fe_0000,
        16,
        refuse(
            Kind::Internal,
            "a link-local address (169.254.0.0/16, where cloud metadata services answer)",
        ),
    ),
    (
        0xac10_0000,
        12,
        refuse(Kind::Internal, "a private address (172.16.0.0/12)"),
    ),
    (
        0xc000_0000,
        24,
        refuse(Kind::Internal, "an IETF protocol address (192.0.0.0/24)"),
    ),
    (
        0xc000_0200,
        24,
        refuse(Kind::Internal, "a documentation address (192.0.2.0/24)"),
    ),
    (
        0xc058_6300,
        24,
        refuse(Kind::Internal, "a 6to4 relay address (192.88.99.0/24)"),
    ),
    (
        0xc0a8_0000,
        16,
        refuse(Kind::Internal, "a private address (192.168.0.0/16)"),
    ),
    (
        0xc612_0000,
        15,
        refuse(Kind::Internal, "a benchmarking address (198.18.0.0/15)"),
    ),
    (
        0xc633_6400,
        24,
        refuse(Kind::Internal, "a documentation address (198.51.100.0/24)"),
    ),
    (
        0xcb00_7100,
        24,
        refuse(Kind::Internal, "a documentation address (203.0.113.0/24)"),
    ),
    (
        0xe000_0000,
        4,
        refuse(Kind::Never, "a multicast address (224.0.0.0/4)"),
    ),
    (
        0xffff_ffff,
        32,
        refuse(Kind::Never, "the broadcast address (255.255.255.255)"),
    ),
    (
        0xf000_0000,
        4,
        refuse(Kind::Never, "a reserved address (240.0.0.0/4)"),
    ),
];

const V6: &[(u128, u8, Refusal)] = &[
    (0, 128, refuse(Kind::Never, "the unspecified address (::)")),
    (1, 128, refuse(Kind::Internal, "a loopback address (::1)")),
    (
        0x0064_ff9b_0001 << 80,
        48,
        refuse(Kind::Internal, "a local-use NAT64 address (64:ff9b:1::/48)"),
    ),
    (
        0x0100 << 112,
        64,
        refuse(Kind::Internal, "a discard-only address (100::/64)"),
    ),
    (
        0x2001_0db8 << 96,
        32,
        refuse(Kind::Internal, "a documentation address (2001:db8::/32)"),
    ),
    (
        0x2001 << 112,
        23,
        refuse(
            Kind::Internal,
            "an IETF protocol address (2001::/23, which includes Teredo tunnels)",
        ),
    ),
    (
        0x3fff << 112,
        20,
        refuse(Kind::Internal, "a documentation address (3fff::/20)"),
    ),
    (
        0xfc00 << 112,
        7,
        refuse(Kind::Internal, "a unique-local address (fc00::/7)"),
    ),
    (
        0xfe80 << 112,
        10,
        refuse(Kind::Internal, "a link-local address (fe80::/10)"),
    ),
    (
        0xfec0 << 112,
        10,
        refuse(Kind::Internal, "a site-local address (fec0::/10)"),
    ),
    (
        0xff00 << 112,
        8,
        refuse(Kind::Never, "a multicast address (ff00::/8)"),
    ),
];

fn in_v4(ip: u32, net: u32, len: u8) -> bool {
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    ip & mask == net
}

fn in_v6(ip: u128, net: u128, len: u8) -> bool {
    let mask = if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    };
    ip & mask == net
}

/// `None` when the address is public unicast and may be fetched from.
pub fn refusal(ip: IpAddr) -> Option<Refusal> {
    match ip {
        IpAddr::V4(v4) => refusal_v4(v4),
        IpAddr::V6(v6) => refusal_v6(v6),
    }
}

fn refusal_v4(ip: Ipv4Addr) -> Option<Refusal> {
    let bits = u32::from(ip);
    V4.iter()
        .find(|(net, len, _)| in_v4(bits, *net, *len))
        .map(|(_, _, r)| *r)
}

/// The IPv4 address an IPv6 address stands for, when it is one of the forms that carry one.
pub fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated): the low 32 bits.
    // `::` and `::1` are compatible-shaped but mean themselves; the table handles them.
    if in_v6(bits, 0xffff << 32, 96) || (in_v6(bits, 0, 96) && bits > 1) {
        return Some(Ipv4Addr::from(bits as u32));
    }
    // 64:ff9b::/96, the well-known NAT64 prefix: a NAT64 gateway connects to the IPv4 inside.
    if in_v6(bits, 0x0064_ff9b << 96, 96) {
        return Some(Ipv4Addr::from(bits as u32));
    }
    // 2002::/16, 6to4: the IPv4 address is the 32 bits after the prefix.
    if in_v6(bits, 0x2002 << 112, 16) {
        return Some(Ipv4Addr::from((bits >> 80) as u32));
    }
    None
}

fn refusal_v6(ip: Ipv6Addr) -> Option<Refusal> {
    let bits = u128::from(ip);
    if let Some(r) = V6
        .iter()
        .find(|(net, len, _)| in_v6(bits, *net, *len))
        .map(|(_, _, r)| *r)
    {
        return Some(r);
    }
    if let Some(v4) = embedded_v4(ip) {
        return refusal_v4(v4);
    }
    // Only 2000::/3 is allocated for global unicast; everything else is reserved.
    if !in_v6(bits, 0x2000 << 112, 3) {
        return Some(refuse(
            Kind::Never,
            "a reserved IPv6 address (outside 2000::/3)",
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(s: &str) -> Option<Kind> {
        refusal(s.parse().unwrap()).map(|r| r.kind)
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "93.184.215.14",
            "8.8.8.8",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:0808:0808::1",
        ] {
            assert_eq!(kind(ip), None, "{ip} is public");
        }
    }

    #[test]
    fn special_ranges_are_refused() {
        use Kind::*;
        for (ip, want) in [
            ("0.0.0.0", Never),
            ("0.1.2.3", Never),
            ("10.0.0.1", Internal),
            ("100.64.0.1", Internal),
            ("100.127.255.255", Internal),
            ("127.0.0.1", Internal),
            ("127.255.255.254", Internal),
            ("169.254.169.254", Internal),
            ("172.16.0.1", Internal),
            ("172.31.255.255", Internal),
            ("192.0.0.8", Internal),
            ("192.0.2.1", Internal),
            ("192.88.99.1", Internal),
            ("192.168.1.1", Internal),
            ("198.18.0.1", Internal),
            ("198.19.255.255", Internal),
            ("198.51.100.7", Internal),
            ("203.0.113.9", Internal),
            ("224.0.0.1", Never),
            ("239.255.255.250", Never),
            ("240.0.0.1", Never),
            ("255.255.255.255", Never),
            ("::", Never),
            ("::1", Internal),
            ("::ffff:127.0.0.1", Internal),
            ("::ffff:169.254.169.254", Internal),
            ("::127.0.0.1", Internal),
            ("::10.0.0.1", Internal),
            ("64:ff9b::7f00:1", Internal),
            ("64:ff9b::a9fe:a9fe", Internal),
            ("64:ff9b:1::1", Internal),
            ("2002:7f00:0001::1", Internal),
            ("2002:c0a8:0101::1", Internal),
            ("100::1", Internal),
            ("2001::1", Internal),
            ("2001:db8::1", Internal),
            ("3fff::1", Internal),
            ("fc00::1", Internal),
            ("fd12:3456::1", Internal),
            ("fe80::1", Internal),
            ("febf::1", Internal),
            ("fec0::1", Internal),
            ("ff02::1", Never),
            ("::ffff:0:7f00:1", Never),
            ("1::1", Never),
        ] {
            assert_eq!(kind(ip), Some(want), "{ip}");
        }
    }

    #[test]
    fn embedded_addresses_are_found() {
        let v4 = |s: &str| embedded_v4(s.parse().unwrap()).map(|a| a.to_string());
        assert_eq!(v4("::ffff:7f00:1").as_deref(), Some("127.0.0.1"));
        assert_eq!(v4("64:ff9b::0a00:0001").as_deref(), Some("10.0.0.1"));
        assert_eq!(v4("2002:a9fe:a9fe::").as_deref(), Some("169.254.169.254"));
        assert_eq!(v4("::1"), None);
        assert_eq!(v4("2606:4700::1"), None);
    }
}
