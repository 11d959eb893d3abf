//! AWS Lambda `Invoke` (RequestResponse) as a [`Dispatcher`]. The client is built with the SDK's
//! retries off: every retry decision is the retry policy's.

use async_trait::async_trait;
use aws_sdk_lambda::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use aws_sdk_lambda::Client;
use bytes::Bytes;

use super::{DispatchError, Dispatcher, Invoked};

pub struct LambdaDispatcher {
    client: Client,
    function_name: String,
    function_arn: String,
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
        }
    }
}

#[async_trait]
impl Dispatcher for LambdaDispatcher {
    async fn invoke(&self, payload: Bytes) -> Result<Invoked, DispatchError> {
        let result = self
            .client
            .invoke()
            .function_name(&self.function_name)
            .invocation_type(InvocationType::RequestResponse)
            .payload(Blob::new(payload.to_vec()))
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
            Err(e) => Err(classify(e)),
        }
    }

    fn function_arn(&self) -> &str {
        &self.function_arn
    }
}

fn classify<E: ProvideErrorMetadata + std::error::Error + 'static>(
    e: SdkError<E>,
) -> DispatchError {
    let status = e.raw_response().map(|r| r.status().as_u16());
    let message = match &e {
        SdkError::ServiceError(s) => format!(
            "{}: {}",
            s.err().code().unwrap_or("error"),
            s.err().message().unwrap_or("")
        ),
        other => crate::aws::error_chain(other),
    };
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
