//! Hot reload against the emulators: a Kinesis mapping and an SQS mapping run; SIGHUP with a new
//! file adds a mapping (it delivers), changes one (it restarts from its checkpoint with the new
//! BatchSize, nothing lost or repeated) while the other is never restarted, removes one (it stops,
//! its checkpoint stays: added back, it resumes after it), and a bad file or a restart-only change
//! is refused while the old mappings keep running. `--watch-config` reloads on a file change, and
//! SIGTERM during a reload's drain still shuts down within the grace period.

mod common;
mod sqs_support;

use common::sink::Sink;
use common::sluice::{config, free_port, Sluice};
use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

fn kinesis_mapping(name: &str, arn: &str, url: &str, batch: usize) -> String {
    format!(
        "  - Name: {name}\n    EventSourceArn: {arn}\n    StartingPosition: TRIM_HORIZON\n    BatchSize: {batch}\n    Http:\n      Url: {url}\n"
    )
}

fn queue_mapping(name: &str, arn: &str, url: &str) -> String {
    sqs_support::mapping(name, arn, url, "")
}

/// The SQS bodies a sink accepted.
fn bodies(sink: &Sink) -> Vec<String> {
    sqs_support::bodies(&sink.accepted_entries())
}

fn keys(v: &[Written]) -> BTreeSet<(String, String)> {
    v.iter().map(|w| (w.shard.clone(), w.seq.clone())).collect()
}

async fn send(client: &aws_sdk_sqs::Client, url: &str, tag: &str, n: usize) -> Vec<String> {
    let all: Vec<(String, Option<String>)> = (0..n).map(|i| (format!("{tag}-{i}"), None)).collect();
    sqs_support::send(client, url, &all).await;
    all.into_iter().map(|(b, _)| b).collect()
}

/// Waits until `sink` has accepted every body of `sent`.
async fn wait_bodies(what: &str, sink: &Sink, sent: &[String]) {
    wait_for(what, Duration::from_secs(60), || async {
        let got: BTreeSet<String> = bodies(sink).into_iter().collect();
        sent.iter().all(|b| got.contains(b)).then_some(())
    })
    .await
}

/// Waits until `/status` shows `generation` and a last reload with `result`; returns `config`.
async fn wait_reload(sluice: &Sluice, generation: u64, result: &str) -> Value {
    wait_for(
        &format!("config generation {generation}, last reload {result}"),
        Duration::from_secs(60),
        || async {
            let c = sluice.status().await?["config"].clone();
            (c["generation"] == generation && c["last_reload"]["result"] == result).then_some(c)
        },
    )
    .await
}

/// Whether a log line is about mapping `name` (a field shown as `mapping=q` or `mapping="q"`).
fn about(line: &str, name: &str) -> bool {
    line.split_whitespace()
        .any(|w| w == format!("mapping={name}") || w == format!("mapping=\"{name}\""))
}

/// Writes `mappings` as the running instance's config file and sends SIGHUP.
fn reload_with(sluice: &Sluice, path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    sluice.hup();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_starts_stops_and_restarts_mappings_and_refuses_a_bad_config() {
    let tb = testbed();
    let kinesis = kinesis(&tb).await;
    let sqs = sqs(&tb);
    let stream = unique("reload");
    let stream_arn = create_stream(&kinesis, &stream, 2).await;
    let (q_url, q_arn) = create_queue(&sqs, &unique("reload-q"), &[]).await;
    let (q2_url, q2_arn) = create_queue(&sqs, &unique("reload-q2"), &[]).await;
    let (sk, sq, sq2) = (Sink::ok().await, Sink::ok().await, Sink::ok().await);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = |mappings: &str| config(&tb, &dir.path().join("cp"), port, mappings);
    let kin = |batch| kinesis_mapping("kin", &stream_arn, &sk.url, batch);
    let q = queue_mapping("q", &q_arn, &sq.url);
    let q2 = queue_mapping("q2", &q2_arn, &sq2.url);
    let path = dir.path().join("run.yaml");

    let mut sluice = Sluice::start(dir.path(), "run", &cfg(&format!("{}{q}", kin(100)))).await;
    sluice.wait_ready().await;
    let first = sluice.status().await.unwrap()["config"].clone();
    assert_eq!(first["generation"], 1, "{first}");
    assert!(first["last_reload"].is_null(), "{first}");
    let q_started = first["mappings"]["q"]["started_at"].clone();
    assert!(q_started.is_string(), "{first}");

    let a = put_records(&kinesis, &stream, records("a", 50, 13)).await;
    let qa = send(&sqs, &q_url, "q-a", 10).await;
    wait_for("batch a delivered", Duration::from_secs(60), || async {
        (keys(&sk.delivered()).len() >= a.len()).then_some(())
    })
    .await;
    wait_bodies("q-a delivered", &sq, &qa).await;

    // 1. Change kin's BatchSize and add q2: kin restarts from its checkpoint, q2 starts, q stays.
    reload_with(&sluice, &path, &cfg(&format!("{}{q}{q2}", kin(7))));
    let c = wait_reload(&sluice, 2, "applied").await;
    assert_eq!(c["mappings"]["q"]["generation"], 1, "q untouched: {c}");
    assert_eq!(c["mappings"]["q"]["started_at"], q_started, "{c}");
    assert_eq!(c["mappings"]["kin"]["generation"], 2, "{c}");
    assert_eq!(c["mappings"]["q2"]["generation"], 2, "{c}");
    let b = put_records(&kinesis, &stream, records("b", 50, 13)).await;
    let qb = send(&sqs, &q_url, "q-b", 10).await;
    let q2b = send(&sqs, &q2_url, "q2-b", 10).await;
    wait_for("batch b delivered", Duration::from_secs(60), || async {
        (keys(&sk.delivered()).len() >= a.len() + b.len()).then_some(())
    })
    .await;
    wait_bodies("q-b delivered", &sq, &qb).await;
    wait_bodies("q2-b delivered by the added mapping", &sq2, &q2b).await;
    let delivered = sk.delivered();
    let written: Vec<Written> = a.iter().chain(&b).cloned().collect();
    assert_eq!(keys(&delivered), keys(&written), "every record delivered");
    assert_eq!(
        delivered.len(),
        written.len(),
        "none twice: the restart resumed after the checkpoint"
    );
    assert_ordered("kin", &delivered);
    let b_set = keys(&b);
    for req in sk.accepted.lock().unwrap().iter() {
        if req
            .records
            .iter()
            .any(|r| b_set.contains(&(r.shard.clone(), r.seq.clone())))
        {
            assert!(
                req.records.len() <= 7,
                "the new BatchSize applies: {}",
                req.records.len()
            );
        }
    }
    let log = sluice.log_text();
    let q_runs = log
        .lines()
        .filter(|l| l.contains("queue mapping running") && about(l, "q"))
        .count();
    assert_eq!(q_runs, 1, "q never restarted:\n{log}");

    // 2. Remove kin: it stops; its records wait; it leaves /status and /metrics.
    reload_with(&sluice, &path, &cfg(&format!("{q}{q2}")));
    let c = wait_reload(&sluice, 3, "applied").await;
    assert!(c["mappings"].get("kin").is_none(), "{c}");
    let status = sluice.status().await.unwrap();
    assert!(status["mappings"].get("kin").is_none(), "{status}");
    let (_, metrics) = sluice.get("/metrics").await.unwrap();
    assert!(!metrics.contains("mapping=\"kin\""), "{metrics}");
    assert!(metrics.contains("sluice_config_generation 3"), "{metrics}");
    let c_recs = put_records(&kinesis, &stream, records("c", 30, 13)).await;
    let qc = send(&sqs, &q_url, "q-c", 10).await;
    wait_bodies("q-c delivered while kin is gone", &sq, &qc).await;
    let before = sk.delivered().len();
    assert_eq!(before, written.len(), "a removed mapping delivers nothing");

    // 3. Add kin back: it resumes after its checkpoint.
    reload_with(&sluice, &path, &cfg(&format!("{}{q}{q2}", kin(7))));
    wait_reload(&sluice, 4, "applied").await;
    wait_for("batch c delivered", Duration::from_secs(60), || async {
        (keys(&sk.delivered()).len() >= written.len() + c_recs.len()).then_some(())
    })
    .await;
    let delivered = sk.delivered();
    let all: Vec<Written> = written.iter().chain(&c_recs).cloned().collect();
    assert_eq!(keys(&delivered), keys(&all));
    assert_eq!(
        delivered.len(),
        all.len(),
        "nothing before the checkpoint read again"
    );

    // 4. A bad file is refused, naming the field; the running mappings keep running.
    let bad = cfg(&format!("{}{}    BatchSize: 0\n{q2}", kin(7), q));
    reload_with(&sluice, &path, &bad);
    let c = wait_reload(&sluice, 4, "refused").await;
    let problems = c["last_reload"]["problems"].to_string();
    assert!(problems.contains("mappings[1].BatchSize"), "{c}");
    wait_for("the refusal logged", Duration::from_secs(10), || async {
        let log = sluice.log_text();
        (log.contains("ERROR")
            && log.contains("mappings[1].BatchSize")
            && log.contains("config reload refused"))
        .then_some(())
    })
    .await;
    assert_eq!(
        sluice
            .metric("sluice_config_reloads_total", "result=\"refused\"")
            .await,
        1.0
    );
    assert_eq!(
        sluice
            .metric("sluice_config_reloads_total", "result=\"ok\"")
            .await,
        3.0
    );
    // A restart-only setting is refused too.
    let moved = cfg(&format!("{}{q}{q2}", kin(7))).replace(
        &format!("admin_listen: 127.0.0.1:{port}"),
        &format!("admin_listen: 127.0.0.1:{}", free_port()),
    );
    reload_with(&sluice, &path, &moved);
    wait_for("the second refusal", Duration::from_secs(30), || async {
        (sluice
            .metric("sluice_config_reloads_total", "result=\"refused\"")
            .await
            == 2.0)
            .then_some(())
    })
    .await;
    let c = sluice.status().await.unwrap()["config"].clone();
    assert!(
        c["last_reload"]["problems"][0]
            .as_str()
            .unwrap()
            .starts_with("admin_listen: changed from"),
        "{c}"
    );
    assert_eq!(c["generation"], 4);
    let qd = send(&sqs, &q_url, "q-d", 10).await;
    let d = put_records(&kinesis, &stream, records("d", 20, 13)).await;
    wait_bodies("q-d delivered under the running config", &sq, &qd).await;
    wait_for("batch d delivered", Duration::from_secs(60), || async {
        (keys(&sk.delivered()).len() >= all.len() + d.len()).then_some(())
    })
    .await;
    assert_eq!(sluice.terminate().await, 0, "{}", sluice.log_text());
}

/// `sluice run --watch-config 1` on `config`, written to `dir/run.yaml`.
async fn start_watching(dir: &Path, config: &str) -> Sluice {
    Sluice::start_with(dir, "run", config, &["--watch-config", "1"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_file_reloads_when_it_changes() {
    let tb = testbed();
    let sqs = sqs(&tb);
    let (q_url, q_arn) = create_queue(&sqs, &unique("watch-q"), &[]).await;
    let (q2_url, q2_arn) = create_queue(&sqs, &unique("watch-q2"), &[]).await;
    let (sq, sq2) = (Sink::ok().await, Sink::ok().await);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let q = queue_mapping("q", &q_arn, &sq.url);
    let q2 = queue_mapping("q2", &q2_arn, &sq2.url);
    let cfg = |m: &str| config(&tb, &dir.path().join("cp"), port, m);
    let mut sluice = start_watching(dir.path(), &cfg(&q)).await;
    sluice.wait_ready().await;
    let path = dir.path().join("run.yaml");
    // A comment changes the file, not the config.
    std::fs::write(&path, format!("# edited\n{}", cfg(&q))).unwrap();
    let c = wait_reload(&sluice, 1, "unchanged").await;
    assert_eq!(c["last_reload"]["trigger"], "file");
    std::fs::write(&path, cfg(&format!("{q}{q2}"))).unwrap();
    wait_reload(&sluice, 2, "applied").await;
    let sent = send(&sqs, &q2_url, "w", 10).await;
    wait_bodies("the added mapping delivers", &sq2, &sent).await;
    let sent = send(&sqs, &q_url, "w", 5).await;
    wait_bodies("the first mapping still delivers", &sq, &sent).await;
    assert_eq!(sluice.terminate().await, 0, "{}", sluice.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_reload_still_shuts_down_within_the_grace_period() {
    let tb = testbed();
    let sqs = sqs(&tb);
    let (q_url, q_arn) = create_queue(&sqs, &unique("slow-q"), &[]).await;
    let (_, q2_arn) = create_queue(&sqs, &unique("slow-q2"), &[]).await;
    // A function slower than nothing, faster than the grace period (10 s).
    let slow = Sink::start_slow(Duration::from_secs(6), |_, _| (200, vec![], "{}".into())).await;
    let other = Sink::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = |m: &str| config(&tb, &dir.path().join("cp"), port, m);
    let q = queue_mapping("q", &q_arn, &slow.url);
    let q2 = queue_mapping("q2", &q2_arn, &other.url);
    let mut sluice = Sluice::start(dir.path(), "run", &cfg(&format!("{q}{q2}"))).await;
    sluice.wait_ready().await;
    send(&sqs, &q_url, "slow", 1).await;
    wait_for(
        "the slow invocation in flight",
        Duration::from_secs(30),
        || async { (slow.arrived.load(std::sync::atomic::Ordering::SeqCst) > 0).then_some(()) },
    )
    .await;
    // Remove q: the reload waits for its in-flight invocation; SIGTERM meanwhile.
    reload_with(&sluice, &dir.path().join("run.yaml"), &cfg(&q2));
    wait_for("q stopping", Duration::from_secs(10), || async {
        let log = sluice.log_text();
        log.lines()
            .any(|l| l.contains("stopping the mapping") && about(l, "q"))
            .then_some(())
    })
    .await;
    let started = std::time::Instant::now();
    assert_eq!(sluice.terminate().await, 0, "{}", sluice.log_text());
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "{:?}",
        started.elapsed()
    );
    let log = sluice.log_text();
    assert!(log.contains("shutdown during the config reload"), "{log}");
    // The in-flight message finished: it was deleted, not returned.
    assert_eq!(bodies(&slow), ["slow-0"]);
    assert_eq!(sqs_support::depth(&sqs, &q_url).await, 0);
}

/// `mapping`'s leases in `table`: shard key → owner (`None`: free).
async fn lease_owners(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
    mapping: &str,
) -> std::collections::BTreeMap<String, Option<String>> {
    let out = dynamodb
        .scan()
        .table_name(table)
        .send()
        .await
        .expect("Scan");
    out.items()
        .iter()
        .filter_map(|item| {
            let key = item.get("leaseKey")?.as_s().ok()?;
            let shard = key.strip_prefix(&format!("{mapping}:"))?;
            let owner = item.get("leaseOwner").and_then(|v| v.as_s().ok()).cloned();
            Some((shard.to_string(), owner))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_lease_table_a_removed_mapping_releases_its_leases_and_takes_them_again_when_added_back(
) {
    use common::sluice::{coordinated_config, Coordination};
    let tb = testbed();
    let kinesis = kinesis(&tb).await;
    let sqs = sqs(&tb);
    let dynamodb = dynamodb(&tb);
    let stream = unique("reload-co");
    let stream_arn = create_stream(&kinesis, &stream, 2).await;
    let (q_url, q_arn) = create_queue(&sqs, &unique("reload-co-q"), &[]).await;
    let (sk, sq) = (Sink::ok().await, Sink::ok().await);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let table = format!("{stream}-leases");
    let co = Coordination {
        dynamodb: &tb.moto,
        lease_table: &table,
        worker_id: "solo",
        lease_duration_seconds: 6,
        lease_scan_interval_millis: 500,
    };
    let cfg = |m: &str| coordinated_config(&tb, &dir.path().join("cp"), port, &co, m);
    let kin = kinesis_mapping("kin", &stream_arn, &sk.url, 100);
    let q = queue_mapping("q", &q_arn, &sq.url);
    let path = dir.path().join("run.yaml");
    let mut sluice = Sluice::start(dir.path(), "run", &cfg(&format!("{kin}{q}"))).await;
    sluice.wait_ready().await;
    let a = put_records(&kinesis, &stream, records("a", 40, 11)).await;
    wait_for("batch a delivered", Duration::from_secs(60), || async {
        (keys(&sk.delivered()).len() >= a.len()).then_some(())
    })
    .await;
    wait_for("both leases held", Duration::from_secs(30), || async {
        let owners = lease_owners(&dynamodb, &table, "kin").await;
        (owners.len() == 2 && owners.values().all(|o| o.as_deref() == Some("solo"))).then_some(())
    })
    .await;

    // Removed: its leases are released (and stay free: its taker stopped).
    reload_with(&sluice, &path, &cfg(&q));
    wait_reload(&sluice, 2, "applied").await;
    let owners = lease_owners(&dynamodb, &table, "kin").await;
    assert!(owners.values().all(Option::is_none), "{owners:?}");
    let b = put_records(&kinesis, &stream, records("b", 40, 11)).await;
    let sent = send(&sqs, &q_url, "co", 5).await;
    wait_bodies("q runs on", &sq, &sent).await;
    // Several scan intervals later, nobody took them.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let owners = lease_owners(&dynamodb, &table, "kin").await;
    assert!(owners.values().all(Option::is_none), "{owners:?}");
    let status = sluice.status().await.unwrap();
    assert!(status["leases"].get("kin").is_none(), "{status}");
    assert_eq!(sk.delivered().len(), a.len());

    // Added back: the leases are taken again and reading resumes at their checkpoints.
    reload_with(&sluice, &path, &cfg(&format!("{kin}{q}")));
    wait_reload(&sluice, 3, "applied").await;
    wait_for("batch b delivered", Duration::from_secs(60), || async {
        (keys(&sk.delivered()).len() >= a.len() + b.len()).then_some(())
    })
    .await;
    let delivered = sk.delivered();
    let all: Vec<Written> = a.iter().chain(&b).cloned().collect();
    assert_eq!(keys(&delivered), keys(&all));
    assert_eq!(
        delivered.len(),
        all.len(),
        "nothing before the checkpoints read again"
    );
    assert_eq!(sluice.terminate().await, 0, "{}", sluice.log_text());
}
