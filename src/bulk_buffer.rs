//! The NDJSON bulk body documents travel in: the encoder writes it, reads carry it in their
//! chunks, delivery batches it and the sink sends it as a `_bulk` request. A shared leaf (it
//! imports nothing from the crate), so that every stage from decode to ack can name it without
//! an import pointing up the flow. [`SharedBody`] is the same bytes once delivery has gathered
//! them: the chunks' own buffers, shared, never copied into one.
use std::borrow::Cow;
use std::ops::Range;

use bytes::Bytes;

/// One document in a [`BulkBuffer`]: where its action and source lines are, and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkItem {
    /// Start of the `{"create":…}` line.
    pub action_start: usize,
    /// Start of the document line.
    pub doc_start: usize,
    /// End of the document line, newline included.
    pub end: usize,
    pub record_offset: u64,
    pub tuple_index: u32,
}

impl BulkItem {
    /// Action and document lines, as sent in a bulk body.
    pub fn range(&self) -> Range<usize> {
        self.action_start..self.end
    }

    /// The document JSON without its trailing newline.
    pub fn doc_range(&self) -> Range<usize> {
        self.doc_start..self.end - 1
    }
}

/// An NDJSON bulk body (`{"create":{"_index":…,"_id":…}}\n{doc}\n` per document) and its items.
#[derive(Debug, Default, Clone)]
pub struct BulkBuffer {
    pub body: Vec<u8>,
    pub items: Vec<BulkItem>,
}

impl BulkBuffer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn clear(&mut self) {
        self.body.clear();
        self.items.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// The document JSON of item `i`.
    pub fn doc(&self, i: usize) -> &[u8] {
        &self.body[self.items[i].doc_range()]
    }

    /// Moves items `at..` (and their bytes) into `tail`, which must be empty, leaving items
    /// `..at` here; `tail`'s items are renumbered from its start. `at` past the end moves
    /// nothing.
    pub fn split_off_into(&mut self, at: usize, tail: &mut BulkBuffer) {
        let Some(first) = self.items.get(at) else {
            return;
        };
        let from = first.action_start;
        tail.body.extend_from_slice(&self.body[from..]);
        tail.items
            .extend(self.items[at..].iter().map(|item| BulkItem {
                action_start: item.action_start - from,
                doc_start: item.doc_start - from,
                end: item.end - from,
                ..*item
            }));
        self.body.truncate(from);
        self.items.truncate(at);
    }
}

/// A bulk body held as the shared buffers its bytes lie in (slices of the chunks the encoder
/// filled), read as one byte sequence. A batch gathers slices instead of copying documents into
/// a buffer of its own, and a request sends the slices as they are. Items' lines never straddle
/// two buffers: a chunk holds whole documents.
#[derive(Debug, Clone, Default)]
pub struct SharedBody {
    segments: Vec<Bytes>,
    /// Where each segment ends in the whole body.
    ends: Vec<usize>,
}

impl SharedBody {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `bytes` (an empty slice adds nothing).
    pub fn push(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        let end = self.len() + bytes.len();
        self.segments.push(bytes);
        self.ends.push(end);
    }

    /// Drops every buffer, keeping the lists' room for the next body.
    pub fn clear(&mut self) {
        self.segments.clear();
        self.ends.clear();
    }

    pub fn len(&self) -> usize {
        self.ends.last().copied().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// The buffers, in order.
    pub fn segments(&self) -> &[Bytes] {
        &self.segments
    }

    /// The buffers, in order, taken out.
    pub fn into_segments(self) -> Vec<Bytes> {
        self.segments
    }

    /// The segment holding byte `at` and where that segment starts.
    fn segment_at(&self, at: usize) -> Option<(usize, usize)> {
        let i = self.ends.partition_point(|&end| end <= at);
        let segment = self.segments.get(i)?;
        Some((i, self.ends[i] - segment.len()))
    }

    /// The bytes in `range` (clamped to the body): borrowed when they lie in one buffer, as an
    /// item's lines always do, else copied together.
    pub fn get(&self, range: Range<usize>) -> Cow<'_, [u8]> {
        let end = range.end.min(self.len());
        let Some((i, start)) = self.segment_at(range.start).filter(|_| range.start < end) else {
            return Cow::Borrowed(&[]);
        };
        if end <= self.ends[i] {
            return Cow::Borrowed(&self.segments[i][range.start - start..end - start]);
        }
        Cow::Owned(self.slice(range.start..end).to_vec())
    }

    /// The part of the body in `range` (clamped to the body), sharing its buffers.
    pub fn slice(&self, range: Range<usize>) -> SharedBody {
        let mut part = SharedBody::new();
        let end = range.end.min(self.len());
        let Some((first, _)) = self.segment_at(range.start).filter(|_| range.start < end) else {
            return part;
        };
        for (segment, &segment_end) in self.segments[first..].iter().zip(&self.ends[first..]) {
            let segment_start = segment_end - segment.len();
            if segment_start >= end {
                break;
            }
            let from = range.start.saturating_sub(segment_start);
            let to = end.min(segment_end) - segment_start;
            part.push(segment.slice(from..to));
        }
        part
    }

    /// The whole body in one buffer (tests, and bodies too small to matter).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.len());
        for segment in &self.segments {
            bytes.extend_from_slice(segment);
        }
        bytes
    }
}

impl From<Bytes> for SharedBody {
    fn from(bytes: Bytes) -> Self {
        let mut body = SharedBody::new();
        body.push(bytes);
        body
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn body_of(parts: &[&str]) -> SharedBody {
        let mut body = SharedBody::new();
        for part in parts {
            body.push(Bytes::copy_from_slice(part.as_bytes()));
        }
        body
    }

    #[test]
    fn a_shared_body_reads_as_its_segments_joined_and_slices_without_copying() {
        let body = body_of(&["abc", "", "defg", "h"]);
        assert_eq!(body.len(), 8);
        assert_eq!(body.segments().len(), 3, "an empty slice adds no segment");
        assert_eq!(body.to_vec(), b"abcdefgh");
        // Within one segment: borrowed from it.
        assert!(matches!(body.get(3..6), Cow::Borrowed(b"def")));
        assert!(matches!(body.get(7..8), Cow::Borrowed(b"h")));
        // Across segments: copied together; past the end: clamped.
        assert_eq!(&*body.get(2..8), b"cdefgh");
        assert_eq!(&*body.get(6..100), b"gh");
        assert_eq!(&*body.get(8..9), b"");
        assert_eq!(&*body.get(5..5), b"");
        let part = body.slice(1..6);
        assert_eq!(part.to_vec(), b"bcdef");
        assert_eq!(part.segments().len(), 2);
        assert_eq!(
            part.segments()[1].as_ptr(),
            body.segments()[1].as_ptr(),
            "a slice shares its buffers"
        );
        assert!(body.slice(8..20).is_empty());
        assert_eq!(SharedBody::from(Bytes::from_static(b"xy")).to_vec(), b"xy");
    }

    proptest! {
        #[test]
        fn a_shared_body_gives_the_bytes_of_every_range_of_its_joined_segments(
            parts in proptest::collection::vec("[a-z]{0,6}", 0..6),
            start in 0usize..40,
            len in 0usize..40,
        ) {
            let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
            let joined = parts.concat().into_bytes();
            let body = body_of(&parts);
            let end = (start + len).min(joined.len());
            let expected: &[u8] = if start < end { &joined[start..end] } else { &[] };
            prop_assert_eq!(&*body.get(start..start + len), expected);
            prop_assert_eq!(body.slice(start..start + len).to_vec(), expected);
        }
    }
}
