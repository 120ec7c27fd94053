//! What documents look like, as the configuration states it: the field layout (`schema`), the
//! optional provenance fields (`resource_ids`, `blob_path`) and the ECS version the layout
//! follows. Config types only (documents are written by `crate::encode::document`); a shared
//! leaf that imports nothing from the crate, so that config and the sink's template and
//! cluster setup can name them without an import pointing up the flow.
use serde::Deserialize;

/// ECS version the field layout follows (written to `ecs.version`).
pub const ECS_VERSION: &str = "8.17.0";

/// Which field names documents use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schema {
    /// Elastic Common Schema names (`source.ip`, `network.transport`, …). The default.
    #[default]
    Ecs,
    /// The flat names of Microsoft's documented Logstash pipeline (`srcIp`, `destPort`, …),
    /// for dashboards built on that pipeline.
    Logstash,
}

impl Schema {
    /// The field holding `container/blob` of the blob a document came from.
    pub fn blob_path_field(self) -> &'static str {
        match self {
            Schema::Ecs => "log.file.path",
            Schema::Logstash => "blobPath",
        }
    }

    /// The field holding the blob id (`encode::document::blob_id`) of the blob a document came
    /// from.
    pub fn blob_id_field(self) -> &'static str {
        match self {
            Schema::Ecs => "azure.flowlog.blob_id",
            Schema::Logstash => "blobId",
        }
    }
}

impl std::str::FromStr for Schema {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ecs" => Ok(Schema::Ecs),
            "logstash" => Ok(Schema::Logstash),
            other => Err(format!(
                "unknown schema {other:?} (expected \"ecs\" or \"logstash\")"
            )),
        }
    }
}

/// Which provenance fields documents carry besides what every document has (the parsed names:
/// subscription, resource groups, NSG, VNet, subnet, NIC, flow-log name, region, MAC; and
/// `log.offset`). Set per source by `resource_ids` and `blob_path` (see `config.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Provenance {
    /// ECS: the full ARM ids (`azure.flowlog.resource_id`, `.target_resource_id`, and
    /// `.acl_id` also when it names an NSG or is the platform's all-zero GUID), the flow log's
    /// GUID, and what only those ids hold (`azure.flowlog.network_watcher`, the flow-log
    /// resource's own `azure.flowlog.resource_group`). ~570 bytes a VNet document, queried by
    /// nobody the names do not serve, so off by default. No effect on the `logstash` layout.
    pub resource_ids: bool,
    /// `log.file.path` (`blobPath` in the `logstash` layout): `container/blob`, ~225 bytes a
    /// document with Azure's blob names. Off by default: every document names its blob by its
    /// blob id (`encode::document::BlobContext::blob_id`, 16 characters), which
    /// `on_rewrite = "replace"` deletes by, and the path's other parts (resource, hour, MAC)
    /// are fields of their own.
    pub blob_path: bool,
}
