//! Any HTTP endpoint as a [`Dispatcher`]: POSTs the same event JSON Lambda would receive. The
//! contract (docs/http-targets.md): 2xx is success and the body is the function's response, unless
//! the response carries `X-Amz-Function-Error`; 500 and other 4xx are function errors; 429 is a
//! throttle; 413 means the payload is too large; 502, 503, 504, other 5xx, connection errors and
//! timeouts are service errors (retried without counting an attempt).

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use std::time::Duration;

use super::{DispatchError, Dispatcher, Invoked};
use crate::aws::error_chain;
use crate::config::HttpTarget;

pub struct HttpDispatcher {
    client: reqwest::Client,
    url: String,
}

impl HttpDispatcher {
    pub fn new(target: &HttpTarget) -> Result<Self, reqwest::Error> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (k, v) in &target.headers {
            // Validated when the config was read.
            if let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                headers.insert(k, v);
            }
        }
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(target.timeout)
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        Ok(HttpDispatcher {
            client,
            url: target.url.clone(),
        })
    }
}

#[async_trait]
impl Dispatcher for HttpDispatcher {
    async fn invoke(&self, payload: Bytes) -> Result<Invoked, DispatchError> {
        let resp = self
            .client
            .post(&self.url)
            .body(payload)
            .send()
            .await
            .map_err(|e| DispatchError::Service {
                status: None,
                message: error_chain(&e),
            })?;
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let function_error = header("x-amz-function-error");
        let executed_version = header("x-amz-executed-version");
        let request_id = header("x-amzn-requestid").or_else(|| header("x-request-id"));
        let body = resp.bytes().await.map_err(|e| DispatchError::Service {
            status: Some(status),
            message: error_chain(&e),
        })?;
        let excerpt = || String::from_utf8_lossy(&body[..body.len().min(256)]).into_owned();
        match status {
            200..=299 => Ok(Invoked {
                status,
                body,
                function_error,
                executed_version,
                request_id,
            }),
            429 => Err(DispatchError::Throttled {
                status: Some(status),
                message: excerpt(),
            }),
            413 => Err(DispatchError::PayloadTooLarge { message: excerpt() }),
            400..=500 => Ok(Invoked {
                status,
                function_error: Some(function_error.unwrap_or_else(|| "Unhandled".into())),
                executed_version,
                request_id,
                body,
            }),
            _ => Err(DispatchError::Service {
                status: Some(status),
                message: excerpt(),
            }),
        }
    }

    fn function_arn(&self) -> &str {
        &self.url
    }
}
