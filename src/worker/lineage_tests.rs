//! The supervisor's shard lineage against an in-memory stream: a parent with one child (the
//! DynamoDB Streams shape), and a graph with a gap (a parent no longer listed).

use async_trait::async_trait;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{supervisor, Clock, MappingContext};
use crate::checkpoint::{Checkpoint, CheckpointError, CheckpointStore};
use crate::config::{ErrorHandling, Mapping, SourceArn, StartingPosition, Target};
use crate::dispatch::{DispatchError, Dispatcher, Invoked};
use crate::retry::RetryPolicy;
use crate::source::{
    Page, Record, SequenceNumber, ShardInfo, ShardReader, SourceError, StartFrom, StreamSource,
};
use crate::telemetry::{Metrics, Status};

/// Shards with fixed records; closed shards end after their records, open ones idle forever.
struct FakeStream {
    shards: Vec<ShardInfo>,
    records: HashMap<String, Vec<u64>>,
    opened: Mutex<Vec<(String, StartFrom)>>,
}

struct FakeShard {
    records: Vec<u64>,
    closed: bool,
    done: bool,
}

#[async_trait]
impl ShardReader for FakeShard {
    fn next_read_at(&self) -> Instant {
        if self.done {
            Instant::now() + Duration::from_millis(100)
        } else {
            Instant::now()
        }
    }
    async fn read(&mut self) -> Result<Page, SourceError> {
        if self.done {
            return Ok(if self.closed {
                Page::ShardEnd
            } else {
                Page::Records {
                    records: vec![],
                    caught_up: true,
                    millis_behind: None,
                }
            });
        }
        self.done = true;
        let records = self
            .records
            .iter()
            .map(|i| Record {
                sequence: SequenceNumber(i.to_string()),
                arrival_ms: 0,
                event: format!("{{\"id\":{i}}}").into_bytes(),
            })
            .collect();
        Ok(Page::Records {
            records,
            caught_up: true,
            millis_behind: None,
        })
    }
}

#[async_trait]
impl StreamSource for FakeStream {
    async fn list_shards(&self) -> Result<Vec<ShardInfo>, SourceError> {
        Ok(self.shards.clone())
    }
    fn open(&self, shard: &ShardInfo, from: StartFrom) -> Box<dyn ShardReader> {
        self.opened.lock().unwrap().push((shard.id.clone(), from));
        Box::new(FakeShard {
            records: self.records.get(&shard.id).cloned().unwrap_or_default(),
            closed: shard.closed,
            done: false,
        })
    }
    fn batch_info_key(&self) -> &'static str {
        "DDBStreamBatchInfo"
    }
}

/// Records every delivered id in order.
#[derive(Default)]
struct Recorder(Mutex<Vec<u64>>);

#[async_trait]
impl Dispatcher for Recorder {
    async fn invoke(&self, payload: Bytes) -> Result<Invoked, DispatchError> {
        let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        let mut seen = self.0.lock().unwrap();
        seen.extend(
            v["Records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_u64().unwrap()),
        );
        Ok(Invoked {
            status: 200,
            body: Bytes::new(),
            function_error: None,
            executed_version: None,
            request_id: None,
        })
    }
    fn function_arn(&self) -> &str {
        "f"
    }
}

#[derive(Default)]
struct MemStore(Mutex<HashMap<String, Checkpoint>>);

#[async_trait]
impl CheckpointStore for MemStore {
    async fn get(&self, _: &str, shard: &str) -> Result<Option<Checkpoint>, CheckpointError> {
        Ok(self.0.lock().unwrap().get(shard).cloned())
    }
    async fn put(&self, _: &str, shard: &str, cp: &Checkpoint) -> Result<(), CheckpointError> {
        self.0.lock().unwrap().insert(shard.to_string(), cp.clone());
        Ok(())
    }
}

fn shard(id: &str, parent: Option<&str>, closed: bool) -> ShardInfo {
    ShardInfo {
        id: id.into(),
        parents: parent.map(|p| vec![p.to_string()]).unwrap_or_default(),
        closed,
    }
}

/// Runs the supervisor until `until` ids were delivered; returns them and the opened shards.
async fn supervise(
    stream: FakeStream,
    store: Arc<MemStore>,
    until: usize,
) -> (Vec<u64>, Vec<(String, StartFrom)>, Arc<Status>) {
    let stream = Arc::new(stream);
    let recorder = Arc::new(Recorder::default());
    let status = Arc::new(Status::new(1));
    let ctx = Arc::new(MappingContext {
        mapping: Mapping {
            name: "m".into(),
            legacy_names: Vec::new(),
            source: SourceArn::parse("arn:aws:dynamodb:us-east-1:0:table/t/stream/x").unwrap(),
            target: Target::Lambda {
                function_name: "f".into(),
            },
            batch_size: 100,
            batching_window: Duration::ZERO,
            starting_position: StartingPosition::TrimHorizon,
            max_concurrency: None,
            enabled: true,
            errors: ErrorHandling::default(),
        },
        dispatcher: recorder.clone(),
        checkpoints: store,
        destination: None,
        metrics: Arc::new(Metrics::new()),
        status: status.clone(),
        policy: RetryPolicy::new(&ErrorHandling::default()),
        clock: Clock::new(),
    });
    let (tracker, cancel) = (TaskTracker::new(), CancellationToken::new());
    let sup = tokio::spawn(supervisor::run_mapping(
        ctx,
        stream.clone(),
        tracker.clone(),
        cancel.clone(),
        Duration::from_secs(5),
    ));
    let deadline = Instant::now() + Duration::from_secs(600);
    while recorder.0.lock().unwrap().len() < until {
        assert!(
            Instant::now() < deadline,
            "only {:?} delivered",
            recorder.0.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cancel.cancel();
    sup.await.unwrap();
    tracker.close();
    tracker.wait().await;
    let delivered = recorder.0.lock().unwrap().clone();
    let opened = stream.opened.lock().unwrap().clone();
    (delivered, opened, status)
}

#[tokio::test(start_paused = true)]
async fn a_child_starts_only_after_its_parent_is_drained() {
    let store = Arc::new(MemStore::default());
    let stream = FakeStream {
        // Listed child first: order of listing must not matter.
        shards: vec![
            shard("shardId-2", Some("shardId-1"), false),
            shard("shardId-1", None, true),
        ],
        records: HashMap::from([
            ("shardId-1".into(), vec![1, 2, 3]),
            ("shardId-2".into(), vec![4, 5]),
        ]),
        opened: Mutex::new(Vec::new()),
    };
    let (delivered, opened, status) = supervise(stream, store.clone(), 5).await;
    assert_eq!(
        delivered,
        vec![1, 2, 3, 4, 5],
        "every parent record before any child record"
    );
    assert_eq!(opened[0].0, "shardId-1");
    assert_eq!(
        opened[1],
        (
            "shardId-2".to_string(),
            StartFrom::Position(StartingPosition::TrimHorizon)
        )
    );
    assert_eq!(
        store.0.lock().unwrap().get("shardId-1"),
        Some(&Checkpoint::ShardEnd),
        "the parent's end checkpoint is kept"
    );
    assert_eq!(
        status.get("m", "shardId-1").unwrap().state,
        crate::telemetry::ShardState::Ended
    );
}

#[tokio::test(start_paused = true)]
async fn a_gap_in_the_graph_does_not_block_and_finished_shards_are_not_reread() {
    let store = Arc::new(MemStore::default());
    // shardId-0 was trimmed away: its child starts at once. shardId-3 ended in an earlier run.
    store
        .0
        .lock()
        .unwrap()
        .insert("shardId-3".into(), Checkpoint::ShardEnd);
    let stream = FakeStream {
        shards: vec![
            shard("shardId-1", Some("shardId-0"), false),
            shard("shardId-3", None, true),
            shard("shardId-4", Some("shardId-3"), false),
        ],
        records: HashMap::from([
            ("shardId-1".into(), vec![1, 2]),
            ("shardId-3".into(), vec![30]),
            ("shardId-4".into(), vec![40]),
        ]),
        opened: Mutex::new(Vec::new()),
    };
    let (delivered, opened, _) = supervise(stream, store, 3).await;
    let mut sorted = delivered.clone();
    sorted.sort();
    assert_eq!(sorted, vec![1, 2, 40], "shardId-3 is not read again");
    let ids: Vec<&str> = opened.iter().map(|(id, _)| id.as_str()).collect();
    assert!(!ids.contains(&"shardId-3"), "{ids:?}");
}

#[tokio::test(start_paused = true)]
async fn a_child_waits_while_its_parent_is_read_and_shows_it() {
    let store = Arc::new(MemStore::default());
    // The parent is open (still being written): the child must wait.
    let stream = FakeStream {
        shards: vec![
            shard("shardId-1", None, false),
            shard("shardId-2", Some("shardId-1"), false),
        ],
        records: HashMap::from([("shardId-1".into(), vec![1]), ("shardId-2".into(), vec![2])]),
        opened: Mutex::new(Vec::new()),
    };
    let (delivered, opened, status) = supervise(stream, store, 1).await;
    assert_eq!(delivered, vec![1]);
    assert_eq!(opened.len(), 1, "the child was not opened: {opened:?}");
    assert_eq!(
        status.get("m", "shardId-2").unwrap().state,
        crate::telemetry::ShardState::WaitingForParent
    );
}
