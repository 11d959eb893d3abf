//! Commits: the rules a checkpoint move must pass ([`check`], pure, applied by every store
//! atomically with its write) and the worker's side of them ([`Committer`]).

use std::sync::{Arc, Mutex};

use super::{Checkpoint, CheckpointError, CheckpointStore, WindowState};
use crate::lease::{Lease, LeaseToken};
use crate::model::PartitionId;

/// A move of one partition's checkpoint.
#[derive(Debug, Clone, Copy)]
pub struct Commit<'a> {
    /// Where the committer last left the partition (`None`: never committed).
    pub from: Option<&'a Checkpoint>,
    pub to: &'a Checkpoint,
    /// The lease the move is made under (the fencing token).
    pub lease: &'a LeaseToken,
}

fn show(cp: &Option<Checkpoint>) -> String {
    cp.as_ref()
        .map_or_else(|| "nothing (never committed)".into(), |c| c.to_string())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// The store failed; the same commit may be retried.
    #[error(transparent)]
    Store(#[from] CheckpointError),
    /// The partition is not where the committer left it: another worker moved it.
    #[error("commit refused: the checkpoint is at {}, not at {} where this worker left it; another worker moved it", show(.found), show(.expected))]
    NotChained {
        expected: Option<Checkpoint>,
        found: Option<Checkpoint>,
    },
    /// The move would not go forward.
    #[error("commit refused: {to} is not past {from}; a checkpoint never moves backwards")]
    Backwards { from: Checkpoint, to: Checkpoint },
    /// The token is older than one the partition was already committed under: this worker's lease
    /// was taken over.
    #[error(
        "commit refused: lease {presented} is stale; the partition was committed under {newest}"
    )]
    Fenced {
        presented: LeaseToken,
        newest: LeaseToken,
    },
    /// This replica no longer holds the partition's lease; nothing was written.
    #[error("commit refused: this replica no longer holds the partition's lease")]
    LeaseLost,
}

impl CommitError {
    /// True for a refusal, which retrying cannot cure: the partition is no longer this worker's to
    /// move.
    pub fn is_refusal(&self) -> bool {
        !matches!(self, CommitError::Store(_))
    }
}

/// What a store does with a commit that passed [`check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Write `to`, recording the commit's token.
    Write,
    /// `to` is stored already (the same commit, retried after a failure that hid its success):
    /// nothing to write.
    AlreadyThere,
}

/// The rules of a move, given what the store holds: the checkpoint and the newest token it was
/// committed under (`None` for nothing stored, or a file from before tokens were recorded).
/// In order: a stale token is [`CommitError::Fenced`]; a move already applied is
/// [`Verdict::AlreadyThere`]; a move not starting from what is stored is
/// [`CommitError::NotChained`]; a move that does not go forward is [`CommitError::Backwards`].
/// [`check_window`] with no window on either side.
pub fn check(
    stored: Option<&Checkpoint>,
    stored_lease: Option<&LeaseToken>,
    commit: &Commit<'_>,
) -> Result<Verdict, CommitError> {
    check_window(stored, None, stored_lease, commit, None)
}

/// [`check`] for stores that keep tumbling window state beside the checkpoint: a move is already
/// applied only when the stored window is `window` too, and a move that keeps the checkpoint
/// where it is but changes the window (a window's final invocation without records drops its
/// state) is written.
pub fn check_window(
    stored: Option<&Checkpoint>,
    stored_window: Option<&WindowState>,
    stored_lease: Option<&LeaseToken>,
    commit: &Commit<'_>,
    window: Option<&WindowState>,
) -> Result<Verdict, CommitError> {
    if let Some(newest) = stored_lease {
        if commit.lease.is_stale_against(newest) {
            return Err(CommitError::Fenced {
                presented: commit.lease.clone(),
                newest: newest.clone(),
            });
        }
    }
    if stored == Some(commit.to) && stored_window == window {
        return Ok(Verdict::AlreadyThere);
    }
    if stored != commit.from {
        return Err(CommitError::NotChained {
            expected: commit.from.cloned(),
            found: stored.cloned(),
        });
    }
    match commit.from {
        // Only the window changes (the windows differ, or this was already there).
        Some(from) if commit.to == from => Ok(Verdict::Write),
        Some(from) if commit.to < from => Err(CommitError::Backwards {
            from: from.clone(),
            to: commit.to.clone(),
        }),
        _ => Ok(Verdict::Write),
    }
}

/// A worker's handle on its partition's checkpoint: where it last left it, and the lease it moves
/// it under.
pub struct Committer {
    store: Arc<dyn CheckpointStore>,
    mapping: String,
    partition: PartitionId,
    lease: Lease,
    committed: Mutex<Option<Checkpoint>>,
}

impl Committer {
    /// `committed` is the checkpoint the partition was planned from (`None`: never committed).
    pub fn new(
        store: Arc<dyn CheckpointStore>,
        mapping: impl Into<String>,
        lease: Lease,
        committed: Option<Checkpoint>,
    ) -> Self {
        Committer {
            store,
            mapping: mapping.into(),
            partition: lease.partition().to_string(),
            lease,
            committed: Mutex::new(committed),
        }
    }

    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// The tumbling window state stored with the checkpoint this worker was planned from; `None`
    /// when none is open there. State stored with another checkpoint (the partition moved since
    /// it was planned) is [`CommitError::NotChained`]: the worker stops and is planned again.
    pub async fn stored_window(&self) -> Result<Option<WindowState>, CommitError> {
        let stored = self.store.window(&self.mapping, &self.partition).await?;
        match stored {
            None => Ok(None),
            Some((at, window)) if Some(&at) == self.committed().as_ref() => Ok(Some(window)),
            Some((at, _)) => Err(CommitError::NotChained {
                expected: self.committed(),
                found: Some(at),
            }),
        }
    }

    /// The most window state (bytes of JSON) the store keeps.
    pub fn max_window_state_bytes(&self) -> usize {
        self.store.max_window_state_bytes()
    }

    /// Where this worker last left the partition.
    pub fn committed(&self) -> Option<Checkpoint> {
        self.committed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// One attempt to move the partition to `to`, under the lease's token as it is now (so a
    /// renewal's counter is used). A lost lease writes nothing: [`CommitError::LeaseLost`].
    pub async fn commit(&self, to: &Checkpoint) -> Result<(), CommitError> {
        self.commit_window(to, None).await
    }

    /// [`Committer::commit`] with the tumbling window state to store beside `to` (`None`: no
    /// window open). With a window the move may keep the checkpoint where it is.
    pub async fn commit_window(
        &self,
        to: &Checkpoint,
        window: Option<&WindowState>,
    ) -> Result<(), CommitError> {
        let token = self.lease.token().ok_or(CommitError::LeaseLost)?;
        let from = self.committed();
        let commit = Commit {
            from: from.as_ref(),
            to,
            lease: &token,
        };
        self.store
            .commit_window(&self.mapping, &self.partition, commit, window)
            .await?;
        *self.committed.lock().unwrap_or_else(|e| e.into_inner()) = Some(to.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::FileCheckpointStore;
    use crate::lease::table::FakeLeaseTable;
    use crate::lease::{Leases, SingleReplica};
    use crate::model::{Partition, SequenceNumber};

    fn at(s: &str) -> Checkpoint {
        Checkpoint::Sequence(SequenceNumber(s.into()))
    }

    fn token(owner: &str, counter: u64) -> LeaseToken {
        LeaseToken::new(owner, counter)
    }

    fn commit<'a>(
        from: Option<&'a Checkpoint>,
        to: &'a Checkpoint,
        lease: &'a LeaseToken,
    ) -> Commit<'a> {
        Commit { from, to, lease }
    }

    #[test]
    fn a_commit_must_chain_from_what_is_stored() {
        let t = token("a", 1);
        assert_eq!(
            check(None, None, &commit(None, &at("5"), &t)),
            Ok(Verdict::Write)
        );
        assert_eq!(
            check(
                Some(&at("5")),
                Some(&t),
                &commit(Some(&at("5")), &at("9"), &t)
            ),
            Ok(Verdict::Write)
        );
        // Someone moved it to 7 behind this worker's back.
        assert_eq!(
            check(
                Some(&at("7")),
                Some(&t),
                &commit(Some(&at("5")), &at("9"), &t)
            ),
            Err(CommitError::NotChained {
                expected: Some(at("5")),
                found: Some(at("7"))
            })
        );
        // This worker thinks it is new, but the partition has progress.
        let err = check(Some(&at("7")), None, &commit(None, &at("9"), &t)).unwrap_err();
        assert!(err.is_refusal());
        assert_eq!(
            err.to_string(),
            "commit refused: the checkpoint is at 7, not at nothing (never committed) where this \
             worker left it; another worker moved it"
        );
    }

    #[test]
    fn a_checkpoint_never_moves_backwards_or_past_its_end() {
        let t = token("a", 1);
        let back = check(
            Some(&at("10")),
            None,
            &commit(Some(&at("10")), &at("9"), &t),
        );
        assert_eq!(
            back,
            Err(CommitError::Backwards {
                from: at("10"),
                to: at("9")
            })
        );
        // Sequence numbers compare by length first: "10" is past "9".
        assert_eq!(
            check(Some(&at("9")), None, &commit(Some(&at("9")), &at("10"), &t)),
            Ok(Verdict::Write)
        );
        let end = Checkpoint::ShardEnd;
        assert_eq!(
            check(Some(&at("9")), None, &commit(Some(&at("9")), &end, &t)),
            Ok(Verdict::Write)
        );
        assert!(matches!(
            check(Some(&end), None, &commit(Some(&end), &at("99"), &t)),
            Err(CommitError::Backwards { .. })
        ));
    }

    #[test]
    fn a_stale_token_is_fenced_even_for_a_move_already_made() {
        let newest = token("b", 4);
        for stale in [token("a", 3), token("a", 4)] {
            for to in [at("9"), at("5")] {
                let refused = check(
                    Some(&at("5")),
                    Some(&newest),
                    &commit(Some(&at("5")), &to, &stale),
                );
                assert_eq!(
                    refused,
                    Err(CommitError::Fenced {
                        presented: stale.clone(),
                        newest: newest.clone()
                    })
                );
            }
        }
        assert_eq!(
            check(
                Some(&at("5")),
                Some(&newest),
                &commit(Some(&at("5")), &at("9"), &token("a", 5))
            ),
            Ok(Verdict::Write),
            "a newer token takes over"
        );
    }

    #[test]
    fn a_retried_commit_that_already_landed_is_not_refused() {
        let t = token("a", 1);
        assert_eq!(
            check(
                Some(&at("9")),
                Some(&t),
                &commit(Some(&at("5")), &at("9"), &t)
            ),
            Ok(Verdict::AlreadyThere)
        );
        assert!(!CommitError::Store(CheckpointError("disk full".into())).is_refusal());
    }

    fn partition(id: &str) -> Partition {
        Partition {
            id: id.into(),
            parents: vec![],
            closed: false,
        }
    }

    #[tokio::test]
    async fn a_committer_chains_its_moves_and_carries_the_leases_current_token() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn CheckpointStore> =
            Arc::new(FileCheckpointStore::open(dir.path()).unwrap());
        let table = FakeLeaseTable::new("w-1");
        table.grant("shardId-0", 1);
        let lease = table.held("m", &[partition("shardId-0")]).await.unwrap()[0].clone();
        let worker = Committer::new(store.clone(), "m", lease, None);
        worker.commit(&at("1")).await.unwrap();
        table.renew("shardId-0");
        worker.commit(&at("2")).await.unwrap();
        assert_eq!(worker.committed(), Some(at("2")));
        assert_eq!(store.get("m", "shardId-0").await.unwrap(), Some(at("2")));

        // A second worker planned from an old read does not chain.
        let stale_plan = Committer::new(
            store.clone(),
            "m",
            table.held("m", &[partition("shardId-0")]).await.unwrap()[0].clone(),
            Some(at("1")),
        );
        assert!(matches!(
            stale_plan.commit(&at("3")).await,
            Err(CommitError::NotChained { .. })
        ));
        assert_eq!(
            stale_plan.committed(),
            Some(at("1")),
            "a refusal moves nothing"
        );

        // The lease is lost: nothing is written.
        table.revoke("shardId-0");
        assert_eq!(worker.commit(&at("3")).await, Err(CommitError::LeaseLost));
        assert_eq!(store.get("m", "shardId-0").await.unwrap(), Some(at("2")));
    }

    #[tokio::test]
    async fn a_zombie_whose_lease_was_taken_over_cannot_move_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn CheckpointStore> =
            Arc::new(FileCheckpointStore::open(dir.path()).unwrap());
        // The zombie still believes it holds the lease at counter 1 (it never heard otherwise).
        let zombie = Committer::new(
            store.clone(),
            "m",
            crate::lease::Lease::fixed("shardId-0", token("w-1", 1)),
            None,
        );
        zombie.commit(&at("1")).await.unwrap();
        // Another replica took the lease (counter 2) and moved on from the zombie's checkpoint.
        let taker = Committer::new(
            store.clone(),
            "m",
            crate::lease::Lease::fixed("shardId-0", token("w-2", 2)),
            Some(at("1")),
        );
        taker.commit(&at("4")).await.unwrap();
        let refused = zombie.commit(&at("2")).await.unwrap_err();
        assert_eq!(
            refused,
            CommitError::Fenced {
                presented: token("w-1", 1),
                newest: token("w-2", 2)
            }
        );
        assert_eq!(store.get("m", "shardId-0").await.unwrap(), Some(at("4")));
        // The single-replica token is accepted where no other token ever committed.
        let single = Committer::new(
            store,
            "m",
            SingleReplica::new()
                .held("m", &[partition("shardId-1")])
                .await
                .unwrap()[0]
                .clone(),
            None,
        );
        single.commit(&Checkpoint::ShardEnd).await.unwrap();
    }
}
