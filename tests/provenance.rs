//! The per-source document options `resource_ids`, `blob_path` and `community_id` (issue 10,
//! lean documents)
//! as the daemon honours them: `flowlogd once` from Azurite into a real engine.
mod common;

use common::Azurite;
use common::flowlogd::{Es, GrowingBlob, SourceSpec, TestConfig, VNET_CONTAINER, container, once};
use flowlogd::generator::GenKind;

async fn index_one_blob(
    azurite: &Azurite,
    es: &Es,
    name: &str,
    extra: &str,
) -> Vec<serde_json::Value> {
    let (_, vnet) = container(azurite, VNET_CONTAINER).await;
    // Its flow-log name is `name`: the resource filter below selects it.
    let mut blob = GrowingBlob::new(GenKind::Vnet, 7, name, 2, 5);
    let tuples = blob.append(&vnet, 2).await.0;
    let config = TestConfig::new(
        &es.url,
        vec![
            SourceSpec::azurite("vnet", VNET_CONTAINER, azurite, &es.pattern(name))
                .extra(&format!("resource_filter = [\"{name}\"]"))
                .extra(extra),
        ],
    )
    .es(&es.config_lines);
    let s = once(&config).await;
    assert_eq!(s.documents_indexed, tuples, "{s:?}");
    es.scan(&format!("{}-{name}*", es.prefix))
        .await
        .into_iter()
        .map(|d| d.source)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_ids_blob_path_and_community_id_put_their_fields_in_what_the_daemon_indexes_and_the_default_leaves_them_out()
 {
    let azurite = Azurite::start().expect("azurite");
    let es = Es::engine("provenance");
    let lean = index_one_blob(&azurite, &es, "lean", "").await;
    assert!(!lean.is_empty());
    for doc in &lean {
        assert!(doc["azure"]["flowlog"]["resource_id"].is_null(), "{doc}");
        assert!(
            doc["log"].get("file").is_none(),
            "blob_path defaults to false: {doc}"
        );
        assert!(doc["network"].get("community_id").is_none(), "{doc}");
        assert_eq!(
            doc["azure"]["flowlog"]["blob_id"].as_str().map(str::len),
            Some(16)
        );
    }
    let full = index_one_blob(
        &azurite,
        &es,
        "full",
        "resource_ids = true\nblob_path = true\ncommunity_id = true",
    )
    .await;
    assert!(!full.is_empty());
    for doc in &full {
        let id = doc["azure"]["flowlog"]["resource_id"]
            .as_str()
            .unwrap_or_default();
        assert!(
            id.starts_with("/SUBSCRIPTIONS/") && id.contains("/FLOWLOGS/"),
            "the flow log's ARM id: {doc}"
        );
        let path = doc["log"]["file"]["path"].as_str().unwrap_or_default();
        assert!(
            path.starts_with(&format!("{VNET_CONTAINER}/")) && path.ends_with("/PT1H.json"),
            "blob_path = true: {doc}"
        );
        let community = doc["network"]["community_id"].as_str().unwrap_or_default();
        assert!(community.starts_with("1:"), "community_id = true: {doc}");
    }
}
