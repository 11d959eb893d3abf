//! On-failure destinations: when the retry policy gives up on records, an AWS-shaped failure record
//! (esm-spec.md §9) describing them goes to an SQS queue, an SNS topic or an S3 bucket (S3 also gets
//! the whole event as `payload`), or, for Kafka mappings, the failed records themselves go to a
//! Kafka topic of the source's cluster (`kafka.rs`). The worker retries a failed send until it succeeds: a batch is
//! never skipped without being recorded somewhere.

mod kafka;
mod record;
mod send;

pub use kafka::KafkaDestination;
pub use record::{BatchInfo, FailureInfo, FailureRecord, KafkaBatchInfo, ResponseContext};
pub use send::AwsDestination;

use async_trait::async_trait;

#[async_trait]
pub trait Destination: Send + Sync {
    async fn send(&self, record: &FailureRecord) -> Result<(), String>;
}
