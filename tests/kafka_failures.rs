//! Kafka mappings when things go wrong, against the test bed's broker (tansu): a process killed
//! with kill -9 while records flow resumes from its group's committed offsets; two processes in
//! one consumer group split the partitions and the survivor takes a dead member's partitions; a
//! poison record is bisected out, described at the on-failure destination, and its partition goes
//! on. Every test has its own topic and consumer group (tansu does not reassign a group whose
//! members died in some states); every wait is bounded.

mod common;

use common::kafka::{
    assert_in_order_once, bootstrap, delivered, ends, event_records, on_failure_delivered,
    start_fresh, topic_mapping, wait_delivered, Produced, Target,
};
use common::sink::{Request, Sink};
use common::sluice::{config, free_port, Sluice};
use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// The log lines about the group (start, assignments, revocations, positions), for the report.
fn group_events(sluice: &Sluice) -> String {
    common::kafka::plain(&sluice.log_text())
        .lines()
        .filter(|l| {
            [
                "mapping running",
                "partitions ",
                "starts here",
                "repositioned",
                "shard worker started",
            ]
            .iter()
            .any(|k| l.contains(k))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// (partition, offset) of each record.
fn positions(records: &[Produced]) -> BTreeSet<(i32, i64)> {
    records.iter().map(|r| (r.partition, r.offset)).collect()
}

/// The partitions of `topic` that `mapping` runs in `sluice`'s `/status`.
async fn partitions_in_status(sluice: &Sluice, mapping: &str, topic: &str) -> Option<Vec<i32>> {
    let status = sluice.status().await?;
    let rows = status["mappings"][mapping].as_object()?;
    let mut out: Vec<i32> = rows
        .keys()
        .filter_map(|id| id.strip_prefix(topic)?.strip_prefix('-')?.parse().ok())
        .collect();
    out.sort_unstable();
    Some(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_kill_9_resumes_from_the_committed_offsets() {
    const BATCH: usize = 50;
    let tb = testbed();
    let topic = unique("restart");
    common::kafka::create_topic(&tb, &topic, 3).await;
    let produced = common::kafka::produce(&tb, &topic, &records("k", 6_000, 101)).await;
    let partitions = ends(&produced);
    // A function that takes 40 ms per batch, so records are still flowing at the kill.
    let sink = Sink::start_slow(Duration::from_millis(40), |_, _| (200, vec![], "{}".into())).await;
    let dir = tempfile::tempdir().unwrap();
    let group = unique("group");
    let yaml = |run| topic_mapping(&tb, &topic, &group, BATCH, Target::http(&sink.url, run), "");
    let port = free_port();
    let cfg = |run| config(&tb, &dir.path().join("cp"), port, &yaml(run));
    let mut first = Sluice::start(dir.path(), "first", &cfg("1")).await;
    wait_for(
        "a third of the records delivered",
        Duration::from_secs(90),
        || async { (delivered(&sink, Some("1")).len() >= produced.len() / 3).then_some(()) },
    )
    .await;
    first.kill9().await;
    let at_kill = delivered(&sink, Some("1")).len();
    assert!(
        at_kill < produced.len(),
        "records were still flowing at the kill ({at_kill} of {} delivered)",
        produced.len()
    );
    // sluice is dead: these offsets are where it left every partition.
    let committed = common::kafka::committed(&tb, &group, &topic, 3).await;
    eprintln!("killed after {at_kill} records; committed {committed:?}");

    let mut second = Sluice::start(dir.path(), "second", &cfg("2")).await;
    let restarted = Instant::now();
    wait_for(
        "every record delivered across both runs",
        Duration::from_secs(120),
        || async {
            let got = positions(&delivered(&sink, None));
            (got.len() >= produced.len()).then_some(())
        },
    )
    .await;
    eprintln!(
        "caught up {:?} after the restart; group events:\n{}",
        restarted.elapsed(),
        group_events(&second)
    );
    {
        let accepted = sink.accepted.lock().unwrap();
        let run2: Vec<&Request> = accepted.iter().filter(|r| r.run == "2").collect();
        let sizes: Vec<usize> = run2.iter().map(|r| event_records(&r.body).len()).collect();
        let span = run2
            .last()
            .zip(run2.first())
            .map(|(l, f)| l.arrived_at - f.arrived_at);
        eprintln!(
            "after the restart: {} batches over {span:?}, sizes {sizes:?}",
            run2.len()
        );
    }
    common::kafka::wait_committed(&tb, &group, &topic, &partitions, Duration::from_secs(30)).await;
    assert_eq!(second.terminate().await, 0);

    let run1 = delivered(&sink, Some("1"));
    let run2 = delivered(&sink, Some("2"));
    assert_in_order_once("before the kill", &run1);
    assert_in_order_once("after the restart", &run2);
    // Nothing lost, nothing made up.
    let all: BTreeSet<(i32, i64)> = positions(&run1).union(&positions(&run2)).copied().collect();
    assert_eq!(all, positions(&produced), "every record delivered");
    let mut duplicates = 0;
    for (p, end) in &partitions {
        let c = committed.get(p).copied().flatten().unwrap_or(0);
        let before: Vec<i64> = run1
            .iter()
            .filter(|r| r.partition == *p)
            .map(|r| r.offset)
            .collect();
        let after: Vec<i64> = run2
            .iter()
            .filter(|r| r.partition == *p)
            .map(|r| r.offset)
            .collect();
        // A commit follows a delivery: everything below the committed offset was delivered.
        assert!(
            (0..c).all(|o| before.contains(&o)),
            "partition {p}: committed {c} but not every record below it was delivered before the kill"
        );
        // The restart resumes exactly at the committed offset.
        if c < *end {
            assert_eq!(
                after.first(),
                Some(&c),
                "partition {p}: the restart resumes at the committed offset"
            );
        } else {
            assert!(after.is_empty(), "partition {p} was done: {after:?}");
        }
        // Duplicates: only records delivered before the kill and not committed — at most the
        // batch in flight at the kill.
        let again: Vec<i64> = after
            .iter()
            .filter(|o| before.contains(o))
            .copied()
            .collect();
        assert!(
            again.iter().all(|o| *o >= c),
            "partition {p}: redelivered a committed record: {again:?} (committed {c})"
        );
        assert!(
            again.len() <= BATCH,
            "partition {p}: {} redelivered, over one batch ({BATCH})",
            again.len()
        );
        duplicates += again.len();
    }
    eprintln!("{duplicates} records delivered twice (bound {})", BATCH * 3);
    assert!(duplicates <= BATCH * 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_in_one_group_split_the_partitions_and_the_survivor_takes_over() {
    let tb = testbed();
    let topic = unique("split");
    common::kafka::create_topic(&tb, &topic, 3).await;
    let sink = Sink::ok().await;
    let group = unique("group");
    let runs = ["a", "b"];
    // Each process's directory lives until the end of the test.
    let (mut procs, mut dirs) = (Vec::new(), Vec::new());
    for run in runs {
        let target = Target::http(&sink.url, run);
        let (sluice, dir) =
            start_fresh(&tb, &topic_mapping(&tb, &topic, &group, 100, target, "")).await;
        procs.push(sluice);
        dirs.push(dir);
    }
    // The group settles with the partitions split: each runs at least one, none runs one twice.
    let started = Instant::now();
    let split = wait_for(
        "the 3 partitions split between the two processes",
        Duration::from_secs(60),
        || async {
            let a = partitions_in_status(&procs[0], &topic, &topic).await?;
            let b = partitions_in_status(&procs[1], &topic, &topic).await?;
            let mut both: Vec<i32> = a.iter().chain(&b).copied().collect();
            both.sort_unstable();
            (!a.is_empty() && !b.is_empty() && both == [0, 1, 2]).then_some((a, b))
        },
    )
    .await;
    eprintln!("split {split:?} after {:?}", started.elapsed());
    let owner = |p: i32| if split.0.contains(&p) { "a" } else { "b" };

    let first = common::kafka::produce(&tb, &topic, &records("one", 3_000, 101)).await;
    wait_for(
        "the first records delivered",
        Duration::from_secs(60),
        || async { (positions(&delivered(&sink, None)).len() >= first.len()).then_some(()) },
    )
    .await;
    for run in runs {
        let got = delivered(&sink, Some(run));
        assert!(!got.is_empty(), "{run} delivered records");
        assert_in_order_once(run, &got);
        for r in &got {
            assert_eq!(
                owner(r.partition),
                run,
                "partition {} delivered by its owner",
                r.partition
            );
        }
    }
    assert_eq!(
        positions(&delivered(&sink, None)),
        positions(&first),
        "each record once"
    );

    // kill -9 b: a takes its partitions once the group's session timeout (10 s) declares it dead.
    let before_kill = sink.accepted.lock().unwrap().len();
    procs[1].kill9().await;
    let killed = Instant::now();
    let second = common::kafka::produce(&tb, &topic, &records("two", 3_000, 101)).await;
    let produced: Vec<Produced> = first.iter().chain(&second).cloned().collect();
    wait_for(
        "every record delivered after the kill",
        Duration::from_secs(90),
        || async { (positions(&delivered(&sink, None)).len() >= produced.len()).then_some(()) },
    )
    .await;
    let caught_up = killed.elapsed();
    // When a first delivered a record of each of b's partitions.
    let taken: BTreeMap<i32, Duration> = split
        .1
        .iter()
        .filter_map(|p| {
            let accepted = sink.accepted.lock().unwrap();
            let first: Option<&Request> = accepted[before_kill..]
                .iter()
                .find(|r| r.run == "a" && event_records(&r.body).iter().any(|x| x.partition == *p));
            first.map(|r| (*p, r.arrived_at.saturating_duration_since(killed)))
        })
        .collect();
    eprintln!("a's group events:\n{}", group_events(&procs[0]));
    eprintln!(
        "b killed; a delivered b's partitions after {taken:?}; all caught up after {caught_up:?}"
    );
    assert_eq!(
        taken.keys().copied().collect::<Vec<_>>(),
        split.1,
        "a delivered every partition b had"
    );
    let now = wait_for(
        "a runs all 3 partitions",
        Duration::from_secs(30),
        || async {
            let p = partitions_in_status(&procs[0], &topic, &topic).await?;
            (p == [0, 1, 2]).then_some(p)
        },
    )
    .await;
    assert_eq!(now, [0, 1, 2]);
    let a = delivered(&sink, Some("a"));
    assert_in_order_once("a", &a);
    assert!(
        delivered(&sink, Some("b"))
            .iter()
            .all(|r| positions(&first).contains(&(r.partition, r.offset))),
        "b delivered nothing after it was killed"
    );
    let all = positions(&delivered(&sink, None));
    assert_eq!(all, positions(&produced), "every record delivered");
    let partitions = ends(&produced);
    common::kafka::wait_committed(&tb, &group, &topic, &partitions, Duration::from_secs(30)).await;
    assert_eq!(procs[0].terminate().await, 0);
}

fn iso(v: &Value) -> time::OffsetDateTime {
    let s = v.as_str().unwrap_or_else(|| panic!("{v} is not a string"));
    assert!(
        s.ends_with('Z') && s.len() == 24,
        "{s} is not yyyy-mm-ddThh:mm:ss.SSSZ"
    );
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_record_is_bisected_out_and_recorded_at_the_destination() {
    let tb = testbed();
    let topic = unique("poison");
    common::kafka::create_topic(&tb, &topic, 3).await;
    let mut recs = records("p", 1_500, 101);
    recs[700].1 = "poison".into();
    let produced = common::kafka::produce(&tb, &topic, &recs).await;
    let poison = produced
        .iter()
        .find(|r| r.value == "poison")
        .unwrap()
        .clone();
    let (queue_url, queue_arn) = create_queue(&sqs(&tb), &unique("dest"), &[]).await;
    let sink = common::kafka::failing_on_poison().await;
    let group = unique("group");
    let extra = format!("    BisectBatchOnFunctionError: true\n    MaximumRetryAttempts: 1\n    DestinationConfig: {{ OnFailure: {{ Destination: '{queue_arn}' }} }}\n");
    let target = Target::http(&sink.url, "1");
    let (mut sluice, _dir) = start_fresh(
        &tb,
        &topic_mapping(&tb, &topic, &group, 100, target, &extra),
    )
    .await;
    wait_delivered(
        &sink,
        produced.len() - 1,
        "every other record delivered",
        Duration::from_secs(120),
    )
    .await;
    let found = drain_queue(&sqs(&tb), &queue_url, 1, Duration::from_secs(30)).await;
    assert_eq!(found.len(), 1, "exactly one failure record: {found:?}");
    let r: Value = serde_json::from_str(&found[0]).unwrap();
    eprintln!("failure record: {r}");
    let keys: BTreeSet<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "requestContext",
            "responseContext",
            "version",
            "timestamp",
            "KafkaBatchInfo"
        ]),
        "SQS gets metadata only"
    );
    let rc = &r["requestContext"];
    assert_eq!(rc["condition"], "RetryAttemptsExhausted");
    assert_eq!(rc["functionArn"], sink.url.as_str());
    let invokes = rc["approximateInvokeCount"].as_u64().unwrap();
    // The batches it was bisected out of (at most ceil(log2(100)) = 7), then alone and 1 retry.
    assert!((2..=2 + 7).contains(&invokes), "{invokes} invocations");
    assert_eq!(r["responseContext"]["statusCode"], 200);
    assert_eq!(r["responseContext"]["functionError"], "Unhandled");
    assert_eq!(r["version"], "1.0");
    iso(&r["timestamp"]);
    let info = &r["KafkaBatchInfo"];
    assert_eq!(info["batchSize"], 1);
    assert_eq!(info["bootstrapServers"], bootstrap(&tb));
    assert!(info.get("eventSourceArn").is_none(), "self-managed: no ARN");
    assert!(info["payloadSize"].as_u64().unwrap() > 0);
    let ri = info["recordsInfo"].as_object().unwrap();
    let id = format!("{topic}-{}", poison.partition);
    assert_eq!(ri.keys().collect::<Vec<_>>(), [&id]);
    assert_eq!(ri[&id]["firstRecordOffset"], poison.offset.to_string());
    assert_eq!(ri[&id]["lastRecordOffset"], poison.offset.to_string());
    assert_eq!(
        iso(&ri[&id]["firstRecordTimestamp"]),
        iso(&ri[&id]["lastRecordTimestamp"])
    );

    // Every other record once, in order per partition; the poison's partition went on past it.
    let got = delivered(&sink, None);
    assert_in_order_once("poison", &got);
    let want: BTreeSet<(i32, i64)> = positions(&produced)
        .into_iter()
        .filter(|p| *p != (poison.partition, poison.offset))
        .collect();
    assert_eq!(got.len(), want.len(), "no duplicates");
    assert_eq!(positions(&got), want);
    assert!(
        got.iter()
            .any(|r| r.partition == poison.partition && r.offset > poison.offset),
        "the poison's partition goes on"
    );
    let partitions = ends(&produced);
    common::kafka::wait_committed(&tb, &group, &topic, &partitions, Duration::from_secs(30)).await;
    assert_eq!(on_failure_delivered(&sluice, &topic).await, 1.0);
    let labels = format!("mapping=\"{topic}\"");
    assert_eq!(
        sluice.metric("sluice_dropped_events_total", &labels).await,
        0.0
    );
    assert_eq!(sluice.terminate().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_with_batches_in_flight_commits_them_before_the_partitions_move() {
    let tb = testbed();
    let topic = unique("rebalance");
    common::kafka::create_topic(&tb, &topic, 3).await;
    let produced = common::kafka::produce(&tb, &topic, &records("r", 900, 101)).await;
    // Every batch takes 1.5 s: when the second process joins, the first has batches in flight.
    let sink = Sink::start_slow(Duration::from_millis(1500), |_, _| {
        (200, vec![], "{}".into())
    })
    .await;
    let group = unique("group");
    let start = |run| {
        let yaml = topic_mapping(&tb, &topic, &group, 50, Target::http(&sink.url, run), "");
        let tb = &tb;
        async move { start_fresh(tb, &yaml).await }
    };
    let (mut a, _a_dir) = start("a").await;
    wait_for(
        "a batch in flight at a",
        Duration::from_secs(60),
        || async {
            let arrived = sink.arrived.load(std::sync::atomic::Ordering::SeqCst);
            (arrived > sink.accepted.lock().unwrap().len()).then_some(())
        },
    )
    .await;
    let (mut b, _b_dir) = start("b").await;
    wait_for(
        "every record delivered",
        Duration::from_secs(180),
        || async { (positions(&delivered(&sink, None)).len() >= produced.len()).then_some(()) },
    )
    .await;
    // The revoked partitions' batches were finished and committed before b took them: nothing
    // was delivered twice, and every partition stayed in order across the move.
    let all = delivered(&sink, None);
    eprintln!("a's group events:\n{}", group_events(&a));
    assert_eq!(all.len(), produced.len(), "no record delivered twice");
    assert_eq!(positions(&all), positions(&produced));
    assert_in_order_once("across the rebalance", &all);
    assert!(
        !delivered(&sink, Some("b")).is_empty(),
        "b took partitions from a"
    );
    let partitions = ends(&produced);
    common::kafka::wait_committed(&tb, &group, &topic, &partitions, Duration::from_secs(30)).await;
    assert_eq!(a.terminate().await, 0);
    assert_eq!(b.terminate().await, 0);
}
