//! The enrichment facade: built from `[enrich]` and `[[network]]`, it answers for one side of
//! a tuple (an address) with its network name, Azure service and region, location and AS,
//! caching answers per address for the record being encoded, and reloads its files when they
//! change.
//!
//! Named networks apply to every address. Service tags, GeoIP and ASN apply to
//! internet-routable addresses only ([`is_internet_routable`]): 10.0.0.4 or 168.63.129.16 are
//! never looked up.
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::enrich::{EnrichConfig, NetworkConfig};

use super::EnrichError;
use super::geoip::{AsnDb, AutonomousSystem, Geo, GeoDb, RecordCache};
use super::networks::NetworkTable;
use super::reload::{Reload, Watched};
use super::routable::is_internet_routable;
use super::service_tags::{ServiceTag, ServiceTagTable};

/// What is known of one address (one side of a tuple). Every part is optional: absent when
/// its lookup is off, does not apply (a private address has no location) or found nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SideEnrichment {
    /// The `[[network]]` with the most specific prefix holding the address.
    pub network: Option<Arc<str>>,
    /// The service tag of the most specific service tags prefix holding the address.
    pub service: Option<Arc<ServiceTag>>,
    pub geo: Option<Arc<Geo>>,
    #[doc(alias = "as")]
    pub asn: Option<Arc<AutonomousSystem>>,
}

impl SideEnrichment {
    pub fn is_empty(&self) -> bool {
        self.network.is_none() && self.service.is_none() && self.geo.is_none() && self.asn.is_none()
    }
}

/// What one reload check did for one file.
#[derive(Debug)]
pub struct ReloadOutcome {
    pub path: PathBuf,
    pub result: Reload,
}

/// Named networks, service tags, GeoIP and ASN, each optional.
#[derive(Debug)]
pub struct Enricher {
    networks: NetworkTable,
    service_tags: Option<Watched<ServiceTagTable>>,
    geo: Option<Watched<GeoDb>>,
    asn: Option<Watched<AsnDb>>,
    lookup_errors: AtomicU64,
}

impl Enricher {
    /// Opens every configured file; an unreadable or malformed one is an error naming it
    /// (a startup error: the daemon should not run without a lookup it was asked for).
    /// `networks` must have passed `config::enrich::validate`.
    pub fn from_config(
        enrich: &EnrichConfig,
        networks: &[NetworkConfig],
    ) -> Result<Enricher, EnrichError> {
        Ok(Enricher {
            networks: NetworkTable::from_config(networks),
            service_tags: open(&enrich.service_tags_file, ServiceTagTable::load)?,
            geo: open(&enrich.geoip_file, GeoDb::open)?,
            asn: open(&enrich.asn_file, AsnDb::open)?,
            lookup_errors: AtomicU64::new(0),
        })
    }

    /// Whether any lookup is configured (when not, the encoder can skip enrichment).
    pub fn is_enabled(&self) -> bool {
        !self.networks.is_empty()
            || self.service_tags.is_some()
            || self.geo.is_some()
            || self.asn.is_some()
    }

    /// Whether any lookup reads a file (which [`Enricher::reload_if_changed`] then watches).
    pub fn watches_files(&self) -> bool {
        self.service_tags.is_some() || self.geo.is_some() || self.asn.is_some()
    }

    /// Checks every file for a change and loads the changed ones; a file that fails to load
    /// keeps its previous version. Logs what happened and returns it (for metrics and tests).
    /// Blocking (reads files of up to ~60 MB): run it on the blocking pool, every
    /// `[enrich] reload_interval`.
    pub fn reload_if_changed(&self) -> Vec<ReloadOutcome> {
        let mut outcomes = Vec::new();
        let mut check = |path: &Path, result: Reload| {
            match &result {
                Reload::Unchanged => {}
                Reload::Reloaded => {
                    tracing::info!(file = %path.display(), "enrichment file changed: reloaded")
                }
                Reload::Failed(e) => tracing::warn!(
                    file = %path.display(),
                    error = %e,
                    "enrichment file changed but cannot be loaded: the previous version stays in use"
                ),
            }
            outcomes.push(ReloadOutcome {
                path: path.to_owned(),
                result,
            });
        };
        if let Some(w) = &self.service_tags {
            check(w.path(), w.reload_if_changed());
        }
        if let Some(w) = &self.geo {
            check(w.path(), w.reload_if_changed());
        }
        if let Some(w) = &self.asn {
            check(w.path(), w.reload_if_changed());
        }
        outcomes
    }

    /// A lookup session over the tables in use now (a later reload does not affect it until
    /// [`Lookups::start_record`]). One per encoding task; it holds the enricher by `Arc` so an
    /// encoder can own it.
    pub fn lookups(self: &Arc<Self>) -> Lookups {
        let mut l = Lookups {
            enricher: Arc::clone(self),
            service_tags: None,
            geo: None,
            asn: None,
            by_addr: HashMap::default(),
            sides: Vec::new(),
            geo_records: RecordCache::default(),
            asn_records: RecordCache::default(),
            generation: 0,
        };
        l.refresh();
        l
    }

    /// Lookups that failed inside a database that opened fine (damaged records), since start.
    /// Such an address gets no answer from that database.
    pub fn lookup_errors(&self) -> u64 {
        self.lookup_errors.load(Ordering::Relaxed)
    }
}

fn open<T>(
    path: &Option<PathBuf>,
    load: fn(&Path) -> Result<T, EnrichError>,
) -> Result<Option<Watched<T>>, EnrichError> {
    path.as_deref().map(|p| Watched::open(p, load)).transpose()
}

/// Lookups with a cache per address (and per database record): the addresses of a record
/// repeat (one NIC talking to few peers), and so do those of the next records of the same
/// NIC, while a first lookup with every file on costs ~100x a cache hit (see
/// docs/PERFORMANCE.md). Call [`Lookups::start_record`] before each record: it picks up
/// reloaded tables, emptying the cache when any changed, and empties it when it holds more
/// than [`MAX_CACHED_ADDRESSES`], so answers never outlive their tables and memory stays
/// bounded (a few hundred KiB per session).
pub struct Lookups {
    enricher: Arc<Enricher>,
    service_tags: Option<Arc<ServiceTagTable>>,
    geo: Option<Arc<GeoDb>>,
    asn: Option<Arc<AsnDb>>,
    /// Index into `sides` per address: a hit costs one hash, and both sides of a tuple can be
    /// borrowed at once.
    /// foldhash: a quarter of SipHash's cost, and seeded per map, so addresses an attacker
    /// chooses (spoofed sources of denied flows) cannot be picked to collide.
    by_addr: HashMap<IpAddr, u32, foldhash::fast::RandomState>,
    sides: Vec<SideEnrichment>,
    geo_records: RecordCache<Geo>,
    asn_records: RecordCache<AutonomousSystem>,
    /// Bumped whenever the cache is emptied, so a caller keeping something per [`Slot`]
    /// (the encoder's serialised fields) knows when its slots went stale.
    generation: u64,
}

/// Where the answer for one address sits in a [`Lookups`] cache, valid until the cache's
/// [`Lookups::generation`] changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot(pub usize);

impl std::fmt::Debug for Lookups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lookups")
            .field("cached_addresses", &self.sides.len())
            .finish()
    }
}

impl Lookups {
    fn refresh(&mut self) {
        let e = &*self.enricher;
        self.service_tags = e.service_tags.as_ref().map(Watched::current);
        self.geo = e.geo.as_ref().map(Watched::current);
        self.asn = e.asn.as_ref().map(Watched::current);
    }

    /// Takes the tables in use now; empties the caches when a table changed or the cache is
    /// over [`MAX_CACHED_ADDRESSES`].
    pub fn start_record(&mut self) {
        let before = (
            self.service_tags.as_ref().map(Arc::as_ptr),
            self.geo.as_ref().map(Arc::as_ptr),
            self.asn.as_ref().map(Arc::as_ptr),
        );
        self.refresh();
        let after = (
            self.service_tags.as_ref().map(Arc::as_ptr),
            self.geo.as_ref().map(Arc::as_ptr),
            self.asn.as_ref().map(Arc::as_ptr),
        );
        if before != after {
            self.clear();
            return;
        }
        if self.sides.len() > MAX_CACHED_ADDRESSES {
            self.clear_addresses();
        }
        // The database caches outlive the address cache (a scan of many addresses of a few
        // networks keeps hitting them) under a bound of their own.
        if self.geo_records.len() > MAX_CACHED_RECORDS {
            self.geo_records.clear();
        }
        if self.asn_records.len() > MAX_CACHED_RECORDS {
            self.asn_records.clear();
        }
    }

    /// Empties the caches (what [`Lookups::start_record`] does when a table changed).
    pub fn clear(&mut self) {
        self.clear_addresses();
        self.geo_records.clear();
        self.asn_records.clear();
    }

    /// Empties the answers per address.
    fn clear_addresses(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        self.by_addr.clear();
        self.sides.clear();
    }

    /// Addresses answered from the cache until the next [`Lookups::clear`].
    pub fn cached_addresses(&self) -> usize {
        self.sides.len()
    }

    /// Counts the times the cache was emptied: [`Slot`]s of another generation are stale.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Where the answer for `addr` is, looked up first when it is not cached yet.
    pub fn slot(&mut self, addr: IpAddr) -> Slot {
        Slot(self.index(addr))
    }

    /// The answer at `slot` (of the current generation).
    pub fn at(&self, slot: Slot) -> &SideEnrichment {
        self.sides.get(slot.0).unwrap_or(&EMPTY)
    }

    /// What is known of `addr`.
    pub fn side(&mut self, addr: IpAddr) -> &SideEnrichment {
        let i = self.index(addr);
        self.sides.get(i).unwrap_or(&EMPTY)
    }

    /// What is known of the source and of the destination of a tuple.
    pub fn pair(&mut self, src: IpAddr, dst: IpAddr) -> (&SideEnrichment, &SideEnrichment) {
        let (s, d) = (self.index(src), self.index(dst));
        (
            self.sides.get(s).unwrap_or(&EMPTY),
            self.sides.get(d).unwrap_or(&EMPTY),
        )
    }

    /// Where the answer for `addr` is in `sides`, looked up first if needed.
    fn index(&mut self, addr: IpAddr) -> usize {
        if let Some(&i) = self.by_addr.get(&addr) {
            return i as usize;
        }
        let side = self.look_up(addr);
        let i = self.sides.len();
        self.sides.push(side);
        // At most MAX_CACHED_ADDRESSES plus one record's addresses: far below u32::MAX.
        self.by_addr
            .insert(addr, u32::try_from(i).unwrap_or(u32::MAX));
        i
    }

    fn look_up(&mut self, addr: IpAddr) -> SideEnrichment {
        let mut side = SideEnrichment {
            network: self.enricher.networks.name_of(addr).cloned(),
            ..SideEnrichment::default()
        };
        if !is_internet_routable(addr) {
            return side;
        }
        if let Some(t) = &self.service_tags {
            side.service = t.lookup(addr).map(|(_, tag)| Arc::clone(tag));
        }
        if let Some(db) = &self.geo {
            match db.lookup_cached(addr, &mut self.geo_records) {
                Ok(geo) => side.geo = geo,
                Err(e) => self.lookup_failed(&e),
            }
        }
        if let Some(db) = &self.asn {
            match db.lookup_cached(addr, &mut self.asn_records) {
                Ok(asn) => side.asn = asn,
                Err(e) => self.lookup_failed(&e),
            }
        }
        side
    }

    fn lookup_failed(&self, e: &super::geoip::LookupError) {
        // Counted, and logged at debug only: a damaged database fails on many addresses.
        self.enricher.lookup_errors.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(error = %e, "MaxMind lookup failed: the address gets no answer from it");
    }
}

/// Addresses a [`Lookups`] keeps answers for across records: a NIC's peers of the last
/// minutes, without letting a scan of many addresses grow the cache without bound.
pub const MAX_CACHED_ADDRESSES: usize = 4096;

/// Records and address blocks a [`Lookups`] keeps per MaxMind database (each a few dozen
/// bytes plus the shared answer): a bound for a scan across the whole internet.
pub const MAX_CACHED_RECORDS: usize = 65_536;

static EMPTY: SideEnrichment = SideEnrichment {
    network: None,
    service: None,
    geo: None,
    asn: None,
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::enrich::Cidr;
    use crate::enrich::geoip::tests::mmdb;
    use crate::enrich::reload::Reload;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn small_tags() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ServiceTags_Public_small.json")
    }

    fn everything(tags: PathBuf) -> EnrichConfig {
        EnrichConfig {
            service_tags_file: Some(tags),
            geoip_file: Some(mmdb("test-City.mmdb")),
            asn_file: Some(mmdb("test-ASN.mmdb")),
            ..EnrichConfig::default()
        }
    }

    fn networks() -> Vec<NetworkConfig> {
        let net = |name: &str, cidrs: &[&str]| NetworkConfig {
            name: name.to_owned(),
            cidrs: cidrs
                .iter()
                .map(|c| Cidr::parse(c).expect("test prefix"))
                .collect(),
        };
        vec![
            net("azure", &["10.0.0.0/8", "fd00::/8"]),
            net("onprem", &["10.4.0.0/16", "100.64.0.0/10"]),
            net("partner", &["81.2.69.0/24"]),
        ]
    }

    /// (network, service, region, country, city, AS number) of one side.
    type Summary = (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<u32>,
    );

    fn summary(s: &SideEnrichment) -> Summary {
        (
            s.network.as_deref().map(str::to_owned),
            s.service.as_ref().map(|t| t.service.to_string()),
            s.service
                .as_ref()
                .and_then(|t| t.region.as_deref().map(str::to_owned)),
            s.geo
                .as_ref()
                .and_then(|g| g.country_iso_code.as_deref().map(str::to_owned)),
            s.geo
                .as_ref()
                .and_then(|g| g.city_name.as_deref().map(str::to_owned)),
            s.asn.as_ref().map(|a| a.number),
        )
    }

    fn strings(v: [Option<&str>; 5], asn: Option<u32>) -> Summary {
        let [a, b, c, d, e] = v.map(|s| s.map(str::to_owned));
        (a, b, c, d, e, asn)
    }

    #[test]
    fn without_configuration_nothing_is_enabled_and_sides_are_empty() {
        let e = Arc::new(Enricher::from_config(&EnrichConfig::default(), &[]).unwrap());
        assert!(!e.is_enabled());
        let mut l = e.lookups();
        assert!(l.side(ip("20.38.108.5")).is_empty());
        assert!(e.reload_if_changed().is_empty());
    }

    #[test]
    fn a_public_address_gets_service_region_geo_and_as_and_a_private_one_only_its_network() {
        let e = Arc::new(Enricher::from_config(&everything(small_tags()), &networks()).unwrap());
        assert!(e.is_enabled());
        let mut l = e.lookups();
        let (src, dst) = l.pair(ip("10.0.0.4"), ip("20.38.108.5"));
        assert_eq!(
            summary(src),
            strings([Some("azure"), None, None, None, None], None)
        );
        assert_eq!(
            summary(dst),
            strings(
                [
                    None,
                    Some("AzureStorage"),
                    Some("westeurope"),
                    Some("NL"),
                    Some("Amsterdam")
                ],
                Some(8075)
            )
        );
        // IPv6: service tag and AS, no location in the test City database.
        assert_eq!(
            summary(l.side(ip("2603:1020:0:1::5"))),
            strings(
                [None, Some("AzureStorage"), Some("westeurope"), None, None],
                Some(8075)
            )
        );
        // A named public network still gets public lookups.
        assert_eq!(
            summary(l.side(ip("81.2.69.142"))),
            strings(
                [Some("partner"), None, None, Some("GB"), Some("London")],
                Some(20712)
            )
        );
        let full = l.side(ip("20.38.108.5")).clone();
        assert_eq!(
            full.service.as_ref().map(|t| &*t.name),
            Some("AzureStorage.WestEurope")
        );
        let geo = full.geo.as_ref().unwrap();
        assert_eq!(
            geo.location.map(|p| (p.lat, p.lon)),
            Some((52.3759, 4.8975))
        );
        assert_eq!(
            full.asn.as_ref().and_then(|a| a.organization.as_deref()),
            Some("MICROSOFT-CORP-MSN-AS-BLOCK")
        );
        assert_eq!(e.lookup_errors(), 0);
    }

    #[test]
    fn private_reserved_and_platform_addresses_never_get_geo_service_or_as() {
        // The test databases hold a "trap" record (ZZ, AS 64512) for each of these ranges:
        // any answer here would mean the address was looked up.
        let e = Arc::new(Enricher::from_config(&everything(small_tags()), &networks()).unwrap());
        let mut l = e.lookups();
        for (addr, network) in [
            ("10.0.0.4", Some("azure")),
            ("10.4.9.9", Some("onprem")),
            ("172.16.3.4", None),
            ("192.168.1.1", None),
            ("100.64.7.7", Some("onprem")),
            ("127.0.0.1", None),
            ("169.254.169.254", None),
            ("168.63.129.16", None),
            ("fd00::5", Some("azure")),
            ("fe80::1", None),
            ("::ffff:10.0.0.4", Some("azure")),
        ] {
            assert_eq!(
                summary(l.side(ip(addr))),
                strings([network, None, None, None, None], None),
                "{addr}"
            );
        }
    }

    #[test]
    fn answers_are_kept_across_records_up_to_a_bound_and_dropped_when_a_table_changes() {
        let e = Arc::new(Enricher::from_config(&everything(small_tags()), &networks()).unwrap());
        let mut l = e.lookups();
        l.side(ip("20.38.108.5"));
        l.side(ip("10.0.0.4"));
        l.start_record();
        assert_eq!(l.cached_addresses(), 2, "kept for the next record");
        for i in 0..=MAX_CACHED_ADDRESSES as u32 {
            l.side(IpAddr::V4(std::net::Ipv4Addr::from(0x0b00_0000 + i)));
        }
        assert_eq!(l.cached_addresses(), MAX_CACHED_ADDRESSES + 3);
        l.start_record();
        assert_eq!(l.cached_addresses(), 0, "over the bound: emptied");
        assert_eq!(
            summary(l.side(ip("20.38.108.5"))).1.as_deref(),
            Some("AzureStorage"),
            "answered again after emptying"
        );
    }

    #[test]
    fn a_malformed_tags_file_or_database_is_a_startup_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("ServiceTags_Public_20250101.json");
        std::fs::write(&bad, "{\"values\": [{\"name\": \"AzureCloud\"}]}").unwrap();
        let err = Enricher::from_config(&everything(bad.clone()), &[]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("service tags file {}: ", bad.display())),
            "{err}"
        );
        let bad_db = dir.path().join("GeoLite2-City.mmdb");
        std::fs::write(&bad_db, vec![0u8; 4096]).unwrap();
        let config = EnrichConfig {
            geoip_file: Some(bad_db.clone()),
            ..everything(small_tags())
        };
        let err = Enricher::from_config(&config, &[]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("MaxMind database {}: ", bad_db.display())),
            "{err}"
        );
    }

    #[test]
    fn a_changed_tags_file_is_reloaded_and_a_broken_one_keeps_the_previous_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ServiceTags_Public.json");
        std::fs::copy(small_tags(), &path).unwrap();
        let config = EnrichConfig {
            service_tags_file: Some(path.clone()),
            ..EnrichConfig::default()
        };
        let e = Arc::new(Enricher::from_config(&config, &[]).unwrap());
        let mut l = e.lookups();
        let region = |l: &mut Lookups| {
            l.side(ip("20.38.108.5"))
                .service
                .as_ref()
                .and_then(|t| t.region.as_deref().map(str::to_owned))
        };
        assert_eq!(region(&mut l).as_deref(), Some("westeurope"));
        let outcomes = e.reload_if_changed();
        assert!(matches!(
            outcomes[..],
            [ReloadOutcome {
                result: Reload::Unchanged,
                ..
            }]
        ));

        // Next week's file: the storage prefix moved to North Europe.
        let text = std::fs::read_to_string(small_tags())
            .unwrap()
            .replace("\"AzureStorage.WestEurope\"", "\"AzureStorage.NorthEurope\"")
            .replace(
                "\"region\": \"westeurope\",\n        \"regionId\": 18,\n        \"platform\": \"Azure\",\n        \"systemService\": \"AzureStorage\"",
                "\"region\": \"northeurope\",\n        \"regionId\": 17,\n        \"platform\": \"Azure\",\n        \"systemService\": \"AzureStorage\"",
            );
        assert!(text.contains("AzureStorage.NorthEurope") && text.contains("\"northeurope\",\n        \"regionId\": 17,\n        \"platform\": \"Azure\",\n        \"systemService\": \"AzureStorage\""));
        std::fs::write(&path, text).unwrap();
        let outcomes = e.reload_if_changed();
        assert!(matches!(
            outcomes[..],
            [ReloadOutcome {
                result: Reload::Reloaded,
                ..
            }]
        ));
        // A session keeps its tables until its next record.
        assert_eq!(region(&mut l).as_deref(), Some("westeurope"));
        l.start_record();
        assert_eq!(region(&mut l).as_deref(), Some("northeurope"));

        std::fs::write(&path, "{\"values\": [").unwrap();
        let outcomes = e.reload_if_changed();
        match &outcomes[..] {
            [
                ReloadOutcome {
                    path: p,
                    result: Reload::Failed(err),
                },
            ] => {
                assert_eq!(p, &path);
                assert!(
                    err.to_string().starts_with(&format!(
                        "service tags file {}: not a service tags file",
                        path.display()
                    )),
                    "{err}"
                );
            }
            other => panic!("expected one failure, got {other:?}"),
        }
        l.start_record();
        assert_eq!(
            region(&mut l).as_deref(),
            Some("northeurope"),
            "previous table kept"
        );
    }
}
