//! The one place that builds AWS SDK clients: region and credentials from the SDK's default chain
//! (AWS_REGION, AWS_PROFILE, ECS task roles, IRSA web identity, IMDS), endpoint overrides from the
//! config (the SDK also honours AWS_ENDPOINT_URL and AWS_ENDPOINT_URL_<SERVICE> by itself), and the
//! SDK's own retries turned off so that sluice's retry policy alone decides.

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};

use crate::config::Config;

#[derive(Clone, Debug)]
pub struct Clients {
    pub kinesis: aws_sdk_kinesis::Client,
    pub dynamodbstreams: aws_sdk_dynamodbstreams::Client,
    pub lambda: aws_sdk_lambda::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub sns: aws_sdk_sns::Client,
    pub s3: aws_sdk_s3::Client,
}

macro_rules! client {
    ($sdk:ident, $shared:expr, $endpoint:expr) => {{
        let mut b = $sdk::config::Builder::from($shared);
        if let Some(url) = $endpoint {
            b = b.endpoint_url(url);
        }
        $sdk::Client::from_conf(b.build())
    }};
}

/// Builds every client sluice may use. Loads credentials lazily: nothing is called here.
pub async fn clients(cfg: &Config) -> Clients {
    let mut loader =
        aws_config::defaults(BehaviorVersion::latest()).retry_config(RetryConfig::disabled());
    if let Some(region) = &cfg.region {
        loader = loader.region(Region::new(region.clone()));
    }
    let shared = loader.load().await;
    let e = &cfg.endpoints;
    let s3 = {
        let mut b = aws_sdk_s3::config::Builder::from(&shared);
        if let Some(url) = &e.s3 {
            // Emulators and LocalStack serve buckets by path, not by virtual host.
            b = b.endpoint_url(url).force_path_style(true);
        }
        aws_sdk_s3::Client::from_conf(b.build())
    };
    Clients {
        kinesis: client!(aws_sdk_kinesis, &shared, e.kinesis.as_ref()),
        dynamodbstreams: client!(aws_sdk_dynamodbstreams, &shared, e.dynamodbstreams.as_ref()),
        lambda: client!(aws_sdk_lambda, &shared, e.lambda.as_ref()),
        sqs: client!(aws_sdk_sqs, &shared, e.sqs.as_ref()),
        sns: client!(aws_sdk_sns, &shared, e.sns.as_ref()),
        s3,
    }
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
