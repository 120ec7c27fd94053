//! Named networks (`[[network]]`): the name of the network holding the most specific prefix
//! that matches an address, private or public.
use std::net::IpAddr;
use std::sync::Arc;

use crate::config::enrich::NetworkConfig;

use super::prefix_table::PrefixTable;

/// Every prefix of every `[[network]]`, with the network's name.
#[derive(Debug, Default)]
pub struct NetworkTable {
    table: PrefixTable<Arc<str>>,
}

impl NetworkTable {
    /// Builds the table from validated configuration, where a prefix belongs to one network
    /// only (`config::enrich::validate`); were one listed twice, the later network would win.
    pub fn from_config(networks: &[NetworkConfig]) -> NetworkTable {
        let mut table = PrefixTable::new();
        for n in networks {
            let name: Arc<str> = n.name.as_str().into();
            for cidr in &n.cidrs {
                table.insert(cidr.0, Arc::clone(&name));
            }
        }
        NetworkTable { table }
    }

    /// The name of the network with the most specific prefix holding `addr`.
    pub fn name_of(&self, addr: IpAddr) -> Option<&Arc<str>> {
        self.table.longest_match(addr).map(|(_, name)| name)
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::enrich::Cidr;

    fn network(name: &str, cidrs: &[&str]) -> NetworkConfig {
        NetworkConfig {
            name: name.to_owned(),
            cidrs: cidrs
                .iter()
                .map(|c| Cidr::parse(c).expect("test prefix"))
                .collect(),
        }
    }

    fn name(t: &NetworkTable, addr: &str) -> Option<String> {
        t.name_of(addr.parse().expect("test address"))
            .map(|n| n.to_string())
    }

    #[test]
    fn each_address_is_named_after_its_most_specific_network_ipv4_and_ipv6() {
        let t = NetworkTable::from_config(&[
            network("azure", &["10.0.0.0/8", "fd00::/8"]),
            network("hub", &["10.0.0.0/16", "fd00:0:0:1::/64"]),
            network("onprem", &["10.4.0.0/16", "192.168.0.0/24", "198.51.100.7"]),
            network("firewall", &["10.0.1.4"]),
        ]);
        assert_eq!(name(&t, "10.9.9.9").as_deref(), Some("azure"));
        assert_eq!(name(&t, "10.0.7.1").as_deref(), Some("hub"));
        assert_eq!(name(&t, "10.0.1.4").as_deref(), Some("firewall"));
        assert_eq!(name(&t, "10.0.1.5").as_deref(), Some("hub"));
        assert_eq!(name(&t, "10.4.200.1").as_deref(), Some("onprem"));
        assert_eq!(name(&t, "192.168.0.255").as_deref(), Some("onprem"));
        assert_eq!(name(&t, "192.168.1.0"), None);
        // A public address can be named too (an on-premises NAT address, say).
        assert_eq!(name(&t, "198.51.100.7").as_deref(), Some("onprem"));
        assert_eq!(name(&t, "198.51.100.8"), None);
        assert_eq!(name(&t, "fd00::1").as_deref(), Some("azure"));
        assert_eq!(name(&t, "fd00:0:0:1::9").as_deref(), Some("hub"));
        assert_eq!(name(&t, "fe80::1"), None);
        assert_eq!(name(&t, "::ffff:10.4.0.1").as_deref(), Some("onprem"));
    }
}
