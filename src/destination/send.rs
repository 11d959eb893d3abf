//! The AWS destinations: SQS SendMessage, SNS Publish, S3 PutObject. Each is addressed in its own
//! ARN's region (an SQS queue also in its ARN's account); an S3 bucket ARN names no region, so a
//! bucket is addressed in the mapping's region.

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;

use super::{Destination, FailureRecord};
use crate::config::DestinationArn;

pub enum AwsDestination {
    Sqs {
        client: aws_sdk_sqs::Client,
        queue_url: String,
    },
    Sns {
        client: aws_sdk_sns::Client,
        topic_arn: String,
    },
    S3 {
        client: aws_sdk_s3::Client,
        bucket: String,
    },
}

impl AwsDestination {
    /// Resolves the destination (for SQS: the queue URL, via GetQueueUrl). `clients` are the
    /// mapping's (its source's region); the destination uses the clients of its ARN's region.
    pub async fn connect(
        arn: &DestinationArn,
        clients: &crate::aws::Clients,
    ) -> Result<Self, String> {
        let clients = clients.for_arn(arn.arn());
        Ok(match arn {
            DestinationArn::Sqs { queue, account, .. } => {
                let out = clients
                    .sqs
                    .get_queue_url()
                    .queue_name(queue)
                    .queue_owner_aws_account_id(account)
                    .send()
                    .await
                    .map_err(|e| format!("GetQueueUrl {queue}: {}", crate::aws::error_text(&e)))?;
                AwsDestination::Sqs {
                    client: clients.sqs.clone(),
                    queue_url: out.queue_url().unwrap_or_default().to_string(),
                }
            }
            DestinationArn::Sns { arn } => AwsDestination::Sns {
                client: clients.sns.clone(),
                topic_arn: arn.clone(),
            },
            DestinationArn::S3 { bucket, .. } => AwsDestination::S3 {
                client: clients.s3.clone(),
                bucket: bucket.clone(),
            },
            DestinationArn::Kafka { uri, .. } => {
                return Err(format!(
                    "{uri}: a Kafka topic destination is produced to by its Kafka mapping (KafkaDestination)"
                ))
            }
        })
    }
}

#[async_trait]
impl Destination for AwsDestination {
    async fn send(&self, record: &FailureRecord) -> Result<(), String> {
        match self {
            AwsDestination::Sqs { client, queue_url } => client
                .send_message()
                .queue_url(queue_url)
                .message_body(record.metadata_json())
                .send()
                .await
                .map(|_| ())
                .map_err(|e| format!("SQS SendMessage: {}", crate::aws::error_text(&e))),
            AwsDestination::Sns { client, topic_arn } => client
                .publish()
                .topic_arn(topic_arn)
                .message(record.metadata_json())
                .send()
                .await
                .map(|_| ())
                .map_err(|e| format!("SNS Publish: {}", crate::aws::error_text(&e))),
            AwsDestination::S3 { client, bucket } => client
                .put_object()
                .bucket(bucket)
                .key(record.s3_key())
                .content_type("application/json")
                .body(ByteStream::from(record.with_payload_json().into_bytes()))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| format!("S3 PutObject: {}", crate::aws::error_text(&e))),
        }
    }
}
