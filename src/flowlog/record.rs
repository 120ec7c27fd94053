//! Serde model of one flow-log record (NSG or VNet), borrowing strings from the input, and its
//! flattening into rule/ACL groups of tuple strings.
use std::borrow::Cow;
use std::fmt;

use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::kind::FlowLogKind;
use super::tuple::{FlowTuple, TupleError, TupleErrorKind, parse_json_string_in_one_pass};

mod compact;

/// A JSON string borrowed from the input when it has no escapes (always, for tuples), owned otherwise.
///
/// `Option<Cow<str>>` and `Vec<Cow<str>>` always allocate through serde's blanket impls; this
/// newtype asks the deserializer for a borrowed string first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonStr<'a>(pub Cow<'a, str>);

impl<'a> JsonStr<'a> {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The same text, no longer borrowing from the input.
    pub fn into_owned(self) -> JsonStr<'static> {
        JsonStr(Cow::Owned(self.0.into_owned()))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for JsonStr<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor;
        impl<'de> Visitor<'de> for StrVisitor {
            type Value = JsonStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(StrVisitor)
    }
}

/// A version number that real data writes as a JSON number and some samples as a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct VersionNumber(u32);

impl<'de> Deserialize<'de> for VersionNumber {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct VersionVisitor;
        impl Visitor<'_> for VersionVisitor {
            type Value = VersionNumber;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a version number")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                u32::try_from(v)
                    .map(VersionNumber)
                    .map_err(|_| E::custom(format!("version {v} out of range")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u32::try_from(v)
                    .map(VersionNumber)
                    .map_err(|_| E::custom(format!("version {v} out of range")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                if v.fract() == 0.0 && (0.0..=u32::MAX as f64).contains(&v) {
                    Ok(VersionNumber(v as u32))
                } else {
                    Err(E::custom(format!("version {v} is not a whole number")))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                v.trim()
                    .parse()
                    .map(VersionNumber)
                    .map_err(|_| E::custom(format!("version {v:?} is not a number")))
            }
        }
        deserializer.deserialize_any(VersionVisitor)
    }
}

// Key spellings differ between docs, samples and product versions (`resourceid`, `resourceID`,
// `FLOWTUPLES`, ...): every key is matched without regard to ASCII case, so no spelling of a known
// key can hide its tuples. Unknown keys are ignored. A key that holds tuples (`flows`,
// `flowGroups`, `flowTuples`) must be present: a record where one is missing or renamed is an
// error, never a record with fewer tuples (invariant 9). Such a key given twice is an error too;
// a metadata key given twice keeps its last value.

/// The longest key this model knows (`flowlogresourceid`), with room to spare.
const MAX_KEY_LEN: usize = 24;

/// Lower-cases `key` into `buf`; `None` when it is longer than any key we know.
fn fold_key<'b>(key: &str, buf: &'b mut [u8; MAX_KEY_LEN]) -> Option<&'b str> {
    let bytes = key.as_bytes();
    let folded = buf.get_mut(..bytes.len())?;
    for (to, from) in folded.iter_mut().zip(bytes) {
        *to = from.to_ascii_lowercase();
    }
    // Lower-casing ASCII bytes keeps the text valid UTF-8 (non-ASCII bytes are untouched).
    std::str::from_utf8(folded).ok()
}

/// The fields of one JSON object of a record, matched by lower-cased key.
trait FoldedFields<'de>: Default {
    const EXPECTING: &'static str;
    /// Takes the value of the (lower-cased) `key` from `values`; false for a key it does not know.
    fn field<V: FieldValues<'de>>(&mut self, key: &str, values: &mut V) -> Result<bool, V::Error>;
    /// Checks what must be present once the object ended.
    fn check<E: de::Error>(&self) -> Result<(), E> {
        Ok(())
    }
}

/// Where [`FoldedFields::field`] takes a known key's value from: serde_json's map, or the
/// compact reader (`compact.rs`). One table of keys serves both readers, so they cannot come to
/// know different keys.
trait FieldValues<'de> {
    type Error: de::Error;
    fn next_value<T: RecordValue<'de>>(&mut self) -> Result<T, Self::Error>;
}

/// A value of the record model, readable by serde and by the compact reader.
trait RecordValue<'de>: Deserialize<'de> {
    /// The value at the reader's position; `None` leaves the whole record to serde.
    fn read_compact(reader: &mut compact::Reader<'de>) -> Option<Self>;
}

struct SerdeValues<'m, A>(&'m mut A);

impl<'de, A: MapAccess<'de>> FieldValues<'de> for SerdeValues<'_, A> {
    type Error = A::Error;
    fn next_value<T: RecordValue<'de>>(&mut self) -> Result<T, A::Error> {
        self.0.next_value()
    }
}

struct FoldedVisitor<F>(PhantomData<F>);

impl<'de, F: FoldedFields<'de>> Visitor<'de> for FoldedVisitor<F> {
    type Value = F;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(F::EXPECTING)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<F, A::Error> {
        let mut fields = F::default();
        let mut buf = [0u8; MAX_KEY_LEN];
        while let Some(key) = map.next_key::<JsonStr<'de>>()? {
            let known = match fold_key(key.as_str(), &mut buf) {
                Some(folded) => fields.field(folded, &mut SerdeValues(&mut map))?,
                None => false,
            };
            if !known {
                map.next_value::<IgnoredAny>()?;
            }
        }
        fields.check()?;
        Ok(fields)
    }
}

fn deserialize_folded<'de, D: Deserializer<'de>, F: FoldedFields<'de>>(
    deserializer: D,
) -> Result<F, D::Error> {
    deserializer.deserialize_map(FoldedVisitor(PhantomData))
}

/// Stores a tuple-bearing value, refusing a second one (which of the two would be right?).
fn set_once<T, E: de::Error>(slot: &mut Option<T>, value: T, path: &str) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::custom(format_args!("`{path}` given twice")));
    }
    *slot = Some(value);
    Ok(())
}

fn missing<E: de::Error>(path: &str) -> E {
    E::custom(format_args!("no `{path}` key: its tuples cannot be found"))
}

macro_rules! deserialize_via_folded {
    ($($ty:ident),*) => {$(
        impl<'de> Deserialize<'de> for $ty<'de> {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserialize_folded(deserializer)
            }
        }
        impl<'de> RecordValue<'de> for $ty<'de> {
            fn read_compact(reader: &mut compact::Reader<'de>) -> Option<Self> {
                reader.object()
            }
        }
    )*};
}

deserialize_via_folded!(
    RawRecord,
    NsgProperties,
    NsgRuleFlows,
    NsgMacFlows,
    VnetFlowRecords,
    VnetAclFlows,
    VnetFlowGroup
);

#[derive(Default)]
struct RawRecord<'a> {
    time: Option<JsonStr<'a>>,
    system_id: Option<JsonStr<'a>>,
    category: Option<JsonStr<'a>>,
    resource_id: Option<JsonStr<'a>>,
    operation_name: Option<JsonStr<'a>>,
    properties: Option<NsgProperties<'a>>,
    flow_log_version: Option<VersionNumber>,
    flow_log_guid: Option<JsonStr<'a>>,
    mac_address: Option<JsonStr<'a>>,
    flow_log_resource_id: Option<JsonStr<'a>>,
    target_resource_id: Option<JsonStr<'a>>,
    flow_records: Option<VnetFlowRecords<'a>>,
}

impl<'de> FoldedFields<'de> for RawRecord<'de> {
    const EXPECTING: &'static str = "a flow-log record (a JSON object)";
    fn field<V: FieldValues<'de>>(&mut self, key: &str, values: &mut V) -> Result<bool, V::Error> {
        match key {
            "time" => self.time = values.next_value()?,
            "systemid" => self.system_id = values.next_value()?,
            "category" => self.category = values.next_value()?,
            "resourceid" => self.resource_id = values.next_value()?,
            "operationname" => self.operation_name = values.next_value()?,
            "properties" => set_once(&mut self.properties, values.next_value()?, "properties")?,
            "flowlogversion" => self.flow_log_version = values.next_value()?,
            "flowlogguid" => self.flow_log_guid = values.next_value()?,
            "macaddress" | "mac" => self.mac_address = values.next_value()?,
            "flowlogresourceid" => self.flow_log_resource_id = values.next_value()?,
            "targetresourceid" => self.target_resource_id = values.next_value()?,
            "flowrecords" => set_once(&mut self.flow_records, values.next_value()?, "flowRecords")?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// `properties` of an NSG record. `flows` is checked only once the record is known to be NSG:
/// a VNet record with an unrelated `properties` object must not fail.
#[derive(Default)]
struct NsgProperties<'a> {
    version: Option<VersionNumber>,
    flows: Option<Vec<NsgRuleFlows<'a>>>,
}

impl<'de> FoldedFields<'de> for NsgProperties<'de> {
    const EXPECTING: &'static str = "an NSG `properties` object";
    fn field<V: FieldValues<'de>>(&mut self, key: &str, values: &mut V) -> Result<bool, V::Error> {
        match key {
            "version" => self.version = values.next_value()?,
            "flows" => set_once(&mut self.flows, values.next_value()?, "properties.flows")?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

#[derive(Default)]
struct NsgRuleFlows<'a> {
    rule: Option<JsonStr<'a>>,
    flows: Option<Vec<NsgMacFlows<'a>>>,
}

impl<'de> FoldedFields<'de> for NsgRuleFlows<'de> {
    const EXPECTING: &'static str = "an NSG rule object (`rule`, `flows`)";
    fn field<V: FieldValues<'de>>(&mut self, key: &str, values: &mut V) -> Result<bool, V::Error> {
        match key {
            "rule" => self.rule = values.next_value()?,
            "flows" => set_once(
                &mut self.flows,
                values.next_value()?,
                "properties.flows[].flows",
            )?,
            _ => return Ok(false),
        }
        Ok(true)
    }
    fn check<E: de::Error>(&self) -> Result<(), E> {
        match self.flows {
            Some(_) => Ok(()),
            None => Err(missing("properties.flows[].flows")),
        }
    }
}

#[derive(Default)]
struct NsgMacFlows<'a> {
    mac: Option<JsonStr<'a>>,
    flow_tuples: Option<TupleArray<'a>>,
}

impl<'de> FoldedFields<'de> for NsgMacFlows<'de> {
    const EXPECTING: &'static str = "an NSG flow object (`mac`, `flowTuples`)";
    fn field<V: FieldValues<'de>>(&mut self, key: &str, values: &mut V) -> Result<bool, V::Error> {
        const PATH: &str = "properties.flows[].flows[].flowTuples";
        match key {
            "mac" | "macaddress" => self.mac = values.next_value()?,
            "flowtuples" => set_once(&mut self.flow_tuples, values.next_value()?, PATH)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
    fn check<E: de::Error>(&self) -> Result<(), E> {
        match self.flow_tuples {
            Some(_) => Ok(()),
            None => Err(missing("properties.flows[].flows[].flowTuples")),
        }
    }
}

#[derive(Default)]
struct VnetFlowRecords<'a> {
    flows: Option<Vec<VnetAclFlows<'a>>>,
}

impl<'de> FoldedFields<'de> for VnetFlowRecords<'de> {
    const EXPECTING: &'static str = "a VNet `flowRecords` object";
    fn field<V: FieldValues<'de>>(&mut self, key: &str, values: &mut V) -> Result<bool, V::Error> {
        match key {
            "flows" => set_once(&mut self.flows, values.next_value()?, "flowRecords.flows")?,
            _ => return Ok(false),
        }
        Ok(true)
    }
    fn check<E: de::Error>(&self) -> Result<(), E> {
        match self.flows {
            Some(_) => Ok(()),
            None => Err(missing("flowRecords.flows")),
        }
    }
}

#[derive(Default)]
struct VnetAclFlows<'a> {
    acl_id: Option<JsonStr<'a>>,
    flow_groups: Option<Vec<VnetFlowGroup<'a>>>,
}

impl<'de> FoldedFields<'de> for VnetAclFlows<'de> {
    const EXPECTING: &'static str = "a VNet ACL object (`aclID`, `flowGroups`)";
    fn field<V: FieldValues<'de>>(&mut self, key: &str, values: &mut V) -> Result<bool, V::Error> {
        const PATH: &str = "flowRecords.flows[].flowGroups";
        match key {
            "aclid" => self.acl_id = values.next_value()?,
            "flowgroups" => set_once(&mut self.flow_groups, values.next_value()?, PATH)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
    fn check<E: de::Error>(&self) -> Result<(), E> {
        match self.flow_groups {
            Some(_) => Ok(()),
            None => Err(missing("flowRecords.flows[].flowGroups")),
        }
    }
}

#[derive(Default)]
struct VnetFlowGroup<'a> {
    rule: Option<JsonStr<'a>>,
    flow_tuples: Option<TupleArray<'a>>,
}

impl<'de> FoldedFields<'de> for VnetFlowGroup<'de> {
    const EXPECTING: &'static str = "a VNet flow group (`rule`, `flowTuples`)";
    fn field<V: FieldValues<'de>>(&mut self, key: &str, values: &mut V) -> Result<bool, V::Error> {
        const PATH: &str = "flowRecords.flows[].flowGroups[].flowTuples";
        match key {
            "rule" => self.rule = values.next_value()?,
            "flowtuples" => set_once(&mut self.flow_tuples, values.next_value()?, PATH)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
    fn check<E: de::Error>(&self) -> Result<(), E> {
        match self.flow_tuples {
            Some(_) => Ok(()),
            None => Err(missing("flowRecords.flows[].flowGroups[].flowTuples")),
        }
    }
}

// A tuple that is not a usable string must spoil only itself, not its record (invariant 9).
// Strings with invalid UTF-8 or raw control characters make serde_json fail the whole record;
// `decode_record` then retries on a copy where each such string is replaced by a marker string
// (below) carrying the reason and a lossy copy of the text, recognised when the slot is read.
const INVALID_UTF8_MARK: &str = "\0flowlogd:invalid-utf8\0";
const CONTROL_CHAR_MARK: &str = "\0flowlogd:control-character\0";

/// What an invalid slot shows as text through [`TupleSlot::as_str`]: empty, which never parses.
const INVALID_PLACEHOLDER: &str = "";

/// The `flowTuples` array of one group, kept as its JSON text (checked by the record's parse)
/// and read one slot at a time when documents are written. A record's tuples are never all
/// held at once: a record costs its own bytes, whatever its number of tuples (invariant 6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TupleArray<'a> {
    /// Starts with `[` (the parse refused anything else) and is valid JSON.
    json: Cow<'a, str>,
}

impl Default for TupleArray<'_> {
    fn default() -> Self {
        TupleArray {
            json: Cow::Borrowed("[]"),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for TupleArray<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <&'de serde_json::value::RawValue>::deserialize(deserializer)?;
        let json = raw.get();
        if !json.starts_with('[') {
            let found = match json.as_bytes().first() {
                Some(b'"') => "a string",
                Some(b'{') => "an object",
                Some(b't' | b'f') => "a boolean",
                Some(b'n') => "null",
                _ => "a number",
            };
            return Err(de::Error::custom(format_args!(
                "invalid type: {found}, expected an array of tuple strings"
            )));
        }
        Ok(TupleArray {
            json: Cow::Borrowed(json),
        })
    }
}

impl<'a> TupleArray<'a> {
    /// The slots in order, from the first.
    pub fn iter(&self) -> TupleSlots<'_> {
        self.slots_from(SlotPosition::START)
    }

    /// The slots from `position` on (from [`TupleSlots::position`] of an earlier iteration).
    pub fn slots_from(&self, position: SlotPosition) -> TupleSlots<'_> {
        TupleSlots {
            json: &self.json,
            // Past the `[`: the parse checked that the text starts with it.
            pos: position.0.max(1),
        }
    }

    /// Number of slots, good or bad (reads the whole array).
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    fn into_owned(self) -> TupleArray<'static> {
        TupleArray {
            json: Cow::Owned(self.json.into_owned()),
        }
    }
}

impl<'s> IntoIterator for &'s TupleArray<'_> {
    type Item = TupleSlot<'s>;
    type IntoIter = TupleSlots<'s>;
    fn into_iter(self) -> TupleSlots<'s> {
        self.iter()
    }
}

/// Where an iteration over a [`TupleArray`] stands, to resume it later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SlotPosition(usize);

impl SlotPosition {
    pub const START: SlotPosition = SlotPosition(0);
}

/// One element of `flowTuples`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TupleSlot<'a> {
    /// A string: the tuple text, borrowed unless it held escapes.
    Tuple(JsonStr<'a>),
    /// Anything else, or a string that is not usable text: a problem of its own that keeps its
    /// place (and so the document ids of the tuples after it).
    Invalid(TupleError),
}

impl TupleSlot<'_> {
    /// The tuple text; empty (which never parses) for an invalid slot.
    pub fn as_str(&self) -> &str {
        match self {
            TupleSlot::Tuple(s) => s.as_str(),
            TupleSlot::Invalid(_) => INVALID_PLACEHOLDER,
        }
    }
}

/// The slots of a [`TupleArray`], read from its JSON text as they are asked for.
#[derive(Debug, Clone)]
pub struct TupleSlots<'s> {
    json: &'s str,
    /// Byte position of the next slot (or of the separators before it).
    pos: usize,
}

impl<'s> TupleSlots<'s> {
    /// Where the next slot starts: [`TupleArray::slots_from`] resumes here.
    pub fn position(&self) -> SlotPosition {
        SlotPosition(self.pos)
    }

    /// The next slot, and whether it was one of the marker strings `decode_record` put in place
    /// of a string it had to repair.
    fn next_slot(&mut self) -> Option<(TupleSlot<'s>, bool)> {
        let bytes = self.json.as_bytes();
        let at = self.pos
            + bytes
                .get(self.pos..)?
                .iter()
                .position(|b| !(b.is_ascii_whitespace() || *b == b','))?;
        if bytes[at] == b']' {
            self.pos = bytes.len();
            return None;
        }
        let (slot, end, marked) = if bytes[at] == b'"' {
            self.string_at(at)
        } else {
            self.other_at(at)
        };
        self.pos = end;
        Some((slot, marked))
    }

    /// The string slot whose opening quote is at `at`; returns it, where it ends, and whether
    /// it was a repair marker.
    fn string_at(&self, at: usize) -> (TupleSlot<'s>, usize, bool) {
        let bytes = self.json.as_bytes();
        let mut end = at + 1;
        let mut escaped = false;
        loop {
            let rest = bytes.get(end..).unwrap_or_default();
            match memchr::memchr2(b'"', b'\\', rest) {
                Some(i) if rest[i] == b'"' => {
                    end += i;
                    break;
                }
                Some(i) => {
                    escaped = true;
                    end += i + 2;
                }
                // The parse checked the array, so strings are closed; should one not be, the
                // rest of the array is this slot's text.
                None => {
                    end = bytes.len().saturating_sub(1).max(at + 1);
                    break;
                }
            }
        }
        let text = self.json.get(at + 1..end).unwrap_or_default();
        let past = (end + 1).min(bytes.len());
        if !escaped {
            // Valid JSON holds no raw control character, so no marker can be here.
            return (TupleSlot::Tuple(JsonStr(Cow::Borrowed(text))), past, false);
        }
        match serde_json::from_str::<String>(self.json.get(at..past).unwrap_or_default()) {
            Ok(decoded) => {
                for (mark, kind) in [
                    (INVALID_UTF8_MARK, TupleErrorKind::InvalidUtf8),
                    (CONTROL_CHAR_MARK, TupleErrorKind::ControlCharacter),
                ] {
                    if let Some(original) = decoded.strip_prefix(mark) {
                        let error = TupleError {
                            kind,
                            tuple: original.to_owned(),
                        };
                        return (TupleSlot::Invalid(error), past, true);
                    }
                }
                (TupleSlot::Tuple(JsonStr(Cow::Owned(decoded))), past, false)
            }
            // An escape the parse let through that is no character (a lone surrogate).
            Err(_) => {
                let error = TupleError {
                    kind: TupleErrorKind::InvalidUtf8,
                    tuple: text.to_owned(),
                };
                (TupleSlot::Invalid(error), past, false)
            }
        }
    }

    /// The slot at `at` that is not a string: its JSON text as written, for the dead letter.
    fn other_at(&self, at: usize) -> (TupleSlot<'s>, usize, bool) {
        let rest = self.json.get(at..).unwrap_or_default();
        let mut de = serde_json::Deserializer::from_str(rest);
        // `rest` starts at the value, so the raw value's text is exactly its extent.
        let len = match <&serde_json::value::RawValue>::deserialize(&mut de) {
            Ok(raw) => raw.get().len(),
            // Cannot happen after the record's parse; the rest of the array is this slot then.
            Err(_) => rest.len().saturating_sub(1),
        };
        let found = match rest.as_bytes().first() {
            Some(b'{') => "an object",
            Some(b'[') => "an array",
            Some(b't' | b'f') => "a boolean",
            Some(b'n') => "null",
            _ => "a number",
        };
        let error = TupleError {
            kind: TupleErrorKind::NotAString { found },
            tuple: rest.get(..len).unwrap_or_default().to_owned(),
        };
        (TupleSlot::Invalid(error), at + len.max(1), false)
    }
}

/// A slot as [`TupleSlots::next_parsed`] gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedSlot<'s> {
    /// The usual slot, read as a tuple where it lies in the array.
    Tuple(FlowTuple<'s>),
    /// Any other slot, as [`TupleSlots::next`] gives it, for [`super::parse_tuple`] to read
    /// (or to refuse, naming why).
    Other(TupleSlot<'s>),
}

impl<'s> TupleSlots<'s> {
    /// The next slot, its tuple read straight from the array's JSON text when it is the usual
    /// string (no escape, accepted by the one-pass reader): one walk over its bytes instead of
    /// one to find where the string ends and one to parse it. Every other slot comes as
    /// [`Self::next`] gives it, so that [`super::parse_tuple`] reads it as before.
    #[inline]
    pub fn next_parsed(&mut self, kind: FlowLogKind) -> Option<ParsedSlot<'s>> {
        let bytes = self.json.as_bytes();
        // `pos` is just past the `[` or past the previous slot: the usual next slot opens here
        // or after one comma. Whitespace between slots goes the general way.
        let quote = match (bytes.get(self.pos), bytes.get(self.pos + 1)) {
            (Some(b'"'), _) => Some(self.pos),
            (Some(b','), Some(b'"')) => Some(self.pos + 1),
            _ => None,
        };
        if let Some(quote) = quote
            && let Some(content) = self.json.get(quote + 1..)
            && let Some((tuple, len)) = parse_json_string_in_one_pass(kind, content)
        {
            // Past the closing quote.
            self.pos = quote + 1 + len + 1;
            return Some(ParsedSlot::Tuple(tuple));
        }
        self.next().map(ParsedSlot::Other)
    }
}

impl<'s> Iterator for TupleSlots<'s> {
    type Item = TupleSlot<'s>;
    fn next(&mut self) -> Option<TupleSlot<'s>> {
        self.next_slot().map(|(slot, _)| slot)
    }
}

/// The tuples of one rule (NSG) or one rule within one ACL (VNet), with what they share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowGroup<'a> {
    pub rule: Option<JsonStr<'a>>,
    /// VNet only: the NSG or Virtual Network Manager that decided.
    pub acl_id: Option<JsonStr<'a>>,
    /// NIC MAC address: per flow on NSG records, per record on VNet records.
    pub mac: Option<JsonStr<'a>>,
    /// Every slot of the group's `flowTuples`, in order, read as they are iterated; a slot that
    /// is not a usable string is a [`TupleSlot::Invalid`] with its reason.
    pub tuples: TupleArray<'a>,
}

impl FlowGroup<'_> {
    fn into_owned(self) -> FlowGroup<'static> {
        FlowGroup {
            rule: self.rule.map(JsonStr::into_owned),
            acl_id: self.acl_id.map(JsonStr::into_owned),
            mac: self.mac.map(JsonStr::into_owned),
            tuples: self.tuples.into_owned(),
        }
    }
}

/// One decoded record: record-level fields plus its tuple groups in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub kind: FlowLogKind,
    /// `properties.Version` (NSG) or `flowLogVersion` (VNet); `None` when absent.
    pub version: Option<u32>,
    pub time: Option<JsonStr<'a>>,
    pub system_id: Option<JsonStr<'a>>,
    pub category: Option<JsonStr<'a>>,
    pub operation_name: Option<JsonStr<'a>>,
    /// NSG `resourceId` or VNet `flowLogResourceID`.
    pub resource_id: Option<JsonStr<'a>>,
    /// VNet `targetResourceID` (VNet, subnet or NIC).
    pub target_resource_id: Option<JsonStr<'a>>,
    /// VNet `flowLogGUID`.
    pub guid: Option<JsonStr<'a>>,
    /// Record-level `macAddress` (VNet; optional on NSG).
    pub mac: Option<JsonStr<'a>>,
    pub groups: Vec<FlowGroup<'a>>,
}

impl Record<'_> {
    /// Whether the version is one this build knows the tuple layout of (NSG 1/2, VNet 4).
    /// Other versions are still decoded by field count; callers count them.
    pub fn is_known_version(&self) -> bool {
        matches!(
            (self.kind, self.version),
            (FlowLogKind::Nsg, Some(1 | 2)) | (FlowLogKind::Vnet, Some(4))
        )
    }

    /// Number of tuple slots in the record (good or bad); reads every group's array.
    pub fn tuple_count(&self) -> usize {
        self.groups.iter().map(|g| g.tuples.len()).sum()
    }

    /// Every slot that is not a usable tuple string, with its index in the record (the index
    /// its document id would have), in order; reads every group's array.
    pub fn invalid_tuples(&self) -> Vec<(u32, TupleError)> {
        self.groups
            .iter()
            .flat_map(|g| g.tuples.iter())
            .enumerate()
            .filter_map(|(i, slot)| match slot {
                TupleSlot::Invalid(e) => Some((u32::try_from(i).unwrap_or(u32::MAX), e)),
                TupleSlot::Tuple(_) => None,
            })
            .collect()
    }

    fn into_owned(self) -> Record<'static> {
        let owned = |s: Option<JsonStr<'_>>| s.map(JsonStr::into_owned);
        Record {
            kind: self.kind,
            version: self.version,
            time: owned(self.time),
            system_id: owned(self.system_id),
            category: owned(self.category),
            operation_name: owned(self.operation_name),
            resource_id: owned(self.resource_id),
            target_resource_id: owned(self.target_resource_id),
            guid: owned(self.guid),
            mac: owned(self.mac),
            groups: self.groups.into_iter().map(FlowGroup::into_owned).collect(),
        }
    }

    /// How many slots are repair markers (see [`decode_record`]).
    fn marked_slots(&self) -> usize {
        self.groups
            .iter()
            .map(|g| {
                let mut slots = g.tuples.iter();
                std::iter::from_fn(|| slots.next_slot())
                    .filter(|(_, marked)| *marked)
                    .count()
            })
            .sum()
    }
}

/// Why a record could not be decoded at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record is not valid JSON for a flow-log record: {0}")]
    Json(String),
    #[error("record has neither NSG `properties.flows` nor VNet `flowRecords`")]
    UnknownShape,
    #[error("record has no `{0}` key: its tuples cannot be found")]
    MissingKey(&'static str),
}

/// Decodes one record (a JSON object) from `input`, borrowing strings from it: by the compact
/// reader when the record has the shape Azure writes (`record/compact.rs`), by serde_json
/// otherwise.
///
/// A tuple slot that is not a usable string (not a string, invalid UTF-8, a raw control
/// character) does not fail the record: it is a [`TupleSlot::Invalid`] of its group.
pub fn decode_record(input: &[u8]) -> Result<Record<'_>, RecordError> {
    match read_raw(input) {
        Ok(raw) => build(raw),
        // The slow path runs only for records serde_json refused; good input never pays for it.
        Err(e) => {
            let mut scratch = Vec::new();
            match decode_repaired(input, &mut scratch) {
                Some(record) => record.map(Record::into_owned),
                None => Err(RecordError::Json(e.to_string())),
            }
        }
    }
}

/// [`decode_record`] for the pipeline: a record that needs repairing borrows the repaired copy
/// from `scratch` instead of owning a second copy of its tuples, so a record costs at most
/// twice its size while its documents are written.
pub fn decode_record_in<'a>(
    input: &'a [u8],
    scratch: &'a mut Vec<u8>,
) -> Result<Record<'a>, RecordError> {
    match read_raw(input) {
        Ok(raw) => build(raw),
        Err(e) => {
            decode_repaired(input, scratch).unwrap_or_else(|| Err(RecordError::Json(e.to_string())))
        }
    }
}

/// The record model of `input`: by the compact reader when it takes the record, by serde_json
/// otherwise (whose error names what is wrong).
fn read_raw(input: &[u8]) -> Result<RawRecord<'_>, serde_json::Error> {
    match compact::read(input) {
        Some(raw) => Ok(raw),
        None => serde_json::from_slice(input),
    }
}

/// Decodes a copy of `input` (written into `scratch`) whose strings with invalid UTF-8 or raw
/// control characters are replaced by marker strings; `None` when there was nothing to repair,
/// when the copy does not decode either, or when a repaired string was not a tuple (then the
/// record as a whole is bad).
fn decode_repaired<'a>(
    input: &[u8],
    scratch: &'a mut Vec<u8>,
) -> Option<Result<Record<'a>, RecordError>> {
    let count = repair_strings(input, scratch)?;
    let repaired: &'a [u8] = scratch;
    let raw = serde_json::from_slice::<RawRecord<'a>>(repaired).ok()?;
    let record = match build(raw) {
        Ok(record) => record,
        Err(e) => return Some(Err(e)),
    };
    (record.marked_slots() == count).then_some(Ok(record))
}

/// Copies `input` into `out`, replacing each JSON string that holds invalid UTF-8 or raw
/// control characters by a marker string with a lossy, escaped copy of its text. Returns how
/// many strings were replaced, or `None` when none was (or a string is not closed).
fn repair_strings(input: &[u8], out: &mut Vec<u8>) -> Option<usize> {
    out.clear();
    out.reserve(input.len() + 64);
    let mut count = 0usize;
    let mut i = 0usize;
    while i < input.len() {
        let Some(quote) = memchr::memchr(b'"', &input[i..]) else {
            out.extend_from_slice(&input[i..]);
            break;
        };
        let start = i + quote + 1;
        out.extend_from_slice(&input[i..start]);
        let mut end = start;
        loop {
            match input.get(end)? {
                b'"' => break,
                b'\\' => end += 2,
                _ => end += 1,
            }
        }
        let content = input.get(start..end)?;
        let mark = if std::str::from_utf8(content).is_err() {
            Some(INVALID_UTF8_MARK)
        } else if content.iter().any(|b| *b < 0x20) {
            Some(CONTROL_CHAR_MARK)
        } else {
            None
        };
        match mark {
            None => out.extend_from_slice(content),
            Some(mark) => {
                count += 1;
                push_escaped(out, mark);
                // Existing escapes are kept as written; only what made the string invalid changes.
                push_escaped(out, &String::from_utf8_lossy(content));
            }
        }
        out.push(b'"');
        i = end + 1;
    }
    (count > 0).then_some(count)
}

/// Appends `text`, with control characters as `\u00XX` escapes (quotes and backslashes as they are).
fn push_escaped(out: &mut Vec<u8>, text: &str) {
    for b in text.bytes() {
        if b < 0x20 {
            out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
        } else {
            out.push(b);
        }
    }
}

fn build(raw: RawRecord<'_>) -> Result<Record<'_>, RecordError> {
    if let Some(flow_records) = raw.flow_records {
        let record_mac = raw.mac_address;
        let groups = flow_records
            .flows
            .into_iter()
            .flatten()
            .flat_map(|acl| {
                let acl_id = acl.acl_id;
                let record_mac = record_mac.clone();
                acl.flow_groups
                    .into_iter()
                    .flatten()
                    .map(move |group| FlowGroup {
                        rule: group.rule,
                        acl_id: acl_id.clone(),
                        mac: record_mac.clone(),
                        tuples: group.flow_tuples.unwrap_or_default(),
                    })
            })
            .collect();
        return Ok(Record {
            kind: FlowLogKind::Vnet,
            version: raw.flow_log_version.map(|v| v.0),
            time: raw.time,
            system_id: raw.system_id,
            category: raw.category,
            operation_name: raw.operation_name,
            resource_id: raw.flow_log_resource_id.or(raw.resource_id),
            target_resource_id: raw.target_resource_id,
            guid: raw.flow_log_guid,
            mac: record_mac,
            groups,
        });
    }
    if let Some(properties) = raw.properties {
        let Some(flows) = properties.flows else {
            return Err(RecordError::MissingKey("properties.flows"));
        };
        let record_mac = raw.mac_address;
        let groups = flows
            .into_iter()
            .flat_map(|rule_flows| {
                let rule = rule_flows.rule;
                let record_mac = record_mac.clone();
                rule_flows
                    .flows
                    .into_iter()
                    .flatten()
                    .map(move |mac_flows| FlowGroup {
                        rule: rule.clone(),
                        acl_id: None,
                        mac: mac_flows.mac.or_else(|| record_mac.clone()),
                        tuples: mac_flows.flow_tuples.unwrap_or_default(),
                    })
            })
            .collect();
        return Ok(Record {
            kind: FlowLogKind::Nsg,
            version: properties.version.map(|v| v.0),
            time: raw.time,
            system_id: raw.system_id,
            category: raw.category,
            operation_name: raw.operation_name,
            resource_id: raw.resource_id,
            target_resource_id: raw.target_resource_id,
            guid: raw.flow_log_guid,
            mac: record_mac,
            groups,
        });
    }
    Err(RecordError::UnknownShape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuples_borrow_from_the_input() {
        let input = br#"{"time":"t","category":"NetworkSecurityGroupFlowEvent","properties":{"Version":2,"flows":[{"rule":"R","flows":[{"mac":"000D3AF87856","flowTuples":["1542110377,10.5.16.4,13.67.143.118,59831,443,T,O,A,B,,,,"]}]}]}}"#;
        let record = decode_record(input).unwrap();
        assert!(matches!(
            record.groups[0].tuples.iter().next(),
            Some(TupleSlot::Tuple(JsonStr(Cow::Borrowed(_))))
        ));
        assert_eq!(record.kind, FlowLogKind::Nsg);
        assert_eq!(record.version, Some(2));
    }

    #[test]
    fn key_case_variants_and_extra_keys_are_accepted() {
        let input = br#"{"extra":{"a":[1,2]},"resourceid":"/SUBSCRIPTIONS/S","properties":{"flows":[],"version":"1"}}"#;
        let record = decode_record(input).unwrap();
        assert_eq!(record.resource_id.unwrap().as_str(), "/SUBSCRIPTIONS/S");
        assert_eq!(record.version, Some(1));
    }

    #[test]
    fn vnet_groups_carry_acl_and_record_mac() {
        let input = br#"{"flowLogVersion":4,"macAddress":"00224871C205","flowRecords":{"flows":[{"aclID":"A1","flowGroups":[{"rule":"R1","flowTuples":["x"]},{"rule":"R2","flowTuples":["y","z"]}]}]}}"#;
        let record = decode_record(input).unwrap();
        assert_eq!(record.kind, FlowLogKind::Vnet);
        assert_eq!(record.groups.len(), 2);
        assert_eq!(record.groups[1].acl_id.as_ref().unwrap().as_str(), "A1");
        assert_eq!(
            record.groups[1].mac.as_ref().unwrap().as_str(),
            "00224871C205"
        );
        assert_eq!(record.tuple_count(), 3);
    }

    #[test]
    fn escaped_strings_are_decoded_owned() {
        let input = br#"{"flowLogVersion":4,"flowRecords":{"flows":[{"aclID":"a\/b","flowGroups":[]}]},"targetResourceID":"x\u0041"}"#;
        let record = decode_record(input).unwrap();
        assert_eq!(record.target_resource_id.unwrap().as_str(), "xA");
    }

    #[test]
    fn unknown_shape_and_bad_json_are_errors() {
        assert_eq!(
            decode_record(br#"{"time":"x"}"#).unwrap_err(),
            RecordError::UnknownShape
        );
        assert!(matches!(
            decode_record(b"{\"time\":"),
            Err(RecordError::Json(_))
        ));
        assert!(matches!(
            decode_record(b"\xff\xfe"),
            Err(RecordError::Json(_))
        ));
        assert!(matches!(
            decode_record(br#"{"properties":{"Version":99999999999,"flows":[]}}"#),
            Err(RecordError::Json(_))
        ));
    }
    const GOOD: &str = "1663146003599,10.0.0.6,52.239.184.180,23956,443,6,O,B,NX,0,0,0,0";

    /// A VNet record with two groups: `first` (raw JSON array content) and one good tuple.
    fn vnet_with(first: &[u8]) -> Vec<u8> {
        let mut r = br#"{"time":"t","flowLogVersion":4,"flowRecords":{"flows":[{"aclID":"a","flowGroups":[{"rule":"r1","flowTuples":["#.to_vec();
        r.extend_from_slice(first);
        r.extend_from_slice(
            format!(r#"]}},{{"rule":"r2","flowTuples":["{GOOD}"]}}]}}]}}}}"#).as_bytes(),
        );
        r
    }

    fn good_slots(record: &Record<'_>) -> Vec<String> {
        record
            .groups
            .iter()
            .flat_map(|g| g.tuples.iter().map(|t| t.as_str().to_owned()))
            .collect()
    }

    #[test]
    fn inner_keys_are_matched_in_any_case() {
        let nsg = format!(
            r#"{{"RESOURCEID":"/S","PROPERTIES":{{"VERSION":2,"FLOWS":[{{"RULE":"R","FLOWS":[{{"MAC":"M","FLOWTUPLES":["{GOOD}"]}}]}}]}}}}"#
        );
        let record = decode_record(nsg.as_bytes()).unwrap();
        assert_eq!(record.kind, FlowLogKind::Nsg);
        assert_eq!(record.version, Some(2));
        assert_eq!(record.resource_id.as_ref().unwrap().as_str(), "/S");
        assert_eq!(record.groups[0].rule.as_ref().unwrap().as_str(), "R");
        assert_eq!(record.groups[0].mac.as_ref().unwrap().as_str(), "M");
        assert_eq!(record.tuple_count(), 1);
        let vnet = format!(
            r#"{{"FlowLogVersion":4,"MACADDRESS":"X","flowrecords":{{"FLOWS":[{{"AclId":"A","FLOWGROUPS":[{{"rUlE":"R","FlowTUPLES":["{GOOD}","{GOOD}"]}}]}}]}}}}"#
        );
        let record = decode_record(vnet.as_bytes()).unwrap();
        assert_eq!(record.kind, FlowLogKind::Vnet);
        assert_eq!(record.groups[0].acl_id.as_ref().unwrap().as_str(), "A");
        assert_eq!(record.mac.as_ref().unwrap().as_str(), "X");
        assert_eq!(record.tuple_count(), 2);
    }

    #[test]
    fn a_missing_or_renamed_tuple_key_is_an_error_not_an_empty_record() {
        let cases: &[(&str, &str)] = &[
            (
                r#"{"properties":{"Version":2,"flowz":[]}}"#,
                "properties.flows",
            ),
            (
                r#"{"properties":{"flows":[{"rule":"r","flowz":[]}]}}"#,
                "properties.flows[].flows",
            ),
            (
                r#"{"properties":{"flows":[{"rule":"r","flows":[{"mac":"m","tuples":["x"]}]}]}}"#,
                "properties.flows[].flows[].flowTuples",
            ),
            (
                r#"{"flowLogVersion":4,"flowRecords":{"flowz":[]}}"#,
                "flowRecords.flows",
            ),
            (
                r#"{"flowRecords":{"flows":[{"aclID":"a","groups":[]}]}}"#,
                "flowRecords.flows[].flowGroups",
            ),
            (
                r#"{"flowRecords":{"flows":[{"aclID":"a","flowGroups":[{"rule":"r"}]}]}}"#,
                "flowRecords.flows[].flowGroups[].flowTuples",
            ),
        ];
        for (input, path) in cases {
            let error = decode_record(input.as_bytes()).unwrap_err();
            assert!(error.to_string().contains(path), "{input}: {error}");
        }
        // Present but empty is a record without tuples, not an error.
        let empty = decode_record(br#"{"properties":{"flows":[{"rule":"r","flows":[]}]}}"#);
        assert_eq!(empty.unwrap().tuple_count(), 0);
        // A VNet record with an unrelated `properties` object is still a VNet record.
        let vnet = decode_record(br#"{"properties":{},"flowRecords":{"flows":[]}}"#);
        assert_eq!(vnet.unwrap().kind, FlowLogKind::Vnet);
    }

    #[test]
    fn a_tuple_key_given_twice_is_an_error() {
        let input = br#"{"flowRecords":{"flows":[{"flowGroups":[{"flowTuples":["a"],"FLOWTUPLES":["b"]}]}]}}"#;
        let error = decode_record(input).unwrap_err();
        assert!(error.to_string().contains("given twice"), "{error}");
    }

    #[test]
    fn a_non_string_tuple_spoils_only_itself() {
        let first = format!(r#""{GOOD}",12,{{"a":[1,"x"]}},null,["{GOOD}"],true,"{GOOD}""#);
        let input = vnet_with(first.as_bytes());
        let record = decode_record(&input).unwrap();
        assert_eq!(record.tuple_count(), 8);
        let slots = good_slots(&record);
        assert_eq!(slots.iter().filter(|t| *t == GOOD).count(), 3);
        let invalid: Vec<_> = record
            .invalid_tuples()
            .iter()
            .map(|(i, e)| (*i, e.kind.clone(), e.tuple.clone()))
            .collect();
        assert_eq!(
            invalid,
            vec![
                (
                    1,
                    TupleErrorKind::NotAString { found: "a number" },
                    "12".into()
                ),
                (
                    2,
                    TupleErrorKind::NotAString { found: "an object" },
                    r#"{"a":[1,"x"]}"#.into()
                ),
                (
                    3,
                    TupleErrorKind::NotAString { found: "null" },
                    "null".into()
                ),
                (
                    4,
                    TupleErrorKind::NotAString { found: "an array" },
                    format!(r#"["{GOOD}"]"#)
                ),
                (
                    5,
                    TupleErrorKind::NotAString { found: "a boolean" },
                    "true".into()
                ),
            ]
        );
        for (i, _) in &record.invalid_tuples() {
            assert_eq!(slots[*i as usize], INVALID_PLACEHOLDER);
        }
        assert_eq!(slots[7], GOOD, "the second group's tuple keeps index 7");
    }

    #[test]
    fn invalid_utf8_or_a_control_character_in_a_tuple_spoils_only_that_tuple() {
        let mut first = format!(r#""{GOOD}","#).into_bytes();
        first.extend_from_slice(b"\"1663146003599,\xff\xfe,1.1.1.1\",");
        first.extend_from_slice(format!("\"{GOOD}\0\",").as_bytes());
        first.extend_from_slice(b"\"a\\\"b\tc\",");
        first.extend_from_slice(format!(r#""{GOOD}""#).as_bytes());
        let input = vnet_with(&first);
        let record = decode_record(&input).unwrap();
        assert_eq!(record.tuple_count(), 6);
        let invalid: Vec<_> = record
            .invalid_tuples()
            .iter()
            .map(|(i, e)| (*i, e.kind.clone(), e.tuple.clone()))
            .collect();
        assert_eq!(
            invalid,
            vec![
                (
                    1,
                    TupleErrorKind::InvalidUtf8,
                    "1663146003599,\u{FFFD}\u{FFFD},1.1.1.1".into()
                ),
                (2, TupleErrorKind::ControlCharacter, format!("{GOOD}\0")),
                (3, TupleErrorKind::ControlCharacter, "a\"b\tc".into()),
            ]
        );
        let slots = good_slots(&record);
        assert_eq!(
            (slots[0].as_str(), slots[4].as_str(), slots[5].as_str()),
            (GOOD, GOOD, GOOD)
        );
    }

    #[test]
    fn invalid_bytes_outside_tuples_still_fail_the_record() {
        let input = format!(
            "{{\"time\":\"\u{0}\",\"flowRecords\":{{\"flows\":[{{\"flowGroups\":[{{\"flowTuples\":[\"{GOOD}\"]}}]}}]}}}}"
        );
        assert!(matches!(
            decode_record(input.as_bytes()),
            Err(RecordError::Json(_))
        ));
        let mut input = b"{\"rule\xff\":1,".to_vec();
        input.extend_from_slice(&vnet_with(b"")[1..]);
        assert!(matches!(decode_record(&input), Err(RecordError::Json(_))));
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_in_one_tuple_string_spoil_at_most_that_tuple(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80)
        ) {
            // Quotes and backslashes would end or escape the string: that is another record shape.
            let bytes: Vec<u8> = bytes.into_iter().filter(|b| *b != b'"' && *b != b'\\').collect();
            let mut first = format!(r#""{GOOD}","#).into_bytes();
            first.push(b'"');
            first.extend_from_slice(&bytes);
            first.push(b'"');
            let input = vnet_with(&first);
            let record = decode_record(&input).unwrap();
            proptest::prop_assert_eq!(record.tuple_count(), 3);
            let slots = good_slots(&record);
            proptest::prop_assert_eq!(slots[0].as_str(), GOOD);
            proptest::prop_assert_eq!(slots[2].as_str(), GOOD);
            proptest::prop_assert!(record.invalid_tuples().iter().all(|(i, _)| *i == 1));
        }
    }
}
