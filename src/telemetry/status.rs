//! The status board: what each shard worker is doing, for `/status` (JSON) and `/readyz`. The
//! process is ready when every enabled mapping has made its first pass, no shard is down (a
//! checkpoint that cannot be read, a worker that panicked and waits to restart) and it is not
//! draining after SIGTERM.
//!
//! With coordination (several replicas sharing a lease table) it also shows this replica's
//! `worker_id`, each running shard's lease `owner`, and every coordinated mapping's leases as last
//! read from the table (`leases`, fed by [`super::LeaseTelemetry::table`]). In single-replica mode
//! `worker_id` and `owner` are null and `leases` is empty.
//!
//! `config` shows the config running and the last reload ([`super::ReloadTelemetry`]). A mapping a
//! reload starts is pending (not ready) until its first pass, like one started with the process;
//! one a reload stops leaves the board ([`Status::forget_mapping`]).

use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::leases::LeaseView;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardState {
    Starting,
    WaitingForParent,
    Reading,
    Dispatching,
    Retrying,
    Ended,
    /// Down: its checkpoint cannot be read, or its worker panicked and waits to be restarted.
    Failed,
}

impl ShardState {
    pub fn as_str(self) -> &'static str {
        match self {
            ShardState::Starting => "starting",
            ShardState::WaitingForParent => "waiting_for_parent",
            ShardState::Reading => "reading",
            ShardState::Dispatching => "dispatching",
            ShardState::Retrying => "retrying",
            ShardState::Ended => "ended",
            ShardState::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ShardStatus {
    pub state: ShardState,
    /// The worker id holding the shard's lease; None in single-replica mode.
    pub owner: Option<String>,
    /// The last checkpointed sequence number.
    pub checkpoint: Option<String>,
    /// Function errors of the records now being retried.
    pub retry_attempt: u32,
    pub last_error: Option<String>,
    pub millis_behind_latest: Option<i64>,
    pub buffered_records: usize,
}

impl Default for ShardStatus {
    fn default() -> Self {
        ShardStatus {
            state: ShardState::Starting,
            owner: None,
            checkpoint: None,
            retry_attempt: 0,
            last_error: None,
            millis_behind_latest: None,
            buffered_records: 0,
        }
    }
}

/// One partition's row: its worker holds it and writes it under its own lock.
pub type Row = Arc<Mutex<ShardStatus>>;

/// One lease of the `leases` view, keyed by its shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct LeaseRow {
    owner: Option<String>,
    counter: u64,
    checkpoint: String,
}

/// Shared by the workers (writers) and the admin server (reader). The board's lock is taken for
/// writing only when a row is added or removed; a worker updates its own [`Row`].
#[derive(Default)]
pub struct Status {
    shards: RwLock<BTreeMap<String, BTreeMap<String, Row>>>,
    /// Enabled mappings whose shards are not all running yet, counted ([`Status::new`]).
    pending_mappings: AtomicUsize,
    /// Enabled mappings whose shards are not all running yet, by name
    /// ([`Status::mapping_pending`]).
    pending_named: Mutex<BTreeSet<String>>,
    /// The config running and the last reload (`config`), as [`super::ReloadTelemetry`] sets it.
    config: RwLock<serde_json::Value>,
    draining: AtomicBool,
    /// Bytes charged to the in-flight budget, as last reported.
    in_flight_bytes: AtomicU64,
    /// This replica's worker id; None in single-replica mode.
    worker_id: RwLock<Option<String>>,
    /// Each coordinated mapping's leases as last read from the table, by shard.
    leases: RwLock<BTreeMap<String, BTreeMap<String, LeaseRow>>>,
}

impl Status {
    pub fn new(enabled_mappings: usize) -> Self {
        Status {
            shards: RwLock::default(),
            pending_mappings: AtomicUsize::new(enabled_mappings),
            pending_named: Mutex::default(),
            config: RwLock::new(serde_json::Value::Null),
            draining: AtomicBool::new(false),
            in_flight_bytes: AtomicU64::new(0),
            worker_id: RwLock::default(),
            leases: RwLock::default(),
        }
    }

    /// `mapping` is starting: not ready until its first pass ([`Status::mapping_started`]).
    pub fn mapping_pending(&self, mapping: &str) {
        self.pending_named
            .lock()
            .expect("status lock")
            .insert(mapping.to_string());
    }

    /// `mapping` made its first pass. One not named pending counts against [`Status::new`]'s
    /// number.
    pub fn mapping_started(&self, mapping: &str) {
        if self
            .pending_named
            .lock()
            .expect("status lock")
            .remove(mapping)
        {
            return;
        }
        let _ = self
            .pending_mappings
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }

    /// A stopped mapping leaves the board: its rows, its lease view, its pending mark.
    pub fn forget_mapping(&self, mapping: &str) {
        self.pending_named
            .lock()
            .expect("status lock")
            .remove(mapping);
        self.shards.write().expect("status lock").remove(mapping);
        self.leases.write().expect("status lock").remove(mapping);
    }

    /// Replaces the `config` section.
    pub(super) fn set_config(&self, view: serde_json::Value) {
        *self.config.write().expect("status lock") = view;
    }

    pub fn ready(&self) -> bool {
        self.not_ready_because().is_none()
    }

    /// Why `/readyz` answers 503, if it does.
    pub fn not_ready_because(&self) -> Option<String> {
        if self.draining.load(Ordering::SeqCst) {
            return Some("draining".into());
        }
        if self.pending_mappings.load(Ordering::SeqCst) > 0
            || !self.pending_named.lock().expect("status lock").is_empty()
        {
            return Some("starting".into());
        }
        let all = self.shards.read().expect("status lock");
        let down: Vec<String> = all
            .iter()
            .flat_map(|(m, shards)| {
                shards
                    .iter()
                    .filter(|(_, s)| s.lock().expect("status row").state == ShardState::Failed)
                    .map(move |(id, _)| format!("{m}/{id}"))
            })
            .collect();
        (!down.is_empty()).then(|| format!("shards down: {}", down.join(", ")))
    }

    /// SIGTERM arrived: not ready any more, whatever the shards do.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn set_in_flight_bytes(&self, bytes: u64) {
        self.in_flight_bytes.store(bytes, Ordering::Relaxed);
    }

    /// This replica's worker id (coordinated mode), shown as `worker_id`.
    pub fn set_worker_id(&self, worker_id: &str) {
        *self.worker_id.write().expect("status lock") = Some(worker_id.to_string());
    }

    /// The shard's worker runs under a lease held by `owner` (this replica's worker id).
    pub fn set_owner(&self, mapping: &str, shard: &str, owner: &str) {
        self.update(mapping, shard, |s| s.owner = Some(owner.to_string()));
    }

    /// Replaces `mapping`'s lease view (see [`super::LeaseTelemetry::table`]).
    pub(super) fn set_leases(&self, mapping: &str, leases: Vec<LeaseView>) {
        let rows = leases
            .into_iter()
            .map(|l| {
                let row = LeaseRow {
                    owner: l.owner,
                    counter: l.counter,
                    checkpoint: l.checkpoint,
                };
                (l.shard, row)
            })
            .collect();
        self.leases
            .write()
            .expect("status lock")
            .insert(mapping.to_string(), rows);
    }

    /// The checkpoint of `shard`'s lease as last read from the table, if it is in the view.
    pub(super) fn lease_checkpoint(&self, mapping: &str, shard: &str) -> Option<String> {
        let all = self.leases.read().expect("status lock");
        Some(all.get(mapping)?.get(shard)?.checkpoint.clone())
    }

    /// Changes the row of `shard` if it has one (never creates it).
    pub(super) fn update_existing(
        &self,
        mapping: &str,
        shard: &str,
        f: impl FnOnce(&mut ShardStatus),
    ) {
        let row = {
            let all = self.shards.read().expect("status lock");
            all.get(mapping).and_then(|m| m.get(shard)).cloned()
        };
        if let Some(row) = row {
            f(&mut row.lock().expect("status row"));
        }
    }

    /// Forgets a shard (an ended shard whose children run).
    pub fn remove(&self, mapping: &str, shard: &str) {
        let mut all = self.shards.write().expect("status lock");
        if let Some(shards) = all.get_mut(mapping) {
            shards.remove(shard);
        }
    }

    /// The row of `shard`, created if it has none.
    pub fn row(&self, mapping: &str, shard: &str) -> Row {
        if let Some(row) = self
            .shards
            .read()
            .expect("status lock")
            .get(mapping)
            .and_then(|m| m.get(shard))
        {
            return row.clone();
        }
        self.shards
            .write()
            .expect("status lock")
            .entry(mapping.to_string())
            .or_default()
            .entry(shard.to_string())
            .or_default()
            .clone()
    }

    pub fn update(&self, mapping: &str, shard: &str, f: impl FnOnce(&mut ShardStatus)) {
        f(&mut self.row(mapping, shard).lock().expect("status row"));
    }

    pub fn get(&self, mapping: &str, shard: &str) -> Option<ShardStatus> {
        let all = self.shards.read().expect("status lock");
        let row = all.get(mapping)?.get(shard)?;
        let copy = row.lock().expect("status row").clone();
        Some(copy)
    }

    pub fn snapshot(&self) -> serde_json::Value {
        // Before taking the board's lock: it takes it too (a read lock is not re-entrant).
        let reason = self.not_ready_because();
        let worker_id = self.worker_id.read().expect("status lock").clone();
        let leases = serde_json::to_value(&*self.leases.read().expect("status lock"))
            .unwrap_or_else(|_| serde_json::json!({}));
        let config = self.config.read().expect("status lock").clone();
        let all = self.shards.read().expect("status lock");
        serde_json::json!({
            "ready": reason.is_none(),
            "not_ready_because": reason,
            "in_flight_bytes": self.in_flight_bytes.load(Ordering::Relaxed),
            "worker_id": worker_id,
            "leases": leases,
            "config": config,
            "mappings": all
                .iter()
                .map(|(m, shards)| {
                    let rows: BTreeMap<&String, ShardStatus> = shards
                        .iter()
                        .map(|(id, row)| (id, row.lock().expect("status row").clone()))
                        .collect();
                    (m, rows)
                })
                .collect::<BTreeMap<_, _>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_replica_mode_shows_no_owner_worker_id_or_leases() {
        let status = Status::new(0);
        status.update("orders", "shardId-0", |s| s.state = ShardState::Reading);
        let snap = status.snapshot();
        assert_eq!(snap["worker_id"], serde_json::Value::Null);
        assert_eq!(snap["leases"], serde_json::json!({}));
        let row = &snap["mappings"]["orders"]["shardId-0"];
        assert_eq!(row["state"], "reading");
        assert!(row.as_object().expect("row").contains_key("owner"));
        assert_eq!(row["owner"], serde_json::Value::Null);
    }

    #[test]
    fn set_owner_makes_or_updates_the_row_and_update_existing_makes_none() {
        let status = Status::new(0);
        status.set_worker_id("w-1");
        status.set_owner("orders", "shardId-0", "w-1");
        assert_eq!(
            status.get("orders", "shardId-0").and_then(|r| r.owner),
            Some("w-1".to_string())
        );
        status.update_existing("orders", "shardId-7", |s| s.owner = None);
        assert!(status.get("orders", "shardId-7").is_none());
        assert_eq!(status.snapshot()["worker_id"], "w-1");
    }

    #[test]
    fn a_mapping_started_by_name_is_pending_until_its_first_pass_and_forgotten_leaves() {
        let status = Status::new(1);
        status.mapping_pending("added");
        status.mapping_started("orders");
        assert_eq!(status.not_ready_because().as_deref(), Some("starting"));
        status.mapping_started("added");
        assert!(status.ready());
        status.mapping_pending("later");
        status.update("later", "queue", |s| s.state = ShardState::Failed);
        status.forget_mapping("later");
        assert!(status.ready(), "{:?}", status.not_ready_because());
        assert!(status.snapshot()["mappings"].get("later").is_none());
    }
}
