//! ParallelizationFactor against the emulators (docs/parallelization.md): one Kinesis shard
//! (kinesis-local) or DynamoDB stream (moto) read in 5 lanes by an HTTP function run by the test.
//! Every record arrives, in order per partition key (per item for DynamoDB), with more than one
//! batch of the shard in flight at once; a key that keeps failing goes to the on-failure
//! destination while the other lanes go on; a kill -9 and restart loses nothing.

mod common;

use aws_sdk_dynamodb::types::StreamViewType;
use common::sink::{Request, Sink};
use common::sluice::{config, free_port, Sluice};
use common::streams::{as_set, kill_9_and_restart, last_seq, wait_delivered_once, Stream, Table};
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const LANES: u64 = 5;

fn mapping(name: &str, arn: &str, url: &str, run: &str, batch: usize, extra: &str) -> String {
    format!(
        "  - Name: {name}\n    EventSourceArn: '{arn}'\n    StartingPosition: TRIM_HORIZON\n    BatchSize: {batch}\n    ParallelizationFactor: {LANES}\n    Http:\n      Url: {url}\n      Headers: {{ X-Run: \"{run}\" }}\n{extra}"
    )
}

/// The lane sluice puts a Kinesis partition key in.
fn lane(key: &str) -> u64 {
    ::sluice::model::lane_key(key.as_bytes()) % LANES
}

/// The most requests the function was answering at one instant.
fn max_concurrency(received: &[Request]) -> usize {
    let mut edges: Vec<(std::time::Instant, i32)> = Vec::new();
    for r in received {
        edges.push((r.arrived_at, 1));
        if let Some(done) = r.answered_at {
            edges.push((done, -1));
        }
    }
    // Ends before starts at the same instant: touching is not overlapping.
    edges.sort_by_key(|&(at, d)| (at, d));
    let (mut now, mut max) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        max = max.max(now);
    }
    max as usize
}

/// Asserts each key's records are strictly increasing by sequence number.
fn assert_ordered_per_key(label: &str, items: &[Written]) {
    let mut by_key: BTreeMap<&str, Vec<&Written>> = BTreeMap::new();
    for w in items {
        by_key.entry(&w.key).or_default().push(w);
    }
    for (key, recs) in by_key {
        for pair in recs.windows(2) {
            assert!(
                seq_key(&pair[0].seq) < seq_key(&pair[1].seq),
                "{label}: key {key} out of order: {} then {}",
                pair[0].seq,
                pair[1].seq
            );
        }
    }
}

/// Waits until `mapping`'s checkpoint reaches the last record `written` (all on one shard).
async fn wait_checkpoint_at_last(sluice: &Sluice, mapping: &str, written: &[Written]) {
    let last = last_seq(written);
    sluice
        .wait_checkpoint("the last record", mapping, &written[0].shard, &last)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinesis_lanes_deliver_every_record_in_order_per_key_with_batches_at_once() {
    let tb = testbed();
    let Stream { kinesis, name, arn } = Stream::create(&tb, "lanes", 1).await;
    let written = put_records(&kinesis, &name, records("p", 10_000, 8)).await;
    let sink = Sink::start_slow(Duration::from_millis(50), |_, _| (200, vec![], "{}".into())).await;
    let (sluice, _dir) = Sluice::run(&tb, &mapping("lanes", &arn, &sink.url, "1", 100, "")).await;
    let delivered = wait_delivered_once(
        "all 10,000 records delivered",
        Duration::from_secs(300),
        || sink.delivered(),
        &written,
        "no duplicates in a clean run",
    )
    .await;
    assert_ordered_per_key("lanes", &delivered);
    for req in sink.accepted.lock().unwrap().iter() {
        assert!(req.records.len() <= 100);
        let lanes: BTreeSet<u64> = req.records.iter().map(|r| lane(&r.key)).collect();
        assert_eq!(lanes.len(), 1, "a batch holds one lane's keys");
    }
    let used: BTreeSet<u64> = (0..8).map(|k| lane(&format!("key-{k}"))).collect();
    let max = max_concurrency(&sink.received.lock().unwrap());
    assert!(max > 1, "batches of the one shard ran at once");
    assert!(
        max <= used.len(),
        "{max} batches at once, over {} lanes",
        used.len()
    );
    // The checkpoint reaches the last record once every lane is done.
    wait_checkpoint_at_last(&sluice, "lanes", &written).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_key_goes_to_the_destination_while_the_other_lanes_go_on() {
    let tb = testbed();
    let Stream { kinesis, name, arn } = Stream::create(&tb, "lanes-fail", 1).await;
    let written = put_records(&kinesis, &name, records("f", 2_000, 8)).await;
    let sqs = sqs(&tb);
    let (dlq_url, dlq_arn) = create_queue(&sqs, &unique("lanes-dlq"), &[]).await;
    // Every batch holding key-0 fails; bisect isolates its records, which are given up on.
    let sink = Sink::start(|req, _| {
        if req.records.iter().any(|r| r.key == "key-0") {
            (
                200,
                vec![("X-Amz-Function-Error", "Unhandled".into())],
                "{\"errorMessage\":\"boom\"}".into(),
            )
        } else {
            (200, vec![], "{}".into())
        }
    })
    .await;
    let extra = format!(
        "    MaximumRetryAttempts: 1\n    BisectBatchOnFunctionError: true\n    DestinationConfig: {{ OnFailure: {{ Destination: '{dlq_arn}' }} }}\n"
    );
    let (sluice, _dir) = Sluice::run(&tb, &mapping("fail", &arn, &sink.url, "1", 50, &extra)).await;
    let bad_lane = lane("key-0");
    let other_lanes: Vec<&Written> = written
        .iter()
        .filter(|w| lane(&w.key) != bad_lane)
        .collect();
    let bad: Vec<&Written> = written.iter().filter(|w| w.key == "key-0").collect();
    wait_for(
        "the other lanes delivered in full",
        Duration::from_secs(240),
        || async {
            let d = as_set(&sink.delivered());
            other_lanes
                .iter()
                .all(|w| d.contains(&(w.shard.clone(), w.seq.clone())))
                .then_some(())
        },
    )
    .await;
    // Meanwhile key-0's lane is still isolating and giving up on its records.
    let given_up_so_far = sluice
        .metric(
            "sluice_on_failure_destination_delivered_events_total",
            "mapping=\"fail\"",
        )
        .await;
    assert!(
        (given_up_so_far as usize) < bad.len(),
        "the other lanes waited for key-0's"
    );
    wait_for(
        "every record but key-0's delivered",
        Duration::from_secs(300),
        || async {
            let d = as_set(&sink.delivered());
            (d.len() >= written.len() - bad.len()).then_some(())
        },
    )
    .await;
    let delivered = sink.delivered();
    assert!(delivered.iter().all(|w| w.key != "key-0"));
    assert_ordered_per_key("fail", &delivered);
    // Each of key-0's records was given up on alone (bisected down to one) and described to the
    // destination.
    let bodies = drain_queue(&sqs, &dlq_url, bad.len(), Duration::from_secs(120)).await;
    let given_up: u64 = bodies
        .iter()
        .map(|b| {
            let v: serde_json::Value = serde_json::from_str(b).unwrap();
            assert_eq!(v["requestContext"]["condition"], "RetryAttemptsExhausted");
            v["KinesisBatchInfo"]["batchSize"].as_u64().unwrap()
        })
        .sum();
    assert_eq!(given_up as usize, bad.len(), "key-0's records, each once");
    wait_checkpoint_at_last(&sluice, "fail", &written).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_run_then_restart_loses_nothing() {
    let tb = testbed();
    let Stream { kinesis, name, arn } = Stream::create(&tb, "lanes-kill", 1).await;
    let written = put_records(&kinesis, &name, records("k", 4_000, 8)).await;
    let sink = Sink::start_slow(Duration::from_millis(40), |_, _| (200, vec![], "{}".into())).await;
    let dir = tempfile::tempdir().unwrap();
    let cp = dir.path().join("cp");
    let run = |n: &str| {
        config(
            &tb,
            &cp,
            free_port(),
            &mapping("kill", &arn, &sink.url, n, 50, ""),
        )
    };
    let _second =
        kill_9_and_restart(dir.path(), run, &sink, &written, Duration::from_secs(240)).await;
    let run1 = sink.delivered_in_run("1");
    let run2 = sink.delivered_in_run("2");
    assert_ordered_per_key("run 1", &run1);
    assert_ordered_per_key("run 2", &run2);
    // Run 2 resumed at the watermark: what it repeats is what lanes finished past it.
    let repeated = run2.len() + run1.len() - written.len();
    assert!(
        repeated < run1.len(),
        "run 2 started over: {repeated} repeated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_lanes_keep_each_items_changes_in_order() {
    let tb = testbed();
    let table = Table::create(&tb, "lanes-table", StreamViewType::NewImage).await;
    let sink = Sink::start_slow(Duration::from_millis(50), |_, _| (200, vec![], "{}".into())).await;
    let (_sluice, _dir) = Sluice::run(
        &tb,
        &mapping("ddb", &table.stream_arn, &sink.url, "1", 10, ""),
    )
    .await;
    // 8 items, each changed 60 times: v counts its changes.
    const ITEMS: usize = 8;
    const CHANGES: usize = 60;
    for v in 0..CHANGES {
        for id in 0..ITEMS {
            table.put_numbers(id as u64, "v", v as u64).await;
        }
    }
    wait_for(
        "every change delivered",
        Duration::from_secs(240),
        || async { (sink.accepted_entries().len() >= ITEMS * CHANGES).then_some(()) },
    )
    .await;
    let entries = sink.accepted_entries();
    assert_eq!(
        entries.len(),
        ITEMS * CHANGES,
        "no duplicates in a clean run"
    );
    let mut per_item: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for e in &entries {
        let id = e["dynamodb"]["Keys"]["Id"]["N"]
            .as_str()
            .unwrap()
            .to_string();
        let v = e["dynamodb"]["NewImage"]["v"]["N"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        per_item.entry(id).or_default().push(v);
    }
    assert_eq!(per_item.len(), ITEMS);
    for (id, vs) in per_item {
        assert_eq!(vs, (0..CHANGES as u64).collect::<Vec<_>>(), "item {id}");
    }
    let max = max_concurrency(&sink.received.lock().unwrap());
    assert!(max > 1, "batches of the one shard ran at once");
}
