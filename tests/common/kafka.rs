//! Kafka helpers on the test bed's broker (tansu, `SLUICE_TEST_KAFKA_BOOTSTRAP`): create a topic with
//! N partitions (tansu does not create topics on produce), produce keyed records and learn where
//! each landed, a consumer configured as sluice's (manual offset store and commit, a short session
//! timeout so group joins take seconds), and a group's committed offsets. Every wait is bounded.
#![allow(dead_code)]

use super::TestBed;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::future_producer::Delivery;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
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
