//! Cost of the enrichment lookups and filters per address and per tuple: named networks, a
//! full-size service tags table (~50,000 prefix entries, generated), the real GeoLite2-City of
//! 2018 (maxminddb-geolite2) and the small test ASN database, uncached and through the
//! per-record cache the encoder will use.
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use flowlogd::config::enrich::{Cidr, EnrichConfig, FilterRuleConfig, NetworkConfig};
use flowlogd::enrich::geoip::GeoDb;
use flowlogd::enrich::service_tags::ServiceTagTable;
use flowlogd::enrich::testdata::{
    ServiceTagsShape, generate_service_tags, service_tags_entries, test_mmdb_dir,
};
use flowlogd::enrich::{Enricher, Filter, FlowContext};
use flowlogd::flowlog::{FlowLogKind, parse_tuple};
use flowlogd::generator::SplitMix64;

struct Inputs {
    _dir: tempfile::TempDir,
    tags_file: PathBuf,
    tags_json: Vec<u8>,
    mmdb: PathBuf,
    /// Public addresses: a third inside service tag prefixes, the rest anywhere.
    public: Vec<IpAddr>,
}

fn inputs() -> Inputs {
    let tags_json = generate_service_tags(&ServiceTagsShape::FULL);
    let dir = tempfile::tempdir().expect("temp dir");
    let tags_file = dir.path().join("ServiceTags_Public_bench.json");
    std::fs::write(&tags_file, &tags_json).expect("write tags");
    let mmdb = test_mmdb_dir(Path::new(env!("CARGO_MANIFEST_DIR"))).expect("test databases");

    let json: serde_json::Value = serde_json::from_slice(&tags_json).expect("generated json");
    let mut prefixes: Vec<IpAddr> = Vec::new();
    for v in json["values"].as_array().into_iter().flatten() {
        for p in v["properties"]["addressPrefixes"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let Some(Ok(a)) = p.as_str().and_then(|p| p.split('/').next()).map(str::parse) {
                prefixes.push(a);
            }
        }
    }
    let mut rng = SplitMix64::new(7);
    let public = (0..1024)
        .map(|i| {
            let r = rng.next_u64();
            if i % 3 == 0 {
                prefixes[(r % prefixes.len() as u64) as usize]
            } else {
                IpAddr::V4(Ipv4Addr::new(
                    1 + (r % 222) as u8,
                    (r >> 8) as u8,
                    (r >> 16) as u8,
                    (r >> 24) as u8,
                ))
            }
        })
        .collect();
    Inputs {
        _dir: dir,
        tags_file,
        tags_json,
        mmdb,
        public,
    }
}

fn networks() -> Vec<NetworkConfig> {
    // 64 named networks of 4 prefixes each: a hub, spokes, on-premises sites.
    (0..64u8)
        .map(|i| NetworkConfig {
            name: format!("net{i}"),
            cidrs: (0..4u8)
                .map(|j| Cidr::parse(&format!("10.{i}.{}.0/24", j * 16)).expect("prefix"))
                .collect(),
        })
        .collect()
}

fn lookups(c: &mut Criterion) {
    let inputs = inputs();
    assert!(service_tags_entries(&ServiceTagsShape::FULL) >= 50_000);

    let mut group = c.benchmark_group("enrich_load");
    group.sample_size(10);
    group.bench_function("service_tags_parse_full", |b| {
        b.iter(|| ServiceTagTable::parse(&inputs.tags_json).expect("parse"))
    });
    group.bench_function("geolite2_city_open", |b| {
        b.iter(|| GeoDb::open(&inputs.mmdb.join("GeoLite2-City.mmdb")).expect("open"))
    });
    group.finish();

    let tags = ServiceTagTable::load(&inputs.tags_file).expect("tags");
    let city = GeoDb::open(&inputs.mmdb.join("GeoLite2-City.mmdb")).expect("city");
    let n = inputs.public.len() as u64;
    let mut group = c.benchmark_group("enrich_lookup_uncached");
    group.throughput(Throughput::Elements(n));
    group.bench_function(BenchmarkId::new("service_tags", tags.prefixes()), |b| {
        b.iter(|| {
            inputs
                .public
                .iter()
                .filter(|a| tags.lookup(**a).is_some())
                .count()
        })
    });
    group.bench_function("geolite2_city", |b| {
        b.iter(|| {
            inputs
                .public
                .iter()
                .filter(|a| matches!(city.lookup(**a), Ok(Some(_))))
                .count()
        })
    });
    let all = std::sync::Arc::new(
        Enricher::from_config(
            &EnrichConfig {
                service_tags_file: Some(inputs.tags_file.clone()),
                geoip_file: Some(inputs.mmdb.join("GeoLite2-City.mmdb")),
                asn_file: Some(inputs.mmdb.join("test-ASN.mmdb")),
                ..EnrichConfig::default()
            },
            &networks(),
        )
        .expect("enricher"),
    );
    // Every address a miss: the cost of a side seen for the first time.
    group.bench_function("side_all_lookups", |b| {
        let mut l = all.lookups();
        b.iter(|| {
            let mut found = 0;
            for a in &inputs.public {
                l.clear();
                found += usize::from(!l.side(*a).is_empty());
            }
            found
        })
    });
    group.finish();

    // A record as a busy NIC writes it: 200 tuples between 10.0.0.4 and 20 peers (public
    // and private), both sides enriched through the per-record cache.
    let peers: Vec<IpAddr> = inputs.public[..16]
        .iter()
        .copied()
        .chain((1..=4).map(|i| IpAddr::V4(Ipv4Addr::new(10, 1, 16, i))))
        .collect();
    let local = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 4));
    let mut group = c.benchmark_group("enrich_record");
    group.throughput(Throughput::Elements(200));
    // Cold: the record's peers were never seen (the first record of a NIC, or a reload).
    // Warm: the same NIC's next record, its peers answered by the cache kept across records.
    for (name, cold) in [("cold", true), ("warm", false)] {
        group.bench_function(format!("200_tuples_20_peers_all_lookups_{name}"), |b| {
            let mut l = all.lookups();
            b.iter(|| {
                l.start_record();
                if cold {
                    l.clear();
                }
                let mut found = 0;
                for i in 0..200 {
                    let (s, d) = l.pair(local, peers[i % peers.len()]);
                    found += usize::from(!s.is_empty()) + usize::from(!d.is_empty());
                }
                found
            })
        });
    }
    group.finish();

    // Filters: five rules, the tuple matching none (the most work).
    let rules: Vec<FilterRuleConfig> = toml::from_str::<toml::Table>(
        r#"
        [[filter]]
        name = "platform-in"
        action = "drop"
        source_cidr = ["168.63.129.16"]
        [[filter]]
        name = "platform-out"
        action = "drop"
        destination_cidr = ["168.63.129.16"]
        [[filter]]
        name = "east-west"
        action = "drop"
        source_network = ["net1"]
        destination_network = ["net1"]
        [[filter]]
        name = "dns"
        action = "drop"
        protocol = ["udp"]
        destination_port = [53]
        [[filter]]
        name = "probes"
        action = "drop"
        nsg_rule = ["AllowAzureLoadBalancerInBound"]
        "#,
    )
    .ok()
    .and_then(|t| t.get("filter").cloned())
    .and_then(|v| v.try_into().ok())
    .expect("rules");
    let filter = Filter::from_config(&rules, &networks()).expect("filter");
    let tuple = parse_tuple(
        FlowLogKind::Vnet,
        "1663146003599,10.0.0.6,52.239.184.180,23956,443,6,O,B,X,,,,",
    )
    .expect("tuple");
    let cx = FlowContext {
        nsg_rule: Some("DefaultRule_AllowInternetOutBound"),
        ..FlowContext::default()
    };
    let mut group = c.benchmark_group("filter");
    group.throughput(Throughput::Elements(1));
    group.bench_function("five_rules_no_match", |b| {
        b.iter(|| filter.decide(&tuple, &cx))
    });
    group.finish();
}

criterion_group!(benches, lookups);
criterion_main!(benches);
