//! Azure service tags: Microsoft's `ServiceTags_Public_YYYYMMDD.json` read into one
//! longest-prefix table that names the Azure service and region of an address.
//!
//! The file (`{"values": [{"name": "AzureStorage.WestEurope", "properties": {"region":
//! "westeurope", "systemService": "AzureStorage", "addressPrefixes": [...]}}, ...]}`) lists
//! the same prefix under several tags: a global one (`AzureStorage`, `AzureCloud`) and a
//! regional one (`AzureStorage.WestEurope`, `AzureCloud.westeurope`), and services inside
//! wider `AzureCloud` ranges.
//!
//! Rule: the most specific prefix holding the address decides. Among tags listing that very
//! prefix, a regional tag (non-empty `region`) beats a global one, then a tag with a
//! `systemService` beats one without (`AzureStorage.WestEurope` over `AzureCloud.westeurope`),
//! then the alphabetically first tag name, so the answer never depends on the file's order.
//! The service is `systemService`, or the tag name before its first `.` when that is empty
//! (`AzureCloud`); the region is `region`, absent for global tags.
use std::cmp::Ordering;
use std::path::Path;
use std::sync::Arc;

use ipnet::IpNet;
use serde::Deserialize;

use super::EnrichError;
use super::prefix_table::PrefixTable;

/// Largest service tags file read: the real one is ~4 MB; anything far larger is another file.
const MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// The service tag an address belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceTag {
    /// The tag's name, e.g. `AzureStorage.WestEurope`.
    pub name: Box<str>,
    /// The Azure service, e.g. `AzureStorage` (`AzureCloud` for Azure ranges of no one service).
    pub service: Box<str>,
    /// The Azure region as the file writes it (`westeurope`); `None` for global tags.
    pub region: Option<Box<str>>,
}

/// Every prefix of a service tags file, with its winning tag.
#[derive(Debug, Default)]
pub struct ServiceTagTable {
    table: PrefixTable<TagEntry>,
    tags: usize,
}

/// A tag and whether its service came from `systemService` (precedence needs to know).
#[derive(Debug, Clone, PartialEq, Eq)]
struct TagEntry {
    tag: Arc<ServiceTag>,
    system_service: bool,
}

impl TagEntry {
    fn wins_over(&self, other: &TagEntry) -> bool {
        let key = |e: &TagEntry| (e.tag.region.is_some(), e.system_service);
        match key(self).cmp(&key(other)) {
            Ordering::Equal => self.tag.name < other.tag.name,
            o => o == Ordering::Greater,
        }
    }
}

#[derive(Deserialize)]
struct File {
    values: Vec<Value>,
}

#[derive(Deserialize)]
struct Value {
    name: String,
    properties: Properties,
}

#[derive(Deserialize)]
struct Properties {
    #[serde(default)]
    region: String,
    #[serde(default, rename = "systemService")]
    system_service: String,
    #[serde(rename = "addressPrefixes")]
    address_prefixes: Vec<String>,
}

impl ServiceTagTable {
    /// Reads and indexes the file at `path`; every error names the file and what is wrong.
    pub fn load(path: &Path) -> Result<ServiceTagTable, EnrichError> {
        let err = |reason: String| EnrichError::ServiceTags {
            path: path.to_owned(),
            reason,
        };
        let len = std::fs::metadata(path)
            .map_err(|e| err(format!("cannot read: {e}")))?
            .len();
        if len > MAX_FILE_BYTES {
            return Err(err(format!(
                "{len} bytes is larger than {} MiB: not a service tags file",
                MAX_FILE_BYTES >> 20
            )));
        }
        let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read: {e}")))?;
        Self::parse(&bytes).map_err(err)
    }

    /// Indexes the bytes of a service tags file; the error says what is wrong and where.
    pub fn parse(bytes: &[u8]) -> Result<ServiceTagTable, String> {
        let file: File = serde_json::from_slice(bytes).map_err(|e| {
            format!(
                "not a service tags file (expected {{\"values\": [{{\"name\": …, \"properties\": \
                 {{\"region\", \"systemService\", \"addressPrefixes\"}}}}]}}): {e}"
            )
        })?;
        if file.values.is_empty() {
            return Err("holds no service tags (`values` is empty)".to_owned());
        }
        let mut table = ServiceTagTable {
            table: PrefixTable::new(),
            tags: file.values.len(),
        };
        for value in file.values {
            let Properties {
                region,
                system_service,
                address_prefixes,
            } = value.properties;
            let system = !system_service.is_empty();
            let service = if system {
                system_service
            } else {
                value.name.split('.').next().unwrap_or_default().to_owned()
            };
            let entry = TagEntry {
                tag: Arc::new(ServiceTag {
                    name: value.name.into(),
                    service: service.into(),
                    region: (!region.is_empty()).then(|| region.into()),
                }),
                system_service: system,
            };
            for text in &address_prefixes {
                let prefix: IpNet = text.parse().map_err(|_| {
                    format!(
                        "tag {:?}: {text:?} is not an address prefix (expected e.g. \
                         \"20.38.108.0/23\" or \"2603:1020::/47\")",
                        entry.tag.name
                    )
                })?;
                match table.table.get_mut(prefix) {
                    Some(current) => {
                        if entry.wins_over(current) {
                            *current = entry.clone();
                        }
                    }
                    None => {
                        table.table.insert(prefix, entry.clone());
                    }
                }
            }
        }
        Ok(table)
    }

    /// The tag of the most specific prefix holding `addr`, with that prefix.
    pub fn lookup(&self, addr: std::net::IpAddr) -> Option<(IpNet, &Arc<ServiceTag>)> {
        self.table
            .longest_match(addr)
            .map(|(prefix, entry)| (prefix, &entry.tag))
    }

    /// Number of distinct prefixes.
    pub fn prefixes(&self) -> usize {
        self.table.len()
    }

    /// Number of tags in the file.
    pub fn tags(&self) -> usize {
        self.tags
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn small_file() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ServiceTags_Public_small.json")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    /// (tag name, service, region, prefix) of the answer for `addr`.
    fn answer(t: &ServiceTagTable, addr: &str) -> Option<(String, String, Option<String>, String)> {
        t.lookup(ip(addr)).map(|(prefix, tag)| {
            (
                tag.name.to_string(),
                tag.service.to_string(),
                tag.region.as_deref().map(str::to_owned),
                prefix.to_string(),
            )
        })
    }

    fn some(
        name: &str,
        service: &str,
        region: Option<&str>,
        prefix: &str,
    ) -> Option<(String, String, Option<String>, String)> {
        Some((
            name.into(),
            service.into(),
            region.map(Into::into),
            prefix.into(),
        ))
    }

    // Expected answers worked out by hand from tests/data/ServiceTags_Public_small.json.
    fn check_small_file_answers(t: &ServiceTagTable) {
        // 20.38.108.0/23 is in AzureStorage and AzureStorage.WestEurope; it is more specific
        // than AzureCloud's 20.38.0.0/16, and the regional tag wins the tie.
        assert_eq!(
            answer(t, "20.38.108.77"),
            some(
                "AzureStorage.WestEurope",
                "AzureStorage",
                Some("westeurope"),
                "20.38.108.0/23"
            )
        );
        // Only the /16s hold 20.38.5.5: AzureCloud (global) and AzureCloud.westeurope.
        assert_eq!(
            answer(t, "20.38.5.5"),
            some(
                "AzureCloud.westeurope",
                "AzureCloud",
                Some("westeurope"),
                "20.38.0.0/16"
            )
        );
        // 20.50.1.0/24 is listed only by the global AzureStorage tag: no region.
        assert_eq!(
            answer(t, "20.50.1.5"),
            some("AzureStorage", "AzureStorage", None, "20.50.1.0/24")
        );
        // 20.50.0.0/16: AzureCloud, AzureTrafficManager (global, with a service) and
        // AzureCloud.northeurope (regional): the regional tag wins.
        assert_eq!(
            answer(t, "20.50.9.9"),
            some(
                "AzureCloud.northeurope",
                "AzureCloud",
                Some("northeurope"),
                "20.50.0.0/16"
            )
        );
        // Two regional tags with a service list 20.38.160.0/24: the alphabetically first wins.
        assert_eq!(
            answer(t, "20.38.160.10"),
            some(
                "ActionGroup.WestEurope",
                "ActionGroup",
                Some("westeurope"),
                "20.38.160.0/24"
            )
        );
        assert_eq!(
            answer(t, "13.107.246.40"),
            some(
                "AzureFrontDoor.Frontend",
                "AzureFrontDoor",
                None,
                "13.107.246.0/24"
            )
        );
        assert_eq!(
            answer(t, "2603:1020:0:1::5"),
            some(
                "AzureStorage.WestEurope",
                "AzureStorage",
                Some("westeurope"),
                "2603:1020:0:1::/64"
            )
        );
        assert_eq!(
            answer(t, "2603:1020:0:2::5"),
            some(
                "AzureCloud.westeurope",
                "AzureCloud",
                Some("westeurope"),
                "2603:1020::/47"
            )
        );
        assert_eq!(
            answer(t, "2620:1ec:bdf::1"),
            some(
                "AzureFrontDoor.Frontend",
                "AzureFrontDoor",
                None,
                "2620:1ec:bdf::/48"
            )
        );
        assert_eq!(answer(t, "8.8.8.8"), None);
        assert_eq!(answer(t, "2603:1030::1"), None);
    }

    #[test]
    fn the_most_specific_prefix_decides_and_a_regional_tag_wins_on_equal_prefixes() {
        let t = ServiceTagTable::load(&small_file()).unwrap();
        assert_eq!(t.tags(), 9);
        // 20.38.160.0/24, 20.38.0.0/16, 20.50.0.0/16, 20.50.1.0/24, 20.38.108.0/23,
        // 13.107.246.0/24, 2603:1020::/47, 2603:1020:0:1::/64, 2620:1ec:bdf::/48.
        assert_eq!(t.prefixes(), 9);
        check_small_file_answers(&t);
    }

    #[test]
    fn the_answer_does_not_depend_on_the_order_of_the_file() {
        let mut json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(small_file()).unwrap()).unwrap();
        json["values"].as_array_mut().unwrap().reverse();
        let t = ServiceTagTable::parse(&serde_json::to_vec(&json).unwrap()).unwrap();
        check_small_file_answers(&t);
    }

    #[test]
    fn a_malformed_file_is_an_error_naming_the_file_and_the_fault() {
        let dir = tempfile::tempdir().unwrap();
        let cases: &[(&str, &str)] = &[
            ("{\"values\": [", "not a service tags file"),
            ("[]", "not a service tags file"),
            ("{\"changeNumber\": 1}", "missing field `values`"),
            ("{\"values\": []}", "holds no service tags"),
            (
                r#"{"values": [{"name": "AzureCloud", "properties": {"region": ""}}]}"#,
                "missing field `addressPrefixes`",
            ),
            (
                r#"{"values": [{"name": "AzureStorage.WestEurope", "properties": {"region": "westeurope", "systemService": "AzureStorage", "addressPrefixes": ["20.38.108.0/33"]}}]}"#,
                "tag \"AzureStorage.WestEurope\": \"20.38.108.0/33\" is not an address prefix",
            ),
        ];
        for (i, (text, fault)) in cases.iter().enumerate() {
            let path = dir.path().join(format!("ServiceTags_{i}.json"));
            std::fs::write(&path, text).unwrap();
            let err = ServiceTagTable::load(&path).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("service tags file {}: ", path.display())),
                "{err}"
            );
            assert!(err.contains(fault), "{text}: {err}");
        }
        let missing = dir.path().join("absent.json");
        let err = ServiceTagTable::load(&missing).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "service tags file {}: cannot read",
                missing.display()
            )),
            "{err}"
        );
    }
}
