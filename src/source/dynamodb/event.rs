//! The DynamoDB Streams event record exactly as Lambda builds it (esm-spec.md §8): `eventID`,
//! `eventName`, `eventVersion`, `eventSource`, `awsRegion`, `eventSourceARN`, `dynamodb {...}` with only
//! the images the stream view type carries, `userIdentity` for TTL deletes, and AttributeValue JSON
//! for every type.

use aws_sdk_dynamodbstreams::types::{AttributeValue, Record as StreamsRecord};
use base64::Engine;
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// AttributeValue JSON: `{"S":..}`, `{"N":".."}`, `{"B":"<base64>"}`, `{"SS":[..]}`, `{"NS":[..]}`,
/// `{"BS":[..]}`, `{"M":{..}}`, `{"L":[..]}`, `{"NULL":true}`, `{"BOOL":..}`.
pub fn attribute(v: &AttributeValue) -> Value {
    let b64 = |b: &[u8]| Value::String(base64::engine::general_purpose::STANDARD.encode(b));
    match v {
        AttributeValue::S(s) => json!({ "S": s }),
        AttributeValue::N(n) => json!({ "N": n }),
        AttributeValue::B(b) => json!({ "B": b64(b.as_ref()) }),
        AttributeValue::Ss(v) => json!({ "SS": v }),
        AttributeValue::Ns(v) => json!({ "NS": v }),
        AttributeValue::Bs(v) => {
            json!({ "BS": v.iter().map(|b| b64(b.as_ref())).collect::<Vec<_>>() })
        }
        AttributeValue::M(m) => json!({ "M": item(m) }),
        AttributeValue::L(l) => json!({ "L": l.iter().map(attribute).collect::<Vec<_>>() }),
        AttributeValue::Null(b) => json!({ "NULL": b }),
        AttributeValue::Bool(b) => json!({ "BOOL": b }),
        // A type newer than this SDK: keep the record readable rather than failing the shard.
        _ => json!({ "NULL": true }),
    }
}

fn item(m: &HashMap<String, AttributeValue>) -> Map<String, Value> {
    m.iter().map(|(k, v)| (k.clone(), attribute(v))).collect()
}

/// Serializes one record's event entry; also returns its approximate creation time in epoch ms.
pub fn encode(r: &StreamsRecord, stream_arn: &str) -> (Vec<u8>, i64) {
    let mut entry = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            entry.insert(k.to_string(), v);
        }
    };
    put("eventID", r.event_id().map(Value::from));
    put("eventName", r.event_name().map(|n| Value::from(n.as_str())));
    put("eventVersion", r.event_version().map(Value::from));
    put(
        "eventSource",
        Some(Value::from(r.event_source().unwrap_or("aws:dynamodb"))),
    );
    put("awsRegion", r.aws_region().map(Value::from));
    put("eventSourceARN", Some(Value::from(stream_arn)));
    let mut created_ms = 0;
    if let Some(d) = r.dynamodb() {
        let mut ddb = Map::new();
        if let Some(t) = d.approximate_creation_date_time() {
            created_ms = t.to_millis().unwrap_or(0);
            // Epoch seconds, rounded down, as Lambda sends it.
            ddb.insert("ApproximateCreationDateTime".into(), Value::from(t.secs()));
        }
        if let Some(k) = d.keys() {
            ddb.insert("Keys".into(), Value::Object(item(k)));
        }
        // An item image always holds at least the key: an empty one is no image (some emulators
        // send `{}` where DynamoDB sends nothing).
        if let Some(i) = d.new_image().filter(|i| !i.is_empty()) {
            ddb.insert("NewImage".into(), Value::Object(item(i)));
        }
        if let Some(i) = d.old_image().filter(|i| !i.is_empty()) {
            ddb.insert("OldImage".into(), Value::Object(item(i)));
        }
        if let Some(s) = d.sequence_number() {
            ddb.insert("SequenceNumber".into(), Value::from(s));
        }
        if let Some(s) = d.size_bytes() {
            ddb.insert("SizeBytes".into(), Value::from(s));
        }
        if let Some(v) = d.stream_view_type() {
            ddb.insert("StreamViewType".into(), Value::from(v.as_str()));
        }
        put("dynamodb", Some(Value::Object(ddb)));
    }
    if let Some(id) = r.user_identity() {
        put(
            "userIdentity",
            Some(json!({ "type": id.r#type(), "principalId": id.principal_id() })),
        );
    }
    (
        serde_json::to_vec(&Value::Object(entry)).expect("JSON values serialize"),
        created_ms,
    )
}

/// The record's lane key ([`crate::model::lane_key`]) from its item's `Keys`, attribute names in
/// order, so every change to one item is in the same ParallelizationFactor lane (0 without keys).
pub fn item_key(r: &StreamsRecord) -> u64 {
    let Some(keys) = r.dynamodb().and_then(|d| d.keys()) else {
        return 0;
    };
    let mut names: Vec<&String> = keys.keys().collect();
    names.sort();
    let mut bytes = Vec::new();
    for name in names {
        bytes.extend_from_slice(name.as_bytes());
        bytes.push(0);
        if let Ok(v) = serde_json::to_vec(&attribute(&keys[name])) {
            bytes.extend_from_slice(&v);
        }
        bytes.push(0);
    }
    crate::model::lane_key(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodbstreams::primitives::{Blob, DateTime};
    use aws_sdk_dynamodbstreams::types::{Identity, OperationType, StreamRecord, StreamViewType};

    #[test]
    fn every_attribute_type() {
        let m = HashMap::from([("x".to_string(), AttributeValue::N("1".into()))]);
        let cases = [
            (AttributeValue::S("a".into()), json!({"S":"a"})),
            (AttributeValue::N("1.5".into()), json!({"N":"1.5"})),
            (
                AttributeValue::B(Blob::new(b"hi".to_vec())),
                json!({"B":"aGk="}),
            ),
            (
                AttributeValue::Ss(vec!["a".into(), "b".into()]),
                json!({"SS":["a","b"]}),
            ),
            (AttributeValue::Ns(vec!["1".into()]), json!({"NS":["1"]})),
            (
                AttributeValue::Bs(vec![Blob::new(b"hi".to_vec())]),
                json!({"BS":["aGk="]}),
            ),
            (AttributeValue::M(m), json!({"M":{"x":{"N":"1"}}})),
            (
                AttributeValue::L(vec![AttributeValue::Bool(true), AttributeValue::Null(true)]),
                json!({"L":[{"BOOL":true},{"NULL":true}]}),
            ),
        ];
        for (v, want) in cases {
            assert_eq!(attribute(&v), want);
        }
    }

    #[test]
    fn a_ttl_delete_matches_the_aws_shape() {
        let keys = HashMap::from([("Id".to_string(), AttributeValue::N("101".into()))]);
        let r = StreamsRecord::builder()
            .event_id("2")
            .event_name(OperationType::Remove)
            .event_version("1.1")
            .event_source("aws:dynamodb")
            .aws_region("us-west-2")
            .dynamodb(
                StreamRecord::builder()
                    .approximate_creation_date_time(DateTime::from_millis(1_479_499_740_999))
                    .set_keys(Some(keys.clone()))
                    .set_old_image(Some(keys))
                    .sequence_number("222")
                    .size_bytes(59)
                    .stream_view_type(StreamViewType::OldImage)
                    .build(),
            )
            .user_identity(
                Identity::builder()
                    .r#type("Service")
                    .principal_id("dynamodb.amazonaws.com")
                    .build(),
            )
            .build();
        let (bytes, ms) = encode(&r, "arn:aws:dynamodb:us-west-2:1:table/T/stream/x");
        assert_eq!(ms, 1_479_499_740_999);
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            v,
            json!({"eventID":"2","eventName":"REMOVE","eventVersion":"1.1","eventSource":"aws:dynamodb","awsRegion":"us-west-2",
                "eventSourceARN":"arn:aws:dynamodb:us-west-2:1:table/T/stream/x",
                "dynamodb":{"ApproximateCreationDateTime":1479499740,"Keys":{"Id":{"N":"101"}},"OldImage":{"Id":{"N":"101"}},
                    "SequenceNumber":"222","SizeBytes":59,"StreamViewType":"OLD_IMAGE"},
                "userIdentity":{"type":"Service","principalId":"dynamodb.amazonaws.com"}})
        );
    }

    #[test]
    fn the_lane_key_is_the_item_key_whatever_the_attribute_order() {
        let record = |keys: Vec<(&str, AttributeValue)>| {
            let keys: HashMap<String, AttributeValue> =
                keys.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            StreamsRecord::builder()
                .dynamodb(StreamRecord::builder().set_keys(Some(keys)).build())
                .build()
        };
        let (pk, sk) = (AttributeValue::S("a".into()), AttributeValue::N("1".into()));
        let one = record(vec![("pk", pk.clone()), ("sk", sk.clone())]);
        let same = record(vec![("sk", sk), ("pk", pk.clone())]);
        let other = record(vec![("pk", pk), ("sk", AttributeValue::N("2".into()))]);
        assert_eq!(item_key(&one), item_key(&same));
        assert_ne!(item_key(&one), item_key(&other));
        assert_eq!(item_key(&StreamsRecord::builder().build()), 0);
    }
}
