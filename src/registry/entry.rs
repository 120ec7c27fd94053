//! One blob's progress record and its versioned on-disk encoding.
//!
//! # Value layout, version 1
//!
//! Integers are big-endian (so a hex dump reads naturally); signed integers are
//! two's complement. Times are Unix milliseconds.
//!
//! | at        | size | field                                                        |
//! |-----------|------|--------------------------------------------------------------|
//! | 0         | 1    | format version, `0x01`                                       |
//! | 1         | 8    | `offset`, u64                                                |
//! | 9         | 8    | `length_seen`, u64                                           |
//! | 17        | 8    | `last_modified`, i64                                         |
//! | 25        | 8    | `updated_at`, i64                                            |
//! | 33        | 1    | `state`: `0` Active, `1` Finished, `2` Gone                  |
//! | 34        | 1    | `head_len` presence: `0` absent, `1` present                 |
//! | 35        | 4    | `head_len`, u32 (only when presence is `1`)                  |
//! | 35 or 39  | 2    | etag length `n` in bytes, u16                                |
//! | +2        | `n`  | `etag`, UTF-8                                                |
//!
//! Nothing may follow the etag. A value is therefore 37 + n bytes without a head
//! length and 41 + n bytes with one.
//!
//! A layout change gets a new version byte and a new decoder arm; version 1 values
//! already on disk must keep decoding. Decoding never panics: an unknown version,
//! a value cut short, an unknown enum byte, invalid UTF-8 or trailing bytes are
//! reported as [`DecodeError`].

use std::fmt;

/// The version byte written by [`BlobEntry::encode`].
pub const FORMAT_VERSION: u8 = 1;

/// Bytes of a version 1 value before the optional head length and the etag.
const FIXED_V1: usize = 35;

/// Where reading of one blob stands, as remembered across restarts.
///
/// The offset is the only field that decides what gets read next; the others let
/// the poller tell a grown blob from an unchanged or rewritten one without a GET,
/// and let retention forget blobs that storage no longer has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobEntry {
    /// End (exclusive byte position) of the last complete record whose tuples were
    /// all delivered or dead-lettered. The next read starts here; it only moves
    /// forward through [`Registry::advance`](super::Registry::advance).
    pub offset: u64,
    /// Blob length at the time of the last listing or read, to detect growth and
    /// shrinking without downloading anything.
    pub length_seen: u64,
    /// Etag at the time of the last listing or read; a changed etag with no growth
    /// means the blob was touched or rewritten.
    pub etag: String,
    /// Blob last-modified time (Unix ms) as listed, for the settle delay and for
    /// people inspecting the registry.
    pub last_modified: i64,
    /// Length of the envelope head (`{"records":[` plus any whitespace) learned on
    /// the first read; `None` until a read from offset 0 has seen it. Older logs were
    /// pretty-printed, so it is not a constant.
    pub head_len: Option<u32>,
    /// Whether the blob is still expected to change.
    pub state: BlobState,
    /// When this entry last changed (Unix ms); retention counts the grace period of
    /// a gone blob from here.
    pub updated_at: i64,
}

/// Lifecycle of a blob as far as reading is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlobState {
    /// May still grow: its hour partition must keep being listed.
    Active,
    /// Its hour is over and everything up to the tail was consumed: its partition
    /// no longer needs listing (unless it is the current or previous hour).
    Finished,
    /// No longer listed by storage (retention deleted it); kept for a grace period
    /// so a listing glitch does not cause a full re-read, then forgotten.
    Gone,
    /// Rewritten with other content: the documents of its old content must be deleted
    /// before it is read again from 0 (`on_rewrite = "replace"`). Stored before the delete
    /// starts, so a crash or a failed delete is resumed by the next poll; listed like
    /// [`BlobState::Active`].
    Rewritten,
}

impl BlobState {
    fn to_byte(self) -> u8 {
        match self {
            BlobState::Active => 0,
            BlobState::Finished => 1,
            BlobState::Gone => 2,
            BlobState::Rewritten => 3,
        }
    }

    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            0 => Some(BlobState::Active),
            1 => Some(BlobState::Finished),
            2 => Some(BlobState::Gone),
            3 => Some(BlobState::Rewritten),
            _ => None,
        }
    }

    /// Lower-case name for CLI output and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            BlobState::Active => "active",
            BlobState::Finished => "finished",
            BlobState::Gone => "gone",
            BlobState::Rewritten => "rewritten",
        }
    }
}

impl fmt::Display for BlobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a fresh listing of a blob compares with its registry entry: what the poller
/// should do with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Same length and etag: nothing to do.
    Unchanged,
    /// Longer than last seen and not below the offset: read `[offset, length)`.
    Grown,
    /// Same length, different etag (metadata set, or the same blocks committed
    /// again): nothing new to read; record the new etag.
    Retagged,
    /// Shorter than last seen, or shorter than the stored offset. Flow-log blobs only
    /// ever grow, so the content is not what was read: policy is to log it and
    /// re-read from 0 (document ids make the re-read overwrite, not duplicate).
    Rewritten,
}

impl BlobEntry {
    /// An entry for a blob seen for the first time, to be read from `offset`
    /// (0 for `resume`, the current length for `start_fresh`).
    pub fn new(offset: u64, length_seen: u64, etag: &str, last_modified: i64, now: i64) -> Self {
        BlobEntry {
            offset,
            length_seen,
            etag: etag.to_owned(),
            last_modified,
            head_len: None,
            state: BlobState::Active,
            updated_at: now,
        }
    }

    /// True when a listing shows exactly what was seen last time, so the poller can
    /// skip the blob without a GET.
    pub fn is_unchanged(&self, length: u64, etag: &str) -> bool {
        length == self.length_seen && etag == self.etag
    }

    /// Classifies a fresh listing `(length, etag)` against this entry; see [`Change`].
    ///
    /// A blob is rewritten when it is shorter than the stored offset (bytes we
    /// consumed are gone) or shorter than the length last seen (append-only blobs
    /// never shrink). An etag change alone is growth when the length grew and
    /// [`Change::Retagged`] when it did not.
    pub fn classify(&self, length: u64, etag: &str) -> Change {
        if length < self.offset || length < self.length_seen {
            Change::Rewritten
        } else if length > self.length_seen {
            Change::Grown
        } else if etag == self.etag {
            Change::Unchanged
        } else {
            Change::Retagged
        }
    }

    /// Encodes this entry in the current layout (see the module docs).
    ///
    /// Fails only when the etag is longer than 65 535 bytes, which no storage
    /// service produces: it indicates a bug upstream, and storing it truncated
    /// would make every later comparison wrong.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let etag_len = u16::try_from(self.etag.len()).map_err(|_| EncodeError::EtagTooLong {
            len: self.etag.len(),
        })?;
        let mut out = Vec::with_capacity(FIXED_V1 + 4 + 2 + self.etag.len());
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&self.offset.to_be_bytes());
        out.extend_from_slice(&self.length_seen.to_be_bytes());
        out.extend_from_slice(&self.last_modified.to_be_bytes());
        out.extend_from_slice(&self.updated_at.to_be_bytes());
        out.push(self.state.to_byte());
        match self.head_len {
            None => out.push(0),
            Some(head_len) => {
                out.push(1);
                out.extend_from_slice(&head_len.to_be_bytes());
            }
        }
        out.extend_from_slice(&etag_len.to_be_bytes());
        out.extend_from_slice(self.etag.as_bytes());
        Ok(out)
    }

    /// Decodes a stored value of any supported version.
    pub fn decode(bytes: &[u8]) -> Result<BlobEntry, DecodeError> {
        let mut reader = Reader { bytes, at: 0 };
        let version = reader.take::<1>("version")?[0];
        match version {
            1 => decode_v1(&mut reader),
            other => Err(DecodeError::UnknownVersion(other)),
        }
    }
}

fn decode_v1(reader: &mut Reader<'_>) -> Result<BlobEntry, DecodeError> {
    let offset = u64::from_be_bytes(reader.take("offset")?);
    let length_seen = u64::from_be_bytes(reader.take("length_seen")?);
    let last_modified = i64::from_be_bytes(reader.take("last_modified")?);
    let updated_at = i64::from_be_bytes(reader.take("updated_at")?);
    let state_byte = reader.take::<1>("state")?[0];
    let state = BlobState::from_byte(state_byte).ok_or(DecodeError::UnknownState(state_byte))?;
    let head_len = match reader.take::<1>("head_len presence")?[0] {
        0 => None,
        1 => Some(u32::from_be_bytes(reader.take("head_len")?)),
        other => return Err(DecodeError::UnknownPresence(other)),
    };
    let etag_len = usize::from(u16::from_be_bytes(reader.take("etag length")?));
    let etag_bytes = reader.take_slice(etag_len, "etag")?;
    let etag = std::str::from_utf8(etag_bytes)
        .map_err(|_| DecodeError::EtagNotUtf8)?
        .to_owned();
    let rest = reader.bytes.len() - reader.at;
    if rest != 0 {
        return Err(DecodeError::TrailingBytes(rest));
    }
    Ok(BlobEntry {
        offset,
        length_seen,
        etag,
        last_modified,
        head_len,
        state,
        updated_at,
    })
}

/// A bounds-checked cursor: every read names the field, so a truncated value says
/// where it was cut.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take_slice(&mut self, len: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let available = self.bytes.len() - self.at;
        if available < len {
            return Err(DecodeError::Truncated {
                field,
                at: self.at,
                needed: len,
                available,
            });
        }
        let slice = &self.bytes[self.at..self.at + len];
        self.at += len;
        Ok(slice)
    }

    fn take<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let slice = self.take_slice(N, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }
}

/// Why a stored value could not be decoded. The registry reports it with the
/// source and blob; the entry can then be inspected, reset, or overwritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The first byte names a layout this build does not know (written by a newer
    /// flowlogd, or garbage).
    UnknownVersion(u8),
    /// The value ends before `field` is complete.
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Byte position where the field starts.
        at: usize,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the value.
        available: usize,
    },
    /// The state byte is not 0, 1 or 2.
    UnknownState(u8),
    /// The head-length presence byte is not 0 or 1.
    UnknownPresence(u8),
    /// The etag bytes are not UTF-8.
    EtagNotUtf8,
    /// Bytes follow the last field of the layout.
    TrailingBytes(usize),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::UnknownVersion(v) => write!(
                f,
                "unknown registry value version {v} (this build reads version {FORMAT_VERSION}; written by a newer flowlogd?)"
            ),
            DecodeError::Truncated {
                field,
                at,
                needed,
                available,
            } => write!(
                f,
                "value truncated in field {field} at byte {at}: needs {needed} bytes, {available} left"
            ),
            DecodeError::UnknownState(b) => write!(f, "unknown blob state byte {b}"),
            DecodeError::UnknownPresence(b) => {
                write!(f, "head_len presence byte is {b}, expected 0 or 1")
            }
            DecodeError::EtagNotUtf8 => f.write_str("etag is not valid UTF-8"),
            DecodeError::TrailingBytes(n) => write!(f, "{n} unexpected bytes after the last field"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Why an entry could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncodeError {
    /// The etag does not fit the u16 length field.
    EtagTooLong {
        /// Its length in bytes.
        len: usize,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::EtagTooLong { len } => {
                write!(f, "etag of {len} bytes exceeds the 65535-byte limit")
            }
        }
    }
}

impl std::error::Error for EncodeError {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> BlobEntry {
        BlobEntry {
            offset: 4660,
            length_seen: 5000,
            etag: "\"0x8DC\"".to_owned(),
            last_modified: 1_700_000_000_000,
            head_len: Some(13),
            state: BlobState::Finished,
            updated_at: 1_700_000_060_000,
        }
    }

    /// Written by hand from the layout table in the module docs, not by running the
    /// encoder: if this test fails, the encoder no longer writes version 1.
    #[rustfmt::skip]
    const GOLDEN_V1: &[u8] = &[
        0x01,                                           // version
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x12, 0x34, // offset 4660
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x13, 0x88, // length_seen 5000
        0x00, 0x00, 0x01, 0x8B, 0xCF, 0xE5, 0x68, 0x00, // last_modified 1_700_000_000_000
        0x00, 0x00, 0x01, 0x8B, 0xCF, 0xE6, 0x52, 0x60, // updated_at 1_700_000_060_000
        0x01,                                           // state Finished
        0x01,                                           // head_len present
        0x00, 0x00, 0x00, 0x0D,                         // head_len 13
        0x00, 0x07,                                     // etag length 7
        b'"', b'0', b'x', b'8', b'D', b'C', b'"',       // etag "0x8DC" with quotes
    ];

    #[test]
    fn version_1_encoding_matches_the_hand_written_golden_bytes() {
        assert_eq!(sample().encode().unwrap(), GOLDEN_V1);
        assert_eq!(BlobEntry::decode(GOLDEN_V1).unwrap(), sample());
    }

    #[test]
    fn version_1_without_head_len_and_with_negative_times_matches_golden_bytes() {
        let entry = BlobEntry {
            offset: 0,
            length_seen: 0,
            etag: String::new(),
            last_modified: -1,
            head_len: None,
            state: BlobState::Gone,
            updated_at: 0,
        };
        #[rustfmt::skip]
        let golden: &[u8] = &[
            0x01,
            0, 0, 0, 0, 0, 0, 0, 0,
            0, 0, 0, 0, 0, 0, 0, 0,
            0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, // -1
            0, 0, 0, 0, 0, 0, 0, 0,
            0x02, // Gone
            0x00, // no head_len
            0x00, 0x00, // empty etag
        ];
        assert_eq!(entry.encode().unwrap(), golden);
        assert_eq!(BlobEntry::decode(golden).unwrap(), entry);
    }

    #[test]
    fn every_truncation_of_a_value_is_reported_not_panicked_on() {
        for cut in 0..GOLDEN_V1.len() {
            let err = BlobEntry::decode(&GOLDEN_V1[..cut]).unwrap_err();
            assert!(
                matches!(err, DecodeError::Truncated { .. }),
                "cut at {cut}: {err:?}"
            );
        }
    }

    #[test]
    fn truncation_error_names_the_field_that_was_cut() {
        let err = BlobEntry::decode(&GOLDEN_V1[..20]).unwrap_err();
        assert_eq!(
            err,
            DecodeError::Truncated {
                field: "last_modified",
                at: 17,
                needed: 8,
                available: 3
            }
        );
        assert!(err.to_string().contains("last_modified"));
    }

    #[test]
    fn unknown_versions_are_refused() {
        for version in [0u8, 2, 0x7B, 0xFF] {
            let mut bytes = GOLDEN_V1.to_vec();
            bytes[0] = version;
            assert_eq!(
                BlobEntry::decode(&bytes),
                Err(DecodeError::UnknownVersion(version))
            );
        }
    }

    #[test]
    fn json_left_by_a_serde_based_store_is_refused_as_an_unknown_version() {
        let err = BlobEntry::decode(br#"{"offset":1}"#).unwrap_err();
        assert_eq!(err, DecodeError::UnknownVersion(b'{'));
    }

    #[test]
    fn bad_enum_bytes_utf8_and_trailing_bytes_are_refused() {
        let mut bad_state = GOLDEN_V1.to_vec();
        bad_state[33] = 4;
        assert_eq!(
            BlobEntry::decode(&bad_state),
            Err(DecodeError::UnknownState(4))
        );

        let mut bad_presence = GOLDEN_V1.to_vec();
        bad_presence[34] = 2;
        assert_eq!(
            BlobEntry::decode(&bad_presence),
            Err(DecodeError::UnknownPresence(2))
        );

        let mut bad_utf8 = GOLDEN_V1.to_vec();
        let last = bad_utf8.len() - 1;
        bad_utf8[last] = 0xFF;
        assert_eq!(BlobEntry::decode(&bad_utf8), Err(DecodeError::EtagNotUtf8));

        let mut trailing = GOLDEN_V1.to_vec();
        trailing.extend_from_slice(b"xx");
        assert_eq!(
            BlobEntry::decode(&trailing),
            Err(DecodeError::TrailingBytes(2))
        );
    }

    #[test]
    fn an_etag_too_long_for_the_layout_is_refused_at_encode_time() {
        let mut entry = sample();
        entry.etag = "x".repeat(65_536);
        assert_eq!(
            entry.encode(),
            Err(EncodeError::EtagTooLong { len: 65_536 })
        );
        entry.etag.pop();
        assert!(entry.encode().is_ok());
    }

    #[test]
    fn classify_tells_growth_from_rewrites() {
        let entry = BlobEntry {
            offset: 900,
            length_seen: 1000,
            ..sample()
        };
        let etag = entry.etag.clone();
        assert_eq!(entry.classify(1000, &etag), Change::Unchanged);
        assert!(entry.is_unchanged(1000, &etag));
        assert_eq!(entry.classify(1500, &etag), Change::Grown);
        assert_eq!(entry.classify(1500, "\"new\""), Change::Grown);
        assert_eq!(entry.classify(1000, "\"new\""), Change::Retagged);
        assert!(!entry.is_unchanged(1000, "\"new\""));
        // Shrank, but still covers the offset: append-only blobs never shrink.
        assert_eq!(entry.classify(950, &etag), Change::Rewritten);
        // Shrank below what was consumed.
        assert_eq!(entry.classify(100, "\"new\""), Change::Rewritten);
        assert_eq!(entry.classify(0, &etag), Change::Rewritten);
    }

    #[test]
    fn classify_a_fresh_entry_at_zero() {
        let entry = BlobEntry::new(0, 0, "", 0, 0);
        assert_eq!(entry.classify(0, ""), Change::Unchanged);
        assert_eq!(entry.classify(12, "\"a\""), Change::Grown);
    }

    fn arb_entry() -> impl Strategy<Value = BlobEntry> {
        (
            any::<u64>(),
            any::<u64>(),
            ".{0,40}",
            any::<i64>(),
            proptest::option::of(any::<u32>()),
            prop_oneof![
                Just(BlobState::Active),
                Just(BlobState::Finished),
                Just(BlobState::Gone),
                Just(BlobState::Rewritten)
            ],
            any::<i64>(),
        )
            .prop_map(
                |(offset, length_seen, etag, last_modified, head_len, state, updated_at)| {
                    BlobEntry {
                        offset,
                        length_seen,
                        etag,
                        last_modified,
                        head_len,
                        state,
                        updated_at,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn any_entry_round_trips(entry in arb_entry()) {
            let bytes = entry.encode().unwrap();
            let expected_len = 37 + entry.etag.len() + if entry.head_len.is_some() { 4 } else { 0 };
            prop_assert_eq!(bytes.len(), expected_len);
            prop_assert_eq!(BlobEntry::decode(&bytes).unwrap(), entry);
        }

        #[test]
        fn any_strict_prefix_of_an_encoding_is_truncated(entry in arb_entry(), cut in any::<prop::sample::Index>()) {
            let bytes = entry.encode().unwrap();
            let cut = cut.index(bytes.len());
            let is_truncated = matches!(BlobEntry::decode(&bytes[..cut]), Err(DecodeError::Truncated { .. }));
            prop_assert!(is_truncated);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = BlobEntry::decode(&bytes);
        }

        #[test]
        fn version_1_garbage_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..80)) {
            let mut bytes = vec![FORMAT_VERSION];
            bytes.extend(tail);
            let _ = BlobEntry::decode(&bytes);
        }
    }
}
