//! A string that never shows itself in logs, errors or metrics.
//!
//! Every account key, SAS token, client secret and password in flowlogd is held in a
//! [`Secret`]. Its `Debug` and `Display` print `[redacted]`, so a secret that ends up in
//! a `tracing` field, an error message or a `{:?}` of a config struct does not leak.
//! The only way to the value is the explicit [`Secret::expose`].

use serde::{Deserialize, Deserializer};
use std::fmt;
use std::io::Read as _;
use std::path::Path;

/// Largest secret file read (`*_file` options): a key, token or password is a few hundred
/// bytes; a larger file is a wrong path (`/dev/zero`, a log, a disk image), and reading it
/// whole could exhaust memory.
pub const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// A file that could not be read as a secret (or a CA bundle). Names the file, never its
/// content.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FileError {
    #[error("cannot read `{path}`: {kind}")]
    Read {
        path: String,
        kind: std::io::ErrorKind,
    },
    #[error("`{path}` is larger than {limit}: not a secret file (a wrong path?)")]
    TooLarge { path: String, limit: String },
    #[error("`{path}` is not valid UTF-8")]
    NotUtf8 { path: String },
}

/// A secret option that cannot be used: the config key at fault (`password_env`, say) and why.
/// Names the variable or file, never the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{key}`: {reason}")]
pub struct SecretError {
    pub key: String,
    pub reason: String,
}

/// Reads the secret option `field`, given inline (`field`), by environment variable
/// (`field_env`) or by file (`field_file`; see [`read_secret_file`]): at most one of them may be
/// set, and the value must not be blank. `Ok(None)` when none is set; callers decide whether
/// the secret is required. The one loader of every secret of storage and engine options, so
/// operators learn one convention.
pub fn load_secret(
    field: &str,
    inline: Option<&Secret>,
    env: Option<&str>,
    file: Option<&Path>,
) -> Result<Option<Secret>, SecretError> {
    let error = |key: String, reason: String| SecretError { key, reason };
    let set =
        usize::from(inline.is_some()) + usize::from(env.is_some()) + usize::from(file.is_some());
    if set > 1 {
        return Err(error(
            field.to_owned(),
            format!("set only one of `{field}`, `{field}_env` or `{field}_file`"),
        ));
    }
    let (value, key, origin) = if let Some(s) = inline {
        (s.clone(), field.to_owned(), "the inline value".to_owned())
    } else if let Some(var) = env {
        let key = format!("{field}_env");
        let value = match std::env::var(var) {
            Ok(value) => value,
            Err(e) => {
                let why = match e {
                    std::env::VarError::NotPresent => "is not set",
                    std::env::VarError::NotUnicode(_) => "is not valid UTF-8",
                };
                return Err(error(key, format!("environment variable `{var}` {why}")));
            }
        };
        (
            Secret::new(value),
            key,
            format!("environment variable `{var}`"),
        )
    } else if let Some(path) = file {
        let key = format!("{field}_file");
        let text = match read_secret_file(path) {
            Ok(text) => text,
            Err(e) => return Err(error(key, e.to_string())),
        };
        (Secret::new(text), key, format!("file `{}`", path.display()))
    } else {
        return Ok(None);
    };
    if value.expose().trim().is_empty() {
        return Err(error(key, format!("{origin} is empty")));
    }
    Ok(Some(value))
}

/// Reads at most `max` bytes of `path`; a longer file (or an endless one such as `/dev/zero`)
/// is refused after `max + 1` bytes.
pub fn read_capped(path: &Path, max: u64) -> Result<Vec<u8>, FileError> {
    let shown = || path.display().to_string();
    let read_error = |e: std::io::Error| FileError::Read {
        path: shown(),
        kind: e.kind(),
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > max {
        let limit = if max.is_multiple_of(1024) {
            format!("{} KiB", max / 1024)
        } else {
            format!("{max} bytes")
        };
        return Err(FileError::TooLarge {
            path: shown(),
            limit,
        });
    }
    Ok(bytes)
}

/// Reads a secret file (at most [`MAX_SECRET_FILE_BYTES`], UTF-8) without the one line ending
/// (`\n` or `\r\n`) an editor or `echo` leaves after the value.
pub fn read_secret_file(path: &Path) -> Result<String, FileError> {
    let bytes = read_capped(path, MAX_SECRET_FILE_BYTES)?;
    let mut text = String::from_utf8(bytes).map_err(|_| FileError::NotUtf8 {
        path: path.display().to_string(),
    })?;
    let end = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .map_or(text.len(), str::len);
    text.truncate(end);
    Ok(text)
}

/// What `Debug` and `Display` print instead of the value.
pub const REDACTED: &str = "[redacted]";

/// A secret string (key, token, password) that redacts itself when formatted.
///
/// Deserialises from a plain string, so config files can hold it inline.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself. Call this only where the value is handed to the code that
    /// uses it (a signer, a credential), never to build a message.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when the value is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_never_shows_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(&s)), "Some([redacted])");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn a_secret_file_larger_than_64_kib_or_endless_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let exact = dir.path().join("exact");
        std::fs::write(&exact, "k".repeat(64 * 1024)).unwrap();
        assert_eq!(read_secret_file(&exact).unwrap().len(), 64 * 1024);
        for (content, read) in [("k\n", "k"), ("k\r\n", "k"), ("k\n\n", "k\n"), ("k", "k")] {
            std::fs::write(&exact, content).unwrap();
            assert_eq!(read_secret_file(&exact).unwrap(), read, "{content:?}");
        }
        let big = dir.path().join("big");
        std::fs::write(&big, "k".repeat(64 * 1024 + 1)).unwrap();
        let e = read_secret_file(&big).unwrap_err().to_string();
        assert!(e.contains("64 KiB") && e.contains("big"), "{e}");
        let e = read_secret_file(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/dev/zero") && e.contains("larger"), "{e}");
        let e = read_secret_file(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read") && e.contains("missing"), "{e}");
    }

    #[test]
    fn deserialises_from_a_string() {
        #[derive(Deserialize, Debug)]
        struct C {
            key: Secret,
        }
        let c: C = serde_json::from_str(r#"{"key":"abc=="}"#).unwrap();
        assert_eq!(c.key.expose(), "abc==");
        assert!(!format!("{c:?}").contains("abc"));
    }
}
