//! The batch calls on received messages, 10 entries per call: DeleteMessageBatch and
//! ChangeMessageVisibilityBatch. Each entry's outcome is read from the batch result: an entry SQS
//! rejects as the caller's fault (`SenderFault`, e.g. `ReceiptHandleIsInvalid` for a message
//! deleted or received again elsewhere) cannot succeed on a retry and is reported as rejected; an
//! entry that failed on SQS's side, or whose call failed or timed out, is reported for a retry.

use aws_sdk_sqs::types::{
    BatchResultErrorEntry, ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry,
};
use std::time::Duration;
use tracing::warn;

use super::{visibility_secs, Message, SqsQueue};
use crate::aws::error_text;

/// One entry SQS refused as the caller's fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryFailure {
    pub message_id: String,
    pub receipt_handle: String,
    pub code: String,
    pub message: String,
}

/// The outcome of changing the visibility of some in-flight messages.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct VisibilityChange {
    /// Entries changed.
    pub changed: usize,
    /// Entries refused as the caller's fault: retrying cannot help.
    pub rejected: Vec<EntryFailure>,
    /// `(message id, receipt handle)` of entries to try again: a failed or timed-out call, or an
    /// entry that failed on SQS's side.
    pub retry: Vec<(String, String)>,
}

/// The `Id` of entry `i` of a batch call (at most 10 entries a call).
const IDS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

/// The entry an `Id` of a batch result names, of `n` sent (entry `i` is sent with `Id` `i` in
/// decimal, [`IDS`] for calls of up to 10): None for an id the call did not send.
fn entry_index(id: &str, n: usize) -> Option<usize> {
    let canonical = !id.is_empty()
        && id.bytes().all(|b| b.is_ascii_digit())
        && (id == "0" || !id.starts_with('0'));
    id.parse().ok().filter(|&i| canonical && i < n)
}

/// How one batch call's `n` entries came out, by index.
#[derive(Debug, Default, PartialEq)]
struct Sorted<'a> {
    changed: usize,
    /// Entries refused as the caller's fault, with SQS's answer.
    rejected: Vec<(usize, &'a BatchResultErrorEntry)>,
    /// Entries to try again, in the order sent.
    retry: Vec<usize>,
}

/// Sorts a batch call's `n` entries by its result: entries neither successful nor failed (a
/// malformed result) are retried, like SQS-side failures; ids the call did not send are ignored.
fn sort_indices<'a>(
    n: usize,
    successful: impl IntoIterator<Item = &'a str>,
    failed: &'a [BatchResultErrorEntry],
) -> Sorted<'a> {
    let mut ok = vec![false; n];
    for id in successful {
        if let Some(i) = entry_index(id, n) {
            ok[i] = true;
        }
    }
    let mut refused: Vec<Option<&BatchResultErrorEntry>> = vec![None; n];
    for f in failed {
        if let Some(i) = entry_index(f.id(), n) {
            refused[i] = Some(f);
        }
    }
    let mut out = Sorted::default();
    for (i, (refused, ok)) in refused.into_iter().zip(ok).enumerate() {
        match refused {
            Some(f) if f.sender_fault() => out.rejected.push((i, f)),
            Some(_) => out.retry.push(i),
            None if ok => out.changed += 1,
            None => out.retry.push(i),
        }
    }
    out
}

/// Sorts the entries of one batch call (`sent[i]` was sent with `Id` `i`) by its result: entries
/// neither successful nor failed (a malformed result) are retried, like SQS-side failures.
pub(crate) fn sort_entries(
    sent: &[(String, String)],
    successful: &[&str],
    failed: &[BatchResultErrorEntry],
) -> VisibilityChange {
    let sorted = sort_indices(sent.len(), successful.iter().copied(), failed);
    VisibilityChange {
        changed: sorted.changed,
        rejected: sorted
            .rejected
            .iter()
            .map(|&(i, f)| EntryFailure {
                message_id: sent[i].0.clone(),
                receipt_handle: sent[i].1.clone(),
                code: f.code().to_string(),
                message: f.message().unwrap_or_default().to_string(),
            })
            .collect(),
        retry: sorted.retry.iter().map(|&i| sent[i].clone()).collect(),
    }
}

impl SqsQueue {
    /// Deletes messages, 10 per call; entries that fail on SQS's side (or whose call fails) are
    /// retried twice, entries refused as the caller's fault are logged. Returns how many were
    /// deleted.
    pub async fn delete(&self, messages: &[&Message]) -> usize {
        let mut deleted = 0;
        for chunk in messages.chunks(IDS.len()) {
            let mut pending: Vec<&Message> = chunk.to_vec();
            for attempt in 0..3u64 {
                if pending.is_empty() {
                    break;
                }
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                }
                let entries = pending
                    .iter()
                    .zip(IDS)
                    .filter_map(|(m, id)| {
                        DeleteMessageBatchRequestEntry::builder()
                            .id(id)
                            .receipt_handle(&m.receipt_handle)
                            .build()
                            .ok()
                    })
                    .collect::<Vec<_>>();
                let result = self
                    .client
                    .delete_message_batch()
                    .queue_url(&self.url)
                    .set_entries(Some(entries))
                    .customize()
                    .config_override(self.within(self.timeouts.call))
                    .send()
                    .await;
                let retry = match result {
                    Ok(out) => {
                        let sorted = sort_indices(
                            pending.len(),
                            out.successful().iter().map(|s| s.id()),
                            out.failed(),
                        );
                        deleted += sorted.changed;
                        for (i, f) in &sorted.rejected {
                            warn!(queue = %self.arn, message_id = %pending[*i].id, code = %f.code(), message = %f.message().unwrap_or_default(), "SQS refused to delete a message");
                        }
                        sorted.retry.iter().map(|&i| pending[i]).collect()
                    }
                    Err(e) => {
                        warn!(queue = %self.arn, error = %error_text(&e), "DeleteMessageBatch failed");
                        pending
                    }
                };
                pending = retry;
            }
            for m in &pending {
                warn!(queue = %self.arn, message_id = %m.id, "could not delete a message: it will be delivered again after its visibility timeout");
            }
        }
        deleted
    }

    /// One attempt to make `messages` (`(message id, receipt handle)`) invisible for `visibility`
    /// from now, 10 per call, every call bounded by `limit`. Refused entries are logged here.
    pub async fn change_visibility(
        &self,
        messages: &[(String, String)],
        visibility: Duration,
        limit: Duration,
    ) -> VisibilityChange {
        let mut total = VisibilityChange::default();
        for chunk in messages.chunks(IDS.len()) {
            let entries = chunk
                .iter()
                .zip(IDS)
                .filter_map(|((_, handle), id)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(id)
                        .receipt_handle(handle)
                        .visibility_timeout(visibility_secs(visibility))
                        .build()
                        .ok()
                })
                .collect::<Vec<_>>();
            let result = self
                .client
                .change_message_visibility_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .customize()
                .config_override(self.within(limit.min(self.timeouts.call)))
                .send()
                .await;
            let sorted = match result {
                Ok(out) => {
                    let ok: Vec<&str> = out.successful().iter().map(|s| s.id()).collect();
                    sort_entries(chunk, &ok, out.failed())
                }
                Err(e) => {
                    warn!(queue = %self.arn, error = %error_text(&e), messages = chunk.len(), "ChangeMessageVisibilityBatch failed");
                    VisibilityChange {
                        retry: chunk.to_vec(),
                        ..Default::default()
                    }
                }
            };
            for f in &sorted.rejected {
                warn!(queue = %self.arn, message_id = %f.message_id, code = %f.code, message = %f.message, "SQS refused to change a message's visibility");
            }
            total.changed += sorted.changed;
            total.rejected.extend(sorted.rejected);
            total.retry.extend(sorted.retry);
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, sender_fault: bool, code: &str) -> BatchResultErrorEntry {
        BatchResultErrorEntry::builder()
            .id(id)
            .sender_fault(sender_fault)
            .code(code)
            .message("m")
            .build()
            .unwrap()
    }

    fn sent(n: usize) -> Vec<(String, String)> {
        (0..n).map(|i| (format!("m{i}"), format!("h{i}"))).collect()
    }

    #[test]
    fn caller_faults_are_rejected_and_the_rest_retried() {
        let sent = sent(4);
        let out = sort_entries(
            &sent,
            &["0"],
            &[
                entry("1", true, "ReceiptHandleIsInvalid"),
                entry("2", false, "InternalError"),
            ],
        );
        assert_eq!(out.changed, 1);
        assert_eq!(
            out.rejected,
            vec![EntryFailure {
                message_id: "m1".into(),
                receipt_handle: "h1".into(),
                code: "ReceiptHandleIsInvalid".into(),
                message: "m".into(),
            }]
        );
        // SQS's own failure and an entry the result does not mention are both retried.
        assert_eq!(
            out.retry,
            vec![("m2".into(), "h2".into()), ("m3".into(), "h3".into())]
        );
    }

    #[test]
    fn unknown_ids_in_the_result_are_ignored() {
        let out = sort_entries(&sent(1), &["0", "7"], &[entry("9", true, "X")]);
        assert_eq!(
            out,
            VisibilityChange {
                changed: 1,
                ..Default::default()
            }
        );
    }

    #[test]
    fn only_the_ids_a_call_sent_name_an_entry() {
        assert_eq!(entry_index("0", 1), Some(0));
        assert_eq!(entry_index("9", 10), Some(9));
        assert_eq!(entry_index("12", 13), Some(12));
        for id in [
            "",
            "10",
            "01",
            "00",
            "+1",
            "-1",
            " 1",
            "1 ",
            "x",
            "99999999999999999999999",
        ] {
            assert_eq!(entry_index(id, 10), None, "{id:?}");
        }
        assert_eq!(entry_index("3", 3), None);
        assert_eq!(
            IDS.iter()
                .enumerate()
                .filter(|(i, id)| entry_index(id, 10) == Some(*i))
                .count(),
            10
        );
    }

    #[test]
    fn the_last_answer_for_an_entry_counts_and_a_failure_outranks_a_success() {
        let failed = [
            entry("0", false, "InternalError"),
            entry("0", true, "ReceiptHandleIsInvalid"),
            entry("1", true, "X"),
        ];
        let sorted = sort_indices(3, ["1", "2", "2"], &failed);
        assert_eq!(sorted.changed, 1);
        assert_eq!(
            sorted
                .rejected
                .iter()
                .map(|(i, f)| (*i, f.code()))
                .collect::<Vec<_>>(),
            vec![(0, "ReceiptHandleIsInvalid"), (1, "X")]
        );
        assert!(sorted.retry.is_empty());
        let none = sort_indices(2, [], &[]);
        assert_eq!(none.retry, vec![0, 1]);
    }
}
