//! Every partial batch rule of ReportBatchItemFailures (empty, null and malformed responses,
//! unknown identifiers, real identifiers): which answers are complete success and where the retry
//! starts otherwise.

use super::http_mapping;
use crate::common::sink::Sink;
use crate::common::sluice::{config, free_port, Sluice};
use crate::common::*;
use std::time::Duration;

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
