//! One `mappings[i]` entry: AWS's `CreateEventSourceMapping` fields with their defaults and ranges
//! (esm-spec.md §2), the target (`FunctionName` or sluice's `Http`), and the stream-only and
//! SQS-only rules. Names across mappings are checked afterwards, in [`super::names`].

use super::names::Parsed;
use super::obj::{show, Obj};
use super::*;
use serde_yaml_ng::Value;
use std::time::UNIX_EPOCH;

/// How far in the future `StartingPositionTimestamp` may be (clock skew between hosts).
pub(super) const FUTURE_SKEW_SECS: u64 = 60;

/// Reads `mappings[index]`; `None` when a problem leaves nothing to run (the problem is recorded).
/// `now` bounds `StartingPositionTimestamp`.
pub(super) fn mapping(m: &mut Obj<'_, '_>, index: usize, now: SystemTime) -> Option<Parsed> {
    let name = m.string("Name");
    if name.as_deref() == Some("") {
        m.err("Name", "must not be empty".into());
    }
    let previous = previous_names(m);
    let source = m
        .required_string("EventSourceArn")
        .and_then(|s| match SourceArn::parse(&s) {
            Ok(a) => Some(a),
            Err(e) => {
                m.err("EventSourceArn", e);
                None
            }
        });
    let target = target(m);
    let queue = source.as_ref().is_some_and(SourceArn::is_queue);
    let fifo = source.as_ref().is_some_and(SourceArn::is_fifo);
    let batch_size = if fifo {
        m.int_for("BatchSize", 1, 10, 10, "for FIFO queues")
    } else {
        m.int("BatchSize", 1, 10_000, None, if queue { 10 } else { 100 })
    } as usize;
    if fifo && m.has("MaximumBatchingWindowInSeconds") {
        m.err(
            "MaximumBatchingWindowInSeconds",
            "is not supported for FIFO queues".into(),
        );
    }
    let window = m.int("MaximumBatchingWindowInSeconds", 0, 300, None, 0);
    if queue && batch_size > 10 && window < 1 && !m.has_error_for("MaximumBatchingWindowInSeconds")
    {
        m.err(
            "BatchSize",
            format!("{batch_size} needs MaximumBatchingWindowInSeconds of at least 1 (AWS's rule for batches over 10)"),
        );
    }
    let max_concurrency = m.object("ScalingConfig").and_then(|mut sc| {
        let v = sc.int("MaximumConcurrency", 2, 1000, None, 0);
        sc.finish();
        (v > 0).then_some(v as u32)
    });
    if !queue && max_concurrency.is_some() {
        m.err("ScalingConfig", "is only supported for SQS sources".into());
    }
    let starting_position = if queue {
        for field in [
            "StartingPosition",
            "StartingPositionTimestamp",
            "MaximumRetryAttempts",
            "MaximumRecordAgeInSeconds",
            "BisectBatchOnFunctionError",
            "DestinationConfig",
        ] {
            if m.has(field) {
                m.take(field);
                m.err(
                    field,
                    "is not supported for SQS sources (failed messages return to the queue: use its redrive policy)".into(),
                );
            }
        }
        Some(StartingPosition::TrimHorizon)
    } else {
        stream_starting_position(m, source.as_ref(), now)
    };
    let enabled = m.bool("Enabled").unwrap_or(true);
    let errors = if queue {
        ErrorHandling {
            report_batch_item_failures: response_types(m),
            ..Default::default()
        }
    } else {
        error_handling(m)
    };
    let (source, target, starting_position) = (source?, target?, starting_position?);
    // The default name of earlier releases, under which an unnamed mapping's checkpoints were written.
    let old_default = format!("{}-{}", source.resource_name(), target.label());
    let explicit_name = name.is_some();
    let name = name.unwrap_or_else(|| source.default_mapping_name());
    Some(Parsed {
        index,
        explicit_name,
        previous,
        old_default,
        mapping: Mapping {
            name,
            legacy_names: Vec::new(),
            source,
            target,
            batch_size,
            batching_window: Duration::from_secs(window as u64),
            starting_position,
            max_concurrency,
            enabled,
            errors,
        },
    })
}

/// `PreviousNames` (sluice's addition): names this mapping ran under before, with their positions.
fn previous_names(m: &mut Obj<'_, '_>) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    match m.take("PreviousNames") {
        None | Some(Value::Null) => {}
        Some(Value::Sequence(items)) => {
            for (k, item) in items.iter().enumerate() {
                match item {
                    Value::String(s) if !s.is_empty() => out.push((k, s.clone())),
                    other => m.err(
                        &format!("PreviousNames[{k}]"),
                        format!("{} must be a non-empty string", show(other)),
                    ),
                }
            }
        }
        Some(other) => m.err(
            "PreviousNames",
            format!("{} must be a list of names", show(other)),
        ),
    }
    out
}

/// StartingPosition (+ StartingPositionTimestamp) for a stream source.
fn stream_starting_position(
    m: &mut Obj<'_, '_>,
    source: Option<&SourceArn>,
    now: SystemTime,
) -> Option<StartingPosition> {
    let timestamp = m.take("StartingPositionTimestamp").filter(|v| !v.is_null());
    let given = m.string("StartingPosition");
    let position = match given.as_deref() {
        None => {
            if !m.has_error_for("StartingPosition") {
                m.err(
                    "StartingPosition",
                    "is required for stream sources (TRIM_HORIZON | LATEST | AT_TIMESTAMP)".into(),
                );
            }
            None
        }
        Some("TRIM_HORIZON") => Some(StartingPosition::TrimHorizon),
        Some("LATEST") => Some(StartingPosition::Latest),
        Some("AT_TIMESTAMP") if matches!(source, Some(SourceArn::DynamoDb { .. })) => {
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

fn target(m: &mut Obj<'_, '_>) -> Option<Target> {
    let function = m.string("FunctionName");
    let http = m.object("Http").map(|mut h| {
        let url = h.url("Url");
        if url.is_none() && !h.has_error_for("Url") {
            h.err("Url", "is required".into());
        }
        let headers = h.string_map("Headers");
        let timeout = h.int("TimeoutSeconds", 1, 900, None, 30);
        h.finish();
        url.map(|url| HttpTarget {
            url,
            headers,
            timeout: Duration::from_secs(timeout as u64),
        })
    });
    match (function, http) {
        (Some(_), Some(_)) => {
            m.err(
                "FunctionName",
                "and Http are mutually exclusive: give one target".into(),
            );
            None
        }
        (Some(f), None) => {
            let valid = !f.is_empty()
                && f.len() <= 140
                && f.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_:$.".contains(c));
            if valid {
                Some(Target::Lambda { function_name: f })
            } else {
                m.err(
                    "FunctionName",
                    format!("{f:?} is not a function name, name:alias or function ARN"),
                );
                None
            }
        }
        (None, Some(h)) => h.map(Target::Http),
        (None, None) => {
            m.err(
                "FunctionName",
                "is required (or give an Http target)".into(),
            );
            None
        }
    }
}

fn error_handling(m: &mut Obj<'_, '_>) -> ErrorHandling {
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
                                format!("{s:?} is a FIFO queue: on-failure destinations of stream mappings must be standard queues (as in AWS)"),
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
fn response_types(m: &mut Obj<'_, '_>) -> bool {
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
