//! The stream error handling in the shard worker, on the fakes and paused clock of the harness:
//! throttles, the retry budget, destinations, bisect and partial batch responses.

use super::*;

#[tokio::test(start_paused = true)]
async fn throttles_back_off_without_counting_attempts() {
    let started = Instant::now();
    let errors = with_destination(ErrorHandling {
        max_retry_attempts: Some(0),
        ..Default::default()
    });
    let h = run(
        errors,
        10,
        |c| vec![(0..5).map(|i| record(c, i, 0)).collect()],
        MemDestination::default(),
        |_, n| {
            if n <= 6 {
                throttled()
            } else {
                ok()
            }
        },
    )
    .await;
    assert_eq!(h.calls().len(), 7, "six throttles, then success");
    assert!(
        h.sent().is_empty(),
        "throttles never exhaust MaximumRetryAttempts=0"
    );
    assert_eq!(h.checkpoints(), vec![seq(4), Checkpoint::ShardEnd]);
    assert!(
        started.elapsed() >= Duration::from_millis(6),
        "backed off between throttles"
    );
    assert_eq!(h.metric("sluice_failed_invoke_events_total"), 30.0);
    assert_eq!(
        h.metric("sluice_invoked_events_total"),
        5.0,
        "throttled calls did not reach the function"
    );
}

#[tokio::test(start_paused = true)]
async fn function_errors_spend_the_budget_then_go_to_the_destination() {
    let errors = with_destination(ErrorHandling {
        max_retry_attempts: Some(2),
        ..Default::default()
    });
    let h = run(
        errors,
        3,
        |c| vec![(0..6).map(|i| record(c, i, 0)).collect()],
        MemDestination::default(),
        |ids, _| if ids[0] == 0 { function_error() } else { ok() },
    )
    .await;
    // First batch [0,1,2]: the first invoke and 2 retries, then given up; the next batch proceeds.
    assert_eq!(
        h.calls(),
        vec![vec![0, 1, 2], vec![0, 1, 2], vec![0, 1, 2], vec![3, 4, 5]]
    );
    let sent = h.sent();
    assert_eq!(sent.len(), 1);
    let r = &sent[0];
    assert_eq!(r["requestContext"]["condition"], "RetryAttemptsExhausted");
    assert_eq!(r["requestContext"]["approximateInvokeCount"], 3);
    assert_eq!(r["requestContext"]["requestId"], "req-1");
    assert_eq!(r["responseContext"]["functionError"], "Unhandled");
    assert_eq!(r["KinesisBatchInfo"]["startSequenceNumber"], "1000");
    assert_eq!(r["KinesisBatchInfo"]["endSequenceNumber"], "1002");
    assert_eq!(r["KinesisBatchInfo"]["batchSize"], 3);
    assert_eq!(h.checkpoints(), vec![seq(2), seq(5), Checkpoint::ShardEnd]);
    assert_eq!(
        h.metric("sluice_on_failure_destination_delivered_events_total"),
        3.0
    );
    assert_eq!(h.metric("sluice_dropped_events_total"), 0.0);
}

#[tokio::test(start_paused = true)]
async fn without_a_destination_given_up_records_are_dropped_and_counted() {
    let errors = ErrorHandling {
        max_retry_attempts: Some(0),
        ..Default::default()
    };
    let h = run(
        errors,
        10,
        |c| vec![(0..4).map(|i| record(c, i, 0)).collect()],
        MemDestination::default(),
        |_, _| function_error(),
    )
    .await;
    assert_eq!(h.calls().len(), 1);
    assert_eq!(h.metric("sluice_dropped_events_total"), 4.0);
    assert_eq!(h.checkpoints(), vec![seq(3), Checkpoint::ShardEnd]);
}

#[tokio::test(start_paused = true)]
async fn bisect_isolates_the_poison_record_and_keeps_order() {
    let errors = with_destination(ErrorHandling {
        max_retry_attempts: Some(1),
        bisect_on_function_error: true,
        ..Default::default()
    });
    let h = run(
        errors,
        16,
        |c| vec![(0..16).map(|i| record(c, i, 0)).collect()],
        MemDestination::default(),
        |ids, _| {
            if ids.contains(&11) {
                function_error()
            } else {
                ok()
            }
        },
    )
    .await;
    let succeeded: Vec<u64> = h
        .calls()
        .into_iter()
        .filter(|c| !c.contains(&11))
        .flatten()
        .collect();
    let expected: Vec<u64> = (0..16).filter(|i| *i != 11).collect();
    assert_eq!(succeeded, expected, "every other record once, in order");
    let sent = h.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["KinesisBatchInfo"]["startSequenceNumber"], "1011");
    assert_eq!(sent[0]["KinesisBatchInfo"]["endSequenceNumber"], "1011");
    assert_eq!(sent[0]["KinesisBatchInfo"]["batchSize"], 1);
    // The poison record was in 16, 8, 4 and 2-record batches, then invoked alone twice
    // (MaximumRetryAttempts=1; splits cost no attempt). approximateInvokeCount counts every one of
    // those invocations, as AWS's does.
    let with_poison = h.calls().iter().filter(|c| c.contains(&11)).count();
    assert_eq!(with_poison, 6);
    assert_eq!(sent[0]["requestContext"]["approximateInvokeCount"], 6);
    let checkpoints = h.checkpoints();
    assert_eq!(checkpoints.last(), Some(&Checkpoint::ShardEnd));
    let seqs: Vec<_> = checkpoints
        .iter()
        .filter_map(|c| match c {
            Checkpoint::Sequence(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "checkpoints only move forward: {seqs:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn partial_batch_response_checkpoints_before_the_lowest_failure_and_retries_from_it() {
    let errors = ErrorHandling {
        report_batch_item_failures: true,
        ..Default::default()
    };
    let h = run(errors, 10, |c| vec![(0..10).map(|i| record(c, i, 0)).collect()], MemDestination::default(), |ids, n| {
        if n == 1 {
            assert_eq!(ids[0], 0);
            ok_body(r#"{"batchItemFailures":[{"itemIdentifier":"1007"},{"itemIdentifier":"1004"}]}"#)
        } else {
            ok_body(r#"{"batchItemFailures":[]}"#)
        }
    })
    .await;
    assert_eq!(
        h.calls(),
        vec![(0..10).collect::<Vec<_>>(), (4..10).collect()]
    );
    assert_eq!(h.checkpoints(), vec![seq(3), seq(9), Checkpoint::ShardEnd]);
}

#[tokio::test(start_paused = true)]
async fn partial_batch_rules_for_invalid_identifiers_fail_the_whole_batch() {
    for body in [
        r#"{"batchItemFailures":[{"itemIdentifier":""}]}"#,
        r#"{"batchItemFailures":[{"itemIdentifier":null}]}"#,
        r#"{"batchItemFailures":[{"itemIdentifier":"999999"}]}"#,
    ] {
        let errors = ErrorHandling {
            report_batch_item_failures: true,
            ..Default::default()
        };
        let body = body.to_string();
        let h = run(
            errors,
            5,
            |c| vec![(0..5).map(|i| record(c, i, 0)).collect()],
            MemDestination::default(),
            move |_, n| {
                if n == 1 {
                    ok_body(&body)
                } else {
                    ok()
                }
            },
        )
        .await;
        assert_eq!(
            h.calls(),
            vec![(0..5).collect::<Vec<_>>(), (0..5).collect()]
        );
        assert_eq!(h.checkpoints(), vec![seq(4), Checkpoint::ShardEnd]);
    }
}

#[tokio::test(start_paused = true)]
async fn responses_are_ignored_when_partial_batches_are_off() {
    let h = run(
        ErrorHandling::default(),
        5,
        |c| vec![(0..5).map(|i| record(c, i, 0)).collect()],
        MemDestination::default(),
        |_, _| ok_body(r#"{"batchItemFailures":[{"itemIdentifier":"1002"}]}"#),
    )
    .await;
    assert_eq!(h.calls().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn infinite_retries_keep_the_shard_on_its_batch() {
    // MaximumRetryAttempts -1 (the default): a failing batch blocks its shard until it succeeds.
    let h = run(
        ErrorHandling::default(),
        5,
        |c| vec![(0..5).map(|i| record(c, i, 0)).collect()],
        MemDestination::default(),
        |_, n| {
            if n <= 50 {
                function_error()
            } else {
                ok()
            }
        },
    )
    .await;
    assert_eq!(h.calls().len(), 51);
    assert!(h.calls().iter().all(|c| c == &vec![0, 1, 2, 3, 4]));
    assert_eq!(h.checkpoints(), vec![seq(4), Checkpoint::ShardEnd]);
}
