//! Tumbling windows (`TumblingWindowInSeconds`) against the emulators: an HTTP function sums the
//! records' values into `state`; the final invocation of every window must carry exactly the sum
//! of that window's records, each counted once — also when sluice is killed (kill -9) or stopped
//! (SIGTERM) mid-window and restarted, since the state is stored with the checkpoint. Every event
//! is read with `aws_lambda_events`' time-window types. Kinesis on kinesis-local, DynamoDB Streams
//! on moto.

mod common;

use aws_lambda_events::event::dynamodb::TimeWindowEvent as DynamoDbTimeWindowEvent;
use aws_lambda_events::event::kinesis::KinesisTimeWindowEvent;
use aws_sdk_dynamodb::types::StreamViewType;
use common::sink::{Request, Sink};
use common::sluice::{config, free_port, Sluice};
use common::streams::{Stream, Table};
use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const WINDOW_SECS: i64 = 3;

/// One record as an event carried it: its sequence number and value.
fn values(event: &Value) -> Vec<(String, u64)> {
    event["Records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            if let Some(k) = r.get("kinesis") {
                use base64::Engine;
                let data = base64::engine::general_purpose::STANDARD
                    .decode(k["data"].as_str().unwrap())
                    .unwrap();
                let v = String::from_utf8(data).unwrap().parse().unwrap();
                (k["sequenceNumber"].as_str().unwrap().to_string(), v)
            } else {
                let d = &r["dynamodb"];
                let v = d["NewImage"]["V"]["N"].as_str().unwrap().parse().unwrap();
                (d["SequenceNumber"].as_str().unwrap().to_string(), v)
            }
        })
        .collect()
}

/// The function: adds the records' values to `state.sum` (string values, as AWS's types have
/// them) and answers with the state.
fn sum_into_state(req: &Request, _: &[Request]) -> (u16, Vec<(&'static str, String)>, String) {
    let event: Value = serde_json::from_slice(&req.body).unwrap();
    let before: u64 = event["state"]["sum"]
        .as_str()
        .map_or(0, |s| s.parse().unwrap());
    let sum = before + values(&event).iter().map(|(_, v)| v).sum::<u64>();
    let body = json!({"state": {"sum": sum.to_string()}, "batchItemFailures": []});
    (200, vec![], body.to_string())
}

/// What the function saw of each window (by shard and start, epoch ms: windows are per shard):
/// the records delivered in it and the state of each final invocation.
#[derive(Debug, Default)]
struct Window {
    records: BTreeMap<String, u64>,
    finals: Vec<u64>,
}

/// Reads every accepted event with AWS's types and groups it by window.
fn windows(sink: &Sink, dynamodb: bool) -> BTreeMap<(String, i64), Window> {
    let mut out: BTreeMap<(String, i64), Window> = BTreeMap::new();
    for req in sink.accepted.lock().unwrap().iter() {
        let event: Value = serde_json::from_slice(&req.body).unwrap();
        let props = if dynamodb {
            let e: DynamoDbTimeWindowEvent = serde_json::from_value(event.clone()).unwrap();
            assert_eq!(e.dynamo_db_event.records.len(), values(&event).len());
            e.time_window_properties
        } else {
            let e: KinesisTimeWindowEvent = serde_json::from_value(event.clone()).unwrap();
            assert_eq!(e.kinesis_event.records.len(), values(&event).len());
            e.time_window_properties
        };
        let (start, end) = (
            props.window.start.timestamp_millis(),
            props.window.end.timestamp_millis(),
        );
        assert_eq!(end - start, WINDOW_SECS * 1000, "{event}");
        assert_eq!(start % (WINDOW_SECS * 1000), 0, "aligned: {event}");
        let shard = props.shard_id.clone().unwrap_or_default();
        assert!(!shard.is_empty(), "{event}");
        assert!(props.event_source_arn.is_some());
        assert!(!props.is_window_terminated_early);
        let w = out.entry((shard, start)).or_default();
        if props.is_final_invoke_for_window {
            assert!(
                values(&event).is_empty(),
                "the final invocation has no records"
            );
            w.finals
                .push(props.state.get("sum").map_or(0, |s| s.parse().unwrap()));
        }
        w.records.extend(values(&event));
    }
    out
}

/// Every window's final state is the sum of its records, each counted once; every record is in
/// exactly one window; every window with records was closed.
fn assert_sums(windows: &BTreeMap<(String, i64), Window>, written: usize) {
    let mut seen = BTreeSet::new();
    for (start, w) in windows {
        assert!(
            !w.finals.is_empty(),
            "window {start:?} was never closed: {w:?}"
        );
        let expected: u64 = w.records.values().sum();
        for f in &w.finals {
            assert_eq!(
                *f, expected,
                "window {start:?}: final state vs its records: {w:?}"
            );
        }
        for seq in w.records.keys() {
            assert!(seen.insert(seq.clone()), "{seq} in two windows");
        }
    }
    assert_eq!(seen.len(), written, "every record in a window");
}

fn mapping(name: &str, arn: &str, url: &str, run: &str) -> String {
    format!(
        "  - Name: {name}\n    EventSourceArn: '{arn}'\n    StartingPosition: TRIM_HORIZON\n    BatchSize: 20\n    TumblingWindowInSeconds: {WINDOW_SECS}\n    Http:\n      Url: {url}\n      Headers: {{ X-Run: \"{run}\" }}\n"
    )
}

/// Puts `bursts` bursts of 25 records (values 1, 2, …) 700 ms apart; returns how many.
async fn put_bursts(kinesis: &aws_sdk_kinesis::Client, stream: &str, bursts: usize) -> usize {
    let mut n = 0;
    for b in 0..bursts {
        let burst: Vec<(String, String)> = (0..25)
            .map(|i| (format!("k{i}"), (b * 25 + i + 1).to_string()))
            .collect();
        n += put_records(kinesis, stream, burst).await.len();
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    n
}

/// Waits until every written record was delivered and every window with records was closed.
async fn wait_closed(sink: &Sink, dynamodb: bool, written: usize) {
    wait_for(
        "every record delivered and every window closed",
        Duration::from_secs(90),
        || async {
            let w = windows(sink, dynamodb);
            let records: usize = w.values().map(|w| w.records.len()).sum();
            (records >= written && w.values().all(|w| !w.finals.is_empty())).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_windows_final_state_is_the_sum_of_its_records() {
    let tb = testbed();
    let Stream { kinesis, name, arn } = Stream::create(&tb, "tumbling", 2).await;
    let sink = Sink::start(sum_into_state).await;
    let (sluice, _dir) = Sluice::run(&tb, &mapping("win", &arn, &sink.url, "1")).await;
    sluice.wait_ready().await;
    let written = put_bursts(&kinesis, &name, 10).await;
    wait_closed(&sink, false, written).await;
    let w = windows(&sink, false);
    assert!(w.len() >= 2, "the records span several windows: {w:?}");
    assert_sums(&w, written);
}

/// Runs a mapping, stops it mid-window with `stop`, starts it again, and checks the sums.
async fn restart_mid_window(sigkill: bool) {
    let tb = testbed();
    let prefix = if sigkill {
        "tumbling-kill"
    } else {
        "tumbling-term"
    };
    let Stream { kinesis, name, arn } = Stream::create(&tb, prefix, 1).await;
    let sink = Sink::start(sum_into_state).await;
    let dir = tempfile::tempdir().unwrap();
    let cp = dir.path().join("cp");
    let mut first = Sluice::start(
        dir.path(),
        "run1",
        &config(&tb, &cp, free_port(), &mapping("win", &arn, &sink.url, "1")),
    )
    .await;
    first.wait_ready().await;
    let putter = {
        let (kinesis, name) = (kinesis.clone(), name.clone());
        tokio::spawn(async move { put_bursts(&kinesis, &name, 12).await })
    };
    // Mid-window: some records were summed into a window's state, not yet closed.
    wait_for("a window under way", Duration::from_secs(60), || async {
        let w = windows(&sink, false);
        w.values()
            .any(|w| w.finals.is_empty() && w.records.len() >= 10)
            .then_some(())
    })
    .await;
    if sigkill {
        first.kill9().await;
    } else {
        assert_eq!(first.terminate().await, 0);
    }
    let second = Sluice::start(
        dir.path(),
        "run2",
        &config(&tb, &cp, free_port(), &mapping("win", &arn, &sink.url, "2")),
    )
    .await;
    let written = putter.await.unwrap();
    wait_closed(&sink, false, written).await;
    drop(second);
    let w = windows(&sink, false);
    assert_sums(&w, written);
    // The restart came mid-stream: run 2 delivered records too.
    let run2 = sink
        .accepted
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.run == "2")
        .map(|r| values(&serde_json::from_slice(&r.body).unwrap()).len())
        .sum::<usize>();
    assert!(run2 > 0, "the stop came too late to test anything");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_window_then_restart_keeps_every_sum_right() {
    restart_mid_window(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_window_then_restart_keeps_every_sum_right() {
    restart_mid_window(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_streams_windows_sum_their_records() {
    let tb = testbed();
    let table = Table::create(&tb, "tumbling", StreamViewType::NewImage).await;
    let sink = Sink::start(sum_into_state).await;
    let (sluice, _dir) = Sluice::run(&tb, &mapping("ddb", &table.stream_arn, &sink.url, "1")).await;
    sluice.wait_ready().await;
    let mut written = 0;
    for round in 0..4u64 {
        for i in 0..10u64 {
            let id = round * 10 + i;
            table.put_numbers(id, "V", id + 1).await;
            written += 1;
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    wait_closed(&sink, true, written).await;
    let w = windows(&sink, true);
    assert_sums(&w, written);
    let total: u64 = w.values().flat_map(|w| w.records.values()).sum();
    assert_eq!(total, (1..=40).sum::<u64>());
}
