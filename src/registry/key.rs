//! Order-preserving key encoding for (source, blob) pairs.
//!
//! # Key layout
//!
//! ```text
//! escape(source) 0x00 0x01 blob
//! ```
//!
//! `escape` writes the UTF-8 bytes of the source name with every `0x00` byte
//! replaced by `0x00 0xFF`; the pair `0x00 0x01` then can only be the separator.
//! The blob name follows as raw UTF-8: it is last, so it needs no escaping and may
//! contain anything (`/`, `=`, spaces, NUL).
//!
//! Byte order of keys equals the order of `(source, blob)` tuples of strings, so:
//! - all entries of one source are contiguous (a prefix scan of
//!   `escape(source) 0x00 0x01`), ordered by blob name;
//! - entries whose blob names share a prefix are contiguous inside their source
//!   (a prefix scan of `escape(source) 0x00 0x01 prefix`);
//! - sources appear in name order.
//!
//! The separator sorts below any escaped byte, which is what makes a source sort
//! before every longer source it is a prefix of.

use std::fmt;

const SEPARATOR: [u8; 2] = [0x00, 0x01];
const ESCAPED_NUL: [u8; 2] = [0x00, 0xFF];

/// Builds the key of one blob of one source.
pub(crate) fn encode(source: &str, blob: &str) -> Vec<u8> {
    let mut key = source_prefix(source);
    key.extend_from_slice(blob.as_bytes());
    key
}

/// The prefix shared by every key of `source`, and only by them.
pub(crate) fn source_prefix(source: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(source.len() + 2);
    for &byte in source.as_bytes() {
        if byte == 0 {
            key.extend_from_slice(&ESCAPED_NUL);
        } else {
            key.push(byte);
        }
    }
    key.extend_from_slice(&SEPARATOR);
    key
}

/// Splits a key back into (source, blob).
pub(crate) fn decode(key: &[u8]) -> Result<(String, String), KeyError> {
    let mut source = Vec::with_capacity(key.len());
    let mut i = 0;
    loop {
        match key.get(i) {
            None => return Err(KeyError::NoSeparator),
            Some(0) => match key.get(i + 1) {
                Some(0x01) => break,
                Some(0xFF) => {
                    source.push(0);
                    i += 2;
                }
                _ => return Err(KeyError::BadEscape { at: i }),
            },
            Some(&byte) => {
                source.push(byte);
                i += 1;
            }
        }
    }
    let blob = key.get(i + 2..).unwrap_or_default();
    let source = String::from_utf8(source).map_err(|_| KeyError::NotUtf8)?;
    let blob = std::str::from_utf8(blob)
        .map_err(|_| KeyError::NotUtf8)?
        .to_owned();
    Ok((source, blob))
}

/// Why a stored key is not a (source, blob) key. Only corruption or a foreign
/// writer produces these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// The key has no `0x00 0x01` separator.
    NoSeparator,
    /// A `0x00` byte in the source part is followed by neither `0x01` nor `0xFF`.
    BadEscape {
        /// Byte position of the stray `0x00`.
        at: usize,
    },
    /// The source or blob part is not UTF-8.
    NotUtf8,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::NoSeparator => f.write_str("key has no source/blob separator"),
            KeyError::BadEscape { at } => write!(f, "key has an invalid escape at byte {at}"),
            KeyError::NotUtf8 => f.write_str("key is not UTF-8"),
        }
    }
}

impl std::error::Error for KeyError {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layout_is_escaped_source_separator_raw_blob() {
        assert_eq!(encode("s", "a/b"), b"s\x00\x01a/b");
        assert_eq!(encode("a\0b", "x\0y"), b"a\x00\xFFb\x00\x01x\x00y");
        assert_eq!(encode("", ""), b"\x00\x01");
    }

    #[test]
    fn a_source_does_not_capture_keys_of_a_longer_source_it_prefixes() {
        let prefix = source_prefix("nsg");
        for other in ["nsg2", "nsg\0", "nsg\u{1}", "nsg/"] {
            assert!(!encode(other, "blob").starts_with(&prefix), "{other:?}");
        }
        assert!(encode("nsg", "\u{1}blob").starts_with(&prefix));
    }

    #[test]
    fn malformed_keys_are_errors() {
        assert_eq!(decode(b"abc"), Err(KeyError::NoSeparator));
        assert_eq!(decode(b"a\x00"), Err(KeyError::BadEscape { at: 1 }));
        assert_eq!(decode(b"a\x00\x02b"), Err(KeyError::BadEscape { at: 1 }));
        assert_eq!(decode(b"\xFF\x00\x01b"), Err(KeyError::NotUtf8));
        assert_eq!(decode(b"a\x00\x01\xFF"), Err(KeyError::NotUtf8));
    }

    proptest! {
        #[test]
        fn keys_round_trip(source in "\\PC*|[a\u{0}\u{1}]{0,6}", blob in "\\PC*|[a\u{0}\u{1}/= ]{0,6}") {
            prop_assert_eq!(decode(&encode(&source, &blob)).unwrap(), (source, blob));
        }

        #[test]
        fn key_order_is_tuple_order(
            a in ("[ab\u{0}\u{1}\u{ff}]{0,4}", "[ab\u{0}/ ]{0,4}"),
            b in ("[ab\u{0}\u{1}\u{ff}]{0,4}", "[ab\u{0}/ ]{0,4}"),
        ) {
            let key_order = encode(&a.0, &a.1).cmp(&encode(&b.0, &b.1));
            prop_assert_eq!(key_order, a.cmp(&b));
        }

        #[test]
        fn source_prefix_matches_exactly_the_keys_of_that_source(
            s in "[ab\u{0}\u{1}]{0,4}", t in "[ab\u{0}\u{1}]{0,4}", blob in "[ab\u{0}\u{1}]{0,4}",
        ) {
            prop_assert_eq!(encode(&t, &blob).starts_with(&source_prefix(&s)), s == t);
        }
    }
}
