//! Incremental reads: one ranged GET of `[offset, length)` per grown blob, streamed through the
//! decoder, cut into chunks that end on record boundaries so each can be committed on its own.
use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::mpsc;

use super::client::{StorageClient, StorageError};
use super::listing::BlobItem;
use crate::flowlog::ScanEnd;
use crate::pipeline::{BlobDecoder, DecodeProblem, DecodeStats};
use crate::sink::document::{BlobContext, BulkBuffer, DocumentEncoder};

/// A blob to read from `from` (the end of its last committed record) to its listed length.
#[derive(Debug, Clone)]
pub struct ReadTask {
    pub blob: BlobItem,
    pub from: u64,
}

/// Documents of the records in `(from, to]` of one blob: the unit of acknowledgement.
/// `to` is always the end of a complete record (or of the head), so committing it is safe.
#[derive(Debug)]
pub struct Chunk {
    /// Index of the source in the configuration.
    pub source: usize,
    pub blob: Arc<str>,
    /// Position of this chunk within its read, from 0; chunks of a blob commit in this order.
    pub seq: u32,
    pub from: u64,
    pub to: u64,
    /// The last chunk of its read: committing it records the listed length and etag.
    pub last: bool,
    /// Length to record with the commit: the listed length for the last chunk, `to` before.
    pub length_seen: u64,
    pub etag: Arc<str>,
    /// Last-Modified of the blob, epoch ms.
    pub last_modified_ms: i64,
    /// Head length learned when the read started at byte 0.
    pub head_len: Option<u32>,
    pub docs: BulkBuffer,
    /// Newest tuple time among the documents (epoch ms), for the lag metric.
    pub newest_time_ms: Option<i64>,
}

/// Where a read's chunks go, in order. A bounded channel is the plain case (a slow sink slows
/// the read); the daemon's sink also marks each chunk's blob as busy until delivery has taken
/// the chunk over, so that no poll re-reads a blob whose chunks are still on their way.
pub trait ChunkSink: Send {
    /// Hands one chunk over; `Err` when the receiving side is gone (shutting down).
    fn send(&mut self, chunk: Chunk) -> impl Future<Output = Result<(), ReadError>> + Send;
}

impl ChunkSink for mpsc::Sender<Chunk> {
    async fn send(&mut self, chunk: Chunk) -> Result<(), ReadError> {
        mpsc::Sender::send(self, chunk)
            .await
            .map_err(|_| ReadError::Closed)
    }
}

/// Why a read stopped early. Chunks sent before the failure stay valid.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("the pipeline is shutting down")]
    Closed,
    /// A decode problem could not be recorded (the dead-letter file refused the write): the
    /// read stops before the chunk that covers it, so that offset is never committed.
    #[error(
        "cannot record an undecodable record in the dead-letter file ({0}); the read stops before it and is tried again next poll"
    )]
    ProblemNotRecorded(String),
}

/// What a finished read did.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOutcome {
    pub bytes: u64,
    pub chunks: u32,
    pub stats: DecodeStats,
    pub end: Option<ScanEnd>,
}

/// Sizes that bound a read's memory.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    /// A chunk is sent once its bulk body reaches this many bytes.
    pub chunk_bytes: usize,
    /// Largest record accepted.
    pub max_record_bytes: usize,
}

/// Reads one blob's new bytes and sends its chunks to `tx` in order.
/// Decode problems go to `problems` (to be counted and dead-lettered, durably) before the chunk
/// that covers them is sent; when `problems` fails, the read ends with
/// [`ReadError::ProblemNotRecorded`] and that chunk is never sent (invariant 9: nothing
/// dropped without a record of it).
#[allow(clippy::too_many_arguments)]
pub async fn read_blob(
    client: &StorageClient,
    encoder: &mut DocumentEncoder,
    source: usize,
    task: &ReadTask,
    limits: ReadLimits,
    tx: &mut impl ChunkSink,
    problems: &mut (dyn FnMut(DecodeProblem) -> Result<(), String> + Send),
) -> Result<ReadOutcome, ReadError> {
    let length = task.blob.content_length;
    let name: Arc<str> = Arc::from(task.blob.name.as_str());
    let etag: Arc<str> = Arc::from(task.blob.etag.as_str());
    let last_modified_ms = task.blob.last_modified.timestamp_millis();
    let mut outcome = ReadOutcome::default();
    if length <= task.from {
        return Ok(outcome);
    }
    let mut stream = client
        .download_range(&task.blob.name, task.from, length)
        .await?;
    let blob_context = BlobContext::new(client.container_name(), &task.blob.name);
    let mut decoder = BlobDecoder::new(encoder, blob_context, task.from)
        .with_max_record_len(limits.max_record_bytes);
    let mut docs = BulkBuffer::new();
    let mut chunk_from = task.from;
    let mut newest: Option<i64> = None;
    let head_len = |stats: &DecodeStats| stats.head_len.and_then(|h| u32::try_from(h).ok());

    while let Some(piece) = stream.next().await {
        let bytes = piece?;
        outcome.bytes += bytes.len() as u64;
        let mut not_recorded = None;
        decoder.feed(&bytes, &mut docs, &mut |problem| {
            if not_recorded.is_none()
                && let Err(e) = problems(problem)
            {
                not_recorded = Some(e);
            }
        });
        if let Some(reason) = not_recorded {
            return Err(ReadError::ProblemNotRecorded(reason));
        }
        if docs.body.len() >= limits.chunk_bytes {
            let to = decoder.finish().resume_offset;
            newest = newest.max(decoder.stats().newest_time_ms);
            let chunk = Chunk {
                source,
                blob: name.clone(),
                seq: outcome.chunks,
                from: chunk_from,
                to,
                last: false,
                length_seen: to,
                etag: etag.clone(),
                last_modified_ms,
                head_len: head_len(decoder.stats()),
                docs: std::mem::take(&mut docs),
                newest_time_ms: newest.take(),
            };
            tx.send(chunk).await?;
            outcome.chunks += 1;
            chunk_from = to;
        }
    }
    let end = decoder.finish();
    let chunk = Chunk {
        source,
        blob: name,
        seq: outcome.chunks,
        from: chunk_from,
        to: end.resume_offset,
        last: true,
        length_seen: length,
        etag,
        last_modified_ms,
        head_len: head_len(decoder.stats()),
        docs,
        newest_time_ms: decoder.stats().newest_time_ms,
    };
    tx.send(chunk).await?;
    outcome.chunks += 1;
    outcome.stats = *decoder.stats();
    outcome.end = Some(end);
    Ok(outcome)
}

/// For `start_fresh`: where a blob's records end (the offset of its closing `]`), read from the
/// last bytes, so only records appended later are read. `None` when the tail is not found.
pub async fn end_of_records(
    client: &StorageClient,
    blob: &BlobItem,
) -> Result<Option<u64>, StorageError> {
    const TAIL_WINDOW: u64 = 64;
    let length = blob.content_length;
    let start = length.saturating_sub(TAIL_WINDOW);
    let mut stream = client.download_range(&blob.name, start, length).await?;
    let mut tail = Vec::with_capacity(TAIL_WINDOW as usize);
    while let Some(piece) = stream.next().await {
        tail.extend_from_slice(&piece?);
    }
    // The tail is `]` then `}` with optional whitespace; the records end where `]` starts.
    let trimmed = tail.iter().rposition(|b| !b.is_ascii_whitespace());
    let Some(close_brace) = trimmed.filter(|&i| tail[i] == b'}') else {
        return Ok(None);
    };
    let bracket = tail[..close_brace]
        .iter()
        .rposition(|b| !b.is_ascii_whitespace());
    Ok(bracket
        .filter(|&i| tail[i] == b']')
        .map(|i| start + i as u64))
}
