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

use crate::secret::Secret;
use crate::sink::document::Schema;
use crate::sink::index_name::IndexPattern;
use crate::source::auth::{AuthConfig, StorageConfig};
use crate::source::client::RetryConfig;

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
    /// Where to start for blobs the registry has no entry for: `resume` (default: from the
    /// registry, unseen blobs from byte 0), `start_over` (ignore stored offsets, re-read
    /// everything in the window; ids make that safe), `start_fresh` (blobs existing at first
    /// sight count as read up to their current length: only new bytes).
    #[serde(default)]
    pub start: StartPolicy,
    /// On first sight, only blobs whose hour is at most this old, as a duration (`"24h"`) or
    /// an RFC 3339 time. Default: `"24h"`. Hours older than this are never listed.
    #[serde(default = "default_since")]
    pub since: Since,
    /// Only read a blob once its last-modified time is at least this old. Default: `"0s"`.
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
    /// How often resource prefixes (new NSGs and flow logs) are rediscovered. Default: `"15m"`.
    #[serde(
        default = "default_discovery_interval",
        deserialize_with = "de_duration"
    )]
    pub discovery_interval: Duration,
    /// A blob is finished (never listed again) when its hour ended more than this long ago
    /// and everything in it was read. Default: `"90m"`.
    #[serde(default = "default_finish_after", deserialize_with = "de_duration")]
    pub finish_after: Duration,
    /// Registry entries of deleted blobs (retention), and of finished blobs not touched since,
    /// are forgotten after this long, so the registry holds a bounded window, not all history.
    /// Default: `"7d"`.
    #[serde(
        default = "default_forget_gone_after",
        deserialize_with = "de_duration"
    )]
    pub forget_gone_after: Duration,
    /// Largest record accepted, in bytes; a larger one is dead-lettered as malformed. Default: 268435456.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
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
    /// Timeout of one HTTP request. Default: `"60s"`.
    #[serde(default = "default_request_timeout", deserialize_with = "de_duration")]
    pub request_timeout: Duration,
    /// Largest number of documents in one bulk request. Default: 5000.
    #[serde(default = "default_batch_max_docs")]
    pub batch_max_docs: usize,
    /// Largest bulk request body in bytes. Default: 10485760 (10 MiB).
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: usize,
    /// A partly filled batch is sent after this long. Default: `"1s"`.
    #[serde(default = "default_flush_interval", deserialize_with = "de_duration")]
    pub flush_interval: Duration,
    /// Bulk requests in flight at once. Default: 2.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// First retry delay of failed requests and items (429, 5xx); doubled each try, with jitter. Default: `"500ms"`.
    #[serde(default = "default_retry_initial", deserialize_with = "de_duration")]
    pub retry_initial_backoff: Duration,
    /// Longest retry delay; whole-request failures are retried forever at this pace. Default: `"60s"`.
    #[serde(default = "default_retry_max", deserialize_with = "de_duration")]
    pub retry_max_backoff: Duration,
    /// Documents Elasticsearch rejects (mapping errors, other 4xx) are appended here as NDJSON
    /// with the reason, blob and offset. Default: `dead-letter.ndjson` beside the registry.
    #[serde(default)]
    pub dead_letter_path: Option<PathBuf>,
    /// Install a composable index template for each source's index pattern at startup. Default: true.
    #[serde(default = "default_true")]
    pub install_template: bool,
    /// Shards per index in the template. Default: 1.
    #[serde(default = "default_one")]
    pub number_of_shards: u32,
    /// Replicas per index in the template. Default: 1.
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
    /// exists. Default: none (keep forever).
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub delete_after: Option<Duration>,
}

fn default_index_codec() -> String {
    crate::sink::template::DEFAULT_CODEC.to_owned()
}

/// `[registry]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Directory of the sled database holding per-blob offsets. Default: `/var/lib/flowlogd/registry`
    /// (systemd `StateDirectory=flowlogd`).
    #[serde(default = "default_registry_path")]
    pub path: PathBuf,
}

/// `[http]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of `/healthz`, `/readyz` and `/metrics`; empty disables the listener. Default: `127.0.0.1:9108`.
    #[serde(default = "default_listen")]
    pub listen: String,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Filter, e.g. `info` or `flowlogd=debug,info`. Default: `info`.
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
    /// Time between polls of every source. Default: `"60s"`.
    #[serde(default = "default_interval", deserialize_with = "de_duration")]
    pub interval: Duration,
    /// On SIGTERM/SIGINT, in-flight work is drained for at most this long. Default: `"30s"`.
    #[serde(default = "default_shutdown_timeout", deserialize_with = "de_duration")]
    pub shutdown_timeout: Duration,
    /// Blobs read at once per source. Default: 4.
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
    default_endpoint_suffix: String = crate::source::auth::DEFAULT_ENDPOINT_SUFFIX.to_owned();
    default_index: String = "flowlogs-%{+xxxx.ww}".to_owned();
    default_since: Since = Since::Ago(Duration::from_secs(24 * 3600));
    default_discovery_interval: Duration = Duration::from_secs(15 * 60);
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
#[error("{0}")]
pub struct ConfigError(String);

impl ConfigError {
    fn key(key: impl fmt::Display, reason: impl fmt::Display) -> Self {
        ConfigError(format!("config key `{key}`: {reason}"))
    }
}

impl Config {
    /// Loads `path` (must exist) with `FLOWLOGD_…` environment overrides and validates it.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        if !path.exists() {
            return Err(ConfigError(format!(
                "config file {} not found (pass --config PATH; see config/flowlogd.example.toml)",
                path.display()
            )));
        }
        // Only `FLOWLOGD_SECTION__KEY` names are config keys: variables such as `FLOWLOGD_CONFIG`
        // (the command line's own) or `FLOWLOGD_LOG_LEVEL` must not be read as unknown keys.
        let env = Env::prefixed("FLOWLOGD_")
            .filter(|key| key.as_str().contains("__"))
            .split("__");
        let figment = Figment::new().merge(Toml::file(path)).merge(env);
        Self::from_figment(figment)
    }

    /// Parses a TOML string (tests, `flowlogd check`), without environment overrides.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        Self::from_figment(Figment::new().merge(Toml::string(text)))
    }

    fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let config: Config = figment.extract().map_err(|e| {
            // figment names the key path and the file or environment variable it came from.
            let errors: Vec<String> = e.into_iter().map(|e| e.to_string()).collect();
            ConfigError(errors.join("; "))
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: names, patterns, ranges. Secrets are resolved later, by the
    /// components that use them, with errors naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.sources.is_empty() {
            return Err(ConfigError(
                "config: at least one [[source]] is required".into(),
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
            if s.max_record_bytes < 1024 {
                return Err(ConfigError::key(
                    format!("source.{}.max_record_bytes", s.name),
                    "must be at least 1024",
                ));
            }
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
        for (key, value) in [
            ("batch_max_docs", es.batch_max_docs),
            ("batch_max_bytes", es.batch_max_bytes),
            ("max_in_flight", es.max_in_flight),
        ] {
            if value == 0 {
                return Err(ConfigError::key(
                    format!("elasticsearch.{key}"),
                    "must be greater than 0",
                ));
            }
        }
        if self.daemon.read_concurrency == 0 {
            return Err(ConfigError::key(
                "daemon.read_concurrency",
                "must be greater than 0",
            ));
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(ConfigError::key(
                "log.format",
                format!("{:?}: expected \"text\" or \"json\"", self.log.format),
            ));
        }
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

/// Parses `"90s"`, `"15m"`, `"1h30m"`, `"250ms"`, `"7d"`, `"0"` (units: ms, s, m, h, d).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "bad duration {text:?} (expected e.g. \"60s\", \"15m\", \"1h30m\", \"250ms\", \"7d\")"
        )
    };
    let t = text.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    if t.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let value: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value.checked_mul(60).ok_or_else(bad)?),
            "h" => Duration::from_secs(value.checked_mul(3600).ok_or_else(bad)?),
            "d" => Duration::from_secs(value.checked_mul(86_400).ok_or_else(bad)?),
            _ => return Err(bad()),
        };
        total = total.checked_add(unit).ok_or_else(bad)?;
        rest = &rest[unit_len..];
    }
    Ok(total)
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
    fn durations() {
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(604_800));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        for bad in ["", "s", "10", "1.5h", "5 m", "-1s", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
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
                e.contains("DAEMON.INTERVAL") && e.contains("FLOWLOGD_") && e.contains("soon"),
                "{e}"
            );
            Ok(())
        });
    }
}
