//! `flowlogd check`: validates the configuration, then reaches every storage account and the
//! Elasticsearch cluster, printing what works and what does not.
use std::process::ExitCode;
use std::sync::Arc;

use crate::config::Config;
use crate::metrics::StorageStats;
use crate::sink::bulk::{BulkSink, LifecycleCheck, PrivilegeCheck, SetupTarget};
use crate::source::client::StorageClient;

pub async fn run(config: Config) -> anyhow::Result<ExitCode> {
    let mut failures = 0;
    println!("ok    config: {} source(s)", config.sources.len());
    for source in &config.sources {
        let label = format!("source {} (container {})", source.name, source.container);
        match StorageClient::from_config(&source.storage(), Arc::new(StorageStats::default())) {
            Err(e) => {
                failures += 1;
                println!("FAIL  {label}: {e}");
            }
            Ok(client) => match client.list_blobs_paged("", Some(1)).await {
                Ok(blobs) => println!(
                    "ok    {label}: listed {} at {}",
                    if blobs.is_empty() {
                        "an empty container"
                    } else {
                        "blobs"
                    },
                    client.display_url()
                ),
                Err(e) => {
                    failures += 1;
                    println!("FAIL  {label}: {e}");
                }
            },
        }
    }
    if let Some(container) = &config.cluster.coordination_container {
        // Reads only: claiming needs write access too, which only a write would show.
        match crate::ownership::status(&config).await {
            Ok(units) => println!(
                "ok    cluster: instance {}, coordination container {container}: {} unit(s), {} owned now (claiming needs write access to it)",
                config.cluster.instance_id(),
                units.len(),
                units.iter().filter(|u| u.owner.is_some()).count()
            ),
            Err(e) => {
                failures += 1;
                println!("FAIL  cluster: coordination container {container}: {e}");
            }
        }
    }
    match BulkSink::new(&config.elasticsearch) {
        Err(e) => {
            failures += 1;
            println!("FAIL  elasticsearch: {e}");
        }
        Ok(sink) => {
            let targets = SetupTarget::for_sources(&config.sources)?;
            match sink.check_targets(&targets).await {
                Ok(info) => {
                    println!(
                        "ok    elasticsearch: {:?} {} (cluster {})",
                        info.distribution, info.version, info.cluster_name
                    );
                    match sink.check_lifecycle(&info).await {
                        Ok(LifecycleCheck::NotConfigured) => {
                            println!(
                                "ok    lifecycle: none (delete_after not set; indices are kept)"
                            )
                        }
                        Ok(LifecycleCheck::Present { engine, policy }) => {
                            println!("ok    lifecycle: {engine} policy {policy} installed")
                        }
                        Ok(LifecycleCheck::Missing { engine, policy }) => println!(
                            "warn  lifecycle: {engine} available, policy {policy} not installed yet ({})",
                            if config.elasticsearch.install_template {
                                "flowlogd installs it when it starts"
                            } else {
                                "install_template = false: install it yourself"
                            }
                        ),
                        Ok(LifecycleCheck::Unavailable { reason }) => {
                            println!("skip  lifecycle: {reason}")
                        }
                        Err(e) => {
                            failures += 1;
                            println!("FAIL  lifecycle: {e}");
                        }
                    }
                    match info.privileges {
                        PrivilegeCheck::Unavailable { reason } => {
                            println!("skip  elasticsearch privileges: {reason}")
                        }
                        PrivilegeCheck::Checked { username, missing } if missing.is_empty() => {
                            println!("ok    elasticsearch privileges of {username}")
                        }
                        PrivilegeCheck::Checked { username, missing } => {
                            failures += 1;
                            println!(
                                "FAIL  elasticsearch privileges of {username}: missing {}",
                                missing.join(", ")
                            );
                        }
                    }
                }
                Err(e) => {
                    failures += 1;
                    println!("FAIL  elasticsearch: {e}");
                }
            }
        }
    }
    // The lookup files, opened as `flowlogd run` opens them at startup.
    if config.enrich != Default::default() || !config.networks.is_empty() {
        match crate::enrich::Enricher::from_config(&config.enrich, &config.networks) {
            Ok(_) => println!(
                "ok    enrichment: {} named network(s){}{}{}",
                config.networks.len(),
                opened(", service tags ", &config.enrich.service_tags_file),
                opened(", GeoIP ", &config.enrich.geoip_file),
                opened(", ASN ", &config.enrich.asn_file),
            ),
            Err(e) => {
                failures += 1;
                println!("FAIL  enrichment: {e}");
            }
        }
    }
    if !config.filters.is_empty() {
        println!("ok    filters: {} rule(s)", config.filters.len());
    }
    let registry = &config.registry.path;
    if !registry.exists() {
        // Opening would create the whole tree: report instead; `flowlogd run` creates it.
        let existing = registry.ancestors().skip(1).find(|p| p.is_dir());
        println!(
            "warn  registry {}: does not exist (flowlogd run creates it{})",
            registry.display(),
            match existing {
                Some(p) if !p.as_os_str().is_empty() => format!(", below {}", p.display()),
                _ => String::new(),
            }
        );
    } else {
        match crate::registry::Registry::open(registry) {
            Ok(r) => println!("ok    registry {}: {} entries", registry.display(), r.len()),
            Err(e) if e.to_string().contains("another flowlogd") => println!(
                "ok    registry {}: in use by a running flowlogd",
                registry.display()
            ),
            Err(e) => {
                failures += 1;
                println!("FAIL  registry: {e}");
            }
        }
    }
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `label` and the file's path, or nothing when the lookup is off.
fn opened(label: &str, file: &Option<std::path::PathBuf>) -> String {
    file.as_ref()
        .map(|f| format!("{label}{}", f.display()))
        .unwrap_or_default()
}
