//! Sled-backed registry of per-blob read offsets: what has been consumed, so a
//! restart reads only new bytes and never skips unacknowledged ones.
//!
//! The public API names no sled type, so the store can be replaced without touching
//! callers. Keys are `(source, blob)` pairs in an order-preserving encoding
//! ([`key`] docs); values are [`BlobEntry`] in a versioned, hand-written binary
//! layout ([`entry`] docs), never a serde format whose bytes could shift with a
//! dependency upgrade.
//!
//! Offsets only move through [`Registry::advance`], a checked delta in the manner
//! of quickwit's checkpoint: `(from, to]` must start exactly at the stored offset,
//! and the check-and-write is one sled compare-and-swap, so a stale, duplicated or
//! out-of-order acknowledgement is refused instead of moving the offset past bytes
//! whose tuples were not delivered (invariant 1). Unlike quickwit's source
//! checkpoint, which tolerates gaps, a gap is refused too: a blob has no retention
//! hole that could explain one.
//!
//! The API is synchronous. Reads and writes touch memory and take microseconds;
//! only [`Registry::flush`] waits for the disk, so async callers should use
//! [`Registry::flush_async`] or `spawn_blocking` for it.

pub mod entry;
pub mod key;

use std::fmt;
use std::path::{Path, PathBuf};

pub use entry::{BlobEntry, BlobState, Change, DecodeError, EncodeError};
pub use key::KeyError;

/// Sled tree holding the entries. The key layout version is part of the name: a new
/// key layout gets a new tree and a migration, and old data is never misread.
const TREE_NAME: &[u8] = b"blobs.v1";

/// Sled tree holding per-source state (see [`SourceState`]), keyed by source name.
const SOURCES_TREE_NAME: &[u8] = b"sources.v1";

/// Upper bound of sled's page cache. Sled's default is 1 GiB; the registry holds
/// one small entry per blob, and memory must be bounded by configuration, not by
/// history (invariant 6).
const CACHE_CAPACITY_BYTES: u64 = 64 * 1024 * 1024;

/// Persistent per-blob progress. Cheap to clone: clones share one open store, so
/// the poller and the acknowledger can each hold one.
#[derive(Clone)]
pub struct Registry {
    /// Kept so that flushes cover the whole database and the store lives as long as
    /// any clone.
    db: sled::Db,
    tree: sled::Tree,
    sources: sled::Tree,
    path: PathBuf,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// A checked offset move for [`Registry::advance`]: the interval `(from, to]` of a
/// blob that is now fully delivered, plus what was learned about the blob while
/// reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetDelta<'a> {
    /// Offset the chunk started at; must equal the stored offset.
    pub from: u64,
    /// End of the last complete record of the chunk; `to == from` is allowed (a
    /// read that found only a partial record still refreshes length and etag).
    pub to: u64,
    /// Blob length the chunk was read against; `to` may not exceed it.
    pub length_seen: u64,
    /// Etag the chunk was read against.
    pub etag: &'a str,
    /// Last-modified (Unix ms) the chunk was read against.
    pub last_modified: i64,
    /// Envelope head length, when this read started at 0 and learned it; `None`
    /// keeps the stored value.
    pub head_len: Option<u32>,
}

impl Registry {
    /// Opens (creating if needed) the registry stored in directory `path`.
    ///
    /// Sled locks the directory for the life of the process; a second flowlogd on
    /// the same registry would double-ship and race on offsets, so that case gets
    /// its own error, [`RegistryError::Locked`].
    pub fn open(path: &Path) -> Result<Registry, RegistryError> {
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_CAPACITY_BYTES);
        let db = config.open().map_err(|error| {
            if is_lock_error(&error) {
                RegistryError::Locked {
                    path: path.to_owned(),
                    error: StorageError(error),
                }
            } else {
                RegistryError::Open {
                    path: path.to_owned(),
                    error: StorageError(error),
                }
            }
        })?;
        Self::from_db(db, path.to_owned())
    }

    /// An in-memory-backed registry deleted on drop, for tests and `flowlogd once`
    /// style dry runs.
    pub fn temporary() -> Result<Registry, RegistryError> {
        let path = PathBuf::from("<temporary>");
        let db = sled::Config::new()
            .temporary(true)
            .cache_capacity(CACHE_CAPACITY_BYTES)
            .open()
            .map_err(|error| RegistryError::Open {
                path: path.clone(),
                error: StorageError(error),
            })?;
        Self::from_db(db, path)
    }

    fn from_db(db: sled::Db, path: PathBuf) -> Result<Registry, RegistryError> {
        let tree = db
            .open_tree(TREE_NAME)
            .map_err(|error| RegistryError::Open {
                path: path.clone(),
                error: StorageError(error),
            })?;
        let sources = db
            .open_tree(SOURCES_TREE_NAME)
            .map_err(|error| RegistryError::Open {
                path: path.clone(),
                error: StorageError(error),
            })?;
        Ok(Registry {
            db,
            tree,
            sources,
            path,
        })
    }

    /// Directory the registry lives in (`<temporary>` for [`Registry::temporary`]),
    /// for logs and CLI output.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The entry of one blob, `None` if the registry has never recorded it.
    pub fn get(&self, source: &str, blob: &str) -> Result<Option<BlobEntry>, RegistryError> {
        match self.tree.get(key::encode(source, blob))? {
            None => Ok(None),
            Some(bytes) => decode_entry(source, blob, &bytes).map(Some),
        }
    }

    /// Stores an entry unconditionally, replacing whatever was there (including a
    /// corrupt value). For first sight of a blob, start policies and the
    /// rewritten-blob restart; use [`Registry::update`] when an acknowledger may be
    /// advancing the same blob concurrently.
    pub fn put(&self, source: &str, blob: &str, entry: &BlobEntry) -> Result<(), RegistryError> {
        let bytes = encode_entry(source, blob, entry)?;
        self.tree.insert(key::encode(source, blob), bytes)?;
        Ok(())
    }

    /// Deletes one blob's entry; returns whether there was one.
    pub fn remove(&self, source: &str, blob: &str) -> Result<bool, RegistryError> {
        Ok(self.tree.remove(key::encode(source, blob))?.is_some())
    }

    /// Atomic read-modify-write of one entry, safe against concurrent writers.
    ///
    /// `f` sees the current entry (`None` if absent) and returns the entry to store,
    /// or `None` to leave the stored value as it is. If another writer changes the
    /// entry between the read and the write, `f` runs again on the new value, so it
    /// must not have side effects. Returns the entry stored afterwards.
    pub fn update<F>(
        &self,
        source: &str,
        blob: &str,
        mut f: F,
    ) -> Result<Option<BlobEntry>, RegistryError>
    where
        F: FnMut(Option<&BlobEntry>) -> Option<BlobEntry>,
    {
        self.try_update(source, blob, |current| Ok(f(current)))
    }

    /// [`Registry::update`] whose closure can refuse the change with an error; the
    /// compare-and-swap loop under every conditional write.
    fn try_update<F>(
        &self,
        source: &str,
        blob: &str,
        mut f: F,
    ) -> Result<Option<BlobEntry>, RegistryError>
    where
        F: FnMut(Option<&BlobEntry>) -> Result<Option<BlobEntry>, RegistryError>,
    {
        let key = key::encode(source, blob);
        loop {
            let current_bytes = self.tree.get(&key)?;
            let current = match &current_bytes {
                None => None,
                Some(bytes) => Some(decode_entry(source, blob, bytes)?),
            };
            let Some(new) = f(current.as_ref())? else {
                return Ok(current);
            };
            let new_bytes = encode_entry(source, blob, &new)?;
            // A conflict means another writer got in between: re-read and re-check,
            // so the closure's decision is always made on the value it replaces.
            if self
                .tree
                .compare_and_swap(&key, current_bytes.as_ref(), Some(new_bytes))?
                .is_ok()
            {
                return Ok(Some(new));
            }
        }
    }

    /// Moves a blob's offset from `delta.from` to `delta.to` if and only if the
    /// stored offset is exactly `delta.from`, and records what the read saw.
    ///
    /// A blob without an entry counts as offset 0 (like a partition missing from a
    /// quickwit checkpoint): `resume` reads new blobs from 0 without a prior write,
    /// and the first acknowledgement creates the entry as [`BlobState::Active`].
    /// The state of an existing entry is left alone.
    ///
    /// Errors: [`RegistryError::InvalidDelta`] when `to < from` or
    /// `to > length_seen`; [`RegistryError::OffsetMismatch`] when the delta does
    /// not chain onto the stored offset (a gap, an overlap, a replay). Nothing is
    /// written on error.
    pub fn advance(
        &self,
        source: &str,
        blob: &str,
        delta: &OffsetDelta<'_>,
    ) -> Result<BlobEntry, RegistryError> {
        if delta.to < delta.from || delta.to > delta.length_seen {
            return Err(RegistryError::InvalidDelta {
                source: source.to_owned(),
                blob: blob.to_owned(),
                from: delta.from,
                to: delta.to,
                length_seen: delta.length_seen,
            });
        }
        let now = now_ms();
        let stored = self.try_update(source, blob, |current| {
            let stored = current.map_or(0, |entry| entry.offset);
            if stored != delta.from {
                return Err(RegistryError::OffsetMismatch {
                    source: source.to_owned(),
                    blob: blob.to_owned(),
                    stored,
                    from: delta.from,
                });
            }
            let mut next = current
                .cloned()
                .unwrap_or_else(|| BlobEntry::new(0, 0, "", 0, now));
            next.offset = delta.to;
            next.length_seen = delta.length_seen;
            delta.etag.clone_into(&mut next.etag);
            next.last_modified = delta.last_modified;
            next.head_len = delta.head_len.or(next.head_len);
            next.updated_at = now;
            Ok(Some(next))
        })?;
        // try_update returns what it wrote whenever the closure asked for a write.
        stored.ok_or_else(|| RegistryError::OffsetMismatch {
            source: source.to_owned(),
            blob: blob.to_owned(),
            stored: 0,
            from: delta.from,
        })
    }

    /// Marks a blob [`BlobState::Finished`]: its hour is over and it was read to the
    /// tail, so the walker can stop listing its partition. Returns the entry, or
    /// `None` when there is none (nothing is created).
    pub fn mark_finished(
        &self,
        source: &str,
        blob: &str,
    ) -> Result<Option<BlobEntry>, RegistryError> {
        self.set_state(source, blob, BlobState::Finished, now_ms())
    }

    /// Marks a blob [`BlobState::Active`] again, e.g. a finished blob that grew
    /// after all or a gone blob that is listed again. Returns the entry, or `None`
    /// when there is none.
    pub fn mark_active(
        &self,
        source: &str,
        blob: &str,
    ) -> Result<Option<BlobEntry>, RegistryError> {
        self.set_state(source, blob, BlobState::Active, now_ms())
    }

    /// Marks a blob [`BlobState::Gone`] (no longer listed) at time `now` (Unix ms),
    /// which starts its retention grace period. Marking an already gone blob keeps
    /// the original time, so repeated polls do not postpone forgetting it forever.
    /// Returns the entry, or `None` when there is none.
    pub fn mark_gone(
        &self,
        source: &str,
        blob: &str,
        now: i64,
    ) -> Result<Option<BlobEntry>, RegistryError> {
        self.set_state(source, blob, BlobState::Gone, now)
    }

    /// Sets `state` and `updated_at`, leaving an entry already in `state` untouched.
    fn set_state(
        &self,
        source: &str,
        blob: &str,
        state: BlobState,
        now: i64,
    ) -> Result<Option<BlobEntry>, RegistryError> {
        self.try_update(source, blob, |current| {
            Ok(current
                .filter(|entry| entry.state != state)
                .map(|entry| BlobEntry {
                    state,
                    updated_at: now,
                    ..entry.clone()
                }))
        })
    }

    /// Deletes the entries of `source` that have been [`BlobState::Gone`] since
    /// before `cutoff` (Unix ms): retention deleted the blob and the grace period
    /// is over. An entry changed concurrently is kept. Corrupt entries are skipped
    /// with a warning (see [`Registry::reset`] to remove them). Returns how many
    /// entries were deleted.
    pub fn forget_gone_older_than(
        &self,
        source: &str,
        cutoff: i64,
    ) -> Result<usize, RegistryError> {
        let mut forgotten = 0;
        for item in self.tree.scan_prefix(key::source_prefix(source)) {
            let (key_bytes, value) = item?;
            let entry = match BlobEntry::decode(&value) {
                Ok(entry) => entry,
                Err(error) => {
                    tracing::warn!(
                        source,
                        key = %String::from_utf8_lossy(&key_bytes).escape_debug(),
                        error = %error,
                        "skipping corrupt registry entry while forgetting gone blobs; `flowlogd registry reset` removes it"
                    );
                    continue;
                }
            };
            if entry.state == BlobState::Gone && entry.updated_at < cutoff {
                let removed = self
                    .tree
                    .compare_and_swap(&key_bytes, Some(&value), None::<&[u8]>)?
                    .is_ok();
                if removed {
                    forgotten += 1;
                }
            }
        }
        Ok(forgotten)
    }

    /// Deletes entries so their blobs are read again from their start policy: all of
    /// them, those of one source, or those whose blob name starts with `blob_prefix`
    /// (in one source, or in every source when `source` is `None`). A full blob
    /// name is a prefix of itself, so `--blob NAME` resets that blob. Corrupt
    /// entries are deleted too when they match. The deletion is one atomic batch.
    /// Returns how many entries were deleted. Backs `flowlogd registry reset`.
    pub fn reset(
        &self,
        source: Option<&str>,
        blob_prefix: Option<&str>,
    ) -> Result<usize, RegistryError> {
        let mut batch = sled::Batch::default();
        let mut count = 0;
        match source {
            Some(source) => {
                let prefix = key::encode(source, blob_prefix.unwrap_or(""));
                for item in self.tree.scan_prefix(prefix) {
                    let (key_bytes, _) = item?;
                    batch.remove(key_bytes);
                    count += 1;
                }
            }
            None => {
                for item in self.tree.iter() {
                    let (key_bytes, _) = item?;
                    let matches = match blob_prefix {
                        None => true,
                        // A key that does not decode has no blob name to match.
                        Some(prefix) => {
                            key::decode(&key_bytes).is_ok_and(|(_, blob)| blob.starts_with(prefix))
                        }
                    };
                    if matches {
                        batch.remove(key_bytes);
                        count += 1;
                    }
                }
            }
        }
        self.tree.apply_batch(batch)?;
        Ok(count)
    }

    /// Entries of one source, or of all sources, ordered by source then blob name.
    ///
    /// Lazily read: the registry can hold many thousands of blobs. A corrupt key or
    /// value is yielded as an error item and iteration goes on, so `registry list`
    /// can show everything else and point at what to reset.
    pub fn list(&self, source: Option<&str>) -> Entries {
        let inner = match source {
            Some(source) => self.tree.scan_prefix(key::source_prefix(source)),
            None => self.tree.iter(),
        };
        Entries { inner }
    }

    /// Blobs of `source` in state [`BlobState::Active`] or [`BlobState::Rewritten`] (not
    /// done with either), ordered by name: the walker keeps listing the hour partitions these
    /// live in. Corrupt entries are skipped
    /// with a warning rather than stopping every poll.
    pub fn active_blobs(&self, source: &str) -> Result<Vec<(String, BlobEntry)>, RegistryError> {
        let mut active = Vec::new();
        for item in self.list(Some(source)) {
            match item {
                Ok((_, blob, entry))
                    if matches!(entry.state, BlobState::Active | BlobState::Rewritten) =>
                {
                    active.push((blob, entry))
                }
                Ok(_) => {}
                Err(error @ RegistryError::Storage(_)) => return Err(error),
                Err(error) => tracing::warn!(
                    source,
                    error = %error,
                    "skipping corrupt registry entry when listing active blobs; `flowlogd registry reset` removes it"
                ),
            }
        }
        Ok(active)
    }

    /// What the walker remembers about a source between polls and restarts.
    pub fn source_state(&self, source: &str) -> Result<Option<SourceState>, RegistryError> {
        match self.sources.get(source.as_bytes())? {
            None => Ok(None),
            Some(bytes) => {
                SourceState::decode(&bytes)
                    .map(Some)
                    .map_err(|error| RegistryError::CorruptEntry {
                        source: source.to_owned(),
                        blob: "(source state)".to_owned(),
                        error,
                    })
            }
        }
    }

    /// Stores a source's state (flushed with the next [`Registry::flush`]).
    pub fn put_source_state(&self, source: &str, state: &SourceState) -> Result<(), RegistryError> {
        self.sources
            .insert(source.as_bytes(), state.encode().to_vec())?;
        Ok(())
    }

    /// Forgets a source's state (with `reset`, so the next run starts as a first run).
    pub fn remove_source_state(&self, source: &str) -> Result<(), RegistryError> {
        self.sources.remove(source.as_bytes())?;
        Ok(())
    }

    /// Number of entries, for metrics and the CLI. Walks the whole store (sled keeps
    /// no count), so do not call it per poll.
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// True when no blob has an entry, e.g. to tell a first run from a resume.
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// Writes every change made so far to disk and fsyncs, so it survives a crash.
    /// Called after offsets are committed and on shutdown. Blocks on the disk;
    /// returns the number of bytes written.
    pub fn flush(&self) -> Result<usize, RegistryError> {
        Ok(self.db.flush()?)
    }

    /// [`Registry::flush`] for async callers: the fsync runs on sled's own thread
    /// pool, so it does not block a runtime worker.
    pub async fn flush_async(&self) -> Result<usize, RegistryError> {
        Ok(self.db.flush_async().await?)
    }
}

/// Iterator returned by [`Registry::list`], yielding `(source, blob, entry)`.
pub struct Entries {
    inner: sled::Iter,
}

impl Iterator for Entries {
    type Item = Result<(String, String, BlobEntry), RegistryError>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.inner.next()?;
        Some(
            item.map_err(RegistryError::from)
                .and_then(|(key_bytes, value)| {
                    let (source, blob) =
                        key::decode(&key_bytes).map_err(|error| RegistryError::CorruptKey {
                            key: key_bytes.to_vec(),
                            error,
                        })?;
                    let entry = decode_entry(&source, &blob, &value)?;
                    Ok((source, blob, entry))
                }),
        )
    }
}

fn decode_entry(source: &str, blob: &str, bytes: &[u8]) -> Result<BlobEntry, RegistryError> {
    BlobEntry::decode(bytes).map_err(|error| RegistryError::CorruptEntry {
        source: source.to_owned(),
        blob: blob.to_owned(),
        error,
    })
}

fn encode_entry(source: &str, blob: &str, entry: &BlobEntry) -> Result<Vec<u8>, RegistryError> {
    entry.encode().map_err(|error| RegistryError::Encode {
        source: source.to_owned(),
        blob: blob.to_owned(),
        error,
    })
}

/// Sled 0.34.7 reports a held directory lock as an `Io` error of kind `Other`
/// whose message starts "could not acquire lock on" (`Config::try_lock`); the
/// `WouldBlock` kind is checked too in case a later release passes the OS error on.
fn is_lock_error(error: &sled::Error) -> bool {
    match error {
        sled::Error::Io(io) => {
            io.kind() == std::io::ErrorKind::WouldBlock
                || io.to_string().contains("could not acquire lock")
        }
        _ => false,
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A failure of the underlying store (I/O, corruption detected by sled). Opaque so
/// the store's own error type does not leak into callers.
#[derive(Debug)]
pub struct StorageError(sled::Error);

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Everything that can go wrong in the registry.
///
/// `Display` and `Error` are written by hand rather than derived with `thiserror`
/// because several variants carry the source *name* in a field called `source`,
/// which `thiserror` would take for the underlying error.
#[derive(Debug)]
pub enum RegistryError {
    /// Another process holds the registry directory: most likely another flowlogd
    /// with the same `registry_path`.
    Locked {
        /// The registry directory.
        path: PathBuf,
        /// What the store reported.
        error: StorageError,
    },
    /// The registry could not be opened or created (permissions, disk, corruption).
    Open {
        /// The registry directory.
        path: PathBuf,
        /// What the store reported.
        error: StorageError,
    },
    /// A read or write failed.
    Storage(StorageError),
    /// A stored value does not decode.
    CorruptEntry {
        /// Source name of the entry.
        source: String,
        /// Blob name of the entry.
        blob: String,
        /// Why it does not decode.
        error: DecodeError,
    },
    /// A stored key is not a (source, blob) key.
    CorruptKey {
        /// The raw key.
        key: Vec<u8>,
        /// Why it does not decode.
        error: KeyError,
    },
    /// An entry could not be encoded.
    Encode {
        /// Source name of the entry.
        source: String,
        /// Blob name of the entry.
        blob: String,
        /// Why it could not be encoded.
        error: EncodeError,
    },
    /// A checked advance did not chain onto the stored offset: a gap (`from >
    /// stored`), an overlap or a replay (`from < stored`). The offset is unchanged.
    OffsetMismatch {
        /// Source name.
        source: String,
        /// Blob name.
        blob: String,
        /// Offset in the registry (0 when there is no entry).
        stored: u64,
        /// Offset the refused delta started at.
        from: u64,
    },
    /// A delta that moves backwards or past the blob length it was read against.
    InvalidDelta {
        /// Source name.
        source: String,
        /// Blob name.
        blob: String,
        /// Start of the delta.
        from: u64,
        /// End of the delta.
        to: u64,
        /// Blob length the delta claims.
        length_seen: u64,
    },
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryError::Locked { path, error } => write!(
                f,
                "registry {} is locked by another process (is another flowlogd running with the same registry?): {error}",
                path.display()
            ),
            RegistryError::Open { path, error } => {
                write!(f, "cannot open registry {}: {error}", path.display())
            }
            RegistryError::Storage(error) => write!(f, "registry storage error: {error}"),
            RegistryError::CorruptEntry {
                source,
                blob,
                error,
            } => write!(
                f,
                "registry entry for blob {blob:?} of source {source:?} is corrupt: {error}"
            ),
            RegistryError::CorruptKey { key, error } => write!(
                f,
                "registry key \"{}\" is corrupt: {error}",
                String::from_utf8_lossy(key).escape_debug()
            ),
            RegistryError::Encode {
                source,
                blob,
                error,
            } => write!(
                f,
                "cannot store registry entry for blob {blob:?} of source {source:?}: {error}"
            ),
            RegistryError::OffsetMismatch {
                source,
                blob,
                stored,
                from,
            } => write!(
                f,
                "refused to advance blob {blob:?} of source {source:?}: delta starts at offset {from} but the registry holds {stored}"
            ),
            RegistryError::InvalidDelta {
                source,
                blob,
                from,
                to,
                length_seen,
            } => write!(
                f,
                "refused to advance blob {blob:?} of source {source:?}: delta ({from}, {to}] does not fit a blob of {length_seen} bytes"
            ),
        }
    }
}

impl std::error::Error for RegistryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RegistryError::Locked { error, .. }
            | RegistryError::Open { error, .. }
            | RegistryError::Storage(error) => Some(error),
            RegistryError::CorruptEntry { error, .. } => Some(error),
            RegistryError::CorruptKey { error, .. } => Some(error),
            RegistryError::Encode { error, .. } => Some(error),
            RegistryError::OffsetMismatch { .. } | RegistryError::InvalidDelta { .. } => None,
        }
    }
}

impl From<sled::Error> for RegistryError {
    fn from(error: sled::Error) -> Self {
        RegistryError::Storage(StorageError(error))
    }
}

#[cfg(test)]
mod tests;

/// Per-source progress of the walker, so a restart after downtime lists the hours it missed
/// (instead of only the current ones) and a first run can be told from a resume.
///
/// Layout (version 1, big-endian): `[1u8][last_listed_hour: i64]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceState {
    /// The newest hour (epoch hours) whose partitions were listed by a completed poll.
    pub last_listed_hour: i64,
}

impl SourceState {
    const VERSION: u8 = 1;

    fn encode(&self) -> [u8; 9] {
        let mut out = [0u8; 9];
        out[0] = Self::VERSION;
        out[1..].copy_from_slice(&self.last_listed_hour.to_be_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Result<SourceState, DecodeError> {
        match bytes {
            [Self::VERSION, rest @ ..] if rest.len() == 8 => {
                let mut hour = [0u8; 8];
                hour.copy_from_slice(rest);
                Ok(SourceState {
                    last_listed_hour: i64::from_be_bytes(hour),
                })
            }
            [version, ..] if *version != Self::VERSION => {
                Err(DecodeError::UnknownVersion(*version))
            }
            [] => Err(DecodeError::Truncated {
                field: "version",
                at: 0,
                needed: 1,
                available: 0,
            }),
            [_, rest @ ..] if rest.len() > 8 => Err(DecodeError::TrailingBytes(rest.len() - 8)),
            [_, rest @ ..] => Err(DecodeError::Truncated {
                field: "last_listed_hour",
                at: 1,
                needed: 8,
                available: rest.len(),
            }),
        }
    }
}
