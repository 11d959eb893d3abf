//! An in-memory [`Queue`] on tokio's clock, for the queue worker's unit tests (and benches): it
//! behaves like SQS where the worker can tell. Messages keep their send order and get a new
//! receipt handle on every receive; a received message is invisible for the visibility the
//! receive asked for and reappears when it runs out unless it was deleted; `ApproximateReceiveCount`
//! grows per receive. FIFO queues lock a message group while any of its messages is in flight. A
//! long poll returns as soon as a message is available (sent, returned, or reappearing), or empty
//! when its wait is over. Failures are injected per call: receive errors, failed delete calls and
//! failed visibility-change calls; a stale receipt handle is refused (`ReceiptHandleIsInvalid`)
//! as SQS refuses it. Events are encoded by [`event::encode`](super::event::encode), the same
//! code as real messages.

use async_trait::async_trait;
use aws_sdk_sqs::types::MessageSystemAttributeName;
use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{event, EntryFailure, Message, Queue, VisibilityChange};
use crate::source::SourceError;

/// The longest long poll SQS allows.
const MAX_WAIT: Duration = Duration::from_secs(20);

struct Stored {
    id: String,
    body: String,
    group: Option<String>,
    receive_count: u32,
    /// The receipt handle of the latest receive.
    handle: Option<String>,
    /// Invisible until then (in flight while it is in the future).
    hidden_until: Option<Instant>,
}

impl Stored {
    fn in_flight(&self, now: Instant) -> bool {
        self.hidden_until.is_some_and(|t| t > now)
    }
}

#[derive(Default)]
struct State {
    /// Not yet deleted, in send order.
    messages: Vec<Stored>,
    sent: u64,
    /// Receive calls (numbered from 1) that fail, and how.
    receive_faults: BTreeMap<usize, SourceError>,
    delete_faults: usize,
    visibility_faults: usize,
    receives: usize,
    deleted: Vec<String>,
    visibility_changes: Vec<(Vec<String>, Duration)>,
}

impl State {
    /// Takes up to `max` available messages (FIFO: of groups with nothing in flight), hiding them
    /// for `visibility`.
    fn take(&mut self, fifo: bool, max: usize, visibility: Duration, now: Instant) -> Vec<Stored> {
        let locked: HashSet<Option<String>> = if fifo {
            self.messages
                .iter()
                .filter(|m| m.in_flight(now))
                .map(|m| m.group.clone())
                .collect()
        } else {
            HashSet::new()
        };
        let mut out = Vec::new();
        for m in &mut self.messages {
            if out.len() >= max {
                break;
            }
            if m.in_flight(now) || locked.contains(&m.group) {
                continue;
            }
            m.receive_count += 1;
            m.handle = Some(format!("{}#{}", m.id, m.receive_count));
            m.hidden_until = Some(now + visibility);
            out.push(Stored {
                id: m.id.clone(),
                body: m.body.clone(),
                group: m.group.clone(),
                receive_count: m.receive_count,
                handle: m.handle.clone(),
                hidden_until: m.hidden_until,
            });
        }
        out
    }

    /// When the next in-flight message reappears.
    fn next_reappearance(&self, now: Instant) -> Option<Instant> {
        self.messages
            .iter()
            .filter_map(|m| m.hidden_until.filter(|t| *t > now))
            .min()
    }

    fn position(&self, id: &str, handle: &str) -> Option<usize> {
        self.messages
            .iter()
            .position(|m| m.id == id && m.handle.as_deref() == Some(handle))
    }
}

/// An in-memory queue (see the module documentation).
pub struct MemoryQueue {
    fifo: bool,
    visibility_timeout: Duration,
    call_timeout: Duration,
    arn: String,
    region: String,
    state: Mutex<State>,
    /// Woken whenever a message may have become available.
    changed: Notify,
}

impl MemoryQueue {
    /// A standard queue whose VisibilityTimeout is `visibility_timeout`.
    pub fn standard(visibility_timeout: Duration) -> Self {
        Self::new(false, visibility_timeout)
    }

    /// A FIFO queue whose VisibilityTimeout is `visibility_timeout`.
    pub fn fifo(visibility_timeout: Duration) -> Self {
        Self::new(true, visibility_timeout)
    }

    fn new(fifo: bool, visibility_timeout: Duration) -> Self {
        let name = if fifo { "memory.fifo" } else { "memory" };
        MemoryQueue {
            fifo,
            visibility_timeout,
            call_timeout: Duration::from_secs(10),
            arn: format!("arn:aws:sqs:us-east-1:000000000000:{name}"),
            region: "us-east-1".into(),
            state: Mutex::new(State::default()),
            changed: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("memory queue lock")
    }

    /// Sends a message (no group); returns its message id.
    pub fn send(&self, body: &str) -> String {
        self.push(None, body)
    }

    /// Sends a message to `group` (FIFO queues); returns its message id.
    pub fn send_to_group(&self, group: &str, body: &str) -> String {
        self.push(Some(group.to_string()), body)
    }

    fn push(&self, group: Option<String>, body: &str) -> String {
        let id = {
            let mut st = self.state();
            st.sent += 1;
            let id = format!("msg-{}", st.sent);
            st.messages.push(Stored {
                id: id.clone(),
                body: body.to_string(),
                group,
                receive_count: 0,
                handle: None,
                hidden_until: None,
            });
            id
        };
        self.changed.notify_waiters();
        id
    }

    /// The next receives fail with `errors`, one each, before any message is taken.
    pub fn fail_receives(&self, errors: impl IntoIterator<Item = SourceError>) {
        let mut st = self.state();
        let last_fault = st.receive_faults.keys().next_back().copied().unwrap_or(0);
        let mut next = st.receives.max(last_fault);
        for e in errors {
            next += 1;
            st.receive_faults.insert(next, e);
        }
    }

    /// Receive call number `n` (counting from 1, every receive so far included) fails with `error`.
    pub fn fail_receive_number(&self, n: usize, error: SourceError) {
        self.state().receive_faults.insert(n, error);
    }

    /// The next `calls` delete calls fail as a whole (nothing is deleted).
    pub fn fail_deletes(&self, calls: usize) {
        self.state().delete_faults += calls;
    }

    /// The next `calls` visibility-change calls fail as a whole (every entry is to be retried).
    pub fn fail_visibility_changes(&self, calls: usize) {
        self.state().visibility_faults += calls;
    }

    /// Deletes a message behind the worker's back (another consumer): its receipt handles go stale.
    pub fn remove(&self, id: &str) -> bool {
        let mut st = self.state();
        let before = st.messages.len();
        st.messages.retain(|m| m.id != id);
        let removed = st.messages.len() < before;
        drop(st);
        self.changed.notify_waiters();
        removed
    }

    /// Messages not deleted, in flight or not.
    pub fn depth(&self) -> usize {
        self.state().messages.len()
    }

    /// Messages in flight (received and still invisible).
    pub fn in_flight(&self) -> usize {
        let now = Instant::now();
        self.state()
            .messages
            .iter()
            .filter(|m| m.in_flight(now))
            .count()
    }

    /// Whether message `id` is in flight now.
    pub fn is_in_flight(&self, id: &str) -> bool {
        let now = Instant::now();
        self.state()
            .messages
            .iter()
            .any(|m| m.id == id && m.in_flight(now))
    }

    /// How often message `id` was received (None once deleted).
    pub fn receive_count(&self, id: &str) -> Option<u32> {
        self.state()
            .messages
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.receive_count)
    }

    /// ReceiveMessage calls so far (failed ones included).
    pub fn receives(&self) -> usize {
        self.state().receives
    }

    /// The ids of deleted messages, in deletion order.
    pub fn deleted(&self) -> Vec<String> {
        self.state().deleted.clone()
    }

    /// Every visibility-change call that went through: the ids it changed and the visibility.
    pub fn visibility_changes(&self) -> Vec<(Vec<String>, Duration)> {
        self.state().visibility_changes.clone()
    }

    fn message(&self, s: Stored, received: Instant) -> Message {
        let mut m = aws_sdk_sqs::types::Message::builder()
            .message_id(&s.id)
            .set_receipt_handle(s.handle.clone())
            .body(&s.body)
            .attributes(
                MessageSystemAttributeName::ApproximateReceiveCount,
                s.receive_count.to_string(),
            );
        if let Some(g) = &s.group {
            m = m.attributes(MessageSystemAttributeName::MessageGroupId, g);
        }
        Message {
            event: event::encode(&m.build(), &self.arn, &self.region),
            id: s.id,
            receipt_handle: s.handle.unwrap_or_default(),
            group: s.group,
            received,
        }
    }
}

#[async_trait]
impl Queue for MemoryQueue {
    fn url(&self) -> &str {
        &self.arn
    }

    fn fifo(&self) -> bool {
        self.fifo
    }

    fn visibility_timeout(&self) -> Duration {
        self.visibility_timeout
    }

    fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<Message>, SourceError> {
        let received = Instant::now();
        let deadline = received + wait.min(MAX_WAIT);
        {
            let mut st = self.state();
            st.receives += 1;
            let n = st.receives;
            if let Some(e) = st.receive_faults.remove(&n) {
                return Err(e);
            }
        }
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let now = Instant::now();
            let next = {
                let mut st = self.state();
                let taken = st.take(self.fifo, max.clamp(1, 10), visibility, now);
                if !taken.is_empty() {
                    drop(st);
                    return Ok(taken.into_iter().map(|s| self.message(s, now)).collect());
                }
                st.next_reappearance(now)
            };
            if now >= deadline {
                return Ok(Vec::new());
            }
            let until = next.map_or(deadline, |t| t.min(deadline));
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    async fn delete(&self, messages: &[&Message]) -> usize {
        let mut st = self.state();
        if st.delete_faults > 0 {
            st.delete_faults -= 1;
            return 0;
        }
        let mut deleted = 0;
        for m in messages {
            if let Some(i) = st.position(&m.id, &m.receipt_handle) {
                st.messages.remove(i);
                st.deleted.push(m.id.clone());
                deleted += 1;
            }
        }
        drop(st);
        self.changed.notify_waiters();
        deleted
    }

    async fn change_visibility(
        &self,
        messages: &[(String, String)],
        visibility: Duration,
        _limit: Duration,
    ) -> VisibilityChange {
        let now = Instant::now();
        let mut st = self.state();
        if st.visibility_faults > 0 {
            st.visibility_faults -= 1;
            return VisibilityChange {
                retry: messages.to_vec(),
                ..Default::default()
            };
        }
        let mut out = VisibilityChange::default();
        let mut changed = Vec::new();
        for (id, handle) in messages {
            let refuse = |code: &str| EntryFailure {
                message_id: id.clone(),
                receipt_handle: handle.clone(),
                code: code.to_string(),
                message: code.to_string(),
            };
            match st.position(id, handle) {
                None => out.rejected.push(refuse("ReceiptHandleIsInvalid")),
                Some(i) if !st.messages[i].in_flight(now) => {
                    out.rejected.push(refuse("MessageNotInflight"))
                }
                Some(i) => {
                    st.messages[i].hidden_until = Some(now + visibility);
                    changed.push(id.clone());
                }
            }
        }
        out.changed = changed.len();
        if !changed.is_empty() {
            st.visibility_changes.push((changed, visibility));
        }
        drop(st);
        self.changed.notify_waiters();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const V: Duration = Duration::from_secs(30);

    fn ids(ms: &[Message]) -> Vec<&str> {
        ms.iter().map(|m| m.id.as_str()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn an_undeleted_message_reappears_with_a_new_handle() {
        let q = MemoryQueue::standard(V);
        let a = q.send("a");
        let first = q.receive(10, Duration::ZERO, V).await.unwrap();
        assert_eq!(ids(&first), [a.as_str()]);
        assert!(q.is_in_flight(&a));
        assert!(q.receive(10, Duration::ZERO, V).await.unwrap().is_empty());
        tokio::time::sleep(V).await;
        let again = q.receive(10, Duration::ZERO, V).await.unwrap();
        assert_eq!(ids(&again), [a.as_str()]);
        assert_ne!(again[0].receipt_handle, first[0].receipt_handle);
        assert_eq!(q.receive_count(&a), Some(2));
        let event: serde_json::Value = serde_json::from_slice(&again[0].event).unwrap();
        assert_eq!(event["body"], "a");
        assert_eq!(event["attributes"]["ApproximateReceiveCount"], "2");
        // The stale handle deletes nothing; the latest does.
        assert_eq!(q.delete(&[&first[0]]).await, 0);
        assert_eq!(q.delete(&[&again[0]]).await, 1);
        assert_eq!(q.depth(), 0);
        assert_eq!(q.deleted(), [a]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_poll_ends_when_a_message_arrives_or_reappears() {
        let q = Arc::new(MemoryQueue::standard(V));
        let started = Instant::now();
        let q2 = q.clone();
        let poll = tokio::spawn(async move { q2.receive(10, Duration::from_secs(20), V).await });
        tokio::time::sleep(Duration::from_secs(3)).await;
        q.send("a");
        let got = poll.await.unwrap().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        // The in-flight message reappears 30 s after its receive: a poll then takes it.
        tokio::time::sleep(Duration::from_secs(15)).await;
        let started = Instant::now();
        let got = q.receive(10, Duration::from_secs(20), Duration::from_secs(100));
        assert_eq!(got.await.unwrap().len(), 1);
        assert_eq!(started.elapsed(), Duration::from_secs(15));
        // Nothing available: the poll runs its whole wait, at most 20 s.
        let started = Instant::now();
        assert!(q
            .receive(10, Duration::from_secs(60), V)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(started.elapsed(), MAX_WAIT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fifo_group_is_locked_while_any_of_its_messages_is_in_flight() {
        let q = MemoryQueue::fifo(V);
        let x1 = q.send_to_group("x", "x1");
        let y1 = q.send_to_group("y", "y1");
        let x2 = q.send_to_group("x", "x2");
        let first = q.receive(1, Duration::ZERO, V).await.unwrap();
        assert_eq!(ids(&first), [x1.as_str()]);
        // x is locked: only y's message comes.
        let second = q.receive(10, Duration::ZERO, V).await.unwrap();
        assert_eq!(ids(&second), [y1.as_str()]);
        assert_eq!(second[0].group.as_deref(), Some("y"));
        // Returning x1 (visibility 0) unlocks x, in order.
        let back = [(first[0].id.clone(), first[0].receipt_handle.clone())];
        assert_eq!(
            q.change_visibility(&back, Duration::ZERO, V).await.changed,
            1
        );
        let third = q.receive(10, Duration::ZERO, V).await.unwrap();
        assert_eq!(ids(&third), [x1.as_str(), x2.as_str()]);
    }

    #[tokio::test(start_paused = true)]
    async fn injected_failures_and_stale_handles() {
        let q = MemoryQueue::standard(V);
        let a = q.send("a");
        let b = q.send("b");
        q.fail_receives([SourceError::Throttled("slow down".into())]);
        assert!(matches!(
            q.receive(10, Duration::ZERO, V).await,
            Err(SourceError::Throttled(_))
        ));
        let got = q.receive(10, Duration::ZERO, V).await.unwrap();
        assert_eq!(q.receives(), 2);
        let list: Vec<(String, String)> = got
            .iter()
            .map(|m| (m.id.clone(), m.receipt_handle.clone()))
            .collect();
        q.fail_visibility_changes(1);
        let out = q.change_visibility(&list, V, V).await;
        assert_eq!(out.retry, list);
        assert!(q.remove(&a), "deleted by someone else");
        let out = q.change_visibility(&list, Duration::from_secs(60), V).await;
        assert_eq!(out.changed, 1);
        assert_eq!(out.rejected[0].code, "ReceiptHandleIsInvalid");
        assert_eq!(
            q.visibility_changes(),
            [(vec![b.clone()], Duration::from_secs(60))]
        );
        q.fail_deletes(1);
        let refs: Vec<&Message> = got.iter().collect();
        assert_eq!(q.delete(&refs).await, 0);
        assert_eq!(q.delete(&refs).await, 1);
        assert_eq!(q.deleted(), [b]);
    }
}
