//! Community ID v1 flow hashes (`network.community_id`), bit-for-bit as Zeek, Suricata and
//! Elasticsearch's `community_id` processor compute them.
//!
//! Spec: <https://github.com/corelight/community-id-spec> (README and `baseline/`), reference
//! implementation: corelight/pycommunityid (`communityid/algo.py`, `icmp.py`, `icmp6.py`).
//!
//! Hash input (network byte order, 32-bit aligned):
//! `seed(2) . addr_lo(4|16) . addr_hi(4|16) . proto(1) . 0(1) [. port_lo(2) . port_hi(2)]`,
//! where the endpoints are ordered so the smaller `(addr, port)` comes first, except for
//! one-way ICMP messages, which keep their direction. Ports are hashed only for the protocols
//! that have them in the spec (TCP, UDP, SCTP, and ICMP/ICMPv6 with type/code as ports); any
//! other IP protocol hashes the addresses and the protocol number alone.

use std::fmt;
use std::net::IpAddr;

use base64::Engine as _;
use sha1::{Digest, Sha1};

use crate::flowlog::protocol::{ICMP, ICMPV6, SCTP, TCP, UDP};

/// Length of a v1 Community ID: `"1:"` plus 28 characters of padded base64 of a SHA-1 digest.
pub const COMMUNITY_ID_LEN: usize = 30;

/// A Community ID v1 string kept on the stack (no allocation per tuple).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CommunityId {
    bytes: [u8; COMMUNITY_ID_LEN],
}

impl CommunityId {
    /// The ID, e.g. `1:wCb3OG7yAFWelaUydu0D+125CLM=`.
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever written into `bytes` (a prefix and base64 output), so the
        // fallback is unreachable; it exists to keep this path free of panics and `unsafe`.
        std::str::from_utf8(&self.bytes).unwrap_or("")
    }

    /// The ID as ASCII bytes, for writers that fill a `Vec<u8>` directly.
    pub fn as_bytes(&self) -> &[u8; COMMUNITY_ID_LEN] {
        &self.bytes
    }
}

impl fmt::Display for CommunityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for CommunityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CommunityId({})", self.as_str())
    }
}

impl AsRef<str> for CommunityId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// Zeek's `ICMP4_counterpart`: request/reply types that form a two-way "connection".
fn icmp4_counterpart(icmp_type: u16) -> Option<u16> {
    Some(match icmp_type {
        8 => 0,   // echo request -> echo reply
        0 => 8,   // echo reply -> echo request
        13 => 14, // timestamp
        14 => 13,
        15 => 16, // information
        16 => 15,
        10 => 9, // router solicitation -> advertisement
        9 => 10,
        17 => 18, // address mask
        18 => 17,
        _ => return None,
    })
}

/// Zeek's `ICMP6_counterpart`.
fn icmp6_counterpart(icmp_type: u16) -> Option<u16> {
    Some(match icmp_type {
        128 => 129, // echo request -> echo reply
        129 => 128,
        130 => 131, // MLD listener query -> report
        131 => 130,
        133 => 134, // router solicitation -> advertisement
        134 => 133,
        135 => 136, // neighbor solicitation -> advertisement
        136 => 135,
        139 => 140, // node information (who-are-you) query -> reply
        140 => 139,
        144 => 145, // home agent address discovery request -> reply
        145 => 144,
        _ => return None,
    })
}

/// An address in the byte form that is hashed: 4 bytes for IPv4, 16 for IPv6.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum AddrBytes {
    V4([u8; 4]),
    V6([u8; 16]),
}

impl AddrBytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            AddrBytes::V4(b) => b,
            AddrBytes::V6(b) => b,
        }
    }
}

/// Computes the Community ID v1 of a flow.
///
/// `proto` is the IANA protocol number. For ICMP (1) and ICMPv6 (58), `src_port` is the ICMP
/// type and `dst_port` the ICMP code, as in the spec and Elasticsearch's processor. For
/// protocols other than TCP, UDP, SCTP, ICMP and ICMPv6 the ports are ignored (the spec hashes
/// "other IP-borne protocols" without ports).
///
/// Both addresses normally share a family. If they do not (no real flow does), the IPv4 one is
/// hashed as its IPv4-mapped IPv6 form so the hash input stays well-formed.
pub fn community_id_v1(
    seed: u16,
    proto: u8,
    src: IpAddr,
    src_port: u16,
    dst: IpAddr,
    dst_port: u16,
) -> CommunityId {
    let (mut a, mut b) = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (AddrBytes::V4(s.octets()), AddrBytes::V4(d.octets())),
        (s, d) => (AddrBytes::V6(v6_octets(s)), AddrBytes::V6(v6_octets(d))),
    };

    let has_ports = matches!(proto, ICMP | TCP | UDP | ICMPV6 | SCTP);
    let (mut pa, mut pb) = if has_ports {
        (src_port, dst_port)
    } else {
        (0, 0)
    };

    let mut one_way = false;
    if proto == ICMP || proto == ICMPV6 {
        let counterpart = if proto == ICMP {
            icmp4_counterpart(src_port)
        } else {
            icmp6_counterpart(src_port)
        };
        match counterpart {
            Some(c) => pb = c,
            // Not a request/reply type: (type, code) as given, and never flipped.
            None => one_way = true,
        }
    }

    if !one_way && (a, pa) > (b, pb) {
        std::mem::swap(&mut a, &mut b);
        std::mem::swap(&mut pa, &mut pb);
    }

    // Largest input: 2 + 16 + 16 + 2 + 4 = 40 bytes.
    let mut input = [0u8; 40];
    let mut n = 0;
    let mut put = |bytes: &[u8]| {
        input[n..n + bytes.len()].copy_from_slice(bytes);
        n += bytes.len();
    };
    put(&seed.to_be_bytes());
    put(a.as_slice());
    put(b.as_slice());
    put(&[proto, 0]);
    if has_ports {
        put(&pa.to_be_bytes());
        put(&pb.to_be_bytes());
    }

    let digest = Sha1::digest(&input[..n]);

    let mut bytes = [0u8; COMMUNITY_ID_LEN];
    bytes[0] = b'1';
    bytes[1] = b':';
    // 20 bytes always encode to exactly 28 padded base64 characters, which fit.
    let _ = base64::engine::general_purpose::STANDARD.encode_slice(digest, &mut bytes[2..]);
    CommunityId { bytes }
}

fn v6_octets(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cid(seed: u16, proto: u8, src: &str, sp: u16, dst: &str, dp: u16) -> String {
        let src: IpAddr = src.parse().expect("test address");
        let dst: IpAddr = dst.parse().expect("test address");
        community_id_v1(seed, proto, src, sp, dst, dp)
            .as_str()
            .to_owned()
    }

    /// Checks a vector in both directions where the spec says both map to the same ID.
    fn both_ways(seed: u16, proto: u8, a: &str, pa: u16, b: &str, pb: u16, expected: &str) {
        assert_eq!(
            cid(seed, proto, a, pa, b, pb),
            expected,
            "{a}:{pa} -> {b}:{pb}"
        );
        assert_eq!(
            cid(seed, proto, b, pb, a, pa),
            expected,
            "{b}:{pb} -> {a}:{pa}"
        );
    }

    const V6_A: &str = "fe80:0001:0203:0405:0607:0809:0A0B:0C0D";
    const V6_B: &str = "fe80:1011:1213:1415:1617:1819:1A1B:1C1D";

    // The following tables are the "Default settings" and "A custom seed=1 value" tables of
    // corelight/community-id-spec `baseline/README.md` (generated by `baseline/make-tables.py`
    // with pycommunityid). The same seed-0 values appear in Zeek's
    // `testing/btest/bifs/community_id/` tests.

    #[test]
    fn spec_baseline_tcp_udp_sctp_seed0() {
        both_ways(
            0,
            6,
            "1.2.3.4",
            1122,
            "5.6.7.8",
            3344,
            "1:wCb3OG7yAFWelaUydu0D+125CLM=",
        );
        both_ways(
            0,
            17,
            "1.2.3.4",
            1122,
            "5.6.7.8",
            3344,
            "1:0Mu9InQx6z4ZiCZM/7HXi2WMhOg=",
        );
        both_ways(
            0,
            132,
            "1.2.3.4",
            1122,
            "5.6.7.8",
            3344,
            "1:EKt4MsxuyaE6mL+hmrEkQ9csDD8=",
        );
    }

    #[test]
    fn spec_baseline_icmp_seed0() {
        // Echo request 8/0 and its reply 0/0 (reply sent from 5.6.7.8) share an ID.
        assert_eq!(
            cid(0, 1, "1.2.3.4", 8, "5.6.7.8", 0),
            "1:crodRHL2FEsHjbv3UkRrfbs4bZ0="
        );
        assert_eq!(
            cid(0, 1, "5.6.7.8", 0, "1.2.3.4", 0),
            "1:crodRHL2FEsHjbv3UkRrfbs4bZ0="
        );
        // Time exceeded (11) is one-way: no counterpart, no flipping.
        assert_eq!(
            cid(0, 1, "1.2.3.4", 11, "5.6.7.8", 0),
            "1:f/YiSyWqczrTgfUCZlBUnvHRcPk="
        );
    }

    #[test]
    fn spec_baseline_icmpv6_seed0() {
        assert_eq!(
            cid(0, 58, V6_A, 128, V6_B, 0),
            "1:0bf7hyMJUwt3fMED7z8LIfRpBeo="
        );
        assert_eq!(
            cid(0, 58, V6_B, 129, V6_A, 0),
            "1:0bf7hyMJUwt3fMED7z8LIfRpBeo="
        );
        // Type 146 has no counterpart: one-way.
        assert_eq!(
            cid(0, 58, V6_A, 146, V6_B, 0),
            "1:fYC8+pz24E+EhANP1EZhpX0Dw10="
        );
    }

    #[test]
    fn spec_baseline_portless_rsvp_seed0() {
        // RSVP (46) has no ports in the spec; whatever ports a flow log carries are ignored.
        both_ways(
            0,
            46,
            "1.2.3.4",
            0,
            "5.6.7.8",
            0,
            "1:ikv3kmf89luf73WPz1jOs49S768=",
        );
        both_ways(
            0,
            46,
            "1.2.3.4",
            1234,
            "5.6.7.8",
            80,
            "1:ikv3kmf89luf73WPz1jOs49S768=",
        );
        both_ways(0, 46, V6_A, 0, V6_B, 0, "1:wQ/2mwrnXP4lmJcHdGL5ePjR+e0=");
    }

    #[test]
    fn spec_baseline_seed1() {
        both_ways(
            1,
            6,
            "1.2.3.4",
            1122,
            "5.6.7.8",
            3344,
            "1:HhA1B+6CoLbiKPEs5nhNYN4XWfk=",
        );
        both_ways(
            1,
            17,
            "1.2.3.4",
            1122,
            "5.6.7.8",
            3344,
            "1:OShq+iKDAMVouh/4bMxB9Sz4amw=",
        );
        both_ways(
            1,
            132,
            "1.2.3.4",
            1122,
            "5.6.7.8",
            3344,
            "1:uitchpn5MMGAQKBJh7bIr/bAr7s=",
        );
        assert_eq!(
            cid(1, 1, "1.2.3.4", 8, "5.6.7.8", 0),
            "1:9pr4ZGTICiuZoIh90RRYE2RyXpU="
        );
        assert_eq!(
            cid(1, 1, "5.6.7.8", 0, "1.2.3.4", 0),
            "1:9pr4ZGTICiuZoIh90RRYE2RyXpU="
        );
        assert_eq!(
            cid(1, 1, "1.2.3.4", 11, "5.6.7.8", 0),
            "1:1DD7cWGC/Yg91YGsQeni8du3pIA="
        );
        assert_eq!(
            cid(1, 58, V6_A, 128, V6_B, 0),
            "1:IO27GQzPuCtNnwFvjWALMHu5tJE="
        );
        assert_eq!(
            cid(1, 58, V6_B, 129, V6_A, 0),
            "1:IO27GQzPuCtNnwFvjWALMHu5tJE="
        );
        assert_eq!(
            cid(1, 58, V6_A, 146, V6_B, 0),
            "1:Cv4IKJe56BNkF0MBW2YxQ3Nwc3s="
        );
        both_ways(
            1,
            46,
            "1.2.3.4",
            0,
            "5.6.7.8",
            0,
            "1:/buhqeOmaRCopOZFy9HnoJd5XW8=",
        );
        both_ways(1, 46, V6_A, 0, V6_B, 0, "1:j6EyyfBzL4vWKHFXgUqb5Az3OxM=");
    }

    // corelight/community-id-spec `baseline/baseline_deflt.json`: pycommunityid's
    // `community-id-pcap` run over the spec's `pcaps/combined.pcap.gz` (real packets).
    #[test]
    fn spec_baseline_json_from_pcaps() {
        // IPv6 TCP (SMTP) both directions.
        both_ways(
            0,
            6,
            "2001:470:e5bf:dead:4957:2174:e82c:4887",
            63943,
            "2607:f8b0:400c:c03::1a",
            25,
            "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4=",
        );
        both_ways(
            0,
            6,
            "128.232.110.120",
            34855,
            "66.35.250.204",
            80,
            "1:LQU9qZlK+B5F3KDmev6m5PMibrg=",
        );
        both_ways(
            0,
            17,
            "192.168.1.52",
            54585,
            "8.8.8.8",
            53,
            "1:d/FP5EW3wiY1vCndhwleRRKHowQ=",
        );
        both_ways(
            0,
            132,
            "192.168.170.8",
            7,
            "192.168.170.56",
            7,
            "1:MP2EtRCAUIZvTw6MxJHLV7N7JDs=",
        );
        both_ways(
            0,
            46,
            "10.1.12.1",
            0,
            "10.1.12.2",
            0,
            "1:KHlLkgoJW7ifUTyTSgyVfkFHzKw=",
        );
        // ICMP echo request and reply.
        assert_eq!(
            cid(0, 1, "192.168.0.89", 8, "192.168.0.1", 0),
            "1:X0snYXpgwiv9TZtqg64sgzUn6Dk="
        );
        assert_eq!(
            cid(0, 1, "192.168.0.1", 0, "192.168.0.89", 8),
            "1:X0snYXpgwiv9TZtqg64sgzUn6Dk="
        );
        // ICMP time exceeded: one-way.
        assert_eq!(
            cid(0, 1, "10.0.0.1", 11, "10.0.0.2", 0),
            "1:YHxtAirCG//0OzkcVAukqKQN9xM="
        );
        // ICMPv6 neighbour solicitation/advertisement pairs (135 <-> 136).
        let (a, b) = ("fe80::200:86ff:fe05:80da", "fe80::260:97ff:fe07:69ea");
        assert_eq!(cid(0, 58, a, 135, b, 136), "1:dGHyGvjMfljg6Bppwm3bg0LO8TY=");
        assert_eq!(cid(0, 58, b, 136, a, 135), "1:dGHyGvjMfljg6Bppwm3bg0LO8TY=");
        assert_eq!(cid(0, 58, b, 135, a, 136), "1:zavyT/cezQr1fmImYCwYnMXbgck=");
        assert_eq!(cid(0, 58, a, 136, b, 135), "1:zavyT/cezQr1fmImYCwYnMXbgck=");
        // ICMPv6 destination unreachable (1) and time exceeded (3): one-way, (type, code) kept.
        assert_eq!(
            cid(
                0,
                58,
                "3ffe:501:1800:2345::2",
                3,
                "3ffe:507:0:1:200:86ff:fe05:80da",
                0
            ),
            "1:2ObVBgIn28oZvibYZhZMBgh7WdQ="
        );
        assert_eq!(
            cid(
                0,
                58,
                "3ffe:501:410:0:2c0:dfff:fe47:33e",
                1,
                "3ffe:507:0:1:200:86ff:fe05:80da",
                4
            ),
            "1:hLZd0XGWojozrvxqE0dWB1iM6R0="
        );
        // ICMPv6 echo request/reply.
        let (c, d) = ("3ffe:507:0:1:200:86ff:fe05:80da", "3ffe:501:0:1001::2");
        assert_eq!(cid(0, 58, c, 128, d, 129), "1:+TW+HtLHvV1xnGhV1lv7XoJrqQg=");
        assert_eq!(cid(0, 58, d, 129, c, 128), "1:+TW+HtLHvV1xnGhV1lv7XoJrqQg=");
        // Router solicitation/advertisement to multicast groups (the spec README's example ID).
        assert_eq!(
            cid(0, 58, a, 133, "ff02::2", 134),
            "1:hO+sN4H+MG5MY/8hIrXPqc4ZQz0="
        );
        assert_eq!(
            cid(0, 58, b, 134, "ff02::1", 133),
            "1:pkvHqCL88/tg1k4cPigmZXUtL00="
        );
    }

    #[test]
    fn same_address_orders_by_port() {
        // Spec README: when the addresses are equal, the ports decide the order.
        let x = cid(0, 6, "10.0.0.1", 80, "10.0.0.1", 1234);
        let y = cid(0, 6, "10.0.0.1", 1234, "10.0.0.1", 80);
        assert_eq!(x, y);
    }

    #[test]
    fn mixed_families_do_not_panic_and_are_symmetric() {
        let x = cid(0, 6, "10.0.0.1", 80, "2001:db8::1", 1234);
        let y = cid(0, 6, "2001:db8::1", 1234, "10.0.0.1", 80);
        assert_eq!(x, y);
        assert_eq!(x, cid(0, 6, "::ffff:10.0.0.1", 80, "2001:db8::1", 1234));
    }

    #[test]
    fn shape() {
        let id = community_id_v1(
            0,
            6,
            "10.0.0.4".parse().expect("addr"),
            44931,
            "13.67.143.118".parse().expect("addr"),
            443,
        );
        assert_eq!(id.as_str().len(), COMMUNITY_ID_LEN);
        assert!(id.as_str().starts_with("1:"));
        assert!(id.as_str().ends_with('='));
        assert_eq!(id.to_string(), id.as_str());
        assert_eq!(&id.as_bytes()[..], id.as_str().as_bytes());
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn any_ip() -> impl Strategy<Value = IpAddr> {
            prop_oneof![
                any::<[u8; 4]>().prop_map(IpAddr::from),
                any::<[u8; 16]>().prop_map(IpAddr::from),
            ]
        }

        proptest! {
            #[test]
            fn direction_does_not_matter_for_port_protocols(
                seed: u16,
                proto in prop_oneof![Just(6u8), Just(17), Just(132)],
                (a, b) in prop_oneof![
                    (any::<[u8; 4]>(), any::<[u8; 4]>()).prop_map(|(a, b)| (IpAddr::from(a), IpAddr::from(b))),
                    (any::<[u8; 16]>(), any::<[u8; 16]>()).prop_map(|(a, b)| (IpAddr::from(a), IpAddr::from(b))),
                ],
                pa: u16,
                pb: u16,
            ) {
                prop_assert_eq!(
                    community_id_v1(seed, proto, a, pa, b, pb),
                    community_id_v1(seed, proto, b, pb, a, pa)
                );
            }

            #[test]
            fn never_panics_and_is_ascii(seed: u16, proto: u8, a in any_ip(), pa: u16, b in any_ip(), pb: u16) {
                let id = community_id_v1(seed, proto, a, pa, b, pb);
                prop_assert_eq!(id.as_str().len(), COMMUNITY_ID_LEN);
                prop_assert!(id.as_str().starts_with("1:"));
            }
        }
    }
}
