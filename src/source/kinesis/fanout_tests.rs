//! The enhanced fan-out reader against a scripted [`Subscribe`] on a paused clock: records handed
//! on in order, every new subscription from just after the last record handed on, the 5-second
//! rule, renewals, the ways a shard ends, and errors.

use super::fanout::*;
use crate::model::{SequenceNumber, StartingPosition};
use crate::source::{Page, PartitionReader, Position, Record, SourceError};
use async_trait::async_trait;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// What one subscription does, step by step; once the script runs out it stays silent.
enum Step {
    Event(Pushed),
    Fail(Refused),
    /// The service ends the subscription.
    End,
    Pause(Duration),
}

#[derive(Default)]
struct Script {
    /// One entry per SubscribeToShard call: refused, or the subscription's steps.
    subs: Mutex<VecDeque<Result<Vec<Step>, Refused>>>,
    /// Each call: where from, at how many ms after the start.
    calls: Mutex<Vec<(Position, u64)>>,
    t0: Mutex<Option<Instant>>,
}

impl Script {
    fn new() -> Arc<Script> {
        let s = Arc::new(Script::default());
        *s.t0.lock().unwrap() = Some(Instant::now());
        s
    }
    fn then(self: &Arc<Self>, sub: Result<Vec<Step>, Refused>) -> Arc<Self> {
        self.subs.lock().unwrap().push_back(sub);
        self.clone()
    }
    fn calls(&self) -> Vec<(Position, u64)> {
        self.calls.lock().unwrap().clone()
    }
}

struct FakeSub(VecDeque<Step>);

#[async_trait]
impl Subscription for FakeSub {
    async fn next(&mut self) -> Result<Option<Pushed>, Refused> {
        loop {
            match self.0.pop_front() {
                Some(Step::Event(e)) => return Ok(Some(e)),
                Some(Step::Fail(r)) => return Err(r),
                Some(Step::End) => return Ok(None),
                Some(Step::Pause(d)) => tokio::time::sleep(d).await,
                None => std::future::pending::<()>().await,
            }
        }
    }
}

#[async_trait]
impl Subscribe for Script {
    async fn subscribe(
        &self,
        _shard: &str,
        from: &Position,
    ) -> Result<Box<dyn Subscription>, Refused> {
        let t0 = self.t0.lock().unwrap().expect("started");
        let ms = (Instant::now() - t0).as_millis() as u64;
        self.calls.lock().unwrap().push((from.clone(), ms));
        let next = self.subs.lock().unwrap().pop_front();
        match next.unwrap_or_else(|| Ok(Vec::new())) {
            Ok(steps) => Ok(Box::new(FakeSub(steps.into()))),
            Err(r) => Err(r),
        }
    }
}

fn rec(seq: &str) -> Record {
    Record {
        sequence: SequenceNumber(seq.into()),
        arrival_ms: 0,
        lane_key: 0,
        event: seq.as_bytes().to_vec(),
    }
}

fn event(seqs: &[&str], millis_behind: i64) -> Step {
    Step::Event(Pushed {
        records: seqs.iter().map(|s| rec(s)).collect(),
        continuation: seqs.last().map_or("c".to_string(), |s| s.to_string()),
        millis_behind,
        child_shards: false,
    })
}

fn after(s: &str) -> Position {
    Position::After(SequenceNumber(s.into()))
}

const TRIM_HORIZON: Position = Position::Start(StartingPosition::TrimHorizon);

type Closed = Arc<Mutex<std::collections::HashSet<String>>>;

fn reader(script: &Arc<Script>, renew_after: Duration) -> (FanoutReader, Closed) {
    let closed = Closed::default();
    let r = FanoutReader::new(
        script.clone(),
        "shard-1".into(),
        TRIM_HORIZON,
        closed.clone(),
        renew_after,
    );
    (r, closed)
}

async fn paced(r: &mut FanoutReader) -> Result<Page, SourceError> {
    tokio::time::sleep_until(r.next_read_at()).await;
    r.read().await
}

/// Reads until a page with records (or the end, or an error) comes.
async fn next_records(r: &mut FanoutReader) -> Result<Page, SourceError> {
    loop {
        match paced(r).await? {
            Page::Records { records, .. } if records.is_empty() => continue,
            page => return Ok(page),
        }
    }
}

fn seqs(page: &Page) -> Vec<String> {
    match page {
        Page::Records { records, .. } => records.iter().map(|r| r.sequence.0.clone()).collect(),
        Page::ShardEnd => panic!("the shard ended"),
    }
}

#[tokio::test(start_paused = true)]
async fn each_event_is_a_page_and_a_new_subscription_resumes_after_the_last_record() {
    let script = Script::new()
        .then(Ok(vec![
            event(&["1", "2"], 5_000),
            event(&["3"], 0),
            Step::Pause(Duration::from_millis(500)),
            Step::End,
        ]))
        .then(Ok(vec![event(&["4"], 0)]));
    let (mut r, _) = reader(&script, RENEW_AFTER);
    let first = next_records(&mut r).await.unwrap();
    assert_eq!(seqs(&first), ["1", "2"]);
    assert!(matches!(
        first,
        Page::Records {
            caught_up: false,
            millis_behind: Some(5_000),
            ..
        }
    ));
    let second = next_records(&mut r).await.unwrap();
    assert!(matches!(
        second,
        Page::Records {
            caught_up: true,
            ..
        }
    ));
    assert_eq!(r.start, after("3"));
    // The service ended the subscription after 500 ms: the next one waits for the 5-second rule.
    assert_eq!(seqs(&next_records(&mut r).await.unwrap()), ["4"]);
    assert_eq!(script.calls(), [(TRIM_HORIZON, 0), (after("3"), 5_000)]);
}

#[tokio::test(start_paused = true)]
async fn a_quiet_subscription_returns_empty_pages_and_is_renewed_after_its_period() {
    let renew = Duration::from_secs(3);
    let script = Script::new()
        .then(Ok(vec![event(&["1"], 0)]))
        // The dropped subscription still holds the shard (kinesis-local frees it at its next tick).
        .then(Err(Refused::InUse("held".into())))
        .then(Ok(vec![event(&["2"], 0)]));
    let (mut r, _) = reader(&script, renew);
    assert_eq!(seqs(&next_records(&mut r).await.unwrap()), ["1"]);
    // A quiet subscription: a read waits at most MAX_WAIT, then returns nothing.
    let before = Instant::now();
    let page = paced(&mut r).await.unwrap();
    assert!(matches!(page, Page::Records { ref records, .. } if records.is_empty()));
    assert_eq!(Instant::now() - before, MAX_WAIT);
    // Renewed after 3 s (not within 5 s of the last call), ResourceInUse taken quietly, again
    // 1 s later, from after the last record handed on.
    assert_eq!(seqs(&next_records(&mut r).await.unwrap()), ["2"]);
    assert_eq!(
        script.calls(),
        [(TRIM_HORIZON, 0), (after("1"), 5_000), (after("1"), 6_000)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_subscription_without_events_is_renewed_after_the_stall_limit() {
    let script = Script::new()
        .then(Ok(vec![]))
        .then(Ok(vec![event(&["1"], 0)]));
    let (mut r, _) = reader(&script, RENEW_AFTER);
    assert_eq!(seqs(&next_records(&mut r).await.unwrap()), ["1"]);
    let stall = STALL.as_millis() as u64;
    let renew = stall + RENEW_PAUSE.as_millis() as u64;
    assert_eq!(script.calls(), [(TRIM_HORIZON, 0), (TRIM_HORIZON, renew)]);
}

#[tokio::test(start_paused = true)]
async fn child_shards_or_no_continuation_end_the_shard_after_its_records() {
    let mut last = Pushed {
        records: vec![rec("9")],
        continuation: "9".into(),
        millis_behind: 0,
        child_shards: true,
    };
    let script = Script::new().then(Ok(vec![Step::Event(last)]));
    let (mut r, _) = reader(&script, RENEW_AFTER);
    assert_eq!(seqs(&next_records(&mut r).await.unwrap()), ["9"]);
    assert!(matches!(paced(&mut r).await, Ok(Page::ShardEnd)));
    last = Pushed::default();
    let script = Script::new().then(Ok(vec![Step::Event(last)]));
    let (mut r, _) = reader(&script, RENEW_AFTER);
    assert!(matches!(next_records(&mut r).await, Ok(Page::ShardEnd)));
    assert!(r.ended);
    assert_eq!(
        script.calls().len(),
        1,
        "an ended reader subscribes no more"
    );
}

/// kinesis-local never sends ChildShards: the listing shows the shard closed, and a subscription
/// made after that which finds nothing at the tip is the end.
#[tokio::test(start_paused = true)]
async fn a_shard_listed_closed_ends_at_the_tip_of_a_fresh_subscription() {
    let script = Script::new()
        .then(Ok(vec![
            event(&["1"], 0),
            Step::Pause(Duration::from_millis(100)),
            event(&[], 0),
        ]))
        .then(Ok(vec![event(&["2"], 0), event(&[], 0)]));
    let (mut r, closed) = reader(&script, RENEW_AFTER);
    assert_eq!(seqs(&next_records(&mut r).await.unwrap()), ["1"]);
    // Empty at the tip, but the shard is not known closed: not the end.
    let page = paced(&mut r).await.unwrap();
    assert!(
        matches!(page, Page::Records { ref records, caught_up: true, .. } if records.is_empty())
    );
    assert!(!r.ended);
    closed.lock().unwrap().insert("shard-1".into());
    // A record still in flight when the shard was found closed comes through the new subscription.
    assert_eq!(seqs(&next_records(&mut r).await.unwrap()), ["2"]);
    assert!(matches!(next_records(&mut r).await, Ok(Page::ShardEnd)));
    assert_eq!(
        script.calls(),
        [(TRIM_HORIZON, 0), (after("1"), 5_000)],
        "a fresh subscription, not within 5 s of the last"
    );
}

#[tokio::test(start_paused = true)]
async fn refusals_are_source_errors_and_keep_the_position() {
    let script = Script::new()
        .then(Err(Refused::InUse("held elsewhere".into())))
        .then(Err(Refused::Source(SourceError::NotFound(
            "consumer c: register it".into(),
        ))))
        .then(Ok(vec![
            event(&["1"], 0),
            Step::Fail(Refused::Source(SourceError::Service("reset".into()))),
        ]))
        .then(Ok(vec![event(&["2"], 0)]));
    let (mut r, _) = reader(&script, RENEW_AFTER);
    // Held by another subscription (not one this reader dropped): throttled, retried in 1 s.
    assert!(matches!(
        paced(&mut r).await,
        Err(SourceError::Throttled(m)) if m.contains("held elsewhere") && m.contains("shard-1")
    ));
    assert!(matches!(paced(&mut r).await, Err(SourceError::NotFound(m)) if m.contains("register")));
    assert_eq!(seqs(&next_records(&mut r).await.unwrap()), ["1"]);
    assert!(matches!(paced(&mut r).await, Err(SourceError::Service(_))));
    assert_eq!(seqs(&next_records(&mut r).await.unwrap()), ["2"]);
    assert_eq!(
        script.calls(),
        [
            (TRIM_HORIZON, 0),
            (TRIM_HORIZON, 1_000),
            (TRIM_HORIZON, 1_000),
            (after("1"), 6_000)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_reader_opened_at_the_end_subscribes_to_nothing() {
    let script = Script::new();
    let mut r = FanoutReader::new(
        script.clone(),
        "shard-1".into(),
        Position::End,
        Closed::default(),
        RENEW_AFTER,
    );
    assert!(matches!(r.read().await, Ok(Page::ShardEnd)));
    assert!(script.calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_read_cancelled_while_waiting_loses_nothing() {
    let script = Script::new().then(Ok(vec![
        event(&["1"], 0),
        Step::Pause(Duration::from_millis(800)),
        event(&["2"], 0),
    ]));
    let (mut r, _) = reader(&script, RENEW_AFTER);
    assert_eq!(seqs(&next_records(&mut r).await.unwrap()), ["1"]);
    // Cancelled 300 ms into the wait for the next event.
    let cancelled = tokio::time::timeout(Duration::from_millis(300), r.read()).await;
    assert!(cancelled.is_err());
    assert_eq!(r.start, after("1"));
    assert_eq!(seqs(&next_records(&mut r).await.unwrap()), ["2"]);
}
