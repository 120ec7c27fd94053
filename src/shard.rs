//! Static sharding (`[cluster] shard = "2/5"`): which of N instances owns a unit of work (one
//! flow-log resource of one container), decided by rendezvous hashing with no coordination.
//!
//! Every instance computes the same owner for a unit from its name alone, so N instances with
//! shards `0/N` … `N-1/N` cover every unit exactly once. Rendezvous (highest random weight)
//! hashing rather than `hash % N`: when N changes, only the units of the added or removed
//! shard move (about 1/N of them), so a resized StatefulSet re-reads little. A shared leaf:
//! it imports nothing from the rest of the crate.
//!
//! Shared ownership (`[cluster] coordination_container`, [`crate::ownership`]) decides owners
//! at run time instead; [`OwnedUnits`] is where its decisions meet the walker.
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Most shards a deployment may have; far above any sensible replica count, low enough that
/// choosing an owner (one hash per shard) stays cheap.
pub const MAX_SHARDS: u32 = 1024;

/// What the configuration says: a fixed shard, or the ordinal of a StatefulSet pod taken from
/// the host name (`flowlogd-2` is shard 2) when the instance starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardSpec {
    Fixed(Shard),
    /// `"ordinal/N"`.
    FromHostOrdinal {
        count: u32,
    },
}

/// This instance's shard: `index` of `count`, counted from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

/// A `shard` value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error("shard {0:?} is not INDEX/COUNT (e.g. \"2/5\", counted from 0) or \"ordinal/COUNT\"")]
    Syntax(String),
    #[error("shard {text:?}: the count must be 1 to {MAX_SHARDS} and the index below it")]
    Range { text: String },
    #[error(
        "shard \"ordinal/{count}\": the host name {host:?} does not end in -N (a StatefulSet \
         pod's ordinal); set shard = \"INDEX/{count}\" instead"
    )]
    NoOrdinal { host: String, count: u32 },
    #[error(
        "shard \"ordinal/{count}\": the host name {host:?} gives ordinal {index}, but there are \
         only {count} shards (raise the count to the StatefulSet's replicas)"
    )]
    OrdinalTooLarge {
        host: String,
        index: u32,
        count: u32,
    },
}

impl FromStr for ShardSpec {
    type Err = ShardError;

    fn from_str(text: &str) -> Result<Self, ShardError> {
        let syntax = || ShardError::Syntax(text.to_owned());
        let (index, count) = text.trim().split_once('/').ok_or_else(syntax)?;
        let count: u32 = count.trim().parse().map_err(|_| syntax())?;
        let range = || ShardError::Range {
            text: text.to_owned(),
        };
        if count == 0 || count > MAX_SHARDS {
            return Err(range());
        }
        if index.trim() == "ordinal" {
            return Ok(ShardSpec::FromHostOrdinal { count });
        }
        let index: u32 = index.trim().parse().map_err(|_| syntax())?;
        if index >= count {
            return Err(range());
        }
        Ok(ShardSpec::Fixed(Shard { index, count }))
    }
}

impl fmt::Display for ShardSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShardSpec::Fixed(shard) => write!(f, "{}/{}", shard.index, shard.count),
            ShardSpec::FromHostOrdinal { count } => write!(f, "ordinal/{count}"),
        }
    }
}

impl ShardSpec {
    /// The shard of this instance; `host` is its host name (used by `ordinal/N` only).
    pub fn resolve(self, host: &str) -> Result<Shard, ShardError> {
        let count = match self {
            ShardSpec::Fixed(shard) => return Ok(shard),
            ShardSpec::FromHostOrdinal { count } => count,
        };
        let no_ordinal = || ShardError::NoOrdinal {
            host: host.to_owned(),
            count,
        };
        let (_, digits) = host.trim().rsplit_once('-').ok_or_else(no_ordinal)?;
        let index: u32 = digits.parse().map_err(|_| no_ordinal())?;
        if index >= count {
            return Err(ShardError::OrdinalTooLarge {
                host: host.to_owned(),
                index,
                count,
            });
        }
        Ok(Shard { index, count })
    }
}

impl Shard {
    /// Whether this shard owns `unit`.
    pub fn owns(&self, unit: &str) -> bool {
        owner(unit, self.count) == self.index
    }
}

/// The shard, of `count`, that owns `unit`: the one whose hash of the unit is highest (ties,
/// which need equal 64-bit hashes, go to the lower index).
pub fn owner(unit: &str, count: u32) -> u32 {
    (0..count.max(1))
        .max_by_key(|&shard| {
            (
                xxh3_64_with_seed(unit.as_bytes(), u64::from(shard)),
                std::cmp::Reverse(shard),
            )
        })
        .unwrap_or(0)
}

/// The units of one source this instance may read now, under shared ownership: written by the
/// coordinator as it claims, loses and releases leases, read by the walker at every poll.
/// Also carries the other way the units the walker discovered, which the coordinator shares
/// out. Cheap to clone: clones share one set.
#[derive(Debug, Clone, Default)]
pub struct OwnedUnits(Arc<RwLock<UnitSets>>);

#[derive(Debug, Default)]
struct UnitSets {
    /// `None` until the walker's first discovery: the coordinator must not release units
    /// merely because nothing was discovered yet.
    known: Option<BTreeSet<String>>,
    owned: BTreeSet<String>,
    /// Owned units nobody has read yet (claimed without a checkpoint): the next poll lists
    /// their whole `since` window, as a first run would, not just the recent hours.
    backlog: BTreeSet<String>,
}

impl OwnedUnits {
    // A panic while holding the lock cannot leave these sets half-written (each change is one
    // insert or one assignment), so a poisoned lock is used as it is.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, UnitSets> {
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, UnitSets> {
        self.0.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this instance holds the lease of `unit` now.
    pub fn owns(&self, unit: &str) -> bool {
        self.read().owned.contains(unit)
    }

    /// The units this instance holds.
    pub fn owned(&self) -> BTreeSet<String> {
        self.read().owned.clone()
    }

    /// Starts reading `unit` (its lease was just claimed).
    pub fn insert(&self, unit: &str) {
        self.write().owned.insert(unit.to_owned());
    }

    /// Starts reading `unit`, which nobody has read yet: from its `since` window.
    pub fn insert_unread(&self, unit: &str) {
        let mut sets = self.write();
        sets.owned.insert(unit.to_owned());
        sets.backlog.insert(unit.to_owned());
    }

    /// Stops reading `unit` at the next poll (its lease was lost or released).
    pub fn remove(&self, unit: &str) -> bool {
        let mut sets = self.write();
        sets.backlog.remove(unit);
        sets.owned.remove(unit)
    }

    /// The owned units whose `since` window is still to be listed.
    pub fn backlog(&self) -> BTreeSet<String> {
        self.read().backlog.clone()
    }

    /// Their window was listed: from now on, recent hours as for every other unit.
    pub fn backlog_listed(&self, units: &BTreeSet<String>) {
        self.write().backlog.retain(|u| !units.contains(u));
    }

    /// The units the walker found at its last discovery (`None` before the first).
    pub fn known(&self) -> Option<BTreeSet<String>> {
        self.read().known.clone()
    }

    /// Records what the walker's discovery found.
    pub fn set_known(&self, units: BTreeSet<String>) {
        self.write().known = Some(units);
    }
}

/// The host name, for `shard = "ordinal/N"`: `HOSTNAME` when set (Kubernetes sets it to the
/// pod name), else the kernel's.
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                format!(
                    "insights-logs-flowlogflowevent/flowLogResourceID=/SUB_NETWORKWATCHERRG/NETWORKWATCHER_WESTEUROPE_FL-{i}/"
                )
            })
            .collect()
    }

    #[test]
    fn three_shards_cover_every_unit_exactly_once_for_several_unit_counts() {
        for n in [1, 2, 3, 7, 50, 1000] {
            let shards: Vec<Shard> = (0..3).map(|index| Shard { index, count: 3 }).collect();
            for unit in units(n) {
                let owners = shards.iter().filter(|s| s.owns(&unit)).count();
                assert_eq!(owners, 1, "{unit} with {n} units");
            }
        }
    }

    #[test]
    fn units_spread_over_the_shards() {
        let mut per_shard = [0usize; 3];
        for unit in units(300) {
            per_shard[owner(&unit, 3) as usize] += 1;
        }
        // 100 each on average; a hash this poor would put 60 or fewer on one shard.
        assert!(per_shard.iter().all(|&n| n > 60), "{per_shard:?}");
    }

    #[test]
    fn adding_a_shard_moves_only_the_units_the_new_shard_takes() {
        let all = units(1000);
        let mut moved = 0;
        for unit in &all {
            let (before, after) = (owner(unit, 4), owner(unit, 5));
            if before != after {
                assert_eq!(after, 4, "{unit} moved between old shards");
                moved += 1;
            }
        }
        // About a fifth of them go to the new shard.
        assert!((120..=280).contains(&moved), "{moved}");
    }

    #[test]
    fn shard_values_parse_and_bad_ones_say_what_is_expected() {
        assert_eq!(
            "2/5".parse(),
            Ok(ShardSpec::Fixed(Shard { index: 2, count: 5 }))
        );
        assert_eq!(
            " ordinal/3 ".parse(),
            Ok(ShardSpec::FromHostOrdinal { count: 3 })
        );
        for bad in ["", "2", "2/", "/5", "a/5", "2-5", "-1/5"] {
            assert_eq!(
                bad.parse::<ShardSpec>(),
                Err(ShardError::Syntax(bad.to_owned())),
                "{bad:?}"
            );
        }
        for bad in ["5/5", "0/0", "0/1025"] {
            assert!(
                matches!(bad.parse::<ShardSpec>(), Err(ShardError::Range { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn an_unread_unit_keeps_its_backlog_until_listed_and_loses_it_with_the_unit() {
        let owned = OwnedUnits::default();
        owned.insert("c/a/");
        owned.insert_unread("c/b/");
        owned.insert_unread("c/x/");
        assert!(owned.owns("c/a/") && owned.owns("c/b/"));
        let pending = owned.backlog();
        assert_eq!(
            pending,
            BTreeSet::from(["c/b/".to_owned(), "c/x/".to_owned()])
        );
        // Claimed while the poll listed: stays pending for the next poll.
        owned.insert_unread("c/y/");
        owned.backlog_listed(&pending);
        assert_eq!(owned.backlog(), BTreeSet::from(["c/y/".to_owned()]));
        owned.remove("c/y/");
        assert!(owned.backlog().is_empty() && !owned.owns("c/y/"));
    }

    #[test]
    fn a_statefulset_pod_takes_its_shard_from_its_host_name() {
        let spec = ShardSpec::FromHostOrdinal { count: 3 };
        assert_eq!(spec.resolve("flowlogd-2"), Ok(Shard { index: 2, count: 3 }));
        assert_eq!(
            spec.resolve("flow-logd-0"),
            Ok(Shard { index: 0, count: 3 })
        );
        assert!(matches!(
            spec.resolve("flowlogd-3"),
            Err(ShardError::OrdinalTooLarge { index: 3, .. })
        ));
        assert!(matches!(
            spec.resolve("vm-flowlogd"),
            Err(ShardError::NoOrdinal { .. })
        ));
        assert_eq!(
            ShardSpec::Fixed(Shard { index: 1, count: 2 }).resolve("anything"),
            Ok(Shard { index: 1, count: 2 })
        );
    }
}
