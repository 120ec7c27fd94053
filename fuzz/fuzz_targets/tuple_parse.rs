//! Tuple parsing (`parse_tuple`) against an independent reading of the documented tuple formats (NSG v1: 8 fields, NSG v2 and VNet v4: 13), because a tuple parsed into the wrong value is a wrong document that nothing else catches.
//!
//! Input: byte 0 is `V` or `v` for a VNet tuple, anything else for NSG; the rest is the
//! tuple text (UTF-8, else ignored). Seeds: `N` or `V` followed by the tuples of
//! ../shared/fixtures.
//!
//! Checked: `parse_tuple` accepts exactly what the reference below accepts, gives the same
//! error kind for the first bad field otherwise, and the same values when it accepts; an
//! accepted time lies in years 1970..=9999 (chrono agrees); the address texts are the fields
//! as written.
#![no_main]

use std::net::IpAddr;

use chrono::{DateTime, Datelike};
use flowlogd::flowlog::tuple::Counters;
use flowlogd::flowlog::{
    Decision, Direction, FlowLogKind, FlowState, FlowTuple, TupleErrorKind, parse_tuple,
};
use libfuzzer_sys::fuzz_target;

/// 9999-12-31T23:59:59.999Z, the documented upper bound.
const MAX_TIME_MS: u64 = 253_402_300_799_999;

/// "Decimal digits only (no sign, no spaces), at most u64::MAX" (tuple.rs), and at most 20 of
/// them: the parser also refuses longer runs of leading zeros (`000…0042`, which fits). No
/// writer pads numbers like that, so the reference follows the code there (a fuzzer finding,
/// judged harmless: see docs/RELIABILITY.md).
fn digits(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[derive(Debug, PartialEq, Eq)]
struct Expected<'a> {
    time_ms: i64,
    src_ip: IpAddr,
    src_ip_text: &'a str,
    dst_ip: IpAddr,
    dst_ip_text: &'a str,
    src_port: u16,
    dst_port: u16,
    protocol: u8,
    direction: Direction,
    decision: Decision,
    state: Option<FlowState>,
    encryption: Option<&'a str>,
    counters: Counters,
}

fn reference(kind: FlowLogKind, raw: &str) -> Result<Expected<'_>, TupleErrorKind> {
    let f: Vec<&str> = raw.split(',').collect();
    match (kind, f.len()) {
        (FlowLogKind::Nsg, 8 | 13) | (FlowLogKind::Vnet, 13) => {}
        (_, found) => return Err(TupleErrorKind::FieldCount { found }),
    }
    let ts = digits(f[0]).ok_or(TupleErrorKind::Timestamp)?;
    // NSG: epoch seconds; VNet: milliseconds, except values below 1e11 (seconds).
    let ms = match kind {
        FlowLogKind::Vnet if ts >= 100_000_000_000 => Some(ts),
        _ => ts.checked_mul(1000),
    };
    let time_ms = ms
        .filter(|ms| *ms <= MAX_TIME_MS)
        .ok_or(TupleErrorKind::Timestamp)?;
    let src_ip: IpAddr = f[1].parse().map_err(|_| TupleErrorKind::SourceIp)?;
    let dst_ip: IpAddr = f[2].parse().map_err(|_| TupleErrorKind::DestinationIp)?;
    let port = |t: &str| digits(t).and_then(|v| u16::try_from(v).ok());
    let src_port = port(f[3]).ok_or(TupleErrorKind::SourcePort)?;
    let dst_port = port(f[4]).ok_or(TupleErrorKind::DestinationPort)?;
    let protocol = match kind {
        FlowLogKind::Nsg => match f[5] {
            "T" => Some(6),
            "U" => Some(17),
            _ => None,
        },
        // One to three digits, at most 255.
        FlowLogKind::Vnet => Some(f[5])
            .filter(|t| (1..=3).contains(&t.len()))
            .and_then(|t| digits(t))
            .and_then(|v| u8::try_from(v).ok()),
    }
    .ok_or(TupleErrorKind::Protocol)?;
    let direction = match f[6] {
        "I" => Direction::Inbound,
        "O" => Direction::Outbound,
        _ => return Err(TupleErrorKind::Direction),
    };
    let state_of = |t: &str, deny: bool| match t {
        "B" => Some(FlowState::Begin),
        "C" => Some(FlowState::Continuing),
        "E" => Some(FlowState::End),
        "D" if deny => Some(FlowState::Deny),
        _ => None,
    };
    let (decision, state, encryption) = match kind {
        FlowLogKind::Nsg => {
            let decision = match f[7] {
                "A" => Decision::Allow,
                "D" => Decision::Deny,
                _ => return Err(TupleErrorKind::Decision),
            };
            let state = match f.len() {
                8 => None,
                _ => Some(state_of(f[8], false).ok_or(TupleErrorKind::State)?),
            };
            (decision, state, None)
        }
        FlowLogKind::Vnet => {
            let state = state_of(f[7], true).ok_or(TupleErrorKind::State)?;
            let decision = match state {
                FlowState::Deny => Decision::Deny,
                _ => Decision::Allow,
            };
            (decision, Some(state), Some(f[8]).filter(|e| !e.is_empty()))
        }
    };
    // Counters: empty (absent) or digits up to i64::MAX (the index maps them to `long`).
    let mut counters = [None; 4];
    if f.len() == 13 {
        for (i, slot) in counters.iter_mut().enumerate() {
            let text = f[9 + i];
            if !text.is_empty() {
                let value = digits(text)
                    .filter(|v| i64::try_from(*v).is_ok())
                    .ok_or(TupleErrorKind::Counter { field: 9 + i })?;
                *slot = Some(value);
            }
        }
    }
    Ok(Expected {
        time_ms: time_ms as i64,
        src_ip,
        src_ip_text: f[1],
        dst_ip,
        dst_ip_text: f[2],
        src_port,
        dst_port,
        protocol,
        direction,
        decision,
        state,
        encryption,
        counters: Counters {
            packets_src_to_dst: counters[0],
            bytes_src_to_dst: counters[1],
            packets_dst_to_src: counters[2],
            bytes_dst_to_src: counters[3],
        },
    })
}

fn seen<'a>(t: &FlowTuple<'a>) -> Expected<'a> {
    Expected {
        time_ms: t.time_ms,
        src_ip: t.src_ip,
        src_ip_text: t.src_ip_text,
        dst_ip: t.dst_ip,
        dst_ip_text: t.dst_ip_text,
        src_port: t.src_port,
        dst_port: t.dst_port,
        protocol: t.protocol,
        direction: t.direction,
        decision: t.decision,
        state: t.state,
        encryption: t.encryption,
        counters: t.counters,
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&selector, rest)) = input.split_first() else {
        return;
    };
    let Ok(raw) = std::str::from_utf8(rest) else {
        return;
    };
    let kind = match selector {
        b'V' | b'v' => FlowLogKind::Vnet,
        _ => FlowLogKind::Nsg,
    };
    let expected = reference(kind, raw);
    match parse_tuple(kind, raw) {
        Ok(tuple) => {
            assert_eq!(tuple.raw, raw);
            let time = DateTime::from_timestamp_millis(tuple.time_ms)
                .expect("an accepted time is a valid date");
            assert!((1970..=9999).contains(&time.year()), "{time}");
            assert_eq!(Ok(seen(&tuple)), expected, "{kind:?} {raw:?}");
        }
        Err(error) => {
            assert_eq!(error.tuple, raw);
            assert_eq!(Err(error.kind), expected.map(|_| ()), "{kind:?} {raw:?}");
        }
    }
});
