//! The shard worker against in-memory fakes, on a paused tokio clock: error classes, the attempt
//! budget, bisect, partial batch responses, record age, payload splitting, destination retries.

use async_trait::async_trait;
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod batching;
mod errors;
mod filtering;
mod lanes;
mod limits;
mod window;

use super::shard::{Exit, ShardWorker};
use super::{Clock, MappingContext};
use crate::budget::ByteBudget;
use crate::checkpoint::{
    check, Checkpoint, CheckpointError, CheckpointStore, Commit, CommitError, Committer, Verdict,
};
use crate::config::{ErrorHandling, Mapping};
use crate::destination::{Destination, FailureRecord};
use crate::dispatch::{DispatchError, Dispatcher, Invoked};
use crate::retry::RetryPolicy;
use crate::source::{Page, PartitionReader, Record, SequenceNumber, SourceError};
use crate::telemetry::{MappingTelemetry, Metrics, Status};

/// The shard every fake reads.
const SHARD: &str = "shardId-000000000000";

/// Hands out `pages` one read at a time, `interval` apart, then `idle` empty reads, then the end.
struct FakeReader {
    pages: VecDeque<Vec<Record>>,
    interval: Duration,
    idle: usize,
    next: Instant,
}

impl FakeReader {
    /// A reader whose first read is due now.
    fn new(pages: Vec<Vec<Record>>, interval: Duration, idle: usize) -> Self {
        FakeReader {
            pages: pages.into(),
            interval,
            idle,
            next: Instant::now(),
        }
    }
}

#[async_trait]
impl PartitionReader for FakeReader {
    fn next_read_at(&self) -> Instant {
        self.next
    }
    async fn read(&mut self) -> Result<Page, SourceError> {
        self.next = Instant::now() + self.interval;
        Ok(match self.pages.pop_front() {
            Some(records) => Page::Records {
                records,
                caught_up: self.pages.is_empty(),
                millis_behind: Some(0),
            },
            None if self.idle > 0 => {
                self.idle -= 1;
                Page::Records {
                    records: vec![],
                    caught_up: true,
                    millis_behind: Some(0),
                }
            }
            None => Page::ShardEnd,
        })
    }
}

type Script = dyn Fn(&[u64], usize) -> Result<Invoked, DispatchError> + Send + Sync;

/// Answers per call with `script(record ids, call number)`; logs the ids of every call.
struct FakeDispatcher {
    calls: Mutex<Vec<Vec<u64>>>,
    script: Box<Script>,
}

fn ids(payload: &[u8]) -> Vec<u64> {
    let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
    v["Records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect()
}

#[async_trait]
impl Dispatcher for FakeDispatcher {
    async fn invoke(&self, payload: Bytes) -> Result<Invoked, DispatchError> {
        let ids = ids(&payload);
        let n = {
            let mut calls = self.calls.lock().unwrap();
            calls.push(ids.clone());
            calls.len()
        };
        (self.script)(&ids, n)
    }
    fn function_arn(&self) -> &str {
        "arn:aws:lambda:us-east-1:000000000000:function:f"
    }
}

#[derive(Default)]
pub(crate) struct MemStore {
    writes: Mutex<Vec<Checkpoint>>,
}

#[async_trait]
impl CheckpointStore for MemStore {
    async fn get(&self, _: &str, _: &str) -> Result<Option<Checkpoint>, CheckpointError> {
        Ok(self.writes.lock().unwrap().last().cloned())
    }
    /// Every commit must chain from the last one, as a real store requires.
    async fn commit(&self, _: &str, _: &str, c: Commit<'_>) -> Result<(), CommitError> {
        let mut writes = self.writes.lock().unwrap();
        if check(writes.last(), Some(c.lease), &c)? == Verdict::Write {
            writes.push(c.to.clone());
        }
        Ok(())
    }
}

#[derive(Default)]
struct MemDestination {
    fail_first: usize,
    attempts: Mutex<usize>,
    sent: Mutex<Vec<FailureRecord>>,
}

#[async_trait]
impl Destination for MemDestination {
    async fn send(&self, record: &FailureRecord) -> Result<(), String> {
        let mut a = self.attempts.lock().unwrap();
        *a += 1;
        if *a <= self.fail_first {
            return Err("destination down".into());
        }
        self.sent.lock().unwrap().push(record.clone());
        Ok(())
    }
}

pub(crate) fn ok() -> Result<Invoked, DispatchError> {
    Ok(Invoked {
        status: 200,
        body: Bytes::new(),
        function_error: None,
        executed_version: None,
        request_id: None,
    })
}

pub(crate) fn ok_body(body: &str) -> Result<Invoked, DispatchError> {
    Ok(Invoked {
        body: Bytes::from(body.to_string()),
        ..ok().unwrap()
    })
}

pub(crate) fn function_error() -> Result<Invoked, DispatchError> {
    Ok(Invoked {
        status: 200,
        body: Bytes::from_static(b"{\"errorMessage\":\"boom\"}"),
        function_error: Some("Unhandled".into()),
        executed_version: Some("$LATEST".into()),
        request_id: Some("req-1".into()),
    })
}

pub(crate) fn throttled() -> Result<Invoked, DispatchError> {
    Err(DispatchError::Throttled {
        status: Some(429),
        message: "slow down".into(),
    })
}

/// Record `id` with sequence number `1000 + id`, arrived `age_ms` before the clock's now.
fn record(clock: &Clock, id: u64, age_ms: i64) -> Record {
    Record {
        sequence: SequenceNumber((1000 + id).to_string()),
        arrival_ms: clock.now_ms() - age_ms,
        event: format!("{{\"id\":{id}}}").into_bytes(),
        lane_key: 0,
    }
}

struct Harness {
    dispatcher: Arc<FakeDispatcher>,
    store: Arc<MemStore>,
    destination: Arc<MemDestination>,
    metrics: Arc<Metrics>,
}

impl Harness {
    fn calls(&self) -> Vec<Vec<u64>> {
        self.dispatcher.calls.lock().unwrap().clone()
    }
    fn sent(&self) -> Vec<serde_json::Value> {
        self.destination
            .sent
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.body.clone())
            .collect()
    }
    fn checkpoints(&self) -> Vec<Checkpoint> {
        self.store.writes.lock().unwrap().clone()
    }
    fn metric(&self, name: &str) -> f64 {
        let text = self.metrics.encode();
        let prefix = format!("{name}{{mapping=\"m\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(|v| v.parse().unwrap())
            .unwrap_or(0.0)
    }
}

/// Runs one shard worker over `pages` (built against the worker's clock) to the shard's end.
async fn run(
    errors: ErrorHandling,
    batch_size: usize,
    pages: impl FnOnce(&Clock) -> Vec<Vec<Record>>,
    destination: MemDestination,
    script: impl Fn(&[u64], usize) -> Result<Invoked, DispatchError> + Send + Sync + 'static,
) -> Harness {
    let reading = Reading {
        window: Duration::ZERO,
        interval: Duration::ZERO,
        idle: 0,
        budget: None,
    };
    run_reading(errors, batch_size, reading, pages, destination, script).await
}

/// How the fake shard is read: the mapping's batching window, and the reader's pacing.
struct Reading {
    window: Duration,
    interval: Duration,
    idle: usize,
    /// The process-wide byte budget (unlimited if none).
    budget: Option<Arc<ByteBudget>>,
}

async fn run_reading(
    errors: ErrorHandling,
    batch_size: usize,
    reading: Reading,
    pages: impl FnOnce(&Clock) -> Vec<Vec<Record>>,
    destination: MemDestination,
    script: impl Fn(&[u64], usize) -> Result<Invoked, DispatchError> + Send + Sync + 'static,
) -> Harness {
    let mapping = Mapping::kinesis_for_tests(batch_size, reading.window, errors);
    run_mapping(mapping, reading, pages, destination, script).await
}

/// [`run_reading`] with the mapping given (a Kinesis mapping named `m`).
async fn run_mapping(
    mapping: Mapping,
    reading: Reading,
    pages: impl FnOnce(&Clock) -> Vec<Vec<Record>>,
    destination: MemDestination,
    script: impl Fn(&[u64], usize) -> Result<Invoked, DispatchError> + Send + Sync + 'static,
) -> Harness {
    let clock = Clock::new();
    let dispatcher = Arc::new(FakeDispatcher {
        calls: Mutex::new(Vec::new()),
        script: Box::new(script),
    });
    let store = Arc::new(MemStore::default());
    let destination = Arc::new(destination);
    let metrics = Arc::new(Metrics::new());
    let mut ctx = context(
        mapping,
        dispatcher.clone(),
        store.clone(),
        Some(destination.clone()),
        &metrics,
        clock,
    );
    if let Some(budget) = reading.budget {
        ctx.budget = budget;
    }
    let reader = FakeReader::new(pages(&clock), reading.interval, reading.idle);
    let exit = run_worker(ctx, store.clone(), reader, None, CancellationToken::new()).await;
    assert_eq!(exit, Exit::Ended);
    Harness {
        dispatcher,
        store,
        destination,
        metrics,
    }
}

/// The context a worker of `mapping` runs in against the fakes: telemetry for `m` in `metrics`, the
/// mapping's retry policy, `destination` for give-ups if the mapping names an on-failure
/// destination, an unlimited byte budget, and a stream that keeps records 24 hours.
fn context(
    mapping: Mapping,
    dispatcher: Arc<dyn Dispatcher>,
    checkpoints: Arc<dyn CheckpointStore>,
    destination: Option<Arc<dyn Destination>>,
    metrics: &Arc<Metrics>,
    clock: Clock,
) -> MappingContext {
    let errors = mapping.stream_errors().cloned().unwrap_or_default();
    MappingContext {
        mapping,
        dispatcher,
        checkpoints,
        destination: destination.filter(|_| errors.on_failure.is_some()),
        telemetry: MappingTelemetry::new("m", metrics, &Arc::new(Status::new(1))),
        policy: RetryPolicy::new(&errors),
        clock,
        budget: Arc::new(ByteBudget::unlimited()),
        retention_ms: std::sync::atomic::AtomicI64::new(24 * 3600 * 1000),
    }
}

/// Runs a worker in `ctx` on [`SHARD`], read by `reader`, committing to `store` from `committed`,
/// until it exits (`cancel` stops it); fails the test if it has not within an hour.
async fn run_worker(
    ctx: MappingContext,
    store: Arc<dyn CheckpointStore>,
    reader: FakeReader,
    committed: Option<Checkpoint>,
    cancel: CancellationToken,
) -> Exit {
    let lease = crate::lease::Lease::fixed(SHARD, crate::lease::SingleReplica::token());
    let committer = Committer::new(store, "m", lease, committed);
    let worker = ShardWorker::new(
        Arc::new(ctx),
        SHARD.into(),
        Box::new(reader),
        crate::source::EventFormat::KINESIS,
        committer,
    );
    tokio::time::timeout(Duration::from_secs(3600), worker.run(cancel))
        .await
        .expect("worker finishes")
}

fn with_destination(e: ErrorHandling) -> ErrorHandling {
    ErrorHandling {
        on_failure: Some(
            crate::config::DestinationArn::parse("arn:aws:sqs:us-east-1:0:dlq").unwrap(),
        ),
        ..e
    }
}

fn seq(id: u64) -> Checkpoint {
    Checkpoint::Sequence(SequenceNumber((1000 + id).to_string()))
}
