//! Behaviour of the registry against a real sled store.

use super::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

const NSG: &str = "nsg-prod";
const BLOB_A: &str = "resourceId=/SUBSCRIPTIONS/0000/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/WEB/y=2024/m=05/d=01/h=10/m=00/macAddress=000D3A/PT1H.json";
const BLOB_B: &str = "resourceId=/SUBSCRIPTIONS/0000/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/WEB/y=2024/m=05/d=01/h=11/m=00/macAddress=000D3A/PT1H.json";

fn entry(offset: u64, length_seen: u64) -> BlobEntry {
    BlobEntry::new(
        offset,
        length_seen,
        "\"0x1\"",
        1_714_557_600_000,
        1_714_557_600_000,
    )
}

fn delta(from: u64, to: u64) -> OffsetDelta<'static> {
    OffsetDelta {
        from,
        to,
        length_seen: 10_000,
        etag: "\"0x2\"",
        last_modified: 1_714_557_700_000,
        head_len: None,
    }
}

fn offset_of(registry: &Registry, source: &str, blob: &str) -> Option<u64> {
    registry.get(source, blob).unwrap().map(|e| e.offset)
}

/// Writes raw bytes under a blob's key, as corruption or a foreign writer would.
fn put_raw(registry: &Registry, source: &str, blob: &str, value: &[u8]) {
    registry
        .tree
        .insert(key::encode(source, blob), value)
        .unwrap();
}

#[test]
fn entries_survive_closing_and_reopening_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry");
    {
        let registry = Registry::open(&path).unwrap();
        registry.put(NSG, BLOB_A, &entry(0, 100)).unwrap();
        registry.advance(NSG, BLOB_A, &delta(0, 80)).unwrap();
        registry.flush().unwrap();
    }
    let registry = Registry::open(&path).unwrap();
    let stored = registry.get(NSG, BLOB_A).unwrap().unwrap();
    assert_eq!(stored.offset, 80);
    assert_eq!(stored.etag, "\"0x2\"");
    assert_eq!(registry.path(), path);
}

#[test]
fn a_second_open_of_the_same_directory_is_refused_as_locked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry");
    let _first = Registry::open(&path).unwrap();
    let err = Registry::open(&path).unwrap_err();
    assert!(matches!(err, RegistryError::Locked { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("another flowlogd"), "{message}");
}

#[test]
fn an_unopenable_path_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not-a-directory");
    std::fs::write(&path, b"x").unwrap();
    let err = Registry::open(&path).unwrap_err();
    assert!(matches!(err, RegistryError::Open { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn get_put_remove_work_on_one_blob_without_touching_others() {
    let registry = Registry::temporary().unwrap();
    assert_eq!(registry.get(NSG, BLOB_A).unwrap(), None);
    registry.put(NSG, BLOB_A, &entry(5, 10)).unwrap();
    registry.put(NSG, BLOB_B, &entry(7, 10)).unwrap();
    assert_eq!(registry.get(NSG, BLOB_A).unwrap(), Some(entry(5, 10)));
    assert!(registry.remove(NSG, BLOB_A).unwrap());
    assert!(!registry.remove(NSG, BLOB_A).unwrap());
    assert_eq!(registry.get(NSG, BLOB_A).unwrap(), None);
    assert_eq!(offset_of(&registry, NSG, BLOB_B), Some(7));
}

#[test]
fn chained_deltas_are_accepted() {
    let registry = Registry::temporary().unwrap();
    registry.put(NSG, BLOB_A, &entry(0, 10_000)).unwrap();
    for (from, to) in [(0, 120), (120, 500), (500, 500), (500, 9_998)] {
        let stored = registry.advance(NSG, BLOB_A, &delta(from, to)).unwrap();
        assert_eq!(stored.offset, to);
    }
    let stored = registry.get(NSG, BLOB_A).unwrap().unwrap();
    assert_eq!(stored.offset, 9_998);
    assert_eq!(stored.length_seen, 10_000);
    assert_eq!(stored.last_modified, 1_714_557_700_000);
}

#[test]
fn a_gap_is_refused_and_leaves_the_offset_alone() {
    let registry = Registry::temporary().unwrap();
    registry.put(NSG, BLOB_A, &entry(100, 1_000)).unwrap();
    let before = registry.get(NSG, BLOB_A).unwrap();
    let err = registry.advance(NSG, BLOB_A, &delta(150, 300)).unwrap_err();
    match err {
        RegistryError::OffsetMismatch {
            source,
            blob,
            stored,
            from,
        } => {
            assert_eq!(
                (source.as_str(), blob.as_str(), stored, from),
                (NSG, BLOB_A, 100, 150)
            );
        }
        other => panic!("expected OffsetMismatch, got {other:?}"),
    }
    assert_eq!(registry.get(NSG, BLOB_A).unwrap(), before);
}

#[test]
fn an_overlap_is_refused() {
    let registry = Registry::temporary().unwrap();
    registry.put(NSG, BLOB_A, &entry(100, 1_000)).unwrap();
    let err = registry.advance(NSG, BLOB_A, &delta(50, 300)).unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::OffsetMismatch {
                stored: 100,
                from: 50,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(offset_of(&registry, NSG, BLOB_A), Some(100));
}

#[test]
fn a_stale_replay_of_an_applied_delta_is_refused() {
    let registry = Registry::temporary().unwrap();
    registry.advance(NSG, BLOB_A, &delta(0, 200)).unwrap();
    registry.advance(NSG, BLOB_A, &delta(200, 400)).unwrap();
    for (from, to) in [(0, 200), (200, 400)] {
        let err = registry.advance(NSG, BLOB_A, &delta(from, to)).unwrap_err();
        assert!(
            matches!(err, RegistryError::OffsetMismatch { stored: 400, .. }),
            "{err:?}"
        );
    }
    assert_eq!(offset_of(&registry, NSG, BLOB_A), Some(400));
}

#[test]
fn a_missing_entry_counts_as_offset_zero() {
    let registry = Registry::temporary().unwrap();
    let err = registry.advance(NSG, BLOB_A, &delta(10, 20)).unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::OffsetMismatch {
                stored: 0,
                from: 10,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        registry.get(NSG, BLOB_A).unwrap(),
        None,
        "a refused delta creates nothing"
    );

    let created = registry
        .advance(
            NSG,
            BLOB_A,
            &OffsetDelta {
                head_len: Some(13),
                ..delta(0, 20)
            },
        )
        .unwrap();
    assert_eq!(created.offset, 20);
    assert_eq!(created.state, BlobState::Active);
    assert_eq!(created.head_len, Some(13));
    assert_eq!(registry.get(NSG, BLOB_A).unwrap(), Some(created));
}

#[test]
fn backwards_deltas_and_deltas_past_the_blob_length_are_invalid() {
    let registry = Registry::temporary().unwrap();
    registry.put(NSG, BLOB_A, &entry(100, 1_000)).unwrap();
    let backwards = registry.advance(NSG, BLOB_A, &delta(100, 99)).unwrap_err();
    assert!(
        matches!(
            backwards,
            RegistryError::InvalidDelta {
                from: 100,
                to: 99,
                ..
            }
        ),
        "{backwards:?}"
    );
    let past_end = registry
        .advance(
            NSG,
            BLOB_A,
            &OffsetDelta {
                length_seen: 500,
                ..delta(100, 501)
            },
        )
        .unwrap_err();
    assert!(
        matches!(past_end, RegistryError::InvalidDelta { .. }),
        "{past_end:?}"
    );
    assert_eq!(offset_of(&registry, NSG, BLOB_A), Some(100));
}

#[test]
fn advance_keeps_the_head_length_and_state_it_is_not_told_about() {
    let registry = Registry::temporary().unwrap();
    registry
        .put(
            NSG,
            BLOB_A,
            &BlobEntry {
                head_len: Some(17),
                state: BlobState::Finished,
                ..entry(100, 1_000)
            },
        )
        .unwrap();
    let stored = registry.advance(NSG, BLOB_A, &delta(100, 200)).unwrap();
    assert_eq!(stored.head_len, Some(17));
    assert_eq!(stored.state, BlobState::Finished);
}

#[test]
fn racing_acknowledgements_of_the_same_delta_apply_exactly_once() {
    let registry = Registry::temporary().unwrap();
    let wins = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let registry = registry.clone();
            let wins = Arc::clone(&wins);
            std::thread::spawn(move || {
                if registry.advance(NSG, BLOB_A, &delta(0, 64)).is_ok() {
                    wins.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(wins.load(Ordering::SeqCst), 1);
    assert_eq!(offset_of(&registry, NSG, BLOB_A), Some(64));
}

#[test]
fn concurrent_writers_never_lose_an_increment() {
    let registry = Registry::temporary().unwrap();
    const THREADS: u64 = 4;
    const STEPS: u64 = 200;
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let registry = registry.clone();
            std::thread::spawn(move || {
                let mut applied = 0;
                while applied < STEPS {
                    let from = offset_of(&registry, NSG, BLOB_A).unwrap_or(0);
                    match registry.advance(NSG, BLOB_A, &delta(from, from + 1)) {
                        Ok(_) => applied += 1,
                        Err(RegistryError::OffsetMismatch { .. }) => {}
                        Err(other) => panic!("{other}"),
                    }
                    // Another writer marking state must not lose increments either.
                    registry.mark_finished(NSG, BLOB_A).unwrap();
                    registry.mark_active(NSG, BLOB_A).unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(offset_of(&registry, NSG, BLOB_A), Some(THREADS * STEPS));
}

#[test]
fn update_can_insert_only_when_absent() {
    let registry = Registry::temporary().unwrap();
    let insert_if_absent = |e: BlobEntry| {
        registry
            .update(NSG, BLOB_A, |current| {
                if current.is_none() {
                    Some(e.clone())
                } else {
                    None
                }
            })
            .unwrap()
    };
    assert_eq!(insert_if_absent(entry(500, 500)), Some(entry(500, 500)));
    assert_eq!(insert_if_absent(entry(0, 0)), Some(entry(500, 500)));
    assert_eq!(offset_of(&registry, NSG, BLOB_A), Some(500));
}

#[test]
fn state_changes_apply_to_existing_entries_only() {
    let registry = Registry::temporary().unwrap();
    assert_eq!(registry.mark_finished(NSG, BLOB_A).unwrap(), None);
    assert_eq!(registry.mark_gone(NSG, BLOB_A, 5).unwrap(), None);
    assert_eq!(registry.mark_active(NSG, BLOB_A).unwrap(), None);
    assert!(registry.is_empty());

    registry.put(NSG, BLOB_A, &entry(10, 20)).unwrap();
    let finished = registry.mark_finished(NSG, BLOB_A).unwrap().unwrap();
    assert_eq!(finished.state, BlobState::Finished);
    assert_eq!(finished.offset, 10);
    assert!(finished.updated_at > entry(10, 20).updated_at);
    assert_eq!(registry.get(NSG, BLOB_A).unwrap(), Some(finished));
    let active = registry.mark_active(NSG, BLOB_A).unwrap().unwrap();
    assert_eq!(active.state, BlobState::Active);
}

#[test]
fn marking_a_gone_blob_again_keeps_its_grace_period_start() {
    let registry = Registry::temporary().unwrap();
    registry.put(NSG, BLOB_A, &entry(10, 20)).unwrap();
    assert_eq!(
        registry
            .mark_gone(NSG, BLOB_A, 1_000)
            .unwrap()
            .unwrap()
            .updated_at,
        1_000
    );
    assert_eq!(
        registry
            .mark_gone(NSG, BLOB_A, 9_000)
            .unwrap()
            .unwrap()
            .updated_at,
        1_000
    );
}

#[test]
fn forgetting_removes_only_gone_entries_of_that_source_older_than_the_cutoff() {
    let registry = Registry::temporary().unwrap();
    for (source, blob) in [
        (NSG, "old"),
        (NSG, "recent"),
        (NSG, "active"),
        ("vnet", "old"),
    ] {
        registry.put(source, blob, &entry(1, 2)).unwrap();
    }
    registry.mark_gone(NSG, "old", 1_000).unwrap();
    registry.mark_gone(NSG, "recent", 5_000).unwrap();
    registry.mark_gone("vnet", "old", 1_000).unwrap();

    assert_eq!(registry.forget_gone_older_than(NSG, 5_000).unwrap(), 1);
    assert_eq!(registry.get(NSG, "old").unwrap(), None);
    assert!(
        registry.get(NSG, "recent").unwrap().is_some(),
        "cutoff is exclusive"
    );
    assert!(registry.get(NSG, "active").unwrap().is_some());
    assert!(registry.get("vnet", "old").unwrap().is_some());
    assert_eq!(registry.forget_gone_older_than(NSG, 5_000).unwrap(), 0);
}

fn seeded() -> Registry {
    let registry = Registry::temporary().unwrap();
    for (source, blob) in [
        ("nsg", "a/h=01/PT1H.json"),
        ("nsg", "a/h=02/PT1H.json"),
        ("nsg", "b/h=01/PT1H.json"),
        ("nsg2", "a/h=01/PT1H.json"),
        ("vnet", "a/h=01/PT1H.json"),
    ] {
        registry.put(source, blob, &entry(0, 0)).unwrap();
    }
    registry
}

fn names(registry: &Registry, source: Option<&str>) -> Vec<(String, String)> {
    registry
        .list(source)
        .map(|item| item.map(|(s, b, _)| (s, b)).unwrap())
        .collect()
}

#[test]
fn reset_by_source_and_blob_prefix() {
    let registry = seeded();
    assert_eq!(registry.reset(Some("nsg"), Some("a/")).unwrap(), 2);
    assert_eq!(
        names(&registry, Some("nsg")),
        [("nsg".to_owned(), "b/h=01/PT1H.json".to_owned())]
    );
    assert_eq!(registry.len(), 3, "nsg2 and vnet untouched");
}

#[test]
fn reset_of_one_source_leaves_sources_it_prefixes_alone() {
    let registry = seeded();
    assert_eq!(registry.reset(Some("nsg"), None).unwrap(), 3);
    assert!(names(&registry, Some("nsg")).is_empty());
    assert_eq!(names(&registry, Some("nsg2")).len(), 1);
    assert_eq!(registry.len(), 2);
}

#[test]
fn reset_by_blob_prefix_across_sources() {
    let registry = seeded();
    assert_eq!(registry.reset(None, Some("a/h=01/")).unwrap(), 3);
    assert_eq!(
        names(&registry, None),
        [
            ("nsg".to_owned(), "a/h=02/PT1H.json".to_owned()),
            ("nsg".to_owned(), "b/h=01/PT1H.json".to_owned()),
        ]
    );
}

#[test]
fn reset_of_everything_empties_the_registry() {
    let registry = seeded();
    assert_eq!(registry.reset(None, None).unwrap(), 5);
    assert!(registry.is_empty());
    assert_eq!(registry.reset(None, None).unwrap(), 0);
}

#[test]
fn listing_is_grouped_by_source_and_ordered_by_blob_name() {
    let registry = Registry::temporary().unwrap();
    let blobs = ["z", "a b/c=d", "a", "a/", "a\0", "é", "A"];
    for source in ["s\0x", "s", "s2", ""] {
        for blob in blobs {
            registry.put(source, blob, &entry(0, 0)).unwrap();
        }
    }
    let mut expected = Vec::new();
    for source in ["", "s", "s\0x", "s2"] {
        let mut sorted: Vec<_> = blobs
            .iter()
            .map(|b| (source.to_owned(), (*b).to_owned()))
            .collect();
        sorted.sort();
        expected.extend(sorted);
    }
    assert_eq!(names(&registry, None), expected);
    let only_s: Vec<_> = expected.iter().filter(|(s, _)| s == "s").cloned().collect();
    assert_eq!(names(&registry, Some("s")), only_s);
    assert_eq!(registry.len(), 28);
}

#[test]
fn active_blobs_lists_only_active_entries_of_the_source() {
    let registry = seeded();
    registry.mark_finished("nsg", "a/h=01/PT1H.json").unwrap();
    registry.mark_gone("nsg", "b/h=01/PT1H.json", 1).unwrap();
    let active: Vec<_> = registry
        .active_blobs("nsg")
        .unwrap()
        .into_iter()
        .map(|(blob, _)| blob)
        .collect();
    assert_eq!(active, ["a/h=02/PT1H.json"]);
}

#[test]
fn a_corrupt_value_is_reported_with_its_names_and_never_silently_overwritten() {
    let registry = Registry::temporary().unwrap();
    registry.put(NSG, BLOB_A, &entry(0, 0)).unwrap();
    put_raw(&registry, NSG, BLOB_B, &[1, 0, 0]);

    let err = registry.get(NSG, BLOB_B).unwrap_err();
    assert!(matches!(err, RegistryError::CorruptEntry { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(NSG) && message.contains(BLOB_B) && message.contains("truncated"),
        "{message}"
    );

    assert!(registry.advance(NSG, BLOB_B, &delta(0, 10)).is_err());
    assert!(registry.mark_gone(NSG, BLOB_B, 1).is_err());
    assert_eq!(
        registry
            .tree
            .get(key::encode(NSG, BLOB_B))
            .unwrap()
            .unwrap()
            .as_ref(),
        [1, 0, 0]
    );

    // Listing reports the bad entry and carries on.
    let items: Vec<_> = registry.list(Some(NSG)).collect();
    assert_eq!(items.len(), 2);
    assert!(items[0].is_ok());
    assert!(matches!(items[1], Err(RegistryError::CorruptEntry { .. })));
    assert_eq!(registry.active_blobs(NSG).unwrap().len(), 1);
    assert_eq!(registry.forget_gone_older_than(NSG, i64::MAX).unwrap(), 0);

    // An explicit put or a reset repairs it.
    registry.put(NSG, BLOB_B, &entry(3, 4)).unwrap();
    assert_eq!(offset_of(&registry, NSG, BLOB_B), Some(3));
    put_raw(&registry, NSG, BLOB_B, &[9]);
    assert_eq!(registry.reset(Some(NSG), Some(BLOB_B)).unwrap(), 1);
    assert_eq!(registry.get(NSG, BLOB_B).unwrap(), None);
}

#[test]
fn a_corrupt_key_is_listed_as_an_error_and_removed_by_a_full_reset() {
    let registry = Registry::temporary().unwrap();
    registry.put(NSG, BLOB_A, &entry(0, 0)).unwrap();
    registry
        .tree
        .insert(b"no separator", entry(0, 0).encode().unwrap())
        .unwrap();
    let errors: Vec<_> = registry.list(None).filter_map(Result::err).collect();
    assert_eq!(errors.len(), 1);
    assert!(matches!(errors[0], RegistryError::CorruptKey { .. }));
    assert!(errors[0].to_string().contains("no separator"));
    assert_eq!(registry.reset(None, Some("x")).unwrap(), 0);
    assert_eq!(registry.reset(None, None).unwrap(), 2);
}

#[test]
fn flush_and_flush_async_report_success() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(&dir.path().join("registry")).unwrap();
    registry.put(NSG, BLOB_A, &entry(1, 2)).unwrap();
    registry.flush().unwrap();
    registry.put(NSG, BLOB_B, &entry(1, 2)).unwrap();
    futures::executor::block_on(registry.flush_async()).unwrap();
}

#[test]
fn source_state_round_trips_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let registry = Registry::open(dir.path()).unwrap();
        assert_eq!(registry.source_state("vnet").unwrap(), None);
        registry
            .put_source_state(
                "vnet",
                &SourceState {
                    last_listed_hour: 498_688,
                },
            )
            .unwrap();
        registry.flush().unwrap();
    }
    let registry = Registry::open(dir.path()).unwrap();
    assert_eq!(
        registry.source_state("vnet").unwrap(),
        Some(SourceState {
            last_listed_hour: 498_688
        })
    );
    assert_eq!(registry.source_state("nsg").unwrap(), None);
    registry.remove_source_state("vnet").unwrap();
    assert_eq!(registry.source_state("vnet").unwrap(), None);
    assert_eq!(registry.len(), 0, "source state is not a blob entry");
}
