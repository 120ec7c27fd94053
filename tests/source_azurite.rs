//! The blob source against a real Azurite, with blobs grown exactly as Azure grows them (a head
//! block, one `,record` block per Put Block List committed before the `]}` tail): exact
//! incremental reads and their counters, the registry across restarts, start policies, settle,
//! partial and malformed records, rewritten and deleted blobs, partition walking and resource
//! discovery.
//!
//! Library-level tests drive `Walker`, `read_blob` and the registry directly (see
//! `common::blobs::Follower`); policies that live in the daemon's planner run the real
//! `flowlogd once` against Azurite and a real search engine (`common::flowlogd::Es::engine`:
//! the OpenSearch node of this run, or the cluster of `ELASTICSEARCH_URL`), each test in its
//! own indices, deleted at its end. Lines starting with `MEASURE` are the figures
//! `scripts/bench-source.sh` collects for docs/PERFORMANCE.md.
//!
//! Credential kinds (key, connection string, SAS, wrong key) are covered in tests/azure_client.rs.

mod common;

use std::{collections::HashSet, time::Duration};

use bytes::Bytes;
use common::{
    Azurite,
    blobs::{
        Daemon, Follower, HOUR, Summary, append_each, client, gen_blob, ids_of_whole_blob,
        records_of, this_hour, writer,
    },
    flowlogd::Es,
};
use flowlogd::{
    generator::GenKind,
    pipeline::DecodeProblem,
    registry::{BlobEntry, BlobState, Registry},
    source::{
        layout::{hour_partition, partition_of},
        listing::BlobItem,
        reader::ReadTask,
        upload::{FLOW_LOG_HEAD, FLOW_LOG_TAIL},
        walker::Walker,
    },
};
use futures::StreamExt as _;

const CONTAINER: &str = "insights-logs-flowlogflowevent";
/// Discovery never comes due again during a test.
const NO_REDISCOVERY: Duration = Duration::from_secs(3600);

fn azurite() -> Azurite {
    Azurite::start().expect("azurite starts (run scripts/deps.sh)")
}

/// The listing entry of `name` in its hour partition.
async fn listed(walker: &Walker, name: &str) -> BlobItem {
    let partition = partition_of(name).expect("flow-log name");
    let blobs = walker
        .list_partitions(&[partition].into())
        .await
        .expect("list partition");
    blobs
        .into_iter()
        .find(|b| b.name == name)
        .unwrap_or_else(|| panic!("{name} not listed"))
}

/// Absolute start offset of each block, and the blob length last.
fn block_starts(blocks: &[Vec<u8>]) -> Vec<u64> {
    let mut at = 0u64;
    let mut out = vec![0];
    for b in blocks {
        at += b.len() as u64;
        out.push(at);
    }
    out
}

fn epoch_hour(t: i64) -> i64 {
    t.div_euclid(HOUR)
}

#[tokio::test]
async fn a_blob_growing_over_60_appends_is_read_exactly_once_per_byte() {
    const APPENDS: usize = 60;
    const TUPLES: usize = 10;
    let azurite = azurite();
    let w = writer(&azurite, CONTAINER).await;
    let hour = this_hour();
    let blob = gen_blob(GenKind::Vnet, "fl-growth", hour, APPENDS, TUPLES, 7);
    let records = records_of(&blob);

    let reader = client(&azurite, CONTAINER);
    let stats = reader.stats().clone();
    let mut walker = Walker::new(reader.clone(), None, &[], NO_REDISCOVERY);
    let mut follower = Follower::new(reader, Registry::temporary().unwrap(), "src");

    let mut appended = 0u64;
    let mut list_requests_per_poll = Vec::new();
    for (i, record) in records.iter().enumerate() {
        let length = append_each(&w, &blob.name, std::slice::from_ref(record)).await;
        appended = length;
        // Discovery runs once (the resource exists after the first append), then stays not due.
        walker.discover_if_due().await.unwrap();
        let partitions = walker.partitions_for_hours([epoch_hour(hour)]);
        assert_eq!(partitions.first(), partition_of(&blob.name).as_ref());
        let before = stats.snapshot();
        let listing = walker.list_partitions(&partitions).await.unwrap();
        list_requests_per_poll.push(stats.snapshot().since(&before).list_requests);
        assert_eq!(listing.len(), 1);
        let item = &listing[0];
        assert_eq!(item.content_length, length);
        let read = follower
            .poll(item)
            .await
            .unwrap_or_else(|| panic!("append {i}: blob grew but nothing was planned"));
        assert!(read.problems.is_empty(), "append {i}: {:?}", read.problems);
        assert_eq!(read.ids.len(), TUPLES, "append {i}: one record's tuples");
        let end = read.outcome.end.expect("read finished");
        assert_eq!(
            end.resume_offset,
            length - FLOW_LOG_TAIL.len() as u64,
            "append {i}"
        );
        assert_eq!(end.partial_record_bytes, 0);
        assert!(end.saw_tail);
    }
    // Nothing new: the listing matches the registry, so no GET at all.
    let before = stats.snapshot();
    let item = listed(&walker, &blob.name).await;
    assert!(
        follower.poll(&item).await.is_none(),
        "unchanged blob planned again"
    );
    assert_eq!(stats.snapshot().since(&before).download_requests, 0);

    let s = stats.snapshot();
    assert_eq!(appended, blob.bytes().len() as u64);
    assert_eq!(
        s.download_requests, APPENDS as u64,
        "one ranged GET per append"
    );
    let amplification = s.bytes_downloaded as f64 / appended as f64;
    println!(
        "MEASURE growth appends={APPENDS} tuples_per_record={TUPLES} bytes_appended={appended} \
         bytes_downloaded={} get_requests={} read_amplification={amplification:.4} \
         list_requests_per_poll={}",
        s.bytes_downloaded, s.download_requests, list_requests_per_poll[1]
    );
    assert!(
        amplification <= 1.01,
        "read amplification {amplification:.4} ({} bytes downloaded for {appended} appended)",
        s.bytes_downloaded
    );
    assert!(list_requests_per_poll.iter().all(|&n| n == 1));

    // Every tuple decoded exactly once, with the ids a single pass over the final blob gives.
    assert!(follower.duplicates().is_empty(), "duplicate ids");
    let got: HashSet<_> = follower.seen.keys().cloned().collect();
    let want: HashSet<_> = ids_of_whole_blob(CONTAINER, &blob.name, &blob.bytes())
        .into_iter()
        .collect();
    assert_eq!(want.len(), APPENDS * TUPLES);
    assert_eq!(got, want);

    let entry = follower.registry.get("src", &blob.name).unwrap().unwrap();
    assert_eq!(entry.offset, appended - 2);
    assert_eq!(entry.length_seen, appended);
    assert_eq!(entry.head_len, Some(FLOW_LOG_HEAD.len() as u32));
    assert_eq!(entry.etag, item.etag);
}

#[tokio::test]
async fn restart_from_the_registry_resumes_without_rereading() {
    let azurite = azurite();
    let w = writer(&azurite, CONTAINER).await;
    let blob = gen_blob(GenKind::Nsg2, "nsg-restart", this_hour(), 8, 6, 3);
    let records = records_of(&blob);
    append_each(&w, &blob.name, &records[..5]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry");

    let first_ids: HashSet<String> = {
        let c = client(&azurite, CONTAINER);
        let mut walker = Walker::new(c.clone(), None, &[], NO_REDISCOVERY);
        walker.discover().await.unwrap();
        let mut follower = Follower::new(c, Registry::open(&path).unwrap(), "src");
        let item = listed(&walker, &blob.name).await;
        let read = follower.poll(&item).await.expect("first read");
        assert_eq!(read.ids.len(), 5 * 6);
        follower.registry.flush().unwrap();
        read.ids.into_iter().collect()
        // Registry and client dropped here: the "process" ends.
    };

    // Restart: new client (fresh counters), registry reopened from disk.
    let c = client(&azurite, CONTAINER);
    let stats = c.stats().clone();
    let mut walker = Walker::new(c.clone(), None, &[], NO_REDISCOVERY);
    walker.discover().await.unwrap();
    let mut follower = Follower::new(c, Registry::open(&path).unwrap(), "src");
    let item = listed(&walker, &blob.name).await;
    let entry = follower.registry.get("src", &blob.name).unwrap().unwrap();
    assert_eq!(
        entry.offset,
        item.content_length - 2,
        "offset survived the restart"
    );
    assert!(
        follower.poll(&item).await.is_none(),
        "nothing new, nothing planned"
    );
    assert_eq!(
        stats.snapshot().bytes_downloaded,
        0,
        "restart re-read bytes"
    );

    // Growth after the restart: only the new bytes (and the 2-byte tail) are fetched.
    let before = item.content_length;
    let after = append_each(&w, &blob.name, &records[5..]).await;
    let item = listed(&walker, &blob.name).await;
    // Smallest chunks: every network piece becomes its own checked commit.
    follower.limits.chunk_bytes = 1;
    let read = follower.poll(&item).await.expect("read after growth");
    assert!(read.committed.len() >= 2, "{:?}", read.committed);
    assert_eq!(read.committed.first().map(|c| c.0), Some(before - 2));
    assert!(
        read.committed.windows(2).all(|w| w[0].1 == w[1].0),
        "{:?}",
        read.committed
    );
    assert_eq!(read.committed.last().map(|c| c.1), Some(after - 2));
    assert_eq!(stats.snapshot().bytes_downloaded, after - before + 2);
    assert_eq!(read.ids.len(), 3 * 6);
    assert!(
        read.ids.iter().all(|id| !first_ids.contains(id)),
        "a tuple was read twice"
    );
    println!(
        "MEASURE restart bytes_downloaded_after_restart=0 bytes_downloaded_after_growth={} bytes_grown={}",
        after - before + 2,
        after - before
    );
}

#[tokio::test]
async fn rerunning_once_downloads_nothing_and_then_only_what_was_appended() {
    let azurite = azurite();
    let es = Es::engine("rerunning_once_downloads_nothing_and_then_only_what_was_appended");
    let w = writer(&azurite, CONTAINER).await;
    let blob = gen_blob(GenKind::Vnet, "fl-once", this_hour(), 15, 8, 11);
    let records = records_of(&blob);
    let len10 = append_each(&w, &blob.name, &records[..10]).await;
    let daemon = Daemon::new(&azurite, &es, CONTAINER);

    let first = daemon.once().summary;
    assert_eq!(first.blobs_read, 1);
    assert_eq!(first.bytes_new, len10);
    assert_eq!(first.bytes_downloaded, len10);
    assert_eq!(first.documents_indexed, 10 * 8);
    assert_eq!(first.errors, 0);

    let second = daemon.once().summary;
    assert_eq!(
        (
            second.blobs_read,
            second.bytes_downloaded,
            second.bytes_new,
            second.documents_indexed
        ),
        (0, 0, 0, 0),
        "a restart re-read something: {second:?}"
    );
    assert_eq!(second.blobs_listed, 1);

    let len15 = append_each(&w, &blob.name, &records[10..]).await;
    let third = daemon.once().summary;
    assert_eq!(third.bytes_new, len15 - len10 + 2);
    assert_eq!(third.bytes_downloaded, len15 - len10 + 2);
    assert_eq!(third.documents_indexed, 5 * 8);
    assert_eq!(third.documents_existing, 0, "a tuple was sent twice");
    assert_eq!(es.count(&es.all()).await, 15 * 8);
    let downloaded = first.bytes_downloaded + second.bytes_downloaded + third.bytes_downloaded;
    println!(
        "MEASURE once_restarts runs=3 bytes_appended={len15} bytes_downloaded={downloaded} \
         read_amplification={:.4} second_run_bytes_downloaded={} list_requests_per_run={}/{}/{}",
        downloaded as f64 / len15 as f64,
        second.bytes_downloaded,
        first.list_requests,
        second.list_requests,
        third.list_requests
    );
    es.cleanup().await;
}

#[tokio::test]
async fn resume_reads_unseen_blobs_from_0_and_known_blobs_from_their_offset() {
    let azurite = azurite();
    let es = Es::engine("resume_reads_unseen_blobs_from_0_and_known_blobs_from_their_offset");
    let w = writer(&azurite, CONTAINER).await;
    let a = gen_blob(GenKind::Vnet, "fl-resume", this_hour(), 7, 5, 21);
    let b = gen_blob(GenKind::Vnet, "fl-resume", this_hour(), 3, 5, 22);
    assert_ne!(a.name, b.name);
    let a_records = records_of(&a);
    let a5 = append_each(&w, &a.name, &a_records[..5]).await;
    let daemon = Daemon::new(&azurite, &es, CONTAINER); // start = resume (default)

    let first = daemon.once().summary;
    assert_eq!((first.bytes_new, first.documents_indexed), (a5, 5 * 5));

    let a7 = append_each(&w, &a.name, &a_records[5..]).await;
    let b_len = append_each(&w, &b.name, &records_of(&b)).await;
    let second = daemon.once().summary;
    assert_eq!(second.blobs_read, 2);
    assert_eq!(
        second.bytes_new,
        (a7 - a5 + 2) + b_len,
        "A from its offset, B from 0"
    );
    assert_eq!(second.documents_indexed, (2 + 3) * 5);
    assert_eq!(second.documents_existing, 0);
    let registry = daemon.registry();
    assert_eq!(
        registry.get("src", &b.name).unwrap().unwrap().offset,
        b_len - 2
    );
    assert_eq!(
        registry.get("src", &a.name).unwrap().unwrap().offset,
        a7 - 2
    );
    assert_eq!(es.count(&es.all()).await, 10 * 5);
    es.cleanup().await;
}

#[tokio::test]
async fn start_over_ignores_stored_offsets_and_reads_everything_again() {
    let azurite = azurite();
    let es = Es::engine("start_over_ignores_stored_offsets_and_reads_everything_again");
    let w = writer(&azurite, CONTAINER).await;
    let blob = gen_blob(GenKind::Nsg1, "nsg-over", this_hour(), 6, 4, 31);
    let len = append_each(&w, &blob.name, &records_of(&blob)).await;
    let mut daemon = Daemon::new(&azurite, &es, CONTAINER);
    let first = daemon.once().summary;
    assert_eq!((first.bytes_new, first.documents_indexed), (len, 6 * 4));

    daemon.source_options = r#"start = "start_over""#.into();
    let again = daemon.once();
    assert!(again.stderr.contains("start_over"), "{}", again.stderr);
    let s = again.summary;
    assert_eq!(s.bytes_new, len, "stored offset was not ignored");
    assert_eq!(s.documents_indexed, 0);
    assert_eq!(s.documents_existing, 6 * 4, "re-read tuples keep their ids");
    assert_eq!(s.errors, 0);
    assert_eq!(es.count(&es.all()).await, 6 * 4);
    es.cleanup().await;
}

#[tokio::test]
async fn start_fresh_takes_existing_blobs_as_read_and_reads_only_later_bytes() {
    let azurite = azurite();
    let es = Es::engine("start_fresh_takes_existing_blobs_as_read_and_reads_only_later_bytes");
    let w = writer(&azurite, CONTAINER).await;
    let old = gen_blob(GenKind::Vnet, "fl-fresh", this_hour(), 9, 5, 41);
    let later = gen_blob(GenKind::Vnet, "fl-fresh", this_hour(), 2, 5, 42);
    let old_records = records_of(&old);
    let len6 = append_each(&w, &old.name, &old_records[..6]).await;
    let mut daemon = Daemon::new(&azurite, &es, CONTAINER);
    daemon.source_options = r#"start = "start_fresh""#.into();

    let first = daemon.once().summary;
    assert_eq!(first.blobs_listed, 1);
    assert_eq!(
        (first.bytes_new, first.documents_indexed),
        (0, 0),
        "{first:?}"
    );
    // Only the last bytes are fetched to find where the records end.
    assert!(first.bytes_downloaded <= 64, "{first:?}");
    let entry = daemon.registry().get("src", &old.name).unwrap().unwrap();
    assert_eq!(entry.offset, len6 - 2, "taken as read up to its `]`");

    let len9 = append_each(&w, &old.name, &old_records[6..]).await;
    let later_len = append_each(&w, &later.name, &records_of(&later)).await;
    let second = daemon.once().summary;
    assert_eq!(second.bytes_new, (len9 - len6 + 2) + later_len);
    assert_eq!(
        second.documents_indexed,
        (3 + 2) * 5,
        "appended records and the new blob"
    );
    assert_eq!(es.count(&es.all()).await, 5 * 5);
    es.cleanup().await;
}

#[tokio::test]
async fn since_skips_hours_older_than_it_on_the_first_run() {
    let azurite = azurite();
    let es = Es::engine("since_skips_hours_older_than_it_on_the_first_run");
    let now = this_hour();
    let w = writer(&azurite, CONTAINER).await;
    let ancient = gen_blob(GenKind::Vnet, "fl-since", now - 10 * HOUR, 2, 3, 51);
    let older = gen_blob(GenKind::Vnet, "fl-since", now - 4 * HOUR, 2, 3, 52);
    let recent = gen_blob(GenKind::Vnet, "fl-since", now - HOUR, 2, 3, 53);
    for b in [&ancient, &older, &recent] {
        append_each(&w, &b.name, &records_of(b)).await;
    }

    // A duration: only the last 3 hours (and the current one) are listed.
    let mut daemon = Daemon::new(&azurite, &es, CONTAINER);
    daemon.source_options = r#"since = "3h""#.into();
    let first = daemon.once().summary;
    assert_eq!((first.blobs_listed, first.blobs_read), (1, 1), "{first:?}");
    assert_eq!(first.documents_indexed, 2 * 3);
    let second = daemon.once().summary;
    assert_eq!(
        second.blobs_read, 0,
        "older hours are never listed later either"
    );
    let registry = daemon.registry();
    assert!(registry.get("src", &ancient.name).unwrap().is_none());
    assert!(registry.get("src", &older.name).unwrap().is_none());
    drop(registry);

    // An RFC 3339 time, with its own registry: reads from 5 hours ago.
    let mut at = Daemon::new(&azurite, &es, CONTAINER);
    let since = chrono::DateTime::from_timestamp(now - 5 * HOUR, 0).unwrap();
    at.source_options = format!("since = \"{}\"", since.to_rfc3339());
    let s = at.once().summary;
    // Four past hours may be listed as one day prefix, which also returns `ancient` when it
    // is of the same day: listed, filtered out, never read.
    assert_eq!(s.blobs_read, 2, "{s:?}");
    assert!(s.blobs_listed >= 2, "{s:?}");
    assert!(at.registry().get("src", &ancient.name).unwrap().is_none());
    es.cleanup().await;
}

// Issue 10, backfill listing: a first run with a long `since` lists the past by year, month and
// day prefixes (paged), not one request per hour (8,761 for a year, per resource).
#[tokio::test]
async fn a_first_run_with_a_year_of_backlog_lists_a_few_prefixes_not_every_hour() {
    let azurite = azurite();
    let es = Es::engine("a_first_run_with_a_year_of_backlog");
    let now = this_hour();
    let w = writer(&azurite, "backfill").await;
    let day = 24 * HOUR;
    let mut wanted = Vec::new();
    for (i, at) in [
        0,
        HOUR,
        30 * HOUR,
        10 * day,
        40 * day,
        100 * day,
        200 * day,
        300 * day,
    ]
    .into_iter()
    .enumerate()
    {
        let blob = gen_blob(GenKind::Vnet, "fl-backfill", now - at, 2, 3, 200 + i as u64);
        append_each(&w, &blob.name, &records_of(&blob)).await;
        wanted.push(blob);
    }
    // Older than `since`: under the same year or month prefix maybe, but never read.
    let too_old = gen_blob(GenKind::Vnet, "fl-backfill", now - 366 * day, 2, 3, 299);
    append_each(&w, &too_old.name, &records_of(&too_old)).await;

    let mut daemon = Daemon::new(&azurite, &es, "backfill");
    daemon.source_options = r#"since = "365d""#.into();
    let s = daemon.once().summary;
    println!(
        "MEASURE backfill since=365d resources=1 blobs=9 list_requests={} blobs_listed={}",
        s.list_requests, s.blobs_listed
    );
    assert_eq!(s.errors, 0, "{s:?}");
    assert_eq!(s.blobs_read, 8, "{s:?}");
    assert_eq!(s.documents_indexed, 8 * 2 * 3, "{s:?}");
    // Discovery (a few hierarchical levels) plus at most a year, a month or two, a day or
    // two and the hourly prefixes of the current and previous hour.
    assert!(
        s.list_requests <= 24,
        "{} List Blobs requests for a year of backlog",
        s.list_requests
    );
    let registry = daemon.registry();
    assert!(registry.get("src", &too_old.name).unwrap().is_none());
    for blob in &wanted {
        assert!(
            registry.get("src", &blob.name).unwrap().is_some(),
            "{}",
            blob.name
        );
    }
    drop(registry);
    es.cleanup().await;
}

#[tokio::test]
async fn a_blob_is_read_only_once_it_has_settled() {
    // The first run sees the blobs younger than `settle` whatever the machine's pace (an
    // hour); the second, with `settle` of 2 s, runs once they are surely older than that.
    const SETTLE_S: u64 = 2;
    let azurite = azurite();
    let es = Es::engine("a_blob_is_read_only_once_it_has_settled");
    let w = writer(&azurite, CONTAINER).await;
    // One blob in the current hour, one in an hour that is no longer "current or previous"
    // by the time it settles (as with `settle = "75m"`: an hour's blob settles 2 hours later).
    let current = gen_blob(GenKind::Vnet, "fl-settle", this_hour(), 3, 4, 61);
    let past = gen_blob(GenKind::Vnet, "fl-settle", this_hour() - 3 * HOUR, 3, 4, 62);
    append_each(&w, &current.name, &records_of(&current)).await;
    append_each(&w, &past.name, &records_of(&past)).await;
    let written = std::time::Instant::now();
    let mut daemon = Daemon::new(&azurite, &es, CONTAINER);
    daemon.source_options = "settle = \"1h\"".into();

    let early = daemon.once().summary;
    assert_eq!(early.blobs_listed, 2);
    assert_eq!(
        (early.blobs_read, early.bytes_new, early.documents_indexed),
        (0, 0, 0),
        "{early:?}"
    );

    // Last-Modified has a one-second resolution: wait a little longer than `settle`.
    daemon.source_options = format!("settle = \"{SETTLE_S}s\"");
    let wait = Duration::from_millis(SETTLE_S * 1000 + 1500).saturating_sub(written.elapsed());
    tokio::time::sleep(wait).await;
    let settled = daemon.once().summary;
    assert_eq!(settled.blobs_read, 2, "{settled:?}");
    assert_eq!(settled.documents_indexed, 2 * 3 * 4);
    assert_eq!(es.count(&es.all()).await, 2 * 3 * 4);
    es.cleanup().await;
}

#[tokio::test]
async fn a_read_ending_mid_record_resumes_at_the_end_of_the_last_complete_record() {
    let azurite = azurite();
    let w = writer(&azurite, CONTAINER).await;
    let blob = gen_blob(GenKind::Vnet, "fl-partial", this_hour(), 4, 5, 71);
    let len = append_each(&w, &blob.name, &records_of(&blob)).await;
    let starts = block_starts(&blob.blocks);
    // blocks: head, rec0, ",rec1", ",rec2", ",rec3", tail
    let (rec1_end, rec2_start) = (starts[3], starts[3] + 1);
    let c = client(&azurite, CONTAINER);
    let walker = Walker::new(c.clone(), None, &[], NO_REDISCOVERY);
    let mut follower = Follower::new(c, Registry::temporary().unwrap(), "src");
    let item = listed(&walker, &blob.name).await;
    assert_eq!(item.content_length, len);

    // 1. A ranged read whose end (the length it was planned with) falls 10 bytes into rec2.
    let cut = rec2_start + 10;
    let short = BlobItem {
        content_length: cut,
        ..item.clone()
    };
    let read = follower
        .read(ReadTask {
            blob: short,
            from: 0,
        })
        .await;
    assert!(read.problems.is_empty(), "{:?}", read.problems);
    let end = read.outcome.end.unwrap();
    assert_eq!(read.ids.len(), 2 * 5, "rec0 and rec1");
    assert_eq!(end.resume_offset, rec1_end);
    assert_eq!(end.partial_record_bytes, 10);
    assert_eq!(
        read.outcome.stats.record_errors + read.outcome.stats.malformed_bytes,
        0
    );
    let entry = follower.registry.get("src", &blob.name).unwrap().unwrap();
    assert_eq!((entry.offset, entry.length_seen), (rec1_end, cut));

    // The next poll sees the real length and continues at rec1's end: nothing lost or doubled.
    let read = follower.poll(&item).await.expect("grown");
    assert_eq!(read.committed[0].0, rec1_end);
    assert!(read.problems.is_empty());
    assert_eq!(read.ids.len(), 2 * 5, "rec2 and rec3");
    assert!(follower.duplicates().is_empty());
    assert_eq!(follower.seen.len(), 4 * 5);

    // 2. The blob's own bytes end inside a record (a writer that stopped mid-record, no tail
    //    yet); the record is completed later.
    let name = blob.name.replace("PT1H.json", "PT1H-cut.json");
    let whole = blob.bytes();
    let half = (starts[2] + starts[3]) / 2; // inside rec1
    w.put_blob(&name, Bytes::copy_from_slice(&whole[..half as usize]))
        .await
        .unwrap();
    let item = listed(&walker, &name).await;
    let read = follower.poll(&item).await.expect("new blob");
    assert!(read.problems.is_empty(), "{:?}", read.problems);
    let end = read.outcome.end.unwrap();
    assert_eq!(read.ids.len(), 5);
    assert_eq!(end.resume_offset, starts[2], "end of rec0");
    assert_eq!(end.partial_record_bytes, half - starts[2] - 1);
    assert!(!end.saw_tail);
    w.put_blob(&name, Bytes::from(whole.clone())).await.unwrap();
    let item = listed(&walker, &name).await;
    let read = follower.poll(&item).await.expect("grown");
    assert!(read.problems.is_empty(), "{:?}", read.problems);
    assert_eq!(read.ids.len(), 3 * 5);
    let want: HashSet<_> = ids_of_whole_blob(CONTAINER, &name, &whole)
        .into_iter()
        .collect();
    let got: HashSet<_> = follower.seen.keys().cloned().collect();
    assert!(want.is_subset(&got), "every tuple of the cut blob was read");
    assert!(follower.duplicates().is_empty());
    assert_eq!(follower.seen.len(), 8 * 5);
}

#[tokio::test]
async fn a_rewritten_blob_is_detected_logged_and_read_again_from_0_without_duplicates() {
    let azurite = azurite();
    let es =
        Es::engine("a_rewritten_blob_is_detected_logged_and_read_again_from_0_without_duplicates");
    let w = writer(&azurite, CONTAINER).await;
    let blob = gen_blob(GenKind::Vnet, "fl-rewrite", this_hour(), 10, 4, 81);
    let records = records_of(&blob);
    let len10 = append_each(&w, &blob.name, &records).await;
    let daemon = Daemon::new(&azurite, &es, CONTAINER);
    assert_eq!(daemon.once().summary.documents_indexed, 10 * 4);

    // Rewritten shorter (the same first 4 records): below the stored offset.
    w.delete_blob(&blob.name).await.unwrap();
    let len4 = append_each(&w, &blob.name, &records[..4]).await;
    assert!(len4 < len10);
    let run = daemon.once();
    assert!(
        run.stderr.contains("rewritten") && run.stderr.contains(&blob.name),
        "rewrite not logged with the blob name:\n{}",
        run.stderr
    );
    let s = run.summary;
    assert_eq!(s.bytes_new, len4, "re-read from 0");
    // on_rewrite = "replace" (default): the old content's 40 documents were deleted first.
    assert_eq!(s.documents_indexed, 4 * 4, "{s:?}");
    assert_eq!(s.documents_existing, 0, "{s:?}");
    assert_eq!(s.errors, 0);
    let entry = daemon.registry().get("src", &blob.name).unwrap().unwrap();
    assert_eq!((entry.offset, entry.length_seen), (len4 - 2, len4));
    assert_eq!(
        es.count(&es.all()).await,
        4 * 4,
        "the index holds what the blob holds"
    );

    // It then grows as usual and is followed from its new offset.
    let len6 = append_each(&w, &blob.name, &records[4..6]).await;
    let s = daemon.once().summary;
    assert_eq!(s.bytes_new, len6 - len4 + 2);
    assert_eq!(es.count(&es.all()).await, 6 * 4);
    es.cleanup().await;
}

#[tokio::test]
async fn a_deleted_blob_is_marked_gone_and_forgotten_after_forget_gone_after() {
    let azurite = azurite();
    let es = Es::engine("a_deleted_blob_is_marked_gone_and_forgotten_after_forget_gone_after");
    let w = writer(&azurite, CONTAINER).await;
    let doomed = gen_blob(GenKind::Nsg2, "nsg-retention", this_hour(), 2, 3, 91);
    let kept = gen_blob(GenKind::Nsg2, "nsg-retention", this_hour(), 2, 3, 92);
    append_each(&w, &doomed.name, &records_of(&doomed)).await;
    append_each(&w, &kept.name, &records_of(&kept)).await;
    let mut daemon = Daemon::new(&azurite, &es, CONTAINER);
    daemon.source_options = r#"forget_gone_after = "3s""#.into();
    assert_eq!(daemon.once().summary.blobs_read, 2);

    assert!(w.delete_blob(&doomed.name).await.unwrap());
    let run = daemon.once();
    assert!(
        run.stderr.contains("gone") && run.stderr.contains(&doomed.name),
        "{}",
        run.stderr
    );
    assert_eq!((run.summary.blobs_read, run.summary.errors), (0, 0));
    let registry = daemon.registry();
    let entry = registry
        .get("src", &doomed.name)
        .unwrap()
        .expect("kept during grace");
    assert_eq!(entry.state, BlobState::Gone);
    assert_eq!(
        registry.get("src", &kept.name).unwrap().unwrap().state,
        BlobState::Active
    );
    drop(registry);

    tokio::time::sleep(Duration::from_millis(3500)).await;
    let run = daemon.once();
    assert!(run.stderr.contains("forgot"), "{}", run.stderr);
    assert_eq!((run.summary.blobs_read, run.summary.errors), (0, 0));
    let registry = daemon.registry();
    assert!(
        registry.get("src", &doomed.name).unwrap().is_none(),
        "not forgotten"
    );
    assert_eq!(
        registry.get("src", &kept.name).unwrap().unwrap().state,
        BlobState::Active
    );
    es.cleanup().await;
}

#[tokio::test]
async fn a_malformed_record_in_the_middle_is_reported_and_the_reader_resynchronises() {
    const TUPLES: usize = 4;
    let azurite = azurite();
    let es =
        Es::engine("a_malformed_record_in_the_middle_is_reported_and_the_reader_resynchronises");
    let w = writer(&azurite, CONTAINER).await;
    let blob = gen_blob(GenKind::Vnet, "fl-malformed", this_hour(), 6, TUPLES, 101);
    let good = records_of(&blob);
    // A record cut short (the next record starts inside it), a record whose only tuple is not
    // a string, and bytes that are not a record at all.
    let cut = Bytes::from_static(
        br#"{"time":"2026-11-21T16:02:52.0000000Z","flowLogVersion":4,"flowRecords":{"flows":["#,
    );
    let bad_json = Bytes::from_static(
        br#"{"time":"2026-11-21T16:04:52.0000000Z","flowLogVersion":4,"flowRecords":{"flows":[{"flowGroups":[{"rule":"R","flowTuples":[42]}]}]}}"#,
    );
    let garbage = Bytes::from_static(b"xyz");
    let sequence = [
        good[0].clone(),
        good[1].clone(),
        cut,
        good[2].clone(),
        bad_json,
        good[3].clone(),
        garbage,
        good[4].clone(),
    ];
    let len = append_each(&w, &blob.name, &sequence).await;
    // Offsets of each block: head, then one block per element of `sequence`, then the tail.
    let mut blocks = vec![FLOW_LOG_HEAD.to_vec()];
    for (i, r) in sequence.iter().enumerate() {
        blocks.push([if i == 0 { &b""[..] } else { b"," }, r].concat());
    }
    let at = block_starts(&blocks);
    assert_eq!(at[blocks.len()] + 2, len);
    let cut_at = at[3] + 1;
    let bad_json_at = at[5] + 1;
    let garbage_at = at[7] + 1;

    let c = client(&azurite, CONTAINER);
    let walker = Walker::new(c.clone(), None, &[], NO_REDISCOVERY);
    let mut follower = Follower::new(c, Registry::temporary().unwrap(), "src");
    let item = listed(&walker, &blob.name).await;
    let read = follower.poll(&item).await.unwrap();
    assert_eq!(
        read.ids.len(),
        5 * TUPLES,
        "the five good records, around the bad ones"
    );
    assert_eq!(read.problems.len(), 3, "{:#?}", read.problems);
    match &read.problems[0] {
        DecodeProblem::Malformed {
            offset,
            reason,
            excerpt,
            ..
        } => {
            assert_eq!(*offset, cut_at);
            assert!(reason.contains("cut short"), "{reason}");
            assert!(
                excerpt.starts_with(b"{\"time\""),
                "the excerpt is the cut record's start: {}",
                String::from_utf8_lossy(excerpt)
            );
        }
        other => panic!("cut record reported as {other:?}"),
    }
    // Its only tuple is a number: that tuple is the problem (issue 9, item 12), not the record.
    match &read.problems[1] {
        DecodeProblem::Tuple {
            offset,
            tuple_index,
            error,
        } => {
            assert_eq!((*offset, *tuple_index), (bad_json_at, 0));
            assert_eq!(error.tuple, "42");
        }
        other => panic!("bad tuple reported as {other:?}"),
    }
    match &read.problems[2] {
        DecodeProblem::Malformed {
            offset,
            len,
            reason,
            excerpt,
        } => {
            assert_eq!(
                (*offset, *len),
                (garbage_at, 4),
                "`xyz,` up to the next record"
            );
            // The excerpt is what the scanner still holds of the run: all of it when the
            // garbage arrived in one network read, nothing when a read ended inside it (the
            // bytes before were released as they were scanned). Never other bytes.
            assert!(
                excerpt.is_empty() || excerpt == b"xyz,",
                "the excerpt is the garbage itself: {excerpt:?}"
            );
            assert!(reason.contains("between records"), "{reason}");
        }
        other => panic!("garbage reported as {other:?}"),
    }
    assert_eq!(
        read.outcome.end.unwrap().resume_offset,
        len - 2,
        "read past the bad bytes"
    );

    // The next record is read, and the bad ones are not reported again.
    let len_after = append_each(&w, &blob.name, &good[5..]).await;
    let item = listed(&walker, &blob.name).await;
    let read = follower.poll(&item).await.unwrap();
    assert!(read.problems.is_empty(), "{:?}", read.problems);
    assert_eq!(read.ids.len(), TUPLES);
    assert!(follower.duplicates().is_empty());

    // The daemon reports each one with blob, offset and reason, and goes on.
    let daemon = Daemon::new(&azurite, &es, CONTAINER);
    let run = daemon.once();
    assert_eq!(run.summary.documents_indexed, 6 * TUPLES as u64);
    assert_eq!(run.summary.documents_dead_lettered, 3);
    assert_eq!(run.summary.bytes_new, len_after);
    for (offset, reason) in [
        (cut_at, "cut short"),
        (bad_json_at, "a number instead of a string"),
        (garbage_at, "between records"),
    ] {
        let line = run
            .stderr
            .lines()
            .find(|l| l.contains(&format!("offset={offset} ")))
            .unwrap_or_else(|| panic!("no log line for offset {offset}:\n{}", run.stderr));
        assert!(line.contains(&blob.name) && line.contains(reason), "{line}");
    }
    let dead = std::fs::read_to_string(daemon.dir().join("dead-letter.ndjson")).unwrap();
    assert_eq!(dead.lines().count(), 3, "{dead}");
    es.cleanup().await;
}

/// Writes `{"records":[]}` blobs for every hour in `hours` of every resource, concurrently.
async fn tiny_history(
    w: &flowlogd::source::upload::BlockBlobWriter,
    resources: &[&str],
    hours: std::ops::RangeInclusive<i64>,
) -> usize {
    let mut names = Vec::new();
    for r in resources {
        for h in hours.clone() {
            names.push(format!(
                "{}m=00/macAddress=000D3A000001/PT1H.json",
                hour_partition(r, h)
            ));
        }
    }
    let body = Bytes::from_static(b"{\"records\":[]}");
    futures::stream::iter(names.iter())
        .map(|n| w.put_blob(n, body.clone()))
        .buffer_unordered(16)
        .for_each(|r| async move { r.expect("put tiny blob") })
        .await;
    names.len()
}

#[tokio::test]
async fn steady_state_polls_list_as_many_partitions_with_30_days_of_history_as_with_1() {
    const RESOURCES: [&str; 2] = [
        "resourceId=/SUBSCRIPTIONS/AAAA1111/RESOURCEGROUPS/RG-A/PROVIDERS/MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/NSG-WEB/",
        "flowLogResourceID=/AAAA1111_NETWORKWATCHERRG/NETWORKWATCHER_WESTEUROPE_FL-HUB/",
    ];
    let azurite = azurite();
    let es =
        Es::engine("steady_state_polls_list_as_many_partitions_with_30_days_of_history_as_with_1");
    // The `once` runs read the real clock: an hour that turns during the measurement shifts
    // what they list (the new hour has no blobs). Then the whole measurement is taken again
    // in fresh containers, in an hour that cannot turn again before it ends.
    let mut attempt = 0;
    let measured = loop {
        let now_hour = epoch_hour(chrono::Utc::now().timestamp());
        let measured = measure_history_polls(&azurite, &es, &RESOURCES, now_hour, attempt).await;
        if epoch_hour(chrono::Utc::now().timestamp()) == now_hour {
            break measured;
        }
        assert_eq!(
            attempt, 0,
            "the hour turned during two measurements in a row"
        );
        eprintln!("the hour turned during the measurement; taking it again");
        attempt += 1;
    };
    let (d1, p1, b1, once1) = measured[0];
    let (d30, p30, b30, once30) = measured[1];
    assert_eq!(p1, 4, "2 resources x (current + previous hour)");
    assert_eq!(
        (d1, p1, b1),
        (d30, p30, b30),
        "library-level poll depends on history"
    );
    assert_eq!(
        (once1.list_requests, once1.blobs_listed),
        (once30.list_requests, once30.blobs_listed),
        "steady-state `once` depends on history"
    );
    assert_eq!(once30.blobs_listed, 4);
    assert_eq!(
        once30.list_requests,
        d30 + 4,
        "discovery + 4 hour partitions"
    );
    es.cleanup().await;
}

/// One measurement of [`steady_state_polls_list_as_many_partitions_with_30_days_of_history_as_with_1`]
/// with `now_hour` as the current hour: per history length, the library-level discovery and
/// poll (list requests, partitions, blobs listed) and the steady-state `once`'s summary.
async fn measure_history_polls(
    azurite: &Azurite,
    es: &Es,
    resources: &[&str],
    now_hour: i64,
    attempt: u32,
) -> Vec<(u64, u64, u64, Summary)> {
    let mut measured = Vec::new();
    for (history, days) in [("history-1d", 1i64), ("history-30d", 30)] {
        let container = format!("{history}-{attempt}");
        let container = container.as_str();
        let w = writer(azurite, container).await;
        let blobs = tiny_history(&w, resources, now_hour - days * 24 + 1..=now_hour).await;

        // Library level: the walker with discovery not due, and a registry in steady state
        // (every blob read; those of past hours finished).
        let c = client(azurite, container);
        let stats = c.stats().clone();
        let mut walker = Walker::new(c, None, &[], NO_REDISCOVERY);
        assert!(walker.discover_if_due().await.unwrap());
        let discovery = stats.snapshot();
        assert_eq!(walker.resources().len(), 2);
        let registry = Registry::temporary().unwrap();
        for r in resources {
            for h in now_hour - days * 24 + 1..=now_hour {
                let name = format!(
                    "{}m=00/macAddress=000D3A000001/PT1H.json",
                    hour_partition(r, h)
                );
                let mut entry = BlobEntry::new(12, 14, "etag", 0, 0);
                if h < now_hour - 1 {
                    entry.state = BlobState::Finished;
                }
                registry.put("src", &name, &entry).unwrap();
            }
        }
        let before = stats.snapshot();
        assert!(
            !walker.discover_if_due().await.unwrap(),
            "discovery is on its own interval"
        );
        let mut partitions = walker.partitions_for_hours(now_hour - 1..=now_hour);
        partitions.extend(
            registry
                .active_blobs("src")
                .unwrap()
                .iter()
                .filter_map(|(b, _)| partition_of(b)),
        );
        let listing = walker.list_partitions(&partitions).await.unwrap();
        let poll = stats.snapshot().since(&before);
        assert_eq!(listing.len(), 4);

        // The daemon: three `once` runs (first sync of the default 24 h, the run that finishes
        // past hours, then steady state).
        let mut daemon = Daemon::new(azurite, es, container);
        daemon.source_options = r#"finish_after = "1s""#.into();
        let runs: Vec<_> = (0..3).map(|_| daemon.once().summary).collect();
        for r in &runs {
            assert_eq!(r.errors, 0, "{r:?}");
        }
        println!(
            "MEASURE walker history_days={days} resources=2 blobs={blobs} \
             discovery_list_requests={} steady_poll_partitions={} steady_poll_list_requests={} \
             steady_poll_blobs_listed={} once_list_requests={}/{}/{} once_blobs_listed={}/{}/{}",
            discovery.list_requests,
            partitions.len(),
            poll.list_requests,
            poll.blobs_listed,
            runs[0].list_requests,
            runs[1].list_requests,
            runs[2].list_requests,
            runs[0].blobs_listed,
            runs[1].blobs_listed,
            runs[2].blobs_listed,
        );
        measured.push((
            discovery.list_requests,
            poll.list_requests,
            poll.blobs_listed,
            runs[2],
        ));
    }
    measured
}

#[tokio::test]
async fn discovery_finds_nsg_and_vnet_resources_and_prefix_and_filter_restrict_them() {
    const NSG_WEB: &str = "resourceId=/SUBSCRIPTIONS/AAAA1111/RESOURCEGROUPS/RG-A/PROVIDERS/MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/NSG-WEB/";
    const NSG_DB: &str = "resourceId=/SUBSCRIPTIONS/AAAA1111/RESOURCEGROUPS/RG-A/PROVIDERS/MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/NSG-DB/";
    const NSG_APP: &str = "resourceId=/SUBSCRIPTIONS/BBBB2222/RESOURCEGROUPS/RG-B/PROVIDERS/MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/NSG-APP/";
    const VNET_SHORT: &str =
        "flowLogResourceID=/AAAA1111_NETWORKWATCHERRG/NETWORKWATCHER_WESTEUROPE_FL-HUB/";
    const VNET_ARM: &str = "flowLogResourceID=/SUBSCRIPTIONS/BBBB2222/RESOURCEGROUPS/NETWORKWATCHERRG/PROVIDERS/MICROSOFT.NETWORK/NETWORKWATCHERS/NETWORKWATCHER_EASTUS/FLOWLOGS/FL-SPOKE/";
    let all = [NSG_WEB, NSG_DB, NSG_APP, VNET_SHORT, VNET_ARM];
    let azurite = azurite();
    let w = writer(&azurite, "mixed").await;
    let hour = epoch_hour(this_hour());
    let body = Bytes::from_static(b"{\"records\":[]}");
    for r in all {
        for h in [hour - 30, hour] {
            let name = format!(
                "{}m=00/macAddress=000D3A000001/PT1H.json",
                hour_partition(r, h)
            );
            w.put_blob(&name, body.clone()).await.unwrap();
        }
    }
    // Not flow logs: a blob beside a resource, and a non-JSON file inside an hour partition.
    w.put_blob("resourceId=/SUBSCRIPTIONS/AAAA1111/notes.txt", body.clone())
        .await
        .unwrap();
    w.put_blob(
        &format!("{}readme.txt", hour_partition(NSG_WEB, hour)),
        body.clone(),
    )
    .await
    .unwrap();

    let discover = |prefix: Option<&'static str>, filter: &[&str]| {
        let c = client(&azurite, "mixed");
        let filter: Vec<String> = filter.iter().map(|s| s.to_string()).collect();
        async move {
            let stats = c.stats().clone();
            let mut walker = Walker::new(c, prefix, &filter, NO_REDISCOVERY);
            walker.discover().await.unwrap();
            (walker, stats.snapshot().list_requests)
        }
    };
    let sorted = |mut v: Vec<&'static str>| {
        v.sort();
        v
    };

    let (walker, requests) = discover(None, &[]).await;
    assert_eq!(walker.resources(), sorted(all.to_vec()));
    println!("MEASURE discovery resources=5 list_requests={requests}");
    let listing = walker
        .list_partitions(&walker.partitions_for_hours([hour]))
        .await
        .unwrap();
    assert_eq!(
        listing.len(),
        5,
        "one PT1H.json per resource; readme.txt left out"
    );
    assert!(listing.iter().all(|b| b.name.ends_with("/PT1H.json")));

    let (walker, _) = discover(Some("resourceId=/SUBSCRIPTIONS/AAAA1111/"), &[]).await;
    assert_eq!(walker.resources(), sorted(vec![NSG_WEB, NSG_DB]));
    let (walker, _) = discover(Some("resourceId=/SUBSCRIPTIONS/AAAA"), &[]).await;
    assert_eq!(
        walker.resources(),
        sorted(vec![NSG_WEB, NSG_DB]),
        "prefix ending mid-segment"
    );
    let (walker, _) = discover(Some("flowLogResourceID=/"), &[]).await;
    assert_eq!(walker.resources(), sorted(vec![VNET_SHORT, VNET_ARM]));

    let (walker, _) = discover(None, &["nsg-db", "fl-spoke"]).await;
    assert_eq!(
        walker.resources(),
        sorted(vec![NSG_DB, VNET_ARM]),
        "filter is case-insensitive"
    );
    let listing = walker
        .list_partitions(&walker.partitions_for_hours([hour]))
        .await
        .unwrap();
    assert_eq!(listing.len(), 2);
    assert!(
        listing
            .iter()
            .all(|b| b.name.starts_with(NSG_DB) || b.name.starts_with(VNET_ARM))
    );
    let (walker, _) = discover(None, &["aaaa1111"]).await;
    assert_eq!(
        walker.resources(),
        sorted(vec![NSG_WEB, NSG_DB, VNET_SHORT]),
        "subscription id"
    );
    let (walker, _) = discover(Some("resourceId=/"), &["bbbb2222"]).await;
    assert_eq!(
        walker.resources(),
        vec![NSG_APP],
        "prefix and filter together"
    );
    assert!(walker.accepts(&format!(
        "{NSG_APP}y=2026/m=01/d=01/h=00/m=00/macAddress=X/PT1H.json"
    )));
    assert!(!walker.accepts(&format!(
        "{VNET_ARM}y=2026/m=01/d=01/h=00/m=00/macAddress=X/PT1H.json"
    )));
}
