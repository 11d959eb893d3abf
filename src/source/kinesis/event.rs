//! The Kinesis event record exactly as Lambda builds it (esm-spec.md §8): one entry of `Records`.

use base64::Engine;
use serde::Serialize;

/// Per-mapping values every record entry carries.
#[derive(Debug, Clone)]
pub struct EventContext {
    pub stream_arn: String,
    pub region: String,
    pub invoke_identity_arn: String,
}

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

/// Serializes one record's event entry.
pub fn encode(
    ctx: &EventContext,
    shard_id: &str,
    sequence: &str,
    partition_key: &str,
    data: &[u8],
    arrival_ms: i64,
    encryption_type: Option<&str>,
) -> Vec<u8> {
    let entry = Entry {
        kinesis: Kinesis {
            kinesis_schema_version: "1.0",
            partition_key,
            sequence_number: sequence,
            data: base64::engine::general_purpose::STANDARD.encode(data),
            approximate_arrival_timestamp: arrival_ms as f64 / 1000.0,
            encryption_type: encryption_type.filter(|t| *t != "NONE"),
        },
        event_source: "aws:kinesis",
        event_version: "1.0",
        event_id: format!("{shard_id}:{sequence}"),
        event_name: "aws:kinesis:record",
        invoke_identity_arn: &ctx.invoke_identity_arn,
        aws_region: &ctx.region,
        event_source_arn: &ctx.stream_arn,
    };
    serde_json::to_vec(&entry).expect("a Kinesis event entry always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

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
