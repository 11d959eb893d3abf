//! The queue seam: what the SQS worker (`worker::queue`) needs from a queue and nothing more —
//! its kind and timeouts, ReceiveMessage with an explicit visibility, delete, and a visibility
//! change that tells retryable entries from refused ones. [`SqsQueue`](super::SqsQueue) implements
//! it against SQS; [`MemoryQueue`](super::memory::MemoryQueue) in memory, on tokio's clock, for the
//! worker's unit tests. Finding the queue (GetQueueUrl, GetQueueAttributes) is not part of it: the
//! worker is handed a resolve step ([`resolver`](super::resolver) for SQS) that yields a `Queue`.

use async_trait::async_trait;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use super::{Message, VisibilityChange};
use crate::source::SourceError;

/// A queue the worker polls. Implementations never hang: every call returns within its timeout.
#[async_trait]
pub trait Queue: Send + Sync {
    /// Where the queue is, for logs (SQS: its URL).
    fn url(&self) -> &str;
    /// A FIFO queue: messages carry a group, and a group is locked while any of its messages is in
    /// flight.
    fn fifo(&self) -> bool;
    /// The queue's own VisibilityTimeout: how long a failed message stays hidden from its receive.
    fn visibility_timeout(&self) -> Duration;
    /// How long a delete or visibility change may take (the bound on returning failed messages).
    fn call_timeout(&self) -> Duration;
    /// Up to `max` (≤ 10) messages, long-polling up to `wait` (≤ 20 s) while none is available,
    /// each made invisible to other receives for `visibility` from now. Cancel-safe.
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<Message>, SourceError>;
    /// Deletes `messages` (by receipt handle); how many were deleted. One that is not deleted
    /// reappears when its visibility runs out.
    async fn delete(&self, messages: &[&Message]) -> usize;
    /// One attempt to make `messages` (`(message id, receipt handle)`) invisible for `visibility`
    /// from now, each call bounded by `limit`. Entries that failed for a reason a retry may fix are
    /// in `retry`; entries refused as the caller's fault (a stale receipt handle) in `rejected`.
    async fn change_visibility(
        &self,
        messages: &[(String, String)],
        visibility: Duration,
        limit: Duration,
    ) -> VisibilityChange;
}

/// One attempt to find a queue: the worker retries it until it answers.
pub type Resolving = Pin<Box<dyn Future<Output = Result<Arc<dyn Queue>, SourceError>> + Send>>;
