//! Parsing of one flow tuple string (NSG v1: 8 fields, NSG v2 and VNet: 13 fields) into typed values.
use std::fmt;
use std::net::IpAddr;

use super::kind::FlowLogKind;
use super::protocol::{iana_protocol, nsg_protocol, nsg_protocol_letter};

/// Direction of the flow as seen by the NIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// Whether the flow was let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
        }
    }
}

/// Flow state of NSG v2 and VNet tuples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowState {
    Begin,
    Continuing,
    End,
    /// VNet only: the flow was denied (VNet tuples have no separate decision field).
    Deny,
}

impl FlowState {
    pub fn as_str(self) -> &'static str {
        match self {
            FlowState::Begin => "begin",
            FlowState::Continuing => "continuing",
            FlowState::End => "end",
            FlowState::Deny => "deny",
        }
    }
}

/// Traffic counters of one tuple; each is absent when its field is empty (`B` rows, denied flows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    pub packets_src_to_dst: Option<u64>,
    pub bytes_src_to_dst: Option<u64>,
    pub packets_dst_to_src: Option<u64>,
    pub bytes_dst_to_src: Option<u64>,
}

impl Counters {
    pub fn is_empty(&self) -> bool {
        self.packets_src_to_dst.is_none()
            && self.bytes_src_to_dst.is_none()
            && self.packets_dst_to_src.is_none()
            && self.bytes_dst_to_src.is_none()
    }
}

/// The values of a VNet tuple's encryption field that Azure documents, the most common first.
pub const DOCUMENTED_ENCRYPTION: [&str; 8] = [
    "NX",
    "X",
    "NX_HW_NOT_SUPPORTED",
    "NX_SW_NOT_READY",
    "NX_NOT_ACCEPTED",
    "NX_NOT_SUPPORTED",
    "NX_LOCAL_DST",
    "NX_FALLBACK",
];

/// One parsed tuple. Address texts are kept as written so documents can copy them without reformatting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowTuple<'a> {
    /// The tuple string as found in the record.
    pub raw: &'a str,
    /// Tuple time in epoch milliseconds (NSG seconds ×1000; VNet values below 1e11 taken as seconds).
    pub time_ms: i64,
    pub src_ip: IpAddr,
    pub src_ip_text: &'a str,
    pub dst_ip: IpAddr,
    pub dst_ip_text: &'a str,
    pub src_port: u16,
    pub dst_port: u16,
    /// IANA protocol number (NSG `T` → 6, `U` → 17).
    pub protocol: u8,
    pub direction: Direction,
    pub decision: Decision,
    /// Absent for NSG v1.
    pub state: Option<FlowState>,
    /// VNet only: one of [`DOCUMENTED_ENCRYPTION`] in Azure's data, kept as written whatever it is.
    pub encryption: Option<&'a str>,
    pub counters: Counters,
}

/// What was wrong with a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TupleErrorKind {
    FieldCount {
        found: usize,
    },
    Timestamp,
    SourceIp,
    DestinationIp,
    SourcePort,
    DestinationPort,
    Protocol,
    Direction,
    Decision,
    State,
    Counter {
        field: usize,
    },
    /// The `flowTuples` slot held another JSON value (`found` names its type).
    NotAString {
        found: &'static str,
    },
    /// The tuple string was not valid UTF-8 (the text shown is a lossy copy).
    InvalidUtf8,
    /// The tuple string held a raw control character, which JSON forbids (shown escaped).
    ControlCharacter,
}

impl fmt::Display for TupleErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TupleErrorKind::FieldCount { found } => {
                write!(f, "{found} fields (expected 8 or 13)")
            }
            TupleErrorKind::Timestamp => f.write_str("bad timestamp"),
            TupleErrorKind::SourceIp => f.write_str("bad source IP"),
            TupleErrorKind::DestinationIp => f.write_str("bad destination IP"),
            TupleErrorKind::SourcePort => f.write_str("bad source port"),
            TupleErrorKind::DestinationPort => f.write_str("bad destination port"),
            TupleErrorKind::Protocol => f.write_str("bad protocol"),
            TupleErrorKind::Direction => f.write_str("bad direction"),
            TupleErrorKind::Decision => f.write_str("bad decision"),
            TupleErrorKind::State => f.write_str("bad flow state"),
            TupleErrorKind::Counter { field } => write!(
                f,
                "bad counter in field {field} (expected digits, at most {})",
                i64::MAX
            ),
            TupleErrorKind::NotAString { found } => write!(f, "{found} instead of a string"),
            TupleErrorKind::InvalidUtf8 => f.write_str("invalid UTF-8"),
            TupleErrorKind::ControlCharacter => f.write_str("a raw control character"),
        }
    }
}

/// A tuple that could not be parsed: the reason and the tuple text, for counting and dead-lettering.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} in tuple {tuple:?}")]
pub struct TupleError {
    pub kind: TupleErrorKind,
    pub tuple: String,
}

/// Largest accepted time: 9999-12-31T23:59:59.999Z, so formatting never overflows four year digits.
const MAX_TIME_MS: u64 = 253_402_300_799_999;
/// VNet timestamps below this are epoch seconds (one documentation sample uses seconds).
const VNET_SECONDS_BELOW: u64 = 100_000_000_000;

/// Parses one tuple of a record of `kind`. NSG tuples are read by field count (8 = v1, 13 = v2),
/// so a record with an unexpected `Version` still decodes when its tuples have a known shape.
pub fn parse_tuple(kind: FlowLogKind, raw: &str) -> Result<FlowTuple<'_>, TupleError> {
    if let Some(tuple) = parse_in_one_pass(kind, raw) {
        return Ok(tuple);
    }
    parse_fields(kind, raw).map_err(|kind| TupleError {
        kind,
        tuple: raw.to_owned(),
    })
}

/// The usual tuple read in one pass: each field parsed where it lies, the comma after it
/// checked, no field table and no second walk over the bytes. It accepts a subset of what
/// [`parse_fields`] accepts (canonical numbers, dotted-quad or std-parsed addresses) and gives
/// the same tuple; anything else returns `None` and [`parse_fields`] decides, with the precise
/// reason when the tuple is bad. Why: splitting into a field table, then parsing each field
/// (the IPv4 addresses through `std`'s general parser) was ~20% of the daemon's CPU end to end
/// (`perf record` of `scripts/bench-e2e.sh`, docs/PERFORMANCE.md).
fn parse_in_one_pass(kind: FlowLogKind, raw: &str) -> Option<FlowTuple<'_>> {
    read_in_one_pass::<false>(kind, raw).map(|(tuple, _)| tuple)
}

/// The tuple of the JSON string that `json` starts inside, just past its opening quote (the
/// rest of a `flowTuples` array), read as [`parse_in_one_pass`] reads a tuple's text, and where
/// its closing quote is. `None` for anything that reader leaves to the general parser, and for
/// a string holding an escape (its text is not its bytes): the caller then finds the string's
/// end and decodes it first. Why: finding each string's end before parsing it was a second
/// walk over every tuple (~4% of `flowlogd decode`'s time).
pub(crate) fn parse_json_string_in_one_pass(
    kind: FlowLogKind,
    json: &str,
) -> Option<(FlowTuple<'_>, usize)> {
    read_in_one_pass::<true>(kind, json)
}

/// [`parse_in_one_pass`] (`IN_JSON` false: the tuple is all of `text`) and
/// [`parse_json_string_in_one_pass`] (`IN_JSON` true: it ends at a `"`); returns the tuple and
/// where it ends in `text`.
#[inline(always)]
fn read_in_one_pass<const IN_JSON: bool>(
    kind: FlowLogKind,
    text: &str,
) -> Option<(FlowTuple<'_>, usize)> {
    let mut at = OnePass::<IN_JSON> {
        text,
        bytes: text.as_bytes(),
        pos: 0,
    };
    // At most 15 digits (MAX_TIME_MS has 15), so no overflow check is needed.
    let time_ms = tuple_time_ms(kind, at.digits(15)?)?;
    at.comma()?;
    let (src_ip, src_ip_text) = at.address()?;
    at.comma()?;
    let (dst_ip, dst_ip_text) = at.address()?;
    at.comma()?;
    let src_port = at.port()?;
    at.comma()?;
    let dst_port = at.port()?;
    at.comma()?;
    let protocol = match kind {
        FlowLogKind::Nsg => nsg_protocol_letter(at.letter()?)?,
        // 1-3 digits, at most 255: what `iana_protocol` accepts.
        FlowLogKind::Vnet => u8::try_from(at.digits(3)?).ok()?,
    };
    at.comma()?;
    let direction = direction_of(at.letter()?)?;
    at.comma()?;
    // NSG v1 ends after the decision: eight fields, no state and no counters.
    let (decision, state, encryption, counted) = match kind {
        FlowLogKind::Nsg => {
            let decision = nsg_decision_of(at.letter()?)?;
            if at.at_end() {
                (decision, None, None, false)
            } else {
                at.comma()?;
                (decision, Some(nsg_state_of(at.letter()?)?), None, true)
            }
        }
        FlowLogKind::Vnet => {
            let state = vnet_state_of(at.letter()?)?;
            at.comma()?;
            let encryption = Some(at.text()?).filter(|e| !e.is_empty());
            (vnet_decision(state), Some(state), encryption, true)
        }
    };
    let counters = if counted {
        at.comma()?;
        let packets_src_to_dst = at.counter()?;
        at.comma()?;
        let bytes_src_to_dst = at.counter()?;
        at.comma()?;
        let packets_dst_to_src = at.counter()?;
        at.comma()?;
        Counters {
            packets_src_to_dst,
            bytes_src_to_dst,
            packets_dst_to_src,
            bytes_dst_to_src: at.counter()?,
        }
    } else {
        Counters::default()
    };
    if !at.at_end() {
        return None;
    }
    let raw = text.get(..at.pos)?;
    let tuple = FlowTuple {
        raw,
        time_ms: time_ms as i64,
        src_ip,
        src_ip_text,
        dst_ip,
        dst_ip_text,
        src_port,
        dst_port,
        protocol,
        direction,
        decision,
        state,
        encryption,
        counters,
    };
    Some((tuple, at.pos))
}

/// The tuple time in epoch ms of a timestamp field's value: NSG seconds; VNet milliseconds, or
/// seconds below [`VNET_SECONDS_BELOW`]. `None` past [`MAX_TIME_MS`].
fn tuple_time_ms(kind: FlowLogKind, ts: u64) -> Option<u64> {
    match kind {
        FlowLogKind::Vnet if ts >= VNET_SECONDS_BELOW => Some(ts),
        _ => ts.checked_mul(1000),
    }
    .filter(|ms| *ms <= MAX_TIME_MS)
}

// The one-letter fields as the formats define them, for both readers.

/// `I` inbound, `O` outbound.
fn direction_of(letter: u8) -> Option<Direction> {
    match letter {
        b'I' => Some(Direction::Inbound),
        b'O' => Some(Direction::Outbound),
        _ => None,
    }
}

/// NSG: `A` allowed, `D` denied.
fn nsg_decision_of(letter: u8) -> Option<Decision> {
    match letter {
        b'A' => Some(Decision::Allow),
        b'D' => Some(Decision::Deny),
        _ => None,
    }
}

/// NSG v2: `B`egin, `C`ontinuing, `E`nd.
fn nsg_state_of(letter: u8) -> Option<FlowState> {
    match letter {
        b'B' => Some(FlowState::Begin),
        b'C' => Some(FlowState::Continuing),
        b'E' => Some(FlowState::End),
        _ => None,
    }
}

/// VNet: NSG v2's states and `D`eny.
fn vnet_state_of(letter: u8) -> Option<FlowState> {
    match letter {
        b'D' => Some(FlowState::Deny),
        other => nsg_state_of(other),
    }
}

/// VNet tuples have no decision field: a flow is denied exactly when its state says so.
fn vnet_decision(state: FlowState) -> Decision {
    if state == FlowState::Deny {
        Decision::Deny
    } else {
        Decision::Allow
    }
}

/// The letter of a one-letter field.
fn one_letter(field: &str) -> Option<u8> {
    match field.as_bytes() {
        [letter] => Some(*letter),
        _ => None,
    }
}

/// 10^0 to 10^8.
const POWERS_OF_TEN: [u64; 9] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
];

/// How many of the eight bytes of `values` (each a byte of text XOR `b'0'`, the first byte
/// lowest) are digits before the first one that is not: a digit's value is 0-9, and adding
/// 0x76 sets the top bit of exactly the bytes above 9 (a byte that already has it is not a
/// digit either). Carries only run from a non-digit upwards, past the byte counted.
fn leading_digits(values: u64) -> usize {
    let not_digits = (values.wrapping_add(0x7676_7676_7676_7676) | values) & 0x8080_8080_8080_8080;
    (not_digits.trailing_zeros() / 8) as usize
}

/// The number written by eight digit values (first digit in the lowest byte; a shorter
/// number is shifted up so that zeros lead), by pairing digits, then pairs, then quads.
fn eight_digits(values: u64) -> u64 {
    let pairs = values.wrapping_mul(10).wrapping_add(values >> 8);
    let low = pairs & 0x0000_00ff_0000_00ff;
    let high = (pairs >> 16) & 0x0000_00ff_0000_00ff;
    low.wrapping_mul(100 + (1_000_000 << 32))
        .wrapping_add(high.wrapping_mul(1 + (10_000 << 32)))
        >> 32
}

/// Eight bytes of text as one word, first byte lowest, each XOR `b'0'`: a digit becomes its
/// value, any other byte a value above 9 (the form [`leading_digits`], [`eight_digits`] and
/// [`non_digits`] take).
fn digit_values(text: &[u8; 8]) -> u64 {
    u64::from_le_bytes(*text) ^ 0x3030_3030_3030_3030
}

/// One bit per byte of `values` (each a byte of text XOR `b'0'`, the first byte lowest), set
/// for the bytes that are not digits: unlike [`leading_digits`], exact for every byte (the
/// addition cannot carry out of a byte once its top bit is masked off).
fn non_digits(values: u64) -> u32 {
    let tops = (((values & 0x7f7f_7f7f_7f7f_7f7f).wrapping_add(0x7676_7676_7676_7676)) | values)
        & 0x8080_8080_8080_8080;
    // The eight top bits gathered into one byte, the first byte's lowest.
    ((tops >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56) as u32
}

/// The dotted quad at the start of `window` when its text and the comma after it lie in these
/// 16 bytes: its four octets and its length. Each octet has one to three digits, no leading
/// zero and a value of at most 255, with dots between them: what `Ipv4Addr`'s parser accepts.
/// `None` for anything else (an IPv6 address, a malformed quad, one followed by anything but
/// a comma), which [`OnePass::address`] then reads byte by byte. Why: the positions of the
/// three dots and the comma come from two words at once, instead of a read and its checks per
/// octet and per separator (two addresses a tuple).
fn dotted_quad(window: &[u8; 16]) -> Option<([u8; 4], usize)> {
    let low = digit_values(window.first_chunk::<8>()?);
    let high = digit_values(window.last_chunk::<8>()?);
    let mut separators = non_digits(low) | non_digits(high) << 8;
    let mut octets = [0u8; 4];
    let mut start = 0;
    for (i, octet) in octets.iter_mut().enumerate() {
        let end = separators.trailing_zeros() as usize;
        separators &= separators.wrapping_sub(1);
        let expected = if i < 3 { b'.' } else { b',' };
        if *window.get(end)? != expected {
            return None;
        }
        // The octet's value for each length it may have, picked by its length without a
        // branch (lengths vary address by address). Bytes past the octet are never picked.
        let [a, b, c] = window
            .get(start..)?
            .first_chunk::<3>()?
            .map(|d| u32::from(d.wrapping_sub(b'0')));
        let values = [a, a * 10 + b, a * 100 + b * 10 + c];
        let len = end - start;
        let value = *values.get(len.wrapping_sub(1))?;
        // A leading zero only alone.
        if value > 255 || (len > 1 && a == 0) {
            return None;
        }
        *octet = value as u8;
        start = end + 1;
    }
    Some((octets, start - 1))
}

/// A position in a tuple for [`read_in_one_pass`]; every reader stops before the next comma.
/// `IN_JSON`: the tuple is a JSON string's content and ends at its closing quote, else at the
/// end of the bytes.
struct OnePass<'a, const IN_JSON: bool> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a, const IN_JSON: bool> OnePass<'a, IN_JSON> {
    #[inline(always)]
    fn at_end(&self) -> bool {
        if IN_JSON {
            self.bytes.get(self.pos) == Some(&b'"')
        } else {
            self.pos == self.bytes.len()
        }
    }

    /// At the comma after a field, or at the tuple's end.
    #[inline(always)]
    fn at_field_end(&self) -> bool {
        match self.bytes.get(self.pos) {
            Some(b',') => true,
            Some(b'"') => IN_JSON,
            None => !IN_JSON,
            Some(_) => false,
        }
    }

    #[inline(always)]
    fn comma(&mut self) -> Option<()> {
        (self.bytes.get(self.pos) == Some(&b',')).then(|| self.pos += 1)
    }

    /// The eight bytes at `at`, each digit turned into its value (`b'0'` XORed away).
    #[inline(always)]
    fn word_at(&self, at: usize) -> Option<u64> {
        let word = self.bytes.get(at..)?.first_chunk::<8>()?;
        Some(digit_values(word))
    }

    /// One to `max_len` decimal digits (`max_len` ≤ 18, so the value cannot overflow).
    #[inline(always)]
    fn digits(&mut self, max_len: usize) -> Option<u64> {
        let start = self.pos;
        // Eight bytes at a time while eight are left: the digits of a field counted and
        // converted without a branch per byte (fields of 1-5 digits made the byte loop's
        // exit branch mispredict on most fields). The tail of the tuple goes byte by byte.
        let Some(mut values) = self.word_at(start) else {
            return self.digits_one_by_one(start, 0, max_len);
        };
        let count = leading_digits(values);
        if count < 8 {
            // Every field but the timestamp and long counters: one word holds the number,
            // which needs none of the longer path's scaling and checks (154 of 4,389
            // instructions a VNet tuple, cachegrind of `flowlogd decode`).
            if count == 0 || count > max_len {
                return None;
            }
            self.pos = start + count;
            return Some(eight_digits(values << (8 * (8 - count))));
        }
        let mut value = 0u64;
        loop {
            let count = leading_digits(values);
            if count > 0 {
                value = value
                    .wrapping_mul(POWERS_OF_TEN[count])
                    .wrapping_add(eight_digits(values << (8 * (8 - count))));
                self.pos += count;
            }
            if self.pos - start > max_len {
                return None;
            }
            if count < 8 {
                return Some(value);
            }
            match self.word_at(self.pos) {
                Some(next) => values = next,
                None => return self.digits_one_by_one(start, value, max_len),
            }
        }
    }

    /// [`OnePass::digits`] byte by byte from the current position, for the last bytes of the
    /// text: the field started at `start` and its digits so far make `value`.
    fn digits_one_by_one(&mut self, start: usize, mut value: u64, max_len: usize) -> Option<u64> {
        while let Some(&b) = self.bytes.get(self.pos) {
            let digit = b.wrapping_sub(b'0');
            if digit > 9 {
                break;
            }
            value = value * 10 + u64::from(digit);
            self.pos += 1;
            if self.pos - start > max_len {
                return None;
            }
        }
        (self.pos > start).then_some(value)
    }

    #[inline(always)]
    fn port(&mut self) -> Option<u16> {
        u16::try_from(self.digits(5)?).ok()
    }

    /// Empty (absent), or up to 18 digits: always within the `long` range `parse_counter`
    /// checks; longer counters go the general way.
    #[inline(always)]
    fn counter(&mut self) -> Option<Option<u64>> {
        if self.at_field_end() {
            return Some(None);
        }
        self.digits(18).map(Some)
    }

    /// A one-letter field.
    #[inline(always)]
    fn letter(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    /// The text up to the next comma or the tuple's end; `None` in a JSON string holding an
    /// escape there, or not closed.
    #[inline(always)]
    fn text(&mut self) -> Option<&'a str> {
        let rest = self.bytes.get(self.pos..)?;
        let len = if IN_JSON {
            let len = memchr::memchr3(b',', b'"', b'\\', rest)?;
            if rest[len] == b'\\' {
                return None;
            }
            len
        } else {
            memchr::memchr(b',', rest).unwrap_or(rest.len())
        };
        let start = self.pos;
        self.pos += len;
        // The field ends at an ASCII comma or quote, or at the end: a character boundary.
        self.text.get(start..self.pos)
    }

    /// A dotted quad (what `Ipv4Addr`'s parser accepts: four octets of one to three digits, at
    /// most 255, no leading zero), from two words by [`dotted_quad`] when 16 bytes are left,
    /// else, or when that one declines, digit by digit; any other address (IPv6) is handed to
    /// `std`'s parser whole.
    #[inline(always)]
    fn address(&mut self) -> Option<(IpAddr, &'a str)> {
        let start = self.pos;
        if let Some((octets, len)) = self
            .bytes
            .get(start..)
            .and_then(|rest| rest.first_chunk::<16>())
            .and_then(dotted_quad)
        {
            self.pos = start + len;
            return Some((IpAddr::from(octets), self.text.get(start..self.pos)?));
        }
        let mut octets = [0u8; 4];
        let mut dotted = true;
        for (i, octet) in octets.iter_mut().enumerate() {
            let first = self.pos;
            let value = match self.digits(3) {
                Some(v) => v,
                None => {
                    dotted = false;
                    break;
                }
            };
            let len = self.pos - first;
            if value > 255 || (len > 1 && self.bytes[first] == b'0') {
                return None;
            }
            *octet = value as u8;
            if i < 3 {
                if self.bytes.get(self.pos) != Some(&b'.') {
                    dotted = false;
                    break;
                }
                self.pos += 1;
            }
        }
        if dotted && self.at_field_end() {
            let text = self.text.get(start..self.pos)?;
            return Some((IpAddr::from(octets), text));
        }
        self.pos = start;
        let text = self.text()?;
        if text.contains('.') && !text.contains(':') {
            // A malformed dotted quad: the general way names it.
            return None;
        }
        Some((text.parse().ok()?, text))
    }
}

fn parse_fields(kind: FlowLogKind, raw: &str) -> Result<FlowTuple<'_>, TupleErrorKind> {
    let mut fields = [""; 13];
    let mut count = 0usize;
    let mut start = 0usize;
    // memchr's vectorised search finds the 12 commas of a ~60-byte tuple in a few loads, where
    // a byte loop (or `str::split`'s searcher) tests every byte. Slicing at ',' (ASCII) always
    // lands on a character boundary.
    for end in memchr::memchr_iter(b',', raw.as_bytes()).chain(std::iter::once(raw.len())) {
        if count == fields.len() {
            return Err(TupleErrorKind::FieldCount {
                found: raw.split(',').count(),
            });
        }
        fields[count] = &raw[start..end];
        count += 1;
        start = end + 1;
    }
    match (kind, count) {
        (FlowLogKind::Nsg, 8) | (FlowLogKind::Nsg, 13) | (FlowLogKind::Vnet, 13) => {}
        _ => return Err(TupleErrorKind::FieldCount { found: count }),
    }

    let time_ms = parse_u64(fields[0])
        .and_then(|ts| tuple_time_ms(kind, ts))
        .ok_or(TupleErrorKind::Timestamp)?;

    let src_ip: IpAddr = fields[1].parse().map_err(|_| TupleErrorKind::SourceIp)?;
    let dst_ip: IpAddr = fields[2]
        .parse()
        .map_err(|_| TupleErrorKind::DestinationIp)?;
    let src_port = parse_port(fields[3]).ok_or(TupleErrorKind::SourcePort)?;
    let dst_port = parse_port(fields[4]).ok_or(TupleErrorKind::DestinationPort)?;
    let protocol = parse_protocol(kind, fields[5]).ok_or(TupleErrorKind::Protocol)?;
    let direction = one_letter(fields[6])
        .and_then(direction_of)
        .ok_or(TupleErrorKind::Direction)?;

    let (decision, state, encryption, counters_at) = match kind {
        FlowLogKind::Nsg => {
            let decision = one_letter(fields[7])
                .and_then(nsg_decision_of)
                .ok_or(TupleErrorKind::Decision)?;
            if count == 8 {
                (decision, None, None, None)
            } else {
                let state = one_letter(fields[8])
                    .and_then(nsg_state_of)
                    .ok_or(TupleErrorKind::State)?;
                (decision, Some(state), None, Some(9))
            }
        }
        FlowLogKind::Vnet => {
            let state = one_letter(fields[7])
                .and_then(vnet_state_of)
                .ok_or(TupleErrorKind::State)?;
            let encryption = Some(fields[8]).filter(|e| !e.is_empty());
            (vnet_decision(state), Some(state), encryption, Some(9))
        }
    };

    let counters = match counters_at {
        None => Counters::default(),
        Some(at) => Counters {
            packets_src_to_dst: parse_counter(fields[at], at)?,
            bytes_src_to_dst: parse_counter(fields[at + 1], at + 1)?,
            packets_dst_to_src: parse_counter(fields[at + 2], at + 2)?,
            bytes_dst_to_src: parse_counter(fields[at + 3], at + 3)?,
        },
    };

    Ok(FlowTuple {
        raw,
        time_ms: time_ms as i64,
        src_ip,
        src_ip_text: fields[1],
        dst_ip,
        dst_ip_text: fields[2],
        src_port,
        dst_port,
        protocol,
        direction,
        decision,
        state,
        encryption,
        counters,
    })
}

/// Decimal digits only (no sign, no spaces), at most `u64::MAX`.
fn parse_u64(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 20 {
        return None;
    }
    let mut value: u64 = 0;
    for b in text.bytes() {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(digit))?;
    }
    Some(value)
}

fn parse_port(text: &str) -> Option<u16> {
    parse_u64(text).and_then(|v| u16::try_from(v).ok())
}

/// A packet or byte counter: empty (absent), or decimal digits up to `i64::MAX`. Counters are
/// mapped `long` in the index, which refuses anything larger document by document; no real flow
/// carries 9.2 EB, so a larger value is corrupt input and reported here.
fn parse_counter(text: &str, field: usize) -> Result<Option<u64>, TupleErrorKind> {
    if text.is_empty() {
        return Ok(None);
    }
    parse_u64(text)
        .filter(|&v| i64::try_from(v).is_ok())
        .map(Some)
        .ok_or(TupleErrorKind::Counter { field })
}

/// NSG tuples name the protocol by letter (`T`, `U`); VNet tuples by IANA number.
fn parse_protocol(kind: FlowLogKind, text: &str) -> Option<u8> {
    match kind {
        FlowLogKind::Nsg => nsg_protocol(text).ok(),
        FlowLogKind::Vnet => iana_protocol(text).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flowlog::{ParsedSlot, TupleArray, TupleSlot};
    use proptest::prelude::*;

    #[test]
    fn nsg_v1_tuple() {
        let t = parse_tuple(
            FlowLogKind::Nsg,
            "1487282421,42.119.146.95,10.1.0.4,51529,5358,T,I,D",
        )
        .unwrap();
        assert_eq!(t.time_ms, 1_487_282_421_000);
        assert_eq!(t.src_ip_text, "42.119.146.95");
        assert_eq!(t.dst_port, 5358);
        assert_eq!(t.protocol, 6);
        assert_eq!(t.direction, Direction::Inbound);
        assert_eq!(t.decision, Decision::Deny);
        assert_eq!(t.state, None);
        assert!(t.counters.is_empty());
    }

    #[test]
    fn nsg_v2_begin_row_has_no_counters_and_end_row_has_them() {
        let b = parse_tuple(
            FlowLogKind::Nsg,
            "1542110402,192.0.2.190,10.5.16.4,28746,443,U,I,D,B,,,,",
        )
        .unwrap();
        assert_eq!(b.protocol, 17);
        assert_eq!(b.state, Some(FlowState::Begin));
        assert!(b.counters.is_empty());
        let e = parse_tuple(
            FlowLogKind::Nsg,
            "1542110406,10.5.16.4,198.51.100.225,59929,443,T,O,A,E,15,8489,12,7054",
        )
        .unwrap();
        assert_eq!(e.decision, Decision::Allow);
        assert_eq!(e.state, Some(FlowState::End));
        assert_eq!(
            e.counters,
            Counters {
                packets_src_to_dst: Some(15),
                bytes_src_to_dst: Some(8489),
                packets_dst_to_src: Some(12),
                bytes_dst_to_src: Some(7054)
            }
        );
    }

    #[test]
    fn vnet_tuple_ms_timestamp_deny_state_and_encryption() {
        let t = parse_tuple(
            FlowLogKind::Vnet,
            "1663145998065,101.33.218.153,10.0.0.6,55188,22,6,I,D,NX,0,0,0,0",
        )
        .unwrap();
        assert_eq!(t.time_ms, 1_663_145_998_065);
        assert_eq!(t.state, Some(FlowState::Deny));
        assert_eq!(t.decision, Decision::Deny);
        assert_eq!(t.encryption, Some("NX"));
        assert_eq!(t.counters.packets_src_to_dst, Some(0));
    }

    #[test]
    fn vnet_seconds_timestamp_is_scaled() {
        let t = parse_tuple(
            FlowLogKind::Vnet,
            "1663146003,10.0.0.6,52.239.184.180,23956,443,6,O,B,X,,,,",
        )
        .unwrap();
        assert_eq!(t.time_ms, 1_663_146_003_000);
        assert_eq!(t.encryption, Some("X"));
        assert!(t.counters.is_empty());
    }

    #[test]
    fn ipv6_addresses() {
        let t = parse_tuple(
            FlowLogKind::Vnet,
            "1663146003599,fd00::1,2001:db8::5,1,2,17,O,C,NX,1,2,3,4",
        )
        .unwrap();
        assert!(t.src_ip.is_ipv6());
        assert_eq!(t.dst_ip_text, "2001:db8::5");
    }

    #[test]
    fn malformed_tuples_name_the_reason_and_keep_the_text() {
        let cases: &[(FlowLogKind, &str, TupleErrorKind)] = &[
            (
                FlowLogKind::Nsg,
                "1,2,3",
                TupleErrorKind::FieldCount { found: 3 },
            ),
            (
                FlowLogKind::Vnet,
                "1487282421,1.1.1.1,10.1.0.4,1,2,T,I,D",
                TupleErrorKind::FieldCount { found: 8 },
            ),
            (
                FlowLogKind::Nsg,
                "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15",
                TupleErrorKind::FieldCount { found: 15 },
            ),
            (
                FlowLogKind::Nsg,
                "x,1.1.1.1,10.1.0.4,1,2,T,I,D",
                TupleErrorKind::Timestamp,
            ),
            (
                FlowLogKind::Nsg,
                "-5,1.1.1.1,10.1.0.4,1,2,T,I,D",
                TupleErrorKind::Timestamp,
            ),
            (
                FlowLogKind::Nsg,
                "99999999999999999999,1.1.1.1,10.1.0.4,1,2,T,I,D",
                TupleErrorKind::Timestamp,
            ),
            (
                FlowLogKind::Nsg,
                "999999999999999,1.1.1.1,10.1.0.4,1,2,T,I,D",
                TupleErrorKind::Timestamp,
            ),
            (
                FlowLogKind::Nsg,
                "1,1.1.1.300,10.1.0.4,1,2,T,I,D",
                TupleErrorKind::SourceIp,
            ),
            (
                FlowLogKind::Nsg,
                "1,1.1.1.1,,1,2,T,I,D",
                TupleErrorKind::DestinationIp,
            ),
            (
                FlowLogKind::Nsg,
                "1,1.1.1.1,10.1.0.4,65536,2,T,I,D",
                TupleErrorKind::SourcePort,
            ),
            (
                FlowLogKind::Nsg,
                "1,1.1.1.1,10.1.0.4,1, 2,T,I,D",
                TupleErrorKind::DestinationPort,
            ),
            (
                FlowLogKind::Nsg,
                "1,1.1.1.1,10.1.0.4,1,2,X,I,D",
                TupleErrorKind::Protocol,
            ),
            (
                FlowLogKind::Vnet,
                "1,1.1.1.1,10.1.0.4,1,2,T,I,B,NX,,,,",
                TupleErrorKind::Protocol,
            ),
            (
                FlowLogKind::Vnet,
                "1,1.1.1.1,10.1.0.4,1,2,256,I,B,NX,,,,",
                TupleErrorKind::Protocol,
            ),
            (
                FlowLogKind::Nsg,
                "1,1.1.1.1,10.1.0.4,1,2,T,X,D",
                TupleErrorKind::Direction,
            ),
            (
                FlowLogKind::Nsg,
                "1,1.1.1.1,10.1.0.4,1,2,T,I,Q",
                TupleErrorKind::Decision,
            ),
            (
                FlowLogKind::Nsg,
                "1,1.1.1.1,10.1.0.4,1,2,T,I,A,D,,,,",
                TupleErrorKind::State,
            ),
            (
                FlowLogKind::Vnet,
                "1,1.1.1.1,10.1.0.4,1,2,6,I,Z,NX,,,,",
                TupleErrorKind::State,
            ),
            (
                FlowLogKind::Vnet,
                "1,1.1.1.1,10.1.0.4,1,2,6,I,E,NX,1,abc,1,1",
                TupleErrorKind::Counter { field: 10 },
            ),
            (
                FlowLogKind::Vnet,
                "1,1.1.1.1,10.1.0.4,1,2,6,I,E,NX,1,1,1,18446744073709551616",
                TupleErrorKind::Counter { field: 12 },
            ),
            // Near misses of the one-pass reader (each field just out of its range).
            (
                FlowLogKind::Vnet,
                "1,01.1.1.1,10.1.0.4,1,2,6,I,E,NX,1,2,3,4",
                TupleErrorKind::SourceIp,
            ),
            (
                FlowLogKind::Vnet,
                "1,1.1.1.256,10.1.0.4,1,2,6,I,E,NX,1,2,3,4",
                TupleErrorKind::SourceIp,
            ),
            (
                FlowLogKind::Vnet,
                "1,1.1.1.1,10.1.0,1,2,6,I,E,NX,1,2,3,4",
                TupleErrorKind::DestinationIp,
            ),
            (
                FlowLogKind::Vnet,
                "1,1.1.1.1,10.1.0.4,65536,2,6,I,E,NX,1,2,3,4",
                TupleErrorKind::SourcePort,
            ),
            (
                FlowLogKind::Vnet,
                "1,1.1.1.1,10.1.0.4,1,2,256,I,E,NX,1,2,3,4",
                TupleErrorKind::Protocol,
            ),
            (
                FlowLogKind::Vnet,
                "1,1.1.1.1,10.1.0.4,1,2,6,I,E,NX,1,2,3,4,5",
                TupleErrorKind::FieldCount { found: 14 },
            ),
            (
                FlowLogKind::Nsg,
                "1,1.1.1.1,10.1.0.4,1,2,T,I,A,E,1,2,3",
                TupleErrorKind::FieldCount { found: 12 },
            ),
            (
                FlowLogKind::Nsg,
                "1,1.1.1.1,10.1.0.4,1,2,TCP,I,A",
                TupleErrorKind::Protocol,
            ),
        ];
        for (kind, text, expected) in cases {
            // The one-pass reader never accepts a bad tuple: it leaves it to the general parser.
            assert_eq!(parse_in_one_pass(*kind, text), None, "tuple {text}");
            let err = parse_tuple(*kind, text).unwrap_err();
            assert_eq!(&err.kind, expected, "tuple {text}");
            assert_eq!(err.tuple, *text);
            assert!(err.to_string().contains(text));
        }
    }

    #[test]
    fn counters_up_to_the_long_range_are_kept_and_larger_ones_refused() {
        let t = parse_tuple(
            FlowLogKind::Vnet,
            "1,1.1.1.1,10.1.0.4,1,2,6,I,E,NX,9223372036854775807,0,0,0",
        )
        .unwrap();
        assert_eq!(t.counters.packets_src_to_dst, Some(i64::MAX as u64));
        for huge in ["9223372036854775808", "18446744073709551615"] {
            let err = parse_tuple(
                FlowLogKind::Vnet,
                &format!("1,1.1.1.1,10.1.0.4,1,2,6,I,E,NX,{huge},0,0,0"),
            )
            .unwrap_err();
            assert_eq!(err.kind, TupleErrorKind::Counter { field: 9 }, "{huge}");
        }
    }

    /// Fields a tuple is made of, and near misses of each: what the one-pass reader must
    /// either read as the general parser does or leave to it.
    fn tuple_field() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            "[0-9]{1,20}",
            "0[0-9]{0,4}",
            "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}",
            "[0-9]{1,4}(\\.[0-9]{1,4}){0,5}",
            "(::)?[0-9a-f]{0,4}(:[0-9a-f]{1,4}){0,7}",
            "::ffff:[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}",
            "[TUIOADBCEX]",
            "N?X(_[A-Z]{1,8})?",
            Just("9223372036854775807".to_owned()),
            Just("9223372036854775808".to_owned()),
            Just("65535".to_owned()),
            Just("65536".to_owned()),
            Just("1.2.3.4 ".to_owned()),
            ".{0,4}",
        ]
    }

    fn one_pass_agrees_with_the_general_parser(
        kind: FlowLogKind,
        raw: &str,
    ) -> Result<(), TestCaseError> {
        if let Some(fast) = parse_in_one_pass(kind, raw) {
            prop_assert_eq!(Ok(fast), parse_fields(kind, raw), "{:?} {}", kind, raw);
        }
        Ok(())
    }

    #[test]
    fn eight_bytes_at_a_time_count_and_convert_the_leading_digits_of_any_text() {
        let cases: [(&[u8; 8], usize, u64); 6] = [
            (b"12345678", 8, 12_345_678),
            (b"00000009", 8, 9),
            (b"443,6,O,", 3, 443),
            (b"0,10.0.0", 1, 0),
            (b",1,2,3,4", 0, 0),
            (b"9\xff9999/9", 1, 9),
        ];
        for (text, count, value) in cases {
            let values = digit_values(text);
            assert_eq!(leading_digits(values), count, "{text:?}");
            if count > 0 {
                assert_eq!(eight_digits(values << (8 * (8 - count))), value, "{text:?}");
            }
        }
    }

    /// `text` padded to the 16 bytes `dotted_quad` reads.
    fn window(text: &str) -> [u8; 16] {
        let mut window = [b'x'; 16];
        window[..text.len()].copy_from_slice(text.as_bytes());
        window
    }

    #[test]
    fn a_dotted_quad_is_read_from_two_words_only_when_it_is_exactly_what_ipv4_parsing_accepts() {
        for (text, expected) in [
            ("10.0.0.4,1234", Some(([10, 0, 0, 4], 8))),
            ("255.255.255.255,", Some(([255, 255, 255, 255], 15))),
            ("192.0.2.180,239", Some(([192, 0, 2, 180], 11))),
            ("0.0.0.0,", Some(([0, 0, 0, 0], 7))),
            // The comma must be inside the 16 bytes.
            ("255.255.255.255", None),
            ("256.0.0.1,", None),
            ("10.0.0.04,", None),
            ("010.0.0.4,", None),
            ("1.2.3,4", None),
            ("1.2.3.4.5,", None),
            ("1..3.4,", None),
            ("1.2.3.4\"", None),
            ("1.2.3.4 ,", None),
            ("1234.1.1.1,", None),
            ("::ffff:1.2.3.4,", None),
            ("fe80::1,", None),
            (",", None),
        ] {
            assert_eq!(dotted_quad(&window(text)), expected, "{text}");
        }
    }

    proptest! {
        #[test]
        fn a_dotted_quad_read_from_two_words_is_the_address_std_reads(
            text in prop_oneof![
                "[0-9.]{0,15}",
                // Mostly quads, with near misses: long octets, leading zeros, values past 255.
                "[0-9]{1,4}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,4}",
                "(25[0-9]|2[0-9]{2}|1?[0-9]{1,2}|0[0-9])(\\.(25[0-9]|2[0-9]{2}|1?[0-9]{1,2}|0[0-9])){3}",
            ],
        ) {
            let with_comma = format!("{text},");
            prop_assume!(with_comma.len() <= 16);
            let std = text.parse::<std::net::Ipv4Addr>().ok().map(|a| (a.octets(), text.len()));
            prop_assert_eq!(dotted_quad(&window(&with_comma)), std, "{}", text);
        }
    }

    #[test]
    fn the_one_pass_reader_takes_the_usual_tuples_of_each_format() {
        for (kind, raw) in [
            (
                FlowLogKind::Nsg,
                "1542110377,94.102.49.190,10.5.16.4,28746,443,U,I,D",
            ),
            (
                FlowLogKind::Nsg,
                "1542110377,10.0.0.4,13.67.143.118,44931,443,T,O,A,B,,,,",
            ),
            (
                FlowLogKind::Nsg,
                "1542110377,10.0.0.4,13.67.143.118,44931,443,T,O,A,E,1,66,1,66",
            ),
            (
                FlowLogKind::Vnet,
                "1663146003599,10.0.0.6,192.0.2.180,23956,443,6,O,B,NX,,,,",
            ),
            (
                FlowLogKind::Vnet,
                "1663146003606,10.0.0.6,192.0.2.180,23956,443,6,O,E,NX,3,767,2,1580",
            ),
            (
                FlowLogKind::Vnet,
                "1663146003606,fe80::1,2001:db8::5,1,2,58,I,D,,,,,",
            ),
        ] {
            let fast = parse_in_one_pass(kind, raw);
            assert!(fast.is_some(), "{raw}");
            assert_eq!(fast.map(Ok), Some(parse_fields(kind, raw)), "{raw}");
        }
    }

    #[test]
    fn leading_zeros_the_general_parser_accepts_are_left_to_it_and_read_the_same() {
        let padded = "0001,1.1.1.1,10.1.0.4,000080,2,006,I,E,NX,1,2,3,4";
        assert_eq!(parse_in_one_pass(FlowLogKind::Vnet, padded), None);
        let t = parse_tuple(FlowLogKind::Vnet, padded).unwrap();
        assert_eq!((t.time_ms, t.src_port, t.protocol), (1000, 80, 6));
    }

    proptest! {
        // Each case costs microseconds; many are needed to meet each near miss in each field.
        #![proptest_config(ProptestConfig::with_cases(8192))]

        #[test]
        fn the_one_pass_reader_gives_what_the_general_parser_gives_or_leaves_the_tuple_to_it(
            fields in proptest::collection::vec(tuple_field(), 6..15),
        ) {
            let raw = fields.join(",");
            one_pass_agrees_with_the_general_parser(FlowLogKind::Nsg, &raw)?;
            one_pass_agrees_with_the_general_parser(FlowLogKind::Vnet, &raw)?;
        }

        #[test]
        fn the_one_pass_reader_agrees_on_tuples_with_one_field_replaced(
            field in tuple_field(), at in 0usize..13, nsg in any::<bool>(),
        ) {
            let base = if nsg {
                "1542110377,10.0.0.4,13.67.143.118,44931,443,T,O,A,E,1,66,1,66"
            } else {
                "1663146003606,10.0.0.6,192.0.2.180,23956,443,6,O,E,NX,3,767,2,1580"
            };
            let mut parts: Vec<&str> = base.split(',').collect();
            parts[at] = &field;
            let raw = parts.join(",");
            one_pass_agrees_with_the_general_parser(FlowLogKind::Nsg, &raw)?;
            one_pass_agrees_with_the_general_parser(FlowLogKind::Vnet, &raw)?;
        }
    }

    /// Reads `json` (a `flowTuples` array) both ways: `next_parsed` must give, slot by slot and
    /// ending at the same position, the tuple `parse_tuple` reads from the slot `next` gives,
    /// or that slot itself.
    fn in_array_reading_agrees_with_decoding_first(
        kind: FlowLogKind,
        json: &str,
    ) -> Result<Vec<bool>, TestCaseError> {
        let array: TupleArray = serde_json::from_str(json).expect("a valid array");
        let (mut fast, mut slow) = (array.iter(), array.iter());
        let mut read_in_place = Vec::new();
        loop {
            match (fast.next_parsed(kind), slow.next()) {
                (None, None) => return Ok(read_in_place),
                (Some(ParsedSlot::Tuple(tuple)), Some(TupleSlot::Tuple(text))) => {
                    prop_assert_eq!(Ok(tuple), parse_tuple(kind, text.as_str()), "{}", json);
                    read_in_place.push(true);
                }
                (Some(ParsedSlot::Other(slot)), Some(expected)) => {
                    prop_assert_eq!(slot, expected, "{}", json);
                    read_in_place.push(false);
                }
                (fast, slow) => prop_assert!(false, "{:?} against {:?} in {}", fast, slow, json),
            }
            prop_assert_eq!(fast.position(), slow.position(), "{}", json);
        }
    }

    #[test]
    fn tuples_are_read_inside_their_json_array_unless_escaped_or_unusual() {
        let vnet = "1663146003606,10.0.0.6,192.0.2.180,23956,443,6,O,E,NX,3,767,2,1580";
        let json = format!(
            r#"["{vnet}","{vnet}","1663146003606,10.0.0.6,192.0.2.180,23956,443,6,O,E,N\u0058,3,767,2,1580",12,"bad",
              "{vnet}"]"#
        );
        let read_in_place =
            in_array_reading_agrees_with_decoding_first(FlowLogKind::Vnet, &json).unwrap();
        // The first two are read in place; after them: an escape, a number, a bad tuple, then
        // whitespace before the last slot: each goes the general way.
        assert_eq!(read_in_place, [true, true, false, false, false, false]);
        let array: TupleArray = serde_json::from_str(&json).unwrap();
        let mut slots = array.iter();
        let Some(ParsedSlot::Tuple(first)) = slots.next_parsed(FlowLogKind::Vnet) else {
            panic!("the first slot is read in place")
        };
        assert_eq!(first.raw, vnet);
        assert_eq!((first.dst_port, first.encryption), (443, Some("NX")));
        slots.next_parsed(FlowLogKind::Vnet);
        let Some(ParsedSlot::Other(TupleSlot::Tuple(escaped))) =
            slots.next_parsed(FlowLogKind::Vnet)
        else {
            panic!("the escaped slot goes the general way")
        };
        let tuple = parse_tuple(FlowLogKind::Vnet, escaped.as_str()).unwrap();
        assert_eq!(tuple.encryption, Some("NX"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn tuples_read_inside_their_json_array_are_those_read_from_their_decoded_strings(
            slots in proptest::collection::vec(
                (
                    any::<bool>(),
                    // Near misses, and text JSON writes with escapes.
                    prop_oneof![tuple_field(), "[NX\"\\\\\u{1}é]{1,3}"],
                    0usize..13,
                    0usize..4,
                    any::<bool>(),
                ),
                1..5,
            ),
            nsg in any::<bool>(),
        ) {
            // Each slot: a usual tuple of the kind with one field replaced by a near miss (or
            // by a list of near misses), JSON-encoded, sometimes with a comma escaped, and
            // separated in the ways writers separate them.
            let (kind, base) = if nsg {
                (FlowLogKind::Nsg, "1542110377,10.0.0.4,13.67.143.118,44931,443,T,O,A,E,1,66,1,66")
            } else {
                (FlowLogKind::Vnet, "1663146003606,10.0.0.6,192.0.2.180,23956,443,6,O,E,NX,3,767,2,1580")
            };
            let mut json = String::from("[");
            for (i, (several, field, at, separator, escape_a_comma)) in slots.iter().enumerate() {
                if i > 0 {
                    json.push_str([",", ", ", ",\n  ", ","][*separator]);
                }
                let mut fields: Vec<&str> = base.split(',').collect();
                fields[*at] = field;
                if *several {
                    fields.insert(*at, field);
                }
                let mut slot = serde_json::to_string(&fields.join(",")).unwrap();
                if *escape_a_comma {
                    // The same text, one comma written as an escape.
                    slot = slot.replacen(',', "\\u002c", 1);
                }
                json.push_str(&slot);
            }
            json.push(']');
            in_array_reading_agrees_with_decoding_first(kind, &json)?;
        }

        #[test]
        fn the_usual_tuples_are_read_inside_their_json_array(
            ts in 100_000_000_000u64..=MAX_TIME_MS, src in any::<[u8; 4]>(), port in any::<u16>(),
            count in 1usize..4,
        ) {
            let src_ip = std::net::Ipv4Addr::from(src);
            let tuple = format!("{ts},{src_ip},10.0.0.4,{port},443,6,O,B,NX,1,2,3,4");
            let json = format!("[{}]", vec![format!("\"{tuple}\""); count].join(","));
            let read_in_place = in_array_reading_agrees_with_decoding_first(FlowLogKind::Vnet, &json)?;
            prop_assert_eq!(read_in_place, vec![true; count]);
        }
    }

    proptest! {
        #[test]
        fn eight_byte_digit_reading_agrees_with_a_byte_loop(text in proptest::collection::vec(any::<u8>(), 8)) {
            let word: [u8; 8] = text.clone().try_into().unwrap();
            let values = digit_values(&word);
            let count = text.iter().take_while(|b| b.is_ascii_digit()).count();
            prop_assert_eq!(leading_digits(values), count);
            if count > 0 {
                let expected = text[..count].iter().fold(0u64, |v, b| v * 10 + u64::from(b - b'0'));
                prop_assert_eq!(eight_digits(values << (8 * (8 - count))), expected);
            }
        }

        #[test]
        fn any_string_parses_or_errors_without_panicking(s in ".{0,120}") {
            one_pass_agrees_with_the_general_parser(FlowLogKind::Nsg, &s)?;
            one_pass_agrees_with_the_general_parser(FlowLogKind::Vnet, &s)?;
            let _ = parse_tuple(FlowLogKind::Nsg, &s);
            let _ = parse_tuple(FlowLogKind::Vnet, &s);
        }

        #[test]
        fn generated_vnet_tuples_round_trip(
            ts in 100_000_000_000u64..=MAX_TIME_MS,
            src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(),
            sport in any::<u16>(), dport in any::<u16>(), proto in any::<u8>(),
            inbound in any::<bool>(), state in 0usize..4,
            counters in proptest::option::of(any::<[u32; 4]>()),
        ) {
            let src_ip = std::net::Ipv4Addr::from(src);
            let dst_ip = std::net::Ipv4Addr::from(dst);
            let dir = if inbound { "I" } else { "O" };
            let st = ["B", "C", "E", "D"][state];
            let c = match counters {
                Some(c) => format!("{},{},{},{}", c[0], c[1], c[2], c[3]),
                None => ",,,".to_string(),
            };
            let raw = format!("{ts},{src_ip},{dst_ip},{sport},{dport},{proto},{dir},{st},NX,{c}");
            prop_assert!(parse_in_one_pass(FlowLogKind::Vnet, &raw).is_some());
            let t = parse_tuple(FlowLogKind::Vnet, &raw).unwrap();
            prop_assert_eq!(t.time_ms as u64, ts);
            prop_assert_eq!(t.src_ip, IpAddr::V4(src_ip));
            prop_assert_eq!(t.dst_ip, IpAddr::V4(dst_ip));
            prop_assert_eq!((t.src_port, t.dst_port, t.protocol), (sport, dport, proto));
            prop_assert_eq!(t.direction == Direction::Inbound, inbound);
            prop_assert_eq!(t.decision == Decision::Deny, st == "D");
            prop_assert_eq!(t.counters.bytes_dst_to_src, counters.map(|c| u64::from(c[3])));
        }
    }
}
