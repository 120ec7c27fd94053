//! An acknowledge-only bulk endpoint for the benchmarks (`scripts/bench-e2e.sh`,
//! `scripts/bench-memory.sh`): answers `GET /` like OpenSearch 2.19 (so no ILM is tried),
//! accepts template PUTs, and answers each `_bulk` request with `"errors":false` and one
//! `create` item with status 201 per action, storing nothing. `GET /_stats_ack` returns the
//! requests, documents and bytes acknowledged so far.
//!
//! It exists so that the benchmarks measure the shipper, not the sink: the Python sink it
//! replaces spent about as much CPU per document as flowlogd itself, on the same two cores.
//! A minimal HTTP/1.1 server on tokio alone (no new dependency): requests with a
//! `Content-Length` body, keep-alive, one thread. Not a general server.
//!
//! Usage: `cargo run --release --example ack_sink -- [DELAY_MS]`; prints its port, then serves
//! on 127.0.0.1 until killed. `DELAY_MS` delays each bulk answer (to let buffers fill up).
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default)]
struct Stats {
    requests: AtomicU64,
    documents: AtomicU64,
    bytes: AtomicU64,
}

const INFO: &str = r#"{"name":"ack-sink","cluster_name":"ack-sink","cluster_uuid":"x","version":{"number":"2.19.0","distribution":"opensearch"},"tagline":"The OpenSearch Project: https://opensearch.org/"}"#;
const ITEM: &[u8] = br#"{"create":{"status":201}}"#;
const NOT_FOUND: &str =
    r#"{"error":{"type":"resource_not_found_exception","reason":"ack sink"},"status":404}"#;
/// Longest request head accepted.
const MAX_HEAD: usize = 64 * 1024;

fn main() -> std::io::Result<()> {
    let delay = std::env::args()
        .nth(1)
        .and_then(|a| a.parse::<u64>().ok())
        .map(Duration::from_millis);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        println!("{}", listener.local_addr()?.port());
        let stats = Arc::new(Stats::default());
        loop {
            let (socket, _) = listener.accept().await?;
            socket.set_nodelay(true)?;
            let stats = stats.clone();
            tokio::spawn(async move {
                // A connection that breaks mid-request just ends.
                let _ = serve(socket, &stats, delay).await;
            });
        }
    })
}

/// One request's line and the headers the sink needs.
struct Head {
    method: String,
    path: String,
    content_length: usize,
}

async fn read_head(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<Head>> {
    let mut head = Vec::new();
    loop {
        let byte = match reader.read_u8().await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && head.is_empty() => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        head.push(byte);
        if head.ends_with(b"\r\n\r\n") {
            break;
        }
        if head.len() > MAX_HEAD {
            return Err(std::io::Error::other("request head too long"));
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_owned();
    let path = first.next().unwrap_or_default().to_owned();
    let content_length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    Ok(Some(Head {
        method,
        path,
        content_length,
    }))
}

async fn serve(socket: TcpStream, stats: &Stats, delay: Option<Duration>) -> std::io::Result<()> {
    let mut reader = BufReader::with_capacity(256 * 1024, socket);
    let mut piece = vec![0u8; 256 * 1024];
    while let Some(head) = read_head(&mut reader).await? {
        // The body is counted as it arrives, never held: lines and bytes are all the sink needs.
        let (mut left, mut lines, mut last) = (head.content_length, 0u64, b'\n');
        while left > 0 {
            let want = left.min(piece.len());
            let n = reader.read(&mut piece[..want]).await?;
            if n == 0 {
                return Ok(());
            }
            lines += memchr::memchr_iter(b'\n', &piece[..n]).count() as u64;
            last = piece[n - 1];
            left -= n;
        }
        let route = head.path.split('?').next().unwrap_or_default();
        let (status, body) = match (head.method.as_str(), route) {
            ("POST", r) if r.ends_with("/_bulk") => {
                let actions = (lines + u64::from(last != b'\n')) / 2;
                stats.requests.fetch_add(1, Ordering::Relaxed);
                stats.documents.fetch_add(actions, Ordering::Relaxed);
                stats
                    .bytes
                    .fetch_add(head.content_length as u64, Ordering::Relaxed);
                if let Some(d) = delay {
                    tokio::time::sleep(d).await;
                }
                let mut body = Vec::with_capacity(64 + actions as usize * (ITEM.len() + 1));
                body.extend_from_slice(br#"{"took":1,"errors":false,"items":["#);
                for i in 0..actions {
                    if i > 0 {
                        body.push(b',');
                    }
                    body.extend_from_slice(ITEM);
                }
                body.extend_from_slice(b"]}");
                ("200 OK", body)
            }
            ("GET" | "HEAD", "/" | "") => ("200 OK", INFO.as_bytes().to_vec()),
            ("GET", "/_stats_ack") => (
                "200 OK",
                format!(
                    r#"{{"requests":{},"documents":{},"bytes":{}}}"#,
                    stats.requests.load(Ordering::Relaxed),
                    stats.documents.load(Ordering::Relaxed),
                    stats.bytes.load(Ordering::Relaxed)
                )
                .into_bytes(),
            ),
            ("PUT", _) => ("200 OK", br#"{"acknowledged":true}"#.to_vec()),
            ("POST", _) => ("200 OK", b"{}".to_vec()),
            _ => ("404 Not Found", NOT_FOUND.as_bytes().to_vec()),
        };
        let header = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nX-Elastic-Product: Elasticsearch\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let socket = reader.get_mut();
        socket.write_all(header.as_bytes()).await?;
        if head.method != "HEAD" {
            socket.write_all(&body).await?;
        }
    }
    Ok(())
}
