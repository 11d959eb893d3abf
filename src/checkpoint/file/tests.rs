//! The embedded file store: round trips, the directory lock, torn writes, corrupt and old-format
//! files, renames, and the commit rules kept across a restart.

use super::*;
use crate::lease::{LeaseToken, SingleReplica};
use crate::source::SequenceNumber;

/// Commits `from` → `to` under the single-replica token.
pub(super) async fn put(
    store: &FileCheckpointStore,
    mapping: &str,
    shard: &str,
    from: Option<&Checkpoint>,
    to: &Checkpoint,
) {
    let lease = SingleReplica::token();
    store
        .commit(
            mapping,
            shard,
            Commit {
                from,
                to,
                lease: &lease,
            },
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn round_trip_and_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileCheckpointStore::open(dir.path()).unwrap();
    assert_eq!(store.get("m/1", "shardId-0").await.unwrap(), None);
    let a = Checkpoint::Sequence(SequenceNumber("123".into()));
    put(&store, "m/1", "shardId-0", None, &a).await;
    assert_eq!(
        store.get("m/1", "shardId-0").await.unwrap(),
        Some(a.clone())
    );
    put(&store, "m/1", "shardId-0", Some(&a), &Checkpoint::ShardEnd).await;
    // A fresh store over the same directory sees the last write.
    drop(store);
    let again = FileCheckpointStore::open(dir.path()).unwrap();
    assert_eq!(
        again.get("m/1", "shardId-0").await.unwrap(),
        Some(Checkpoint::ShardEnd)
    );
    assert_eq!(again.get("m/2", "shardId-0").await.unwrap(), None);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("m%2F1"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_second_store_on_the_same_directory_is_refused_with_the_holders_pid() {
    let dir = tempfile::tempdir().unwrap();
    let first = FileCheckpointStore::open(dir.path()).unwrap();
    let err = FileCheckpointStore::open(dir.path())
        .err()
        .expect("refused");
    let msg = err.to_string();
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    assert!(
        msg.contains(&format!("PID {}", std::process::id())),
        "{msg}"
    );
    drop(first);
    FileCheckpointStore::open(dir.path()).expect("free again once the holder is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_never_tear_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(FileCheckpointStore::open(dir.path()).unwrap());
    let mut tasks = Vec::new();
    // Raw writes of one file from several threads at once...
    let path = store.path("raw", "shardId-0");
    for w in 0..4u64 {
        let path = path.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            for i in 0..50u64 {
                let cp = Checkpoint::Sequence(SequenceNumber(format!("{w}{i:0>200}")));
                write_atomically(&path, &format::encode(&cp, &SingleReplica::token())).unwrap();
            }
        }));
    }
    // ...and commits racing on one partition, each chaining from what it last read.
    for _ in 0..4u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut moved = 0;
            while moved < 50 {
                let from = store.get("m", "shardId-0").await.unwrap();
                let n = match &from {
                    Some(Checkpoint::Sequence(s)) => s.0.parse::<u64>().unwrap() + 1,
                    _ => 1,
                };
                let to = Checkpoint::Sequence(SequenceNumber(format!("{n:0>200}")));
                let lease = SingleReplica::token();
                let commit = Commit {
                    from: from.as_ref(),
                    to: &to,
                    lease: &lease,
                };
                match store.commit("m", "shardId-0", commit).await {
                    Ok(()) => moved += 1,
                    Err(e) => assert!(e.is_refusal(), "{e}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // With one shared temporary name, concurrent writers interleave bytes or rename each
    // other's half-written file; with unique names every read parses.
    assert!(store.get("raw", "shardId-0").await.unwrap().is_some());
    assert!(store.get("m", "shardId-0").await.unwrap().is_some());
}

#[tokio::test]
async fn a_corrupt_checkpoint_names_the_file_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileCheckpointStore::open(dir.path()).unwrap();
    std::fs::create_dir_all(dir.path().join("m")).unwrap();
    std::fs::write(dir.path().join("m").join("shardId-0.json"), b"{not json").unwrap();
    let msg = store.get("m", "shardId-0").await.unwrap_err().to_string();
    assert!(msg.contains("shardId-0.json"), "{msg}");
    assert!(msg.contains("delete it"), "{msg}");
}

#[tokio::test]
async fn a_renamed_mapping_takes_over_the_first_previous_name_with_progress() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileCheckpointStore::open(dir.path()).unwrap();
    let cp = Checkpoint::Sequence(SequenceNumber("42".into()));
    put(&store, "orders-f:live", "shardId-0", None, &cp).await;
    store.set_mapping_start("orders-f:live", 7).await.unwrap();
    let previous = vec!["never-used".to_string(), "orders-f:live".to_string()];
    assert_eq!(
        store.adopt("orders", &previous).await.unwrap().as_deref(),
        Some("orders-f:live")
    );
    assert_eq!(
        store.get("orders", "shardId-0").await.unwrap(),
        Some(cp.clone())
    );
    assert_eq!(store.mapping_start("orders").await.unwrap(), Some(7));
    assert_eq!(
        store.get("orders-f:live", "shardId-0").await.unwrap(),
        None,
        "moved, not copied"
    );
    // Once the new name has progress, nothing is taken over again.
    put(&store, "other", "shardId-0", None, &Checkpoint::ShardEnd).await;
    assert_eq!(
        store.adopt("orders", &["other".to_string()]).await.unwrap(),
        None
    );
    assert_eq!(store.get("orders", "shardId-0").await.unwrap(), Some(cp));
}

#[tokio::test]
async fn the_mapping_start_survives_a_new_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileCheckpointStore::open(dir.path()).unwrap();
    assert_eq!(store.mapping_start("m").await.unwrap(), None);
    store
        .set_mapping_start("m", 1_700_000_000_123)
        .await
        .unwrap();
    drop(store);
    let again = FileCheckpointStore::open(dir.path()).unwrap();
    assert_eq!(
        again.mapping_start("m").await.unwrap(),
        Some(1_700_000_000_123)
    );
}

#[test]
fn escaping_is_injective_enough() {
    assert_eq!(escape("orders-f:live"), "orders-f%3Alive");
    assert_eq!(escape("../x"), "%2E.%2Fx");
}

/// A checkpoint file with `text` in it.
fn file(dir: &Path, mapping: &str, shard: &str, text: &str) {
    std::fs::create_dir_all(dir.join(mapping)).unwrap();
    std::fs::write(dir.join(mapping).join(format!("{shard}.json")), text).unwrap();
}

#[tokio::test]
async fn files_written_by_earlier_releases_are_read_and_moved_on_from() {
    let dir = tempfile::tempdir().unwrap();
    // Literally what the release before format version 2 wrote.
    let seq = "49590338271490256608559692538361571095921575989136588898";
    file(
        dir.path(),
        "m",
        "shardId-0",
        &format!("{{\"sequence\":\"{seq}\"}}"),
    );
    file(dir.path(), "m", "shardId-1", "\"shard_end\"");
    let store = FileCheckpointStore::open(dir.path()).unwrap();
    let old = Checkpoint::Sequence(SequenceNumber(seq.into()));
    assert_eq!(
        store.get("m", "shardId-0").await.unwrap(),
        Some(old.clone())
    );
    assert_eq!(
        store.get("m", "shardId-1").await.unwrap(),
        Some(Checkpoint::ShardEnd)
    );
    // The first commit chains from it and rewrites the file in version 2.
    let next = Checkpoint::Sequence(SequenceNumber(format!("{seq}1")));
    put(&store, "m", "shardId-0", Some(&old), &next).await;
    store.flush().await.unwrap();
    let text = std::fs::read_to_string(dir.path().join("m").join("shardId-0.json")).unwrap();
    assert!(text.starts_with("{\"version\":2,"), "{text}");
    assert_eq!(store.get("m", "shardId-0").await.unwrap(), Some(next));
}

#[tokio::test]
async fn a_file_from_a_newer_format_is_refused_naming_the_version() {
    let dir = tempfile::tempdir().unwrap();
    file(
        dir.path(),
        "m",
        "shardId-0",
        // Version 3 is this release's (tumbling window state): 4 is from a newer one.
        r#"{"version":4,"position":{"sequence":"7"},"lease":{"owner":"w","counter":1}}"#,
    );
    let store = FileCheckpointStore::open(dir.path()).unwrap();
    let msg = store.get("m", "shardId-0").await.unwrap_err().to_string();
    assert!(msg.contains("shardId-0.json"), "{msg}");
    assert!(msg.contains("format version 4"), "{msg}");
    assert!(msg.contains("newer sluice"), "{msg}");
    // Nor is it overwritten by a commit.
    let to = Checkpoint::Sequence(SequenceNumber("8".into()));
    let lease = SingleReplica::token();
    let err = store
        .commit(
            "m",
            "shardId-0",
            Commit {
                from: None,
                to: &to,
                lease: &lease,
            },
        )
        .await
        .unwrap_err();
    assert!(!err.is_refusal(), "a store error: {err}");
}

#[tokio::test]
async fn commits_are_chained_and_fenced_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let at = |s: &str| Checkpoint::Sequence(SequenceNumber(s.into()));
    let (old, new) = (LeaseToken::new("w-1", 1), LeaseToken::new("w-2", 2));
    {
        let store = FileCheckpointStore::open(dir.path()).unwrap();
        let c = Commit {
            from: None,
            to: &at("5"),
            lease: &new,
        };
        store.commit("m", "shardId-0", c).await.unwrap();
    }
    // The token is kept in the file: a fresh store still fences the older one.
    let store = FileCheckpointStore::open(dir.path()).unwrap();
    let stale = Commit {
        from: Some(&at("5")),
        to: &at("6"),
        lease: &old,
    };
    assert!(matches!(
        store.commit("m", "shardId-0", stale).await,
        Err(CommitError::Fenced { .. })
    ));
    let unchained = Commit {
        from: Some(&at("4")),
        to: &at("6"),
        lease: &new,
    };
    assert!(matches!(
        store.commit("m", "shardId-0", unchained).await,
        Err(CommitError::NotChained { .. })
    ));
    let backwards = Commit {
        from: Some(&at("5")),
        to: &at("4"),
        lease: &new,
    };
    assert!(matches!(
        store.commit("m", "shardId-0", backwards).await,
        Err(CommitError::Backwards { .. })
    ));
    assert_eq!(store.get("m", "shardId-0").await.unwrap(), Some(at("5")));
    let ok = Commit {
        from: Some(&at("5")),
        to: &at("6"),
        lease: &new,
    };
    store.commit("m", "shardId-0", ok).await.unwrap();
    // Retried after a failure that hid its success: not refused, nothing written twice.
    store.commit("m", "shardId-0", ok).await.unwrap();
    assert_eq!(store.get("m", "shardId-0").await.unwrap(), Some(at("6")));
}

#[test]
fn escaped_names_read_back_as_they_were() {
    for name in ["shardId-000000000001", "a/b:c", ".hidden", "ünï code%", ""] {
        assert_eq!(unescape(&escape(name)).as_deref(), Some(name));
    }
    assert_eq!(unescape("%G1"), None);
    assert_eq!(unescape("%4"), None);
}

#[tokio::test]
async fn list_returns_every_shard_checkpoint_of_a_mapping_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileCheckpointStore::open(dir.path()).unwrap();
    let token = crate::lease::SingleReplica::token();
    for (shard, cp) in [
        ("shardId-2", Checkpoint::ShardEnd),
        ("odd:id", Checkpoint::Sequence(SequenceNumber("7".into()))),
    ] {
        store
            .commit(
                "m",
                shard,
                Commit {
                    from: None,
                    to: &cp,
                    lease: &token,
                },
            )
            .await
            .unwrap();
    }
    store.set_mapping_start("m", 5).await.unwrap();
    let listed = store.list("m").await.unwrap();
    assert_eq!(
        listed,
        vec![
            (
                "odd:id".to_string(),
                Checkpoint::Sequence(SequenceNumber("7".into()))
            ),
            ("shardId-2".to_string(), Checkpoint::ShardEnd),
        ]
    );
    assert!(store.list("other").await.unwrap().is_empty());
    assert!(!store.imported("m"));
    store.mark_imported("m", "leases").await.unwrap();
    assert!(store.imported("m"));
    assert_eq!(
        store.list("m").await.unwrap().len(),
        2,
        "the marker is no checkpoint"
    );
}

#[tokio::test]
async fn window_state_is_kept_with_its_checkpoint_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let a = Checkpoint::Sequence(SequenceNumber("5".into()));
    let b = Checkpoint::Sequence(SequenceNumber("9".into()));
    let window = WindowState {
        start_ms: 1_700_000_040_000,
        state: serde_json::from_str(r#"{"sum":"14"}"#).unwrap(),
    };
    let lease = SingleReplica::token();
    let commit = |from, to| Commit {
        from,
        to,
        lease: &lease,
    };
    {
        let store = FileCheckpointStore::open(dir.path()).unwrap();
        put(&store, "m", "shardId-0", None, &a).await;
        assert_eq!(store.window("m", "shardId-0").await.unwrap(), None);
        store
            .commit_window("m", "shardId-0", commit(Some(&a), &b), Some(&window))
            .await
            .unwrap();
        // The same commit retried is already there; a plain commit to the same place is not.
        store
            .commit_window("m", "shardId-0", commit(Some(&a), &b), Some(&window))
            .await
            .unwrap();
    }
    let store = FileCheckpointStore::open(dir.path()).unwrap();
    assert_eq!(
        store.window("m", "shardId-0").await.unwrap(),
        Some((b.clone(), window.clone()))
    );
    assert_eq!(store.get("m", "shardId-0").await.unwrap(), Some(b.clone()));
    let text = std::fs::read_to_string(dir.path().join("m").join("shardId-0.json")).unwrap();
    assert!(text.starts_with("{\"version\":3,"), "{text}");
    // A final invocation drops the state and keeps the checkpoint where it is (version 2 again).
    store
        .commit_window("m", "shardId-0", commit(Some(&b), &b), None)
        .await
        .unwrap();
    assert_eq!(store.window("m", "shardId-0").await.unwrap(), None);
    assert_eq!(store.get("m", "shardId-0").await.unwrap(), Some(b.clone()));
    store.flush().await.unwrap();
    let text = std::fs::read_to_string(dir.path().join("m").join("shardId-0.json")).unwrap();
    assert!(text.starts_with("{\"version\":2,"), "{text}");
    // Moving backwards is still refused, window or not.
    assert!(matches!(
        store
            .commit_window("m", "shardId-0", commit(Some(&b), &a), Some(&window))
            .await,
        Err(CommitError::Backwards { .. })
    ));
}
