//! `flowlogd gen`: writes deterministic, realistic PT1H.json blobs (see [`crate::generator`]).
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;

use crate::generator::{GenKind, GenOptions, generate};

#[derive(Debug, Args)]
pub struct GenArgs {
    /// Format: `nsg1`, `nsg2` or `vnet`.
    #[arg(long, default_value = "vnet")]
    pub kind: GenKind,
    /// Records (one per minute) in the blob.
    #[arg(long, default_value_t = 60)]
    pub records: usize,
    /// Tuples per record.
    #[arg(long, default_value_t = 20)]
    pub tuples: usize,
    /// Seed: the same seed and sizes give the same bytes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Hour the blob covers, UTC, as `YYYY-MM-DDTHH` (default 2026-11-21T16).
    #[arg(long)]
    pub hour: Option<String>,
    /// Output file; `-` for stdout. The blob name Azure would use is printed on stderr.
    #[arg(long, default_value = "-")]
    pub out: PathBuf,
}

pub fn run(args: GenArgs) -> anyhow::Result<ExitCode> {
    let mut opts = GenOptions {
        kind: args.kind,
        records: args.records,
        tuples_per_record: args.tuples,
        seed: args.seed,
        ..GenOptions::default()
    };
    if let Some(hour) = &args.hour {
        opts.hour_start = parse_hour(hour).with_context(|| format!("--hour {hour:?}: expected YYYY-MM-DDTHH"))?;
    }
    let blob = generate(&opts);
    let bytes = blob.bytes();
    if args.out.as_os_str() == "-" {
        std::io::stdout().lock().write_all(&bytes).context("writing stdout")?;
    } else {
        std::fs::write(&args.out, &bytes).with_context(|| format!("writing {}", args.out.display()))?;
    }
    eprintln!("{} ({} tuples, {} bytes)", blob.name, blob.tuples, bytes.len());
    Ok(ExitCode::SUCCESS)
}

/// `2026-11-21T16` → epoch seconds of that hour.
pub fn parse_hour(text: &str) -> anyhow::Result<i64> {
    let t = chrono::NaiveDateTime::parse_from_str(&format!("{text}:00:00"), "%Y-%m-%dT%H:%M:%S")?;
    Ok(t.and_utc().timestamp())
}
