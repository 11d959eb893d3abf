//! The function's `batchItemFailures` response, read by AWS's rules (esm-spec.md §4 for streams,
//! §5 for SQS; identifiers are sequence numbers or message ids). Only consulted when the mapping has
//! `FunctionResponseTypes: [ReportBatchItemFailures]`.

use serde_json::Value;
use std::collections::HashMap;

/// What a response says about a batch.
#[derive(Debug, PartialEq, Eq)]
pub enum ItemFailures {
    /// Complete success: null/empty response, no or null or empty `batchItemFailures`.
    None,
    /// Complete failure: an invalid identifier or an unreadable response.
    All(&'static str),
    /// These indices of the batch failed (sorted, distinct, never empty). Streams retry from the
    /// lowest; SQS returns exactly these messages to the queue.
    Failed(Vec<usize>),
}

/// Reads `body` against the batch's identifiers (sequence numbers or message ids, in batch order).
/// The identifiers are indexed once, and only when the response names failures.
pub fn parse<'a>(body: &[u8], identifiers: impl IntoIterator<Item = &'a str>) -> ItemFailures {
    if body.iter().all(u8::is_ascii_whitespace) {
        return ItemFailures::None;
    }
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => return ItemFailures::All("response is not valid JSON"),
    };
    let failures = match &value {
        Value::Null => return ItemFailures::None,
        Value::Object(o) => match o.get("batchItemFailures") {
            None | Some(Value::Null) => return ItemFailures::None,
            Some(Value::Array(items)) => items,
            Some(_) => return ItemFailures::All("batchItemFailures is not a list"),
        },
        // A JSON value that is not an object carries no batchItemFailures.
        _ => return ItemFailures::None,
    };
    let mut named: Vec<&str> = Vec::with_capacity(failures.len());
    for item in failures {
        let id = match item.get("itemIdentifier") {
            Some(Value::String(s)) if !s.is_empty() => s,
            Some(Value::String(_)) => return ItemFailures::All("empty itemIdentifier"),
            Some(Value::Null) => return ItemFailures::All("null itemIdentifier"),
            Some(_) => return ItemFailures::All("itemIdentifier is not a string"),
            None => return ItemFailures::All("batch item failure without itemIdentifier"),
        };
        named.push(id);
    }
    if named.is_empty() {
        return ItemFailures::None;
    }
    let index: HashMap<&str, usize> = identifiers
        .into_iter()
        .enumerate()
        .map(|(i, id)| (id, i))
        .collect();
    let mut failed: Vec<usize> = Vec::with_capacity(named.len());
    for id in named {
        match index.get(id) {
            Some(&i) => failed.push(i),
            None => return ItemFailures::All("itemIdentifier not in the batch"),
        }
    }
    failed.sort_unstable();
    failed.dedup();
    if failed.is_empty() {
        ItemFailures::None
    } else {
        ItemFailures::Failed(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(body: &str) -> ItemFailures {
        parse(body.as_bytes(), ["10", "20", "30"])
    }

    #[test]
    fn complete_success_cases() {
        for body in [
            "",
            "  ",
            "null",
            "{}",
            r#"{"batchItemFailures":null}"#,
            r#"{"batchItemFailures":[]}"#,
            r#""ok""#,
        ] {
            assert_eq!(p(body), ItemFailures::None, "{body}");
        }
    }

    #[test]
    fn complete_failure_cases() {
        for body in [
            r#"{"batchItemFailures":[{"itemIdentifier":""}]}"#,
            r#"{"batchItemFailures":[{"itemIdentifier":null}]}"#,
            r#"{"batchItemFailures":[{"ItemIdentifier":"20"}]}"#,
            r#"{"batchItemFailures":[{"itemIdentifier":"99"}]}"#,
            r#"{"batchItemFailures":[{"itemIdentifier":20}]}"#,
            r#"{"batchItemFailures":"20"}"#,
            "not json",
        ] {
            assert!(matches!(p(body), ItemFailures::All(_)), "{body}");
        }
    }

    #[test]
    fn failed_identifiers_sorted_and_distinct() {
        assert_eq!(
            p(
                r#"{"batchItemFailures":[{"itemIdentifier":"30"},{"itemIdentifier":"20"},{"itemIdentifier":"30"}]}"#
            ),
            ItemFailures::Failed(vec![1, 2])
        );
    }
}
