//! The enrichment and filter options as the configuration file states them: `[enrich]` (service
//! tags and MaxMind files), `[[network]]` (named address ranges) and `[[filter]]` (drop/keep
//! rules); types, defaults and validation only (lookups and matching live in `crate::enrich`).
//!
//! Values that have a syntax (CIDRs, port ranges, protocols) are parsed while the file is read,
//! so a bad one is reported with its key by the same path as any other type error, and the
//! enrichment code receives them parsed.
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::{ConfigError, DAY, SECOND, check_duration, de_duration};

/// File-backed lookups (`[enrich]`). Every file is optional; each one configured is read at
/// startup (a missing or malformed file stops startup with an error naming it) and read again
/// when it changes (checked every `reload_interval`; a file that fails to load then keeps the
/// previous table, and the failure is logged with the reason).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrichConfig {
    /// Microsoft's Azure IP ranges and service tags, public cloud (`ServiceTags_Public_YYYYMMDD.json`,
    /// downloaded by the user; flowlogd never fetches it). Internet-routable addresses get the
    /// service and region of their most specific prefix. Default: none.
    #[serde(default)]
    pub service_tags_file: Option<PathBuf>,
    /// A MaxMind DB with locations: GeoLite2-City, GeoLite2-Country, GeoIP2-City/-Country (or a
    /// compatible one such as DB-IP's lite City database). Internet-routable addresses get
    /// country, city and location. Default: none.
    #[serde(default)]
    pub geoip_file: Option<PathBuf>,
    /// A MaxMind DB with autonomous systems: GeoLite2-ASN (or GeoIP2-ISP). Internet-routable
    /// addresses get AS number and organization. Default: none.
    #[serde(default)]
    pub asn_file: Option<PathBuf>,
    /// How often the files above are checked for changes (size, modification time, inode),
    /// `"1s"` to `"1d"`. Default: `"5m"`.
    #[serde(default = "default_reload_interval", deserialize_with = "de_duration")]
    pub reload_interval: Duration,
}

fn default_reload_interval() -> Duration {
    Duration::from_secs(300)
}

impl Default for EnrichConfig {
    fn default() -> Self {
        EnrichConfig {
            service_tags_file: None,
            geoip_file: None,
            asn_file: None,
            reload_interval: default_reload_interval(),
        }
    }
}

/// A named set of address ranges (`[[network]]`): on-premises, hub, spokes. Each side of a
/// tuple is named after the network holding its most specific matching prefix.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// Name written into documents and used by filters: letters, digits, `-`, `_`, `.`. Required.
    pub name: String,
    /// IPv4 and IPv6 prefixes (`"10.4.0.0/16"`, `"fd00:4::/48"`) or single addresses
    /// (`"192.0.2.7"`, taken as /32 or /128); host bits after the prefix length are ignored.
    /// At least one. A prefix may belong to one network only.
    pub cidrs: Vec<Cidr>,
}

/// What a `[[filter]]` rule does with the tuples it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FilterAction {
    /// The tuple is not indexed (its bytes still count as read).
    Drop,
    /// The tuple is indexed. Once any rule keeps, tuples matched by no rule are dropped.
    Keep,
}

/// The direction field of a tuple, as a filter names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FilterDirection {
    Inbound,
    Outbound,
}

/// The decision of a tuple, as a filter names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FilterDecision {
    Allow,
    Deny,
}

/// The flow state of a tuple (NSG v2 and VNet), as a filter names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FilterState {
    Begin,
    Continuing,
    End,
    /// VNet flow logs only: the flow was denied.
    Deny,
}

/// One `[[filter]]` rule. Rules are tried in file order and the first one whose every given
/// condition matches decides; a condition given as a list matches when any element does.
/// Tuples matched by no rule are kept, unless some rule has `action = "keep"`: then they are
/// dropped. At least one condition is required (a rule without one would match everything).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterRuleConfig {
    /// Name of the rule in metrics (`flowlogd_tuples_filtered_total{rule=…}`) and logs: letters,
    /// digits, `-`, `_`, `.`; unique. Required.
    pub name: String,
    /// `"drop"` or `"keep"`. Required.
    pub action: FilterAction,
    /// The source address lies in one of these prefixes (or equals one of these addresses).
    #[serde(default)]
    pub source_cidr: Vec<Cidr>,
    /// The destination address lies in one of these prefixes.
    #[serde(default)]
    pub destination_cidr: Vec<Cidr>,
    /// The source address lies in one of these `[[network]]`s (any of its prefixes, also where
    /// a more specific network names the address).
    #[serde(default)]
    pub source_network: Vec<String>,
    /// The destination address lies in one of these `[[network]]`s.
    #[serde(default)]
    pub destination_network: Vec<String>,
    /// The source port is one of these ports (`53`) or ranges (`"1024-65535"`).
    #[serde(default)]
    pub source_port: Vec<PortRange>,
    /// The destination port is one of these ports or ranges.
    #[serde(default)]
    pub destination_port: Vec<PortRange>,
    /// The protocol is one of these: IANA numbers (`6`) or `"tcp"`, `"udp"`, `"icmp"`,
    /// `"icmpv6"`, `"gre"`, `"esp"`, `"ah"`, `"sctp"`.
    #[serde(default)]
    pub protocol: Vec<Protocol>,
    /// `"inbound"` or `"outbound"` (as seen by the NIC).
    #[serde(default)]
    pub direction: Option<FilterDirection>,
    /// `"allow"` or `"deny"`.
    #[serde(default)]
    pub decision: Option<FilterDecision>,
    /// The flow state is one of `"begin"`, `"continuing"`, `"end"`, `"deny"` (NSG v1 tuples
    /// have no state and never match this condition).
    #[serde(default)]
    pub state: Vec<FilterState>,
    /// The NSG rule (`rule.name`) is one of these names, compared case-insensitively.
    #[serde(default)]
    pub nsg_rule: Vec<String>,
    /// The NSG (of an NSG flow log, or the deciding NSG of a VNet flow log) is one of these
    /// names, case-insensitively.
    #[serde(default)]
    pub nsg: Vec<String>,
    /// The VNet of a VNet flow log's target is one of these names, case-insensitively.
    #[serde(default)]
    pub vnet: Vec<String>,
    /// The subnet of a VNet flow log's target is one of these names, case-insensitively.
    #[serde(default)]
    pub subnet: Vec<String>,
    /// The NIC of a VNet flow log's target is one of these names, case-insensitively.
    #[serde(default)]
    pub nic: Vec<String>,
}

impl FilterRuleConfig {
    /// Whether the rule states any condition.
    pub fn has_condition(&self) -> bool {
        !(self.source_cidr.is_empty()
            && self.destination_cidr.is_empty()
            && self.source_network.is_empty()
            && self.destination_network.is_empty()
            && self.source_port.is_empty()
            && self.destination_port.is_empty()
            && self.protocol.is_empty()
            && self.direction.is_none()
            && self.decision.is_none()
            && self.state.is_empty()
            && self.nsg_rule.is_empty()
            && self.nsg.is_empty()
            && self.vnet.is_empty()
            && self.subnet.is_empty()
            && self.nic.is_empty())
    }
}

/// An IPv4 or IPv6 prefix, written `"10.4.0.0/16"` or as a bare address (a /32 or /128). Host
/// bits after the prefix length are cleared, as every longest-prefix table would do anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr(pub IpNet);

impl Cidr {
    /// Parses `"10.4.0.0/16"`, `"fd00::/8"` or a bare address.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        if let Ok(net) = text.parse::<IpNet>() {
            return Ok(Cidr(net.trunc()));
        }
        if let Ok(addr) = text.parse::<IpAddr>() {
            return Ok(Cidr(IpNet::from(addr)));
        }
        Err(format!(
            "{text:?} is not a prefix: expected an IPv4 or IPv6 address with an optional \
             /length, such as \"10.4.0.0/16\" or \"fd00:4::/48\""
        ))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct CidrVisitor;
        impl Visitor<'_> for CidrVisitor {
            type Value = Cidr;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a prefix such as \"10.4.0.0/16\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Cidr, E> {
                Cidr::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_str(CidrVisitor)
    }
}

/// An inclusive range of ports, written `443` or `"1024-65535"` (`"443"` works too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    /// Whether `port` lies in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    /// Parses `"443"` or `"1024-65535"`.
    pub fn parse(text: &str) -> Result<PortRange, String> {
        let port = |s: &str| {
            s.trim().parse::<u16>().map_err(|_| {
                format!("{text:?} is not a port or port range: ports are 0 to 65535, ranges \"first-last\"")
            })
        };
        let (first, last) = match text.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => {
                let p = port(text)?;
                (p, p)
            }
        };
        if first > last {
            return Err(format!(
                "{text:?} is an empty port range: the first port must not exceed the last"
            ));
        }
        Ok(PortRange { first, last })
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PortVisitor;
        impl Visitor<'_> for PortVisitor {
            type Value = PortRange;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a port (443) or a range (\"1024-65535\")")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortRange, E> {
                let p = u16::try_from(v)
                    .map_err(|_| E::custom(format!("port {v} is out of range (0 to 65535)")))?;
                Ok(PortRange { first: p, last: p })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortRange, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format!("port {v} is out of range (0 to 65535)"))),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PortRange, E> {
                PortRange::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(PortVisitor)
    }
}

/// An IP protocol number, written as a number (`6`) or one of the names flow logs carry in
/// practice. A short fixed list on purpose: NSG flow logs know only TCP and UDP, VNet flow
/// logs add ICMP and a few tunnelling protocols; any other protocol is given by number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protocol(pub u8);

const PROTOCOL_NAMES: &[(&str, u8)] = &[
    ("icmp", 1),
    ("tcp", 6),
    ("udp", 17),
    ("gre", 47),
    ("esp", 50),
    ("ah", 51),
    ("icmpv6", 58),
    ("ipv6-icmp", 58),
    ("sctp", 132),
];

impl Protocol {
    /// Parses a number 0 to 255 or a name (case-insensitive).
    pub fn parse(text: &str) -> Result<Protocol, String> {
        let t = text.trim();
        if let Ok(n) = t.parse::<u8>() {
            return Ok(Protocol(n));
        }
        PROTOCOL_NAMES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(t))
            .map(|&(_, n)| Protocol(n))
            .ok_or_else(|| {
                format!(
                    "{text:?} is not a protocol: expected a number 0 to 255 or one of tcp, udp, \
                     icmp, icmpv6, gre, esp, ah, sctp"
                )
            })
    }
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ProtocolVisitor;
        impl Visitor<'_> for ProtocolVisitor {
            type Value = Protocol;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a protocol number (6) or name (\"tcp\")")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Protocol, E> {
                u8::try_from(v)
                    .map(Protocol)
                    .map_err(|_| E::custom(format!("protocol {v} is out of range (0 to 255)")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Protocol, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format!(
                        "protocol {v} is out of range (0 to 255)"
                    ))),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Protocol, E> {
                Protocol::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(ProtocolVisitor)
    }
}

/// Names of networks and filter rules: what metrics labels and document values can carry as
/// they are.
fn check_name(key: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(ConfigError::key(
            key,
            format!("{name:?} must be 1 to 64 characters: letters, digits, `-`, `_`, `.`"),
        ));
    }
    Ok(())
}

/// Checks what serde cannot in `[enrich]`, `[[network]]` and `[[filter]]`: names (unique,
/// usable as labels), a prefix claimed by two networks (which name would win?), filters naming
/// unknown networks or stating no condition, empty file paths, the reload interval's range.
pub fn validate(
    enrich: &EnrichConfig,
    networks: &[NetworkConfig],
    filters: &[FilterRuleConfig],
) -> Result<(), ConfigError> {
    for (key, path) in [
        ("enrich.service_tags_file", &enrich.service_tags_file),
        ("enrich.geoip_file", &enrich.geoip_file),
        ("enrich.asn_file", &enrich.asn_file),
    ] {
        if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            return Err(ConfigError::key(
                key,
                "must not be empty (leave the key out to turn this lookup off)",
            ));
        }
    }
    check_duration(
        "enrich.reload_interval",
        enrich.reload_interval,
        SECOND,
        DAY,
    )?;

    let mut owner_of: HashMap<IpNet, &str> = HashMap::new();
    let mut names = std::collections::HashSet::new();
    for n in networks {
        check_name("network.name", &n.name)?;
        if !names.insert(n.name.as_str()) {
            return Err(ConfigError::key(
                "network.name",
                format!("{:?} is used twice", n.name),
            ));
        }
        let key = format!("network.{}.cidrs", n.name);
        if n.cidrs.is_empty() {
            return Err(ConfigError::key(key, "needs at least one prefix"));
        }
        for c in &n.cidrs {
            match owner_of.insert(c.0, &n.name) {
                Some(other) if other != n.name => {
                    return Err(ConfigError::key(
                        key,
                        format!(
                            "{c} is also in network {other:?}: a prefix may belong to one network \
                             only (use a more specific prefix to name part of a network)"
                        ),
                    ));
                }
                _ => {}
            }
        }
    }

    let mut rule_names = std::collections::HashSet::new();
    for f in filters {
        check_name("filter.name", &f.name)?;
        if !rule_names.insert(f.name.as_str()) {
            return Err(ConfigError::key(
                "filter.name",
                format!("{:?} is used twice", f.name),
            ));
        }
        if !f.has_condition() {
            return Err(ConfigError::key(
                format!("filter.{}", f.name),
                "states no condition, so it would match every tuple: give at least one of \
                 source_cidr, destination_cidr, source_network, destination_network, source_port, \
                 destination_port, protocol, direction, decision, state, nsg_rule, nsg, vnet, \
                 subnet, nic",
            ));
        }
        for (side, list) in [
            ("source_network", &f.source_network),
            ("destination_network", &f.destination_network),
        ] {
            if let Some(unknown) = list.iter().find(|n| !names.contains(n.as_str())) {
                return Err(ConfigError::key(
                    format!("filter.{}.{side}", f.name),
                    format!("{unknown:?} is not the name of a [[network]]"),
                ));
            }
        }
        for (key, list) in [
            ("nsg_rule", &f.nsg_rule),
            ("nsg", &f.nsg),
            ("vnet", &f.vnet),
            ("subnet", &f.subnet),
            ("nic", &f.nic),
        ] {
            if list.iter().any(|s| s.trim().is_empty()) {
                return Err(ConfigError::key(
                    format!("filter.{}.{key}", f.name),
                    "holds an empty name",
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::Figment;
    use figment::providers::{Format, Toml};

    /// The keys these types occupy in the top-level configuration.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Top {
        #[serde(default)]
        enrich: EnrichConfig,
        #[serde(default, rename = "network")]
        networks: Vec<NetworkConfig>,
        #[serde(default, rename = "filter")]
        filters: Vec<FilterRuleConfig>,
    }

    fn parse(text: &str) -> Result<Top, String> {
        let top: Top = Figment::new()
            .merge(Toml::string(text))
            .extract()
            .map_err(|e| e.to_string())?;
        validate(&top.enrich, &top.networks, &top.filters).map_err(|e| e.to_string())?;
        Ok(top)
    }

    fn net(s: &str) -> IpNet {
        s.parse().expect("test prefix")
    }

    #[test]
    fn an_empty_configuration_turns_everything_off_with_a_five_minute_reload() {
        let top = parse("").unwrap();
        assert_eq!(top.enrich, EnrichConfig::default());
        assert_eq!(top.enrich.reload_interval, Duration::from_secs(300));
        assert!(top.networks.is_empty() && top.filters.is_empty());
    }

    #[test]
    fn networks_take_ipv4_and_ipv6_prefixes_and_bare_addresses() {
        let top = parse(
            r#"
            [[network]]
            name = "onprem"
            cidrs = ["10.4.0.0/16", "192.168.0.7", "fd00:4::/48", "2001:db8::1", "10.5.1.9/16"]
            "#,
        )
        .unwrap();
        let cidrs: Vec<IpNet> = top.networks[0].cidrs.iter().map(|c| c.0).collect();
        assert_eq!(
            cidrs,
            vec![
                net("10.4.0.0/16"),
                net("192.168.0.7/32"),
                net("fd00:4::/48"),
                net("2001:db8::1/128"),
                // Host bits are cleared.
                net("10.5.0.0/16"),
            ]
        );
    }

    #[test]
    fn a_bad_prefix_is_reported_with_its_value_and_key() {
        let err = parse(
            r#"
            [[network]]
            name = "onprem"
            cidrs = ["10.4.0.0/33"]
            "#,
        )
        .unwrap_err();
        assert!(err.contains("\"10.4.0.0/33\" is not a prefix"), "{err}");
        assert!(err.contains("network"), "{err}");
    }

    #[test]
    fn a_prefix_claimed_by_two_networks_is_refused_naming_both() {
        let err = parse(
            r#"
            [[network]]
            name = "hub"
            cidrs = ["10.0.0.0/16"]
            [[network]]
            name = "spoke"
            cidrs = ["10.0.0.0/16"]
            "#,
        )
        .unwrap_err();
        assert_eq!(
            err,
            "config key `network.spoke.cidrs`: 10.0.0.0/16 is also in network \"hub\": a prefix \
             may belong to one network only (use a more specific prefix to name part of a network)"
        );
    }

    #[test]
    fn network_names_must_be_unique_label_safe_and_have_prefixes() {
        for (toml, expected) in [
            (
                "[[network]]\nname = \"a\"\ncidrs = [\"10.0.0.0/8\"]\n[[network]]\nname = \"a\"\ncidrs = [\"11.0.0.0/8\"]",
                "config key `network.name`: \"a\" is used twice",
            ),
            (
                "[[network]]\nname = \"on prem\"\ncidrs = [\"10.0.0.0/8\"]",
                "config key `network.name`: \"on prem\" must be 1 to 64 characters: letters, digits, `-`, `_`, `.`",
            ),
            (
                "[[network]]\nname = \"a\"\ncidrs = []",
                "config key `network.a.cidrs`: needs at least one prefix",
            ),
        ] {
            assert_eq!(parse(toml).unwrap_err(), expected);
        }
    }

    #[test]
    fn a_filter_rule_reads_every_condition_kind() {
        let top = parse(
            r#"
            [[network]]
            name = "onprem"
            cidrs = ["10.4.0.0/16"]

            [[filter]]
            name = "everything"
            action = "keep"
            source_cidr = ["168.63.129.16"]
            destination_cidr = ["10.0.0.0/8"]
            source_network = ["onprem"]
            destination_network = ["onprem"]
            source_port = [53, "1024-65535", "8080"]
            destination_port = [443]
            protocol = ["TCP", 17, "icmpv6"]
            direction = "inbound"
            decision = "deny"
            state = ["begin", "end"]
            nsg_rule = ["DefaultRule_DenyAllInBound"]
            nsg = ["nsg-a"]
            vnet = ["vnet-a"]
            subnet = ["default"]
            nic = ["vm1-nic"]
            "#,
        )
        .unwrap();
        let f = &top.filters[0];
        assert_eq!(f.action, FilterAction::Keep);
        assert_eq!(f.source_cidr, vec![Cidr(net("168.63.129.16/32"))]);
        assert_eq!(
            f.source_port,
            vec![
                PortRange {
                    first: 53,
                    last: 53
                },
                PortRange {
                    first: 1024,
                    last: 65535
                },
                PortRange {
                    first: 8080,
                    last: 8080
                },
            ]
        );
        assert_eq!(f.protocol, vec![Protocol(6), Protocol(17), Protocol(58)]);
        assert_eq!(f.direction, Some(FilterDirection::Inbound));
        assert_eq!(f.decision, Some(FilterDecision::Deny));
        assert_eq!(f.state, vec![FilterState::Begin, FilterState::End]);
        assert_eq!(f.nic, vec!["vm1-nic".to_owned()]);
    }

    #[test]
    fn bad_ports_and_protocols_are_reported_with_the_value() {
        for (condition, expected) in [
            (
                "source_port = [70000]",
                "port 70000 is out of range (0 to 65535)",
            ),
            ("source_port = [-1]", "port -1 is out of range (0 to 65535)"),
            (
                "source_port = [\"2000-1000\"]",
                "\"2000-1000\" is an empty port range",
            ),
            (
                "destination_port = [\"http\"]",
                "\"http\" is not a port or port range",
            ),
            (
                "protocol = [256]",
                "protocol 256 is out of range (0 to 255)",
            ),
            ("protocol = [\"quic\"]", "\"quic\" is not a protocol"),
            ("direction = \"in\"", "unknown variant"),
        ] {
            let err = parse(&format!(
                "[[filter]]\nname = \"r\"\naction = \"drop\"\n{condition}"
            ))
            .unwrap_err();
            assert!(err.contains(expected), "{condition}: {err}");
        }
    }

    #[test]
    fn a_filter_without_a_condition_or_with_an_unknown_network_is_refused() {
        let err = parse("[[filter]]\nname = \"all\"\naction = \"drop\"").unwrap_err();
        assert!(
            err.starts_with("config key `filter.all`: states no condition"),
            "{err}"
        );
        let err =
            parse("[[filter]]\nname = \"r\"\naction = \"drop\"\ndestination_network = [\"hub\"]")
                .unwrap_err();
        assert_eq!(
            err,
            "config key `filter.r.destination_network`: \"hub\" is not the name of a [[network]]"
        );
        let err = parse(
            "[[filter]]\nname = \"r\"\naction = \"drop\"\nnsg = [\"a\"]\n[[filter]]\nname = \"r\"\naction = \"keep\"\nnsg = [\"b\"]",
        )
        .unwrap_err();
        assert_eq!(err, "config key `filter.name`: \"r\" is used twice");
        let err =
            parse("[[filter]]\nname = \"r\"\naction = \"remove\"\nnsg = [\"a\"]").unwrap_err();
        assert!(err.contains("unknown variant"), "{err}");
    }

    #[test]
    fn enrich_files_and_reload_interval_are_checked() {
        let top = parse(
            r#"
            [enrich]
            service_tags_file = "/etc/flowlogd/ServiceTags_Public.json"
            geoip_file = "/var/lib/GeoIP/GeoLite2-City.mmdb"
            asn_file = "/var/lib/GeoIP/GeoLite2-ASN.mmdb"
            reload_interval = "1h"
            "#,
        )
        .unwrap();
        assert_eq!(top.enrich.reload_interval, Duration::from_secs(3600));
        assert_eq!(
            top.enrich.asn_file,
            Some(PathBuf::from("/var/lib/GeoIP/GeoLite2-ASN.mmdb"))
        );
        assert_eq!(
            parse("[enrich]\ngeoip_file = \"\"").unwrap_err(),
            "config key `enrich.geoip_file`: must not be empty (leave the key out to turn this lookup off)"
        );
        assert_eq!(
            parse("[enrich]\nreload_interval = \"2d\"").unwrap_err(),
            "config key `enrich.reload_interval`: 2d is out of range: must be between 1s and 1d"
        );
        assert!(
            parse("[enrich]\ngeo_file = \"x\"")
                .unwrap_err()
                .contains("unknown field")
        );
    }
}
