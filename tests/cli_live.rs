//! `sluice checkpoints set|reset` through the running instance (docs/cli.md, `--url`/`--running`):
//! with sluice running (`--admin-write`) on two Kinesis mappings, moving one mapping's checkpoints
//! by timestamp and by sequence number replays the records after the new checkpoint without
//! restarting the process, while the other mapping's workers never restart and deliver each of
//! their records once; refused requests (an unknown mapping, a Kafka mapping) exit non-zero with
//! the message; and a dry run changes nothing. With a lease table and two replicas, a move through
//! one replica is refused while the other holds the mapping's lease (naming it), and `--force`
//! fences it and replays.

mod common;

use common::cli::{checkpoints, lease_table_config};

use common::sink::Sink;
use common::sluice::{config, free_port, Sluice};
use common::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// `sluice run --admin-write` on `yaml`, written as `dir/<name>.yaml` (as [`Sluice::start`]).
async fn start_writable(dir: &Path, name: &str, yaml: &str) -> Sluice {
    let sluice = Sluice::start_with(dir, name, yaml, &["--admin-write"]).await;
    sluice.wait_ready().await;
    sluice
}

fn kinesis_mapping(name: &str, arn: &str, url: &str) -> String {
    format!(
        "  - Name: {name}\n    EventSourceArn: {arn}\n    StartingPosition: TRIM_HORIZON\n    BatchSize: 100\n    Http:\n      Url: {url}\n"
    )
}

/// A Kafka mapping that never runs (disabled) but is in the config.
const KAFKA: &str = "  - Name: kaf\n    Enabled: false\n    SelfManagedEventSource:\n      Endpoints:\n        KAFKA_BOOTSTRAP_SERVERS: [\"127.0.0.1:1\"]\n    Topics: [t]\n    StartingPosition: TRIM_HORIZON\n    Http:\n      Url: http://127.0.0.1:1/\n";

/// How many times the sink got each (shard, sequence number).
fn counts(sink: &Sink) -> BTreeMap<(String, String), usize> {
    let mut out = BTreeMap::new();
    for w in sink.delivered() {
        *out.entry((w.shard, w.seq)).or_insert(0) += 1;
    }
    out
}

/// Waits until every record of `expected` was delivered `times` times (at least).
async fn delivered_times(what: &str, sink: &Sink, expected: &[Written], times: usize) {
    wait_for(what, Duration::from_secs(60), || async {
        let c = counts(sink);
        expected
            .iter()
            .all(|w| {
                c.get(&(w.shard.clone(), w.seq.clone()))
                    .copied()
                    .unwrap_or(0)
                    >= times
            })
            .then_some(())
    })
    .await
}

/// Each of `records` delivered exactly `times` times.
fn assert_times(sink: &Sink, records: &[Written], times: usize, what: &str) {
    let c = counts(sink);
    for w in records {
        assert_eq!(
            c.get(&(w.shard.clone(), w.seq.clone()))
                .copied()
                .unwrap_or(0),
            times,
            "{what}: {w:?}"
        );
    }
}

/// Lines of the log about mapping `name` containing `text`.
fn log_lines(sluice: &Sluice, name: &str, text: &str) -> usize {
    sluice
        .log_text()
        .lines()
        .filter(|l| l.contains(text))
        .filter(|l| {
            l.split_whitespace()
                .any(|w| w == format!("mapping={name}") || w == format!("mapping=\"{name}\""))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_through_the_running_instance_replay_one_mapping_and_leave_the_other_alone() {
    let tb = testbed();
    let kinesis = kinesis(&tb).await;
    let (stream, other) = (unique("live-m"), unique("live-o"));
    let arn = create_stream(&kinesis, &stream, 2).await;
    let other_arn = create_stream(&kinesis, &other, 1).await;
    let (sink, other_sink) = (Sink::ok().await, Sink::ok().await);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mappings = format!(
        "{}{}{KAFKA}",
        kinesis_mapping("m", &arn, &sink.url),
        kinesis_mapping("other", &other_arn, &other_sink.url)
    );
    let yaml = config(&tb, &dir.path().join("cp"), port, &mappings);
    let path = dir.path().join("run.yaml").display().to_string();

    let a = put_records(&kinesis, &stream, records("a", 40, 16)).await;
    let oa = put_records(&kinesis, &other, records("oa", 20, 4)).await;
    let shards: Vec<String> = by_shard(&a).keys().cloned().collect();
    assert_eq!(shards.len(), 2, "records on both shards");
    let s0 = shards[0].clone();
    let sluice = start_writable(dir.path(), "run", &yaml).await;
    delivered_times("batch a", &sink, &a, 1).await;
    delivered_times("other's batch", &other_sink, &oa, 1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let between = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let b = put_records(&kinesis, &stream, records("b", 40, 16)).await;
    delivered_times("batch b", &sink, &b, 1).await;
    for s in &shards {
        let last = of(&b, s).last().unwrap().seq.clone();
        sluice
            .wait_checkpoint("b checkpointed", "m", s, &last)
            .await;
    }
    let other_started =
        sluice.status().await.unwrap()["config"]["mappings"]["other"]["started_at"].clone();
    assert!(other_started.is_string(), "{other_started}");
    assert_eq!(log_lines(&sluice, "other", "starting shard"), 1);

    // A dry run shows the move and changes nothing.
    let live = |command, mapping| checkpoints(command, mapping).url(&sluice.admin);
    let out = live("set", "m").timestamp(&between).dry_run().ok().await;
    assert!(out.contains("dry run, nothing written"), "{out}");
    assert!(out.contains("the mapping was not stopped"), "{out}");

    // 1. From a time: batch b again, batch a not; the process keeps running.
    let pid = sluice.pid();
    let out = live("set", "m").timestamp(&between).ok().await;
    for s in &shards {
        let (last_a, last_b) = (
            of(&a, s).last().unwrap().seq.clone(),
            of(&b, s).last().unwrap().seq.clone(),
        );
        assert!(out.contains(&format!("{s}: {last_b} → {last_a}")), "{out}");
    }
    assert!(
        out.contains("stopped on this instance and started again"),
        "{out}"
    );
    delivered_times("batch b replayed", &sink, &b, 2).await;
    for s in &shards {
        let last = of(&b, s).last().unwrap().seq.clone();
        sluice
            .wait_checkpoint("replay checkpointed", "m", s, &last)
            .await;
    }
    assert_times(&sink, &a, 1, "before the instant: not replayed");
    assert_times(&sink, &b, 2, "after the instant: replayed once");
    assert_eq!(sluice.pid(), pid, "the same process");

    // 2. From a record, asking the instance at the config's admin_listen (--running).
    let a0 = of(&a, &s0);
    let running = checkpoints("set", "m").running(&path);
    let out = running.sequence(&s0, &a0[4].seq).ok().await;
    assert!(out.contains(&format!("→ {}", a0[4].seq)), "{out}");
    let b0 = of(&b, &s0);
    delivered_times("shard 0 replayed after the record", &sink, &b0, 3).await;
    delivered_times("shard 0's batch a after the record", &sink, &a0[5..], 2).await;
    let last = b0.last().unwrap().seq.clone();
    sluice
        .wait_checkpoint("shard 0 checkpointed", "m", &s0, &last)
        .await;
    assert_times(&sink, &a0[..5], 1, "up to the record: not replayed");
    assert_times(&sink, &a0[5..], 2, "after the record: once more");

    // Refusals: an unknown mapping (usage, naming the mappings), a Kafka mapping, a bad sequence.
    let (code, _, err) = live("reset", "nope").run().await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no mapping named \"nope\"") && err.contains("other"),
        "{err}"
    );
    let (code, _, err) = live("set", "kaf").timestamp(&between).run().await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("Kafka mapping") && err.contains("--reset-offsets"),
        "{err}"
    );
    let too_far = "999999999999999999999999";
    let (code, _, err) = live("set", "m").sequence(&s0, too_far).run().await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("refuses sequence number"), "{err}");

    // The other mapping never restarted and delivered everything once; it still runs.
    let ob = put_records(&kinesis, &other, records("ob", 20, 4)).await;
    delivered_times("other's batch b", &other_sink, &ob, 1).await;
    assert_times(&other_sink, &oa, 1, "other: batch a once");
    assert_times(&other_sink, &ob, 1, "other: batch b once");
    let c = sluice.status().await.unwrap()["config"].clone();
    assert_eq!(c["mappings"]["other"]["started_at"], other_started, "{c}");
    assert_eq!(c["generation"], 1, "no reload: {c}");
    assert_eq!(
        log_lines(&sluice, "other", "starting shard"),
        1,
        "other's worker never restarted:\n{}",
        sluice.log_text()
    );
    assert!(
        log_lines(
            &sluice,
            "m",
            "mapping started again after the checkpoint move"
        ) >= 2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_admin_write_the_instance_refuses_moves() {
    let tb = testbed();
    let kinesis = kinesis(&tb).await;
    let stream = unique("live-ro");
    let arn = create_stream(&kinesis, &stream, 1).await;
    let sink = Sink::ok().await;
    let (sluice, _dir) = Sluice::run(&tb, &kinesis_mapping("m", &arn, &sink.url)).await;
    sluice.wait_ready().await;
    let reset = checkpoints("reset", "m").url(&sluice.admin).to("latest");
    let (code, _, err) = reset.run().await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--admin-write"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_lease_table_another_replicas_lease_is_refused_unless_forced() {
    let tb = testbed();
    let kinesis = kinesis(&tb).await;
    let stream = unique("live-lease");
    let arn = create_stream(&kinesis, &stream, 1).await;
    let sink = Sink::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let table = unique("live-leases");
    let replica = |worker_id: &str, port: u16| {
        let cp_dir = dir.path().join(format!("cp-{worker_id}"));
        let m = kinesis_mapping("m", &arn, &sink.url);
        lease_table_config(&tb, &cp_dir, port, &table, worker_id, &m)
    };
    let a = put_records(&kinesis, &stream, records("a", 30, 8)).await;
    let shard = a[0].shard.clone();
    let last = a.last().unwrap().seq.clone();
    // w-2 alone takes the one shard; w-1 (admin writes on) joins with nothing to take.
    let w2 = Sluice::start(dir.path(), "w2", &replica("w-2", free_port())).await;
    w2.wait_ready().await;
    delivered_times("batch a", &sink, &a, 1).await;
    w2.wait_checkpoint("checkpointed", "m", &shard, &last).await;
    let port = free_port();
    let w1 = start_writable(dir.path(), "w1", &replica("w-1", port)).await;

    let reset = checkpoints("reset", "m").url(&w1.admin).to("trim-horizon");
    let (code, _, err) = reset.run().await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("held by w-2") && err.contains("--force"),
        "{err}"
    );
    assert_times(&sink, &a, 1, "refused: nothing replayed");

    let out = reset.force().ok().await;
    assert!(
        out.contains(&format!("{shard}: {last} → TRIM_HORIZON")),
        "{out}"
    );
    delivered_times("replayed from the oldest record", &sink, &a, 2).await;
}
