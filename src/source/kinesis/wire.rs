//! GetRecords without the SDK: the one Kinesis call made once a second per shard, sent by hand.
//! The SDK's per-call machinery (runtime plugins, config bags, interceptors, endpoint rules) cost
//! more than half of an idle poll's CPU, and its decoding turns each record's base64 `Data` into
//! bytes that the event entry then turns back into base64. This module owns what the SDK did for
//! that call: the endpoint (resolved once per stream with the SDK's own endpoint rules, so a
//! `StreamARN` call goes to the account's data-plane endpoint, as the SDK sends it), SigV4 signing
//! (aws-sigv4, as the SDK signs) of the URL exactly as it is sent, with the process's cached
//! credentials ([`crate::credentials`]), the timeouts of every short call (the process's one
//! connection pool, [`crate::aws::data_http`]), the service's error code (`X-Amzn-ErrorType`, or
//! the body's `code` or `__type`, as the SDK reads them) and the page, parsed with its strings
//! borrowed from the response. Every other Kinesis call still goes through the SDK.

use aws_sdk_kinesis::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_smithy_runtime_api::client::identity::Identity;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::time::SystemTime;

use super::event::{Base64, Data, EventContext};
use crate::aws::{error_chain, KinesisDataPlane};
use crate::source::shards::RawPage;

const TARGET: &str = "Kinesis_20131202.GetRecords";
const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

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

/// The largest answer read: a GetRecords page holds at most 10 MiB of data, which is about
/// 13.4 MiB as base64, plus up to 10,000 records' sequence numbers, partition keys and field names.
/// An answer declared larger is refused unread; one sent without a length stops being read there.
pub const MAX_ANSWER: usize = 64 << 20;

/// The data-plane calls of one stream's mapping.
#[derive(Debug)]
pub struct Wire {
    plane: KinesisDataPlane,
    endpoint: tokio::sync::OnceCell<reqwest::Url>,
}

impl Wire {
    pub fn new(plane: KinesisDataPlane) -> Wire {
        Wire {
            plane,
            endpoint: tokio::sync::OnceCell::new(),
        }
    }

    /// The endpoint for `stream_arn`'s data-plane calls: the override, else what the SDK's
    /// endpoint rules give for a `data` operation on that ARN.
    async fn endpoint(&self, stream_arn: &str) -> Result<&reqwest::Url, WireError> {
        self.endpoint
            .get_or_try_init(|| async {
                if let Some(url) = &self.plane.endpoint_url {
                    return request_url(url);
                }
                let params = Params::builder()
                    .region(self.plane.region.clone())
                    .use_fips(self.plane.use_fips)
                    .use_dual_stack(self.plane.use_dual_stack)
                    .operation_type("data")
                    .stream_arn(stream_arn)
                    .account_id_endpoint_mode(self.plane.account_id_endpoint_mode.clone())
                    .build()
                    .map_err(|e| WireError::Transport(format!("endpoint parameters: {e}")))?;
                let endpoint = DefaultResolver::new()
                    .resolve_endpoint(&params)
                    .await
                    .map_err(|e| WireError::Transport(format!("endpoint: {e}")))?;
                request_url(endpoint.url())
            })
            .await
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
        let identity = self
            .plane
            .credentials
            .get()
            .await
            .map_err(WireError::Transport)?;
        let request = signed(url, &self.plane.region, &identity, body)?;
        let answer = self
            .plane
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
        let body = read_capped(answer, MAX_ANSWER).await?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(service_error(status, error_type.as_deref(), &body))
        }
    }
}

/// The body of `answer`, refused if it is (or is declared) over `limit` bytes. With a length
/// (as AWS sends it), hyper reads no more than it declares.
async fn read_capped(
    mut answer: reqwest::Response,
    limit: usize,
) -> Result<bytes::Bytes, WireError> {
    let over = |n: String| {
        WireError::Transport(format!(
            "the answer is {n} bytes, over the {limit} a GetRecords answer can be"
        ))
    };
    let failed = |e: reqwest::Error| WireError::Transport(error_chain(&e));
    match answer.content_length() {
        Some(n) if n > limit as u64 => Err(over(n.to_string())),
        Some(_) => answer.bytes().await.map_err(failed),
        None => {
            let mut body = bytes::BytesMut::new();
            while let Some(chunk) = answer.chunk().await.map_err(failed)? {
                let read = body.len() + chunk.len();
                if read > limit {
                    return Err(over(format!("at least {read}")));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(body.freeze())
        }
    }
}

/// The URL a request to `endpoint` goes to, as the SDK builds it (the endpoint's path with the
/// operation's `/` after it, no query) and as reqwest will send it (host lower-cased, path
/// normalised), so that what is signed is what is sent.
fn request_url(endpoint: &str) -> Result<reqwest::Url, WireError> {
    let bad = |why: String| WireError::Transport(format!("endpoint {endpoint}: {why}"));
    let mut url = reqwest::Url::parse(endpoint).map_err(|e| bad(e.to_string()))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host".into()));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

/// The request, signed with SigV4 for Kinesis in `region`: built on `url` as it is (parsed once,
/// when the endpoint was resolved), the signature's headers added to it.
fn signed(
    url: &reqwest::Url,
    region: &str,
    identity: &Identity,
    body: Vec<u8>,
) -> Result<reqwest::Request, WireError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| WireError::Transport(format!("{what}: {e}"));
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
    let signable = SignableRequest::new(
        "POST",
        url.as_str(),
        headers.into_iter(),
        SignableBody::Bytes(&body),
    )
    .map_err(|e| fail("signing", &e))?;
    let (signature, _) = sign(signable, &params)
        .map_err(|e| fail("signing", &e))?
        .into_parts();
    let (signature, _query) = signature.into_parts();
    let mut request = reqwest::Request::new(reqwest::Method::POST, url.clone());
    let map = request.headers_mut();
    for (k, v) in headers {
        map.insert(k, http::HeaderValue::from_static(v));
    }
    for h in signature {
        let mut value = http::HeaderValue::from_str(h.value()).map_err(|e| fail("signing", &e))?;
        value.set_sensitive(h.sensitive());
        map.insert(h.name(), value);
    }
    *request.body_mut() = Some(body.into());
    Ok(request)
}

/// An awsJson1.1 error answer, read as the SDK reads it: the code from `X-Amzn-ErrorType`, else the
/// body's `code`, else its `__type` (cut at the first `:`, then after the first `#`); the message
/// from `message`, `Message` or `errorMessage`, without the canonical request a signature error
/// may quote (it names the session token).
fn service_error(status: http::StatusCode, header: Option<&str>, body: &[u8]) -> WireError {
    #[derive(Deserialize, Default)]
    struct Answer<'a> {
        #[serde(borrow)]
        code: Option<Cow<'a, str>>,
        #[serde(rename = "__type", borrow)]
        ty: Option<Cow<'a, str>>,
        #[serde(borrow)]
        message: Option<Cow<'a, str>>,
        #[serde(rename = "Message", borrow)]
        message_upper: Option<Cow<'a, str>>,
        #[serde(rename = "errorMessage", borrow)]
        error_message: Option<Cow<'a, str>>,
    }
    let answer: Answer = serde_json::from_slice(body).unwrap_or_default();
    let raw = header
        .or(answer.code.as_deref())
        .or(answer.ty.as_deref())
        .unwrap_or_default();
    let code = raw.split(':').next().unwrap_or(raw);
    let code = code.split_once('#').map_or(code, |(_, c)| c).trim();
    if code.is_empty() {
        return WireError::Transport(format!("HTTP {status} without an error code"));
    }
    let message = answer
        .message
        .or(answer.message_upper)
        .or(answer.error_message)
        .unwrap_or_default();
    let message = message
        .split("The Canonical String")
        .next()
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.to_ascii_lowercase().contains("x-amz-security-token"))
        .collect::<Vec<_>>()
        .join(" ");
    WireError::Service {
        code: code.to_string(),
        message: message.trim().to_string(),
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
        records.push(super::entry(
            ctx,
            shard,
            &r.sequence,
            &r.partition_key,
            Data::Base64(data),
            arrival_ms,
            r.encryption.as_deref(),
        ));
    }
    Ok(RawPage {
        records,
        next_iterator: wire.next_iterator,
        millis_behind: wire.millis_behind,
    })
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
