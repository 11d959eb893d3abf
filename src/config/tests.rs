//! Unit tests of the config parser: defaults, ranges, every problem listed with its path.

use super::parse::{parse, parse_at};
use super::*;
use std::time::UNIX_EPOCH;

const ARN: &str = "arn:aws:kinesis:us-east-1:000000000000:stream/orders";

fn errors(yaml: &str) -> Vec<String> {
    parse(yaml).expect_err("config should be rejected").0
}

#[test]
fn defaults_follow_aws() {
    let c = parse(&format!(
        "mappings:\n  - EventSourceArn: {ARN}\n    FunctionName: f\n    StartingPosition: LATEST\n"
    ))
    .unwrap();
    let m = &c.mappings[0];
    assert_eq!(m.batching.batch_size, 100);
    assert_eq!(m.batching.window, Duration::ZERO);
    assert!(m.enabled);
    assert_eq!(m.name, "orders", "the default name is the source alone");
    assert_eq!(m.legacy_names, ["orders-f"], "the earlier default name");
    assert_eq!(c.max_in_flight_bytes, 256 << 20);
    let e = m.stream_errors().unwrap();
    assert_eq!(e.max_retry_attempts, None);
    assert_eq!(e.max_record_age, None);
    assert!(!e.bisect_on_function_error);
    assert_eq!(c.shutdown_grace, Duration::from_secs(25));
    assert_eq!(c.admin_listen.port(), 9090);
}

#[test]
fn every_problem_is_listed_with_its_path() {
    let errs = errors(&format!(
            "bogus: 1\nmappings:\n  - EventSourceArn: {ARN}\n    FunctionName: f\n    StartingPosition: LATEST\n    BatchSize: 0\n    MaximumBatchingWindowInSeconds: 301\n    Extra: x\n  - EventSourceArn: nope\n    Http: {{ Url: 'ftp://x', TimeoutSeconds: 0 }}\n    StartingPosition: EARLIEST\n    MaximumRecordAgeInSeconds: 59\n"
        ));
    for want in [
        "bogus: unknown field",
        "mappings[0].BatchSize: 0 is out of range 1..=10000",
        "mappings[0].MaximumBatchingWindowInSeconds: 301 is out of range 0..=300",
        "mappings[0].Extra: unknown field",
        "mappings[1].EventSourceArn: \"nope\" is not an ARN",
        "mappings[1].Http.Url: \"ftp://x\" is not an http:// or https:// URL",
        "mappings[1].Http.TimeoutSeconds: 0 is out of range 1..=900",
        "mappings[1].StartingPosition: \"EARLIEST\" is not one of",
        "mappings[1].MaximumRecordAgeInSeconds: 59 is out of range -1 or 60..=604800",
    ] {
        assert!(
            errs.iter().any(|e| e.starts_with(want)),
            "missing {want:?} in {errs:#?}"
        );
    }
    assert_eq!(errs.len(), 9, "{errs:#?}");
}

#[test]
fn error_handling_fields() {
    let c = parse(&format!(
            "mappings:\n  - EventSourceArn: {ARN}\n    FunctionName: arn:aws:lambda:us-east-1:1:function:f:live\n    StartingPosition: AT_TIMESTAMP\n    StartingPositionTimestamp: 1700000000.5\n    MaximumRetryAttempts: 2\n    MaximumRecordAgeInSeconds: 60\n    BisectBatchOnFunctionError: true\n    FunctionResponseTypes: [ReportBatchItemFailures]\n    DestinationConfig: {{ OnFailure: {{ Destination: 'arn:aws:sqs:us-east-1:1:dlq' }} }}\n"
        ))
        .unwrap();
    let e = c.mappings[0].stream_errors().unwrap();
    assert_eq!(e.max_retry_attempts, Some(2));
    assert_eq!(e.max_record_age, Some(Duration::from_secs(60)));
    assert!(e.bisect_on_function_error && e.report_batch_item_failures);
    assert!(matches!(e.on_failure, Some(DestinationArn::Sqs { .. })));
    assert_eq!(c.mappings[0].name, "orders");
    assert_eq!(c.mappings[0].legacy_names, ["orders-f:live"]);
}

#[test]
fn parallelization_factor_is_1_to_10_for_streams_only() {
    let ddb = "arn:aws:dynamodb:us-east-1:1:table/t/stream/2020-01-01T00:00:00.000";
    let c = parse(&format!(
        "mappings:\n  - EventSourceArn: {ARN}\n    Name: one\n    FunctionName: f\n    StartingPosition: LATEST\n  - EventSourceArn: {ARN}\n    Name: five\n    FunctionName: f\n    StartingPosition: LATEST\n    ParallelizationFactor: 5\n  - EventSourceArn: {ddb}\n    FunctionName: f\n    StartingPosition: LATEST\n    ParallelizationFactor: 10\n"
    ))
    .unwrap();
    let factors: Vec<usize> = c
        .mappings
        .iter()
        .map(|m| m.parallelization_factor())
        .collect();
    assert_eq!(factors, [1, 5, 10], "AWS's default is 1");
    let errs = errors(&format!(
        "mappings:\n  - EventSourceArn: {ARN}\n    Name: a\n    FunctionName: f\n    StartingPosition: LATEST\n    ParallelizationFactor: 0\n  - EventSourceArn: {ARN}\n    Name: b\n    FunctionName: f\n    StartingPosition: LATEST\n    ParallelizationFactor: 11\n  - EventSourceArn: arn:aws:sqs:us-east-1:1:q\n    FunctionName: f\n    ParallelizationFactor: 2\n"
    ));
    assert_eq!(
        errs,
        vec![
            "mappings[0].ParallelizationFactor: 0 is out of range 1..=10",
            "mappings[1].ParallelizationFactor: 11 is out of range 1..=10",
            "mappings[2].ParallelizationFactor: is not supported for SQS sources (AWS takes it for Kinesis and DynamoDB Streams only)",
        ]
    );
}

#[test]
fn tumbling_windows_need_one_batch_at_a_time_per_shard() {
    let errs = errors(&format!(
        "mappings:\n  - EventSourceArn: {ARN}\n    FunctionName: f\n    StartingPosition: LATEST\n    ParallelizationFactor: 2\n    TumblingWindowInSeconds: 60\n"
    ));
    assert_eq!(
        errs,
        vec!["mappings[0].TumblingWindowInSeconds: cannot be used with ParallelizationFactor 2: a window's state is carried per shard, so its invocations run one at a time (set ParallelizationFactor to 1)"]
    );
}

#[test]
fn dynamodb_streams_reject_at_timestamp() {
    let errs = errors("mappings:\n  - EventSourceArn: arn:aws:dynamodb:us-east-1:1:table/t/stream/2020-01-01T00:00:00.000\n    FunctionName: f\n    StartingPosition: AT_TIMESTAMP\n    StartingPositionTimestamp: 1\n");
    assert_eq!(errs, vec!["mappings[0].StartingPosition: AT_TIMESTAMP is not supported for DynamoDB Streams (use TRIM_HORIZON or LATEST)"]);
}

#[test]
fn sqs_rules() {
    let q = "arn:aws:sqs:us-east-1:1:q";
    let c = parse(&format!("mappings:\n  - EventSourceArn: {q}\n    FunctionName: f\n    ScalingConfig: {{ MaximumConcurrency: 50 }}\n")).unwrap();
    assert_eq!(
        c.mappings[0].batching.batch_size, 10,
        "SQS's default BatchSize"
    );
    assert_eq!(c.mappings[0].queue().unwrap().max_concurrency, Some(50));
    let errs = errors(&format!(
            "mappings:\n  - EventSourceArn: {q}\n    FunctionName: f\n    BatchSize: 20\n  - EventSourceArn: {q}.fifo\n    FunctionName: f\n    BatchSize: 11\n    MaximumBatchingWindowInSeconds: 1\n  - EventSourceArn: {q}2\n    Name: other\n    FunctionName: f\n    StartingPosition: LATEST\n    MaximumRetryAttempts: 1\n    ScalingConfig: {{ MaximumConcurrency: 1 }}\n  - EventSourceArn: {ARN}\n    FunctionName: f\n    StartingPosition: LATEST\n    ScalingConfig: {{ MaximumConcurrency: 5 }}\n"
        ));
    for want in [
        "mappings[0].BatchSize: 20 needs MaximumBatchingWindowInSeconds of at least 1",
        "mappings[1].BatchSize: 11 is out of range 1..=10 for FIFO queues",
        "mappings[1].MaximumBatchingWindowInSeconds: is not supported for FIFO queues",
        "mappings[2].StartingPosition: is not supported for SQS sources",
        "mappings[2].MaximumRetryAttempts: is not supported for SQS sources",
        "mappings[2].ScalingConfig.MaximumConcurrency: 1 is out of range 2..=1000",
        "mappings[3].ScalingConfig: is only supported for SQS sources",
    ] {
        assert!(
            errs.iter().any(|e| e.starts_with(want)),
            "missing {want:?} in {errs:#?}"
        );
    }
    assert_eq!(errs.len(), 7, "{errs:#?}");
    // A window of 1 s allows batches over 10 on a standard queue.
    assert!(parse(&format!("mappings:\n  - {{ EventSourceArn: {q}, FunctionName: f, BatchSize: 100, MaximumBatchingWindowInSeconds: 1 }}\n")).is_ok());
}

#[test]
fn targets_are_exclusive_and_required() {
    let errs = errors(&format!(
            "mappings:\n  - EventSourceArn: {ARN}\n    StartingPosition: LATEST\n  - EventSourceArn: {ARN}\n    StartingPosition: LATEST\n    FunctionName: f\n    Http: {{ Url: 'http://x' }}\n"
        ));
    assert!(
        errs[0].starts_with("mappings[0].FunctionName: is required"),
        "{errs:?}"
    );
    assert!(
        errs[1].starts_with("mappings[1].FunctionName: and Http are mutually exclusive"),
        "{errs:?}"
    );
}

#[test]
fn duplicate_names_and_missing_mappings() {
    assert_eq!(
        errors("region: x\n"),
        vec!["mappings: is required (a list of event source mappings)"]
    );
    let errs = errors(&format!(
            "mappings:\n  - {{ Name: a, EventSourceArn: {ARN}, FunctionName: f, StartingPosition: LATEST }}\n  - {{ Name: a, EventSourceArn: {ARN}, FunctionName: g, StartingPosition: LATEST }}\n"
        ));
    assert_eq!(
        errs,
        vec!["mappings[1].Name: \"a\" is also the name of mappings[0]; names must be unique: set a distinct Name"]
    );
}

const NOW: u64 = 1_800_000_000;

fn at(ts: &str) -> Result<Config, ConfigErrors> {
    parse_at(
        &format!("mappings:\n  - EventSourceArn: {ARN}\n    FunctionName: f\n    StartingPosition: AT_TIMESTAMP\n    StartingPositionTimestamp: {ts}\n"),
        UNIX_EPOCH + Duration::from_secs(NOW),
    )
}

#[test]
fn starting_timestamps_outside_0_to_now_plus_skew_are_refused() {
    let range = "0..=1800000060 (epoch seconds, at most 60 s after the current time)";
    for (ts, shown) in [
        ("1e20", "1e20"),
        ("1e19", "1e19"),
        (".inf", ".inf"),
        ("-.inf", "-.inf"),
        (".nan", ".nan"),
        ("-1", "-1"),
        ("-0.5", "-0.5"),
        ("1800000060.5", "1800000060.5"),
        ("1800000061", "1800000061"),
    ] {
        let errs = at(ts).expect_err(ts).0;
        assert_eq!(
            errs,
            vec![format!(
                "mappings[0].StartingPositionTimestamp: {shown} is out of range {range}"
            )],
            "{ts}"
        );
    }
    let errs = at("yesterday").unwrap_err().0;
    assert_eq!(
        errs,
        vec![format!(
            "mappings[0].StartingPositionTimestamp: yesterday must be a number in range {range}"
        )]
    );
    for (ts, secs) in [
        ("0", 0.0),
        ("-0.0", 0.0),
        ("1700000000.5", 1_700_000_000.5),
        ("1800000060", 1_800_000_060.0),
    ] {
        let c = at(ts).unwrap_or_else(|e| panic!("{ts}: {e}"));
        assert_eq!(
            c.mappings[0].starting_position(),
            Some(StartingPosition::AtTimestamp(
                UNIX_EPOCH + Duration::from_secs_f64(secs)
            )),
            "{ts}"
        );
    }
}

#[test]
fn a_timestamp_without_at_timestamp_is_one_problem() {
    let errs = errors(&format!("mappings:\n  - EventSourceArn: {ARN}\n    FunctionName: f\n    StartingPosition: LATEST\n    StartingPositionTimestamp: 1\n"));
    assert_eq!(
        errs,
        vec!["mappings[0].StartingPositionTimestamp: is only allowed with StartingPosition AT_TIMESTAMP"]
    );
    let errs = errors(&format!(
        "mappings:\n  - EventSourceArn: {ARN}\n    FunctionName: f\n    StartingPosition: 5\n"
    ));
    assert_eq!(
        errs,
        vec!["mappings[0].StartingPosition: 5 must be a string"]
    );
}

#[test]
fn a_fifo_queue_is_not_a_stream_destination() {
    let yaml = |dest: &str| {
        format!("mappings:\n  - EventSourceArn: {ARN}\n    FunctionName: f\n    StartingPosition: LATEST\n    DestinationConfig: {{ OnFailure: {{ Destination: '{dest}' }} }}\n")
    };
    let errs = errors(&yaml("arn:aws:sqs:us-east-1:1:dlq.fifo"));
    assert_eq!(errs, vec!["mappings[0].DestinationConfig.OnFailure.Destination: \"arn:aws:sqs:us-east-1:1:dlq.fifo\" is a FIFO queue: on-failure destinations of stream mappings must be standard queues (as in AWS)"]);
    assert!(parse(&yaml("arn:aws:sqs:us-east-1:1:dlq")).is_ok());
}

#[test]
fn max_in_flight_bytes_has_a_range() {
    let yaml = |v: &str| {
        format!("max_in_flight_bytes: {v}\nmappings:\n  - {{ EventSourceArn: {ARN}, FunctionName: f, StartingPosition: LATEST }}\n")
    };
    assert_eq!(
        parse(&yaml("16777216")).unwrap().max_in_flight_bytes,
        16 << 20
    );
    assert_eq!(
        parse(&yaml("68719476736")).unwrap().max_in_flight_bytes,
        64 << 30
    );
    for v in ["16777215", "68719476737", "-1"] {
        assert_eq!(
            errors(&yaml(v)),
            vec![format!(
                "max_in_flight_bytes: {v} is out of range 16777216..=68719476736"
            )]
        );
    }
    assert_eq!(
        errors(&yaml("1.5e9")),
        vec!["max_in_flight_bytes: 1500000000.0 is not a whole number in range 16777216..=68719476736"]
    );
}

fn names(yaml: &str) -> Vec<(String, Vec<String>)> {
    parse(yaml)
        .unwrap_or_else(|e| panic!("{e}"))
        .mappings
        .into_iter()
        .map(|m| (m.name, m.legacy_names))
        .collect()
}

fn n(name: &str, legacy: &[&str]) -> (String, Vec<String>) {
    (name.into(), legacy.iter().map(|s| s.to_string()).collect())
}

#[test]
fn the_default_name_comes_from_the_source_alone() {
    let ddb = "arn:aws:dynamodb:us-east-1:1:table/T/stream/2024-01-01T00:00:00.000";
    let q = "arn:aws:sqs:us-east-1:1:jobs.fifo";
    assert_eq!(
        names(&format!("mappings:\n  - {{ EventSourceArn: {ARN}, FunctionName: f, StartingPosition: LATEST }}\n  - {{ EventSourceArn: '{ddb}', Http: {{ Url: 'http://h/x' }}, StartingPosition: LATEST }}\n  - {{ EventSourceArn: {q}, FunctionName: 'arn:aws:lambda:us-east-1:1:function:g:live' }}\n")),
        [
            n("orders", &["orders-f"]),
            n("T/stream/2024-01-01T00:00:00.000", &["T-http://h/x"]),
            n("jobs.fifo", &["jobs.fifo-g:live"]),
        ]
    );
    // Editing the target keeps the name, hence the checkpoints.
    assert_eq!(
        names(&format!("mappings:\n  - {{ EventSourceArn: {ARN}, FunctionName: 'f:live', StartingPosition: LATEST }}\n"))[0].0,
        "orders"
    );
    // A given Name has no legacy name: earlier releases used the same Name.
    assert_eq!(
        names(&format!("mappings:\n  - {{ Name: o, EventSourceArn: {ARN}, FunctionName: f, StartingPosition: LATEST }}\n")),
        [n("o", &[])]
    );
}

#[test]
fn mappings_sharing_a_source_must_each_be_named() {
    let m = |name: &str, f: &str| {
        format!(
            "  - {{ {name}EventSourceArn: {ARN}, FunctionName: {f}, StartingPosition: LATEST }}\n"
        )
    };
    let errs = errors(&format!("mappings:\n{}{}", m("", "f"), m("", "g")));
    let want = format!("is required: mappings[0] and mappings[1] read the same EventSourceArn {ARN:?}; give each of them a distinct Name (it keys their checkpoints)");
    assert_eq!(
        errs,
        vec![
            format!("mappings[0].Name: {want}"),
            format!("mappings[1].Name: {want}")
        ]
    );
    // One named, one not: the unnamed one is reported, once.
    let errs = errors(&format!("mappings:\n{}{}", m("Name: a, ", "f"), m("", "g")));
    assert_eq!(errs, vec![format!("mappings[1].Name: {want}")]);
    // Both named: fine.
    assert_eq!(
        names(&format!(
            "mappings:\n{}{}",
            m("Name: a, ", "f"),
            m("Name: b, ", "g")
        )),
        [n("a", &[]), n("b", &[])]
    );
}

#[test]
fn equal_default_names_of_different_sources_are_refused() {
    let other = "arn:aws:kinesis:eu-west-1:000000000000:stream/orders";
    let errs = errors(&format!("mappings:\n  - {{ EventSourceArn: {ARN}, FunctionName: f, StartingPosition: LATEST }}\n  - {{ EventSourceArn: '{other}', FunctionName: f, StartingPosition: LATEST }}\n"));
    assert_eq!(errs, vec!["mappings[1].Name: \"orders\" (the default name, from EventSourceArn) is also the name of mappings[0] (the default name, from EventSourceArn); names must be unique: set a distinct Name"]);
    let errs = errors(&format!("mappings:\n  - {{ EventSourceArn: {ARN}, FunctionName: f, StartingPosition: LATEST }}\n  - {{ Name: orders, EventSourceArn: '{other}', FunctionName: f, StartingPosition: LATEST }}\n"));
    assert_eq!(errs, vec!["mappings[1].Name: \"orders\" is also the name of mappings[0] (the default name, from EventSourceArn); names must be unique: set a distinct Name"]);
}

#[test]
fn previous_names_become_legacy_names() {
    let q = "arn:aws:sqs:us-east-1:1:q";
    assert_eq!(
        names(&format!("mappings:\n  - {{ Name: new, PreviousNames: [old, older, old], EventSourceArn: {ARN}, FunctionName: f, StartingPosition: LATEST }}\n  - {{ PreviousNames: [was-q], EventSourceArn: {q}, FunctionName: f }}\n")),
        [n("new", &["old", "older"]), n("q", &["was-q", "q-f"])]
    );
    let errs = errors(&format!("mappings:\n  - {{ Name: a, PreviousNames: ['', 3, a, b, c], EventSourceArn: {ARN}, FunctionName: f, StartingPosition: LATEST }}\n  - {{ Name: b, PreviousNames: [c], EventSourceArn: {q}, FunctionName: f }}\n  - {{ Name: x, PreviousNames: y, EventSourceArn: {q}, FunctionName: f }}\n  - {{ Name: '', EventSourceArn: {q}, FunctionName: f }}\n"));
    assert_eq!(
        errs,
        vec![
            "mappings[0].PreviousNames[0]: '' must be a non-empty string",
            "mappings[0].PreviousNames[1]: 3 must be a non-empty string",
            "mappings[2].PreviousNames: y must be a list of names",
            "mappings[3].Name: must not be empty",
            "mappings[0].PreviousNames[2]: \"a\" is this mapping's own Name",
            "mappings[0].PreviousNames[3]: \"b\" is the name of mappings[1]; a previous name must not be in use",
            "mappings[1].PreviousNames[0]: \"c\" is also a previous name of mappings[0]; progress can carry over to one mapping only",
        ]
    );
}

#[test]
fn an_ambiguous_old_default_name_is_not_carried_over() {
    let ddb = |label: &str| format!("arn:aws:dynamodb:us-east-1:1:table/T/stream/{label}");
    // Two streams of one table (the old one is readable for 24 h) with one function: earlier releases
    // named both T-f, so neither may claim T-f's checkpoints.
    assert_eq!(
        names(&format!("mappings:\n  - {{ EventSourceArn: '{}', FunctionName: f, StartingPosition: LATEST }}\n  - {{ EventSourceArn: '{}', FunctionName: f, StartingPosition: LATEST }}\n", ddb("a"), ddb("b"))),
        [n("T/stream/a", &[]), n("T/stream/b", &[])]
    );
    // An old default that another mapping now runs under, or names as its previous name, is theirs.
    assert_eq!(
        names(&format!("mappings:\n  - {{ EventSourceArn: {ARN}, FunctionName: f, StartingPosition: LATEST }}\n  - {{ Name: orders-f, EventSourceArn: '{}', FunctionName: f, StartingPosition: LATEST }}\n  - {{ EventSourceArn: '{}', FunctionName: g, StartingPosition: LATEST }}\n  - {{ Name: z, PreviousNames: ['T-g'], EventSourceArn: arn:aws:sqs:us-east-1:1:q, FunctionName: f }}\n", ddb("a"), ddb("b"))),
        [
            n("orders", &[]),
            n("orders-f", &[]),
            n("T/stream/b", &[]),
            n("z", &["T-g"])
        ]
    );
}

#[test]
fn each_source_kind_carries_only_its_settings() {
    let ddb = "arn:aws:dynamodb:us-east-1:1:table/T/stream/2024-01-01T00:00:00.000";
    let c = parse(&format!("mappings:\n  - {{ EventSourceArn: {ARN}, FunctionName: f, StartingPosition: TRIM_HORIZON, MaximumRetryAttempts: 4 }}\n  - {{ EventSourceArn: '{ddb}', FunctionName: f, StartingPosition: LATEST, FunctionResponseTypes: [ReportBatchItemFailures] }}\n  - {{ EventSourceArn: arn:aws:sqs:us-east-1:1:q.fifo, FunctionName: f, FunctionResponseTypes: [ReportBatchItemFailures] }}\n")).unwrap();
    let [kinesis, dynamodb, sqs] = &c.mappings[..] else {
        panic!("three mappings")
    };
    match &kinesis.source {
        MappingSource::Kinesis(s) => {
            assert_eq!(s.stream.stream, "orders");
            assert_eq!(s.stream.account, "000000000000");
            assert_eq!(s.starting_position, StartingPosition::TrimHorizon);
            assert_eq!(s.errors.max_retry_attempts, Some(4));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(kinesis.source_arn(), ARN);
    assert!(!kinesis.report_batch_item_failures() && kinesis.queue().is_none());
    match &dynamodb.source {
        MappingSource::DynamoDbStream(s) => {
            assert_eq!(
                (s.stream.table.as_str(), s.stream.label.as_str()),
                ("T", "2024-01-01T00:00:00.000")
            );
            assert_eq!(s.starting_position, StartingPosition::Latest);
        }
        other => panic!("{other:?}"),
    }
    assert!(dynamodb.report_batch_item_failures());
    assert_eq!(dynamodb.starting_position(), Some(StartingPosition::Latest));
    match &sqs.source {
        MappingSource::Sqs(q) => {
            assert!(q.queue.fifo);
            assert_eq!(q.queue.queue, "q.fifo");
            assert_eq!(q.max_concurrency, None);
        }
        other => panic!("{other:?}"),
    }
    assert!(sqs.report_batch_item_failures() && sqs.source.is_queue());
    assert_eq!(
        sqs.starting_position(),
        None,
        "a queue has no starting position"
    );
    assert!(sqs.stream_errors().is_none(), "nor stream error handling");
    assert_eq!(sqs.source.region(), "us-east-1");
}

#[test]
fn the_test_mappings_are_what_their_arns_parse_to() {
    let k = Mapping::kinesis_for_tests(7, Duration::from_secs(2), ErrorHandling::default());
    let MappingSource::Kinesis(s) = &k.source else {
        panic!("{k:?}")
    };
    assert_eq!(
        SourceArn::parse(k.source_arn()),
        Ok(SourceArn::Kinesis(s.stream.clone()))
    );
    assert_eq!(
        k.batching,
        Batching {
            batch_size: 7,
            window: Duration::from_secs(2)
        }
    );
    let d = Mapping::dynamodb_for_tests(StartingPosition::Latest);
    let MappingSource::DynamoDbStream(s) = &d.source else {
        panic!("{d:?}")
    };
    assert_eq!(
        SourceArn::parse(d.source_arn()),
        Ok(SourceArn::DynamoDb(s.stream.clone()))
    );
    assert_eq!(d.starting_position(), Some(StartingPosition::Latest));
    assert_eq!((k.name.as_str(), d.name.as_str()), ("m", "m"));
}

#[test]
fn tumbling_windows_are_for_kinesis_and_dynamodb_streams_0_to_900_s() {
    let ddb = "arn:aws:dynamodb:us-east-1:1:table/t/stream/2024-01-01T00:00:00.000";
    let c = parse(&format!(
        "mappings:\n  - EventSourceArn: {ARN}\n    Name: a\n    FunctionName: f\n    StartingPosition: LATEST\n    TumblingWindowInSeconds: 120\n  - EventSourceArn: {ddb}\n    FunctionName: f\n    StartingPosition: LATEST\n    TumblingWindowInSeconds: 900\n  - EventSourceArn: {ARN}\n    Name: off\n    FunctionName: g\n    StartingPosition: LATEST\n    TumblingWindowInSeconds: 0\n"
    ))
    .unwrap();
    assert_eq!(
        c.mappings[0].tumbling_window(),
        Some(Duration::from_secs(120))
    );
    assert_eq!(
        c.mappings[1].tumbling_window(),
        Some(Duration::from_secs(900))
    );
    assert_eq!(c.mappings[2].tumbling_window(), None, "0 is off");
    let sqs = "arn:aws:sqs:us-east-1:1:q";
    let errs = errors(&format!(
        "mappings:\n  - EventSourceArn: {ARN}\n    Name: a\n    FunctionName: f\n    StartingPosition: LATEST\n    TumblingWindowInSeconds: 901\n  - EventSourceArn: {ARN}\n    Name: b\n    FunctionName: g\n    StartingPosition: LATEST\n    TumblingWindowInSeconds: -1\n  - EventSourceArn: {sqs}\n    FunctionName: f\n    TumblingWindowInSeconds: 60\n"
    ));
    assert_eq!(
        errs,
        [
            "mappings[0].TumblingWindowInSeconds: 901 is out of range 0..=900",
            "mappings[1].TumblingWindowInSeconds: -1 is out of range 0..=900",
            "mappings[2].TumblingWindowInSeconds: is not supported for SQS sources (AWS takes it for Kinesis and DynamoDB Streams only)",
        ]
    );
}
