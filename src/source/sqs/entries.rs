//! The batch calls on received messages, 10 entries per call: DeleteMessageBatch and
//! ChangeMessageVisibilityBatch. Each entry's outcome is read from the batch result: an entry SQS
//! rejects as the caller's fault (`SenderFault`, e.g. `ReceiptHandleIsInvalid` for a message
//! deleted or received again elsewhere) cannot succeed on a retry and is reported as rejected; an
//! entry that failed on SQS's side, or whose call failed or timed out, is reported for a retry.

use aws_sdk_sqs::types::{
    BatchResultErrorEntry, ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry,
};
use std::collections::HashSet;
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

/// Sorts the entries of one batch call (`sent[i]` was sent with `Id` `i`) by its result: entries
/// neither successful nor failed (a malformed result) are retried, like SQS-side failures.
pub(crate) fn sort_entries(
    sent: &[(String, String)],
    successful: &[&str],
    failed: &[BatchResultErrorEntry],
) -> VisibilityChange {
    let ok: HashSet<&str> = successful.iter().copied().collect();
    let refused: std::collections::HashMap<&str, &BatchResultErrorEntry> =
        failed.iter().map(|f| (f.id(), f)).collect();
    let mut out = VisibilityChange::default();
    for (i, (id, handle)) in sent.iter().enumerate() {
        let key = i.to_string();
        match refused.get(key.as_str()) {
            Some(f) if f.sender_fault() => out.rejected.push(EntryFailure {
                message_id: id.clone(),
                receipt_handle: handle.clone(),
                code: f.code().to_string(),
                message: f.message().unwrap_or_default().to_string(),
            }),
            Some(_) => out.retry.push((id.clone(), handle.clone())),
            None if ok.contains(key.as_str()) => out.changed += 1,
            None => out.retry.push((id.clone(), handle.clone())),
        }
    }
    out
}

impl SqsQueue {
    /// Deletes messages, 10 per call; entries that fail on SQS's side (or whose call fails) are
    /// retried twice, entries refused as the caller's fault are logged. Returns how many were
    /// deleted.
    pub async fn delete(&self, messages: &[&Message]) -> usize {
        let mut deleted = 0;
        for chunk in messages.chunks(10) {
            let mut pending: Vec<(String, String)> = chunk
                .iter()
                .map(|m| (m.id.clone(), m.receipt_handle.clone()))
                .collect();
            for attempt in 0..3u64 {
                if pending.is_empty() {
                    break;
                }
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                }
                let entries = pending
                    .iter()
                    .enumerate()
                    .filter_map(|(i, (_, handle))| {
                        DeleteMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .receipt_handle(handle)
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
                let sorted = match result {
                    Ok(out) => {
                        let ok: Vec<&str> = out.successful().iter().map(|s| s.id()).collect();
                        sort_entries(&pending, &ok, out.failed())
                    }
                    Err(e) => {
                        warn!(queue = %self.arn, error = %error_text(&e), "DeleteMessageBatch failed");
                        VisibilityChange {
                            retry: pending.clone(),
                            ..Default::default()
                        }
                    }
                };
                deleted += sorted.changed;
                for f in &sorted.rejected {
                    warn!(queue = %self.arn, message_id = %f.message_id, code = %f.code, message = %f.message, "SQS refused to delete a message");
                }
                pending = sorted.retry;
            }
            for (id, _) in &pending {
                warn!(queue = %self.arn, message_id = %id, "could not delete a message: it will be delivered again after its visibility timeout");
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
        for chunk in messages.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, (_, handle))| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
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
}
