//! Kinesis Data Streams source: ListShards (paginated), and a per-shard reader doing
//! GetShardIterator + GetRecords within Kinesis's per-shard limits. Events are encoded the way
//! Lambda builds them (see [`event`]).

pub mod event;
mod reader;

use async_trait::async_trait;
use aws_sdk_kinesis::Client;
use std::sync::Arc;

use super::{ShardInfo, ShardReader, SourceError, StartFrom, StreamSource};
pub(crate) use crate::aws::error_text;
pub use event::EventContext;
use reader::KinesisShardReader;

/// One Kinesis stream.
pub struct KinesisSource {
    client: Client,
    stream: String,
    ctx: Arc<EventContext>,
}

impl KinesisSource {
    pub fn new(client: Client, stream: String, ctx: EventContext) -> Self {
        KinesisSource {
            client,
            stream,
            ctx: Arc::new(ctx),
        }
    }
}

#[async_trait]
impl StreamSource for KinesisSource {
    async fn list_shards(&self) -> Result<Vec<ShardInfo>, SourceError> {
        let mut shards = Vec::new();
        let mut token: Option<String> = None;
        loop {
            // ListShards takes either the stream name or a NextToken, never both.
            let req = match &token {
                Some(t) => self.client.list_shards().next_token(t),
                None => self.client.list_shards().stream_name(&self.stream),
            };
            let out = req.send().await.map_err(|e| {
                let svc = e.as_service_error();
                if svc.is_some_and(|s| s.is_resource_not_found_exception()) {
                    SourceError::NotFound(self.stream.clone())
                } else if svc.is_some_and(|s| s.is_limit_exceeded_exception()) {
                    SourceError::Throttled(format!("ListShards: {}", error_text(&e)))
                } else {
                    SourceError::Service(format!("ListShards {}: {}", self.stream, error_text(&e)))
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
                shards.push(ShardInfo {
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

    fn open(&self, shard: &ShardInfo, from: StartFrom) -> Box<dyn ShardReader> {
        Box::new(KinesisShardReader::new(
            self.client.clone(),
            self.stream.clone(),
            shard.id.clone(),
            from,
            self.ctx.clone(),
        ))
    }

    fn batch_info_key(&self) -> &'static str {
        "KinesisBatchInfo"
    }
}
