//! The paths that used to lose records or hang, against the emulators: a LATEST mapping restarted
//! before its first checkpoint (Kinesis on kinesis-local, DynamoDB Streams on moto), two processes
//! on one checkpoint directory, an unreadable checkpoint file, and SIGTERM with a function that
//! never answers (bounded by the grace period; a second signal exits at once).

mod common;

use aws_sdk_dynamodb::types::{AttributeValue, StreamViewType};
use common::sink::Sink;
use common::sluice::{config, free_port, Sluice};
use common::*;
use std::collections::BTreeSet;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn mapping(name: &str, arn: &str, position: &str, url: &str, run: &str) -> String {
    format!(
        "  - Name: {name}\n    EventSourceArn: '{arn}'\n    StartingPosition: {position}\n    BatchSize: 10\n    Http:\n      Url: {url}\n      Headers: {{ X-Run: \"{run}\" }}\n"
    )
}

/// A config with a 1 s shard discovery interval and the given grace period.
fn fast_config(tb: &TestBed, cp: &Path, port: u16, grace: u32, mappings: &str) -> String {
    config(tb, cp, port, mappings)
        .replace(
            "shutdown_grace_period_seconds: 10\n",
            &format!("shutdown_grace_period_seconds: {grace}\n"),
        )
        .replace(
            "mappings:\n",
            "shard_discovery_interval_seconds: 1\nmappings:\n",
        )
}

/// Fails every batch of run 1 (a broken deploy), accepts every batch of run 2.
async fn failing_then_fixed() -> Sink {
    Sink::start(|req, _| {
        if req.run == "1" {
            (500, vec![], "{\"errorMessage\":\"broken\"}".into())
        } else {
            (200, vec![], String::new())
        }
    })
    .await
}

/// A LATEST mapping `name` on `arn` restarted before its first checkpoint: run 1 starts with a
/// function that fails every batch, `write` adds records once it is ready, and run 1 is killed (-9)
/// as soon as the function saw them (`what`); run 2 starts on the same checkpoint directory with the
/// function fixed. Returns the function, the directory run 2 runs in, run 2, and what `write`
/// returned.
async fn restarted_before_the_first_checkpoint<T, Fut>(
    tb: &TestBed,
    name: &str,
    arn: &str,
    what: &str,
    write: impl FnOnce() -> Fut,
) -> (Sink, tempfile::TempDir, Sluice, T)
where
    Fut: Future<Output = T>,
{
    let sink = failing_then_fixed().await;
    let dir = tempfile::tempdir().unwrap();
    let cp = dir.path().join("cp");
    let cfg = |run: &str| {
        fast_config(
            tb,
            &cp,
            free_port(),
            10,
            &mapping(name, arn, "LATEST", &sink.url, run),
        )
    };
    let mut first = Sluice::start(dir.path(), "run1", &cfg("1")).await;
    first.wait_ready().await;
    let written = write().await;
    wait_for(what, Duration::from_secs(60), || async {
        (!sink.all.lock().unwrap().is_empty()).then_some(())
    })
    .await;
    first.kill9().await;
    let second = Sluice::start(dir.path(), "run2", &cfg("2")).await;
    (sink, dir, second, written)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latest_kinesis_mapping_restarted_before_its_first_checkpoint_loses_nothing() {
    let tb = testbed();
    let kinesis = kinesis(&tb).await;
    let stream = unique("latest-restart");
    let arn = create_stream(&kinesis, &stream, 1).await;
    // Records that arrive after the mapping started, while its function is failing.
    let (sink, _dir, second, written) = restarted_before_the_first_checkpoint(
        &tb,
        "latest",
        &arn,
        "the failing function saw the records",
        || put_records(&kinesis, &stream, records("l", 5, 1)),
    )
    .await;
    wait_for(
        "the records delivered after the restart",
        Duration::from_secs(60),
        || async { (sink.delivered_in_run("2").len() >= written.len()).then_some(()) },
    )
    .await;
    let got: BTreeSet<String> = sink
        .delivered_in_run("2")
        .iter()
        .map(|w| w.seq.clone())
        .collect();
    let want: BTreeSet<String> = written.iter().map(|w| w.seq.clone()).collect();
    assert_eq!(
        got, want,
        "the hour of failures is not skipped by the restart"
    );
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latest_dynamodb_mapping_restarted_before_its_first_checkpoint_loses_nothing() {
    let tb = testbed();
    let ddb = dynamodb(&tb);
    let table = unique("latest-ddb");
    let arn = create_table(&ddb, &table, StreamViewType::KeysOnly).await;
    // An item written before the mapping ever started: LATEST must never deliver it.
    let put = |id: &'static str| {
        ddb.put_item()
            .table_name(&table)
            .item("Id", AttributeValue::N(id.into()))
            .send()
    };
    put("1").await.unwrap();
    // DynamoDB's record timestamps have whole seconds: make the mapping start a second later.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (sink, _dir, second, ()) = restarted_before_the_first_checkpoint(
        &tb,
        "latest-ddb",
        &arn,
        "the failing function saw the items",
        || async {
            tokio::time::sleep(Duration::from_millis(1100)).await;
            put("2").await.unwrap();
            put("3").await.unwrap();
        },
    )
    .await;
    let keys = || -> Vec<String> {
        sink.accepted
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.run == "2")
            .flat_map(|r| {
                let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                v["Records"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| {
                        e["dynamodb"]["Keys"]["Id"]["N"]
                            .as_str()
                            .unwrap()
                            .to_string()
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    wait_for(
        "items 2 and 3 after the restart",
        Duration::from_secs(60),
        || async { (keys().len() >= 2).then_some(()) },
    )
    .await;
    second.wait_ready().await;
    assert_eq!(
        keys(),
        ["2", "3"],
        "after the restart: every item since the first start, and nothing older"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_the_same_checkpoint_dir_exits_1_naming_the_holder() {
    let tb = testbed();
    let kinesis = kinesis(&tb).await;
    let stream = unique("lock");
    let arn = create_stream(&kinesis, &stream, 1).await;
    let sink = Sink::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let cp = dir.path().join("cp");
    let m = mapping("lock", &arn, "TRIM_HORIZON", &sink.url, "1");
    let first = Sluice::start(dir.path(), "first", &config(&tb, &cp, free_port(), &m)).await;
    first.wait_ready().await;
    let mut second = Sluice::start(dir.path(), "second", &config(&tb, &cp, free_port(), &m)).await;
    let status = tokio::time::timeout(Duration::from_secs(30), second.child.wait())
        .await
        .expect("the second process exits")
        .unwrap();
    assert_eq!(status.code(), Some(1));
    let log = second.log_text();
    assert!(log.contains(&cp.display().to_string()), "{log}");
    assert!(
        log.contains(&format!("PID {}", first.child.id().unwrap())),
        "{log}"
    );
    assert!(matches!(first.get("/readyz").await, Some((200, _))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_checkpoint_is_loud_on_status_and_readyz() {
    let tb = testbed();
    let kinesis = kinesis(&tb).await;
    let stream = unique("corrupt");
    let arn = create_stream(&kinesis, &stream, 1).await;
    let written = put_records(&kinesis, &stream, records("c", 3, 1)).await;
    let sink = Sink::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let cp = dir.path().join("cp");
    let file = cp.join("corrupt").join("shardId-000000000000.json");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, b"{\"sequence\": 12").unwrap();
    let m = mapping("corrupt", &arn, "TRIM_HORIZON", &sink.url, "1");
    let sluice = Sluice::start(
        dir.path(),
        "run",
        &fast_config(&tb, &cp, free_port(), 10, &m),
    )
    .await;
    let status = wait_for(
        "the shard shown as failed",
        Duration::from_secs(60),
        || async {
            let shard = sluice
                .shard_status("corrupt", "shardId-000000000000")
                .await?;
            (shard["state"] == "failed").then_some(shard)
        },
    )
    .await;
    let error = status["last_error"].as_str().unwrap();
    assert!(error.contains("shardId-000000000000.json"), "{error}");
    let (code, why) = sluice.get("/readyz").await.unwrap();
    assert_eq!(code, 503);
    assert!(why.contains("corrupt/shardId-000000000000"), "{why}");
    assert!(sluice.log_text().contains("shard is down"));
    assert!(
        sink.delivered().is_empty(),
        "the shard was not read from a guess"
    );
    // Deleting the file (as the message says) starts the shard from its StartingPosition.
    std::fs::remove_file(&file).unwrap();
    wait_for(
        "records delivered once fixed",
        Duration::from_secs(60),
        || async { (sink.delivered().len() >= written.len()).then_some(()) },
    )
    .await;
    sluice.wait_ready().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_within_the_grace_period_and_a_second_signal_at_once() {
    let tb = testbed();
    let kinesis = kinesis(&tb).await;
    let stream = unique("stuck");
    let arn = create_stream(&kinesis, &stream, 1).await;
    put_records(&kinesis, &stream, records("s", 3, 1)).await;
    // A function that never answers within any test's patience.
    let sink = Sink::start_slow(Duration::from_secs(3600), |_, _| {
        (200, vec![], String::new())
    })
    .await;
    let m = format!(
        "  - Name: stuck\n    EventSourceArn: '{arn}'\n    StartingPosition: TRIM_HORIZON\n    Http:\n      Url: {}\n      TimeoutSeconds: 900\n",
        sink.url
    );
    for (grace, second_signal) in [(2u32, false), (60, true)] {
        let dir = tempfile::tempdir().unwrap();
        let cp = dir.path().join("cp");
        let mut sluice = Sluice::start(
            dir.path(),
            "run",
            &fast_config(&tb, &cp, free_port(), grace, &m),
        )
        .await;
        let before = sink.arrived.load(Ordering::SeqCst);
        wait_for(
            "an invocation in flight",
            Duration::from_secs(60),
            || async { (sink.arrived.load(Ordering::SeqCst) > before).then_some(()) },
        )
        .await;
        let pid = sluice.child.id().unwrap().to_string();
        let term = || {
            std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
        };
        let sent = Instant::now();
        assert!(term().success());
        // Draining: not ready any more, while the in-flight invocation has its grace period.
        let (code, why) = wait_for("readyz while draining", Duration::from_secs(5), || async {
            sluice.get("/readyz").await.filter(|(c, _)| *c == 503)
        })
        .await;
        assert_eq!((code, why.trim()), (503, "draining"));
        if second_signal {
            assert!(term().success());
        }
        let status =
            tokio::time::timeout(Duration::from_secs(grace as u64 + 10), sluice.child.wait())
                .await
                .expect("sluice exits whatever is stuck")
                .unwrap();
        let took = sent.elapsed();
        if second_signal {
            assert_eq!(status.code(), Some(130));
            assert!(took < Duration::from_secs(5), "second signal: {took:?}");
        } else {
            assert_eq!(status.code(), Some(0));
            assert!(took < Duration::from_secs(grace as u64 + 5), "{took:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_survives_an_upgrade_and_a_new_target() {
    use ::sluice::checkpoint::{Checkpoint, CheckpointStore, Commit, FileCheckpointStore};
    use ::sluice::source::SequenceNumber;
    let tb = testbed();
    let kinesis = kinesis(&tb).await;
    let stream = unique("upgrade");
    let arn = create_stream(&kinesis, &stream, 1).await;
    let written = put_records(&kinesis, &stream, records("u", 10, 1)).await;
    let sink = Sink::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let cp = dir.path().join("cp");
    // What an earlier release left: progress up to the 5th record under `<stream>-<url>`.
    {
        let store = FileCheckpointStore::open(&cp).unwrap();
        let done = Checkpoint::Sequence(SequenceNumber(written[4].seq.clone()));
        let lease = ::sluice::lease::SingleReplica::token();
        let commit = Commit {
            from: None,
            to: &done,
            lease: &lease,
        };
        store
            .commit(&format!("{stream}-{}", sink.url), &written[4].shard, commit)
            .await
            .unwrap();
    }
    let m = format!(
        "  - EventSourceArn: '{arn}'\n    StartingPosition: TRIM_HORIZON\n    Http: {{ Url: '{}' }}\n",
        sink.url
    );
    let sluice = Sluice::start(dir.path(), "run", &config(&tb, &cp, free_port(), &m)).await;
    sluice
        .wait_checkpoint(
            "the last record checkpointed",
            &stream,
            &written[9].shard,
            &written[9].seq,
        )
        .await;
    let delivered: Vec<String> = sink.delivered().iter().map(|w| w.seq.clone()).collect();
    let after: Vec<String> = written[5..].iter().map(|w| w.seq.clone()).collect();
    assert_eq!(delivered, after, "resumed after the old name's checkpoint");
    assert!(sluice.log_text().contains("took over the checkpoints"));

    // Pointing the mapping at another function (a new URL, as `f` → `f:live`) keeps its progress.
    let mut sluice = sluice;
    assert_eq!(sluice.terminate().await, 0);
    let moved = Sink::ok().await;
    let m = m.replace(&sink.url, &moved.url);
    let sluice = Sluice::start(dir.path(), "run2", &config(&tb, &cp, free_port(), &m)).await;
    let more = put_records(&kinesis, &stream, records("v", 3, 1)).await;
    sluice
        .wait_checkpoint(
            "the new records checkpointed",
            &stream,
            &more[2].shard,
            &more[2].seq,
        )
        .await;
    let delivered: Vec<String> = moved.delivered().iter().map(|w| w.seq.clone()).collect();
    let want: Vec<String> = more.iter().map(|w| w.seq.clone()).collect();
    assert_eq!(
        delivered, want,
        "a new target is not a new mapping: nothing replayed"
    );
}
