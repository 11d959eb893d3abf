//! Unit tests of Kafka mappings in the config: defaults, and every rule of the source, topic,
//! consumer group, batching, starting position and error handling with its exact message. The
//! access configurations, names and groups across mappings, and the example file are in
//! [`super::kafka_access_tests`]; the helpers here serve both.

use super::kafka::self_managed_region;
use super::parse::parse;
use super::*;
use std::time::UNIX_EPOCH;

pub(super) const SM: &str = "SelfManagedEventSource: { Endpoints: { KAFKA_BOOTSTRAP_SERVERS: ['b1.example.com:9092', '10.0.0.2:9093'] } }";
pub(super) const MSK: &str =
    "arn:aws:kafka:us-east-1:123456789012:cluster/demo/6357e0b2-0e6a-4b86-a0b4-70df934c2e31-5";

/// A self-managed mapping on `orders` from LATEST, with `extra` lines (each indented by 4).
pub(super) fn sm(extra: &str) -> String {
    format!("region: eu-west-1\nmappings:\n  - {SM}\n    Topics: [orders]\n    FunctionName: f\n    StartingPosition: LATEST\n{extra}")
}

/// An MSK mapping on `orders` from LATEST, with `extra` lines.
pub(super) fn msk(extra: &str) -> String {
    format!("mappings:\n  - EventSourceArn: {MSK}\n    Topics: [orders]\n    FunctionName: f\n    StartingPosition: LATEST\n{extra}")
}

pub(super) fn errors(yaml: &str) -> Vec<String> {
    parse(yaml).expect_err("config should be rejected").0
}

pub(super) fn kafka(yaml: &str) -> (Mapping, KafkaSettings) {
    let c = parse(yaml).unwrap_or_else(|e| panic!("{e}"));
    let m = c.mappings[0].clone();
    let k = m.kafka().expect("a Kafka mapping").clone();
    (m, k)
}

#[test]
fn a_self_managed_mapping_has_aws_defaults() {
    let (m, k) = kafka(&sm(""));
    assert_eq!(m.name, "orders", "the default name is the topic");
    assert!(m.legacy_names.is_empty());
    assert_eq!(
        m.batching,
        Batching {
            batch_size: 100,
            window: Duration::from_millis(500)
        },
        "Kafka's defaults: 100 records, 500 ms"
    );
    assert_eq!(
        k.cluster,
        KafkaCluster::SelfManaged {
            bootstrap_servers: vec!["b1.example.com:9092".into(), "10.0.0.2:9093".into()]
        }
    );
    assert_eq!(k.topic, "orders");
    assert_eq!(k.consumer_group_id, "sluice-orders");
    assert_eq!(k.starting_position, StartingPosition::Latest);
    assert_eq!(k.errors, ErrorHandling::default());
    assert_eq!(k.access, KafkaAccess::default(), "no authentication");
    assert_eq!(
        (k.region.as_str(), k.account.as_str()),
        ("eu-west-1", "000000000000")
    );
    // What the rest of sluice asks every mapping.
    assert_eq!(m.source_arn(), "", "a self-managed cluster has no ARN");
    assert_eq!(m.source.region(), "eu-west-1");
    assert_eq!(m.source.account(), SELF_MANAGED_ACCOUNT);
    assert_eq!(m.source.resource_name(), "orders");
    assert!(m.source.is_kafka() && !m.source.is_queue() && !m.source.has_shards());
    assert_eq!(m.starting_position(), Some(StartingPosition::Latest));
    assert_eq!(m.stream_errors(), Some(&ErrorHandling::default()));
    assert!(!m.report_batch_item_failures() && m.queue().is_none());
}

#[test]
fn an_msk_mapping_takes_region_account_and_name_from_its_arn_and_uses_iam() {
    let (m, k) = kafka(&msk(""));
    assert_eq!(m.name, "demo/orders", "<cluster>/<topic>");
    assert_eq!(k.consumer_group_id, "sluice-demo/orders");
    assert_eq!(m.source_arn(), MSK);
    assert_eq!(
        (m.source.region(), m.source.account()),
        ("us-east-1", "123456789012")
    );
    let KafkaCluster::Msk { arn } = &k.cluster else {
        panic!("{k:?}")
    };
    assert_eq!(arn.cluster, "demo");
    assert_eq!(k.cluster_name(), Some("demo"));
    assert_eq!(
        k.access.sasl,
        Some(KafkaSasl {
            mechanism: SaslMechanism::MskIam,
            credentials: None
        }),
        "no SASL and no client certificate: IAM"
    );
    assert!(!m.source.has_shards());
}

#[test]
fn every_kafka_field_is_read() {
    let (m, k) = kafka(&sm("    Name: orders-audit\n    Enabled: false\n    BatchSize: 10000\n    MaximumBatchingWindowInSeconds: 0\n    SelfManagedKafkaEventSourceConfig: { ConsumerGroupId: 'audit/v2:orders_+=.@*-1' }\n    StartingPosition: AT_TIMESTAMP\n    StartingPositionTimestamp: 1700000000\n    MaximumRetryAttempts: 5\n    MaximumRecordAgeInSeconds: 604800\n    BisectBatchOnFunctionError: true\n    FunctionResponseTypes: [ReportBatchItemFailures]\n    DestinationConfig: { OnFailure: { Destination: 'kafka://orders-failed' } }\n    SourceAccessConfigurations:\n      - { Type: SASL_SCRAM_512_AUTH, URI: 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:kafka-user-AbCdEf' }\n      - { Type: CLIENT_CERTIFICATE_TLS_AUTH, URI: 'env:KAFKA_CLIENT_CERT' }\n      - { Type: SERVER_ROOT_CA_CERTIFICATE, URI: 'file:/etc/sluice/ca.json' }\n      - { Type: VPC_SUBNET, URI: 'subnet:subnet-0123' }\n      - { Type: VPC_SECURITY_GROUP, URI: 'security_group:sg-0123' }\n").replace("    StartingPosition: LATEST\n", ""));
    assert_eq!((m.name.as_str(), m.enabled), ("orders-audit", false));
    assert_eq!(
        m.batching,
        Batching {
            batch_size: 10000,
            window: Duration::ZERO
        }
    );
    assert_eq!(k.consumer_group_id, "audit/v2:orders_+=.@*-1");
    assert_eq!(
        k.starting_position,
        StartingPosition::AtTimestamp(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    );
    assert_eq!(
        k.errors,
        ErrorHandling {
            max_retry_attempts: Some(5),
            max_record_age: Some(Duration::from_secs(604_800)),
            bisect_on_function_error: true,
            report_batch_item_failures: true,
            on_failure: Some(DestinationArn::Kafka {
                uri: "kafka://orders-failed".into(),
                topic: "orders-failed".into()
            }),
        }
    );
    assert!(m.report_batch_item_failures());
    assert_eq!(
        k.access,
        KafkaAccess {
            sasl: Some(KafkaSasl {
                mechanism: SaslMechanism::ScramSha512,
                credentials: Some(SecretRef::SecretsManager(
                    "arn:aws:secretsmanager:eu-west-1:123456789012:secret:kafka-user-AbCdEf".into()
                )),
            }),
            client_certificate: Some(SecretRef::Env("KAFKA_CLIENT_CERT".into())),
            server_root_ca: Some(SecretRef::File("/etc/sluice/ca.json".into())),
        }
    );
}

#[test]
fn each_sasl_type_is_its_mechanism() {
    for (ty, mechanism) in [
        ("BASIC_AUTH", SaslMechanism::Plain),
        ("SASL_SCRAM_256_AUTH", SaslMechanism::ScramSha256),
        ("SASL_SCRAM_512_AUTH", SaslMechanism::ScramSha512),
    ] {
        let (_, k) = kafka(&sm(&format!(
            "    SourceAccessConfigurations: [{{ Type: {ty}, URI: 'env:KAFKA_USER' }}]\n"
        )));
        assert_eq!(
            k.access.sasl,
            Some(KafkaSasl {
                mechanism,
                credentials: Some(SecretRef::Env("KAFKA_USER".into()))
            }),
            "{ty}"
        );
    }
}

#[test]
fn a_self_managed_cluster_region_is_the_configs_then_the_environments_then_us_east_1() {
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        self_managed_region(Some("eu-west-1"), s("ap-south-1"), s("sa-east-1")),
        "eu-west-1"
    );
    assert_eq!(
        self_managed_region(None, s("ap-south-1"), s("sa-east-1")),
        "ap-south-1"
    );
    assert_eq!(self_managed_region(None, None, s("sa-east-1")), "sa-east-1");
    assert_eq!(self_managed_region(None, s(""), s("")), "us-east-1");
    assert_eq!(
        self_managed_region(None, None, None),
        SELF_MANAGED_FALLBACK_REGION
    );
}

#[test]
fn the_source_is_an_msk_arn_or_self_managed_servers_not_both() {
    let both = format!("mappings:\n  - EventSourceArn: {MSK}\n    {SM}\n    Topics: [t]\n    FunctionName: f\n    StartingPosition: LATEST\n");
    assert_eq!(errors(&both), vec!["mappings[0].EventSourceArn: and SelfManagedEventSource are mutually exclusive: EventSourceArn names an Amazon MSK cluster, SelfManagedEventSource a self-managed Kafka cluster's bootstrap servers"]);
    assert_eq!(
        errors("mappings:\n  - { FunctionName: f, StartingPosition: LATEST }\n"),
        vec![
            "mappings[0].EventSourceArn: is required (or SelfManagedEventSource for a self-managed Kafka cluster)"
        ]
    );
    let bad_msk = "arn:aws:kafka:us-east-1:1:cluster/demo";
    assert_eq!(
        errors(&format!("mappings:\n  - {{ EventSourceArn: '{bad_msk}', FunctionName: f, StartingPosition: LATEST }}\n")),
        vec![format!("mappings[0].EventSourceArn: {bad_msk:?} is not an MSK cluster ARN (expected ...:cluster/<name>/<uuid>)")]
    );
}

/// A self-managed mapping whose `SelfManagedEventSource` is `source`.
fn with_source(source: &str) -> Vec<String> {
    errors(&format!("mappings:\n  - SelfManagedEventSource: {source}\n    Topics: [t]\n    FunctionName: f\n    StartingPosition: LATEST\n"))
}

#[test]
fn bootstrap_servers_are_1_to_10_host_port() {
    let p = "mappings[0].SelfManagedEventSource";
    let shape = "{ Endpoints: { KAFKA_BOOTSTRAP_SERVERS: [host:port, ...] } }";
    assert_eq!(with_source("null"), vec![format!("{p}: must be {shape}")]);
    assert_eq!(
        with_source("x"),
        vec![format!("{p}: x must be a mapping of fields")]
    );
    assert_eq!(
        with_source("{}"),
        vec![format!(
            "{p}.Endpoints: is required: {{ KAFKA_BOOTSTRAP_SERVERS: [host:port, ...] }}"
        )]
    );
    assert_eq!(
        with_source("{ Endpoints: [] }"),
        vec![format!("{p}.Endpoints: [] must be a mapping of fields")]
    );
    assert_eq!(
        with_source("{ Endpoints: {} }"),
        vec![format!(
            "{p}.Endpoints.KAFKA_BOOTSTRAP_SERVERS: is required: a list of 1..=10 host:port"
        )]
    );
    assert_eq!(
        with_source("{ Endpoints: { KAFKA_BOOTSTRAP_SERVERS: 'a:1' } }"),
        vec![format!(
            "{p}.Endpoints.KAFKA_BOOTSTRAP_SERVERS: a:1 must be a list of 1..=10 host:port"
        )]
    );
    assert_eq!(
        with_source("{ Endpoints: { KAFKA_BOOTSTRAP_SERVERS: [] } }"),
        vec![format!(
            "{p}.Endpoints.KAFKA_BOOTSTRAP_SERVERS: lists 0 servers; 1..=10 allowed"
        )]
    );
    let eleven: Vec<String> = (1..=11).map(|i| format!("'b{i}:9092'")).collect();
    assert_eq!(
        with_source(&format!(
            "{{ Endpoints: {{ KAFKA_BOOTSTRAP_SERVERS: [{}] }} }}",
            eleven.join(", ")
        )),
        vec![format!(
            "{p}.Endpoints.KAFKA_BOOTSTRAP_SERVERS: lists 11 servers; 1..=10 allowed"
        )]
    );
    let why =
        "is not host:port (a host name or IP address, [IPv6] in brackets, and a port in 1..=65535)";
    assert_eq!(
        with_source("{ Endpoints: { KAFKA_BOOTSTRAP_SERVERS: ['b1', 'b2:0', 'b3:65536', ':9092', 'a:1,b:2', '[::1]:9092', 'b 4:1', '[nope]:1', 9092, 'b5:x'] } }"),
        [
            (0, "\"b1\""),
            (1, "\"b2:0\""),
            (2, "\"b3:65536\""),
            (3, "\":9092\""),
            (4, "\"a:1,b:2\""),
            (6, "\"b 4:1\""),
            (7, "\"[nope]:1\""),
            (8, "9092"),
            (9, "\"b5:x\""),
        ]
        .iter()
        .map(|(k, v)| format!("{p}.Endpoints.KAFKA_BOOTSTRAP_SERVERS[{k}]: {v} {why}"))
        .collect::<Vec<_>>()
    );
    assert_eq!(
        with_source("{ Endpoints: { KAFKA_BOOTSTRAP_SERVERS: ['b:1'], OTHER: [] }, Extra: 1 }"),
        vec![
            format!("{p}.Endpoints.OTHER: unknown field"),
            format!("{p}.Extra: unknown field")
        ]
    );
    let (_, k) = kafka("mappings:\n  - SelfManagedEventSource: { Endpoints: { KAFKA_BOOTSTRAP_SERVERS: ['[::1]:9092', 'h_1.local:65535'] } }\n    Topics: [t]\n    FunctionName: f\n    StartingPosition: LATEST\n");
    assert_eq!(
        k.cluster,
        KafkaCluster::SelfManaged {
            bootstrap_servers: vec!["[::1]:9092".into(), "h_1.local:65535".into()]
        }
    );
}

/// A self-managed mapping whose `Topics` line is `topics` (empty: none).
fn with_topics(topics: &str) -> Vec<String> {
    errors(&format!(
        "mappings:\n  - {SM}\n{topics}    FunctionName: f\n    StartingPosition: LATEST\n"
    ))
}

#[test]
fn topics_hold_exactly_one_valid_topic() {
    assert_eq!(
        with_topics(""),
        vec!["mappings[0].Topics: is required for Kafka sources: a list of exactly one topic"]
    );
    assert_eq!(
        with_topics("    Topics: [a, b]\n"),
        vec!["mappings[0].Topics: lists 2 topics; AWS takes exactly one"]
    );
    assert_eq!(
        with_topics("    Topics: []\n"),
        vec!["mappings[0].Topics: lists 0 topics; AWS takes exactly one"]
    );
    assert_eq!(
        with_topics("    Topics: orders\n"),
        vec!["mappings[0].Topics: orders must be a list of exactly one topic"]
    );
    assert_eq!(
        with_topics("    Topics: [[a]]\n"),
        vec!["mappings[0].Topics[0]: - a must be a topic name"]
    );
    assert_eq!(
        with_topics("    Topics: ['a/b']\n"),
        vec!["mappings[0].Topics[0]: \"a/b\" may hold only a-z, A-Z, 0-9, '.', '_' and '-'"]
    );
    assert_eq!(
        with_topics("    Topics: ['..']\n"),
        vec!["mappings[0].Topics[0]: \"..\" must not be '.' or '..'"]
    );
    let long = "t".repeat(250);
    assert_eq!(
        with_topics(&format!("    Topics: ['{long}']\n")),
        vec![format!(
            "mappings[0].Topics[0]: {long:?} must be 1..=249 characters long"
        )]
    );
    assert!(parse(&sm("").replace("[orders]", &format!("['{}']", "t".repeat(249)))).is_ok());
}

#[test]
fn the_consumer_group_config_follows_the_cluster_kind() {
    assert_eq!(
        errors(&sm("    AmazonManagedKafkaEventSourceConfig: { ConsumerGroupId: g }\n")),
        vec!["mappings[0].AmazonManagedKafkaEventSourceConfig: is for Amazon MSK sources; this mapping reads a self-managed cluster: use SelfManagedKafkaEventSourceConfig"]
    );
    assert_eq!(
        errors(&msk("    SelfManagedKafkaEventSourceConfig: { ConsumerGroupId: g }\n")),
        vec!["mappings[0].SelfManagedKafkaEventSourceConfig: is for self-managed Kafka sources; this mapping reads an Amazon MSK cluster: use AmazonManagedKafkaEventSourceConfig"]
    );
    let (_, k) = kafka(&msk(
        "    AmazonManagedKafkaEventSourceConfig: { ConsumerGroupId: g }\n",
    ));
    assert_eq!(k.consumer_group_id, "g");
    let (_, k) = kafka(&sm("    SelfManagedKafkaEventSourceConfig: {}\n"));
    assert_eq!(
        k.consumer_group_id, "sluice-orders",
        "not given: the default"
    );
    let rule = "1..=200 characters of a-z, A-Z, 0-9 and - / * : _ + = . @";
    for bad in ["''", "'a b'", "'grüße'", &"g".repeat(201)] {
        let shown = bad.trim_matches('\'');
        assert_eq!(
            errors(&sm(&format!(
                "    SelfManagedKafkaEventSourceConfig: {{ ConsumerGroupId: {bad} }}\n"
            ))),
            vec![format!("mappings[0].SelfManagedKafkaEventSourceConfig.ConsumerGroupId: {shown:?} is not a consumer group id: {rule}")],
            "{bad}"
        );
    }
    assert!(parse(&sm(&format!(
        "    SelfManagedKafkaEventSourceConfig: {{ ConsumerGroupId: {} }}\n",
        "g".repeat(200)
    )))
    .is_ok());
    assert_eq!(
        errors(&sm(
            "    SelfManagedKafkaEventSourceConfig: { ConsumerGroupID: g }\n"
        )),
        vec!["mappings[0].SelfManagedKafkaEventSourceConfig.ConsumerGroupID: unknown field"]
    );
}

#[test]
fn batching_has_kafkas_ranges() {
    assert_eq!(
        errors(&sm(
            "    BatchSize: 0\n    MaximumBatchingWindowInSeconds: 301\n"
        )),
        vec![
            "mappings[0].BatchSize: 0 is out of range 1..=10000",
            "mappings[0].MaximumBatchingWindowInSeconds: 301 is out of range 0..=300"
        ]
    );
    assert_eq!(
        errors(&sm("    BatchSize: 10001\n")),
        vec!["mappings[0].BatchSize: 10001 is out of range 1..=10000"]
    );
    let (m, _) = kafka(&sm("    MaximumBatchingWindowInSeconds: 300\n"));
    assert_eq!(m.batching.window, Duration::from_secs(300));
}

#[test]
fn settings_kafka_does_not_take_are_refused_by_name() {
    assert_eq!(
        errors(&sm("    ParallelizationFactor: 2\n    TumblingWindowInSeconds: 60\n    ScalingConfig: { MaximumConcurrency: 5 }\n")),
        vec![
            "mappings[0].ScalingConfig: is only supported for SQS sources",
            "mappings[0].ParallelizationFactor: is not supported for Kafka sources (AWS takes it for Kinesis and DynamoDB Streams only)",
            "mappings[0].TumblingWindowInSeconds: is not supported for Kafka sources (AWS takes it for Kinesis and DynamoDB Streams only)",
        ]
    );
    assert_eq!(
        errors(&sm("    PreviousNames: [old]\n")),
        vec!["mappings[0].PreviousNames: is not supported for Kafka sources: their progress is the consumer group's committed offsets; to keep it under a new Name, set SelfManagedKafkaEventSourceConfig.ConsumerGroupId to the group used so far (sluice-<old Name> by default)"]
    );
    assert_eq!(
        errors(&msk("    PreviousNames: [old]\n")),
        vec!["mappings[0].PreviousNames: is not supported for Kafka sources: their progress is the consumer group's committed offsets; to keep it under a new Name, set AmazonManagedKafkaEventSourceConfig.ConsumerGroupId to the group used so far (sluice-<old Name> by default)"]
    );
}

#[test]
fn kafka_only_fields_are_refused_elsewhere() {
    let why = "is only supported for Kafka sources (SelfManagedEventSource, or an Amazon MSK EventSourceArn)";
    for arn in [
        "arn:aws:kinesis:us-east-1:1:stream/s",
        "arn:aws:sqs:us-east-1:1:q",
    ] {
        let start = if arn.contains(":sqs:") {
            ""
        } else {
            ", StartingPosition: LATEST"
        };
        let errs = errors(&format!("mappings:\n  - {{ EventSourceArn: '{arn}', FunctionName: f{start}, Topics: [t], SelfManagedKafkaEventSourceConfig: {{}}, AmazonManagedKafkaEventSourceConfig: {{}}, SourceAccessConfigurations: [] }}\n"));
        assert_eq!(
            errs,
            [
                "Topics",
                "SelfManagedKafkaEventSourceConfig",
                "AmazonManagedKafkaEventSourceConfig",
                "SourceAccessConfigurations"
            ]
            .map(|f| format!("mappings[0].{f}: {why}")),
            "{arn}"
        );
    }
}

#[test]
fn the_starting_position_is_required_as_in_aws() {
    let yaml = sm("").replace("    StartingPosition: LATEST\n", "");
    assert_eq!(
        errors(&yaml),
        vec!["mappings[0].StartingPosition: is required for Kafka sources (TRIM_HORIZON | LATEST | AT_TIMESTAMP)"]
    );
    assert_eq!(
        errors(&yaml.replace("FunctionName: f\n", "FunctionName: f\n    StartingPosition: AT_TIMESTAMP\n")),
        vec!["mappings[0].StartingPositionTimestamp: is required when StartingPosition is AT_TIMESTAMP"]
    );
    assert_eq!(
        errors(&sm("    StartingPositionTimestamp: 1\n")),
        vec!["mappings[0].StartingPositionTimestamp: is only allowed with StartingPosition AT_TIMESTAMP"]
    );
    let (_, k) = kafka(&yaml.replace(
        "FunctionName: f\n",
        "FunctionName: f\n    StartingPosition: TRIM_HORIZON\n",
    ));
    assert_eq!(k.starting_position, StartingPosition::TrimHorizon);
}

#[test]
fn error_handling_has_kafkas_ranges_and_destinations() {
    assert_eq!(
        errors(&sm("    MaximumRetryAttempts: 10001\n    MaximumRecordAgeInSeconds: 59\n    BisectBatchOnFunctionError: 1\n    FunctionResponseTypes: [X]\n")),
        vec![
            "mappings[0].MaximumRetryAttempts: 10001 is out of range -1 or 0..=10000",
            "mappings[0].MaximumRecordAgeInSeconds: 59 is out of range -1 or 60..=604800",
            "mappings[0].BisectBatchOnFunctionError: 1 must be true or false",
            "mappings[0].FunctionResponseTypes: X is not ReportBatchItemFailures",
        ]
    );
    let dest =
        |d: &str| format!("    DestinationConfig: {{ OnFailure: {{ Destination: '{d}' }} }}\n");
    assert_eq!(
        errors(&sm(&dest("kafka://orders"))),
        vec!["mappings[0].DestinationConfig.OnFailure.Destination: \"kafka://orders\" is the source topic: AWS refuses an on-failure destination equal to the source topic"]
    );
    assert_eq!(
        errors(&sm(&dest("kafka://a/b"))),
        vec!["mappings[0].DestinationConfig.OnFailure.Destination: \"kafka://a/b\": the topic may hold only a-z, A-Z, 0-9, '.', '_' and '-'"]
    );
    assert_eq!(
        errors(&sm(&dest("arn:aws:sqs:eu-west-1:1:dlq.fifo"))),
        vec!["mappings[0].DestinationConfig.OnFailure.Destination: \"arn:aws:sqs:eu-west-1:1:dlq.fifo\" is a FIFO queue: on-failure destinations of Kafka mappings must be standard queues (as in AWS)"]
    );
    for d in [
        "arn:aws:sqs:eu-west-1:1:dlq",
        "arn:aws:sns:eu-west-1:1:t",
        "arn:aws:s3:::bucket",
    ] {
        let (_, k) = kafka(&sm(&dest(d)));
        assert_eq!(k.errors.on_failure.as_ref().map(|a| a.arn()), Some(d));
    }
    // Kinesis (and every other source) refuses a Kafka topic destination.
    assert_eq!(
        errors(&format!("mappings:\n  - EventSourceArn: arn:aws:kinesis:us-east-1:1:stream/s\n    FunctionName: f\n    StartingPosition: LATEST\n{}", dest("kafka://failed"))),
        vec!["mappings[0].DestinationConfig.OnFailure.Destination: \"kafka://failed\" is a Kafka topic: only Kafka sources take kafka://<topic> destinations (as in AWS)"]
    );
}

#[test]
fn infinite_retries_with_a_destination_are_capped_at_10_as_aws_does_for_kafka() {
    let dest = "    DestinationConfig: { OnFailure: { Destination: 'kafka://failed' } }\n";
    let (_, k) = kafka(&sm(dest));
    assert_eq!(k.errors.max_retry_attempts, Some(10));
    let (_, k) = kafka(&sm(&format!("{dest}    MaximumRetryAttempts: -1\n")));
    assert_eq!(
        k.errors.max_retry_attempts,
        Some(KAFKA_RETRY_CAP_WITH_DESTINATION)
    );
    let (_, k) = kafka(&sm(&format!("{dest}    MaximumRetryAttempts: 500\n")));
    assert_eq!(k.errors.max_retry_attempts, Some(500), "a set value stays");
    let (_, k) = kafka(&sm(""));
    assert_eq!(
        k.errors.max_retry_attempts, None,
        "no destination: infinite"
    );
    // Streams keep AWS's -1 with a destination.
    let c = parse("mappings:\n  - EventSourceArn: arn:aws:kinesis:us-east-1:1:stream/s\n    FunctionName: f\n    StartingPosition: LATEST\n    DestinationConfig: { OnFailure: { Destination: 'arn:aws:sqs:us-east-1:1:dlq' } }\n").unwrap();
    assert_eq!(
        c.mappings[0].stream_errors().unwrap().max_retry_attempts,
        None
    );
}
