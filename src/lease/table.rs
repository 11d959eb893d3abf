//! A fake lease table for tests: grants, renews (advancing the counter) and revokes leases by hand,
//! and records releases. A revoked lease stays lost; granting the partition again is a new lease.

use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::watch;

use super::{Held, Lease, LeaseError, LeaseToken, Leases};
use crate::model::Partition;

type Grants = HashMap<String, watch::Sender<Option<Held>>>;

pub(crate) struct FakeLeaseTable {
    owner: String,
    grants: Mutex<Grants>,
    released: Mutex<Vec<String>>,
}

impl FakeLeaseTable {
    pub fn new(owner: &str) -> Self {
        FakeLeaseTable {
            owner: owner.into(),
            grants: Mutex::new(HashMap::new()),
            released: Mutex::new(Vec::new()),
        }
    }

    /// This replica now holds `partition` at `counter`.
    pub fn grant(&self, partition: &str, counter: u64) {
        let token = Some(Held::from(LeaseToken::new(self.owner.clone(), counter)));
        self.grants
            .lock()
            .unwrap()
            .insert(partition.into(), watch::channel(token).0);
    }

    /// A renewal: the counter moves on, the lease stays ours.
    pub fn renew(&self, partition: &str) {
        if let Some(tx) = self.grants.lock().unwrap().get(partition) {
            tx.send_modify(|t| {
                if let Some(h) = t {
                    h.token.counter += 1
                }
            });
        }
    }

    /// The lease is lost (taken by another replica, or expired).
    pub fn revoke(&self, partition: &str) {
        if let Some(tx) = self.grants.lock().unwrap().remove(partition) {
            tx.send_replace(None);
        }
    }

    pub fn token(&self, partition: &str) -> Option<LeaseToken> {
        self.grants
            .lock()
            .unwrap()
            .get(partition)
            .and_then(|tx| tx.borrow().as_ref().map(|h| h.token.clone()))
    }

    pub fn released(&self) -> Vec<String> {
        self.released.lock().unwrap().clone()
    }
}

#[async_trait]
impl Leases for FakeLeaseTable {
    async fn held(&self, _: &str, listed: &[Partition]) -> Result<Vec<Lease>, LeaseError> {
        let grants = self.grants.lock().unwrap();
        Ok(listed
            .iter()
            .filter_map(|p| {
                let tx = grants.get(&p.id)?;
                Some(Lease::new(p.id.clone(), tx.subscribe()))
            })
            .collect())
    }

    async fn release(&self, _: &str, partition: &str) -> Result<(), LeaseError> {
        self.released.lock().unwrap().push(partition.into());
        Ok(())
    }
}
