//! GetRecords without the SDK: the one Kinesis call made once a second per shard, sent by hand.
//! The SDK's per-call machinery (runtime plugins, config bags, interceptors, endpoint rules) cost
//! more than half of an idle poll's CPU, and its decoding turns each record's base64 `Data` into
//! bytes that the event entry then turns back into base64. This module owns what the SDK did for
//! that call: the endpoint (resolved once per stream with the SDK's own endpoint rules, so a
//! `StreamARN` call goes to the account's data-plane endpoint, as the SDK sends it), SigV4 signing
//! (aws-sigv4, as the SDK signs) with credentials cached until a minute before they expire, the
//! timeouts of every short call ([`CONNECT_TIMEOUT`], [`DEFAULT_OPERATION_TIMEOUT`]), the service's
//! error code (`X-Amzn-ErrorType` or the body's `__type`) and the page, parsed with its strings
//! borrowed from the response. Every other Kinesis call still goes through the SDK.

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_kinesis::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_smithy_runtime_api::client::identity::Identity;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::sync::RwLock;
use std::time::{Duration, SystemTime};

use super::event::{self, Base64, Data, EventContext};
use crate::aws::{error_chain, KinesisDataPlane, CONNECT_TIMEOUT, DEFAULT_OPERATION_TIMEOUT};
use crate::model::lane_key;
use crate::source::shards::RawPage;
use crate::source::{Record, SequenceNumber};

const TARGET: &str = "Kinesis_20131202.GetRecords";
const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// Cached credentials are replaced this long before they expire.
const REFRESH_BEFORE: Duration = Duration::from_secs(60);

/// Why a call failed.
#[derive(Debug, Clone, PartialEq)]
pub enum WireError {
    /// The service answered with an error: its code (`ExpiredIteratorException`, ...) and message.
    Service { code: String, message: String },
    /// No answer (connection, timeout, credentials, endpoint) or one that is not Kinesis's.
    Transport(String),
}

impl WireError {
    /// `code: message`, or the transport error: the same text as [`crate::aws::error_text`].
    pub fn text(&self) -> String {
        match self {
            WireError::Service { code, message } => format!("{code}: {message}"),
            WireError::Transport(t) => t.clone(),
        }
    }

    /// The service's error code, when it answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            WireError::Service { code, .. } => Some(code),
            WireError::Transport(_) => None,
        }
    }
}

/// The data-plane calls of one stream's mapping.
#[derive(Debug)]
pub struct Wire {
    http: reqwest::Client,
    plane: KinesisDataPlane,
    endpoint: tokio::sync::OnceCell<String>,
    credentials: CredentialsCache,
}

impl Wire {
    pub fn new(plane: KinesisDataPlane) -> Result<Wire, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            // The whole exchange, body read included.
            .timeout(DEFAULT_OPERATION_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            // As the SDK's clients: no proxy from the environment.
            .no_proxy()
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Wire {
            http,
            credentials: CredentialsCache::new(plane.credentials.clone()),
            plane,
            endpoint: tokio::sync::OnceCell::new(),
        })
    }

    /// The endpoint for `stream_arn`'s data-plane calls: the override, else what the SDK's
    /// endpoint rules give for a `data` operation on that ARN.
    async fn endpoint(&self, stream_arn: &str) -> Result<&str, WireError> {
        self.endpoint
            .get_or_try_init(|| async {
                if let Some(url) = &self.plane.endpoint_url {
                    return Ok(url.clone());
                }
                let params = Params::builder()
                    .region(self.plane.region.clone())
                    .use_fips(self.plane.use_fips)
                    .use_dual_stack(self.plane.use_dual_stack)
                    .operation_type("data")
                    .stream_arn(stream_arn)
                    .account_id_endpoint_mode("preferred")
                    .build()
                    .map_err(|e| WireError::Transport(format!("endpoint parameters: {e}")))?;
                let endpoint = DefaultResolver::new()
                    .resolve_endpoint(&params)
                    .await
                    .map_err(|e| WireError::Transport(format!("endpoint: {e}")))?;
                Ok(endpoint.url().to_string())
            })
            .await
            .map(String::as_str)
    }

    /// One GetRecords call; the response body of a success.
    pub async fn get_records(
        &self,
        stream_arn: &str,
        iterator: &str,
        limit: u32,
    ) -> Result<bytes::Bytes, WireError> {
        #[derive(Serialize)]
        struct Input<'a> {
            #[serde(rename = "StreamARN")]
            stream_arn: &'a str,
            #[serde(rename = "ShardIterator")]
            iterator: &'a str,
            #[serde(rename = "Limit")]
            limit: u32,
        }
        let body = serde_json::to_vec(&Input {
            stream_arn,
            iterator,
            limit,
        })
        .map_err(|e| WireError::Transport(e.to_string()))?;
        let url = self.endpoint(stream_arn).await?;
        let identity = self.credentials.get().await?;
        let request = signed(url, &self.plane.region, &identity, body)?;
        let answer = self
            .http
            .execute(request)
            .await
            .map_err(|e| WireError::Transport(error_chain(&e)))?;
        let status = answer.status();
        let error_type = answer
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = answer
            .bytes()
            .await
            .map_err(|e| WireError::Transport(error_chain(&e)))?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(service_error(status, error_type.as_deref(), &body))
        }
    }
}

/// The request, signed with SigV4 for Kinesis in `region`.
fn signed(
    url: &str,
    region: &str,
    identity: &Identity,
    body: Vec<u8>,
) -> Result<reqwest::Request, WireError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| WireError::Transport(format!("{what}: {e}"));
    let uri: http::Uri = url.parse().map_err(|e| fail("endpoint", &e))?;
    if uri.host().is_none() {
        return Err(WireError::Transport(format!("endpoint {url}: no host")));
    }
    let headers = [("content-type", CONTENT_TYPE), ("x-amz-target", TARGET)];
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(identity)
        .region(region)
        .name("kinesis")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| fail("signing", &e))?
        .into();
    let signable =
        SignableRequest::new("POST", url, headers.into_iter(), SignableBody::Bytes(&body))
            .map_err(|e| fail("signing", &e))?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| fail("signing", &e))?
        .into_parts();
    let mut request = http::Request::builder().method("POST").uri(uri);
    for (k, v) in headers {
        request = request.header(k, v);
    }
    let mut request = request.body(body).map_err(|e| fail("request", &e))?;
    instructions.apply_to_request_http1x(&mut request);
    reqwest::Request::try_from(request).map_err(|e| fail("request", &e))
}

/// An awsJson1.1 error answer: the code from `X-Amzn-ErrorType` or the body's `__type` (either may
/// carry a namespace before `#` and a suffix after `:`), the message from `message`/`Message`.
fn service_error(status: http::StatusCode, header: Option<&str>, body: &[u8]) -> WireError {
    #[derive(Deserialize, Default)]
    struct Answer<'a> {
        #[serde(rename = "__type", borrow)]
        ty: Option<Cow<'a, str>>,
        #[serde(alias = "Message", borrow)]
        message: Option<Cow<'a, str>>,
    }
    let answer: Answer = serde_json::from_slice(body).unwrap_or_default();
    let raw = header.or(answer.ty.as_deref()).unwrap_or_default();
    let code = raw.rsplit('#').next().unwrap_or(raw);
    let code = code.split(':').next().unwrap_or(code).trim();
    if code.is_empty() {
        return WireError::Transport(format!("HTTP {status} without an error code"));
    }
    WireError::Service {
        code: code.to_string(),
        message: answer.message.unwrap_or_default().into_owned(),
    }
}

/// A GetRecords answer (awsJson1.1), its strings borrowed from the body where they need no
/// unescaping.
#[derive(Deserialize)]
struct WirePage<'a> {
    #[serde(rename = "Records", borrow, default)]
    records: Vec<WireRecord<'a>>,
    #[serde(rename = "NextShardIterator", default)]
    next_iterator: Option<String>,
    #[serde(rename = "MillisBehindLatest", default)]
    millis_behind: Option<i64>,
}

#[derive(Deserialize)]
struct WireRecord<'a> {
    #[serde(rename = "SequenceNumber", borrow)]
    sequence: Cow<'a, str>,
    /// Epoch seconds with milliseconds as the fraction.
    #[serde(rename = "ApproximateArrivalTimestamp", default)]
    arrival: Option<f64>,
    #[serde(rename = "Data", borrow)]
    data: Cow<'a, str>,
    #[serde(rename = "PartitionKey", borrow)]
    partition_key: Cow<'a, str>,
    #[serde(rename = "EncryptionType", borrow, default)]
    encryption: Option<Cow<'a, str>>,
}

/// The records of a GetRecords answer, encoded as event entries; an answer that is not one (not
/// JSON of that shape, a `Data` that is not base64) is an error, as it was through the SDK.
pub(super) fn page(ctx: &EventContext, shard: &str, body: &[u8]) -> Result<RawPage, String> {
    let wire: WirePage = serde_json::from_slice(body).map_err(|e| format!("the answer: {e}"))?;
    let mut records = Vec::with_capacity(wire.records.len());
    for r in &wire.records {
        let data = Base64::new(&r.data)
            .ok_or_else(|| format!("record {}: Data is not base64", r.sequence))?;
        // Rounded to the millisecond the fraction carries (a binary float is a hair off it).
        let arrival_ms = r.arrival.map_or(0, |s| (s * 1000.0).round() as i64);
        records.push(Record {
            sequence: SequenceNumber(r.sequence.to_string()),
            arrival_ms,
            lane_key: lane_key(r.partition_key.as_bytes()),
            event: event::encode(
                ctx,
                shard,
                &r.sequence,
                &r.partition_key,
                Data::Base64(data),
                arrival_ms,
                r.encryption.as_deref(),
            ),
        });
    }
    Ok(RawPage {
        records,
        next_iterator: wire.next_iterator,
        millis_behind: wire.millis_behind,
    })
}

/// The credentials of the provider, kept until [`REFRESH_BEFORE`] their expiry; one refresh at a
/// time, the readers of fresh credentials never wait for it.
#[derive(Debug)]
struct CredentialsCache {
    provider: Option<SharedCredentialsProvider>,
    current: RwLock<Option<Identity>>,
    refresh: tokio::sync::Mutex<()>,
}

impl CredentialsCache {
    fn new(provider: Option<SharedCredentialsProvider>) -> Self {
        CredentialsCache {
            provider,
            current: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    fn fresh(&self) -> Option<Identity> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        current
            .as_ref()
            .filter(|id| {
                id.expiration()
                    .is_none_or(|at| at > SystemTime::now() + REFRESH_BEFORE)
            })
            .cloned()
    }

    async fn get(&self) -> Result<Identity, WireError> {
        if let Some(id) = self.fresh() {
            return Ok(id);
        }
        let _one = self.refresh.lock().await;
        if let Some(id) = self.fresh() {
            return Ok(id);
        }
        let provider = self.provider.as_ref().ok_or_else(|| {
            WireError::Transport("no AWS credentials: the SDK's default chain found none".into())
        })?;
        let credentials = provider
            .provide_credentials()
            .await
            .map_err(|e| WireError::Transport(format!("credentials: {}", error_chain(&e))))?;
        let id = Identity::from(credentials);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(id.clone());
        Ok(id)
    }
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
