//! The batcher: holds read records in order and cuts batches by `BatchSize` and by Lambda's 6 MB
//! synchronous payload limit, measured on the serialized event: the entries inside their
//! [`Envelope`] (`{"Records":[...]}`, or a Kafka partition's `{…,"records":{"<topic>-<n>":[...]}}`).
//! Pure: the batching *window* is the worker's, since it is about time.

use bytes::Bytes;
use std::collections::VecDeque;

use crate::model::Envelope;
use crate::source::Record;

/// Lambda's synchronous invocation payload limit (6 MB), which ESMs cannot change.
pub const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;

/// Size of the `{"Records":[...]}` event holding records whose entries total `entry_bytes`.
pub fn payload_size(records: usize, entry_bytes: usize) -> usize {
    payload_size_in(&Envelope::Records, records, entry_bytes)
}

/// Size of the event in `envelope` holding records whose entries total `entry_bytes`.
pub fn payload_size_in(envelope: &Envelope, records: usize, entry_bytes: usize) -> usize {
    envelope.prefix().len() + envelope.suffix().len() + entry_bytes + records.saturating_sub(1)
}

/// The `{"Records":[...]}` event JSON for `records`, assembled from their pre-serialized entries.
pub fn encode(records: &[Record]) -> Bytes {
    encode_in(&Envelope::Records, records)
}

/// The event JSON in `envelope` for `records`, assembled from their pre-serialized entries.
pub fn encode_in(envelope: &Envelope, records: &[Record]) -> Bytes {
    encode_entries_in(envelope, records.iter().map(|r| r.event.as_slice()))
}

/// The event JSON in `envelope` for `records`, with `members` (serialized `"name":value` pairs,
/// comma-separated, e.g. a tumbling window's fields) added after the envelope's own: `{"Records":
/// [...],<members>}`. Without members, exactly [`encode_in`].
pub fn encode_with(envelope: &Envelope, records: &[Record], members: &[u8]) -> Bytes {
    let entries = records.iter().map(|r| r.event.as_slice());
    if members.is_empty() {
        return encode_entries_in(envelope, entries);
    }
    // One buffer, sized once: the envelope's closing brace (every envelope is an object) goes
    // after the members, instead of copying the whole event again to insert them.
    let mut out = assemble(envelope, entries, members.len() + 1);
    let brace = out.pop();
    debug_assert_eq!(brace, Some(b'}'), "every envelope is an object");
    out.push(b',');
    out.extend_from_slice(members);
    out.push(b'}');
    Bytes::from(out)
}

/// The event JSON `{"Records":[...]}` around pre-serialized entries (any source's).
pub fn encode_entries<'a>(entries: impl Iterator<Item = &'a [u8]> + Clone) -> Bytes {
    encode_entries_in(&Envelope::Records, entries)
}

/// The event JSON in `envelope` around pre-serialized entries.
pub fn encode_entries_in<'a>(
    envelope: &Envelope,
    entries: impl Iterator<Item = &'a [u8]> + Clone,
) -> Bytes {
    Bytes::from(assemble(envelope, entries, 0))
}

/// The event in `envelope` around `entries`, in a buffer with room for `spare` more bytes (its
/// one allocation).
fn assemble<'a>(
    envelope: &Envelope,
    entries: impl Iterator<Item = &'a [u8]> + Clone,
    spare: usize,
) -> Vec<u8> {
    let (count, bytes) = entries
        .clone()
        .fold((0, 0), |(n, b), e| (n + 1, b + e.len()));
    let mut out = Vec::with_capacity(payload_size_in(envelope, count, bytes) + spare);
    out.extend_from_slice(envelope.prefix());
    for (i, e) in entries.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(e);
    }
    out.extend_from_slice(envelope.suffix());
    out
}

/// Splits `items` (in order) into runs whose events fit `max_bytes`; an oversized item goes alone.
pub fn split_by_size<T>(
    items: Vec<T>,
    size: impl Fn(&T) -> usize,
    max_bytes: usize,
) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = Vec::new();
    let mut current: Vec<T> = Vec::new();
    let mut bytes = 0;
    for item in items {
        let n = size(&item);
        if !current.is_empty() && payload_size(current.len() + 1, bytes + n) > max_bytes {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += n;
        current.push(item);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Records waiting to be batched, in read order.
pub struct Batcher {
    records: VecDeque<Record>,
    entry_bytes: usize,
    max_records: usize,
    max_bytes: usize,
    envelope: Envelope,
}

impl Batcher {
    /// A batcher for `{"Records":[...]}` events.
    pub fn new(max_records: usize, max_bytes: usize) -> Self {
        Self::with_envelope(Envelope::Records, max_records, max_bytes)
    }

    /// A batcher whose batches' events are sized in `envelope` (a Kafka partition's).
    pub fn with_envelope(envelope: Envelope, max_records: usize, max_bytes: usize) -> Self {
        Batcher {
            records: VecDeque::new(),
            entry_bytes: 0,
            max_records: max_records.max(1),
            max_bytes,
            envelope,
        }
    }

    /// The envelope the batches' events are sized (and should be encoded) in.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    fn size(&self, records: usize, entry_bytes: usize) -> usize {
        payload_size_in(&self.envelope, records, entry_bytes)
    }

    pub fn push(&mut self, records: Vec<Record>) {
        for r in records {
            self.entry_bytes += r.event.len();
            self.records.push_back(r);
        }
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// True when a full batch is waiting (by count or by payload size).
    pub fn is_full(&self) -> bool {
        self.records.len() >= self.max_records
            || self.size(self.records.len(), self.entry_bytes) >= self.max_bytes
    }

    /// The records waiting, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Record> {
        self.records.iter()
    }

    /// Takes the longest prefix within both limits; at least one record if any are waiting.
    pub fn take(&mut self) -> Vec<Record> {
        self.take_upto(usize::MAX)
    }

    /// [`Batcher::take`], at most `max` records (a tumbling window's records: a batch never spans
    /// two windows); at least one record if any are waiting.
    pub fn take_upto(&mut self, max: usize) -> Vec<Record> {
        let max = max.clamp(1, self.max_records);
        let mut out = Vec::with_capacity(max.min(self.records.len()));
        let mut bytes = 0;
        while let Some(next) = self.records.front() {
            let fits = out.len() < max
                && self.size(out.len() + 1, bytes + next.event.len()) <= self.max_bytes;
            if !fits && !out.is_empty() {
                break;
            }
            bytes += next.event.len();
            let r = self.records.pop_front().expect("front exists");
            self.entry_bytes -= r.event.len();
            out.push(r);
            if !fits {
                break;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SequenceNumber;

    fn rec(i: usize, size: usize) -> Record {
        let mut event = format!("{{\"i\":{i},\"p\":\"").into_bytes();
        event.resize(size - 2, b'x');
        event.extend_from_slice(b"\"}");
        Record {
            sequence: SequenceNumber(i.to_string()),
            arrival_ms: 0,
            event,
            lane_key: 0,
        }
    }

    #[test]
    fn cuts_by_count_in_order() {
        let mut b = Batcher::new(3, MAX_PAYLOAD_BYTES);
        b.push((0..7).map(|i| rec(i, 20)).collect());
        assert!(b.is_full());
        let seqs = |v: Vec<Record>| v.into_iter().map(|r| r.sequence.0).collect::<Vec<_>>();
        assert_eq!(seqs(b.take()), ["0", "1", "2"]);
        assert_eq!(seqs(b.take()), ["3", "4", "5"]);
        assert!(!b.is_full());
        assert_eq!(seqs(b.take()), ["6"]);
        assert!(b.is_empty());
    }

    #[test]
    fn cuts_by_serialized_payload_size() {
        let mut b = Batcher::new(10_000, 1000);
        b.push((0..10).map(|i| rec(i, 300)).collect());
        let batch = b.take();
        // 3 entries: 14 + 900 + 2 commas = 916 <= 1000; a 4th would be 1217.
        assert_eq!(batch.len(), 3);
        let payload = encode(&batch);
        assert_eq!(payload.len(), payload_size(3, 900));
        let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(v["Records"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn split_by_size_keeps_order_and_limits() {
        let parts = split_by_size((0..10).collect::<Vec<usize>>(), |_| 300, 1000);
        assert_eq!(
            parts,
            vec![vec![0, 1, 2], vec![3, 4, 5], vec![6, 7, 8], vec![9]]
        );
        assert_eq!(
            split_by_size(vec![5000, 1], |n| *n, 1000),
            vec![vec![5000], vec![1]]
        );
    }

    #[test]
    fn extra_members_follow_the_records_and_a_take_can_be_capped() {
        let mut b = Batcher::new(10, MAX_PAYLOAD_BYTES);
        b.push((0..5).map(|i| rec(i, 20)).collect());
        assert_eq!(b.iter().count(), 5);
        let batch = b.take_upto(2);
        assert_eq!(batch.len(), 2);
        assert_eq!(b.take_upto(0).len(), 1, "at least one record");
        let payload = encode_with(&Envelope::Records, &batch, br#""state":{},"shardId":"s""#);
        let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(v["Records"].as_array().unwrap().len(), 2);
        assert_eq!(v["shardId"], "s");
        assert_eq!(v["state"], serde_json::json!({}));
        assert_eq!(encode_with(&Envelope::Records, &batch, b""), encode(&batch));
        let empty = encode_with(&Envelope::Records, &[], br#""isFinalInvokeForWindow":true"#);
        assert_eq!(
            &empty[..],
            br#"{"Records":[],"isFinalInvokeForWindow":true}"#
        );
    }

    /// The event as it was assembled before it was built in one buffer: the envelope's event,
    /// then copied again with the members inserted before its closing brace.
    fn two_pass(envelope: &Envelope, records: &[Record], members: &[u8]) -> Vec<u8> {
        let mut event = envelope.prefix().to_vec();
        for (i, r) in records.iter().enumerate() {
            if i > 0 {
                event.push(b',');
            }
            event.extend_from_slice(&r.event);
        }
        event.extend_from_slice(envelope.suffix());
        if members.is_empty() {
            return event;
        }
        let mut out = event[..event.len() - 1].to_vec();
        out.push(b',');
        out.extend_from_slice(members);
        out.push(b'}');
        out
    }

    #[test]
    fn payloads_are_byte_for_byte_what_two_passes_made() {
        let kafka = crate::model::EventFormat::kafka(
            &crate::model::KafkaCluster::msk("arn:aws:kafka:us-east-1:1:cluster/c/1", &["b:9092"]),
            "orders",
            3,
        )
        .envelope;
        let records: Vec<Record> = (0..7).map(|i| rec(i, 20 + 13 * i)).collect();
        let window = br#""window":{"start":"2020-01-01T00:00:00Z","end":"2020-01-01T00:01:00Z"},"state":{"n":"1"},"shardId":"shardId-000000000000","eventSourceARN":"arn","isFinalInvokeForWindow":false,"isWindowTerminatedEarly":false"#;
        for envelope in [Envelope::Records, kafka] {
            for n in [0, 1, 2, 7] {
                for members in [&b""[..], &br#""shardId":"s""#[..], &window[..]] {
                    let built = encode_with(&envelope, &records[..n], members);
                    assert_eq!(&built[..], &two_pass(&envelope, &records[..n], members)[..]);
                    if members.is_empty() {
                        assert_eq!(built, encode_in(&envelope, &records[..n]));
                        assert_eq!(
                            built.len(),
                            payload_size_in(&envelope, n, bytes_of(&records[..n]))
                        );
                    }
                    let v: serde_json::Value = serde_json::from_slice(&built).unwrap();
                    assert!(v.is_object());
                }
            }
        }
    }

    fn bytes_of(records: &[Record]) -> usize {
        records.iter().map(|r| r.event.len()).sum()
    }

    #[test]
    fn a_take_holds_what_was_pushed_in_order() {
        let mut b = Batcher::new(4, MAX_PAYLOAD_BYTES);
        b.push((0..3).map(|i| rec(i, 20)).collect());
        let taken = b.take();
        assert_eq!(taken.len(), 3);
        assert!(taken.capacity() >= 3);
        b.push((3..13).map(|i| rec(i, 20)).collect());
        let taken: Vec<_> = std::iter::from_fn(|| Some(b.take()).filter(|t| !t.is_empty()))
            .flatten()
            .map(|r| r.sequence.0)
            .collect();
        assert_eq!(taken, (3..13).map(|i| i.to_string()).collect::<Vec<_>>());
        assert!(b.is_empty());
    }

    #[test]
    fn an_oversized_record_still_goes_alone() {
        let mut b = Batcher::new(10, 100);
        b.push(vec![rec(0, 500), rec(1, 20)]);
        assert_eq!(b.take().len(), 1);
        assert_eq!(b.take().len(), 1);
    }
}
