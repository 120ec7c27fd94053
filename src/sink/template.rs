//! Index templates and lifecycle policies: the explicit mappings of every field the ECS and
//! Logstash layouts of [`crate::encode::document`] write, the composable index template per index
//! pattern, and the ILM policy that deletes old indices.
//!
//! Decisions (see also `docs/DESIGN.md`):
//! - `dynamic: false`. Every field flowlogd writes is mapped here, and a unit test fails when a
//!   document field is not. With `true`, a field added to the encoder without a mapping would get
//!   a type guessed from its first value (numeric strings become `text`), fixed for the rest of
//!   that weekly index, and a later document could then be rejected. With `strict`, such a
//!   field would send every document to the dead-letter file. `false` keeps unknown fields in
//!   `_source` without indexing them: nothing is rejected, nothing is guessed.
//! - `date_detection: false`: no string is ever turned into a date by guessing.
//! - Every `keyword` has `ignore_above: 1024`: a giant value (a resource id gone wrong) is kept
//!   in `_source` but not indexed, instead of failing the document (Lucene's term limit).
//! - Logstash counters arrive as numeric strings (as Microsoft's pipeline leaves them) and are
//!   mapped `long`: Elasticsearch and OpenSearch coerce them, so sums work on those dashboards.
//!   `unixtimestamp` is `long`, not `date`: it is seconds for NSG and milliseconds for VNet.
//! - Storage (measured by `scripts/bench-engine.sh`, see docs/PERFORMANCE.md): the index codec is
//!   `best_compression` by default (stored `_source` is most of the disk), and fields no
//!   dashboard aggregates and that are unique or long per document ([`SEARCH_ONLY_FIELDS`]) keep
//!   their index for filters but have no doc values; `log.offset` ([`SOURCE_ONLY_FIELDS`]) is
//!   only kept in `_source`, as nobody filters on a byte offset.
//! - Values that are the same in every ECS document ([`ECS_CONSTANTS`]: `event.kind`,
//!   `event.category`, `event.type`, `cloud.provider`, `ecs.version`) are in no document; the
//!   mapping's `_meta` names them, and on Elasticsearch [`add_constant_fields`] maps them as
//!   `constant_keyword` fields that answer queries and aggregations at no cost per document.
//! - Priority `200 + literal length of the pattern`: above Elastic's built-in templates (100,
//!   e.g. `logs-*-*`), and a more specific pattern (`flowlogs-nsg-*`) outranks a broader one
//!   (`flowlogs-*`), so two sources never collide on equal priorities.
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::config::DEFAULT_CODEC;
use crate::config::document::{ECS_VERSION, Schema};

/// Bumped whenever the mappings change (written to the template's `version`).
pub const TEMPLATE_VERSION: u32 = 6;

/// Priority of flowlogd's templates before the pattern-length bonus; see the module docs.
pub const BASE_PRIORITY: u32 = 200;

/// Longest `keyword` value that is indexed.
pub const KEYWORD_IGNORE_ABOVE: u32 = 1024;

/// The Elasticsearch field types flowlogd uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    Date,
    Ip,
    Keyword,
    Long,
    Integer,
    GeoPoint,
}

impl FieldType {
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::Date => "date",
            FieldType::Ip => "ip",
            FieldType::Keyword => "keyword",
            FieldType::Long => "long",
            FieldType::Integer => "integer",
            FieldType::GeoPoint => "geo_point",
        }
    }

    fn mapping(self) -> Value {
        match self {
            FieldType::Keyword => json!({"type": "keyword", "ignore_above": KEYWORD_IGNORE_ABOVE}),
            other => json!({"type": other.as_str()}),
        }
    }
}

use FieldType::{Date, GeoPoint, Integer, Ip, Keyword, Long};

/// Every field of the ECS layout, by dotted path.
pub const ECS_FIELDS: &[(&str, FieldType)] = &[
    ("@timestamp", Date),
    ("source.ip", Ip),
    ("source.port", Integer),
    ("source.packets", Long),
    ("source.bytes", Long),
    ("destination.ip", Ip),
    ("destination.port", Integer),
    ("destination.packets", Long),
    ("destination.bytes", Long),
    // Enrichment (`[enrich]`, `[[network]]`), present where a lookup answered.
    ("source.network.name", Keyword),
    ("source.azure.service", Keyword),
    ("source.azure.region", Keyword),
    ("source.azure.service_tag", Keyword),
    ("source.geo.country_iso_code", Keyword),
    ("source.geo.country_name", Keyword),
    ("source.geo.continent_name", Keyword),
    ("source.geo.city_name", Keyword),
    ("source.geo.location", GeoPoint),
    ("source.as.number", Long),
    ("source.as.organization.name", Keyword),
    ("destination.network.name", Keyword),
    ("destination.azure.service", Keyword),
    ("destination.azure.region", Keyword),
    ("destination.azure.service_tag", Keyword),
    ("destination.geo.country_iso_code", Keyword),
    ("destination.geo.country_name", Keyword),
    ("destination.geo.continent_name", Keyword),
    ("destination.geo.city_name", Keyword),
    ("destination.geo.location", GeoPoint),
    ("destination.as.number", Long),
    ("destination.as.organization.name", Keyword),
    ("network.transport", Keyword),
    ("network.iana_number", Keyword),
    ("network.direction", Keyword),
    ("network.community_id", Keyword),
    ("network.packets", Long),
    ("network.bytes", Long),
    ("event.action", Keyword),
    ("rule.name", Keyword),
    ("azure.flowlog.flow_type", Keyword),
    ("azure.flowlog.state", Keyword),
    ("azure.flowlog.encryption", Keyword),
    ("azure.flowlog.acl_id", Keyword),
    ("azure.flowlog.nsg", Keyword),
    ("azure.flowlog.mac", Keyword),
    ("azure.flowlog.blob_id", Keyword),
    ("azure.flowlog.kind", Keyword),
    ("azure.flowlog.version", Integer),
    ("azure.flowlog.guid", Keyword),
    ("azure.flowlog.resource_id", Keyword),
    ("azure.flowlog.target_resource_id", Keyword),
    ("azure.flowlog.resource_group", Keyword),
    ("azure.flowlog.network_watcher", Keyword),
    ("azure.flowlog.name", Keyword),
    ("azure.flowlog.vnet", Keyword),
    ("azure.flowlog.subnet", Keyword),
    ("azure.flowlog.nic", Keyword),
    ("azure.resource_group", Keyword),
    ("cloud.account.id", Keyword),
    ("cloud.region", Keyword),
    ("log.file.path", Keyword),
    ("log.offset", Long),
];

/// What the ECS layout says once per index instead of once per document: the same in every
/// document, so no document carries them. On Elasticsearch (7.7+) [`add_constant_fields`] maps
/// them as `constant_keyword` fields, which cost nothing per document and answer queries and
/// aggregations as if every document held the value. Not on OpenSearch: its `constant_keyword`
/// (2.14+) answers with the index name instead of the value in `fields` and aggregations
/// (measured on 2.19.6, `sink_engine` tests), and 2.14/2.15 cannot create such an index.
pub const ECS_CONSTANTS: &[(&str, &str)] = &[
    ("event.kind", "event"),
    ("event.category", "network"),
    ("event.type", "connection"),
    ("cloud.provider", "azure"),
    ("ecs.version", ECS_VERSION),
];

/// Adds [`ECS_CONSTANTS`] as `constant_keyword` fields to an ECS [`index_template`] body, for
/// an Elasticsearch cluster (see [`ECS_CONSTANTS`] for why not OpenSearch); the `logstash`
/// layout has no constants and is left as it is.
pub fn add_constant_fields(template: &mut Value) {
    if template["_meta"]["schema"] != schema_name(Schema::Ecs) {
        return;
    }
    let Some(properties) = template
        .pointer_mut("/template/mappings/properties")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for (path, value) in ECS_CONSTANTS {
        insert_path(
            properties,
            path,
            json!({"type": "constant_keyword", "value": value}),
        );
    }
}

/// Every field of the Logstash layout (Microsoft's pipeline names).
pub const LOGSTASH_FIELDS: &[(&str, FieldType)] = &[
    ("@timestamp", Date),
    ("Subscription", Keyword),
    ("ResourceGroup", Keyword),
    ("VirtualNetwork", Keyword),
    ("NetworkSecurityGroup", Keyword),
    ("unixtimestamp", Long),
    ("srcIp", Ip),
    ("destIp", Ip),
    ("srcPort", Integer),
    ("destPort", Integer),
    ("protocol", Keyword),
    ("trafficflow", Keyword),
    ("traffic", Keyword),
    ("flowstate", Keyword),
    ("packetsSourceToDest", Long),
    ("bytesSentSourceToDest", Long),
    ("packetsDestToSource", Long),
    ("bytesSentDestToSource", Long),
    ("blobId", Keyword),
    ("blobPath", Keyword),
    // Enrichment (`[enrich]`, `[[network]]`), present where a lookup answered.
    ("srcNetwork", Keyword),
    ("srcService", Keyword),
    ("srcRegion", Keyword),
    ("srcServiceTag", Keyword),
    ("srcCountry", Keyword),
    ("srcCountryName", Keyword),
    ("srcCity", Keyword),
    ("srcLocation", GeoPoint),
    ("srcAsn", Long),
    ("srcAsOrg", Keyword),
    ("destNetwork", Keyword),
    ("destService", Keyword),
    ("destRegion", Keyword),
    ("destServiceTag", Keyword),
    ("destCountry", Keyword),
    ("destCountryName", Keyword),
    ("destCity", Keyword),
    ("destLocation", GeoPoint),
    ("destAsn", Long),
    ("destAsOrg", Keyword),
];

/// Fields filtered on (a community id pasted from another tool, a resource id) but never
/// aggregated: indexed, without doc values. Each is unique per flow or ~100 bytes long, so doc
/// values would cost ~30 bytes a document for no query (`scripts/bench-engine.sh`).
pub const SEARCH_ONLY_FIELDS: &[&str] = &[
    "blobId",
    "azure.flowlog.blob_id",
    "blobPath",
    "network.community_id",
    "azure.flowlog.guid",
    "azure.flowlog.acl_id",
    "azure.flowlog.resource_id",
    "azure.flowlog.target_resource_id",
];

/// Fields kept only in `_source` (neither indexed nor with doc values): where in the blob a
/// tuple came from is read when a document is inspected, never searched.
pub const SOURCE_ONLY_FIELDS: &[&str] = &["log.offset"];

/// The field table of a layout.
pub fn fields(schema: Schema) -> &'static [(&'static str, FieldType)] {
    match schema {
        Schema::Ecs => ECS_FIELDS,
        Schema::Logstash => LOGSTASH_FIELDS,
    }
}

/// The `mappings` object of a layout.
pub fn mappings(schema: Schema) -> Value {
    let root = properties(schema, |_| true);
    let mut meta = json!({"managed_by": "flowlogd", "schema": schema_name(schema)});
    if schema == Schema::Ecs {
        // Every index says what its documents leave out (see `ECS_CONSTANTS`).
        meta["ecs_version"] = json!(ECS_VERSION);
        meta["constants"] = ECS_CONSTANTS
            .iter()
            .map(|(path, value)| ((*path).to_owned(), json!(value)))
            .collect::<Map<String, Value>>()
            .into();
    }
    json!({
        "dynamic": false,
        "date_detection": false,
        "_meta": meta,
        "properties": root,
    })
}

/// The `properties` object mapping the fields of `schema` whose dotted path `wanted` accepts.
fn properties(schema: Schema, wanted: impl Fn(&str) -> bool) -> Map<String, Value> {
    let mut root = Map::new();
    for (path, ty) in fields(schema).iter().filter(|(path, _)| wanted(path)) {
        let mut mapping = ty.mapping();
        if SEARCH_ONLY_FIELDS.contains(path) {
            mapping["doc_values"] = json!(false);
        } else if SOURCE_ONLY_FIELDS.contains(path) {
            mapping["index"] = json!(false);
            mapping["doc_values"] = json!(false);
        }
        insert_path(&mut root, path, mapping);
    }
    root
}

/// A `PUT <indices>/_mapping` body adding the blob id field (`azure.flowlog.blob_id`,
/// `blobId`) to indices created before it existed (template version 5 and older). Their
/// mapping is `dynamic: false`, so without it the field of documents written there after an
/// upgrade is not searchable, and `on_rewrite = "replace"`, which deletes by it, would miss
/// them until the index rolls over. Adding a field is allowed on a live index; one already
/// mapped the same way is left as it is.
pub fn blob_id_mapping(schema: Schema) -> Value {
    let field = schema.blob_id_field();
    json!({"properties": properties(schema, |path| path == field)})
}

/// Puts `leaf` at dotted `path` of a `properties` object, creating `{"properties":…}` objects
/// for the parents. `@timestamp` has no dot and stays one field.
fn insert_path(properties: &mut Map<String, Value>, path: &str, leaf: Value) {
    match path.split_once('.') {
        None => {
            properties.insert(path.to_owned(), leaf);
        }
        Some((head, rest)) => {
            let parent = properties
                .entry(head.to_owned())
                .or_insert_with(|| json!({"properties": {}}));
            if let Some(children) = parent.get_mut("properties").and_then(Value::as_object_mut) {
                insert_path(children, rest, leaf);
            }
        }
    }
}

pub fn schema_name(schema: Schema) -> &'static str {
    match schema {
        Schema::Ecs => "ecs",
        Schema::Logstash => "logstash",
    }
}

/// What goes into a template besides the layout and the pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateOptions {
    pub number_of_shards: u32,
    pub number_of_replicas: u32,
    /// Make the pattern a data stream (`data_stream: {}`).
    pub data_stream: bool,
    /// ILM policy the indices follow (`index.lifecycle.name`); none on OpenSearch.
    pub lifecycle_policy: Option<String>,
    /// `index.codec`; `default` leaves the engine's default (LZ4) and is not written.
    pub codec: String,
}

impl Default for TemplateOptions {
    fn default() -> Self {
        TemplateOptions {
            number_of_shards: 1,
            number_of_replicas: 1,
            data_stream: false,
            lifecycle_policy: None,
            codec: DEFAULT_CODEC.to_owned(),
        }
    }
}

/// Name of the template flowlogd installs for an index wildcard: `flowlogd-` and the wildcard
/// with `*` as `x` and trailing separators cut (`flowlogs-*` → `flowlogd-flowlogs`).
pub fn template_name(wildcard: &str) -> String {
    let trimmed = wildcard.trim_end_matches(['*', '-', '.', '_']);
    let body: String = trimmed
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                'x'
            }
        })
        .collect();
    if body.is_empty() {
        "flowlogd-all".to_owned()
    } else {
        format!("flowlogd-{body}")
    }
}

/// The template's priority for an index wildcard (see the module docs).
pub fn priority(wildcard: &str) -> u32 {
    BASE_PRIORITY + wildcard.chars().filter(|&c| c != '*').count() as u32
}

/// The body of `PUT _index_template/<name>` for indices matching `wildcard`.
pub fn index_template(schema: Schema, wildcard: &str, options: &TemplateOptions) -> Value {
    let mut index = json!({
        "number_of_shards": options.number_of_shards,
        "number_of_replicas": options.number_of_replicas,
    });
    if let Some(policy) = &options.lifecycle_policy {
        index["lifecycle"] = json!({"name": policy});
    }
    if options.codec != "default" {
        index["codec"] = json!(options.codec);
    }
    let mut template = json!({
        "index_patterns": [wildcard],
        "priority": priority(wildcard),
        "version": TEMPLATE_VERSION,
        "_meta": {
            "managed_by": "flowlogd",
            "description": "Azure NSG and VNet flow-log tuples written by flowlogd",
            "schema": schema_name(schema),
            "ecs_version": ECS_VERSION,
        },
        "template": {
            "settings": {"index": index},
            "mappings": mappings(schema),
        },
    });
    if schema != Schema::Ecs {
        // The Logstash layout follows Microsoft's pipeline, not ECS.
        if let Some(meta) = template["_meta"].as_object_mut() {
            meta.remove("ecs_version");
        }
    }
    if options.data_stream {
        template["data_stream"] = json!({});
    }
    template
}

/// Name of the ILM policy for a retention: `flowlogd-delete-after-30d` (dated indices) or
/// `flowlogd-rollover-delete-after-30d` (data streams).
pub fn lifecycle_policy_name(delete_after: Duration, data_stream: bool) -> String {
    let kind = if data_stream {
        "rollover-delete-after"
    } else {
        "delete-after"
    };
    format!("flowlogd-{kind}-{}", es_duration(delete_after))
}

/// The body of `PUT _ilm/policy/<name>`: delete indices `delete_after` after they were created
/// (dated indices) or rolled over (data streams, which roll over daily or at 50 GB per shard).
pub fn lifecycle_policy(delete_after: Duration, data_stream: bool) -> Value {
    let hot_actions = if data_stream {
        json!({"rollover": {"max_age": "1d", "max_primary_shard_size": "50gb"}})
    } else {
        // Dated indices are "rolled over" by their name changing; an ILM rollover action
        // would need a write alias and fail.
        json!({})
    };
    json!({
        "policy": {
            "_meta": {"managed_by": "flowlogd"},
            "phases": {
                "hot": {"min_age": "0ms", "actions": hot_actions},
                "delete": {"min_age": es_duration(delete_after), "actions": {"delete": {}}},
            }
        }
    })
}

/// The body of `PUT _plugins/_ism/policies/<name>` (OpenSearch's ISM plugin), with the same
/// retention as [`lifecycle_policy`]: indices are deleted `delete_after` after they were created
/// (dated indices) or rolled over (data streams). ISM attaches a policy to new indices through
/// the policy's own `ism_template` (not through the index template), so the policy lists the
/// wildcards it governs, at the priority of their index templates.
pub fn ism_policy(delete_after: Duration, data_stream: bool, wildcards: &[&str]) -> Value {
    let age = es_duration(delete_after);
    let (hot_actions, to_delete) = if data_stream {
        (
            json!([{"rollover": {"min_index_age": "1d", "min_primary_shard_size": "50gb"}}]),
            json!({"min_rollover_age": age}),
        )
    } else {
        (json!([]), json!({"min_index_age": age}))
    };
    let ism_templates: Vec<Value> = wildcards
        .iter()
        .map(|w| json!({"index_patterns": [w], "priority": priority(w)}))
        .collect();
    json!({
        "policy": {
            "description": format!("flowlogd: delete flow log indices {age} after {}",
                if data_stream { "rollover" } else { "creation" }),
            "default_state": "hot",
            "states": [
                {
                    "name": "hot",
                    "actions": hot_actions,
                    "transitions": [{"state_name": "delete", "conditions": to_delete}]
                },
                {"name": "delete", "actions": [{"delete": {}}], "transitions": []}
            ],
            "ism_template": ism_templates
        }
    })
}

/// A duration in Elasticsearch time units, in the largest whole unit (`30d`, `36h`, `90s`).
pub fn es_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_nanos() != 0 || secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    for (unit, len) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if secs.is_multiple_of(len) {
            return format!("{}{unit}", secs / len);
        }
    }
    format!("{secs}s")
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::net::IpAddr;

    use super::*;
    use crate::bulk_buffer::BulkBuffer;
    use crate::config::document::Provenance;
    use crate::encode::document::{BlobContext, DocumentEncoder};
    use crate::generator::{GenKind, GenOptions, generate};
    use crate::index_pattern::IndexPattern;
    use crate::pipeline::BlobDecoder;

    /// Resolves a dotted path in a `properties` tree to its mapping.
    fn mapping_at<'a>(mappings: &'a Value, path: &str) -> Option<&'a Value> {
        let mut node = mappings;
        let parts: Vec<&str> = path.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            node = node.get("properties")?.get(*part)?;
            if i + 1 < parts.len() && node.get("type").is_some() {
                return None;
            }
        }
        Some(node)
    }

    /// Every leaf of a document, as (dotted path, value); arrays of scalars are one leaf each,
    /// and so is a `{"lat", "lon"}` object (a `geo_point`).
    fn leaves(prefix: &str, v: &Value, out: &mut Vec<(String, Value)>) {
        match v {
            Value::Object(map)
                if map.len() == 2 && map.contains_key("lat") && map.contains_key("lon") =>
            {
                out.push((prefix.to_owned(), v.clone()))
            }
            Value::Object(map) => {
                for (k, child) in map {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    leaves(&path, child, out);
                }
            }
            Value::Array(items) => items.iter().for_each(|i| leaves(prefix, i, out)),
            scalar => out.push((prefix.to_owned(), scalar.clone())),
        }
    }

    /// Whether Elasticsearch would accept `value` for a field of type `ty`.
    fn accepts(ty: &str, value: &Value) -> bool {
        let integer = |min: i128, max: i128| {
            match value {
                Value::Number(n) => n.as_i64().map(i128::from).or(n.as_u64().map(i128::from)),
                // Coercion: numeric strings are accepted by numeric fields.
                Value::String(s) => s.parse::<i128>().ok(),
                _ => None,
            }
            .is_some_and(|n| (min..=max).contains(&n))
        };
        match ty {
            "ip" => value.as_str().is_some_and(|s| s.parse::<IpAddr>().is_ok()),
            "long" => integer(i64::MIN.into(), i64::MAX.into()),
            "integer" => integer(i32::MIN.into(), i32::MAX.into()),
            "keyword" => value.is_string(),
            "geo_point" => ["lat", "lon"]
                .iter()
                .all(|k| value[k].is_f64() || value[k].is_i64()),
            "date" => value
                .as_str()
                .is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok()),
            _ => false,
        }
    }

    /// Records for fields the generator never writes: a VNet flow log on a subnet and one on a
    /// NIC, IPv6, a named protocol without ports (GRE) and an unassigned one; an NSG v2 record.
    const EXTRA_VNET: &[&str] = &[
        r#"{"time":"2026-11-21T16:00:52.0000000Z","flowLogVersion":4,"flowLogGUID":"g","macAddress":"00224871C205","flowLogResourceID":"/SUBSCRIPTIONS/S/RESOURCEGROUPS/NETWORKWATCHERRG/PROVIDERS/MICROSOFT.NETWORK/NETWORKWATCHERS/NETWORKWATCHER_WESTEUROPE/FLOWLOGS/FL","targetResourceID":"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/vn/subnets/sn","flowRecords":{"flows":[{"aclID":"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkSecurityGroups/nsg1","flowGroups":[{"rule":"R","flowTuples":["1795276803606,fd00::1,2001:db8::2,23956,443,6,O,E,NX,3,767,2,1580","1795276803606,10.0.0.1,10.0.0.2,0,0,47,O,B,NX,,,,","1795276803606,10.0.0.1,10.0.0.2,0,0,200,O,B,NX,,,,"]}]}]}}"#,
        r#"{"time":"2026-11-21T16:00:52.0000000Z","flowLogVersion":4,"flowLogGUID":"g","macAddress":"00224871C205","flowLogResourceID":"/SUBSCRIPTIONS/S/RESOURCEGROUPS/NETWORKWATCHERRG/PROVIDERS/MICROSOFT.NETWORK/NETWORKWATCHERS/NETWORKWATCHER_WESTEUROPE/FLOWLOGS/FL","targetResourceID":"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkInterfaces/nic1","flowRecords":{"flows":[{"aclID":"x","flowGroups":[{"rule":"R","flowTuples":["1795276803606,10.0.0.1,10.0.0.2,1,2,17,I,C,X,1,2,3,4"]}]}]}}"#,
    ];

    /// Public peers every test lookup answers for: service tag, City and ASN (with and
    /// without an organization), IPv4 and IPv6; a named network on the private side.
    const ENRICHED_VNET: &str = r#"{"time":"2026-11-21T16:00:52.0000000Z","flowLogVersion":4,"flowLogGUID":"g","macAddress":"00224871C205","flowLogResourceID":"/SUBSCRIPTIONS/S/RESOURCEGROUPS/NETWORKWATCHERRG/PROVIDERS/MICROSOFT.NETWORK/NETWORKWATCHERS/NETWORKWATCHER_WESTEUROPE/FLOWLOGS/FL","targetResourceID":"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/vn","flowRecords":{"flows":[{"aclID":"x","flowGroups":[{"rule":"R","flowTuples":["1795276803606,10.4.0.5,20.38.108.5,40000,443,6,O,B,NX,,,,","1795276803607,81.2.69.160,10.0.0.6,5000,22,6,I,D,NX,0,0,0,0","1795276803607,2001:4860::8,fd00::6,5000,22,6,I,D,NX,0,0,0,0","1795276803608,20.38.108.5,10.4.0.9,443,50000,6,I,B,NX,,,,"]}]}]}}"#;

    /// Documents of every kind (NSG v1, NSG v2, VNet from the generator, plus the extra records)
    /// in `schema`, with the real encoder writing `provenance`, and with every lookup and the
    /// community id on when `enriched`.
    fn documents(schema: Schema, provenance: Provenance, enriched: bool) -> Vec<Value> {
        let mut docs = Vec::new();
        let mut encoder =
            DocumentEncoder::new(schema, IndexPattern::parse("flows-%{+xxxx.ww}").unwrap())
                .with_provenance(provenance)
                .with_community_id(enriched);
        if enriched {
            let no_rules =
                std::sync::Arc::new(crate::enrich::Filter::from_config(&[], &[]).unwrap());
            encoder = encoder
                .with_enrichment(&crate::encode::document::tests::test_enricher(), &no_rules);
        }
        let mut decode = |name: &str, bytes: &[u8], encoder: &mut DocumentEncoder| {
            let mut out = BulkBuffer::new();
            let mut decoder = BlobDecoder::new(encoder, BlobContext::new("insights-logs", name), 0);
            let mut problems = Vec::new();
            decoder.feed(bytes, &mut out, &mut |p| problems.push(p));
            assert!(problems.is_empty(), "{problems:?}");
            assert!(!out.is_empty());
            for i in 0..out.len() {
                docs.push(serde_json::from_slice::<Value>(out.doc(i)).unwrap());
            }
        };
        for kind in [GenKind::Nsg1, GenKind::Nsg2, GenKind::Vnet] {
            let blob = generate(&GenOptions {
                kind,
                records: 10,
                tuples_per_record: 30,
                ..GenOptions::default()
            });
            decode(&blob.name, &blob.bytes(), &mut encoder);
        }
        let mut extra_records = EXTRA_VNET.to_vec();
        extra_records.push(ENRICHED_VNET);
        let extra = format!("{{\"records\":[{}]}}", extra_records.join(","));
        decode("extra/PT1H.json", extra.as_bytes(), &mut encoder);
        docs
    }

    fn check_documents_against_template(schema: Schema) {
        let template = index_template(schema, "flows-*", &TemplateOptions::default());
        let mappings = &template["template"]["mappings"];
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        // Every field a configuration can write: the default, and everything on.
        let everything = Provenance {
            resource_ids: true,
            blob_path: true,
        };
        let docs = documents(schema, Provenance::default(), false)
            .into_iter()
            .chain(documents(schema, everything, true));
        for doc in docs {
            let mut out = Vec::new();
            leaves("", &doc, &mut out);
            for (path, value) in out {
                let Some(mapping) = mapping_at(mappings, &path) else {
                    panic!(
                        "{schema:?}: document field `{path}` is not mapped in the template (value {value})"
                    )
                };
                let ty = mapping["type"].as_str().unwrap_or_default();
                assert!(
                    accepts(ty, &value),
                    "{schema:?}: `{path}` is mapped `{ty}` but holds {value}"
                );
                *seen.entry(path).or_default() += 1;
            }
        }
        // And the other way round: no mapping is left over from a renamed or removed field.
        let mapped: BTreeSet<&str> = fields(schema).iter().map(|(p, _)| *p).collect();
        let written: BTreeSet<&str> = seen.keys().map(String::as_str).collect();
        let unused: Vec<_> = mapped.difference(&written).collect();
        assert!(
            unused.is_empty(),
            "{schema:?}: mapped but never written: {unused:?}"
        );
    }

    #[test]
    fn every_ecs_document_field_is_mapped_with_a_type_that_accepts_its_values() {
        check_documents_against_template(Schema::Ecs);
    }

    #[test]
    fn every_logstash_document_field_is_mapped_with_a_type_that_accepts_its_values() {
        check_documents_against_template(Schema::Logstash);
    }

    #[test]
    fn intended_types_of_the_fields_that_matter() {
        let ecs = mappings(Schema::Ecs);
        for (path, ty) in [
            ("@timestamp", "date"),
            ("source.ip", "ip"),
            ("destination.ip", "ip"),
            ("source.port", "integer"),
            ("destination.port", "integer"),
            ("source.bytes", "long"),
            ("destination.packets", "long"),
            ("network.bytes", "long"),
            ("network.packets", "long"),
            ("network.community_id", "keyword"),
            ("network.transport", "keyword"),
            ("event.action", "keyword"),
            ("rule.name", "keyword"),
            ("cloud.account.id", "keyword"),
            ("log.offset", "long"),
        ] {
            assert_eq!(mapping_at(&ecs, path).unwrap()["type"], ty, "ecs {path}");
        }
        let ls = mappings(Schema::Logstash);
        for (path, ty) in [
            ("@timestamp", "date"),
            ("srcIp", "ip"),
            ("destIp", "ip"),
            ("srcPort", "integer"),
            ("destPort", "integer"),
            ("packetsSourceToDest", "long"),
            ("bytesSentSourceToDest", "long"),
            ("packetsDestToSource", "long"),
            ("bytesSentDestToSource", "long"),
            ("unixtimestamp", "long"),
            ("protocol", "keyword"),
            ("Subscription", "keyword"),
        ] {
            assert_eq!(
                mapping_at(&ls, path).unwrap()["type"],
                ty,
                "logstash {path}"
            );
        }
        assert_eq!(ecs["dynamic"], false);
        assert_eq!(
            mapping_at(&ecs, "azure.flowlog.mac").unwrap()["ignore_above"],
            KEYWORD_IGNORE_ABOVE
        );
    }

    #[test]
    fn constants_are_in_no_document_and_no_default_mapping_and_constant_keywords_on_request() {
        let everything = Provenance {
            resource_ids: true,
            blob_path: true,
        };
        for doc in documents(Schema::Ecs, everything, true) {
            for (path, _) in ECS_CONSTANTS {
                assert!(
                    doc.pointer(&format!("/{}", path.replace('.', "/")))
                        .is_none(),
                    "{path}"
                );
            }
        }
        let plain = index_template(Schema::Ecs, "flows-*", &TemplateOptions::default());
        let mappings = &plain["template"]["mappings"];
        for (path, value) in ECS_CONSTANTS {
            assert!(mapping_at(mappings, path).is_none(), "{path}");
            assert_eq!(mappings["_meta"]["constants"][path], *value);
        }
        assert_eq!(mappings["_meta"]["ecs_version"], ECS_VERSION);

        let mut with = plain.clone();
        add_constant_fields(&mut with);
        let mappings = &with["template"]["mappings"];
        assert_eq!(
            mapping_at(mappings, "event.category").unwrap(),
            &json!({"type": "constant_keyword", "value": "network"})
        );
        assert_eq!(
            mapping_at(mappings, "ecs.version").unwrap(),
            &json!({"type": "constant_keyword", "value": ECS_VERSION})
        );
        assert_eq!(
            mapping_at(mappings, "event.action").unwrap()["type"],
            "keyword",
            "event's other fields stay"
        );
        let logstash = index_template(Schema::Logstash, "flows-*", &TemplateOptions::default());
        let mut unchanged = logstash.clone();
        add_constant_fields(&mut unchanged);
        assert_eq!(unchanged, logstash);
    }

    #[test]
    fn template_shape_names_and_priorities() {
        let options = TemplateOptions {
            number_of_shards: 3,
            number_of_replicas: 0,
            data_stream: false,
            lifecycle_policy: None,
            codec: "default".into(),
        };
        let t = index_template(Schema::Logstash, "vnet-flow-logs-*", &options);
        assert_eq!(t["index_patterns"], json!(["vnet-flow-logs-*"]));
        assert_eq!(t["priority"], 200 + "vnet-flow-logs-".len());
        assert_eq!(
            t["template"]["settings"]["index"],
            json!({"number_of_shards": 3, "number_of_replicas": 0}),
            "codec `default` is the engine's own and not written"
        );
        assert!(t.get("data_stream").is_none());
        assert_eq!(t["_meta"]["schema"], "logstash");
        assert!(t["_meta"].get("ecs_version").is_none());
        let t = index_template(Schema::Ecs, "x-*", &TemplateOptions::default());
        assert_eq!(
            t["template"]["settings"]["index"]["codec"],
            "best_compression"
        );

        let ds = TemplateOptions {
            data_stream: true,
            lifecycle_policy: Some("p".into()),
            ..TemplateOptions::default()
        };
        let t = index_template(Schema::Ecs, "flowlogs-vnet", &ds);
        assert_eq!(t["data_stream"], json!({}));
        assert_eq!(t["template"]["settings"]["index"]["lifecycle"]["name"], "p");

        assert_eq!(template_name("flowlogs-*"), "flowlogd-flowlogs");
        assert_eq!(template_name("nsg-*.*"), "flowlogd-nsg");
        assert_eq!(template_name("a-*-b"), "flowlogd-a-x-b");
        assert_eq!(template_name("flowlogs"), "flowlogd-flowlogs");
        assert_eq!(template_name("*"), "flowlogd-all");
        assert!(priority("flowlogs-nsg-*") > priority("flowlogs-*"));
    }

    #[test]
    fn search_only_fields_are_indexed_without_doc_values_and_source_only_fields_are_neither() {
        let ecs = mappings(Schema::Ecs);
        let logstash = mappings(Schema::Logstash);
        for path in SEARCH_ONLY_FIELDS {
            let m = mapping_at(&ecs, path)
                .or_else(|| mapping_at(&logstash, path))
                .unwrap_or_else(|| panic!("{path} is in neither layout"));
            assert_eq!(m["doc_values"], false, "{path}");
            assert!(m.get("index").is_none(), "{path} stays searchable");
        }
        for path in SOURCE_ONLY_FIELDS {
            let m = mapping_at(&ecs, path).unwrap_or_else(|| panic!("{path} is not an ECS field"));
            assert_eq!(
                (&m["index"], &m["doc_values"]),
                (&json!(false), &json!(false))
            );
        }
        // Everything a dashboard sums or groups by keeps its doc values.
        for path in ["network.bytes", "source.ip", "rule.name", "@timestamp"] {
            assert!(
                mapping_at(&ecs, path).unwrap().get("doc_values").is_none(),
                "{path}"
            );
        }
    }

    #[test]
    fn lifecycle_policies() {
        let day = Duration::from_secs(86_400);
        assert_eq!(
            lifecycle_policy_name(30 * day, false),
            "flowlogd-delete-after-30d"
        );
        assert_eq!(
            lifecycle_policy_name(Duration::from_secs(36 * 3600), true),
            "flowlogd-rollover-delete-after-36h"
        );
        let p = ism_policy(30 * day, false, &["flowlogs-*", "nsg-*"]);
        let policy = &p["policy"];
        assert_eq!(policy["default_state"], "hot");
        assert_eq!(
            policy["states"][0]["transitions"][0],
            json!({"state_name": "delete", "conditions": {"min_index_age": "30d"}})
        );
        assert_eq!(policy["states"][1]["actions"], json!([{"delete": {}}]));
        assert_eq!(
            policy["ism_template"][1]["index_patterns"],
            json!(["nsg-*"]),
            "one ism_template per wildcard, so every pattern of the config is governed"
        );
        assert_eq!(
            policy["ism_template"][0]["priority"],
            priority("flowlogs-*")
        );
        let p = ism_policy(2 * day, true, &["flowlogs"]);
        assert_eq!(
            p["policy"]["states"][0]["transitions"][0]["conditions"],
            json!({"min_rollover_age": "2d"})
        );
        assert!(p["policy"]["states"][0]["actions"][0]["rollover"].is_object());
        let p = lifecycle_policy(7 * day, false);
        assert_eq!(p["policy"]["phases"]["delete"]["min_age"], "7d");
        assert_eq!(p["policy"]["phases"]["hot"]["actions"], json!({}));
        let p = lifecycle_policy(7 * day, true);
        assert_eq!(
            p["policy"]["phases"]["hot"]["actions"]["rollover"]["max_age"],
            "1d"
        );
        assert_eq!(es_duration(Duration::from_secs(90)), "90s");
        assert_eq!(es_duration(Duration::from_secs(120)), "2m");
        assert_eq!(es_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(es_duration(Duration::ZERO), "0ms");
    }
}
