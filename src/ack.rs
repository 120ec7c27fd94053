//! Acknowledgement and commit: a read chunk's new offset is committed to the registry only when
//! every one of its documents is delivered or dead-lettered, and chunks of one blob commit in
//! the order they were read. A crash at any point leaves the registry behind, never ahead.
//! [`Chunk`], that unit of acknowledgement, is defined here; the reader fills it.
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::bulk_buffer::BulkBuffer;
use crate::registry::{OffsetDelta, Registry, RegistryError};

/// Documents of the records in `(from, to]` of one blob: the unit of acknowledgement, which
/// the reader fills and delivery hands over here.
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

/// Identifies a registered chunk.
pub type ChunkId = u64;

#[derive(Debug)]
struct PendingChunk {
    source: usize,
    blob: Arc<str>,
    from: u64,
    to: u64,
    length_seen: u64,
    etag: Arc<str>,
    last_modified_ms: i64,
    head_len: Option<u32>,
    pending_items: usize,
    newest_time_ms: Option<i64>,
}

/// A commit that reached the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub source: usize,
    pub blob: Arc<str>,
    pub to: u64,
    pub newest_time_ms: Option<i64>,
}

/// What [`AckTracker::acknowledge_all`] committed, and the commits the registry refused
/// (those blobs' pending chunks are dropped: they are read again from the stored offset).
#[derive(Debug, Default)]
pub struct Acknowledged {
    pub committed: Vec<Committed>,
    pub errors: Vec<RegistryError>,
}

/// Tracks chunks between reading and commit.
#[derive(Debug)]
pub struct AckTracker {
    registry: Registry,
    source_names: Vec<String>,
    chunks: HashMap<ChunkId, PendingChunk>,
    /// Per blob, its chunks in read order.
    queues: HashMap<(usize, Arc<str>), VecDeque<ChunkId>>,
    next_id: ChunkId,
}

impl AckTracker {
    pub fn new(registry: Registry, source_names: Vec<String>) -> Self {
        AckTracker {
            registry,
            source_names,
            chunks: HashMap::new(),
            queues: HashMap::new(),
            next_id: 0,
        }
    }

    /// Starts tracking a chunk whose documents are about to be sent. Chunks of one blob must be
    /// registered in read order.
    pub fn register(&mut self, chunk: &Chunk) -> ChunkId {
        let id = self.next_id;
        self.next_id += 1;
        self.chunks.insert(
            id,
            PendingChunk {
                source: chunk.source,
                blob: chunk.blob.clone(),
                from: chunk.from,
                to: chunk.to,
                length_seen: chunk.length_seen,
                etag: chunk.etag.clone(),
                last_modified_ms: chunk.last_modified_ms,
                head_len: chunk.head_len,
                pending_items: chunk.docs.len(),
                newest_time_ms: chunk.newest_time_ms,
            },
        );
        self.queues
            .entry((chunk.source, chunk.blob.clone()))
            .or_default()
            .push_back(id);
        id
    }

    /// Records that `items` documents of chunk `id` are delivered or dead-lettered, then
    /// commits every chunk at the front of its blob's queue that has nothing pending.
    /// A refused commit (the registry moved under us: reset, rewrite) drops the blob's
    /// pending chunks; they will be re-read from the stored offset.
    pub fn acknowledge(
        &mut self,
        id: ChunkId,
        items: usize,
    ) -> Result<Vec<Committed>, RegistryError> {
        let mut outcome = self.acknowledge_all(&[(id, items)]);
        match outcome.errors.pop() {
            Some(e) => Err(e),
            None => Ok(outcome.committed),
        }
    }

    /// [`AckTracker::acknowledge`] for every (chunk, items) of a delivered batch at once:
    /// each blob whose chunks became ready commits them in one registry write (their deltas
    /// chain: each chunk starts where the one before it ended), not one write per chunk.
    pub fn acknowledge_all(&mut self, parts: &[(ChunkId, usize)]) -> Acknowledged {
        let mut blobs: Vec<(usize, Arc<str>)> = Vec::new();
        for (id, items) in parts {
            if let Some(chunk) = self.chunks.get_mut(id) {
                chunk.pending_items = chunk.pending_items.saturating_sub(*items);
                let key = (chunk.source, chunk.blob.clone());
                if !blobs.contains(&key) {
                    blobs.push(key);
                }
            }
        }
        let mut outcome = Acknowledged::default();
        for key in blobs {
            match self.commit_ready(key) {
                Ok(committed) => outcome.committed.extend(committed),
                Err(e) => outcome.errors.push(e),
            }
        }
        outcome
    }

    /// Commits the ready chunks at the front of a blob's queue, each run of them that chains
    /// as one advance.
    fn commit_ready(&mut self, key: (usize, Arc<str>)) -> Result<Vec<Committed>, RegistryError> {
        let mut committed = Vec::new();
        loop {
            let run = self.take_ready_run(&key);
            let (Some(first), Some(last)) = (run.first(), run.last()) else {
                break;
            };
            let delta = OffsetDelta {
                from: first.from,
                to: last.to,
                length_seen: last.length_seen,
                etag: &last.etag,
                last_modified: last.last_modified_ms,
                head_len: run.iter().rev().find_map(|c| c.head_len),
            };
            let source_name = &self.source_names[last.source];
            if let Err(e) = self.registry.advance(source_name, &last.blob, &delta) {
                self.drop_blob(&key);
                return Err(e);
            }
            committed.extend(run.into_iter().map(|chunk| Committed {
                source: chunk.source,
                blob: chunk.blob,
                to: chunk.to,
                newest_time_ms: chunk.newest_time_ms,
            }));
        }
        Ok(committed)
    }

    /// Takes the chunks at the front of a blob's queue that have nothing pending, as long as
    /// each starts where the one before it ended (then one advance covers them all).
    fn take_ready_run(&mut self, key: &(usize, Arc<str>)) -> Vec<PendingChunk> {
        let mut run: Vec<PendingChunk> = Vec::new();
        let Some(queue) = self.queues.get_mut(key) else {
            return run;
        };
        while let Some(&front) = queue.front() {
            let Some(chunk) = self.chunks.get(&front) else {
                queue.pop_front();
                continue;
            };
            let chains = run.last().is_none_or(|last| last.to == chunk.from);
            if chunk.pending_items != 0 || !chains {
                break;
            }
            queue.pop_front();
            run.extend(self.chunks.remove(&front));
        }
        if queue.is_empty() {
            self.queues.remove(key);
        }
        run
    }

    fn drop_blob(&mut self, key: &(usize, Arc<str>)) {
        if let Some(queue) = self.queues.remove(key) {
            for id in queue {
                self.chunks.remove(&id);
            }
        }
    }

    /// Gives up on chunks whose delivery failed for good (its task died): their blobs' pending
    /// chunks are all dropped, so the blobs are planned again from their committed offsets.
    /// Returns the blobs released.
    pub fn abandon(&mut self, ids: &[ChunkId]) -> Vec<Arc<str>> {
        let mut released = Vec::new();
        for id in ids {
            if let Some(chunk) = self.chunks.get(id) {
                let key = (chunk.source, chunk.blob.clone());
                self.drop_blob(&key);
                released.push(key.1);
            }
        }
        released
    }

    /// Whether a blob still has chunks waiting: it must not be read again until they commit.
    pub fn has_pending(&self, source: usize, blob: &str) -> bool {
        self.queues.contains_key(&(source, Arc::from(blob)))
    }

    /// Chunks not committed yet.
    pub fn pending_chunks(&self) -> usize {
        self.chunks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bulk_buffer::BulkItem;

    fn chunk(
        blob: &str,
        seq: u32,
        from: u64,
        to: u64,
        items: usize,
        last: bool,
        length: u64,
    ) -> Chunk {
        let mut docs = BulkBuffer::new();
        for i in 0..items {
            docs.items.push(BulkItem {
                action_start: 0,
                doc_start: 0,
                end: 1,
                record_offset: from,
                tuple_index: i as u32,
            });
        }
        Chunk {
            source: 0,
            blob: Arc::from(blob),
            seq,
            from,
            to,
            last,
            length_seen: if last { length } else { to },
            etag: Arc::from("e1"),
            last_modified_ms: 5,
            head_len: (from == 0).then_some(12),
            docs,
            newest_time_ms: Some(1000 + u64::from(seq) as i64),
        }
    }

    fn offset(registry: &Registry, blob: &str) -> Option<u64> {
        registry.get("src", blob).unwrap().map(|e| e.offset)
    }

    #[test]
    fn offset_never_passes_an_unacknowledged_chunk() {
        let registry = Registry::temporary().unwrap();
        let mut acks = AckTracker::new(registry.clone(), vec!["src".into()]);
        let a = acks.register(&chunk("b", 0, 0, 100, 3, false, 300));
        let b = acks.register(&chunk("b", 1, 100, 200, 2, false, 300));
        let c = acks.register(&chunk("b", 2, 200, 298, 0, true, 300));
        // The later chunks finish first: nothing may commit.
        assert!(acks.acknowledge(b, 2).unwrap().is_empty());
        assert!(acks.acknowledge(c, 0).unwrap().is_empty());
        assert_eq!(offset(&registry, "b"), None);
        // Part of the first chunk: still nothing.
        assert!(acks.acknowledge(a, 2).unwrap().is_empty());
        assert_eq!(offset(&registry, "b"), None);
        assert!(acks.has_pending(0, "b"));
        // The rest of the first: all three commit, in order.
        let committed = acks.acknowledge(a, 1).unwrap();
        assert_eq!(
            committed.iter().map(|c| c.to).collect::<Vec<_>>(),
            vec![100, 200, 298]
        );
        let entry = registry.get("src", "b").unwrap().unwrap();
        assert_eq!(
            (entry.offset, entry.length_seen, entry.head_len),
            (298, 300, Some(12))
        );
        assert!(!acks.has_pending(0, "b"));
        assert_eq!(acks.pending_chunks(), 0);
    }

    #[test]
    fn blobs_commit_independently() {
        let registry = Registry::temporary().unwrap();
        let mut acks = AckTracker::new(registry.clone(), vec!["src".into()]);
        let a = acks.register(&chunk("a", 0, 0, 50, 1, true, 52));
        let b = acks.register(&chunk("b", 0, 0, 70, 1, true, 72));
        acks.acknowledge(b, 1).unwrap();
        assert_eq!(offset(&registry, "b"), Some(70));
        assert_eq!(offset(&registry, "a"), None);
        acks.acknowledge(a, 1).unwrap();
        assert_eq!(offset(&registry, "a"), Some(50));
    }

    #[test]
    fn a_refused_commit_drops_the_blob_so_it_is_re_read() {
        let registry = Registry::temporary().unwrap();
        let mut acks = AckTracker::new(registry.clone(), vec!["src".into()]);
        // A chunk that does not chain onto the stored offset (0) must be refused.
        let a = acks.register(&chunk("b", 0, 100, 200, 1, false, 300));
        let _b = acks.register(&chunk("b", 1, 200, 298, 1, true, 300));
        assert!(matches!(
            acks.acknowledge(a, 1),
            Err(RegistryError::OffsetMismatch { .. })
        ));
        assert_eq!(offset(&registry, "b"), None);
        assert!(!acks.has_pending(0, "b"));
    }

    #[test]
    fn chunks_of_a_dead_delivery_are_abandoned_so_their_blob_is_read_again() {
        let registry = Registry::temporary().unwrap();
        let mut acks = AckTracker::new(registry.clone(), vec!["src".into()]);
        let a = acks.register(&chunk("b", 0, 0, 100, 3, false, 300));
        let b = acks.register(&chunk("b", 1, 100, 200, 2, false, 300));
        let other = acks.register(&chunk("c", 0, 0, 50, 1, true, 52));
        assert_eq!(acks.abandon(&[a]), vec![Arc::<str>::from("b")]);
        assert!(
            !acks.has_pending(0, "b"),
            "the blob is free to be planned again"
        );
        assert!(acks.has_pending(0, "c"), "other blobs are untouched");
        // A late acknowledgement of an abandoned chunk commits nothing.
        assert!(acks.acknowledge(b, 2).unwrap().is_empty());
        assert_eq!(offset(&registry, "b"), None);
        acks.acknowledge(other, 1).unwrap();
        assert_eq!(offset(&registry, "c"), Some(50));
    }

    #[test]
    fn chunks_acknowledged_together_commit_as_one_advance_ending_where_the_last_one_ends() {
        let registry = Registry::temporary().unwrap();
        let mut acks = AckTracker::new(registry.clone(), vec!["src".into()]);
        let a = acks.register(&chunk("b", 0, 0, 100, 3, false, 300));
        let b = acks.register(&chunk("b", 1, 100, 200, 2, false, 300));
        let c = acks.register(&chunk("b", 2, 200, 298, 1, true, 300));
        let other = acks.register(&chunk("o", 0, 0, 40, 1, false, 40));
        // c's documents came in this batch, but not all of b's: a and the others' commit only.
        let done = acks.acknowledge_all(&[(a, 3), (b, 1), (c, 1), (other, 1)]);
        assert!(done.errors.is_empty());
        let tos: Vec<(String, u64)> = done
            .committed
            .iter()
            .map(|c| (c.blob.to_string(), c.to))
            .collect();
        assert_eq!(tos, [("b".to_owned(), 100), ("o".to_owned(), 40)]);
        assert_eq!(offset(&registry, "b"), Some(100));
        // The rest of b: b and c in one advance, whose entry is what two would have left.
        let done = acks.acknowledge_all(&[(b, 1)]);
        assert_eq!(
            done.committed.iter().map(|c| c.to).collect::<Vec<_>>(),
            [200, 298]
        );
        let entry = registry.get("src", "b").unwrap().unwrap();
        assert_eq!(
            (
                entry.offset,
                entry.length_seen,
                entry.head_len,
                entry.etag.as_str()
            ),
            (298, 300, Some(12), "e1")
        );
        assert_eq!(acks.pending_chunks(), 0);
        assert!(!acks.has_pending(0, "b"));
    }

    #[test]
    fn a_batch_whose_commit_is_refused_for_one_blob_still_commits_the_others() {
        let registry = Registry::temporary().unwrap();
        let mut acks = AckTracker::new(registry.clone(), vec!["src".into()]);
        // Does not chain onto the stored offset (none: 0).
        let bad = acks.register(&chunk("bad", 0, 100, 200, 1, false, 300));
        let good = acks.register(&chunk("good", 0, 0, 50, 1, true, 52));
        let done = acks.acknowledge_all(&[(bad, 1), (good, 1)]);
        assert!(matches!(
            done.errors.as_slice(),
            [RegistryError::OffsetMismatch { .. }]
        ));
        assert_eq!(offset(&registry, "good"), Some(50));
        assert_eq!(offset(&registry, "bad"), None);
        assert!(
            !acks.has_pending(0, "bad"),
            "re-read from the stored offset"
        );
    }
}
