//! Dispatching a received batch and settling it. A FIFO batch is split by MessageGroupId and each
//! group is dispatched on its own, in order; every group (a standard batch is one group) settles
//! the moment its own dispatches are done, whatever the batch's other groups are doing: its
//! messages leave the heartbeat, those that succeeded are deleted, and those that failed are
//! returned to the queue with the visibility left of the queue's own VisibilityTimeout counted
//! from their receive (so they reappear when they would have with AWS's pollers).
//!
//! Deletion is keyed by message id: a standard queue may deliver one message twice in a batch,
//! and a message the function reported failed (under either copy) is never deleted.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{error, warn};

use super::heartbeat::InFlight;
use super::Shared;
use crate::batch::{self, MAX_PAYLOAD_BYTES};
use crate::dispatch::{classify, Outcome};
use crate::source::sqs::Message;

/// Dispatches a batch (per message group for FIFO, concurrently), settling each group as soon as
/// it is done; returns how many messages were deleted and how many returned. Messages that match
/// none of the mapping's filters are deleted first, without a dispatch (not counted here).
pub(super) async fn process(
    shared: &Arc<Shared>,
    messages: Vec<Message>,
    in_flight: &Arc<InFlight>,
) -> (usize, usize) {
    let messages = super::filtered::drop_filtered(shared, in_flight, messages).await;
    if messages.is_empty() {
        return (0, 0);
    }
    let mut set = JoinSet::new();
    for group in split_groups(messages, shared.queue.fifo()) {
        let shared = shared.clone();
        let in_flight = in_flight.clone();
        set.spawn(async move {
            let (group, failed) = dispatch_group(&shared, group).await;
            settle_group(&shared, &in_flight, &group, &failed).await
        });
    }
    let (mut deleted, mut returned) = (0, 0);
    while let Some(result) = set.join_next().await {
        match result {
            Ok((d, r)) => {
                deleted += d;
                returned += r;
            }
            Err(e) => error!(error = %e, "dispatch task failed; its messages will reappear"),
        }
    }
    (deleted, returned)
}

/// FIFO: the batch's groups in order of first appearance, each in receive order. Standard: one group.
pub(super) fn split_groups(messages: Vec<Message>, fifo: bool) -> Vec<Vec<Message>> {
    if !fifo {
        return vec![messages];
    }
    let mut order: Vec<Option<String>> = Vec::new();
    let mut parts: Vec<Vec<Message>> = Vec::new();
    for m in messages {
        match order.iter().position(|g| *g == m.group) {
            Some(i) => parts[i].push(m),
            None => {
                order.push(m.group.clone());
                parts.push(vec![m]);
            }
        }
    }
    parts
}

/// Which messages of a settled group to delete, and which to return: a message is deleted only
/// when no failed message of the group shares its id.
pub(super) fn plan<'a>(
    messages: &'a [Message],
    failed: &[usize],
) -> (Vec<&'a Message>, Vec<&'a Message>) {
    let failed_ids: HashSet<&str> = failed
        .iter()
        .filter_map(|&i| messages.get(i))
        .map(|m| m.id.as_str())
        .collect();
    messages
        .iter()
        .partition(|m| !failed_ids.contains(m.id.as_str()))
}

/// Takes a settled group off the heartbeat, deletes what succeeded, returns what failed.
async fn settle_group(
    shared: &Shared,
    in_flight: &InFlight,
    messages: &[Message],
    failed: &[usize],
) -> (usize, usize) {
    let (delete, returned) = plan(messages, failed);
    in_flight.remove(messages).await;
    let deleted = shared.queue.delete(&delete).await;
    release(shared, &returned).await;
    shared.lane.settled(messages.len(), deleted, returned.len());
    (deleted, returned.len())
}

/// Failed messages get the visibility left of the queue's VisibilityTimeout since their receive
/// (0 when it has passed): sluice received them with a longer one (see `heartbeat`). If this fails
/// they reappear when the in-flight visibility runs out.
async fn release(shared: &Shared, messages: &[&Message]) {
    let now = Instant::now();
    let mut by_visibility: BTreeMap<u64, Vec<(String, String)>> = BTreeMap::new();
    for m in messages {
        let left = (m.received + shared.queue.visibility_timeout()).saturating_duration_since(now);
        by_visibility
            .entry(left.as_secs())
            .or_default()
            .push((m.id.clone(), m.receipt_handle.clone()));
    }
    let limit = shared.queue.call_timeout();
    for (secs, list) in by_visibility {
        let visibility = Duration::from_secs(secs);
        let out = shared
            .queue
            .change_visibility(&list, visibility, limit)
            .await;
        if !out.retry.is_empty() {
            let again = shared
                .queue
                .change_visibility(&out.retry, visibility, limit)
                .await;
            if !again.retry.is_empty() {
                warn!(mapping = shared.ctx.name(), messages = again.retry.len(), "could not return failed messages to the queue; they reappear when their in-flight visibility runs out");
            }
        }
    }
}

/// Dispatches one group's messages in order (split further only by the 6 MB limit); returns them
/// with the indices that failed. For FIFO, once a message fails every later one of the group
/// fails too.
async fn dispatch_group(shared: &Shared, messages: Vec<Message>) -> (Vec<Message>, Vec<usize>) {
    let fifo = shared.queue.fifo();
    let mut all = Vec::with_capacity(messages.len());
    let mut failed = Vec::new();
    for chunk in batch::split_by_size(messages, |m| m.event.len(), MAX_PAYLOAD_BYTES) {
        let offset = all.len();
        let n = chunk.len();
        let chunk_failed: Vec<usize> = if fifo && !failed.is_empty() {
            (0..n).collect()
        } else {
            match shared.invocations.acquire().await {
                Ok(_permit) => invoke(shared, &chunk).await,
                Err(_) => (0..n).collect(),
            }
        };
        failed.extend(chunk_failed.into_iter().map(|i| offset + i));
        all.extend(chunk);
    }
    (all, failed)
}

/// One invocation; the indices of `chunk` that failed.
async fn invoke(shared: &Shared, chunk: &[Message]) -> Vec<usize> {
    let ctx = &shared.ctx;
    let n = chunk.len();
    let payload = batch::encode_entries(chunk.iter().map(|m| m.event.as_slice()));
    let started = Instant::now();
    let result = ctx.dispatcher.invoke(payload).await;
    let took = started.elapsed();
    let outcome = classify(
        &result,
        ctx.mapping.report_batch_item_failures(),
        chunk.iter().map(|m| m.id.as_str()),
    );
    let label = outcome.label();
    shared.lane.invoked(n, outcome.invoked(), label, took);
    let failed: Vec<usize> = match outcome {
        Outcome::Success => vec![],
        // FIFO: nothing after a failed message of the group may be deleted before it.
        Outcome::PartialFailure(f) if shared.queue.fifo() => (f[0]..n).collect(),
        Outcome::PartialFailure(f) => f,
        Outcome::FunctionError {
            partial: true,
            detail,
        } => failed_all(shared, n, label, None, &detail),
        Outcome::FunctionError { detail, .. } | Outcome::ServiceError(detail) => {
            failed_all(shared, n, label, Some(&shared.stats.errors), &detail)
        }
        Outcome::Throttled(detail) => {
            failed_all(shared, n, label, Some(&shared.stats.throttles), &detail)
        }
        Outcome::PayloadTooLarge(detail) => failed_all(shared, n, label, None, &detail),
    };
    if !failed.is_empty() {
        shared.lane.messages_failed(failed.len());
    }
    failed
}

/// The whole chunk failed: counts it for the scaling policy (`counter`), logs it and shows it;
/// every index of the chunk.
fn failed_all(
    shared: &Shared,
    n: usize,
    label: &str,
    counter: Option<&std::sync::atomic::AtomicU64>,
    detail: &str,
) -> Vec<usize> {
    if let Some(counter) = counter {
        counter.fetch_add(1, Ordering::Relaxed);
    }
    shared.lane.queue_batch_failed(n, label, detail);
    (0..n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::response::{self, ItemFailures};

    fn msg(id: &str, handle: &str, group: Option<&str>) -> Message {
        Message {
            id: id.into(),
            receipt_handle: handle.into(),
            group: group.map(str::to_string),
            event: vec![],
            received: Instant::now(),
        }
    }

    fn handles(ms: &[&Message]) -> Vec<String> {
        ms.iter().map(|m| m.receipt_handle.clone()).collect()
    }

    #[test]
    fn a_message_delivered_twice_and_failed_once_is_never_deleted() {
        // A standard queue handed message "a" out twice in one batch; the function reported it
        // failed. The batchItemFailures parser names one position for the id, whichever copy.
        let batch = [
            msg("a", "h-a1", None),
            msg("b", "h-b", None),
            msg("a", "h-a2", None),
        ];
        for failed in [vec![0], vec![2], vec![0, 2]] {
            let (delete, returned) = plan(&batch, &failed);
            assert_eq!(handles(&delete), ["h-b"], "{failed:?}");
            assert_eq!(handles(&returned), ["h-a1", "h-a2"], "{failed:?}");
        }
        let (delete, returned) = plan(&batch, &[]);
        assert_eq!(handles(&delete), ["h-a1", "h-b", "h-a2"]);
        assert!(returned.is_empty());
    }

    #[test]
    fn the_parser_and_the_plan_together_keep_a_failed_duplicate() {
        let batch = [msg("a", "h-a1", None), msg("a", "h-a2", None)];
        let body = br#"{"batchItemFailures":[{"itemIdentifier":"a"}]}"#;
        let ItemFailures::Failed(failed) =
            response::parse(body, batch.iter().map(|m| m.id.as_str()))
        else {
            panic!("a failure")
        };
        let (delete, _) = plan(&batch, &failed);
        assert!(delete.is_empty(), "{:?}", handles(&delete));
    }

    #[test]
    fn out_of_range_indices_fail_nothing() {
        let batch = [msg("a", "h-a", None)];
        let (delete, returned) = plan(&batch, &[5]);
        assert_eq!(handles(&delete), ["h-a"]);
        assert!(returned.is_empty());
    }

    #[test]
    fn fifo_batches_split_by_group_in_order() {
        let batch = vec![
            msg("1", "h1", Some("x")),
            msg("2", "h2", Some("y")),
            msg("3", "h3", Some("x")),
        ];
        let groups = split_groups(batch.clone(), true);
        let ids: Vec<Vec<&str>> = groups
            .iter()
            .map(|g| g.iter().map(|m| m.id.as_str()).collect())
            .collect();
        assert_eq!(ids, vec![vec!["1", "3"], vec!["2"]]);
        assert_eq!(split_groups(batch, false).len(), 1);
    }
}
