//! `sluice iam-policy`: the least-privilege IAM policy a config needs, as JSON (Version
//! 2012-10-17). Pure: [`policy`] reads the typed [`Config`] and makes no AWS call. Per mapping it
//! grants the source's read actions on the source's ARN (a Kinesis stream and its enhanced fan-out
//! consumer, a DynamoDB stream, an SQS queue, an Amazon MSK cluster with its topic and consumer
//! group), `secretsmanager:GetSecretValue` on the secrets its `SourceAccessConfigurations` name,
//! `lambda:InvokeFunction` on its function (qualified or not, as given), and the on-failure
//! destination's write actions; with `coordination`, the lease table's actions on the table.
//!
//! Every resource is an ARN: none of the actions sluice calls lacks resource-level permissions.
//! Where the config does not tell an account or region (a bare function name on a self-managed
//! Kafka mapping, the lease table without `region`), the account or region of the mappings' ARNs
//! is used, else the placeholders [`ACCOUNT_PLACEHOLDER`] / [`REGION_PLACEHOLDER`], which
//! [`Policy::placeholders`] reports (`--account` / `--region` fill them in).

use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

use crate::config::{
    Config, DestinationArn, KafkaCluster, KafkaSettings, Mapping, MappingSource, SaslMechanism,
    SecretRef, Target, SELF_MANAGED_ACCOUNT,
};

/// Stands for the account when the config does not tell it.
pub const ACCOUNT_PLACEHOLDER: &str = "ACCOUNT_ID";
/// Stands for the region when the config does not tell it.
pub const REGION_PLACEHOLDER: &str = "REGION";

/// Values the config does not give, from the command line.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub account: Option<String>,
    pub region: Option<String>,
}

/// An IAM policy document, its fields in the order AWS writes them.
#[derive(Debug, Clone, Serialize)]
pub struct Document {
    #[serde(rename = "Version")]
    pub version: &'static str,
    #[serde(rename = "Statement")]
    pub statement: Vec<Statement>,
}

/// One `Allow` statement.
#[derive(Debug, Clone, Serialize)]
pub struct Statement {
    #[serde(rename = "Sid")]
    pub sid: &'static str,
    #[serde(rename = "Effect")]
    pub effect: &'static str,
    #[serde(rename = "Action")]
    pub action: Vec<&'static str>,
    #[serde(rename = "Resource")]
    pub resource: Vec<String>,
}

impl Document {
    /// The document as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("policies serialize")
    }
}

/// A policy document and the placeholders left in it.
#[derive(Debug, Clone)]
pub struct Policy {
    pub document: Document,
    /// Each placeholder used, with why (for a note on stderr).
    pub placeholders: Vec<String>,
}

/// Statements by Sid: actions and resources, each sorted and without duplicates.
#[derive(Default)]
struct Statements {
    by_sid: BTreeMap<&'static str, (BTreeSet<&'static str>, BTreeSet<String>)>,
}

impl Statements {
    fn allow(&mut self, sid: &'static str, actions: &[&'static str], resource: String) {
        let entry = self.by_sid.entry(sid).or_default();
        entry.0.extend(actions.iter().copied());
        entry.1.insert(resource);
    }
}

/// The ARN partition (`aws`, `aws-cn`, `aws-us-gov`) of `arn`, if it is one.
fn partition_of(arn: &str) -> Option<&str> {
    arn.strip_prefix("arn:")?.split(':').next()
}

/// What the mappings' ARNs tell about where the deployment is.
struct Context {
    partition: String,
    account: String,
    region: String,
    placeholders: Vec<String>,
}

impl Context {
    fn new(cfg: &Config, overrides: &Overrides) -> Context {
        let arns: Vec<&str> = cfg
            .mappings
            .iter()
            .map(|m| m.source_arn())
            .filter(|a| !a.is_empty())
            .collect();
        let partition = arns
            .iter()
            .find_map(|a| partition_of(a))
            .unwrap_or("aws")
            .to_string();
        let accounts: BTreeSet<&str> = cfg
            .mappings
            .iter()
            .filter(|m| !m.source_arn().is_empty())
            .map(|m| m.source.account())
            .collect();
        let regions: BTreeSet<&str> = cfg
            .mappings
            .iter()
            .filter(|m| !m.source_arn().is_empty())
            .map(|m| m.source.region())
            .collect();
        let mut placeholders = Vec::new();
        let account = match (&overrides.account, accounts.len()) {
            (Some(a), _) => a.clone(),
            (None, 1) => accounts
                .iter()
                .next()
                .map(|a| a.to_string())
                .unwrap_or_default(),
            _ => ACCOUNT_PLACEHOLDER.to_string(),
        };
        let region = match (&overrides.region, &cfg.region, regions.len()) {
            (Some(r), _, _) | (None, Some(r), _) => r.clone(),
            (None, None, 1) => regions
                .iter()
                .next()
                .map(|r| r.to_string())
                .unwrap_or_default(),
            _ => REGION_PLACEHOLDER.to_string(),
        };
        if account == ACCOUNT_PLACEHOLDER {
            placeholders.push(format!(
                "{ACCOUNT_PLACEHOLDER}: the config's ARNs name {} accounts; give --account",
                accounts.len()
            ));
        }
        if region == REGION_PLACEHOLDER {
            placeholders.push(format!(
                "{REGION_PLACEHOLDER}: the config has no `region` and its ARNs name {} regions; give --region",
                regions.len()
            ));
        }
        Context {
            partition,
            account,
            region,
            placeholders,
        }
    }

    /// A mapping's account, or the deployment's when the mapping has none of its own.
    fn account_of<'a>(&'a self, m: &'a Mapping) -> &'a str {
        match m.source.account() {
            "" | SELF_MANAGED_ACCOUNT => &self.account,
            a => a,
        }
    }
}

/// The function ARN `InvokeFunction` is granted on: an ARN as given; a name (`name`,
/// `name:alias`, `name:version`) completed with the mapping's region and account.
fn function_arn(ctx: &Context, m: &Mapping, function: &str) -> String {
    if function.starts_with("arn:") {
        return function.to_string();
    }
    format!(
        "arn:{}:lambda:{}:{}:function:{function}",
        ctx.partition,
        m.source.region(),
        ctx.account_of(m)
    )
}

fn secret_arns(k: &KafkaSettings) -> Vec<&str> {
    let sasl = k.access.sasl.as_ref().and_then(|s| s.credentials.as_ref());
    [
        sasl,
        k.access.client_certificate.as_ref(),
        k.access.server_root_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    .filter_map(|s| match s {
        SecretRef::SecretsManager(arn) => Some(arn.as_str()),
        _ => None,
    })
    .collect()
}

fn kafka(st: &mut Statements, k: &KafkaSettings) {
    for arn in secret_arns(k) {
        st.allow(
            "ReadSourceSecrets",
            &["secretsmanager:GetSecretValue"],
            arn.into(),
        );
    }
    let KafkaCluster::Msk { arn } = &k.cluster else {
        return; // A self-managed cluster's access is the cluster's own business, not IAM's.
    };
    st.allow(
        "MskClusterMetadata",
        &["kafka:DescribeClusterV2", "kafka:GetBootstrapBrokers"],
        arn.arn.clone(),
    );
    let iam = k
        .access
        .sasl
        .as_ref()
        .is_some_and(|s| s.mechanism == SaslMechanism::MskIam);
    if !iam {
        return; // SCRAM or mutual TLS: the brokers authorise, not IAM.
    }
    let prefix = format!(
        "arn:{}:kafka:{}:{}",
        partition_of(&arn.arn).unwrap_or("aws"),
        arn.region,
        arn.account
    );
    let path = format!("{}/{}", arn.cluster, arn.uuid);
    st.allow(
        "MskConnect",
        &[
            "kafka-cluster:Connect",
            "kafka-cluster:DescribeClusterDynamicConfiguration",
        ],
        arn.arn.clone(),
    );
    st.allow(
        "MskReadTopics",
        &["kafka-cluster:DescribeTopic", "kafka-cluster:ReadData"],
        format!("{prefix}:topic/{path}/{}", k.topic),
    );
    st.allow(
        "MskConsumerGroups",
        &["kafka-cluster:AlterGroup", "kafka-cluster:DescribeGroup"],
        format!("{prefix}:group/{path}/{}", k.consumer_group_id),
    );
    if let Some(DestinationArn::Kafka { topic, .. }) = &k.errors.on_failure {
        st.allow(
            "MskWriteFailureTopics",
            &["kafka-cluster:DescribeTopic", "kafka-cluster:WriteData"],
            format!("{prefix}:topic/{path}/{topic}"),
        );
    }
}

fn destination(st: &mut Statements, d: &DestinationArn) {
    match d {
        DestinationArn::Sqs { arn, .. } => st.allow(
            "SendToFailureQueues",
            &["sqs:GetQueueUrl", "sqs:SendMessage"],
            arn.clone(),
        ),
        DestinationArn::Sns { arn } => {
            st.allow("PublishToFailureTopics", &["sns:Publish"], arn.clone())
        }
        DestinationArn::S3 { arn, .. } => {
            st.allow("WriteFailureObjects", &["s3:PutObject"], format!("{arn}/*"));
            st.allow("ListFailureBuckets", &["s3:ListBucket"], arn.clone());
        }
        DestinationArn::Kafka { .. } => {} // MSK: in `kafka`; self-managed: not IAM's.
    }
}

fn mapping(st: &mut Statements, ctx: &Context, m: &Mapping) {
    match &m.source {
        MappingSource::Kinesis(s) => {
            st.allow(
                "ReadKinesisStreams",
                &[
                    "kinesis:DescribeStreamSummary",
                    "kinesis:GetRecords",
                    "kinesis:GetShardIterator",
                    "kinesis:ListShards",
                ],
                s.stream.arn.clone(),
            );
            if let Some(consumer) = &s.stream.consumer {
                st.allow(
                    "KinesisEnhancedFanOut",
                    &["kinesis:DescribeStreamConsumer", "kinesis:SubscribeToShard"],
                    consumer.clone(),
                );
            }
        }
        MappingSource::DynamoDbStream(s) => st.allow(
            "ReadDynamoDbStreams",
            &[
                "dynamodb:DescribeStream",
                "dynamodb:GetRecords",
                "dynamodb:GetShardIterator",
            ],
            s.stream.arn.clone(),
        ),
        MappingSource::Sqs(q) => st.allow(
            "ConsumeSqsQueues",
            &[
                "sqs:ChangeMessageVisibility",
                "sqs:DeleteMessage",
                "sqs:GetQueueAttributes",
                "sqs:GetQueueUrl",
                "sqs:ReceiveMessage",
            ],
            q.queue.arn.clone(),
        ),
        MappingSource::Kafka(k) => kafka(st, k),
    }
    if let Target::Lambda { function_name } = &m.target {
        st.allow(
            "InvokeFunctions",
            &["lambda:InvokeFunction"],
            function_arn(ctx, m, function_name),
        );
    }
    if let Some(d) = m.stream_errors().and_then(|e| e.on_failure.as_ref()) {
        destination(st, d);
    }
}

/// The policy `cfg` needs (disabled mappings included: enabling one must not need a new role).
pub fn policy(cfg: &Config, overrides: &Overrides) -> Policy {
    let ctx = Context::new(cfg, overrides);
    let mut st = Statements::default();
    for m in &cfg.mappings {
        mapping(&mut st, &ctx, m);
    }
    let mut placeholders = Vec::new();
    if let Some(c) = &cfg.coordination {
        st.allow(
            "LeaseTable",
            &[
                "dynamodb:CreateTable",
                "dynamodb:DeleteItem",
                "dynamodb:DescribeTable",
                "dynamodb:GetItem",
                "dynamodb:PutItem",
                "dynamodb:Scan",
                "dynamodb:UpdateItem",
            ],
            format!(
                "arn:{}:dynamodb:{}:{}:table/{}",
                ctx.partition, ctx.region, ctx.account, c.lease_table
            ),
        );
    }
    let statements: Vec<Statement> = st
        .by_sid
        .iter()
        .map(|(sid, (actions, resources))| Statement {
            sid,
            effect: "Allow",
            action: actions.iter().copied().collect(),
            resource: resources.iter().cloned().collect(),
        })
        .collect();
    let document = Document {
        version: "2012-10-17",
        statement: statements,
    };
    let text = document.to_json();
    for p in &ctx.placeholders {
        let word = p.split(':').next().unwrap_or_default();
        if text.contains(word) {
            placeholders.push(p.clone());
        }
    }
    Policy {
        document,
        placeholders,
    }
}

#[cfg(test)]
#[path = "iam_tests.rs"]
mod tests;
