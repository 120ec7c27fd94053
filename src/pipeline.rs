//! The pure half of ingestion for one blob: bytes of a PT1H.json (whole, or a ranged read that
//! resumes after a complete record) → records → tuples → bulk items, with every failure reported.
use crate::bulk_buffer::BulkBuffer;
use crate::encode::document::{BlobContext, DocumentEncoder, TupleCursor};
use crate::flowlog::{
    Record, RecordError, RecordScanner, ScanEnd, ScanStart, Scanned, TupleError, decode_record_in,
};
use crate::sink::dead_letter::MAX_EXCERPT_BYTES;

/// Something in the stream that did not become documents. Never fatal: the caller counts,
/// logs and dead-letters it, and decoding goes on with the next tuple or record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeProblem {
    #[error("malformed bytes at offset {offset} ({len} bytes): {reason}")]
    Malformed {
        offset: u64,
        len: u64,
        reason: &'static str,
        /// The start of the bytes, as far as they were still held (at most
        /// [`MAX_EXCERPT_BYTES`]; empty for a record skipped for its size), for the dead letter.
        excerpt: Vec<u8>,
    },
    #[error("record at offset {offset}: {error}")]
    Record {
        offset: u64,
        error: RecordError,
        /// The start of the record's bytes (at most [`MAX_EXCERPT_BYTES`]), for the dead letter.
        excerpt: Vec<u8>,
    },
    #[error("record at offset {offset}, tuple {tuple_index}: {error}")]
    Tuple {
        offset: u64,
        tuple_index: u32,
        error: TupleError,
    },
}

impl DecodeProblem {
    /// Byte offset in the blob the problem is at (the record's offset for tuple problems).
    pub fn offset(&self) -> u64 {
        match self {
            DecodeProblem::Malformed { offset, .. }
            | DecodeProblem::Record { offset, .. }
            | DecodeProblem::Tuple { offset, .. } => *offset,
        }
    }
}

/// Counters of one decoding pass.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DecodeStats {
    pub records: u64,
    pub tuples: u64,
    pub documents: u64,
    pub record_errors: u64,
    pub tuple_errors: u64,
    pub malformed_bytes: u64,
    /// Records whose version is not one this build knows (decoded by shape anyway).
    pub unknown_versions: u64,
    /// Head length in bytes, when the read started at byte 0.
    pub head_len: Option<u64>,
    /// Newest tuple time seen (epoch ms).
    pub newest_time_ms: Option<i64>,
}

/// Decodes one blob's bytes, fed in chunks of any size, into bulk items.
///
/// Two ways to use it: [`BlobDecoder::feed`] writes every document of the bytes fed at once
/// (tests, benches, small inputs); [`BlobDecoder::push`] then [`BlobDecoder::next_record`] hand
/// out one record at a time, whose documents [`RecordWriter::write`] produces in pieces of a
/// bounded size, so that a caller can send each piece away before the next is written. Memory
/// then holds one record's bytes and one piece of documents, never a record's documents
/// (invariant 6).
pub struct BlobDecoder<'e> {
    scanner: RecordScanner,
    encoder: &'e mut DocumentEncoder,
    blob: BlobContext,
    stats: DecodeStats,
    /// The repaired copy of a record with invalid strings, while its documents are written.
    scratch: Vec<u8>,
}

/// A repaired copy larger than this is released once its record is done, so one bad record
/// does not keep its size in memory for the rest of the blob.
const SCRATCH_KEPT: usize = 64 * 1024;

impl<'e> BlobDecoder<'e> {
    /// Starts at `offset` of `blob`: byte 0 expects the head, anything else must be the end of a
    /// complete record (or of the head), as stored in the registry.
    pub fn new(encoder: &'e mut DocumentEncoder, blob: BlobContext, offset: u64) -> Self {
        let start = if offset == 0 {
            ScanStart::Head
        } else {
            ScanStart::BetweenRecords
        };
        BlobDecoder {
            scanner: RecordScanner::new(offset, start),
            encoder,
            blob,
            stats: DecodeStats::default(),
            scratch: Vec::new(),
        }
    }

    /// Caps one record's size; larger records are reported as malformed.
    pub fn with_max_record_len(mut self, max: usize) -> Self {
        self.scanner = self.scanner.with_max_record_len(max);
        self
    }

    /// Feeds the next bytes; complete records become items in `out`, failures go to `problems`.
    pub fn feed(
        &mut self,
        chunk: &[u8],
        out: &mut BulkBuffer,
        problems: &mut dyn FnMut(DecodeProblem),
    ) {
        self.push(chunk);
        while let Some(mut record) = self.next_record(&mut *problems) {
            record.write(out, usize::MAX, &mut *problems);
        }
    }

    /// Appends the next bytes; [`BlobDecoder::next_record`] then hands out the records they
    /// complete.
    pub fn push(&mut self, chunk: &[u8]) {
        self.scanner.push(chunk);
    }

    /// The next complete record of the bytes pushed so far, ready to write its documents;
    /// `None` when more input is needed. Problems met before it (malformed bytes, and the
    /// record itself when it does not decode) go to `problems` first; an undecodable record is
    /// still handed out, with nothing to write, so the caller sees where it ends.
    pub fn next_record(
        &mut self,
        problems: &mut dyn FnMut(DecodeProblem),
    ) -> Option<RecordWriter<'_>> {
        loop {
            let commit_offset = self.scanner.resume_offset();
            match self.scanner.next_scanned()? {
                Scanned::Head { len } => self.stats.head_len = Some(len),
                Scanned::Tail { .. } => {}
                Scanned::Malformed {
                    offset,
                    len,
                    reason,
                } => {
                    self.stats.malformed_bytes += len;
                    let excerpt = self.scanner.held(offset, len, MAX_EXCERPT_BYTES).to_vec();
                    problems(DecodeProblem::Malformed {
                        offset,
                        len,
                        reason,
                        excerpt,
                    });
                }
                Scanned::Record { offset } => {
                    self.stats.records += 1;
                    if self.scratch.capacity() > SCRATCH_KEPT {
                        self.scratch = Vec::new();
                    }
                    let record = match decode_record_in(self.scanner.record(), &mut self.scratch) {
                        Ok(record) => {
                            if !record.is_known_version() {
                                self.stats.unknown_versions += 1;
                            }
                            Some(record)
                        }
                        Err(error) => {
                            self.stats.record_errors += 1;
                            let record = self.scanner.record();
                            let excerpt = record[..record.len().min(MAX_EXCERPT_BYTES)].to_vec();
                            problems(DecodeProblem::Record {
                                offset,
                                error,
                                excerpt,
                            });
                            None
                        }
                    };
                    return Some(RecordWriter {
                        offset,
                        commit_offset,
                        record,
                        cursor: TupleCursor::default(),
                        encoder: &mut *self.encoder,
                        blob: &self.blob,
                        stats: &mut self.stats,
                    });
                }
            }
        }
    }

    /// Where the next read of this blob must start, and whether a record was cut at the end.
    pub fn finish(&self) -> ScanEnd {
        self.scanner.finish()
    }

    pub fn stats(&self) -> &DecodeStats {
        &self.stats
    }
}

/// One record whose documents are being written (see [`BlobDecoder::next_record`]).
pub struct RecordWriter<'d> {
    offset: u64,
    commit_offset: u64,
    /// `None` when the record did not decode (already reported): nothing to write.
    record: Option<Record<'d>>,
    cursor: TupleCursor,
    encoder: &'d mut DocumentEncoder,
    blob: &'d BlobContext,
    stats: &'d mut DecodeStats,
}

impl RecordWriter<'_> {
    /// Byte offset of the record's `{` in the blob.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The end of the record before this one (or of the head, or of bytes reported as
    /// malformed): as far as a chunk cut inside this record may commit, so that a crash before
    /// the record's last piece is acknowledged reads the whole record again (its documents
    /// keep their ids, so the engine refuses the ones it already holds).
    pub fn commit_offset(&self) -> u64 {
        self.commit_offset
    }

    /// Counters of the blob so far, this record's documents written so far included.
    pub fn stats(&self) -> &DecodeStats {
        self.stats
    }

    /// Writes the record's next documents into `out`, until `out.body` holds `limit` bytes or
    /// more (one document past it at most) or the record has none left; returns true when it
    /// has none left. Tuples that do not parse go to `problems` as they are met.
    pub fn write(
        &mut self,
        out: &mut BulkBuffer,
        limit: usize,
        problems: &mut dyn FnMut(DecodeProblem),
    ) -> bool {
        let Some(record) = &self.record else {
            return true;
        };
        let offset = self.offset;
        let stats = &mut *self.stats;
        let slice = self.encoder.encode_tuples(
            self.blob,
            offset,
            record,
            &mut self.cursor,
            out,
            limit,
            &mut |tuple_index, error| {
                stats.tuples += 1;
                stats.tuple_errors += 1;
                problems(DecodeProblem::Tuple {
                    offset,
                    tuple_index,
                    error,
                });
            },
        );
        stats.tuples += slice.documents as u64;
        stats.documents += slice.documents as u64;
        stats.newest_time_ms = stats.newest_time_ms.max(slice.newest_time_ms);
        slice.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::document::Schema;
    use crate::flowlog::TupleErrorKind;
    use crate::index_pattern::IndexPattern;

    const GOOD: &str = "1663146003599,10.0.0.6,52.239.184.180,23956,443,6,O,B,NX,0,0,0,0";

    fn decode(bytes: &[u8]) -> (BulkBuffer, Vec<DecodeProblem>, DecodeStats) {
        let mut encoder = DocumentEncoder::new(
            Schema::Ecs,
            IndexPattern::parse("flows-%{+xxxx.ww}").unwrap(),
        );
        let mut decoder = BlobDecoder::new(&mut encoder, BlobContext::new("c", "b"), 0);
        let mut out = BulkBuffer::new();
        let mut problems = Vec::new();
        decoder.feed(bytes, &mut out, &mut |p| problems.push(p));
        let stats = *decoder.stats();
        (out, problems, stats)
    }

    #[test]
    fn a_bad_tuple_slot_is_one_problem_with_its_reason_and_the_rest_of_the_record_is_indexed() {
        let mut blob = br#"{"records":[{"time":"t","flowLogVersion":4,"flowRecords":{"flows":[{"aclID":"a","flowGroups":[{"rule":"r","flowTuples":["#.to_vec();
        blob.extend_from_slice(format!("\"{GOOD}\",7,\"{GOOD}\0\",\"bad\",").as_bytes());
        blob.extend_from_slice(b"\"\xff\",");
        blob.extend_from_slice(format!("\"{GOOD}\"]}}]}}]}}}}]}}").as_bytes());
        let (out, problems, stats) = decode(&blob);
        assert_eq!(out.len(), 2);
        assert_eq!(out.items[1].tuple_index, 5, "ids keep the tuple's place");
        let reasons: Vec<_> = problems
            .iter()
            .map(|p| match p {
                DecodeProblem::Tuple {
                    offset,
                    tuple_index,
                    error,
                } => (*offset, *tuple_index, error.kind.clone()),
                other => panic!("unexpected {other}"),
            })
            .collect();
        assert_eq!(
            reasons,
            vec![
                (12, 1, TupleErrorKind::NotAString { found: "a number" }),
                (12, 2, TupleErrorKind::ControlCharacter),
                (12, 3, TupleErrorKind::FieldCount { found: 1 }),
                (12, 4, TupleErrorKind::InvalidUtf8),
            ]
        );
        assert_eq!(
            (stats.tuples, stats.documents, stats.tuple_errors),
            (6, 2, 4)
        );
        assert_eq!(stats.record_errors, 0);
    }

    /// Decodes `bytes` with the pull interface, writing documents in slices of `limit` bytes;
    /// returns the slices, the problems, the commit offset of each record and the stats.
    fn decode_sliced(
        bytes: &[u8],
        limit: usize,
    ) -> (Vec<BulkBuffer>, Vec<DecodeProblem>, Vec<u64>, DecodeStats) {
        let mut encoder = DocumentEncoder::new(
            Schema::Ecs,
            IndexPattern::parse("flows-%{+xxxx.ww}").unwrap(),
        );
        let mut decoder = BlobDecoder::new(&mut encoder, BlobContext::new("c", "b"), 0);
        let (mut slices, mut problems, mut commits) = (Vec::new(), Vec::new(), Vec::new());
        // Fed in pieces smaller than a record, as a download arrives.
        for piece in bytes.chunks(7919) {
            decoder.push(piece);
            while let Some(mut record) = decoder.next_record(&mut |p| problems.push(p)) {
                commits.push(record.commit_offset());
                loop {
                    let mut out = BulkBuffer::new();
                    let done = record.write(&mut out, limit, &mut |p| problems.push(p));
                    slices.push(out);
                    if done {
                        break;
                    }
                }
            }
        }
        let stats = *decoder.stats();
        (slices, problems, commits, stats)
    }

    #[test]
    fn a_large_records_documents_come_out_in_bounded_slices_that_add_up_to_the_whole() {
        let blob = crate::generator::generate(&crate::generator::GenOptions {
            records: 3,
            tuples_per_record: 2000,
            ..Default::default()
        });
        let bytes = blob.bytes();
        let (whole, whole_problems, whole_stats) = decode(&bytes);
        assert!(whole_problems.is_empty());
        const LIMIT: usize = 64 * 1024;
        let (slices, problems, commits, stats) = decode_sliced(&bytes, LIMIT);
        assert!(problems.is_empty());
        assert_eq!(stats, whole_stats);
        let longest_doc = whole
            .items
            .iter()
            .map(|i| i.end - i.action_start)
            .max()
            .unwrap();
        for slice in &slices {
            assert!(
                slice.body.len() < LIMIT + longest_doc,
                "a slice of {} bytes",
                slice.body.len()
            );
        }
        // Each ~1.7 MB record of documents comes out in many slices.
        assert!(slices.len() > 3 * 20, "{} slices", slices.len());
        let body: Vec<u8> = slices.iter().flat_map(|s| s.body.iter().copied()).collect();
        assert_eq!(body, whole.body, "the same documents, ids and order");
        let keys = |items: &mut dyn Iterator<Item = &crate::bulk_buffer::BulkItem>| {
            items
                .map(|i| (i.record_offset, i.tuple_index))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            keys(&mut slices.iter().flat_map(|s| s.items.iter())),
            keys(&mut whole.items.iter())
        );
        // A chunk cut inside a record commits no further than the end of the record before it.
        let record_ends: Vec<u64> = blob.blocks[..3]
            .iter()
            .scan(0u64, |end, block| {
                *end += block.len() as u64;
                Some(*end)
            })
            .collect();
        assert_eq!(commits, record_ends, "head end, then each record's end");
    }

    #[test]
    fn a_record_whose_documents_end_exactly_at_the_limit_is_done_in_one_piece() {
        let blob = crate::generator::generate(&crate::generator::GenOptions {
            records: 2,
            tuples_per_record: 50,
            ..Default::default()
        });
        let bytes = blob.bytes();
        let (whole, _, _) = decode(&bytes);
        // The first record's documents, to the byte.
        let first = whole.items[50].action_start;
        let mut encoder = DocumentEncoder::new(
            Schema::Ecs,
            IndexPattern::parse("flows-%{+xxxx.ww}").unwrap(),
        );
        let mut decoder = BlobDecoder::new(&mut encoder, BlobContext::new("c", "b"), 0);
        decoder.push(&bytes);
        let mut record = decoder.next_record(&mut |p| panic!("{p}")).unwrap();
        let mut out = BulkBuffer::new();
        assert!(
            record.write(&mut out, first, &mut |p| panic!("{p}")),
            "nothing is left of the record"
        );
        assert_eq!(out.body.len(), first);
    }

    #[test]
    fn tuple_problems_of_a_sliced_record_are_reported_once_each_in_order() {
        let mut tuples = Vec::new();
        for i in 0..3000 {
            tuples.push(match i % 97 {
                13 => "\"bad\"".to_owned(),
                42 => "12".to_owned(),
                _ => format!("\"{GOOD}\""),
            });
        }
        let blob = format!(
            r#"{{"records":[{{"time":"t","flowLogVersion":4,"flowRecords":{{"flows":[{{"aclID":"a","flowGroups":[{{"rule":"r","flowTuples":[{}]}}]}}]}}}}]}}"#,
            tuples.join(",")
        );
        let (whole, whole_problems, whole_stats) = decode(blob.as_bytes());
        let (slices, problems, _, stats) = decode_sliced(blob.as_bytes(), 16 * 1024);
        assert!(slices.len() > 10);
        assert_eq!(problems, whole_problems);
        assert_eq!(problems.len(), 2 * 31);
        assert_eq!(stats, whole_stats);
        assert_eq!(
            slices.iter().map(BulkBuffer::len).sum::<usize>(),
            whole.len()
        );
    }

    #[test]
    fn an_undecodable_record_is_reported_and_handed_out_with_nothing_to_write() {
        let blob =
            br#"{"records":[{"time":"t","nothing":1},{"time":"u","flowRecords":{"flows":[]}}]}"#;
        let (slices, problems, commits, stats) = decode_sliced(blob, 1024);
        assert_eq!(problems.len(), 1);
        assert!(matches!(
            problems[0],
            DecodeProblem::Record { offset: 12, .. }
        ));
        assert_eq!(commits, vec![12, 36]);
        assert!(slices.iter().all(BulkBuffer::is_empty));
        assert_eq!((stats.records, stats.record_errors), (2, 1));
    }
}
