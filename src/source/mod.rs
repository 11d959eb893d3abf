//! The source seam: what a stream source (Kinesis now, DynamoDB Streams later) gives the engine.
//! A [`StreamSource`] lists shards and opens a [`ShardReader`] at a position; the reader returns pages
//! of [`Record`]s already encoded as their entry in the function's event JSON, so everything after
//! the reader (batching, dispatch, retries, checkpoints) is source-agnostic.

mod cursor;
pub mod dynamodb;
pub mod kinesis;
pub mod lineage;
pub mod sqs;

use async_trait::async_trait;
use std::cmp::Ordering;
use std::fmt;
use tokio::time::Instant;

use crate::config::StartingPosition;

/// A stream sequence number: a decimal string of up to 129 digits. Ordered by length, then
/// lexicographically (DESIGN.md invariant 3), never parsed as an integer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct SequenceNumber(pub String);

impl Ord for SequenceNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .len()
            .cmp(&other.0.len())
            .then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for SequenceNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One record, read and encoded.
#[derive(Debug, Clone)]
pub struct Record {
    pub sequence: SequenceNumber,
    /// Approximate arrival in the stream, epoch milliseconds (record age is measured from it).
    pub arrival_ms: i64,
    /// This record's entry in the event's `Records` array, serialized JSON.
    pub event: Vec<u8>,
}

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

/// A shard as listed by the source.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardInfo {
    pub id: String,
    pub parents: Vec<String>,
    pub closed: bool,
}

/// Where a reader starts.
#[derive(Debug, Clone, PartialEq)]
pub enum StartFrom {
    /// Just after a checkpointed sequence number.
    After(SequenceNumber),
    /// The mapping's StartingPosition (no checkpoint yet).
    Position(StartingPosition),
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

/// A stream with shards.
#[async_trait]
pub trait StreamSource: Send + Sync {
    /// Every shard the stream currently reports, open and closed.
    async fn list_shards(&self) -> Result<Vec<ShardInfo>, SourceError>;
    /// A reader for `shard` starting at `from`.
    fn open(&self, shard: &ShardInfo, from: StartFrom) -> Box<dyn ShardReader>;
    /// The key of the batch-info object in on-failure records (`KinesisBatchInfo`, `DDBStreamBatchInfo`).
    fn batch_info_key(&self) -> &'static str;
    /// How long the stream keeps a record: a record older than this is gone from the stream.
    /// Kinesis: the stream's `RetentionPeriodHours`; DynamoDB Streams: 24 hours.
    async fn retention(&self) -> Result<std::time::Duration, SourceError>;
}

/// Reads one shard in order. Implementations pace themselves within the source's per-shard limits
/// and report when the next read may be made.
#[async_trait]
pub trait ShardReader: Send {
    /// The earliest instant the next [`ShardReader::read`] should be made.
    fn next_read_at(&self) -> Instant;
    /// Reads the next page. Cancel-safe: state changes only after the last await.
    async fn read(&mut self) -> Result<Page, SourceError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_order_by_length_then_digits() {
        let s = |x: &str| SequenceNumber(x.into());
        assert!(s("9") < s("10"));
        assert!(
            s("49590338271490256608559692538361571095921575989136588898")
                > s("4959033827149025660855969253836157109592157598913658889")
        );
        assert!(s("123") < s("124"));
        let mut v = vec![s("100"), s("20"), s("3")];
        v.sort();
        assert_eq!(v, vec![s("3"), s("20"), s("100")]);
    }
}
