//! An SQS batch under the mapping's `FilterCriteria` (docs/filtering.md): the messages that match
//! no filter are taken off the heartbeat, deleted without an invoke (as AWS does) and counted
//! (`filtered_out`); the rest are dispatched as usual. A filtered message whose delete fails
//! reappears after its in-flight visibility and is filtered again.

use super::heartbeat::InFlight;
use super::Shared;
use crate::filter::RecordFilter;
use crate::source::sqs::Message;

/// Deletes the messages of `messages` that match none of the mapping's filters; returns the others,
/// in order (all of them when the mapping has no filters).
pub(super) async fn drop_filtered(
    shared: &Shared,
    in_flight: &InFlight,
    messages: Vec<Message>,
) -> Vec<Message> {
    let Some(filter) = RecordFilter::of(&shared.ctx.mapping) else {
        return messages;
    };
    let (sent, filtered) = filter.split(messages, |m| m.event.as_slice());
    if filtered.is_empty() {
        return sent;
    }
    shared.lane.filtered_out(filtered.len());
    in_flight.remove(&filtered).await;
    let refs: Vec<&Message> = filtered.iter().collect();
    shared.queue.delete(&refs).await;
    // No longer in flight; not counted as deleted after success.
    shared.lane.settled(filtered.len(), 0, 0);
    sent
}
