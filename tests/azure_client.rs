//! The storage client against a real Azurite: every credential kind Azurite supports, listing by
//! level and flat, properties, ranged reads and their counters, awkward blob names, retries.
//!
//! Each test starts its own Azurite (`--skipApiVersionCheck`, since the SDK sends a newer
//! `x-ms-version` than Azurite knows) and stops it by PID when done.

mod common;

use base64::Engine as _;
use bytes::Bytes;
use common::sas::{enc, service_sas, sign};
use common::servers::Azurite;
use figment::{
    Figment,
    providers::{Format as _, Toml},
};
use flowlogd::config::storage::StorageConfig;
use flowlogd::metrics::StorageStats;
use flowlogd::source::{
    client::{StorageClient, StorageError},
    upload::{BlockBlobWriter, FLOW_LOG_HEAD, FLOW_LOG_TAIL},
};
use futures::TryStreamExt as _;
use std::sync::Arc;

fn config(toml: &str) -> StorageConfig {
    Figment::from(Toml::string(toml))
        .extract()
        .unwrap_or_else(|e| panic!("test config does not parse: {e}\n{toml}"))
}

fn key_config(endpoint: &str, container: &str, key: &str) -> StorageConfig {
    config(&format!(
        r#"
        blob_endpoint = "{endpoint}"
        container = "{container}"
        [auth]
        method = "account_key"
        account_key = "{key}"
        [retry]
        max_tries = 2
        initial_delay_ms = 50
        "#
    ))
}

fn client(cfg: &StorageConfig) -> StorageClient {
    StorageClient::from_config(cfg, Arc::new(StorageStats::default())).expect("client builds")
}

async fn read_all(client: &StorageClient, blob: &str, start: u64, end: u64) -> Vec<u8> {
    let stream = client
        .download_range(blob, start, end)
        .await
        .unwrap_or_else(|e| panic!("download {blob:?}: {e}"));
    let chunks: Vec<Bytes> = stream.try_collect().await.expect("stream completes");
    chunks.concat()
}

fn record(i: usize) -> Bytes {
    Bytes::from(format!(
        r#"{{"time":"2025-11-04T10:{i:02}:00.0000000Z","category":"FlowLogFlowEvent","flowRecords":{{"flows":[{{"flowGroups":[{{"flowTuples":["1762250400000,10.0.0.{i},10.0.1.5,443,50000,6,O,B,NX,0,0,0,0"]}}]}}]}}}}"#
    ))
}

const VNET_PREFIX: &str = "flowLogResourceID=/ABCD/RG-NET/FLOWLOGS/VNET-FL/";

fn hour_blob(resource: &str, hour: u32) -> String {
    format!("{resource}y=2025/m=11/d=04/h={hour:02}/m=00/macAddress=000D3A1B2C3D/PT1H.json")
}

#[tokio::test]
async fn account_key_round_trip() {
    let azurite = Azurite::start().expect("azurite starts");
    let cfg = key_config(&azurite.blob_endpoint(), "flowlogs", Azurite::ACCOUNT_KEY);
    let client = client(&cfg);
    let writer = BlockBlobWriter::new(&client);
    assert!(writer.create_container().await.unwrap());
    assert!(
        !writer.create_container().await.unwrap(),
        "second create reports existing"
    );

    // A PT1H.json growing as Azure grows it, in two commits.
    let blob = hour_blob(VNET_PREFIX, 10);
    let first = writer
        .append_flow_log_records(&blob, &[record(0), record(1), record(2)])
        .await
        .unwrap();
    assert_eq!(first.block_count, 5);
    let before = client
        .properties(&blob)
        .await
        .unwrap()
        .expect("blob exists");
    let second = writer
        .append_flow_log_records(&blob, &[record(3), record(4)])
        .await
        .unwrap();
    assert_eq!(second.block_count, 7);

    let mut expected = FLOW_LOG_HEAD.to_vec();
    for i in 0..5 {
        if i > 0 {
            expected.push(b',');
        }
        expected.extend_from_slice(&record(i));
    }
    expected.extend_from_slice(FLOW_LOG_TAIL);
    assert_eq!(second.length, expected.len() as u64);

    let props = client
        .properties(&blob)
        .await
        .unwrap()
        .expect("blob exists");
    assert_eq!(props.name, blob);
    assert_eq!(props.content_length, expected.len() as u64);
    assert!(
        !props.etag.contains('"'),
        "etag is normalised: {}",
        props.etag
    );
    assert_ne!(
        props.etag, before.etag,
        "committing blocks changes the etag"
    );
    assert!(props.last_modified >= before.last_modified);

    // Committed blocks: head, five records, tail (the tail stayed last).
    let sizes = client.get_committed_block_sizes(&blob).await.unwrap();
    let mut want_sizes = vec![FLOW_LOG_HEAD.len() as u64, record(0).len() as u64];
    want_sizes.extend((1..5).map(|i| record(i).len() as u64 + 1));
    want_sizes.push(FLOW_LOG_TAIL.len() as u64);
    assert_eq!(sizes, want_sizes);

    // Whole blob, then a middle range: exactly those bytes, exactly counted.
    assert_eq!(
        read_all(&client, &blob, 0, props.content_length).await,
        expected
    );
    let (start, end) = (FLOW_LOG_HEAD.len() as u64 + 7, expected.len() as u64 - 40);
    let stats_before = client.stats().snapshot();
    let middle = read_all(&client, &blob, start, end).await;
    let delta = client.stats().snapshot().since(&stats_before);
    assert_eq!(middle, &expected[start as usize..end as usize]);
    assert_eq!(delta.download_requests, 1);
    assert_eq!(delta.bytes_downloaded, end - start);

    // A range running past the end yields what exists; one starting past the end is a 416.
    // (Azure answers 416 already for a start equal to the length; Azurite 3.35 answers that
    // with an empty 206, so both are accepted there.)
    let tail = read_all(&client, &blob, end, end + 10_000).await;
    assert_eq!(tail, &expected[end as usize..]);
    let len = props.content_length;
    match client.download_range(&blob, len, len + 5).await {
        Err(StorageError::RangeNotSatisfiable { .. }) => {}
        Err(e) => panic!("expected RangeNotSatisfiable or nothing, got {e}"),
        Ok(s) => assert!(
            s.try_collect::<Vec<Bytes>>()
                .await
                .unwrap()
                .concat()
                .is_empty()
        ),
    }
    match client.download_range(&blob, len + 1, len + 5).await {
        Err(StorageError::RangeNotSatisfiable {
            blob: b,
            start,
            end,
        }) => {
            assert_eq!((b.as_str(), start, end), (blob.as_str(), len + 1, len + 5));
        }
        Err(e) => panic!("expected RangeNotSatisfiable, got {e}"),
        Ok(_) => panic!("expected RangeNotSatisfiable, got a stream"),
    }
    assert!(
        client.download_range(&blob, 5, 5).await.is_ok(),
        "empty range"
    );

    // More blobs: two hours of the same flow log, another flow log, and one at the root.
    let other = "flowLogResourceID=/ABCD/RG-NET/FLOWLOGS/OTHER-FL/";
    writer
        .append_flow_log_records(&hour_blob(VNET_PREFIX, 11), &[record(9)])
        .await
        .unwrap();
    writer
        .append_flow_log_records(&hour_blob(other, 10), &[record(8)])
        .await
        .unwrap();
    writer
        .put_blob("README.txt", Bytes::from_static(b"hello"))
        .await
        .unwrap();

    // Level 1: the root holds one prefix and one blob.
    let root = client.list_hierarchical("").await.unwrap();
    assert_eq!(root.prefixes, vec!["flowLogResourceID=/"]);
    assert_eq!(root.blobs.len(), 1);
    assert_eq!(root.blobs[0].name, "README.txt");
    assert_eq!(root.blobs[0].content_length, 5);

    // Level 2: the flow logs under the resource group, in order.
    let fls = client
        .list_hierarchical("flowLogResourceID=/ABCD/RG-NET/FLOWLOGS/")
        .await
        .unwrap();
    assert_eq!(fls.prefixes, vec![other.to_owned(), VNET_PREFIX.to_owned()]);
    assert!(fls.blobs.is_empty());

    // Down to the hours of one flow log.
    let hours = client
        .list_hierarchical(&format!("{VNET_PREFIX}y=2025/m=11/d=04/"))
        .await
        .unwrap();
    assert_eq!(
        hours.prefixes,
        vec![
            format!("{VNET_PREFIX}y=2025/m=11/d=04/h=10/"),
            format!("{VNET_PREFIX}y=2025/m=11/d=04/h=11/"),
        ]
    );

    // Flat listing: every blob, with the same properties as Get Blob Properties.
    let all = client.list_blobs("").await.unwrap();
    assert_eq!(all.len(), 4);
    let listed = all.iter().find(|b| b.name == blob).expect("listed");
    assert_eq!(listed, &props);
    let under = client.list_blobs(VNET_PREFIX).await.unwrap();
    assert_eq!(under.len(), 2);

    // Paging is followed to the end, flat and by level, and each page is one request.
    let s0 = client.stats().snapshot();
    let paged = client.list_blobs_paged("", Some(1)).await.unwrap();
    assert_eq!(paged, all);
    let s1 = client.stats().snapshot();
    assert_eq!(s1.since(&s0).list_requests, 4);
    assert_eq!(s1.since(&s0).blobs_listed, 4);
    let by_level = client
        .list_hierarchical_paged("flowLogResourceID=/ABCD/RG-NET/FLOWLOGS/", Some(1))
        .await
        .unwrap();
    assert_eq!(by_level, fls);
    assert_eq!(client.stats().snapshot().since(&s1).list_requests, 2);

    // Missing blobs.
    assert_eq!(client.properties("nope/PT1H.json").await.unwrap(), None);
    assert!(
        client
            .get_committed_block_sizes("nope/PT1H.json")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(writer.delete_blob("README.txt").await.unwrap());
    assert!(!writer.delete_blob("README.txt").await.unwrap());
    assert!(matches!(
        client.download_range("README.txt", 0, 5).await,
        Err(StorageError::NotFound { .. })
    ));
}

#[tokio::test]
async fn wrong_account_key_is_rejected() {
    let azurite = Azurite::start().expect("azurite starts");
    let good = client(&key_config(
        &azurite.blob_endpoint(),
        "wrongkey",
        Azurite::ACCOUNT_KEY,
    ));
    BlockBlobWriter::new(&good)
        .create_container()
        .await
        .unwrap();

    let wrong_key = base64::engine::general_purpose::STANDARD.encode([7u8; 64]);
    let bad = client(&key_config(
        &azurite.blob_endpoint(),
        "wrongkey",
        &wrong_key,
    ));
    let err = bad.list_hierarchical("").await.unwrap_err();
    match &err {
        StorageError::Auth { status, .. } => assert_eq!(*status, 403),
        other => panic!("expected an auth error, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("authentication rejected"), "{text}");
    assert!(!text.contains(&wrong_key), "{text}");
    assert!(!err.is_transient());
    assert!(matches!(
        bad.properties("x").await,
        Err(StorageError::Auth { .. })
    ));
    assert!(matches!(
        bad.list_blobs("").await,
        Err(StorageError::Auth { .. })
    ));
}

#[tokio::test]
async fn connection_strings() {
    let azurite = Azurite::start().expect("azurite starts");
    let endpoint = azurite.blob_endpoint();
    let seed = client(&key_config(&endpoint, "connstr", Azurite::ACCOUNT_KEY));
    let writer = BlockBlobWriter::new(&seed);
    writer.create_container().await.unwrap();
    writer
        .put_blob("a/b.json", Bytes::from_static(b"0123456789"))
        .await
        .unwrap();

    for cs in [
        format!(
            "DefaultEndpointsProtocol=http;AccountName={};AccountKey={};BlobEndpoint={endpoint};",
            Azurite::ACCOUNT,
            Azurite::ACCOUNT_KEY
        ),
        format!("UseDevelopmentStorage=true;BlobEndpoint={endpoint}"),
    ] {
        let cfg = config(&format!(
            r#"
            container = "connstr"
            [auth]
            method = "connection_string"
            connection_string = "{cs}"
            "#
        ));
        let c = client(&cfg);
        let listing = c.list_hierarchical("a/").await.unwrap();
        assert_eq!(listing.blobs.len(), 1, "{cs}");
        assert_eq!(read_all(&c, "a/b.json", 2, 5).await, b"234");
        let shown = format!("{cfg:?} {:?}", cfg.resolve().unwrap());
        assert!(!shown.contains(Azurite::ACCOUNT_KEY), "{shown}");
    }
}

/// Account SAS for the blob service, as "Create an account SAS" describes (2020-12-06+).
fn account_sas(permissions: &str) -> String {
    let (sv, st, se) = ("2022-11-02", "2020-01-01T00:00:00Z", "2099-01-01T00:00:00Z");
    let to_sign = [
        Azurite::ACCOUNT,
        permissions,
        "b",
        "sco",
        st,
        se,
        "",
        "https,http",
        sv,
        "",
        "",
    ]
    .join("\n");
    let sig = sign(&to_sign);
    format!(
        "sv={sv}&ss=b&srt=sco&sp={permissions}&st={}&se={}&spr=https,http&sig={}",
        enc(st),
        enc(se),
        enc(&sig)
    )
}

fn sas_config(endpoint: &str, container: &str, token: &str) -> StorageConfig {
    config(&format!(
        r#"
        blob_endpoint = "{endpoint}"
        container = "{container}"
        [auth]
        method = "sas"
        sas_token = "{token}"
        [retry]
        max_tries = 1
        "#
    ))
}

#[tokio::test]
async fn sas_tokens() {
    let azurite = Azurite::start().expect("azurite starts");
    let endpoint = azurite.blob_endpoint();
    let seed = client(&key_config(&endpoint, "sas", Azurite::ACCOUNT_KEY));
    let writer = BlockBlobWriter::new(&seed);
    writer.create_container().await.unwrap();
    writer
        .put_blob("d/x=1/PT1H.json", Bytes::from_static(b"abcdef"))
        .await
        .unwrap();

    let (service, _) = service_sas("sas", "rl");
    let account = account_sas("rl");
    let cases = [
        ("service SAS token", sas_config(&endpoint, "sas", &service)),
        (
            "service SAS with ?",
            sas_config(&endpoint, "sas", &format!("?{service}")),
        ),
        ("account SAS token", sas_config(&endpoint, "sas", &account)),
        (
            "service SAS URL",
            config(&format!(
                r#"
                container = "sas"
                [auth]
                method = "sas"
                sas_token = "{endpoint}/sas?{service}"
                "#
            )),
        ),
    ];
    for (what, cfg) in cases {
        let c = client(&cfg);
        let level = c
            .list_hierarchical("d/")
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(level.prefixes, vec!["d/x=1/"], "{what}");
        assert_eq!(c.list_blobs("").await.unwrap().len(), 1, "{what}");
        assert_eq!(
            c.properties("d/x=1/PT1H.json")
                .await
                .unwrap()
                .map(|p| p.content_length),
            Some(6),
            "{what}"
        );
        assert_eq!(
            read_all(&c, "d/x=1/PT1H.json", 1, 4).await,
            b"bcd",
            "{what}"
        );

        // Read + list only: a write is refused.
        let err = BlockBlobWriter::new(&c)
            .put_blob("d/new.json", Bytes::from_static(b"x"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StorageError::Auth { status: 403, .. }),
            "{what}: {err}"
        );

        // Nothing of the token shows in the client's Debug or the config's.
        let sig = service.rsplit("sig=").next().unwrap();
        let shown = format!("{c:?} {cfg:?} {:?}", cfg.resolve().unwrap());
        assert!(
            !shown.contains(sig) && !shown.contains("sig="),
            "{what}: {shown}"
        );
    }

    // A tampered signature is rejected.
    let tampered = service.replace("sp=rl", "sp=rwl");
    let c = client(&sas_config(&endpoint, "sas", &tampered));
    assert!(matches!(
        c.list_hierarchical("").await,
        Err(StorageError::Auth { status: 403, .. })
    ));
}

#[tokio::test]
async fn awkward_blob_names_survive() {
    let azurite = Azurite::start().expect("azurite starts");
    let c = client(&key_config(
        &azurite.blob_endpoint(),
        "names",
        Azurite::ACCOUNT_KEY,
    ));
    let writer = BlockBlobWriter::new(&c);
    writer.create_container().await.unwrap();

    let dir = "dir with space+plus%25&amp#hash?q=1 ü/";
    let names = [
        format!("{dir}a b.json"),
        format!("{dir}plus+sign.json"),
        format!("{dir}percent%41%.json"),
        format!("{dir}amp&and=eq.json"),
        format!("{dir}hash#frag.json"),
        format!("{dir}question?mark.json"),
        format!("{dir}日本語-Ünïcödé.json"),
        "resourceId=/SUBSCRIPTIONS/00000000-0000/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/NSG/y=2025/m=11/d=04/h=10/m=00/macAddress=00-0D-3A/PT1H.json".to_owned(),
    ];
    for (i, name) in names.iter().enumerate() {
        let content = Bytes::from(format!("content {i} of {name}"));
        writer
            .put_blob(name, content)
            .await
            .unwrap_or_else(|e| panic!("put {name:?}: {e}"));
    }

    let mut flat: Vec<String> = c
        .list_blobs("")
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.name)
        .collect();
    flat.sort();
    let mut want = names.to_vec();
    want.sort();
    assert_eq!(flat, want);

    let root = c.list_hierarchical("").await.unwrap();
    assert_eq!(
        root.prefixes,
        vec![dir.to_owned(), "resourceId=/".to_owned()]
    );
    let level = c.list_hierarchical(dir).await.unwrap();
    assert_eq!(level.blobs.len(), 7);
    assert!(level.prefixes.is_empty());
    let by_prefix = c.list_blobs(&format!("{dir}plus+")).await.unwrap();
    assert_eq!(by_prefix.len(), 1);

    for (i, name) in names.iter().enumerate() {
        let content = format!("content {i} of {name}");
        let p = c
            .properties(name)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{name:?} exists"));
        assert_eq!(p.content_length, content.len() as u64, "{name:?}");
        assert_eq!(
            read_all(&c, name, 0, p.content_length).await,
            content.as_bytes(),
            "{name:?}"
        );
        assert_eq!(
            c.get_committed_block_sizes(name).await.unwrap().len(),
            0,
            "{name:?}"
        );
    }
}

#[tokio::test]
async fn redaction_and_unreachable_endpoint() {
    // Nothing listens on this port: the connection error must name the container but not
    // the SAS signature that sits in the request URL.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let endpoint = format!("http://127.0.0.1:{port}/{}", Azurite::ACCOUNT);
    let token = "sv=2022-11-02&sr=c&sp=rl&sig=SECRETSIGNATUREVALUE%3D";
    let c = client(&sas_config(&endpoint, "c", token));
    let err = c.list_hierarchical("p/").await.unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(!text.contains("SECRETSIGNATUREVALUE"), "{text}");
    assert!(err.is_transient(), "{text}");

    let cfg = key_config(&endpoint, "c", Azurite::ACCOUNT_KEY);
    let shown = format!("{cfg:?} {:?} {:?}", cfg.resolve().unwrap(), client(&cfg));
    assert!(!shown.contains(Azurite::ACCOUNT_KEY), "{shown}");
    assert!(shown.contains("[redacted]"), "{shown}");
}

/// Resets and throttling are retried with backoff and counted; giving up reports the status.
#[tokio::test]
async fn throttled_requests_are_retried() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Drops the first connection, answers 503 to the next two requests and to every request
    // for `always-busy/`.
    let server = tokio::spawn(async move {
        let mut served = 0usize;
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let mut buf = vec![0u8; 16 * 1024];
            let n = sock.read(&mut buf).await.unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).to_string();
            served += 1;
            if served == 1 {
                // A connection reset: the request is read, then the socket dropped unanswered.
                drop(sock);
                continue;
            }
            let busy = served <= 3 || head.contains("always-busy");
            let (status, body) = if busy {
                ("503 Server Busy", "<?xml version=\"1.0\"?><Error><Code>ServerBusy</Code><Message>busy</Message></Error>".to_owned())
            } else {
                ("200 OK", "<?xml version=\"1.0\" encoding=\"utf-8\"?><EnumerationResults><Blobs><BlobPrefix><Name>p/q/</Name></BlobPrefix></Blobs><NextMarker/></EnumerationResults>".to_owned())
            };
            let code = if busy {
                "x-ms-error-code: ServerBusy\r\n"
            } else {
                ""
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/xml\r\n{code}content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        }
    });
    let endpoint = format!("http://127.0.0.1:{port}/{}", Azurite::ACCOUNT);
    let cfg = config(&format!(
        r#"
        blob_endpoint = "{endpoint}"
        container = "c"
        [auth]
        method = "account_key"
        account_key = "{}"
        [retry]
        max_tries = 4
        initial_delay_ms = 10
        "#,
        Azurite::ACCOUNT_KEY
    ));
    let c = client(&cfg);
    let listing = c.list_hierarchical("p/").await.unwrap();
    assert_eq!(listing.prefixes, vec!["p/q/"]);
    let s = c.stats().snapshot();
    assert_eq!((s.list_requests, s.retries), (1, 3));

    let err = c.list_hierarchical("always-busy/").await.unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::Request {
                status: Some(503),
                ..
            }
        ),
        "{err}"
    );
    assert!(err.is_transient());
    assert_eq!(
        c.stats().snapshot().retries,
        3 + 3,
        "three retries after the first try"
    );
    server.abort();
}
