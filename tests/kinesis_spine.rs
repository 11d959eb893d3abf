//! The spine against the emulators: Kinesis (kinesis-local) → sluice → an HTTP function run by the
//! test or a real function served by the Lambda emulator (cargo-lambda), with checkpoints, kill -9
//! and restart, a failing shard that must not hold up the others, and SIGTERM.

mod common;

use common::sink::Sink;
use common::sluice::{config, free_port, Sluice};
use common::streams::{as_set, kill_9_and_restart, wait_delivered_once, Stream};
use common::*;
use std::time::Duration;

fn http_mapping(name: &str, arn: &str, url: &str, run: &str, batch: usize) -> String {
    format!(
        "  - Name: {name}\n    EventSourceArn: {arn}\n    StartingPosition: TRIM_HORIZON\n    BatchSize: {batch}\n    Http:\n      Url: {url}\n      Headers: {{ X-Run: \"{run}\" }}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_reaches_an_http_function_in_order_per_shard() {
    let tb = testbed();
    let Stream { kinesis, name, arn } = Stream::create(&tb, "spine-http", 4).await;
    let sink = Sink::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let sluice = Sluice::start(
        dir.path(),
        "run",
        &config(
            &tb,
            &dir.path().join("cp"),
            port,
            &http_mapping("http", &arn, &sink.url, "1", 500),
        ),
    )
    .await;
    sluice.wait_ready().await;

    let written = put_records(&kinesis, &name, records("r", 10_000, 257)).await;
    assert_eq!(
        by_shard(&written).len(),
        4,
        "records spread over all 4 shards"
    );
    let delivered = wait_delivered_once(
        "all 10,000 records delivered",
        Duration::from_secs(240),
        || sink.delivered(),
        &written,
        "no duplicates in a clean run",
    )
    .await;
    assert_ordered("http", &delivered);
    // Every batch holds records of one shard only.
    for req in sink.accepted.lock().unwrap().iter() {
        assert!(
            req.records.iter().all(|r| r.shard == req.shard()),
            "a batch mixed shards"
        );
        assert!(req.records.len() <= 500);
    }

    // The event, parsed by an independent parser, field by field.
    let by_seq: std::collections::HashMap<_, _> =
        written.iter().map(|w| (w.seq.clone(), w.clone())).collect();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for req in sink.accepted.lock().unwrap().iter() {
        let event: aws_lambda_events::event::kinesis::KinesisEvent =
            serde_json::from_slice(&req.body).expect("aws_lambda_events parses the event");
        for r in &event.records {
            let w = &by_seq[&r.kinesis.sequence_number];
            assert_eq!(r.kinesis.partition_key, w.key);
            assert_eq!(r.kinesis.data.0, w.data.as_bytes());
            assert_eq!(r.kinesis.kinesis_schema_version.as_deref(), Some("1.0"));
            assert_eq!(r.event_source.as_deref(), Some("aws:kinesis"));
            assert_eq!(r.event_version.as_deref(), Some("1.0"));
            assert_eq!(
                r.event_id.as_deref(),
                Some(format!("{}:{}", w.shard, w.seq).as_str())
            );
            assert_eq!(r.event_name.as_deref(), Some("aws:kinesis:record"));
            assert_eq!(
                r.invoke_identity_arn.as_deref(),
                Some("arn:aws:iam::000000000000:role/sluice-test")
            );
            assert_eq!(r.aws_region.as_deref(), Some("us-east-1"));
            assert_eq!(r.event_source_arn.as_deref(), Some(arn.as_str()));
            let arrival = r.kinesis.approximate_arrival_timestamp.0.timestamp();
            assert!(
                (now - 600..=now).contains(&arrival),
                "arrival {arrival} not recent"
            );
        }
        // The raw JSON has the fraction of a second, as AWS sends it.
        let raw: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        assert!(raw["Records"][0]["kinesis"]["approximateArrivalTimestamp"].is_f64());
    }

    // The admin server.
    assert_eq!(sluice.get("/healthz").await.unwrap().0, 200);
    let labels = "mapping=\"http\"";
    assert!(sluice.metric("sluice_polled_events_total", labels).await >= 10_000.0);
    assert!(sluice.metric("sluice_invoked_events_total", labels).await >= 10_000.0);
    assert!(
        sluice
            .metric(
                "sluice_batches_total",
                "mapping=\"http\",outcome=\"success\""
            )
            .await
            >= 20.0
    );
    assert!(
        sluice
            .metric("sluice_dispatch_duration_seconds_count", labels)
            .await
            >= 20.0
    );
    let (_, metrics) = sluice.get("/metrics").await.unwrap();
    assert!(
        metrics.contains("sluice_iterator_age_milliseconds{mapping=\"http\"}"),
        "{metrics}"
    );
    let status = sluice.status().await.unwrap();
    assert_eq!(
        status["mappings"]["http"].as_object().unwrap().len(),
        4,
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_reaches_a_real_lambda_function_in_order_per_shard() {
    let tb = testbed();
    let Stream { kinesis, name, arn } = Stream::create(&tb, "spine-lambda", 4).await;
    let mapping = format!(
        "  - Name: lambda\n    EventSourceArn: {arn}\n    StartingPosition: TRIM_HORIZON\n    BatchSize: 500\n    FunctionName: recorder\n"
    );
    let (sluice, _dir) = Sluice::run(&tb, &mapping).await;
    sluice.wait_ready().await;
    let written = put_records(&kinesis, &name, records("l", 10_000, 311)).await;

    let delivered = wait_delivered_once(
        "all 10,000 records recorded by the function",
        Duration::from_secs(240),
        || recorded(&tb, &name),
        &written,
        "no duplicates in a clean run",
    )
    .await;
    assert_ordered("lambda", &delivered);
    assert!(
        sluice
            .metric(
                "sluice_batches_total",
                "mapping=\"lambda\",outcome=\"success\""
            )
            .await
            >= 20.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_then_restart_loses_nothing_and_keeps_order() {
    let tb = testbed();
    let Stream { kinesis, name, arn } = Stream::create(&tb, "spine-kill", 4).await;
    let written = put_records(&kinesis, &name, records("k", 4_000, 97)).await;
    // A slow function, so the kill lands mid-stream with batches in flight.
    let sink = Sink::start(|_, _| {
        std::thread::sleep(Duration::from_millis(20));
        (200, vec![], String::new())
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cp = dir.path().join("cp");
    let batch = 50;
    let run = |n: &str| {
        let mapping = http_mapping("kill", &arn, &sink.url, n, batch);
        config(&tb, &cp, free_port(), &mapping)
    };
    let second =
        kill_9_and_restart(dir.path(), run, &sink, &written, Duration::from_secs(180)).await;
    drop(second);

    let run1 = sink.delivered_in_run("1");
    let run2 = sink.delivered_in_run("2");
    assert_ordered("run 1", &run1);
    assert_ordered("run 2", &run2);
    // Run 2 resumed after each shard's checkpoint: it repeats at most the one batch per shard
    // that was in flight (delivered, not yet checkpointed) when run 1 was killed.
    let run1_by_shard = by_shard(&run1);
    for (shard, recs2) in by_shard(&run2) {
        let first2 = &recs2[0].seq;
        let repeated = run1_by_shard
            .get(&shard)
            .map(|r1| {
                r1.iter()
                    .filter(|w| seq_key(&w.seq) >= seq_key(first2))
                    .count()
            })
            .unwrap_or(0);
        assert!(
            repeated <= batch,
            "shard {shard}: {repeated} records redelivered, more than one batch"
        );
    }
    let unique_count = as_set(&sink.delivered()).len();
    assert!(
        sink.delivered().len() - unique_count <= 4 * batch,
        "duplicates beyond the in-flight batches"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_shard_retries_while_the_others_proceed() {
    let tb = testbed();
    let Stream { kinesis, name, arn } = Stream::create(&tb, "spine-fail", 4).await;
    let written = put_records(&kinesis, &name, records("f", 800, 61)).await;
    let shards = by_shard(&written);
    let failing = shards.keys().next().unwrap().clone();
    let others_total: usize = shards
        .iter()
        .filter(|(s, _)| **s != failing)
        .map(|(_, v)| v.len())
        .sum();
    const N: usize = 3;
    let failing2 = failing.clone();
    let failures = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let failures2 = failures.clone();
    // The failing shard's batches fail at least N times, and until every other shard is done.
    let sink = Sink::start(move |req, accepted| {
        if req.shard() == failing2 {
            let others: usize = accepted
                .iter()
                .filter(|r| r.shard() != failing2)
                .map(|r| r.records.len())
                .sum();
            if failures2.load(std::sync::atomic::Ordering::SeqCst) < N || others < others_total {
                failures2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                return (500, vec![], "{\"errorMessage\":\"boom\"}".into());
            }
        }
        (200, vec![], String::new())
    })
    .await;
    let (_sluice, _dir) = Sluice::run(&tb, &http_mapping("fail", &arn, &sink.url, "1", 100)).await;

    wait_for(
        "the other shards delivered in full",
        Duration::from_secs(120),
        || async {
            let d = sink.delivered();
            (d.iter().filter(|w| w.shard != failing).count() >= others_total).then_some(())
        },
    )
    .await;
    assert_eq!(
        sink.delivered()
            .iter()
            .filter(|w| w.shard == failing)
            .count(),
        0,
        "the failing shard delivered nothing while failing"
    );
    wait_for(
        "the failing shard caught up",
        Duration::from_secs(120),
        || async { (sink.delivered().len() >= written.len()).then_some(()) },
    )
    .await;
    assert!(failures.load(std::sync::atomic::Ordering::SeqCst) >= N);
    let delivered = sink.delivered();
    assert_eq!(as_set(&delivered), as_set(&written));
    assert_ordered("fail", &delivered);
    // Retries re-sent the same first batch: the failing shard's first accepted batch starts at its first record.
    let first_ok = sink
        .accepted
        .lock()
        .unwrap()
        .iter()
        .find(|r| r.shard() == failing)
        .unwrap()
        .records[0]
        .seq
        .clone();
    assert_eq!(first_ok, shards[&failing][0].seq);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_work_checkpoints_and_exits_0() {
    let tb = testbed();
    let Stream { kinesis, name, arn } = Stream::create(&tb, "spine-term", 2).await;
    let written = put_records(&kinesis, &name, records("t", 1_000, 31)).await;
    let sink = Sink::start(|_, _| {
        std::thread::sleep(Duration::from_millis(30));
        (200, vec![], String::new())
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cp = dir.path().join("cp");
    let mut first = Sluice::start(
        dir.path(),
        "run1",
        &config(
            &tb,
            &cp,
            free_port(),
            &http_mapping("term", &arn, &sink.url, "1", 20),
        ),
    )
    .await;
    wait_for(
        "some records delivered",
        Duration::from_secs(60),
        || async { (sink.delivered().len() >= 200).then_some(()) },
    )
    .await;
    assert_eq!(
        first.terminate().await,
        0,
        "exit code after SIGTERM; log:\n{}",
        first.log_text()
    );
    assert!(
        sink.delivered().len() < written.len(),
        "SIGTERM came too late to test anything"
    );
    let _second = Sluice::start(
        dir.path(),
        "run2",
        &config(
            &tb,
            &cp,
            free_port(),
            &http_mapping("term", &arn, &sink.url, "2", 20),
        ),
    )
    .await;
    wait_for("the rest delivered", Duration::from_secs(60), || async {
        (as_set(&sink.delivered()).len() >= written.len()).then_some(())
    })
    .await;
    let delivered = sink.delivered();
    // A graceful stop checkpoints every finished batch: the restart repeats nothing.
    assert_eq!(
        delivered.len(),
        written.len(),
        "no duplicates after a graceful stop"
    );
    assert_ordered("term", &delivered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_and_expired_reads_back_off_and_resume_without_loss_or_duplicates() {
    let mut tb = testbed();
    let Stream { kinesis, name, arn } = Stream::create(&tb, "faults", 2).await;
    // sluice reads through the fault proxy: 3 throttled GetRecords, then 2 expired iterators.
    let rules = unique("kf");
    std::fs::write(
        tb.faults_dir.join(format!("{rules}.json")),
        r#"{"GetRecords": {"throttle": 3, "expire": 2}}"#,
    )
    .unwrap();
    tb.kinesis = format!("{}/fault-{rules}", tb.kinesis_faults);
    let sink = Sink::ok().await;
    let (sluice, _dir) = Sluice::run(&tb, &http_mapping("faults", &arn, &sink.url, "1", 100)).await;
    let written = put_records(&kinesis, &name, records("f", 600, 17)).await;
    let delivered = wait_delivered_once(
        "every record delivered",
        Duration::from_secs(120),
        || sink.delivered(),
        &written,
        "an expired iterator resumes after the last record: no duplicates",
    )
    .await;
    assert_ordered("faults", &delivered);
    let throttled = sluice
        .metric(
            "sluice_source_errors_total",
            "mapping=\"faults\",error=\"throttled\"",
        )
        .await;
    let expired = sluice
        .metric(
            "sluice_source_errors_total",
            "mapping=\"faults\",error=\"expired_iterator\"",
        )
        .await;
    assert_eq!((throttled, expired), (3.0, 2.0));
}
