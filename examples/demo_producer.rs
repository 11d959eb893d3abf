//! Demo producer for the quick start: creates a 2-shard Kinesis stream (if missing) on the endpoint
//! in AWS_ENDPOINT_URL_KINESIS and writes 10 small JSON records a second until stopped.

use aws_sdk_kinesis::primitives::Blob;
use std::time::Duration;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let stream = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "sluice-demo".into());
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region("us-east-1")
        .load()
        .await;
    let client = aws_sdk_kinesis::Client::new(&conf);
    if client
        .describe_stream_summary()
        .stream_name(&stream)
        .send()
        .await
        .is_err()
    {
        client
            .create_stream()
            .stream_name(&stream)
            .shard_count(2)
            .send()
            .await?;
    }
    loop {
        let s = client
            .describe_stream_summary()
            .stream_name(&stream)
            .send()
            .await?;
        if s.stream_description_summary()
            .map(|d| d.stream_status().as_str())
            == Some("ACTIVE")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("demo_producer: writing 10 records/s to {stream}");
    for i in 0u64.. {
        let data = format!("{{\"order\":{i},\"amount\":{}}}", (i * 37) % 1000);
        client
            .put_record()
            .stream_name(&stream)
            .partition_key(format!("customer-{}", i % 13))
            .data(Blob::new(data))
            .send()
            .await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
