//! Finds flow-log blobs without listing history: discovers the resource prefixes of a
//! container (whatever path precedes `y=`) level by level with `delimiter=/` listings, then
//! lists only the hour partitions `…/y=YYYY/m=MM/d=DD/h=HH/` it is asked for.
use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use super::client::{StorageClient, StorageError};
use super::layout::{HOUR_SECS, blob_hour, hour_partition, partition_of, resource_of};
use super::listing::BlobItem;
use crate::shard::{OwnedUnits, Shard};

/// Deepest prefix the discovery walks to before giving up on a branch (real paths are ~10 deep).
const MAX_DISCOVERY_DEPTH: usize = 24;

/// How many wanted parts of one day (hours), month (days) or year (months) make listing the
/// whole day, month or year cheaper: one request (plus a page per 5,000 blobs) instead of one
/// per part. Below it, the wider listing would mostly return blobs nobody asked for.
const WIDEN_AT: usize = 4;

/// The prefixes to list so as to see every blob of `partitions` (hour partitions, see
/// [`hour_partition`]) with few requests: hours from `hourly_from` on (the current and
/// previous hour, which steady-state polls list) stay hour prefixes; older hours are merged
/// into day, month and year prefixes where [`WIDEN_AT`] parts of one are wanted (a first run's
/// `since` backlog, a catch-up after downtime). Prefixes covered by a wider one are dropped.
/// A wider listing also returns blobs of unwanted hours: filter by partition afterwards.
pub fn listing_prefixes(partitions: &BTreeSet<String>, hourly_from: i64) -> BTreeSet<String> {
    use std::collections::BTreeMap;
    let mut out = BTreeSet::new();
    // (resource, year, month, day) → wanted past hours.
    let mut days: BTreeMap<(&str, String, String, String), Vec<&String>> = BTreeMap::new();
    for partition in partitions {
        let parsed = resource_of(partition).zip(blob_hour(partition));
        match parsed {
            Some((resource, hour)) if hour < hourly_from => {
                let t = chrono::DateTime::from_timestamp(hour * HOUR_SECS, 0).unwrap_or_default();
                let key = (
                    resource,
                    t.format("%Y").to_string(),
                    t.format("%m").to_string(),
                    t.format("%d").to_string(),
                );
                days.entry(key).or_default().push(partition);
            }
            _ => {
                out.insert(partition.clone());
            }
        }
    }
    // (resource, year, month) → day prefixes or hour partitions, and how many days they span.
    let mut months: BTreeMap<(&str, String, String), (Vec<String>, usize)> = BTreeMap::new();
    for ((resource, y, m, d), hours) in days {
        let parts = if hours.len() >= WIDEN_AT {
            vec![format!("{resource}y={y}/m={m}/d={d}/")]
        } else {
            hours.into_iter().cloned().collect()
        };
        let month = months.entry((resource, y, m)).or_default();
        month.0.extend(parts);
        month.1 += 1;
    }
    let mut years: BTreeMap<(&str, String), (Vec<String>, usize)> = BTreeMap::new();
    for ((resource, y, m), (parts, spanned_days)) in months {
        let parts = if spanned_days >= WIDEN_AT {
            vec![format!("{resource}y={y}/m={m}/")]
        } else {
            parts
        };
        let year = years.entry((resource, y)).or_default();
        year.0.extend(parts);
        year.1 += 1;
    }
    for ((resource, y), (parts, spanned_months)) in years {
        if spanned_months >= WIDEN_AT {
            out.insert(format!("{resource}y={y}/"));
        } else {
            out.extend(parts);
        }
    }
    // An hour prefix of the current day under a year prefix, say: listed once, by the wider.
    let wide: Vec<String> = out
        .iter()
        .filter(|p| !partitions.contains(*p))
        .cloned()
        .collect();
    out.retain(|p| {
        !wide
            .iter()
            .any(|w| p.len() > w.len() && p.starts_with(w.as_str()))
    });
    out
}

/// Resource discovery and hour listings for one source.
pub struct Walker {
    client: StorageClient,
    /// Only names starting with this; discovery starts at its last `/`.
    prefix: String,
    /// Lower-cased substrings; a resource is kept when it contains one (or the list is empty).
    resource_filter: Vec<String>,
    resources: Vec<String>,
    discovered_at: Option<Instant>,
    discovery_interval: Duration,
    /// Static sharding: only resources this shard owns (by container and resource name).
    shard: Option<Shard>,
    /// Shared ownership: only the resources whose lease this instance holds at the time of
    /// the poll. Unlike a shard it changes between polls, so discovery keeps every resource
    /// (and publishes them for the coordinator) and the check is made when listing.
    owned: Option<OwnedUnits>,
}

impl Walker {
    pub fn new(
        client: StorageClient,
        prefix: Option<&str>,
        resource_filter: &[String],
        discovery_interval: Duration,
    ) -> Self {
        Walker {
            client,
            prefix: prefix.unwrap_or_default().to_owned(),
            resource_filter: resource_filter.iter().map(|f| f.to_lowercase()).collect(),
            resources: Vec::new(),
            discovered_at: None,
            discovery_interval,
            shard: None,
            owned: None,
        }
    }

    /// Keeps only the resources `shard` owns (see [`crate::shard`]); `None` keeps them all.
    pub fn with_shard(mut self, shard: Option<Shard>) -> Self {
        self.shard = shard;
        self
    }

    /// Keeps only the resources whose unit is in `owned` at the time of each poll (see
    /// [`crate::ownership`]); discoveries are published into it. `None` keeps them all.
    pub fn with_owned_units(mut self, owned: Option<OwnedUnits>) -> Self {
        self.owned = owned;
        self
    }

    pub fn client(&self) -> &StorageClient {
        &self.client
    }

    /// The resource prefixes found by the last discovery.
    pub fn resources(&self) -> &[String] {
        &self.resources
    }

    /// Rediscovers resources when the discovery interval has passed (or never ran).
    /// Returns whether a discovery ran.
    pub async fn discover_if_due(&mut self) -> Result<bool, StorageError> {
        let due = self
            .discovered_at
            .is_none_or(|at| at.elapsed() >= self.discovery_interval);
        if due {
            self.discover().await?;
        }
        Ok(due)
    }

    /// Walks the prefix tree breadth-first until each branch reaches a level whose
    /// sub-prefixes are `y=` folders; those parents are the resources.
    pub async fn discover(&mut self) -> Result<(), StorageError> {
        let start = match self.prefix.rfind('/') {
            Some(i) => self.prefix[..=i].to_owned(),
            None => String::new(),
        };
        let mut found = Vec::new();
        let mut queue = VecDeque::from([start]);
        while let Some(node) = queue.pop_front() {
            if node.matches('/').count() > MAX_DISCOVERY_DEPTH {
                tracing::warn!(prefix = %node, "flow-log discovery gave up on a prefix deeper than {MAX_DISCOVERY_DEPTH} levels");
                continue;
            }
            let listing = self.client.list_hierarchical(&node).await?;
            let is_resource = listing
                .prefixes
                .iter()
                .any(|child| child[node.len()..].starts_with("y="));
            if is_resource {
                found.push(node);
                continue;
            }
            for child in listing.prefixes {
                if child.starts_with(&self.prefix) || self.prefix.starts_with(&child) {
                    queue.push_back(child);
                }
            }
        }
        found.retain(|r| self.wanted(r));
        found.sort();
        if found != self.resources {
            match self.shard {
                Some(shard) => tracing::info!(
                    container = self.client.container_name(),
                    resources = found.len(),
                    shard = shard.index,
                    shards = shard.count,
                    "flow-log resources discovered (those this shard owns)"
                ),
                None => tracing::info!(
                    container = self.client.container_name(),
                    resources = found.len(),
                    "flow-log resources discovered"
                ),
            }
        }
        if let Some(owned) = &self.owned {
            owned.set_known(found.iter().map(|r| self.unit(r)).collect());
        }
        self.resources = found;
        self.discovered_at = Some(Instant::now());
        Ok(())
    }

    fn wanted(&self, resource: &str) -> bool {
        if !(resource.starts_with(&self.prefix) || self.prefix.starts_with(resource)) {
            return false;
        }
        let lower = resource.to_lowercase();
        let filtered = self.resource_filter.is_empty()
            || self.resource_filter.iter().any(|f| lower.contains(f));
        filtered
            && self
                .shard
                .is_none_or(|shard| shard.owns(&self.unit(resource)))
    }

    /// The name a shard or a lease is chosen by: the container and the resource, so that
    /// equal resource paths in two containers are two units.
    pub fn unit(&self, resource: &str) -> String {
        format!("{}/{resource}", self.client.container_name())
    }

    /// Whether this instance may read `resource` now (always, without shared ownership).
    fn owned_now(&self, resource: &str) -> bool {
        self.owned
            .as_ref()
            .is_none_or(|owned| owned.owns(&self.unit(resource)))
    }

    /// Whether a blob name passes the source's `prefix` and `resource_filter` (and belongs
    /// to this instance now, under sharding or shared ownership).
    pub fn accepts(&self, blob: &str) -> bool {
        blob.starts_with(&self.prefix)
            && resource_of(blob).is_some_and(|r| self.wanted(r) && self.owned_now(r))
    }

    /// The partitions of `hours` for every known resource.
    pub fn partitions_for_hours(
        &self,
        hours: impl IntoIterator<Item = i64> + Clone,
    ) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for resource in self.resources.iter().filter(|r| self.owned_now(r)) {
            for hour in hours.clone() {
                out.insert(hour_partition(resource, hour));
            }
        }
        out
    }

    /// Under shared ownership, the partitions of `hours` (the `since` window) of the owned
    /// units nobody had read before this instance claimed them, and those units, to hand to
    /// [`Walker::backlog_listed`] once listed. Empty otherwise.
    pub fn backlog(
        &self,
        hours: impl IntoIterator<Item = i64> + Clone,
    ) -> (BTreeSet<String>, BTreeSet<String>) {
        let Some(owned) = &self.owned else {
            return Default::default();
        };
        let units = owned.backlog();
        let mut out = BTreeSet::new();
        for resource in &self.resources {
            if units.contains(&self.unit(resource)) && self.owned_now(resource) {
                for hour in hours.clone() {
                    out.insert(hour_partition(resource, hour));
                }
            }
        }
        (out, units)
    }

    /// The backlog of `units` was listed.
    pub fn backlog_listed(&self, units: &BTreeSet<String>) {
        if let Some(owned) = &self.owned {
            owned.backlog_listed(units);
        }
    }

    /// Lists the flow-log blobs (`*.json`) of `partitions` with the prefixes of
    /// [`listing_prefixes`]: blobs of other hours that a wider listing returns are left out,
    /// and each blob is returned once.
    pub async fn list_covering(
        &self,
        partitions: &BTreeSet<String>,
        hourly_from: i64,
    ) -> Result<Vec<BlobItem>, StorageError> {
        let prefixes = listing_prefixes(partitions, hourly_from);
        let mut blobs = self.list_partitions(&prefixes).await?;
        blobs.retain(|b| partition_of(&b.name).is_some_and(|p| partitions.contains(&p)));
        let mut seen = std::collections::HashSet::new();
        blobs.retain(|b| seen.insert(b.name.clone()));
        Ok(blobs)
    }

    /// Lists the flow-log blobs (`*.json`) under each partition: one flat listing per partition.
    pub async fn list_partitions(
        &self,
        partitions: &BTreeSet<String>,
    ) -> Result<Vec<BlobItem>, StorageError> {
        let mut blobs = Vec::new();
        for partition in partitions {
            let listed = self.client.list_blobs(partition).await?;
            blobs.extend(
                listed
                    .into_iter()
                    .filter(|b| b.name.ends_with(".json") && self.accepts(&b.name)),
            );
        }
        Ok(blobs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hours_of(resource: &str, hours: impl IntoIterator<Item = i64>) -> BTreeSet<String> {
        hours
            .into_iter()
            .map(|h| hour_partition(resource, h))
            .collect()
    }

    const R: &str = "flowLogResourceID=/S_NETWORKWATCHERRG/NETWORKWATCHER_WESTEUROPE_FL/";
    // 2026-12-01T10:00:00Z.
    const NOW: i64 = 1_796_119_200 / 3600;

    #[test]
    fn steady_state_partitions_are_listed_hour_by_hour() {
        // Current and previous hour, plus two older hours of still-active blobs.
        let wanted = hours_of(R, [NOW - 30, NOW - 3, NOW - 1, NOW]);
        assert_eq!(listing_prefixes(&wanted, NOW - 1), wanted);
    }

    #[test]
    fn a_year_of_backlog_is_listed_by_year_and_month_prefixes_covering_every_hour() {
        let wanted = hours_of(R, NOW - 365 * 24..=NOW);
        let prefixes = listing_prefixes(&wanted, NOW - 1);
        // 2025-12-01T10:00 to 2026-12-01T10:00: December 2025 by month, 2026 by year.
        assert_eq!(
            prefixes,
            BTreeSet::from([format!("{R}y=2025/m=12/"), format!("{R}y=2026/")]),
        );
        for partition in &wanted {
            assert!(
                prefixes.iter().any(|p| partition.starts_with(p.as_str())),
                "{partition} not covered"
            );
        }
    }

    #[test]
    fn a_few_days_of_downtime_are_listed_by_day_with_partial_days_by_hour() {
        // From 2026-11-28T22:00 (two hours of that day) to now (2026-12-01T10:00).
        let wanted = hours_of(R, NOW - 60..=NOW);
        let prefixes = listing_prefixes(&wanted, NOW - 1);
        let expected: BTreeSet<String> = [
            format!("{R}y=2026/m=11/d=28/h=22/"),
            format!("{R}y=2026/m=11/d=28/h=23/"),
            format!("{R}y=2026/m=11/d=29/"),
            format!("{R}y=2026/m=11/d=30/"),
            // Today: 00:00 to 08:00 are past hours (a day prefix), 09:00 and 10:00 are hourly
            // but covered by it.
            format!("{R}y=2026/m=12/d=01/"),
        ]
        .into();
        assert_eq!(prefixes, expected);
    }
}
