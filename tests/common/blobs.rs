//! Flow-log blobs in Azurite for source tests: clients with their own counters, blobs grown
//! exactly as Azure grows them, a registry-driven incremental follower built from the library's
//! reader (what the daemon's poller does, minus Elasticsearch), and a runner for the real
//! `flowlogd once` against Azurite and a search engine (`super::flowlogd::Es`) with a generated
//! config.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
};

use bytes::Bytes;
use figment::{
    Figment,
    providers::{Format as _, Toml},
};
use flowlogd::config::storage::StorageConfig;
use flowlogd::{
    ack::Chunk,
    bulk_buffer::BulkBuffer,
    config::document::Schema,
    encode::document::{BlobContext, DocumentEncoder},
    generator::{GenKind, GenOptions, GeneratedBlob, generate},
    index_pattern::IndexPattern,
    metrics::StorageStats,
    pipeline::{BlobDecoder, DecodeProblem},
    registry::{Change, OffsetDelta, Registry},
    source::{
        client::StorageClient,
        listing::BlobItem,
        reader::{ReadLimits, ReadOutcome, ReadTask, read_blob},
        upload::BlockBlobWriter,
    },
};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::{flowlogd::Es, servers::Azurite};

/// Seconds in an hour.
pub const HOUR: i64 = 3600;

/// Start of the current UTC hour, epoch seconds.
pub fn this_hour() -> i64 {
    let now = chrono::Utc::now().timestamp();
    now - now.rem_euclid(HOUR)
}

/// A client of `container` on `azurite` (account key) with its own, fresh counters.
pub fn client(azurite: &Azurite, container: &str) -> StorageClient {
    let toml = format!(
        r#"
        blob_endpoint = "{}"
        container = "{container}"
        [auth]
        method = "account_key"
        account_key = "{}"
        [retry]
        max_tries = 3
        initial_delay_ms = 50
        "#,
        azurite.blob_endpoint(),
        Azurite::ACCOUNT_KEY
    );
    let cfg: StorageConfig = Figment::from(Toml::string(&toml))
        .extract()
        .unwrap_or_else(|e| panic!("storage config does not parse: {e}"));
    StorageClient::from_config(&cfg, Arc::new(StorageStats::default())).expect("client builds")
}

/// A writer of `container` through its own client, so its requests never show in the
/// counters of the client under test. Creates the container.
pub async fn writer(azurite: &Azurite, container: &str) -> BlockBlobWriter {
    let w = BlockBlobWriter::new(&client(azurite, container));
    w.create_container().await.expect("create container");
    w
}

/// A generated blob of `kind` for the hour starting at `hour_start`.
pub fn gen_blob(
    kind: GenKind,
    name: &str,
    hour_start: i64,
    records: usize,
    tuples_per_record: usize,
    seed: u64,
) -> GeneratedBlob {
    generate(&GenOptions {
        kind,
        records,
        tuples_per_record,
        seed,
        hour_start,
        name: name.to_owned(),
        ..GenOptions::default()
    })
}

/// The records of a generated blob as [`BlockBlobWriter::append_flow_log_records`] takes
/// them: one JSON object each, without the separating comma.
pub fn records_of(blob: &GeneratedBlob) -> Vec<Bytes> {
    let n = blob.blocks.len();
    blob.blocks[1..n - 1]
        .iter()
        .map(|b| Bytes::copy_from_slice(b.strip_prefix(b",").unwrap_or(b)))
        .collect()
}

/// Appends `records` one Put Block List at a time (one record per commit, as Azure does).
pub async fn append_each(w: &BlockBlobWriter, blob: &str, records: &[Bytes]) -> u64 {
    let mut length = 0;
    for r in records {
        length = w
            .append_flow_log_records(blob, std::slice::from_ref(r))
            .await
            .unwrap_or_else(|e| panic!("append to {blob}: {e}"))
            .length;
    }
    length
}

/// The `_id` of every document of a bulk body, in order.
pub fn bulk_ids(docs: &BulkBuffer) -> Vec<String> {
    docs.items
        .iter()
        .map(|item| {
            let action: serde_json::Value =
                serde_json::from_slice(&docs.body[item.action_start..item.doc_start])
                    .expect("action line is JSON");
            action["create"]["_id"]
                .as_str()
                .expect("action has an _id")
                .to_owned()
        })
        .collect()
}

/// The document ids of a whole blob decoded in one pass from byte 0: what an exact
/// incremental read must produce, no more, no less.
pub fn ids_of_whole_blob(container: &str, blob: &str, bytes: &[u8]) -> Vec<String> {
    let mut encoder = encoder();
    let mut decoder = BlobDecoder::new(&mut encoder, BlobContext::new(container, blob), 0);
    let mut docs = BulkBuffer::new();
    decoder.feed(bytes, &mut docs, &mut |p| {
        panic!("whole-blob decode of {blob}: {p}")
    });
    bulk_ids(&docs)
}

fn encoder() -> DocumentEncoder {
    DocumentEncoder::new(
        Schema::Ecs,
        IndexPattern::parse("flowlogs-%{+xxxx.ww}").expect("pattern"),
    )
}

/// What one [`Follower::read`] did.
#[derive(Debug, Default)]
pub struct FollowRead {
    pub outcome: ReadOutcome,
    pub ids: Vec<String>,
    pub problems: Vec<DecodeProblem>,
    /// `(from, to]` of each committed chunk, in order.
    pub committed: Vec<(u64, u64)>,
}

/// Follows blobs the way the daemon's poller does: compares a listing with the registry,
/// reads `[offset, length)` with [`read_blob`], and commits each chunk with a checked
/// [`Registry::advance`] (in order, as the ack tracker does once a chunk is delivered).
pub struct Follower {
    pub client: StorageClient,
    pub registry: Registry,
    pub source: String,
    pub limits: ReadLimits,
    encoder: DocumentEncoder,
    /// How many times each document id was produced.
    pub seen: HashMap<String, u32>,
}

impl Follower {
    pub fn new(client: StorageClient, registry: Registry, source: &str) -> Self {
        Follower {
            client,
            registry,
            source: source.to_owned(),
            limits: ReadLimits {
                chunk_bytes: 4 * 1024 * 1024,
                max_record_bytes: 256 * 1024 * 1024,
            },
            encoder: encoder(),
            seen: HashMap::new(),
        }
    }

    /// Where a listed blob must be read from, per the registry: `None` when nothing is new
    /// (unchanged or only re-tagged); a rewritten blob's entry is dropped and it reads from 0.
    pub fn plan(&self, blob: &BlobItem) -> Option<u64> {
        let entry = self
            .registry
            .get(&self.source, &blob.name)
            .expect("registry get");
        match entry {
            None => Some(0),
            Some(e) => match e.classify(blob.content_length, &blob.etag) {
                Change::Unchanged | Change::Retagged => None,
                Change::Grown => Some(e.offset),
                Change::Rewritten => {
                    self.registry
                        .remove(&self.source, &blob.name)
                        .expect("registry remove");
                    Some(0)
                }
            },
        }
    }

    /// Plans and, when something is new, reads one listed blob.
    pub async fn poll(&mut self, blob: &BlobItem) -> Option<FollowRead> {
        let from = self.plan(blob)?;
        Some(
            self.read(ReadTask {
                blob: blob.clone(),
                from,
            })
            .await,
        )
    }

    /// Reads one task and commits its chunks.
    pub async fn read(&mut self, task: ReadTask) -> FollowRead {
        let (tx, mut rx) = mpsc::channel::<Chunk>(4);
        let mut problems = Vec::new();
        let client = &self.client;
        let encoder = &mut self.encoder;
        let limits = self.limits;
        let read = async {
            let mut tx = tx;
            let mut on_problem = |p: DecodeProblem| -> Result<(), String> {
                problems.push(p);
                Ok(())
            };
            read_blob(client, encoder, 0, &task, limits, &mut tx, &mut on_problem).await
        };
        let collect = async {
            let mut chunks = Vec::new();
            while let Some(c) = rx.recv().await {
                chunks.push(c);
            }
            chunks
        };
        let (result, chunks) = tokio::join!(read, collect);
        let outcome = result.unwrap_or_else(|e| panic!("read {}: {e}", task.blob.name));
        let mut out = FollowRead {
            outcome,
            ..FollowRead::default()
        };
        for chunk in chunks {
            let delta = OffsetDelta {
                from: chunk.from,
                to: chunk.to,
                length_seen: chunk.length_seen,
                etag: &chunk.etag,
                last_modified: chunk.last_modified_ms,
                head_len: chunk.head_len,
            };
            self.registry
                .advance(&self.source, &chunk.blob, &delta)
                .unwrap_or_else(|e| panic!("commit ({}, {}]: {e}", chunk.from, chunk.to));
            out.committed.push((chunk.from, chunk.to));
            for id in bulk_ids(&chunk.docs) {
                *self.seen.entry(id.clone()).or_default() += 1;
                out.ids.push(id);
            }
        }
        out.problems = problems;
        out
    }

    /// Document ids produced more than once so far.
    pub fn duplicates(&self) -> Vec<&str> {
        self.seen
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(id, _)| id.as_str())
            .collect()
    }
}

/// The JSON line `flowlogd once` prints.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub struct Summary {
    pub list_requests: u64,
    pub blobs_listed: u64,
    pub blobs_read: u64,
    pub bytes_downloaded: u64,
    pub bytes_new: u64,
    pub records: u64,
    pub documents_indexed: u64,
    pub documents_existing: u64,
    pub documents_dead_lettered: u64,
    pub errors: u64,
}

/// The real `flowlogd` binary with a generated config: one source on Azurite (account key),
/// the search engine of an [`Es`] (its URL and auth/TLS lines), a registry in its own temporary
/// folder.
pub struct Daemon {
    dir: tempfile::TempDir,
    pub blob_endpoint: String,
    pub es_url: String,
    /// Lines added verbatim to `[elasticsearch]` (auth, TLS): [`Es::config_lines`].
    pub es_lines: String,
    pub container: String,
    /// The source's index pattern: [`Es::pattern`]`("src")` unless set, so the documents land
    /// in the test's own indices ([`Es::all`]) on an engine other tests share.
    pub index: String,
    /// `[[source]]` keys added verbatim (`start = "start_fresh"`, `settle = "2s"`, …).
    pub source_options: String,
}

/// What one `flowlogd once` did.
#[derive(Debug)]
pub struct OnceRun {
    pub summary: Summary,
    pub stderr: String,
}

impl Daemon {
    /// Reads `container` of `azurite` into `es`, under [`Es::pattern`]`("src")`.
    pub fn new(azurite: &Azurite, es: &Es, container: &str) -> Self {
        Daemon {
            dir: tempfile::Builder::new()
                .prefix("flowlogd-source-")
                .tempdir()
                .expect("tempdir"),
            blob_endpoint: azurite.blob_endpoint(),
            es_url: es.url.clone(),
            es_lines: es.config_lines.clone(),
            container: container.to_owned(),
            index: es.pattern("src"),
            source_options: String::new(),
        }
    }

    pub fn registry_path(&self) -> PathBuf {
        self.dir.path().join("registry")
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("flowlogd.toml")
    }

    fn write_config(&self) {
        let toml = format!(
            r#"
[registry]
path = "{registry}"

[http]
listen = ""

[elasticsearch]
urls = ["{es}"]
dead_letter_path = "{dir}/dead-letter.ndjson"
{es_lines}

[[source]]
name = "src"
container = "{container}"
account = "{account}"
blob_endpoint = "{endpoint}"
index = "{index}"
{options}

[source.auth]
method = "account_key"
account_key = "{key}"
"#,
            registry = self.registry_path().display(),
            es = self.es_url,
            es_lines = self.es_lines,
            dir = self.dir.path().display(),
            container = self.container,
            index = self.index,
            account = Azurite::ACCOUNT,
            endpoint = self.blob_endpoint,
            options = self.source_options,
            key = Azurite::ACCOUNT_KEY,
        );
        std::fs::write(self.config_path(), toml).expect("write config");
    }

    /// Runs `flowlogd once` to completion; panics with its output when it fails.
    pub fn once(&self) -> OnceRun {
        self.write_config();
        let out = Command::new(env!("CARGO_BIN_EXE_flowlogd"))
            .arg("--config")
            .arg(self.config_path())
            .arg("once")
            .env_remove("FLOWLOGD_CONFIG")
            .output()
            .expect("run flowlogd");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "flowlogd once failed ({}):\n{stdout}\n{stderr}",
            out.status
        );
        let line = stdout.lines().last().unwrap_or_default();
        let summary = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("summary {line:?}: {e}\n{stderr}"));
        OnceRun { summary, stderr }
    }

    /// Opens the registry `once` left behind (the process is gone, so its lock is free).
    pub fn registry(&self) -> Registry {
        Registry::open(&self.registry_path()).expect("open registry")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Documents in `indices` (a name or wildcard) on the search engine at `url` (no auth), after a
/// refresh; on an engine that may need credentials use [`Es::count`].
pub async fn count_documents_in(url: &str, indices: &str) -> u64 {
    use elasticsearch::{
        CountParts, Elasticsearch, http::transport::Transport, indices::IndicesRefreshParts,
    };
    let es = Elasticsearch::new(Transport::single_node(url).expect("transport"));
    es.indices()
        .refresh(IndicesRefreshParts::Index(&[indices]))
        .send()
        .await
        .expect("refresh");
    let body: serde_json::Value = es
        .count(CountParts::Index(&[indices]))
        .send()
        .await
        .expect("count")
        .json()
        .await
        .expect("count response");
    body["count"]
        .as_u64()
        .unwrap_or_else(|| panic!("count: {body}"))
}
