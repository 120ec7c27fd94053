//! `flowlogd decode`: PT1H.json files (or stdin) → one document per line on stdout, for
//! troubleshooting blobs downloaded by hand and for tests.
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;

use crate::bulk_buffer::BulkBuffer;
use crate::config::document::{Provenance, Schema};
use crate::config::enrich::{EnrichConfig, FilterRuleConfig, NetworkConfig, validate};
use crate::encode::document::{BlobContext, DocumentEncoder};
use crate::enrich::{Enricher, Filter};
use crate::flowlog::envelope::DEFAULT_MAX_RECORD_LEN;
use crate::index_pattern::IndexPattern;
use crate::pipeline::{BlobDecoder, DecodeProblem};

#[derive(Debug, Args)]
pub struct DecodeArgs {
    /// Document layout: `ecs` or `logstash`.
    #[arg(long, default_value = "ecs")]
    pub schema: Schema,
    /// Index pattern used for the bulk action lines (`--bulk`), e.g. `vnet-flow-logs-%{+xxxx.ww}`.
    #[arg(long, default_value = "flowlogs-%{+xxxx.ww}")]
    pub index: String,
    /// Container name used in the blob id, `log.file.path` and document ids.
    #[arg(long, default_value = "local")]
    pub container: String,
    /// Blob name used in the blob id, `log.file.path` and document ids (default: the file path
    /// as given).
    #[arg(long)]
    pub blob: Option<String>,
    /// Also write the full ARM ids, as `resource_ids = true` of a source.
    #[arg(long)]
    pub resource_ids: bool,
    /// Also write the blob path (`log.file.path`, `blobPath`), as `blob_path = true` of a source.
    #[arg(long)]
    pub blob_path: bool,
    /// Also write `network.community_id`, as `community_id = true` of a source.
    #[arg(long)]
    pub community_id: bool,
    /// Print bulk action lines before each document (a ready `_bulk` body).
    #[arg(long)]
    pub bulk: bool,
    /// Largest record accepted, in bytes, as `max_record_bytes` of a source; a larger one is
    /// reported and skipped. Memory holds one record, not its documents.
    #[arg(long, default_value_t = DEFAULT_MAX_RECORD_LEN)]
    pub max_record_bytes: usize,
    /// Enrich and filter as the `[enrich]`, `[[network]]` and `[[filter]]` tables of this
    /// file say (a flowlogd configuration file; its other tables are ignored). Dropped tuples
    /// are counted per rule on stderr.
    #[arg(long, value_name = "CONFIG")]
    pub enrichment: Option<PathBuf>,
    /// PT1H.json files to decode; `-` reads stdin.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// The enrichment tables of a configuration file, read without the rest of it.
#[derive(Debug, Default, serde::Deserialize)]
struct EnrichmentTables {
    #[serde(default)]
    enrich: EnrichConfig,
    #[serde(default, rename = "network")]
    networks: Vec<NetworkConfig>,
    #[serde(default, rename = "filter")]
    filters: Vec<FilterRuleConfig>,
}

/// The lookups and rules of `--enrichment FILE` (none without it).
fn enrichment(file: Option<&Path>) -> anyhow::Result<(Arc<Enricher>, Arc<Filter>)> {
    let tables = match file {
        None => EnrichmentTables::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--enrichment {}", path.display()))?;
            let tables: EnrichmentTables = toml::from_str(&text).map_err(|e| {
                // The message only: toml's full error quotes the source line (a secret?).
                anyhow::anyhow!("--enrichment {}: {}", path.display(), e.message())
            })?;
            validate(&tables.enrich, &tables.networks, &tables.filters)
                .with_context(|| format!("--enrichment {}", path.display()))?;
            tables
        }
    };
    Ok(crate::enrich::build(
        &tables.enrich,
        &tables.networks,
        &tables.filters,
    )?)
}

/// Decodes every file; returns exit code 1 when anything failed to parse (good tuples are still printed).
pub fn run(args: DecodeArgs) -> anyhow::Result<ExitCode> {
    let pattern =
        IndexPattern::parse(&args.index).with_context(|| format!("--index {:?}", args.index))?;
    let (enricher, filter) = enrichment(args.enrichment.as_deref())?;
    let mut encoder = DocumentEncoder::new(args.schema, pattern)
        .with_provenance(Provenance {
            resource_ids: args.resource_ids,
            blob_path: args.blob_path,
        })
        .with_community_id(args.community_id)
        .with_enrichment(&enricher, &filter);
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 20, stdout.lock());
    let mut problems = 0u64;
    // Reused from file to file: fresh megabyte buffers cost page faults on every file.
    let mut buffers = Buffers {
        bulk: BulkBuffer::new(),
        read: vec![0u8; 1 << 20],
    };
    for path in &args.files {
        let label = path.display().to_string();
        let reader: Box<dyn Read> = if label == "-" {
            Box::new(io::stdin().lock())
        } else {
            match File::open(path) {
                Ok(f) => Box::new(f),
                // One unreadable file fails the run, not the files after it.
                Err(e) => {
                    problems += 1;
                    eprintln!("{label}: cannot open: {e}");
                    continue;
                }
            }
        };
        let blob_name = args.blob.clone().unwrap_or_else(|| label.clone());
        problems += decode_one(
            &mut encoder,
            &args,
            (&label, &blob_name),
            reader,
            &mut buffers,
            &mut out,
        )?;
    }
    out.flush().context("writing stdout")?;
    for (rule, dropped) in filter.drop_counts() {
        eprintln!("filter {rule}: {dropped} tuple(s) dropped");
    }
    Ok(if problems > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Documents written to stdout at a time.
const SLICE_BYTES: usize = 1 << 20;

fn write_out(out: &mut impl Write, bulk: &BulkBuffer, with_actions: bool) -> io::Result<()> {
    if with_actions {
        return out.write_all(&bulk.body);
    }
    for item in &bulk.items {
        out.write_all(&bulk.body[item.doc_start..item.end])?;
    }
    Ok(())
}

/// The documents of a slice, and the bytes of one `read`.
struct Buffers {
    bulk: BulkBuffer,
    read: Vec<u8>,
}

/// Decodes one file (`label` in messages, named `blob_name` in documents); returns how many
/// problems it reported.
fn decode_one(
    encoder: &mut DocumentEncoder,
    args: &DecodeArgs,
    (label, blob_name): (&str, &str),
    mut reader: Box<dyn Read>,
    buffers: &mut Buffers,
    out: &mut impl Write,
) -> anyhow::Result<u64> {
    let mut decoder = BlobDecoder::new(encoder, BlobContext::new(&args.container, blob_name), 0)
        .with_max_record_len(args.max_record_bytes);
    let Buffers { bulk, read: chunk } = buffers;
    bulk.clear();
    let mut problems = 0u64;
    let mut length = 0u64;
    loop {
        let n = match reader.read(chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {label}")),
        };
        length += n as u64;
        decoder.push(&chunk[..n]);
        let mut report = |problem: DecodeProblem| {
            problems += 1;
            eprintln!("{label}: offset {}: {problem}", problem.offset());
        };
        while let Some(mut record) = decoder.next_record(&mut report) {
            // A large record's documents are written out a slice at a time, so memory holds
            // the record and one slice, not all its documents (a 200 MB record has ~4 GB).
            while !record.write(bulk, SLICE_BYTES, &mut report) {
                write_out(out, bulk, args.bulk)?;
                bulk.clear();
            }
            write_out(out, bulk, args.bulk)?;
            bulk.clear();
        }
    }
    // Both leftovers run to the end of the file: they start that many bytes before it.
    let end = decoder.finish();
    if end.partial_record_bytes > 0 {
        problems += 1;
        eprintln!(
            "{label}: offset {}: file ends inside a record ({} bytes cut off)",
            length.saturating_sub(end.partial_record_bytes),
            end.partial_record_bytes
        );
    }
    if end.trailing_garbage_bytes > 0 {
        problems += 1;
        eprintln!(
            "{label}: offset {}: {} bytes that are not flow-log records",
            length.saturating_sub(end.trailing_garbage_bytes),
            end.trailing_garbage_bytes
        );
    }
    let stats = decoder.stats();
    if stats.unknown_versions > 0 {
        eprintln!(
            "{label}: {} records with an unknown flow-log version (decoded by shape)",
            stats.unknown_versions
        );
    }
    tracing::debug!(file = %label, records = stats.records, documents = stats.documents, problems, "decoded");
    Ok(problems)
}
