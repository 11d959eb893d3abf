//! The fields only one kind of source takes. Streams and Kafka: `StartingPosition` (+ its timestamp)
//! and AWS's stream error handling (`MaximumRetryAttempts`, `MaximumRecordAgeInSeconds`,
//! `BisectBatchOnFunctionError`, `DestinationConfig`; a `kafka://<topic>` destination for Kafka
//! only), and `TumblingWindowInSeconds` (Kinesis and DynamoDB Streams only). Queues:
//! `ScalingConfig`. All: `FunctionResponseTypes`. A field given to the wrong kind is
//! a problem naming AWS's rule; what only Kafka takes is read in [`super::kafka_parse`].

use super::mapping::FUTURE_SKEW_SECS;
use super::obj::{show, Obj};
use super::*;
use serde_yaml_ng::Value;
use std::time::UNIX_EPOCH;

/// The stream-only fields an SQS mapping refuses.
const STREAM_ONLY: [&str; 6] = [
    "StartingPosition",
    "StartingPositionTimestamp",
    "MaximumRetryAttempts",
    "MaximumRecordAgeInSeconds",
    "BisectBatchOnFunctionError",
    "DestinationConfig",
];

/// `ScalingConfig.MaximumConcurrency` (SQS only; `queue` says whether the source is one).
pub(super) fn scaling(m: &mut Obj<'_, '_>, queue: bool) -> Option<u32> {
    let max_concurrency = m.object("ScalingConfig").and_then(|mut sc| {
        let v = sc.int("MaximumConcurrency", 2, 1000, None, 0);
        sc.finish();
        (v > 0).then_some(v as u32)
    });
    if !queue && max_concurrency.is_some() {
        m.err("ScalingConfig", "is only supported for SQS sources".into());
    }
    max_concurrency
}

/// `TumblingWindowInSeconds`: 0 (off, the default) to 900 seconds, for Kinesis and DynamoDB
/// Streams; an SQS source (`queue`) refuses it by name.
pub(super) fn tumbling_window(m: &mut Obj<'_, '_>, queue: bool) -> Option<Duration> {
    if queue {
        if m.has("TumblingWindowInSeconds") {
            m.take("TumblingWindowInSeconds");
            m.err(
                "TumblingWindowInSeconds",
                "is not supported for SQS sources (AWS takes it for Kinesis and DynamoDB Streams only)".into(),
            );
        }
        return None;
    }
    let secs = m.int("TumblingWindowInSeconds", 0, 900, None, 0);
    (secs > 0).then(|| Duration::from_secs(secs as u64))
}

/// Reports each stream-only field an SQS mapping was given.
pub(super) fn refuse_stream_fields(m: &mut Obj<'_, '_>) {
    for field in STREAM_ONLY {
        if m.has(field) {
            m.take(field);
            m.err(
                field,
                "is not supported for SQS sources (failed messages return to the queue: use its redrive policy)".into(),
            );
        }
    }
}

/// StartingPosition (+ StartingPositionTimestamp) for a stream or Kafka source; `sources` names
/// the kind in the "is required" message ("stream sources", "Kafka sources").
pub(super) fn stream_starting_position(
    m: &mut Obj<'_, '_>,
    source: Option<&SourceArn>,
    now: SystemTime,
    sources: &str,
) -> Option<StartingPosition> {
    let timestamp = m.take("StartingPositionTimestamp").filter(|v| !v.is_null());
    let given = m.string("StartingPosition");
    let position = match given.as_deref() {
        None => {
            if !m.has_error_for("StartingPosition") {
                m.err(
                    "StartingPosition",
                    format!("is required for {sources} (TRIM_HORIZON | LATEST | AT_TIMESTAMP)"),
                );
            }
            None
        }
        Some("TRIM_HORIZON") => Some(StartingPosition::TrimHorizon),
        Some("LATEST") => Some(StartingPosition::Latest),
        Some("AT_TIMESTAMP") if matches!(source, Some(SourceArn::DynamoDb(_))) => {
            m.err(
                "StartingPosition",
                "AT_TIMESTAMP is not supported for DynamoDB Streams (use TRIM_HORIZON or LATEST)"
                    .into(),
            );
            None
        }
        Some("AT_TIMESTAMP") => match timestamp {
            Some(v) => starting_timestamp(m, v, now).map(StartingPosition::AtTimestamp),
            None => {
                m.err(
                    "StartingPositionTimestamp",
                    "is required when StartingPosition is AT_TIMESTAMP".into(),
                );
                None
            }
        },
        Some(other) => {
            m.err(
                "StartingPosition",
                format!("{other:?} is not one of TRIM_HORIZON, LATEST, AT_TIMESTAMP"),
            );
            None
        }
    };
    if timestamp.is_some()
        && given.as_deref() != Some("AT_TIMESTAMP")
        && !m.has_error_for("StartingPosition")
    {
        m.err(
            "StartingPositionTimestamp",
            "is only allowed with StartingPosition AT_TIMESTAMP".into(),
        );
    }
    position
}

/// `StartingPositionTimestamp`: epoch seconds (a fraction allowed) from 0 to [`FUTURE_SKEW_SECS`]
/// after `now` (AWS: "cannot be in the future"). Anything else, infinities and NaN included, is a
/// problem naming the value and the range, never a panic.
fn starting_timestamp(m: &mut Obj<'_, '_>, v: &Value, now: SystemTime) -> Option<SystemTime> {
    let max = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .saturating_add(FUTURE_SKEW_SECS);
    let range =
        format!("0..={max} (epoch seconds, at most {FUTURE_SKEW_SECS} s after the current time)");
    let Value::Number(n) = v else {
        m.err(
            "StartingPositionTimestamp",
            format!("{} must be a number in range {range}", show(v)),
        );
        return None;
    };
    let at = n
        .as_f64()
        .filter(|ts| ts.is_finite() && *ts >= 0.0 && *ts <= max as f64)
        .and_then(|ts| Duration::try_from_secs_f64(ts).ok())
        .and_then(|d| UNIX_EPOCH.checked_add(d));
    if at.is_none() {
        m.err(
            "StartingPositionTimestamp",
            format!("{} is out of range {range}", show(v)),
        );
    }
    at
}

/// AWS's stream error handling fields, for a stream or (`kafka`) a Kafka source. Only a Kafka
/// source takes a `kafka://<topic>` destination; the Kafka rules that need the source topic and the
/// retry cap are applied by [`super::kafka_parse`].
pub(super) fn stream_errors(m: &mut Obj<'_, '_>, kafka: bool) -> ErrorHandling {
    let kind = if kafka { "Kafka" } else { "stream" };
    let attempts = m.int("MaximumRetryAttempts", 0, 10_000, Some(-1), -1);
    let age = m.int("MaximumRecordAgeInSeconds", 60, 604_800, Some(-1), -1);
    let bisect = m.bool("BisectBatchOnFunctionError").unwrap_or(false);
    let report = response_types(m);
    let on_failure = m.object("DestinationConfig").and_then(|mut d| {
        let dest = d.object("OnFailure").and_then(|mut o| {
            let arn =
                o.required_string("Destination")
                    .and_then(|s| match DestinationArn::parse(&s) {
                        // AWS accepts standard queues only; a FIFO queue would need a group id.
                        Ok(a) if a.is_fifo_queue() => {
                            o.err(
                                "Destination",
                                format!("{s:?} is a FIFO queue: on-failure destinations of {kind} mappings must be standard queues (as in AWS)"),
                            );
                            None
                        }
                        Ok(DestinationArn::Kafka { .. }) if !kafka => {
                            o.err(
                                "Destination",
                                format!("{s:?} is a Kafka topic: only Kafka sources take kafka://<topic> destinations (as in AWS)"),
                            );
                            None
                        }
                        Ok(a) => Some(a),
                        Err(e) => {
                            o.err("Destination", e);
                            None
                        }
                    });
            o.finish();
            arn
        });
        d.finish();
        dest
    });
    ErrorHandling {
        max_retry_attempts: (attempts >= 0).then_some(attempts as u32),
        max_record_age: (age >= 0).then(|| Duration::from_secs(age as u64)),
        bisect_on_function_error: bisect,
        report_batch_item_failures: report,
        on_failure,
    }
}

/// `FunctionResponseTypes`: true when it lists ReportBatchItemFailures.
pub(super) fn response_types(m: &mut Obj<'_, '_>) -> bool {
    let mut report = false;
    match m.take("FunctionResponseTypes") {
        None | Some(Value::Null) => {}
        Some(Value::Sequence(items)) => {
            if items.len() > 1 {
                m.err("FunctionResponseTypes", "takes at most one item".into());
            }
            for item in items {
                match item.as_str() {
                    Some("ReportBatchItemFailures") => report = true,
                    _ => m.err(
                        "FunctionResponseTypes",
                        format!("{} is not ReportBatchItemFailures", show(item)),
                    ),
                }
            }
        }
        Some(v) => m.err(
            "FunctionResponseTypes",
            format!("{} must be a list", show(v)),
        ),
    }
    report
}
