//! One DynamoDB Streams shard, read in order: GetShardIterator from the checkpoint
//! (AFTER_SEQUENCE_NUMBER) or the StartingPosition, then GetRecords at most 4 times a second. An
//! expired iterator is re-fetched just after the last record handed out (or from where the reader
//! started); a trimmed position (TrimmedDataAccessException) restarts from TRIM_HORIZON, the oldest
//! record still there.

use async_trait::async_trait;
use aws_sdk_dynamodbstreams::types::ShardIteratorType;
use aws_sdk_dynamodbstreams::Client;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use super::event;
use crate::aws::error_text;
use crate::config::StartingPosition;
use crate::source::cursor::ShardCursor;
use crate::source::{Page, PartitionReader, Position, Record, SequenceNumber, SourceError};

/// Lambda polls DynamoDB stream shards at a base rate of 4 times a second.
const READ_INTERVAL: Duration = Duration::from_millis(250);
/// GetRecords' maximum page.
const PAGE_LIMIT: i32 = 1000;

pub(super) struct DynamoDbShardReader {
    client: Client,
    stream_arn: Arc<str>,
    shard_id: String,
    cursor: ShardCursor,
}

impl DynamoDbShardReader {
    pub(super) fn new(
        client: Client,
        stream_arn: Arc<str>,
        shard_id: String,
        start: Position,
    ) -> Self {
        DynamoDbShardReader {
            client,
            stream_arn,
            shard_id,
            cursor: ShardCursor::new(start),
        }
    }

    async fn fetch_iterator(&self) -> Result<String, SourceError> {
        let req = self
            .client
            .get_shard_iterator()
            .stream_arn(&*self.stream_arn)
            .shard_id(&self.shard_id);
        let req = match &self.cursor.start {
            Position::After(seq) => req
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .sequence_number(&seq.0),
            Position::Start(StartingPosition::Latest) => {
                req.shard_iterator_type(ShardIteratorType::Latest)
            }
            // AT_TIMESTAMP is rejected for DynamoDB at validation; TRIM_HORIZON is the safe reading.
            Position::Start(_) => req.shard_iterator_type(ShardIteratorType::TrimHorizon),
            // A cursor opened at the end reports ShardEnd without asking for an iterator.
            Position::End => {
                return Err(SourceError::Service(
                    "no iterator past a shard's end".into(),
                ))
            }
        };
        let out = req.send().await.map_err(|e| {
            let svc = e.as_service_error();
            if svc.is_some_and(|s| s.is_resource_not_found_exception()) {
                SourceError::NotFound(format!("{}/{}", self.stream_arn, self.shard_id))
            } else if svc.is_some_and(|s| s.is_trimmed_data_access_exception()) {
                SourceError::Trimmed(format!(
                    "GetShardIterator {}: {}",
                    self.shard_id,
                    error_text(&e)
                ))
            } else {
                SourceError::Service(format!(
                    "GetShardIterator {}: {}",
                    self.shard_id,
                    error_text(&e)
                ))
            }
        })?;
        out.shard_iterator()
            .map(str::to_string)
            .ok_or_else(|| SourceError::Service("GetShardIterator returned no iterator".into()))
    }
}

#[async_trait]
impl PartitionReader for DynamoDbShardReader {
    fn next_read_at(&self) -> Instant {
        self.cursor.next_read_at()
    }

    async fn read(&mut self) -> Result<Page, SourceError> {
        if self.cursor.ended() {
            return Ok(Page::ShardEnd);
        }
        let iterator = match self.cursor.iterator() {
            Some(it) => it,
            None => match self.fetch_iterator().await {
                Ok(it) => {
                    self.cursor.set_iterator(it.clone());
                    it
                }
                Err(SourceError::Trimmed(m)) => {
                    self.cursor.trimmed();
                    return Err(SourceError::Trimmed(m));
                }
                Err(e) => return Err(e),
            },
        };
        let called_at = Instant::now();
        let result = self
            .client
            .get_records()
            .shard_iterator(iterator)
            .limit(PAGE_LIMIT)
            .send()
            .await;
        self.cursor.called(called_at, READ_INTERVAL);
        let out = match result {
            Ok(out) => out,
            Err(e) => {
                let svc = e.as_service_error();
                return Err(if svc.is_some_and(|s| s.is_expired_iterator_exception()) {
                    self.cursor.expire();
                    SourceError::ExpiredIterator
                } else if svc.is_some_and(|s| s.is_trimmed_data_access_exception()) {
                    self.cursor.trimmed();
                    SourceError::Trimmed(format!(
                        "GetRecords {}: {}",
                        self.shard_id,
                        error_text(&e)
                    ))
                } else if svc.is_some_and(|s| s.is_limit_exceeded_exception()) {
                    SourceError::Throttled(format!("GetRecords: {}", error_text(&e)))
                } else if svc.is_some_and(|s| s.is_resource_not_found_exception()) {
                    SourceError::NotFound(format!("{}/{}", self.stream_arn, self.shard_id))
                } else {
                    SourceError::Service(format!(
                        "GetRecords {}: {}",
                        self.shard_id,
                        error_text(&e)
                    ))
                });
            }
        };
        let records: Vec<Record> = out
            .records()
            .iter()
            .filter_map(|r| {
                let seq = r.dynamodb()?.sequence_number()?.to_string();
                let (bytes, arrival_ms) = event::encode(r, &self.stream_arn);
                Some(Record {
                    sequence: SequenceNumber(seq),
                    arrival_ms,
                    event: bytes,
                })
            })
            .collect();
        let caught_up = records.len() < PAGE_LIMIT as usize;
        Ok(self
            .cursor
            .page(records, out.next_shard_iterator(), caught_up, None))
    }
}
