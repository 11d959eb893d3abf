//! AWS's stream error handling against the emulators: a poison record isolated by bisect and
//! recorded at each kind of on-failure destination (SQS, SNS → SQS, S3, on moto), record age,
//! every partial batch rule, and which failures count retry attempts (Lambda via the fault proxy,
//! HTTP via the test's function). This root holds the helpers the groups share (destinations and
//! reading their failure records back, the esm-spec.md §9 record check, the HTTP mapping); the
//! tests are in the submodules under tests/stream_errors/.

mod common;

#[path = "stream_errors/attempts.rs"]
mod attempts;
#[path = "stream_errors/partial_batch.rs"]
mod partial_batch;
#[path = "stream_errors/poison.rs"]
mod poison;
#[path = "stream_errors/record_age.rs"]
mod record_age;

use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

#[derive(Clone, Copy, Debug)]
enum Dest {
    Sqs,
    Sns,
    S3,
}

/// Where failure records land, and how the test reads them back.
struct Destination {
    arn: String,
    kind: Dest,
    queue_url: Option<String>,
    bucket: Option<String>,
}

async fn destination(tb: &TestBed, kind: Dest) -> Destination {
    let name = unique("dest");
    match kind {
        Dest::Sqs => {
            let (url, arn) = create_queue(&sqs(tb), &name, &[]).await;
            Destination {
                arn,
                kind,
                queue_url: Some(url),
                bucket: None,
            }
        }
        Dest::Sns => {
            let topic = sns(tb)
                .create_topic()
                .name(&name)
                .send()
                .await
                .unwrap()
                .topic_arn()
                .unwrap()
                .to_string();
            let (url, queue_arn) = create_queue(&sqs(tb), &name, &[]).await;
            sns(tb)
                .subscribe()
                .topic_arn(&topic)
                .protocol("sqs")
                .endpoint(queue_arn)
                .send()
                .await
                .unwrap();
            Destination {
                arn: topic,
                kind,
                queue_url: Some(url),
                bucket: None,
            }
        }
        Dest::S3 => {
            s3(tb).create_bucket().bucket(&name).send().await.unwrap();
            Destination {
                arn: format!("arn:aws:s3:::{name}"),
                kind,
                queue_url: None,
                bucket: Some(name),
            }
        }
    }
}

impl Destination {
    /// Every failure record delivered (for S3: with the object key), waiting for at least `min`.
    async fn records(
        &self,
        tb: &TestBed,
        min: usize,
        timeout: Duration,
    ) -> Vec<(Value, Option<String>)> {
        match self.kind {
            Dest::Sqs | Dest::Sns => {
                let bodies =
                    drain_queue(&sqs(tb), self.queue_url.as_ref().unwrap(), min, timeout).await;
                bodies
                    .iter()
                    .map(|b| {
                        let v: Value = serde_json::from_str(b).unwrap();
                        // Through SNS the record is the envelope's Message.
                        let v = match self.kind {
                            Dest::Sns => {
                                serde_json::from_str(v["Message"].as_str().expect("SNS envelope"))
                                    .unwrap()
                            }
                            _ => v,
                        };
                        (v, None)
                    })
                    .collect()
            }
            Dest::S3 => {
                let client = s3(tb);
                let bucket = self.bucket.as_ref().unwrap();
                let keys = wait_for("failure records in S3", timeout, || async {
                    let out = client.list_objects_v2().bucket(bucket).send().await.ok()?;
                    let keys: Vec<String> = out
                        .contents()
                        .iter()
                        .filter_map(|o| o.key().map(str::to_string))
                        .collect();
                    (keys.len() >= min).then_some(keys)
                })
                .await;
                let mut out = Vec::new();
                for key in keys {
                    let obj = client
                        .get_object()
                        .bucket(bucket)
                        .key(&key)
                        .send()
                        .await
                        .unwrap();
                    let bytes = obj.body.collect().await.unwrap().into_bytes();
                    out.push((serde_json::from_slice(&bytes).unwrap(), Some(key)));
                }
                out
            }
        }
    }
}

fn iso_ok(v: &Value) -> time::OffsetDateTime {
    let s = v.as_str().unwrap_or_else(|| panic!("{v} is not a string"));
    assert!(
        s.ends_with('Z') && s.len() == 24,
        "{s} is not yyyy-mm-ddThh:mm:ss.SSSZ"
    );
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
}

/// Checks a failure record field by field against esm-spec.md §9 for `records` of `shard`.
fn check_failure_record(
    r: &Value,
    condition: &str,
    function_arn: &str,
    stream_arn: &str,
    shard: &str,
    records: &[Written],
) {
    let keys: BTreeSet<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
    let mut expected: BTreeSet<&str> = [
        "requestContext",
        "responseContext",
        "version",
        "timestamp",
        "KinesisBatchInfo",
    ]
    .into();
    if r.get("payload").is_some() {
        expected.insert("payload");
    }
    assert_eq!(keys, expected, "{r}");
    let rc = &r["requestContext"];
    assert!(!rc["requestId"].as_str().unwrap().is_empty());
    assert_eq!(rc["functionArn"], function_arn);
    assert_eq!(rc["condition"], condition);
    assert!(rc["approximateInvokeCount"].as_u64().is_some());
    assert_eq!(r["version"], "1.0");
    let at = iso_ok(&r["timestamp"]);
    assert!((time::OffsetDateTime::now_utc() - at).whole_seconds().abs() < 600);
    let info = &r["KinesisBatchInfo"];
    assert_eq!(info["shardId"], shard);
    assert_eq!(info["startSequenceNumber"], records[0].seq.as_str());
    assert_eq!(
        info["endSequenceNumber"],
        records[records.len() - 1].seq.as_str()
    );
    assert_eq!(info["batchSize"], records.len());
    assert_eq!(info["streamArn"], stream_arn);
    let first = iso_ok(&info["approximateArrivalOfFirstRecord"]);
    let last = iso_ok(&info["approximateArrivalOfLastRecord"]);
    assert!(first <= last);
}

fn http_mapping(name: &str, arn: &str, url: &str, extra: &str) -> String {
    format!(
        "  - Name: {name}\n    EventSourceArn: {arn}\n    StartingPosition: TRIM_HORIZON\n    BatchSize: 10\n    Http: {{ Url: '{url}' }}\n{extra}"
    )
}
