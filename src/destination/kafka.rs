//! The Kafka topic on-failure destination (`kafka://<topic>`, Kafka mappings only): sluice acts as
//! a producer on the source's own cluster, with the consumer's connection settings, and writes the
//! records it gave up on to the topic, as AWS's dead-letter-topic pattern does ("the actual failed
//! records along with failure metadata").
//!
//! Each given-up record becomes one message with its original key, value and headers, plus
//! headers carrying the failure: `sluice-failure` (the failure record's JSON, as an SQS destination
//! gets it: condition, function, `KafkaBatchInfo`) and `sluice-source-topic`,
//! `sluice-source-partition`, `sluice-source-offset` (where the record came from). AWS does not
//! publish its wire format for these messages; this one keeps the records replayable as they were.
//! The producer is idempotent and waits for every message to be acknowledged by all in-sync
//! replicas before the batch counts as recorded; a send that fails is retried by the worker, which
//! may write some records twice (at least once).

use async_trait::async_trait;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use std::time::Duration;

use super::{Destination, FailureRecord};
use crate::source::kafka::{AuthContext, ClientSettings, KafkaRecord};

/// How long a message may wait for its acknowledgement before the send fails (and is retried).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

pub struct KafkaDestination {
    producer: FutureProducer<AuthContext>,
    topic: String,
}

impl KafkaDestination {
    /// A producer for `topic` on the cluster `settings` connect to. Nothing is sent until a
    /// failure record is.
    pub fn connect(settings: &ClientSettings, topic: &str) -> Result<Self, String> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &settings.bootstrap_servers)
            .set("client.id", "sluice-on-failure")
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set(
                "message.timeout.ms",
                DELIVERY_TIMEOUT.as_millis().to_string(),
            );
        for (k, v) in &settings.properties {
            config.set(k, v);
        }
        let producer = config
            .create_with_context(settings.context(&format!("kafka://{topic}")))
            .map_err(|e| format!("creating the Kafka producer for kafka://{topic}: {e}"))?;
        Ok(KafkaDestination {
            producer,
            topic: topic.to_string(),
        })
    }

    /// Queues one message, waiting for room while the producer's queue is full.
    async fn enqueue(
        &self,
        message: FutureRecord<'_, [u8], [u8]>,
        pending: &mut Vec<DeliveryFuture>,
    ) -> Result<(), String> {
        let mut message = message;
        loop {
            match self.producer.send_result(message) {
                Ok(delivery) => {
                    pending.push(delivery);
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if !pending.is_empty() =>
                {
                    message = back;
                    let first = pending.remove(0);
                    delivered(first).await?;
                }
                Err((e, _)) => return Err(format!("producing to {}: {e}", self.topic)),
            }
        }
    }
}

async fn delivered(delivery: DeliveryFuture) -> Result<(), String> {
    match delivery.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(format!("Kafka did not take a failed record: {e}")),
        Err(_) => Err("the Kafka producer went away before a failed record was sent".into()),
    }
}

/// The records of the failure record's event (`records` keyed `<topic>-<partition>`), in order.
fn records_of(record: &FailureRecord) -> Result<Vec<KafkaRecord>, String> {
    let event: serde_json::Value = serde_json::from_slice(&record.event)
        .map_err(|e| format!("the failed batch's event is not JSON: {e}"))?;
    let mut out = Vec::new();
    for entries in event["records"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
    {
        for entry in entries.as_array().into_iter().flatten() {
            out.push(
                KafkaRecord::from_entry(entry)
                    .ok_or("the failed batch's event holds an entry that is not a Kafka record")?,
            );
        }
    }
    Ok(out)
}

#[async_trait]
impl Destination for KafkaDestination {
    async fn send(&self, failure: &FailureRecord) -> Result<(), String> {
        let metadata = failure.metadata_json();
        let records = records_of(failure)?;
        let mut pending = Vec::with_capacity(records.len());
        for r in &records {
            let (partition, offset) = (r.partition.to_string(), r.offset.to_string());
            let mut headers = OwnedHeaders::new_with_capacity(r.headers.len() + 4);
            for (key, value) in &r.headers {
                headers = headers.insert(Header {
                    key,
                    value: value.as_deref(),
                });
            }
            for (key, value) in [
                ("sluice-failure", metadata.as_str()),
                ("sluice-source-topic", r.topic.as_str()),
                ("sluice-source-partition", partition.as_str()),
                ("sluice-source-offset", offset.as_str()),
            ] {
                headers = headers.insert(Header {
                    key,
                    value: Some(value.as_bytes()),
                });
            }
            let mut message = FutureRecord::<[u8], [u8]>::to(&self.topic).headers(headers);
            if let Some(k) = &r.key {
                message = message.key(k.as_slice());
            }
            if let Some(v) = &r.value {
                message = message.payload(v.as_slice());
            }
            if let Some(t) = r.timestamp {
                message = message.timestamp(t);
            }
            self.enqueue(message, &mut pending).await?;
        }
        for delivery in pending {
            delivered(delivery).await?;
        }
        Ok(())
    }
}
