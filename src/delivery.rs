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
use crate::bulk_buffer::{BulkBuffer, BulkItem, SharedBody};
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

/// The lists of a batch, emptied, for the next batch.
#[derive(Debug)]
pub(crate) struct BatchBuffers {
    body: SharedBody,
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
            Some(mut buffer) if buffer.body.capacity() >= body => {
                // A buffer given back by a delivered batch comes without its item list.
                buffer.items.reserve(items);
                buffer
            }
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
    /// The chunk's whole buffer when the batch holds slices of it: the last batch delivered
    /// gives it back to the readers.
    pub(crate) buffer: Option<Bytes>,
}

/// A chunk's documents as delivery batches them: its body frozen into a shared buffer, which
/// batches slice when the chunk filled it, and copy from otherwise (a slice keeps the whole
/// buffer alive, too much for a few documents: the tail of a read).
#[derive(Debug)]
pub(crate) struct ChunkDocs {
    source: usize,
    body: Bytes,
    items: Vec<BulkItem>,
    newest_time_ms: Option<i64>,
    /// Whether batches take slices of `body` instead of copies.
    shared: bool,
}

impl ChunkDocs {
    /// Takes the documents of `chunk` over (its body and items are left empty).
    pub(crate) fn take(chunk: &mut Chunk) -> ChunkDocs {
        let body = std::mem::take(&mut chunk.docs.body);
        // At most an eighth of the buffer unused: slices then hold at most 9/8 of the bytes
        // they carry alive (invariant 6). A full chunk stops at its limit, ~6% short of its
        // capacity; a buffer that grew past its capacity for a long document is copied.
        let shared = !body.is_empty() && body.capacity() - body.len() <= body.len() / 8;
        ChunkDocs {
            source: chunk.source,
            body: Bytes::from(body),
            items: std::mem::take(&mut chunk.docs.items),
            newest_time_ms: chunk.newest_time_ms,
            shared,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// The chunk's buffer, emptied, for the readers, if no batch holds a slice of it.
    fn into_buffer(self) -> Option<BulkBuffer> {
        reclaim(self.body)
    }
}

/// An emptied chunk buffer from a body nothing else holds any more.
fn reclaim(body: Bytes) -> Option<BulkBuffer> {
    let mut body = body.try_into_mut().ok()?;
    // Emptied first: the conversion moves what the buffer holds to its start.
    body.clear();
    Some(BulkBuffer {
        body: Vec::from(body),
        items: Vec::new(),
    })
}

/// Room a batch's copies of small chunks are gathered in, allocated as needed: large enough
/// that the tail of many reads makes few segments, small enough to come from the heap instead
/// of fresh pages.
const COPY_BLOCK: usize = 64 * 1024;

/// Documents of one source being gathered into a batch, and which chunks they belong to.
#[derive(Debug)]
struct Filling {
    /// Slices of full chunks and copies of small ones, in order.
    body: SharedBody,
    /// Copies not yet pushed onto `body` (the next slice, or closing, pushes them).
    copies: BytesMut,
    items: Vec<BulkItem>,
    parts: Vec<Part>,
    newest_time_ms: Option<i64>,
}

impl Filling {
    fn len(&self) -> usize {
        self.body.len() + self.copies.len()
    }

    fn push_copies(&mut self) {
        if !self.copies.is_empty() {
            self.body.push(self.copies.split().freeze());
        }
    }
}

/// A full batch: its body is the chunks' own buffers, shared with the HTTP client (requests
/// send them as they are, never copies); each item keeps its record offset and tuple index,
/// each part its blob.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) body: SharedBody,
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

/// Groups the documents of chunks into one batch per source, of at most `max_docs` documents
/// and `max_bytes` bytes, remembering how many documents of which chunk each batch carries
/// (the ack tracker's accounting). A batch takes one slice of a full chunk's buffer per run of
/// adjacent documents (the chunk's bytes are already bulk lines), and copies small chunks'.
/// Why: copying every chunk into a batch buffer was ~9% of the daemon's CPU end to end
/// (`perf record` of `scripts/bench-e2e.sh`, docs/PERFORMANCE.md). No I/O: the stage sends
/// what it returns.
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

    /// The batch being filled for `source`; when there is none, a new one in the lists of a
    /// delivered batch.
    fn filling(&mut self, source: usize) -> &mut Filling {
        let max_docs = self.max_docs;
        let spare = &self.spare;
        self.batches[source].get_or_insert_with(|| {
            let BatchBuffers { body, items } = spare.take().unwrap_or_else(|| BatchBuffers {
                body: SharedBody::new(),
                items: Vec::with_capacity(max_docs),
            });
            Filling {
                body,
                copies: BytesMut::new(),
                items,
                parts: Vec::new(),
                newest_time_ms: None,
            }
        })
    }

    /// Takes `source`'s batch out as a full one.
    fn close(&mut self, source: usize) -> Option<Batch> {
        let mut filling = self.batches[source].take()?;
        filling.push_copies();
        Some(Batch {
            body: filling.body,
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
        chunk: &ChunkDocs,
        blob: &Arc<str>,
        from: usize,
    ) -> (Option<Batch>, usize) {
        let source = chunk.source;
        let (max_docs, max_bytes) = (self.max_docs, self.max_bytes);
        let items = &chunk.items;
        let batch = self.filling(source);
        // The documents that fit: a batch takes at least one, then closes before the one that
        // would pass a limit.
        let (mut next, mut docs, mut bytes) = (from, batch.items.len(), batch.len());
        while let Some(item) = items.get(next) {
            let size = item.end - item.action_start;
            if docs > 0 && (docs >= max_docs || bytes + size > max_bytes) {
                break;
            }
            docs += 1;
            bytes += size;
            next += 1;
        }
        append(batch, chunk, &items[from.min(next)..next]);
        if next > from {
            batch.parts.push(Part {
                chunk: id,
                items: next - from,
                blob: blob.clone(),
                buffer: chunk.shared.then(|| chunk.body.clone()),
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

/// Gives a delivered batch's lists back to the batcher, and each chunk buffer it was the last
/// to hold back to the readers. A buffer the HTTP client still holds (a request abandoned at
/// shutdown) is simply freed when it lets go.
fn recycle(batches: &Pool<BatchBuffers>, chunks: &Pool<BulkBuffer>, batch: Batch) {
    let Batch {
        mut body,
        mut items,
        parts,
        ..
    } = batch;
    body.clear();
    items.clear();
    batches.give(BatchBuffers { body, items });
    for buffer in parts.into_iter().filter_map(|part| part.buffer) {
        if let Some(buffer) = reclaim(buffer) {
            chunks.give(buffer);
        }
    }
}

/// Appends `items` of `chunk` to `batch`: one slice (or copy) per run of items lying next to
/// each other (all of them, as the encoder writes a chunk), offsets shifted.
fn append(batch: &mut Filling, chunk: &ChunkDocs, items: &[BulkItem]) {
    let mut first = 0;
    while first < items.len() {
        let mut end = first + 1;
        while end < items.len() && items[end].action_start == items[end - 1].end {
            end += 1;
        }
        let from = items[first].action_start;
        let to = items[end - 1].end;
        let base = batch.len();
        if chunk.shared {
            batch.push_copies();
            batch.body.push(chunk.body.slice(from..to));
        } else {
            // Into the block's room as many documents as fit, the rest into a new block: a
            // block wastes at most one document's room.
            let mut at = first;
            while at < end {
                let room = batch.copies.capacity() - batch.copies.len();
                let start = items[at].action_start;
                let fit = items[at..end].partition_point(|item| item.end - start <= room);
                if fit == 0 {
                    batch.push_copies();
                    let size = items[at].end - start;
                    batch.copies = BytesMut::with_capacity(COPY_BLOCK.max(size));
                    continue;
                }
                let stop = items[at + fit - 1].end;
                batch.copies.extend_from_slice(&chunk.body[start..stop]);
                at += fit;
            }
        }
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
        let HeldChunk { mut chunk, hold } = held;
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
        let docs = ChunkDocs::take(&mut chunk);
        let mut next = 0;
        while next < docs.len() {
            let (full, at) = batcher.add(id, &docs, &blob_path, next);
            next = at;
            if let Some(full) = full {
                self.clone().send(source, full, inflight).await;
            }
        }
        // Its documents are in batches now: a buffer they were copied from can take the next
        // chunk's (one they share goes back when the last batch holding it is delivered).
        if let Some(buffer) = docs.into_buffer() {
            self.chunk_buffers.give(buffer);
        }
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
            recycle(&self.batch_buffers, &self.chunk_buffers, batch);
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

    /// `chunk`'s documents as delivery takes them over, shared or copied as `shared` says.
    fn docs(mut chunk: Chunk, shared: bool) -> ChunkDocs {
        let mut docs = ChunkDocs::take(&mut chunk);
        docs.shared = shared;
        docs
    }

    /// Every batch that fills up while all of `chunk` is added (what the stage sends); batches
    /// share its buffer.
    fn add_all(
        batcher: &mut Batcher,
        id: ChunkId,
        chunk: Chunk,
        blob: Arc<str>,
    ) -> Vec<(usize, Batch)> {
        add_docs(batcher, id, &docs(chunk, true), blob)
    }

    fn add_docs(
        batcher: &mut Batcher,
        id: ChunkId,
        chunk: &ChunkDocs,
        blob: Arc<str>,
    ) -> Vec<(usize, Batch)> {
        let mut full = Vec::new();
        let mut next = 0;
        while next < chunk.len() {
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
        let full = add_all(&mut batcher, 40, chunk_with(1, "b", 7, 10), path.clone());
        assert_eq!(full.len(), 2);
        for (source, batch) in &full {
            assert_eq!(*source, 1);
            assert_eq!(batch.len(), 3);
            assert_eq!(batch.acks(), vec![(40, 3)]);
        }
        // The next chunk fills the waiting batch up: parts name both chunks.
        let full = add_all(&mut batcher, 41, chunk_with(1, "b", 2, 10), path.clone());
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
        let full = add_all(&mut batcher, 1, chunk_with(0, "b", 5, 10), path.clone());
        let sizes: Vec<usize> = full.iter().map(|(_, b)| b.len()).collect();
        assert_eq!(sizes, vec![2, 2]);
        assert!(add_all(&mut batcher, 2, chunk_with(1, "c", 1, 10), path).is_empty());
        let waiting = batcher.take_all();
        let summary: Vec<(usize, Vec<(ChunkId, usize)>)> = waiting
            .into_iter()
            .map(|(source, b)| (source, b.acks()))
            .collect();
        assert_eq!(summary, vec![(0, vec![(1, 1)]), (1, vec![(2, 1)])]);
        assert!(batcher.take_all().is_empty(), "taken batches are gone");
    }

    /// A chunk of `texts` (`#` stands for a byte that belongs to no document), its documents
    /// numbered from `first`.
    fn chunk_of(texts: &[&str], first: u32) -> Chunk {
        let mut c = chunk("b", 0, 100);
        for (i, text) in texts.iter().enumerate() {
            let start = c.docs.body.len();
            c.docs.body.extend_from_slice(text.as_bytes());
            if *text != "#" {
                c.docs.items.push(BulkItem {
                    action_start: start,
                    doc_start: start + 4,
                    end: start + text.len(),
                    record_offset: 5,
                    tuple_index: first + i as u32,
                });
            }
        }
        c
    }

    #[test]
    fn a_batch_body_holds_exactly_the_lines_of_its_items_even_with_bytes_between_them() {
        // Shared chunks, copied chunks, and the two mixed in either order.
        for shared in [[true, true], [false, false], [true, false], [false, true]] {
            let mut batcher = Batcher::new(1, 10, 1_000_000, Pool::new(0));
            // A byte that belongs to no document between the second and the third.
            let first = docs(
                chunk_of(&["{a}\n{1}\n", "{b}\n{2}\n", "#", "{c}\n{3}\n"], 0),
                shared[0],
            );
            let second = docs(chunk_of(&["#", "{d}\n{4}\n"], 3), shared[1]);
            assert!(add_docs(&mut batcher, 1, &first, Arc::from("c/b")).is_empty());
            assert!(add_docs(&mut batcher, 2, &second, Arc::from("c/b")).is_empty());
            let (_, batch) = batcher.take_all().remove(0);
            let body = batch.body.to_vec();
            assert_eq!(
                body, b"{a}\n{1}\n{b}\n{2}\n{c}\n{3}\n{d}\n{4}\n",
                "{shared:?}"
            );
            for item in &batch.items {
                assert_eq!(
                    &body[item.doc_start - 4..item.doc_start],
                    &*batch.body.get(item.action_start..item.doc_start)
                );
                assert_eq!(body[item.end - 1], b'\n');
            }
            assert_eq!(&*batch.body.get(batch.items[2].doc_range()), b"{3}");
            assert_eq!(&*batch.body.get(batch.items[3].doc_range()), b"{4}");
            // A shared chunk is one slice per run of adjacent documents (two in the first
            // chunk, one in the second); copies lying next to each other are one buffer.
            let expected = match shared {
                [true, true] | [true, false] => 3,
                [false, true] => 2,
                [false, false] => 1,
            };
            assert_eq!(batch.body.segments().len(), expected, "{shared:?}");
        }
    }

    #[test]
    fn copies_fill_each_block_with_whole_documents_before_starting_the_next() {
        let mut batcher = Batcher::new(1, 100, 10_000_000, Pool::new(0));
        // Ten documents of 10 KiB: six fit a 64 KiB block, the other four start a new one.
        let chunk = chunk_with(0, "b", 10, 10 * 1024);
        let expected = chunk.docs.body.clone();
        let copied = docs(chunk, false);
        assert!(add_docs(&mut batcher, 1, &copied, Arc::from("c/b")).is_empty());
        let (_, batch) = batcher.take_all().remove(0);
        let sizes: Vec<usize> = batch.body.segments().iter().map(|s| s.len()).collect();
        assert_eq!(sizes, [6 * 10 * 1024, 4 * 10 * 1024]);
        assert_eq!(batch.body.to_vec(), expected);
        for (i, item) in batch.items.iter().enumerate() {
            assert_eq!(item.action_start, i * 10 * 1024);
            assert!(matches!(
                batch.body.get(item.range()),
                std::borrow::Cow::Borrowed(_)
            ));
        }
    }

    #[test]
    fn a_chunk_that_fills_its_buffer_is_shared_and_a_small_one_copied() {
        let with = |len: usize, capacity: usize| {
            let mut c = chunk("b", 0, 1);
            c.docs.body = Vec::with_capacity(capacity);
            c.docs.body.resize(len, b'x');
            ChunkDocs::take(&mut c).shared
        };
        assert!(with(256, 256));
        assert!(with(900, 1000), "an eighth or less of the buffer unused");
        assert!(!with(800, 1000));
        assert!(!with(10, 1000), "the tail of a read");
        assert!(!with(0, 1000));
    }

    #[test]
    fn a_dead_letter_names_the_blob_of_the_chunk_its_document_came_from() {
        let mut batcher = Batcher::new(1, 10, 1_000_000, Pool::new(0));
        assert!(
            add_all(
                &mut batcher,
                1,
                chunk_with(0, "one", 2, 10),
                Arc::from("c/one")
            )
            .is_empty()
        );
        assert!(
            add_all(
                &mut batcher,
                2,
                chunk_with(0, "two", 3, 10),
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
    fn a_delivered_batch_gives_the_chunk_buffers_it_held_last_back_unless_a_request_still_holds_them()
     {
        let batches = Pool::new(2);
        let chunks = Pool::new(4);
        let mut batcher = Batcher::new(1, 2, 1_000_000, batches.clone());
        let path: Arc<str> = Arc::from("c/b");
        let first = docs(chunk_with(0, "b", 2, 10), true);
        let (_, batch) = add_docs(&mut batcher, 1, &first, path.clone()).remove(0);
        assert!(
            first.into_buffer().is_none(),
            "the batch holds a slice of it"
        );
        let in_request = batch.body.clone();
        recycle(&batches, &chunks, batch);
        assert!(
            chunks.take().is_none(),
            "the HTTP client still holds the body: freed later, not reused"
        );
        drop(in_request);

        // Three documents over two batches: the buffer comes back with the second.
        let second = docs(chunk_with(0, "b", 3, 10), true);
        let buffer = second.body.as_ptr();
        let mut full = add_docs(&mut batcher, 2, &second, path.clone());
        drop(second);
        let (_, rest) = batcher.take_all().remove(0);
        recycle(&batches, &chunks, full.remove(0).1);
        assert!(chunks.take().is_none(), "the other batch still holds it");
        recycle(&batches, &chunks, rest);
        let back = chunks.take().expect("the chunk's buffer");
        assert_eq!(
            back.body.as_ptr(),
            buffer,
            "the same buffer, not a new allocation"
        );
        assert!(back.body.is_empty());

        // A copied chunk's buffer is free as soon as its documents are in a batch.
        let third = docs(chunk_with(0, "b", 2, 10), false);
        let (_, batch) = add_docs(&mut batcher, 3, &third, path).remove(0);
        assert!(third.into_buffer().is_some());
        recycle(&batches, &chunks, batch);
        assert!(chunks.take().is_none(), "nothing of it was shared");
        assert!(
            batches.take().is_some(),
            "the batch's lists are kept for the next"
        );
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
        let c = docs(chunk_with(0, "b", 5, 10), true);
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
