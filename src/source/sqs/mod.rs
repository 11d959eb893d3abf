//! Amazon SQS as a source: the [`Queue`] seam the queue worker runs against, and [`SqsQueue`], its
//! SQS implementation: resolving the queue (URL, VisibilityTimeout, FIFO; see [`resolver`]),
//! long-poll receives with every system and message attribute and an explicit VisibilityTimeout,
//! DeleteMessageBatch, and ChangeMessageVisibilityBatch for the in-flight heartbeat and for
//! returning failed messages (see [`entries`]). Every call has an operation timeout
//! ([`CallTimeouts`]): a half-open connection is an error after seconds, never a hang. Messages are
//! encoded the way Lambda builds them (see [`event`]). [`memory::MemoryQueue`] is the in-memory
//! queue the worker's tests use. The polling loop and its scaling live in `worker::queue`.

mod entries;
pub mod event;
pub mod memory;
mod queue;

pub use entries::{EntryFailure, VisibilityChange};
pub use queue::{Queue, Resolving};

use async_trait::async_trait;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use aws_sdk_sqs::Client;
use aws_smithy_types::timeout::TimeoutConfig;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use super::SourceError;
use crate::aws::error_text;
use crate::config::QueueArn;

/// One received message.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: String,
    pub receipt_handle: String,
    /// FIFO queues: the message group.
    pub group: Option<String>,
    /// This message's entry in the event's `Records` array, serialized.
    pub event: Vec<u8>,
    /// When the ReceiveMessage that returned it was sent.
    pub received: Instant,
}

/// How long each SQS call may take before it fails as a timeout (handled like any other SQS
/// error: backed off and retried, or left to the visibility timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallTimeouts {
    /// GetQueueUrl, GetQueueAttributes, DeleteMessageBatch, ChangeMessageVisibilityBatch.
    pub call: Duration,
    /// Added to a ReceiveMessage's `WaitTimeSeconds`.
    pub poll_margin: Duration,
}

impl Default for CallTimeouts {
    fn default() -> Self {
        CallTimeouts {
            call: Duration::from_secs(10),
            poll_margin: Duration::from_secs(5),
        }
    }
}

/// A resolved queue.
pub struct SqsQueue {
    client: Client,
    pub url: String,
    pub arn: String,
    region: String,
    /// The queue's own VisibilityTimeout attribute.
    pub visibility_timeout: Duration,
    pub fifo: bool,
    timeouts: CallTimeouts,
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
            .customize()
            .config_override(operation_timeout(&client, CallTimeouts::default().call))
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
            .customize()
            .config_override(operation_timeout(&client, CallTimeouts::default().call))
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
            timeouts: CallTimeouts::default(),
        })
    }

    /// A queue already resolved (the caller knows its URL and attributes).
    pub fn new(
        client: Client,
        url: &str,
        arn: &str,
        region: &str,
        visibility_timeout: Duration,
        fifo: bool,
    ) -> Self {
        SqsQueue {
            client,
            url: url.to_string(),
            arn: arn.to_string(),
            region: region.to_string(),
            visibility_timeout,
            fifo,
            timeouts: CallTimeouts::default(),
        }
    }

    /// Replaces the default call timeouts.
    pub fn with_timeouts(mut self, timeouts: CallTimeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    pub fn timeouts(&self) -> CallTimeouts {
        self.timeouts
    }

    /// A per-call override that bounds the whole operation by `limit`.
    fn within(&self, limit: Duration) -> aws_sdk_sqs::config::Builder {
        operation_timeout(&self.client, limit)
    }

    /// One ReceiveMessage: up to `max` (≤ 10) messages, long-polling up to `wait` (≤ 20 s), each
    /// received message invisible to other receives for `visibility` (whatever the queue's own
    /// VisibilityTimeout). The call fails as a timeout after `wait` plus the poll margin.
    pub async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<Message>, SourceError> {
        let wait_s = wait.as_secs().min(20);
        let received = Instant::now();
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .wait_time_seconds(wait_s as i32)
            .visibility_timeout(visibility_secs(visibility))
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .customize()
            .config_override(self.within(Duration::from_secs(wait_s) + self.timeouts.poll_margin))
            .send()
            .await
            .map_err(|e| classify("ReceiveMessage", &e))?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| self.message(m, received))
            .collect())
    }

    /// A received message: its event entry, and its id, receipt handle and group moved out of the
    /// SDK's message (none copied). None for a message without an id or a receipt handle.
    fn message(&self, mut m: aws_sdk_sqs::types::Message, received: Instant) -> Option<Message> {
        if m.message_id.is_none() || m.receipt_handle.is_none() {
            return None;
        }
        let event = event::encode(&m, &self.arn, &self.region);
        let group = m
            .attributes
            .as_mut()
            .and_then(|a| a.remove(&MessageSystemAttributeName::MessageGroupId));
        Some(Message {
            id: m.message_id?,
            receipt_handle: m.receipt_handle?,
            group,
            event,
            received,
        })
    }
}

#[async_trait]
impl Queue for SqsQueue {
    fn url(&self) -> &str {
        &self.url
    }
    fn fifo(&self) -> bool {
        self.fifo
    }
    fn visibility_timeout(&self) -> Duration {
        self.visibility_timeout
    }
    fn call_timeout(&self) -> Duration {
        self.timeouts.call
    }
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<Message>, SourceError> {
        SqsQueue::receive(self, max, wait, visibility).await
    }
    async fn delete(&self, messages: &[&Message]) -> usize {
        SqsQueue::delete(self, messages).await
    }
    async fn change_visibility(
        &self,
        messages: &[(String, String)],
        visibility: Duration,
        limit: Duration,
    ) -> VisibilityChange {
        SqsQueue::change_visibility(self, messages, visibility, limit).await
    }
}

/// The resolve step of an SQS mapping, for `worker::queue::run_queue`: each call is one
/// [`SqsQueue::resolve`] (GetQueueUrl with the ARN's account, then GetQueueAttributes) of the queue
/// `source` names; the worker retries it until the queue answers.
pub fn resolver(client: Client, queue: &QueueArn) -> impl FnMut() -> Resolving + Send {
    let arn = queue.arn.clone();
    let region = queue.region.clone();
    let account = queue.account.clone();
    let name = queue.queue.clone();
    move || {
        let (client, arn, region, account, name) = (
            client.clone(),
            arn.clone(),
            region.clone(),
            account.clone(),
            name.clone(),
        );
        Box::pin(async move {
            let queue = SqsQueue::resolve(client, &arn, &region, &account, &name).await?;
            Ok(Arc::new(queue) as Arc<dyn Queue>)
        })
    }
}

/// SQS's VisibilityTimeout range is 0 to 12 hours, in whole seconds.
fn visibility_secs(d: Duration) -> i32 {
    d.as_secs().min(43_200) as i32
}

/// A config override whose operation timeout is `limit`; the client's other timeouts (connect)
/// are kept, since an override's timeout config replaces the client's whole.
fn operation_timeout(client: &Client, limit: Duration) -> aws_sdk_sqs::config::Builder {
    let mut timeouts = TimeoutConfig::builder().operation_timeout(limit).build();
    if let Some(base) = client.config().timeout_config() {
        timeouts.take_defaults_from(base);
    }
    aws_sdk_sqs::Config::builder().timeout_config(timeouts)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A server that accepts connections and never answers: a half-open connection.
    async fn silent_server() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        url
    }

    /// Queue `q` (account 123456789012, us-east-1) on an SQS server at `endpoint`, with test
    /// credentials and `timeouts`.
    pub(crate) fn test_queue(endpoint: &str, timeouts: CallTimeouts) -> SqsQueue {
        let conf = aws_sdk_sqs::Config::builder()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .region(aws_sdk_sqs::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "test", "test", None, None, "test",
            ))
            .endpoint_url(endpoint)
            .build();
        SqsQueue::new(
            Client::from_conf(conf),
            &format!("{endpoint}/123456789012/q"),
            "arn:aws:sqs:us-east-1:123456789012:q",
            "us-east-1",
            Duration::from_secs(30),
            false,
        )
        .with_timeouts(timeouts)
    }

    #[tokio::test]
    async fn no_call_hangs_on_a_silent_server() {
        let q = test_queue(
            &silent_server().await,
            CallTimeouts {
                call: Duration::from_millis(300),
                poll_margin: Duration::from_millis(300),
            },
        );
        let bound = Duration::from_secs(5);
        let started = Instant::now();
        let r = tokio::time::timeout(
            bound,
            q.receive(10, Duration::ZERO, Duration::from_secs(30)),
        )
        .await
        .expect("ReceiveMessage returns");
        assert!(matches!(r, Err(SourceError::Service(_))), "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(2));

        let m = Message {
            id: "m".into(),
            receipt_handle: "h".into(),
            group: None,
            event: vec![],
            received: Instant::now(),
        };
        let deleted = tokio::time::timeout(bound, q.delete(&[&m]))
            .await
            .expect("DeleteMessageBatch returns");
        assert_eq!(deleted, 0);
        let list = [("m".to_string(), "h".to_string())];
        let out = tokio::time::timeout(
            bound,
            q.change_visibility(&list, Duration::from_secs(30), Duration::from_secs(60)),
        )
        .await
        .expect("ChangeMessageVisibilityBatch returns");
        assert_eq!(out.retry, list, "a timed-out call is retried");
    }

    #[test]
    fn the_default_timeouts_fit_the_calls() {
        let t = CallTimeouts::default();
        assert_eq!(t.call, Duration::from_secs(10));
        assert_eq!(t.poll_margin, Duration::from_secs(5));
    }

    #[test]
    fn a_received_message_moves_its_fields_and_keeps_its_entry() {
        let q = test_queue("http://127.0.0.1:9", CallTimeouts::default());
        let sdk = |id: Option<&str>, handle: Option<&str>| {
            aws_sdk_sqs::types::Message::builder()
                .set_message_id(id.map(String::from))
                .set_receipt_handle(handle.map(String::from))
                .body("b")
                .attributes(MessageSystemAttributeName::MessageGroupId, "g")
                .attributes(MessageSystemAttributeName::ApproximateReceiveCount, "1")
                .build()
        };
        let received = Instant::now();
        let full = sdk(Some("m"), Some("h"));
        let want = event::encode(&full, &q.arn, "us-east-1");
        let m = q.message(full, received).expect("a whole message");
        assert_eq!((m.id.as_str(), m.receipt_handle.as_str()), ("m", "h"));
        assert_eq!(m.group.as_deref(), Some("g"));
        assert_eq!(m.received, received);
        assert_eq!(
            m.event, want,
            "the entry keeps every attribute, the group's too"
        );
        let entry: serde_json::Value = serde_json::from_slice(&m.event).unwrap();
        assert_eq!(entry["attributes"]["MessageGroupId"], "g");
        assert!(q.message(sdk(None, Some("h")), received).is_none());
        assert!(q.message(sdk(Some("m"), None), received).is_none());
        let plain = aws_sdk_sqs::types::Message::builder()
            .message_id("m")
            .receipt_handle("h")
            .build();
        assert_eq!(q.message(plain, received).unwrap().group, None);
    }
}
