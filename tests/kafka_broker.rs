//! The test bed's Kafka broker (tansu) with the client as sluice uses it: a topic created with
//! three partitions, keyed records produced, read by a `StreamConsumer` in a consumer group with
//! offsets stored and committed by the code (no auto-commit), and a new member of the group
//! resuming from those commits. Every wait is bounded; no consumer is ever paused (dropping a paused
//! consumer hangs against tansu).

mod common;

use common::kafka::{self, Produced};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::Message;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 3;

/// Reads `n` records, storing each one's offset as it is read; panics after `timeout`.
async fn read(c: &StreamConsumer, n: usize, timeout: Duration) -> Vec<Produced> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut got = Vec::new();
    while got.len() < n {
        let m = match tokio::time::timeout_at(deadline, c.recv()).await {
            Err(_) => panic!("read {} of {n} records within {timeout:?}", got.len()),
            Ok(Err(e)) => {
                eprintln!("consumer error (retrying): {e}");
                continue;
            }
            Ok(Ok(m)) => m,
        };
        let text = |b: Option<&[u8]>| String::from_utf8(b.unwrap_or_default().to_vec()).unwrap();
        got.push(Produced {
            partition: m.partition(),
            offset: m.offset(),
            key: text(m.key()),
            value: text(m.payload()),
        });
        // Stores offset + 1, the next one to read, as a commit must.
        c.store_offset_from_message(&m).expect("store offset");
    }
    got
}

/// Nothing more arrives within `quiet`.
async fn assert_nothing_more(c: &StreamConsumer, quiet: Duration) {
    if let Ok(Ok(m)) = tokio::time::timeout(quiet, c.recv()).await {
        panic!(
            "unexpected record: partition {} offset {}",
            m.partition(),
            m.offset()
        );
    }
}

/// Commits the stored offsets synchronously.
fn commit(c: &StreamConsumer) {
    tokio::task::block_in_place(|| c.commit_consumer_state(CommitMode::Sync)).expect("commit");
}

/// Drops (closes) the consumer off the runtime, failing if that takes more than 30 s.
async fn close(c: StreamConsumer) -> Duration {
    let started = Instant::now();
    tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || drop(c)),
    )
    .await
    .expect("the consumer closed within 30 s")
    .unwrap();
    started.elapsed()
}

fn sorted(mut v: Vec<Produced>) -> Vec<Produced> {
    v.sort();
    v
}

/// Each partition's records were read in offset order.
fn assert_in_order(got: &[Produced]) {
    let mut last: BTreeMap<i32, i64> = BTreeMap::new();
    for r in got {
        if let Some(prev) = last.insert(r.partition, r.offset) {
            assert!(
                prev < r.offset,
                "partition {}: offset {prev} then {}",
                r.partition,
                r.offset
            );
        }
    }
}

/// The next offset to read on each partition after `records`, `None` where there were none.
fn next_offsets(records: &[&Produced]) -> BTreeMap<i32, Option<i64>> {
    (0..PARTITIONS)
        .map(|p| {
            let last = records
                .iter()
                .filter(|r| r.partition == p)
                .map(|r| r.offset)
                .max();
            (p, last.map(|o| o + 1))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_reads_every_record_once_in_order_and_a_new_member_resumes_from_its_commits() {
    let tb = common::testbed();
    let topic = common::unique("broker");
    kafka::create_topic(&tb, &topic, PARTITIONS).await;

    let old = kafka::produce(&tb, &topic, &common::records("old", 30, 10)).await;
    assert_eq!(old.len(), 30);
    // Keys decide partitions, and each key's records land in write order.
    let mut by_key: BTreeMap<&str, (i32, i64)> = BTreeMap::new();
    for r in &old {
        if let Some((p, o)) = by_key.insert(&r.key, (r.partition, r.offset)) {
            assert_eq!(p, r.partition, "key {} moved partition", r.key);
            assert!(o < r.offset, "key {} out of order", r.key);
        }
    }
    let used: std::collections::BTreeSet<i32> = old.iter().map(|r| r.partition).collect();
    assert!(
        used.len() > 1,
        "10 keys all landed on one partition: {used:?}"
    );

    let group = common::unique("group");
    let first = kafka::consumer(&tb, &group);
    first.subscribe(&[&topic]).unwrap();
    let joined = Instant::now();
    let got = read(&first, old.len(), Duration::from_secs(60)).await;
    eprintln!("first member read 30 records in {:?}", joined.elapsed());
    assert_in_order(&got);
    assert_eq!(sorted(got), sorted(old.clone()), "every record once");
    assert_nothing_more(&first, Duration::from_secs(1)).await;

    commit(&first);
    let expected = next_offsets(&old.iter().collect::<Vec<_>>());
    assert_eq!(
        kafka::committed(&tb, &group, &topic, PARTITIONS).await,
        expected
    );
    let took = close(first).await;
    eprintln!("first member closed in {took:?}");

    // New records after the commit: a new member of the group reads exactly these.
    let new = kafka::produce(&tb, &topic, &common::records("new", 9, 10)).await;
    let second = kafka::consumer(&tb, &group);
    second.subscribe(&[&topic]).unwrap();
    let joined = Instant::now();
    let got = read(&second, new.len(), Duration::from_secs(60)).await;
    eprintln!("second member read 9 records in {:?}", joined.elapsed());
    assert_in_order(&got);
    assert_eq!(
        sorted(got),
        sorted(new.clone()),
        "only what came after the commit"
    );
    assert_nothing_more(&second, Duration::from_secs(1)).await;

    commit(&second);
    let expected = next_offsets(&old.iter().chain(&new).collect::<Vec<_>>());
    assert_eq!(
        kafka::committed(&tb, &group, &topic, PARTITIONS).await,
        expected
    );
    let took = close(second).await;
    eprintln!("second member closed in {took:?}");
}
