//! The supervisor over a lease table that holds only some of the listed shards and loses some while
//! their batches are in flight: only `listed ∩ leased ∩ lineage-ready` shards run; a lost lease
//! stops its worker before its next dispatch without moving its checkpoint; a lease taken again
//! restarts the shard from its checkpoint; shutdown releases what is still held.

use super::*;
use crate::lease::table::FakeLeaseTable;

/// Waits (on the paused clock) until `cond` holds.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One leased shard (`shardId-1`, closed or open, holding `records`) whose first batch is in
/// flight for 30 s.
async fn one_leased_shard_in_flight(
    closed: bool,
    records: &[u64],
) -> (Arc<MemStore>, Arc<FakeLeaseTable>, Supervised) {
    let store = Arc::new(MemStore::default());
    let table = Arc::new(FakeLeaseTable::new("w-1"));
    table.grant("shardId-1", 1);
    let s = Supervised::start_leased(
        fake(
            vec![shard("shardId-1", None, closed)],
            &[("shardId-1", records)],
        ),
        store.clone(),
        Recorder {
            slow: vec![(1, Duration::from_secs(30))],
            ..Default::default()
        },
        StartingPosition::TrimHorizon,
        table.clone(),
    );
    until("in flight", || {
        !s.recorder.attempts.lock().unwrap().is_empty()
    })
    .await;
    (store, table, s)
}

#[tokio::test(start_paused = true)]
async fn only_leased_shards_run_and_a_lost_lease_stops_its_shard_without_a_checkpoint() {
    let store = Arc::new(MemStore::default());
    let table = Arc::new(FakeLeaseTable::new("w-1"));
    for id in ["shardId-1", "shardId-2", "shardId-4"] {
        table.grant(id, 1);
    }
    let ids = ["shardId-1", "shardId-2", "shardId-3", "shardId-4"];
    let stream = fake(
        ids.iter().map(|id| shard(id, None, false)).collect(),
        &[
            ("shardId-1", &[1]),
            ("shardId-2", &[20]),
            ("shardId-3", &[30]),
            ("shardId-4", &[40]),
        ],
    );
    // 20 and 40 are in flight for a minute; 20 then succeeds, 40 fails (its worker would retry).
    let recorder = Recorder {
        slow: vec![(20, Duration::from_secs(60)), (40, Duration::from_secs(60))],
        fail: Some(40),
        ..Default::default()
    };
    let s = Supervised::start_leased(
        stream,
        store.clone(),
        recorder,
        StartingPosition::TrimHorizon,
        table.clone(),
    );
    let attempts = |id| {
        let a = s.recorder.attempts.lock().unwrap();
        a.iter().filter(|x| **x == id).count()
    };
    let checkpoint = |id: &str| store.0.lock().unwrap().get(id).cloned();
    until("1 delivered and checkpointed", || {
        checkpoint("shardId-1") == Some(Checkpoint::Sequence(SequenceNumber("1".into())))
    })
    .await;
    until("20 and 40 in flight", || {
        attempts(20) == 1 && attempts(40) == 1
    })
    .await;

    // Another replica takes shardId-2 and shardId-4 while their invocations are in flight.
    table.revoke("shardId-2");
    table.revoke("shardId-4");
    until("the lost shards leave /status", || {
        s.status.get("m", "shardId-2").is_none() && s.status.get("m", "shardId-4").is_none()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(s.delivered(), vec![1, 20], "20 finished its invocation");
    assert_eq!(attempts(40), 1, "no dispatch after the lease was lost");
    assert_eq!(attempts(30), 0, "a shard never leased never runs");
    assert_eq!(
        checkpoint("shardId-2"),
        None,
        "no checkpoint moved without the lease"
    );
    assert_eq!(checkpoint("shardId-4"), None);
    assert!(s.status.get("m", "shardId-3").is_none());
    assert!(s.status.ready(), "{:?}", s.status.not_ready_because());
    let opened: Vec<String> = s
        .stream
        .opened
        .lock()
        .unwrap()
        .iter()
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(opened, ["shardId-1", "shardId-2", "shardId-4"]);

    // The lease comes back (a newer counter): the shard runs again from its checkpoint (none, so
    // 20 is delivered again: at least once) and now checkpoints.
    table.grant("shardId-2", 2);
    until("20 checkpointed under the new lease", || {
        checkpoint("shardId-2") == Some(Checkpoint::Sequence(SequenceNumber("20".into())))
    })
    .await;
    assert_eq!(s.delivered(), vec![1, 20, 20]);
    let table2 = table.clone();
    let (_, opened, _) = s.stop().await;
    assert_eq!(
        opened.last(),
        Some(&(
            "shardId-2".to_string(),
            Position::Start(StartingPosition::TrimHorizon)
        ))
    );
    let mut released = table2.released();
    released.sort();
    assert_eq!(
        released,
        ["shardId-1", "shardId-2"],
        "held leases are released at shutdown"
    );
}

#[tokio::test(start_paused = true)]
async fn a_renewed_lease_keeps_its_shard_running() {
    let (store, table, s) = one_leased_shard_in_flight(true, &[1, 2]).await;
    // Renewals advance the counter while the batch is in flight: the commit uses the new one.
    table.renew("shardId-1");
    table.renew("shardId-1");
    assert_eq!(table.token("shardId-1").map(|t| t.counter), Some(3));
    until("the closed shard is drained", || {
        store.0.lock().unwrap().get("shardId-1") == Some(&Checkpoint::ShardEnd)
    })
    .await;
    let (delivered, _, _) = s.stop().await;
    assert_eq!(delivered, vec![1, 2]);
}

#[tokio::test(start_paused = true)]
async fn a_refused_commit_stops_the_shard_and_replans_it_from_the_stored_checkpoint() {
    let store = Arc::new(MemStore::default());
    let s = Supervised::start(
        fake(
            vec![shard("shardId-1", None, false)],
            &[("shardId-1", &[1])],
        ),
        store.clone(),
        Recorder {
            slow: vec![(1, Duration::from_secs(30))],
            ..Default::default()
        },
        StartingPosition::TrimHorizon,
    );
    until("in flight", || {
        !s.recorder.attempts.lock().unwrap().is_empty()
    })
    .await;
    // Someone else moves the shard while the batch is in flight: the worker's commit does not chain.
    let moved = Checkpoint::Sequence(SequenceNumber("5".into()));
    store
        .0
        .lock()
        .unwrap()
        .insert("shardId-1".into(), moved.clone());
    until("the shard shown failed", || {
        s.status
            .get("m", "shardId-1")
            .is_some_and(|st| st.state == crate::telemetry::ShardState::Failed)
    })
    .await;
    let error = s.status.get("m", "shardId-1").unwrap().last_error.unwrap();
    assert!(error.contains("commit refused"), "{error}");
    assert!(error.contains("at 5, not at nothing"), "{error}");
    // Planned again after the backoff, from the checkpoint as stored.
    until("reopened", || s.stream.opened.lock().unwrap().len() == 2).await;
    assert_eq!(store.0.lock().unwrap().get("shardId-1"), Some(&moved));
    let (_, opened, _) = s.stop().await;
    assert_eq!(
        opened[1],
        (
            "shardId-1".to_string(),
            Position::After(SequenceNumber("5".into()))
        )
    );
}

#[tokio::test(start_paused = true)]
async fn a_shard_down_after_a_refused_commit_that_another_replica_takes_is_not_down_here() {
    let (store, table, s) = one_leased_shard_in_flight(false, &[1]).await;
    store.0.lock().unwrap().insert(
        "shardId-1".into(),
        Checkpoint::Sequence(SequenceNumber("5".into())),
    );
    until("the shard shown failed", || !s.status.ready()).await;
    // Before it restarts, another replica takes it: it is no longer down here, and the replica
    // is ready again.
    table.revoke("shardId-1");
    until("ready again", || s.status.ready()).await;
    assert!(s.status.get("m", "shardId-1").is_none());
    s.stop().await;
}
