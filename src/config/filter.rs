//! `FilterCriteria: { Filters: [{ Pattern: "<JSON>" }, …] }` on any mapping (esm-spec.md §2, §7):
//! up to [`MAX_FILTERS`] filters (AWS's quota: 5 by default, raisable to 10), each pattern at most
//! [`MAX_PATTERN_CHARS`] characters and valid in Lambda's filter grammar
//! ([`crate::filter::Pattern::parse`]). `FilterCriteria: {}` (or no `Filters`, or an empty list)
//! is no filtering, as with AWS.

use super::obj::{show, Obj};
use crate::filter::{FilterCriteria, Pattern, AWS_DEFAULT_FILTERS, MAX_FILTERS, MAX_PATTERN_CHARS};
use serde_yaml_ng::Value;

/// How much of a bad pattern a message quotes.
const SHOWN_CHARS: usize = 120;

/// Reads the mapping's `FilterCriteria`; `None` for no filtering (or when it has a problem, which
/// is recorded).
pub(super) fn filter_criteria(m: &mut Obj<'_, '_>) -> Option<FilterCriteria> {
    let before = m.errs.len();
    let mut fc = m.object("FilterCriteria")?;
    let path = fc.field_path("Filters");
    let filters = match fc.take("Filters") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Sequence(items)) => items.iter().collect(),
        Some(other) => {
            fc.err(
                "Filters",
                format!(
                    "{} must be a list of {{ Pattern: \"<JSON>\" }}",
                    show(other)
                ),
            );
            Vec::new()
        }
    };
    if filters.len() > MAX_FILTERS {
        fc.err(
            "Filters",
            format!("lists {} filters; at most {MAX_FILTERS} are allowed (AWS's quota: {AWS_DEFAULT_FILTERS} by default, raisable to {MAX_FILTERS})", filters.len()),
        );
    }
    let mut patterns = Vec::new();
    for (i, item) in filters.into_iter().enumerate() {
        let mut f = Obj::new(&format!("{path}[{i}]"), item, fc.errs);
        if !item.is_mapping() {
            continue; // `Obj::new` said so
        }
        if let Some(p) = pattern(&mut f) {
            patterns.push(p);
        }
        f.finish();
    }
    fc.finish();
    if m.errs.len() > before {
        return None;
    }
    FilterCriteria::new(patterns)
}

/// One filter's `Pattern`.
fn pattern(f: &mut Obj<'_, '_>) -> Option<Pattern> {
    let text = f.required_string("Pattern")?;
    let chars = text.chars().count();
    if chars > MAX_PATTERN_CHARS {
        f.err(
            "Pattern",
            format!(
                "{} is {chars} characters long; at most {MAX_PATTERN_CHARS} are allowed",
                quoted(&text)
            ),
        );
        return None;
    }
    match Pattern::parse(&text) {
        Ok(p) => Some(p),
        Err(why) => {
            f.err("Pattern", format!("{} {why}", quoted(&text)));
            None
        }
    }
}

/// The pattern's text quoted, cut after [`SHOWN_CHARS`] characters.
fn quoted(text: &str) -> String {
    if text.chars().count() <= SHOWN_CHARS {
        format!("{text:?}")
    } else {
        let head: String = text.chars().take(SHOWN_CHARS).collect();
        format!("{head:?}…")
    }
}
