//! SubscribeToShard for the fake endpoint (enhanced fan-out): an HTTP/1.1 response that stays
//! open and carries AWS's event-stream frames (`application/vnd.amazon.eventstream`, encoded with
//! aws-smithy-eventstream, the SDK's own codec): first an `initial-response` event, as the SDK
//! waits for one before `send()` returns, then a `SubscribeToShardEvent` as soon as records are
//! there: at once for a backlog, and for each record put (PutRecord) the moment it is put. The
//! subscription ends after 5 minutes, as AWS's do. Consumer ARNs are not checked.

use super::{records, sequence, Fake, KINESIS_CT};
use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// AWS ends every subscription after 5 minutes.
const LIFETIME: Duration = Duration::from_secs(300);
/// Most records one event carries.
const MAX_EVENT: u64 = 1_000;

fn frame(event_type: &'static str, payload: String) -> Bytes {
    let text = |s: &'static str| HeaderValue::String(s.into());
    let message = Message::new(payload.into_bytes())
        .add_header(Header::new(":message-type", text("event")))
        .add_header(Header::new(":event-type", text(event_type)))
        .add_header(Header::new(":content-type", text("application/json")));
    let mut out = Vec::new();
    write_message_to(&message, &mut out).expect("an event-stream frame");
    out.into()
}

/// One subscription: the shard and the next position to push.
struct Subscription {
    fake: Arc<Fake>,
    shard: usize,
    pos: u64,
    puts: tokio::sync::watch::Receiver<u64>,
    ends: Instant,
    started: bool,
}

impl Subscription {
    /// The next frame, waiting for records when there are none; `None` when the subscription ends.
    async fn next(&mut self) -> Option<Bytes> {
        if !std::mem::replace(&mut self.started, true) {
            return Some(frame("initial-response", "{}".into()));
        }
        loop {
            self.puts.borrow_and_update();
            let (backlog, data) = {
                let k = self.fake.kinesis.read().unwrap();
                (k.0.backlog, k.1.clone())
            };
            let available = backlog + self.fake.put_len(self.shard);
            if self.pos < available {
                let end = (self.pos + MAX_EVENT).min(available);
                let mut out = String::from("{\"Records\":");
                records(&mut out, &data, self.shard, self.pos..end);
                out.push_str(&format!(
                    ",\"ContinuationSequenceNumber\":\"{}\",\"MillisBehindLatest\":{}}}",
                    sequence(self.shard, end - 1),
                    if end < available { 1_000 } else { 0 }
                ));
                self.fake
                    .stats
                    .records_served
                    .fetch_add(end - self.pos, Relaxed);
                self.pos = end;
                return Some(frame("SubscribeToShardEvent", out));
            }
            tokio::select! {
                changed = self.puts.changed() => changed.ok()?,
                _ = tokio::time::sleep_until(self.ends.into()) => return None,
            }
        }
    }
}

impl Fake {
    pub(super) fn subscribe(self: &Arc<Self>, req: &Value) -> Response {
        let (shards, backlog) = {
            let k = self.kinesis.read().unwrap();
            (k.0.shards, k.0.backlog)
        };
        let shard = req["ShardId"]
            .as_str()
            .and_then(|s| s.strip_prefix("shardId-"))
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|s| *s < shards);
        let from = &req["StartingPosition"];
        let after_sequence = |after: u64| {
            from["SequenceNumber"]
                .as_str()
                .and_then(|s| s.get(16..))
                .and_then(|p| p.parse::<u64>().ok())
                .map(|p| p + after)
        };
        let pos = shard.and_then(|shard| match from["Type"].as_str().unwrap_or_default() {
            "TRIM_HORIZON" | "AT_TIMESTAMP" => Some(0),
            "LATEST" => Some(backlog + self.put_len(shard)),
            "AT_SEQUENCE_NUMBER" => after_sequence(0),
            "AFTER_SEQUENCE_NUMBER" => after_sequence(1),
            _ => None,
        });
        let (Some(shard), Some(pos)) = (shard, pos) else {
            return super::error(
                StatusCode::BAD_REQUEST,
                "InvalidArgumentException",
                "ShardId or StartingPosition",
                KINESIS_CT,
            );
        };
        self.stats.subscriptions.fetch_add(1, Relaxed);
        let sub = Subscription {
            fake: self.clone(),
            shard,
            pos,
            puts: self.put_signal.subscribe(),
            ends: Instant::now() + LIFETIME,
            started: false,
        };
        let frames = futures_util::stream::unfold(sub, |mut sub| async move {
            let frame = sub.next().await?;
            Some((Ok::<_, std::convert::Infallible>(frame), sub))
        });
        Response::builder()
            .header("content-type", "application/vnd.amazon.eventstream")
            .body(Body::from_stream(frames))
            .expect("a response")
    }
}
