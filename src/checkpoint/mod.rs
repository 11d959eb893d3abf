//! The checkpoint seam: where each partition of each mapping has got to. A checkpoint is moved only
//! after every record up to it succeeded, was filtered out or was handed to the on-failure
//! destination (DESIGN.md invariant 1); readers resume just *after* it.
//!
//! A checkpoint moves by a [`Commit`]: from the position the committer last left it at, to the next
//! one, under the partition's lease token. A store applies [`check`] atomically with its write: a
//! commit that does not chain from what is stored, that would move the partition backwards, or that
//! carries a token older than the newest the partition was committed under is refused, and a
//! refusal ([`CommitError::is_refusal`]) is never retried — the worker stops and the supervisor
//! plans the partition again. A worker commits through its [`Committer`], which remembers where it
//! left the partition and takes the token from the live lease (DESIGN.md invariant 7).

mod commit;
mod file;
mod format;

pub use commit::{check, check_window, Commit, CommitError, Committer, Verdict};
pub use file::FileCheckpointStore;
pub use format::FORMAT_VERSION;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::fmt;

use crate::model::{Position, SequenceNumber};

/// A partition's committed progress: the [`Position`]s a commit can move it to (a start sentinel is
/// where an uncommitted partition begins, never a checkpoint). Ordered as the partition is read:
/// by sequence number, then `ShardEnd` past every record (the variants' order is that order).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Checkpoint {
    /// Everything up to and including this sequence number is done.
    Sequence(SequenceNumber),
    /// The shard was closed and read to its end.
    ShardEnd,
}

impl From<Checkpoint> for Position {
    fn from(cp: Checkpoint) -> Position {
        match cp {
            Checkpoint::Sequence(s) => Position::After(s),
            Checkpoint::ShardEnd => Position::End,
        }
    }
}

/// As `/status` shows it: the sequence number, or `SHARD_END`.
impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Checkpoint::Sequence(s) => f.write_str(&s.0),
            Checkpoint::ShardEnd => f.write_str("SHARD_END"),
        }
    }
}

/// An open tumbling window's state (`TumblingWindowInSeconds`), stored with the checkpoint it was
/// committed with: the window's start (epoch milliseconds) and the `state` object the function
/// returned for the records up to that checkpoint. `None` beside a checkpoint: no window is open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowState {
    pub start_ms: i64,
    pub state: serde_json::Map<String, serde_json::Value>,
}

impl WindowState {
    /// The size of the state as the function sees it (its JSON), in bytes.
    pub fn state_bytes(&self) -> usize {
        serde_json::to_vec(&self.state).map_or(0, |v| v.len())
    }
}

/// The most window state a store keeps by default (AWS's limit per shard, 1 MB).
pub const MAX_WINDOW_STATE_BYTES: usize = 1024 * 1024;

/// A store that could not be read or written; worth retrying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("checkpoint store: {0}")]
pub struct CheckpointError(pub String);

#[async_trait]
pub trait CheckpointStore: Send + Sync {
    async fn get(
        &self,
        mapping: &str,
        partition: &str,
    ) -> Result<Option<Checkpoint>, CheckpointError>;
    /// Moves `partition` as `commit` says, applying [`check`] atomically with the write. Durable
    /// when it returns `Ok`: survives a kill -9 or power loss right after. A commit already applied
    /// (the same move retried after an ambiguous failure) returns `Ok` without a write.
    async fn commit(
        &self,
        mapping: &str,
        partition: &str,
        commit: Commit<'_>,
    ) -> Result<(), CommitError>;
    /// The tumbling window state stored with the partition's checkpoint, with that checkpoint;
    /// `None` when no window is open there (or the store keeps no window state).
    async fn window(
        &self,
        _mapping: &str,
        _partition: &str,
    ) -> Result<Option<(Checkpoint, WindowState)>, CheckpointError> {
        Ok(None)
    }
    /// [`CheckpointStore::commit`], storing `window` with `commit.to` (`None`: no window open,
    /// any stored state is dropped). With a window, a commit may keep the checkpoint where it is
    /// and change only the window (see [`check_window`]). A store that keeps no window state
    /// refuses to store one (never drops it silently).
    async fn commit_window(
        &self,
        mapping: &str,
        partition: &str,
        commit: Commit<'_>,
        window: Option<&WindowState>,
    ) -> Result<(), CommitError> {
        match window {
            None => self.commit(mapping, partition, commit).await,
            Some(_) => Err(CommitError::Store(CheckpointError(
                "this checkpoint store keeps no tumbling window state".into(),
            ))),
        }
    }
    /// The most window state (its JSON, in bytes) the store keeps; more ends a window early.
    fn max_window_state_bytes(&self) -> usize {
        MAX_WINDOW_STATE_BYTES
    }
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
