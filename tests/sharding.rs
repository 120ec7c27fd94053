//! Static sharding (`[cluster] shard`, issue 12) as a user runs it: three `flowlogd once`
//! instances, each with its own registry and shard, against one Azurite container and a real
//! engine, index every tuple exactly once between them.
mod common;

use common::Azurite;
use common::flowlogd::{
    Es, GrowingBlob, SourceSpec, TestConfig, VNET_CONTAINER, container, once, vnet_config,
};
use flowlogd::generator::GenKind;

/// Flow logs of `count` VNets in the current hour, one NIC each: `count` resources.
async fn upload_resources(azurite: &Azurite, count: u64) -> u64 {
    let (_, vnet) = container(azurite, VNET_CONTAINER).await;
    let mut tuples = 0;
    for i in 0..count {
        let mut blob =
            GrowingBlob::new(GenKind::Vnet, 100 + i, &format!("vnet-{i}-flowlog"), 3, 10);
        tuples += blob.append(&vnet, 3).await.0;
    }
    tuples
}

fn shard_config(azurite: &Azurite, es: &Es, shard: &str) -> TestConfig {
    vnet_config(&es.url, azurite, es).tables(&format!("[cluster]\nshard = \"{shard}\""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_shards_index_every_tuple_of_every_resource_exactly_once_between_them() {
    let azurite = Azurite::start().expect("azurite");
    let es = Es::engine("static_sharding");
    let tuples = upload_resources(&azurite, 9).await;
    assert_eq!(tuples, 9 * 3 * 10);

    let mut blobs_read = Vec::new();
    let mut indexed = 0;
    for shard in ["0/3", "1/3", "2/3"] {
        let s = once(&shard_config(&azurite, &es, shard)).await;
        assert_eq!(
            (s.documents_existing, s.documents_dead_lettered, s.errors),
            (0, 0, 0),
            "shard {shard} read nothing another shard read: {s:?}"
        );
        blobs_read.push(s.blobs_read);
        indexed += s.documents_indexed;
    }
    assert_eq!(blobs_read.iter().sum::<u64>(), 9, "{blobs_read:?}");
    assert!(
        blobs_read.iter().all(|&n| n > 0),
        "each shard owns some of the 9 resources: {blobs_read:?}"
    );
    assert_eq!(indexed, tuples);
    es.assert_exactly_once(&es.all(), tuples, "three shards")
        .await;

    // One instance without sharding over the same data finds everything indexed already.
    let unsharded = vnet_config(&es.url, &azurite, &es);
    let s = once(&unsharded).await;
    assert_eq!(
        (s.documents_indexed, s.documents_existing),
        (0, tuples),
        "{s:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_taken_from_a_host_name_without_an_ordinal_stops_startup_with_the_reason() {
    let azurite = Azurite::start().expect("azurite");
    let config = TestConfig::new(
        "http://127.0.0.1:9",
        vec![SourceSpec::azurite(
            "vnet",
            VNET_CONTAINER,
            &azurite,
            "x-%{+xxxx.ww}",
        )],
    )
    .tables("[cluster]\nshard = \"ordinal/3\"");
    let path = config.write();
    let out = std::process::Command::new(common::flowlogd::bin())
        .arg("--config")
        .arg(&path)
        .arg("once")
        .env("HOSTNAME", "build-vm")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("\"build-vm\" does not end in -N"),
        "{stderr}"
    );
}
