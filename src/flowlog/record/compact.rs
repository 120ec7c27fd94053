//! Reads a record in the shape Azure writes (compact JSON, strings without escapes) into the
//! serde model of `record.rs` in one walk, and leaves every other record to serde_json.
//!
//! Hand-written because it is the hot path and no JSON crate offers what it does: a tuple array
//! is passed over with one search per string for its closing quote, where serde_json's raw-value
//! scan checks every byte once more (~450 instructions a tuple, a tenth of decoding). What makes
//! that search enough is checked once per record: no control byte and no backslash anywhere,
//! valid UTF-8 throughout. Keys go through the model's own table (`FoldedFields::field`), so both readers
//! know the same keys. Whatever this reader is unsure of (an escape, a nested value under an
//! unknown key, a fraction, a tuple key given twice, a missing one) returns `None`: serde then
//! decodes the record or names what is wrong with it. On what it accepts, the two agree (tests
//! below, and the `record_decode` fuzz target).
use std::borrow::Cow;
use std::fmt;

use serde::de;

use super::{
    FieldValues, FoldedFields, JsonStr, MAX_KEY_LEN, RawRecord, RecordValue, TupleArray,
    VersionNumber, fold_key,
};

/// The record model of `input`, or `None` when serde must read it.
pub(super) fn read(input: &[u8]) -> Option<RawRecord<'_>> {
    // Without control bytes and backslashes, a string is all bytes up to the next quote.
    if has_control_byte(input) || memchr::memchr(b'\\', input).is_some() {
        return None;
    }
    let text = std::str::from_utf8(input).ok()?;
    let mut reader = Reader { text, pos: 0 };
    let record = reader.object::<RawRecord<'_>>()?;
    reader.skip_spaces();
    (reader.pos == text.len()).then_some(record)
}

/// Whether any byte is below 0x20. JSON allows none inside strings, and outside them only
/// whitespace, which Azure does not write within a record. The lowest byte, without an early
/// exit, so that the compiler takes it with vector instructions (records are nearly always
/// clean, and the scan is a few percent of reading them).
fn has_control_byte(bytes: &[u8]) -> bool {
    bytes.iter().fold(u8::MAX, |lowest, &b| lowest.min(b)) < 0x20
}

/// The reason the compact reader gives up: none kept, since serde reads the record next and
/// names what is wrong, if anything.
#[derive(Debug)]
pub(super) struct LeftToSerde;

impl fmt::Display for LeftToSerde {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("not a compact record")
    }
}

impl std::error::Error for LeftToSerde {}

impl de::Error for LeftToSerde {
    fn custom<T: fmt::Display>(_reason: T) -> Self {
        LeftToSerde
    }
}

/// A position in a record's text, known to be valid UTF-8 without control bytes, so the only
/// whitespace is the space.
pub(super) struct Reader<'de> {
    text: &'de str,
    pos: usize,
}

impl<'de> Reader<'de> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    /// The bytes from the position on.
    fn rest(&self) -> &'de [u8] {
        self.text.as_bytes().get(self.pos..).unwrap_or_default()
    }

    fn skip_spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.pos += 1;
        }
    }

    /// Takes `byte` if it comes next, after any spaces.
    fn eat(&mut self, byte: u8) -> bool {
        self.skip_spaces();
        let next = self.peek() == Some(byte);
        if next {
            self.pos += 1;
        }
        next
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        self.eat(byte).then_some(())
    }

    /// A string without escapes; its text.
    fn string(&mut self) -> Option<&'de str> {
        self.expect(b'"')?;
        let start = self.pos;
        // `read` refused any backslash: the next quote closes the string.
        let len = memchr::memchr(b'"', self.rest())?;
        self.pos = start + len + 1;
        // Both ends are ASCII quotes, so this never splits a character.
        self.text.get(start..start + len)
    }

    /// Takes `literal` (`null`, `true`, `false`) if it comes next, after any spaces.
    fn eat_literal(&mut self, literal: &[u8]) -> bool {
        self.skip_spaces();
        let next = self.rest().starts_with(literal);
        if next {
            self.pos += literal.len();
        }
        next
    }

    /// Comma-separated items between `open` and `close` (an object's members, an array's
    /// values), each read by `item`.
    fn sequence(
        &mut self,
        open: u8,
        close: u8,
        mut item: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
        self.expect(open)?;
        if self.eat(close) {
            return Some(());
        }
        loop {
            item(self)?;
            if !self.eat(b',') {
                return self.expect(close);
            }
        }
    }

    /// A whole number as JSON writes it (`0`, or digits without a leading zero); its value.
    fn whole_number(&mut self) -> Option<u64> {
        self.skip_spaces();
        let digits = self
            .rest()
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let text = self.text.get(self.pos..self.pos + digits)?;
        if digits == 0 || (digits > 1 && text.starts_with('0')) {
            return None;
        }
        let value = text.parse().ok()?;
        self.pos += digits;
        // A fraction or an exponent makes it another number: serde decides what it is.
        match self.peek() {
            Some(b'.' | b'e' | b'E') => None,
            _ => Some(value),
        }
    }

    /// The value of a key the model does not know: a string, a whole number, `true`, `false` or
    /// `null`. Anything else (nested values, negative or fractional numbers) goes to serde.
    fn skip_unknown_value(&mut self) -> Option<()> {
        self.skip_spaces();
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'0'..=b'9' => self.whole_number().map(drop),
            _ => [&b"true"[..], b"false", b"null"]
                .into_iter()
                .any(|literal| self.eat_literal(literal))
                .then_some(()),
        }
    }

    /// An object of the model, its keys matched by the model's own table.
    pub(super) fn object<F: FoldedFields<'de>>(&mut self) -> Option<F> {
        let mut fields = F::default();
        let mut buf = [0u8; MAX_KEY_LEN];
        self.sequence(b'{', b'}', |reader| {
            let key = reader.string()?;
            reader.expect(b':')?;
            let known = match fold_key(key, &mut buf) {
                Some(folded) => fields.field(folded, reader).ok()?,
                None => false,
            };
            if !known {
                reader.skip_unknown_value()?;
            }
            Some(())
        })?;
        fields.check::<LeftToSerde>().ok()?;
        Some(fields)
    }
}

impl<'de> FieldValues<'de> for Reader<'de> {
    type Error = LeftToSerde;
    fn next_value<T: RecordValue<'de>>(&mut self) -> Result<T, LeftToSerde> {
        T::read_compact(self).ok_or(LeftToSerde)
    }
}

impl<'de> RecordValue<'de> for Option<JsonStr<'de>> {
    fn read_compact(reader: &mut Reader<'de>) -> Option<Self> {
        if reader.eat_literal(b"null") {
            return Some(None);
        }
        reader
            .string()
            .map(|text| Some(JsonStr(Cow::Borrowed(text))))
    }
}

impl<'de> RecordValue<'de> for Option<VersionNumber> {
    fn read_compact(reader: &mut Reader<'de>) -> Option<Self> {
        if reader.eat_literal(b"null") {
            return Some(None);
        }
        let version = u32::try_from(reader.whole_number()?).ok()?;
        Some(Some(VersionNumber(version)))
    }
}

impl<'de, T: RecordValue<'de>> RecordValue<'de> for Vec<T> {
    fn read_compact(reader: &mut Reader<'de>) -> Option<Self> {
        let mut items = Vec::new();
        reader.sequence(b'[', b']', |reader| {
            items.push(T::read_compact(reader)?);
            Some(())
        })?;
        Some(items)
    }
}

impl<'de> RecordValue<'de> for TupleArray<'de> {
    /// The array's text, `[` to `]`, as serde_json's raw value would give it; strings only.
    fn read_compact(reader: &mut Reader<'de>) -> Option<Self> {
        reader.skip_spaces();
        let start = reader.pos;
        reader.sequence(b'[', b']', |reader| reader.string().map(drop))?;
        let json = reader.text.get(start..reader.pos)?;
        Some(TupleArray {
            json: Cow::Borrowed(json),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Record, RecordError, build};
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures/");

    fn by_serde(input: &[u8]) -> Result<Record<'_>, RecordError> {
        serde_json::from_slice::<RawRecord<'_>>(input)
            .map_err(|e| RecordError::Json(e.to_string()))
            .and_then(build)
    }

    /// The record as the compact reader gives it, after checking that serde gives the same.
    fn read_and_compare(input: &[u8]) -> Option<Result<Record<'_>, RecordError>> {
        let compact = read(input).map(build)?;
        assert_eq!(
            compact,
            by_serde(input),
            "{}",
            String::from_utf8_lossy(input)
        );
        Some(compact)
    }

    /// Each record of a fixture PT1H.json, written compactly as Azure writes it.
    fn fixture_records(name: &str) -> Vec<String> {
        let text = std::fs::read_to_string(format!("{FIXTURES}msdocs/{name}")).unwrap();
        let blob: serde_json::Value = serde_json::from_str(&text).unwrap();
        let records = blob["records"].as_array().unwrap();
        records.iter().map(|r| r.to_string()).collect()
    }

    const GOOD: &str = "1663146003599,10.0.0.6,52.239.184.180,23956,443,6,O,B,NX,0,0,0,0";

    #[test]
    fn records_in_azures_shape_are_read_here_as_serde_reads_them() {
        let mut inputs: Vec<String> = Vec::new();
        for name in ["nsg_v1_PT1H.json", "nsg_v2_PT1H.json", "vnet_v4_PT1H.json"] {
            inputs.extend(fixture_records(name));
        }
        for name in ["nsg-records.ndjson", "vnet-records.ndjson"] {
            let text = std::fs::read_to_string(format!("{FIXTURES}elastic/{name}")).unwrap();
            inputs.extend(text.lines().filter(|l| !l.is_empty()).map(str::to_owned));
        }
        inputs.extend([
            // Spaces around every token, keys in other cases, null metadata, unknown scalars.
            format!(
                r#" {{ "TIME" : null , "Version" : "x" , "n" : -0 , "flowLogVersion" : 4 , "extra" : true , "nothing" : null , "flowRecords" : {{ "flows" : [ {{ "aclID" : "a" , "flowGroups" : [ {{ "rule" : "r" , "flowTuples" : [ "{GOOD}" , "{GOOD}" ] }} ] }} ] }} }} "#
            ),
            // An unknown key longer than any known one, a number under an unknown key.
            r#"{"aKeyLongerThanAnyKeyTheModelKnows":"v","count":120,"properties":{"Version":1,"flows":[{"rule":"r","flows":[{"mac":"M","flowTuples":[]}]}]}}"#.to_owned(),
            // Metadata given twice keeps the last; empty arrays everywhere.
            r#"{"time":"a","time":"b","flowRecords":{"flows":[]}}"#.to_owned(),
            r#"{"properties":{"flows":[]}}"#.to_owned(),
            // Records that decode to an error serde names the same way.
            r#"{"time":"x"}"#.to_owned(),
            r#"{"properties":{"Version":2}}"#.to_owned(),
        ]);
        // A negative number is left to serde (it may be a version); `-0` above is under an
        // unknown key, so the record above is also left to serde: count what is read here.
        let read_here = inputs
            .iter()
            .filter(|input| read_and_compare(input.as_bytes()).is_some())
            .count();
        assert_eq!(
            read_here,
            inputs.len() - 1,
            "only the `-0` record goes to serde"
        );
    }

    #[test]
    fn records_outside_azures_shape_are_left_to_serde() {
        let vnet = |groups: &str| {
            format!(
                r#"{{"flowLogVersion":4,"flowRecords":{{"flows":[{{"aclID":"a","flowGroups":[{groups}]}}]}}}}"#
            )
        };
        let group = |tuples: &str| format!(r#"{{"rule":"r","flowTuples":[{tuples}]}}"#);
        let good = format!("\"{GOOD}\"");
        let cases: Vec<(&str, String)> = vec![
            ("an escape in a tuple", vnet(&group(r#""a\"b""#))),
            (
                "an escape in a value",
                format!(r#"{{"time":"a\/b",{}"#, &vnet(&group(&good))[1..]),
            ),
            (
                "an escape in a key",
                format!(r#"{{"ti\u006de":"t",{}"#, &vnet(&group(&good))[1..]),
            ),
            (
                "a tuple that is no string",
                vnet(&group(&format!("{good},12"))),
            ),
            (
                "a nested value under an unknown key",
                format!(r#"{{"extra":{{}},{}"#, &vnet(&group(&good))[1..]),
            ),
            (
                "a version with a fraction",
                vnet(&group(&good)).replace(":4,", ":4.0,"),
            ),
            (
                "a version written as text",
                vnet(&group(&good)).replace(":4,", ":\"4\","),
            ),
            (
                "a version with a leading zero",
                vnet(&group(&good)).replace(":4,", ":04,"),
            ),
            (
                "a version beyond u32",
                vnet(&group(&good)).replace(":4,", ":4294967296,"),
            ),
            (
                "a null where an object belongs",
                r#"{"properties":null,"flowRecords":{"flows":[]}}"#.into(),
            ),
            (
                "a tuple key given twice",
                vnet(r#"{"flowTuples":[],"FlowTuples":[]}"#),
            ),
            ("a tuple key missing", vnet(r#"{"rule":"r"}"#)),
            (
                "a newline between tokens",
                vnet(&group(&good)).replace(",\"flowRecords", ",\n\"flowRecords"),
            ),
            ("a control byte in a tuple", vnet(&group("\"a\tb\""))),
            ("a trailing comma", vnet(&group(&format!("{good},")))),
            ("text after the record", vnet(&group(&good)) + "x"),
            (
                "an unclosed record",
                vnet(&group(&good)).trim_end_matches('}').to_owned(),
            ),
            ("a top-level array", format!("[{}]", vnet(&group(&good)))),
        ];
        for (what, input) in &cases {
            assert!(read(input.as_bytes()).is_none(), "{what}: {input}");
        }
        let invalid_utf8 = [&b"{\"time\":\"\xff\",\"flowRecords\":{\"flows\":[]}}"[..]];
        assert!(read(invalid_utf8[0]).is_none());
        // The same records without what made them unusual are read here.
        assert!(read(vnet(&group(&good)).as_bytes()).is_some());
    }

    #[test]
    fn a_control_byte_is_found_at_any_position() {
        for len in [1, 31, 32, 33, 64, 95] {
            let clean = vec![b'a'; len];
            assert!(!has_control_byte(&clean));
            for at in 0..len {
                for byte in [0x00, 0x0a, 0x1f] {
                    let mut bytes = clean.clone();
                    bytes[at] = byte;
                    assert!(
                        has_control_byte(&bytes),
                        "len {len}, byte {byte:#x} at {at}"
                    );
                }
                let mut bytes = clean.clone();
                bytes[at] = 0x20;
                assert!(!has_control_byte(&bytes));
            }
        }
    }

    const KEYS: &[&str] = &[
        "time",
        "TIME",
        "flowLogVersion",
        "macAddress",
        "MAC",
        "category",
        "rule",
        "aclID",
        "version",
        "extra",
        "aKeyLongerThanAnyKeyTheModelKnows",
    ];
    const VALUES: &[&str] = &[
        r#""t""#,
        "null",
        "0",
        "4",
        "04",
        "-1",
        "4.0",
        "1e2",
        r#""a\/b""#,
        "true",
        "false",
        "{}",
        "[]",
        "\"\u{e9}\"",
        "4294967295",
        "4294967296",
        r#""4""#,
        " 4 ",
        r#""""#,
    ];
    const TUPLE_ARRAYS: &[&str] = &[
        "[]",
        r#"["1663146003599,10.0.0.6,52.239.184.180,23956,443,6,O,B,NX,0,0,0,0"]"#,
        r#"["x",1]"#,
        r#"["a\"b"]"#,
        r#"[ "x" , "y" ]"#,
        r#"["x",]"#,
        r#"["x""#,
        "null",
        "{}",
        r#"["a]b","c"]"#,
        r#"["x" "y"]"#,
        r#"[,"x"]"#,
        r#"["x",,"y"]"#,
        "[ ]",
        r#"["x"1]"#,
    ];

    proptest::proptest! {
        /// Whatever the compact reader reads, serde reads the same: edits of a real record at
        /// random places, with the bytes that change JSON's structure, spaces, escapes, control
        /// and non-ASCII bytes.
        #[test]
        fn what_is_read_here_serde_reads_the_same(
            edits in proptest::collection::vec(
                (0usize..400, 0usize..3, proptest::sample::select(&b"{}[]\":,\\ 0159-.etnulrfaE\t\n\xc3\xa9\xff"[..])),
                1..4,
            ),
            nsg in proptest::prelude::any::<bool>(),
        ) {
            let mut input = if nsg {
                format!(r#"{{"time":"t","resourceId":"/S/R","properties":{{"Version":2,"flows":[{{"rule":"DefaultRule_DenyAllInBound","flows":[{{"mac":"000D3AF87856","flowTuples":["{GOOD}","{GOOD}"]}}]}}]}}}}"#)
            } else {
                format!(r#"{{"time":"t","flowLogVersion":4,"macAddress":"00224871C205","flowRecords":{{"flows":[{{"aclID":"a","flowGroups":[{{"rule":"r","flowTuples":["{GOOD}"]}},{{"rule":"q","flowTuples":["{GOOD}"]}}]}}]}}}}"#)
            }
            .into_bytes();
            for (at, how, byte) in edits {
                let at = at % (input.len() + 1);
                match how {
                    0 => input.insert(at, byte),
                    1 if at < input.len() => input[at] = byte,
                    _ if at < input.len() => {
                        input.remove(at);
                    }
                    _ => input.push(byte),
                }
            }
            if let Some(compact) = read(&input).map(build) {
                proptest::prop_assert_eq!(compact, by_serde(&input));
            }
        }

        /// The same, on records built from parts that each read differently: values of every
        /// JSON kind and number form, keys in any case, known and unknown, tuple arrays good and
        /// bad, in either record shape.
        #[test]
        fn what_is_read_here_serde_reads_the_same_whatever_the_parts(
            members in proptest::collection::vec((0..KEYS.len(), 0..VALUES.len()), 0..4),
            inner in (0..VALUES.len(), 0..VALUES.len(), 0..KEYS.len()),
            arrays in (0..TUPLE_ARRAYS.len(), 0..TUPLE_ARRAYS.len()),
            second_tuple_key in proptest::prelude::any::<bool>(),
            nsg in proptest::prelude::any::<bool>(),
        ) {
            let member = |(key, value): (usize, usize)| format!(r#""{}":{}"#, KEYS[key], VALUES[value]);
            let (version, name, inner_key) = inner;
            let extra = if second_tuple_key {
                format!(r#","FLOWTUPLES":{}"#, TUPLE_ARRAYS[arrays.1])
            } else {
                format!(r#","{}":{}"#, KEYS[inner_key], VALUES[name])
            };
            let body = if nsg {
                format!(
                    r#""properties":{{"Version":{},"flows":[{{"rule":{},"flows":[{{"mac":"M","flowTuples":{}{extra}}}]}}]}}"#,
                    VALUES[version], VALUES[name], TUPLE_ARRAYS[arrays.0]
                )
            } else {
                format!(
                    r#""flowLogVersion":{},"flowRecords":{{"flows":[{{"aclID":{},"flowGroups":[{{"rule":"r","flowTuples":{}{extra}}}]}}]}}"#,
                    VALUES[version], VALUES[name], TUPLE_ARRAYS[arrays.0]
                )
            };
            let mut parts: Vec<String> = members.into_iter().map(member).collect();
            parts.push(body);
            let input = format!("{{{}}}", parts.join(","));
            if let Some(compact) = read(input.as_bytes()).map(build) {
                proptest::prop_assert_eq!(compact, by_serde(input.as_bytes()));
            }
        }

    }
}
