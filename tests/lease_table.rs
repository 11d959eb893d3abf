//! The lease table's conditional writes against moto's DynamoDB (issue 10's protocol): a lease is
//! created once, taken, renewed, checkpointed and released only by its holder at the counter it last
//! observed; a stale holder (a zombie) is refused and told what the lease is now.

mod common;

use ::sluice::lease::dynamo::{LeaseError, LeaseTable};
use ::sluice::lease::item::{LeaseCheckpoint, LeaseItem};
use ::sluice::model::SequenceNumber;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_move_only_by_their_holder_at_the_observed_counter() {
    let tb = testbed();
    let table = LeaseTable::new(dynamodb(&tb), &unique("leases"));
    table
        .ensure()
        .await
        .expect("the table is created on demand");
    table.ensure().await.expect("and used when it exists");

    let fresh = LeaseItem::new(
        "orders/stream/2024-01-01T00:00:00.000",
        "shardId-000000000001",
        vec!["shardId-000000000000".into()],
        LeaseCheckpoint::TrimHorizon,
    );
    assert!(table.create(&fresh).await.unwrap());
    assert!(!table.create(&fresh).await.unwrap(), "created only once");
    let read = table
        .get(&fresh.mapping, &fresh.shard)
        .await
        .unwrap()
        .expect("the lease exists");
    assert_eq!(read, fresh);

    // A takes the free lease; B, having observed it free at counter 0, loses the race.
    let a = table.take(&fresh, "replica-a").await.unwrap();
    assert_eq!((a.owner.as_deref(), a.counter), (Some("replica-a"), 1));
    assert_eq!(a.owner_switches_since_checkpoint, 1);
    match table.take(&fresh, "replica-b").await {
        Err(LeaseError::Conflict(Some(now))) => {
            assert_eq!((now.owner.as_deref(), now.counter), (Some("replica-a"), 1))
        }
        other => panic!("a stale take must be refused with the lease as it is: {other:?}"),
    }

    // A renews and checkpoints at the counter it holds.
    let a = table.renew(&a, "replica-a", false).await.unwrap();
    assert_eq!(a.counter, 2);
    let seq =
        LeaseCheckpoint::Sequence(SequenceNumber("49590338271490256608559692538361571".into()));
    let a = table.checkpoint(&a, "replica-a", &seq).await.unwrap();
    assert_eq!((a.checkpoint.clone(), a.counter), (seq.clone(), 2));
    assert_eq!(a.owner_switches_since_checkpoint, 0);

    // B steals it (A stopped renewing); A, now a zombie at counter 2, can neither renew nor move
    // the checkpoint.
    let b = table.take(&a, "replica-b").await.unwrap();
    assert_eq!((b.owner.as_deref(), b.counter), (Some("replica-b"), 3));
    let later =
        LeaseCheckpoint::Sequence(SequenceNumber("49590338271490256608559692538361572".into()));
    assert!(matches!(
        table.checkpoint(&a, "replica-a", &later).await,
        Err(LeaseError::Conflict(Some(_)))
    ));
    assert!(matches!(
        table.renew(&a, "replica-a", false).await,
        Err(LeaseError::Conflict(Some(_)))
    ));
    // Nor can a replica that is not the holder, even at the right counter.
    assert!(matches!(
        table.checkpoint(&b, "replica-a", &later).await,
        Err(LeaseError::Conflict(Some(_)))
    ));
    let kept = table
        .get(&fresh.mapping, &fresh.shard)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.checkpoint, seq, "the zombie moved nothing");

    // B releases at shutdown: free at once, checkpoint kept, for anyone to take.
    let released = table.release(&b, "replica-b").await.unwrap();
    assert_eq!((released.owner.as_deref(), released.counter), (None, 4));
    assert_eq!(released.checkpoint, seq);
    let c = table.take(&released, "replica-c").await.unwrap();
    assert_eq!((c.owner.as_deref(), c.counter), (Some("replica-c"), 5));

    // An update never creates a lease.
    let missing = LeaseItem::new(
        "orders",
        "shardId-000000000009",
        vec![],
        LeaseCheckpoint::Latest,
    );
    assert!(matches!(
        table.take(&missing, "replica-a").await,
        Err(LeaseError::Conflict(None))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mappings_leases_are_listed_and_no_other_mappings() {
    let tb = testbed();
    let table = LeaseTable::new(dynamodb(&tb), &unique("leases"));
    table.ensure().await.unwrap();
    for (mapping, shard) in [
        ("orders", "shardId-0"),
        ("orders", "shardId-1"),
        ("orders:eu", "shardId-0"),
        ("payments", "shardId-0"),
    ] {
        let lease = LeaseItem::new(mapping, shard, vec![], LeaseCheckpoint::TrimHorizon);
        assert!(table.create(&lease).await.unwrap());
    }
    let mut shards: Vec<String> = table
        .list("orders")
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.shard)
        .collect();
    shards.sort();
    assert_eq!(shards, ["shardId-0", "shardId-1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steal_records_the_previous_holder_until_it_hands_over() {
    let tb = testbed();
    let table = LeaseTable::new(dynamodb(&tb), &unique("leases"));
    table.ensure().await.unwrap();
    let fresh = LeaseItem::new("orders", "shardId-0", vec![], LeaseCheckpoint::TrimHorizon);
    assert!(table.create(&fresh).await.unwrap());
    let a = table.take(&fresh, "replica-a").await.unwrap();
    assert_eq!(a.checkpoint_owner, None);

    // B steals: it owns the lease, A is recorded as the holder still finishing.
    let b = table.steal(&a, "replica-b").await.unwrap();
    assert_eq!(b.owner.as_deref(), Some("replica-b"));
    assert_eq!(b.checkpoint_owner.as_deref(), Some("replica-a"));
    assert_eq!(b.owner_switches_since_checkpoint, 2);
    // Only A can finish its own handoff, and only once.
    assert!(!table
        .handoff_done("orders", "shardId-0", "replica-c")
        .await
        .unwrap());
    assert!(table
        .handoff_done("orders", "shardId-0", "replica-a")
        .await
        .unwrap());
    assert!(!table
        .handoff_done("orders", "shardId-0", "replica-a")
        .await
        .unwrap());
    let now = table.get("orders", "shardId-0").await.unwrap().unwrap();
    assert_eq!(now.checkpoint_owner, None);
    assert_eq!(
        (now.owner.as_deref(), now.counter),
        (Some("replica-b"), b.counter)
    );

    // A handoff never finished is cleared by the new owner's renewal, or by the next take.
    let c = table.steal(&now, "replica-c").await.unwrap();
    assert_eq!(c.checkpoint_owner.as_deref(), Some("replica-b"));
    let c = table.renew(&c, "replica-c", true).await.unwrap();
    assert_eq!(c.checkpoint_owner, None);
    let c = table.steal(&c, "replica-a").await.unwrap();
    let taken = table.take(&c, "replica-b").await.unwrap();
    assert_eq!(taken.checkpoint_owner, None);
}
