//! A fake AWS endpoint for benchmarks only (never part of the sluice binary): one HTTP server that
//! speaks enough of Kinesis (awsJson1.1: ListShards, DescribeStreamSummary, GetShardIterator,
//! GetRecords, PutRecord, and SubscribeToShard in [`subscribe`]) and of SQS (awsJson1.0: GetQueueUrl, GetQueueAttributes, ReceiveMessage,
//! DeleteMessageBatch, ChangeMessageVisibilityBatch) for sluice's own SDK clients to run against it
//! unchanged (its config's `endpoints`), plus a fast HTTP function at `/fn` that answers `{}`.
//!
//! The aws-sdk-kinesis of this workspace speaks awsJson1.1 (`application/x-amz-json-1.1`, the
//! operation in `X-Amz-Target: Kinesis_20131202.<Op>`), not CBOR; aws-sdk-sqs speaks awsJson1.0
//! (`AmazonSQS.<Op>`). Requests are not signature-checked.
//!
//! The stream has [`Kinesis::shards`] open shards of [`Kinesis::backlog`] records each
//! (0: an endless idle stream, every GetRecords answers no records and `MillisBehindLatest: 0`).
//! Records are deterministic: the same `size` bytes of data, 56-digit sequence numbers
//! (`4959` + shard, 12 digits + position, 40 digits), partition keys `pk-<position mod 64>`.
//! A shard iterator is opaque to the client and carries its shard and position. PutRecord appends
//! one record (of the same deterministic shape; its data is not kept) to a shard after the
//! backlog, notes when it was put, and wakes the shard's subscriptions at once; the function then
//! measures each put record's put→invoke latency (`GET /latencies`, in microseconds). The queue is
//! endless: every ReceiveMessage answers as many messages as asked for.
//!
//! The server keeps counters ([`Stats`], also served as JSON at `GET /stats`): the bench reads
//! delivered records off them.

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{json, Value};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

mod subscribe;

pub const ACCOUNT: &str = "000000000000";
pub const REGION: &str = "us-east-1";
pub const STREAM: &str = "bench";
pub const QUEUE: &str = "bench";
/// Real iterators are long opaque strings; this one is as long, with the position at its end.
const ITERATOR_PAD: &str = "AAAAAAAAAAGm0yw6Ppb0Jv8NQ4fZbUZOmQ7Nx+5nYz1jpkgcYtyDBE1V1l0KnPIBt4pfDzLRc3Ls4NgSYKo5bJOqhkpX9pTPdr1O3hHq2vU6cZ8sz1gXKi7Qi0bNVIlD3KT2uSf1Cw";
const MAX_PAGE: u64 = 10_000;

pub fn stream_arn() -> String {
    format!("arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{STREAM}")
}

pub fn queue_arn() -> String {
    format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{QUEUE}")
}

/// The stream served.
#[derive(Debug, Clone)]
pub struct Kinesis {
    pub shards: usize,
    /// Records per shard; 0: endless idle shards.
    pub backlog: u64,
    /// Bytes of data per record.
    pub size: usize,
}

/// Calls and records served.
#[derive(Debug, Default)]
pub struct Stats {
    pub get_records: AtomicU64,
    pub records_served: AtomicU64,
    pub get_iterator: AtomicU64,
    pub list_shards: AtomicU64,
    pub receives: AtomicU64,
    pub messages_received: AtomicU64,
    pub messages_deleted: AtomicU64,
    pub visibility_changes: AtomicU64,
    pub invocations: AtomicU64,
    /// Event entries (`"eventSource"` keys) in the function's requests.
    pub invoked_records: AtomicU64,
    pub puts: AtomicU64,
    pub subscriptions: AtomicU64,
}

impl Stats {
    fn reset(&self) {
        for c in [
            &self.get_records,
            &self.records_served,
            &self.get_iterator,
            &self.list_shards,
            &self.receives,
            &self.messages_received,
            &self.messages_deleted,
            &self.visibility_changes,
            &self.invocations,
            &self.invoked_records,
            &self.puts,
            &self.subscriptions,
        ] {
            c.store(0, Relaxed);
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "get_records": self.get_records.load(Relaxed),
            "records_served": self.records_served.load(Relaxed),
            "get_iterator": self.get_iterator.load(Relaxed),
            "list_shards": self.list_shards.load(Relaxed),
            "receives": self.receives.load(Relaxed),
            "messages_received": self.messages_received.load(Relaxed),
            "messages_deleted": self.messages_deleted.load(Relaxed),
            "visibility_changes": self.visibility_changes.load(Relaxed),
            "invocations": self.invocations.load(Relaxed),
            "invoked_records": self.invoked_records.load(Relaxed),
            "puts": self.puts.load(Relaxed),
            "subscriptions": self.subscriptions.load(Relaxed),
        })
    }
}

/// Records put (PutRecord) since the stream was set: per shard, when each was put; and the
/// put→invoke latencies of those the function has received.
#[derive(Default)]
struct Live {
    put_at: Vec<Vec<Instant>>,
    invoked: Vec<Vec<bool>>,
    latencies_us: Vec<u64>,
}

pub struct Fake {
    kinesis: RwLock<(Kinesis, String)>,
    live: Mutex<Live>,
    /// Bumped by every put: subscriptions wait on it.
    put_signal: tokio::sync::watch::Sender<u64>,
    pub stats: Stats,
    /// Base URL, set once bound.
    url: RwLock<String>,
    /// 1 KiB message body.
    body: String,
    next_message: AtomicU64,
}

impl Fake {
    fn new() -> Self {
        Fake {
            kinesis: RwLock::new((
                Kinesis {
                    shards: 0,
                    backlog: 0,
                    size: 0,
                },
                String::new(),
            )),
            live: Mutex::new(Live::default()),
            put_signal: tokio::sync::watch::Sender::new(0),
            stats: Stats::default(),
            url: RwLock::new(String::new()),
            body: "m".repeat(1024),
            next_message: AtomicU64::new(0),
        }
    }

    /// Serves `k` from now on, with every counter back at zero.
    pub fn set_stream(&self, k: Kinesis) {
        self.stats.reset();
        let data = base64::engine::general_purpose::STANDARD.encode(vec![b'x'; k.size]);
        *self.live.lock().unwrap() = Live {
            put_at: vec![Vec::new(); k.shards],
            invoked: vec![Vec::new(); k.shards],
            latencies_us: Vec::new(),
        };
        *self.kinesis.write().unwrap() = (k, data);
    }

    /// Records put into a shard since the stream was set (they follow its backlog).
    fn put_len(&self, shard: usize) -> u64 {
        self.live
            .lock()
            .unwrap()
            .put_at
            .get(shard)
            .map_or(0, |p| p.len() as u64)
    }

    /// Notes the put→invoke latency of every put record named in a function request's body.
    fn invoked(&self, body: &[u8]) {
        let backlog = self.kinesis.read().unwrap().0.backlog;
        let mut live = self.live.lock().unwrap();
        if live.put_at.iter().all(Vec::is_empty) {
            return;
        }
        let now = Instant::now();
        const KEY: &[u8] = b"\"sequenceNumber\":\"4959";
        for at in memchr::memmem::find_iter(body, KEY) {
            let digits = &body[at + KEY.len()..];
            let parse = |d: &[u8]| std::str::from_utf8(d).ok()?.parse::<u64>().ok();
            let (Some(shard), Some(pos)) = (
                digits.get(..12).and_then(parse),
                digits.get(12..52).and_then(parse),
            ) else {
                continue;
            };
            let (shard, Some(i)) = (shard as usize, pos.checked_sub(backlog)) else {
                continue;
            };
            let Some(put) = live
                .put_at
                .get(shard)
                .and_then(|p| p.get(i as usize))
                .copied()
            else {
                continue;
            };
            let seen = &mut live.invoked[shard];
            seen.resize(seen.len().max(i as usize + 1), false);
            if !std::mem::replace(&mut seen[i as usize], true) {
                live.latencies_us.push((now - put).as_micros() as u64);
            }
        }
    }

    pub fn url(&self) -> String {
        self.url.read().unwrap().clone()
    }
}

/// Starts the server on 127.0.0.1 (an ephemeral port) on the current runtime.
pub async fn start() -> Arc<Fake> {
    let fake = Arc::new(Fake::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    *fake.url.write().unwrap() = format!("http://{}", listener.local_addr().unwrap());
    let (f1, f2, f3, f4) = (fake.clone(), fake.clone(), fake.clone(), fake.clone());
    let app = axum::Router::new()
        .route(
            "/",
            axum::routing::post(move |h: HeaderMap, b: Bytes| {
                let f = f1.clone();
                async move { f.aws(&h, &b) }
            }),
        )
        .route(
            "/fn",
            axum::routing::post(move |b: Bytes| {
                let f = f2.clone();
                async move {
                    let n = memchr::memmem::find_iter(&b, b"\"eventSource\"").count();
                    f.stats.invocations.fetch_add(1, Relaxed);
                    f.stats.invoked_records.fetch_add(n as u64, Relaxed);
                    f.invoked(&b);
                    "{}"
                }
            }),
        )
        .route(
            "/stats",
            axum::routing::get(move || {
                let f = f3.clone();
                async move { axum::Json(f.stats.json()) }
            }),
        )
        .route(
            "/latencies",
            axum::routing::get(move || {
                let f = f4.clone();
                async move { axum::Json(f.live.lock().unwrap().latencies_us.clone()) }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    fake
}

fn error(status: StatusCode, kind: &str, message: &str, ct: &'static str) -> Response {
    let body = json!({"__type": kind, "message": message}).to_string();
    (status, [("content-type", ct)], body).into_response()
}

fn ok(body: String, ct: &'static str) -> Response {
    ([("content-type", ct)], body).into_response()
}

const KINESIS_CT: &str = "application/x-amz-json-1.1";
const SQS_CT: &str = "application/x-amz-json-1.0";

fn shard_id(i: usize) -> String {
    format!("shardId-{i:012}")
}

fn sequence(shard: usize, pos: u64) -> String {
    format!("4959{shard:012}{pos:040}")
}

fn iterator(shard: usize, pos: u64) -> String {
    format!("{ITERATOR_PAD}{shard}:{pos}")
}

/// Writes the JSON array of a shard's records at `positions` (`data`: base64 of each's data).
fn records(out: &mut String, data: &str, shard: usize, positions: std::ops::Range<u64>) {
    // Arrived just now: sluice drops records older than MaximumRecordAgeInSeconds.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as f64
        / 1000.0;
    out.push('[');
    for p in positions.clone() {
        if p > positions.start {
            out.push(',');
        }
        let _ = write!(
            out,
            "{{\"SequenceNumber\":\"{}\",\"ApproximateArrivalTimestamp\":{now:.3},\"Data\":\"{data}\",\"PartitionKey\":\"pk-{}\"}}",
            sequence(shard, p),
            p % 64
        );
    }
    out.push(']');
}

impl Fake {
    fn aws(self: &Arc<Self>, h: &HeaderMap, body: &[u8]) -> Response {
        let target = h
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let req: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        match target.split_once('.') {
            Some(("Kinesis_20131202", "SubscribeToShard")) => self.subscribe(&req),
            Some(("Kinesis_20131202", op)) => self.kinesis(op, &req),
            Some(("AmazonSQS", op)) => self.sqs(op, &req),
            _ => error(
                StatusCode::BAD_REQUEST,
                "UnknownOperationException",
                target,
                KINESIS_CT,
            ),
        }
    }

    fn kinesis(&self, op: &str, req: &Value) -> Response {
        let guard = self.kinesis.read().unwrap();
        let (k, data) = (&guard.0, &guard.1);
        let bad = |m: &str| {
            error(
                StatusCode::BAD_REQUEST,
                "InvalidArgumentException",
                m,
                KINESIS_CT,
            )
        };
        match op {
            "DescribeStreamSummary" => ok(
                json!({"StreamDescriptionSummary": {
                    "StreamName": STREAM, "StreamARN": stream_arn(), "StreamStatus": "ACTIVE",
                    "StreamModeDetails": {"StreamMode": "PROVISIONED"},
                    "RetentionPeriodHours": 24, "StreamCreationTimestamp": 1.7e9,
                    "EnhancedMonitoring": [{"ShardLevelMetrics": []}], "EncryptionType": "NONE",
                    "OpenShardCount": k.shards, "ConsumerCount": 0}})
                .to_string(),
                KINESIS_CT,
            ),
            "ListShards" => {
                self.stats.list_shards.fetch_add(1, Relaxed);
                let from: usize = req["NextToken"]
                    .as_str()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0);
                let max = req["MaxResults"].as_u64().unwrap_or(1000).clamp(1, 10_000) as usize;
                let to = (from + max).min(k.shards);
                let step = u128::MAX / k.shards.max(1) as u128;
                let shards: Vec<Value> = (from..to)
                    .map(|i| {
                        let end = if i + 1 == k.shards {
                            u128::MAX
                        } else {
                            step * (i as u128 + 1) - 1
                        };
                        json!({"ShardId": shard_id(i),
                            "HashKeyRange": {"StartingHashKey": (step * i as u128).to_string(),
                                             "EndingHashKey": end.to_string()},
                            "SequenceNumberRange": {"StartingSequenceNumber": sequence(i, 0)}})
                    })
                    .collect();
                let mut out = json!({ "Shards": shards });
                if to < k.shards {
                    out["NextToken"] = json!(to.to_string());
                }
                ok(out.to_string(), KINESIS_CT)
            }
            "GetShardIterator" => {
                self.stats.get_iterator.fetch_add(1, Relaxed);
                let Some(shard) = req["ShardId"]
                    .as_str()
                    .and_then(|s| s.strip_prefix("shardId-"))
                    .and_then(|s| s.parse::<usize>().ok())
                    .filter(|s| *s < k.shards)
                else {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "ResourceNotFoundException",
                        "no such shard",
                        KINESIS_CT,
                    );
                };
                let pos = match req["ShardIteratorType"].as_str().unwrap_or_default() {
                    "TRIM_HORIZON" | "AT_TIMESTAMP" => 0,
                    "LATEST" => k.backlog + self.put_len(shard),
                    t @ ("AFTER_SEQUENCE_NUMBER" | "AT_SEQUENCE_NUMBER") => {
                        let s = req["StartingSequenceNumber"].as_str().unwrap_or_default();
                        let Some(p) = s.get(16..).and_then(|p| p.parse::<u64>().ok()) else {
                            return bad("StartingSequenceNumber");
                        };
                        p + u64::from(t == "AFTER_SEQUENCE_NUMBER")
                    }
                    _ => return bad("ShardIteratorType"),
                };
                ok(
                    json!({"ShardIterator": iterator(shard, pos)}).to_string(),
                    KINESIS_CT,
                )
            }
            "GetRecords" => {
                self.stats.get_records.fetch_add(1, Relaxed);
                let it = req["ShardIterator"].as_str().unwrap_or_default();
                let Some((shard, pos)) = it
                    .strip_prefix(ITERATOR_PAD)
                    .and_then(|s| s.split_once(':'))
                    .and_then(|(s, p)| Some((s.parse::<usize>().ok()?, p.parse::<u64>().ok()?)))
                else {
                    return bad("ShardIterator");
                };
                let limit = req["Limit"].as_u64().unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
                let available = k.backlog + self.put_len(shard);
                let end = (pos + limit).min(available.max(pos));
                let mut out = String::with_capacity(
                    64 + (end - pos) as usize * (data.len() + 160) + ITERATOR_PAD.len(),
                );
                out.push_str("{\"Records\":");
                records(&mut out, data, shard, pos..end);
                let behind = if end < available { 60_000 } else { 0 };
                let _ = write!(
                    out,
                    ",\"NextShardIterator\":\"{}\",\"MillisBehindLatest\":{behind}}}",
                    iterator(shard, end)
                );
                self.stats.records_served.fetch_add(end - pos, Relaxed);
                ok(out, KINESIS_CT)
            }
            "PutRecord" => {
                self.stats.puts.fetch_add(1, Relaxed);
                let key = req["PartitionKey"].as_str().unwrap_or_default();
                let shard = key.bytes().map(usize::from).sum::<usize>() % k.shards.max(1);
                let pos = {
                    let mut live = self.live.lock().unwrap();
                    let Some(put) = live.put_at.get_mut(shard) else {
                        return bad("no shards");
                    };
                    put.push(Instant::now());
                    k.backlog + put.len() as u64 - 1
                };
                self.put_signal.send_modify(|n| *n += 1);
                ok(
                    json!({"ShardId": shard_id(shard), "SequenceNumber": sequence(shard, pos)})
                        .to_string(),
                    KINESIS_CT,
                )
            }
            _ => bad(op),
        }
    }

    fn sqs(&self, op: &str, req: &Value) -> Response {
        match op {
            "GetQueueUrl" => ok(
                json!({"QueueUrl": format!("{}/{ACCOUNT}/{QUEUE}", self.url())}).to_string(),
                SQS_CT,
            ),
            "GetQueueAttributes" => ok(
                json!({"Attributes": {"VisibilityTimeout": "30", "QueueArn": queue_arn()}})
                    .to_string(),
                SQS_CT,
            ),
            "ReceiveMessage" => {
                self.stats.receives.fetch_add(1, Relaxed);
                let n = req["MaxNumberOfMessages"]
                    .as_u64()
                    .unwrap_or(1)
                    .clamp(1, 10);
                let first = self.next_message.fetch_add(n, Relaxed);
                let mut out = String::with_capacity(n as usize * 1400 + 32);
                out.push_str("{\"Messages\":[");
                for i in first..first + n {
                    if i > first {
                        out.push(',');
                    }
                    let _ = write!(
                        out,
                        "{{\"MessageId\":\"00000000-0000-4000-8000-{i:012}\",\"ReceiptHandle\":\"AQEB{i:020}{}\",\"MD5OfBody\":\"1b7a3e0bd7e1f0b7c2b1f5d1d5b5a5c5\",\"Body\":\"{}\",\"Attributes\":{{\"SentTimestamp\":\"1700000000000\",\"ApproximateReceiveCount\":\"1\",\"ApproximateFirstReceiveTimestamp\":\"1700000000001\",\"SenderId\":\"AIDAIENQZJOLO23YVJ4VO\"}}}}",
                        &ITERATOR_PAD[..100],
                        self.body
                    );
                }
                out.push_str("]}");
                self.stats.messages_received.fetch_add(n, Relaxed);
                ok(out, SQS_CT)
            }
            "DeleteMessageBatch" | "ChangeMessageVisibilityBatch" => {
                let entries = req["Entries"].as_array().cloned().unwrap_or_default();
                let counter = if op == "DeleteMessageBatch" {
                    &self.stats.messages_deleted
                } else {
                    &self.stats.visibility_changes
                };
                counter.fetch_add(entries.len() as u64, Relaxed);
                let ok_entries: Vec<Value> =
                    entries.iter().map(|e| json!({"Id": e["Id"]})).collect();
                ok(
                    json!({"Successful": ok_entries, "Failed": []}).to_string(),
                    SQS_CT,
                )
            }
            _ => error(StatusCode::BAD_REQUEST, "UnsupportedOperation", op, SQS_CT),
        }
    }
}
