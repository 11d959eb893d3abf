//! SQS messages in flight, against moto: a slow FIFO group does not hold back the deletion of the
//! others; a queue whose VisibilityTimeout is 0 never hands a message to two invocations;
//! heartbeat entries SQS refuses are logged and the others still extended; a visibility change
//! for a deleted message is rejected, not retried.

mod common;
mod sqs_support;

use aws_sdk_sqs::types::QueueAttributeName;
use common::sink::Sink;
use common::sluice::Sluice;
use common::*;
use serde_json::Value;
use sqs_support::{bodies, depth, mapping, send, GatedFunction};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_fifo_group_does_not_hold_back_the_deletion_of_the_others() {
    let tb = testbed();
    let client = sqs(&tb);
    let (url, arn) = create_queue(
        &client,
        &format!("{}.fifo", unique("fifoslow")),
        &[(QueueAttributeName::FifoQueue, "true".into())],
    )
    .await;
    // Both groups are in the queue before sluice starts: one receive takes them together.
    send(
        &client,
        &url,
        &[
            ("slow:0".into(), Some("slow".into())),
            ("fast:0".into(), Some("fast".into())),
            ("fast:1".into(), Some("fast".into())),
        ],
    )
    .await;
    let function = GatedFunction::start(&["slow"]).await;
    let (_sluice, _dir) = Sluice::run(
        &tb,
        &mapping("fifoslow", &arn, &function.url, "    BatchSize: 10\n"),
    )
    .await;
    wait_for(
        "both groups dispatched",
        Duration::from_secs(60),
        || async {
            let got = function.bodies();
            (got.contains(&"slow:0".to_string()) && got.contains(&"fast:1".to_string()))
                .then_some(())
        },
    )
    .await;
    // The slow group's invocation is still running: only its message may be left in the queue.
    wait_for(
        "the fast group deleted while the slow one runs",
        Duration::from_secs(20),
        || async { (depth(&client, &url).await == 1).then_some(()) },
    )
    .await;
    function.release_all();
    wait_for(
        "the slow group deleted",
        Duration::from_secs(30),
        || async { (depth(&client, &url).await == 0).then_some(()) },
    )
    .await;
    let mut got = function.bodies();
    got.sort();
    assert_eq!(got, ["fast:0", "fast:1", "slow:0"], "each delivered once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_with_visibility_timeout_zero_never_hands_a_message_out_twice() {
    let tb = testbed();
    let client = sqs(&tb);
    let (url, arn) = create_queue(
        &client,
        &unique("vt0"),
        &[(QueueAttributeName::VisibilityTimeout, "0".into())],
    )
    .await;
    // Every invocation takes 3 s while 5 pollers keep receiving.
    let sink = Sink::start_slow(Duration::from_secs(3), |_, _| (200, vec![], "{}".into())).await;
    let msgs: Vec<(String, Option<String>)> = (0..10).map(|i| (format!("z-{i}"), None)).collect();
    send(&client, &url, &msgs).await;
    let (_sluice, _dir) =
        Sluice::run(&tb, &mapping("vt0", &arn, &sink.url, "    BatchSize: 2\n")).await;
    wait_for(
        "every message delivered and deleted",
        Duration::from_secs(60),
        || async {
            (sink.all_entries().len() >= msgs.len() && depth(&client, &url).await == 0)
                .then_some(())
        },
    )
    .await;
    let mut got = bodies(&sink.all_entries());
    got.sort();
    let mut want: Vec<String> = msgs.into_iter().map(|(b, _)| b).collect();
    want.sort();
    assert_eq!(got, want, "each message in exactly one invocation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_entries_sqs_refuses_are_logged_and_the_rest_kept_invisible() {
    let tb = testbed();
    let client = sqs(&tb);
    let (url, arn) = create_queue(
        &client,
        &unique("hbfail"),
        &[(QueueAttributeName::VisibilityTimeout, "2".into())],
    )
    .await;
    send(
        &client,
        &url,
        &[("held-a".into(), None), ("held-b".into(), None)],
    )
    .await;
    let function = GatedFunction::start(&["held"]).await;
    let extra = "    BatchSize: 2\n";
    let (sluice, _dir) = Sluice::run(&tb, &mapping("hbfail", &arn, &function.url, extra)).await;
    let received = wait_for(
        "both messages in flight",
        Duration::from_secs(60),
        || async {
            let got: Vec<Value> = function
                .received
                .lock()
                .unwrap()
                .iter()
                .flatten()
                .cloned()
                .collect();
            (got.len() >= 2).then_some(got)
        },
    )
    .await;
    // Someone else deletes one message while its invocation runs: its receipt handle is now invalid.
    let gone = &received[0];
    client
        .delete_message()
        .queue_url(&url)
        .receipt_handle(gone["receiptHandle"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let log = wait_for(
        "the refused extension logged",
        Duration::from_secs(40),
        || async {
            let log = sluice.log_text();
            log.contains("ReceiptHandleIsInvalid").then_some(log)
        },
    )
    .await;
    assert!(
        log.contains(gone["messageId"].as_str().unwrap()),
        "names the message"
    );
    // The other message is still extended, so kept invisible past its queue's 2 s: it is
    // never delivered twice.
    wait_for(
        "the other message extended",
        Duration::from_secs(10),
        || async {
            (sluice
                .metric(
                    "sluice_sqs_visibility_extensions_total",
                    "mapping=\"hbfail\"",
                )
                .await
                >= 1.0)
                .then_some(())
        },
    )
    .await;
    function.release_all();
    wait_for("the queue empty", Duration::from_secs(30), || async {
        (depth(&client, &url).await == 0).then_some(())
    })
    .await;
    assert_eq!(function.bodies().len(), 2, "{:?}", function.bodies());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visibility_change_for_a_deleted_message_is_rejected_not_retried() {
    use ::sluice::source::sqs::SqsQueue;
    let tb = testbed();
    let client = sqs(&tb);
    let name = unique("cmvb");
    let (url, arn) = create_queue(&client, &name, &[]).await;
    send(&client, &url, &[("a".into(), None), ("b".into(), None)]).await;
    let queue = SqsQueue::resolve(client.clone(), &arn, "us-east-1", "123456789012", &name)
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        got.extend(
            queue
                .receive(10, Duration::from_secs(1), Duration::from_secs(30))
                .await
                .unwrap(),
        );
    }
    client
        .delete_message()
        .queue_url(&url)
        .receipt_handle(&got[0].receipt_handle)
        .send()
        .await
        .unwrap();
    let list: Vec<(String, String)> = got
        .iter()
        .map(|m| (m.id.clone(), m.receipt_handle.clone()))
        .collect();
    let out = queue
        .change_visibility(&list, Duration::from_secs(60), Duration::from_secs(10))
        .await;
    assert_eq!(out.changed, 1);
    assert!(out.retry.is_empty(), "{:?}", out.retry);
    assert_eq!(out.rejected.len(), 1);
    assert_eq!(out.rejected[0].message_id, got[0].id);
    assert_eq!(out.rejected[0].code, "ReceiptHandleIsInvalid");
}
