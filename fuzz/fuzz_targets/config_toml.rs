//! Configuration parsing as `flowlogd check` does it (`Config::load` of a file, and `Config::from_toml_str`), then the storage part resolved (`StorageConfig::resolve`), because a configuration that passes must not panic or spin later, and no secret written in it may come back in an error or a `Debug` (invariant 7).
//!
//! Input: the TOML text (UTF-8, else ignored). Seeds: config/flowlogd.example.toml and the
//! configurations scripts/fuzz.sh derives from it.
//!
//! Checked:
//! - neither function panics, and both accept the same texts with the same result (`load`
//!   reads the text from a file; the environment holds no `FLOWLOGD_` override here);
//! - an accepted configuration validates again, has the documented ranges (the ones whose
//!   violation panics or spins at run time: `flush_interval`, `max_in_flight`,
//!   `daemon.interval`, `read_concurrency`, ...), a valid index pattern per source, and
//!   `since` and `dead_letter_path` work;
//! - for sources whose secrets are inline or in the environment (`account_key`,
//!   `connection_string`, `sas`; never `*_file`, which could name a FIFO), `resolve` does not
//!   panic;
//! - no secret value (what `password`, `api_key`, `bearer_token`, `account_key`,
//!   `connection_string`, `sas_token` or `client_secret` holds, 6 characters or more, written
//!   once in the text; or the value of an environment variable a `*_env` key names) appears
//!   in an error message, in the `Debug` of the configuration, or in the `Debug` and display
//!   URL of a resolved storage configuration, syntax and type errors included (findings 2 and
//!   3 of fuzz/regressions/README.md, fixed).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use flowlogd::config::{Config, MAX_IN_FLIGHT};
use libfuzzer_sys::fuzz_target;

/// Whether TOML syntax errors are checked for secrets too. They showed one (finding 2: the
/// toml crate's message quoted the offending line) until `Config` reported syntax errors by
/// line and column only; `false` would leave them out of the secret check again.
const STRICT_SYNTAX_ERRORS: bool = true;

/// Whether type errors are checked for secrets too. They showed one (finding 3: figment
/// quoted the value of `password = 20240101`) until `Config` named only the kind of value;
/// `false` would leave them out of the secret check again.
const STRICT_TYPE_ERRORS: bool = true;

const SECRET_KEYS: &[&str] = &[
    "password",
    "api_key",
    "bearer_token",
    "account_key",
    "connection_string",
    "sas_token",
    "client_secret",
];

/// The secret values of the text: what a secret key holds (a string, or a number or date
/// written without quotes), and the value of the environment variable a `*_env` key names.
/// Read with the toml crate (the parser figment uses), so text inside other strings is never
/// taken for a key. When the text is not TOML, lines that start with `key = "value"` are used
/// (only syntax errors can show those, see `STRICT_SYNTAX_ERRORS`). Kept: values of 6 or
/// more characters that occur once in the text (environment values: not at all).
fn secrets(text: &str) -> Vec<String> {
    let mut found: Vec<(String, bool)> = Vec::new();
    match text.parse::<toml::Table>() {
        Ok(table) => walk(&toml::Value::Table(table), &mut found),
        Err(_) => {
            for line in text.lines() {
                let line = line.trim_start_matches([' ', '\t']);
                for key in SECRET_KEYS {
                    let Some(rest) = line.strip_prefix(key) else {
                        continue;
                    };
                    let Some(rest) = rest.trim_start_matches([' ', '\t']).strip_prefix('=') else {
                        continue;
                    };
                    let rest = rest.trim_start_matches([' ', '\t']);
                    let Some(quote) = rest.chars().next().filter(|c| matches!(c, '"' | '\''))
                    else {
                        continue;
                    };
                    let body = &rest[1..];
                    if let Some(end) = body
                        .find([quote, '\\'])
                        .filter(|&e| body[e..].starts_with(quote))
                    {
                        found.push((body[..end].to_owned(), false));
                    }
                }
            }
        }
    }
    found
        .into_iter()
        .filter(|(value, from_env)| {
            value.chars().count() >= 6
                && text.matches(value.as_str()).count() == if *from_env { 0 } else { 1 }
        })
        .map(|(value, _)| value)
        .collect()
}

fn walk(value: &toml::Value, found: &mut Vec<(String, bool)>) {
    match value {
        toml::Value::Table(table) => {
            for (key, value) in table {
                if SECRET_KEYS.contains(&key.as_str()) {
                    match value {
                        toml::Value::String(s) => found.push((s.clone(), false)),
                        toml::Value::Integer(i) => found.push((i.to_string(), false)),
                        toml::Value::Float(f) => found.push((f.to_string(), false)),
                        toml::Value::Datetime(d) => found.push((d.to_string(), false)),
                        _ => {}
                    }
                }
                let named = key.strip_suffix("_env");
                if let (Some(name), toml::Value::String(var)) = (named, value)
                    && SECRET_KEYS.contains(&name)
                    && let Ok(secret) = std::env::var(var)
                {
                    found.push((secret, true));
                }
                walk(value, found);
            }
        }
        toml::Value::Array(items) => items.iter().for_each(|v| walk(v, found)),
        _ => {}
    }
}

fn assert_no_secret(what: &str, shown: &str, secrets: &[String]) {
    if !STRICT_SYNTAX_ERRORS && shown.contains("TOML parse error") {
        return;
    }
    if !STRICT_TYPE_ERRORS && shown.contains("invalid type: found") {
        return;
    }
    for s in secrets {
        assert!(
            !shown.contains(s.as_str()),
            "{what} shows the secret {s:?}:\n{shown}"
        );
    }
}

fn config_file() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("flowlogd-fuzz-config-{}.toml", std::process::id()))
    })
}

fn check_ranges(c: &Config) {
    let es = &c.elasticsearch;
    assert!(es.flush_interval >= Duration::from_millis(10));
    assert!((1..=MAX_IN_FLIGHT).contains(&es.max_in_flight));
    assert!(es.batch_max_docs >= 1 && es.batch_max_bytes >= 1024);
    assert!(es.request_timeout >= Duration::from_secs(1));
    assert!(es.retry_initial_backoff >= Duration::from_millis(1));
    assert!(es.retry_max_backoff >= es.retry_initial_backoff);
    assert!(es.item_retry_timeout >= Duration::from_secs(1));
    assert!((1..=1024).contains(&es.number_of_shards));
    assert!(c.daemon.interval >= Duration::from_millis(100));
    assert!(c.daemon.shutdown_timeout >= Duration::from_millis(100));
    assert!((1..=64).contains(&c.daemon.read_concurrency));
    assert!(!c.registry.path.as_os_str().is_empty());
    for s in &c.sources {
        assert!(s.discovery_interval >= Duration::from_secs(1));
        assert!(s.finish_after >= Duration::from_secs(1));
        assert!(s.forget_gone_after >= Duration::from_secs(1));
        assert!((1024..=1 << 30).contains(&s.max_record_bytes));
        assert!(s.retry.max_tries >= 1 && s.retry.initial_delay_ms >= 1);
        assert!(s.retry.max_delay_ms >= s.retry.initial_delay_ms);
    }
}

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let secrets = secrets(text);
    let parsed = Config::from_toml_str(text);
    std::fs::write(config_file(), text).expect("write the config file");
    let loaded = Config::load(config_file());
    match (&parsed, &loaded) {
        (Ok(a), Ok(b)) => assert_eq!(format!("{a:?}"), format!("{b:?}")),
        (Err(a), Err(b)) => {
            assert!(!a.to_string().is_empty());
            assert_no_secret("the error", &a.to_string(), &secrets);
            assert_no_secret("the error of load", &b.to_string(), &secrets);
        }
        (Ok(_), Err(e)) => panic!("from_toml_str accepts, load refuses: {e}"),
        (Err(e), Ok(_)) => panic!("load accepts, from_toml_str refuses: {e}"),
    }
    let Ok(config) = parsed else {
        return;
    };
    assert_no_secret("Debug of the config", &format!("{config:?}"), &secrets);
    config
        .validate()
        .expect("an accepted config validates again");
    check_ranges(&config);
    let _ = config.dead_letter_path();
    for source in &config.sources {
        source.index_pattern().expect("an accepted index pattern");
        for now in [0, 1_767_225_600, i64::from(u32::MAX)] {
            let _ = source.since.resolve(now);
        }
        let inline = matches!(
            source.auth.method(),
            "account_key" | "connection_string" | "sas"
        );
        if !inline || text.contains("_file") {
            continue;
        }
        match source.storage().resolve() {
            Ok(resolved) => {
                assert_no_secret("Debug of the storage", &format!("{resolved:?}"), &secrets);
                let url = resolved.container_url_for_display().to_string();
                assert_no_secret("the display URL", &url, &secrets);
            }
            Err(e) => assert_no_secret("the storage error", &e.to_string(), &secrets),
        }
    }
});
