//! Starts and stops the real servers integration tests run against: Azurite (Blob Storage
//! emulator) and a real single-node OpenSearch (the launcher in `tests/opensearch/`), each on
//! its own free 127.0.0.1 port, owned by the test that started it; see [`search_engine_url`]
//! for the one OpenSearch node the tests of a run share.
//!
//! Binaries come from `FLOWLOGD_AZURITE_BIN` / `FLOWLOGD_OPENSEARCH_JAR`,
//! else from the paths `scripts/deps.sh` installs (relative paths resolve against the crate root).
//!
//! Each server runs as the leader of its own process group; stopping signals the whole group
//! (node may spawn children) and reaps the leader. If the test process dies without running
//! `Drop` (SIGKILL, abort, Ctrl-C: the servers are not in the terminal's process group), the
//! servers notice that their stdin pipe closed and exit by themselves, so none outlive the run.
//! Linux only: exit detection reads `/proc`.

use std::{
    collections::VecDeque,
    io::{self, BufRead, BufReader, Read},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex, mpsc},
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

/// How long a server may take to answer after spawning. Generous: on 2 cores a parallel
/// `cargo test` build can starve node for seconds, and a second JVM (a test's own OpenSearch
/// node) starts beside the shared one and the tests keeping both cores busy.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a graceful stop may take before the group is killed. Azurite needs ~2 s to flush.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Lines of server output kept for error messages.
const LOG_LINES: usize = 200;

const AZURITE_ENV: &str = "FLOWLOGD_AZURITE_BIN";
const AZURITE_DEFAULT: &str = ".deps/node/node_modules/.bin/azurite-blob";
const OPENSEARCH_ENV: &str = "FLOWLOGD_OPENSEARCH_JAR";
const OPENSEARCH_DEFAULT: &str = "tests/opensearch/target/flowlogd-opensearch.jar";
/// Heap of a test node (`FLOWLOGD_OPENSEARCH_HEAP` overrides): bounded so that a test run's
/// memory stays predictable; a few hundred thousand small documents fit comfortably.
const OPENSEARCH_HEAP_DEFAULT: &str = "512m";
/// Set by `scripts/test.sh` to the node it started for the whole run.
const SHARED_URL_ENV: &str = "FLOWLOGD_TEST_SEARCH_URL";

/// Loaded into Azurite with `NODE_OPTIONS=--require`: Azurite has no "exit with parent" switch,
/// so it shuts down (as on SIGTERM) once the test process holding its stdin is gone. `unref`
/// keeps stdin from holding node's event loop open after Azurite closes its server.
const AZURITE_WATCHDOG_JS: &str = "\
process.stdin.on('end', () => process.kill(process.pid, 'SIGTERM'));
process.stdin.on('error', () => {});
process.stdin.resume();
process.stdin.unref();
";

/// An Azurite blob service on `127.0.0.1:<port()>` with its own temporary data folder.
///
/// Data lives on disk in that folder, so it survives [`Azurite::stop`] + [`Azurite::restart`]
/// (checked by hand: a container created before a graceful stop still exists afterwards).
/// After [`Azurite::kill`] the last seconds of metadata may be lost, as in a crash: Azurite
/// saves its metadata database periodically and on shutdown.
pub struct Azurite {
    proc: Option<Proc>,
    port: u16,
    bin: PathBuf,
    // Holds `data/` (Azurite's --location) and the watchdog script; removed on drop, after the
    // process is gone (fields drop after `Drop::drop`).
    dir: tempfile::TempDir,
}

impl Azurite {
    /// The emulator's fixed account name.
    pub const ACCOUNT: &'static str = "devstoreaccount1";
    /// The emulator's well-known, public account key (not a secret).
    pub const ACCOUNT_KEY: &'static str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    /// Starts Azurite (blob service only) on a free loopback port and waits until it accepts
    /// connections. Flags: `--skipApiVersionCheck` (the SDK sends a newer `x-ms-version` than
    /// Azurite knows), `--loose`, `--disableTelemetry`, `--silent` (no access log).
    pub fn start() -> io::Result<Self> {
        let bin = resolve_bin("Azurite", AZURITE_ENV, AZURITE_DEFAULT)?;
        let dir = tempfile::Builder::new()
            .prefix("flowlogd-azurite-")
            .tempdir()?;
        std::fs::create_dir(dir.path().join("data"))?;
        std::fs::write(dir.path().join("watchdog.js"), AZURITE_WATCHDOG_JS)?;
        let mut azurite = Azurite {
            proc: None,
            port: 0,
            bin,
            dir,
        };
        azurite.spawn()?;
        Ok(azurite)
    }

    /// Path-style blob endpoint, e.g. `http://127.0.0.1:PORT/devstoreaccount1`.
    pub fn blob_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{}", self.port, Self::ACCOUNT)
    }

    /// The port; stays the same across [`Azurite::restart`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Azurite's data folder (`--location`).
    pub fn location(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's process id (its process group id too), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }

    /// Whether the server process is still alive (reaps it if it has exited).
    pub fn is_running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(Proc::is_running)
    }

    /// Graceful stop (SIGTERM to the process group, SIGKILL after 10 s); data is kept for
    /// [`Azurite::restart`]. The port refuses connections afterwards. No-op when stopped.
    pub fn stop(&mut self) -> io::Result<()> {
        match self.proc.take() {
            Some(mut p) => p.stop(STOP_GRACE).map(drop),
            None => Ok(()),
        }
    }

    /// Hard stop (SIGKILL to the process group), like a crash.
    pub fn kill(&mut self) -> io::Result<()> {
        match self.proc.take() {
            Some(mut p) => p.stop(Duration::ZERO).map(drop),
            None => Ok(()),
        }
    }

    /// Stops the server if it runs, then starts it again on the same port and data folder.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop()?;
        self.spawn()
    }

    /// The last lines the server printed (stdout and stderr), for diagnosing a failing test.
    pub fn output(&self) -> String {
        self.proc.as_ref().map(Proc::output).unwrap_or_default()
    }

    fn spawn(&mut self) -> io::Result<()> {
        let watchdog = self.dir.path().join("watchdog.js");
        let mut node_options = std::env::var("NODE_OPTIONS").unwrap_or_default();
        node_options.push_str(&format!(" --require \"{}\"", watchdog.display()));
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--location")
            .arg(self.location())
            .args(["--blobHost", "127.0.0.1", "--blobPort"])
            .arg(self.port.to_string())
            .args([
                "--skipApiVersionCheck",
                "--loose",
                "--disableTelemetry",
                "--silent",
            ])
            .env("NODE_OPTIONS", node_options.trim_start());
        // Azurite prints "Azurite Blob service successfully listens on http://127.0.0.1:PORT"
        // once bound, which also tells the port when 0 was asked for.
        let (mut proc, port) = Proc::spawn("Azurite", &self.bin, cmd, |line| {
            let url = line.split("successfully listens on ").nth(1)?;
            url.trim().rsplit(':').next()?.parse::<u16>().ok()
        })?;
        proc.wait_connectable(port)?;
        self.port = port;
        self.proc = Some(proc);
        Ok(())
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        // Nothing needs flushing when the data folder is deleted right after: kill at once.
        let _ = self.kill();
    }
}

/// Azurite's Queue service on a free loopback port (for the event-driven mode's Storage
/// Queue), started from `azurite-queue` beside the blob binary of [`Azurite`] (the npm package
/// ships both), with the same flags and watchdog, and killed when dropped.
pub struct AzuriteQueue {
    proc: Option<Proc>,
    port: u16,
    _dir: tempfile::TempDir,
}

impl AzuriteQueue {
    pub fn start() -> io::Result<Self> {
        let blob_bin = resolve_bin("Azurite", AZURITE_ENV, AZURITE_DEFAULT)?;
        let bin = blob_bin.with_file_name("azurite-queue");
        let dir = tempfile::Builder::new()
            .prefix("flowlogd-azurite-queue-")
            .tempdir()?;
        std::fs::create_dir(dir.path().join("data"))?;
        let watchdog = dir.path().join("watchdog.js");
        std::fs::write(&watchdog, AZURITE_WATCHDOG_JS)?;
        let mut node_options = std::env::var("NODE_OPTIONS").unwrap_or_default();
        node_options.push_str(&format!(" --require \"{}\"", watchdog.display()));
        let mut cmd = Command::new(&bin);
        cmd.arg("--location")
            .arg(dir.path().join("data"))
            .args(["--queueHost", "127.0.0.1", "--queuePort", "0"])
            .args([
                "--skipApiVersionCheck",
                "--loose",
                "--disableTelemetry",
                "--silent",
            ])
            .env("NODE_OPTIONS", node_options.trim_start());
        // "Azurite Queue service successfully listens on http://127.0.0.1:PORT".
        let (mut proc, port) = Proc::spawn("Azurite Queue", &bin, cmd, |line| {
            let url = line.split("successfully listens on ").nth(1)?;
            url.trim().rsplit(':').next()?.parse::<u16>().ok()
        })?;
        proc.wait_connectable(port)?;
        Ok(AzuriteQueue {
            proc: Some(proc),
            port,
            _dir: dir,
        })
    }

    /// Path-style queue service endpoint, e.g. `http://127.0.0.1:PORT/devstoreaccount1`.
    pub fn queue_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{}", self.port, Azurite::ACCOUNT)
    }
}

impl Drop for AzuriteQueue {
    fn drop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            let _ = p.stop(Duration::ZERO);
        }
    }
}

/// A real single-node OpenSearch (2.19, from the Maven Central jars) on `127.0.0.1:<port()>`,
/// run by `java -jar tests/opensearch/target/flowlogd-opensearch.jar` with its home in a
/// temporary folder. Cold start is ~6 s on this kind of machine, so tests normally share one
/// node through [`search_engine_url`] and isolate themselves by index and template names; a
/// test starts its own only to stop it (an outage), which the shared node must never be.
///
/// Data lives on disk under the home folder, so indices, documents and templates survive
/// [`OpenSearch::stop`] + [`OpenSearch::restart`] (the node closes its shards on SIGTERM), as
/// they do when a real cluster is restarted.
pub struct OpenSearch {
    proc: Option<Proc>,
    url: String,
    port: u16,
    version: String,
    // path.home of the node; removed on drop, after the process is gone (fields drop after
    // `Drop::drop`).
    home: tempfile::TempDir,
}

impl OpenSearch {
    /// Starts a node on a free port and waits until its cluster is yellow or green (the
    /// launcher prints its URL only then).
    pub fn start() -> io::Result<Self> {
        let home = tempfile::Builder::new()
            .prefix("flowlogd-opensearch-")
            .tempdir()?;
        let (proc, url, version, port) = Self::spawn(home.path(), false, 0)?;
        Ok(OpenSearch {
            proc: Some(proc),
            url,
            port,
            version,
            home,
        })
    }

    /// Runs the launcher with path.home `home` on `port` (0: any free one); returns the
    /// process, its URL, the engine's version and the bound port.
    fn spawn(home: &Path, ephemeral: bool, port: u16) -> io::Result<(Proc, String, String, u16)> {
        let jar = resolve_bin(
            "the OpenSearch launcher",
            OPENSEARCH_ENV,
            OPENSEARCH_DEFAULT,
        )?;
        let heap = std::env::var("FLOWLOGD_OPENSEARCH_HEAP")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| OPENSEARCH_HEAP_DEFAULT.to_owned());
        let java = std::env::var_os("JAVA_HOME")
            .map(|h| PathBuf::from(h).join("bin/java"))
            .filter(|j| j.is_file())
            .unwrap_or_else(|| PathBuf::from("java"));
        let mut cmd = Command::new(&java);
        cmd.arg(format!("-Xms{heap}"))
            .arg(format!("-Xmx{heap}"))
            .arg("-jar")
            .arg(&jar)
            .arg("--home")
            .arg(home)
            .arg("--port")
            .arg(port.to_string());
        if ephemeral {
            cmd.arg("--ephemeral");
        }
        // Once the cluster is yellow the launcher prints one JSON line:
        // {"url":"http://127.0.0.1:PORT","version":"2.19.6","pid":N}.
        let (mut proc, (url, version, port)) = Proc::spawn("OpenSearch", &java, cmd, |line| {
            let msg: serde_json::Value = serde_json::from_str(line).ok()?;
            let url = msg.get("url")?.as_str()?.to_owned();
            let port = url.rsplit(':').next()?.parse::<u16>().ok()?;
            let version = msg.get("version")?.as_str()?.to_owned();
            Some((url, version, port))
        })?;
        proc.wait_connectable(port)?;
        Ok((proc, url, version, port))
    }

    /// Base URL, e.g. `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The HTTP port; stays the same across [`OpenSearch::restart`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The engine's version, e.g. `2.19.6`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The node's home folder (path.home; data under `data/`).
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// The node's process id (its process group id too), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }

    /// Whether the node process is still alive (reaps it if it has exited).
    pub fn is_running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(Proc::is_running)
    }

    /// Graceful stop (SIGTERM: the node closes its indices), SIGKILL after 10 s. The port
    /// refuses connections afterwards, as with the cluster down. No-op when stopped.
    pub fn stop(&mut self) -> io::Result<()> {
        match self.proc.take() {
            Some(mut p) => p.stop(STOP_GRACE).map(drop),
            None => Ok(()),
        }
    }

    /// Stops the node if it runs, then starts it again on the same port with the same home,
    /// so everything it held is back once it is yellow again.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop()?;
        let (proc, url, version, port) = Self::spawn(self.home.path(), false, self.port)?;
        self.proc = Some(proc);
        self.url = url;
        self.version = version;
        self.port = port;
        Ok(())
    }

    /// The last lines the node printed, for diagnosing a failing test.
    pub fn output(&self) -> String {
        self.proc.as_ref().map(Proc::output).unwrap_or_default()
    }
}

impl Drop for OpenSearch {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// The URL of the OpenSearch node the tests of this run share: the one `scripts/test.sh`
/// started for the whole run (`FLOWLOGD_TEST_SEARCH_URL`), else one started on first use by
/// this test binary. The latter is never dropped (statics are not); it exits when this process
/// does, because the launcher watches its stdin pipe, and deletes its home (`--ephemeral`).
///
/// Sharing is safe because every test names its own indices and templates (see
/// `common::flowlogd::Es::engine`). Panics with the launcher's output if no node can start:
/// a test that needs the engine cannot run without one.
pub fn search_engine_url() -> String {
    if let Some(url) = std::env::var(SHARED_URL_ENV).ok().filter(|u| !u.is_empty()) {
        return url;
    }
    static NODE: std::sync::OnceLock<Result<(Proc, String), String>> = std::sync::OnceLock::new();
    let started = NODE.get_or_init(|| {
        let home =
            std::env::temp_dir().join(format!("flowlogd-opensearch-shared-{}", std::process::id()));
        OpenSearch::spawn(&home, true, 0)
            .map(|(proc, url, ..)| (proc, url))
            .map_err(|e| e.to_string())
    });
    match started {
        Ok((_, url)) => url.clone(),
        Err(e) => panic!("cannot start the shared OpenSearch node: {e}"),
    }
}

/// Finds a server binary: `$env` if set (relative to the crate root), else `default`.
fn resolve_bin(what: &str, env: &str, default: &str) -> io::Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (path, origin) = match std::env::var_os(env) {
        Some(v) if !v.is_empty() => (root.join(v), format!("from {env}")),
        _ => (root.join(default), format!("default path, {env} is unset")),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{what} not found at {} ({origin}): run scripts/deps.sh to install it, \
                 or set {env} to its path",
                path.display()
            ),
        ))
    }
}

/// A spawned server, leader of its own process group, with its output collected.
struct Proc {
    name: &'static str,
    child: Child,
    /// Set once the leader has been reaped; the group is never signalled after that, since
    /// its id could then belong to an unrelated process.
    status: Option<ExitStatus>,
    /// Never written: the server watches it and exits when it closes (this process died).
    _stdin: Option<ChildStdin>,
    output: Arc<Mutex<VecDeque<String>>>,
    pumps: Vec<JoinHandle<()>>,
}

impl Proc {
    /// Spawns `cmd` and reads its stdout until `ready` recognises a line, returning what it
    /// returned. Fails, after killing the process, if it exits or stays silent too long.
    fn spawn<T>(
        name: &'static str,
        bin: &Path,
        mut cmd: Command,
        mut ready: impl FnMut(&str) -> Option<T>,
    ) -> io::Result<(Proc, T)> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd.spawn().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("{name}: cannot run {}: {e}", bin.display()),
            )
        })?;
        let output = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = mpsc::channel();
        let mut pumps = Vec::new();
        if let Some(out) = child.stdout.take() {
            pumps.push(pump(out, Arc::clone(&output), Some(tx)));
        }
        if let Some(err) = child.stderr.take() {
            pumps.push(pump(err, Arc::clone(&output), None));
        }
        let mut proc = Proc {
            name,
            _stdin: child.stdin.take(),
            child,
            status: None,
            output,
            pumps,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => {
                    if let Some(found) = ready(&line) {
                        return Ok((proc, found));
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                // stdout closed: the server is exiting; the checks below report it.
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    thread::sleep(Duration::from_millis(50))
                }
            }
            if !proc.is_running() {
                let status = proc.status.map(|s| s.to_string()).unwrap_or_default();
                return Err(proc.fail(
                    io::ErrorKind::Other,
                    &format!("exited ({status}) before it was ready"),
                ));
            }
            if Instant::now() >= deadline {
                let _ = proc.stop(Duration::ZERO);
                return Err(proc.fail(
                    io::ErrorKind::TimedOut,
                    &format!("not ready after {} s, killed", START_TIMEOUT.as_secs()),
                ));
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the leader runs; if it has exited, kills what is left of its group and reaps it.
    fn is_running(&mut self) -> bool {
        if self.status.is_some() {
            return false;
        }
        if !leader_exited(self.pid()) {
            return true;
        }
        let _ = self.stop(Duration::ZERO);
        false
    }

    /// SIGTERM to the group and up to `grace` for the leader to exit (skipped for zero), then
    /// SIGKILL to the group (stragglers, or a leader that ignored SIGTERM), then reap.
    fn stop(&mut self, grace: Duration) -> io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let pid = self.pid();
        if !grace.is_zero() {
            signal::group(pid, signal::TERM);
            let deadline = Instant::now() + grace;
            while !leader_exited(pid) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
        }
        // The leader is not reaped yet (at most a zombie), so the group id is still ours.
        signal::group(pid, signal::KILL);
        let status = self.child.wait()?;
        self.status = Some(status);
        Ok(status)
    }

    /// Waits (within the start timeout) until `127.0.0.1:port` accepts a TCP connection.
    fn wait_connectable(&mut self, port: u16) -> io::Result<()> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
                return Ok(());
            }
            if !self.is_running() {
                return Err(self.fail(
                    io::ErrorKind::Other,
                    &format!("exited before accepting connections on {addr}"),
                ));
            }
            if Instant::now() >= deadline {
                let _ = self.stop(Duration::ZERO);
                return Err(self.fail(
                    io::ErrorKind::TimedOut,
                    &format!("said it listens on {addr}, but refuses connections; killed"),
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of output, joined.
    fn output(&self) -> String {
        let lines = self.output.lock().unwrap_or_else(|e| e.into_inner());
        lines
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// An error naming the server, what went wrong and what it printed.
    fn fail(&mut self, kind: io::ErrorKind, what: &str) -> io::Error {
        // Give the readers a moment to collect the last words of a server that just died.
        let until = Instant::now() + Duration::from_secs(1);
        while self.status.is_some()
            && !self.pumps.iter().all(JoinHandle::is_finished)
            && Instant::now() < until
        {
            thread::sleep(Duration::from_millis(10));
        }
        let output = self.output();
        let output = if output.is_empty() {
            "(nothing)".to_owned()
        } else {
            output
        };
        io::Error::new(
            kind,
            format!(
                "{} (pid {}) {what}; its output:\n{output}",
                self.name,
                self.pid()
            ),
        )
    }
}

/// Copies a stream's lines into `output` (last `LOG_LINES` kept) and to `tx` while anyone
/// listens; keeps draining afterwards so the server never blocks on a full pipe.
fn pump(
    stream: impl Read + Send + 'static,
    output: Arc<Mutex<VecDeque<String>>>,
    tx: Option<mpsc::Sender<String>>,
) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
            {
                let mut lines = output.lock().unwrap_or_else(|e| e.into_inner());
                if lines.len() == LOG_LINES {
                    lines.pop_front();
                }
                lines.push_back(line.clone());
            }
            if let Some(tx) = &tx {
                let _ = tx.send(line);
            }
        }
    })
}

/// Whether process `pid` has exited (gone, or a zombie awaiting reaping).
fn leader_exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the command name, which is in parentheses and may hold any
        // character, so look after the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_none_or(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => true,
    }
}

mod signal {
    // std signals only its own child, never a process group; libc's kill(2) does, and libc is
    // linked into every Rust program on unix anyway.
    unsafe extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }

    pub const TERM: i32 = 15;
    pub const KILL: i32 = 9;

    /// Sends `sig` to every process in the group `pgid`. Errors (the group is already empty)
    /// are of no interest to callers.
    pub fn group(pgid: u32, sig: i32) {
        if let Ok(pgid) = i32::try_from(pgid)
            && pgid > 1
        {
            // SAFETY: kill(2) takes plain integers and touches no memory of ours.
            unsafe {
                kill(-pgid, sig);
            }
        }
    }
}
