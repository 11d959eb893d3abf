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
use crate::source::sqs::{Message, Queue};

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
    let ctx = &shared.ctx;
    let period = heartbeat_period(shared.visibility);
    let backoff = |n| ctx.policy.backoff(n);
    let beat = Beat {
        queue: shared.queue.as_ref(),
        visibility: shared.visibility,
        mapping: ctx.name(),
        backoff: &backoff,
    };
    let mut next = Instant::now() + period;
    loop {
        if !pause(&stop, next.saturating_duration_since(Instant::now())).await {
            return;
        }
        let deadline = next + period;
        next = deadline;
        let changed = beat.run(&in_flight, deadline, &stop).await;
        shared.lane.extended(changed.unwrap_or(0));
        if changed.is_none() {
            return;
        }
    }
}

/// What one beat needs.
struct Beat<'a> {
    queue: &'a dyn Queue,
    visibility: Duration,
    mapping: &'a str,
    backoff: &'a (dyn Fn(u32) -> Duration + Sync),
}

impl Beat<'_> {
    /// Extends everything in flight, retrying what failed until `deadline`; how many extensions
    /// succeeded, or None when stopped meanwhile.
    async fn run(
        &self,
        in_flight: &InFlight,
        deadline: Instant,
        stop: &CancellationToken,
    ) -> Option<usize> {
        let name = self.mapping;
        let mut changed = 0;
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
                return Some(changed);
            }
            if left < MIN_ATTEMPT {
                warn!(mapping = name, messages = list.len(), "could not extend the visibility of in-flight messages in this beat; the next beat tries again");
                return Some(changed);
            }
            let out = self
                .queue
                .change_visibility(&list, self.visibility, left)
                .await;
            if !out.rejected.is_empty() {
                entries.retain(|(_, h)| !out.rejected.iter().any(|r| r.receipt_handle == *h));
                warn!(mapping = name, messages = out.rejected.len(), "in-flight messages can no longer be kept invisible; they may be delivered again while their invocation runs");
            }
            drop(entries);
            changed += out.changed;
            if out.retry.is_empty() {
                return Some(changed);
            }
            attempt += 1;
            retry = Some(out.retry);
            let left = deadline.saturating_duration_since(Instant::now());
            if !pause(stop, (self.backoff)(attempt).min(left)).await {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::sqs::tests::test_queue;
    use crate::source::sqs::CallTimeouts;

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

    /// A fake SQS endpoint for ChangeMessageVisibilityBatch: the first `fail` calls answer 500,
    /// then every entry succeeds except those whose receipt handle starts with "gone" (refused as
    /// the caller's fault). Returns its URL and the receipt handles of each call it saw.
    async fn fake_sqs(fail: usize) -> (String, Arc<std::sync::Mutex<Vec<Vec<String>>>>) {
        use axum::extract::State;
        use axum::http::StatusCode;
        type Calls = Arc<std::sync::Mutex<Vec<Vec<String>>>>;
        async fn handle(
            State((calls, fail)): State<(Calls, usize)>,
            body: axum::body::Bytes,
        ) -> (StatusCode, String) {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let entries = v["Entries"].as_array().unwrap().clone();
            let handles: Vec<String> = entries
                .iter()
                .map(|e| e["ReceiptHandle"].as_str().unwrap().to_string())
                .collect();
            let n = {
                let mut calls = calls.lock().unwrap();
                calls.push(handles.clone());
                calls.len()
            };
            if n <= fail {
                let error = r#"{"__type":"InternalError","message":"try again"}"#;
                return (StatusCode::INTERNAL_SERVER_ERROR, error.into());
            }
            let (mut ok, mut failed) = (vec![], vec![]);
            for (e, h) in entries.iter().zip(&handles) {
                let id = e["Id"].clone();
                if h.starts_with("gone") {
                    failed.push(serde_json::json!({"Id": id, "SenderFault": true,
                        "Code": "ReceiptHandleIsInvalid", "Message": "gone"}));
                } else {
                    ok.push(serde_json::json!({ "Id": id }));
                }
            }
            let body = serde_json::json!({"Successful": ok, "Failed": failed});
            (StatusCode::OK, body.to_string())
        }
        let calls: Calls = Arc::default();
        let app = axum::Router::new()
            .route("/", axum::routing::post(handle))
            .with_state((calls.clone(), fail));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, calls)
    }

    #[tokio::test]
    async fn a_beat_retries_a_failed_call_and_drops_refused_entries() {
        let (url, calls) = fake_sqs(2).await;
        let queue = test_queue(&url, CallTimeouts::default());
        let beat = Beat {
            queue: &queue,
            visibility: Duration::from_secs(30),
            mapping: "m",
            backoff: &|_| Duration::from_millis(10),
        };
        let f = InFlight::default();
        f.add(&[msg("a", "h-a"), msg("b", "gone-b"), msg("c", "h-c")])
            .await;
        let stop = CancellationToken::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        assert_eq!(beat.run(&f, deadline, &stop).await, Some(2));
        assert_eq!(calls.lock().unwrap().len(), 3, "two failed calls retried");
        // The refused message is no longer extended; the others still are.
        assert_eq!(
            f.snapshot().await,
            vec![("a".into(), "h-a".into()), ("c".into(), "h-c".into())]
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        assert_eq!(beat.run(&f, deadline, &stop).await, Some(2));
        assert_eq!(calls.lock().unwrap()[3], ["h-a", "h-c"]);
    }

    #[tokio::test]
    async fn a_beat_gives_up_at_its_deadline_and_keeps_its_messages() {
        let (url, calls) = fake_sqs(usize::MAX).await;
        let queue = test_queue(&url, CallTimeouts::default());
        let beat = Beat {
            queue: &queue,
            visibility: Duration::from_secs(30),
            mapping: "m",
            backoff: &|_| Duration::from_millis(50),
        };
        let f = InFlight::default();
        f.add(&[msg("a", "h-a")]).await;
        let started = Instant::now();
        let stop = CancellationToken::new();
        let changed = beat
            .run(&f, started + Duration::from_millis(1500), &stop)
            .await;
        assert_eq!(changed, Some(0));
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(calls.lock().unwrap().len() >= 2, "retried within the beat");
        assert_eq!(f.snapshot().await.len(), 1, "kept for the next beat");
    }
}
