//! `recorder`: appends every record of each Kinesis event it receives to
//! `$SLUICE_RECORDER_DIR/<stream name>.jsonl` (one JSON line per record: shard, sequence number,
//! partition key, data), so a test can check what arrived and in which order. A record whose data is
//! `poison` makes the invocation fail with a function error.
use base64::Engine;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::{json, Value};
use std::io::Write;

async fn handle(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let records = event.payload["Records"].as_array().cloned().unwrap_or_default();
    let mut lines = String::new();
    let mut stream = String::from("unknown");
    for r in &records {
        let arn = r["eventSourceARN"].as_str().unwrap_or_default();
        stream = arn.rsplit('/').next().unwrap_or("unknown").to_string();
        let event_id = r["eventID"].as_str().unwrap_or_default();
        let shard = event_id.split(':').next().unwrap_or_default();
        let k = &r["kinesis"];
        let data = base64::engine::general_purpose::STANDARD
            .decode(k["data"].as_str().unwrap_or_default())
            .unwrap_or_default();
        let data = String::from_utf8_lossy(&data).to_string();
        if data == "poison" {
            return Err("poison record".into());
        }
        lines.push_str(
            &json!({"shard": shard, "seq": k["sequenceNumber"], "key": k["partitionKey"], "data": data})
                .to_string(),
        );
        lines.push('\n');
    }
    let dir = std::env::var("SLUICE_RECORDER_DIR").unwrap_or_else(|_| "/tmp".into());
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(format!("{dir}/{stream}.jsonl"))?;
    file.write_all(lines.as_bytes())?;
    println!("recorder: {} records from {stream}", records.len());
    Ok(json!({"batchItemFailures": []}))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(handle)).await
}
