//! Proxies that put faults a real server does not produce on demand between `flowlogd` and
//! the servers of a test: [`fault_proxy`] in front of the search engine (faults, slow answers,
//! an answer held back), [`storage_proxy`] in front of Azurite, and the small HTTP/1.1 helpers
//! they are built from (also used by `tests/chaos.rs` for its own, schedule-driven proxies).

/// A small HTTP/1.1 proxy in front of the search engine that misbehaves like a loaded or flaky
/// cluster behind a load balancer, with faults a real node does not produce on demand. Every
/// `_bulk` request gets, by its number `n` (retries included):
/// - `n % 6 == 1`: a whole-request 429 (`es_rejected_execution_exception`: queue full);
/// - `n % 6 == 2`: a whole-request 503 (no master / cluster restarting);
/// - `n % 6 == 3`: forwarded and applied, then the connection is dropped before the response
///   (a node or proxy dying mid-response: the retry finds the documents there, 409);
/// - `n % 6 == 4`: half of the items forwarded, the other half answered with per-item 429s
///   (and the last of them 503: a primary shard not active), as a partially overloaded cluster;
/// - `n % 6 == 5`: the connection dropped before anything is forwarded (reset mid-request);
/// - otherwise passed through. Other requests (`GET /`, templates) are passed through.
pub mod fault_proxy {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use serde_json::{Value, json};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::{TcpListener, TcpStream};

    #[derive(Default, Debug)]
    pub struct Stats {
        pub bulk_requests: AtomicU64,
        pub whole_429: AtomicU64,
        pub whole_503: AtomicU64,
        pub lost_responses: AtomicU64,
        pub item_429: AtomicU64,
        pub item_503: AtomicU64,
        pub resets: AtomicU64,
    }

    pub struct FaultProxy {
        pub url: String,
        pub stats: Arc<Stats>,
        _accepting: Accepting,
    }

    impl FaultProxy {
        /// A proxy forwarding to `upstream` (`host:port`, plain HTTP).
        pub async fn start(upstream: &str) -> FaultProxy {
            let upstream: Arc<str> = upstream.into();
            let stats = Arc::new(Stats::default());
            let s = stats.clone();
            let (url, accepting) =
                accept_each(move |sock| connection(sock, upstream.clone(), s.clone())).await;
            FaultProxy {
                url,
                stats,
                _accepting: accepting,
            }
        }
    }

    /// The task accepting a proxy's connections; it stops when the proxy is dropped.
    pub struct Accepting(tokio::task::JoinHandle<()>);

    impl Drop for Accepting {
        fn drop(&mut self) {
            self.0.abort();
        }
    }

    /// Listens on a loopback port and serves each connection with `serve` on a task of its
    /// own: the proxy's URL and the task accepting connections.
    pub async fn accept_each<F, Fut>(serve: F) -> (String, Accepting)
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy address"));
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(serve(sock));
            }
        });
        (url, Accepting(task))
    }

    /// A proxy forwarding everything to `upstream`, answering each `_bulk` only `delay` after
    /// the engine did: a cluster that indexes slowly, so that a test can act while ingest is
    /// surely still under way (the engine of the tests indexes a few thousand documents faster
    /// than a test can react).
    pub async fn start_slow(upstream: &str, delay: std::time::Duration) -> FaultProxy {
        let upstream: Arc<str> = upstream.into();
        let stats = Arc::new(Stats::default());
        let s = stats.clone();
        let (url, accepting) = accept_each(move |mut sock| {
            let (upstream, stats) = (upstream.clone(), s.clone());
            async move {
                let mut buf = Vec::new();
                while let Some(req) = read_request(&mut sock, &mut buf).await {
                    let Some((status, body)) = forward(&upstream, &req, &req.body).await else {
                        return;
                    };
                    if req.target.starts_with("/_bulk") {
                        stats.bulk_requests.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(delay).await;
                    }
                    if !respond(&mut sock, &req.method, status, &body).await {
                        return;
                    }
                }
            }
        })
        .await;
        FaultProxy {
            url,
            stats,
            _accepting: accepting,
        }
    }

    /// A proxy forwarding everything to `upstream` that, when armed, keeps back the engine's
    /// answer to the next `_bulk` in which the engine created at least one document. Those
    /// documents are in the index, but flowlogd never hears so. That is the window between
    /// the engine's acknowledgement and flowlogd's offset commit, held open for as long as the
    /// test needs, so a kill lands in it for sure rather than by luck. It also records every
    /// id the engine answered 409 (already there) for, to show which documents were sent
    /// again.
    pub struct HoldingProxy {
        pub url: String,
        state: Arc<HoldState>,
        _accepting: Accepting,
    }

    #[derive(Default)]
    struct HoldState {
        armed: std::sync::atomic::AtomicBool,
        held: std::sync::Mutex<Vec<Vec<String>>>,
        conflicts: std::sync::Mutex<std::collections::HashSet<String>>,
    }

    impl HoldingProxy {
        pub async fn start(upstream: &str) -> HoldingProxy {
            let upstream: Arc<str> = upstream.into();
            let state = Arc::new(HoldState::default());
            let s = state.clone();
            let (url, accepting) =
                accept_each(move |sock| hold_connection(sock, upstream.clone(), s.clone())).await;
            HoldingProxy {
                url,
                state,
                _accepting: accepting,
            }
        }

        /// Holds back the answer to the next `_bulk` that creates a document.
        pub fn arm(&self) {
            self.state.armed.store(true, Ordering::SeqCst);
        }

        /// The ids created by each held-back `_bulk`, in the order they were held.
        pub fn held(&self) -> Vec<Vec<String>> {
            self.state.held.lock().unwrap().clone()
        }

        /// Every id the engine answered 409 for, through this proxy, so far.
        pub fn conflicts(&self) -> std::collections::HashSet<String> {
            self.state.conflicts.lock().unwrap().clone()
        }
    }

    /// Each document id of a `_bulk` request with the status of its item in the response. The
    /// ids come from the request's action lines, since flowlogd asks for responses without
    /// them (`filter_path`); items answer the actions in order.
    fn item_statuses(request: &[u8], response: &[u8]) -> Vec<(String, u64)> {
        let parsed: Value = serde_json::from_slice(response).unwrap_or_default();
        let statuses = parsed["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|item| item.as_object().and_then(|o| o.values().next()))
            .map(|result| result.and_then(|r| r["status"].as_u64()));
        // Every action but `delete` is followed by its document's line.
        let mut lines = request
            .split(|&b| b == b'\n')
            .filter(|line| !line.is_empty());
        let mut ids = Vec::new();
        while let Some(action) = lines.next() {
            let action: Value = serde_json::from_slice(action).unwrap_or_default();
            let Some((kind, meta)) = action.as_object().and_then(|o| o.iter().next()) else {
                break;
            };
            ids.push(meta["_id"].as_str().map(str::to_owned));
            if kind != "delete" {
                lines.next();
            }
        }
        ids.into_iter()
            .zip(statuses)
            .filter_map(|(id, status)| Some((id?, status?)))
            .collect()
    }

    /// Sends no answer, ever: waits until the client closes its end of the connection.
    pub async fn hold_until_closed(sock: &mut TcpStream) {
        let mut rest = [0u8; 1024];
        while matches!(sock.read(&mut rest).await, Ok(n) if n > 0) {}
    }

    async fn hold_connection(mut sock: TcpStream, upstream: Arc<str>, state: Arc<HoldState>) {
        let mut buf = Vec::new();
        while let Some(req) = read_request(&mut sock, &mut buf).await {
            let Some((status, body)) = forward(&upstream, &req, &req.body).await else {
                return;
            };
            if req.target.starts_with("/_bulk") && status == 200 {
                let items = item_statuses(&req.body, &body);
                let with = |wanted: u64| {
                    items
                        .iter()
                        .filter(move |(_, status)| *status == wanted)
                        .map(|(id, _)| id.clone())
                };
                state.conflicts.lock().unwrap().extend(with(409));
                let created: Vec<String> = with(201).collect();
                if !created.is_empty() && state.armed.swap(false, Ordering::SeqCst) {
                    state.held.lock().unwrap().push(created);
                    hold_until_closed(&mut sock).await;
                    return;
                }
            }
            if !respond(&mut sock, &req.method, status, &body).await {
                return;
            }
        }
    }

    pub struct Request {
        pub method: String,
        pub target: String,
        pub headers: Vec<(String, String)>,
        pub body: Vec<u8>,
    }

    /// Reads one request (Content-Length bodies only, which is what the client sends).
    /// `None` at EOF or on garbage.
    pub async fn read_request(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Request> {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            let mut chunk = [0u8; 16384];
            let n = sock.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut first = lines.next()?.split(' ');
        let (method, target) = (first.next()?.to_owned(), first.next()?.to_owned());
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        assert!(
            !headers
                .iter()
                .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked")),
            "the proxy expects Content-Length bodies"
        );
        let total = head_end + 4 + len;
        while buf.len() < total {
            let mut chunk = [0u8; 65536];
            let n = sock.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = buf[head_end + 4..total].to_vec();
        buf.drain(..total);
        Some(Request {
            method,
            target,
            headers,
            body,
        })
    }

    /// Sends the request upstream as HTTP/1.0 (no chunking, the body ends at EOF).
    pub async fn forward(upstream: &str, req: &Request, body: &[u8]) -> Option<(u16, Vec<u8>)> {
        let mut up = TcpStream::connect(upstream).await.ok()?;
        let mut head = format!("{} {} HTTP/1.0\r\n", req.method, req.target);
        for (k, v) in &req.headers {
            if !matches!(
                k.as_str(),
                "connection" | "keep-alive" | "content-length" | "accept-encoding"
            ) {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
        up.write_all(head.as_bytes()).await.ok()?;
        up.write_all(body).await.ok()?;
        let mut response = Vec::new();
        up.read_to_end(&mut response).await.ok()?;
        let end = response.windows(4).position(|w| w == b"\r\n\r\n")?;
        let status = String::from_utf8_lossy(&response[..end])
            .split(' ')
            .nth(1)?
            .parse()
            .ok()?;
        Some((status, response[end + 4..].to_vec()))
    }

    pub async fn respond(sock: &mut TcpStream, method: &str, status: u16, body: &[u8]) -> bool {
        let head = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\nx-elastic-product: Elasticsearch\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let mut out = head.into_bytes();
        if method != "HEAD" {
            out.extend_from_slice(body);
        }
        sock.write_all(&out).await.is_ok()
    }

    fn item(status: u16, kind: &str) -> Value {
        json!({"create": {"status": status, "error": {"type": kind, "reason": "injected by the test's fault proxy"}}})
    }

    async fn connection(mut sock: TcpStream, upstream: Arc<str>, stats: Arc<Stats>) {
        let to = &*upstream;
        let mut buf = Vec::new();
        while let Some(req) = read_request(&mut sock, &mut buf).await {
            if !req.target.starts_with("/_bulk") {
                let Some((status, body)) = forward(to, &req, &req.body).await else {
                    return;
                };
                if !respond(&mut sock, &req.method, status, &body).await {
                    return;
                }
                continue;
            }
            let n = stats.bulk_requests.fetch_add(1, Ordering::SeqCst) + 1;
            let (status, body) = match n % 6 {
                1 => {
                    stats.whole_429.fetch_add(1, Ordering::SeqCst);
                    (429, json!({"error": {"type": "es_rejected_execution_exception", "reason": "injected"}, "status": 429}).to_string().into_bytes())
                }
                2 => {
                    stats.whole_503.fetch_add(1, Ordering::SeqCst);
                    (503, json!({"error": {"type": "master_not_discovered_exception", "reason": "injected"}, "status": 503}).to_string().into_bytes())
                }
                3 => {
                    let _ = forward(to, &req, &req.body).await;
                    stats.lost_responses.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                4 => match partial(to, &req, &stats).await {
                    Some(r) => r,
                    None => return,
                },
                5 => {
                    stats.resets.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                _ => match forward(to, &req, &req.body).await {
                    Some(r) => r,
                    None => return,
                },
            };
            if !respond(&mut sock, &req.method, status, &body).await {
                return;
            }
        }
    }

    /// Forwards the even items; the odd ones get 429 (the last of them 503).
    async fn partial(to: &str, req: &Request, stats: &Stats) -> Option<(u16, Vec<u8>)> {
        let text = String::from_utf8_lossy(&req.body).into_owned();
        let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
        let pairs: Vec<(&str, &str)> = lines.chunks(2).map(|p| (p[0], p[1])).collect();
        let mut kept = String::new();
        for (i, (action, doc)) in pairs.iter().enumerate() {
            if i % 2 == 0 {
                kept.push_str(&format!("{action}\n{doc}\n"));
            }
        }
        let (status, upstream) = forward(to, req, kept.as_bytes()).await?;
        if status != 200 {
            return Some((status, upstream));
        }
        let parsed: Value = serde_json::from_slice(&upstream).ok()?;
        let mut forwarded = parsed["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter();
        let last_odd = (0..pairs.len()).rev().find(|i| i % 2 == 1);
        let items: Vec<Value> = (0..pairs.len())
            .map(|i| {
                if i % 2 == 0 {
                    forwarded.next().unwrap_or_else(|| item(500, "missing"))
                } else if Some(i) == last_odd {
                    stats.item_503.fetch_add(1, Ordering::SeqCst);
                    item(503, "unavailable_shards_exception")
                } else {
                    stats.item_429.fetch_add(1, Ordering::SeqCst);
                    item(429, "es_rejected_execution_exception")
                }
            })
            .collect();
        Some((
            200,
            json!({"took": 1, "errors": true, "items": items})
                .to_string()
                .into_bytes(),
        ))
    }
}

/// Between flowlogd and Azurite: answers `503 ServerBusy` to the first `fail_first` blob reads
/// (GETs that are not listings) of every blob whose path contains `marker`, as a storage account
/// under throttling does; relays everything else byte for byte (one request per connection,
/// HTTP/1.0 upstream, so a response ends where the upstream connection does).
pub mod storage_proxy {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpStream;

    use super::fault_proxy::{Accepting, accept_each};

    pub struct StorageProxy {
        /// Path-style blob endpoint through the proxy.
        pub endpoint: String,
        pub failed: Arc<AtomicU64>,
        _accepting: Accepting,
    }

    pub async fn start(azurite_port: u16, marker: &'static str, fail_first: u64) -> StorageProxy {
        let failed = Arc::new(AtomicU64::new(0));
        let seen: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
        let f = failed.clone();
        let (url, accepting) = accept_each(move |sock| {
            relay(
                sock,
                azurite_port,
                marker,
                fail_first,
                seen.clone(),
                f.clone(),
            )
        })
        .await;
        StorageProxy {
            endpoint: format!("{url}/devstoreaccount1"),
            failed,
            _accepting: accepting,
        }
    }

    async fn relay(
        mut sock: TcpStream,
        upstream_port: u16,
        marker: &str,
        fail_first: u64,
        seen: Arc<Mutex<HashMap<String, u64>>>,
        failed: Arc<AtomicU64>,
    ) {
        let mut buf = Vec::new();
        let Some(req) = super::fault_proxy::read_request(&mut sock, &mut buf).await else {
            return;
        };
        let path = req.target.split('?').next().unwrap_or_default().to_owned();
        // ARM resource ids in blob names are upper case: match without case.
        if req.method == "GET"
            && path.to_ascii_lowercase().contains(marker)
            && !req.target.contains("comp=")
        {
            let n = {
                let mut seen = seen.lock().unwrap();
                let n = seen.entry(path).or_insert(0);
                *n += 1;
                *n
            };
            if n <= fail_first {
                failed.fetch_add(1, Ordering::SeqCst);
                let body = "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>ServerBusy</Code><Message>injected by the test's storage proxy</Message></Error>";
                let response = format!(
                    "HTTP/1.1 503 Server Busy\r\ncontent-type: application/xml\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(response.as_bytes()).await;
                return;
            }
        }
        let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream_port)).await else {
            return;
        };
        let mut head = format!("{} {} HTTP/1.0\r\n", req.method, req.target);
        for (k, v) in &req.headers {
            if !matches!(k.as_str(), "connection" | "keep-alive") {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        head.push_str("\r\n");
        if up.write_all(head.as_bytes()).await.is_err() || up.write_all(&req.body).await.is_err() {
            return;
        }
        let mut response = Vec::new();
        if up.read_to_end(&mut response).await.is_ok() {
            let _ = sock.write_all(&response).await;
        }
    }
}
