//! What documents look like, as the configuration states it: the field layout (`schema`), the
//! optional provenance fields (`resource_ids`, `blob_path`), the ECS version the layout
//! follows, and how documents name their blob (`BlobNames`: written by the encoder, searched
//! by the rewrite delete, printed by `registry show`). Config types only (documents are written by `crate::encode::document`); a shared
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

    /// The field holding the blob id ([`BlobNames::id`]) of the blob a document came from.
    pub fn blob_id_field(self) -> &'static str {
        match self {
            Schema::Ecs => "azure.flowlog.blob_id",
            Schema::Logstash => "blobId",
        }
    }
}

/// The bytes a blob's ids are derived from (its blob id, its documents' ids): the container, a
/// NUL and the blob name. NUL cannot occur in container names, so (container, blob) pairs never
/// collide.
pub fn blob_key(container: &str, blob: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(container.len() + blob.len() + 1);
    key.extend_from_slice(container.as_bytes());
    key.push(0);
    key.extend_from_slice(blob.as_bytes());
    key
}

/// How documents name the blob they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobNames {
    /// The blob id every document carries (`azure.flowlog.blob_id`, `blobId`): 16 lowercase
    /// hex digits of a 64-bit XXH3 of [`blob_key`], stable across releases. The blob's path
    /// costs ~225 bytes a document; this 16, and `on_rewrite = "replace"` finds a rewritten
    /// blob's documents by it (two of a million blobs share one with odds of ~3·10⁻⁸).
    pub id: String,
    /// `container/blob`, in documents with `blob_path = true` and in those of releases before
    /// the blob id.
    pub path: String,
}

impl BlobNames {
    pub fn new(container: &str, blob: &str) -> Self {
        BlobNames {
            id: format!(
                "{:016x}",
                xxhash_rust::xxh3::xxh3_64(&blob_key(container, blob))
            ),
            path: format!("{container}/{blob}"),
        }
    }

    /// The `(field, value)` terms any of which finds this blob's documents in `schema`: its
    /// blob id, and its path for documents of earlier releases (and of `blob_path = true`).
    pub fn terms(&self, schema: Schema) -> [(&'static str, &str); 2] {
        [
            (schema.blob_id_field(), self.id.as_str()),
            (schema.blob_path_field(), self.path.as_str()),
        ]
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
    /// blob id ([`BlobNames::id`], 16 characters), which
    /// `on_rewrite = "replace"` deletes by, and the path's other parts (resource, hour, MAC)
    /// are fields of their own.
    pub blob_path: bool,
}
