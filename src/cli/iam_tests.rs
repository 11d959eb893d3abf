//! Unit tests of `sluice iam-policy`: each source kind, destinations, secrets, coordination, and
//! the placeholders for what a config does not tell.

use super::*;
use crate::config::parse_str;

use serde_json::Value;

/// The policy as JSON, and its placeholders.
struct Policy {
    document: Value,
    placeholders: Vec<String>,
}

fn json_of(p: super::Policy) -> Policy {
    Policy {
        document: serde_json::from_str(&p.document.to_json()).expect("JSON"),
        placeholders: p.placeholders,
    }
}

fn policy_of(yaml: &str) -> Policy {
    let cfg = parse_str(yaml).unwrap_or_else(|e| panic!("{e}"));
    json_of(policy(&cfg, &Overrides::default()))
}

/// The statement with `sid`: its actions and resources.
fn statement(p: &Policy, sid: &str) -> (Vec<String>, Vec<String>) {
    let list = p.document["Statement"].as_array().expect("statements");
    let s = list
        .iter()
        .find(|s| s["Sid"] == sid)
        .unwrap_or_else(|| panic!("no statement {sid} in {:#}", p.document));
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .expect("a list")
            .iter()
            .map(|x| x.as_str().expect("a string").to_string())
            .collect()
    };
    assert_eq!(s["Effect"], "Allow");
    (strings(&s["Action"]), strings(&s["Resource"]))
}

fn sids(p: &Policy) -> Vec<String> {
    p.document["Statement"]
        .as_array()
        .expect("statements")
        .iter()
        .map(|s| s["Sid"].as_str().expect("sid").to_string())
        .collect()
}

fn no_wildcards(p: &Policy) {
    for s in p.document["Statement"].as_array().expect("statements") {
        for r in s["Resource"].as_array().expect("resources") {
            let r = r.as_str().expect("resource");
            assert!(
                r != "*" && (!r.contains('*') || r.ends_with(":::orders-failed/*")),
                "{r}"
            );
        }
    }
}

const KINESIS: &str = "arn:aws:kinesis:eu-west-1:123456789012:stream/orders";

#[test]
fn kinesis_with_fan_out_a_qualified_function_and_an_sqs_destination() {
    let p = policy_of(&format!(
        "mappings:\n  - EventSourceArn: {KINESIS}/consumer/sluice:1700000000\n    FunctionName: process-orders:live\n    StartingPosition: LATEST\n    DestinationConfig: {{ OnFailure: {{ Destination: arn:aws:sqs:eu-west-1:123456789012:orders-failed }} }}\n"
    ));
    assert_eq!(p.document["Version"], "2012-10-17");
    assert_eq!(
        statement(&p, "ReadKinesisStreams"),
        (
            vec![
                "kinesis:DescribeStreamSummary".into(),
                "kinesis:GetRecords".into(),
                "kinesis:GetShardIterator".into(),
                "kinesis:ListShards".into()
            ],
            vec![KINESIS.to_string()]
        )
    );
    assert_eq!(
        statement(&p, "KinesisEnhancedFanOut").1,
        [format!("{KINESIS}/consumer/sluice:1700000000")]
    );
    assert_eq!(
        statement(&p, "InvokeFunctions"),
        (
            vec!["lambda:InvokeFunction".into()],
            vec!["arn:aws:lambda:eu-west-1:123456789012:function:process-orders:live".into()]
        )
    );
    assert_eq!(
        statement(&p, "SendToFailureQueues"),
        (
            vec!["sqs:GetQueueUrl".into(), "sqs:SendMessage".into()],
            vec!["arn:aws:sqs:eu-west-1:123456789012:orders-failed".into()]
        )
    );
    assert!(p.placeholders.is_empty(), "{:?}", p.placeholders);
    no_wildcards(&p);
}

#[test]
fn dynamodb_streams_sqs_sns_s3_and_a_function_arn_as_given() {
    let ddb = "arn:aws:dynamodb:us-east-1:111122223333:table/t/stream/2024-01-01T00:00:00.000";
    let fn_arn = "arn:aws:lambda:us-east-1:111122223333:function:f";
    let p = policy_of(&format!(
        "region: us-east-1\nmappings:\n  - Name: sns-dest\n    EventSourceArn: {ddb}\n    FunctionName: {fn_arn}\n    StartingPosition: TRIM_HORIZON\n    DestinationConfig: {{ OnFailure: {{ Destination: arn:aws:sns:us-east-1:111122223333:alerts }} }}\n  - Name: s3-dest\n    EventSourceArn: {ddb}\n    FunctionName: g\n    StartingPosition: TRIM_HORIZON\n    DestinationConfig: {{ OnFailure: {{ Destination: 'arn:aws:s3:::orders-failed' }} }}\n  - EventSourceArn: arn:aws:sqs:us-east-1:111122223333:jobs\n    FunctionName: g\n"
    ));
    assert_eq!(
        statement(&p, "ReadDynamoDbStreams"),
        (
            vec![
                "dynamodb:DescribeStream".into(),
                "dynamodb:GetRecords".into(),
                "dynamodb:GetShardIterator".into()
            ],
            vec![ddb.to_string()]
        )
    );
    assert_eq!(
        statement(&p, "ConsumeSqsQueues").1,
        ["arn:aws:sqs:us-east-1:111122223333:jobs"]
    );
    assert_eq!(statement(&p, "ConsumeSqsQueues").0.len(), 5);
    assert_eq!(
        statement(&p, "InvokeFunctions").1,
        [
            fn_arn.to_string(),
            "arn:aws:lambda:us-east-1:111122223333:function:g".into()
        ],
        "an ARN as given, a name completed; each once"
    );
    assert_eq!(
        statement(&p, "PublishToFailureTopics").1,
        ["arn:aws:sns:us-east-1:111122223333:alerts"]
    );
    assert_eq!(
        statement(&p, "WriteFailureObjects").1,
        ["arn:aws:s3:::orders-failed/*"]
    );
    assert_eq!(
        statement(&p, "ListFailureBuckets").1,
        ["arn:aws:s3:::orders-failed"]
    );
    assert!(!sids(&p).contains(&"LeaseTable".to_string()));
    no_wildcards(&p);
}

#[test]
fn msk_with_iam_reads_topic_and_group_and_writes_its_failure_topic() {
    let msk = "arn:aws:kafka:eu-west-1:123456789012:cluster/events/6357e0b2-0e6a-4b86-a0b4-70df934c2e31-5";
    let p = policy_of(&format!(
        "mappings:\n  - EventSourceArn: {msk}\n    Topics: [clicks]\n    FunctionName: f\n    StartingPosition: LATEST\n    DestinationConfig: {{ OnFailure: {{ Destination: kafka://clicks-failed }} }}\n"
    ));
    let base = "arn:aws:kafka:eu-west-1:123456789012";
    let path = "events/6357e0b2-0e6a-4b86-a0b4-70df934c2e31-5";
    assert_eq!(
        statement(&p, "MskClusterMetadata"),
        (
            vec![
                "kafka:DescribeClusterV2".into(),
                "kafka:GetBootstrapBrokers".into()
            ],
            vec![msk.to_string()]
        )
    );
    assert_eq!(statement(&p, "MskConnect").1, [msk.to_string()]);
    assert_eq!(
        statement(&p, "MskReadTopics").1,
        [format!("{base}:topic/{path}/clicks")]
    );
    assert_eq!(
        statement(&p, "MskConsumerGroups"),
        (
            vec![
                "kafka-cluster:AlterGroup".into(),
                "kafka-cluster:DescribeGroup".into()
            ],
            vec![format!("{base}:group/{path}/sluice-events/clicks")]
        )
    );
    assert_eq!(
        statement(&p, "MskWriteFailureTopics").1,
        [format!("{base}:topic/{path}/clicks-failed")]
    );
    no_wildcards(&p);
}

#[test]
fn self_managed_kafka_needs_only_its_secrets_and_the_function() {
    let secret = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:kafka-AbCdEf";
    let p = policy_of(&format!(
        "region: eu-west-1\nmappings:\n  - SelfManagedEventSource: {{ Endpoints: {{ KAFKA_BOOTSTRAP_SERVERS: ['b1:9092'] }} }}\n    Topics: [payments]\n    FunctionName: pay\n    StartingPosition: LATEST\n    SourceAccessConfigurations:\n      - {{ Type: SASL_SCRAM_512_AUTH, URI: '{secret}' }}\n      - {{ Type: SERVER_ROOT_CA_CERTIFICATE, URI: 'file:/etc/ca.json' }}\n"
    ));
    assert_eq!(sids(&p), ["InvokeFunctions", "ReadSourceSecrets"]);
    assert_eq!(statement(&p, "ReadSourceSecrets").1, [secret.to_string()]);
    // No source ARN tells the account: a placeholder, reported.
    assert_eq!(
        statement(&p, "InvokeFunctions").1,
        ["arn:aws:lambda:eu-west-1:ACCOUNT_ID:function:pay"]
    );
    assert_eq!(p.placeholders.len(), 1, "{:?}", p.placeholders);
    assert!(p.placeholders[0].starts_with("ACCOUNT_ID"));
    let cfg = parse_str(&format!(
        "region: eu-west-1\nmappings:\n  - SelfManagedEventSource: {{ Endpoints: {{ KAFKA_BOOTSTRAP_SERVERS: ['b1:9092'] }} }}\n    Topics: [payments]\n    FunctionName: pay\n    StartingPosition: LATEST\n    SourceAccessConfigurations:\n      - {{ Type: SASL_SCRAM_512_AUTH, URI: '{secret}' }}\n"
    ))
    .expect("valid");
    let given = json_of(policy(
        &cfg,
        &Overrides {
            account: Some("999988887777".into()),
            region: None,
        },
    ));
    assert!(given.placeholders.is_empty());
    assert_eq!(
        statement(&given, "InvokeFunctions").1,
        ["arn:aws:lambda:eu-west-1:999988887777:function:pay"]
    );
}

#[test]
fn coordination_grants_the_lease_table_in_the_configs_region_and_the_sources_account() {
    let p = policy_of(&format!(
        "region: eu-west-1\ncoordination: {{ lease_table: sluice-leases, worker_id: w-1 }}\nmappings:\n  - EventSourceArn: {KINESIS}\n    FunctionName: f\n    StartingPosition: LATEST\n"
    ));
    let (actions, resources) = statement(&p, "LeaseTable");
    assert_eq!(
        actions,
        [
            "dynamodb:CreateTable",
            "dynamodb:DeleteItem",
            "dynamodb:DescribeTable",
            "dynamodb:GetItem",
            "dynamodb:PutItem",
            "dynamodb:Scan",
            "dynamodb:UpdateItem"
        ]
    );
    assert_eq!(
        resources,
        ["arn:aws:dynamodb:eu-west-1:123456789012:table/sluice-leases"]
    );
    // Without `region` and with sources in two regions, the region is a placeholder.
    let p = policy_of(&format!(
        "coordination: {{ lease_table: sluice-leases, worker_id: w-1 }}\nmappings:\n  - EventSourceArn: {KINESIS}\n    FunctionName: f\n    StartingPosition: LATEST\n  - EventSourceArn: arn:aws:kinesis:us-east-1:123456789012:stream/b\n    FunctionName: f\n    StartingPosition: LATEST\n"
    ));
    assert_eq!(
        statement(&p, "LeaseTable").1,
        ["arn:aws:dynamodb:REGION:123456789012:table/sluice-leases"]
    );
    assert!(
        p.placeholders[0].starts_with("REGION"),
        "{:?}",
        p.placeholders
    );
}

#[test]
fn http_targets_need_no_lambda_and_other_partitions_are_kept() {
    let p = policy_of(
        "mappings:\n  - EventSourceArn: arn:aws-cn:kinesis:cn-north-1:123456789012:stream/s\n    Http: { Url: 'http://localhost:1/x' }\n    StartingPosition: LATEST\n",
    );
    assert_eq!(sids(&p), ["ReadKinesisStreams"]);
    assert_eq!(
        statement(&p, "ReadKinesisStreams").1,
        ["arn:aws-cn:kinesis:cn-north-1:123456789012:stream/s"]
    );
}
