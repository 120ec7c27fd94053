//! Inputs for enrichment tests and benchmarks: a deterministic service tags file of realistic
//! size and shape, and the directory of the test MaxMind databases (written by
//! `scripts/lib/test-mmdb.sh`, never committed).
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use crate::generator::SplitMix64;

/// Shape of a generated service tags file.
#[derive(Debug, Clone, Copy)]
pub struct ServiceTagsShape {
    pub seed: u64,
    /// Azure regions (each gets `AzureCloud.<region>` and one tag per regional service).
    pub regions: usize,
    /// Services published per region (`<Service>.<Region>`) and globally (`<Service>`).
    pub services: usize,
    /// Prefixes of each `<Service>.<Region>` tag (its global tag repeats them all).
    pub prefixes_per_service_region: usize,
    /// Prefixes of each `AzureCloud.<region>` tag (`AzureCloud` repeats them all).
    pub cloud_prefixes_per_region: usize,
}

impl ServiceTagsShape {
    /// The size of Microsoft's public file, ~50,000 prefix entries (2 x 60 x 40 x 8 service
    /// entries + 2 x 60 x 100 AzureCloud entries = 50,400) in 2,501 tags (AzureCloud, 60
    /// `AzureCloud.<region>`, 40 services x (1 global + 60 regional)), every prefix listed by a
    /// global and a regional tag, services nested inside AzureCloud ranges, a third of them IPv6.
    pub const FULL: ServiceTagsShape = ServiceTagsShape {
        seed: 11,
        regions: 60,
        services: 40,
        prefixes_per_service_region: 8,
        cloud_prefixes_per_region: 100,
    };
}

/// The number of prefix entries (`addressPrefixes` items) a shape produces.
pub fn service_tags_entries(shape: &ServiceTagsShape) -> usize {
    2 * shape.regions
        * (shape.services * shape.prefixes_per_service_region + shape.cloud_prefixes_per_region)
}

/// A `ServiceTags_Public_YYYYMMDD.json` of the given shape: `changeNumber`, `cloud`, `values[]`
/// with `name`, `id` and `properties.{changeNumber, region, regionId, platform, systemService,
/// addressPrefixes, networkFeatures}` as Microsoft writes them. Addresses are drawn from a
/// seeded generator, so the same shape always gives the same bytes.
pub fn generate_service_tags(shape: &ServiceTagsShape) -> Vec<u8> {
    let mut rng = SplitMix64::new(shape.seed);
    let regions: Vec<String> = (0..shape.regions)
        .map(|i| format!("region{i:02}"))
        .collect();
    let services: Vec<String> = (0..shape.services)
        .map(|i| format!("Service{i:02}"))
        .collect();

    // Per region, AzureCloud blocks (/16 v4, /40 v6) and service prefixes inside them.
    let mut cloud: Vec<Vec<String>> = Vec::new();
    let mut service: Vec<Vec<Vec<String>>> = Vec::new();
    for _ in 0..shape.regions {
        let mut blocks = Vec::new();
        for _ in 0..shape.cloud_prefixes_per_region {
            let r = rng.next_u64();
            if r.is_multiple_of(3) {
                let hi = 0x2603_1000u32 | ((r >> 8) as u32 & 0xfff);
                let addr =
                    Ipv6Addr::from((u128::from(hi) << 96) | (u128::from((r >> 20) as u8) << 88));
                blocks.push(format!("{addr}/40"));
            } else {
                // 4.0.0.0 to 223.255.0.0, avoiding nothing in particular: a benchmark input.
                let a = 4 + (r >> 8) as u8 % 200;
                let b = (r >> 16) as u8;
                blocks.push(format!("{}/16", Ipv4Addr::new(a, b, 0, 0)));
            }
        }
        let mut per_service = Vec::new();
        for _ in 0..shape.services {
            let mut prefixes = Vec::new();
            for _ in 0..shape.prefixes_per_service_region {
                let r = rng.next_u64();
                // A shape without AzureCloud prefixes has nothing to nest services in.
                if let Some(block) = blocks.get((r % blocks.len().max(1) as u64) as usize) {
                    prefixes.push(inner_prefix(block, r >> 16));
                }
            }
            per_service.push(prefixes);
        }
        cloud.push(blocks);
        service.push(per_service);
    }

    let mut out = String::with_capacity(service_tags_entries(shape) * 32 + 1024);
    out.push_str("{\n  \"changeNumber\": 342,\n  \"cloud\": \"Public\",\n  \"values\": [");
    let mut first = true;
    let mut tag = |out: &mut String,
                   name: &str,
                   region: &str,
                   region_id: usize,
                   system: &str,
                   prefixes: &mut dyn Iterator<Item = &String>| {
        if !first {
            out.push(',');
        }
        first = false;
        let _ = write!(
            out,
            "\n    {{\n      \"name\": \"{name}\",\n      \"id\": \"{name}\",\n      \"properties\": {{\n        \"changeNumber\": 7,\n        \"region\": \"{region}\",\n        \"regionId\": {region_id},\n        \"platform\": \"Azure\",\n        \"systemService\": \"{system}\",\n        \"addressPrefixes\": ["
        );
        let mut sep = "";
        for p in prefixes {
            let _ = write!(out, "{sep}\n          \"{p}\"");
            sep = ",";
        }
        out.push_str("\n        ],\n        \"networkFeatures\": [\n          \"API\",\n          \"NSG\",\n          \"UDR\",\n          \"FW\"\n        ]\n      }\n    }");
    };
    tag(
        &mut out,
        "AzureCloud",
        "",
        0,
        "",
        &mut cloud.iter().flatten(),
    );
    for (i, region) in regions.iter().enumerate() {
        tag(
            &mut out,
            &format!("AzureCloud.{region}"),
            region,
            i + 1,
            "",
            &mut cloud[i].iter(),
        );
    }
    for (s, name) in services.iter().enumerate() {
        tag(
            &mut out,
            name,
            "",
            0,
            name,
            &mut service.iter().flat_map(|r| r[s].iter()),
        );
        for (i, region) in regions.iter().enumerate() {
            tag(
                &mut out,
                &format!("{name}.{region}"),
                region,
                i + 1,
                name,
                &mut service[i][s].iter(),
            );
        }
    }
    out.push_str("\n  ]\n}\n");
    out.into_bytes()
}

/// A /22 to /30 (IPv4) or /56 to /64 (IPv6) prefix inside `block`, from the random bits `r`.
fn inner_prefix(block: &str, r: u64) -> String {
    let Some((addr, _)) = block.split_once('/') else {
        return block.to_owned();
    };
    if let Ok(v4) = addr.parse::<Ipv4Addr>() {
        let len = 22 + (r % 9) as u32;
        let host = (r >> 8) as u32 & 0xffff;
        let mask = u32::MAX << (32 - len);
        let net = (u32::from(v4) | host) & mask;
        format!("{}/{len}", Ipv4Addr::from(net))
    } else if let Ok(v6) = addr.parse::<Ipv6Addr>() {
        let len = 56 + (r % 9) as u32;
        let bits = u128::from(v6) | (u128::from((r >> 8) as u32 & 0xffff) << 64);
        let mask = u128::MAX << (128 - len);
        format!("{}/{len}", Ipv6Addr::from(bits & mask))
    } else {
        block.to_owned()
    }
}

/// The directory holding `test-City.mmdb`, `test-Country.mmdb`, `test-City-ipv4.mmdb`,
/// `test-ASN.mmdb` and `GeoLite2-City.mmdb`: `FLOWLOGD_TEST_MMDB_DIR` (set by
/// `scripts/test.sh`), or else the output of running `scripts/lib/test-mmdb.sh` from the
/// source tree at `root` (which installs and writes them on first use).
pub fn test_mmdb_dir(root: &Path) -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("FLOWLOGD_TEST_MMDB_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let script = root.join("scripts/lib/test-mmdb.sh");
    let output = std::process::Command::new("bash")
        .arg(&script)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} failed ({}): {}",
            script.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("FLOWLOGD_TEST_MMDB_DIR="))
        .map(PathBuf::from)
        .ok_or_else(|| format!("{} printed no FLOWLOGD_TEST_MMDB_DIR", script.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrich::service_tags::ServiceTagTable;

    #[test]
    fn a_generated_file_has_the_requested_size_and_loads() {
        let small = ServiceTagsShape {
            seed: 3,
            regions: 3,
            services: 2,
            prefixes_per_service_region: 4,
            cloud_prefixes_per_region: 5,
        };
        let bytes = generate_service_tags(&small);
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let values = json["values"].as_array().unwrap();
        // AzureCloud + 3 regional, 2 services x (1 global + 3 regional).
        assert_eq!(values.len(), 1 + 3 + 2 * 4);
        let entries: usize = values
            .iter()
            .map(|v| v["properties"]["addressPrefixes"].as_array().unwrap().len())
            .sum();
        assert_eq!(entries, service_tags_entries(&small));
        assert_eq!(entries, 2 * 3 * (2 * 4 + 5));
        assert_eq!(values[1]["properties"]["region"], "region00");
        let table = ServiceTagTable::parse(&bytes).unwrap();
        assert_eq!(table.tags(), 12);
        assert_eq!(generate_service_tags(&small), bytes, "deterministic");
        assert_eq!(service_tags_entries(&ServiceTagsShape::FULL), 50_400);
    }
}
