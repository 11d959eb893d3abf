//! Which failures count retry attempts: Lambda throttles (through the fault proxy) and HTTP 429 and
//! 503 do not, HTTP function errors do, and a batch Lambda rejects as too large is split without
//! spending any.

use super::{check_failure_record, destination, http_mapping, Dest};
use crate::common::sink::Sink;
use crate::common::sluice::{config, free_port, Sluice};
use crate::common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lambda_throttles_count_no_attempts() {
    let tb = testbed();
    let kinesis = kinesis(&tb).await;
    let stream = unique("throttle");
    let arn = create_stream(&kinesis, &stream, 1).await;
    let dest = destination(&tb, Dest::Sqs).await;
    // The fault proxy answers the first 4 invokes of this qualifier with 429 TooManyRequestsException.
    let qualifier = unique("q");
    std::fs::write(
        tb.faults_dir.join(format!("{qualifier}.json")),
        r#"{"throttle": 4}"#,
    )
    .unwrap();
    let mapping = format!(
        "  - Name: throttle\n    EventSourceArn: {arn}\n    StartingPosition: TRIM_HORIZON\n    FunctionName: recorder:{qualifier}\n    MaximumRetryAttempts: 0\n    DestinationConfig: {{ OnFailure: {{ Destination: '{}' }} }}\n",
        dest.arn
    );
    let (sluice, _dir) = Sluice::run(&tb, &mapping).await;
    let written = put_records(&kinesis, &stream, records("t", 5, 1)).await;
    wait_for(
        "records delivered after the throttles",
        Duration::from_secs(60),
        || async { (recorded(&tb, &stream).len() >= written.len()).then_some(()) },
    )
    .await;
    let labels = "mapping=\"throttle\",outcome=\"throttled\"";
    assert_eq!(sluice.metric("sluice_batches_total", labels).await, 4.0);
    assert_eq!(
        sluice
            .metric(
                "sluice_batches_total",
                "mapping=\"throttle\",outcome=\"success\""
            )
            .await,
        1.0
    );
    assert!(
        dest.records(&tb, 0, Duration::from_secs(2))
            .await
            .is_empty(),
        "throttles never exhaust MaximumRetryAttempts=0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_failures_count_attempts_by_class() {
    let tb = testbed();
    let kinesis = kinesis(&tb).await;
    // (case, status while failing, with X-Amz-Function-Error, failing replies before success; None: always)
    let cases: Vec<(&str, u16, bool, Option<usize>)> = vec![
        ("429 is a throttle", 429, false, Some(3)),
        ("503 is a throttle", 503, false, Some(3)),
        ("500 is a function error", 500, false, None),
        ("404 is a function error", 404, false, None),
        (
            "2xx with X-Amz-Function-Error is a function error",
            200,
            true,
            None,
        ),
    ];
    let mut running = Vec::new();
    for (case, status, header, fail_for) in cases {
        let stream = unique("class");
        let arn = create_stream(&kinesis, &stream, 1).await;
        let dest = destination(&tb, Dest::Sqs).await;
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = calls.clone();
        let sink = Sink::start(move |_, _| {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if n < fail_for.unwrap_or(usize::MAX) {
                let extra = if header {
                    vec![("X-Amz-Function-Error", "Unhandled".to_string())]
                } else {
                    vec![]
                };
                (status, extra, "{\"errorMessage\":\"failing\"}".into())
            } else {
                (200, vec![], "{}".into())
            }
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let extra = format!("    MaximumRetryAttempts: 0\n    DestinationConfig: {{ OnFailure: {{ Destination: '{}' }} }}\n", dest.arn);
        let sluice = Sluice::start(
            dir.path(),
            "run",
            &config(
                &tb,
                &dir.path().join("cp"),
                free_port(),
                &http_mapping("class", &arn, &sink.url, &extra),
            ),
        )
        .await;
        let written = put_records(&kinesis, &stream, records("c", 3, 1)).await;
        running.push((case, fail_for, calls, written, sink, dest, sluice, dir, arn));
    }
    for (case, fail_for, calls, written, sink, dest, _sluice, _dir, arn) in &running {
        match fail_for {
            Some(n) => {
                // Not an attempt: MaximumRetryAttempts=0 still delivers after the failures.
                wait_for(case, Duration::from_secs(60), || async {
                    (sink.delivered().len() >= written.len()).then_some(())
                })
                .await;
                assert_eq!(
                    calls.load(std::sync::atomic::Ordering::SeqCst),
                    n + 1,
                    "{case}"
                );
                assert!(
                    dest.records(&tb, 0, Duration::from_secs(2))
                        .await
                        .is_empty(),
                    "{case}: nothing given up"
                );
            }
            None => {
                // One attempt spends MaximumRetryAttempts=0: one call, then the destination.
                let found = dest.records(&tb, 1, Duration::from_secs(60)).await;
                assert_eq!(found.len(), 1, "{case}");
                check_failure_record(
                    &found[0].0,
                    "RetryAttemptsExhausted",
                    &sink.url,
                    arn,
                    &written[0].shard,
                    written,
                );
                assert_eq!(
                    found[0].0["requestContext"]["approximateInvokeCount"], 1,
                    "{case}"
                );
                assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1, "{case}");
                assert_eq!(
                    found[0].0["responseContext"]["functionError"], "Unhandled",
                    "{case}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_lambda_rejects_as_too_large_is_split() {
    let tb = testbed();
    let kinesis = kinesis(&tb).await;
    let stream = unique("large");
    let arn = create_stream(&kinesis, &stream, 1).await;
    // The fault proxy answers 413 RequestTooLargeException to payloads over 3,000 bytes (~7 records).
    let qualifier = unique("q");
    std::fs::write(
        tb.faults_dir.join(format!("{qualifier}.json")),
        r#"{"max_bytes": 3000}"#,
    )
    .unwrap();
    let mapping = format!(
        "  - Name: large\n    EventSourceArn: {arn}\n    StartingPosition: TRIM_HORIZON\n    BatchSize: 100\n    FunctionName: recorder:{qualifier}\n    MaximumRetryAttempts: 0\n"
    );
    let (sluice, _dir) = Sluice::run(&tb, &mapping).await;
    let written = put_records(&kinesis, &stream, records("x", 60, 7)).await;
    let delivered = wait_for(
        "every record delivered in smaller batches",
        Duration::from_secs(60),
        || async {
            let got = recorded(&tb, &stream);
            (got.len() >= written.len()).then_some(got)
        },
    )
    .await;
    let data: Vec<String> = delivered.into_iter().map(|w| w.data).collect();
    assert_eq!(
        data,
        written.iter().map(|w| w.data.clone()).collect::<Vec<_>>(),
        "all, once, in order"
    );
    assert!(
        sluice
            .metric(
                "sluice_batches_total",
                "mapping=\"large\",outcome=\"payload_too_large\""
            )
            .await
            >= 1.0
    );
    assert_eq!(
        sluice
            .metric("sluice_dropped_events_total", "mapping=\"large\"")
            .await,
        0.0,
        "splitting spent no attempts"
    );
}
