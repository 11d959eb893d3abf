//! sluice end to end against a fast fake AWS endpoint ([`fake`]), each row beside its goal and,
//! where one exists, a bare AWS SDK client on the same endpoint in the same run. A measurement,
//! not a test. Run: `cargo bench --bench endtoend` (all rows) or
//! `cargo bench --bench endtoend -- idle drain sqs latency` (some). Sizes: `IDLE_SHARDS` (default
//! `1000,10000`), `DRAIN_RECORDS` (per shard, default 5000), `SQS_POLLERS` (default `2,10,100`),
//! `WINDOW_S` (measurement window, default 15), `LATENCY_RECORDS` (per mode, default 50).
//!
//! The parent process serves the fake endpoint and the HTTP function; every measured party (sluice
//! via `sluice::app::run`, or the bare SDK reader) runs in a child process of its own (this binary
//! again, `--child <row>`), so that its CPU time (/proc/self/stat, after a warm-up) and RSS
//! (VmRSS) are its own. sluice talks to the fake through its config's `endpoints` only.

mod fake;
#[path = "endtoend/idle.rs"]
mod idle;

/// As the sluice binary: the figures are those of the allocator sluice runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

fn env_list(k: &str, default: &str) -> Vec<u64> {
    std::env::var(k)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

fn window() -> Duration {
    Duration::from_secs(env_list("WINDOW_S", "15")[0])
}

/// This process's user+system CPU time.
fn cpu() -> Duration {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = s.rsplit_once(')').map(|x| x.1).unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the ')'.
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux.
}

fn rss_mb() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        return child(&args[i + 1], &args[i + 2], &args[i + 3..]);
    }
    if !args.iter().any(|a| a == "--bench") {
        println!("(not run: `cargo bench --bench endtoend`; a debug build's figures mean nothing)");
        return;
    }
    let rows: Vec<&str> = args
        .iter()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .map(String::as_str)
        .collect();
    let want = |r: &str| rows.is_empty() || rows.contains(&r);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let fake = rt.block_on(fake::start());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "sluice end to end against the fake endpoint {} ({} cores, load {})",
        fake.url(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("| row | figure | goal | baseline | ratio |\n|---|---|---|---|---|");
    if want("idle") {
        for n in env_list("IDLE_SHARDS", "1000,10000") {
            fake.set_stream(fake::Kinesis {
                shards: n as usize,
                backlog: 0,
                size: 0,
            });
            let r = run_child(&fake.url(), "idle", &[n.to_string()]);
            let b = run_child(&fake.url(), "idle-bare", &[n.to_string()]);
            let raw = run_child(&fake.url(), "idle-raw", &[n.to_string()]);
            let goal = if n <= 1000 {
                "≤ 5 % of a core, ≤ 128 MB"
            } else {
                "runs; no worse than linear"
            };
            println!(
                "| {n} idle shards (1 s caught-up polling) | {:.1} % of a core, {:.0} MB RSS; {:.0} polls/s, {:.0} µs CPU/poll | {goal} | bare SDK loop: {:.1} % of a core, {:.0} MB; {:.0} µs CPU/poll | {:.1} |",
                r["cpu_pct"].as_f64().unwrap_or(0.0),
                r["rss_mb"].as_f64().unwrap_or(0.0),
                r["polls_per_s"].as_f64().unwrap_or(0.0),
                r["us_per_poll"].as_f64().unwrap_or(0.0),
                b["cpu_pct"].as_f64().unwrap_or(0.0),
                b["rss_mb"].as_f64().unwrap_or(0.0),
                b["us_per_poll"].as_f64().unwrap_or(0.0),
                r["us_per_poll"].as_f64().unwrap_or(0.0) / b["us_per_poll"].as_f64().unwrap_or(1.0).max(0.001),
            );
            println!(
                "| (floor) {n} shards, the same GetRecords signed and sent by hand | {:.1} % of a core, {:.0} MB RSS; {:.0} polls/s, {:.0} µs CPU/poll | — | SDK loop above | {:.2} |",
                raw["cpu_pct"].as_f64().unwrap_or(0.0),
                raw["rss_mb"].as_f64().unwrap_or(0.0),
                raw["polls_per_s"].as_f64().unwrap_or(0.0),
                raw["us_per_poll"].as_f64().unwrap_or(0.0),
                raw["us_per_poll"].as_f64().unwrap_or(0.0) / b["us_per_poll"].as_f64().unwrap_or(1.0).max(0.001),
            );
        }
    }
    if want("drain") {
        let per_shard = env_list("DRAIN_RECORDS", "5000")[0];
        let mut rates = Vec::new();
        for who in ["bare", "sluice"] {
            fake.set_stream(fake::Kinesis {
                shards: 64,
                backlog: per_shard,
                size: 1024,
            });
            rates.push(run_child(
                &fake.url(),
                &format!("drain-{who}"),
                &[per_shard.to_string()],
            ));
        }
        let (bare, sl) = (&rates[0], &rates[1]);
        let rate = |v: &Value| v["records_per_s"].as_f64().unwrap_or(0.0);
        println!(
            "| drain 64 shards × {per_shard} × 1 KiB, BatchSize 100 | {:.0} records/s ({:.1} s) | ≥ 0.9 × bare | bare aws-sdk-kinesis reader: {:.0} records/s ({:.1} s) | {:.2} |",
            rate(sl),
            sl["seconds"].as_f64().unwrap_or(0.0),
            rate(bare),
            bare["seconds"].as_f64().unwrap_or(0.0),
            rate(sl) / rate(bare).max(1.0)
        );
        println!(
            "| CPU per record end to end (same drain) | {:.2} µs/record | ≤ 2 µs | bare reader: {:.2} µs/record | {:.1} |",
            sl["us_per_record"].as_f64().unwrap_or(0.0),
            bare["us_per_record"].as_f64().unwrap_or(0.0),
            sl["us_per_record"].as_f64().unwrap_or(0.0)
                / bare["us_per_record"].as_f64().unwrap_or(1.0).max(0.001)
        );
    }
    if want("sqs") {
        for c in env_list("SQS_POLLERS", "2,10,100") {
            let bare = run_child(&fake.url(), "sqs-bare", &[c.to_string()]);
            let sl = run_child(&fake.url(), "sqs-sluice", &[c.to_string()]);
            let rate = |v: &Value| v["messages_per_s"].as_f64().unwrap_or(0.0);
            println!(
                "| SQS, MaximumConcurrency {c}, 1 KiB, BatchSize 10 | {:.0} messages/s, {:.1} µs CPU/message | figure vs bare | bare receive/delete loop × {c}: {:.0} messages/s, {:.1} µs CPU/message | {:.2} |",
                rate(&sl),
                sl["us_per_message"].as_f64().unwrap_or(0.0),
                rate(&bare),
                bare["us_per_message"].as_f64().unwrap_or(0.0),
                rate(&sl) / rate(&bare).max(1.0)
            );
        }
    }
    if want("latency") {
        let n = env_list("LATENCY_RECORDS", "50")[0];
        let modes = ["fan-out", "1000", "200"].map(|mode| {
            fake.set_stream(fake::Kinesis {
                shards: 1,
                backlog: 0,
                size: 1024,
            });
            run_child(&fake.url(), "latency", &[mode.to_string(), n.to_string()])
        });
        let ms = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        let figure = |v: &Value| {
            format!(
                "p50 {:.1} ms, p99 {:.1} ms, mean {:.1} ms, max {:.1} ms ({} of {n} invoked)",
                ms(v, "p50_ms"),
                ms(v, "p99_ms"),
                ms(v, "mean_ms"),
                ms(v, "max_ms"),
                v["records"]
            )
        };
        for (v, label) in modes.iter().zip([
            "enhanced fan-out (SubscribeToShard)",
            "polling, caught up every 1 s (default)",
            "polling, `CaughtUpPollingIntervalMillis: 200`",
        ]) {
            println!(
                "| put→invoke latency, {label}, 1 KiB at random gaps of 300–900 ms | {} | fan-out well under polling | polling every 200 ms: p50 {:.1} ms | {:.2} |",
                figure(v),
                ms(&modes[2], "p50_ms"),
                ms(v, "p50_ms") / ms(&modes[2], "p50_ms")
            );
        }
    }
    rt.shutdown_timeout(Duration::from_secs(1));
}

/// Runs `row` in a child process and returns the JSON it printed last.
fn run_child(url: &str, row: &str, extra: &[String]) -> Value {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .arg("--child")
        .arg(row)
        .arg(url)
        .args(extra)
        .env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env("AWS_REGION", fake::REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("running the child");
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().rev().find(|l| l.starts_with('{'));
    match last.and_then(|l| serde_json::from_str(l).ok()) {
        Some(v) => v,
        None => {
            eprintln!(
                "row {row} failed: {}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            Value::Null
        }
    }
}

fn child(row: &str, url: &str, extra: &[String]) {
    if std::env::var("SLUICE_LOG").is_ok() {
        sluice::telemetry::init_logging(sluice::telemetry::LogFormat::Text);
    }
    let arg = |i: usize| {
        extra
            .get(i)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let v = rt.block_on(async {
        match row {
            "idle" => idle::sluice(url, arg(0)).await,
            "idle-bare" => idle::bare(url, arg(0)).await,
            "idle-raw" => idle::by_hand(url, arg(0)).await,
            "drain-sluice" => drain_sluice(url, arg(0)).await,
            "drain-bare" => drain_bare(url, arg(0)).await,
            "sqs-sluice" => sqs_sluice(url, arg(0)).await,
            "sqs-bare" => sqs_bare(url, arg(0)).await,
            "latency" => {
                latency(url, extra.first().map_or("fan-out", String::as_str), arg(1)).await
            }
            _ => panic!("no row {row}"),
        }
    });
    println!("{v}");
}

async fn stats(url: &str) -> Value {
    // One client for the whole run: a new one per call loads the root certificates each time, in
    // the measured child's CPU (2 % of sluice's in the drain).
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    let body = CLIENT
        .get_or_init(reqwest::Client::new)
        .get(format!("{url}/stats"))
        .send()
        .await
        .expect("GET /stats")
        .text()
        .await
        .unwrap();
    serde_json::from_str(&body).unwrap()
}

async fn stat(url: &str, k: &str) -> u64 {
    stats(url).await[k].as_u64().unwrap_or(0)
}

/// Starts sluice in this process with one mapping (`mapping`: its YAML lines, indented 4).
fn start_sluice(
    url: &str,
    mapping: &str,
) -> (
    tokio_util::sync::CancellationToken,
    tempfile::TempDir,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "region: {}\nendpoints:\n  kinesis: {url}\n  sqs: {url}\ncheckpoint_dir: {}\nadmin_listen: 127.0.0.1:0\nmappings:\n  - Name: bench\n{mapping}    Http:\n      Url: {url}/fn\n",
        fake::REGION,
        dir.path().display()
    );
    let cfg = sluice::config::parse_str(&yaml).expect("a valid config");
    let stop = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(sluice::app::run(cfg, stop.clone()));
    (stop, dir, run)
}

async fn wait_for(url: &str, k: &str, at_least: u64, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while stat(url, k).await < at_least {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    true
}

/// Shard `i`'s iterator of type `kind`.
async fn iterator(
    c: &aws_sdk_kinesis::Client,
    i: u64,
    kind: aws_sdk_kinesis::types::ShardIteratorType,
) -> String {
    c.get_shard_iterator()
        .stream_arn(fake::stream_arn())
        .shard_id(format!("shardId-{i:012}"))
        .shard_iterator_type(kind)
        .send()
        .await
        .expect("GetShardIterator")
        .shard_iterator
        .unwrap()
}

async fn drain_sluice(url: &str, per_shard: u64) -> Value {
    let total = 64 * per_shard;
    let (c0, t0) = (cpu(), Instant::now());
    let (stop, _dir, run) = start_sluice(
        url,
        &format!(
            "    EventSourceArn: {}\n    StartingPosition: TRIM_HORIZON\n    BatchSize: 100\n",
            fake::stream_arn()
        ),
    );
    let done = wait_for(url, "invoked_records", total, Duration::from_secs(600)).await;
    let (c1, t1) = (cpu(), Instant::now());
    let rss = rss_mb();
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), run).await;
    let secs = (t1 - t0).as_secs_f64();
    serde_json::json!({"done": done, "seconds": secs, "records_per_s": total as f64 / secs,
        "us_per_record": (c1 - c0).as_secs_f64() * 1e6 / total as f64, "rss_mb": rss})
}

fn kinesis_client(url: &str) -> aws_sdk_kinesis::Client {
    let conf = aws_sdk_kinesis::Config::builder()
        .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
        .region(aws_sdk_kinesis::config::Region::new(fake::REGION))
        .credentials_provider(aws_sdk_kinesis::config::Credentials::for_tests())
        .endpoint_url(url)
        .build();
    aws_sdk_kinesis::Client::from_conf(conf)
}

/// The bare reader: per shard, GetShardIterator(TRIM_HORIZON) then GetRecords(Limit 10,000) at
/// once, again and again, until the shard's records are read (no pacing, no processing beyond
/// the SDK's own decoding).
async fn drain_bare(url: &str, per_shard: u64) -> Value {
    let client = kinesis_client(url);
    let (c0, t0) = (cpu(), Instant::now());
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let c = client.clone();
            tokio::spawn(async move {
                let mut it = iterator(
                    &c,
                    i,
                    aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon,
                )
                .await;
                let mut n = 0u64;
                let mut bytes = 0usize;
                while n < per_shard {
                    let out = c
                        .get_records()
                        .stream_arn(fake::stream_arn())
                        .shard_iterator(it)
                        .limit(10_000)
                        .send()
                        .await
                        .expect("GetRecords");
                    n += out.records().len() as u64;
                    bytes += out
                        .records()
                        .iter()
                        .map(|r| r.data().as_ref().len())
                        .sum::<usize>();
                    it = out.next_shard_iterator.unwrap();
                }
                std::hint::black_box(bytes);
                n
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let (c1, t1) = (cpu(), Instant::now());
    let secs = (t1 - t0).as_secs_f64();
    serde_json::json!({"seconds": secs, "records_per_s": total as f64 / secs,
        "us_per_record": (c1 - c0).as_secs_f64() * 1e6 / total as f64, "rss_mb": rss_mb()})
}

/// Messages deleted per second over the window, and this process's CPU per message.
async fn sqs_window(url: &str) -> Value {
    let (c0, t0, d0) = (cpu(), Instant::now(), stat(url, "messages_deleted").await);
    tokio::time::sleep(window()).await;
    let (c1, t1, d1) = (cpu(), Instant::now(), stat(url, "messages_deleted").await);
    let n = (d1 - d0) as f64;
    serde_json::json!({"messages_per_s": n / (t1 - t0).as_secs_f64(),
        "us_per_message": (c1 - c0).as_secs_f64() * 1e6 / n.max(1.0), "rss_mb": rss_mb()})
}

async fn sqs_sluice(url: &str, pollers: u64) -> Value {
    let (stop, _dir, run) = start_sluice(
        url,
        &format!(
            "    EventSourceArn: {}\n    BatchSize: 10\n    ScalingConfig:\n      MaximumConcurrency: {pollers}\n",
            fake::queue_arn()
        ),
    );
    // sluice starts 5 pollers and adds 5 a second while batches come full.
    tokio::time::sleep(Duration::from_secs(pollers / 5 + 3)).await;
    let v = sqs_window(url).await;
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), run).await;
    v
}

/// The bare loop: `pollers` tasks, each ReceiveMessage (10, long poll) then DeleteMessageBatch of
/// what it received, again and again.
async fn sqs_bare(url: &str, pollers: u64) -> Value {
    let conf = aws_sdk_sqs::Config::builder()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .region(aws_sdk_sqs::config::Region::new(fake::REGION))
        .credentials_provider(aws_sdk_sqs::config::Credentials::for_tests())
        .endpoint_url(url)
        .build();
    let client = aws_sdk_sqs::Client::from_conf(conf);
    let queue = format!("{url}/{}/{}", fake::ACCOUNT, fake::QUEUE);
    let stop = tokio_util::sync::CancellationToken::new();
    for _ in 0..pollers {
        let (c, q, stop) = (client.clone(), queue.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let Ok(out) = c
                    .receive_message()
                    .queue_url(&q)
                    .max_number_of_messages(10)
                    .wait_time_seconds(20)
                    .send()
                    .await
                else {
                    continue;
                };
                let entries = out.messages().iter().enumerate().map(|(i, m)| {
                    aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(m.receipt_handle().unwrap_or_default())
                        .build()
                        .unwrap()
                });
                let _ = c
                    .delete_message_batch()
                    .queue_url(&q)
                    .set_entries(Some(entries.collect()))
                    .send()
                    .await;
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let v = sqs_window(url).await;
    stop.cancel();
    v
}

/// Put→invoke latency: sluice reads a one-shard stream from LATEST, with enhanced fan-out (`mode`
/// `fan-out`) or polling at a caught-up interval of `mode` ms; `n` records are put one at a time
/// at random gaps of 300–900 ms (no phase lock with the poll timer). The fake measures each from
/// its PutRecord to the function's request.
async fn latency(url: &str, mode: &str, n: u64) -> Value {
    let arn = fake::stream_arn();
    let source = match mode {
        "fan-out" => format!("    EventSourceArn: {arn}/consumer/bench:1700000000\n"),
        ms => format!("    EventSourceArn: {arn}\n    CaughtUpPollingIntervalMillis: {ms}\n"),
    };
    let (stop, _dir, run) = start_sluice(url, &format!("{source}    StartingPosition: LATEST\n"));
    let (ready, at) = match mode {
        "fan-out" => ("subscriptions", 1),
        _ => ("get_records", 2),
    };
    assert!(
        wait_for(url, ready, at, Duration::from_secs(60)).await,
        "sluice read the shard"
    );
    let client = kinesis_client(url);
    let put = || {
        client
            .put_record()
            .stream_arn(&arn)
            .partition_key("pk")
            .data(aws_sdk_kinesis::primitives::Blob::new(vec![b'x'; 1024]))
            .send()
    };
    // A first record, not measured, shows the reader is past where it started.
    put().await.expect("PutRecord");
    assert!(
        wait_for(url, "invoked_records", 1, Duration::from_secs(60)).await,
        "first record"
    );
    for _ in 0..n {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(300..900))).await;
        put().await.expect("PutRecord");
    }
    let all = wait_for(url, "invoked_records", n + 1, Duration::from_secs(30)).await;
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), run).await;
    let body = reqwest::get(format!("{url}/latencies"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut us: Vec<u64> = serde_json::from_str(&body).unwrap_or_default();
    if !us.is_empty() {
        us.remove(0);
    }
    us.sort_unstable();
    let at = |q: f64| us.get(((us.len() as f64 * q) as usize).min(us.len().saturating_sub(1)));
    let ms = |v: Option<&u64>| v.map_or(f64::NAN, |v| *v as f64 / 1000.0);
    serde_json::json!({"all": all, "records": us.len(), "p50_ms": ms(at(0.5)), "p99_ms": ms(at(0.99)),
        "max_ms": ms(us.last()), "mean_ms": us.iter().sum::<u64>() as f64 / us.len().max(1) as f64 / 1000.0})
}
