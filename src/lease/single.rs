//! The single-replica lease: this process owns every partition of every mapping, under one token
//! that is never renewed, advanced or lost. It is the default (one process per checkpoint
//! directory, enforced by the directory's lock), and the token every embedded checkpoint carries.

use async_trait::async_trait;

use super::{Lease, LeaseError, LeaseToken, Leases};
use crate::model::Partition;

#[derive(Debug, Clone)]
pub struct SingleReplica {
    token: LeaseToken,
}

impl SingleReplica {
    /// The owner written into embedded checkpoints.
    pub const OWNER: &'static str = "single-replica";

    pub fn new() -> Self {
        SingleReplica {
            token: Self::token(),
        }
    }

    /// The token of every single-replica lease.
    pub fn token() -> LeaseToken {
        LeaseToken::new(Self::OWNER, 0)
    }
}

impl Default for SingleReplica {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Leases for SingleReplica {
    async fn held(&self, _mapping: &str, listed: &[Partition]) -> Result<Vec<Lease>, LeaseError> {
        Ok(listed
            .iter()
            .map(|p| Lease::fixed(p.id.clone(), self.token.clone()))
            .collect())
    }

    async fn release(&self, _mapping: &str, _partition: &str) -> Result<(), LeaseError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn partition(id: &str) -> Partition {
        Partition {
            id: id.into(),
            parents: vec![],
            closed: false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn owns_every_listed_partition_under_a_token_that_never_expires() {
        let leases = SingleReplica::new();
        let listed = [partition("shardId-0"), partition("shardId-1")];
        let held = leases.held("m", &listed).await.unwrap();
        let ids: Vec<&str> = held.iter().map(Lease::partition).collect();
        assert_eq!(ids, ["shardId-0", "shardId-1"]);
        let lease = &held[0];
        assert_eq!(lease.token(), Some(SingleReplica::token()));
        // Never lost, however long it runs, and releasing changes nothing.
        let lost = tokio::time::timeout(Duration::from_secs(24 * 3600), lease.lost()).await;
        assert!(lost.is_err(), "a single-replica lease is never lost");
        leases.release("m", "shardId-0").await.unwrap();
        assert!(lease.is_held());
        assert_eq!(
            leases.held("m", &listed).await.unwrap()[0].token(),
            Some(SingleReplica::token()),
            "the same token on every pass"
        );
        assert!(leases.held("m", &[]).await.unwrap().is_empty());
    }

    #[test]
    fn stale_tokens_are_older_counters_or_another_owner_at_the_same_counter() {
        let t = |o: &str, c| LeaseToken::new(o, c);
        assert!(t("a", 1).is_stale_against(&t("b", 2)));
        assert!(t("a", 2).is_stale_against(&t("b", 2)));
        assert!(!t("a", 2).is_stale_against(&t("a", 2)));
        assert!(!t("b", 3).is_stale_against(&t("a", 2)));
        assert_eq!(t("w-1", 7).to_string(), "w-1#7");
    }
}
