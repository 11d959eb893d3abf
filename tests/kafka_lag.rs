//! A Kafka mapping's lag metrics against the test bed's broker: AWS's OffsetLag (max and sum over
//! the partitions) and the age of the oldest unprocessed record rise while a slow function falls
//! behind, and return to 0 once everything is committed. (tansu's high watermark stays low; the
//! lag counts at least what the consumer has fetched, so it shows here all the same.)

mod common;

use common::kafka::{start_sluice, topic_mapping, Target};
use common::sink::Sink;
use common::sluice::Sluice;
use common::*;
use std::time::Duration;

/// The mapping `topic`'s `sluice_kafka_offset_lag` (sum, max) and
/// `sluice_kafka_oldest_unprocessed_age_ms`, now.
async fn lag(sluice: &Sluice, topic: &str) -> (f64, f64, f64) {
    let lag = |stat: &str| format!("mapping=\"{topic}\",stat=\"{stat}\"");
    let sum = sluice.metric("sluice_kafka_offset_lag", &lag("sum")).await;
    let max = sluice.metric("sluice_kafka_offset_lag", &lag("max")).await;
    let age = sluice
        .metric(
            "sluice_kafka_oldest_unprocessed_age_ms",
            &format!("mapping=\"{topic}\""),
        )
        .await;
    (sum, max, age)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_lag_and_oldest_age_follow_a_slow_function_back_to_zero() {
    let tb = testbed();
    let topic = unique("lag");
    common::kafka::create_topic(&tb, &topic, 2).await;
    let produced = common::kafka::produce(&tb, &topic, &records("r", 1000, 7)).await;
    // 10 records per batch, 400 ms per batch: about 20 s per partition to catch up, while lag is
    // sampled every 5 s.
    let sink = Sink::start_slow(Duration::from_millis(400), |_, _| {
        (200, vec![], "{}".into())
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let target = Target::http(&sink.url, "lag");
    let yaml = topic_mapping(&tb, &topic, &unique("group"), 10, target, "");
    let mut sluice = start_sluice(&tb, dir.path(), "lag", &yaml).await;
    sluice.wait_ready().await;
    let behind = wait_for(
        "a lag reported while behind",
        Duration::from_secs(60),
        || async {
            let (sum, max, age) = lag(&sluice, &topic).await;
            (sum > 0.0 && age > 0.0).then_some((sum, max, age))
        },
    )
    .await;
    assert!(
        behind.0 >= behind.1,
        "the sum over partitions is at least the max: {behind:?}"
    );
    assert!(behind.0 <= produced.len() as f64, "{behind:?}");
    wait_for(
        "caught up: lag and age back to 0",
        Duration::from_secs(90),
        || async {
            let (sum, _, age) = lag(&sluice, &topic).await;
            (sum == 0.0 && age == 0.0 && sink.accepted.lock().unwrap().len() >= 100).then_some(())
        },
    )
    .await;
    assert_eq!(sluice.terminate().await, 0);
}
