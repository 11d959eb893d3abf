//! FIFO queues: order per message group with a failing group that does not stop the others, and
//! batches of 10 that each hold one group, in order.

use crate::common::sink::Sink;
use crate::common::sluice::Sluice;
use crate::common::*;
use crate::sqs_support::{bodies, mapping, send};
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_keeps_order_per_group_and_a_failing_group_does_not_stop_the_others() {
    let tb = testbed();
    let client = sqs(&tb);
    let (url, arn) = create_queue(
        &client,
        &format!("{}.fifo", unique("fifo")),
        &[
            (QueueAttributeName::FifoQueue, "true".into()),
            (QueueAttributeName::VisibilityTimeout, "2".into()),
        ],
    )
    .await;
    // Group g-0 fails until the test has seen every other group delivered and releases it.
    const PER_GROUP: usize = 20;
    let others = 9 * PER_GROUP;
    let failures = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let release = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (f2, r2) = (failures.clone(), release.clone());
    let sink = Sink::start(move |req, _| {
        let entries: Vec<Value> = serde_json::from_slice::<Value>(&req.body).unwrap()["Records"]
            .as_array()
            .unwrap()
            .clone();
        let group = entries[0]["attributes"]["MessageGroupId"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            entries
                .iter()
                .all(|e| e["attributes"]["MessageGroupId"] == group.as_str()),
            "a dispatch mixed groups"
        );
        if group == "g-0" && !r2.load(std::sync::atomic::Ordering::SeqCst) {
            f2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            return (
                500,
                vec![],
                "{\"errorMessage\":\"group 0 is failing\"}".into(),
            );
        }
        (200, vec![], "{}".into())
    })
    .await;
    // BatchSize 1: moto redelivers a FIFO group out of order when several of its messages become
    // visible at once (real SQS does not); with one message of a group in flight, it is exact.
    let (_sluice, _dir) =
        Sluice::run(&tb, &mapping("fifo", &arn, &sink.url, "    BatchSize: 1\n")).await;
    let msgs: Vec<(String, Option<String>)> = (0..PER_GROUP)
        .flat_map(|i| (0..10).map(move |g| (format!("g-{g}:{i}"), Some(format!("g-{g}")))))
        .collect();
    send(&client, &url, &msgs).await;

    wait_for(
        "the other 9 groups delivered",
        Duration::from_secs(120),
        || async {
            let got = bodies(&sink.accepted_entries());
            (got.iter().filter(|b| !b.starts_with("g-0:")).count() >= others).then_some(())
        },
    )
    .await;
    assert!(
        bodies(&sink.accepted_entries())
            .iter()
            .all(|b| !b.starts_with("g-0:")),
        "g-0 delivered nothing while failing"
    );
    wait_for(
        "g-0 to have failed at least twice",
        Duration::from_secs(30),
        || async { (failures.load(std::sync::atomic::Ordering::SeqCst) >= 2).then_some(()) },
    )
    .await;
    release.store(true, std::sync::atomic::Ordering::SeqCst);
    wait_for(
        "the failing group delivered after its retries",
        Duration::from_secs(120),
        || async { (sink.accepted_entries().len() >= msgs.len()).then_some(()) },
    )
    .await;
    let entries = sink.accepted_entries();
    let mut per_group: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for e in &entries {
        let b = e["body"].as_str().unwrap();
        let (g, i) = b.split_once(':').unwrap();
        per_group
            .entry(g.to_string())
            .or_default()
            .push(i.parse().unwrap());
        for k in ["SequenceNumber", "MessageGroupId", "MessageDeduplicationId"] {
            assert!(e["attributes"][k].is_string(), "FIFO attribute {k}");
        }
    }
    for (g, seq) in &per_group {
        assert_eq!(
            seq,
            &(0..PER_GROUP).collect::<Vec<_>>(),
            "group {g} in order, once"
        );
    }
    assert!(failures.load(std::sync::atomic::Ordering::SeqCst) >= 2);
    // The failing group's first message came back with a higher receive count.
    let first_g0 = entries.iter().find(|e| e["body"] == "g-0:0").unwrap();
    assert!(
        first_g0["attributes"]["ApproximateReceiveCount"]
            .as_str()
            .unwrap()
            .parse::<u32>()
            .unwrap()
            >= 2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_batches_are_dispatched_per_group_in_order() {
    let tb = testbed();
    let client = sqs(&tb);
    let (url, arn) = create_queue(
        &client,
        &format!("{}.fifo", unique("fifo10")),
        &[(QueueAttributeName::FifoQueue, "true".into())],
    )
    .await;
    let sink = Sink::ok().await;
    let (_sluice, _dir) = Sluice::run(
        &tb,
        &mapping("fifo10", &arn, &sink.url, "    BatchSize: 10\n"),
    )
    .await;
    let msgs: Vec<(String, Option<String>)> = (0..30)
        .flat_map(|i| (0..10).map(move |g| (format!("g-{g}:{i}"), Some(format!("g-{g}")))))
        .collect();
    send(&client, &url, &msgs).await;
    wait_for(
        "every message delivered",
        Duration::from_secs(120),
        || async { (sink.accepted_entries().len() >= msgs.len()).then_some(()) },
    )
    .await;
    let mut per_group: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for req in sink.accepted.lock().unwrap().iter() {
        let v: Value = serde_json::from_slice(&req.body).unwrap();
        let groups: BTreeSet<&str> = v["Records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["attributes"]["MessageGroupId"].as_str().unwrap())
            .collect();
        assert_eq!(groups.len(), 1, "one dispatch, one group: {groups:?}");
    }
    for b in bodies(&sink.accepted_entries()) {
        let (g, i) = b.split_once(':').unwrap();
        per_group
            .entry(g.to_string())
            .or_default()
            .push(i.parse().unwrap());
    }
    assert_eq!(per_group.len(), 10);
    for (g, seq) in &per_group {
        assert_eq!(
            seq,
            &(0..30).collect::<Vec<_>>(),
            "group {g} in order, once"
        );
    }
}
