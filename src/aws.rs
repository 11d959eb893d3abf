//! The one place that builds AWS SDK clients: region and credentials from the SDK's default chain
//! (AWS_REGION, AWS_PROFILE, ECS task roles, IRSA web identity, IMDS), endpoint overrides from the
//! config (the SDK also honours AWS_ENDPOINT_URL and AWS_ENDPOINT_URL_<SERVICE> by itself), and the
//! SDK's own retries turned off so that sluice's retry policy alone decides.
//!
//! Every client carries timeouts, so that no call can hang on a half-open connection: a connect
//! timeout ([`CONNECT_TIMEOUT`]) and an operation timeout ([`DEFAULT_OPERATION_TIMEOUT`]) on all,
//! plus a read timeout ([`READ_TIMEOUT`]) on the clients whose calls are all short (Kinesis,
//! DynamoDB (the lease table), DynamoDB Streams, SNS, S3, Secrets Manager, MSK). The Lambda and SQS clients have no read timeout so that a long call
//! (Invoke, a ReceiveMessage long poll) needs only a per-call operation timeout, see
//! [`call_timeout`]. A timed-out call returns an `SdkError::TimeoutError`, never hangs.
//!
//! A mapping is served in its ARN's region: [`Clients::for_region`] / [`Clients::for_arn`] give
//! clients built from the same shared configuration (credentials, HTTP connection pool, endpoint
//! overrides) with only the region changed, cached per region.

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::{Config, Endpoints};
use crate::credentials::CachedCredentials;

/// Time to establish a TCP (and TLS) connection to an AWS endpoint.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Time from a request sent to the first byte of its response, on the short-call clients (Kinesis,
/// DynamoDB, DynamoDB Streams, SNS, S3). Not set on the Lambda and SQS clients.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The whole of one call (credentials, connection, request, response) on every client, unless the
/// call overrides it. Fits every call sluice makes except Lambda Invoke and SQS ReceiveMessage with
/// a long poll: those must set their own, e.g. with [`call_timeout`].
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

/// Timeouts for one long call, to pass as a per-call override:
/// `.customize().config_override(aws_sdk_lambda::config::Builder::default().timeout_config(aws::call_timeout(d)))`.
/// Sets the operation and read timeouts to `total`; the connect timeout stays [`CONNECT_TIMEOUT`].
pub fn call_timeout(total: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(total)
        .operation_timeout(total)
        .build()
}

fn short_calls() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .operation_timeout(DEFAULT_OPERATION_TIMEOUT)
        .build()
}

fn long_calls() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_timeout(DEFAULT_OPERATION_TIMEOUT)
        .build()
}

/// The clients of one region. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Clients {
    pub kinesis: aws_sdk_kinesis::Client,
    /// DynamoDB itself: the lease table of `coordination` (`endpoints.dynamodb`).
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub dynamodbstreams: aws_sdk_dynamodbstreams::Client,
    pub lambda: aws_sdk_lambda::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub sns: aws_sdk_sns::Client,
    pub s3: aws_sdk_s3::Client,
    /// Secrets Manager: the secrets of Kafka mappings' `SourceAccessConfigurations`.
    pub secretsmanager: aws_sdk_secretsmanager::Client,
    /// Amazon MSK: an MSK cluster's bootstrap brokers.
    pub kafka: aws_sdk_kafka::Client,
    factory: Arc<Factory>,
}

/// The clients without the factory (what the per-region cache holds).
#[derive(Clone, Debug)]
struct Set {
    kinesis: aws_sdk_kinesis::Client,
    dynamodb: aws_sdk_dynamodb::Client,
    dynamodbstreams: aws_sdk_dynamodbstreams::Client,
    lambda: aws_sdk_lambda::Client,
    sqs: aws_sdk_sqs::Client,
    sns: aws_sdk_sns::Client,
    s3: aws_sdk_s3::Client,
    secretsmanager: aws_sdk_secretsmanager::Client,
    kafka: aws_sdk_kafka::Client,
}

#[derive(Debug)]
struct Factory {
    shared: SdkConfig,
    endpoints: Endpoints,
    regions: Mutex<HashMap<String, Set>>,
    /// For the calls sluice signs itself: one credentials cache and one connection pool for the
    /// process, as the SDK clients share theirs.
    signing: Arc<CachedCredentials>,
    data_http: Result<reqwest::Client, String>,
}

macro_rules! client {
    ($sdk:ident, $shared:expr, $region:expr, $endpoint:expr, $timeouts:expr) => {{
        let mut b = $sdk::config::Builder::from($shared).timeout_config($timeouts);
        if let Some(r) = $region {
            b = b.region(Region::new(r.to_string()));
        }
        if let Some(url) = $endpoint {
            b = b.endpoint_url(url);
        }
        $sdk::Client::from_conf(b.build())
    }};
}

impl Factory {
    /// Clients for `region`, or for the shared configuration's region when `None`.
    fn build(&self, region: Option<&str>) -> Set {
        let (shared, e) = (&self.shared, &self.endpoints);
        let s3 = {
            let mut b = aws_sdk_s3::config::Builder::from(shared).timeout_config(short_calls());
            if let Some(r) = region {
                b = b.region(Region::new(r.to_string()));
            }
            if let Some(url) = &e.s3 {
                // Emulators and LocalStack serve buckets by path, not by virtual host.
                b = b.endpoint_url(url).force_path_style(true);
            }
            aws_sdk_s3::Client::from_conf(b.build())
        };
        Set {
            kinesis: client!(
                aws_sdk_kinesis,
                shared,
                region,
                e.kinesis.as_ref(),
                short_calls()
            ),
            dynamodb: client!(
                aws_sdk_dynamodb,
                shared,
                region,
                e.dynamodb.as_ref(),
                short_calls()
            ),
            dynamodbstreams: client!(
                aws_sdk_dynamodbstreams,
                shared,
                region,
                e.dynamodbstreams.as_ref(),
                short_calls()
            ),
            lambda: client!(
                aws_sdk_lambda,
                shared,
                region,
                e.lambda.as_ref(),
                long_calls()
            ),
            sqs: client!(aws_sdk_sqs, shared, region, e.sqs.as_ref(), long_calls()),
            sns: client!(aws_sdk_sns, shared, region, e.sns.as_ref(), short_calls()),
            s3,
            secretsmanager: client!(
                aws_sdk_secretsmanager,
                shared,
                region,
                e.secretsmanager.as_ref(),
                short_calls()
            ),
            kafka: client!(
                aws_sdk_kafka,
                shared,
                region,
                e.kafka.as_ref(),
                short_calls()
            ),
        }
    }
}

impl Clients {
    fn from_set(set: Set, factory: Arc<Factory>) -> Clients {
        Clients {
            kinesis: set.kinesis,
            dynamodb: set.dynamodb,
            dynamodbstreams: set.dynamodbstreams,
            lambda: set.lambda,
            sqs: set.sqs,
            sns: set.sns,
            s3: set.s3,
            secretsmanager: set.secretsmanager,
            kafka: set.kafka,
            factory,
        }
    }

    /// The clients for `region` (an empty region: these clients), built once per region from the
    /// same shared configuration: credentials, connection pool, timeouts and endpoint overrides
    /// are kept, only the region differs.
    pub fn for_region(&self, region: &str) -> Clients {
        if region.is_empty() {
            return self.clone();
        }
        let set = {
            let mut regions = self
                .factory
                .regions
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            regions
                .entry(region.to_string())
                .or_insert_with(|| self.factory.build(Some(region)))
                .clone()
        };
        Clients::from_set(set, self.factory.clone())
    }

    /// The process's AWS credentials (the SDK's default chain), for what signs by itself (MSK IAM
    /// tokens). `None` when the chain found no source at all.
    pub fn credentials(&self) -> Option<aws_credential_types::provider::SharedCredentialsProvider> {
        self.factory.shared.credentials_provider()
    }

    /// What sluice's own Kinesis data-plane client ([`crate::source::kinesis::wire`]) needs to
    /// reach and sign for these clients' region, decided as the SDK decides it: the endpoint
    /// override is `endpoints.kinesis`, else `AWS_ENDPOINT_URL_KINESIS` (or the profile's
    /// `endpoint_url` for Kinesis), else `AWS_ENDPOINT_URL`; FIPS and dual-stack from the shared
    /// configuration; the same credentials provider.
    pub fn kinesis_data_plane(&self) -> Result<KinesisDataPlane, String> {
        let shared = &self.factory.shared;
        let endpoint_url = self.factory.endpoints.kinesis.clone().or_else(|| {
            shared
                .service_config()
                .and_then(|c| {
                    c.load_config(
                        aws_types::service_config::ServiceConfigKey::builder()
                            .service_id("Kinesis")
                            .env("AWS_ENDPOINT_URL")
                            .profile("endpoint_url")
                            .build()
                            .ok()?,
                    )
                })
                .or_else(|| shared.endpoint_url().map(str::to_string))
        });
        let region = self
            .kinesis
            .config()
            .region()
            .map(|r| r.to_string())
            .ok_or("no AWS region: set `region` in the config or AWS_REGION")?;
        Ok(KinesisDataPlane {
            endpoint_url,
            region,
            use_fips: shared.use_fips().unwrap_or(false),
            use_dual_stack: shared.use_dual_stack().unwrap_or(false),
            account_id_endpoint_mode: shared
                .account_id_endpoint_mode()
                .map_or_else(|| "preferred".to_string(), |m| m.to_string()),
            credentials: self.factory.signing.clone(),
            http: self.factory.data_http.clone()?,
        })
    }

    /// The clients for the region an ARN names; these clients when `arn` is not an ARN or names no
    /// region (an S3 bucket ARN, a bare function name).
    pub fn for_arn(&self, arn: &str) -> Clients {
        match arn_region(arn) {
            Some(region) => self.for_region(region),
            None => self.clone(),
        }
    }
}

/// Where and with what sluice's own Kinesis data-plane calls go: see
/// [`Clients::kinesis_data_plane`].
#[derive(Clone, Debug)]
pub struct KinesisDataPlane {
    /// The endpoint override; `None`: AWS's endpoint for the stream (resolved per stream ARN).
    pub endpoint_url: Option<String>,
    pub region: String,
    pub use_fips: bool,
    pub use_dual_stack: bool,
    /// The SDK's `AccountIdEndpointMode` (`preferred` unless configured).
    pub account_id_endpoint_mode: String,
    /// The process's one cache (shared by every region's clients).
    pub credentials: Arc<CachedCredentials>,
    /// The process's one connection pool for these calls.
    pub http: reqwest::Client,
}

/// The HTTP client of the calls sluice sends itself: the SDK clients' connect and whole-call
/// timeouts, no redirects, and, as the SDK clients, no proxy from the environment.
pub fn data_http() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        // The whole exchange, body read included.
        .timeout(DEFAULT_OPERATION_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// The region field of `arn:<partition>:<service>:<region>:…`, when there is one.
pub fn arn_region(arn: &str) -> Option<&str> {
    let mut fields = arn.strip_prefix("arn:")?.splitn(4, ':');
    let (_partition, _service) = (fields.next()?, fields.next()?);
    fields.next().filter(|r| !r.is_empty())
}

/// Builds every client sluice may use, in the configured (or the SDK chain's) region; other
/// regions with [`Clients::for_region`]. Loads credentials lazily: nothing is called here.
pub async fn clients(cfg: &Config) -> Clients {
    let mut loader =
        aws_config::defaults(BehaviorVersion::latest()).retry_config(RetryConfig::disabled());
    if let Some(region) = &cfg.region {
        loader = loader.region(Region::new(region.clone()));
    }
    let shared = loader.load().await;
    let factory = Factory {
        signing: Arc::new(CachedCredentials::new(shared.credentials_provider())),
        data_http: data_http().map_err(|e| format!("an HTTP client: {}", error_chain(&e))),
        shared,
        endpoints: cfg.endpoints.clone(),
        regions: Mutex::new(HashMap::new()),
    };
    let set = factory.build(None);
    let factory = Arc::new(factory);
    if let Some(region) = factory.shared.region() {
        let mut regions = factory.regions.lock().unwrap_or_else(|p| p.into_inner());
        regions.insert(region.to_string(), set.clone());
    }
    Clients::from_set(set, factory)
}

/// An SDK error as one line: the service's code and message, or the transport error chain.
pub fn error_text<E, R>(e: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match e.as_service_error() {
        Some(s) => format!(
            "{}: {}",
            s.code().unwrap_or("error"),
            s.message().unwrap_or("")
        ),
        None => error_chain(e),
    }
}

/// An error and its sources as one line: `outer: cause: root cause`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_region_of_an_arn() {
        assert_eq!(
            arn_region("arn:aws:kinesis:eu-west-1:123456789012:stream/s"),
            Some("eu-west-1")
        );
        assert_eq!(
            arn_region("arn:aws:lambda:ap-south-1:123456789012:function:f:live"),
            Some("ap-south-1")
        );
        assert_eq!(arn_region("arn:aws:s3:::bucket"), None);
        assert_eq!(arn_region("f"), None);
        assert_eq!(arn_region("123456789012:function:f"), None);
        assert_eq!(arn_region("arn:aws"), None);
    }

    fn config() -> Config {
        crate::config::parse_str(
            "region: us-east-1\nendpoints:\n  kinesis: http://127.0.0.1:1\ncheckpoint_dir: /tmp/x\nmappings:\n  - EventSourceArn: arn:aws:kinesis:us-east-1:000000000000:stream/s\n    StartingPosition: LATEST\n    FunctionName: f\n",
        )
        .expect("config")
    }

    #[tokio::test]
    async fn the_kinesis_data_plane_keeps_the_override_and_takes_the_region() {
        let clients = clients(&config()).await;
        let plane = clients.kinesis_data_plane().unwrap();
        assert_eq!(plane.endpoint_url.as_deref(), Some("http://127.0.0.1:1"));
        assert_eq!(plane.region, "us-east-1");
        let eu = clients
            .for_region("eu-west-1")
            .kinesis_data_plane()
            .unwrap();
        assert_eq!(eu.region, "eu-west-1");
        assert_eq!(eu.endpoint_url.as_deref(), Some("http://127.0.0.1:1"));
        assert!(!eu.use_fips && !eu.use_dual_stack);
        assert_eq!(eu.account_id_endpoint_mode, "preferred");
        // One credentials cache for every region.
        assert!(Arc::ptr_eq(&plane.credentials, &eu.credentials));
    }

    #[tokio::test]
    async fn clients_per_region_are_cached_and_carry_the_timeouts() {
        let clients = clients(&config()).await;
        assert_eq!(
            clients.kinesis.config().region().map(|r| r.as_ref()),
            Some("us-east-1")
        );
        let eu = clients.for_region("eu-west-1");
        for region in [
            eu.kinesis.config().region(),
            eu.dynamodb.config().region(),
            eu.dynamodbstreams.config().region(),
            eu.lambda.config().region(),
            eu.sqs.config().region(),
            eu.sns.config().region(),
            eu.s3.config().region(),
        ] {
            assert_eq!(region.map(|r| r.as_ref()), Some("eu-west-1"));
        }
        assert_eq!(
            eu.kinesis
                .config()
                .timeout_config()
                .and_then(|t| t.operation_timeout()),
            Some(DEFAULT_OPERATION_TIMEOUT)
        );
        let ddb = eu.dynamodb.config().timeout_config();
        assert_eq!(
            (
                ddb.and_then(|t| t.connect_timeout()),
                ddb.and_then(|t| t.read_timeout()),
                ddb.and_then(|t| t.operation_timeout())
            ),
            (
                Some(CONNECT_TIMEOUT),
                Some(READ_TIMEOUT),
                Some(DEFAULT_OPERATION_TIMEOUT)
            ),
            "the lease table's calls are all short"
        );
        assert_eq!(
            eu.dynamodb
                .config()
                .retry_config()
                .map(|r| r.max_attempts()),
            Some(1),
            "sluice's retry policy alone decides"
        );
        assert_eq!(
            eu.lambda
                .config()
                .timeout_config()
                .and_then(|t| t.read_timeout()),
            None,
            "no read timeout on the Lambda client: Invoke overrides only its operation timeout"
        );
        assert_eq!(
            clients.factory.regions.lock().unwrap().len(),
            2,
            "us-east-1 and eu-west-1, once each"
        );
        clients.for_arn("arn:aws:sqs:eu-west-1:123456789012:q");
        assert_eq!(clients.factory.regions.lock().unwrap().len(), 2);
        let same = clients.for_arn("arn:aws:s3:::bucket");
        assert_eq!(
            same.s3.config().region().map(|r| r.as_ref()),
            Some("us-east-1")
        );
    }
}
