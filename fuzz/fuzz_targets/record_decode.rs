//! Record decoding (`decode_record`, `decode_record_in`, the slot reader of `TupleArray`) against a plain walk of the same JSON, because a record that decodes with fewer or other tuples than it holds loses them silently (invariant 9: nothing dropped without a count).
//!
//! Input: one record's bytes, as the envelope scanner hands them over. Seeds: the records of
//! ../shared/fixtures.
//!
//! When the input is valid JSON (valid UTF-8, no raw control characters), a reference model
//! built from a generic parse (objects as ordered key/value lists, duplicates kept) says what
//! the decoder must give, following the rules in src/flowlog/record.rs: keys matched without
//! regard to ASCII case (keys longer than 24 bytes are unknown), metadata strings or null,
//! tuple-bearing keys present and given once, `flowRecords` (VNet) before `properties` (NSG).
//! Then the decoder must fail exactly when the model fails, and otherwise give the same kind,
//! version, metadata, groups and tuple slots in order: strings as decoded, other values as
//! invalid slots whose reported text is that JSON value (compared as JSON).
//!
//! For every input: `decode_record` and `decode_record_in` agree; `invalid_tuples()` lists
//! exactly the invalid slots and `tuple_count()` counts every slot; an iteration over a group's
//! slots stopped anywhere and resumed with `slots_from(position())` gives the same slots (the
//! pipeline writes one record's documents in pieces that way); every slot goes through
//! `parse_tuple` without a panic, and reading each group's tuples in place in their JSON array
//! (`next_parsed`, as the encoder does, for either kind) gives the tuples `parse_tuple` reads
//! from the decoded slots, at the same positions.
#![no_main]

use std::fmt;

use flowlogd::flowlog::{
    FlowLogKind, ParsedSlot, Record, TupleArray, TupleErrorKind, TupleSlot, decode_record,
    decode_record_in, parse_tuple,
};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

/// A JSON value that keeps every object member, in order, duplicates included.
#[derive(Debug, Clone)]
enum J {
    Null,
    Bool(bool),
    U(u64),
    I(i64),
    F(f64),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl<'de> Deserialize<'de> for J {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<J, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = J;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("JSON")
            }
            fn visit_unit<E: de::Error>(self) -> Result<J, E> {
                Ok(J::Null)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<J, E> {
                Ok(J::Bool(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<J, E> {
                Ok(J::U(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<J, E> {
                Ok(J::I(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<J, E> {
                Ok(J::F(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<J, E> {
                Ok(J::Str(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<J, E> {
                Ok(J::Str(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<J, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(J::Arr(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<J, A::Error> {
                let mut members = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, J>()? {
                    members.push((k, v));
                }
                Ok(J::Obj(members))
            }
        }
        d.deserialize_any(V)
    }
}

impl J {
    /// As serde_json::Value would hold it (last duplicate wins), for the text of a non-string slot.
    fn to_value(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            J::Null => Value::Null,
            J::Bool(b) => Value::Bool(*b),
            J::U(u) => Value::from(*u),
            J::I(i) => Value::from(*i),
            J::F(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            J::Str(s) => Value::String(s.clone()),
            J::Arr(items) => Value::Array(items.iter().map(J::to_value).collect()),
            J::Obj(members) => {
                let mut map = serde_json::Map::new();
                for (k, v) in members {
                    map.insert(k.clone(), v.to_value());
                }
                Value::Object(map)
            }
        }
    }

    /// Members with their keys folded as the decoder folds them (`None`: an unknown key).
    fn members(&self) -> Result<Vec<(Option<String>, &J)>, ()> {
        match self {
            J::Obj(members) => Ok(members
                .iter()
                .map(|(k, v)| ((k.len() <= 24).then(|| k.to_ascii_lowercase()), v))
                .collect()),
            _ => Err(()),
        }
    }

    fn items(&self) -> Result<&[J], ()> {
        match self {
            J::Arr(items) => Ok(items),
            _ => Err(()),
        }
    }
}

/// A JSON value as one canonical text (serde_json::Value's), so that the text a decoder
/// reports for a non-string slot can be compared with the slot whatever its spacing.
fn canonical_of(value: &J) -> String {
    value.to_value().to_string()
}

/// The canonical text of `text` when it is one JSON value; marked otherwise.
fn canonical(text: &str) -> String {
    match serde_json::from_str::<J>(text) {
        Ok(value) => canonical_of(&value),
        Err(e) => format!("<not one JSON value ({e}): {text:?}>"),
    }
}

type Model<T> = Result<T, ()>;

/// `Option<JsonStr>`: a string or null.
fn opt_str(v: &J) -> Model<Option<String>> {
    match v {
        J::Null => Ok(None),
        J::Str(s) => Ok(Some(s.clone())),
        _ => Err(()),
    }
}

/// `Option<VersionNumber>`: null, a whole number in u32, or a string holding one.
fn opt_version(v: &J) -> Model<Option<u32>> {
    Ok(Some(match v {
        J::Null => return Ok(None),
        J::U(u) => u32::try_from(*u).map_err(drop)?,
        J::I(i) => u32::try_from(*i).map_err(drop)?,
        J::F(f) if f.fract() == 0.0 && (0.0..=u32::MAX as f64).contains(f) => *f as u32,
        J::Str(s) => s.trim().parse().map_err(drop)?,
        _ => return Err(()),
    }))
}

fn set_once<T>(slot: &mut Option<T>, value: T) -> Model<()> {
    if slot.is_some() {
        return Err(());
    }
    *slot = Some(value);
    Ok(())
}

/// One `flowTuples` slot as the decoder must report it.
#[derive(Debug, Clone, PartialEq)]
enum Slot {
    Good(String),
    Bad(TupleErrorKind, String),
}

const INVALID_UTF8_MARK: &str = "\0flowlogd:invalid-utf8\0";
const CONTROL_CHAR_MARK: &str = "\0flowlogd:control-character\0";

fn tuple_list(v: &J) -> Model<Vec<Slot>> {
    Ok(v.items()?
        .iter()
        .map(|item| match item {
            // The decoder recognises its repair markers in any string, also one that was
            // valid JSON to begin with (a tuple that starts with an escaped NUL and the marker
            // text): reported, with the marker's reason, and never parsed. See the report.
            J::Str(s) => {
                for (mark, kind) in [
                    (INVALID_UTF8_MARK, TupleErrorKind::InvalidUtf8),
                    (CONTROL_CHAR_MARK, TupleErrorKind::ControlCharacter),
                ] {
                    if let Some(text) = s.strip_prefix(mark) {
                        return Slot::Bad(kind, text.to_owned());
                    }
                }
                Slot::Good(s.clone())
            }
            // Anything else is reported with its JSON text (compared as JSON, not as written).
            other => {
                let found = match other {
                    J::Bool(_) => "a boolean",
                    J::Null => "null",
                    J::Arr(_) => "an array",
                    J::Obj(_) => "an object",
                    _ => "a number",
                };
                Slot::Bad(TupleErrorKind::NotAString { found }, canonical_of(other))
            }
        })
        .collect())
}

#[derive(Debug, PartialEq)]
struct Group {
    rule: Option<String>,
    acl_id: Option<String>,
    mac: Option<String>,
    slots: Vec<Slot>,
}

#[derive(Debug, PartialEq)]
struct Expected {
    kind: FlowLogKind,
    version: Option<u32>,
    time: Option<String>,
    system_id: Option<String>,
    category: Option<String>,
    operation_name: Option<String>,
    resource_id: Option<String>,
    target_resource_id: Option<String>,
    guid: Option<String>,
    mac: Option<String>,
    groups: Vec<Group>,
}

/// NSG `properties`: `(version, flows)` where flows are `(rule, [(mac, tuples)])`.
type NsgFlows = Vec<(Option<String>, Vec<(Option<String>, Vec<Slot>)>)>;

fn nsg_properties(v: &J) -> Model<(Option<u32>, Option<NsgFlows>)> {
    let (mut version, mut flows) = (None, None);
    for (key, value) in v.members()? {
        match key.as_deref() {
            Some("version") => version = opt_version(value)?,
            Some("flows") => {
                let rules = value.items()?.iter().map(nsg_rule).collect::<Model<_>>()?;
                set_once(&mut flows, rules)?
            }
            _ => {}
        }
    }
    Ok((version, flows))
}

#[allow(clippy::type_complexity)]
fn nsg_rule(v: &J) -> Model<(Option<String>, Vec<(Option<String>, Vec<Slot>)>)> {
    let (mut rule, mut flows) = (None, None);
    for (key, value) in v.members()? {
        match key.as_deref() {
            Some("rule") => rule = opt_str(value)?,
            Some("flows") => {
                let macs = value.items()?.iter().map(nsg_mac).collect::<Model<_>>()?;
                set_once(&mut flows, macs)?
            }
            _ => {}
        }
    }
    Ok((rule, flows.ok_or(())?))
}

fn nsg_mac(v: &J) -> Model<(Option<String>, Vec<Slot>)> {
    let (mut mac, mut tuples) = (None, None);
    for (key, value) in v.members()? {
        match key.as_deref() {
            Some("mac" | "macaddress") => mac = opt_str(value)?,
            Some("flowtuples") => set_once(&mut tuples, tuple_list(value)?)?,
            _ => {}
        }
    }
    Ok((mac, tuples.ok_or(())?))
}

/// VNet `flowRecords`: `[(aclID, [(rule, tuples)])]`.
type VnetFlows = Vec<(Option<String>, Vec<(Option<String>, Vec<Slot>)>)>;

fn vnet_records(v: &J) -> Model<VnetFlows> {
    let mut flows = None;
    for (key, value) in v.members()? {
        if key.as_deref() == Some("flows") {
            let acls = value.items()?.iter().map(vnet_acl).collect::<Model<_>>()?;
            set_once(&mut flows, acls)?;
        }
    }
    flows.ok_or(())
}

#[allow(clippy::type_complexity)]
fn vnet_acl(v: &J) -> Model<(Option<String>, Vec<(Option<String>, Vec<Slot>)>)> {
    let (mut acl, mut groups) = (None, None);
    for (key, value) in v.members()? {
        match key.as_deref() {
            Some("aclid") => acl = opt_str(value)?,
            Some("flowgroups") => {
                let list = value
                    .items()?
                    .iter()
                    .map(vnet_group)
                    .collect::<Model<_>>()?;
                set_once(&mut groups, list)?
            }
            _ => {}
        }
    }
    Ok((acl, groups.ok_or(())?))
}

fn vnet_group(v: &J) -> Model<(Option<String>, Vec<Slot>)> {
    let (mut rule, mut tuples) = (None, None);
    for (key, value) in v.members()? {
        match key.as_deref() {
            Some("rule") => rule = opt_str(value)?,
            Some("flowtuples") => set_once(&mut tuples, tuple_list(value)?)?,
            _ => {}
        }
    }
    Ok((rule, tuples.ok_or(())?))
}

fn model(root: &J) -> Model<Expected> {
    #[derive(Default)]
    struct Raw {
        time: Option<String>,
        system_id: Option<String>,
        category: Option<String>,
        resource_id: Option<String>,
        operation_name: Option<String>,
        properties: Option<(Option<u32>, Option<NsgFlows>)>,
        flow_log_version: Option<u32>,
        guid: Option<String>,
        mac: Option<String>,
        flow_log_resource_id: Option<String>,
        target_resource_id: Option<String>,
        flow_records: Option<VnetFlows>,
    }
    let mut raw = Raw::default();
    for (key, value) in root.members()? {
        match key.as_deref() {
            Some("time") => raw.time = opt_str(value)?,
            Some("systemid") => raw.system_id = opt_str(value)?,
            Some("category") => raw.category = opt_str(value)?,
            Some("resourceid") => raw.resource_id = opt_str(value)?,
            Some("operationname") => raw.operation_name = opt_str(value)?,
            Some("properties") => set_once(&mut raw.properties, nsg_properties(value)?)?,
            Some("flowlogversion") => raw.flow_log_version = opt_version(value)?,
            Some("flowlogguid") => raw.guid = opt_str(value)?,
            Some("macaddress" | "mac") => raw.mac = opt_str(value)?,
            Some("flowlogresourceid") => raw.flow_log_resource_id = opt_str(value)?,
            Some("targetresourceid") => raw.target_resource_id = opt_str(value)?,
            Some("flowrecords") => set_once(&mut raw.flow_records, vnet_records(value)?)?,
            _ => {}
        }
    }
    let mut expected = Expected {
        kind: FlowLogKind::Vnet,
        version: raw.flow_log_version,
        time: raw.time,
        system_id: raw.system_id,
        category: raw.category,
        operation_name: raw.operation_name,
        resource_id: None,
        target_resource_id: raw.target_resource_id,
        guid: raw.guid,
        mac: raw.mac.clone(),
        groups: Vec::new(),
    };
    if let Some(acls) = raw.flow_records {
        expected.resource_id = raw.flow_log_resource_id.or(raw.resource_id);
        for (acl_id, groups) in acls {
            for (rule, slots) in groups {
                expected.groups.push(Group {
                    rule,
                    acl_id: acl_id.clone(),
                    mac: raw.mac.clone(),
                    slots,
                });
            }
        }
        return Ok(expected);
    }
    let (version, flows) = raw.properties.ok_or(())?;
    expected.kind = FlowLogKind::Nsg;
    expected.version = version;
    expected.resource_id = raw.resource_id;
    for (rule, macs) in flows.ok_or(())? {
        for (mac, slots) in macs {
            expected.groups.push(Group {
                rule: rule.clone(),
                acl_id: None,
                mac: mac.or_else(|| raw.mac.clone()),
                slots,
            });
        }
    }
    Ok(expected)
}

fn slot_of(slot: TupleSlot<'_>) -> Slot {
    match slot {
        TupleSlot::Tuple(text) => Slot::Good(text.as_str().to_owned()),
        TupleSlot::Invalid(e) => match e.kind {
            TupleErrorKind::NotAString { .. } => Slot::Bad(e.kind, canonical(&e.tuple)),
            kind => Slot::Bad(kind, e.tuple),
        },
    }
}

/// What the decoder gave, in the model's terms; checks on the way that `invalid_tuples` lists
/// exactly the invalid slots, that `tuple_count` counts them all, and that an iteration over a
/// group's slots resumed from `position()` at any point gives the rest of them.
fn seen(record: &Record<'_>, resume_at: usize) -> Expected {
    let s = |v: &Option<flowlogd::flowlog::record::JsonStr<'_>>| {
        v.as_ref().map(|s| s.as_str().to_owned())
    };
    let mut invalid = Vec::new();
    let mut index = 0u32;
    let mut groups = Vec::new();
    for g in &record.groups {
        let all: Vec<TupleSlot<'_>> = g.tuples.iter().collect();
        assert_eq!(g.tuples.len(), all.len());
        assert_eq!(g.tuples.is_empty(), all.is_empty());
        for slot in &all {
            match slot {
                TupleSlot::Invalid(e) => {
                    assert_eq!(slot.as_str(), "", "an invalid slot shows as empty text");
                    invalid.push((index, e.clone()));
                }
                TupleSlot::Tuple(_) => {}
            }
            index += 1;
        }
        // Resumed: the first k slots, then `slots_from` the position after them.
        let k = resume_at % (all.len() + 1);
        let mut first = g.tuples.iter();
        let mut resumed: Vec<TupleSlot<'_>> = first.by_ref().take(k).collect();
        resumed.extend(g.tuples.slots_from(first.position()));
        assert_eq!(resumed, all, "slots resumed after {k} differ");
        groups.push(Group {
            rule: s(&g.rule),
            acl_id: s(&g.acl_id),
            mac: s(&g.mac),
            slots: all.into_iter().map(slot_of).collect(),
        });
    }
    assert_eq!(
        record.invalid_tuples(),
        invalid,
        "invalid_tuples() and the slots differ"
    );
    assert_eq!(record.tuple_count(), index as usize);
    Expected {
        kind: record.kind,
        version: record.version,
        time: s(&record.time),
        system_id: s(&record.system_id),
        category: s(&record.category),
        operation_name: s(&record.operation_name),
        resource_id: s(&record.resource_id),
        target_resource_id: s(&record.target_resource_id),
        guid: s(&record.guid),
        mac: s(&record.mac),
        groups,
    }
}

/// `next_parsed` gives, slot by slot and ending at the same positions, the tuple `parse_tuple`
/// reads from the slot `next` gives, or that slot itself; `parse_tuple` never panics.
fn in_place_reading_agrees(kind: FlowLogKind, tuples: &TupleArray<'_>) {
    let (mut fast, mut slow) = (tuples.iter(), tuples.iter());
    loop {
        match (fast.next_parsed(kind), slow.next()) {
            (None, None) => return,
            (Some(ParsedSlot::Tuple(tuple)), Some(TupleSlot::Tuple(text))) => {
                assert_eq!(Ok(tuple), parse_tuple(kind, text.as_str()), "read in place");
            }
            (Some(ParsedSlot::Other(slot)), Some(expected)) => {
                assert_eq!(slot, expected, "a slot left to the general way");
                let _ = parse_tuple(kind, slot.as_str());
            }
            (fast, slow) => panic!("in place {fast:?}, decoded first {slow:?}"),
        }
        assert_eq!(fast.position(), slow.position());
    }
}

fuzz_target!(|input: &[u8]| {
    // Where resumed iterations stop: any slot, depending on the input.
    let resume_at = input
        .iter()
        .fold(0usize, |h, b| h.wrapping_mul(31) ^ usize::from(*b));
    let decoded = decode_record(input);
    let got = decoded.as_ref().map(|record| {
        let got = seen(record, resume_at);
        for group in &record.groups {
            for kind in [FlowLogKind::Nsg, FlowLogKind::Vnet] {
                in_place_reading_agrees(kind, &group.tuples);
            }
        }
        got
    });
    // The pipeline's entry point (repairs into a scratch buffer) must agree.
    let mut scratch = Vec::new();
    match (&decoded, decode_record_in(input, &mut scratch)) {
        (Ok(_), Ok(other)) => {
            assert_eq!(got.as_ref().ok(), Some(&seen(&other, resume_at)));
        }
        (Err(a), Err(b)) => assert_eq!(a, &b),
        (a, b) => panic!("decode_record and decode_record_in differ: {a:?} / {b:?}"),
    }
    // Not valid JSON (invalid UTF-8, raw control characters, bad syntax): the decoder may still
    // accept it, repairing tuple strings, or because serde_json skips unknown values without
    // checking their UTF-8. Only "no panic" and the shape checked by `seen` hold then.
    let Ok(json) = serde_json::from_slice::<J>(input) else {
        return;
    };
    match (model(&json), got) {
        (Ok(expected), Ok(got)) => assert_eq!(got, expected),
        (Err(()), Err(_)) => {}
        (Ok(expected), Err(e)) => {
            panic!("decoder refused a record the model accepts: {e}\n{expected:?}")
        }
        (Err(()), Ok(got)) => panic!("decoder accepted a record the model refuses: {got:?}"),
    }
});
