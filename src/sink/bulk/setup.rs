//! Cluster checks and setup: what the cluster is and what flowlogd may do on it (`GET /`, the
//! privileges API, for `flowlogd check`), and the composable index templates and lifecycle
//! policy (ILM on Elasticsearch, ISM on OpenSearch) installed before delivery starts.
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use elasticsearch::http::Method;
use elasticsearch::http::headers::HeaderMap;
use serde_json::{Value, json};
use tracing::{info, warn};

use super::{BulkSink, SinkError, error_summary, excerpt};
use crate::config::document::Schema;
use crate::config::{RewritePolicy, SourceConfig};
use crate::index_pattern::IndexPattern;
use crate::sink::client::error_chain;
use crate::sink::template;

/// One source's index, for [`BulkSink::setup`] and [`BulkSink::check_targets`].
#[derive(Debug, Clone)]
pub struct SetupTarget {
    /// Source name (for the report).
    pub source: String,
    pub index: IndexPattern,
    pub schema: Schema,
    /// The source's `on_rewrite = "replace"` deletes a rewritten blob's documents by query,
    /// which needs the `read` and `delete` index privileges besides `create_doc`.
    pub deletes_rewritten: bool,
}

impl SetupTarget {
    /// The targets of the configured sources.
    pub fn for_sources(sources: &[SourceConfig]) -> Result<Vec<SetupTarget>, SinkError> {
        sources
            .iter()
            .map(|s| {
                let index = s
                    .index_pattern()
                    .map_err(|e| SinkError::Setup(e.to_string()))?;
                Ok(SetupTarget {
                    source: s.name.clone(),
                    index,
                    schema: s.schema,
                    deletes_rewritten: s.on_rewrite == RewritePolicy::Replace,
                })
            })
            .collect()
    }
}

/// What [`BulkSink::setup`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupReport {
    /// Installed templates (empty when `install_template = false`).
    pub templates: Vec<InstalledTemplate>,
    pub lifecycle: LifecycleOutcome,
    /// Set when nothing was installed on purpose.
    pub skipped: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledTemplate {
    pub name: String,
    pub index_pattern: String,
    pub priority: u32,
    pub schema: Schema,
    pub data_stream: bool,
    /// Sources writing to this pattern.
    pub sources: Vec<String>,
}

/// Which lifecycle engine deletes old indices: Elasticsearch's ILM or OpenSearch's ISM plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleEngine {
    /// Index Lifecycle Management: the template names the policy (`index.lifecycle.name`).
    Ilm,
    /// Index State Management (OpenSearch's index-management plugin): the policy names the
    /// index patterns it applies to (`ism_template`), the template does not mention it.
    Ism,
}

impl LifecycleEngine {
    /// Where the engine keeps the policy `name`.
    fn policy_path(self, name: &str) -> String {
        match self {
            LifecycleEngine::Ilm => format!("_ilm/policy/{name}"),
            LifecycleEngine::Ism => format!("_plugins/_ism/policies/{name}"),
        }
    }
}

impl fmt::Display for LifecycleEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LifecycleEngine::Ilm => "ILM",
            LifecycleEngine::Ism => "ISM",
        })
    }
}

/// What happened to the lifecycle policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LifecycleOutcome {
    /// `delete_after` is not set: indices are kept.
    NotConfigured,
    Installed {
        engine: LifecycleEngine,
        policy: String,
    },
    /// The cluster has no lifecycle engine flowlogd can use (OpenSearch without the ISM plugin,
    /// Elasticsearch serverless, a stand-in): no policy, and the templates do not reference one.
    Skipped { reason: String },
}

/// What `flowlogd check` finds about the lifecycle policy, without changing anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LifecycleCheck {
    /// `delete_after` is not set: indices are kept.
    NotConfigured,
    /// The policy flowlogd installs is there.
    Present {
        engine: LifecycleEngine,
        policy: String,
    },
    /// The engine is there but the policy is not (yet): setup installs it when the daemon starts.
    Missing {
        engine: LifecycleEngine,
        policy: String,
    },
    /// No usable lifecycle engine: old indices are never deleted by flowlogd.
    Unavailable { reason: String },
}

impl fmt::Display for SetupReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(why) = &self.skipped {
            return write!(f, "index templates not installed: {why}");
        }
        for t in &self.templates {
            writeln!(
                f,
                "index template {} for {} ({}, priority {}{}; sources: {})",
                t.name,
                t.index_pattern,
                template::schema_name(t.schema),
                t.priority,
                if t.data_stream { ", data stream" } else { "" },
                t.sources.join(", ")
            )?;
        }
        match &self.lifecycle {
            LifecycleOutcome::NotConfigured => write!(
                f,
                "lifecycle: none (delete_after not set; indices are kept)"
            ),
            LifecycleOutcome::Installed { engine, policy } => {
                write!(f, "lifecycle: {engine} policy {policy} installed")
            }
            LifecycleOutcome::Skipped { reason } => write!(f, "lifecycle: skipped: {reason}"),
        }
    }
}

/// Which server answered `GET /`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Distribution {
    Elasticsearch,
    OpenSearch,
    Other(String),
}

/// What `GET /` (and the privileges API) said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterInfo {
    pub cluster_name: String,
    pub node_name: String,
    pub version: String,
    pub distribution: Distribution,
    /// `serverless` on Elastic Cloud Serverless, `default` otherwise (Elasticsearch only).
    pub build_flavor: Option<String>,
    pub privileges: PrivilegeCheck,
}

impl ClusterInfo {
    /// Whether the cluster has ILM: Elasticsearch, not serverless.
    pub fn supports_ilm(&self) -> bool {
        self.lifecycle_engine() == Ok(LifecycleEngine::Ilm)
    }

    /// The lifecycle engine this distribution would have: ILM on Elasticsearch (not
    /// serverless), ISM on OpenSearch (if its plugin is installed, which only a request tells),
    /// or why there is none.
    pub fn lifecycle_engine(&self) -> Result<LifecycleEngine, String> {
        match &self.distribution {
            Distribution::Elasticsearch if self.build_flavor.as_deref() == Some("serverless") => {
                Err(
                    "Elasticsearch serverless manages retention with data stream lifecycles, not ILM"
                        .into(),
                )
            }
            Distribution::Elasticsearch => Ok(LifecycleEngine::Ilm),
            Distribution::OpenSearch => Ok(LifecycleEngine::Ism),
            Distribution::Other(d) => Err(format!("{d} {} has no ILM", self.version)),
        }
    }

    /// Why a lifecycle API answered "no such endpoint".
    fn missing_engine_reason(&self, engine: LifecycleEngine, status: u16) -> String {
        match engine {
            LifecycleEngine::Ism => format!(
                "OpenSearch {} has no ISM API (HTTP {status}: the index-management plugin is not installed); old indices are kept",
                self.version
            ),
            LifecycleEngine::Ilm => format!("the cluster has no ILM API (HTTP {status})"),
        }
    }
}

impl fmt::Display for ClusterInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dist = match &self.distribution {
            Distribution::Elasticsearch => "Elasticsearch",
            Distribution::OpenSearch => "OpenSearch",
            Distribution::Other(d) => d,
        };
        write!(
            f,
            "{dist} {} (cluster {}, node {})",
            self.version, self.cluster_name, self.node_name
        )?;
        match &self.privileges {
            PrivilegeCheck::Unavailable { reason } => {
                write!(f, "; privileges not checked: {reason}")
            }
            PrivilegeCheck::Checked { username, missing } if missing.is_empty() => {
                write!(f, "; user {username} has every privilege flowlogd needs")
            }
            PrivilegeCheck::Checked { username, missing } => {
                write!(f, "; user {username} lacks: {}", missing.join(", "))
            }
        }
    }
}

/// The outcome of `_security/user/_has_privileges`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrivilegeCheck {
    /// No security API (OpenSearch without its security plugin, security disabled).
    Unavailable { reason: String },
    /// `missing` lists what flowlogd needs and lacks, e.g. `cluster:manage_ilm` or
    /// `index flowlogs-*:create_doc`.
    Checked {
        username: String,
        missing: Vec<String>,
    },
}

impl BulkSink {
    /// `GET /` and the privileges flowlogd needs on the cluster (for `flowlogd check`).
    pub async fn check(&self) -> Result<ClusterInfo, SinkError> {
        self.check_targets(&[]).await
    }

    /// Like [`BulkSink::check`], also checking index privileges on the targets' patterns.
    pub async fn check_targets(&self, targets: &[SetupTarget]) -> Result<ClusterInfo, SinkError> {
        let mut info = self.cluster_info().await?;
        info.privileges = self.privileges(targets).await;
        Ok(info)
    }

    /// Installs the ILM policy (when `delete_after` is set and the cluster has ILM) and one
    /// composable index template per distinct index pattern. Idempotent: templates and the
    /// policy are overwritten with the current definition. One attempt, no retries.
    pub async fn setup(&self, targets: &[SetupTarget]) -> Result<SetupReport, SinkError> {
        let plan = plan_templates(targets)?;
        if !self.inner.install_template {
            return Ok(SetupReport {
                templates: Vec::new(),
                lifecycle: LifecycleOutcome::NotConfigured,
                skipped: Some("install_template = false".into()),
            });
        }
        let info = self.cluster_info().await?;
        let data_stream = self.inner.template_options.data_stream;
        let lifecycle = match self.inner.delete_after {
            None => LifecycleOutcome::NotConfigured,
            Some(delete_after) => match info.lifecycle_engine() {
                Err(reason) => LifecycleOutcome::Skipped { reason },
                Ok(LifecycleEngine::Ilm) => self.install_ilm(&info, delete_after).await?,
                Ok(LifecycleEngine::Ism) => {
                    let wildcards: Vec<&str> = plan.iter().map(|p| p.wildcard.as_str()).collect();
                    self.install_ism(&info, delete_after, &wildcards).await?
                }
            },
        };
        let mut options = self.inner.template_options.clone();
        if let LifecycleOutcome::Installed {
            engine: LifecycleEngine::Ilm,
            policy,
        } = &lifecycle
        {
            options.lifecycle_policy = Some(policy.clone());
        }
        let mut templates = Vec::new();
        for planned in plan {
            let body = template::index_template(planned.schema, &planned.wildcard, &options);
            let what = format!("install index template {}", planned.name);
            let (status, response) = self
                .request(
                    Method::Put,
                    &format!("_index_template/{}", planned.name),
                    Some(&body),
                    &what,
                )
                .await?;
            if !(200..=299).contains(&status) {
                return Err(status_error(&what, status, &response));
            }
            info!(template = %planned.name, index_pattern = %planned.wildcard, "index template installed");
            self.add_blob_id_to_existing_indices(&planned.wildcard, planned.schema)
                .await;
            templates.push(InstalledTemplate {
                name: planned.name,
                priority: template::priority(&planned.wildcard),
                index_pattern: planned.wildcard,
                schema: planned.schema,
                data_stream,
                sources: planned.sources,
            });
        }
        match &lifecycle {
            LifecycleOutcome::Skipped { reason } => {
                warn!(%reason, "delete_after is set but no lifecycle policy was installed")
            }
            LifecycleOutcome::Installed { engine, policy } => {
                info!(%policy, engine = %engine, "lifecycle policy installed")
            }
            LifecycleOutcome::NotConfigured => {}
        }
        Ok(SetupReport {
            templates,
            lifecycle,
            skipped: None,
        })
    }

    /// Maps the blob id field in the existing indices of `wildcard` (see
    /// [`template::blob_id_mapping`]): the template only shapes indices created from now on.
    /// A failure is logged, not fatal, since everything else still works: the field is in
    /// every new index, and only a rewrite inside an index older than the upgrade could leave
    /// documents behind.
    async fn add_blob_id_to_existing_indices(&self, wildcard: &str, schema: Schema) {
        let field = schema.blob_id_field();
        let what = format!("map {field} in the existing indices {wildcard}");
        let lenient = [("ignore_unavailable", "true"), ("allow_no_indices", "true")];
        let body = template::blob_id_mapping(schema);
        let path = format!("{wildcard}/_mapping");
        let outcome = self
            .request_with_query(Method::Put, &path, &lenient, Some(&body), &what)
            .await;
        let error = match outcome {
            Ok((200..=299, _)) => {
                info!(indices = %wildcard, field, "blob id mapped in the existing indices");
                return;
            }
            Ok((status, response)) => status_error(&what, status, &response),
            Err(e) => e,
        };
        warn!(indices = %wildcard, field, error = %error, "cannot map the blob id in indices created before it existed (needs the manage index privilege); on_rewrite = \"replace\" will not find documents written to them from now on until the next index; going on");
    }

    /// `PUT _ilm/policy/<name>`: overwriting is how ILM updates a policy.
    async fn install_ilm(
        &self,
        info: &ClusterInfo,
        delete_after: Duration,
    ) -> Result<LifecycleOutcome, SinkError> {
        let data_stream = self.inner.template_options.data_stream;
        let name = template::lifecycle_policy_name(delete_after, data_stream);
        let body = template::lifecycle_policy(delete_after, data_stream);
        let what = "install ILM policy";
        let path = LifecycleEngine::Ilm.policy_path(&name);
        let (status, response) = self.request(Method::Put, &path, Some(&body), what).await?;
        match status {
            200..=299 => Ok(LifecycleOutcome::Installed {
                engine: LifecycleEngine::Ilm,
                policy: name,
            }),
            // No such API (a proxy in front, a stand-in): say so instead of failing.
            400 | 404 | 405 | 410 if is_missing_api(&response) => Ok(LifecycleOutcome::Skipped {
                reason: info.missing_engine_reason(LifecycleEngine::Ilm, status),
            }),
            _ => Err(status_error(what, status, &response)),
        }
    }

    /// Creates or updates the ISM policy. ISM refuses a plain overwrite of an existing policy
    /// (409): an update must name the sequence number and primary term it replaces, so the
    /// policy is read first.
    async fn install_ism(
        &self,
        info: &ClusterInfo,
        delete_after: Duration,
        wildcards: &[&str],
    ) -> Result<LifecycleOutcome, SinkError> {
        let data_stream = self.inner.template_options.data_stream;
        let name = template::lifecycle_policy_name(delete_after, data_stream);
        let body = template::ism_policy(delete_after, data_stream, wildcards);
        let path = LifecycleEngine::Ism.policy_path(&name);
        let what = "install ISM policy";
        let (status, current) = self.request(Method::Get, &path, None, what).await?;
        let update = match status {
            200 => {
                let current: Value = serde_json::from_slice(&current).unwrap_or(Value::Null);
                match (
                    current["_seq_no"].as_u64(),
                    current["_primary_term"].as_u64(),
                ) {
                    (Some(seq_no), Some(term)) => {
                        format!("?if_seq_no={seq_no}&if_primary_term={term}")
                    }
                    _ => {
                        return Err(SinkError::Response {
                            what: what.into(),
                            reason: format!(
                                "GET {path} has no _seq_no/_primary_term: {}",
                                excerpt(&serde_json::to_vec(&current).unwrap_or_default())
                            ),
                        });
                    }
                }
            }
            400 | 404 | 405 | 410 if is_missing_api(&current) => {
                return Ok(LifecycleOutcome::Skipped {
                    reason: info.missing_engine_reason(LifecycleEngine::Ism, status),
                });
            }
            404 => String::new(),
            _ => return Err(status_error(what, status, &current)),
        };
        let (status, response) = self
            .request(Method::Put, &format!("{path}{update}"), Some(&body), what)
            .await?;
        match status {
            200..=299 => Ok(LifecycleOutcome::Installed {
                engine: LifecycleEngine::Ism,
                policy: name,
            }),
            400 | 404 | 405 | 410 if is_missing_api(&response) => Ok(LifecycleOutcome::Skipped {
                reason: info.missing_engine_reason(LifecycleEngine::Ism, status),
            }),
            _ => Err(status_error(what, status, &response)),
        }
    }

    /// Whether the lifecycle policy setup would install is there, for `flowlogd check`. Reads
    /// only.
    pub async fn check_lifecycle(&self, info: &ClusterInfo) -> Result<LifecycleCheck, SinkError> {
        let Some(delete_after) = self.inner.delete_after else {
            return Ok(LifecycleCheck::NotConfigured);
        };
        let engine = match info.lifecycle_engine() {
            Ok(engine) => engine,
            Err(reason) => return Ok(LifecycleCheck::Unavailable { reason }),
        };
        let policy =
            template::lifecycle_policy_name(delete_after, self.inner.template_options.data_stream);
        let path = engine.policy_path(&policy);
        let what = format!("read {engine} policy {policy}");
        let (status, body) = self.request(Method::Get, &path, None, &what).await?;
        Ok(match status {
            200 => LifecycleCheck::Present { engine, policy },
            400 | 404 | 405 | 410 if is_missing_api(&body) => LifecycleCheck::Unavailable {
                reason: info.missing_engine_reason(engine, status),
            },
            404 => LifecycleCheck::Missing { engine, policy },
            _ => return Err(status_error(&what, status, &body)),
        })
    }

    async fn cluster_info(&self) -> Result<ClusterInfo, SinkError> {
        let what = "GET /";
        let (status, body) = self.request(Method::Get, "", None, what).await?;
        if status != 200 {
            return Err(status_error(what, status, &body));
        }
        let root: Value = serde_json::from_slice(&body).map_err(|e| SinkError::Response {
            what: what.into(),
            reason: format!("not JSON ({e}): {}", excerpt(&body)),
        })?;
        let version = &root["version"];
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let distribution = match version["distribution"].as_str() {
            None | Some("elasticsearch") => Distribution::Elasticsearch,
            Some("opensearch") => Distribution::OpenSearch,
            Some(other) => Distribution::Other(other.to_owned()),
        };
        if version["number"].as_str().is_none() {
            return Err(SinkError::Response {
                what: what.into(),
                reason: format!("no version.number: {}", excerpt(&body)),
            });
        }
        Ok(ClusterInfo {
            cluster_name: text(&root["cluster_name"]),
            node_name: text(&root["name"]),
            version: text(&version["number"]),
            distribution,
            build_flavor: version["build_flavor"].as_str().map(str::to_owned),
            privileges: PrivilegeCheck::Unavailable {
                reason: "not checked".into(),
            },
        })
    }

    async fn privileges(&self, targets: &[SetupTarget]) -> PrivilegeCheck {
        let mut cluster = vec!["monitor"];
        if self.inner.install_template {
            cluster.push("manage_index_templates");
            if self.inner.delete_after.is_some() {
                cluster.push("manage_ilm");
            }
        }
        let mut patterns: Vec<String> = targets.iter().map(|t| t.index.wildcard()).collect();
        patterns.sort();
        patterns.dedup();
        let index_privileges = ["create_doc", "auto_configure"];
        // `on_rewrite = "replace"` deletes by query: it reads and deletes there.
        let mut replacing: Vec<String> = targets
            .iter()
            .filter(|t| t.deletes_rewritten)
            .map(|t| t.index.wildcard())
            .collect();
        replacing.sort();
        replacing.dedup();
        let replace_privileges = ["read", "delete"];
        let mut body = json!({"cluster": cluster});
        if !patterns.is_empty() {
            let mut index = vec![json!({"names": patterns, "privileges": index_privileges})];
            if !replacing.is_empty() {
                index.push(json!({"names": replacing, "privileges": replace_privileges}));
            }
            body["index"] = Value::Array(index);
        }
        let what = "check privileges";
        let (status, response) = match self
            .request(
                Method::Post,
                "_security/user/_has_privileges",
                Some(&body),
                what,
            )
            .await
        {
            Ok(r) => r,
            Err(e) => {
                return PrivilegeCheck::Unavailable {
                    reason: e.to_string(),
                };
            }
        };
        if status != 200 {
            return PrivilegeCheck::Unavailable {
                reason: format!(
                    "no privileges API (HTTP {status}: {})",
                    error_summary_bytes(&response)
                ),
            };
        }
        let Ok(answer) = serde_json::from_slice::<Value>(&response) else {
            return PrivilegeCheck::Unavailable {
                reason: format!("unparsable answer: {}", excerpt(&response)),
            };
        };
        let mut missing = Vec::new();
        for p in &cluster {
            if answer["cluster"][*p] != Value::Bool(true) {
                missing.push(format!("cluster:{p}"));
            }
        }
        for pattern in &patterns {
            let needed = index_privileges.iter().chain(
                replacing
                    .contains(pattern)
                    .then_some(&replace_privileges)
                    .into_iter()
                    .flatten(),
            );
            for p in needed {
                if answer["index"][pattern.as_str()][p] != Value::Bool(true) {
                    missing.push(format!("index {pattern}:{p}"));
                }
            }
        }
        PrivilegeCheck::Checked {
            username: answer["username"].as_str().unwrap_or("?").to_owned(),
            missing,
        }
    }

    /// One request with a JSON body, no retries: for setup and checks.
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<(u16, Bytes), SinkError> {
        self.request_with_query(method, path, &[], body, what).await
    }

    pub(super) async fn request_with_query(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
        what: &str,
    ) -> Result<(u16, Bytes), SinkError> {
        let body = match body {
            Some(v) => Some(Bytes::from(serde_json::to_vec(v).map_err(|e| {
                SinkError::Response {
                    what: what.into(),
                    reason: e.to_string(),
                }
            })?)),
            None => None,
        };
        let response = self
            .inner
            .conn
            .client
            .send(
                method,
                path,
                HeaderMap::new(),
                (!query.is_empty()).then_some(query),
                body,
                None,
            )
            .await
            .map_err(|e| SinkError::Transport {
                what: what.into(),
                reason: error_chain(&e),
            })?;
        let status = response.status_code().as_u16();
        let bytes = response.bytes().await.map_err(|e| SinkError::Transport {
            what: what.into(),
            reason: error_chain(&e),
        })?;
        Ok((status, bytes))
    }
}

struct PlannedTemplate {
    name: String,
    wildcard: String,
    schema: Schema,
    sources: Vec<String>,
}

/// One template per distinct index wildcard; sources sharing a wildcard must share a layout.
fn plan_templates(targets: &[SetupTarget]) -> Result<Vec<PlannedTemplate>, SinkError> {
    let mut plan: Vec<PlannedTemplate> = Vec::new();
    for t in targets {
        let wildcard = t.index.wildcard();
        if let Some(p) = plan.iter_mut().find(|p| p.wildcard == wildcard) {
            if p.schema != t.schema {
                return Err(SinkError::Setup(format!(
                    "sources {} and {} write to indices {wildcard} with different schemas ({} and {}); give them different `index` patterns",
                    p.sources[0],
                    t.source,
                    template::schema_name(p.schema),
                    template::schema_name(t.schema)
                )));
            }
            p.sources.push(t.source.clone());
            continue;
        }
        let name = template::template_name(&wildcard);
        if let Some(p) = plan.iter().find(|p| p.name == name) {
            return Err(SinkError::Setup(format!(
                "index patterns {} and {wildcard} would share the template name {name}; rename one",
                p.wildcard
            )));
        }
        plan.push(PlannedTemplate {
            name,
            wildcard,
            schema: t.schema,
            sources: vec![t.source.clone()],
        });
    }
    Ok(plan)
}

fn error_summary_bytes(body: &[u8]) -> String {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) if v["error"].is_object() => error_summary(&v["error"]),
        Ok(v) if v["error"].is_string() => v["error"].as_str().unwrap_or_default().to_owned(),
        _ => excerpt(body),
    }
}

/// Whether an error response says the endpoint does not exist (rather than refusing the body).
fn is_missing_api(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body);
    text.contains("no handler found")
        || text.contains("api_not_available")
        || text.contains("Unrecognized")
}

pub(super) fn status_error(what: &str, status: u16, body: &[u8]) -> SinkError {
    SinkError::Status {
        what: what.into(),
        status,
        body: error_summary_bytes(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_sharing_a_pattern_share_a_template_but_not_two_schemas() {
        let t = |source: &str, index: &str, schema| SetupTarget {
            source: source.into(),
            index: IndexPattern::parse(index).unwrap(),
            schema,
            deletes_rewritten: false,
        };
        let plan = plan_templates(&[
            t("a", "flowlogs-%{+xxxx.ww}", Schema::Ecs),
            t("b", "flowlogs-%{+xxxx.ww}", Schema::Ecs),
            t("c", "nsg-%{+yyyy.MM.dd}", Schema::Logstash),
        ])
        .unwrap();
        assert_eq!(plan.len(), 2);
        assert_eq!(plan[0].sources, ["a", "b"]);
        assert_eq!(plan[1].wildcard, "nsg-*");
        let e = plan_templates(&[
            t("a", "f-%{+xxxx.ww}", Schema::Ecs),
            t("b", "f-%{+yyyy.MM}", Schema::Logstash),
        ])
        .err()
        .unwrap()
        .to_string();
        assert!(
            e.contains("different schemas") && e.contains("a") && e.contains("b"),
            "{e}"
        );
    }
}
