//! `flowlogd cluster status`: who owns which unit under shared ownership, read from the
//! ownership blobs alone (no registry, no search engine), so it runs beside the daemons.
use std::process::ExitCode;

use clap::Subcommand;

use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// One line per unit: source, owner (`-` when free), seconds until the claim expires
    /// (negative: expired), checkpoint age in seconds (`-`: none yet), bytes not yet mirrored
    /// as read (`?` when a length could not be read), unit.
    Status,
}

pub async fn run(config: Config, command: ClusterCommand) -> anyhow::Result<ExitCode> {
    match command {
        ClusterCommand::Status => status(&config).await,
    }
}

async fn status(config: &Config) -> anyhow::Result<ExitCode> {
    if config.cluster.coordination_container.is_none() {
        anyhow::bail!(
            "shared ownership is off: [cluster] coordination_container is not set in this configuration"
        );
    }
    let lines = crate::ownership::status(config).await?;
    println!("source\towner\tlease_s\tcheckpoint_age_s\tlag_bytes\tunit");
    for l in &lines {
        println!(
            "{}\t{}\t{:.1}\t{}\t{}\t{}",
            l.source,
            l.owner.as_deref().unwrap_or("-"),
            l.lease_left_ms as f64 / 1000.0,
            l.checkpoint_age_ms
                .map_or("-".to_owned(), |a| format!("{:.1}", a as f64 / 1000.0)),
            l.lag_bytes.map_or("?".to_owned(), |b| b.to_string()),
            l.unit,
        );
    }
    if lines.is_empty() {
        eprintln!("no ownership blobs yet (no instance has claimed a unit)");
    }
    Ok(ExitCode::SUCCESS)
}
