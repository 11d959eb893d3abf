//! DynamoDB Streams against moto: inserts, modifies and deletes of items with every attribute type
//! arrive in order with the images the stream view type carries, in Lambda's event shape (checked
//! with `aws_lambda_events`' DynamoDB parser and field by field).

mod common;

use aws_sdk_dynamodb::types::{AttributeValue, StreamViewType};
use common::sink::Sink;
use common::sluice::Sluice;
use common::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

fn every_type(id: &str, text: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("Id".to_string(), AttributeValue::N(id.into())),
        ("S".to_string(), AttributeValue::S(text.into())),
        ("N".to_string(), AttributeValue::N("12.5".into())),
        (
            "B".to_string(),
            AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(b"bytes".to_vec())),
        ),
        (
            "SS".to_string(),
            AttributeValue::Ss(vec!["a".into(), "b".into()]),
        ),
        (
            "NS".to_string(),
            AttributeValue::Ns(vec!["1".into(), "2".into()]),
        ),
        (
            "BS".to_string(),
            AttributeValue::Bs(vec![aws_sdk_dynamodb::primitives::Blob::new(b"x".to_vec())]),
        ),
        (
            "M".to_string(),
            AttributeValue::M(HashMap::from([(
                "inner".to_string(),
                AttributeValue::S("v".into()),
            )])),
        ),
        (
            "L".to_string(),
            AttributeValue::L(vec![
                AttributeValue::N("1".into()),
                AttributeValue::S("two".into()),
            ]),
        ),
        ("NULL".to_string(), AttributeValue::Null(true)),
        ("BOOL".to_string(), AttributeValue::Bool(true)),
    ])
}

/// The image sluice sends for `every_type`. moto base64-encodes binary values twice in stream
/// records (DynamoDB once), so the Streams API hands sluice the bytes of `base64("bytes")`; sluice
/// encodes what the API returns exactly once (its unit tests check B and BS on real bytes).
fn every_type_json(id: &str, text: &str) -> Value {
    json!({
        "Id": {"N": id}, "S": {"S": text}, "N": {"N": "12.5"}, "B": {"B": "WW5sMFpYTT0="},
        "SS": {"SS": ["a", "b"]}, "NS": {"NS": ["1", "2"]}, "BS": {"BS": ["ZUE9PQ=="]},
        "M": {"M": {"inner": {"S": "v"}}}, "L": {"L": [{"N": "1"}, {"S": "two"}]},
        "NULL": {"NULL": true}, "BOOL": {"BOOL": true}
    })
}

async fn run_table(tb: &TestBed, view: StreamViewType) -> (String, Vec<Value>, Vec<Vec<u8>>) {
    let ddb = dynamodb(tb);
    let table = unique("table");
    let stream_arn = create_table(&ddb, &table, view).await;
    let sink = Sink::ok().await;
    let mapping = format!(
        "  - Name: ddb\n    EventSourceArn: '{stream_arn}'\n    StartingPosition: TRIM_HORIZON\n    BatchSize: 100\n    Http: {{ Url: '{}' }}\n",
        sink.url
    );
    let (sluice, _dir) = Sluice::run(tb, &mapping).await;
    sluice.wait_ready().await;
    ddb.put_item()
        .table_name(&table)
        .set_item(Some(every_type("1", "first")))
        .send()
        .await
        .unwrap();
    ddb.put_item()
        .table_name(&table)
        .set_item(Some(every_type("1", "changed")))
        .send()
        .await
        .unwrap();
    ddb.put_item()
        .table_name(&table)
        .set_item(Some(every_type("2", "second")))
        .send()
        .await
        .unwrap();
    ddb.delete_item()
        .table_name(&table)
        .key("Id", AttributeValue::N("1".into()))
        .send()
        .await
        .unwrap();
    wait_for(
        "4 stream events delivered",
        Duration::from_secs(60),
        || async { (sink.accepted_entries().len() >= 4).then_some(()) },
    )
    .await;
    let bodies = sink
        .accepted
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.body.to_vec())
        .collect();
    (stream_arn, sink.accepted_entries(), bodies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_and_old_images_in_order_with_every_attribute_type() {
    let tb = testbed();
    let (stream_arn, events, bodies) = run_table(&tb, StreamViewType::NewAndOldImages).await;
    assert_eq!(events.len(), 4, "{events:#?}");
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["eventName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["INSERT", "MODIFY", "INSERT", "REMOVE"]);
    for e in &events {
        assert_eq!(e["eventSource"], "aws:dynamodb");
        assert_eq!(e["awsRegion"], "us-east-1");
        assert_eq!(e["eventSourceARN"], stream_arn.as_str());
        assert!(e["eventID"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(e["eventVersion"].as_str().is_some());
        let d = &e["dynamodb"];
        assert_eq!(d["StreamViewType"], "NEW_AND_OLD_IMAGES");
        assert!(
            d["ApproximateCreationDateTime"].is_u64(),
            "epoch seconds: {d}"
        );
        assert!(d["SizeBytes"].as_u64().unwrap() > 0);
        assert!(d["SequenceNumber"].as_str().is_some());
    }
    assert_eq!(events[0]["dynamodb"]["Keys"], json!({"Id": {"N": "1"}}));
    assert_eq!(
        events[0]["dynamodb"]["NewImage"],
        every_type_json("1", "first")
    );
    assert!(events[0]["dynamodb"].get("OldImage").is_none());
    assert_eq!(
        events[1]["dynamodb"]["OldImage"],
        every_type_json("1", "first")
    );
    assert_eq!(
        events[1]["dynamodb"]["NewImage"],
        every_type_json("1", "changed")
    );
    assert_eq!(events[2]["dynamodb"]["Keys"], json!({"Id": {"N": "2"}}));
    assert_eq!(
        events[3]["dynamodb"]["OldImage"],
        every_type_json("1", "changed")
    );
    assert!(events[3]["dynamodb"].get("NewImage").is_none());
    // Sequence numbers increase in delivery order.
    let seqs: Vec<&str> = events
        .iter()
        .map(|e| e["dynamodb"]["SequenceNumber"].as_str().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|w| seq_key(w[0]) < seq_key(w[1])),
        "{seqs:?}"
    );
    // An independent parser reads the same.
    for body in bodies {
        let parsed: aws_lambda_events::event::dynamodb::Event =
            serde_json::from_slice(&body).expect("aws_lambda_events parses it");
        for r in parsed.records {
            assert_eq!(r.event_source.as_deref(), Some("aws:dynamodb"));
            assert_eq!(r.event_source_arn.as_deref(), Some(stream_arn.as_str()));
            assert!(r.change.sequence_number.is_some());
            assert!(!r.change.keys.is_empty());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_stream_view_type_carries_its_images() {
    let tb = testbed();
    // (view, has NewImage on INSERT/MODIFY, has OldImage on MODIFY/REMOVE)
    for (view, name, new, old) in [
        (StreamViewType::KeysOnly, "KEYS_ONLY", false, false),
        (StreamViewType::NewImage, "NEW_IMAGE", true, false),
        (StreamViewType::OldImage, "OLD_IMAGE", false, true),
        (
            StreamViewType::NewAndOldImages,
            "NEW_AND_OLD_IMAGES",
            true,
            true,
        ),
    ] {
        let (_, events, _) = run_table(&tb, view).await;
        let names: Vec<&str> = events
            .iter()
            .map(|e| e["eventName"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["INSERT", "MODIFY", "INSERT", "REMOVE"], "{name}");
        for e in &events {
            let d = &e["dynamodb"];
            assert_eq!(d["StreamViewType"], name);
            assert!(d.get("Keys").is_some(), "{name}: Keys always present");
            let kind = e["eventName"].as_str().unwrap();
            assert_eq!(
                d.get("NewImage").is_some(),
                new && kind != "REMOVE",
                "{name} {kind}: {d}"
            );
            assert_eq!(
                d.get("OldImage").is_some(),
                old && kind != "INSERT",
                "{name} {kind}: {d}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_recorded_with_ddb_stream_batch_info() {
    let tb = testbed();
    let ddb = dynamodb(&tb);
    let table = unique("table");
    let stream_arn = create_table(&ddb, &table, StreamViewType::NewAndOldImages).await;
    let (queue_url, queue_arn) = create_queue(&sqs(&tb), &unique("ddb-dlq"), &[]).await;
    let sink = Sink::start(|_, _| (500, vec![], "{\"errorMessage\":\"no\"}".into())).await;
    let mapping = format!(
        "  - Name: ddbfail\n    EventSourceArn: '{stream_arn}'\n    StartingPosition: TRIM_HORIZON\n    Http: {{ Url: '{}' }}\n    MaximumRetryAttempts: 1\n    DestinationConfig: {{ OnFailure: {{ Destination: '{queue_arn}' }} }}\n",
        sink.url
    );
    let (sluice, _dir) = Sluice::run(&tb, &mapping).await;
    sluice.wait_ready().await;
    for id in ["1", "2"] {
        ddb.put_item()
            .table_name(&table)
            .set_item(Some(every_type(id, "x")))
            .send()
            .await
            .unwrap();
    }
    let bodies = drain_queue(&sqs(&tb), &queue_url, 1, Duration::from_secs(60)).await;
    let records: Vec<Value> = bodies
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect();
    let batched: u64 = records
        .iter()
        .map(|r| r["DDBStreamBatchInfo"]["batchSize"].as_u64().unwrap())
        .sum();
    assert_eq!(batched, 2, "{records:#?}");
    let r = &records[0];
    assert_eq!(r["requestContext"]["condition"], "RetryAttemptsExhausted");
    assert_eq!(r["requestContext"]["approximateInvokeCount"], 2);
    assert_eq!(r["requestContext"]["functionArn"], sink.url.as_str());
    assert_eq!(r["responseContext"]["statusCode"], 500);
    assert_eq!(r["version"], "1.0");
    let info = &r["DDBStreamBatchInfo"];
    assert!(r.get("KinesisBatchInfo").is_none());
    assert_eq!(info["streamArn"], stream_arn.as_str());
    assert!(info["shardId"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(
        info["startSequenceNumber"].as_str().is_some()
            && info["endSequenceNumber"].as_str().is_some()
    );
    assert!(info["approximateArrivalOfFirstRecord"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
}
