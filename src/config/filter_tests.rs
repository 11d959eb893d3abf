//! Unit tests of `FilterCriteria` in the config: every source takes it, `{}` is no filtering, and
//! each problem names the filter, the value and what is wrong.

use super::parse::parse;

const KINESIS: &str =
    "EventSourceArn: arn:aws:kinesis:us-east-1:1:stream/s\n    StartingPosition: LATEST";
const DYNAMODB: &str = "EventSourceArn: arn:aws:dynamodb:us-east-1:1:table/t/stream/2020-01-01T00:00:00.000\n    StartingPosition: LATEST";
const SQS: &str = "EventSourceArn: arn:aws:sqs:us-east-1:1:q";
const KAFKA: &str = "SelfManagedEventSource: { Endpoints: { KAFKA_BOOTSTRAP_SERVERS: ['b:9092'] } }\n    Topics: [t]\n    StartingPosition: LATEST";

/// One mapping on `source` invoking `f`, with `filter` (YAML) as its FilterCriteria.
fn yaml(source: &str, filter: &str) -> String {
    format!("mappings:\n  - {source}\n    FunctionName: f\n    FilterCriteria: {filter}\n")
}

fn errors(text: &str) -> Vec<String> {
    parse(text).expect_err("config should be rejected").0
}

#[test]
fn every_source_takes_filter_criteria() {
    let filter = r#"{ Filters: [ { Pattern: '{"a": ["x"]}' }, { Pattern: '{"b": [{"numeric": [">", 1]}]}' } ] }"#;
    for source in [KINESIS, DYNAMODB, SQS, KAFKA] {
        let c = parse(&yaml(source, filter)).unwrap_or_else(|e| panic!("{source}: {e}"));
        let f = c.mappings[0].filter_criteria.as_ref().expect(source);
        assert_eq!(f.patterns().len(), 2, "{source}");
    }
}

#[test]
fn no_filters_is_no_filtering() {
    for filter in ["{}", "{ Filters: [] }", "{ Filters: null }", "null"] {
        let c = parse(&yaml(SQS, filter)).unwrap_or_else(|e| panic!("{filter}: {e}"));
        assert!(c.mappings[0].filter_criteria.is_none(), "{filter}");
    }
    let c = parse(&format!("mappings:\n  - {SQS}\n    FunctionName: f\n")).unwrap();
    assert!(c.mappings[0].filter_criteria.is_none());
}

#[test]
fn up_to_ten_filters() {
    let list = |n: usize| {
        let one = r#"{ Pattern: '{"a": ["x"]}' }"#;
        format!("{{ Filters: [{}] }}", vec![one; n].join(", "))
    };
    assert!(parse(&yaml(KINESIS, &list(10))).is_ok());
    assert_eq!(
        errors(&yaml(KINESIS, &list(11))),
        ["mappings[0].FilterCriteria.Filters: lists 11 filters; at most 10 are allowed (AWS's quota: 5 by default, raisable to 10)"]
    );
}

#[test]
fn a_bad_pattern_is_named_with_its_value_and_problem() {
    let filter = r#"{ Filters: [ { Pattern: '{"ok": ["x"]}' }, { Pattern: '{"a": [{"wildcard": "x*"}]}' }, { Pattern: 'nope' }, { Pattern: '{"n": [{"numeric": [">", 10, "<", 5]}]}' }, { Pattern: '{"$or": [{"a": [1]}]}' }, { Pattern: '{"s": [{"anything-but": {"prefix": "x"}}]}' } ] }"#;
    assert_eq!(
        errors(&yaml(KAFKA, filter)),
        [
            r#"mappings[0].FilterCriteria.Filters[1].Pattern: "{\"a\": [{\"wildcard\": \"x*\"}]}" at "a": "wildcard" is not supported by Lambda event filtering (EventBridge has it, Lambda and Pipes do not)"#,
            r#"mappings[0].FilterCriteria.Filters[2].Pattern: "nope" is not valid JSON"#,
            r#"mappings[0].FilterCriteria.Filters[3].Pattern: "{\"n\": [{\"numeric\": [\">\", 10, \"<\", 5]}]}" at "n": the numeric range's lower bound 10 is not below its upper bound 5"#,
            r#"mappings[0].FilterCriteria.Filters[4].Pattern: "{\"$or\": [{\"a\": [1]}]}" at "$or": must list at least two patterns, not 1"#,
            r#"mappings[0].FilterCriteria.Filters[5].Pattern: "{\"s\": [{\"anything-but\": {\"prefix\": \"x\"}}]}" at "s": "anything-but" with prefix is not supported by Lambda event filtering (only a value or a list of values)"#,
        ]
    );
}

#[test]
fn the_shape_is_checked() {
    let long = format!(r#"{{"a": ["{}"]}}"#, "x".repeat(4090));
    let filter = format!(
        r#"{{ Filters: [ {{ Pattern: {{ a: 1 }} }}, {{ Other: x }}, {{ Pattern: '{long}' }}, 7 ], Extra: 1 }}"#
    );
    let errs = errors(&yaml(DYNAMODB, &filter));
    assert_eq!(errs.len(), 6, "{errs:#?}");
    assert_eq!(
        errs[0],
        "mappings[0].FilterCriteria.Filters[0].Pattern: a: 1 must be a string"
    );
    assert_eq!(
        errs[1],
        "mappings[0].FilterCriteria.Filters[1].Pattern: is required"
    );
    assert_eq!(
        errs[2],
        "mappings[0].FilterCriteria.Filters[1].Other: unknown field"
    );
    assert!(
        errs[3].starts_with(r#"mappings[0].FilterCriteria.Filters[2].Pattern: "{\"a\": [\"xxx"#)
            && errs[3].ends_with(r#"xxx"… is 4101 characters long; at most 4096 are allowed"#),
        "{}",
        errs[3]
    );
    assert_eq!(
        errs[4],
        "mappings[0].FilterCriteria.Filters[3]: 7 must be a mapping of fields"
    );
    assert_eq!(errs[5], "mappings[0].FilterCriteria.Extra: unknown field");
    assert_eq!(
        errors(&yaml(SQS, "{ Filters: '{}' }")),
        [r#"mappings[0].FilterCriteria.Filters: '{}' must be a list of { Pattern: "<JSON>" }"#]
    );
    assert_eq!(
        errors(&yaml(SQS, "[]")),
        ["mappings[0].FilterCriteria: [] must be a mapping of fields"]
    );
}
