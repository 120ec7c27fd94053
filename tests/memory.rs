//! Invariant 6 as tests: `flowlogd once` (the real binary) holds memory bounded by its
//! configuration, not by the size of the blob or of its records. The peak is the kernel's
//! high-water mark of the child's resident memory, `VmHWM` of `/proc/<pid>/status`, read every
//! 2 ms while it runs. A memory figure, not a timing.
//!
//! The bound is the formula of docs/DESIGN.md (invariant 6): the binary's idle footprint,
//! measured here with a blob of one tuple, plus the buffers the configuration allows. glibc's
//! default policy keeps freed buffers of up to 32 MiB for reuse and moves its thresholds as
//! the process frees large blocks, which adds its own, unbounded-by-us retention on top
//! (docs/PERFORMANCE.md has both figures), so the child runs with a fixed mmap threshold
//! (`MALLOC_MMAP_THRESHOLD_`): what is measured is what flowlogd holds.
//!
//! The documents go to a sink in this process that acknowledges every bulk item after a short
//! delay without storing anything, so that flowlogd, not a search engine, sets the pace and its
//! own buffers fill up to their bounds; the sink counts the documents and their ids, so the
//! tests also prove that a record sent in several chunks loses and repeats nothing.
//!
//! Sizes are kept small enough for CI (seconds of debug build each); the 500 MB blob and the
//! 200 MB `decode` record are measured by `scripts/bench-memory.sh` (docs/PERFORMANCE.md).

mod common;

use std::collections::HashMap;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Azurite;
use common::flowlogd::{GrowingBlob, SourceSpec, TestConfig, VNET_CONTAINER, bin, container};
use common::proxies::fault_proxy::{
    Accepting, accept_each, hold_until_closed, read_request, respond,
};
use flowlogd::generator::GenKind;
use flowlogd::source::reader::MAX_CHUNK_BYTES;

const MIB: u64 = 1024 * 1024;

/// What the sink saw.
#[derive(Default)]
struct Seen {
    bulk_requests: u64,
    documents: u64,
    /// Times each document id was sent.
    ids: HashMap<String, u32>,
    /// `log.offset` (the record's offset) of each document id.
    records: HashMap<String, u64>,
}

/// An HTTP endpoint that answers like an OpenSearch 2.19 node: `GET /` with its version,
/// templates acknowledged, every `_bulk` item created (201) after `delay`. Once it has seen
/// `hold_from` documents it answers no `_bulk` at all (documents stored, the acknowledgement
/// never sent), so a test can kill flowlogd while a batch is surely unacknowledged.
struct AckSink {
    url: String,
    seen: Arc<Mutex<Seen>>,
    hold_from: Arc<AtomicU64>,
    _accepting: Accepting,
}

impl AckSink {
    async fn start(delay: Duration) -> AckSink {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let hold_from = Arc::new(AtomicU64::new(u64::MAX));
        let (shared, shared_hold_from) = (seen.clone(), hold_from.clone());
        let (url, accepting) = accept_each(move |mut sock| {
            let (seen, hold_from) = (shared.clone(), shared_hold_from.clone());
            async move {
                let mut buf = Vec::new();
                while let Some(req) = read_request(&mut sock, &mut buf).await {
                    let (status, body) = answer(&req.method, &req.target, &req.body, &seen);
                    if req.target.starts_with("/_bulk") {
                        let documents = seen.lock().expect("sink state").documents;
                        if documents >= hold_from.load(Ordering::SeqCst) {
                            hold_until_closed(&mut sock).await;
                            break;
                        }
                        tokio::time::sleep(delay).await;
                    }
                    if !respond(&mut sock, &req.method, status, &body).await {
                        break;
                    }
                }
            }
        })
        .await;
        AckSink {
            url,
            seen,
            hold_from,
            _accepting: accepting,
        }
    }
}

fn answer(method: &str, target: &str, body: &[u8], seen: &Mutex<Seen>) -> (u16, Vec<u8>) {
    let path = target.split('?').next().unwrap_or_default();
    match (method, path) {
        ("GET" | "HEAD", "/" | "") => (
            200,
            br#"{"name":"ack-sink","cluster_name":"ack-sink","cluster_uuid":"x","version":{"number":"2.19.0","distribution":"opensearch"},"tagline":"The OpenSearch Project: https://opensearch.org/"}"#
                .to_vec(),
        ),
        ("POST" | "PUT", "/_bulk") => {
            let mut seen = seen.lock().expect("sink state");
            seen.bulk_requests += 1;
            let mut items = 0u64;
            // Action lines and documents alternate.
            let mut lines = body.split(|b| *b == b'\n');
            while let Some(action) = lines.next() {
                if action.is_empty() {
                    continue;
                }
                let doc = lines.next().unwrap_or_default();
                let parsed: serde_json::Value =
                    serde_json::from_slice(action).expect("bulk action line");
                let id = parsed["create"]["_id"].as_str().expect("document id");
                *seen.ids.entry(id.to_owned()).or_default() += 1;
                // `log.offset` is the last `"offset":` of an ECS document.
                let text = String::from_utf8_lossy(doc);
                if let Some(at) = text.rfind("\"offset\":") {
                    let digits: String = text[at + 9..]
                        .chars()
                        .take_while(char::is_ascii_digit)
                        .collect();
                    if let Ok(offset) = digits.parse() {
                        seen.records.insert(id.to_owned(), offset);
                    }
                }
                items += 1;
            }
            seen.documents += items;
            let item = r#"{"create":{"status":201}}"#;
            let list = vec![item; items as usize].join(",");
            (
                200,
                format!(r#"{{"took":1,"errors":false,"items":[{list}]}}"#).into_bytes(),
            )
        }
        ("GET" | "HEAD", _) => (
            404,
            br#"{"error":{"type":"resource_not_found_exception","reason":"ack sink"},"status":404}"#
                .to_vec(),
        ),
        _ => (200, br#"{"acknowledged":true}"#.to_vec()),
    }
}

/// A finished `flowlogd once` and its peak resident memory.
struct Measured {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    /// Highest `VmHWM` read from `/proc/<pid>/status` while it ran, in bytes.
    peak: u64,
}

/// The `VmHWM` line of a process, in bytes.
fn vm_hwm(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// How the child's allocator runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Allocator {
    /// glibc with a fixed mmap threshold of 128 KiB: a freed large buffer goes back to the
    /// kernel, so the peak is what flowlogd held.
    Pinned,
    /// glibc's defaults, as the daemon runs today.
    Default,
}

/// Runs `flowlogd --config CONFIG once` to its end (at most `limit`), sampling its memory.
fn measure_once(config: &TestConfig, allocator: Allocator, limit: Duration) -> Measured {
    let path = config.write();
    let mut cmd = Command::new(bin());
    cmd.arg("--config")
        .arg(&path)
        .args(["--log-level", "warn", "once"]);
    for (k, _) in std::env::vars() {
        if k.starts_with("FLOWLOGD_") || k == "RUST_LOG" || k.starts_with("MALLOC_") {
            cmd.env_remove(k);
        }
    }
    if allocator == Allocator::Pinned {
        cmd.env("MALLOC_MMAP_THRESHOLD_", "131072");
    }
    let out_path = config.dir().join("once.out");
    let err_path = config.dir().join("once.err");
    cmd.stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"));
    let mut child = cmd.spawn().expect("spawn flowlogd once");
    let pid = child.id();
    let deadline = Instant::now() + limit;
    let mut vm_hwm_max = 0;
    // The high-water mark only grows, so the last reading before the exit has the peak up to
    // then. (`ru_maxrss` from wait4 cannot stand in: it counts the test process's own image,
    // which the child shared between fork and exec.)
    let status = loop {
        if let Some(v) = vm_hwm(pid) {
            vm_hwm_max = vm_hwm_max.max(v);
        }
        if let Some(status) = child.try_wait().expect("wait for flowlogd once") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "flowlogd once did not finish within {limit:?}:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    Measured {
        status,
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
        peak: vm_hwm_max,
    }
}

/// The configuration terms of the bound of docs/DESIGN.md (invariant 6), as the lean delivery
/// tightened it (docs/PERFORMANCE.md, "Memory"): `N·(R + P + 2C) + 2M·C + (M + 2)·(9/8·B + 2C')`.
struct Bound {
    /// Blobs read at once: min(read_concurrency, blobs to read).
    readers: u64,
    /// `max_record_bytes`.
    record: u64,
    /// Bytes of documents per chunk: min(batch_max_bytes, `MAX_CHUNK_BYTES`).
    chunk: u64,
    /// `batch_max_bytes`.
    batch: u64,
    /// `max_in_flight`.
    max_in_flight: u64,
}

impl Bound {
    /// The defaults, one blob read at a time.
    const DEFAULTS: Bound = Bound {
        readers: 1,
        record: 16 * MIB,
        chunk: MAX_CHUNK_BYTES as u64,
        batch: 10 * MIB,
        max_in_flight: 2,
    };

    /// Bytes above the binary's idle footprint.
    fn above_idle(&self) -> u64 {
        // One downloaded piece in hand per reader (the HTTP client's are far smaller).
        let piece = MIB;
        let m = self.max_in_flight;
        // Per reader the chunk being filled and, while a full chunk waits for room in the
        // channel, the next one.
        let readers = self.readers * (self.record + piece + 2 * self.chunk);
        // Chunks in the channel (2·M); the one being moved into batches is the batch's.
        let chunks = 2 * m * self.chunk;
        // M in flight (requests send the chunks' own buffers, not a copy), the one waiting for
        // a slot, and the one being filled (the rest of a chunk goes into it only once the full
        // one got its slot). Each holds slices of chunk buffers at most an eighth unused (9/8
        // of its bytes alive; smaller chunks are copied into blocks that waste at most a
        // document each), and at either end a chunk it shares with the batch before or after
        // it (a buffer is its chunk's bytes plus a sixteenth).
        let batches = (m + 2) * (self.batch * 9 / 8 + 2 * self.chunk * 17 / 16);
        // Bulk items and parsed responses: under an eighth of the bytes.
        (readers + chunks + batches) * 9 / 8
    }
}

/// `flowlogd once` on a container holding one tuple: the binary's own footprint.
async fn idle_footprint(azurite: &Azurite, sink: &AckSink, allocator: Allocator) -> u64 {
    let (_, writer) = container(azurite, "idle").await;
    let mut blob = GrowingBlob::new(GenKind::Vnet, 1, "idle", 1, 1);
    blob.append(&writer, 1).await;
    let config = TestConfig::new(
        &sink.url,
        vec![SourceSpec::azurite(
            "idle",
            "idle",
            azurite,
            "idle-%{+xxxx.ww}",
        )],
    );
    let run = measure_once(&config, allocator, Duration::from_secs(120));
    assert!(run.status.success(), "idle run failed:\n{}", run.stderr);
    *sink.seen.lock().expect("sink state") = Seen::default();
    run.peak
}

fn summary(run: &Measured) -> serde_json::Value {
    let line = run.stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("summary {line:?}: {e}\n{}", run.stderr))
}

/// Every tuple reached the sink exactly once (a record cut into several chunks included).
fn assert_each_document_once(sink: &AckSink, tuples: u64) {
    let seen = sink.seen.lock().expect("sink state");
    let repeated = seen.ids.values().filter(|n| **n > 1).count();
    assert_eq!(seen.documents, tuples, "documents sent");
    assert_eq!(seen.ids.len() as u64, tuples, "distinct ids");
    assert_eq!(repeated, 0, "ids sent more than once");
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB as f64)
}

/// One VNet blob of `records` records × `tuples` tuples in Azurite's `VNET_CONTAINER`;
/// returns it with its length and its largest record.
async fn busy_blob(
    azurite: &Azurite,
    seed: u64,
    records: usize,
    tuples: usize,
) -> (GrowingBlob, u64, u64) {
    let (_, writer) = container(azurite, VNET_CONTAINER).await;
    let mut blob = GrowingBlob::new(GenKind::Vnet, seed, "busy", records, tuples);
    blob.append(&writer, records).await;
    let size = blob.length_after(records);
    let largest = (1..=records)
        .map(|n| blob.length_after(n) - blob.length_after(n - 1))
        .max()
        .unwrap_or(0);
    (blob, size, largest)
}

fn report(what: &str, run: &Measured, idle: u64, bound: u64) {
    eprintln!(
        "MEASURE {what}: peak {} (VmHWM), idle {}, bound {}",
        mib(run.peak),
        mib(idle),
        mib(bound)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_of_many_busy_records_stays_within_the_bound_of_the_default_configuration() {
    let azurite = Azurite::start().expect("azurite");
    let sink = AckSink::start(Duration::from_millis(20)).await;
    // 60 one-minute records of 12,000 VNet tuples (1 MB each, 61 MB, 870 MB of documents):
    // a busy NIC's hour. scripts/bench-memory.sh runs 99,000 tuples a record (500 MB).
    let (blob, size, largest) = busy_blob(&azurite, 3, 60, 12_000).await;
    let idle = idle_footprint(&azurite, &sink, Allocator::Pinned).await;
    let config = TestConfig::new(
        &sink.url,
        vec![SourceSpec::azurite(
            "busy",
            VNET_CONTAINER,
            &azurite,
            "busy-%{+xxxx.ww}",
        )],
    );
    let run = measure_once(&config, Allocator::Pinned, Duration::from_secs(300));
    assert!(run.status.success(), "once failed:\n{}", run.stderr);
    assert_eq!(summary(&run)["bytes_downloaded"], size);
    assert_each_document_once(&sink, blob.tuples());
    // The records are smaller than max_record_bytes: the bound counts what they hold.
    let bound = idle
        + Bound {
            record: largest,
            ..Bound::DEFAULTS
        }
        .above_idle();
    report(
        &format!("default configuration, {} blob", mib(size)),
        &run,
        idle,
        bound,
    );
    assert!(
        run.peak <= bound,
        "peak {} over the bound {}",
        mib(run.peak),
        mib(bound)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_tens_of_megabytes_stay_within_the_bound_computed_from_the_configuration() {
    let azurite = Azurite::start().expect("azurite");
    let sink = AckSink::start(Duration::from_millis(20)).await;
    // Three records of 240,000 tuples: 20 MB of record and 290 MB of documents each, more than
    // the default max_record_bytes allows, so it is raised.
    let (blob, size, largest) = busy_blob(&azurite, 5, 3, 240_000).await;
    assert!(largest > 16 * MIB, "records larger than the default limit");
    let idle = idle_footprint(&azurite, &sink, Allocator::Pinned).await;
    let max_record = 32 * MIB;
    let config = TestConfig::new(
        &sink.url,
        vec![
            SourceSpec::azurite("busy", VNET_CONTAINER, &azurite, "busy-%{+xxxx.ww}")
                .extra(&format!("max_record_bytes = {max_record}")),
        ],
    );
    let run = measure_once(&config, Allocator::Pinned, Duration::from_secs(600));
    assert!(run.status.success(), "once failed:\n{}", run.stderr);
    assert_eq!(summary(&run)["bytes_downloaded"], size);
    assert_each_document_once(&sink, blob.tuples());
    let bound = idle
        + Bound {
            record: max_record,
            ..Bound::DEFAULTS
        }
        .above_idle();
    report(
        &format!(
            "3 records of up to {}, max_record_bytes {}",
            mib(largest),
            mib(max_record)
        ),
        &run,
        idle,
        bound,
    );
    assert!(
        run.peak <= bound,
        "peak {} over the bound {}",
        mib(run.peak),
        mib(bound)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_inside_a_record_larger_than_a_chunk_reads_that_record_again_and_loses_nothing() {
    let azurite = Azurite::start().expect("azurite");
    let sink = AckSink::start(Duration::from_millis(50)).await;
    // Records of 20,000 tuples: ~24 MB of documents each, about 24 chunks.
    let (records, tuples) = (4, 20_000);
    let (blob, size, _) = busy_blob(&azurite, 7, records, tuples).await;
    let ends: Vec<u64> = (0..=records).map(|n| blob.length_after(n) - 2).collect();
    let config = TestConfig::new(
        &sink.url,
        vec![SourceSpec::azurite(
            "busy",
            VNET_CONTAINER,
            &azurite,
            "busy-%{+xxxx.ww}",
        )],
    );
    let path = config.write();
    let mut child = Command::new(bin())
        .arg("--config")
        .arg(&path)
        .args(["--log-level", "warn", "once"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn flowlogd once");
    // Half way through the second record. From there the sink answers no `_bulk`, so the kill
    // lands while a chunk of that record is surely unacknowledged, however the run is timed.
    let target = (tuples + tuples / 2) as u64;
    sink.hold_from.store(target, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(120);
    while sink.seen.lock().expect("sink state").documents < target {
        assert!(
            Instant::now() < deadline,
            "the sink never got {target} documents"
        );
        assert!(
            child.try_wait().expect("wait").is_none(),
            "flowlogd once ended before the kill"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    sink.hold_from.store(u64::MAX, Ordering::SeqCst);
    let first: HashMap<String, u32> = sink.seen.lock().expect("sink state").ids.clone();

    // The offset stands at a record end (or the head's), never inside a record.
    let entries = config.registry_entries().await;
    let committed = entries.first().map_or(0, |(_, offset, _)| *offset);
    assert!(
        committed == 0 || committed == 12 || ends.contains(&committed),
        "offset {committed} is not a record end ({ends:?})"
    );

    let run = measure_once(&config, Allocator::Default, Duration::from_secs(300));
    assert!(run.status.success(), "second run failed:\n{}", run.stderr);
    assert_eq!(summary(&run)["bytes_downloaded"], size - committed);
    let seen = sink.seen.lock().expect("sink state");
    assert_eq!(
        seen.ids.len() as u64,
        blob.tuples(),
        "every tuple sent at least once"
    );
    // What the first run had sent again: only documents of records at or after the offset.
    let again: Vec<u64> = seen
        .ids
        .iter()
        .filter(|(id, n)| **n > 1 && first.contains_key(*id))
        .map(|(id, _)| seen.records[id])
        .collect();
    assert!(
        again.iter().all(|record| *record >= committed),
        "a document of a committed record was sent again"
    );
    assert!(
        !again.is_empty(),
        "the kill did not land inside a record: nothing was sent twice"
    );
    eprintln!(
        "MEASURE killed after {} documents, offset {committed}; {} sent again, all of records from there",
        first.values().sum::<u32>(),
        again.len()
    );
}
