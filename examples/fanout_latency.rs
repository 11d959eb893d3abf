//! Put→invoke latency on kinesis-local: enhanced fan-out (SubscribeToShard) against polling at the
//! default caught-up interval (1 s) and at `CaughtUpPollingIntervalMillis: 200`. For each mode it
//! creates a one-shard stream, runs sluice in-process with an HTTP target served here, puts one
//! record at a time at random gaps of 300–900 ms, and measures from PutRecord's answer to the
//! request reaching the target. Prints p50, p99, mean and max per mode. A measurement, not a test.
//!
//! Run (the test bed started, see testbed/testbed.sh):
//! `source .testbed/env && cargo run --release --example fanout_latency [records per mode]`

use aws_sdk_kinesis::primitives::Blob;
use base64::Engine;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

type Seen = Arc<Mutex<HashMap<usize, Instant>>>;

fn env(k: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set: source .testbed/env"))
}

async fn target(seen: Seen) -> String {
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move |body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                let at = Instant::now();
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                for r in v["Records"].as_array().into_iter().flatten() {
                    let data = r["kinesis"]["data"].as_str().unwrap_or_default();
                    let raw = base64::engine::general_purpose::STANDARD
                        .decode(data)
                        .unwrap_or_default();
                    if let Ok(i) = String::from_utf8_lossy(&raw).parse::<usize>() {
                        seen.lock().unwrap().entry(i).or_insert(at);
                    }
                }
                "{}"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

async fn stream(client: &aws_sdk_kinesis::Client, name: &str) -> String {
    client
        .create_stream()
        .stream_name(name)
        .shard_count(1)
        .send()
        .await
        .expect("CreateStream");
    loop {
        let d = client
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await
            .unwrap();
        let s = d.stream_description_summary().unwrap();
        if s.stream_status().as_str() == "ACTIVE" {
            return s.stream_arn().to_string();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One mode's latencies, sorted, in ms.
async fn measure(client: &aws_sdk_kinesis::Client, mode: &str, n: usize) -> Vec<f64> {
    let name = format!("latency-{mode}-{}", std::process::id());
    let arn = stream(client, &name).await;
    let (source, extra) = match mode {
        "fan-out" => {
            let c = client
                .register_stream_consumer()
                .stream_arn(&arn)
                .consumer_name("bench")
                .send()
                .await
                .expect("RegisterStreamConsumer");
            (c.consumer().unwrap().consumer_arn().to_string(), "")
        }
        "polling-200ms" => (arn.clone(), "    CaughtUpPollingIntervalMillis: 200\n"),
        _ => (arn.clone(), ""),
    };
    let seen: Seen = Arc::default();
    let url = target(seen.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "region: us-east-1\nendpoints:\n  kinesis: {}\ncheckpoint_dir: {}\nadmin_listen: 127.0.0.1:0\nmappings:\n  - Name: bench\n    EventSourceArn: {source}\n    StartingPosition: TRIM_HORIZON\n    BatchSize: 100\n{extra}    Http:\n      Url: {url}\n",
        env("SLUICE_TEST_KINESIS_ENDPOINT"),
        dir.path().display()
    );
    let cfg = sluice::config::parse_str(&yaml).expect("a valid config");
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(sluice::app::run(cfg, shutdown.clone()));
    // Warm up: the first record is not counted (the subscription or first read starts with it).
    let mut put_at = HashMap::new();
    for i in 0..=n {
        client
            .put_record()
            .stream_name(&name)
            .partition_key("k")
            .data(Blob::new(i.to_string()))
            .send()
            .await
            .expect("PutRecord");
        put_at.insert(i, Instant::now());
        if i == 0 {
            while !seen.lock().unwrap().contains_key(&0) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(fastrand::u64(300..900))).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().unwrap().len() <= n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    let _ = run.await;
    let seen = seen.lock().unwrap();
    let mut ms: Vec<f64> = (1..=n)
        .filter_map(|i| Some((*seen.get(&i)? - put_at[&i]).as_secs_f64() * 1000.0))
        .collect();
    if std::env::var("SHOW").is_ok() {
        println!("{mode}: {ms:.0?}");
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    ms
}

fn pct(v: &[f64], p: f64) -> f64 {
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    sluice::telemetry::init_logging(sluice::telemetry::LogFormat::Text);
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(60);
    let conf = aws_sdk_kinesis::Config::builder()
        .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
        .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_kinesis::config::Credentials::new(
            "test", "test", None, None, "bench",
        ))
        .endpoint_url(env("SLUICE_TEST_KINESIS_ENDPOINT"))
        .build();
    let client = aws_sdk_kinesis::Client::from_conf(conf);
    let modes =
        std::env::var("MODES").unwrap_or_else(|_| "fan-out,polling-1s,polling-200ms".into());
    for mode in modes.split(',') {
        let ms = measure(&client, mode, n).await;
        if ms.is_empty() {
            println!("{mode:>14}: nothing delivered");
            continue;
        }
        let mean = ms.iter().sum::<f64>() / ms.len() as f64;
        println!(
            "{mode:>14}: n={} p50={:.0} ms p99={:.0} ms mean={:.0} ms max={:.0} ms",
            ms.len(),
            pct(&ms, 0.5),
            pct(&ms, 0.99),
            mean,
            ms[ms.len() - 1]
        );
    }
}
