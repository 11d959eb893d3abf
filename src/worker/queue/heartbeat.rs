//! Keeping a batch's messages invisible while it is in flight. Every ReceiveMessage asks for an
//! explicit visibility `V` = the queue's VisibilityTimeout, at least [`MIN_IN_FLIGHT_VISIBILITY`]
//! (so a queue whose VisibilityTimeout is 0 or a few seconds never hands a message to a second
//! receive while the first invocation runs). Every `V / 3` the heartbeat extends every message
//! still in flight by `V` with ChangeMessageVisibilityBatch; a failed or timed-out call and the
//! entries that failed on SQS's side are retried within that beat (each attempt bounded by the
//! time left before the next beat), so a message reappears only if every attempt of two whole
//! beats fails. Entries SQS refuses as the caller's fault (`ReceiptHandleIsInvalid`) are logged and
//! no longer extended. A group that settles leaves the set at once.

use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::super::pause;
use super::Shared;
use crate::source::sqs::Message;

/// The least visibility sluice gives a received message, and renews while it is in flight: a third
/// of it (10 s) leaves room for a timed-out call (10 s at most) and retries before expiry.
pub(super) const MIN_IN_FLIGHT_VISIBILITY: Duration = Duration::from_secs(30);
/// An attempt with less time than this before the next beat is left to that beat.
const MIN_ATTEMPT: Duration = Duration::from_millis(200);

/// The visibility each received message gets and the heartbeat renews.
pub(super) fn in_flight_visibility(queue_visibility: Duration) -> Duration {
    queue_visibility.max(MIN_IN_FLIGHT_VISIBILITY)
}

/// How often the heartbeat beats for an in-flight visibility `v`.
pub(super) fn heartbeat_period(v: Duration) -> Duration {
    v / 3
}

/// The `(message id, receipt handle)` of a batch's messages not yet settled. The heartbeat holds the
/// lock for each visibility change, so a group that settles is never extended after it left.
#[derive(Default)]
pub(super) struct InFlight {
    entries: tokio::sync::Mutex<Vec<(String, String)>>,
}

impl InFlight {
    pub(super) async fn add(&self, messages: &[Message]) {
        self.entries.lock().await.extend(
            messages
                .iter()
                .map(|m| (m.id.clone(), m.receipt_handle.clone())),
        );
    }

    /// Removes settled messages (waiting for a visibility change in progress).
    pub(super) async fn remove(&self, messages: &[Message]) {
        let mut entries = self.entries.lock().await;
        entries.retain(|(_, h)| !messages.iter().any(|m| m.receipt_handle == *h));
    }

    #[cfg(test)]
    pub(super) async fn snapshot(&self) -> Vec<(String, String)> {
        self.entries.lock().await.clone()
    }
}

/// Beats until `stop` fires.
pub(super) async fn heartbeat(
    shared: Arc<Shared>,
    in_flight: Arc<InFlight>,
    stop: CancellationToken,
) {
    let period = heartbeat_period(shared.visibility);
    let mut next = Instant::now() + period;
    loop {
        if !pause(&stop, next.saturating_duration_since(Instant::now())).await {
            return;
        }
        let deadline = next + period;
        next = deadline;
        if !beat(&shared, &in_flight, deadline, &stop).await {
            return;
        }
    }
}

/// One beat: extend everything in flight, retrying what failed until `deadline`. False when
/// stopped meanwhile.
async fn beat(
    shared: &Shared,
    in_flight: &InFlight,
    deadline: Instant,
    stop: &CancellationToken,
) -> bool {
    let name = shared.ctx.name();
    let mut retry: Option<Vec<(String, String)>> = None;
    let mut attempt = 0u32;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut entries = in_flight.entries.lock().await;
        let list: Vec<(String, String)> = match &retry {
            None => entries.clone(),
            Some(r) => r.iter().filter(|e| entries.contains(e)).cloned().collect(),
        };
        if list.is_empty() {
            return true;
        }
        if left < MIN_ATTEMPT {
            warn!(mapping = name, messages = list.len(), "could not extend the visibility of in-flight messages in this beat; the next beat tries again");
            return true;
        }
        let out = shared
            .queue
            .change_visibility(&list, shared.visibility, left)
            .await;
        if !out.rejected.is_empty() {
            entries.retain(|(_, h)| !out.rejected.iter().any(|r| r.receipt_handle == *h));
            warn!(mapping = name, messages = out.rejected.len(), "in-flight messages can no longer be kept invisible; they may be delivered again while their invocation runs");
        }
        drop(entries);
        shared.ctx.metrics.sqs_extended(name, out.changed);
        if out.retry.is_empty() {
            return true;
        }
        attempt += 1;
        retry = Some(out.retry);
        let left = deadline.saturating_duration_since(Instant::now());
        if !pause(stop, shared.ctx.policy.backoff(attempt).min(left)).await {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heartbeat_beats_well_before_expiry() {
        for queue in [0, 1, 2, 10, 29, 30, 31, 60, 900, 43_200] {
            let v = in_flight_visibility(Duration::from_secs(queue));
            assert!(
                v >= Duration::from_secs(queue),
                "never shorter than the queue's"
            );
            assert!(v >= MIN_IN_FLIGHT_VISIBILITY);
            let p = heartbeat_period(v);
            // Two whole beats, each with room for a call that runs into its 10 s timeout, fit
            // before the visibility given by the last successful extension runs out.
            assert!(p >= Duration::from_secs(10), "{queue}: {p:?}");
            assert!(2 * p < v && 3 * p <= v, "{queue}: {p:?} of {v:?}");
        }
    }

    fn msg(id: &str, handle: &str) -> Message {
        Message {
            id: id.into(),
            receipt_handle: handle.into(),
            group: None,
            event: vec![],
            received: Instant::now(),
        }
    }

    #[tokio::test]
    async fn a_settled_group_leaves_the_in_flight_set_by_receipt_handle() {
        let f = InFlight::default();
        // The same message delivered twice: two handles, removed one by one.
        f.add(&[msg("a", "h1"), msg("b", "h2"), msg("a", "h3")])
            .await;
        f.remove(&[msg("a", "h1")]).await;
        assert_eq!(
            f.snapshot().await,
            vec![("b".into(), "h2".into()), ("a".into(), "h3".into())]
        );
    }
}
