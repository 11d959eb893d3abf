//! Shared test-bed helpers: emulator endpoints (from `testbed/testbed.sh start`), Kinesis stream
//! set-up with unique names, Kafka topics and records (`kafka`), an HTTP function run by the test,
//! the sluice binary as a child process, and condition waits (no sleeps as synchronisation).
#![allow(dead_code)]

pub mod cli;
pub mod fleet;
pub mod kafka;
pub mod proxy;
pub mod sink;
pub mod sluice;
pub mod streams;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, StreamStatus};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

/// Emulator endpoints.
#[derive(Clone, Debug)]
pub struct TestBed {
    pub kinesis: String,
    /// kinesis-local through the fault proxy: append `/fault-<name>` to pick a rule file.
    pub kinesis_faults: String,
    /// Lambda through the fault proxy (AWS-shaped function errors, injectable throttles).
    pub lambda: String,
    pub moto: String,
    /// The Kafka broker's bootstrap address (`host:port`); empty when the test bed was started
    /// before it had one (the helpers in [`kafka`] then panic saying so).
    pub kafka: String,
    pub recorder_dir: PathBuf,
    pub faults_dir: PathBuf,
}

/// Reads the test bed's endpoints from the environment, else from `.testbed/env`.
pub fn testbed() -> TestBed {
    let file: BTreeMap<String, String> =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.testbed/env"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    let get = |k: &str| {
        std::env::var(k).ok().or_else(|| file.get(k).cloned()).unwrap_or_else(|| {
            panic!("{k} is not set: start the emulators with `testbed/testbed.sh start` (or run testbed/run-tests.sh)")
        })
    };
    TestBed {
        kinesis: get("SLUICE_TEST_KINESIS_ENDPOINT"),
        kinesis_faults: get("SLUICE_TEST_KINESIS_FAULT_ENDPOINT"),
        lambda: get("SLUICE_TEST_LAMBDA_ENDPOINT"),
        moto: get("SLUICE_TEST_MOTO_ENDPOINT"),
        kafka: std::env::var("SLUICE_TEST_KAFKA_BOOTSTRAP")
            .ok()
            .or_else(|| file.get("SLUICE_TEST_KAFKA_BOOTSTRAP").cloned())
            .unwrap_or_default(),
        recorder_dir: get("SLUICE_TEST_RECORDER_DIR").into(),
        faults_dir: get("SLUICE_TEST_FAULTS_DIR").into(),
    }
}

/// A name no other test uses.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// Builds `$name(tb, region)`: a `$sdk` client on the test bed's `$endpoint` endpoint with test
/// credentials, signing for `region` (the emulators keep one namespace per region); `$setting`s are
/// extra builder switches turned on.
macro_rules! client_in {
    ($name:ident, $sdk:ident, $endpoint:ident $(, $setting:ident)*) => {
        pub fn $name(tb: &TestBed, region: &str) -> $sdk::Client {
            let conf = $sdk::Config::builder()
                .behavior_version($sdk::config::BehaviorVersion::latest())
                .region($sdk::config::Region::new(region.to_string()))
                .credentials_provider($sdk::config::Credentials::new(
                    "test", "test", None, None, "test",
                ))
                .endpoint_url(&tb.$endpoint)
                $(.$setting(true))*
                .build();
            $sdk::Client::from_conf(conf)
        }
    };
}
client_in!(kinesis_in, aws_sdk_kinesis, kinesis);
client_in!(sqs_in, aws_sdk_sqs, moto);
client_in!(sns_in, aws_sdk_sns, moto);
client_in!(s3_in, aws_sdk_s3, moto, force_path_style);
client_in!(dynamodb_in, aws_sdk_dynamodb, moto);
client_in!(kafka_in, aws_sdk_kafka, moto);
client_in!(secretsmanager_in, aws_sdk_secretsmanager, moto);

/// The region the test bed's sluice config names, and the default clients sign for.
pub const REGION: &str = "us-east-1";

pub async fn kinesis(tb: &TestBed) -> aws_sdk_kinesis::Client {
    kinesis_in(tb, REGION)
}

pub fn sqs(tb: &TestBed) -> aws_sdk_sqs::Client {
    sqs_in(tb, REGION)
}

pub fn sns(tb: &TestBed) -> aws_sdk_sns::Client {
    sns_in(tb, REGION)
}

pub fn s3(tb: &TestBed) -> aws_sdk_s3::Client {
    s3_in(tb, REGION)
}

pub fn dynamodb(tb: &TestBed) -> aws_sdk_dynamodb::Client {
    dynamodb_in(tb, REGION)
}

/// A DynamoDB client on moto through `endpoint` (a [`proxy::Proxy`] in front of it), with short
/// call timeouts so a cut shows as failed calls, not hung ones.
pub fn dynamodb_via(tb: &TestBed, endpoint: &str) -> aws_sdk_dynamodb::Client {
    let via = TestBed {
        moto: endpoint.to_string(),
        ..tb.clone()
    };
    let client = dynamodb_in(&via, REGION);
    let conf = client
        .config()
        .to_builder()
        .timeout_config(
            aws_smithy_types::timeout::TimeoutConfig::builder()
                .operation_timeout(Duration::from_secs(1))
                .build(),
        )
        .build();
    aws_sdk_dynamodb::Client::from_conf(conf)
}

/// Serves `app` on 127.0.0.1 at a random port; returns `http://127.0.0.1:<port>`.
pub async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

/// Creates an SQS queue with `attributes` in the client's region; returns (url, arn).
pub async fn create_queue(
    client: &aws_sdk_sqs::Client,
    name: &str,
    attributes: &[(aws_sdk_sqs::types::QueueAttributeName, String)],
) -> (String, String) {
    let mut req = client.create_queue().queue_name(name);
    for (k, v) in attributes {
        req = req.attributes(k.clone(), v);
    }
    let url = req
        .send()
        .await
        .expect("CreateQueue")
        .queue_url()
        .unwrap()
        .to_string();
    let region = client.config().region().map_or(REGION, |r| r.as_ref());
    (url, format!("arn:aws:sqs:{region}:123456789012:{name}"))
}

/// Receives every message body currently in the queue (deleting them), waiting up to `timeout`
/// for at least `min` to arrive.
pub async fn drain_queue(
    client: &aws_sdk_sqs::Client,
    url: &str,
    min: usize,
    timeout: Duration,
) -> Vec<String> {
    let mut bodies = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let out = client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("ReceiveMessage");
        let msgs = out.messages();
        for m in msgs {
            bodies.push(m.body().unwrap_or_default().to_string());
            client
                .delete_message()
                .queue_url(url)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
        if (msgs.is_empty() && bodies.len() >= min) || tokio::time::Instant::now() > deadline {
            return bodies;
        }
    }
}

/// Polls `check` every 50 ms until it returns `Some`, or panics naming `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates a stream and waits until it is ACTIVE; returns its ARN.
pub async fn create_stream(client: &aws_sdk_kinesis::Client, name: &str, shards: i32) -> String {
    client
        .create_stream()
        .stream_name(name)
        .shard_count(shards)
        .send()
        .await
        .expect("CreateStream");
    wait_for(
        "stream to become ACTIVE",
        Duration::from_secs(30),
        || async {
            let d = client
                .describe_stream_summary()
                .stream_name(name)
                .send()
                .await
                .ok()?;
            let s = d.stream_description_summary()?;
            (s.stream_status() == &StreamStatus::Active).then(|| s.stream_arn().to_string())
        },
    )
    .await
}

/// A record as written: where it landed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Written {
    pub shard: String,
    pub seq: String,
    pub key: String,
    pub data: String,
}

/// Writes `(partition key, data)` pairs with PutRecords (500 per call, failed entries retried in
/// order); returns where each landed.
pub async fn put_records(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    records: Vec<(String, String)>,
) -> Vec<Written> {
    let mut written = Vec::with_capacity(records.len());
    for chunk in records.chunks(500) {
        let mut pending: Vec<(String, String)> = chunk.to_vec();
        while !pending.is_empty() {
            let entries = pending
                .iter()
                .map(|(k, d)| {
                    PutRecordsRequestEntry::builder()
                        .partition_key(k)
                        .data(Blob::new(d.as_bytes()))
                        .build()
                        .unwrap()
                })
                .collect::<Vec<_>>();
            let out = client
                .put_records()
                .stream_name(stream)
                .set_records(Some(entries))
                .send()
                .await
                .expect("PutRecords");
            let mut retry = Vec::new();
            for (entry, (k, d)) in out.records().iter().zip(pending.drain(..)) {
                match (entry.shard_id(), entry.sequence_number()) {
                    (Some(shard), Some(seq)) if entry.error_code().is_none() => {
                        written.push(Written {
                            shard: shard.to_string(),
                            seq: seq.to_string(),
                            key: k,
                            data: d,
                        })
                    }
                    _ => retry.push((k, d)),
                }
            }
            pending = retry;
        }
    }
    written
}

/// `n` records over `keys` partition keys, with data `"<tag>-<i>"`.
pub fn records(tag: &str, n: usize, keys: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| (format!("key-{}", i % keys), format!("{tag}-{i}")))
        .collect()
}

/// Sequence numbers compare by length, then digits.
pub fn seq_key(s: &str) -> (usize, &str) {
    (s.len(), s)
}

/// What the `recorder` test function (served by the Lambda emulator) recorded for `stream`, in order.
/// The function may be appending while this reads: a last line without its newline is not complete
/// yet and is left for the next read.
pub fn recorded(tb: &TestBed, stream: &str) -> Vec<Written> {
    let text = std::fs::read_to_string(tb.recorder_dir.join(format!("{stream}.jsonl")))
        .unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let s = |k: &str| v[k].as_str().unwrap().to_string();
            Written {
                shard: s("shard"),
                seq: s("seq"),
                key: s("key"),
                data: s("data"),
            }
        })
        .collect()
}

/// Groups delivered records by shard, in delivery order.
pub fn by_shard<'a>(
    items: impl IntoIterator<Item = &'a Written>,
) -> BTreeMap<String, Vec<Written>> {
    let mut out: BTreeMap<String, Vec<Written>> = BTreeMap::new();
    for w in items {
        out.entry(w.shard.clone()).or_default().push(w.clone());
    }
    out
}

/// The records of `written` on `shard`, in order.
pub fn of(written: &[Written], shard: &str) -> Vec<Written> {
    written
        .iter()
        .filter(|w| w.shard == shard)
        .cloned()
        .collect()
}

/// Asserts each shard's records are strictly increasing by sequence number.
pub fn assert_ordered(label: &str, items: &[Written]) {
    for (shard, recs) in by_shard(items) {
        for pair in recs.windows(2) {
            assert!(
                seq_key(&pair[0].seq) < seq_key(&pair[1].seq),
                "{label}: shard {shard} out of order: {} then {}",
                pair[0].seq,
                pair[1].seq
            );
        }
    }
}

/// Creates a table keyed on `Id` (N) with a stream; returns the stream ARN.
pub async fn create_table(
    client: &aws_sdk_dynamodb::Client,
    name: &str,
    view: aws_sdk_dynamodb::types::StreamViewType,
) -> String {
    create_table_keyed(
        client,
        name,
        aws_sdk_dynamodb::types::ScalarAttributeType::N,
        view,
    )
    .await
}

/// Creates a table keyed on `Id` of type `key` with a stream; returns the stream ARN.
pub async fn create_table_keyed(
    client: &aws_sdk_dynamodb::Client,
    name: &str,
    key: aws_sdk_dynamodb::types::ScalarAttributeType,
    view: aws_sdk_dynamodb::types::StreamViewType,
) -> String {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, KeySchemaElement, KeyType, StreamSpecification,
    };
    let out = client
        .create_table()
        .table_name(name)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("Id")
                .attribute_type(key)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("Id")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(view)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("CreateTable");
    out.table_description()
        .unwrap()
        .latest_stream_arn()
        .expect("stream ARN")
        .to_string()
}
