//! The function's `batchItemFailures` response, read by AWS's rules (esm-spec.md §4 for streams,
//! §5 for SQS). Identifiers are strings (sequence numbers or message ids) or, for Kafka, objects
//! `{"partition":"<topic>-<n>","offset":<n>}` (see [`IdentifierKind`]). Only consulted when the
//! mapping has `FunctionResponseTypes: [ReportBatchItemFailures]`. With tumbling windows, the
//! response's `state` object is read by [`window_state`] (esm-spec.md §6).

use serde_json::Value;
use std::borrow::Cow;
use std::collections::HashMap;

use crate::model::{Envelope, EventFormat};

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

/// How a response names the batch's records in `itemIdentifier`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentifierKind<'a> {
    /// A non-empty string: a sequence number (Kinesis, DynamoDB Streams) or a message id (SQS).
    Strings,
    /// Kafka's `{"partition":"<topic>-<n>","offset":<n>}` for a batch of this partition's records
    /// (`<topic>-<n>`); the batch's identifiers are its records' offsets in decimal. The offset may
    /// be a JSON integer (as Powertools writes it) or a string of one. A string identifier, another
    /// partition, or an offset not in the batch is a complete failure.
    Kafka { partition: &'a str },
}

impl<'a> IdentifierKind<'a> {
    /// How responses to batches in `format` name their records.
    pub fn of(format: &'a EventFormat) -> Self {
        match &format.envelope {
            Envelope::Records => IdentifierKind::Strings,
            Envelope::Kafka(k) => IdentifierKind::Kafka {
                partition: &k.partition,
            },
        }
    }

    /// The identifier one failure names, in the batch's terms (a string id or a decimal offset).
    fn read<'v>(&self, item: &'v Value) -> Result<Cow<'v, str>, &'static str> {
        let id = match item.get("itemIdentifier") {
            Some(id) => id,
            None => return Err("batch item failure without itemIdentifier"),
        };
        match (self, id) {
            (_, Value::Null) => Err("null itemIdentifier"),
            (IdentifierKind::Strings, Value::String(s)) if !s.is_empty() => Ok(Cow::Borrowed(s)),
            (IdentifierKind::Strings, Value::String(_)) => Err("empty itemIdentifier"),
            (IdentifierKind::Strings, _) => Err("itemIdentifier is not a string"),
            (IdentifierKind::Kafka { partition }, Value::Object(o)) => {
                match o.get("partition") {
                    Some(Value::String(p)) if p == partition => {}
                    Some(Value::String(_)) => {
                        return Err("itemIdentifier partition is not the batch's partition")
                    }
                    _ => return Err("itemIdentifier without a partition string"),
                }
                let offset = match o.get("offset") {
                    Some(Value::Number(n)) => n.as_i64(),
                    Some(Value::String(s)) => s.parse::<i64>().ok(),
                    _ => return Err("itemIdentifier without an offset"),
                };
                match offset {
                    Some(n) => Ok(Cow::Owned(n.to_string())),
                    None => Err("itemIdentifier offset is not an integer"),
                }
            }
            (IdentifierKind::Kafka { .. }, _) => {
                Err("itemIdentifier is not a Kafka {partition, offset} object")
            }
        }
    }
}

/// Reads `body` against the batch's string identifiers (sequence numbers or message ids, in batch
/// order): [`parse_as`] with [`IdentifierKind::Strings`].
pub fn parse<'a>(body: &[u8], identifiers: impl IntoIterator<Item = &'a str>) -> ItemFailures {
    parse_as(body, IdentifierKind::Strings, identifiers)
}

/// Reads `body` against the batch's identifiers (sequence numbers, message ids or Kafka offsets, in
/// batch order), named in responses as `kind` says. The identifiers are indexed once, and only when
/// the response names failures.
pub fn parse_as<'a>(
    body: &[u8],
    kind: IdentifierKind<'_>,
    identifiers: impl IntoIterator<Item = &'a str>,
) -> ItemFailures {
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
    let mut named: Vec<Cow<'_, str>> = Vec::with_capacity(failures.len());
    for item in failures {
        match kind.read(item) {
            Ok(id) => named.push(id),
            Err(why) => return ItemFailures::All(why),
        }
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
    for id in &named {
        match index.get(id.as_ref()) {
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

/// The `state` object of a tumbling-window response (`{"state":{…},"batchItemFailures":[…]}`).
/// A response without one (missing, null, not an object, or not JSON at all) is an error: AWS
/// counts it as a failed invocation.
pub fn window_state(body: &[u8]) -> Result<serde_json::Map<String, Value>, &'static str> {
    let mut value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => return Err("the response is not a JSON object with a state"),
    };
    match value.get_mut("state").map(Value::take) {
        Some(Value::Object(state)) => Ok(state),
        None | Some(Value::Null) => Err("the response has no state"),
        Some(_) => Err("the response's state is not an object"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_response_must_carry_a_state_object() {
        let state = window_state(br#"{"state":{"sum":"3"},"batchItemFailures":[]}"#).unwrap();
        assert_eq!(state.get("sum"), Some(&Value::from("3")));
        assert!(window_state(br#"{"state":{}}"#).unwrap().is_empty());
        for body in [
            "",
            "null",
            "{}",
            r#"{"batchItemFailures":[]}"#,
            r#"{"state":null}"#,
            r#"{"state":"x"}"#,
            r#"{"state":[1]}"#,
            "not json",
        ] {
            assert!(window_state(body.as_bytes()).is_err(), "{body}");
        }
    }

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

    fn k(body: &str) -> ItemFailures {
        parse_as(
            body.as_bytes(),
            IdentifierKind::Kafka {
                partition: "orders-3",
            },
            ["10", "20", "30"],
        )
    }

    #[test]
    fn kafka_identifiers_are_partition_and_offset_objects() {
        for body in [
            r#"{"batchItemFailures":[{"itemIdentifier":{"partition":"orders-3","offset":20}}]}"#,
            r#"{"batchItemFailures":[{"itemIdentifier":{"partition":"orders-3","offset":"20"}}]}"#,
            r#"{"batchItemFailures":[{"itemIdentifier":{"offset":20,"partition":"orders-3","extra":1}}]}"#,
        ] {
            assert_eq!(k(body), ItemFailures::Failed(vec![1]), "{body}");
        }
        assert_eq!(
            k(
                r#"{"batchItemFailures":[{"itemIdentifier":{"partition":"orders-3","offset":30}},{"itemIdentifier":{"partition":"orders-3","offset":"10"}},{"itemIdentifier":{"partition":"orders-3","offset":30}}]}"#
            ),
            ItemFailures::Failed(vec![0, 2])
        );
        // Complete success reads the same as for other sources.
        for body in ["", "null", "{}", r#"{"batchItemFailures":[]}"#] {
            assert_eq!(k(body), ItemFailures::None, "{body}");
        }
    }

    #[test]
    fn bad_kafka_identifiers_fail_the_whole_batch() {
        for body in [
            // The string form is not Kafka's identifier.
            r#"{"batchItemFailures":[{"itemIdentifier":"20"}]}"#,
            r#"{"batchItemFailures":[{"itemIdentifier":""}]}"#,
            r#"{"batchItemFailures":[{"itemIdentifier":null}]}"#,
            r#"{"batchItemFailures":[{"itemIdentifier":20}]}"#,
            r#"{"batchItemFailures":[{"ItemIdentifier":{"partition":"orders-3","offset":20}}]}"#,
            // Another partition, or none.
            r#"{"batchItemFailures":[{"itemIdentifier":{"partition":"orders-2","offset":20}}]}"#,
            r#"{"batchItemFailures":[{"itemIdentifier":{"partition":"orders","offset":20}}]}"#,
            r#"{"batchItemFailures":[{"itemIdentifier":{"partition":3,"offset":20}}]}"#,
            r#"{"batchItemFailures":[{"itemIdentifier":{"offset":20}}]}"#,
            // An offset not in the batch, or not an integer.
            r#"{"batchItemFailures":[{"itemIdentifier":{"partition":"orders-3","offset":21}}]}"#,
            r#"{"batchItemFailures":[{"itemIdentifier":{"partition":"orders-3","offset":-1}}]}"#,
            r#"{"batchItemFailures":[{"itemIdentifier":{"partition":"orders-3","offset":20.5}}]}"#,
            r#"{"batchItemFailures":[{"itemIdentifier":{"partition":"orders-3","offset":"x"}}]}"#,
            r#"{"batchItemFailures":[{"itemIdentifier":{"partition":"orders-3","offset":null}}]}"#,
            r#"{"batchItemFailures":[{"itemIdentifier":{"partition":"orders-3"}}]}"#,
            // One good identifier does not save a bad one.
            r#"{"batchItemFailures":[{"itemIdentifier":{"partition":"orders-3","offset":20}},{"itemIdentifier":{"partition":"orders-3","offset":99}}]}"#,
        ] {
            assert!(matches!(k(body), ItemFailures::All(_)), "{body}");
        }
    }

    #[test]
    fn the_kind_follows_the_event_format() {
        use crate::model::KafkaCluster;
        assert_eq!(
            IdentifierKind::of(&EventFormat::KINESIS),
            IdentifierKind::Strings
        );
        let f = EventFormat::kafka(&KafkaCluster::self_managed(&["a:9092"]), "orders", 3);
        assert_eq!(
            IdentifierKind::of(&f),
            IdentifierKind::Kafka {
                partition: "orders-3"
            }
        );
        // The object form is refused for string sources, as before.
        assert!(matches!(
            p(r#"{"batchItemFailures":[{"itemIdentifier":{"partition":"orders-3","offset":20}}]}"#),
            ItemFailures::All(_)
        ));
    }
}
