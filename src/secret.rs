//! A string that never shows itself in logs, errors or metrics.
//!
//! Every account key, SAS token, client secret and password in flowlogd is held in a
//! [`Secret`]. Its `Debug` and `Display` print `[redacted]`, so a secret that ends up in
//! a `tracing` field, an error message or a `{:?}` of a config struct does not leak.
//! The only way to the value is the explicit [`Secret::expose`].

use serde::{Deserialize, Deserializer};
use std::fmt;

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
