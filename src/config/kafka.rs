//! The typed form of a Kafka mapping (self-managed Apache Kafka or Amazon MSK), in AWS's
//! `CreateEventSourceMapping` terms (esm-spec.md §2, §3.4): the cluster, its one topic, the consumer
//! group, the starting position, AWS's error handling and how sluice authenticates
//! (`SourceAccessConfigurations`). The reader is [`super::kafka_parse`]; this file holds the types,
//! the defaults that depend on nothing but the mapping (consumer group, name, region and account
//! of a self-managed cluster), and [`ResourceArn`] for [`KafkaSettings`], so a Kafka source answers
//! the same questions as the others.

use std::path::PathBuf;

use super::arn::{MskClusterArn, ResourceArn};
use super::typed::ErrorHandling;
use crate::model::StartingPosition;

/// The account of a self-managed cluster, which has none: it completes a bare `FunctionName` into
/// the function ARN recorded in on-failure records.
pub const SELF_MANAGED_ACCOUNT: &str = "000000000000";

/// The region of a self-managed cluster when neither the config's `region` nor the environment's
/// `AWS_REGION` / `AWS_DEFAULT_REGION` gives one.
pub const SELF_MANAGED_FALLBACK_REGION: &str = "us-east-1";

/// A Kafka source: one topic of one cluster, read through one consumer group.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaSettings {
    pub cluster: KafkaCluster,
    /// `Topics`: exactly one, as in AWS.
    pub topic: String,
    /// `SelfManagedKafkaEventSourceConfig.ConsumerGroupId` (or `AmazonManagedKafkaEventSourceConfig`'s);
    /// default `sluice-<mapping name>`, stable across restarts so the group's committed offsets
    /// carry over (AWS's default is the mapping's UUID).
    pub consumer_group_id: String,
    /// `StartingPosition`: where a partition starts when the group has no committed offset for it;
    /// ignored for partitions that have one (as in AWS).
    pub starting_position: StartingPosition,
    /// AWS's error handling. With an on-failure destination, an infinite `MaximumRetryAttempts`
    /// (-1) is already capped here at [`KAFKA_RETRY_CAP_WITH_DESTINATION`], as AWS does for Kafka.
    pub errors: ErrorHandling,
    pub access: KafkaAccess,
    /// Where a bare function name is invoked and an S3 destination is called: the MSK ARN's region;
    /// for a self-managed cluster the config's `region`, else `AWS_REGION`, else
    /// `AWS_DEFAULT_REGION`, else [`SELF_MANAGED_FALLBACK_REGION`].
    pub region: String,
    /// The MSK ARN's account; [`SELF_MANAGED_ACCOUNT`] for a self-managed cluster.
    pub account: String,
}

/// AWS caps infinite retries at this many for a Kafka mapping with an on-failure destination.
pub const KAFKA_RETRY_CAP_WITH_DESTINATION: u32 = 10;

/// Where the topic lives.
#[derive(Debug, Clone, PartialEq)]
pub enum KafkaCluster {
    /// `SelfManagedEventSource.Endpoints.KAFKA_BOOTSTRAP_SERVERS`: 1 to 10 `host:port`.
    SelfManaged { bootstrap_servers: Vec<String> },
    /// `EventSourceArn` of an Amazon MSK cluster (its brokers are looked up at run time).
    Msk { arn: MskClusterArn },
}

/// How sluice authenticates to the cluster and trusts it (`SourceAccessConfigurations`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KafkaAccess {
    /// `BASIC_AUTH` (SASL/PLAIN), `SASL_SCRAM_256_AUTH`, `SASL_SCRAM_512_AUTH`; for MSK with no
    /// SASL and no client certificate, IAM ([`SaslMechanism::MskIam`], no credentials).
    pub sasl: Option<KafkaSasl>,
    /// `CLIENT_CERTIFICATE_TLS_AUTH`: mutual TLS.
    pub client_certificate: Option<SecretRef>,
    /// `SERVER_ROOT_CA_CERTIFICATE`: the CA the brokers' certificates are checked against.
    pub server_root_ca: Option<SecretRef>,
}

/// One SASL mechanism and where its credentials are.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaSasl {
    pub mechanism: SaslMechanism,
    /// A secret `{"username": .., "password": ..}`; `None` for [`SaslMechanism::MskIam`], which
    /// signs a token with the process's AWS credentials.
    pub credentials: Option<SecretRef>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    /// `BASIC_AUTH`: SASL/PLAIN.
    Plain,
    /// `SASL_SCRAM_256_AUTH`: SCRAM-SHA-256.
    ScramSha256,
    /// `SASL_SCRAM_512_AUTH`: SCRAM-SHA-512.
    ScramSha512,
    /// Amazon MSK IAM access control: OAUTHBEARER with a SigV4-signed token.
    MskIam,
}

/// Where a secret's JSON is read from, at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// A Secrets Manager secret ARN (as in AWS), read with GetSecretValue.
    SecretsManager(String),
    /// `env:VARIABLE`: the variable's value (sluice's addition).
    Env(String),
    /// `file:/path`: the file's contents (sluice's addition).
    File(PathBuf),
}

impl KafkaSettings {
    /// The cluster's name for default mapping names and logs: the MSK cluster's name; `None` for a
    /// self-managed cluster, which has none.
    pub fn cluster_name(&self) -> Option<&str> {
        match &self.cluster {
            KafkaCluster::Msk { arn } => Some(&arn.cluster),
            KafkaCluster::SelfManaged { .. } => None,
        }
    }

    /// What tells two Kafka sources apart, for "two mappings read one source": the MSK ARN or the
    /// sorted bootstrap servers, and the topic.
    pub(super) fn source_key(&self) -> String {
        let cluster = match &self.cluster {
            KafkaCluster::Msk { arn } => arn.arn.clone(),
            KafkaCluster::SelfManaged { bootstrap_servers } => {
                let mut servers: Vec<String> = bootstrap_servers
                    .iter()
                    .map(|s| s.to_ascii_lowercase())
                    .collect();
                servers.sort();
                servers.join(",")
            }
        };
        format!("kafka:{cluster}#{}", self.topic)
    }

    /// True when both read from one cluster as far as the config tells: the same MSK ARN, or
    /// self-managed bootstrap lists that share a server.
    pub(super) fn same_cluster(&self, other: &KafkaSettings) -> bool {
        match (&self.cluster, &other.cluster) {
            (KafkaCluster::Msk { arn: a }, KafkaCluster::Msk { arn: b }) => a.arn == b.arn,
            (
                KafkaCluster::SelfManaged {
                    bootstrap_servers: a,
                },
                KafkaCluster::SelfManaged {
                    bootstrap_servers: b,
                },
            ) => a
                .iter()
                .any(|x| b.iter().any(|y| x.eq_ignore_ascii_case(y))),
            _ => false,
        }
    }
}

/// The consumer group of a mapping that names none: `sluice-<mapping name>`.
pub fn default_consumer_group(mapping_name: &str) -> String {
    format!("sluice-{mapping_name}")
}

/// The region of a self-managed cluster: the config's `region`, else `AWS_REGION`, else
/// `AWS_DEFAULT_REGION` (what the AWS SDK reads first), else [`SELF_MANAGED_FALLBACK_REGION`].
/// Empty values count as unset. A region that only a profile or instance metadata would give is
/// not seen here: set `region` then.
pub(super) fn self_managed_region(
    config: Option<&str>,
    aws_region: Option<String>,
    aws_default_region: Option<String>,
) -> String {
    config
        .map(str::to_string)
        .into_iter()
        .chain(aws_region)
        .chain(aws_default_region)
        .find(|r| !r.is_empty())
        .unwrap_or_else(|| SELF_MANAGED_FALLBACK_REGION.to_string())
}

/// A Kafka source answers like an ARN: a self-managed cluster has no ARN (`arn()` is empty; callers
/// that need one must take the MSK ARN only) and its region and account are the defaults above.
/// `resource_name` is the topic; the default mapping name is the topic, or `<cluster>/<topic>` on MSK.
impl ResourceArn for KafkaSettings {
    fn arn(&self) -> &str {
        match &self.cluster {
            KafkaCluster::Msk { arn } => &arn.arn,
            KafkaCluster::SelfManaged { .. } => "",
        }
    }
    fn region(&self) -> &str {
        &self.region
    }
    fn account(&self) -> &str {
        &self.account
    }
    fn resource_name(&self) -> &str {
        &self.topic
    }
    fn default_mapping_name(&self) -> String {
        match self.cluster_name() {
            Some(cluster) => format!("{cluster}/{}", self.topic),
            None => self.topic.clone(),
        }
    }
}
