//! The checkpoint seam: where each shard of each mapping has got to. A checkpoint is written only
//! after every record up to it succeeded, was filtered out or was handed to the on-failure
//! destination (DESIGN.md invariant 1); readers resume just *after* it.

mod file;

pub use file::FileCheckpointStore;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::source::SequenceNumber;

/// A shard's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Checkpoint {
    /// Everything up to and including this sequence number is done.
    Sequence(SequenceNumber),
    /// The shard was closed and read to its end.
    ShardEnd,
}

#[derive(Debug, thiserror::Error)]
#[error("checkpoint store: {0}")]
pub struct CheckpointError(pub String);

#[async_trait]
pub trait CheckpointStore: Send + Sync {
    async fn get(&self, mapping: &str, shard: &str) -> Result<Option<Checkpoint>, CheckpointError>;
    /// Durable when it returns: survives a kill -9 or power loss right after.
    async fn put(
        &self,
        mapping: &str,
        shard: &str,
        checkpoint: &Checkpoint,
    ) -> Result<(), CheckpointError>;
    /// When the mapping first started reading (epoch milliseconds), if recorded. A mapping with
    /// StartingPosition LATEST reads every shard without a checkpoint from this instant, so a
    /// restart before the first checkpoint loses nothing.
    async fn mapping_start(&self, _mapping: &str) -> Result<Option<i64>, CheckpointError> {
        Ok(None)
    }
    /// Carries progress over a rename: if `mapping` has nothing stored, takes over everything
    /// stored under the first of `previous` that has anything, which is then gone under that
    /// name. Returns the name taken over.
    async fn adopt(
        &self,
        _mapping: &str,
        _previous: &[String],
    ) -> Result<Option<String>, CheckpointError> {
        Ok(None)
    }
    /// Records the mapping's first start; durable when it returns.
    async fn set_mapping_start(
        &self,
        _mapping: &str,
        _epoch_ms: i64,
    ) -> Result<(), CheckpointError> {
        Ok(())
    }
}
