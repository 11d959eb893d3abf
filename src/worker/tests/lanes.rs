//! ParallelizationFactor on the same fakes and paused clock as the other worker tests: lanes run
//! batches at once, order is kept per key, a failing key holds back only its lane, give-ups go to
//! the destination per lane, the checkpoint (the watermark) never passes a record that is not
//! done, and a restart from it loses nothing.

use super::*;
use crate::config::MappingSource;
use crate::model::lane_key;
use crate::worker::shard::lane_of;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};

const LANES: usize = 5;

/// Record `id` with sequence number `1000 + id` and partition key `k<id % keys>`.
fn keyed(clock: &Clock, id: u64, keys: u64) -> Record {
    let key = format!("k{}", id % keys);
    Record {
        sequence: SequenceNumber((1000 + id).to_string()),
        arrival_ms: clock.now_ms(),
        event: format!("{{\"id\":{id},\"key\":\"{key}\"}}").into_bytes(),
        lane_key: lane_key(key.as_bytes()),
    }
}

/// `n` records over the keys `k0` to `k7`, arrived now.
fn keyed_records(n: u64) -> Vec<Record> {
    let clock = Clock::new();
    (0..n).map(|i| keyed(&clock, i, 8)).collect()
}

fn lane_of_key(key: &str) -> usize {
    lane_of(lane_key(key.as_bytes()), LANES)
}

type Answer = dyn Fn(&[(String, u64)], Duration) -> Result<Invoked, DispatchError> + Send + Sync;

/// A function that takes `took` per invocation and answers with `answer(records, time since
/// start)`; it records each call's records, the invocations in flight at once, and which records
/// succeeded.
struct SlowFunction {
    took: Duration,
    start: Instant,
    answer: Box<Answer>,
    calls: Mutex<Vec<Vec<(String, u64)>>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    succeeded: Mutex<Vec<u64>>,
}

impl SlowFunction {
    /// A function taking `took` per invocation that fails (a function error) every batch holding
    /// a record of `key` until `until` after its start, and succeeds otherwise.
    fn failing_on(key: &'static str, took: Duration, until: Duration) -> Arc<Self> {
        SlowFunction::new(took, move |records, at| {
            if at < until && records.iter().any(|(k, _)| k == key) {
                function_error()
            } else {
                ok()
            }
        })
    }

    fn new(
        took: Duration,
        answer: impl Fn(&[(String, u64)], Duration) -> Result<Invoked, DispatchError>
            + Send
            + Sync
            + 'static,
    ) -> Arc<Self> {
        Arc::new(SlowFunction {
            took,
            start: Instant::now(),
            answer: Box::new(answer),
            calls: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            succeeded: Mutex::new(Vec::new()),
        })
    }

    fn succeeded(&self) -> Vec<u64> {
        self.succeeded.lock().unwrap().clone()
    }

    /// The ids each key's records were invoked with, in invocation order.
    fn per_key(&self) -> BTreeMap<String, Vec<u64>> {
        let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for call in self.calls.lock().unwrap().iter() {
            for (key, id) in call {
                out.entry(key.clone()).or_default().push(*id);
            }
        }
        out
    }
}

#[async_trait]
impl Dispatcher for SlowFunction {
    async fn invoke(&self, payload: Bytes) -> Result<Invoked, DispatchError> {
        let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        let records: Vec<(String, u64)> = v["Records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["key"].as_str().unwrap().to_string(),
                    r["id"].as_u64().unwrap(),
                )
            })
            .collect();
        self.calls.lock().unwrap().push(records.clone());
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.took).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        let result = (self.answer)(&records, self.start.elapsed());
        if matches!(&result, Ok(inv) if inv.function_error.is_none()) {
            let mut done = self.succeeded.lock().unwrap();
            done.extend(records.iter().map(|(_, id)| *id));
        }
        result
    }
    fn function_arn(&self) -> &str {
        "arn:aws:lambda:us-east-1:000000000000:function:f"
    }
}

/// A store that checks, at every commit, that every record up to it succeeded in `function` or
/// was handed to `destination`.
struct CheckingStore {
    inner: MemStore,
    function: Arc<SlowFunction>,
    destination: Arc<MemDestination>,
    /// The first record this run reads (the ones before were done before it started).
    first: u64,
    /// Records the mapping's filter leaves out: done without being sent.
    filtered: HashSet<u64>,
    /// Commits that passed a record not done, with that record.
    violations: Mutex<Vec<String>>,
}

#[async_trait]
impl CheckpointStore for CheckingStore {
    async fn get(&self, m: &str, p: &str) -> Result<Option<Checkpoint>, CheckpointError> {
        self.inner.get(m, p).await
    }
    async fn commit(&self, m: &str, p: &str, c: Commit<'_>) -> Result<(), CommitError> {
        if let Checkpoint::Sequence(to) = c.to {
            let to: u64 = to.0.parse::<u64>().unwrap() - 1000;
            let mut done: HashSet<u64> = self.function.succeeded().into_iter().collect();
            done.extend(&self.filtered);
            for sent in self.destination.sent.lock().unwrap().iter() {
                done.extend(ids(&sent.event));
            }
            if let Some(missing) = (self.first..=to).find(|id| !done.contains(id)) {
                let mut v = self.violations.lock().unwrap();
                v.push(format!("checkpoint at {to} passed record {missing}"));
            }
        }
        self.inner.commit(m, p, c).await
    }
}

struct LaneRun {
    store: Arc<CheckingStore>,
    destination: Arc<MemDestination>,
    exit: Exit,
}

impl LaneRun {
    fn checkpoints(&self) -> Vec<Checkpoint> {
        self.store.inner.writes.lock().unwrap().clone()
    }
}

/// Runs a worker with ParallelizationFactor [`LANES`] over `pages`, from `committed`, until the
/// shard ends or `stop_after` passes (then it is shut down).
async fn run_lanes(
    errors: ErrorHandling,
    batch_size: usize,
    pages: Vec<Vec<Record>>,
    function: Arc<SlowFunction>,
    committed: Option<Checkpoint>,
    stop_after: Option<Duration>,
) -> LaneRun {
    let mapping = Mapping::kinesis_for_tests(batch_size, Duration::ZERO, errors);
    run_lanes_of(
        mapping,
        pages,
        function,
        committed,
        stop_after,
        HashSet::new(),
    )
    .await
}

/// [`run_lanes`] for `mapping`, whose filter leaves out the records `filtered`.
async fn run_lanes_of(
    mut mapping: Mapping,
    pages: Vec<Vec<Record>>,
    function: Arc<SlowFunction>,
    committed: Option<Checkpoint>,
    stop_after: Option<Duration>,
    filtered: HashSet<u64>,
) -> LaneRun {
    if let MappingSource::Kinesis(s) = &mut mapping.source {
        s.parallelization_factor = LANES as u32;
    }
    let destination = Arc::new(MemDestination::default());
    let store = Arc::new(CheckingStore {
        inner: MemStore::default(),
        function: function.clone(),
        destination: destination.clone(),
        first: match &committed {
            Some(Checkpoint::Sequence(s)) => s.0.parse::<u64>().unwrap() - 999,
            _ => 0,
        },
        violations: Mutex::new(Vec::new()),
        filtered,
    });
    if let Some(c) = &committed {
        store.inner.writes.lock().unwrap().push(c.clone());
    }
    let metrics = Arc::new(Metrics::new());
    let ctx = context(
        mapping,
        function.clone(),
        store.clone(),
        Some(destination.clone()),
        &metrics,
        Clock::new(),
    );
    let reader = FakeReader::new(pages, Duration::from_millis(200), 0);
    let cancel = CancellationToken::new();
    if let Some(after) = stop_after {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            cancel.cancel();
        });
    }
    let exit = run_worker(ctx, store.clone(), reader, committed, cancel).await;
    let violations = store.violations.lock().unwrap().clone();
    assert!(violations.is_empty(), "{violations:?}");
    LaneRun {
        store,
        destination,
        exit,
    }
}

fn pages(records: Vec<Record>, per_page: usize) -> Vec<Vec<Record>> {
    records.chunks(per_page).map(<[Record]>::to_vec).collect()
}

fn assert_forward(checkpoints: &[Checkpoint]) {
    assert!(
        checkpoints.windows(2).all(|w| w[0] < w[1]),
        "checkpoints only move forward: {checkpoints:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn lanes_run_batches_at_once_and_keep_order_per_key() {
    let started = Instant::now();
    let records = keyed_records(400);
    let f = SlowFunction::new(Duration::from_secs(1), |_, _| ok());
    let run = run_lanes(
        ErrorHandling::default(),
        10,
        pages(records, 100),
        f.clone(),
        None,
        None,
    )
    .await;
    assert_eq!(run.exit, Exit::Ended);
    let max = f.max_in_flight.load(Ordering::SeqCst);
    let lanes_used: HashSet<usize> = (0..8).map(|k| lane_of_key(&format!("k{k}"))).collect();
    assert_eq!(
        max,
        lanes_used.len(),
        "one batch in flight per lane with records, no more"
    );
    assert!(max > 1, "batches ran at once");
    let mut delivered = f.succeeded();
    delivered.sort();
    assert_eq!(delivered, (0..400).collect::<Vec<_>>(), "each record once");
    for (key, ids) in f.per_key() {
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{key} out of order");
    }
    let checkpoints = run.checkpoints();
    assert_forward(&checkpoints);
    assert_eq!(
        &checkpoints[checkpoints.len() - 2..],
        &[seq(399), Checkpoint::ShardEnd]
    );
    // 40 batches of 1 s: one at a time would take 40 s.
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_key_holds_back_only_its_lane_and_the_checkpoint_waits_for_it() {
    let records = keyed_records(200);
    let bad_lane = lane_of_key("k0");
    // k0 fails (a function error, retried without limit) for its first minute.
    let f = SlowFunction::failing_on("k0", Duration::from_millis(100), Duration::from_secs(60));
    let run = run_lanes(
        ErrorHandling::default(),
        5,
        vec![records],
        f.clone(),
        None,
        None,
    )
    .await;
    assert_eq!(run.exit, Exit::Ended);
    // Every record of the other lanes succeeded before k0 first did.
    let others: Vec<u64> = (0..200)
        .filter(|id| lane_of_key(&format!("k{}", id % 8)) != bad_lane)
        .collect();
    assert!(!others.is_empty());
    let succeeded = f.succeeded();
    let k0_at = succeeded
        .iter()
        .position(|id| id % 8 == 0)
        .expect("k0 succeeds once it recovers");
    let before: HashSet<u64> = succeeded[..k0_at].iter().copied().collect();
    assert!(
        others.iter().all(|id| before.contains(id)),
        "the other lanes were not held back"
    );
    // The checkpoint never passed record 0 (k0) while it failed (the store checked every commit)
    // and ends at the shard's end once k0 recovered.
    let checkpoints = run.checkpoints();
    assert_forward(&checkpoints);
    assert_eq!(checkpoints.last(), Some(&Checkpoint::ShardEnd));
    for k in 0..8 {
        let ids: Vec<u64> = succeeded.iter().copied().filter(|id| id % 8 == k).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "k{k} out of order");
    }
    let mut all = succeeded.clone();
    all.sort();
    all.dedup();
    assert_eq!(all, (0..200).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn give_ups_go_to_the_destination_per_lane() {
    let records = keyed_records(100);
    let f = SlowFunction::failing_on("k0", Duration::from_millis(50), Duration::MAX);
    let errors = with_destination(ErrorHandling {
        max_retry_attempts: Some(1),
        ..Default::default()
    });
    let run = run_lanes(errors, 4, pages(records, 25), f.clone(), None, None).await;
    assert_eq!(run.exit, Exit::Ended);
    let sent: Vec<serde_json::Value> = run
        .destination
        .sent
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.body.clone())
        .collect();
    assert!(!sent.is_empty());
    let given_up: u64 = sent
        .iter()
        .map(|r| r["KinesisBatchInfo"]["batchSize"].as_u64().unwrap())
        .sum();
    let succeeded = f.succeeded();
    assert!(succeeded.iter().all(|id| id % 8 != 0), "k0 never succeeds");
    assert_eq!(
        succeeded.len() as u64 + given_up,
        100,
        "every record succeeded once or was given up on once"
    );
    let bad_lane = lane_of_key("k0");
    let only_bad_lane = (0..100u64)
        .filter(|id| lane_of_key(&format!("k{}", id % 8)) != bad_lane)
        .all(|id| succeeded.contains(&id));
    assert!(
        only_bad_lane,
        "records of other lanes were never given up on"
    );
    assert_eq!(run.checkpoints().last(), Some(&Checkpoint::ShardEnd));
}

/// Runs `records` (batches of 5, pages of 50) against `function` from the start and shuts the
/// worker down after `stop`; returns the checkpoint it stored last.
async fn stopped_run(
    records: &[Record],
    function: &Arc<SlowFunction>,
    stop: Duration,
) -> Option<Checkpoint> {
    let run = run_lanes(
        ErrorHandling::default(),
        5,
        pages(records.to_vec(), 50),
        function.clone(),
        None,
        Some(stop),
    )
    .await;
    assert_eq!(run.exit, Exit::Cancelled);
    run.checkpoints().last().cloned()
}

#[tokio::test(start_paused = true)]
async fn a_restart_from_the_watermark_loses_nothing() {
    let records = keyed_records(200);
    // First run: record 0's key (k0) keeps failing; shut down after a minute.
    let failing = SlowFunction::failing_on("k0", Duration::from_millis(100), Duration::MAX);
    let stored = stopped_run(&records, &failing, Duration::from_secs(60)).await;
    let delivered_first: HashSet<u64> = failing.succeeded().into_iter().collect();
    // The other lanes progressed, as far as the reader read ahead of k0's full lane.
    assert!(delivered_first.len() > 20, "{}", delivered_first.len());
    // Nothing passed record 0: the watermark stays before it (no checkpoint at all here).
    assert_eq!(stored, None, "record 0 was never done");

    // The same with k0 recovered: a restart resumes after the stored watermark.
    let records = keyed_records(200);
    let flaky = SlowFunction::failing_on("k3", Duration::from_millis(100), Duration::from_secs(30));
    let stored = stopped_run(&records, &flaky, Duration::from_secs(20)).await;
    // The store checked that every record up to the watermark succeeded; record 3 (k3) never did.
    let at: Option<u64> = match &stored {
        Some(Checkpoint::Sequence(s)) => Some(s.0.parse::<u64>().unwrap() - 1000),
        None => None,
        Some(other) => panic!("{other:?}"),
    };
    assert!(at.is_none_or(|at| at < 3), "{at:?}");
    let after: Vec<Record> = records
        .into_iter()
        .filter(|r| at.is_none_or(|at| r.sequence > seq_of(at)))
        .collect();
    let rest = SlowFunction::new(Duration::from_millis(100), |_, _| ok());
    let second = run_lanes(
        ErrorHandling::default(),
        5,
        pages(after, 50),
        rest.clone(),
        stored,
        None,
    )
    .await;
    assert_eq!(second.exit, Exit::Ended);
    let mut all: Vec<u64> = flaky.succeeded();
    all.extend(rest.succeeded());
    all.sort();
    all.dedup();
    assert_eq!(all, (0..200).collect::<Vec<_>>(), "nothing lost");
    let again: HashSet<u64> = rest.succeeded().into_iter().collect();
    assert!(
        again.iter().all(|id| at.is_none_or(|at| *id > at)),
        "only records after the watermark are delivered again"
    );
}

fn seq_of(id: u64) -> SequenceNumber {
    SequenceNumber((1000 + id).to_string())
}

#[tokio::test(start_paused = true)]
async fn filtered_records_are_passed_by_the_watermark_without_being_sent() {
    use crate::filter::{FilterCriteria, Pattern};
    let records = keyed_records(200);
    let mut mapping = Mapping::kinesis_for_tests(10, Duration::ZERO, ErrorHandling::default());
    let pattern = Pattern::parse(r#"{"id": [{"numeric": ["<", 100]}]}"#).unwrap();
    mapping.filter_criteria = FilterCriteria::new(vec![pattern]);
    let f = SlowFunction::new(Duration::from_millis(100), |_, _| ok());
    let run = run_lanes_of(
        mapping,
        pages(records, 50),
        f.clone(),
        None,
        None,
        (100..200).collect(),
    )
    .await;
    assert_eq!(run.exit, Exit::Ended);
    let mut sent = f.succeeded();
    sent.sort();
    assert_eq!(sent, (0..100).collect::<Vec<_>>(), "only matches are sent");
    let checkpoints = run.checkpoints();
    assert_forward(&checkpoints);
    assert_eq!(
        &checkpoints[checkpoints.len() - 2..],
        &[seq(199), Checkpoint::ShardEnd],
        "the filtered tail is checkpointed past"
    );
}
