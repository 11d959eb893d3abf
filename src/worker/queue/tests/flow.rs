//! One mapping's messages through the worker: deleted on success, returned on failure with the
//! queue's own visibility timeout, partial batch responses, FIFO groups, the heartbeat.

use super::*;

#[tokio::test(start_paused = true)]
async fn successful_batches_are_deleted() {
    let setup = Setup::new(MemoryQueue::standard(30 * SECOND), "");
    let sent: Vec<String> = (0..25).map(|i| format!("m{i}")).collect();
    for b in &sent {
        setup.queue.send(b);
    }
    let mut r = run(setup, |_, _| at_once(ok()));
    r.drained().await;
    r.stop().await;
    let calls = r.function.bodies();
    assert!(
        calls.iter().all(|c| !c.is_empty() && c.len() <= 10),
        "{calls:?}"
    );
    assert_eq!(sorted(calls.concat()), sorted(sent), "each message once");
    assert_eq!(r.queue.deleted().len(), 25);
    assert_eq!(r.metric("sluice_sqs_messages_received_total"), 25.0);
    assert_eq!(r.metric("sluice_sqs_messages_deleted_total"), 25.0);
    assert_eq!(r.metric("sluice_sqs_messages_returned_total"), 0.0);
    assert_eq!(r.metric("sluice_sqs_messages_in_flight"), 0.0);
}

#[tokio::test(start_paused = true)]
async fn a_failed_batch_reappears_after_the_queues_visibility_timeout() {
    // The queue's VisibilityTimeout is 5 s; sluice receives with 30 s (the in-flight visibility).
    let setup = Setup::new(MemoryQueue::standard(5 * SECOND), "");
    let a = setup.queue.send("a");
    let mut r = run(setup, |_, n| {
        at_once(if n == 1 { function_error() } else { ok() })
    });
    r.drained().await;
    r.stop().await;
    assert_eq!(r.function.bodies(), [["a"], ["a"]]);
    let times = r.function.times();
    let between = times[1] - times[0];
    assert!(
        between >= 5 * SECOND && between < 6 * SECOND,
        "returned with the queue's 5 s, not the in-flight 30 s: {between:?}"
    );
    let second = &r.function.calls.lock().unwrap()[1].1[0];
    assert_eq!(second["attributes"]["ApproximateReceiveCount"], "2");
    assert_eq!(r.queue.deleted(), [a]);
    assert_eq!(r.metric("sluice_sqs_messages_returned_total"), 1.0);
    assert_eq!(r.metric("sluice_sqs_messages_deleted_total"), 1.0);
}

#[tokio::test(start_paused = true)]
async fn a_partial_batch_response_deletes_only_the_successes() {
    let setup = Setup::new(
        MemoryQueue::standard(5 * SECOND),
        "    FunctionResponseTypes: [ReportBatchItemFailures]\n",
    );
    let ids: Vec<String> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|b| setup.queue.send(b))
        .collect();
    let mut r = run(setup, |records, n| {
        at_once(if n == 1 {
            failing(records, &["b", "d"])
        } else {
            ok()
        })
    });
    r.drained().await;
    r.stop().await;
    assert_eq!(
        r.function.bodies(),
        [vec!["a", "b", "c", "d", "e"], vec!["b", "d"]]
    );
    let deleted = r.queue.deleted();
    assert_eq!(
        sorted(deleted[..3].to_vec()),
        [ids[0].clone(), ids[2].clone(), ids[4].clone()],
        "the successes are deleted at once"
    );
    assert_eq!(
        sorted(deleted[3..].to_vec()),
        [ids[1].clone(), ids[3].clone()]
    );
    let times = r.function.times();
    assert!(times[1] - times[0] >= 5 * SECOND);
    assert_eq!(r.metric("sluice_sqs_messages_returned_total"), 2.0);
}

#[tokio::test(start_paused = true)]
async fn a_failing_fifo_group_returns_its_later_messages_and_does_not_hold_back_another() {
    let setup = Setup::new(
        MemoryQueue::fifo(10 * SECOND),
        "    FunctionResponseTypes: [ReportBatchItemFailures]\n",
    );
    let q = &setup.queue;
    let x1 = q.send_to_group("x", "x1");
    let y1 = q.send_to_group("y", "y1");
    let x2 = q.send_to_group("x", "x2");
    let y2 = q.send_to_group("y", "y2");
    let x3 = q.send_to_group("x", "x3");
    // Group x's first invocation runs 20 s and reports x2 failed.
    let mut r = run(setup, |records, _| {
        let bodies: Vec<String> = records.iter().map(body).collect();
        if bodies == ["x1", "x2", "x3"] {
            (20 * SECOND, failing(records, &["x2"]))
        } else {
            at_once(ok())
        }
    });
    let started = Instant::now();
    r.until("group y deleted", 5 * SECOND, |r| {
        r.queue.deleted().len() == 2
    })
    .await;
    assert_eq!(sorted(r.queue.deleted()), sorted(vec![y1, y2]));
    assert!(started.elapsed() < 20 * SECOND, "y did not wait for x");
    assert!(r.queue.is_in_flight(&x1), "x is still being invoked");
    r.drained().await;
    r.stop().await;
    let mut calls = r.function.bodies();
    calls.sort_by_key(|c| c[0] == "y1");
    assert_eq!(
        calls,
        [vec!["x1", "x2", "x3"], vec!["x2", "x3"], vec!["y1", "y2"]]
    );
    // x1 succeeded before the failure and is deleted; x2 failed, and x3 after it is returned too.
    assert_eq!(r.queue.deleted()[2..], [x1, x2, x3]);
    assert_eq!(r.metric("sluice_sqs_messages_returned_total"), 2.0);
}

#[tokio::test(start_paused = true)]
async fn the_heartbeat_keeps_a_slow_invocation_invisible_and_stops_once_settled() {
    // The queue's VisibilityTimeout (30 s) is far shorter than the invocation (95 s).
    let setup = Setup::new(MemoryQueue::standard(30 * SECOND), "");
    let a = setup.queue.send("a");
    let mut r = run(setup, |_, _| (95 * SECOND, ok()));
    tokio::time::sleep(50 * SECOND).await;
    assert!(r.queue.is_in_flight(&a), "still invisible past 30 s");
    assert_eq!(r.queue.receive_count(&a), Some(1));
    assert_eq!(r.function.times().len(), 1);
    let beats = r.queue.visibility_changes();
    assert!(beats.len() >= 4, "a beat every 10 s: {beats:?}");
    assert!(beats
        .iter()
        .all(|(ids, v)| ids == std::slice::from_ref(&a) && *v == 30 * SECOND));
    r.drained().await;
    let settled = r.queue.visibility_changes().len();
    tokio::time::sleep(60 * SECOND).await;
    assert_eq!(
        r.queue.visibility_changes().len(),
        settled,
        "no beat after the settle"
    );
    r.stop().await;
    assert_eq!(r.function.times().len(), 1, "delivered once");
    assert_eq!(
        r.metric("sluice_sqs_visibility_extensions_total"),
        settled as f64
    );
}
