//! Incremental splitting of a PT1H.json byte stream (`{"records":[rec,rec,…]}`) into complete
//! records with their absolute byte offsets, across arbitrary chunk boundaries.
//!
//! Azure grows a blob by committing one block per record just before the tail `]}`, each block
//! after the first starting with `,`. A reader that remembers the end of the last complete record
//! can fetch `[end, length)` later and resume here in [`ScanStart::BetweenRecords`].
//!
//! Memory (invariant 6): the scanner holds at most the record in progress, up to
//! `max_record_len` bytes, plus the last chunk fed. Bytes that cannot be a record are skipped
//! as they arrive (a head is at most [`MAX_HEAD_LEN`] bytes), and a record that outgrows the
//! limit is followed to its end without keeping its bytes, then reported as one problem.
use std::ops::Range;

use memchr::{memchr2, memchr3};

/// Where the first byte fed to a scanner sits in the blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanStart {
    /// At byte 0: the head `{"records":[` comes first.
    Head,
    /// Just after a complete record (or after the head): separators, records or the tail follow.
    BetweenRecords,
}

/// What the scanner found.
#[derive(Debug, PartialEq, Eq)]
pub enum ScanEvent<'a> {
    /// The head ended; `len` is its length in bytes (12 for compact blobs, more when pretty-printed).
    Head { len: u64 },
    /// One complete record: the absolute offset of its `{` and its bytes.
    Record { offset: u64, bytes: &'a [u8] },
    /// Bytes that cannot be part of a record, skipped to resynchronise at the next record.
    Malformed {
        offset: u64,
        len: u64,
        reason: &'static str,
    },
    /// The tail `]` that closes the records array, at this absolute offset.
    Tail { offset: u64 },
}

/// What [`RecordScanner::next_scanned`] found: a [`ScanEvent`] that does not borrow the scanner,
/// so a caller can hold a record's bytes ([`RecordScanner::record`]) across awaits while it
/// writes the record's documents in several pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scanned {
    Head {
        len: u64,
    },
    /// A complete record at this offset; its bytes are [`RecordScanner::record`].
    Record {
        offset: u64,
    },
    Malformed {
        offset: u64,
        len: u64,
        reason: &'static str,
    },
    Tail {
        offset: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Between,
    InRecord,
    Tail,
}

/// How the input stood when it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanEnd {
    /// Absolute offset just past the last complete record (or past the head): where the next
    /// read must start. Bytes after it (a partial record, separators, the tail) are re-read then.
    pub resume_offset: u64,
    /// Bytes after `resume_offset` that belonged to a record not complete yet.
    pub partial_record_bytes: u64,
    /// Bytes after `resume_offset` that were neither records nor separators (not yet reported
    /// as malformed, because no record start followed them).
    pub trailing_garbage_bytes: u64,
    /// Whether the closing `]` was seen.
    pub saw_tail: bool,
}

/// Splits a PT1H.json stream into records. Memory holds at most one record (up to the
/// configured maximum) plus one chunk.
#[derive(Debug)]
pub struct RecordScanner {
    buf: Vec<u8>,
    /// Absolute offset of `buf[0]`.
    buf_offset: u64,
    pos: usize,
    state: State,
    record_start: usize,
    depth: u32,
    in_string: bool,
    /// Absolute offset just past the last complete record or the head.
    resume_offset: u64,
    saw_tail: bool,
    /// Absolute offset of the `]` that may be the tail, while waiting for the `}` after it.
    tail_at: u64,
    /// Absolute start of a run of bytes between records that is not a separator.
    garbage_from: Option<u64>,
    /// Absolute start of the record in progress once it outgrew `max_record_len`: its bytes are
    /// no longer kept, only followed to its end.
    oversized_from: Option<u64>,
    /// `buf` range of the last record returned by [`RecordScanner::next_scanned`].
    last_record: Range<usize>,
    max_record_len: usize,
}

/// Records larger than this are reported as malformed instead of growing the buffer further.
/// The default of `max_record_bytes`: about 200,000 VNet tuples in one one-minute record, 15
/// times the busiest records of the benchmarks (13,600 tuples, 1.1 MB), and small enough that
/// `read_concurrency` such records at once stay a bounded share of memory (invariant 6).
pub const DEFAULT_MAX_RECORD_LEN: usize = 16 * 1024 * 1024;

/// UTF-8 byte order mark, accepted (and skipped) before a document.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// A head longer than this (whitespace included) is not one: Azure writes 12 bytes, pretty
/// printers a few more. Also bounds what is buffered while a head is incomplete.
pub const MAX_HEAD_LEN: usize = 1024;

/// Why a record was skipped for its size, as dead-lettered.
const OVERSIZED: &str = "record larger than max_record_bytes";

enum HeadMatch {
    /// `{`, one key, `:` and `[`, with optional whitespace: this many bytes.
    Head(usize),
    /// Something else: a bare record starts here.
    NotAHead,
    /// More input is needed to tell.
    Incomplete,
}

/// Whether `input` (starting with `{`) begins with a head `{"records":[`, in any spacing.
fn head_len(input: &[u8]) -> HeadMatch {
    let window = &input[..input.len().min(MAX_HEAD_LEN)];
    let incomplete = if input.len() > MAX_HEAD_LEN {
        HeadMatch::NotAHead
    } else {
        HeadMatch::Incomplete
    };
    let skip_ws = |from: usize| {
        window[from..]
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .map(|i| from + i)
    };
    let Some(quote) = skip_ws(1) else {
        return incomplete;
    };
    if window[quote] != b'"' {
        return HeadMatch::NotAHead;
    }
    let Some(key_len) = memchr2(b'"', b'\\', &window[quote + 1..]) else {
        return incomplete;
    };
    let key_end = quote + 1 + key_len;
    if window[key_end] != b'"' {
        return HeadMatch::NotAHead;
    }
    let Some(colon) = skip_ws(key_end + 1) else {
        return incomplete;
    };
    if window[colon] != b':' {
        return HeadMatch::NotAHead;
    }
    let Some(bracket) = skip_ws(colon + 1) else {
        return incomplete;
    };
    if window[bracket] == b'[' {
        HeadMatch::Head(bracket + 1)
    } else {
        HeadMatch::NotAHead
    }
}

impl RecordScanner {
    /// A scanner whose first fed byte is at absolute `offset` of the blob.
    pub fn new(offset: u64, start: ScanStart) -> Self {
        RecordScanner {
            buf: Vec::new(),
            buf_offset: offset,
            pos: 0,
            state: match start {
                ScanStart::Head => State::Head,
                ScanStart::BetweenRecords => State::Between,
            },
            record_start: 0,
            depth: 0,
            in_string: false,
            resume_offset: offset,
            saw_tail: false,
            tail_at: 0,
            garbage_from: None,
            oversized_from: None,
            last_record: 0..0,
            max_record_len: DEFAULT_MAX_RECORD_LEN,
        }
    }

    /// Caps the size of one record (bytes); a larger one is reported as malformed and skipped.
    pub fn with_max_record_len(mut self, max: usize) -> Self {
        self.max_record_len = max.max(2);
        self
    }

    /// Feeds the next chunk of the stream, calling `emit` for every event it completes.
    pub fn feed(&mut self, chunk: &[u8], emit: &mut dyn FnMut(ScanEvent<'_>)) {
        self.push(chunk);
        while let Some(scanned) = self.next_scanned() {
            emit(match scanned {
                Scanned::Head { len } => ScanEvent::Head { len },
                Scanned::Record { offset } => ScanEvent::Record {
                    offset,
                    bytes: self.record(),
                },
                Scanned::Malformed {
                    offset,
                    len,
                    reason,
                } => ScanEvent::Malformed {
                    offset,
                    len,
                    reason,
                },
                Scanned::Tail { offset } => ScanEvent::Tail { offset },
            });
        }
    }

    /// Appends the next chunk of the stream; [`RecordScanner::next_scanned`] then returns what
    /// it completes. Events not taken yet are kept: pushing first and scanning later is fine.
    pub fn push(&mut self, chunk: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(chunk);
    }

    /// The next event of the input pushed so far; `None` when more input is needed.
    pub fn next_scanned(&mut self) -> Option<Scanned> {
        self.scan()
    }

    /// The bytes of the record the last [`Scanned::Record`] announced (empty before the first).
    /// They stay until the next [`RecordScanner::push`] or [`RecordScanner::next_scanned`].
    pub fn record(&self) -> &[u8] {
        self.buf.get(self.last_record.clone()).unwrap_or_default()
    }

    /// The bytes of `[offset, offset + len)` still buffered, from `offset` (at most `max`), for
    /// the excerpt of a malformed run; empty when its start is no longer held (the bytes of a
    /// record skipped for its size, or garbage that spanned an earlier feed).
    pub fn held(&self, offset: u64, len: u64, max: usize) -> &[u8] {
        let Some(start) = offset
            .checked_sub(self.buf_offset)
            .and_then(|s| usize::try_from(s).ok())
        else {
            return &[];
        };
        let len = usize::try_from(len).unwrap_or(usize::MAX).min(max);
        let end = start.saturating_add(len).min(self.buf.len());
        self.buf.get(start..end).unwrap_or_default()
    }

    /// Absolute offset just past the last complete record (or the head, or reported garbage):
    /// what a commit may safely record now.
    pub fn resume_offset(&self) -> u64 {
        self.resume_offset
    }

    /// Ends the stream: reports where the next read should resume and whether a record was cut.
    pub fn finish(&self) -> ScanEnd {
        let end = self.buf_offset + self.buf.len() as u64;
        let partial_record_bytes = match self.state {
            State::InRecord => end - self.record_start_offset(),
            // A head (or a byte order mark) not complete yet: `pos` is at its first byte.
            State::Head => end - self.abs(self.pos),
            _ => 0,
        };
        let trailing_garbage_bytes = self.garbage_from.map_or(0, |from| end - from);
        ScanEnd {
            resume_offset: self.resume_offset,
            partial_record_bytes,
            trailing_garbage_bytes,
            saw_tail: self.saw_tail,
        }
    }

    /// Bytes held now (for tests of the memory bound).
    #[cfg(test)]
    fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Absolute offset of the record in progress.
    fn record_start_offset(&self) -> u64 {
        self.oversized_from
            .unwrap_or_else(|| self.abs(self.record_start))
    }

    /// Drops consumed bytes so memory holds only the record in progress (nothing of one being
    /// skipped for its size).
    fn compact(&mut self) {
        self.last_record = 0..0;
        let keep_from = match self.state {
            State::InRecord if self.oversized_from.is_none() => self.record_start,
            _ => self.pos,
        };
        if keep_from > 0 {
            self.buf.drain(..keep_from);
            self.buf_offset += keep_from as u64;
            self.pos -= keep_from;
            self.record_start = self.record_start.saturating_sub(keep_from);
        }
    }

    fn abs(&self, index: usize) -> u64 {
        self.buf_offset + index as u64
    }

    fn scan(&mut self) -> Option<Scanned> {
        loop {
            match self.state {
                State::Head => {
                    let Some(i) = self.buf[self.pos..]
                        .iter()
                        .position(|b| !b.is_ascii_whitespace())
                    else {
                        self.pos = self.buf.len();
                        return None;
                    };
                    let start = self.pos + i;
                    let rest = &self.buf[start..];
                    // Editors and some exporters put a UTF-8 byte order mark before the document.
                    if rest.starts_with(BOM) {
                        self.pos = start + BOM.len();
                        continue;
                    }
                    if BOM.starts_with(rest) {
                        self.pos = start;
                        return None;
                    }
                    if rest[0] != b'{' {
                        // Neither an envelope nor a record: garbage up to the next record (a
                        // `]` here is part of it, not a tail).
                        self.garbage_from.get_or_insert(self.abs(start));
                        self.pos = start + 1;
                        self.state = State::Between;
                        continue;
                    }
                    match head_len(rest) {
                        HeadMatch::Incomplete => {
                            self.pos = start;
                            return None;
                        }
                        HeadMatch::NotAHead => {
                            // A bare record (a sequence of records without the envelope).
                            self.pos = start;
                            self.state = State::Between;
                        }
                        HeadMatch::Head(len) => {
                            let head_end = start + len;
                            self.pos = head_end;
                            self.resume_offset = self.abs(head_end);
                            self.state = State::Between;
                            return Some(Scanned::Head {
                                len: self.abs(head_end),
                            });
                        }
                    }
                }
                State::Between => {
                    let Some(i) = self.buf[self.pos..]
                        .iter()
                        .position(|b| !(b.is_ascii_whitespace() || *b == b','))
                    else {
                        self.pos = self.buf.len();
                        return None;
                    };
                    let at = self.pos + i;
                    if matches!(self.buf[at], b'{' | b']')
                        && let Some(from) = self.garbage_from.take()
                    {
                        // Reported before the record (or tail) at `at`, which the next call
                        // scans from here.
                        self.pos = at;
                        self.resume_offset = self.abs(at);
                        return Some(Scanned::Malformed {
                            offset: from,
                            len: self.abs(at) - from,
                            reason: "unexpected bytes between records",
                        });
                    }
                    match self.buf[at] {
                        b'{' => {
                            self.record_start = at;
                            self.pos = at + 1;
                            self.depth = 1;
                            self.in_string = false;
                            self.state = State::InRecord;
                        }
                        b']' => {
                            // The tail only if `}` follows: a `]` among garbage must not end
                            // the records and hide the ones after it.
                            self.tail_at = self.abs(at);
                            self.pos = at + 1;
                            self.state = State::Tail;
                        }
                        _ => {
                            // Skip to the next record start; the skipped run is reported once it ends.
                            self.garbage_from.get_or_insert(self.abs(at));
                            match memchr2(b'{', b']', &self.buf[at..]) {
                                Some(skip) => self.pos = at + skip,
                                None => {
                                    self.pos = self.buf.len();
                                    return None;
                                }
                            }
                        }
                    }
                }
                State::InRecord => match self.scan_record() {
                    RecordScan::NeedInput => return None,
                    RecordScan::Found(scanned) => return Some(scanned),
                },
                State::Tail => {
                    let Some(i) = self.buf[self.pos..]
                        .iter()
                        .position(|b| !b.is_ascii_whitespace())
                    else {
                        self.pos = self.buf.len();
                        return None;
                    };
                    let at = self.pos + i;
                    if self.buf[at] == b'}' {
                        self.saw_tail = true;
                        self.pos = at + 1;
                        // Azure never writes after the tail, but files concatenated by hand do:
                        // another document (or anything) may follow, and is scanned, not ignored.
                        self.state = State::Head;
                        return Some(Scanned::Tail {
                            offset: self.tail_at,
                        });
                    }
                    self.garbage_from.get_or_insert(self.tail_at);
                    self.pos = at;
                    self.state = State::Between;
                }
            }
        }
    }

    /// Advances through a record until it ends (or is cut short by the next one).
    fn scan_record(&mut self) -> RecordScan {
        loop {
            if self.oversized_from.is_none() && self.pos - self.record_start > self.max_record_len {
                // From here on the record is only followed to its end (strings and nesting),
                // not kept: `compact` drops what was read, so a record of any size, or garbage
                // that opened a `{` and never closes it, costs at most one chunk more.
                self.oversized_from = Some(self.abs(self.record_start));
            }
            let rest = &self.buf[self.pos..];
            if self.in_string {
                let Some(i) = memchr2(b'"', b'\\', rest) else {
                    self.pos = self.buf.len();
                    return RecordScan::NeedInput;
                };
                if rest[i] == b'\\' {
                    if i + 1 >= rest.len() {
                        self.pos += i;
                        return RecordScan::NeedInput;
                    }
                    self.pos += i + 2;
                } else {
                    self.in_string = false;
                    self.pos += i + 1;
                }
                continue;
            }
            // Between the strings of a tuple array stands a comma alone: a look at the next two
            // bytes finds the next string without a library search, whose set-up costs more
            // than the search itself on so short a gap.
            let next_quote = match rest {
                [b'"', ..] => Some(0),
                [b',', b'"', ..] => Some(1),
                _ => None,
            };
            let Some(i) = next_quote.or_else(|| memchr3(b'"', b'{', b'}', rest)) else {
                self.pos = self.buf.len();
                return RecordScan::NeedInput;
            };
            let at = self.pos + i;
            match self.buf[at] {
                b'"' => {
                    self.in_string = true;
                    self.pos = at + 1;
                }
                b'{' => {
                    // No object nested in a flow-log record has a `time` key: a `{"time"` inside a
                    // record means the record was cut short and the next one began. Resync there.
                    const MARKER: &[u8] = b"{\"time\"";
                    let ahead = &self.buf[at..];
                    if ahead.len() < MARKER.len() && MARKER.starts_with(ahead) {
                        self.pos = at;
                        return RecordScan::NeedInput;
                    }
                    self.pos = at + 1;
                    if ahead.starts_with(MARKER) {
                        let from = self.record_start_offset();
                        self.oversized_from = None;
                        // By length, not by whether skipping began: where the input was cut
                        // into chunks must not change what is reported.
                        let reason = if self.abs(at) - from > self.max_record_len as u64 {
                            OVERSIZED
                        } else {
                            "record cut short: the next record starts inside it"
                        };
                        self.resume_offset = self.abs(at);
                        self.record_start = at;
                        self.depth = 1;
                        return RecordScan::Found(Scanned::Malformed {
                            offset: from,
                            len: self.abs(at) - from,
                            reason,
                        });
                    }
                    self.depth += 1;
                }
                _ => {
                    self.depth -= 1;
                    self.pos = at + 1;
                    if self.depth == 0 {
                        let from = self.record_start_offset();
                        self.oversized_from = None;
                        self.state = State::Between;
                        self.resume_offset = self.abs(self.pos);
                        // Judged by the record's length (not by whether skipping began, which
                        // depends on where chunks ended), so any chunking gives the same events.
                        let len = self.abs(self.pos) - from;
                        if len > self.max_record_len as u64 {
                            return RecordScan::Found(Scanned::Malformed {
                                offset: from,
                                len,
                                reason: OVERSIZED,
                            });
                        }
                        self.last_record = self.record_start..self.pos;
                        return RecordScan::Found(Scanned::Record {
                            offset: self.abs(self.record_start),
                        });
                    }
                }
            }
        }
    }
}

enum RecordScan {
    NeedInput,
    Found(Scanned),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Eq)]
    enum Owned {
        Head(u64),
        Record(u64, String),
        Malformed(u64, u64),
        Tail(u64),
    }

    fn scan_in_chunks(
        input: &[u8],
        start: ScanStart,
        offset: u64,
        chunk: usize,
    ) -> (Vec<Owned>, ScanEnd) {
        let mut scanner = RecordScanner::new(offset, start);
        let mut events = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            scanner.feed(piece, &mut |e| {
                events.push(match e {
                    ScanEvent::Head { len } => Owned::Head(len),
                    ScanEvent::Record { offset, bytes } => {
                        Owned::Record(offset, String::from_utf8_lossy(bytes).into_owned())
                    }
                    ScanEvent::Malformed { offset, len, .. } => Owned::Malformed(offset, len),
                    ScanEvent::Tail { offset } => Owned::Tail(offset),
                })
            });
        }
        (events, scanner.finish())
    }

    #[test]
    fn compact_blob_in_every_chunk_size() {
        let input = br#"{"records":[{"time":"a","x":"}{"},{"time":"b","y":{"z":"\"}"}}]}"#;
        for chunk in 1..input.len() + 1 {
            let (events, end) = scan_in_chunks(input, ScanStart::Head, 0, chunk);
            assert_eq!(
                events,
                vec![
                    Owned::Head(12),
                    Owned::Record(12, r#"{"time":"a","x":"}{"}"#.into()),
                    Owned::Record(34, r#"{"time":"b","y":{"z":"\"}"}}"#.into()),
                    Owned::Tail(62),
                ],
                "chunk size {chunk}"
            );
            assert_eq!(
                end,
                ScanEnd {
                    resume_offset: 62,
                    partial_record_bytes: 0,
                    trailing_garbage_bytes: 0,
                    saw_tail: true
                }
            );
        }
    }

    #[test]
    fn pretty_printed_head_is_learned() {
        let input = b"{\n    \"records\": [\n        {\"time\":1}\n    ]\n}";
        let (events, _) = scan_in_chunks(input, ScanStart::Head, 0, 7);
        assert_eq!(events[0], Owned::Head(18));
        assert_eq!(events[1], Owned::Record(27, "{\"time\":1}".into()));
    }

    #[test]
    fn continuation_read_starts_between_records_and_keeps_partial_tail() {
        // A ranged read from offset 100 that ended in the middle of the second new record.
        let input = br#",{"time":"c"},{"time":"d","flows":["1,2"#;
        let (events, end) = scan_in_chunks(input, ScanStart::BetweenRecords, 100, 5);
        assert_eq!(events, vec![Owned::Record(101, r#"{"time":"c"}"#.into())]);
        assert_eq!(end.resume_offset, 113);
        assert_eq!(end.partial_record_bytes, input.len() as u64 - 14);
        assert!(!end.saw_tail);
    }

    #[test]
    fn truncated_record_resyncs_at_next_record() {
        let input = br#"{"records":[{"time":"a","p":{"f":["1,2,3"],{"time":"b"},{"time":"c"}]}"#;
        let (events, end) = scan_in_chunks(input, ScanStart::Head, 0, 3);
        assert_eq!(
            events,
            vec![
                Owned::Head(12),
                Owned::Malformed(12, 31),
                Owned::Record(43, r#"{"time":"b"}"#.into()),
                Owned::Record(56, r#"{"time":"c"}"#.into()),
                Owned::Tail(68),
            ]
        );
        assert!(end.saw_tail);
    }

    #[test]
    fn garbage_between_records_is_reported_and_skipped() {
        let input = br#"{"records":[{"time":"a"},garbage!{"time":"b"}]}"#;
        for chunk in 1..input.len() + 1 {
            let (events, _) = scan_in_chunks(input, ScanStart::Head, 0, chunk);
            let skipped: u64 = events
                .iter()
                .map(|e| {
                    if let Owned::Malformed(_, len) = e {
                        *len
                    } else {
                        0
                    }
                })
                .sum();
            assert_eq!(skipped, 8, "chunk size {chunk}");
            assert!(
                events.contains(&Owned::Malformed(25, 8)),
                "chunk size {chunk}"
            );
            assert!(events.contains(&Owned::Record(33, r#"{"time":"b"}"#.into())));
        }
    }

    #[test]
    fn oversized_record_is_malformed_not_buffered_forever() {
        let mut input = br#"{"records":[{"time":"a","x":""#.to_vec();
        input.extend(std::iter::repeat_n(b'x', 1000));
        input.extend_from_slice(br#""},{"time":"b"}]}"#);
        let mut scanner = RecordScanner::new(0, ScanStart::Head).with_max_record_len(100);
        let mut kinds = Vec::new();
        for piece in input.chunks(64) {
            scanner.feed(piece, &mut |e| {
                kinds.push(format!("{e:?}").split(' ').next().unwrap_or("").to_string())
            });
        }
        assert!(kinds.iter().any(|k| k == "Malformed"));
        assert!(
            scanner.buf.len() < 300,
            "buffer grew to {}",
            scanner.buf.len()
        );
    }

    #[test]
    fn invalid_utf8_and_random_bytes_never_panic() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..200 {
            let mut data = Vec::new();
            for _ in 0..300 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let alphabet = b"{}[],\"\\ x\xff";
                data.push(alphabet[(seed % alphabet.len() as u64) as usize]);
            }
            for chunk in [1, 7, 300] {
                let _ = scan_in_chunks(&data, ScanStart::Head, 0, chunk);
            }
        }
    }
    fn problems(events: &[Owned]) -> Vec<(u64, u64)> {
        events
            .iter()
            .filter_map(|e| match e {
                Owned::Malformed(offset, len) => Some((*offset, *len)),
                _ => None,
            })
            .collect()
    }

    fn records(events: &[Owned]) -> Vec<(u64, String)> {
        events
            .iter()
            .filter_map(|e| match e {
                Owned::Record(offset, text) => Some((*offset, text.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_utf8_bom_before_the_head_is_skipped_in_every_chunk_size() {
        let input = b"\xEF\xBB\xBF{\n  \"records\": [\n    {\"time\":1}\n  ]\n}\n";
        for chunk in 1..input.len() + 1 {
            let (events, end) = scan_in_chunks(input, ScanStart::Head, 0, chunk);
            assert_eq!(
                events,
                vec![
                    Owned::Head(19),
                    Owned::Record(24, "{\"time\":1}".into()),
                    Owned::Tail(37),
                ],
                "chunk size {chunk}"
            );
            assert_eq!(end.trailing_garbage_bytes, 0);
            assert_eq!(end.partial_record_bytes, 0);
        }
    }

    #[test]
    fn concatenated_documents_are_all_scanned() {
        let input =
            b"{\"records\":[{\"time\":\"a\"}]}\n{\"records\":[{\"time\":\"b\"},{\"time\":\"c\"}]}";
        for chunk in 1..input.len() + 1 {
            let (events, end) = scan_in_chunks(input, ScanStart::Head, 0, chunk);
            assert_eq!(
                records(&events),
                vec![
                    (12, r#"{"time":"a"}"#.into()),
                    (39, r#"{"time":"b"}"#.into()),
                    (52, r#"{"time":"c"}"#.into()),
                ],
                "chunk size {chunk}"
            );
            assert_eq!(problems(&events), vec![], "chunk size {chunk}");
            assert_eq!(end.resume_offset, 64);
            assert_eq!(end.trailing_garbage_bytes, 0);
        }
    }

    #[test]
    fn bytes_after_the_tail_are_reported_not_ignored() {
        let input = br#"{"records":[{"time":"a"}]}xyz{"time":"b"}"#;
        let (events, _) = scan_in_chunks(input, ScanStart::Head, 0, 4);
        assert_eq!(problems(&events), vec![(26, 3)]);
        assert_eq!(records(&events)[1], (29, r#"{"time":"b"}"#.into()));
        let input = br#"{"records":[{"time":"a"}]} ]} "#;
        let (events, end) = scan_in_chunks(input, ScanStart::Head, 0, 5);
        assert_eq!(problems(&events), vec![]);
        assert_eq!(
            end.trailing_garbage_bytes, 3,
            "`]}}` and a space are not a record"
        );
    }

    #[test]
    fn a_bracket_among_garbage_between_records_does_not_end_the_records() {
        for (garbage, reported) in [
            // Each reported run ends where the next record (or tail candidate) starts.
            (&b"]"[..], vec![(12, 2)]),
            (b"[1,2]", vec![(12, 4), (16, 2)]),
            (b"] ", vec![(12, 3)]),
            (b"]]", vec![(12, 1), (13, 2)]),
        ] {
            let mut input = br#"{"records":["#.to_vec();
            input.extend_from_slice(garbage);
            input.extend_from_slice(br#",{"time":"b"}]}"#);
            for chunk in 1..input.len() + 1 {
                let (events, end) = scan_in_chunks(&input, ScanStart::Head, 0, chunk);
                let shown = String::from_utf8_lossy(garbage);
                assert_eq!(problems(&events), reported, "{shown} in chunks of {chunk}");
                assert_eq!(records(&events).len(), 1, "{shown} in chunks of {chunk}");
                assert!(end.saw_tail);
            }
        }
    }

    #[test]
    fn a_bare_record_is_not_taken_for_a_head() {
        // `{"time":"t","flows":[` looks like a head to a scanner that only looks for `[`.
        let input = br#"{"time":"t","flows":["1"]}{"time":"u","flows":[]}"#;
        let (events, end) = scan_in_chunks(input, ScanStart::Head, 0, 3);
        assert_eq!(records(&events).len(), 2, "{events:?}");
        assert_eq!(end.resume_offset, input.len() as u64);
    }

    #[test]
    fn a_cut_head_is_reported_as_a_partial_record() {
        let (events, end) = scan_in_chunks(b"  {\"recor", ScanStart::Head, 0, 2);
        assert_eq!(events, vec![]);
        assert_eq!(end.partial_record_bytes, 7);
        assert_eq!(end.resume_offset, 0);
    }

    /// Feeds `input` in `piece`-byte pieces to a scanner capped at `max`; returns the events
    /// and the most bytes it held at once.
    fn scan_capped(input: &[u8], max: usize, piece: usize) -> (Vec<Owned>, ScanEnd, usize) {
        let mut scanner = RecordScanner::new(0, ScanStart::Head).with_max_record_len(max);
        let mut events = Vec::new();
        let mut held = 0;
        for chunk in input.chunks(piece) {
            scanner.feed(chunk, &mut |e| {
                events.push(match e {
                    ScanEvent::Head { len } => Owned::Head(len),
                    ScanEvent::Record { offset, bytes } => {
                        Owned::Record(offset, String::from_utf8_lossy(bytes).into_owned())
                    }
                    ScanEvent::Malformed { offset, len, .. } => Owned::Malformed(offset, len),
                    ScanEvent::Tail { offset } => Owned::Tail(offset),
                })
            });
            held = held.max(scanner.buffered());
        }
        (events, scanner.finish(), held)
    }

    #[test]
    fn garbage_without_a_head_is_never_held_beyond_the_record_limit_and_every_byte_is_counted() {
        const MAX: usize = 64 * 1024;
        const PIECE: usize = 16 * 1024;
        let filler = |n: usize| -> Vec<u8> { (0..n).map(|i| b"xyz 0123"[i % 8]).collect() };
        let shapes: Vec<(&str, Vec<u8>)> = vec![
            ("no brace at all", filler(4 << 20)),
            (
                "a brace, then no structure",
                [b"{".to_vec(), filler(4 << 20)].concat(),
            ),
            (
                "a head whose value is an endless string",
                [b"{\"records\": \"".to_vec(), filler(4 << 20)].concat(),
            ),
            (
                "a head cut before its bracket, then spaces",
                [b"{\"records\":".to_vec(), vec![b' '; 4 << 20]].concat(),
            ),
            ("nested braces", vec![b'{'; 4 << 20]),
        ];
        for (what, input) in shapes {
            let (events, end, held) = scan_capped(&input, MAX, PIECE);
            assert!(
                held <= MAX + 2 * PIECE,
                "{what}: held {held} bytes at once (limit {MAX})"
            );
            assert!(records(&events).is_empty(), "{what}: {events:?}");
            let counted: u64 = problems(&events).iter().map(|(_, len)| len).sum::<u64>()
                + end.partial_record_bytes
                + end.trailing_garbage_bytes;
            // Whitespace before a document is not garbage; everything else is counted.
            let blank = input.iter().take_while(|b| b.is_ascii_whitespace()).count() as u64;
            assert_eq!(
                counted + blank,
                input.len() as u64,
                "{what}: bytes reported as problems or leftovers"
            );
        }
    }

    /// A VNet-shaped record of about `len` bytes, with nested objects (flows, groups) and strings
    /// holding braces, as real records have.
    fn big_record(time: &str, len: usize) -> Vec<u8> {
        let mut r =
            format!(r#"{{"time":"{time}","flowRecords":{{"flows":[{{"aclID":"a","flowGroups":["#)
                .into_bytes();
        let group = br#"{"rule":"r}{","flowTuples":["1663146003606,10.0.0.6,52.239.184.180,23956,443,6,O,E,NX,3,767,2,1580"]}"#;
        let mut first = true;
        while r.len() + group.len() + 8 < len {
            if !first {
                r.push(b',');
            }
            first = false;
            r.extend_from_slice(group);
        }
        r.extend_from_slice(b"]}]}}");
        r
    }

    #[test]
    fn an_oversized_record_is_skipped_whole_without_being_held_and_reported_once() {
        const MAX: usize = 4096;
        let huge = big_record("a", 1 << 20);
        let next = br#"{"time":"b"}"#;
        let input = [&b"{\"records\":["[..], &huge, b",", next, b"]}"].concat();
        for piece in [1000, 4096, 65536] {
            let (events, end, held) = scan_capped(&input, MAX, piece);
            assert!(held <= MAX + 2 * piece, "held {held} bytes at once");
            assert_eq!(
                problems(&events),
                vec![(12, huge.len() as u64)],
                "one problem for the whole record, in pieces of {piece}"
            );
            assert_eq!(
                records(&events),
                vec![(13 + huge.len() as u64, r#"{"time":"b"}"#.into())],
                "its nested objects are not taken for records"
            );
            assert!(end.saw_tail);
            assert_eq!(end.resume_offset, input.len() as u64 - 2);
        }
    }

    #[test]
    fn an_oversized_record_cut_short_by_the_next_record_is_reported_up_to_it() {
        let huge = big_record("a", 100_000);
        // The huge record lost its end (after a group, outside any string): the next record
        // starts inside it.
        let group_start = memchr::memmem::find(&huge[50_000..], br#"{"rule""#).unwrap();
        let cut = &huge[..50_000 + group_start];
        let input = [&b"{\"records\":["[..], cut, br#"{"time":"b"}]}"#].concat();
        let (events, end, _) = scan_capped(&input, 1024, 4096);
        assert_eq!(problems(&events), vec![(12, cut.len() as u64)]);
        assert_eq!(records(&events).len(), 1);
        assert!(end.saw_tail);
    }

    #[test]
    fn the_pull_interface_gives_the_same_events_as_feed() {
        let input = [
            &b"\xEF\xBB\xBF{\"records\":[x,"[..],
            &big_record("a", 3000),
            b",",
            &big_record("b", 300),
            b"]}",
        ]
        .concat();
        let (fed, fed_end) = scan_in_chunks(&input, ScanStart::Head, 0, 97);
        let mut scanner = RecordScanner::new(0, ScanStart::Head);
        let mut pulled = Vec::new();
        for piece in input.chunks(97) {
            scanner.push(piece);
            while let Some(scanned) = scanner.next_scanned() {
                pulled.push(match scanned {
                    Scanned::Head { len } => Owned::Head(len),
                    Scanned::Record { offset } => Owned::Record(
                        offset,
                        String::from_utf8_lossy(scanner.record()).into_owned(),
                    ),
                    Scanned::Malformed { offset, len, .. } => Owned::Malformed(offset, len),
                    Scanned::Tail { offset } => Owned::Tail(offset),
                });
            }
        }
        assert_eq!(pulled, fed);
        assert_eq!(scanner.finish(), fed_end);
    }

    /// Pieces a PT1H.json stream, valid or not, can be made of.
    const FRAGMENTS: [&[u8]; 12] = [
        b"{\"records\":[",
        b"{\n \"records\" : [\n",
        b"\xEF\xBB\xBF",
        b"{\"time\":\"a\",\"x\":\"]}{\"}",
        b",",
        b"]}",
        b"]",
        b"}",
        b"garbage",
        b" \n",
        b"{\"time\":\"b\",\"y\":{\"z\":[1]}}",
        b"\"q\\\"",
    ];

    proptest::proptest! {
        #[test]
        fn any_chunking_of_any_fragments_gives_the_same_events(
            pieces in proptest::collection::vec(0usize..12, 0..12),
            chunk in 1usize..40,
            cap in proptest::option::of(2usize..48),
        ) {
            let input: Vec<u8> = pieces.iter().flat_map(|i| FRAGMENTS[*i].iter().copied()).collect();
            // With a cap, records longer than it are skipped whole, whatever the chunking.
            let max = cap.unwrap_or(DEFAULT_MAX_RECORD_LEN);
            let (whole, whole_end, _) = scan_capped(&input, max, input.len().max(1));
            let (chunked, chunked_end, _) = scan_capped(&input, max, chunk);
            proptest::prop_assert_eq!(&whole, &chunked);
            proptest::prop_assert_eq!(whole_end, chunked_end);
            proptest::prop_assert!(problems(&whole).iter().all(|(_, len)| *len > 0), "{whole:?}");
            // Every byte is a record, a known envelope byte, or counted: nothing vanishes silently.
            let reported: u64 = problems(&whole).iter().map(|(_, len)| len).sum::<u64>()
                + whole_end.trailing_garbage_bytes
                + whole_end.partial_record_bytes;
            let in_records: u64 = records(&whole).iter().map(|(_, r)| r.len() as u64).sum();
            proptest::prop_assert!(reported + in_records <= input.len() as u64);
        }
    }
}
