//! Workers: the [`supervisor`] runs one [`shard`] worker per shard of each enabled mapping; a shard
//! worker reads, batches, dispatches under the retry policy, hands what it gives up on to the
//! on-failure destination and checkpoints, strictly in order within its shard.

pub mod shard;
pub mod supervisor;

use std::sync::Arc;

use crate::checkpoint::CheckpointStore;
use crate::config::Mapping;
use crate::destination::Destination;
use crate::dispatch::Dispatcher;
use crate::retry::RetryPolicy;
use crate::telemetry::{Metrics, Status};

/// What every shard worker of one mapping shares.
pub struct MappingContext {
    pub mapping: Mapping,
    pub dispatcher: Arc<dyn Dispatcher>,
    pub checkpoints: Arc<dyn CheckpointStore>,
    pub destination: Option<Arc<dyn Destination>>,
    pub metrics: Arc<Metrics>,
    pub status: Arc<Status>,
    pub policy: RetryPolicy,
}

impl MappingContext {
    pub fn name(&self) -> &str {
        &self.mapping.name
    }
}
