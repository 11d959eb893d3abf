//! A stream mapping's `FilterCriteria` in the shard worker, on the same fakes and paused clock as
//! the other worker tests: records that match no filter are never sent but checkpointed past, and
//! partial batch responses work on the records sent.

use super::*;
use crate::filter::{FilterCriteria, Pattern};

/// A Kinesis mapping sending only the records whose `id` is one of `ids` (the fake records'
/// entries are `{"id": n}`), batches of `batch_size`.
fn filtered(batch_size: usize, ids: &str, errors: ErrorHandling) -> Mapping {
    let mut m = Mapping::kinesis_for_tests(batch_size, Duration::ZERO, errors);
    let pattern = Pattern::parse(&format!(r#"{{"id": {ids}}}"#)).unwrap();
    m.filter_criteria = FilterCriteria::new(vec![pattern]);
    m
}

fn unpaced() -> Reading {
    Reading {
        window: Duration::ZERO,
        interval: Duration::ZERO,
        idle: 0,
        budget: None,
    }
}

#[tokio::test(start_paused = true)]
async fn a_batch_where_nothing_matches_is_checkpointed_past_without_an_invoke() {
    let h = run_mapping(
        filtered(10, "[99]", ErrorHandling::default()),
        unpaced(),
        |c| vec![(0..5).map(|i| record(c, i, 0)).collect()],
        MemDestination::default(),
        |_, _| ok(),
    )
    .await;
    assert!(h.calls().is_empty(), "{:?}", h.calls());
    assert_eq!(h.checkpoints(), vec![seq(4), Checkpoint::ShardEnd]);
    assert_eq!(h.metric("sluice_filtered_out_events_total"), 5.0);
    assert_eq!(h.metric("sluice_invoked_events_total"), 0.0);
    assert_eq!(h.metric("sluice_polled_events_total"), 5.0);
}

#[tokio::test(start_paused = true)]
async fn only_matches_are_sent_and_the_checkpoint_reaches_the_batch_end() {
    let h = run_mapping(
        filtered(10, "[0, 2, 4]", ErrorHandling::default()),
        unpaced(),
        |c| {
            vec![
                (0..6).map(|i| record(c, i, 0)).collect(),
                // A batch whose last record is sent: no extra checkpoint.
                (6..8).map(|i| record(c, i, 0)).collect(),
            ]
        },
        MemDestination::default(),
        |_, _| ok(),
    )
    .await;
    assert_eq!(h.calls(), vec![vec![0, 2, 4]]);
    assert_eq!(
        h.checkpoints(),
        vec![seq(4), seq(5), seq(7), Checkpoint::ShardEnd]
    );
    assert_eq!(h.metric("sluice_filtered_out_events_total"), 5.0);
    assert_eq!(h.metric("sluice_invoked_events_total"), 3.0);
}

#[tokio::test(start_paused = true)]
async fn a_partial_batch_response_retries_the_sent_records_only() {
    let errors = ErrorHandling {
        report_batch_item_failures: true,
        ..Default::default()
    };
    let h = run_mapping(
        filtered(10, "[1, 2, 4, 5]", errors),
        unpaced(),
        |c| vec![(0..7).map(|i| record(c, i, 0)).collect()],
        MemDestination::default(),
        |_, n| {
            if n == 1 {
                ok_body(r#"{"batchItemFailures":[{"itemIdentifier":"1004"}]}"#)
            } else {
                ok()
            }
        },
    )
    .await;
    assert_eq!(h.calls(), vec![vec![1, 2, 4, 5], vec![4, 5]]);
    assert_eq!(
        h.checkpoints(),
        vec![seq(2), seq(5), seq(6), Checkpoint::ShardEnd]
    );
}

#[tokio::test(start_paused = true)]
async fn records_given_up_on_are_still_only_the_sent_ones() {
    let errors = with_destination(ErrorHandling {
        max_retry_attempts: Some(0),
        ..Default::default()
    });
    let h = run_mapping(
        filtered(10, "[1, 3]", errors),
        unpaced(),
        |c| vec![(0..5).map(|i| record(c, i, 0)).collect()],
        MemDestination::default(),
        |_, _| function_error(),
    )
    .await;
    assert_eq!(h.calls(), vec![vec![1, 3]]);
    let sent = h.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let info = &sent[0]["KinesisBatchInfo"];
    assert_eq!(info["batchSize"], 2);
    assert_eq!(
        (&info["startSequenceNumber"], &info["endSequenceNumber"]),
        (&"1001".into(), &"1003".into())
    );
    assert_eq!(h.checkpoints().last(), Some(&Checkpoint::ShardEnd));
    assert!(h.checkpoints().contains(&seq(4)), "{:?}", h.checkpoints());
}
