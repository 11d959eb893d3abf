//! Several replicas through the DynamoDB lease table: the [`Coordinator`] is this replica's member
//! of the fleet, KCL's protocol with the fixes KCL users ask for. Per stream mapping it keeps the
//! leases this replica holds and two tasks ([`super::pass`]): a *taker* that scans the mapping's
//! lease items every scan interval — creating items for new shards, taking free and expired leases
//! and stealing to balance ([`super::balance`]), releasing ended ones and cleaning up ended parents
//! once their children run — and a *renewer* that renews every held lease three times per lease
//! duration.
//!
//! Fencing (DESIGN.md invariant 7): every write is conditional on the `leaseCounter` last observed and
//! on being the owner. A grant is usable only until a little short of the instant another replica
//! could see it expire, counted from the *send* time of the last renewal that succeeded, so a replica
//! cut off from the table or paused stops dispatching on its own clock before anyone may take its
//! shards ([`super::Held::until`]). A stolen lease is used only after one lease duration, the most
//! its previous holder can go on using it. Checkpoints live on the lease items: the coordinator is
//! also the [`CheckpointStore`] of its stream mappings, and a commit is written only under the grant
//! the worker holds, at the counter and checkpoint this replica last wrote. An open tumbling
//! window's state is written with the checkpoint (`sluiceWindow`), at most
//! [`MAX_WINDOW_STATE_BYTES_ON_LEASES`] of it.

use async_trait::async_trait;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::dynamo::{LeaseError as TableError, LeaseTable};
use super::item::{LeaseCheckpoint, LeaseItem};
use super::{Held, Lease, LeaseError, LeaseToken, Leases};
use crate::checkpoint::{
    check_window, Checkpoint, CheckpointError, CheckpointStore, Commit, CommitError,
    FileCheckpointStore, Verdict, WindowState,
};
use crate::model::Partition;
use crate::telemetry::{LeaseTelemetry, LossReason};

/// The most tumbling window state kept on a lease item: DynamoDB items hold at most 400 KB, and
/// the state is stored as JSON beside the lease's own attributes.
pub const MAX_WINDOW_STATE_BYTES_ON_LEASES: usize = 300 * 1024;

/// How this replica takes part in the fleet.
#[derive(Debug, Clone)]
pub struct Membership {
    /// `leaseOwner` on the leases this replica holds; unique per replica.
    pub worker_id: String,
    /// A lease not renewed for this long, as observed by another replica, may be taken.
    pub lease_duration: Duration,
    /// How often each mapping's lease items are scanned.
    pub scan_interval: Duration,
}

impl Membership {
    /// How often held leases are renewed: three times per lease duration.
    pub fn renew_interval(&self) -> Duration {
        self.lease_duration / 3
    }

    /// How long a renewal (counted from its send time) keeps a grant usable: a fifth short of the
    /// lease duration, the margin for scheduling delays and clock-rate differences between replicas.
    pub fn grant_span(&self) -> Duration {
        self.lease_duration * 4 / 5
    }
}

/// This replica's member of the fleet (see the module docs).
pub struct Coordinator {
    pub(super) table: LeaseTable,
    pub(super) member: Membership,
    pub(super) mappings: Mutex<HashMap<String, Arc<MappingLeases>>>,
    /// Fires at shutdown: nothing more is taken.
    pub(super) shutdown: CancellationToken,
    /// Fires once every worker stopped: the renewers end.
    pub(super) stopped: CancellationToken,
}

/// One lease this replica holds.
pub(super) struct Grant {
    /// The item as this replica last wrote or read it under the grant; its lock orders this lease's
    /// renewals and checkpoints.
    pub item: tokio::sync::Mutex<LeaseItem>,
    /// The counter the lease was taken at: tokens below it belong to an earlier grant.
    pub taken_at: u64,
    pub state: watch::Sender<Option<Held>>,
    /// Not handed to a worker before this instant: a stolen lease waits for its previous holder
    /// to hand it over, or for the most that holder may still use it.
    pub usable_from: Mutex<Instant>,
}

impl Grant {
    pub fn is_usable(&self, now: Instant) -> bool {
        *lock(&self.usable_from) <= now
    }

    pub fn is_lost(&self) -> bool {
        let now = Instant::now();
        self.state
            .borrow()
            .as_ref()
            .is_none_or(|h| h.until.is_some_and(|u| now >= u))
    }
}

/// A lease's owner and counter, and when this replica first saw them so: its expiry clock.
pub(super) struct Sighting {
    pub owner: Option<String>,
    pub counter: u64,
    pub since: Instant,
}

/// What the coordinator keeps per mapping.
pub(super) struct MappingLeases {
    pub name: String,
    /// Where a new lease starts (its `checkpoint` sentinel).
    pub start: LeaseCheckpoint,
    pub telemetry: Arc<LeaseTelemetry>,
    pub held: Mutex<HashMap<String, Arc<Grant>>>,
    /// The shards the stream listed at the supervisor's last pass (`None` before the first).
    pub listed: Mutex<Option<Vec<Partition>>>,
    /// Per lease: its owner and counter, and when this replica first saw that pair.
    pub seen: Mutex<HashMap<String, Sighting>>,
    /// The items as last scanned.
    pub items: Mutex<Option<HashMap<String, LeaseItem>>>,
    /// The supervisor re-plans when this fires: leases gained or lost, parents ended.
    pub changed: Notify,
    /// Wakes the taker for a pass now.
    pub kick: Notify,
    /// Fires when the mapping stops (a config reload, [`Coordinator::retire`]): its taker ends.
    pub retired: CancellationToken,
    /// Fires when the mapping is forgotten ([`Coordinator::forget`]): its renewer ends.
    pub forgotten: CancellationToken,
    /// The taker's task, awaited by [`Coordinator::forget`].
    pub taker: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl MappingLeases {
    pub fn grant(&self, shard: &str) -> Option<Arc<Grant>> {
        lock(&self.held).get(shard).cloned()
    }

    /// Marks `grant` lost (if it still is the one held for `shard`) and says why.
    pub fn lose(
        &self,
        shard: &str,
        grant: &Arc<Grant>,
        reason: LossReason,
        now: Option<&str>,
        why: &str,
    ) {
        grant.state.send_replace(None);
        let mut held = lock(&self.held);
        if held.get(shard).is_some_and(|g| Arc::ptr_eq(g, grant)) {
            held.remove(shard);
            self.telemetry.held(held.len());
            drop(held);
            self.telemetry.lost(shard, reason, now, why);
            self.changed.notify_one();
        }
    }
}

impl Coordinator {
    /// Joins the fleet on `table` (created on demand). `shutdown` stops the taking of leases;
    /// [`Coordinator::stop`] ends the renewals and releases what is still held.
    pub async fn start(
        table: LeaseTable,
        member: Membership,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, TableError> {
        table.ensure().await?;
        Ok(Arc::new(Coordinator {
            table,
            member,
            mappings: Mutex::new(HashMap::new()),
            shutdown,
            stopped: CancellationToken::new(),
        }))
    }

    pub fn worker_id(&self) -> &str {
        &self.member.worker_id
    }

    /// Registers a stream mapping and starts its taker and renewer; the returned [`Leases`] is its
    /// supervisor's. New leases start at `start`.
    pub fn mapping(
        self: &Arc<Self>,
        name: &str,
        start: LeaseCheckpoint,
        telemetry: Arc<LeaseTelemetry>,
    ) -> Arc<dyn Leases> {
        let m = Arc::new(MappingLeases {
            name: name.to_string(),
            start,
            telemetry,
            held: Mutex::new(HashMap::new()),
            listed: Mutex::new(None),
            seen: Mutex::new(HashMap::new()),
            items: Mutex::new(None),
            changed: Notify::new(),
            kick: Notify::new(),
            retired: CancellationToken::new(),
            forgotten: CancellationToken::new(),
            taker: Mutex::new(None),
        });
        lock(&self.mappings).insert(name.to_string(), m.clone());
        let taker = tokio::spawn(super::pass::taker(self.clone(), m.clone()));
        *lock(&m.taker) = Some(taker);
        tokio::spawn(super::pass::renewer(self.clone(), m));
        Arc::new(MappingHandle {
            coordinator: self.clone(),
        })
    }

    /// `grant` turned out taken (`now`: the item as it is) or gone. If it was stolen with a
    /// handoff, this replica clears `checkpointOwner` once its worker has let the lease go (every
    /// [`Lease`] of the grant dropped), so the new owner starts at once; a worker still busy after
    /// a lease duration is left to the new owner's own limit.
    pub(super) fn lose(
        &self,
        m: &MappingLeases,
        shard: &str,
        grant: &Arc<Grant>,
        now: Option<&LeaseItem>,
        why: &str,
    ) {
        let (reason, owner) = match now {
            Some(now) => (LossReason::Taken, now.owner.as_deref()),
            None => (LossReason::Gone, None),
        };
        m.lose(shard, grant, reason, owner, why);
        let me = self.member.worker_id.clone();
        if now.and_then(|n| n.checkpoint_owner.as_deref()) != Some(me.as_str()) {
            return;
        }
        let (table, grant, limit) = (
            self.table.clone(),
            grant.clone(),
            self.member.lease_duration,
        );
        let (mapping, shard) = (m.name.clone(), shard.to_string());
        tokio::spawn(async move {
            if tokio::time::timeout(limit, grant.state.closed())
                .await
                .is_err()
            {
                return;
            }
            if let Err(e) = table.handoff_done(&mapping, &shard, &me).await {
                tracing::warn!(mapping, shard, error = %e, "cannot finish the handoff; the new owner starts once the lease duration is over");
            }
        });
    }

    pub(super) fn of(&self, mapping: &str) -> Option<Arc<MappingLeases>> {
        lock(&self.mappings).get(mapping).cloned()
    }

    /// After every worker stopped: ends the renewals and releases every lease still held, so the
    /// other replicas take them at once.
    pub async fn stop(&self) {
        self.stopped.cancel();
        let all: Vec<Arc<MappingLeases>> = lock(&self.mappings).values().cloned().collect();
        for m in all {
            let shards: Vec<String> = lock(&m.held).keys().cloned().collect();
            for shard in shards {
                self.release_one(&m, &shard).await;
            }
        }
    }

    /// A mapping is stopping (a config reload): it takes no more leases; the ones it holds are
    /// still renewed while its workers finish.
    pub fn retire(&self, mapping: &str) {
        if let Some(m) = self.of(mapping) {
            m.retired.cancel();
        }
    }

    /// A mapping stopped for good or to restart (a config reload), after its workers stopped: its
    /// taker (once its pass in progress is over) and renewer end and every lease it still holds is
    /// released, so other replicas (or its next start) take them at once.
    pub async fn forget(&self, mapping: &str) {
        let Some(m) = self.of(mapping) else {
            return;
        };
        m.retired.cancel();
        let taker = lock(&m.taker).take();
        if let Some(taker) = taker {
            let _ = taker.await;
        }
        lock(&self.mappings).remove(mapping);
        m.forgotten.cancel();
        let shards: Vec<String> = lock(&m.held).keys().cloned().collect();
        for shard in shards {
            self.release_one(&m, &shard).await;
        }
    }

    /// Gives `shard`'s lease up: no owner, counter + 1. A lease that moved on meanwhile is simply
    /// not ours any more.
    pub(super) async fn release_one(&self, m: &MappingLeases, shard: &str) {
        let Some(grant) = lock(&m.held).remove(shard) else {
            return;
        };
        m.telemetry.held(lock(&m.held).len());
        let item = grant.item.lock().await;
        grant.state.send_replace(None);
        match self.table.release(&item, &self.member.worker_id).await {
            Ok(_) => m.telemetry.released(shard),
            Err(e) => {
                tracing::warn!(mapping = %m.name, shard, error = %e, "cannot release the lease; it is free once it expires")
            }
        }
    }

    /// Moves `mapping`'s progress from the embedded store into the lease table, once: each shard's
    /// checkpoint becomes a free lease at that checkpoint unless the table has a lease for the shard
    /// already, and the mapping's first start is carried over. The store is then marked imported,
    /// so a later start never brings back a lease the table has since moved on or cleaned up.
    /// Returns how many leases were created.
    pub async fn import(
        &self,
        file: &FileCheckpointStore,
        mapping: &str,
        table: &str,
    ) -> Result<usize, String> {
        if file.imported(mapping) {
            return Ok(0);
        }
        let mut created = 0;
        for (shard, checkpoint) in file.list(mapping).await.map_err(|e| e.to_string())? {
            let item = LeaseItem::new(
                mapping,
                &shard,
                Vec::new(),
                LeaseCheckpoint::from(&checkpoint),
            );
            if self.table.create(&item).await.map_err(|e| e.to_string())? {
                created += 1;
            }
        }
        if let Some(ms) = file
            .mapping_start(mapping)
            .await
            .map_err(|e| e.to_string())?
        {
            self.table
                .set_mapping_start(mapping, ms)
                .await
                .map_err(|e| e.to_string())?;
        }
        file.mark_imported(mapping, table)
            .await
            .map_err(|e| e.to_string())?;
        Ok(created)
    }
}

/// A mapping's view of the coordinator: its [`Leases`].
struct MappingHandle {
    coordinator: Arc<Coordinator>,
}

#[async_trait]
impl Leases for MappingHandle {
    async fn held(&self, mapping: &str, listed: &[Partition]) -> Result<Vec<Lease>, LeaseError> {
        let m = self
            .coordinator
            .of(mapping)
            .ok_or_else(|| LeaseError(format!("mapping {mapping} is not registered")))?;
        let first = lock(&m.listed).replace(listed.to_vec()).is_none();
        if first {
            m.kick.notify_one();
        }
        let ids: HashSet<&str> = listed.iter().map(|p| p.id.as_str()).collect();
        let now = Instant::now();
        let held = lock(&m.held)
            .iter()
            .filter(|(shard, g)| ids.contains(shard.as_str()) && g.is_usable(now))
            .filter(|(_, g)| !g.is_lost())
            .map(|(shard, g)| Lease::new(shard.clone(), g.state.subscribe()))
            .collect();
        Ok(held)
    }

    async fn release(&self, mapping: &str, partition: &str) -> Result<(), LeaseError> {
        if let Some(m) = self.coordinator.of(mapping) {
            self.coordinator.release_one(&m, partition).await;
        }
        Ok(())
    }

    async fn changed(&self, mapping: &str) {
        match self.coordinator.of(mapping) {
            Some(m) => m.changed.notified().await,
            None => std::future::pending().await,
        }
    }
}

fn store_error(e: TableError) -> CheckpointError {
    CheckpointError(e.to_string())
}

#[async_trait]
impl CheckpointStore for Coordinator {
    /// A held lease's checkpoint as this replica last wrote it; any other as last scanned (read
    /// from the table if not scanned yet).
    async fn get(&self, mapping: &str, shard: &str) -> Result<Option<Checkpoint>, CheckpointError> {
        let m = self
            .of(mapping)
            .ok_or_else(|| CheckpointError(format!("mapping {mapping} is not registered")))?;
        if let Some(grant) = m.grant(shard) {
            return Ok(grant.item.lock().await.checkpoint.committed());
        }
        let scanned = lock(&m.items)
            .as_ref()
            .map(|items| items.get(shard).map(|i| i.checkpoint.committed()));
        match scanned {
            Some(cp) => Ok(cp.flatten()),
            None => Ok(self
                .table
                .get(mapping, shard)
                .await
                .map_err(store_error)?
                .and_then(|i| i.checkpoint.committed())),
        }
    }

    async fn commit(
        &self,
        mapping: &str,
        shard: &str,
        commit: Commit<'_>,
    ) -> Result<(), CommitError> {
        self.commit_window(mapping, shard, commit, None).await
    }

    /// A held lease's window state as this replica last wrote it, else as stored in the table.
    async fn window(
        &self,
        mapping: &str,
        shard: &str,
    ) -> Result<Option<(Checkpoint, WindowState)>, CheckpointError> {
        let m = self
            .of(mapping)
            .ok_or_else(|| CheckpointError(format!("mapping {mapping} is not registered")))?;
        let item = match m.grant(shard) {
            Some(grant) => Some(grant.item.lock().await.clone()),
            None => self.table.get(mapping, shard).await.map_err(store_error)?,
        };
        Ok(item.and_then(|i| Some((i.checkpoint.committed()?, i.window?))))
    }

    /// A lease item holds at most 400 KB (DynamoDB's limit), the lease's own attributes included.
    fn max_window_state_bytes(&self) -> usize {
        MAX_WINDOW_STATE_BYTES_ON_LEASES
    }

    async fn commit_window(
        &self,
        mapping: &str,
        shard: &str,
        commit: Commit<'_>,
        window: Option<&WindowState>,
    ) -> Result<(), CommitError> {
        let me = self.member.worker_id.as_str();
        let m = self.of(mapping).ok_or(CommitError::LeaseLost)?;
        let grant = m.grant(shard).ok_or(CommitError::LeaseLost)?;
        let mut item = grant.item.lock().await;
        if grant.is_lost() {
            return Err(CommitError::LeaseLost);
        }
        let current = LeaseToken::new(me, item.counter);
        if commit.lease.owner != me || commit.lease.counter < grant.taken_at {
            return Err(CommitError::Fenced {
                presented: commit.lease.clone(),
                newest: current,
            });
        }
        let stored = item.checkpoint.committed();
        let verdict = check_window(stored.as_ref(), item.window.as_ref(), None, &commit, window)?;
        if verdict == Verdict::AlreadyThere {
            return Ok(());
        }
        let to = LeaseCheckpoint::from(commit.to);
        // Bounded like a renewal, which waits for this write's lock.
        let write = self.table.checkpoint_window(&item, me, &to, window);
        let written = tokio::time::timeout(self.member.renew_interval(), write)
            .await
            .unwrap_or_else(|_| {
                Err(TableError::Table(format!(
                    "checkpoint write: no answer within {} ms",
                    self.member.renew_interval().as_millis()
                )))
            });
        match written {
            Ok(written) => {
                *item = written;
                if to == LeaseCheckpoint::ShardEnd {
                    // Its children may start; the taker releases the ended lease.
                    m.kick.notify_one();
                }
                Ok(())
            }
            Err(TableError::Conflict(Some(now))) if now.owner.as_deref() == Some(me) => {
                let landed = now.counter == item.counter
                    && now.checkpoint == to
                    && now.window.as_ref() == window;
                *item = *now;
                if landed {
                    // An earlier attempt of this commit landed after all.
                    Ok(())
                } else {
                    // Still ours, but moved by someone else (an operator's tool): check again.
                    Err(CommitError::Store(CheckpointError(
                        "the lease item changed under this replica; checking again".into(),
                    )))
                }
            }
            Err(TableError::Conflict(now)) => {
                drop(item);
                self.lose(
                    &m,
                    shard,
                    &grant,
                    now.as_deref(),
                    "found at a checkpoint write",
                );
                // Taken over (a steal, or an expiry seen elsewhere) or gone: the lease is lost,
                // which stops the worker quietly; the shard is another replica's now.
                Err(CommitError::LeaseLost)
            }
            Err(e @ TableError::Table(_)) => Err(CommitError::Store(store_error(e))),
        }
    }

    async fn mapping_start(&self, mapping: &str) -> Result<Option<i64>, CheckpointError> {
        self.table.mapping_start(mapping).await.map_err(store_error)
    }

    async fn set_mapping_start(&self, mapping: &str, epoch_ms: i64) -> Result<(), CheckpointError> {
        self.table
            .set_mapping_start(mapping, epoch_ms)
            .await
            .map(|_| ())
            .map_err(store_error)
    }
}
