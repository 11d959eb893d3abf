//! Kinesis enhanced fan-out against kinesis-local: a mapping on a stream consumer ARN (registered
//! here with RegisterStreamConsumer; sluice never registers one) reads with SubscribeToShard.
//! Delivery in order per shard across resubscriptions (sluice is made to renew its subscriptions
//! every few seconds instead of every 5 minutes) and across a restart, and a resharded stream's
//! closed parent found ended and read to its end before its children.

mod common;

use common::fleet::reshard;
use common::sink::Sink;
use common::sluice::{config, free_port, Sluice};
use common::*;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

/// Subscriptions last this long (sluice's test hook; the service's own limit is 5 minutes).
const RENEW_MILLIS: &str = "4000";

/// Registers a consumer of `stream_arn` and waits until it is ACTIVE; returns its ARN.
async fn register_consumer(client: &aws_sdk_kinesis::Client, stream_arn: &str) -> String {
    let out = client
        .register_stream_consumer()
        .stream_arn(stream_arn)
        .consumer_name("sluice-efo")
        .send()
        .await
        .expect("RegisterStreamConsumer");
    let arn = out.consumer().unwrap().consumer_arn().to_string();
    wait_for(
        "the consumer to be ACTIVE",
        Duration::from_secs(30),
        || async {
            let d = client
                .describe_stream_consumer()
                .consumer_arn(&arn)
                .send()
                .await
                .ok()?;
            let status = d.consumer_description()?.consumer_status().clone();
            (status == aws_sdk_kinesis::types::ConsumerStatus::Active).then_some(())
        },
    )
    .await;
    arn
}

fn mapping(consumer: &str, url: &str, run: &str) -> String {
    format!(
        "  - Name: efo\n    EventSourceArn: {consumer}\n    StartingPosition: TRIM_HORIZON\n    BatchSize: 200\n    Http:\n      Url: {url}\n      Headers: {{ X-Run: \"{run}\" }}\n"
    )
}

/// Starts sluice with fast shard discovery and short subscriptions.
async fn start(dir: &Path, name: &str, consumer: &str, sink: &Sink, run: &str) -> Sluice {
    // Every sluice this test binary starts inherits it; all of them are fan-out tests.
    std::env::set_var("SLUICE_FANOUT_RENEW_MILLIS", RENEW_MILLIS);
    let cfg = config(
        &testbed(),
        &dir.join("cp"),
        free_port(),
        &mapping(consumer, &sink.url, run),
    )
    .replace(
        "mappings:\n",
        "shard_discovery_interval_seconds: 1\nmappings:\n",
    );
    let sluice = Sluice::start(dir, name, &cfg).await;
    sluice.wait_ready().await;
    sluice
}

fn seqs(v: &[Written]) -> BTreeSet<String> {
    v.iter().map(|w| w.seq.clone()).collect()
}

async fn wait_delivered(sink: &Sink, n: usize) {
    wait_for(
        &format!("{n} records delivered"),
        Duration::from_secs(180),
        || async { (seqs(&sink.delivered()).len() >= n).then_some(()) },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_delivers_in_order_across_resubscriptions_and_a_restart() {
    let tb = testbed();
    let kinesis = kinesis(&tb).await;
    let stream = unique("efo");
    let arn = create_stream(&kinesis, &stream, 4).await;
    let consumer = register_consumer(&kinesis, &arn).await;
    let sink = Sink::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let all = records("r", 2_000, 97);

    let mut sluice = start(dir.path(), "run1", &consumer, &sink, "1").await;
    let mut written = put_records(&kinesis, &stream, all[..600].to_vec()).await;
    assert_eq!(by_shard(&written).len(), 4, "records over all 4 shards");
    wait_delivered(&sink, written.len()).await;
    // Records keep flowing while the subscriptions are renewed.
    wait_for(
        "a subscription renewed",
        Duration::from_secs(30),
        || async {
            sluice
                .log_text()
                .contains("renewing the subscription")
                .then_some(())
        },
    )
    .await;
    for chunk in all[600..1_200].chunks(200) {
        written.extend(put_records(&kinesis, &stream, chunk.to_vec()).await);
        // Spread the writes over several subscriptions (pacing the load, not a synchronisation).
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    wait_delivered(&sink, written.len()).await;
    let first = sink.delivered_in_run("1");
    assert_eq!(seqs(&first), seqs(&written), "every record delivered");
    assert_eq!(
        first.len(),
        written.len(),
        "no duplicates across resubscriptions"
    );
    assert_ordered("run 1", &first);
    let log = sluice.log_text();
    let renewals = log.matches("renewing the subscription").count();
    assert!(renewals >= 4, "subscriptions renewed: {renewals}");
    // A renewal's ResourceInUse (kinesis-local frees a dropped subscription at its next tick) is
    // waited out quietly, not reported as a failed read.
    assert!(!log.contains("read failed"), "{log}");
    // Every record's entry is the polling reader's: the event names the stream, not the consumer.
    let entry = &sink.accepted_entries()[0];
    assert_eq!(entry["eventSourceARN"], arn.as_str());
    assert_eq!(entry["eventSource"], "aws:kinesis");

    assert_eq!(sluice.terminate().await, 0, "a clean shutdown");
    written.extend(put_records(&kinesis, &stream, all[1_200..].to_vec()).await);
    let _sluice = start(dir.path(), "run2", &consumer, &sink, "2").await;
    wait_delivered(&sink, written.len()).await;
    let second = sink.delivered_in_run("2");
    assert_eq!(
        seqs(&sink.delivered()),
        seqs(&written),
        "nothing lost across the restart"
    );
    assert_eq!(
        second.len(),
        800,
        "the restart resumes from its checkpoints: only the new records"
    );
    assert_ordered("run 2", &second);
}

/// kinesis-local never sends `ChildShards` on a subscription to a closed shard (it keeps sending
/// empty events), so sluice finds the shard ended through ListShards (its EndingSequenceNumber):
/// a subscription made after the listing showed it closed, empty at the tip, is the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_shard_is_found_ended_by_listing_and_its_children_follow() {
    let tb = testbed();
    let kinesis = kinesis(&tb).await;
    let stream = unique("efo-split");
    let arn = create_stream(&kinesis, &stream, 1).await;
    let consumer = register_consumer(&kinesis, &arn).await;
    let sink = Sink::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let mut sluice = start(dir.path(), "run", &consumer, &sink, "1").await;

    let all = records("s", 600, 40);
    // The parent is resharded while its records are still being delivered.
    let mut written = put_records(&kinesis, &stream, all[..300].to_vec()).await;
    reshard(&kinesis, &stream, 2).await;
    written.extend(put_records(&kinesis, &stream, all[300..].to_vec()).await);
    let shards = by_shard(&written);
    assert_eq!(shards.len(), 3, "records in the parent and both children");
    wait_delivered(&sink, written.len()).await;

    let delivered = sink.delivered();
    assert_eq!(seqs(&delivered), seqs(&written), "nothing lost");
    assert_eq!(delivered.len(), written.len(), "no duplicates");
    assert_ordered("split", &delivered);
    let parent = "shardId-000000000000";
    let last_parent = delivered.iter().rposition(|w| w.shard == parent).unwrap();
    let first_child = delivered.iter().position(|w| w.shard != parent).unwrap();
    assert!(
        last_parent < first_child,
        "every record of the parent before any of its children"
    );
    // The parent was checkpointed at its end (a clean stop brings the checkpoint files up to
    // date from the store's journal).
    assert_eq!(sluice.terminate().await, 0);
    let ended = std::fs::read_dir(dir.path().join("cp").join("efo"))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .any(|text| text.contains("shard_end"));
    assert!(ended, "the parent's end checkpointed");
}
