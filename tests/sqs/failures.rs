//! When things go wrong: partial batch responses return only the failed messages, poison messages
//! move to the DLQ by the queue's redrive policy, a function slower than the visibility timeout
//! still gets each message once, and a missing queue is a clear error that leaves the other
//! mappings running.

use crate::common::sink::Sink;
use crate::common::sluice::Sluice;
use crate::common::*;
use crate::sqs_support::{bodies, depth, mapping, send};
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_batch_responses_return_only_the_failed_messages() {
    let tb = testbed();
    let client = sqs(&tb);
    let (url, arn) = create_queue(
        &client,
        &unique("partial"),
        &[(QueueAttributeName::VisibilityTimeout, "2".into())],
    )
    .await;
    let (bad_url, bad_arn) = create_queue(
        &client,
        &unique("partial-bad"),
        &[(QueueAttributeName::VisibilityTimeout, "2".into())],
    )
    .await;
    // Reports `fail` (by messageId) on its first delivery; on the other queue names an unknown id once.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(HashMap::<String, usize>::new()));
    let s2 = seen.clone();
    let sink = Sink::start(move |req, _| {
        let entries: Vec<Value> = serde_json::from_slice::<Value>(&req.body).unwrap()["Records"]
            .as_array()
            .unwrap()
            .clone();
        let mut seen = s2.lock().unwrap();
        let mut failures = Vec::new();
        for e in &entries {
            let body = e["body"].as_str().unwrap().to_string();
            let n = seen.entry(body.clone()).or_insert(0);
            *n += 1;
            if body == "fail" && *n == 1 {
                failures.push(format!(
                    "{{\"itemIdentifier\":\"{}\"}}",
                    e["messageId"].as_str().unwrap()
                ));
            }
            if body == "bad-0" && *n == 1 {
                failures.push("{\"itemIdentifier\":\"not-a-message-id\"}".to_string());
            }
        }
        (
            200,
            vec![],
            format!("{{\"batchItemFailures\":[{}]}}", failures.join(",")),
        )
    })
    .await;
    let extra = "    FunctionResponseTypes: [ReportBatchItemFailures]\n";
    let mappings = format!(
        "{}{}",
        mapping("partial", &arn, &sink.url, extra),
        mapping("partialbad", &bad_arn, &sink.url, extra)
    );
    let (_sluice, _dir) = Sluice::run(&tb, &mappings).await;
    let batch: Vec<(String, Option<String>)> = ["a", "b", "fail", "c", "d"]
        .iter()
        .map(|b| (b.to_string(), None))
        .collect();
    send(&client, &url, &batch).await;
    let bad: Vec<(String, Option<String>)> = (0..3).map(|i| (format!("bad-{i}"), None)).collect();
    send(&client, &bad_url, &bad).await;
    wait_for(
        "the failed messages redelivered",
        Duration::from_secs(60),
        || async {
            let s = seen.lock().unwrap();
            (s.get("fail") == Some(&2) && s.get("bad-0").copied().unwrap_or(0) >= 2).then_some(())
        },
    )
    .await;
    wait_for("both queues empty", Duration::from_secs(30), || async {
        (depth(&client, &url).await == 0 && depth(&client, &bad_url).await == 0).then_some(())
    })
    .await;
    let s = seen.lock().unwrap();
    for b in ["a", "b", "c", "d"] {
        // Delivered together with `fail` in one batch at most: each succeeded, so never again.
        assert_eq!(s.get(b), Some(&1), "{b} was deleted after its success");
    }
    // An unknown identifier fails the whole batch: every message of it came back.
    let first_batch_of_bad: usize = (0..3)
        .filter(|i| s.get(&format!("bad-{i}")).copied().unwrap_or(0) >= 2)
        .count();
    assert!(first_batch_of_bad >= 1, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_move_to_the_dlq_after_max_receive_count() {
    let tb = testbed();
    let client = sqs(&tb);
    let (dlq_url, dlq_arn) = create_queue(&client, &unique("dlq"), &[]).await;
    let redrive = format!("{{\"deadLetterTargetArn\":\"{dlq_arn}\",\"maxReceiveCount\":\"2\"}}");
    let (url, arn) = create_queue(
        &client,
        &unique("redrive"),
        &[
            (QueueAttributeName::VisibilityTimeout, "1".into()),
            (QueueAttributeName::RedrivePolicy, redrive),
        ],
    )
    .await;
    let sink = Sink::start(|req, _| {
        let v: Value = serde_json::from_slice(&req.body).unwrap();
        if v["Records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["body"] == "poison")
        {
            (500, vec![], "{\"errorMessage\":\"poison\"}".into())
        } else {
            (200, vec![], "{}".into())
        }
    })
    .await;
    let extra = "    BatchSize: 1\n";
    let (_sluice, _dir) = Sluice::run(&tb, &mapping("redrive", &arn, &sink.url, extra)).await;
    send(
        &client,
        &url,
        &[
            ("ok-1".into(), None),
            ("poison".into(), None),
            ("ok-2".into(), None),
        ],
    )
    .await;
    let dead = drain_queue(&client, &dlq_url, 1, Duration::from_secs(60)).await;
    assert_eq!(dead, vec!["poison".to_string()]);
    let poison_calls = bodies(&sink.all_entries())
        .iter()
        .filter(|b| *b == "poison")
        .count();
    assert_eq!(
        poison_calls, 2,
        "invoked maxReceiveCount times, then moved to the DLQ by the queue"
    );
    let ok: BTreeSet<String> = bodies(&sink.accepted_entries()).into_iter().collect();
    assert_eq!(ok, BTreeSet::from(["ok-1".to_string(), "ok-2".to_string()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_slower_than_the_visibility_timeout_gets_each_message_once() {
    let tb = testbed();
    let client = sqs(&tb);
    let (url, arn) = create_queue(
        &client,
        &unique("slow"),
        &[(QueueAttributeName::VisibilityTimeout, "2".into())],
    )
    .await;
    // Each invoke takes 12 s, six times the queue's visibility timeout and past the heartbeat's
    // first beat (a third of the 30 s in-flight visibility).
    let sink = Sink::start_slow(Duration::from_secs(12), |_, _| (200, vec![], "{}".into())).await;
    let (sluice, _dir) = Sluice::run(&tb, &mapping("slow", &arn, &sink.url, "")).await;
    let msgs: Vec<(String, Option<String>)> = (0..30).map(|i| (format!("s-{i}"), None)).collect();
    send(&client, &url, &msgs).await;
    wait_for(
        "every message delivered and deleted",
        Duration::from_secs(90),
        || async {
            (sink.accepted_entries().len() >= msgs.len() && depth(&client, &url).await == 0)
                .then_some(())
        },
    )
    .await;
    // When each message arrived at the function. A second copy that comes after the queue's
    // visibility timeout would mean the heartbeat let the message go; that must never happen. moto
    // (unlike SQS, but like SQS's own at-least-once rule allows) hands one message to two
    // concurrent ReceiveMessage calls now and then (its receive takes no lock): such twins arrive
    // together, at once, and are told apart by that.
    let mut arrivals: BTreeMap<String, Vec<std::time::Instant>> = BTreeMap::new();
    for req in sink.all.lock().unwrap().iter() {
        let event: Value = serde_json::from_slice(&req.body).unwrap();
        for e in event["Records"].as_array().unwrap() {
            arrivals
                .entry(e["body"].as_str().unwrap().to_string())
                .or_default()
                .push(req.arrived_at);
        }
    }
    assert_eq!(arrivals.len(), msgs.len(), "every message delivered");
    let late: Vec<(&String, Duration)> = arrivals
        .iter()
        .filter(|(_, at)| at.len() > 1)
        .map(|(body, at)| (body, *at.iter().max().unwrap() - *at.iter().min().unwrap()))
        .filter(|(_, apart)| *apart >= Duration::from_secs(2))
        .collect();
    assert!(
        late.is_empty(),
        "no message delivered again after the visibility timeout: {late:?}"
    );
    let twins = arrivals.values().filter(|at| at.len() > 1).count();
    eprintln!("messages handed to two pollers at once by moto: {twins}");
    assert!(
        sluice
            .metric("sluice_sqs_visibility_extensions_total", "mapping=\"slow\"")
            .await
            > 0.0
    );
    assert!(
        sluice
            .log_text()
            .contains("visibility timeout is shorter than the target's timeout"),
        "warned at start"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_queue_is_a_clear_error_and_the_other_mappings_keep_running() {
    let tb = testbed();
    let client = sqs(&tb);
    let (url, arn) = create_queue(&client, &unique("present"), &[]).await;
    let missing = format!("arn:aws:sqs:us-east-1:123456789012:{}", unique("missing"));
    let sink = Sink::ok().await;
    let mappings = format!(
        "{}{}",
        mapping("missing", &missing, &sink.url, ""),
        mapping("present", &arn, &sink.url, "")
    );
    let (sluice, _dir) = Sluice::run(&tb, &mappings).await;
    send(&client, &url, &[("hello".into(), None)]).await;
    wait_for(
        "the present queue's message delivered",
        Duration::from_secs(60),
        || async { (!sink.accepted_entries().is_empty()).then_some(()) },
    )
    .await;
    let log = wait_for("the error logged", Duration::from_secs(30), || async {
        let log = sluice.log_text();
        log.contains("the queue does not exist").then_some(log)
    })
    .await;
    assert!(log.contains(&missing), "the error names the queue");
    assert_eq!(
        sluice.get("/readyz").await.unwrap().0,
        503,
        "not ready while a mapping cannot start"
    );
    assert_eq!(sluice.get("/healthz").await.unwrap().0, 200, "but alive");
}
