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
//! - an [`EventFormat`] says how a source's records are wrapped into the event and which key its
//!   batches carry in an on-failure record.

use std::cmp::Ordering;
use std::fmt;
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
    /// Its place in the partition; also its `itemIdentifier` in a partial batch response.
    pub sequence: SequenceNumber,
    /// Approximate arrival in the source, epoch milliseconds (record age is measured from it).
    pub arrival_ms: i64,
    /// This record's entry in the event (an element of `Records`), serialized JSON.
    pub event: Vec<u8>,
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

/// How a source's records become the function's event and its failure records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventFormat {
    pub envelope: Envelope,
    /// The key of the batch-info object in on-failure records (`KinesisBatchInfo`,
    /// `DDBStreamBatchInfo`). SQS mappings never give up on a message (the queue's redrive policy
    /// does), so they have no failure records.
    pub batch_info_key: &'static str,
}

/// The event's outer shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Envelope {
    /// `{"Records":[entry, …]}`: Kinesis, DynamoDB Streams, SQS.
    Records,
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
    fn kafka_offsets_order_numerically() {
        let s = |x: u64| SequenceNumber(x.to_string());
        let mut v = vec![s(1_000), s(99), s(0), s(100)];
        v.sort();
        assert_eq!(v, vec![s(0), s(99), s(100), s(1_000)]);
    }
}
