//! The status board: what each shard worker is doing, for `/status` (JSON) and `/readyz`. The
//! process is ready when every enabled mapping has made its first pass, no shard is down (a
//! checkpoint that cannot be read, a worker that panicked and waits to restart) and it is not
//! draining after SIGTERM.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

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

/// Shared by the workers (writers) and the admin server (reader). The board's lock is taken for
/// writing only when a row is added or removed; a worker updates its own [`Row`].
#[derive(Default)]
pub struct Status {
    shards: RwLock<BTreeMap<String, BTreeMap<String, Row>>>,
    /// Enabled mappings whose shards are not all running yet.
    pending_mappings: AtomicUsize,
    draining: AtomicBool,
    /// Bytes charged to the in-flight budget, as last reported.
    in_flight_bytes: AtomicU64,
}

impl Status {
    pub fn new(enabled_mappings: usize) -> Self {
        Status {
            shards: RwLock::default(),
            pending_mappings: AtomicUsize::new(enabled_mappings),
            draining: AtomicBool::new(false),
            in_flight_bytes: AtomicU64::new(0),
        }
    }

    pub fn mapping_started(&self) {
        let _ = self
            .pending_mappings
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }

    pub fn ready(&self) -> bool {
        self.not_ready_because().is_none()
    }

    /// Why `/readyz` answers 503, if it does.
    pub fn not_ready_because(&self) -> Option<String> {
        if self.draining.load(Ordering::SeqCst) {
            return Some("draining".into());
        }
        if self.pending_mappings.load(Ordering::SeqCst) > 0 {
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
        let all = self.shards.read().expect("status lock");
        let reason = self.not_ready_because();
        serde_json::json!({
            "ready": reason.is_none(),
            "not_ready_because": reason,
            "in_flight_bytes": self.in_flight_bytes.load(Ordering::Relaxed),
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
