//! Configuration as a careless or hostile operator writes it, through the real binary: every
//! mistake stops `flowlogd` with a non-zero exit and a message naming the key, variable or file
//! at fault, printed once, and nothing ever panics. No storage account or search engine is
//! needed: the config points at a closed loopback port, so the commands that get past the
//! configuration fail fast on the network (or are stopped by the test).
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_flowlogd");
/// Azurite's published development key: a syntactically valid account key, no secret.
const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// Nothing listens on the discard port of the loopback interface: connections are refused.
const CLOSED: &str = "http://127.0.0.1:9";

/// A config in its own temporary folder; each field is extra lines for that table.
struct Setup {
    dir: tempfile::TempDir,
    source: String,
    auth: String,
    es: String,
    registry: Option<String>,
    http: String,
    log: String,
    daemon: String,
}

/// What one run of the binary did.
struct Run {
    code: Option<i32>,
    /// False when the test had to stop it.
    finished: bool,
    stdout: String,
    stderr: String,
}

impl Setup {
    fn new() -> Setup {
        Setup {
            dir: tempfile::Builder::new()
                .prefix("flowlogd-cli-config-")
                .tempdir()
                .expect("temp dir"),
            source: String::new(),
            auth: format!("account_key = \"{KEY}\""),
            es: String::new(),
            registry: None,
            http: "listen = \"\"".into(),
            log: String::new(),
            daemon: String::new(),
        }
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn config_path(&self) -> PathBuf {
        self.dir().join("flowlogd.toml")
    }

    fn toml(&self) -> String {
        let registry = self
            .registry
            .clone()
            .unwrap_or_else(|| format!("path = \"{}\"", self.dir().join("registry").display()));
        format!(
            "[[source]]\nname = \"vnet\"\naccount = \"devstoreaccount1\"\n\
             blob_endpoint = \"{CLOSED}/devstoreaccount1\"\ncontainer = \"insights-logs-flowlogflowevent\"\n{}\n\
             [source.auth]\nmethod = \"account_key\"\n{}\n\
             [source.retry]\nmax_tries = 1\n\n\
             [elasticsearch]\nurls = [\"{CLOSED}\"]\ninstall_template = false\n{}\n\
             [registry]\n{registry}\n\n[http]\n{}\n\n[log]\n{}\n\n[daemon]\n{}\n",
            self.source, self.auth, self.es, self.http, self.log, self.daemon,
        )
    }

    /// `flowlogd --config FILE ARGS…` with only `env` from the `FLOWLOGD_` namespace, stopped
    /// (SIGKILL) if still running after `limit`.
    fn run(&self, args: &[&str], env: &[(&str, &str)], limit: Duration) -> Run {
        std::fs::write(self.config_path(), self.toml()).expect("write config");
        let mut full = vec![
            "--config".to_owned(),
            self.config_path().display().to_string(),
        ];
        full.extend(args.iter().map(|a| a.to_string()));
        self.run_raw(&full, env, limit)
    }

    fn run_raw(&self, args: &[String], env: &[(&str, &str)], limit: Duration) -> Run {
        let out_path = self.dir().join("stdout");
        let err_path = self.dir().join("stderr");
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .current_dir(self.dir())
            .stdin(Stdio::null())
            .stdout(File::create(&out_path).expect("stdout file"))
            .stderr(File::create(&err_path).expect("stderr file"));
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("FLOWLOGD_")
                || k.starts_with("WATCHDOG_")
                || k == "NOTIFY_SOCKET"
                || k == "RUST_LOG"
            {
                cmd.env_remove(&*k);
            }
        }
        cmd.envs(env.iter().copied());
        let mut child = cmd.spawn().expect("spawn flowlogd");
        let deadline = Instant::now() + limit;
        let (code, finished) = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break (status.code(), true);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break (None, false);
            }
            std::thread::sleep(Duration::from_millis(25));
        };
        Run {
            code,
            finished,
            stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
            stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
        }
    }
}

/// Long enough for any config error, short enough that a daemon that keeps running (the
/// defect) does not hold the suite up.
const QUICK: Duration = Duration::from_secs(15);

impl Run {
    /// Exited by itself, non-zero, naming `needle` on stderr exactly once, without a panic.
    fn assert_refused(&self, needle: &str) {
        assert!(
            self.finished,
            "still running after {QUICK:?} (expected a config error naming {needle:?}); stderr:\n{}",
            self.stderr
        );
        assert!(
            self.code.is_some_and(|c| c != 0),
            "exit code {:?} (expected non-zero); stderr:\n{}",
            self.code,
            self.stderr
        );
        self.assert_no_panic();
        assert_eq!(
            self.stderr.matches(needle).count(),
            1,
            "stderr should name {needle:?} once:\n{}",
            self.stderr
        );
    }

    fn assert_no_panic(&self) {
        assert!(
            !self.stderr.contains("panicked at") && !self.stdout.contains("panicked at"),
            "panic:\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
    }

    /// Got past the configuration: `check` prints its first line only for a valid config.
    fn assert_config_accepted(&self) {
        self.assert_no_panic();
        assert!(
            self.stdout.contains("ok    config"),
            "config refused:\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
    }
}

#[test]
fn a_zero_flush_interval_stops_startup_instead_of_killing_delivery() {
    let mut s = Setup::new();
    s.es = "flush_interval = \"0s\"".into();
    s.run(&["run"], &[], QUICK)
        .assert_refused("elasticsearch.flush_interval");
}

#[test]
fn max_in_flight_beyond_what_the_semaphore_holds_stops_startup() {
    let mut s = Setup::new();
    s.es = "max_in_flight = 9223372036854775807".into();
    s.run(&["run"], &[], QUICK)
        .assert_refused("elasticsearch.max_in_flight");
}

#[test]
fn a_zero_poll_interval_from_the_environment_is_refused_naming_the_key() {
    let s = Setup::new();
    let r = s.run(&["check"], &[("FLOWLOGD_DAEMON__INTERVAL", "0s")], QUICK);
    r.assert_refused("daemon.interval");
    assert!(
        r.stderr.contains("FLOWLOGD_DAEMON__INTERVAL"),
        "{}",
        r.stderr
    );
}

#[test]
fn zero_durations_and_counts_are_refused_naming_the_key_and_the_range() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "source",
            "discovery_interval = \"0s\"",
            "source.vnet.discovery_interval",
        ),
        (
            "source",
            "finish_after = \"0s\"",
            "source.vnet.finish_after",
        ),
        (
            "es",
            "request_timeout = \"0s\"",
            "elasticsearch.request_timeout",
        ),
        (
            "es",
            "retry_initial_backoff = \"0s\"",
            "elasticsearch.retry_initial_backoff",
        ),
        ("es", "delete_after = \"0s\"", "elasticsearch.delete_after"),
        (
            "es",
            "number_of_shards = 0",
            "elasticsearch.number_of_shards",
        ),
        (
            "daemon",
            "shutdown_timeout = \"0s\"",
            "daemon.shutdown_timeout",
        ),
    ];
    for (table, line, key) in cases {
        let mut s = Setup::new();
        match *table {
            "source" => s.source = line.to_string(),
            "es" => s.es = line.to_string(),
            _ => s.daemon = line.to_string(),
        }
        let r = s.run(&["check"], &[], QUICK);
        r.assert_refused(key);
        assert!(
            r.stderr.contains("between") || r.stderr.contains("at least"),
            "{line}: the message should give the range:\n{}",
            r.stderr
        );
    }
}

#[test]
fn watchdog_usec_of_one_microsecond_does_not_panic() {
    let s = Setup::new();
    let socket_path = s.dir().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    std::fs::write(s.config_path(), s.toml()).unwrap();
    let socket_env = socket_path.display().to_string();
    // Run in a thread: the daemon keeps running; the test stops it after READY=1 (or 20 s).
    let run = std::thread::scope(|scope| {
        let handle = scope.spawn(|| {
            s.run(
                &["run"],
                &[
                    ("NOTIFY_SOCKET", socket_env.as_str()),
                    ("WATCHDOG_USEC", "1"),
                ],
                Duration::from_secs(20),
            )
        });
        let mut seen = Vec::new();
        let mut buf = [0u8; 256];
        while !handle.is_finished() {
            if let Ok(n) = socket.recv(&mut buf) {
                seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        (handle.join().expect("runner"), seen)
    });
    let (r, messages) = run;
    r.assert_no_panic();
    assert!(
        messages.iter().any(|m| m == "READY=1"),
        "no READY=1 within 20 s: {messages:?}\n{}",
        r.stderr
    );
    assert!(
        messages.iter().any(|m| m == "WATCHDOG=1"),
        "no keep-alive: {messages:?}\n{}",
        r.stderr
    );
}

#[test]
fn unknown_flowlogd_variables_stop_startup_naming_the_variable() {
    let s = Setup::new();
    for (var, value) in [
        ("FLOWLOGD_FOO", "1"),
        ("FLOWLOGD_DAEMON_INTERVAL", "5s"),
        ("FLOWLOGD_SOURCE", "[]"),
        ("FLOWLOGD_DAEMON__NO_SUCH_KEY", "1"),
    ] {
        s.run(&["check"], &[(var, value)], QUICK)
            .assert_refused(var);
    }
}

#[test]
fn the_flowlogd_variables_the_binary_reads_keep_working() {
    let s = Setup::new();
    // FLOWLOGD_CONFIG instead of --config, an override, and a variable of the project's own
    // test tooling (exported by scripts/test.sh into every child).
    std::fs::write(s.config_path(), s.toml()).unwrap();
    let config = s.config_path().display().to_string();
    let r = s.run_raw(
        &["check".to_owned()],
        &[
            ("FLOWLOGD_CONFIG", config.as_str()),
            ("FLOWLOGD_DAEMON__INTERVAL", "30s"),
            ("FLOWLOGD_RUN_DIR", "/tmp/somewhere"),
        ],
        QUICK,
    );
    r.assert_config_accepted();
}

#[test]
fn every_flowlogd_variable_of_the_scripts_and_tests_is_known_to_the_binary() {
    // The tooling's variables reach the binary (exported by scripts/test.sh, quickstart.sh):
    // each must be one the binary tolerates, or the suite breaks with "unknown variable".
    // Shell scripts and the test harness export theirs; a test file sets one for a child with
    // `.env("FLOWLOGD_…"` or reads one with `var("FLOWLOGD_…"`/`var_os("FLOWLOGD_…"`.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut names = std::collections::BTreeSet::new();
    for (dir, anywhere) in [
        ("scripts", true),
        ("scripts/lib", true),
        ("tests/common", true),
        ("tests", false),
    ] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(text) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            let mut rest = text.as_str();
            while let Some(at) = rest.find("FLOWLOGD_") {
                let tail = &rest[at..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                    .unwrap_or(tail.len());
                let before = &rest[..at];
                let standalone = !before
                    .chars()
                    .last()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
                let passed_on = [".env(\"", "var(\"", "var_os(\""]
                    .iter()
                    .any(|call| before.ends_with(call));
                if standalone && (anywhere || passed_on) {
                    names.insert(tail[..end].to_owned());
                }
                rest = &tail[end..];
            }
        }
    }
    let unknown: Vec<&String> = names
        .iter()
        .filter(|n| n.len() > "FLOWLOGD_".len() && !n.contains("__"))
        .filter(|n| flowlogd::config::check_environment_names([n.as_str()]).is_err())
        .collect();
    assert!(
        unknown.is_empty(),
        "variables used by scripts/ or tests/ that flowlogd would refuse: {unknown:?}"
    );
}

#[test]
fn an_empty_registry_path_is_refused_and_nothing_is_written_to_the_working_directory() {
    let mut s = Setup::new();
    s.registry = Some("path = \"\"".into());
    let r = s.run(&["run"], &[], QUICK);
    r.assert_refused("registry.path");
    let left: Vec<_> = std::fs::read_dir(s.dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !["flowlogd.toml", "stdout", "stderr"].contains(&n.as_str()))
        .collect();
    assert!(
        left.is_empty(),
        "written to the working directory: {left:?}"
    );
}

#[test]
fn check_reports_a_missing_registry_directory_without_creating_it() {
    let mut s = Setup::new();
    let missing = s.dir().join("not").join("there").join("registry");
    s.registry = Some(format!("path = \"{}\"", missing.display()));
    let r = s.run(&["check"], &[], QUICK);
    r.assert_config_accepted();
    assert!(
        r.stdout
            .contains(&format!("registry {}", missing.display()))
            && r.stdout.contains("does not exist"),
        "{}",
        r.stdout
    );
    assert!(
        !s.dir().join("not").exists(),
        "check created the registry directory tree"
    );
}

#[test]
fn an_oversized_secret_file_is_refused_naming_the_key_and_the_file() {
    let s = Setup::new();
    let big = s.dir().join("big-key");
    // Valid base64, so only the size can be the reason.
    std::fs::write(&big, "A".repeat(1 << 20)).unwrap();
    for (path, name) in [
        (big.as_path(), "big-key"),
        (Path::new("/dev/zero"), "/dev/zero"),
    ] {
        let mut storage = Setup::new();
        storage.auth = format!("account_key_file = \"{}\"", path.display());
        let r = storage.run(&["once"], &[], QUICK);
        r.assert_refused("auth.account_key_file");
        assert!(r.stderr.contains(name), "{}", r.stderr);

        let mut es = Setup::new();
        es.es = format!("api_key_file = \"{}\"", path.display());
        let r = es.run(&["once"], &[], QUICK);
        r.assert_refused("elasticsearch.api_key_file");
        assert!(r.stderr.contains(name), "{}", r.stderr);
    }
}

#[test]
fn a_config_path_that_is_a_directory_is_named_as_such() {
    let s = Setup::new();
    let r = s.run_raw(
        &[
            "--config".to_owned(),
            s.dir().display().to_string(),
            "check".to_owned(),
        ],
        &[],
        QUICK,
    );
    r.assert_refused("is a directory");
}

#[test]
fn a_garbage_listen_address_fails_check_naming_the_key() {
    let mut s = Setup::new();
    s.http = "listen = \"garbage\"".into();
    s.run(&["check"], &[], QUICK).assert_refused("http.listen");
}

#[test]
fn a_bad_log_filter_fails_naming_the_key_or_the_flag() {
    let mut s = Setup::new();
    s.log = "level = \"flowlogd=loud\"".into();
    s.run(&["check"], &[], QUICK).assert_refused("log.level");
    let s = Setup::new();
    s.run(&["--log-level", "flowlogd=loud", "check"], &[], QUICK)
        .assert_refused("--log-level");
}

#[test]
fn a_fatal_error_is_printed_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut s = Setup::new();
    s.http = format!("listen = \"{}\"", taken.local_addr().unwrap());
    s.run(&["run"], &[], QUICK)
        .assert_refused("cannot listen on http.listen");
}

#[test]
fn a_malformed_service_tags_file_fails_check_and_stops_once_naming_the_file() {
    let mut s = Setup::new();
    let tags = s.dir().join("ServiceTags_Public_20261130.json");
    // Cut off mid-file, as an interrupted download leaves it.
    std::fs::write(
        &tags,
        "{\"changeNumber\": 342, \"values\": [{\"name\": \"AzureCl",
    )
    .unwrap();
    // [daemon] is the config's last table: the enrichment tables follow it.
    s.daemon = format!(
        "\n[enrich]\nservice_tags_file = \"{}\"\n\n[[network]]\nname = \"hub\"\ncidrs = [\"10.0.0.0/16\"]\n",
        tags.display()
    );
    let check = s.run(&["check"], &[], QUICK);
    check.assert_config_accepted();
    let line = check
        .stdout
        .lines()
        .find(|l| l.contains("enrichment"))
        .unwrap_or_else(|| panic!("no enrichment line: {}", check.stdout));
    assert!(line.starts_with("FAIL"), "{line}");
    assert!(line.contains("ServiceTags_Public_20261130.json"), "{line}");
    assert_ne!(check.code, Some(0), "{}", check.stdout);

    let once = s.run(&["once"], &[], QUICK);
    assert_ne!(once.code, Some(0));
    assert!(
        once.stderr.contains("ServiceTags_Public_20261130.json"),
        "{}",
        once.stderr
    );

    // Repaired (here: a valid file of Microsoft's shape), check says what it opened.
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ServiceTags_Public_small.json"),
        &tags,
    )
    .unwrap();
    let check = s.run(&["check"], &[], QUICK);
    assert!(
        check.stdout.lines().any(|l| l
            .starts_with("ok    enrichment: 1 named network(s), service tags ")
            && l.contains("ServiceTags_Public_20261130.json")),
        "{}",
        check.stdout
    );
}
