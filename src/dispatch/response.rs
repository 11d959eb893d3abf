//! The function's `batchItemFailures` response for stream sources, read by AWS's rules
//! (esm-spec.md §4). Only consulted when the mapping has `FunctionResponseTypes:
//! [ReportBatchItemFailures]`.

use serde_json::Value;

/// What a response says about a batch.
#[derive(Debug, PartialEq, Eq)]
pub enum ItemFailures {
    /// Complete success: null/empty response, no or null or empty `batchItemFailures`.
    None,
    /// Complete failure: an invalid identifier or an unreadable response.
    All(&'static str),
    /// Records from this index of the batch on failed (the lowest reported identifier).
    From(usize),
}

/// Reads `body`; `position` maps an identifier to its index in the batch.
pub fn parse(body: &[u8], position: impl Fn(&str) -> Option<usize>) -> ItemFailures {
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
    let mut lowest: Option<usize> = None;
    for item in failures {
        let id = match item.get("itemIdentifier") {
            Some(Value::String(s)) if !s.is_empty() => s,
            Some(Value::String(_)) => return ItemFailures::All("empty itemIdentifier"),
            Some(Value::Null) => return ItemFailures::All("null itemIdentifier"),
            Some(_) => return ItemFailures::All("itemIdentifier is not a string"),
            None => return ItemFailures::All("batch item failure without itemIdentifier"),
        };
        match position(id) {
            Some(i) => lowest = Some(lowest.map_or(i, |l| l.min(i))),
            None => return ItemFailures::All("itemIdentifier not in the batch"),
        }
    }
    lowest.map_or(ItemFailures::None, ItemFailures::From)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(body: &str) -> ItemFailures {
        parse(body.as_bytes(), |id| {
            ["10", "20", "30"].iter().position(|s| *s == id)
        })
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
    fn lowest_identifier_wins() {
        assert_eq!(
            p(r#"{"batchItemFailures":[{"itemIdentifier":"30"},{"itemIdentifier":"20"}]}"#),
            ItemFailures::From(1)
        );
    }
}
