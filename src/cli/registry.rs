//! `flowlogd registry list|show|reset`: inspect and reset read progress (stop the daemon first:
//! the registry is locked while it runs).
use std::process::ExitCode;

use clap::Subcommand;

use crate::config::Config;
use crate::config::document::BlobNames;
use crate::registry::{BlobEntry, Registry};

#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// One line per blob: source, state, offset/length, last update, name.
    List {
        /// Only this source.
        #[arg(long)]
        source: Option<String>,
    },
    /// One blob's entry as JSON.
    Show {
        /// Blob name (as listed).
        blob: String,
        /// Source of the blob (default: every source that has it).
        #[arg(long)]
        source: Option<String>,
    },
    /// Forget progress, so blobs are read again (document ids make re-reads duplicate-free).
    Reset {
        /// Only this source.
        #[arg(long)]
        source: Option<String>,
        /// Only blobs whose name starts with this.
        #[arg(long)]
        blob: Option<String>,
    },
}

/// One entry as `show` prints it; `container` (the source's) gives the blob id its documents
/// carry, so an entry can be matched with them (`azure.flowlog.blob_id`, `blobId`).
fn entry_json(source: &str, container: &str, blob: &str, e: &BlobEntry) -> serde_json::Value {
    serde_json::json!({
        "source": source,
        "blob": blob,
        "blob_id": BlobNames::new(container, blob).id,
        "offset": e.offset,
        "length_seen": e.length_seen,
        "etag": e.etag,
        "last_modified": chrono::DateTime::from_timestamp_millis(e.last_modified).map(|t| t.to_rfc3339()),
        "head_len": e.head_len,
        "state": format!("{:?}", e.state).to_lowercase(),
        "updated_at": chrono::DateTime::from_timestamp_millis(e.updated_at).map(|t| t.to_rfc3339()),
    })
}

pub fn run(config: &Config, command: RegistryCommand) -> anyhow::Result<ExitCode> {
    let registry = Registry::open(&config.registry.path)?;
    match command {
        RegistryCommand::List { source } => {
            let mut count = 0;
            for item in registry.list(source.as_deref()) {
                let (source, blob, e) = item?;
                let updated = chrono::DateTime::from_timestamp_millis(e.updated_at)
                    .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
                    .unwrap_or_default();
                println!(
                    "{source}\t{:?}\t{}/{}\t{updated}\t{blob}",
                    e.state, e.offset, e.length_seen
                );
                count += 1;
            }
            eprintln!("{count} entries");
        }
        RegistryCommand::Show { blob, source } => {
            let sources: Vec<String> = match source {
                Some(s) => vec![s],
                None => config.sources.iter().map(|s| s.name.clone()).collect(),
            };
            let mut found = false;
            for s in sources {
                if let Some(e) = registry.get(&s, &blob)? {
                    let container = config
                        .sources
                        .iter()
                        .find(|c| c.name == s)
                        .map_or("", |c| c.container.as_str());
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&entry_json(&s, container, &blob, &e))?
                    );
                    found = true;
                }
            }
            if !found {
                eprintln!("no registry entry for {blob:?}");
                return Ok(ExitCode::FAILURE);
            }
        }
        RegistryCommand::Reset { source, blob } => {
            let removed = registry.reset(source.as_deref(), blob.as_deref())?;
            if blob.is_none() {
                let names: Vec<String> = match &source {
                    Some(s) => vec![s.clone()],
                    None => config.sources.iter().map(|s| s.name.clone()).collect(),
                };
                for name in names {
                    registry.remove_source_state(&name)?;
                }
            }
            registry.flush()?;
            println!("removed {removed} entries");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_names_the_blob_id_its_documents_carry() {
        let entry = BlobEntry::new(0, 0, "", 0, 0);
        let shown = entry_json("vnet", "c", "b/PT1H.json", &entry);
        // Python's `xxhash.xxh3_64_hexdigest(b"c\0b/PT1H.json")`.
        assert_eq!(shown["blob_id"], "27b39d9d4bda1243");
        assert_eq!(shown["blob"], "b/PT1H.json");
    }
}
