//! Chaos harness (issue 9, "Chaos harness"; docs/RELIABILITY.md, "Chaos"): the real
//! `flowlogd run` reads Azurite and writes into a real OpenSearch node while a writer appends
//! blocks to blobs of several hours (the current hour, the previous one and older hours of a
//! first run's `since` backlog), the daemon is SIGKILLed and SIGTERMed at seeded moments, and two
//! proxies inject faults: one between flowlogd and Azurite, one between flowlogd and the node.
//! At the end the index is compared with an independent count of the tuples written, taken from
//! the bytes the writer committed (parsed here with serde_json, not by flowlogd): no tuple lost,
//! none duplicated, and every document missing from the index dead-lettered, by id, for an item
//! the engine proxy answered with a persistent error.
//!
//! Faults, and what each simulates:
//! - storage `503-storm` (a window): every storage GET (blob reads and listings) is answered
//!   `503 ServerBusy`, as an account being throttled answers;
//! - storage `reset` (the next n requests): the request is read, then the connection is reset
//!   without an answer (a load balancer or NAT dropping the flow);
//! - storage `slow` (a window): each response is held back, then trickled out in pieces (a
//!   congested account or network);
//! - storage `truncated` (the next n blob reads): status, headers (with the full
//!   Content-Length) and only part of the body, then a reset: a connection dying in the middle
//!   of a download;
//! - engine `429-storm` (a window): `_bulk` answered 429 `es_rejected_execution_exception` as a
//!   whole, or half its items answered 429, as an overloaded cluster does;
//! - engine `outage` (a window, a ten-minute outage compressed to seconds): open connections
//!   are cut, the proxy's port refuses connections (its listener is closed), then accepts and
//!   resets them until the outage ends (the cluster down, then a load balancer without backends);
//! - engine `lost-response` (the next n `_bulk`): forwarded and applied by the node, then the
//!   connection is reset before the response (a node or proxy dying after the work was done:
//!   the retry must find the documents there, 409);
//! - engine `item-400` / `item-503` (always, by document id): a few documents are never
//!   forwarded and are answered, on every attempt, 400 `mapper_parsing_exception`
//!   (non-retryable: dead-lettered at once) or 503 `unavailable_shards_exception` (retryable:
//!   dead-lettered after `item_retry_timeout`). They are the documents that must end in the
//!   dead-letter file and nowhere else.
//!
//! Each trial: its seed gives a deterministic plan (printed: blobs and hours, configuration,
//! the life of each daemon and how it ends, the fault timeline); a backlog is written; then
//! daemons run one after the other, each ended by SIGKILL or SIGTERM after its planned time,
//! while the writer appends and the faults fire (a window lasts past its planned end until it
//! hit one request, and a fault that found no request during the chaos, say storage faults
//! while the daemon waited out an engine outage, fires on the next one of the last daemon, so
//! every planned fault happens); then the faults stop and one last daemon runs
//! until the index holds everything (or nothing moves for a while), is SIGTERMed, and a `flowlogd
//! once` must find nothing left. Only the plan is deterministic: where a kill lands in flowlogd's
//! work depends on timing, which is the point. (Which blobs may still grow also depends on the
//! minute of the hour a trial starts at: a blob grows only while `finish_after` cannot have
//! finished its hour; everything else in the plan comes from the seed alone.)
//!
//! Environment (all optional; `FLOWLOGD_TEST_` names, which flowlogd ignores, and the harness
//! strips every `FLOWLOGD_` variable from the daemon's environment anyway):
//! - `FLOWLOGD_TEST_CHAOS_SEED` (decimal or 0x hex; default [`CI_SEED`]),
//!   `FLOWLOGD_TEST_CHAOS_TRIALS` (default 1), `FLOWLOGD_TEST_CHAOS_FIRST` (index of the first
//!   trial, to re-run one trial of a longer run: default 0);
//! - `FLOWLOGD_TEST_CHAOS_KILLS`, `FLOWLOGD_TEST_CHAOS_TERMS`: SIGKILLs and SIGTERMs per trial
//!   (defaults 5 and 1: the short variant `cargo test` runs; 8 or more kills make a full-size
//!   trial with more blobs and records);
//! - `FLOWLOGD_TEST_CHAOS_AZURITE_PORT`: use that Azurite (`scripts/chaos.sh` starts one)
//!   instead of starting one here;
//! - `FLOWLOGD_TEST_CHAOS_OUT`: a directory for each trial's plan, timeline, daemon logs,
//!   dead-letter file and verdict, and `report.jsonl` (one line per trial); without it they are
//!   kept only for a failing trial, in the temporary directory (the path is printed).
//!
//! The engine is the shared OpenSearch node (`FLOWLOGD_TEST_SEARCH_URL`, else one started for
//! this binary): the proxy in front of it speaks plain HTTP.
mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Azurite;
use common::flowlogd::{
    Daemon, Es, GrowingBlob, SourceSpec, TestConfig, current_hour, describe, flowlogd,
};
use common::proxies::fault_proxy::{Request, forward, read_request, respond};
use common::rng::Rng;
use flowlogd::generator::GenKind;
use flowlogd::source::upload::BlockBlobWriter;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The seed of the short variant `cargo test` runs.
const CI_SEED: u64 = 0xC4A05;
/// Documents per thousand answered with a persistent 400, and with a persistent 503.
const POISON_400_PER_MILLE: u64 = 5;
const POISON_503_PER_MILLE: u64 = 3;
/// `item_retry_timeout` of the daemons: how long a 503-poisoned document is retried.
const ITEM_RETRY_TIMEOUT: &str = "1s";
/// `shutdown_timeout` of the daemons.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a SIGTERMed daemon may take beyond `shutdown_timeout` before it counts as hung.
const TERM_GRACE: Duration = Duration::from_secs(60);
/// The last daemon stops waiting when nothing moved for this long (or after FINAL_LIMIT).
const FINAL_STALL: Duration = Duration::from_secs(45);
const FINAL_LIMIT: Duration = Duration::from_secs(240);

// ---------------------------------------------------------------------------------------------
// Settings and the seeded plan.

#[derive(Debug, Clone)]
struct Settings {
    seed: u64,
    first: u64,
    trials: u64,
    kills: u64,
    terms: u64,
    azurite_port: Option<u16>,
    out: Option<PathBuf>,
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    if v.is_empty() {
        return None;
    }
    let parsed = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    };
    Some(parsed.unwrap_or_else(|| panic!("{name}={v:?} is not a number")))
}

impl Settings {
    fn from_env() -> Settings {
        let kills = env_u64("FLOWLOGD_TEST_CHAOS_KILLS").unwrap_or(5);
        Settings {
            seed: env_u64("FLOWLOGD_TEST_CHAOS_SEED").unwrap_or(CI_SEED),
            first: env_u64("FLOWLOGD_TEST_CHAOS_FIRST").unwrap_or(0),
            trials: env_u64("FLOWLOGD_TEST_CHAOS_TRIALS").unwrap_or(1),
            kills,
            terms: env_u64("FLOWLOGD_TEST_CHAOS_TERMS").unwrap_or(1.max(kills / 6)),
            azurite_port: env_u64("FLOWLOGD_TEST_CHAOS_AZURITE_PORT").map(|p| p as u16),
            out: std::env::var_os("FLOWLOGD_TEST_CHAOS_OUT")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        }
    }

    /// The short variant: fewer, smaller blobs.
    fn short(&self) -> bool {
        self.kills < 8
    }
}

/// The seed of trial `trial` of a run seeded `seed`.
fn trial_seed(seed: u64, trial: u64) -> u64 {
    let mut r = Rng::new(seed ^ (trial + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
    r.next()
}

/// Every fault the proxies inject, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Fault {
    Storage503Storm,
    StorageReset,
    StorageSlow,
    StorageTruncated,
    Engine429Storm,
    EngineOutage,
    EngineLostResponse,
    Item400,
    Item503,
}

const FAULTS: [Fault; 9] = [
    Fault::Storage503Storm,
    Fault::StorageReset,
    Fault::StorageSlow,
    Fault::StorageTruncated,
    Fault::Engine429Storm,
    Fault::EngineOutage,
    Fault::EngineLostResponse,
    Fault::Item400,
    Fault::Item503,
];

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Storage503Storm => "storage-503-storm",
            Fault::StorageReset => "storage-reset",
            Fault::StorageSlow => "storage-slow",
            Fault::StorageTruncated => "storage-truncated",
            Fault::Engine429Storm => "engine-429-storm",
            Fault::EngineOutage => "engine-outage",
            Fault::EngineLostResponse => "engine-lost-response",
            Fault::Item400 => "item-400",
            Fault::Item503 => "item-503",
        }
    }

    /// What a count of this fault counts.
    fn unit(self) -> &'static str {
        match self {
            Fault::Storage503Storm => "requests answered 503",
            Fault::StorageReset => "connections reset",
            Fault::StorageSlow => "responses slowed",
            Fault::StorageTruncated => "responses cut",
            Fault::Engine429Storm => "bulk requests answered 429 (whole or items)",
            Fault::EngineOutage => "connections cut, reset or requests dropped",
            Fault::EngineLostResponse => "responses dropped after indexing",
            Fault::Item400 => "item answers (400)",
            Fault::Item503 => "item answers (503)",
        }
    }
}

/// One blob of a trial.
#[derive(Debug, Clone)]
struct BlobPlan {
    /// 0: the VNet source, 1: the NSG source.
    source: usize,
    kind: GenKind,
    gen_seed: u64,
    /// Hours before the current one (0: current hour).
    hours_back: i64,
    records: usize,
    tuples: usize,
    /// Records written before the first daemon starts. At least one for a blob of an hour
    /// before the current one: Azure creates a blob during its own hour, and flowlogd lists
    /// an hour older than the previous one only on a first run (or after downtime) and while
    /// it holds an unfinished blob of it, so a blob first appearing there later is never
    /// listed (the listing policy of docs/DESIGN.md; seed 0x5eed trial 11 of the first full
    /// run lost such a blob, created in hour -4 after the first listing).
    backlog: usize,
    /// Whether the writer appends to it during the chaos: only while its hour can still be
    /// listed (`finish_after` after the hour's end must be later than the end of the trial;
    /// appending to a blob flowlogd may already have finished would be a loss by policy).
    growable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    Kill,
    Term,
}

/// One daemon of the chaos phase: runs `run_ms`, then gets `signal`; the next starts `gap_ms`
/// after it is gone.
#[derive(Debug, Clone, Copy)]
struct Life {
    run_ms: u64,
    signal: Signal,
    gap_ms: u64,
}

#[derive(Debug, Clone, Copy)]
struct FaultEvent {
    at_ms: u64,
    fault: Fault,
    /// Windows (storms, slow, outage): how long.
    dur_ms: u64,
    /// Armed faults (resets, truncations, lost responses): how many requests.
    count: u64,
    /// Slow responses: the delay of each.
    delay_ms: u64,
}

#[derive(Debug, Clone)]
struct Plan {
    trial: u64,
    seed: u64,
    blobs: Vec<BlobPlan>,
    lives: Vec<Life>,
    faults: Vec<FaultEvent>,
    finish_after: &'static str,
    interval: &'static str,
    batch_max_docs: u64,
    /// Also the size at which a read cuts a chunk (`min(batch_max_bytes, 4 MiB)`): 8 KiB cuts
    /// after a few documents, so chunks end inside records where the reader allows it.
    batch_max_bytes: u64,
    max_in_flight: u64,
    read_concurrency: u64,
    storage_max_tries: u64,
    planned_ms: u64,
    writer_seed: u64,
    proxy_seed: u64,
}

fn duration_ms(text: &str) -> u64 {
    let (n, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap());
    let n: u64 = n.parse().unwrap();
    n * match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => panic!("unit of {text}"),
    }
}

impl Plan {
    fn new(settings: &Settings, trial: u64, now_ms: i64) -> Plan {
        let seed = trial_seed(settings.seed, trial);
        let mut rng = Rng::new(seed);
        let short = settings.short();

        // Lives: every signal once per planned kill or term, in seeded order.
        let mut signals: Vec<Signal> = (0..settings.kills)
            .map(|_| Signal::Kill)
            .chain((0..settings.terms).map(|_| Signal::Term))
            .collect();
        for i in (1..signals.len()).rev() {
            signals.swap(i, rng.range(0, i as u64) as usize);
        }
        let lives: Vec<Life> = signals
            .into_iter()
            .map(|signal| {
                let run_ms = match (signal, rng.range(0, 99)) {
                    (Signal::Term, _) => rng.range(800, 5000),
                    // During startup: config, registry, template setup, the first listing.
                    (Signal::Kill, 0..15) => rng.range(30, 400),
                    (Signal::Kill, 15..75) => rng.range(400, 2500),
                    (Signal::Kill, _) => rng.range(2500, 6000),
                };
                Life {
                    run_ms,
                    signal,
                    gap_ms: rng.range(0, 300),
                }
            })
            .collect();
        let planned_ms: u64 = lives
            .iter()
            .map(|l| l.run_ms + l.gap_ms + if l.signal == Signal::Term { 1000 } else { 0 })
            .sum();

        let finish_after = rng.pick(&["30m", "90m", "5h"]);
        let finish_ms = duration_ms(finish_after) as i64;
        // Hours of the blobs: the current and previous hour, and older hours of the backlog.
        let hours: &[i64] = if short {
            &[0, 0, 1, 1, 2, 3]
        } else {
            &[0, 0, 0, 1, 1, 1, 2, 2, 3, 4]
        };
        let this_hour_ms = current_hour() * 1000;
        let trial_end_ms = now_ms + planned_ms as i64 + 15 * 60_000;
        let blobs = hours
            .iter()
            .map(|&hours_back| {
                let kind = rng.pick(&[GenKind::Vnet, GenKind::Vnet, GenKind::Nsg2, GenKind::Nsg1]);
                let records = if short { 30 } else { 60 };
                let hour_end_ms = this_hour_ms - (hours_back - 1) * 3_600_000;
                let growable = hour_end_ms + finish_ms > trial_end_ms;
                // Drawn either way, so that the clock changes nothing else in the plan.
                let backlog = rng.range(0, records as u64 / 2) as usize;
                BlobPlan {
                    source: usize::from(kind != GenKind::Vnet),
                    kind,
                    gen_seed: rng.next() >> 16,
                    hours_back,
                    records,
                    tuples: if short {
                        rng.range(5, 12)
                    } else {
                        rng.range(5, 20)
                    } as usize,
                    backlog: match (growable, hours_back) {
                        (false, _) => records,
                        (true, 0) => backlog,
                        (true, _) => backlog.max(1),
                    },
                    growable,
                }
            })
            .collect();

        // Faults: each kind at least once, more in longer trials, at random moments of the
        // first 80% of the chaos (armed faults fire on the next matching request).
        let per_kind = (planned_ms / 12_000).max(1);
        let mut faults = Vec::new();
        for fault in &FAULTS[..7] {
            for _ in 0..per_kind {
                let at_ms = rng.range(0, planned_ms * 8 / 10);
                let (dur_ms, count, delay_ms) = match fault {
                    Fault::Storage503Storm => (rng.range(1500, 4000), 0, 0),
                    Fault::StorageSlow => (rng.range(1500, 4000), 0, rng.range(300, 2000)),
                    Fault::Engine429Storm => (rng.range(1500, 4000), 0, 0),
                    Fault::EngineOutage => (rng.range(2000, 8000), 0, 0),
                    _ => (0, rng.range(1, 3), 0),
                };
                faults.push(FaultEvent {
                    at_ms,
                    fault: *fault,
                    dur_ms,
                    count,
                    delay_ms,
                });
            }
        }
        faults.sort_by_key(|f| f.at_ms);

        Plan {
            trial,
            seed,
            blobs,
            lives,
            faults,
            finish_after,
            interval: rng.pick(&["300ms", "1s"]),
            batch_max_docs: rng.pick(&[10, 25, 100, 500]),
            max_in_flight: rng.range(1, 4),
            read_concurrency: rng.pick(&[1, 2, 4]),
            storage_max_tries: rng.range(1, 3),
            planned_ms,
            writer_seed: rng.next(),
            proxy_seed: rng.next(),
            // Drawn last, so the plans of the earlier runs in docs/RELIABILITY.md keep the
            // rest of their draws.
            batch_max_bytes: rng.pick(&[8192, 65536, 65536]),
        }
    }

    fn describe(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "trial {} (trial seed {:#x}): about {:.1} s of chaos; daemon: interval {}, \
             finish_after {}, read_concurrency {}, batch_max_docs {}, batch_max_bytes {}, \
             max_in_flight {}, \
             storage max_tries {}, item_retry_timeout {ITEM_RETRY_TIMEOUT}, since 8h",
            self.trial,
            self.seed,
            self.planned_ms as f64 / 1000.0,
            self.interval,
            self.finish_after,
            self.read_concurrency,
            self.batch_max_docs,
            self.batch_max_bytes,
            self.max_in_flight,
            self.storage_max_tries,
        );
        for (i, b) in self.blobs.iter().enumerate() {
            let _ = writeln!(
                s,
                "  blob {i}: {:?} hour -{}h, {} records x {} tuples, {} written before the first start{}",
                b.kind,
                b.hours_back,
                b.records,
                b.tuples,
                b.backlog,
                if b.growable {
                    ", grows during the chaos"
                } else {
                    " (complete: its hour may be finished)"
                }
            );
        }
        let lives: Vec<String> = self
            .lives
            .iter()
            .map(|l| {
                format!(
                    "{}@{}ms+{}",
                    if l.signal == Signal::Kill {
                        "KILL"
                    } else {
                        "TERM"
                    },
                    l.run_ms,
                    l.gap_ms
                )
            })
            .collect();
        let _ = writeln!(s, "  lives: {}", lives.join(" "));
        for f in &self.faults {
            let what = match f.fault {
                Fault::StorageSlow => {
                    format!("for {} ms, {} ms per response", f.dur_ms, f.delay_ms)
                }
                _ if f.dur_ms > 0 => format!("for {} ms", f.dur_ms),
                _ => format!("next {} requests", f.count),
            };
            let _ = writeln!(
                s,
                "  fault at +{:.1}s: {} {what}",
                f.at_ms as f64 / 1000.0,
                f.fault.name()
            );
        }
        let _ = write!(
            s,
            "  persistent item errors: {POISON_400_PER_MILLE}‰ of ids 400, {POISON_503_PER_MILLE}‰ 503"
        );
        s
    }
}

// ---------------------------------------------------------------------------------------------
// Fault state shared by the proxies and the driver.

/// A fault that lasts a while: active until `until`, and past it (up to `cap`) until it has
/// hit at least one request, so that a planned window is never empty by bad luck.
#[derive(Default)]
struct Window(Mutex<Option<(Instant, Instant, u64)>>);

impl Window {
    fn open(&self, dur: Duration, cap: Duration) {
        let now = Instant::now();
        let mut w = self.0.lock().unwrap();
        *w = Some(match *w {
            Some((until, old_cap, hits)) if until > now => {
                (until.max(now + dur), old_cap.max(now + cap), hits)
            }
            _ => (now + dur, now + cap.max(dur), 0),
        });
    }

    /// Ends the window when it hit something; one that never did (no request came while it
    /// was open: the daemon was, say, waiting out an engine outage) stays open for the next
    /// matching request, so every planned fault happens at least once.
    fn finish(&self) {
        let now = Instant::now();
        let mut w = self.0.lock().unwrap();
        *w = match *w {
            Some((_, _, 0)) => Some((now, now + Duration::from_secs(60), 0)),
            _ => None,
        };
    }

    /// Counts a hit that happened without [`Window::hit`] (connections cut when it opened).
    fn record(&self) {
        if let Some((_, _, hits)) = self.0.lock().unwrap().as_mut() {
            *hits += 1;
        }
    }

    /// Whether a request arriving now is hit (counted as a hit).
    fn hit(&self) -> bool {
        let now = Instant::now();
        let mut w = self.0.lock().unwrap();
        match w.as_mut() {
            Some((until, cap, hits)) if now < *until || (*hits == 0 && now < *cap) => {
                *hits += 1;
                true
            }
            _ => false,
        }
    }
}

/// A fault for the next `n` matching requests.
#[derive(Default)]
struct Armed(AtomicU64);

impl Armed {
    fn arm(&self, n: u64) {
        self.0.fetch_add(n, SeqCst);
    }

    fn take(&self) -> bool {
        self.0
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// Faults injected, by kind.
#[derive(Default)]
struct Counts(Mutex<BTreeMap<Fault, u64>>);

impl Counts {
    fn add(&self, fault: Fault) {
        *self.0.lock().unwrap().entry(fault).or_default() += 1;
    }

    fn snapshot(&self) -> BTreeMap<Fault, u64> {
        self.0.lock().unwrap().clone()
    }
}

/// Resets the connection (RST, not FIN): what a peer dying or a middlebox dropping it does.
fn reset(sock: TcpStream) {
    let _ = sock.set_zero_linger();
    drop(sock);
}

// ---------------------------------------------------------------------------------------------
// The storage proxy: between flowlogd and Azurite, one request per connection (HTTP/1.0
// upstream, so a response ends where the upstream connection does).

struct StorageFaults {
    azurite_port: u16,
    storm503: Window,
    slow: Window,
    slow_delay_ms: AtomicU64,
    resets: Armed,
    truncations: Armed,
    counts: Arc<Counts>,
    rng: Mutex<Rng>,
}

impl StorageFaults {
    /// The end of the chaos: windows close once they hit something; armed faults stay armed
    /// (each fires once more at most), so every planned fault happens.
    fn calm(&self) {
        self.storm503.finish();
        self.slow.finish();
    }
}

struct StorageProxy {
    endpoint: String,
    faults: Arc<StorageFaults>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StorageProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StorageProxy {
    async fn start(azurite_port: u16, seed: u64, counts: Arc<Counts>) -> StorageProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let endpoint = format!(
            "http://{}/{}",
            listener.local_addr().expect("proxy address"),
            Azurite::ACCOUNT
        );
        let faults = Arc::new(StorageFaults {
            azurite_port,
            storm503: Window::default(),
            slow: Window::default(),
            slow_delay_ms: AtomicU64::new(0),
            resets: Armed::default(),
            truncations: Armed::default(),
            counts,
            rng: Mutex::new(Rng::new(seed)),
        });
        let f = faults.clone();
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(storage_connection(sock, f.clone()));
            }
        });
        StorageProxy {
            endpoint,
            faults,
            task,
        }
    }
}

async fn storage_connection(mut sock: TcpStream, faults: Arc<StorageFaults>) {
    let mut buf = Vec::new();
    let Some(req) = read_request(&mut sock, &mut buf).await else {
        return;
    };
    let get = req.method == "GET";
    if get && faults.storm503.hit() {
        faults.counts.add(Fault::Storage503Storm);
        let body = "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>ServerBusy</Code><Message>injected by the chaos storage proxy</Message></Error>";
        let response = format!(
            "HTTP/1.1 503 Server Busy\r\ncontent-type: application/xml\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let _ = sock.write_all(response.as_bytes()).await;
        return;
    }
    if faults.resets.take() {
        faults.counts.add(Fault::StorageReset);
        reset(sock);
        return;
    }
    let Some(response) = azurite(faults.azurite_port, &req).await else {
        return;
    };
    let head_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(response.len(), |i| i + 4);
    let (head, body) = response.split_at(head_end);
    let ok = head.starts_with(b"HTTP/1.1 2") || head.starts_with(b"HTTP/1.0 2");
    // Blob reads only: a cut listing fails to parse, a cut read must not be taken for data.
    let read = get && !req.target.contains("comp=");
    if read && ok && body.len() >= 2 && faults.truncations.take() {
        faults.counts.add(Fault::StorageTruncated);
        let (cut, rst) = {
            let mut rng = faults.rng.lock().unwrap();
            (
                rng.range(0, body.len() as u64 - 1) as usize,
                rng.range(0, 1) == 0,
            )
        };
        let _ = sock.write_all(head).await;
        let _ = sock.write_all(&body[..cut]).await;
        let _ = sock.flush().await;
        // Half the time a reset, half the time an orderly close: short by Content-Length either way.
        if rst {
            reset(sock);
        }
        return;
    }
    if faults.slow.hit() {
        faults.counts.add(Fault::StorageSlow);
        let delay = Duration::from_millis(faults.slow_delay_ms.load(SeqCst));
        tokio::time::sleep(delay / 2).await;
        let _ = sock.write_all(head).await;
        let pieces = 4;
        let step = body.len().div_ceil(pieces).max(1);
        for piece in body.chunks(step) {
            tokio::time::sleep(delay / (2 * pieces as u32)).await;
            if sock.write_all(piece).await.is_err() {
                return;
            }
        }
        return;
    }
    let _ = sock.write_all(&response).await;
}

/// Relays one request to Azurite as HTTP/1.0 and returns the raw response.
async fn azurite(port: u16, req: &Request) -> Option<Vec<u8>> {
    let mut up = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let mut head = format!("{} {} HTTP/1.0\r\n", req.method, req.target);
    for (k, v) in &req.headers {
        if !matches!(k.as_str(), "connection" | "keep-alive") {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str("\r\n");
    up.write_all(head.as_bytes()).await.ok()?;
    up.write_all(&req.body).await.ok()?;
    let mut response = Vec::new();
    up.read_to_end(&mut response).await.ok()?;
    Some(response)
}

// ---------------------------------------------------------------------------------------------
// The engine proxy: between flowlogd and the node.

/// Which documents get a persistent item error: a hash of the id, salted per trial.
#[derive(Clone, Copy)]
struct Poison {
    salt: u64,
}

impl Poison {
    fn of(self, id: &str) -> Option<u16> {
        // FNV-1a, then SplitMix64 to spread it.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in id.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        let m = Rng::new(h ^ self.salt).next() % 1000;
        if m < POISON_400_PER_MILLE {
            Some(400)
        } else if m < POISON_400_PER_MILLE + POISON_503_PER_MILLE {
            Some(503)
        } else {
            None
        }
    }
}

#[derive(Default, Debug, Clone, Copy)]
struct EngineTraffic {
    bulk_requests: u64,
    created: u64,
    /// Items the node answered 409: documents indexed before, sent again (replays).
    replayed: u64,
    item_429: u64,
}

struct EngineFaults {
    upstream: String,
    port: u16,
    storm429: Window,
    outage: Window,
    lost: Armed,
    poison: Poison,
    /// Set while the listener is closed (connections refused).
    refuse: watch::Sender<bool>,
    /// Bumped to cut every open connection.
    cut: watch::Sender<u64>,
    counts: Arc<Counts>,
    traffic: Mutex<EngineTraffic>,
    /// Every id answered with a persistent error, with the status.
    poisoned: Mutex<HashMap<String, u16>>,
    rng: Mutex<Rng>,
}

impl EngineFaults {
    fn begin_outage(self: &Arc<Self>, dur: Duration) {
        self.outage.open(dur, dur + Duration::from_secs(3));
        self.cut.send_modify(|g| *g += 1);
        self.refuse.send_replace(true);
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(dur / 2).await;
            me.refuse.send_replace(false);
        });
    }

    /// As [`StorageFaults::calm`]; the listener is back in any case.
    fn calm(&self) {
        self.storm429.finish();
        self.outage.finish();
        self.refuse.send_replace(false);
    }
}

struct EngineProxy {
    url: String,
    faults: Arc<EngineFaults>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EngineProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EngineProxy {
    async fn start(upstream: &str, seed: u64, counts: Arc<Counts>) -> EngineProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let faults = Arc::new(EngineFaults {
            upstream: upstream.to_owned(),
            port,
            storm429: Window::default(),
            outage: Window::default(),
            lost: Armed::default(),
            poison: Poison { salt: seed },
            refuse: watch::channel(false).0,
            cut: watch::channel(0).0,
            counts,
            traffic: Mutex::default(),
            poisoned: Mutex::default(),
            rng: Mutex::new(Rng::new(seed ^ 0x5EED)),
        });
        let task = tokio::spawn(engine_accept(listener, faults.clone()));
        EngineProxy {
            url: format!("http://127.0.0.1:{port}"),
            faults,
            task,
        }
    }
}

/// Accepts connections; while refusing, the listener is closed (connections are refused) and
/// bound again on the same port afterwards; during the rest of an outage, connections are
/// accepted and reset.
async fn engine_accept(first: TcpListener, faults: Arc<EngineFaults>) {
    let mut listener = Some(first);
    let mut refuse = faults.refuse.subscribe();
    loop {
        match &listener {
            Some(l) => {
                tokio::select! {
                    accepted = l.accept() => {
                        let Ok((sock, _)) = accepted else { continue };
                        if faults.outage.hit() {
                            faults.counts.add(Fault::EngineOutage);
                            reset(sock);
                        } else {
                            tokio::spawn(engine_connection(sock, faults.clone()));
                        }
                    }
                    changed = refuse.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        if *refuse.borrow_and_update() {
                            listener = None;
                        }
                    }
                }
            }
            None => {
                while *refuse.borrow_and_update() {
                    if refuse.changed().await.is_err() {
                        return;
                    }
                }
                let deadline = Instant::now() + Duration::from_secs(30);
                listener = loop {
                    match TcpListener::bind(("127.0.0.1", faults.port)).await {
                        Ok(l) => break Some(l),
                        Err(e) if Instant::now() < deadline => {
                            eprintln!("chaos: rebinding the engine proxy port: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(e) => panic!("cannot bind the engine proxy port again: {e}"),
                    }
                };
            }
        }
    }
}

enum Reply {
    Respond(u16, Vec<u8>),
    Reset,
}

async fn engine_connection(mut sock: TcpStream, faults: Arc<EngineFaults>) {
    let mut cut = faults.cut.subscribe();
    let mut buf = Vec::new();
    loop {
        let req = tokio::select! {
            r = read_request(&mut sock, &mut buf) => match r {
                Some(r) => r,
                None => return,
            },
            _ = cut.changed() => {
                faults.outage.record();
                faults.counts.add(Fault::EngineOutage);
                reset(sock);
                return;
            }
        };
        let reply = tokio::select! {
            r = engine_reply(&faults, &req) => r,
            _ = cut.changed() => {
                faults.outage.record();
                faults.counts.add(Fault::EngineOutage);
                reset(sock);
                return;
            }
        };
        match reply {
            Reply::Respond(status, body) => {
                if !respond(&mut sock, &req.method, status, &body).await {
                    return;
                }
            }
            Reply::Reset => {
                reset(sock);
                return;
            }
        }
    }
}

fn error_body(status: u16, kind: &str) -> Vec<u8> {
    json!({"error": {"type": kind, "reason": "injected by the chaos engine proxy"}, "status": status})
        .to_string()
        .into_bytes()
}

fn item_error(status: u16, kind: &str) -> Value {
    json!({"create": {"status": status, "error": {"type": kind, "reason": "injected by the chaos engine proxy"}}})
}

/// What becomes of one item of a `_bulk`.
enum ItemFate {
    Forward,
    Answer(Value),
}

async fn engine_reply(faults: &Arc<EngineFaults>, req: &Request) -> Reply {
    if faults.outage.hit() {
        faults.counts.add(Fault::EngineOutage);
        return Reply::Reset;
    }
    if !req.target.starts_with("/_bulk") {
        return match forward(&faults.upstream, req, &req.body).await {
            Some((status, body)) => Reply::Respond(status, body),
            None => Reply::Reset,
        };
    }
    faults.traffic.lock().unwrap().bulk_requests += 1;
    let text = String::from_utf8_lossy(&req.body).into_owned();
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    let pairs: Vec<(&str, &str)> = lines.chunks(2).map(|p| (p[0], p[1])).collect();
    let mut partial_429 = false;
    if faults.storm429.hit() {
        faults.counts.add(Fault::Engine429Storm);
        if faults.rng.lock().unwrap().range(0, 2) > 0 {
            return Reply::Respond(429, error_body(429, "es_rejected_execution_exception"));
        }
        partial_429 = true;
    }
    let mut fates = Vec::with_capacity(pairs.len());
    for (i, (action, _)) in pairs.iter().enumerate() {
        let id = serde_json::from_str::<Value>(action)
            .ok()
            .and_then(|a| a["create"]["_id"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let fate = match faults.poison.of(&id) {
            Some(status) => {
                faults.poisoned.lock().unwrap().insert(id, status);
                if status == 400 {
                    faults.counts.add(Fault::Item400);
                    ItemFate::Answer(item_error(400, "mapper_parsing_exception"))
                } else {
                    faults.counts.add(Fault::Item503);
                    ItemFate::Answer(item_error(503, "unavailable_shards_exception"))
                }
            }
            None if partial_429 && i % 2 == 1 => {
                faults.traffic.lock().unwrap().item_429 += 1;
                ItemFate::Answer(item_error(429, "es_rejected_execution_exception"))
            }
            None => ItemFate::Forward,
        };
        fates.push(fate);
    }
    let mut kept = String::new();
    for ((action, doc), fate) in pairs.iter().zip(&fates) {
        if matches!(fate, ItemFate::Forward) {
            kept.push_str(action);
            kept.push('\n');
            kept.push_str(doc);
            kept.push('\n');
        }
    }
    let mut forwarded = Vec::new().into_iter();
    if !kept.is_empty() {
        let Some((status, body)) = forward(&faults.upstream, req, kept.as_bytes()).await else {
            return Reply::Reset;
        };
        if faults.lost.take() {
            faults.counts.add(Fault::EngineLostResponse);
            return Reply::Reset;
        }
        if status != 200 {
            // The node refused the request as a whole: pass that on (everything is retried).
            return Reply::Respond(status, body);
        }
        let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let items = parsed["items"].as_array().cloned().unwrap_or_default();
        let expected = fates
            .iter()
            .filter(|f| matches!(f, ItemFate::Forward))
            .count();
        if items.len() != expected {
            return Reply::Respond(502, error_body(502, "chaos_proxy_item_count_mismatch"));
        }
        let mut t = faults.traffic.lock().unwrap();
        for item in &items {
            match item["create"]["status"].as_u64() {
                Some(409) => t.replayed += 1,
                Some(200..=299) => t.created += 1,
                _ => {}
            }
        }
        forwarded = items.into_iter();
    }
    let items: Vec<Value> = fates
        .into_iter()
        .map(|f| match f {
            ItemFate::Forward => forwarded
                .next()
                .expect("one upstream item per forwarded item"),
            ItemFate::Answer(v) => v,
        })
        .collect();
    let errors = items
        .iter()
        .any(|i| i["create"]["status"].as_u64().is_none_or(|s| s >= 300));
    Reply::Respond(
        200,
        json!({"took": 1, "errors": errors, "items": items})
            .to_string()
            .into_bytes(),
    )
}

// ---------------------------------------------------------------------------------------------
// Storage: Azurite of this test, or the one `scripts/chaos.sh` started.

enum Storage {
    Own(Azurite),
    External(u16),
}

impl Storage {
    fn port(&self) -> u16 {
        match self {
            Storage::Own(a) => a.port(),
            Storage::External(p) => *p,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{}", self.port(), Azurite::ACCOUNT)
    }
}

/// A writer of `container` straight to Azurite (never through the proxy). Creates it.
async fn writer_for(storage: &Storage, container: &str) -> BlockBlobWriter {
    common::flowlogd::container_at(storage.endpoint(), container)
        .await
        .1
}

struct WrittenBlob {
    plan: BlobPlan,
    blob: GrowingBlob,
}

/// Appends records to the growable blobs, spread over the planned chaos, until `stop`; gives
/// the blobs and their writers back.
async fn write_during_chaos(
    mut blobs: Vec<WrittenBlob>,
    writers: Vec<BlockBlobWriter>,
    seed: u64,
    planned: Duration,
    stop: Arc<AtomicBool>,
) -> (Vec<WrittenBlob>, Vec<BlockBlobWriter>) {
    let mut rng = Rng::new(seed);
    let remaining: usize = blobs
        .iter()
        .filter(|b| b.plan.growable)
        .map(|b| b.blob.remaining())
        .sum();
    // Two records per append on average, the appends spread over 90% of the chaos.
    let pause_ms = (planned.as_millis() as u64 * 9 / 10) / (remaining as u64 / 2).max(1);
    let started = Instant::now();
    while !stop.load(SeqCst) && started.elapsed() < planned {
        let open: Vec<usize> = (0..blobs.len())
            .filter(|&i| blobs[i].plan.growable && blobs[i].blob.remaining() > 0)
            .collect();
        if open.is_empty() {
            break;
        }
        let i = rng.pick(&open);
        let n = rng.range(1, 3) as usize;
        let b = &mut blobs[i];
        b.blob.append(&writers[b.plan.source], n).await;
        tokio::time::sleep(Duration::from_millis(
            rng.range(pause_ms / 2, pause_ms * 3 / 2),
        ))
        .await;
    }
    (blobs, writers)
}

/// Sets off each planned fault at its moment.
async fn drive_faults(
    events: Vec<FaultEvent>,
    storage: Arc<StorageFaults>,
    engine: Arc<EngineFaults>,
    t0: Instant,
    timeline: Arc<Mutex<Vec<String>>>,
) {
    for e in events {
        tokio::time::sleep_until((t0 + Duration::from_millis(e.at_ms)).into()).await;
        let dur = Duration::from_millis(e.dur_ms);
        // A window stays open past its planned end until it hit something, at most this long.
        let cap = dur * 3 + Duration::from_secs(3);
        match e.fault {
            Fault::Storage503Storm => storage.storm503.open(dur, cap),
            Fault::StorageSlow => {
                storage.slow_delay_ms.store(e.delay_ms, SeqCst);
                storage.slow.open(dur, cap);
            }
            Fault::StorageReset => storage.resets.arm(e.count),
            Fault::StorageTruncated => storage.truncations.arm(e.count),
            Fault::Engine429Storm => engine.storm429.open(dur, cap),
            Fault::EngineOutage => engine.begin_outage(dur),
            Fault::EngineLostResponse => engine.lost.arm(e.count),
            Fault::Item400 | Fault::Item503 => {}
        }
        note(
            &timeline,
            t0,
            format!(
                "fault {} {}",
                e.fault.name(),
                if e.dur_ms > 0 {
                    format!("for {} ms", e.dur_ms)
                } else {
                    format!("x{}", e.count)
                }
            ),
        );
    }
}

fn note(timeline: &Mutex<Vec<String>>, t0: Instant, what: String) {
    let line = format!("+{:7.2}s {what}", t0.elapsed().as_secs_f64());
    eprintln!("chaos: {line}");
    timeline.lock().unwrap().push(line);
}

// ---------------------------------------------------------------------------------------------
// The independent count: tuples as the writer wrote them, documents as the index holds them.

/// What identifies a tuple in a blob: the blob's id, record offset, time (ms) and the two
/// endpoints. Built from the raw tuple string on one side and from the document on the other.
fn tuple_key(blob_id: &str, offset: u64, tuple: &str) -> String {
    let f: Vec<&str> = tuple.split(',').collect();
    let ts: i64 = f[0].parse().expect("tuple time");
    // NSG tuples count seconds, VNet tuples milliseconds.
    let ts_ms = if ts < 100_000_000_000 { ts * 1000 } else { ts };
    let port = |s: &str| s.parse::<u64>().unwrap_or(0);
    format!(
        "{blob_id}|{offset}|{ts_ms}|{}:{}>{}:{}",
        f[1],
        port(f[3]),
        f[2],
        port(f[4])
    )
}

fn document_key(doc: &Value) -> String {
    let ts = doc["@timestamp"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map_or(-1, |t| t.timestamp_millis());
    format!(
        "{}|{}|{ts}|{}:{}>{}:{}",
        doc["azure"]["flowlog"]["blob_id"].as_str().unwrap_or("?"),
        doc["log"]["offset"].as_u64().unwrap_or(u64::MAX),
        doc["source"]["ip"].as_str().unwrap_or("?"),
        doc["source"]["port"].as_u64().unwrap_or(0),
        doc["destination"]["ip"].as_str().unwrap_or("?"),
        doc["destination"]["port"].as_u64().unwrap_or(0),
    )
}

/// Every string in every `flowTuples` array of a record, in order.
fn tuples_of(record: &Value, out: &mut Vec<String>) {
    match record {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "flowTuples" {
                    for t in v.as_array().expect("flowTuples is an array") {
                        out.push(t.as_str().expect("a tuple is a string").to_owned());
                    }
                } else {
                    tuples_of(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| tuples_of(v, out)),
        _ => {}
    }
}

/// The keys of every tuple committed to `blob` so far.
fn expected_keys(container: &str, blob: &GrowingBlob, out: &mut Vec<String>) {
    // The blob id the documents carry, computed here by the library's function.
    let id = flowlogd::config::document::BlobNames::new(container, blob.name()).id;
    let blocks = &blob.blob.blocks;
    let mut at = blocks[0].len() as u64;
    for i in 0..blob.written {
        let block = &blocks[1 + i];
        let (bytes, offset) = if i == 0 {
            (&block[..], at)
        } else {
            (&block[1..], at + 1)
        };
        let record: Value = serde_json::from_slice(bytes).expect("a written record is JSON");
        let mut tuples = Vec::new();
        tuples_of(&record, &mut tuples);
        assert_eq!(tuples.len(), blob.tuples_per_record as usize);
        out.extend(tuples.iter().map(|t| tuple_key(&id, offset, t)));
        at += block.len() as u64;
    }
}

#[derive(Debug, Default)]
struct Verdict {
    written: u64,
    indexed: u64,
    /// Distinct ids in the dead-letter file (`rejected` lines).
    dead_lettered: u64,
    dead_letter_lines: u64,
    /// Tuples written that are neither indexed nor dead-lettered.
    lost: Vec<String>,
    /// Documents (indexed or dead-lettered) beyond what was written: the same tuple twice,
    /// or a document no written tuple explains.
    duplicated: Vec<String>,
    /// Dead-lettered ids the engine proxy never gave a persistent error.
    unaccounted_dead_letters: Vec<String>,
    /// Ids given a persistent error that are not in the dead-letter file.
    poisoned_not_dead_lettered: Vec<String>,
    /// `problem` lines: input that did not decode (there is none in generated data).
    problems: Vec<String>,
}

impl Verdict {
    fn clean(&self) -> bool {
        self.lost.is_empty()
            && self.duplicated.is_empty()
            && self.unaccounted_dead_letters.is_empty()
            && self.poisoned_not_dead_lettered.is_empty()
            && self.problems.is_empty()
    }
}

async fn verify(
    es: &Es,
    expected: &[String],
    dead_letter: &Path,
    poisoned: &HashMap<String, u16>,
) -> Verdict {
    let docs = es.scan(&es.all()).await;
    let mut balance: HashMap<&str, i64> = HashMap::new();
    for k in expected {
        *balance.entry(k).or_default() += 1;
    }
    let doc_keys: Vec<String> = docs.iter().map(|d| document_key(&d.source)).collect();
    let mut v = Verdict {
        written: expected.len() as u64,
        indexed: docs.len() as u64,
        ..Verdict::default()
    };
    let mut indexed_ids = HashSet::new();
    for (d, k) in docs.iter().zip(&doc_keys) {
        if !indexed_ids.insert(d.id.as_str()) {
            v.duplicated
                .push(format!("id {} twice in the index ({k})", d.id));
        }
        *balance.entry(k).or_default() -= 1;
    }
    let text = std::fs::read_to_string(dead_letter).unwrap_or_default();
    let mut dead_ids: HashMap<String, String> = HashMap::new();
    for line in text.lines() {
        v.dead_letter_lines += 1;
        let l: Value = serde_json::from_str(line).expect("dead-letter line is JSON");
        if l["kind"] == "rejected" {
            let id = l["id"].as_str().unwrap_or_default().to_owned();
            dead_ids
                .entry(id)
                .or_insert_with(|| document_key(&l["document"]));
        } else {
            v.problems.push(line.to_owned());
        }
    }
    v.dead_lettered = dead_ids.len() as u64;
    let dead_keys: Vec<(String, String)> = dead_ids.into_iter().collect();
    for (id, k) in &dead_keys {
        *balance.entry(k).or_default() -= 1;
        if indexed_ids.contains(id.as_str()) {
            v.duplicated
                .push(format!("id {id} both indexed and dead-lettered ({k})"));
        }
        if !poisoned.contains_key(id) {
            v.unaccounted_dead_letters.push(format!("{id} ({k})"));
        }
    }
    let dead: HashSet<&str> = dead_keys.iter().map(|(id, _)| id.as_str()).collect();
    for (id, status) in poisoned {
        if !dead.contains(id.as_str()) {
            v.poisoned_not_dead_lettered
                .push(format!("{id} (persistent {status})"));
        }
    }
    let mut balance: Vec<(&str, i64)> = balance.into_iter().filter(|(_, n)| *n != 0).collect();
    balance.sort();
    for (k, n) in balance {
        if n > 0 {
            v.lost.extend((0..n).map(|_| k.to_owned()));
        } else {
            v.duplicated
                .extend((0..-n).map(|_| format!("extra document {k}")));
        }
    }
    v
}

/// `path|offset|…` keys grouped by blob: how many tuples, in how many records, between which
/// record offsets.
fn by_blob(what: &str, keys: &[String]) -> Vec<String> {
    let mut blobs: BTreeMap<&str, BTreeMap<u64, u64>> = BTreeMap::new();
    for k in keys {
        let mut parts = k.split('|');
        let path = parts.next().unwrap_or("?");
        let offset = parts
            .next()
            .and_then(|o| o.parse().ok())
            .unwrap_or(u64::MAX);
        *blobs.entry(path).or_default().entry(offset).or_default() += 1;
    }
    blobs
        .into_iter()
        .map(|(path, records)| {
            format!(
                "{what}: {} tuples of {} records at offsets {}..={} of {path}",
                records.values().sum::<u64>(),
                records.len(),
                records.keys().next().unwrap(),
                records.keys().last().unwrap(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// One trial.

#[derive(Debug)]
struct TrialResult {
    /// The seed of the run (the plan has the trial's own).
    seed: u64,
    plan: Plan,
    kills: u64,
    terms: u64,
    /// What went wrong besides the count: daemons that exited by themselves, a SIGTERM that
    /// did not end in exit 0, a final `once` that failed.
    findings: Vec<String>,
    faults: BTreeMap<Fault, u64>,
    traffic: EngineTraffic,
    verdict: Verdict,
    final_once: String,
    converged_in_s: Option<f64>,
    seconds: f64,
    kept: Option<PathBuf>,
}

impl TrialResult {
    fn passed(&self) -> bool {
        self.verdict.clean() && self.findings.is_empty()
    }

    fn json(&self) -> Value {
        let faults: serde_json::Map<String, Value> = FAULTS
            .iter()
            .map(|f| {
                (
                    f.name().to_owned(),
                    json!(self.faults.get(f).copied().unwrap_or(0)),
                )
            })
            .collect();
        json!({
            "seed": format!("{:#x}", self.seed),
            "trial": self.plan.trial,
            "trial_seed": format!("{:#x}", self.plan.seed),
            "passed": self.passed(),
            "kills": self.kills,
            "terms": self.terms,
            "faults": faults,
            "bulk_requests": self.traffic.bulk_requests,
            "replayed_409": self.traffic.replayed,
            "item_429": self.traffic.item_429,
            "written": self.verdict.written,
            "indexed": self.verdict.indexed,
            "dead_lettered": self.verdict.dead_lettered,
            "dead_letter_lines": self.verdict.dead_letter_lines,
            "lost": self.verdict.lost.len(),
            "duplicated": self.verdict.duplicated.len(),
            "unaccounted_dead_letters": self.verdict.unaccounted_dead_letters.len(),
            "poisoned_not_dead_lettered": self.verdict.poisoned_not_dead_lettered.len(),
            "problems": self.verdict.problems.len(),
            "findings": self.findings,
            "final_once": self.final_once,
            "converged_in_s": self.converged_in_s,
            "seconds": self.seconds,
            "kept": self.kept.as_ref().map(|p| p.display().to_string()),
        })
    }
}

fn source_spec(
    name: &str,
    container: &str,
    endpoint: &str,
    index: &str,
    plan: &Plan,
) -> SourceSpec {
    SourceSpec {
        name: name.to_owned(),
        container: container.to_owned(),
        blob_endpoint: endpoint.to_owned(),
        index: index.to_owned(),
        auth: format!(
            "method = \"account_key\"\naccount_key = \"{}\"\n\n[source.retry]\nmax_tries = {}\n\
             initial_delay_ms = 50\nmax_delay_ms = 1000\nmax_elapsed_secs = 5",
            Azurite::ACCOUNT_KEY,
            plan.storage_max_tries
        ),
        extra: format!("since = \"8h\"\nfinish_after = \"{}\"\n", plan.finish_after),
    }
}

/// Waits for a SIGTERMed daemon; a finding unless it exits 0.
async fn await_term(daemon: &mut Daemon, what: &str, findings: &mut Vec<String>) -> bool {
    match daemon.wait(SHUTDOWN_TIMEOUT + TERM_GRACE).await {
        Some(status) if status.success() => true,
        Some(status) => {
            findings.push(format!("{what}: SIGTERM ended in {}", describe(&status)));
            false
        }
        None => {
            findings.push(format!(
                "{what}: still running {:?} after SIGTERM; killed",
                SHUTDOWN_TIMEOUT + TERM_GRACE
            ));
            daemon.kill();
            false
        }
    }
}

/// Documents in the index plus distinct ids in the dead-letter file.
async fn settled(es: &Es, dead_letter: &Path) -> u64 {
    let text = std::fs::read_to_string(dead_letter).unwrap_or_default();
    let ids: HashSet<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["kind"] == "rejected")
        .filter_map(|l| l["id"].as_str().map(str::to_owned))
        .collect();
    es.count(&es.all()).await + ids.len() as u64
}

async fn run_trial(settings: &Settings, storage: &Storage, trial: u64) -> TrialResult {
    let started = Instant::now();
    let plan = Plan::new(settings, trial, chrono::Utc::now().timestamp_millis());
    let description = plan.describe();
    eprintln!("chaos: seed {:#x} {description}", settings.seed);
    let es = Es::shared_node(&format!("chaos-{trial}"));
    let counts = Arc::new(Counts::default());
    let storage_proxy = StorageProxy::start(storage.port(), plan.proxy_seed, counts.clone()).await;
    let engine_proxy = EngineProxy::start(&es.authority(), plan.proxy_seed, counts.clone()).await;
    let tag = format!("{:08x}", plan.seed as u32);
    let containers = [
        format!("chaos-{tag}-{trial}-vnet"),
        format!("chaos-{tag}-{trial}-nsg"),
    ];
    let writers = vec![
        writer_for(storage, &containers[0]).await,
        writer_for(storage, &containers[1]).await,
    ];
    let mut config = TestConfig::new(
        &engine_proxy.url,
        vec![
            source_spec(
                "vnet",
                &containers[0],
                &storage_proxy.endpoint,
                &es.pattern("vnet"),
                &plan,
            ),
            source_spec(
                "nsg",
                &containers[1],
                &storage_proxy.endpoint,
                &es.pattern("nsg"),
                &plan,
            ),
        ],
    )
    .es(&format!(
        "batch_max_docs = {}\nbatch_max_bytes = {}\nflush_interval = \"100ms\"\n\
         max_in_flight = {}\nitem_retry_timeout = \"{ITEM_RETRY_TIMEOUT}\"\nrequest_timeout = \"10s\"",
        plan.batch_max_docs, plan.batch_max_bytes, plan.max_in_flight
    ))
    .daemon(&format!(
        "interval = \"{}\"\nshutdown_timeout = \"{}s\"\nread_concurrency = {}",
        plan.interval,
        SHUTDOWN_TIMEOUT.as_secs(),
        plan.read_concurrency
    ));
    config.backoff = ("20ms", "500ms");

    // The backlog, before the first daemon starts.
    let hour = current_hour();
    let mut blobs = Vec::new();
    for p in &plan.blobs {
        let name = if p.kind == GenKind::Vnet {
            "fl-chaos"
        } else {
            "nsg-chaos"
        };
        let mut blob = GrowingBlob::at_hour(
            p.kind,
            p.gen_seed,
            name,
            p.records,
            p.tuples,
            hour - p.hours_back * 3600,
        );
        if p.backlog > 0 {
            blob.append(&writers[p.source], p.backlog).await;
        }
        blobs.push(WrittenBlob {
            plan: p.clone(),
            blob,
        });
    }

    // The chaos.
    let timeline = Arc::new(Mutex::new(Vec::new()));
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write_during_chaos(
        blobs,
        writers,
        plan.writer_seed,
        Duration::from_millis(plan.planned_ms),
        stop.clone(),
    ));
    let driver = tokio::spawn(drive_faults(
        plan.faults.clone(),
        storage_proxy.faults.clone(),
        engine_proxy.faults.clone(),
        t0,
        timeline.clone(),
    ));
    let mut findings = Vec::new();
    let (mut kills, mut terms) = (0, 0);
    for (i, life) in plan.lives.iter().enumerate() {
        let mut daemon = Daemon::spawn(&config, &[]);
        let born = Instant::now();
        let run = Duration::from_millis(life.run_ms);
        let mut died = None;
        while born.elapsed() < run {
            if !daemon.running() {
                died = daemon.status;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if let Some(status) = died {
            let what = format!(
                "life {i}: the daemon exited by itself ({}) after {:?}",
                describe(&status),
                born.elapsed()
            );
            note(&timeline, t0, what.clone());
            findings.push(what);
            continue;
        }
        match life.signal {
            Signal::Kill => {
                daemon.kill();
                kills += 1;
                note(
                    &timeline,
                    t0,
                    format!("life {i}: SIGKILL after {:?}", born.elapsed()),
                );
            }
            Signal::Term => {
                daemon.terminate();
                let signalled = Instant::now();
                let ok = await_term(&mut daemon, &format!("life {i}"), &mut findings).await;
                terms += 1;
                note(
                    &timeline,
                    t0,
                    format!(
                        "life {i}: SIGTERM after {:?}, {} {:?} later",
                        born.elapsed() - signalled.elapsed(),
                        if ok { "exit 0" } else { "NOT exit 0" },
                        signalled.elapsed()
                    ),
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(life.gap_ms)).await;
    }
    stop.store(true, SeqCst);
    driver.abort();
    storage_proxy.faults.calm();
    engine_proxy.faults.calm();
    let (mut blobs, writers) = writer
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    // A fault armed, or a window opened, late in the chaos fires on the next request of its
    // kind, and the lives may have ended with nothing left to read or send (the writer stops
    // on the planned time, or when every blob is complete). Then a new blob of one record in
    // the current hour gives the last daemon a blob read and a `_bulk`, so every planned fault
    // happens, as the run's last check requires.
    let injected = counts.snapshot();
    let not_yet: Vec<&str> = FAULTS[..7]
        .iter()
        .filter(|f| !injected.contains_key(f))
        .map(|f| f.name())
        .collect();
    if !not_yet.is_empty() {
        let (records, tuples) = (1, 10);
        // A seed whose blob name (its MAC address) no blob of the trial has.
        let mut seed = plan.writer_seed;
        let mut blob = loop {
            seed = seed.wrapping_add(1);
            let new = GrowingBlob::new(GenKind::Vnet, seed, "fl-chaos", records, tuples);
            if blobs.iter().all(|b| b.blob.name() != new.name()) {
                break new;
            }
        };
        blob.append(&writers[0], records).await;
        note(
            &timeline,
            t0,
            format!(
                "{} not injected yet: one more blob for the last daemon, {}",
                not_yet.join(", "),
                blob.name()
            ),
        );
        blobs.push(WrittenBlob {
            plan: BlobPlan {
                source: 0,
                kind: GenKind::Vnet,
                gen_seed: seed,
                hours_back: 0,
                records,
                tuples,
                backlog: records,
                growable: false,
            },
            blob,
        });
    }
    let mut expected = Vec::new();
    for b in &blobs {
        expected_keys(&containers[b.plan.source], &b.blob, &mut expected);
    }
    let total = expected.len() as u64;
    note(
        &timeline,
        t0,
        format!("chaos over: {total} tuples written; faults stop, the last daemon runs"),
    );

    // The last daemon, without faults (the persistent item errors stay).
    let dead_letter = config.dead_letter_path();
    let mut daemon = Daemon::spawn(&config, &[]);
    let final_start = Instant::now();
    let mut last = (settled(&es, &dead_letter).await, Instant::now());
    let mut converged_in_s = None;
    loop {
        let now = settled(&es, &dead_letter).await;
        if now >= total {
            converged_in_s = Some(final_start.elapsed().as_secs_f64());
            break;
        }
        if now != last.0 {
            last = (now, Instant::now());
        }
        if last.1.elapsed() > FINAL_STALL || final_start.elapsed() > FINAL_LIMIT {
            note(
                &timeline,
                t0,
                format!("the last daemon stopped making progress at {now} of {total}"),
            );
            break;
        }
        if !daemon.running() {
            let what = format!(
                "the last daemon exited by itself ({})",
                daemon.status.as_ref().map(describe).unwrap_or_default()
            );
            note(&timeline, t0, what.clone());
            findings.push(what);
            daemon = Daemon::spawn(&config, &[]);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Let the commits of what was just acknowledged land, then stop it as systemd would.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    daemon.terminate();
    await_term(&mut daemon, "the last daemon", &mut findings).await;
    drop(daemon);
    let out = flowlogd(&config.write(), &["once"], &[]).await;
    let final_once = out.stdout.lines().last().unwrap_or_default().to_owned();
    if !out.status.success() {
        findings.push(format!(
            "the final `flowlogd once` ended in {}: {final_once}",
            describe(&out.status)
        ));
    }
    note(&timeline, t0, format!("final once: {final_once}"));
    // Invariant 5: after the SIGTERM everything delivered is committed, so a `once` has
    // nothing to read again (unless the last daemon never caught up, reported as a loss).
    if let (Some(_), Ok(s)) = (converged_in_s, serde_json::from_str::<Value>(&final_once))
        && (s["blobs_read"] != 0 || s["documents_indexed"] != 0 || s["documents_existing"] != 0)
    {
        findings.push(format!(
            "the final `flowlogd once` found work left after the last daemon's SIGTERM: {final_once}"
        ));
    }

    let poisoned = engine_proxy.faults.poisoned.lock().unwrap().clone();
    let verdict = verify(&es, &expected, &dead_letter, &poisoned).await;
    let traffic = *engine_proxy.faults.traffic.lock().unwrap();
    let mut result = TrialResult {
        seed: settings.seed,
        plan,
        kills,
        terms,
        findings,
        faults: counts.snapshot(),
        traffic,
        verdict,
        final_once,
        converged_in_s,
        seconds: started.elapsed().as_secs_f64(),
        kept: None,
    };

    // Keep what explains the trial: always with FLOWLOGD_TEST_CHAOS_OUT, else on failure.
    let keep = match &settings.out {
        Some(dir) => Some(dir.join(format!("trial-{trial}"))),
        None if !result.passed() => Some(std::env::temp_dir().join(format!(
            "flowlogd-chaos-{:x}-{trial}-{}",
            settings.seed,
            std::process::id()
        ))),
        None => None,
    };
    if let Some(dir) = keep {
        let registry = flowlogd(&config.write(), &["registry", "list"], &[]).await;
        std::fs::create_dir_all(&dir).expect("artifact directory");
        let _ = std::fs::write(dir.join("registry.txt"), registry.stdout);
        keep_artifacts(
            &dir,
            &config,
            &description,
            &timeline,
            &result,
            &blobs,
            &containers,
        );
        result.kept = Some(dir);
    }
    es.cleanup().await;
    result
}

/// Copies the daemon logs, the dead-letter file and the config, and writes the plan, the
/// timeline, the verdict and (on loss) where each lost tuple was and what the logs say of its
/// blob.
fn keep_artifacts(
    dir: &Path,
    config: &TestConfig,
    description: &str,
    timeline: &Mutex<Vec<String>>,
    result: &TrialResult,
    blobs: &[WrittenBlob],
    containers: &[String; 2],
) {
    std::fs::create_dir_all(dir).expect("artifact directory");
    for entry in std::fs::read_dir(config.dir())
        .expect("config dir")
        .flatten()
    {
        let p = entry.path();
        if p.is_file() {
            let _ = std::fs::copy(&p, dir.join(entry.file_name()));
        }
    }
    let _ = std::fs::write(dir.join("plan.txt"), description);
    let _ = std::fs::write(
        dir.join("timeline.txt"),
        timeline.lock().unwrap().join("\n") + "\n",
    );
    let v = &result.verdict;
    let mut text = format!(
        "{}\n\nlost, by blob:\n{}\n\nlost:\n{}\n\nduplicated:\n{}\n\nunaccounted dead letters:\n{}\n\npoisoned, not dead-lettered:\n{}\n\nproblems:\n{}\n",
        serde_json::to_string_pretty(&result.json()).unwrap(),
        by_blob("lost", &v.lost).join("\n"),
        v.lost.join("\n"),
        v.duplicated.join("\n"),
        v.unaccounted_dead_letters.join("\n"),
        v.poisoned_not_dead_lettered.join("\n"),
        v.problems.join("\n"),
    );
    // What the daemons logged about each blob that lost tuples.
    let lost_blobs: HashSet<&str> = v
        .lost
        .iter()
        .filter_map(|k| k.split('|').next()?.split_once('/').map(|(_, blob)| blob))
        .collect();
    let mut logs: Vec<PathBuf> = std::fs::read_dir(config.dir())
        .expect("config dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort_by_key(|p| {
        p.file_stem()
            .and_then(|s| s.to_str()?.strip_prefix("run-")?.parse::<u32>().ok())
            .unwrap_or(u32::MAX)
    });
    for blob in lost_blobs {
        let _ = writeln!(text, "\nlog lines naming {blob}:");
        for log in &logs {
            let content = std::fs::read_to_string(log).unwrap_or_default();
            for line in content.lines().filter(|l| l.contains(blob)) {
                let _ = writeln!(
                    text,
                    "  {}: {line}",
                    log.file_name().unwrap_or_default().display()
                );
            }
        }
    }
    let _ = writeln!(text, "\nblobs:");
    for b in blobs {
        let _ = writeln!(
            text,
            "  {}/{}: {} records written, length {}",
            containers[b.plan.source],
            b.blob.name(),
            b.blob.written,
            b.blob.length_after(b.blob.written)
        );
    }
    let _ = std::fs::write(dir.join("verdict.txt"), text);
}

// ---------------------------------------------------------------------------------------------
// The test.

// Invariants 1, 2, 4, 5 and 8 together, under crashes and faults: whatever the moment of a
// SIGKILL or SIGTERM and whatever storage and the engine do meanwhile, every tuple written ends
// in the index exactly once, or in the dead-letter file when the engine refuses it for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flowlogd_run_under_sigkills_sigterms_and_storage_and_engine_faults_loses_and_duplicates_no_tuple()
 {
    let settings = Settings::from_env();
    eprintln!("chaos: {settings:?}");
    let storage = match settings.azurite_port {
        Some(port) => Storage::External(port),
        None => Storage::Own(Azurite::start().expect("azurite")),
    };
    if let Some(out) = &settings.out {
        std::fs::create_dir_all(out).expect("FLOWLOGD_TEST_CHAOS_OUT");
    }
    let mut results = Vec::new();
    for trial in settings.first..settings.first + settings.trials {
        let r = run_trial(&settings, &storage, trial).await;
        let line = r.json();
        eprintln!("chaos: result {line}");
        if let Some(out) = &settings.out {
            let mut report = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(out.join("report.jsonl"))
                .expect("report.jsonl");
            std::io::Write::write_all(&mut report, format!("{line}\n").as_bytes())
                .expect("write report");
        }
        results.push(r);
    }

    // Summary, then the verdict.
    let mut totals: BTreeMap<Fault, u64> = BTreeMap::new();
    for r in &results {
        for (f, n) in &r.faults {
            *totals.entry(*f).or_default() += n;
        }
    }
    let sum = |f: fn(&TrialResult) -> u64| results.iter().map(f).sum::<u64>();
    eprintln!(
        "chaos: seed {:#x}, {} trials: {} SIGKILLs, {} SIGTERMs; tuples written {}, indexed {}, \
         dead-lettered {}; lost {}, duplicated {}; replays (409) {}",
        settings.seed,
        results.len(),
        sum(|r| r.kills),
        sum(|r| r.terms),
        sum(|r| r.verdict.written),
        sum(|r| r.verdict.indexed),
        sum(|r| r.verdict.dead_lettered),
        sum(|r| r.verdict.lost.len() as u64),
        sum(|r| r.verdict.duplicated.len() as u64),
        sum(|r| r.traffic.replayed),
    );
    for f in FAULTS {
        eprintln!(
            "chaos:   {:22} {:6} {}",
            f.name(),
            totals.get(&f).copied().unwrap_or(0),
            f.unit()
        );
    }
    let mut failures = Vec::new();
    for r in &results {
        if r.passed() {
            continue;
        }
        let v = &r.verdict;
        let mut s = format!(
            "trial {} (trial seed {:#x}): lost {}, duplicated {}, unaccounted dead letters {}, \
             poisoned but not dead-lettered {}, problems {}; kept in {}",
            r.plan.trial,
            r.plan.seed,
            v.lost.len(),
            v.duplicated.len(),
            v.unaccounted_dead_letters.len(),
            v.poisoned_not_dead_lettered.len(),
            v.problems.len(),
            r.kept
                .as_ref()
                .map_or("-".into(), |p| p.display().to_string()),
        );
        let lost = by_blob("lost", &v.lost);
        for line in r
            .findings
            .iter()
            .chain(lost.iter())
            .chain(v.duplicated.iter().take(5))
            .chain(v.unaccounted_dead_letters.iter().take(5))
            .chain(v.poisoned_not_dead_lettered.iter().take(5))
            .chain(v.problems.iter().take(3))
        {
            s.push_str("\n    ");
            s.push_str(line);
        }
        failures.push(s);
    }
    assert!(
        failures.is_empty(),
        "chaos seed {:#x}: {} of {} trials failed:\n{}",
        settings.seed,
        failures.len(),
        results.len(),
        failures.join("\n")
    );
    // The harness must have done what it claims, or the run proves nothing about it.
    for f in FAULTS {
        assert!(
            totals.get(&f).copied().unwrap_or(0) > 0,
            "the proxies never injected {}: the run proves nothing about it",
            f.name()
        );
    }
}
