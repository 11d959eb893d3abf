//! The day-2 commands against the emulators (docs/cli.md): `sluice status` against a running
//! sluice; `sluice checkpoints list|set|reset` on a Kinesis mapping's embedded store and on the
//! lease table (moto DynamoDB), each move checked by restarting sluice and looking at what the
//! function is sent (replay: the records after the new checkpoint again; skip: nothing before it);
//! the refusals (a running sluice on the directory, a live lease holder) and `--force` fencing a
//! running holder; `sluice iam-policy` printing a valid policy.

mod common;

use common::cli::{checkpoints, cli, lease_table_config, ok, Checkpoints};

use common::sink::Sink;
use common::sluice::{config, free_port, Sluice};
use common::*;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

/// `sluice checkpoints <command> --mapping m --config <path>`.
fn cp(command: &str, path: &str) -> Checkpoints {
    checkpoints(command, "m").config(path)
}

fn mapping(arn: &str, url: &str, run: &str) -> String {
    format!(
        "  - Name: m\n    EventSourceArn: {arn}\n    StartingPosition: TRIM_HORIZON\n    BatchSize: 100\n    Http:\n      Url: {url}\n      Headers: {{ X-Run: \"{run}\" }}\n"
    )
}

fn set(v: &[Written]) -> BTreeSet<(String, String)> {
    v.iter().map(|w| (w.shard.clone(), w.seq.clone())).collect()
}

/// Waits until run `run` has delivered exactly `expected` (the function sees a shard's records in
/// order, so once the last expected one is there an unexpected earlier one would be too).
async fn delivers_exactly(sink: &Sink, run: &str, expected: &[Written]) {
    let want = set(expected);
    wait_for(
        &format!("run {run} to deliver {} records", want.len()),
        Duration::from_secs(60),
        || async {
            want.is_subset(&set(&sink.delivered_in_run(run)))
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        set(&sink.delivered_in_run(run)),
        want,
        "run {run} delivered other records than expected"
    );
}

/// Starts sluice on `yaml` as `dir/<name>.yaml`; returns it and the config's path.
async fn start(dir: &Path, name: &str, yaml: &str) -> (Sluice, String) {
    let sluice = Sluice::start(dir, name, yaml).await;
    sluice.wait_ready().await;
    let path = dir.join(format!("{name}.yaml")).display().to_string();
    (sluice, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_checkpoints_on_the_embedded_store() {
    let tb = testbed();
    let kinesis = kinesis(&tb).await;
    let stream = unique("cli-file");
    let arn = create_stream(&kinesis, &stream, 2).await;
    let sink = Sink::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let cp_dir = dir.path().join("cp");
    let yaml = |run: &str| config(&tb, &cp_dir, free_port(), &mapping(&arn, &sink.url, run));

    let a = put_records(&kinesis, &stream, records("a", 40, 16)).await;
    let shards: Vec<String> = by_shard(&a).keys().cloned().collect();
    assert_eq!(shards.len(), 2, "records on both shards");
    let (s0, s1) = (shards[0].clone(), shards[1].clone());
    let (mut sluice, path) = start(dir.path(), "run1", &yaml("1")).await;
    delivers_exactly(&sink, "1", &a).await;
    for s in &shards {
        let last = of(&a, s).last().unwrap().seq.clone();
        sluice.wait_checkpoint("checkpointed", "m", s, &last).await;
    }

    // status: a table of the running instance, from its config's admin_listen or a URL.
    let table = ok(&["status", "--config", &path]).await;
    assert!(table.starts_with("ready: yes"), "{table}");
    assert!(table.contains("MAPPING  PARTITION"), "{table}");
    for s in &shards {
        let last = of(&a, s).last().unwrap().seq.clone();
        let row = table
            .lines()
            .find(|l| l.contains(s.as_str()))
            .expect("a row per shard");
        assert!(row.starts_with("m "), "{row}");
        assert!(row.contains(last.as_str()), "{row}");
    }
    let json = ok(&["status", "--url", &sluice.admin, "--json"]).await;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["ready"], true);
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let (code, _, err) = cli(&["status", "--url", &nobody, "--timeout-seconds", "2"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no answer"), "{err}");
    // probe: the container health check ECS runs (the image has no shell or curl).
    let healthz = format!("{}/healthz", sluice.admin);
    assert_eq!(cli(&["probe", "--url", &healthz]).await.0, 0);
    let missing = format!("{}/no-such-page", sluice.admin);
    assert_eq!(cli(&["probe", "--url", &missing]).await.0, 1);
    let (code, _, err) = cli(&["probe", "--url", &format!("{nobody}/healthz")]).await;
    assert_eq!(code, 1, "{err}");

    // Moving checkpoints under a running sluice is refused: it holds the directory.
    let (code, _, err) = cp("reset", &path).run().await;
    assert_eq!(code, 1);
    assert!(err.contains("in use by another sluice process"), "{err}");
    assert_eq!(sluice.terminate().await, 0);

    // list: every shard at its last record.
    let listed = cp("list", &path).ok().await;
    for s in &shards {
        let last = of(&a, s).last().unwrap().seq.clone();
        assert!(
            listed
                .lines()
                .any(|l| l.starts_with(s.as_str()) && l.contains(last.as_str())),
            "{listed}"
        );
    }

    // Between the two batches: the instant to replay from.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let between = time::OffsetDateTime::now_utc();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let b = put_records(&kinesis, &stream, records("b", 40, 16)).await;
    let (a0, a1, b0, b1) = (of(&a, &s0), of(&a, &s1), of(&b, &s0), of(&b, &s1));

    // set --sequence: shard 0 back to its 5th record (replay), shard 1 ahead to b's 3rd (skip).
    let out = cp("set", &path).sequence(&s0, &a0[4].seq).ok().await;
    assert!(
        out.contains(&format!("{s0}: {} → {}", a0.last().unwrap().seq, a0[4].seq)),
        "{out}"
    );
    cp("set", &path).sequence(&s1, &b1[2].seq).ok().await;
    let (code, _, err) = cp("set", &path).sequence(&s1, "12ab").run().await;
    assert_eq!(code, 2, "{err}");
    let (mut sluice, _) = start(dir.path(), "run2", &yaml("2")).await;
    let expected: Vec<Written> = a0[5..].iter().chain(&b0).chain(&b1[3..]).cloned().collect();
    delivers_exactly(&sink, "2", &expected).await;
    sluice
        .wait_checkpoint("caught up", "m", &s1, &b1.last().unwrap().seq)
        .await;
    sluice
        .wait_checkpoint("caught up", "m", &s0, &b0.last().unwrap().seq)
        .await;
    assert_eq!(sluice.terminate().await, 0);

    // set --timestamp: both shards back to their last record before `between`.
    let at = between
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let dry = cp("set", &path).timestamp(&at).dry_run().ok().await;
    assert!(dry.contains("dry run"), "{dry}");
    let out = cp("set", &path).timestamp(&at).ok().await;
    assert!(
        out.contains(&format!(
            "{s0}: {} → {}",
            b0.last().unwrap().seq,
            a0.last().unwrap().seq
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{s1}: {} → {}",
            b1.last().unwrap().seq,
            a1.last().unwrap().seq
        )),
        "{out}"
    );
    let (mut sluice, _) = start(dir.path(), "run3", &yaml("3")).await;
    delivers_exactly(&sink, "3", &b).await;
    assert_eq!(sluice.terminate().await, 0);

    // reset: TRIM_HORIZON again, everything re-read.
    let out = cp("reset", &path).ok().await;
    assert!(
        out.contains(&format!("{s0}: {} → -", b0.last().unwrap().seq)),
        "{out}"
    );
    let listed = cp("list", &path).ok().await;
    assert!(listed.contains("no checkpoints"), "{listed}");
    let all: Vec<Written> = a.iter().chain(&b).cloned().collect();
    let (mut sluice, _) = start(dir.path(), "run4", &yaml("4")).await;
    delivers_exactly(&sink, "4", &all).await;
    for s in &shards {
        let last = of(&b, s).last().unwrap().seq.clone();
        sluice.wait_checkpoint("caught up", "m", s, &last).await;
    }
    assert_eq!(sluice.terminate().await, 0);

    // reset --to trim-horizon, then --to latest: only what is written afterwards is sent.
    cp("reset", &path).to("trim-horizon").ok().await;
    let out = cp("reset", &path).to("latest").ok().await;
    assert!(
        out.contains(&format!("{s1}: - → {}", b1.last().unwrap().seq)),
        "{out}"
    );
    let c = put_records(&kinesis, &stream, records("c", 20, 16)).await;
    let (mut sluice, _) = start(dir.path(), "run5", &yaml("5")).await;
    delivers_exactly(&sink, "5", &c).await;
    assert_eq!(sluice.terminate().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_on_the_lease_table_refuse_a_live_holder_and_fence_it_with_force() {
    let tb = testbed();
    let kinesis = kinesis(&tb).await;
    let stream = unique("cli-lease");
    let arn = create_stream(&kinesis, &stream, 1).await;
    let sink = Sink::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let table = unique("cli-leases");
    let yaml = |run: &str| {
        let cp_dir = dir.path().join("cp");
        let m = mapping(&arn, &sink.url, run);
        lease_table_config(&tb, &cp_dir, free_port(), &table, "w-1", &m)
    };
    let a = put_records(&kinesis, &stream, records("a", 30, 8)).await;
    let shard = a[0].shard.clone();
    let last = a.last().unwrap().seq.clone();
    let (mut sluice, path) = start(dir.path(), "run1", &yaml("1")).await;
    delivers_exactly(&sink, "1", &a).await;
    sluice
        .wait_checkpoint("checkpointed", "m", &shard, &last)
        .await;

    let listed = cp("list", &path).ok().await;
    assert!(listed.contains(&format!("lease table {table}")), "{listed}");
    let row = listed
        .lines()
        .find(|l| l.starts_with(shard.as_str()))
        .expect("the lease");
    assert!(row.contains(&last) && row.contains("w-1"), "{row}");

    // The holder renews its lease: refused.
    let (code, _, err) = cp("set", &path).sequence(&shard, &a[9].seq).run().await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("live workers hold these leases") && err.contains("w-1"),
        "{err}"
    );

    // --force: the holder is fenced, takes the lease again and re-reads from the new checkpoint.
    let out = cp("set", &path)
        .sequence(&shard, &a[19].seq)
        .force()
        .ok()
        .await;
    assert!(
        out.contains(&format!("{shard}: {last} → {}", a[19].seq)),
        "{out}"
    );
    wait_for(
        "the records after the forced checkpoint again",
        Duration::from_secs(60),
        || async {
            let again = sink.delivered_in_run("1");
            (again.len() >= a.len() + 10).then_some(())
        },
    )
    .await;
    assert_eq!(
        set(&sink.delivered_in_run("1")[a.len()..]),
        set(&a[20..]),
        "re-delivered exactly the records after the forced checkpoint"
    );
    sluice
        .wait_checkpoint("caught up", "m", &shard, &last)
        .await;
    assert_eq!(sluice.terminate().await, 0);

    // Stopped (its lease released): moved without waiting or forcing; the lease is freed with a
    // higher counter.
    let before = cp("list", &path).ok().await;
    let counter = |text: &str| -> u64 {
        let row = text
            .lines()
            .find(|l| l.starts_with(shard.as_str()))
            .unwrap();
        row.split_whitespace().nth(3).unwrap().parse().unwrap()
    };
    let out = cp("set", &path).sequence(&shard, &a[4].seq).ok().await;
    assert!(
        out.contains(&format!("{shard}: {last} → {}", a[4].seq)),
        "{out}"
    );
    let after = cp("list", &path).ok().await;
    assert!(counter(&after) > counter(&before), "{before}\n{after}");
    let row = after
        .lines()
        .find(|l| l.starts_with(shard.as_str()))
        .unwrap();
    assert_eq!(row.split_whitespace().nth(2), Some("-"), "freed: {row}");
    let (mut sluice, _) = start(dir.path(), "run2", &yaml("2")).await;
    delivers_exactly(&sink, "2", &a[5..]).await;
    sluice
        .wait_checkpoint("caught up", "m", &shard, &last)
        .await;
    assert_eq!(sluice.terminate().await, 0);

    // reset on the lease table: the starting position's sentinel; everything again.
    let out = cp("reset", &path).ok().await;
    assert!(
        out.contains(&format!("{shard}: {last} → TRIM_HORIZON")),
        "{out}"
    );
    let (mut sluice, _) = start(dir.path(), "run3", &yaml("3")).await;
    delivers_exactly(&sink, "3", &a).await;
    assert_eq!(sluice.terminate().await, 0);
}

#[tokio::test]
async fn iam_policy_prints_a_valid_policy_and_kafka_checkpoints_are_refused() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.yaml");
    let out = ok(&["iam-policy", "--config", example]).await;
    let policy: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(policy["Version"], "2012-10-17");
    let statements = policy["Statement"].as_array().unwrap();
    assert!(statements.len() >= 4);
    for s in statements {
        assert_eq!(s["Effect"], "Allow");
        assert!(s["Sid"]
            .as_str()
            .unwrap()
            .chars()
            .all(|c| c.is_ascii_alphanumeric()));
        for r in s["Resource"].as_array().unwrap() {
            assert!(r.as_str().unwrap().starts_with("arn:aws:"), "{r}");
        }
    }
    let list = |mapping| checkpoints("list", mapping).config(example);
    let (code, _, err) = list("payments-kafka").run().await;
    assert_eq!(code, 1);
    assert!(
        err.contains("consumer group") && err.contains("--reset-offsets"),
        "{err}"
    );
    let (code, _, err) = list("nope").run().await;
    assert_eq!(code, 2);
    assert!(err.contains("orders-to-lambda"), "{err}");
}

fn mapping_from(arn: &str, url: &str, run: &str, start: &str) -> String {
    mapping(arn, url, run).replace("TRIM_HORIZON", start)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latest_mapping_replays_from_before_its_first_start() {
    let tb = testbed();
    let kinesis = kinesis(&tb).await;
    let stream = unique("cli-latest");
    let arn = create_stream(&kinesis, &stream, 1).await;
    let sink = Sink::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let cp_dir = dir.path().join("cp");
    let yaml = |run: &str| {
        config(
            &tb,
            &cp_dir,
            free_port(),
            &mapping_from(&arn, &sink.url, run, "LATEST"),
        )
    };
    // Written before the mapping ever started: LATEST never sends these.
    let a = put_records(&kinesis, &stream, records("a", 10, 4)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (mut sluice, path) = start(dir.path(), "run1", &yaml("1")).await;
    let b = put_records(&kinesis, &stream, records("b", 10, 4)).await;
    delivers_exactly(&sink, "1", &b).await;
    sluice
        .wait_checkpoint("caught up", "m", &b[0].shard, &b.last().unwrap().seq)
        .await;
    assert_eq!(sluice.terminate().await, 0);

    // From the oldest record: the shard is cleared and the recorded first start moved back.
    let out = cp("reset", &path).to("trim-horizon").ok().await;
    assert!(out.contains("first start: moved back"), "{out}");
    let listed = cp("list", &path).ok().await;
    assert!(
        listed.contains("first started: 1970-01-01T00:00:01Z"),
        "{listed}"
    );
    let all: Vec<Written> = a.iter().chain(&b).cloned().collect();
    let (mut sluice, _) = start(dir.path(), "run2", &yaml("2")).await;
    delivers_exactly(&sink, "2", &all).await;
    sluice
        .wait_checkpoint("caught up", "m", &b[0].shard, &b.last().unwrap().seq)
        .await;
    assert_eq!(sluice.terminate().await, 0);

    // The plain reset of a LATEST mapping: at the shard's last record now.
    let out = cp("reset", &path).ok().await;
    assert!(
        out.contains(&format!("→ {}", b.last().unwrap().seq)),
        "{out}"
    );
}

/// The DynamoDB sequence numbers of the records run `run` sent, in order.
fn ddb_sent(sink: &Sink, run: &str) -> Vec<String> {
    sink.accepted
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.run == run)
        .flat_map(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            v["Records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    e["dynamodb"]["SequenceNumber"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Waits until run `run` has sent at least `n` DynamoDB records.
async fn ddb_sends(sink: &Sink, run: &str, n: usize) {
    let what = format!("run {run} to send {n} records");
    wait_for(&what, Duration::from_secs(60), || async {
        (ddb_sent(sink, run).len() >= n).then_some(())
    })
    .await
}

/// Starts run `run` of `yaml` (`dir/run<run>.yaml`) and waits until it has sent `n` records and
/// checkpointed `last` on `shard`.
async fn ddb_replay(
    dir: &Path,
    yaml: &str,
    sink: &Sink,
    run: &str,
    n: usize,
    shard: &str,
    last: &str,
) -> Sluice {
    let (sluice, _) = start(dir, &format!("run{run}"), yaml).await;
    ddb_sends(sink, run, n).await;
    sluice.wait_checkpoint("caught up", "m", shard, last).await;
    sluice
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_streams_replay_from_a_timestamp_and_a_sequence_number() {
    use aws_sdk_dynamodb::types::{AttributeValue, StreamViewType};
    let tb = testbed();
    let ddb = dynamodb(&tb);
    let table = unique("cli-table");
    let arn = create_table(&ddb, &table, StreamViewType::NewImage).await;
    let sink = Sink::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let cp_dir = dir.path().join("cp");
    let yaml = |run: &str| {
        config(
            &tb,
            &cp_dir,
            free_port(),
            &mapping(&format!("'{arn}'"), &sink.url, run),
        )
    };
    let put = |id: usize| {
        ddb.put_item()
            .table_name(&table)
            .item("Id", AttributeValue::N(id.to_string()))
            .send()
    };
    for id in 0..5 {
        put(id).await.expect("PutItem");
    }
    // DynamoDB Streams times records to the second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let between = time::OffsetDateTime::now_utc().unix_timestamp();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for id in 5..10 {
        put(id).await.expect("PutItem");
    }
    let (mut sluice, path) = start(dir.path(), "run1", &yaml("1")).await;
    ddb_sends(&sink, "1", 10).await;
    let first = ddb_sent(&sink, "1");
    assert_eq!(first.len(), 10);
    let status = sluice.status().await.unwrap();
    let shard = status["mappings"]["m"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    sluice
        .wait_checkpoint("caught up", "m", &shard, &first[9])
        .await;
    assert_eq!(sluice.terminate().await, 0);

    let out = cp("set", &path).timestamp(&between.to_string()).ok().await;
    assert!(
        out.contains(&format!("{shard}: {} → {}", first[9], first[4])),
        "{out}"
    );
    let mut sluice = ddb_replay(dir.path(), &yaml("2"), &sink, "2", 5, &shard, &first[9]).await;
    assert_eq!(ddb_sent(&sink, "2"), first[5..]);
    assert_eq!(sluice.terminate().await, 0);

    cp("set", &path).sequence(&shard, &first[7]).ok().await;
    let mut sluice = ddb_replay(dir.path(), &yaml("3"), &sink, "3", 2, &shard, &first[9]).await;
    assert_eq!(ddb_sent(&sink, "3"), first[8..]);
    assert_eq!(sluice.terminate().await, 0);
}
