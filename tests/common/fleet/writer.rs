//! The stream side of the fleet tests: a background [`Writer`] putting records with explicit hash
//! keys (so every shard gets its share of the partition keys on every put), and [`reshard`].

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use crate::common::{wait_for, Written};

/// The hash key that routes partition key number `k` of `keys`: the middle of its `1/keys` slice
/// of the hash key space, so `keys` a multiple of the shard count spreads them evenly over
/// uniformly split shards.
pub fn hash_key(k: usize, keys: usize) -> String {
    let slice = u128::MAX / keys as u128;
    (slice * k as u128 + slice / 2).to_string()
}

/// Puts records in the background: every `every`, `per_put` records over `keys` partition keys in
/// turn (`key-<k>`, routed by [`hash_key`]), with data `"<tag>-<i>"`, `i` counting up.
pub struct Writer {
    stop: CancellationToken,
    written: Arc<Mutex<Vec<Written>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    pub fn start(
        client: &aws_sdk_kinesis::Client,
        stream: &str,
        tag: &str,
        keys: usize,
        per_put: usize,
        every: Duration,
    ) -> Writer {
        let stop = CancellationToken::new();
        let written = Arc::new(Mutex::new(Vec::new()));
        let (client, stream, tag) = (client.clone(), stream.to_string(), tag.to_string());
        let (s, w) = (stop.clone(), written.clone());
        let task = tokio::spawn(async move {
            let mut next = 0usize;
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = s.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let batch: Vec<(usize, String)> = (next..next + per_put)
                    .map(|i| (i % keys, format!("{tag}-{i}")))
                    .collect();
                next += per_put;
                let landed = put_keyed(&client, &stream, keys, batch).await;
                w.lock().unwrap().extend(landed);
            }
        });
        Writer {
            stop,
            written,
            task,
        }
    }

    /// What landed so far, in landing order.
    pub fn written(&self) -> Vec<Written> {
        self.written.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.written.lock().unwrap().len()
    }

    /// Stops after the put under way; returns every record that landed, in landing order.
    pub async fn stop(self) -> Vec<Written> {
        self.stop.cancel();
        self.task.await.expect("writer task");
        let written = self.written.lock().unwrap().clone();
        written
    }
}

/// Puts `(key number, data)` pairs in one PutRecords call per try; entries that failed (or a call
/// that failed, as during a reshard) are tried again after 50 ms. Returns where each landed, in
/// landing order.
pub async fn put_keyed(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    keys: usize,
    records: Vec<(usize, String)>,
) -> Vec<Written> {
    let mut written = Vec::with_capacity(records.len());
    let mut pending = records;
    while !pending.is_empty() {
        let entries = pending
            .iter()
            .map(|(k, d)| {
                PutRecordsRequestEntry::builder()
                    .partition_key(format!("key-{k}"))
                    .explicit_hash_key(hash_key(*k, keys))
                    .data(Blob::new(d.as_bytes()))
                    .build()
                    .unwrap()
            })
            .collect::<Vec<_>>();
        let out = match client
            .put_records()
            .stream_name(stream)
            .set_records(Some(entries))
            .send()
            .await
        {
            Ok(out) => out,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let mut retry = Vec::new();
        for (entry, (k, d)) in out.records().iter().zip(pending.drain(..)) {
            match (entry.shard_id(), entry.sequence_number()) {
                (Some(shard), Some(seq)) if entry.error_code().is_none() => written.push(Written {
                    shard: shard.to_string(),
                    seq: seq.to_string(),
                    key: format!("key-{k}"),
                    data: d,
                }),
                _ => retry.push((k, d)),
            }
        }
        if !retry.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        pending = retry;
    }
    written
}

/// Changes the stream's shard count (uniform scaling) and waits until it is ACTIVE with `target`
/// open shards.
pub async fn reshard(client: &aws_sdk_kinesis::Client, stream: &str, target: i32) {
    client
        .update_shard_count()
        .stream_name(stream)
        .target_shard_count(target)
        .scaling_type(aws_sdk_kinesis::types::ScalingType::UniformScaling)
        .send()
        .await
        .expect("UpdateShardCount");
    wait_for(
        "the stream to be ACTIVE after resharding",
        Duration::from_secs(60),
        || async {
            let d = client
                .describe_stream_summary()
                .stream_name(stream)
                .send()
                .await
                .ok()?;
            let s = d.stream_description_summary()?;
            (s.stream_status() == &aws_sdk_kinesis::types::StreamStatus::Active
                && s.open_shard_count() == target)
                .then_some(())
        },
    )
    .await;
}
