//! Shard lineage against kinesis-local: records keep their per-partition-key order across splits
//! and merges (every record of a parent before any record of its children), nothing is lost, and a
//! restart in the middle of a reshard resumes without loss or reordering.

mod common;

use common::fleet::reshard;
use common::sink::Sink;
use common::sluice::{config, free_port, Sluice};
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

fn mapping(arn: &str, url: &str, run: &str) -> String {
    format!(
        "  - Name: reshard\n    EventSourceArn: {arn}\n    StartingPosition: TRIM_HORIZON\n    BatchSize: 100\n    Http:\n      Url: {url}\n      Headers: {{ X-Run: \"{run}\" }}\n"
    )
}

fn with_discovery(cfg: String) -> String {
    cfg.replace(
        "mappings:\n",
        "shard_discovery_interval_seconds: 1\nmappings:\n",
    )
}

/// Index of a record from its data `"<tag>-<i>"`.
fn index(w: &Written) -> usize {
    w.data.rsplit('-').next().unwrap().parse().unwrap()
}

/// Per partition key, the delivered records must come in the order they were written.
fn assert_key_order(label: &str, delivered: &[Written]) {
    let mut last: BTreeMap<&str, (usize, &str)> = BTreeMap::new();
    for w in delivered {
        let i = index(w);
        if let Some((prev, prev_shard)) = last.get(w.key.as_str()) {
            assert!(
                *prev < i,
                "{label}: key {} got record {i} (shard {}) after record {prev} (shard {prev_shard})",
                w.key,
                w.shard
            );
        }
        last.insert(&w.key, (i, &w.shard));
    }
}

async fn shards_seen(client: &aws_sdk_kinesis::Client, stream: &str) -> usize {
    client
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .unwrap()
        .shards()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_and_merge_while_records_flow() {
    let tb = testbed();
    let kinesis = kinesis(&tb).await;
    let stream = unique("reshard");
    let arn = create_stream(&kinesis, &stream, 2).await;
    let sink = Sink::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let mut sluice = Sluice::start(
        dir.path(),
        "run",
        &with_discovery(config(
            &tb,
            &dir.path().join("cp"),
            free_port(),
            &mapping(&arn, &sink.url, "1"),
        )),
    )
    .await;
    sluice.wait_ready().await;

    let all = records("r", 10_000, 50);
    let mut written = put_records(&kinesis, &stream, all[..3_000].to_vec()).await;
    reshard(&kinesis, &stream, 4).await; // splits
    written.extend(put_records(&kinesis, &stream, all[3_000..6_500].to_vec()).await);
    reshard(&kinesis, &stream, 2).await; // merges
    written.extend(put_records(&kinesis, &stream, all[6_500..].to_vec()).await);
    let total_shards = shards_seen(&kinesis, &stream).await;
    assert!(
        total_shards >= 6,
        "the reshards created child shards ({total_shards})"
    );
    assert!(
        by_shard(&written).len() >= 6,
        "records landed in parents and children"
    );

    wait_for(
        "all 10,000 records delivered",
        Duration::from_secs(240),
        || async { (sink.delivered().len() >= written.len()).then_some(()) },
    )
    .await;
    let delivered = sink.delivered();
    let set = |v: &[Written]| v.iter().map(|w| w.seq.clone()).collect::<BTreeSet<_>>();
    assert_eq!(set(&delivered), set(&written), "nothing lost");
    assert_eq!(
        delivered.len(),
        written.len(),
        "no duplicates in a clean run"
    );
    assert_ordered("reshard", &delivered);
    assert_key_order("reshard", &delivered);
    let (_, status) = sluice.get("/status").await.unwrap();
    assert!(
        !status.contains("\"ended\""),
        "ended parents are pruned once their children run: {status}"
    );
    // Closed parents are checkpointed at their end (and pruned from /status once their children
    // run, so the checkpoint files tell; a clean stop brings the files up to date from the
    // store's journal).
    assert_eq!(sluice.terminate().await, 0);
    let ended = std::fs::read_dir(dir.path().join("cp").join("reshard"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .filter(|text| text.contains("shard_end"))
        .count();
    assert!(
        ended >= 4,
        "closed parents are checkpointed at their end: {ended}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_in_the_middle_of_a_reshard_resumes_without_loss_or_reordering() {
    let tb = testbed();
    let kinesis = kinesis(&tb).await;
    let stream = unique("reshard-kill");
    let arn = create_stream(&kinesis, &stream, 2).await;
    let all = records("k", 6_000, 40);
    let mut written = put_records(&kinesis, &stream, all[..2_500].to_vec()).await;
    reshard(&kinesis, &stream, 4).await;
    written.extend(put_records(&kinesis, &stream, all[2_500..4_500].to_vec()).await);
    // A slow function so the kill lands while parents or children are in progress.
    let sink = Sink::start(|_, _| {
        std::thread::sleep(Duration::from_millis(15));
        (200, vec![], String::new())
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cp = dir.path().join("cp");
    let mut first = Sluice::start(
        dir.path(),
        "run1",
        &with_discovery(config(
            &tb,
            &cp,
            free_port(),
            &mapping(&arn, &sink.url, "1"),
        )),
    )
    .await;
    wait_for(
        "part of the stream delivered",
        Duration::from_secs(120),
        || async { (sink.delivered().len() >= 2_000).then_some(()) },
    )
    .await;
    first.kill9().await;
    assert!(
        sink.delivered().len() < written.len(),
        "the kill came too late to test anything"
    );

    let second = Sluice::start(
        dir.path(),
        "run2",
        &with_discovery(config(
            &tb,
            &cp,
            free_port(),
            &mapping(&arn, &sink.url, "2"),
        )),
    )
    .await;
    reshard(&kinesis, &stream, 2).await;
    written.extend(put_records(&kinesis, &stream, all[4_500..].to_vec()).await);
    let want: BTreeSet<String> = written.iter().map(|w| w.seq.clone()).collect();
    wait_for(
        "every record delivered after the restart",
        Duration::from_secs(240),
        || async {
            let got: BTreeSet<String> = sink.delivered().iter().map(|w| w.seq.clone()).collect();
            (got.len() >= want.len()).then_some(())
        },
    )
    .await;
    drop(second);
    let got: BTreeSet<String> = sink.delivered().iter().map(|w| w.seq.clone()).collect();
    assert_eq!(got, want, "nothing lost");
    let run1 = sink.delivered_in_run("1");
    let run2 = sink.delivered_in_run("2");
    assert_key_order("run 1", &run1);
    assert_key_order("run 2", &run2);
    assert_ordered("run 1", &run1);
    assert_ordered("run 2", &run2);
    // Run 2 repeats at most the batch in flight per shard at the kill (4 shards were readable).
    let dupes = run1.len() + run2.len() - got.len();
    assert!(dupes <= 4 * 100, "{dupes} duplicates");
}
