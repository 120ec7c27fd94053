//! Every enrichment of flowlogd turned on for the flow logs `flowlogd gen` writes, so that the
//! enrichment fields the dashboards read have values: a `[[network]]` list naming the
//! generator's private ranges, a service tags file covering some of its public peers, the real
//! GeoLite2-City database and the test ASN database (`scripts/lib/make-test-mmdb.py` lists the
//! generator's peers there).
//!
//! Used by `tests/dashboards_engine.rs` (the real binary's config) and `tests/deploy_files.rs`
//! (through `#[path]`, as that crate does not build the rest of `common`).
use std::path::Path;

/// A service tags file in Microsoft's exact shape (`changeNumber`, `cloud`, `values[]` with
/// `name`, `id`, `properties.{changeNumber, region, regionId, platform, systemService,
/// addressPrefixes, networkFeatures}`), written by hand for the public peers of
/// `src/generator.rs`: 52.239/16 as Azure Storage (East US and West Europe halves), 40.74/18 as
/// Azure SQL (West Europe) inside AzureCloud.westeurope, 13.107/16 as Azure Front Door (global),
/// 20.106/16 as plain AzureCloud.eastus. The tag names are Microsoft's; the prefixes are chosen
/// to cover the generator's peers, not copied from a real file.
pub const GENERATOR_SERVICE_TAGS: &str = "tests/data/ServiceTags_Public_generator.json";

/// The `[enrich]` and `[[network]]` tables of a flowlogd config (TOML) that enrich generated
/// flow logs: `azure` is the VNets' 10/8 (every generated NIC and its private peers),
/// `on-prem` the peers behind a gateway (192.168/16, and 100.64/10 as a carrier-grade NAT
/// range). `repo` is the source tree; the MaxMind files come from
/// [`flowlogd::enrich::testdata::test_mmdb_dir`].
pub fn generator_enrichment_toml(repo: &Path) -> String {
    let mmdb = flowlogd::enrich::testdata::test_mmdb_dir(repo)
        .unwrap_or_else(|e| panic!("test MaxMind databases: {e}"));
    let path = |p: &Path| {
        assert!(p.is_file(), "{} is missing", p.display());
        p.display().to_string()
    };
    format!(
        r#"[enrich]
service_tags_file = "{tags}"
geoip_file = "{geo}"
asn_file = "{asn}"

[[network]]
name = "azure"
cidrs = ["10.0.0.0/8"]

[[network]]
name = "on-prem"
cidrs = ["192.168.0.0/16", "100.64.0.0/10"]
"#,
        tags = path(&repo.join(GENERATOR_SERVICE_TAGS)),
        geo = path(&mmdb.join("GeoLite2-City.mmdb")),
        asn = path(&mmdb.join("test-ASN.mmdb")),
    )
}
