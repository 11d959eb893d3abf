//! Tumbling windows in the shard worker, on a paused clock against in-memory fakes: batches cut at
//! window boundaries, state carried from response to invocation, a response without state failing,
//! the final invocation (by the clock, or when a later window's record or the shard end shows the
//! window complete), early termination, partial batches, and resuming stored state. Every event is
//! read back with `aws_lambda_events`' `KinesisTimeWindowEvent`.

use async_trait::async_trait;
use aws_lambda_events::event::kinesis::KinesisTimeWindowEvent;
use bytes::Bytes;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{context, record, run_worker, seq, FakeReader, SHARD};
use crate::checkpoint::{
    check_window, Checkpoint, CheckpointError, CheckpointStore, Commit, CommitError, Verdict,
    WindowState,
};
use crate::config::{ErrorHandling, Mapping, MappingSource};
use crate::dispatch::{DispatchError, Dispatcher, Invoked};
use crate::source::{Record, SequenceNumber};
use crate::telemetry::Metrics;
use crate::worker::shard::Exit;
use crate::worker::Clock;

const LEN_MS: i64 = 10_000;

/// A store keeping window state with each checkpoint, as the real ones do.
struct WindowStore {
    writes: Mutex<Vec<(Checkpoint, Option<WindowState>)>>,
    max_state: usize,
}

#[async_trait]
impl CheckpointStore for WindowStore {
    async fn get(&self, _: &str, _: &str) -> Result<Option<Checkpoint>, CheckpointError> {
        Ok(self.writes.lock().unwrap().last().map(|w| w.0.clone()))
    }
    async fn commit(&self, m: &str, p: &str, c: Commit<'_>) -> Result<(), CommitError> {
        self.commit_window(m, p, c, None).await
    }
    async fn window(
        &self,
        _: &str,
        _: &str,
    ) -> Result<Option<(Checkpoint, WindowState)>, CheckpointError> {
        let writes = self.writes.lock().unwrap();
        Ok(writes
            .last()
            .and_then(|(cp, w)| Some((cp.clone(), w.clone()?))))
    }
    async fn commit_window(
        &self,
        _: &str,
        _: &str,
        c: Commit<'_>,
        window: Option<&WindowState>,
    ) -> Result<(), CommitError> {
        let mut writes = self.writes.lock().unwrap();
        let (cp, w) = match writes.last() {
            Some((cp, w)) => (Some(cp), w.as_ref()),
            None => (None, None),
        };
        if check_window(cp, w, None, &c, window)? == Verdict::Write {
            writes.push((c.to.clone(), window.cloned()));
        }
        Ok(())
    }
    fn max_window_state_bytes(&self) -> usize {
        self.max_state
    }
}

type Answer = dyn Fn(&Value, usize) -> Result<Invoked, DispatchError> + Send + Sync;

/// Records every event; answers with `answer(event, call number)`.
struct Function {
    events: Mutex<Vec<Value>>,
    answer: Box<Answer>,
}

#[async_trait]
impl Dispatcher for Function {
    async fn invoke(&self, payload: Bytes) -> Result<Invoked, DispatchError> {
        let event: Value = serde_json::from_slice(&payload).unwrap();
        let n = {
            let mut events = self.events.lock().unwrap();
            events.push(event.clone());
            events.len()
        };
        (self.answer)(&event, n)
    }
    fn function_arn(&self) -> &str {
        "arn:aws:lambda:us-east-1:000000000000:function:f"
    }
}

fn respond(body: Value) -> Result<Invoked, DispatchError> {
    super::ok_body(&body.to_string())
}

fn ids(event: &Value) -> Vec<u64> {
    event["Records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect()
}

/// The aggregating function of the docs: adds the records' ids to `state.sum`.
fn summed(event: &Value) -> Value {
    let before: u64 = event["state"]["sum"]
        .as_str()
        .map_or(0, |s| s.parse().unwrap());
    let sum = before + ids(event).iter().sum::<u64>();
    json!({"state": {"sum": sum.to_string()}, "batchItemFailures": []})
}

fn sum_all(event: &Value, _: usize) -> Result<Invoked, DispatchError> {
    respond(summed(event))
}

/// Answers the first invocation with `first`, every later one as [`sum_all`] does.
fn first_then_sum(
    first: Value,
) -> impl Fn(&Value, usize) -> Result<Invoked, DispatchError> + Send + Sync + 'static {
    move |event, n| {
        if n == 1 {
            respond(first.clone())
        } else {
            sum_all(event, n)
        }
    }
}

/// Record `id` (sequence `1000 + id`) arrived at `arrival_ms`.
fn at(id: u64, arrival_ms: i64) -> Record {
    Record {
        sequence: SequenceNumber((1000 + id).to_string()),
        arrival_ms,
        lane_key: 0,
        event: format!("{{\"id\":{id}}}").into_bytes(),
    }
}

struct Run {
    function: Arc<Function>,
    store: Arc<WindowStore>,
    started: Instant,
    /// When each event was sent, after the start.
    sent_at: Arc<Mutex<Vec<Duration>>>,
}

impl Run {
    fn events(&self) -> Vec<Value> {
        self.function.events.lock().unwrap().clone()
    }
    /// Every event, as [`read`] reads it.
    fn read_events(&self) -> Vec<Read> {
        self.events().iter().map(read).collect()
    }
    fn last_write(&self) -> (Checkpoint, Option<WindowState>) {
        self.store.writes.lock().unwrap().last().cloned().unwrap()
    }
}

struct Setup {
    errors: ErrorHandling,
    batch_size: usize,
    interval: Duration,
    idle: usize,
    max_state: usize,
    /// What the store holds before the worker starts.
    stored: Option<(Checkpoint, Option<WindowState>)>,
    /// Sends only the records whose `id` is one of these (a `FilterCriteria` pattern).
    only_ids: Option<&'static str>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            errors: ErrorHandling::default(),
            batch_size: 100,
            interval: Duration::from_millis(500),
            idle: 0,
            max_state: 1024 * 1024,
            stored: None,
            only_ids: None,
        }
    }
}

/// The start of a 10 s window, a minute before the clock's now.
fn window_before(clock: &Clock) -> i64 {
    let t = clock.now_ms() - 60_000;
    t - t.rem_euclid(LEN_MS)
}

async fn run(
    setup: Setup,
    pages: impl FnOnce(&Clock) -> Vec<Vec<Record>>,
    answer: impl Fn(&Value, usize) -> Result<Invoked, DispatchError> + Send + Sync + 'static,
) -> Run {
    let clock = Clock::new();
    let started = Instant::now();
    let sent_at = Arc::new(Mutex::new(Vec::new()));
    let times = sent_at.clone();
    let function = Arc::new(Function {
        events: Mutex::new(Vec::new()),
        answer: Box::new(move |e, n| {
            times.lock().unwrap().push(started.elapsed());
            answer(e, n)
        }),
    });
    let store = Arc::new(WindowStore {
        writes: Mutex::new(setup.stored.clone().into_iter().collect()),
        max_state: setup.max_state,
    });
    let mut mapping: Mapping =
        Mapping::kinesis_for_tests(setup.batch_size, Duration::ZERO, setup.errors.clone());
    if let MappingSource::Kinesis(s) = &mut mapping.source {
        s.tumbling_window = Some(Duration::from_millis(LEN_MS as u64));
    }
    if let Some(ids) = setup.only_ids {
        let pattern = crate::filter::Pattern::parse(&format!(r#"{{"id": {ids}}}"#)).unwrap();
        mapping.filter_criteria = crate::filter::FilterCriteria::new(vec![pattern]);
    }
    let metrics = Arc::new(Metrics::new());
    let ctx = context(
        mapping,
        function.clone(),
        store.clone(),
        None,
        &metrics,
        clock,
    );
    let reader = FakeReader::new(pages(&clock), setup.interval, setup.idle);
    let committed = setup.stored.map(|s| s.0);
    let exit = run_worker(
        ctx,
        store.clone(),
        reader,
        committed,
        CancellationToken::new(),
    )
    .await;
    assert_eq!(exit, Exit::Ended);
    Run {
        function,
        store,
        started,
        sent_at,
    }
}

/// An event as [`read`] reads it: (ids, state sum, final, early, window start ms).
type Read = (Vec<u64>, Option<String>, bool, bool, i64);

/// Each event read as AWS's type.
fn read(event: &Value) -> Read {
    // The fake records are not Kinesis entries: the window fields are read as AWS's type.
    let mut fields = event.clone();
    fields["Records"] = json!([]);
    let typed: KinesisTimeWindowEvent = serde_json::from_value(fields).unwrap();
    let p = &typed.time_window_properties;
    assert_eq!(p.shard_id.as_deref(), Some(SHARD));
    assert_eq!(
        p.event_source_arn.as_deref(),
        Some("arn:aws:kinesis:us-east-1:000000000000:stream/s")
    );
    assert_eq!(
        (p.window.end - p.window.start).num_milliseconds(),
        LEN_MS,
        "{event}"
    );
    (
        ids(event),
        p.state.get("sum").cloned(),
        p.is_final_invoke_for_window,
        p.is_window_terminated_early,
        p.window.start.timestamp_millis(),
    )
}

fn sum(s: &str) -> Option<String> {
    Some(s.to_string())
}

/// The state `{"sum": sum}` of the window starting at `start_ms`, as stored with a checkpoint.
fn summed_state(start_ms: i64, sum: &str) -> WindowState {
    WindowState {
        start_ms,
        state: serde_json::from_value(json!({ "sum": sum })).unwrap(),
    }
}

#[tokio::test(start_paused = true)]
async fn batches_stay_in_their_window_and_state_carries_to_the_final_invocation() {
    let w0 = std::sync::OnceLock::new();
    let r = run(
        Setup {
            batch_size: 2,
            ..Default::default()
        },
        |c| {
            let w = *w0.get_or_init(|| window_before(c));
            vec![
                vec![at(1, w + 1), at(2, w + 2), at(3, w + 3)],
                vec![at(4, w + LEN_MS + 5), at(5, w + 3 * LEN_MS)],
            ]
        },
        sum_all,
    )
    .await;
    let w = *w0.get().unwrap();
    let got = r.read_events();
    assert_eq!(
        got,
        [
            (vec![1, 2], None, false, false, w),
            (vec![3], sum("3"), false, false, w),
            (vec![], sum("6"), true, false, w),
            (vec![4], None, false, false, w + LEN_MS),
            (vec![], sum("4"), true, false, w + LEN_MS),
            // An empty window in between is skipped.
            (vec![5], None, false, false, w + 3 * LEN_MS),
            // The shard ended: the last window is closed before its end.
            (vec![], sum("5"), true, false, w + 3 * LEN_MS),
        ]
    );
    // After a final invocation the state is dropped; the checkpoint moves past every record.
    assert_eq!(r.last_write(), (Checkpoint::ShardEnd, None));
    let writes = r.store.writes.lock().unwrap().clone();
    assert_eq!(
        writes[1],
        (seq(3), Some(summed_state(w, "6"))),
        "the state is committed with the checkpoint it belongs to"
    );
    assert_eq!(
        writes[2],
        (seq(3), None),
        "the final invocation drops it, the checkpoint staying"
    );
}

#[tokio::test(start_paused = true)]
async fn the_final_invocation_comes_once_the_window_is_over_by_the_clock() {
    // (now, the window's start) when the pages were built, i.e. when the run started.
    let times = std::sync::OnceLock::new();
    let r = run(
        Setup {
            interval: Duration::from_secs(1),
            idle: 40,
            ..Default::default()
        },
        |c| {
            let now = c.now_ms();
            times.get_or_init(|| (now, now - now.rem_euclid(LEN_MS)));
            vec![vec![record(c, 1, 0)]]
        },
        sum_all,
    )
    .await;
    let events = r.events();
    assert_eq!(events.len(), 2, "{events:#?}");
    let (_, state, last, _, _) = read(&events[1]);
    assert!(last);
    assert_eq!(state, sum("1"));
    let (now, start) = *times.get().unwrap();
    let grace = crate::worker::shard::LATE_ARRIVAL_GRACE;
    let due = Duration::from_millis((start + LEN_MS - now) as u64) + grace;
    let sent = r.sent_at.lock().unwrap()[1];
    // Reads are a second apart: the first caught-up read a grace after the window's end.
    assert!(
        sent >= due && sent <= due + Duration::from_millis(1100),
        "sent {sent:?}, due {due:?}"
    );
    let _ = r.started;
}

#[tokio::test(start_paused = true)]
async fn a_response_without_state_is_a_failed_invocation() {
    let w0 = std::sync::OnceLock::new();
    let r = run(
        Setup {
            errors: ErrorHandling {
                max_retry_attempts: Some(5),
                ..Default::default()
            },
            ..Default::default()
        },
        |c| {
            let w = *w0.get_or_init(|| window_before(c));
            vec![vec![at(1, w + 1), at(2, w + 2)]]
        },
        |event, n| match n {
            // No state, then a state that is not an object: both failures, retried.
            1 => respond(json!({"batchItemFailures": []})),
            2 => respond(json!({"state": 7})),
            _ => sum_all(event, n),
        },
    )
    .await;
    let got = r.read_events();
    let w = *w0.get().unwrap();
    assert_eq!(
        got,
        [
            (vec![1, 2], None, false, false, w),
            (vec![1, 2], None, false, false, w),
            (vec![1, 2], None, false, false, w),
            (vec![], sum("3"), true, false, w),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_partial_batch_response_carries_the_state_of_the_records_before_the_failure() {
    let w0 = std::sync::OnceLock::new();
    let r = run(
        Setup {
            errors: ErrorHandling {
                report_batch_item_failures: true,
                ..Default::default()
            },
            ..Default::default()
        },
        |c| {
            let w = *w0.get_or_init(|| window_before(c));
            vec![vec![at(1, w + 1), at(2, w + 2), at(3, w + 3), at(4, w + 4)]]
        },
        // Records 1 and 2 done (state 3), 3 failed: 3 and 4 are retried.
        first_then_sum(json!({
            "state": {"sum": "3"},
            "batchItemFailures": [{"itemIdentifier": "1003"}]
        })),
    )
    .await;
    let w = *w0.get().unwrap();
    let got = r.read_events();
    assert_eq!(
        got,
        [
            (vec![1, 2, 3, 4], None, false, false, w),
            (vec![3, 4], sum("3"), false, false, w),
            (vec![], sum("10"), true, false, w),
        ]
    );
    let writes = r.store.writes.lock().unwrap().clone();
    assert_eq!(writes[0], (seq(2), Some(summed_state(w, "3"))));
}

#[tokio::test(start_paused = true)]
async fn state_over_the_limit_ends_the_window_early_and_it_goes_on_fresh() {
    let w0 = std::sync::OnceLock::new();
    let big = "x".repeat(200);
    let r = run(
        Setup {
            batch_size: 1,
            max_state: 100,
            ..Default::default()
        },
        |c| {
            let w = *w0.get_or_init(|| window_before(c));
            vec![vec![at(1, w + 1), at(2, w + 2)]]
        },
        first_then_sum(json!({"state": {"sum": "1", "pad": big}})),
    )
    .await;
    let w = *w0.get().unwrap();
    let got = r.read_events();
    assert_eq!(
        got,
        [
            (vec![1], None, false, false, w),
            // The early end carries the oversized state; the window goes on with {}.
            (vec![], sum("1"), false, true, w),
            (vec![2], None, false, false, w),
            (vec![], sum("2"), true, false, w),
        ]
    );
    assert!(r.events()[1]["state"]["pad"].is_string());
    let writes = r.store.writes.lock().unwrap().clone();
    assert_eq!(
        writes[0].1.as_ref().unwrap().state,
        serde_json::Map::new(),
        "the oversized state is never stored"
    );
}

#[tokio::test(start_paused = true)]
async fn stored_state_is_resumed_and_a_failing_final_invocation_is_retried() {
    let w0 = std::sync::OnceLock::new();
    let clock_w = {
        let c = Clock::new();
        window_before(&c)
    };
    let stored = summed_state(clock_w, "3");
    let r = run(
        Setup {
            stored: Some((seq(2), Some(stored))),
            ..Default::default()
        },
        |_| {
            let w = *w0.get_or_init(|| clock_w);
            vec![vec![at(3, w + 3), at(4, w + LEN_MS + 1)]]
        },
        |event, n| match n {
            2 => super::function_error(),
            _ => sum_all(event, n),
        },
    )
    .await;
    let w = clock_w;
    let got = r.read_events();
    assert_eq!(
        got,
        [
            (vec![3], sum("3"), false, false, w),
            (vec![], sum("6"), true, false, w),
            (vec![], sum("6"), true, false, w),
            (vec![4], None, false, false, w + LEN_MS),
            (vec![], sum("4"), true, false, w + LEN_MS),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_filtered_tail_is_checkpointed_past_with_the_window_state_kept() {
    let w0 = std::sync::OnceLock::new();
    let r = run(
        Setup {
            only_ids: Some("[1, 3, 5]"),
            ..Default::default()
        },
        |c| {
            let w = *w0.get_or_init(|| window_before(c));
            vec![
                vec![at(1, w + 1), at(2, w + 2), at(3, w + 3), at(4, w + 4)],
                vec![at(5, w + 5), at(6, w + 6)],
            ]
        },
        sum_all,
    )
    .await;
    let w = *w0.get().unwrap();
    assert_eq!(
        r.read_events(),
        [
            (vec![1, 3], None, false, false, w),
            (vec![5], sum("4"), false, false, w),
            (vec![], sum("9"), true, false, w),
        ]
    );
    let writes = r.store.writes.lock().unwrap().clone();
    // The filtered tails (4, then 6) move the checkpoint with the window's state as it stands, so
    // a restart there resumes the aggregation instead of starting it over.
    assert_eq!(
        writes,
        [
            (seq(3), Some(summed_state(w, "4"))),
            (seq(4), Some(summed_state(w, "4"))),
            (seq(5), Some(summed_state(w, "9"))),
            (seq(6), Some(summed_state(w, "9"))),
            (seq(6), None),
            (Checkpoint::ShardEnd, None),
        ]
    );
}
