//! Amazon SQS as a source: resolving the queue (URL, VisibilityTimeout, FIFO), long-poll receives
//! with every system and message attribute, DeleteMessageBatch with per-entry retries, and
//! ChangeMessageVisibilityBatch for the in-flight heartbeat. Messages are encoded the way Lambda
//! builds them (see [`event`]). The polling loop and its scaling live in `worker::queue`.

pub mod event;

use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry,
    MessageSystemAttributeName, QueueAttributeName,
};
use aws_sdk_sqs::Client;
use std::time::Duration;

use super::SourceError;
use crate::aws::error_text;

/// One received message.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: String,
    pub receipt_handle: String,
    /// FIFO queues: the message group.
    pub group: Option<String>,
    /// This message's entry in the event's `Records` array, serialized.
    pub event: Vec<u8>,
}

/// A resolved queue.
pub struct SqsQueue {
    client: Client,
    pub url: String,
    pub arn: String,
    region: String,
    pub visibility_timeout: Duration,
    pub fifo: bool,
}

fn classify<E, R>(op: &str, e: &aws_sdk_sqs::error::SdkError<E, R>) -> SourceError
where
    E: aws_sdk_sqs::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    use aws_sdk_sqs::error::ProvideErrorMetadata;
    let code = e.code().unwrap_or_default();
    let text = format!("{op}: {}", error_text(e));
    if code.contains("NonExistentQueue") || code.contains("QueueDoesNotExist") {
        SourceError::NotFound(text)
    } else if code.contains("Throttl") || code == "OverLimit" || code == "RequestThrottled" {
        SourceError::Throttled(text)
    } else {
        SourceError::Service(text)
    }
}

impl SqsQueue {
    /// GetQueueUrl + GetQueueAttributes. A missing queue is [`SourceError::NotFound`].
    pub async fn resolve(
        client: Client,
        arn: &str,
        region: &str,
        account: &str,
        name: &str,
    ) -> Result<Self, SourceError> {
        let url = client
            .get_queue_url()
            .queue_name(name)
            .queue_owner_aws_account_id(account)
            .send()
            .await
            .map_err(|e| classify(&format!("GetQueueUrl {name}"), &e))?
            .queue_url()
            .unwrap_or_default()
            .to_string();
        let attrs = client
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::VisibilityTimeout)
            .attribute_names(QueueAttributeName::FifoQueue)
            .send()
            .await
            .map_err(|e| classify(&format!("GetQueueAttributes {name}"), &e))?;
        let get = |k: QueueAttributeName| attrs.attributes().and_then(|a| a.get(&k)).cloned();
        let visibility = get(QueueAttributeName::VisibilityTimeout)
            .and_then(|v| v.parse().ok())
            .unwrap_or(30);
        let fifo = get(QueueAttributeName::FifoQueue).is_some_and(|v| v == "true")
            || name.ends_with(".fifo");
        Ok(SqsQueue {
            client,
            url,
            arn: arn.to_string(),
            region: region.to_string(),
            visibility_timeout: Duration::from_secs(visibility),
            fifo,
        })
    }

    /// One ReceiveMessage: up to `max` (≤ 10) messages, long-polling up to `wait` (≤ 20 s).
    pub async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Message>, SourceError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .wait_time_seconds(wait.as_secs().min(20) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|e| classify("ReceiveMessage", &e))?;
        Ok(out
            .messages()
            .iter()
            .filter_map(|m| {
                let id = m.message_id()?.to_string();
                let receipt_handle = m.receipt_handle()?.to_string();
                let group = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
                    .cloned();
                Some(Message {
                    event: event::encode(m, &self.arn, &self.region),
                    id,
                    receipt_handle,
                    group,
                })
            })
            .collect())
    }

    /// Deletes messages, 10 per call; entries that fail are retried twice. Returns how many were
    /// deleted.
    pub async fn delete(&self, messages: &[&Message]) -> usize {
        let mut deleted = 0;
        for chunk in messages.chunks(10) {
            let mut pending: Vec<&Message> = chunk.to_vec();
            for attempt in 0..3 {
                if pending.is_empty() {
                    break;
                }
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                }
                let entries = pending
                    .iter()
                    .enumerate()
                    .filter_map(|(i, m)| {
                        DeleteMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .receipt_handle(&m.receipt_handle)
                            .build()
                            .ok()
                    })
                    .collect::<Vec<_>>();
                match self
                    .client
                    .delete_message_batch()
                    .queue_url(&self.url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                {
                    Ok(out) => {
                        deleted += out.successful().len();
                        let failed: Vec<usize> = out
                            .failed()
                            .iter()
                            .filter_map(|f| f.id().parse().ok())
                            .collect();
                        for f in out.failed() {
                            tracing::warn!(queue = %self.arn, code = f.code(), message = f.message(), "delete failed for a message");
                        }
                        pending = failed
                            .into_iter()
                            .filter_map(|i| pending.get(i).copied())
                            .collect();
                    }
                    Err(e) => {
                        tracing::warn!(queue = %self.arn, error = %error_text(&e), "DeleteMessageBatch failed")
                    }
                }
            }
        }
        deleted
    }

    /// Sets the visibility of in-flight messages to `timeout` from now. Returns how many were extended.
    pub async fn extend(&self, messages: &[(String, String)], timeout: Duration) -> usize {
        let mut extended = 0;
        for chunk in messages.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, (_, handle))| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(handle)
                        .visibility_timeout(timeout.as_secs() as i32)
                        .build()
                        .ok()
                })
                .collect::<Vec<_>>();
            match self
                .client
                .change_message_visibility_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
            {
                Ok(out) => extended += out.successful().len(),
                Err(e) => {
                    tracing::warn!(queue = %self.arn, error = %error_text(&e), "ChangeMessageVisibilityBatch failed")
                }
            }
        }
        extended
    }
}
