//! Command-line interface: subcommands and their dispatch.
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

pub mod decode;
pub mod generate;

/// Ships Azure NSG and VNet flow logs from Blob Storage into Elasticsearch, one document per flow tuple.
#[derive(Debug, Parser)]
#[command(name = "flowlogd", version, about)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "FLOWLOGD_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `flowlogd=debug`.
    #[arg(long, global = true, default_value = "info", env = "FLOWLOGD_LOG_LEVEL")]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Decode PT1H.json files into documents (NDJSON on stdout); problems go to stderr.
    Decode(decode::DecodeArgs),
    /// Write realistic, deterministic flow-log blobs (test data, benchmarks, demos).
    Gen(generate::GenArgs),
}

/// Sets up logging: human-readable by default, JSON lines with `--log-format json`.
pub fn init_logging(format: LogFormat, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
    };
}

/// Runs the parsed command line and maps the outcome to the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    init_logging(cli.log_format, &cli.log_level);
    let result = match cli.command {
        Command::Decode(args) => decode::run(args),
        Command::Gen(args) => generate::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("flowlogd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
