//! The queue worker against the in-memory queue (`source::sqs::memory`) and a fake dispatcher, on a
//! paused tokio clock: deletes, returns and their visibility, partial batch responses, FIFO groups,
//! the heartbeat, poller scaling and MaximumConcurrency, the batching window, receive errors and
//! the byte budget. Whole mappings run through [`run_queue`]; a single poller runs alone (through
//! [`Shared::new`] and [`poller`]) where the test needs one receiver. This file is the harness;
//! `flow` and `limits` hold the tests.

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod filtering;
mod flow;
mod limits;

use super::{next_concurrency, poller, run_queue, Shared};
use crate::budget::ByteBudget;
use crate::dispatch::{DispatchError, Dispatcher, Invoked};
use crate::retry::RetryPolicy;
use crate::source::sqs::memory::MemoryQueue;
use crate::source::sqs::Queue;
use crate::source::SourceError;
use crate::telemetry::{MappingTelemetry, Metrics, Status};
use crate::worker::tests::{function_error, ok, ok_body, MemStore};
use crate::worker::{Clock, MappingContext};

/// How long an invocation takes, and what it answers.
type Reply = (Duration, Result<Invoked, DispatchError>);
type Script = dyn Fn(&[Value], usize) -> Reply + Send + Sync;

/// Answers each invocation with `script(records, call number)` after its delay; logs every call
/// and the most invocations it saw running at once.
struct FakeFunction {
    calls: Mutex<Vec<(Instant, Vec<Value>)>>,
    running: AtomicUsize,
    most_running: AtomicUsize,
    script: Box<Script>,
}

#[async_trait]
impl Dispatcher for FakeFunction {
    async fn invoke(&self, payload: Bytes) -> Result<Invoked, DispatchError> {
        let event: Value = serde_json::from_slice(&payload).unwrap();
        let records = event["Records"].as_array().unwrap().clone();
        let n = {
            let mut calls = self.calls.lock().unwrap();
            calls.push((Instant::now(), records.clone()));
            calls.len()
        };
        let running = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_running.fetch_max(running, Ordering::SeqCst);
        let (delay, result) = (self.script)(&records, n);
        tokio::time::sleep(delay).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        result
    }
    fn function_arn(&self) -> &str {
        "arn:aws:lambda:us-east-1:000000000000:function:f"
    }
}

impl FakeFunction {
    /// The bodies of each call, in call order.
    fn bodies(&self) -> Vec<Vec<String>> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|(_, records)| records.iter().map(body).collect())
            .collect()
    }
    /// When each call was made.
    fn times(&self) -> Vec<Instant> {
        self.calls.lock().unwrap().iter().map(|(t, _)| *t).collect()
    }
}

fn body(record: &Value) -> String {
    record["body"].as_str().unwrap().to_string()
}

fn at_once(result: Result<Invoked, DispatchError>) -> Reply {
    (Duration::ZERO, result)
}

/// A partial batch response failing the records whose body is in `bodies`.
fn failing(records: &[Value], bodies: &[&str]) -> Result<Invoked, DispatchError> {
    let items: Vec<Value> = records
        .iter()
        .filter(|r| bodies.contains(&body(r).as_str()))
        .map(|r| serde_json::json!({ "itemIdentifier": r["messageId"] }))
        .collect();
    ok_body(&serde_json::json!({ "batchItemFailures": items }).to_string())
}

/// One SQS mapping named `m` on `queue`, with `fields` (YAML, AWS's field names) added.
struct Setup {
    queue: Arc<MemoryQueue>,
    fields: &'static str,
    budget: Arc<ByteBudget>,
}

impl Setup {
    fn new(queue: MemoryQueue, fields: &'static str) -> Self {
        Setup {
            queue: Arc::new(queue),
            fields,
            budget: Arc::new(ByteBudget::unlimited()),
        }
    }

    fn context(&self, function: Arc<FakeFunction>, metrics: Arc<Metrics>) -> Arc<MappingContext> {
        let name = if self.queue.fifo() { "q.fifo" } else { "q" };
        let yaml = format!(
            "mappings:\n  - Name: m\n    EventSourceArn: arn:aws:sqs:us-east-1:000000000000:{name}\n    FunctionName: f\n{}",
            self.fields
        );
        let mapping = crate::config::parse_str(&yaml)
            .expect("test mapping")
            .mappings
            .remove(0);
        Arc::new(MappingContext {
            policy: RetryPolicy::new(&Default::default()),
            mapping,
            dispatcher: function,
            checkpoints: Arc::new(MemStore::default()),
            destination: None,
            telemetry: MappingTelemetry::new("m", &metrics, &Arc::new(Status::new(1))),
            clock: Clock::new(),
            budget: self.budget.clone(),
            retention_ms: Default::default(),
        })
    }
}

struct Running {
    queue: Arc<MemoryQueue>,
    function: Arc<FakeFunction>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    task: JoinHandle<()>,
    /// Set when a single poller runs (see [`one_poller`]).
    shared: Option<Arc<Shared>>,
}

fn function(
    script: impl Fn(&[Value], usize) -> Reply + Send + Sync + 'static,
) -> Arc<FakeFunction> {
    Arc::new(FakeFunction {
        calls: Mutex::new(Vec::new()),
        running: AtomicUsize::new(0),
        most_running: AtomicUsize::new(0),
        script: Box::new(script),
    })
}

/// Runs the whole mapping: `run_queue` resolving to the in-memory queue.
fn run(setup: Setup, script: impl Fn(&[Value], usize) -> Reply + Send + Sync + 'static) -> Running {
    let function = function(script);
    let metrics = Arc::new(Metrics::new());
    let ctx = setup.context(function.clone(), metrics.clone());
    let (cancel, tracker) = (CancellationToken::new(), TaskTracker::new());
    let queue = setup.queue.clone();
    let resolve = move || {
        let queue = queue.clone();
        async move { Ok(queue as Arc<dyn Queue>) }
    };
    let task = tokio::spawn(run_queue(ctx, resolve, tracker.clone(), cancel.clone()));
    Running {
        queue: setup.queue,
        function,
        metrics,
        cancel,
        tracker,
        task,
        shared: None,
    }
}

/// Runs poller 0 alone (no scaling).
fn one_poller(
    setup: Setup,
    script: impl Fn(&[Value], usize) -> Reply + Send + Sync + 'static,
) -> Running {
    let function = function(script);
    let metrics = Arc::new(Metrics::new());
    let ctx = setup.context(function.clone(), metrics.clone());
    let shared = Arc::new(Shared::new(ctx, setup.queue.clone(), 1000));
    shared.desired.store(1, Ordering::SeqCst);
    let (cancel, tracker) = (CancellationToken::new(), TaskTracker::new());
    let task = tokio::spawn(poller(shared.clone(), 0, cancel.clone()));
    Running {
        queue: setup.queue,
        function,
        metrics,
        cancel,
        tracker,
        task,
        shared: Some(shared),
    }
}

impl Running {
    fn metric(&self, name: &str) -> f64 {
        metric(&self.metrics, name)
    }

    /// Waits (on the paused clock) until `done` holds, for at most `limit`.
    async fn until(&self, what: &str, limit: Duration, done: impl Fn(&Self) -> bool) {
        let started = Instant::now();
        while !done(self) {
            assert!(started.elapsed() < limit, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn drained(&self) {
        self.until("the queue to drain", Duration::from_secs(600), |r| {
            r.queue.depth() == 0
        })
        .await;
    }

    /// Cancels and waits for every task to finish (in-flight batches settle first).
    async fn stop(&mut self) {
        self.cancel.cancel();
        (&mut self.task).await.unwrap();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

fn metric(metrics: &Metrics, name: &str) -> f64 {
    let prefix = format!("{name}{{mapping=\"m\"}} ");
    metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.parse().unwrap())
        .unwrap_or(0.0)
}

/// The value of `name{mapping="m",<label>}`.
fn labelled(metrics: &Metrics, name: &str, label: &str) -> f64 {
    metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .find_map(|l| l.rsplit(' ').next())
        .map(|v| v.parse().unwrap())
        .unwrap_or(0.0)
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

const SECOND: Duration = Duration::from_secs(1);
