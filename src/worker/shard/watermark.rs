//! The checkpoint of a shard whose records are processed in lanes (ParallelizationFactor above 1),
//! pure: [`Watermark`] holds every record read and not yet passed by the checkpoint, in read order,
//! each marked done or not, and says how far the shard may be checkpointed: the highest position
//! below which every record is done. Lanes finish records out of read order; the watermark never
//! passes a record that is not done (DESIGN.md invariant 1), so a restart from it loses nothing,
//! and records after it that a lane already finished are delivered again (at-least-once).

use std::collections::VecDeque;

use crate::source::SequenceNumber;

/// Records read and not yet passed by the checkpoint, in read order (see the module docs).
#[derive(Debug, Default)]
pub struct Watermark {
    /// Read order is sequence order: strictly increasing.
    records: VecDeque<(SequenceNumber, bool)>,
    /// The last record [`Watermark::read`] took, kept when it is passed.
    last_read: Option<SequenceNumber>,
}

impl Watermark {
    pub fn new() -> Self {
        Self::default()
    }

    /// A record was read (in read order). False, and nothing is tracked, when it is not after the
    /// last record read (a source handing a record again): it cannot hold the watermark back, which
    /// is already past it or will be once the earlier copy is done.
    pub fn read(&mut self, sequence: SequenceNumber) -> bool {
        if self
            .last_read
            .as_ref()
            .is_some_and(|last| sequence <= *last)
        {
            return false;
        }
        self.last_read = Some(sequence.clone());
        self.records.push_back((sequence, false));
        true
    }

    /// The record `sequence` is done (succeeded, given up on or filtered out). False when it is
    /// not held (never read, already passed, or read twice and tracked once).
    pub fn done(&mut self, sequence: &SequenceNumber) -> bool {
        match self.records.binary_search_by(|(s, _)| s.cmp(sequence)) {
            Ok(i) => {
                self.records[i].1 = true;
                true
            }
            Err(_) => false,
        }
    }

    /// Passes the records done at the front: the new checkpoint (the last of them), or `None` when
    /// the first record held is not done (or none is held).
    pub fn advance(&mut self) -> Option<SequenceNumber> {
        let mut passed = None;
        while self.records.front().is_some_and(|(_, done)| *done) {
            passed = self.records.pop_front().map(|(s, _)| s);
        }
        passed
    }

    /// Records held: read and not yet passed.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(n: u64) -> SequenceNumber {
        SequenceNumber((1000 + n).to_string())
    }

    #[test]
    fn the_watermark_waits_for_the_oldest_unfinished_record() {
        let mut w = Watermark::new();
        for n in 0..5 {
            assert!(w.read(s(n)));
        }
        assert!(w.done(&s(1)));
        assert!(w.done(&s(2)));
        assert_eq!(w.advance(), None, "record 0 is not done");
        assert!(w.done(&s(0)));
        assert_eq!(w.advance(), Some(s(2)));
        assert_eq!(w.advance(), None, "nothing new");
        assert!(w.done(&s(4)));
        assert_eq!(w.advance(), None, "record 3 is not done");
        assert!(w.done(&s(3)));
        assert_eq!(w.advance(), Some(s(4)));
        assert!(w.is_empty());
    }

    #[test]
    fn records_read_again_or_unknown_are_ignored() {
        let mut w = Watermark::new();
        assert!(w.read(s(5)));
        assert!(!w.read(s(5)), "the same record again");
        assert!(!w.read(s(3)), "an earlier record");
        assert_eq!(w.len(), 1);
        assert!(!w.done(&s(3)), "not held");
        assert!(w.done(&s(5)));
        assert_eq!(w.advance(), Some(s(5)));
        assert!(!w.read(s(4)), "still before the last read, though passed");
        assert!(!w.done(&s(5)), "passed");
    }

    proptest! {
        /// Whatever order lanes finish records in, the watermark never passes a record that is not
        /// done, and ends at the last record once all are.
        #[test]
        fn never_passes_an_unfinished_record(order in Just((0..60u64).collect::<Vec<_>>()).prop_shuffle()) {
            let mut w = Watermark::new();
            for n in 0..60 {
                w.read(s(n));
            }
            let mut done = std::collections::HashSet::new();
            let mut checkpoint: Option<SequenceNumber> = None;
            for n in order {
                prop_assert!(w.done(&s(n)));
                done.insert(n);
                if let Some(to) = w.advance() {
                    prop_assert!(checkpoint.as_ref().is_none_or(|c| *c < to), "only forward");
                    let upto: u64 = to.0.parse::<u64>().unwrap() - 1000;
                    prop_assert!((0..=upto).all(|k| done.contains(&k)), "passed an unfinished record");
                    // The highest such position: the next record is not done.
                    prop_assert!(!done.contains(&(upto + 1)) || upto == 59);
                    checkpoint = Some(to);
                }
            }
            prop_assert_eq!(checkpoint, Some(s(59)));
            prop_assert!(w.is_empty());
        }
    }
}
