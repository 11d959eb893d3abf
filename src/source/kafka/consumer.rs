//! The mapping's one Kafka consumer and its poll thread. The consumer joins the mapping's consumer
//! group on its topic with automatic commits and offset stores off (offsets move only by
//! [`super::group::KafkaCheckpoints`], after a batch is done). A dedicated thread polls it: the
//! group's rebalance callbacks run there (a revocation may wait for workers to stop without holding
//! up the async runtime), and each fetched record goes to its partition's buffer, pausing the
//! partition at the broker when the buffer is full so a partition that is retrying holds back no
//! other. Blocking client calls (seek, offsets, watermarks) are made through [`blocking`].

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, warn};

use super::group::{ErrorReport, Group, GroupContext};
use super::iam::{AuthContext, MskIamSigner};
use super::seek::Seeks;

pub type KafkaConsumer = BaseConsumer<GroupContext>;

/// How long one seek, made on the poll thread, may wait for the client.
const SEEK_WAIT: Duration = Duration::from_secs(2);

/// What the consumer is built from.
#[derive(Clone)]
pub struct ClientSettings {
    /// `host:port,host:port`
    pub bootstrap_servers: String,
    pub group_id: String,
    pub topic: String,
    /// Further librdkafka properties (security, SASL, TLS), already resolved. Never logged: they
    /// may hold secrets.
    pub properties: Vec<(String, String)>,
    /// The event's view of the cluster (`eventSource`, `eventSourceArn`, `bootstrapServers`).
    pub cluster: crate::model::KafkaCluster,
    /// MSK IAM: signs the OAUTHBEARER tokens; `None` for every other authentication.
    pub signer: Option<Arc<MskIamSigner>>,
}

impl ClientSettings {
    /// The client context of a Kafka client made from these settings; `label` names it in logs.
    pub fn context(&self, label: &str) -> AuthContext {
        AuthContext {
            label: label.to_string(),
            signer: self.signer.clone(),
        }
    }
}

/// Shows the property names only: their values may be secrets.
impl std::fmt::Debug for ClientSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSettings")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("group_id", &self.group_id)
            .field("topic", &self.topic)
            .field("msk_iam", &self.signer.is_some())
            .field(
                "properties",
                &self.properties.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Builds the consumer and subscribes it to the topic. Nothing is fetched until it is polled.
pub fn connect(
    settings: &ClientSettings,
    group: Arc<Group>,
    errors: Arc<ErrorReport>,
) -> Result<Arc<KafkaConsumer>, String> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.bootstrap_servers)
        .set("group.id", &settings.group_id)
        .set("client.id", "sluice")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // Where a partition without committed offsets starts is decided by the reader; this only
        // covers the moment before it seeks.
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "3000")
        .set("max.poll.interval.ms", "300000");
    for (k, v) in &settings.properties {
        config.set(k, v);
    }
    let consumer: KafkaConsumer = config
        .create_with_context(GroupContext {
            auth: settings.context(&format!("consumer of {}", settings.topic)),
            group,
            errors,
        })
        .map_err(|e| format!("creating the Kafka consumer: {e}"))?;
    consumer
        .subscribe(&[&settings.topic])
        .map_err(|e| format!("subscribing to {}: {e}", settings.topic))?;
    Ok(Arc::new(consumer))
}

/// Polls `consumer` on a thread of its own until `stop` is set, routing records to their
/// partitions' buffers; `errors` hears every consumer error (a broker down, a bad address, an
/// authentication failure), rate-limited per text. At stop the consumer leaves the group, so its
/// partitions move to the other members at once.
pub fn poll_thread(
    consumer: Arc<KafkaConsumer>,
    group: Arc<Group>,
    seeks: Arc<Seeks>,
    stop: Arc<AtomicBool>,
    errors: Arc<ErrorReport>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name(format!("kafka-{}", group.topic))
        .spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                seeks.serve(|partition, offset| {
                    let topic = &group.topic;
                    let buffer = group
                        .buffer(partition)
                        .ok_or_else(|| format!("{topic}-{partition} is not assigned"))?;
                    consumer
                        .seek(topic, partition, Offset::Offset(offset), SEEK_WAIT)
                        .map_err(|e| e.to_string())?;
                    buffer.clear(|| pause(&consumer, topic, partition, false));
                    Ok(())
                });
                match consumer.poll(Duration::from_millis(100)) {
                    None => {}
                    Some(Ok(m)) => {
                        let partition = m.partition();
                        match group.buffer(partition) {
                            Some(buffer) => {
                                buffer.push(m.detach(), || {
                                    pause(&consumer, &group.topic, partition, true)
                                });
                            }
                            // Fetched just before a revocation: not ours to deliver, and not
                            // committed, so its next owner reads it.
                            None => debug!(topic = %group.topic, partition, "record of an unassigned partition dropped"),
                        }
                    }
                    Some(Err(e)) => errors.report(&e.to_string()),
                }
            }
            consumer.unsubscribe();
            // Serve the revocation that leaving causes.
            let _ = consumer.poll(Duration::from_millis(100));
        })
        .expect("spawning the Kafka poll thread")
}

/// Pauses or resumes one partition's fetching.
pub(super) fn pause(consumer: &KafkaConsumer, topic: &str, partition: i32, pause: bool) {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let done = if pause {
        consumer.pause(&tpl)
    } else {
        consumer.resume(&tpl)
    };
    if let Err(e) = done {
        warn!(topic, partition, pause, error = %e, "cannot pause or resume the partition");
    }
}

/// Runs a blocking client call off the async runtime.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("client task failed: {e}"))?
}
