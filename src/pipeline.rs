//! The pure half of ingestion for one blob: bytes of a PT1H.json (whole, or a ranged read that
//! resumes after a complete record) → records → tuples → bulk items, with every failure reported.
use crate::flowlog::{
    RecordError, RecordScanner, ScanEnd, ScanEvent, ScanStart, TupleError, decode_record,
};
use crate::sink::document::{BlobContext, BulkBuffer, DocumentEncoder};

/// Something in the stream that did not become documents. Never fatal: the caller counts,
/// logs and dead-letters it, and decoding goes on with the next tuple or record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeProblem {
    #[error("malformed bytes at offset {offset} ({len} bytes): {reason}")]
    Malformed {
        offset: u64,
        len: u64,
        reason: &'static str,
    },
    #[error("record at offset {offset}: {error}")]
    Record { offset: u64, error: RecordError },
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
pub struct BlobDecoder<'e> {
    scanner: RecordScanner,
    encoder: &'e mut DocumentEncoder,
    blob: BlobContext,
    stats: DecodeStats,
}

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
        let encoder = &mut *self.encoder;
        let blob = &self.blob;
        let stats = &mut self.stats;
        self.scanner.feed(chunk, &mut |event| match event {
            ScanEvent::Head { len } => stats.head_len = Some(len),
            ScanEvent::Tail { .. } => {}
            ScanEvent::Malformed {
                offset,
                len,
                reason,
            } => {
                stats.malformed_bytes += len;
                problems(DecodeProblem::Malformed {
                    offset,
                    len,
                    reason,
                });
            }
            ScanEvent::Record { offset, bytes } => {
                stats.records += 1;
                let mut record = match decode_record(bytes) {
                    Ok(r) => r,
                    Err(error) => {
                        stats.record_errors += 1;
                        problems(DecodeProblem::Record { offset, error });
                        return;
                    }
                };
                if !record.is_known_version() {
                    stats.unknown_versions += 1;
                }
                // Slots that were not usable strings hold a placeholder that never parses, so the
                // encoder reports them at their index; the decoder's reason replaces its own.
                let mut invalid = std::mem::take(&mut record.invalid_tuples)
                    .into_iter()
                    .peekable();
                let outcome = encoder.encode_record(blob, offset, &record, out);
                stats.tuples += (outcome.documents + outcome.tuple_errors.len()) as u64;
                stats.documents += outcome.documents as u64;
                stats.tuple_errors += outcome.tuple_errors.len() as u64;
                stats.newest_time_ms = stats.newest_time_ms.max(outcome.newest_time_ms);
                for (tuple_index, mut error) in outcome.tuple_errors {
                    while let Some((i, _)) = invalid.peek()
                        && *i < tuple_index
                    {
                        invalid.next();
                    }
                    if let Some((_, reason)) = invalid.next_if(|(i, _)| *i == tuple_index) {
                        error = reason;
                    }
                    problems(DecodeProblem::Tuple {
                        offset,
                        tuple_index,
                        error,
                    });
                }
            }
        });
    }

    /// Where the next read of this blob must start, and whether a record was cut at the end.
    pub fn finish(&self) -> ScanEnd {
        self.scanner.finish()
    }

    pub fn stats(&self) -> &DecodeStats {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flowlog::TupleErrorKind;
    use crate::sink::document::Schema;
    use crate::sink::index_name::IndexPattern;

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
}
