use super::*;
use crate::batch::{self, payload_size_in, Batcher, MAX_PAYLOAD_BYTES};
use crate::model::{EventFormat, KafkaCluster};
use aws_lambda_events::event::kafka::KafkaEvent;
use serde_json::{json, Value};

const MSK_ARN: &str = "arn:aws:kafka:sa-east-1:123456789012:cluster/vpc-2priv-2pub/751d2973-a626-431c-9d4e-d7975eb44dd7-2";

/// The record of AWS's example event (esm-spec.md §8).
fn example() -> KafkaRecord {
    KafkaRecord {
        topic: "mytopic".into(),
        partition: 0,
        offset: 15,
        timestamp: Some(1_545_084_650_987),
        timestamp_type: TimestampType::CreateTime,
        key: Some(b"recordKey".to_vec()),
        value: Some(b"Hello, this is a test.".to_vec()),
        headers: vec![("headerKey".into(), Some(b"headerValue".to_vec()))],
    }
}

fn entry(r: &KafkaRecord) -> Value {
    serde_json::from_slice(&r.entry()).unwrap()
}

#[test]
fn entry_matches_the_aws_example_field_by_field_and_in_order() {
    let r = example();
    let bytes = r.entry();
    let text = std::str::from_utf8(&bytes).unwrap();
    assert_eq!(
        text,
        r#"{"topic":"mytopic","partition":0,"offset":15,"timestamp":1545084650987,"timestampType":"CREATE_TIME","key":"cmVjb3JkS2V5","value":"SGVsbG8sIHRoaXMgaXMgYSB0ZXN0Lg==","headers":[{"headerKey":[104,101,97,100,101,114,86,97,108,117,101]}]}"#
    );
    let v = entry(&r);
    assert_eq!(v["topic"], "mytopic");
    assert_eq!(v["partition"], 0);
    assert_eq!(v["offset"], 15);
    assert_eq!(v["timestamp"], 1_545_084_650_987_i64);
    assert_eq!(v["timestampType"], "CREATE_TIME");
    assert_eq!(v["key"], "cmVjb3JkS2V5");
    assert_eq!(v["value"], "SGVsbG8sIHRoaXMgaXMgYSB0ZXN0Lg==");
    assert_eq!(
        v["headers"],
        json!([{"headerKey":[104,101,97,100,101,114,86,97,108,117,101]}])
    );
}

#[test]
fn timestamp_types_are_named_as_aws_names_them() {
    for (t, name) in [
        (TimestampType::CreateTime, "CREATE_TIME"),
        (TimestampType::LogAppendTime, "LOG_APPEND_TIME"),
        (TimestampType::NoTimestampType, "NO_TIMESTAMP_TYPE"),
    ] {
        let r = KafkaRecord {
            timestamp_type: t,
            ..example()
        };
        assert_eq!(entry(&r)["timestampType"], name);
    }
}

#[test]
fn null_key_and_value_are_left_out_and_empty_ones_kept() {
    let tombstone = KafkaRecord {
        key: None,
        value: None,
        ..example()
    };
    let v = entry(&tombstone);
    let o = v.as_object().unwrap();
    assert!(!o.contains_key("key") && !o.contains_key("value"), "{v}");
    let empty = KafkaRecord {
        key: Some(vec![]),
        value: Some(vec![]),
        ..example()
    };
    let v = entry(&empty);
    assert_eq!((&v["key"], &v["value"]), (&json!(""), &json!("")));
}

#[test]
fn headers_are_signed_bytes_in_order_with_repeats_and_null_as_an_empty_object() {
    let r = KafkaRecord {
        headers: vec![
            ("b".into(), Some("ë".as_bytes().to_vec())),
            ("a".into(), Some(vec![0, 127, 128, 255])),
            ("b".into(), Some(vec![])),
            ("gone".into(), None),
        ],
        ..example()
    };
    assert_eq!(
        entry(&r)["headers"],
        json!([{"b":[-61,-85]},{"a":[0,127,-128,-1]},{"b":[]},{}])
    );
    let none = KafkaRecord {
        headers: vec![],
        ..example()
    };
    assert_eq!(entry(&none)["headers"], json!([]));
}

#[test]
fn keys_values_and_header_names_are_escaped() {
    let r = KafkaRecord {
        topic: "we\"ird".into(),
        headers: vec![("q\"\\\n".into(), Some(vec![1]))],
        ..example()
    };
    let v = entry(&r);
    assert_eq!(v["topic"], "we\"ird");
    assert_eq!(v["headers"], json!([{"q\"\\\n":[1]}]));
}

#[test]
fn the_engine_record_carries_the_offset_and_the_timestamp() {
    let r = example().to_record(99);
    assert_eq!(r.sequence.0, "15");
    assert_eq!(r.arrival_ms, 1_545_084_650_987);
    assert_eq!(r.event, example().entry());
    let no_time = KafkaRecord {
        timestamp: None,
        timestamp_type: TimestampType::NoTimestampType,
        offset: 1_000_000_000_000,
        ..example()
    };
    let rec = no_time.to_record(1_700_000_000_000);
    assert_eq!(rec.arrival_ms, 1_700_000_000_000);
    assert_eq!(rec.sequence.0, "1000000000000");
    assert_eq!(entry(&no_time)["timestamp"], NO_TIMESTAMP);
    let negative = KafkaRecord {
        timestamp: Some(-1),
        ..example()
    };
    assert_eq!(negative.to_record(5).arrival_ms, 5);
}

fn records(n: i64, partition: i32) -> Vec<KafkaRecord> {
    (0..n)
        .map(|i| KafkaRecord {
            topic: "orders.v1".into(),
            partition,
            offset: 40 + i,
            timestamp: Some(1_700_000_000_000 + i),
            timestamp_type: if i % 2 == 0 {
                TimestampType::CreateTime
            } else {
                TimestampType::LogAppendTime
            },
            key: (i != 1).then(|| format!("k{i}").into_bytes()),
            value: (i != 2).then(|| vec![0xff, 0x00, i as u8]),
            headers: vec![
                ("trace".into(), Some(vec![0xc3, 0xab, i as u8])),
                ("trace".into(), Some(b"x".to_vec())),
            ],
        })
        .collect()
}

#[test]
fn the_msk_event_is_exact_and_parses_with_an_independent_parser() {
    let cluster = KafkaCluster::msk(MSK_ARN, &["b-2.x:9092", "b-1.x:9092"]);
    let format = EventFormat::kafka(&cluster, "orders.v1", 3);
    assert_eq!(format.batch_info_key, "KafkaBatchInfo");
    let kafka = records(3, 3);
    let recs: Vec<_> = kafka.iter().map(|r| r.to_record(0)).collect();
    let event = batch::encode_in(&format.envelope, &recs);
    let text = std::str::from_utf8(&event).unwrap();
    let entries: Vec<String> = kafka
        .iter()
        .map(|r| String::from_utf8(r.entry()).unwrap())
        .collect();
    assert_eq!(
        text,
        format!(
            r#"{{"eventSource":"aws:kafka","eventSourceArn":"{MSK_ARN}","bootstrapServers":"b-2.x:9092,b-1.x:9092","records":{{"orders.v1-3":[{}]}}}}"#,
            entries.join(",")
        )
    );
    assert_eq!(
        event.len(),
        payload_size_in(&format.envelope, 3, entries.iter().map(String::len).sum())
    );

    let parsed: KafkaEvent = serde_json::from_slice(&event).unwrap();
    assert_eq!(parsed.event_source.as_deref(), Some("aws:kafka"));
    assert_eq!(parsed.event_source_arn.as_deref(), Some(MSK_ARN));
    assert_eq!(
        parsed.bootstrap_servers.as_deref(),
        Some("b-2.x:9092,b-1.x:9092")
    );
    assert_eq!(parsed.records.len(), 1);
    let got = &parsed.records["orders.v1-3"];
    assert_eq!(got.len(), kafka.len());
    let b64 = |b: &Option<Vec<u8>>| {
        b.as_deref()
            .map(|b| base64::engine::general_purpose::STANDARD.encode(b))
    };
    for (g, want) in got.iter().zip(&kafka) {
        assert_eq!(g.topic.as_deref(), Some(want.topic.as_str()));
        assert_eq!(g.partition, want.partition as i64);
        assert_eq!(g.offset, want.offset);
        // The parser goes through f64 seconds and may truncate a millisecond.
        let ms = g.timestamp.0.timestamp_millis();
        assert!((want.timestamp.unwrap() - ms).abs() <= 1, "{ms}");
        assert_eq!(
            g.timestamp_type.as_deref(),
            Some(want.timestamp_type.as_str())
        );
        assert_eq!(g.key, b64(&want.key));
        assert_eq!(g.value, b64(&want.value));
        let headers: Vec<(String, Vec<u8>)> = g
            .headers
            .iter()
            .flat_map(|h| {
                h.iter()
                    .map(|(k, v)| (k.clone(), v.iter().map(|b| *b as u8).collect()))
            })
            .collect();
        let want_headers: Vec<(String, Vec<u8>)> = want
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().unwrap()))
            .collect();
        assert_eq!(headers, want_headers);
    }
}

#[test]
fn the_self_managed_event_has_no_arn() {
    let cluster = KafkaCluster::self_managed(&["a:9092".to_string(), "b:9092".to_string()]);
    let format = EventFormat::kafka(&cluster, "t", 0);
    let recs: Vec<_> = records(1, 0).iter().map(|r| r.to_record(0)).collect();
    let event = batch::encode_in(&format.envelope, &recs);
    let v: Value = serde_json::from_slice(&event).unwrap();
    assert_eq!(v["eventSource"], "SelfManagedKafka");
    assert!(v.get("eventSourceArn").is_none(), "{v}");
    assert_eq!(v["bootstrapServers"], "a:9092,b:9092");
    assert_eq!(v["records"]["t-0"].as_array().unwrap().len(), 1);
    let parsed: KafkaEvent = serde_json::from_slice(&event).unwrap();
    assert_eq!(parsed.event_source_arn, None);
    // A tombstone and a null header parse too.
    let odd = KafkaRecord {
        key: None,
        value: None,
        headers: vec![("h".into(), None)],
        ..example()
    };
    let event = batch::encode_in(&format.envelope, &[odd.to_record(0)]);
    let parsed: KafkaEvent = serde_json::from_slice(&event).unwrap();
    let r = &parsed.records["t-0"][0];
    assert_eq!((&r.key, &r.value), (&None, &None));
    assert!(r.headers[0].is_empty());
}

#[test]
fn the_batcher_sizes_batches_in_the_kafka_envelope() {
    let cluster = KafkaCluster::msk(MSK_ARN, &["b-1.x:9092"]);
    let format = EventFormat::kafka(&cluster, "orders.v1", 3);
    let recs: Vec<_> = (0..10)
        .map(|i| {
            KafkaRecord {
                offset: 10 + i,
                ..example()
            }
            .to_record(0)
        })
        .collect();
    let entry = recs[0].event.len();
    assert!(recs.iter().all(|r| r.event.len() == entry));
    let overhead = format.envelope.prefix().len() + format.envelope.suffix().len();
    assert!(overhead > 50, "{overhead}");
    // Exactly room for 4 entries in the Kafka envelope.
    let max = overhead + 4 * entry + 3;
    let mut b = Batcher::with_envelope(format.envelope.clone(), 500, max);
    assert_eq!(b.envelope(), &format.envelope);
    b.push(recs.clone());
    assert!(b.is_full());
    let first = b.take();
    assert_eq!(first.len(), 4);
    assert_eq!(batch::encode_in(&format.envelope, &first).len(), max);
    // One byte less: 3 in the Kafka envelope, while the shorter Records envelope still fits 4.
    let mut kafka = Batcher::with_envelope(format.envelope.clone(), 500, max - 1);
    kafka.push(recs.clone());
    assert_eq!(kafka.take().len(), 3);
    let mut plain = Batcher::new(500, max - 1);
    plain.push(recs);
    assert_eq!(plain.take().len(), 4);
    assert_eq!(
        batch::payload_size_in(&format.envelope, 1, 100),
        overhead + 100
    );
    // The 6 MB cap applies to the whole event.
    assert_eq!(
        payload_size_in(&format.envelope, 2, MAX_PAYLOAD_BYTES),
        MAX_PAYLOAD_BYTES + overhead + 1
    );
}

#[test]
fn an_entry_reads_back_as_the_record_it_describes() {
    let mut r = example();
    r.headers.push(("ë".into(), Some("ë".as_bytes().to_vec())));
    let back = KafkaRecord::from_entry(&entry(&r)).unwrap();
    assert_eq!(back, r);
    let tombstone = KafkaRecord {
        key: Some(Vec::new()),
        value: None,
        timestamp: None,
        timestamp_type: TimestampType::NoTimestampType,
        headers: vec![],
        ..example()
    };
    assert_eq!(
        KafkaRecord::from_entry(&entry(&tombstone)).unwrap(),
        tombstone
    );
    assert!(KafkaRecord::from_entry(&json!({"topic": "t"})).is_none());
    assert!(KafkaRecord::from_entry(&json!({"topic":"t","partition":0,"offset":1,"timestamp":1,"timestampType":"CREATE_TIME","value":"!!"})).is_none());
}
