//! An Amazon MSK cluster's brokers: `kafka:GetBootstrapBrokers` for the mapping's `EventSourceArn`,
//! and which of the cluster's listeners the mapping's authentication connects to.
//!
//! MSK gives one bootstrap string per listener it has enabled (plaintext, TLS, SASL/SCRAM, IAM, and
//! their public-access variants). Like AWS's MSK mappings: SASL/SCRAM uses the SCRAM listener,
//! mutual TLS the TLS listener, and a mapping with neither uses IAM when the cluster has IAM
//! access control, else the cluster's unauthenticated listener (TLS, or plaintext when that is all
//! it has). Private strings are preferred; the public ones serve when a cluster has only those
//! (sluice may run outside the cluster's VPC, where AWS's pollers never do).

use crate::config::{KafkaAccess, SaslMechanism};

/// The listener a mapping connects to, which decides its security protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// SASL/OAUTHBEARER with an IAM token, over TLS.
    Iam,
    /// SASL/SCRAM over TLS.
    Scram,
    /// TLS (mutual TLS with a client certificate, or unauthenticated).
    Tls,
    /// Unauthenticated, unencrypted.
    Plaintext,
}

/// A cluster's bootstrap strings, as GetBootstrapBrokers returns them (empty: not enabled).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Brokers {
    pub plaintext: Option<String>,
    pub tls: Option<String>,
    pub sasl_scram: Option<String>,
    pub sasl_iam: Option<String>,
    pub public_tls: Option<String>,
    pub public_sasl_scram: Option<String>,
    pub public_sasl_iam: Option<String>,
}

fn some(s: Option<&str>) -> Option<String> {
    s.filter(|s| !s.is_empty()).map(str::to_string)
}

/// Reads `cluster_arn`'s bootstrap strings (the client must be in the cluster's region).
pub async fn bootstrap_brokers(
    client: &aws_sdk_kafka::Client,
    cluster_arn: &str,
) -> Result<Brokers, String> {
    let out = client
        .get_bootstrap_brokers()
        .cluster_arn(cluster_arn)
        .send()
        .await
        .map_err(|e| {
            format!(
                "GetBootstrapBrokers {cluster_arn}: {}",
                crate::aws::error_text(&e)
            )
        })?;
    Ok(Brokers {
        plaintext: some(out.bootstrap_broker_string()),
        tls: some(out.bootstrap_broker_string_tls()),
        sasl_scram: some(out.bootstrap_broker_string_sasl_scram()),
        sasl_iam: some(out.bootstrap_broker_string_sasl_iam()),
        public_tls: some(out.bootstrap_broker_string_public_tls()),
        public_sasl_scram: some(out.bootstrap_broker_string_public_sasl_scram()),
        public_sasl_iam: some(out.bootstrap_broker_string_public_sasl_iam()),
    })
}

impl Brokers {
    /// The bootstrap servers and listener for a mapping with `access`; an error names what the
    /// cluster lacks.
    pub fn choose(&self, access: &KafkaAccess) -> Result<(String, Listener), String> {
        let pick = |private: &Option<String>, public: &Option<String>| {
            private.clone().or_else(|| public.clone())
        };
        let tls = pick(&self.tls, &self.public_tls);
        let found = match access.sasl.as_ref().map(|s| s.mechanism) {
            Some(SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512) => {
                pick(&self.sasl_scram, &self.public_sasl_scram)
                    .map(|s| (s, Listener::Scram))
                    .ok_or("the cluster has no SASL/SCRAM listener")?
            }
            Some(SaslMechanism::Plain) => {
                return Err("Amazon MSK has no SASL/PLAIN listener (use SASL/SCRAM)".into())
            }
            Some(SaslMechanism::MskIam) => pick(&self.sasl_iam, &self.public_sasl_iam)
                .map(|s| (s, Listener::Iam))
                .or_else(|| tls.map(|s| (s, Listener::Tls)))
                .or_else(|| self.plaintext.clone().map(|s| (s, Listener::Plaintext)))
                .ok_or("the cluster lists no bootstrap brokers")?,
            None if access.client_certificate.is_some() => tls
                .map(|s| (s, Listener::Tls))
                .ok_or("the cluster has no TLS listener for mutual TLS")?,
            None => tls
                .map(|s| (s, Listener::Tls))
                .or_else(|| self.plaintext.clone().map(|s| (s, Listener::Plaintext)))
                .ok_or("the cluster lists no bootstrap brokers")?,
        };
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{KafkaSasl, SecretRef};

    fn iam() -> KafkaAccess {
        KafkaAccess {
            sasl: Some(KafkaSasl {
                mechanism: SaslMechanism::MskIam,
                credentials: None,
            }),
            ..KafkaAccess::default()
        }
    }

    fn all() -> Brokers {
        Brokers {
            plaintext: Some("b-1:9092".into()),
            tls: Some("b-1:9094".into()),
            sasl_scram: Some("b-1:9096".into()),
            sasl_iam: Some("b-1:9098".into()),
            public_tls: Some("p-1:9194".into()),
            public_sasl_scram: Some("p-1:9196".into()),
            public_sasl_iam: Some("p-1:9198".into()),
        }
    }

    #[test]
    fn each_authentication_uses_its_listener_private_first() {
        assert_eq!(
            all().choose(&iam()).unwrap(),
            ("b-1:9098".into(), Listener::Iam)
        );
        let scram = KafkaAccess {
            sasl: Some(KafkaSasl {
                mechanism: SaslMechanism::ScramSha512,
                credentials: Some(SecretRef::Env("X".into())),
            }),
            ..KafkaAccess::default()
        };
        assert_eq!(
            all().choose(&scram).unwrap(),
            ("b-1:9096".into(), Listener::Scram)
        );
        let mtls = KafkaAccess {
            client_certificate: Some(SecretRef::Env("X".into())),
            ..KafkaAccess::default()
        };
        assert_eq!(
            all().choose(&mtls).unwrap(),
            ("b-1:9094".into(), Listener::Tls)
        );
        let public_only = Brokers {
            public_sasl_iam: Some("p-1:9198".into()),
            ..Brokers::default()
        };
        assert_eq!(
            public_only.choose(&iam()).unwrap(),
            ("p-1:9198".into(), Listener::Iam)
        );
    }

    #[test]
    fn without_iam_the_default_falls_back_to_the_unauthenticated_listeners() {
        let tls = Brokers {
            tls: Some("b:9094".into()),
            plaintext: Some("b:9092".into()),
            ..Brokers::default()
        };
        assert_eq!(
            tls.choose(&iam()).unwrap(),
            ("b:9094".into(), Listener::Tls)
        );
        let plain = Brokers {
            plaintext: Some("b:9092".into()),
            ..Brokers::default()
        };
        assert_eq!(
            plain.choose(&iam()).unwrap(),
            ("b:9092".into(), Listener::Plaintext)
        );
        assert_eq!(
            Brokers::default().choose(&iam()).unwrap_err(),
            "the cluster lists no bootstrap brokers"
        );
    }

    #[test]
    fn a_missing_listener_is_named() {
        let scram = KafkaAccess {
            sasl: Some(KafkaSasl {
                mechanism: SaslMechanism::ScramSha256,
                credentials: Some(SecretRef::Env("X".into())),
            }),
            ..KafkaAccess::default()
        };
        let plain = Brokers {
            plaintext: Some("b:9092".into()),
            ..Brokers::default()
        };
        assert_eq!(
            plain.choose(&scram).unwrap_err(),
            "the cluster has no SASL/SCRAM listener"
        );
    }
}
