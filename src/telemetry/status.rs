//! The status board: what each shard worker is doing, for `/status` (JSON) and `/readyz`.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::RwLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardState {
    Starting,
    WaitingForParent,
    Reading,
    Dispatching,
    Retrying,
    Ended,
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

/// Shared by the workers (writers) and the admin server (reader).
#[derive(Default)]
pub struct Status {
    shards: RwLock<BTreeMap<String, BTreeMap<String, ShardStatus>>>,
    /// Enabled mappings whose shards are not all running yet.
    pending_mappings: AtomicUsize,
}

impl Status {
    pub fn new(enabled_mappings: usize) -> Self {
        Status {
            shards: RwLock::default(),
            pending_mappings: AtomicUsize::new(enabled_mappings),
        }
    }

    pub fn mapping_started(&self) {
        let _ = self
            .pending_mappings
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }

    pub fn ready(&self) -> bool {
        self.pending_mappings.load(Ordering::SeqCst) == 0
    }

    pub fn update(&self, mapping: &str, shard: &str, f: impl FnOnce(&mut ShardStatus)) {
        let mut all = self.shards.write().expect("status lock");
        f(all
            .entry(mapping.to_string())
            .or_default()
            .entry(shard.to_string())
            .or_default());
    }

    pub fn get(&self, mapping: &str, shard: &str) -> Option<ShardStatus> {
        self.shards
            .read()
            .expect("status lock")
            .get(mapping)?
            .get(shard)
            .cloned()
    }

    pub fn snapshot(&self) -> serde_json::Value {
        let all = self.shards.read().expect("status lock");
        serde_json::json!({ "ready": self.ready(), "mappings": &*all })
    }
}
