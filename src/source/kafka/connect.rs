//! From a Kafka mapping's settings to a running consumer: the client properties for its
//! authentication and TLS (secrets read from Secrets Manager, an environment variable or a file,
//! never logged), and the encoder from a fetched record to its entry in AWS's Kafka event.

use rdkafka::message::{Headers, OwnedMessage};
use rdkafka::Message;
use std::sync::Arc;

use super::event::{KafkaRecord, TimestampType};
use super::msk::{self, Listener};
use super::{iam, ClientSettings, Encode};
use crate::aws::Clients;
use crate::config::{KafkaCluster, KafkaSettings, SaslMechanism, SecretRef};

/// A secret's JSON, as AWS's Kafka secrets hold it.
#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Secret {
    username: Option<String>,
    password: Option<String>,
    certificate: Option<String>,
    private_key: Option<String>,
    private_key_password: Option<String>,
}

/// Reads a secret: Secrets Manager (in the ARN's region, with `clients`), an environment variable
/// or a file. The error names where it looked, never the value.
async fn read_secret(at: &SecretRef, clients: &Clients) -> Result<Secret, String> {
    let text = match at {
        SecretRef::Env(var) => {
            std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))?
        }
        SecretRef::File(path) => tokio::fs::read_to_string(path)
            .await
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        SecretRef::SecretsManager(arn) => {
            let out = clients
                .for_arn(arn)
                .secretsmanager
                .get_secret_value()
                .secret_id(arn)
                .send()
                .await
                .map_err(|e| format!("GetSecretValue {arn}: {}", crate::aws::error_text(&e)))?;
            out.secret_string()
                .ok_or_else(|| format!("secret {arn} has no SecretString"))?
                .to_string()
        }
    };
    serde_json::from_str(&text).map_err(|_| {
        format!(
            "{} is not the JSON object AWS's Kafka secrets hold",
            describe(at)
        )
    })
}

fn describe(at: &SecretRef) -> String {
    match at {
        SecretRef::Env(v) => format!("environment variable {v}"),
        SecretRef::File(p) => format!("file {}", p.display()),
        SecretRef::SecretsManager(a) => format!("secret {a}"),
    }
}

fn need(value: Option<String>, field: &str, at: &SecretRef) -> Result<String, String> {
    value
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("{} has no \"{field}\"", describe(at)))
}

/// The clients' settings for `kafka`: bootstrap servers (an MSK cluster's from
/// GetBootstrapBrokers), the security properties its `SourceAccessConfigurations` call for (SASL
/// over TLS, TLS, mutual TLS, MSK IAM) and the event's view of the cluster. AWS calls go through
/// `clients` (Secrets Manager, MSK).
pub async fn client_settings(
    kafka: &KafkaSettings,
    clients: &Clients,
) -> Result<ClientSettings, String> {
    let access = &kafka.access;
    let (servers, listener, msk) = match &kafka.cluster {
        KafkaCluster::SelfManaged { bootstrap_servers } => {
            (bootstrap_servers.join(","), None, None)
        }
        KafkaCluster::Msk { arn } => {
            let brokers =
                msk::bootstrap_brokers(&clients.for_region(&arn.region).kafka, &arn.arn).await?;
            let (servers, listener) = brokers
                .choose(access)
                .map_err(|e| format!("{}: {e}", arn.arn))?;
            (servers, Some(listener), Some(arn))
        }
    };
    let mut props: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: String| props.push((k.to_string(), v));
    let mut signer = None;
    let tls = access.server_root_ca.is_some() || access.client_certificate.is_some();
    if let Some(ca) = &access.server_root_ca {
        let s = read_secret(ca, clients).await?;
        set("ssl.ca.pem", need(s.certificate, "certificate", ca)?);
    }
    if let Some(cert) = &access.client_certificate {
        let s = read_secret(cert, clients).await?;
        set(
            "ssl.certificate.pem",
            need(s.certificate, "certificate", cert)?,
        );
        set("ssl.key.pem", need(s.private_key, "privateKey", cert)?);
        if let Some(p) = s.private_key_password.filter(|p| !p.is_empty()) {
            set("ssl.key.password", p);
        }
    }
    match (&access.sasl, listener) {
        // MSK's default: IAM when the cluster has it, else its unauthenticated listener.
        (Some(sasl), Some(l)) if sasl.mechanism == SaslMechanism::MskIam => match l {
            Listener::Iam => {
                let arn = msk.expect("an MSK listener comes with its cluster");
                let credentials = clients.credentials().ok_or(
                    "MSK IAM authentication needs AWS credentials, and none are configured",
                )?;
                set("security.protocol", "SASL_SSL".into());
                set("sasl.mechanism", "OAUTHBEARER".into());
                signer = Some(iam::MskIamSigner::new(&arn.region, credentials));
            }
            Listener::Tls => set("security.protocol", "SSL".into()),
            _ => set("security.protocol", "PLAINTEXT".into()),
        },
        (Some(sasl), _) => {
            let mechanism = match sasl.mechanism {
                SaslMechanism::Plain => "PLAIN",
                SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
                SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
                SaslMechanism::MskIam => {
                    return Err("MSK IAM authentication needs an Amazon MSK cluster".into())
                }
            };
            let at = sasl
                .credentials
                .as_ref()
                .ok_or("SASL authentication needs a secret")?;
            let s = read_secret(at, clients).await?;
            set("security.protocol", "SASL_SSL".into());
            set("sasl.mechanism", mechanism.into());
            set("sasl.username", need(s.username, "username", at)?);
            set("sasl.password", need(s.password, "password", at)?);
        }
        (None, _) if tls || listener == Some(Listener::Tls) => {
            set("security.protocol", "SSL".into())
        }
        (None, _) => set("security.protocol", "PLAINTEXT".into()),
    }
    let servers_list: Vec<&str> = servers.split(',').collect();
    let cluster = match msk {
        Some(arn) => crate::model::KafkaCluster::msk(arn.arn.clone(), &servers_list),
        None => crate::model::KafkaCluster::self_managed(&servers_list),
    };
    Ok(ClientSettings {
        bootstrap_servers: servers.clone(),
        group_id: kafka.consumer_group_id.clone(),
        topic: kafka.topic.clone(),
        properties: props,
        cluster,
        signer,
    })
}

/// A fetched record as its entry in AWS's Kafka event.
pub fn encoder() -> Encode {
    Arc::new(|m: &OwnedMessage| {
        let (timestamp, timestamp_type) = match m.timestamp() {
            rdkafka::Timestamp::CreateTime(t) => (Some(t), TimestampType::CreateTime),
            rdkafka::Timestamp::LogAppendTime(t) => (Some(t), TimestampType::LogAppendTime),
            rdkafka::Timestamp::NotAvailable => (None, TimestampType::NoTimestampType),
        };
        let headers = m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        KafkaRecord {
            topic: m.topic().to_string(),
            partition: m.partition(),
            offset: m.offset(),
            timestamp,
            timestamp_type,
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers,
        }
        .to_record(crate::worker::Clock::new().now_ms())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{KafkaAccess, KafkaSasl};

    fn settings(access: KafkaAccess) -> KafkaSettings {
        let mapping = crate::config::Mapping::kafka_for_tests();
        let mut k = mapping.kafka().unwrap().clone();
        k.access = access;
        k
    }

    async fn clients() -> Clients {
        let cfg = crate::config::parse_str("region: us-east-1\nmappings: []\n").unwrap_or_else(|_| {
            crate::config::parse_str("region: us-east-1\nmappings:\n  - EventSourceArn: arn:aws:sqs:us-east-1:000000000000:q\n    FunctionName: f\n").unwrap()
        });
        crate::aws::clients(&cfg).await
    }

    fn prop<'a>(s: &'a ClientSettings, key: &str) -> Option<&'a str> {
        s.properties
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The error of a SASL/PLAIN mapping whose secret is in the environment variable `var`.
    async fn plain_from_env(var: &str) -> String {
        client_settings(
            &settings(KafkaAccess {
                sasl: Some(KafkaSasl {
                    mechanism: SaslMechanism::Plain,
                    credentials: Some(SecretRef::Env(var.to_string())),
                }),
                ..KafkaAccess::default()
            }),
            &clients().await,
        )
        .await
        .unwrap_err()
    }

    #[tokio::test]
    async fn no_access_configuration_is_plaintext() {
        let s = client_settings(&settings(KafkaAccess::default()), &clients().await)
            .await
            .unwrap();
        assert_eq!(prop(&s, "security.protocol"), Some("PLAINTEXT"));
        assert!(!s.bootstrap_servers.is_empty());
        assert_eq!(
            s.group_id,
            settings(KafkaAccess::default()).consumer_group_id
        );
    }

    #[tokio::test]
    async fn scram_over_tls_with_a_root_ca_reads_its_secrets_from_env_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.json");
        std::fs::write(
            &ca,
            r#"{"certificate":"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"}"#,
        )
        .unwrap();
        let var = format!("SLUICE_TEST_KAFKA_SECRET_{}", std::process::id());
        std::env::set_var(&var, r#"{"username":"app","password":"s3cret"}"#);
        let s = client_settings(
            &settings(KafkaAccess {
                sasl: Some(KafkaSasl {
                    mechanism: SaslMechanism::ScramSha512,
                    credentials: Some(SecretRef::Env(var.clone())),
                }),
                client_certificate: None,
                server_root_ca: Some(SecretRef::File(ca)),
            }),
            &clients().await,
        )
        .await
        .unwrap();
        assert_eq!(prop(&s, "security.protocol"), Some("SASL_SSL"));
        assert_eq!(prop(&s, "sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(prop(&s, "sasl.username"), Some("app"));
        assert_eq!(prop(&s, "sasl.password"), Some("s3cret"));
        assert!(prop(&s, "ssl.ca.pem")
            .unwrap()
            .contains("BEGIN CERTIFICATE"));
        assert!(
            !format!("{s:?}").contains("s3cret"),
            "Debug shows no secret"
        );
        // Errors name where a secret was looked for, never what it holds.
        std::env::set_var(&var, r#"{"username":"app"}"#);
        let err = plain_from_env(&var).await;
        assert_eq!(
            err,
            format!("environment variable {var} has no \"password\"")
        );
        std::env::set_var(&var, "not json s3cret");
        let err = plain_from_env(&var).await;
        assert!(!err.contains("s3cret"), "{err}");
        std::env::remove_var(&var);
    }

    #[tokio::test]
    async fn mutual_tls_is_ssl_with_the_client_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("client.json");
        std::fs::write(
            &cert,
            r#"{"certificate":"CERT","privateKey":"KEY","privateKeyPassword":"pw"}"#,
        )
        .unwrap();
        let s = client_settings(
            &settings(KafkaAccess {
                client_certificate: Some(SecretRef::File(cert)),
                ..KafkaAccess::default()
            }),
            &clients().await,
        )
        .await
        .unwrap();
        assert_eq!(prop(&s, "security.protocol"), Some("SSL"));
        assert_eq!(prop(&s, "ssl.certificate.pem"), Some("CERT"));
        assert_eq!(prop(&s, "ssl.key.pem"), Some("KEY"));
        assert_eq!(prop(&s, "ssl.key.password"), Some("pw"));
    }
}
