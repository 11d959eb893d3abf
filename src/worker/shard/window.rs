//! Tumbling windows (`TumblingWindowInSeconds`, esm-spec.md §6), pure: which window a record
//! belongs to (its arrival time rounded down to a multiple of the window's length, never before
//! the window already open), where a batch must be cut so that it never spans two windows, when a
//! window's final invocation is due, the state carried from each response to the next invocation,
//! and the window fields of the event (`window`, `state`, `shardId`, `eventSourceARN`,
//! `isFinalInvokeForWindow`, `isWindowTerminatedEarly`). [`Tumbling`] does no I/O and reads no
//! clock: the worker tells it the time of each read and asks it with `now`.
//!
//! A window's final invocation (no records) is due once the window's end has passed and no more of
//! its records can come: a record of a later window was read, the shard ended, or a read that began
//! at least [`LATE_ARRIVAL_GRACE`] after the end found the reader caught up. A record that still
//! arrives later with an earlier timestamp is counted in the window open then (never dropped).

use std::time::Duration;

use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::checkpoint::WindowState;
use crate::source::Record;

/// How long after a window's end a caught-up read must begin before the window is closed: records
/// put just before the end may take a moment to become readable.
pub const LATE_ARRIVAL_GRACE: Duration = Duration::from_secs(1);

/// The event bytes kept free of records in a windowed batch for the window fields (beyond the
/// state itself).
pub const FIELDS_RESERVE: usize = 4096;

/// Which closing invocation is being made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// The window is over: `isFinalInvokeForWindow`; afterwards its state is dropped.
    Final,
    /// The state grew past the limit: `isWindowTerminatedEarly`; the window goes on, with `{}`.
    Early,
}

/// One shard's tumbling windows.
#[derive(Debug)]
pub struct Tumbling {
    length_ms: i64,
    max_state_bytes: usize,
    /// The open window: its start and the state returned for the records up to the checkpoint.
    open: Option<WindowState>,
    /// No record is put in a window starting before this (the end of the last closed window).
    floor_ms: i64,
    /// When the last read that found the reader caught up began.
    caught_up_read_ms: Option<i64>,
    /// The state of the last response, until its records are settled.
    pending: Option<Map<String, Value>>,
}

impl Tumbling {
    /// Windows of `length` (whole seconds), state of at most `max_state_bytes` carried.
    pub fn new(length: Duration, max_state_bytes: usize) -> Self {
        Tumbling {
            length_ms: (length.as_millis() as i64).max(1),
            max_state_bytes,
            open: None,
            floor_ms: i64::MIN,
            caught_up_read_ms: None,
            pending: None,
        }
    }

    /// Resumes the window stored with the checkpoint (after a restart, or a new owner).
    pub fn resume(&mut self, stored: Option<WindowState>) {
        if let Some(w) = &stored {
            self.floor_ms = w.start_ms;
        }
        self.open = stored;
    }

    /// The open window, as it is to be stored with the next checkpoint.
    pub fn open(&self) -> Option<&WindowState> {
        self.open.as_ref()
    }

    /// The start of the window a record that arrived at `arrival_ms` belongs to.
    pub fn start_of(&self, arrival_ms: i64) -> i64 {
        let aligned = arrival_ms - arrival_ms.rem_euclid(self.length_ms);
        let floor = self.open.as_ref().map_or(self.floor_ms, |w| w.start_ms);
        aligned.max(floor)
    }

    fn end_of(&self, start_ms: i64) -> i64 {
        start_ms.saturating_add(self.length_ms)
    }

    /// How many of the leading `records` belong to the first one's window (at least one, if any).
    pub fn run_len<'a>(&self, records: impl Iterator<Item = &'a Record>) -> usize {
        let mut records = records.peekable();
        let Some(first) = records.peek() else {
            return 0;
        };
        let start = self.start_of(first.arrival_ms);
        records
            .take_while(|r| self.start_of(r.arrival_ms) == start)
            .count()
    }

    /// A read began at `started_ms`; `caught_up` if it found the reader at the shard's tip.
    pub fn read(&mut self, started_ms: i64, caught_up: bool) {
        if caught_up {
            self.caught_up_read_ms = Some(started_ms);
        }
    }

    /// True when the open window's final invocation is due: `waiting` is the first record read
    /// but not yet dispatched, `ended` whether the shard was read to its end.
    pub fn final_due(&self, now_ms: i64, waiting: Option<&Record>, ended: bool) -> bool {
        let Some(open) = &self.open else {
            return false;
        };
        if let Some(next) = waiting {
            // Records are read in order: one of a later window means this one has all its records.
            return self.start_of(next.arrival_ms) != open.start_ms;
        }
        let end = self.end_of(open.start_ms);
        let grace = LATE_ARRIVAL_GRACE.as_millis() as i64;
        ended || (now_ms >= end && self.caught_up_read_ms.is_some_and(|at| at >= end + grace))
    }

    /// A batch of `records` (all of one window, see [`Tumbling::run_len`]) is about to be invoked:
    /// opens its window if none is open (with the state `{}`).
    pub fn begin(&mut self, records: &[Record]) {
        if let (None, Some(first)) = (&self.open, records.first()) {
            self.open = Some(WindowState {
                start_ms: self.start_of(first.arrival_ms),
                state: Map::new(),
            });
        }
    }

    /// The state a response carried (see [`crate::dispatch::response::window_state`]), held until
    /// its records are settled.
    pub fn responded(&mut self, state: Map<String, Value>) {
        self.pending = Some(state);
    }

    /// The last response's records are done (all or up to a partial failure): its state is the
    /// window's now. True when that state is over the limit: the window must end early.
    pub fn settled(&mut self) -> bool {
        if let (Some(open), Some(state)) = (&mut self.open, self.pending.take()) {
            open.state = state;
            return open.state_bytes() > self.max_state_bytes;
        }
        false
    }

    /// The last response's records were not settled (a failure): its state is not kept.
    pub fn unsettled(&mut self) {
        self.pending = None;
    }

    /// A closing invocation succeeded (or was given up on): an early end starts the same window
    /// over with `{}`; a final one closes it (nothing is open until the next record).
    pub fn closed(&mut self, closing: Closing) {
        self.pending = None;
        match closing {
            Closing::Early => {
                if let Some(open) = &mut self.open {
                    open.state = Map::new();
                }
            }
            Closing::Final => {
                if let Some(open) = self.open.take() {
                    self.floor_ms = self.end_of(open.start_ms);
                }
            }
        }
    }

    /// The window fields of an invocation of the open window (or of the window of `records`, when
    /// none is open yet), to follow `Records` in the event.
    pub fn fields(&self, shard: &str, source_arn: &str, closing: Option<Closing>) -> Vec<u8> {
        let empty = Map::new();
        let (start, state) = match &self.open {
            Some(w) => (w.start_ms, &w.state),
            None => (self.floor_ms.max(0), &empty),
        };
        let iso = |ms: i64| {
            OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
                .ok()
                .and_then(|t| t.format(&Rfc3339).ok())
                .unwrap_or_default()
        };
        let fields = serde_json::json!({
            "window": { "start": iso(start), "end": iso(self.end_of(start)) },
            "state": state,
            "shardId": shard,
            "eventSourceARN": source_arn,
            "isFinalInvokeForWindow": closing == Some(Closing::Final),
            "isWindowTerminatedEarly": closing == Some(Closing::Early),
        });
        let object = serde_json::to_vec(&fields).expect("window fields serialize");
        // The members without the object's braces.
        object[1..object.len() - 1].to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SequenceNumber;

    const MIN: i64 = 60_000;

    fn rec(seq: u64, arrival_ms: i64) -> Record {
        Record {
            sequence: SequenceNumber(seq.to_string()),
            arrival_ms,
            lane_key: 0,
            event: b"{}".to_vec(),
        }
    }

    fn minute() -> Tumbling {
        Tumbling::new(Duration::from_secs(60), 1024)
    }

    #[test]
    fn windows_align_to_multiples_of_their_length_and_never_go_back() {
        let mut t = minute();
        let base = 1_700_000_040_000; // a whole minute
        assert_eq!(t.start_of(base), base);
        assert_eq!(t.start_of(base + MIN - 1), base);
        assert_eq!(t.start_of(base + MIN), base + MIN);
        let batch = [rec(1, base + 5), rec(2, base + MIN - 1), rec(3, base + MIN)];
        assert_eq!(
            t.run_len(batch.iter()),
            2,
            "a batch never spans two windows"
        );
        assert_eq!(t.run_len(batch[2..].iter()), 1);
        assert_eq!(t.run_len([].iter()), 0);
        t.begin(&batch[..2]);
        assert_eq!(t.open().unwrap().start_ms, base);
        // A record stamped before the open window joins it.
        assert_eq!(t.start_of(base - 10 * MIN), base);
        t.closed(Closing::Final);
        assert!(t.open().is_none());
        assert_eq!(t.start_of(base + 3), base + MIN, "nor a closed one");
    }

    #[test]
    fn the_final_invocation_waits_for_the_end_and_a_caught_up_read_after_it() {
        let mut t = minute();
        let base = 1_700_000_040_000;
        assert!(!t.final_due(base + 10 * MIN, None, true), "no window open");
        t.begin(&[rec(1, base + 1)]);
        let grace = LATE_ARRIVAL_GRACE.as_millis() as i64;
        t.read(base + 30_000, true);
        assert!(
            !t.final_due(base + MIN + grace, None, false),
            "read before the end"
        );
        t.read(base + MIN, true);
        assert!(
            !t.final_due(base + MIN + grace, None, false),
            "within the grace"
        );
        t.read(base + MIN + grace, false);
        assert!(
            !t.final_due(base + MIN + grace, None, false),
            "not caught up"
        );
        t.read(base + MIN + grace, true);
        assert!(t.final_due(base + MIN + grace, None, false));
        // Records of the open window waiting: they go first.
        assert!(!t.final_due(base + 2 * MIN, Some(&rec(2, base + 7)), false));
        // A record of a later window: due at once, whatever the clock.
        let mut u = minute();
        u.begin(&[rec(1, base + 1)]);
        assert!(u.final_due(base + 2, Some(&rec(2, base + MIN)), false));
        // The shard ended.
        assert!(u.final_due(base + 2, None, true));
    }

    #[test]
    fn state_is_carried_only_once_its_records_are_settled() {
        let mut t = minute();
        t.begin(&[rec(1, 0)]);
        let state = |v: &str| {
            let mut m = Map::new();
            m.insert("sum".into(), Value::from(v));
            m
        };
        t.responded(state("1"));
        t.unsettled();
        assert!(t.open().unwrap().state.is_empty(), "a failure keeps {{}}");
        t.responded(state("2"));
        assert!(!t.settled());
        assert_eq!(t.open().unwrap().state, state("2"));
        // Over the limit: the window ends early and goes on with {}.
        t.responded(state(&"x".repeat(2000)));
        assert!(t.settled());
        t.closed(Closing::Early);
        assert!(t.open().unwrap().state.is_empty());
        assert_eq!(t.open().unwrap().start_ms, 0, "the same window");
    }

    #[test]
    fn fields_are_awss_names_with_iso_8601_bounds() {
        let mut t = minute();
        t.resume(Some(WindowState {
            start_ms: 1_607_497_440_000,
            state: Map::from_iter([("1".to_string(), Value::from("282"))]),
        }));
        let arn = "arn:aws:kinesis:us-east-1:1:stream/s";
        let fields = t.fields("shardId-000000000006", arn, Some(Closing::Final));
        let v: Value = serde_json::from_slice(&[b"{", &fields[..], b"}"].concat()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "window": {"start": "2020-12-09T07:04:00Z", "end": "2020-12-09T07:05:00Z"},
                "state": {"1": "282"},
                "shardId": "shardId-000000000006",
                "eventSourceARN": arn,
                "isFinalInvokeForWindow": true,
                "isWindowTerminatedEarly": false,
            })
        );
    }
}
