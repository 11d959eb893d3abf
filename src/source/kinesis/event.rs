//! The Kinesis event record exactly as Lambda builds it (esm-spec.md §8): one entry of `Records`.

/// Per-mapping values every record entry carries, and the entry's tail they make (written once
/// here, copied into every entry).
#[derive(Debug, Clone)]
pub struct EventContext {
    stream_arn: String,
    region: String,
    invoke_identity_arn: String,
    /// `,"eventName":…,"eventSourceARN":"…"}`: everything after the eventID.
    tail: Vec<u8>,
}

impl EventContext {
    pub fn new(
        stream_arn: impl Into<String>,
        region: impl Into<String>,
        invoke_identity_arn: impl Into<String>,
    ) -> EventContext {
        let (stream_arn, region, invoke_identity_arn) =
            (stream_arn.into(), region.into(), invoke_identity_arn.into());
        let mut tail = Vec::with_capacity(128 + stream_arn.len() + invoke_identity_arn.len());
        tail.extend_from_slice(br#","eventName":"aws:kinesis:record","invokeIdentityArn":"#);
        json_str(&mut tail, &[&invoke_identity_arn]);
        tail.extend_from_slice(br#","awsRegion":"#);
        json_str(&mut tail, &[&region]);
        tail.extend_from_slice(br#","eventSourceARN":"#);
        json_str(&mut tail, &[&stream_arn]);
        tail.push(b'}');
        EventContext {
            stream_arn,
            region,
            invoke_identity_arn,
            tail,
        }
    }

    /// The stream's ARN: `eventSourceARN`.
    pub fn stream_arn(&self) -> &str {
        &self.stream_arn
    }

    /// `awsRegion`.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// `invokeIdentityArn`.
    pub fn invoke_identity_arn(&self) -> &str {
        &self.invoke_identity_arn
    }
}

/// A record's data: bytes, or already in base64 (as GetRecords answers it).
#[derive(Debug, Clone, Copy)]
pub enum Data<'a> {
    Bytes(&'a [u8]),
    Base64(Base64<'a>),
}

/// Standard base64 text, checked (the alphabet, `=` padding, groups of four), so it goes into the
/// entry as it is (nothing in it needs escaping).
#[derive(Debug, Clone, Copy)]
pub struct Base64<'a>(&'a str);

impl<'a> Base64<'a> {
    /// `None` when `text` is not standard, padded base64.
    pub fn new(text: &'a str) -> Option<Base64<'a>> {
        // SIMD, as the encoder: a per-byte loop here was a third of the drain's CPU.
        base64_simd::STANDARD
            .check(text.as_bytes())
            .is_ok()
            .then_some(Base64(text))
    }
}

/// Serializes one record's event entry: the JSON serde would write for AWS's shape (the tests
/// hold it to that), written by hand because this runs once per record read. The base64 `data`
/// goes straight into the output, which is sized once, and only the short strings are escaped.
pub fn encode(
    ctx: &EventContext,
    shard_id: &str,
    sequence: &str,
    partition_key: &str,
    data: Data,
    arrival_ms: i64,
    encryption_type: Option<&str>,
) -> Vec<u8> {
    let b64 = match data {
        Data::Bytes(b) => b.len().div_ceil(3) * 4,
        Data::Base64(t) => t.0.len(),
    };
    let mut out = Vec::with_capacity(
        b64 + 200 + 2 * (shard_id.len() + sequence.len()) + partition_key.len() + ctx.tail.len(),
    );
    out.extend_from_slice(br#"{"kinesis":{"kinesisSchemaVersion":"1.0","partitionKey":"#);
    json_str(&mut out, &[partition_key]);
    out.extend_from_slice(br#","sequenceNumber":"#);
    json_str(&mut out, &[sequence]);
    out.extend_from_slice(br#","data":""#);
    match data {
        Data::Bytes(b) => base64_simd::STANDARD.encode_append(b, &mut out),
        Data::Base64(t) => out.extend_from_slice(t.0.as_bytes()),
    }
    out.extend_from_slice(br#"","approximateArrivalTimestamp":"#);
    serde_json::to_writer(&mut out, &(arrival_ms as f64 / 1000.0)).expect("a number writes");
    if let Some(t) = encryption_type.filter(|t| *t != "NONE") {
        out.extend_from_slice(br#","encryptionType":"#);
        json_str(&mut out, &[t]);
    }
    out.extend_from_slice(br#"},"eventSource":"aws:kinesis","eventVersion":"1.0","eventID":"#);
    json_str(&mut out, &[shard_id, ":", sequence]);
    out.extend_from_slice(&ctx.tail);
    out
}

/// Writes `parts`, joined, as one JSON string.
fn json_str(out: &mut Vec<u8>, parts: &[&str]) {
    out.push(b'"');
    for p in parts {
        crate::source::json::write_escaped(out, p);
    }
    out.push(b'"');
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
            let ctx = EventContext::new(arn, "eu-west-1", "arn:aws:iam::123456789012:role/r\"x");
            let f = Fields {
                shard: &shard,
                seq: &seq,
                key: &key,
                data: &data,
                arrival_ms,
                encryption: encryption.as_deref(),
            };
            let ours = encode(&ctx, f.shard, f.seq, f.key, Data::Bytes(f.data), f.arrival_ms, f.encryption);
            prop_assert_eq!(
                String::from_utf8(ours.clone()).unwrap(),
                String::from_utf8(by_serde(&ctx, &f)).unwrap()
            );
            // The same record with its data given in base64, as GetRecords answers it.
            let text = base64::engine::general_purpose::STANDARD.encode(f.data);
            let b64 = Base64::new(&text).expect("standard base64");
            let passed = encode(&ctx, f.shard, f.seq, f.key, Data::Base64(b64), f.arrival_ms, f.encryption);
            prop_assert_eq!(passed, ours);
        }
    }

    #[test]
    fn entry_matches_the_aws_example() {
        let ctx = EventContext::new(
            "arn:aws:kinesis:us-east-2:123456789012:stream/lambda-stream",
            "us-east-2",
            "arn:aws:iam::123456789012:role/lambda-role",
        );
        let seq = "49590338271490256608559692538361571095921575989136588898";
        let bytes = encode(
            &ctx,
            "shardId-000000000006",
            seq,
            "1",
            Data::Bytes(b"Hello, this is a test."),
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

    #[test]
    fn only_standard_padded_base64_passes_through() {
        for ok in ["", "SGVsbG8=", "SGk=", "AAAA", "+/+/"] {
            assert!(Base64::new(ok).is_some(), "{ok}");
        }
        for bad in ["SGk", "SGVsbG8\"=", "a-b_", "SGVsbG8=\n", "é"] {
            assert!(Base64::new(bad).is_none(), "{bad}");
        }
    }
}
