//! The engine's neutral vocabulary: what a source hands on and what everything downstream of a
//! reader (batching, dispatch, retries, checkpoints, leases, telemetry) works with, so none of it
//! knows which service a record came from.
//!
//! - a [`Partition`] is the unit of order: a Kinesis or DynamoDB Streams shard, an SQS mapping's
//!   lane (`queue`), a Kafka topic-partition (`<topic>-<partition>`, the key of AWS's Kafka event);
//! - a [`Record`] is one record of a partition, already encoded as its entry in the function's event;
//! - a [`Position`] is where a partition is: a start sentinel (TRIM_HORIZON, LATEST, AT_TIMESTAMP),
//!   just after a record ([`SequenceNumber`]: a stream sequence number or a Kafka offset), or the end
//!   of a closed partition;
//! - an [`EventFormat`] says how a source's records are wrapped into the event (its [`Envelope`]:
//!   `{"Records":[…]}`, or a Kafka topic-partition's `{"eventSource":…,"records":{"<topic>-<n>":[…]}}`)
//!   and which key its batches carry in an on-failure record.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

/// A partition's id as its source names it (see the module docs).
pub type PartitionId = String;

/// A record's place in its partition: a stream sequence number (a decimal string of up to 129
/// digits) or a Kafka offset written in decimal. Ordered by length, then lexicographically
/// (DESIGN.md invariant 3), never parsed as an integer; for non-negative integers without leading
/// zeros (Kafka offsets) that is numeric order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct SequenceNumber(pub String);

impl Ord for SequenceNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .len()
            .cmp(&other.0.len())
            .then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for SequenceNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One record, read and encoded.
#[derive(Debug, Clone)]
pub struct Record {
    /// Its place in the partition; also its `itemIdentifier` in a partial batch response (for
    /// Kafka, the `offset` of the `{partition, offset}` identifier).
    pub sequence: SequenceNumber,
    /// Approximate arrival in the source, epoch milliseconds (record age is measured from it).
    pub arrival_ms: i64,
    /// This record's entry in the event (an element of `Records`, or of a Kafka partition's list
    /// under `records`), serialized JSON.
    pub event: Vec<u8>,
    /// [`lane_key`] of what orders the record within its partition: the Kinesis partition key, the
    /// DynamoDB item's key, the Kafka record key (0 when it has none). With ParallelizationFactor
    /// above 1, records with the same key go to the same lane and keep their order.
    pub lane_key: u64,
}

/// A stable 64-bit hash of a record's ordering key (FNV-1a, then a final mix so that every bit,
/// the low ones a lane is chosen by included, depends on every byte). The same in every process
/// and release, though nothing depends on that: lanes are chosen again after a restart.
pub fn lane_key(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // MurmurHash3's fmix64.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// A partition as its source lists it, with its lineage.
#[derive(Debug, Clone, PartialEq)]
pub struct Partition {
    pub id: PartitionId,
    /// The partitions whose records come before this one's (a Kinesis split's or merge's parents, a
    /// DynamoDB Streams shard's parent); empty for a root and for queue lanes and Kafka.
    pub parents: Vec<PartitionId>,
    /// No record will be added (a closed shard); reading it to its end finishes it.
    pub closed: bool,
}

/// A mapping's `StartingPosition` (esm-spec.md §2): where a partition without a checkpoint starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StartingPosition {
    TrimHorizon,
    Latest,
    AtTimestamp(SystemTime),
}

/// Where a partition is.
#[derive(Debug, Clone, PartialEq)]
pub enum Position {
    /// Nothing read yet: start at the mapping's starting position.
    Start(StartingPosition),
    /// Everything up to and including this record is done; reading resumes just after it.
    After(SequenceNumber),
    /// The partition was closed and read to its end.
    End,
}

/// How a source's records become the function's event and its failure records. Kinesis and
/// DynamoDB Streams have one per source; Kafka has one per topic-partition (its envelope names the
/// partition), made with [`EventFormat::kafka`]. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFormat {
    pub envelope: Envelope,
    /// The key of the batch-info object in on-failure records (`KinesisBatchInfo`,
    /// `DDBStreamBatchInfo`, `KafkaBatchInfo`). SQS mappings never give up on a message (the
    /// queue's redrive policy does), so they have no failure records.
    pub batch_info_key: &'static str,
}

/// The event's outer shape: the bytes before the first entry and after the last one, entries being
/// separated by commas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Envelope {
    /// `{"Records":[entry, …]}`: Kinesis, DynamoDB Streams, SQS.
    Records,
    /// `{"eventSource":…,"bootstrapServers":…,"records":{"<topic>-<partition>":[entry, …]}}`:
    /// one Kafka topic-partition's batch (sluice batches per partition, so one key per event).
    Kafka(Arc<KafkaEnvelope>),
}

/// Where a Kafka mapping's records come from, as its events name it (esm-spec.md §8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaCluster {
    /// The MSK cluster's ARN (`eventSource` `aws:kafka`, and `eventSourceArn` in the event and in
    /// `KafkaBatchInfo`); `None` for self-managed Kafka (`SelfManagedKafka`, no ARN).
    pub msk_arn: Option<String>,
    /// The brokers, comma-separated (`bootstrapServers`): `a:9092,b:9092`.
    pub bootstrap_servers: String,
}

impl KafkaCluster {
    /// A self-managed cluster reached through `servers` (`host:port` each).
    pub fn self_managed<S: AsRef<str>>(servers: &[S]) -> Self {
        KafkaCluster {
            msk_arn: None,
            bootstrap_servers: join(servers),
        }
    }

    /// An MSK cluster, `arn`, reached through `servers`.
    pub fn msk<S: AsRef<str>>(arn: impl Into<String>, servers: &[S]) -> Self {
        KafkaCluster {
            msk_arn: Some(arn.into()),
            bootstrap_servers: join(servers),
        }
    }

    /// The event's `eventSource`.
    pub fn event_source(&self) -> &'static str {
        match self.msk_arn {
            Some(_) => "aws:kafka",
            None => "SelfManagedKafka",
        }
    }
}

fn join<S: AsRef<str>>(servers: &[S]) -> String {
    let parts: Vec<&str> = servers.iter().map(AsRef::as_ref).collect();
    parts.join(",")
}

/// A Kafka topic-partition's envelope: the cluster, the partition's key, and the event's prefix
/// built once.
#[derive(Debug, PartialEq, Eq)]
pub struct KafkaEnvelope {
    pub cluster: KafkaCluster,
    /// `<topic>-<partition>`: the key under `records`, `partition` in Kafka's `itemIdentifier`, and
    /// the key under `recordsInfo` in `KafkaBatchInfo`.
    pub partition: PartitionId,
    prefix: Box<[u8]>,
}

/// The partition id of a Kafka topic-partition: `<topic>-<partition>`, as AWS keys its event.
pub fn kafka_partition_id(topic: &str, partition: i32) -> PartitionId {
    format!("{topic}-{partition}")
}

const RECORDS_PREFIX: &[u8] = br#"{"Records":["#;
const RECORDS_SUFFIX: &[u8] = b"]}";
const KAFKA_SUFFIX: &[u8] = b"]}}";

impl Envelope {
    /// The bytes before the first entry.
    pub fn prefix(&self) -> &[u8] {
        match self {
            Envelope::Records => RECORDS_PREFIX,
            Envelope::Kafka(k) => &k.prefix,
        }
    }

    /// The bytes after the last entry.
    pub fn suffix(&self) -> &'static [u8] {
        match self {
            Envelope::Records => RECORDS_SUFFIX,
            Envelope::Kafka(_) => KAFKA_SUFFIX,
        }
    }
}

fn json_string(s: &str) -> String {
    // Serializing a string cannot fail.
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

impl EventFormat {
    pub const KINESIS: EventFormat = EventFormat {
        envelope: Envelope::Records,
        batch_info_key: "KinesisBatchInfo",
    };
    pub const DYNAMODB: EventFormat = EventFormat {
        envelope: Envelope::Records,
        batch_info_key: "DDBStreamBatchInfo",
    };

    /// The format of one Kafka topic-partition's batches: the event
    /// `{"eventSource":"SelfManagedKafka"|"aws:kafka",("eventSourceArn":"<MSK ARN>",)
    /// "bootstrapServers":"a:9092,b:9092","records":{"<topic>-<partition>":[…]}}` (AWS's key order)
    /// and `KafkaBatchInfo` in failure records.
    pub fn kafka(cluster: &KafkaCluster, topic: &str, partition: i32) -> EventFormat {
        let id = kafka_partition_id(topic, partition);
        let mut prefix = String::with_capacity(96 + cluster.bootstrap_servers.len() + id.len());
        prefix.push_str(r#"{"eventSource":"#);
        prefix.push_str(&json_string(cluster.event_source()));
        if let Some(arn) = &cluster.msk_arn {
            prefix.push_str(r#","eventSourceArn":"#);
            prefix.push_str(&json_string(arn));
        }
        prefix.push_str(r#","bootstrapServers":"#);
        prefix.push_str(&json_string(&cluster.bootstrap_servers));
        prefix.push_str(r#","records":{"#);
        prefix.push_str(&json_string(&id));
        prefix.push_str(":[");
        EventFormat {
            envelope: Envelope::Kafka(Arc::new(KafkaEnvelope {
                cluster: cluster.clone(),
                partition: id,
                prefix: prefix.into_bytes().into_boxed_slice(),
            })),
            batch_info_key: "KafkaBatchInfo",
        }
    }

    /// The Kafka partition's envelope, for a Kafka format.
    pub fn kafka_envelope(&self) -> Option<&KafkaEnvelope> {
        match &self.envelope {
            Envelope::Kafka(k) => Some(k),
            Envelope::Records => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_order_by_length_then_digits() {
        let s = |x: &str| SequenceNumber(x.into());
        assert!(s("9") < s("10"));
        assert!(
            s("49590338271490256608559692538361571095921575989136588898")
                > s("4959033827149025660855969253836157109592157598913658889")
        );
        assert!(s("123") < s("124"));
        let mut v = vec![s("100"), s("20"), s("3")];
        v.sort();
        assert_eq!(v, vec![s("3"), s("20"), s("100")]);
    }

    #[test]
    fn lane_keys_are_stable_and_spread() {
        assert_eq!(lane_key(b"user-1"), lane_key(b"user-1"));
        assert_ne!(lane_key(b"user-1"), lane_key(b"user-2"));
        // A fixed value: the hash must not change between releases without a reason.
        assert_eq!(lane_key(b""), 17_280_346_270_528_514_342);
        let mut per_lane = [0usize; 5];
        for i in 0..1000 {
            per_lane[(lane_key(format!("key-{i}").as_bytes()) % 5) as usize] += 1;
        }
        assert!(
            per_lane.iter().all(|n| (150..=250).contains(n)),
            "{per_lane:?}"
        );
    }

    #[test]
    fn kafka_offsets_order_numerically() {
        let s = |x: u64| SequenceNumber(x.to_string());
        let mut v = vec![s(1_000), s(99), s(0), s(100)];
        v.sort();
        assert_eq!(v, vec![s(0), s(99), s(100), s(1_000)]);
    }
}
