//! Minimal JSON writing into byte buffers: string escaping, integers and RFC 3339 timestamps,
//! so documents go straight into the bulk body without intermediate `serde_json::Value`s.

use crate::index_pattern::civil_from_days;

/// Appends `s` as a JSON string literal (with quotes).
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    push_str_content(out, s);
    out.push(b'"');
}

/// Appends the escaped content of a JSON string (without quotes).
pub fn push_str_content(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    // Almost every string needs no escape: one check, one copy.
    if bytes.iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.extend_from_slice(bytes);
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[(b >> 4) as usize],
                    HEX[(b & 15) as usize],
                ]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Appends an unsigned integer. Up to eight digits (every port, most counters) are written as
/// one fixed eight-byte store and the length set back, instead of `itoa` plus a `memcpy` call
/// for 1-5 bytes: with eight numbers a document, those were half of the encoder's ~16 `memcpy`
/// calls a tuple (callgrind of `flowlogd decode`).
#[inline]
pub fn push_u64(out: &mut Vec<u8>, v: u64) {
    if v >= 100_000_000 {
        out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
        return;
    }
    // Digits from the right, two at a time from a table, then shifted down to the first bytes.
    let mut text = [b'0'; 8];
    let mut start = 8;
    let mut rest = v as usize;
    while rest >= 100 {
        let pair = rest % 100 * 2;
        rest /= 100;
        start -= 2;
        text[start..start + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    }
    if rest >= 10 {
        start -= 2;
        text[start..start + 2].copy_from_slice(&DIGIT_PAIRS[rest * 2..rest * 2 + 2]);
    } else {
        start -= 1;
        text[start] = b'0' + rest as u8;
    }
    let shifted = u64::from_le_bytes(text) >> (8 * start);
    out.extend_from_slice(&shifted.to_le_bytes());
    out.truncate(out.len() - start);
}

/// "00" to "99".
const DIGIT_PAIRS: &[u8; 200] = b"\
    0001020304050607080910111213141516171819\
    2021222324252627282930313233343536373839\
    4041424344454647484950515253545556575859\
    6061626364656667686970717273747576777879\
    8081828384858687888990919293949596979899";

/// Appends `"key":` where `key` needs no escaping (a literal of ours).
pub fn push_key(out: &mut Vec<u8>, key: &str) {
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
}

/// Appends `epoch_ms` as a quoted RFC 3339 UTC timestamp with milliseconds:
/// `"2022-09-14T09:00:03.599Z"`. Years outside 0..=9999 are clamped by the tuple parser.
pub fn push_timestamp_millis(out: &mut Vec<u8>, epoch_ms: i64) {
    TimestampWriter::default().push(out, epoch_ms);
}

/// Writes timestamps as [`push_timestamp_millis`] does, keeping the date of the last day it
/// wrote: a blob's tuples lie within one hour, so the civil-date arithmetic runs once per day
/// met instead of once per document (~4% of decoding, cachegrind of `flowlogd decode`).
#[derive(Debug, Clone, Copy)]
pub struct TimestampWriter {
    day: i64,
    /// `"YYYY-MM-DD` of `day`.
    date: [u8; 11],
}

impl Default for TimestampWriter {
    fn default() -> Self {
        TimestampWriter {
            day: i64::MIN,
            date: [0; 11],
        }
    }
}

impl TimestampWriter {
    pub fn push(&mut self, out: &mut Vec<u8>, epoch_ms: i64) {
        let secs = epoch_ms.div_euclid(1000);
        let days = secs.div_euclid(86_400);
        if days != self.day {
            let (year, month, day) = civil_from_days(days);
            self.date[0] = b'"';
            put_digits(&mut self.date[1..5], year.clamp(0, 9999) as u32);
            self.date[5] = b'-';
            put_digits(&mut self.date[6..8], month);
            self.date[8] = b'-';
            put_digits(&mut self.date[9..11], day);
            self.day = days;
        }
        let ms = epoch_ms.rem_euclid(1000) as u32;
        let sod = secs.rem_euclid(86_400) as u32;
        let mut buf = [0u8; 26];
        buf[..11].copy_from_slice(&self.date);
        buf[11] = b'T';
        put_digits(&mut buf[12..14], sod / 3600);
        buf[14] = b':';
        put_digits(&mut buf[15..17], sod / 60 % 60);
        buf[17] = b':';
        put_digits(&mut buf[18..20], sod % 60);
        buf[20] = b'.';
        put_digits(&mut buf[21..24], ms);
        buf[24] = b'Z';
        buf[25] = b'"';
        out.extend_from_slice(&buf);
    }
}

fn put_digits(dst: &mut [u8], mut v: u32) {
    for slot in dst.iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ts(ms: i64) -> String {
        let mut out = Vec::new();
        push_timestamp_millis(&mut out, ms);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn timestamps_match_hand_checked_values() {
        assert_eq!(ts(0), "\"1970-01-01T00:00:00.000Z\"");
        assert_eq!(ts(1_663_146_003_599), "\"2022-09-14T09:00:03.599Z\"");
        assert_eq!(ts(1_487_282_421_000), "\"2017-02-16T22:00:21.000Z\"");
        assert_eq!(ts(951_782_400_000), "\"2000-02-29T00:00:00.000Z\"");
        assert_eq!(ts(253_402_300_799_999), "\"9999-12-31T23:59:59.999Z\"");
    }

    #[test]
    fn strings_are_escaped_as_json() {
        let mut out = Vec::new();
        push_str(&mut out, "a\"b\\c\nd\u{1}é/");
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, "\"a\\\"b\\\\c\\nd\\u0001é/\"");
        assert_eq!(
            serde_json::from_str::<String>(&text).unwrap(),
            "a\"b\\c\nd\u{1}é/"
        );
    }

    #[test]
    fn integers_are_written_as_their_decimal_digits_around_the_eight_digit_boundary() {
        for (v, text) in [
            (0u64, "0"),
            (7, "7"),
            (10, "10"),
            (443, "443"),
            (65_535, "65535"),
            (99_999_999, "99999999"),
            (100_000_000, "100000000"),
            (u64::MAX, "18446744073709551615"),
        ] {
            let mut out = b"x".to_vec();
            push_u64(&mut out, v);
            assert_eq!(out, format!("x{text}").into_bytes());
        }
    }

    proptest! {
        #[test]
        fn any_integer_is_written_as_std_writes_it(v in any::<u64>(), small in 0u64..100_000_000) {
            for v in [v, small] {
                let mut out = b"prefix".to_vec();
                push_u64(&mut out, v);
                prop_assert_eq!(out, format!("prefix{v}").into_bytes());
            }
        }
    }

    proptest! {
        #[test]
        fn timestamps_agree_with_chrono(ms in 0i64..=253_402_300_799_999) {
            let expected = chrono::DateTime::from_timestamp_millis(ms).unwrap()
                .format("\"%Y-%m-%dT%H:%M:%S%.3fZ\"").to_string();
            prop_assert_eq!(ts(ms), expected);
        }

        #[test]
        fn a_timestamp_writer_writes_what_a_fresh_one_writes_whatever_came_before(
            times in proptest::collection::vec(
                prop_oneof![
                    0i64..=253_402_300_799_999,
                    1_663_146_000_000i64..1_663_146_000_000 + 3 * 86_400_000,
                ],
                1..40,
            ),
        ) {
            let mut writer = TimestampWriter::default();
            for ms in times {
                let mut out = Vec::new();
                writer.push(&mut out, ms);
                prop_assert_eq!(String::from_utf8(out).unwrap(), ts(ms));
            }
        }

        #[test]
        fn any_string_round_trips_through_escaping(s in "\\PC*|[\\x00-\\x1f\"\\\\]*") {
            let mut out = Vec::new();
            push_str(&mut out, &s);
            prop_assert_eq!(serde_json::from_slice::<String>(&out).unwrap(), s);
        }
    }
}
