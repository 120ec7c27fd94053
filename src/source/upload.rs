//! Writing block blobs the way Azure writes flow logs: for tests, the quickstart and the demo seeder.
//!
//! Azure appends to `PT1H.json` with Put Block + Put Block List: the blob is a head block
//! `{"records":[`, one block per record (each after the first with a leading `,`) and a tail
//! block `]}` that stays last. Appending records stages the new blocks and commits
//! `[head, old records…, new records…, tail]`, so the blob's bytes grow in the middle, just
//! before the last two bytes. [`BlockBlobWriter`] reproduces exactly that.
//!
//! Block ids are `blk` + 13 decimal digits (16 bytes, 24 base64 characters): all ids of a
//! blob must have the same length, and a running sequence keeps them unique.

use crate::source::client::{StorageClient, StorageError};
use azure_core::http::{RequestContent, StatusCode};
use azure_storage_blob::{
    BlobContainerClient,
    models::{BlockListType, BlockLookupList},
};
use bytes::Bytes;
use std::sync::Arc;

/// Head block of a flow-log blob.
pub const FLOW_LOG_HEAD: &[u8] = br#"{"records":["#;
/// Tail block of a flow-log blob.
pub const FLOW_LOG_TAIL: &[u8] = b"]}";

const ID_PREFIX: &[u8] = b"blk";
const ID_DIGITS: usize = 13;

/// What a commit left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitOutcome {
    /// Committed blocks now in the blob.
    pub block_count: usize,
    /// Blob length in bytes.
    pub length: u64,
}

/// Writes block blobs into one container, through the same client (and credential) as reads.
#[derive(Clone)]
pub struct BlockBlobWriter {
    container: Arc<BlobContainerClient>,
}

impl std::fmt::Debug for BlockBlobWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockBlobWriter")
            .field("container", &self.container.url().path())
            .finish()
    }
}

impl BlockBlobWriter {
    /// A writer for the container of `client`.
    pub fn new(client: &StorageClient) -> Self {
        Self {
            container: client.container_client().clone(),
        }
    }

    fn target(blob: &str) -> String {
        format!("blob {blob:?}")
    }

    /// Creates the container. `Ok(false)` when it already exists.
    pub async fn create_container(&self) -> Result<bool, StorageError> {
        match self.container.create(None).await {
            Ok(_) => Ok(true),
            Err(e) if e.http_status() == Some(StatusCode::Conflict) => Ok(false),
            Err(e) => Err(StorageError::from_azure(
                format!("container {:?}", self.container.url().path()),
                e,
            )),
        }
    }

    /// Deletes a blob. `Ok(false)` when it did not exist.
    pub async fn delete_blob(&self, blob: &str) -> Result<bool, StorageError> {
        match self.container.blob_client(blob).delete(None).await {
            Ok(_) => Ok(true),
            Err(e) if e.http_status() == Some(StatusCode::NotFound) => Ok(false),
            Err(e) => Err(StorageError::from_azure(Self::target(blob), e)),
        }
    }

    /// Writes a whole blob in one Put Blob, replacing any existing one.
    pub async fn put_blob(&self, blob: &str, content: Bytes) -> Result<(), StorageError> {
        self.container
            .blob_client(blob)
            .upload(content.into(), None)
            .await
            .map(|_| ())
            .map_err(|e| StorageError::from_azure(Self::target(blob), e))
    }

    /// Stages `blocks_to_append` and commits the full list: the existing committed blocks
    /// followed by the new ones, in order. Creates the blob when it does not exist.
    pub async fn stage_and_commit(
        &self,
        blob: &str,
        blocks_to_append: &[Bytes],
    ) -> Result<CommitOutcome, StorageError> {
        self.stage_and_commit_before_tail(blob, blocks_to_append, 0)
            .await
    }

    /// Like [`Self::stage_and_commit`], but inserts the new blocks before the last
    /// `tail_blocks` committed blocks, which stay last. With `tail_blocks = 1` this is how
    /// Azure appends records to a `PT1H.json` whose last block is `]}`.
    pub async fn stage_and_commit_before_tail(
        &self,
        blob: &str,
        blocks: &[Bytes],
        tail_blocks: usize,
    ) -> Result<CommitOutcome, StorageError> {
        let client = self.container.blob_client(blob).block_blob_client();
        let committed = match client.get_block_list(BlockListType::Committed, None).await {
            Ok(r) => r
                .into_model()
                .map_err(|e| StorageError::from_azure(Self::target(blob), e))?
                .committed_blocks
                .unwrap_or_default(),
            Err(e) if e.http_status() == Some(StatusCode::NotFound) => Vec::new(),
            Err(e) => return Err(StorageError::from_azure(Self::target(blob), e)),
        };
        let mut ids: Vec<Vec<u8>> = Vec::with_capacity(committed.len() + blocks.len());
        let mut length: u64 = 0;
        let mut next_seq = committed.len() as u64;
        for b in &committed {
            let id = b.name.clone().unwrap_or_default();
            if let Some(seq) = parse_block_id(&id) {
                next_seq = next_seq.max(seq + 1);
            }
            length += u64::try_from(b.size.unwrap_or(0)).unwrap_or(0);
            ids.push(id);
        }
        if tail_blocks > ids.len() {
            return Err(StorageError::Request {
                target: Self::target(blob),
                status: None,
                reason: format!(
                    "cannot keep {tail_blocks} tail block(s): the blob has {} committed",
                    ids.len()
                ),
            });
        }
        let tail = ids.split_off(ids.len() - tail_blocks);
        for (i, block) in blocks.iter().enumerate() {
            let id = block_id(next_seq + i as u64);
            client
                .stage_block(&id, block.len() as u64, block.clone().into(), None)
                .await
                .map_err(|e| StorageError::from_azure(Self::target(blob), e))?;
            length += block.len() as u64;
            ids.push(id);
        }
        ids.extend(tail);
        let block_count = ids.len();
        let list = BlockLookupList {
            latest: Some(ids),
            ..Default::default()
        };
        let content = RequestContent::try_from(list)
            .map_err(|e| StorageError::from_azure(Self::target(blob), e))?;
        client
            .commit_block_list(content, None)
            .await
            .map_err(|e| StorageError::from_azure(Self::target(blob), e))?;
        Ok(CommitOutcome {
            block_count,
            length,
        })
    }

    /// Appends flow-log records (each one JSON object, without separators) to a `PT1H.json`
    /// exactly as Azure does: a new blob becomes `[head, rec, ,rec…, tail]`; an existing one
    /// gets `,rec` blocks inserted before its tail block.
    pub async fn append_flow_log_records(
        &self,
        blob: &str,
        records: &[Bytes],
    ) -> Result<CommitOutcome, StorageError> {
        let existing = self.committed_block_count(blob).await?;
        let mut blocks = Vec::with_capacity(records.len() + 2);
        if existing == 0 {
            blocks.push(Bytes::from_static(FLOW_LOG_HEAD));
        }
        for (i, r) in records.iter().enumerate() {
            // Blocks after the head: the first record has no comma, the rest do.
            if existing == 0 && i == 0 {
                blocks.push(r.clone());
            } else {
                let mut b = Vec::with_capacity(r.len() + 1);
                b.push(b',');
                b.extend_from_slice(r);
                blocks.push(Bytes::from(b));
            }
        }
        if existing == 0 {
            blocks.push(Bytes::from_static(FLOW_LOG_TAIL));
            self.stage_and_commit(blob, &blocks).await
        } else {
            self.stage_and_commit_before_tail(blob, &blocks, 1).await
        }
    }

    async fn committed_block_count(&self, blob: &str) -> Result<usize, StorageError> {
        let client = self.container.blob_client(blob).block_blob_client();
        match client.get_block_list(BlockListType::Committed, None).await {
            Ok(r) => Ok(r
                .into_model()
                .map_err(|e| StorageError::from_azure(Self::target(blob), e))?
                .committed_blocks
                .map_or(0, |b| b.len())),
            Err(e) if e.http_status() == Some(StatusCode::NotFound) => Ok(0),
            Err(e) => Err(StorageError::from_azure(Self::target(blob), e)),
        }
    }
}

/// The raw (pre-base64) id of block number `seq`: `blk0000000000042`.
pub fn block_id(seq: u64) -> Vec<u8> {
    format!("blk{seq:0width$}", width = ID_DIGITS).into_bytes()
}

fn parse_block_id(id: &[u8]) -> Option<u64> {
    let digits = id.strip_prefix(ID_PREFIX)?;
    if digits.len() != ID_DIGITS {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_ids_have_a_fixed_length_and_round_trip() {
        use base64::Engine as _;
        let b64 = |id: &[u8]| base64::engine::general_purpose::STANDARD.encode(id);
        assert_eq!(block_id(0), b"blk0000000000000");
        assert_eq!(
            b64(&block_id(0)).len(),
            b64(&block_id(9_999_999_999_999)).len()
        );
        assert_eq!(parse_block_id(&block_id(42)), Some(42));
        assert_eq!(parse_block_id(b"other"), None);
    }
}
