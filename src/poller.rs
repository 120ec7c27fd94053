//! The polling policy: compares one listing of a source with the registry entries of its blobs
//! and decides, without any I/O, what happens to each blob (read it from an offset, remember
//! it, finish it, record a new ETag, handle a rewrite, mark it gone). The daemon carries the
//! actions out in order; everything here is unit-tested on canned listings and entries.
use std::collections::{BTreeSet, HashSet};

use crate::config::{RewritePolicy, StartPolicy};
use crate::registry::{BlobEntry, BlobState, Change};
use crate::source::layout::{HOUR_SECS, blob_hour, partition_of};
use crate::source::listing::BlobItem;

/// The parts of a source's configuration (and of the poll) that decide the actions.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub start: StartPolicy,
    /// No source state yet: this is the source's first poll.
    pub first_run: bool,
    pub settle_ms: i64,
    pub finish_after_ms: i64,
    pub on_rewrite: RewritePolicy,
}

/// A listed blob and what the registry knows of it.
#[derive(Debug, Clone)]
pub struct Listed {
    pub blob: BlobItem,
    pub entry: Option<BlobEntry>,
    /// Being read, or with chunks on the way to or in delivery: left alone this poll.
    pub busy: bool,
}

/// What to do to a blob's registry entry before reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prepare {
    /// Its entry is up to date.
    Nothing,
    /// First sight: store an entry at offset 0 before anything else (invariant 8: a listed blob
    /// is never forgotten, whatever happens to the read).
    Remember,
    /// A finished or gone blob grew: make it active again.
    Reactivate,
    /// Rewritten with other content: reset the entry to 0; with `replace`, store it as
    /// "rewritten" and delete the old content's documents first.
    Reset { replace: bool },
    /// A rewrite whose old documents are not deleted yet (a failed delete, a crash): delete
    /// them, then reset the entry to 0.
    FinishReplace,
}

/// One decision of [`plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Prepare the entry, then (when `settled`) read `[from, length)`.
    Read {
        blob: BlobItem,
        from: u64,
        prepare: Prepare,
        /// Changed at least `settle` ago; otherwise only the preparation happens now.
        settled: bool,
        /// The stored offset of a rewritten blob (for the log line).
        rewritten_from: Option<u64>,
    },
    /// `start_fresh`, first sight on the first run: record the blob as read up to its last
    /// record.
    FreshStart(BlobItem),
    /// Its hour is over (by `finish_after`) and nothing new came: stop listing its hour.
    /// `unread` bytes after the last complete record never completed.
    Finish { blob: String, unread: u64 },
    /// Same length, new ETag (metadata, or the same blocks committed again): record the ETag.
    Retag(BlobItem),
    /// An active blob of a listed partition that the listing no longer shows (retention).
    Gone(String),
}

/// Unread bytes after the last complete record of a finished blob below this are the `]}` tail
/// and whitespace, not an incomplete record.
const TAIL_SLACK: u64 = 64;

/// Decides what to do with each listed blob (in listing order), then which active blobs of
/// `listed_partitions` are gone. `active` are the source's active registry entries with whether
/// each is busy; `now_ms` is the poll's time.
pub fn plan(
    listing: &[Listed],
    active: &[(String, bool)],
    listed_partitions: &BTreeSet<String>,
    now_ms: i64,
    policy: &Policy,
) -> Vec<Action> {
    let mut actions = Vec::new();
    for listed in listing.iter().filter(|l| !l.busy) {
        let blob = &listed.blob;
        let settled = now_ms - blob.last_modified.timestamp_millis() >= policy.settle_ms;
        let read = |from: u64, prepare: Prepare, rewritten_from: Option<u64>| Action::Read {
            blob: blob.clone(),
            from,
            prepare,
            settled,
            rewritten_from,
        };
        let action = match &listed.entry {
            None if policy.first_run && policy.start == StartPolicy::StartFresh => {
                Action::FreshStart(blob.clone())
            }
            None => read(0, Prepare::Remember, None),
            Some(e) if e.state == BlobState::Rewritten => read(0, Prepare::FinishReplace, None),
            Some(e) => match e.classify(blob.content_length, &blob.etag) {
                Change::Unchanged => {
                    let hour_end_ms =
                        blob_hour(&blob.name).map_or(i64::MAX, |h| (h + 1) * HOUR_SECS * 1000);
                    if e.state == BlobState::Active
                        && now_ms.saturating_sub(hour_end_ms) > policy.finish_after_ms
                    {
                        let unread = e.length_seen.saturating_sub(e.offset);
                        Action::Finish {
                            blob: blob.name.clone(),
                            unread: if unread > TAIL_SLACK { unread } else { 0 },
                        }
                    } else {
                        continue;
                    }
                }
                Change::Retagged => Action::Retag(blob.clone()),
                Change::Grown => {
                    let prepare = if e.state == BlobState::Active {
                        Prepare::Nothing
                    } else {
                        Prepare::Reactivate
                    };
                    read(e.offset, prepare, None)
                }
                Change::Rewritten => read(
                    0,
                    Prepare::Reset {
                        replace: policy.on_rewrite == RewritePolicy::Replace,
                    },
                    Some(e.offset),
                ),
            },
        };
        actions.push(action);
    }
    let names: HashSet<&str> = listing.iter().map(|l| l.blob.name.as_str()).collect();
    for (blob, busy) in active {
        let in_listed_partition =
            partition_of(blob).is_some_and(|p| listed_partitions.contains(&p));
        if in_listed_partition && !busy && !names.contains(blob.as_str()) {
            actions.push(Action::Gone(blob.clone()));
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::layout::hour_partition;

    const RESOURCE: &str = "flowLogResourceID=/S_NETWORKWATCHERRG/NETWORKWATCHER_WESTEUROPE_FL/";
    /// 2026-12-01T10:00:00Z, in epoch hours.
    const HOUR: i64 = 1_796_119_200 / 3600;
    const MINUTE_MS: i64 = 60_000;

    fn name(hour: i64, mac: &str) -> String {
        format!(
            "{}m=00/macAddress={mac}/PT1H.json",
            hour_partition(RESOURCE, hour)
        )
    }

    /// A blob of `hour`, `length` bytes long, last modified at `modified_ms`.
    fn blob(hour: i64, mac: &str, length: u64, etag: &str, modified_ms: i64) -> BlobItem {
        BlobItem {
            name: name(hour, mac),
            content_length: length,
            etag: etag.to_owned(),
            last_modified: chrono::DateTime::from_timestamp_millis(modified_ms).unwrap(),
        }
    }

    fn entry(offset: u64, length_seen: u64, etag: &str, state: BlobState) -> BlobEntry {
        let mut e = BlobEntry::new(offset, length_seen, etag, 0, 0);
        e.state = state;
        e
    }

    fn policy() -> Policy {
        Policy {
            start: StartPolicy::Resume,
            first_run: false,
            settle_ms: 0,
            finish_after_ms: 90 * MINUTE_MS,
            on_rewrite: RewritePolicy::Replace,
        }
    }

    /// The plan for `listing` alone (no registry-only entries, no partitions) at `NOW_MS`
    /// with the default policy.
    fn plan_listed(listing: &[Listed]) -> Vec<Action> {
        plan(listing, &[], &BTreeSet::new(), NOW_MS, &policy())
    }

    fn listed(blob: BlobItem, entry: Option<BlobEntry>) -> Listed {
        Listed {
            blob,
            entry,
            busy: false,
        }
    }

    const NOW_MS: i64 = (HOUR * 3600 + 30 * 60) * 1000;

    fn read_of(action: &Action) -> (u64, Prepare, bool) {
        match action {
            Action::Read {
                from,
                prepare,
                settled,
                ..
            } => (*from, *prepare, *settled),
            other => panic!("not a read: {other:?}"),
        }
    }

    #[test]
    fn an_unseen_blob_is_remembered_and_read_from_0() {
        let b = blob(HOUR, "A", 500, "e1", NOW_MS - MINUTE_MS);
        let actions = plan(&[listed(b, None)], &[], &BTreeSet::new(), NOW_MS, &policy());
        assert_eq!(actions.len(), 1);
        assert_eq!(read_of(&actions[0]), (0, Prepare::Remember, true));
    }

    #[test]
    fn start_fresh_takes_an_unseen_blob_of_the_first_run_as_read_but_not_a_later_one() {
        let b = blob(HOUR, "A", 500, "e1", NOW_MS - MINUTE_MS);
        let mut p = Policy {
            start: StartPolicy::StartFresh,
            first_run: true,
            ..policy()
        };
        let first = plan(
            &[listed(b.clone(), None)],
            &[],
            &BTreeSet::new(),
            NOW_MS,
            &p,
        );
        assert_eq!(first, vec![Action::FreshStart(b.clone())]);
        p.first_run = false;
        let later = plan(&[listed(b, None)], &[], &BTreeSet::new(), NOW_MS, &p);
        assert_eq!(read_of(&later[0]), (0, Prepare::Remember, true));
    }

    #[test]
    fn a_blob_changed_less_than_settle_ago_is_remembered_but_not_read_yet() {
        let b = blob(HOUR, "A", 500, "e1", NOW_MS - MINUTE_MS);
        let p = Policy {
            settle_ms: 2 * MINUTE_MS,
            ..policy()
        };
        let actions = plan(&[listed(b, None)], &[], &BTreeSet::new(), NOW_MS, &p);
        assert_eq!(read_of(&actions[0]), (0, Prepare::Remember, false));
    }

    #[test]
    fn a_grown_blob_is_read_from_its_offset_and_a_finished_one_reactivated() {
        let b = blob(HOUR - 3, "A", 900, "e2", NOW_MS - MINUTE_MS);
        let active = entry(480, 500, "e1", BlobState::Active);
        let finished = entry(480, 500, "e1", BlobState::Finished);
        let actions = plan_listed(&[listed(b.clone(), Some(active))]);
        assert_eq!(read_of(&actions[0]), (480, Prepare::Nothing, true));
        let actions = plan_listed(&[listed(b, Some(finished))]);
        assert_eq!(read_of(&actions[0]), (480, Prepare::Reactivate, true));
    }

    #[test]
    fn an_unchanged_blob_is_finished_only_after_its_hour_and_finish_after() {
        let e = entry(400, 500, "e1", BlobState::Active);
        // The previous hour ended 30 minutes ago: too early with finish_after = 90 min.
        let recent = blob(HOUR - 1, "A", 500, "e1", 0);
        let none = plan_listed(&[listed(recent, Some(e.clone()))]);
        assert!(none.is_empty(), "{none:?}");
        // Three hours back ended 2.5 hours ago; 100 bytes were never a complete record.
        let old = blob(HOUR - 3, "A", 500, "e1", 0);
        let done = plan_listed(&[listed(old.clone(), Some(e))]);
        assert_eq!(
            done,
            vec![Action::Finish {
                blob: old.name.clone(),
                unread: 100
            }]
        );
        // Only the `]}` tail left: nothing unread to warn about; a finished one stays quiet.
        let tail = entry(498, 500, "e1", BlobState::Active);
        let done = plan_listed(&[listed(old.clone(), Some(tail))]);
        assert_eq!(
            done,
            vec![Action::Finish {
                blob: old.name.clone(),
                unread: 0
            }]
        );
        let finished = entry(498, 500, "e1", BlobState::Finished);
        assert!(
            plan(
                &[listed(old, Some(finished))],
                &[],
                &BTreeSet::new(),
                NOW_MS,
                &policy()
            )
            .is_empty()
        );
    }

    #[test]
    fn a_new_etag_at_the_same_length_is_recorded_without_a_read() {
        let b = blob(HOUR, "A", 500, "e2", NOW_MS - MINUTE_MS);
        let actions = plan_listed(&[listed(
            b.clone(),
            Some(entry(498, 500, "e1", BlobState::Active)),
        )]);
        assert_eq!(actions, vec![Action::Retag(b)]);
    }

    #[test]
    fn a_rewritten_blob_is_reset_and_read_from_0_under_its_rewrite_policy() {
        let b = blob(HOUR, "A", 300, "e9", NOW_MS - MINUTE_MS);
        let e = entry(480, 500, "e1", BlobState::Active);
        let actions = plan_listed(&[listed(b.clone(), Some(e.clone()))]);
        assert_eq!(
            read_of(&actions[0]),
            (0, Prepare::Reset { replace: true }, true)
        );
        assert!(matches!(
            actions[0],
            Action::Read {
                rewritten_from: Some(480),
                ..
            }
        ));
        let reread = Policy {
            on_rewrite: RewritePolicy::Reread,
            ..policy()
        };
        let actions = plan(
            &[listed(b, Some(e))],
            &[],
            &BTreeSet::new(),
            NOW_MS,
            &reread,
        );
        assert_eq!(
            read_of(&actions[0]),
            (0, Prepare::Reset { replace: false }, true)
        );
    }

    #[test]
    fn a_rewrite_whose_old_documents_are_not_deleted_yet_is_finished_before_any_read() {
        // The placeholder stored as "rewritten" before a crash: length 0, no ETag.
        let b = blob(HOUR, "A", 300, "e9", NOW_MS - MINUTE_MS);
        let pending = entry(0, 0, "", BlobState::Rewritten);
        let actions = plan_listed(&[listed(b, Some(pending))]);
        assert_eq!(read_of(&actions[0]), (0, Prepare::FinishReplace, true));
    }

    #[test]
    fn busy_blobs_are_left_alone_and_never_called_gone() {
        let b = blob(HOUR, "A", 900, "e2", NOW_MS - MINUTE_MS);
        let busy = Listed {
            busy: true,
            ..listed(b, Some(entry(480, 500, "e1", BlobState::Active)))
        };
        let partitions = BTreeSet::from([hour_partition(RESOURCE, HOUR)]);
        let reading_elsewhere = (name(HOUR, "B"), true);
        let actions = plan(
            &[busy],
            &[reading_elsewhere],
            &partitions,
            NOW_MS,
            &policy(),
        );
        assert!(actions.is_empty(), "{actions:?}");
    }

    #[test]
    fn an_active_blob_missing_from_its_listed_partition_is_gone_and_other_partitions_are_not() {
        let partitions = BTreeSet::from([hour_partition(RESOURCE, HOUR)]);
        let listed_now = blob(HOUR, "A", 500, "e1", NOW_MS - MINUTE_MS);
        let active = [
            (name(HOUR, "A"), false),
            (name(HOUR, "DELETED"), false),
            // Its hour was not listed this poll: no news about it.
            (name(HOUR - 5, "OLD"), false),
        ];
        let actions = plan(
            &[listed(
                listed_now,
                Some(entry(498, 500, "e1", BlobState::Active)),
            )],
            &active,
            &partitions,
            NOW_MS,
            &policy(),
        );
        assert_eq!(actions, vec![Action::Gone(name(HOUR, "DELETED"))]);
    }
}
