//! The blob client of one source: listing (flat and by `/` level), properties, ranged reads.
//!
//! A [`StorageClient`] is built once per source from its [`ResolvedStorage`]. It wraps an
//! `azure_storage_blob` container client and a raw `azure_core` pipeline (for the listing the
//! SDK lacks) that share the credential policy, a deliberate retry policy and one HTTP
//! connection pool. Every call counts itself in [`StorageStats`]. Errors are
//! [`StorageError`]s naming the blob or prefix and a reason, with SAS signatures redacted.

use crate::config::storage::{RetryConfig, StorageConfig};
use crate::metrics::StorageStats;
use crate::source::{
    credential::{Credential, CredentialError, ResolvedStorage},
    listing::{self, offset_to_chrono},
    shared_key::SharedKeyPolicy,
};
use azure_core::credentials::TokenCredential;
use azure_core::http::{
    ClientOptions, Context, ExponentialRetryOptions, HttpClientOptions, Pipeline, Request,
    RetryOptions, StatusCode, Transport, Url, new_http_client,
    policies::{Policy, PolicyResult, RetryPolicyCount, auth::BearerTokenAuthorizationPolicy},
};
use azure_storage_blob::{
    BlobContainerClient, BlobContainerClientOptions,
    models::{
        BlobClientDownloadOptions, BlobClientGetPropertiesResultHeaders as _,
        BlobContainerClientListBlobsOptions, BlockListType,
    },
};
use bytes::Bytes;
use futures::{Stream, StreamExt as _, TryStreamExt as _};
use std::{fmt, num::NonZero, pin::Pin, sync::Arc};

pub use crate::source::listing::BlobItem;

/// Scope of Entra ID tokens for Azure Storage (valid in every cloud).
const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";

/// The SDK's retry options for `[source.retry]`.
fn retry_options(retry: &RetryConfig) -> RetryOptions {
    if retry.max_tries <= 1 {
        return RetryOptions::none();
    }
    let ms =
        |v: u64| azure_core::time::Duration::milliseconds(i64::try_from(v).unwrap_or(i64::MAX));
    RetryOptions::exponential(ExponentialRetryOptions {
        initial_delay: ms(retry.initial_delay_ms),
        max_retries: retry.max_tries - 1,
        max_total_elapsed: ms(retry.max_elapsed_secs.saturating_mul(1000)),
        max_delay: ms(retry.max_delay_ms),
    })
}

/// The pipeline options every storage client of a source shares (Blob and Queue service):
/// `[source.retry]`, the retry counter, and Shared Key signing for an account key; plus the
/// Entra credential the client itself must install. A SAS travels in the URL instead.
pub(crate) fn client_options(
    resolved: &ResolvedStorage,
    stats: &Arc<StorageStats>,
) -> Result<(ClientOptions, Option<Arc<dyn TokenCredential>>), StorageError> {
    let mut options = ClientOptions {
        retry: retry_options(&resolved.retry),
        ..Default::default()
    };
    options
        .per_try_policies
        .push(Arc::new(RetryCounter(stats.clone())));
    let mut token = None;
    match &resolved.credential {
        Credential::SharedKey { account, key } => {
            let policy = SharedKeyPolicy::new(account, key).map_err(|e| CredentialError {
                field: "auth.account_key".into(),
                reason: e.to_string(),
            })?;
            // Last per-try policy: the signature covers the final headers.
            options.per_try_policies.push(Arc::new(policy));
        }
        Credential::Sas(_) => {}
        Credential::Entra { credential, .. } => token = Some(credential.clone()),
    }
    Ok((options, token))
}

/// A storage request that failed for good (after retries). `target` says what it was about:
/// `blob <name>`, `list <prefix>` or `container <name>`. Never contains a secret.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The configuration could not be turned into a client.
    #[error(transparent)]
    Config(#[from] CredentialError),
    /// The service rejected the credential (HTTP 401/403): wrong key, expired or too weak
    /// SAS, or an identity without the Storage Blob Data Reader role.
    #[error(
        "{target}: authentication rejected (HTTP {status}, {code}); check the account key, SAS token or the identity's role assignment"
    )]
    Auth {
        /// What the request was about.
        target: String,
        /// HTTP status.
        status: u16,
        /// Storage error code, e.g. `AuthenticationFailed`, `AuthorizationPermissionMismatch`.
        code: String,
    },
    /// The blob or container does not exist (HTTP 404).
    #[error("{target}: not found ({code})")]
    NotFound {
        /// What the request was about.
        target: String,
        /// Storage error code, e.g. `BlobNotFound`, `ContainerNotFound`.
        code: String,
    },
    /// A ranged read started at or past the end of the blob (HTTP 416).
    #[error("blob {blob}: range {start}..{end} is not satisfiable (the blob is shorter)")]
    RangeNotSatisfiable {
        /// Blob name.
        blob: String,
        /// Requested start offset.
        start: u64,
        /// Requested end offset (exclusive).
        end: u64,
    },
    /// Any other failure: HTTP error after retries, connection failure, broken stream.
    #[error("{target}: {reason}")]
    Request {
        /// What the request was about.
        target: String,
        /// HTTP status, when there was a response.
        status: Option<u16>,
        /// Why it failed (SAS signatures redacted).
        reason: String,
    },
}

impl StorageError {
    /// True for failures worth trying again on a later poll (throttling, 5xx, network).
    pub fn is_transient(&self) -> bool {
        match self {
            StorageError::Request { status, .. } => {
                status.is_none_or(|s| s == 408 || s == 429 || s >= 500)
            }
            _ => false,
        }
    }

    pub(crate) fn from_azure(target: impl Into<String>, e: azure_core::Error) -> Self {
        let target = target.into();
        let code = match e.kind() {
            azure_core::error::ErrorKind::HttpResponse {
                error_code: Some(c),
                ..
            } => c.clone(),
            _ => "no error code".to_owned(),
        };
        match e.http_status() {
            Some(s) if s == StatusCode::Unauthorized || s == StatusCode::Forbidden => {
                StorageError::Auth {
                    target,
                    status: u16::from(s),
                    code,
                }
            }
            Some(StatusCode::NotFound) => StorageError::NotFound { target, code },
            status => StorageError::Request {
                target,
                status: status.map(u16::from),
                reason: describe(&e),
            },
        }
    }
}

/// The error and its sources in one line, with SAS signatures removed (reqwest errors quote
/// the request URL, which carries the SAS token). HTTP errors are shortened to status, code
/// and the first line of the service's message instead of the whole XML body.
fn describe(e: &azure_core::Error) -> String {
    if let azure_core::error::ErrorKind::HttpResponse {
        status, error_code, ..
    } = e.kind()
    {
        let full = e.to_string();
        let message = full
            .split_once("<Message>")
            .and_then(|(_, rest)| rest.split(['<', '\n']).next())
            .map(str::trim)
            .filter(|m| !m.is_empty());
        let code = error_code.as_deref().unwrap_or("no error code");
        let text = match message {
            Some(m) => format!("HTTP {} {code}: {m}", u16::from(*status)),
            None => format!("HTTP {} {code}", u16::from(*status)),
        };
        return redact_sas(&text);
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    redact_sas(&text)
}

/// Replaces the value of every `sig=` query parameter with `REDACTED`.
pub fn redact_sas(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("sig=") {
        let boundary = i == 0 || matches!(rest.as_bytes()[i - 1], b'?' | b'&' | b';' | b' ');
        out.push_str(&rest[..i + 4]);
        rest = &rest[i + 4..];
        if boundary {
            out.push_str("REDACTED");
            let end = rest
                .find(['&', ' ', ')', '"', '\'', ';', '\n', '>'])
                .unwrap_or(rest.len());
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

/// Result of [`StorageClient::list_hierarchical`]: one level below a prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Sub-prefixes (ending in `/`), in listing (lexicographic) order.
    pub prefixes: Vec<String>,
    /// Blobs directly at this level.
    pub blobs: Vec<BlobItem>,
}

/// A stream of body chunks of a ranged download.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, StorageError>> + Send>>;

/// Blob access for one source (one container).
#[derive(Clone)]
pub struct StorageClient {
    container: Arc<BlobContainerClient>,
    /// Container URL with the SAS query when there is one: never log it.
    container_url: Url,
    display_url: Url,
    container_name: String,
    pipeline: Pipeline,
    api_version: String,
    stats: Arc<StorageStats>,
}

impl fmt::Debug for StorageClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StorageClient")
            .field("container_url", &self.display_url.as_str())
            .finish_non_exhaustive()
    }
}

/// Counts tries after the first (the retry policy marks them in the context).
#[derive(Debug)]
struct RetryCounter(Arc<StorageStats>);

// Policy is an `#[async_trait]` trait; the attribute writes the boxed future for us.
#[async_trait::async_trait]
impl Policy for RetryCounter {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        if ctx.value::<RetryPolicyCount>().is_some_and(|n| **n > 0) {
            StorageStats::add(&self.0.retries, 1);
            tracing::debug!(method = %request.method(), "retrying storage request");
        }
        next[0].send(ctx, request, &next[1..]).await
    }
}

impl StorageClient {
    /// Resolves `config` (reads secrets) and builds the client.
    pub fn from_config(
        config: &StorageConfig,
        stats: Arc<StorageStats>,
    ) -> Result<Self, StorageError> {
        Self::new(&config.resolve()?, stats)
    }

    /// Builds the client from a resolved config. No request is made.
    pub fn new(resolved: &ResolvedStorage, stats: Arc<StorageStats>) -> Result<Self, StorageError> {
        let (mut options, token) = client_options(resolved, &stats)?;
        options.transport = Some(Transport::new(new_http_client(Some(HttpClientOptions {
            // Ranged downloads must see the stored bytes, and the SDK's partitioned download
            // requires decompression off.
            automatic_decompression: false,
        }))));

        let container_url = resolved.container_url();
        let display_url = resolved.container_url_for_display();
        let container_options = BlobContainerClientOptions {
            client_options: options.clone(),
            ..Default::default()
        };
        let api_version = container_options.version.clone();
        let container = BlobContainerClient::new(
            container_url.clone(),
            token.clone(),
            Some(container_options),
        )
        .map_err(|e| StorageError::from_azure(format!("container {display_url}"), e))?;

        let mut own_per_try: Vec<Arc<dyn Policy>> = Vec::new();
        if let Some(credential) = token {
            own_per_try.push(Arc::new(BearerTokenAuthorizationPolicy::new(
                credential,
                [STORAGE_SCOPE],
            )));
        }
        let pipeline = Pipeline::new(
            Some(env!("CARGO_PKG_NAME")),
            Some(env!("CARGO_PKG_VERSION")),
            options,
            Vec::new(),
            own_per_try,
            None,
        );

        Ok(Self {
            container: Arc::new(container),
            container_url,
            display_url,
            container_name: resolved.container.clone(),
            pipeline,
            api_version,
            stats,
        })
    }

    /// The shared request counters.
    pub fn stats(&self) -> &Arc<StorageStats> {
        &self.stats
    }

    /// Container name.
    pub fn container_name(&self) -> &str {
        &self.container_name
    }

    /// Container URL without credentials, for logs.
    pub fn display_url(&self) -> &Url {
        &self.display_url
    }

    /// The SDK container client (same pipeline), for writers and tests.
    pub fn container_client(&self) -> &Arc<BlobContainerClient> {
        &self.container
    }

    /// Lists one level under `prefix` with `delimiter=/`: the sub-prefixes and the blobs
    /// directly there, following every continuation marker. `prefix` should end in `/`
    /// (or be empty for the container root).
    pub async fn list_hierarchical(&self, prefix: &str) -> Result<Listing, StorageError> {
        self.list_hierarchical_paged(prefix, None).await
    }

    /// [`Self::list_hierarchical`] with a page size (`maxresults`, at most 5000; prefixes
    /// count as entries), for tests of paging.
    pub async fn list_hierarchical_paged(
        &self,
        prefix: &str,
        page_size: Option<u32>,
    ) -> Result<Listing, StorageError> {
        let mut listing = Listing::default();
        let mut marker: Option<String> = None;
        loop {
            StorageStats::add(&self.stats.list_requests, 1);
            let page = listing::list_page(
                &self.pipeline,
                &self.container_url,
                &self.api_version,
                prefix,
                Some("/"),
                marker.as_deref(),
                page_size,
            )
            .await
            .map_err(|e| StorageError::from_azure(format!("list {prefix:?}"), e))?;
            StorageStats::add(&self.stats.blobs_listed, page.blobs.len() as u64);
            StorageStats::add(&self.stats.prefixes_listed, page.prefixes.len() as u64);
            listing.prefixes.extend(page.prefixes);
            listing.blobs.extend(page.blobs);
            match page.next_marker {
                Some(m) => marker = Some(m),
                None => return Ok(listing),
            }
        }
    }

    /// Lists every blob whose name starts with `prefix` (all levels), all pages.
    pub async fn list_blobs(&self, prefix: &str) -> Result<Vec<BlobItem>, StorageError> {
        self.list_blobs_paged(prefix, None).await
    }

    /// [`Self::list_blobs`] with a page size (`maxresults`, at most 5000), for tests of paging.
    pub async fn list_blobs_paged(
        &self,
        prefix: &str,
        page_size: Option<u32>,
    ) -> Result<Vec<BlobItem>, StorageError> {
        let target = || format!("list {prefix:?}");
        let options = BlobContainerClientListBlobsOptions {
            prefix: (!prefix.is_empty()).then(|| prefix.to_owned()),
            maxresults: page_size.map(|n| i32::try_from(n).unwrap_or(5000)),
            ..Default::default()
        };
        let mut pages = self
            .container
            .list_blobs(Some(options))
            .map_err(|e| StorageError::from_azure(target(), e))?
            .into_pages();
        let mut out = Vec::new();
        loop {
            // The pager's final `None` makes no request; every `Some` and error made one.
            let page = match pages.try_next().await {
                Ok(Some(page)) => page,
                Ok(None) => break,
                Err(e) => {
                    StorageStats::add(&self.stats.list_requests, 1);
                    return Err(StorageError::from_azure(target(), e));
                }
            };
            StorageStats::add(&self.stats.list_requests, 1);
            let page = page
                .into_model()
                .map_err(|e| StorageError::from_azure(target(), e))?;
            StorageStats::add(&self.stats.blobs_listed, page.blob_items.len() as u64);
            for item in page.blob_items {
                out.push(
                    convert_list_item(item).map_err(|reason| StorageError::Request {
                        target: target(),
                        status: None,
                        reason,
                    })?,
                );
            }
        }
        Ok(out)
    }

    /// Properties of `blob`, or `None` when it does not exist.
    pub async fn properties(&self, blob: &str) -> Result<Option<BlobItem>, StorageError> {
        StorageStats::add(&self.stats.properties_requests, 1);
        let target = || format!("blob {blob:?}");
        let response = match self.container.blob_client(blob).get_properties(None).await {
            Ok(r) => r,
            Err(e) if e.http_status() == Some(StatusCode::NotFound) => return Ok(None),
            Err(e) => return Err(StorageError::from_azure(target(), e)),
        };
        let bad = |what: &str| StorageError::Request {
            target: target(),
            status: None,
            reason: format!("properties response without a valid {what}"),
        };
        let content_length = response
            .content_length()
            .ok()
            .flatten()
            .ok_or_else(|| bad("Content-Length"))?;
        let etag = response.etag().ok().flatten().ok_or_else(|| bad("ETag"))?;
        let last_modified = response
            .last_modified()
            .ok()
            .flatten()
            .ok_or_else(|| bad("Last-Modified"))?;
        Ok(Some(BlobItem {
            name: blob.to_owned(),
            content_length,
            etag: listing::normalize_etag(etag.as_ref()),
            last_modified: offset_to_chrono(last_modified),
        }))
    }

    /// Streams bytes `[start, end_exclusive)` of `blob` with one ranged GET (never more).
    /// When the blob is shorter than `end_exclusive` the stream ends early with what exists;
    /// a `start` at or past the end is [`StorageError::RangeNotSatisfiable`]. An empty range
    /// makes no request. Downloaded bytes are counted as they arrive.
    pub async fn download_range(
        &self,
        blob: &str,
        start: u64,
        end_exclusive: u64,
    ) -> Result<ByteStream, StorageError> {
        if end_exclusive <= start {
            return Ok(Box::pin(futures::stream::empty()));
        }
        let len = end_exclusive - start;
        // One partition as large as the range and no parallelism: the SDK then sends exactly
        // one request and hands its body through as a stream.
        let partition = usize::try_from(len)
            .ok()
            .and_then(NonZero::new)
            .unwrap_or(NonZero::<usize>::MIN);
        let options = BlobClientDownloadOptions {
            range: Some((start..end_exclusive).into()),
            parallel: Some(NonZero::<usize>::MIN),
            partition_size: Some(partition),
            ..Default::default()
        };
        StorageStats::add(&self.stats.download_requests, 1);
        let result = self
            .container
            .blob_client(blob)
            .download(Some(options))
            .await
            .map_err(|e| {
                if e.http_status() == Some(StatusCode::RequestedRangeNotSatisfiable) {
                    StorageError::RangeNotSatisfiable {
                        blob: blob.to_owned(),
                        start,
                        end: end_exclusive,
                    }
                } else {
                    StorageError::from_azure(format!("blob {blob:?}"), e)
                }
            })?;
        let stats = self.stats.clone();
        let name = blob.to_owned();
        let stream = result.body.map(move |chunk| match chunk {
            Ok(bytes) => {
                StorageStats::add(&stats.bytes_downloaded, bytes.len() as u64);
                Ok(bytes)
            }
            Err(e) => Err(StorageError::from_azure(format!("blob {name:?}"), e)),
        });
        Ok(Box::pin(stream))
    }

    /// Sizes of the committed blocks of `blob`, in order (offsets are running sums).
    /// Empty when the blob does not exist.
    pub async fn get_committed_block_sizes(&self, blob: &str) -> Result<Vec<u64>, StorageError> {
        StorageStats::add(&self.stats.block_list_requests, 1);
        let response = match self
            .container
            .blob_client(blob)
            .block_blob_client()
            .get_block_list(BlockListType::Committed, None)
            .await
        {
            Ok(r) => r,
            Err(e) if e.http_status() == Some(StatusCode::NotFound) => return Ok(Vec::new()),
            Err(e) => return Err(StorageError::from_azure(format!("blob {blob:?}"), e)),
        };
        let list = response
            .into_model()
            .map_err(|e| StorageError::from_azure(format!("blob {blob:?}"), e))?;
        Ok(list
            .committed_blocks
            .unwrap_or_default()
            .into_iter()
            .map(|b| u64::try_from(b.size.unwrap_or(0)).unwrap_or(0))
            .collect())
    }
}

fn convert_list_item(item: azure_storage_blob::models::BlobItem) -> Result<BlobItem, String> {
    let name = item.name.ok_or("listing entry without a name")?;
    let props = item
        .properties
        .ok_or_else(|| format!("listing entry {name:?} without properties"))?;
    Ok(BlobItem {
        content_length: props
            .content_length
            .ok_or_else(|| format!("listing entry {name:?} without Content-Length"))?,
        etag: props
            .etag
            .map(|e| listing::normalize_etag(e.as_ref()))
            .ok_or_else(|| format!("listing entry {name:?} without Etag"))?,
        last_modified: props
            .last_modified
            .map(offset_to_chrono)
            .ok_or_else(|| format!("listing entry {name:?} without Last-Modified"))?,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sas_signatures_are_redacted() {
        let text = "error sending request for url (http://h/c/b?sv=2022&sig=abc%2B12&sp=r): refused; sig=zzz";
        let r = redact_sas(text);
        assert!(!r.contains("abc%2B12") && !r.contains("zzz"), "{r}");
        assert!(r.contains("sig=REDACTED&sp=r"), "{r}");
        assert_eq!(redact_sas("design=1"), "design=1");
    }

    #[test]
    fn retry_defaults_are_bounded_and_zero_tries_are_refused_at_resolution() {
        let r = RetryConfig::default();
        assert_eq!(r.max_tries, 4);
        let cfg: StorageConfig = figment::Figment::from(
            <figment::providers::Toml as figment::providers::Format>::string(
                r#"
            account = "flowlogs"
            container = "c"
            retry = { max_tries = 0 }
            [auth]
            method = "sas"
            sas_token = "sv=2024&sig=abc"
            "#,
            ),
        )
        .extract()
        .unwrap();
        let e = cfg.resolve().unwrap_err();
        assert_eq!(e.field, "retry.max_tries", "{e}");
    }

    #[test]
    fn entra_client_builds_without_a_request_and_hides_its_secret() {
        let cfg: StorageConfig = figment::Figment::from(
            <figment::providers::Toml as figment::providers::Format>::string(
                r#"
            account = "flowlogs"
            container = "insights-logs-flowlogflowevent"
            [auth]
            method = "client_secret"
            tenant_id = "00000000-0000-0000-0000-000000000001"
            client_id = "00000000-0000-0000-0000-000000000002"
            client_secret = "not-a-real-secret"
            "#,
            ),
        )
        .extract()
        .unwrap();
        let client = StorageClient::from_config(&cfg, Arc::default()).unwrap();
        assert_eq!(
            client.display_url().as_str(),
            "https://flowlogs.blob.core.windows.net/insights-logs-flowlogflowevent"
        );
        assert!(!format!("{client:?} {cfg:?}").contains("not-a-real-secret"));
    }

    #[test]
    fn stats_deltas() {
        let s = StorageStats::default();
        let a = s.snapshot();
        StorageStats::add(&s.list_requests, 3);
        StorageStats::add(&s.bytes_downloaded, 10);
        let d = s.snapshot().since(&a);
        assert_eq!(d.list_requests, 3);
        assert_eq!(d.bytes_downloaded, 10);
    }
}
