//! `FilterCriteria` against the emulators, one test per source (Kinesis on kinesis-local, DynamoDB
//! Streams and SQS on moto, Kafka on the test bed's broker): records matching a filter reach the
//! function, the others never do and are counted in `sluice_filtered_out_events_total`; the
//! source moves past them (a stream's checkpoint reaches its last record even when that record was
//! filtered out, so a restart re-delivers nothing; the SQS queue ends empty; the Kafka group
//! commits to the topic's end); data that is not JSON is matched by metadata filters only.

mod common;

use common::kafka::{
    delivered, ends, start_sluice, topic_mapping, wait_committed, wait_delivered, Target,
};
use common::sink::Sink;
use common::sluice::{config, free_port, Sluice};
use common::streams::{Stream, Table};
use common::*;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

const FILTERED: &str = "sluice_filtered_out_events_total";

/// `FilterCriteria` as YAML lines of a mapping item, one filter per pattern.
fn filters(patterns: &[&str]) -> String {
    let mut out = "    FilterCriteria:\n      Filters:\n".to_string();
    for p in patterns {
        out.push_str(&format!("        - Pattern: '{p}'\n"));
    }
    out
}

fn labels(mapping: &str) -> String {
    format!("mapping=\"{mapping}\"")
}

/// Waits until sluice counted `n` records filtered out for `mapping`.
async fn wait_filtered(sluice: &Sluice, mapping: &str, n: f64) {
    wait_for(
        "records counted as filtered out",
        Duration::from_secs(60),
        || async { (sluice.metric(FILTERED, &labels(mapping)).await >= n).then_some(()) },
    )
    .await;
}

/// Waits until `mapping`'s checkpoint on `shard` reached `last` (a record filtered out) and sluice
/// counted `filtered` records filtered out.
async fn wait_past_filtered(
    sluice: &Sluice,
    mapping: &str,
    shard: &str,
    last: &str,
    filtered: f64,
) {
    sluice
        .wait_checkpoint(
            "the checkpoint past the filtered last record",
            mapping,
            shard,
            last,
        )
        .await;
    wait_filtered(sluice, mapping, filtered).await;
}

/// Stops `sluice` (SIGTERM) and starts it again on the same checkpoints with `mappings`.
async fn restart(
    tb: &TestBed,
    sluice: &mut Sluice,
    dir: &std::path::Path,
    mappings: &str,
) -> Sluice {
    assert_eq!(sluice.terminate().await, 0, "{}", sluice.log_text());
    let again = Sluice::start(
        dir,
        "again",
        &config(tb, &dir.join("cp"), free_port(), mappings),
    )
    .await;
    again.wait_ready().await;
    again
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinesis_records_are_filtered_on_data_and_metadata() {
    let tb = testbed();
    let stream = Stream::create(&tb, "flt-kin", 1).await;
    let sink = Sink::ok().await;
    let name = unique("kin");
    let mappings = format!(
        "  - Name: {name}\n    EventSourceArn: {}\n    StartingPosition: TRIM_HORIZON\n    Http: {{ Url: '{}' }}\n{}",
        stream.arn,
        sink.url,
        filters(&[r#"{"data": {"kind": ["keep"]}}"#, r#"{"partitionKey": ["meta"]}"#])
    );
    let (mut sluice, dir) = Sluice::run(&tb, &mappings).await;
    sluice.wait_ready().await;
    let put = |k: &str, d: &str| (k.to_string(), d.to_string());
    let written = put_records(
        &stream.kinesis,
        &stream.name,
        vec![
            put("k", r#"{"kind":"keep","i":0}"#),
            put("k", r#"{"kind":"drop","i":1}"#),
            put("meta", "plain text, matched by its partition key"),
            put("other", "plain text, matched by nothing"),
            put("k", r#"{"kind":"keep","i":4}"#),
            put("k", r#"{"kind":"drop","i":5}"#),
        ],
    )
    .await;
    let wanted: BTreeSet<String> = [0, 2, 4].iter().map(|&i| written[i].data.clone()).collect();
    let shard = written[0].shard.clone();
    let last = written.last().unwrap().seq.clone();
    wait_past_filtered(&sluice, &name, &shard, &last, 3.0).await;
    let got: Vec<String> = sink.delivered().into_iter().map(|w| w.data).collect();
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got.iter().cloned().collect::<BTreeSet<_>>(), wanted);
    assert_eq!(sluice.metric(FILTERED, &labels(&name)).await, 3.0);
    assert_eq!(
        sluice
            .metric("sluice_invoked_events_total", &labels(&name))
            .await,
        3.0
    );

    // A restart reads on from the checkpoint: nothing again, filtered or not.
    let again = restart(&tb, &mut sluice, dir.path(), &mappings).await;
    let sentinel = put_records(
        &stream.kinesis,
        &stream.name,
        vec![put("k", r#"{"kind":"keep","i":6}"#)],
    )
    .await;
    wait_for(
        "the record after the restart",
        Duration::from_secs(60),
        || async {
            sink.delivered()
                .iter()
                .any(|w| w.data == sentinel[0].data)
                .then_some(())
        },
    )
    .await;
    assert_eq!(sink.delivered().len(), 4, "{:?}", sink.delivered());
    assert_eq!(again.metric(FILTERED, &labels(&name)).await, 0.0);
}

/// The stream's shard and its last record's sequence number, read from moto.
async fn last_stream_record(tb: &TestBed, stream_arn: &str) -> Option<(String, String)> {
    use aws_sdk_dynamodbstreams as ds;
    let conf = ds::Config::builder()
        .behavior_version(ds::config::BehaviorVersion::latest())
        .region(ds::config::Region::new(REGION))
        .credentials_provider(ds::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .endpoint_url(&tb.moto)
        .build();
    let client = ds::Client::from_conf(conf);
    let d = client
        .describe_stream()
        .stream_arn(stream_arn)
        .send()
        .await
        .ok()?;
    let shard = d
        .stream_description()?
        .shards()
        .first()?
        .shard_id()?
        .to_string();
    let mut iterator = client
        .get_shard_iterator()
        .stream_arn(stream_arn)
        .shard_id(&shard)
        .shard_iterator_type(ds::types::ShardIteratorType::TrimHorizon)
        .send()
        .await
        .ok()?
        .shard_iterator
        .unwrap_or_default();
    let mut last = None;
    for _ in 0..20 {
        let page = client
            .get_records()
            .shard_iterator(&iterator)
            .send()
            .await
            .ok()?;
        if let Some(r) = page.records().last() {
            last = r
                .dynamodb()
                .and_then(|d| d.sequence_number())
                .map(str::to_string);
        }
        match page.next_shard_iterator() {
            Some(next) if !page.records().is_empty() => iterator = next.to_string(),
            _ => break,
        }
    }
    Some((shard, last?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_records_are_filtered_on_the_typed_record() {
    use aws_sdk_dynamodb::types::{AttributeValue, StreamViewType};
    let tb = testbed();
    let table = Table::create(&tb, "flt-ddb", StreamViewType::NewAndOldImages).await;
    let stream_arn = &table.stream_arn;
    let sink = Sink::ok().await;
    let name = unique("ddb");
    let mappings = format!(
        "  - Name: {name}\n    EventSourceArn: '{stream_arn}'\n    StartingPosition: TRIM_HORIZON\n    Http: {{ Url: '{}' }}\n{}",
        sink.url,
        filters(&[r#"{"eventName": ["INSERT"], "dynamodb": {"NewImage": {"status": {"S": ["shipped"]}}}}"#])
    );
    let (mut sluice, dir) = Sluice::run(&tb, &mappings).await;
    sluice.wait_ready().await;
    let put = |id: &str, status: &str| {
        let item = HashMap::from([
            ("Id".to_string(), AttributeValue::N(id.into())),
            ("status".to_string(), AttributeValue::S(status.into())),
        ]);
        table
            .ddb
            .put_item()
            .table_name(&table.name)
            .set_item(Some(item))
            .send()
    };
    put("1", "shipped").await.unwrap(); // INSERT, shipped: sent
    put("2", "pending").await.unwrap(); // INSERT, pending
    put("1", "shipped").await.unwrap(); // MODIFY
    put("3", "pending").await.unwrap(); // INSERT, pending: the last record, filtered out
    let (shard, last) = wait_for("the stream's records", Duration::from_secs(30), || async {
        last_stream_record(&tb, stream_arn).await
    })
    .await;
    wait_past_filtered(&sluice, &name, &shard, &last, 3.0).await;
    let got = sink.accepted_entries();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["eventName"], "INSERT");
    assert_eq!(
        got[0]["dynamodb"]["NewImage"]["Id"],
        serde_json::json!({"N": "1"})
    );

    let again = restart(&tb, &mut sluice, dir.path(), &mappings).await;
    put("4", "shipped").await.unwrap();
    wait_for(
        "the record after the restart",
        Duration::from_secs(60),
        || async { (sink.accepted_entries().len() >= 2).then_some(()) },
    )
    .await;
    let got = sink.accepted_entries();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(
        got[1]["dynamodb"]["NewImage"]["Id"],
        serde_json::json!({"N": "4"})
    );
    assert_eq!(again.metric(FILTERED, &labels(&name)).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_messages_are_filtered_on_the_body_and_the_rest_deleted() {
    let tb = testbed();
    let client = sqs(&tb);
    let (url, arn) = create_queue(&client, &unique("flt-sqs"), &[]).await;
    let sink = Sink::ok().await;
    let name = unique("sqs");
    let mappings = format!(
        "  - Name: {name}\n    EventSourceArn: {arn}\n    Http: {{ Url: '{}' }}\n{}",
        sink.url,
        filters(&[
            r#"{"body": {"kind": ["keep"]}}"#,
            r#"{"body": [{"prefix": "plain keep"}]}"#
        ])
    );
    let (sluice, _dir) = Sluice::run(&tb, &mappings).await;
    sluice.wait_ready().await;
    let kept = [r#"{"kind":"keep","i":0}"#, "plain keep me"];
    let dropped = [
        r#"{"kind":"drop"}"#,
        "plain drop me",
        r#"{"body":"plain keep"}"#,
    ];
    for body in kept.iter().chain(&dropped) {
        client
            .send_message()
            .queue_url(&url)
            .message_body(*body)
            .send()
            .await
            .unwrap();
    }
    wait_filtered(&sluice, &name, 3.0).await;
    wait_for("the queue to be empty", Duration::from_secs(60), || async {
        let out = client
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(
                aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
            )
            .send()
            .await
            .ok()?;
        let depth: usize = out
            .attributes()?
            .values()
            .filter_map(|v| v.parse::<usize>().ok())
            .sum();
        (depth == 0 && sink.accepted_entries().len() >= 2).then_some(())
    })
    .await;
    let got: BTreeSet<String> = sink
        .accepted_entries()
        .iter()
        .map(|e: &Value| e["body"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, kept.iter().map(|s| s.to_string()).collect());
    assert_eq!(sink.accepted_entries().len(), 2);
    assert_eq!(sluice.metric(FILTERED, &labels(&name)).await, 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_records_are_filtered_on_value_and_metadata_and_committed_past() {
    let tb = testbed();
    let topic = unique("flt-kafka");
    common::kafka::create_topic(&tb, &topic, 1).await;
    let rec = |k: &str, v: &str| (k.to_string(), v.to_string());
    let produced = common::kafka::produce(
        &tb,
        &topic,
        &[
            rec("k", r#"{"device":"AB-1"}"#),
            rec("k", r#"{"device":"CD-2"}"#),
            rec("meta", "plain text, matched by its key"),
            rec("other", "plain text, matched by nothing"),
            rec("k", r#"{"device":"AB-3"}"#),
            rec("k", r#"{"device":"CD-4"}"#),
        ],
    )
    .await;
    let sink = Sink::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let group = unique("group");
    // The event's `key` is base64: "meta" is "bWV0YQ==".
    let extra = filters(&[
        r#"{"value": {"device": [{"prefix": "AB"}]}}"#,
        r#"{"key": ["bWV0YQ=="]}"#,
    ]);
    let yaml = topic_mapping(
        &tb,
        &topic,
        &group,
        100,
        Target::http(&sink.url, "1"),
        &extra,
    );
    let sluice = start_sluice(&tb, dir.path(), "kafka", &yaml).await;
    wait_delivered(&sink, 3, "the matching records", Duration::from_secs(120)).await;
    wait_committed(
        &tb,
        &group,
        &topic,
        &ends(&produced),
        Duration::from_secs(60),
    )
    .await;
    wait_filtered(&sluice, &topic, 3.0).await;
    let got: Vec<String> = delivered(&sink, None)
        .into_iter()
        .map(|p| p.value)
        .collect();
    let want: Vec<String> = [0, 2, 4]
        .iter()
        .map(|&i| produced[i].value.clone())
        .collect();
    assert_eq!(got, want);
    assert_eq!(sluice.metric(FILTERED, &labels(&topic)).await, 3.0);
}
