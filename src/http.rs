//! The health and metrics endpoint: `/healthz` (alive), `/readyz` (doing its job), `/metrics`
//! (Prometheus text). A deliberately tiny HTTP/1.1 responder: GET only, one request per
//! connection, bounded reads, so it needs no web framework.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Longest request head accepted.
const MAX_REQUEST_BYTES: usize = 8192;

/// How `/readyz` judges freshness.
#[derive(Debug, Clone, Copy)]
pub struct ReadinessWindows {
    /// Every source must have listed successfully within this.
    pub list: Duration,
    /// A batch may be in delivery without any bulk success for at most this.
    pub bulk: Duration,
}

/// Binds `listen` and serves until `shutdown` fires. Returns the bound address.
pub async fn serve(
    listen: &str,
    metrics: Arc<Metrics>,
    windows: ReadinessWindows,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = shutdown.cancelled() => return,
            };
            let Ok((mut stream, _)) = accepted else {
                continue;
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let mut buf = Vec::with_capacity(1024);
                let mut chunk = [0u8; 1024];
                let read = tokio::time::timeout(Duration::from_secs(5), async {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_REQUEST_BYTES
                    {
                        let n = stream.read(&mut chunk).await?;
                        if n == 0 {
                            break;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    Ok::<_, std::io::Error>(())
                })
                .await;
                if !matches!(read, Ok(Ok(()))) {
                    return;
                }
                let response = respond(&buf, &metrics, windows);
                let _ = stream.write_all(&response).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    Ok((addr, handle))
}

fn respond(request: &[u8], metrics: &Arc<Metrics>, windows: ReadinessWindows) -> Vec<u8> {
    let line = request
        .split(|b| *b == b'\r' || *b == b'\n')
        .next()
        .unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let path = path.split(|b| *b == b'?').next().unwrap_or_default();
    let now = chrono::Utc::now().timestamp_millis();
    let (status, content_type, body) = match (method, path) {
        (b"GET" | b"HEAD", b"/healthz") => ("200 OK", "text/plain", "ok\n".to_string()),
        (b"GET" | b"HEAD", b"/readyz") => {
            match metrics.readiness(now, windows.list, windows.bulk) {
                Ok(()) => ("200 OK", "text/plain", "ready\n".to_string()),
                Err(reason) => (
                    "503 Service Unavailable",
                    "text/plain",
                    format!("not ready: {reason}\n"),
                ),
            }
        }
        (b"GET" | b"HEAD", b"/metrics") => {
            ("200 OK", crate::metrics::CONTENT_TYPE, metrics.render(now))
        }
        (b"GET" | b"HEAD", _) => (
            "404 Not Found",
            "text/plain",
            "not found: try /healthz, /readyz or /metrics\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_string(),
        ),
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != b"HEAD" {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::StorageStats;

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_health_readiness_and_metrics() {
        let metrics = Arc::new(Metrics::new([(
            "vnet".to_string(),
            Arc::new(StorageStats::default()),
        )]));
        let shutdown = CancellationToken::new();
        let windows = ReadinessWindows {
            list: Duration::from_secs(60),
            bulk: Duration::from_secs(60),
        };
        let (addr, handle) = serve("127.0.0.1:0", metrics.clone(), windows, shutdown.clone())
            .await
            .unwrap();
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        let not_ready = get(addr, "/readyz").await;
        assert!(
            not_ready.starts_with("HTTP/1.1 503") && not_ready.contains("registry"),
            "{not_ready}"
        );
        metrics
            .registry_open
            .store(true, std::sync::atomic::Ordering::Relaxed);
        metrics.sources[0].last_list_ok_ms.store(
            chrono::Utc::now().timestamp_millis(),
            std::sync::atomic::Ordering::Relaxed,
        );
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        let m = get(addr, "/metrics").await;
        assert!(
            m.contains("flowlogd_documents_indexed_total{source=\"vnet\"} 0"),
            "{m}"
        );
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
        shutdown.cancel();
        handle.await.unwrap();
    }
}
