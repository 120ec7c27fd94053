//! The NDJSON bulk body documents travel in: the encoder writes it, reads carry it in their
//! chunks, delivery batches it and the sink sends it as a `_bulk` request. A shared leaf (it
//! imports nothing from the crate), so that every stage from decode to ack can name it without
//! an import pointing up the flow.
use std::ops::Range;

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
