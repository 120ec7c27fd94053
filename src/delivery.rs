//! Delivery: takes read chunks over from the readers (holding their blobs busy until the ack
//! tracker has them), groups their documents into per-source batches, sends each batch through
//! the bulk sink within `max_in_flight`, acknowledges what the engine answered so offsets
//! commit, and flushes the registry; a batch task that dies gives its chunks up.
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::ack::{AckTracker, ChunkId};
use crate::metrics::{Metrics, SourceMetrics};
use crate::registry::Registry;
use crate::sink::bulk::BulkSink;
use crate::sink::dead_letter::ItemOrigin;
use crate::sink::document::{BulkBuffer, BulkItem};
use crate::source::reader::{Chunk, ChunkSink, ReadError};

/// Blobs that must not be planned again yet, with how many holds each has: one while a read of
/// it runs, and one for each of its chunks between the reader and the delivery stage (where
/// the ack tracker takes over as the record of its pending chunks). Holds are guards, so a
/// read task that panics releases its blob as it unwinds instead of stranding it.
#[derive(Clone, Default)]
pub(crate) struct BlobHolds(Arc<Mutex<HashMap<(usize, String), usize>>>);

impl BlobHolds {
    pub(crate) fn hold(&self, source: usize, blob: &str) -> BlobHold {
        let key = (source, blob.to_owned());
        if let Ok(mut holds) = self.0.lock() {
            *holds.entry(key.clone()).or_default() += 1;
        }
        BlobHold {
            holds: self.clone(),
            key,
        }
    }

    pub(crate) fn is_held(&self, source: usize, blob: &str) -> bool {
        self.0
            .lock()
            .map(|h| h.contains_key(&(source, blob.to_owned())))
            .unwrap_or(true)
    }
}

/// One hold on a blob (see [`BlobHolds`]); released when dropped.
pub(crate) struct BlobHold {
    holds: BlobHolds,
    key: (usize, String),
}

impl Drop for BlobHold {
    fn drop(&mut self) {
        if let Ok(mut holds) = self.holds.0.lock()
            && let Some(count) = holds.get_mut(&self.key)
        {
            *count -= 1;
            if *count == 0 {
                holds.remove(&self.key);
            }
        }
    }
}

/// A chunk on its way to the delivery stage, holding its blob until the ack tracker has it.
pub(crate) struct HeldChunk {
    chunk: Chunk,
    hold: BlobHold,
}

/// The daemon's [`ChunkSink`]: each chunk takes a hold on its blob before it enters the channel.
pub(crate) struct HoldingSender {
    pub(crate) tx: mpsc::Sender<HeldChunk>,
    pub(crate) holds: BlobHolds,
}

impl ChunkSink for HoldingSender {
    async fn send(&mut self, chunk: Chunk) -> Result<(), ReadError> {
        let hold = self.holds.hold(chunk.source, &chunk.blob);
        self.tx
            .send(HeldChunk { chunk, hold })
            .await
            .map_err(|_| ReadError::Closed)
    }
}

/// Documents of one source waiting to be sent, and which chunks they belong to.
#[derive(Debug, Default)]
pub(crate) struct PendingBatch {
    docs: BulkBuffer,
    /// (chunk, items of that chunk in this batch), in order.
    parts: Vec<(ChunkId, usize)>,
    /// Per item: blob, record offset, tuple index (for dead letters).
    origins: Vec<(Arc<str>, u64, u32)>,
    newest_time_ms: Option<i64>,
}

/// Groups the documents of chunks into one batch per source, of at most `max_docs` documents
/// and `max_bytes` bytes, remembering how many documents of which chunk each batch carries
/// (the ack tracker's accounting). No I/O: the stage sends what it returns.
#[derive(Debug)]
pub(crate) struct Batcher {
    batches: Vec<PendingBatch>,
    max_docs: usize,
    max_bytes: usize,
}

impl Batcher {
    pub(crate) fn new(sources: usize, max_docs: usize, max_bytes: usize) -> Batcher {
        Batcher {
            batches: (0..sources).map(|_| PendingBatch::default()).collect(),
            max_docs,
            max_bytes,
        }
    }

    /// Adds the documents of chunk `id` to its source's batch; returns the batches that became
    /// full on the way, in order (source, batch). A chunk may span several batches.
    pub(crate) fn add(
        &mut self,
        id: ChunkId,
        chunk: &Chunk,
        blob_path: Arc<str>,
    ) -> Vec<(usize, PendingBatch)> {
        let source = chunk.source;
        let mut full = Vec::new();
        let mut count_in_batch = 0usize;
        for item in &chunk.docs.items {
            let batch = &mut self.batches[source];
            let size = item.end - item.action_start;
            if !batch.docs.is_empty()
                && (batch.docs.len() >= self.max_docs
                    || batch.docs.body.len() + size > self.max_bytes)
            {
                if count_in_batch > 0 {
                    batch.parts.push((id, count_in_batch));
                    count_in_batch = 0;
                }
                full.push((source, std::mem::take(batch)));
            }
            let batch = &mut self.batches[source];
            let start = batch.docs.body.len();
            batch
                .docs
                .body
                .extend_from_slice(&chunk.docs.body[item.range()]);
            let shift = |x: usize| x - item.action_start + start;
            batch.docs.items.push(BulkItem {
                action_start: start,
                doc_start: shift(item.doc_start),
                end: shift(item.end),
                record_offset: item.record_offset,
                tuple_index: item.tuple_index,
            });
            batch
                .origins
                .push((blob_path.clone(), item.record_offset, item.tuple_index));
            count_in_batch += 1;
        }
        let batch = &mut self.batches[source];
        batch.parts.push((id, count_in_batch));
        batch.newest_time_ms = batch.newest_time_ms.max(chunk.newest_time_ms);
        if batch.docs.len() >= self.max_docs || batch.docs.body.len() >= self.max_bytes {
            full.push((source, std::mem::take(batch)));
        }
        full
    }

    /// Every non-empty batch (the flush interval passed, or the input ended).
    pub(crate) fn take_all(&mut self) -> Vec<(usize, PendingBatch)> {
        self.batches
            .iter_mut()
            .enumerate()
            .filter(|(_, batch)| !batch.docs.is_empty())
            .map(|(source, batch)| (source, std::mem::take(batch)))
            .collect()
    }
}

pub(crate) struct DeliveryStage {
    pub(crate) sink: BulkSink,
    pub(crate) acks: Arc<Mutex<AckTracker>>,
    pub(crate) registry: Registry,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) containers: Vec<Arc<str>>,
    pub(crate) max_docs: usize,
    pub(crate) max_bytes: usize,
    pub(crate) flush_interval: Duration,
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) cancel: CancellationToken,
    pub(crate) errors: Arc<std::sync::atomic::AtomicU64>,
    /// Registry flushes run one at a time (see [`DeliveryStage::flush_registry`]).
    pub(crate) flush_lock: tokio::sync::Mutex<()>,
    /// Acknowledgements so far, and how many of them the last finished flush covers.
    pub(crate) commits: std::sync::atomic::AtomicU64,
    pub(crate) flushed: std::sync::atomic::AtomicU64,
}

/// Batches in delivery: their tasks, and the chunks each one carries, so that a task that
/// panics can release those chunks' blobs (they are read again from their committed offsets)
/// instead of leaving them pending, and unreadable, until restart.
#[derive(Default)]
struct Deliveries {
    tasks: JoinSet<()>,
    chunks: HashMap<tokio::task::Id, (usize, Vec<ChunkId>)>,
}

impl DeliveryStage {
    pub(crate) async fn run(self, mut rx: mpsc::Receiver<HeldChunk>) {
        let stage = Arc::new(self);
        let mut batches =
            Batcher::new(stage.metrics.sources.len(), stage.max_docs, stage.max_bytes);
        let mut inflight = Deliveries::default();
        let mut tick = tokio::time::interval(stage.flush_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                chunk = rx.recv() => {
                    let Some(chunk) = chunk else { break };
                    stage.accept(chunk, &mut batches, &mut inflight).await;
                }
                _ = tick.tick() => stage.flush_all(&mut batches, &mut inflight).await,
                Some(joined) = inflight.tasks.join_next_with_id(), if !inflight.tasks.is_empty() => {
                    stage.reap(joined, &mut inflight);
                }
            }
        }
        stage.flush_all(&mut batches, &mut inflight).await;
        while let Some(joined) = inflight.tasks.join_next_with_id().await {
            stage.reap(joined, &mut inflight);
        }
    }

    /// Forgets a finished delivery task; when it failed (panicked), gives its chunks up.
    fn reap(
        &self,
        joined: Result<(tokio::task::Id, ()), tokio::task::JoinError>,
        inflight: &mut Deliveries,
    ) {
        let error = match joined {
            Ok((id, ())) => {
                inflight.chunks.remove(&id);
                return;
            }
            Err(e) => e,
        };
        let Some((source, chunks)) = inflight.chunks.remove(&error.id()) else {
            return;
        };
        self.errors.fetch_add(1, Ordering::Relaxed);
        let blobs = match self.acks.lock() {
            Ok(mut acks) => acks.abandon(&chunks),
            Err(_) => Vec::new(),
        };
        let m = &self.metrics.sources[source];
        tracing::error!(source = %m.name, blobs = ?blobs, error = %error, "batch delivery task failed (a bug: please report it); its blobs are read again next poll from their committed offsets");
    }

    /// Sends every non-empty batch.
    async fn flush_all(self: &Arc<Self>, batcher: &mut Batcher, inflight: &mut Deliveries) {
        for (source, full) in batcher.take_all() {
            self.clone().send(source, full, inflight).await;
        }
    }

    /// Registers a chunk and moves its documents into its source's batch, sending full batches.
    async fn accept(
        self: &Arc<Self>,
        held: HeldChunk,
        batcher: &mut Batcher,
        inflight: &mut Deliveries,
    ) {
        let HeldChunk { chunk, hold } = held;
        self.metrics.chunks_moved.fetch_add(1, Ordering::Relaxed);
        let id = match self.acks.lock() {
            Ok(mut acks) => acks.register(&chunk),
            Err(_) => return,
        };
        // The ack tracker now keeps the blob busy (pending) until this chunk commits.
        drop(hold);
        let source = chunk.source;
        if chunk.docs.is_empty() {
            self.clone()
                .acknowledge_off_runtime(source, vec![(id, 0)], None)
                .await;
            return;
        }
        let container = self.containers[source].clone();
        let blob_path: Arc<str> = Arc::from(format!("{container}/{}", chunk.blob).as_str());
        for (source, full) in batcher.add(id, &chunk, blob_path) {
            self.clone().send(source, full, inflight).await;
        }
    }

    /// Sends a batch once a delivery slot is free (backpressure on the readers).
    async fn send(self: Arc<Self>, source: usize, batch: PendingBatch, inflight: &mut Deliveries) {
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return;
        };
        let in_flight = self
            .metrics
            .batch_started(chrono::Utc::now().timestamp_millis());
        let chunks = batch.parts.iter().map(|(id, _)| *id).collect();
        let handle = inflight.tasks.spawn(async move {
            let origin = |i: usize| {
                let (blob, record_offset, tuple_index) = &batch.origins[i];
                ItemOrigin { blob: blob.to_string(), record_offset: *record_offset, tuple_index: *tuple_index }
            };
            let result = self.sink.deliver(&batch.docs, &origin, &self.cancel).await;
            drop(permit);
            drop(in_flight);
            let m = &self.metrics.sources[source];
            match result {
                Ok(report) => {
                    m.add(&m.documents_indexed, report.created as u64);
                    m.add(&m.documents_existing, report.already_existed as u64);
                    m.add(&m.documents_dead_lettered, report.dead_lettered as u64);
                    self.metrics.bulk_item_retries.fetch_add(report.item_retries as u64, Ordering::Relaxed);
                    self.metrics.bulk_request_retries.fetch_add(report.request_retries as u64, Ordering::Relaxed);
                    for latency in &report.request_latencies {
                        self.metrics.observe_bulk_latency(*latency);
                    }
                    self.metrics.last_bulk_ok_ms.store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
                    self.clone().acknowledge_off_runtime(source, batch.parts, batch.newest_time_ms).await;
                    self.flush_registry().await;
                }
                Err(_) => {
                    tracing::warn!(source = %m.name, documents = batch.docs.len(), "batch delivery cancelled at shutdown; its blobs will be re-read from their committed offsets");
                }
            }
        });
        inflight.chunks.insert(handle.id(), (source, chunks));
    }

    /// Makes the offsets committed so far durable. One flush at a time: sled runs each
    /// `flush_async` on its own small I/O thread pool and parks that thread until the log
    /// buffer is written by a job queued on the same pool, so one concurrent flush per
    /// finished batch can fill the pool and hang every flush, and with it delivery, for good.
    /// A flush covers every commit made before it started, so a batch whose commit an earlier
    /// flush already covered skips its own.
    async fn flush_registry(&self) {
        let mine = self.commits.fetch_add(1, Ordering::SeqCst) + 1;
        let _one_at_a_time = self.flush_lock.lock().await;
        if self.flushed.load(Ordering::SeqCst) >= mine {
            return;
        }
        let covered = self.commits.load(Ordering::SeqCst);
        match self.registry.flush_async().await {
            Ok(_) => {
                self.flushed.fetch_max(covered, Ordering::SeqCst);
            }
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "cannot flush the registry; offsets stay in memory until the next flush");
            }
        }
    }

    /// [`DeliveryStage::acknowledge`] on the blocking pool: commits are sled compare-and-swaps
    /// under the ack tracker's lock, which may wait for sled's I/O.
    async fn acknowledge_off_runtime(
        self: Arc<Self>,
        source: usize,
        parts: Vec<(ChunkId, usize)>,
        newest_time_ms: Option<i64>,
    ) {
        let stage = self.clone();
        let done =
            tokio::task::spawn_blocking(move || stage.acknowledge(source, &parts, newest_time_ms))
                .await;
        if let Err(e) = done {
            self.errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(source = %self.metrics.sources[source].name, error = %e, "offset commit failed (a bug: please report it); the blobs are read again from their stored offsets");
        }
    }

    fn acknowledge(&self, source: usize, parts: &[(ChunkId, usize)], newest_time_ms: Option<i64>) {
        let Ok(mut acks) = self.acks.lock() else {
            return;
        };
        let m: &SourceMetrics = &self.metrics.sources[source];
        for (id, items) in parts {
            match acks.acknowledge(*id, *items) {
                Ok(committed) => {
                    for c in committed {
                        if let Some(t) = c.newest_time_ms.or(newest_time_ms) {
                            m.newest_indexed_ms.fetch_max(t, Ordering::Relaxed);
                        }
                        tracing::trace!(source = %m.name, blob = %c.blob, offset = c.to, "offset committed");
                    }
                }
                Err(e) => {
                    self.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(source = %m.name, error = %e, "offset commit refused; the blob will be re-read from its stored offset (ids make that safe)");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(blob: &str, from: u64, to: u64) -> Chunk {
        Chunk {
            source: 0,
            blob: Arc::from(blob),
            seq: 0,
            from,
            to,
            last: false,
            length_seen: to,
            etag: Arc::from("e"),
            last_modified_ms: 0,
            head_len: None,
            docs: BulkBuffer::new(),
            newest_time_ms: None,
        }
    }

    #[tokio::test]
    async fn a_blob_whose_chunks_wait_in_the_delivery_channel_stays_busy_after_its_read_ends() {
        let holds = BlobHolds::default();
        let (tx, mut rx) = mpsc::channel(4);
        let mut sender = HoldingSender {
            tx,
            holds: holds.clone(),
        };
        let read = holds.hold(0, "b");
        sender.send(chunk("b", 0, 10)).await.unwrap();
        sender.send(chunk("b", 10, 20)).await.unwrap();
        drop(read);
        assert!(holds.is_held(0, "b"), "two chunks are still in the channel");
        assert!(!holds.is_held(0, "other"));
        let first = rx.recv().await.unwrap();
        drop(first);
        assert!(holds.is_held(0, "b"), "one chunk is still in the channel");
        let second = rx.recv().await.unwrap();
        assert_eq!(second.chunk.to, 20);
        drop(second);
        assert!(!holds.is_held(0, "b"));
    }

    #[tokio::test]
    async fn a_read_task_that_panics_releases_its_blob_for_the_next_poll() {
        let holds = BlobHolds::default();
        let hold = holds.hold(1, "blob");
        let task = tokio::spawn(async move {
            let _hold = hold;
            panic!("a bug in the read path");
        });
        assert!(task.await.unwrap_err().is_panic());
        assert!(!holds.is_held(1, "blob"));
    }

    fn chunk_with(source: usize, blob: &str, docs: usize, doc_len: usize) -> Chunk {
        let mut c = chunk(blob, 0, 100);
        c.source = source;
        for i in 0..docs {
            let start = c.docs.body.len();
            c.docs.body.extend_from_slice(&vec![b'x'; doc_len]);
            c.docs.items.push(BulkItem {
                action_start: start,
                doc_start: start + 1,
                end: start + doc_len,
                record_offset: 7,
                tuple_index: i as u32,
            });
        }
        c
    }

    #[test]
    fn a_chunk_larger_than_a_batch_is_spread_over_batches_that_account_for_every_document() {
        let mut batcher = Batcher::new(2, 3, 1_000_000);
        let path: Arc<str> = Arc::from("c/b");
        // 7 documents, batches of 3: two full batches now, one document waiting.
        let full = batcher.add(40, &chunk_with(1, "b", 7, 10), path.clone());
        assert_eq!(full.len(), 2);
        for (source, batch) in &full {
            assert_eq!(*source, 1);
            assert_eq!(batch.docs.len(), 3);
            assert_eq!(batch.parts, vec![(40, 3)]);
            assert_eq!(batch.origins.len(), 3);
        }
        // The next chunk fills the waiting batch up: parts name both chunks.
        let full = batcher.add(41, &chunk_with(1, "b", 2, 10), path.clone());
        assert_eq!(full.len(), 1);
        assert_eq!(full[0].1.parts, vec![(40, 1), (41, 2)]);
        // Items keep their bytes, shifted into the batch body.
        let batch = &full[0].1;
        assert_eq!(batch.docs.body.len(), 30);
        assert_eq!(batch.docs.items[2].action_start, 20);
        assert_eq!(batch.docs.items[2].end, 30);
        assert_eq!(batch.docs.items[2].tuple_index, 1);
        assert!(batcher.take_all().is_empty());
    }

    #[test]
    fn batches_close_at_max_bytes_and_the_flush_takes_every_source_s_waiting_batch() {
        let mut batcher = Batcher::new(2, 1000, 25);
        let path: Arc<str> = Arc::from("c/b");
        // 10-byte documents, 25 bytes a batch: two per batch.
        let full = batcher.add(1, &chunk_with(0, "b", 5, 10), path.clone());
        let sizes: Vec<usize> = full.iter().map(|(_, b)| b.docs.len()).collect();
        assert_eq!(sizes, vec![2, 2]);
        assert!(batcher.add(2, &chunk_with(1, "c", 1, 10), path).is_empty());
        let waiting = batcher.take_all();
        let summary: Vec<(usize, Vec<(ChunkId, usize)>)> = waiting
            .into_iter()
            .map(|(source, b)| (source, b.parts))
            .collect();
        assert_eq!(summary, vec![(0, vec![(1, 1)]), (1, vec![(2, 1)])]);
    }
}
