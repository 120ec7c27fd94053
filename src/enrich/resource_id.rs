//! Zero-copy parsing of Azure Resource Manager ids (`resourceId`, `flowLogResourceID`,
//! `targetResourceID`, `aclID`) into the parts flowlogd indexes: subscription, resource group,
//! NSG, network watcher and its region, flow log, VNet, subnet, NIC.
//!
//! Shape: `/subscriptions/{sub}[/resourceGroups/{rg}][/providers/{namespace}/{type}/{name}
//! [/{type}/{name}…]]`. Azure writes the keywords in either case (`/SUBSCRIPTIONS/…/RESOURCEGROUPS/`
//! in NSG records, `/subscriptions/…/resourceGroups/` in VNet targets), so keywords, types and
//! the namespace match case-insensitively; returned values are slices of the input with their
//! original case.

use std::fmt;

/// A parsed ARM resource id borrowing from the id string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceId<'a> {
    subscription: &'a str,
    resource_group: Option<&'a str>,
    namespace: Option<&'a str>,
    /// `namespace/type` of the top-level resource, as one slice of the input.
    provider: Option<&'a str>,
    /// Everything after the namespace (`{type}/{name}/…`), without the leading `/`.
    tail: &'a str,
}

impl<'a> ResourceId<'a> {
    /// Parses an id. Returns `None` unless it starts with `/subscriptions/{sub}` (leading `/`
    /// optional) followed by nothing, `/resourceGroups/{rg}` and/or `/providers/{namespace}`.
    /// Past the namespace the parse is lenient: type/name pairs are read up to the first empty
    /// segment or a type without a name, so a damaged tail still yields subscription and
    /// resource group. Never panics.
    pub fn parse(id: &'a str) -> Option<Self> {
        let s = id.strip_prefix('/').unwrap_or(id);
        let s = s.strip_suffix('/').unwrap_or(s);
        let mut segs = Segments { rest: s };

        if !segs.next()?.eq_ignore_ascii_case("subscriptions") {
            return None;
        }
        let subscription = segs.next_nonempty()?;

        let mut out = ResourceId {
            subscription,
            resource_group: None,
            namespace: None,
            provider: None,
            tail: "",
        };
        let Some(mut keyword) = segs.next() else {
            return Some(out);
        };
        if keyword.eq_ignore_ascii_case("resourceGroups") {
            out.resource_group = Some(segs.next_nonempty()?);
            keyword = match segs.next() {
                Some(k) => k,
                None => return Some(out),
            };
        }
        if !keyword.eq_ignore_ascii_case("providers") {
            return None;
        }
        let after_providers = segs.rest;
        let namespace = segs.next_nonempty()?;
        out.namespace = Some(namespace);
        out.tail = segs.rest;
        let mut pairs = Segments { rest: segs.rest };
        let first = (pairs.next_nonempty(), pairs.next_nonempty());
        if let (Some(ty), Some(_)) = first
            && !ty.eq_ignore_ascii_case("providers")
        {
            // `namespace/type` is contiguous in the input: no allocation needed.
            let len = namespace.len() + 1 + ty.len();
            out.provider = after_providers.get(..len);
        }
        Some(out)
    }

    /// The subscription id (`cloud.account.id`).
    pub fn subscription_id(&self) -> &'a str {
        self.subscription
    }

    /// The resource group, when the id has one.
    pub fn resource_group(&self) -> Option<&'a str> {
        self.resource_group
    }

    /// The resource provider namespace, e.g. `Microsoft.Network` / `MICROSOFT.NETWORK`.
    pub fn provider_namespace(&self) -> Option<&'a str> {
        self.namespace
    }

    /// `namespace/type` of the top-level resource, e.g. `MICROSOFT.NETWORK/NETWORKSECURITYGROUPS`
    /// (Elastic's `azure.resource.provider`).
    pub fn provider(&self) -> Option<&'a str> {
        self.provider
    }

    /// The `(type, name)` pairs after the namespace, outermost first. A nested
    /// `providers/{namespace}` (extension resources) is skipped.
    pub fn resources(&self) -> Resources<'a> {
        Resources {
            segs: Segments { rest: self.tail },
        }
    }

    /// The innermost `(type, name)` pair: what the id names.
    pub fn last(&self) -> Option<(&'a str, &'a str)> {
        self.resources().last()
    }

    /// The name at the end of a chain of types from the top, matched case-insensitively:
    /// `path(&["virtualNetworks", "subnets"])` on `…/virtualNetworks/v/subnets/s` is `Some("s")`.
    /// Deeper children are allowed (`…/subnets/s/ipConfigurations/x` still gives `s`).
    pub fn path(&self, types: &[&str]) -> Option<&'a str> {
        let mut resources = self.resources();
        let mut name = None;
        for want in types {
            let (ty, n) = resources.next()?;
            if !ty.eq_ignore_ascii_case(want) {
                return None;
            }
            name = Some(n);
        }
        name
    }

    fn network_path(&self, types: &[&str]) -> Option<&'a str> {
        if !self.namespace?.eq_ignore_ascii_case("Microsoft.Network") {
            return None;
        }
        self.path(types)
    }

    /// NSG name from an NSG flow log `resourceId` or an `aclID`.
    pub fn network_security_group(&self) -> Option<&'a str> {
        self.network_path(&["networkSecurityGroups"])
    }

    /// Network watcher name from a `flowLogResourceID`, e.g. `NETWORKWATCHER_EASTUS2EUAP`.
    pub fn network_watcher(&self) -> Option<&'a str> {
        self.network_path(&["networkWatchers"])
    }

    /// Region of the network watcher, from Azure's default watcher name
    /// `NetworkWatcher_{region}`; `None` for custom watcher names.
    pub fn network_watcher_region(&self) -> Option<Region> {
        network_watcher_region(self.network_watcher()?)
    }

    /// Flow log name from a `flowLogResourceID` (`…/networkWatchers/{w}/flowLogs/{name}`).
    pub fn flow_log(&self) -> Option<&'a str> {
        self.network_path(&["networkWatchers", "flowLogs"])
    }

    /// VNet name from a `targetResourceID` at VNet or subnet scope.
    pub fn virtual_network(&self) -> Option<&'a str> {
        self.network_path(&["virtualNetworks"])
    }

    /// Subnet name from a `targetResourceID` at subnet scope.
    pub fn subnet(&self) -> Option<&'a str> {
        self.network_path(&["virtualNetworks", "subnets"])
    }

    /// NIC name from a `targetResourceID` at NIC scope.
    pub fn network_interface(&self) -> Option<&'a str> {
        self.network_path(&["networkInterfaces"])
    }
}

/// `/`-separated segments, consumed from the front.
#[derive(Debug, Clone)]
struct Segments<'a> {
    rest: &'a str,
}

impl<'a> Segments<'a> {
    fn next(&mut self) -> Option<&'a str> {
        if self.rest.is_empty() {
            return None;
        }
        match self.rest.split_once('/') {
            Some((seg, rest)) => {
                self.rest = rest;
                Some(seg)
            }
            None => Some(std::mem::take(&mut self.rest)),
        }
    }

    fn next_nonempty(&mut self) -> Option<&'a str> {
        self.next().filter(|s| !s.is_empty())
    }
}

/// Iterator over the `(type, name)` pairs of a [`ResourceId`].
#[derive(Debug, Clone)]
pub struct Resources<'a> {
    segs: Segments<'a>,
}

impl<'a> Iterator for Resources<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let ty = self.segs.next_nonempty();
            let name = self.segs.next_nonempty();
            let (Some(ty), Some(name)) = (ty, name) else {
                self.segs.rest = "";
                return None;
            };
            if ty.eq_ignore_ascii_case("providers") {
                continue;
            }
            return Some((ty, name));
        }
    }
}

const REGION_CAP: usize = 32;

/// An Azure region name in lower case (`eastus2euap`, `westeurope`), kept on the stack.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Region {
    buf: [u8; REGION_CAP],
    len: u8,
}

impl Region {
    pub fn as_str(&self) -> &str {
        // Only ASCII alphanumerics are ever stored; the fallback is unreachable.
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or("")
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Region({})", self.as_str())
    }
}

/// Region from a network watcher name as Azure creates them automatically:
/// `NetworkWatcher_{region}` in any case (`NETWORKWATCHER_EASTUS2EUAP`,
/// `NetworkWatcher_westeurope`). Anything after a further `_` is ignored, so the blob-path
/// form `NETWORKWATCHER_{REGION}_{FLOWLOGNAME}` works too. Region names are ASCII letters and
/// digits; anything else (or a custom watcher name) gives `None`.
pub fn network_watcher_region(watcher_name: &str) -> Option<Region> {
    const PREFIX: &str = "NetworkWatcher_";
    let head = watcher_name.get(..PREFIX.len())?;
    if !head.eq_ignore_ascii_case(PREFIX) {
        return None;
    }
    let rest = &watcher_name[PREFIX.len()..];
    let region = rest.split('_').next().unwrap_or(rest);
    if region.is_empty()
        || region.len() > REGION_CAP
        || !region.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return None;
    }
    let mut buf = [0u8; REGION_CAP];
    for (dst, src) in buf.iter_mut().zip(region.bytes()) {
        *dst = src.to_ascii_lowercase();
    }
    Some(Region {
        buf,
        // `region.len() <= REGION_CAP` (32) was checked above.
        len: region.len() as u8,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // `resourceId` of ../shared/fixtures/msdocs/nsg_v2_PT1H.json.
    const NSG_AAAA: &str = "/SUBSCRIPTIONS/aaaa0a0a-bb1b-cc2c-dd3d-eeeeee4e4e4e/RESOURCEGROUPS/FABRIKAMRG/PROVIDERS/MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/FABRIAKMVM1-NSG";
    // `resourceId` of msdocs/nsg_v1_PT1H.json, elastic/nsg-PT1H.json, elastic/nsg-records.ndjson.
    const NSG_ZERO: &str = "/SUBSCRIPTIONS/00000000-0000-0000-0000-000000000000/RESOURCEGROUPS/FABRIKAMRG/PROVIDERS/MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/FABRIAKMVM1-NSG";
    // `flowLogResourceID` of msdocs/vnet_v4_PT1H.json, elastic/vnet-PT1H.json, vnet-records.ndjson.
    const FLOWLOG: &str = "/SUBSCRIPTIONS/00000000-0000-0000-0000-000000000000/RESOURCEGROUPS/NETWORKWATCHERRG/PROVIDERS/MICROSOFT.NETWORK/NETWORKWATCHERS/NETWORKWATCHER_EASTUS2EUAP/FLOWLOGS/VNETFLOWLOG";
    // `targetResourceID` (VNet scope) of the same files.
    const TARGET_VNET: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/myResourceGroup/providers/Microsoft.Network/virtualNetworks/myVNet";
    // Subnet- and NIC-scope targets, shaped as Azure documents them.
    const TARGET_SUBNET: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/myResourceGroup/providers/Microsoft.Network/virtualNetworks/myVNet/subnets/mySubnet";
    // `aclID` in the VNet fixtures: a GUID, not a resource path.
    const ACL_GUID: &str = "00000000-1234-abcd-ef00-c1c2c3c4c5c6";
    const TARGET_NIC: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/myResourceGroup/providers/Microsoft.Network/networkInterfaces/myvm-nic01";

    fn read_fixture(rel: &str) -> String {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures/").to_owned() + rel;
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
    }

    #[test]
    fn fixture_ids_are_the_ones_tested_here() {
        for (file, ids) in [
            ("msdocs/nsg_v1_PT1H.json", &[NSG_ZERO][..]),
            ("msdocs/nsg_v2_PT1H.json", &[NSG_AAAA][..]),
            (
                "msdocs/vnet_v4_PT1H.json",
                &[FLOWLOG, TARGET_VNET, ACL_GUID][..],
            ),
            ("elastic/nsg-PT1H.json", &[NSG_ZERO][..]),
            ("elastic/nsg-records.ndjson", &[NSG_ZERO][..]),
            (
                "elastic/vnet-PT1H.json",
                &[FLOWLOG, TARGET_VNET, ACL_GUID][..],
            ),
            (
                "elastic/vnet-records.ndjson",
                &[FLOWLOG, TARGET_VNET, ACL_GUID][..],
            ),
        ] {
            let text = read_fixture(file);
            for id in ids {
                assert!(text.contains(id), "{file} should contain {id}");
            }
        }
    }

    #[test]
    fn nsg_resource_id() {
        for (id, sub) in [
            (NSG_AAAA, "aaaa0a0a-bb1b-cc2c-dd3d-eeeeee4e4e4e"),
            (NSG_ZERO, "00000000-0000-0000-0000-000000000000"),
        ] {
            let r = ResourceId::parse(id).expect("parses");
            assert_eq!(r.subscription_id(), sub);
            assert_eq!(r.resource_group(), Some("FABRIKAMRG"));
            assert_eq!(r.provider_namespace(), Some("MICROSOFT.NETWORK"));
            // Elastic's expected output: azure.resource.provider.
            assert_eq!(
                r.provider(),
                Some("MICROSOFT.NETWORK/NETWORKSECURITYGROUPS")
            );
            assert_eq!(r.network_security_group(), Some("FABRIAKMVM1-NSG"));
            assert_eq!(r.last(), Some(("NETWORKSECURITYGROUPS", "FABRIAKMVM1-NSG")));
            assert_eq!(r.network_watcher(), None);
            assert_eq!(r.virtual_network(), None);
            assert_eq!(r.network_watcher_region(), None);
        }
    }

    #[test]
    fn vnet_flow_log_resource_id() {
        let r = ResourceId::parse(FLOWLOG).expect("parses");
        assert_eq!(r.subscription_id(), "00000000-0000-0000-0000-000000000000");
        assert_eq!(r.resource_group(), Some("NETWORKWATCHERRG"));
        assert_eq!(r.network_watcher(), Some("NETWORKWATCHER_EASTUS2EUAP"));
        assert_eq!(
            r.network_watcher_region().map(|x| x.to_string()).as_deref(),
            Some("eastus2euap")
        );
        assert_eq!(r.flow_log(), Some("VNETFLOWLOG"));
        assert_eq!(r.network_security_group(), None);
        let pairs: Vec<_> = r.resources().collect();
        assert_eq!(
            pairs,
            [
                ("NETWORKWATCHERS", "NETWORKWATCHER_EASTUS2EUAP"),
                ("FLOWLOGS", "VNETFLOWLOG")
            ]
        );
    }

    #[test]
    fn targets_vnet_subnet_nic() {
        let v = ResourceId::parse(TARGET_VNET).expect("parses");
        assert_eq!(v.resource_group(), Some("myResourceGroup"));
        assert_eq!(v.provider(), Some("Microsoft.Network/virtualNetworks"));
        assert_eq!(v.virtual_network(), Some("myVNet"));
        assert_eq!(v.subnet(), None);
        assert_eq!(v.network_interface(), None);

        let s = ResourceId::parse(TARGET_SUBNET).expect("parses");
        assert_eq!(s.virtual_network(), Some("myVNet"));
        assert_eq!(s.subnet(), Some("mySubnet"));
        assert_eq!(s.network_interface(), None);

        let n = ResourceId::parse(TARGET_NIC).expect("parses");
        assert_eq!(n.network_interface(), Some("myvm-nic01"));
        assert_eq!(n.virtual_network(), None);
        assert_eq!(n.subnet(), None);
    }

    #[test]
    fn keywords_and_types_any_case_values_keep_case() {
        let r = ResourceId::parse(
            "/Subscriptions/Sub-1/ResourceGroups/Rg-Mixed/Providers/microsoft.network/NetworkSecurityGroups/Nsg-A",
        )
        .expect("parses");
        assert_eq!(r.subscription_id(), "Sub-1");
        assert_eq!(r.resource_group(), Some("Rg-Mixed"));
        assert_eq!(r.network_security_group(), Some("Nsg-A"));
    }

    #[test]
    fn network_watcher_names() {
        let region = |n: &str| network_watcher_region(n).map(|r| r.to_string());
        assert_eq!(
            region("NETWORKWATCHER_EASTUS2EUAP").as_deref(),
            Some("eastus2euap")
        );
        assert_eq!(
            region("NetworkWatcher_westeurope").as_deref(),
            Some("westeurope")
        );
        assert_eq!(
            region("networkwatcher_centralus").as_deref(),
            Some("centralus")
        );
        // Blob-path form: NETWORKWATCHER_{REGION}_{FLOWLOGNAME}.
        assert_eq!(
            region("NETWORKWATCHER_EASTUS_MY_FLOW_LOG").as_deref(),
            Some("eastus")
        );
        for none in [
            "",
            "NetworkWatcher",
            "NetworkWatcher_",
            "my-watcher",
            "NetworkWatcherX_eastus",
            "NetworkWatcher_east-us",
            "NetworkWatcher_ünïcode",
            "NetworkWatcher_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ] {
            assert_eq!(region(none), None, "{none:?}");
        }
        // Multi-byte text where the prefix would end must not panic (char boundary).
        assert_eq!(region("NetworkWatcheré_x"), None);
    }

    #[test]
    fn custom_watcher_name_has_no_region() {
        let r = ResourceId::parse(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkWatchers/corp-watcher/flowLogs/fl1",
        )
        .expect("parses");
        assert_eq!(r.network_watcher(), Some("corp-watcher"));
        assert_eq!(r.network_watcher_region(), None);
        assert_eq!(r.flow_log(), Some("fl1"));
    }

    #[test]
    fn partial_and_other_ids() {
        let sub = ResourceId::parse("/subscriptions/abc").expect("parses");
        assert_eq!(sub.subscription_id(), "abc");
        assert_eq!(sub.resource_group(), None);
        assert_eq!(sub.resources().count(), 0);

        let rg = ResourceId::parse("/subscriptions/abc/resourceGroups/rg/").expect("parses");
        assert_eq!(rg.resource_group(), Some("rg"));
        assert_eq!(rg.provider_namespace(), None);
        assert_eq!(rg.provider(), None);

        // Subscription-level provider resource.
        let p =
            ResourceId::parse("/subscriptions/abc/providers/Microsoft.Network/virtualNetworks/v")
                .expect("parses");
        assert_eq!(p.resource_group(), None);
        assert_eq!(p.virtual_network(), Some("v"));

        // Not Microsoft.Network: the network helpers do not guess.
        let c = ResourceId::parse(
            "/subscriptions/abc/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1",
        )
        .expect("parses");
        assert_eq!(c.last(), Some(("virtualMachines", "vm1")));
        assert_eq!(c.network_interface(), None);

        // Extension resource: nested providers segment is skipped.
        let e = ResourceId::parse(
            "/subscriptions/abc/resourceGroups/rg/providers/Microsoft.Network/networkSecurityGroups/n/providers/Microsoft.Insights/diagnosticSettings/d",
        )
        .expect("parses");
        assert_eq!(e.network_security_group(), Some("n"));
        assert_eq!(e.last(), Some(("diagnosticSettings", "d")));
    }

    #[test]
    fn damaged_tails_keep_what_is_sound() {
        let r = ResourceId::parse(
            "/subscriptions/abc/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v/subnets",
        )
        .expect("parses");
        assert_eq!(r.virtual_network(), Some("v"));
        assert_eq!(r.subnet(), None);

        let r = ResourceId::parse(
            "/subscriptions/abc/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks//subnets/s",
        )
        .expect("parses");
        assert_eq!(r.subscription_id(), "abc");
        assert_eq!(r.virtual_network(), None);
        assert_eq!(r.subnet(), None);
        assert_eq!(r.provider(), None);

        let r =
            ResourceId::parse("/subscriptions/abc/resourceGroups/rg/providers/Microsoft.Network")
                .expect("parses");
        assert_eq!(r.provider_namespace(), Some("Microsoft.Network"));
        assert_eq!(r.last(), None);
    }

    #[test]
    fn malformed_ids_are_none() {
        for bad in [
            "",
            "/",
            "//",
            "subscriptions",
            "/subscriptions",
            "/subscriptions/",
            "/subscriptions//resourceGroups/rg",
            "/subscription/abc",
            "/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v",
            "/subscriptions/abc/resourceGroups",
            "/subscriptions/abc/resourceGroups//providers/Microsoft.Network/virtualNetworks/v",
            "/subscriptions/abc/resourceGroups/rg/virtualNetworks/v",
            "/subscriptions/abc/resourceGroups/rg/providers",
            "/subscriptions/abc/resourceGroups/rg/providers/",
            "/subscriptions/abc/garbage",
            "00000000-0000-0000-0000-000000000000",
            ACL_GUID,
            "unspecified",
        ] {
            assert_eq!(ResourceId::parse(bad), None, "{bad:?}");
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn never_panics(s in ".{0,200}") {
                if let Some(r) = ResourceId::parse(&s) {
                    let _ = (r.network_security_group(), r.flow_log(), r.subnet(), r.network_interface());
                    let _ = r.network_watcher_region();
                    let _ = r.resources().count();
                    let _ = r.provider();
                }
            }

            #[test]
            fn never_panics_on_id_like_text(
                parts in proptest::collection::vec(
                    prop_oneof![
                        Just("subscriptions".to_owned()),
                        Just("resourceGroups".to_owned()),
                        Just("providers".to_owned()),
                        Just("Microsoft.Network".to_owned()),
                        Just("virtualNetworks".to_owned()),
                        Just("subnets".to_owned()),
                        Just("networkWatchers".to_owned()),
                        Just("NetworkWatcher_eastus".to_owned()),
                        Just(String::new()),
                        "[a-zA-Z0-9_é-]{0,8}",
                    ],
                    0..12,
                ),
                lead in proptest::bool::ANY,
            ) {
                let id = format!("{}{}", if lead { "/" } else { "" }, parts.join("/"));
                if let Some(r) = ResourceId::parse(&id) {
                    prop_assert!(!r.subscription_id().is_empty());
                    let _ = (r.virtual_network(), r.subnet(), r.network_watcher_region(), r.provider());
                    for (ty, name) in r.resources() {
                        prop_assert!(!ty.is_empty() && !name.is_empty());
                    }
                }
            }
        }
    }
}
