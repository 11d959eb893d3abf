//! The failure record's JSON (esm-spec.md §9) and the S3 object key laid out like AWS's.

use bytes::Bytes;
use serde::Serialize;
use serde_json::{json, Value};
use time::format_description::FormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

/// What the last invocation of the given-up records answered; `None` when they were never invoked.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResponseContext {
    pub status_code: u16,
    pub executed_version: String,
    pub function_error: String,
}

/// The source-specific part: `KinesisBatchInfo` / `DDBStreamBatchInfo`.
#[derive(Debug, Clone)]
pub struct BatchInfo {
    /// The JSON key, e.g. `KinesisBatchInfo`.
    pub key: &'static str,
    pub shard_id: String,
    pub start_sequence_number: String,
    pub end_sequence_number: String,
    pub first_arrival_ms: i64,
    pub last_arrival_ms: i64,
    pub batch_size: usize,
    pub stream_arn: String,
}

/// One failure record, ready to send.
#[derive(Debug, Clone)]
pub struct FailureRecord {
    pub mapping: String,
    pub shard_id: String,
    pub body: Value,
    /// The event JSON the records were (or would have been) invoked with: S3's `payload`.
    pub event: Bytes,
    pub at: OffsetDateTime,
}

/// UTC with milliseconds, as AWS writes failure records: `2019-11-14T00:38:06.021Z`.
pub(crate) fn iso_millis(t: OffsetDateTime) -> String {
    const ISO_MILLIS: &[FormatItem<'_>] =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    t.to_offset(UtcOffset::UTC)
        .format(ISO_MILLIS)
        .unwrap_or_default()
}

fn ms_to_time(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

impl FailureRecord {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        mapping: &str,
        request_id: Option<String>,
        function_arn: &str,
        condition: &str,
        invoke_count: u32,
        response: Option<ResponseContext>,
        info: BatchInfo,
        event: Bytes,
        at: OffsetDateTime,
    ) -> Self {
        let body = json!({
            "requestContext": {
                "requestId": request_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                "functionArn": function_arn,
                "condition": condition,
                "approximateInvokeCount": invoke_count,
            },
            "responseContext": response,
            "version": "1.0",
            "timestamp": iso_millis(at),
            info.key: {
                "shardId": info.shard_id,
                "startSequenceNumber": info.start_sequence_number,
                "endSequenceNumber": info.end_sequence_number,
                "approximateArrivalOfFirstRecord": iso_millis(ms_to_time(info.first_arrival_ms)),
                "approximateArrivalOfLastRecord": iso_millis(ms_to_time(info.last_arrival_ms)),
                "batchSize": info.batch_size,
                "streamArn": info.stream_arn,
            },
        });
        FailureRecord {
            mapping: mapping.to_string(),
            shard_id: info.shard_id,
            body,
            event,
            at,
        }
    }

    /// The record for SQS and SNS: metadata only.
    pub fn metadata_json(&self) -> String {
        self.body.to_string()
    }

    /// The record for S3: metadata plus the whole event as an escaped JSON string in `payload`.
    pub fn with_payload_json(&self) -> String {
        let mut v = self.body.clone();
        v["payload"] = Value::String(String::from_utf8_lossy(&self.event).into_owned());
        v.to_string()
    }

    /// `aws/lambda/<mapping>/<shardId>/YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-<uuid>`, AWS's layout with the
    /// mapping name where AWS puts the mapping UUID.
    pub fn s3_key(&self) -> String {
        let t = self.at.to_offset(time::UtcOffset::UTC);
        format!(
            "aws/lambda/{}/{}/{:04}/{:02}/{:02}/{:04}-{:02}-{:02}T{:02}.{:02}.{:02}-{}",
            self.mapping,
            self.shard_id,
            t.year(),
            t.month() as u8,
            t.day(),
            t.year(),
            t.month() as u8,
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            uuid::Uuid::new_v4()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_matches_the_aws_example() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_573_691_886_021_000_000).unwrap();
        let r = FailureRecord::new(
            "m",
            Some("req-1".into()),
            "arn:aws:lambda:us-east-2:123456789012:function:myfunction",
            "RetryAttemptsExhausted",
            1,
            Some(ResponseContext {
                status_code: 200,
                executed_version: "$LATEST".into(),
                function_error: "Unhandled".into(),
            }),
            BatchInfo {
                key: "KinesisBatchInfo",
                shard_id: "shardId-000000000001".into(),
                start_sequence_number: "1".into(),
                end_sequence_number: "2".into(),
                first_arrival_ms: 1_573_691_884_835,
                last_arrival_ms: 1_573_691_885_580,
                batch_size: 500,
                stream_arn: "arn:aws:kinesis:us-east-2:123456789012:stream/mystream".into(),
            },
            Bytes::from_static(b"{\"Records\":[]}"),
            at,
        );
        assert_eq!(r.body["timestamp"], "2019-11-14T00:38:06.021Z");
        assert_eq!(
            r.body["KinesisBatchInfo"]["approximateArrivalOfFirstRecord"],
            "2019-11-14T00:38:04.835Z"
        );
        assert_eq!(
            r.body["KinesisBatchInfo"]["approximateArrivalOfLastRecord"],
            "2019-11-14T00:38:05.580Z"
        );
        assert_eq!(r.body["responseContext"]["executedVersion"], "$LATEST");
        assert_eq!(r.body["requestContext"]["approximateInvokeCount"], 1);
        let s3: Value = serde_json::from_str(&r.with_payload_json()).unwrap();
        assert_eq!(s3["payload"], "{\"Records\":[]}");
        assert!(r.metadata_json().find("payload").is_none());
        assert!(
            r.s3_key()
                .starts_with("aws/lambda/m/shardId-000000000001/2019/11/14/2019-11-14T00.38.06-"),
            "{}",
            r.s3_key()
        );
    }
}
