//! Configuration: the typed, validated form of the YAML file. Mapping entries use AWS's
//! `CreateEventSourceMapping` field names, defaults and ranges (reference: esm-spec.md §2); sluice's own
//! process settings are the snake_case keys at the top level. [`load`] reads and validates a file and
//! returns every problem at once ([`ConfigErrors`]); validation is pure and does no AWS I/O.

mod arn;
mod mapping;
mod names;
mod obj;
mod parse;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub use crate::model::StartingPosition;
pub use arn::{DestinationArn, SourceArn};

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
    pub mappings: Vec<Mapping>,
}

/// Endpoint URL overrides per AWS service (emulators, LocalStack). Unset: the SDK's own resolution,
/// which honours AWS_ENDPOINT_URL and AWS_ENDPOINT_URL_<SERVICE>.
#[derive(Debug, Clone, Default)]
pub struct Endpoints {
    pub kinesis: Option<String>,
    pub dynamodbstreams: Option<String>,
    pub lambda: Option<String>,
    pub sqs: Option<String>,
    pub sns: Option<String>,
    pub s3: Option<String>,
}

/// One event source mapping.
#[derive(Debug, Clone)]
pub struct Mapping {
    /// Unique name: metric label, log field and checkpoint key. Defaults to the source alone
    /// ([`SourceArn::default_mapping_name`]), so editing the target keeps the mapping's progress.
    pub name: String,
    /// Names this mapping's checkpoints may have been written under before, most deliberate first:
    /// its `PreviousNames` in order, then, when `Name` is not given, the default name of earlier
    /// releases (`<resource_name>-<target label>`). Never holds `name`, another mapping's `name`, or a
    /// name that two mappings could claim. Checkpoints found under one of these and none under
    /// `name` belong to this mapping (docs/configuration.md, "Names and progress").
    pub legacy_names: Vec<String>,
    pub source: SourceArn,
    pub target: Target,
    pub batch_size: usize,
    pub batching_window: Duration,
    /// Streams only (SQS mappings carry TRIM_HORIZON, unused).
    pub starting_position: StartingPosition,
    /// `ScalingConfig.MaximumConcurrency` (SQS only): at most this many batches at once.
    pub max_concurrency: Option<u32>,
    pub enabled: bool,
    pub errors: ErrorHandling,
}

/// Where batches go.
#[derive(Debug, Clone)]
pub enum Target {
    /// `FunctionName`: a name, `name:alias`, or a function ARN.
    Lambda {
        function_name: String,
    },
    Http(HttpTarget),
}

#[derive(Debug, Clone)]
pub struct HttpTarget {
    pub url: String,
    pub headers: BTreeMap<String, String>,
    pub timeout: Duration,
}

/// AWS's stream error handling settings (esm-spec.md §2, §4).
#[derive(Debug, Clone, Default)]
pub struct ErrorHandling {
    /// `MaximumRetryAttempts`; `None` is AWS's -1 (retry until the record expires).
    pub max_retry_attempts: Option<u32>,
    /// `MaximumRecordAgeInSeconds`; `None` is AWS's -1 (no age limit).
    pub max_record_age: Option<Duration>,
    /// `BisectBatchOnFunctionError`.
    pub bisect_on_function_error: bool,
    /// `FunctionResponseTypes: [ReportBatchItemFailures]`.
    pub report_batch_item_failures: bool,
    /// `DestinationConfig.OnFailure.Destination`.
    pub on_failure: Option<DestinationArn>,
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
