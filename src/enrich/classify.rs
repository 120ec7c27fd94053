//! Address classification: private vs public endpoints (`azure.flowlog.flow_type`) and the
//! Azure platform address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Azure's virtual public IP for platform services (DHCP, DNS, health probes, VM agent).
/// It is not on the internet, so flows to it are labelled [`FlowType::AzurePlatform`]
/// rather than "private-to-public".
pub const AZURE_PLATFORM_IP: Ipv4Addr = Ipv4Addr::new(168, 63, 129, 16);

/// Where a flow goes, by its two endpoints (`azure.flowlog.flow_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlowType {
    PrivateToPrivate,
    PrivateToPublic,
    PublicToPrivate,
    PublicToPublic,
    /// Either endpoint is [`AZURE_PLATFORM_IP`]; takes precedence over the other labels.
    AzurePlatform,
}

impl FlowType {
    pub const fn as_str(self) -> &'static str {
        match self {
            FlowType::PrivateToPrivate => "private-to-private",
            FlowType::PrivateToPublic => "private-to-public",
            FlowType::PublicToPrivate => "public-to-private",
            FlowType::PublicToPublic => "public-to-public",
            FlowType::AzurePlatform => "azure-platform",
        }
    }
}

/// True for addresses in RFC 1918 (10/8, 172.16/12, 192.168/16), RFC 6598 shared address space
/// (100.64/10, used by carrier-grade NAT and some Azure services) and IPv6 unique local
/// addresses (fc00::/7). An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) is judged by its IPv4
/// address.
///
/// Everything else counts as public, including loopback, link-local (169.254/16, fe80::/10)
/// and multicast: the classification is about the documented private ranges, not routability.
pub fn is_private(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => is_private_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_private_v4(v4),
            None => is_ula(v6),
        },
    }
}

fn is_private_v4(v4: Ipv4Addr) -> bool {
    let [a, b, ..] = v4.octets();
    a == 10
        || (a == 172 && (b & 0xf0) == 16)
        || (a == 192 && b == 168)
        || (a == 100 && (b & 0xc0) == 64)
}

fn is_ula(v6: Ipv6Addr) -> bool {
    (v6.segments()[0] & 0xfe00) == 0xfc00
}

/// True for 168.63.129.16, also when written as an IPv4-mapped IPv6 address.
pub fn is_azure_platform(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => v4 == AZURE_PLATFORM_IP,
        IpAddr::V6(v6) => v6.to_ipv4_mapped() == Some(AZURE_PLATFORM_IP),
    }
}

/// Classifies a flow by its source and destination.
pub fn flow_type(src: IpAddr, dst: IpAddr) -> FlowType {
    if is_azure_platform(src) || is_azure_platform(dst) {
        return FlowType::AzurePlatform;
    }
    match (is_private(src), is_private(dst)) {
        (true, true) => FlowType::PrivateToPrivate,
        (true, false) => FlowType::PrivateToPublic,
        (false, true) => FlowType::PublicToPrivate,
        (false, false) => FlowType::PublicToPublic,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn private_ranges_and_their_edges() {
        for p in [
            "10.0.0.0",
            "10.255.255.255",
            "172.16.0.0",
            "172.31.255.255",
            "192.168.0.0",
            "192.168.255.255",
            "100.64.0.0",
            "100.127.255.255",
            "fc00::",
            "fd12:3456:789a::1",
            "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::ffff:10.1.2.3",
            "::ffff:100.64.0.1",
        ] {
            assert!(is_private(ip(p)), "{p} should be private");
        }
        for p in [
            "9.255.255.255",
            "11.0.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "192.169.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "8.8.8.8",
            "13.67.143.118",
            "127.0.0.1",
            "169.254.169.254",
            "fbff:ffff::1",
            "fe00::",
            "fe80::1",
            "2001:db8::1",
            "::1",
            "::ffff:8.8.8.8",
            // IPv4-compatible (deprecated, not mapped): an IPv6 address, not 10.0.0.1.
            "::10.0.0.1",
        ] {
            assert!(!is_private(ip(p)), "{p} should be public");
        }
    }

    #[test]
    fn flow_types() {
        assert_eq!(
            flow_type(ip("10.0.0.4"), ip("10.0.0.5")),
            FlowType::PrivateToPrivate
        );
        assert_eq!(
            flow_type(ip("10.0.0.4"), ip("13.67.143.118")),
            FlowType::PrivateToPublic
        );
        assert_eq!(
            flow_type(ip("104.211.0.1"), ip("10.0.0.4")),
            FlowType::PublicToPrivate
        );
        assert_eq!(
            flow_type(ip("1.1.1.1"), ip("8.8.8.8")),
            FlowType::PublicToPublic
        );
        assert_eq!(
            flow_type(ip("fd00::1"), ip("2001:db8::1")),
            FlowType::PrivateToPublic
        );
        assert_eq!(
            flow_type(ip("100.64.1.1"), ip("192.168.1.1")),
            FlowType::PrivateToPrivate
        );
    }

    #[test]
    fn azure_platform_wins_in_both_directions() {
        assert_eq!(
            flow_type(ip("10.0.0.4"), ip("168.63.129.16")),
            FlowType::AzurePlatform
        );
        assert_eq!(
            flow_type(ip("168.63.129.16"), ip("10.0.0.4")),
            FlowType::AzurePlatform
        );
        assert_eq!(
            flow_type(ip("168.63.129.16"), ip("8.8.8.8")),
            FlowType::AzurePlatform
        );
        assert_eq!(
            flow_type(ip("::ffff:168.63.129.16"), ip("10.0.0.4")),
            FlowType::AzurePlatform
        );
        assert_eq!(
            flow_type(ip("10.0.0.4"), ip("168.63.129.17")),
            FlowType::PrivateToPublic
        );
        assert!(!is_private(IpAddr::V4(AZURE_PLATFORM_IP)));
    }

    #[test]
    fn labels() {
        assert_eq!(FlowType::PrivateToPrivate.as_str(), "private-to-private");
        assert_eq!(FlowType::PrivateToPublic.as_str(), "private-to-public");
        assert_eq!(FlowType::PublicToPrivate.as_str(), "public-to-private");
        assert_eq!(FlowType::PublicToPublic.as_str(), "public-to-public");
        assert_eq!(FlowType::AzurePlatform.as_str(), "azure-platform");
    }
}
