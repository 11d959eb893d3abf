//! Kinesis Data Streams source: ListShards (paginated), and a per-shard reader doing
//! GetShardIterator + GetRecords within Kinesis's per-shard limits. Events are encoded the way
//! Lambda builds them (see [`event`]). The stream is addressed by its ARN (`StreamARN` on every
//! call), never by name: the ARN's account and region decide what is read (the client must be one
//! for the ARN's region, see `aws::Clients::for_arn`).

pub mod event;
mod reader;

use async_trait::async_trait;
use aws_sdk_kinesis::Client;
use std::sync::Arc;
use std::time::Duration;

use super::{EventFormat, Partition, PartitionReader, Position, Source, SourceError};
pub(crate) use crate::aws::error_text;
pub use event::EventContext;
use reader::KinesisShardReader;

/// One Kinesis stream, `ctx.stream_arn`.
pub struct KinesisSource {
    client: Client,
    ctx: Arc<EventContext>,
}

impl KinesisSource {
    /// `client` must be for the region of `ctx.stream_arn`.
    pub fn new(client: Client, ctx: EventContext) -> Self {
        KinesisSource {
            client,
            ctx: Arc::new(ctx),
        }
    }

    fn arn(&self) -> &str {
        &self.ctx.stream_arn
    }
}

#[async_trait]
impl Source for KinesisSource {
    async fn list_partitions(&self) -> Result<Vec<Partition>, SourceError> {
        let mut shards = Vec::new();
        let mut token: Option<String> = None;
        loop {
            // ListShards takes either the stream or a NextToken, never both.
            let req = match &token {
                Some(t) => self.client.list_shards().next_token(t),
                None => self.client.list_shards().stream_arn(self.arn()),
            };
            let out = req.send().await.map_err(|e| {
                let svc = e.as_service_error();
                if svc.is_some_and(|s| s.is_resource_not_found_exception()) {
                    SourceError::NotFound(self.arn().to_string())
                } else if svc.is_some_and(|s| s.is_limit_exceeded_exception()) {
                    SourceError::Throttled(format!("ListShards: {}", error_text(&e)))
                } else {
                    SourceError::Service(format!("ListShards {}: {}", self.arn(), error_text(&e)))
                }
            })?;
            for s in out.shards() {
                let parents = [s.parent_shard_id(), s.adjacent_parent_shard_id()]
                    .into_iter()
                    .flatten()
                    .map(str::to_string)
                    .collect();
                let closed = s
                    .sequence_number_range()
                    .and_then(|r| r.ending_sequence_number())
                    .is_some();
                shards.push(Partition {
                    id: s.shard_id().to_string(),
                    parents,
                    closed,
                });
            }
            match out.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(shards)
    }

    fn open(&self, shard: &Partition, from: Position) -> Box<dyn PartitionReader> {
        Box::new(KinesisShardReader::new(
            self.client.clone(),
            shard.id.clone(),
            from,
            self.ctx.clone(),
        ))
    }

    fn format(&self) -> EventFormat {
        EventFormat::KINESIS
    }

    /// DescribeStreamSummary's `RetentionPeriodHours`.
    async fn retention(&self) -> Result<Duration, SourceError> {
        let out = self
            .client
            .describe_stream_summary()
            .stream_arn(self.arn())
            .send()
            .await
            .map_err(|e| {
                let svc = e.as_service_error();
                if svc.is_some_and(|s| s.is_resource_not_found_exception()) {
                    SourceError::NotFound(self.arn().to_string())
                } else if svc.is_some_and(|s| s.is_limit_exceeded_exception()) {
                    SourceError::Throttled(format!("DescribeStreamSummary: {}", error_text(&e)))
                } else {
                    SourceError::Service(format!(
                        "DescribeStreamSummary {}: {}",
                        self.arn(),
                        error_text(&e)
                    ))
                }
            })?;
        let hours = out
            .stream_description_summary()
            .map(|s| s.retention_period_hours())
            .ok_or_else(|| {
                SourceError::Service("DescribeStreamSummary returned no stream summary".into())
            })?;
        u64::try_from(hours)
            .ok()
            .filter(|h| *h > 0)
            .map(|h| Duration::from_secs(h * 3600))
            .ok_or_else(|| {
                SourceError::Service(format!(
                    "DescribeStreamSummary {}: RetentionPeriodHours {hours}",
                    self.arn()
                ))
            })
    }
}
