//! The hand-sent GetRecords: signatures a SigV4 verifier accepts (the same verifier accepts the
//! SDK's own requests), the error codes, the endpoint and the page.

use super::super::event;
use super::*;
use crate::credentials::CachedCredentials;
use crate::model::lane_key;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use std::sync::Arc;

const ARN: &str = "arn:aws:kinesis:us-east-1:123456789012:stream/s";
const SECRET: &str = "the-secret";

fn provider(secret: &str) -> SharedCredentialsProvider {
    SharedCredentialsProvider::new(Credentials::new(
        "AKIDEXAMPLE",
        secret,
        Some("the-session-token".into()),
        None,
        "test",
    ))
}

fn plane(url: Option<String>, credentials: Option<SharedCredentialsProvider>) -> KinesisDataPlane {
    KinesisDataPlane {
        endpoint_url: url,
        region: "us-east-1".into(),
        use_fips: false,
        use_dual_stack: false,
        account_id_endpoint_mode: "preferred".into(),
        credentials: Arc::new(CachedCredentials::new(credentials)),
        http: crate::aws::data_http().unwrap(),
    }
}

/// What the verifying endpoint saw: each request's target and whether its signature held.
#[derive(Default)]
struct Seen {
    requests: std::sync::Mutex<Vec<(String, bool)>>,
}

/// Recomputes a request's SigV4 signature from what arrived (the headers it names as signed, the
/// body, the date it carries) with [`SECRET`], and compares it with the one it carries.
fn signature_holds(parts: &http::request::Parts, body: &[u8]) -> bool {
    let Some(auth) = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let field = |name: &str| {
        auth.split([' ', ','])
            .find_map(|f| f.strip_prefix(name))
            .unwrap_or_default()
            .to_string()
    };
    let (scope, signed) = (field("Credential="), field("SignedHeaders="));
    let scope: Vec<&str> = scope.split('/').collect();
    if scope.len() != 5 {
        return false;
    }
    let Some(date) = parts
        .headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let Ok(at) = time::PrimitiveDateTime::parse(date, format) else {
        return false;
    };
    let at: SystemTime = at.assume_utc().into();
    // The signer adds these two itself.
    let headers: Vec<(String, String)> = signed
        .split(';')
        .filter(|h| !matches!(*h, "x-amz-date" | "x-amz-security-token"))
        .filter_map(|h| {
            let v = parts.headers.get(h)?.to_str().ok()?;
            Some((h.to_string(), v.to_string()))
        })
        .collect();
    let host = parts.headers.get("host").and_then(|v| v.to_str().ok());
    let url = format!("http://{}{}", host.unwrap_or("localhost"), parts.uri);
    let identity: Identity = Credentials::new(
        scope[0],
        SECRET,
        parts
            .headers
            .get("x-amz-security-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        None,
        "verifier",
    )
    .into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(scope[2])
        .name(scope[3])
        .time(at)
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let signable = SignableRequest::new(
        parts.method.as_str(),
        url,
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(body),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let expected = instructions
        .headers()
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.to_string());
    expected.as_deref() == Some(auth)
}

/// An endpoint that checks every request's signature and answers a page of one record.
async fn verifying_endpoint() -> (String, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let seen = s.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
            let target = parts
                .headers
                .get("x-amz-target")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let holds = signature_holds(&parts, &body);
            seen.requests.lock().unwrap().push((target, holds));
            if !holds {
                return (
                    http::StatusCode::FORBIDDEN,
                    [("x-amzn-errortype", "InvalidSignatureException")],
                    r#"{"message":"The request signature we calculated does not match"}"#,
                );
            }
            (
                http::StatusCode::OK,
                [("content-type", "application/x-amz-json-1.1")],
                r#"{"Records":[{"SequenceNumber":"49590338271490256608559692538361571095921575989136588898","ApproximateArrivalTimestamp":1545084650.987,"Data":"SGVsbG8sIHRoaXMgaXMgYSB0ZXN0Lg==","PartitionKey":"1"}],"NextShardIterator":"next","MillisBehindLatest":0}"#,
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

#[tokio::test]
async fn the_sdk_and_the_hand_sent_call_both_pass_a_sigv4_verifier() {
    let (url, seen) = verifying_endpoint().await;
    // The verifier accepts what the SDK signs ...
    let sdk = aws_sdk_kinesis::Client::from_conf(
        aws_sdk_kinesis::Config::builder()
            .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
            .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
            .credentials_provider(provider(SECRET))
            .endpoint_url(&url)
            .build(),
    );
    let out = sdk
        .get_records()
        .stream_arn(ARN)
        .shard_iterator("it")
        .send()
        .await
        .expect("the SDK's request verifies");
    assert_eq!(out.next_shard_iterator(), Some("next"));
    // ... and what we sign.
    let wire = Wire::new(plane(Some(url.clone()), Some(provider(SECRET))));
    let body = wire
        .get_records(ARN, "it", 10_000)
        .await
        .expect("ours verifies");
    let ctx = EventContext::new(ARN, "us-east-1", "arn:aws:iam::123456789012:role/r");
    let page = page(&ctx, "shardId-000000000006", &body).unwrap();
    assert_eq!(page.next_iterator.as_deref(), Some("next"));
    assert_eq!(page.records.len(), 1);
    // ... and not a request signed with another secret: the check can fail.
    let wrong = Wire::new(plane(Some(url), Some(provider("another"))));
    let e = wrong.get_records(ARN, "it", 10_000).await.unwrap_err();
    assert_eq!(e.code(), Some("InvalidSignatureException"), "{e:?}");
    let requests = seen.requests.lock().unwrap().clone();
    assert_eq!(
        requests,
        vec![
            ("Kinesis_20131202.GetRecords".to_string(), true),
            ("Kinesis_20131202.GetRecords".to_string(), true),
            ("Kinesis_20131202.GetRecords".to_string(), false),
        ]
    );
}

#[test]
fn the_page_is_the_entries_the_sdk_path_wrote() {
    let ctx = EventContext::new(ARN, "us-east-1", "arn:aws:iam::123456789012:role/r");
    let seq = "49590338271490256608559692538361571095921575989136588898";
    let body = format!(
        r#"{{"Records":[{{"SequenceNumber":"{seq}","ApproximateArrivalTimestamp":1545084650.987,"Data":"SGVsbG8sIHRoaXMgaXMgYSB0ZXN0Lg==","PartitionKey":"k\"\u00e9","EncryptionType":"KMS"}}],"NextShardIterator":null,"MillisBehindLatest":42,"ChildShards":[]}}"#
    );
    let got = page(&ctx, "shardId-000000000006", body.as_bytes()).unwrap();
    assert_eq!(got.next_iterator, None);
    assert_eq!(got.millis_behind, Some(42));
    let r = &got.records[0];
    assert_eq!(r.sequence.0, seq);
    // Rounded, not truncated: 1545084650.987 is a hair under .987 as a binary float.
    assert_eq!(r.arrival_ms, 1_545_084_650_987);
    assert_eq!(r.lane_key, lane_key("k\"é".as_bytes()));
    let want = event::encode(
        &ctx,
        "shardId-000000000006",
        seq,
        "k\"é",
        Data::Bytes(b"Hello, this is a test."),
        1_545_084_650_987,
        Some("KMS"),
    );
    assert_eq!(r.event, want);
}

#[test]
fn answers_that_are_not_a_page_are_errors() {
    let ctx = EventContext::new(ARN, "us-east-1", "arn:aws:iam::123456789012:role/r");
    for body in [
        "",
        "{",
        r#"{"Records":[{"SequenceNumber":"1","Data":"not base64!","PartitionKey":"k"}]}"#,
        r#"{"Records":[{"SequenceNumber":"1","Data":"AAAA"}]}"#,
    ] {
        assert!(page(&ctx, "s", body.as_bytes()).is_err(), "{body}");
    }
    let empty = page(&ctx, "s", br#"{"NextShardIterator":"n"}"#).unwrap();
    assert!(empty.records.is_empty());
    assert_eq!(empty.next_iterator.as_deref(), Some("n"));
}

#[test]
fn error_codes_come_from_the_header_or_the_body_without_namespace_or_suffix() {
    let status = http::StatusCode::BAD_REQUEST;
    let cases: [(Option<&str>, &str, Option<&str>, &str); 5] = [
        (
            None,
            r#"{"__type":"com.amazonaws.kinesis.v20131202#ExpiredIteratorException","message":"Iterator expired"}"#,
            Some("ExpiredIteratorException"),
            "Iterator expired",
        ),
        (
            Some("ProvisionedThroughputExceededException:http://internal.amazon.com/"),
            r#"{"Message":"Rate exceeded"}"#,
            Some("ProvisionedThroughputExceededException"),
            "Rate exceeded",
        ),
        (
            None,
            r#"{"__type":"ResourceNotFoundException"}"#,
            Some("ResourceNotFoundException"),
            "",
        ),
        (None, "<html>bad gateway</html>", None, ""),
        (None, "{}", None, ""),
    ];
    let cases = cases.into_iter().chain([
        // The SDK's order: `code` before `__type`; the first `:` cuts, then the first `#`.
        (
            None,
            r#"{"code":"KMSThrottlingException","__type":"Other","errorMessage":"slow down"}"#,
            Some("KMSThrottlingException"),
            "slow down",
        ),
        (
            None,
            r#"{"__type":"ns#ExpiredIteratorException:http://x#y","message":"m","Message":"M"}"#,
            Some("ExpiredIteratorException"),
            "m",
        ),
    ]);
    for (header, body, code, message) in cases {
        let e = service_error(status, header, body.as_bytes());
        assert_eq!(e.code(), code, "{body}");
        if let Some(code) = code {
            assert_eq!(e.text(), format!("{code}: {message}"));
        } else {
            assert!(e.text().contains("400"), "{e:?}");
        }
    }
}

#[tokio::test]
async fn without_an_override_a_stream_arn_goes_to_the_accounts_data_plane_endpoint() {
    let wire = Wire::new(plane(None, None));
    assert_eq!(
        wire.endpoint(ARN).await.unwrap().as_str(),
        "https://123456789012.data-kinesis.us-east-1.amazonaws.com/"
    );
    let wire = Wire::new(plane(Some("http://127.0.0.1:4567".into()), None));
    assert_eq!(
        wire.endpoint(ARN).await.unwrap().as_str(),
        "http://127.0.0.1:4567/"
    );
}

#[test]
fn an_override_is_the_url_the_sdk_would_send_to_and_reqwest_sends() {
    for (endpoint, url) in [
        ("http://127.0.0.1:4567", "http://127.0.0.1:4567/"),
        ("http://127.0.0.1:4567/", "http://127.0.0.1:4567/"),
        // The SDK puts the operation's `/` after the endpoint's path and drops its query.
        (
            "http://LocalStack:4566/kinesis",
            "http://localstack:4566/kinesis/",
        ),
        ("https://h.example/p/?x=1", "https://h.example/p/"),
        ("https://h.example:443", "https://h.example/"),
    ] {
        assert_eq!(request_url(endpoint).unwrap().as_str(), url, "{endpoint}");
    }
    for bad in ["", "not a url", "file:///tmp/x", "unix:/x"] {
        assert!(request_url(bad).is_err(), "{bad}");
    }
}

#[tokio::test]
async fn a_mixed_case_override_is_signed_as_sent() {
    let (url, seen) = verifying_endpoint().await;
    let mixed = url.replace("127.0.0.1", "LOCALHOST");
    let wire = Wire::new(plane(Some(mixed), Some(provider(SECRET))));
    wire.get_records(ARN, "it", 10).await.expect("it verifies");
    assert!(seen.requests.lock().unwrap()[0].1);
}

#[test]
fn a_signature_error_loses_the_canonical_request_it_quotes() {
    let body = r#"{"__type":"InvalidSignatureException","message":"The request signature we calculated does not match the signature you provided.\n\nThe Canonical String for this request should have been\n'POST\n/\n\ncontent-type:application/x-amz-json-1.1\nhost:h\nx-amz-security-token:SECRET-TOKEN\n'"}"#;
    let e = service_error(http::StatusCode::BAD_REQUEST, None, body.as_bytes());
    assert_eq!(e.code(), Some("InvalidSignatureException"));
    assert!(!e.text().contains("SECRET-TOKEN"), "{}", e.text());
    assert!(e.text().contains("does not match"), "{}", e.text());
    let body = r#"{"__type":"X","message":"a\nx-amz-security-token:SECRET-TOKEN\nb"}"#;
    let e = service_error(http::StatusCode::BAD_REQUEST, None, body.as_bytes());
    assert!(!e.text().contains("SECRET-TOKEN"), "{}", e.text());
}

/// An endpoint answering every request with `body`, streamed without a length when `chunked`.
async fn answering(body: Vec<u8>, chunked: bool) -> String {
    let app = axum::Router::new().fallback(move || {
        let body = body.clone();
        async move {
            if chunked {
                let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
                    body.chunks(100).map(|c| Ok(c.to_vec())).collect();
                axum::body::Body::from_stream(futures_util::stream::iter(chunks))
            } else {
                axum::body::Body::from(body)
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn an_answer_over_the_limit_is_refused_declared_or_streamed() {
    let page = br#"{"Records":[],"NextShardIterator":"next","MillisBehindLatest":0}"#;
    for chunked in [false, true] {
        let answer = crate::aws::data_http()
            .unwrap()
            .get(answering(vec![b' '; 1000], chunked).await)
            .send()
            .await
            .unwrap();
        let e = read_capped(answer, 999).await.unwrap_err();
        assert!(
            matches!(&e, WireError::Transport(t) if t.contains("over the 999 a GetRecords answer can be")),
            "chunked {chunked}: {e:?}"
        );
        let wire = Wire::new(plane(
            Some(answering(page.to_vec(), chunked).await),
            Some(provider(SECRET)),
        ));
        let body = wire.get_records(ARN, "it", 10).await.unwrap();
        assert_eq!(&body[..], page, "chunked {chunked}: read whole");
    }
}
