//! Index name patterns (`IndexPattern::parse`, `format`, `IndexNameCache`, `wildcard`): a pattern accepted at startup must give, for every tuple time flowlogd accepts, a name Elasticsearch accepts, the same name through the hot-path cache, a name its template's wildcard matches, and calendar fields that agree with chrono, because a bad name fails every document of its hour at the engine.
//!
//! Input: the pattern (UTF-8), optionally followed by a NUL byte and up to 8 bytes of a
//! little-endian i64 time in epoch milliseconds; without them a fixed set of times is used.
//!
//! Checked for an accepted pattern, at each time:
//! - `format` does not panic for any i64, and equals what `IndexNameCache::get` returns,
//!   also when the cache alternates between hours;
//! - for times `parse_tuple` accepts (1970 to 9999), the name is a valid index name: not
//!   empty, at most 255 bytes, lower case, none of `\ / * ? " < > | , # :` or space, not
//!   starting with `-`, `_` or `+`, not `.` or `..` (the rules `validate` applies to its one
//!   sample time);
//! - the name matches `wildcard()` (the template's index pattern);
//! - an undated pattern gives the same name at every time;
//! - independently of the input pattern, the fields of
//!   `%{+yyyy.YYYY.yy.xxxx.xx.ww.w.MM.M.dd.d.HH.H}` equal chrono's for that time, wherever
//!   chrono can represent it.
#![no_main]

use chrono::{DateTime, Datelike, Timelike};
use flowlogd::encode::index_name::IndexNameCache;
use flowlogd::index_pattern::IndexPattern;
use libfuzzer_sys::fuzz_target;

const HOUR_MS: i64 = 3_600_000;

/// Whether names must stay within 255 bytes at every time. They did not (finding 4:
/// `validate` measured only 2026-01-01T00, where unpadded fields have one digit) until it
/// measured 2026-12-31T23 too; `false` would check only the other rules again.
const STRICT_LENGTH: bool = true;
/// 9999-12-31T23:59:59.999Z: the latest tuple time `parse_tuple` accepts.
const MAX_TUPLE_MS: i64 = 253_402_300_799_999;

const FIXED_TIMES: &[i64] = &[
    0,
    1_767_225_600_000, // 2026-01-01T00:00Z, the sample `validate` formats
    1_767_225_599_999,
    1_609_459_200_000,   // 2021-01-01, ISO week 53 of 2020
    1_735_603_200_000,   // 2024-12-31, ISO week 1 of 2025
    1_758_500_000_000,   // 2025-09, weeks and days of two digits
    253_402_300_799_999, // the last accepted millisecond
    -1,
    i64::MIN,
    i64::MAX,
];

/// Glob match with `*` only, as Elasticsearch matches index templates.
fn glob(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || !name.ends_with(last) || name.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

fn check_valid_name(pattern: &str, name: &str, millis: i64) {
    let context = format!("pattern {pattern:?} at {millis} ms gives {name:?}");
    assert!(!name.is_empty(), "{context}: empty");
    assert!(
        name.len() <= 255 || !STRICT_LENGTH,
        "{context}: {} bytes",
        name.len()
    );
    assert!(name != "." && name != "..", "{context}");
    assert!(!name.starts_with(['-', '_', '+']), "{context}");
    for c in name.chars() {
        assert!(
            !matches!(
                c,
                '\\' | '/' | '*' | '?' | '"' | '<' | '>' | '|' | ' ' | ',' | '#' | ':'
            ),
            "{context}: {c:?}"
        );
        assert!(!c.is_uppercase(), "{context}: {c:?}");
        assert!(!c.is_control(), "{context}: {c:?}");
    }
}

fn padded(value: i64, width: usize) -> String {
    let sign = if value < 0 { "-" } else { "" };
    format!("{sign}{:0width$}", value.unsigned_abs())
}

/// The calendar fields of `millis` against chrono, where chrono can represent it.
fn check_calendar(millis: i64) {
    let Some(t) = DateTime::from_timestamp_millis(millis) else {
        return;
    };
    let pattern = IndexPattern::parse("c%{+yyyy.YYYY.yy.xxxx.xx.ww.w.MM.M.dd.d.HH.H}")
        .expect("a valid pattern");
    let (year, week) = (t.year() as i64, t.iso_week());
    let era_year = if year >= 1 { year } else { 1 - year };
    let fields = [
        padded(year, 4),
        padded(era_year, 4),
        padded(year.rem_euclid(100), 2),
        padded(week.year() as i64, 4),
        padded((week.year() as i64).rem_euclid(100), 2),
        padded(week.week() as i64, 2),
        padded(week.week() as i64, 1),
        padded(t.month() as i64, 2),
        padded(t.month() as i64, 1),
        padded(t.day() as i64, 2),
        padded(t.day() as i64, 1),
        padded(t.hour() as i64, 2),
        padded(t.hour() as i64, 1),
    ];
    assert_eq!(
        pattern.format(millis),
        format!("c{}", fields.join(".")),
        "calendar fields at {t}"
    );
}

fuzz_target!(|input: &[u8]| {
    let (text, times) = match input.iter().position(|&b| b == 0) {
        Some(nul) => {
            let mut le = [0u8; 8];
            for (to, from) in le.iter_mut().zip(&input[nul + 1..]) {
                *to = *from;
            }
            let t = i64::from_le_bytes(le);
            (&input[..nul], vec![t, t.wrapping_add(HOUR_MS), t, 0])
        }
        None => (input, FIXED_TIMES.to_vec()),
    };
    for &t in &times {
        check_calendar(t);
    }
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let Ok(pattern) = IndexPattern::parse(text) else {
        return;
    };
    assert_eq!(pattern.as_str(), text);
    assert_eq!(pattern.to_string(), text);
    assert_eq!(text.parse::<IndexPattern>().as_ref(), Ok(&pattern));
    let wildcard = pattern.wildcard();
    let mut cache = IndexNameCache::new(pattern.clone());
    let undated = pattern.format(0);
    for &t in &times {
        let name = pattern.format(t);
        assert_eq!(cache.get(t), name, "cache and format differ at {t}");
        assert!(
            glob(&wildcard, &name),
            "{name:?} does not match {wildcard:?}"
        );
        if !pattern.is_dated() {
            assert_eq!(name, undated, "an undated pattern changed with time");
        }
        // Times a tuple can have: the same name rules `validate` applies to its sample.
        let tuple_time = t.rem_euclid(MAX_TUPLE_MS + 1);
        check_valid_name(text, &pattern.format(tuple_time), tuple_time);
    }
});
