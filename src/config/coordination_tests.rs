//! Unit tests of the `coordination:` section and `endpoints.dynamodb`: defaults, every range bound,
//! DynamoDB's table-name rules, the worker id's shape and default, the scan interval against the
//! lease duration, unknown keys.

use super::coordination::{hostname, pick_hostname, with_suffix};
use super::parse::parse;
use super::*;

const MAPPING: &str = "mappings:\n  - { EventSourceArn: arn:aws:kinesis:us-east-1:000000000000:stream/orders, FunctionName: f, StartingPosition: LATEST }\n";

/// A config whose `coordination` section is `{ <fields> }`.
fn with(fields: &str) -> String {
    format!("coordination: {{ {fields} }}\n{MAPPING}")
}

fn coordination(fields: &str) -> Coordination {
    parse(&with(fields))
        .unwrap_or_else(|e| panic!("{fields}: {e}"))
        .coordination
        .expect("a coordination section")
}

fn errors(fields: &str) -> Vec<String> {
    parse(&with(fields)).expect_err(fields).0
}

/// `<host>-<8 lowercase hex>`: the host part.
fn host_of(id: &str) -> &str {
    let (host, suffix) = id.rsplit_once('-').expect("a suffix");
    assert_eq!(suffix.len(), 8, "{id}");
    assert!(
        suffix
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "{id}"
    );
    host
}

#[test]
fn absent_means_a_single_replica() {
    let c = parse(MAPPING).unwrap();
    assert_eq!(c.coordination, None);
    assert_eq!(c.endpoints.dynamodb, None);
}

#[test]
fn defaults() {
    let c = coordination("lease_table: sluice-leases");
    assert_eq!(c.lease_table, "sluice-leases");
    assert_eq!(c.lease_duration, Duration::from_secs(10));
    assert_eq!(c.scan_interval, Duration::from_millis(1000));
    assert_eq!(host_of(&c.worker_id), hostname());
}

#[test]
fn every_field_given() {
    assert_eq!(
        coordination("lease_table: sluice-leases, worker_id: pod-a, lease_duration_seconds: 20, lease_scan_interval_millis: 500"),
        Coordination {
            lease_table: "sluice-leases".into(),
            worker_id: "pod-a".into(),
            lease_duration: Duration::from_secs(20),
            scan_interval: Duration::from_millis(500),
        }
    );
}

#[test]
fn the_lease_duration_is_3_to_300_seconds() {
    let c = coordination(
        "lease_table: t12, lease_duration_seconds: 3, lease_scan_interval_millis: 1500",
    );
    assert_eq!(c.lease_duration, Duration::from_secs(3));
    let c = coordination("lease_table: t12, lease_duration_seconds: 300");
    assert_eq!(c.lease_duration, Duration::from_secs(300));
    for v in ["2", "301", "0", "-10"] {
        assert_eq!(
            errors(&format!("lease_table: t12, lease_duration_seconds: {v}")),
            vec![format!(
                "coordination.lease_duration_seconds: {v} is out of range 3..=300"
            )]
        );
    }
    assert_eq!(
        errors("lease_table: t12, lease_duration_seconds: ten"),
        vec!["coordination.lease_duration_seconds: ten must be a whole number in range 3..=300"]
    );
}

#[test]
fn the_scan_interval_is_200_to_60000_millis() {
    let c = coordination("lease_table: t12, lease_scan_interval_millis: 200");
    assert_eq!(c.scan_interval, Duration::from_millis(200));
    let c = coordination(
        "lease_table: t12, lease_duration_seconds: 120, lease_scan_interval_millis: 60000",
    );
    assert_eq!(c.scan_interval, Duration::from_secs(60));
    for v in ["199", "60001"] {
        assert_eq!(
            errors(&format!(
                "lease_table: t12, lease_duration_seconds: 300, lease_scan_interval_millis: {v}"
            )),
            vec![format!(
                "coordination.lease_scan_interval_millis: {v} is out of range 200..=60000"
            )]
        );
    }
}

#[test]
fn the_scan_interval_is_at_most_half_the_lease_duration() {
    assert_eq!(
        errors("lease_table: t12, lease_scan_interval_millis: 6000"),
        vec!["coordination.lease_scan_interval_millis: 6000 must be at most half of lease_duration_seconds (10 s), so in range 200..=5000"]
    );
    // The default 1000 ms fits the shortest lease (at most 1500 ms).
    let c = coordination("lease_table: t12, lease_duration_seconds: 3");
    assert_eq!(c.scan_interval, Duration::from_millis(1000));
    assert_eq!(
        errors("lease_table: t12, lease_duration_seconds: 3, lease_scan_interval_millis: 1501"),
        vec!["coordination.lease_scan_interval_millis: 1501 must be at most half of lease_duration_seconds (3 s), so in range 200..=1500"]
    );
    let c = coordination("lease_table: t12, lease_scan_interval_millis: 5000");
    assert_eq!(c.scan_interval, Duration::from_secs(5));
    // A value already out of range is one problem, not two.
    assert_eq!(
        errors("lease_table: t12, lease_duration_seconds: 1, lease_scan_interval_millis: 1000"),
        vec!["coordination.lease_duration_seconds: 1 is out of range 3..=300"]
    );
}

#[test]
fn the_lease_table_is_required_and_a_dynamodb_table_name() {
    assert_eq!(
        errors("worker_id: pod-a"),
        vec!["coordination.lease_table: is required"]
    );
    let rule = "is not a DynamoDB table name: 3..=255 characters of a-z, A-Z, 0-9, '_', '-', '.'";
    for bad in ["ab", "a b", "leases/x", "tâble", "", &"t".repeat(256)] {
        assert_eq!(
            errors(&format!("lease_table: '{bad}'")),
            vec![format!("coordination.lease_table: {bad:?} {rule}")]
        );
    }
    assert_eq!(
        errors("lease_table: 42"),
        vec!["coordination.lease_table: 42 must be a string"]
    );
    for good in ["abc", "Sluice_leases.v2-prod", &"t".repeat(255)] {
        assert_eq!(
            coordination(&format!("lease_table: '{good}'")).lease_table,
            good
        );
    }
}

#[test]
fn a_worker_id_has_no_whitespace_or_control_characters() {
    let rule = "is not a worker id: 1..=256 characters, no whitespace or control characters";
    for (yaml, value) in [
        ("''", ""),
        ("'pod a'", "pod a"),
        ("\"pod\\ta\"", "pod\ta"),
        ("\"pod\\x07\"", "pod\u{7}"),
        ("\"pod\\u00a0a\"", "pod\u{a0}a"),
        (&format!("'{}'", "w".repeat(257)), &"w".repeat(257)),
    ] {
        assert_eq!(
            errors(&format!("lease_table: t12, worker_id: {yaml}")),
            vec![format!("coordination.worker_id: {value:?} {rule}")],
            "{yaml}"
        );
    }
    assert_eq!(
        errors("lease_table: t12, worker_id: [a]"),
        vec!["coordination.worker_id: - a must be a string"]
    );
    for good in [
        "pod-a",
        "ip-10-0-0-1.ec2.internal:1234",
        "ünï",
        &"w".repeat(256),
    ] {
        assert_eq!(
            coordination(&format!("lease_table: t12, worker_id: '{good}'")).worker_id,
            good
        );
    }
}

#[test]
fn the_default_worker_id_is_the_hostname_and_8_random_hex_chars() {
    let a = coordination("lease_table: t12").worker_id;
    let b = coordination("lease_table: t12, worker_id: null").worker_id;
    assert_eq!(host_of(&a), hostname());
    assert_eq!(host_of(&b), hostname());
    assert_ne!(a, b, "two processes on one host get different ids");
    assert_eq!(with_suffix("pod", 0xab), "pod-000000ab");
    let long = with_suffix(&"h".repeat(300), u32::MAX);
    assert_eq!(long.chars().count(), 256);
    assert!(long.ends_with("h-ffffffff"));
}

#[test]
fn the_hostname_comes_from_the_environment_then_etc_hostname() {
    let s = |v: &str| Some(v.to_string());
    assert_eq!(pick_hostname(s("pod-7f9c"), s("node\n")), "pod-7f9c");
    assert_eq!(pick_hostname(None, s("  node-1\n")), "node-1");
    assert_eq!(pick_hostname(s(""), s("node-1\n")), "node-1");
    assert_eq!(pick_hostname(s("bad host"), s("node-1")), "node-1");
    assert_eq!(pick_hostname(s(" \n"), None), "sluice");
    assert_eq!(pick_hostname(None, None), "sluice");
    assert!(!hostname().is_empty());
}

#[test]
fn unknown_keys_and_wrong_shapes_are_refused() {
    assert_eq!(
        errors("lease_table: t12, lease_tabel: t13, lease_duration: 10"),
        vec![
            "coordination.lease_tabel: unknown field",
            "coordination.lease_duration: unknown field",
        ]
    );
    assert_eq!(
        parse(&format!("coordination:\n{MAPPING}")).unwrap_err().0,
        vec!["coordination: is empty: give at least lease_table, or remove the section to run a single replica"]
    );
    assert_eq!(
        parse(&format!("coordination: sluice-leases\n{MAPPING}"))
            .unwrap_err()
            .0,
        vec!["coordination: sluice-leases must be a mapping of fields"]
    );
}

#[test]
fn the_dynamodb_endpoint_is_an_override_like_the_others() {
    let c = parse(&format!(
        "endpoints: {{ dynamodb: 'http://127.0.0.1:5000', dynamodbstreams: 'http://127.0.0.1:5001' }}\n{MAPPING}"
    ))
    .unwrap();
    assert_eq!(
        c.endpoints.dynamodb.as_deref(),
        Some("http://127.0.0.1:5000")
    );
    assert_eq!(
        c.endpoints.dynamodbstreams.as_deref(),
        Some("http://127.0.0.1:5001")
    );
    assert_eq!(
        parse(&format!("endpoints: {{ dynamodb: 'ddb:5000' }}\n{MAPPING}"))
            .unwrap_err()
            .0,
        vec!["endpoints.dynamodb: \"ddb:5000\" is not an http:// or https:// URL"]
    );
}
