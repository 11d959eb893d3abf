//! Kafka mappings against AWS services and a second topic, on the test bed (tansu and moto): a
//! poison record written to a `kafka://` on-failure topic with its key, value and headers and the
//! failure's metadata; a record too large to invoke with recorded as `MaximumPayloadSizeExceeded`
//! without blocking its partition; an Amazon MSK cluster found by its ARN (GetBootstrapBrokers,
//! which the test bed's moto serves from the cluster's tags) and named in the event; secrets read
//! from Secrets Manager. Every test has its own topics and consumer group; every wait is bounded.

mod common;

use common::kafka::{
    assert_in_order_once, bootstrap, delivered, on_failure_delivered, start_fresh, start_sluice,
    topic_mapping, wait_delivered, Target,
};
use common::sink::Sink;
use common::*;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::Message;
use serde_json::Value;
use std::time::Duration;

/// Produces one record with headers and waits for it; returns (partition, offset).
async fn produce_with_headers(
    tb: &TestBed,
    topic: &str,
    key: &str,
    value: &[u8],
    headers: &[(&str, &[u8])],
) -> (i32, i64) {
    let producer = common::kafka::config(tb)
        .set("message.max.bytes", "20000000")
        .create::<rdkafka::producer::FutureProducer>()
        .expect("Kafka producer");
    let mut hs = OwnedHeaders::new();
    for (k, v) in headers {
        hs = hs.insert(Header {
            key: k,
            value: Some(*v),
        });
    }
    let record = FutureRecord::to(topic).key(key).payload(value).headers(hs);
    match producer.send(record, Duration::from_secs(30)).await {
        Ok(d) => (d.partition, d.offset),
        Err((e, _)) => panic!("producing to {topic}: {e}"),
    }
}

/// Reads `n` messages from `topic` (from its start) within `timeout`.
async fn read_topic(
    tb: &TestBed,
    topic: &str,
    n: usize,
    timeout: Duration,
) -> Vec<rdkafka::message::OwnedMessage> {
    let consumer: StreamConsumer = common::kafka::consumer(tb, &unique("reader"));
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while out.len() < n {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(m)) => out.push(m.detach()),
            Ok(Err(e)) => panic!("reading {topic}: {e}"),
            Err(_) => panic!("{} of {n} messages on {topic} after {timeout:?}", out.len()),
        }
    }
    out
}

fn header<'a>(m: &'a rdkafka::message::OwnedMessage, key: &str) -> Option<&'a [u8]> {
    m.headers()?.iter().find(|h| h.key == key)?.value
}

/// An MSK cluster on moto whose only listener, `listener` (a `BootstrapBrokerString*` field of
/// GetBootstrapBrokers), is the test bed's broker (the test bed's moto serves it from the cluster's
/// tags); returns its ARN.
async fn msk_cluster(tb: &TestBed, listener: &str) -> String {
    let cluster = kafka_in(tb, REGION)
        .create_cluster()
        .cluster_name(unique("c"))
        .kafka_version("3.6.0")
        .number_of_broker_nodes(1)
        .broker_node_group_info(
            aws_sdk_kafka::types::BrokerNodeGroupInfo::builder()
                .instance_type("kafka.m5.large")
                .client_subnets("subnet-1")
                .build(),
        )
        .tags(format!("sluice-test:{listener}"), bootstrap(tb))
        .send()
        .await
        .expect("CreateCluster on moto");
    cluster.cluster_arn().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_record_goes_to_a_kafka_topic_with_its_key_value_and_headers() {
    let tb = testbed();
    let (topic, dlt) = (unique("src"), unique("dlt"));
    common::kafka::create_topic(&tb, &topic, 2).await;
    common::kafka::create_topic(&tb, &dlt, 1).await;
    let before = common::kafka::produce(&tb, &topic, &records("a", 200, 7)).await;
    let (p, o) = produce_with_headers(
        &tb,
        &topic,
        "key-3",
        b"poison",
        &[("trace", b"t-1"), ("bytes", &[0, 255, 7])],
    )
    .await;
    let after = common::kafka::produce(&tb, &topic, &records("b", 200, 7)).await;
    let sink = common::kafka::failing_on_poison().await;
    let extra = format!("    BisectBatchOnFunctionError: true\n    MaximumRetryAttempts: 0\n    DestinationConfig: {{ OnFailure: {{ Destination: 'kafka://{dlt}' }} }}\n");
    let target = Target::http(&sink.url, "1");
    let (mut sluice, _dir) = start_fresh(
        &tb,
        &topic_mapping(&tb, &topic, &unique("group"), 50, target, &extra),
    )
    .await;
    wait_delivered(&sink, 400, "every other record", Duration::from_secs(120)).await;

    let got = read_topic(&tb, &dlt, 1, Duration::from_secs(60)).await;
    let m = &got[0];
    assert_eq!(m.key(), Some(&b"key-3"[..]), "the original key");
    assert_eq!(m.payload(), Some(&b"poison"[..]), "the original value");
    assert_eq!(
        header(m, "trace"),
        Some(&b"t-1"[..]),
        "original headers kept"
    );
    assert_eq!(header(m, "bytes"), Some(&[0u8, 255, 7][..]));
    assert_eq!(header(m, "sluice-source-topic"), Some(topic.as_bytes()));
    assert_eq!(
        header(m, "sluice-source-partition"),
        Some(p.to_string().as_bytes())
    );
    assert_eq!(
        header(m, "sluice-source-offset"),
        Some(o.to_string().as_bytes())
    );
    let failure: Value = serde_json::from_slice(header(m, "sluice-failure").unwrap()).unwrap();
    assert_eq!(
        failure["requestContext"]["condition"],
        "RetryAttemptsExhausted"
    );
    assert_eq!(failure["responseContext"]["functionError"], "Unhandled");
    let info = &failure["KafkaBatchInfo"];
    assert_eq!(info["batchSize"], 1);
    assert_eq!(info["bootstrapServers"], bootstrap(&tb));
    let id = format!("{topic}-{p}");
    assert_eq!(info["recordsInfo"][&id]["firstRecordOffset"], o.to_string());

    // Nothing else was given up on, and the rest went through once, in order.
    let delivered = delivered(&sink, None);
    assert_in_order_once("kafka destination", &delivered);
    assert_eq!(delivered.len(), before.len() + after.len());
    assert_eq!(on_failure_delivered(&sluice, &topic).await, 1.0);
    assert_eq!(sluice.terminate().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_too_large_to_invoke_with_is_recorded_and_never_blocks_its_partition() {
    let tb = testbed();
    let topic = unique("big");
    common::kafka::create_topic(&tb, &topic, 1).await;
    let first = common::kafka::produce(&tb, &topic, &records("a", 10, 1)).await;
    let big = vec![b'x'; 6 * 1024 * 1024 + 1];
    let (_, big_offset) = produce_with_headers(&tb, &topic, "key-0", &big, &[]).await;
    let last = common::kafka::produce(&tb, &topic, &records("b", 10, 1)).await;
    let (queue_url, queue_arn) = create_queue(&sqs(&tb), &unique("dest"), &[]).await;
    let sink = Sink::start(|_, _| (200, vec![], "{}".into())).await;
    // Kafka's default is to retry forever: the record must go anyway.
    let extra =
        format!("    DestinationConfig: {{ OnFailure: {{ Destination: '{queue_arn}' }} }}\n");
    let target = Target::http(&sink.url, "1");
    let (mut sluice, _dir) = start_fresh(
        &tb,
        &topic_mapping(&tb, &topic, &unique("group"), 100, target, &extra),
    )
    .await;
    wait_delivered(
        &sink,
        first.len() + last.len(),
        "the records around it",
        Duration::from_secs(120),
    )
    .await;
    let found = drain_queue(&sqs(&tb), &queue_url, 1, Duration::from_secs(30)).await;
    assert_eq!(found.len(), 1, "{found:?}");
    let r: Value = serde_json::from_str(&found[0]).unwrap();
    assert_eq!(
        r["requestContext"]["condition"],
        "MaximumPayloadSizeExceeded"
    );
    assert_eq!(r["requestContext"]["approximateInvokeCount"], 0);
    assert_eq!(r["responseContext"], Value::Null);
    let info = &r["KafkaBatchInfo"];
    assert!(
        info["payloadSize"].as_u64().unwrap() > 6 * 1024 * 1024,
        "{info}"
    );
    assert_eq!(
        info["recordsInfo"][format!("{topic}-0")]["firstRecordOffset"],
        big_offset.to_string()
    );
    let got = delivered(&sink, None);
    assert!(
        got.iter().all(|r| r.offset != big_offset),
        "never invoked with it"
    );
    assert_in_order_once("around the big record", &got);
    assert_eq!(sluice.terminate().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_msk_cluster_is_found_by_its_arn_and_named_in_the_event() {
    let tb = testbed();
    let topic = unique("msk");
    common::kafka::create_topic(&tb, &topic, 2).await;
    let produced = common::kafka::produce(&tb, &topic, &records("m", 300, 5)).await;
    // moto keeps the cluster; its bootstrap string (the test bed's broker, plaintext only: no IAM
    // listener, so sluice uses the unauthenticated one) is served by GetBootstrapBrokers.
    let arn = msk_cluster(&tb, "BootstrapBrokerString").await;
    let sink = Sink::start(|_, _| (200, vec![], "{}".into())).await;
    let dir = tempfile::tempdir().unwrap();
    let group = unique("group");
    let yaml = format!(
        "  - Name: {topic}\n    EventSourceArn: {arn}\n    Topics: [{topic}]\n    AmazonManagedKafkaEventSourceConfig: {{ ConsumerGroupId: {group} }}\n    StartingPosition: TRIM_HORIZON\n    BatchSize: 100\n    Http: {{ Url: '{}' }}\n",
        sink.url
    );
    let mut sluice = start_sluice(&tb, dir.path(), "msk", &yaml).await;
    let events = wait_for(
        "the MSK mapping's events",
        Duration::from_secs(120),
        || async {
            let bodies: Vec<Value> = sink
                .accepted
                .lock()
                .unwrap()
                .iter()
                .map(|r| serde_json::from_slice(&r.body).unwrap())
                .collect();
            let n: usize = bodies
                .iter()
                .map(|b| {
                    b["records"]
                        .as_object()
                        .unwrap()
                        .values()
                        .map(|v| v.as_array().unwrap().len())
                        .sum::<usize>()
                })
                .sum();
            (n >= produced.len()).then_some(bodies)
        },
    )
    .await;
    for e in &events {
        assert_eq!(e["eventSource"], "aws:kafka", "{e}");
        assert_eq!(e["eventSourceArn"], arn.as_str());
        assert_eq!(e["bootstrapServers"], bootstrap(&tb));
    }
    assert_eq!(sluice.terminate().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_msk_cluster_with_iam_gets_signed_tokens_from_the_kafka_client() {
    // tansu speaks neither TLS nor SASL, so the connection cannot succeed; what is checked is
    // that librdkafka asks sluice for OAUTHBEARER tokens, which sluice signs with its AWS
    // credentials, and that the failure is reported while the process keeps running.
    let tb = testbed();
    let topic = unique("iam");
    let arn = msk_cluster(&tb, "BootstrapBrokerStringSaslIam").await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "  - Name: {topic}\n    EventSourceArn: {arn}\n    Topics: [{topic}]\n    StartingPosition: TRIM_HORIZON\n    Http: {{ Url: 'http://127.0.0.1:1/' }}\n"
    );
    let mut sluice = start_sluice(&tb, dir.path(), "iam", &yaml).await;
    wait_for(
        "a signed MSK IAM token",
        Duration::from_secs(60),
        || async {
            sluice
                .log_text()
                .contains("signed an MSK IAM token")
                .then_some(())
        },
    )
    .await;
    let log = sluice.log_text();
    assert!(
        !log.contains("X-Amz-Signature"),
        "the token is never logged"
    );
    sluice.wait_ready().await;
    assert_eq!(sluice.terminate().await, 0);
}

#[tokio::test]
async fn secrets_are_read_from_secrets_manager_and_never_shown() {
    use ::sluice::config::{parse_str, MappingSource, SecretRef};
    let tb = testbed();
    let sm = secretsmanager_in(&tb, REGION);
    let secret = sm
        .create_secret()
        .name(unique("kafka-creds"))
        .secret_string(r#"{"username":"app","password":"s3cret-value"}"#)
        .send()
        .await
        .expect("CreateSecret on moto");
    let arn = secret.arn().unwrap();
    let yaml = |arn: &str| {
        common::sluice::config(
            &tb,
            std::path::Path::new("/tmp/unused"),
            1,
            &format!("  - SelfManagedEventSource: {{ Endpoints: {{ KAFKA_BOOTSTRAP_SERVERS: [\"{}\"] }} }}\n    Topics: [t]\n    StartingPosition: TRIM_HORIZON\n    Http: {{ Url: 'http://127.0.0.1:1/' }}\n    SourceAccessConfigurations: [{{ Type: SASL_SCRAM_512_AUTH, URI: '{arn}' }}]\n", bootstrap(&tb)),
        )
    };
    let settings_for = |arn: &str| {
        let cfg = parse_str(&yaml(arn)).expect("config");
        let MappingSource::Kafka(k) = cfg.mappings[0].source.clone() else {
            panic!("a Kafka mapping")
        };
        assert!(matches!(
            k.access.sasl.as_ref().unwrap().credentials,
            Some(SecretRef::SecretsManager(_))
        ));
        (cfg, k)
    };
    let (cfg, kafka) = settings_for(arn);
    let clients = ::sluice::aws::clients(&cfg).await;
    let s = ::sluice::source::kafka::connect::client_settings(&kafka, &clients)
        .await
        .expect("settings from the secret");
    let prop = |k: &str| {
        s.properties
            .iter()
            .find(|(p, _)| p == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(prop("sasl.mechanism"), Some("SCRAM-SHA-512"));
    assert_eq!(prop("sasl.username"), Some("app"));
    assert_eq!(prop("sasl.password"), Some("s3cret-value"));
    assert!(
        !format!("{s:?}").contains("s3cret"),
        "Debug shows no secret"
    );
    // A secret that does not exist: the error names it, the mapping does not start.
    let missing = arn.replace("kafka-creds", "nope");
    let (cfg, kafka) = settings_for(&missing);
    let clients = ::sluice::aws::clients(&cfg).await;
    let err = ::sluice::source::kafka::connect::client_settings(&kafka, &clients)
        .await
        .unwrap_err();
    assert!(
        err.contains(&missing) && err.contains("GetSecretValue"),
        "{err}"
    );
}
