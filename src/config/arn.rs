//! ARN parsing for the resources a mapping names: its event source (a Kinesis stream, DynamoDB
//! stream, SQS queue or Amazon MSK cluster) and its on-failure destination (an SQS queue, SNS topic,
//! S3 bucket, or, for Kafka mappings only, a Kafka topic written `kafka://<topic>`).

use std::fmt;

/// A Kinesis stream: `arn:<partition>:kinesis:<region>:<account>:stream/<name>`, or one of its
/// enhanced fan-out consumers, `...:stream/<name>/consumer/<consumer>:<timestamp>`: then `arn` is
/// the consumer's stream (listed, described and named in events as with polling) and `consumer`
/// the consumer ARN as given (read with SubscribeToShard).
#[derive(Debug, Clone, PartialEq)]
pub struct KinesisStreamArn {
    pub arn: String,
    pub region: String,
    pub account: String,
    pub stream: String,
    /// The stream consumer ARN of an enhanced fan-out mapping; `None`: polling.
    pub consumer: Option<String>,
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

/// An Amazon MSK cluster: `arn:<partition>:kafka:<region>:<account>:cluster/<name>/<uuid>`.
#[derive(Debug, Clone, PartialEq)]
pub struct MskClusterArn {
    pub arn: String,
    pub region: String,
    pub account: String,
    /// The cluster's name.
    pub cluster: String,
    /// The cluster's UUID suffix (`6357e0b2-0e6a-4b86-a0b4-70df934c2e31-5`).
    pub uuid: String,
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

/// The accessors of an ARN type with `arn`, `region` and `account` fields and the field that
/// names its resource.
macro_rules! arn_fields {
    ($name:ident) => {
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
            &self.$name
        }
    };
}

impl ResourceArn for KinesisStreamArn {
    arn_fields!(stream);
}

impl ResourceArn for DynamoDbStreamArn {
    arn_fields!(table);
    fn default_mapping_name(&self) -> String {
        format!("{}/stream/{}", self.table, self.label)
    }
}

impl ResourceArn for MskClusterArn {
    arn_fields!(cluster);
}

impl ResourceArn for QueueArn {
    arn_fields!(queue);
}

/// A parsed event source ARN, one variant per supported service.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceArn {
    Kinesis(KinesisStreamArn),
    DynamoDb(DynamoDbStreamArn),
    Sqs(QueueArn),
    /// An Amazon MSK cluster: a Kafka source (its topic is in `Topics`).
    Msk(MskClusterArn),
}

impl SourceArn {
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts = split(s)?;
        match parts.service {
            "kinesis" => {
                let rest = parts.resource.strip_prefix("stream/").ok_or_else(|| {
                    format!("{s:?} is not a Kinesis stream ARN (expected ...:stream/<name>)")
                })?;
                let (stream, consumer) = match rest.split_once("/consumer/") {
                    Some((stream, c)) => {
                        // `<consumer>:<creation timestamp>`, as RegisterStreamConsumer returns it.
                        let ok = c.split_once(':').is_some_and(|(name, ts)| {
                            !name.is_empty()
                                && !name.contains('/')
                                && !ts.is_empty()
                                && ts.bytes().all(|b| b.is_ascii_digit())
                        });
                        if !ok {
                            return Err(format!(
                                "{s:?} is not a stream consumer ARN (expected ...:stream/<name>/consumer/<consumer>:<timestamp>)"
                            ));
                        }
                        (stream, Some(s.to_string()))
                    }
                    None => (rest, None),
                };
                if stream.is_empty() || stream.contains('/') {
                    return Err(format!("{s:?} has no valid stream name"));
                }
                let arn = match consumer {
                    // The consumer ARN up to `/consumer/`: the stream's own ARN.
                    Some(_) => s[..s.len() - rest.len() + stream.len()].to_string(),
                    None => s.to_string(),
                };
                Ok(SourceArn::Kinesis(KinesisStreamArn {
                    arn,
                    region: parts.region.to_string(),
                    account: parts.account.to_string(),
                    stream: stream.to_string(),
                    consumer,
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
            "kafka" => {
                let (cluster, uuid) = parts
                    .resource
                    .strip_prefix("cluster/")
                    .and_then(|r| r.split_once('/'))
                    .filter(|(c, u)| !c.is_empty() && !u.is_empty() && !u.contains('/'))
                    .ok_or_else(|| {
                        format!("{s:?} is not an MSK cluster ARN (expected ...:cluster/<name>/<uuid>)")
                    })?;
                Ok(SourceArn::Msk(MskClusterArn {
                    arn: s.to_string(),
                    region: parts.region.to_string(),
                    account: parts.account.to_string(),
                    cluster: cluster.to_string(),
                    uuid: uuid.to_string(),
                }))
            }
            other => Err(format!(
                "{s:?}: source service {other:?} is not supported (supported: kinesis, dynamodb, sqs, kafka)"
            )),
        }
    }

    /// The parts every service's ARN has.
    pub fn resource(&self) -> &dyn ResourceArn {
        match self {
            SourceArn::Kinesis(a) => a,
            SourceArn::DynamoDb(a) => a,
            SourceArn::Sqs(a) => a,
            SourceArn::Msk(a) => a,
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

/// The scheme of a Kafka topic on-failure destination (`kafka://<topic>`), as AWS writes it.
pub const KAFKA_DESTINATION_SCHEME: &str = "kafka://";

/// An on-failure destination: an SQS queue, an SNS topic, an S3 bucket, or (Kafka mappings only) a
/// topic of the source's cluster.
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
    /// `kafka://<topic>`: a topic of the source's own cluster (Kafka mappings only; the mapping
    /// parser refuses it elsewhere).
    Kafka {
        /// As written: `kafka://<topic>`.
        uri: String,
        topic: String,
    },
}

impl DestinationArn {
    /// An SQS, SNS or S3 ARN, or `kafka://<topic>` (a Kafka topic name: 1 to 249 characters of
    /// `a-z A-Z 0-9 . _ -`, not `.` or `..`).
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(topic) = s.strip_prefix(KAFKA_DESTINATION_SCHEME) {
            return match topic_problem(topic) {
                None => Ok(DestinationArn::Kafka {
                    uri: s.to_string(),
                    topic: topic.to_string(),
                }),
                Some(why) => Err(format!("{s:?}: the topic {why}")),
            };
        }
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
                "{s:?} is not an SQS queue, SNS topic or S3 bucket ARN (or, for Kafka sources, kafka://<topic>)"
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
            | DestinationArn::S3 { arn, .. }
            | DestinationArn::Kafka { uri: arn, .. } => arn,
        }
    }
}

/// Kafka's topic-name rules, as a problem to append to the name: `None` when `topic` is 1 to 249
/// characters of `a-z A-Z 0-9 . _ -` and not `.` or `..`.
pub(super) fn topic_problem(topic: &str) -> Option<&'static str> {
    if topic.is_empty() || topic.len() > 249 {
        Some("must be 1..=249 characters long")
    } else if !topic
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("may hold only a-z, A-Z, 0-9, '.', '_' and '-'")
    } else if topic == "." || topic == ".." {
        Some("must not be '.' or '..'")
    } else {
        None
    }
}

impl fmt::Display for DestinationArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.arn())
    }
}

/// A Secrets Manager secret ARN: `arn:<partition>:secretsmanager:<region>:<account>:secret:<name>`.
pub(super) fn is_secret_arn(s: &str) -> bool {
    split(s).is_ok_and(|p| {
        p.service == "secretsmanager"
            && !p.region.is_empty()
            && !p.account.is_empty()
            && p.resource
                .strip_prefix("secret:")
                .is_some_and(|n| !n.is_empty())
    })
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
    fn kinesis_consumer_arn() {
        let given =
            "arn:aws:kinesis:eu-west-1:123456789012:stream/orders/consumer/sluice:1700000000";
        let SourceArn::Kinesis(k) = SourceArn::parse(given).unwrap() else {
            panic!("a Kinesis source")
        };
        assert_eq!(
            k.arn,
            "arn:aws:kinesis:eu-west-1:123456789012:stream/orders"
        );
        assert_eq!(k.consumer.as_deref(), Some(given));
        assert_eq!(
            (k.stream.as_str(), k.region.as_str()),
            ("orders", "eu-west-1")
        );
        assert_eq!(SourceArn::Kinesis(k).default_mapping_name(), "orders");
        let plain = SourceArn::parse("arn:aws:kinesis:eu-west-1:1:stream/orders").unwrap();
        assert!(matches!(
            plain,
            SourceArn::Kinesis(KinesisStreamArn { consumer: None, .. })
        ));
        for bad in [
            "arn:aws:kinesis:eu-west-1:1:stream/s/consumer/c",
            "arn:aws:kinesis:eu-west-1:1:stream/s/consumer/:1",
            "arn:aws:kinesis:eu-west-1:1:stream/s/consumer/c:x1",
            "arn:aws:kinesis:eu-west-1:1:stream/s/consumer/a/b:1",
        ] {
            assert_eq!(
                SourceArn::parse(bad),
                Err(format!("{bad:?} is not a stream consumer ARN (expected ...:stream/<name>/consumer/<consumer>:<timestamp>)"))
            );
        }
        assert!(SourceArn::parse("arn:aws:kinesis:eu-west-1:1:stream//consumer/c:1").is_err());
    }

    #[test]
    fn msk_cluster_arn() {
        let arn = "arn:aws:kafka:us-east-1:123456789012:cluster/demo-cluster-1/6357e0b2-0e6a-4b86-a0b4-70df934c2e31-5";
        let SourceArn::Msk(m) = SourceArn::parse(arn).unwrap() else {
            panic!("an MSK cluster")
        };
        assert_eq!(
            (m.region.as_str(), m.account.as_str(), m.cluster.as_str()),
            ("us-east-1", "123456789012", "demo-cluster-1")
        );
        assert_eq!(m.uuid, "6357e0b2-0e6a-4b86-a0b4-70df934c2e31-5");
        assert_eq!(SourceArn::Msk(m).resource_name(), "demo-cluster-1");
        for bad in [
            "arn:aws:kafka:us-east-1:1:cluster/demo",
            "arn:aws:kafka:us-east-1:1:cluster//u",
            "arn:aws:kafka:us-east-1:1:cluster/c/",
            "arn:aws:kafka:us-east-1:1:topic/c/u/t",
        ] {
            assert_eq!(
                SourceArn::parse(bad),
                Err(format!(
                    "{bad:?} is not an MSK cluster ARN (expected ...:cluster/<name>/<uuid>)"
                ))
            );
        }
    }

    #[test]
    fn kafka_topic_destinations() {
        assert_eq!(
            DestinationArn::parse("kafka://failed.orders_v-2"),
            Ok(DestinationArn::Kafka {
                uri: "kafka://failed.orders_v-2".into(),
                topic: "failed.orders_v-2".into()
            })
        );
        assert_eq!(
            DestinationArn::parse("kafka://failed").unwrap().arn(),
            "kafka://failed"
        );
        let long = "t".repeat(250);
        for (uri, why) in [
            ("kafka://".to_string(), "must be 1..=249 characters long"),
            (format!("kafka://{long}"), "must be 1..=249 characters long"),
            (
                "kafka://a/b".to_string(),
                "may hold only a-z, A-Z, 0-9, '.', '_' and '-'",
            ),
            ("kafka://..".to_string(), "must not be '.' or '..'"),
        ] {
            assert_eq!(
                DestinationArn::parse(&uri),
                Err(format!("{uri:?}: the topic {why}"))
            );
        }
        assert!(DestinationArn::parse(&format!("kafka://{}", "t".repeat(249))).is_ok());
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
