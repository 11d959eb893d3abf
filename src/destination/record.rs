//! The failure record's JSON (esm-spec.md §9) and the S3 object key laid out like AWS's. The
//! batch's description is per source: `KinesisBatchInfo` / `DDBStreamBatchInfo` ([`BatchInfo`]) or
//! `KafkaBatchInfo` ([`KafkaBatchInfo`]); [`FailureInfo::of`] builds the right one from the batch's
//! [`EventFormat`].

use bytes::Bytes;
use serde::Serialize;
use serde_json::{json, Value};
use time::format_description::FormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

use crate::model::{Envelope, EventFormat, KafkaCluster, Record};

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

/// Kafka's `KafkaBatchInfo`: one topic-partition's batch (sluice batches per partition).
#[derive(Debug, Clone)]
pub struct KafkaBatchInfo {
    /// `eventSourceArn` (MSK only) and `bootstrapServers`.
    pub cluster: KafkaCluster,
    /// `<topic>-<partition>`, the key under `recordsInfo`.
    pub partition: String,
    pub first_offset: String,
    pub last_offset: String,
    /// The first and last records' timestamps (their arrival), epoch milliseconds.
    pub first_timestamp_ms: i64,
    pub last_timestamp_ms: i64,
    pub batch_size: usize,
}

/// What a failure record says about its batch, per source.
#[derive(Debug, Clone)]
pub enum FailureInfo {
    /// `KinesisBatchInfo` / `DDBStreamBatchInfo`.
    Stream(BatchInfo),
    /// `KafkaBatchInfo`.
    Kafka(KafkaBatchInfo),
}

impl From<BatchInfo> for FailureInfo {
    fn from(info: BatchInfo) -> Self {
        FailureInfo::Stream(info)
    }
}

impl From<KafkaBatchInfo> for FailureInfo {
    fn from(info: KafkaBatchInfo) -> Self {
        FailureInfo::Kafka(info)
    }
}

impl FailureInfo {
    /// The description of `records` (non-empty, in order) of `partition`, a batch in `format`;
    /// `source_arn` is a stream's ARN (`streamArn`; unused for Kafka, whose envelope names its
    /// cluster). `None` for no records.
    pub fn of(
        format: &EventFormat,
        partition: &str,
        records: &[Record],
        source_arn: &str,
    ) -> Option<Self> {
        let (first, last) = (records.first()?, records.last()?);
        Some(match &format.envelope {
            Envelope::Records => FailureInfo::Stream(BatchInfo {
                key: format.batch_info_key,
                shard_id: partition.to_string(),
                start_sequence_number: first.sequence.0.clone(),
                end_sequence_number: last.sequence.0.clone(),
                first_arrival_ms: first.arrival_ms,
                last_arrival_ms: last.arrival_ms,
                batch_size: records.len(),
                stream_arn: source_arn.to_string(),
            }),
            Envelope::Kafka(k) => FailureInfo::Kafka(KafkaBatchInfo {
                cluster: k.cluster.clone(),
                partition: k.partition.clone(),
                first_offset: first.sequence.0.clone(),
                last_offset: last.sequence.0.clone(),
                first_timestamp_ms: first.arrival_ms,
                last_timestamp_ms: last.arrival_ms,
                batch_size: records.len(),
            }),
        })
    }

    /// The partition (shard id or `<topic>-<n>`): the S3 key's path segment.
    fn partition(&self) -> &str {
        match self {
            FailureInfo::Stream(i) => &i.shard_id,
            FailureInfo::Kafka(k) => &k.partition,
        }
    }

    /// The key and the object; `payload_size` is the event's size in bytes (`payloadSize`).
    fn json(&self, payload_size: usize) -> (&'static str, Value) {
        match self {
            FailureInfo::Stream(info) => (
                info.key,
                json!({
                    "shardId": info.shard_id,
                    "startSequenceNumber": info.start_sequence_number,
                    "endSequenceNumber": info.end_sequence_number,
                    "approximateArrivalOfFirstRecord": iso_millis(ms_to_time(info.first_arrival_ms)),
                    "approximateArrivalOfLastRecord": iso_millis(ms_to_time(info.last_arrival_ms)),
                    "batchSize": info.batch_size,
                    "streamArn": info.stream_arn,
                }),
            ),
            FailureInfo::Kafka(k) => {
                let mut info = json!({
                    "batchSize": k.batch_size,
                    "bootstrapServers": k.cluster.bootstrap_servers,
                    "payloadSize": payload_size,
                    "recordsInfo": {
                        k.partition.as_str(): {
                            "firstRecordOffset": k.first_offset,
                            "lastRecordOffset": k.last_offset,
                            "firstRecordTimestamp": iso_millis(ms_to_time(k.first_timestamp_ms)),
                            "lastRecordTimestamp": iso_millis(ms_to_time(k.last_timestamp_ms)),
                        }
                    },
                });
                if let Some(arn) = &k.cluster.msk_arn {
                    info["eventSourceArn"] = Value::String(arn.clone());
                }
                ("KafkaBatchInfo", info)
            }
        }
    }
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
        info: impl Into<FailureInfo>,
        event: Bytes,
        at: OffsetDateTime,
    ) -> Self {
        let info = info.into();
        let (key, batch_info) = info.json(event.len());
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
            key: batch_info,
        });
        FailureRecord {
            mapping: mapping.to_string(),
            shard_id: info.partition().to_string(),
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

    fn kafka_records() -> Vec<Record> {
        [
            (40, 1_573_691_884_835_i64),
            (41, 1_573_691_885_000),
            (42, 1_573_691_885_580),
        ]
        .into_iter()
        .map(|(offset, ms)| Record {
            sequence: crate::model::SequenceNumber(offset.to_string()),
            arrival_ms: ms,
            event: b"{}".to_vec(),
            lane_key: 0,
        })
        .collect()
    }

    const MSK: &str = "arn:aws:kafka:us-east-1:123456789012:cluster/c/abc-1";

    #[test]
    fn kafka_batch_info_has_aws_shape() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_573_691_886_021_000_000).unwrap();
        let cluster = KafkaCluster::msk(MSK, &["b-1:9092", "b-2:9092"]);
        let format = EventFormat::kafka(&cluster, "Topic", 0);
        let records = kafka_records();
        let event = crate::batch::encode_in(&format.envelope, &records);
        let info = FailureInfo::of(&format, "Topic-0", &records, "ignored").unwrap();
        let r = FailureRecord::new(
            "m",
            Some("req-1".into()),
            "arn:aws:lambda:us-east-1:123456789012:function:f",
            "RetryAttemptsExhausted",
            3,
            None,
            info,
            event.clone(),
            at,
        );
        assert!(r.body.get("KinesisBatchInfo").is_none());
        assert_eq!(
            r.body["KafkaBatchInfo"],
            json!({
                "batchSize": 3,
                "eventSourceArn": MSK,
                "bootstrapServers": "b-1:9092,b-2:9092",
                "payloadSize": event.len(),
                "recordsInfo": {"Topic-0": {
                    "firstRecordOffset": "40",
                    "lastRecordOffset": "42",
                    "firstRecordTimestamp": "2019-11-14T00:38:04.835Z",
                    "lastRecordTimestamp": "2019-11-14T00:38:05.580Z",
                }},
            })
        );
        assert_eq!(r.body["requestContext"]["approximateInvokeCount"], 3);
        assert_eq!(r.body["version"], "1.0");
        assert_eq!(r.body["timestamp"], "2019-11-14T00:38:06.021Z");
        assert!(r
            .s3_key()
            .starts_with("aws/lambda/m/Topic-0/2019/11/14/2019-11-14T00.38.06-"));
        let s3: Value = serde_json::from_str(&r.with_payload_json()).unwrap();
        assert_eq!(s3["payload"].as_str().unwrap().as_bytes(), &event[..]);
    }

    #[test]
    fn an_oversized_kafka_record_says_so_with_a_null_response_context() {
        let cluster = KafkaCluster::self_managed(&["k:9092"]);
        let format = EventFormat::kafka(&cluster, "t", 7);
        let records = &kafka_records()[..1];
        let r = FailureRecord::new(
            "m",
            None,
            "f",
            "MaximumPayloadSizeExceeded",
            0,
            None,
            FailureInfo::of(&format, "t-7", records, "").unwrap(),
            crate::batch::encode_in(&format.envelope, records),
            OffsetDateTime::UNIX_EPOCH,
        );
        assert_eq!(
            r.body["requestContext"]["condition"],
            "MaximumPayloadSizeExceeded"
        );
        assert_eq!(r.body["responseContext"], Value::Null);
        assert!(r.body.as_object().unwrap().contains_key("responseContext"));
        let info = &r.body["KafkaBatchInfo"];
        assert!(info.get("eventSourceArn").is_none(), "{info}");
        assert_eq!(info["bootstrapServers"], "k:9092");
        assert_eq!(info["batchSize"], 1);
        assert_eq!(info["recordsInfo"]["t-7"]["firstRecordOffset"], "40");
        assert_eq!(info["recordsInfo"]["t-7"]["lastRecordOffset"], "40");
    }

    #[test]
    fn the_generic_builder_gives_streams_the_same_info_as_before() {
        let records = kafka_records();
        let built =
            FailureInfo::of(&EventFormat::DYNAMODB, "shardId-1", &records, "arn:s").unwrap();
        let literal = BatchInfo {
            key: "DDBStreamBatchInfo",
            shard_id: "shardId-1".into(),
            start_sequence_number: "40".into(),
            end_sequence_number: "42".into(),
            first_arrival_ms: 1_573_691_884_835,
            last_arrival_ms: 1_573_691_885_580,
            batch_size: 3,
            stream_arn: "arn:s".into(),
        };
        let at = OffsetDateTime::UNIX_EPOCH;
        let make = |info: FailureInfo| {
            FailureRecord::new(
                "m",
                Some("r".into()),
                "f",
                "c",
                1,
                None,
                info,
                Bytes::new(),
                at,
            )
            .body
        };
        assert_eq!(make(built), make(literal.into()));
        assert!(FailureInfo::of(&EventFormat::KINESIS, "s", &[], "a").is_none());
    }
}
