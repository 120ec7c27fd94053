//! The configuration file (`flowlogd.toml`) and its environment overrides, typed and validated
//! at startup: every problem is reported as one line naming the key and where it came from.
//!
//! Precedence: built-in defaults < the TOML file < `FLOWLOGD_…` environment variables
//! (nested keys joined with `__`, e.g. `FLOWLOGD_ELASTICSEARCH__URLS='["http://es:9200"]'`).
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Deserializer};

use crate::index_pattern::IndexPattern;
use crate::secret::Secret;
pub mod document;
pub mod enrich;
pub mod events;
pub mod storage;

use document::{Provenance, Schema};
use storage::{AuthConfig, RetryConfig, StorageConfig};

/// Default location of the configuration file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/flowlogd/flowlogd.toml";

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Flow-log sources: one per storage container (`[[source]]`). At least one is required.
    #[serde(default, rename = "source")]
    pub sources: Vec<SourceConfig>,
    /// The Elasticsearch/OpenSearch output (`[elasticsearch]`). Required.
    pub elasticsearch: ElasticsearchConfig,
    /// Where read progress is kept (`[registry]`).
    #[serde(default)]
    pub registry: RegistryConfig,
    /// Health and metrics endpoint (`[http]`).
    #[serde(default)]
    pub http: HttpConfig,
    /// Logging (`[log]`); the command line's `--log-format`/`--log-level` override it.
    #[serde(default)]
    pub log: LogConfig,
    /// Polling and shutdown behaviour of `flowlogd run` (`[daemon]`).
    #[serde(default)]
    pub daemon: DaemonConfig,
    /// Several instances sharing the work (`[cluster]`).
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// Service tags, GeoIP and ASN lookups (`[enrich]`). Default: all off.
    #[serde(default)]
    pub enrich: enrich::EnrichConfig,
    /// Named address ranges (`[[network]]`): each side of a tuple is named after its most
    /// specific one. Default: none.
    #[serde(default, rename = "network")]
    pub networks: Vec<enrich::NetworkConfig>,
    /// Drop/keep rules applied before encoding (`[[filter]]`). Default: none (every tuple is
    /// indexed).
    #[serde(default, rename = "filter")]
    pub filters: Vec<enrich::FilterRuleConfig>,
}

/// `[cluster]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Static sharding: `"INDEX/COUNT"` (counted from 0, e.g. `"2/5"`) makes this instance read
    /// only the flow-log resources that shard owns by a stable hash of their name, so COUNT
    /// instances with shards 0 to COUNT-1 read every resource exactly once with no
    /// coordination; `"ordinal/COUNT"` takes INDEX from the host name's trailing `-N` (a
    /// Kubernetes StatefulSet pod's ordinal). Each instance keeps its own registry. Default:
    /// none (this instance reads everything).
    #[serde(default, deserialize_with = "de_shard")]
    pub shard: Option<crate::shard::ShardSpec>,
    /// Shared ownership with failover: the container, in each source's storage account (same
    /// credentials, created when missing), holding one ownership blob per flow-log resource.
    /// Instances claim, renew and release those blobs with conditional writes, share the
    /// resources fairly and take over those of a dead instance within `lease_duration`.
    /// Refused together with `shard`. Default: none (this instance reads everything).
    #[serde(default)]
    pub coordination_container: Option<String>,
    /// This instance's name in ownership blobs (letters, digits, `-`, `_`, `.`); must differ
    /// between instances. Default: the host name.
    #[serde(default)]
    pub instance_id: Option<String>,
    /// How long a claim holds without renewal: a dead instance's resources are taken over
    /// after at most this long. Default: `"60s"`.
    #[serde(default = "default_lease_duration", deserialize_with = "de_duration")]
    pub lease_duration: Duration,
    /// How often ownership blobs are listed, leases renewed and free resources claimed; must
    /// be below half of `lease_duration`. Default: `"10s"`.
    #[serde(default = "default_renew_interval", deserialize_with = "de_duration")]
    pub renew_interval: Duration,
    /// Committed offsets are mirrored into the ownership blobs at most this often (a new
    /// owner starts from them; document ids make the bytes re-read since harmless).
    /// Default: `"5s"`.
    #[serde(
        default = "default_checkpoint_interval",
        deserialize_with = "de_duration"
    )]
    pub checkpoint_interval: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            shard: None,
            coordination_container: None,
            instance_id: None,
            lease_duration: default_lease_duration(),
            renew_interval: default_renew_interval(),
            checkpoint_interval: default_checkpoint_interval(),
        }
    }
}

impl ClusterConfig {
    /// The instance id: the configured one, else the host name.
    pub fn instance_id(&self) -> String {
        self.instance_id
            .clone()
            .unwrap_or_else(crate::shard::host_name)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let Some(container) = &self.coordination_container else {
            return Ok(());
        };
        if self.shard.is_some() {
            return Err(ConfigError::key(
                "cluster.coordination_container",
                "cannot be used together with `shard`: choose static sharding or shared ownership",
            ));
        }
        // Azure's container naming rules: 3-63 lower-case letters, digits and single dashes.
        let valid = (3..=63).contains(&container.len())
            && container
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !container.starts_with('-')
            && !container.ends_with('-')
            && !container.contains("--");
        if !valid {
            return Err(ConfigError::key(
                "cluster.coordination_container",
                format!(
                    "{container:?} is not a valid container name (3 to 63 lower-case letters, digits and single dashes)"
                ),
            ));
        }
        let id = self.instance_id();
        if id.is_empty()
            || id.len() > 200
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(ConfigError::key(
                "cluster.instance_id",
                format!(
                    "{id:?} must be non-empty and use only letters, digits, `-`, `_`, `.` (set it when the host name does not)"
                ),
            ));
        }
        if self.lease_duration.is_zero()
            || self.renew_interval.is_zero()
            || self.checkpoint_interval.is_zero()
        {
            return Err(ConfigError::key(
                "cluster.lease_duration",
                "lease_duration, renew_interval and checkpoint_interval must be above zero",
            ));
        }
        // Two renewals per lease: one failed renewal (a storage hiccup) does not lose it.
        if self.renew_interval * 2 >= self.lease_duration {
            return Err(ConfigError::key(
                "cluster.renew_interval",
                format!(
                    "{:?} must be below half of lease_duration ({:?}), so that one failed renewal does not lose the lease",
                    self.renew_interval, self.lease_duration
                ),
            ));
        }
        Ok(())
    }
}

fn de_shard<'de, D: Deserializer<'de>>(d: D) -> Result<Option<crate::shard::ShardSpec>, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map(Some).map_err(serde::de::Error::custom)
}

/// One storage container to ingest (`[[source]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Unique name of the source: part of registry keys, logs and metrics. Changing it makes
    /// flowlogd forget the progress of this source. Required.
    pub name: String,
    /// Storage account name (see `[source.auth]` for when it can be left out). Default: none.
    #[serde(default)]
    pub account: Option<String>,
    /// Cloud DNS suffix: `core.windows.net` (default), `core.usgovcloudapi.net`, `core.chinacloudapi.cn`.
    #[serde(default = "default_endpoint_suffix")]
    pub endpoint_suffix: String,
    /// Explicit blob service URL (Azurite, private endpoints), e.g.
    /// `http://127.0.0.1:10000/devstoreaccount1`. Default: built from `account` and `endpoint_suffix`.
    #[serde(default)]
    pub blob_endpoint: Option<String>,
    /// Container of the flow logs: `insights-logs-flowlogflowevent` (VNet flow logs) or
    /// `insights-logs-networksecuritygroupflowevent` (NSG flow logs). Required.
    pub container: String,
    /// Credentials (`[source.auth]`, `method = "account_key" | "connection_string" | "sas" |
    /// "client_secret" | "managed_identity" | "workload_identity" | "azure_cli"`). Required.
    pub auth: AuthConfig,
    /// Retries of storage requests (`[source.retry]`).
    #[serde(default)]
    pub retry: RetryConfig,
    /// Index name pattern; `%{+…}` formats the tuple's own UTC time with Joda tokens
    /// (`xxxx` ISO week-year, `ww` ISO week, `yyyy`, `MM`, `dd`, `HH`). Default: `flowlogs-%{+xxxx.ww}`.
    #[serde(default = "default_index")]
    pub index: String,
    /// Document layout: `ecs` (default) or `logstash` (the field names of Microsoft's
    /// documented Logstash pipeline, for existing dashboards).
    #[serde(default)]
    pub schema: Schema,
    /// Also write the full ARM ids into every ECS document: `azure.flowlog.resource_id`,
    /// `.target_resource_id`, `.acl_id` (also when it names an NSG, whose name `.nsg` always
    /// holds, or is the platform's all-zero GUID), `.guid`, `.network_watcher` and the flow
    /// log's own `.resource_group`: ~570 bytes a VNet document. The parsed names (subscription,
    /// resource group, NSG, VNet, subnet, NIC, flow log, region) are always written. No effect
    /// on the `logstash` schema. Default: false.
    #[serde(default)]
    pub resource_ids: bool,
    /// Also write the blob path (`log.file.path`; `blobPath` in the `logstash` schema) into
    /// every document: ~225 bytes a document with Azure's blob names. Every document names its
    /// blob by a 16-character id (`azure.flowlog.blob_id`, `blobId`) anyway, which
    /// `on_rewrite = "replace"` deletes by, and the path's parts (resource, hour, MAC) are
    /// fields of their own. Default: false.
    #[serde(default)]
    pub blob_path: bool,
    /// Also write `network.community_id` (Community ID v1, seed 0) into every ECS document, to
    /// join flows with other sensors' (Zeek, Suricata, Elastic Defend): 48 bytes and a SHA-1 a
    /// document, repeating the addresses, ports and protocol. No effect on the `logstash`
    /// schema. Default: false.
    #[serde(default)]
    pub community_id: bool,
    /// Where to start for blobs the registry has no entry for: `resume` (default: from the
    /// registry, unseen blobs from byte 0), `start_over` (ignore stored offsets, re-read
    /// everything in the window; ids make that safe), `start_fresh` (blobs existing at first
    /// sight count as read up to their current length: only new bytes).
    #[serde(default)]
    pub start: StartPolicy,
    /// On first sight, only blobs whose hour is at most this old, as a duration (`"24h"`) or
    /// an RFC 3339 time. Default: `"24h"`. Hours older than this are never listed. A duration
    /// lies between `"0s"` (only the current hour) and `"3650d"`.
    #[serde(default = "default_since")]
    pub since: Since,
    /// Only read a blob once its last-modified time is at least this old; `"0s"` to `"1d"`,
    /// `"0s"` reading it as soon as it is listed. Default: `"0s"`.
    #[serde(default, deserialize_with = "de_duration")]
    pub settle: Duration,
    /// Only blobs whose name starts with this prefix (e.g. `resourceId=/SUBSCRIPTIONS/…`). Default: none.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Only resources whose path (the part of the blob name before `/y=`) contains one of these
    /// strings, compared case-insensitively: subscription ids, resource groups, NSG or flow-log
    /// names. Default: all.
    #[serde(default)]
    pub resource_filter: Vec<String>,
    /// How often resource prefixes (new NSGs and flow logs) are rediscovered; `"1s"` to `"7d"`.
    /// Default: `"15m"`.
    #[serde(
        default = "default_discovery_interval",
        deserialize_with = "de_duration"
    )]
    pub discovery_interval: Duration,
    /// A blob is finished (never listed again) when its hour ended more than this long ago
    /// and everything in it was read; `"1s"` to `"7d"`. Default: `"90m"`.
    #[serde(default = "default_finish_after", deserialize_with = "de_duration")]
    pub finish_after: Duration,
    /// Registry entries of deleted blobs (retention), and of finished blobs not touched since,
    /// are forgotten after this long, so the registry holds a bounded window, not all history.
    /// `"1s"` to `"3650d"`. Default: `"7d"`.
    #[serde(
        default = "default_forget_gone_after",
        deserialize_with = "de_duration"
    )]
    pub forget_gone_after: Duration,
    /// What to do with a blob rewritten with other content (shorter than what was read, or
    /// changed before the stored offset; Network Watcher only appends, so this is a blob
    /// deleted and written again): `"replace"` (default) deletes the documents indexed from
    /// it (by `log.file.path`, `blobPath` in the `logstash` schema) and reads it again from 0,
    /// so the index holds what the blob holds; `"reread"` only reads it again from 0, keeping
    /// documents of the old content (for users without the `delete` privilege).
    #[serde(default)]
    pub on_rewrite: RewritePolicy,
    /// Largest record accepted, in bytes, 1024 to 1073741824 (1 GiB); a larger one is
    /// dead-lettered as malformed. Each blob being read holds its current record whole, so
    /// memory grows by up to `read_concurrency` times this (invariant 6); its documents are
    /// streamed in chunks, whatever its number of tuples. Default: 16777216 (16 MiB).
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
    /// Event-driven reading from a Storage Queue of Event Grid events (`[source.events]`).
    /// Default: none (the container is listed every `[daemon] interval`).
    #[serde(default)]
    pub events: Option<events::EventsConfig>,
}

impl SourceConfig {
    /// The storage part of this source, for the blob client.
    pub fn storage(&self) -> StorageConfig {
        StorageConfig {
            account: self.account.clone(),
            endpoint_suffix: self.endpoint_suffix.clone(),
            blob_endpoint: self.blob_endpoint.clone(),
            container: self.container.clone(),
            auth: self.auth.clone(),
            retry: self.retry.clone(),
        }
    }

    /// The provenance fields this source's documents carry (`resource_ids`, `blob_path`).
    pub fn provenance(&self) -> Provenance {
        Provenance {
            resource_ids: self.resource_ids,
            blob_path: self.blob_path,
        }
    }

    /// The parsed index pattern (validated at load time).
    pub fn index_pattern(&self) -> Result<IndexPattern, ConfigError> {
        IndexPattern::parse(&self.index)
            .map_err(|e| ConfigError::key(format!("source.{}.index", self.name), e.to_string()))
    }
}

/// See [`SourceConfig::start`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartPolicy {
    #[default]
    Resume,
    StartOver,
    StartFresh,
}

/// See [`SourceConfig::on_rewrite`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RewritePolicy {
    #[default]
    Replace,
    Reread,
}

/// See [`SourceConfig::since`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// This long before now.
    Ago(Duration),
    /// This moment (epoch seconds).
    At(i64),
}

impl Since {
    /// The moment, in epoch seconds, given the current time.
    pub fn resolve(self, now_secs: i64) -> i64 {
        match self {
            Since::Ago(d) => now_secs - d.as_secs() as i64,
            Since::At(t) => t,
        }
    }
}

impl<'de> Deserialize<'de> for Since {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if let Ok(t) = chrono::DateTime::parse_from_rfc3339(&text) {
            return Ok(Since::At(t.timestamp()));
        }
        parse_duration(&text).map(Since::Ago).map_err(|e| {
            serde::de::Error::custom(format!(
                "{e}; or an RFC 3339 time like 2026-11-20T00:00:00Z"
            ))
        })
    }
}

/// The Elasticsearch or OpenSearch output (`[elasticsearch]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticsearchConfig {
    /// Node URLs; requests go round-robin. Default: `["http://127.0.0.1:9200"]`.
    #[serde(default = "default_es_urls")]
    pub urls: Vec<String>,
    /// Elastic Cloud id (instead of `urls`). Default: none.
    #[serde(default)]
    pub cloud_id: Option<String>,
    /// Basic auth user. Default: none.
    #[serde(default)]
    pub username: Option<String>,
    /// Basic auth password, inline / `password_env` / `password_file`. Default: none.
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// API key (the base64 `id:key` form Elasticsearch returns as `encoded`), inline /
    /// `api_key_env` / `api_key_file`. Default: none.
    #[serde(default)]
    pub api_key: Option<Secret>,
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// Bearer token, inline / `bearer_token_env` / `bearer_token_file`. Default: none.
    #[serde(default)]
    pub bearer_token: Option<Secret>,
    #[serde(default)]
    pub bearer_token_env: Option<String>,
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// PEM file of the CA that signed the cluster's certificate. Default: system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Skip TLS certificate verification. Default: false; `true` logs a warning at startup.
    #[serde(default)]
    pub insecure: bool,
    /// Timeout of one HTTP request; `"1s"` to `"1h"`. Default: `"60s"`.
    #[serde(default = "default_request_timeout", deserialize_with = "de_duration")]
    pub request_timeout: Duration,
    /// Largest number of documents in one bulk request; 1 to 100000. Default: 5000.
    #[serde(default = "default_batch_max_docs")]
    pub batch_max_docs: usize,
    /// Largest bulk request body in bytes; 1024 to 104857600 (100 MiB, the engines' default
    /// `http.max_content_length`). Default: 10485760 (10 MiB).
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: usize,
    /// A partly filled batch is sent after this long; `"10ms"` to `"1h"`. Default: `"1s"`.
    #[serde(default = "default_flush_interval", deserialize_with = "de_duration")]
    pub flush_interval: Duration,
    /// Bulk requests in flight at once; 1 to 256. Default: 2.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// First retry delay of failed requests and items (429, 5xx); doubled each try, with
    /// jitter; `"1ms"` to `"1h"`. Default: `"500ms"`.
    #[serde(default = "default_retry_initial", deserialize_with = "de_duration")]
    pub retry_initial_backoff: Duration,
    /// Longest retry delay; whole-request failures are retried forever at this pace; from
    /// `retry_initial_backoff` to `"1h"`. Default: `"60s"`.
    #[serde(default = "default_retry_max", deserialize_with = "de_duration")]
    pub retry_max_backoff: Duration,
    /// How long one document may keep failing with a 5xx (or another retryable status except
    /// 429) while the cluster answers: past it, the document is dead-lettered with its last
    /// error, so that a broken shard cannot pin its blob and a delivery permit for ever. 429
    /// (backpressure) is always retried. `"1s"` to `"7d"`. Default: `"10m"`.
    #[serde(
        default = "default_item_retry_timeout",
        deserialize_with = "de_duration"
    )]
    pub item_retry_timeout: Duration,
    /// Documents Elasticsearch rejects (mapping errors, other 4xx) are appended here as NDJSON
    /// with the reason, blob and offset. Default: `dead-letter.ndjson` beside the registry.
    #[serde(default)]
    pub dead_letter_path: Option<PathBuf>,
    /// Install a composable index template for each source's index pattern at startup. Default: true.
    #[serde(default = "default_true")]
    pub install_template: bool,
    /// Shards per index in the template; 1 to 1024. Default: 1.
    #[serde(default = "default_one")]
    pub number_of_shards: u32,
    /// Replicas per index in the template; 0 (none, for a single node) to 100. Default: 1.
    #[serde(default = "default_one")]
    pub number_of_replicas: u32,
    /// `index.codec` of the installed templates: `best_compression` (default; DEFLATE, ~20% less
    /// disk than LZ4 for flowlogd's documents), `default` (the engine's LZ4), or another codec
    /// the cluster knows (`zstd` on OpenSearch with its custom-codecs plugin).
    #[serde(default = "default_index_codec")]
    pub index_codec: String,
    /// Write to data streams instead of dated indices. Refused when true (see
    /// [`Config::validate`]): data streams cannot keep every tuple exactly once across a
    /// rollover. Kept as a key so that a config asking for it gets that reason, not "unknown
    /// key". Default: false.
    #[serde(default)]
    pub data_stream: bool,
    /// Delete indices after this age through an ILM policy (Elasticsearch) or an ISM policy
    /// (OpenSearch with the index-management plugin); skipped with a log line where neither
    /// exists; `"1h"` to `"3650d"`. Default: none (keep forever).
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub delete_after: Option<Duration>,
}

/// The index codec of the templates unless configured otherwise: DEFLATE on stored fields,
/// ~20% less disk than the default LZ4 for flowlogd's documents, on Elasticsearch and
/// OpenSearch alike. Here rather than in `sink/template.rs` so that config imports nothing
/// from the sink (issue 10 item 1).
pub const DEFAULT_CODEC: &str = "best_compression";

fn default_index_codec() -> String {
    DEFAULT_CODEC.to_owned()
}

/// `[registry]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Directory of the sled database holding per-blob offsets; must not be empty. Default:
    /// `/var/lib/flowlogd/registry` (systemd `StateDirectory=flowlogd`).
    #[serde(default = "default_registry_path")]
    pub path: PathBuf,
}

/// `[http]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of `/healthz`, `/readyz` and `/metrics` (`ip:port` or `host:port`); empty
    /// disables the listener. Default: `127.0.0.1:9108`.
    #[serde(default = "default_listen")]
    pub listen: String,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Filter in tracing's `EnvFilter` syntax, e.g. `info` or `flowlogd=debug,info`; checked
    /// at startup. Default: `info`.
    #[serde(default = "default_log_level")]
    pub level: String,
    /// `text` (default) or `json`.
    #[serde(default = "default_log_format")]
    pub format: String,
}

/// `[daemon]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Time between polls of every source; `"100ms"` to `"1d"`. Default: `"60s"`.
    #[serde(default = "default_interval", deserialize_with = "de_duration")]
    pub interval: Duration,
    /// On SIGTERM/SIGINT, in-flight work is drained for at most this long; `"100ms"` to `"1h"`.
    /// Default: `"30s"`.
    #[serde(default = "default_shutdown_timeout", deserialize_with = "de_duration")]
    pub shutdown_timeout: Duration,
    /// Blobs read at once per source; 1 to 64. Default: 4.
    #[serde(default = "default_read_concurrency")]
    pub read_concurrency: usize,
    /// Send systemd readiness (`READY=1`) and watchdog notifications when `NOTIFY_SOCKET` is set. Default: true.
    #[serde(default = "default_true")]
    pub sd_notify: bool,
}

macro_rules! default_fns {
    ($($name:ident: $ty:ty = $value:expr;)*) => { $(fn $name() -> $ty { $value })* };
}
default_fns! {
    default_endpoint_suffix: String = storage::DEFAULT_ENDPOINT_SUFFIX.to_owned();
    default_index: String = "flowlogs-%{+xxxx.ww}".to_owned();
    default_since: Since = Since::Ago(Duration::from_secs(24 * 3600));
    default_discovery_interval: Duration = Duration::from_secs(15 * 60);
    default_lease_duration: Duration = Duration::from_secs(60);
    default_renew_interval: Duration = Duration::from_secs(10);
    default_checkpoint_interval: Duration = Duration::from_secs(5);
    default_finish_after: Duration = Duration::from_secs(90 * 60);
    default_forget_gone_after: Duration = Duration::from_secs(7 * 24 * 3600);
    default_max_record_bytes: usize = crate::flowlog::envelope::DEFAULT_MAX_RECORD_LEN;
    default_es_urls: Vec<String> = vec!["http://127.0.0.1:9200".to_owned()];
    default_request_timeout: Duration = Duration::from_secs(60);
    default_batch_max_docs: usize = 5000;
    default_batch_max_bytes: usize = 10 * 1024 * 1024;
    default_flush_interval: Duration = Duration::from_secs(1);
    default_max_in_flight: usize = 2;
    default_retry_initial: Duration = Duration::from_millis(500);
    default_retry_max: Duration = Duration::from_secs(60);
    default_item_retry_timeout: Duration = Duration::from_secs(600);
    default_true: bool = true;
    default_one: u32 = 1;
    default_registry_path: PathBuf = PathBuf::from("/var/lib/flowlogd/registry");
    default_listen: String = "127.0.0.1:9108".to_owned();
    default_log_level: String = "info".to_owned();
    default_log_format: String = "text".to_owned();
    default_interval: Duration = Duration::from_secs(60);
    default_shutdown_timeout: Duration = Duration::from_secs(30);
    default_read_concurrency: usize = 4;
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            path: default_registry_path(),
        }
    }
}
impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_listen(),
        }
    }
}
impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: default_log_level(),
            format: default_log_format(),
        }
    }
}
impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            interval: default_interval(),
            shutdown_timeout: default_shutdown_timeout(),
            read_concurrency: default_read_concurrency(),
            sd_notify: true,
        }
    }
}

/// A configuration that cannot be used, as one line for the operator.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ConfigError {
    message: String,
    /// The figment key path whose value is at fault, to say where it was set.
    lookup: Option<String>,
}

impl ConfigError {
    fn new(message: impl Into<String>) -> Self {
        ConfigError {
            message: message.into(),
            lookup: None,
        }
    }

    fn key(key: impl fmt::Display, reason: impl fmt::Display) -> Self {
        let key = key.to_string();
        // `source.<name>.…` is a key of one `[[source]]` table: figment only knows the array.
        let lookup = if key.starts_with("source.") {
            "source".to_owned()
        } else {
            key.clone()
        };
        ConfigError {
            message: format!("config key `{key}`: {reason}"),
            lookup: Some(lookup),
        }
    }

    /// Appends where the offending value came from (the file, or the environment variable).
    fn with_origin(mut self, figment: &Figment) -> Self {
        let Some(lookup) = &self.lookup else {
            return self;
        };
        let Some(metadata) = figment.find_metadata(lookup) else {
            return self;
        };
        let origin = match &metadata.source {
            Some(figment::Source::File(path)) => format!("in {}", path.display()),
            _ if metadata.name.contains("environment") => format!(
                "from environment variable {ENV_PREFIX}{}",
                lookup.to_ascii_uppercase().replace('.', "__")
            ),
            _ => return self,
        };
        self.message = format!("{} ({origin})", self.message);
        self
    }
}

/// Prefix of the environment variables that override configuration keys.
const ENV_PREFIX: &str = "FLOWLOGD_";

/// `FLOWLOGD_` variables that are no config overrides and are accepted as such:
/// `FLOWLOGD_CONFIG` (the command line's `--config`) and the variables of this project's own
/// scripts and tests (`scripts/`, `tests/`), which they export into every process they start,
/// this binary included. The binary never reads the latter. tests/cli_config.rs checks that
/// every such name used by the scripts and tests is covered here.
pub const NON_CONFIG_VARIABLES: &[&str] = &[
    "FLOWLOGD_CONFIG",
    "FLOWLOGD_BIN",
    "FLOWLOGD_E2E_BIN",
    "FLOWLOGD_ROOT",
    "FLOWLOGD_RUN_DIR",
    "FLOWLOGD_SERVICE_START_TIMEOUT",
    "FLOWLOGD_SMOKE_CHILD",
];

/// Prefixes of the test tooling's `FLOWLOGD_` variables (local Azurite and OpenSearch, test
/// settings), accepted like [`NON_CONFIG_VARIABLES`].
pub const NON_CONFIG_PREFIXES: &[&str] = &[
    "FLOWLOGD_AZURITE_",
    "FLOWLOGD_OPENSEARCH_",
    "FLOWLOGD_TEST_",
];

/// Config sections, to suggest the `__` spelling of a `FLOWLOGD_DAEMON_INTERVAL`.
const SECTIONS: &[&str] = &[
    "SOURCE",
    "ELASTICSEARCH",
    "REGISTRY",
    "HTTP",
    "LOG",
    "DAEMON",
    "CLUSTER",
    "ENRICH",
    "NETWORK",
    "FILTER",
];

/// Refuses `FLOWLOGD_` environment variables that are neither a config override
/// (`FLOWLOGD_<SECTION>__<KEY>`, whose key figment then checks) nor one of
/// [`NON_CONFIG_VARIABLES`] / [`NON_CONFIG_PREFIXES`]: a misspelt override
/// (`FLOWLOGD_DAEMON_INTERVAL`) must stop startup, not be ignored.
pub fn check_environment_names<I, S>(names: I) -> Result<(), ConfigError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut problems = Vec::new();
    for name in names {
        let name = name.as_ref();
        let Some(text) = name.to_str() else {
            let lossy = name.to_string_lossy();
            if lossy.to_ascii_uppercase().starts_with(ENV_PREFIX) {
                problems.push(format!(
                    "environment variable `{lossy}` has a name that is not valid UTF-8"
                ));
            }
            continue;
        };
        let upper = text.to_ascii_uppercase();
        let Some(rest) = upper.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if NON_CONFIG_VARIABLES.contains(&upper.as_str())
            || NON_CONFIG_PREFIXES.iter().any(|p| upper.starts_with(p))
        {
            continue;
        }
        if rest.contains("__") {
            if rest.split("__").any(str::is_empty) {
                problems.push(format!(
                    "environment variable `{text}`: an empty key between `__` separators"
                ));
            }
            continue;
        }
        let hint = SECTIONS
            .iter()
            .find_map(|section| {
                rest.strip_prefix(section)
                    .and_then(|key| key.strip_prefix('_'))
                    .filter(|key| !key.is_empty())
                    .map(|key| format!(" (did you mean {ENV_PREFIX}{section}__{key}?)"))
            })
            .unwrap_or_default();
        problems.push(format!(
            "environment variable `{text}` is not a config override{hint}: overrides are named \
             {ENV_PREFIX}<SECTION>__<KEY>, two underscores between section and key (e.g. \
             {ENV_PREFIX}DAEMON__INTERVAL=30s); unset it, and name secret variables without \
             the {ENV_PREFIX} prefix"
        ));
    }
    problems.sort();
    match problems.is_empty() {
        true => Ok(()),
        false => Err(ConfigError::new(problems.join("; "))),
    }
}

/// figment's own message, with two changes. A value from the environment: figment names it
/// as `key "DAEMON.INTERVAL" in FLOWLOGD_ environment variable(s)`; say which variable. A value
/// of the wrong type or out of range: figment quotes it, and the key may be a secret written
/// without quotes (`password = 20240101`, invariant 7), so say only what kind of value it was.
fn describe_figment_error(mut e: figment::Error) -> String {
    use figment::error::Kind;
    e.kind = match e.kind {
        Kind::InvalidType(actual, expected) => Kind::Message(format!(
            "invalid type: found {}, expected {expected}",
            kind_of_value(&actual)
        )),
        Kind::InvalidValue(actual, expected) => Kind::Message(format!(
            "invalid value: found {}, expected {expected}",
            kind_of_value(&actual)
        )),
        kind => kind,
    };
    let from_env = e
        .metadata
        .as_ref()
        .is_some_and(|m| m.name.contains("environment"));
    if from_env && !e.path.is_empty() {
        let var = format!("{ENV_PREFIX}{}", e.path.join("__").to_ascii_uppercase());
        return format!("environment variable {var}: {}", e.kind);
    }
    e.to_string()
}

/// What kind of value figment found, without the value itself.
fn kind_of_value(actual: &figment::error::Actual) -> &'static str {
    use figment::error::Actual;
    match actual {
        Actual::Bool(_) => "a boolean",
        Actual::Unsigned(_) | Actual::Signed(_) => "an integer",
        Actual::Float(_) => "a float",
        Actual::Char(_) | Actual::Str(_) => "a string",
        Actual::Bytes(_) => "bytes",
        Actual::Unit | Actual::Option => "no value",
        Actual::Seq => "an array",
        Actual::Map | Actual::StructVariant => "a table",
        _ => "another kind of value",
    }
}

/// Checks the TOML syntax of `text` (the file at `origin`) before figment parses it, because
/// the toml crate's syntax error quotes the source line, and that line may hold a secret
/// (invariant 7): say where and what, never the line.
fn check_toml_syntax(text: &str, origin: &str) -> Result<(), ConfigError> {
    let Err(e) = text.parse::<toml::Table>() else {
        return Ok(());
    };
    let message = e.message().trim().replace('\n', "; ");
    let Some(span) = e.span() else {
        return Err(ConfigError::new(format!(
            "{origin}: TOML syntax error: {message}"
        )));
    };
    let before = &text.as_bytes()[..span.start.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    Err(ConfigError::new(format!(
        "{origin}: TOML syntax error at line {line}, column {column}: {message}"
    )))
}

/// Largest configuration file read (a file this large is not a configuration).
const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;

impl Config {
    /// Loads `path` (must exist) with `FLOWLOGD_…` environment overrides and validates it.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let metadata = std::fs::metadata(path).map_err(|e| {
            ConfigError::new(match e.kind() {
                std::io::ErrorKind::NotFound => format!(
                    "config file {} not found (pass --config PATH; see config/flowlogd.example.toml)",
                    path.display()
                ),
                kind => format!("config file {}: cannot read: {kind}", path.display()),
            })
        })?;
        let kind = metadata.file_type();
        if kind.is_dir() {
            return Err(ConfigError::new(format!(
                "config file {} is a directory (pass --config PATH of a TOML file; see \
                 config/flowlogd.example.toml)",
                path.display()
            )));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileTypeExt as _;
            if kind.is_char_device() || kind.is_block_device() || kind.is_socket() {
                return Err(ConfigError::new(format!(
                    "config file {} is a device or socket, not a file",
                    path.display()
                )));
            }
        }
        if metadata.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::new(format!(
                "config file {} is larger than {} MiB: not a configuration file",
                path.display(),
                MAX_CONFIG_BYTES >> 20
            )));
        }
        // Every other `FLOWLOGD_` variable (the command line's `FLOWLOGD_CONFIG`, the test
        // tooling's) is checked by name here, so a misspelt override stops startup.
        check_environment_names(std::env::vars_os().map(|(name, _)| name))?;
        let env = Env::prefixed(ENV_PREFIX)
            .filter(|key| key.as_str().contains("__"))
            .split("__");
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(format!(
                "config file {}: cannot read: {}",
                path.display(),
                e.kind()
            ))
        })?;
        check_toml_syntax(&text, &format!("config file {}", path.display()))?;
        let figment = Figment::new().merge(Toml::file(path)).merge(env);
        Self::from_figment(figment)
    }

    /// Parses a TOML string (tests, `flowlogd check`), without environment overrides.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        check_toml_syntax(text, "config")?;
        Self::from_figment(Figment::new().merge(Toml::string(text)))
    }

    fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let config: Config = figment.extract().map_err(|e| {
            // figment names the key path and the file or environment variable it came from.
            let errors: Vec<String> = e.into_iter().map(describe_figment_error).collect();
            ConfigError::new(errors.join("; "))
        })?;
        config.validate().map_err(|e| e.with_origin(&figment))?;
        Ok(config)
    }

    /// Checks what serde cannot: names, patterns, ranges. Secrets are resolved later, by the
    /// components that use them, with errors naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.sources.is_empty() {
            return Err(ConfigError::new(
                "config: at least one [[source]] is required",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for s in &self.sources {
            if s.name.is_empty()
                || !s
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(ConfigError::key(
                    "source.name",
                    format!(
                        "{:?} must be non-empty and use only letters, digits, `-`, `_`, `.`",
                        s.name
                    ),
                ));
            }
            if !seen.insert(s.name.as_str()) {
                return Err(ConfigError::key(
                    "source.name",
                    format!("{:?} is used twice", s.name),
                ));
            }
            s.index_pattern()?;
            s.validate_ranges()?;
        }
        let es = &self.elasticsearch;
        if es.data_stream {
            // Invariant 2 (every tuple once) rests on `create` refusing an id that exists. A data
            // stream checks ids only within its current write index: after a rollover, a re-read
            // (crash, restart, rewritten blob) would index every tuple a second time. Shown on a
            // real node by tests/engine_lifecycle.rs.
            return Err(ConfigError::key(
                "elasticsearch.data_stream",
                "`data_stream = true` is refused: after a rollover a data stream accepts a document id again \
                 (ids are unique only within one backing index), so a re-read after a crash, a restart or \
                 a rewritten blob would index every tuple twice. Use a dated index pattern such as \
                 `vnet-flow-logs-%{+xxxx.ww}` with `delete_after` for retention",
            ));
        }
        if es.index_codec.is_empty() {
            return Err(ConfigError::key(
                "elasticsearch.index_codec",
                "must not be empty (`default` keeps the engine's own codec)",
            ));
        }
        if es.urls.is_empty() && es.cloud_id.is_none() {
            return Err(ConfigError::key(
                "elasticsearch.urls",
                "set at least one URL or `cloud_id`",
            ));
        }
        es.validate_ranges()?;
        self.daemon.validate_ranges()?;
        if self.registry.path.as_os_str().is_empty() {
            return Err(ConfigError::key(
                "registry.path",
                "must not be empty (it would put the registry database in the working directory); \
                 e.g. \"/var/lib/flowlogd/registry\"",
            ));
        }
        check_listen(&self.http.listen)?;
        check_log_filter(&self.log.level)
            .map_err(|reason| ConfigError::key("log.level", reason))?;
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(ConfigError::key(
                "log.format",
                format!("{:?}: expected \"text\" or \"json\"", self.log.format),
            ));
        }
        enrich::validate(&self.enrich, &self.networks, &self.filters)?;
        self.cluster.validate()?;
        Ok(())
    }

    /// Where rejected documents go: the configured path, or beside the registry.
    pub fn dead_letter_path(&self) -> PathBuf {
        self.elasticsearch
            .dead_letter_path
            .clone()
            .unwrap_or_else(|| {
                self.registry
                    .path
                    .parent()
                    .unwrap_or(Path::new("."))
                    .join("dead-letter.ndjson")
            })
    }
}

// The ranges of numeric options. Each bound is also in the option's `///` doc and in
// config/flowlogd.example.toml. Lower bounds keep timers and semaphores away from values that
// panic or spin (tokio's `interval` panics on zero, its semaphore above `MAX_PERMITS`); upper
// bounds keep durations far from the `as i64` millisecond arithmetic overflowing and counts
// within what the cluster or the machine can take.
const MS: Duration = Duration::from_millis(1);
const SECOND: Duration = Duration::from_secs(1);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// `key` must lie in `min..=max`; the message gives the range and the value.
fn check_duration(
    key: impl fmt::Display,
    value: Duration,
    min: Duration,
    max: Duration,
) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::key(
            key,
            format!(
                "{} is out of range: must be between {} and {}",
                show_duration(value),
                show_duration(min),
                show_duration(max)
            ),
        ));
    }
    Ok(())
}

/// `key` must lie in `min..=max`.
fn check_count(key: impl fmt::Display, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::key(
            key,
            format!("{value} is out of range: must be between {min} and {max}"),
        ));
    }
    Ok(())
}

/// `"250ms"`, `"90s"`, `"7d"`: the largest unit that divides the value, as the config writes it.
fn show_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    if d.subsec_nanos() != 0 {
        return format!("{}ms", d.as_millis());
    }
    let secs = d.as_secs();
    for (unit, len) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if secs.is_multiple_of(len) {
            return format!("{}{unit}", secs / len);
        }
    }
    format!("{secs}s")
}

/// `[http] listen`: empty (no listener), an `ip:port`, or a `host:port` resolved when bound.
fn check_listen(listen: &str) -> Result<(), ConfigError> {
    if listen.is_empty() || listen.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(());
    }
    let named_host = listen.rsplit_once(':').is_some_and(|(host, port)| {
        port.parse::<u16>().is_ok()
            && !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    });
    if named_host {
        return Ok(());
    }
    Err(ConfigError::key(
        "http.listen",
        format!(
            "{listen:?} is not an address: expected host:port such as \"127.0.0.1:9108\", \
             \"[::1]:9108\" or \"localhost:9108\" (\"\" disables the listener)"
        ),
    ))
}

/// Whether `filter` is a tracing `EnvFilter` (`info`, `flowlogd=debug,info`); the error says
/// why not, for the caller to attach to the key or the command-line flag.
pub fn check_log_filter(filter: &str) -> Result<(), String> {
    tracing_subscriber::EnvFilter::try_new(filter)
        .map(drop)
        .map_err(|e| {
            format!(
                "{filter:?} is not a log filter ({e}): expected e.g. \"info\" or \"flowlogd=debug,info\""
            )
        })
}

impl SourceConfig {
    fn validate_ranges(&self) -> Result<(), ConfigError> {
        let key = |k: &str| format!("source.{}.{k}", self.name);
        // 0 reads a blob as soon as it is listed.
        check_duration(key("settle"), self.settle, Duration::ZERO, DAY)?;
        check_duration(
            key("discovery_interval"),
            self.discovery_interval,
            SECOND,
            7 * DAY,
        )?;
        check_duration(key("finish_after"), self.finish_after, SECOND, 7 * DAY)?;
        check_duration(
            key("forget_gone_after"),
            self.forget_gone_after,
            SECOND,
            3650 * DAY,
        )?;
        if let Since::Ago(ago) = self.since {
            // 0: only the current hour on first sight.
            check_duration(key("since"), ago, Duration::ZERO, 3650 * DAY)?;
        }
        check_count(
            key("max_record_bytes"),
            self.max_record_bytes as u64,
            MIN_RECORD_BYTES,
            MAX_RECORD_BYTES,
        )?;
        let retry = &self.retry;
        check_count(
            key("retry.max_tries"),
            u64::from(retry.max_tries),
            1,
            MAX_STORAGE_TRIES,
        )?;
        check_count(
            key("retry.initial_delay_ms"),
            retry.initial_delay_ms,
            1,
            MAX_STORAGE_DELAY_MS,
        )?;
        check_count(
            key("retry.max_delay_ms"),
            retry.max_delay_ms,
            retry.initial_delay_ms.max(1),
            MAX_STORAGE_DELAY_MS,
        )
        .map_err(|_| {
            ConfigError::key(
                key("retry.max_delay_ms"),
                format!(
                    "{} is out of range: must be between retry.initial_delay_ms ({}) and {MAX_STORAGE_DELAY_MS}",
                    retry.max_delay_ms, retry.initial_delay_ms
                ),
            )
        })?;
        check_count(
            key("retry.max_elapsed_secs"),
            retry.max_elapsed_secs,
            1,
            86_400,
        )?;
        if let Some(events) = &self.events {
            events.validate(&key("events"))?;
        }
        Ok(())
    }
}

/// See [`SourceConfig::max_record_bytes`].
const MIN_RECORD_BYTES: u64 = 1024;
const MAX_RECORD_BYTES: u64 = 1 << 30;
/// See [`RetryConfig`]: attempts per storage request, and the longest delay (1 hour).
const MAX_STORAGE_TRIES: u64 = 100;
const MAX_STORAGE_DELAY_MS: u64 = 3_600_000;
/// Bulk requests in flight at once: far below tokio's semaphore limit, and a channel of twice
/// as many chunks.
pub const MAX_IN_FLIGHT: usize = 256;

impl ElasticsearchConfig {
    fn validate_ranges(&self) -> Result<(), ConfigError> {
        let key = |k: &str| format!("elasticsearch.{k}");
        check_duration(key("request_timeout"), self.request_timeout, SECOND, HOUR)?;
        check_count(
            key("batch_max_docs"),
            self.batch_max_docs as u64,
            1,
            100_000,
        )?;
        // The engines refuse bodies above http.max_content_length (100 MiB by default).
        check_count(
            key("batch_max_bytes"),
            self.batch_max_bytes as u64,
            1024,
            100 << 20,
        )?;
        check_duration(key("flush_interval"), self.flush_interval, 10 * MS, HOUR)?;
        check_count(
            key("max_in_flight"),
            self.max_in_flight as u64,
            1,
            MAX_IN_FLIGHT as u64,
        )?;
        check_duration(
            key("retry_initial_backoff"),
            self.retry_initial_backoff,
            MS,
            HOUR,
        )?;
        check_duration(
            key("retry_max_backoff"),
            self.retry_max_backoff,
            self.retry_initial_backoff.max(MS),
            HOUR,
        )
        .map_err(|_| {
            ConfigError::key(
                key("retry_max_backoff"),
                format!(
                    "{} is out of range: must be between retry_initial_backoff ({}) and 1h",
                    show_duration(self.retry_max_backoff),
                    show_duration(self.retry_initial_backoff)
                ),
            )
        })?;
        check_duration(
            key("item_retry_timeout"),
            self.item_retry_timeout,
            Duration::from_secs(1),
            7 * DAY,
        )?;
        // Elasticsearch and OpenSearch refuse more than 1024 shards per index.
        check_count(
            key("number_of_shards"),
            u64::from(self.number_of_shards),
            1,
            1024,
        )?;
        // 0: no replica (a single-node cluster).
        check_count(
            key("number_of_replicas"),
            u64::from(self.number_of_replicas),
            0,
            100,
        )?;
        if let Some(after) = self.delete_after {
            check_duration(key("delete_after"), after, HOUR, 3650 * DAY)?;
        }
        Ok(())
    }
}

impl DaemonConfig {
    fn validate_ranges(&self) -> Result<(), ConfigError> {
        check_duration("daemon.interval", self.interval, 100 * MS, DAY)?;
        check_duration(
            "daemon.shutdown_timeout",
            self.shutdown_timeout,
            100 * MS,
            HOUR,
        )?;
        check_count(
            "daemon.read_concurrency",
            self.read_concurrency as u64,
            1,
            64,
        )
    }
}

/// Parses `"90s"`, `"15m"`, `"1h30m"`, `"1h 30m"`, `"250ms"`, `"7d"`, `"0"` with humantime
/// (units ms, s, m, h, d and their long forms, `w`, `M` months, `y` years), plus a bare `"0"`,
/// which humantime refuses.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(t).map_err(|e| {
        format!(
            "bad duration {text:?}: {e} (expected e.g. \"60s\", \"15m\", \"1h30m\", \"250ms\", \"7d\")"
        )
    })
}

#[derive(Deserialize)]
#[serde(untagged)]
enum DurationValue {
    Text(String),
    Seconds(u64),
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    match DurationValue::deserialize(d)? {
        DurationValue::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom),
        DurationValue::Seconds(s) => Ok(Duration::from_secs(s)),
    }
}

fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [[source]]
        name = "vnet"
        container = "insights-logs-flowlogflowevent"
        account = "acct"
        [source.auth]
        method = "account_key"
        account_key_env = "FLOWLOGD_TEST_KEY"

        [elasticsearch]
        urls = ["http://127.0.0.1:9200"]
    "#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::from_toml_str(MINIMAL).unwrap();
        let s = &c.sources[0];
        assert_eq!(s.index, "flowlogs-%{+xxxx.ww}");
        assert_eq!(s.schema, Schema::Ecs);
        assert_eq!(s.start, StartPolicy::Resume);
        assert_eq!(s.since, Since::Ago(Duration::from_secs(86_400)));
        assert_eq!(c.daemon.interval, Duration::from_secs(60));
        assert_eq!(c.http.listen, "127.0.0.1:9108");
        assert_eq!(c.elasticsearch.batch_max_docs, 5000);
        assert_eq!(
            c.dead_letter_path(),
            PathBuf::from("/var/lib/flowlogd/dead-letter.ndjson")
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let text = MINIMAL.replace("[elasticsearch]", "[elasticsearch]\nbatch_size = 3");
        let e = Config::from_toml_str(&text).unwrap_err().to_string();
        assert!(e.contains("batch_size"), "{e}");
    }

    #[test]
    fn bad_duration_and_bad_index_are_named() {
        let e = Config::from_toml_str(&MINIMAL.replace(
            "[elasticsearch]",
            "[daemon]\ninterval = \"5x\"\n[elasticsearch]",
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("interval") && e.contains("5x"), "{e}");
        let e = Config::from_toml_str(&MINIMAL.replace(
            "name = \"vnet\"",
            "name = \"vnet\"\nindex = \"f-%{+yyyy.QQ}\"",
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("source.vnet.index") && e.contains("QQ"), "{e}");
    }

    #[test]
    fn documents_leave_out_the_blob_path_resource_ids_and_community_id_unless_told_otherwise() {
        let c = Config::from_toml_str(MINIMAL).unwrap();
        assert_eq!(
            c.sources[0].provenance(),
            Provenance {
                resource_ids: false,
                blob_path: false
            }
        );
        assert!(!c.sources[0].community_id);
        let with = |lines: &str| {
            Config::from_toml_str(
                &MINIMAL.replace("name = \"vnet\"", &format!("name = \"vnet\"\n{lines}")),
            )
        };
        // `replace` finds a rewritten blob's documents by their blob id, path or not.
        let c = with("resource_ids = true\nblob_path = true\ncommunity_id = true").unwrap();
        assert_eq!(
            c.sources[0].provenance(),
            Provenance {
                resource_ids: true,
                blob_path: true
            }
        );
        assert!(c.sources[0].community_id);
        assert_eq!(c.sources[0].on_rewrite, RewritePolicy::Replace);
    }

    #[test]
    fn missing_required_key_is_named() {
        let e = Config::from_toml_str(
            &MINIMAL.replace("container = \"insights-logs-flowlogflowevent\"", ""),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("container"), "{e}");
    }

    #[test]
    fn since_accepts_duration_or_time() {
        let c = Config::from_toml_str(&MINIMAL.replace(
            "name = \"vnet\"",
            "name = \"vnet\"\nsince = \"2026-11-20T00:00:00Z\"",
        ))
        .unwrap();
        assert_eq!(c.sources[0].since, Since::At(1_795_132_800));
        let c = Config::from_toml_str(
            &MINIMAL.replace("name = \"vnet\"", "name = \"vnet\"\nsince = \"3h\""),
        )
        .unwrap();
        assert_eq!(c.sources[0].since.resolve(10_800), 0);
    }

    #[test]
    fn shared_ownership_has_defaults_and_refuses_shard_bad_names_and_slow_renewals() {
        let c = Config::from_toml_str(&format!(
            "{MINIMAL}\n[cluster]\ncoordination_container = \"flowlogd-coordination\"\ninstance_id = \"vm-1\""
        ))
        .unwrap();
        assert_eq!(
            (
                c.cluster.lease_duration,
                c.cluster.renew_interval,
                c.cluster.checkpoint_interval
            ),
            (
                Duration::from_secs(60),
                Duration::from_secs(10),
                Duration::from_secs(5)
            )
        );
        assert_eq!(c.cluster.instance_id(), "vm-1");
        for (lines, key) in [
            (
                "coordination_container = \"c-1\"\nshard = \"0/2\"",
                "cluster.coordination_container",
            ),
            (
                "coordination_container = \"Bad_Name\"",
                "cluster.coordination_container",
            ),
            (
                "coordination_container = \"c-1\"\ninstance_id = \"a/b\"",
                "cluster.instance_id",
            ),
            (
                "coordination_container = \"c-1\"\nlease_duration = \"10s\"\nrenew_interval = \"5s\"",
                "cluster.renew_interval",
            ),
        ] {
            let e = Config::from_toml_str(&format!("{MINIMAL}\n[cluster]\n{lines}")).unwrap_err();
            assert!(e.to_string().contains(key), "{lines}: {e}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(604_800));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("2min").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        for bad in ["", "s", "10", "-1s", "1h30", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    /// `MINIMAL` with `line` added to `table` (`source`, `retry`, `elasticsearch`, `daemon`, …).
    fn with(table: &str, line: &str) -> String {
        match table {
            "source" => MINIMAL.replace("name = \"vnet\"", &format!("name = \"vnet\"\n{line}")),
            "retry" => MINIMAL.replace(
                "[elasticsearch]",
                &format!("[source.retry]\n{line}\n[elasticsearch]"),
            ),
            "elasticsearch" => {
                MINIMAL.replace("[elasticsearch]", &format!("[elasticsearch]\n{line}"))
            }
            other => format!("{MINIMAL}\n[{other}]\n{line}\n"),
        }
    }

    #[test]
    fn every_numeric_option_outside_its_range_is_refused_naming_the_key_and_the_range() {
        let cases: &[(&str, &str, &str)] = &[
            ("source", "settle = \"2d\"", "source.vnet.settle"),
            (
                "source",
                "discovery_interval = \"0s\"",
                "source.vnet.discovery_interval",
            ),
            (
                "source",
                "discovery_interval = \"8d\"",
                "source.vnet.discovery_interval",
            ),
            (
                "source",
                "finish_after = \"0s\"",
                "source.vnet.finish_after",
            ),
            (
                "source",
                "forget_gone_after = \"0s\"",
                "source.vnet.forget_gone_after",
            ),
            ("source", "since = \"3651d\"", "source.vnet.since"),
            (
                "source",
                "max_record_bytes = 1023",
                "source.vnet.max_record_bytes",
            ),
            (
                "source",
                "max_record_bytes = 1073741825",
                "source.vnet.max_record_bytes",
            ),
            ("retry", "max_tries = 0", "source.vnet.retry.max_tries"),
            ("retry", "max_tries = 101", "source.vnet.retry.max_tries"),
            (
                "retry",
                "initial_delay_ms = 0",
                "source.vnet.retry.initial_delay_ms",
            ),
            (
                "retry",
                "max_delay_ms = 100",
                "source.vnet.retry.max_delay_ms",
            ),
            (
                "retry",
                "max_elapsed_secs = 0",
                "source.vnet.retry.max_elapsed_secs",
            ),
            (
                "elasticsearch",
                "request_timeout = \"0s\"",
                "elasticsearch.request_timeout",
            ),
            (
                "elasticsearch",
                "request_timeout = \"2h\"",
                "elasticsearch.request_timeout",
            ),
            (
                "elasticsearch",
                "batch_max_docs = 0",
                "elasticsearch.batch_max_docs",
            ),
            (
                "elasticsearch",
                "batch_max_bytes = 0",
                "elasticsearch.batch_max_bytes",
            ),
            (
                "elasticsearch",
                "batch_max_bytes = 104857601",
                "elasticsearch.batch_max_bytes",
            ),
            (
                "elasticsearch",
                "flush_interval = \"0s\"",
                "elasticsearch.flush_interval",
            ),
            (
                "elasticsearch",
                "flush_interval = 0",
                "elasticsearch.flush_interval",
            ),
            (
                "elasticsearch",
                "max_in_flight = 0",
                "elasticsearch.max_in_flight",
            ),
            (
                "elasticsearch",
                "max_in_flight = 9223372036854775807",
                "elasticsearch.max_in_flight",
            ),
            (
                "elasticsearch",
                "retry_initial_backoff = \"0s\"",
                "elasticsearch.retry_initial_backoff",
            ),
            (
                "elasticsearch",
                "retry_max_backoff = \"100ms\"",
                "elasticsearch.retry_max_backoff",
            ),
            (
                "elasticsearch",
                "number_of_shards = 0",
                "elasticsearch.number_of_shards",
            ),
            (
                "elasticsearch",
                "number_of_shards = 1025",
                "elasticsearch.number_of_shards",
            ),
            (
                "elasticsearch",
                "number_of_replicas = 101",
                "elasticsearch.number_of_replicas",
            ),
            (
                "elasticsearch",
                "delete_after = \"0s\"",
                "elasticsearch.delete_after",
            ),
            ("daemon", "interval = \"0s\"", "daemon.interval"),
            ("daemon", "interval = \"2d\"", "daemon.interval"),
            (
                "daemon",
                "shutdown_timeout = \"0s\"",
                "daemon.shutdown_timeout",
            ),
            ("daemon", "read_concurrency = 0", "daemon.read_concurrency"),
            ("daemon", "read_concurrency = 65", "daemon.read_concurrency"),
        ];
        for (table, line, key) in cases {
            let e = Config::from_toml_str(&with(table, line))
                .map(|_| ())
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("`{key}`")) && e.contains("must be between"),
                "{line}: {e}"
            );
        }
    }

    #[test]
    fn the_zeros_with_a_meaning_and_the_bounds_themselves_are_accepted() {
        for (table, line) in [
            ("source", "settle = \"0s\""),
            ("source", "since = \"0s\""),
            ("source", "since = \"3650d\""),
            ("source", "discovery_interval = \"1s\""),
            ("source", "max_record_bytes = 1024"),
            ("retry", "max_tries = 1"),
            ("retry", "initial_delay_ms = 8000"),
            ("elasticsearch", "number_of_replicas = 0"),
            ("elasticsearch", "max_in_flight = 256"),
            ("elasticsearch", "flush_interval = \"10ms\""),
            (
                "elasticsearch",
                "retry_initial_backoff = \"1ms\"\nretry_max_backoff = \"1ms\"",
            ),
            ("elasticsearch", "delete_after = \"1h\""),
            ("daemon", "interval = \"100ms\"\nshutdown_timeout = \"1h\""),
            ("http", "listen = \"\""),
            ("http", "listen = \"[::1]:9108\""),
            ("http", "listen = \"localhost:0\""),
            ("log", "level = \"flowlogd=debug,info\""),
        ] {
            if let Err(e) = Config::from_toml_str(&with(table, line)) {
                panic!("{line}: {e}");
            }
        }
    }

    #[test]
    fn an_empty_registry_path_a_garbage_listen_address_and_a_bad_log_filter_are_refused() {
        for (table, line, key) in [
            ("registry", "path = \"\"", "registry.path"),
            ("http", "listen = \"garbage\"", "http.listen"),
            ("http", "listen = \"127.0.0.1:99999\"", "http.listen"),
            ("http", "listen = \":9108\"", "http.listen"),
            ("log", "level = \"flowlogd=loud\"", "log.level"),
        ] {
            let e = Config::from_toml_str(&with(table, line))
                .map(|_| ())
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("`{key}`")), "{line}: {e}");
        }
    }

    #[test]
    fn unknown_flowlogd_variables_are_refused_by_name_and_the_tolerated_ones_pass() {
        for bad in [
            "FLOWLOGD_FOO",
            "FLOWLOGD_DAEMON_INTERVAL",
            "FLOWLOGD_SOURCE",
            "FLOWLOGD_LOG_LEVEL",
            "FLOWLOGD_ES_PASSWORD",
            "flowlogd_foo",
            "FLOWLOGD_DAEMON____INTERVAL",
            "FLOWLOGD___X",
        ] {
            let e = check_environment_names([bad, "PATH"])
                .unwrap_err()
                .to_string();
            assert!(e.contains(bad), "{bad}: {e}");
        }
        let e = check_environment_names(["FLOWLOGD_DAEMON_INTERVAL"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean FLOWLOGD_DAEMON__INTERVAL?"), "{e}");
        check_environment_names([
            "FLOWLOGD_CONFIG",
            "FLOWLOGD_DAEMON__INTERVAL",
            "FLOWLOGD_ELASTICSEARCH__URLS",
            "FLOWLOGD_AZURITE_ENDPOINT",
            "FLOWLOGD_OPENSEARCH_URL",
            "FLOWLOGD_TEST_SEARCH_URL",
            "FLOWLOGD_RUN_DIR",
            "FLOWLOGD_E2E_BIN",
            "HOME",
        ])
        .unwrap();
    }

    #[test]
    fn a_config_path_that_is_a_directory_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let e = Config::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("is a directory"), "{e}");
    }

    #[test]
    // figment's Jail closure must return figment's own (large) error type.
    #[allow(clippy::result_large_err)]
    fn env_overrides_file_and_errors_name_the_variable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.toml");
        std::fs::write(&path, MINIMAL).unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("FLOWLOGD_DAEMON__INTERVAL", "5s");
            jail.set_env("FLOWLOGD_CONFIG", "/elsewhere.toml");
            jail.set_env("FLOWLOGD_AZURITE_BIN", "/x/azurite-blob");
            let c = Config::load(&path).map_err(|e| e.to_string())?;
            assert_eq!(c.daemon.interval, Duration::from_secs(5));
            jail.set_env("FLOWLOGD_DAEMON__INTERVAL", "soon");
            let e = Config::load(&path).unwrap_err().to_string();
            assert!(
                e.contains("environment variable FLOWLOGD_DAEMON__INTERVAL") && e.contains("soon"),
                "{e}"
            );
            Ok(())
        });
    }
}
