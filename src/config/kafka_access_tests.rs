//! Unit tests of Kafka mappings' `SourceAccessConfigurations` (types, secrets, what MSK takes),
//! names and consumer groups across mappings, the example file and the test mapping.

use super::kafka_tests::{errors, kafka, msk, sm, MSK, SM};
use super::parse::parse;
use super::*;

/// A self-managed mapping with these `SourceAccessConfigurations` entries.
fn with_access(entries: &str) -> Vec<String> {
    errors(&sm(&format!("    SourceAccessConfigurations: {entries}\n")))
}

const SECRET: &str = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:kafka-AbCdEf";

#[test]
fn source_access_configurations_are_checked() {
    let p = "mappings[0].SourceAccessConfigurations";
    assert_eq!(
        with_access("x"),
        vec![format!("{p}: x must be a list of {{ Type, URI }}")]
    );
    let vpc: Vec<&str> = (0..23)
        .map(|_| "{ Type: VPC_SUBNET, URI: 'subnet:s' }")
        .collect();
    assert_eq!(
        with_access(&format!("[{}]", vpc.join(", "))),
        vec![format!("{p}: lists 23 entries; at most 22 allowed")]
    );
    assert!(parse(&sm(&format!(
        "    SourceAccessConfigurations: [{}]\n",
        vpc[..22].join(", ")
    )))
    .is_ok());
    assert_eq!(
        with_access("[x, {}, { Type: VIRTUAL_HOST, URI: v, Other: 1 }]"),
        vec![
            format!("{p}[0]: x must be a mapping of fields"),
            format!("{p}[1].Type: is required"),
            format!("{p}[1].URI: is required"),
            format!("{p}[2].Type: \"VIRTUAL_HOST\" is not one of BASIC_AUTH, SASL_SCRAM_256_AUTH, SASL_SCRAM_512_AUTH, CLIENT_CERTIFICATE_TLS_AUTH, SERVER_ROOT_CA_CERTIFICATE, VPC_SUBNET, VPC_SECURITY_GROUP"),
            format!("{p}[2].Other: unknown field"),
        ]
    );
    assert_eq!(
        with_access(&format!("[{{ Type: BASIC_AUTH, URI: '{SECRET}' }}, {{ Type: SASL_SCRAM_512_AUTH, URI: '{SECRET}' }}, {{ Type: CLIENT_CERTIFICATE_TLS_AUTH, URI: 'env:A' }}, {{ Type: CLIENT_CERTIFICATE_TLS_AUTH, URI: 'env:B' }}, {{ Type: SERVER_ROOT_CA_CERTIFICATE, URI: 'file:/a' }}, {{ Type: SERVER_ROOT_CA_CERTIFICATE, URI: 'file:/b' }}]")),
        vec![
            format!("{p}[1].Type: SASL_SCRAM_512_AUTH: at most one SASL type (BASIC_AUTH, SASL_SCRAM_256_AUTH, SASL_SCRAM_512_AUTH) may be given; {p_short}[0] is BASIC_AUTH", p_short = "SourceAccessConfigurations"),
            format!("{p}[3].Type: CLIENT_CERTIFICATE_TLS_AUTH is given twice (also SourceAccessConfigurations[2]); give it once"),
            format!("{p}[5].Type: SERVER_ROOT_CA_CERTIFICATE is given twice (also SourceAccessConfigurations[4]); give it once"),
        ]
    );
}

#[test]
fn secrets_are_secrets_manager_arns_or_env_or_file() {
    let p = "mappings[0].SourceAccessConfigurations[0].URI";
    let not_arn = |uri: &str| {
        format!("{p}: {uri:?} is not a Secrets Manager secret ARN (arn:aws:secretsmanager:<region>:<account>:secret:<name>), env:VARIABLE or file:/path")
    };
    for (uri, want) in [
        ("env:", format!("{p}: \"env:\": env: takes a variable name (letters, digits and '_', not starting with a digit)")),
        ("env:1X", format!("{p}: \"env:1X\": env: takes a variable name (letters, digits and '_', not starting with a digit)")),
        ("env:A-B", format!("{p}: \"env:A-B\": env: takes a variable name (letters, digits and '_', not starting with a digit)")),
        ("file:", format!("{p}: \"file:\": file: takes a path")),
        ("kafka-user", not_arn("kafka-user")),
        ("arn:aws:secretsmanager:eu-west-1:1:secret:", not_arn("arn:aws:secretsmanager:eu-west-1:1:secret:")),
        ("arn:aws:secretsmanager::1:secret:s", not_arn("arn:aws:secretsmanager::1:secret:s")),
        ("arn:aws:ssm:eu-west-1:1:parameter/p", not_arn("arn:aws:ssm:eu-west-1:1:parameter/p")),
    ] {
        assert_eq!(
            with_access(&format!("[{{ Type: BASIC_AUTH, URI: '{uri}' }}]")),
            vec![want],
            "{uri}"
        );
    }
    for (uri, want) in [
        ("env:_KAFKA_1", SecretRef::Env("_KAFKA_1".into())),
        (
            "file:secrets/ca.json",
            SecretRef::File("secrets/ca.json".into()),
        ),
        (SECRET, SecretRef::SecretsManager(SECRET.into())),
    ] {
        let (_, k) = kafka(&sm(&format!(
            "    SourceAccessConfigurations: [{{ Type: SERVER_ROOT_CA_CERTIFICATE, URI: '{uri}' }}]\n"
        )));
        assert_eq!(k.access.server_root_ca, Some(want));
    }
}

#[test]
fn msk_takes_scram_512_and_mtls_and_otherwise_iam() {
    let p = "mappings[0].SourceAccessConfigurations";
    let access = |entries: &str| msk(&format!("    SourceAccessConfigurations: {entries}\n"));
    assert_eq!(
        errors(&access("[{ Type: BASIC_AUTH, URI: 'env:A' }, { Type: SASL_SCRAM_256_AUTH, URI: 'env:A' }, { Type: SERVER_ROOT_CA_CERTIFICATE, URI: 'env:A' }]")),
        ["BASIC_AUTH", "SASL_SCRAM_256_AUTH", "SERVER_ROOT_CA_CERTIFICATE"]
            .iter()
            .enumerate()
            .map(|(k, t)| format!("{p}[{k}].Type: {t} is not supported for Amazon MSK sources (MSK takes SASL_SCRAM_512_AUTH or CLIENT_CERTIFICATE_TLS_AUTH; with neither, IAM)"))
            .collect::<Vec<_>>()
    );
    let (_, k) = kafka(&access(&format!(
        "[{{ Type: SASL_SCRAM_512_AUTH, URI: '{SECRET}' }}]"
    )));
    assert_eq!(
        k.access.sasl.map(|s| s.mechanism),
        Some(SaslMechanism::ScramSha512)
    );
    let (_, k) = kafka(&access(
        "[{ Type: CLIENT_CERTIFICATE_TLS_AUTH, URI: 'file:/c.json' }]",
    ));
    assert_eq!(k.access.sasl, None, "mTLS: no IAM");
    assert_eq!(
        k.access.client_certificate,
        Some(SecretRef::File("/c.json".into()))
    );
    let (_, k) = kafka(&access("[{ Type: VPC_SUBNET, URI: 'subnet:s' }]"));
    assert_eq!(
        k.access.sasl.map(|s| s.mechanism),
        Some(SaslMechanism::MskIam),
        "VPC entries are ignored"
    );
}

#[test]
fn kafka_names_are_unique_and_required_on_a_shared_topic() {
    let m = |name: &str, f: &str| {
        format!(
            "  - {{ {name}{SM}, Topics: [orders], FunctionName: {f}, StartingPosition: LATEST }}\n"
        )
    };
    let want = "is required: mappings[0] and mappings[1] read the same topic \"orders\" of one cluster; give each of them a distinct Name (it keys their default consumer groups, sluice-<Name>)";
    assert_eq!(
        errors(&format!("mappings:\n{}{}", m("", "f"), m("", "g"))),
        vec![
            format!("mappings[0].Name: {want}"),
            format!("mappings[1].Name: {want}")
        ]
    );
    let c = parse(&format!(
        "mappings:\n{}{}",
        m("Name: a, ", "f"),
        m("Name: b, ", "g")
    ))
    .unwrap();
    let groups: Vec<&str> = c
        .mappings
        .iter()
        .map(|m| m.kafka().unwrap().consumer_group_id.as_str())
        .collect();
    assert_eq!(groups, ["sluice-a", "sluice-b"], "each its own group");
    // The topic's default name against a Kinesis stream of the same name.
    assert_eq!(
        errors(&format!("mappings:\n  - {{ EventSourceArn: 'arn:aws:kinesis:us-east-1:1:stream/orders', FunctionName: f, StartingPosition: LATEST }}\n{}", m("", "f"))),
        vec!["mappings[1].Name: \"orders\" (the default name, from Topics) is also the name of mappings[0] (the default name, from EventSourceArn); names must be unique: set a distinct Name"]
    );
    // The same topic on two MSK clusters of one name (two regions).
    let other = MSK.replace("us-east-1", "eu-west-1");
    assert_eq!(
        errors(&format!("mappings:\n  - {{ EventSourceArn: '{MSK}', Topics: [t], FunctionName: f, StartingPosition: LATEST }}\n  - {{ EventSourceArn: '{other}', Topics: [t], FunctionName: f, StartingPosition: LATEST }}\n")),
        vec!["mappings[1].Name: \"demo/t\" (the default name, from EventSourceArn and Topics) is also the name of mappings[0] (the default name, from EventSourceArn and Topics); names must be unique: set a distinct Name"]
    );
}

#[test]
fn two_mappings_never_share_a_consumer_group_on_one_cluster() {
    let m = |name: &str, servers: &str, group: &str| {
        let group = if group.is_empty() {
            String::new()
        } else {
            format!(", SelfManagedKafkaEventSourceConfig: {{ ConsumerGroupId: {group} }}")
        };
        format!("  - {{ Name: {name}, SelfManagedEventSource: {{ Endpoints: {{ KAFKA_BOOTSTRAP_SERVERS: [{servers}] }} }}, Topics: [t], FunctionName: f, StartingPosition: LATEST{group} }}\n")
    };
    assert_eq!(
        errors(&format!("mappings:\n{}{}", m("a", "'b1:9092', 'b2:9092'", "g"), m("b", "'B2:9092'", "g"))),
        vec!["mappings[1].SelfManagedKafkaEventSourceConfig.ConsumerGroupId: \"g\" is also the consumer group of mappings[0] on the same cluster; give each mapping its own group (a shared group splits the topic's partitions between them)"]
    );
    assert_eq!(
        errors(&format!("mappings:\n{}{}", m("a", "'b1:9092'", "sluice-b"), m("b", "'b1:9092'", ""))),
        vec!["mappings[0].SelfManagedKafkaEventSourceConfig.ConsumerGroupId: \"sluice-b\" is also the consumer group of mappings[1] (its default, sluice-<Name>) on the same cluster; give each mapping its own group (a shared group splits the topic's partitions between them)"]
    );
    // Another cluster: its own groups.
    assert!(parse(&format!(
        "mappings:\n{}{}",
        m("a", "'b1:9092'", "g"),
        m("b", "'c1:9092'", "g")
    ))
    .is_ok());
    let msk_group = |name: &str| {
        format!("  - {{ Name: {name}, EventSourceArn: '{MSK}', Topics: [t], FunctionName: f, StartingPosition: LATEST, AmazonManagedKafkaEventSourceConfig: {{ ConsumerGroupId: g }} }}\n")
    };
    assert_eq!(
        errors(&format!("mappings:\n{}{}", msk_group("a"), msk_group("b"))),
        vec!["mappings[1].AmazonManagedKafkaEventSourceConfig.ConsumerGroupId: \"g\" is also the consumer group of mappings[0] on the same cluster; give each mapping its own group (a shared group splits the topic's partitions between them)"]
    );
}

#[test]
fn the_example_config_validates_with_its_kafka_mappings() {
    let text = include_str!("../../config/example.yaml");
    let c = parse(text).unwrap_or_else(|e| panic!("config/example.yaml: {e}"));
    let kafka: Vec<&KafkaSettings> = c.mappings.iter().filter_map(Mapping::kafka).collect();
    assert_eq!(kafka.len(), 2, "a self-managed and an MSK mapping");
    assert!(kafka
        .iter()
        .any(|k| matches!(k.cluster, KafkaCluster::SelfManaged { .. })));
    assert!(kafka
        .iter()
        .any(|k| matches!(k.cluster, KafkaCluster::Msk { .. })));
}

#[test]
fn the_test_mapping_is_a_kafka_mapping() {
    let m = Mapping::kafka_for_tests();
    let k = m.kafka().unwrap();
    assert_eq!(
        (m.name.as_str(), k.consumer_group_id.as_str()),
        ("m", "sluice-m")
    );
    assert_eq!(k.default_mapping_name(), "t");
    assert_eq!(m.batching.window, Duration::from_millis(500));
    assert_eq!(m.source_arn(), "");
    assert!(!m.source.has_shards());
}
