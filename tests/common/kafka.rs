//! Kafka helpers on the test bed's broker (tansu, `SLUICE_TEST_KAFKA_BOOTSTRAP`): create a topic with
//! N partitions (tansu does not create topics on produce), produce keyed records and learn where
//! each landed, a consumer configured as sluice's (manual offset store and commit, a short session
//! timeout so group joins take seconds), a group's committed offsets, and sluice started on a topic
//! mapping in a directory of its own ([`start_topic_mapping`]). Every wait is bounded.
#![allow(dead_code)]

use super::sink::Sink;
use super::sluice::{config as sluice_config, free_port, Sluice};
use super::TestBed;
use base64::Engine;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::future_producer::Delivery;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// How long any single broker call in these helpers may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The broker's bootstrap address (`host:port`); panics with a clear message when the test bed was
/// started before it had a broker.
pub fn bootstrap(tb: &TestBed) -> &str {
    if tb.kafka.is_empty() {
        panic!("SLUICE_TEST_KAFKA_BOOTSTRAP is not set: restart the test bed with `testbed/testbed.sh start`");
    }
    &tb.kafka
}

/// A client config with the bootstrap server and short timeouts.
pub fn config(tb: &TestBed) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap(tb))
        .set("socket.timeout.ms", "10000")
        .set("message.timeout.ms", "30000");
    c
}

pub fn admin(tb: &TestBed) -> AdminClient<DefaultClientContext> {
    config(tb).create().expect("Kafka admin client")
}

/// Creates `name` with `partitions` partitions (replication 1) and waits until the broker's
/// metadata lists every partition.
pub async fn create_topic(tb: &TestBed, name: &str, partitions: i32) {
    let admin = admin(tb);
    let opts = AdminOptions::new().operation_timeout(Some(CALL_TIMEOUT));
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let results = tokio::time::timeout(CALL_TIMEOUT, admin.create_topics([&topic], &opts))
        .await
        .unwrap_or_else(|_| panic!("CreateTopics {name}: no answer within {CALL_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("CreateTopics {name}: {e}"));
    for r in results {
        if let Err((topic, code)) = r {
            panic!("CreateTopics {topic}: {code}");
        }
    }
    let bootstrap = bootstrap(tb).to_string();
    let name = name.to_string();
    super::wait_for(
        "the new topic's partitions in the metadata",
        Duration::from_secs(30),
        || {
            let (bootstrap, name) = (bootstrap.clone(), name.clone());
            async move {
                tokio::task::spawn_blocking(move || {
                    let probe: BaseConsumer = ClientConfig::new()
                        .set("bootstrap.servers", &bootstrap)
                        .create()
                        .ok()?;
                    let md = probe
                        .fetch_metadata(Some(&name), Duration::from_secs(2))
                        .ok()?;
                    let t = md.topics().first()?;
                    (t.error().is_none() && t.partitions().len() == partitions as usize)
                        .then_some(())
                })
                .await
                .ok()
                .flatten()
            }
        },
    )
    .await;
}

/// A producer that keeps each partition's records in the order they were sent (one request in
/// flight, so a retry cannot reorder).
pub fn producer(tb: &TestBed) -> FutureProducer {
    config(tb)
        .set("max.in.flight.requests.per.connection", "1")
        .set("linger.ms", "5")
        .create()
        .expect("Kafka producer")
}

/// A record as written: where it landed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Produced {
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub value: String,
}

/// Produces `(key, value)` pairs to `topic` (partitioned by key, in order per key) and waits
/// for every delivery; returns where each landed, in input order. Panics on a failed delivery.
pub async fn produce(tb: &TestBed, topic: &str, records: &[(String, String)]) -> Vec<Produced> {
    let producer = producer(tb);
    let mut pending = std::collections::VecDeque::new();
    let mut out = Vec::with_capacity(records.len());
    let mut settle = |d: Delivery, (k, v): &(String, String)| {
        out.push(Produced {
            partition: d.partition,
            offset: d.offset,
            key: k.clone(),
            value: v.clone(),
        })
    };
    for rec in records {
        loop {
            let r = FutureRecord::to(topic).key(&rec.0).payload(&rec.1);
            match producer.send_result(r) {
                Ok(fut) => {
                    pending.push_back((fut, rec));
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    // The local queue is full: wait for the oldest delivery, then try again.
                    let Some((fut, prev)) = pending.pop_front() else {
                        panic!("producing to {topic}: queue full with nothing in flight");
                    };
                    settle(bounded(topic, fut).await, prev);
                }
                Err((e, _)) => panic!("producing to {topic}: {e}"),
            }
        }
    }
    for (fut, rec) in pending {
        settle(bounded(topic, fut).await, rec);
    }
    out
}

/// Waits for one delivery report, at most 60 s; panics unless the record was delivered.
async fn bounded(topic: &str, fut: DeliveryFuture) -> Delivery {
    match tokio::time::timeout(Duration::from_secs(60), fut).await {
        Err(_) => panic!("producing to {topic}: no delivery report within 60 s"),
        Ok(Err(_)) => panic!("producing to {topic}: the producer went away"),
        Ok(Ok(Err((e, _)))) => panic!("producing to {topic}: {e}"),
        Ok(Ok(Ok(d))) => d,
    }
}

/// A consumer in `group` configured as sluice's: offsets stored and committed only by the code,
/// a 6 s session timeout (tansu takes about half of it to let a member join), and the earliest
/// offset where the group has none. Subscribe it yourself; never `pause()` it (dropping a paused
/// consumer hangs against tansu).
pub fn consumer(tb: &TestBed, group: &str) -> StreamConsumer {
    config(tb)
        .set("group.id", group)
        .set("session.timeout.ms", "6000")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("Kafka consumer")
}

/// The offsets `group` has committed on `topic`'s partitions `0..partitions` (the next offset to
/// read), `None` where it has none.
pub async fn committed(
    tb: &TestBed,
    group: &str,
    topic: &str,
    partitions: i32,
) -> BTreeMap<i32, Option<i64>> {
    let probe: BaseConsumer = config(tb)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("Kafka consumer");
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(&topic, p);
        }
        let got = probe
            .committed_offsets(tpl, CALL_TIMEOUT)
            .unwrap_or_else(|e| panic!("OffsetFetch {topic}: {e}"));
        got.elements_for_topic(&topic)
            .iter()
            .map(|e| {
                let o = match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                };
                (e.partition(), o)
            })
            .collect()
    })
    .await
    .expect("OffsetFetch task")
}

/// Where a Kafka mapping sends its batches.
pub enum Target<'a> {
    /// An HTTP function, sending `X-Run: <run>` with every request so a test tells processes apart.
    Http { url: &'a str, run: &'a str },
    /// A Lambda function by `FunctionName`.
    Function(&'a str),
}

impl<'a> Target<'a> {
    /// [`Target::Http`] to `url`, with `X-Run: <run>`.
    pub fn http(url: &'a str, run: &'a str) -> Target<'a> {
        Target::Http { url, run }
    }
}

/// A self-managed Kafka mapping as a YAML list item: `name` reads `topic` on `bootstrap` in consumer
/// group `group` from TRIM_HORIZON, `batch` records at most per event; `extra` is more YAML lines
/// for the item (each indented four spaces, ending in a newline).
pub fn mapping(
    bootstrap: &str,
    name: &str,
    topic: &str,
    group: &str,
    batch: usize,
    target: Target<'_>,
    extra: &str,
) -> String {
    let target = match target {
        Target::Http { url, run } => {
            format!("    Http:\n      Url: {url}\n      Headers: {{ X-Run: \"{run}\" }}\n")
        }
        Target::Function(name) => format!("    FunctionName: {name}\n"),
    };
    format!(
        "  - Name: {name}\n    SelfManagedEventSource: {{ Endpoints: {{ KAFKA_BOOTSTRAP_SERVERS: [\"{bootstrap}\"] }} }}\n    Topics: [{topic}]\n    SelfManagedKafkaEventSourceConfig: {{ ConsumerGroupId: {group} }}\n    StartingPosition: TRIM_HORIZON\n    BatchSize: {batch}\n{target}{extra}"
    )
}

/// [`mapping`] for the usual case: the mapping is named after `topic` and reads it on the test
/// bed's broker.
pub fn topic_mapping(
    tb: &TestBed,
    topic: &str,
    group: &str,
    batch: usize,
    target: Target<'_>,
    extra: &str,
) -> String {
    mapping(bootstrap(tb), topic, topic, group, batch, target, extra)
}

/// Starts sluice `name` in `dir` (checkpoints under `dir/cp`, a free admin port) with the
/// mappings `yaml` on the test bed `tb`.
pub async fn start_sluice(tb: &TestBed, dir: &Path, name: &str, yaml: &str) -> Sluice {
    Sluice::start(
        dir,
        name,
        &sluice_config(tb, &dir.join("cp"), free_port(), yaml),
    )
    .await
}

/// Sluice `kafka` started as [`start_sluice`] does on the mappings `yaml` (usually a
/// [`topic_mapping`]), in a new directory that lives as long as the returned guard.
pub async fn start_fresh(tb: &TestBed, yaml: &str) -> (Sluice, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let sluice = start_sluice(tb, dir.path(), "kafka", yaml).await;
    (sluice, dir)
}

/// `sluice_on_failure_destination_delivered_events_total` of the mapping named after `topic` (as
/// [`topic_mapping`] names it) on `sluice`'s `/metrics`.
pub async fn on_failure_delivered(sluice: &Sluice, topic: &str) -> f64 {
    let labels = format!("mapping=\"{topic}\"");
    sluice
        .metric(
            "sluice_on_failure_destination_delivered_events_total",
            &labels,
        )
        .await
}

/// The records of the function's accepted requests from `run` (every run when `None`), in order.
pub fn delivered(sink: &Sink, run: Option<&str>) -> Vec<Produced> {
    sink.accepted
        .lock()
        .unwrap()
        .iter()
        .filter(|r| run.is_none_or(|run| r.run == run))
        .flat_map(|r| event_records(&r.body))
        .collect()
}

/// Waits (up to `timeout`) until the function accepted at least `n` records (from any run).
pub async fn wait_delivered(sink: &Sink, n: usize, what: &str, timeout: Duration) {
    super::wait_for(what, timeout, || async {
        (delivered(sink, None).len() >= n).then_some(())
    })
    .await
}

/// The records of one Kafka event (AWS's shape: `eventSource`, `bootstrapServers`, `records` keyed
/// `<topic>-<partition>`), as (partition, offset, key, value), in the event's order. Panics on any
/// other shape: an entry under another partition's key, a record that is not the event's topic,
/// offsets out of order within a partition.
pub fn event_records(body: &[u8]) -> Vec<Produced> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let v: serde_json::Value = serde_json::from_slice(body).expect("the event is JSON");
    assert_eq!(v["eventSource"], "SelfManagedKafka", "{v}");
    assert!(v["bootstrapServers"].is_string(), "{v}");
    let mut out = Vec::new();
    for (id, records) in v["records"].as_object().expect("records is an object") {
        let mut last = -1;
        for r in records
            .as_array()
            .expect("a partition's records are a list")
        {
            let text = |f: &str| {
                String::from_utf8(b64.decode(r[f].as_str().unwrap_or_default()).unwrap()).unwrap()
            };
            let (partition, offset) = (
                r["partition"].as_i64().unwrap() as i32,
                r["offset"].as_i64().unwrap(),
            );
            assert_eq!(
                *id,
                format!("{}-{partition}", r["topic"].as_str().unwrap()),
                "entry under its <topic>-<partition> key"
            );
            assert!(
                offset > last,
                "{id}: offset {offset} after {last} in one event"
            );
            last = offset;
            out.push(Produced {
                partition,
                offset,
                key: text("key"),
                value: text("value"),
            });
        }
    }
    out
}

/// The records of every event in `bodies`, in order.
pub fn events_records<'a>(bodies: impl IntoIterator<Item = &'a [u8]>) -> Vec<Produced> {
    bodies.into_iter().flat_map(event_records).collect()
}

/// Offsets by partition, in delivery order.
pub fn by_partition(records: &[Produced]) -> BTreeMap<i32, Vec<i64>> {
    let mut out: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for r in records {
        out.entry(r.partition).or_default().push(r.offset);
    }
    out
}

/// Asserts each partition's records were delivered in offset order, each once.
pub fn assert_in_order_once(label: &str, records: &[Produced]) {
    for (p, offsets) in by_partition(records) {
        for pair in offsets.windows(2) {
            assert!(
                pair[0] < pair[1],
                "{label}: partition {p} delivered offset {} then {}",
                pair[0],
                pair[1]
            );
        }
    }
}

/// The next offset after the last produced record, by partition: where a group that has done
/// everything has committed.
pub fn ends(produced: &[Produced]) -> BTreeMap<i32, i64> {
    let mut out = BTreeMap::new();
    for r in produced {
        let end = out.entry(r.partition).or_insert(0);
        *end = (*end).max(r.offset + 1);
    }
    out
}

/// Waits (up to `timeout`) until `group` has committed every partition of `topic` to its end in
/// `ends`.
pub async fn wait_committed(
    tb: &TestBed,
    group: &str,
    topic: &str,
    ends: &BTreeMap<i32, i64>,
    timeout: Duration,
) {
    let partitions = ends.keys().max().map_or(0, |p| p + 1);
    let mut last = BTreeMap::new();
    let done = tokio::time::timeout(timeout, async {
        loop {
            last = committed(tb, group, topic, partitions).await;
            if ends
                .iter()
                .all(|(p, end)| last.get(p).copied().flatten() == Some(*end))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(
        done.is_ok(),
        "group {group} did not commit {ends:?} within {timeout:?}: last read {last:?}"
    );
}

/// One call that went through a [`Tap`].
#[derive(Debug, Clone)]
pub struct TapCall {
    pub path: String,
    pub body: axum::body::Bytes,
    pub status: u16,
    /// The `X-Amz-Function-Error` header of the answer.
    pub function_error: Option<String>,
    pub answer: axum::body::Bytes,
}

/// A recording HTTP proxy in front of the Lambda emulator: sluice invokes the function through it
/// and the test reads every event sent and what the function answered. The test bed's `recorder`
/// function records Kinesis events only (it reads `Records`, which a Kafka event has not, and
/// answers success with nothing recorded), so a Kafka test reads the events here.
#[derive(Clone)]
pub struct Tap {
    pub url: String,
    pub calls: std::sync::Arc<std::sync::Mutex<Vec<TapCall>>>,
}

impl Tap {
    /// Forwards every request to `target` (`http://host:port`).
    pub async fn start(target: &str) -> Tap {
        use axum::extract::{Request, State};
        use axum::response::Response;
        type Shared = (
            reqwest::Client,
            String,
            std::sync::Arc<std::sync::Mutex<Vec<TapCall>>>,
        );
        async fn forward(State((client, target, calls)): State<Shared>, req: Request) -> Response {
            let (parts, body) = req.into_parts();
            let path = parts
                .uri
                .path_and_query()
                .map_or("/".to_string(), |p| p.to_string());
            let body = axum::body::to_bytes(body, 64 << 20).await.unwrap();
            let mut out = client.request(parts.method.clone(), format!("{target}{path}"));
            for (k, v) in &parts.headers {
                if k != "host" && k != "content-length" {
                    out = out.header(k, v);
                }
            }
            let answer = match out.body(body.clone()).send().await {
                Ok(a) => a,
                Err(e) => {
                    return Response::builder()
                        .status(502)
                        .body(axum::body::Body::from(format!("tap: {e}")))
                        .unwrap()
                }
            };
            let status = answer.status().as_u16();
            let headers = answer.headers().clone();
            let bytes = answer.bytes().await.unwrap_or_default();
            calls.lock().unwrap().push(TapCall {
                path,
                body,
                status,
                function_error: headers
                    .get("x-amz-function-error")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
                answer: bytes.clone(),
            });
            let mut resp = Response::builder().status(status);
            for (k, v) in &headers {
                if k != "content-length" && k != "transfer-encoding" && k != "connection" {
                    resp = resp.header(k, v);
                }
            }
            resp.body(axum::body::Body::from(bytes)).unwrap()
        }
        let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let state: Shared = (
            reqwest::Client::new(),
            target.trim_end_matches('/').to_string(),
            calls.clone(),
        );
        let app = axum::Router::new().fallback(forward).with_state(state);
        Tap {
            url: super::serve(app).await,
            calls,
        }
    }

    /// The calls the function answered with success (200, no function error), in order.
    pub fn succeeded(&self) -> Vec<TapCall> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.status == 200 && c.function_error.is_none())
            .cloned()
            .collect()
    }
}

/// `text` without ANSI escape sequences (sluice's text log colours its fields even into a file).
pub fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte (0x40..=0x7e).
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// A function that fails every event holding a record whose value is `poison`, as Lambda reports
/// an unhandled error (200 with `X-Amz-Function-Error`), and succeeds otherwise.
pub async fn failing_on_poison() -> Sink {
    Sink::start(|req, _| {
        if event_records(&req.body).iter().any(|r| r.value == "poison") {
            (
                200,
                vec![("X-Amz-Function-Error", "Unhandled".to_string())],
                r#"{"errorMessage":"poison record"}"#.into(),
            )
        } else {
            (200, vec![], "{}".into())
        }
    })
    .await
}
