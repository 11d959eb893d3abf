//! Bad input never panics: the `batchItemFailures` parser gets arbitrary bytes and arbitrary JSON;
//! the Kinesis, DynamoDB Streams and SQS event encoders get arbitrary field values (any data bytes,
//! strings, timestamps, AttributeValue trees, message attributes). Each must not panic and must
//! keep its promise: sorted, distinct, in-batch failure indices; JSON that carries the data intact.

use aws_sdk_dynamodbstreams::primitives::{Blob, DateTime};
use aws_sdk_dynamodbstreams::types::{
    AttributeValue, Identity, OperationType, Record as StreamsRecord, StreamRecord, StreamViewType,
};
use aws_sdk_sqs::types::{Message, MessageAttributeValue, MessageSystemAttributeName};
use base64::Engine;
use proptest::collection::{hash_map, vec};
use proptest::prelude::*;
use proptest::sample::select;
use sluice::dispatch::response::{parse as parse_response, ItemFailures};
use sluice::source::{dynamodb, kinesis, sqs};

fn opt_string() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(any::<String>())
}

fn check_failures(got: ItemFailures, batch: usize) -> Result<(), TestCaseError> {
    if let ItemFailures::Failed(f) = got {
        prop_assert!(!f.is_empty());
        prop_assert!(f.windows(2).all(|w| w[0] < w[1]), "sorted, distinct");
        prop_assert!(f.iter().all(|&i| i < batch));
    }
    Ok(())
}

fn json_leaf() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(Into::into),
        any::<f64>().prop_map(Into::into),
        select(vec![
            "1",
            "2",
            "3",
            "",
            "batchItemFailures",
            "itemIdentifier"
        ])
        .prop_map(Into::into),
        any::<String>().prop_map(Into::into),
    ]
}

fn json_tree() -> impl Strategy<Value = serde_json::Value> {
    json_leaf().prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(serde_json::Value::Array),
            vec(
                (
                    select(vec!["batchItemFailures", "itemIdentifier", "x"]),
                    inner
                ),
                0..4
            )
            .prop_map(|kv| serde_json::Value::Object(
                kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
            )),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn batch_item_failures_any_bytes(body in vec(any::<u8>(), 0..256), ids in vec(any::<String>(), 0..8)) {
        let got = parse_response(&body, ids.iter().map(String::as_str));
        check_failures(got, ids.len())?;
    }

    #[test]
    fn batch_item_failures_any_json(
        failures in prop_oneof![
            json_tree(),
            vec(prop_oneof![
                3 => select(vec!["1", "2", "3", "4", ""]).prop_map(|id| serde_json::json!({ "itemIdentifier": id })),
                1 => json_tree(),
            ], 0..6).prop_map(serde_json::Value::Array),
        ],
        wrap in any::<bool>(),
        ids in vec(select(vec!["1", "2", "3", "1"]), 0..6),
    ) {
        let body = if wrap {
            serde_json::json!({ "batchItemFailures": failures })
        } else {
            failures
        };
        let got = parse_response(body.to_string().as_bytes(), ids.iter().copied());
        check_failures(got, ids.len())?;
    }
}

fn attribute() -> impl Strategy<Value = AttributeValue> {
    let blob = || vec(any::<u8>(), 0..16).prop_map(Blob::new);
    let leaf = prop_oneof![
        any::<String>().prop_map(AttributeValue::S),
        any::<String>().prop_map(AttributeValue::N),
        blob().prop_map(AttributeValue::B),
        vec(any::<String>(), 0..3).prop_map(AttributeValue::Ss),
        vec(any::<String>(), 0..3).prop_map(AttributeValue::Ns),
        vec(blob(), 0..3).prop_map(AttributeValue::Bs),
        any::<bool>().prop_map(AttributeValue::Null),
        any::<bool>().prop_map(AttributeValue::Bool),
    ];
    leaf.prop_recursive(6, 64, 5, |inner| {
        prop_oneof![
            hash_map(any::<String>(), inner.clone(), 0..5).prop_map(AttributeValue::M),
            vec(inner, 0..5).prop_map(AttributeValue::L),
        ]
    })
}

fn item() -> impl Strategy<Value = Option<std::collections::HashMap<String, AttributeValue>>> {
    proptest::option::of(hash_map(any::<String>(), attribute(), 0..4))
}

prop_compose! {
    fn stream_record()(
        created in proptest::option::of((any::<i64>(), 0u32..1_000_000_000)),
        keys in item(),
        new_image in item(),
        old_image in item(),
        sequence in opt_string(),
        size in proptest::option::of(any::<i64>()),
        view in opt_string(),
    ) -> StreamRecord {
        StreamRecord::builder()
            .set_approximate_creation_date_time(created.map(|(s, n)| DateTime::from_secs_and_nanos(s, n)))
            .set_keys(keys)
            .set_new_image(new_image)
            .set_old_image(old_image)
            .set_sequence_number(sequence)
            .set_size_bytes(size)
            .set_stream_view_type(view.map(|v| StreamViewType::from(v.as_str())))
            .build()
    }
}

prop_compose! {
    fn ddb_record()(
        event_id in opt_string(),
        event_name in opt_string(),
        version in opt_string(),
        source in opt_string(),
        region in opt_string(),
        dynamodb in proptest::option::of(stream_record()),
        identity in proptest::option::of((opt_string(), opt_string())),
    ) -> StreamsRecord {
        StreamsRecord::builder()
            .set_event_id(event_id)
            .set_event_name(event_name.map(|n| OperationType::from(n.as_str())))
            .set_event_version(version)
            .set_event_source(source)
            .set_aws_region(region)
            .set_dynamodb(dynamodb)
            .set_user_identity(identity.map(|(t, p)| {
                Identity::builder().set_type(t).set_principal_id(p).build()
            }))
            .build()
    }
}

prop_compose! {
    fn message_attribute()(
        data_type in any::<String>(),
        string in opt_string(),
        binary in proptest::option::of(vec(any::<u8>(), 0..16)),
        strings in vec(any::<String>(), 0..3),
        binaries in vec(vec(any::<u8>(), 0..8), 0..3),
    ) -> MessageAttributeValue {
        MessageAttributeValue::builder()
            .data_type(data_type)
            .set_string_value(string)
            .set_binary_value(binary.map(aws_sdk_sqs::primitives::Blob::new))
            .set_string_list_values(Some(strings))
            .set_binary_list_values(Some(binaries.into_iter().map(aws_sdk_sqs::primitives::Blob::new).collect()))
            .build()
            .expect("data_type is set")
    }
}

prop_compose! {
    fn sqs_message()(
        id in opt_string(),
        receipt in opt_string(),
        body in opt_string(),
        md5 in opt_string(),
        md5_attributes in opt_string(),
        attributes in proptest::option::of(hash_map(
            prop_oneof![
                select(vec!["SentTimestamp", "MessageGroupId", "ApproximateReceiveCount"]).prop_map(String::from),
                any::<String>(),
            ],
            any::<String>(),
            0..4,
        )),
        message_attributes in proptest::option::of(hash_map(any::<String>(), message_attribute(), 0..3)),
    ) -> Message {
        Message::builder()
            .set_message_id(id)
            .set_receipt_handle(receipt)
            .set_body(body)
            .set_md5_of_body(md5)
            .set_md5_of_message_attributes(md5_attributes)
            .set_attributes(attributes.map(|a| {
                a.into_iter()
                    .map(|(k, v)| (MessageSystemAttributeName::from(k.as_str()), v))
                    .collect()
            }))
            .set_message_attributes(message_attributes)
            .build()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn kinesis_encode_any_record(
        arn in any::<String>(),
        region in any::<String>(),
        identity in any::<String>(),
        shard in any::<String>(),
        sequence in any::<String>(),
        key in any::<String>(),
        data in vec(any::<u8>(), 0..512),
        arrival_ms in any::<i64>(),
        encryption in opt_string(),
    ) {
        let ctx = kinesis::EventContext::new(arn, region, identity);
        let bytes = kinesis::event::encode(&ctx, &shard, &sequence, &key, kinesis::event::Data::Bytes(&data), arrival_ms, encryption.as_deref());
        let v: serde_json::Value = serde_json::from_slice(&bytes).expect("an event entry is JSON");
        let b64 = v["kinesis"]["data"].as_str().expect("data is a string");
        prop_assert_eq!(base64::engine::general_purpose::STANDARD.decode(b64).unwrap(), data);
        prop_assert_eq!(v["kinesis"]["sequenceNumber"].as_str(), Some(sequence.as_str()));
    }

    #[test]
    fn dynamodb_encode_any_record(r in ddb_record(), arn in any::<String>()) {
        let (bytes, _created_ms) = dynamodb::event::encode(&r, &arn);
        let v: serde_json::Value = serde_json::from_slice(&bytes).expect("an event entry is JSON");
        prop_assert_eq!(v["eventSourceARN"].as_str(), Some(arn.as_str()));
    }

    #[test]
    fn dynamodb_attribute_any_tree(a in attribute()) {
        let v = dynamodb::event::attribute(&a);
        prop_assert!(v.is_object() && v.as_object().unwrap().len() == 1);
    }

    #[test]
    fn sqs_encode_any_message(m in sqs_message(), arn in any::<String>(), region in any::<String>()) {
        let bytes = sqs::event::encode(&m, &arn, &region);
        let v: serde_json::Value = serde_json::from_slice(&bytes).expect("an event entry is JSON");
        prop_assert_eq!(v["body"].as_str(), Some(m.body().unwrap_or_default()));
        prop_assert_eq!(v["eventSourceARN"].as_str(), Some(arn.as_str()));
    }
}
