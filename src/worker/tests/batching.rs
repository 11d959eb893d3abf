//! How batches are cut and sent, on the same fakes and paused clock as the other worker tests:
//! the batching window, and a payload the function refuses as too large.

use super::*;
use crate::batch::MAX_PAYLOAD_BYTES;

#[tokio::test(start_paused = true)]
async fn the_batching_window_gathers_pages_into_one_invocation() {
    let pages = |c: &Clock| {
        (0..3u64)
            .map(|p| vec![record(c, 2 * p, 0), record(c, 2 * p + 1, 0)])
            .collect()
    };
    // Pages 1 s apart: without a window each page is its own batch.
    let paced = |window| Reading {
        window,
        interval: Duration::from_secs(1),
        idle: 5,
        budget: None,
    };
    let h = run_reading(
        ErrorHandling::default(),
        100,
        paced(Duration::ZERO),
        pages,
        MemDestination::default(),
        |_, _| ok(),
    )
    .await;
    assert_eq!(h.calls(), vec![vec![0, 1], vec![2, 3], vec![4, 5]]);
    // A 2.5 s window gathers the three pages read at 0, 1 and 2 s.
    let h = run_reading(
        ErrorHandling::default(),
        100,
        paced(Duration::from_millis(2500)),
        pages,
        MemDestination::default(),
        |_, _| ok(),
    )
    .await;
    assert_eq!(h.calls(), vec![vec![0, 1, 2, 3, 4, 5]]);
    // BatchSize still cuts first.
    let h = run_reading(
        ErrorHandling::default(),
        4,
        paced(Duration::from_secs(10)),
        pages,
        MemDestination::default(),
        |_, _| ok(),
    )
    .await;
    assert_eq!(h.calls(), vec![vec![0, 1, 2, 3], vec![4, 5]]);
}

#[tokio::test(start_paused = true)]
async fn a_payload_too_large_is_split_without_counting_attempts() {
    let errors = with_destination(ErrorHandling {
        max_retry_attempts: Some(0),
        ..Default::default()
    });
    let h = run(
        errors,
        8,
        |c| vec![(0..8).map(|i| record(c, i, 0)).collect()],
        MemDestination::default(),
        |ids, _| {
            if ids.len() > 2 {
                Err(DispatchError::PayloadTooLarge {
                    message: "RequestTooLargeException".into(),
                })
            } else {
                ok()
            }
        },
    )
    .await;
    let ok_calls: Vec<Vec<u64>> = h.calls().into_iter().filter(|c| c.len() <= 2).collect();
    assert_eq!(
        ok_calls,
        vec![vec![0, 1], vec![2, 3], vec![4, 5], vec![6, 7]]
    );
    assert!(h.sent().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_record_over_the_payload_limit_is_never_sent_and_goes_to_the_destination_at_once() {
    // The defaults retry forever: a record that can never be sent must still not block the shard.
    let errors = with_destination(ErrorHandling::default());
    let h = run(
        errors,
        10,
        |c| {
            let mut big = record(c, 1, 0);
            big.event =
                format!("{{\"id\":1,\"pad\":\"{}\"}}", "x".repeat(MAX_PAYLOAD_BYTES)).into_bytes();
            vec![vec![record(c, 0, 0), big, record(c, 2, 0)]]
        },
        MemDestination::default(),
        |_, _| ok(),
    )
    .await;
    assert_eq!(h.calls(), vec![vec![0], vec![2]], "record 1 is never sent");
    let sent = h.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(
        sent[0]["requestContext"]["condition"],
        "MaximumPayloadSizeExceeded"
    );
    assert_eq!(sent[0]["requestContext"]["approximateInvokeCount"], 0);
    assert_eq!(sent[0]["responseContext"], serde_json::Value::Null);
    assert_eq!(sent[0]["KinesisBatchInfo"]["startSequenceNumber"], "1001");
    assert_eq!(h.checkpoints().last(), Some(&Checkpoint::ShardEnd));
}
