//! Counters and gauges of the running daemon, rendered in the Prometheus text format for
//! `/metrics`, and the facts `/readyz` decides on.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::source::client::StorageStats;

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Per-source counters. Storage request counts live in the client's [`StorageStats`].
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
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
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
            latency_buckets: Default::default(),
            latency_count: AtomicU64::new(0),
            latency_sum_micros: AtomicU64::new(0),
            last_bulk_ok_ms: AtomicI64::new(0),
            batches_in_flight: Mutex::default(),
            next_batch: AtomicU64::new(0),
            registry_entries: AtomicU64::new(0),
            registry_open: std::sync::atomic::AtomicBool::new(false),
            polling: std::sync::atomic::AtomicBool::new(false),
            chunks_moved: AtomicU64::new(0),
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
                    .wrapping_add(st.retries)
            })
    }

    /// Records one bulk request's latency.
    pub fn observe_bulk_latency(&self, latency: Duration) {
        let secs = latency.as_secs_f64();
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.latency_buckets) {
            if secs <= *bound {
                add(bucket, 1);
            }
        }
        add(&self.latency_count, 1);
        add(
            &self.latency_sum_micros,
            latency.as_micros().min(u128::from(u64::MAX)) as u64,
        );
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

    /// The Prometheus text exposition of every metric.
    pub fn render(&self, now_ms: i64) -> String {
        let mut out = String::with_capacity(4096);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut family =
            |name: &str,
             kind: &str,
             help: &str,
             values: &mut dyn Iterator<Item = (String, String)>| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                for (labels, value) in values {
                    let _ = writeln!(out, "{name}{labels} {value}");
                }
            };
        let per_source = |f: &dyn Fn(&SourceMetrics) -> String| -> Vec<(String, String)> {
            self.sources
                .iter()
                .map(|s| (format!("{{source=\"{}\"}}", s.name), f(s)))
                .collect()
        };
        type Counter<'a> = (&'a str, &'a str, &'a dyn Fn(&SourceMetrics) -> String);
        let counters: [Counter; 13] = [
            (
                "flowlogd_documents_indexed_total",
                "Documents created in Elasticsearch.",
                &|s| load(&s.documents_indexed).to_string(),
            ),
            (
                "flowlogd_documents_existing_total",
                "Documents Elasticsearch already had (409 on create): replays, not duplicates.",
                &|s| load(&s.documents_existing).to_string(),
            ),
            (
                "flowlogd_documents_dead_lettered_total",
                "Documents rejected by Elasticsearch and written to the dead-letter file.",
                &|s| load(&s.documents_dead_lettered).to_string(),
            ),
            (
                "flowlogd_decode_problems_total",
                "Malformed records, tuples or bytes (dead-lettered).",
                &|s| load(&s.decode_problems).to_string(),
            ),
            (
                "flowlogd_records_total",
                "Flow-log records decoded.",
                &|s| load(&s.records).to_string(),
            ),
            (
                "flowlogd_blobs_read_total",
                "Blob reads (ranged GETs of new bytes).",
                &|s| load(&s.blobs_read).to_string(),
            ),
            ("flowlogd_bytes_new_total", "New blob bytes read.", &|s| {
                load(&s.bytes_new).to_string()
            }),
            (
                "flowlogd_bytes_downloaded_total",
                "Bytes downloaded from Blob Storage.",
                &|s| load(&s.storage.bytes_downloaded).to_string(),
            ),
            (
                "flowlogd_list_requests_total",
                "List Blobs requests.",
                &|s| load(&s.storage.list_requests).to_string(),
            ),
            (
                "flowlogd_blobs_listed_total",
                "Blob entries returned by listings.",
                &|s| load(&s.storage.blobs_listed).to_string(),
            ),
            (
                "flowlogd_storage_retries_total",
                "Retried storage requests.",
                &|s| load(&s.storage.retries).to_string(),
            ),
            (
                "flowlogd_read_errors_total",
                "Blob reads given up on for this poll (retried next poll).",
                &|s| load(&s.read_errors).to_string(),
            ),
            (
                "flowlogd_list_errors_total",
                "Listings given up on for this poll.",
                &|s| load(&s.list_errors).to_string(),
            ),
        ];
        for (name, help, f) in counters {
            family(name, "counter", help, &mut per_source(f).into_iter());
        }
        family(
            "flowlogd_lag_seconds",
            "gauge",
            "Now minus the newest tuple time indexed, per source (-1 before the first document).",
            &mut per_source(&|s| {
                let newest = s.newest_indexed_ms.load(Ordering::Relaxed);
                if newest == 0 {
                    "-1".into()
                } else {
                    format!("{:.3}", (now_ms - newest) as f64 / 1000.0)
                }
            })
            .into_iter(),
        );
        family(
            "flowlogd_bulk_item_retries_total",
            "counter",
            "Bulk items retried after 429/5xx.",
            &mut std::iter::once((String::new(), load(&self.bulk_item_retries).to_string())),
        );
        family(
            "flowlogd_bulk_request_retries_total",
            "counter",
            "Whole bulk requests retried after a failure.",
            &mut std::iter::once((String::new(), load(&self.bulk_request_retries).to_string())),
        );
        family(
            "flowlogd_registry_entries",
            "gauge",
            "Blobs tracked in the registry.",
            &mut std::iter::once((String::new(), load(&self.registry_entries).to_string())),
        );
        let _ = writeln!(
            out,
            "# HELP flowlogd_bulk_latency_seconds Latency of bulk requests.\n# TYPE flowlogd_bulk_latency_seconds histogram"
        );
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.latency_buckets) {
            let _ = writeln!(
                out,
                "flowlogd_bulk_latency_seconds_bucket{{le=\"{bound}\"}} {}",
                load(bucket)
            );
        }
        let count = load(&self.latency_count);
        let _ = writeln!(
            out,
            "flowlogd_bulk_latency_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "flowlogd_bulk_latency_seconds_sum {:.6}",
            load(&self.latency_sum_micros) as f64 / 1e6
        );
        let _ = writeln!(out, "flowlogd_bulk_latency_seconds_count {count}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text_with_labels_and_histogram() {
        let m = Metrics::new([("vnet".to_string(), Arc::new(StorageStats::default()))]);
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
            text.contains("flowlogd_lag_seconds{source=\"vnet\"} 10.000"),
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
