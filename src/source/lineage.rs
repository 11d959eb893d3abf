//! Shard lineage, shared by every stream source, the way the Kinesis Client Library does it: a child
//! shard starts only after each of its parents (`ParentShardId`, and `AdjacentParentShardId` for a
//! Kinesis merge) is checkpointed at its end and its worker has stopped; closed shards are drained
//! even if nobody ran them before; a parent that is no longer listed and no longer running (trimmed
//! past retention, or a gap in the graph) counts as done. [`plan`] is pure: the supervisor asks it
//! about every listed shard, leased or not, so a parent checkpointed `ShardEnd` by another replica
//! counts as drained here too; only a leased shard is then started.
//!
//! A LATEST mapping reaches [`plan`] already resolved to the instant the mapping first started
//! (`AtTimestamp`, persisted by the checkpoint store), so a closed shard that was never checkpointed
//! is drained from that instant: it holds exactly the records that arrived after the mapping
//! started, and nothing older.

use std::collections::{HashMap, HashSet};

use super::{Partition, Position};
use crate::checkpoint::Checkpoint;
use crate::config::StartingPosition;

/// How a shard was finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// Read to its end and checkpointed `ShardEnd`.
    Drained,
}

/// What to do with a shard now.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    Start(Position),
    /// A parent is still being read (or waits itself).
    WaitForParents(Vec<String>),
    Finished(Finished),
}

/// Decides a shard's fate from its checkpoint and the state of its parents. `running` holds the
/// shards whose workers have not stopped yet; `starting_position` is the mapping's, with LATEST
/// resolved to the mapping's first start (see the module docs).
pub fn plan(
    shard: &Partition,
    checkpoint: Option<&Checkpoint>,
    listed: &HashSet<String>,
    running: &HashSet<String>,
    finished: &HashMap<String, Finished>,
    starting_position: StartingPosition,
) -> Plan {
    match checkpoint {
        Some(Checkpoint::ShardEnd) => return Plan::Finished(Finished::Drained),
        // A checkpoint means the shard was started before, so its parents were done then.
        Some(Checkpoint::Sequence(seq)) => return Plan::Start(Position::After(seq.clone())),
        None => {}
    }
    let waiting: Vec<String> = shard
        .parents
        .iter()
        .filter(|p| running.contains(*p) || (listed.contains(*p) && !finished.contains_key(*p)))
        .cloned()
        .collect();
    if !waiting.is_empty() {
        return Plan::WaitForParents(waiting);
    }
    let parent_drained = shard
        .parents
        .iter()
        .any(|p| finished.get(p) == Some(&Finished::Drained));
    if parent_drained {
        // Everything in a child comes after what we read of its parents: read it from its start
        // (or from the timestamp, for AT_TIMESTAMP mappings).
        let from = match starting_position {
            StartingPosition::AtTimestamp(_) => starting_position,
            _ => StartingPosition::TrimHorizon,
        };
        return Plan::Start(Position::Start(from));
    }
    Plan::Start(Position::Start(starting_position))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SequenceNumber;

    fn shard(id: &str, parents: &[&str], closed: bool) -> Partition {
        Partition {
            id: id.into(),
            parents: parents.iter().map(|p| p.to_string()).collect(),
            closed,
        }
    }

    fn listed(ids: &[&str]) -> HashSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    /// [`plan`] for a shard never checkpointed, with no worker running.
    fn plan_new(
        shard: &Partition,
        listed: &HashSet<String>,
        finished: &HashMap<String, Finished>,
        starting_position: StartingPosition,
    ) -> Plan {
        plan(
            shard,
            None,
            listed,
            &HashSet::new(),
            finished,
            starting_position,
        )
    }

    #[test]
    fn children_wait_for_every_parent() {
        let l = listed(&["a", "b", "c"]);
        let merged = shard("c", &["a", "b"], false);
        let mut fin = HashMap::new();
        assert_eq!(
            plan_new(&merged, &l, &fin, StartingPosition::TrimHorizon),
            Plan::WaitForParents(vec!["a".into(), "b".into()])
        );
        fin.insert("a".to_string(), Finished::Drained);
        assert_eq!(
            plan_new(&merged, &l, &fin, StartingPosition::TrimHorizon),
            Plan::WaitForParents(vec!["b".into()])
        );
        fin.insert("b".to_string(), Finished::Drained);
        assert_eq!(
            plan_new(&merged, &l, &fin, StartingPosition::Latest),
            Plan::Start(Position::Start(StartingPosition::TrimHorizon))
        );
    }

    #[test]
    fn a_missing_parent_counts_as_done() {
        let gap = shard("c", &["gone"], false);
        assert_eq!(
            plan_new(
                &gap,
                &listed(&["c"]),
                &HashMap::new(),
                StartingPosition::TrimHorizon
            ),
            Plan::Start(Position::Start(StartingPosition::TrimHorizon))
        );
    }

    #[test]
    fn closed_shards_are_drained_from_the_mappings_start() {
        let closed = shard("a", &[], true);
        let l = listed(&["a"]);
        assert_eq!(
            plan_new(&closed, &l, &HashMap::new(), StartingPosition::TrimHorizon),
            Plan::Start(Position::Start(StartingPosition::TrimHorizon))
        );
        // LATEST arrives resolved to the mapping's first start: a closed shard that was never
        // checkpointed may hold records newer than that, so it is read from there, not skipped.
        let started = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        assert_eq!(
            plan_new(
                &closed,
                &l,
                &HashMap::new(),
                StartingPosition::AtTimestamp(started)
            ),
            Plan::Start(Position::Start(StartingPosition::AtTimestamp(started)))
        );
    }

    #[test]
    fn a_running_parent_holds_its_child_even_when_no_longer_listed() {
        let child = shard("b", &["a"], false);
        // The parent dropped out of ListShards (trimmed) while its worker still runs.
        let running: HashSet<String> = listed(&["a"]);
        assert_eq!(
            plan(
                &child,
                None,
                &listed(&["b"]),
                &running,
                &HashMap::new(),
                StartingPosition::TrimHorizon
            ),
            Plan::WaitForParents(vec!["a".into()])
        );
    }

    #[test]
    fn checkpoints_decide_first() {
        let s = shard("b", &["a"], false);
        let l = listed(&["a", "b"]);
        let seq = Checkpoint::Sequence(SequenceNumber("7".into()));
        assert_eq!(
            plan(
                &s,
                Some(&seq),
                &l,
                &HashSet::new(),
                &HashMap::new(),
                StartingPosition::Latest
            ),
            Plan::Start(Position::After(SequenceNumber("7".into())))
        );
        assert_eq!(
            plan(
                &s,
                Some(&Checkpoint::ShardEnd),
                &l,
                &HashSet::new(),
                &HashMap::new(),
                StartingPosition::Latest
            ),
            Plan::Finished(Finished::Drained)
        );
    }
}
