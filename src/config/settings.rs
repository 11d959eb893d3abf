//! The fields only one kind of source takes. Streams and Kafka: `StartingPosition` (+ its timestamp)
//! and AWS's stream error handling (`MaximumRetryAttempts`, `MaximumRecordAgeInSeconds`,
//! `BisectBatchOnFunctionError`, `DestinationConfig`; a `kafka://<topic>` destination for Kafka
//! only), and `TumblingWindowInSeconds` (Kinesis and DynamoDB Streams only). Queues:
//! `ScalingConfig`. All: `FunctionResponseTypes`. Polled streams: `CaughtUpPollingIntervalMillis`
//! (sluice's addition). A field given to the wrong kind is a problem naming AWS's rule; what only
//! Kafka takes is read in [`super::kafka_parse`].

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

/// The `CaughtUpPollingIntervalMillis` range: at most 5 reads a second (Kinesis' per-shard limit,
/// shared by every polling consumer of the stream), at least one read every 10 s.
pub(super) const CAUGHT_UP_MILLIS: (i64, i64) = (200, 10_000);
/// DynamoDB Streams' floor: Lambda reads a shard at most 4 times a second, and so does sluice.
pub(super) const CAUGHT_UP_MILLIS_DYNAMODB: i64 = 250;

/// `CaughtUpPollingIntervalMillis` (sluice's addition): the wait between two reads of a caught-up
/// shard of a polled stream. Kinesis: 200–10000, default 1000 (Lambda's once a second); DynamoDB
/// Streams: 250–10000, default 250 (Lambda's 4 a second). Refused for SQS and for an enhanced
/// fan-out consumer (pushed its records, it polls nothing); an unparsed source takes Kinesis' rule.
pub(super) fn caught_up_interval(m: &mut Obj<'_, '_>, source: Option<&SourceArn>) -> Duration {
    const KEY: &str = "CaughtUpPollingIntervalMillis";
    let (min, max) = CAUGHT_UP_MILLIS;
    let refuse = match source {
        Some(SourceArn::Sqs(_)) => {
            Some("is only supported for Kinesis and DynamoDB Streams sources (it paces GetRecords)")
        }
        Some(SourceArn::Kinesis(k)) if k.consumer.is_some() => Some(
            "does not apply to an enhanced fan-out consumer ARN: SubscribeToShard pushes records as they arrive",
        ),
        _ => None,
    };
    if let Some(why) = refuse {
        if m.has(KEY) {
            m.take(KEY);
            m.err(KEY, why.into());
        }
        return Duration::from_secs(1);
    }
    let ms = match source {
        Some(SourceArn::DynamoDb(_)) => m.int_for(
            KEY,
            CAUGHT_UP_MILLIS_DYNAMODB,
            max,
            CAUGHT_UP_MILLIS_DYNAMODB,
            "for DynamoDB Streams (Lambda reads a shard at most 4 times a second)",
        ),
        _ => m.int(KEY, min, max, None, 1000),
    };
    Duration::from_millis(ms as u64)
}

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

/// `ParallelizationFactor`: how many batches of one shard are in flight at once (Kinesis and
/// DynamoDB Streams, 1–10, default 1; docs/parallelization.md). An SQS mapping refuses it by name
/// (`queue`) and gets 1; Kafka refuses it in [`super::kafka_parse`].
pub(super) fn parallelization_factor(m: &mut Obj<'_, '_>, queue: bool) -> u32 {
    stream_only_int(m, queue, "ParallelizationFactor", 1, 10, 1) as u32
}

/// `TumblingWindowInSeconds`: 0 (off, the default) to 900 seconds, for Kinesis and DynamoDB
/// Streams; an SQS source (`queue`) refuses it by name.
pub(super) fn tumbling_window(m: &mut Obj<'_, '_>, queue: bool) -> Option<Duration> {
    let secs = stream_only_int(m, queue, "TumblingWindowInSeconds", 0, 900, 0);
    (secs > 0).then(|| Duration::from_secs(secs as u64))
}

/// An integer field only stream sources take: `min..=max`, else `default`; an SQS source
/// (`queue`) refuses it by name and gets `default`.
fn stream_only_int(
    m: &mut Obj<'_, '_>,
    queue: bool,
    field: &str,
    min: i64,
    max: i64,
    default: i64,
) -> i64 {
    if queue {
        if m.has(field) {
            m.take(field);
            m.err(
                field,
                "is not supported for SQS sources (AWS takes it for Kinesis and DynamoDB Streams only)".into(),
            );
        }
        return default;
    }
    m.int(field, min, max, None, default)
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

#[cfg(test)]
mod tests {
    use super::super::parse::parse;
    use super::super::*;

    const KINESIS: &str = "arn:aws:kinesis:us-east-1:000000000000:stream/orders";
    const CONSUMER: &str =
        "arn:aws:kinesis:us-east-1:000000000000:stream/orders/consumer/sluice:1700000000";
    const DYNAMODB: &str = "arn:aws:dynamodb:us-east-1:0:table/t/stream/2024-01-01T00:00:00.000";

    fn mapping(arn: &str, extra: &str) -> Result<Config, ConfigErrors> {
        let start = if arn.contains(":sqs:") {
            ""
        } else {
            "    StartingPosition: TRIM_HORIZON\n"
        };
        parse(&format!(
            "mappings:\n  - EventSourceArn: {arn}\n    FunctionName: f\n{start}{extra}"
        ))
    }

    fn interval(arn: &str, extra: &str) -> Duration {
        match &mapping(arn, extra).unwrap().mappings[0].source {
            MappingSource::Kinesis(s) => s.caught_up_interval,
            MappingSource::DynamoDbStream(s) => s.caught_up_interval,
            other => panic!("a stream, not {other:?}"),
        }
    }

    fn problems(arn: &str, extra: &str) -> Vec<String> {
        mapping(arn, extra).expect_err("refused").0
    }

    #[test]
    fn caught_up_interval_defaults_to_lambdas_rate_per_service() {
        assert_eq!(interval(KINESIS, ""), Duration::from_secs(1));
        assert_eq!(interval(DYNAMODB, ""), Duration::from_millis(250));
        let set = "    CaughtUpPollingIntervalMillis: 200\n";
        assert_eq!(interval(KINESIS, set), Duration::from_millis(200));
        let set = "    CaughtUpPollingIntervalMillis: 10000\n";
        assert_eq!(interval(DYNAMODB, set), Duration::from_secs(10));
    }

    #[test]
    fn caught_up_interval_out_of_range_names_field_value_and_range() {
        let key = "mappings[0].CaughtUpPollingIntervalMillis";
        for (arn, v, want) in [
            (KINESIS, "199", format!("{key}: 199 is out of range 200..=10000")),
            (KINESIS, "10001", format!("{key}: 10001 is out of range 200..=10000")),
            (KINESIS, "0.5", format!("{key}: 0.5 is not a whole number in range 200..=10000")),
            (
                DYNAMODB,
                "200",
                format!("{key}: 200 is out of range 250..=10000 for DynamoDB Streams (Lambda reads a shard at most 4 times a second)"),
            ),
        ] {
            let errs = problems(arn, &format!("    CaughtUpPollingIntervalMillis: {v}\n"));
            assert_eq!(errs, [want], "{arn} {v}");
        }
    }

    #[test]
    fn caught_up_interval_is_refused_where_nothing_is_polled() {
        let set = "    CaughtUpPollingIntervalMillis: 500\n";
        let errs = problems(CONSUMER, set);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("mappings[0].CaughtUpPollingIntervalMillis: does not apply to an enhanced fan-out consumer ARN"),
            "{errs:?}"
        );
        let errs = problems("arn:aws:sqs:us-east-1:0:q", set);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with(
                "mappings[0].CaughtUpPollingIntervalMillis: is only supported for Kinesis and DynamoDB Streams"
            ),
            "{errs:?}"
        );
    }

    #[test]
    fn a_consumer_arn_is_a_kinesis_mapping_on_its_stream() {
        let c = mapping(CONSUMER, "").unwrap();
        let m = &c.mappings[0];
        let MappingSource::Kinesis(k) = &m.source else {
            panic!("a Kinesis mapping")
        };
        assert_eq!(k.stream.arn, KINESIS);
        assert_eq!(k.stream.consumer.as_deref(), Some(CONSUMER));
        assert_eq!(
            m.source_arn(),
            KINESIS,
            "events and failure records name the stream"
        );
        assert_eq!(
            m.name, "orders",
            "a fan-out mapping keeps its stream's checkpoints"
        );
    }
}
