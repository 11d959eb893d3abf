//! Kinesis Data Streams as a [`ShardApi`]: ListShards (paginated), DescribeStreamSummary's retention,
//! GetShardIterator (through the SDK) and GetRecords (sent by hand, see [`wire`]: the one call made
//! once a second per shard), each classified into [`SourceError`], and records encoded the way
//! Lambda builds them (see [`event`]; GetRecords' base64 `Data` goes into the entry as it came).
//! Reading itself (pacing, iterators, caught-up) is the shared
//! [`IteratorReader`](crate::source::shards::IteratorReader): at most 5 reads per second per shard,
//! at Lambda's base rate of one per second once caught up. The stream is addressed by its
//! ARN (`StreamARN` on every call), never by name: the ARN's account and region decide what is read
//! (the client must be one for the ARN's region, see `aws::Clients::for_arn`). A mapping on a stream
//! consumer ARN lists shards the same way but reads them with SubscribeToShard ([`fanout`]).

pub mod event;
pub mod fanout;
#[cfg(test)]
mod fanout_tests;
pub mod wire;

use async_trait::async_trait;
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::ShardIteratorType;
use aws_sdk_kinesis::Client;
use std::time::{Duration, UNIX_EPOCH};

use super::shards::{Fault, IteratorStart, RawPage, ReadLimits, ShardApi, ShardPage, ShardSource};
use super::{EventFormat, Partition, Record, SequenceNumber, SourceError};
use crate::aws::{error_text, Clients};
use crate::model::{lane_key, StartingPosition};
use event::Data;
pub use event::EventContext;
pub use fanout::FanoutSource;
use wire::Wire;

/// Kinesis allows 5 GetRecords calls per second per shard; Lambda's base polling rate for a
/// caught-up shard is once a second; GetRecords returns at most 10,000 records.
pub const LIMITS: ReadLimits = ReadLimits {
    read_interval: Duration::from_millis(200),
    caught_up_interval: Duration::from_secs(1),
    page_limit: 10_000,
};

/// One Kinesis stream, `ctx.stream_arn`.
pub type KinesisSource = ShardSource<KinesisApi>;

impl KinesisSource {
    /// `clients` must be those of the region of `ctx`'s stream. Fails only without a region or
    /// when no HTTP client could be built (TLS set-up).
    pub fn new(clients: &Clients, ctx: EventContext) -> Result<Self, String> {
        Ok(ShardSource::from_api(KinesisApi::new(clients, ctx)?))
    }
}

/// The Kinesis calls of one stream.
pub struct KinesisApi {
    client: Client,
    wire: Wire,
    ctx: EventContext,
}

impl KinesisApi {
    /// `clients` must be those of the region of `ctx`'s stream.
    pub fn new(clients: &Clients, ctx: EventContext) -> Result<Self, String> {
        Ok(KinesisApi {
            client: clients.kinesis.clone(),
            wire: Wire::new(clients.kinesis_data_plane()?),
            ctx,
        })
    }

    fn arn(&self) -> &str {
        self.ctx.stream_arn()
    }
}

#[async_trait]
impl ShardApi for KinesisApi {
    fn limits(&self) -> ReadLimits {
        LIMITS
    }

    fn format(&self) -> EventFormat {
        EventFormat::KINESIS
    }

    /// DescribeStreamSummary's `RetentionPeriodHours`.
    async fn retention(&self) -> Result<Duration, SourceError> {
        let op = "DescribeStreamSummary";
        let out = self
            .client
            .describe_stream_summary()
            .stream_arn(self.arn())
            .send()
            .await
            .map_err(|e| {
                let fault = match e.as_service_error() {
                    Some(s) if s.is_resource_not_found_exception() => Fault::NotFound,
                    Some(s) if s.is_limit_exceeded_exception() => Fault::Throttled,
                    _ => Fault::Other,
                };
                fault.on_stream(op, self.arn(), error_text(&e))
            })?;
        let hours = out
            .stream_description_summary()
            .map(|s| s.retention_period_hours())
            .ok_or_else(|| SourceError::Service(format!("{op} returned no stream summary")))?;
        u64::try_from(hours)
            .ok()
            .filter(|h| *h > 0)
            .map(|h| Duration::from_secs(h * 3600))
            .ok_or_else(|| {
                SourceError::Service(format!("{op} {}: RetentionPeriodHours {hours}", self.arn()))
            })
    }

    async fn list_page(&self, token: Option<String>) -> Result<ShardPage, SourceError> {
        // ListShards takes either the stream or a NextToken, never both.
        let req = match &token {
            Some(t) => self.client.list_shards().next_token(t),
            None => self.client.list_shards().stream_arn(self.arn()),
        };
        let out = req.send().await.map_err(|e| {
            let fault = match e.as_service_error() {
                Some(s) if s.is_resource_not_found_exception() => Fault::NotFound,
                Some(s) if s.is_limit_exceeded_exception() => Fault::Throttled,
                _ => Fault::Other,
            };
            fault.on_stream("ListShards", self.arn(), error_text(&e))
        })?;
        let shards = out
            .shards()
            .iter()
            .map(|s| Partition {
                id: s.shard_id().to_string(),
                parents: [s.parent_shard_id(), s.adjacent_parent_shard_id()]
                    .into_iter()
                    .flatten()
                    .map(str::to_string)
                    .collect(),
                closed: s
                    .sequence_number_range()
                    .and_then(|r| r.ending_sequence_number())
                    .is_some(),
            })
            .collect();
        Ok((shards, out.next_token().map(str::to_string)))
    }

    async fn get_iterator(
        &self,
        shard: &str,
        from: IteratorStart<'_>,
    ) -> Result<Option<String>, SourceError> {
        let req = self
            .client
            .get_shard_iterator()
            .stream_arn(self.arn())
            .shard_id(shard);
        let req = match from {
            IteratorStart::After(seq) => req
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(&seq.0),
            IteratorStart::At(StartingPosition::TrimHorizon) => {
                req.shard_iterator_type(ShardIteratorType::TrimHorizon)
            }
            IteratorStart::At(StartingPosition::Latest) => {
                req.shard_iterator_type(ShardIteratorType::Latest)
            }
            IteratorStart::At(StartingPosition::AtTimestamp(t)) => {
                let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
                req.shard_iterator_type(ShardIteratorType::AtTimestamp)
                    .timestamp(DateTime::from_secs_f64(since.as_secs_f64()))
            }
        };
        let out = req.send().await.map_err(|e| {
            let fault = match e.as_service_error() {
                Some(s) if s.is_provisioned_throughput_exceeded_exception() => Fault::Throttled,
                Some(s) if s.is_resource_not_found_exception() => Fault::NotFound,
                _ => Fault::Other,
            };
            fault.on_shard("GetShardIterator", self.arn(), shard, error_text(&e))
        })?;
        Ok(out.shard_iterator().map(str::to_string))
    }

    async fn get_records(&self, shard: &str, iterator: String) -> Result<RawPage, SourceError> {
        let op = "GetRecords";
        let body = self
            .wire
            .get_records(self.arn(), &iterator, LIMITS.page_limit as u32)
            .await
            .map_err(|e| {
                let fault = match e.code() {
                    Some("ExpiredIteratorException") => Fault::ExpiredIterator,
                    Some("ProvisionedThroughputExceededException" | "KMSThrottlingException") => {
                        Fault::Throttled
                    }
                    Some("ResourceNotFoundException") => Fault::NotFound,
                    _ => Fault::Other,
                };
                fault.on_shard(op, self.arn(), shard, e.text())
            })?;
        wire::page(&self.ctx, shard, &body)
            .map_err(|e| Fault::Other.on_shard(op, self.arn(), shard, e))
    }
}

/// One Kinesis record as its entry in the function's event, from its fields: the one way both
/// readers make it (GetRecords' page, [`wire::page`], and SubscribeToShard's events, [`record`]).
pub(crate) fn entry(
    ctx: &EventContext,
    shard: &str,
    sequence: &str,
    partition_key: &str,
    data: Data,
    arrival_ms: i64,
    encryption_type: Option<&str>,
) -> Record {
    Record {
        sequence: SequenceNumber(sequence.to_string()),
        arrival_ms,
        lane_key: lane_key(partition_key.as_bytes()),
        event: event::encode(
            ctx,
            shard,
            sequence,
            partition_key,
            data,
            arrival_ms,
            encryption_type,
        ),
    }
}

/// A record of a SubscribeToShard event as its entry (see [`entry`]).
pub(crate) fn record(
    ctx: &EventContext,
    shard: &str,
    r: &aws_sdk_kinesis::types::Record,
) -> Record {
    // Rounded to the millisecond, as a polled record's (`wire::page`).
    let arrival_ms = r.approximate_arrival_timestamp().map_or(0, |t| {
        t.secs()
            .saturating_mul(1000)
            .saturating_add((i64::from(t.subsec_nanos()) + 500_000) / 1_000_000)
    });
    entry(
        ctx,
        shard,
        r.sequence_number(),
        r.partition_key().unwrap_or_default(),
        Data::Bytes(r.data().as_ref()),
        arrival_ms,
        r.encryption_type().map(|t| t.as_str()),
    )
}
