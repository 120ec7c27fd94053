//! Bulk delivery: sends a batch's `_bulk` requests until every document is indexed, already
//! there, or dead-lettered, splitting the answers into what is retried and what is refused.
//! The sink's other requests live beside it: cluster checks and setup (`bulk/setup.rs`), the
//! deletion of a rewritten blob's documents (`bulk/rewrite.rs`).
//!
//! A batch's body is one shared buffer ([`BulkBody`]): a request sends a clone of it, or a
//! slice for a contiguous run of items (half of a refused body); only a retried subset of
//! scattered items is copied into a body of its own.
//!
//! Per-item outcomes of a bulk response (all actions are `create` with deterministic ids):
//! - 2xx: created. 409: a document with that id exists: delivered before (a replay after a
//!   crash or a retried request that had been applied), counted as `already_existed`.
//! - 429, 5xx, a missing item: retried alone (a new body from those items' byte ranges), with
//!   exponential backoff and jitter, until they succeed.
//! - 401/403 and 404 `index_not_found_exception` items are retried too: they say the cluster
//!   refuses *all* documents (privileges, `action.auto_create_index`), which an operator fixes;
//!   dead-lettering them would empty the flow into the dead-letter file and commit it.
//! - Any other 4xx (mapping errors): written to the dead-letter file with the reason.
//!
//! Whole-request failures (no response, timeouts, 429/5xx/other statuses, an unparsable body)
//! are retried without limit at a backoff capped by `retry_max_backoff`; an outage is logged
//! once at warn, then once a minute, and its end at info. Two whole-request refusals are about
//! the body, not the cluster: a 413 (larger than `http.max_content_length`) and a 400 whose error
//! says the body does not parse. Such a request is split in halves until the one document at
//! fault is alone, and that one is dead-lettered, so a bad document never blocks the others.
//! Only cancellation ends a delivery early.
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

pub use super::client::{AuthKind, SinkError};
use super::client::{Connection, connect};
use super::dead_letter::{DeadLetter, ItemOrigin, RejectedDocument};
use super::retry::{Backoff, FailureLog, OutageLog};
use super::template::TemplateOptions;
use crate::bulk_buffer::{BulkBuffer, BulkItem, SharedBody};
use crate::config::ElasticsearchConfig;

mod rewrite;
mod setup;

pub use setup::{
    ClusterInfo, Distribution, InstalledTemplate, LifecycleCheck, LifecycleEngine,
    LifecycleOutcome, PrivilegeCheck, SetupReport, SetupTarget,
};

/// Only what outcome handling needs from a bulk response: keeps large responses small.
const FILTER_PATH: &str = "errors,items.*.status,items.*.error";
/// How often a continuing outage is logged again.
const LOG_EVERY: Duration = Duration::from_secs(60);
/// Longest part of an error response body put into logs and errors.
const BODY_EXCERPT: usize = 512;

/// What delivering one batch took.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct DeliveryReport {
    /// Documents indexed now (2xx).
    pub created: usize,
    /// Documents that were already there (409 on `create`).
    pub already_existed: usize,
    /// Documents refused for good, written to the dead-letter file.
    pub dead_lettered: usize,
    /// Documents re-sent after a 429/5xx item outcome (one per document per retry).
    pub item_retries: usize,
    /// Bulk requests re-sent after a whole-request failure.
    pub request_retries: usize,
    /// Time to each HTTP response received (failed ones included), for the latency histogram.
    pub request_latencies: Vec<Duration>,
}

impl DeliveryReport {
    /// Documents that need no further work: created, already there, or dead-lettered.
    pub fn settled(&self) -> usize {
        self.created + self.already_existed + self.dead_lettered
    }
}

/// The delivery was cancelled before every document was settled; none of its offsets may be
/// committed (what was indexed will come back as 409 on the re-read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("bulk delivery cancelled before every document was settled")]
pub struct Cancelled;

/// A batch as [`BulkSink::deliver_body`] sends it: an NDJSON bulk body in shared buffers and
/// the byte ranges of its items in it.
#[derive(Debug, Clone, Copy)]
pub struct BulkBody<'a> {
    pub body: &'a SharedBody,
    pub items: &'a [BulkItem],
}

/// The bulk sink. Cheap to clone; clones share the client, the dead-letter file and the
/// outage logs, so concurrent tasks can deliver through one sink.
#[derive(Clone)]
pub struct BulkSink {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Connection,
    dead_letter: DeadLetter,
    initial_backoff: Duration,
    max_backoff: Duration,
    item_retry_timeout: Duration,
    install_template: bool,
    template_options: TemplateOptions,
    delete_after: Option<Duration>,
    requests: OutageLog,
    item_retries: OutageLog,
    rejections: OutageLog,
    /// Bulk requests tried, answered or not: liveness for the watchdog during an outage.
    attempts: std::sync::atomic::AtomicU64,
}

impl fmt::Debug for BulkSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("BulkSink")
            .field("endpoints", &i.conn.endpoints)
            .field("auth", &i.conn.auth)
            .field("tls", &i.conn.tls)
            .field("dead_letter", &i.dead_letter)
            .finish_non_exhaustive()
    }
}

/// An item's outcome in one bulk response.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ItemOutcome {
    Created,
    AlreadyExisted,
    /// Send again later (429, 5xx, refused for reasons outside the document, missing).
    Retry {
        status: u16,
        error: Option<Value>,
    },
    /// Refused for good: dead-letter.
    Reject {
        status: u16,
        error: Value,
    },
}

enum ChunkResult {
    Outcomes(ParsedItems),
    /// The body is refused as a whole (413, or a 400 saying it does not parse): split it.
    BodyRefused {
        status: u16,
        error: Value,
    },
}

impl BulkSink {
    /// Builds the sink from `[elasticsearch]`: resolves secrets, TLS and endpoints. No network
    /// I/O. Refused documents go to `dead_letter_path` (default `dead-letter.ndjson` in the
    /// working directory), opened on first use; the daemon should rather use
    /// [`BulkSink::with_dead_letter`] with the file it opened at startup.
    pub fn new(config: &ElasticsearchConfig) -> Result<BulkSink, SinkError> {
        let path = config
            .dead_letter_path
            .clone()
            .unwrap_or_else(|| "dead-letter.ndjson".into());
        Self::with_dead_letter(config, DeadLetter::lazy(path))
    }

    /// Like [`BulkSink::new`], writing refused documents to `dead_letter` (shared with the
    /// daemon's [`DeadLetter::write_problem`] calls, so one file counts both kinds).
    pub fn with_dead_letter(
        config: &ElasticsearchConfig,
        dead_letter: DeadLetter,
    ) -> Result<BulkSink, SinkError> {
        let conn = connect(config)?;
        Ok(BulkSink {
            inner: Arc::new(Inner {
                conn,
                dead_letter,
                initial_backoff: config.retry_initial_backoff,
                max_backoff: config.retry_max_backoff,
                item_retry_timeout: config.item_retry_timeout,
                install_template: config.install_template,
                template_options: TemplateOptions {
                    number_of_shards: config.number_of_shards,
                    number_of_replicas: config.number_of_replicas,
                    data_stream: config.data_stream,
                    lifecycle_policy: None,
                    codec: config.index_codec.clone(),
                },
                delete_after: config.delete_after,
                requests: OutageLog::new(LOG_EVERY),
                item_retries: OutageLog::new(LOG_EVERY),
                rejections: OutageLog::new(LOG_EVERY),
                attempts: std::sync::atomic::AtomicU64::new(0),
            }),
        })
    }

    /// Bulk requests tried so far (answered, failed or timed out).
    pub fn attempts(&self) -> u64 {
        self.inner
            .attempts
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn dead_letter(&self) -> &DeadLetter {
        &self.inner.dead_letter
    }

    /// Node URLs (or `cloud:<name>`), safe to log.
    pub fn endpoints(&self) -> &[String] {
        &self.inner.conn.endpoints
    }

    pub fn auth_kind(&self) -> AuthKind {
        self.inner.conn.auth
    }

    /// Delivers every document of `batch`: returns once each is created, already there (409)
    /// or dead-lettered, or `Err(Cancelled)` when `cancel` fires first. `origin(i)` says where
    /// item `i` came from (called for dead-lettered items only). Copies the body once into a
    /// shared buffer; the daemon, which owns its batches, uses [`BulkSink::deliver_body`].
    pub async fn deliver(
        &self,
        batch: &BulkBuffer,
        origin: &(dyn Fn(usize) -> ItemOrigin + Sync),
        cancel: &CancellationToken,
    ) -> Result<DeliveryReport, Cancelled> {
        let body = SharedBody::from(Bytes::copy_from_slice(&batch.body));
        let batch = BulkBody {
            body: &body,
            items: &batch.items,
        };
        self.deliver_body(batch, origin, cancel).await
    }

    /// [`BulkSink::deliver`] of a body already in shared buffers: requests send them (or
    /// slices, for a contiguous run of items), never copies; only a retried subset of
    /// scattered items gets a body of its own.
    pub async fn deliver_body(
        &self,
        batch: BulkBody<'_>,
        origin: &(dyn Fn(usize) -> ItemOrigin + Sync),
        cancel: &CancellationToken,
    ) -> Result<DeliveryReport, Cancelled> {
        let mut report = DeliveryReport::default();
        let mut pending: Vec<usize> = (0..batch.items.len()).collect();
        let mut round_backoff = Backoff::new(self.inner.initial_backoff, self.inner.max_backoff);
        // When each item first failed with a retryable status other than 429.
        let mut failing_since: std::collections::HashMap<usize, Instant> =
            std::collections::HashMap::new();
        while !pending.is_empty() {
            let mut retry: Vec<usize> = Vec::new();
            let mut sample: Option<(u16, Option<Value>)> = None;
            let mut rejected: Vec<(usize, u16, Value)> = Vec::new();
            // A stack of item sets to send; a refused body pushes the two halves of its set.
            let mut chunks = vec![std::mem::take(&mut pending)];
            while let Some(chunk) = chunks.pop() {
                match self.send_chunk(batch, &chunk, &mut report, cancel).await? {
                    ChunkResult::Outcomes(ParsedItems::AllCreated) => {
                        report.created += chunk.len();
                    }
                    ChunkResult::Outcomes(ParsedItems::Each(outcomes)) => {
                        for (&i, outcome) in chunk.iter().zip(outcomes) {
                            match outcome {
                                ItemOutcome::Created => report.created += 1,
                                ItemOutcome::AlreadyExisted => report.already_existed += 1,
                                ItemOutcome::Retry { status, error } if status != 429 => {
                                    let since =
                                        *failing_since.entry(i).or_insert_with(Instant::now);
                                    if since.elapsed() >= self.inner.item_retry_timeout {
                                        rejected.push((
                                            i,
                                            status,
                                            gave_up(status, since.elapsed(), error),
                                        ));
                                    } else {
                                        sample.get_or_insert((status, error));
                                        retry.push(i);
                                    }
                                }
                                // Backpressure: retried for as long as it lasts.
                                ItemOutcome::Retry { status, error } => {
                                    sample.get_or_insert((status, error));
                                    retry.push(i);
                                }
                                ItemOutcome::Reject { status, error } => {
                                    rejected.push((i, status, error))
                                }
                            }
                        }
                    }
                    ChunkResult::BodyRefused { status, error } if chunk.len() == 1 => {
                        rejected.push((chunk[0], status, error));
                    }
                    ChunkResult::BodyRefused { status, error } => {
                        let (a, b) = chunk.split_at(chunk.len() / 2);
                        debug!(
                            documents = chunk.len(), status, error = %error_summary(&error),
                            "bulk body refused as a whole; sending it in halves to find the document at fault"
                        );
                        chunks.push(b.to_vec());
                        chunks.push(a.to_vec());
                    }
                }
            }
            if !rejected.is_empty() {
                self.dead_letter_items(batch, origin, &rejected, cancel)
                    .await?;
                report.dead_lettered += rejected.len();
            }
            if retry.is_empty() {
                if let Some((failures, outage)) = self.inner.item_retries.success(Instant::now()) {
                    info!(retries = failures, duration = ?outage, "bulk items are accepted again");
                }
                break;
            }
            report.item_retries += retry.len();
            let delay = round_backoff.next_delay();
            self.log_item_retry(retry.len(), sample, delay);
            sleep(delay, cancel).await?;
            pending = retry;
        }
        Ok(report)
    }

    /// Sends one set of items until a usable response arrives (or the body is refused).
    async fn send_chunk(
        &self,
        batch: BulkBody<'_>,
        chunk: &[usize],
        report: &mut DeliveryReport,
        cancel: &CancellationToken,
    ) -> Result<ChunkResult, Cancelled> {
        let body = request_body(batch, chunk);
        let mut backoff = Backoff::new(self.inner.initial_backoff, self.inner.max_backoff);
        loop {
            if cancel.is_cancelled() {
                return Err(Cancelled);
            }
            let started = Instant::now();
            let attempt = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(Cancelled),
                r = self.post_bulk(body.clone()) => r,
            };
            self.inner
                .attempts
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let failure = match attempt {
                Ok((status, response)) => {
                    report.request_latencies.push(started.elapsed());
                    match status {
                        200..=299 => match parse_bulk_response(&response, chunk.len()) {
                            Ok(items) => {
                                self.request_recovered();
                                return Ok(ChunkResult::Outcomes(items));
                            }
                            Err(e) => format!("HTTP {status} with an unusable bulk response: {e}"),
                        },
                        413 => {
                            self.request_recovered();
                            let reason = format!(
                                "bulk body too large for the cluster: {}",
                                excerpt(&response)
                            );
                            return Ok(ChunkResult::BodyRefused {
                                status,
                                error: json!({"type": "request_entity_too_large", "reason": reason}),
                            });
                        }
                        400 if body_parse_error(&response).is_some() => {
                            self.request_recovered();
                            return Ok(ChunkResult::BodyRefused {
                                status,
                                error: body_parse_error(&response).unwrap_or_default(),
                            });
                        }
                        401 | 403 => format!(
                            "HTTP {status} (check the user, API key or token and its privileges): {}",
                            excerpt(&response)
                        ),
                        _ => format!("HTTP {status}: {}", excerpt(&response)),
                    }
                }
                Err(e) => e,
            };
            report.request_retries += 1;
            let delay = backoff.next_delay();
            match self.inner.requests.failure(Instant::now()) {
                FailureLog::First => warn!(
                    error = %failure, documents = chunk.len(), retry_in = ?delay,
                    "bulk request failed; retrying it until Elasticsearch accepts it (repeats are summarised once a minute)"
                ),
                FailureLog::Reminder { failures, since } => warn!(
                    failures, outage = ?since, last_error = %failure, retry_in = ?delay,
                    "bulk requests are still failing; retrying"
                ),
                FailureLog::Quiet => {
                    debug!(error = %failure, retry_in = ?delay, "bulk request failed; retrying")
                }
            }
            sleep(delay, cancel).await?;
        }
    }

    async fn post_bulk(&self, body: SharedBody) -> Result<(u16, Bytes), String> {
        self.inner.conn.bulk.post(FILTER_PATH, body).await
    }

    fn request_recovered(&self) {
        if let Some((failures, outage)) = self.inner.requests.success(Instant::now()) {
            info!(failures, duration = ?outage, "bulk requests succeed again");
        }
    }

    fn log_item_retry(&self, count: usize, sample: Option<(u16, Option<Value>)>, delay: Duration) {
        let (status, error) = sample.unwrap_or((0, None));
        let reason = error
            .as_ref()
            .map(error_summary)
            .unwrap_or_else(|| "missing from the response".into());
        match self.inner.item_retries.failure(Instant::now()) {
            FailureLog::First => warn!(
                documents = count, status, error = %reason, retry_in = ?delay,
                "Elasticsearch refused documents for now; retrying only those (repeats are summarised once a minute)"
            ),
            FailureLog::Reminder { failures, since } => warn!(
                rounds = failures, duration = ?since, documents = count, status, error = %reason,
                "documents are still being refused for now; retrying"
            ),
            FailureLog::Quiet => {
                debug!(documents = count, status, error = %reason, "retrying refused documents")
            }
        }
    }

    /// Writes refused documents to the dead-letter file, retrying until the write succeeds:
    /// their offsets may only be committed once they are on disk.
    async fn dead_letter_items(
        &self,
        batch: BulkBody<'_>,
        origin: &(dyn Fn(usize) -> ItemOrigin + Sync),
        rejected: &[(usize, u16, Value)],
        cancel: &CancellationToken,
    ) -> Result<(), Cancelled> {
        // An item's lines lie in one buffer, so these borrow rather than copy.
        let texts: Vec<_> = rejected
            .iter()
            .map(|(i, _, _)| batch.body.get(batch.items[*i].doc_range()))
            .collect();
        let documents: Vec<RejectedDocument<'_>> = rejected
            .iter()
            .zip(&texts)
            .map(|((i, status, error), document)| {
                let item = &batch.items[*i];
                let (index, id) = action_target(&batch.body.get(item.action_start..item.doc_start));
                RejectedDocument {
                    origin: origin(*i),
                    index,
                    id,
                    status: *status,
                    error: error.clone(),
                    document: document.as_ref(),
                }
            })
            .collect();
        let mut backoff = Backoff::new(self.inner.initial_backoff, self.inner.max_backoff);
        loop {
            match self
                .inner
                .dead_letter
                .write_rejected_off_runtime(&documents)
                .await
            {
                Ok(()) => break,
                Err(e) => {
                    let delay = backoff.next_delay();
                    error!(error = %e, documents = documents.len(), retry_in = ?delay,
                        "cannot write refused documents to the dead-letter file; retrying (their offsets stay uncommitted)");
                    sleep(delay, cancel).await?;
                }
            }
        }
        let first = &documents[0];
        match self.inner.rejections.failure(Instant::now()) {
            FailureLog::First | FailureLog::Reminder { .. } => warn!(
                documents = documents.len(), total = self.inner.dead_letter.counts().rejected,
                blob = %first.origin.blob, offset = first.origin.record_offset, status = first.status,
                error = %error_summary(&first.error), file = %self.inner.dead_letter.path().display(),
                "Elasticsearch refused documents; written to the dead-letter file (repeats are summarised once a minute)"
            ),
            FailureLog::Quiet => {
                debug!(documents = documents.len(), error = %error_summary(&first.error), "documents dead-lettered")
            }
        }
        Ok(())
    }
}

/// The error recorded for an item given up after `item_retry_timeout`: says so, keeps the
/// engine's last error.
fn gave_up(status: u16, failing_for: Duration, last_error: Option<Value>) -> Value {
    json!({
        "type": "flowlogd_item_retries_exhausted",
        "reason": format!(
            "the item kept failing with HTTP {status} for {} s while other items were accepted; given up after item_retry_timeout",
            failing_for.as_secs()
        ),
        "last_error": last_error.unwrap_or(Value::Null),
    })
}

/// The body of a request for `items` (ascending indices) of `batch`: a slice of the shared
/// body when they are consecutive items lying next to each other in it (a whole batch, or a
/// half of a refused one), else a new body of their lines.
fn request_body(batch: BulkBody<'_>, items: &[usize]) -> SharedBody {
    let adjacent = items
        .windows(2)
        .all(|w| w[1] == w[0] + 1 && batch.items[w[0]].end == batch.items[w[1]].action_start);
    match (items.first(), items.last()) {
        (Some(&first), Some(&last)) if adjacent => batch
            .body
            .slice(batch.items[first].action_start..batch.items[last].end),
        _ => build_body(batch, items),
    }
}

/// The action and document lines of `items` of `batch`, copied into one new bulk body.
fn build_body(batch: BulkBody<'_>, items: &[usize]) -> SharedBody {
    let len = items.iter().map(|&i| batch.items[i].range().len()).sum();
    let mut body = Vec::with_capacity(len);
    for &i in items {
        body.extend_from_slice(&batch.body.get(batch.items[i].range()));
    }
    SharedBody::from(Bytes::from(body))
}

/// `_index` and `_id` of an action line.
fn action_target(action: &[u8]) -> (Option<String>, Option<String>) {
    let Ok(v) = serde_json::from_slice::<Value>(action) else {
        return (None, None);
    };
    let meta = v
        .as_object()
        .and_then(|o| o.values().next())
        .cloned()
        .unwrap_or(Value::Null);
    (
        meta["_index"].as_str().map(str::to_owned),
        meta["_id"].as_str().map(str::to_owned),
    )
}

/// Waits `delay` unless cancelled first.
async fn sleep(delay: Duration, cancel: &CancellationToken) -> Result<(), Cancelled> {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(Cancelled),
        _ = tokio::time::sleep(delay) => Ok(()),
    }
}

/// Classifies one item by its status (and error type).
fn classify(status: Option<u16>, error: Option<Value>) -> ItemOutcome {
    let Some(status) = status else {
        return ItemOutcome::Retry { status: 0, error };
    };
    let error_type = error
        .as_ref()
        .and_then(|e| e["type"].as_str())
        .unwrap_or_default();
    match status {
        200..=299 => ItemOutcome::Created,
        409 => ItemOutcome::AlreadyExisted,
        429 | 500..=599 => ItemOutcome::Retry { status, error },
        // Not about this document: the cluster refuses every document until an operator acts.
        401 | 403 => ItemOutcome::Retry { status, error },
        404 if error_type == "index_not_found_exception" => ItemOutcome::Retry { status, error },
        _ => ItemOutcome::Reject {
            status,
            error: error.unwrap_or_else(|| json!({"type": "unknown", "reason": format!("HTTP {status} without an error object")})),
        },
    }
}

/// What a bulk response says about the items sent.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ParsedItems {
    /// `"errors":false` and one item per document sent: every one was created.
    AllCreated,
    /// Each item's outcome, in the order sent.
    Each(Vec<ItemOutcome>),
}

impl ParsedItems {
    /// Each of the `sent` items' outcome.
    #[cfg(test)]
    fn into_vec(self, sent: usize) -> Vec<ItemOutcome> {
        match self {
            ParsedItems::AllCreated => vec![ItemOutcome::Created; sent],
            ParsedItems::Each(outcomes) => outcomes,
        }
    }
}

/// Outcomes of the `sent` items of a bulk request from its (filtered) response. Items beyond
/// the end of a short response are retried; an unparsable response or one with more items
/// than sent is an error (the whole request is retried: `create` makes that safe).
///
/// The usual answer, `"errors":false` with one item per document, is only counted: when its
/// items are one item's bytes repeated, by byte comparison ([`all_created_fast`]), else by
/// serde, each item checked to be an object but not read.
pub(crate) fn parse_bulk_response(body: &[u8], sent: usize) -> Result<ParsedItems, String> {
    // Counting the items with serde walks every byte of the usual 5,000-item answer token by
    // token: `perf record` of the end-to-end benchmark put it at ~5% of the daemon's whole CPU.
    // The usual answer is one item's bytes repeated, which a byte comparison proves for a
    // fraction of that; anything else takes the serde path below, unchanged.
    if all_created_fast(body, sent) {
        return Ok(ParsedItems::AllCreated);
    }
    parse_with_serde(body, sent)
}

/// [`parse_bulk_response`] without its fast path: every response is read by serde, and a
/// 5,000-item `"errors":false` answer costs no allocation.
fn parse_with_serde(body: &[u8], sent: usize) -> Result<ParsedItems, String> {
    let summary: BulkSummary = serde_json::from_slice(body)
        .map_err(|e| format!("not a bulk response ({e}): {}", excerpt(body)))?;
    let Some(ItemCount(count)) = summary.items else {
        return Err(format!(
            "no `items` in the bulk response: {}",
            excerpt(body)
        ));
    };
    if count > sent {
        return Err(format!("{count} items in the response for {sent} sent"));
    }
    if summary.errors == Some(false) && count == sent {
        return Ok(ParsedItems::AllCreated);
    }
    let response: BulkResponse = serde_json::from_slice(body)
        .map_err(|e| format!("not a bulk response ({e}): {}", excerpt(body)))?;
    let items = response.items.unwrap_or_default();
    let missing = sent - items.len();
    let mut outcomes: Vec<ItemOutcome> = if response.errors == Some(false) {
        // Elasticsearch says every item it answered succeeded.
        vec![ItemOutcome::Created; items.len()]
    } else {
        items
            .into_iter()
            .map(|OneOperation(r)| classify(r.status, r.error))
            .collect()
    };
    outcomes.extend((0..missing).map(|_| ItemOutcome::Retry {
        status: 0,
        error: Some(json!({"type": "missing_item", "reason": "not in the bulk response"})),
    }));
    Ok(ParsedItems::Each(outcomes))
}

/// Whether `body` is the usual answer to `sent` documents, `{…"errors":false…,"items":[X,X,…,X]…}`
/// with exactly `sent` byte-identical objects X and nothing between them: then the serde path
/// ([`parse_with_serde`]) returns [`ParsedItems::AllCreated`], and so may the caller. `false`
/// says nothing: the caller takes the serde path.
///
/// Why its `true` is the serde path's answer: the serde path reads `body` as a [`BulkSummary`].
/// The probe reads the same bytes with the items array replaced by `[]` as a
/// `BulkSummary<&RawValue>` (the same derive, so the same rules for `errors`, unknown and
/// duplicate fields, trailing bytes), and requires `"errors":false` and its `items` to be that
/// very `[]`, by address: the array measured is the top-level `items`, whatever surrounds it.
/// serde_json reads a value without looking past its end, so the serde path reads the bytes
/// outside the array as the probe did, and inside it reads X `sent` times as [`AnObject`],
/// which is how X was read here. (Depth cannot tell them apart: serde_json limits it only
/// for the maps and sequences a `Deserialize` asks for, here three levels; what is inside an
/// item is skipped as `IgnoredAny`, which has no depth limit.)
fn all_created_fast(body: &[u8], sent: usize) -> bool {
    const KEY: &[u8] = b"\"items\":[";
    let Some(key_at) = memchr::memmem::find(body, KEY) else {
        return false;
    };
    // The array runs from `open` (its `[`) through `close` (its `]`).
    let open = key_at + KEY.len() - 1;
    let first = open + 1;
    // The first item, read the way the serde path reads each item; no leading whitespace.
    if body.get(first) != Some(&b'{') {
        return false;
    }
    let mut items = serde_json::Deserializer::from_slice(&body[first..]).into_iter::<AnObject>();
    let Some(Ok(AnObject)) = items.next() else {
        return false;
    };
    let item_len = items.byte_offset();
    if body.get(first + item_len - 1) != Some(&b'}') {
        return false;
    }
    // The `sent` items, each followed by a comma but the last: `sent * (item_len + 1) - 1`
    // bytes that repeat every `item_len + 1` bytes and start with the first item and a comma
    // are exactly the first item's bytes `sent` times with commas between them.
    let Some(run) = sent
        .checked_mul(item_len + 1)
        .and_then(|n| n.checked_sub(1))
    else {
        return false;
    };
    let Some(close) = first.checked_add(run) else {
        return false;
    };
    let Some(run) = body.get(first..close) else {
        return false;
    };
    let step = item_len + 1;
    let repeats = sent == 1
        || (run.get(item_len) == Some(&b',')
            && run.get(step..) == run.get(..run.len().saturating_sub(step)));
    if !repeats || body.get(close) != Some(&b']') {
        return false;
    }
    // Everything around the array, read as the serde path reads it.
    let mut probe = Vec::with_capacity(body.len() - (close + 1 - open) + 2);
    probe.extend_from_slice(&body[..open]);
    probe.extend_from_slice(b"[]");
    probe.extend_from_slice(&body[close + 1..]);
    let Ok(summary) = serde_json::from_slice::<BulkSummary<&RawValue>>(&probe) else {
        return false;
    };
    summary.errors == Some(false)
        && summary
            .items
            .is_some_and(|items| std::ptr::eq(items.get().as_bytes(), &probe[open..open + 2]))
}

/// A bulk response read only for `errors` and `items`: by default the number of items (the
/// fast path reads it with `items` as it is, a [`RawValue`]).
#[derive(Deserialize)]
#[serde(bound(deserialize = "I: Deserialize<'de>"))]
struct BulkSummary<I = ItemCount> {
    #[serde(default)]
    errors: Option<bool>,
    #[serde(default)]
    items: Option<I>,
}

/// The length of `items`, each checked to be an object and skipped.
struct ItemCount(usize);

impl<'de> Deserialize<'de> for ItemCount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Count;
        impl<'de> Visitor<'de> for Count {
            type Value = ItemCount;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of bulk items")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ItemCount, A::Error> {
                let mut count = 0;
                while seq.next_element::<AnObject>()?.is_some() {
                    count += 1;
                }
                Ok(ItemCount(count))
            }
        }
        d.deserialize_seq(Count)
    }
}

/// Any JSON object, skipped without being kept.
struct AnObject;

impl<'de> Deserialize<'de> for AnObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Skip;
        impl<'de> Visitor<'de> for Skip {
            type Value = AnObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a bulk item object like {\"create\":{…}}")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AnObject, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(AnObject)
            }
        }
        d.deserialize_map(Skip)
    }
}

#[derive(Deserialize)]
struct BulkResponse {
    #[serde(default)]
    errors: Option<bool>,
    #[serde(default)]
    items: Option<Vec<OneOperation>>,
}

#[derive(Deserialize, Default)]
struct ItemResult {
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    error: Option<Value>,
}

/// One entry of `items`: `{"<op type>": {…}}`; the op type is not needed.
struct OneOperation(ItemResult);

impl<'de> Deserialize<'de> for OneOperation {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOperation;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a bulk item object like {\"create\":{…}}")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OneOperation, A::Error> {
                let mut result = None;
                while let Some(IgnoredAny) = map.next_key()? {
                    let r: ItemResult = map.next_value()?;
                    result.get_or_insert(r);
                }
                Ok(OneOperation(result.unwrap_or_default()))
            }
        }
        d.deserialize_map(V)
    }
}

/// `type: reason` of an Elasticsearch error object (or its text).
fn error_summary(error: &Value) -> String {
    match (error["type"].as_str(), error["reason"].as_str()) {
        (Some(t), Some(r)) => format!("{t}: {r}"),
        (Some(t), None) => t.to_owned(),
        _ => error.to_string(),
    }
}

/// The start of a response body, for messages.
fn excerpt(body: &[u8]) -> String {
    let cut = &body[..body.len().min(BODY_EXCERPT)];
    let mut text = String::from_utf8_lossy(cut).into_owned();
    if body.len() > cut.len() {
        text.push('…');
    }
    text
}

/// The error object of a whole-request 400 that blames the body (an unparsable line), as
/// opposed to the endpoint or the cluster ("no handler found" is a string, not such an object).
fn body_parse_error(body: &[u8]) -> Option<Value> {
    const BODY_ERRORS: &[&str] = &[
        "action_request_validation_exception",
        "x_content_parse_exception",
        "json_parse_exception",
        "parse_exception",
        "not_x_content_exception",
    ];
    let v: Value = serde_json::from_slice(body).ok()?;
    let error = v.get("error").filter(|e| e.is_object())?;
    let ty = error["type"].as_str()?;
    let reason = error["reason"].as_str().unwrap_or_default();
    // `illegal_argument_exception` is also used for settings and parameters: only a reason
    // about a line of the body ("Malformed action/metadata line [3]…") blames the body.
    let about_a_line = ty == "illegal_argument_exception"
        && (reason.contains("line") || reason.contains("Malformed"));
    (BODY_ERRORS.contains(&ty) || about_a_line).then(|| error.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcomes(body: &str, sent: usize) -> Vec<ItemOutcome> {
        parse_bulk_response(body.as_bytes(), sent)
            .unwrap()
            .into_vec(sent)
    }

    #[test]
    fn mixed_item_statuses_are_classified() {
        let body = r#"{"errors":true,"items":[
            {"create":{"status":201}},
            {"create":{"status":409,"error":{"type":"version_conflict_engine_exception","reason":"[a]: version conflict, document already exists"}}},
            {"create":{"status":429,"error":{"type":"es_rejected_execution_exception","reason":"rejected execution"}}},
            {"create":{"status":503,"error":{"type":"unavailable_shards_exception","reason":"primary shard is not active"}}},
            {"create":{"status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse field [source.ip] of type [ip]","caused_by":{"type":"illegal_argument_exception","reason":"'x' is not an IP string literal."}}}},
            {"index":{"status":200}},
            {"create":{"status":500,"error":{"type":"exception","reason":"boom"}}}
        ]}"#;
        let o = outcomes(body, 7);
        assert_eq!(o[0], ItemOutcome::Created);
        assert_eq!(o[1], ItemOutcome::AlreadyExisted);
        assert!(
            matches!(&o[2], ItemOutcome::Retry { status: 429, error: Some(e) } if e["type"] == "es_rejected_execution_exception")
        );
        assert!(matches!(&o[3], ItemOutcome::Retry { status: 503, .. }));
        match &o[4] {
            ItemOutcome::Reject { status: 400, error } => {
                assert_eq!(error["type"], "mapper_parsing_exception");
                assert_eq!(
                    error["caused_by"]["type"], "illegal_argument_exception",
                    "the whole error is kept"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(o[5], ItemOutcome::Created);
        assert!(matches!(&o[6], ItemOutcome::Retry { status: 500, .. }));
    }

    #[test]
    fn errors_false_takes_the_fast_path() {
        // Statuses are not even looked at when Elasticsearch says nothing failed.
        let o = outcomes(
            r#"{"errors":false,"items":[{"create":{"status":201}},{"create":{}}]}"#,
            2,
        );
        assert_eq!(o, [ItemOutcome::Created, ItemOutcome::Created]);
        assert_eq!(
            parse_bulk_response(br#"{"errors":false,"items":[{"create":{}}]}"#, 1),
            Ok(ParsedItems::AllCreated),
            "one item per document sent: counted, not read"
        );
        // Unknown fields (took, ingest_took) are fine.
        let o = outcomes(
            r#"{"took":3,"ingest_took":0,"errors":false,"items":[{"create":{"_index":"i","_id":"a","status":201}}]}"#,
            1,
        );
        assert_eq!(o, [ItemOutcome::Created]);
    }

    #[test]
    fn missing_items_are_retried() {
        let o = outcomes(r#"{"errors":false,"items":[{"create":{"status":201}}]}"#, 3);
        assert_eq!(o[0], ItemOutcome::Created);
        assert!(
            matches!(&o[1], ItemOutcome::Retry { status: 0, error: Some(e) } if e["type"] == "missing_item")
        );
        assert!(matches!(&o[2], ItemOutcome::Retry { status: 0, .. }));
        // An item without a status is not trusted either.
        let o = outcomes(
            r#"{"errors":true,"items":[{"create":{"error":{"type":"x"}}}]}"#,
            1,
        );
        assert!(matches!(&o[0], ItemOutcome::Retry { status: 0, .. }));
    }

    #[test]
    fn malformed_responses_are_errors() {
        for (body, sent, expect) in [
            ("", 1, "not a bulk response"),
            ("<html>502 Bad Gateway</html>", 1, "Bad Gateway"),
            (
                r#"{"errors":false,"items":[{"create":{"status":201}}"#,
                1,
                "not a bulk response",
            ),
            (r#"{"took":1,"errors":false}"#, 1, "no `items`"),
            (
                r#"{"errors":true,"items":[{"create":{"status":"201"}}]}"#,
                1,
                "not a bulk response",
            ),
            (
                r#"{"errors":false,"items":[{"create":{"status":201}},{"create":{"status":201}}]}"#,
                1,
                "2 items in the response for 1 sent",
            ),
            (r#"{"errors":false,"items":[5]}"#, 1, "not a bulk response"),
        ] {
            let e = parse_bulk_response(body.as_bytes(), sent).unwrap_err();
            assert!(e.contains(expect), "{body}: {e}");
        }
    }

    #[test]
    fn refusals_outside_the_document_are_retried_other_4xx_rejected() {
        let one = |status: u16, ty: &str| {
            let body = format!(
                r#"{{"errors":true,"items":[{{"create":{{"status":{status},"error":{{"type":"{ty}","reason":"r"}}}}}}]}}"#
            );
            outcomes(&body, 1).remove(0)
        };
        assert!(matches!(
            one(403, "security_exception"),
            ItemOutcome::Retry { status: 403, .. }
        ));
        assert!(matches!(
            one(401, "security_exception"),
            ItemOutcome::Retry { status: 401, .. }
        ));
        assert!(matches!(
            one(404, "index_not_found_exception"),
            ItemOutcome::Retry { status: 404, .. }
        ));
        assert!(matches!(
            one(404, "something_else"),
            ItemOutcome::Reject { status: 404, .. }
        ));
        assert!(matches!(
            one(400, "illegal_argument_exception"),
            ItemOutcome::Reject { status: 400, .. }
        ));
        assert!(matches!(
            one(413, "too_large"),
            ItemOutcome::Reject { status: 413, .. }
        ));
        let o = outcomes(r#"{"errors":true,"items":[{"create":{"status":400}}]}"#, 1);
        assert!(
            matches!(&o[0], ItemOutcome::Reject { status: 400, error } if error["type"] == "unknown")
        );
    }

    #[test]
    fn requests_slice_the_shared_body_for_adjacent_items_and_rebuild_it_for_scattered_ones() {
        let mut batch = BulkBuffer::new();
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            let action_start = batch.body.len();
            batch.body.extend_from_slice(
                format!("{{\"create\":{{\"_index\":\"ix\",\"_id\":\"{id}\"}}}}\n").as_bytes(),
            );
            let doc_start = batch.body.len();
            batch
                .body
                .extend_from_slice(format!("{{\"n\":{i}}}\n").as_bytes());
            batch.items.push(crate::bulk_buffer::BulkItem {
                action_start,
                doc_start,
                end: batch.body.len(),
                record_offset: 0,
                tuple_index: i as u32,
            });
        }
        // Two buffers, as a batch of two chunks: the first item, then the other two.
        let cut = batch.items[1].action_start;
        let (first, rest) = (
            Bytes::copy_from_slice(&batch.body[..cut]),
            Bytes::copy_from_slice(&batch.body[cut..]),
        );
        let mut shared = SharedBody::from(first.clone());
        shared.push(rest.clone());
        let view = BulkBody {
            body: &shared,
            items: &batch.items,
        };
        let body = request_body(view, &[0, 2]).to_vec();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            "{\"create\":{\"_index\":\"ix\",\"_id\":\"a\"}}\n{\"n\":0}\n{\"create\":{\"_index\":\"ix\",\"_id\":\"c\"}}\n{\"n\":2}\n"
        );
        // A run of adjacent items is sent as slices of the shared buffers, not a copy.
        let whole = request_body(view, &[0, 1, 2]);
        assert_eq!(whole.to_vec(), batch.body);
        let starts: Vec<_> = whole.segments().iter().map(|s| s.as_ptr()).collect();
        assert_eq!(starts, [first.as_ptr(), rest.as_ptr()]);
        let tail = request_body(view, &[1, 2]);
        assert_eq!(tail.to_vec(), &batch.body[cut..]);
        assert_eq!(tail.segments().len(), 1);
        assert_eq!(tail.segments()[0].as_ptr(), rest.as_ptr());
        let middle = request_body(view, &[1]);
        assert_eq!(middle.segments()[0].as_ptr(), rest.as_ptr());
        assert_eq!(build_body(view, &[0, 1, 2]).to_vec(), batch.body);
        let item = batch.items[1];
        assert_eq!(
            action_target(&shared.get(item.action_start..item.doc_start)),
            (Some("ix".into()), Some("b".into()))
        );
        assert_eq!(action_target(b"nonsense"), (None, None));
    }

    #[test]
    fn whole_request_400s_blame_the_body_only_when_it_does_not_parse() {
        let e = body_parse_error(br#"{"error":{"root_cause":[],"type":"x_content_parse_exception","reason":"[1:5] Unexpected end-of-input"},"status":400}"#);
        assert_eq!(e.unwrap()["type"], "x_content_parse_exception");
        let e = body_parse_error(br#"{"error":{"type":"illegal_argument_exception","reason":"Malformed action/metadata line [3], expected START_OBJECT"},"status":400}"#);
        assert!(e.is_some());
        // A wrong path or a proxy: the body is not at fault; retry instead of dead-lettering.
        assert!(
            body_parse_error(br#"{"error":"no handler found for uri [/_bulk] and method [POST]"}"#)
                .is_none()
        );
        assert!(
            body_parse_error(br#"{"error":{"type":"security_exception"},"status":400}"#).is_none()
        );
        assert!(body_parse_error(b"<html>Bad Request</html>").is_none());
    }

    /// The usual answer with `filter_path`: `items` is `item` `count` times.
    fn usual(item: &str, count: usize) -> String {
        format!(
            r#"{{"errors":false,"items":[{}]}}"#,
            vec![item; count].join(",")
        )
    }

    const CREATED: &str = r#"{"create":{"status":201}}"#;

    /// Reads `body` both ways: the fast path alone and `parse_bulk_response`, each checked
    /// against the serde path (which is today's whole parser). Returns whether the fast path
    /// answered, and the answer.
    fn both_ways(body: &str, sent: usize) -> (bool, Result<ParsedItems, String>) {
        let fast = all_created_fast(body.as_bytes(), sent);
        let serde = parse_with_serde(body.as_bytes(), sent);
        if fast {
            assert_eq!(serde, Ok(ParsedItems::AllCreated), "{body}");
        }
        assert_eq!(parse_bulk_response(body.as_bytes(), sent), serde, "{body}");
        (fast, serde)
    }

    #[test]
    fn the_usual_filter_path_response_takes_the_fast_path_with_the_serde_answer() {
        for count in [1, 2, 3, 5_000] {
            let (fast, answer) = both_ways(&usual(CREATED, count), count);
            assert!(fast, "{count} items");
            assert_eq!(answer, Ok(ParsedItems::AllCreated));
        }
        // A trailing newline is still the usual answer.
        let body = usual(CREATED, 3) + "\n";
        assert_eq!(both_ways(&body, 3), (true, Ok(ParsedItems::AllCreated)));
    }

    #[test]
    fn a_response_with_took_takes_the_fast_path_wherever_took_is() {
        let items = [CREATED; 4].join(",");
        for body in [
            format!(r#"{{"took":37,"errors":false,"items":[{items}]}}"#),
            format!(r#"{{"errors":false,"items":[{items}],"took":37}}"#),
            format!(r#"{{"items":[{items}],"took":37,"ingest_took":0,"errors":false}}"#),
        ] {
            assert_eq!(both_ways(&body, 4), (true, Ok(ParsedItems::AllCreated)));
        }
    }

    #[test]
    fn any_item_repeated_takes_the_fast_path() {
        for item in [
            r#"{"index":{"status":201}}"#,
            r#"{"create":{}}"#,
            r#"{"create":{"_index":"flows","status":201}}"#,
            "{ \"create\" : { \"status\" : 201 } }",
        ] {
            assert_eq!(
                both_ways(&usual(item, 7), 7),
                (true, Ok(ParsedItems::AllCreated)),
                "{item}"
            );
        }
    }

    #[test]
    fn items_that_differ_take_the_serde_path_and_keep_their_outcomes() {
        let body = format!(
            r#"{{"errors":true,"items":[{CREATED},{CREATED},{{"create":{{"status":429,"error":{{"type":"es_rejected_execution_exception","reason":"rejected"}}}}}},{CREATED}]}}"#
        );
        let (fast, answer) = both_ways(&body, 4);
        assert!(!fast);
        let o = answer.unwrap().into_vec(4);
        assert_eq!(o[0], ItemOutcome::Created);
        assert_eq!(o[1], ItemOutcome::Created);
        assert!(matches!(&o[2], ItemOutcome::Retry { status: 429, .. }));
        assert_eq!(o[3], ItemOutcome::Created);
        // Items that differ while Elasticsearch says nothing failed: serde counts them.
        let body =
            format!(r#"{{"errors":false,"items":[{CREATED},{{"index":{{"status":200}}}}]}}"#);
        assert_eq!(both_ways(&body, 2), (false, Ok(ParsedItems::AllCreated)));
        // Identical items but `errors` true, null or absent: not the fast path's answer.
        let items = [CREATED; 3].join(",");
        for errors in [r#""errors":true,"#, r#""errors":null,"#, ""] {
            let body = format!(r#"{{{errors}"items":[{items}]}}"#);
            let (fast, answer) = both_ways(&body, 3);
            assert!(!fast, "{body}");
            assert_eq!(answer.unwrap().into_vec(3), vec![ItemOutcome::Created; 3]);
        }
    }

    #[test]
    fn a_short_response_takes_the_serde_path_and_retries_the_missing_items() {
        let (fast, answer) = both_ways(&usual(CREATED, 3), 5);
        assert!(!fast);
        let o = answer.unwrap().into_vec(5);
        assert_eq!(o[..3], vec![ItemOutcome::Created; 3]);
        assert!(
            o[3..]
                .iter()
                .all(|o| matches!(o, ItemOutcome::Retry { status: 0, .. }))
        );
        assert_eq!(o.len(), 5);
    }

    #[test]
    fn more_items_than_sent_take_the_serde_path_and_are_an_error() {
        let (fast, answer) = both_ways(&usual(CREATED, 5), 3);
        assert!(!fast);
        assert_eq!(answer, Err("5 items in the response for 3 sent".into()));
        let (fast, answer) = both_ways(&usual(CREATED, 1), 0);
        assert!(!fast);
        assert!(answer.is_err());
    }

    #[test]
    fn an_items_array_that_is_not_the_top_level_one_takes_the_serde_path() {
        // Inside an item's error (reason text, or an object with an `items` key), the top-level
        // `items` written with a space so that the nested one comes first.
        let body = format!(
            r#"{{"errors":true,"items": [{{"create":{{"status":400,"error":{{"type":"x","reason":"\"items\":[{{\"create\":{{}}}}]","items":[{CREATED}]}}}}}}]}}"#
        );
        let (fast, answer) = both_ways(&body, 1);
        assert!(!fast);
        assert!(matches!(
            &answer.unwrap().into_vec(1)[0],
            ItemOutcome::Reject { status: 400, .. }
        ));
        // A nested `items` with the top-level one empty: one item is missing, not created.
        let body = format!(r#"{{"x":{{"items":[{CREATED}]}},"errors":false,"items":[]}}"#);
        let (fast, answer) = both_ways(&body, 1);
        assert!(!fast);
        assert!(matches!(
            &answer.unwrap().into_vec(1)[0],
            ItemOutcome::Retry { status: 0, .. }
        ));
        // A key `"items` (with a quote), before the real `items`.
        let body = format!(r#"{{"errors":false,"\"items":[{CREATED}],"items":[{CREATED}]}}"#);
        assert_eq!(both_ways(&body, 1), (false, Ok(ParsedItems::AllCreated)));
        // Two `items` (or two `errors`): serde refuses the duplicate, and so the fast path.
        for body in [
            format!(r#"{{"errors":false,"items":[{CREATED}],"items":[{CREATED}]}}"#),
            format!(r#"{{"errors":false,"items":[{CREATED}],"errors":false}}"#),
        ] {
            let (fast, answer) = both_ways(&body, 1);
            assert!(!fast);
            assert!(answer.unwrap_err().contains("duplicate field"), "{body}");
        }
        // Not an object at the top.
        let body = format!(r#"[false,{{"items":[{CREATED}]}}]"#);
        assert!(!both_ways(&body, 1).0);
    }

    #[test]
    fn whitespace_and_pretty_printed_bodies_take_the_serde_path() {
        let usual: Value = serde_json::from_str(&usual(CREATED, 3)).unwrap();
        let pretty = serde_json::to_string_pretty(&usual).unwrap();
        let spaced = format!(
            r#"{{"errors":false,"items":[{}]}}"#,
            [CREATED; 3].join(", ")
        );
        let leading = format!(r#"{{"errors":false,"items":[ {CREATED},{CREATED},{CREATED}]}}"#);
        let trailing = format!(r#"{{"errors":false,"items":[{CREATED},{CREATED},{CREATED} ]}}"#);
        for body in [pretty, spaced, leading, trailing] {
            assert_eq!(
                both_ways(&body, 3),
                (false, Ok(ParsedItems::AllCreated)),
                "{body}"
            );
        }
    }

    #[test]
    fn a_truncated_body_takes_the_serde_path_and_is_an_error() {
        let body = format!(r#"{{"took":5,{}"#, &usual(CREATED, 4)[1..]);
        for cut in 0..body.len() {
            let (fast, answer) = both_ways(&body[..cut], 4);
            assert!(!fast, "{}", &body[..cut]);
            assert!(answer.is_err(), "{}", &body[..cut]);
        }
        // Cut inside an item the fast path would measure: an unfinished object.
        assert!(!all_created_fast(
            br#"{"errors":false,"items":[{"create":{"sta"#,
            1
        ));
        // Junk after the body.
        let (fast, answer) = both_ways(&(usual(CREATED, 2) + "x"), 2);
        assert!(!fast);
        assert!(answer.is_err());
    }

    #[test]
    fn long_and_deeply_nested_items_get_the_same_answer_both_ways() {
        let long = format!(
            r#"{{"create":{{"status":201,"pad":"{}"}}}}"#,
            "p".repeat(5_000)
        );
        assert_eq!(
            both_ways(&usual(&long, 3), 3),
            (true, Ok(ParsedItems::AllCreated))
        );
        // Deeper than serde_json's limit of 128 for a `Value`: an item's content is skipped
        // (IgnoredAny), which counts no depth, both ways.
        let deep = format!(r#"{{"a":{}{}}}"#, "[".repeat(200), "]".repeat(200));
        assert!(serde_json::from_str::<Value>(&deep).is_err());
        assert_eq!(
            both_ways(&usual(&deep, 2), 2),
            (true, Ok(ParsedItems::AllCreated))
        );
    }

    mod fast_path_properties {
        use super::*;
        use proptest::prelude::*;

        const ITEMS: &[&str] = &[
            r#"{"create":{"status":201}}"#,
            r#"{"index":{"status":201}}"#,
            r#"{"create":{}}"#,
            r#"{"create":{"status":429,"error":{"type":"es_rejected_execution_exception","reason":"\"items\":[{}]"}}}"#,
            r#"{"create":{"status":409,"error":{"type":"version_conflict_engine_exception","items":[{"create":{"status":201}}]}}}"#,
            "{ \"create\" : {\"status\":201} }",
            "5",
        ];

        /// A bulk response (maybe malformed) and the number of documents sent.
        fn response() -> impl Strategy<Value = (String, usize)> {
            (
                0..ITEMS.len() - 1,
                // Most responses repeat one item; the others replace some items by others.
                proptest::bool::weighted(0.3),
                proptest::collection::vec(
                    prop_oneof![4 => Just(None), 1 => (0..ITEMS.len()).prop_map(Some)],
                    0..50,
                ),
                proptest::option::of(any::<u32>()),
                any::<bool>(),
                prop_oneof![
                    4 => Just(r#""errors":false,"#),
                    1 => Just(r#""errors":true,"#),
                    1 => Just(r#""errors":null,"#),
                    1 => Just(""),
                ],
                prop_oneof![
                    6 => Just(""),
                    1 => Just(r#""x":{"items":[{"create":{}}]},"#),
                    1 => Just(r#""items":[],"#),
                    1 => Just(r#""\"items":[{}],"#),
                ],
                prop_oneof![9 => Just(","), 1 => Just(", ")],
                prop_oneof![4 => Just(0i64), 1 => -2i64..=2],
                proptest::option::weighted(0.1, any::<prop::sample::Index>()),
            )
                .prop_map(
                    |(base, mixed, items, took, took_first, errors, extra, sep, delta, cut)| {
                        let count = items.len();
                        let items: Vec<&str> = items
                            .into_iter()
                            .map(|other| ITEMS[other.filter(|_| mixed).unwrap_or(base)])
                            .collect();
                        let items = items.join(sep);
                        let took = took.map(|t| format!(r#""took":{t}"#));
                        let mut body = match took {
                            Some(took) if took_first => {
                                format!(r#"{{{took},{extra}{errors}"items":[{items}]}}"#)
                            }
                            Some(took) => {
                                format!(r#"{{{extra}{errors}"items":[{items}],{took}}}"#)
                            }
                            None => format!(r#"{{{extra}{errors}"items":[{items}]}}"#),
                        };
                        if let Some(cut) = cut {
                            body.truncate(cut.index(body.len() + 1));
                        }
                        let sent = (count as i64 + delta).max(0) as usize;
                        (body, sent)
                    },
                )
        }

        proptest! {
            #[test]
            fn the_fast_path_answers_only_what_the_serde_path_answers((body, sent) in response()) {
                let fast = all_created_fast(body.as_bytes(), sent);
                let serde = parse_with_serde(body.as_bytes(), sent);
                if fast {
                    prop_assert_eq!(&serde, &Ok(ParsedItems::AllCreated), "{}", body);
                }
                prop_assert_eq!(parse_bulk_response(body.as_bytes(), sent), serde);
            }
        }
    }

    #[tokio::test]
    async fn sleeping_stops_when_cancelled() {
        let cancel = CancellationToken::new();
        cancel.cancel();
        assert_eq!(
            sleep(Duration::from_secs(3600), &cancel).await,
            Err(Cancelled)
        );
    }
}
