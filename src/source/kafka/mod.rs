//! Kafka (self-managed, or Amazon MSK) as a source. A mapping has one consumer in its consumer
//! group ([`consumer`]); the partitions the group assigns to it are its partitions and its leases,
//! and the group's committed offsets its checkpoints ([`group`]); each assigned partition is read in
//! order by its own worker through a [`reader::KafkaReader`] over the partition's buffer. So the
//! stream supervisor runs Kafka unchanged: listed = assigned = leased, no lineage, and a rebalance
//! wakes it. Several sluice replicas (or any other consumers) in one group share the partitions.

pub mod buffer;
pub mod connect;
pub mod consumer;
pub mod event;
pub mod group;
pub mod iam;
pub mod msk;
pub mod reader;
pub mod seek;

use async_trait::async_trait;
use rdkafka::consumer::Consumer;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use crate::model::{EventFormat, KafkaCluster, Partition, Position};
use crate::source::{PartitionReader, Source, SourceError};
pub use consumer::{ClientSettings, KafkaConsumer};
pub use event::KafkaRecord;
pub use group::{partition_id, partition_number, Group, KafkaCheckpoints, KafkaLeases};
pub use iam::AuthContext;
pub use reader::Encode;

/// How long a revocation waits for a partition's in-flight batch before giving it up.
pub const REVOKE_WAIT: Duration = Duration::from_secs(30);
/// Per-partition fetch buffer bound.
pub const BUFFER_BYTES: usize = 4 << 20;

/// One Kafka mapping's topic as a [`Source`].
pub struct KafkaSource {
    consumer: Arc<KafkaConsumer>,
    group: Arc<Group>,
    checkpoints: Arc<KafkaCheckpoints>,
    seeks: Arc<seek::Seeks>,
    encode: Encode,
    cluster: KafkaCluster,
    max_page: usize,
    retention: Duration,
    stop: Arc<AtomicBool>,
    poller: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// A connected Kafka mapping: its source, leases and checkpoints.
pub struct Connected {
    pub source: Arc<KafkaSource>,
    pub leases: Arc<KafkaLeases>,
    pub checkpoints: Arc<KafkaCheckpoints>,
}

impl KafkaSource {
    /// Joins the group and starts polling. `on_error` hears consumer errors (rate-limited).
    pub fn connect(
        settings: &ClientSettings,
        encode: Encode,
        cluster: KafkaCluster,
        max_page: usize,
        retention: Duration,
        on_error: impl Fn(&str) + Send + Sync + 'static,
    ) -> Result<Connected, String> {
        let group = Arc::new(Group::new(
            &settings.topic,
            &settings.group_id,
            REVOKE_WAIT,
            BUFFER_BYTES,
        ));
        let errors = Arc::new(group::ErrorReport::new(on_error, Duration::from_secs(30)));
        let consumer = consumer::connect(settings, group.clone(), errors.clone())?;
        let stop = Arc::new(AtomicBool::new(false));
        let seeks = Arc::new(seek::Seeks::default());
        let poller = consumer::poll_thread(
            consumer.clone(),
            group.clone(),
            seeks.clone(),
            stop.clone(),
            errors,
        );
        let checkpoints = Arc::new(KafkaCheckpoints {
            consumer: consumer.clone(),
            group: group.clone(),
        });
        Ok(Connected {
            leases: Arc::new(KafkaLeases {
                group: group.clone(),
            }),
            checkpoints: checkpoints.clone(),
            source: Arc::new(KafkaSource {
                consumer,
                group,
                checkpoints,
                seeks,
                encode,
                cluster,
                max_page,
                retention,
                stop,
                poller: std::sync::Mutex::new(Some(poller)),
            }),
        })
    }

    /// Every `every` until `cancel`: each assigned partition's lag (its high watermark less its
    /// committed offset) and the age of the oldest record not yet processed, into `metrics`.
    pub fn watch_lag(
        self: &Arc<Self>,
        metrics: crate::telemetry::KafkaMetrics,
        every: Duration,
        cancel: tokio_util::sync::CancellationToken,
    ) {
        let source = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                let mut lags = Vec::new();
                for p in source.group.partitions() {
                    let (c, topic) = (source.consumer.clone(), source.group.topic.clone());
                    let high = consumer::blocking(move || {
                        c.fetch_watermarks(&topic, p, Duration::from_secs(5))
                            .map(|(_, high)| high)
                            .map_err(|e| e.to_string())
                    })
                    .await;
                    let committed = match source.group.known_committed(p) {
                        Some(x) => Some(x),
                        None => source.checkpoints.committed(p).await.ok().flatten(),
                    };
                    // The log end is at least what was fetched (a broker's watermark can lag it).
                    let fetched = source.group.buffer(p).and_then(|b| b.fetched_end());
                    let end = match high {
                        Ok(high) => Some(high.max(fetched.unwrap_or(0))),
                        Err(e) => {
                            tracing::debug!(topic = %source.group.topic, partition = p, error = %e, "cannot read the partition's high watermark");
                            fetched
                        }
                    };
                    if let (Some(end), Some(committed)) = (end, committed) {
                        lags.push(end - committed);
                    }
                }
                let now = crate::worker::Clock::new().now_ms();
                let oldest = source.group.oldest_unprocessed_ms().map_or(0, |t| now - t);
                metrics.observed(&lags, oldest);
            }
        });
    }

    /// Once its workers have stopped (their last commits made): stops polling and leaves the
    /// group, so its partitions move to the other members at once rather than after the session
    /// timeout. Waits at most `wait` for the consumer to leave; a broker that does not answer does
    /// not hold up the exit.
    pub async fn close(&self, wait: Duration) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let poller = self.poller.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(poller) = poller else {
            return;
        };
        let deadline = tokio::time::Instant::now() + wait;
        while !poller.is_finished() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[async_trait]
impl Source for KafkaSource {
    /// The partitions assigned to this consumer now.
    async fn list_partitions(&self) -> Result<Vec<Partition>, SourceError> {
        Ok(self
            .group
            .partitions()
            .into_iter()
            .map(|p| Partition {
                id: partition_id(&self.group.topic, p),
                parents: Vec::new(),
                closed: false,
            })
            .collect())
    }

    fn open(&self, partition: &Partition, from: Position) -> Box<dyn PartitionReader> {
        let number = partition_number(&self.group.topic, &partition.id).unwrap_or(-1);
        let skip_through = match &from {
            Position::After(s) => s.0.parse().ok(),
            _ => None,
        };
        Box::new(reader::KafkaReader {
            consumer: self.consumer.clone(),
            group: self.group.clone(),
            checkpoints: self.checkpoints.clone(),
            seeks: self.seeks.clone(),
            partition: number,
            from: Some(from),
            skip_through,
            encode: self.encode.clone(),
            max_page: self.max_page,
        })
    }

    fn format(&self, partition: &Partition) -> EventFormat {
        let number = partition_number(&self.group.topic, &partition.id).unwrap_or(-1);
        EventFormat::kafka(&self.cluster, &self.group.topic, number)
    }

    async fn retention(&self) -> Result<Duration, SourceError> {
        Ok(self.retention)
    }

    fn lists_by_assignment(&self) -> bool {
        true
    }
}

/// Kafka's default when the topic's `retention.ms` cannot be read: 7 days.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
