//! Carries out the poller's plan for a source: the listing (through the walker), the registry
//! entries it decides on (placeholders, `start_fresh` positions, retags, finished and gone
//! blobs), the deletes of rewritten blobs' documents, and the scheduling of the reads.
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::ack::AckTracker;
use crate::bulk_buffer::BulkBuffer;
use crate::config::SourceConfig;
use crate::config::document::BlobNames;
use crate::delivery::{BlobHolds, HeldChunk, HoldingSender, Pool};
use crate::encode::document::DocumentEncoder;
use crate::enrich::{Enricher, Filter};
use crate::metrics::Metrics;
use crate::pipeline::DecodeProblem;
use crate::poller::{self, Action, Prepare};
use crate::registry::{BlobEntry, BlobState, Registry, SourceState};
use crate::sink::bulk::BulkSink;
use crate::source::events::EventQueue;
use crate::source::layout::{HOUR_SECS, partition_of};
use crate::source::listing::BlobItem;
use crate::source::reader::{ReadLimits, ReadTask, end_of_records, read_blob};
use crate::source::walker::Walker;

/// One configured source as the daemon runs it: its walker (and storage client), its event
/// queue when event-driven, and when it was last listed.
pub(crate) struct SourceRuntime {
    pub(crate) index: usize,
    pub(crate) config: SourceConfig,
    pub(crate) walker: Walker,
    /// The queue of `[source.events]`, when event-driven.
    pub(crate) events: Option<EventQueue>,
    /// When this source was last listed by a poll (event-driven sources are listed only every
    /// `fallback_interval`).
    pub(crate) listed_at: Option<tokio::time::Instant>,
}

/// What a poll shares with the rest of the daemon: clones of the handles `App::new` builds, so
/// that polls, event-driven reads and delivery see one registry, one set of holds and one
/// error count.
#[derive(Clone)]
pub(crate) struct PollRunner {
    pub(crate) registry: Registry,
    /// Deletes a rewritten blob's documents (`on_rewrite = "replace"`) and holds the
    /// dead-letter file undecodable input is written to.
    pub(crate) sink: BulkSink,
    pub(crate) metrics: Arc<Metrics>,
    /// Blobs being read or with chunks on the way to delivery: not planned again meanwhile.
    pub(crate) holds: BlobHolds,
    /// Chunk buffers emptied by delivery, refilled by the readers (see [`Pool`]).
    pub(crate) chunk_buffers: Pool<BulkBuffer>,
    /// Which blobs still have chunks waiting for acknowledgement (a busy blob is not replanned).
    pub(crate) acks: Arc<Mutex<AckTracker>>,
    /// Failures counted into `RunSummary::errors`.
    pub(crate) errors: Arc<AtomicU64>,
    /// `[enrich]` and `[[network]]` lookups, shared by every encoder.
    pub(crate) enricher: Arc<Enricher>,
    /// `[[filter]]` rules and their drop counters, shared by every encoder.
    pub(crate) filter: Arc<Filter>,
    /// `[daemon] read_concurrency`: blobs read at once per source.
    pub(crate) read_concurrency: usize,
    /// Largest chunk a read cuts: `batch_max_bytes`, capped at the reader's maximum.
    pub(crate) chunk_bytes: usize,
}

impl PollRunner {
    /// Logs and counts a failed registry write of the planning step (none of them loses data:
    /// each is redone by a later poll, which the message says). True when it was stored.
    fn stored<T>(
        &self,
        result: Result<T, crate::registry::RegistryError>,
        source: &str,
        blob: &str,
        what_next: &str,
    ) -> bool {
        match result {
            Ok(_) => true,
            Err(e) => {
                self.error();
                tracing::error!(source = %source, blob = %blob, error = %e, "{what_next}");
                false
            }
        }
    }

    pub(crate) fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// One poll of one source: list the partitions that can still change, plan reads against
    /// the registry, read what grew. Failures are logged and retried on the next poll.
    pub(crate) async fn poll_source(
        &self,
        source: &mut SourceRuntime,
        tx: &mpsc::Sender<HeldChunk>,
    ) {
        let name = source.config.name.clone();
        let m = &self.metrics.sources[source.index];
        m.add(&m.polls, 1);
        let started = Instant::now();
        let before = m.storage.snapshot();
        let discovered = match source.walker.discover_if_due().await {
            Ok(ran) => ran,
            Err(e) => {
                m.add(&m.list_errors, 1);
                self.error();
                tracing::warn!(source = %name, error = %e, "resource discovery failed; retrying next poll");
                return;
            }
        };
        if discovered {
            self.prune_finished(source);
        }
        let now = chrono::Utc::now();
        let now_s = now.timestamp();
        let now_hour = now_s.div_euclid(HOUR_SECS);
        let state = match self.registry.source_state(&name) {
            Ok(s) => s,
            Err(e) => {
                self.error();
                tracing::error!(source = %name, error = %e, "cannot read source state; skipping this poll");
                return;
            }
        };
        let first_run = state.is_none();
        let since_hour = source.config.since.resolve(now_s).div_euclid(HOUR_SECS);
        // The previous hour always (late blocks); after downtime every hour since the last poll.
        let from_hour = match state {
            Some(s) => s.last_listed_hour.min(now_hour - 1),
            None => since_hour.min(now_hour),
        };
        if now_hour - from_hour > 2 {
            tracing::info!(source = %name, hours = now_hour - from_hour + 1, first_run, "listing a backlog of hour partitions");
        }
        let mut partitions = source.walker.partitions_for_hours(from_hour..=now_hour);
        // Shared ownership: units claimed unread get the window a first run would list.
        let (backlog, backlog_units) = source.walker.backlog(since_hour.min(now_hour)..=now_hour);
        partitions.extend(backlog);
        let active = match self.registry.active_blobs(&name) {
            Ok(a) => a,
            Err(e) => {
                self.error();
                tracing::error!(source = %name, error = %e, "cannot read registry; skipping this poll");
                return;
            }
        };
        partitions.extend(
            active
                .iter()
                .filter(|(blob, _)| source.walker.accepts(blob))
                .filter_map(|(blob, _)| partition_of(blob)),
        );
        // Past hours of a backlog are listed by day, month or year where that saves requests.
        let blobs = match source.walker.list_covering(&partitions, now_hour - 1).await {
            Ok(b) => b,
            Err(e) => {
                m.add(&m.list_errors, 1);
                self.error();
                tracing::warn!(source = %name, error = %e, "listing failed; retrying next poll");
                return;
            }
        };
        m.last_list_ok_ms
            .store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
        source.walker.backlog_listed(&backlog_units);

        let tasks = self.plan(source, &blobs, &partitions, first_run, now).await;
        let reads = tasks.len();
        self.read_all(source, tasks, tx).await;

        if let Err(e) = self.registry.put_source_state(
            &name,
            &SourceState {
                last_listed_hour: now_hour,
            },
        ) {
            self.error();
            tracing::error!(source = %name, error = %e, "cannot store source state");
        }
        let forget_before =
            now.timestamp_millis() - source.config.forget_gone_after.as_millis() as i64;
        match self.registry.forget_gone_older_than(&name, forget_before) {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(source = %name, entries = n, "forgot registry entries of blobs deleted by retention")
            }
            Err(e) => {
                tracing::warn!(source = %name, error = %e, "cannot forget entries of deleted blobs")
            }
        }
        let delta = m.storage.snapshot().since(&before);
        let newest = m.newest_indexed_ms.load(Ordering::Relaxed);
        tracing::info!(
            source = %name,
            partitions = partitions.len(),
            list_requests = delta.list_requests,
            blobs_listed = delta.blobs_listed,
            blobs_read = reads,
            bytes_downloaded = delta.bytes_downloaded,
            documents_total = m.documents_indexed.load(Ordering::Relaxed),
            lag_s = if newest == 0 { -1 } else { (chrono::Utc::now().timestamp_millis() - newest) / 1000 },
            elapsed_ms = started.elapsed().as_millis() as u64,
            "poll done"
        );
    }

    /// Compares listed blobs with the registry ([`poller::plan`]), carries out its decisions
    /// (new `start_fresh` positions, placeholders, rewrites, finished and deleted blobs) and
    /// returns the reads to do.
    pub(crate) async fn plan(
        &self,
        source: &SourceRuntime,
        blobs: &[BlobItem],
        partitions: &BTreeSet<String>,
        first_run: bool,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Vec<ReadTask> {
        let name = &source.config.name;
        let now_ms = now.timestamp_millis();
        let mut listing = Vec::with_capacity(blobs.len());
        for blob in blobs {
            match self.registry.get(name, &blob.name) {
                Ok(entry) => listing.push(poller::Listed {
                    blob: blob.clone(),
                    entry,
                    busy: self.is_busy(source.index, &blob.name),
                }),
                Err(e) => {
                    self.error();
                    tracing::error!(source = %name, blob = %blob.name, error = %e, "cannot read registry entry; skipping the blob this poll");
                }
            }
        }
        // Without the active entries, no blob is called gone this poll.
        let active: Vec<(String, bool)> = match self.registry.active_blobs(name) {
            Ok(active) => active
                .into_iter()
                .map(|(blob, _)| {
                    let busy = self.is_busy(source.index, &blob);
                    (blob, busy)
                })
                .collect(),
            Err(e) => {
                tracing::warn!(source = %name, error = %e, "cannot list active registry entries; deleted blobs are noticed next poll");
                Vec::new()
            }
        };
        let policy = poller::Policy {
            start: source.config.start,
            first_run,
            settle_ms: source.config.settle.as_millis() as i64,
            finish_after_ms: source.config.finish_after.as_millis() as i64,
            on_rewrite: source.config.on_rewrite,
        };
        let mut tasks = Vec::new();
        for action in poller::plan(&listing, &active, partitions, now_ms, &policy) {
            match action {
                Action::Read {
                    blob,
                    from,
                    prepare,
                    settled,
                    rewritten_from,
                } => {
                    if !self
                        .prepare(source, &blob, prepare, rewritten_from, now_ms)
                        .await
                    {
                        continue;
                    }
                    if !settled {
                        tracing::debug!(source = %name, blob = %blob.name, "blob changed less than `settle` ago; reading it later");
                        continue;
                    }
                    tasks.push(ReadTask { blob, from });
                }
                Action::FreshStart(blob) => self.record_fresh_start(source, &blob, now_ms).await,
                Action::Finish { blob, unread } => {
                    if unread > 0 {
                        tracing::warn!(source = %name, blob = %blob, unread_bytes = unread, "blob finished with unread bytes after the last complete record (an incomplete record that never completed)");
                    }
                    self.stored(
                        self.registry.mark_finished(name, &blob),
                        name,
                        &blob,
                        "cannot mark the blob finished; tried again next poll",
                    );
                }
                Action::Retag(blob) => {
                    let retagged = self.registry.update(name, &blob.name, |old| {
                        old.map(|o| BlobEntry {
                            etag: blob.etag.clone(),
                            last_modified: blob.last_modified.timestamp_millis(),
                            updated_at: now_ms,
                            ..o.clone()
                        })
                    });
                    self.stored(
                        retagged,
                        name,
                        &blob.name,
                        "cannot store the blob's new ETag; compared again next poll",
                    );
                }
                Action::Gone(blob) => {
                    tracing::info!(source = %name, blob = %blob, "blob is gone (deleted by retention?)");
                    self.stored(
                        self.registry.mark_gone(name, &blob, now_ms),
                        name,
                        &blob,
                        "cannot mark the blob gone; tried again next poll",
                    );
                }
            }
        }
        tasks
    }

    /// Brings a blob's registry entry where [`poller::Prepare`] says before it is read.
    /// Returns whether the blob may be read now (a failure is logged, counted, and retried by
    /// the next poll, which finds the same situation).
    async fn prepare(
        &self,
        source: &SourceRuntime,
        blob: &BlobItem,
        prepare: Prepare,
        rewritten_from: Option<u64>,
        now_ms: i64,
    ) -> bool {
        let name = &source.config.name;
        match prepare {
            Prepare::Nothing => true,
            // Invariant 8: a listed blob is never forgotten. An unseen blob gets an entry at
            // offset 0 before anything else happens to it, so its hour stays listed (as an
            // active entry) until it is read: its hour may never be "current or previous"
            // again (a first run's backlog, a catch-up after downtime, `settle` over an hour),
            // and the read may fail, be cut short by a crash, or outlive `shutdown_timeout`.
            Prepare::Remember => self.stored(
                self.registry
                    .put(name, &blob.name, &placeholder(blob, now_ms)),
                name,
                &blob.name,
                "cannot record a newly listed blob; skipping it this poll (it is listed again while its hour is)",
            ),
            Prepare::Reactivate => {
                self.stored(
                    self.registry.mark_active(name, &blob.name),
                    name,
                    &blob.name,
                    "cannot mark a grown blob active again; reading it anyway",
                );
                true
            }
            Prepare::Reset { replace } => {
                tracing::warn!(source = %name, blob = %blob.name, stored_offset = rewritten_from, length = blob.content_length, policy = ?source.config.on_rewrite, "blob was rewritten (shorter than what was read, or changed before the stored offset); reading it again from 0 (with on_rewrite = \"replace\", after deleting the documents of its old content)");
                // Reset to a placeholder at 0 rather than removed: if the re-read fails, the
                // entry keeps the blob's hour listed (invariant 8). Under `replace` it says
                // "rewritten" until the old documents are deleted, so a crash or a failed
                // delete is resumed, never skipped.
                let mut reset = placeholder(blob, now_ms);
                if replace {
                    reset.state = BlobState::Rewritten;
                }
                let stored = self.stored(
                    self.registry.put(name, &blob.name, &reset),
                    name,
                    &blob.name,
                    "cannot reset the entry of a rewritten blob; skipping it this poll",
                );
                stored && (!replace || self.replace_rewritten(source, blob, now_ms).await)
            }
            Prepare::FinishReplace => self.replace_rewritten(source, blob, now_ms).await,
        }
    }

    /// `on_rewrite = "replace"`: deletes the documents indexed from a rewritten blob's old
    /// content, then resets its entry to be read from 0. Returns whether the blob may be read
    /// now; on failure its entry stays "rewritten" and the next poll tries again.
    async fn replace_rewritten(
        &self,
        source: &SourceRuntime,
        blob: &BlobItem,
        now_ms: i64,
    ) -> bool {
        let name = &source.config.name;
        let indices = match source.config.index_pattern() {
            Ok(pattern) => pattern.wildcard(),
            Err(e) => {
                self.error();
                tracing::error!(source = %name, error = %e, "bad index pattern");
                return false;
            }
        };
        let names = BlobNames::new(source.walker.client().container_name(), &blob.name);
        match self
            .sink
            .delete_blob_documents(&indices, &names.path, &names.terms(source.config.schema))
            .await
        {
            Ok(deleted) => {
                tracing::info!(source = %name, blob = %blob.name, deleted, indices = %indices, "documents of the rewritten blob's old content deleted; reading it again from 0");
            }
            Err(e) => {
                self.error();
                tracing::warn!(source = %name, blob = %blob.name, error = %e, "cannot delete the documents of a rewritten blob (on_rewrite = \"replace\" needs the delete and delete_by_query privileges); it is not read until that succeeds, tried again next poll");
                return false;
            }
        }
        self.stored(
            self.registry
                .put(name, &blob.name, &placeholder(blob, now_ms)),
            name,
            &blob.name,
            "cannot store the reset entry of a rewritten blob; tried again next poll",
        )
    }

    /// Forgets finished blobs last touched more than `forget_gone_after` ago: their hours are
    /// never listed again, so without this the registry (and the per-poll scan of its active
    /// entries) would grow with history. Runs with resource discovery, not every poll.
    fn prune_finished(&self, source: &SourceRuntime) {
        let name = &source.config.name;
        let cutoff = chrono::Utc::now().timestamp_millis()
            - source.config.forget_gone_after.as_millis() as i64;
        let old: Vec<String> = self
            .registry
            .list(Some(name))
            .filter_map(Result::ok)
            .filter(|(_, _, e)| e.state == BlobState::Finished && e.updated_at < cutoff)
            .map(|(_, blob, _)| blob)
            .collect();
        for blob in &old {
            self.stored(
                self.registry.remove(name, blob),
                name,
                blob,
                "cannot forget a finished blob; tried again at the next discovery",
            );
        }
        if !old.is_empty() {
            tracing::info!(source = %name, entries = old.len(), "forgot finished blobs older than forget_gone_after");
        }
    }

    /// `start_fresh`: a blob that exists at first sight counts as read up to its last record.
    async fn record_fresh_start(&self, source: &SourceRuntime, blob: &BlobItem, now_ms: i64) {
        let name = &source.config.name;
        match end_of_records(source.walker.client(), blob).await {
            Ok(Some(offset)) => {
                let entry = BlobEntry::new(
                    offset,
                    blob.content_length,
                    &blob.etag,
                    blob.last_modified.timestamp_millis(),
                    now_ms,
                );
                if let Err(e) = self.registry.put(name, &blob.name, &entry) {
                    tracing::error!(source = %name, blob = %blob.name, error = %e, "cannot record start_fresh position");
                }
            }
            Ok(None) => {
                tracing::warn!(source = %name, blob = %blob.name, "start_fresh: no `]}}` tail found; the blob will be read from 0 next poll")
            }
            Err(e) => {
                self.error();
                tracing::warn!(source = %name, blob = %blob.name, error = %e, "start_fresh: cannot read the blob's tail; retrying next poll");
            }
        }
    }

    /// Whether a blob is being read, or has chunks on the way to or in delivery.
    pub(crate) fn is_busy(&self, source: usize, blob: &str) -> bool {
        self.holds.is_held(source, blob)
            || self
                .acks
                .lock()
                .map(|a| a.has_pending(source, blob))
                .unwrap_or(true)
    }

    /// Reads the planned blobs, `read_concurrency` at a time.
    pub(crate) async fn read_all(
        &self,
        source: &SourceRuntime,
        tasks: Vec<ReadTask>,
        tx: &mpsc::Sender<HeldChunk>,
    ) {
        let limits = ReadLimits {
            chunk_bytes: self.chunk_bytes,
            max_record_bytes: source.config.max_record_bytes,
        };
        let concurrency = self.read_concurrency;
        let schema = source.config.schema;
        let pattern = match source.config.index_pattern() {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(source = %source.config.name, error = %e, "bad index pattern");
                return;
            }
        };
        let mut set = JoinSet::new();
        // Which blob each read task reads: a panicked task returns only its id.
        let mut reading: HashMap<tokio::task::Id, String> = HashMap::new();
        let mut queue = tasks.into_iter();
        loop {
            while set.len() < concurrency {
                let Some(task) = queue.next() else { break };
                let read_hold = self.holds.hold(source.index, &task.blob.name);
                let client = source.walker.client().clone();
                let mut tx = HoldingSender {
                    tx: tx.clone(),
                    holds: self.holds.clone(),
                    buffers: self.chunk_buffers.clone(),
                };
                let blob_name = task.blob.name.clone();
                let mut encoder = DocumentEncoder::new(schema, pattern.clone())
                    .with_provenance(source.config.provenance())
                    .with_community_id(source.config.community_id)
                    .with_enrichment(&self.enricher, &self.filter);
                let metrics = self.metrics.clone();
                let dead_letter = self.sink.dead_letter().clone();
                let index = source.index;
                let source_name = source.config.name.clone();
                let container = client.container_name().to_owned();
                let handle = set.spawn(async move {
                    let m = &metrics.sources[index];
                    let blob_path = format!("{container}/{}", task.blob.name);
                    // Written and synced before the chunk covering it can be committed: a
                    // problem whose line cannot be stored stops the read (see `read_blob`).
                    let mut on_problem = |problem: DecodeProblem| -> Result<(), String> {
                        let excerpt: &[u8] = match &problem {
                            DecodeProblem::Tuple { error, .. } => error.tuple.as_bytes(),
                            DecodeProblem::Malformed { excerpt, .. }
                            | DecodeProblem::Record { excerpt, .. } => excerpt,
                        };
                        let written = off_the_workers(|| {
                            dead_letter
                                .write_problem(&blob_path, problem.offset(), &problem.to_string(), excerpt)
                                .and_then(|()| dead_letter.sync())
                        });
                        if let Err(e) = written {
                            tracing::error!(source = %source_name, blob = %task.blob.name, offset = problem.offset(), path = %dead_letter.path().display(), error = %e, "cannot write the dead-letter file; the read stops before this input and is tried again next poll");
                            return Err(e.to_string());
                        }
                        m.add(&m.decode_problems, 1);
                        tracing::warn!(source = %source_name, blob = %task.blob.name, offset = problem.offset(), problem = %problem, "undecodable input dead-lettered; continuing with the next record");
                        Ok(())
                    };
                    let result = read_blob(&client, &mut encoder, index, &task, limits, &mut tx, &mut on_problem).await;
                    drop(read_hold);
                    (task, result)
                });
                reading.insert(handle.id(), blob_name);
            }
            let Some(joined) = set.join_next_with_id().await else {
                break;
            };
            let m = &self.metrics.sources[source.index];
            let (task, result) = match joined {
                Ok((id, done)) => {
                    reading.remove(&id);
                    done
                }
                Err(e) => {
                    // Its hold was released as it unwound: the blob is planned again next poll
                    // from its committed offset; chunks it sent before commit as usual.
                    let blob = reading.remove(&e.id()).unwrap_or_default();
                    m.add(&m.read_errors, 1);
                    self.error();
                    tracing::error!(source = %source.config.name, blob = %blob, error = %e, "blob read task failed (a bug: please report it); the blob is read again next poll from its committed offset");
                    continue;
                }
            };
            match result {
                Ok(outcome) => {
                    m.add(&m.blobs_read, 1);
                    m.add(&m.bytes_new, outcome.bytes);
                    m.add(&m.records, outcome.stats.records);
                    tracing::debug!(source = %source.config.name, blob = %task.blob.name, from = task.from, bytes = outcome.bytes, documents = outcome.stats.documents, "blob read");
                }
                Err(e) => {
                    m.add(&m.read_errors, 1);
                    self.error();
                    tracing::warn!(source = %source.config.name, blob = %task.blob.name, from = task.from, error = %e, "blob read failed; it stays at its last committed offset and is tried again next poll");
                }
            }
        }
    }
}

/// The registry entry of a listed blob nothing has been read from yet: offset 0, nothing seen,
/// no ETag, so that the next listing classifies it as grown and reads it from 0.
fn placeholder(blob: &BlobItem, now_ms: i64) -> BlobEntry {
    BlobEntry::new(0, 0, "", blob.last_modified.timestamp_millis(), now_ms)
}

/// Runs `blocking` (a dead-letter write and fsync) from inside an async task without stalling
/// the other tasks of the worker it runs on: on the daemon's multi-thread runtime the worker
/// hands its other tasks over first (`block_in_place`). Used where the caller is synchronous
/// code in the middle of a read (the decoder's problem callback) and must not go on before the
/// line is durable, so `spawn_blocking` (which needs an await) does not fit. On a
/// current-thread runtime (some tests) it simply runs.
pub(crate) fn off_the_workers<R>(blocking: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(blocking),
        _ => blocking(),
    }
}
