//! Which addresses are worth a public lookup (service tags, GeoIP, ASN): internet-routable
//! unicast only, never private, shared, loopback, link-local, documentation, multicast or the
//! Azure platform address.
//!
//! A GeoIP answer for 10.0.0.4 would be noise at best (GeoLite2 has no data there) and wrong at
//! worst (a database that maps a reserved range), and skipping these addresses early saves the
//! lookups for most east-west traffic.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::classify::{is_azure_platform, is_private};

/// True for addresses a public registry can say something about: IPv4 unicast outside the
/// special-purpose ranges, IPv6 global unicast (2000::/3) outside documentation space. An
/// IPv4-mapped IPv6 address is judged by its IPv4 address.
///
/// Not routable: RFC 1918, RFC 6598 shared space (100.64/10) and IPv6 ULA (fc00::/7), as in
/// [`is_private`]; 168.63.129.16 (Azure's virtual platform address); 0/8, loopback 127/8,
/// link-local 169.254/16 (also the instance metadata service), IETF protocol assignments
/// 192.0.0/24, documentation (192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32),
/// benchmarking 198.18/15, multicast and reserved (224/3, broadcast), and every IPv6 address
/// outside 2000::/3 (loopback, link-local fe80::/10, multicast ff00::/8, unspecified).
pub fn is_internet_routable(addr: IpAddr) -> bool {
    let addr = addr.to_canonical();
    if is_private(addr) || is_azure_platform(addr) {
        return false;
    }
    match addr {
        IpAddr::V4(v4) => is_routable_v4(v4),
        IpAddr::V6(v6) => is_routable_v6(v6),
    }
}

fn is_routable_v4(v4: Ipv4Addr) -> bool {
    let [a, b, c, _] = v4.octets();
    !(a == 0
        || v4.is_loopback()
        || v4.is_link_local()
        || (a == 192 && b == 0 && c == 0)
        || v4.is_documentation()
        || (a == 198 && (b & 0xfe) == 18)
        // 224/4 multicast, 240/4 reserved and the broadcast address.
        || a >= 224)
}

fn is_routable_v6(v6: Ipv6Addr) -> bool {
    let [s0, s1, ..] = v6.segments();
    (s0 & 0xe000) == 0x2000 && !(s0 == 0x2001 && s1 == 0x0db8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn private_reserved_and_platform_addresses_are_never_looked_up() {
        for a in [
            "10.0.0.4",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "169.254.169.254",
            "168.63.129.16",
            "0.0.0.0",
            "0.1.2.3",
            "192.0.0.9",
            "192.0.2.10",
            "198.51.100.225",
            "203.0.113.5",
            "198.18.0.1",
            "198.19.255.255",
            "224.0.0.251",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "2001:db8::5",
            "::ffff:10.1.2.3",
            "::ffff:168.63.129.16",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_internet_routable(ip(a)), "{a} must not be looked up");
        }
    }

    #[test]
    fn public_unicast_addresses_are_looked_up() {
        for a in [
            "8.8.8.8",
            "13.67.143.118",
            "20.38.108.5",
            "168.63.129.17",
            "100.128.0.1",
            "100.63.255.255",
            "172.32.0.1",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "1.0.0.1",
            "2001:4860:4860::8888",
            "2603:1020::1",
            "3fff:ffff::1",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_internet_routable(ip(a)), "{a} must be looked up");
        }
    }
}
