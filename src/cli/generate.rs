//! `flowlogd gen`: writes deterministic, realistic PT1H.json blobs (see [`crate::generator`]) to a
//! file, or uploads them to Blob Storage in Azure's block layout (head, one block per record,
//! tail), optionally appending one record every interval like Network Watcher (`--follow`).
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use clap::Args;

use crate::config::storage::{AZURITE_ACCOUNT, AZURITE_BLOB_ENDPOINT, AuthConfig, StorageConfig};
use crate::generator::{GenKind, GenOptions, GeneratedBlob, generate};
use crate::metrics::StorageStats;
use crate::secret::Secret;
use crate::source::client::StorageClient;
use crate::source::upload::BlockBlobWriter;

#[derive(Debug, Args)]
pub struct GenArgs {
    /// Format: `nsg1`, `nsg2` or `vnet`.
    #[arg(long, default_value = "vnet")]
    pub kind: GenKind,
    /// Records (one per minute) in each blob.
    #[arg(long, default_value_t = 60)]
    pub records: usize,
    /// Tuples per record.
    #[arg(long, default_value_t = 20)]
    pub tuples: usize,
    /// Seed: the same seed and sizes give the same bytes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Hour the blob covers, UTC, as `YYYY-MM-DDTHH` (default 2026-11-21T16; with --upload and
    /// no --hour, the current hour).
    #[arg(long)]
    pub hour: Option<String>,
    /// Output file; `-` for stdout. The blob name Azure would use is printed on stderr.
    #[arg(long, default_value = "-")]
    pub out: PathBuf,
    /// Upload to Blob Storage instead of writing a file.
    #[arg(long)]
    pub upload: bool,
    /// Blob service URL for --upload (default: Azurite's, or the connection string's endpoint).
    #[arg(long)]
    pub blob_endpoint: Option<String>,
    /// Storage account for --upload.
    #[arg(long, default_value = AZURITE_ACCOUNT)]
    pub account: String,
    /// Environment variable holding the account key (default: Azurite's published development key).
    #[arg(long, conflicts_with = "connection_string_env")]
    pub account_key_env: Option<String>,
    /// Environment variable holding a storage connection string (instead of endpoint, account and key).
    #[arg(long)]
    pub connection_string_env: Option<String>,
    /// Container for --upload (created when missing).
    #[arg(long, default_value = "insights-logs-flowlogflowevent")]
    pub container: String,
    /// NICs (blobs) per hour for --upload, each with its own seed and MAC.
    #[arg(long, default_value_t = 1)]
    pub nics: u64,
    /// Hours of history to upload before the chosen hour (0 = just that hour).
    #[arg(long, default_value_t = 0)]
    pub history_hours: i64,
    /// With --upload: keep appending one record per NIC every this long (e.g. `60s`), moving to
    /// a new blob each hour, until interrupted.
    #[arg(long, value_parser = parse_duration_arg)]
    pub follow: Option<Duration>,
}

fn parse_duration_arg(text: &str) -> Result<Duration, String> {
    crate::config::parse_duration(text)
}

pub fn run(args: GenArgs) -> anyhow::Result<ExitCode> {
    if args.upload {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        return rt.block_on(upload(args));
    }
    let mut opts = options(&args, 0);
    if let Some(hour) = &args.hour {
        opts.hour_start =
            parse_hour(hour).with_context(|| format!("--hour {hour:?}: expected YYYY-MM-DDTHH"))?;
    }
    let blob = generate(&opts);
    let bytes = blob.bytes();
    if args.out.as_os_str() == "-" {
        std::io::stdout()
            .lock()
            .write_all(&bytes)
            .context("writing stdout")?;
    } else {
        std::fs::write(&args.out, &bytes)
            .with_context(|| format!("writing {}", args.out.display()))?;
    }
    eprintln!(
        "{} ({} tuples, {} bytes)",
        blob.name,
        blob.tuples,
        bytes.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn options(args: &GenArgs, nic: u64) -> GenOptions {
    GenOptions {
        kind: args.kind,
        records: args.records,
        tuples_per_record: args.tuples,
        seed: args.seed.wrapping_add(nic.wrapping_mul(7919)),
        ..GenOptions::default()
    }
}

/// `2026-11-21T16` → epoch seconds of that hour.
pub fn parse_hour(text: &str) -> anyhow::Result<i64> {
    let t = chrono::NaiveDateTime::parse_from_str(&format!("{text}:00:00"), "%Y-%m-%dT%H:%M:%S")?;
    Ok(t.and_utc().timestamp())
}

async fn upload(args: GenArgs) -> anyhow::Result<ExitCode> {
    let key = match &args.account_key_env {
        Some(var) => Secret::new(
            std::env::var(var).with_context(|| format!("--account-key-env: `{var}` is not set"))?,
        ),
        None => Secret::new(crate::config::storage::AZURITE_ACCOUNT_KEY),
    };
    let (account, blob_endpoint, auth) = match &args.connection_string_env {
        Some(var) => (
            None,
            args.blob_endpoint.clone(),
            AuthConfig::ConnectionString {
                connection_string: None,
                connection_string_env: Some(var.clone()),
                connection_string_file: None,
            },
        ),
        None => (
            Some(args.account.clone()),
            Some(
                args.blob_endpoint
                    .clone()
                    .unwrap_or_else(|| AZURITE_BLOB_ENDPOINT.to_owned()),
            ),
            AuthConfig::AccountKey {
                account_key: Some(key),
                account_key_env: None,
                account_key_file: None,
            },
        ),
    };
    let storage = StorageConfig {
        account,
        endpoint_suffix: crate::config::storage::DEFAULT_ENDPOINT_SUFFIX.to_owned(),
        blob_endpoint,
        container: args.container.clone(),
        auth,
        retry: Default::default(),
    };
    let client = StorageClient::from_config(&storage, Arc::new(StorageStats::default()))?;
    let writer = BlockBlobWriter::new(&client);
    writer.create_container().await?;
    let now = chrono::Utc::now().timestamp();
    let hour = match &args.hour {
        Some(h) => parse_hour(h)?,
        None => now - now.rem_euclid(3600),
    };
    let mut total = 0u64;
    for past in (1..=args.history_hours).rev() {
        total += upload_hour(&writer, &args, hour - past * 3600, args.records).await?;
    }
    // With --follow the current hour starts with the minutes already past, then grows.
    let initial = if args.follow.is_some() && args.hour.is_none() {
        ((now - hour) / 60) as usize + 1
    } else {
        args.records
    };
    total += upload_hour(&writer, &args, hour, initial.min(60)).await?;
    eprintln!("uploaded {total} tuples to container {}", args.container);
    let Some(interval) = args.follow else {
        return Ok(ExitCode::SUCCESS);
    };
    let mut current_hour = hour;
    let mut written = initial.min(60);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
        let now = chrono::Utc::now().timestamp();
        let this_hour = now - now.rem_euclid(3600);
        if this_hour != current_hour {
            current_hour = this_hour;
            written = 0;
        }
        if written >= 60 {
            continue;
        }
        for nic in 0..args.nics {
            let blob = generate_for(&args, nic, current_hour, written + 1);
            let record = blob.blocks[written + 1].clone();
            let record = if written == 0 {
                record
            } else {
                record[1..].to_vec()
            };
            writer
                .append_flow_log_records(&blob.name, &[Bytes::from(record)])
                .await?;
        }
        written += 1;
        eprintln!(
            "appended record {written} to {} blob(s) of hour {}",
            args.nics,
            hour_label(current_hour)
        );
    }
}

fn generate_for(args: &GenArgs, nic: u64, hour: i64, records: usize) -> GeneratedBlob {
    let mut opts = options(args, nic);
    opts.hour_start = hour;
    opts.records = records;
    generate(&opts)
}

async fn upload_hour(
    writer: &BlockBlobWriter,
    args: &GenArgs,
    hour: i64,
    records: usize,
) -> anyhow::Result<u64> {
    let mut tuples = 0;
    for nic in 0..args.nics {
        let blob = generate_for(args, nic, hour, records);
        writer.delete_blob(&blob.name).await?;
        let blocks: Vec<Bytes> = blob.blocks.iter().map(|b| Bytes::from(b.clone())).collect();
        writer.stage_and_commit(&blob.name, &blocks).await?;
        tuples += blob.tuples;
    }
    Ok(tuples)
}

fn hour_label(hour: i64) -> String {
    chrono::DateTime::from_timestamp(hour, 0)
        .map(|t| t.format("%Y-%m-%dT%H").to_string())
        .unwrap_or_default()
}
