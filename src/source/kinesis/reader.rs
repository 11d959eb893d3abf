//! One Kinesis shard, read in order: GetShardIterator from the checkpoint (AFTER_SEQUENCE_NUMBER) or
//! the StartingPosition, then GetRecords. At most 5 reads per second per shard; at Lambda's base
//! rate of one per second once caught up. An expired iterator is re-fetched just after the last
//! record this reader handed out (or from where it started, if none), never from StartingPosition.

use async_trait::async_trait;
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::ShardIteratorType;
use aws_sdk_kinesis::Client;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};
use tokio::time::Instant;

use super::{error_text, event, EventContext};
use crate::config::StartingPosition;
use crate::source::cursor::ShardCursor;
use crate::source::{Page, PartitionReader, Position, Record, SequenceNumber, SourceError};

/// Kinesis allows 5 GetRecords calls per second per shard.
const MIN_READ_INTERVAL: Duration = Duration::from_millis(200);
/// Lambda's base polling rate for a caught-up shard.
const IDLE_READ_INTERVAL: Duration = Duration::from_secs(1);
/// GetRecords' maximum page.
const PAGE_LIMIT: i32 = 10_000;

pub(super) struct KinesisShardReader {
    client: Client,
    shard_id: String,
    ctx: Arc<EventContext>,
    cursor: ShardCursor,
}

impl KinesisShardReader {
    pub(super) fn new(
        client: Client,
        shard_id: String,
        start: Position,
        ctx: Arc<EventContext>,
    ) -> Self {
        KinesisShardReader {
            client,
            shard_id,
            ctx,
            cursor: ShardCursor::new(start),
        }
    }

    async fn fetch_iterator(&self) -> Result<String, SourceError> {
        let req = self
            .client
            .get_shard_iterator()
            .stream_arn(&self.ctx.stream_arn)
            .shard_id(&self.shard_id);
        let req = match &self.cursor.start {
            Position::After(seq) => req
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(&seq.0),
            Position::Start(StartingPosition::TrimHorizon) => {
                req.shard_iterator_type(ShardIteratorType::TrimHorizon)
            }
            Position::Start(StartingPosition::Latest) => {
                req.shard_iterator_type(ShardIteratorType::Latest)
            }
            Position::Start(StartingPosition::AtTimestamp(t)) => {
                let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
                req.shard_iterator_type(ShardIteratorType::AtTimestamp)
                    .timestamp(DateTime::from_secs_f64(since.as_secs_f64()))
            }
            // A cursor opened at the end reports ShardEnd without asking for an iterator.
            Position::End => {
                return Err(SourceError::Service(
                    "no iterator past a shard's end".into(),
                ))
            }
        };
        let out = req.send().await.map_err(|e| {
            let svc = e.as_service_error();
            if svc.is_some_and(|s| s.is_provisioned_throughput_exceeded_exception()) {
                SourceError::Throttled(format!("GetShardIterator: {}", error_text(&e)))
            } else if svc.is_some_and(|s| s.is_resource_not_found_exception()) {
                SourceError::NotFound(format!("{}/{}", self.ctx.stream_arn, self.shard_id))
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
impl PartitionReader for KinesisShardReader {
    fn next_read_at(&self) -> Instant {
        self.cursor.next_read_at()
    }

    async fn read(&mut self) -> Result<Page, SourceError> {
        if self.cursor.ended() {
            return Ok(Page::ShardEnd);
        }
        let iterator = match self.cursor.iterator() {
            Some(it) => it,
            None => {
                let it = self.fetch_iterator().await?;
                self.cursor.set_iterator(it.clone());
                it
            }
        };
        let called_at = Instant::now();
        let result = self
            .client
            .get_records()
            .stream_arn(&self.ctx.stream_arn)
            .shard_iterator(iterator)
            .limit(PAGE_LIMIT)
            .send()
            .await;
        self.cursor.called(called_at, MIN_READ_INTERVAL);
        let out = match result {
            Ok(out) => out,
            Err(e) => {
                let svc = e.as_service_error();
                return Err(if svc.is_some_and(|s| s.is_expired_iterator_exception()) {
                    self.cursor.expire();
                    SourceError::ExpiredIterator
                } else if svc.is_some_and(|s| {
                    s.is_provisioned_throughput_exceeded_exception()
                        || s.is_kms_throttling_exception()
                }) {
                    SourceError::Throttled(format!("GetRecords: {}", error_text(&e)))
                } else if svc.is_some_and(|s| s.is_resource_not_found_exception()) {
                    SourceError::NotFound(format!("{}/{}", self.ctx.stream_arn, self.shard_id))
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
            .map(|r| {
                let arrival_ms = r
                    .approximate_arrival_timestamp()
                    .map(|t| t.to_millis().unwrap_or(0))
                    .unwrap_or(0);
                let encryption = r.encryption_type().map(|t| t.as_str());
                Record {
                    sequence: SequenceNumber(r.sequence_number().to_string()),
                    arrival_ms,
                    event: event::encode(
                        &self.ctx,
                        &self.shard_id,
                        r.sequence_number(),
                        r.partition_key().unwrap_or_default(),
                        r.data().as_ref(),
                        arrival_ms,
                        encryption,
                    ),
                }
            })
            .collect();
        let millis_behind = out.millis_behind_latest();
        let caught_up = records.len() < PAGE_LIMIT as usize && millis_behind.unwrap_or(0) == 0;
        if caught_up {
            self.cursor.called(called_at, IDLE_READ_INTERVAL);
        }
        Ok(self
            .cursor
            .page(records, out.next_shard_iterator(), caught_up, millis_behind))
    }
}
