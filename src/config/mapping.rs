//! One `mappings[i]` entry: AWS's `CreateEventSourceMapping` fields with their defaults and ranges
//! (esm-spec.md §2). This file reads the fields every source kind has (`Name`, `PreviousNames`,
//! `EventSourceArn`, batching, `Enabled`) and assembles the typed [`Mapping`]; the target is read by
//! [`super::target`], what only streams or only queues take by [`super::settings`]. A Kafka mapping
//! (`SelfManagedEventSource`, or an MSK `EventSourceArn`) is handed to [`super::kafka_parse`] once
//! its source is known (its `FilterCriteria` is read here, after it, by [`super::filter`]). Names
//! across mappings are checked afterwards, in [`super::names`].
//!
//! Fields are read in one fixed order whatever the source, so problems are listed in the same
//! order as they always were.

use super::filter::filter_criteria;
use super::kafka_parse::{self, KAFKA_ONLY};
use super::names::{Parsed, SourceId};
use super::obj::{show, Obj};
use super::settings::{
    caught_up_interval, parallelization_factor, refuse_stream_fields, response_types, scaling,
    stream_errors, stream_starting_position, tumbling_window,
};
use super::target::target;
use super::*;
use serde_yaml_ng::Value;

/// How far in the future `StartingPositionTimestamp` may be (clock skew between hosts).
pub(super) const FUTURE_SKEW_SECS: u64 = 60;

/// Reads `mappings[index]`; `None` when a problem leaves nothing to run (the problem is recorded).
/// `now` bounds `StartingPositionTimestamp`; `self_managed_region` is the region of a self-managed
/// Kafka cluster ([`super::kafka::KafkaSettings::region`]).
pub(super) fn mapping(
    m: &mut Obj<'_, '_>,
    index: usize,
    now: SystemTime,
    self_managed_region: &str,
) -> Option<Parsed> {
    let name = m.string("Name");
    if name.as_deref() == Some("") {
        m.err("Name", "must not be empty".into());
    }
    let previous = previous_names(m);
    let self_managed = m.has("SelfManagedEventSource");
    let arn = source_arn(m, self_managed);
    if self_managed || matches!(arn, Some(SourceArn::Msk(_))) {
        let msk = match arn {
            Some(SourceArn::Msk(a)) if !self_managed => Some(a),
            _ => None,
        };
        let head = kafka_parse::Head {
            index,
            name,
            previous,
            region: self_managed_region,
        };
        let mut parsed = kafka_parse::mapping(m, head, msk, now);
        let criteria = filter_criteria(m);
        if let Some(p) = &mut parsed {
            p.mapping.filter_criteria = criteria;
        }
        return parsed;
    }
    if arn.is_some() {
        refuse_kafka_fields(m);
    }
    let target = target(m);
    // A source that does not parse is read as a stream: its stream fields are still checked.
    let queue = arn.as_ref().is_some_and(SourceArn::is_queue);
    let batching = batching(m, arn.as_ref());
    let max_concurrency = scaling(m, queue);
    let starting_position = if queue {
        refuse_stream_fields(m);
        None
    } else {
        stream_starting_position(m, arn.as_ref(), now, "stream sources")
    };
    let parallelization_factor = parallelization_factor(m, queue);
    let enabled = m.bool("Enabled").unwrap_or(true);
    let caught_up_interval = caught_up_interval(m, arn.as_ref());
    let settings = if queue {
        Settings::Queue {
            report_batch_item_failures: response_types(m),
        }
    } else {
        Settings::Stream(stream_errors(m, false))
    };
    let filter_criteria = filter_criteria(m);
    let tumbling_window = tumbling_window(m, queue);
    if tumbling_window.is_some() && parallelization_factor > 1 {
        m.err(
            "TumblingWindowInSeconds",
            format!("cannot be used with ParallelizationFactor {parallelization_factor}: a window's state is carried per shard, so its invocations run one at a time (set ParallelizationFactor to 1)"),
        );
    }
    let (arn, target) = (arn?, target?);
    // The default name of earlier releases, under which an unnamed mapping's checkpoints were written.
    let old_default = format!("{}-{}", arn.resource_name(), target.label());
    let explicit_name = name.is_some();
    let name = name.unwrap_or_else(|| arn.default_mapping_name());
    let source_id = SourceId::arn(arn.arn());
    let source = match (arn, settings) {
        (SourceArn::Kinesis(stream), Settings::Stream(errors)) => {
            MappingSource::Kinesis(StreamSettings {
                stream,
                starting_position: starting_position?,
                errors,
                caught_up_interval,
                parallelization_factor,
                tumbling_window,
            })
        }
        (SourceArn::DynamoDb(stream), Settings::Stream(errors)) => {
            MappingSource::DynamoDbStream(StreamSettings {
                stream,
                starting_position: starting_position?,
                errors,
                caught_up_interval,
                parallelization_factor,
                tumbling_window,
            })
        }
        (
            SourceArn::Sqs(queue),
            Settings::Queue {
                report_batch_item_failures,
            },
        ) => MappingSource::Sqs(QueueSettings {
            queue,
            max_concurrency,
            report_batch_item_failures,
        }),
        // `settings` follows the ARN's kind (`queue` above); MSK went to `kafka_parse`.
        _ => return None,
    };
    Some(Parsed {
        index,
        explicit_name,
        previous,
        old_default: Some(old_default),
        source: source_id,
        explicit_group: false,
        mapping: Mapping {
            name,
            legacy_names: Vec::new(),
            enabled,
            target,
            batching,
            source,
            filter_criteria,
        },
    })
}

/// `EventSourceArn`, parsed; with `SelfManagedEventSource` it must be absent (a self-managed
/// cluster has no ARN) and `None` is returned.
fn source_arn(m: &mut Obj<'_, '_>, self_managed: bool) -> Option<SourceArn> {
    if self_managed {
        if m.has("EventSourceArn") {
            m.take("EventSourceArn");
            m.err(
                "EventSourceArn",
                "and SelfManagedEventSource are mutually exclusive: EventSourceArn names an Amazon MSK cluster, SelfManagedEventSource a self-managed Kafka cluster's bootstrap servers".into(),
            );
        }
        return None;
    }
    let arn = m.string("EventSourceArn");
    if arn.is_none() && !m.has_error_for("EventSourceArn") {
        m.err(
            "EventSourceArn",
            "is required (or SelfManagedEventSource for a self-managed Kafka cluster)".into(),
        );
    }
    arn.and_then(|s| match SourceArn::parse(&s) {
        Ok(a) => Some(a),
        Err(e) => {
            m.err("EventSourceArn", e);
            None
        }
    })
}

/// Reports each Kafka-only field a Kinesis, DynamoDB or SQS mapping was given.
fn refuse_kafka_fields(m: &mut Obj<'_, '_>) {
    for field in KAFKA_ONLY {
        if m.has(field) {
            m.take(field);
            m.err(
                field,
                "is only supported for Kafka sources (SelfManagedEventSource, or an Amazon MSK EventSourceArn)".into(),
            );
        }
    }
}

/// The settings read for the source's kind, before they meet its ARN.
enum Settings {
    Stream(ErrorHandling),
    Queue { report_batch_item_failures: bool },
}

/// `BatchSize` and `MaximumBatchingWindowInSeconds`, with the SQS rules: FIFO queues take at most
/// 10 and no window; standard queues need a window of at least 1 s for batches over 10.
fn batching(m: &mut Obj<'_, '_>, arn: Option<&SourceArn>) -> Batching {
    let queue = arn.is_some_and(SourceArn::is_queue);
    let fifo = arn.is_some_and(SourceArn::is_fifo);
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
    Batching {
        batch_size,
        window: Duration::from_secs(window as u64),
    }
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
