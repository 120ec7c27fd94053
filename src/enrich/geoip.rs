//! GeoIP and AS lookups in MaxMind DB files (GeoLite2-City/-Country, GeoLite2-ASN) through the
//! `maxminddb` reader: country, city and location, AS number and organization of an address.
//!
//! Each file is read whole into memory rather than memory-mapped: a database replaced in place
//! (truncated and rewritten instead of renamed over) would make a mapping fault (SIGBUS) in
//! the middle of a lookup, and a reload needs a private copy anyway. GeoLite2-City is ~60 MB.
//!
//! Only the fields flowlogd writes are decoded (English names), with borrowed strings, instead
//! of the crate's full `geoip2::City` (every language, subdivisions, postal code).
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use maxminddb::{LookupResult, MaxMindDbError, Reader};
use serde::Deserialize;

use super::EnrichError;

/// Where an address is, as far as the database knows (ECS `geo.*`).
#[derive(Debug, Clone, PartialEq)]
pub struct Geo {
    /// ISO 3166-1 alpha-2 (`geo.country_iso_code`), e.g. `NL`.
    pub country_iso_code: Option<Box<str>>,
    /// English name (`geo.country_name`), e.g. `Netherlands`.
    pub country_name: Option<Box<str>>,
    /// English name (`geo.continent_name`), e.g. `Europe`.
    pub continent_name: Option<Box<str>>,
    /// English name (`geo.city_name`), e.g. `Amsterdam`; City databases only.
    pub city_name: Option<Box<str>>,
    /// Latitude and longitude (`geo.location`, a `geo_point`); City databases only.
    pub location: Option<GeoPoint>,
}

impl Geo {
    fn is_empty(&self) -> bool {
        self.country_iso_code.is_none()
            && self.country_name.is_none()
            && self.continent_name.is_none()
            && self.city_name.is_none()
            && self.location.is_none()
    }
}

/// A position in degrees (WGS 84).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeoPoint {
    pub lat: f64,
    pub lon: f64,
}

/// The autonomous system announcing an address (ECS `as.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutonomousSystem {
    /// `as.number`, e.g. 8075.
    pub number: u32,
    /// `as.organization.name`, e.g. `MICROSOFT-CORP-MSN-AS-BLOCK`.
    pub organization: Option<Box<str>>,
}

#[derive(Deserialize)]
struct Names<'a> {
    #[serde(borrow, default)]
    en: Option<&'a str>,
}

#[derive(Deserialize)]
struct Named<'a> {
    #[serde(borrow, default)]
    names: Option<Names<'a>>,
}

#[derive(Deserialize)]
struct CountryRecord<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
    #[serde(borrow, default)]
    names: Option<Names<'a>>,
}

#[derive(Deserialize)]
struct LocationRecord {
    #[serde(default)]
    latitude: Option<f64>,
    #[serde(default)]
    longitude: Option<f64>,
}

/// The part of a City or Country record flowlogd uses.
#[derive(Deserialize)]
struct GeoRecord<'a> {
    #[serde(borrow, default)]
    country: Option<CountryRecord<'a>>,
    #[serde(borrow, default)]
    continent: Option<Named<'a>>,
    #[serde(borrow, default)]
    city: Option<Named<'a>>,
    #[serde(default)]
    location: Option<LocationRecord>,
}

#[derive(Deserialize)]
struct AsnRecord<'a> {
    #[serde(default)]
    autonomous_system_number: Option<u32>,
    #[serde(borrow, default)]
    autonomous_system_organization: Option<&'a str>,
}

fn english(named: Option<Names<'_>>) -> Option<Box<str>> {
    named.and_then(|n| n.en).map(Into::into)
}

/// The fields of a City or Country record flowlogd writes; `None` when it has none of them.
fn geo_of(r: GeoRecord<'_>) -> Option<Geo> {
    let (country_iso_code, country_name) = match r.country {
        Some(c) => (c.iso_code.map(Into::into), english(c.names)),
        None => (None, None),
    };
    let geo = Geo {
        country_iso_code,
        country_name,
        continent_name: english(r.continent.and_then(|c| c.names)),
        city_name: english(r.city.and_then(|c| c.names)),
        location: r.location.and_then(|l| match (l.latitude, l.longitude) {
            (Some(lat), Some(lon)) if lat.is_finite() && lon.is_finite() => {
                Some(GeoPoint { lat, lon })
            }
            _ => None,
        }),
    };
    (!geo.is_empty()).then_some(geo)
}

/// Which kind of data a database must hold for its option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Geo,
    Asn,
}

/// One opened MaxMind database.
struct Database {
    path: PathBuf,
    reader: Reader<Vec<u8>>,
    /// An IPv4-only database cannot answer for IPv6 addresses (the reader would fail).
    ipv6: bool,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("path", &self.path)
            .field("type", &self.reader.metadata().database_type)
            .finish()
    }
}

impl Database {
    fn open(path: &Path, kind: Kind) -> Result<Database, EnrichError> {
        let err = |reason: String| EnrichError::Database {
            path: path.to_owned(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let reader =
            Reader::from_source(bytes).map_err(|e| err(format!("not a MaxMind DB file: {e}")))?;
        let meta = reader.metadata();
        let db_type = meta.database_type.to_ascii_lowercase();
        // GeoLite2-City, GeoIP2-Country, DBIP-City-Lite…; GeoLite2-ASN, GeoIP2-ISP, DBIP-ASN-Lite.
        let fits = match kind {
            Kind::Geo => db_type.contains("city") || db_type.contains("country"),
            Kind::Asn => db_type.contains("asn") || db_type.contains("isp"),
        };
        if !fits {
            let wanted = match kind {
                Kind::Geo => {
                    "geoip_file needs a City or Country database (GeoLite2-City, GeoLite2-Country)"
                }
                Kind::Asn => "asn_file needs an ASN database (GeoLite2-ASN)",
            };
            return Err(err(format!(
                "is a {:?} database: {wanted}",
                meta.database_type
            )));
        }
        let ipv6 = meta.ip_version == 6;
        Ok(Database {
            path: path.to_owned(),
            reader,
            ipv6,
        })
    }

    /// The database's answer for `addr`: `None` for an IPv6 address in an IPv4-only database.
    fn find(&self, addr: IpAddr) -> Result<Option<LookupResult<'_, Vec<u8>>>, LookupError> {
        let addr = addr.to_canonical();
        if addr.is_ipv6() && !self.ipv6 {
            return Ok(None);
        }
        self.reader
            .lookup(addr)
            .map(Some)
            .map_err(|e| self.error(e))
    }

    fn error(&self, e: MaxMindDbError) -> LookupError {
        LookupError {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    /// Decodes the record of `addr` into `T` and converts it, once per record while `cache`
    /// holds it: one tree walk per address, one decode per distinct record (a city, an AS).
    fn lookup_cached<'a, R: Deserialize<'a>, T>(
        &'a self,
        addr: IpAddr,
        cache: &mut RecordCache<T>,
        convert: impl FnOnce(R) -> Option<T>,
    ) -> Result<Option<Arc<T>>, LookupError> {
        let block = Block::of(addr);
        if let Some(&known) = cache.blocks.get(&block) {
            let Some(offset) = known else {
                return Ok(None);
            };
            if let Some(hit) = cache.records.get(&offset) {
                return Ok(hit.clone());
            }
        }
        let Some(found) = self.find(addr)? else {
            return Ok(None);
        };
        // The database's network holding `addr` has one answer throughout: when it spans the
        // whole block, every address of the block skips the tree walk from now on.
        if found
            .network()
            .is_ok_and(|net| net.prefix() <= block.prefix_len())
        {
            cache.blocks.insert(block, found.offset());
        }
        let Some(offset) = found.offset() else {
            return Ok(None);
        };
        if let Some(hit) = cache.records.get(&offset) {
            return Ok(hit.clone());
        }
        let value = found
            .decode::<R>()
            .map_err(|e| self.error(e))?
            .and_then(convert)
            .map(Arc::new);
        cache.records.insert(offset, value.clone());
        Ok(value)
    }
}

/// Answers by record offset in one database, so addresses sharing a record (a city, an AS)
/// are decoded once, and record offsets by address block, so addresses of a block the
/// database answers for as a whole are not looked up again. Valid for one opened database
/// only: clear it when the database changes.
#[derive(Debug)]
pub struct RecordCache<T> {
    records: HashMap<usize, Option<Arc<T>>, foldhash::fast::RandomState>,
    /// Blocks inside one database network: its record offset (`None`: no data there).
    blocks: HashMap<Block, Option<usize>, foldhash::fast::RandomState>,
}

/// An IPv4 /24 or an IPv6 /48: what one network (a NIC's peers, a scanner's range) spans
/// often, and what databases rarely split (GeoLite2 networks are mostly /24 or wider).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Block {
    V4(u32),
    V6(u128),
}

impl Block {
    fn of(addr: IpAddr) -> Block {
        match addr.to_canonical() {
            IpAddr::V4(v4) => Block::V4(u32::from(v4) >> 8),
            IpAddr::V6(v6) => Block::V6(u128::from(v6) >> 80),
        }
    }

    fn prefix_len(self) -> u8 {
        match self {
            Block::V4(_) => 24,
            Block::V6(_) => 48,
        }
    }
}

impl<T> Default for RecordCache<T> {
    fn default() -> Self {
        RecordCache {
            records: HashMap::default(),
            blocks: HashMap::default(),
        }
    }
}

impl<T> RecordCache<T> {
    pub fn clear(&mut self) {
        self.records.clear();
        self.blocks.clear();
    }

    /// Decoded records held.
    pub fn records(&self) -> usize {
        self.records.len()
    }

    /// Records and blocks held.
    pub fn len(&self) -> usize {
        self.records.len() + self.blocks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.blocks.is_empty()
    }
}

/// A lookup that failed inside a database that opened fine (a damaged record): the address
/// gets no answer from it, and the caller counts it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("MaxMind database {}: lookup failed: {reason}", path.display())]
pub struct LookupError {
    pub path: PathBuf,
    pub reason: String,
}

/// A City or Country database.
#[derive(Debug)]
pub struct GeoDb(Database);

impl GeoDb {
    /// Opens `path`; fails naming the file when it cannot be read, is no MaxMind DB, or holds
    /// no locations (an ASN database given by mistake).
    pub fn open(path: &Path) -> Result<GeoDb, EnrichError> {
        Database::open(path, Kind::Geo).map(GeoDb)
    }

    /// What the database knows of `addr`; `None` when nothing. Does not check whether the
    /// address is routable: the caller decides what is worth looking up.
    pub fn lookup(&self, addr: IpAddr) -> Result<Option<Arc<Geo>>, LookupError> {
        self.lookup_cached(addr, &mut RecordCache::default())
    }

    /// [`GeoDb::lookup`], decoding each record once while `cache` holds it.
    pub fn lookup_cached(
        &self,
        addr: IpAddr,
        cache: &mut RecordCache<Geo>,
    ) -> Result<Option<Arc<Geo>>, LookupError> {
        self.0.lookup_cached(addr, cache, geo_of)
    }

    /// The database type from its metadata, e.g. `GeoLite2-City`.
    pub fn database_type(&self) -> &str {
        &self.0.reader.metadata().database_type
    }
}

/// An ASN (or ISP) database.
#[derive(Debug)]
pub struct AsnDb(Database);

impl AsnDb {
    /// Opens `path`; fails naming the file when it cannot be read, is no MaxMind DB, or is no
    /// ASN database.
    pub fn open(path: &Path) -> Result<AsnDb, EnrichError> {
        Database::open(path, Kind::Asn).map(AsnDb)
    }

    /// The AS announcing `addr`; `None` when the database has no number for it.
    pub fn lookup(&self, addr: IpAddr) -> Result<Option<Arc<AutonomousSystem>>, LookupError> {
        self.lookup_cached(addr, &mut RecordCache::default())
    }

    /// [`AsnDb::lookup`], decoding each record once while `cache` holds it.
    pub fn lookup_cached(
        &self,
        addr: IpAddr,
        cache: &mut RecordCache<AutonomousSystem>,
    ) -> Result<Option<Arc<AutonomousSystem>>, LookupError> {
        self.0.lookup_cached(addr, cache, |r: AsnRecord<'_>| {
            r.autonomous_system_number.map(|number| AutonomousSystem {
                number,
                organization: r.autonomous_system_organization.map(Into::into),
            })
        })
    }

    /// The database type from its metadata, e.g. `GeoLite2-ASN`.
    pub fn database_type(&self) -> &str {
        &self.0.reader.metadata().database_type
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::OnceLock;

    /// The test databases of `scripts/lib/test-mmdb.sh` (written on first use).
    pub(crate) fn mmdb(name: &str) -> PathBuf {
        static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
        let dir = DIR.get_or_init(|| {
            crate::enrich::testdata::test_mmdb_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
        });
        match dir {
            Ok(dir) => dir.join(name),
            Err(e) => panic!("test MaxMind databases unavailable: {e}"),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn geo(
        iso: &str,
        country: &str,
        continent: &str,
        city: Option<&str>,
        location: Option<(f64, f64)>,
    ) -> Geo {
        Geo {
            country_iso_code: Some(iso.into()),
            country_name: Some(country.into()),
            continent_name: Some(continent.into()),
            city_name: city.map(Into::into),
            location: location.map(|(lat, lon)| GeoPoint { lat, lon }),
        }
    }

    // Expected values: those scripts/lib/make-test-mmdb.py writes.
    #[test]
    fn a_city_database_gives_country_continent_city_and_location() {
        let db = GeoDb::open(&mmdb("test-City.mmdb")).unwrap();
        assert_eq!(db.database_type(), "GeoLite2-City");
        assert_eq!(
            db.lookup(ip("81.2.69.142")).unwrap().as_deref(),
            Some(&geo(
                "GB",
                "United Kingdom",
                "Europe",
                Some("London"),
                Some((51.5142, -0.0931))
            ))
        );
        assert_eq!(
            db.lookup(ip("2001:4860:4860::8888")).unwrap().as_deref(),
            Some(&geo(
                "US",
                "United States",
                "North America",
                Some("Mountain View"),
                Some((37.386, -122.0838))
            ))
        );
        // A country-level record: no city, no location.
        assert_eq!(
            db.lookup(ip("8.8.8.8")).unwrap().as_deref(),
            Some(&geo("US", "United States", "North America", None, None))
        );
        assert_eq!(
            db.lookup(ip("::ffff:81.2.69.1"))
                .unwrap()
                .unwrap()
                .city_name
                .as_deref(),
            Some("London")
        );
        assert_eq!(db.lookup(ip("1.1.1.1")).unwrap(), None);
        assert_eq!(db.lookup(ip("2a00::1")).unwrap(), None);
    }

    #[test]
    fn a_country_database_gives_the_country_and_no_city() {
        let db = GeoDb::open(&mmdb("test-Country.mmdb")).unwrap();
        assert_eq!(
            db.lookup(ip("20.38.108.5")).unwrap().as_deref(),
            Some(&geo("NL", "Netherlands", "Europe", None, None))
        );
    }

    #[test]
    fn an_ipv4_only_database_answers_nothing_for_ipv6_addresses() {
        let db = GeoDb::open(&mmdb("test-City-ipv4.mmdb")).unwrap();
        assert_eq!(db.lookup(ip("2001:4860:4860::8888")).unwrap(), None);
        assert_eq!(
            db.lookup(ip("81.2.69.142"))
                .unwrap()
                .and_then(|g| g.city_name.clone())
                .as_deref(),
            Some("London")
        );
    }

    #[test]
    fn an_asn_database_gives_the_number_and_organization() {
        let db = AsnDb::open(&mmdb("test-ASN.mmdb")).unwrap();
        assert_eq!(db.database_type(), "GeoLite2-ASN");
        let answer = |a: &str| {
            db.lookup(ip(a))
                .unwrap()
                .map(|a| (a.number, a.organization.clone()))
        };
        assert_eq!(
            answer("20.38.108.5"),
            Some((8075, Some("MICROSOFT-CORP-MSN-AS-BLOCK".into())))
        );
        assert_eq!(
            answer("2603:1020:0:1::5"),
            Some((8075, Some("MICROSOFT-CORP-MSN-AS-BLOCK".into())))
        );
        assert_eq!(answer("8.8.4.4"), None);
        assert_eq!(answer("8.8.8.8"), Some((15169, Some("GOOGLE".into()))));
        assert_eq!(answer("81.2.69.142"), Some((20712, None)));
        assert_eq!(answer("1.1.1.1"), None);
    }

    #[test]
    fn the_real_geolite2_city_of_2018_places_89_160_20_128_in_stockholm() {
        // Values read with the Python `maxminddb` reader (another implementation) from the
        // database maxminddb-geolite2 2018.703 ships.
        let db = GeoDb::open(&mmdb("GeoLite2-City.mmdb")).unwrap();
        assert_eq!(db.database_type(), "GeoLite2-City");
        assert_eq!(
            db.lookup(ip("89.160.20.128")).unwrap().as_deref(),
            Some(&geo(
                "SE",
                "Sweden",
                "Europe",
                Some("Stockholm"),
                Some((59.3333, 18.05))
            ))
        );
        assert_eq!(
            db.lookup(ip("8.8.8.8")).unwrap().as_deref(),
            Some(&geo(
                "US",
                "United States",
                "North America",
                None,
                Some((37.751, -97.822))
            ))
        );
        assert_eq!(db.lookup(ip("10.0.0.1")).unwrap(), None);
    }

    #[test]
    fn addresses_sharing_a_record_are_decoded_once() {
        let db = GeoDb::open(&mmdb("test-City.mmdb")).unwrap();
        let mut cache = RecordCache::default();
        let a = db.lookup_cached(ip("81.2.69.1"), &mut cache).unwrap();
        let b = db.lookup_cached(ip("81.2.69.200"), &mut cache).unwrap();
        let c = db.lookup_cached(ip("8.8.8.8"), &mut cache).unwrap();
        assert_eq!(cache.records(), 2);
        assert!(a.is_some() && c.is_some());
        assert!(Arc::ptr_eq(a.as_ref().unwrap(), b.as_ref().unwrap()));
    }

    #[test]
    fn a_malformed_or_wrong_database_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let city = std::fs::read(mmdb("test-City.mmdb")).unwrap();
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("empty.mmdb", Vec::new(), "not a MaxMind DB file"),
            (
                "text.mmdb",
                b"GeoLite2-City, honestly".to_vec(),
                "not a MaxMind DB file",
            ),
            // The metadata is at the end: a cut file has none.
            (
                "cut.mmdb",
                city[..city.len() / 2].to_vec(),
                "not a MaxMind DB file",
            ),
        ];
        for (name, bytes, fault) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            for err in [
                GeoDb::open(&path).unwrap_err().to_string(),
                AsnDb::open(&path).unwrap_err().to_string(),
            ] {
                assert!(
                    err.starts_with(&format!("MaxMind database {}: {fault}", path.display())),
                    "{name}: {err}"
                );
            }
        }
        let missing = dir.path().join("absent.mmdb");
        let err = GeoDb::open(&missing).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "MaxMind database {}: cannot read",
                missing.display()
            )),
            "{err}"
        );

        let asn = mmdb("test-ASN.mmdb");
        assert_eq!(
            GeoDb::open(&asn).unwrap_err().to_string(),
            format!(
                "MaxMind database {}: is a \"GeoLite2-ASN\" database: geoip_file needs a City or \
                 Country database (GeoLite2-City, GeoLite2-Country)",
                asn.display()
            )
        );
        let city_path = mmdb("test-City.mmdb");
        assert_eq!(
            AsnDb::open(&city_path).unwrap_err().to_string(),
            format!(
                "MaxMind database {}: is a \"GeoLite2-City\" database: asn_file needs an ASN \
                 database (GeoLite2-ASN)",
                city_path.display()
            )
        );
    }

    #[test]
    fn answers_cached_per_block_equal_the_databases_own_also_where_it_splits_a_block() {
        let db = GeoDb::open(&mmdb("GeoLite2-City.mmdb")).unwrap();
        let mut cache = RecordCache::default();
        let mut split_blocks = 0;
        // Every address of some /24s of busy ranges: the real database splits some of them
        // into smaller networks with other answers, which a block cache must not blur.
        for (a, b) in [
            (81, 2),
            (20, 106),
            (104, 16),
            (151, 101),
            (185, 199),
            (91, 189),
        ] {
            for c in (0..=255u8).step_by(17) {
                let mut networks = std::collections::BTreeSet::new();
                for d in 0..=255u8 {
                    let addr = IpAddr::from([a, b, c, d]);
                    let own = db.0.find(addr).unwrap().unwrap();
                    networks.insert(own.network().unwrap());
                    assert_eq!(
                        db.lookup_cached(addr, &mut cache).unwrap(),
                        db.lookup(addr).unwrap(),
                        "{addr}"
                    );
                }
                if networks.iter().any(|n| n.prefix() > 24) {
                    split_blocks += 1;
                }
            }
        }
        assert!(
            split_blocks > 0,
            "the sample holds no split block: it proves nothing"
        );
    }
}
