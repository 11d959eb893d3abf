//! The process-wide in-flight byte budget (`max_in_flight_bytes`): every record a shard reader or an
//! SQS poller holds in memory is charged against it until the record is checkpointed, deleted or
//! given up on. A reader waits for room *before* each read, so memory stays within the budget plus at
//! most one page per reader that was already under way. `/status` shows the bytes in use. The count
//! is one atomic, and a reader with room never touches the waiters' list: nothing process-wide is
//! locked on the per-poll path.

use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::Notify;

#[derive(Debug)]
pub struct ByteBudget {
    limit: u64,
    used: AtomicU64,
    freed: Notify,
}

impl ByteBudget {
    pub fn new(limit: u64) -> Self {
        ByteBudget {
            limit,
            used: AtomicU64::new(0),
            freed: Notify::new(),
        }
    }

    /// A budget that never makes anyone wait.
    pub fn unlimited() -> Self {
        Self::new(u64::MAX)
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// Waits until less than the whole budget is in use. Cancel-safe.
    pub async fn room(&self) {
        if self.used() < self.limit {
            return;
        }
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.used() < self.limit {
                return;
            }
            freed.await;
        }
    }

    /// Charges `bytes` that are already in memory (never waits: the caller waited for room first).
    pub fn charge(&self, bytes: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_add(bytes))
            });
    }

    /// Returns `bytes` charged earlier and wakes the waiters.
    pub fn release(&self, bytes: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_sub(bytes))
            });
        self.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_reader_waits_until_bytes_are_released() {
        let budget = Arc::new(ByteBudget::new(100));
        budget.room().await;
        budget.charge(150);
        let b = budget.clone();
        let waiter = tokio::spawn(async move { b.room().await });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(
            !waiter.is_finished(),
            "no room while 150 of 100 bytes are held"
        );
        budget.release(100);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("woken by the release")
            .unwrap();
        assert_eq!(budget.used(), 50);
    }
}
