//! The lease seam: which partitions of a mapping this replica may work on, and the fencing token its
//! checkpoint commits carry. Per mapping, a [`Leases`] implementation is asked on every supervisor
//! pass which of the listed partitions this replica holds now ([`Leases::held`]), and is told when a
//! worker stops at shutdown ([`Leases::release`]) so another replica can take the partition at once.
//!
//! A held partition comes as a [`Lease`]: a live view of its [`LeaseToken`] (owner and counter, as
//! KCL's `leaseOwner`/`leaseCounter`) that the implementation keeps current — a renewal may advance
//! the counter, a loss empties it. A worker reads the token before each dispatch and puts it on each
//! checkpoint commit, so a worker whose lease is gone dispatches nothing more and moves no
//! checkpoint (DESIGN.md invariant 7); [`Lease::lost`] lets the supervisor stop an idle worker at
//! once.
//!
//! [`SingleReplica`] is the default: one process owns every partition, and its token never
//! expires. With a `coordination` section, the [`coordinator::Coordinator`] shares the shards of
//! the stream mappings with the other replicas through a DynamoDB lease table ([`dynamo`]) whose
//! items follow KCL's schema ([`item`]).

mod balance;
pub mod coordinator;
pub mod dynamo;
pub mod item;
mod pass;
mod single;
#[cfg(test)]
pub(crate) mod table;

pub use single::SingleReplica;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::fmt;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::model::{Partition, PartitionId};

/// Who holds a partition's lease, and at which counter. Counters only grow: a take (and, in the
/// lease table, a renewal) advances it, so a token with a lower counter than one already seen is
/// stale. Equal counters name the same grant only with the same owner.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseToken {
    pub owner: String,
    pub counter: u64,
}

impl LeaseToken {
    pub fn new(owner: impl Into<String>, counter: u64) -> Self {
        LeaseToken {
            owner: owner.into(),
            counter,
        }
    }

    /// True when `self` is older than `newest` (the last token a store saw for the partition):
    /// a lower counter, or the same counter granted to someone else.
    pub fn is_stale_against(&self, newest: &LeaseToken) -> bool {
        self.counter < newest.counter
            || (self.counter == newest.counter && self.owner != newest.owner)
    }
}

impl fmt::Display for LeaseToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.owner, self.counter)
    }
}

/// A grant as the lease implementation last confirmed it: the token, and until when it may be used
/// without a further renewal (`None`: no limit, as for the single-replica lease). A lease table sets
/// `until` short of the instant another replica could see the lease as expired, so a replica that
/// cannot renew (cut off from the table, paused) stops using the lease on its own clock, before
/// anyone else may take it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub token: LeaseToken,
    pub until: Option<Instant>,
    /// The holder is giving the partition up (a Kafka group's revocation): its worker is stopped
    /// as at shutdown — the batch in flight finishes and is committed under this still-valid
    /// token, nothing more is dispatched — before the grant goes.
    pub ending: bool,
}

impl From<LeaseToken> for Held {
    fn from(token: LeaseToken) -> Self {
        Held {
            token,
            until: None,
            ending: false,
        }
    }
}

impl Held {
    fn valid_at(&self, now: Instant) -> bool {
        self.until.is_none_or(|until| now < until)
    }
}

/// A partition's lease as this replica holds it: a live view of its grant (`None` once lost). Cheap
/// to clone; every clone sees the same state. Once lost, a lease stays lost: taking the partition
/// again is a new `Lease`, so a worker that saw its lease go never carries on under a later one. A
/// grant whose `until` has passed counts as lost, whether or not its holder has noticed yet.
#[derive(Debug, Clone)]
pub struct Lease {
    partition: PartitionId,
    state: watch::Receiver<Option<Held>>,
}

impl Lease {
    /// A lease kept current by whoever holds `state`'s sender. When the sender is dropped the last
    /// grant stays: an implementation marks a lease lost by sending `None` first.
    pub fn new(partition: impl Into<PartitionId>, state: watch::Receiver<Option<Held>>) -> Self {
        Lease {
            partition: partition.into(),
            state,
        }
    }

    /// A lease that is never renewed, advanced or lost (the single-replica lease).
    pub fn fixed(partition: impl Into<PartitionId>, token: LeaseToken) -> Self {
        let (_, state) = watch::channel(Some(Held::from(token)));
        Lease::new(partition, state)
    }

    pub fn partition(&self) -> &str {
        &self.partition
    }

    /// The token to commit under now; `None` once the lease is lost or its grant ran out.
    pub fn token(&self) -> Option<LeaseToken> {
        let now = Instant::now();
        self.state
            .borrow()
            .as_ref()
            .filter(|h| h.valid_at(now))
            .map(|h| h.token.clone())
    }

    pub fn is_held(&self) -> bool {
        self.token().is_some()
    }

    /// True once the holder is giving the partition up ([`Held::ending`]): the token still commits
    /// the batch in flight, but the worker is to stop.
    pub fn is_ending(&self) -> bool {
        self.state.borrow().as_ref().is_some_and(|h| h.ending)
    }

    /// Resolves once the lease is lost, is ending, or its grant runs out without a renewal (at
    /// once if it already has); never for a fixed lease.
    pub async fn lost(&self) {
        let mut state = self.state.clone();
        loop {
            let until = match &*state.borrow_and_update() {
                None => return,
                Some(h) if h.ending || !h.valid_at(Instant::now()) => return,
                Some(h) => h.until,
            };
            let expiry = async {
                match until {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = state.changed() => {
                    if changed.is_err() {
                        // The holder is gone: the last grant stands until it runs out.
                        match until {
                            Some(at) => { tokio::time::sleep_until(at).await; return }
                            None => std::future::pending::<()>().await,
                        }
                    }
                }
                _ = expiry => {}
            }
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("leases: {0}")]
pub struct LeaseError(pub String);

/// Which partitions of a mapping this replica works on (see the module docs).
#[async_trait]
pub trait Leases: Send + Sync {
    /// Of `listed`, the partitions this replica holds now, each with its live [`Lease`]. Called on
    /// every supervisor pass: an implementation takes, renews or steals here (or in its own task)
    /// and may return the same lease again for a partition whose worker still runs.
    async fn held(&self, mapping: &str, listed: &[Partition]) -> Result<Vec<Lease>, LeaseError>;

    /// Gives `partition`'s lease up once its worker stopped at shutdown with its last checkpoint
    /// written, so another replica takes it without waiting for it to expire.
    async fn release(&self, mapping: &str, partition: &str) -> Result<(), LeaseError>;

    /// Resolves when the held set may have changed outside a supervisor pass (a lease gained or
    /// lost, a parent ended elsewhere), so the supervisor plans again at once. Never, by default.
    async fn changed(&self, _mapping: &str) {
        std::future::pending::<()>().await
    }
}
