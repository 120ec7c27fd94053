//! Shared ownership with failover (`[cluster] coordination_container`): which instance reads
//! which unit (one flow-log resource of one container), agreed through ownership blobs in Azure
//! Blob Storage, the pattern of Azure Event Hubs' blob checkpoint store.
//!
//! Each unit has one small JSON blob ([`Ownership`]) naming its owner, when that claim expires
//! and the unit's mirrored checkpoint (the committed offsets of its blobs). Blobs are only ever
//! written conditionally on the ETag last read (`If-Match`; `If-None-Match: *` to create), so of
//! two instances acting on the same state exactly one wins and the other gets a 412: there is
//! no protocol of our own, only Storage's optimistic concurrency. Each instance also keeps a
//! presence blob fresh, so that an instance owning nothing yet still counts when the units are
//! shared out.
//!
//! This file holds the blob formats and [`plan`], the pure balancing function; the
//! [`coordinator`] does the I/O.
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

pub mod coordinator;

pub use coordinator::{Cluster, ClusterSettings, StatusLine, status};

/// What an ownership blob holds. `owner` empty means released: free to claim at once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ownership {
    /// The unit (`container/resource/`), for people reading the blob.
    pub unit: String,
    /// Instance id of the owner; empty when released.
    #[serde(default)]
    pub owner: String,
    /// Unix ms after which the claim is void unless renewed (by the owner's clock: instances
    /// need clocks synchronised well within a lease, as NTP gives).
    #[serde(default)]
    pub expires_at_ms: i64,
    /// Unix ms of the last checkpoint mirrored into `blobs` (0: never).
    #[serde(default)]
    pub checkpoint_at_ms: i64,
    /// Committed progress of the unit's blobs, by name relative to the resource.
    #[serde(default)]
    pub blobs: BTreeMap<String, MirroredBlob>,
}

/// One blob's committed progress, as the owner's registry had it (see
/// [`crate::registry::BlobEntry`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirroredBlob {
    pub offset: u64,
    pub length: u64,
    #[serde(default)]
    pub etag: String,
    #[serde(default)]
    pub last_modified: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_len: Option<u32>,
    /// Read to its tail after its hour ended: not listed again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub finished: bool,
}

impl Ownership {
    /// The owner while the claim holds at `now_ms`, `None` when released or expired.
    pub fn live_owner(&self, now_ms: i64) -> Option<&str> {
        (!self.owner.is_empty() && self.expires_at_ms > now_ms).then_some(self.owner.as_str())
    }
}

/// One thing to do about one unit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// It is free (never claimed, released or expired) and I am below my share: claim it.
    Claim(String),
    /// It is mine and stays mine: renew it (and mirror its checkpoint when due).
    Renew(String),
    /// It is mine but should go: I hold more than my share while another instance holds less,
    /// or it is no longer a unit I read.
    Release(String),
}

/// How much `me` wants `unit`: a rendezvous weight, so that instances prefer different units
/// when claiming (fewer lost races) and each releases the ones it wants least (stable: the
/// same units every time).
fn weight(me: &str, unit: &str) -> u64 {
    xxh3_64_with_seed(unit.as_bytes(), xxh3_64(me.as_bytes()))
}

/// Decides what `me` does this round.
///
/// - `units`: the units `me` reads (discovered by its walker);
/// - `leases`: the ownership blobs there are, by unit (units without one are free);
/// - `instances`: the instances whose presence is fresh (with or without `me`);
/// - `now_ms`: this instance's clock.
///
/// The live instances are the present ones, the owners of live claims, and `me`; the fair share
/// is ceil(units / live instances). `me` renews what it holds, claims free units up to its
/// share, and releases what it holds above its share only while some other live instance holds
/// less than its share (so they can claim it). An instance at its share neither claims nor
/// releases, so the assignment settles and stays.
pub fn plan(
    units: &BTreeSet<String>,
    leases: &BTreeMap<String, Ownership>,
    instances: &BTreeSet<String>,
    me: &str,
    now_ms: i64,
) -> Vec<Step> {
    let owner_of = |unit: &str| leases.get(unit).and_then(|o| o.live_owner(now_ms));
    let mut live: BTreeSet<&str> = instances.iter().map(String::as_str).collect();
    live.insert(me);
    let mut held: BTreeMap<&str, usize> = BTreeMap::new();
    for unit in units {
        if let Some(owner) = owner_of(unit) {
            live.insert(owner);
            *held.entry(owner).or_default() += 1;
        }
    }
    let share = units.len().div_ceil(live.len());
    let mut mine: Vec<&String> = units.iter().filter(|u| owner_of(u) == Some(me)).collect();
    let mut free: Vec<&String> = units.iter().filter(|u| owner_of(u).is_none()).collect();
    for v in [&mut mine, &mut free] {
        v.sort_by_key(|u| (std::cmp::Reverse(weight(me, u)), u.as_str()));
    }
    let others_below = live
        .iter()
        .any(|i| *i != me && held.get(i).copied().unwrap_or(0) < share);
    let keep = if mine.len() > share && others_below {
        share
    } else {
        mine.len()
    };
    let mut steps: Vec<Step> = mine[..keep]
        .iter()
        .map(|u| Step::Renew((*u).clone()))
        .collect();
    steps.extend(
        free.iter()
            .take(share.saturating_sub(keep))
            .map(|u| Step::Claim((*u).clone())),
    );
    steps.extend(mine[keep..].iter().map(|u| Step::Release((*u).clone())));
    // Claims of mine on units I no longer read (a changed resource_filter): give them back.
    steps.extend(
        leases
            .iter()
            .filter(|(unit, o)| !units.contains(*unit) && o.live_owner(now_ms) == Some(me))
            .map(|(unit, _)| Step::Release(unit.clone())),
    );
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_796_119_200_000;
    const LEASE: i64 = 3_000;

    fn units(n: usize) -> BTreeSet<String> {
        (0..n)
            .map(|i| format!("insights-logs-flowlogflowevent/flowLogResourceID=/S_RG/NW_FL-{i}/"))
            .collect()
    }

    fn lease(owner: &str, expires_at_ms: i64) -> Ownership {
        Ownership {
            owner: owner.to_owned(),
            expires_at_ms,
            ..Ownership::default()
        }
    }

    /// Runs rounds of every instance's plan against one shared set of leases, applying steps
    /// as conditional writes would (a claim of a unit someone else holds by then fails).
    /// Returns how many units changed hands in each round.
    fn simulate(
        leases: &mut BTreeMap<String, Ownership>,
        units: &BTreeSet<String>,
        instances: &[&str],
        rounds: usize,
    ) -> Vec<usize> {
        let present: BTreeSet<String> = instances.iter().map(|s| s.to_string()).collect();
        let mut moves = Vec::new();
        for _ in 0..rounds {
            let mut moved = 0;
            for me in instances {
                for step in plan(units, leases, &present, me, NOW) {
                    match step {
                        Step::Claim(u) => {
                            if leases.get(&u).and_then(|o| o.live_owner(NOW)).is_none() {
                                leases.insert(u, lease(me, NOW + LEASE));
                                moved += 1;
                            }
                        }
                        Step::Renew(u) => {
                            leases.insert(u, lease(me, NOW + LEASE));
                        }
                        Step::Release(u) => {
                            leases.insert(u, lease("", 0));
                            moved += 1;
                        }
                    }
                }
            }
            moves.push(moved);
        }
        moves
    }

    fn counts(leases: &BTreeMap<String, Ownership>) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for o in leases.values() {
            if let Some(owner) = o.live_owner(NOW) {
                *out.entry(owner.to_owned()).or_default() += 1;
            }
        }
        out
    }

    #[test]
    fn a_lone_instance_claims_every_free_unit() {
        let all = units(5);
        let steps = plan(&all, &BTreeMap::new(), &BTreeSet::new(), "a", NOW);
        assert_eq!(steps.len(), 5);
        assert!(
            steps.iter().all(|s| matches!(s, Step::Claim(_))),
            "{steps:?}"
        );
    }

    #[test]
    fn expired_and_released_units_are_claimed_and_live_ones_of_others_are_not() {
        let all = units(3);
        let names: Vec<&String> = all.iter().collect();
        let leases = BTreeMap::from([
            (names[0].clone(), lease("b", NOW + 1)),
            (names[1].clone(), lease("b", NOW - 1)),
            (names[2].clone(), lease("", 0)),
        ]);
        // Alone with b: share 2 each; b still holds one.
        let steps = plan(&all, &leases, &BTreeSet::from(["b".to_owned()]), "a", NOW);
        let mut claimed: Vec<&String> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Claim(u) => Some(u),
                _ => None,
            })
            .collect();
        claimed.sort();
        assert_eq!(claimed, vec![names[1], names[2]], "{steps:?}");
        assert_eq!(steps.len(), 2, "{steps:?}");
    }

    #[test]
    fn an_instance_claims_no_more_than_its_fair_share() {
        let all = units(10);
        let present = BTreeSet::from(["a".to_owned(), "b".to_owned(), "c".to_owned()]);
        let steps = plan(&all, &BTreeMap::new(), &present, "a", NOW);
        // ceil(10 / 3) = 4.
        assert_eq!(steps.len(), 4, "{steps:?}");
    }

    #[test]
    fn three_instances_starting_together_spread_the_units_and_then_stop_moving_them() {
        for n in [1, 2, 3, 7, 9, 10, 31] {
            let all = units(n);
            let mut leases = BTreeMap::new();
            let moves = simulate(&mut leases, &all, &["a", "b", "c"], 6);
            let counts = counts(&leases);
            assert_eq!(counts.values().sum::<usize>(), n, "{n}: every unit owned");
            let share = n.div_ceil(3);
            assert!(counts.values().all(|&c| c <= share), "{n}: {counts:?}");
            if n >= 3 {
                assert_eq!(counts.len(), 3, "{n}: every instance owns some: {counts:?}");
            }
            assert_eq!(&moves[2..], &[0, 0, 0, 0], "{n}: no flapping: {moves:?}");
        }
    }

    #[test]
    fn a_joining_instance_gets_its_share_from_one_that_held_everything() {
        let all = units(9);
        let mut leases = BTreeMap::new();
        simulate(&mut leases, &all, &["a"], 2);
        assert_eq!(counts(&leases)["a"], 9);
        let moves = simulate(&mut leases, &all, &["a", "b", "c"], 6);
        let counts = counts(&leases);
        assert_eq!(
            counts,
            BTreeMap::from([("a".into(), 3), ("b".into(), 3), ("c".into(), 3)]),
            "{moves:?}"
        );
        assert_eq!(&moves[3..], &[0, 0, 0], "{moves:?}");
    }

    #[test]
    fn the_units_of_a_dead_instance_go_to_the_survivors_once_its_claims_expire() {
        let all = units(9);
        let mut leases = BTreeMap::new();
        simulate(&mut leases, &all, &["a", "b", "c"], 4);
        // c dies: its claims run out, its presence goes stale.
        for o in leases.values_mut() {
            if o.owner == "c" {
                o.expires_at_ms = NOW - 1;
            }
        }
        simulate(&mut leases, &all, &["a", "b"], 3);
        let counts = counts(&leases);
        assert_eq!(counts.values().sum::<usize>(), 9, "{counts:?}");
        assert!(!counts.contains_key("c") && counts.len() == 2, "{counts:?}");
    }

    #[test]
    fn an_instance_at_its_share_keeps_its_units_when_another_has_fewer_and_nothing_is_free() {
        // 10 units over 3: share 4; 4, 4, 2 is as fair as ceil allows and must not move.
        let all = units(10);
        let names: Vec<&String> = all.iter().collect();
        let mut leases = BTreeMap::new();
        for (i, u) in names.iter().enumerate() {
            let owner = match i {
                0..4 => "a",
                4..8 => "b",
                _ => "c",
            };
            leases.insert((*u).clone(), lease(owner, NOW + LEASE));
        }
        let present = BTreeSet::from(["a".to_owned(), "b".to_owned(), "c".to_owned()]);
        for me in ["a", "b", "c"] {
            let steps = plan(&all, &leases, &present, me, NOW);
            assert!(
                steps.iter().all(|s| matches!(s, Step::Renew(_))),
                "{me}: {steps:?}"
            );
        }
    }

    #[test]
    fn claims_on_units_no_longer_read_are_released() {
        let gone = "other-container/flowLogResourceID=/X/".to_owned();
        let leases = BTreeMap::from([(gone.clone(), lease("a", NOW + LEASE))]);
        let steps = plan(&units(1), &leases, &BTreeSet::new(), "a", NOW);
        assert!(steps.contains(&Step::Release(gone)), "{steps:?}");
    }
}
