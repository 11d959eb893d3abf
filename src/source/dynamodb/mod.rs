//! DynamoDB Streams source: DescribeStream (paginated) for shards and their `ParentShardId`, and a
//! per-shard reader doing GetShardIterator + GetRecords at most 4 times a second (Lambda's base rate
//! for DynamoDB triggers). Events are encoded the way Lambda builds them (see [`event`]).

pub mod event;
mod reader;

use async_trait::async_trait;
use aws_sdk_dynamodbstreams::Client;
use std::sync::Arc;
use std::time::Duration;

use super::{EventFormat, Partition, PartitionReader, Position, Source, SourceError};
use crate::aws::error_text;
use reader::DynamoDbShardReader;

/// DynamoDB Streams keeps every record for 24 hours; the retention cannot be changed.
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);

/// One DynamoDB stream. The client must be one for the stream ARN's region.
pub struct DynamoDbSource {
    client: Client,
    stream_arn: Arc<str>,
}

impl DynamoDbSource {
    pub fn new(client: Client, stream_arn: String) -> Self {
        DynamoDbSource {
            client,
            stream_arn: stream_arn.into(),
        }
    }
}

#[async_trait]
impl Source for DynamoDbSource {
    async fn list_partitions(&self) -> Result<Vec<Partition>, SourceError> {
        let mut shards = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let out = self
                .client
                .describe_stream()
                .stream_arn(&*self.stream_arn)
                .set_exclusive_start_shard_id(start.take())
                .send()
                .await
                .map_err(|e| {
                    let svc = e.as_service_error();
                    if svc.is_some_and(|s| s.is_resource_not_found_exception()) {
                        SourceError::NotFound(self.stream_arn.to_string())
                    } else {
                        SourceError::Service(format!("DescribeStream: {}", error_text(&e)))
                    }
                })?;
            let Some(desc) = out.stream_description() else {
                break;
            };
            for s in desc.shards() {
                let Some(id) = s.shard_id() else { continue };
                let closed = s
                    .sequence_number_range()
                    .and_then(|r| r.ending_sequence_number())
                    .is_some();
                shards.push(Partition {
                    id: id.to_string(),
                    parents: s
                        .parent_shard_id()
                        .map(|p| vec![p.to_string()])
                        .unwrap_or_default(),
                    closed,
                });
            }
            match desc.last_evaluated_shard_id() {
                Some(last) if !last.is_empty() => start = Some(last.to_string()),
                _ => break,
            }
        }
        Ok(shards)
    }

    fn open(&self, shard: &Partition, from: Position) -> Box<dyn PartitionReader> {
        Box::new(DynamoDbShardReader::new(
            self.client.clone(),
            self.stream_arn.clone(),
            shard.id.clone(),
            from,
        ))
    }

    fn format(&self) -> EventFormat {
        EventFormat::DYNAMODB
    }

    async fn retention(&self) -> Result<Duration, SourceError> {
        Ok(RETENTION)
    }
}
