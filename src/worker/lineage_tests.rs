//! The supervisor's shard lineage against an in-memory stream: a parent with one child (the
//! DynamoDB Streams shape), and a graph with a gap (a parent no longer listed). Leases: `leases`.

use async_trait::async_trait;
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{supervisor, Clock, MappingContext};
use crate::checkpoint::{
    check, Checkpoint, CheckpointError, CheckpointStore, Commit, CommitError, Verdict,
};
use crate::config::{ErrorHandling, Mapping, StartingPosition};
use crate::dispatch::{DispatchError, Dispatcher, Invoked};
use crate::retry::RetryPolicy;
use crate::source::{
    Page, Partition, PartitionReader, Position, Record, SequenceNumber, Source, SourceError,
};
use crate::telemetry::{MappingTelemetry, Metrics, Status};

mod leases;

/// Shards with fixed records; closed shards end after their records, open ones idle forever.
struct FakeStream {
    shards: Vec<Partition>,
    records: HashMap<String, Vec<u64>>,
    opened: Mutex<Vec<(String, Position)>>,
    /// What every listing after the first returns (default: `shards` again).
    later: Option<Vec<Partition>>,
    listings: Mutex<usize>,
}

struct FakeShard {
    records: Vec<u64>,
    closed: bool,
    done: bool,
}

#[async_trait]
impl PartitionReader for FakeShard {
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
                // Just arrived: well within the stream's retention.
                arrival_ms: Clock::new().now_ms(),
                event: format!("{{\"id\":{i}}}").into_bytes(),
                lane_key: 0,
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
impl Source for FakeStream {
    async fn list_partitions(&self) -> Result<Vec<Partition>, SourceError> {
        let mut n = self.listings.lock().unwrap();
        *n += 1;
        Ok(match &self.later {
            Some(later) if *n > 1 => later.clone(),
            _ => self.shards.clone(),
        })
    }
    fn open(&self, shard: &Partition, from: Position) -> Box<dyn PartitionReader> {
        self.opened.lock().unwrap().push((shard.id.clone(), from));
        Box::new(FakeShard {
            records: self.records.get(&shard.id).cloned().unwrap_or_default(),
            closed: shard.closed,
            done: false,
        })
    }
    fn format(&self, _: &crate::model::Partition) -> crate::model::EventFormat {
        crate::model::EventFormat::DYNAMODB
    }
    async fn retention(&self) -> Result<std::time::Duration, SourceError> {
        Ok(std::time::Duration::from_secs(24 * 3600))
    }
}

/// Records every delivered id in order, once the invocation completes.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<u64>>,
    /// Panics on the first invocation (a bug in a worker's path).
    panic_once: std::sync::atomic::AtomicBool,
    /// An invocation holding one of these ids takes that long.
    slow: Vec<(u64, Duration)>,
    /// An invocation holding this id fails with a function error.
    fail: Option<u64>,
    /// The ids of every invocation, as it starts.
    attempts: Mutex<Vec<u64>>,
}

#[async_trait]
impl Dispatcher for Recorder {
    async fn invoke(&self, payload: Bytes) -> Result<Invoked, DispatchError> {
        let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        let ids: Vec<u64> = v["Records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_u64().unwrap())
            .collect();
        self.attempts.lock().unwrap().extend(&ids);
        if self
            .panic_once
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            panic!("injected worker bug");
        }
        for (id, took) in &self.slow {
            if ids.contains(id) {
                tokio::time::sleep(*took).await;
            }
        }
        if self.fail.is_some_and(|id| ids.contains(&id)) {
            return Ok(Invoked {
                status: 200,
                body: Bytes::from_static(b"{\"errorMessage\":\"boom\"}"),
                function_error: Some("Unhandled".into()),
                executed_version: None,
                request_id: None,
            });
        }
        let mut seen = self.seen.lock().unwrap();
        seen.extend(
            v["Records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_u64().unwrap()),
        );
        super::tests::ok()
    }
    fn function_arn(&self) -> &str {
        "f"
    }
}

/// Checkpoints by shard, the mapping's first start, and shards whose checkpoint "does not parse".
#[derive(Default)]
struct MemStore(
    Mutex<HashMap<String, Checkpoint>>,
    Mutex<Option<i64>>,
    Mutex<HashSet<String>>,
);

#[async_trait]
impl CheckpointStore for MemStore {
    async fn get(&self, _: &str, shard: &str) -> Result<Option<Checkpoint>, CheckpointError> {
        if self.2.lock().unwrap().contains(shard) {
            return Err(CheckpointError(format!("{shard}.json does not parse")));
        }
        Ok(self.0.lock().unwrap().get(shard).cloned())
    }
    /// Applies the commit rules (the newest token is not kept: no test here fences in the store).
    async fn commit(&self, _: &str, shard: &str, c: Commit<'_>) -> Result<(), CommitError> {
        let mut all = self.0.lock().unwrap();
        if check(all.get(shard), None, &c)? == Verdict::Write {
            all.insert(shard.to_string(), c.to.clone());
        }
        Ok(())
    }
    async fn mapping_start(&self, _: &str) -> Result<Option<i64>, CheckpointError> {
        Ok(*self.1.lock().unwrap())
    }
    async fn set_mapping_start(&self, _: &str, ms: i64) -> Result<(), CheckpointError> {
        *self.1.lock().unwrap() = Some(ms);
        Ok(())
    }
}

fn shard(id: &str, parent: Option<&str>, closed: bool) -> Partition {
    Partition {
        id: id.into(),
        parents: parent.map(|p| vec![p.to_string()]).unwrap_or_default(),
        closed,
    }
}

/// A supervisor running over a fake stream.
struct Supervised {
    stream: Arc<FakeStream>,
    recorder: Arc<Recorder>,
    status: Arc<Status>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    sup: tokio::task::JoinHandle<()>,
}

impl Supervised {
    fn start(
        stream: FakeStream,
        store: Arc<MemStore>,
        recorder: Recorder,
        starting_position: StartingPosition,
    ) -> Supervised {
        let leases = Arc::new(crate::lease::SingleReplica::new());
        Self::start_leased(stream, store, recorder, starting_position, leases)
    }

    /// [`Self::start`] holding the partitions `leases` grants.
    fn start_leased(
        stream: FakeStream,
        store: Arc<MemStore>,
        recorder: Recorder,
        starting_position: StartingPosition,
        leases: Arc<dyn crate::lease::Leases>,
    ) -> Supervised {
        let stream = Arc::new(stream);
        let recorder = Arc::new(recorder);
        let status = Arc::new(Status::new(1));
        let metrics = Arc::new(Metrics::new());
        let ctx = Arc::new(MappingContext {
            mapping: Mapping::dynamodb_for_tests(starting_position),
            dispatcher: recorder.clone(),
            checkpoints: store,
            destination: None,
            telemetry: MappingTelemetry::new("m", &metrics, &status),
            policy: RetryPolicy::new(&ErrorHandling::default()),
            clock: Clock::new(),
            budget: Arc::new(crate::budget::ByteBudget::unlimited()),
            retention_ms: Default::default(),
        });
        let (tracker, cancel) = (TaskTracker::new(), CancellationToken::new());
        let sup = tokio::spawn(supervisor::run_mapping(
            ctx,
            stream.clone(),
            leases,
            tracker.clone(),
            cancel.clone(),
            Duration::from_secs(5),
        ));
        Supervised {
            stream,
            recorder,
            status,
            metrics,
            cancel,
            tracker,
            sup,
        }
    }

    fn delivered(&self) -> Vec<u64> {
        self.recorder.seen.lock().unwrap().clone()
    }

    async fn wait_delivered(&self, until: usize) {
        let deadline = Instant::now() + Duration::from_secs(600);
        while self.recorder.seen.lock().unwrap().len() < until {
            assert!(
                Instant::now() < deadline,
                "only {:?} delivered",
                self.delivered()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops everything; returns what was delivered and which shards were opened from where.
    async fn stop(self) -> (Vec<u64>, Vec<(String, Position)>, Arc<Status>) {
        self.cancel.cancel();
        self.sup.await.unwrap();
        self.tracker.close();
        self.tracker.wait().await;
        let delivered = self.recorder.seen.lock().unwrap().clone();
        let opened = self.stream.opened.lock().unwrap().clone();
        (delivered, opened, self.status)
    }
}

/// Runs the supervisor until `until` ids were delivered; returns them and the opened shards.
async fn supervise(
    stream: FakeStream,
    store: Arc<MemStore>,
    until: usize,
) -> (Vec<u64>, Vec<(String, Position)>, Arc<Status>) {
    let s = Supervised::start(
        stream,
        store,
        Recorder::default(),
        StartingPosition::TrimHorizon,
    );
    s.wait_delivered(until).await;
    s.stop().await
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
        later: None,
        listings: Mutex::new(0),
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
            Position::Start(StartingPosition::TrimHorizon)
        )
    );
    assert_eq!(
        store.0.lock().unwrap().get("shardId-1"),
        Some(&Checkpoint::ShardEnd),
        "the parent's end checkpoint is kept"
    );
    // The ended parent was shown as ended until its child ran, then pruned from /status.
    assert!(
        status.get("m", "shardId-1").is_none(),
        "{:?}",
        status.get("m", "shardId-1")
    );
    assert!(status.get("m", "shardId-2").is_some());
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
        later: None,
        listings: Mutex::new(0),
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
        later: None,
        listings: Mutex::new(0),
    };
    let (delivered, opened, status) = supervise(stream, store, 1).await;
    assert_eq!(delivered, vec![1]);
    assert_eq!(opened.len(), 1, "the child was not opened: {opened:?}");
    assert_eq!(
        status.get("m", "shardId-2").unwrap().state,
        crate::telemetry::ShardState::WaitingForParent
    );
}

fn fake(shards: Vec<Partition>, records: &[(&str, &[u64])]) -> FakeStream {
    FakeStream {
        shards,
        records: records
            .iter()
            .map(|(id, r)| (id.to_string(), r.to_vec()))
            .collect(),
        opened: Mutex::new(Vec::new()),
        later: None,
        listings: Mutex::new(0),
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_worker_is_restarted_from_its_checkpoint() {
    let store = Arc::new(MemStore::default());
    let s = Supervised::start(
        fake(
            vec![shard("shardId-1", None, false)],
            &[("shardId-1", &[1, 2, 3])],
        ),
        store,
        Recorder {
            panic_once: true.into(),
            ..Default::default()
        },
        StartingPosition::TrimHorizon,
    );
    s.wait_delivered(3).await;
    let text = s.metrics.encode();
    assert!(
        text.contains("sluice_worker_panics_total{mapping=\"m\"} 1"),
        "{text}"
    );
    assert_eq!(
        s.status.get("m", "shardId-1").unwrap().state,
        crate::telemetry::ShardState::Reading,
        "running again"
    );
    assert!(s.status.ready());
    let (delivered, opened, _) = s.stop().await;
    assert_eq!(delivered, vec![1, 2, 3]);
    assert_eq!(opened.len(), 2, "opened again after the panic: {opened:?}");
}

#[tokio::test(start_paused = true)]
async fn a_child_waits_for_a_running_parent_that_dropped_out_of_the_listing() {
    let store = Arc::new(MemStore::default());
    let mut stream = fake(
        vec![
            shard("shardId-1", None, true),
            shard("shardId-2", Some("shardId-1"), false),
        ],
        &[("shardId-1", &[1]), ("shardId-2", &[2])],
    );
    // After the first listing the parent is trimmed away while its worker is still invoking.
    stream.later = Some(vec![shard("shardId-2", Some("shardId-1"), false)]);
    let s = Supervised::start(
        stream,
        store,
        Recorder {
            slow: vec![(1, Duration::from_secs(60))],
            ..Default::default()
        },
        StartingPosition::TrimHorizon,
    );
    s.wait_delivered(2).await;
    let (delivered, _, _) = s.stop().await;
    assert_eq!(delivered, vec![1, 2], "the parent's record first");
}

#[tokio::test(start_paused = true)]
async fn an_unreadable_checkpoint_shows_the_shard_down_until_fixed() {
    let store = Arc::new(MemStore::default());
    store.2.lock().unwrap().insert("shardId-1".into());
    let s = Supervised::start(
        fake(
            vec![shard("shardId-1", None, false)],
            &[("shardId-1", &[1])],
        ),
        store.clone(),
        Recorder::default(),
        StartingPosition::TrimHorizon,
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.status.get("m", "shardId-1").is_none() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let st = s.status.get("m", "shardId-1").unwrap();
    assert_eq!(st.state, crate::telemetry::ShardState::Failed);
    assert!(st.last_error.unwrap().contains("shardId-1.json"));
    assert_eq!(
        s.status.not_ready_because().as_deref(),
        Some("shards down: m/shardId-1")
    );
    assert!(s.delivered().is_empty());
    // Fixed (restored or deleted): the next pass starts the shard.
    store.2.lock().unwrap().clear();
    s.wait_delivered(1).await;
    assert!(s.status.ready());
    s.stop().await;
}

#[tokio::test(start_paused = true)]
async fn latest_is_the_mappings_first_start_and_survives_restarts() {
    let store = Arc::new(MemStore::default());
    let shards = || {
        vec![
            shard("shardId-1", None, true),
            shard("shardId-2", Some("shardId-1"), false),
        ]
    };
    let records: &[(&str, &[u64])] = &[("shardId-1", &[1]), ("shardId-2", &[2])];
    let s = Supervised::start(
        fake(shards(), records),
        store.clone(),
        Recorder::default(),
        StartingPosition::Latest,
    );
    s.wait_delivered(2).await;
    let (delivered, opened, _) = s.stop().await;
    let started = store.1.lock().unwrap().expect("first start recorded");
    let at = StartingPosition::AtTimestamp(
        std::time::UNIX_EPOCH + Duration::from_millis(started as u64),
    );
    // The closed parent may hold records newer than the mapping: it is read from the start, not
    // skipped; its child then from the same instant.
    assert_eq!(delivered, vec![1, 2]);
    assert_eq!(opened[0], ("shardId-1".to_string(), Position::Start(at)));
    assert_eq!(opened[1], ("shardId-2".to_string(), Position::Start(at)));

    // A restart before any checkpoint: the same instant, not a new LATEST.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    store.0.lock().unwrap().clear();
    let s = Supervised::start(
        fake(
            vec![shard("shardId-3", None, false)],
            &[("shardId-3", &[3])],
        ),
        store.clone(),
        Recorder::default(),
        StartingPosition::Latest,
    );
    s.wait_delivered(1).await;
    let (_, opened, _) = s.stop().await;
    assert_eq!(opened, vec![("shardId-3".to_string(), Position::Start(at))]);
    assert_eq!(*store.1.lock().unwrap(), Some(started));
}
