//! Reads one assigned partition from its buffer, in offset order. On its first read it puts the
//! partition where the worker was planned: just after the checkpoint (seeking back if the fetch
//! position ran ahead, as after a batch abandoned by a worker that stopped), or — for a partition
//! with no committed offset — at the mapping's starting position, resolved to an offset and
//! committed at once so a restart starts at the same place (durable LATEST and AT_TIMESTAMP).

use async_trait::async_trait;
use rdkafka::consumer::Consumer;
use rdkafka::message::OwnedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};
use tokio::time::Instant;
use tracing::info;

use super::consumer::{blocking, pause, KafkaConsumer};
use super::group::{Group, KafkaCheckpoints};
use super::seek::Seeks;
use crate::model::{Position, Record, StartingPosition};
use crate::source::{Page, PartitionReader, SourceError};

/// Turns a fetched record into its entry in the function's event.
pub type Encode = Arc<dyn Fn(&OwnedMessage) -> Record + Send + Sync>;

/// How long a read waits for records before returning an empty page.
const WAIT: Duration = Duration::from_millis(500);
/// How long a client call made while positioning may take.
const CALL: Duration = Duration::from_secs(10);

pub struct KafkaReader {
    pub(super) consumer: Arc<KafkaConsumer>,
    pub(super) group: Arc<Group>,
    pub(super) checkpoints: Arc<KafkaCheckpoints>,
    pub(super) seeks: Arc<Seeks>,
    pub(super) partition: i32,
    /// Where to put the partition before the first read (`None` once done).
    pub(super) from: Option<Position>,
    /// Records at or below this offset are skipped (already done).
    pub(super) skip_through: Option<i64>,
    pub(super) encode: Encode,
    pub(super) max_page: usize,
}

fn not_assigned(topic: &str, p: i32) -> SourceError {
    SourceError::NotFound(format!(
        "{topic}-{p} is no longer assigned to this consumer"
    ))
}

impl KafkaReader {
    fn topic(&self) -> &str {
        &self.group.topic
    }

    /// Puts the partition at `from`.
    async fn position(&mut self, from: &Position) -> Result<(), SourceError> {
        let p = self.partition;
        let next = match from {
            Position::After(seq) => seq
                .0
                .parse::<i64>()
                .map(|x| x + 1)
                .map_err(|_| SourceError::Service(format!("{seq} is not a Kafka offset")))?,
            Position::End => return Ok(()),
            Position::Start(start) => match self.checkpoints.committed(p).await {
                Ok(Some(x)) => x,
                Ok(None) => self.resolve_and_commit(*start).await?,
                Err(e) => return Err(SourceError::Service(e.to_string())),
            },
        };
        self.skip_through = Some(next - 1);
        let buffer = self
            .group
            .buffer(p)
            .ok_or_else(|| not_assigned(self.topic(), p))?;
        let at = match buffer.first_offset() {
            Some(first) => Some(first),
            None => self.fetch_position().await?,
        };
        // Where the fetch is already at `next` (or has not started: it starts at the committed
        // offset, which is `next`), nothing to do; otherwise seek and drop what was fetched, both
        // on the poll thread.
        if at.is_some_and(|at| at != next) {
            self.seeks
                .seek(self.topic(), p, next)
                .await
                .map_err(SourceError::Service)?;
            info!(topic = %self.topic(), partition = p, offset = next, "partition repositioned");
        }
        Ok(())
    }

    /// The consumer's fetch position for the partition, if it has one.
    async fn fetch_position(&self) -> Result<Option<i64>, SourceError> {
        let (c, topic, p) = (
            self.consumer.clone(),
            self.topic().to_string(),
            self.partition,
        );
        let positions = blocking(move || c.position().map_err(|e| e.to_string()))
            .await
            .map_err(SourceError::Service)?;
        Ok(positions
            .find_partition(&topic, p)
            .and_then(|e| match e.offset() {
                Offset::Offset(x) if x >= 0 => Some(x),
                _ => None,
            }))
    }

    /// The offset `start` means for this partition now, committed so it is where the partition
    /// starts on every later assignment too.
    async fn resolve_and_commit(&self, start: StartingPosition) -> Result<i64, SourceError> {
        let (c, topic, p) = (
            self.consumer.clone(),
            self.topic().to_string(),
            self.partition,
        );
        let offset = blocking(move || {
            let (low, high) = c
                .fetch_watermarks(&topic, p, CALL)
                .map_err(|e| format!("reading the offsets of {topic}-{p}: {e}"))?;
            let offset = match start {
                StartingPosition::TrimHorizon => low,
                StartingPosition::Latest => high,
                StartingPosition::AtTimestamp(t) => {
                    let ms = t
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as i64);
                    let mut tpl = TopicPartitionList::new();
                    tpl.add_partition_offset(&topic, p, Offset::Offset(ms))
                        .map_err(|e| e.to_string())?;
                    let found = c
                        .offsets_for_times(tpl, CALL)
                        .map_err(|e| format!("looking up {topic}-{p} by time: {e}"))?;
                    match found.find_partition(&topic, p).map(|e| e.offset()) {
                        Some(Offset::Offset(x)) if x >= 0 => x,
                        _ => high,
                    }
                }
            };
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&topic, p, Offset::Offset(offset))
                .and_then(|_| c.commit(&tpl, rdkafka::consumer::CommitMode::Sync))
                .map_err(|e| format!("recording where {topic}-{p} starts: {e}"))?;
            Ok(offset)
        })
        .await
        .map_err(SourceError::Service)?;
        self.checkpoints.started_at(p, offset);
        info!(topic = %self.topic(), partition = p, offset, ?start, "partition without committed offsets starts here");
        Ok(offset)
    }
}

#[async_trait]
impl PartitionReader for KafkaReader {
    fn next_read_at(&self) -> Instant {
        Instant::now()
    }

    async fn read(&mut self) -> Result<Page, SourceError> {
        if let Some(from) = self.from.clone() {
            self.position(&from).await?;
            self.from = None;
        }
        let p = self.partition;
        let buffer = self
            .group
            .buffer(p)
            .ok_or_else(|| not_assigned(self.topic(), p))?;
        if buffer.is_empty() {
            let _ = tokio::time::timeout(WAIT, buffer.arrived.notified()).await;
        }
        // After the last await: a cancelled read leaves the records buffered.
        let taken = buffer.take(self.max_page, || {
            pause(&self.consumer, self.topic(), p, false)
        });
        let skip = self.skip_through.unwrap_or(-1);
        let fresh: Vec<&OwnedMessage> = taken.iter().filter(|m| m.offset() > skip).collect();
        let records: Vec<Record> = fresh.iter().map(|m| (self.encode)(m)).collect();
        self.group.handed_out(
            p,
            fresh
                .iter()
                .zip(&records)
                .map(|(m, r)| (m.offset(), r.arrival_ms)),
        );
        Ok(Page::Records {
            records,
            caught_up: buffer.is_empty(),
            millis_behind: None,
        })
    }
}
