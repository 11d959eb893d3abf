//! The reader of a Kafka mapping (self-managed: `SelfManagedEventSource`; Amazon MSK: an MSK
//! `EventSourceArn`), in AWS's `CreateEventSourceMapping` names and ranges (esm-spec.md §2, §3.4):
//! the bootstrap servers, `Topics` (exactly one), the consumer group config of the cluster's kind,
//! batching with Kafka's defaults, `StartingPosition`, AWS's error handling (with a `kafka://<topic>`
//! destination and AWS's retry cap), and `SourceAccessConfigurations` with their secrets
//! ([`SecretRef`]). Fields Kafka does not take are refused by name. Across mappings,
//! [`check_groups`] refuses two mappings sharing a consumer group on one cluster.

use super::arn::{is_secret_arn, topic_problem, MskClusterArn};
use super::kafka::*;
use super::names::{Parsed, SourceId};
use super::obj::{show, Obj};
use super::settings::{scaling, stream_errors, stream_starting_position};
use super::target::target;
use super::*;
use serde_yaml_ng::Value;

/// The fields only Kafka mappings take; the other sources refuse them by name.
pub(super) const KAFKA_ONLY: [&str; 4] = [
    "Topics",
    "SelfManagedKafkaEventSourceConfig",
    "AmazonManagedKafkaEventSourceConfig",
    "SourceAccessConfigurations",
];

/// AWS fields for Kinesis and DynamoDB Streams that a Kafka mapping refuses by name.
const NOT_FOR_KAFKA: [&str; 2] = ["ParallelizationFactor", "TumblingWindowInSeconds"];

/// `KAFKA_BOOTSTRAP_SERVERS`: 1 to this many `host:port`.
pub(super) const MAX_BOOTSTRAP_SERVERS: usize = 10;
/// `SourceAccessConfigurations`: at most this many entries.
pub(super) const MAX_ACCESS_CONFIGURATIONS: usize = 22;
/// `ConsumerGroupId`: 1 to this many characters.
pub(super) const MAX_GROUP_ID_CHARS: usize = 200;
/// Kafka's default `MaximumBatchingWindowInSeconds`: 500 ms.
pub(super) const DEFAULT_WINDOW: Duration = Duration::from_millis(500);

/// The characters AWS allows in a `ConsumerGroupId` besides ASCII letters and digits.
const GROUP_ID_PUNCTUATION: &str = "-/*:_+=.@";

/// What [`super::mapping`] read before it knew the source is Kafka.
pub(super) struct Head<'a> {
    pub index: usize,
    /// `Name`, when given.
    pub name: Option<String>,
    /// `PreviousNames`: Kafka refuses them.
    pub previous: Vec<(usize, String)>,
    /// A self-managed cluster's region.
    pub region: &'a str,
}

/// Reads the rest of a Kafka mapping: an MSK one when `msk` is given, else a self-managed one
/// (`SelfManagedEventSource`). `None` when a problem leaves nothing to run (it is recorded).
pub(super) fn mapping(
    m: &mut Obj<'_, '_>,
    head: Head<'_>,
    msk: Option<MskClusterArn>,
    now: SystemTime,
) -> Option<Parsed> {
    let is_msk = msk.is_some();
    let cluster = match msk {
        Some(arn) => Some(KafkaCluster::Msk { arn }),
        None => bootstrap_servers(m)
            .map(|bootstrap_servers| KafkaCluster::SelfManaged { bootstrap_servers }),
    };
    let target = target(m);
    let topic = topic(m);
    let group = consumer_group(m, is_msk);
    let batch_size = m.int("BatchSize", 1, 10_000, None, 100) as usize;
    let window = match m.int("MaximumBatchingWindowInSeconds", 0, 300, None, -1) {
        w if w < 0 => DEFAULT_WINDOW,
        w => Duration::from_secs(w as u64),
    };
    scaling(m, false);
    for field in NOT_FOR_KAFKA {
        if m.has(field) {
            m.take(field);
            m.err(
                field,
                "is not supported for Kafka sources (AWS takes it for Kinesis and DynamoDB Streams only)".into(),
            );
        }
    }
    let starting_position = stream_starting_position(m, None, now, "Kafka sources");
    let enabled = m.bool("Enabled").unwrap_or(true);
    let mut errors = stream_errors(m, true);
    if let (Some(DestinationArn::Kafka { uri, topic: dest }), Some(source)) =
        (&errors.on_failure, &topic)
    {
        if dest == source {
            m.err(
                "DestinationConfig.OnFailure.Destination",
                format!("{uri:?} is the source topic: AWS refuses an on-failure destination equal to the source topic"),
            );
        }
    }
    if errors.on_failure.is_some() && errors.max_retry_attempts.is_none() {
        errors.max_retry_attempts = Some(KAFKA_RETRY_CAP_WITH_DESTINATION);
    }
    let access = access(m, is_msk);
    if !head.previous.is_empty() {
        m.err(
            "PreviousNames",
            format!("is not supported for Kafka sources: their progress is the consumer group's committed offsets; to keep it under a new Name, set {} to the group used so far (sluice-<old Name> by default)", group_field(is_msk)),
        );
    }
    let (cluster, topic, starting_position, target) =
        (cluster?, topic?, starting_position?, target?);
    let (region, account) = match &cluster {
        KafkaCluster::Msk { arn } => (arn.region.clone(), arn.account.clone()),
        KafkaCluster::SelfManaged { .. } => {
            (head.region.to_string(), SELF_MANAGED_ACCOUNT.to_string())
        }
    };
    let mut settings = KafkaSettings {
        cluster,
        topic,
        consumer_group_id: String::new(),
        starting_position,
        errors,
        access,
        region,
        account,
    };
    let explicit_name = head.name.is_some();
    let name = head.name.unwrap_or_else(|| settings.default_mapping_name());
    let explicit_group = group.is_some();
    settings.consumer_group_id = group.unwrap_or_else(|| default_consumer_group(&name));
    let source = SourceId {
        key: settings.source_key(),
        shown: format!("topic {:?} of one cluster", settings.topic),
        name_keys: "their default consumer groups, sluice-<Name>",
        default_from: if is_msk {
            "EventSourceArn and Topics"
        } else {
            "Topics"
        },
    };
    Some(Parsed {
        index: head.index,
        explicit_name,
        previous: Vec::new(),
        old_default: None,
        source,
        explicit_group,
        mapping: Mapping {
            name,
            legacy_names: Vec::new(),
            enabled,
            target,
            batching: Batching { batch_size, window },
            source: MappingSource::Kafka(settings),
            filter_criteria: None, // read by `super::mapping`
        },
    })
}

/// Where a mapping's `ConsumerGroupId` is given, by the cluster's kind.
fn group_field(msk: bool) -> &'static str {
    if msk {
        "AmazonManagedKafkaEventSourceConfig.ConsumerGroupId"
    } else {
        "SelfManagedKafkaEventSourceConfig.ConsumerGroupId"
    }
}

/// `SelfManagedEventSource: { Endpoints: { KAFKA_BOOTSTRAP_SERVERS: [host:port, …] } }`.
fn bootstrap_servers(m: &mut Obj<'_, '_>) -> Option<Vec<String>> {
    const SHAPE: &str = "{ Endpoints: { KAFKA_BOOTSTRAP_SERVERS: [host:port, ...] } }";
    let path = m.field_path("SelfManagedEventSource");
    let value = m.take("SelfManagedEventSource")?;
    if value.is_null() {
        m.err("SelfManagedEventSource", format!("must be {SHAPE}"));
        return None;
    }
    let mut sm = Obj::new(&path, value, m.errs);
    if !value.is_mapping() {
        return None; // Obj::new reported it.
    }
    let endpoints_path = sm.field_path("Endpoints");
    let servers = match sm.take("Endpoints") {
        None | Some(Value::Null) => {
            sm.err(
                "Endpoints",
                "is required: { KAFKA_BOOTSTRAP_SERVERS: [host:port, ...] }".into(),
            );
            None
        }
        Some(v) => {
            let mut ep = Obj::new(&endpoints_path, v, sm.errs);
            let servers = if v.is_mapping() {
                server_list(&mut ep)
            } else {
                None
            };
            ep.finish();
            servers
        }
    };
    sm.finish();
    servers
}

/// `KAFKA_BOOTSTRAP_SERVERS`: 1 to [`MAX_BOOTSTRAP_SERVERS`] `host:port`.
fn server_list(ep: &mut Obj<'_, '_>) -> Option<Vec<String>> {
    const KEY: &str = "KAFKA_BOOTSTRAP_SERVERS";
    match ep.take(KEY) {
        None | Some(Value::Null) => {
            ep.err(
                KEY,
                format!("is required: a list of 1..={MAX_BOOTSTRAP_SERVERS} host:port"),
            );
            None
        }
        Some(Value::Sequence(items)) => {
            let count_ok = (1..=MAX_BOOTSTRAP_SERVERS).contains(&items.len());
            if !count_ok {
                ep.err(
                    KEY,
                    format!(
                        "lists {} servers; 1..={MAX_BOOTSTRAP_SERVERS} allowed",
                        items.len()
                    ),
                );
            }
            let mut out = Vec::new();
            for (k, item) in items.iter().enumerate() {
                match item.as_str() {
                    Some(s) if host_port_ok(s) => out.push(s.to_string()),
                    _ => ep.err(
                        &format!("{KEY}[{k}]"),
                        format!(
                            "{} is not host:port (a host name or IP address, [IPv6] in brackets, and a port in 1..=65535)",
                            shown(item)
                        ),
                    ),
                }
            }
            (count_ok && out.len() == items.len()).then_some(out)
        }
        Some(other) => {
            ep.err(
                KEY,
                format!(
                    "{} must be a list of 1..={MAX_BOOTSTRAP_SERVERS} host:port",
                    show(other)
                ),
            );
            None
        }
    }
}

/// `host:port`: a host name or IPv4 address (letters, digits, `.`, `-`, `_`; at most 253
/// characters) or a bracketed IPv6 address, and a port in 1..=65535.
fn host_port_ok(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    let port_ok = !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|p| p > 0);
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host.len() <= 253
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        }
    };
    port_ok && host_ok
}

/// A string quoted, anything else as YAML.
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => show(other),
    }
}

/// `Topics`: exactly one Kafka topic name.
fn topic(m: &mut Obj<'_, '_>) -> Option<String> {
    match m.take("Topics") {
        None | Some(Value::Null) => {
            m.err(
                "Topics",
                "is required for Kafka sources: a list of exactly one topic".into(),
            );
            None
        }
        Some(Value::Sequence(items)) if items.len() != 1 => {
            m.err(
                "Topics",
                format!("lists {} topics; AWS takes exactly one", items.len()),
            );
            None
        }
        Some(Value::Sequence(items)) => match items[0].as_str() {
            Some(t) => match topic_problem(t) {
                None => Some(t.to_string()),
                Some(why) => {
                    m.err("Topics[0]", format!("{t:?} {why}"));
                    None
                }
            },
            None => {
                m.err(
                    "Topics[0]",
                    format!("{} must be a topic name", show(&items[0])),
                );
                None
            }
        },
        Some(other) => {
            m.err(
                "Topics",
                format!("{} must be a list of exactly one topic", show(other)),
            );
            None
        }
    }
}

/// The `ConsumerGroupId` of the cluster kind's config object (`None`: not given, or invalid and
/// recorded); the other kind's object is refused.
fn consumer_group(m: &mut Obj<'_, '_>, msk: bool) -> Option<String> {
    let (own, other, problem) = if msk {
        (
            "AmazonManagedKafkaEventSourceConfig",
            "SelfManagedKafkaEventSourceConfig",
            "is for self-managed Kafka sources; this mapping reads an Amazon MSK cluster: use AmazonManagedKafkaEventSourceConfig",
        )
    } else {
        (
            "SelfManagedKafkaEventSourceConfig",
            "AmazonManagedKafkaEventSourceConfig",
            "is for Amazon MSK sources; this mapping reads a self-managed cluster: use SelfManagedKafkaEventSourceConfig",
        )
    };
    if m.has(other) {
        m.take(other);
        m.err(other, problem.into());
    }
    let mut config = m.object(own)?;
    let group = config.string("ConsumerGroupId").and_then(|g| {
        if group_id_ok(&g) {
            return Some(g);
        }
        config.err(
            "ConsumerGroupId",
            format!("{g:?} is not a consumer group id: 1..={MAX_GROUP_ID_CHARS} characters of a-z, A-Z, 0-9 and {}", GROUP_ID_PUNCTUATION.chars().map(String::from).collect::<Vec<_>>().join(" ")),
        );
        None
    });
    config.finish();
    group
}

/// AWS's `ConsumerGroupId` rule: 1 to 200 characters of `[a-zA-Z0-9-/*:_+=.@]`.
fn group_id_ok(g: &str) -> bool {
    (1..=MAX_GROUP_ID_CHARS).contains(&g.len())
        && g.chars()
            .all(|c| c.is_ascii_alphanumeric() || GROUP_ID_PUNCTUATION.contains(c))
}

/// One `SourceAccessConfigurations[].Type` sluice knows.
#[derive(Clone, Copy, PartialEq)]
enum AccessType {
    Sasl(SaslMechanism),
    ClientCertificate,
    ServerRootCa,
    /// `VPC_SUBNET`, `VPC_SECURITY_GROUP`: accepted and ignored (sluice runs in the network it
    /// runs in).
    Vpc,
}

/// Every `Type` sluice accepts, as written in messages.
const ACCESS_TYPES: &str = "BASIC_AUTH, SASL_SCRAM_256_AUTH, SASL_SCRAM_512_AUTH, CLIENT_CERTIFICATE_TLS_AUTH, SERVER_ROOT_CA_CERTIFICATE, VPC_SUBNET, VPC_SECURITY_GROUP";

impl AccessType {
    fn parse(s: &str) -> Option<AccessType> {
        Some(match s {
            "BASIC_AUTH" => AccessType::Sasl(SaslMechanism::Plain),
            "SASL_SCRAM_256_AUTH" => AccessType::Sasl(SaslMechanism::ScramSha256),
            "SASL_SCRAM_512_AUTH" => AccessType::Sasl(SaslMechanism::ScramSha512),
            "CLIENT_CERTIFICATE_TLS_AUTH" => AccessType::ClientCertificate,
            "SERVER_ROOT_CA_CERTIFICATE" => AccessType::ServerRootCa,
            "VPC_SUBNET" | "VPC_SECURITY_GROUP" => AccessType::Vpc,
            _ => return None,
        })
    }

    /// What AWS takes for an Amazon MSK source: SCRAM-SHA-512 and mTLS (and the VPC types sluice
    /// ignores); MSK has no SASL/PLAIN or SCRAM-SHA-256, and its brokers' certificates are signed
    /// by a CA AWS trusts.
    fn for_msk(self) -> bool {
        matches!(
            self,
            AccessType::Sasl(SaslMechanism::ScramSha512)
                | AccessType::ClientCertificate
                | AccessType::Vpc
        )
    }
}

/// `SourceAccessConfigurations`: 0 to 22 `{ Type, URI }`; at most one SASL type, one client
/// certificate and one root CA. An MSK source with no SASL and no client certificate uses IAM.
fn access(m: &mut Obj<'_, '_>, msk: bool) -> KafkaAccess {
    const KEY: &str = "SourceAccessConfigurations";
    let mut access = KafkaAccess::default();
    let items: &[Value] = match m.take(KEY) {
        None | Some(Value::Null) => &[],
        Some(Value::Sequence(items)) => items,
        Some(other) => {
            m.err(
                KEY,
                format!("{} must be a list of {{ Type, URI }}", show(other)),
            );
            &[]
        }
    };
    if items.len() > MAX_ACCESS_CONFIGURATIONS {
        m.err(
            KEY,
            format!(
                "lists {} entries; at most {MAX_ACCESS_CONFIGURATIONS} allowed",
                items.len()
            ),
        );
    }
    // Where each single-use kind was first given: (index, Type).
    let mut sasl_at: Option<(usize, String)> = None;
    let mut cert_at: Option<usize> = None;
    let mut ca_at: Option<usize> = None;
    for (k, item) in items.iter().enumerate() {
        let path = m.field_path(&format!("{KEY}[{k}]"));
        let mut o = Obj::new(&path, item, m.errs);
        if !item.is_mapping() {
            continue; // Obj::new reported it.
        }
        let ty = o.required_string("Type");
        let uri = o.required_string("URI");
        let kind = ty.as_deref().and_then(|t| {
            let kind = AccessType::parse(t);
            match kind {
                None => o.err("Type", format!("{t:?} is not one of {ACCESS_TYPES}")),
                Some(kind) if msk && !kind.for_msk() => o.err(
                    "Type",
                    format!("{t} is not supported for Amazon MSK sources (MSK takes SASL_SCRAM_512_AUTH or CLIENT_CERTIFICATE_TLS_AUTH; with neither, IAM)"),
                ),
                Some(kind) => return Some(kind),
            }
            None
        });
        let (Some(kind), Some(ty)) = (kind, ty) else {
            o.finish();
            continue;
        };
        let once = |o: &mut Obj<'_, '_>, first: Option<usize>| match first {
            Some(j) => {
                o.err(
                    "Type",
                    format!("{ty} is given twice (also {KEY}[{j}]); give it once"),
                );
                false
            }
            None => true,
        };
        match kind {
            AccessType::Vpc => {}
            AccessType::Sasl(mechanism) => match &sasl_at {
                Some((j, first)) => o.err(
                    "Type",
                    format!("{ty}: at most one SASL type (BASIC_AUTH, SASL_SCRAM_256_AUTH, SASL_SCRAM_512_AUTH) may be given; {KEY}[{j}] is {first}"),
                ),
                None => {
                    sasl_at = Some((k, ty.clone()));
                    access.sasl = Some(KafkaSasl {
                        mechanism,
                        credentials: secret(&mut o, uri.as_deref()),
                    });
                }
            },
            AccessType::ClientCertificate => {
                if once(&mut o, cert_at) {
                    cert_at = Some(k);
                    access.client_certificate = secret(&mut o, uri.as_deref());
                }
            }
            AccessType::ServerRootCa => {
                if once(&mut o, ca_at) {
                    ca_at = Some(k);
                    access.server_root_ca = secret(&mut o, uri.as_deref());
                }
            }
        }
        o.finish();
    }
    if msk && access.sasl.is_none() && access.client_certificate.is_none() {
        access.sasl = Some(KafkaSasl {
            mechanism: SaslMechanism::MskIam,
            credentials: None,
        });
    }
    access
}

/// The entry's `URI` as a [`SecretRef`]; a problem is recorded at `URI`.
fn secret(o: &mut Obj<'_, '_>, uri: Option<&str>) -> Option<SecretRef> {
    match secret_ref(uri?) {
        Ok(s) => Some(s),
        Err(e) => {
            o.err("URI", e);
            None
        }
    }
}

/// A secret's location: a Secrets Manager secret ARN (as in AWS), `env:VARIABLE` or `file:/path`.
pub(super) fn secret_ref(uri: &str) -> Result<SecretRef, String> {
    if let Some(var) = uri.strip_prefix("env:") {
        let ok = var
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        return if ok {
            Ok(SecretRef::Env(var.to_string()))
        } else {
            Err(format!("{uri:?}: env: takes a variable name (letters, digits and '_', not starting with a digit)"))
        };
    }
    if let Some(path) = uri.strip_prefix("file:") {
        return if path.is_empty() {
            Err(format!("{uri:?}: file: takes a path"))
        } else {
            Ok(SecretRef::File(path.into()))
        };
    }
    if is_secret_arn(uri) {
        Ok(SecretRef::SecretsManager(uri.to_string()))
    } else {
        Err(format!("{uri:?} is not a Secrets Manager secret ARN (arn:aws:secretsmanager:<region>:<account>:secret:<name>), env:VARIABLE or file:/path"))
    }
}

/// Refuses two Kafka mappings with one consumer group on one cluster (AWS: group ids are unique):
/// the group would split the topic's partitions between them. Reported on the mapping that gives
/// the group (the later one when both do); default groups differ as names do.
pub(super) fn check_groups(parsed: &[Parsed], errs: &mut Vec<String>) {
    let kafka: Vec<(&Parsed, &KafkaSettings)> = parsed
        .iter()
        .filter_map(|p| p.mapping.kafka().map(|k| (p, k)))
        .collect();
    for (n, &(b, kb)) in kafka.iter().enumerate() {
        let Some(&(a, ka)) = kafka[..n]
            .iter()
            .find(|(_, ka)| ka.consumer_group_id == kb.consumer_group_id && ka.same_cluster(kb))
        else {
            continue;
        };
        let ((at, k_at), other) = match (b.explicit_group, a.explicit_group) {
            (true, _) => ((b, kb), a),
            (false, true) => ((a, ka), b),
            (false, false) => continue, // equal names, reported already
        };
        let whose = if other.explicit_group {
            ""
        } else {
            " (its default, sluice-<Name>)"
        };
        errs.push(format!(
            "mappings[{}].{}: {:?} is also the consumer group of mappings[{}]{whose} on the same cluster; give each mapping its own group (a shared group splits the topic's partitions between them)",
            at.index,
            group_field(k_at.cluster_name().is_some()),
            k_at.consumer_group_id,
            other.index
        ));
    }
}
