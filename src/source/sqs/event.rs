//! The SQS event record exactly as Lambda builds it (esm-spec.md §8): `messageId`, `receiptHandle`,
//! `body`, `attributes` (all strings), `messageAttributes` in Lambda's shape, `md5OfBody`,
//! `md5OfMessageAttributes`, `eventSource`, `eventSourceARN`, `awsRegion`.
//!
//! [`encode`] runs once per message received, so it writes the JSON by hand: the bytes serde_json
//! writes for the entry as a `serde_json::Value` (keys in sorted order, as its default `Map` keeps
//! them; the tests hold it to that byte for byte), into one buffer sized once, with no map and no
//! string copied on the way.

use aws_sdk_sqs::types::{Message, MessageAttributeValue};

use crate::source::json::write_str as json_str;

/// Serializes one message's event entry.
pub fn encode(m: &Message, queue_arn: &str, region: &str) -> Vec<u8> {
    let body = m.body().unwrap_or_default();
    let mut attributes: Vec<(&str, &str)> = m
        .attributes()
        .map(|a| a.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect())
        .unwrap_or_default();
    attributes.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut message_attributes: Vec<(&str, &MessageAttributeValue)> = m
        .message_attributes()
        .map(|a| a.iter().map(|(k, v)| (k.as_str(), v)).collect())
        .unwrap_or_default();
    message_attributes.sort_unstable_by(|a, b| a.0.cmp(b.0));

    let short = |s: Option<&str>| s.map_or(4, str::len);
    let mut size = 256
        + body.len()
        + short(m.message_id())
        + short(m.receipt_handle())
        + short(m.md5_of_body())
        + short(m.md5_of_message_attributes())
        + queue_arn.len()
        + region.len();
    size += attributes
        .iter()
        .map(|(k, v)| k.len() + v.len() + 6)
        .sum::<usize>();
    size += message_attributes
        .iter()
        .map(|(k, v)| k.len() + attribute_size(v))
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);

    out.extend_from_slice(br#"{"attributes":{"#);
    members(&mut out, &attributes, |out, v| json_str(out, v));
    out.extend_from_slice(br#"},"awsRegion":"#);
    json_str(&mut out, region);
    out.extend_from_slice(br#","body":"#);
    json_str(&mut out, body);
    out.extend_from_slice(br#","eventSource":"aws:sqs","eventSourceARN":"#);
    json_str(&mut out, queue_arn);
    out.extend_from_slice(br#","md5OfBody":"#);
    json_opt(&mut out, m.md5_of_body());
    if let Some(md5) = m.md5_of_message_attributes() {
        out.extend_from_slice(br#","md5OfMessageAttributes":"#);
        json_str(&mut out, md5);
    }
    out.extend_from_slice(br#","messageAttributes":{"#);
    members(&mut out, &message_attributes, |out, v| attribute(out, v));
    out.extend_from_slice(br#"},"messageId":"#);
    json_opt(&mut out, m.message_id());
    out.extend_from_slice(br#","receiptHandle":"#);
    json_opt(&mut out, m.receipt_handle());
    out.push(b'}');
    out
}

/// One message attribute in Lambda's shape, its keys sorted: `binaryListValues`, `binaryValue`
/// (when set), `dataType`, `stringListValues`, `stringValue` (when set).
fn attribute(out: &mut Vec<u8>, v: &MessageAttributeValue) {
    out.extend_from_slice(br#"{"binaryListValues":["#);
    for (i, b) in v.binary_list_values().iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        base64_str(out, b.as_ref());
    }
    out.push(b']');
    if let Some(b) = v.binary_value() {
        out.extend_from_slice(br#","binaryValue":"#);
        base64_str(out, b.as_ref());
    }
    out.extend_from_slice(br#","dataType":"#);
    json_str(out, v.data_type());
    out.extend_from_slice(br#","stringListValues":["#);
    for (i, s) in v.string_list_values().iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_str(out, s);
    }
    out.push(b']');
    if let Some(s) = v.string_value() {
        out.extend_from_slice(br#","stringValue":"#);
        json_str(out, s);
    }
    out.push(b'}');
}

/// About how many bytes [`attribute`] writes for `v` (a capacity hint, not a bound).
fn attribute_size(v: &MessageAttributeValue) -> usize {
    let b64 = |n: usize| n.div_ceil(3) * 4 + 3;
    96 + v.data_type().len()
        + v.string_value().map_or(0, |s| s.len() + 16)
        + v.binary_value().map_or(0, |b| b64(b.as_ref().len()) + 16)
        + v.string_list_values()
            .iter()
            .map(|s| s.len() + 3)
            .sum::<usize>()
        + v.binary_list_values()
            .iter()
            .map(|b| b64(b.as_ref().len()))
            .sum::<usize>()
}

fn base64_str(out: &mut Vec<u8>, data: &[u8]) {
    out.push(b'"');
    base64_simd::STANDARD.encode_append(data, out);
    out.push(b'"');
}

/// An object's members, `"name":value,…`, each value written by `value`.
fn members<V>(out: &mut Vec<u8>, entries: &[(&str, V)], value: impl Fn(&mut Vec<u8>, &V)) {
    for (i, (name, v)) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_str(out, name);
        out.push(b':');
        value(out, v);
    }
}

/// `s` as a JSON string, or `null`.
fn json_opt(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

#[cfg(test)]
#[path = "event_tests.rs"]
mod tests;
