//! The matcher against every operator, the tricky cases of esm-spec.md §7, and each source's view.

use base64::Engine;

use super::*;

/// True when `pattern` matches the JSON `event` (taken as it is: no source view).
fn m(pattern: &str, event: &str) -> bool {
    let p = Pattern::parse(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
    p.matches(&Json::parse(event.as_bytes()).expect("event is JSON"))
}

fn refused(pattern: &str) -> String {
    Pattern::parse(pattern).expect_err(pattern)
}

#[test]
fn equals_null_empty_and_types() {
    assert!(m(r#"{"a": ["x"]}"#, r#"{"a": "x"}"#));
    assert!(
        m(r#"{"a": ["y", "x"]}"#, r#"{"a": "x"}"#),
        "one of the values"
    );
    assert!(!m(r#"{"a": ["x"]}"#, r#"{"a": "X"}"#), "exact characters");
    assert!(
        !m(r#"{"a": ["1"]}"#, r#"{"a": 1}"#),
        "a string is not a number"
    );
    assert!(m(r#"{"a": [null]}"#, r#"{"a": null}"#));
    assert!(!m(r#"{"a": [null]}"#, r#"{}"#), "null is not missing");
    assert!(m(r#"{"a": [""]}"#, r#"{"a": ""}"#));
    assert!(!m(r#"{"a": [""]}"#, r#"{"a": null}"#));
    assert!(m(r#"{"a": [true]}"#, r#"{"a": true}"#));
    assert!(!m(r#"{"a": [true]}"#, r#"{"a": "true"}"#));
    assert!(
        m(r#"{}"#, r#"{"a": 1}"#),
        "the empty pattern matches everything"
    );
}

#[test]
fn numbers_match_on_their_text_and_ranges_by_value() {
    assert!(m(r#"{"n": [300]}"#, r#"{"n": 300}"#));
    assert!(!m(r#"{"n": [300]}"#, r#"{"n": 300.0}"#));
    assert!(!m(r#"{"n": [300.0]}"#, r#"{"n": 3.0e2}"#));
    assert!(m(r#"{"n": [{"numeric": ["=", 300]}]}"#, r#"{"n": 300.0}"#));
    assert!(m(r#"{"n": [{"numeric": ["=", 300]}]}"#, r#"{"n": 3.0e2}"#));
    let range = r#"{"n": [{"numeric": [">", 10, "<=", 20]}]}"#;
    for (v, want) in [
        ("10", false),
        ("10.5", true),
        ("20", true),
        ("20.01", false),
        ("\"15\"", false),
    ] {
        assert_eq!(m(range, &format!(r#"{{"n": {v}}}"#)), want, "{v}");
    }
    assert!(m(r#"{"n": [{"numeric": ["<", 0]}]}"#, r#"{"n": -1}"#));
    assert!(m(r#"{"n": [{"numeric": [">=", 5]}]}"#, r#"{"n": 5}"#));
    assert!(
        m(r#"{"n": [{"numeric": ["<=", 5, ">", 1]}]}"#, r#"{"n": 5}"#),
        "either order"
    );
}

#[test]
fn prefix_suffix_and_ignore_case() {
    assert!(m(r#"{"r": [{"prefix": "us-"}]}"#, r#"{"r": "us-east-1"}"#));
    assert!(!m(r#"{"r": [{"prefix": "us-"}]}"#, r#"{"r": "US-east-1"}"#));
    assert!(m(
        r#"{"r": [{"prefix": {"equals-ignore-case": "us-"}}]}"#,
        r#"{"r": "US-east-1"}"#
    ));
    assert!(m(r#"{"f": [{"suffix": ".png"}]}"#, r#"{"f": "a.png"}"#));
    assert!(!m(r#"{"f": [{"suffix": ".png"}]}"#, r#"{"f": "a.PNG"}"#));
    assert!(m(
        r#"{"f": [{"suffix": {"equals-ignore-case": ".png"}}]}"#,
        r#"{"f": "a.PNG"}"#
    ));
    assert!(m(
        r#"{"s": [{"equals-ignore-case": "ShiPPed"}]}"#,
        r#"{"s": "shipped"}"#
    ));
    assert!(!m(
        r#"{"s": [{"equals-ignore-case": "a"}]}"#,
        r#"{"s": "ab"}"#
    ));
    assert!(
        !m(r#"{"n": [{"prefix": "1"}]}"#, r#"{"n": 10}"#),
        "strings only"
    );
}

#[test]
fn anything_but() {
    let p = r#"{"s": [{"anything-but": ["a", "b"]}]}"#;
    assert!(m(p, r#"{"s": "c"}"#));
    assert!(!m(p, r#"{"s": "a"}"#));
    assert!(!m(p, r#"{}"#), "a missing field is not anything");
    assert!(
        m(r#"{"s": [{"anything-but": "a"}]}"#, r#"{"s": "b"}"#),
        "a single value"
    );
    assert!(!m(r#"{"n": [{"anything-but": 5}]}"#, r#"{"n": 5}"#));
    assert!(m(r#"{"n": [{"anything-but": 5}]}"#, r#"{"n": 6}"#));
    assert!(
        m(p, r#"{"s": ["a", "c"]}"#),
        "an array matches when one element is not excluded"
    );
    assert!(!m(p, r#"{"s": ["a", "b"]}"#));
}

#[test]
fn exists() {
    let yes = r#"{"a": [{"exists": true}]}"#;
    let no = r#"{"a": [{"exists": false}]}"#;
    assert!(m(yes, r#"{"a": 1}"#) && !m(no, r#"{"a": 1}"#));
    assert!(m(yes, r#"{"a": null}"#), "null is a value");
    assert!(
        !m(yes, r#"{"b": 1}"#) && m(no, r#"{"b": 1}"#),
        "exists false on a missing key"
    );
    assert!(m(no, r#"{"a": {"b": 1}}"#), "an object is not a leaf");
    assert!(
        m(no, r#"{"a": []}"#) && !m(yes, r#"{"a": []}"#),
        "an empty array holds nothing"
    );
    assert!(
        m(r#"{"x": {"y": [{"exists": false}]}}"#, r#"{}"#),
        "nested, all missing"
    );
    assert!(m(r#"{"x": {"y": [{"exists": false}]}}"#, r#"{"x": "s"}"#));
}

#[test]
fn arrays_match_when_an_element_does() {
    assert!(m(r#"{"t": ["b"]}"#, r#"{"t": ["a", "b"]}"#));
    assert!(
        m(r#"{"t": ["b"]}"#, r#"{"t": [["a"], ["b"]]}"#),
        "nested arrays flatten"
    );
    assert!(!m(r#"{"t": ["c"]}"#, r#"{"t": ["a", "b"]}"#));
    assert!(m(r#"{"i": {"k": [2]}}"#, r#"{"i": [{"k": 1}, {"k": 2}]}"#));
    // Fields of one nested pattern must match within the same element.
    let both = r#"{"i": {"k": [1], "v": ["y"]}}"#;
    assert!(!m(
        both,
        r#"{"i": [{"k": 1, "v": "x"}, {"k": 2, "v": "y"}]}"#
    ));
    assert!(m(
        both,
        r#"{"i": [{"k": 1, "v": "x"}, {"k": 1, "v": "y"}]}"#
    ));
}

#[test]
fn nested_fields_and_and() {
    let p = r#"{"a": {"b": ["x"]}, "c": [1]}"#;
    assert!(m(p, r#"{"a": {"b": "x"}, "c": 1}"#));
    assert!(
        !m(p, r#"{"a": {"b": "x"}, "c": 2}"#),
        "every field must match"
    );
    assert!(!m(p, r#"{"a": "x", "c": 1}"#));
}

#[test]
fn or_at_any_level() {
    let p = r#"{"$or": [{"a": [1]}, {"b": [2]}]}"#;
    assert!(m(p, r#"{"a": 1}"#) && m(p, r#"{"b": 2}"#) && !m(p, r#"{"a": 2, "b": 1}"#));
    let nested =
        r#"{"x": {"k": ["v"], "$or": [{"n": [{"numeric": [">", 5]}]}, {"s": [{"prefix": "p"}]}]}}"#;
    assert!(m(nested, r#"{"x": {"k": "v", "n": 6}}"#));
    assert!(m(nested, r#"{"x": {"k": "v", "s": "pq"}}"#));
    assert!(
        !m(nested, r#"{"x": {"k": "w", "s": "pq"}}"#),
        "AND with the level's fields"
    );
    assert!(!m(nested, r#"{"x": {"k": "v", "n": 5}}"#));
}

#[test]
fn opaque_data_matches_no_pattern_on_it() {
    let mut ev = Json::parse(br#"{"meta": "m"}"#).unwrap();
    ev.as_obj_mut().unwrap().insert("data".into(), Json::Opaque);
    for p in [
        r#"{"data": ["x"]}"#,
        r#"{"data": [{"exists": false}]}"#,
        r#"{"data": [{"exists": true}]}"#,
        r#"{"data": [{"anything-but": "x"}]}"#,
        r#"{"data": {"k": [{"exists": false}]}}"#,
    ] {
        assert!(!Pattern::parse(p).unwrap().matches(&ev), "{p}");
    }
    assert!(Pattern::parse(r#"{"meta": ["m"]}"#).unwrap().matches(&ev));
}

#[test]
fn bad_patterns_say_where_and_what() {
    for (p, want) in [
        ("nope", "is not valid JSON"),
        ("[1]", "must be a JSON object of fields, not an array"),
        (
            r#"{"a": "x"}"#,
            r#"at "a": a string must be an array of values to match (e.g. ["x"]) or an object of fields"#,
        ),
        (r#"{"a": []}"#, r#"at "a": an empty array matches nothing"#),
        (
            r#"{"a": {"b": [[1]]}}"#,
            r#"at "a.b": a match value must not be an array"#,
        ),
        (
            r#"{"a": [{"wildcard": "x*"}]}"#,
            r#"at "a": "wildcard" is not supported by Lambda event filtering"#,
        ),
        (
            r#"{"a": [{"cidr": "10.0.0.0/8"}]}"#,
            r#"at "a": "cidr" is not supported"#,
        ),
        (
            r#"{"a": [{"regex": "x"}]}"#,
            r#"at "a": "regex" is not a known operator"#,
        ),
        (
            r#"{"a": [{"prefix": "x", "suffix": "y"}]}"#,
            "an operator object must have exactly one key, not 2",
        ),
        (
            r#"{"a": [{"anything-but": {"prefix": "x"}}]}"#,
            r#""anything-but" with prefix is not supported by Lambda event filtering"#,
        ),
        (
            r#"{"a": [{"anything-but": {"equals-ignore-case": "x"}}]}"#,
            r#""anything-but" with equals-ignore-case is not supported"#,
        ),
        (
            r#"{"a": [{"anything-but": []}]}"#,
            "must list at least one value",
        ),
        (
            r#"{"a": [{"anything-but": [null]}]}"#,
            "takes strings and numbers, not null",
        ),
        (
            r#"{"a": [{"numeric": [">", "5"]}]}"#,
            r#""5" after "\">\"" is not a number"#,
        ),
        (
            r#"{"a": [{"numeric": ["!=", 5]}]}"#,
            r#""!=" is not a numeric operator"#,
        ),
        (
            r#"{"a": [{"numeric": [">", 5, ">", 6]}]}"#,
            "needs one lower bound",
        ),
        (
            r#"{"a": [{"numeric": [">", 10, "<", 5]}]}"#,
            "lower bound 10 is not below its upper bound 5",
        ),
        (
            r#"{"a": [{"numeric": [">", 1, "<"]}]}"#,
            "\"numeric\" takes",
        ),
        (
            r#"{"a": [{"exists": "yes"}]}"#,
            r#""exists" takes true or false, not a string"#,
        ),
        (
            r#"{"a": [{"prefix": 1}]}"#,
            r#""prefix" takes a string, not a number"#,
        ),
        (
            r#"{"a": [{"prefix": {"wildcard": "x"}}]}"#,
            r#""prefix" takes a string or {"equals-ignore-case""#,
        ),
        (
            r#"{"$or": {"a": [1]}}"#,
            r#"at "$or": must be an array of at least two patterns, not an object"#,
        ),
        (
            r#"{"$or": [{"a": [1]}]}"#,
            r#"at "$or": must list at least two patterns, not 1"#,
        ),
        (
            r#"{"x": {"$or": [{"a": [1]}, 2]}}"#,
            r#"at "x.$or": each alternative must be a pattern object, not a number"#,
        ),
        (
            r#"{"$or": [{"a": [1]}, {}]}"#,
            "an alternative must not be empty",
        ),
    ] {
        let got = refused(p);
        assert!(got.contains(want), "{p}: {got:?} lacks {want:?}");
    }
}

fn b64(s: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn criteria(patterns: &[&str]) -> FilterCriteria {
    FilterCriteria::new(
        patterns
            .iter()
            .map(|p| Pattern::parse(p).unwrap())
            .collect(),
    )
    .unwrap()
}

#[test]
fn kinesis_view_lifts_the_record_and_decodes_data() {
    let entry = |data: &[u8]| {
        format!(
            r#"{{"kinesis":{{"kinesisSchemaVersion":"1.0","partitionKey":"pk","sequenceNumber":"1","data":"{}","approximateArrivalTimestamp":1.5}},"eventSource":"aws:kinesis","eventName":"aws:kinesis:record"}}"#,
            b64(data)
        )
        .into_bytes()
    };
    let on_data = criteria(&[r#"{"data": {"t": [{"numeric": [">", 50]}]}}"#]);
    assert!(on_data.matches(SourceKind::Kinesis, &entry(br#"{"t": 51}"#)));
    assert!(!on_data.matches(SourceKind::Kinesis, &entry(br#"{"t": 50}"#)));
    assert!(!on_data.matches(SourceKind::Kinesis, &entry(b"not json")));
    let on_meta = criteria(&[r#"{"partitionKey": ["pk"], "eventSource": ["aws:kinesis"]}"#]);
    assert!(on_meta.matches(SourceKind::Kinesis, &entry(b"not json")));
    let absent = criteria(&[r#"{"data": [{"exists": false}]}"#]);
    assert!(!absent.matches(SourceKind::Kinesis, &entry(b"\xff\xfe")));
}

#[test]
fn dynamodb_view_is_the_record() {
    let entry = br#"{"eventName":"INSERT","dynamodb":{"Keys":{"Id":{"N":"101"}},"NewImage":{"status":{"S":"shipped"},"Id":{"N":"101"}}}}"#;
    let c = criteria(&[
        r#"{"eventName": ["INSERT"], "dynamodb": {"NewImage": {"status": {"S": ["shipped"]}}}}"#,
    ]);
    assert!(c.matches(SourceKind::DynamoDb, entry));
    let c = criteria(&[r#"{"dynamodb": {"Keys": {"Id": {"N": [{"prefix": "10"}]}}}}"#]);
    assert!(
        c.matches(SourceKind::DynamoDb, entry),
        "typed N values are strings"
    );
    assert!(!criteria(&[r#"{"eventName": ["REMOVE"]}"#]).matches(SourceKind::DynamoDb, entry));
}

#[test]
fn sqs_view_parses_a_json_body_and_keeps_a_string_one() {
    let entry = |body: &str| {
        serde_json::to_vec(&serde_json::json!({"messageId": "1", "body": body,
            "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {}}))
        .unwrap()
    };
    let json = criteria(&[r#"{"body": {"kind": ["order"]}}"#]);
    assert!(json.matches(SourceKind::Sqs, &entry(r#"{"kind":"order"}"#)));
    assert!(!json.matches(SourceKind::Sqs, &entry("kind order")));
    let plain = criteria(&[r#"{"body": [{"prefix": "kind"}]}"#]);
    assert!(plain.matches(SourceKind::Sqs, &entry("kind order")));
    assert!(
        !plain.matches(SourceKind::Sqs, &entry(r#"{"kind":"order"}"#)),
        "a JSON body is not a string"
    );
    let attrs = criteria(&[r#"{"attributes": {"ApproximateReceiveCount": ["1"]}}"#]);
    assert!(attrs.matches(SourceKind::Sqs, &entry("x")));
}

#[test]
fn kafka_view_decodes_value_and_leaves_metadata() {
    let entry = |value: Option<&[u8]>| {
        let mut e = serde_json::json!({"topic": "t", "partition": 0, "offset": 15,
            "timestamp": 1, "timestampType": "CREATE_TIME", "key": b64(b"k"), "headers": []});
        if let Some(v) = value {
            e["value"] = b64(v).into();
        }
        serde_json::to_vec(&e).unwrap()
    };
    let on_value = criteria(&[r#"{"value": {"device": [{"prefix": "AB"}]}}"#]);
    assert!(on_value.matches(SourceKind::Kafka, &entry(Some(br#"{"device":"AB12"}"#))));
    assert!(!on_value.matches(SourceKind::Kafka, &entry(Some(b"AB12"))));
    assert!(!on_value.matches(SourceKind::Kafka, &entry(Some(b"\xff{}"))));
    assert!(!on_value.matches(SourceKind::Kafka, &entry(None)));
    let on_meta = criteria(&[r#"{"topic": ["t"], "partition": [0]}"#]);
    assert!(on_meta.matches(SourceKind::Kafka, &entry(Some(b"\xff"))));
}

#[test]
fn filters_are_ored() {
    let c = criteria(&[r#"{"a": [1]}"#, r#"{"b": [2]}"#]);
    assert!(c.matches(SourceKind::DynamoDb, br#"{"b": 2}"#));
    assert!(!c.matches(SourceKind::DynamoDb, br#"{"a": 2}"#));
    assert!(FilterCriteria::new(Vec::new()).is_none());
}
