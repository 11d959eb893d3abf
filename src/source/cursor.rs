//! The bookkeeping every shard reader shares: the current shard iterator, where a new one must
//! start (just after the last record handed out, else where the reader started), whether the shard
//! has ended, and when the next read may be made.

use std::time::Duration;
use tokio::time::Instant;

use super::{Page, Record, StartFrom};
use crate::config::StartingPosition;

pub(crate) struct ShardCursor {
    /// Where a new iterator starts.
    pub start: StartFrom,
    iterator: Option<String>,
    ended: bool,
    next_read_at: Instant,
}

impl ShardCursor {
    pub fn new(start: StartFrom) -> Self {
        ShardCursor {
            start,
            iterator: None,
            ended: false,
            next_read_at: Instant::now(),
        }
    }

    /// The shard is closed and every record was handed out.
    pub fn ended(&self) -> bool {
        self.ended
    }

    pub fn iterator(&self) -> Option<String> {
        self.iterator.clone()
    }

    pub fn set_iterator(&mut self, iterator: String) {
        self.iterator = Some(iterator);
    }

    pub fn next_read_at(&self) -> Instant {
        self.next_read_at
    }

    /// A read was made at `at`; the next may be made `interval` later.
    pub fn called(&mut self, at: Instant, interval: Duration) {
        self.next_read_at = at + interval;
    }

    /// The iterator expired: fetch a new one from `start`, at once.
    pub fn expire(&mut self) {
        self.iterator = None;
        self.next_read_at = Instant::now();
    }

    /// The position is past the stream's retention: start again from the oldest record there.
    pub fn trimmed(&mut self) {
        self.iterator = None;
        self.start = StartFrom::Position(StartingPosition::TrimHorizon);
    }

    /// A page arrived: remembers its last record and the next iterator (none: the shard is closed).
    pub fn page(
        &mut self,
        records: Vec<Record>,
        next: Option<&str>,
        caught_up: bool,
        millis_behind: Option<i64>,
    ) -> Page {
        if let Some(last) = records.last() {
            self.start = StartFrom::After(last.sequence.clone());
        }
        match next {
            Some(next) => self.iterator = Some(next.to_string()),
            None => {
                self.iterator = None;
                self.ended = true;
                if records.is_empty() {
                    return Page::ShardEnd;
                }
            }
        }
        Page::Records {
            records,
            caught_up,
            millis_behind,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SequenceNumber;

    fn rec(s: &str) -> Record {
        Record {
            sequence: SequenceNumber(s.into()),
            arrival_ms: 0,
            event: vec![],
        }
    }

    #[test]
    fn resumes_after_the_last_record_and_ends_with_the_shard() {
        let mut c = ShardCursor::new(StartFrom::Position(StartingPosition::TrimHorizon));
        assert!(matches!(
            c.page(vec![rec("1"), rec("2")], Some("it-2"), false, None),
            Page::Records { .. }
        ));
        assert_eq!(c.start, StartFrom::After(SequenceNumber("2".into())));
        c.expire();
        assert_eq!(c.iterator(), None);
        assert_eq!(
            c.start,
            StartFrom::After(SequenceNumber("2".into())),
            "an expired iterator resumes after the last record"
        );
        // The last page of a closed shard still hands out its records, then the end.
        assert!(matches!(
            c.page(vec![rec("3")], None, true, None),
            Page::Records { .. }
        ));
        assert!(c.ended());
        let mut d = ShardCursor::new(StartFrom::Position(StartingPosition::Latest));
        assert!(matches!(d.page(vec![], None, true, None), Page::ShardEnd));
    }
}
