//! `flowlogd template`: prints the composable index template flowlogd installs, for people who
//! set up the cluster with curl (or Terraform) and for tests that need the exact mappings.
use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;

use crate::config::document::Schema;
use crate::index_pattern::IndexPattern;
use crate::sink::template::{self, TemplateOptions};

#[derive(Debug, Args)]
pub struct TemplateArgs {
    /// Document layout: `ecs` or `logstash`.
    #[arg(long, default_value = "ecs")]
    pub schema: Schema,
    /// Index pattern of the source, e.g. `vnet-flow-logs-%{+xxxx.ww}`; the template matches its
    /// wildcard (`vnet-flow-logs-*`).
    #[arg(long, default_value = "flowlogs-%{+xxxx.ww}")]
    pub index: String,
    /// Primary shards per index.
    #[arg(long, default_value_t = 1)]
    pub shards: u32,
    /// Replicas per index.
    #[arg(long, default_value_t = 1)]
    pub replicas: u32,
    /// Name of an existing ILM policy for `index.lifecycle.name` (Elasticsearch only).
    #[arg(long)]
    pub lifecycle_policy: Option<String>,
    /// `index.codec`; `default` leaves the engine's own.
    #[arg(long, default_value = crate::config::DEFAULT_CODEC)]
    pub codec: String,
}

/// Prints the template body (pretty JSON) on stdout and how to install it on stderr.
pub fn run(args: TemplateArgs) -> anyhow::Result<ExitCode> {
    let pattern =
        IndexPattern::parse(&args.index).with_context(|| format!("--index {:?}", args.index))?;
    let wildcard = pattern.wildcard();
    let options = TemplateOptions {
        number_of_shards: args.shards,
        number_of_replicas: args.replicas,
        // flowlogd refuses data streams (see `Config::validate`), so it never prints one.
        data_stream: false,
        lifecycle_policy: args.lifecycle_policy,
        codec: args.codec,
    };
    let body = template::index_template(args.schema, &wildcard, &options);
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &body).context("writing stdout")?;
    writeln!(out).context("writing stdout")?;
    eprintln!(
        "install with: curl -X PUT \"$ES/_index_template/{}\" -H 'Content-Type: application/json' --data-binary @template.json",
        template::template_name(&wildcard)
    );
    Ok(ExitCode::SUCCESS)
}
