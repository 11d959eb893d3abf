//! The ARN decides what is read and where failures go (issue 8 item 6), no AWS call hangs (item 8,
//! SDK part), and a Kinesis stream's retention is read from the stream (item 4 support).
//! Against the emulators: kinesis-local keeps one stream namespace per region (the request's
//! signing region), moto one queue and table namespace per region.

mod common;

use common::sink::Sink;
use common::sluice::Sluice;
use common::*;
use std::time::Duration;

use ::sluice::source::kinesis::{EventContext, KinesisSource};
use ::sluice::source::{Source, SourceError};

/// The SDK's default chain must find static credentials here: without them a call fails fast on
/// credentials, which would hide whether a timeout bounds it.
fn static_credentials() {
    std::env::set_var("AWS_ACCESS_KEY_ID", "test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
}

fn http_mapping(name: &str, arn: &str, url: &str, extra: &str) -> String {
    format!(
        "  - Name: {name}\n    EventSourceArn: {arn}\n    StartingPosition: TRIM_HORIZON\n    BatchSize: 100\n    Http:\n      Url: {url}\n{extra}"
    )
}

/// sluice runs with `region: us-east-1`; the mapping names a eu-west-1 stream. A us-east-1 stream of
/// the same name holds other records: only the eu-west-1 ones may reach the function.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapping_reads_the_stream_of_its_arns_region() {
    let tb = testbed();
    let (eu, us) = (kinesis_in(&tb, "eu-west-1"), kinesis_in(&tb, "us-east-1"));
    let stream = unique("region");
    let eu_arn = create_stream(&eu, &stream, 1).await;
    let us_arn = create_stream(&us, &stream, 1).await;
    assert!(eu_arn.contains(":eu-west-1:"), "{eu_arn}");
    assert!(us_arn.contains(":us-east-1:"), "{us_arn}");
    let eu_written = put_records(&eu, &stream, records("eu", 10, 1)).await;
    put_records(&us, &stream, records("us", 10, 1)).await;

    let sink = Sink::ok().await;
    let (_sluice, _dir) = Sluice::run(&tb, &http_mapping("eu", &eu_arn, &sink.url, "")).await;
    wait_for("10 records delivered", Duration::from_secs(60), || async {
        (sink.delivered().len() >= 10).then_some(())
    })
    .await;
    let data: Vec<String> = sink.delivered().into_iter().map(|w| w.data).collect();
    let expected: Vec<String> = eu_written.into_iter().map(|w| w.data).collect();
    assert_eq!(
        data, expected,
        "the eu-west-1 stream's records, and only them"
    );
    for entry in sink.accepted_entries() {
        assert_eq!(entry["eventSourceARN"], eu_arn.as_str());
        assert_eq!(entry["awsRegion"], "eu-west-1");
    }
}

/// An on-failure queue in eu-west-1 is resolved and written in eu-west-1, whatever the process
/// region is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_failure_queue_in_another_region_gets_the_failure_record() {
    let tb = testbed();
    let kinesis = kinesis(&tb).await;
    let stream = unique("region-dest");
    let arn = create_stream(&kinesis, &stream, 1).await;
    let eu_sqs = sqs_in(&tb, "eu-west-1");
    let (url, queue_arn) = create_queue(&eu_sqs, &unique("region-dlq"), &[]).await;

    let sink = Sink::start(|_, _| (500, vec![], "{\"errorMessage\":\"no\"}".into())).await;
    let extra = format!(
        "    MaximumRetryAttempts: 0\n    DestinationConfig: {{ OnFailure: {{ Destination: '{queue_arn}' }} }}\n"
    );
    let (_sluice, _dir) = Sluice::run(&tb, &http_mapping("dest", &arn, &sink.url, &extra)).await;
    put_records(&kinesis, &stream, records("f", 2, 1)).await;
    let bodies = drain_queue(&eu_sqs, &url, 1, Duration::from_secs(60)).await;
    assert!(
        !bodies.is_empty(),
        "no failure record in the eu-west-1 queue"
    );
    let v: serde_json::Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(v["KinesisBatchInfo"]["streamArn"], arn.as_str());
}

/// A DynamoDB stream in eu-west-1 is described and read in eu-west-1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dynamodb_stream_in_another_region_is_read_there() {
    use aws_sdk_dynamodb::types::{AttributeValue, ScalarAttributeType, StreamViewType};
    let tb = testbed();
    let ddb = dynamodb_in(&tb, "eu-west-1");
    let table = unique("region-table");
    let stream_arn = create_table_keyed(
        &ddb,
        &table,
        ScalarAttributeType::S,
        StreamViewType::NewImage,
    )
    .await;
    assert!(stream_arn.contains(":eu-west-1:"), "{stream_arn}");
    ddb.put_item()
        .table_name(&table)
        .item("Id", AttributeValue::S("eu-item".into()))
        .send()
        .await
        .expect("PutItem");

    let sink = Sink::ok().await;
    let (_sluice, _dir) = Sluice::run(&tb, &http_mapping("ddb", &stream_arn, &sink.url, "")).await;
    let entries = wait_for("the eu-west-1 record", Duration::from_secs(60), || async {
        let e = sink.accepted_entries();
        (!e.is_empty()).then_some(e)
    })
    .await;
    // (moto writes `awsRegion: us-east-1` into every stream record whatever the table's region.)
    assert_eq!(entries[0]["eventSourceARN"], stream_arn.as_str());
    assert_eq!(entries[0]["dynamodb"]["Keys"]["Id"]["S"], "eu-item");
}

/// An SQS queue in eu-west-1 is polled in eu-west-1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_in_another_region_is_polled_there() {
    let tb = testbed();
    let eu_sqs = sqs_in(&tb, "eu-west-1");
    let (url, queue_arn) = create_queue(&eu_sqs, &unique("region-queue"), &[]).await;
    eu_sqs
        .send_message()
        .queue_url(&url)
        .message_body("eu-message")
        .send()
        .await
        .expect("SendMessage");

    let sink = Sink::ok().await;
    let mapping = format!(
        "  - Name: queue\n    EventSourceArn: {queue_arn}\n    Http: {{ Url: '{}' }}\n",
        sink.url
    );
    let (_sluice, _dir) = Sluice::run(&tb, &mapping).await;
    let entries = wait_for("the eu-west-1 message", Duration::from_secs(60), || async {
        let e = sink.all_entries();
        (!e.is_empty()).then_some(e)
    })
    .await;
    assert_eq!(entries[0]["body"], "eu-message");
    assert_eq!(entries[0]["awsRegion"], "eu-west-1");
}

/// A test config whose Kinesis and Lambda endpoints are `kinesis` and `lambda`.
fn lib_config(kinesis: &str, lambda: &str) -> ::sluice::config::Config {
    let yaml = format!(
        "region: us-east-1\nendpoints:\n  kinesis: {kinesis}\n  lambda: {lambda}\ncheckpoint_dir: /tmp/unused\nmappings:\n  - EventSourceArn: arn:aws:kinesis:us-east-1:000000000000:stream/s\n    StartingPosition: LATEST\n    FunctionName: f\n"
    );
    ::sluice::config::parse_str(&yaml).expect("test config")
}

fn source_for(clients: &::sluice::aws::Clients, arn: &str) -> KinesisSource {
    KinesisSource::new(
        clients,
        EventContext::new(arn, "us-east-1", "arn:aws:iam::000000000000:role/r"),
    )
    .expect("an HTTP client")
}

/// A TCP server that accepts connections and never answers: a half-open peer.
async fn silent_endpoint() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinesis_calls_to_a_silent_endpoint_time_out_as_service_errors() {
    static_credentials();
    let url = silent_endpoint().await;
    let clients = ::sluice::aws::clients(&lib_config(&url, &url)).await;
    let source = source_for(
        &clients,
        "arn:aws:kinesis:us-east-1:000000000000:stream/silent",
    );
    let bound = ::sluice::aws::DEFAULT_OPERATION_TIMEOUT + Duration::from_secs(5);
    let shard = ::sluice::source::Partition {
        id: "shardId-000000000000".into(),
        parents: vec![],
        closed: false,
    };
    let mut reader = source.open(
        &shard,
        ::sluice::source::Position::Start(::sluice::config::StartingPosition::TrimHorizon),
    );
    let (listed, read, retention) = tokio::join!(
        tokio::time::timeout(bound, source.list_partitions()),
        tokio::time::timeout(bound, reader.read()),
        tokio::time::timeout(bound, source.retention()),
    );
    match listed.expect("ListShards must not hang") {
        Err(SourceError::Service(m)) => assert!(m.contains("timed out"), "{m}"),
        other => panic!("ListShards: expected a service error, got {other:?}"),
    }
    match read.expect("GetShardIterator/GetRecords must not hang") {
        Err(SourceError::Service(m)) => assert!(m.contains("timed out"), "{m}"),
        other => panic!("read: expected a service error, got {other:?}"),
    }
    match retention.expect("DescribeStreamSummary must not hang") {
        Err(SourceError::Service(m)) => assert!(m.contains("timed out"), "{m}"),
        other => panic!("retention: expected a service error, got {other:?}"),
    }
}

/// The defaults leave room for a per-call override: an Invoke that answers after the default
/// operation timeout succeeds when its call sets a longer operation timeout (and only that).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_call_operation_timeout_overrides_the_default() {
    static_credentials();
    let delay = ::sluice::aws::DEFAULT_OPERATION_TIMEOUT + Duration::from_secs(1);
    let app = axum::Router::new().fallback(move || async move {
        tokio::time::sleep(delay).await;
        "{}"
    });
    let url = serve(app).await;
    let clients = ::sluice::aws::clients(&lib_config(&url, &url)).await;
    let timeouts = aws_smithy_types::timeout::TimeoutConfig::builder()
        .operation_timeout(delay + Duration::from_secs(10))
        .build();
    let out = clients
        .lambda
        .invoke()
        .function_name("slow")
        .customize()
        .config_override(aws_sdk_lambda::config::Builder::default().timeout_config(timeouts))
        .send()
        .await
        .expect("a slow Invoke with a long per-call timeout succeeds");
    assert_eq!(out.status_code(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinesis_retention_is_read_from_the_stream() {
    static_credentials();
    let tb = testbed();
    let kinesis = kinesis(&tb).await;
    let stream = unique("retention");
    let arn = create_stream(&kinesis, &stream, 1).await;
    kinesis
        .increase_stream_retention_period()
        .stream_name(&stream)
        .retention_period_hours(48)
        .send()
        .await
        .expect("IncreaseStreamRetentionPeriod");
    let clients = ::sluice::aws::clients(&lib_config(&tb.kinesis, &tb.lambda)).await;
    let source = source_for(&clients, &arn);
    let retention = wait_for("retention of 48 h", Duration::from_secs(30), || async {
        let r = source.retention().await.expect("DescribeStreamSummary");
        (r == Duration::from_secs(48 * 3600)).then_some(r)
    })
    .await;
    assert_eq!(retention, Duration::from_secs(48 * 3600));
}
