//! One assigned partition's fetched records, between the consumer's poll thread (which pushes) and
//! the partition's reader (which takes). Bounded in bytes: past the bound the poll thread pauses the
//! partition at the broker (its fetches stop; no other partition waits), and the reader resumes it
//! once it has taken the buffer below half.

use rdkafka::message::OwnedMessage;
use rdkafka::Message;
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::Notify;

pub(super) struct PartitionBuffer {
    state: Mutex<State>,
    /// Signalled when records arrive.
    pub arrived: Notify,
    limit: usize,
}

#[derive(Default)]
struct State {
    records: VecDeque<OwnedMessage>,
    bytes: usize,
    paused: bool,
    /// The highest offset fetched so far.
    last_fetched: Option<i64>,
}

fn size(m: &OwnedMessage) -> usize {
    m.payload().map_or(0, <[u8]>::len) + m.key().map_or(0, <[u8]>::len) + 64
}

impl PartitionBuffer {
    pub fn new(limit: usize) -> Self {
        PartitionBuffer {
            state: Mutex::new(State::default()),
            arrived: Notify::new(),
            limit,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a fetched record; true if the partition is now to be paused (over the bound and not
    /// paused yet).
    pub fn push(&self, m: OwnedMessage) -> bool {
        let mut s = self.state();
        s.bytes += size(&m);
        s.last_fetched = s.last_fetched.max(Some(m.offset()));
        s.records.push_back(m);
        let pause = s.bytes > self.limit && !s.paused;
        if pause {
            s.paused = true;
        }
        drop(s);
        self.arrived.notify_one();
        pause
    }

    /// Takes up to `max` records (at least one if any); the second value is true if the partition
    /// is to be resumed (paused, and now below half the bound).
    pub fn take(&self, max: usize) -> (Vec<OwnedMessage>, bool) {
        let mut s = self.state();
        let n = s.records.len().min(max.max(1));
        let taken: Vec<OwnedMessage> = s.records.drain(..n).collect();
        s.bytes -= taken.iter().map(size).sum::<usize>();
        let resume = s.paused && s.bytes <= self.limit / 2;
        if resume {
            s.paused = false;
        }
        (taken, resume)
    }

    /// The timestamp (ms) of the first buffered record, if it has one.
    pub fn first_timestamp(&self) -> Option<i64> {
        self.state()
            .records
            .front()
            .and_then(|m| m.timestamp().to_millis())
    }

    /// One past the highest offset fetched so far.
    pub fn fetched_end(&self) -> Option<i64> {
        self.state().last_fetched.map(|o| o + 1)
    }

    /// The offset of the first buffered record.
    pub fn first_offset(&self) -> Option<i64> {
        self.state().records.front().map(|m| m.offset())
    }

    pub fn is_empty(&self) -> bool {
        self.state().records.is_empty()
    }

    /// Drops everything buffered (after a seek); true if the partition is to be resumed.
    pub fn clear(&self) -> bool {
        let mut s = self.state();
        s.records.clear();
        s.bytes = 0;
        std::mem::take(&mut s.paused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::Timestamp;

    fn msg(offset: i64, bytes: usize) -> OwnedMessage {
        OwnedMessage::new(
            Some(vec![b'x'; bytes]),
            None,
            "t".into(),
            Timestamp::CreateTime(0),
            0,
            offset,
            None,
        )
    }

    #[test]
    fn pauses_over_the_bound_and_resumes_below_half() {
        let b = PartitionBuffer::new(1000);
        assert!(!b.push(msg(0, 400)));
        assert!(!b.push(msg(1, 400)));
        assert!(b.push(msg(2, 400)), "over 1000 bytes: pause");
        assert!(!b.push(msg(3, 400)), "already paused");
        let (taken, resume) = b.take(1);
        assert_eq!(taken[0].offset(), 0);
        assert!(!resume, "still above half");
        let (taken, resume) = b.take(2);
        assert_eq!(taken.iter().map(|m| m.offset()).collect::<Vec<_>>(), [1, 2]);
        assert!(resume);
        assert!(!b.is_empty());
        assert!(!b.clear(), "not paused any more");
        assert!(b.is_empty());
    }
}
