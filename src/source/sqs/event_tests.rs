//! [`encode`] against the entry built as a `serde_json::Value` and serialized by serde_json (the
//! encoder it replaced): the same bytes, for any message.

use super::*;
use aws_sdk_sqs::primitives::Blob;
use aws_sdk_sqs::types::MessageSystemAttributeName;
use base64::Engine;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

/// The entry as a `serde_json::Value`, serialized: what [`encode`] must write, byte for byte.
fn by_serde(m: &Message, queue_arn: &str, region: &str) -> Vec<u8> {
    let b64 = |b: &[u8]| Value::String(base64::engine::general_purpose::STANDARD.encode(b));
    let attributes: Map<String, Value> = m
        .attributes()
        .map(|a| {
            a.iter()
                .map(|(k, v)| (k.as_str().to_string(), Value::String(v.clone())))
                .collect()
        })
        .unwrap_or_default();
    let message_attributes: Map<String, Value> = m
        .message_attributes()
        .map(|a| {
            a.iter()
                .map(|(name, v)| {
                    let mut o = Map::new();
                    if let Some(s) = v.string_value() {
                        o.insert("stringValue".into(), Value::String(s.to_string()));
                    }
                    if let Some(b) = v.binary_value() {
                        o.insert("binaryValue".into(), b64(b.as_ref()));
                    }
                    o.insert("stringListValues".into(), json!(v.string_list_values()));
                    o.insert(
                        "binaryListValues".into(),
                        Value::Array(
                            v.binary_list_values()
                                .iter()
                                .map(|b| b64(b.as_ref()))
                                .collect(),
                        ),
                    );
                    o.insert("dataType".into(), Value::String(v.data_type().to_string()));
                    (name.clone(), Value::Object(o))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut entry = Map::new();
    entry.insert("messageId".into(), json!(m.message_id()));
    entry.insert("receiptHandle".into(), json!(m.receipt_handle()));
    entry.insert("body".into(), json!(m.body().unwrap_or_default()));
    entry.insert("attributes".into(), Value::Object(attributes));
    entry.insert(
        "messageAttributes".into(),
        Value::Object(message_attributes),
    );
    entry.insert("md5OfBody".into(), json!(m.md5_of_body()));
    if let Some(md5) = m.md5_of_message_attributes() {
        entry.insert("md5OfMessageAttributes".into(), json!(md5));
    }
    entry.insert("eventSource".into(), json!("aws:sqs"));
    entry.insert("eventSourceARN".into(), json!(queue_arn));
    entry.insert("awsRegion".into(), json!(region));
    serde_json::to_vec(&Value::Object(entry)).expect("JSON values serialize")
}

#[test]
fn matches_the_aws_example() {
    let m = Message::builder()
        .message_id("059f36b4-87a3-44ab-83d2-661975830a7d")
        .receipt_handle("AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a")
        .body("Test message.")
        .attributes(MessageSystemAttributeName::ApproximateReceiveCount, "1")
        .attributes(MessageSystemAttributeName::SentTimestamp, "1545082649183")
        .attributes(
            MessageSystemAttributeName::SenderId,
            "AIDAIENQZJOLO23YVJ4VO",
        )
        .attributes(
            MessageSystemAttributeName::ApproximateFirstReceiveTimestamp,
            "1545082649185",
        )
        .message_attributes(
            "s",
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value("v")
                .build()
                .unwrap(),
        )
        .message_attributes(
            "b",
            MessageAttributeValue::builder()
                .data_type("Binary")
                .binary_value(Blob::new(b"hi".to_vec()))
                .build()
                .unwrap(),
        )
        .md5_of_body("e4e68fb7bd0e697a0ae8f1bb342846b3")
        .build();
    let bytes = encode(
        &m,
        "arn:aws:sqs:us-east-2:123456789012:my-queue",
        "us-east-2",
    );
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        v,
        json!({"messageId":"059f36b4-87a3-44ab-83d2-661975830a7d","receiptHandle":"AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a",
            "body":"Test message.","attributes":{"ApproximateReceiveCount":"1","SentTimestamp":"1545082649183",
            "SenderId":"AIDAIENQZJOLO23YVJ4VO","ApproximateFirstReceiveTimestamp":"1545082649185"},
            "messageAttributes":{
                "s":{"stringValue":"v","stringListValues":[],"binaryListValues":[],"dataType":"String"},
                "b":{"binaryValue":"aGk=","stringListValues":[],"binaryListValues":[],"dataType":"Binary"}},
            "md5OfBody":"e4e68fb7bd0e697a0ae8f1bb342846b3","eventSource":"aws:sqs",
            "eventSourceARN":"arn:aws:sqs:us-east-2:123456789012:my-queue","awsRegion":"us-east-2"})
    );
    assert_eq!(
        bytes,
        by_serde(
            &m,
            "arn:aws:sqs:us-east-2:123456789012:my-queue",
            "us-east-2"
        )
    );
}

#[test]
fn a_message_without_its_fields_writes_nulls() {
    let m = Message::builder().build();
    let bytes = encode(&m, "arn:aws:sqs:us-east-1:1:q", "us-east-1");
    assert_eq!(
        bytes,
        by_serde(&m, "arn:aws:sqs:us-east-1:1:q", "us-east-1")
    );
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["messageId"], Value::Null);
    assert_eq!(v["body"], json!(""));
}

/// Strings with the characters JSON escapes, often, and any other text.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,80}",
        "[\"\\\\\u{0}-\u{1f}a-z\u{7f}é]{0,80}",
        "[a-z0-9 ]{30,100}[\"\n]?[a-z]{0,40}",
    ]
}

fn attribute_value() -> impl Strategy<Value = MessageAttributeValue> {
    (
        "String|Number|Binary|String\\.[a-z\"]{0,5}",
        proptest::option::of(text()),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
        proptest::collection::vec(text(), 0..3),
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..10), 0..3),
    )
        .prop_map(|(data_type, s, b, sl, bl)| {
            MessageAttributeValue::builder()
                .data_type(data_type)
                .set_string_value(s)
                .set_binary_value(b.map(Blob::new))
                .set_string_list_values(Some(sl))
                .set_binary_list_values(Some(bl.into_iter().map(Blob::new).collect()))
                .build()
                .unwrap()
        })
}

proptest! {
    #[test]
    fn writes_what_serde_writes(
        id in proptest::option::of("[0-9a-f-]{36}|\\PC{0,8}"),
        handle in proptest::option::of("[A-Za-z0-9+/=]{0,200}"),
        body in proptest::option::of(text()),
        md5 in proptest::option::of("[0-9a-f]{32}|\\PC{0,4}"),
        md5_attributes in proptest::option::of("[0-9a-f]{32}"),
        attributes in proptest::collection::vec(
            ("SenderId|SentTimestamp|ApproximateReceiveCount|MessageGroupId|AWSTraceHeader|[A-Za-z\"]{1,12}", text()),
            0..6,
        ),
        message_attributes in proptest::collection::vec((text(), attribute_value()), 0..4),
        arn in "arn:aws:sqs:[a-z0-9-]{1,12}:[0-9]{12}:\\PC{1,10}",
        region in "[a-z0-9-]{1,12}|\\PC{0,4}",
    ) {
        let mut b = Message::builder()
            .set_message_id(id)
            .set_receipt_handle(handle)
            .set_body(body)
            .set_md5_of_body(md5)
            .set_md5_of_message_attributes(md5_attributes);
        for (k, v) in attributes {
            b = b.attributes(MessageSystemAttributeName::from(k.as_str()), v);
        }
        for (k, v) in message_attributes {
            b = b.message_attributes(k, v);
        }
        let m = b.build();
        let ours = encode(&m, &arn, &region);
        prop_assert_eq!(
            String::from_utf8(ours).unwrap(),
            String::from_utf8(by_serde(&m, &arn, &region)).unwrap()
        );
    }
}
