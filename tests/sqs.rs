//! SQS against moto: 10,000 standard messages delivered and deleted; FIFO order per group with a
//! failing group that does not stop the others; partial batch responses; redrive to a DLQ; a
//! function slower than the visibility timeout; a missing queue. moto's SQS slows down as a queue
//! fills, so producers feed as the consumer goes. In-flight handling: tests/sqs_in_flight.rs.

mod common;
mod sqs_support;

use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName};
use common::sink::Sink;
use common::sluice::Sluice;
use common::*;
use serde_json::Value;
use sqs_support::{bodies, depth, mapping, send};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_standard_messages_are_delivered_and_deleted() {
    let tb = testbed();
    let client = sqs(&tb);
    let (url, arn) = create_queue(&client, &unique("std"), &[]).await;
    let sink = Sink::ok().await;
    let (sluice, _dir) = Sluice::run(&tb, &mapping("std", &arn, &sink.url, "")).await;
    sluice.wait_ready().await;
    const N: usize = 10_000;
    let all: Vec<(String, Option<String>)> = (0..N).map(|i| (format!("m-{i}"), None)).collect();
    for chunk in all.chunks(500) {
        // Feed as the consumer goes: keep the queue shallow for moto.
        wait_for(
            "the queue to drain below 500",
            Duration::from_secs(120),
            || async { (depth(&client, &url).await < 500).then_some(()) },
        )
        .await;
        send(&client, &url, chunk).await;
    }
    wait_for(
        "every message delivered",
        Duration::from_secs(300),
        || async {
            (bodies(&sink.accepted_entries())
                .into_iter()
                .collect::<BTreeSet<_>>()
                .len()
                >= N)
                .then_some(())
        },
    )
    .await;
    let got = bodies(&sink.accepted_entries());
    assert_eq!(
        got.iter().collect::<BTreeSet<_>>(),
        all.iter().map(|(b, _)| b).collect::<BTreeSet<_>>()
    );
    // Standard queues deliver at least once, and moto's threaded server can hand one message to two
    // concurrent receives: a few duplicates are allowed, not a pattern of them.
    assert!(got.len() - N <= N / 100, "{} duplicates", got.len() - N);
    wait_for("every message deleted", Duration::from_secs(60), || async {
        (depth(&client, &url).await == 0).then_some(())
    })
    .await;
    assert!(
        sluice
            .metric("sluice_sqs_messages_deleted_total", "mapping=\"std\"")
            .await
            >= N as f64
    );
    assert!(sluice.metric("sluice_concurrency", "mapping=\"std\"").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_matches_lambdas_sqs_event() {
    let tb = testbed();
    let client = sqs(&tb);
    let (url, arn) = create_queue(&client, &unique("shape"), &[]).await;
    let sink = Sink::ok().await;
    let (_sluice, _dir) = Sluice::run(&tb, &mapping("shape", &arn, &sink.url, "")).await;
    let sent = client
        .send_message()
        .queue_url(&url)
        .message_body("{\"hello\":\"world\"}")
        .message_attributes(
            "s",
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value("text")
                .build()
                .unwrap(),
        )
        .message_attributes(
            "n",
            MessageAttributeValue::builder()
                .data_type("Number")
                .string_value("42")
                .build()
                .unwrap(),
        )
        .message_attributes(
            "b",
            MessageAttributeValue::builder()
                .data_type("Binary")
                .binary_value(aws_sdk_sqs::primitives::Blob::new(b"hi".to_vec()))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    wait_for("the message delivered", Duration::from_secs(60), || async {
        (!sink.accepted_entries().is_empty()).then_some(())
    })
    .await;
    let e = &sink.accepted_entries()[0];
    assert_eq!(e["messageId"], sent.message_id().unwrap());
    assert!(e["receiptHandle"].as_str().is_some_and(|h| !h.is_empty()));
    assert_eq!(e["body"], "{\"hello\":\"world\"}");
    assert_eq!(e["md5OfBody"], sent.md5_of_message_body().unwrap());
    assert_eq!(
        e["md5OfMessageAttributes"],
        sent.md5_of_message_attributes().unwrap()
    );
    assert_eq!(e["eventSource"], "aws:sqs");
    assert_eq!(e["eventSourceARN"], arn.as_str());
    assert_eq!(e["awsRegion"], "us-east-1");
    let attrs = e["attributes"].as_object().unwrap();
    for k in [
        "ApproximateReceiveCount",
        "SentTimestamp",
        "SenderId",
        "ApproximateFirstReceiveTimestamp",
    ] {
        assert!(
            attrs.get(k).is_some_and(Value::is_string),
            "attribute {k} in {attrs:?}"
        );
    }
    assert_eq!(attrs["ApproximateReceiveCount"], "1");
    let ma = &e["messageAttributes"];
    assert_eq!(
        ma["s"],
        serde_json::json!({"stringValue":"text","stringListValues":[],"binaryListValues":[],"dataType":"String"})
    );
    assert_eq!(
        ma["n"],
        serde_json::json!({"stringValue":"42","stringListValues":[],"binaryListValues":[],"dataType":"Number"})
    );
    assert_eq!(
        ma["b"],
        serde_json::json!({"binaryValue":"aGk=","stringListValues":[],"binaryListValues":[],"dataType":"Binary"})
    );
    // An independent parser reads the same.
    let body = sink.accepted.lock().unwrap()[0].body.clone();
    let parsed: aws_lambda_events::event::sqs::SqsEvent =
        serde_json::from_slice(&body).expect("aws_lambda_events parses it");
    let r = &parsed.records[0];
    assert_eq!(r.message_id.as_deref(), sent.message_id());
    assert_eq!(r.body.as_deref(), Some("{\"hello\":\"world\"}"));
    assert_eq!(r.event_source.as_deref(), Some("aws:sqs"));
    assert_eq!(r.event_source_arn.as_deref(), Some(arn.as_str()));
    assert_eq!(
        r.message_attributes["s"].string_value.as_deref(),
        Some("text")
    );
    assert_eq!(
        r.message_attributes["b"]
            .binary_value
            .as_ref()
            .map(|b| b.0.clone()),
        Some(b"hi".to_vec())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_keeps_order_per_group_and_a_failing_group_does_not_stop_the_others() {
    let tb = testbed();
    let client = sqs(&tb);
    let (url, arn) = create_queue(
        &client,
        &format!("{}.fifo", unique("fifo")),
        &[
            (QueueAttributeName::FifoQueue, "true".into()),
            (QueueAttributeName::VisibilityTimeout, "2".into()),
        ],
    )
    .await;
    // Group g-0 fails until the test has seen every other group delivered and releases it.
    const PER_GROUP: usize = 20;
    let others = 9 * PER_GROUP;
    let failures = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let release = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (f2, r2) = (failures.clone(), release.clone());
    let sink = Sink::start(move |req, _| {
        let entries: Vec<Value> = serde_json::from_slice::<Value>(&req.body).unwrap()["Records"]
            .as_array()
            .unwrap()
            .clone();
        let group = entries[0]["attributes"]["MessageGroupId"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            entries
                .iter()
                .all(|e| e["attributes"]["MessageGroupId"] == group.as_str()),
            "a dispatch mixed groups"
        );
        if group == "g-0" && !r2.load(std::sync::atomic::Ordering::SeqCst) {
            f2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            return (
                500,
                vec![],
                "{\"errorMessage\":\"group 0 is failing\"}".into(),
            );
        }
        (200, vec![], "{}".into())
    })
    .await;
    // BatchSize 1: moto redelivers a FIFO group out of order when several of its messages become
    // visible at once (real SQS does not); with one message of a group in flight, it is exact.
    let (_sluice, _dir) =
        Sluice::run(&tb, &mapping("fifo", &arn, &sink.url, "    BatchSize: 1\n")).await;
    let msgs: Vec<(String, Option<String>)> = (0..PER_GROUP)
        .flat_map(|i| (0..10).map(move |g| (format!("g-{g}:{i}"), Some(format!("g-{g}")))))
        .collect();
    send(&client, &url, &msgs).await;

    wait_for(
        "the other 9 groups delivered",
        Duration::from_secs(120),
        || async {
            let got = bodies(&sink.accepted_entries());
            (got.iter().filter(|b| !b.starts_with("g-0:")).count() >= others).then_some(())
        },
    )
    .await;
    assert!(
        bodies(&sink.accepted_entries())
            .iter()
            .all(|b| !b.starts_with("g-0:")),
        "g-0 delivered nothing while failing"
    );
    wait_for(
        "g-0 to have failed at least twice",
        Duration::from_secs(30),
        || async { (failures.load(std::sync::atomic::Ordering::SeqCst) >= 2).then_some(()) },
    )
    .await;
    release.store(true, std::sync::atomic::Ordering::SeqCst);
    wait_for(
        "the failing group delivered after its retries",
        Duration::from_secs(120),
        || async { (sink.accepted_entries().len() >= msgs.len()).then_some(()) },
    )
    .await;
    let entries = sink.accepted_entries();
    let mut per_group: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for e in &entries {
        let b = e["body"].as_str().unwrap();
        let (g, i) = b.split_once(':').unwrap();
        per_group
            .entry(g.to_string())
            .or_default()
            .push(i.parse().unwrap());
        for k in ["SequenceNumber", "MessageGroupId", "MessageDeduplicationId"] {
            assert!(e["attributes"][k].is_string(), "FIFO attribute {k}");
        }
    }
    for (g, seq) in &per_group {
        assert_eq!(
            seq,
            &(0..PER_GROUP).collect::<Vec<_>>(),
            "group {g} in order, once"
        );
    }
    assert!(failures.load(std::sync::atomic::Ordering::SeqCst) >= 2);
    // The failing group's first message came back with a higher receive count.
    let first_g0 = entries.iter().find(|e| e["body"] == "g-0:0").unwrap();
    assert!(
        first_g0["attributes"]["ApproximateReceiveCount"]
            .as_str()
            .unwrap()
            .parse::<u32>()
            .unwrap()
            >= 2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_batches_are_dispatched_per_group_in_order() {
    let tb = testbed();
    let client = sqs(&tb);
    let (url, arn) = create_queue(
        &client,
        &format!("{}.fifo", unique("fifo10")),
        &[(QueueAttributeName::FifoQueue, "true".into())],
    )
    .await;
    let sink = Sink::ok().await;
    let (_sluice, _dir) = Sluice::run(
        &tb,
        &mapping("fifo10", &arn, &sink.url, "    BatchSize: 10\n"),
    )
    .await;
    let msgs: Vec<(String, Option<String>)> = (0..30)
        .flat_map(|i| (0..10).map(move |g| (format!("g-{g}:{i}"), Some(format!("g-{g}")))))
        .collect();
    send(&client, &url, &msgs).await;
    wait_for(
        "every message delivered",
        Duration::from_secs(120),
        || async { (sink.accepted_entries().len() >= msgs.len()).then_some(()) },
    )
    .await;
    let mut per_group: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for req in sink.accepted.lock().unwrap().iter() {
        let v: Value = serde_json::from_slice(&req.body).unwrap();
        let groups: BTreeSet<&str> = v["Records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["attributes"]["MessageGroupId"].as_str().unwrap())
            .collect();
        assert_eq!(groups.len(), 1, "one dispatch, one group: {groups:?}");
    }
    for b in bodies(&sink.accepted_entries()) {
        let (g, i) = b.split_once(':').unwrap();
        per_group
            .entry(g.to_string())
            .or_default()
            .push(i.parse().unwrap());
    }
    assert_eq!(per_group.len(), 10);
    for (g, seq) in &per_group {
        assert_eq!(
            seq,
            &(0..30).collect::<Vec<_>>(),
            "group {g} in order, once"
        );
    }
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receives_repeat_to_fill_the_batch_within_the_window() {
    let tb = testbed();
    let client = sqs(&tb);
    let (url, arn) = create_queue(&client, &unique("window"), &[]).await;
    let msgs: Vec<(String, Option<String>)> = (0..40).map(|i| (format!("w-{i}"), None)).collect();
    send(&client, &url, &msgs).await;
    let sink = Sink::ok().await;
    let extra = "    BatchSize: 40\n    MaximumBatchingWindowInSeconds: 3\n    ScalingConfig: { MaximumConcurrency: 2 }\n";
    let (_sluice, _dir) = Sluice::run(&tb, &mapping("window", &arn, &sink.url, extra)).await;
    // A few seconds when moto is idle; it once took over a minute in CI while the
    // ten-thousand-message test loaded moto beside it (the log is printed if it fails again).
    wait_for(
        "every message delivered",
        Duration::from_secs(120),
        || async { (sink.accepted_entries().len() >= msgs.len()).then_some(()) },
    )
    .await;
    let sizes: Vec<usize> = sink
        .accepted
        .lock()
        .unwrap()
        .iter()
        .map(|r| {
            serde_json::from_slice::<Value>(&r.body).unwrap()["Records"]
                .as_array()
                .unwrap()
                .len()
        })
        .collect();
    assert!(
        sizes.iter().any(|n| *n > 10),
        "receives were repeated into batches over 10: {sizes:?}"
    );
    assert!(sizes.iter().all(|n| *n <= 40), "{sizes:?}");
}
