//! The shipped dashboards checked against what flowlogd really indexes into a real search
//! engine, not eyeballed.
//!
//! One run of the real pipeline: `flowlogd gen --upload` writes VNet v4, NSG v2 and NSG v1 flow
//! logs for the current hour into Azurite (several NICs, Azure's block layout), and the real
//! binary runs `flowlogd --config … once` with the quickstart's configuration, plus every
//! enrichment turned on ([`common::enrichment`]: named networks, service tags, GeoLite2-City,
//! ASN), against the engine of [`common::flowlogd::Es::engine`]: the cluster of
//! `ELASTICSEARCH_URL` when set, else the OpenSearch node the tests of this run share. Because
//! the engine is shared, the index is the default config's (`flowlogs-%{+xxxx.ww}`) behind this
//! run's unique prefix (`t-dashboards-…-flowlogs-%{+xxxx.ww}`); every panel reads the
//! dashboards' own index pattern (`flowlogs-*`) behind the same prefix, after checking that the
//! pattern is the wildcard of the default config's index. The indices and the template are
//! deleted at the end, also when the test fails.
//!
//! Then, for every panel of the Grafana dashboard (template variables included) and every
//! panel of the Kibana dashboard (visualizations, the saved search, and the data view):
//!
//! - every field the panel uses is mapped in the index template flowlogd installed, with the
//!   same type in the created index: `date` for time fields, a numeric type for summed fields,
//!   and otherwise the type its values call for (`ip` for addresses, numeric for numbers,
//!   `keyword` for strings, so terms aggregations work); and it has a value in at least one
//!   ingested document (`exists` count > 0);
//! - the panel's query and aggregation, rebuilt from the panel JSON (Grafana `targets[]`
//!   `query`/`metrics`/`bucketAggs` with every `$variable` at its "All" value; Kibana
//!   `visState.aggs` and the KQL of `searchSourceJSON`), over the dashboard's time range, is
//!   accepted by the engine (an aggregation on a `text` field or a sum over a `keyword` is an
//!   error there) and returns non-empty buckets (raw-document panels: hits; summed metrics: a
//!   total above zero).
//!
//! Grafana panels on a Prometheus data source read flowlogd's own `/metrics`, which no search
//! engine holds: every metric name their PromQL selects must be a sample name of the exposition
//! flowlogd renders (`flowlogd::metrics::Metrics::render`, the text `/metrics` serves, with
//! every optional family present), and every label they match or group on a label of it.
//!
//! A panel the rebuilder does not understand fails the test, naming the panel: extend the
//! rebuilder rather than skipping it. Renaming a document field without updating the
//! dashboards fails here, and so does a dashboard reading another index pattern than the
//! default config writes (the test also checks that they would, on edited copies).
//!
//! That the files parse, carry pinned schema versions (Grafana `schemaVersion`, Kibana
//! `coreMigrationVersion`/`typeMigrationVersion`) and reference existing objects is
//! `tests/deploy_files.rs`' job, not repeated here.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::servers::Azurite;
use elasticsearch::http::Method;
use flowlogd::config::Config;
use flowlogd::index_pattern::IndexPattern;
use serde_json::{Map, Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_flowlogd");
const GRAFANA_DASHBOARD: &str = "deploy/grafana/dashboards/flowlogd-flows.json";
const GRAFANA_DATASOURCES: &str = "deploy/grafana/provisioning/datasources";
const KIBANA_OBJECTS: &str = "deploy/kibana/flowlogd.ndjson";

const VNET_CONTAINER: &str = "insights-logs-flowlogflowevent";
const NSG_CONTAINER: &str = "insights-logs-networksecuritygroupflowevent";
/// What `flowlogd gen --upload` writes: (container, kind, NICs, seed). With [`RECORDS`] records
/// of [`TUPLES`] tuples per blob: 8,000 documents, a few seconds to generate and index.
const UPLOADS: &[(&str, &str, u64, u64)] = &[
    (VNET_CONTAINER, "vnet", 3, 1),
    (NSG_CONTAINER, "nsg2", 3, 2),
    (NSG_CONTAINER, "nsg1", 2, 3),
];
const RECORDS: u64 = 20;
const TUPLES: u64 = 50;

/// Grafana and Kibana pick a date histogram's "auto" interval from the time range and the
/// panel width; one minute is what a 3-hour range gives on a typical screen.
const AUTO_INTERVAL: &str = "1m";
/// Size of a Grafana terms aggregation with size 0 ("no limit"), and of variable queries.
const GRAFANA_TERMS_ALL: u64 = 500;
const NUMERIC: &[&str] = &[
    "long",
    "integer",
    "short",
    "byte",
    "double",
    "float",
    "half_float",
    "scaled_float",
    "unsigned_long",
];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// The real pipeline: generated blobs in Azurite, `flowlogd once` into the engine.

/// Runs a command with its output in files (no pipe to fill), killed (by PID) after `timeout`.
fn run(mut cmd: Command, what: &str, dir: &Path, timeout: Duration) -> String {
    let out = dir.join("out.log");
    let err = dir.join("err.log");
    cmd.stdin(Stdio::null())
        .stdout(File::create(&out).unwrap())
        .stderr(File::create(&err).unwrap());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start {BIN}: {e}"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what}: still running after {timeout:?}, killed; stderr:\n{}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = std::fs::read_to_string(&out).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    assert!(
        status.success(),
        "{what}: {status}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout
}

/// The index of a `[[source]]` without `index =`, as flowlogd's config parser fills it in, and
/// its wildcard (what the dashboards must read).
fn default_index() -> (String, String) {
    let config = Config::from_toml_str(
        r#"
[elasticsearch]

[[source]]
name = "default"
container = "insights-logs-flowlogflowevent"
account = "devstoreaccount1"
[source.auth]
method = "connection_string"
connection_string = "UseDevelopmentStorage=true"
"#,
    )
    .unwrap_or_else(|e| panic!("a minimal config: {e}"));
    let index = config.sources[0].index.clone();
    let wildcard = IndexPattern::parse(&index)
        .unwrap_or_else(|e| panic!("default index {index:?}: {e:?}"))
        .wildcard();
    (index, wildcard)
}

/// Azurite and the engine with the flow logs of [`UPLOADS`] indexed by the real binary into
/// this run's indices; Azurite is killed and the indices and template deleted when this drops.
struct Ingested {
    engine: Engine,
    documents: u64,
    /// The wildcard of the default config's index (`flowlogs-*`).
    default_wildcard: String,
    _azurite: Azurite,
    _dir: tempfile::TempDir,
}

fn ingest() -> Ingested {
    let (default_index, default_wildcard) = default_index();
    let azurite = Azurite::start().expect("Azurite");
    let engine = Engine::new("dashboards");
    let dir = tempfile::Builder::new()
        .prefix("flowlogd-dashboards-")
        .tempdir()
        .unwrap();
    let endpoint = azurite.blob_endpoint();
    let hour = chrono::Utc::now().format("%Y-%m-%dT%H").to_string();

    let mut expected = 0;
    for &(container, kind, nics, seed) in UPLOADS {
        let mut cmd = Command::new(BIN);
        cmd.args(["gen", "--upload", "--blob-endpoint", &endpoint])
            .args(["--container", container, "--kind", kind])
            .args(["--nics", &nics.to_string(), "--seed", &seed.to_string()])
            .args(["--records", &RECORDS.to_string()])
            .args(["--tuples", &TUPLES.to_string(), "--hour", &hour]);
        run(
            cmd,
            &format!("flowlogd gen --kind {kind}"),
            dir.path(),
            Duration::from_secs(60),
        );
        expected += nics * RECORDS * TUPLES;
    }

    // As scripts/quickstart.sh writes it: one source per container, both into the weekly index
    // of the default config (which the dashboards read), here behind this run's prefix; with
    // every enrichment on, since panels read the fields it writes.
    let index = format!("{}-{default_index}", engine.es.prefix);
    let work = dir.path().display();
    let config = format!(
        r#"{enrichment}
[registry]
path = "{work}/registry"

[http]
listen = ""

[elasticsearch]
urls = ["{es}"]
dead_letter_path = "{work}/dead-letter.ndjson"
{auth}
[[source]]
name = "vnet"
container = "{VNET_CONTAINER}"
account = "{account}"
blob_endpoint = "{endpoint}"
index = "{index}"
[source.auth]
method = "connection_string"
connection_string = "UseDevelopmentStorage=true;BlobEndpoint={endpoint}"

[[source]]
name = "nsg"
container = "{NSG_CONTAINER}"
account = "{account}"
blob_endpoint = "{endpoint}"
index = "{index}"
[source.auth]
method = "account_key"
account_key_env = "DASHBOARDS_TEST_ACCOUNT_KEY"
"#,
        es = engine.es.url,
        auth = engine.es.config_lines,
        account = Azurite::ACCOUNT,
        enrichment = common::enrichment::generator_enrichment_toml(repo()),
    );
    let config_path = dir.path().join("flowlogd.toml");
    std::fs::write(&config_path, config).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("--config")
        .arg(&config_path)
        .arg("once")
        .env("DASHBOARDS_TEST_ACCOUNT_KEY", Azurite::ACCOUNT_KEY);
    let stdout = run(cmd, "flowlogd once", dir.path(), Duration::from_secs(120));
    let summary: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("flowlogd once printed no JSON summary:\n{stdout}"));
    assert_eq!(
        summary["documents_indexed"].as_u64(),
        Some(expected),
        "every generated tuple indexed: {summary}"
    );
    assert_eq!(summary["documents_dead_lettered"], 0, "{summary}");
    assert_eq!(summary["errors"], 0, "{summary}");

    let all = engine.es.all();
    let (status, body) = engine.call(Method::Post, &format!("{all}/_refresh"), None);
    assert_eq!(status, 200, "refresh: {body}");
    let (status, body) = engine.call(Method::Get, &format!("{all}/_count"), None);
    assert_eq!(status, 200, "count: {body}");
    assert_eq!(body["count"].as_u64(), Some(expected), "{body}");
    Ingested {
        engine,
        documents: expected,
        default_wildcard,
        _azurite: azurite,
        _dir: dir,
    }
}

/// A blocking handle on the engine ([`common::flowlogd::Es::engine`]: `ELASTICSEARCH_URL`, else
/// the shared OpenSearch node) with this run's index prefix. Dropping it deletes this run's
/// indices and templates, after a failed assertion too.
struct Engine {
    rt: tokio::runtime::Runtime,
    es: common::flowlogd::Es,
}

impl Engine {
    fn new(test: &str) -> Engine {
        Engine {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            es: common::flowlogd::Es::engine(test),
        }
    }

    fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.rt.block_on(self.es.call(method, path, body))
    }

    fn search(&self, index: &str, body: &Value) -> Result<Value, String> {
        match self.call(
            Method::Post,
            &format!("{index}/_search"),
            Some(body.clone()),
        ) {
            (200, response) => Ok(response),
            (status, response) => Err(format!("_search answered {status}: {response}")),
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.rt.block_on(self.es.cleanup());
    }
}

// ---------------------------------------------------------------------------------------------
// Panels, rebuilt as Elasticsearch requests.

/// How a panel uses a field, which decides the mapping type it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    /// Time filter, date histogram, sort by time: `date`.
    Time,
    /// Summed or averaged: a numeric type.
    Numeric,
    /// Grouped by, filtered on or shown: the type its values call for (see [`expected_type`]).
    Value,
}

/// What a panel's answer must hold to show something.
#[derive(Debug, Default)]
struct Shape {
    /// Ids of the nested bucket aggregations, outermost first.
    buckets: Vec<String>,
    /// Ids of sum metrics whose total over the leaf buckets must be above zero.
    sums: Vec<String>,
    /// Raw documents (Grafana `raw_data`, Kibana saved search).
    hits: bool,
}

/// A panel rebuilt: the index it reads, the fields it uses and the `_search` it sends.
#[derive(Debug)]
struct Panel {
    name: String,
    index: String,
    fields: BTreeSet<(String, Role)>,
    /// `Err`: what could not be rebuilt (reported as a failure naming the panel).
    request: Result<(Value, Shape), String>,
}

impl Panel {
    fn new(name: String, index: &str) -> Panel {
        Panel {
            name,
            index: index.to_owned(),
            fields: BTreeSet::new(),
            request: Err("not rebuilt".into()),
        }
    }

    fn field(&mut self, field: &str, role: Role) {
        self.fields.insert((field.to_owned(), role));
    }
}

/// A metric of a panel.
enum Metric {
    Count,
    /// `sum`, `avg`, `min`, `max`, `cardinality` over a field.
    Field(&'static str, String),
}

/// How a terms aggregation is ordered.
enum OrderBy {
    Count,
    Key,
    /// By the metric with this id.
    Metric(String),
}

/// A bucket aggregation of a panel.
enum Bucket {
    Terms {
        field: String,
        size: u64,
        order_by: OrderBy,
        descending: bool,
        min_doc_count: u64,
    },
    DateHistogram {
        field: String,
        interval: String,
        min_doc_count: u64,
    },
}

fn metric_type(name: &str) -> Option<&'static str> {
    ["sum", "avg", "min", "max", "cardinality"]
        .into_iter()
        .find(|t| *t == name)
}

/// `interval` of a date histogram as Elasticsearch's `fixed_interval`.
fn fixed_interval(interval: &str) -> Result<String, String> {
    if interval == "auto" || interval.is_empty() {
        return Ok(AUTO_INTERVAL.to_owned());
    }
    let digits = interval.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &interval[digits.len()..];
    if !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit())
        && ["ms", "s", "m", "h", "d"].contains(&unit)
    {
        Ok(interval.to_owned())
    } else {
        Err(format!(
            "date histogram interval {interval:?} is not rebuilt (only auto and fixed intervals)"
        ))
    }
}

/// Nests the bucket aggregations (outermost first) around the metrics, the way Grafana and
/// Kibana build their requests: metrics in the innermost buckets, and a terms aggregation
/// ordered by a metric gets that metric as its own sub-aggregation.
fn build_aggs(
    metrics: &[(String, Metric)],
    buckets: &[(String, Bucket)],
) -> Result<(Map<String, Value>, Shape), String> {
    let mut leaf = Map::new();
    let mut shape = Shape::default();
    for (id, metric) in metrics {
        if let Metric::Field(kind, field) = metric {
            leaf.insert(id.clone(), json!({ *kind: {"field": field} }));
            if *kind == "sum" {
                shape.sums.push(id.clone());
            }
        }
    }
    let mut inner = leaf.clone();
    for (id, bucket) in buckets.iter().rev() {
        let mut sub = inner;
        let agg = match bucket {
            Bucket::Terms {
                field,
                size,
                order_by,
                descending,
                min_doc_count,
            } => {
                let key = match order_by {
                    OrderBy::Count => "_count".to_owned(),
                    OrderBy::Key => "_key".to_owned(),
                    OrderBy::Metric(m) => match metrics.iter().find(|(mid, _)| mid == m) {
                        Some((_, Metric::Count)) => "_count".to_owned(),
                        Some(_) => {
                            sub.entry(m.clone()).or_insert_with(|| leaf[m].clone());
                            m.clone()
                        }
                        None => {
                            return Err(format!("terms `{field}` ordered by unknown metric {m}"));
                        }
                    },
                };
                let order = if *descending { "desc" } else { "asc" };
                json!({"terms": {
                    "field": field,
                    "size": size,
                    "min_doc_count": min_doc_count,
                    "order": { key: order },
                }})
            }
            Bucket::DateHistogram {
                field,
                interval,
                min_doc_count,
            } => json!({"date_histogram": {
                "field": field,
                "fixed_interval": interval,
                "min_doc_count": min_doc_count,
            }}),
        };
        let mut agg = agg;
        if !sub.is_empty() {
            agg["aggs"] = Value::Object(sub);
        }
        inner = Map::from_iter([(id.clone(), agg)]);
        shape.buckets.insert(0, id.clone());
    }
    Ok((inner, shape))
}

/// The time filter of a dashboard range. The generated records fill the current hour ahead of
/// the clock, so a range ending `now` ends an hour later here.
fn time_filter(field: &str, from: &str, to: &str) -> Value {
    let to = if to == "now" { "now+1h" } else { to };
    json!({"range": {field: {"gte": from, "lte": to}}})
}

/// One `field:value` clause of a query.
#[derive(Debug, PartialEq)]
struct Clause {
    field: String,
    value: String,
    quoted: bool,
}

/// Splits a Lucene (`a:x AND b:"y"`) or KQL (`a : x and b : "y"`) query made only of
/// `field:value` clauses joined by AND. Anything else is refused, so that a panel with a richer
/// query fails loudly instead of being checked half.
fn conjunction(query: &str) -> Result<Vec<Clause>, String> {
    let refuse = |why: &str| Err(format!("query {query:?} is not rebuilt: {why}"));
    if query.trim() == "*" {
        return Ok(Vec::new()); // Lucene's "everything"
    }
    // Tokens split on blanks outside quotes; `a : b` joined into `a:b`.
    let mut tokens: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut in_quotes = false;
    for c in query.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                current.push(c);
            }
            c if c.is_whitespace() && !in_quotes => {
                if !current.is_empty() {
                    tokens.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if in_quotes {
        return refuse("unbalanced quotes");
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    let mut joined: Vec<String> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if tokens[i] == ":" && !joined.is_empty() && i + 1 < tokens.len() {
            let field = joined.pop().unwrap();
            joined.push(format!("{field}:{}", tokens[i + 1]));
            i += 2;
        } else if tokens[i].ends_with(':') && !tokens[i].starts_with('"') && i + 1 < tokens.len() {
            joined.push(format!("{}{}", tokens[i], tokens[i + 1]));
            i += 2;
        } else if tokens[i].starts_with(':') && !joined.is_empty() {
            let field = joined.pop().unwrap();
            joined.push(format!("{field}{}", tokens[i]));
            i += 1;
        } else {
            joined.push(tokens[i].clone());
            i += 1;
        }
    }
    let mut clauses = Vec::new();
    for (n, token) in joined.iter().enumerate() {
        if n % 2 == 1 {
            if token != "AND" && token != "and" {
                return refuse(&format!("`{token}` (only AND is rebuilt)"));
            }
            continue;
        }
        let Some((field, value)) = token.split_once(':') else {
            return refuse(&format!("`{token}` is no field:value clause"));
        };
        let field_ok = !field.is_empty()
            && field
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "@_.-".contains(c));
        let quoted = value.len() >= 2 && value.starts_with('"') && value.ends_with('"');
        let plain_ok = !value.is_empty()
            && value
                .chars()
                .all(|c| c.is_alphanumeric() || "_.-*@$/".contains(c));
        if !field_ok || !(quoted || plain_ok) {
            return refuse(&format!("`{token}`"));
        }
        clauses.push(Clause {
            field: field.to_owned(),
            value: if quoted {
                value[1..value.len() - 1].to_owned()
            } else {
                value.to_owned()
            },
            quoted,
        });
    }
    if joined.len().is_multiple_of(2) && !joined.is_empty() {
        return refuse("ends with AND");
    }
    Ok(clauses)
}

/// Kibana's translation of a KQL conjunction: `match_phrase` for quoted values, `exists` for
/// `*`, `match` otherwise.
fn kql_filters(clauses: &[Clause]) -> Vec<Value> {
    clauses
        .iter()
        .map(|c| {
            if c.quoted {
                json!({"match_phrase": {c.field.as_str(): c.value}})
            } else if c.value == "*" {
                json!({"exists": {"field": c.field}})
            } else {
                json!({"match": {c.field.as_str(): c.value}})
            }
        })
        .collect()
}

/// A setting that Grafana stores as a string or a number.
fn setting_u64(v: &Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

fn id_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Grafana.

/// The contents of the Grafana data source provisioning files.
fn grafana_datasource_files() -> Vec<String> {
    let dir = repo().join(GRAFANA_DATASOURCES);
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap())
        .collect()
}

/// The data sources the provisioning files define.
#[derive(Debug, Default)]
struct DataSources {
    /// Elasticsearch: `uid` → (`index`, `timeField`).
    elasticsearch: BTreeMap<String, (String, String)>,
    /// Prometheus: their uids (what they scrape is not in the file; see [`check_prometheus`]).
    prometheus: BTreeSet<String>,
}

/// The data sources of the provisioning files (`files`: their contents).
fn grafana_datasources(files: &[String]) -> DataSources {
    /// The keys of one `- name:` entry that matter here.
    #[derive(Default)]
    struct Entry {
        uid: Option<String>,
        kind: Option<String>,
        index: Option<String>,
        time: Option<String>,
    }
    let mut out = DataSources::default();
    let mut flush = |e: Entry| match (e.uid, e.kind.as_deref(), e.index) {
        (Some(uid), Some("prometheus"), _) => {
            out.prometheus.insert(uid);
        }
        // An entry without `index:` is no usable Elasticsearch source: panels on it are
        // reported as reading a data source that is not provisioned.
        (Some(uid), _, Some(index)) => {
            let time = e.time.unwrap_or_else(|| "@timestamp".into());
            out.elasticsearch.insert(uid, (index, time));
        }
        _ => {}
    };
    for text in files {
        // Enough YAML for the provisioning files: `uid:`, `type:`, `index:` and `timeField:`
        // lines of each `- name:` entry.
        let mut entry = Entry::default();
        for line in text.lines().map(str::trim) {
            let value = |key: &str| {
                line.strip_prefix(key)
                    .map(|v| v.trim().trim_matches('"').to_owned())
            };
            if line.starts_with("- name:") {
                flush(std::mem::take(&mut entry));
            } else if let Some(v) = value("uid:") {
                entry.uid = Some(v);
            } else if let Some(v) = value("type:") {
                entry.kind = Some(v);
            } else if let Some(v) = value("index:") {
                entry.index = Some(v);
            } else if let Some(v) = value("timeField:") {
                entry.time = Some(v);
            }
        }
        flush(entry);
    }
    out
}

/// Every panel (rows' nested panels included) and query variable of the Grafana dashboard: the
/// ones on Elasticsearch data sources, and the Prometheus panel targets.
fn grafana_panels(dashboard: &Value, sources: &DataSources) -> (Vec<Panel>, Vec<PromPanel>) {
    let from = dashboard["time"]["from"].as_str().unwrap_or("now-6h");
    let to = dashboard["time"]["to"].as_str().unwrap_or("now");
    let vars: Vec<&Value> = dashboard["templating"]["list"]
        .as_array()
        .map(|l| l.iter().collect())
        .unwrap_or_default();
    // Every `$variable` at its "All" value, longest names first.
    let mut all_values: Vec<(String, String)> = vars
        .iter()
        .map(|v| {
            let all = match (&v["allValue"], v["includeAll"].as_bool()) {
                (Value::String(a), _) if !a.is_empty() => a.clone(),
                (_, Some(true)) => "*".to_owned(),
                _ => v["current"]["value"].as_str().unwrap_or("*").to_owned(),
            };
            (v["name"].as_str().unwrap_or_default().to_owned(), all)
        })
        .collect();
    all_values.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
    let substitute = |q: &str| {
        let mut q = q.to_owned();
        for (name, all) in &all_values {
            q = q.replace(&format!("${{{name}}}"), all);
            q = q.replace(&format!("${name}"), all);
        }
        q
    };
    let source_of = |ds: &Value| -> Result<(String, String), String> {
        let uid = ds["uid"].as_str().unwrap_or_default();
        sources
            .elasticsearch
            .get(uid)
            .cloned()
            .ok_or_else(|| format!("data source uid {uid:?} is not provisioned"))
    };

    let mut out = Vec::new();
    for var in &vars {
        let name = format!(
            "Grafana variable ${}",
            var["name"].as_str().unwrap_or_default()
        );
        if var["type"] != "query" {
            let mut p = Panel::new(name, "");
            p.request = Err(format!("variable type {} is not rebuilt", var["type"]));
            out.push(p);
            continue;
        }
        let (index, time_field) = match source_of(&var["datasource"]) {
            Ok(s) => s,
            Err(e) => {
                let mut p = Panel::new(name, "");
                p.request = Err(e);
                out.push(p);
                continue;
            }
        };
        let mut p = Panel::new(name, &index);
        p.request = (|| {
            let query: Value = match &var["query"] {
                Value::String(s) => {
                    serde_json::from_str(s).map_err(|e| format!("query is not JSON ({e}): {s}"))?
                }
                other => other.clone(),
            };
            if query["find"] != "terms" {
                return Err(format!(
                    "variable query {query} is not rebuilt (only find: terms)"
                ));
            }
            let field = query["field"]
                .as_str()
                .ok_or("variable query without field")?;
            p.field(field, Role::Value);
            p.field(&time_field, Role::Time);
            let lucene = query["query"].as_str().unwrap_or("*");
            for c in conjunction(&substitute(lucene))? {
                p.field(&c.field, Role::Value);
            }
            let size = setting_u64(&query["size"]).unwrap_or(GRAFANA_TERMS_ALL);
            let body = json!({
                "size": 0,
                "query": {"bool": {"filter": [
                    time_filter(&time_field, from, to),
                    {"query_string": {"query": substitute(lucene), "analyze_wildcard": true}},
                ]}},
                "aggs": {"1": {"terms": {"field": field, "size": size, "order": {"_key": "asc"}}}},
            });
            let shape = Shape {
                buckets: vec!["1".into()],
                ..Shape::default()
            };
            Ok((body, shape))
        })();
        out.push(p);
    }

    let mut prometheus = Vec::new();
    let mut panels: Vec<&Value> = dashboard["panels"]
        .as_array()
        .map(|l| l.iter().collect())
        .unwrap_or_default();
    let mut i = 0;
    while i < panels.len() {
        let panel = panels[i];
        i += 1;
        if let Some(nested) = panel["panels"].as_array() {
            panels.extend(nested);
        }
        if panel["type"] == "row" {
            continue;
        }
        let name = format!(
            "Grafana panel {} {:?}",
            panel["id"],
            panel["title"].as_str().unwrap_or_default()
        );
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            let mut p = Panel::new(name, "");
            p.request = Err(format!(
                "{} panel without targets is not rebuilt",
                panel["type"]
            ));
            out.push(p);
            continue;
        }
        for (n, target) in targets.iter().enumerate() {
            let name = if targets.len() > 1 {
                format!("{name} target {}", target["refId"])
            } else {
                name.clone()
            };
            let ds = if target["datasource"].is_object() {
                &target["datasource"]
            } else {
                &panel["datasource"]
            };
            if sources
                .prometheus
                .contains(ds["uid"].as_str().unwrap_or_default())
            {
                let request = if target["hide"] == true {
                    Err(format!("target {n} is hidden: remove it or show it"))
                } else {
                    target["expr"]
                        .as_str()
                        .ok_or_else(|| "Prometheus target without expr".to_owned())
                        .and_then(promql)
                };
                prometheus.push(PromPanel {
                    name: name.replacen("Grafana panel", "Grafana Prometheus panel", 1),
                    request,
                });
                continue;
            }
            let (index, ds_time) = match source_of(ds) {
                Ok(s) => s,
                Err(e) => {
                    let mut p = Panel::new(name, "");
                    p.request = Err(e);
                    out.push(p);
                    continue;
                }
            };
            let mut p = Panel::new(name, &index);
            if target["hide"] == true {
                p.request = Err(format!("target {n} is hidden: remove it or show it"));
                out.push(p);
                continue;
            }
            let time_field = target["timeField"].as_str().unwrap_or(&ds_time).to_owned();
            p.field(&time_field, Role::Time);
            // Columns a table shows.
            for t in panel["transformations"].as_array().into_iter().flatten() {
                for key in ["includeByName", "indexByName"] {
                    for column in t["options"][key].as_object().into_iter().flatten() {
                        p.field(column.0, Role::Value);
                    }
                }
            }
            p.request = grafana_target(&mut p, target, &time_field, from, to, &substitute);
            out.push(p);
        }
    }
    (out, prometheus)
}

fn grafana_target(
    p: &mut Panel,
    target: &Value,
    time_field: &str,
    from: &str,
    to: &str,
    substitute: &dyn Fn(&str) -> String,
) -> Result<(Value, Shape), String> {
    let lucene = substitute(target["query"].as_str().unwrap_or(""));
    for c in conjunction(&lucene)? {
        p.field(&c.field, Role::Value);
    }
    let query = json!({"bool": {"filter": [
        time_filter(time_field, from, to),
        {"query_string": {
            "query": if lucene.trim().is_empty() { "*" } else { lucene.as_str() },
            "analyze_wildcard": true,
        }},
    ]}});
    let metrics = target["metrics"].as_array().cloned().unwrap_or_default();
    let bucket_aggs = target["bucketAggs"].as_array().cloned().unwrap_or_default();
    if metrics.is_empty() {
        return Err("target without metrics".into());
    }
    if let Some(raw) = metrics
        .iter()
        .find(|m| matches!(m["type"].as_str(), Some("raw_data" | "raw_document")))
    {
        if metrics.len() > 1 || !bucket_aggs.is_empty() {
            return Err("raw_data next to other metrics or bucket aggregations".into());
        }
        let size = setting_u64(&raw["settings"]["size"]).unwrap_or(500);
        let body = json!({
            "size": size,
            "query": query,
            "sort": [{time_field: {"order": "desc"}}],
        });
        let shape = Shape {
            hits: true,
            ..Shape::default()
        };
        return Ok((body, shape));
    }
    let mut ms = Vec::new();
    for m in &metrics {
        let id = id_of(&m["id"]);
        let kind = m["type"].as_str().unwrap_or_default();
        if kind == "count" {
            ms.push((id, Metric::Count));
        } else if let Some(kind) = metric_type(kind) {
            let field = m["field"]
                .as_str()
                .ok_or_else(|| format!("{kind} metric without field"))?;
            let role = if kind == "cardinality" {
                Role::Value
            } else {
                Role::Numeric
            };
            p.field(field, role);
            ms.push((id, Metric::Field(kind, field.to_owned())));
        } else {
            return Err(format!("metric type {kind:?} is not rebuilt"));
        }
    }
    let mut bs = Vec::new();
    for b in &bucket_aggs {
        let id = id_of(&b["id"]);
        let field = b["field"]
            .as_str()
            .ok_or_else(|| format!("bucket aggregation {id} without field"))?
            .to_owned();
        let s = &b["settings"];
        let bucket = match b["type"].as_str().unwrap_or_default() {
            "terms" => {
                p.field(&field, Role::Value);
                let size = match setting_u64(&s["size"]).unwrap_or(10) {
                    0 => GRAFANA_TERMS_ALL,
                    n => n,
                };
                let order_by = match s["orderBy"].as_str().unwrap_or("_term") {
                    "_term" | "_key" => OrderBy::Key,
                    "_count" => OrderBy::Count,
                    metric => OrderBy::Metric(metric.to_owned()),
                };
                Bucket::Terms {
                    field,
                    size,
                    order_by,
                    descending: s["order"].as_str().unwrap_or("desc") == "desc",
                    min_doc_count: setting_u64(&s["min_doc_count"]).unwrap_or(1),
                }
            }
            "date_histogram" => {
                p.field(&field, Role::Time);
                Bucket::DateHistogram {
                    field,
                    interval: fixed_interval(s["interval"].as_str().unwrap_or("auto"))?,
                    min_doc_count: setting_u64(&s["min_doc_count"]).unwrap_or(0),
                }
            }
            other => return Err(format!("bucket aggregation {other:?} is not rebuilt")),
        };
        bs.push((id, bucket));
    }
    let (aggs, shape) = build_aggs(&ms, &bs)?;
    let mut body = json!({"size": 0, "track_total_hits": true, "query": query});
    if !aggs.is_empty() {
        body["aggs"] = Value::Object(aggs);
    }
    Ok((body, shape))
}

// ---------------------------------------------------------------------------------------------
// Grafana panels on Prometheus: their PromQL against flowlogd's /metrics exposition.

/// A Grafana panel target on a Prometheus data source, rebuilt.
#[derive(Debug)]
struct PromPanel {
    name: String,
    /// `Err`: what could not be rebuilt (reported as a failure naming the panel).
    request: Result<PromQuery, String>,
}

/// What a PromQL expression reads.
#[derive(Debug, Default, PartialEq)]
struct PromQuery {
    /// Each selected metric (sample name) → the labels its `{…}` matchers name.
    metrics: BTreeMap<String, BTreeSet<String>>,
    /// Labels of `by (…)`, `without (…)`, `on (…)`, `ignoring (…)`, `group_left (…)`,
    /// `group_right (…)`.
    grouping: BTreeSet<String>,
}

/// Words of PromQL that are never metric names: aggregation operators (written before their
/// `by (…)`, so not always followed by a parenthesis like a function) and keywords.
const PROMQL_WORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "atan2",
];
/// Keywords followed by a list of label names.
const PROMQL_GROUPING: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names and labels of a PromQL expression: identifiers that are not functions
/// (followed by `(`), aggregation operators or keywords are metric selectors; `{…}` after
/// one holds its label matchers (a selector with only `{__name__="…"}` names its metric there);
/// `[…]` (ranges, subqueries), strings, numbers and durations, `$variables` and operators are
/// skipped. What the scanner cannot place (an unclosed bracket, a matcher without a quoted
/// value, a selector without a metric name) is refused, so a richer query fails loudly.
fn promql(expr: &str) -> Result<PromQuery, String> {
    let refuse = |why: String| Err(format!("PromQL {expr:?} is not rebuilt: {why}"));
    let chars: Vec<char> = expr.chars().collect();
    let ident_start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':';
    let ident_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    let ident = |i: &mut usize| {
        let start = *i;
        while *i < chars.len() && ident_char(chars[*i]) {
            *i += 1;
        }
        chars[start..*i].iter().collect::<String>()
    };
    // A quoted string at `i` (PromQL's "…", '…' with backslash escapes, `…` raw): its value.
    let string = |i: &mut usize| -> Option<String> {
        let quote = *chars.get(*i)?;
        if !matches!(quote, '"' | '\'' | '`') {
            return None;
        }
        *i += 1;
        let mut value = String::new();
        while let Some(&c) = chars.get(*i) {
            *i += 1;
            match c {
                c if c == quote => return Some(value),
                '\\' if quote != '`' => {
                    value.push(*chars.get(*i)?);
                    *i += 1;
                }
                c => value.push(c),
            }
        }
        None
    };
    // `{label op "value", …}` at `i`: the labels, and the value of an `__name__ =` matcher.
    let matchers = |i: &mut usize| -> Result<(BTreeSet<String>, Option<String>), String> {
        *i += 1;
        let mut labels = BTreeSet::new();
        let mut name = None;
        loop {
            skip_ws(i);
            if chars.get(*i) == Some(&'}') {
                *i += 1;
                return Ok((labels, name));
            }
            if !chars.get(*i).is_some_and(|&c| ident_start(c)) {
                return Err(format!("a label name expected at {}", *i));
            }
            let label = ident(i);
            skip_ws(i);
            let op: String = chars[*i..].iter().take(2).collect();
            let op = if op == "=~" || op == "!~" || op == "!=" {
                op
            } else if op.starts_with('=') {
                "=".to_owned()
            } else {
                return Err(format!("a matcher operator expected after `{label}`"));
            };
            *i += op.len();
            skip_ws(i);
            let value =
                string(i).ok_or_else(|| format!("a quoted value expected after `{label}{op}`"))?;
            if label == "__name__" {
                if op != "=" {
                    return Err("only `__name__ = \"…\"` names a metric here".into());
                }
                name = Some(value);
            } else {
                labels.insert(label);
            }
            skip_ws(i);
            match chars.get(*i) {
                Some(',') => *i += 1,
                Some('}') => {}
                _ => return Err(format!("`,` or `}}` expected at {}", *i)),
            }
        }
    };

    let mut query = PromQuery::default();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if matches!(c, '"' | '\'' | '`') {
            if string(&mut i).is_none() {
                return refuse("unclosed string".into());
            }
        } else if c == '[' {
            // A range or subquery: durations and `$__rate_interval`, no metric.
            match chars[i..].iter().position(|&c| c == ']') {
                Some(n) => i += n + 1,
                None => return refuse("unclosed `[`".into()),
            }
        } else if c == '$' {
            i += 1;
            ident(&mut i);
        } else if c.is_ascii_digit() || c == '.' {
            // Numbers and durations (`5m`, `1h30m`, `1e3`, `0x1f`).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c == '{' {
            match matchers(&mut i) {
                Ok((labels, Some(name))) => query.metrics.entry(name).or_default().extend(labels),
                Ok((_, None)) => return refuse("a selector without a metric name".into()),
                Err(e) => return refuse(e),
            }
        } else if ident_start(c) {
            let word = ident(&mut i);
            let mut next = i;
            skip_ws(&mut next);
            if PROMQL_GROUPING.contains(&word.as_str()) {
                if chars.get(next) != Some(&'(') {
                    // `group_left` may stand without labels; the others take a list.
                    if word.starts_with("group_") {
                        continue;
                    }
                    return refuse(format!("`{word}` without a label list"));
                }
                let Some(len) = chars[next..].iter().position(|&c| c == ')') else {
                    return refuse(format!("unclosed label list of `{word}`"));
                };
                let list: String = chars[next + 1..next + len].iter().collect();
                for label in list.split(',').map(str::trim).filter(|l| !l.is_empty()) {
                    if !label.chars().all(ident_char) {
                        return refuse(format!("`{label}` in `{word} (…)` is no label name"));
                    }
                    query.grouping.insert(label.to_owned());
                }
                i = next + len + 1;
            } else if PROMQL_WORDS.contains(&word.as_str()) || chars.get(next) == Some(&'(') {
                // An operator, a keyword or a function call: its arguments follow.
            } else {
                let labels = if chars.get(next) == Some(&'{') {
                    i = next;
                    match matchers(&mut i) {
                        Ok((labels, None)) => labels,
                        Ok((_, Some(_))) => {
                            return refuse(format!("`{word}` with a `__name__` matcher too"));
                        }
                        Err(e) => return refuse(e),
                    }
                } else {
                    BTreeSet::new()
                };
                query.metrics.entry(word).or_default().extend(labels);
            }
        } else {
            // Operators, parentheses, commas, `@`.
            i += 1;
        }
    }
    Ok(query)
}

/// Sample name → label names of every sample line of a Prometheus/OpenMetrics text exposition
/// (`# HELP`/`# TYPE` lines skipped: a counter's family is `x`, its samples `x_total`, and a
/// query selects samples).
fn exposition_samples(text: &str) -> Result<BTreeMap<String, BTreeSet<String>>, String> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..end].to_owned()).or_default();
        let Some(rest) = line[end..].strip_prefix('{') else {
            continue;
        };
        // `name="value",…}`: values are quoted with backslash escapes.
        let mut chars = rest.chars();
        loop {
            let label: String = chars.by_ref().take_while(|&c| c != '=').collect();
            if label.is_empty() || chars.next() != Some('"') {
                return Err(format!("sample line not understood: {line}"));
            }
            labels.insert(label);
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        chars.next();
                    }
                    '"' => break,
                    _ => {}
                }
            }
            match chars.next() {
                Some(',') => {}
                Some('}') => break,
                _ => return Err(format!("sample line not understood: {line}")),
            }
        }
    }
    Ok(out)
}

/// The sample names and labels of flowlogd's `/metrics`: the exposition the daemon's HTTP
/// server returns (`Metrics::render`), for one source, with the `[[filter]]` counter family
/// present (as in a daemon with filter rules, the only case in which it is rendered).
fn flowlogd_metrics() -> BTreeMap<String, BTreeSet<String>> {
    use flowlogd::metrics::{FilterCounts, Metrics};
    let metrics = std::sync::Arc::new(Metrics::new([(
        "vnet".to_owned(),
        std::sync::Arc::default(),
    )]));
    metrics
        .tuples_filtered
        .set(FilterCounts(Box::new(|| {
            vec![("drop-azure-platform".to_owned(), 7)]
        })))
        .unwrap();
    let text = metrics.render(chrono::Utc::now().timestamp_millis());
    let samples = exposition_samples(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(
        samples.contains_key("flowlogd_tuples_filtered_total"),
        "the filter counter is rendered:\n{text}"
    );
    samples
}

/// Every problem of a Prometheus panel against the sample names and labels of flowlogd's
/// `/metrics` (empty: every series it selects exists there).
fn check_prometheus(
    panel: &PromPanel,
    samples: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<String> {
    let name = &panel.name;
    let query = match &panel.request {
        Ok(q) => q,
        Err(e) => return vec![format!("{name}: cannot be rebuilt: {e}")],
    };
    let mut problems = Vec::new();
    if query.metrics.is_empty() {
        problems.push(format!("{name}: selects no metric"));
    }
    for (metric, labels) in &query.metrics {
        let Some(has) = samples.get(metric) else {
            problems.push(format!(
                "{name}: metric `{metric}` is not in flowlogd's /metrics, which has {:?}",
                samples.keys().collect::<Vec<_>>()
            ));
            continue;
        };
        for label in labels.difference(has) {
            problems.push(format!(
                "{name}: label `{label}` is not on `{metric}` in flowlogd's /metrics, which has {has:?}"
            ));
        }
    }
    for label in &query.grouping {
        let on_some = query
            .metrics
            .keys()
            .any(|m| samples.get(m).is_some_and(|has| has.contains(label)));
        if !on_some {
            problems.push(format!(
                "{name}: groups by label `{label}`, which none of {:?} has in flowlogd's /metrics",
                query.metrics.keys().collect::<Vec<_>>()
            ));
        }
    }
    problems
}

// ---------------------------------------------------------------------------------------------
// Kibana.

fn nested_json(v: &Value) -> Result<Value, String> {
    match v.as_str() {
        Some(s) => serde_json::from_str(s).map_err(|e| format!("nested JSON ({e}): {s}")),
        None => Ok(Value::Null),
    }
}

/// Every panel of the Kibana dashboard(s), every visualization and saved search of the file
/// (on a dashboard or not), and the data views.
fn kibana_panels(ndjson: &str) -> (Vec<Panel>, usize) {
    let objects: Vec<Value> = ndjson
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{KIBANA_OBJECTS}: {e}")))
        .collect();
    let key = |o: &Value| {
        (
            o["type"].as_str().unwrap_or_default().to_owned(),
            o["id"].as_str().unwrap_or_default().to_owned(),
        )
    };
    let by_key: BTreeMap<(String, String), &Value> = objects.iter().map(|o| (key(o), o)).collect();
    let reference = |o: &Value, name: &str| -> Option<(String, String)> {
        o["references"]
            .as_array()?
            .iter()
            .find(|r| r["name"] == name)
            .map(key)
    };

    let mut out = Vec::new();
    // The dashboards: their time range and query, and what each panel refers to.
    let mut range = ("now-15m".to_owned(), "now".to_owned());
    let mut dashboard_query = String::new();
    let mut on_dashboards = 0;
    let mut shown = BTreeSet::new();
    for d in objects.iter().filter(|o| o["type"] == "dashboard") {
        let a = &d["attributes"];
        let title = a["title"].as_str().unwrap_or_default();
        if a["timeRestore"] == true {
            range = (
                a["timeFrom"].as_str().unwrap_or("now-15m").to_owned(),
                a["timeTo"].as_str().unwrap_or("now").to_owned(),
            );
        }
        let problem = |what: String| {
            let mut p = Panel::new(format!("Kibana dashboard {title:?}: {what}"), "");
            p.request = Err(what);
            p
        };
        match nested_json(&a["kibanaSavedObjectMeta"]["searchSourceJSON"]) {
            Ok(s) => {
                dashboard_query = s["query"]["query"].as_str().unwrap_or_default().to_owned();
                if s["filter"].as_array().is_some_and(|f| !f.is_empty()) {
                    out.push(problem("dashboard filters are not rebuilt".into()));
                }
            }
            Err(e) => out.push(problem(e)),
        }
        let panels = match nested_json(&a["panelsJSON"]) {
            Ok(Value::Array(p)) => p,
            other => {
                out.push(problem(format!("panelsJSON is no array: {other:?}")));
                continue;
            }
        };
        for panel in panels {
            on_dashboards += 1;
            let refname = panel["panelRefName"].as_str().unwrap_or_default();
            match reference(d, refname).filter(|k| by_key.contains_key(k)) {
                Some(k) => {
                    shown.insert(k);
                }
                None => out.push(problem(format!(
                    "panel {} ({refname:?}) refers to no object of the file (by-value panels are not rebuilt)",
                    panel["panelIndex"]
                ))),
            }
        }
    }

    for o in &objects {
        let (kind, id) = key(o);
        let a = &o["attributes"];
        let title = a["title"].as_str().unwrap_or_default();
        match kind.as_str() {
            "index-pattern" => {
                let index = a["title"].as_str().unwrap_or_default();
                let mut p = Panel::new(format!("Kibana data view {id} ({index})"), index);
                p.request = (|| {
                    let time = a["timeFieldName"]
                        .as_str()
                        .ok_or("data view without timeFieldName")?;
                    p.field(time, Role::Time);
                    let formats = nested_json(&a["fieldFormatMap"])?;
                    for (field, format) in formats.as_object().into_iter().flatten() {
                        let numeric = ["bytes", "number", "percent"]
                            .contains(&format["id"].as_str().unwrap_or_default());
                        p.field(field, if numeric { Role::Numeric } else { Role::Value });
                    }
                    let body = json!({
                        "size": 0,
                        "track_total_hits": true,
                        "query": time_filter(time, &range.0, &range.1),
                    });
                    Ok((body, Shape::default()))
                })();
                out.push(p);
            }
            "visualization" | "search" => {
                let on = if shown.contains(&(kind.clone(), id.clone())) {
                    "on the dashboard"
                } else {
                    "on no dashboard"
                };
                let name = format!("Kibana {kind} {id} {title:?} ({on})");
                let data_view = reference(o, "kibanaSavedObjectMeta.searchSourceJSON.index")
                    .and_then(|k| by_key.get(&k).copied());
                let Some(data_view) = data_view else {
                    let mut p = Panel::new(name, "");
                    p.request = Err("no data view reference (searchSourceJSON.index)".into());
                    out.push(p);
                    continue;
                };
                let index = data_view["attributes"]["title"]
                    .as_str()
                    .unwrap_or_default();
                let time = data_view["attributes"]["timeFieldName"]
                    .as_str()
                    .unwrap_or("@timestamp")
                    .to_owned();
                let mut p = Panel::new(name, index);
                p.request = kibana_object(&mut p, &kind, a, &time, &range, &dashboard_query);
                out.push(p);
            }
            "dashboard" => {}
            other => {
                let mut p = Panel::new(format!("Kibana {other} {id}"), "");
                p.request = Err(format!("saved object type {other} is not rebuilt"));
                out.push(p);
            }
        }
    }
    (out, on_dashboards)
}

fn kibana_object(
    p: &mut Panel,
    kind: &str,
    a: &Value,
    time: &str,
    range: &(String, String),
    dashboard_query: &str,
) -> Result<(Value, Shape), String> {
    p.field(time, Role::Time);
    let search = nested_json(&a["kibanaSavedObjectMeta"]["searchSourceJSON"])?;
    if search["filter"].as_array().is_some_and(|f| !f.is_empty()) {
        return Err("searchSourceJSON filters are not rebuilt".into());
    }
    let language = search["query"]["language"].as_str().unwrap_or("kuery");
    if language != "kuery" {
        return Err(format!("query language {language} is not rebuilt"));
    }
    let mut filter = vec![time_filter(time, &range.0, &range.1)];
    for kql in [
        search["query"]["query"].as_str().unwrap_or(""),
        dashboard_query,
    ] {
        let clauses = conjunction(kql)?;
        for c in &clauses {
            p.field(&c.field, Role::Value);
        }
        filter.extend(kql_filters(&clauses));
    }
    let query = json!({"bool": {"filter": filter}});

    if kind == "search" {
        let mut sort = Vec::new();
        for s in a["sort"].as_array().into_iter().flatten() {
            let field = s[0].as_str().ok_or("sort without field")?;
            let role = if field == time {
                Role::Time
            } else {
                Role::Value
            };
            p.field(field, role);
            sort.push(json!({field: {"order": s[1].as_str().unwrap_or("desc")}}));
        }
        for column in a["columns"].as_array().into_iter().flatten() {
            p.field(column.as_str().ok_or("column is no string")?, Role::Value);
        }
        let body = json!({"size": 100, "query": query, "sort": sort});
        let shape = Shape {
            hits: true,
            ..Shape::default()
        };
        return Ok((body, shape));
    }

    let vis = nested_json(&a["visState"])?;
    let aggs: Vec<&Value> = vis["aggs"]
        .as_array()
        .ok_or("visState without aggs (TSVB, Lens or Vega are not rebuilt)")?
        .iter()
        .filter(|agg| agg["enabled"] != false)
        .collect();
    let mut ms = Vec::new();
    let mut bs = Vec::new();
    for agg in &aggs {
        let id = id_of(&agg["id"]);
        let kind = agg["type"].as_str().unwrap_or_default();
        let params = &agg["params"];
        let field = params["field"].as_str().map(str::to_owned);
        let need_field = || {
            field
                .clone()
                .ok_or_else(|| format!("{kind} aggregation without field"))
        };
        match kind {
            "count" => ms.push((id, Metric::Count)),
            "terms" => {
                let field = need_field()?;
                p.field(&field, Role::Value);
                let order_by = match params["orderBy"].as_str().unwrap_or("_key") {
                    "_key" | "_term" => OrderBy::Key,
                    "_count" => OrderBy::Count,
                    "custom" => {
                        return Err("terms ordered by a custom metric is not rebuilt".into());
                    }
                    m => OrderBy::Metric(m.to_owned()),
                };
                let order = match &params["order"] {
                    Value::String(s) => s.clone(),
                    other => other["value"].as_str().unwrap_or("desc").to_owned(),
                };
                if params["otherBucket"] == true || params["missingBucket"] == true {
                    return Err("terms with other/missing buckets is not rebuilt".into());
                }
                bs.push((
                    id,
                    Bucket::Terms {
                        field,
                        size: params["size"].as_u64().unwrap_or(5),
                        order_by,
                        descending: order == "desc",
                        min_doc_count: 1,
                    },
                ));
            }
            "date_histogram" => {
                let field = need_field()?;
                p.field(&field, Role::Time);
                bs.push((
                    id,
                    Bucket::DateHistogram {
                        field,
                        interval: fixed_interval(params["interval"].as_str().unwrap_or("auto"))?,
                        min_doc_count: params["min_doc_count"].as_u64().unwrap_or(1),
                    },
                ));
            }
            other => match metric_type(other) {
                Some(t) => {
                    let field = need_field()?;
                    p.field(
                        &field,
                        if t == "cardinality" {
                            Role::Value
                        } else {
                            Role::Numeric
                        },
                    );
                    ms.push((id, Metric::Field(t, field)));
                }
                None => return Err(format!("aggregation type {other:?} is not rebuilt")),
            },
        }
    }
    if ms.is_empty() {
        return Err("visualization without a metric".into());
    }
    // Kibana nests bucket aggregations in the order of `aggs`, metrics innermost.
    let (aggs, shape) = build_aggs(&ms, &bs)?;
    let mut body = json!({"size": 0, "track_total_hits": true, "query": query});
    if !aggs.is_empty() {
        body["aggs"] = Value::Object(aggs);
    }
    Ok((body, shape))
}

// ---------------------------------------------------------------------------------------------
// Checks against the engine.

/// The mapping of `field` (dotted path) in a `mappings` object, multi-fields included.
fn mapping_of<'a>(mappings: &'a Value, field: &str) -> Option<&'a Value> {
    fn walk<'a>(props: &'a Value, segments: &[&str]) -> Option<&'a Value> {
        // Try the longest key first, so `a.b` mapped as a dotted name is found too.
        for n in (1..=segments.len()).rev() {
            let Some(node) = props.get(segments[..n].join(".")) else {
                continue;
            };
            let rest = &segments[n..];
            if rest.is_empty() {
                return Some(node);
            }
            if let Some(found) = node
                .get("properties")
                .and_then(|p| walk(p, rest))
                .or_else(|| node.get("fields").and_then(|f| walk(f, rest)))
            {
                return Some(found);
            }
        }
        None
    }
    let segments: Vec<&str> = field.split('.').collect();
    walk(mappings.get("properties")?, &segments)
}

/// The value at a dotted path of a document source (first element of arrays).
fn value_at<'a>(source: &'a Value, field: &str) -> Option<&'a Value> {
    fn walk<'a>(v: &'a Value, segments: &[&str]) -> Option<&'a Value> {
        let v = match v {
            Value::Array(items) => items.first()?,
            v => v,
        };
        if segments.is_empty() {
            return Some(v);
        }
        (1..=segments.len())
            .rev()
            .find_map(|n| walk(v.get(segments[..n].join("."))?, &segments[n..]))
    }
    let segments: Vec<&str> = field.split('.').collect();
    walk(source, &segments)
}

/// The mapping type a field needs for the values it holds.
fn expected_type(sample: &Value) -> &'static [&'static str] {
    match sample {
        Value::String(s) if s.parse::<IpAddr>().is_ok() => &["ip"],
        Value::String(s) if chrono::DateTime::parse_from_rfc3339(s).is_ok() => {
            &["date", "date_nanos"]
        }
        Value::String(_) => &["keyword", "constant_keyword"],
        Value::Number(_) => NUMERIC,
        Value::Bool(_) => &["boolean"],
        _ => &[],
    }
}

/// What the engine holds about one field of an index pattern.
#[derive(Debug)]
struct FieldFacts {
    /// Type in the index template that applies to the pattern's indices.
    template: Result<String, String>,
    /// Type in each concrete index's mapping.
    indices: BTreeMap<String, Option<String>>,
    /// Documents with a value.
    exists: u64,
    /// A value from one of them.
    sample: Option<Value>,
    /// What `_field_caps` (where Kibana and Grafana learn a data source's fields) says: each
    /// type the field has across the pattern's indices, and whether it is searchable and
    /// aggregatable there.
    caps: BTreeMap<String, (bool, bool)>,
}

/// Glob match with `*` only (index patterns).
fn glob(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => {
            name.starts_with(head)
                && (0..=name.len() - head.len()).any(|i| {
                    name.is_char_boundary(head.len() + i) && glob(tail, &name[head.len() + i..])
                })
        }
    }
}

/// A concrete index: its mapping, and the name and mappings of the template the engine applied.
struct IndexInfo {
    mapping: Value,
    template: Result<(String, Value), String>,
}

struct Checker<'a> {
    es: &'a Engine,
    /// The index pattern every panel must read: the wildcard of the default config's index.
    default_wildcard: String,
    facts: BTreeMap<(String, String), FieldFacts>,
    /// Index pattern → (concrete index → mapping, template name and mappings of the index).
    indices: BTreeMap<String, BTreeMap<String, IndexInfo>>,
}

impl<'a> Checker<'a> {
    fn new(es: &'a Engine, default_wildcard: &str) -> Checker<'a> {
        Checker {
            es,
            default_wildcard: default_wildcard.to_owned(),
            facts: BTreeMap::new(),
            indices: BTreeMap::new(),
        }
    }

    /// The concrete indices of a pattern, each with its mapping and the template the engine applied
    /// (the matching composable template of highest priority, as Elasticsearch picks it).
    fn indices(&mut self, pattern: &str) -> &BTreeMap<String, IndexInfo> {
        if !self.indices.contains_key(pattern) {
            let (status, mappings) =
                self.es
                    .call(Method::Get, &format!("{pattern}/_mapping"), None);
            assert_eq!(status, 200, "GET {pattern}/_mapping: {mappings}");
            let (status, templates) = self.es.call(Method::Get, "_index_template", None);
            assert_eq!(status, 200, "GET _index_template: {templates}");
            let mut out = BTreeMap::new();
            for (index, m) in mappings.as_object().into_iter().flatten() {
                let template = templates["index_templates"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|t| {
                        t["index_template"]["index_patterns"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|p| glob(p.as_str().unwrap_or_default(), index))
                    })
                    .max_by_key(|t| t["index_template"]["priority"].as_i64().unwrap_or(0))
                    .map(|t| {
                        let name = t["name"].as_str().unwrap_or_default().to_owned();
                        let (status, full) =
                            self.es
                                .call(Method::Get, &format!("_index_template/{name}"), None);
                        assert_eq!(status, 200, "GET _index_template/{name}: {full}");
                        let mappings =
                            full["index_templates"][0]["index_template"]["template"]["mappings"]
                                .clone();
                        (name, mappings)
                    })
                    .ok_or_else(|| format!("no index template applies to {index}"));
                out.insert(
                    index.clone(),
                    IndexInfo {
                        mapping: m["mappings"].clone(),
                        template,
                    },
                );
            }
            self.indices.insert(pattern.to_owned(), out);
        }
        &self.indices[pattern]
    }

    fn facts(&mut self, pattern: &str, field: &str) -> &FieldFacts {
        let key = (pattern.to_owned(), field.to_owned());
        if !self.facts.contains_key(&key) {
            let type_of = |m: Option<&Value>| m.and_then(|m| m["type"].as_str()).map(str::to_owned);
            let indices = self.indices(pattern);
            let mut templates = BTreeMap::new();
            let mut types = BTreeMap::new();
            for (index, info) in indices {
                types.insert(index.clone(), type_of(mapping_of(&info.mapping, field)));
                match &info.template {
                    Ok((name, mappings)) => {
                        let t = type_of(mapping_of(mappings, field)).ok_or_else(|| {
                            format!("not mapped in index template {name} (applied to {index})")
                        });
                        templates.insert(format!("{t:?}"), t);
                    }
                    Err(e) => {
                        templates.insert(e.clone(), Err(e.clone()));
                    }
                }
            }
            let template = match templates.len() {
                0 => Err(format!("no index matches {pattern}")),
                1 => templates.into_values().next().unwrap(),
                _ => Err(format!(
                    "the templates of {pattern}'s indices disagree: {templates:?}"
                )),
            };
            let body = json!({
                "size": 1,
                "track_total_hits": true,
                "query": {"exists": {"field": field}},
                "_source": [field],
            });
            let response = self
                .es
                .search(pattern, &body)
                .unwrap_or_else(|e| panic!("exists query for {field} on {pattern}: {e}"));
            let exists = response["hits"]["total"]["value"].as_u64().unwrap_or(0);
            let sample = response["hits"]["hits"][0]["_source"]
                .as_object()
                .and_then(|s| value_at(&Value::Object(s.clone()), field).cloned());
            let (status, response) = self.es.call(
                Method::Get,
                &format!("{pattern}/_field_caps?fields={field}"),
                None,
            );
            assert_eq!(
                status, 200,
                "_field_caps of {field} on {pattern}: {response}"
            );
            let caps = response["fields"][field]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(ty, c)| {
                    let yes = |key: &str| c[key].as_bool().unwrap_or(false);
                    (ty.clone(), (yes("searchable"), yes("aggregatable")))
                })
                .collect();
            self.facts.insert(
                key.clone(),
                FieldFacts {
                    template,
                    indices: types,
                    exists,
                    sample,
                    caps,
                },
            );
        }
        &self.facts[&key]
    }

    /// Every problem of a panel (empty: the panel works on the ingested data).
    fn check(&mut self, panel: &Panel) -> Vec<String> {
        let name = &panel.name;
        let mut problems = Vec::new();
        let (body, shape) = match &panel.request {
            Ok(r) => r,
            Err(e) => return vec![format!("{name}: cannot be rebuilt: {e}")],
        };
        if panel.index != self.default_wildcard {
            problems.push(format!(
                "{name}: reads index pattern {:?}, but flowlogd's default config writes {:?}",
                panel.index, self.default_wildcard
            ));
        }
        // The dashboard's pattern behind this run's prefix: only this run's indices.
        let index = format!("{}-{}", self.es.es.prefix, panel.index);
        if panel.fields.is_empty() && !shape.hits {
            problems.push(format!(
                "{name}: uses no field (did the panel format change?)"
            ));
        }
        for (field, role) in &panel.fields {
            let facts = self.facts(&index, field);
            let ty = match &facts.template {
                Ok(ty) => ty.clone(),
                Err(e) => {
                    problems.push(format!("{name}: field `{field}`: {e}"));
                    continue;
                }
            };
            for (index, t) in &facts.indices {
                if t.as_deref() != Some(ty.as_str()) {
                    problems.push(format!(
                        "{name}: field `{field}` is {ty} in the template but {t:?} in index {index}"
                    ));
                }
            }
            if facts.exists == 0 {
                problems.push(format!(
                    "{name}: field `{field}` ({ty}) has no value in any document of {index}"
                ));
                continue;
            }
            // Time fields are histogrammed and sorted on, numeric fields summed.
            let aggregated = matches!(role, Role::Time | Role::Numeric);
            match facts.caps.iter().collect::<Vec<_>>()[..] {
                [(t, &(searchable, aggregatable))]
                    if *t == ty && searchable && (aggregatable || !aggregated) => {}
                _ => problems.push(format!(
                    "{name}: field `{field}` ({ty} in the template) is, by _field_caps of {index}, \
                     {:?} (type: (searchable, aggregatable)); a {role:?} field must be one \
                     searchable {ty}{}",
                    facts.caps,
                    if aggregated { ", aggregatable" } else { "" }
                )),
            }
            let allowed: &[&str] = match role {
                Role::Time => &["date", "date_nanos"],
                Role::Numeric => NUMERIC,
                Role::Value => facts.sample.as_ref().map(expected_type).unwrap_or(&[]),
            };
            if !allowed.contains(&ty.as_str()) {
                problems.push(format!(
                    "{name}: field `{field}` is mapped as {ty}, but as {role:?} field holding {} it must be one of {allowed:?}",
                    facts.sample.as_ref().map(Value::to_string).unwrap_or_default()
                ));
            }
        }

        let response = match self.es.search(&index, body) {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("{name}: {e}\nrequest: {body}"));
                return problems;
            }
        };
        // A shard that fails (say, a sum over a field that is a keyword in one of the indices)
        // leaves a 200 with partial results: what Kibana shows as a warning.
        if response["_shards"]["failed"].as_u64() != Some(0) {
            problems.push(format!(
                "{name}: shards failed: {}\nrequest: {body}",
                response["_shards"]
            ));
        }
        let summary = |r: &Value| {
            let text = r.to_string();
            text.chars().take(600).collect::<String>()
        };
        if shape.hits {
            if response["hits"]["hits"]
                .as_array()
                .is_none_or(Vec::is_empty)
            {
                problems.push(format!("{name}: no documents\nrequest: {body}"));
            }
            return problems;
        }
        // The leaf buckets with documents, following the nesting.
        let mut level: Vec<&Value> = vec![&response["aggregations"]];
        for id in &shape.buckets {
            level = level
                .iter()
                .flat_map(|agg| agg[id.as_str()]["buckets"].as_array().into_iter().flatten())
                .filter(|b| b["doc_count"].as_u64().unwrap_or(0) > 0)
                .collect();
        }
        let total = response["hits"]["total"]["value"].as_u64().unwrap_or(0);
        if level.is_empty() || total == 0 {
            problems.push(format!(
                "{name}: no buckets with documents ({total} hits)\nrequest: {body}\nanswer: {}",
                summary(&response)
            ));
            return problems;
        }
        for id in &shape.sums {
            let sum: f64 = level
                .iter()
                .map(|b| b[id.as_str()]["value"].as_f64().unwrap_or(0.0))
                .sum();
            if sum <= 0.0 {
                problems.push(format!(
                    "{name}: sum {id} is {sum} over every bucket\nrequest: {body}\nanswer: {}",
                    summary(&response)
                ));
            }
        }
        problems
    }
}

// ---------------------------------------------------------------------------------------------
// The tests.

/// The panels of both dashboards rebuilt from `grafana` and `kibana` (file contents), and the
/// problems the engine (or, for Prometheus panels, flowlogd's /metrics: `metrics`) reports for
/// them; also how many dashboard panels each has.
struct Report {
    problems: Vec<String>,
    /// Grafana panel targets on Elasticsearch.
    grafana_panels: usize,
    /// Grafana panel targets on Prometheus.
    prometheus_panels: usize,
    grafana_variables: usize,
    kibana_panels: usize,
    kibana_objects: usize,
}

fn check_dashboards(
    checker: &mut Checker,
    grafana: &str,
    datasources: &[String],
    kibana: &str,
    metrics: &BTreeMap<String, BTreeSet<String>>,
) -> Report {
    let dashboard: Value = serde_json::from_str(grafana).expect("Grafana dashboard JSON");
    let sources = grafana_datasources(datasources);
    let (grafana, prometheus) = grafana_panels(&dashboard, &sources);
    let (kibana, kibana_panels) = kibana_panels(kibana);
    let mut problems = Vec::new();
    for panel in grafana.iter().chain(&kibana) {
        problems.extend(checker.check(panel));
    }
    for panel in &prometheus {
        problems.extend(check_prometheus(panel, metrics));
    }
    let count = |prefix: &str, panels: &[Panel]| {
        panels.iter().filter(|p| p.name.starts_with(prefix)).count()
    };
    Report {
        problems,
        grafana_panels: count("Grafana panel", &grafana),
        prometheus_panels: prometheus.len(),
        grafana_variables: count("Grafana variable", &grafana),
        kibana_panels,
        kibana_objects: kibana.len(),
    }
}

#[test]
fn every_panel_of_both_dashboards_finds_its_fields_and_buckets_in_flow_logs_flowlogd_really_indexed()
 {
    let started = Instant::now();
    let ingested = ingest();
    let ingest_time = started.elapsed();
    let mut checker = Checker::new(&ingested.engine, &ingested.default_wildcard);

    let grafana = read(GRAFANA_DASHBOARD);
    let datasources = grafana_datasource_files();
    let kibana = read(KIBANA_OBJECTS);
    let metrics = flowlogd_metrics();
    let report = check_dashboards(&mut checker, &grafana, &datasources, &kibana, &metrics);
    assert!(
        report.problems.is_empty(),
        "{} problem(s) with the dashboards against {} indexed documents:\n{}",
        report.problems.len(),
        ingested.documents,
        report.problems.join("\n\n")
    );
    // Every panel was seen: nothing passes by being skipped.
    let in_file = |v: &Value| v.as_array().map_or(0, Vec::len);
    let dashboard: Value = serde_json::from_str(&grafana).unwrap();
    let top_level = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            if p["type"] == "row" {
                in_file(&p["panels"])
            } else {
                1
            }
        })
        .sum::<usize>();
    assert_eq!(
        report.grafana_panels + report.prometheus_panels,
        top_level,
        "Grafana panels checked"
    );
    assert_eq!(
        report.grafana_variables,
        in_file(&dashboard["templating"]["list"])
    );
    assert!(report.grafana_panels > 0 && report.prometheus_panels > 0 && report.kibana_panels > 0);
    eprintln!(
        "checked {} Grafana panels + {} variables and {} Kibana dashboard panels ({} saved objects) \
         against {} documents, {} Grafana Prometheus panel(s) against flowlogd's /metrics \
         (ingest {:.1?}, checks {:.1?})",
        report.grafana_panels,
        report.grafana_variables,
        report.kibana_panels,
        report.kibana_objects,
        ingested.documents,
        report.prometheus_panels,
        ingest_time,
        started.elapsed() - ingest_time
    );

    // And the checks bite, on edited copies of the files: a field the documents do not have
    // (as after renaming a document field without updating the dashboards) is reported for the
    // field and for the panel's empty aggregation, in both dashboards; a sum over a keyword
    // field is reported as the wrong type. Nothing else is reported.
    let kind_sum = r#"\"type\":\"sum\",\"params\":{\"field\":\"azure.flowlog.kind\""#;
    let report = check_dashboards(
        &mut checker,
        &grafana.replace(
            "\"field\": \"network.transport\"",
            "\"field\": \"network.protocol\"",
        ),
        &datasources,
        &kibana
            .replace(
                r#"\"field\":\"rule.name\""#,
                r#"\"field\":\"rule.ruleset\""#,
            )
            .replacen(
                r#"\"type\":\"sum\",\"params\":{\"field\":\"network.bytes\""#,
                kind_sum,
                1,
            ),
        &metrics,
    );
    let reported = |panel: &str, what: &str| {
        report
            .problems
            .iter()
            .any(|p| p.starts_with(panel) && p.contains(what))
    };
    for (panel, renamed) in [
        ("Grafana panel", "network.protocol"),
        ("Kibana visualization", "rule.ruleset"),
    ] {
        assert!(
            reported(panel, &format!("`{renamed}`: not mapped"))
                && reported(panel, "no buckets with documents"),
            "a {panel} on {renamed} must fail: {:#?}",
            report.problems
        );
    }
    assert!(
        kibana.contains(&kind_sum.replace("azure.flowlog.kind", "network.bytes")),
        "the Kibana file still sums network.bytes"
    );
    assert!(
        reported(
            "Kibana visualization",
            "`azure.flowlog.kind` is mapped as keyword, but as Numeric"
        ),
        "a sum over a keyword must fail: {:#?}",
        report.problems
    );
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.starts_with("Kibana visualization")
                && p.contains("_search answered 400")
                && p.contains("azure.flowlog.kind")),
        "the engine refuses a sum over a keyword: {:#?}",
        report.problems
    );
    for p in &report.problems {
        assert!(
            ["network.protocol", "rule.ruleset", "azure.flowlog.kind"]
                .iter()
                .any(|f| p.contains(f)),
            "reported although not edited: {p}"
        );
    }

    // A Prometheus panel selecting a metric flowlogd's /metrics does not have (misspelt), or
    // grouping by a label its metric lacks, is reported; nothing else is.
    let metric = "flowlogd_tuples_filtered_total";
    let misspelt = "flowlogd_tuple_filtered_total";
    assert!(grafana.contains(metric) && grafana.contains("sum by (rule)"));
    let report = check_dashboards(
        &mut checker,
        &grafana.replace(metric, misspelt),
        &datasources,
        &kibana,
        &metrics,
    );
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.starts_with("Grafana Prometheus panel")
                && p.contains(&format!(
                    "metric `{misspelt}` is not in flowlogd's /metrics"
                ))),
        "a misspelt metric must fail: {:#?}",
        report.problems
    );
    for p in &report.problems {
        assert!(p.contains(misspelt), "reported although not edited: {p}");
    }
    let relabelled: Value =
        serde_json::from_str(&grafana.replace("sum by (rule)", "sum by (rule_name)")).unwrap();
    let (_, prometheus) = grafana_panels(&relabelled, &grafana_datasources(&datasources));
    let problems: Vec<String> = prometheus
        .iter()
        .flat_map(|p| check_prometheus(p, &metrics))
        .collect();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("groups by label `rule_name`")),
        "a label the metric lacks must fail: {problems:#?}"
    );

    // A dashboard reading another index pattern than the default config writes (Grafana data
    // source `index:`, Kibana data view `title`) is reported for every panel, and finds nothing.
    let elsewhere = "flowlog-*";
    let report = check_dashboards(
        &mut checker,
        &grafana,
        &datasources
            .iter()
            .map(|d| d.replace("index: flowlogs-*", &format!("index: {elsewhere}")))
            .collect::<Vec<_>>(),
        &kibana.replace(
            r#""title":"flowlogs-*""#,
            &format!(r#""title":"{elsewhere}""#),
        ),
        &metrics,
    );
    let wrong_pattern = format!("reads index pattern {elsewhere:?}");
    for panel in [
        "Grafana variable",
        "Grafana panel",
        "Kibana data view",
        "Kibana visualization",
        "Kibana search",
    ] {
        let problems: Vec<&String> = report
            .problems
            .iter()
            .filter(|p| p.starts_with(panel))
            .collect();
        assert!(
            problems.iter().any(|p| p.contains(&wrong_pattern))
                && problems.iter().any(|p| p.contains("no index matches")),
            "a {panel} reading {elsewhere} must fail: {problems:#?}"
        );
    }
    assert_eq!(
        report
            .problems
            .iter()
            .filter(|p| p.contains(&wrong_pattern))
            .count(),
        report.grafana_panels + report.grafana_variables + report.kibana_objects,
        "every panel reports the index pattern: {:#?}",
        report.problems
    );

    // A field whose type differs between the indices of the pattern (as when the template
    // changed in the middle of a week) is reported: by the index mappings, by `_field_caps`
    // (where Kibana and Grafana learn the fields) and by the shards that fail the sums.
    let engine = &ingested.engine;
    let other = format!(
        "{}-{}",
        engine.es.prefix,
        ingested.default_wildcard.replace('*', "1999.01")
    );
    let (status, body) = engine.call(
        Method::Put,
        &other,
        Some(json!({
            "settings": {"index": {"number_of_replicas": 0}},
            "mappings": {"properties": {"network": {"properties": {"bytes": {"type": "keyword"}}}}},
        })),
    );
    assert_eq!(status, 200, "PUT {other}: {body}");
    let (status, body) = engine.call(
        Method::Put,
        &format!("{other}/_doc/1?refresh=true"),
        Some(json!({"@timestamp": chrono::Utc::now().to_rfc3339(), "network": {"bytes": "many"}})),
    );
    assert_eq!(status, 201, "a document in {other}: {body}");
    let mut checker = Checker::new(engine, &ingested.default_wildcard);
    let report = check_dashboards(&mut checker, &grafana, &datasources, &kibana, &metrics);
    let reported = |panel: &str, what: &str| {
        report
            .problems
            .iter()
            .any(|p| p.starts_with(panel) && p.contains("`network.bytes`") && p.contains(what))
    };
    for panel in ["Grafana panel", "Kibana visualization"] {
        assert!(
            reported(panel, &format!("Some(\"keyword\") in index {other}"))
                && reported(panel, "by _field_caps")
                && report
                    .problems
                    .iter()
                    .any(|p| p.starts_with(panel) && p.contains("shards failed")),
            "a {panel} summing network.bytes must fail: {:#?}",
            report.problems
        );
    }
    for p in &report.problems {
        assert!(
            p.contains("network.bytes"),
            "reported although not changed: {p}"
        );
    }
}

#[test]
fn promql_metrics_and_labels_are_found_and_anything_unplaceable_is_refused() {
    let q = promql(
        r#"sum by (rule) (increase(flowlogd_tuples_filtered_total{rule=~"drop-.*", job!="x"}[$__rate_interval]))
           / on (job) group_left sum without(instance)(rate(up[5m] offset 1h)) > 0.5
           or {__name__="flowlogd_registry_entries"} and topk(3, x_total{a='b\'c'} @ 1700000000)"#,
    )
    .unwrap();
    let set = |v: &[&str]| {
        v.iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<String>>()
    };
    assert_eq!(
        q.metrics,
        BTreeMap::from([
            ("flowlogd_registry_entries".to_owned(), set(&[])),
            (
                "flowlogd_tuples_filtered_total".to_owned(),
                set(&["job", "rule"])
            ),
            ("up".to_owned(), set(&[])),
            ("x_total".to_owned(), set(&["a"])),
        ])
    );
    assert_eq!(q.grouping, set(&["instance", "job", "rule"]));
    for refused in [
        r#"{job="x"}"#,
        "rate(x[5m)",
        r#"x{a="b"#,
        "x{a=b}",
        "sum by rule (x)",
        r#"x{__name__="y"}"#,
    ] {
        assert!(promql(refused).is_err(), "{refused:?} must be refused");
    }
    let samples = exposition_samples(
        "# TYPE a counter\na_total{rule=\"x,\\\"y}\",src=\"s\"} 3\nb 1\n# EOF\n",
    )
    .unwrap();
    assert_eq!(
        samples,
        BTreeMap::from([
            ("a_total".to_owned(), set(&["rule", "src"])),
            ("b".to_owned(), set(&[])),
        ])
    );
    let panel = |expr: &str| PromPanel {
        name: "p".into(),
        request: promql(expr),
    };
    assert!(check_prometheus(&panel("sum by (rule) (a_total)"), &samples).is_empty());
    assert_eq!(
        check_prometheus(&panel(r#"sum by (rul) (a_total{sr="s"}) + c"#), &samples).len(),
        3
    );
}

#[test]
fn panel_queries_are_split_into_field_clauses_and_anything_richer_is_refused() {
    let clauses = conjunction(
        r#"cloud.account.id:* AND rule.name:"a b" AND event.action : "deny" and x.y :z"#,
    )
    .unwrap();
    let fields: Vec<(&str, &str, bool)> = clauses
        .iter()
        .map(|c| (c.field.as_str(), c.value.as_str(), c.quoted))
        .collect();
    assert_eq!(
        fields,
        [
            ("cloud.account.id", "*", false),
            ("rule.name", "a b", true),
            ("event.action", "deny", true),
            ("x.y", "z", false),
        ]
    );
    assert_eq!(conjunction("").unwrap(), []);
    assert_eq!(conjunction(" * ").unwrap(), []);
    for refused in [
        "a:x OR b:y",
        "NOT a:x",
        "a:(x OR y)",
        "a:[1 TO 2]",
        "free text",
        "a:x AND",
        "a:\"x",
    ] {
        assert!(conjunction(refused).is_err(), "{refused:?} must be refused");
    }
    assert_eq!(
        kql_filters(&conjunction(r#"a : "x y" and b : * and c : z"#).unwrap()),
        [
            json!({"match_phrase": {"a": "x y"}}),
            json!({"exists": {"field": "b"}}),
            json!({"match": {"c": "z"}}),
        ]
    );
    assert!(glob("flowlogs-*", "flowlogs-2026.47"));
    assert!(!glob("flowlogs-*", "other-2026.47"));
    assert!(glob("*-x-*", "a-x-b"));
    let mappings = json!({"properties": {"source": {"properties": {"ip": {"type": "ip"}}},
        "rule": {"properties": {"name": {"type": "text", "fields": {"keyword": {"type": "keyword"}}}}}}});
    assert_eq!(mapping_of(&mappings, "source.ip").unwrap()["type"], "ip");
    assert_eq!(
        mapping_of(&mappings, "rule.name.keyword").unwrap()["type"],
        "keyword"
    );
    assert!(mapping_of(&mappings, "source.port").is_none());
    assert_eq!(expected_type(&json!("10.0.0.1")), ["ip"]);
    assert_eq!(expected_type(&json!("2001:db8::1")), ["ip"]);
    assert_eq!(expected_type(&json!(443)), NUMERIC);
    assert_eq!(
        expected_type(&json!("rg-network-prod")),
        ["keyword", "constant_keyword"]
    );
    assert_eq!(
        expected_type(&json!("2026-11-21T17:00:07.000Z")),
        ["date", "date_nanos"]
    );
}
