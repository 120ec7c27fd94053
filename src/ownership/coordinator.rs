//! The I/O side of shared ownership: reads and conditionally writes the ownership and presence
//! blobs of the coordination container, applies [`super::plan`] every round, mirrors committed
//! offsets from the registry into the blobs of owned units, raises the registry to a unit's
//! mirrored checkpoint when claiming it, and tells the walker what it may read
//! ([`OwnedUnits`]).
//!
//! Blob names in the coordination container: `units/<container>/<resource>/ownership.json`
//! (one per unit: readable in Storage Explorer) and `instances/<container>/<instance id>`
//! (presence, rewritten every `renew_interval`; fresh while younger than `lease_duration`).
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use azure_core::http::{Etag, StatusCode};
use azure_storage_blob::models::BlobClientUploadOptions;
use bytes::Bytes;
use futures::TryStreamExt as _;
use tokio_util::sync::CancellationToken;

use super::{MirroredBlob, Ownership, Step, plan};
use crate::config::storage::StorageConfig;
use crate::config::{ClusterConfig, Config};
use crate::metrics::StorageStats;
use crate::registry::{BlobEntry, BlobState, Registry};
use crate::shard::OwnedUnits;
use crate::source::client::{StorageClient, StorageError};
use crate::source::layout::{HOUR_SECS, blob_hour, resource_of};
use crate::source::listing::{BlobItem, normalize_etag};

/// What `[cluster]` says about shared ownership.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    pub coordination_container: String,
    pub instance_id: String,
    pub lease: Duration,
    pub renew: Duration,
    pub checkpoint: Duration,
}

impl ClusterSettings {
    /// `None` when `coordination_container` is not set (the feature is off).
    pub fn from_config(config: &ClusterConfig) -> Option<ClusterSettings> {
        Some(ClusterSettings {
            coordination_container: config.coordination_container.clone()?,
            instance_id: config.instance_id(),
            lease: config.lease_duration,
            renew: config.renew_interval,
            checkpoint: config.checkpoint_interval,
        })
    }

    /// How often a round runs: often enough for both renewals and checkpoints.
    fn round(&self) -> Duration {
        self.renew.min(self.checkpoint)
    }
}

/// Failures of the coordination blobs themselves (a lost race is not one: it is an outcome).
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("ownership blob {blob}: {reason}")]
    Format { blob: String, reason: String },
    #[error("registry: {0}")]
    Registry(String),
}

/// The ownership and presence blobs of one flow-log container, in the coordination container
/// of the same storage account.
#[derive(Clone)]
struct Store {
    client: StorageClient,
    /// The flow-log container the units belong to.
    container: String,
    /// Reads, writes and deletes (listings count in the client's stats).
    requests: Arc<AtomicU64>,
}

/// Precondition of a write.
enum Condition<'a> {
    /// `If-None-Match: *`: only if the blob does not exist yet.
    Absent,
    /// `If-Match`: only if the blob is still what was read.
    Unchanged(&'a str),
}

impl Store {
    fn units_prefix(&self) -> String {
        format!("units/{}/", self.container)
    }

    fn unit_blob(unit: &str) -> String {
        format!("units/{unit}ownership.json")
    }

    /// The unit an ownership blob is about.
    fn unit_of(blob: &str) -> Option<&str> {
        blob.strip_prefix("units/")?.strip_suffix("ownership.json")
    }

    fn presence_prefix(&self) -> String {
        format!("instances/{}/", self.container)
    }

    fn count(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Every request made so far.
    fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
            + self.client.stats().list_requests.load(Ordering::Relaxed)
    }

    async fn ensure_container(&self) -> Result<(), StorageError> {
        self.count();
        match self.client.container_client().create(None).await {
            Ok(_) => {
                tracing::info!(
                    container = self.client.container_name(),
                    "coordination container created"
                );
                Ok(())
            }
            Err(e) if e.http_status() == Some(StatusCode::Conflict) => Ok(()),
            Err(e) => Err(StorageError::from_azure(
                format!("container {:?}", self.client.container_name()),
                e,
            )),
        }
    }

    /// The ownership blobs of this container's units.
    async fn list_units(&self) -> Result<Vec<BlobItem>, StorageError> {
        let mut blobs = self.client.list_blobs(&self.units_prefix()).await?;
        blobs.retain(|b| Store::unit_of(&b.name).is_some());
        Ok(blobs)
    }

    /// The whole blob and its ETag (as the service sent it, for `If-Match`); `None` if absent.
    async fn read(&self, blob: &str) -> Result<Option<(Bytes, String)>, StorageError> {
        let target = || format!("blob {blob:?}");
        self.count();
        let response = match self
            .client
            .container_client()
            .blob_client(blob)
            .download(None)
            .await
        {
            Ok(r) => r,
            Err(e) if e.http_status() == Some(StatusCode::NotFound) => return Ok(None),
            Err(e) => return Err(StorageError::from_azure(target(), e)),
        };
        let etag = response
            .properties
            .etag
            .as_ref()
            .map(ToString::to_string)
            .ok_or_else(|| StorageError::Request {
                target: target(),
                status: None,
                reason: "download without an ETag".into(),
            })?;
        let body: Vec<u8> = response
            .body
            .map_err(|e| StorageError::from_azure(target(), e))
            .try_fold(Vec::new(), |mut all, chunk| async move {
                all.extend_from_slice(&chunk);
                Ok(all)
            })
            .await?;
        Ok(Some((Bytes::from(body), etag)))
    }

    async fn read_ownership(
        &self,
        blob: &str,
    ) -> Result<Option<(Ownership, String)>, ClusterError> {
        let Some((body, etag)) = self.read(blob).await? else {
            return Ok(None);
        };
        match serde_json::from_slice::<Ownership>(&body) {
            Ok(o) => Ok(Some((o, etag))),
            // Overwritten by the next claim (conditionally, on this ETag): a broken blob must
            // not pin its unit for ever.
            Err(e) => {
                tracing::warn!(blob = %blob, error = %e, "ownership blob is not valid JSON; treating its unit as free");
                Ok(Some((Ownership::default(), etag)))
            }
        }
    }

    /// Writes `body` if `condition` holds: `Some(new ETag)`, or `None` when another instance
    /// changed the blob first (HTTP 412, or 409 for a create).
    async fn write(
        &self,
        blob: &str,
        body: Bytes,
        condition: Condition<'_>,
    ) -> Result<Option<String>, StorageError> {
        let mut options = BlobClientUploadOptions::default();
        match condition {
            Condition::Absent => options.if_none_match = Some(Etag::from("*")),
            Condition::Unchanged(etag) => options.if_match = Some(Etag::from(etag.to_owned())),
        }
        self.count();
        match self
            .client
            .container_client()
            .blob_client(blob)
            .upload(body.into(), Some(options))
            .await
        {
            Ok(r) => Ok(Some(r.etag.map(|e| e.to_string()).unwrap_or_default())),
            Err(e)
                if matches!(
                    e.http_status(),
                    Some(StatusCode::PreconditionFailed | StatusCode::Conflict)
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(StorageError::from_azure(format!("blob {blob:?}"), e)),
        }
    }

    async fn put_presence(&self, instance: &str) -> Result<(), StorageError> {
        let blob = format!("{}{instance}", self.presence_prefix());
        self.count();
        self.client
            .container_client()
            .blob_client(&blob)
            .upload(Bytes::from_static(b"{}").into(), None)
            .await
            .map(|_| ())
            .map_err(|e| StorageError::from_azure(format!("blob {blob:?}"), e))
    }

    async fn delete_presence(&self, instance: &str) {
        let blob = format!("{}{instance}", self.presence_prefix());
        self.count();
        if let Err(e) = self
            .client
            .container_client()
            .blob_client(&blob)
            .delete(None)
            .await
        {
            tracing::debug!(blob = %blob, error = %e, "cannot delete the presence blob; it goes stale after lease_duration");
        }
    }

    /// Instances whose presence blob was written less than `lease` ago.
    async fn present(&self, lease: Duration) -> Result<BTreeSet<String>, StorageError> {
        let prefix = self.presence_prefix();
        let cutoff =
            chrono::Utc::now() - chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
        Ok(self
            .client
            .list_blobs(&prefix)
            .await?
            .into_iter()
            .filter(|b| b.last_modified > cutoff)
            .filter_map(|b| b.name.strip_prefix(&prefix).map(str::to_owned))
            .collect())
    }
}

/// What this instance knows about a unit it holds.
struct Held {
    /// ETag of the last write, for the next `If-Match`.
    etag: String,
    /// When to stop reading if the claim could not be renewed: its expiry by this instance's
    /// own clock (counted from before the write was sent, so never later than what others
    /// see) less one round, as it is checked once a round.
    deadline: Instant,
    last_write: Instant,
    checkpoint_at: Instant,
    checkpoint_at_ms: i64,
    mirrored: BTreeMap<String, MirroredBlob>,
}

/// An ownership blob as last read.
struct Cached {
    /// Normalised ETag from the listing: unchanged means no need to read again.
    listed_etag: String,
    ownership: Ownership,
    /// ETag as sent by the service, for `If-Match`.
    etag: String,
}

/// Shared ownership of one source's units.
struct Coordinator {
    source: String,
    store: Store,
    registry: Registry,
    units: OwnedUnits,
    settings: ClusterSettings,
    /// `flowlogd once`: claim every free unit, not a fair share (it releases them all at the
    /// end of its pass).
    greedy: bool,
    held: BTreeMap<String, Held>,
    cache: BTreeMap<String, Cached>,
    last_presence: Option<Instant>,
    counts: Arc<Counts>,
}

/// Claims won and lost, for `/metrics`.
#[derive(Debug, Default)]
struct Counts {
    claims: AtomicU64,
    losses: AtomicU64,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn to_json(ownership: &Ownership) -> Bytes {
    // Serialising plain strings and numbers into memory cannot fail.
    Bytes::from(serde_json::to_vec(ownership).unwrap_or_default())
}

impl Coordinator {
    fn me(&self) -> &str {
        &self.settings.instance_id
    }

    /// See [`Held::deadline`]; above the next renewal, as `renew_interval` is below half of
    /// `lease_duration`.
    fn deadline(&self, sent: Instant) -> Instant {
        sent + self.settings.lease.saturating_sub(self.settings.round())
    }

    /// One round: presence, expiry of claims not renewed in time, listing, plan, writes.
    async fn round(&mut self) {
        if self
            .last_presence
            .is_none_or(|at| at.elapsed() + self.settings.round() / 2 >= self.settings.renew)
        {
            match self.store.put_presence(&self.settings.instance_id).await {
                Ok(()) => self.last_presence = Some(Instant::now()),
                Err(e) => {
                    tracing::warn!(source = %self.source, error = %e, "cannot write this instance's presence blob; retrying next round")
                }
            }
        }
        let ran_out: Vec<String> = self
            .held
            .iter()
            .filter(|(_, h)| h.deadline <= Instant::now())
            .map(|(u, _)| u.clone())
            .collect();
        for unit in ran_out {
            self.counts.losses.fetch_add(1, Ordering::Relaxed);
            self.held.remove(&unit);
            self.units.remove(&unit);
            tracing::warn!(source = %self.source, unit = %unit, owner = %self.me(), "claim ran out before it could be renewed; stopped reading the unit (another instance may claim it; this one tries to claim it again when it is free)");
        }
        let Some(known) = self.units.known() else {
            return;
        };
        let listed = match self.refresh().await {
            Ok(()) => self
                .store
                .present(self.settings.lease)
                .await
                .map_err(ClusterError::from),
            Err(e) => Err(e),
        };
        let instances = match listed {
            Ok(i) => i,
            Err(e) => {
                // Renewing needs no listing: keep what is held rather than let it run out.
                tracing::warn!(source = %self.source, error = %e, "cannot list or read the ownership or presence blobs; renewing the claims held, claiming and releasing next round");
                let held: Vec<String> = self.held.keys().cloned().collect();
                let mut checkpoints = self.checkpoints().await.unwrap_or_default();
                for unit in held {
                    let checkpoint = checkpoints.remove(&unit);
                    self.renew(&unit, checkpoint).await;
                }
                return;
            }
        };
        let now = now_ms();
        let leases: BTreeMap<String, Ownership> = self
            .cache
            .iter()
            .map(|(u, c)| (u.clone(), c.ownership.clone()))
            .collect();
        let steps = if self.greedy {
            known
                .iter()
                .filter_map(|u| match leases.get(u).and_then(|o| o.live_owner(now)) {
                    None => Some(Step::Claim(u.clone())),
                    Some(owner) if owner == self.me() => Some(Step::Renew(u.clone())),
                    Some(_) => None,
                })
                .collect()
        } else {
            plan(&known, &leases, &instances, self.me(), now)
        };
        let writes_checkpoint = steps.iter().any(|s| match s {
            Step::Renew(u) => self.held.contains_key(u),
            Step::Release(_) => true,
            Step::Claim(_) => false,
        });
        let mut checkpoints = if writes_checkpoint {
            match self.checkpoints().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(source = %self.source, error = %e, "cannot read committed offsets to mirror; claims are renewed with the previous checkpoint");
                    BTreeMap::new()
                }
            }
        } else {
            BTreeMap::new()
        };
        for step in steps {
            match step {
                Step::Renew(unit) if self.held.contains_key(&unit) => {
                    let checkpoint = checkpoints.remove(&unit);
                    self.renew(&unit, checkpoint).await;
                }
                Step::Claim(unit) | Step::Renew(unit) => self.claim(&unit).await,
                Step::Release(unit) => {
                    let checkpoint = checkpoints.remove(&unit);
                    self.release(&unit, checkpoint, "rebalancing: this instance holds more than its share while another holds less").await;
                }
            }
        }
    }

    /// Lists the ownership blobs and reads those whose ETag changed since last read.
    async fn refresh(&mut self) -> Result<(), ClusterError> {
        let listed = self.store.list_units().await?;
        let mut seen = BTreeSet::new();
        for item in listed {
            let Some(unit) = Store::unit_of(&item.name).map(str::to_owned) else {
                continue;
            };
            seen.insert(unit.clone());
            if self
                .cache
                .get(&unit)
                .is_some_and(|c| c.listed_etag == item.etag)
            {
                continue;
            }
            match self.store.read_ownership(&item.name).await? {
                Some((ownership, etag)) => {
                    self.cache.insert(
                        unit,
                        Cached {
                            listed_etag: normalize_etag(&etag),
                            ownership,
                            etag,
                        },
                    );
                }
                None => {
                    self.cache.remove(&unit);
                }
            }
        }
        self.cache.retain(|u, _| seen.contains(u));
        Ok(())
    }

    /// The committed progress of every held unit's blobs, from the registry (off the runtime:
    /// it walks the source's entries).
    async fn checkpoints(
        &self,
    ) -> Result<BTreeMap<String, BTreeMap<String, MirroredBlob>>, ClusterError> {
        let registry = self.registry.clone();
        let source = self.source.clone();
        let container = self.store.container.clone();
        let held: BTreeSet<String> = self.held.keys().cloned().collect();
        let now_hour = chrono::Utc::now().timestamp().div_euclid(HOUR_SECS);
        tokio::task::spawn_blocking(move || {
            let mut out: BTreeMap<String, BTreeMap<String, MirroredBlob>> = BTreeMap::new();
            for item in registry.list(Some(&source)) {
                let (_, blob, entry) = item.map_err(|e| ClusterError::Registry(e.to_string()))?;
                let Some(resource) = resource_of(&blob) else {
                    continue;
                };
                let unit = format!("{container}/{resource}");
                if !held.contains(&unit) {
                    continue;
                }
                if let Some(m) = mirrored(&blob, &entry, now_hour) {
                    out.entry(unit)
                        .or_default()
                        .insert(blob[resource.len()..].to_owned(), m);
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| ClusterError::Registry(e.to_string()))?
    }

    /// Claims a free unit (or adopts one this instance id still holds, after a restart), then
    /// raises the registry to its checkpoint, then starts reading it.
    async fn claim(&mut self, unit: &str) {
        let blob = Store::unit_blob(unit);
        let previous = self.cache.get(unit);
        let mut ownership = previous.map(|c| c.ownership.clone()).unwrap_or_default();
        let previous_owner = previous
            .map(|c| c.ownership.owner.clone())
            .filter(|o| !o.is_empty());
        let condition = match previous {
            Some(c) => Condition::Unchanged(&c.etag),
            None => Condition::Absent,
        };
        let sent = Instant::now();
        ownership.unit = unit.to_owned();
        ownership.owner = self.settings.instance_id.clone();
        ownership.expires_at_ms = now_ms() + millis(self.settings.lease);
        let written = self
            .store
            .write(&blob, to_json(&ownership), condition)
            .await;
        let etag = match written {
            Ok(Some(etag)) => etag,
            Ok(None) => {
                tracing::debug!(source = %self.source, unit = %unit, "another instance claimed the unit first; planning again next round");
                self.cache.remove(unit);
                return;
            }
            Err(e) => {
                tracing::warn!(source = %self.source, unit = %unit, error = %e, "cannot claim the unit; trying again next round");
                return;
            }
        };
        self.cache.insert(
            unit.to_owned(),
            Cached {
                listed_etag: normalize_etag(&etag),
                ownership: ownership.clone(),
                etag: etag.clone(),
            },
        );
        // Held from here: a failed raise below gives the unit back through `release`, which
        // needs the claim's ETag.
        self.held.insert(
            unit.to_owned(),
            Held {
                etag,
                deadline: self.deadline(sent),
                last_write: sent,
                checkpoint_at: sent,
                checkpoint_at_ms: ownership.checkpoint_at_ms,
                mirrored: ownership.blobs.clone(),
            },
        );
        let raised = match self.raise(unit, &ownership.blobs).await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(source = %self.source, unit = %unit, error = %e, "cannot raise the registry to the unit's mirrored checkpoint; giving the unit back");
                self.release(unit, None, "its checkpoint could not be applied")
                    .await;
                return;
            }
        };
        // Nobody mirrored a checkpoint: nobody may have listed its older hours either (claimed
        // after this instance's first poll, or its owner died before mirroring).
        if ownership.checkpoint_at_ms == 0 {
            self.units.insert_unread(unit);
        } else {
            self.units.insert(unit);
        }
        self.counts.claims.fetch_add(1, Ordering::Relaxed);
        let checkpoint_age_s = (ownership.checkpoint_at_ms > 0)
            .then(|| (now_ms() - ownership.checkpoint_at_ms) / 1000);
        tracing::info!(
            source = %self.source,
            unit = %unit,
            owner = %self.me(),
            previous_owner = %previous_owner.as_deref().unwrap_or("none"),
            mirrored_blobs = ownership.blobs.len(),
            raised_entries = raised,
            checkpoint_age_s,
            "unit claimed; reading it from its mirrored checkpoint from the next poll on"
        );
    }

    /// Raises this instance's registry entries of `unit` to the mirrored offsets; never lowers
    /// one. Returns how many entries it raised or created.
    async fn raise(
        &self,
        unit: &str,
        blobs: &BTreeMap<String, MirroredBlob>,
    ) -> Result<usize, ClusterError> {
        let Some(resource) = unit
            .strip_prefix(&self.store.container)
            .and_then(|r| r.strip_prefix('/'))
        else {
            return Ok(0);
        };
        let registry = self.registry.clone();
        let source = self.source.clone();
        let entries: Vec<(String, MirroredBlob)> = blobs
            .iter()
            .map(|(rel, m)| (format!("{resource}{rel}"), m.clone()))
            .collect();
        tokio::task::spawn_blocking(move || {
            let now = now_ms();
            let mut count = 0;
            for (blob, m) in entries {
                let mut higher = false;
                registry
                    .update(&source, &blob, |current| {
                        let entry = raised(current, &m, now);
                        higher = entry.is_some();
                        entry
                    })
                    .map_err(|e| ClusterError::Registry(e.to_string()))?;
                if higher {
                    count += 1;
                }
            }
            Ok(count)
        })
        .await
        .map_err(|e| ClusterError::Registry(e.to_string()))?
    }

    /// Renews a held claim when due, with the checkpoint when it changed and is due.
    async fn renew(&mut self, unit: &str, checkpoint: Option<BTreeMap<String, MirroredBlob>>) {
        let Some(held) = self.held.get(unit) else {
            return;
        };
        let round = self.settings.round();
        let checkpoint = checkpoint.unwrap_or_default();
        let checkpoint_due = checkpoint != held.mirrored
            && held.checkpoint_at.elapsed() + round / 2 >= self.settings.checkpoint;
        let renew_due = held.last_write.elapsed() + round / 2 >= self.settings.renew;
        if !checkpoint_due && !renew_due {
            return;
        }
        let now = now_ms();
        let (blobs, checkpoint_at_ms) = if checkpoint_due {
            (checkpoint, now)
        } else {
            (held.mirrored.clone(), held.checkpoint_at_ms)
        };
        let ownership = Ownership {
            unit: unit.to_owned(),
            owner: self.settings.instance_id.clone(),
            expires_at_ms: now + millis(self.settings.lease),
            checkpoint_at_ms,
            blobs,
        };
        let sent = Instant::now();
        let etag = held.etag.clone();
        match self
            .store
            .write(
                &Store::unit_blob(unit),
                to_json(&ownership),
                Condition::Unchanged(&etag),
            )
            .await
        {
            Ok(Some(etag)) => {
                self.cache.insert(
                    unit.to_owned(),
                    Cached {
                        listed_etag: normalize_etag(&etag),
                        ownership: ownership.clone(),
                        etag: etag.clone(),
                    },
                );
                let deadline = self.deadline(sent);
                if let Some(held) = self.held.get_mut(unit) {
                    held.etag = etag;
                    held.deadline = deadline;
                    held.last_write = sent;
                    if checkpoint_due {
                        held.checkpoint_at = sent;
                        held.checkpoint_at_ms = checkpoint_at_ms;
                        held.mirrored = ownership.blobs;
                    }
                }
            }
            Ok(None) => {
                self.counts.losses.fetch_add(1, Ordering::Relaxed);
                self.held.remove(unit);
                self.units.remove(unit);
                self.cache.remove(unit);
                tracing::warn!(source = %self.source, unit = %unit, owner = %self.me(), "claim lost to another instance (the ownership blob changed under it); stopped reading the unit, the new owner goes on from the mirrored checkpoint");
            }
            Err(e) => {
                tracing::warn!(source = %self.source, unit = %unit, error = %e, "cannot renew the claim; retrying next round (reading stops if it runs out first)");
            }
        }
    }

    /// Stops reading `unit` and gives its claim back with the latest checkpoint, so that
    /// another instance can claim it at once.
    async fn release(
        &mut self,
        unit: &str,
        checkpoint: Option<BTreeMap<String, MirroredBlob>>,
        why: &str,
    ) {
        self.units.remove(unit);
        let Some(held) = self.held.remove(unit) else {
            return;
        };
        let (blobs, checkpoint_at_ms) = match checkpoint {
            Some(c) => (c, now_ms()),
            None => (held.mirrored, held.checkpoint_at_ms),
        };
        let ownership = Ownership {
            unit: unit.to_owned(),
            owner: String::new(),
            expires_at_ms: 0,
            checkpoint_at_ms,
            blobs,
        };
        match self
            .store
            .write(
                &Store::unit_blob(unit),
                to_json(&ownership),
                Condition::Unchanged(&held.etag),
            )
            .await
        {
            Ok(Some(_)) => {
                tracing::info!(source = %self.source, unit = %unit, owner = %self.me(), reason = why, "unit released with its checkpoint; a free instance claims it next")
            }
            Ok(None) => {
                tracing::warn!(source = %self.source, unit = %unit, owner = %self.me(), "claim had already been lost to another instance when releasing it")
            }
            Err(e) => {
                tracing::warn!(source = %self.source, unit = %unit, error = %e, "cannot release the claim; others can claim the unit once it runs out")
            }
        }
        self.cache.remove(unit);
    }

    /// Releases every held unit with its latest checkpoint (shutdown, end of `once`).
    async fn release_all(&mut self) {
        let checkpoints = if self.held.is_empty() {
            BTreeMap::new()
        } else {
            self.checkpoints().await.unwrap_or_else(|e| {
                tracing::warn!(source = %self.source, error = %e, "cannot read committed offsets to mirror; releasing with the previous checkpoint");
                BTreeMap::new()
            })
        };
        let units: Vec<String> = self.held.keys().cloned().collect();
        let mut checkpoints = checkpoints;
        for unit in units {
            let checkpoint = checkpoints.remove(&unit);
            self.release(&unit, checkpoint, "this instance is stopping")
                .await;
        }
        self.store.delete_presence(&self.settings.instance_id).await;
    }
}

/// What a new owner needs of a registry entry: what it would list anyway (the current and
/// previous hour) and what is still unfinished; older finished blobs are never listed again.
fn mirrored(blob: &str, entry: &BlobEntry, now_hour: i64) -> Option<MirroredBlob> {
    let wanted = match entry.state {
        BlobState::Active => true,
        BlobState::Finished => blob_hour(blob).is_some_and(|h| h >= now_hour - 2),
        BlobState::Gone | BlobState::Rewritten => false,
    };
    wanted.then(|| MirroredBlob {
        offset: entry.offset,
        length: entry.length_seen,
        etag: entry.etag.clone(),
        last_modified: entry.last_modified,
        head_len: entry.head_len,
        finished: entry.state == BlobState::Finished,
    })
}

/// The entry a claiming instance stores for a mirrored blob: the mirrored progress when it is
/// further than what this registry has, else `None` (no change). Never lowers an offset, and
/// leaves a rewritten blob's entry alone (its old documents are being replaced).
fn raised(current: Option<&BlobEntry>, m: &MirroredBlob, now: i64) -> Option<BlobEntry> {
    let higher = current.is_none_or(|c| c.offset < m.offset && c.state != BlobState::Rewritten);
    higher.then(|| {
        let mut entry = BlobEntry::new(m.offset, m.length, &m.etag, m.last_modified, now);
        entry.head_len = m.head_len;
        if m.finished {
            entry.state = BlobState::Finished;
        }
        entry
    })
}

/// Shared ownership for every source of an instance: one coordinator per source, run as one
/// background task.
pub struct Cluster {
    coordinators: Vec<Arc<tokio::sync::Mutex<Coordinator>>>,
    settings: ClusterSettings,
    /// What `/metrics` reads, per source, without waiting for a round's lock.
    observed: Vec<Observed>,
}

/// The parts of a coordinator `/metrics` reads.
#[derive(Clone)]
struct Observed {
    source: String,
    store: Store,
    units: OwnedUnits,
    counts: Arc<Counts>,
}

impl Cluster {
    /// Builds the coordination clients (no request yet). `sources` are (source name, its
    /// storage config, the set its walker reads).
    pub fn new(
        settings: ClusterSettings,
        sources: Vec<(String, StorageConfig, OwnedUnits)>,
        registry: &Registry,
    ) -> Result<Cluster, StorageError> {
        let mut coordinators = Vec::new();
        let mut observed = Vec::new();
        for (source, storage, units) in sources {
            let store = coordination_store(&storage, &settings.coordination_container)?;
            let counts = Arc::new(Counts::default());
            observed.push(Observed {
                source: source.clone(),
                store: store.clone(),
                units: units.clone(),
                counts: counts.clone(),
            });
            coordinators.push(Arc::new(tokio::sync::Mutex::new(Coordinator {
                source,
                store,
                registry: registry.clone(),
                units,
                settings: settings.clone(),
                greedy: false,
                held: BTreeMap::new(),
                cache: BTreeMap::new(),
                last_presence: None,
                counts,
            })));
        }
        Ok(Cluster {
            coordinators,
            settings,
            observed,
        })
    }

    /// Creates the coordination containers where missing and runs a first round. Failures are
    /// logged: the rounds that follow try again.
    pub async fn start(&self) {
        for c in &self.coordinators {
            let mut c = c.lock().await;
            if let Err(e) = c.store.ensure_container().await {
                tracing::warn!(source = %c.source, error = %e, "cannot create the coordination container (needs write access to the storage account); retrying with each round");
            }
            c.round().await;
        }
        tracing::info!(
            instance_id = %self.settings.instance_id,
            container = %self.settings.coordination_container,
            lease_s = self.settings.lease.as_secs_f64(),
            "shared ownership: reading only the units this instance claims"
        );
    }

    /// Runs a round every `min(renew_interval, checkpoint_interval)` until `stop`.
    pub fn spawn(&self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let coordinators = self.coordinators.clone();
        let every = self.settings.round();
        tokio::spawn(async move {
            let mut next = tokio::time::Instant::now() + every;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(next) => {}
                    _ = stop.cancelled() => return,
                }
                for c in &coordinators {
                    // A round in progress when `stop` fires finishes first: a write on its way
                    // must not be abandoned half-known.
                    c.lock().await.round().await;
                }
                next += every;
                if next < tokio::time::Instant::now() {
                    next = tokio::time::Instant::now() + every;
                }
            }
        })
    }

    /// `flowlogd once`: claim every free unit rather than a fair share (a pass is short, and
    /// every unit is released with its checkpoint at its end).
    pub async fn claim_all_free(&self) {
        for c in &self.coordinators {
            c.lock().await.greedy = true;
        }
    }

    /// What `/metrics` shows of shared ownership, readable at any time.
    pub fn counts(&self) -> crate::metrics::ClusterCounts {
        let observed = self.observed.clone();
        crate::metrics::ClusterCounts(Box::new(move || {
            observed
                .iter()
                .map(|o| crate::metrics::ClusterSample {
                    source: o.source.clone(),
                    units_owned: o.units.owned().len() as u64,
                    claims: o.counts.claims.load(Ordering::Relaxed),
                    losses: o.counts.losses.load(Ordering::Relaxed),
                    requests: o.store.requests(),
                })
                .collect()
        }))
    }

    /// Releases every held unit with its latest checkpoint.
    pub async fn release_all(&self) {
        for c in &self.coordinators {
            c.lock().await.release_all().await;
        }
    }
}

/// A client of the coordination container in the account of `storage`, with its credentials.
fn coordination_store(storage: &StorageConfig, container: &str) -> Result<Store, StorageError> {
    let mut coordination = storage.clone();
    coordination.container = container.to_owned();
    Ok(Store {
        client: StorageClient::from_config(&coordination, Arc::new(StorageStats::default()))?,
        container: storage.container.clone(),
        requests: Arc::default(),
    })
}

/// One line of `flowlogd cluster status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusLine {
    pub source: String,
    pub unit: String,
    /// `None` when released or expired.
    pub owner: Option<String>,
    /// Milliseconds until the claim expires (negative: expired that long ago).
    pub lease_left_ms: i64,
    /// Age of the mirrored checkpoint, `None` when there is none yet.
    pub checkpoint_age_ms: Option<i64>,
    /// Bytes of the unit's unfinished blobs beyond their mirrored offsets (one properties
    /// request per unfinished blob); `None` if a request failed.
    pub lag_bytes: Option<u64>,
}

/// Reads the ownership blobs of every source (storage only: no registry, no engine).
pub async fn status(config: &Config) -> Result<Vec<StatusLine>, ClusterError> {
    let Some(container) = &config.cluster.coordination_container else {
        return Ok(Vec::new());
    };
    let mut lines = Vec::new();
    for source in &config.sources {
        let storage = source.storage();
        let store = coordination_store(&storage, container)?;
        let flow_logs = StorageClient::from_config(&storage, Arc::new(StorageStats::default()))?;
        let listed = match store.list_units().await {
            // No instance has started yet.
            Err(StorageError::NotFound { .. }) => Vec::new(),
            other => other?,
        };
        for item in listed {
            let Some(unit) = Store::unit_of(&item.name) else {
                continue;
            };
            let Some((ownership, _)) = store.read_ownership(&item.name).await? else {
                continue;
            };
            let now = now_ms();
            let resource = unit
                .strip_prefix(&storage.container)
                .and_then(|r| r.strip_prefix('/'))
                .unwrap_or_default();
            let mut lag = Some(0u64);
            for (rel, m) in ownership.blobs.iter().filter(|(_, m)| !m.finished) {
                match flow_logs.properties(&format!("{resource}{rel}")).await {
                    Ok(Some(p)) => {
                        lag = lag.map(|l| l + p.content_length.saturating_sub(m.offset));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(unit = %unit, blob = %rel, error = %e, "cannot read a blob's length; lag unknown");
                        lag = None;
                    }
                }
            }
            lines.push(StatusLine {
                source: source.name.clone(),
                unit: unit.to_owned(),
                owner: ownership.live_owner(now).map(str::to_owned),
                lease_left_ms: ownership.expires_at_ms.saturating_sub(now),
                checkpoint_age_ms: (ownership.checkpoint_at_ms > 0)
                    .then(|| now - ownership.checkpoint_at_ms),
                lag_bytes: lag,
            });
        }
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_blob_names_round_trip_to_their_unit() {
        let unit = "insights-logs-flowlogflowevent/flowLogResourceID=/S_RG/NW_FL/";
        let blob = Store::unit_blob(unit);
        assert_eq!(
            blob,
            "units/insights-logs-flowlogflowevent/flowLogResourceID=/S_RG/NW_FL/ownership.json"
        );
        assert_eq!(Store::unit_of(&blob), Some(unit));
        assert_eq!(Store::unit_of("instances/x/vm-1"), None);
    }

    fn entry(offset: u64, state: BlobState) -> BlobEntry {
        let mut e = BlobEntry::new(offset, offset + 10, "0x1", 5, 6);
        e.state = state;
        e
    }

    fn mirror(offset: u64) -> MirroredBlob {
        MirroredBlob {
            offset,
            length: offset + 20,
            etag: "0x2".into(),
            last_modified: 7,
            head_len: Some(12),
            finished: false,
        }
    }

    #[test]
    fn a_mirrored_checkpoint_raises_or_creates_entries_and_never_lowers_one() {
        let created = raised(None, &mirror(100), 9).expect("created");
        assert_eq!(
            (
                created.offset,
                created.length_seen,
                created.etag.as_str(),
                created.head_len
            ),
            (100, 120, "0x2", Some(12))
        );
        assert_eq!(created.state, BlobState::Active);
        let up = raised(Some(&entry(50, BlobState::Active)), &mirror(100), 9).expect("raised");
        assert_eq!(up.offset, 100);
        assert_eq!(
            raised(Some(&entry(100, BlobState::Active)), &mirror(100), 9),
            None
        );
        assert_eq!(
            raised(Some(&entry(150, BlobState::Active)), &mirror(100), 9),
            None
        );
        assert_eq!(
            raised(Some(&entry(0, BlobState::Rewritten)), &mirror(100), 9),
            None,
            "a rewritten blob is being replaced from 0: the old content's offset must not return"
        );
        let finished = MirroredBlob {
            finished: true,
            ..mirror(100)
        };
        assert_eq!(
            raised(None, &finished, 9).map(|e| e.state),
            Some(BlobState::Finished)
        );
    }

    #[test]
    fn the_checkpoint_holds_unfinished_blobs_and_recent_finished_ones_only() {
        // 2026-12-01T10:00Z; blobs named by their own hour.
        let now_hour = 1_796_119_200 / 3600;
        let name = |hours_ago: i64| {
            let t = chrono::DateTime::from_timestamp((now_hour - hours_ago) * 3600, 0)
                .unwrap_or_default();
            format!(
                "flowLogResourceID=/S/FL/{}/macAddress=00/PT1H.json",
                t.format("y=%Y/m=%m/d=%d/h=%H/m=00")
            )
        };
        assert!(mirrored(&name(30), &entry(5, BlobState::Active), now_hour).is_some());
        assert!(mirrored(&name(1), &entry(5, BlobState::Finished), now_hour).is_some());
        assert!(mirrored(&name(30), &entry(5, BlobState::Finished), now_hour).is_none());
        assert!(mirrored(&name(0), &entry(5, BlobState::Gone), now_hour).is_none());
        assert!(mirrored(&name(0), &entry(5, BlobState::Rewritten), now_hour).is_none());
    }
}
