//! An SQS mapping's `FilterCriteria`: messages that match no filter are deleted without an invoke
//! and counted; the others are dispatched and settled as usual.

use super::*;

const FILTER: &str = "    FilterCriteria: { Filters: [ { Pattern: '{\"body\": {\"kind\": [\"order\"]}}' }, { Pattern: '{\"body\": [{\"prefix\": \"keep\"}]}' } ] }\n";

#[tokio::test(start_paused = true)]
async fn messages_matching_no_filter_are_deleted_without_an_invoke() {
    let setup = Setup::new(MemoryQueue::standard(30 * SECOND), FILTER);
    let kept = [r#"{"kind":"order"}"#, "keep me"];
    let dropped = [r#"{"kind":"refund"}"#, "drop me", r#""order""#];
    let mut ids = Vec::new();
    for b in kept.iter().chain(&dropped) {
        ids.push(setup.queue.send(b));
    }
    let mut r = run(setup, |_, _| at_once(ok()));
    r.drained().await;
    r.stop().await;
    let sent: Vec<String> = kept.iter().map(|s| s.to_string()).collect();
    assert_eq!(sorted(r.function.bodies().concat()), sorted(sent));
    assert_eq!(
        sorted(r.queue.deleted()),
        sorted(ids),
        "every message deleted"
    );
    assert_eq!(r.metric("sluice_filtered_out_events_total"), 3.0);
    assert_eq!(r.metric("sluice_sqs_messages_deleted_total"), 2.0);
    assert_eq!(r.metric("sluice_sqs_messages_in_flight"), 0.0);
}

#[tokio::test(start_paused = true)]
async fn a_batch_where_nothing_matches_invokes_nothing() {
    let setup = Setup::new(MemoryQueue::fifo(30 * SECOND), FILTER);
    for b in ["a", "b", "c"] {
        setup.queue.send_to_group("g", b);
    }
    let mut r = run(setup, |_, _| at_once(ok()));
    r.drained().await;
    r.stop().await;
    assert!(r.function.bodies().is_empty());
    assert_eq!(r.queue.deleted().len(), 3);
    assert_eq!(r.metric("sluice_filtered_out_events_total"), 3.0);
    assert_eq!(r.metric("sluice_sqs_messages_in_flight"), 0.0);
}

#[tokio::test(start_paused = true)]
async fn a_failed_match_returns_while_filtered_messages_are_gone() {
    let setup = Setup::new(MemoryQueue::standard(5 * SECOND), FILTER);
    let keep = setup.queue.send("keep 1");
    setup.queue.send("drop 1");
    let mut r = run(setup, |_, n| {
        at_once(if n == 1 { function_error() } else { ok() })
    });
    r.drained().await;
    r.stop().await;
    assert_eq!(r.function.bodies(), [["keep 1"], ["keep 1"]]);
    assert_eq!(r.queue.deleted().len(), 2);
    assert!(r.queue.deleted().contains(&keep));
    assert_eq!(r.metric("sluice_filtered_out_events_total"), 1.0);
    assert_eq!(r.metric("sluice_sqs_messages_returned_total"), 1.0);
}
