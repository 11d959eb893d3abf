//! DynamoDB Streams as a [`ShardApi`]: DescribeStream (paginated) for shards and their
//! `ParentShardId`, GetShardIterator and GetRecords, each classified into [`SourceError`]
//! (TrimmedDataAccessException is [`SourceError::Trimmed`]: the shared reader restarts at
//! TRIM_HORIZON), and records encoded the way Lambda builds them (see [`event`]). Reading itself is
//! the shared [`IteratorReader`](crate::source::shards::IteratorReader), at most 4 times a second
//! per shard (Lambda's base rate for DynamoDB triggers), caught up or not.

pub mod event;

use async_trait::async_trait;
use aws_sdk_dynamodbstreams::types::ShardIteratorType;
use aws_sdk_dynamodbstreams::Client;
use std::time::Duration;

use super::shards::{Fault, IteratorStart, RawPage, ReadLimits, ShardApi, ShardPage, ShardSource};
use super::{EventFormat, Partition, Record, SequenceNumber, SourceError};
use crate::aws::error_text;
use crate::model::StartingPosition;

/// DynamoDB Streams keeps every record for 24 hours; the retention cannot be changed.
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Lambda polls DynamoDB stream shards 4 times a second, caught up or not; GetRecords returns at
/// most 1000 records.
pub const LIMITS: ReadLimits = ReadLimits {
    read_interval: Duration::from_millis(250),
    caught_up_interval: Duration::from_millis(250),
    page_limit: 1000,
};

/// One DynamoDB stream.
pub type DynamoDbSource = ShardSource<DynamoDbApi>;

impl DynamoDbSource {
    /// `client` must be for the region of `stream_arn`.
    pub fn new(client: Client, stream_arn: String) -> Self {
        ShardSource::from_api(DynamoDbApi { client, stream_arn })
    }
}

/// The DynamoDB Streams calls of one stream.
pub struct DynamoDbApi {
    client: Client,
    stream_arn: String,
}

#[async_trait]
impl ShardApi for DynamoDbApi {
    fn limits(&self) -> ReadLimits {
        LIMITS
    }

    fn format(&self) -> EventFormat {
        EventFormat::DYNAMODB
    }

    async fn retention(&self) -> Result<Duration, SourceError> {
        Ok(RETENTION)
    }

    /// DescribeStream from `ExclusiveStartShardId` (the token is the last shard id of a page).
    async fn list_page(&self, token: Option<String>) -> Result<ShardPage, SourceError> {
        let out = self
            .client
            .describe_stream()
            .stream_arn(&self.stream_arn)
            .set_exclusive_start_shard_id(token)
            .send()
            .await
            .map_err(|e| {
                let fault = match e.as_service_error() {
                    Some(s) if s.is_resource_not_found_exception() => Fault::NotFound,
                    _ => Fault::Other,
                };
                fault.on_stream("DescribeStream", &self.stream_arn, error_text(&e))
            })?;
        let Some(desc) = out.stream_description() else {
            return Ok((Vec::new(), None));
        };
        let shards = desc
            .shards()
            .iter()
            .filter_map(|s| {
                Some(Partition {
                    id: s.shard_id()?.to_string(),
                    parents: s
                        .parent_shard_id()
                        .map(str::to_string)
                        .into_iter()
                        .collect(),
                    closed: s
                        .sequence_number_range()
                        .and_then(|r| r.ending_sequence_number())
                        .is_some(),
                })
            })
            .collect();
        Ok((shards, desc.last_evaluated_shard_id().map(str::to_string)))
    }

    async fn get_iterator(
        &self,
        shard: &str,
        from: IteratorStart<'_>,
    ) -> Result<Option<String>, SourceError> {
        let req = self
            .client
            .get_shard_iterator()
            .stream_arn(&self.stream_arn)
            .shard_id(shard);
        let req = match from {
            IteratorStart::After(seq) => req
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .sequence_number(&seq.0),
            IteratorStart::At(StartingPosition::Latest) => {
                req.shard_iterator_type(ShardIteratorType::Latest)
            }
            // AT_TIMESTAMP is rejected for DynamoDB at validation; TRIM_HORIZON is the safe reading
            // (the reader skips records older than the timestamp).
            IteratorStart::At(_) => req.shard_iterator_type(ShardIteratorType::TrimHorizon),
        };
        let out = req.send().await.map_err(|e| {
            let fault = match e.as_service_error() {
                Some(s) if s.is_resource_not_found_exception() => Fault::NotFound,
                Some(s) if s.is_trimmed_data_access_exception() => Fault::Trimmed,
                _ => Fault::Other,
            };
            fault.on_shard("GetShardIterator", &self.stream_arn, shard, error_text(&e))
        })?;
        Ok(out.shard_iterator().map(str::to_string))
    }

    async fn get_records(&self, shard: &str, iterator: String) -> Result<RawPage, SourceError> {
        let out = self
            .client
            .get_records()
            .shard_iterator(iterator)
            .limit(LIMITS.page_limit as i32)
            .send()
            .await
            .map_err(|e| {
                let fault = match e.as_service_error() {
                    Some(s) if s.is_expired_iterator_exception() => Fault::ExpiredIterator,
                    Some(s) if s.is_trimmed_data_access_exception() => Fault::Trimmed,
                    Some(s) if s.is_limit_exceeded_exception() => Fault::Throttled,
                    Some(s) if s.is_resource_not_found_exception() => Fault::NotFound,
                    _ => Fault::Other,
                };
                fault.on_shard("GetRecords", &self.stream_arn, shard, error_text(&e))
            })?;
        let records = out
            .records()
            .iter()
            .filter_map(|r| {
                let sequence = SequenceNumber(r.dynamodb()?.sequence_number()?.to_string());
                let (event, arrival_ms) = event::encode(r, &self.stream_arn);
                Some(Record {
                    sequence,
                    arrival_ms,
                    event,
                    lane_key: event::item_key(r),
                })
            })
            .collect();
        Ok(RawPage {
            records,
            next_iterator: out.next_shard_iterator().map(str::to_string),
            millis_behind: None,
        })
    }
}
