//! What a filter sees of a record (esm-spec.md §7): its entry in the function's event
//! (`Record.event`), decoded once, with the payload opened up:
//! - Kinesis: the `kinesis` object's fields (`partitionKey`, `sequenceNumber`, `data`, …) lifted to
//!   the top level beside `eventSource`, `eventID`, … as AWS presents them to filters, `data`
//!   base64-decoded and parsed as JSON;
//! - DynamoDB Streams: the entry as it is (`eventName`, `dynamodb` with typed AttributeValue JSON);
//! - SQS: the entry with `body` parsed when it is JSON (else it stays a string);
//! - Kafka: the entry with `value` base64-decoded and parsed as JSON (it must be UTF-8).
//!
//! A Kinesis `data` or Kafka `value` that is not JSON becomes [`Json::Opaque`]: patterns on it
//! never match, so only patterns on the metadata can.

use base64::Engine;

use super::json::Json;

/// Which source's entry a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Kinesis,
    DynamoDb,
    Sqs,
    Kafka,
}

/// The record's filter view; `None` when its entry is not a JSON object (never for entries sluice
/// encodes).
pub fn view(kind: SourceKind, entry: &[u8]) -> Option<Json> {
    let mut json = Json::parse(entry)?;
    let top = json.as_obj_mut()?;
    match kind {
        SourceKind::DynamoDb => {}
        SourceKind::Kinesis => {
            if let Some(Json::Obj(kinesis)) = top.remove("kinesis") {
                for (k, v) in kinesis {
                    top.insert(k, v);
                }
            }
            if let Some(data) = top.get_mut("data") {
                *data = decoded(data);
            }
        }
        SourceKind::Sqs => {
            if let Some(body) = top.get_mut("body") {
                if let Some(parsed) = str_of(body).and_then(|s| Json::parse(s.as_bytes())) {
                    *body = parsed;
                }
            }
        }
        SourceKind::Kafka => {
            if let Some(value) = top.get_mut("value") {
                *value = decoded(value);
            }
        }
    }
    Some(json)
}

fn str_of(v: &Json) -> Option<&str> {
    match v {
        Json::Str(s) => Some(s),
        _ => None,
    }
}

/// A base64 string's bytes parsed as JSON (UTF-8 is required by JSON parsing), else opaque. A
/// value that is not a string (a Kafka record without a value has none) stays as it is.
fn decoded(v: &Json) -> Json {
    match str_of(v) {
        Some(s) => base64::engine::general_purpose::STANDARD
            .decode(s)
            .ok()
            .and_then(|bytes| Json::parse(&bytes))
            .unwrap_or(Json::Opaque),
        None => v.clone(),
    }
}
