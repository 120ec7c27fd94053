//! Counters and gauges of the running daemon, the facts `/readyz` decides on, and their
//! exposition for `/metrics` (encoded by prometheus-client in the OpenMetrics text format).
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Request counters of one source's storage clients (Blob and Queue service), counted by the
/// clients in `source/` and reported here.
#[derive(Debug, Default)]
pub struct StorageStats {
    /// List Blobs requests (pages), flat and hierarchical.
    pub list_requests: AtomicU64,
    /// Blob entries returned by listings.
    pub blobs_listed: AtomicU64,
    /// `BlobPrefix` entries returned by hierarchical listings.
    pub prefixes_listed: AtomicU64,
    /// Get Blob Properties requests.
    pub properties_requests: AtomicU64,
    /// Ranged Get Blob requests.
    pub download_requests: AtomicU64,
    /// Body bytes received by ranged downloads.
    pub bytes_downloaded: AtomicU64,
    /// Get Block List requests.
    pub block_list_requests: AtomicU64,
    /// Queue service requests of the event-driven mode (receive, delete, release).
    pub queue_requests: AtomicU64,
    /// Retried tries of any request (seen by a per-try policy).
    pub retries: AtomicU64,
}

/// A copy of [`StorageStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// See [`StorageStats::list_requests`].
    pub list_requests: u64,
    /// See [`StorageStats::blobs_listed`].
    pub blobs_listed: u64,
    /// See [`StorageStats::prefixes_listed`].
    pub prefixes_listed: u64,
    /// See [`StorageStats::properties_requests`].
    pub properties_requests: u64,
    /// See [`StorageStats::download_requests`].
    pub download_requests: u64,
    /// See [`StorageStats::bytes_downloaded`].
    pub bytes_downloaded: u64,
    /// See [`StorageStats::block_list_requests`].
    pub block_list_requests: u64,
    /// See [`StorageStats::queue_requests`].
    pub queue_requests: u64,
    /// See [`StorageStats::retries`].
    pub retries: u64,
}

impl StorageStats {
    /// Reads all counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            list_requests: r(&self.list_requests),
            blobs_listed: r(&self.blobs_listed),
            prefixes_listed: r(&self.prefixes_listed),
            properties_requests: r(&self.properties_requests),
            download_requests: r(&self.download_requests),
            bytes_downloaded: r(&self.bytes_downloaded),
            block_list_requests: r(&self.block_list_requests),
            queue_requests: r(&self.queue_requests),
            retries: r(&self.retries),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

impl StatsSnapshot {
    /// The counts accumulated since `earlier` (e.g. during one poll).
    pub fn since(&self, earlier: &StatsSnapshot) -> StatsSnapshot {
        StatsSnapshot {
            list_requests: self.list_requests - earlier.list_requests,
            blobs_listed: self.blobs_listed - earlier.blobs_listed,
            prefixes_listed: self.prefixes_listed - earlier.prefixes_listed,
            properties_requests: self.properties_requests - earlier.properties_requests,
            download_requests: self.download_requests - earlier.download_requests,
            bytes_downloaded: self.bytes_downloaded - earlier.bytes_downloaded,
            block_list_requests: self.block_list_requests - earlier.block_list_requests,
            queue_requests: self.queue_requests - earlier.queue_requests,
            retries: self.retries - earlier.retries,
        }
    }
}

/// Per-source counters. Storage request counts are in [`StorageStats`], which the source's
/// storage clients count into.
#[derive(Debug, Default)]
pub struct SourceMetrics {
    pub name: String,
    pub storage: Arc<StorageStats>,
    pub polls: AtomicU64,
    pub blobs_read: AtomicU64,
    pub bytes_new: AtomicU64,
    pub records: AtomicU64,
    pub documents_indexed: AtomicU64,
    /// Documents the cluster already had (409 on create): replays after a crash.
    pub documents_existing: AtomicU64,
    pub documents_dead_lettered: AtomicU64,
    /// Malformed records, tuples and bytes (dead-lettered too).
    pub decode_problems: AtomicU64,
    pub read_errors: AtomicU64,
    /// Event messages (`[source.events]`) received and acted on, and those completed (their
    /// blobs delivered, the message deleted).
    pub events_received: AtomicU64,
    pub events_completed: AtomicU64,
    pub list_errors: AtomicU64,
    /// Newest tuple time among committed documents, epoch ms (0 = none yet).
    pub newest_indexed_ms: AtomicI64,
    /// When the last listing of this source succeeded, epoch ms (0 = never).
    pub last_list_ok_ms: AtomicI64,
}

impl SourceMetrics {
    pub fn add(&self, counter: &AtomicU64, n: u64) {
        add(counter, n);
    }
}

/// Upper bounds (seconds) of the bulk latency histogram buckets.
const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// One batch in delivery, for readiness; dropping it ends its delivery.
#[derive(Debug)]
pub struct BatchInFlight {
    metrics: Arc<Metrics>,
    id: u64,
}

impl Drop for BatchInFlight {
    fn drop(&mut self) {
        if let Ok(mut batches) = self.metrics.batches_in_flight.lock() {
            batches.remove(&self.id);
        }
    }
}

/// All metrics of one daemon.
#[derive(Debug)]
pub struct Metrics {
    pub sources: Vec<SourceMetrics>,
    pub bulk_requests: AtomicU64,
    pub bulk_item_retries: AtomicU64,
    pub bulk_request_retries: AtomicU64,
    bulk_latency: Histogram,
    /// When the last bulk request succeeded, epoch ms (0 = never).
    pub last_bulk_ok_ms: AtomicI64,
    /// Batches being delivered now: id → when its delivery started, epoch ms. Readiness looks
    /// at the oldest, so one stuck batch shows even while others succeed around it.
    batches_in_flight: Mutex<BTreeMap<u64, i64>>,
    next_batch: AtomicU64,
    pub registry_entries: AtomicU64,
    pub registry_open: std::sync::atomic::AtomicBool,
    /// Whether a poll is under way (false while waiting for the next one).
    pub polling: std::sync::atomic::AtomicBool,
    /// Chunks handed from the readers to the delivery stage, and batches delivered.
    pub chunks_moved: AtomicU64,
    /// Tuples dropped by `[[filter]]` rules so far, per rule name, read when `/metrics` is
    /// rendered (the counters live with the rules; this module only shows them).
    pub tuples_filtered: std::sync::OnceLock<FilterCounts>,
    /// Shared ownership figures per source, when `[cluster] coordination_container` is set.
    pub cluster: std::sync::OnceLock<ClusterCounts>,
}

/// Reads the per-rule drop counters: `(rule name, tuples dropped)`.
pub struct FilterCounts(pub Box<dyn Fn() -> Vec<(String, u64)> + Send + Sync>);

impl std::fmt::Debug for FilterCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FilterCounts")
    }
}

/// Shared ownership at one moment, per source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterSample {
    pub source: String,
    /// Units whose claim this instance holds.
    pub units_owned: u64,
    /// Claims won since start.
    pub claims: u64,
    /// Claims lost to another instance or run out unrenewed since start.
    pub losses: u64,
    /// Requests to the coordination container (listings, reads, writes, deletes).
    pub requests: u64,
}

/// Reads the shared ownership figures at each scrape.
pub struct ClusterCounts(pub Box<dyn Fn() -> Vec<ClusterSample> + Send + Sync>);

impl std::fmt::Debug for ClusterCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterCounts")
    }
}

impl Metrics {
    pub fn new(sources: impl IntoIterator<Item = (String, Arc<StorageStats>)>) -> Self {
        Metrics {
            sources: sources
                .into_iter()
                .map(|(name, storage)| SourceMetrics {
                    name,
                    storage,
                    ..SourceMetrics::default()
                })
                .collect(),
            bulk_requests: AtomicU64::new(0),
            bulk_item_retries: AtomicU64::new(0),
            bulk_request_retries: AtomicU64::new(0),
            bulk_latency: Histogram::new(LATENCY_BUCKETS),
            last_bulk_ok_ms: AtomicI64::new(0),
            batches_in_flight: Mutex::default(),
            next_batch: AtomicU64::new(0),
            registry_entries: AtomicU64::new(0),
            registry_open: std::sync::atomic::AtomicBool::new(false),
            polling: std::sync::atomic::AtomicBool::new(false),
            chunks_moved: AtomicU64::new(0),
            tuples_filtered: std::sync::OnceLock::new(),
            cluster: std::sync::OnceLock::new(),
        }
    }

    /// A batch went out for delivery; it counts as in flight until the returned guard drops
    /// (delivered, cancelled, or its task panicked).
    pub fn batch_started(self: &Arc<Self>, now_ms: i64) -> BatchInFlight {
        let id = self.next_batch.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut batches) = self.batches_in_flight.lock() {
            batches.insert(id, now_ms);
        }
        BatchInFlight {
            metrics: self.clone(),
            id,
        }
    }

    /// Batches in delivery now, and when the oldest of them started (epoch ms).
    pub fn batches_in_flight(&self) -> (usize, Option<i64>) {
        self.batches_in_flight
            .lock()
            .map(|b| (b.len(), b.values().min().copied()))
            .unwrap_or((0, None))
    }

    /// A number that grows whenever the pipeline does work: storage requests and bytes, chunks
    /// and batches moved (the watchdog adds the sink's bulk attempts; see `KeepAlive`).
    pub fn progress_mark(&self) -> u64 {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        self.sources
            .iter()
            .fold(load(&self.chunks_moved), |sum, s| {
                let st = s.storage.snapshot();
                sum.wrapping_add(st.list_requests)
                    .wrapping_add(st.properties_requests)
                    .wrapping_add(st.download_requests)
                    .wrapping_add(st.bytes_downloaded)
                    .wrapping_add(st.block_list_requests)
                    .wrapping_add(st.queue_requests)
                    .wrapping_add(st.retries)
            })
    }

    /// Records one bulk request's latency.
    pub fn observe_bulk_latency(&self, latency: Duration) {
        self.bulk_latency.observe(latency.as_secs_f64());
        add(&self.bulk_requests, 1);
    }

    /// Whether the daemon is doing its job: registry open, every source listed within
    /// `list_window`, and no batch stuck in delivery for longer than `bulk_window`.
    pub fn readiness(
        &self,
        now_ms: i64,
        list_window: Duration,
        bulk_window: Duration,
    ) -> Result<(), String> {
        if !self.registry_open.load(Ordering::Relaxed) {
            return Err("registry not open".into());
        }
        for s in &self.sources {
            let last = s.last_list_ok_ms.load(Ordering::Relaxed);
            if last == 0 || now_ms - last > list_window.as_millis() as i64 {
                return Err(format!(
                    "source {}: no successful listing in the last {}s",
                    s.name,
                    list_window.as_secs()
                ));
            }
        }
        // Stuck: one batch has been in delivery (retrying) for the whole window. Judged per
        // batch, not by the last success: other batches succeeding does not unstick this one,
        // and it pins its blobs' offsets.
        if let (_, Some(oldest)) = self.batches_in_flight()
            && now_ms - oldest > bulk_window.as_millis() as i64
        {
            return Err(format!(
                "a bulk batch has been in delivery for {}s (more than {}s): the engine keeps failing it",
                (now_ms - oldest) / 1000,
                bulk_window.as_secs()
            ));
        }
        Ok(())
    }

    /// The exposition of every metric, in the OpenMetrics text format (which Prometheus
    /// scrapes; [`CONTENT_TYPE`]), encoded by prometheus-client from a snapshot of the counters.
    pub fn render(self: &Arc<Self>, now_ms: i64) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Exposition {
            metrics: self.clone(),
            now_ms,
        }));
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }
}

/// The content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The metrics at one scrape.
#[derive(Debug)]
struct Exposition {
    metrics: Arc<Metrics>,
    now_ms: i64,
}

/// A per-source counter: its name without `_total` (the encoder adds it), its help, its value.
type SourceCounter = (&'static str, &'static str, fn(&SourceMetrics) -> u64);

const SOURCE_COUNTERS: [SourceCounter; 15] = [
    (
        "flowlogd_documents_indexed",
        "Documents created in Elasticsearch.",
        |s| load(&s.documents_indexed),
    ),
    (
        "flowlogd_documents_existing",
        "Documents Elasticsearch already had (409 on create): replays, not duplicates.",
        |s| load(&s.documents_existing),
    ),
    (
        "flowlogd_documents_dead_lettered",
        "Documents rejected by Elasticsearch and written to the dead-letter file.",
        |s| load(&s.documents_dead_lettered),
    ),
    (
        "flowlogd_decode_problems",
        "Malformed records, tuples or bytes (dead-lettered).",
        |s| load(&s.decode_problems),
    ),
    ("flowlogd_records", "Flow-log records decoded.", |s| {
        load(&s.records)
    }),
    (
        "flowlogd_blobs_read",
        "Blob reads (ranged GETs of new bytes).",
        |s| load(&s.blobs_read),
    ),
    ("flowlogd_bytes_new", "New blob bytes read.", |s| {
        load(&s.bytes_new)
    }),
    (
        "flowlogd_bytes_downloaded",
        "Bytes downloaded from Blob Storage.",
        |s| load(&s.storage.bytes_downloaded),
    ),
    ("flowlogd_list_requests", "List Blobs requests.", |s| {
        load(&s.storage.list_requests)
    }),
    (
        "flowlogd_blobs_listed",
        "Blob entries returned by listings.",
        |s| load(&s.storage.blobs_listed),
    ),
    (
        "flowlogd_storage_retries",
        "Retried storage requests.",
        |s| load(&s.storage.retries),
    ),
    (
        "flowlogd_read_errors",
        "Blob reads given up on for this poll (retried next poll).",
        |s| load(&s.read_errors),
    ),
    (
        "flowlogd_list_errors",
        "Listings given up on for this poll.",
        |s| load(&s.list_errors),
    ),
    (
        "flowlogd_events_received",
        "Event messages ([source.events]) received and acted on.",
        |s| load(&s.events_received),
    ),
    (
        "flowlogd_events_completed",
        "Event messages whose blobs were delivered, then deleted from the queue.",
        |s| load(&s.events_completed),
    ),
];

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let m = &self.metrics;
        let source_label = |s: &SourceMetrics| [("source", s.name.clone())];
        for (name, help, value) in SOURCE_COUNTERS {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for s in &m.sources {
                ConstCounter::new(value(s)).encode(family.encode_family(&source_label(s))?)?;
            }
        }
        let mut requests = encoder.encode_descriptor(
            "flowlogd_storage_requests",
            "Storage requests per source and kind (list, properties, download, block_list, queue), retries not counted.",
            None,
            MetricType::Counter,
        )?;
        for s in &m.sources {
            let st = s.storage.snapshot();
            for (kind, n) in [
                ("list", st.list_requests),
                ("properties", st.properties_requests),
                ("download", st.download_requests),
                ("block_list", st.block_list_requests),
                ("queue", st.queue_requests),
            ] {
                ConstCounter::new(n).encode(
                    requests
                        .encode_family(&[("source", s.name.clone()), ("kind", kind.to_owned())])?,
                )?;
            }
        }
        let mut lag = encoder.encode_descriptor(
            "flowlogd_lag_seconds",
            "Now minus the newest tuple time indexed, per source (-1 before the first document).",
            None,
            MetricType::Gauge,
        )?;
        for s in &m.sources {
            let newest = s.newest_indexed_ms.load(Ordering::Relaxed);
            let seconds = if newest == 0 {
                -1.0
            } else {
                (self.now_ms - newest) as f64 / 1000.0
            };
            ConstGauge::new(seconds).encode(lag.encode_family(&source_label(s))?)?;
        }
        for (name, help, value) in [
            (
                "flowlogd_bulk_item_retries",
                "Bulk items retried after 429/5xx.",
                load(&m.bulk_item_retries),
            ),
            (
                "flowlogd_bulk_request_retries",
                "Whole bulk requests retried after a failure.",
                load(&m.bulk_request_retries),
            ),
        ] {
            ConstCounter::new(value).encode(encoder.encode_descriptor(
                name,
                help,
                None,
                MetricType::Counter,
            )?)?;
        }
        if let Some(counts) = m.tuples_filtered.get() {
            let mut family = encoder.encode_descriptor(
                "flowlogd_tuples_filtered",
                "Tuples dropped by [[filter]] rules, per rule (not indexed; their bytes count as read).",
                None,
                MetricType::Counter,
            )?;
            for (rule, dropped) in (counts.0)() {
                ConstCounter::new(dropped).encode(family.encode_family(&[("rule", rule)])?)?;
            }
        }
        if let Some(counts) = m.cluster.get() {
            let samples = (counts.0)();
            let mut owned = encoder.encode_descriptor(
                "flowlogd_units_owned",
                "Units (flow-log resources) whose claim this instance holds, per source.",
                None,
                MetricType::Gauge,
            )?;
            for s in &samples {
                ConstGauge::new(s.units_owned as i64)
                    .encode(owned.encode_family(&[("source", s.source.clone())])?)?;
            }
            type Field = fn(&ClusterSample) -> u64;
            let counters: [(&str, &str, Field); 3] = [
                (
                    "flowlogd_units_claimed",
                    "Claims won (free, released or expired units), per source.",
                    |s| s.claims,
                ),
                (
                    "flowlogd_units_lost",
                    "Claims lost to another instance or run out unrenewed, per source.",
                    |s| s.losses,
                ),
                (
                    "flowlogd_coordination_requests",
                    "Requests to the coordination container, per source.",
                    |s| s.requests,
                ),
            ];
            for (name, help, value) in counters {
                let mut family =
                    encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
                for s in &samples {
                    ConstCounter::new(value(s))
                        .encode(family.encode_family(&[("source", s.source.clone())])?)?;
                }
            }
        }
        ConstGauge::new(load(&m.registry_entries) as i64).encode(encoder.encode_descriptor(
            "flowlogd_registry_entries",
            "Blobs tracked in the registry.",
            None,
            MetricType::Gauge,
        )?)?;
        m.bulk_latency.encode(encoder.encode_descriptor(
            "flowlogd_bulk_latency_seconds",
            "Latency of bulk requests.",
            None,
            m.bulk_latency.metric_type(),
        )?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuples_dropped_by_filter_rules_are_a_counter_per_rule_and_absent_without_rules() {
        let m = Arc::new(Metrics::new([(
            "vnet".to_string(),
            Arc::new(StorageStats::default()),
        )]));
        assert!(!m.render(0).contains("flowlogd_tuples_filtered"));
        let _ = m.tuples_filtered.set(FilterCounts(Box::new(|| {
            // Rule names are validated to letters, digits, `-`, `_`, `.`: prometheus-client
            // writes label values unescaped (0.24), so a quote would break the exposition.
            vec![("drop-probes".to_owned(), 7), ("keep.denied".to_owned(), 0)]
        })));
        let text = m.render(0);
        assert!(
            text.contains(
                "# HELP flowlogd_tuples_filtered Tuples dropped by [[filter]] rules, per rule (not indexed; their bytes count as read).\n\
                 # TYPE flowlogd_tuples_filtered counter\n\
                 flowlogd_tuples_filtered_total{rule=\"drop-probes\"} 7\n\
                 flowlogd_tuples_filtered_total{rule=\"keep.denied\"} 0\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn shared_ownership_figures_are_per_source_and_absent_when_it_is_off() {
        let m = Arc::new(Metrics::new([(
            "vnet".to_string(),
            Arc::new(StorageStats::default()),
        )]));
        assert!(!m.render(0).contains("flowlogd_units_owned"));
        let _ = m.cluster.set(ClusterCounts(Box::new(|| {
            vec![ClusterSample {
                source: "vnet".into(),
                units_owned: 3,
                claims: 5,
                losses: 1,
                requests: 40,
            }]
        })));
        let text = m.render(0);
        for line in [
            "flowlogd_units_owned{source=\"vnet\"} 3\n",
            "flowlogd_units_claimed_total{source=\"vnet\"} 5\n",
            "flowlogd_units_lost_total{source=\"vnet\"} 1\n",
            "flowlogd_coordination_requests_total{source=\"vnet\"} 40\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[test]
    fn renders_prometheus_text_with_labels_and_histogram() {
        let m = Arc::new(Metrics::new([(
            "vnet".to_string(),
            Arc::new(StorageStats::default()),
        )]));
        m.sources[0].add(&m.sources[0].documents_indexed, 42);
        m.sources[0]
            .newest_indexed_ms
            .store(1_000, Ordering::Relaxed);
        m.observe_bulk_latency(Duration::from_millis(30));
        let text = m.render(11_000);
        assert!(
            text.contains("flowlogd_documents_indexed_total{source=\"vnet\"} 42"),
            "{text}"
        );
        assert!(
            text.contains("flowlogd_lag_seconds{source=\"vnet\"} 10.0"),
            "{text}"
        );
        assert!(
            text.contains("flowlogd_bulk_latency_seconds_bucket{le=\"0.025\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("flowlogd_bulk_latency_seconds_bucket{le=\"0.05\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("flowlogd_bulk_latency_seconds_count 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "# TYPE flowlogd_bulk_item_retries counter\nflowlogd_bulk_item_retries_total 0"
            ),
            "{text}"
        );
        assert!(
            text.ends_with("# EOF\n"),
            "OpenMetrics ends with # EOF: {text}"
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "not a number: {line}");
        }
    }

    #[test]
    fn readiness_needs_recent_listing_and_no_stuck_bulk() {
        let m = Arc::new(Metrics::new([(
            "vnet".to_string(),
            Arc::new(StorageStats::default()),
        )]));
        let minute = Duration::from_secs(60);
        assert!(m.readiness(100_000, minute, minute).is_err());
        m.registry_open.store(true, Ordering::Relaxed);
        assert!(
            m.readiness(100_000, minute, minute)
                .unwrap_err()
                .contains("vnet")
        );
        m.sources[0]
            .last_list_ok_ms
            .store(90_000, Ordering::Relaxed);
        assert!(m.readiness(100_000, minute, minute).is_ok());
        let batch = m.batch_started(10_000);
        assert!(
            m.readiness(100_000, minute, minute)
                .unwrap_err()
                .contains("bulk")
        );
        drop(batch);
        assert!(
            m.readiness(200_000, Duration::from_secs(500), minute)
                .is_ok()
        );
    }

    #[test]
    fn a_batch_stuck_past_the_bulk_window_makes_readyz_fail_while_other_batches_succeed() {
        let m = Arc::new(Metrics::new([(
            "vnet".to_string(),
            Arc::new(StorageStats::default()),
        )]));
        let window = Duration::from_secs(120);
        m.registry_open.store(true, Ordering::Relaxed);
        m.sources[0]
            .last_list_ok_ms
            .store(195_000, Ordering::Relaxed);
        // One batch keeps failing from t=0 s; others start and succeed around it.
        let _stuck = m.batch_started(0);
        drop(m.batch_started(10_000));
        m.last_bulk_ok_ms.store(190_000, Ordering::Relaxed);
        let verdict = m.readiness(200_000, window, window);
        assert!(
            verdict
                .as_ref()
                .is_err_and(|reason| reason.contains("200s")),
            "a batch in delivery for 200 s with a 120 s window: {verdict:?}"
        );
    }
}
