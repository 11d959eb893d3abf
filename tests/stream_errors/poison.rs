//! A poison record isolated by bisecting its batch and recorded, after its retries, at each kind
//! of on-failure destination (SQS, SNS → SQS, S3 with the payload), while every other record is
//! delivered once and in order.

use super::{check_failure_record, destination, Dest};
use crate::common::sluice::Sluice;
use crate::common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

async fn poison_goes_to(kind: Dest) {
    let tb = testbed();
    let kinesis = kinesis(&tb).await;
    let stream = unique("poison");
    let arn = create_stream(&kinesis, &stream, 2).await;
    let dest = destination(&tb, kind).await;
    let mut recs = records("p", 5_000, 101);
    recs[2_345].1 = "poison".into();
    let written = put_records(&kinesis, &stream, recs).await;
    let poison = written.iter().find(|w| w.data == "poison").unwrap().clone();
    let mapping = format!(
        "  - Name: poison\n    EventSourceArn: {arn}\n    StartingPosition: TRIM_HORIZON\n    BatchSize: 100\n    FunctionName: recorder\n    BisectBatchOnFunctionError: true\n    MaximumRetryAttempts: 2\n    DestinationConfig: {{ OnFailure: {{ Destination: '{}' }} }}\n",
        dest.arn
    );
    let (sluice, _dir) = Sluice::run(&tb, &mapping).await;

    let read = || recorded(&tb, &stream);
    wait_for(
        "every other record delivered",
        Duration::from_secs(180),
        || async { (read().len() >= written.len() - 1).then_some(()) },
    )
    .await;
    let found = dest.records(&tb, 1, Duration::from_secs(30)).await;
    assert_eq!(found.len(), 1, "exactly one failure record: {found:?}");
    let (record, key) = &found[0];
    check_failure_record(
        record,
        "RetryAttemptsExhausted",
        "arn:aws:lambda:us-east-1:000000000000:function:recorder",
        &arn,
        &poison.shard,
        std::slice::from_ref(&poison),
    );
    // Every invocation that carried the record: the batches it was bisected out of (at most
    // ceil(log2(100)) = 7 of them), then the first invoke alone and 2 retries. The exact count
    // is pinned by the unit test on fakes (`bisect_isolates_the_poison_record_and_keeps_order`).
    let invokes = record["requestContext"]["approximateInvokeCount"]
        .as_u64()
        .unwrap();
    assert!(
        (4..=3 + 7).contains(&invokes),
        "the bisect invocations, the first invoke alone and 2 retries: {invokes}"
    );
    assert_eq!(record["responseContext"]["statusCode"], 200);
    assert_eq!(record["responseContext"]["executedVersion"], "$LATEST");
    assert_eq!(record["responseContext"]["functionError"], "Unhandled");
    if let Dest::S3 = kind {
        let key = key.as_ref().unwrap();
        let today = time::OffsetDateTime::now_utc();
        let prefix = format!(
            "aws/lambda/poison/{}/{:04}/{:02}/{:02}/",
            poison.shard,
            today.year(),
            today.month() as u8,
            today.day()
        );
        assert!(
            key.starts_with(&prefix),
            "{key} does not start with {prefix}"
        );
        let payload: Value = serde_json::from_str(record["payload"].as_str().unwrap()).unwrap();
        let entries = payload["Records"].as_array().unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0]["kinesis"]["sequenceNumber"], poison.seq.as_str());
        assert_eq!(entries[0]["kinesis"]["data"], "cG9pc29u");
    } else {
        assert!(
            record.get("payload").is_none(),
            "SQS and SNS get metadata only"
        );
    }
    // Every other record exactly once, in order per shard.
    let delivered = read();
    assert_eq!(delivered.len(), written.len() - 1, "no duplicates");
    let expected: BTreeSet<_> = written
        .iter()
        .filter(|w| w.data != "poison")
        .map(|w| w.seq.clone())
        .collect();
    assert_eq!(
        delivered
            .iter()
            .map(|w| w.seq.clone())
            .collect::<BTreeSet<_>>(),
        expected
    );
    assert_ordered("poison", &delivered);
    let labels = "mapping=\"poison\"";
    assert_eq!(
        sluice
            .metric(
                "sluice_on_failure_destination_delivered_events_total",
                labels
            )
            .await,
        1.0
    );
    assert_eq!(
        sluice.metric("sluice_dropped_events_total", labels).await,
        0.0
    );
    assert!(
        sluice
            .metric("sluice_failed_invoke_events_total", labels)
            .await
            >= 3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_record_is_isolated_and_recorded_in_sqs() {
    poison_goes_to(Dest::Sqs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_record_is_isolated_and_recorded_in_sns() {
    poison_goes_to(Dest::Sns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_record_is_isolated_and_recorded_in_s3() {
    poison_goes_to(Dest::S3).await;
}
