//! The Kinesis event record exactly as Lambda builds it (esm-spec.md §8): one entry of `Records`.

/// Per-mapping values every record entry carries.
#[derive(Debug, Clone)]
pub struct EventContext {
    pub stream_arn: String,
    pub region: String,
    pub invoke_identity_arn: String,
}

/// Serializes one record's event entry: the JSON serde would write for AWS's shape (the tests
/// hold it to that), written by hand because this runs once per record read. The base64 `data`
/// goes straight into the output, which is sized once, and only the short strings are escaped.
pub fn encode(
    ctx: &EventContext,
    shard_id: &str,
    sequence: &str,
    partition_key: &str,
    data: &[u8],
    arrival_ms: i64,
    encryption_type: Option<&str>,
) -> Vec<u8> {
    let b64 = data.len().div_ceil(3) * 4;
    let mut out = Vec::with_capacity(
        b64 + 320
            + 2 * (shard_id.len() + sequence.len())
            + partition_key.len()
            + ctx.stream_arn.len()
            + ctx.region.len()
            + ctx.invoke_identity_arn.len(),
    );
    out.extend_from_slice(br#"{"kinesis":{"kinesisSchemaVersion":"1.0","partitionKey":"#);
    json_str(&mut out, &[partition_key]);
    out.extend_from_slice(br#","sequenceNumber":"#);
    json_str(&mut out, &[sequence]);
    out.extend_from_slice(br#","data":""#);
    base64_simd::STANDARD.encode_append(data, &mut out);
    out.extend_from_slice(br#"","approximateArrivalTimestamp":"#);
    serde_json::to_writer(&mut out, &(arrival_ms as f64 / 1000.0)).expect("a number writes");
    if let Some(t) = encryption_type.filter(|t| *t != "NONE") {
        out.extend_from_slice(br#","encryptionType":"#);
        json_str(&mut out, &[t]);
    }
    out.extend_from_slice(br#"},"eventSource":"aws:kinesis","eventVersion":"1.0","eventID":"#);
    json_str(&mut out, &[shard_id, ":", sequence]);
    out.extend_from_slice(br#","eventName":"aws:kinesis:record","invokeIdentityArn":"#);
    json_str(&mut out, &[&ctx.invoke_identity_arn]);
    out.extend_from_slice(br#","awsRegion":"#);
    json_str(&mut out, &[&ctx.region]);
    out.extend_from_slice(br#","eventSourceARN":"#);
    json_str(&mut out, &[&ctx.stream_arn]);
    out.push(b'}');
    out
}

/// Writes `parts`, joined, as one JSON string: as they are when nothing in them needs escaping
/// (shard ids, sequence numbers and ARNs never do), else through serde_json.
fn json_str(out: &mut Vec<u8>, parts: &[&str]) {
    let plain = |s: &&str| s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\');
    if parts.iter().all(plain) {
        out.push(b'"');
        for p in parts {
            out.extend_from_slice(p.as_bytes());
        }
        out.push(b'"');
    } else {
        serde_json::to_writer(out, &parts.concat()).expect("a string writes");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use proptest::prelude::*;
    use serde::Serialize;

    /// The entry as serde writes it: what [`encode`] must write, byte for byte.
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Entry<'a> {
        kinesis: Kinesis<'a>,
        event_source: &'static str,
        event_version: &'static str,
        #[serde(rename = "eventID")]
        event_id: String,
        event_name: &'static str,
        invoke_identity_arn: &'a str,
        aws_region: &'a str,
        #[serde(rename = "eventSourceARN")]
        event_source_arn: &'a str,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Kinesis<'a> {
        kinesis_schema_version: &'static str,
        partition_key: &'a str,
        sequence_number: &'a str,
        data: String,
        approximate_arrival_timestamp: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        encryption_type: Option<&'a str>,
    }

    /// One record's fields, as [`encode`] takes them.
    struct Fields<'a> {
        shard: &'a str,
        seq: &'a str,
        key: &'a str,
        data: &'a [u8],
        arrival_ms: i64,
        encryption: Option<&'a str>,
    }

    fn by_serde(ctx: &EventContext, f: &Fields) -> Vec<u8> {
        serde_json::to_vec(&Entry {
            kinesis: Kinesis {
                kinesis_schema_version: "1.0",
                partition_key: f.key,
                sequence_number: f.seq,
                data: base64::engine::general_purpose::STANDARD.encode(f.data),
                approximate_arrival_timestamp: f.arrival_ms as f64 / 1000.0,
                encryption_type: f.encryption.filter(|t| *t != "NONE"),
            },
            event_source: "aws:kinesis",
            event_version: "1.0",
            event_id: format!("{}:{}", f.shard, f.seq),
            event_name: "aws:kinesis:record",
            invoke_identity_arn: &ctx.invoke_identity_arn,
            aws_region: &ctx.region,
            event_source_arn: &ctx.stream_arn,
        })
        .unwrap()
    }

    proptest! {
        #[test]
        fn writes_what_serde_writes(
            key in "\\PC{0,20}|[\"\\\\\u{0}-\u{1f}a-z]{0,8}",
            shard in "shardId-[0-9]{12}|[a-z\"]{1,4}",
            seq in "[0-9]{1,56}",
            data in proptest::collection::vec(any::<u8>(), 0..300),
            arrival_ms in any::<i64>(),
            encryption in proptest::option::of("NONE|KMS|[a-z\"]{0,3}"),
            arn in "arn:aws:kinesis:[a-z0-9-]{1,12}:[0-9]{12}:stream/\\PC{1,10}",
        ) {
            let ctx = EventContext {
                stream_arn: arn,
                region: "eu-west-1".into(),
                invoke_identity_arn: "arn:aws:iam::123456789012:role/r\"x".into(),
            };
            let f = Fields {
                shard: &shard,
                seq: &seq,
                key: &key,
                data: &data,
                arrival_ms,
                encryption: encryption.as_deref(),
            };
            let ours = encode(&ctx, f.shard, f.seq, f.key, f.data, f.arrival_ms, f.encryption);
            prop_assert_eq!(
                String::from_utf8(ours).unwrap(),
                String::from_utf8(by_serde(&ctx, &f)).unwrap()
            );
        }
    }

    #[test]
    fn entry_matches_the_aws_example() {
        let ctx = EventContext {
            stream_arn: "arn:aws:kinesis:us-east-2:123456789012:stream/lambda-stream".into(),
            region: "us-east-2".into(),
            invoke_identity_arn: "arn:aws:iam::123456789012:role/lambda-role".into(),
        };
        let seq = "49590338271490256608559692538361571095921575989136588898";
        let bytes = encode(
            &ctx,
            "shardId-000000000006",
            seq,
            "1",
            b"Hello, this is a test.",
            1545084650987,
            Some("NONE"),
        );
        let got: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let want = serde_json::json!({"kinesis":{"kinesisSchemaVersion":"1.0","partitionKey":"1",
            "sequenceNumber":seq,"data":"SGVsbG8sIHRoaXMgaXMgYSB0ZXN0Lg==","approximateArrivalTimestamp":1545084650.987},
            "eventSource":"aws:kinesis","eventVersion":"1.0","eventID":format!("shardId-000000000006:{seq}"),
            "eventName":"aws:kinesis:record","invokeIdentityArn":"arn:aws:iam::123456789012:role/lambda-role",
            "awsRegion":"us-east-2","eventSourceARN":"arn:aws:kinesis:us-east-2:123456789012:stream/lambda-stream"});
        assert_eq!(got, want);
    }
}
