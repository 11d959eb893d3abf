//! The source seam: what a partitioned source (Kinesis, DynamoDB Streams) gives the engine.
//! A [`Source`] lists shards and opens a [`PartitionReader`] at a position; the reader returns pages
//! of [`Record`]s already encoded as their entry in the function's event JSON, so everything after
//! the reader (batching, dispatch, retries, checkpoints) is source-agnostic. Kinesis and DynamoDB
//! Streams are one [`shards::ShardSource`] each, over their per-service [`shards::ShardApi`].

pub mod dynamodb;
pub(crate) mod json;
pub mod kafka;
pub mod kinesis;
pub mod lineage;
pub mod shards;
pub mod sqs;

use async_trait::async_trait;
use tokio::time::Instant;

pub use crate::model::{EventFormat, Partition, Position, Record, SequenceNumber};

/// What one read returned.
#[derive(Debug)]
pub enum Page {
    /// Records (possibly none). `caught_up` is false while the shard has more to read at once.
    Records {
        records: Vec<Record>,
        caught_up: bool,
        millis_behind: Option<i64>,
    },
    /// The shard is closed and fully read.
    ShardEnd,
}

/// Source failures, classified for retry and metrics.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("throttled: {0}")]
    Throttled(String),
    #[error("shard iterator expired")]
    ExpiredIterator,
    #[error("stream not found: {0}")]
    NotFound(String),
    /// The position is older than the stream's retention; the reader restarts at TRIM_HORIZON.
    #[error("data trimmed: {0}")]
    Trimmed(String),
    #[error("{0}")]
    Service(String),
}

impl SourceError {
    /// A bounded metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceError::Throttled(_) => "throttled",
            SourceError::ExpiredIterator => "expired_iterator",
            SourceError::NotFound(_) => "not_found",
            SourceError::Trimmed(_) => "trimmed",
            SourceError::Service(_) => "service",
        }
    }
}

/// A partitioned source: a stream's shards (Kafka's topic-partitions next).
#[async_trait]
pub trait Source: Send + Sync {
    /// Every partition the source currently reports, open and closed, with their lineage.
    async fn list_partitions(&self) -> Result<Vec<Partition>, SourceError>;
    /// A reader for `partition` starting at `from` (a start sentinel or just after a record).
    fn open(&self, partition: &Partition, from: Position) -> Box<dyn PartitionReader>;
    /// How `partition`'s records become the event and its failure records (a Kafka event names
    /// its partition in its envelope; a stream's format is the same for every shard).
    fn format(&self, partition: &Partition) -> EventFormat;
    /// How long the stream keeps a record: a record older than this is gone from the stream.
    /// Kinesis: the stream's `RetentionPeriodHours`; DynamoDB Streams: 24 hours.
    async fn retention(&self) -> Result<std::time::Duration, SourceError>;
    /// True if the partitions listed follow this replica's leases (Kafka: the group's assignment),
    /// so the supervisor lists again whenever the leases change. A stream lists every shard
    /// whoever holds it, and a change of leases reuses a recent listing.
    fn lists_by_assignment(&self) -> bool {
        false
    }
}

/// Reads one partition in order. Implementations pace themselves within the source's per-partition
/// limits and report when the next read may be made.
#[async_trait]
pub trait PartitionReader: Send {
    /// The earliest instant the next [`PartitionReader::read`] should be made.
    fn next_read_at(&self) -> Instant;
    /// Reads the next page. Cancel-safe: state changes only after the last await.
    async fn read(&mut self) -> Result<Page, SourceError>;
}
