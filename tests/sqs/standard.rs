//! Standard-queue delivery: 10,000 messages delivered and deleted with producers feeding as the
//! consumer goes, the event's shape against Lambda's SQS event, and receives repeated to fill a
//! batch within the batching window.

use crate::common::sink::Sink;
use crate::common::sluice::Sluice;
use crate::common::*;
use crate::sqs_support::{bodies, depth, mapping, send};
use aws_sdk_sqs::types::MessageAttributeValue;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_standard_messages_are_delivered_and_deleted() {
    let tb = testbed();
    let client = sqs(&tb);
    let (url, arn) = create_queue(&client, &unique("std"), &[]).await;
    let sink = Sink::ok().await;
    let (sluice, _dir) = Sluice::run(&tb, &mapping("std", &arn, &sink.url, "")).await;
    sluice.wait_ready().await;
    const N: usize = 10_000;
    let all: Vec<(String, Option<String>)> = (0..N).map(|i| (format!("m-{i}"), None)).collect();
    for chunk in all.chunks(500) {
        // Feed as the consumer goes: keep the queue shallow for moto.
        wait_for(
            "the queue to drain below 500",
            Duration::from_secs(120),
            || async { (depth(&client, &url).await < 500).then_some(()) },
        )
        .await;
        send(&client, &url, chunk).await;
    }
    wait_for(
        "every message delivered",
        Duration::from_secs(300),
        || async {
            (bodies(&sink.accepted_entries())
                .into_iter()
                .collect::<BTreeSet<_>>()
                .len()
                >= N)
                .then_some(())
        },
    )
    .await;
    let got = bodies(&sink.accepted_entries());
    assert_eq!(
        got.iter().collect::<BTreeSet<_>>(),
        all.iter().map(|(b, _)| b).collect::<BTreeSet<_>>()
    );
    // Standard queues deliver at least once, and moto's threaded server can hand one message to two
    // concurrent receives: a few duplicates are allowed, not a pattern of them.
    assert!(got.len() - N <= N / 100, "{} duplicates", got.len() - N);
    wait_for("every message deleted", Duration::from_secs(60), || async {
        (depth(&client, &url).await == 0).then_some(())
    })
    .await;
    assert!(
        sluice
            .metric("sluice_sqs_messages_deleted_total", "mapping=\"std\"")
            .await
            >= N as f64
    );
    assert!(sluice.metric("sluice_concurrency", "mapping=\"std\"").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_matches_lambdas_sqs_event() {
    let tb = testbed();
    let client = sqs(&tb);
    let (url, arn) = create_queue(&client, &unique("shape"), &[]).await;
    let sink = Sink::ok().await;
    let (_sluice, _dir) = Sluice::run(&tb, &mapping("shape", &arn, &sink.url, "")).await;
    let sent = client
        .send_message()
        .queue_url(&url)
        .message_body("{\"hello\":\"world\"}")
        .message_attributes(
            "s",
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value("text")
                .build()
                .unwrap(),
        )
        .message_attributes(
            "n",
            MessageAttributeValue::builder()
                .data_type("Number")
                .string_value("42")
                .build()
                .unwrap(),
        )
        .message_attributes(
            "b",
            MessageAttributeValue::builder()
                .data_type("Binary")
                .binary_value(aws_sdk_sqs::primitives::Blob::new(b"hi".to_vec()))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    wait_for("the message delivered", Duration::from_secs(60), || async {
        (!sink.accepted_entries().is_empty()).then_some(())
    })
    .await;
    let e = &sink.accepted_entries()[0];
    assert_eq!(e["messageId"], sent.message_id().unwrap());
    assert!(e["receiptHandle"].as_str().is_some_and(|h| !h.is_empty()));
    assert_eq!(e["body"], "{\"hello\":\"world\"}");
    assert_eq!(e["md5OfBody"], sent.md5_of_message_body().unwrap());
    assert_eq!(
        e["md5OfMessageAttributes"],
        sent.md5_of_message_attributes().unwrap()
    );
    assert_eq!(e["eventSource"], "aws:sqs");
    assert_eq!(e["eventSourceARN"], arn.as_str());
    assert_eq!(e["awsRegion"], "us-east-1");
    let attrs = e["attributes"].as_object().unwrap();
    for k in [
        "ApproximateReceiveCount",
        "SentTimestamp",
        "SenderId",
        "ApproximateFirstReceiveTimestamp",
    ] {
        assert!(
            attrs.get(k).is_some_and(Value::is_string),
            "attribute {k} in {attrs:?}"
        );
    }
    assert_eq!(attrs["ApproximateReceiveCount"], "1");
    let ma = &e["messageAttributes"];
    assert_eq!(
        ma["s"],
        serde_json::json!({"stringValue":"text","stringListValues":[],"binaryListValues":[],"dataType":"String"})
    );
    assert_eq!(
        ma["n"],
        serde_json::json!({"stringValue":"42","stringListValues":[],"binaryListValues":[],"dataType":"Number"})
    );
    assert_eq!(
        ma["b"],
        serde_json::json!({"binaryValue":"aGk=","stringListValues":[],"binaryListValues":[],"dataType":"Binary"})
    );
    // An independent parser reads the same.
    let body = sink.accepted.lock().unwrap()[0].body.clone();
    let parsed: aws_lambda_events::event::sqs::SqsEvent =
        serde_json::from_slice(&body).expect("aws_lambda_events parses it");
    let r = &parsed.records[0];
    assert_eq!(r.message_id.as_deref(), sent.message_id());
    assert_eq!(r.body.as_deref(), Some("{\"hello\":\"world\"}"));
    assert_eq!(r.event_source.as_deref(), Some("aws:sqs"));
    assert_eq!(r.event_source_arn.as_deref(), Some(arn.as_str()));
    assert_eq!(
        r.message_attributes["s"].string_value.as_deref(),
        Some("text")
    );
    assert_eq!(
        r.message_attributes["b"]
            .binary_value
            .as_ref()
            .map(|b| b.0.clone()),
        Some(b"hi".to_vec())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receives_repeat_to_fill_the_batch_within_the_window() {
    let tb = testbed();
    let client = sqs(&tb);
    let (url, arn) = create_queue(&client, &unique("window"), &[]).await;
    let msgs: Vec<(String, Option<String>)> = (0..40).map(|i| (format!("w-{i}"), None)).collect();
    send(&client, &url, &msgs).await;
    let sink = Sink::ok().await;
    let extra = "    BatchSize: 40\n    MaximumBatchingWindowInSeconds: 3\n    ScalingConfig: { MaximumConcurrency: 2 }\n";
    let (_sluice, _dir) = Sluice::run(&tb, &mapping("window", &arn, &sink.url, extra)).await;
    // A few seconds when moto is idle; it once took over a minute in CI while the
    // ten-thousand-message test loaded moto beside it (the log is printed if it fails again).
    wait_for(
        "every message delivered",
        Duration::from_secs(120),
        || async { (sink.accepted_entries().len() >= msgs.len()).then_some(()) },
    )
    .await;
    let sizes: Vec<usize> = sink
        .accepted
        .lock()
        .unwrap()
        .iter()
        .map(|r| {
            serde_json::from_slice::<Value>(&r.body).unwrap()["Records"]
                .as_array()
                .unwrap()
                .len()
        })
        .collect();
    assert!(
        sizes.iter().any(|n| *n > 10),
        "receives were repeated into batches over 10: {sizes:?}"
    );
    assert!(sizes.iter().all(|n| *n <= 40), "{sizes:?}");
}
