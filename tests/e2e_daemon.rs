//! End to end: blobs in Azurite → the real `flowlogd` binary (`once`, `run`, `check`) → a real
//! search engine: the single-node OpenSearch the tests of a run share (or the cluster of
//! `ELASTICSEARCH_URL` when set, see `Es::engine`), each test under its own index prefix, whose
//! indices and templates it deletes at the end. Exceptions, each saying why: the outage test
//! starts a node of its own (it stops it, which the shared node must never be); faults a real
//! server does not produce on demand (429 storms, 5xx, dropped connections) come from a proxy in
//! front of the shared node; one regression test needs a sink that answers at once and stores
//! nothing. The invariants of `../shared/docs/design.md` each have a test here (numbers in the
//! comments); invariant 6 (bounded memory) is measured by `scripts/bench-e2e.sh`, see
//! docs/PERFORMANCE.md.
//!
//! Sizes: a few hundred to a few thousand documents per test. The node indexes far faster than
//! that, but most tests run `flowlogd` several times or wait for a daemon's polls, and the whole
//! `cargo test` shares 2 cores; each test stays well under a minute or two.
mod common;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::flowlogd::{
    Daemon, Doc, Es, GrowingBlob, NSG_CONTAINER, SourceSpec, TestConfig, VNET_CONTAINER, container,
    current_hour, describe, distinct_contents, flowlogd, flowlogd_for, once, partition,
    vnet_blob_name, vnet_config, vnet_record, vnet_tuple, wait_until,
};
use common::proxies::{fault_proxy, storage_proxy};
use common::rng::Rng;
use common::sas::{enc, service_sas};
use common::{Azurite, OpenSearch};
use elasticsearch::http::Method;
use flowlogd::generator::GenKind;
use serde_json::{Value, json};

async fn upload_generated_mix(azurite: &Azurite) -> (u64, u64) {
    let (_, vnet) = container(azurite, VNET_CONTAINER).await;
    let (_, nsg) = container(azurite, NSG_CONTAINER).await;
    let mut tuples = 0;
    let mut bytes = 0;
    let blobs = [
        (GenKind::Vnet, 11, "vnet-hub-flowlog", 12, 20),
        (GenKind::Vnet, 12, "vnet-hub-flowlog", 12, 20),
        (GenKind::Vnet, 13, "vnet-hub-flowlog", 6, 25),
        (GenKind::Nsg2, 21, "nsg-app", 12, 15),
        (GenKind::Nsg2, 22, "nsg-app", 12, 15),
        (GenKind::Nsg1, 31, "nsg-legacy", 10, 12),
        (GenKind::Nsg1, 32, "nsg-legacy", 10, 12),
    ];
    for (kind, seed, name, records, per_record) in blobs {
        let mut blob = GrowingBlob::new(kind, seed, name, records, per_record);
        let writer = if kind == GenKind::Vnet { &vnet } else { &nsg };
        let (t, b) = blob.append(writer, records).await;
        tuples += t;
        bytes += b;
    }
    (tuples, bytes)
}

/// A VNet source (account key) and an NSG source (connection string) writing to `es`.
fn vnet_and_nsg_config(azurite: &Azurite, es: &Es) -> TestConfig {
    vnet_and_nsg_config_via(&es.url, azurite, es)
}

/// [`vnet_and_nsg_config`] with the engine reached at `url` (a proxy in front of `es`).
fn vnet_and_nsg_config_via(url: &str, azurite: &Azurite, es: &Es) -> TestConfig {
    let connection_string = format!(
        "DefaultEndpointsProtocol=http;AccountName={};AccountKey={};BlobEndpoint={}",
        Azurite::ACCOUNT,
        Azurite::ACCOUNT_KEY,
        azurite.blob_endpoint()
    );
    TestConfig::new(
        url,
        vec![
            SourceSpec::azurite("vnet", VNET_CONTAINER, azurite, &es.pattern("vnet")),
            SourceSpec::azurite("nsg", NSG_CONTAINER, azurite, &es.pattern("nsg")).auth(&format!(
                "method = \"connection_string\"\nconnection_string = \"{connection_string}\""
            )),
        ],
    )
    .es(&es.config_lines)
}

async fn generated_data_exactly_once(azurite: &Azurite, es: &Es, tuples: u64, bytes: u64) {
    let config = vnet_and_nsg_config(azurite, es);
    let s = once(&config).await;
    assert_eq!(s.documents_indexed, tuples, "{s:?}");
    assert_eq!(
        (s.documents_existing, s.documents_dead_lettered, s.errors),
        (0, 0, 0),
        "{s:?}"
    );
    assert_eq!((s.blobs_listed, s.blobs_read), (7, 7), "{s:?}");
    assert_eq!(s.records, 12 + 12 + 6 + 12 + 12 + 10 + 10, "{s:?}");
    assert_eq!((s.bytes_new, s.bytes_downloaded), (bytes, bytes), "{s:?}");
    let docs = es
        .assert_exactly_once(&es.all(), tuples, "generated data")
        .await;
    assert_eq!(
        distinct_contents(&docs) as u64,
        tuples,
        "a tuple indexed under two ids"
    );
    let kinds: HashMap<String, usize> = docs.iter().fold(HashMap::new(), |mut m, d| {
        let kind = format!(
            "{} v{}",
            d.source["azure"]["flowlog"]["kind"].as_str().unwrap_or("?"),
            d.source["azure"]["flowlog"]["version"]
        );
        *m.entry(kind).or_default() += 1;
        m
    });
    let expected: HashMap<String, usize> = [
        ("vnet v4".to_owned(), 12 * 20 + 12 * 20 + 6 * 25),
        ("nsg v2".to_owned(), 2 * 12 * 15),
        ("nsg v1".to_owned(), 2 * 10 * 12),
    ]
    .into();
    assert_eq!(kinds, expected);
    assert!(config.dead_letters().is_empty());
    // Caught up: a second pass lists, reads nothing and sends nothing.
    let again = once(&config).await;
    assert_eq!(
        (
            again.blobs_read,
            again.bytes_downloaded,
            again.documents_indexed,
            again.documents_existing
        ),
        (0, 0, 0, 0),
        "{again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_generated_vnet_nsg_v2_and_nsg_v1_tuple_is_indexed_exactly_once() {
    let azurite = Azurite::start().expect("azurite");
    let es = Es::engine("every_generated_tuple_exactly_once");
    let (tuples, bytes) = upload_generated_mix(&azurite).await;
    assert_eq!(tuples, 2 * 240 + 150 + 360 + 240);
    generated_data_exactly_once(&azurite, &es, tuples, bytes).await;
    es.cleanup().await;
}

/// One shared sample and the blob it becomes.
struct FixtureBlob {
    file: &'static str,
    container: &'static str,
    name: String,
    bytes: Vec<u8>,
    tuples: u64,
}

/// Tuples of a PT1H.json counted straight from its JSON (NSG: `properties.flows[].flows[]`,
/// VNet: `flowRecords.flows[].flowGroups[]`).
fn count_tuples(whole: &Value) -> u64 {
    let mut n = 0;
    for r in whole["records"].as_array().expect("records") {
        let groups: Vec<&Value> = if let Some(flows) = r["properties"]["flows"].as_array() {
            flows
                .iter()
                .flat_map(|f| f["flows"].as_array().unwrap().iter())
                .collect()
        } else {
            r["flowRecords"]["flows"]
                .as_array()
                .expect("flowRecords.flows")
                .iter()
                .flat_map(|f| f["flowGroups"].as_array().unwrap().iter())
                .collect()
        };
        n += groups
            .iter()
            .map(|g| g["flowTuples"].as_array().unwrap().len() as u64)
            .sum::<u64>();
    }
    n
}

/// The name Azure gives the blob of the sample's first record, in hour `hour`:
/// `resourceId=/SUBSCRIPTIONS/…/NETWORKSECURITYGROUPS/NSG/y=…/macAddress=MAC/PT1H.json` (NSG) or
/// `flowLogResourceID=/SUB_RG/WATCHER_FLOWLOG/y=…/macAddress=MAC/PT1H.json` (VNet).
fn azure_blob_name(whole: &Value, hour: i64) -> (&'static str, String) {
    let r = &whole["records"][0];
    let part = partition(hour);
    if let Some(resource) = r["resourceId"].as_str() {
        let mac = r["macAddress"]
            .as_str()
            .or(r["properties"]["flows"][0]["flows"][0]["mac"].as_str())
            .expect("mac");
        (
            NSG_CONTAINER,
            format!(
                "resourceId={}/{part}/macAddress={mac}/PT1H.json",
                resource.to_uppercase()
            ),
        )
    } else {
        // /SUBSCRIPTIONS/{sub}/RESOURCEGROUPS/{rg}/PROVIDERS/MICROSOFT.NETWORK/NETWORKWATCHERS/{nw}/FLOWLOGS/{fl}
        let id = r["flowLogResourceID"]
            .as_str()
            .expect("flowLogResourceID")
            .to_uppercase();
        let p: Vec<&str> = id.split('/').collect();
        let mac = r["macAddress"].as_str().expect("macAddress");
        (
            VNET_CONTAINER,
            format!(
                "flowLogResourceID=/{}_{}/{}_{}/{part}/macAddress={mac}/PT1H.json",
                p[2], p[4], p[8], p[10]
            ),
        )
    }
}

/// Every sample of `../shared/fixtures/` that holds flow-log records: the PT1H.json files as
/// they are, and Elastic's one-record-per-line files wrapped into the PT1H.json envelope. Each
/// goes into its own hour (the current one and the hours before it, inside the default 24 h
/// window), so two samples of the same NIC never share a blob name.
fn fixture_blobs() -> Vec<FixtureBlob> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures");
    let files = [
        "msdocs/nsg_v1_PT1H.json",
        "msdocs/nsg_v2_PT1H.json",
        "msdocs/vnet_v4_PT1H.json",
        "elastic/nsg-PT1H.json",
        "elastic/vnet-PT1H.json",
        "elastic/nsg-records.ndjson",
        "elastic/vnet-records.ndjson",
    ];
    let hour = current_hour();
    files
        .iter()
        .enumerate()
        .map(|(i, file)| {
            let raw = std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
            let bytes = if file.ends_with(".ndjson") {
                let text = String::from_utf8(raw).unwrap();
                let records: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
                format!("{{\"records\":[{}]}}", records.join(",")).into_bytes()
            } else {
                raw
            };
            let whole: Value =
                serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{file}: {e}"));
            let (container, name) = azure_blob_name(&whole, hour - i as i64 * 3600);
            FixtureBlob {
                file,
                container,
                name,
                tuples: count_tuples(&whole),
                bytes,
            }
        })
        .collect()
}

async fn fixtures_exactly_once(azurite: &Azurite, es: &Es, fixtures: &[FixtureBlob]) {
    let config = vnet_and_nsg_config(azurite, es);
    let total: u64 = fixtures.iter().map(|f| f.tuples).sum();
    let s = once(&config).await;
    assert_eq!(s.documents_indexed, total, "{s:?}");
    assert_eq!(
        (s.documents_existing, s.documents_dead_lettered, s.errors),
        (0, 0, 0),
        "{s:?}"
    );
    assert_eq!(s.blobs_read, fixtures.len() as u64, "{s:?}");
    let docs = es
        .assert_exactly_once(&es.all(), total, "shared fixtures")
        .await;
    for f in fixtures {
        let path = format!("{}/{}", f.container, f.name);
        let id = flowlogd::config::document::BlobNames::new(f.container, &f.name).id;
        let n = docs
            .iter()
            .filter(|d| d.source["azure"]["flowlog"]["blob_id"] == id.as_str())
            .count();
        assert_eq!(n as u64, f.tuples, "{}: documents from {path}", f.file);
    }
    assert!(
        config.dead_letters().is_empty(),
        "{:?}",
        config.dead_letters()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shared_fixture_uploaded_under_its_azure_blob_name_is_indexed_exactly_once() {
    let fixtures = fixture_blobs();
    // Counted by hand in the samples (see ../shared/fixtures/README.md).
    let by_file: HashMap<&str, u64> = fixtures.iter().map(|f| (f.file, f.tuples)).collect();
    assert_eq!(by_file["msdocs/nsg_v1_PT1H.json"], 12);
    assert_eq!(by_file["msdocs/nsg_v2_PT1H.json"], 11);
    assert_eq!(by_file["msdocs/vnet_v4_PT1H.json"], 19);
    let names: HashSet<&str> = fixtures.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names.len(), fixtures.len(), "blob names must differ");

    let azurite = Azurite::start().expect("azurite");
    let es = Es::engine("every_shared_fixture_exactly_once");
    for f in &fixtures {
        let (_, writer) = container(&azurite, f.container).await;
        writer
            .put_blob(&f.name, Bytes::from(f.bytes.clone()))
            .await
            .expect("upload fixture");
    }
    fixtures_exactly_once(&azurite, &es, &fixtures).await;
    es.cleanup().await;
}

// ---------------------------------------------------------------------------------------------
// Growth.

async fn growth_rounds(azurite: &Azurite, es: &Es, seed: u64) {
    let (_, vnet) = container(azurite, VNET_CONTAINER).await;
    let (_, nsg) = container(azurite, NSG_CONTAINER).await;
    let config = vnet_and_nsg_config(azurite, es);
    let mut a = GrowingBlob::new(GenKind::Vnet, seed, "vnet-growth", 30, 10);
    let mut b = GrowingBlob::new(GenKind::Vnet, seed + 1, "vnet-growth", 30, 10);
    let mut c = GrowingBlob::new(GenKind::Nsg2, seed + 2, "nsg-growth", 30, 10);
    let mut d = GrowingBlob::new(GenKind::Vnet, seed + 3, "vnet-growth", 30, 10);

    // Round 0: three blobs appear.
    let mut total = 0;
    let mut appended = 0;
    for (blob, w) in [(&mut a, &vnet), (&mut b, &vnet), (&mut c, &nsg)] {
        let (t, bytes) = blob.append(w, 5).await;
        total += t;
        appended += bytes;
    }
    let s = once(&config).await;
    assert_eq!(
        (s.documents_indexed, s.bytes_downloaded),
        (total, appended),
        "round 0: {s:?}"
    );
    assert_eq!(es.count(&es.all()).await, total);

    // Round 1: two blobs grow (records inserted before their `]}` tail), one stays, a new NIC
    // appears. Only the appended records arrive; each grown blob costs its new bytes plus its
    // two tail bytes `]}`, read again because the offset stops at the end of the last record.
    let (t1, b1) = a.append(&vnet, 3).await;
    let (t2, b2) = c.append(&nsg, 1).await;
    let (t3, b3) = d.append(&vnet, 4).await;
    total += t1 + t2 + t3;
    let s = once(&config).await;
    assert_eq!(s.documents_indexed, t1 + t2 + t3, "round 1: {s:?}");
    assert_eq!(
        s.documents_existing, 0,
        "round 1 re-sent old documents: {s:?}"
    );
    assert_eq!(s.bytes_downloaded, b1 + b2 + b3 + 2 * 2, "round 1: {s:?}");
    assert_eq!((s.blobs_read, s.records), (3, 3 + 1 + 4), "round 1: {s:?}");
    assert_eq!(es.count(&es.all()).await, total);

    // Round 2: every blob grows by one record.
    let mut new = 0;
    let mut bytes = 0;
    for (blob, w) in [
        (&mut a, &vnet),
        (&mut b, &vnet),
        (&mut c, &nsg),
        (&mut d, &vnet),
    ] {
        let (t, n) = blob.append(w, 1).await;
        new += t;
        bytes += n;
    }
    total += new;
    let s = once(&config).await;
    assert_eq!(
        (s.documents_indexed, s.documents_existing),
        (new, 0),
        "round 2: {s:?}"
    );
    assert_eq!(s.bytes_downloaded, bytes + 4 * 2, "round 2: {s:?}");

    // Round 3: nothing new: nothing read.
    let s = once(&config).await;
    assert_eq!(
        (s.blobs_read, s.bytes_downloaded, s.documents_indexed),
        (0, 0, 0),
        "round 3: {s:?}"
    );
    let docs = es.assert_exactly_once(&es.all(), total, "growth").await;
    assert_eq!(distinct_contents(&docs) as u64, total);
    assert!(config.dead_letters().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appended_blocks_bring_exactly_their_new_tuples_for_about_their_bytes() {
    let azurite = Azurite::start().expect("azurite");
    let es = Es::engine("appended_blocks_bring_their_new_tuples");
    growth_rounds(&azurite, &es, 500).await;
    es.cleanup().await;
}

// Invariant 3: bytes before a blob's tail never change; if they do (a blob deleted and written
// again shorter), that is detected, logged, and the blob is read again from 0 under the same
// document ids, so nothing is duplicated. This is the `on_rewrite = "reread"` policy, which
// keeps the old content's documents (the default, "replace", is tested below).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_rewritten_shorter_is_detected_and_read_again_without_duplicates() {
    let azurite = Azurite::start().expect("azurite");
    let es = Es::engine("a_blob_rewritten_shorter");
    let (_, vnet) = container(&azurite, VNET_CONTAINER).await;
    let config = TestConfig::new(
        &es.url,
        vec![
            SourceSpec::azurite("vnet", VNET_CONTAINER, &azurite, &es.pattern("vnet"))
                .extra("on_rewrite = \"reread\""),
        ],
    )
    .es(&es.config_lines);
    let mut blob = GrowingBlob::new(GenKind::Vnet, 77, "vnet-rewrite", 10, 10);
    blob.append(&vnet, 6).await;
    assert_eq!(once(&config).await.documents_indexed, 60);

    // The same first three records, written again as a new, shorter blob.
    vnet.delete_blob(blob.name()).await.expect("delete");
    let mut again = GrowingBlob::new(GenKind::Vnet, 77, "vnet-rewrite", 10, 10);
    assert_eq!(again.name(), blob.name());
    again.append(&vnet, 3).await;
    let out = flowlogd(&config.write(), &["once"], &[]).await;
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.stderr.contains("blob was rewritten"),
        "the rewrite is logged:\n{}",
        out.stderr
    );
    let s = out.summary();
    assert_eq!(
        (s.documents_indexed, s.documents_existing),
        (0, 30),
        "{s:?}"
    );

    // It grows again past where it was: the three records after the old end are new.
    again.append(&vnet, 7).await;
    let s = once(&config).await;
    assert_eq!(
        (s.documents_indexed, s.documents_existing),
        (40, 30),
        "{s:?}"
    );
    es.assert_exactly_once(&es.all(), 100, "rewritten blob")
        .await;
    es.cleanup().await;
}

// Rewrite policy (README "What flowlogd guarantees"): the index holds what the blob holds. A
// blob rewritten with different content (here: fewer records, and tuples of another week, so
// they land in another weekly index) ends with exactly its new tuples indexed: the old
// documents are deleted, not left beside the new ones or kept in place of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_rewritten_with_different_content_leaves_exactly_its_new_tuples_in_the_index() {
    let azurite = Azurite::start().expect("azurite");
    let es = Es::engine("rewritten_content");
    let (_, vnet) = container(&azurite, VNET_CONTAINER).await;
    let config = vnet_config(&es.url, &azurite, &es);
    let mut first = GrowingBlob::new(GenKind::Vnet, 91, "vnet-rewrite-changed", 6, 10);
    first.append(&vnet, 6).await;
    assert_eq!(once(&config).await.documents_indexed, 60);

    // New content under the same name: 3 records of tuples from eight days earlier.
    let eight_days_ago = current_hour() - 8 * 24 * 3600;
    let other = GrowingBlob::at_hour(
        GenKind::Vnet,
        92,
        "vnet-rewrite-changed",
        3,
        10,
        eight_days_ago,
    );
    vnet.delete_blob(first.name()).await.expect("delete");
    vnet.append_flow_log_records(first.name(), &common::blobs::records_of(&other.blob))
        .await
        .expect("upload the new content");
    let out = flowlogd(&config.write(), &["once"], &[]).await;
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stderr.contains("blob was rewritten"), "{}", out.stderr);

    let docs = es
        .assert_exactly_once(&es.all(), 30, "after the rewrite")
        .await;
    let cutoff_ms = (current_hour() - 7 * 24 * 3600) * 1000;
    let old: Vec<&Doc> = docs
        .iter()
        .filter(|d| {
            d.source["@timestamp"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .is_none_or(|t| t.timestamp_millis() >= cutoff_ms)
        })
        .collect();
    assert!(
        old.is_empty(),
        "{} documents of the old content are still indexed, e.g. {:?}",
        old.len(),
        old.first()
    );
    // Nothing left to do afterwards.
    let again = once(&config).await;
    assert_eq!((again.documents_indexed, again.errors), (0, 0), "{again:?}");
    es.cleanup().await;
}

// ---------------------------------------------------------------------------------------------
// Crash safety.

// Invariants 1 and 2: the offset never passes unacknowledged bytes, and a re-read produces the
// same ids, so SIGKILL at any moment loses nothing and duplicates nothing. Most kills come at a
// random moment. Where a kill lands between the engine indexing a batch and flowlogd committing
// its offset is a matter of a few milliseconds, so luck alone may never hit that window (a CI
// run once had no kill land in it). Every fourth round therefore kills inside it for sure: a
// proxy in front of the engine keeps back the answer to a `_bulk` whose documents the engine
// created, and the kill comes while it does. Those documents must come back as 409 once a later
// run reads the same bytes again, and be indexed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_while_blobs_grow_loses_and_duplicates_nothing() {
    const KILLS: usize = 12;
    let azurite = Azurite::start().expect("azurite");
    // The shared node even when ELASTICSEARCH_URL is set: the proxy speaks plain HTTP only.
    let es = Es::shared_node("sigkill_at_random_moments");
    let proxy = fault_proxy::HoldingProxy::start(&es.authority()).await;
    let (_, vnet) = container(&azurite, VNET_CONTAINER).await;
    let (_, nsg) = container(&azurite, NSG_CONTAINER).await;
    // Small batches and chunks: many bulk requests and commits, so kills land between them. A
    // held answer must not time out and be retried before the kill.
    let config = vnet_and_nsg_config_via(&proxy.url, &azurite, &es)
        .es("batch_max_docs = 20\nbatch_max_bytes = 16384\nflush_interval = \"100ms\"\nrequest_timeout = \"1h\"")
        .daemon("interval = \"1s\"");
    let mut blobs: Vec<(GrowingBlob, bool)> = vec![
        (
            GrowingBlob::new(GenKind::Vnet, 901, "vnet-crash", 60, 10),
            true,
        ),
        (
            GrowingBlob::new(GenKind::Vnet, 902, "vnet-crash", 60, 10),
            true,
        ),
        (
            GrowingBlob::new(GenKind::Vnet, 903, "vnet-crash", 60, 10),
            true,
        ),
        (
            GrowingBlob::new(GenKind::Nsg2, 904, "nsg-crash", 60, 10),
            false,
        ),
        (
            GrowingBlob::new(GenKind::Nsg1, 905, "nsg-crash-v1", 60, 10),
            false,
        ),
    ];
    let mut rng = Rng::new(0xC0FFEE);
    let mut written = 0;
    for (blob, is_vnet) in &mut blobs {
        written += blob.append(if *is_vnet { &vnet } else { &nsg }, 12).await.0;
    }
    for round in 0..KILLS {
        let mut daemon = Daemon::spawn(&config, &[]);
        let kill_inside_the_window = round % 4 == 2;
        let held_before = proxy.held().len();
        if kill_inside_the_window {
            proxy.arm();
        }
        let kill_at = Instant::now() + Duration::from_millis(rng.range(300, 1800));
        let give_up = Instant::now() + Duration::from_secs(120);
        // Network Watcher keeps appending while flowlogd runs.
        loop {
            let waited_enough = if kill_inside_the_window {
                proxy.held().len() > held_before
            } else {
                Instant::now() >= kill_at
            };
            if waited_enough {
                break;
            }
            assert!(
                Instant::now() < give_up,
                "round {round}: no `_bulk` creating documents reached the engine in 120 s:\n{}",
                daemon.log()
            );
            let i = rng.range(0, blobs.len() as u64 - 1) as usize;
            let (blob, is_vnet) = &mut blobs[i];
            written += blob.append(if *is_vnet { &vnet } else { &nsg }, 1).await.0;
            tokio::time::sleep(Duration::from_millis(rng.range(20, 150))).await;
        }
        assert!(
            daemon.running(),
            "flowlogd run died by itself in round {round}:\n{}",
            daemon.log()
        );
        daemon.kill();
        let indexed = es.count(&es.all()).await;
        eprintln!(
            "round {round}: SIGKILL with {indexed} of {written} tuples indexed{}",
            if kill_inside_the_window {
                " and a `_bulk` answer held back"
            } else {
                ""
            }
        );
    }
    let s = once(&config).await;
    eprintln!("final once: {s:?}");
    let docs = es
        .assert_exactly_once(&es.all(), written, "after SIGKILLs")
        .await;
    assert_eq!(
        distinct_contents(&docs) as u64,
        written,
        "a tuple indexed under two ids"
    );
    // Documents the engine indexed while flowlogd never heard so were read and sent again (their
    // offsets had not moved), and the engine found them there: no offset passed them.
    let held = proxy.held();
    assert_eq!(held.len(), KILLS / 4, "rounds killed inside the window");
    let conflicts = proxy.conflicts();
    for (round, ids) in held.iter().enumerate() {
        let never_sent_again: Vec<&String> =
            ids.iter().filter(|id| !conflicts.contains(*id)).collect();
        assert!(
            never_sent_again.is_empty(),
            "held-back batch {round}: {} of {} documents the engine indexed before the kill were \
             never sent again, e.g. {:?}",
            never_sent_again.len(),
            ids.len(),
            never_sent_again.first()
        );
    }
    assert_eq!((s.documents_dead_lettered, s.errors), (0, 0), "{s:?}");
    assert!(config.dead_letters().is_empty());
    es.cleanup().await;
}

// ---------------------------------------------------------------------------------------------
// Outage: Elasticsearch down, and a fault-injecting proxy.

// Invariant 1 under an outage: offsets stay put while Elasticsearch is down and move once it is
// back. Simulates a whole-cluster outage: the node is stopped gracefully (its port then refuses
// connections) while blobs keep growing, and started again on the same port with the same data,
// as a restarted cluster comes back. The node is this test's own: the shared one must never
// stop. After recovery everything written before and during the outage is there exactly once,
// and nothing is left to read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticsearch_stopped_mid_run_gets_everything_written_meanwhile_once_back() {
    let azurite = Azurite::start().expect("azurite");
    let mut node = OpenSearch::start().expect("an OpenSearch node of this test's own");
    let es = Es::node_at(&node.url(), "elasticsearch_stopped_mid_run");
    let (_, vnet) = container(&azurite, VNET_CONTAINER).await;
    let config = TestConfig::new(
        &es.url,
        vec![SourceSpec::azurite(
            "vnet",
            VNET_CONTAINER,
            &azurite,
            &es.pattern("vnet"),
        )],
    )
    .es("batch_max_docs = 50\nflush_interval = \"100ms\"")
    .daemon("interval = \"1s\"")
    .with_metrics();
    let mut a = GrowingBlob::new(GenKind::Vnet, 41, "vnet-outage", 40, 10);
    let mut b = GrowingBlob::new(GenKind::Vnet, 42, "vnet-outage", 40, 10);
    let before = a.append(&vnet, 10).await.0 + b.append(&vnet, 10).await.0;
    let mut daemon = Daemon::spawn(&config, &[]);
    wait_until(
        Duration::from_secs(60),
        "the first 200 documents",
        || async { es.count(&es.all()).await == before },
    )
    .await;
    daemon
        .wait_metrics(
            &["flowlogd_documents_indexed_total"],
            Duration::from_secs(10),
            |n| n == before,
        )
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    node.stop().expect("stop the node");
    let during = a.append(&vnet, 10).await.0 + b.append(&vnet, 15).await.0;
    // Bulk requests fail (logged once at warn, then retried quietly; the retry counter only
    // moves when a delivery ends) for a few seconds of retries.
    wait_until(Duration::from_secs(30), "a failed bulk request", || async {
        daemon.log().contains("bulk request failed; retrying it")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        daemon.running(),
        "an outage must not stop the daemon:\n{}",
        daemon.log()
    );
    node.restart().expect("restart the node");
    assert_eq!(node.url(), es.url, "the node is back on the same port");

    // Created or, had a request been applied just before the node went away, already there.
    daemon
        .wait_metrics(
            &[
                "flowlogd_documents_indexed_total",
                "flowlogd_documents_existing_total",
            ],
            Duration::from_secs(60),
            |n| n == before + during,
        )
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    daemon.terminate();
    let status = daemon
        .wait(Duration::from_secs(30))
        .await
        .expect("exit after SIGTERM");
    assert!(status.success(), "{}:\n{}", describe(&status), daemon.log());
    let log = daemon.log();
    assert!(log.contains("bulk requests succeed again"), "{log}");
    let docs = es
        .assert_exactly_once(&es.all(), before + during, "after the outage")
        .await;
    assert_eq!(distinct_contents(&docs) as u64, before + during);
    // Everything was committed: nothing left to read.
    let s = once(&config).await;
    assert_eq!(
        (s.blobs_read, s.documents_indexed, s.documents_existing),
        (0, 0, 0),
        "{s:?}"
    );
    drop(node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_429_503_item_429_and_dropped_connections_lose_and_duplicate_nothing() {
    use std::sync::atomic::Ordering::SeqCst;
    let azurite = Azurite::start().expect("azurite");
    // The shared node even when ELASTICSEARCH_URL is set: the proxy speaks plain HTTP only.
    let es = Es::shared_node("bulk_429_503_and_dropped_connections");
    let proxy = fault_proxy::FaultProxy::start(&es.authority()).await;
    let (_, vnet) = container(&azurite, VNET_CONTAINER).await;
    let (_, nsg) = container(&azurite, NSG_CONTAINER).await;
    let mut written = 0;
    for (kind, seed, n) in [
        (GenKind::Vnet, 61, "vnet-faults"),
        (GenKind::Vnet, 62, "vnet-faults"),
        (GenKind::Nsg2, 63, "nsg-faults"),
    ]
    .map(|(k, s, n)| (k, s, n))
    {
        let mut blob = GrowingBlob::new(kind, seed, n, 20, 10);
        written += blob
            .append(if kind == GenKind::Vnet { &vnet } else { &nsg }, 20)
            .await
            .0;
    }
    let mut config = vnet_and_nsg_config(&azurite, &es).es("batch_max_docs = 25");
    config.backoff = ("20ms", "200ms");
    config.es_url = proxy.url.clone();
    let s = once(&config).await;
    let st = &proxy.stats;
    eprintln!("summary {s:?}\nproxy {st:?}");
    for (what, n) in [
        ("whole-request 429", st.whole_429.load(SeqCst)),
        ("whole-request 503", st.whole_503.load(SeqCst)),
        (
            "response lost after indexing",
            st.lost_responses.load(SeqCst),
        ),
        ("item 429", st.item_429.load(SeqCst)),
        ("item 503", st.item_503.load(SeqCst)),
        ("connection reset before forwarding", st.resets.load(SeqCst)),
    ] {
        assert!(n > 0, "the proxy never injected: {what}");
    }
    // Each document counted once, as created or (its earlier request applied, the response
    // lost) as already there.
    assert_eq!(s.documents_indexed + s.documents_existing, written, "{s:?}");
    assert!(
        s.documents_existing > 0,
        "lost responses must show up as replays: {s:?}"
    );
    assert_eq!(s.documents_dead_lettered, 0, "{s:?}");
    let docs = es
        .assert_exactly_once(&es.all(), written, "through the fault proxy")
        .await;
    assert_eq!(distinct_contents(&docs) as u64, written);
    // Committed: a second pass (straight to the node) has nothing to do.
    config.es_url = es.url.clone();
    let again = once(&config).await;
    assert_eq!(
        (again.blobs_read, again.documents_indexed),
        (0, 0),
        "{again:?}"
    );
    es.cleanup().await;
}

/// A sink that acknowledges every bulk item at once (201) and stores nothing: with it, batches
/// finish as fast as flowlogd can send them.
async fn start_ack_sink() -> (String, tokio::task::JoinHandle<()>) {
    use fault_proxy::{read_request, respond};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind sink");
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some(req) = read_request(&mut sock, &mut buf).await {
                    let body = if req.target.starts_with("/_bulk") {
                        let n = req
                            .body
                            .split(|b| *b == b'\n')
                            .filter(|l| !l.is_empty())
                            .count()
                            / 2;
                        let items = vec![r#"{"create":{"status":201}}"#; n].join(",");
                        format!(r#"{{"took":1,"errors":false,"items":[{items}]}}"#)
                    } else if req.method == "GET" && req.target.split('?').next() == Some("/") {
                        r#"{"name":"ack","cluster_name":"ack","version":{"number":"2.19.0","distribution":"opensearch"}}"#.to_owned()
                    } else {
                        r#"{"acknowledged":true}"#.to_owned()
                    };
                    if !respond(&mut sock, &req.method, 200, body.as_bytes()).await {
                        return;
                    }
                }
            });
        }
    });
    (url, task)
}

// Regression: every finished batch flushed the registry on its own, concurrently; sled runs
// flushes on a pool of 7 I/O threads that also has to run the log write they wait for, so 7
// flushes at once hung every later flush and the whole delivery for good (`once` never
// exited; a daemon stopped committing). Tiny batches, many in flight, a sink that answers at
// once: before the fix about one run in three hung.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tiny_batches_finishing_at_once_never_hang_the_registry_flush() {
    let azurite = Azurite::start().expect("azurite");
    let (sink, _task) = start_ack_sink().await;
    let (_, vnet) = container(&azurite, VNET_CONTAINER).await;
    let mut written = 0;
    for seed in 81..85 {
        written += GrowingBlob::new(GenKind::Vnet, seed, "vnet-flush", 20, 25)
            .append(&vnet, 20)
            .await
            .0;
    }
    let config = TestConfig::new(
        &sink,
        vec![
            SourceSpec::azurite("vnet", VNET_CONTAINER, &azurite, "flowlogs-%{+xxxx.ww}")
                .extra("start = \"start_over\""),
        ],
    )
    .es("batch_max_docs = 2\nmax_in_flight = 32");
    let path = config.write();
    for run in 0..4 {
        let (out, finished) = flowlogd_for(&path, &["once"], &[], Duration::from_secs(30)).await;
        assert!(
            finished,
            "run {run}: `flowlogd once` hung (registry flush deadlock?):\n{}",
            out.stderr
        );
        assert!(out.status.success(), "run {run}: {}", out.stderr);
        let s = out.summary();
        assert_eq!(s.documents_indexed, written, "run {run}: {s:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Rejection.

// Invariant 4: a document the index refuses, a malformed record and a malformed tuple are each
// counted and dead-lettered with the reason, blob and offset; the rest of the blob and the blobs
// after it keep flowing, and their offsets move past them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_documents_and_malformed_records_are_dead_lettered_and_the_rest_keeps_flowing() {
    let azurite = Azurite::start().expect("azurite");
    let es = Es::engine("refused_documents_and_malformed_records");
    let (_, vnet) = container(&azurite, VNET_CONTAINER).await;
    let hour = current_hour();
    let ms = |s: i64| s * 1000;
    // Hourly indices; the index of the previous hour exists already with `source.ip` mapped as
    // `long`, so a late tuple from that hour (records start with the last seconds of the
    // previous minute) is refused with a mapping error. flowlogd's template only applies to
    // indices it creates.
    let pattern = format!("{}-dl-%{{+yyyy.MM.dd.HH}}", es.prefix);
    let previous_index = format!(
        "{}-dl-{}",
        es.prefix,
        chrono::DateTime::from_timestamp(hour - 3600, 0)
            .unwrap()
            .format("%Y.%m.%d.%H")
    );
    let (status, body) = es
        .call(Method::Put, &previous_index, Some(json!({"mappings": {"properties": {"source": {"properties": {"ip": {"type": "long"}}}}}})))
        .await;
    assert_eq!(status, 200, "{body}");

    let mac_a = "00224871C2A1";
    let records_a = [
        vnet_record(
            hour + 52,
            mac_a,
            &[
                vnet_tuple(ms(hour - 5), 1),
                vnet_tuple(ms(hour + 3), 2),
                vnet_tuple(ms(hour + 40), 3),
            ],
        ),
        // Balanced braces, not JSON: a malformed record.
        format!(
            "{{\"time\":\"x\",\"flowLogVersion\":4,\"macAddress\":\"{mac_a}\",\"flowRecords\":{{\"flows\":[]}}, broken }}"
        ),
        vnet_record(
            hour + 172,
            mac_a,
            &[
                vnet_tuple(ms(hour + 130), 4),
                "not,a,tuple".to_owned(),
                vnet_tuple(ms(hour + 150), 5),
            ],
        ),
        vnet_record(
            hour + 232,
            mac_a,
            &[
                vnet_tuple(ms(hour + 190), 6),
                vnet_tuple(ms(hour + 200), 7),
                vnet_tuple(ms(hour + 210), 8),
            ],
        ),
    ];
    let blob_a = vnet_blob_name(hour, mac_a);
    let records: Vec<Bytes> = records_a.iter().map(|r| Bytes::from(r.clone())).collect();
    vnet.append_flow_log_records(&blob_a, &records)
        .await
        .expect("upload a");
    // Record offsets: after the 12-byte head, each later record after its comma.
    let offsets: Vec<u64> = records_a
        .iter()
        .scan(12u64, |at, r| {
            let here = *at;
            *at += r.len() as u64 + 1;
            Some(here)
        })
        .collect();

    let mac_b = "00224871C2B2";
    let blob_b = vnet_blob_name(hour, mac_b);
    let records_b: Vec<Bytes> = (0..5)
        .map(|m| {
            let tuples: Vec<String> = (0..4)
                .map(|k| vnet_tuple(ms(hour + 300 + m * 60 + k), 20 + (m * 4 + k) as u8))
                .collect();
            Bytes::from(vnet_record(hour + 352 + m * 60, mac_b, &tuples))
        })
        .collect();
    vnet.append_flow_log_records(&blob_b, &records_b)
        .await
        .expect("upload b");

    let config = TestConfig::new(
        &es.url,
        vec![SourceSpec::azurite(
            "vnet",
            VNET_CONTAINER,
            &azurite,
            &pattern,
        )],
    )
    .es(&es.config_lines);
    let s = once(&config).await;
    let good = 2 + 2 + 3 + 20;
    assert_eq!(s.documents_indexed, good, "{s:?}");
    assert_eq!(
        s.documents_dead_lettered, 3,
        "one refused document, one bad record, one bad tuple: {s:?}"
    );
    assert_eq!(es.count(&es.all()).await, good);
    assert_eq!(es.count(&previous_index).await, 0);

    let lines = config.dead_letters();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    let path_a = format!("{VNET_CONTAINER}/{blob_a}");
    let rejected: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "rejected").collect();
    assert_eq!(rejected.len(), 1, "{lines:#?}");
    let r = rejected[0];
    assert_eq!(r["blob"], path_a.as_str());
    assert_eq!(r["record_offset"], offsets[0]);
    assert_eq!(r["tuple_index"], 0);
    assert_eq!(r["index"], previous_index.as_str());
    assert_eq!(r["status"], 400);
    assert_eq!(r["error"]["type"], "mapper_parsing_exception", "{r}");
    assert!(
        r["error"]["reason"].as_str().unwrap().contains("source.ip"),
        "{r}"
    );
    assert_eq!(
        r["document"]["source"]["ip"], "10.0.1.1",
        "the refused document is kept whole: {r}"
    );
    let problems: HashMap<u64, &Value> = lines
        .iter()
        .filter(|l| l["kind"] == "problem")
        .map(|l| (l["offset"].as_u64().unwrap(), l))
        .collect();
    assert_eq!(problems.len(), 2, "{lines:#?}");
    let bad_record = problems
        .get(&offsets[1])
        .unwrap_or_else(|| panic!("no problem at {}: {lines:#?}", offsets[1]));
    assert_eq!(bad_record["blob"], path_a.as_str());
    assert!(
        bad_record["reason"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{bad_record}"
    );
    assert_eq!(
        bad_record["excerpt"],
        records_a[1].as_str(),
        "the malformed record's bytes are kept for whoever repairs it"
    );
    let bad_tuple = problems
        .get(&offsets[2])
        .unwrap_or_else(|| panic!("no problem at {}: {lines:#?}", offsets[2]));
    assert!(
        bad_tuple["reason"]
            .as_str()
            .unwrap()
            .contains("not,a,tuple"),
        "{bad_tuple}"
    );
    assert_eq!(bad_tuple["excerpt"], "not,a,tuple");

    // Both blobs keep growing: the new records arrive, nothing old is re-sent or re-lettered.
    let more_a = vnet_record(
        hour + 292,
        mac_a,
        &[
            vnet_tuple(ms(hour + 250), 9),
            vnet_tuple(ms(hour + 260), 10),
        ],
    );
    let more_b = vnet_record(hour + 652, mac_b, &[vnet_tuple(ms(hour + 600), 60)]);
    vnet.append_flow_log_records(&blob_a, &[Bytes::from(more_a.clone())])
        .await
        .unwrap();
    vnet.append_flow_log_records(&blob_b, &[Bytes::from(more_b.clone())])
        .await
        .unwrap();
    let s = once(&config).await;
    assert_eq!(
        (
            s.documents_indexed,
            s.documents_existing,
            s.documents_dead_lettered
        ),
        (3, 0, 0),
        "{s:?}"
    );
    assert_eq!(
        s.bytes_downloaded,
        (more_a.len() + 1 + more_b.len() + 1 + 2 * 2) as u64,
        "{s:?}"
    );
    assert_eq!(config.dead_letters().len(), 3);
    es.assert_exactly_once(&es.all(), good + 3, "after rejections")
        .await;
    es.cleanup().await;
}

// ---------------------------------------------------------------------------------------------
// Storage faults on a first run's backlog.

// Invariant 8: a listed blob is never forgotten. A first run lists a backlog of old hours once;
// blobs whose reads fail there must come back on a later run although their hours are no
// longer "current or previous".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_of_older_hours_whose_first_reads_fail_are_read_by_a_later_run() {
    let azurite = Azurite::start().expect("azurite");
    let es = Es::engine("older_hours_failed_reads");
    let (_, vnet) = container(&azurite, VNET_CONTAINER).await;
    let hour = current_hour();
    let mut total = 0;
    for (seed, name, start) in [
        (81, "flaky-a", hour - 3 * 3600),
        (82, "flaky-b", hour - 2 * 3600),
        (83, "steady-a", hour - 3 * 3600),
        (84, "steady-b", hour),
    ] {
        let mut blob = GrowingBlob::at_hour(GenKind::Vnet, seed, name, 10, 20, start);
        total += blob.append(&vnet, 10).await.0;
    }
    // Every read of a flaky blob fails three times; one try per request, so three runs fail.
    let proxy = storage_proxy::start(azurite.port(), "flaky", 3).await;
    let mut source = SourceSpec::azurite("vnet", VNET_CONTAINER, &azurite, &es.pattern("vnet"))
        .extra("since = \"5h\"");
    source.blob_endpoint = proxy.endpoint.clone();
    source.auth.push_str("\n[source.retry]\nmax_tries = 1");
    let config = TestConfig::new(&es.url, vec![source]).es(&es.config_lines);

    let mut runs = Vec::new();
    for _ in 0..8 {
        let out = flowlogd(&config.write(), &["once"], &[]).await;
        let s = out.summary();
        // Issue 9, item 9: a run whose reads or listings failed says so in its exit code
        // (2: ran, but left work for the next run), not only in the JSON line.
        let expected = if s.errors == 0 { Some(0) } else { Some(2) };
        assert_eq!(out.status.code(), expected, "{s:?}\n{}", out.stderr);
        runs.push(s.clone());
        if s.errors == 0 && es.count(&es.all()).await == total {
            break;
        }
    }
    assert!(
        proxy.failed.load(std::sync::atomic::Ordering::SeqCst) >= 2,
        "no read failed: the test proves nothing; runs: {runs:?}"
    );
    es.assert_exactly_once(
        &es.all(),
        total,
        &format!("after {} runs: {runs:?}", runs.len()),
    )
    .await;
    es.cleanup().await;
}

// Issue 9, item 1: a decode problem whose dead-letter line cannot be written must not be
// committed past. `/dev/full` opens fine (so startup succeeds) and refuses every write (ENOSPC),
// like a full disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_record_whose_dead_letter_cannot_be_written_is_not_committed_past() {
    let azurite = Azurite::start().expect("azurite");
    let es = Es::engine("dead_letter_cannot_be_written");
    let (_, vnet) = container(&azurite, VNET_CONTAINER).await;
    let hour = current_hour();
    let ms = |s: i64| s * 1000;
    let mac = "00224871C2C3";
    let records = [
        vnet_record(
            hour + 52,
            mac,
            &[vnet_tuple(ms(hour + 3), 1), vnet_tuple(ms(hour + 40), 2)],
        ),
        format!(
            "{{\"time\":\"x\",\"flowLogVersion\":4,\"macAddress\":\"{mac}\",\"flowRecords\":{{\"flows\":[]}}, broken }}"
        ),
        vnet_record(
            hour + 172,
            mac,
            &[vnet_tuple(ms(hour + 130), 3), vnet_tuple(ms(hour + 150), 4)],
        ),
    ];
    let blob = vnet_blob_name(hour, mac);
    let bytes: Vec<Bytes> = records.iter().map(|r| Bytes::from(r.clone())).collect();
    vnet.append_flow_log_records(&blob, &bytes)
        .await
        .expect("upload");
    let malformed_at = 12 + records[0].len() as u64 + 1;

    let mut config = vnet_config(&es.url, &azurite, &es);
    config.dead_letter_override = Some(PathBuf::from("/dev/full"));
    let out = flowlogd(&config.write(), &["once"], &[]).await;
    let s = out.summary();
    assert_eq!(
        out.status.code(),
        Some(2),
        "a lost dead letter is a failed run: {s:?}\n{}",
        out.stderr
    );
    assert!(out.stderr.contains("dead-letter"), "{}", out.stderr);
    let entries = config.registry_entries().await;
    let offset = entries
        .iter()
        .find(|(name, ..)| *name == blob)
        .map_or(0, |e| e.1);
    assert!(
        offset <= malformed_at,
        "committed past the malformed record at {malformed_at} (offset {offset}) without its dead letter"
    );

    // With a writable file, the next run dead-letters it and indexes everything once.
    config.dead_letter_override = None;
    let out = flowlogd(&config.write(), &["once"], &[]).await;
    assert!(out.status.success(), "{}", out.stderr);
    let lines = config.dead_letters();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0]["offset"], malformed_at);
    es.assert_exactly_once(&es.all(), 4, "after the dead letter could be written")
        .await;
    es.cleanup().await;
}

// ---------------------------------------------------------------------------------------------
// Watchdog.

// Item 8 of issue 9: the systemd keep-alive says the pipeline works, not that a timer fires.
// Simulates a wedged pipeline: every bulk request hangs (a proxy that never answers `_bulk`,
// with `request_timeout` longer than the test), so after the first batch nothing moves at all:
// no storage request, no bulk attempt, no chunk. Setup requests pass through, so the daemon
// gets as far as polling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_that_moves_nothing_for_the_watchdog_timeout_gets_no_more_keep_alives() {
    let azurite = Azurite::start().expect("azurite");
    let es = Es::shared_node("wedged_watchdog");
    let hung = fault_proxy::start_slow(&es.authority(), Duration::from_secs(3600)).await;
    let (_, vnet) = container(&azurite, VNET_CONTAINER).await;
    // Many small chunks: the reader fills the channel and waits behind the hung batch.
    let mut blob = GrowingBlob::new(GenKind::Vnet, 81, "vnet-wedged", 40, 20);
    blob.append(&vnet, 40).await;
    let config = vnet_config(&hung.url, &azurite, &es)
    .es("batch_max_docs = 20\nbatch_max_bytes = 16384\nmax_in_flight = 1\nrequest_timeout = \"1h\"")
    .daemon("interval = \"1s\"\nshutdown_timeout = \"1s\"");
    let socket_path = config.dir().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("socket timeout");
    let socket_env = socket_path.display().to_string();
    // WATCHDOG_USEC 3 s: keep-alives every 1.5 s while work moves.
    let mut daemon = Daemon::spawn_with_env(
        &config,
        &[],
        &[
            ("NOTIFY_SOCKET", &socket_env),
            ("WATCHDOG_USEC", "3000000"),
            // TestConfig turns sd_notify off for every other test.
            ("FLOWLOGD_DAEMON__SD_NOTIFY", "true"),
        ],
    );
    let received = |limit: Duration| {
        let until = Instant::now() + limit;
        let mut keep_alives = 0;
        let mut buf = [0u8; 256];
        while Instant::now() < until {
            if let Ok(n) = socket.recv(&mut buf)
                && &buf[..n] == b"WATCHDOG=1"
            {
                keep_alives += 1;
            }
        }
        keep_alives
    };
    let mut before = 0;
    let mut waited = Duration::ZERO;
    while !daemon.log().contains("withholding the keep-alive")
        && waited < Duration::from_secs(60)
        && daemon.running()
    {
        before += received(Duration::from_millis(500));
        waited += Duration::from_millis(500);
    }
    let log = daemon.log();
    assert!(
        log.contains("withholding the keep-alive"),
        "the wedged daemon kept saying it works ({before} keep-alives in {waited:?}):\n{log}"
    );
    assert!(before > 0, "no keep-alive while work still moved:\n{log}");
    // Drain a keep-alive that may have been sent just before the decision, then listen for
    // several periods: none may come while nothing moves.
    received(Duration::from_millis(300));
    let after = received(Duration::from_secs(5));
    daemon.kill();
    assert_eq!(
        after,
        0,
        "keep-alives resumed although nothing moved:\n{}",
        daemon.log()
    );
    es.cleanup().await;
}

// ---------------------------------------------------------------------------------------------
// Shutdown.

// Invariant 5: SIGTERM stops polling, drains in-flight batches, commits and exits 0 within
// `shutdown_timeout`; everything indexed is committed, so the next run re-sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_ingest_exits_zero_in_time_with_everything_indexed_committed() {
    let azurite = Azurite::start().expect("azurite");
    // Through a proxy that answers each bulk 150 ms late (an engine indexing slowly): the real
    // node would otherwise index the 3,000 documents before SIGTERM could land in the middle.
    let es = Es::shared_node("sigterm_during_ingest");
    let slow = fault_proxy::start_slow(&es.authority(), Duration::from_millis(150)).await;
    let (_, vnet) = container(&azurite, VNET_CONTAINER).await;
    let mut blobs = Vec::new();
    let mut total = 0;
    // 3,000 documents in 50-document batches: ingest is still under way when SIGTERM comes.
    for seed in 71..76 {
        let mut blob = GrowingBlob::new(GenKind::Vnet, seed, "vnet-shutdown", 30, 20);
        total += blob.append(&vnet, 30).await.0;
        blobs.push(blob);
    }
    let timeout = Duration::from_secs(10);
    let config = vnet_config(&slow.url, &azurite, &es)
        .es("batch_max_docs = 50\nbatch_max_bytes = 65536\nflush_interval = \"200ms\"")
        .daemon("interval = \"1s\"\nshutdown_timeout = \"10s\"");
    let mut daemon = Daemon::spawn(&config, &[]);
    wait_until(
        Duration::from_secs(60),
        "ingest to be under way",
        || async { es.count(&es.all()).await >= 200 },
    )
    .await;
    let signalled = Instant::now();
    daemon.terminate();
    let status = daemon.wait(timeout + Duration::from_secs(5)).await;
    let took = signalled.elapsed();
    let log = daemon.log();
    let status = status.unwrap_or_else(|| panic!("still running {took:?} after SIGTERM:\n{log}"));
    assert!(status.success(), "{}:\n{log}", describe(&status));
    assert!(
        took < timeout,
        "exit took {took:?} (shutdown_timeout {timeout:?}):\n{log}"
    );
    assert!(
        log.contains("shutting down: polling stopped") && log.contains("registry flushed; stopped"),
        "{log}"
    );
    let indexed = es.count(&es.all()).await;
    eprintln!("SIGTERM with ingest under way: exit 0 after {took:?}, {indexed} of {total} indexed");
    assert!(
        indexed < total,
        "SIGTERM came after ingest finished: the test proves nothing"
    );

    // What is committed is exactly what the next run does not read again.
    let entries = config.registry_entries().await;
    let mut unread = 0;
    for blob in &blobs {
        let length = blob.length_after(30);
        unread += match entries.iter().find(|(name, ..)| name == blob.name()) {
            Some((_, offset, _)) => length - offset,
            None => length,
        };
    }
    let s = once(&config).await;
    assert_eq!(
        s.documents_existing, 0,
        "documents indexed before SIGTERM were not committed: {s:?}"
    );
    assert_eq!(s.documents_indexed, total - indexed, "{s:?}");
    assert_eq!(s.bytes_downloaded, unread, "{s:?}");
    es.assert_exactly_once(&es.all(), total, "after SIGTERM")
        .await;
    es.cleanup().await;
}

// ---------------------------------------------------------------------------------------------
// Secrets.

// Invariant 7: with debug and trace logging, in text and JSON, `once`, `check` and `run` (logs
// and /metrics) never show the account key, the SAS token or its signature, the connection
// string, the Elasticsearch password or the Basic credentials made from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_and_trace_output_never_shows_keys_sas_signatures_or_passwords() {
    use base64::Engine as _;
    let azurite = Azurite::start().expect("azurite");
    // The shared node even when ELASTICSEARCH_URL is set: the test sets a password of its own,
    // which only an engine without security (this node) accepts.
    let es = Es::shared_node("debug_and_trace_output_never_shows");
    for c in ["c-key", "c-sas", "c-cs"] {
        let (_, w) = container(&azurite, c).await;
        let mut blob = GrowingBlob::new(GenKind::Vnet, 5, "vnet-secrets", 3, 5);
        blob.append(&w, 3).await;
    }
    let (sas, sig) = service_sas("c-sas", "rl");
    let password = "Pa55-e2e-secret-9f3a7c";
    let connection_string = format!(
        "DefaultEndpointsProtocol=http;AccountName={};AccountKey={};BlobEndpoint={}",
        Azurite::ACCOUNT,
        Azurite::ACCOUNT_KEY,
        azurite.blob_endpoint()
    );
    let pattern = es.pattern("secrets");
    let config = TestConfig::new(
        &es.url,
        vec![
            SourceSpec::azurite("key", "c-key", &azurite, &pattern),
            SourceSpec::azurite("sas", "c-sas", &azurite, &pattern)
                .auth(&format!("method = \"sas\"\nsas_token = \"{sas}\"")),
            SourceSpec::azurite("cs", "c-cs", &azurite, &pattern).auth(&format!(
                "method = \"connection_string\"\nconnection_string = \"{connection_string}\""
            )),
        ]
        .into_iter()
        // Every run reads everything again, so every run makes every request.
        .map(|s| s.extra("start = \"start_over\""))
        .collect(),
    )
    .es(&format!(
        "username = \"elastic\"\npassword = \"{password}\""
    ))
    .with_metrics();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("elastic:{password}"));
    let secrets = [
        ("account key", Azurite::ACCOUNT_KEY.to_owned()),
        ("account key, URL-encoded", enc(Azurite::ACCOUNT_KEY)),
        ("SAS token", sas.clone()),
        ("SAS signature", sig.clone()),
        ("SAS signature, URL-encoded", enc(&sig)),
        ("password", password.to_owned()),
        ("Basic credentials", basic),
    ];
    let check = |what: &str, text: &str| {
        assert!(!text.is_empty(), "{what}: no output at all");
        for (name, secret) in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{what} shows the {name}:\n{text}"
            );
        }
    };

    let path = config.write();
    for level in ["debug", "trace"] {
        for format in ["text", "json"] {
            let out = flowlogd(
                &path,
                &["--log-level", level, "--log-format", format, "once"],
                &[],
            )
            .await;
            assert!(
                out.status.success(),
                "once --log-level {level}: {}",
                out.stderr
            );
            assert_eq!(
                out.summary().documents_indexed + out.summary().documents_existing,
                45
            );
            check(
                &format!("once --log-level {level} --log-format {format}"),
                &format!("{}\n{}", out.stdout, out.stderr),
            );
        }
        let out = flowlogd(&path, &["--log-level", level, "check"], &[]).await;
        assert!(
            out.status.success(),
            "check: {}\n{}",
            out.stdout,
            out.stderr
        );
        check(
            &format!("check --log-level {level}"),
            &format!("{}\n{}", out.stdout, out.stderr),
        );
    }
    // A wrong password and a wrong key make errors; they must not quote the secrets either.
    // (The node has no security plugin and ignores the password, so only the storage side
    // fails.)
    let mut bad = TestConfig::new(
        &es.url,
        vec![SourceSpec::azurite("key", "c-key", &azurite, &pattern).auth(
        "method = \"account_key\"\naccount_key = \"V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3JvbmdLZXk=\"",
    )],
    );
    bad.es_extra.push_str(&format!(
        "username = \"elastic\"\npassword = \"{password}\"\n"
    ));
    let out = flowlogd(&bad.write(), &["--log-level", "trace", "check"], &[]).await;
    assert!(!out.status.success(), "a wrong key must fail the check");
    check(
        "check with a wrong key",
        &format!("{}\n{}", out.stdout, out.stderr),
    );
    assert!(
        !out.stdout
            .contains("V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3JvbmdLZXk="),
        "{}",
        out.stdout
    );

    // A service principal's client secret: no Entra ID here, so the token requests fail (and
    // are retried for longer than a test waits); what was logged meanwhile must not show it.
    let client_secret = "Client~Secret-e2e-5Qx8Q~abcdefghijklmnop";
    let sp = TestConfig::new(&es.url, vec![SourceSpec::azurite("sp", "c-key", &azurite, &pattern)
        .auth(&format!(
            "method = \"client_secret\"\ntenant_id = \"72f988bf-86f1-41af-91ab-2d7cd011db47\"\n\
             client_id = \"0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0\"\nclient_secret = \"{client_secret}\""
        ))
        .extra("[source.retry]\nmax_tries = 1")]);
    let mut sp = sp;
    sp.sources[0].blob_endpoint =
        format!("https://127.0.0.1:{}/{}", azurite.port(), Azurite::ACCOUNT);
    let (out, _) = flowlogd_for(
        &sp.write(),
        &["--log-level", "trace", "check"],
        &[],
        Duration::from_secs(5),
    )
    .await;
    let text = format!("{}\n{}", out.stdout, out.stderr);
    assert!(
        text.contains("oauth2"),
        "no token request was made:\n{text}"
    );
    assert!(
        !text.contains(client_secret),
        "check shows the client secret:\n{text}"
    );

    let mut daemon = Daemon::spawn(&config, &["--log-level", "debug"]);
    daemon
        .wait_metrics(
            &[
                "flowlogd_documents_indexed_total",
                "flowlogd_documents_existing_total",
            ],
            Duration::from_secs(60),
            |n| n >= 45,
        )
        .await;
    let metrics = daemon.scrape().await.expect("metrics");
    daemon.terminate();
    let status = daemon.wait(Duration::from_secs(30)).await.expect("exit");
    assert!(status.success());
    check("/metrics", &metrics);
    check("run --log-level debug", &daemon.log());
    es.cleanup().await;
}

/// Issue 11: every lookup and two filter rules on, against the real engine. Four flows: on-prem
/// to Azure Storage in West Europe (Amsterdam, AS 8075), a denied one from London (AS 20712), a
/// platform health probe to 168.63.129.16 and one inside the VNet; the last two are what the
/// README's example rules drop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enriched_flows_are_searchable_by_place_and_filtered_ones_are_acknowledged_but_never_indexed()
 {
    let azurite = Azurite::start().expect("azurite");
    let es = Es::engine("enriched_and_filtered");
    let (_, vnet) = container(&azurite, VNET_CONTAINER).await;
    let hour = current_hour();
    let ms = hour * 1000 + 60_000;
    let tuples = [
        format!("{ms},10.4.0.5,20.38.108.5,40000,443,6,O,E,NX,3,300,2,200"),
        format!("{ms},81.2.69.160,10.0.0.6,5000,22,6,I,D,NX,0,0,0,0"),
        format!("{ms},10.0.0.6,168.63.129.16,40001,80,6,O,E,NX,1,60,1,60"),
        format!("{ms},10.0.0.7,10.0.0.8,40002,443,6,O,E,NX,4,400,4,400"),
    ];
    let blob = vnet_blob_name(hour, "00224871C2A1");
    let record = vnet_record(ms / 1000, "00224871C2A1", &tuples);
    vnet.append_flow_log_records(&blob, &[Bytes::from(record)])
        .await
        .expect("append");

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mmdb = flowlogd::enrich::testdata::test_mmdb_dir(root).expect("test MaxMind databases");
    let config = vnet_config(&es.url, &azurite, &es).tables(&format!(
        r#"[enrich]
service_tags_file = "{tags}"
geoip_file = "{city}"
asn_file = "{asn}"

[[network]]
name = "azure"
cidrs = ["10.0.0.0/8"]

[[network]]
name = "onprem"
cidrs = ["10.4.0.0/16"]

[[filter]]
name = "drop-azure-platform"
action = "drop"
destination_cidr = ["168.63.129.16"]

[[filter]]
name = "drop-east-west"
action = "drop"
source_network = ["azure"]
destination_network = ["azure"]
"#,
        tags = root
            .join("tests/data/ServiceTags_Public_small.json")
            .display(),
        city = mmdb.join("test-City.mmdb").display(),
        asn = mmdb.join("test-ASN.mmdb").display(),
    ));
    let s = once(&config).await;
    assert_eq!(
        (s.documents_indexed, s.tuples_filtered, s.errors),
        (2, 2, 0),
        "{s:?}\ndead letters: {:?}",
        config.dead_letters()
    );
    assert_eq!(
        s.tuples_filtered_by_rule,
        [
            ("drop-azure-platform".to_owned(), 1),
            ("drop-east-west".to_owned(), 1)
        ]
        .into(),
        "{s:?}"
    );
    // Acknowledged: the registry is past the blob's last record (only the closing `]}` is
    // left), so the next run reads nothing.
    let entries = config.registry_entries().await;
    let length = s.bytes_new;
    assert!(
        entries
            .iter()
            .any(|(name, offset, seen)| *name == blob && *offset == length - 2 && *seen == length),
        "{entries:?} (blob {blob}, {length} bytes)"
    );
    let again = once(&config).await;
    assert_eq!(
        (
            again.blobs_read,
            again.documents_indexed,
            again.tuples_filtered
        ),
        (0, 0, 0),
        "{again:?}"
    );

    let docs = es.assert_exactly_once(&es.all(), 2, "enriched flows").await;
    let to_storage = docs
        .iter()
        .find(|d| d.source["source"]["ip"] == "10.4.0.5")
        .expect("the on-prem flow");
    assert_eq!(to_storage.source["source"]["network"]["name"], "onprem");
    assert_eq!(
        to_storage.source["destination"]["azure"],
        json!({"service": "AzureStorage", "region": "westeurope", "service_tag": "AzureStorage.WestEurope"})
    );
    assert_eq!(to_storage.source["destination"]["as"]["number"], 8075);
    // The engine took the location as a geo_point: a distance query around Amsterdam finds the
    // flow to Amsterdam and not the one from London; a terms aggregation on country works.
    let (status, body) = es
        .call(
            Method::Post,
            &format!("{}/_search", es.all()),
            Some(json!({
                "size": 0,
                "query": {"geo_distance": {"distance": "50km",
                    "destination.geo.location": {"lat": 52.37, "lon": 4.89}}},
                "aggs": {"from": {"terms": {"field": "source.geo.country_iso_code"}},
                         "to": {"terms": {"field": "destination.geo.country_name"}}}
            })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["hits"]["total"]["value"], 1, "{body}");
    assert_eq!(
        body["aggregations"]["to"]["buckets"][0]["key"], "Netherlands",
        "{body}"
    );
    let (status, body) = es
        .call(
            Method::Post,
            &format!("{}/_search", es.all()),
            Some(json!({
                "size": 0,
                "query": {"term": {"event.action": "deny"}},
                "aggs": {"from": {"terms": {"field": "source.geo.country_iso_code"}}}
            })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["aggregations"]["from"]["buckets"],
        json!([{"key": "GB", "doc_count": 1}]),
        "denied flows by source country"
    );
    es.cleanup().await;
}
