//! The limits on how long records are held, on the same fakes and paused clock as the other
//! worker tests: MaximumRecordAgeInSeconds, the stream's retention with AWS's defaults, an
//! on-failure destination that fails until the records expire, and the process-wide byte budget.

use super::*;

#[tokio::test(start_paused = true)]
async fn records_expire_while_retrying() {
    let started = Instant::now();
    let errors = with_destination(ErrorHandling {
        max_record_age: Some(Duration::from_secs(60)),
        ..Default::default()
    });
    let h = run(
        errors,
        10,
        |c| vec![(0..3).map(|i| record(c, i, 0)).collect()],
        MemDestination::default(),
        |_, _| function_error(),
    )
    .await;
    let sent = h.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["requestContext"]["condition"], "RecordAgeExceeded");
    assert_eq!(sent[0]["KinesisBatchInfo"]["batchSize"], 3);
    assert!(
        started.elapsed() >= Duration::from_secs(60) && started.elapsed() < Duration::from_secs(75)
    );
    assert!(h.calls().len() > 3, "retried until the records expired");
}

#[tokio::test(start_paused = true)]
async fn records_too_old_at_read_time_are_never_invoked() {
    let errors = with_destination(ErrorHandling {
        max_record_age: Some(Duration::from_secs(60)),
        ..Default::default()
    });
    let h = run(
        errors,
        10,
        |c| {
            vec![vec![
                record(c, 0, 120_000),
                record(c, 1, 90_000),
                record(c, 2, 0),
                record(c, 3, 0),
            ]]
        },
        MemDestination::default(),
        |_, _| ok(),
    )
    .await;
    assert_eq!(h.calls(), vec![vec![2, 3]]);
    let sent = h.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["requestContext"]["approximateInvokeCount"], 0);
    assert!(sent[0]["responseContext"].is_null());
    assert_eq!(sent[0]["KinesisBatchInfo"]["endSequenceNumber"], "1001");
    assert_eq!(h.checkpoints(), vec![seq(1), seq(3), Checkpoint::ShardEnd]);
}

#[tokio::test(start_paused = true)]
async fn with_the_defaults_records_are_retried_until_they_leave_the_stream() {
    // MaximumRetryAttempts and MaximumRecordAgeInSeconds at -1: a failing record is retried until
    // it would expire from the stream (24 h by default here), then given up on, not forever.
    let started = Instant::now();
    let h = run(
        with_destination(ErrorHandling::default()),
        10,
        |c| {
            vec![(0..2)
                .map(|i| record(c, i, 24 * 3600 * 1000 - 60_000))
                .collect()]
        },
        MemDestination::default(),
        |_, _| function_error(),
    )
    .await;
    let sent = h.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["requestContext"]["condition"], "RecordAgeExceeded");
    assert!(started.elapsed() >= Duration::from_secs(60));
    assert!(started.elapsed() < Duration::from_secs(75));
    assert_eq!(h.checkpoints(), vec![seq(1), Checkpoint::ShardEnd]);
}

#[tokio::test(start_paused = true)]
async fn a_destination_that_keeps_failing_gives_way_when_the_records_expire() {
    let started = Instant::now();
    let dest = MemDestination {
        fail_first: usize::MAX,
        ..Default::default()
    };
    let h = run(
        with_destination(ErrorHandling {
            max_retry_attempts: Some(0),
            ..Default::default()
        }),
        10,
        |c| {
            vec![(0..3)
                .map(|i| record(c, i, 24 * 3600 * 1000 - 30_000))
                .collect()]
        },
        dest,
        |_, _| function_error(),
    )
    .await;
    assert!(h.sent().is_empty());
    assert!(*h.destination.attempts.lock().unwrap() > 2, "retried first");
    assert!(started.elapsed() >= Duration::from_secs(30));
    assert!(started.elapsed() < Duration::from_secs(45));
    assert_eq!(h.metric("sluice_dropped_events_total"), 3.0);
    assert_eq!(h.checkpoints(), vec![seq(2), Checkpoint::ShardEnd]);
}

#[tokio::test(start_paused = true)]
async fn a_reader_waits_for_room_in_the_byte_budget() {
    let budget = Arc::new(ByteBudget::new(1000));
    // Another shard holds more than the whole budget for 30 s.
    budget.charge(2000);
    let other = budget.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        other.release(2000);
    });
    let started = Instant::now();
    let first_call = Arc::new(Mutex::new(None::<Instant>));
    let seen = first_call.clone();
    let reading = Reading {
        window: Duration::ZERO,
        interval: Duration::ZERO,
        idle: 0,
        budget: Some(budget.clone()),
    };
    let h = run_reading(
        ErrorHandling::default(),
        10,
        reading,
        |c| vec![(0..3).map(|i| record(c, i, 0)).collect()],
        MemDestination::default(),
        move |_, _| {
            seen.lock().unwrap().get_or_insert_with(Instant::now);
            ok()
        },
    )
    .await;
    let first = first_call.lock().unwrap().expect("invoked");
    assert!(
        first - started >= Duration::from_secs(30),
        "read only once there was room"
    );
    assert_eq!(h.calls(), vec![vec![0, 1, 2]]);
    assert_eq!(budget.used(), 0, "the worker gave back what it held");
}

#[tokio::test(start_paused = true)]
async fn a_failing_destination_is_retried_and_nothing_is_skipped() {
    let errors = with_destination(ErrorHandling {
        max_retry_attempts: Some(0),
        ..Default::default()
    });
    let dest = MemDestination {
        fail_first: 4,
        ..Default::default()
    };
    let h = run(
        errors,
        10,
        |c| vec![(0..2).map(|i| record(c, i, 0)).collect()],
        dest,
        |_, _| function_error(),
    )
    .await;
    assert_eq!(*h.destination.attempts.lock().unwrap(), 5);
    assert_eq!(h.sent().len(), 1);
    assert_eq!(h.checkpoints(), vec![seq(1), Checkpoint::ShardEnd]);
    assert_eq!(h.metric("sluice_destination_delivery_failures_total"), 4.0);
}
