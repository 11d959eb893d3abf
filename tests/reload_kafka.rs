//! Hot reload of Kafka mappings against the test bed's broker: a removed mapping's consumer stops
//! delivering and leaves its group with its offsets committed, the other mapping runs on untouched,
//! and the mapping added back resumes from its group's committed offsets, nothing lost or repeated.

mod common;

use common::kafka::{assert_in_order_once, bootstrap, delivered, mapping, Produced, Target};
use common::sink::Sink;
use common::sluice::{config, free_port, Sluice};
use common::*;
use std::collections::BTreeSet;
use std::time::Duration;

fn positions(records: &[Produced]) -> BTreeSet<(i32, i64)> {
    records.iter().map(|r| (r.partition, r.offset)).collect()
}

/// Waits until the sink accepted every record of `want` from run `run`.
async fn wait_run(sink: &Sink, run: &str, want: &[Produced]) {
    let want = positions(want);
    wait_for(
        &format!("{run}'s records delivered"),
        Duration::from_secs(120),
        || async {
            let got = positions(&delivered(sink, Some(run)));
            want.is_subset(&got).then_some(())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_mapping_removed_and_added_back_resumes_from_its_committed_offsets() {
    let tb = testbed();
    let (t1, t2) = (unique("reload-a"), unique("reload-b"));
    common::kafka::create_topic(&tb, &t1, 2).await;
    common::kafka::create_topic(&tb, &t2, 2).await;
    let sink = Sink::ok().await;
    let (g1, g2) = (unique("group"), unique("group"));
    let k1 = mapping(
        bootstrap(&tb),
        "k1",
        &t1,
        &g1,
        50,
        Target::http(&sink.url, "k1"),
        "",
    );
    let k2 = mapping(
        bootstrap(&tb),
        "k2",
        &t2,
        &g2,
        50,
        Target::http(&sink.url, "k2"),
        "",
    );
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let file = |mappings: &str| config(&tb, &dir.path().join("cp"), port, mappings);
    let mut sluice = Sluice::start(dir.path(), "kafka", &file(&format!("{k1}{k2}"))).await;
    let path = dir.path().join("kafka.yaml");

    let first = common::kafka::produce(&tb, &t1, &records("a", 300, 11)).await;
    wait_run(&sink, "k1", &first).await;
    common::kafka::wait_committed(
        &tb,
        &g1,
        &t1,
        &common::kafka::ends(&first),
        Duration::from_secs(30),
    )
    .await;

    // Remove k1: it stops (its consumer leaves the group); k2 goes on.
    std::fs::write(&path, file(&k2)).unwrap();
    sluice.hup();
    wait_for("k1 gone from /status", Duration::from_secs(60), || async {
        let s = sluice.status().await?;
        (s["config"]["generation"] == 2 && s["mappings"].get("k1").is_none()).then_some(())
    })
    .await;
    let k1_before = delivered(&sink, Some("k1")).len();
    let second = common::kafka::produce(&tb, &t1, &records("b", 100, 11)).await;
    let other = common::kafka::produce(&tb, &t2, &records("c", 100, 11)).await;
    wait_run(&sink, "k2", &other).await;
    assert_eq!(
        delivered(&sink, Some("k1")).len(),
        k1_before,
        "a removed mapping delivers nothing"
    );

    // Add k1 back: it resumes after its committed offsets.
    std::fs::write(&path, file(&format!("{k1}{k2}"))).unwrap();
    sluice.hup();
    wait_run(&sink, "k1", &second).await;
    let got = delivered(&sink, Some("k1"));
    assert_in_order_once("k1", &got);
    let all: Vec<Produced> = first.iter().chain(&second).cloned().collect();
    assert_eq!(got.len(), all.len(), "nothing delivered twice");
    assert_eq!(positions(&got), positions(&all), "nothing lost");
    assert_in_order_once("k2", &delivered(&sink, Some("k2")));
    assert_eq!(sluice.terminate().await, 0);
}
