//! The deployment files checked against the code they describe: the example configuration
//! against the config parser (every option accepted, commented values really the defaults,
//! every option of the parser documented), the dashboards against the documents flowlogd
//! really writes (every field a Grafana panel, variable or Kibana object names exists in
//! generated ECS documents, sums over numbers), and the systemd unit, Dockerfile and compose
//! file against the config defaults. Renaming a document field or a config option without
//! updating deploy/ and config/ fails here.
//!
//! scripts/check-deploy.sh runs the checks that need external tools (Compose parsers,
//! systemd-analyze).
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flowlogd::bulk_buffer::BulkBuffer;
use flowlogd::config::document::Schema;
use flowlogd::config::{Config, DEFAULT_CONFIG_PATH};
use flowlogd::encode::document::{BlobContext, DocumentEncoder};
use flowlogd::enrich::enricher::Enricher;
use flowlogd::enrich::filter::Filter;
use flowlogd::generator::{GenKind, GenOptions, generate};
use flowlogd::index_pattern::IndexPattern;
use flowlogd::pipeline::BlobDecoder;
use serde_json::Value;

// Only the enrichment settings of `common`: the rest of it (servers, clients) is not needed here.
#[path = "common/enrichment.rs"]
mod enrichment;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const EXAMPLE: &str = "config/flowlogd.example.toml";
/// Where the example's active source reads its account key (a systemd credential).
const CREDENTIAL_DIR: &str = "/run/credentials/flowlogd.service/";

fn parse(text: &str) -> Result<Config, String> {
    Config::from_toml_str(text).map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------
// The example configuration
// ---------------------------------------------------------------------------------------

/// `# key = value` (a commented setting), not `## prose`.
fn commented_setting(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("# ")?;
    let (key, _) = rest.split_once(" = ")?;
    (!key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')).then_some(key)
}

/// Line ranges of commented blocks: a `# [table]` line and the `# …` lines after it.
fn commented_blocks(lines: &[&str]) -> Vec<std::ops::Range<usize>> {
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].starts_with("# [") {
            let start = i;
            i += 1;
            while i < lines.len() && lines[i].starts_with("# ") {
                i += 1;
            }
            blocks.push(start..i);
        } else {
            i += 1;
        }
    }
    blocks
}

/// The `##` prose right above line `i`, skipping the commented settings in between.
fn prose_above(lines: &[&str], mut i: usize) -> String {
    while i > 0 && commented_setting(lines[i - 1]).is_some() {
        i -= 1;
    }
    let mut prose = Vec::new();
    while i > 0 && lines[i - 1].starts_with("##") {
        i -= 1;
        prose.push(lines[i]);
    }
    prose.join(" ")
}

fn uncomment(line: &str) -> &str {
    line.strip_prefix("# ").unwrap_or(line)
}

#[test]
fn example_config_parses_and_its_source_resolves_with_a_stand_in_secret() {
    let text = read(EXAMPLE);
    let config = parse(&text).unwrap_or_else(|e| panic!("{EXAMPLE}: {e}"));
    assert_eq!(config.sources.len(), 1);
    let source = &config.sources[0];
    assert_eq!(source.auth.method(), "account_key");
    assert_eq!(source.schema, Schema::Ecs);

    // The account key comes from a systemd credential: point it at a stand-in file.
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("storage-account-key");
    std::fs::write(&key_file, "c3RhbmQtaW4ga2V5IGZvciB0ZXN0cw==\n").unwrap();
    let path = format!("{CREDENTIAL_DIR}secret_storage-account-key");
    assert!(
        text.contains(&path),
        "the example reads the key from {path}"
    );
    let stand_in = parse(&text.replace(&path, &key_file.to_string_lossy())).unwrap();
    let resolved = stand_in.sources[0]
        .storage()
        .resolve()
        .unwrap_or_else(|e| panic!("{EXAMPLE}: {e}"));
    assert_eq!(
        resolved.service_url.as_str(),
        "https://mystorageaccount.blob.core.windows.net/"
    );
    assert_eq!(resolved.container, "insights-logs-flowlogflowevent");
}

#[test]
fn every_commented_option_is_accepted_and_shows_the_default() {
    let text = read(EXAMPLE);
    let lines: Vec<&str> = text.lines().collect();
    let baseline = format!("{:?}", parse(&text).unwrap());
    let blocks = commented_blocks(&lines);
    let in_block = |i: usize| blocks.iter().any(|b| b.contains(&i));

    let mut checked = 0;
    for (i, line) in lines.iter().enumerate() {
        let Some(key) = commented_setting(line) else {
            continue;
        };
        if in_block(i) {
            continue;
        }
        let mut edited = lines.clone();
        edited[i] = uncomment(line);
        let config = parse(&edited.join("\n")).unwrap_or_else(|e| {
            panic!(
                "{EXAMPLE}:{}: uncommenting `{key}` breaks the file: {e}",
                i + 1
            )
        });
        let prose = prose_above(&lines, i);
        if !prose.contains("Default: none") {
            assert_eq!(
                format!("{config:?}"),
                baseline,
                "{EXAMPLE}:{}: `{line}` is not the default (or say \"Default: none\" above it)",
                i + 1
            );
        }
        checked += 1;
    }
    assert!(checked > 40, "only {checked} commented options found");

    // Commented blocks: alternatives to the active [source.auth], or whole tables to add.
    let active_auth = lines
        .iter()
        .position(|l| *l == "[source.auth]")
        .expect("an active [source.auth]");
    let active_auth_end = active_auth
        + lines[active_auth..]
            .iter()
            .position(|l| l.is_empty())
            .unwrap();
    let mut methods = BTreeSet::new();
    for block in &blocks {
        let replaces_auth = lines[block.start] == "# [source.auth]";
        let edited: Vec<&str> = lines
            .iter()
            .enumerate()
            .filter(|(i, _)| !(replaces_auth && (active_auth..active_auth_end).contains(i)))
            .map(|(i, l)| if block.contains(&i) { uncomment(l) } else { l })
            .collect();
        let config = parse(&edited.join("\n")).unwrap_or_else(|e| {
            panic!(
                "{EXAMPLE}:{}: the commented block does not parse: {e}",
                block.start + 1
            )
        });
        let added = match lines[block.start] {
            _ if replaces_auth => {
                methods.insert(config.sources[0].auth.method());
                continue;
            }
            "# [[network]]" => ("[[network]]", config.networks.len()),
            "# [source.events]" => (
                "[source.events]",
                usize::from(config.sources[0].events.is_some()),
            ),
            "# [[filter]]" => ("[[filter]]", config.filters.len()),
            _ => ("second [[source]]", config.sources.len() - 1),
        };
        assert_eq!(
            added.1,
            1,
            "{EXAMPLE}:{}: expected a {}",
            block.start + 1,
            added.0
        );
    }
    methods.insert("account_key");
    let all: BTreeSet<&str> = [
        "account_key",
        "connection_string",
        "sas",
        "client_secret",
        "managed_identity",
        "workload_identity",
        "azure_cli",
    ]
    .into();
    assert_eq!(methods, all, "every [source.auth] method has an example");
}

/// `pub name:` fields of `pub struct NAME { … }` in a source file, with serde renames applied.
fn struct_fields(source: &str, name: &str) -> Vec<String> {
    let start = source
        .find(&format!("pub struct {name} {{"))
        .unwrap_or_else(|| panic!("struct {name} not found"));
    let mut fields = Vec::new();
    let mut rename = None;
    for line in source[start..].lines().skip(1) {
        let t = line.trim();
        if line.starts_with('}') {
            break;
        }
        if t.starts_with("#[serde(") {
            if let Some(r) = t.split("rename = \"").nth(1) {
                rename = r.split('"').next().map(str::to_owned);
            }
        } else if let Some(field) = t
            .strip_prefix("pub ")
            .and_then(|f| f.split_once(':'))
            .map(|(f, _)| f)
        {
            fields.push(rename.take().unwrap_or_else(|| field.to_owned()));
        }
    }
    fields
}

/// The fields of each variant of `AuthConfig`, keyed by the `method` name (snake_case).
fn auth_methods(source: &str) -> BTreeMap<String, Vec<String>> {
    let start = source
        .find("pub enum AuthConfig {")
        .expect("enum AuthConfig");
    let mut methods: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = None;
    for line in source[start..].lines().skip(1) {
        if line.starts_with('}') {
            break;
        }
        let t = line.trim();
        if t.starts_with(|c: char| c.is_ascii_uppercase()) && t.contains('{') {
            let variant = t.split([' ', '{']).next().unwrap();
            let mut snake = String::new();
            for (i, c) in variant.chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    snake.push('_');
                }
                snake.push(c.to_ascii_lowercase());
            }
            methods.insert(snake.clone(), Vec::new());
            current = Some(snake);
        } else if let (Some(m), Some((field, _))) = (&current, t.split_once(':'))
            && !field.is_empty()
            && field.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        {
            methods.get_mut(m).unwrap().push(field.to_owned());
        }
    }
    methods
}

/// (section, key) of every setting in the example, active or commented at any depth; the
/// section of `[source.auth]` keys is `source.auth:<method>`.
fn example_settings(text: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let mut section = String::new();
    for line in text.lines() {
        if line.starts_with("##") {
            continue;
        }
        let mut l = line;
        while let Some(rest) = l.strip_prefix("# ") {
            l = rest;
        }
        if l.starts_with('[') {
            section = l.trim_matches(['[', ']']).to_owned();
            out.insert((String::new(), section.clone()));
        } else if let Some((key, value)) = l.split_once(" = ") {
            if section.starts_with("source.auth") && key == "method" {
                section = format!("source.auth:{}", value.trim_matches('"'));
            }
            out.insert((section.clone(), key.to_owned()));
        }
    }
    out
}

#[test]
fn example_config_documents_every_option_of_the_parser() {
    let settings = example_settings(&read(EXAMPLE));
    let config_rs = read("src/config.rs");
    let mut missing = Vec::new();
    let mut expect = |section: &str, keys: Vec<String>| {
        assert!(
            !keys.is_empty(),
            "no fields found for [{section}]: did the source layout change?"
        );
        for key in keys {
            if !settings.contains(&(section.to_owned(), key.clone())) {
                missing.push(format!("[{section}] {key}"));
            }
        }
    };
    expect("", struct_fields(&config_rs, "Config"));
    let source_keys: Vec<String> = struct_fields(&config_rs, "SourceConfig")
        .into_iter()
        .filter(|k| k != "auth" && k != "retry" && k != "events")
        .collect();
    expect("source", source_keys);
    expect(
        "source.events",
        struct_fields(&read("src/config/events.rs"), "EventsConfig"),
    );
    expect(
        "source.retry",
        struct_fields(&read("src/config/storage.rs"), "RetryConfig"),
    );
    for (section, name) in [
        ("elasticsearch", "ElasticsearchConfig"),
        ("registry", "RegistryConfig"),
        ("http", "HttpConfig"),
        ("log", "LogConfig"),
        ("daemon", "DaemonConfig"),
        ("cluster", "ClusterConfig"),
    ] {
        expect(section, struct_fields(&config_rs, name));
    }
    let methods = auth_methods(&read("src/config/storage.rs"));
    assert!(methods.len() >= 7, "{methods:?}");
    for (method, fields) in methods {
        let section = format!("source.auth:{method}");
        assert!(
            settings.contains(&(section.clone(), "method".to_owned())),
            "no example of method = \"{method}\""
        );
        for key in fields {
            if !settings.contains(&(section.clone(), key.clone())) {
                missing.push(format!("[source.auth] method = \"{method}\": {key}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{EXAMPLE} does not show these options: {missing:#?}"
    );
}

#[test]
fn secret_variables_never_use_the_config_override_prefix() {
    // Every FLOWLOGD_ variable is read as a config key, so FLOWLOGD_ES_PASSWORD would be an
    // unknown option that stops the daemon.
    for rel in [
        EXAMPLE,
        "deploy/compose/flowlogd.toml",
        "deploy/systemd/flowlogd.env.example",
    ] {
        for (n, line) in read(rel).lines().enumerate() {
            let l = line.trim_start_matches(['#', ' ']);
            if let Some((key, value)) = l.split_once(" = ")
                && key.ends_with("_env")
            {
                assert!(!value.contains("FLOWLOGD_"), "{rel}:{}: {line}", n + 1);
            }
            if let Some((var, _)) = l.split_once('=')
                && rel.ends_with(".env.example")
                && var.starts_with("FLOWLOGD_")
            {
                assert!(
                    var.contains("__"),
                    "{rel}:{}: `{var}` is no FLOWLOGD_<SECTION>__<KEY> override",
                    n + 1
                );
            }
        }
    }
}

#[test]
fn compose_config_parses() {
    let config = parse(&read("deploy/compose/flowlogd.toml")).unwrap();
    assert_eq!(config.sources.len(), 2);
    assert_eq!(config.http.listen, "0.0.0.0:9108");
    assert!(
        config
            .sources
            .iter()
            .all(|s| s.auth.method() == "connection_string")
    );
    // The demo fills the named-network and dropped-by-filter panels of the dashboards.
    assert_eq!(config.networks.len(), 2);
    assert_eq!(config.filters.len(), 1);
    // Its Prometheus scrapes flowlogd where it listens, and Grafana reaches that Prometheus.
    let port = config.http.listen.rsplit(':').next().unwrap();
    let scrape = read("deploy/compose/prometheus.yml");
    assert!(
        scrape.contains(&format!(r#"- targets: ["flowlogd:{port}"]"#)),
        "{scrape}"
    );
    let compose = read("docker-compose.yml");
    assert!(compose.contains("./deploy/compose/prometheus.yml:/etc/prometheus/prometheus.yml:ro"));
    assert!(compose.contains("PROMETHEUS_URL: http://prometheus:9090"));
    assert!(
        read("deploy/grafana/provisioning/datasources/flowlogd-prometheus.yaml")
            .contains("url: ${PROMETHEUS_URL}")
    );
}

/// The `flowlogd.toml` key of the ConfigMap in deploy/kubernetes/flowlogd.yaml: the lines of
/// its `|` block scalar, without their indentation. (The manifest's schema is checked by
/// scripts/check-deploy.sh with kubernetes-validate; this checks what flowlogd reads from it.)
fn kubernetes_config_text() -> String {
    let manifest = read("deploy/kubernetes/flowlogd.yaml");
    let mut lines = manifest
        .lines()
        .skip_while(|l| l.trim() != "flowlogd.toml: |")
        .skip(1);
    let first = lines
        .next()
        .expect("a flowlogd.toml block in the ConfigMap");
    let indent = first.len() - first.trim_start().len();
    let mut text = format!("{}\n", first.trim_start());
    for line in lines {
        if !line.trim().is_empty() && line.len() - line.trim_start().len() < indent {
            break;
        }
        text.push_str(line.get(indent..).unwrap_or(""));
        text.push('\n');
    }
    text
}

#[test]
fn the_kubernetes_statefulset_config_parses_and_takes_its_shard_from_the_pod_ordinal() {
    let config = parse(&kubernetes_config_text()).unwrap();
    assert_eq!(
        config.cluster.shard,
        Some(flowlogd::shard::ShardSpec::FromHostOrdinal { count: 3 })
    );
    let manifest = read("deploy/kubernetes/flowlogd.yaml");
    assert!(
        manifest.contains("  replicas: 3\n"),
        "the shard count equals the StatefulSet's replicas"
    );
    assert_eq!(config.sources[0].auth.method(), "workload_identity");
    assert_eq!(
        config.registry.path.to_string_lossy(),
        "/var/lib/flowlogd/registry",
        "the registry lives on the pod's volume"
    );
    assert!(manifest.contains("mountPath: /var/lib/flowlogd\n"));
    assert_eq!(config.http.listen, "0.0.0.0:9108");
    assert!(!config.daemon.sd_notify);
}

// ---------------------------------------------------------------------------------------
// Dashboards against real documents
// ---------------------------------------------------------------------------------------

/// Leaf paths of ECS documents generated for every flow-log kind, with their values; with every
/// enrichment on (`enrichment::generator_enrichment_toml`), since dashboards read its fields.
fn document_fields() -> BTreeMap<String, Vec<Value>> {
    let config = parse(&format!(
        r#"{}
[[source]]
name = "s"
container = "c"
[source.auth]
method = "azure_cli"

[elasticsearch]
"#,
        enrichment::generator_enrichment_toml(&repo())
    ))
    .unwrap_or_else(|e| panic!("enrichment config: {e}"));
    let enricher = Arc::new(
        Enricher::from_config(&config.enrich, &config.networks)
            .unwrap_or_else(|e| panic!("enricher: {e}")),
    );
    let filter = Arc::new(Filter::from_config(&config.filters, &config.networks).unwrap());
    let mut fields: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (seed, kind) in [GenKind::Nsg1, GenKind::Nsg2, GenKind::Vnet]
        .into_iter()
        .enumerate()
    {
        let blob = generate(&GenOptions {
            kind,
            records: 8,
            tuples_per_record: 25,
            seed: seed as u64 + 1,
            ..GenOptions::default()
        });
        let mut encoder = DocumentEncoder::new(
            Schema::Ecs,
            IndexPattern::parse("flowlogs-%{+xxxx.ww}").unwrap(),
        )
        .with_enrichment(&enricher, &filter);
        let mut decoder = BlobDecoder::new(
            &mut encoder,
            BlobContext::new("insights-logs-test", &blob.name),
            0,
        );
        let mut out = BulkBuffer::new();
        let mut problems = Vec::new();
        decoder.feed(&blob.bytes(), &mut out, &mut |p| problems.push(p));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(out.len() as u64, blob.tuples);
        for i in 0..out.len() {
            let doc: Value = serde_json::from_slice(out.doc(i)).unwrap();
            collect_leaves("", &doc, &mut fields);
        }
    }
    fields
}

fn collect_leaves(prefix: &str, value: &Value, out: &mut BTreeMap<String, Vec<Value>>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                collect_leaves(&path, v, out);
            }
        }
        other => out
            .entry(prefix.to_owned())
            .or_default()
            .push(other.clone()),
    }
}

/// Field names in a Lucene or KQL query: identifiers followed by `:`, outside quotes.
fn query_fields(query: &str, out: &mut BTreeSet<String>) {
    let mut chars = query.chars().peekable();
    let mut word = String::new();
    while let Some(c) = chars.next() {
        if c == '"' {
            word.clear();
            for q in chars.by_ref() {
                if q == '"' {
                    break;
                }
            }
        } else if c.is_ascii_alphanumeric() || "@_.$-".contains(c) {
            word.push(c);
        } else {
            if (c == ':' || (c == ' ' && chars.peek() == Some(&':')))
                && !word.is_empty()
                && !word.starts_with('$')
            {
                out.insert(word.clone());
            }
            if c != ' ' || chars.peek() != Some(&':') {
                word.clear();
            }
        }
    }
}

/// Where an aggregation needs a number.
#[derive(Debug, Default)]
struct PanelFields {
    fields: BTreeSet<String>,
    numeric: BTreeSet<String>,
    /// A plain document count: the only panels that may name no field.
    count_only: bool,
}

/// Fields of each Grafana panel (by title) and of the dashboard variables (`$variables`).
fn grafana_fields(dashboard: &Value) -> BTreeMap<String, PanelFields> {
    let mut out: BTreeMap<String, PanelFields> = BTreeMap::new();
    let mut panels: Vec<&Value> = dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(panel) = panels.pop() {
        if let Some(nested) = panel["panels"].as_array() {
            panels.extend(nested);
        }
        // A Prometheus panel reads flowlogd's /metrics, not documents: tests/dashboards_engine.rs
        // checks its metric names against the exposition flowlogd renders.
        if panel["datasource"]["type"] == "prometheus" {
            continue;
        }
        let title = panel["title"].as_str().unwrap_or_default().to_owned();
        let entry = out.entry(title).or_default();
        for target in panel["targets"].as_array().into_iter().flatten() {
            for metric in target["metrics"].as_array().into_iter().flatten() {
                if let Some(f) = metric["field"].as_str() {
                    entry.fields.insert(f.to_owned());
                    if ["sum", "avg", "min", "max"]
                        .contains(&metric["type"].as_str().unwrap_or_default())
                    {
                        entry.numeric.insert(f.to_owned());
                    }
                }
            }
            for agg in target["bucketAggs"].as_array().into_iter().flatten() {
                if let Some(f) = agg["field"].as_str() {
                    entry.fields.insert(f.to_owned());
                }
            }
            if let Some(f) = target["timeField"].as_str() {
                entry.fields.insert(f.to_owned());
            }
            query_fields(
                target["query"].as_str().unwrap_or_default(),
                &mut entry.fields,
            );
        }
        for t in panel["transformations"].as_array().into_iter().flatten() {
            for key in ["includeByName", "indexByName"] {
                if let Some(map) = t["options"][key].as_object() {
                    entry.fields.extend(map.keys().cloned());
                }
            }
        }
        for sort in panel["options"]["sortBy"].as_array().into_iter().flatten() {
            if let Some(f) = sort["displayName"].as_str() {
                entry.fields.insert(f.to_owned());
            }
        }
    }
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = format!("${}", var["name"].as_str().unwrap_or_default());
        let entry = out.entry(name).or_default();
        let query: Value = match &var["query"] {
            Value::String(s) => serde_json::from_str(s).unwrap_or(Value::Null),
            other => other.clone(),
        };
        if let Some(f) = query["field"].as_str() {
            entry.fields.insert(f.to_owned());
        }
        query_fields(
            query["query"].as_str().unwrap_or_default(),
            &mut entry.fields,
        );
    }
    out
}

fn nested_json(value: &Value) -> Value {
    value
        .as_str()
        .map(|s| serde_json::from_str(s).unwrap_or_else(|e| panic!("nested JSON: {e}: {s}")))
        .unwrap_or(Value::Null)
}

/// Fields of each Kibana saved object (by `type:id`).
fn kibana_fields(ndjson: &str) -> BTreeMap<String, PanelFields> {
    let mut out: BTreeMap<String, PanelFields> = BTreeMap::new();
    for line in ndjson.lines().filter(|l| !l.trim().is_empty()) {
        let object: Value = serde_json::from_str(line).unwrap();
        let a = &object["attributes"];
        let entry = out
            .entry(format!(
                "{}:{}",
                object["type"].as_str().unwrap(),
                object["id"].as_str().unwrap()
            ))
            .or_default();
        if let Some(f) = a["timeFieldName"].as_str() {
            entry.fields.insert(f.to_owned());
        }
        if let Some(map) = nested_json(&a["fieldFormatMap"]).as_object() {
            entry.fields.extend(map.keys().cloned());
        }
        let vis = nested_json(&a["visState"]);
        entry.count_only = vis["aggs"]
            .as_array()
            .is_some_and(|aggs| aggs.iter().all(|agg| agg["type"] == "count"));
        for agg in vis["aggs"].as_array().into_iter().flatten() {
            if let Some(f) = agg["params"]["field"].as_str() {
                entry.fields.insert(f.to_owned());
                if ["sum", "avg", "min", "max"].contains(&agg["type"].as_str().unwrap_or_default())
                {
                    entry.numeric.insert(f.to_owned());
                }
            }
        }
        let search = nested_json(&a["kibanaSavedObjectMeta"]["searchSourceJSON"]);
        query_fields(
            search["query"]["query"].as_str().unwrap_or_default(),
            &mut entry.fields,
        );
        for column in a["columns"].as_array().into_iter().flatten() {
            entry.fields.insert(column.as_str().unwrap().to_owned());
        }
        for sort in a["sort"].as_array().into_iter().flatten() {
            entry.fields.insert(sort[0].as_str().unwrap().to_owned());
        }
    }
    out
}

fn check_fields(
    what: &str,
    used: &BTreeMap<String, PanelFields>,
    docs: &BTreeMap<String, Vec<Value>>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (panel, p) in used {
        for f in &p.fields {
            if !docs.contains_key(f) {
                problems.push(format!(
                    "{what} {panel:?}: field `{f}` is in no document flowlogd writes"
                ));
            }
        }
        for f in &p.numeric {
            if let Some(values) = docs.get(f)
                && !values.iter().all(Value::is_number)
            {
                problems.push(format!(
                    "{what} {panel:?}: `{f}` is summed but not always a number"
                ));
            }
        }
    }
    problems
}

const GRAFANA_DASHBOARD: &str = "deploy/grafana/dashboards/flowlogd-flows.json";
const KIBANA_OBJECTS: &str = "deploy/kibana/flowlogd.ndjson";

#[test]
fn every_dashboard_field_is_in_the_documents_flowlogd_writes() {
    let docs = document_fields();
    // The contract fields the dashboards lean on, so an empty `docs` cannot pass vacuously.
    for f in [
        "@timestamp",
        "source.ip",
        "destination.port",
        "network.bytes",
        "event.action",
        "rule.name",
        "azure.flowlog.vnet",
        // Enrichment: named networks, service tags, GeoIP, ASN.
        "source.network.name",
        "destination.azure.service",
        "destination.geo.country_name",
        "destination.as.organization.name",
    ] {
        assert!(docs.contains_key(f), "generated documents lack {f}");
    }

    let grafana: Value = serde_json::from_str(&read(GRAFANA_DASHBOARD)).unwrap();
    let g = grafana_fields(&grafana);
    let panels = grafana["panels"].as_array().unwrap();
    assert!(panels.len() >= 15, "the issue's panels are all there");
    for (name, p) in &g {
        assert!(
            !p.fields.is_empty(),
            "Grafana {name:?}: no field found (did the panel format change?)"
        );
    }
    for var in ["$subscription", "$resource_group", "$rule", "$direction"] {
        assert!(g.contains_key(var), "Grafana variable {var}");
    }
    let kibana = kibana_fields(&read(KIBANA_OBJECTS));
    for (name, p) in &kibana {
        if !name.starts_with("dashboard:") && !p.count_only {
            assert!(
                !p.fields.is_empty(),
                "Kibana {name}: no field found (did the object format change?)"
            );
        }
    }
    let mut problems = check_fields("Grafana panel", &g, &docs);
    problems.extend(check_fields("Kibana object", &kibana, &docs));
    assert!(problems.is_empty(), "{problems:#?}");

    // And the check bites: a renamed field is reported.
    let renamed: Value = serde_json::from_str(
        &read(GRAFANA_DASHBOARD).replace("\"network.transport\"", "\"network.protocol\""),
    )
    .unwrap();
    let problems = check_fields("Grafana panel", &grafana_fields(&renamed), &docs);
    assert!(
        problems.iter().any(|p| p.contains("network.protocol")),
        "{problems:?}"
    );
    let renamed = read(KIBANA_OBJECTS).replace(
        r#"\"field\":\"rule.name\""#,
        r#"\"field\":\"rule.ruleset\""#,
    );
    let problems = check_fields("Kibana object", &kibana_fields(&renamed), &docs);
    assert!(
        problems.iter().any(|p| p.contains("rule.ruleset")),
        "{problems:?}"
    );
}

#[test]
fn query_field_extraction() {
    let mut f = BTreeSet::new();
    query_fields(
        r#"cloud.account.id:$subscription AND rule.name:("a:b" OR "c") AND event.action : "deny" AND @timestamp:[now-1h TO now]"#,
        &mut f,
    );
    assert_eq!(
        f,
        [
            "@timestamp",
            "cloud.account.id",
            "event.action",
            "rule.name"
        ]
        .map(String::from)
        .into()
    );
}

/// (`type`, `uid`) of every data source in deploy/grafana/provisioning/datasources/, from the
/// `type:` and `uid:` lines of each `- name:` entry (enough YAML for these files).
fn provisioned_datasources() -> BTreeSet<(String, String)> {
    let dir = repo().join("deploy/grafana/provisioning/datasources");
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let (mut kind, mut uid) = (None, None);
        for line in text.lines().map(str::trim).chain(["- name: end"]) {
            if line.starts_with("- name:") {
                if let (Some(k), Some(u)) = (kind.take(), uid.take()) {
                    out.insert((k, u));
                }
            } else if let Some(v) = line.strip_prefix("type:") {
                kind = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("uid:") {
                uid = Some(v.trim().to_owned());
            }
        }
    }
    out
}

#[test]
fn dashboards_parse_and_pin_their_schema_versions() {
    let grafana: Value = serde_json::from_str(&read(GRAFANA_DASHBOARD)).unwrap();
    assert!(
        grafana["schemaVersion"].is_u64(),
        "Grafana schemaVersion pinned"
    );
    assert_eq!(grafana["uid"], "flowlogd-flows");
    let provisioned = provisioned_datasources();
    for (kind, uid) in [
        ("elasticsearch", "flowlogd-es"),
        ("prometheus", "flowlogd-prometheus"),
    ] {
        assert!(
            provisioned.contains(&(kind.to_owned(), uid.to_owned())),
            "{kind} data source {uid} provisioned: {provisioned:?}"
        );
    }
    let mut titles = BTreeSet::new();
    let mut kinds = BTreeSet::new();
    for panel in grafana["panels"].as_array().unwrap() {
        assert!(
            titles.insert(panel["title"].as_str().unwrap()),
            "duplicate panel title {}",
            panel["title"]
        );
        for target in panel["targets"].as_array().unwrap() {
            let ds = &target["datasource"];
            let key = (
                ds["type"].as_str().unwrap_or_default().to_owned(),
                ds["uid"].as_str().unwrap_or_default().to_owned(),
            );
            assert!(
                provisioned.contains(&key),
                "{}: data source {ds} is not provisioned ({provisioned:?})",
                panel["title"]
            );
            assert_eq!(ds, &panel["datasource"], "{}", panel["title"]);
            kinds.insert(key.0);
        }
    }
    assert_eq!(
        kinds,
        BTreeSet::from(["elasticsearch".to_owned(), "prometheus".to_owned()]),
        "panels on both provisioned data sources"
    );

    let ndjson = read(KIBANA_OBJECTS);
    let mut ids = BTreeSet::new();
    for line in ndjson.lines() {
        let o: Value = serde_json::from_str(line).unwrap();
        for key in ["coreMigrationVersion", "typeMigrationVersion"] {
            let v = o[key].as_str().unwrap_or_default();
            assert!(
                v.split('.').count() == 3 && v.split('.').all(|p| p.parse::<u32>().is_ok()),
                "{} {key} = {v:?}",
                o["id"]
            );
        }
        ids.insert((
            o["type"].as_str().unwrap().to_owned(),
            o["id"].as_str().unwrap().to_owned(),
        ));
    }
    // Every reference points at an object of the file.
    for line in ndjson.lines() {
        let o: Value = serde_json::from_str(line).unwrap();
        for r in o["references"].as_array().unwrap() {
            let key = (
                r["type"].as_str().unwrap().to_owned(),
                r["id"].as_str().unwrap().to_owned(),
            );
            assert!(ids.contains(&key), "{} references missing {key:?}", o["id"]);
        }
    }
}

#[test]
fn dashboards_read_the_index_pattern_of_the_default_config() {
    let default_index = parse(&read(EXAMPLE)).unwrap().sources[0].index.clone();
    let wildcard = IndexPattern::parse(&default_index).unwrap().wildcard();
    assert_eq!(wildcard, "flowlogs-*");
    let provisioning = read("deploy/grafana/provisioning/datasources/flowlogd-elasticsearch.yaml");
    assert!(
        provisioning.contains(&format!("index: {wildcard}")),
        "Grafana data source index"
    );
    let data_view = read(KIBANA_OBJECTS)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|o| o["type"] == "index-pattern")
        .unwrap();
    assert_eq!(data_view["attributes"]["title"], wildcard.as_str());
    let compose = parse(&read("deploy/compose/flowlogd.toml")).unwrap();
    assert!(
        compose.sources.iter().all(|s| s.index == default_index),
        "the demo stack writes where the dashboards read"
    );
}

// ---------------------------------------------------------------------------------------
// systemd unit, Dockerfile, compose file against the config defaults
// ---------------------------------------------------------------------------------------

fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_owned)
        .collect()
}

fn seconds(v: &str) -> u64 {
    flowlogd::config::parse_duration(v)
        .unwrap_or_else(|e| panic!("{e}"))
        .as_secs()
}

fn defaults() -> Config {
    parse(
        r#"
        [[source]]
        name = "s"
        container = "c"
        [source.auth]
        method = "azure_cli"
        [elasticsearch]
    "#,
    )
    .unwrap()
}

#[test]
fn systemd_unit_matches_the_config_defaults() {
    let unit = read("deploy/systemd/flowlogd.service");
    let d = defaults();
    assert_eq!(unit_values(&unit, "Type"), ["notify"]);
    assert!(d.daemon.sd_notify);
    let exec = unit_values(&unit, "ExecStart");
    assert_eq!(
        exec,
        [format!(
            "/usr/local/bin/flowlogd run --config {DEFAULT_CONFIG_PATH}"
        )]
    );
    assert_eq!(unit_values(&unit, "StateDirectory"), ["flowlogd"]);
    assert!(
        d.registry.path.starts_with("/var/lib/flowlogd"),
        "registry in StateDirectory="
    );
    assert_eq!(
        d.dead_letter_path(),
        Path::new("/var/lib/flowlogd/dead-letter.ndjson")
    );
    assert!(
        unit_values(&unit, "ConfigurationDirectory")[0]
            .split(' ')
            .any(|d| d == "flowlogd")
    );
    assert!(Path::new(DEFAULT_CONFIG_PATH).starts_with("/etc/flowlogd"));
    let stop = seconds(&unit_values(&unit, "TimeoutStopSec")[0]);
    assert!(
        stop > d.daemon.shutdown_timeout.as_secs() + 5,
        "TimeoutStopSec= leaves the drain time"
    );
    assert_eq!(
        unit_values(&unit, "LoadCredential"),
        ["secret:/etc/flowlogd/credentials"]
    );
    // The example's credential paths are what that LoadCredential= produces.
    for line in read(EXAMPLE)
        .lines()
        .filter(|l| l.contains("_file = \"/run/credentials/"))
    {
        assert!(line.contains(&format!("{CREDENTIAL_DIR}secret_")), "{line}");
    }
    for key in [
        "NoNewPrivileges",
        "ProtectHome",
        "PrivateTmp",
        "DynamicUser",
    ] {
        assert_eq!(unit_values(&unit, key), ["yes"], "{key}");
    }
    assert_eq!(unit_values(&unit, "ProtectSystem"), ["strict"]);
    assert_eq!(unit_values(&unit, "CapabilityBoundingSet"), [""]);
    assert_eq!(
        unit_values(&unit, "RestrictAddressFamilies"),
        ["AF_INET AF_INET6 AF_UNIX"]
    );
    assert!(unit_values(&unit, "SystemCallFilter").contains(&"@system-service".to_owned()));
}

#[test]
fn container_files_match_the_config_defaults() {
    let d = defaults();
    let port = d.http.listen.rsplit(':').next().unwrap().to_owned();
    let dockerfile = read("Dockerfile");
    assert!(dockerfile.contains(&format!(
        r#"CMD ["run", "--config", "{DEFAULT_CONFIG_PATH}"]"#
    )));
    assert!(dockerfile.contains(&format!("ENV FLOWLOGD_HTTP__LISTEN=0.0.0.0:{port}")));
    assert!(
        dockerfile.contains(&format!("/dev/tcp/127.0.0.1/{port}")),
        "HEALTHCHECK asks the listener"
    );
    assert!(dockerfile.contains(&format!("EXPOSE {port}")));
    let state = d.registry.path.parent().unwrap().display().to_string();
    assert!(dockerfile.contains(&format!(r#"VOLUME ["{state}"]"#)));
    assert!(
        dockerfile.contains("\nUSER ") && !dockerfile.contains("\nUSER root"),
        "runs as non-root"
    );

    let compose = read("docker-compose.yml");
    assert!(compose.contains(&format!(
        "./deploy/compose/flowlogd.toml:{DEFAULT_CONFIG_PATH}:ro"
    )));
    assert!(compose.contains(&format!("flowlogd:{state}")));
    assert!(compose.contains(&format!("127.0.0.1:{port}:{port}")));
    assert!(
        compose.contains("xpack.security.enabled: \"false\""),
        "if security goes on, update docs/DEPLOY.md and the banner"
    );
}

#[test]
fn every_image_is_pinned_to_a_version() {
    let pinned = |image: &str| {
        let last = image.rsplit('/').next().unwrap();
        image.contains("@sha256:")
            || last
                .split_once(':')
                .is_some_and(|(_, tag)| tag != "latest" && tag.chars().any(|c| c.is_ascii_digit()))
    };
    let compose = read("docker-compose.yml");
    let images: Vec<&str> = compose
        .lines()
        .filter_map(|l| l.trim().strip_prefix("image: "))
        .collect();
    assert!(images.len() >= 6, "{images:?}");
    for image in images {
        assert!(
            pinned(image),
            "docker-compose.yml: image {image} is not pinned to a version"
        );
    }
    let mut stages = BTreeSet::new();
    for line in read("Dockerfile")
        .lines()
        .filter(|l| l.starts_with("FROM "))
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        if !stages.contains(words[1]) {
            assert!(pinned(words[1]), "Dockerfile: {line}");
        }
        if words.len() == 4 && words[2].eq_ignore_ascii_case("as") {
            stages.insert(words[3]);
        }
    }
}
