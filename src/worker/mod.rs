//! Workers: the [`supervisor`] runs one [`shard`] worker per shard of each enabled mapping; a shard
//! worker reads, batches, dispatches under the retry policy, hands what it gives up on to the
//! on-failure destination and checkpoints, strictly in order within its shard.

#[cfg(test)]
mod lineage_tests;
pub mod queue;
pub mod shard;
pub mod supervisor;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use crate::checkpoint::CheckpointStore;
use crate::config::Mapping;
use crate::destination::Destination;
use crate::dispatch::Dispatcher;
use crate::retry::RetryPolicy;
use crate::telemetry::{Metrics, Status};

/// Sleeps for `duration` unless `cancel` fires first; false when cancelled.
pub(crate) async fn pause(
    cancel: &tokio_util::sync::CancellationToken,
    duration: std::time::Duration,
) -> bool {
    tokio::select! {
        _ = cancel.cancelled() => false,
        _ = tokio::time::sleep(duration) => true,
    }
}

/// What every shard worker of one mapping shares.
pub struct MappingContext {
    pub mapping: Mapping,
    pub dispatcher: Arc<dyn Dispatcher>,
    pub checkpoints: Arc<dyn CheckpointStore>,
    pub destination: Option<Arc<dyn Destination>>,
    pub metrics: Arc<Metrics>,
    pub status: Arc<Status>,
    pub policy: RetryPolicy,
    pub clock: Clock,
}

/// Wall-clock epoch milliseconds advanced by tokio's clock, so record age follows `tokio::time`
/// (and tests on a paused clock see records age without real waiting).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch_ms: i64,
    at: tokio::time::Instant,
}

impl Clock {
    pub fn new() -> Self {
        let epoch_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        Clock {
            epoch_ms,
            at: tokio::time::Instant::now(),
        }
    }

    pub fn now_ms(&self) -> i64 {
        self.epoch_ms + self.at.elapsed().as_millis() as i64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl MappingContext {
    pub fn name(&self) -> &str {
        &self.mapping.name
    }
}
