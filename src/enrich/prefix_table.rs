//! Longest-prefix match of an IP address against IPv4 and IPv6 prefixes: the one structure
//! behind named networks, service tags and filter CIDRs.
//!
//! Backed by `prefix_trie::JointPrefixMap` (a tree-bitmap trie per address family). An
//! IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) is looked up as the IPv4 address it carries,
//! so one prefix list serves both spellings.
use std::net::IpAddr;

use ipnet::IpNet;
use prefix_trie::joint::JointPrefixMap;

/// Prefixes of both families with a value each.
#[derive(Clone)]
pub struct PrefixTable<V> {
    map: JointPrefixMap<IpNet, V>,
}

impl<V> Default for PrefixTable<V> {
    fn default() -> Self {
        PrefixTable {
            map: JointPrefixMap::new(),
        }
    }
}

impl<V> std::fmt::Debug for PrefixTable<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrefixTable")
            .field("prefixes", &self.len())
            .finish()
    }
}

impl<V> PrefixTable<V> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of distinct prefixes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Sets the value of `prefix` (host bits cleared), returning the one it replaces.
    pub fn insert(&mut self, prefix: IpNet, value: V) -> Option<V> {
        self.map.insert(prefix.trunc(), value)
    }

    /// The value stored for exactly `prefix`.
    pub fn get_mut(&mut self, prefix: IpNet) -> Option<&mut V> {
        self.map.get_mut(&prefix.trunc())
    }

    /// The most specific prefix holding `addr`, and its value.
    pub fn longest_match(&self, addr: IpAddr) -> Option<(IpNet, &V)> {
        self.map.get_lpm(&IpNet::from(addr.to_canonical()))
    }

    /// Whether any prefix holds `addr`.
    pub fn contains(&self, addr: IpAddr) -> bool {
        self.longest_match(addr).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("test prefix")
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn the_most_specific_prefix_wins_for_ipv4_and_ipv6() {
        let mut t = PrefixTable::new();
        t.insert(net("10.0.0.0/8"), "eight");
        t.insert(net("10.1.0.0/16"), "sixteen");
        t.insert(net("10.1.2.0/24"), "twenty-four");
        t.insert(net("2001:db8::/32"), "v6-32");
        t.insert(net("2001:db8:1::/48"), "v6-48");
        assert_eq!(
            t.longest_match(ip("10.9.9.9")),
            Some((net("10.0.0.0/8"), &"eight"))
        );
        assert_eq!(
            t.longest_match(ip("10.1.9.9")),
            Some((net("10.1.0.0/16"), &"sixteen"))
        );
        assert_eq!(
            t.longest_match(ip("10.1.2.255")),
            Some((net("10.1.2.0/24"), &"twenty-four"))
        );
        assert_eq!(t.longest_match(ip("11.0.0.1")), None);
        assert_eq!(
            t.longest_match(ip("2001:db8:1:ffff::1")),
            Some((net("2001:db8:1::/48"), &"v6-48"))
        );
        assert_eq!(
            t.longest_match(ip("2001:db8:2::1")),
            Some((net("2001:db8::/32"), &"v6-32"))
        );
        assert_eq!(t.longest_match(ip("2001:db9::1")), None);
        assert_eq!(t.len(), 5);
    }

    #[test]
    fn an_ipv4_mapped_ipv6_address_is_looked_up_as_ipv4() {
        let mut t = PrefixTable::new();
        t.insert(net("192.168.0.0/24"), 1);
        assert_eq!(
            t.longest_match(ip("::ffff:192.168.0.9")).map(|(_, v)| *v),
            Some(1)
        );
        // An IPv6 prefix covering ::ffff:0:0/96 does not see IPv4 addresses.
        let mut v6 = PrefixTable::new();
        v6.insert(net("::ffff:0:0/96"), 2);
        assert!(!v6.contains(ip("192.168.0.9")));
    }

    #[test]
    fn host_bits_of_an_inserted_prefix_are_ignored_and_a_default_route_matches_all() {
        let mut t = PrefixTable::new();
        t.insert(net("10.1.2.3/16"), 'a');
        t.insert(net("0.0.0.0/0"), 'z');
        assert_eq!(
            t.longest_match(ip("10.1.200.1")),
            Some((net("10.1.0.0/16"), &'a'))
        );
        assert_eq!(
            t.longest_match(ip("8.8.8.8")),
            Some((net("0.0.0.0/0"), &'z'))
        );
        assert!(t.get_mut(net("10.1.0.0/16")).is_some());
    }
}
