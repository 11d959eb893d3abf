//! Kafka mappings end to end against the test bed's broker (tansu): a topic's records reach an HTTP
//! function in AWS's Kafka event, in order per partition, and offsets are committed as batches
//! succeed.

mod common;

use base64::Engine;
use common::sink::Sink;
use common::sluice::{config, free_port, Sluice};
use common::*;
use std::collections::BTreeMap;
use std::time::Duration;

fn kafka_mapping(tb: &TestBed, topic: &str, group: &str, url: &str, batch: usize) -> String {
    format!(
        "  - Name: {topic}\n    SelfManagedEventSource: {{ Endpoints: {{ KAFKA_BOOTSTRAP_SERVERS: [\"{}\"] }} }}\n    Topics: [{topic}]\n    SelfManagedKafkaEventSourceConfig: {{ ConsumerGroupId: {group} }}\n    StartingPosition: TRIM_HORIZON\n    BatchSize: {batch}\n    Http:\n      Url: {url}\n",
        common::kafka::bootstrap(tb)
    )
}

/// (partition, offset, key, value) of every record the function accepted, in arrival order.
fn delivered(sink: &Sink) -> Vec<(i64, i64, String, String)> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = Vec::new();
    for req in sink.accepted.lock().unwrap().iter() {
        let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(v["eventSource"], "SelfManagedKafka");
        for (_, records) in v["records"].as_object().unwrap() {
            for r in records.as_array().unwrap() {
                let text = |f: &str| {
                    String::from_utf8(b64.decode(r[f].as_str().unwrap()).unwrap()).unwrap()
                };
                out.push((
                    r["partition"].as_i64().unwrap(),
                    r["offset"].as_i64().unwrap(),
                    text("key"),
                    text("value"),
                ));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topics_records_reach_the_function_in_order_per_partition() {
    let tb = testbed();
    let topic = unique("orders");
    common::kafka::create_topic(&tb, &topic, 3).await;
    let produced = common::kafka::produce(&tb, &topic, &records("r", 600, 17)).await;
    let sink = Sink::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let group = unique("group");
    let mut sluice = Sluice::start(
        dir.path(),
        "kafka",
        &config(
            &tb,
            &dir.path().join("cp"),
            free_port(),
            &kafka_mapping(&tb, &topic, &group, &sink.url, 100),
        ),
    )
    .await;
    wait_for(
        "every record delivered",
        Duration::from_secs(90),
        || async { (delivered(&sink).len() >= produced.len()).then_some(()) },
    )
    .await;
    let got = delivered(&sink);
    let mut per_partition: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for (p, o, _, _) in &got {
        per_partition.entry(*p).or_default().push(*o);
    }
    for (p, offsets) in &per_partition {
        let mut sorted = offsets.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(
            offsets, &sorted,
            "partition {p} delivered in offset order, once"
        );
    }
    let mut want: Vec<(i64, i64, String, String)> = produced
        .iter()
        .map(|p| (p.partition as i64, p.offset, p.key.clone(), p.value.clone()))
        .collect();
    want.sort();
    let mut have = got.clone();
    have.sort();
    assert_eq!(have, want, "every record, with its key and value");
    // The group's offsets follow: everything is committed.
    let committed = wait_for("offsets committed", Duration::from_secs(30), || async {
        let c = common::kafka::committed(&tb, &group, &topic, 3).await;
        let done = (0..3).all(|p| {
            let end = produced
                .iter()
                .filter(|r| r.partition == p)
                .map(|r| r.offset + 1)
                .max();
            end.is_none_or(|end| c.get(&p).copied().flatten() == Some(end))
        });
        done.then_some(c)
    })
    .await;
    for p in 0..3 {
        let end = produced
            .iter()
            .filter(|r| r.partition == p)
            .map(|r| r.offset + 1)
            .max();
        if let Some(end) = end {
            assert_eq!(
                committed[&p],
                Some(end),
                "partition {p} committed to its end"
            );
        }
    }
    assert_eq!(sluice.terminate().await, 0);
}
