//! Amazon MSK IAM access control: the SASL/OAUTHBEARER token MSK accepts, and the librdkafka
//! client context that hands it out.
//!
//! The token is what AWS's own signer libraries (aws-msk-iam-sasl-signer-*) produce: the URL
//! `https://kafka.<region>.amazonaws.com/?Action=kafka-cluster%3AConnect`, presigned with SigV4 in
//! its query string for the service `kafka-cluster` with a 900-second expiry (the session token
//! included when the credentials have one), a `User-Agent` parameter appended after signing, then
//! base64url-encoded without padding. Credentials come from the SDK's default chain (task role,
//! IRSA, instance profile, environment), so the role needs `kafka-cluster:Connect` and the topic
//! and group actions listed in docs/kafka.md. librdkafka asks for a new token (through
//! [`AuthContext`]) before the current one expires.

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
};
use aws_sigv4::sign::v4;
use base64::Engine;
use rdkafka::client::OAuthToken;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a token is valid, as AWS's signers make it.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(900);
/// The `User-Agent` parameter the token carries.
const USER_AGENT: &str = concat!("sluice/", env!("CARGO_PKG_VERSION"));
/// How long fetching credentials may take before a token refresh fails (librdkafka retries).
const CREDENTIALS_TIMEOUT: Duration = Duration::from_secs(10);

/// A signed token and when it expires (epoch milliseconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub token: String,
    pub expires_ms: i64,
}

/// The token for `region` with `credentials`, signed as of `now`.
pub fn token(region: &str, credentials: Credentials, now: SystemTime) -> Result<Token, String> {
    let identity = credentials.into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(TOKEN_LIFETIME);
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("kafka-cluster")
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| format!("signing the MSK IAM token: {e}"))?
        .into();
    let url = format!("https://kafka.{region}.amazonaws.com/?Action=kafka-cluster%3AConnect");
    let signable = SignableRequest::new("GET", &url, std::iter::empty(), SignableBody::Bytes(&[]))
        .map_err(|e| format!("signing the MSK IAM token: {e}"))?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| format!("signing the MSK IAM token: {e}"))?
        .into_parts();
    let mut request = http::Request::builder()
        .uri(&url)
        .body(())
        .map_err(|e| format!("signing the MSK IAM token: {e}"))?;
    instructions.apply_to_request_http1x(&mut request);
    let signed = format!("{}&User-Agent={}", request.uri(), encode_param(USER_AGENT));
    let signed_at = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    Ok(Token {
        token: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signed),
        // X-Amz-Date has whole seconds: the token expires TOKEN_LIFETIME after them.
        expires_ms: ((signed_at.as_secs() + TOKEN_LIFETIME.as_secs()) * 1000) as i64,
    })
}

/// A query parameter value, percent-encoded as SigV4 does (unreserved characters kept).
fn encode_param(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Signs tokens for one region with the process's AWS credentials.
pub struct MskIamSigner {
    region: String,
    credentials: SharedCredentialsProvider,
    /// The runtime the credentials provider runs on; tokens are asked for on librdkafka's threads.
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for MskIamSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MskIamSigner")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl MskIamSigner {
    /// Must be called on the tokio runtime.
    pub fn new(region: &str, credentials: SharedCredentialsProvider) -> Arc<Self> {
        Arc::new(MskIamSigner {
            region: region.to_string(),
            credentials,
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// A fresh token. Blocks the calling thread while credentials are fetched: call it from a
    /// librdkafka thread, never from the async runtime.
    pub fn fresh(&self) -> Result<Token, String> {
        let provider = self.credentials.clone();
        let credentials = self
            .runtime
            .block_on(async move {
                tokio::time::timeout(CREDENTIALS_TIMEOUT, provider.provide_credentials()).await
            })
            .map_err(|_| "fetching AWS credentials for MSK IAM timed out".to_string())?
            .map_err(|e| format!("no AWS credentials for MSK IAM: {e}"))?;
        token(&self.region, credentials, SystemTime::now())
    }
}

/// What every Kafka client of a mapping shares: librdkafka's logs at debug and, for MSK IAM, the
/// token.
#[derive(Clone)]
pub struct AuthContext {
    pub(super) label: String,
    pub(super) signer: Option<Arc<MskIamSigner>>,
}

impl AuthContext {
    /// The token librdkafka asks for (MSK IAM only).
    pub(super) fn oauth_token(&self) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        let signer = self
            .signer
            .as_ref()
            .ok_or("OAUTHBEARER is only used for MSK IAM, which this client is not set up for")?;
        let t = signer.fresh().inspect_err(|e| {
            tracing::warn!(client = %self.label, error = %e, "cannot sign an MSK IAM token; the client retries")
        })?;
        tracing::debug!(client = %self.label, expires_ms = t.expires_ms, "signed an MSK IAM token");
        Ok(OAuthToken {
            token: t.token,
            principal_name: "sluice".into(),
            lifetime_ms: t.expires_ms,
        })
    }
}

impl rdkafka::ClientContext for AuthContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn log(&self, _level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        tracing::debug!(client = %self.label, facility = fac, "librdkafka: {message}");
    }

    /// The consumer reports its errors through the group (rate-limited); a producer's failures
    /// surface as failed sends, which its caller logs, so the client's own view goes to debug.
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::debug!(client = %self.label, error = %error, "Kafka client error: {reason}");
    }

    fn generate_oauth_token(
        &self,
        _config: Option<&str>,
    ) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        self.oauth_token()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(t: &Token) -> String {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&t.token)
            .unwrap();
        String::from_utf8(bytes).unwrap()
    }

    fn param<'a>(url: &'a str, name: &str) -> Option<&'a str> {
        url.split_once('?')?
            .1
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
    }

    const AT: u64 = 1_700_000_000;

    #[test]
    fn the_token_is_a_presigned_connect_url_as_aws_signers_make_it() {
        let creds = Credentials::new("AKIDEXAMPLE", "secret", None, None, "test");
        let t = token("eu-west-1", creds, UNIX_EPOCH + Duration::from_secs(AT)).unwrap();
        assert!(!t.token.contains('='), "no padding: {}", t.token);
        assert!(
            !t.token.contains('+') && !t.token.contains('/'),
            "base64url"
        );
        let url = decoded(&t);
        assert!(
            url.starts_with(
                "https://kafka.eu-west-1.amazonaws.com/?Action=kafka-cluster%3AConnect&"
            ),
            "{url}"
        );
        assert_eq!(param(&url, "X-Amz-Algorithm"), Some("AWS4-HMAC-SHA256"));
        assert_eq!(
            param(&url, "X-Amz-Credential"),
            Some("AKIDEXAMPLE%2F20231114%2Feu-west-1%2Fkafka-cluster%2Faws4_request")
        );
        assert_eq!(param(&url, "X-Amz-Date"), Some("20231114T221320Z"));
        assert_eq!(param(&url, "X-Amz-Expires"), Some("900"));
        assert_eq!(param(&url, "X-Amz-SignedHeaders"), Some("host"));
        assert_eq!(param(&url, "X-Amz-Signature").map(str::len), Some(64));
        assert!(param(&url, "X-Amz-Security-Token").is_none());
        assert!(
            url.ends_with(&format!(
                "&User-Agent=sluice%2F{}",
                env!("CARGO_PKG_VERSION")
            )),
            "{url}"
        );
        assert_eq!(t.expires_ms, ((AT + 900) * 1000) as i64);
    }

    #[test]
    fn a_session_token_is_signed_into_the_url() {
        let creds = Credentials::new("ASIA1", "secret", Some("tok/en+=".into()), None, "test");
        let url =
            decoded(&token("us-east-1", creds, UNIX_EPOCH + Duration::from_secs(AT)).unwrap());
        assert_eq!(param(&url, "X-Amz-Security-Token"), Some("tok%2Fen%2B%3D"));
    }

    #[test]
    fn the_signature_depends_on_the_secret_and_the_time() {
        let at = |secs, secret: &str| {
            let creds = Credentials::new("AKID", secret, None, None, "test");
            let url = decoded(
                &token("us-east-1", creds, UNIX_EPOCH + Duration::from_secs(secs)).unwrap(),
            );
            param(&url, "X-Amz-Signature").unwrap().to_string()
        };
        assert_eq!(at(AT, "a"), at(AT, "a"));
        assert_ne!(at(AT, "a"), at(AT, "b"));
        assert_ne!(at(AT, "a"), at(AT + 1, "a"));
    }
}
