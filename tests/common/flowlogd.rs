//! Helpers for end-to-end tests of the real `flowlogd` binary: configuration files, `flowlogd
//! once` with its JSON summary, a `flowlogd run` daemon that can be killed or stopped, blobs
//! written into Azurite the way Azure writes them, and a search-engine client to read the result
//! back (counts, every document with its id): the OpenSearch node of this run, or a cluster of
//! `ELASTICSEARCH_URL`.
//!
//! Every `flowlogd` process started here dies with the test: it is killed by PID when its
//! handle drops, and the kernel sends it SIGKILL if the test thread that started it goes away
//! first (`PR_SET_PDEATHSIG`), so no daemon outlives a crashed or interrupted test run.

use std::collections::HashSet;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::process::CommandExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use elasticsearch::Elasticsearch;
use elasticsearch::auth::Credentials;
use elasticsearch::cert::CertificateValidation;
use elasticsearch::http::headers::HeaderMap;
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::http::{Method, Url};
use flowlogd::config::storage::{AuthConfig, StorageConfig};
use flowlogd::generator::{GenKind, GenOptions, GeneratedBlob, generate};
use flowlogd::metrics::StorageStats;
use flowlogd::secret::Secret;
use flowlogd::source::client::StorageClient;
use flowlogd::source::upload::BlockBlobWriter;
use serde::Deserialize;
use serde_json::{Value, json};

use super::servers::Azurite;

/// The binary under test: this build's, or `FLOWLOGD_E2E_BIN` when set (e.g. a release build,
/// or an older build to show that a regression test catches the bug it was written for).
pub fn bin() -> PathBuf {
    match std::env::var_os("FLOWLOGD_E2E_BIN") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_flowlogd")),
    }
}

/// Container Azure writes VNet flow logs to.
pub const VNET_CONTAINER: &str = "insights-logs-flowlogflowevent";
/// Container Azure writes NSG flow logs to.
pub const NSG_CONTAINER: &str = "insights-logs-networksecuritygroupflowevent";

/// Longest a `flowlogd once` may take before the test gives up (and kills it).
const ONCE_TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// Configuration files.

/// One `[[source]]` of a test configuration.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    pub name: String,
    pub container: String,
    pub blob_endpoint: String,
    pub index: String,
    /// The lines of `[source.auth]` (with `method = …`).
    pub auth: String,
    /// More lines for the `[[source]]` table (`since = …`, `discovery_interval = …`).
    pub extra: String,
}

impl SourceSpec {
    /// A source reading `container` of Azurite with the account key.
    pub fn azurite(name: &str, container: &str, azurite: &Azurite, index: &str) -> SourceSpec {
        SourceSpec {
            name: name.to_owned(),
            container: container.to_owned(),
            blob_endpoint: azurite.blob_endpoint(),
            index: index.to_owned(),
            auth: format!(
                "method = \"account_key\"\naccount_key = \"{}\"",
                Azurite::ACCOUNT_KEY
            ),
            extra: String::new(),
        }
    }

    pub fn auth(mut self, lines: &str) -> SourceSpec {
        self.auth = lines.to_owned();
        self
    }

    pub fn extra(mut self, lines: &str) -> SourceSpec {
        self.extra.push_str(lines);
        self.extra.push('\n');
        self
    }
}

/// A configuration file in its own temporary folder, with the registry and the dead-letter
/// file beside it.
pub struct TestConfig {
    dir: tempfile::TempDir,
    pub es_url: String,
    /// Lines for `[elasticsearch]` (auth, batch sizes).
    pub es_extra: String,
    /// `retry_initial_backoff` and `retry_max_backoff`.
    pub backoff: (&'static str, &'static str),
    /// Lines for `[daemon]`.
    pub daemon: String,
    /// `[http].listen`; empty disables the listener.
    pub listen: String,
    /// `dead_letter_path` instead of `dead-letter.ndjson` in the config's folder.
    pub dead_letter_override: Option<PathBuf>,
    pub sources: Vec<SourceSpec>,
    /// More tables, written after the sources (`[cluster]\nshard = "0/3"`).
    pub tables: String,
}

impl TestConfig {
    /// Short retry backoffs, so injected failures cost milliseconds, not seconds.
    pub fn new(es_url: &str, sources: Vec<SourceSpec>) -> TestConfig {
        TestConfig {
            dir: tempfile::Builder::new()
                .prefix("flowlogd-e2e-")
                .tempdir()
                .expect("temp dir"),
            es_url: es_url.to_owned(),
            es_extra: String::new(),
            backoff: ("50ms", "500ms"),
            daemon: String::new(),
            listen: String::new(),
            dead_letter_override: None,
            sources,
            tables: String::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("flowlogd.toml")
    }

    pub fn dead_letter_path(&self) -> PathBuf {
        self.dead_letter_override
            .clone()
            .unwrap_or_else(|| self.dir.path().join("dead-letter.ndjson"))
    }

    pub fn registry_path(&self) -> PathBuf {
        self.dir.path().join("registry")
    }

    pub fn es(mut self, lines: &str) -> TestConfig {
        self.es_extra.push_str(lines);
        self.es_extra.push('\n');
        self
    }

    pub fn daemon(mut self, lines: &str) -> TestConfig {
        self.daemon.push_str(lines);
        self.daemon.push('\n');
        self
    }

    /// Adds tables after the sources (`[cluster]` and its keys).
    pub fn tables(mut self, text: &str) -> TestConfig {
        self.tables.push_str(text);
        self.tables.push('\n');
        self
    }

    /// Serves `/metrics` on a free port (its address is read back from the log).
    pub fn with_metrics(mut self) -> TestConfig {
        self.listen = "127.0.0.1:0".into();
        self
    }

    pub fn toml(&self) -> String {
        let mut t = format!(
            "[registry]\npath = \"{}\"\n\n[http]\nlisten = \"{}\"\n\n[daemon]\nsd_notify = false\n{}\n\
             [elasticsearch]\nurls = [\"{}\"]\ndead_letter_path = \"{}\"\n\
             retry_initial_backoff = \"{}\"\nretry_max_backoff = \"{}\"\n{}\n",
            self.registry_path().display(),
            self.listen,
            self.daemon,
            self.es_url,
            self.dead_letter_path().display(),
            self.backoff.0,
            self.backoff.1,
            self.es_extra,
        );
        for s in &self.sources {
            t.push_str(&format!(
                "[[source]]\nname = \"{}\"\ncontainer = \"{}\"\nblob_endpoint = \"{}\"\nindex = \"{}\"\n{}\n[source.auth]\n{}\n\n",
                s.name, s.container, s.blob_endpoint, s.index, s.extra, s.auth
            ));
        }
        t.push_str(&self.tables);
        t
    }

    /// Writes the file and returns its path.
    pub fn write(&self) -> PathBuf {
        let path = self.path();
        std::fs::write(&path, self.toml()).expect("write config");
        path
    }

    /// The dead-letter file's lines (none when it does not exist).
    pub fn dead_letters(&self) -> Vec<Value> {
        match std::fs::read_to_string(self.dead_letter_path()) {
            Ok(text) => text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("dead letter {l}: {e}")))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// `flowlogd registry list`: `(blob, offset, length_seen)` of every entry.
    pub async fn registry_entries(&self) -> Vec<(String, u64, u64)> {
        let out = flowlogd(&self.write(), &["registry", "list"], &[]).await;
        assert!(
            out.status.success(),
            "registry list failed:\n{}",
            out.stderr
        );
        out.stdout
            .lines()
            .map(|line| {
                let cols: Vec<&str> = line.split('\t').collect();
                let (offset, length) = cols[2].split_once('/').expect("offset/length");
                (
                    cols[4].to_owned(),
                    offset.parse().unwrap(),
                    length.parse().unwrap(),
                )
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Running the binary.

/// The JSON line `flowlogd once` prints.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    pub list_requests: u64,
    pub blobs_listed: u64,
    pub blobs_read: u64,
    pub bytes_downloaded: u64,
    pub bytes_new: u64,
    pub records: u64,
    pub documents_indexed: u64,
    pub documents_existing: u64,
    pub documents_dead_lettered: u64,
    pub tuples_filtered: u64,
    /// Present when `[[filter]]` rules are configured.
    #[serde(default)]
    pub tuples_filtered_by_rule: std::collections::BTreeMap<String, u64>,
    pub errors: u64,
}

/// What a finished `flowlogd` command did.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// The summary line of `flowlogd once` (panics with the output when missing).
    pub fn summary(&self) -> Summary {
        let line = self.stdout.lines().last().unwrap_or_default();
        serde_json::from_str(line).unwrap_or_else(|e| {
            panic!(
                "no summary ({e}); status {}\nstdout:\n{}\nstderr:\n{}",
                self.status, self.stdout, self.stderr
            )
        })
    }
}

/// Dies with the thread that spawned it (see the module docs). Linux only.
fn die_with_parent(cmd: &mut Command) {
    unsafe extern "C" {
        fn prctl(option: i32, arg2: u64, arg3: u64, arg4: u64, arg5: u64) -> i32;
    }
    const PR_SET_PDEATHSIG: i32 = 1;
    const SIGKILL: u64 = 9;
    // SAFETY: prctl(2) only changes a flag of the child being started; it touches no memory
    // and is async-signal-safe, as a pre_exec hook must be.
    unsafe {
        cmd.pre_exec(|| {
            prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
            Ok(())
        });
    }
}

fn command(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.arg("--config").arg(config).args(args);
    // Nothing from the caller's environment leaks into the config or the log filter.
    for (k, _) in std::env::vars() {
        if k.starts_with("FLOWLOGD_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    die_with_parent(&mut cmd);
    cmd
}

/// Runs `flowlogd --config CONFIG ARGS…` to the end (panics if that takes two minutes).
pub async fn flowlogd(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let (out, finished) = flowlogd_for(config, args, env, ONCE_TIMEOUT).await;
    assert!(
        finished,
        "flowlogd {args:?} did not finish within {ONCE_TIMEOUT:?}; killed. stderr:\n{}",
        out.stderr
    );
    out
}

/// Runs `flowlogd --config CONFIG ARGS…` for at most `limit`, then kills it. Returns what it
/// printed and whether it finished by itself.
pub async fn flowlogd_for(
    config: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    limit: Duration,
) -> (Output, bool) {
    let mut cmd = command(config, args, env);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Blocking waits belong on a blocking thread; that thread lives until the child is reaped,
    // so the parent-death signal cannot fire early.
    tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().expect("spawn flowlogd");
        let mut out_pipe = child.stdout.take().expect("stdout");
        let mut err_pipe = child.stderr.take().expect("stderr");
        let out = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = out_pipe.read_to_end(&mut v);
            v
        });
        let err = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = err_pipe.read_to_end(&mut v);
            v
        });
        let deadline = Instant::now() + limit;
        let (status, finished) = loop {
            if let Some(status) = child.try_wait().expect("wait for flowlogd") {
                break (status, true);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                break (child.wait().expect("reap flowlogd"), false);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let text = |v: Vec<u8>| String::from_utf8_lossy(&v).into_owned();
        let out = Output {
            status,
            stdout: text(out.join().unwrap_or_default()),
            stderr: text(err.join().unwrap_or_default()),
        };
        (out, finished)
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// `flowlogd once`, which must exit 0; returns its summary.
pub async fn once(config: &TestConfig) -> Summary {
    let out = flowlogd(&config.write(), &["once"], &[]).await;
    assert!(
        out.status.success(),
        "flowlogd once failed ({}):\n{}",
        out.status,
        out.stderr
    );
    out.summary()
}

/// A `flowlogd run` in the background; logs go to a file in the config's folder. Start it
/// from the test's own thread (the body of a `#[tokio::test]` runs there): it dies with the
/// thread that started it.
pub struct Daemon {
    child: Child,
    log: PathBuf,
    metrics: Option<std::net::SocketAddr>,
    pub status: Option<ExitStatus>,
}

impl Daemon {
    /// Starts `flowlogd [ARGS…] run` with `config` (written first).
    pub fn spawn(config: &TestConfig, args: &[&str]) -> Daemon {
        Daemon::spawn_with_env(config, args, &[])
    }

    /// [`Daemon::spawn`] with extra environment variables.
    pub fn spawn_with_env(config: &TestConfig, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let path = config.write();
        let mut n = 0;
        let log = loop {
            let p = config.dir().join(format!("run-{n}.log"));
            if !p.exists() {
                break p;
            }
            n += 1;
        };
        let file = std::fs::File::create(&log).expect("daemon log file");
        let mut all = args.to_vec();
        all.push("run");
        let mut cmd = command(&path, &all, env);
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file);
        let child = cmd.spawn().expect("spawn flowlogd run");
        Daemon {
            child,
            log,
            metrics: None,
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, like a crash or an OOM kill; reaps the process.
    pub fn kill(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }

    /// Sends SIGTERM (what systemd sends on stop).
    pub fn terminate(&self) {
        unsafe extern "C" {
            fn kill(pid: i32, sig: i32) -> i32;
        }
        if self.status.is_none() {
            // SAFETY: kill(2) on our own child, not reaped yet, so its pid is still its own.
            unsafe {
                kill(self.child.id() as i32, 15);
            }
        }
    }

    /// Waits up to `limit` for the process to exit.
    pub async fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while self.status.is_none() && Instant::now() < deadline {
            self.status = self.child.try_wait().ok().flatten();
            if self.status.is_none() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        self.status
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status.is_none()
    }

    /// The address of `/metrics`, from the `serving /healthz…` log line (waits for it).
    pub async fn metrics_addr(&mut self) -> std::net::SocketAddr {
        if let Some(a) = self.metrics {
            return a;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = self.log();
            if let Some(line) = log.lines().find(|l| l.contains("serving /healthz")) {
                let addr = line
                    .split("address=")
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|a| a.parse().ok())
                    .unwrap_or_else(|| panic!("no address in {line:?}"));
                self.metrics = Some(addr);
                return addr;
            }
            assert!(self.running(), "flowlogd run exited:\n{log}");
            assert!(
                Instant::now() < deadline,
                "no metrics address logged:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET /metrics` (Prometheus text); `None` when the daemon does not answer.
    pub async fn scrape(&mut self) -> Option<String> {
        let addr = self.metrics_addr().await;
        tokio::task::spawn_blocking(move || http_get(addr, "/metrics"))
            .await
            .ok()
            .flatten()
    }

    /// The sum of these counters (over their labels; `0` when absent or unanswered).
    pub async fn metrics_sum(&mut self, names: &[&str]) -> u64 {
        match self.scrape().await {
            Some(text) => names.iter().map(|n| metric_sum(&text, n)).sum(),
            None => 0,
        }
    }

    /// Waits until the sum of the counters `names` satisfies `ok`, or panics after `limit`.
    pub async fn wait_metrics(
        &mut self,
        names: &[&str],
        limit: Duration,
        ok: impl Fn(u64) -> bool,
    ) -> u64 {
        let deadline = Instant::now() + limit;
        loop {
            let value = self.metrics_sum(names).await;
            if ok(value) {
                return value;
            }
            assert!(self.running(), "flowlogd run exited:\n{}", self.log());
            assert!(
                Instant::now() < deadline,
                "timed out after {limit:?} waiting for {names:?} (now {value}):\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `signal N` for a status that ended by a signal, else the exit code.
pub fn describe(status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => status.to_string(),
    }
}

/// Sum of the samples of `name` (with any labels) in Prometheus text.
pub fn metric_sum(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// A one-shot HTTP/1.1 GET (the daemon's endpoint closes the connection after answering).
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

// ---------------------------------------------------------------------------------------------
// Blobs.

/// A storage client and a block writer for one Azurite container (created when missing).
pub async fn container(azurite: &Azurite, name: &str) -> (StorageClient, BlockBlobWriter) {
    container_at(azurite.blob_endpoint(), name).await
}

/// [`container`] through the blob endpoint `endpoint` of Azurite's account (a proxy's, say).
pub async fn container_at(endpoint: String, name: &str) -> (StorageClient, BlockBlobWriter) {
    let config = StorageConfig {
        account: Some(Azurite::ACCOUNT.to_owned()),
        endpoint_suffix: flowlogd::config::storage::DEFAULT_ENDPOINT_SUFFIX.to_owned(),
        blob_endpoint: Some(endpoint),
        container: name.to_owned(),
        auth: AuthConfig::AccountKey {
            account_key: Some(Secret::new(Azurite::ACCOUNT_KEY)),
            account_key_env: None,
            account_key_file: None,
        },
        retry: Default::default(),
    };
    let client = StorageClient::from_config(&config, Arc::new(StorageStats::default()))
        .expect("storage client");
    let writer = BlockBlobWriter::new(&client);
    writer.create_container().await.expect("create container");
    (client, writer)
}

/// Start of the current UTC hour, epoch seconds: blobs of this hour are inside any `since` window.
pub fn current_hour() -> i64 {
    let now = chrono::Utc::now().timestamp();
    now - now.rem_euclid(3600)
}

/// The `y=…/m=…/d=…/h=…/m=00` partition of an hour.
pub fn partition(hour: i64) -> String {
    chrono::DateTime::from_timestamp(hour, 0)
        .expect("hour")
        .format("y=%Y/m=%m/d=%d/h=%H/m=00")
        .to_string()
}

/// The subscription of the hand-written VNet records below.
pub const SUB: &str = "6F1E7C43-2B8D-4C57-9A3E-0D4B5C6A7E81";

/// A VNet flow-log record (as Azure writes it) with these tuples.
pub fn vnet_record(time_s: i64, mac: &str, tuples: &[String]) -> String {
    let time = chrono::DateTime::from_timestamp(time_s, 0)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S.1234567Z");
    let quoted: Vec<String> = tuples.iter().map(|t| format!("\"{t}\"")).collect();
    format!(
        "{{\"time\":\"{time}\",\"flowLogVersion\":4,\"flowLogGUID\":\"3c4a2b11-8f7e-4d6c-9b5a-1e2f3a4b5c6d\",\"macAddress\":\"{mac}\",\"category\":\"FlowLogFlowEvent\",\
         \"flowLogResourceID\":\"/SUBSCRIPTIONS/{SUB}/RESOURCEGROUPS/NETWORKWATCHERRG/PROVIDERS/MICROSOFT.NETWORK/NETWORKWATCHERS/NETWORKWATCHER_WESTEUROPE/FLOWLOGS/FL-REJECT\",\
         \"targetResourceID\":\"/subscriptions/{sub}/resourceGroups/rg-app/providers/Microsoft.Network/virtualNetworks/vnet-app\",\"operationName\":\"FlowLogFlowEvent\",\
         \"flowRecords\":{{\"flows\":[{{\"aclID\":\"00000000-0000-0000-0000-000000000000\",\"flowGroups\":[{{\"rule\":\"DefaultRule_AllowVnetOutBound\",\"flowTuples\":[{}]}}]}}]}}}}",
        quoted.join(","),
        sub = SUB.to_lowercase()
    )
}

/// A VNet tuple at `ms` from 10.0.1.`host` (TCP to 10.0.2.5:443, ended, 500 bytes).
pub fn vnet_tuple(ms: i64, host: u8) -> String {
    format!(
        "{ms},10.0.1.{host},10.0.2.5,{},443,6,O,E,NX,3,300,2,200",
        40000 + host as u32
    )
}

/// The name Azure gives the blob of the VNet records above for `hour` and NIC `mac`.
pub fn vnet_blob_name(hour: i64, mac: &str) -> String {
    format!(
        "flowLogResourceID=/{SUB}_NETWORKWATCHERRG/NETWORKWATCHER_WESTEUROPE_FL-REJECT/{}/macAddress={mac}/PT1H.json",
        partition(hour)
    )
}

/// A generated PT1H.json written record by record, as Network Watcher appends to it.
pub struct GrowingBlob {
    pub blob: GeneratedBlob,
    /// Records committed so far.
    pub written: usize,
    pub tuples_per_record: u64,
}

impl GrowingBlob {
    /// Generates `records` records (nothing is uploaded yet) for the current hour.
    pub fn new(kind: GenKind, seed: u64, name: &str, records: usize, tuples: usize) -> GrowingBlob {
        Self::at_hour(kind, seed, name, records, tuples, current_hour())
    }

    /// Like [`GrowingBlob::new`], for the hour starting at `hour_start` (epoch seconds).
    pub fn at_hour(
        kind: GenKind,
        seed: u64,
        name: &str,
        records: usize,
        tuples: usize,
        hour_start: i64,
    ) -> GrowingBlob {
        let blob = generate(&GenOptions {
            kind,
            seed,
            records,
            tuples_per_record: tuples,
            hour_start,
            name: name.to_owned(),
            ..GenOptions::default()
        });
        assert_eq!(blob.tuples, (records * tuples) as u64);
        GrowingBlob {
            blob,
            written: 0,
            tuples_per_record: tuples as u64,
        }
    }

    pub fn name(&self) -> &str {
        &self.blob.name
    }

    pub fn remaining(&self) -> usize {
        self.blob.blocks.len() - 2 - self.written
    }

    /// Record `i` without its separator.
    fn record(&self, i: usize) -> Bytes {
        let block = &self.blob.blocks[1 + i];
        Bytes::copy_from_slice(if i == 0 { block } else { &block[1..] })
    }

    /// Appends the next `n` records with Put Block + Put Block List before the `]}` tail.
    /// Returns `(tuples, bytes)` added to the blob.
    pub async fn append(&mut self, writer: &BlockBlobWriter, n: usize) -> (u64, u64) {
        let n = n.min(self.remaining());
        if n == 0 {
            return (0, 0);
        }
        let records: Vec<Bytes> = (self.written..self.written + n)
            .map(|i| self.record(i))
            .collect();
        let before = if self.written == 0 {
            0
        } else {
            self.length_after(self.written)
        };
        let outcome = writer
            .append_flow_log_records(&self.blob.name, &records)
            .await
            .unwrap_or_else(|e| panic!("append to {}: {e}", self.blob.name));
        self.written += n;
        assert_eq!(outcome.length, self.length_after(self.written));
        (n as u64 * self.tuples_per_record, outcome.length - before)
    }

    /// Length of the blob holding the first `records` records.
    pub fn length_after(&self, records: usize) -> u64 {
        self.blob.bytes_after(records).len() as u64
    }

    /// Tuples committed so far.
    pub fn tuples(&self) -> u64 {
        self.written as u64 * self.tuples_per_record
    }
}

// ---------------------------------------------------------------------------------------------
// Reading the index back.

/// One stored document.
#[derive(Debug, Clone)]
pub struct Doc {
    pub index: String,
    pub id: String,
    pub source: Value,
}

/// The search engine to check results against: the real cluster of `ELASTICSEARCH_URL`, the
/// OpenSearch node the tests of this run share, or a node a test started for itself.
pub struct Es {
    pub url: String,
    /// Auth/TLS lines for `[elasticsearch]`.
    pub config_lines: String,
    /// Prefix for index names of this run (unique on a shared real cluster).
    pub prefix: String,
    /// A real engine, whose indices and templates [`Es::cleanup`] deletes: every constructor
    /// here makes one.
    pub real: bool,
    client: Elasticsearch,
}

impl Es {
    /// The engine a test runs against by default: the cluster of `ELASTICSEARCH_URL` when set
    /// (see [`Es::from_env`]), else the shared OpenSearch node
    /// ([`crate::common::servers::search_engine_url`]). Either way the engine is shared, so the
    /// index prefix is unique to this call (`test` names the test, for humans reading
    /// `_cat/indices`) and [`Es::cleanup`] removes what the test created.
    pub fn engine(test: &str) -> Es {
        if std::env::var("ELASTICSEARCH_URL").is_ok_and(|u| !u.is_empty()) {
            return Es::from_env(test).expect("ELASTICSEARCH_URL is set");
        }
        Es::shared_node(test)
    }

    /// The OpenSearch node the tests of this run share
    /// ([`crate::common::servers::search_engine_url`]), even when `ELASTICSEARCH_URL` is set:
    /// for tests that need what only that node is known to be (plain HTTP on 127.0.0.1, no
    /// security: a fault proxy in front of it, or credentials of the test's own choosing).
    /// Unique index prefix, as with [`Es::engine`].
    pub fn shared_node(test: &str) -> Es {
        Es::node_at(&super::servers::search_engine_url(), test)
    }

    /// A real engine without auth at `url`, e.g. an [`crate::common::servers::OpenSearch`] a
    /// test started for itself; unique index prefix, as with [`Es::engine`].
    pub fn node_at(url: &str, test: &str) -> Es {
        Es {
            client: es_client(url, None, false),
            url: url.to_owned(),
            config_lines: String::new(),
            prefix: unique_prefix(test),
            real: true,
        }
    }

    /// `host:port` of [`Es::url`], for a proxy in front of it.
    pub fn authority(&self) -> String {
        let url = Url::parse(&self.url).expect("search engine url");
        format!(
            "{}:{}",
            url.host_str().expect("host"),
            url.port_or_known_default().expect("port")
        )
    }

    /// The cluster of `ELASTICSEARCH_URL` (with `ELASTICSEARCH_USERNAME`/`_PASSWORD` or
    /// `ELASTICSEARCH_API_KEY`, and `ELASTICSEARCH_CA_FILE` or `ELASTICSEARCH_INSECURE=1`), or
    /// `None` with a note on stderr.
    pub fn from_env(test: &str) -> Option<Es> {
        let Some(url) = std::env::var("ELASTICSEARCH_URL")
            .ok()
            .filter(|u| !u.is_empty())
        else {
            eprintln!(
                "note: {test}: ELASTICSEARCH_URL is not set; the real-cluster part of this test is skipped"
            );
            return None;
        };
        let mut lines = String::new();
        let mut creds = None;
        if let Some(key) = std::env::var("ELASTICSEARCH_API_KEY")
            .ok()
            .filter(|v| !v.is_empty())
        {
            lines.push_str("api_key_env = \"ELASTICSEARCH_API_KEY\"\n");
            creds = Some(Credentials::EncodedApiKey(key));
        } else if let Ok(user) = std::env::var("ELASTICSEARCH_USERNAME") {
            lines.push_str(&format!(
                "username = \"{user}\"\npassword_env = \"ELASTICSEARCH_PASSWORD\"\n"
            ));
            creds = Some(Credentials::Basic(
                user,
                std::env::var("ELASTICSEARCH_PASSWORD").unwrap_or_default(),
            ));
        }
        let insecure =
            std::env::var("ELASTICSEARCH_INSECURE").is_ok_and(|v| v == "1" || v == "true");
        if let Ok(ca) = std::env::var("ELASTICSEARCH_CA_FILE") {
            lines.push_str(&format!("ca_file = \"{ca}\"\n"));
        } else if insecure {
            lines.push_str("insecure = true\n");
        }
        Some(Es {
            client: es_client(&url, creds, insecure),
            url,
            config_lines: lines,
            prefix: unique_prefix(test),
            real: true,
        })
    }

    /// `{prefix}-{name}-%{+xxxx.ww}`: a weekly index pattern of this run.
    pub fn pattern(&self, name: &str) -> String {
        format!("{}-{name}-%{{+xxxx.ww}}", self.prefix)
    }

    /// The wildcard matching every index of this run.
    pub fn all(&self) -> String {
        format!("{}-*", self.prefix)
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| Bytes::from(serde_json::to_vec(&b).unwrap()));
        let r = self
            .client
            .send(method, path, HeaderMap::new(), None::<&()>, body, None)
            .await
            .unwrap_or_else(|e| panic!("{method:?} {path}: {e}"));
        let status = r.status_code().as_u16();
        let text = r.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Documents in `indices` after a refresh (0 when none exists yet). An index created a
    /// moment ago (by the daemon's first bulk) answers 503 "all shards failed" until its
    /// primary shard has started: that is waited out (up to 30 s), anything else panics.
    pub async fn count(&self, indices: &str) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.call(
                Method::Post,
                &format!("{indices}/_refresh?ignore_unavailable=true&allow_no_indices=true"),
                None,
            )
            .await;
            let (status, body) = self
                .call(
                    Method::Get,
                    &format!("{indices}/_count?ignore_unavailable=true&allow_no_indices=true"),
                    None,
                )
                .await;
            match status {
                200 => return body["count"].as_u64().expect("count"),
                404 => return 0,
                503 if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                _ => panic!("count {indices}: {status} {body}"),
            }
        }
    }

    /// Every document of `indices`, through a scroll.
    pub async fn scan(&self, indices: &str) -> Vec<Doc> {
        self.call(Method::Post, &format!("{indices}/_refresh"), None)
            .await;
        let mut docs = Vec::new();
        let (status, mut page) = self
            .call(
                Method::Post,
                &format!("{indices}/_search?scroll=1m"),
                Some(json!({"size": 2000, "sort": ["_doc"]})),
            )
            .await;
        assert_eq!(status, 200, "scan {indices}: {page}");
        loop {
            let hits = page["hits"]["hits"].as_array().cloned().unwrap_or_default();
            if hits.is_empty() {
                break;
            }
            for h in hits {
                docs.push(Doc {
                    index: h["_index"].as_str().unwrap_or_default().to_owned(),
                    id: h["_id"].as_str().unwrap_or_default().to_owned(),
                    source: h["_source"].clone(),
                });
            }
            let id = page["_scroll_id"].as_str().expect("scroll id").to_owned();
            let (status, next) = self
                .call(
                    Method::Post,
                    "_search/scroll",
                    Some(json!({"scroll": "1m", "scroll_id": id})),
                )
                .await;
            assert_eq!(status, 200, "scroll {indices}: {next}");
            page = next;
        }
        if let Some(id) = page["_scroll_id"].as_str() {
            self.call(
                Method::Delete,
                "_search/scroll",
                Some(json!({"scroll_id": id})),
            )
            .await;
        }
        docs
    }

    /// Asserts that `indices` hold exactly `expected` documents, each once: the count, the
    /// distinct ids, and the distinct documents without `log.offset` (a tuple indexed twice
    /// under two ids would differ only there, if at all). Returns the documents.
    pub async fn assert_exactly_once(&self, indices: &str, expected: u64, what: &str) -> Vec<Doc> {
        let count = self.count(indices).await;
        let docs = self.scan(indices).await;
        assert_eq!(
            count, expected,
            "{what}: documents in {indices} vs tuples written"
        );
        assert_eq!(docs.len() as u64, count, "{what}: scan vs count");
        let ids: HashSet<(&str, &str)> = docs
            .iter()
            .map(|d| (d.index.as_str(), d.id.as_str()))
            .collect();
        assert_eq!(ids.len(), docs.len(), "{what}: duplicate (index, _id)");
        let bare_ids: HashSet<&str> = docs.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(bare_ids.len(), docs.len(), "{what}: one id in two indices");
        docs
    }

    /// Deletes the indices and index templates of this prefix, by name (clusters with
    /// `action.destructive_requires_name` refuse wildcard deletes), and checks none are left:
    /// on a shared engine, leftovers would be another test's surprise.
    pub async fn cleanup(&self) {
        if !self.real {
            return;
        }
        let listing = format!(
            "_cat/indices/{}?format=json&h=index&expand_wildcards=all",
            self.all()
        );
        let (status, indices) = self.call(Method::Get, &listing, None).await;
        assert_eq!(
            status, 200,
            "list the indices of {}: {indices}",
            self.prefix
        );
        for i in indices.as_array().into_iter().flatten() {
            if let Some(name) = i["index"].as_str() {
                let (status, body) = self.call(Method::Delete, name, None).await;
                assert_eq!(status, 200, "delete index {name}: {body}");
            }
        }
        let templates = format!("_index_template/flowlogd-{}-*", self.prefix);
        let (status, body) = self.call(Method::Get, &templates, None).await;
        assert!(status == 200 || status == 404, "{templates}: {body}");
        for t in body["index_templates"].as_array().into_iter().flatten() {
            if let Some(name) = t["name"].as_str() {
                let (status, body) = self
                    .call(Method::Delete, &format!("_index_template/{name}"), None)
                    .await;
                assert_eq!(status, 200, "delete index template {name}: {body}");
            }
        }
        let (_, left) = self.call(Method::Get, &listing, None).await;
        assert_eq!(left, json!([]), "indices left behind");
        let (_, left) = self.call(Method::Get, &templates, None).await;
        assert!(
            left["index_templates"]
                .as_array()
                .is_none_or(|t| t.is_empty()),
            "templates left behind: {left}"
        );
    }
}

/// Lifecycle management a cluster has, whatever flowlogd thinks of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleApi {
    /// Elasticsearch index lifecycle management (`_ilm`).
    Ilm,
    /// The OpenSearch index state management plugin (`_plugins/_ism`).
    Ism,
    None,
}

impl Es {
    /// The lifecycle API the cluster offers, asked directly rather than through flowlogd.
    pub async fn lifecycle_api(&self) -> LifecycleApi {
        let (status, root) = self.call(Method::Get, "/", None).await;
        assert_eq!(status, 200, "{root}");
        if root["version"]["distribution"] == "opensearch" {
            match self.call(Method::Get, "_plugins/_ism/policies", None).await {
                (200, _) => LifecycleApi::Ism,
                _ => LifecycleApi::None,
            }
        } else {
            match self.call(Method::Get, "_ilm/policy", None).await {
                (200, _) => LifecycleApi::Ilm,
                _ => LifecycleApi::None,
            }
        }
    }
}

/// `t-{test}-{pid}-{clock}-{n}`: lower case (index names must be), unique across the tests of
/// this process (the counter) and across processes sharing one engine (the pid and a clock).
/// Unique prefixes also keep the index templates' patterns from overlapping, which OpenSearch
/// and Elasticsearch refuse for templates of equal priority.
fn unique_prefix(test: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    format!(
        "t-{name}-{}-{}-{n}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis() % 100_000
    )
}

/// Distinct documents once `log.offset` is removed: equals the count when no tuple was indexed
/// twice under different ids. Only meaningful for generated data (real samples may repeat a
/// tuple on purpose).
pub fn distinct_contents(docs: &[Doc]) -> usize {
    docs.iter()
        .map(|d| {
            let mut s = d.source.clone();
            if let Some(log) = s.get_mut("log").and_then(Value::as_object_mut) {
                log.remove("offset");
            }
            s.to_string()
        })
        .collect::<HashSet<_>>()
        .len()
}

fn es_client(url: &str, creds: Option<Credentials>, insecure: bool) -> Elasticsearch {
    let mut b = TransportBuilder::new(SingleNodeConnectionPool::new(
        Url::parse(url).expect("elasticsearch url"),
    ));
    if let Some(c) = creds {
        b = b.auth(c);
    }
    if insecure {
        b = b.cert_validation(CertificateValidation::None);
    }
    Elasticsearch::new(b.build().expect("elasticsearch client"))
}

/// One VNet source in Azurite, indexing into `es`'s prefix through the engine at `url` (the
/// node itself, or a proxy in front of it).
pub fn vnet_config(url: &str, azurite: &Azurite, es: &Es) -> TestConfig {
    TestConfig::new(
        url,
        vec![SourceSpec::azurite(
            "vnet",
            VNET_CONTAINER,
            azurite,
            &es.pattern("vnet"),
        )],
    )
    .es(&es.config_lines)
}

/// Waits until `check` holds (polling every 50 ms, fine enough to time what it waits for), or
/// panics with `what` after `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
