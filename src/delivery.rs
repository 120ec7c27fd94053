//! Delivery: takes read chunks over from the readers (holding their blobs busy until the ack
//! tracker has them), groups their documents into per-source batches, sends each batch through
//! the bulk sink within `max_in_flight`, acknowledges what the engine answered so offsets
//! commit, and flushes the registry; a batch task that dies gives its chunks up. The hand-off
//! itself, [`ChunkSink`], is defined here: the reader fills chunks and sends them to it.
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::ack::{AckTracker, Chunk, ChunkId};
use crate::bulk_buffer::{BulkBuffer, BulkItem};
use crate::metrics::{Metrics, SourceMetrics};
use crate::registry::Registry;
use crate::sink::bulk::{BulkBody, BulkSink};
use crate::sink::dead_letter::ItemOrigin;

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

/// Emptied buffers kept for reuse, at most `keep` of them (more are freed). Why: a buffer of
/// a megabyte or more is a fresh mapping from glibc (above its mmap threshold), so every byte
/// written into a new one first costs a page fault: a fifth of flowlogd's CPU went to faults
/// on fresh chunk and batch buffers. Reused, they stay mapped, and what the daemon holds is
/// the buffers in use at the busiest moment, no more (invariant 6).
pub(crate) struct Pool<T> {
    free: Arc<Mutex<Vec<T>>>,
    keep: usize,
}

impl<T> std::fmt::Debug for Pool<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("keep", &self.keep).finish()
    }
}

impl<T> Clone for Pool<T> {
    fn clone(&self) -> Self {
        Pool {
            free: self.free.clone(),
            keep: self.keep,
        }
    }
}

impl<T> Pool<T> {
    pub(crate) fn new(keep: usize) -> Pool<T> {
        Pool {
            free: Arc::new(Mutex::new(Vec::with_capacity(keep))),
            keep,
        }
    }

    /// A buffer given back earlier, if any.
    pub(crate) fn take(&self) -> Option<T> {
        self.free.lock().ok()?.pop()
    }

    /// Keeps `buffer` for the next [`Pool::take`], unless `keep` are kept already.
    pub(crate) fn give(&self, buffer: T) {
        if let Ok(mut free) = self.free.lock()
            && free.len() < self.keep
        {
            free.push(buffer);
        }
    }
}

/// The buffers of a batch, emptied, for the next batch.
#[derive(Debug)]
pub(crate) struct BatchBuffers {
    body: BytesMut,
    items: Vec<BulkItem>,
}

/// The receiving side of the reader -> delivery hand-off is gone: the pipeline is shutting
/// down (the reader's read then ends with its `ReadError::Closed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the pipeline is shutting down")]
pub struct HandOffClosed;

/// Where a read's chunks go, in order. A bounded channel is the plain case (a slow sink slows
/// the read); the daemon's sink also marks each chunk's blob as busy until delivery has taken
/// the chunk over, so that no poll re-reads a blob whose chunks are still on their way.
pub trait ChunkSink: Send {
    /// Hands one chunk over; `Err` when the receiving side is gone (shutting down).
    fn send(&mut self, chunk: Chunk) -> impl Future<Output = Result<(), HandOffClosed>> + Send;

    /// An empty buffer for the next chunk with room for `body` bytes and `items` documents.
    /// The daemon's sink hands out buffers that delivery has emptied, so that a steady read
    /// allocates nothing (and touches no fresh pages).
    fn buffer(&mut self, body: usize, items: usize) -> BulkBuffer {
        BulkBuffer {
            body: Vec::with_capacity(body),
            items: Vec::with_capacity(items),
        }
    }
}

impl ChunkSink for mpsc::Sender<Chunk> {
    async fn send(&mut self, chunk: Chunk) -> Result<(), HandOffClosed> {
        mpsc::Sender::send(self, chunk)
            .await
            .map_err(|_| HandOffClosed)
    }
}

/// A chunk on its way to the delivery stage, holding its blob until the ack tracker has it.
pub(crate) struct HeldChunk {
    chunk: Chunk,
    hold: BlobHold,
}

/// The daemon's [`ChunkSink`]: each chunk takes a hold on its blob before it enters the
/// channel, and is filled in a buffer the delivery stage has emptied.
pub(crate) struct HoldingSender {
    pub(crate) tx: mpsc::Sender<HeldChunk>,
    pub(crate) holds: BlobHolds,
    pub(crate) buffers: Pool<BulkBuffer>,
}

impl ChunkSink for HoldingSender {
    async fn send(&mut self, chunk: Chunk) -> Result<(), HandOffClosed> {
        let hold = self.holds.hold(chunk.source, &chunk.blob);
        self.tx
            .send(HeldChunk { chunk, hold })
            .await
            .map_err(|_| HandOffClosed)
    }

    fn buffer(&mut self, body: usize, items: usize) -> BulkBuffer {
        match self.buffers.take() {
            Some(buffer) if buffer.body.capacity() >= body => buffer,
            _ => BulkBuffer {
                body: Vec::with_capacity(body),
                items: Vec::with_capacity(items),
            },
        }
    }
}

/// `items` documents of chunk `chunk`, read from `blob` (`container/name`, for dead letters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Part {
    pub(crate) chunk: ChunkId,
    pub(crate) items: usize,
    pub(crate) blob: Arc<str>,
}

/// Documents of one source being gathered into a batch, and which chunks they belong to.
#[derive(Debug)]
struct Filling {
    body: BytesMut,
    items: Vec<BulkItem>,
    parts: Vec<Part>,
    newest_time_ms: Option<i64>,
}

/// A full batch: its body is shared with the HTTP client (requests send clones of it, never
/// copies); each item keeps its record offset and tuple index, each part its blob.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) body: Bytes,
    pub(crate) items: Vec<BulkItem>,
    pub(crate) parts: Vec<Part>,
    pub(crate) newest_time_ms: Option<i64>,
}

impl Batch {
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// Where item `i` came from, for its dead letter.
    fn origin(&self, i: usize) -> ItemOrigin {
        let mut first = 0;
        let blob = self
            .parts
            .iter()
            .find(|part| {
                first += part.items;
                i < first
            })
            .map_or("", |part| &part.blob);
        let item = &self.items[i];
        ItemOrigin {
            blob: blob.to_owned(),
            record_offset: item.record_offset,
            tuple_index: item.tuple_index,
        }
    }

    /// (chunk, items of it in this batch), for the ack tracker.
    fn acks(&self) -> Vec<(ChunkId, usize)> {
        self.parts.iter().map(|p| (p.chunk, p.items)).collect()
    }
}

/// Room past `max_bytes` a batch is allocated with: the document that crosses the limit
/// closes the batch before it is added, so this only covers a single document larger than a
/// batch (sent alone), which then grows the buffer.
const BATCH_SLACK: usize = 16 * 1024;

/// Groups the documents of chunks into one batch per source, of at most `max_docs` documents
/// and `max_bytes` bytes, remembering how many documents of which chunk each batch carries
/// (the ack tracker's accounting). A batch is allocated once at its full size and filled with
/// one copy per run of adjacent documents of a chunk (the chunk's bytes are already bulk
/// lines). No I/O: the stage sends what it returns.
#[derive(Debug)]
pub(crate) struct Batcher {
    batches: Vec<Option<Filling>>,
    max_docs: usize,
    max_bytes: usize,
    /// Buffers of delivered batches, given back by [`recycle`].
    spare: Pool<BatchBuffers>,
}

impl Batcher {
    pub(crate) fn new(
        sources: usize,
        max_docs: usize,
        max_bytes: usize,
        spare: Pool<BatchBuffers>,
    ) -> Batcher {
        Batcher {
            batches: (0..sources).map(|_| None).collect(),
            max_docs,
            max_bytes,
            spare,
        }
    }

    /// The batch being filled for `source`; when there is none, a new one in the buffers of a
    /// delivered batch, or allocated at its full size.
    fn filling(&mut self, source: usize) -> &mut Filling {
        let (max_docs, max_bytes) = (self.max_docs, self.max_bytes);
        let spare = &self.spare;
        self.batches[source].get_or_insert_with(|| {
            let BatchBuffers { body, items } = spare.take().unwrap_or_else(|| BatchBuffers {
                body: BytesMut::with_capacity(max_bytes.saturating_add(BATCH_SLACK)),
                items: Vec::with_capacity(max_docs),
            });
            Filling {
                body,
                items,
                parts: Vec::new(),
                newest_time_ms: None,
            }
        })
    }

    /// Takes `source`'s batch out as a full one.
    fn close(&mut self, source: usize) -> Option<Batch> {
        let filling = self.batches[source].take()?;
        Some(Batch {
            body: filling.body.freeze(),
            items: filling.items,
            parts: filling.parts,
            newest_time_ms: filling.newest_time_ms,
        })
    }

    /// Adds documents of chunk `id`, from its `from`-th on, to its source's batch until the
    /// chunk ends or the batch is full. Returns the batch that became full, if one did, and
    /// where the chunk goes on (its length when it is done). The caller sends a full batch
    /// before adding the rest, so that no new batch is started while that one waits for a
    /// delivery slot (invariant 6 counts `M + 2` batches, not `M + 3`).
    pub(crate) fn add(
        &mut self,
        id: ChunkId,
        chunk: &Chunk,
        blob: &Arc<str>,
        from: usize,
    ) -> (Option<Batch>, usize) {
        let source = chunk.source;
        let (max_docs, max_bytes) = (self.max_docs, self.max_bytes);
        let items = &chunk.docs.items;
        let batch = self.filling(source);
        // The documents that fit: a batch takes at least one, then closes before the one that
        // would pass a limit.
        let (mut next, mut docs, mut bytes) = (from, batch.items.len(), batch.body.len());
        while let Some(item) = items.get(next) {
            let size = item.end - item.action_start;
            if docs > 0 && (docs >= max_docs || bytes + size > max_bytes) {
                break;
            }
            docs += 1;
            bytes += size;
            next += 1;
        }
        append(batch, &chunk.docs.body, &items[from.min(next)..next]);
        if next > from {
            batch.parts.push(Part {
                chunk: id,
                items: next - from,
                blob: blob.clone(),
            });
        }
        let done = next >= items.len();
        if done {
            batch.newest_time_ms = batch.newest_time_ms.max(chunk.newest_time_ms);
        }
        let full = !done || docs >= max_docs || bytes >= max_bytes;
        (if full { self.close(source) } else { None }, next)
    }

    /// Every non-empty batch (the flush interval passed, or the input ended).
    pub(crate) fn take_all(&mut self) -> Vec<(usize, Batch)> {
        let waiting: Vec<usize> = (0..self.batches.len())
            .filter(|&s| {
                self.batches[s]
                    .as_ref()
                    .is_some_and(|b| !b.items.is_empty())
            })
            .collect();
        waiting
            .into_iter()
            .filter_map(|s| self.close(s).map(|b| (s, b)))
            .collect()
    }
}

/// Gives a delivered batch's buffers back to the batcher. The body is unique unless the HTTP
/// client still holds a clone of it (a request abandoned at shutdown): then it is simply freed.
fn recycle(pool: &Pool<BatchBuffers>, batch: Batch) {
    let Batch {
        body, mut items, ..
    } = batch;
    if let Ok(mut body) = body.try_into_mut() {
        body.clear();
        items.clear();
        pool.give(BatchBuffers { body, items });
    }
}

/// Appends `items` of a chunk whose bytes are `body` to `batch`: one copy per run of items
/// lying next to each other (all of them, as the encoder writes a chunk), offsets shifted.
fn append(batch: &mut Filling, body: &[u8], items: &[BulkItem]) {
    let mut first = 0;
    while first < items.len() {
        let mut end = first + 1;
        while end < items.len() && items[end].action_start == items[end - 1].end {
            end += 1;
        }
        let from = items[first].action_start;
        let base = batch.body.len();
        batch
            .body
            .extend_from_slice(&body[from..items[end - 1].end]);
        let shift = |x: usize| x - from + base;
        batch
            .items
            .extend(items[first..end].iter().map(|item| BulkItem {
                action_start: shift(item.action_start),
                doc_start: shift(item.doc_start),
                end: shift(item.end),
                ..*item
            }));
        first = end;
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
    /// Chunk buffers whose documents are in a batch, for the readers to fill again.
    pub(crate) chunk_buffers: Pool<BulkBuffer>,
    /// Buffers of delivered batches, for the batcher.
    pub(crate) batch_buffers: Pool<BatchBuffers>,
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
        let mut batches = Batcher::new(
            stage.metrics.sources.len(),
            stage.max_docs,
            stage.max_bytes,
            stage.batch_buffers.clone(),
        );
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
        let mut next = 0;
        while next < chunk.docs.len() {
            let (full, at) = batcher.add(id, &chunk, &blob_path, next);
            next = at;
            if let Some(full) = full {
                self.clone().send(source, full, inflight).await;
            }
        }
        // Its documents are in batches now: the buffer can take the next chunk's.
        let mut docs = chunk.docs;
        docs.clear();
        self.chunk_buffers.give(docs);
    }

    /// Sends a batch once a delivery slot is free (backpressure on the readers).
    async fn send(self: Arc<Self>, source: usize, batch: Batch, inflight: &mut Deliveries) {
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return;
        };
        let in_flight = self
            .metrics
            .batch_started(chrono::Utc::now().timestamp_millis());
        let chunks = batch.parts.iter().map(|p| p.chunk).collect();
        let handle = inflight.tasks.spawn(async move {
            let body = BulkBody { body: &batch.body, items: &batch.items };
            let result = self.sink.deliver_body(body, &|i| batch.origin(i), &self.cancel).await;
            let documents = batch.len();
            let acks = batch.acks();
            let newest_time_ms = batch.newest_time_ms;
            // The documents are settled (or never will be by this task): their buffers go to
            // the next batch before the commit and the registry flush, which may wait for the
            // disk, and before the slot is freed, so the batch that takes it reuses them
            // instead of allocating a fourth.
            recycle(&self.batch_buffers, batch);
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
                    self.clone().acknowledge_off_runtime(source, acks, newest_time_ms).await;
                    self.flush_registry().await;
                }
                Err(_) => {
                    tracing::warn!(source = %m.name, documents, "batch delivery cancelled at shutdown; its blobs will be re-read from their committed offsets");
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
        let done = acks.acknowledge_all(parts);
        for c in done.committed {
            if let Some(t) = c.newest_time_ms.or(newest_time_ms) {
                m.newest_indexed_ms.fetch_max(t, Ordering::Relaxed);
            }
            tracing::trace!(source = %m.name, blob = %c.blob, offset = c.to, "offset committed");
        }
        for e in done.errors {
            self.errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(source = %m.name, error = %e, "offset commit refused; the blob will be re-read from its stored offset (ids make that safe)");
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
            buffers: Pool::new(1),
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

    /// Every batch that fills up while all of `chunk` is added (what the stage sends).
    fn add_all(
        batcher: &mut Batcher,
        id: ChunkId,
        chunk: &Chunk,
        blob: Arc<str>,
    ) -> Vec<(usize, Batch)> {
        let mut full = Vec::new();
        let mut next = 0;
        while next < chunk.docs.len() {
            let (batch, at) = batcher.add(id, chunk, &blob, next);
            full.extend(batch.map(|b| (chunk.source, b)));
            next = at;
        }
        full
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
        let mut batcher = Batcher::new(2, 3, 1_000_000, Pool::new(0));
        let path: Arc<str> = Arc::from("c/b");
        // 7 documents, batches of 3: two full batches now, one document waiting.
        let full = add_all(&mut batcher, 40, &chunk_with(1, "b", 7, 10), path.clone());
        assert_eq!(full.len(), 2);
        for (source, batch) in &full {
            assert_eq!(*source, 1);
            assert_eq!(batch.len(), 3);
            assert_eq!(batch.acks(), vec![(40, 3)]);
        }
        // The next chunk fills the waiting batch up: parts name both chunks.
        let full = add_all(&mut batcher, 41, &chunk_with(1, "b", 2, 10), path.clone());
        assert_eq!(full.len(), 1);
        assert_eq!(full[0].1.acks(), vec![(40, 1), (41, 2)]);
        // Items keep their bytes, shifted into the batch body.
        let batch = &full[0].1;
        assert_eq!(batch.body.len(), 30);
        assert_eq!(batch.items[2].action_start, 20);
        assert_eq!(batch.items[2].end, 30);
        assert_eq!(batch.items[2].tuple_index, 1);
        assert!(batcher.take_all().is_empty());
    }

    #[test]
    fn batches_close_at_max_bytes_and_the_flush_takes_every_source_s_waiting_batch() {
        let mut batcher = Batcher::new(2, 1000, 25, Pool::new(0));
        let path: Arc<str> = Arc::from("c/b");
        // 10-byte documents, 25 bytes a batch: two per batch.
        let full = add_all(&mut batcher, 1, &chunk_with(0, "b", 5, 10), path.clone());
        let sizes: Vec<usize> = full.iter().map(|(_, b)| b.len()).collect();
        assert_eq!(sizes, vec![2, 2]);
        assert!(add_all(&mut batcher, 2, &chunk_with(1, "c", 1, 10), path).is_empty());
        let waiting = batcher.take_all();
        let summary: Vec<(usize, Vec<(ChunkId, usize)>)> = waiting
            .into_iter()
            .map(|(source, b)| (source, b.acks()))
            .collect();
        assert_eq!(summary, vec![(0, vec![(1, 1)]), (1, vec![(2, 1)])]);
        assert!(batcher.take_all().is_empty(), "taken batches are gone");
    }

    #[test]
    fn a_batch_body_holds_exactly_the_lines_of_its_items_even_with_bytes_between_them() {
        let mut batcher = Batcher::new(1, 10, 1_000_000, Pool::new(0));
        // Three documents with a byte that belongs to none between the second and the third.
        let mut c = chunk("b", 0, 100);
        for (i, text) in ["{a}\n{1}\n", "{b}\n{2}\n", "#", "{c}\n{3}\n"]
            .iter()
            .enumerate()
        {
            let start = c.docs.body.len();
            c.docs.body.extend_from_slice(text.as_bytes());
            if *text != "#" {
                c.docs.items.push(BulkItem {
                    action_start: start,
                    doc_start: start + 4,
                    end: start + text.len(),
                    record_offset: 5,
                    tuple_index: i as u32,
                });
            }
        }
        assert!(add_all(&mut batcher, 1, &c, Arc::from("c/b")).is_empty());
        let (_, batch) = batcher.take_all().remove(0);
        assert_eq!(&batch.body[..], b"{a}\n{1}\n{b}\n{2}\n{c}\n{3}\n");
        for item in &batch.items {
            assert_eq!(
                &batch.body[item.doc_start - 4..item.doc_start],
                &batch.body[item.action_start..item.doc_start]
            );
            assert_eq!(batch.body[item.end - 1], b'\n');
        }
        assert_eq!(&batch.body[batch.items[2].doc_range()], b"{3}");
    }

    #[test]
    fn a_dead_letter_names_the_blob_of_the_chunk_its_document_came_from() {
        let mut batcher = Batcher::new(1, 10, 1_000_000, Pool::new(0));
        assert!(
            add_all(
                &mut batcher,
                1,
                &chunk_with(0, "one", 2, 10),
                Arc::from("c/one")
            )
            .is_empty()
        );
        assert!(
            add_all(
                &mut batcher,
                2,
                &chunk_with(0, "two", 3, 10),
                Arc::from("c/two")
            )
            .is_empty()
        );
        let (_, batch) = batcher.take_all().remove(0);
        let origins: Vec<(String, u32)> = (0..batch.len())
            .map(|i| {
                let o = batch.origin(i);
                assert_eq!(o.record_offset, 7);
                (o.blob, o.tuple_index)
            })
            .collect();
        let expected = [
            ("c/one", 0),
            ("c/one", 1),
            ("c/two", 0),
            ("c/two", 1),
            ("c/two", 2),
        ];
        assert_eq!(origins, expected.map(|(b, t)| (b.to_owned(), t)).to_vec());
    }

    #[test]
    fn a_delivered_batch_s_buffers_carry_the_next_batch_unless_a_request_still_holds_them() {
        let pool = Pool::new(2);
        let mut batcher = Batcher::new(1, 2, 1_000_000, pool.clone());
        let path: Arc<str> = Arc::from("c/b");
        let (_, first) =
            add_all(&mut batcher, 1, &chunk_with(0, "b", 2, 10), path.clone()).remove(0);
        let in_request = first.body.clone();
        recycle(&pool, first);
        assert!(
            pool.take().is_none(),
            "the HTTP client still holds the body: freed, not reused"
        );
        drop(in_request);

        let (_, second) =
            add_all(&mut batcher, 2, &chunk_with(0, "b", 2, 10), path.clone()).remove(0);
        let second_body = second.body.as_ptr();
        recycle(&pool, second);
        let (_, third) = add_all(&mut batcher, 3, &chunk_with(0, "b", 2, 10), path).remove(0);
        assert_eq!(
            third.body.as_ptr(),
            second_body,
            "the same buffer, not a new allocation"
        );
        assert_eq!(third.body.len(), 20);
        assert_eq!(third.acks(), vec![(3, 2)]);
    }

    #[test]
    fn a_pool_keeps_at_most_its_limit_of_buffers() {
        let pool = Pool::new(2);
        for n in 0..5 {
            pool.give(vec![n]);
        }
        assert_eq!(pool.take(), Some(vec![1]));
        assert_eq!(pool.take(), Some(vec![0]));
        assert_eq!(pool.take(), None);
    }

    #[test]
    fn a_batch_filled_inside_a_chunk_is_handed_out_before_the_rest_of_the_chunk_starts_another() {
        let mut batcher = Batcher::new(1, 3, 1_000_000, Pool::new(0));
        let c = chunk_with(0, "b", 5, 10);
        let blob: Arc<str> = Arc::from("c/b");
        let (full, next) = batcher.add(9, &c, &blob, 0);
        assert_eq!(full.map(|b| b.acks()), Some(vec![(9, 3)]));
        assert_eq!(next, 3);
        assert!(batcher.take_all().is_empty(), "no batch holds the rest yet");
        let (full, next) = batcher.add(9, &c, &blob, next);
        assert!(full.is_none());
        assert_eq!(next, 5);
        let (_, rest) = batcher.take_all().remove(0);
        assert_eq!(rest.acks(), vec![(9, 2)]);
        assert_eq!(rest.items[0].tuple_index, 3);
    }
}
