//! Shipper-side filters (`[[filter]]`): whether a tuple is indexed or dropped, decided before
//! encoding so a dropped tuple costs no bulk bytes, with a drop counter per rule.
//!
//! Evaluation order: rules are tried in the order of the configuration file, and the first
//! rule whose every condition matches decides (`drop` or `keep`). A tuple no rule matches is
//! kept, unless the configuration has a `keep` rule: then it is dropped, counted under
//! [`NO_KEEP_RULE_MATCHED`]. So `drop` rules alone remove what they match, `keep` rules alone
//! index only what they match, and a `drop` rule placed before a `keep` rule carves an
//! exception out of it.
//!
//! Within a rule, conditions combine with AND and the values of one condition with OR. A
//! `source_network`/`destination_network` condition matches an address inside any prefix of
//! the named network, also where a more specific network names the address (containment,
//! like `source_cidr`; document fields show the most specific name).
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::enrich::{
    FilterAction, FilterDecision, FilterDirection, FilterRuleConfig, FilterState, NetworkConfig,
    PortRange,
};
use crate::flowlog::{Decision, Direction, FlowGroup, FlowLogKind, FlowState, FlowTuple, Record};

use super::EnrichError;
use super::prefix_table::PrefixTable;
use super::resource_id::ResourceId;

/// The counter name of tuples dropped because `keep` rules exist and none matched them.
pub const NO_KEEP_RULE_MATCHED: &str = "(no keep rule matched)";

/// The resources of one record a filter can match on, parsed once per record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordResources<'a> {
    /// NSG of an NSG flow log (from `resourceId`).
    pub nsg: Option<&'a str>,
    /// VNet, subnet and NIC of a VNet flow log's target (`targetResourceID`), as deep as the
    /// target goes (a VNet-level flow log has no subnet or NIC).
    pub vnet: Option<&'a str>,
    pub subnet: Option<&'a str>,
    pub nic: Option<&'a str>,
}

impl<'a> RecordResources<'a> {
    /// The resources named by `record`'s ids, read as the document encoder reads them.
    pub fn of(record: &'a Record<'_>) -> RecordResources<'a> {
        let mut r = RecordResources::default();
        if record.kind == FlowLogKind::Nsg {
            r.nsg = record
                .resource_id
                .as_ref()
                .and_then(|id| ResourceId::parse(id.as_str()))
                .and_then(|id| id.network_security_group());
        }
        if let Some(target) = record
            .target_resource_id
            .as_ref()
            .and_then(|id| ResourceId::parse(id.as_str()))
        {
            r.vnet = target.virtual_network();
            r.subnet = target.subnet();
            r.nic = target.network_interface();
        }
        r
    }
}

/// What a filter sees of a tuple besides the tuple itself: its record's resources and its
/// group's rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowContext<'a> {
    /// The NSG rule (`rule.name`).
    pub nsg_rule: Option<&'a str>,
    /// The NSG: the record's (NSG flow logs) or the deciding one named by the group's ACL id
    /// (VNet flow logs).
    pub nsg: Option<&'a str>,
    pub vnet: Option<&'a str>,
    pub subnet: Option<&'a str>,
    pub nic: Option<&'a str>,
}

impl<'a> FlowContext<'a> {
    /// The context of the tuples of `group` in a record with `resources`.
    pub fn of(resources: &RecordResources<'a>, group: &'a FlowGroup<'_>) -> FlowContext<'a> {
        let acl_nsg = group
            .acl_id
            .as_ref()
            .and_then(|acl| ResourceId::parse(acl.as_str()))
            .and_then(|id| id.network_security_group());
        FlowContext {
            nsg_rule: group.rule.as_ref().map(|r| r.as_str()),
            nsg: resources.nsg.or(acl_nsg),
            vnet: resources.vnet,
            subnet: resources.subnet,
            nic: resources.nic,
        }
    }
}

/// Whether a tuple is indexed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict<'f> {
    Keep,
    /// Dropped by the rule of this name, or [`NO_KEEP_RULE_MATCHED`].
    Drop {
        rule: &'f str,
    },
}

/// One rule, ready to match.
#[derive(Debug)]
struct Rule {
    name: Box<str>,
    action: FilterAction,
    source: Vec<PrefixTable<()>>,
    destination: Vec<PrefixTable<()>>,
    source_ports: Vec<PortRange>,
    destination_ports: Vec<PortRange>,
    protocols: Vec<u8>,
    direction: Option<Direction>,
    decision: Option<Decision>,
    states: Vec<FlowState>,
    nsg_rule: Vec<Box<str>>,
    nsg: Vec<Box<str>>,
    vnet: Vec<Box<str>>,
    subnet: Vec<Box<str>>,
    nic: Vec<Box<str>>,
}

fn in_ports(ranges: &[PortRange], port: u16) -> bool {
    ranges.is_empty() || ranges.iter().any(|r| r.contains(port))
}

/// Azure resource and rule names compare case-insensitively (ids are upper-cased in NSG
/// records). A condition on a name the tuple lacks does not match.
fn in_names(names: &[Box<str>], value: Option<&str>) -> bool {
    names.is_empty() || value.is_some_and(|v| names.iter().any(|n| n.eq_ignore_ascii_case(v)))
}

fn in_all(tables: &[PrefixTable<()>], addr: IpAddr) -> bool {
    tables.iter().all(|t| t.contains(addr))
}

impl Rule {
    fn matches(&self, t: &FlowTuple<'_>, cx: &FlowContext<'_>) -> bool {
        self.direction.is_none_or(|d| d == t.direction)
            && self.decision.is_none_or(|d| d == t.decision)
            && (self.protocols.is_empty() || self.protocols.contains(&t.protocol))
            && in_ports(&self.source_ports, t.src_port)
            && in_ports(&self.destination_ports, t.dst_port)
            && (self.states.is_empty() || t.state.is_some_and(|s| self.states.contains(&s)))
            && in_all(&self.source, t.src_ip)
            && in_all(&self.destination, t.dst_ip)
            && in_names(&self.nsg_rule, cx.nsg_rule)
            && in_names(&self.nsg, cx.nsg)
            && in_names(&self.vnet, cx.vnet)
            && in_names(&self.subnet, cx.subnet)
            && in_names(&self.nic, cx.nic)
    }
}

/// The `[[filter]]` rules with their drop counters. Shared by every encoding task.
#[derive(Debug)]
pub struct Filter {
    rules: Vec<Rule>,
    has_keep: bool,
    /// Tuples dropped per rule, in rule order, then those no keep rule matched.
    dropped: Vec<AtomicU64>,
}

/// A prefix set matching what a rule's address condition lists.
fn prefix_set(prefixes: impl IntoIterator<Item = ipnet::IpNet>) -> PrefixTable<()> {
    let mut t = PrefixTable::new();
    for p in prefixes {
        t.insert(p, ());
    }
    t
}

impl Filter {
    /// Builds the rules; a rule naming an unknown network is an error (caught earlier by
    /// `config::enrich::validate`).
    pub fn from_config(
        rules: &[FilterRuleConfig],
        networks: &[NetworkConfig],
    ) -> Result<Filter, EnrichError> {
        let network_set =
            |rule: &str, names: &[String]| -> Result<Option<PrefixTable<()>>, EnrichError> {
                if names.is_empty() {
                    return Ok(None);
                }
                let mut prefixes = Vec::new();
                for name in names {
                    let n = networks.iter().find(|n| &n.name == name).ok_or_else(|| {
                        EnrichError::UnknownNetwork {
                            rule: rule.to_owned(),
                            network: name.clone(),
                        }
                    })?;
                    prefixes.extend(n.cidrs.iter().map(|c| c.0));
                }
                Ok(Some(prefix_set(prefixes)))
            };
        let names = |list: &[String]| list.iter().map(|s| s.trim().into()).collect();
        let mut compiled = Vec::with_capacity(rules.len());
        for r in rules {
            let mut source = Vec::new();
            if !r.source_cidr.is_empty() {
                source.push(prefix_set(r.source_cidr.iter().map(|c| c.0)));
            }
            source.extend(network_set(&r.name, &r.source_network)?);
            let mut destination = Vec::new();
            if !r.destination_cidr.is_empty() {
                destination.push(prefix_set(r.destination_cidr.iter().map(|c| c.0)));
            }
            destination.extend(network_set(&r.name, &r.destination_network)?);
            compiled.push(Rule {
                name: r.name.as_str().into(),
                action: r.action,
                source,
                destination,
                source_ports: r.source_port.clone(),
                destination_ports: r.destination_port.clone(),
                protocols: r.protocol.iter().map(|p| p.0).collect(),
                direction: r.direction.map(|d| match d {
                    FilterDirection::Inbound => Direction::Inbound,
                    FilterDirection::Outbound => Direction::Outbound,
                }),
                decision: r.decision.map(|d| match d {
                    FilterDecision::Allow => Decision::Allow,
                    FilterDecision::Deny => Decision::Deny,
                }),
                states: r
                    .state
                    .iter()
                    .map(|s| match s {
                        FilterState::Begin => FlowState::Begin,
                        FilterState::Continuing => FlowState::Continuing,
                        FilterState::End => FlowState::End,
                        FilterState::Deny => FlowState::Deny,
                    })
                    .collect(),
                nsg_rule: names(&r.nsg_rule),
                nsg: names(&r.nsg),
                vnet: names(&r.vnet),
                subnet: names(&r.subnet),
                nic: names(&r.nic),
            });
        }
        let has_keep = compiled.iter().any(|r| r.action == FilterAction::Keep);
        let dropped = (0..=compiled.len()).map(|_| AtomicU64::new(0)).collect();
        Ok(Filter {
            rules: compiled,
            has_keep,
            dropped,
        })
    }

    /// Whether there are no rules (every tuple is kept; callers can skip the filter).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether `tuple` (of a group with context `cx`) is indexed; a drop is counted.
    pub fn decide(&self, tuple: &FlowTuple<'_>, cx: &FlowContext<'_>) -> Verdict<'_> {
        let (index, verdict) = match self.rules.iter().position(|r| r.matches(tuple, cx)) {
            Some(i) if self.rules[i].action == FilterAction::Keep => return Verdict::Keep,
            Some(i) => (
                i,
                Verdict::Drop {
                    rule: &self.rules[i].name,
                },
            ),
            None if !self.has_keep => return Verdict::Keep,
            None => (
                self.rules.len(),
                Verdict::Drop {
                    rule: NO_KEEP_RULE_MATCHED,
                },
            ),
        };
        if let Some(counter) = self.dropped.get(index) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        verdict
    }

    /// Tuples dropped since start, per rule in configuration order (drop and keep rules
    /// alike; a keep rule's count stays 0), then [`NO_KEEP_RULE_MATCHED`] when a keep rule
    /// exists. For `/metrics` (`flowlogd_tuples_filtered_total{rule}`) and the `once` summary.
    pub fn drop_counts(&self) -> Vec<(&str, u64)> {
        let mut counts: Vec<(&str, u64)> = self
            .rules
            .iter()
            .zip(&self.dropped)
            .map(|(r, c)| (&*r.name, c.load(Ordering::Relaxed)))
            .collect();
        if self.has_keep {
            let unmatched = self.dropped.last().map_or(0, |c| c.load(Ordering::Relaxed));
            counts.push((NO_KEEP_RULE_MATCHED, unmatched));
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flowlog::{decode_record, parse_tuple};
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Rules {
        #[serde(default)]
        network: Vec<NetworkConfig>,
        #[serde(default)]
        filter: Vec<FilterRuleConfig>,
    }

    /// A filter from `[[network]]` and `[[filter]]` TOML.
    fn filter(toml_text: &str) -> Filter {
        let rules: Rules = toml::from_str(toml_text).expect("test rules");
        crate::config::enrich::validate(&Default::default(), &rules.network, &rules.filter)
            .expect("valid test rules");
        Filter::from_config(&rules.filter, &rules.network).expect("test filter")
    }

    fn vnet(raw: &str) -> FlowTuple<'_> {
        parse_tuple(FlowLogKind::Vnet, raw).expect("test tuple")
    }

    fn nsg(raw: &str) -> FlowTuple<'_> {
        parse_tuple(FlowLogKind::Nsg, raw).expect("test tuple")
    }

    const NONE: FlowContext<'static> = FlowContext {
        nsg_rule: None,
        nsg: None,
        vnet: None,
        subnet: None,
        nic: None,
    };

    const CONTEXT: FlowContext<'static> = FlowContext {
        nsg_rule: Some("DefaultRule_AllowInternetOutBound"),
        nsg: Some("NSG-A"),
        vnet: Some("vnet-a"),
        subnet: Some("default"),
        nic: Some("vm1-nic"),
    };

    fn dropped(f: &Filter, t: &FlowTuple<'_>, cx: &FlowContext<'_>) -> bool {
        matches!(f.decide(t, cx), Verdict::Drop { .. })
    }

    #[test]
    fn without_rules_every_tuple_is_kept() {
        let f = filter("");
        assert!(f.is_empty());
        let t = vnet("1663146003599,10.0.0.6,52.239.184.180,23956,443,6,O,B,X,,,,");
        assert_eq!(f.decide(&t, &CONTEXT), Verdict::Keep);
        assert!(f.drop_counts().is_empty());
    }

    #[test]
    fn platform_health_probes_are_dropped_and_counted_under_their_rule() {
        let f = filter(
            r#"
            [[filter]]
            name = "platform-in"
            action = "drop"
            source_cidr = ["168.63.129.16"]
            [[filter]]
            name = "platform-out"
            action = "drop"
            destination_cidr = ["168.63.129.16/32"]
            "#,
        );
        let probe = vnet("1663146003599,168.63.129.16,10.0.0.6,56789,80,6,I,B,NX,,,,");
        let dns = vnet("1663146003599,10.0.0.6,168.63.129.16,50000,53,17,O,E,NX,1,60,1,120");
        let web = vnet("1663146003599,10.0.0.6,52.239.184.180,23956,443,6,O,B,X,,,,");
        assert_eq!(
            f.decide(&probe, &NONE),
            Verdict::Drop {
                rule: "platform-in"
            }
        );
        assert_eq!(
            f.decide(&probe, &NONE),
            Verdict::Drop {
                rule: "platform-in"
            }
        );
        assert_eq!(
            f.decide(&dns, &NONE),
            Verdict::Drop {
                rule: "platform-out"
            }
        );
        assert_eq!(f.decide(&web, &NONE), Verdict::Keep);
        // No keep rule: no counter for unmatched tuples.
        assert_eq!(
            f.drop_counts(),
            vec![("platform-in", 2), ("platform-out", 1)]
        );
    }

    #[test]
    fn each_condition_kind_matches_its_tuples_and_only_those() {
        // (condition, a tuple and context it matches, one it does not)
        let outbound = "1663146003599,10.0.0.6,52.239.184.180,23956,443,6,O,B,X,,,,";
        let inbound_deny = "1663146003599,101.33.218.153,10.0.0.7,55188,22,6,I,D,NX,0,0,0,0";
        let udp_end = "1663146003599,10.4.1.1,fd00::5,53,5353,17,O,E,NX,1,60,1,120";
        let v6 = "1663146003599,2603:1020::7,fd00:1::5,1024,8443,6,I,C,NX,,,,";
        type Case<'a> = (
            &'a str,
            (&'a str, FlowContext<'a>),
            (&'a str, FlowContext<'a>),
        );
        let other = FlowContext {
            nsg_rule: Some("UserRule_Other"),
            nsg: Some("nsg-b"),
            vnet: Some("vnet-b"),
            subnet: Some("app"),
            nic: Some("vm2-nic"),
        };
        let cases: Vec<Case<'_>> = vec![
            (
                "source_cidr = [\"10.0.0.0/24\"]",
                (outbound, NONE),
                (inbound_deny, NONE),
            ),
            (
                "source_cidr = [\"2603:1020::/47\"]",
                (v6, NONE),
                (outbound, NONE),
            ),
            (
                "destination_cidr = [\"fd00::/16\"]",
                (udp_end, NONE),
                (outbound, NONE),
            ),
            (
                "destination_cidr = [\"10.0.0.7\"]",
                (inbound_deny, NONE),
                (outbound, NONE),
            ),
            (
                "source_network = [\"onprem\"]",
                (udp_end, NONE),
                (outbound, NONE),
            ),
            (
                "destination_network = [\"azure\"]",
                (inbound_deny, NONE),
                (outbound, NONE),
            ),
            (
                "destination_network = [\"azure\"]",
                (v6, NONE),
                (udp_end, NONE),
            ),
            (
                "source_port = [\"1024-65535\"]",
                (outbound, NONE),
                (udp_end, NONE),
            ),
            ("source_port = [1024]", (v6, NONE), (outbound, NONE)),
            (
                "destination_port = [443, 22]",
                (inbound_deny, NONE),
                (udp_end, NONE),
            ),
            (
                "destination_port = [\"5000-6000\"]",
                (udp_end, NONE),
                (v6, NONE),
            ),
            ("protocol = [\"udp\"]", (udp_end, NONE), (outbound, NONE)),
            ("protocol = [6]", (outbound, NONE), (udp_end, NONE)),
            (
                "direction = \"inbound\"",
                (inbound_deny, NONE),
                (outbound, NONE),
            ),
            ("direction = \"outbound\"", (outbound, NONE), (v6, NONE)),
            (
                "decision = \"deny\"",
                (inbound_deny, NONE),
                (outbound, NONE),
            ),
            (
                "decision = \"allow\"",
                (udp_end, NONE),
                (inbound_deny, NONE),
            ),
            ("state = [\"begin\", \"end\"]", (udp_end, NONE), (v6, NONE)),
            ("state = [\"deny\"]", (inbound_deny, NONE), (outbound, NONE)),
            (
                "nsg_rule = [\"defaultrule_allowinternetoutbound\"]",
                (outbound, CONTEXT),
                (outbound, other),
            ),
            (
                "nsg_rule = [\"UserRule_Other\"]",
                (outbound, other),
                (outbound, NONE),
            ),
            ("nsg = [\"nsg-a\"]", (outbound, CONTEXT), (outbound, other)),
            (
                "vnet = [\"VNET-A\"]",
                (outbound, CONTEXT),
                (outbound, other),
            ),
            (
                "subnet = [\"default\"]",
                (outbound, CONTEXT),
                (outbound, NONE),
            ),
            (
                "nic = [\"vm1-nic\", \"vm3-nic\"]",
                (outbound, CONTEXT),
                (outbound, other),
            ),
        ];
        for (condition, (hit, hit_cx), (miss, miss_cx)) in cases {
            let f = filter(&format!(
                r#"
                [[network]]
                name = "azure"
                cidrs = ["10.0.0.0/16", "fd00:1::/32"]
                [[network]]
                name = "onprem"
                cidrs = ["10.4.0.0/16"]
                [[filter]]
                name = "rule"
                action = "drop"
                {condition}
                "#
            ));
            assert!(
                dropped(&f, &vnet(hit), &hit_cx),
                "{condition} should match {hit}"
            );
            assert!(
                !dropped(&f, &vnet(miss), &miss_cx),
                "{condition} should not match {miss}"
            );
            assert_eq!(f.drop_counts(), vec![("rule", 1)], "{condition}");
        }
    }

    #[test]
    fn an_nsg_v1_tuple_has_no_state_and_never_matches_a_state_condition() {
        let f = filter(
            "[[filter]]\nname = \"r\"\naction = \"drop\"\nstate = [\"begin\", \"continuing\", \"end\", \"deny\"]",
        );
        let v1 = nsg("1487282421,42.119.146.95,10.1.0.4,51529,5358,T,I,D");
        let v2 = nsg("1542110402,192.0.2.190,10.5.16.4,28746,443,U,I,D,B,,,,");
        assert!(!dropped(&f, &v1, &NONE));
        assert!(dropped(&f, &v2, &NONE));
    }

    #[test]
    fn conditions_combine_with_and_and_the_values_of_one_condition_with_or() {
        let f = filter(
            r#"
            [[filter]]
            name = "dns-or-ntp-out"
            action = "drop"
            direction = "outbound"
            protocol = ["udp"]
            destination_port = [53, 123]
            "#,
        );
        let dns = vnet("1663146003599,10.0.0.6,8.8.8.8,50000,53,17,O,E,NX,1,60,1,120");
        let ntp = vnet("1663146003599,10.0.0.6,8.8.8.8,50000,123,17,O,E,NX,1,60,1,120");
        let dns_tcp = vnet("1663146003599,10.0.0.6,8.8.8.8,50000,53,6,O,E,NX,1,60,1,120");
        let dns_in = vnet("1663146003599,8.8.8.8,10.0.0.6,50000,53,17,I,E,NX,1,60,1,120");
        assert!(dropped(&f, &dns, &NONE));
        assert!(dropped(&f, &ntp, &NONE));
        assert!(!dropped(&f, &dns_tcp, &NONE));
        assert!(!dropped(&f, &dns_in, &NONE));
        assert_eq!(f.drop_counts(), vec![("dns-or-ntp-out", 2)]);
    }

    #[test]
    fn with_a_keep_rule_tuples_matching_no_rule_are_dropped_under_their_own_counter() {
        // "Keep only denied flows."
        let f = filter("[[filter]]\nname = \"denied\"\naction = \"keep\"\ndecision = \"deny\"");
        let denied = vnet("1663146003599,101.33.218.153,10.0.0.7,55188,22,6,I,D,NX,0,0,0,0");
        let allowed = vnet("1663146003599,10.0.0.6,52.239.184.180,23956,443,6,O,B,X,,,,");
        assert_eq!(f.decide(&denied, &NONE), Verdict::Keep);
        assert_eq!(
            f.decide(&allowed, &NONE),
            Verdict::Drop {
                rule: NO_KEEP_RULE_MATCHED
            }
        );
        assert_eq!(
            f.decide(&allowed, &NONE),
            Verdict::Drop {
                rule: "(no keep rule matched)"
            }
        );
        assert_eq!(
            f.drop_counts(),
            vec![("denied", 0), ("(no keep rule matched)", 2)]
        );
    }

    #[test]
    fn the_first_matching_rule_decides_so_a_drop_before_a_keep_carves_an_exception() {
        let f = filter(
            r#"
            [[filter]]
            name = "not-the-scanner"
            action = "drop"
            source_cidr = ["101.33.218.153"]
            [[filter]]
            name = "inbound"
            action = "keep"
            direction = "inbound"
            [[filter]]
            name = "never-reached"
            action = "drop"
            destination_port = [22]
            "#,
        );
        let scanner = vnet("1663146003599,101.33.218.153,10.0.0.7,55188,22,6,I,D,NX,0,0,0,0");
        let other_in = vnet("1663146003599,101.33.218.154,10.0.0.7,55188,22,6,I,D,NX,0,0,0,0");
        let out = vnet("1663146003599,10.0.0.6,52.239.184.180,23956,22,6,O,B,X,,,,");
        assert_eq!(
            f.decide(&scanner, &NONE),
            Verdict::Drop {
                rule: "not-the-scanner"
            }
        );
        // Matches "inbound" first, so "never-reached" never sees it.
        assert_eq!(f.decide(&other_in, &NONE), Verdict::Keep);
        // Port 22 but outbound: "never-reached" is the first match.
        assert_eq!(
            f.decide(&out, &NONE),
            Verdict::Drop {
                rule: "never-reached"
            }
        );
        assert_eq!(
            f.drop_counts(),
            vec![
                ("not-the-scanner", 1),
                ("inbound", 0),
                ("never-reached", 1),
                (NO_KEEP_RULE_MATCHED, 0)
            ]
        );
    }

    #[test]
    fn a_network_condition_matches_inside_a_more_specific_network_too() {
        // "Drop east-west traffic inside one VNet", where the VNet's hub subnet is named too.
        let f = filter(
            r#"
            [[network]]
            name = "vnet-a"
            cidrs = ["10.0.0.0/16"]
            [[network]]
            name = "vnet-a-hub"
            cidrs = ["10.0.1.0/24"]
            [[filter]]
            name = "east-west"
            action = "drop"
            source_network = ["vnet-a"]
            destination_network = ["vnet-a"]
            "#,
        );
        let inside = vnet("1663146003599,10.0.1.4,10.0.2.5,40000,443,6,O,B,NX,,,,");
        let leaving = vnet("1663146003599,10.0.1.4,10.1.2.5,40000,443,6,O,B,NX,,,,");
        assert!(dropped(&f, &inside, &NONE));
        assert!(!dropped(&f, &leaving, &NONE));
    }

    #[test]
    fn resources_come_from_the_nsg_id_or_the_vnet_target_and_the_deciding_acl() {
        let nsg_record = br#"{"resourceId":"/SUBSCRIPTIONS/S1/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/NSG-A","properties":{"Version":2,"flows":[{"rule":"DefaultRule_DenyAllInBound","flows":[{"mac":"000D3AF87856","flowTuples":[]}]}]}}"#;
        let record = decode_record(nsg_record).unwrap();
        let resources = RecordResources::of(&record);
        let cx = FlowContext::of(&resources, &record.groups[0]);
        assert_eq!(
            cx,
            FlowContext {
                nsg_rule: Some("DefaultRule_DenyAllInBound"),
                nsg: Some("NSG-A"),
                vnet: None,
                subnet: None,
                nic: None,
            }
        );

        let vnet_record = br#"{"flowLogVersion":4,"flowLogResourceID":"/SUBSCRIPTIONS/S1/RESOURCEGROUPS/NETWORKWATCHERRG/PROVIDERS/MICROSOFT.NETWORK/NETWORKWATCHERS/NETWORKWATCHER_WESTEUROPE/FLOWLOGS/FL1","targetResourceID":"/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/vnet-a/subnets/default","flowRecords":{"flows":[{"aclID":"/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Network/networkSecurityGroups/nsg-b","flowGroups":[{"rule":"UserRule_AllowWeb","flowTuples":[]}]}]}}"#;
        let record = decode_record(vnet_record).unwrap();
        let resources = RecordResources::of(&record);
        let cx = FlowContext::of(&resources, &record.groups[0]);
        assert_eq!(
            cx,
            FlowContext {
                nsg_rule: Some("UserRule_AllowWeb"),
                nsg: Some("nsg-b"),
                vnet: Some("vnet-a"),
                subnet: Some("default"),
                nic: None,
            }
        );
    }

    #[test]
    fn a_rule_naming_an_unknown_network_is_an_error() {
        let rules: Rules = toml::from_str(
            "[[filter]]\nname = \"r\"\naction = \"drop\"\nsource_network = [\"hub\"]",
        )
        .unwrap();
        let err = Filter::from_config(&rules.filter, &rules.network).unwrap_err();
        assert_eq!(
            err.to_string(),
            "filter \"r\": \"hub\" is not the name of a [[network]]"
        );
    }
}
