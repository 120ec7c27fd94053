//! Index lifecycle and data streams against the real engine: which lifecycle engine
//! `flowlogd check` and setup use (ILM on Elasticsearch, ISM on OpenSearch when its plugin is
//! installed, none otherwise), how the ISM policy is created and updated, and why
//! `data_stream = true` is refused (a rollover lets a data stream accept a document id again).
//!
//! The real engine is the OpenSearch node of this run (or the cluster of `ELASTICSEARCH_URL`).
//! The ISM plugin is not published on Maven Central, so the node has none; the ISM create and
//! update protocol is checked against a scripted responder that answers like that plugin.
mod common;

use std::sync::{Arc, Mutex};

use common::flowlogd::{
    Es, LifecycleApi, SourceSpec, TestConfig, VNET_CONTAINER, container, flowlogd,
};
use common::servers::Azurite;
use elasticsearch::http::Method;
use flowlogd::config::Config;
use flowlogd::config::document::Schema;
use flowlogd::sink::bulk::{
    BulkSink, LifecycleCheck, LifecycleEngine, LifecycleOutcome, SetupTarget,
};
use flowlogd::sink::template::{self, TemplateOptions};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn check_and_setup_say_which_lifecycle_engine_deletes_old_indices() {
    let azurite = Azurite::start().expect("azurite");
    container(&azurite, VNET_CONTAINER).await;
    let es = Es::engine("lifecycle-check");
    let expected = es.lifecycle_api().await;
    let source = |es: &Es| {
        SourceSpec::azurite("vnet", VNET_CONTAINER, &azurite, &es.pattern("vnet"))
            .extra("since = \"1h\"")
    };

    // Without delete_after nothing is installed and check says indices are kept.
    let config = TestConfig::new(&es.url, vec![source(&es)]).es(&es.config_lines);
    let out = flowlogd(&config.write(), &["check"], &[]).await;
    assert!(
        out.status.success(),
        "check failed:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    assert!(
        out.stdout
            .contains("ok    lifecycle: none (delete_after not set"),
        "{}",
        out.stdout
    );

    // With delete_after: the run installs what the engine has, check reports it.
    let config = TestConfig::new(&es.url, vec![source(&es)])
        .es(&es.config_lines)
        .es("delete_after = \"30d\"\nnumber_of_replicas = 0");
    let out = flowlogd(&config.write(), &["once"], &[]).await;
    assert!(out.status.success(), "once failed:\n{}", out.stderr);
    let out = flowlogd(&config.write(), &["check"], &[]).await;
    assert!(
        out.status.success(),
        "check failed:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("lifecycle:"))
        .unwrap_or_else(|| panic!("no lifecycle line:\n{}", out.stdout));
    match expected {
        LifecycleApi::None => {
            assert!(
                line.starts_with("skip  lifecycle: OpenSearch")
                    && line.contains("has no ISM API")
                    && line.contains("index-management plugin is not installed"),
                "{line}"
            );
            // And the run said so, as a warning, instead of failing.
            assert!(
                out.status.success() && !out.stdout.contains("FAIL  lifecycle"),
                "{}",
                out.stdout
            );
        }
        LifecycleApi::Ism => assert!(
            line.starts_with("ok    lifecycle: ISM policy flowlogd-delete-after-30d installed"),
            "{line}"
        ),
        LifecycleApi::Ilm => assert!(
            line.starts_with("ok    lifecycle: ILM policy flowlogd-delete-after-30d installed"),
            "{line}"
        ),
    }
    es.cleanup().await;
}

// ---------------------------------------------------------------------------------------------
// ISM protocol, against a scripted responder.

/// One request the responder saw: method, path with query, body.
type Seen = Arc<Mutex<Vec<(String, String, String)>>>;

/// A scripted HTTP/1.1 responder (keep-alive, Content-Length bodies only) answering every
/// request with `answer(method, path, body)`. Simulates what the node cannot: OpenSearch with
/// the ISM plugin installed.
async fn responder(
    answer: impl Fn(&str, &str, &str) -> (u16, Value) + Send + Sync + 'static,
) -> (String, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let seen: Seen = Arc::default();
    let answer = Arc::new(answer);
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let answer = Arc::clone(&answer);
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    while buf.len() < head_end + length {
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body =
                        String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned();
                    buf.drain(..head_end + length);
                    let mut words = head.split_whitespace();
                    let method = words.next().unwrap_or_default().to_owned();
                    let path = words.next().unwrap_or_default().to_owned();
                    let (status, reply) = answer(&method, &path, &body);
                    log.lock().unwrap().push((method, path, body));
                    let reply = reply.to_string();
                    let response = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{reply}",
                        reply.len()
                    );
                    if stream.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, seen)
}

fn config_for(url: &str, index: &str, es_lines: &str) -> Config {
    let text = format!(
        "[[source]]\nname = \"vnet\"\nindex = \"{index}\"\ncontainer = \"c\"\naccount = \"a\"\n\
         [source.auth]\nmethod = \"azure_cli\"\n[elasticsearch]\nurls = [\"{url}\"]\n{es_lines}\n"
    );
    Config::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[tokio::test]
async fn the_ism_policy_is_created_then_updated_with_the_sequence_number_it_replaces() {
    // The plugin's answers: no policy at first; after a PUT, the policy at _seq_no 7 and
    // _primary_term 2 (as ISM stores it).
    let stored = Arc::new(Mutex::new(false));
    let state = Arc::clone(&stored);
    let (url, seen) = responder(move |method, path, _body| {
        let mut stored = state.lock().unwrap();
        match (method, path) {
            ("GET", "/") => (
                200,
                json!({"name": "n", "cluster_name": "c", "version":
                    {"distribution": "opensearch", "number": "2.19.6"}}),
            ),
            ("GET", p) if p.starts_with("/_plugins/_ism/policies/") => {
                if *stored {
                    (200, json!({"_id": "p", "_seq_no": 7, "_primary_term": 2, "policy": {}}))
                } else {
                    (
                        404,
                        json!({"error": {"root_cause": [{"type": "status_exception",
                            "reason": "Policy not found"}]}, "status": 404}),
                    )
                }
            }
            ("PUT", p) if p.starts_with("/_plugins/_ism/policies/") => {
                *stored = true;
                (201, json!({"_id": "p", "_seq_no": 7, "_primary_term": 2}))
            }
            ("PUT", p) if p.starts_with("/_index_template/") => {
                (200, json!({"acknowledged": true}))
            }
            _ => (
                400,
                json!({"error": format!("no handler found for uri [{path}] and method [{method}]")}),
            ),
        }
    })
    .await;
    let config = config_for(&url, "vnet-flow-logs-%{+xxxx.ww}", "delete_after = \"30d\"");
    let sink = BulkSink::new(&config.elasticsearch).expect("sink");
    let targets = SetupTarget::for_sources(&config.sources).expect("targets");

    let info = sink.check().await.expect("GET /");
    assert_eq!(
        sink.check_lifecycle(&info).await.expect("check"),
        LifecycleCheck::Missing {
            engine: LifecycleEngine::Ism,
            policy: "flowlogd-delete-after-30d".into()
        }
    );
    for round in 0..2 {
        let report = sink.setup(&targets).await.expect("setup");
        assert_eq!(
            report.lifecycle,
            LifecycleOutcome::Installed {
                engine: LifecycleEngine::Ism,
                policy: "flowlogd-delete-after-30d".into()
            },
            "round {round}"
        );
    }
    assert_eq!(
        sink.check_lifecycle(&info).await.expect("check"),
        LifecycleCheck::Present {
            engine: LifecycleEngine::Ism,
            policy: "flowlogd-delete-after-30d".into()
        }
    );

    let seen = seen.lock().unwrap().clone();
    let puts: Vec<&(String, String, String)> = seen
        .iter()
        .filter(|(m, p, _)| m == "PUT" && p.starts_with("/_plugins/_ism/"))
        .collect();
    assert_eq!(puts.len(), 2, "{seen:?}");
    assert_eq!(
        puts[0].1,
        "/_plugins/_ism/policies/flowlogd-delete-after-30d"
    );
    assert_eq!(
        puts[1].1,
        "/_plugins/_ism/policies/flowlogd-delete-after-30d?if_seq_no=7&if_primary_term=2",
        "an update names what it replaces, or ISM answers 409"
    );
    let policy: Value = serde_json::from_str(&puts[0].2).expect("policy body");
    assert_eq!(
        policy["policy"]["ism_template"][0]["index_patterns"],
        json!(["vnet-flow-logs-*"]),
        "the policy attaches itself to the source's indices"
    );
    assert_eq!(
        policy["policy"]["states"][0]["transitions"][0]["conditions"]["min_index_age"],
        "30d"
    );
    // ISM is attached by the policy; an ILM setting in the template would be refused.
    for (_, path, body) in seen
        .iter()
        .filter(|(m, p, _)| m == "PUT" && p.contains("_index_template"))
    {
        assert!(!body.contains("lifecycle"), "{path}: {body}");
    }
}

// ---------------------------------------------------------------------------------------------
// Data streams.

#[tokio::test]
async fn a_rollover_makes_a_data_stream_accept_a_document_id_it_already_holds() {
    let es = Es::engine("datastream-rollover");
    let stream = format!("{}-ds", es.prefix);
    // flowlogd's own template, in its data-stream form.
    let options = TemplateOptions {
        number_of_shards: 1,
        number_of_replicas: 0,
        data_stream: true,
        ..TemplateOptions::default()
    };
    let body = template::index_template(Schema::Ecs, &stream, &options);
    let (status, answer) = es
        .call(
            Method::Put,
            &format!("_index_template/{}", template::template_name(&stream)),
            Some(body),
        )
        .await;
    assert_eq!(status, 200, "{answer}");

    // The same document with the same deterministic id, as a re-read would send it.
    let bulk = |id: &str| {
        format!(
            "{}\n{}\n",
            json!({"create": {"_index": stream, "_id": id}}),
            json!({"@timestamp": "2026-11-30T10:00:00Z", "source": {"ip": "10.0.0.4", "port": 443}})
        )
    };
    let post = |body: String| {
        let es = &es;
        async move {
            let client = reqwest::Client::new();
            let r = client
                .post(format!("{}/_bulk", es.url))
                .header("content-type", "application/x-ndjson")
                .body(body)
                .send()
                .await
                .expect("bulk");
            let v: Value =
                serde_json::from_slice(&r.bytes().await.expect("bulk body")).expect("bulk json");
            v["items"][0]["create"]["status"].as_u64().expect("status")
        }
    };
    assert_eq!(post(bulk("tuple-1")).await, 201, "first read");
    assert_eq!(
        post(bulk("tuple-1")).await,
        409,
        "a re-read before any rollover is refused: exactly once holds"
    );
    let (status, answer) = es
        .call(Method::Post, &format!("{stream}/_rollover"), None)
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        post(bulk("tuple-1")).await,
        201,
        "after the rollover the same id is created again in the new write index"
    );
    let docs = es.scan(&stream).await;
    assert_eq!(docs.len(), 2, "one tuple, two documents: {docs:?}");
    assert_ne!(docs[0].index, docs[1].index, "one per backing index");
    assert_eq!(docs[0].id, docs[1].id);

    let (_, _) = es
        .call(Method::Delete, &format!("_data_stream/{stream}"), None)
        .await;
    let (_, _) = es
        .call(
            Method::Delete,
            &format!("_index_template/{}", template::template_name(&stream)),
            None,
        )
        .await;
    es.cleanup().await;
}

#[tokio::test]
async fn data_stream_true_is_refused_at_startup_naming_the_key_and_the_reason() {
    let config = TestConfig::new(
        "http://127.0.0.1:9",
        vec![SourceSpec {
            name: "vnet".into(),
            container: VNET_CONTAINER.into(),
            blob_endpoint: "http://127.0.0.1:9/devstoreaccount1".into(),
            index: "flowlogs".into(),
            extra: String::new(),
            auth:
                "method = \"connection_string\"\nconnection_string = \"UseDevelopmentStorage=true\""
                    .into(),
        }],
    )
    .es("data_stream = true");
    for command in ["once", "check", "run"] {
        let out = flowlogd(&config.write(), &[command], &[]).await;
        assert!(
            !out.status.success(),
            "{command} accepted data_stream = true"
        );
        assert!(
            out.stderr.contains("elasticsearch.data_stream")
                && out.stderr.contains("rollover")
                && out.stderr.contains("%{+xxxx.ww}"),
            "{command}: {}",
            out.stderr
        );
    }
}
