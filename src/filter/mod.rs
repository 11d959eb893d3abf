//! Event filtering (`FilterCriteria`, esm-spec.md §7; docs/filtering.md): which records a mapping
//! sends to its function. A mapping's patterns are parsed and checked once, when the config is
//! validated ([`Pattern::parse`], kept in [`FilterCriteria`]); workers ask a [`RecordFilter`]
//! whether each record matches one of them, on the record's filter view ([`view`]: its entry in the
//! event, decoded once, with the Kinesis `data`, SQS `body` or Kafka `value` opened up as JSON).
//! Records that match no pattern are not sent: stream workers checkpoint past them, SQS workers
//! delete them, and both count them (`sluice_filtered_out_events_total`, AWS's
//! FilteredOutEventCount).
//!
//! The matcher is sluice's own rather than the `quamina` crate (0.7.0, the latest): quamina
//! rejects `$or` and `{"prefix": {"equals-ignore-case": …}}`, matches `[100]` against `100.0`
//! where EventBridge matches numbers on their exact text, and accepts operators Lambda refuses
//! (`wildcard`, anything-but with prefix), so a parser that checks Lambda's grammar was needed
//! anyway, and non-JSON data must fail every pattern on it (quamina has no such value). What would
//! be left to reuse is the leaf matching. Quamina's automaton pays off with thousands of patterns;
//! a mapping has at most 10, each evaluated directly against a tree parsed once per record
//! ([`json`], which keeps numbers' text).

mod json;
mod matcher;
mod pattern;
#[cfg(test)]
mod tests;
mod view;

use std::sync::Arc;

pub use json::Json;
pub use pattern::Pattern;
pub use view::{view, SourceKind};

use crate::config::{Mapping, MappingSource};

/// At most this many filters per mapping: AWS's quota, 5 by default, raisable to 10. sluice takes
/// up to 10 so that a mapping running under a raised quota runs unchanged.
pub const MAX_FILTERS: usize = 10;
/// AWS's default quota of filters per mapping (named in messages).
pub const AWS_DEFAULT_FILTERS: usize = 5;
/// A pattern's longest text, in characters.
pub const MAX_PATTERN_CHARS: usize = 4096;

/// A mapping's filters (`FilterCriteria.Filters`), parsed: a record is sent when it matches any of
/// them. Never empty (no filters is no `FilterCriteria`). Cheap to clone.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterCriteria {
    patterns: Arc<[Pattern]>,
}

impl FilterCriteria {
    /// `None` when `patterns` is empty (no filtering).
    pub fn new(patterns: Vec<Pattern>) -> Option<Self> {
        (!patterns.is_empty()).then(|| FilterCriteria {
            patterns: patterns.into(),
        })
    }

    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// True when the filter view of `entry` (a `kind` record's event entry) matches a pattern.
    pub fn matches(&self, kind: SourceKind, entry: &[u8]) -> bool {
        view(kind, entry).is_some_and(|v| self.patterns.iter().any(|p| p.matches(&v)))
    }
}

/// A mapping's filters with its source's kind: what workers ask (borrowed from the mapping, so
/// taking it per batch costs nothing).
#[derive(Debug, Clone, Copy)]
pub struct RecordFilter<'a> {
    criteria: &'a FilterCriteria,
    kind: SourceKind,
}

impl<'a> RecordFilter<'a> {
    /// The mapping's filter; `None` when it has no `FilterCriteria` (every record is sent).
    pub fn of(mapping: &'a Mapping) -> Option<RecordFilter<'a>> {
        let kind = match &mapping.source {
            MappingSource::Kinesis(_) => SourceKind::Kinesis,
            MappingSource::DynamoDbStream(_) => SourceKind::DynamoDb,
            MappingSource::Sqs(_) => SourceKind::Sqs,
            MappingSource::Kafka(_) => SourceKind::Kafka,
        };
        Some(RecordFilter {
            criteria: mapping.filter_criteria.as_ref()?,
            kind,
        })
    }

    /// True when the record whose event entry is `entry` is to be sent.
    pub fn keeps(&self, entry: &[u8]) -> bool {
        self.criteria.matches(self.kind, entry)
    }

    /// Splits `items` into those to send and those filtered out, each in order.
    pub fn split<T>(&self, items: Vec<T>, entry: impl Fn(&T) -> &[u8]) -> (Vec<T>, Vec<T>) {
        items.into_iter().partition(|i| self.keeps(entry(i)))
    }
}
