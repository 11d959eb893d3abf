//! The idle rows: N caught-up shards polled once a second by sluice, by a bare aws-sdk-kinesis
//! loop, and by the same loop with each GetRecords signed and sent by hand (the floor under the
//! SDK's per-call cost); CPU, RSS and polls over the measurement window.

use super::*;

/// sluice with one mapping on the stream, from LATEST.
pub async fn sluice(url: &str, shards: u64) -> Value {
    let (stop, _dir, run) = start_sluice(
        url,
        &format!(
            "    EventSourceArn: {}\n    StartingPosition: LATEST\n",
            fake::stream_arn()
        ),
    );
    let v = idle_window(url, shards).await;
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), run).await;
    v
}

/// The bare idle loop: per shard, GetShardIterator(LATEST), then one GetRecords a second.
pub async fn bare(url: &str, shards: u64) -> Value {
    idle_loop(url, shards, false).await
}

/// The floor under the SDK's per-call cost: the bare idle loop with each GetRecords built, signed
/// (aws-sigv4, as the SDK signs) and sent (reqwest over hyper) by hand, its answer parsed with
/// serde_json. Not a client sluice has: a measure of what one would save.
pub async fn by_hand(url: &str, shards: u64) -> Value {
    idle_loop(url, shards, true).await
}

async fn idle_loop(url: &str, shards: u64, by_hand: bool) -> Value {
    let client = kinesis_client(url);
    let http = reqwest::Client::new();
    let stop = tokio_util::sync::CancellationToken::new();
    for i in 0..shards {
        let (c, http, stop, url) = (client.clone(), http.clone(), stop.clone(), url.to_string());
        tokio::spawn(async move {
            let mut it = iterator(&c, i, aws_sdk_kinesis::types::ShardIteratorType::Latest).await;
            while !stop.is_cancelled() {
                let at = tokio::time::Instant::now();
                let next = if by_hand {
                    raw_get_records(&http, &url, &it).await
                } else {
                    c.get_records()
                        .stream_arn(fake::stream_arn())
                        .shard_iterator(&it)
                        .limit(10_000)
                        .send()
                        .await
                        .ok()
                        .and_then(|out| out.next_shard_iterator)
                };
                if let Some(next) = next {
                    it = next;
                }
                tokio::time::sleep_until(at + Duration::from_secs(1)).await;
            }
        });
    }
    let v = idle_window(url, shards).await;
    stop.cancel();
    v
}

/// One GetRecords by hand; the next iterator.
async fn raw_get_records(http: &reqwest::Client, url: &str, it: &str) -> Option<String> {
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    let body =
        serde_json::json!({"StreamARN": fake::stream_arn(), "ShardIterator": it, "Limit": 10000})
            .to_string();
    let identity =
        aws_credential_types::Credentials::new("bench", "bench", None, None, "bench").into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(fake::REGION)
        .name("kinesis")
        .time(std::time::SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .ok()?
        .into();
    let headers = [
        ("content-type", "application/x-amz-json-1.1"),
        ("x-amz-target", "Kinesis_20131202.GetRecords"),
    ];
    let signable = SignableRequest::new(
        "POST",
        url,
        headers.into_iter(),
        SignableBody::Bytes(body.as_bytes()),
    )
    .ok()?;
    let (instructions, _) = sign(signable, &params).ok()?.into_parts();
    let mut request = http::Request::builder().method("POST").uri(url);
    for (k, v) in headers {
        request = request.header(k, v);
    }
    let mut request = request.body(body).ok()?;
    instructions.apply_to_request_http1x(&mut request);
    let answer = http
        .execute(reqwest::Request::try_from(request).ok()?)
        .await
        .ok()?
        .bytes()
        .await
        .ok()?;
    #[derive(serde::Deserialize)]
    struct Page {
        #[serde(rename = "NextShardIterator")]
        next: Option<String>,
    }
    serde_json::from_slice::<Page>(&answer).ok()?.next
}

/// After every shard was read twice: CPU, RSS and polls over the window.
async fn idle_window(url: &str, shards: u64) -> Value {
    // Warm-up: every shard read at least twice.
    let base = stat(url, "get_records").await;
    let warm = wait_for(
        url,
        "get_records",
        base + 2 * shards,
        Duration::from_secs(120),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (c0, t0, g0) = (cpu(), Instant::now(), stat(url, "get_records").await);
    tokio::time::sleep(window()).await;
    let (c1, t1, g1) = (cpu(), Instant::now(), stat(url, "get_records").await);
    let rss = rss_mb();
    let secs = (t1 - t0).as_secs_f64();
    let cpu_s = (c1 - c0).as_secs_f64();
    let polls = (g1 - g0) as f64;
    serde_json::json!({"warm": warm, "cpu_pct": 100.0 * cpu_s / secs, "rss_mb": rss,
        "polls_per_s": polls / secs, "us_per_poll": cpu_s * 1e6 / polls.max(1.0)})
}
