//! AWS Lambda `Invoke` (RequestResponse) as a [`Dispatcher`]. The client is built with the SDK's
//! retries off: every retry decision is the retry policy's.
//!
//! No Invoke can hang: each has an operation timeout of the function's configured `Timeout` plus
//! [`INVOKE_MARGIN`]. The timeout is read once, on the first invoke, with GetFunctionConfiguration
//! (itself bounded by [`CONFIG_TIMEOUT`]); when that does not answer (no permission, an emulator),
//! Lambda's maximum of 900 s is assumed. An Invoke that runs out of that time on sluice's side is
//! a service error, not a function error: sluice cannot know whether the function ran, so no
//! attempt is counted and the batch is retried after a backoff.

use async_trait::async_trait;
use aws_sdk_lambda::config::timeout::TimeoutConfig;
use aws_sdk_lambda::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use aws_sdk_lambda::Client;
use bytes::Bytes;
use std::time::Duration;
use tokio::sync::OnceCell;
use tracing::{info, warn};

use super::{DispatchError, Dispatcher, Invoked};
use crate::aws::error_text;

/// Lambda's longest function timeout, assumed when the function's own cannot be read.
pub const MAX_FUNCTION_TIMEOUT: Duration = Duration::from_secs(900);
/// Added to the function's timeout for an Invoke: the network, a cold start, the service's queueing.
pub const INVOKE_MARGIN: Duration = Duration::from_secs(10);
/// How long GetFunctionConfiguration may take.
pub const CONFIG_TIMEOUT: Duration = Duration::from_secs(5);

pub struct LambdaDispatcher {
    client: Client,
    function_name: String,
    function_arn: String,
    /// The function's configured timeout (`None`: Lambda did not tell), read once.
    configured_timeout: OnceCell<Option<Duration>>,
    margin: Duration,
    config_timeout: Duration,
}

impl LambdaDispatcher {
    /// `function_name` as configured; `region`/`account` complete it into an ARN when it is a bare name.
    pub fn new(client: Client, function_name: String, region: &str, account: &str) -> Self {
        let function_arn = if function_name.starts_with("arn:") {
            function_name.clone()
        } else if function_name.contains(":function:") {
            format!("arn:aws:lambda:{region}:{function_name}")
        } else {
            format!("arn:aws:lambda:{region}:{account}:function:{function_name}")
        };
        LambdaDispatcher {
            client,
            function_name,
            function_arn,
            configured_timeout: OnceCell::new(),
            margin: INVOKE_MARGIN,
            config_timeout: CONFIG_TIMEOUT,
        }
    }

    /// The function's timeout (Lambda's maximum, 900 s, when unknown) plus the margin.
    async fn invoke_timeout(&self) -> Duration {
        self.configured_timeout()
            .await
            .unwrap_or(MAX_FUNCTION_TIMEOUT)
            + self.margin
    }

    /// The function's configured timeout; asks Lambda once.
    async fn configured_timeout(&self) -> Option<Duration> {
        *self
            .configured_timeout
            .get_or_init(|| self.read_function_timeout())
            .await
    }

    /// GetFunctionConfiguration's `Timeout`, if it answers.
    async fn read_function_timeout(&self) -> Option<Duration> {
        let function = self.function_name.as_str();
        let result = self
            .client
            .get_function_configuration()
            .function_name(function)
            .customize()
            .config_override(self.with_timeout(self.config_timeout))
            .send()
            .await;
        match result {
            Ok(out) => match out.timeout() {
                Some(t) if t > 0 => {
                    let t = Duration::from_secs(t as u64).min(MAX_FUNCTION_TIMEOUT);
                    info!(
                        function,
                        timeout_s = t.as_secs(),
                        "the function's timeout bounds each invoke"
                    );
                    Some(t)
                }
                _ => None,
            },
            Err(e) => {
                info!(function, error = %error_text(&e), "cannot read the function's timeout (GetFunctionConfiguration): each invoke is bounded by Lambda's maximum, 900 s");
                None
            }
        }
    }

    /// A per-call config with this operation timeout and the client's other timeouts.
    fn with_timeout(&self, operation: Duration) -> aws_sdk_lambda::config::Builder {
        let timeouts = match self.client.config().timeout_config() {
            Some(base) => base.to_builder(),
            None => TimeoutConfig::builder(),
        }
        .operation_timeout(operation)
        .build();
        aws_sdk_lambda::Config::builder().timeout_config(timeouts)
    }
}

#[async_trait]
impl Dispatcher for LambdaDispatcher {
    async fn invoke(&self, payload: Bytes) -> Result<Invoked, DispatchError> {
        let timeout = self.invoke_timeout().await;
        let result = self
            .client
            .invoke()
            .function_name(&self.function_name)
            .invocation_type(InvocationType::RequestResponse)
            .payload(Blob::new(payload.to_vec()))
            .customize()
            .config_override(self.with_timeout(timeout))
            .send()
            .await;
        match result {
            Ok(out) => Ok(Invoked {
                status: out.status_code() as u16,
                function_error: out.function_error().map(str::to_string),
                executed_version: out.executed_version().map(str::to_string),
                request_id: aws_sdk_lambda::operation::RequestId::request_id(&out)
                    .map(str::to_string),
                body: out
                    .payload()
                    .map(|b| Bytes::copy_from_slice(b.as_ref()))
                    .unwrap_or_default(),
            }),
            Err(SdkError::TimeoutError(_)) => {
                let message = format!(
                    "no answer from Lambda within {} s (the function's timeout plus {} s): whether the function ran is unknown",
                    timeout.as_secs(),
                    self.margin.as_secs()
                );
                warn!(function = %self.function_name, timeout_s = timeout.as_secs(), "Invoke timed out on sluice's side; retrying without counting an attempt");
                Err(DispatchError::Service {
                    status: None,
                    message,
                })
            }
            Err(e) => Err(classify(e)),
        }
    }

    fn function_arn(&self) -> &str {
        &self.function_arn
    }

    async fn function_timeout(&self) -> Option<Duration> {
        self.configured_timeout().await
    }
}

fn classify<E: ProvideErrorMetadata + std::error::Error + 'static>(
    e: SdkError<E>,
) -> DispatchError {
    let status = e.raw_response().map(|r| r.status().as_u16());
    let message = error_text(&e);
    let code = e.code().unwrap_or_default();
    if code == "TooManyRequestsException" || status == Some(429) {
        DispatchError::Throttled { status, message }
    } else if code == "RequestTooLargeException" || status == Some(413) {
        DispatchError::PayloadTooLarge { message }
    } else {
        DispatchError::Service { status, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_arns_are_completed() {
        let c = Client::from_conf(
            aws_sdk_lambda::Config::builder()
                .behavior_version(aws_sdk_lambda::config::BehaviorVersion::latest())
                .build(),
        );
        let arn =
            |n: &str| LambdaDispatcher::new(c.clone(), n.into(), "eu-west-1", "123").function_arn;
        assert_eq!(arn("f"), "arn:aws:lambda:eu-west-1:123:function:f");
        assert_eq!(
            arn("f:live"),
            "arn:aws:lambda:eu-west-1:123:function:f:live"
        );
        assert_eq!(
            arn("arn:aws:lambda:us-east-1:9:function:g"),
            "arn:aws:lambda:us-east-1:9:function:g"
        );
    }
}

#[cfg(test)]
mod timeout_tests {
    //! Against a fake Lambda endpoint served on 127.0.0.1 by the test.
    use super::*;
    use aws_sdk_lambda::config::{BehaviorVersion, Credentials, Region};
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use axum::routing::{get, post};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[derive(Clone, Copy)]
    enum Config {
        Timeout(i32),
        NotFound,
        Hang,
    }

    /// Serves GetFunctionConfiguration as `config` says and Invoke with `{"ok":true}`, or never
    /// when `invoke_hangs`; returns the client and the count of GetFunctionConfiguration calls.
    async fn fake_lambda(config: Config, invoke_hangs: bool) -> (Client, Arc<AtomicUsize>) {
        let reads = Arc::new(AtomicUsize::new(0));
        let counter = reads.clone();
        let app = axum::Router::new()
            .route(
                "/2015-03-31/functions/{name}/configuration",
                get(move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async move {
                        match config {
                            Config::Timeout(t) => axum::Json(serde_json::json!({
                                "FunctionName": "f",
                                "FunctionArn": "arn:aws:lambda:us-east-1:1:function:f",
                                "Timeout": t,
                                "MemorySize": 128
                            }))
                            .into_response(),
                            Config::NotFound => (
                                StatusCode::NOT_FOUND,
                                [("x-amzn-errortype", "ResourceNotFoundException")],
                                r#"{"Type":"User","message":"Function not found"}"#,
                            )
                                .into_response(),
                            Config::Hang => std::future::pending().await,
                        }
                    }
                }),
            )
            .route(
                "/2015-03-31/functions/{name}/invocations",
                post(move || async move {
                    if invoke_hangs {
                        std::future::pending::<()>().await;
                    }
                    ([("x-amz-executed-version", "$LATEST")], r#"{"ok":true}"#)
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let client = Client::from_conf(
            aws_sdk_lambda::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(Region::new("us-east-1"))
                .credentials_provider(Credentials::new("t", "t", None, None, "t"))
                .retry_config(aws_sdk_lambda::config::retry::RetryConfig::disabled())
                .endpoint_url(url)
                .build(),
        );
        (client, reads)
    }

    fn dispatcher(client: Client) -> LambdaDispatcher {
        let mut d = LambdaDispatcher::new(client, "f".into(), "us-east-1", "1");
        d.margin = Duration::from_millis(200);
        d.config_timeout = Duration::from_millis(300);
        d
    }

    async fn invoke(d: &LambdaDispatcher) -> Result<Invoked, DispatchError> {
        // A bound on the test, not a synchronisation: the dispatcher must return by itself.
        tokio::time::timeout(Duration::from_secs(10), d.invoke(Bytes::from_static(b"{}")))
            .await
            .expect("Invoke hung")
    }

    #[tokio::test]
    async fn an_invoke_lambda_never_answers_ends_after_the_function_timeout() {
        let (client, _) = fake_lambda(Config::Timeout(1), true).await;
        let d = dispatcher(client);
        let started = std::time::Instant::now();
        match invoke(&d).await {
            Err(DispatchError::Service {
                status: None,
                message,
            }) => assert!(message.contains("unknown"), "{message}"),
            other => panic!("not a service error: {other:?}"),
        }
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "bounded by the function's timeout, not less: {:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn the_function_timeout_is_read_once() {
        let (client, reads) = fake_lambda(Config::Timeout(3), false).await;
        let d = dispatcher(client);
        for _ in 0..3 {
            let inv = invoke(&d).await.unwrap();
            assert_eq!(inv.status, 200);
            assert_eq!(&inv.body[..], br#"{"ok":true}"#);
            assert_eq!(inv.function_error, None);
            assert_eq!(inv.executed_version.as_deref(), Some("$LATEST"));
        }
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        assert_eq!(
            d.invoke_timeout().await,
            Duration::from_secs(3) + Duration::from_millis(200)
        );
    }

    #[tokio::test]
    async fn without_the_function_timeout_invokes_get_lambdas_maximum() {
        for config in [Config::NotFound, Config::Hang] {
            let (client, _) = fake_lambda(config, false).await;
            let d = dispatcher(client);
            invoke(&d).await.unwrap();
            assert_eq!(
                d.invoke_timeout().await,
                MAX_FUNCTION_TIMEOUT + Duration::from_millis(200)
            );
        }
    }
}
