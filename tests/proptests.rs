//! Bad input never panics: the config parser. Property tests feed it arbitrary YAML text,
//! YAML-ish token soup, and arbitrary YAML value trees keyed by the real field names (so deep paths
//! are reached, many whole configs are valid, and every check runs). It must answer a config whose
//! names are unique, or problems that each name a path. The decoders' properties are in
//! tests/proptests_decoders.rs.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use serde_yaml_ng::value::{Tag, TaggedValue};
use serde_yaml_ng::{Mapping as YamlMap, Value};
use std::collections::HashSet;

const TOP_KEYS: &[&str] = &[
    "region",
    "endpoints",
    "checkpoint_dir",
    "admin_listen",
    "shutdown_grace_period_seconds",
    "shard_discovery_interval_seconds",
    "invoke_identity_arn",
    "max_in_flight_bytes",
    "mappings",
];

const MAPPING_KEYS: &[&str] = &[
    "Name",
    "PreviousNames",
    "EventSourceArn",
    "FunctionName",
    "Http",
    "BatchSize",
    "MaximumBatchingWindowInSeconds",
    "StartingPosition",
    "StartingPositionTimestamp",
    "Enabled",
    "MaximumRetryAttempts",
    "MaximumRecordAgeInSeconds",
    "BisectBatchOnFunctionError",
    "FunctionResponseTypes",
    "DestinationConfig",
    "ScalingConfig",
];

/// Keys of nested objects, and a few that are not fields at all.
const OTHER_KEYS: &[&str] = &[
    "Url",
    "Headers",
    "TimeoutSeconds",
    "MaximumConcurrency",
    "OnFailure",
    "Destination",
    "kinesis",
    "dynamodbstreams",
    "lambda",
    "sqs",
    "sns",
    "s3",
    "Content-Type",
    "",
    "Bogus",
];

const STRINGS: &[&str] = &[
    "arn:aws:kinesis:us-east-1:000000000000:stream/orders",
    "arn:aws:kinesis:eu-west-1:000000000000:stream/orders",
    "arn:aws:kinesis:us-east-1:1:stream/s/consumer/c:1",
    "arn:aws:dynamodb:us-east-1:1:table/T/stream/2024-01-01T00:00:00.000",
    "arn:aws:dynamodb:us-east-1:1:table/T/stream/",
    "arn:aws:sqs:us-east-1:1:q",
    "arn:aws:sqs:us-east-1:1:q.fifo",
    "arn:aws:sns:us-east-1:1:t",
    "arn:aws:s3:::bucket",
    "arn:aws:lambda:us-east-1:1:function:f:live",
    "arn:::::",
    "arn",
    "f",
    "f:live",
    "orders",
    "orders-f",
    "q",
    "TRIM_HORIZON",
    "LATEST",
    "AT_TIMESTAMP",
    "ReportBatchItemFailures",
    "http://127.0.0.1:9/x",
    "https://example.com",
    "ftp://x",
    "0.0.0.0:9090",
    "[::1]:0",
    "",
    "\u{0}",
    "é\u{202e}",
];

fn key() -> impl Strategy<Value = Value> {
    prop_oneof![
        8 => select(TOP_KEYS.iter().chain(MAPPING_KEYS).chain(OTHER_KEYS).copied().collect::<Vec<_>>())
            .prop_map(|k| Value::String(k.into())),
        1 => scalar(),
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        any::<u64>().prop_map(|n| Value::Number(n.into())),
        (-2i64..20_000).prop_map(|n| Value::Number(n.into())),
        any::<f64>().prop_map(|n| Value::Number(n.into())),
        select(vec![
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            -0.0,
            1e20,
            1e19,
            -1.0,
            0.5,
            1_700_000_000.5,
            9.2e18,
            1.8e19,
        ])
        .prop_map(|n| Value::Number(n.into())),
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        select(STRINGS).prop_map(|s| Value::String(s.into())),
        any::<String>().prop_map(Value::String),
    ]
}

fn tree() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Value::Sequence),
            vec((key(), inner.clone()), 0..6)
                .prop_map(|kv| Value::Mapping(kv.into_iter().collect())),
            (select(vec!["!!str", "!!float", "!x", "!"]), inner).prop_map(|(tag, value)| {
                Value::Tagged(Box::new(TaggedValue {
                    tag: Tag::new(tag),
                    value,
                }))
            }),
        ]
    })
}

fn int(range: std::ops::RangeInclusive<i64>) -> BoxedStrategy<Value> {
    range.prop_map(|n| Value::Number(n.into())).boxed()
}

fn strings(v: &'static [&'static str]) -> BoxedStrategy<Value> {
    select(v).prop_map(|s| Value::String(s.into())).boxed()
}

/// A value for one field: mostly valid, sometimes any number or any tree.
fn field_value(key: &'static str) -> BoxedStrategy<Value> {
    let valid = match key {
        "EventSourceArn" => strings(&STRINGS[..9]),
        "FunctionName" | "Name" => {
            strings(&["f", "f:live", "g", "orders", "orders-f", "q", "f", "g"])
        }
        "PreviousNames" => vec(strings(&["orders-f", "old", "f", "q-f", ""]), 0..3)
            .prop_map(Value::Sequence)
            .boxed(),
        "StartingPosition" => strings(&["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP", "EARLIEST"]),
        "StartingPositionTimestamp" => prop_oneof![int(0..=1_800_000_000), number()].boxed(),
        "FunctionResponseTypes" => vec(strings(&["ReportBatchItemFailures", "x"]), 0..3)
            .prop_map(Value::Sequence)
            .boxed(),
        "Http" => (strings(&STRINGS[21..24]), int(1..=900))
            .prop_map(|(url, timeout)| yaml_map([("Url", url), ("TimeoutSeconds", timeout)]))
            .boxed(),
        "DestinationConfig" => strings(&STRINGS[5..10])
            .prop_map(|d| yaml_map([("OnFailure", yaml_map([("Destination", d)]))]))
            .boxed(),
        "ScalingConfig" => int(1..=20)
            .prop_map(|n| yaml_map([("MaximumConcurrency", n)]))
            .boxed(),
        "Enabled" | "BisectBatchOnFunctionError" => any::<bool>().prop_map(Value::Bool).boxed(),
        "BatchSize" => int(0..=20),
        "MaximumBatchingWindowInSeconds" => int(0..=3),
        "MaximumRetryAttempts" => int(-2..=3),
        "MaximumRecordAgeInSeconds" => select(vec![-1i64, 59, 60, 3600])
            .prop_map(|n| Value::Number(n.into()))
            .boxed(),
        "region" | "checkpoint_dir" | "invoke_identity_arn" => strings(&["us-east-1", "x", ""]),
        "admin_listen" => strings(&["0.0.0.0:9090", "[::1]:0", "x"]),
        "endpoints" => strings(&STRINGS[21..24])
            .prop_map(|u| yaml_map([("kinesis", u.clone()), ("sqs", u)]))
            .boxed(),
        "shutdown_grace_period_seconds" | "shard_discovery_interval_seconds" => int(0..=3601),
        "max_in_flight_bytes" => int((16 << 20) - 1..=(16 << 20) + 1),
        _ => number().boxed(),
    };
    prop_oneof![16 => valid, 1 => number(), 1 => tree()].boxed()
}

fn yaml_map<const N: usize>(kv: [(&str, Value); N]) -> Value {
    Value::Mapping(
        kv.into_iter()
            .map(|(k, v)| (Value::String(k.into()), v))
            .collect::<YamlMap>(),
    )
}

fn fields(
    keys: &'static [&'static str],
    n: std::ops::Range<usize>,
) -> impl Strategy<Value = Vec<(Value, Value)>> {
    vec(
        select(keys).prop_flat_map(|k| (Just(Value::String(k.into())), field_value(k))),
        n,
    )
}

/// A valid core for one mapping: a source and a target, with the starting position its kind needs.
fn core() -> impl Strategy<Value = Vec<(Value, Value)>> {
    let sources = vec![STRINGS[0], STRINGS[1], STRINGS[3], STRINGS[5], STRINGS[6]];
    (
        select(sources),
        fields(&["FunctionName", "Http"], 1..2),
        select(vec!["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"]),
        prop_oneof![3 => int(0..=1_700_000_000), 1 => number()],
        proptest::option::of(select(vec!["a", "b", "orders", "orders-f"])),
    )
        .prop_map(|(arn, target, start, ts, name)| {
            let s = |v: &str| Value::String(v.into());
            let mut out = vec![(s("EventSourceArn"), s(arn))];
            out.extend(target);
            match (arn.contains(":sqs:"), arn.contains(":dynamodb:"), start) {
                (true, _, _) => {}
                (_, false, "AT_TIMESTAMP") => {
                    out.push((s("StartingPosition"), s(start)));
                    out.push((s("StartingPositionTimestamp"), ts));
                }
                (_, _, "AT_TIMESTAMP") => out.push((s("StartingPosition"), s("LATEST"))),
                _ => out.push((s("StartingPosition"), s(start))),
            }
            if let Some(name) = name {
                out.push((s("Name"), s(name)));
            }
            out
        })
}

/// One mapping: a valid core with a few fields added or overwritten, so that many whole configs
/// are valid and every check is reached.
fn mapping_entry() -> impl Strategy<Value = Value> {
    (
        core(),
        prop_oneof![2 => Just(0..1), 1 => Just(1..4)].prop_flat_map(|n| fields(MAPPING_KEYS, n)),
    )
        .prop_map(|(a, b)| Value::Mapping(a.into_iter().chain(b).collect()))
}

/// A config shaped like a real one: some process keys, and a list of mostly plausible mappings.
fn config() -> impl Strategy<Value = Value> {
    (
        fields(&TOP_KEYS[..8], 0..3),
        vec(prop_oneof![12 => mapping_entry(), 1 => tree()], 1..3),
    )
        .prop_map(|(top, mappings)| {
            let mut m: YamlMap = top.into_iter().collect();
            m.insert("mappings".into(), Value::Sequence(mappings));
            Value::Mapping(m)
        })
}

/// YAML-ish text: tokens of the grammar and of the config, in any order.
fn yamlish_text() -> impl Strategy<Value = String> {
    let tokens: Vec<&'static str> = [
        "\n",
        "\n  ",
        "\n    ",
        "- ",
        ": ",
        ":",
        "{",
        "}",
        "[",
        "]",
        ", ",
        "'",
        "\"",
        "&a ",
        "*a",
        "!!float ",
        "!!binary ",
        "? ",
        "# c",
        "|\n",
        ">-\n",
        "---\n",
        "...\n",
        "~",
        "null",
        "true",
        ".inf",
        "-.inf",
        ".nan",
        "1e20",
        "-1",
        "0x1F",
        "0o17",
        "1_000",
        "<<: *a\n",
        "%YAML 1.2\n",
    ]
    .into_iter()
    .chain(TOP_KEYS.iter().copied())
    .chain(MAPPING_KEYS.iter().copied())
    .chain(STRINGS.iter().copied())
    .collect();
    vec(select(tokens), 0..40).prop_map(|t| t.concat())
}

/// What parse_str promises besides not panicking.
fn check_config(text: &str) -> Result<(), TestCaseError> {
    match sluice::config::parse_str(text) {
        Ok(c) => {
            prop_assert!(!c.mappings.is_empty());
            let names: HashSet<&str> = c.mappings.iter().map(|m| m.name.as_str()).collect();
            prop_assert_eq!(names.len(), c.mappings.len(), "names are unique");
            for m in &c.mappings {
                prop_assert!(!m.name.is_empty());
                for legacy in &m.legacy_names {
                    prop_assert!(!legacy.is_empty() && !names.contains(legacy.as_str()));
                }
            }
            prop_assert!((16 << 20..=64 << 30).contains(&c.max_in_flight_bytes));
        }
        Err(e) => {
            prop_assert!(!e.0.is_empty());
            for line in &e.0 {
                prop_assert!(line.contains(": "), "{:?} names no path", line);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn config_any_text(text in any::<String>()) {
        check_config(&text)?;
    }

    #[test]
    fn config_yamlish_text(text in yamlish_text()) {
        check_config(&text)?;
    }

    #[test]
    fn config_any_tree(value in tree()) {
        if let Ok(text) = serde_yaml_ng::to_string(&value) {
            check_config(&text)?;
        }
    }

    #[test]
    fn config_shaped_tree(value in config()) {
        if let Ok(text) = serde_yaml_ng::to_string(&value) {
            check_config(&text)?;
        }
    }
}
