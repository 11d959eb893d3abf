//! Configuration: the typed, validated form of the YAML file. Mapping entries use AWS's
//! `CreateEventSourceMapping` field names, defaults and ranges (reference: esm-spec.md §2); sluice's own
//! process settings are the snake_case keys at the top level. [`load`] reads and validates a file and
//! returns every problem at once ([`ConfigErrors`]); validation is pure and does no AWS I/O.
//!
//! The typed result ([`typed`]) is per source kind: a [`Mapping`]'s [`MappingSource`] is a Kinesis
//! or DynamoDB stream with [`StreamSettings`], an SQS queue with [`QueueSettings`], or a Kafka
//! topic with [`KafkaSettings`] ([`kafka`]). The parser is hand-written over `serde_yaml_ng::Value`
//! ([`obj`]) so that every message names its field path and AWS's rule: [`parse`] reads the process
//! settings, [`mapping`] one mapping's common fields, [`target`] its target, [`settings`] what only
//! streams or only queues take, [`kafka_parse`] a Kafka mapping, [`filter`] the `FilterCriteria`
//! of any mapping, [`names`] checks names across
//! mappings, [`coordination`] the lease-table section for several replicas.

mod arn;
mod coordination;
#[cfg(test)]
mod coordination_tests;
mod filter;
#[cfg(test)]
mod filter_tests;
mod kafka;
#[cfg(test)]
mod kafka_access_tests;
mod kafka_parse;
#[cfg(test)]
mod kafka_tests;
mod mapping;
mod names;
mod obj;
mod parse;
mod settings;
mod target;
#[cfg(test)]
mod tests;
mod typed;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub use crate::model::StartingPosition;
pub use arn::{
    DestinationArn, DynamoDbStreamArn, KinesisStreamArn, MskClusterArn, QueueArn, ResourceArn,
    SourceArn, KAFKA_DESTINATION_SCHEME,
};
pub use coordination::Coordination;
pub use kafka::{
    default_consumer_group, KafkaAccess, KafkaCluster, KafkaSasl, KafkaSettings, SaslMechanism,
    SecretRef, KAFKA_RETRY_CAP_WITH_DESTINATION, SELF_MANAGED_ACCOUNT,
    SELF_MANAGED_FALLBACK_REGION,
};
pub use typed::{
    Batching, ErrorHandling, HttpTarget, Mapping, MappingSource, QueueSettings, StreamSettings,
    Target,
};

/// Everything one sluice process runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// AWS region; `None` leaves it to the SDK's chain (AWS_REGION, profile, IMDS).
    pub region: Option<String>,
    pub endpoints: Endpoints,
    pub checkpoint_dir: PathBuf,
    pub admin_listen: SocketAddr,
    pub shutdown_grace: Duration,
    /// How often each stream mapping re-lists its shards to find new ones.
    pub shard_discovery_interval: Duration,
    /// Sent as `invokeIdentityArn` in stream events (AWS puts the mapping's execution role there).
    pub invoke_identity_arn: String,
    /// `max_in_flight_bytes`: the process-wide budget for record bytes held in memory (read pages,
    /// gathering batches, in-flight invocations); stream readers and SQS pollers wait on it.
    pub max_in_flight_bytes: u64,
    /// `coordination`: the lease table shared with other replicas. `None` (the key absent): a single
    /// replica owns every shard and keeps its checkpoints in `checkpoint_dir`.
    pub coordination: Option<Coordination>,
    pub mappings: Vec<Mapping>,
}

/// Endpoint URL overrides per AWS service (emulators, LocalStack). Unset: the SDK's own resolution,
/// which honours AWS_ENDPOINT_URL and AWS_ENDPOINT_URL_<SERVICE>.
#[derive(Debug, Clone, Default)]
pub struct Endpoints {
    pub kinesis: Option<String>,
    /// DynamoDB itself: the lease table of `coordination`.
    pub dynamodb: Option<String>,
    pub dynamodbstreams: Option<String>,
    pub lambda: Option<String>,
    pub sqs: Option<String>,
    pub sns: Option<String>,
    pub s3: Option<String>,
    /// Secrets Manager (Kafka mappings' secrets).
    pub secretsmanager: Option<String>,
    /// Amazon MSK (`kafka:GetBootstrapBrokers`).
    pub kafka: Option<String>,
}

/// Every problem found in a configuration, one per line, each naming the field path.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct ConfigErrors(pub Vec<String>);

/// Reads and validates the file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors(vec![format!("{}: cannot read: {e}", path.display())]))?;
    parse_str(&text)
}

/// Validates YAML text; pure.
pub fn parse_str(text: &str) -> Result<Config, ConfigErrors> {
    parse::parse(text)
}
