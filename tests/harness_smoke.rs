//! Smoke test of the integration-test harness (tests/common): each server starts, answers one
//! real request, comes back on the same port after a restart, and is gone (its port refuses
//! connections, its process is reaped) once stopped or dropped.

mod common;

use std::{
    io::{self, Read as _, Write as _},
    net::TcpStream,
    path::Path,
    time::Duration,
};

use common::{Azurite, Osmem};
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
async fn osmem_answers_indexes_restarts_empty_and_stops() {
    let mut osmem = Osmem::start().expect("start osmem-server");
    let port = osmem.port();
    assert_eq!(osmem.url(), format!("http://127.0.0.1:{port}"));

    let (status, body) = http(port, "GET", "/").expect("GET /");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"cluster_name\""), "{body}");

    let client = Elasticsearch::new(Transport::single_node(&osmem.url()).expect("transport"));
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

    client
        .indices()
        .refresh(IndicesRefreshParts::Index(&["smoke"]))
        .send()
        .await
        .expect("refresh");
    let count: Value = client
        .count(CountParts::Index(&["smoke"]))
        .send()
        .await
        .expect("count")
        .json()
        .await
        .expect("count response");
    assert_eq!(count["count"], json!(1), "{count}");

    let first_pid = osmem.pid().expect("running");
    osmem.stop().expect("stop osmem-server");
    assert_refused(port);
    assert_reaped(first_pid);

    osmem.restart().expect("restart osmem-server");
    assert_eq!(osmem.port(), port, "restart keeps the port");
    // In memory only: the restarted server is empty.
    let (status, body) = http(port, "GET", "/smoke/_count").expect("count after restart");
    assert_eq!(status, 404, "{body}");

    let pid = osmem.pid().expect("running");
    drop(osmem);
    assert_refused(port);
    assert_reaped(pid);
}

#[test]
fn missing_binary_says_to_run_deps_script() {
    // Only the error path of binary lookup; run in a child so the env change stays local.
    if std::env::var_os("FLOWLOGD_SMOKE_CHILD").is_some() {
        let err = Osmem::start().err().expect("must fail without a binary");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("scripts/deps.sh"), "{err}");
        return;
    }
    let exe = std::env::current_exe().expect("test executable");
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "missing_binary_says_to_run_deps_script",
            "--quiet",
        ])
        .env("FLOWLOGD_SMOKE_CHILD", "1")
        .env("FLOWLOGD_OSMEM_BIN", "/nonexistent/osmem-server")
        .output()
        .expect("run child test");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
