//! One Kafka record as its entry in AWS's Kafka event (esm-spec.md §8): the neutral
//! [`KafkaRecord`] a consumer fills from its client, and its encoding into a [`Record`] whose
//! `event` is `{"topic","partition","offset","timestamp","timestampType","key","value","headers"}`.
//! The envelope around the entries (`eventSource`, `bootstrapServers`, `records` keyed
//! `<topic>-<partition>`) is the partition's [`EventFormat::kafka`](crate::model::EventFormat::kafka).
//!
//! What AWS sends where its docs are silent, and what sluice does:
//! AWS leaves out what is null rather than writing `null`:
//! - `key` and `value` are standard base64 with padding; a null key or value (a tombstone) is
//!   **omitted** (Powertools for TypeScript first handled a `null` value, then an absent one after
//!   users met it from AWS; the Java, Go and Rust event types read an absent field as null). An
//!   empty key or value is `""`.
//! - header values are arrays of **signed** byte values (-128..=127): AWS writes Java's `byte`, so
//!   `ë` is `[-61,-85]` (the Go, .NET and Rust event types changed to signed bytes for this; an
//!   unsigned reading breaks them). Each header is its own one-key object, in record order, so a
//!   repeated key stays repeated. A header whose value is null is an empty object `{}`, key and all
//!   (observed from AWS and reported by a Haskell runtime's users, Nike-Inc/hal#144).
//! - `timestamp` is epoch milliseconds; a record without one (`NO_TIMESTAMP_TYPE`) carries `-1`,
//!   Kafka's `NO_TIMESTAMP`, and its age is measured from when it was read.

use base64::Engine;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

use crate::model::{Record, SequenceNumber};

/// Kafka's `NO_TIMESTAMP`: the `timestamp` of a record without one.
pub const NO_TIMESTAMP: i64 = -1;

/// Which clock a record's timestamp is from (`timestampType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    /// Set by the producer.
    CreateTime,
    /// Set by the broker when it appended the record.
    LogAppendTime,
    /// No timestamp (a pre-0.10 message format).
    NoTimestampType,
}

impl TimestampType {
    /// The name AWS writes.
    pub fn as_str(self) -> &'static str {
        match self {
            TimestampType::CreateTime => "CREATE_TIME",
            TimestampType::LogAppendTime => "LOG_APPEND_TIME",
            TimestampType::NoTimestampType => "NO_TIMESTAMP_TYPE",
        }
    }
}

/// One record as the Kafka client returned it, independent of the client library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Epoch milliseconds; `None` when the record has none.
    pub timestamp: Option<i64>,
    pub timestamp_type: TimestampType,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// In record order; a key may repeat; a value may be null.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Entry<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    timestamp: i64,
    timestamp_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    headers: Headers<'a>,
}

/// `[{"<key>":[byte, …]}, …]`, a null value as `{}`.
struct Headers<'a>(&'a [(String, Option<Vec<u8>>)]);

impl Serialize for Headers<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for (key, value) in self.0 {
            seq.serialize_element(&OneHeader(key, value.as_deref()))?;
        }
        seq.end()
    }
}

/// One header: `{"<key>":[byte, …]}`, or `{}` when its value is null.
struct OneHeader<'a>(&'a str, Option<&'a [u8]>);

impl Serialize for OneHeader<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.1 {
            None => s.serialize_map(Some(0))?.end(),
            Some(bytes) => {
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry(self.0, &SignedBytes(bytes))?;
                map.end()
            }
        }
    }
}

/// A header value as Java's signed bytes.
struct SignedBytes<'a>(&'a [u8]);

impl Serialize for SignedBytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for b in self.0 {
            seq.serialize_element(&(*b as i8))?;
        }
        seq.end()
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl KafkaRecord {
    /// This record's entry in the event, serialized JSON.
    pub fn entry(&self) -> Vec<u8> {
        let entry = Entry {
            topic: &self.topic,
            partition: self.partition,
            offset: self.offset,
            timestamp: self.timestamp.unwrap_or(NO_TIMESTAMP),
            timestamp_type: self.timestamp_type.as_str(),
            key: self.key.as_deref().map(b64),
            value: self.value.as_deref().map(b64),
            headers: Headers(&self.headers),
        };
        serde_json::to_vec(&entry).expect("a Kafka event entry always serializes")
    }

    /// The engine's record: sequence = the offset in decimal, arrival = the record's timestamp (or
    /// `now_ms`, epoch milliseconds, when it has none or a negative one), event =
    /// [`KafkaRecord::entry`].
    pub fn to_record(&self, now_ms: i64) -> Record {
        Record {
            sequence: SequenceNumber(self.offset.to_string()),
            arrival_ms: self.timestamp.filter(|t| *t >= 0).unwrap_or(now_ms),
            event: self.entry(),
            lane_key: crate::model::lane_key(self.key.as_deref().unwrap_or_default()),
        }
    }
}

/// An entry as [`KafkaRecord::entry`] wrote it, read back (what the Kafka on-failure destination
/// re-produces). `None` if it is not such an entry.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReadEntry {
    topic: String,
    partition: i32,
    offset: i64,
    timestamp: i64,
    timestamp_type: String,
    key: Option<String>,
    value: Option<String>,
    #[serde(default)]
    headers: Vec<std::collections::BTreeMap<String, Vec<i8>>>,
}

impl KafkaRecord {
    /// The record an event entry describes: the inverse of [`KafkaRecord::entry`].
    pub fn from_entry(entry: &serde_json::Value) -> Option<KafkaRecord> {
        let e: ReadEntry = serde_json::from_value(entry.clone()).ok()?;
        let decode = |s: Option<String>| -> Option<Option<Vec<u8>>> {
            match s {
                None => Some(None),
                Some(s) => base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .ok()
                    .map(Some),
            }
        };
        let timestamp_type = match e.timestamp_type.as_str() {
            "CREATE_TIME" => TimestampType::CreateTime,
            "LOG_APPEND_TIME" => TimestampType::LogAppendTime,
            _ => TimestampType::NoTimestampType,
        };
        let mut headers = Vec::with_capacity(e.headers.len());
        for h in e.headers {
            match h.into_iter().next() {
                // `{}`: a header whose value was null; its key is not written, as AWS does.
                None => headers.push((String::new(), None)),
                Some((k, v)) => headers.push((k, Some(v.into_iter().map(|b| b as u8).collect()))),
            }
        }
        Some(KafkaRecord {
            topic: e.topic,
            partition: e.partition,
            offset: e.offset,
            timestamp: (e.timestamp >= 0).then_some(e.timestamp),
            timestamp_type,
            key: decode(e.key)?,
            value: decode(e.value)?,
            headers,
        })
    }
}

#[cfg(test)]
#[path = "event_tests.rs"]
mod tests;
