//! `flowlogd tail`: the newest flows read straight from storage, as a table or as the documents
//! flowlogd would index; `--follow` keeps printing appended blocks. Never touches the registry
//! or a search engine, so it is safe beside a running daemon and needs only storage access.
use std::collections::{BTreeSet, HashMap};
use std::io::{self, Write};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::TryStreamExt as _;

use serde::Deserialize as _;

use crate::bulk_buffer::BulkBuffer;
use crate::config::enrich::{FilterRuleConfig, NetworkConfig};
use crate::config::{Config, SourceConfig};
use crate::encode::document::{BlobContext, DocumentEncoder};
use crate::enrich::protocol::transport_name_or_number;
use crate::enrich::{Enricher, Filter, FlowContext, RecordResources, Verdict};
use crate::flowlog::{
    FlowTuple, RecordScanner, ScanStart, Scanned, TupleSlot, decode_record, parse_tuple,
};
use crate::index_pattern::IndexPattern;
use crate::metrics::StorageStats;
use crate::pipeline::BlobDecoder;
use crate::source::client::StorageClient;
use crate::source::layout::blob_hour;
use crate::source::listing::BlobItem;
use crate::source::walker::Walker;

/// How `tail` prints flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TailOutput {
    /// One aligned line per flow: time, NIC, rule, source → destination, protocol, decision,
    /// state, bytes.
    Table,
    /// One document per line, exactly as flowlogd indexes it (the source's schema).
    Ndjson,
}

#[derive(Debug, clap::Args)]
pub struct TailArgs {
    /// Only this source (`[[source]] name`); default: every source.
    #[arg(long)]
    pub source: Option<String>,
    /// Only resources whose path contains this text, case-insensitively (subscription id,
    /// resource group, NSG or flow-log name); adds to the source's `resource_filter`.
    #[arg(long)]
    pub resource: Option<String>,
    /// Only the NIC with this MAC address (`00224871C2A1`, `00-22-48-71-C2-A1` or with colons).
    #[arg(long)]
    pub mac: Option<String>,
    /// Flows whose tuple time is at most this old (`15m`, `2h`, `1d`).
    #[arg(long, default_value = "15m", value_parser = crate::config::parse_duration)]
    pub since: Duration,
    /// Keep polling and print flows from blocks appended since.
    #[arg(long)]
    pub follow: bool,
    /// Time between polls with `--follow`.
    #[arg(long, default_value = "10s", value_parser = parse_interval)]
    pub interval: Duration,
    /// `table` (default) or `ndjson`.
    #[arg(long, value_enum, default_value_t = TailOutput::Table)]
    pub output: TailOutput,
    /// Only flows matching `KEY=VALUE[,VALUE…]`, with the keys of a `[[filter]]` rule
    /// (`decision=deny`, `destination_port=22,3389`, `source_cidr=10.4.0.0/16`,
    /// `source_network=onprem`, `nsg_rule=DefaultRule_DenyAllInBound`, `nic=vm1-nic`, …).
    /// Repeat it: a flow must match every expression, and any value of one. The configuration's
    /// own `[[filter]]` rules are not applied: `tail` shows what storage holds.
    #[arg(long = "filter", value_name = "EXPR")]
    pub filters: Vec<String>,
}

/// The `[[filter]]` keys that take one value; the others take a list.
const SINGLE_VALUE_KEYS: &[&str] = &["direction", "decision"];

/// `--filter` expressions as one `keep` rule (none when there are no expressions), checked
/// by the same deserializer and validation as a `[[filter]]` in the configuration file.
pub fn filter_rules(
    expressions: &[String],
    networks: &[NetworkConfig],
) -> anyhow::Result<Vec<FilterRuleConfig>> {
    if expressions.is_empty() {
        return Ok(Vec::new());
    }
    let mut rule = toml::Table::new();
    rule.insert("name".into(), "tail-filter".into());
    rule.insert("action".into(), "keep".into());
    for expression in expressions {
        let Some((key, values)) = expression.split_once('=') else {
            anyhow::bail!("--filter {expression:?}: expected KEY=VALUE (e.g. decision=deny)");
        };
        let key = key.trim();
        if ["name", "action"].contains(&key) {
            anyhow::bail!("--filter {expression:?}: `{key}` is not a condition");
        }
        let values: Vec<toml::Value> = values
            .split(',')
            .map(|v| toml::Value::String(v.trim().to_owned()))
            .collect();
        let value = if SINGLE_VALUE_KEYS.contains(&key) {
            match <[toml::Value; 1]>::try_from(values) {
                Ok([one]) => one,
                Err(_) => anyhow::bail!("--filter {expression:?}: `{key}` takes one value"),
            }
        } else {
            toml::Value::Array(values)
        };
        if rule.insert(key.to_owned(), value).is_some() {
            anyhow::bail!(
                "--filter {expression:?}: `{key}` given twice (list the values once, comma-separated)"
            );
        }
    }
    let rule = FilterRuleConfig::deserialize(toml::Value::Table(rule))
        .map_err(|e| anyhow::anyhow!("--filter: {}", e.message()))?;
    let rules = vec![rule];
    crate::config::enrich::validate(&Default::default(), networks, &rules)
        .map_err(|e| anyhow::anyhow!("--filter: {e}"))?;
    Ok(rules)
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    let interval = crate::config::parse_duration(text)?;
    if interval < Duration::from_millis(100) {
        return Err("must be at least 100ms".to_owned());
    }
    Ok(interval)
}

/// One source as `tail` reads it: its walker and what has been read of each blob.
struct TailSource {
    config: SourceConfig,
    walker: Walker,
    /// Blob name → offset just past its last complete record read so far.
    read_to: HashMap<String, u64>,
}

/// One line of output and the tuple time it is sorted by.
struct Line {
    time_ms: i64,
    text: Vec<u8>,
}

pub async fn run(config: Config, args: TailArgs) -> anyhow::Result<std::process::ExitCode> {
    let mac = args.mac.as_deref().map(normalize_mac);
    let rules = filter_rules(&args.filters, &config.networks)?;
    // `ndjson` prints documents as the daemon would index them: enriched the same way.
    let (enricher, filter) = crate::enrich::build(&config.enrich, &config.networks, &rules)
        .map_err(|e| anyhow::anyhow!("enrichment: {e}"))?;
    let mut sources = Vec::new();
    for source in &config.sources {
        if args
            .source
            .as_ref()
            .is_some_and(|name| *name != source.name)
        {
            continue;
        }
        let client =
            StorageClient::from_config(&source.storage(), Arc::new(StorageStats::default()))
                .with_context(|| format!("source {}", source.name))?;
        let mut filter = source.resource_filter.clone();
        if let Some(resource) = &args.resource {
            filter.push(resource.clone());
        }
        let walker = Walker::new(
            client,
            source.prefix.as_deref(),
            &filter,
            source.discovery_interval,
        );
        sources.push(TailSource {
            config: source.clone(),
            walker,
            read_to: HashMap::new(),
        });
    }
    if sources.is_empty() {
        let names: Vec<&str> = config.sources.iter().map(|s| s.name.as_str()).collect();
        anyhow::bail!(
            "--source {:?}: no such source (the configuration has: {})",
            args.source.as_deref().unwrap_or_default(),
            names.join(", ")
        );
    }
    let cutoff_ms = chrono::Utc::now().timestamp_millis()
        - i64::try_from(args.since.as_millis()).unwrap_or(i64::MAX);
    let stdout = io::stdout();
    let mut failed = false;
    if args.output == TailOutput::Table {
        writeln!(stdout.lock(), "{}", table_header())?;
    }
    loop {
        for source in &mut sources {
            match poll(source, &args, mac.as_deref(), cutoff_ms, &enricher, &filter).await {
                Ok(mut lines) => {
                    lines.sort_by_key(|l| l.time_ms);
                    let mut out = io::BufWriter::new(stdout.lock());
                    for line in &lines {
                        out.write_all(&line.text)?;
                    }
                    out.flush()?;
                }
                Err(e) => {
                    failed = true;
                    tracing::error!(source = %source.config.name, error = %format!("{e:#}"), "tail: reading the source failed{}", if args.follow { "; trying again next poll" } else { "" });
                }
            }
        }
        if !args.follow {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(args.interval) => {}
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    Ok(if failed && !args.follow {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    })
}

/// Lists the hours from the cutoff to now and reads what is new in each matching blob.
async fn poll(
    source: &mut TailSource,
    args: &TailArgs,
    mac: Option<&str>,
    cutoff_ms: i64,
    enricher: &Arc<Enricher>,
    filter: &Arc<Filter>,
) -> anyhow::Result<Vec<Line>> {
    source.walker.discover_if_due().await?;
    let now_hour = chrono::Utc::now().timestamp().div_euclid(3600);
    let first_hour = cutoff_ms.div_euclid(3_600_000).min(now_hour);
    let partitions: BTreeSet<String> = source.walker.partitions_for_hours(first_hour..=now_hour);
    let mut blobs = source.walker.list_partitions(&partitions).await?;
    blobs.retain(|b| mac.is_none_or(|m| blob_mac(&b.name).is_some_and(|bm| bm == m)));
    blobs.sort_by(|a, b| (blob_hour(&a.name), &a.name).cmp(&(blob_hour(&b.name), &b.name)));
    let pattern = IndexPattern::parse(&source.config.index)
        .with_context(|| format!("index pattern {:?}", source.config.index))?;
    let mut encoder = DocumentEncoder::new(source.config.schema, pattern)
        .with_provenance(source.config.provenance())
        .with_community_id(source.config.community_id)
        .with_enrichment(enricher, filter);
    let mut lines = Vec::new();
    for blob in &blobs {
        let from = source.read_to.get(&blob.name).copied().unwrap_or(0);
        if from >= blob.content_length {
            continue;
        }
        let to = read_blob(
            source,
            &mut encoder,
            blob,
            from,
            &Wanted {
                output: args.output,
                cutoff_ms,
                filter,
            },
            &mut lines,
        )
        .await
        .with_context(|| format!("blob {}", blob.name))?;
        source.read_to.insert(blob.name.clone(), to);
    }
    Ok(lines)
}

/// Which flows `tail` prints, and how.
#[derive(Clone, Copy)]
struct Wanted<'a> {
    output: TailOutput,
    /// Tuples older than this (epoch ms) are skipped.
    cutoff_ms: i64,
    /// The `--filter` rule (empty: every flow).
    filter: &'a Filter,
}

/// Reads `[from, length)` of one blob and adds a line per tuple at or after the cutoff; returns
/// the offset just past the last complete record, where the next poll resumes.
async fn read_blob(
    source: &TailSource,
    encoder: &mut DocumentEncoder,
    blob: &BlobItem,
    from: u64,
    wanted: &Wanted<'_>,
    lines: &mut Vec<Line>,
) -> anyhow::Result<u64> {
    let Wanted {
        output,
        cutoff_ms,
        filter,
    } = *wanted;
    let client = source.walker.client();
    let mut stream = client
        .download_range(&blob.name, from, blob.content_length)
        .await?;
    let start = if from == 0 {
        ScanStart::Head
    } else {
        ScanStart::BetweenRecords
    };
    let max_record = source.config.max_record_bytes;
    let mut scanner = RecordScanner::new(from, start).with_max_record_len(max_record);
    // The documents come from the daemon's own decoder, so `ndjson` prints what it indexes.
    let context = BlobContext::new(client.container_name(), &blob.name);
    let mut documents = BlobDecoder::new(encoder, context, from).with_max_record_len(max_record);
    let mut bulk = BulkBuffer::new();
    // Tuple times by (record offset, tuple index), to keep only the documents after the cutoff.
    let mut times: HashMap<(u64, u32), i64> = HashMap::new();
    while let Some(bytes) = stream.try_next().await? {
        scanner.push(&bytes);
        while let Some(scanned) = scanner.next_scanned() {
            match scanned {
                Scanned::Record { offset } => {
                    each_tuple(scanner.record(), filter, |index, mac, rule, tuple| {
                        if tuple.time_ms < cutoff_ms {
                            return;
                        }
                        match output {
                            TailOutput::Table => lines.push(Line {
                                time_ms: tuple.time_ms,
                                text: table_row(mac, rule, tuple).into_bytes(),
                            }),
                            TailOutput::Ndjson => {
                                times.insert((offset, index), tuple.time_ms);
                            }
                        }
                    });
                }
                Scanned::Malformed {
                    offset,
                    len,
                    reason,
                } => {
                    tracing::warn!(blob = %blob.name, offset, len, reason, "tail: skipping malformed bytes");
                }
                Scanned::Head { .. } | Scanned::Tail { .. } => {}
            }
        }
        if output == TailOutput::Ndjson {
            documents.feed(&bytes, &mut bulk, &mut |problem| {
                tracing::warn!(blob = %blob.name, offset = problem.offset(), problem = %problem, "tail: skipping undecodable input");
            });
            for item in &bulk.items {
                if let Some(&time_ms) = times.get(&(item.record_offset, item.tuple_index)) {
                    lines.push(Line {
                        time_ms,
                        text: bulk.body[item.doc_start..item.end].to_vec(),
                    });
                }
            }
            bulk.clear();
            times.clear();
        }
    }
    Ok(scanner.resume_offset())
}

/// Calls `each` with (index in record, MAC, rule, tuple) for every tuple of a record that
/// decodes and `filter` keeps; records and tuples that do not decode are left to the daemon's
/// dead letters.
fn each_tuple(
    bytes: &[u8],
    filter: &Filter,
    mut each: impl FnMut(u32, &str, &str, &FlowTuple<'_>),
) {
    let Ok(record) = decode_record(bytes) else {
        return;
    };
    let resources = RecordResources::of(&record);
    let mut index = 0u32;
    for group in &record.groups {
        let context = FlowContext::of(&resources, group);
        let mac = group
            .mac
            .as_ref()
            .or(record.mac.as_ref())
            .map_or("", |m| m.as_str());
        let rule = group.rule.as_ref().map_or("", |r| r.as_str());
        for slot in group.tuples.iter() {
            if let TupleSlot::Tuple(text) = &slot
                && let Ok(tuple) = parse_tuple(record.kind, text.as_str())
                && filter.decide(&tuple, &context) == Verdict::Keep
            {
                each(index, mac, rule, &tuple);
            }
            index = index.saturating_add(1);
        }
    }
}

fn table_header() -> String {
    format!(
        "{:<23} {:<12} {:<28} {:>21}    {:<21} {:<6} {:<5} {:<10} {:>9}",
        "TIME (UTC)", "NIC", "RULE", "SOURCE", "DESTINATION", "PROTO", "ACT", "STATE", "BYTES"
    )
}

fn table_row(mac: &str, rule: &str, t: &FlowTuple<'_>) -> String {
    let time = chrono::DateTime::from_timestamp_millis(t.time_ms)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
        .unwrap_or_else(|| t.time_ms.to_string());
    let decision = t.decision.as_str();
    let bytes = match (t.counters.bytes_src_to_dst, t.counters.bytes_dst_to_src) {
        (None, None) => "-".to_owned(),
        (a, b) => (a.unwrap_or(0) + b.unwrap_or(0)).to_string(),
    };
    format!(
        "{time:<23} {mac:<12} {rule:<28} {:>21} →  {:<21} {:<6} {decision:<5} {:<10} {bytes:>9}\n",
        endpoint(t.src_ip_text, t.src_port),
        endpoint(t.dst_ip_text, t.dst_port),
        transport_name_or_number(t.protocol),
        t.state.map_or("-", |s| s.as_str()),
    )
}

fn endpoint(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// A MAC address as blob names write it: 12 upper-case hex digits, no separators.
fn normalize_mac(mac: &str) -> String {
    mac.chars()
        .filter(char::is_ascii_hexdigit)
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// The `macAddress=…` part of a blob name, if any.
fn blob_mac(blob: &str) -> Option<String> {
    let (_, rest) = blob.split_once("macAddress=")?;
    Some(normalize_mac(rest.split('/').next().unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flowlog::FlowLogKind;

    #[test]
    fn mac_addresses_match_in_any_spelling() {
        assert_eq!(normalize_mac("00-22-48-71-c2-a1"), "00224871C2A1");
        assert_eq!(normalize_mac("00:22:48:71:C2:A1"), "00224871C2A1");
        assert_eq!(
            blob_mac("r/y=2026/m=11/d=21/h=16/m=00/macAddress=00224871C2A1/PT1H.json").as_deref(),
            Some("00224871C2A1")
        );
        assert_eq!(blob_mac("r/y=2026/PT1H.json"), None);
    }

    #[test]
    fn a_table_row_shows_the_flow_with_its_protocol_name_and_total_bytes() {
        let tuple = parse_tuple(
            FlowLogKind::Vnet,
            "1732200049327,10.0.1.4,52.239.1.2,44321,443,6,O,E,NX,12,3456,10,789",
        )
        .unwrap();
        let row = table_row("00224871C2A1", "AllowInternet", &tuple);
        assert_eq!(
            row,
            "2024-11-21 14:40:49.327 00224871C2A1 AllowInternet                       10.0.1.4:44321 →  52.239.1.2:443        tcp    allow end             4245\n"
        );
    }
}
