//! ARN parsing for the resources a mapping names: its event source and its on-failure destination.

use std::fmt;

/// A Kinesis stream: `arn:<partition>:kinesis:<region>:<account>:stream/<name>`.
#[derive(Debug, Clone, PartialEq)]
pub struct KinesisStreamArn {
    pub arn: String,
    pub region: String,
    pub account: String,
    pub stream: String,
}

/// A DynamoDB stream: `arn:<partition>:dynamodb:<region>:<account>:table/<table>/stream/<label>`.
#[derive(Debug, Clone, PartialEq)]
pub struct DynamoDbStreamArn {
    pub arn: String,
    pub region: String,
    pub account: String,
    pub table: String,
    /// The stream label (a timestamp such as `2015-05-11T21:21:33.291`): a new stream of the
    /// same table (re-enabled, or the table recreated) has a new label and new shards.
    pub label: String,
}

/// An SQS queue: `arn:<partition>:sqs:<region>:<account>:<queue>`; FIFO when the name ends in `.fifo`.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueArn {
    pub arn: String,
    pub region: String,
    pub account: String,
    pub queue: String,
    pub fifo: bool,
}

/// What every event source ARN tells, whatever its service: the accessors [`SourceArn`] and
/// [`super::MappingSource`] share.
pub trait ResourceArn {
    fn arn(&self) -> &str;
    fn region(&self) -> &str;
    fn account(&self) -> &str;
    /// The stream, table or queue name, for default mapping names and logs.
    fn resource_name(&self) -> &str;
    /// A mapping's default `Name`: the source alone, so that editing the target keeps the
    /// mapping's checkpoints. Kinesis: `<stream>`; SQS: `<queue>`; DynamoDB:
    /// `<table>/stream/<label>` (the label tells a table's successive streams apart, whose shards
    /// share nothing).
    fn default_mapping_name(&self) -> String {
        self.resource_name().to_string()
    }
}

impl ResourceArn for KinesisStreamArn {
    fn arn(&self) -> &str {
        &self.arn
    }
    fn region(&self) -> &str {
        &self.region
    }
    fn account(&self) -> &str {
        &self.account
    }
    fn resource_name(&self) -> &str {
        &self.stream
    }
}

impl ResourceArn for DynamoDbStreamArn {
    fn arn(&self) -> &str {
        &self.arn
    }
    fn region(&self) -> &str {
        &self.region
    }
    fn account(&self) -> &str {
        &self.account
    }
    fn resource_name(&self) -> &str {
        &self.table
    }
    fn default_mapping_name(&self) -> String {
        format!("{}/stream/{}", self.table, self.label)
    }
}

impl ResourceArn for QueueArn {
    fn arn(&self) -> &str {
        &self.arn
    }
    fn region(&self) -> &str {
        &self.region
    }
    fn account(&self) -> &str {
        &self.account
    }
    fn resource_name(&self) -> &str {
        &self.queue
    }
}

/// A parsed event source ARN, one variant per supported service.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceArn {
    Kinesis(KinesisStreamArn),
    DynamoDb(DynamoDbStreamArn),
    Sqs(QueueArn),
}

impl SourceArn {
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts = split(s)?;
        match parts.service {
            "kinesis" => {
                let rest = parts.resource.strip_prefix("stream/").ok_or_else(|| {
                    format!("{s:?} is not a Kinesis stream ARN (expected ...:stream/<name>)")
                })?;
                if rest.contains("/consumer/") {
                    return Err(format!(
                        "{s:?} is a stream consumer ARN: enhanced fan-out is not supported yet; use the stream ARN"
                    ));
                }
                if rest.is_empty() || rest.contains('/') {
                    return Err(format!("{s:?} has no valid stream name"));
                }
                Ok(SourceArn::Kinesis(KinesisStreamArn {
                    arn: s.to_string(),
                    region: parts.region.to_string(),
                    account: parts.account.to_string(),
                    stream: rest.to_string(),
                }))
            }
            "dynamodb" => {
                let (table, label) = parts
                    .resource
                    .strip_prefix("table/")
                    .and_then(|r| r.split_once("/stream/"))
                    .ok_or_else(|| format!("{s:?} is not a DynamoDB stream ARN (expected ...:table/<table>/stream/<label>)"))?;
                if table.is_empty() || label.is_empty() {
                    return Err(format!("{s:?} has no valid table name or stream label"));
                }
                Ok(SourceArn::DynamoDb(DynamoDbStreamArn {
                    arn: s.to_string(),
                    region: parts.region.to_string(),
                    account: parts.account.to_string(),
                    table: table.to_string(),
                    label: label.to_string(),
                }))
            }
            "sqs" if !parts.resource.is_empty() && !parts.resource.contains('/') => {
                Ok(SourceArn::Sqs(QueueArn {
                    arn: s.to_string(),
                    region: parts.region.to_string(),
                    account: parts.account.to_string(),
                    queue: parts.resource.to_string(),
                    fifo: parts.resource.ends_with(".fifo"),
                }))
            }
            other => Err(format!(
                "{s:?}: source service {other:?} is not supported (supported: kinesis, dynamodb, sqs)"
            )),
        }
    }

    /// The parts every service's ARN has.
    pub fn resource(&self) -> &dyn ResourceArn {
        match self {
            SourceArn::Kinesis(a) => a,
            SourceArn::DynamoDb(a) => a,
            SourceArn::Sqs(a) => a,
        }
    }

    pub fn arn(&self) -> &str {
        self.resource().arn()
    }

    /// The stream, table or queue name, for default mapping names and logs.
    pub fn resource_name(&self) -> &str {
        self.resource().resource_name()
    }

    /// A mapping's default `Name` ([`ResourceArn::default_mapping_name`]).
    pub fn default_mapping_name(&self) -> String {
        self.resource().default_mapping_name()
    }

    pub fn region(&self) -> &str {
        self.resource().region()
    }

    pub fn account(&self) -> &str {
        self.resource().account()
    }

    /// SQS sources are queues; the others are streams with shards.
    pub fn is_queue(&self) -> bool {
        matches!(self, SourceArn::Sqs(_))
    }

    pub fn is_fifo(&self) -> bool {
        matches!(self, SourceArn::Sqs(QueueArn { fifo: true, .. }))
    }
}

/// An on-failure destination: an SQS queue, an SNS topic or an S3 bucket.
#[derive(Debug, Clone, PartialEq)]
pub enum DestinationArn {
    Sqs {
        arn: String,
        account: String,
        queue: String,
    },
    Sns {
        arn: String,
    },
    S3 {
        arn: String,
        bucket: String,
    },
}

impl DestinationArn {
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts = split(s)?;
        match parts.service {
            "sqs" if !parts.resource.is_empty() => Ok(DestinationArn::Sqs {
                arn: s.to_string(),
                account: parts.account.to_string(),
                queue: parts.resource.to_string(),
            }),
            "sns" if !parts.resource.is_empty() => Ok(DestinationArn::Sns { arn: s.to_string() }),
            "s3" if !parts.resource.is_empty() && !parts.resource.contains('/') => {
                Ok(DestinationArn::S3 {
                    arn: s.to_string(),
                    bucket: parts.resource.to_string(),
                })
            }
            _ => Err(format!(
                "{s:?} is not an SQS queue, SNS topic or S3 bucket ARN"
            )),
        }
    }

    /// An SQS FIFO queue (its name ends in `.fifo`).
    pub fn is_fifo_queue(&self) -> bool {
        matches!(self, DestinationArn::Sqs { queue, .. } if queue.ends_with(".fifo"))
    }

    pub fn arn(&self) -> &str {
        match self {
            DestinationArn::Sqs { arn, .. }
            | DestinationArn::Sns { arn }
            | DestinationArn::S3 { arn, .. } => arn,
        }
    }
}

impl fmt::Display for DestinationArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.arn())
    }
}

struct Parts<'a> {
    service: &'a str,
    region: &'a str,
    account: &'a str,
    resource: &'a str,
}

fn split(s: &str) -> Result<Parts<'_>, String> {
    let mut it = s.splitn(6, ':');
    let (prefix, partition, service, region, account, resource) = (
        it.next(),
        it.next(),
        it.next(),
        it.next(),
        it.next(),
        it.next(),
    );
    match (prefix, partition, service, region, account, resource) {
        (Some("arn"), Some(p), Some(svc), Some(r), Some(a), Some(res))
            if !p.is_empty() && !svc.is_empty() =>
        {
            Ok(Parts {
                service: svc,
                region: r,
                account: a,
                resource: res,
            })
        }
        _ => Err(format!(
            "{s:?} is not an ARN (arn:<partition>:<service>:<region>:<account>:<resource>)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinesis_stream_arn() {
        let a = SourceArn::parse("arn:aws:kinesis:eu-west-1:123456789012:stream/orders").unwrap();
        assert_eq!(a.resource_name(), "orders");
        assert_eq!(a.region(), "eu-west-1");
        assert!(SourceArn::parse("arn:aws:kinesis:eu-west-1:1:stream/s/consumer/c:1").is_err());
        let q = SourceArn::parse("arn:aws:sqs:eu-west-1:1:orders.fifo").unwrap();
        assert!(q.is_queue() && q.is_fifo());
        assert!(!SourceArn::parse("arn:aws:sqs:eu-west-1:1:q")
            .unwrap()
            .is_fifo());
        let d = SourceArn::parse("arn:aws:dynamodb:us-west-2:111122223333:table/TestTable/stream/2015-05-11T21:21:33.291").unwrap();
        assert_eq!(d.resource_name(), "TestTable");
        assert_eq!(
            d.default_mapping_name(),
            "TestTable/stream/2015-05-11T21:21:33.291"
        );
        assert_eq!(a.default_mapping_name(), "orders");
        assert_eq!(q.default_mapping_name(), "orders.fifo");
        assert_eq!(d.account(), "111122223333");
        assert!(SourceArn::parse("arn:aws:dynamodb:us-west-2:1:table/T").is_err());
        assert!(SourceArn::parse("orders").is_err());
    }

    #[test]
    fn destinations() {
        assert!(matches!(
            DestinationArn::parse("arn:aws:sqs:us-east-1:1:dlq").unwrap(),
            DestinationArn::Sqs { queue, .. } if queue == "dlq"
        ));
        assert!(matches!(
            DestinationArn::parse("arn:aws:sns:us-east-1:1:t").unwrap(),
            DestinationArn::Sns { .. }
        ));
        assert!(matches!(
            DestinationArn::parse("arn:aws:s3:::bucket").unwrap(),
            DestinationArn::S3 { bucket, .. } if bucket == "bucket"
        ));
        assert!(DestinationArn::parse("arn:aws:lambda:us-east-1:1:function:f").is_err());
        assert!(DestinationArn::parse("arn:aws:sqs:us-east-1:1:dlq.fifo")
            .unwrap()
            .is_fifo_queue());
        assert!(!DestinationArn::parse("arn:aws:sqs:us-east-1:1:dlq")
            .unwrap()
            .is_fifo_queue());
        assert!(!DestinationArn::parse("arn:aws:sns:us-east-1:1:t.fifo")
            .unwrap()
            .is_fifo_queue());
    }
}
