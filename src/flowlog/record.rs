//! Serde model of one flow-log record (NSG or VNet), borrowing strings from the input, and its
//! flattening into rule/ACL groups of tuple strings.
use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

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

// Key spellings: the documented camelCase first, then the variants seen in docs and samples
// (`resourceid`, `resourceID`, `flowLogResourceId`, ...). Unknown keys are ignored.
#[derive(Deserialize)]
struct RawRecord<'a> {
    #[serde(borrow, default, alias = "Time")]
    time: Option<JsonStr<'a>>,
    #[serde(
        borrow,
        default,
        rename = "systemId",
        alias = "systemID",
        alias = "systemid",
        alias = "SystemId"
    )]
    system_id: Option<JsonStr<'a>>,
    #[serde(borrow, default, alias = "Category")]
    category: Option<JsonStr<'a>>,
    #[serde(
        borrow,
        default,
        rename = "resourceId",
        alias = "resourceID",
        alias = "resourceid",
        alias = "ResourceId"
    )]
    resource_id: Option<JsonStr<'a>>,
    #[serde(
        borrow,
        default,
        rename = "operationName",
        alias = "operationname",
        alias = "OperationName"
    )]
    operation_name: Option<JsonStr<'a>>,
    #[serde(borrow, default, alias = "Properties")]
    properties: Option<NsgProperties<'a>>,
    #[serde(
        default,
        rename = "flowLogVersion",
        alias = "flowlogversion",
        alias = "FlowLogVersion"
    )]
    flow_log_version: Option<VersionNumber>,
    #[serde(
        borrow,
        default,
        rename = "flowLogGUID",
        alias = "flowLogGuid",
        alias = "flowlogguid",
        alias = "FlowLogGUID"
    )]
    flow_log_guid: Option<JsonStr<'a>>,
    #[serde(
        borrow,
        default,
        rename = "macAddress",
        alias = "macaddress",
        alias = "MacAddress",
        alias = "mac"
    )]
    mac_address: Option<JsonStr<'a>>,
    #[serde(
        borrow,
        default,
        rename = "flowLogResourceID",
        alias = "flowLogResourceId",
        alias = "flowlogresourceid",
        alias = "FlowLogResourceID"
    )]
    flow_log_resource_id: Option<JsonStr<'a>>,
    #[serde(
        borrow,
        default,
        rename = "targetResourceID",
        alias = "targetResourceId",
        alias = "targetresourceid",
        alias = "TargetResourceID"
    )]
    target_resource_id: Option<JsonStr<'a>>,
    #[serde(
        borrow,
        default,
        rename = "flowRecords",
        alias = "flowrecords",
        alias = "FlowRecords"
    )]
    flow_records: Option<VnetFlowRecords<'a>>,
}

#[derive(Deserialize)]
struct NsgProperties<'a> {
    #[serde(default, rename = "Version", alias = "version")]
    version: Option<VersionNumber>,
    #[serde(borrow, default, alias = "Flows")]
    flows: Vec<NsgRuleFlows<'a>>,
}

#[derive(Deserialize)]
struct NsgRuleFlows<'a> {
    #[serde(borrow, default, alias = "Rule")]
    rule: Option<JsonStr<'a>>,
    #[serde(borrow, default, alias = "Flows")]
    flows: Vec<NsgMacFlows<'a>>,
}

#[derive(Deserialize)]
struct NsgMacFlows<'a> {
    #[serde(borrow, default, alias = "Mac", alias = "macAddress")]
    mac: Option<JsonStr<'a>>,
    #[serde(
        borrow,
        default,
        rename = "flowTuples",
        alias = "flowtuples",
        alias = "FlowTuples"
    )]
    flow_tuples: Vec<JsonStr<'a>>,
}

#[derive(Deserialize)]
struct VnetFlowRecords<'a> {
    #[serde(borrow, default, alias = "Flows")]
    flows: Vec<VnetAclFlows<'a>>,
}

#[derive(Deserialize)]
struct VnetAclFlows<'a> {
    #[serde(
        borrow,
        default,
        rename = "aclID",
        alias = "aclId",
        alias = "aclid",
        alias = "AclID"
    )]
    acl_id: Option<JsonStr<'a>>,
    #[serde(
        borrow,
        default,
        rename = "flowGroups",
        alias = "flowgroups",
        alias = "FlowGroups"
    )]
    flow_groups: Vec<VnetFlowGroup<'a>>,
}

#[derive(Deserialize)]
struct VnetFlowGroup<'a> {
    #[serde(borrow, default, alias = "Rule")]
    rule: Option<JsonStr<'a>>,
    #[serde(
        borrow,
        default,
        rename = "flowTuples",
        alias = "flowtuples",
        alias = "FlowTuples"
    )]
    flow_tuples: Vec<JsonStr<'a>>,
}

/// Which product wrote the record: the tuple layout depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlowLogKind {
    /// NSG flow logs (`properties.Version` 1 or 2).
    Nsg,
    /// VNet flow logs (`flowLogVersion` 4).
    Vnet,
}

impl FlowLogKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FlowLogKind::Nsg => "nsg",
            FlowLogKind::Vnet => "vnet",
        }
    }
}

/// The tuples of one rule (NSG) or one rule within one ACL (VNet), with what they share.
#[derive(Debug, Clone)]
pub struct FlowGroup<'a> {
    pub rule: Option<JsonStr<'a>>,
    /// VNet only: the NSG or Virtual Network Manager that decided.
    pub acl_id: Option<JsonStr<'a>>,
    /// NIC MAC address: per flow on NSG records, per record on VNet records.
    pub mac: Option<JsonStr<'a>>,
    pub tuples: Vec<JsonStr<'a>>,
}

/// One decoded record: record-level fields plus its tuple groups in document order.
#[derive(Debug, Clone)]
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

    /// Number of tuple strings in the record (good or bad).
    pub fn tuple_count(&self) -> usize {
        self.groups.iter().map(|g| g.tuples.len()).sum()
    }
}

/// Why a record could not be decoded at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record is not valid JSON for a flow-log record: {0}")]
    Json(String),
    #[error("record has neither NSG `properties.flows` nor VNet `flowRecords`")]
    UnknownShape,
}

/// Decodes one record (a JSON object) from `input`, borrowing strings from it.
pub fn decode_record(input: &[u8]) -> Result<Record<'_>, RecordError> {
    let raw: RawRecord<'_> =
        serde_json::from_slice(input).map_err(|e| RecordError::Json(e.to_string()))?;
    if let Some(flow_records) = raw.flow_records {
        let record_mac = raw.mac_address;
        let groups = flow_records
            .flows
            .into_iter()
            .flat_map(|acl| {
                let acl_id = acl.acl_id;
                let record_mac = record_mac.clone();
                acl.flow_groups.into_iter().map(move |group| FlowGroup {
                    rule: group.rule,
                    acl_id: acl_id.clone(),
                    mac: record_mac.clone(),
                    tuples: group.flow_tuples,
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
        let record_mac = raw.mac_address;
        let groups = properties
            .flows
            .into_iter()
            .flat_map(|rule_flows| {
                let rule = rule_flows.rule;
                let record_mac = record_mac.clone();
                rule_flows
                    .flows
                    .into_iter()
                    .map(move |mac_flows| FlowGroup {
                        rule: rule.clone(),
                        acl_id: None,
                        mac: mac_flows.mac.or_else(|| record_mac.clone()),
                        tuples: mac_flows.flow_tuples,
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
        assert!(matches!(record.groups[0].tuples[0].0, Cow::Borrowed(_)));
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
}
