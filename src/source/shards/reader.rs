//! One shard read in order through a [`ShardApi`]: GetShardIterator from where the reader is, then
//! GetRecords within the service's [`ReadLimits`](super::ReadLimits) (once per `read_interval`, once
//! per `caught_up_interval` when the page says the shard is caught up).
//!
//! The reader remembers where a new iterator must start: just after the last record it handed on,
//! else where it was opened. An expired iterator is re-fetched from there at once, never from the
//! mapping's StartingPosition; trimmed data (the position is older than the stream's retention)
//! restarts at TRIM_HORIZON, the oldest record still there. A reader opened at a timestamp skips
//! the records that arrived before it (DynamoDB Streams has no AT_TIMESTAMP iterator: it reads from
//! TRIM_HORIZON and relies on this; for Kinesis the filter never drops anything).

use async_trait::async_trait;
use std::sync::Arc;
use tokio::time::Instant;

use super::{IteratorStart, RawPage, ShardApi};
use crate::model::StartingPosition;
use crate::source::{Page, PartitionReader, Position, SourceError};

pub struct IteratorReader<A> {
    api: Arc<A>,
    shard: String,
    /// Where a new iterator starts.
    pub(super) start: Position,
    pub(super) iterator: Option<String>,
    /// The shard is closed and every record was handed on.
    pub(super) ended: bool,
    next_read_at: Instant,
    /// Records that arrived before this (epoch ms, whole seconds) are skipped, until the first
    /// record at or after it.
    skip_before_ms: Option<i64>,
    /// The mapping's `CaughtUpPollingIntervalMillis`, in place of the service's default.
    caught_up_interval: Option<std::time::Duration>,
}

impl<A: ShardApi> IteratorReader<A> {
    pub fn new(api: Arc<A>, shard: String, start: Position) -> Self {
        let skip_before_ms = match &start {
            Position::Start(StartingPosition::AtTimestamp(t)) => Some(
                // Whole seconds: DynamoDB's ApproximateCreationDateTime has no finer precision,
                // so a record of the same second is kept.
                t.duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64 * 1000)
                    .unwrap_or(0),
            ),
            _ => None,
        };
        IteratorReader {
            api,
            shard,
            skip_before_ms,
            ended: start == Position::End,
            start,
            iterator: None,
            next_read_at: Instant::now(),
            caught_up_interval: None,
        }
    }

    /// Waits `interval` between reads of a caught-up shard instead of the service's
    /// [`ReadLimits::caught_up_interval`](super::ReadLimits) (never less than its read interval).
    pub fn with_caught_up_interval(mut self, interval: Option<std::time::Duration>) -> Self {
        self.caught_up_interval = interval;
        self
    }

    /// The current iterator, or a new one from `start`. A trimmed start moves to TRIM_HORIZON.
    async fn iterator(&mut self) -> Result<String, SourceError> {
        if let Some(it) = &self.iterator {
            return Ok(it.clone());
        }
        let from = match &self.start {
            Position::After(seq) => IteratorStart::After(seq),
            Position::Start(p) => IteratorStart::At(*p),
            // `ended` is set with `End`, and read() answers ShardEnd before asking for an iterator.
            Position::End => {
                return Err(SourceError::Service(
                    "no iterator past a shard's end".into(),
                ))
            }
        };
        let fetched = self
            .api
            .get_iterator(&self.shard, from)
            .await
            .and_then(|it| {
                it.ok_or_else(|| {
                    SourceError::Service("GetShardIterator returned no iterator".into())
                })
            });
        match fetched {
            Ok(it) => {
                self.iterator = Some(it.clone());
                Ok(it)
            }
            Err(e) => {
                if matches!(e, SourceError::Trimmed(_)) {
                    self.trimmed();
                }
                Err(e)
            }
        }
    }

    /// The position is past the stream's retention: start again from the oldest record there.
    fn trimmed(&mut self) {
        self.iterator = None;
        self.start = Position::Start(StartingPosition::TrimHorizon);
    }

    /// A page arrived: hands on its records (less those before a start timestamp), remembers the
    /// last one and the next iterator (none: the shard is closed).
    fn page(&mut self, raw: RawPage, caught_up: bool) -> Page {
        let RawPage {
            mut records,
            next_iterator,
            millis_behind,
        } = raw;
        if let Some(before) = self.skip_before_ms {
            let old = records.iter().take_while(|r| r.arrival_ms < before).count();
            if let Some(last) = records[..old].last() {
                self.start = Position::After(last.sequence.clone());
            }
            records.drain(..old);
            if !records.is_empty() {
                self.skip_before_ms = None;
            }
        }
        if let Some(last) = records.last() {
            self.start = Position::After(last.sequence.clone());
        }
        self.iterator = next_iterator;
        if self.iterator.is_none() {
            self.ended = true;
            if records.is_empty() {
                return Page::ShardEnd;
            }
        }
        Page::Records {
            records,
            caught_up,
            millis_behind,
        }
    }
}

#[async_trait]
impl<A: ShardApi> PartitionReader for IteratorReader<A> {
    fn next_read_at(&self) -> Instant {
        self.next_read_at
    }

    async fn read(&mut self) -> Result<Page, SourceError> {
        if self.ended {
            return Ok(Page::ShardEnd);
        }
        let iterator = self.iterator().await?;
        let limits = self.api.limits();
        let called_at = Instant::now();
        let result = self.api.get_records(&self.shard, iterator).await;
        self.next_read_at = called_at + limits.read_interval;
        match result {
            Ok(raw) => {
                let caught_up =
                    raw.records.len() < limits.page_limit && raw.millis_behind.unwrap_or(0) == 0;
                if caught_up {
                    let wait = self
                        .caught_up_interval
                        .unwrap_or(limits.caught_up_interval)
                        .max(limits.read_interval);
                    self.next_read_at = called_at + wait;
                }
                Ok(self.page(raw, caught_up))
            }
            Err(e) => {
                match e {
                    // Fetch a new one from `start`, at once.
                    SourceError::ExpiredIterator => {
                        self.iterator = None;
                        self.next_read_at = Instant::now();
                    }
                    SourceError::Trimmed(_) => self.trimmed(),
                    _ => {}
                }
                Err(e)
            }
        }
    }
}
