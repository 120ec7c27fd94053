//! Smoke test of the integration-test harness (tests/common): each server (Azurite, the
//! OpenSearch test node) starts, answers real requests, comes back on the same port after a
//! restart, and is gone (its port refuses connections, its process is reaped) once stopped or
//! dropped; a missing server says how to install it.

mod common;

use std::{
    io::{self, Read as _, Write as _},
    net::TcpStream,
    path::Path,
    time::Duration,
};

use common::{Azurite, OpenSearch};
use elasticsearch::{
    BulkParts, CountParts, Elasticsearch, http::request::JsonBody, http::transport::Transport,
    indices::IndicesRefreshParts,
};
use serde_json::{Value, json};

/// One HTTP/1.1 request on a fresh connection (`Connection: close`, so the body ends at EOF).
/// Returns the status code and the raw body (chunk framing left in: callers only search it).
fn http(port: u16, method: &str, path: &str) -> io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )?;
    let mut response = String::new();
    s.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| io::Error::other(format!("not an HTTP response: {response:?}")))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    Ok((status, body.to_owned()))
}

fn assert_refused(port: u16) {
    match TcpStream::connect(("127.0.0.1", port)) {
        Err(e) => assert_eq!(
            e.kind(),
            io::ErrorKind::ConnectionRefused,
            "port {port}: {e}"
        ),
        Ok(_) => panic!("port {port} still accepts connections"),
    }
}

fn assert_reaped(pid: u32) {
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} still exists"
    );
}

#[test]
fn azurite_answers_checks_auth_restarts_and_stops() {
    let mut azurite = Azurite::start().expect("start Azurite");
    let port = azurite.port();
    assert_eq!(
        azurite.blob_endpoint(),
        format!("http://127.0.0.1:{port}/devstoreaccount1")
    );

    // Unauthenticated listing must be refused: proves Azurite is up and checks auth.
    let (status, body) = http(port, "GET", "/devstoreaccount1?comp=list").expect("list containers");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("AuthorizationFailure"), "{body}");

    let first_pid = azurite.pid().expect("running");
    azurite.stop().expect("stop Azurite");
    assert!(!azurite.is_running());
    assert_refused(port);
    assert_reaped(first_pid);

    azurite.restart().expect("restart Azurite");
    assert_eq!(azurite.port(), port, "restart keeps the port");
    let (status, _) = http(port, "GET", "/devstoreaccount1?comp=list").expect("list after restart");
    assert_eq!(status, 403);

    let pid = azurite.pid().expect("running");
    drop(azurite);
    assert_refused(port);
    assert_reaped(pid);
}

#[tokio::test]
async fn opensearch_answers_with_its_version_indexes_keeps_data_across_restart_and_stops() {
    let mut node = OpenSearch::start().expect("start the OpenSearch test node");
    let port = node.port();
    assert_eq!(node.url(), format!("http://127.0.0.1:{port}"));
    assert_eq!(node.version(), "2.19.6", "the launcher's ready line");
    assert!(
        node.home().join("data").is_dir(),
        "data under the node's home"
    );

    // GET / is the real engine's banner, with the version the launcher reported.
    let (status, body) = http(port, "GET", "/").expect("GET /");
    assert_eq!(status, 200, "{body}");
    let banner: Value = serde_json::from_str(body.trim()).expect("GET / is JSON");
    assert_eq!(
        banner["version"]["distribution"],
        json!("opensearch"),
        "{banner}"
    );
    assert_eq!(
        banner["version"]["number"],
        json!(node.version()),
        "{banner}"
    );

    let client = Elasticsearch::new(Transport::single_node(&node.url()).expect("transport"));
    // The same `create` twice: the bulk sink relies on the second coming back as a per-item 409.
    let doc = json!({"source": {"ip": "10.0.0.1"}, "network": {"bytes": 42}});
    let action = json!({"create": {"_index": "smoke", "_id": "a"}});
    let body: Vec<JsonBody<Value>> = vec![
        action.clone().into(),
        doc.clone().into(),
        action.into(),
        doc.into(),
    ];
    let response = client
        .bulk(BulkParts::None)
        .body(body)
        .send()
        .await
        .expect("bulk");
    assert_eq!(response.status_code().as_u16(), 200);
    let response: Value = response.json().await.expect("bulk response");
    assert_eq!(response["errors"], json!(true), "{response}");
    assert_eq!(
        response["items"][0]["create"]["status"],
        json!(201),
        "{response}"
    );
    assert_eq!(
        response["items"][1]["create"]["status"],
        json!(409),
        "{response}"
    );
    assert_eq!(count(&client, "smoke").await, 1);

    // Stopped: the process is gone and the port refuses connections, as with a cluster down.
    let first_pid = node.pid().expect("running");
    node.stop().expect("stop the node");
    assert!(!node.is_running());
    assert_refused(port);
    assert_reaped(first_pid);

    // Back on the same port with the same home: the document is still there.
    node.restart().expect("restart the node");
    assert_eq!(node.port(), port, "restart keeps the port");
    assert_ne!(node.pid(), Some(first_pid), "a new process");
    let client = Elasticsearch::new(Transport::single_node(&node.url()).expect("transport"));
    assert_eq!(count(&client, "smoke").await, 1, "data kept across restart");

    let pid = node.pid().expect("running");
    let home = node.home().to_owned();
    drop(node);
    assert_refused(port);
    assert_reaped(pid);
    assert!(!home.exists(), "the node's home is removed on drop");
}

/// Documents in `index` after a refresh.
async fn count(client: &Elasticsearch, index: &str) -> u64 {
    client
        .indices()
        .refresh(IndicesRefreshParts::Index(&[index]))
        .send()
        .await
        .expect("refresh")
        .error_for_status_code()
        .expect("refresh status");
    let count: Value = client
        .count(CountParts::Index(&[index]))
        .send()
        .await
        .expect("count")
        .json()
        .await
        .expect("count response");
    count["count"]
        .as_u64()
        .unwrap_or_else(|| panic!("no count: {count}"))
}

#[test]
fn a_missing_opensearch_jar_says_to_run_deps_script_or_set_its_variable() {
    // Only the error path of the jar lookup; run in a child so the env change stays local.
    if std::env::var_os("FLOWLOGD_SMOKE_CHILD").is_some() {
        let err = OpenSearch::start()
            .err()
            .expect("must fail without the launcher jar");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        let msg = err.to_string();
        for needle in [
            "/nonexistent/flowlogd-opensearch.jar",
            "FLOWLOGD_OPENSEARCH_JAR",
            "scripts/deps.sh",
        ] {
            assert!(msg.contains(needle), "{needle} not in: {msg}");
        }
        return;
    }
    let exe = std::env::current_exe().expect("test executable");
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "a_missing_opensearch_jar_says_to_run_deps_script_or_set_its_variable",
            "--quiet",
        ])
        .env("FLOWLOGD_SMOKE_CHILD", "1")
        .env(
            "FLOWLOGD_OPENSEARCH_JAR",
            "/nonexistent/flowlogd-opensearch.jar",
        )
        .output()
        .expect("run child test");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The child really ran the check (a filter matching nothing would also exit 0).
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("1 passed"), "{stdout}");
}

#[tokio::test]
async fn each_es_engine_gets_its_own_prefix_and_cleanup_removes_only_its_own_data() {
    use common::flowlogd::Es;
    use elasticsearch::http::Method;
    let mine = Es::engine("harness smoke");
    let other = Es::engine("harness smoke");
    assert!(mine.real && other.real);
    assert_ne!(mine.prefix, other.prefix, "one prefix per call");
    assert_eq!(
        mine.prefix,
        mine.prefix.to_lowercase(),
        "index names are lower case"
    );
    for es in [&mine, &other] {
        let template = format!("flowlogd-{}-smoke", es.prefix);
        let (status, body) = es
            .call(
                Method::Put,
                &format!("_index_template/{template}"),
                Some(
                    json!({"index_patterns": [format!("{}-smoke-*", es.prefix)], "priority": 200}),
                ),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = es
            .call(
                Method::Post,
                &format!("{}-smoke-1/_doc", es.prefix),
                Some(json!({"n": 1})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(es.count(&es.all()).await, 1);
    }

    mine.cleanup().await;
    assert_eq!(
        mine.count(&mine.all()).await,
        0,
        "indices of the prefix deleted"
    );
    let (status, _) = mine
        .call(
            Method::Get,
            &format!("_index_template/flowlogd-{}-smoke", mine.prefix),
            None,
        )
        .await;
    assert_eq!(status, 404, "template of the prefix deleted");
    // The other prefix's index and template are untouched.
    assert_eq!(other.count(&other.all()).await, 1);
    let (status, _) = other
        .call(
            Method::Get,
            &format!("_index_template/flowlogd-{}-smoke", other.prefix),
            None,
        )
        .await;
    assert_eq!(status, 200);
    other.cleanup().await;
    assert_eq!(other.count(&other.all()).await, 0);
}
