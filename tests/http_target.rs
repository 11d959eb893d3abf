//! The HTTP target contract (docs/http-targets.md) against real local HTTP servers on random ports:
//! redirects are never followed, each answer is classed as Lambda classes a failing function
//! (function error, throttle, payload too large, service error), a request past `TimeoutSeconds`
//! is a function timeout however far the answer got, and a response over Lambda's 6 MB is a
//! function error read no further than the cap. The last tests run mappings end to end on
//! kinesis-local: a redirecting target and a hanging one are given up on after
//! `MaximumRetryAttempts` instead of being acknowledged or retried forever.

mod common;

use ::sluice::config::HttpTarget;
use ::sluice::dispatch::{DispatchError, Dispatcher, HttpDispatcher, Invoked};
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::any;
use axum::Router;
use bytes::Bytes;
use common::sluice::Sluice;
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Lambda's synchronous response limit.
const CAP: usize = 6 * 1024 * 1024;

/// A raw TCP server: each connection's request is read once, `reply` is written, and then the
/// connection is held open (`hold`) or closed.
async fn raw_server(reply: &'static [u8], hold: bool) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = sock.read(&mut buf).await;
                let _ = sock.write_all(reply).await;
                if hold {
                    std::future::pending::<()>().await;
                }
            });
        }
    });
    base
}

fn dispatcher(url: &str, timeout: Duration) -> HttpDispatcher {
    HttpDispatcher::new(&HttpTarget {
        url: url.to_string(),
        headers: BTreeMap::new(),
        timeout,
    })
    .unwrap()
}

/// Invokes with an empty event, failing the test (rather than hanging it) past `bound`.
async fn invoke(d: &HttpDispatcher, bound: Duration) -> Result<Invoked, DispatchError> {
    tokio::time::timeout(bound, d.invoke(Bytes::from_static(b"{\"Records\":[]}")))
        .await
        .unwrap_or_else(|_| panic!("invoke still running after {bound:?}"))
}

fn error_type(inv: &Invoked) -> String {
    let v: Value = serde_json::from_slice(&inv.body).expect("a JSON error body");
    v["errorType"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn redirects_are_function_errors_and_never_followed() {
    let followed = Arc::new(AtomicUsize::new(0));
    let seen = followed.clone();
    let app = Router::new()
        .route(
            "/redirect/{code}",
            any(|Path(code): Path<u16>| async move {
                let mut h = HeaderMap::new();
                h.insert("location", "/final".parse().unwrap());
                (StatusCode::from_u16(code).unwrap(), h, "")
            }),
        )
        .route(
            "/final",
            any(move || {
                seen.fetch_add(1, Ordering::SeqCst);
                async { (StatusCode::OK, "{}") }
            }),
        );
    let base = serve(app).await;
    for code in [301u16, 302, 303, 307, 308] {
        let d = dispatcher(&format!("{base}/redirect/{code}"), Duration::from_secs(5));
        let inv = invoke(&d, Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("{code}: not a function error: {e}"));
        assert_eq!(inv.status, code);
        assert_eq!(inv.function_error.as_deref(), Some("Unhandled"), "{code}");
        let body: Value = serde_json::from_slice(&inv.body).unwrap();
        assert!(
            body["errorMessage"].as_str().unwrap().contains("/final"),
            "{code}: the message names the Location: {body}"
        );
    }
    assert_eq!(
        followed.load(Ordering::SeqCst),
        0,
        "a redirect was followed"
    );
}

#[tokio::test]
async fn each_status_is_classed_as_lambda_classes_a_failing_function() {
    let app = Router::new().route(
        "/status/{code}",
        any(|Path(code): Path<u16>| async move {
            (
                StatusCode::from_u16(code).unwrap(),
                "{\"errorMessage\":\"x\"}",
            )
        }),
    );
    let base = serve(app).await;
    #[derive(Debug, PartialEq)]
    enum Class {
        Success,
        Function,
        Throttle,
        TooLarge,
    }
    let cases = [
        (200, Class::Success),
        (202, Class::Success),
        (204, Class::Success),
        (400, Class::Function),
        (401, Class::Function),
        (404, Class::Function),
        (408, Class::Function),
        (422, Class::Function),
        (500, Class::Function),
        (501, Class::Function),
        (502, Class::Function),
        (504, Class::Function),
        (507, Class::Function),
        (429, Class::Throttle),
        (503, Class::Throttle),
        (413, Class::TooLarge),
    ];
    for (code, expected) in cases {
        let d = dispatcher(&format!("{base}/status/{code}"), Duration::from_secs(5));
        let got = match invoke(&d, Duration::from_secs(10)).await {
            Ok(inv) if inv.function_error.is_none() => Class::Success,
            Ok(inv) => {
                assert_eq!(inv.function_error.as_deref(), Some("Unhandled"));
                assert_eq!(inv.status, code);
                Class::Function
            }
            Err(DispatchError::Throttled { status, .. }) => {
                assert_eq!(status, Some(code));
                Class::Throttle
            }
            Err(DispatchError::PayloadTooLarge { .. }) => Class::TooLarge,
            Err(e) => panic!("{code}: {e}"),
        };
        assert_eq!(got, expected, "HTTP {code}");
    }
}

#[tokio::test]
async fn a_function_error_header_on_a_2xx_is_kept() {
    let app = Router::new().route(
        "/",
        any(|| async {
            let mut h = HeaderMap::new();
            h.insert("x-amz-function-error", "Handled".parse().unwrap());
            (StatusCode::OK, h, "{\"errorMessage\":\"handled\"}")
        }),
    );
    let base = serve(app).await;
    let inv = invoke(
        &dispatcher(&format!("{base}/"), Duration::from_secs(5)),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(inv.function_error.as_deref(), Some("Handled"));
}

#[tokio::test]
async fn a_handler_past_the_timeout_is_a_function_timeout() {
    let app = Router::new().route(
        "/",
        any(|| async {
            std::future::pending::<()>().await;
            ""
        }),
    );
    let base = serve(app).await;
    let d = dispatcher(&format!("{base}/"), Duration::from_secs(1));
    let inv = invoke(&d, Duration::from_secs(10))
        .await
        .expect("a timeout is a function error, as Lambda's Sandbox.Timedout");
    assert_eq!(inv.status, 200);
    assert_eq!(inv.function_error.as_deref(), Some("Unhandled"));
    assert_eq!(error_type(&inv), "Sandbox.Timedout");
}

#[tokio::test]
async fn a_body_that_stalls_past_the_timeout_is_a_function_timeout() {
    // Headers and part of the body, then nothing: the total timeout must bound the body read too.
    let base = raw_server(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"partial\":",
        true,
    )
    .await;
    let d = dispatcher(&format!("{base}/"), Duration::from_secs(1));
    let inv = invoke(&d, Duration::from_secs(10))
        .await
        .expect("a timeout is a function error");
    assert_eq!(inv.function_error.as_deref(), Some("Unhandled"));
    assert_eq!(error_type(&inv), "Sandbox.Timedout");
}

#[tokio::test]
async fn a_refused_connection_is_a_service_error() {
    let port = common::sluice::free_port();
    let d = dispatcher(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(5));
    match invoke(&d, Duration::from_secs(10)).await {
        Err(DispatchError::Service { status: None, .. }) => {}
        other => panic!("not a service error: {other:?}"),
    }
}

#[tokio::test]
async fn a_connection_closed_without_an_answer_is_a_service_error() {
    let base = raw_server(b"", false).await;
    let d = dispatcher(&format!("{base}/"), Duration::from_secs(5));
    match invoke(&d, Duration::from_secs(10)).await {
        Err(DispatchError::Service { status: None, .. }) => {}
        other => panic!("not a service error: {other:?}"),
    }
}

#[tokio::test]
async fn a_response_over_6_mb_is_a_function_error() {
    let app = Router::new()
        .route("/big", any(|| async { vec![b'x'; 7 * 1024 * 1024] }))
        .route("/exact", any(|| async { vec![b' '; CAP] }));
    let base = serve(app).await;
    let inv = invoke(
        &dispatcher(&format!("{base}/big"), Duration::from_secs(30)),
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    assert_eq!(inv.function_error.as_deref(), Some("Unhandled"));
    assert_eq!(error_type(&inv), "Function.ResponseSizeTooLarge");
    let inv = invoke(
        &dispatcher(&format!("{base}/exact"), Duration::from_secs(30)),
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    assert_eq!(inv.function_error, None, "exactly 6 MB is allowed");
    assert_eq!(inv.body.len(), CAP);
}

#[tokio::test]
async fn an_endless_chunked_response_is_cut_at_6_mb() {
    // A chunked body that never ends: reading stops at the cap long before the 60 s timeout.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let _ = sock.read(&mut buf).await;
        let head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
        if sock.write_all(head).await.is_err() {
            return;
        }
        let chunk = [b' '; 64 * 1024];
        let frame = [
            format!("{:x}\r\n", chunk.len()).into_bytes(),
            chunk.to_vec(),
            b"\r\n".to_vec(),
        ]
        .concat();
        while sock.write_all(&frame).await.is_ok() {
            counter.fetch_add(chunk.len(), Ordering::SeqCst);
        }
    });
    let inv = invoke(
        &dispatcher(&format!("{base}/"), Duration::from_secs(60)),
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    assert_eq!(inv.function_error.as_deref(), Some("Unhandled"));
    assert_eq!(error_type(&inv), "Function.ResponseSizeTooLarge");
    assert!(inv.body.len() < 1024, "the 6 MB were not kept");
}

// ---- End to end: kinesis-local → sluice → a local HTTP target ----

/// An HTTP mapping with `MaximumRetryAttempts: <retries>` and an SQS on-failure destination.
fn mapping(name: &str, arn: &str, url: &str, extra: &str) -> String {
    format!(
        "  - Name: {name}\n    EventSourceArn: {arn}\n    StartingPosition: TRIM_HORIZON\n    BatchSize: 10\n    Http: {{ Url: '{url}'{extra} }}\n"
    )
}

/// Every failure record delivered to the queue, waiting for at least `min`.
async fn failure_records(tb: &TestBed, url: &str, min: usize) -> Vec<Value> {
    drain_queue(&sqs(tb), url, min, Duration::from_secs(60))
        .await
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirecting_target_is_given_up_on_not_acknowledged() {
    let tb = testbed();
    let kinesis = kinesis(&tb).await;
    let stream = unique("redirect");
    let arn = create_stream(&kinesis, &stream, 1).await;
    let (queue_url, queue_arn) = create_queue(&sqs(&tb), &unique("redirect-dest"), &[]).await;
    let followed = Arc::new(AtomicUsize::new(0));
    let seen = followed.clone();
    let app = Router::new()
        .route(
            "/old",
            any(|| async {
                let mut h = HeaderMap::new();
                h.insert("location", "/new".parse().unwrap());
                (StatusCode::MOVED_PERMANENTLY, h, "")
            }),
        )
        .route(
            "/new",
            any(move || {
                seen.fetch_add(1, Ordering::SeqCst);
                async { (StatusCode::OK, "{}") }
            }),
        );
    let base = serve(app).await;
    let url = format!("{base}/old");
    let yaml = format!(
        "{}    MaximumRetryAttempts: 0\n    DestinationConfig: {{ OnFailure: {{ Destination: '{queue_arn}' }} }}\n",
        mapping("redirect", &arn, &url, "")
    );
    let (sluice, _dir) = Sluice::run(&tb, &yaml).await;
    let written = put_records(&kinesis, &stream, records("r", 3, 1)).await;

    let found = failure_records(&tb, &queue_url, 1).await;
    assert_eq!(found.len(), 1, "{found:?}");
    let r = &found[0];
    assert_eq!(r["requestContext"]["condition"], "RetryAttemptsExhausted");
    assert_eq!(r["requestContext"]["approximateInvokeCount"], 1);
    assert_eq!(r["responseContext"]["statusCode"], 301);
    assert_eq!(r["responseContext"]["functionError"], "Unhandled");
    assert_eq!(r["KinesisBatchInfo"]["batchSize"], written.len());
    assert_eq!(
        followed.load(Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
    assert_eq!(
        sluice
            .metric(
                "sluice_batches_total",
                "mapping=\"redirect\",outcome=\"success\""
            )
            .await,
        0.0,
        "nothing acknowledged as a success"
    );
    let log = sluice.log_text();
    assert!(
        log.contains("301") && log.contains("/new"),
        "the log names the status and the Location:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_handler_is_given_up_on_after_maximum_retry_attempts() {
    let tb = testbed();
    let kinesis = kinesis(&tb).await;
    let stream = unique("hang");
    let arn = create_stream(&kinesis, &stream, 1).await;
    let (queue_url, queue_arn) = create_queue(&sqs(&tb), &unique("hang-dest"), &[]).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let app = Router::new().route(
        "/",
        any(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async {
                std::future::pending::<()>().await;
                ""
            }
        }),
    );
    let base = serve(app).await;
    let yaml = format!(
        "{}    MaximumRetryAttempts: 1\n    DestinationConfig: {{ OnFailure: {{ Destination: '{queue_arn}' }} }}\n",
        mapping("hang", &arn, &format!("{base}/"), ", TimeoutSeconds: 1")
    );
    let (_sluice, _dir) = Sluice::run(&tb, &yaml).await;
    let written = put_records(&kinesis, &stream, records("h", 2, 1)).await;

    let found = failure_records(&tb, &queue_url, 1).await;
    assert_eq!(found.len(), 1, "{found:?}");
    let r = &found[0];
    assert_eq!(r["requestContext"]["condition"], "RetryAttemptsExhausted");
    assert_eq!(
        r["requestContext"]["approximateInvokeCount"], 2,
        "the first invoke and one retry"
    );
    assert_eq!(r["responseContext"]["statusCode"], 200);
    assert_eq!(r["responseContext"]["functionError"], "Unhandled");
    assert_eq!(r["KinesisBatchInfo"]["batchSize"], written.len());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
