//! One assigned partition's fetched records, between the consumer's poll thread (which pushes) and
//! the partition's reader (which takes). Bounded in bytes: past the bound the poll thread pauses the
//! partition at the broker (its fetches stop; no other partition waits), and the reader resumes it
//! once it has taken the buffer below half. The pause and resume calls are made under the buffer's
//! lock, so they reach the client in the order the buffer decided them: a reader that empties the
//! buffer between a push and its pause can never resume before that pause and leave the partition
//! paused for good.

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

    /// Adds a fetched record; calls `pause` (under the lock) if the partition is now to be paused
    /// (over the bound and not paused yet).
    pub fn push(&self, m: OwnedMessage, pause: impl FnOnce()) {
        let mut s = self.state();
        s.bytes += size(&m);
        s.last_fetched = s.last_fetched.max(Some(m.offset()));
        s.records.push_back(m);
        if s.bytes > self.limit && !s.paused {
            s.paused = true;
            pause();
        }
        drop(s);
        self.arrived.notify_one();
    }

    /// Takes up to `max` records (at least one if any); calls `resume` (under the lock) if the
    /// partition is to be resumed (paused, and now below half the bound).
    pub fn take(&self, max: usize, resume: impl FnOnce()) -> Vec<OwnedMessage> {
        let mut s = self.state();
        let n = s.records.len().min(max.max(1));
        let taken: Vec<OwnedMessage> = s.records.drain(..n).collect();
        s.bytes -= taken.iter().map(size).sum::<usize>();
        if s.paused && s.bytes <= self.limit / 2 {
            s.paused = false;
            resume();
        }
        taken
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

    /// Drops everything buffered (after a seek); calls `resume` (under the lock) if the partition
    /// was paused.
    pub fn clear(&self, resume: impl FnOnce()) {
        let mut s = self.state();
        s.records.clear();
        s.bytes = 0;
        if std::mem::take(&mut s.paused) {
            resume();
        }
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
        let calls = std::cell::RefCell::new(Vec::new());
        let pause = || calls.borrow_mut().push("pause");
        let resume = || calls.borrow_mut().push("resume");
        b.push(msg(0, 400), pause);
        b.push(msg(1, 400), pause);
        assert!(calls.borrow().is_empty());
        b.push(msg(2, 400), pause);
        assert_eq!(*calls.borrow(), ["pause"], "over 1000 bytes: pause");
        b.push(msg(3, 400), pause);
        assert_eq!(*calls.borrow(), ["pause"], "already paused");
        let taken = b.take(1, resume);
        assert_eq!(taken[0].offset(), 0);
        assert_eq!(*calls.borrow(), ["pause"], "still above half");
        let taken = b.take(2, resume);
        assert_eq!(taken.iter().map(|m| m.offset()).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(*calls.borrow(), ["pause", "resume"]);
        assert!(!b.is_empty());
        b.clear(resume);
        assert_eq!(*calls.borrow(), ["pause", "resume"], "not paused any more");
        assert!(b.is_empty());
    }

    #[test]
    fn a_reader_racing_the_poll_thread_resumes_only_after_the_pause() {
        // The poll thread pushes a record over the bound while the reader takes everything at
        // once: whichever wins the lock, the client sees pause before resume, never the reverse.
        for _ in 0..200 {
            let b = std::sync::Arc::new(PartitionBuffer::new(100));
            let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let pusher = {
                let (b, calls) = (b.clone(), calls.clone());
                std::thread::spawn(move || {
                    b.push(msg(0, 500), || calls.lock().unwrap().push("pause"))
                })
            };
            loop {
                b.take(10, || calls.lock().unwrap().push("resume"));
                if calls.lock().unwrap().len() == 2 || (pusher.is_finished() && b.is_empty()) {
                    break;
                }
            }
            pusher.join().unwrap();
            b.take(10, || calls.lock().unwrap().push("resume"));
            assert_eq!(*calls.lock().unwrap(), ["pause", "resume"]);
        }
    }
}
