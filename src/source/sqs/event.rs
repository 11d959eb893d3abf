//! The SQS event record exactly as Lambda builds it (esm-spec.md §8): `messageId`, `receiptHandle`,
//! `body`, `attributes` (all strings), `messageAttributes` in Lambda's shape, `md5OfBody`,
//! `md5OfMessageAttributes`, `eventSource`, `eventSourceARN`, `awsRegion`.

use aws_sdk_sqs::types::Message;
use base64::Engine;
use serde_json::{json, Map, Value};

pub fn encode(m: &Message, queue_arn: &str, region: &str) -> Vec<u8> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sqs::primitives::Blob;
    use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName};

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
        let v: Value = serde_json::from_slice(&encode(
            &m,
            "arn:aws:sqs:us-east-2:123456789012:my-queue",
            "us-east-2",
        ))
        .unwrap();
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
    }
}
