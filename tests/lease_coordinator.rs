//! The lease coordinator against moto's DynamoDB, in one process: replicas spread a mapping's
//! shards ±1, steal at most one lease per pass and never use a stolen lease while its previous
//! holder may; a graceful stop hands every lease over at once; a replica cut off from the table
//! stops using its leases before another replica may take them, and can never move a checkpoint
//! again (DESIGN.md invariant 7).

mod common;

use ::sluice::checkpoint::{Checkpoint, CheckpointStore, Commit, CommitError, FileCheckpointStore};
use ::sluice::lease::coordinator::{Coordinator, Membership};
use ::sluice::lease::dynamo::LeaseTable;
use ::sluice::lease::item::LeaseCheckpoint;
use ::sluice::lease::{Lease, Leases};
use ::sluice::model::{Partition, SequenceNumber};
use ::sluice::telemetry::{LeaseTelemetry, Metrics, Status};
use common::proxy::Proxy;
use common::*;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const MAPPING: &str = "orders";
const LEASE: Duration = Duration::from_secs(3);

struct Replica {
    co: Arc<Coordinator>,
    leases: Arc<dyn Leases>,
    shutdown: CancellationToken,
}

async fn replica(client: aws_sdk_dynamodb::Client, table: &str, id: &str) -> Replica {
    let shutdown = CancellationToken::new();
    let member = Membership {
        worker_id: id.into(),
        lease_duration: LEASE,
        scan_interval: Duration::from_millis(200),
    };
    let co = Coordinator::start(LeaseTable::new(client, table), member, shutdown.clone())
        .await
        .expect("the lease table");
    let (metrics, status) = (Arc::new(Metrics::new()), Arc::new(Status::new(1)));
    let leases = co.mapping(
        MAPPING,
        LeaseCheckpoint::TrimHorizon,
        LeaseTelemetry::new(MAPPING, id, &metrics, &status),
    );
    Replica {
        co,
        leases,
        shutdown,
    }
}

fn shards(n: usize) -> Vec<Partition> {
    (0..n)
        .map(|i| Partition {
            id: format!("shardId-{i:012}"),
            parents: vec![],
            closed: false,
        })
        .collect()
}

impl Replica {
    async fn held(&self, listed: &[Partition]) -> BTreeMap<String, Lease> {
        self.leases
            .held(MAPPING, listed)
            .await
            .unwrap()
            .into_iter()
            .map(|l| (l.partition().to_string(), l))
            .collect()
    }
}

/// Moves `shard`'s checkpoint `from` → `to` through `co`, under `lease`.
async fn commit(
    co: &Coordinator,
    shard: &str,
    from: Option<&Checkpoint>,
    to: &Checkpoint,
    lease: &::sluice::lease::LeaseToken,
) -> Result<(), CommitError> {
    CheckpointStore::commit(co, MAPPING, shard, Commit { from, to, lease }).await
}

fn seq(s: &str) -> Checkpoint {
    Checkpoint::Sequence(SequenceNumber(s.into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_spread_the_shards_and_hand_them_over_at_once_on_a_graceful_stop() {
    let tb = testbed();
    let table = unique("leases");
    let listed = shards(6);
    let a = replica(dynamodb(&tb), &table, "replica-a").await;
    wait_for("a to hold every shard", Duration::from_secs(20), || async {
        (a.held(&listed).await.len() == 6).then_some(())
    })
    .await;
    let a_first = a.held(&listed).await;

    // b joins: it steals one lease per pass until the spread is 3/3, and uses a stolen lease only
    // once a has stopped using it. a's leases are still held here (as a busy worker would), so
    // the handoff never comes and b waits out a's grant.
    let b = replica(dynamodb(&tb), &table, "replica-b").await;
    let started = Instant::now();
    let (held_a, held_b) = wait_for("a 3/3 spread", Duration::from_secs(30), || async {
        let (ha, hb) = (a.held(&listed).await, b.held(&listed).await);
        for (shard, lease) in &hb {
            assert!(
                !a_first[shard].is_held(),
                "{shard} is usable by b while a may still use it"
            );
            assert!(lease.is_held());
        }
        (ha.len() == 3 && hb.len() == 3).then_some((ha, hb))
    })
    .await;
    assert!(
        started.elapsed() >= LEASE,
        "a stolen lease waits out its previous holder's grant"
    );
    let a_keys: HashSet<&String> = held_a.keys().collect();
    let b_keys: HashSet<&String> = held_b.keys().collect();
    assert!(a_keys.is_disjoint(&b_keys), "every shard has one owner");
    assert_eq!(a_keys.len() + b_keys.len(), 6);

    // Fencing: a cannot move the checkpoint of a shard b took, b can.
    let (moved, b_lease) = held_b.iter().next().unwrap();
    let stale = a_first[moved].token();
    assert_eq!(stale, None, "a's lease on {moved} is gone");
    let b_token = b_lease.token().unwrap();
    let a_token = ::sluice::lease::LeaseToken::new("replica-a", b_token.counter - 1);
    let refused = commit(a.co.as_ref(), moved, None, &seq("100"), &a_token).await;
    assert!(
        matches!(refused, Err(CommitError::LeaseLost)),
        "{refused:?}"
    );
    commit(b.co.as_ref(), moved, None, &seq("100"), &b_token)
        .await
        .expect("the holder moves the checkpoint");
    assert_eq!(
        CheckpointStore::get(b.co.as_ref(), MAPPING, moved)
            .await
            .unwrap(),
        Some(seq("100"))
    );

    // b stops gracefully: a has every shard again within a couple of scans, not a lease duration.
    b.shutdown.cancel();
    let stopping = Instant::now();
    b.co.stop().await;
    wait_for(
        "a to take b's released leases",
        Duration::from_secs(10),
        || async { (a.held(&listed).await.len() == 6).then_some(()) },
    )
    .await;
    assert!(
        stopping.elapsed() < Duration::from_secs(2),
        "released leases are taken at once, took {:?}",
        stopping.elapsed()
    );
    // And a resumes b's shard from b's checkpoint.
    assert_eq!(
        CheckpointStore::get(a.co.as_ref(), MAPPING, moved)
            .await
            .unwrap(),
        Some(seq("100"))
    );
    a.shutdown.cancel();
    a.co.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stolen_lease_is_handed_over_as_soon_as_its_holder_lets_go() {
    let tb = testbed();
    let table = unique("leases");
    let listed = shards(4);
    let a = replica(dynamodb(&tb), &table, "replica-a").await;
    wait_for("a to hold every shard", Duration::from_secs(20), || async {
        (a.held(&listed).await.len() == 4).then_some(())
    })
    .await;
    // a runs no worker: nothing holds its leases, so a stolen one is handed over at once.
    let b = replica(dynamodb(&tb), &table, "replica-b").await;
    let joined = Instant::now();
    wait_for("a 2/2 spread", Duration::from_secs(20), || async {
        let (ha, hb) = (a.held(&listed).await, b.held(&listed).await);
        (ha.len() == 2 && hb.len() == 2).then_some(())
    })
    .await;
    assert!(
        joined.elapsed() < LEASE,
        "handed over without waiting a lease duration: {:?}",
        joined.elapsed()
    );
    for r in [&a, &b] {
        r.shutdown.cancel();
        r.co.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_off_from_the_table_stops_before_its_leases_can_be_taken() {
    let tb = testbed();
    let table = unique("leases");
    let listed = shards(4);
    let proxy = Proxy::start(&tb.moto).await;
    let cut_off = dynamodb_via(&tb, &proxy.url);
    let a = replica(cut_off, &table, "replica-a").await;
    let held_a = wait_for("a to hold every shard", Duration::from_secs(20), || async {
        let held = a.held(&listed).await;
        (held.len() == 4).then_some(held)
    })
    .await;
    let shard = listed[0].id.clone();
    let token = held_a[&shard].token().unwrap();
    commit(a.co.as_ref(), &shard, None, &seq("7"), &token)
        .await
        .unwrap();

    let b = replica(dynamodb(&tb), &table, "replica-b").await;
    b.held(&listed).await;
    proxy.cut();
    let cut_at = Instant::now();
    // b takes everything once a's leases expire by its own clock; by then a has stopped using
    // every one of them.
    let held_b = wait_for("b to take a's leases", Duration::from_secs(30), || async {
        let hb = b.held(&listed).await;
        for s in hb.keys() {
            assert!(
                !held_a[s].is_held(),
                "{s} usable by both replicas {:?} after the cut",
                cut_at.elapsed()
            );
        }
        (hb.len() == 4).then_some(hb)
    })
    .await;
    assert!(
        cut_at.elapsed() < LEASE * 2 + Duration::from_secs(2),
        "taken within about 2x the lease duration, took {:?}",
        cut_at.elapsed()
    );
    assert!(held_a.values().all(|l| !l.is_held()));
    assert_eq!(
        CheckpointStore::get(b.co.as_ref(), MAPPING, &shard)
            .await
            .unwrap(),
        Some(seq("7")),
        "b resumes from a's checkpoint"
    );

    // Healed, a is a zombie: it can move no checkpoint, whatever token it presents.
    proxy.heal();
    let zombie = commit(a.co.as_ref(), &shard, Some(&seq("7")), &seq("9"), &token).await;
    assert!(zombie.is_err_and(|e| e.is_refusal()));
    let b_token = held_b[&shard].token().unwrap();
    commit(b.co.as_ref(), &shard, Some(&seq("7")), &seq("8"), &b_token)
        .await
        .unwrap();
    for r in [&a, &b] {
        r.shutdown.cancel();
    }
    b.co.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_parent_is_cleaned_up_after_its_children_commit_and_never_comes_back() {
    let tb = testbed();
    let table = unique("leases");
    let parent = Partition {
        id: "shardId-000000000000".into(),
        parents: vec![],
        closed: true,
    };
    let child = Partition {
        id: "shardId-000000000001".into(),
        parents: vec![parent.id.clone()],
        closed: false,
    };
    let listed = vec![parent.clone(), child.clone()];
    let a = replica(dynamodb(&tb), &table, "replica-a").await;
    let held = wait_for("a to hold both shards", Duration::from_secs(20), || async {
        let held = a.held(&listed).await;
        (held.len() == 2).then_some(held)
    })
    .await;
    let token = |shard: &str| held[shard].token().unwrap();
    commit(
        &a.co,
        &parent.id,
        None,
        &Checkpoint::ShardEnd,
        &token(&parent.id),
    )
    .await
    .unwrap();
    // The ended parent is released (nothing left to read) but kept while its child has no progress.
    let raw = LeaseTable::new(dynamodb(&tb), &table);
    wait_for(
        "the ended parent released",
        Duration::from_secs(10),
        || async {
            let item = raw.get(MAPPING, &parent.id).await.unwrap()?;
            (item.owner.is_none()).then_some(())
        },
    )
    .await;
    commit(&a.co, &child.id, None, &seq("5"), &token(&child.id))
        .await
        .unwrap();
    wait_for(
        "the parent's lease deleted",
        Duration::from_secs(10),
        || async {
            raw.get(MAPPING, &parent.id)
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;
    // Still listed (within retention), the parent is not created again on later passes.
    let passes = Instant::now();
    while passes.elapsed() < Duration::from_secs(1) {
        a.held(&listed).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(raw.get(MAPPING, &parent.id).await.unwrap().is_none());
    assert_eq!(
        CheckpointStore::get(a.co.as_ref(), MAPPING, &child.id)
            .await
            .unwrap(),
        Some(seq("5"))
    );
    a.shutdown.cancel();
    a.co.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_store_is_imported_once_into_the_lease_table() {
    let tb = testbed();
    let table = unique("leases");
    let dir = tempfile::tempdir().unwrap();
    let single = ::sluice::lease::SingleReplica::token();
    {
        let file = FileCheckpointStore::open(dir.path()).unwrap();
        for (shard, cp) in [
            ("shardId-000000000000", seq("41")),
            ("shardId-000000000001", Checkpoint::ShardEnd),
        ] {
            file.commit(
                MAPPING,
                shard,
                Commit {
                    from: None,
                    to: &cp,
                    lease: &single,
                },
            )
            .await
            .unwrap();
        }
        file.set_mapping_start(MAPPING, 1_700_000_000_000)
            .await
            .unwrap();
    }
    let file = FileCheckpointStore::open(dir.path()).unwrap();
    let a = replica(dynamodb(&tb), &table, "replica-a").await;
    assert_eq!(a.co.import(&file, MAPPING, &table).await.unwrap(), 2);
    let raw = LeaseTable::new(dynamodb(&tb), &table);
    let first = raw
        .get(MAPPING, "shardId-000000000000")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        first.checkpoint,
        LeaseCheckpoint::Sequence(SequenceNumber("41".into()))
    );
    assert_eq!(first.owner, None, "imported leases are free to take");
    let ended = raw
        .get(MAPPING, "shardId-000000000001")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ended.checkpoint, LeaseCheckpoint::ShardEnd);
    assert_eq!(
        CheckpointStore::mapping_start(a.co.as_ref(), MAPPING)
            .await
            .unwrap(),
        Some(1_700_000_000_000)
    );
    // A later start imports nothing again, even after the table moved on.
    assert!(raw
        .delete_ended(MAPPING, "shardId-000000000001")
        .await
        .unwrap());
    assert_eq!(a.co.import(&file, MAPPING, &table).await.unwrap(), 0);
    assert!(raw
        .get(MAPPING, "shardId-000000000001")
        .await
        .unwrap()
        .is_none());
    a.shutdown.cancel();
    a.co.stop().await;
}
