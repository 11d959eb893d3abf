//! How much the worker does at once and how it waits: poller scaling, MaximumConcurrency, the
//! batching window, receive errors and their backoff, resolving the queue, the byte budget.

use super::*;

#[tokio::test(start_paused = true)]
async fn pollers_grow_on_full_batches_and_shrink_to_one_on_an_empty_queue() {
    let setup = Setup::new(MemoryQueue::standard(30 * SECOND), "");
    for i in 0..600 {
        setup.queue.send(&format!("m{i}"));
    }
    let mut r = run(setup, |_, _| (SECOND, ok()));
    let mut most = 0.0f64;
    while r.queue.depth() > 0 {
        most = most.max(r.metric("sluice_concurrency"));
        tokio::time::sleep(SECOND / 2).await;
    }
    assert!(
        most >= 15.0,
        "5 more a second while full batches come: {most}"
    );
    r.until("one poller left", 3600 * SECOND, |r| {
        r.metric("sluice_concurrency") == 1.0
    })
    .await;
    r.stop().await;
    assert_eq!(r.function.bodies().concat().len(), 600);
}

#[tokio::test(start_paused = true)]
async fn never_more_than_maximum_concurrency_pollers_or_invocations() {
    let setup = Setup::new(
        MemoryQueue::standard(30 * SECOND),
        "    ScalingConfig: { MaximumConcurrency: 8 }\n",
    );
    for i in 0..400 {
        setup.queue.send(&format!("m{i}"));
    }
    let mut r = run(setup, |_, _| (2 * SECOND, ok()));
    let mut most = 0.0f64;
    while r.queue.depth() > 0 {
        most = most.max(r.metric("sluice_concurrency"));
        tokio::time::sleep(SECOND / 2).await;
    }
    r.stop().await;
    assert_eq!(most, 8.0);
    assert_eq!(r.function.most_running.load(Ordering::SeqCst), 8);
}

#[tokio::test(start_paused = true)]
async fn fifo_groups_of_one_batch_share_the_maximum_concurrency() {
    let setup = Setup::new(
        MemoryQueue::fifo(30 * SECOND),
        "    ScalingConfig: { MaximumConcurrency: 2 }\n",
    );
    for g in 0..10 {
        setup
            .queue
            .send_to_group(&format!("g{g}"), &format!("m{g}"));
    }
    let mut r = run(setup, |_, _| (SECOND, ok()));
    r.drained().await;
    r.stop().await;
    assert_eq!(r.function.bodies().len(), 10, "one invocation per group");
    assert_eq!(r.function.most_running.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_batch_fills_to_batch_size_within_the_window() {
    let setup = Setup::new(
        MemoryQueue::standard(30 * SECOND),
        "    BatchSize: 25\n    MaximumBatchingWindowInSeconds: 10\n",
    );
    let send = |q: &MemoryQueue, from: usize, n: usize| {
        for i in from..from + n {
            q.send(&format!("m{i}"));
        }
    };
    send(&setup.queue, 0, 12);
    let mut r = one_poller(setup, |_, _| at_once(ok()));
    let started = Instant::now();
    tokio::time::sleep(3 * SECOND).await;
    send(&r.queue, 12, 8);
    tokio::time::sleep(SECOND).await;
    send(&r.queue, 20, 10);
    r.drained().await;
    r.stop().await;
    let sizes: Vec<usize> = r.function.bodies().iter().map(Vec::len).collect();
    assert_eq!(sizes, [25, 5], "BatchSize reached, then the window");
    let times: Vec<Duration> = r.function.times().iter().map(|t| *t - started).collect();
    assert_eq!(
        times[0].as_secs(),
        4,
        "dispatched once BatchSize was reached"
    );
    assert_eq!(times[1].as_secs(), 14, "the rest waited the 10 s window");
}

#[tokio::test(start_paused = true)]
async fn receive_errors_back_off_and_lose_nothing() {
    let setup = Setup::new(MemoryQueue::standard(30 * SECOND), "");
    for i in 0..20 {
        setup.queue.send(&format!("m{i}"));
    }
    setup.queue.fail_receives([
        SourceError::Throttled("slow down".into()),
        SourceError::Service("down".into()),
        SourceError::Service("down".into()),
    ]);
    let mut r = one_poller(setup, |_, _| at_once(ok()));
    let started = Instant::now();
    r.drained().await;
    r.stop().await;
    let waited = r.function.times()[0] - started;
    assert!(
        waited >= Duration::from_millis(3) && waited <= Duration::from_millis(700),
        "three backoffs of the mapping's policy (1 ms to 100, 200, 400 ms): {waited:?}"
    );
    assert_eq!(r.function.bodies().concat().len(), 20, "nothing lost");
    let (full, _, errors, throttles) = r.shared.as_ref().unwrap().stats.take();
    assert_eq!((full, errors, throttles), (2, 2, 1), "counted for scaling");
    assert_eq!(
        labelled(
            &r.metrics,
            "sluice_source_errors_total",
            "error=\"throttled\""
        ),
        1.0
    );
    assert_eq!(
        labelled(
            &r.metrics,
            "sluice_source_errors_total",
            "error=\"service\""
        ),
        2.0
    );
}

#[tokio::test(start_paused = true)]
async fn a_receive_error_while_filling_dispatches_what_was_received() {
    let setup = Setup::new(
        MemoryQueue::standard(30 * SECOND),
        "    BatchSize: 20\n    MaximumBatchingWindowInSeconds: 10\n",
    );
    for i in 0..3 {
        setup.queue.send(&format!("m{i}"));
    }
    // The first receive takes the three; the second, filling the batch, fails.
    setup
        .queue
        .fail_receive_number(2, SourceError::Service("down".into()));
    let mut r = one_poller(setup, |_, _| at_once(ok()));
    r.drained().await;
    r.stop().await;
    assert_eq!(r.function.bodies(), [["m0", "m1", "m2"]]);
    assert_eq!(r.function.times().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_byte_budget_is_charged_on_receive_and_released_after_settle() {
    let mut setup = Setup::new(MemoryQueue::standard(30 * SECOND), "    BatchSize: 2\n");
    // One byte: a batch in flight fills the budget, so the other pollers wait.
    let budget = Arc::new(ByteBudget::new(1));
    setup.budget = budget.clone();
    for i in 0..6 {
        setup.queue.send(&format!("m{i}"));
    }
    let mut r = run(setup, |_, _| (10 * SECOND, ok()));
    tokio::time::sleep(5 * SECOND).await;
    let calls = r.function.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1, "one batch at a time");
    let held: usize = calls[0]
        .1
        .iter()
        .map(|record| serde_json::to_vec(record).unwrap().len())
        .sum();
    assert_eq!(
        budget.used(),
        held as u64,
        "the received events are charged"
    );
    assert_eq!(r.queue.in_flight(), 2, "nothing else was received");
    r.drained().await;
    r.stop().await;
    assert_eq!(budget.used(), 0, "released once settled");
    assert_eq!(r.function.most_running.load(Ordering::SeqCst), 1);
    assert_eq!(r.function.bodies().concat().len(), 6);
}

#[tokio::test(start_paused = true)]
async fn a_queue_that_does_not_resolve_is_retried_with_backoff() {
    let setup = Setup::new(MemoryQueue::standard(30 * SECOND), "");
    setup.queue.send("a");
    let function = function(|_, _| at_once(ok()));
    let metrics = Arc::new(Metrics::new());
    let ctx = setup.context(function.clone(), metrics.clone());
    let (cancel, tracker) = (CancellationToken::new(), TaskTracker::new());
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let (queue, seen) = (setup.queue.clone(), attempts.clone());
    let resolve = move || {
        let queue = queue.clone();
        let n = {
            let mut seen = seen.lock().unwrap();
            seen.push(Instant::now());
            seen.len()
        };
        async move {
            match n {
                1 => Err(SourceError::NotFound("no such queue".into())),
                2 => Err(SourceError::Service("unreachable".into())),
                _ => Ok(queue as Arc<dyn Queue>),
            }
        }
    };
    let task = tokio::spawn(run_queue(
        ctx.clone(),
        resolve,
        tracker.clone(),
        cancel.clone(),
    ));
    let started = Instant::now();
    tokio::time::sleep(SECOND).await;
    let status = ctx
        .telemetry
        .status
        .get("m", "queue")
        .expect("a status row");
    assert!(
        status
            .last_error
            .unwrap()
            .starts_with("the queue does not exist"),
        "shown on /status"
    );
    while setup.queue.depth() > 0 {
        tokio::time::sleep(SECOND / 10).await;
    }
    let at: Vec<Duration> = attempts
        .lock()
        .unwrap()
        .iter()
        .map(|t| *t - started)
        .collect();
    assert_eq!(
        at,
        [Duration::ZERO, 2 * SECOND, 6 * SECOND],
        "2 s, then 4 s"
    );
    assert_eq!(
        labelled(
            &metrics,
            "sluice_source_errors_total",
            "error=\"not_found\""
        ),
        1.0
    );
    assert_eq!(
        labelled(&metrics, "sluice_source_errors_total", "error=\"service\""),
        1.0
    );
    cancel.cancel();
    task.await.unwrap();
    tracker.close();
    tracker.wait().await;
    assert_eq!(function.bodies(), [["a"]]);

    // Shutdown while the queue cannot be resolved ends the mapping at once.
    let setup = Setup::new(MemoryQueue::standard(30 * SECOND), "");
    let ctx = setup.context(function.clone(), metrics.clone());
    let cancel = CancellationToken::new();
    let never = || async { Err::<Arc<dyn Queue>, _>(SourceError::NotFound("gone".into())) };
    let task = tokio::spawn(run_queue(ctx, never, TaskTracker::new(), cancel.clone()));
    tokio::time::sleep(10 * SECOND).await;
    cancel.cancel();
    tokio::time::timeout(SECOND, task)
        .await
        .expect("stops when cancelled")
        .unwrap();
}

#[test]
fn scaling_follows_aws() {
    // Full batches and no failures: grow by 5 a second, up to the cap.
    assert_eq!(next_concurrency(5, 1000, (3, 0, 0, 0), false), 10);
    assert_eq!(next_concurrency(8, 10, (3, 0, 0, 0), false), 10);
    // Throttles halve; function errors step down, unless partial batch responses report them.
    assert_eq!(next_concurrency(10, 1000, (3, 0, 1, 2), false), 5);
    assert_eq!(next_concurrency(10, 1000, (3, 0, 1, 0), false), 9);
    assert_eq!(next_concurrency(10, 1000, (3, 0, 1, 0), true), 15);
    // An empty queue shrinks to a single long-polling poller.
    assert_eq!(next_concurrency(2, 1000, (0, 4, 0, 0), false), 1);
    assert_eq!(next_concurrency(1, 1000, (0, 4, 0, 0), false), 1);
}

#[tokio::test(start_paused = true)]
async fn a_batch_filling_without_budget_room_is_dispatched_at_the_end_of_its_window() {
    let mut setup = Setup::new(
        MemoryQueue::standard(30 * SECOND),
        "    BatchSize: 20\n    MaximumBatchingWindowInSeconds: 5\n",
    );
    // The first receive fills the whole budget: the batch's own bytes are all that hold it.
    setup.budget = Arc::new(ByteBudget::new(1));
    for i in 0..3 {
        setup.queue.send(&format!("m{i}"));
    }
    let mut r = one_poller(setup, |_, _| at_once(ok()));
    let started = Instant::now();
    r.until("the batch dispatched", 60 * SECOND, |r| {
        !r.function.times().is_empty()
    })
    .await;
    assert_eq!(
        r.function.times()[0] - started,
        5 * SECOND,
        "at the window's end"
    );
    r.drained().await;
    r.stop().await;
    assert_eq!(r.function.bodies(), [["m0", "m1", "m2"]]);
}
