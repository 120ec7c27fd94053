//! Index name patterns (`vnet-flow-logs-%{+xxxx.ww}`): the parser and validator of the
//! `index` option (run once at startup, by config validation) and the formatting of a name
//! from a tuple's own UTC time. A shared leaf (it imports nothing from the crate), so that
//! config, the encoder and the sink's template and cluster setup name it without an import
//! pointing up the flow; the encoder's per-hour cache is `encode::index_name::IndexNameCache`.
//!
//! Inside `%{+FORMAT}`, FORMAT is a Joda-Time pattern as Logstash's `sprintf` uses it:
//! `yyyy` year, `YYYY` year of era (Joda's `Y`, *not* the week-year of `java.time`), `xxxx`
//! ISO week-based year, `ww` ISO week, `MM` month, `dd` day of month, `HH` hour (plus their
//! one-letter unpadded and two-letter year forms), `'quoted text'` (`''` is a quote), and any
//! non-letter as itself. Every supported field is an hour or coarser, so one name per hour.

use std::fmt;

use thiserror::Error;

/// A pattern that can never produce a valid Elasticsearch index name, or uses something
/// flowlogd does not implement. Raised by [`IndexPattern::parse`] (config validation).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IndexPatternError {
    #[error(
        "index pattern {pattern:?}: unsupported date token {token:?} in \"%{{+{format}}}\" \
         (supported: yyyy, yy, YYYY, YY, xxxx, xx, ww, w, MM, M, dd, d, HH, H, 'quoted text')"
    )]
    UnsupportedToken {
        pattern: String,
        format: String,
        token: String,
    },
    #[error(
        "index pattern {pattern:?}: \"%{{{field}}}\" refers to an event field; only dates \
         (\"%{{+FORMAT}}\") are supported"
    )]
    FieldReference { pattern: String, field: String },
    #[error("index pattern {pattern:?}: \"%{{\" at byte {at} is never closed by \"}}\"")]
    Unclosed { pattern: String, at: usize },
    #[error("index pattern {pattern:?}: empty date format \"%{{+}}\"")]
    EmptyFormat { pattern: String },
    #[error("index pattern {pattern:?}: unterminated quote in \"%{{+{format}}}\"")]
    UnterminatedQuote { pattern: String, format: String },
    #[error("index pattern {pattern:?}: not a valid Elasticsearch index name: {reason}")]
    InvalidName { pattern: String, reason: String },
}

/// How a date field is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    /// `y`: proleptic year (0 is 1 BC, may be negative).
    Year,
    /// `Y`: year of era, always positive (1 BC is 1).
    YearOfEra,
    /// `x`: ISO-8601 week-based year.
    WeekYear,
    /// `w`: ISO-8601 week of the week-based year.
    Week,
    /// `M`: month 1-12.
    Month,
    /// `d`: day of month.
    Day,
    /// `H`: hour of day 0-23.
    Hour,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Text(String),
    /// A number zero-padded to `width` digits; `two_digit` keeps only the last two digits
    /// (Joda's `yy`, `YY`, `xx`).
    Number {
        field: Field,
        width: u8,
        two_digit: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Text(String),
    /// One `%{+FORMAT}`.
    Date(Vec<Token>),
}

/// A parsed, validated index name pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexPattern {
    source: String,
    segments: Vec<Segment>,
    dated: bool,
}

/// Every supported field is an hour or coarser: names change at most once per hour.
pub(crate) const MILLIS_PER_HOUR: i64 = 3_600_000;

impl IndexPattern {
    /// Parses and validates a pattern such as `vnet-flow-logs-%{+xxxx.ww}`,
    /// `nsg-%{+YYYY.MM.dd}` or a plain index name.
    pub fn parse(pattern: &str) -> Result<IndexPattern, IndexPatternError> {
        let mut segments = Vec::new();
        let mut text = String::new();
        let mut rest = pattern;
        while let Some(pos) = rest.find("%{") {
            text.push_str(&rest[..pos]);
            let at = pattern.len() - rest.len() + pos;
            let inner_and_after = &rest[pos + 2..];
            let Some(close) = inner_and_after.find('}') else {
                return Err(IndexPatternError::Unclosed {
                    pattern: pattern.to_owned(),
                    at,
                });
            };
            let inner = &inner_and_after[..close];
            let Some(format) = inner.strip_prefix('+') else {
                return Err(IndexPatternError::FieldReference {
                    pattern: pattern.to_owned(),
                    field: inner.to_owned(),
                });
            };
            if format.is_empty() {
                return Err(IndexPatternError::EmptyFormat {
                    pattern: pattern.to_owned(),
                });
            }
            if !text.is_empty() {
                segments.push(Segment::Text(std::mem::take(&mut text)));
            }
            segments.push(Segment::Date(parse_joda(pattern, format)?));
            rest = &inner_and_after[close + 1..];
        }
        text.push_str(rest);
        if !text.is_empty() {
            segments.push(Segment::Text(text));
        }

        let dated = segments.iter().any(|s| match s {
            Segment::Date(tokens) => tokens.iter().any(|t| matches!(t, Token::Number { .. })),
            Segment::Text(_) => false,
        });
        let parsed = IndexPattern {
            source: pattern.to_owned(),
            segments,
            dated,
        };
        parsed.validate()?;
        Ok(parsed)
    }

    fn validate(&self) -> Result<(), IndexPatternError> {
        let invalid = |reason: String| IndexPatternError::InvalidName {
            pattern: self.source.clone(),
            reason,
        };
        for text in self.texts() {
            for c in text.chars() {
                if matches!(
                    c,
                    '\\' | '/' | '*' | '?' | '"' | '<' | '>' | '|' | ' ' | ',' | '#' | ':'
                ) {
                    return Err(invalid(format!("it may not contain {c:?}")));
                }
                if c.is_uppercase() {
                    return Err(invalid(format!(
                        "it must be lower case, found {c:?} (date letters go inside %{{+...}})"
                    )));
                }
                if c.is_control() {
                    return Err(invalid(format!(
                        "it may not contain control character {c:?}"
                    )));
                }
            }
        }
        // Field output is digits only (and a '-' for years before 1 BC, which no flow log
        // has), so one sample shows the shape every name will have.
        let sample = self.format(1_767_225_600_000); // 2026-01-01T00:00:00Z
        if sample.is_empty() {
            return Err(invalid("it is empty".to_owned()));
        }
        if sample == "." || sample == ".." {
            return Err(invalid(format!("it may not be {sample:?}")));
        }
        if let Some(c) = sample
            .chars()
            .next()
            .filter(|c| matches!(c, '-' | '_' | '+'))
        {
            return Err(invalid(format!("it may not start with {c:?}")));
        }
        // Unpadded fields (M, d, H, w) have one digit on January 1st at 0h and two on
        // December 31st at 23h (ISO week 53 in 2026): the limit applies to the longer name.
        let widest = self.format(1_798_758_000_000); // 2026-12-31T23:00:00Z
        let longest = sample.len().max(widest.len());
        if longest > 255 {
            return Err(invalid(format!(
                "its names are up to {longest} bytes long (e.g. {widest:?}), the limit is 255"
            )));
        }
        Ok(())
    }

    /// Every piece of literal text that ends up in a name.
    fn texts(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().flat_map(|s| {
            let (one, many): (Option<&str>, &[Token]) = match s {
                Segment::Text(t) => (Some(t.as_str()), &[]),
                Segment::Date(tokens) => (None, tokens.as_slice()),
            };
            one.into_iter().chain(many.iter().filter_map(|t| match t {
                Token::Text(t) => Some(t.as_str()),
                Token::Number { .. } => None,
            }))
        })
    }

    /// The pattern as configured.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// True when the name depends on time (it has at least one date field).
    pub fn is_dated(&self) -> bool {
        self.dated
    }

    /// The pattern with every `%{…}` replaced by `*`, for index templates and searches:
    /// `vnet-flow-logs-%{+xxxx.ww}` gives `vnet-flow-logs-*`.
    pub fn wildcard(&self) -> String {
        let mut out = String::with_capacity(self.source.len());
        for segment in &self.segments {
            match segment {
                Segment::Text(t) => out.push_str(t),
                Segment::Date(_) => out.push('*'),
            }
        }
        out
    }

    /// Appends the index name for a tuple at `epoch_millis` (UTC) to `out`. Total over all
    /// `i64` values, including times before 1970. On the hot path prefer
    /// `encode::index_name::IndexNameCache`.
    pub fn format_into(&self, epoch_millis: i64, out: &mut String) {
        self.format_hour_into(epoch_millis.div_euclid(MILLIS_PER_HOUR), out);
    }

    /// Appends the index name for UTC hour `epoch_hour` (hours since 1970) to `out`: what
    /// `IndexNameCache` formats once per hour.
    pub(crate) fn format_hour_into(&self, epoch_hour: i64, out: &mut String) {
        let date = if self.dated {
            DateParts::from_epoch_hour(epoch_hour)
        } else {
            DateParts::default()
        };
        for segment in &self.segments {
            match segment {
                Segment::Text(t) => out.push_str(t),
                Segment::Date(tokens) => {
                    for token in tokens {
                        match token {
                            Token::Text(t) => out.push_str(t),
                            Token::Number {
                                field,
                                width,
                                two_digit,
                            } => {
                                let mut value = date.get(*field);
                                if *two_digit {
                                    value = value.rem_euclid(100);
                                }
                                push_padded(out, value, *width);
                            }
                        }
                    }
                }
            }
        }
    }

    /// The index name for a tuple at `epoch_millis`, as a new string.
    pub fn format(&self, epoch_millis: i64) -> String {
        let mut out = String::with_capacity(self.source.len() + 8);
        self.format_into(epoch_millis, &mut out);
        out
    }
}

impl fmt::Display for IndexPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl std::str::FromStr for IndexPattern {
    type Err = IndexPatternError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IndexPattern::parse(s)
    }
}

/// Parses the Joda-Time pattern inside one `%{+…}`.
fn parse_joda(pattern: &str, format: &str) -> Result<Vec<Token>, IndexPatternError> {
    let mut tokens = Vec::new();
    let mut text = String::new();
    let mut chars = format.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        if c.is_ascii_alphabetic() {
            let mut count = 1usize;
            while chars.next_if(|&(_, n)| n == c).is_some() {
                count += 1;
            }
            let token = &format[start..start + count];
            let unsupported = || IndexPatternError::UnsupportedToken {
                pattern: pattern.to_owned(),
                format: format.to_owned(),
                token: token.to_owned(),
            };
            let field = match c {
                'y' => Field::Year,
                'Y' => Field::YearOfEra,
                'x' => Field::WeekYear,
                'w' => Field::Week,
                'M' => Field::Month,
                'd' => Field::Day,
                'H' => Field::Hour,
                _ => return Err(unsupported()),
            };
            let is_year = matches!(field, Field::Year | Field::YearOfEra | Field::WeekYear);
            let ok = if is_year {
                count == 2 || count == 4
            } else {
                count <= 2
            };
            if !ok {
                return Err(unsupported());
            }
            if !text.is_empty() {
                tokens.push(Token::Text(std::mem::take(&mut text)));
            }
            tokens.push(Token::Number {
                field,
                // `count` is 1, 2 or 4 here.
                width: count as u8,
                two_digit: is_year && count == 2,
            });
        } else if c == '\'' {
            // `''` is a literal quote, inside or outside quoted text.
            if chars.next_if(|&(_, n)| n == '\'').is_some() {
                text.push('\'');
                continue;
            }
            loop {
                match chars.next() {
                    None => {
                        return Err(IndexPatternError::UnterminatedQuote {
                            pattern: pattern.to_owned(),
                            format: format.to_owned(),
                        });
                    }
                    Some((_, '\'')) => {
                        if chars.next_if(|&(_, n)| n == '\'').is_some() {
                            text.push('\'');
                        } else {
                            break;
                        }
                    }
                    Some((_, q)) => text.push(q),
                }
            }
        } else {
            text.push(c);
        }
    }
    if !text.is_empty() {
        tokens.push(Token::Text(text));
    }
    Ok(tokens)
}

fn push_padded(out: &mut String, value: i64, width: u8) {
    if value < 0 {
        out.push('-');
    }
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(value.unsigned_abs());
    for _ in digits.len()..usize::from(width) {
        out.push('0');
    }
    out.push_str(digits);
}

/// The calendar fields of one UTC hour (proleptic Gregorian, ISO-8601 weeks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct DateParts {
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    week_year: i64,
    week: i64,
}

impl DateParts {
    fn from_epoch_hour(epoch_hour: i64) -> DateParts {
        let days = epoch_hour.div_euclid(24);
        let hour = epoch_hour.rem_euclid(24);
        let (year, month, day) = civil_from_days_i64(days);
        // ISO weekday, Monday = 1; 1970-01-01 was a Thursday.
        let weekday = (days + 3).rem_euclid(7) + 1;
        // A week belongs to the year that holds its Thursday.
        let thursday = days - weekday + 4;
        let (week_year, _, _) = civil_from_days_i64(thursday);
        let week = (thursday - days_from_civil(week_year, 1, 1)) / 7 + 1;
        DateParts {
            year,
            month,
            day,
            hour,
            week_year,
            week,
        }
    }

    fn get(&self, field: Field) -> i64 {
        match field {
            Field::Year => self.year,
            Field::YearOfEra => {
                if self.year >= 1 {
                    self.year
                } else {
                    1 - self.year
                }
            }
            Field::WeekYear => self.week_year,
            Field::Week => self.week,
            Field::Month => self.month,
            Field::Day => self.day,
            Field::Hour => self.hour,
        }
    }
}

/// Howard Hinnant's `civil_from_days` (http://howardhinnant.github.io/date_algorithms.html):
/// days since 1970-01-01 → (year, month, day), proleptic Gregorian, exact for every day an i64
/// of milliseconds can name. Hand-written because it is on the per-document hot path (the JSON
/// writer's timestamps, `encode::json`) and chrono's calendar ends at year 262,143. One
/// implementation for timestamps and index names: it lives here, in the leaf, so that this
/// module imports nothing from the crate.
#[inline]
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// [`civil_from_days`] widened to this module's i64 fields.
fn civil_from_days_i64(days: i64) -> (i64, i64, i64) {
    let (year, month, day) = civil_from_days(days);
    (year, i64::from(month), i64::from(day))
}

// Howard Hinnant's `days_from_civil` (http://howardhinnant.github.io/date_algorithms.html),
// the inverse of `civil_from_days`: exact for every day an i64 of milliseconds can name. Not
// chrono: its calendar stops at year 262,143, and index names must exist for every
// timestamp the decoder accepts.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = year - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use chrono::{NaiveDate, TimeZone, Utc};

    /// Milliseconds since the epoch of `y-m-d h:00` UTC, by chrono (not by the code under test).
    pub(crate) fn ms(y: i32, m: u32, d: u32, h: u32) -> i64 {
        NaiveDate::from_ymd_opt(y, m, d)
            .and_then(|date| date.and_hms_opt(h, 0, 0))
            .map(|dt| Utc.from_utc_datetime(&dt).timestamp_millis())
            .expect("valid test date")
    }

    fn fmt(pattern: &str, millis: i64) -> String {
        IndexPattern::parse(pattern)
            .expect("valid pattern")
            .format(millis)
    }

    #[test]
    fn iso_week_edges_by_hand() {
        let p = "vnet-flow-logs-%{+xxxx.ww}";
        // 2020 starts on a Wednesday, so it has 53 ISO weeks; Thu 2020-12-31 is in week 53.
        assert_eq!(fmt(p, ms(2020, 12, 31, 12)), "vnet-flow-logs-2020.53");
        // Sun 2021-01-03 still belongs to 2020-W53; Mon 2021-01-04 starts 2021-W01.
        assert_eq!(fmt(p, ms(2021, 1, 3, 23)), "vnet-flow-logs-2020.53");
        assert_eq!(fmt(p, ms(2021, 1, 4, 0)), "vnet-flow-logs-2021.01");
        // Mon 2024-12-30 is in the week of Thu 2025-01-02: 2025-W01.
        assert_eq!(fmt(p, ms(2024, 12, 30, 0)), "vnet-flow-logs-2025.01");
        // 2026 starts on a Thursday: 53 weeks. Thu 2026-12-31 and Fri 2027-01-01 are both
        // 2026-W53; Mon 2027-01-04 starts 2027-W01.
        assert_eq!(fmt(p, ms(2026, 12, 31, 0)), "vnet-flow-logs-2026.53");
        assert_eq!(fmt(p, ms(2027, 1, 1, 0)), "vnet-flow-logs-2026.53");
        assert_eq!(fmt(p, ms(2027, 1, 3, 23)), "vnet-flow-logs-2026.53");
        assert_eq!(fmt(p, ms(2027, 1, 4, 0)), "vnet-flow-logs-2027.01");
        // Week-year and calendar year differ across the boundary: yyyy vs xxxx.
        assert_eq!(fmt("i-%{+yyyy}-%{+xxxx}", ms(2027, 1, 1, 0)), "i-2027-2026");
        assert_eq!(
            fmt("i-%{+yyyy}-%{+xxxx}", ms(2024, 12, 30, 0)),
            "i-2024-2025"
        );
    }

    #[test]
    fn uppercase_y_is_year_of_era_not_week_year() {
        // With java.time, YYYY on 2024-12-30 would print 2025; Joda (Logstash) prints 2024.
        assert_eq!(
            fmt("nsg-%{+YYYY.MM.dd}", ms(2024, 12, 30, 5)),
            "nsg-2024.12.30"
        );
        assert_eq!(
            fmt("nsg-%{+YYYY.MM.dd}", ms(2027, 1, 1, 5)),
            "nsg-2027.01.01"
        );
    }

    #[test]
    fn common_patterns() {
        let t = ms(2018, 11, 13, 11);
        assert_eq!(fmt("nsg-%{+YYYY.MM.dd}", t), "nsg-2018.11.13");
        assert_eq!(fmt("flows-%{+yyyy.MM.dd.HH}", t), "flows-2018.11.13.11");
        assert_eq!(fmt("flows-%{+yyyy-MM}", t), "flows-2018-11");
        assert_eq!(fmt("f-%{+yy}%{+MM}", t), "f-1811");
        assert_eq!(fmt("f-%{+xx.w}", ms(2018, 1, 3, 0)), "f-18.1");
        assert_eq!(fmt("f-%{+M_d_H}", ms(2018, 1, 3, 4)), "f-1_3_4");
        assert_eq!(fmt("f-%{+yyyy'w'ww}", ms(2018, 1, 3, 0)), "f-2018w01");
        assert_eq!(fmt("f-%{+yyyy''MM}", ms(2018, 1, 3, 0)), "f-2018'01");
        assert_eq!(fmt("f-%{+'it''s'}", 0), "f-it's");
        assert_eq!(fmt("plain-index", 123), "plain-index");
        // Milliseconds inside the hour do not matter; the hour does.
        assert_eq!(
            fmt("x-%{+HH}", ms(2018, 1, 1, 7) + MILLIS_PER_HOUR - 1),
            "x-07"
        );
    }

    #[test]
    fn before_1970_and_extremes() {
        // 1969-12-31T23:59:59.999Z is a Wednesday in 1970-W01.
        assert_eq!(fmt("x-%{+yyyy.MM.dd.HH}", -1), "x-1969.12.31.23");
        assert_eq!(fmt("x-%{+xxxx.ww}", -1), "x-1970.01");
        assert_eq!(fmt("x-%{+yyyy.MM.dd.HH}", 0), "x-1970.01.01.00");
        // Year 0 is 1 BC: yyyy prints 0000, YYYY prints 0001; year -1 prints -0001 / 0002.
        let y0 = ms(0, 6, 1, 0);
        assert_eq!(fmt("x-%{+yyyy}-%{+YYYY}", y0), "x-0000-0001");
        let y_1 = ms(-1, 6, 1, 0);
        assert_eq!(fmt("x-%{+yyyy}-%{+YYYY}", y_1), "x--0001-0002");
        assert_eq!(fmt("x-%{+yy}", y_1), "x-99");
        for t in [i64::MIN, i64::MIN + 1, i64::MAX, i64::MAX - 1] {
            let name = fmt("x-%{+yyyy.MM.dd.HH.xxxx.ww.YYYY.yy}", t);
            assert!(name.starts_with("x-"), "{name}");
        }
    }

    #[test]
    fn wildcard_and_is_dated() {
        let p = IndexPattern::parse("vnet-flow-logs-%{+xxxx.ww}").expect("ok");
        assert_eq!(p.wildcard(), "vnet-flow-logs-*");
        assert!(p.is_dated());
        let p = IndexPattern::parse("nsg-%{+YYYY}.%{+MM}").expect("ok");
        assert_eq!(p.wildcard(), "nsg-*.*");
        let p = IndexPattern::parse("flowlogs").expect("ok");
        assert_eq!(p.wildcard(), "flowlogs");
        assert!(!p.is_dated());
        // Quoted text only: a %{} but nothing that changes with time.
        let p = IndexPattern::parse("a-%{+'b'}").expect("ok");
        assert!(!p.is_dated());
        assert_eq!(p.wildcard(), "a-*");
        assert_eq!(p.to_string(), "a-%{+'b'}");
        assert_eq!(p.as_str(), "a-%{+'b'}");
    }

    #[test]
    fn unsupported_tokens_name_token_and_pattern() {
        for (pattern, token) in [
            ("idx-%{+yyyy.MM.dd.HH.mm}", "mm"),
            ("idx-%{+yyyy-Q}", "Q"),
            ("idx-%{+EEE}", "EEE"),
            ("idx-%{+MMM}", "MMM"),
            ("idx-%{+yyy}", "yyy"),
            ("idx-%{+yyyyy}", "yyyyy"),
            ("idx-%{+ddd}", "ddd"),
            ("idx-%{+ss}", "ss"),
            ("idx-%{+hh}", "hh"),
            ("idx-%{+%s}", "s"),
            ("idx-%{+D}", "D"),
        ] {
            let err = IndexPattern::parse(pattern).expect_err(pattern);
            match &err {
                IndexPatternError::UnsupportedToken {
                    pattern: p,
                    token: t,
                    ..
                } => {
                    assert_eq!(p, pattern);
                    assert_eq!(t, token);
                }
                other => panic!("{pattern}: unexpected {other:?}"),
            }
            let msg = err.to_string();
            assert!(
                msg.contains(pattern) && msg.contains(&format!("{token:?}")),
                "{msg}"
            );
        }
    }

    #[test]
    fn structural_errors() {
        use IndexPatternError as E;
        let err = |p: &str| IndexPattern::parse(p).expect_err(p);
        assert!(matches!(err("idx-%{+yyyy"), E::Unclosed { at: 4, .. }));
        assert!(matches!(
            err("idx-%{[@metadata][beat]}"),
            E::FieldReference { .. }
        ));
        assert!(matches!(err("idx-%{host}"), E::FieldReference { .. }));
        assert!(matches!(err("idx-%{+}"), E::EmptyFormat { .. }));
        assert!(matches!(err("idx-%{+yyyy'w}"), E::UnterminatedQuote { .. }));
        assert_eq!(
            err("idx-%{host}").to_string(),
            "index pattern \"idx-%{host}\": \"%{host}\" refers to an event field; only dates \
             (\"%{+FORMAT}\") are supported"
        );
    }

    #[test]
    fn index_name_rules() {
        let invalid = |p: &str| {
            matches!(
                IndexPattern::parse(p),
                Err(IndexPatternError::InvalidName { .. })
            )
        };
        for bad in [
            "",
            "Flows-%{+yyyy}",
            "flows-%{+yyyy'W'ww}",
            "flows %{+yyyy}",
            "flows,x",
            "flows#x",
            "flows:x",
            "flows/x",
            "flows\\x",
            "flows*",
            "flows?",
            "flows\"",
            "flows<",
            "flows>",
            "flows|x",
            "-flows",
            "_flows",
            "+flows",
            "%{+'-'}flows",
            ".",
            "..",
            "flows-%{+'É'}",
            "flows\tx",
        ] {
            assert!(invalid(bad), "{bad:?} should be rejected");
        }
        let long = "a".repeat(256);
        assert!(invalid(&long));
        assert!(IndexPattern::parse(&"a".repeat(255)).is_ok());
        for good in [
            ".flows-%{+yyyy}",
            "%{+yyyy}-flows",
            "flows_x-%{+yyyy}",
            "flöws",
        ] {
            assert!(
                IndexPattern::parse(good).is_ok(),
                "{good:?} should be accepted"
            );
        }
    }

    #[test]
    fn date_math_matches_chrono_across_the_supported_range() {
        // Every 9 days (plus a drifting hour) for +-2000 years around 1970.
        let step = 9 * 24 + 5;
        let first = -2000 * 8766;
        let last = 2000 * 8766;
        let mut hour: i64 = first;
        while hour < last {
            let parts = DateParts::from_epoch_hour(hour);
            let dt = Utc
                .timestamp_millis_opt(hour * MILLIS_PER_HOUR)
                .single()
                .expect("in chrono range");
            assert_eq!(
                (parts.year, parts.month, parts.day, parts.hour),
                (
                    i64::from(chrono::Datelike::year(&dt)),
                    i64::from(chrono::Datelike::month(&dt)),
                    i64::from(chrono::Datelike::day(&dt)),
                    i64::from(chrono::Timelike::hour(&dt)),
                ),
                "hour {hour}"
            );
            let iso = chrono::Datelike::iso_week(&dt);
            assert_eq!(
                (parts.week_year, parts.week),
                (i64::from(iso.year()), i64::from(iso.week())),
                "hour {hour}"
            );
            hour += step;
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        // Years 1000..=9999 so chrono's %Y/%G print exactly four digits without a sign.
        const LO: i64 = -30_610_224_000_000; // 1000-01-01T00:00:00Z
        const HI: i64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z

        proptest! {
            #[test]
            fn iso_week_matches_chrono(t in LO..=HI) {
                let dt = Utc.timestamp_millis_opt(t).single().expect("in range");
                prop_assert_eq!(
                    fmt("w-%{+xxxx.ww}", t),
                    format!("w-{}", dt.format("%G.%V"))
                );
            }

            #[test]
            fn calendar_fields_match_chrono(t in LO..=HI) {
                let dt = Utc.timestamp_millis_opt(t).single().expect("in range");
                prop_assert_eq!(
                    fmt("d-%{+yyyy.MM.dd.HH}-%{+YYYY}-%{+yy}", t),
                    format!("d-{}-{}-{}", dt.format("%Y.%m.%d.%H"), dt.format("%Y"), dt.format("%y"))
                );
            }

            #[test]
            fn parse_never_panics(s in "\\PC{0,40}") {
                let _ = IndexPattern::parse(&s);
            }

            #[test]
            fn parse_never_panics_on_pattern_like_text(s in "[-a-zA-Z%{}+'._ ]{0,30}") {
                if let Ok(p) = IndexPattern::parse(&s) {
                    let _ = (p.format(0), p.format(-1), p.wildcard());
                }
            }
        }
    }
}
