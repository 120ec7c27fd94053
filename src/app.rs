//! Wiring and shutdown order: builds the registry, sink, sources, poll runner and event-driven
//! mode (`App::new`), sets up the sink, applies start policies, and runs the once and forever
//! loops (polls through `polling`, events through `event_driven`, the delivery task, shared
//! ownership rounds, enrichment reloads); on shutdown stops polling, drains deliveries, commits,
//! flushes the registry, then releases owned units.
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::ack::AckTracker;
use crate::bulk_buffer::BulkBuffer;
use crate::config::{Config, StartPolicy};
use crate::delivery::{BlobHolds, DeliveryStage, HeldChunk, Pool};
use crate::enrich::{Enricher, Filter};
use crate::event_driven::{EventDriven, PendingEvent};
use crate::metrics::StorageStats;
use crate::metrics::{FilterCounts, Metrics};
use crate::ownership::{Cluster, ClusterSettings};
use crate::polling::{PollRunner, SourceRuntime};
use crate::registry::Registry;
use crate::sink::bulk::BulkSink;
use crate::source::client::StorageClient;
use crate::source::events::EventQueue;
use crate::source::walker::Walker;

/// What `flowlogd once` prints when done.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct RunSummary {
    pub list_requests: u64,
    pub blobs_listed: u64,
    pub blobs_read: u64,
    pub bytes_downloaded: u64,
    pub bytes_new: u64,
    pub records: u64,
    pub documents_indexed: u64,
    /// Documents the index already had (409): replays after a crash or a reset.
    pub documents_existing: u64,
    pub documents_dead_lettered: u64,
    /// Tuples dropped by `[[filter]]` rules (read and acknowledged, not indexed).
    pub tuples_filtered: u64,
    /// The same per rule, when rules are configured.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tuples_filtered_by_rule: BTreeMap<String, u64>,
    /// Listing, read, decode and commit failures (each logged with its blob or batch).
    pub errors: u64,
}

/// A running flowlogd: sources, sink, registry, metrics.
pub struct App {
    config: Config,
    registry: Registry,
    sink: BulkSink,
    metrics: Arc<Metrics>,
    sources: Vec<SourceRuntime>,
    acks: Arc<Mutex<AckTracker>>,
    /// Chunk buffers emptied by delivery, refilled by the readers (see [`Pool`]).
    chunk_buffers: Pool<BulkBuffer>,
    errors: Arc<std::sync::atomic::AtomicU64>,
    /// `[enrich]` and `[[network]]` lookups, shared by every encoder.
    enricher: Arc<Enricher>,
    /// `[[filter]]` rules and their drop counters, shared by every encoder.
    filter: Arc<Filter>,
    /// Shared ownership (`[cluster] coordination_container`), when on.
    cluster: Option<Cluster>,
    /// Carries out polls and schedules reads.
    polling: PollRunner,
    /// The event-driven mode of the sources with `[source.events]`.
    events: EventDriven,
}

impl App {
    /// Opens the registry and builds the clients (no network I/O yet).
    pub fn new(config: Config) -> anyhow::Result<App> {
        let registry = Registry::open(&config.registry.path)?;
        let dead_letter_path = config.dead_letter_path();
        // Opened now so a bad path fails at startup, not at the first rejected document.
        let dead_letter =
            crate::sink::dead_letter::DeadLetter::open(&dead_letter_path).map_err(|e| {
                anyhow::anyhow!(
                    "cannot open the dead-letter file {}: {e}",
                    dead_letter_path.display()
                )
            })?;
        let sink = BulkSink::with_dead_letter(&config.elasticsearch, dead_letter)?;
        let (enricher, filter) =
            crate::enrich::build(&config.enrich, &config.networks, &config.filters)
                .map_err(|e| anyhow::anyhow!("enrichment: {e}"))?;
        let shard = match config.cluster.shard {
            Some(spec) => {
                let shard = spec
                    .resolve(&crate::shard::host_name())
                    .map_err(|e| anyhow::anyhow!("[cluster] {e}"))?;
                tracing::info!(shard = shard.index, shards = shard.count, spec = %spec, "static sharding: reading only the resources this shard owns");
                Some(shard)
            }
            None => None,
        };
        let coordination = ClusterSettings::from_config(&config.cluster);
        let mut owned_units = Vec::new();
        let mut sources = Vec::new();
        let mut stats = Vec::new();
        for (index, source) in config.sources.iter().enumerate() {
            let storage_stats = Arc::new(StorageStats::default());
            let client = StorageClient::from_config(&source.storage(), storage_stats.clone())
                .map_err(|e| anyhow::anyhow!("source {}: {e}", source.name))?;
            let walker = Walker::new(
                client,
                source.prefix.as_deref(),
                &source.resource_filter,
                source.discovery_interval,
            )
            .with_shard(shard);
            let walker = match &coordination {
                Some(_) => {
                    let units = crate::shard::OwnedUnits::default();
                    owned_units.push((source.name.clone(), source.storage(), units.clone()));
                    walker.with_owned_units(Some(units))
                }
                None => walker,
            };
            let events = match &source.events {
                Some(events) => Some(
                    EventQueue::new(
                        &source
                            .storage()
                            .resolve()
                            .map_err(|e| anyhow::anyhow!("source {}: {e}", source.name))?,
                        events,
                        source.account.as_deref(),
                        &source.endpoint_suffix,
                        storage_stats.clone(),
                    )
                    .map_err(|e| anyhow::anyhow!("source {}: [source.events]: {e}", source.name))?,
                ),
                None => None,
            };
            stats.push((source.name.clone(), storage_stats));
            sources.push(SourceRuntime {
                index,
                config: source.clone(),
                walker,
                events,
                listed_at: None,
            });
        }
        let cluster = match coordination {
            Some(settings) => Some(
                Cluster::new(settings, owned_units, &registry)
                    .map_err(|e| anyhow::anyhow!("[cluster]: {e}"))?,
            ),
            None => None,
        };
        let metrics = Arc::new(Metrics::new(stats));
        if !filter.is_empty() {
            let counted = Arc::clone(&filter);
            let _ = metrics.tuples_filtered.set(FilterCounts(Box::new(move || {
                counted
                    .drop_counts()
                    .into_iter()
                    .map(|(rule, n)| (rule.to_owned(), n))
                    .collect()
            })));
        }
        if let Some(cluster) = &cluster {
            let _ = metrics.cluster.set(cluster.counts());
        }
        metrics.registry_open.store(true, Ordering::Relaxed);
        metrics
            .registry_entries
            .store(registry.len() as u64, Ordering::Relaxed);
        let acks = Arc::new(Mutex::new(AckTracker::new(
            registry.clone(),
            config.sources.iter().map(|s| s.name.clone()).collect(),
        )));
        // At most this many chunk buffers exist at once: the channel's 2 × max_in_flight, one
        // being moved into a batch, per read the one being filled and the rest of a record cut
        // inside it, and those the batches hold slices of (max_in_flight + 2 batches, each of
        // at most batch_max_bytes in chunks at least 8/9 full, plus one at either end).
        let es = &config.elasticsearch;
        let chunk_bytes = es
            .batch_max_bytes
            .min(crate::source::reader::MAX_CHUNK_BYTES);
        let per_batch = es.batch_max_bytes / chunk_bytes.max(1) * 9 / 8 + 2;
        let chunk_buffers = Pool::new(
            2 * es.max_in_flight
                + 2 * config.daemon.read_concurrency
                + 1
                + (es.max_in_flight + 2) * per_batch,
        );
        let errors = Arc::default();
        let polling = PollRunner {
            registry: registry.clone(),
            sink: sink.clone(),
            metrics: metrics.clone(),
            holds: BlobHolds::default(),
            chunk_buffers: chunk_buffers.clone(),
            acks: acks.clone(),
            errors: Arc::clone(&errors),
            enricher: Arc::clone(&enricher),
            filter: Arc::clone(&filter),
            read_concurrency: config.daemon.read_concurrency,
            chunk_bytes,
        };
        let events = EventDriven {
            polling: polling.clone(),
            registry: registry.clone(),
            dead_letter: sink.dead_letter().clone(),
            metrics: metrics.clone(),
            shared: config.cluster.shard.is_some()
                || config.cluster.coordination_container.is_some(),
        };
        Ok(App {
            config,
            registry,
            sink,
            metrics,
            sources,
            acks,
            chunk_buffers,
            errors,
            enricher,
            filter,
            cluster,
            polling,
            events,
        })
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    pub fn sink(&self) -> &BulkSink {
        &self.sink
    }

    /// Installs index templates (and the ILM policy) when configured.
    pub async fn setup_sink(&self) -> anyhow::Result<()> {
        if !self.config.elasticsearch.install_template {
            return Ok(());
        }
        let targets = crate::sink::bulk::SetupTarget::for_sources(&self.config.sources)?;
        let report = self.sink.setup(&targets).await?;
        if let Some(skipped) = &report.skipped {
            tracing::info!(reason = %skipped, "index template setup skipped");
        }
        match &report.lifecycle {
            crate::sink::bulk::LifecycleOutcome::Installed { engine, policy } => {
                tracing::info!(policy = %policy, engine = %engine, "lifecycle policy installed")
            }
            crate::sink::bulk::LifecycleOutcome::Skipped { reason } => {
                tracing::info!(reason = %reason, "lifecycle policy skipped")
            }
            crate::sink::bulk::LifecycleOutcome::NotConfigured => {}
        }
        Ok(())
    }

    /// Applies `start_over`: forgets stored offsets of those sources, once, at startup.
    fn apply_start_policies(&self) -> anyhow::Result<()> {
        for s in &self.sources {
            if s.config.start == StartPolicy::StartOver {
                let removed = self.registry.reset(Some(&s.config.name), None)?;
                self.registry.remove_source_state(&s.config.name)?;
                tracing::warn!(source = %s.config.name, entries = removed, "start = \"start_over\": stored offsets forgotten, the window is read again (document ids make the re-read duplicate-free)");
            }
        }
        Ok(())
    }

    /// One pass over every source until caught up, then drain and commit.
    pub async fn run_once(mut self) -> anyhow::Result<RunSummary> {
        self.apply_start_policies()?;
        let cancel = CancellationToken::new();
        let (tx, delivery) = self.start_delivery(cancel.clone());
        let mut sources = std::mem::take(&mut self.sources);
        // Once claims every free unit (not a fair share), reads, mirrors and releases them all.
        let cluster_stop = CancellationToken::new();
        let _stop_cluster = cluster_stop.clone().drop_guard();
        let renewals = match &self.cluster {
            Some(cluster) => {
                cluster.claim_all_free().await;
                Some(start_cluster(cluster, &mut sources, cluster_stop.clone()).await)
            }
            None => None,
        };
        for source in &mut sources {
            self.polling.poll_source(source, &tx).await;
        }
        drop(tx);
        delivery
            .await
            .map_err(|e| anyhow::anyhow!("delivery task failed: {e}"))?;
        self.registry.flush_async().await?;
        self.stop_cluster(cluster_stop, renewals).await;
        self.sources = sources;
        Ok(self.summary())
    }

    /// Polls every `interval` until `shutdown` fires, then drains within `shutdown_timeout`.
    pub async fn run(
        mut self,
        shutdown: CancellationToken,
        mut on_ready: impl FnMut(),
    ) -> anyhow::Result<RunSummary> {
        self.apply_start_policies()?;
        let abort_delivery = CancellationToken::new();
        let (tx, delivery) = self.start_delivery(abort_delivery.clone());
        // Stops the reload task whichever way this function returns.
        let _stop_reloading = self.start_enrichment_reload().drop_guard();
        let interval = self.config.daemon.interval;
        let mut sources = std::mem::take(&mut self.sources);
        let cluster_stop = CancellationToken::new();
        let _stop_cluster = cluster_stop.clone().drop_guard();
        let renewals = match &self.cluster {
            Some(cluster) => Some(start_cluster(cluster, &mut sources, cluster_stop.clone()).await),
            None => None,
        };
        let mut ready_sent = false;
        let mut next = tokio::time::Instant::now();
        let mut delivery = delivery;
        // Event-driven sources: a receiver per queue feeds `events`; stopped on return.
        let stop_receiving = CancellationToken::new();
        let _stop_receiving = stop_receiving.clone().drop_guard();
        let mut events = self.events.start_receivers(&sources, &stop_receiving);
        let mut pending_events: Vec<PendingEvent> = Vec::new();
        let mut completion = tokio::time::interval(std::time::Duration::from_millis(500));
        completion.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        'poll: loop {
            self.metrics.polling.store(true, Ordering::Relaxed);
            for source in &mut sources {
                // Event-driven sources are listed only to catch lost events.
                let listing_due = match (&source.config.events, source.listed_at) {
                    (Some(events), Some(at)) => at.elapsed() >= events.fallback_interval,
                    _ => true,
                };
                if !listing_due {
                    continue;
                }
                tokio::select! {
                    _ = self.polling.poll_source(source, &tx) => {}
                    _ = shutdown.cancelled() => break 'poll,
                    // Polling on without delivery would read and never commit.
                    stopped = &mut delivery => return Err(delivery_stopped(stopped)),
                }
                source.listed_at = Some(tokio::time::Instant::now());
            }
            self.metrics.polling.store(false, Ordering::Relaxed);
            if !ready_sent {
                on_ready();
                ready_sent = true;
            }
            // Counting walks the whole tree: off the runtime.
            let registry = self.registry.clone();
            if let Ok(entries) = tokio::task::spawn_blocking(move || registry.len()).await {
                self.metrics
                    .registry_entries
                    .store(entries as u64, Ordering::Relaxed);
            }
            next += interval;
            // Until the next poll: events as they come, and their messages deleted as their
            // blobs' reads commit.
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(next) => break,
                    _ = shutdown.cancelled() => break 'poll,
                    stopped = &mut delivery => return Err(delivery_stopped(stopped)),
                    Some(first) = events.recv() => {
                        let mut batch = vec![first];
                        while let Ok(more) = events.try_recv() {
                            batch.push(more);
                        }
                        // Cancelled like a poll on shutdown: unfinished messages reappear.
                        tokio::select! {
                            _ = self.events.handle_events(&mut sources, batch, &tx, &mut pending_events) => {}
                            _ = shutdown.cancelled() => break 'poll,
                        }
                    }
                    _ = completion.tick(), if !pending_events.is_empty() => {
                        self.events.complete_events(&sources, &mut pending_events).await;
                    }
                }
            }
            if next < tokio::time::Instant::now() {
                next = tokio::time::Instant::now();
            }
        }
        tracing::info!(
            timeout_s = self.config.daemon.shutdown_timeout.as_secs(),
            "shutting down: polling stopped, draining deliveries"
        );
        drop(tx);
        let deadline = self.config.daemon.shutdown_timeout;
        if tokio::time::timeout(deadline, &mut delivery).await.is_err() {
            tracing::warn!(
                "shutdown timeout reached: undelivered batches are abandoned and will be re-read after restart"
            );
            abort_delivery.cancel();
            let _ = delivery.await;
        }
        self.registry.flush_async().await?;
        // After the last commit, so that the released checkpoints hold everything read.
        self.stop_cluster(cluster_stop, renewals).await;
        self.sources = sources;
        let summary = self.summary();
        tracing::info!(
            pending_chunks = self.acks.lock().map(|a| a.pending_chunks()).unwrap_or(0),
            "registry flushed; stopped"
        );
        Ok(summary)
    }

    /// Stops the ownership rounds and releases every held unit with its final checkpoint.
    async fn stop_cluster(
        &self,
        stop: CancellationToken,
        renewals: Option<tokio::task::JoinHandle<()>>,
    ) {
        stop.cancel();
        if let Some(task) = renewals {
            let _ = task.await;
        }
        if let Some(cluster) = &self.cluster {
            cluster.release_all().await;
        }
    }

    /// Checks the `[enrich]` files for changes every `reload_interval`, on the blocking pool
    /// (a service tags file is ~5 MB of JSON), until the returned token is cancelled. Encoders
    /// pick up a reloaded table at their next record.
    fn start_enrichment_reload(&self) -> CancellationToken {
        let stop = CancellationToken::new();
        if !self.enricher.watches_files() {
            return stop;
        }
        let enricher = Arc::clone(&self.enricher);
        let every = self.config.enrich.reload_interval;
        let stopped = stop.clone();
        tokio::spawn(async move {
            let mut next = tokio::time::Instant::now() + every;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(next) => {}
                    _ = stopped.cancelled() => return,
                }
                let enricher = Arc::clone(&enricher);
                // Outcomes are logged by the enricher itself (file, what happened, what next).
                if let Err(e) =
                    tokio::task::spawn_blocking(move || enricher.reload_if_changed()).await
                {
                    tracing::error!(error = %e, "enrichment file check failed; trying again at the next interval");
                }
                next += every;
            }
        });
        stop
    }

    fn summary(&self) -> RunSummary {
        let mut s = RunSummary {
            errors: self.errors.load(Ordering::Relaxed),
            ..RunSummary::default()
        };
        for m in &self.metrics.sources {
            let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            s.list_requests += load(&m.storage.list_requests);
            s.blobs_listed += load(&m.storage.blobs_listed);
            s.blobs_read += load(&m.blobs_read);
            s.bytes_downloaded += load(&m.storage.bytes_downloaded);
            s.bytes_new += load(&m.bytes_new);
            s.records += load(&m.records);
            s.documents_indexed += load(&m.documents_indexed);
            s.documents_existing += load(&m.documents_existing);
            s.documents_dead_lettered +=
                load(&m.documents_dead_lettered) + load(&m.decode_problems);
        }
        for (rule, dropped) in self.filter.drop_counts() {
            s.tuples_filtered += dropped;
            s.tuples_filtered_by_rule.insert(rule.to_owned(), dropped);
        }
        s
    }

    /// Starts the batching and delivery stage; returns the chunk channel and its task.
    fn start_delivery(
        &self,
        cancel: CancellationToken,
    ) -> (mpsc::Sender<HeldChunk>, tokio::task::JoinHandle<()>) {
        let es = &self.config.elasticsearch;
        let (tx, rx) = mpsc::channel::<HeldChunk>(es.max_in_flight * 2);
        let stage = DeliveryStage {
            sink: self.sink.clone(),
            acks: self.acks.clone(),
            registry: self.registry.clone(),
            metrics: self.metrics.clone(),
            containers: self
                .sources
                .iter()
                .map(|s| Arc::from(s.walker.client().container_name()))
                .collect(),
            max_docs: es.batch_max_docs,
            max_bytes: es.batch_max_bytes,
            flush_interval: es.flush_interval,
            permits: Arc::new(Semaphore::new(es.max_in_flight)),
            cancel,
            errors: self.errors.clone(),
            flush_lock: tokio::sync::Mutex::new(()),
            commits: std::sync::atomic::AtomicU64::new(0),
            flushed: std::sync::atomic::AtomicU64::new(0),
            chunk_buffers: self.chunk_buffers.clone(),
            // One batch being filled per source, one waiting for a slot, max_in_flight sent.
            batch_buffers: Pool::new(es.max_in_flight + self.sources.len() + 1),
        };
        (tx, tokio::spawn(stage.run(rx)))
    }
}

/// Discovers every source's units, runs a first ownership round (so the first poll already
/// reads what this instance claims) and starts the rounds that follow.
async fn start_cluster(
    cluster: &Cluster,
    sources: &mut [SourceRuntime],
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    for source in sources.iter_mut() {
        if let Err(e) = source.walker.discover().await {
            tracing::warn!(source = %source.config.name, error = %e, "resource discovery failed; units are claimed after the next one");
        }
    }
    cluster.start().await;
    cluster.spawn(stop)
}

/// The error `flowlogd run` stops with when the delivery stage ended while polling went on.
fn delivery_stopped(outcome: Result<(), tokio::task::JoinError>) -> anyhow::Error {
    match outcome {
        Ok(()) => anyhow::anyhow!(
            "the delivery stage stopped unexpectedly; stopping (uncommitted reads are read again after restart)"
        ),
        Err(e) => anyhow::anyhow!(
            "the delivery stage failed ({e}); stopping (uncommitted reads are read again after restart)"
        ),
    }
}
