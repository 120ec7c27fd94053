//! `flowlogd tail` as a user runs it: the real binary against Azurite, printing the newest flows
//! as a table or NDJSON, following appended blocks, and ending quietly on a closed pipe.
mod common;

use std::io::{BufRead as _, BufReader, Read as _};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use common::Azurite;
use common::flowlogd::{
    SourceSpec, TestConfig, VNET_CONTAINER, bin, container, current_hour, vnet_blob_name,
    vnet_record, vnet_tuple,
};
use serde_json::Value;

const MAC: &str = "00224871C2A1";

/// A config with one source on Azurite's VNet container; tail never talks to the engine, so
/// its URL points nowhere.
fn config(azurite: &Azurite) -> TestConfig {
    let config = TestConfig::new(
        "http://127.0.0.1:9",
        vec![SourceSpec::azurite(
            "vnet",
            VNET_CONTAINER,
            azurite,
            "tail-%{+xxxx.ww}",
        )],
    );
    config.write();
    config
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn tail(config: &TestConfig, args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .arg("--config")
        .arg(config.path())
        .arg("tail")
        .args(args)
        .output()
        .expect("run flowlogd tail")
}

/// One blob of the current hour holding a tuple from 30 minutes ago (10.0.1.1) and one from a
/// minute ago (10.0.1.2).
async fn blob_with_an_old_and_a_new_flow(azurite: &Azurite) -> String {
    let (_, vnet) = container(azurite, VNET_CONTAINER).await;
    let hour = current_hour();
    let now = now_ms();
    let record = vnet_record(
        now / 1000,
        MAC,
        &[
            vnet_tuple(now - 30 * 60_000, 1),
            vnet_tuple(now - 60_000, 2),
        ],
    );
    let blob = vnet_blob_name(hour, MAC);
    vnet.append_flow_log_records(&blob, &[Bytes::from(record)])
        .await
        .expect("append");
    blob
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_only_the_flows_of_the_last_minutes_as_a_table_and_as_documents() {
    let azurite = Azurite::start().expect("azurite");
    blob_with_an_old_and_a_new_flow(&azurite).await;
    let config = config(&azurite);

    let table = tail(&config, &["--since", "15m"]);
    assert!(table.status.success(), "{table:?}");
    let text = String::from_utf8(table.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "a header and one flow: {text}");
    assert!(lines[0].starts_with("TIME (UTC)"), "{text}");
    assert!(lines[1].contains(MAC), "{text}");
    assert!(lines[1].contains("DefaultRule_AllowVnetOutBound"), "{text}");
    assert!(
        lines[1].contains("10.0.1.2:40002 →  10.0.2.5:443"),
        "{text}"
    );
    assert!(lines[1].contains(" tcp "), "{text}");
    assert!(lines[1].contains(" allow "), "{text}");
    assert!(
        lines[1].trim_end().ends_with("500"),
        "300 + 200 bytes: {text}"
    );

    let wider = tail(&config, &["--since", "45m"]);
    let text = String::from_utf8(wider.stdout).unwrap();
    assert_eq!(text.lines().count(), 3, "both flows, oldest first: {text}");
    assert!(
        text.lines().nth(1).unwrap().contains("10.0.1.1:40001"),
        "{text}"
    );

    let ndjson = tail(&config, &["--since", "15m", "--output", "ndjson"]);
    assert!(ndjson.status.success(), "{ndjson:?}");
    let text = String::from_utf8(ndjson.stdout).unwrap();
    let docs: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(docs.len(), 1, "{text}");
    assert_eq!(docs[0]["source"]["ip"], "10.0.1.2");
    assert_eq!(docs[0]["destination"]["port"], 443);

    // --filter: every expression must match, any of its values.
    let one_host = tail(
        &config,
        &[
            "--since",
            "45m",
            "--filter",
            "source_cidr=10.0.1.1/32",
            "--filter",
            "destination_port=22,443",
        ],
    );
    assert!(one_host.status.success(), "{one_host:?}");
    let text = String::from_utf8(one_host.stdout).unwrap();
    assert_eq!(
        text.lines().count(),
        2,
        "the header and the flow of 10.0.1.1: {text}"
    );
    assert!(text.contains("10.0.1.1:40001"), "{text}");
    let denied = tail(
        &config,
        &[
            "--since",
            "45m",
            "--filter",
            "decision=deny",
            "--output",
            "ndjson",
        ],
    );
    assert!(denied.status.success(), "{denied:?}");
    assert_eq!(
        String::from_utf8_lossy(&denied.stdout),
        "",
        "both flows were allowed"
    );
    let misspelt = tail(&config, &["--filter", "decission=deny"]);
    assert!(!misspelt.status.success());
    let stderr = String::from_utf8_lossy(&misspelt.stderr);
    assert!(
        stderr.contains("--filter") && stderr.contains("decission"),
        "{stderr}"
    );

    let other_nic = tail(&config, &["--since", "15m", "--mac", "00-22-48-00-00-00"]);
    let text = String::from_utf8(other_nic.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "only the header: {text}");

    let no_source = tail(&config, &["--source", "nsg"]);
    assert!(!no_source.status.success());
    let stderr = String::from_utf8_lossy(&no_source.stderr);
    assert!(
        stderr.contains("no such source") && stderr.contains("vnet"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_follow_prints_a_block_appended_after_it_started() {
    let azurite = Azurite::start().expect("azurite");
    let blob = blob_with_an_old_and_a_new_flow(&azurite).await;
    let config = config(&azurite);
    let mut child = Command::new(bin())
        .arg("--config")
        .arg(config.path())
        .args(["tail", "--follow", "--interval", "200ms", "--since", "15m"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tail --follow");
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // A generous bound only so that a broken build fails instead of hanging.
    let next = |what: &str| {
        rx.recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no {what} line"))
    };
    assert!(next("header").starts_with("TIME (UTC)"));
    assert!(next("first flow").contains("10.0.1.2:40002"));

    let (_, vnet) = container(&azurite, VNET_CONTAINER).await;
    let now = now_ms();
    let appended = vnet_record(now / 1000, MAC, &[vnet_tuple(now, 7)]);
    vnet.append_flow_log_records(&blob, &[Bytes::from(appended)])
        .await
        .expect("append");
    let line = next("appended flow");
    assert!(line.contains("10.0.1.7:40007"), "{line}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_ends_quietly_with_success_when_its_reader_closes_the_pipe() {
    let azurite = Azurite::start().expect("azurite");
    let (_, vnet) = container(&azurite, VNET_CONTAINER).await;
    let now = now_ms();
    // 3,000 documents of ~1.5 kB: far more than a pipe holds.
    let tuples: Vec<String> = (0..3000)
        .map(|i| vnet_tuple(now - 60_000 + i, (i % 250) as u8))
        .collect();
    vnet.append_flow_log_records(
        &vnet_blob_name(current_hour(), MAC),
        &[Bytes::from(vnet_record(now / 1000, MAC, &tuples))],
    )
    .await
    .expect("append");
    let config = config(&azurite);
    let mut child = Command::new(bin())
        .arg("--config")
        .arg(config.path())
        .args(["tail", "--output", "ndjson"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tail");
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 16];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "nothing on stderr"
    );
    assert!(out.status.success(), "{:?}", out.status);
}
