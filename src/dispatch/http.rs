//! Any HTTP endpoint as a [`Dispatcher`]: POSTs the same event JSON Lambda would receive and classes
//! the answer as Lambda classes a failing function (docs/http-targets.md). 2xx is success and the
//! body is the function's response, unless the response carries `X-Amz-Function-Error`. A request
//! that runs past `Http.TimeoutSeconds` (connect, headers and body together) is a function error, as
//! Lambda's `Sandbox.Timedout`; so are a response over Lambda's 6 MB (`Function.ResponseSizeTooLarge`,
//! read no further than the cap), any 3xx (redirects are never followed: a followed 301/302/303
//! would turn the POST into a body-less GET and acknowledge records the function never saw), and
//! every other 4xx and 5xx. 429 and 503 are throttles, 413 means the payload is too large. A
//! connection that cannot be made, or that ends before a complete answer, is a service error: the
//! function may never have seen the batch, so no attempt is counted.

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use std::time::Duration;
use tracing::warn;

use super::{DispatchError, Dispatcher, Invoked};
use crate::aws::error_chain;
use crate::config::HttpTarget;

/// Lambda's limit on a synchronous invocation's response: 6 MB.
pub const MAX_RESPONSE_BYTES: usize = 6 * 1024 * 1024;

/// The longest a connection may take to open; at most half of the request's timeout, so that a
/// target that cannot be reached is told apart (service error) from one that is slow (timeout).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct HttpDispatcher {
    client: reqwest::Client,
    url: String,
    /// `url`, parsed once: a request then costs a clone instead of a parse (host, IDNA and path
    /// included) per invocation. `None` when it does not parse, so each request fails as before.
    parsed: Option<reqwest::Url>,
    timeout: Duration,
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
            .redirect(reqwest::redirect::Policy::none())
            // The whole exchange, body read included.
            .timeout(target.timeout)
            .connect_timeout(CONNECT_TIMEOUT.min(target.timeout / 2))
            .build()?;
        Ok(HttpDispatcher {
            client,
            url: target.url.clone(),
            parsed: reqwest::Url::parse(&target.url).ok(),
            timeout: target.timeout,
        })
    }

    /// A request that failed without a complete answer: a function timeout if it ran out of time
    /// after the connection was made, else a service error.
    fn transport_error(
        &self,
        e: reqwest::Error,
        status: Option<u16>,
    ) -> Result<Invoked, DispatchError> {
        if e.is_timeout() && !e.is_connect() {
            // What Lambda answers for a function that outlives its timeout.
            return Ok(Invoked {
                status: 200,
                body: error_body(
                    "Sandbox.Timedout",
                    &format!(
                        "Task timed out after {:.2} seconds (Http.TimeoutSeconds)",
                        self.timeout.as_secs_f64()
                    ),
                ),
                function_error: Some("Unhandled".into()),
                executed_version: None,
                request_id: None,
            });
        }
        Err(DispatchError::Service {
            status: if e.is_connect() { None } else { status },
            message: error_chain(&e),
        })
    }
}

/// Lambda's shape of a function error body.
fn error_body(error_type: &str, message: &str) -> Bytes {
    Bytes::from(serde_json::json!({ "errorType": error_type, "errorMessage": message }).to_string())
}

/// The body, or `None` past `cap` bytes (announced or read): reading stops there.
async fn read_capped(
    resp: &mut reqwest::Response,
    cap: usize,
) -> Result<Option<Bytes>, reqwest::Error> {
    let announced = resp.content_length().unwrap_or(0);
    if announced > cap as u64 {
        return Ok(None);
    }
    let mut buf = BytesMut::with_capacity(announced as usize);
    while let Some(chunk) = resp.chunk().await? {
        if buf.len() + chunk.len() > cap {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Some(buf.freeze()))
}

#[async_trait]
impl Dispatcher for HttpDispatcher {
    async fn invoke(&self, payload: Bytes) -> Result<Invoked, DispatchError> {
        let request = match &self.parsed {
            Some(url) => self.client.post(url.clone()),
            None => self.client.post(&self.url),
        };
        let mut resp = match request.body(payload).send().await {
            Ok(resp) => resp,
            Err(e) => return self.transport_error(e, None),
        };
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
        let failed = |body: Bytes, function_error: Option<String>| {
            Ok(Invoked {
                status,
                body,
                function_error: Some(function_error.unwrap_or_else(|| "Unhandled".into())),
                executed_version: executed_version.clone(),
                request_id: request_id.clone(),
            })
        };

        if resp.status().is_redirection() {
            let location = header("location").unwrap_or_else(|| "(no Location header)".into());
            warn!(url = %self.url, status, %location, "the HTTP target answered with a redirect, which sluice does not follow: a function error; set Http.Url to the final URL");
            return failed(
                error_body(
                    "Http.Redirect",
                    &format!("HTTP {status} redirect to {location}: redirects are not followed; set Http.Url to the final URL"),
                ),
                None,
            );
        }
        let body = match read_capped(&mut resp, MAX_RESPONSE_BYTES).await {
            Ok(body) => body,
            Err(e) => return self.transport_error(e, Some(status)),
        };
        let excerpt = || match &body {
            Some(b) => String::from_utf8_lossy(&b[..b.len().min(256)]).into_owned(),
            None => format!("(body over {MAX_RESPONSE_BYTES} bytes)"),
        };
        match status {
            413 => Err(DispatchError::PayloadTooLarge { message: excerpt() }),
            429 | 503 => Err(DispatchError::Throttled {
                status: Some(status),
                message: excerpt(),
            }),
            _ => match body {
                None => failed(
                    error_body(
                        "Function.ResponseSizeTooLarge",
                        &format!("Response payload size exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes)."),
                    ),
                    None,
                ),
                Some(body) if (200..=299).contains(&status) => Ok(Invoked {
                    status,
                    body,
                    function_error,
                    executed_version,
                    request_id,
                }),
                // Every other 4xx and 5xx: the function failed.
                Some(body) => failed(body, function_error),
            },
        }
    }

    fn function_arn(&self) -> &str {
        &self.url
    }

    async fn function_timeout(&self) -> Option<Duration> {
        Some(self.timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn target(url: String) -> HttpTarget {
        HttpTarget {
            url,
            headers: Default::default(),
            timeout: Duration::from_secs(10),
        }
    }

    /// A server that answers each of `n` requests on one connection with `200 {}` and returns
    /// their request heads.
    async fn serve(n: usize) -> (String, tokio::task::JoinHandle<Vec<String>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut heads = Vec::new();
            let mut buf = Vec::new();
            while heads.len() < n {
                let mut chunk = [0u8; 4096];
                let got = conn.read(&mut chunk).await.unwrap();
                assert!(got > 0, "the client closed the connection");
                buf.extend_from_slice(&chunk[..got]);
                let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let len: usize = head
                    .to_ascii_lowercase()
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap())
                    .unwrap_or(0);
                while buf.len() < end + 4 + len {
                    let got = conn.read(&mut chunk).await.unwrap();
                    buf.extend_from_slice(&chunk[..got]);
                }
                assert_eq!(&buf[end + 4..end + 4 + len], b"{\"Records\":[]}");
                buf.drain(..end + 4 + len);
                heads.push(head);
                conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                    .await
                    .unwrap();
            }
            heads
        });
        (format!("http://{addr}"), heads)
    }

    #[tokio::test]
    async fn each_request_goes_to_the_configured_url_parsed_once() {
        let (base, heads) = serve(2).await;
        let d = HttpDispatcher::new(&target(format!("{base}/fn/a%20b?x=1&y=%2F"))).unwrap();
        assert!(d.parsed.is_some());
        for _ in 0..2 {
            let inv = d
                .invoke(Bytes::from_static(b"{\"Records\":[]}"))
                .await
                .unwrap();
            assert_eq!((inv.status, &inv.body[..]), (200, &b"{}"[..]));
            assert_eq!(inv.function_error, None);
        }
        for head in heads.await.unwrap() {
            let first = head.lines().next().unwrap();
            assert_eq!(first, "POST /fn/a%20b?x=1&y=%2F HTTP/1.1");
            assert!(head
                .to_ascii_lowercase()
                .contains("content-type: application/json"));
        }
        assert_eq!(d.function_arn(), format!("{base}/fn/a%20b?x=1&y=%2F"));
    }

    #[tokio::test]
    async fn a_url_that_does_not_parse_fails_each_request_as_a_service_error() {
        let d = HttpDispatcher::new(&target("not a url".into())).unwrap();
        assert!(d.parsed.is_none());
        let err = d.invoke(Bytes::from_static(b"{}")).await.unwrap_err();
        assert!(
            matches!(err, DispatchError::Service { status: None, .. }),
            "{err:?}"
        );
    }
}
