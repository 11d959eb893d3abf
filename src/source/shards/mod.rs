//! The shard-iterator sources, once: Kinesis Data Streams and DynamoDB Streams are both a
//! [`ShardSource`] over a small per-service [`ShardApi`] (one paginated listing call, the stream's
//! retention, GetShardIterator, GetRecords, each with its own error classification and record
//! encoding). Everything they share lives here: paginated shard listing ([`list`]) and the reader
//! ([`IteratorReader`]) with its iterator bookkeeping, pacing, caught-up detection, timestamp
//! skipping, expired-iterator and trimmed-data handling.

mod reader;
#[cfg(test)]
mod tests;

use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

use super::{EventFormat, Partition, PartitionReader, Position, Record, Source, SourceError};
use crate::model::{SequenceNumber, StartingPosition};
pub use reader::IteratorReader;

/// A service's per-shard read limits, which the reader paces itself by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// Between two GetRecords calls on one shard (the service's reads-per-second limit).
    pub read_interval: Duration,
    /// Between two GetRecords calls once the shard is caught up.
    pub caught_up_interval: Duration,
    /// GetRecords' maximum page; a fuller page means the shard has more to read at once.
    pub page_limit: usize,
}

/// Where a new shard iterator starts: a [`Position`] short of the shard's end (a reader at the end
/// asks for no iterator).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum IteratorStart<'a> {
    /// AFTER_SEQUENCE_NUMBER.
    After(&'a SequenceNumber),
    /// TRIM_HORIZON, LATEST or AT_TIMESTAMP.
    At(StartingPosition),
}

/// One GetRecords answer, its records already encoded as event entries.
#[derive(Debug, Default)]
pub struct RawPage {
    pub records: Vec<Record>,
    /// None: the shard is closed and this was its last page.
    pub next_iterator: Option<String>,
    /// How far the shard's tip is ahead (Kinesis' `MillisBehindLatest`; DynamoDB has none).
    pub millis_behind: Option<i64>,
}

/// One page of a stream's shards and the token of the next page (None or empty: the last).
pub type ShardPage = (Vec<Partition>, Option<String>);

/// What a failed call was, as its service classifies its SDK error. [`Fault::on_shard`] and
/// [`Fault::on_stream`] make it the [`SourceError`] the engine sees, worded alike for every service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The shard iterator expired (the reader re-fetches one after its last record).
    ExpiredIterator,
    /// The position is older than the stream's retention (the reader restarts at TRIM_HORIZON).
    Trimmed,
    /// A rate limit (per shard, per account or KMS).
    Throttled,
    /// The stream or shard does not exist.
    NotFound,
    /// Anything else, transport errors included.
    Other,
}

impl Fault {
    /// A failed `op` (GetShardIterator, GetRecords) on `shard` of `stream`; `text` is the error.
    pub fn on_shard(self, op: &str, stream: &str, shard: &str, text: String) -> SourceError {
        match self {
            Fault::ExpiredIterator => SourceError::ExpiredIterator,
            Fault::Trimmed => SourceError::Trimmed(format!("{op} {shard}: {text}")),
            Fault::Throttled => SourceError::Throttled(format!("{op}: {text}")),
            Fault::NotFound => SourceError::NotFound(format!("{stream}/{shard}")),
            Fault::Other => SourceError::Service(format!("{op} {shard}: {text}")),
        }
    }

    /// A failed `op` on the whole `stream` (listing shards, reading its retention).
    pub fn on_stream(self, op: &str, stream: &str, text: String) -> SourceError {
        match self {
            Fault::NotFound => SourceError::NotFound(stream.to_string()),
            Fault::Throttled => SourceError::Throttled(format!("{op}: {text}")),
            Fault::ExpiredIterator | Fault::Trimmed | Fault::Other => {
                SourceError::Service(format!("{op} {stream}: {text}"))
            }
        }
    }
}

/// What a shard-iterator service provides: its SDK calls, each failure classified as a [`Fault`]
/// (made a [`SourceError`] by [`Fault::on_shard`] or [`Fault::on_stream`]), and its records encoded.
#[async_trait]
pub trait ShardApi: Send + Sync + 'static {
    fn limits(&self) -> ReadLimits;
    fn format(&self) -> EventFormat;
    /// How long the stream keeps a record (see [`Source::retention`]).
    async fn retention(&self) -> Result<Duration, SourceError>;
    /// One page of the stream's shards, from `token` (None: the first page).
    async fn list_page(&self, token: Option<String>) -> Result<ShardPage, SourceError>;
    /// GetShardIterator; None if the service answered without one.
    async fn get_iterator(
        &self,
        shard: &str,
        from: IteratorStart<'_>,
    ) -> Result<Option<String>, SourceError>;
    /// At most `limits().page_limit` records from `iterator`.
    async fn get_records(&self, shard: &str, iterator: String) -> Result<RawPage, SourceError>;
}

/// Every shard of the stream, open and closed, with their lineage: `list_page` until the last.
pub async fn list<A: ShardApi + ?Sized>(api: &A) -> Result<Vec<Partition>, SourceError> {
    let mut shards = Vec::new();
    let mut token = None;
    loop {
        let (page, next) = api.list_page(token.take()).await?;
        shards.extend(page);
        match next {
            Some(t) if !t.is_empty() => token = Some(t),
            _ => return Ok(shards),
        }
    }
}

/// A stream read through shard iterators (`KinesisSource`, `DynamoDbSource`).
pub struct ShardSource<A> {
    api: Arc<A>,
    /// The mapping's caught-up polling interval; `None`: the service's default.
    caught_up_interval: Option<Duration>,
}

impl<A: ShardApi> ShardSource<A> {
    pub fn from_api(api: A) -> Self {
        ShardSource {
            api: Arc::new(api),
            caught_up_interval: None,
        }
    }

    /// Its readers wait `interval` between reads of a caught-up shard (the mapping's
    /// `CaughtUpPollingIntervalMillis`) instead of [`ReadLimits::caught_up_interval`].
    pub fn with_caught_up_interval(mut self, interval: Duration) -> Self {
        self.caught_up_interval = Some(interval);
        self
    }

    /// The service's calls, shared with another reader of the same stream (enhanced fan-out).
    pub fn api(&self) -> &Arc<A> {
        &self.api
    }
}

#[async_trait]
impl<A: ShardApi> Source for ShardSource<A> {
    async fn list_partitions(&self) -> Result<Vec<Partition>, SourceError> {
        list(&*self.api).await
    }

    fn open(&self, partition: &Partition, from: Position) -> Box<dyn PartitionReader> {
        Box::new(
            IteratorReader::new(self.api.clone(), partition.id.clone(), from)
                .with_caught_up_interval(self.caught_up_interval),
        )
    }

    fn format(&self, _partition: &Partition) -> EventFormat {
        self.api.format()
    }

    async fn retention(&self) -> Result<Duration, SourceError> {
        self.api.retention().await
    }
}
