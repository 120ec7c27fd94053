//! Incremental reads: one ranged GET of `[offset, length)` per grown blob, streamed through the
//! decoder, cut into chunks that end on record boundaries so each can be committed on its own.
use std::sync::Arc;

use futures::StreamExt;

use super::client::{StorageClient, StorageError};
use super::listing::BlobItem;
use crate::ack::Chunk;
use crate::bulk_buffer::BulkBuffer;
use crate::delivery::{ChunkSink, HandOffClosed};
use crate::encode::document::{BlobContext, DocumentEncoder};
use crate::flowlog::ScanEnd;
use crate::pipeline::{BlobDecoder, DecodeProblem, DecodeStats};

/// A blob to read from `from` (the end of its last committed record) to its listed length.
#[derive(Debug, Clone)]
pub struct ReadTask {
    pub blob: BlobItem,
    pub from: u64,
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

impl From<HandOffClosed> for ReadError {
    fn from(_: HandOffClosed) -> Self {
        ReadError::Closed
    }
}

/// What a finished read did.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOutcome {
    pub bytes: u64,
    pub chunks: u32,
    pub stats: DecodeStats,
    pub end: Option<ScanEnd>,
}

/// The largest chunk the daemon cuts (`chunk_bytes` is `min(batch_max_bytes, this)`): chunks
/// wait in a channel of `2 × max_in_flight` of them, so their size multiplies into the
/// memory bound (invariant 6), while a chunk's own cost (one ack registration, one hand-off) is
/// small beside its ~340 documents. 256 KiB instead of 1 MiB took the peak of
/// `scripts/bench-e2e.sh MODE=compare` from 45–47 to 37–38 MiB at the same CPU time
/// (docs/PERFORMANCE.md, "This round").
pub const MAX_CHUNK_BYTES: usize = 256 * 1024;

/// Sizes that bound a read's memory.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    /// A chunk is sent once its bulk body reaches this many bytes (it may end one document
    /// past it), at a record end or, inside a large record, between two of its documents.
    pub chunk_bytes: usize,
    /// Largest record accepted.
    pub max_record_bytes: usize,
}

/// Reads one blob's new bytes and sends its chunks to `tx` in order.
/// Decode problems go to `problems` (to be counted and dead-lettered, durably) before the chunk
/// that covers them is sent; when `problems` fails, the read ends with
/// [`ReadError::ProblemNotRecorded`] and that chunk is never sent (invariant 9: nothing
/// dropped without a record of it).
///
/// Memory (invariant 6): the record being decoded (at most `max_record_bytes`), the piece of
/// the download in hand, and one chunk of at most `chunk_bytes` (plus one document), whatever
/// the blob's size or its records' number of tuples. A record whose documents outgrow a chunk
/// is sent in several chunks; those cut inside it commit only up to the end of the record
/// before it (`to` may equal `from`), so the offset still moves by whole records.
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
    let mut chunks = Chunker {
        source,
        blob: Arc::from(task.blob.name.as_str()),
        etag: Arc::from(task.blob.etag.as_str()),
        last_modified_ms: task.blob.last_modified.timestamp_millis(),
        from: task.from,
        sent: 0,
        capacity: limits.chunk_bytes.saturating_add(CHUNK_SLACK),
        docs: BulkBuffer::new(),
    };
    chunks.docs = chunks.fresh_buffer(tx);
    let mut recorder = Recorder {
        problems,
        failed: None,
    };

    while let Some(piece) = stream.next().await {
        let bytes = piece?;
        outcome.bytes += bytes.len() as u64;
        decoder.push(&bytes);
        // The downloaded piece is in the decoder now; do not hold a second copy while the
        // chunks it completes wait for room in the channel.
        drop(bytes);
        loop {
            let next = decoder.next_record(&mut |p| recorder.record(p));
            let Some(mut record) = next else { break };
            // Documents of records before this one in the chunk: a chunk that fills up inside
            // this record first ends with them, at a record end, and only a record whose own
            // documents outgrow a chunk is cut inside it.
            let mut earlier = chunks.docs.len();
            loop {
                let done = record.write(&mut chunks.docs, limits.chunk_bytes, &mut |p| {
                    recorder.record(p)
                });
                recorder.check()?;
                if done {
                    break;
                }
                let (to, stats) = (record.commit_offset(), record.stats());
                chunks.send_before(tx, earlier, to, stats).await?;
                earlier = 0;
                outcome.chunks += 1;
            }
            drop(record);
            // Checked after every record, not every downloaded piece: a piece of many small
            // records would otherwise overshoot the chunk size by all their documents.
            if chunks.docs.body.len() >= limits.chunk_bytes {
                let to = decoder.finish().resume_offset;
                chunks.send(tx, to, false, to, decoder.stats()).await?;
                outcome.chunks += 1;
            }
        }
        recorder.check()?;
    }
    let end = decoder.finish();
    chunks
        .send(tx, end.resume_offset, true, length, decoder.stats())
        .await?;
    outcome.chunks += 1;
    outcome.stats = *decoder.stats();
    outcome.end = Some(end);
    Ok(outcome)
}

/// Hands decode problems to the caller's recorder and remembers the first it could not record:
/// the read stops before sending anything that would commit past it.
struct Recorder<'p> {
    problems: &'p mut (dyn FnMut(DecodeProblem) -> Result<(), String> + Send),
    failed: Option<String>,
}

impl Recorder<'_> {
    fn record(&mut self, problem: DecodeProblem) {
        if self.failed.is_none()
            && let Err(e) = (self.problems)(problem)
        {
            self.failed = Some(e);
        }
    }

    fn check(&mut self) -> Result<(), ReadError> {
        match self.failed.take() {
            Some(reason) => Err(ReadError::ProblemNotRecorded(reason)),
            None => Ok(()),
        }
    }
}

/// Cuts one read's documents into chunks, in order.
struct Chunker {
    source: usize,
    blob: Arc<str>,
    etag: Arc<str>,
    last_modified_ms: i64,
    /// Where the next chunk starts: the previous chunk's `to`.
    from: u64,
    /// Chunks sent so far (the next chunk's `seq`).
    sent: u32,
    /// Bytes of body a chunk is allocated with.
    capacity: usize,
    docs: BulkBuffer,
}

/// Room past `chunk_bytes` for the document that crosses it (a document is ~1.5 KB).
const CHUNK_SLACK: usize = 16 * 1024;
/// Smallest document, to size a chunk's item list (the `logstash` layout's are ~500 bytes).
const MIN_DOCUMENT_BYTES: usize = 256;

impl Chunker {
    /// An empty chunk body at its full size, from `tx`: grown by doubling, a chunk would
    /// hold up to twice its bytes and copy itself on the way (invariant 6 counts what is held).
    fn fresh_buffer(&self, tx: &mut impl ChunkSink) -> BulkBuffer {
        // A chunk_bytes of usize::MAX (tests, decode-everything callers) must not reserve it.
        let body = self.capacity.min(64 * 1024 * 1024);
        tx.buffer(body, body / MIN_DOCUMENT_BYTES)
    }

    /// Sends the first `items` documents gathered (all of them when 0) as the chunk
    /// `(from, to]`, where `to` is the end of the record before the one being written; the
    /// documents after them, of that record, stay for the next chunk.
    async fn send_before(
        &mut self,
        tx: &mut impl ChunkSink,
        items: usize,
        to: u64,
        stats: &DecodeStats,
    ) -> Result<(), ReadError> {
        let mut rest = self.fresh_buffer(tx);
        if items > 0 {
            self.docs.split_off_into(items, &mut rest);
        }
        let docs = std::mem::replace(&mut self.docs, rest);
        self.send_docs(tx, docs, to, false, to, stats).await
    }

    /// Sends the documents gathered so far as the chunk `(from, to]`.
    async fn send(
        &mut self,
        tx: &mut impl ChunkSink,
        to: u64,
        last: bool,
        length_seen: u64,
        stats: &DecodeStats,
    ) -> Result<(), ReadError> {
        let fresh = self.fresh_buffer(tx);
        let docs = std::mem::replace(&mut self.docs, fresh);
        self.send_docs(tx, docs, to, last, length_seen, stats).await
    }

    async fn send_docs(
        &mut self,
        tx: &mut impl ChunkSink,
        docs: BulkBuffer,
        to: u64,
        last: bool,
        length_seen: u64,
        stats: &DecodeStats,
    ) -> Result<(), ReadError> {
        let chunk = Chunk {
            source: self.source,
            blob: self.blob.clone(),
            seq: self.sent,
            from: self.from,
            to,
            last,
            length_seen,
            etag: self.etag.clone(),
            last_modified_ms: self.last_modified_ms,
            head_len: stats.head_len.and_then(|h| u32::try_from(h).ok()),
            docs,
            newest_time_ms: stats.newest_time_ms,
        };
        tx.send(chunk).await?;
        self.sent += 1;
        self.from = to;
        Ok(())
    }
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
