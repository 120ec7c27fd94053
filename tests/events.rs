//! Event-driven mode (`[source.events]`, issue 12) as a user runs it: a real `flowlogd run`
//! consumes Event Grid `BlobCreated` messages from Azurite's Queue service while the test, as
//! Network Watcher and Event Grid would, commits blocks and enqueues one event per commit.
//! Freshness (commit to searchable in the real engine, without forcing a refresh) is measured
//! and printed; every tuple must land exactly once although events come twice, out of order
//! or never (the fallback listing catches those), and a garbage message is dead-lettered.
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use azure_core::http::{ClientOptions, Url};
use azure_storage_queue::models::{QueueClientGetPropertiesResultHeaders as _, QueueMessage};
use azure_storage_queue::{QueueClient, QueueClientOptions};
use base64::Engine as _;
use common::Azurite;
use common::flowlogd::{
    Daemon, Es, GrowingBlob, SourceSpec, TestConfig, VNET_CONTAINER, container, http_get,
    metric_sum, wait_until,
};
use common::servers::AzuriteQueue;
use elasticsearch::http::Method;
use flowlogd::generator::GenKind;
use flowlogd::secret::Secret;
use flowlogd::source::shared_key::SharedKeyPolicy;

const QUEUE: &str = "flowlog-events";

/// A queue client signed with Azurite's well-known key (the test plays Event Grid).
fn queue_client(queue: &AzuriteQueue) -> QueueClient {
    let key = Secret::new(Azurite::ACCOUNT_KEY.to_owned());
    let policy = SharedKeyPolicy::new(Azurite::ACCOUNT, &key).expect("account key");
    let mut options = ClientOptions::default();
    options.per_try_policies.push(Arc::new(policy));
    let url = Url::parse(&format!("{}/{QUEUE}", queue.queue_endpoint())).expect("queue url");
    QueueClient::new(
        url,
        None,
        Some(QueueClientOptions {
            client_options: options,
            ..Default::default()
        }),
    )
    .expect("queue client")
}

/// Event Grid's message for a committed block list: base64 of the event, as its Storage Queue
/// handler delivers it.
fn blob_created(blob: &str, length: u64) -> String {
    let event = serde_json::json!({
        "topic": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/devstoreaccount1",
        "subject": format!("/blobServices/default/containers/{VNET_CONTAINER}/blobs/{blob}"),
        "eventType": "Microsoft.Storage.BlobCreated",
        "id": format!("{blob}-{length}"),
        "data": {"api": "PutBlockList", "eTag": "\"0x8D00000000000\"", "contentLength": length,
                 "blobType": "BlockBlob",
                 "url": format!("http://127.0.0.1/devstoreaccount1/{VNET_CONTAINER}/{blob}")},
        "dataVersion": "", "metadataVersion": "1", "eventTime": chrono::Utc::now().to_rfc3339()
    });
    base64::engine::general_purpose::STANDARD.encode(event.to_string())
}

async fn send(client: &QueueClient, text: String) {
    let message = QueueMessage {
        message_text: Some(text),
    };
    client
        .send_message(message.try_into().expect("message body"), None)
        .await
        .expect("send message");
}

/// Messages in the queue, visible or not.
async fn messages_left(client: &QueueClient) -> i64 {
    let props = client.get_properties(None).await.expect("queue properties");
    props
        .approximate_messages_count()
        .expect("count header")
        .unwrap_or(0)
}

/// Documents searchable now: `_count` without a refresh, as a dashboard would see them.
async fn searchable(es: &Es) -> u64 {
    let (status, body) = es
        .call(
            Method::Get,
            &format!(
                "{}/_count?ignore_unavailable=true&allow_no_indices=true",
                es.all()
            ),
            None,
        )
        .await;
    if status == 200 {
        body["count"].as_u64().unwrap_or(0)
    } else {
        0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_are_read_when_their_events_arrive_and_duplicate_reordered_lost_or_garbage_events_still_give_every_tuple_once()
 {
    let azurite = Azurite::start().expect("azurite");
    let queue = AzuriteQueue::start().expect("azurite queue");
    let es = Es::engine("event_driven");
    let (_, vnet) = container(&azurite, VNET_CONTAINER).await;
    let client = queue_client(&queue);
    client.create(None).await.expect("create queue");

    let config = TestConfig::new(
        &es.url,
        vec![SourceSpec::azurite("vnet", VNET_CONTAINER, &azurite, &es.pattern("vnet")).extra(
            &format!(
                "[source.events]\nqueue = \"{QUEUE}\"\nqueue_endpoint = \"{}\"\n\
                 receive_interval = \"200ms\"\nvisibility_timeout = \"30s\"\nfallback_interval = \"4s\"",
                queue.queue_endpoint()
            ),
        )],
    )
    .es(&es.config_lines)
    .es("flush_interval = \"200ms\"")
    .daemon("interval = \"1s\"")
    .with_metrics();
    let mut daemon = Daemon::spawn(&config, &[]);
    let started = Instant::now();

    // 1. Freshness: one block at a time, its event right after the commit.
    let mut blob = GrowingBlob::new(GenKind::Vnet, 71, "vnet-events-flowlog", 12, 20);
    let mut expected = 0;
    let mut freshness = Vec::new();
    // The first block lets the daemon start and list once; it is not timed.
    for round in 0..6 {
        let (tuples, _) = blob.append(&vnet, 1).await;
        let committed = Instant::now();
        send(
            &client,
            blob_created(blob.name(), blob.length_after(blob.written)),
        )
        .await;
        expected += tuples;
        wait_until(
            Duration::from_secs(60),
            "the block's tuples to be searchable",
            || async { searchable(&es).await >= expected },
        )
        .await;
        if round > 0 {
            freshness.push(committed.elapsed());
        }
    }
    freshness.sort();
    println!(
        "freshness (block committed and its event enqueued → searchable without a forced refresh), {} blocks: min {:?}, median {:?}, max {:?}",
        freshness.len(),
        freshness[0],
        freshness[freshness.len() / 2],
        freshness[freshness.len() - 1]
    );

    // 2. Duplicated and reordered events: three blocks, events for the third twice, then for
    //    the first (reads go to the blob's current length, whatever the event says).
    let lengths: Vec<u64> = (0..3)
        .map(|i| blob.length_after(blob.written + i + 1))
        .collect();
    expected += blob.append(&vnet, 3).await.0;
    send(&client, blob_created(blob.name(), lengths[2])).await;
    send(&client, blob_created(blob.name(), lengths[2])).await;
    send(&client, blob_created(blob.name(), lengths[0])).await;

    // 3. A lost event: another NIC's blob of the same flow log grows and no event ever says
    //    so; the fallback listing (every 4 s here) finds it.
    let mut silent = GrowingBlob::new(GenKind::Vnet, 72, "vnet-events-flowlog", 2, 20);
    assert_ne!(silent.name(), blob.name(), "another NIC, another blob");
    expected += silent.append(&vnet, 2).await.0;

    // 4. Garbage.
    send(&client, "this is not an Event Grid event".to_owned()).await;

    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let count = es.count(&es.all()).await;
        if count >= expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{count} of {expected} tuples indexed after 90 s; daemon log:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_until(
        Duration::from_secs(60),
        "every message done and deleted",
        || async { messages_left(&client).await == 0 },
    )
    .await;
    // The events were what the daemon acted on (each completed message was deleted only
    // after its blob's tuples were delivered).
    let completed = daemon
        .metrics_sum(&["flowlogd_events_completed_total"])
        .await;
    assert!(completed >= 6, "{completed} event messages completed");
    // What the instance cost in storage requests, from the storage client's counters.
    let addr = daemon.metrics_addr().await;
    let text = http_get(addr, "/metrics").expect("metrics");
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    let by_kind: Vec<String> = ["list", "properties", "download", "block_list", "queue"]
        .iter()
        .map(|kind| {
            let n: u64 = text
                .lines()
                .filter(|l| {
                    l.starts_with("flowlogd_storage_requests_total{")
                        && l.contains(&format!("kind=\"{kind}\""))
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .sum();
            format!("{kind} {n} ({:.0}/min)", n as f64 / minutes)
        })
        .collect();
    println!(
        "storage requests over {:.1} min (receive every 200 ms, fallback listing every 4 s, 10 events): {}",
        minutes,
        by_kind.join(", ")
    );
    assert!(
        metric_sum(&text, "flowlogd_storage_requests_total") > 0,
        "{text}"
    );
    daemon.terminate();
    assert!(
        daemon
            .wait(Duration::from_secs(30))
            .await
            .is_some_and(|s| s.success()),
        "{}",
        daemon.log()
    );

    es.assert_exactly_once(&es.all(), expected, "event-driven ingest")
        .await;
    let dead = config.dead_letters();
    assert_eq!(dead.len(), 1, "only the garbage message: {dead:?}");
    assert!(
        dead[0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("not a usable Event Grid message"),
        "{dead:?}"
    );
    assert_eq!(dead[0]["excerpt"], "this is not an Event Grid event");
    let log = daemon.log();
    assert!(log.contains("event-driven"), "{log}");
    es.cleanup().await;
}
