//! The bookkeeping every shard reader shares: the current shard iterator, where a new one must
//! start (just after the last record handed out, else where the reader started), whether the shard
//! has ended, and when the next read may be made. A reader opened at a timestamp also skips the
//! records that arrived before it (DynamoDB Streams has no AT_TIMESTAMP iterator: it reads from
//! TRIM_HORIZON and relies on this; for Kinesis the filter never drops anything).

use std::time::Duration;
use tokio::time::Instant;

use super::{Page, Position, Record};
use crate::config::StartingPosition;

pub(crate) struct ShardCursor {
    /// Where a new iterator starts.
    pub start: Position,
    iterator: Option<String>,
    ended: bool,
    next_read_at: Instant,
    /// Records that arrived before this (epoch ms, whole seconds) are skipped, until the first
    /// record at or after it.
    skip_before_ms: Option<i64>,
}

impl ShardCursor {
    pub fn new(start: Position) -> Self {
        let skip_before_ms = match &start {
            Position::Start(StartingPosition::AtTimestamp(t)) => Some(
                // Whole seconds: DynamoDB's ApproximateCreationDateTime has no finer precision,
                // so a record of the same second is kept.
                t.duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64 * 1000)
                    .unwrap_or(0),
            ),
            _ => None,
        };
        ShardCursor {
            skip_before_ms,
            ended: start == Position::End,
            start,
            iterator: None,
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
        self.start = Position::Start(StartingPosition::TrimHorizon);
    }

    /// A page arrived: remembers its last record and the next iterator (none: the shard is closed).
    pub fn page(
        &mut self,
        records: Vec<Record>,
        next: Option<&str>,
        caught_up: bool,
        millis_behind: Option<i64>,
    ) -> Page {
        let mut records = records;
        if let Some(before) = self.skip_before_ms {
            let old = records.iter().take_while(|r| r.arrival_ms < before).count();
            if let Some(last) = records[..old].last() {
                self.start = Position::After(last.sequence.clone());
            }
            records.drain(..old);
            if !records.is_empty() {
                self.skip_before_ms = None;
            }
        }
        if let Some(last) = records.last() {
            self.start = Position::After(last.sequence.clone());
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
        at(s, 0)
    }

    fn at(s: &str, arrival_ms: i64) -> Record {
        Record {
            sequence: SequenceNumber(s.into()),
            arrival_ms,
            event: vec![],
        }
    }

    #[test]
    fn a_cursor_opened_at_the_end_has_ended() {
        assert!(ShardCursor::new(Position::End).ended());
        assert!(!ShardCursor::new(Position::Start(StartingPosition::TrimHorizon)).ended());
    }

    #[test]
    fn a_timestamp_start_skips_older_records_only() {
        let since = std::time::UNIX_EPOCH + Duration::from_millis(10_500);
        let mut c = ShardCursor::new(Position::Start(StartingPosition::AtTimestamp(since)));
        let page = c.page(
            vec![at("1", 9_000), at("2", 9_999)],
            Some("it-1"),
            false,
            None,
        );
        assert!(matches!(page, Page::Records { ref records, .. } if records.is_empty()));
        assert_eq!(c.start, Position::After(SequenceNumber("2".into())));
        // Same second as the start is kept (second precision), and so is all that follows,
        // whatever its timestamp.
        match c.page(
            vec![at("3", 9_500), at("4", 10_000), at("5", 9_000)],
            Some("it-2"),
            false,
            None,
        ) {
            Page::Records { records, .. } => {
                let seqs: Vec<&str> = records.iter().map(|r| r.sequence.0.as_str()).collect();
                assert_eq!(seqs, ["4", "5"]);
            }
            p => panic!("{p:?}"),
        }
        // A closed shard whose records are all older ends.
        let mut d = ShardCursor::new(Position::Start(StartingPosition::AtTimestamp(since)));
        assert!(matches!(
            d.page(vec![at("1", 1)], None, true, None),
            Page::ShardEnd
        ));
    }

    #[test]
    fn resumes_after_the_last_record_and_ends_with_the_shard() {
        let mut c = ShardCursor::new(Position::Start(StartingPosition::TrimHorizon));
        assert!(matches!(
            c.page(vec![rec("1"), rec("2")], Some("it-2"), false, None),
            Page::Records { .. }
        ));
        assert_eq!(c.start, Position::After(SequenceNumber("2".into())));
        c.expire();
        assert_eq!(c.iterator(), None);
        assert_eq!(
            c.start,
            Position::After(SequenceNumber("2".into())),
            "an expired iterator resumes after the last record"
        );
        // The last page of a closed shard still hands out its records, then the end.
        assert!(matches!(
            c.page(vec![rec("3")], None, true, None),
            Page::Records { .. }
        ));
        assert!(c.ended());
        let mut d = ShardCursor::new(Position::Start(StartingPosition::Latest));
        assert!(matches!(d.page(vec![], None, true, None), Page::ShardEnd));
    }
}
