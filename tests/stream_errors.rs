//! AWS's stream error handling against the emulators: a poison record isolated by bisect and
//! recorded at each kind of on-failure destination (SQS, SNS → SQS, S3, on moto), record age,
//! every partial batch rule, and which failures count retry attempts (Lambda via the fault proxy,
//! HTTP via the test's function).

mod common;

use common::sink::Sink;
use common::sluice::{config, free_port, Sluice};
use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

#[derive(Clone, Copy, Debug)]
enum Dest {
    Sqs,
    Sns,
    S3,
}

/// Where failure records land, and how the test reads them back.
struct Destination {
    arn: String,
    kind: Dest,
    queue_url: Option<String>,
    bucket: Option<String>,
}

async fn destination(tb: &TestBed, kind: Dest) -> Destination {
    let name = unique("dest");
    match kind {
        Dest::Sqs => {
            let (url, arn) = create_queue(&sqs(tb), &name, &[]).await;
            Destination {
                arn,
                kind,
                queue_url: Some(url),
                bucket: None,
            }
        }
        Dest::Sns => {
            let topic = sns(tb)
                .create_topic()
                .name(&name)
                .send()
                .await
                .unwrap()
                .topic_arn()
                .unwrap()
                .to_string();
            let (url, queue_arn) = create_queue(&sqs(tb), &name, &[]).await;
            sns(tb)
                .subscribe()
                .topic_arn(&topic)
                .protocol("sqs")
                .endpoint(queue_arn)
                .send()
                .await
                .unwrap();
            Destination {
                arn: topic,
                kind,
                queue_url: Some(url),
                bucket: None,
            }
        }
        Dest::S3 => {
            s3(tb).create_bucket().bucket(&name).send().await.unwrap();
            Destination {
                arn: format!("arn:aws:s3:::{name}"),
                kind,
                queue_url: None,
                bucket: Some(name),
            }
        }
    }
}

impl Destination {
    /// Every failure record delivered (for S3: with the object key), waiting for at least `min`.
    async fn records(
        &self,
        tb: &TestBed,
        min: usize,
        timeout: Duration,
    ) -> Vec<(Value, Option<String>)> {
        match self.kind {
            Dest::Sqs | Dest::Sns => {
                let bodies =
                    drain_queue(&sqs(tb), self.queue_url.as_ref().unwrap(), min, timeout).await;
                bodies
                    .iter()
                    .map(|b| {
                        let v: Value = serde_json::from_str(b).unwrap();
                        // Through SNS the record is the envelope's Message.
                        let v = match self.kind {
                            Dest::Sns => {
                                serde_json::from_str(v["Message"].as_str().expect("SNS envelope"))
                                    .unwrap()
                            }
                            _ => v,
                        };
                        (v, None)
                    })
                    .collect()
            }
            Dest::S3 => {
                let client = s3(tb);
                let bucket = self.bucket.as_ref().unwrap();
                let keys = wait_for("failure records in S3", timeout, || async {
                    let out = client.list_objects_v2().bucket(bucket).send().await.ok()?;
                    let keys: Vec<String> = out
                        .contents()
                        .iter()
                        .filter_map(|o| o.key().map(str::to_string))
                        .collect();
                    (keys.len() >= min).then_some(keys)
                })
                .await;
                let mut out = Vec::new();
                for key in keys {
                    let obj = client
                        .get_object()
                        .bucket(bucket)
                        .key(&key)
                        .send()
                        .await
                        .unwrap();
                    let bytes = obj.body.collect().await.unwrap().into_bytes();
                    out.push((serde_json::from_slice(&bytes).unwrap(), Some(key)));
                }
                out
            }
        }
    }
}

fn iso_ok(v: &Value) -> time::OffsetDateTime {
    let s = v.as_str().unwrap_or_else(|| panic!("{v} is not a string"));
    assert!(
        s.ends_with('Z') && s.len() == 24,
        "{s} is not yyyy-mm-ddThh:mm:ss.SSSZ"
    );
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
}

/// Checks a failure record field by field against esm-spec.md §9 for `records` of `shard`.
fn check_failure_record(
    r: &Value,
    condition: &str,
    function_arn: &str,
    stream_arn: &str,
    shard: &str,
    records: &[Written],
) {
    let keys: BTreeSet<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
    let mut expected: BTreeSet<&str> = [
        "requestContext",
        "responseContext",
        "version",
        "timestamp",
        "KinesisBatchInfo",
    ]
    .into();
    if r.get("payload").is_some() {
        expected.insert("payload");
    }
    assert_eq!(keys, expected, "{r}");
    let rc = &r["requestContext"];
    assert!(!rc["requestId"].as_str().unwrap().is_empty());
    assert_eq!(rc["functionArn"], function_arn);
    assert_eq!(rc["condition"], condition);
    assert!(rc["approximateInvokeCount"].as_u64().is_some());
    assert_eq!(r["version"], "1.0");
    let at = iso_ok(&r["timestamp"]);
    assert!((time::OffsetDateTime::now_utc() - at).whole_seconds().abs() < 600);
    let info = &r["KinesisBatchInfo"];
    assert_eq!(info["shardId"], shard);
    assert_eq!(info["startSequenceNumber"], records[0].seq.as_str());
    assert_eq!(
        info["endSequenceNumber"],
        records[records.len() - 1].seq.as_str()
    );
    assert_eq!(info["batchSize"], records.len());
    assert_eq!(info["streamArn"], stream_arn);
    let first = iso_ok(&info["approximateArrivalOfFirstRecord"]);
    let last = iso_ok(&info["approximateArrivalOfLastRecord"]);
    assert!(first <= last);
}

async fn poison_goes_to(kind: Dest) {
    let tb = testbed();
    let kinesis = kinesis(&tb).await;
    let stream = unique("poison");
    let arn = create_stream(&kinesis, &stream, 2).await;
    let dest = destination(&tb, kind).await;
    let mut recs = records("p", 5_000, 101);
    recs[2_345].1 = "poison".into();
    let written = put_records(&kinesis, &stream, recs).await;
    let poison = written.iter().find(|w| w.data == "poison").unwrap().clone();
    let mapping = format!(
        "  - Name: poison\n    EventSourceArn: {arn}\n    StartingPosition: TRIM_HORIZON\n    BatchSize: 100\n    FunctionName: recorder\n    BisectBatchOnFunctionError: true\n    MaximumRetryAttempts: 2\n    DestinationConfig: {{ OnFailure: {{ Destination: '{}' }} }}\n",
        dest.arn
    );
    let (sluice, _dir) = Sluice::run(&tb, &mapping).await;

    let read = || recorded(&tb, &stream);
    wait_for(
        "every other record delivered",
        Duration::from_secs(180),
        || async { (read().len() >= written.len() - 1).then_some(()) },
    )
    .await;
    let found = dest.records(&tb, 1, Duration::from_secs(30)).await;
    assert_eq!(found.len(), 1, "exactly one failure record: {found:?}");
    let (record, key) = &found[0];
    check_failure_record(
        record,
        "RetryAttemptsExhausted",
        "arn:aws:lambda:us-east-1:000000000000:function:recorder",
        &arn,
        &poison.shard,
        std::slice::from_ref(&poison),
    );
    // Every invocation that carried the record: the batches it was bisected out of (at most
    // ceil(log2(100)) = 7 of them), then the first invoke alone and 2 retries. The exact count
    // is pinned by the unit test on fakes (`bisect_isolates_the_poison_record_and_keeps_order`).
    let invokes = record["requestContext"]["approximateInvokeCount"]
        .as_u64()
        .unwrap();
    assert!(
        (4..=3 + 7).contains(&invokes),
        "the bisect invocations, the first invoke alone and 2 retries: {invokes}"
    );
    assert_eq!(record["responseContext"]["statusCode"], 200);
    assert_eq!(record["responseContext"]["executedVersion"], "$LATEST");
    assert_eq!(record["responseContext"]["functionError"], "Unhandled");
    if let Dest::S3 = kind {
        let key = key.as_ref().unwrap();
        let today = time::OffsetDateTime::now_utc();
        let prefix = format!(
            "aws/lambda/poison/{}/{:04}/{:02}/{:02}/",
            poison.shard,
            today.year(),
            today.month() as u8,
            today.day()
        );
        assert!(
            key.starts_with(&prefix),
            "{key} does not start with {prefix}"
        );
        let payload: Value = serde_json::from_str(record["payload"].as_str().unwrap()).unwrap();
        let entries = payload["Records"].as_array().unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0]["kinesis"]["sequenceNumber"], poison.seq.as_str());
        assert_eq!(entries[0]["kinesis"]["data"], "cG9pc29u");
    } else {
        assert!(
            record.get("payload").is_none(),
            "SQS and SNS get metadata only"
        );
    }
    // Every other record exactly once, in order per shard.
    let delivered = read();
    assert_eq!(delivered.len(), written.len() - 1, "no duplicates");
    let expected: BTreeSet<_> = written
        .iter()
        .filter(|w| w.data != "poison")
        .map(|w| w.seq.clone())
        .collect();
    assert_eq!(
        delivered
            .iter()
            .map(|w| w.seq.clone())
            .collect::<BTreeSet<_>>(),
        expected
    );
    assert_ordered("poison", &delivered);
    let labels = "mapping=\"poison\"";
    assert_eq!(
        sluice
            .metric(
                "sluice_on_failure_destination_delivered_events_total",
                labels
            )
            .await,
        1.0
    );
    assert_eq!(
        sluice.metric("sluice_dropped_events_total", labels).await,
        0.0
    );
    assert!(
        sluice
            .metric("sluice_failed_invoke_events_total", labels)
            .await
            >= 3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_record_is_isolated_and_recorded_in_sqs() {
    poison_goes_to(Dest::Sqs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_record_is_isolated_and_recorded_in_sns() {
    poison_goes_to(Dest::Sns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_record_is_isolated_and_recorded_in_s3() {
    poison_goes_to(Dest::S3).await;
}

fn http_mapping(name: &str, arn: &str, url: &str, extra: &str) -> String {
    format!(
        "  - Name: {name}\n    EventSourceArn: {arn}\n    StartingPosition: TRIM_HORIZON\n    BatchSize: 10\n    Http: {{ Url: '{url}' }}\n{extra}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_too_old_at_read_time_go_to_the_destination_uninvoked() {
    let tb = testbed();
    let kinesis = kinesis(&tb).await;
    let stream = unique("old");
    let arn = create_stream(&kinesis, &stream, 1).await;
    let written = put_records(&kinesis, &stream, records("o", 5, 1)).await;
    // The records must be older than the smallest allowed MaximumRecordAgeInSeconds (60 s).
    tokio::time::sleep(Duration::from_secs(62)).await;
    let fresh = put_records(&kinesis, &stream, records("n", 3, 1)).await;
    let dest = destination(&tb, Dest::Sqs).await;
    let sink = Sink::ok().await;
    let extra = format!("    MaximumRecordAgeInSeconds: 60\n    DestinationConfig: {{ OnFailure: {{ Destination: '{}' }} }}\n", dest.arn);
    let (_sluice, _dir) = Sluice::run(&tb, &http_mapping("old", &arn, &sink.url, &extra)).await;
    wait_for(
        "the fresh records delivered",
        Duration::from_secs(60),
        || async { (sink.delivered().len() >= fresh.len()).then_some(()) },
    )
    .await;
    let found = dest.records(&tb, 1, Duration::from_secs(30)).await;
    assert_eq!(found.len(), 1, "{found:?}");
    check_failure_record(
        &found[0].0,
        "RecordAgeExceeded",
        &sink.url,
        &arn,
        &written[0].shard,
        &written,
    );
    assert_eq!(found[0].0["requestContext"]["approximateInvokeCount"], 0);
    assert!(found[0].0["responseContext"].is_null());
    // The function saw only the fresh records.
    let seen: Vec<String> = sink
        .all
        .lock()
        .unwrap()
        .iter()
        .flat_map(|r| r.records.iter().map(|w| w.data.clone()))
        .collect();
    assert_eq!(seen, vec!["n-0", "n-1", "n-2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_that_expire_while_retrying_go_to_the_destination() {
    let tb = testbed();
    let kinesis = kinesis(&tb).await;
    let stream = unique("expire");
    let arn = create_stream(&kinesis, &stream, 1).await;
    let dest = destination(&tb, Dest::Sqs).await;
    let sink = Sink::start(|_, _| (500, vec![], "{\"errorMessage\":\"always\"}".into())).await;
    let extra = format!("    MaximumRecordAgeInSeconds: 60\n    DestinationConfig: {{ OnFailure: {{ Destination: '{}' }} }}\n", dest.arn);
    let (sluice, _dir) = Sluice::run(&tb, &http_mapping("expire", &arn, &sink.url, &extra)).await;
    sluice.wait_ready().await;
    let written = put_records(&kinesis, &stream, records("e", 4, 1)).await;
    let found = dest.records(&tb, 1, Duration::from_secs(120)).await;
    assert_eq!(found.len(), 1, "{found:?}");
    let r = &found[0].0;
    check_failure_record(
        r,
        "RecordAgeExceeded",
        &sink.url,
        &arn,
        &written[0].shard,
        &written,
    );
    assert!(
        r["requestContext"]["approximateInvokeCount"]
            .as_u64()
            .unwrap()
            >= 2,
        "retried before expiring: {r}"
    );
    assert_eq!(r["responseContext"]["statusCode"], 500);
    assert_eq!(r["responseContext"]["functionError"], "Unhandled");
    assert!(sink
        .all
        .lock()
        .unwrap()
        .iter()
        .all(|req| req.records.len() == 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_partial_batch_rule() {
    let tb = testbed();
    let kinesis = kinesis(&tb).await;
    // (rule, first response body given the batch's sequence numbers, expected first record of the 2nd call)
    type Body = fn(&[Written]) -> String;
    let rules: Vec<(&str, Body, Option<usize>)> = vec![
        ("empty list", |_| r#"{"batchItemFailures":[]}"#.into(), None),
        (
            "null list",
            |_| r#"{"batchItemFailures":null}"#.into(),
            None,
        ),
        ("null response", |_| "null".into(), None),
        (
            "empty identifier",
            |_| r#"{"batchItemFailures":[{"itemIdentifier":""}]}"#.into(),
            Some(0),
        ),
        (
            "null identifier",
            |_| r#"{"batchItemFailures":[{"itemIdentifier":null}]}"#.into(),
            Some(0),
        ),
        (
            "unknown identifier",
            |_| r#"{"batchItemFailures":[{"itemIdentifier":"123"}]}"#.into(),
            Some(0),
        ),
        (
            "bad key name",
            |b| {
                format!(
                    r#"{{"batchItemFailures":[{{"ItemIdentifier":"{}"}}]}}"#,
                    b[6].seq
                )
            },
            Some(0),
        ),
        (
            "real identifiers",
            |b| {
                format!(
                    r#"{{"batchItemFailures":[{{"itemIdentifier":"{}"}},{{"itemIdentifier":"{}"}}]}}"#,
                    b[7].seq, b[4].seq
                )
            },
            Some(4),
        ),
    ];
    let mut cases = Vec::new();
    for (rule, body, retry_from) in rules {
        let stream = unique("partial");
        let arn = create_stream(&kinesis, &stream, 1).await;
        let written = put_records(&kinesis, &stream, records("b", 10, 1)).await;
        // The rule's body answers the first batch; everything after succeeds.
        let sink = Sink::start(move |req, _| {
            let first_batch = req.records.first().map(|r| r.data.as_str()) == Some("b-0")
                && req.records.len() == 10;
            (
                200,
                vec![],
                if first_batch {
                    body(&req.records)
                } else {
                    "{}".into()
                },
            )
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let extra = "    FunctionResponseTypes: [ReportBatchItemFailures]\n";
        let sluice = Sluice::start(
            dir.path(),
            "run",
            &config(
                &tb,
                &dir.path().join("cp"),
                free_port(),
                &http_mapping("partial", &arn, &sink.url, extra),
            ),
        )
        .await;
        cases.push((rule, retry_from, written, sink, sluice, dir, stream));
    }
    for (rule, retry_from, written, sink, _sluice, _dir, stream) in &cases {
        match retry_from {
            None => {
                // Complete success: the next call carries new records, not a retry of the batch.
                wait_for(rule, Duration::from_secs(30), || async {
                    (!sink.all.lock().unwrap().is_empty()).then_some(())
                })
                .await;
                put_records(&kinesis, stream, records("c", 2, 1)).await;
                let second = wait_for(rule, Duration::from_secs(30), || async {
                    let all = sink.all.lock().unwrap();
                    (all.len() >= 2).then(|| all[1].records.clone())
                })
                .await;
                assert_eq!(
                    second[0].data, "c-0",
                    "{rule}: complete success must not retry"
                );
                assert_eq!(sink.all.lock().unwrap()[0].records.len(), 10);
            }
            Some(from) => {
                let second = wait_for(rule, Duration::from_secs(30), || async {
                    let all = sink.all.lock().unwrap();
                    (all.len() >= 2).then(|| all[1].records.clone())
                })
                .await;
                assert_eq!(
                    second[0].seq, written[*from].seq,
                    "{rule}: the retry starts at record {from}"
                );
                assert_eq!(second.len(), 10 - from, "{rule}");
            }
        }
    }
}

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
