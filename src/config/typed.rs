//! The typed form of one event source mapping. What only a stream, a queue or a Kafka topic has
//! lives in that kind's settings ([`MappingSource`]), so an invalid combination cannot be built: an
//! SQS mapping has no starting position, retry budget or on-failure destination, and a stream
//! mapping has no `MaximumConcurrency`. The few values many call sites need whatever the kind have
//! accessors on [`Mapping`]. Kafka's settings are in [`super::kafka`].

use std::collections::BTreeMap;
use std::time::Duration;

use super::arn::{DestinationArn, DynamoDbStreamArn, KinesisStreamArn, QueueArn, ResourceArn};
use super::kafka::KafkaSettings;
use crate::filter::FilterCriteria;
use crate::model::StartingPosition;

/// One event source mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapping {
    /// Unique name: metric label, log field and checkpoint key. Defaults to the source alone
    /// ([`ResourceArn::default_mapping_name`]), so editing the target keeps the mapping's progress.
    pub name: String,
    /// Names this mapping's checkpoints may have been written under before, most deliberate first:
    /// its `PreviousNames` in order, then, when `Name` is not given, the default name of earlier
    /// releases (`<resource_name>-<target label>`). Never holds `name`, another mapping's `name`, or a
    /// name that two mappings could claim. Checkpoints found under one of these and none under
    /// `name` belong to this mapping (docs/configuration.md, "Names and progress").
    pub legacy_names: Vec<String>,
    pub enabled: bool,
    pub target: Target,
    pub batching: Batching,
    /// What is read, with the settings only that kind of source has.
    pub source: MappingSource,
    /// `FilterCriteria`, parsed: only records matching one of its patterns are sent (every
    /// record when `None`). See [`crate::filter`].
    pub filter_criteria: Option<FilterCriteria>,
}

/// How records are gathered into one invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// `BatchSize`: at most this many records per invocation.
    pub batch_size: usize,
    /// `MaximumBatchingWindowInSeconds`: how long to gather records before invoking.
    pub window: Duration,
}

/// The event source and what only its kind has.
#[derive(Debug, Clone, PartialEq)]
pub enum MappingSource {
    Kinesis(StreamSettings<KinesisStreamArn>),
    DynamoDbStream(StreamSettings<DynamoDbStreamArn>),
    Sqs(QueueSettings),
    /// One topic of a self-managed Kafka or Amazon MSK cluster, read through a consumer group.
    Kafka(KafkaSettings),
}

/// A stream source (Kinesis, DynamoDB Streams): sharded, read in order from a starting position,
/// failed batches retried under AWS's stream error handling.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSettings<A> {
    /// The stream's ARN parts.
    pub stream: A,
    pub starting_position: StartingPosition,
    pub errors: ErrorHandling,
    /// `CaughtUpPollingIntervalMillis` (sluice's addition): how long a caught-up shard waits
    /// between reads (Kinesis: 1 s, DynamoDB Streams: 250 ms, as Lambda polls). Unused by an
    /// enhanced fan-out mapping, which is pushed its records.
    pub caught_up_interval: Duration,
    /// `ParallelizationFactor` (1–10): batches of one shard in flight at once, in lanes by key.
    pub parallelization_factor: u32,
    /// `TumblingWindowInSeconds` (1–900); `None` when 0 or absent (no windows).
    pub tumbling_window: Option<Duration>,
}

/// An SQS source: failed messages return to the queue (its redrive policy moves poison messages).
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSettings {
    /// The queue's ARN parts.
    pub queue: QueueArn,
    /// `ScalingConfig.MaximumConcurrency`: at most this many batches at once.
    pub max_concurrency: Option<u32>,
    /// `FunctionResponseTypes: [ReportBatchItemFailures]`.
    pub report_batch_item_failures: bool,
}

/// AWS's stream error handling settings (esm-spec.md §2, §4), for streams and Kafka.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ErrorHandling {
    /// `MaximumRetryAttempts`; `None` is AWS's -1 (retry until the record expires).
    pub max_retry_attempts: Option<u32>,
    /// `MaximumRecordAgeInSeconds`; `None` is AWS's -1 (no age limit).
    pub max_record_age: Option<Duration>,
    /// `BisectBatchOnFunctionError`.
    pub bisect_on_function_error: bool,
    /// `FunctionResponseTypes: [ReportBatchItemFailures]`.
    pub report_batch_item_failures: bool,
    /// `DestinationConfig.OnFailure.Destination` (a `kafka://<topic>` only on Kafka mappings).
    pub on_failure: Option<DestinationArn>,
}

/// Where batches go.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// `FunctionName`: a name, `name:alias`, or a function ARN.
    Lambda {
        function_name: String,
    },
    Http(HttpTarget),
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpTarget {
    pub url: String,
    pub headers: BTreeMap<String, String>,
    pub timeout: Duration,
}

impl Target {
    /// A short, bounded description for logs and default mapping names.
    pub fn label(&self) -> String {
        match self {
            Target::Lambda { function_name } => function_name
                .rsplit(":function:")
                .next()
                .unwrap_or(function_name)
                .to_string(),
            Target::Http(h) => h.url.clone(),
        }
    }
}

impl MappingSource {
    /// The parts every source's ARN has (a Kafka source: see [`KafkaSettings`]'s [`ResourceArn`]).
    pub fn resource(&self) -> &dyn ResourceArn {
        match self {
            MappingSource::Kinesis(s) => &s.stream,
            MappingSource::DynamoDbStream(s) => &s.stream,
            MappingSource::Sqs(q) => &q.queue,
            MappingSource::Kafka(k) => k,
        }
    }

    /// The `EventSourceArn`; empty for a self-managed Kafka cluster, which has none.
    pub fn arn(&self) -> &str {
        self.resource().arn()
    }

    /// The region that serves the mapping (a self-managed Kafka cluster: [`KafkaSettings::region`]).
    pub fn region(&self) -> &str {
        self.resource().region()
    }

    /// The source's account (a self-managed Kafka cluster: `000000000000`).
    pub fn account(&self) -> &str {
        self.resource().account()
    }

    /// The stream, table, queue or topic name.
    pub fn resource_name(&self) -> &str {
        self.resource().resource_name()
    }

    /// SQS sources are queues; the others are streams with shards or Kafka topics.
    pub fn is_queue(&self) -> bool {
        matches!(self, MappingSource::Sqs(_))
    }

    /// A Kafka topic (self-managed or MSK).
    pub fn is_kafka(&self) -> bool {
        matches!(self, MappingSource::Kafka(_))
    }

    /// A Kinesis or DynamoDB stream: read by shards under the supervisor, with checkpoints in the
    /// checkpoint store or the lease table. Not a queue, not a Kafka topic.
    pub fn has_shards(&self) -> bool {
        matches!(
            self,
            MappingSource::Kinesis(_) | MappingSource::DynamoDbStream(_)
        )
    }
}

impl Mapping {
    /// The `EventSourceArn`; empty for a self-managed Kafka cluster, which has none.
    pub fn source_arn(&self) -> &str {
        self.source.arn()
    }

    /// `FunctionResponseTypes: [ReportBatchItemFailures]`, for every kind of source.
    pub fn report_batch_item_failures(&self) -> bool {
        match &self.source {
            MappingSource::Kinesis(s) => s.errors.report_batch_item_failures,
            MappingSource::DynamoDbStream(s) => s.errors.report_batch_item_failures,
            MappingSource::Sqs(q) => q.report_batch_item_failures,
            MappingSource::Kafka(k) => k.errors.report_batch_item_failures,
        }
    }

    /// A stream or Kafka mapping's starting position; `None` for a queue, which has none. Having
    /// one does not make a mapping a shard stream: see [`MappingSource::has_shards`].
    pub fn starting_position(&self) -> Option<StartingPosition> {
        match &self.source {
            MappingSource::Kinesis(s) => Some(s.starting_position),
            MappingSource::DynamoDbStream(s) => Some(s.starting_position),
            MappingSource::Sqs(_) => None,
            MappingSource::Kafka(k) => Some(k.starting_position),
        }
    }

    /// `TumblingWindowInSeconds` of a Kinesis or DynamoDB Streams mapping; `None` when off (and
    /// for every other source, which takes none).
    pub fn tumbling_window(&self) -> Option<Duration> {
        match &self.source {
            MappingSource::Kinesis(s) => s.tumbling_window,
            MappingSource::DynamoDbStream(s) => s.tumbling_window,
            MappingSource::Sqs(_) | MappingSource::Kafka(_) => None,
        }
    }

    /// A stream or Kafka mapping's error handling; `None` for a queue (failed messages return to it).
    pub fn stream_errors(&self) -> Option<&ErrorHandling> {
        match &self.source {
            MappingSource::Kinesis(s) => Some(&s.errors),
            MappingSource::DynamoDbStream(s) => Some(&s.errors),
            MappingSource::Sqs(_) => None,
            MappingSource::Kafka(k) => Some(&k.errors),
        }
    }

    /// `ParallelizationFactor`: a shard's batches in flight at once (1 for SQS and Kafka, which
    /// refuse it).
    pub fn parallelization_factor(&self) -> usize {
        match &self.source {
            MappingSource::Kinesis(s) => s.parallelization_factor.max(1) as usize,
            MappingSource::DynamoDbStream(s) => s.parallelization_factor.max(1) as usize,
            MappingSource::Sqs(_) | MappingSource::Kafka(_) => 1,
        }
    }

    /// A Kafka mapping's settings; `None` for the other sources.
    pub fn kafka(&self) -> Option<&KafkaSettings> {
        match &self.source {
            MappingSource::Kafka(k) => Some(k),
            _ => None,
        }
    }

    /// A queue mapping's settings; `None` for a stream.
    pub fn queue(&self) -> Option<&QueueSettings> {
        match &self.source {
            MappingSource::Sqs(q) => Some(q),
            _ => None,
        }
    }
}

/// Mappings for unit tests elsewhere in the crate: named `m`, invoking the function `f`, enabled.
#[cfg(test)]
impl Mapping {
    fn for_tests(batching: Batching, source: MappingSource) -> Mapping {
        Mapping {
            name: "m".into(),
            legacy_names: Vec::new(),
            enabled: true,
            target: Target::Lambda {
                function_name: "f".into(),
            },
            batching,
            source,
            filter_criteria: None,
        }
    }

    /// On the Kinesis stream `s` (us-east-1, account 000000000000), from TRIM_HORIZON.
    pub(crate) fn kinesis_for_tests(
        batch_size: usize,
        window: Duration,
        errors: ErrorHandling,
    ) -> Mapping {
        let stream = KinesisStreamArn {
            arn: "arn:aws:kinesis:us-east-1:000000000000:stream/s".into(),
            region: "us-east-1".into(),
            account: "000000000000".into(),
            stream: "s".into(),
            consumer: None,
        };
        Mapping::for_tests(
            Batching { batch_size, window },
            MappingSource::Kinesis(StreamSettings {
                stream,
                starting_position: StartingPosition::TrimHorizon,
                errors,
                caught_up_interval: Duration::from_secs(1),
                parallelization_factor: 1,
                tumbling_window: None,
            }),
        )
    }

    /// On the DynamoDB stream `x` of table `t` (us-east-1, account 0), batches of 100, no window,
    /// default error handling.
    pub(crate) fn dynamodb_for_tests(starting_position: StartingPosition) -> Mapping {
        let stream = DynamoDbStreamArn {
            arn: "arn:aws:dynamodb:us-east-1:0:table/t/stream/x".into(),
            region: "us-east-1".into(),
            account: "0".into(),
            table: "t".into(),
            label: "x".into(),
        };
        Mapping::for_tests(
            Batching {
                batch_size: 100,
                window: Duration::ZERO,
            },
            MappingSource::DynamoDbStream(StreamSettings {
                stream,
                starting_position,
                errors: ErrorHandling::default(),
                caught_up_interval: Duration::from_millis(250),
                parallelization_factor: 1,
                tumbling_window: None,
            }),
        )
    }

    /// On the topic `t` of the self-managed cluster `localhost:9092` (region us-east-1, account
    /// 000000000000), group `sluice-m`, from TRIM_HORIZON; Kafka's batching defaults (100, 500 ms),
    /// default error handling, no authentication.
    pub(crate) fn kafka_for_tests() -> Mapping {
        use super::kafka::{KafkaAccess, KafkaCluster};
        Mapping::for_tests(
            Batching {
                batch_size: 100,
                window: Duration::from_millis(500),
            },
            MappingSource::Kafka(KafkaSettings {
                cluster: KafkaCluster::SelfManaged {
                    bootstrap_servers: vec!["localhost:9092".into()],
                },
                topic: "t".into(),
                consumer_group_id: "sluice-m".into(),
                starting_position: StartingPosition::TrimHorizon,
                errors: ErrorHandling::default(),
                access: KafkaAccess::default(),
                region: "us-east-1".into(),
                account: "000000000000".into(),
            }),
        )
    }
}
