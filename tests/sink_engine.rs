//! The bulk sink against a real search engine: the cluster of `ELASTICSEARCH_URL` when it is set
//! (with `ELASTICSEARCH_USERNAME`/`ELASTICSEARCH_PASSWORD` or `ELASTICSEARCH_API_KEY`, and
//! `ELASTICSEARCH_CA_FILE` or `ELASTICSEARCH_INSECURE=1`), else the single-node OpenSearch 2.19
//! the tests of a run share (`FLOWLOGD_TEST_SEARCH_URL` from `scripts/test.sh`, or one this
//! binary starts: see `common::servers::search_engine_url`), each test under its own index and
//! template prefix. Scripted HTTP responders in this file stand in for what a real server cannot
//! be asked to do on demand: 429/5xx/413 answers, dropped connections, hangs, 401s, and an
//! Elasticsearch 8 with ILM and the privileges API.
mod common;

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::flowlogd::{Es, LifecycleApi};
use elasticsearch::http::Method;
use flowlogd::bulk_buffer::{BulkBuffer, BulkItem};
use flowlogd::config::document::{BlobNames, Provenance, Schema};
use flowlogd::config::{Config, ElasticsearchConfig};
use flowlogd::encode::document::{BlobContext, DocumentEncoder};
use flowlogd::generator::{GenKind, GenOptions, generate};
use flowlogd::index_pattern::IndexPattern;
use flowlogd::pipeline::BlobDecoder;
use flowlogd::sink::bulk::{BulkSink, Cancelled, LifecycleEngine, LifecycleOutcome, SetupTarget};
use flowlogd::sink::dead_letter::{DeadLetter, ItemOrigin};
use flowlogd::sink::template;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------------------------
// Test fixtures: configs, batches, an admin client.

/// `[elasticsearch]` for `url`, plus `extra` TOML lines (a minimal source makes the file valid).
fn sink_config(url: &str, extra: &str) -> ElasticsearchConfig {
    let text = format!(
        "[[source]]\nname = \"t\"\nindex = \"flowlogs\"\ncontainer = \"c\"\naccount = \"a\"\n[source.auth]\nmethod = \"azure_cli\"\n\
         [elasticsearch]\nurls = [\"{url}\"]\nretry_initial_backoff = \"20ms\"\nretry_max_backoff = \"200ms\"\n{extra}\n"
    );
    Config::from_toml_str(&text)
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
        .elasticsearch
}

/// Documents of generated blobs, with where each came from.
struct Batch {
    buffer: BulkBuffer,
    /// `container/blob` of each item.
    blobs: Vec<String>,
}

impl Batch {
    fn generated(
        kind: GenKind,
        seed: u64,
        records: usize,
        tuples: usize,
        schema: Schema,
        index: &str,
    ) -> Batch {
        Batch::generated_with(
            kind,
            seed,
            records,
            tuples,
            schema,
            index,
            Provenance::default(),
        )
    }

    /// [`Batch::generated`] with documents carrying `provenance`.
    fn generated_with(
        kind: GenKind,
        seed: u64,
        records: usize,
        tuples: usize,
        schema: Schema,
        index: &str,
        provenance: Provenance,
    ) -> Batch {
        let blob = generate(&GenOptions {
            kind,
            seed,
            records,
            tuples_per_record: tuples,
            ..GenOptions::default()
        });
        let mut encoder = DocumentEncoder::new(schema, IndexPattern::parse(index).unwrap())
            .with_provenance(provenance);
        let context = BlobContext::new("insights-logs-flowlogflowevent", &blob.name);
        let path = context.path().to_owned();
        let mut decoder = BlobDecoder::new(&mut encoder, context, 0);
        let mut buffer = BulkBuffer::new();
        decoder.feed(&blob.bytes(), &mut buffer, &mut |p| {
            panic!("generated data has a problem: {p}")
        });
        assert_eq!(buffer.len() as u64, blob.tuples);
        let blobs = vec![path; buffer.len()];
        Batch { buffer, blobs }
    }

    fn len(&self) -> usize {
        self.buffer.len()
    }

    fn origin(&self) -> impl Fn(usize) -> ItemOrigin + Sync + '_ {
        move |i| {
            let item = &self.buffer.items[i];
            ItemOrigin {
                blob: self.blobs[i].clone(),
                record_offset: item.record_offset,
                tuple_index: item.tuple_index,
            }
        }
    }

    fn id(&self, i: usize) -> String {
        let item = &self.buffer.items[i];
        let action: Value =
            serde_json::from_slice(&self.buffer.body[item.action_start..item.doc_start]).unwrap();
        action["create"]["_id"].as_str().unwrap().to_owned()
    }

    /// The items of both batches in one.
    fn concat(mut self, other: &Batch) -> Batch {
        for (i, item) in other.buffer.items.iter().enumerate() {
            let action_start = self.buffer.body.len();
            self.buffer
                .body
                .extend_from_slice(&other.buffer.body[item.range()]);
            let doc_start = action_start + (item.doc_start - item.action_start);
            self.buffer.items.push(BulkItem {
                action_start,
                doc_start,
                end: self.buffer.body.len(),
                ..*item
            });
            self.blobs.push(other.blobs[i].clone());
        }
        self
    }

    /// The same batch with document `k` rewritten by `edit`.
    fn with_document_edited(&self, k: usize, edit: impl Fn(&str) -> String) -> Batch {
        let mut out = BulkBuffer::new();
        for (i, item) in self.buffer.items.iter().enumerate() {
            let action_start = out.body.len();
            out.body
                .extend_from_slice(&self.buffer.body[item.action_start..item.doc_start]);
            let doc_start = out.body.len();
            let doc = std::str::from_utf8(self.buffer.doc(i)).unwrap();
            let doc = if i == k { edit(doc) } else { doc.to_owned() };
            out.body.extend_from_slice(doc.as_bytes());
            out.body.push(b'\n');
            out.items.push(BulkItem {
                action_start,
                doc_start,
                end: out.body.len(),
                ..*item
            });
        }
        Batch {
            buffer: out,
            blobs: self.blobs.clone(),
        }
    }
}

/// Where the tests run: a real search engine ([`Es::engine`]: the cluster of
/// `ELASTICSEARCH_URL`, else the OpenSearch node the tests of this run share), with a client for
/// checking results. The engine is shared with other tests, so each test works under its own
/// prefix and removes what it created at the end (see [`on_the_engine`]).
struct Target {
    es: Es,
    name: &'static str,
    url: String,
    /// Prefix of every index and template this test creates, unique per test.
    prefix: String,
    /// Whether this is the cluster of `ELASTICSEARCH_URL` (any Elasticsearch or OpenSearch)
    /// rather than the test node (OpenSearch 2.19 without the ISM plugin).
    from_env: bool,
}

impl Target {
    fn engine(test: &str) -> Target {
        let from_env = std::env::var("ELASTICSEARCH_URL").is_ok_and(|u| !u.is_empty());
        let es = Es::engine(test);
        Target {
            name: if from_env {
                "ELASTICSEARCH_URL cluster"
            } else {
                "shared OpenSearch node"
            },
            url: es.url.clone(),
            prefix: es.prefix.clone(),
            from_env,
            es,
        }
    }

    fn config(&self, extra: &str) -> ElasticsearchConfig {
        sink_config(&self.url, &format!("{}{extra}", self.es.config_lines))
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.es.call(method, path, body).await
    }

    async fn count(&self, index: &str) -> u64 {
        self.es.count(index).await
    }

    async fn lifecycle_api(&self) -> LifecycleApi {
        self.es.lifecycle_api().await
    }

    async fn cleanup(&self) {
        self.es.cleanup().await
    }
}

/// Runs `test` against the real engine ([`Target::engine`]) under a prefix of its own, then
/// deletes what it created, also when it failed.
async fn on_the_engine<F, Fut>(name: &str, test: F)
where
    F: FnOnce(Arc<Target>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let target = Arc::new(Target::engine(name));
    eprintln!("{name}: on the {} at {}", target.name, target.url);
    let outcome = tokio::spawn(test(Arc::clone(&target))).await;
    target.cleanup().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

// ---------------------------------------------------------------------------------------------
// Against the real engine.

#[tokio::test]
async fn templates_are_installed_and_read_back_with_every_mapping() {
    on_the_engine(
        "templates_are_installed_and_read_back_with_every_mapping",
        |t| async move { templates_round_trip(&t).await },
    )
    .await;
}

async fn templates_round_trip(t: &Target) {
    let config = t.config("delete_after = \"7d\"\nnumber_of_replicas = 0");
    let sink = BulkSink::new(&config).unwrap();
    let targets = [
        SetupTarget {
            source: "vnet".into(),
            index: IndexPattern::parse(&format!("{}-vnet-%{{+xxxx.ww}}", t.prefix)).unwrap(),
            schema: Schema::Ecs,
            deletes_rewritten: false,
        },
        SetupTarget {
            source: "vnet2".into(),
            index: IndexPattern::parse(&format!("{}-vnet-%{{+xxxx.ww}}", t.prefix)).unwrap(),
            schema: Schema::Ecs,
            deletes_rewritten: false,
        },
        SetupTarget {
            source: "nsg".into(),
            index: IndexPattern::parse(&format!("{}-nsg-%{{+yyyy.MM.dd}}", t.prefix)).unwrap(),
            schema: Schema::Logstash,
            deletes_rewritten: false,
        },
    ];
    let report = sink
        .setup(&targets)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", t.name));
    eprintln!("{}: {report}", t.name);
    assert_eq!(
        report.templates.len(),
        2,
        "one template per distinct pattern"
    );
    assert_eq!(report.templates[0].sources, ["vnet", "vnet2"]);

    // The lifecycle outcome follows what the cluster offers, asked directly. The test node
    // loads no ISM plugin, so there setup must report the policy as skipped, not fail.
    let api = t.lifecycle_api().await;
    if !t.from_env {
        assert_eq!(api, LifecycleApi::None, "the test node has no ISM plugin");
    }
    match (api, &report.lifecycle) {
        (
            LifecycleApi::Ilm,
            LifecycleOutcome::Installed {
                engine: LifecycleEngine::Ilm,
                policy,
            },
        ) => {
            assert_eq!(policy, "flowlogd-delete-after-7d", "{report}")
        }
        (
            LifecycleApi::Ism,
            LifecycleOutcome::Installed {
                engine: LifecycleEngine::Ism,
                policy,
            },
        ) => {
            let (status, body) = t
                .call(
                    Method::Get,
                    &format!("_plugins/_ism/policies/{policy}"),
                    None,
                )
                .await;
            assert_eq!(status, 200, "the ISM policy {policy} exists: {body}");
        }
        (LifecycleApi::None, LifecycleOutcome::Skipped { reason }) => {
            assert!(!reason.is_empty(), "a skipped lifecycle says why")
        }
        (api, other) => panic!("{}: lifecycle API {api:?}, setup said {other:?}", t.name),
    }

    for (installed, schema) in report.templates.iter().zip([Schema::Ecs, Schema::Logstash]) {
        let (status, body) = t
            .call(
                Method::Get,
                &format!("_index_template/{}", installed.name),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let got = &body["index_templates"][0]["index_template"];
        assert_eq!(got["index_patterns"], json!([installed.index_pattern]));
        assert_eq!(got["priority"], installed.priority);
        assert_eq!(got["_meta"]["managed_by"], "flowlogd");
        let mappings = &got["template"]["mappings"];
        assert_eq!(
            mappings["properties"],
            template::mappings(schema)["properties"],
            "{}: every field and type round-trips",
            t.name
        );
        assert!(
            mappings["dynamic"] == json!(false) || mappings["dynamic"] == json!("false"),
            "{mappings}"
        );
        let settings = &got["template"]["settings"];
        match &report.lifecycle {
            LifecycleOutcome::Installed {
                engine: LifecycleEngine::Ilm,
                policy,
            } => {
                assert_eq!(
                    settings["index"]["lifecycle"]["name"],
                    json!(policy),
                    "{got}"
                )
            }
            LifecycleOutcome::Installed { .. } => {}
            _ => {
                let text = settings.to_string();
                assert!(
                    !text.contains("lifecycle") && !text.contains("index_state_management"),
                    "no policy is referenced when none was installed: {settings}"
                );
            }
        }
    }

    // An index created by a write gets the template's mapping.
    let index = format!("{}-vnet-%{{+xxxx.ww}}", t.prefix);
    let batch = Batch::generated(GenKind::Vnet, 3, 1, 5, Schema::Ecs, &index);
    sink.deliver(&batch.buffer, &batch.origin(), &CancellationToken::new())
        .await
        .unwrap();
    let (status, body) = t
        .call(Method::Get, &format!("{}-vnet-*/_mapping", t.prefix), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, mapping) = body.as_object().unwrap().iter().next().unwrap();
    assert_eq!(
        mapping["mappings"]["properties"]["source"]["properties"]["ip"]["type"],
        "ip"
    );
    assert_eq!(
        mapping["mappings"]["properties"]["network"]["properties"]["community_id"]["type"],
        "keyword"
    );
}

#[tokio::test]
async fn documents_of_one_blob_are_deleted_by_its_blob_id_or_its_path_and_the_others_stay() {
    on_the_engine(
        "documents_of_one_blob_are_deleted_by_its_blob_id_or_its_path_and_the_others_stay",
        |t| async move { blob_delete(&t).await },
    )
    .await;
}

/// Indexes the documents of two generated VNet blobs into `{prefix}-{name}-…` under the
/// template setup installs; returns the wildcard and both batches.
async fn two_blobs(t: &Target, sink: &BulkSink, name: &str) -> (String, Batch, Batch) {
    let index = format!("{}-{name}-%{{+xxxx.ww}}", t.prefix);
    let wildcard = format!("{}-{name}-*", t.prefix);
    sink.setup(&[SetupTarget {
        source: "s".into(),
        index: IndexPattern::parse(&index).unwrap(),
        schema: Schema::Ecs,
        deletes_rewritten: false,
    }])
    .await
    .unwrap();
    // Two seeds give two NICs, so two blob names.
    let first = Batch::generated(GenKind::Vnet, 21, 4, 10, Schema::Ecs, &index);
    let second = Batch::generated(GenKind::Vnet, 22, 3, 10, Schema::Ecs, &index);
    assert_ne!(first.blobs[0], second.blobs[0]);
    for batch in [&first, &second] {
        let report = sink
            .deliver(&batch.buffer, &batch.origin(), &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(report.created, batch.len(), "{report:?}");
    }
    assert_eq!(
        t.count(&wildcard).await,
        (first.len() + second.len()) as u64
    );
    (wildcard, first, second)
}

/// How the daemon names the blob at `path` (`container/blob`, as [`Batch::blobs`] holds it)
/// when it deletes the blob's documents.
fn names_of(path: &str) -> BlobNames {
    let (container, blob) = path.split_once('/').expect("container/blob");
    BlobNames::new(container, blob)
}

async fn blob_delete(t: &Target) {
    let sink = BulkSink::new(&t.config("number_of_replicas = 0")).unwrap();
    let (wildcard, first, second) = two_blobs(t, &sink, "lean").await;
    // `on_rewrite = "replace"` names the blob by its id and its path, as the daemon does:
    // default documents carry only the id.
    let names = names_of(&first.blobs[0]);
    let deleted = sink
        .delete_blob_documents(&wildcard, &names.path, &names.terms(Schema::Ecs))
        .await
        .unwrap();
    assert_eq!(deleted, first.len() as u64);
    assert_eq!(t.count(&wildcard).await, second.len() as u64);
    // Documents found by their path alone (those of releases before the blob id): a third
    // blob's, written with `blob_path = true`, deleted with an id matching nothing.
    let index = format!("{}-lean-%{{+xxxx.ww}}", t.prefix);
    let with_path = Provenance {
        resource_ids: false,
        blob_path: true,
    };
    let third = Batch::generated_with(GenKind::Vnet, 23, 2, 10, Schema::Ecs, &index, with_path);
    let report = sink
        .deliver(&third.buffer, &third.origin(), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.created, third.len(), "{report:?}");
    let names = [
        (Schema::Ecs.blob_id_field(), "0000000000000000"),
        (Schema::Ecs.blob_path_field(), third.blobs[0].as_str()),
    ];
    let deleted = sink
        .delete_blob_documents(&wildcard, &third.blobs[0], &names)
        .await
        .unwrap();
    assert_eq!(deleted, third.len() as u64);
    assert_eq!(t.count(&wildcard).await, second.len() as u64);
}

#[tokio::test]
async fn an_index_created_before_the_blob_id_maps_it_after_setup_so_a_rewrite_finds_what_was_written_since()
 {
    on_the_engine(
        "an_index_created_before_the_blob_id_maps_it_after_setup_so_a_rewrite_finds_what_was_written_since",
        |t| async move { upgraded_index(&t).await },
    )
    .await;
}

/// An index of an earlier release (template version 5: everything but the blob id, under
/// `dynamic: false`) still takes this week's documents after an upgrade.
async fn upgraded_index(t: &Target) {
    let index = format!("{}-upgraded", t.prefix);
    let mut old = template::mappings(Schema::Ecs);
    let flowlog = old["properties"]["azure"]["properties"]["flowlog"]["properties"]
        .as_object_mut()
        .unwrap();
    assert!(flowlog.remove("blob_id").is_some());
    let (status, body) = t
        .call(
            Method::Put,
            &index,
            Some(serde_json::json!({
                "settings": {"number_of_replicas": 0},
                "mappings": old
            })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let sink = BulkSink::new(&t.config("number_of_replicas = 0")).unwrap();
    sink.setup(&[SetupTarget {
        source: "s".into(),
        index: IndexPattern::parse(&index).unwrap(),
        schema: Schema::Ecs,
        deletes_rewritten: true,
    }])
    .await
    .unwrap();
    let (status, body) = t
        .call(Method::Get, &format!("{index}/_mapping"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body[&index]["mappings"]["properties"]["azure"]["properties"]["flowlog"]["properties"]["blob_id"]
            ["type"],
        "keyword",
        "{body}"
    );
    let batch = Batch::generated(GenKind::Vnet, 24, 2, 10, Schema::Ecs, &index);
    let report = sink
        .deliver(&batch.buffer, &batch.origin(), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.created, batch.len(), "{report:?}");
    let names = names_of(&batch.blobs[0]);
    let deleted = sink
        .delete_blob_documents(&index, &names.path, &names.terms(Schema::Ecs))
        .await
        .unwrap();
    assert_eq!(
        deleted,
        batch.len() as u64,
        "documents the rewrite left behind"
    );
}

#[tokio::test]
async fn constant_keywords_answer_with_their_value_on_elasticsearch_but_with_the_index_name_on_opensearch()
 {
    on_the_engine(
        "constant_keywords_answer_with_their_value_on_elasticsearch_but_with_the_index_name_on_opensearch",
        |t| async move { constants(&t).await },
    )
    .await;
}

/// Why `template::ECS_CONSTANTS` are mapped on Elasticsearch only: the same template, with
/// `add_constant_fields`, installed by hand over the one setup installs.
async fn constants(t: &Target) {
    let (status, root) = t.call(Method::Get, "/", None).await;
    assert_eq!(status, 200, "{root}");
    let opensearch = root["version"]["distribution"] == "opensearch";
    let sink = BulkSink::new(&t.config("number_of_replicas = 0")).unwrap();
    let index = format!("{}-const-%{{+xxxx.ww}}", t.prefix);
    let wildcard = format!("{}-const-*", t.prefix);
    let mut body = template::index_template(
        Schema::Ecs,
        &wildcard,
        &template::TemplateOptions {
            number_of_replicas: 0,
            ..Default::default()
        },
    );
    template::add_constant_fields(&mut body);
    let name = template::template_name(&wildcard);
    let (status, answer) = t
        .call(Method::Put, &format!("_index_template/{name}"), Some(body))
        .await;
    assert_eq!(status, 200, "{answer}");
    let batch = Batch::generated(GenKind::Vnet, 23, 2, 10, Schema::Ecs, &index);
    let report = sink
        .deliver(&batch.buffer, &batch.origin(), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.created, batch.len(), "{report:?}");
    let n = t.count(&wildcard).await;
    assert_eq!(n, batch.len() as u64);

    // No document carries the constants...
    let doc: Value = serde_json::from_slice(batch.buffer.doc(0)).unwrap();
    assert!(
        doc["event"].get("kind").is_none() && doc.get("ecs").is_none(),
        "{doc}"
    );
    // ...yet every one matches them on both engines.
    let filters: Vec<Value> = template::ECS_CONSTANTS
        .iter()
        .map(|(path, value)| json!({"term": {*path: value}}))
        .collect();
    let query = json!({
        "size": 1,
        "track_total_hits": true,
        "query": {"bool": {"filter": filters}},
        "aggs": {"provider": {"terms": {"field": "cloud.provider"}}},
    });
    let (status, body) = t
        .call(Method::Post, &format!("{wildcard}/_search"), Some(query))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["hits"]["total"]["value"], n, "{body}");
    let bucket = &body["aggregations"]["provider"]["buckets"][0]["key"];
    if opensearch {
        // OpenSearch (measured on 2.19.6) aggregates the index name as the field's value (and
        // `docvalue_fields` shows it too), so a dashboard grouping by `cloud.provider` would
        // show index names: the daemon maps no constants there. When this fails, OpenSearch
        // got it right: map them there too.
        assert_eq!(bucket, &body["hits"]["hits"][0]["_index"], "{body}");
    } else {
        assert_eq!(bucket, "azure", "{body}");
    }
    let (status, _) = t
        .call(Method::Delete, &format!("_index_template/{name}"), None)
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_batch_is_delivered_once_and_its_replay_is_all_already_there() {
    on_the_engine(
        "a_batch_is_delivered_once_and_its_replay_is_all_already_there",
        |t| async move { delivery_and_replay(&t).await },
    )
    .await;
}

async fn delivery_and_replay(t: &Target) {
    let sink = BulkSink::new(&t.config("number_of_replicas = 0")).unwrap();
    let index = format!("{}-dl-%{{+xxxx.ww}}", t.prefix);
    let wildcard = format!("{}-dl-*", t.prefix);
    sink.setup(&[SetupTarget {
        source: "s".into(),
        index: IndexPattern::parse(&index).unwrap(),
        schema: Schema::Ecs,
        deletes_rewritten: false,
    }])
    .await
    .unwrap();
    // VNet and NSG v1/v2 documents (ECS) in one batch, from three blobs.
    let batch = Batch::generated(GenKind::Vnet, 7, 20, 15, Schema::Ecs, &index)
        .concat(&Batch::generated(
            GenKind::Nsg2,
            8,
            5,
            10,
            Schema::Ecs,
            &index,
        ))
        .concat(&Batch::generated(
            GenKind::Nsg1,
            9,
            5,
            10,
            Schema::Ecs,
            &index,
        ));
    let n = batch.len();
    let cancel = CancellationToken::new();

    let report = sink
        .deliver(&batch.buffer, &batch.origin(), &cancel)
        .await
        .unwrap();
    assert_eq!(
        (report.created, report.already_existed, report.dead_lettered),
        (n, 0, 0),
        "{}: {report:?}",
        t.name
    );
    assert_eq!(report.request_retries, 0);
    assert!(!report.request_latencies.is_empty());
    assert_eq!(t.count(&wildcard).await, n as u64, "{}", t.name);
    // Under the ids flowlogd chose (deterministic: a re-read hits the same ones).
    let ids: Vec<String> = (0..n).map(|i| batch.id(i)).collect();
    let (status, body) = t
        .call(
            Method::Post,
            &format!("{wildcard}/_count"),
            Some(json!({"query": {"ids": {"values": ids}}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["count"], n, "{body}");

    // A replay (crash between indexing and commit): every document is already there.
    let again = sink
        .deliver(&batch.buffer, &batch.origin(), &cancel)
        .await
        .unwrap();
    assert_eq!(
        (again.created, again.already_existed, again.dead_lettered),
        (0, n, 0),
        "{}: {again:?}",
        t.name
    );
    assert_eq!(
        t.count(&wildcard).await,
        n as u64,
        "{}: no duplicates",
        t.name
    );

    // The ip mapping is live: a CIDR query finds the private sources.
    let (status, body) = t
        .call(
            Method::Post,
            &format!("{wildcard}/_count"),
            Some(json!({"query": {"term": {"source.ip": "10.0.0.0/8"}}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["count"].as_u64().unwrap() > 0, "{body}");
    assert_eq!(sink.dead_letter().counts().rejected, 0);
}

#[tokio::test]
async fn a_document_the_mapping_refuses_is_dead_lettered_and_the_others_delivered() {
    on_the_engine(
        "a_document_the_mapping_refuses_is_dead_lettered_and_the_others_delivered",
        |t| async move { mapping_conflict(&t).await },
    )
    .await;
}

async fn mapping_conflict(t: &Target) {
    let dir = tempfile::tempdir().unwrap();
    let dl_path = dir.path().join("dead-letter.ndjson");
    let config = t.config("number_of_replicas = 0");
    let sink = BulkSink::with_dead_letter(&config, DeadLetter::open(&dl_path).unwrap()).unwrap();
    let index = format!("{}-mc-%{{+xxxx.ww}}", t.prefix);
    sink.setup(&[SetupTarget {
        source: "s".into(),
        index: IndexPattern::parse(&index).unwrap(),
        schema: Schema::Ecs,
        deletes_rewritten: false,
    }])
    .await
    .unwrap();
    let good = Batch::generated(GenKind::Vnet, 11, 4, 10, Schema::Ecs, &index);
    // On purpose: `source.ip` is mapped `ip`; this document carries something else there.
    let k = 17;
    let batch = good.with_document_edited(k, |doc| {
        let start = doc.find("\"source\":{\"ip\":\"").unwrap() + "\"source\":{\"ip\":\"".len();
        let end = start + doc[start..].find('"').unwrap();
        format!("{}not-an-ip{}", &doc[..start], &doc[end..])
    });
    let n = batch.len();
    let report = sink
        .deliver(&batch.buffer, &batch.origin(), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(
        (report.created, report.dead_lettered, report.already_existed),
        (n - 1, 1, 0),
        "{}: {report:?}",
        t.name
    );
    assert_eq!(t.count(&format!("{}-mc-*", t.prefix)).await, (n - 1) as u64);

    let lines: Vec<Value> = std::fs::read_to_string(&dl_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    let item = batch.buffer.items[k];
    assert_eq!(line["kind"], "rejected");
    assert_eq!(line["status"], 400);
    assert_eq!(line["error"]["type"], "mapper_parsing_exception", "{line}");
    assert!(
        line["error"]["reason"]
            .as_str()
            .unwrap()
            .contains("source.ip"),
        "{line}"
    );
    assert_eq!(line["blob"], batch.blobs[k]);
    assert_eq!(line["record_offset"], item.record_offset);
    assert_eq!(line["tuple_index"], item.tuple_index);
    assert_eq!(line["id"], batch.id(k));
    assert!(
        line["index"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}-mc-", t.prefix))
    );
    assert_eq!(line["document"]["source"]["ip"], "not-an-ip");
    assert_eq!(sink.dead_letter().counts().rejected, 1);
}

// ---------------------------------------------------------------------------------------------
// A scripted HTTP responder: an in-memory "Elasticsearch" on 127.0.0.1 that answers `_bulk`
// with `create` semantics (201 once per id, then 409) and misbehaves on a script.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Answer normally.
    None,
    /// 503 for the whole request; nothing applied.
    Unavailable,
    /// Close the connection after reading the request; nothing applied.
    DropBeforeApplying,
    /// Apply every item, then close without answering (a response lost on the way back).
    DropAfterApplying,
    /// Never answer (the client's request timeout must fire); nothing applied.
    Hang,
    /// Apply, then answer 200 with a truncated body.
    Garbage,
    /// Apply, then answer with only the first half of the items.
    ShortResponse,
    /// 401 with an error naming the user, as Elasticsearch does for a bad password.
    Unauthorized,
}

#[derive(Default)]
struct Store {
    /// id → times a 201 was decided for it (must end at exactly 1).
    created: HashMap<String, u32>,
    /// id → times the id arrived in a bulk body.
    attempts: HashMap<String, u32>,
    requests: u32,
    /// Item statuses in responses that were actually written back to the client.
    sent_201: usize,
    sent_409: usize,
    sent_429: usize,
    sent_503_items: usize,
    /// Items left out of written responses.
    sent_missing: usize,
    authorization: Vec<String>,
    bulk_requests: Vec<BulkRequestSeen>,
}

/// Of one `_bulk` request: its `user-agent`, `content-length` and `transfer-encoding` headers,
/// and how many body bytes it carried.
#[derive(Debug)]
struct BulkRequestSeen {
    user_agent: Option<String>,
    content_length: Option<String>,
    transfer_encoding: Option<String>,
    body_len: usize,
}

struct Responder {
    url: String,
    store: Arc<Mutex<Store>>,
}

impl Responder {
    /// Starts the responder; `script(n)` is the fault for the n-th request (0-based);
    /// `flaky(id, attempt)` says whether an item fails on that attempt (429 on even ids, 503 on odd).
    async fn start(script: fn(u32) -> Fault, flaky: fn(&str, u32) -> bool) -> Responder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let store = Arc::new(Mutex::new(Store::default()));
        let shared = Arc::clone(&store);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let store = Arc::clone(&shared);
                tokio::spawn(async move { serve(socket, store, script, flaky).await });
            }
        });
        Responder { url, store }
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap()
    }
}

/// Reads one HTTP/1.1 request: (request line, headers lowercased, body).
async fn read_request(
    socket: &mut TcpStream,
) -> Option<(String, HashMap<String, String>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next()?.to_owned();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((request_line, headers, body))
}

/// A stable hash of a document id, to pick which documents misbehave.
fn id_hash(id: &str) -> u32 {
    id.bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b.into()))
}

async fn respond(socket: &mut TcpStream, status: u16, body: &str) -> bool {
    let text = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(text.as_bytes()).await.is_ok() && socket.flush().await.is_ok()
}

async fn serve(
    mut socket: TcpStream,
    store: Arc<Mutex<Store>>,
    script: fn(u32) -> Fault,
    flaky: fn(&str, u32) -> bool,
) {
    let Some((request_line, headers, body)) = read_request(&mut socket).await else {
        return;
    };
    let fault = {
        let mut s = store.lock().unwrap();
        if let Some(a) = headers.get("authorization") {
            s.authorization.push(a.clone());
        }
        if request_line.contains("/_bulk") {
            s.bulk_requests.push(BulkRequestSeen {
                user_agent: headers.get("user-agent").cloned(),
                content_length: headers.get("content-length").cloned(),
                transfer_encoding: headers.get("transfer-encoding").cloned(),
                body_len: body.len(),
            });
        }
        let n = s.requests;
        s.requests += 1;
        script(n)
    };
    match fault {
        Fault::Unavailable => {
            respond(
                &mut socket,
                503,
                r#"{"error":{"type":"unavailable","reason":"scripted outage"},"status":503}"#,
            )
            .await;
            return;
        }
        Fault::DropBeforeApplying => return,
        Fault::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return;
        }
        Fault::Unauthorized => {
            respond(&mut socket, 401, r#"{"error":{"type":"security_exception","reason":"unable to authenticate user [elastic] for REST request [/_bulk]"},"status":401}"#).await;
            return;
        }
        _ => {}
    }
    if !request_line.contains("/_bulk") {
        respond(&mut socket, 404, r#"{"error":"no handler found"}"#).await;
        return;
    }
    // Apply the bulk body: create semantics per id.
    let lines: Vec<&[u8]> = body
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let mut items = Vec::new();
    let mut statuses = Vec::new();
    {
        let mut s = store.lock().unwrap();
        for pair in lines.chunks(2) {
            let action: Value = serde_json::from_slice(pair[0]).unwrap();
            let id = action["create"]["_id"]
                .as_str()
                .expect("every action is a create with an id")
                .to_owned();
            let attempt = {
                let a = s.attempts.entry(id.clone()).or_default();
                *a += 1;
                *a
            };
            let status = if flaky(&id, attempt) {
                if id_hash(&id).is_multiple_of(2) {
                    429
                } else {
                    503
                }
            } else if s.created.contains_key(&id) {
                409
            } else {
                s.created.insert(id.clone(), 1);
                201
            };
            statuses.push(status);
            items.push(match status {
                201 => json!({"create": {"status": 201}}),
                409 => json!({"create": {"status": 409, "error": {"type": "version_conflict_engine_exception", "reason": "document already exists"}}}),
                429 => json!({"create": {"status": 429, "error": {"type": "es_rejected_execution_exception", "reason": "rejected execution"}}}),
                _ => json!({"create": {"status": 503, "error": {"type": "unavailable_shards_exception", "reason": "primary shard is not active"}}}),
            });
        }
    }
    let shown = match fault {
        Fault::ShortResponse => items.len() / 2,
        _ => items.len(),
    };
    let errors = statuses[..shown].iter().any(|&s| s != 201);
    let response = json!({"took": 1, "errors": errors, "items": items[..shown]}).to_string();
    let written = match fault {
        Fault::DropAfterApplying => false,
        Fault::Garbage => {
            respond(&mut socket, 200, &response[..response.len() / 2]).await;
            false
        }
        _ => respond(&mut socket, 200, &response).await,
    };
    if written {
        let mut s = store.lock().unwrap();
        s.sent_missing += items.len() - shown;
        for &status in &statuses[..shown] {
            match status {
                201 => s.sent_201 += 1,
                409 => s.sent_409 += 1,
                429 => s.sent_429 += 1,
                _ => s.sent_503_items += 1,
            }
        }
    }
}

// Issue 9, item 2: an item that keeps failing with a 5xx while the rest of its batch is
// accepted (a broken shard) must not be retried forever: it would pin its blob and hold a
// delivery permit. After `item_retry_timeout` it is dead-lettered with the status and the last
// error, and the delivery ends.
#[tokio::test]
async fn an_item_failing_with_503_past_item_retry_timeout_is_dead_lettered_and_delivery_ends() {
    fn script(_: u32) -> Fault {
        Fault::None
    }
    // Odd hashes get 503 from the responder; every tenth document fails on every attempt.
    fn broken(id: &str, _attempt: u32) -> bool {
        id_hash(id) % 10 == 1
    }
    let responder = Responder::start(script, broken).await;
    let dir = tempfile::tempdir().unwrap();
    let dead_letters = dir.path().join("dl.ndjson");
    let config = sink_config(
        &responder.url,
        &format!(
            "item_retry_timeout = \"1s\"\ndead_letter_path = \"{}\"",
            dead_letters.display()
        ),
    );
    let sink = BulkSink::new(&config).unwrap();
    let batch = Batch::generated(GenKind::Vnet, 7, 20, 10, Schema::Ecs, "flows-%{+xxxx.ww}");
    let n = batch.len();
    let broken_ids: Vec<usize> = (0..n).filter(|&i| broken(&batch.id(i), 1)).collect();
    assert!(!broken_ids.is_empty(), "the batch has no broken document");

    let report = tokio::time::timeout(
        Duration::from_secs(60),
        sink.deliver(&batch.buffer, &batch.origin(), &CancellationToken::new()),
    )
    .await
    .expect("delivery still retrying a broken item after 60 s")
    .unwrap();
    assert_eq!(report.dead_lettered, broken_ids.len(), "{report:?}");
    assert_eq!(report.created, n - broken_ids.len(), "{report:?}");
    let lines: Vec<Value> = std::fs::read_to_string(&dead_letters)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), broken_ids.len());
    for line in &lines {
        assert_eq!(line["status"], 503, "{line}");
        let reason = line["error"]["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("item_retry_timeout"), "{line}");
        assert_eq!(
            line["error"]["last_error"]["type"], "unavailable_shards_exception",
            "{line}"
        );
    }
}

#[tokio::test]
async fn scripted_faults_end_with_every_document_indexed_exactly_once() {
    // What the responder simulates, request by request: a whole-request 503 (cluster
    // unavailable); a connection dropped before the bulk was applied (a node crash); a normal
    // answer in which every fifth document gets a 429 or 503 item status (indexing
    // backpressure, a relocating shard), again on its second attempt; the retry of those is
    // applied but its connection dropped before the answer (a response lost on the way back);
    // a request that never gets an answer (a hung node: the client's timeout must fire); a
    // truncated 200 body and a response missing half of its items (broken proxies); another
    // 503; then normal answers.
    fn script(n: u32) -> Fault {
        match n {
            0 => Fault::Unavailable,
            1 => Fault::DropBeforeApplying,
            3 => Fault::DropAfterApplying,
            4 => Fault::Hang,
            5 => Fault::Garbage,
            6 => Fault::ShortResponse,
            7 => Fault::Unavailable,
            _ => Fault::None,
        }
    }
    fn flaky(id: &str, attempt: u32) -> bool {
        id_hash(id).is_multiple_of(5) && attempt <= 2
    }
    let responder = Responder::start(script, flaky).await;
    let dir = tempfile::tempdir().unwrap();
    let config = sink_config(
        &responder.url,
        &format!(
            // Long enough that only the scripted hang times out, even on a stalled machine.
            "request_timeout = \"3s\"\ndead_letter_path = \"{}\"",
            dir.path().join("dl.ndjson").display()
        ),
    );
    let sink = BulkSink::new(&config).unwrap();
    let batch = Batch::generated(GenKind::Vnet, 5, 30, 10, Schema::Ecs, "flows-%{+xxxx.ww}");
    let n = batch.len();

    let report = sink
        .deliver(&batch.buffer, &batch.origin(), &CancellationToken::new())
        .await
        .unwrap();

    let store = responder.store();
    assert_eq!(store.created.len(), n, "every document reached the store");
    assert!(
        store.created.values().all(|&c| c == 1),
        "no document was created twice"
    );
    for i in 0..n {
        assert!(
            store.created.contains_key(&batch.id(i)),
            "document {i} missing"
        );
    }
    assert_eq!(report.dead_lettered, 0);
    assert_eq!(report.created + report.already_existed, n, "{report:?}");
    // What the sink counts is what the responder actually told it.
    assert_eq!(report.created, store.sent_201, "{report:?}");
    assert_eq!(report.already_existed, store.sent_409, "{report:?}");
    assert!(
        report.already_existed > 0,
        "the lost and the truncated responses were replayed as 409s"
    );
    // Bulk bodies go out as the batch's buffers with their exact length, not chunked, and
    // name the client as the elasticsearch crate's own requests do.
    assert!(
        store.bulk_requests.len() >= 8,
        "{:?}",
        store.bulk_requests.len()
    );
    for seen in &store.bulk_requests {
        let agent = seen.user_agent.as_deref().unwrap_or_default();
        assert!(agent.starts_with("elasticsearch-rs/"), "{seen:?}");
        let length = seen.body_len.to_string();
        assert_eq!(
            seen.content_length.as_deref(),
            Some(length.as_str()),
            "{seen:?}"
        );
        assert_eq!(seen.transfer_encoding, None, "{seen:?}");
    }
    assert_eq!(
        report.item_retries,
        store.sent_429 + store.sent_503_items + store.sent_missing,
        "{report:?}"
    );
    assert!(
        store.sent_429 > 0 && store.sent_503_items > 0 && store.sent_missing > 0,
        "every item fault happened"
    );
    assert_eq!(
        report.request_retries, 6,
        "two 503s, two drops, the hang, the garbage: {report:?}"
    );
    assert_eq!(store.requests, 9);
    assert!(
        !dir.path().join("dl.ndjson").exists(),
        "nothing was dead-lettered"
    );
}

#[tokio::test]
async fn bodies_refused_as_a_whole_are_split_until_the_document_at_fault_is_dead_lettered() {
    // A cluster whose http.max_content_length is smaller than some bulk bodies (413 for any
    // body over 2 KB), and whose bulk parser chokes on one line (a whole-request 400
    // `x_content_parse_exception` for any body holding "BROKEN"); normal answers otherwise.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&sizes);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let Some((_, _, body)) = read_request(&mut socket).await else {
                    return;
                };
                seen.lock().unwrap().push(body.len());
                if body.len() > 2048 {
                    respond(&mut socket, 413, "").await;
                    return;
                }
                if body.windows(6).any(|w| w == b"BROKEN") {
                    let error = r#"{"error":{"type":"x_content_parse_exception","reason":"[1:20] Unexpected character"},"status":400}"#;
                    respond(&mut socket, 400, error).await;
                    return;
                }
                let items = body
                    .split(|&b| b == b'\n')
                    .filter(|l| !l.is_empty())
                    .count()
                    / 2;
                let items: Vec<Value> = (0..items)
                    .map(|_| json!({"create": {"status": 201}}))
                    .collect();
                respond(
                    &mut socket,
                    200,
                    &json!({"errors": false, "items": items}).to_string(),
                )
                .await;
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let dl = dir.path().join("dl.ndjson");
    let config = sink_config(&url, &format!("dead_letter_path = \"{}\"", dl.display()));
    let sink = BulkSink::new(&config).unwrap();
    let batch = Batch::generated(GenKind::Vnet, 9, 2, 10, Schema::Ecs, "flows-%{+xxxx.ww}")
        .with_document_edited(3, |doc| {
            doc.replace(
                "\"log\":{",
                &format!("\"padding\":\"{}\",\"log\":{{", "x".repeat(3000)),
            )
        })
        .with_document_edited(12, |doc| {
            doc.replace("\"log\":{", "\"x\":\"BROKEN\",\"log\":{")
        });
    let report = sink
        .deliver(&batch.buffer, &batch.origin(), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(
        (report.created, report.dead_lettered),
        (batch.len() - 2, 2),
        "{report:?}"
    );
    assert_eq!(
        report.request_retries, 0,
        "refused bodies are split, not retried as they are"
    );
    assert!(
        sizes.lock().unwrap().iter().filter(|&&s| s <= 2048).count() >= 2,
        "the body was split"
    );
    let lines: Vec<Value> = std::fs::read_to_string(&dl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut found: Vec<(u64, u64, String)> = lines
        .iter()
        .map(|l| {
            let ty = l["error"]["type"].as_str().unwrap().to_owned();
            (
                l["tuple_index"].as_u64().unwrap(),
                l["status"].as_u64().unwrap(),
                ty,
            )
        })
        .collect();
    found.sort();
    let t3 = u64::from(batch.buffer.items[3].tuple_index);
    let t12 = u64::from(batch.buffer.items[12].tuple_index);
    let mut expected = vec![
        (t3, 413, "request_entity_too_large".to_owned()),
        (t12, 400, "x_content_parse_exception".to_owned()),
    ];
    expected.sort();
    assert_eq!(found, expected);
}

#[tokio::test]
async fn cancellation_ends_an_endless_outage_promptly() {
    // An Elasticsearch that is down for good, three ways: answering 503 to everything,
    // accepting connections but never answering, and a closed port.
    let unavailable = Responder::start(|_| Fault::Unavailable, |_, _| false).await;
    let hanging = Responder::start(|_| Fault::Hang, |_, _| false).await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let batch = Batch::generated(GenKind::Nsg1, 1, 2, 5, Schema::Ecs, "flows-%{+xxxx.ww}");
    for (url, store) in [
        (&unavailable.url, Some(unavailable.store.clone())),
        (&hanging.url, Some(hanging.store.clone())),
        (&closed, None),
    ] {
        // Backoff and timeout far longer than the test waits: only cancellation can end this.
        let config = ElasticsearchConfig {
            retry_initial_backoff: Duration::from_secs(300),
            retry_max_backoff: Duration::from_secs(600),
            ..sink_config(url, "request_timeout = \"600s\"")
        };
        let sink = BulkSink::new(&config).unwrap();
        let cancel = CancellationToken::new();
        let stopper = cancel.clone();
        // Cancel once the sink is inside the outage: its first request reached the responder
        // (a fixed delay could cancel a stalled test before that), at least 300 ms in, and
        // after 10 s whatever happened (the request counts below then say what did not).
        tokio::spawn(async move {
            let started = Instant::now();
            loop {
                let in_outage = store
                    .as_ref()
                    .is_none_or(|s| s.lock().unwrap().requests >= 1);
                let waited = started.elapsed();
                if (in_outage && waited >= Duration::from_millis(300))
                    || waited >= Duration::from_secs(10)
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            stopper.cancel();
        });
        let result = tokio::time::timeout(
            Duration::from_secs(30),
            sink.deliver(&batch.buffer, &batch.origin(), &cancel),
        )
        .await
        .unwrap_or_else(|_| panic!("{url}: deliver ignored the cancellation"));
        assert_eq!(result, Err(Cancelled), "{url}");
    }
    assert!(unavailable.store().requests >= 1);
    assert!(hanging.store().requests >= 1);
}

/// Log output of every test in this binary, collected by one global subscriber (a scoped
/// `set_default` subscriber misses events when other test threads register the same
/// callsites concurrently).
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn global_logs() -> &'static LogBuffer {
    static LOGS: std::sync::OnceLock<LogBuffer> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = LogBuffer::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber");
        logs
    })
}

#[tokio::test]
async fn secrets_never_appear_in_debug_output_errors_or_logs() {
    const PASSWORD: &str = "pw-Zq8#S3CRET-basic";
    const API_KEY_ID: &str = "key-id-1";
    const API_KEY: &str = "apikey-S3CRET-Yx2";
    let logs = global_logs();

    let responder = Responder::start(
        |n| {
            if n < 3 {
                Fault::Unauthorized
            } else {
                Fault::None
            }
        },
        |_, _| false,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let pw_file = dir.path().join("pw");
    std::fs::File::create(&pw_file)
        .unwrap()
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .unwrap();
    let basic = sink_config(
        &responder.url,
        &format!(
            "username = \"elastic\"\npassword_file = \"{}\"",
            pw_file.display()
        ),
    );
    let api = sink_config(
        &responder.url,
        &format!("api_key = \"{API_KEY_ID}:{API_KEY}\""),
    );
    let mut texts = vec![format!("{basic:?}"), format!("{api:?}")];

    let basic_sink = BulkSink::new(&basic).unwrap();
    let api_sink = BulkSink::new(&api).unwrap();
    texts.push(format!("{basic_sink:?}"));
    texts.push(format!("{api_sink:?}"));
    // Errors: the cluster refuses the credentials (401), and a cluster that is not there.
    let e = basic_sink.check().await.unwrap_err();
    texts.push(e.to_string());
    texts.push(format!("{e:?}"));
    texts.push(api_sink.check().await.unwrap_err().to_string());
    let gone = sink_config(
        "http://127.0.0.1:9",
        &format!("api_key = \"{API_KEY_ID}:{API_KEY}\""),
    );
    texts.push(
        BulkSink::new(&gone)
            .unwrap()
            .check()
            .await
            .unwrap_err()
            .to_string(),
    );
    // Deliveries through 401s (retried, logged) until the responder accepts.
    let batch = Batch::generated(GenKind::Vnet, 2, 1, 3, Schema::Ecs, "flows-%{+xxxx.ww}");
    let report = basic_sink
        .deliver(&batch.buffer, &batch.origin(), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.created, batch.len());
    let log_text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        log_text.contains("401"),
        "the refusal was logged: {log_text}"
    );
    texts.push(log_text);

    // The secrets were used: the responder saw them in Authorization headers.
    let auth = responder.store().authorization.clone();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    assert!(
        auth.contains(&format!(
            "Basic {}",
            b64.encode(format!("elastic:{PASSWORD}"))
        )),
        "{auth:?}"
    );
    assert!(
        auth.contains(&format!(
            "ApiKey {}",
            b64.encode(format!("{API_KEY_ID}:{API_KEY}"))
        )),
        "{auth:?}"
    );

    for text in &texts {
        for secret in [PASSWORD, API_KEY, "S3CRET"] {
            assert!(
                !text.contains(secret),
                "secret {secret:?} leaked into: {text}"
            );
        }
    }
}

/// An Elasticsearch 8 look-alike for what the OpenSearch test node cannot serve (ILM, the
/// privileges API, an Elasticsearch version): answers
/// `GET /`, `PUT _ilm/policy/…`, `PUT _index_template/…` and `_has_privileges` as
/// Elasticsearch 8.15 does, and records every request (method, path, JSON body).
async fn elasticsearch_lookalike() -> (String, Arc<Mutex<Vec<(String, Value)>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let Some((line, _, body)) = read_request(&mut socket).await else {
                    return;
                };
                let target = line.split(' ').take(2).collect::<Vec<_>>().join(" ");
                let json_body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                log.lock()
                    .unwrap()
                    .push((target.clone(), json_body.clone()));
                let (status, answer) = match target.as_str() {
                    "GET /" => (
                        200,
                        json!({"name": "es01", "cluster_name": "prod", "version": {"number": "8.15.0", "build_flavor": "default"}, "tagline": "You Know, for Search"}),
                    ),
                    t if t.starts_with("PUT /_ilm/policy/")
                        || t.starts_with("PUT /_index_template/") =>
                    {
                        (200, json!({"acknowledged": true}))
                    }
                    // A user granted `monitor`, `manage_index_templates` and `create_doc`
                    // only, answering for exactly what was asked, as Elasticsearch does.
                    "POST /_security/user/_has_privileges" => {
                        let granted = ["monitor", "manage_index_templates", "create_doc"];
                        let answer_for = |names: &Value| -> Map<String, Value> {
                            names
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(Value::as_str)
                                .map(|p| (p.to_owned(), Value::Bool(granted.contains(&p))))
                                .collect()
                        };
                        let mut index = Map::new();
                        for entry in json_body["index"].as_array().into_iter().flatten() {
                            for name in entry["names"].as_array().into_iter().flatten() {
                                let name = name.as_str().unwrap_or_default().to_owned();
                                let privileges = index
                                    .entry(name)
                                    .or_insert_with(|| Value::Object(Map::new()));
                                if let Value::Object(p) = privileges {
                                    p.extend(answer_for(&entry["privileges"]));
                                }
                            }
                        }
                        (
                            200,
                            json!({"username": "flowlogd", "has_all_requested": false,
                                   "cluster": answer_for(&json_body["cluster"]),
                                   "index": index}),
                        )
                    }
                    _ => (400, json!({"error": "no handler found"})),
                };
                respond(&mut socket, status, &answer.to_string()).await;
            });
        }
    });
    (url, seen)
}

#[tokio::test]
async fn check_names_read_and_delete_as_missing_where_on_rewrite_replace_needs_them() {
    let (url, _) = elasticsearch_lookalike().await;
    let sink = BulkSink::new(&sink_config(&url, "")).unwrap();
    let target = |index: &str, deletes_rewritten| SetupTarget {
        source: "s".into(),
        index: IndexPattern::parse(index).unwrap(),
        schema: Schema::Ecs,
        deletes_rewritten,
    };
    let info = sink
        .check_targets(&[
            target("replace-%{+xxxx.ww}", true),
            target("reread-%{+xxxx.ww}", false),
        ])
        .await
        .unwrap();
    let flowlogd::sink::bulk::PrivilegeCheck::Checked { missing, .. } = &info.privileges else {
        panic!("{:?}", info.privileges)
    };
    // `on_rewrite = "replace"` deletes a rewritten blob's documents by query: the user must
    // read and delete there, and only there.
    assert!(
        missing.contains(&"index replace-*:read".to_owned()),
        "{missing:?}"
    );
    assert!(
        missing.contains(&"index replace-*:delete".to_owned()),
        "{missing:?}"
    );
    assert!(
        !missing.iter().any(|m| m.starts_with("index reread-*:read") || m.starts_with("index reread-*:delete")),
        "{missing:?}"
    );
}

#[tokio::test]
async fn on_elasticsearch_setup_installs_the_ilm_policy_and_check_lists_missing_privileges() {
    let target = |index: &str| SetupTarget {
        source: "s".into(),
        index: IndexPattern::parse(index).unwrap(),
        schema: Schema::Ecs,
        deletes_rewritten: false,
    };
    // Dated indices: a delete-only policy, referenced by the template.
    let (url, seen) = elasticsearch_lookalike().await;
    let sink = BulkSink::new(&sink_config(&url, "delete_after = \"30d\"")).unwrap();
    let report = sink.setup(&[target("flows-%{+xxxx.ww}")]).await.unwrap();
    assert_eq!(
        report.lifecycle,
        LifecycleOutcome::Installed {
            engine: LifecycleEngine::Ilm,
            policy: "flowlogd-delete-after-30d".into()
        }
    );
    {
        let seen = seen.lock().unwrap();
        let paths: Vec<&str> = seen.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "GET /",
                "PUT /_ilm/policy/flowlogd-delete-after-30d",
                "PUT /_index_template/flowlogd-flows",
                // Indices created before the blob id get its mapping.
                "PUT /flows-*/_mapping?ignore_unavailable=true&allow_no_indices=true"
            ],
            "the policy exists before a template names it"
        );
        let policy = &seen[1].1["policy"]["phases"];
        assert_eq!(policy["delete"]["min_age"], "30d");
        assert_eq!(policy["delete"]["actions"], json!({"delete": {}}));
        assert!(
            policy["hot"]["actions"].get("rollover").is_none(),
            "dated indices need no rollover"
        );
        let template = &seen[2].1;
        assert_eq!(template["index_patterns"], json!(["flows-*"]));
        assert_eq!(
            template["template"]["settings"]["index"]["lifecycle"]["name"],
            "flowlogd-delete-after-30d"
        );
        assert!(template.get("data_stream").is_none());
    }
    let info = sink
        .check_targets(&[target("flows-%{+xxxx.ww}")])
        .await
        .unwrap();
    assert!(info.supports_ilm());
    assert_eq!(info.version, "8.15.0");
    assert_eq!(
        info.privileges,
        flowlogd::sink::bulk::PrivilegeCheck::Checked {
            username: "flowlogd".into(),
            missing: vec![
                "cluster:manage_ilm".into(),
                "index flows-*:auto_configure".into()
            ],
        }
    );
    eprintln!("{info}");
}
