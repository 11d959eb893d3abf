//! Kafka mappings end to end against the test bed's broker (tansu): a topic's records reach an HTTP
//! function and a Lambda function (the test bed's emulator) in AWS's Kafka event, in order per
//! partition, with offsets committed as batches succeed; a mapping whose broker is down or whose
//! address is wrong logs a clear error naming it while the other mappings run, and SIGTERM still
//! exits promptly. The failure cases (kill -9, two processes in a group, a poison record) are in
//! `kafka_failures.rs`, so the slow tests run in parallel.

mod common;

use common::kafka::{
    assert_in_order_once, bootstrap, delivered, ends, events_records, mapping, plain, start_sluice,
    topic_mapping, wait_delivered, Produced, Tap, Target,
};
use common::sink::Sink;
use common::sluice::{free_port, Sluice};
use common::*;
use std::time::{Duration, Instant};

/// `/status` now, blocking (for a panic message).
fn futures_status(sluice: &Sluice) -> Option<serde_json::Value> {
    let url = format!("{}/status", sluice.admin);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        rt.block_on(async {
            serde_json::from_str(&reqwest::get(url).await.ok()?.text().await.ok()?).ok()
        })
    })
    .join()
    .ok()
    .flatten()
}

/// Every produced record delivered once, with its key and value, in order per partition.
fn assert_exactly(label: &str, got: &[Produced], produced: &[Produced]) {
    assert_in_order_once(label, got);
    let mut want = produced.to_vec();
    want.sort();
    let mut have = got.to_vec();
    have.sort();
    assert_eq!(
        have.len(),
        want.len(),
        "{label}: as many records as produced"
    );
    assert!(
        have == want,
        "{label}: every record, with its key and value"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topics_records_reach_the_function_in_order_per_partition() {
    let tb = testbed();
    let topic = unique("orders");
    common::kafka::create_topic(&tb, &topic, 3).await;
    let produced = common::kafka::produce(&tb, &topic, &records("r", 10_000, 101)).await;
    let partitions = ends(&produced);
    assert_eq!(partitions.len(), 3, "the keys spread over every partition");
    let sink = Sink::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let group = unique("group");
    let target = Target::http(&sink.url, "1");
    let yaml = topic_mapping(&tb, &topic, &group, 100, target, "");
    let started = Instant::now();
    let mut sluice = start_sluice(&tb, dir.path(), "kafka", &yaml).await;
    wait_delivered(
        &sink,
        produced.len(),
        "every record delivered",
        Duration::from_secs(120),
    )
    .await;
    eprintln!(
        "{} records delivered over HTTP in {:?}",
        produced.len(),
        started.elapsed()
    );
    let got = delivered(&sink, None);
    assert_exactly("http", &got, &produced);
    // Each event holds one partition's records: sluice batches per partition.
    for req in sink.accepted.lock().unwrap().iter() {
        let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(v["records"].as_object().unwrap().len(), 1);
        assert_eq!(v["bootstrapServers"], bootstrap(&tb));
    }
    // The group's offsets follow: everything is committed.
    common::kafka::wait_committed(&tb, &group, &topic, &partitions, Duration::from_secs(30)).await;
    let committed = common::kafka::committed(&tb, &group, &topic, 3).await;
    for (p, end) in &partitions {
        assert_eq!(
            committed[p],
            Some(*end),
            "partition {p} committed to its end"
        );
    }
    assert_eq!(sluice.terminate().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topics_records_reach_a_lambda_function_in_order_per_partition() {
    let tb = testbed();
    let topic = unique("lambda");
    common::kafka::create_topic(&tb, &topic, 3).await;
    let produced = common::kafka::produce(&tb, &topic, &records("l", 10_000, 101)).await;
    let partitions = ends(&produced);
    assert_eq!(partitions.len(), 3, "the keys spread over every partition");
    // sluice invokes the emulator's `recorder` through a recording proxy: the recorder understands
    // Kinesis events only, so the events are read as they were sent, with the function's answer.
    let tap = Tap::start(&tb.lambda).await;
    let via_tap = TestBed {
        lambda: tap.url.clone(),
        ..tb.clone()
    };
    let dir = tempfile::tempdir().unwrap();
    let group = unique("group");
    let yaml = topic_mapping(&tb, &topic, &group, 500, Target::Function("recorder"), "");
    let started = Instant::now();
    let mut sluice = start_sluice(&via_tap, dir.path(), "kafka", &yaml).await;
    let got = || {
        let invokes = tap.succeeded();
        let invokes = invokes.iter().filter(|c| c.path.ends_with("/invocations"));
        events_records(invokes.map(|c| &c.body[..]))
    };
    wait_for(
        "every record delivered to the Lambda function",
        Duration::from_secs(180),
        || async { (got().len() >= produced.len()).then_some(()) },
    )
    .await;
    eprintln!(
        "{} records delivered to Lambda in {:?} ({} invocations)",
        produced.len(),
        started.elapsed(),
        tap.calls.lock().unwrap().len()
    );
    let calls = tap.calls.lock().unwrap().clone();
    let invokes: Vec<_> = calls
        .iter()
        .filter(|c| c.path.ends_with("/invocations"))
        .collect();
    assert!(!invokes.is_empty());
    for c in invokes {
        assert_eq!(
            c.path, "/2015-03-31/functions/recorder/invocations",
            "an Invoke of the named function"
        );
        assert!(
            c.status == 200 && c.function_error.is_none(),
            "every invocation succeeded: {} {:?} {}",
            c.status,
            c.function_error,
            String::from_utf8_lossy(&c.answer)
        );
        let answer: serde_json::Value = serde_json::from_slice(&c.answer).unwrap();
        assert_eq!(answer, serde_json::json!({"batchItemFailures": []}));
    }
    assert_exactly("lambda", &got(), &produced);
    common::kafka::wait_committed(&tb, &group, &topic, &partitions, Duration::from_secs(30)).await;
    assert_eq!(sluice.terminate().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_is_down_or_a_wrong_address_leaves_the_other_mappings_running() {
    let tb = testbed();
    let topic = unique("beside");
    common::kafka::create_topic(&tb, &topic, 3).await;
    let produced = common::kafka::produce(&tb, &topic, &records("b", 900, 31)).await;
    let sink = Sink::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let target = |run| Target::http(&sink.url, run);
    // Nothing listens on a free port (a broker that is down); `.invalid` never resolves.
    let down = format!("127.0.0.1:{}", free_port());
    let mut yaml = mapping(
        &down,
        "broker-down",
        &topic,
        &unique("g"),
        100,
        target("down"),
        "",
    );
    yaml += &mapping(
        "no-such-broker.invalid:9092",
        "wrong-address",
        &topic,
        &unique("g"),
        100,
        target("wrong"),
        "",
    );
    let group = unique("g");
    yaml += &mapping(
        bootstrap(&tb),
        "working",
        &topic,
        &group,
        100,
        target("ok"),
        "",
    );
    let started = Instant::now();
    let mut sluice = start_sluice(&tb, dir.path(), "kafka", &yaml).await;
    wait_delivered(
        &sink,
        produced.len(),
        "the working mapping's records delivered",
        Duration::from_secs(90),
    )
    .await;
    assert_exactly("working", &delivered(&sink, None), &produced);
    assert!(sink.accepted.lock().unwrap().iter().all(|r| r.run == "ok"));
    // Each broken mapping is named in an error line.
    let errors = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let log = plain(&sluice.log_text());
            let line = |name: &str| {
                log.lines()
                    .find(|l| l.contains("ERROR") && l.contains(&format!("mapping={name}")))
                    .map(str::to_string)
            };
            if let (Some(a), Some(b)) = (line("broker-down"), line("wrong-address")) {
                return (a, b);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "no ERROR line naming each broken mapping within 60 s; /status {:?}; log:\n{}",
            futures_status(&sluice),
            sluice.log_text()
        )
    });
    eprintln!("broker down: {}\nwrong address: {}", errors.0, errors.1);
    let ready = sluice.get("/readyz").await.map(|(s, _)| s);
    let status = sluice.status().await;
    eprintln!("/readyz {ready:?}; /status {status:?}");
    let ran = started.elapsed();
    let log = plain(&sluice.log_text());
    let stopping = Instant::now();
    let code = sluice.terminate().await;
    let took = stopping.elapsed();
    eprintln!("SIGTERM to exit: {took:?}");
    assert_eq!(code, 0, "exit code; log:\n{}", sluice.log_text());
    assert!(
        took < Duration::from_secs(10),
        "SIGTERM took {took:?}; log:\n{}",
        sluice.log_text()
    );
    // The errors say what is wrong without flooding the log: a broker that stays down is worth a
    // line now and then, not one every few milliseconds.
    let error_lines: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
    let unnamed = error_lines
        .iter()
        .filter(|l| !l.contains("mapping="))
        .count();
    let per_s = error_lines.len() as f64 / ran.as_secs_f64();
    eprintln!(
        "{} ERROR lines in {ran:?} ({per_s:.1}/s), {unnamed} of them naming no mapping",
        error_lines.len()
    );
    assert!(
        per_s <= 2.0,
        "{} ERROR lines in {ran:?} for two broken mappings ({unnamed} naming no mapping), e.g.:\n{}",
        error_lines.len(),
        error_lines.iter().rev().take(5).copied().collect::<Vec<_>>().join("\n")
    );
}
