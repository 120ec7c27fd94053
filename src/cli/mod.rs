//! Command-line interface: subcommands and their dispatch.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{Config, DEFAULT_CONFIG_PATH};

pub mod check;
pub mod cluster;
pub mod daemon;
pub mod decode;
pub mod generate;
pub mod registry;
pub mod setup;
pub mod tail;
pub mod template;

/// Ships Azure NSG and VNet flow logs from Blob Storage into Elasticsearch, one document per flow tuple.
#[derive(Debug, Parser)]
#[command(name = "flowlogd", version, about)]
pub struct Cli {
    /// Configuration file (TOML); `FLOWLOGD_…` environment variables override it.
    #[arg(long, short, global = true, env = "FLOWLOGD_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// Log format on stderr (default: `[log].format` of the config, else text).
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter in tracing's EnvFilter syntax, e.g. `info` or `flowlogd=debug`
    /// (default: `[log].level` of the config, else info).
    #[arg(long, global = true)]
    pub log_level: Option<String>,
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
    /// Poll every source forever (until SIGTERM/SIGINT): the daemon.
    Run,
    /// One full pass over every source, then print a JSON summary and exit.
    Once,
    /// Validate the config and reach every storage account and Elasticsearch.
    Check,
    /// Inspect or reset read progress.
    #[command(subcommand)]
    Registry(registry::RegistryCommand),
    /// Decode PT1H.json files into documents (NDJSON on stdout); problems go to stderr.
    Decode(decode::DecodeArgs),
    /// Write realistic, deterministic flow-log blobs (test data, benchmarks, demos).
    Gen(generate::GenArgs),
    /// Print the index template flowlogd installs (for curl users).
    Template(template::TemplateArgs),
    /// Print the newest flows straight from storage (no registry, no search engine), as a
    /// table or NDJSON documents; `--follow` keeps printing appended blocks.
    Tail(tail::TailArgs),
    /// Shared ownership (`[cluster] coordination_container`): owners, leases, checkpoints.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Import the Kibana data view and dashboard (`deploy/kibana/flowlogd.ndjson`).
    Setup(setup::SetupArgs),
}

/// Sets up logging: human-readable by default, JSON lines with `--log-format json`.
pub fn init_logging(format: LogFormat, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Runs the parsed command line and maps the outcome to the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let needs_config = matches!(
        cli.command,
        Command::Run
            | Command::Once
            | Command::Check
            | Command::Registry(_)
            | Command::Tail(_)
            | Command::Cluster(_)
    );
    let config = if needs_config {
        match Config::load(&cli.config) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("flowlogd: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let format = cli
        .log_format
        .unwrap_or(match config.as_ref().map(|c| c.log.format.as_str()) {
            Some("json") => LogFormat::Json,
            _ => LogFormat::Text,
        });
    if let Some(flag) = &cli.log_level
        && let Err(reason) = crate::config::check_log_filter(flag)
    {
        eprintln!("flowlogd: option --log-level: {reason}");
        return ExitCode::FAILURE;
    }
    // `tail` is read by a person: its output is the flows, and progress lines would only get
    // in the way, so it logs warnings and errors unless asked for more.
    let quiet_by_default = matches!(cli.command, Command::Tail(_)).then(|| "warn".to_owned());
    let level = cli
        .log_level
        .clone()
        .or(quiet_by_default)
        .or_else(|| config.as_ref().map(|c| c.log.level.clone()))
        .unwrap_or_else(|| "info".into());
    init_logging(format, &level);
    // These write their output to stdout, often into `| head`.
    let writes_stdout = matches!(
        cli.command,
        Command::Decode(_) | Command::Gen(_) | Command::Template(_) | Command::Tail(_)
    );
    let result = match (cli.command, config) {
        (Command::Decode(args), _) => decode::run(args),
        (Command::Gen(args), _) => generate::run(args),
        (Command::Template(args), _) => template::run(args),
        (Command::Setup(args), _) => setup::run(args),
        (Command::Run, Some(c)) => {
            runtime().and_then(|rt| rt.block_on(daemon::run(c, &cli.config)))
        }
        (Command::Once, Some(c)) => runtime().and_then(|rt| rt.block_on(daemon::once(c))),
        (Command::Check, Some(c)) => runtime().and_then(|rt| rt.block_on(check::run(c))),
        (Command::Registry(cmd), Some(c)) => registry::run(&c, cmd),
        (Command::Cluster(cmd), Some(c)) => {
            runtime().and_then(|rt| rt.block_on(cluster::run(c, cmd)))
        }
        (Command::Tail(args), Some(c)) => runtime().and_then(|rt| rt.block_on(tail::run(c, args))),
        (_, None) => Err(anyhow::anyhow!("this command needs a configuration")),
    };
    match result {
        Ok(code) => code,
        // A reader that closed the pipe early asked for no more: end quietly, as other
        // command-line filters do.
        Err(e) if writes_stdout && closed_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            // Once: as a log line (text or JSON, as configured) where the log shows errors,
            // else as a plain line, so that a filter such as `off` cannot hide it.
            if tracing::enabled!(tracing::Level::ERROR) {
                tracing::error!(error = %format!("{e:#}"), "flowlogd failed");
            } else {
                eprintln!("flowlogd: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Whether `e` comes from writing to a pipe whose reader is gone (EPIPE: Rust ignores SIGPIPE,
/// so the write fails instead of the process being killed).
fn closed_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
