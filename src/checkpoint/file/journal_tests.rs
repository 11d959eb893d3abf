//! The embedded store's journal through the store: commits survive a crash in it (a torn tail
//! dropped), waiting commits share a write, the newest commit wins across generations and
//! background flushes, a failed write fails its commit only, a dropped commit stalls no one, and a
//! journal past its limit is flushed to the files.

use std::fs::OpenOptions;
use std::io::Write;

use super::tests::put;
use super::*;
use crate::lease::SingleReplica;
use crate::source::SequenceNumber;

fn seq(n: u64) -> Checkpoint {
    Checkpoint::Sequence(SequenceNumber(format!("{n:05}")))
}

fn journals(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".journal-")
        })
        .collect();
    found.sort();
    found
}

#[tokio::test]
async fn commits_survive_a_crash_in_the_journal_and_a_torn_tail_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileCheckpointStore::open(dir.path()).unwrap();
    put(&store, "m", "shardId-0", None, &seq(1)).await;
    store.flush().await.unwrap();
    put(&store, "m", "shardId-0", Some(&seq(1)), &seq(2)).await;
    put(&store, "m", "shardId-1", None, &seq(7)).await;
    store.crash().await;
    // The files lag behind: what was committed since the flush is only in the journal.
    let file = dir.path().join("m").join("shardId-0.json");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("\"00001\""), "{text}");
    assert!(!dir.path().join("m").join("shardId-1.json").exists());
    // A write cut short by the crash: never acknowledged, so it is dropped.
    let journal = journals(dir.path()).pop().expect("a journal");
    let mut torn = Vec::new();
    journal::record(
        &mut torn,
        "m/shardId-0.json",
        &format::encode(&seq(3), &SingleReplica::token()),
    );
    torn.truncate(torn.len() - 5);
    let mut f = OpenOptions::new().append(true).open(&journal).unwrap();
    f.write_all(&torn).unwrap();
    drop(f);
    let again = FileCheckpointStore::open(dir.path()).unwrap();
    assert_eq!(again.get("m", "shardId-0").await.unwrap(), Some(seq(2)));
    assert_eq!(again.get("m", "shardId-1").await.unwrap(), Some(seq(7)));
    // Recovery brought the files up to date and removed the journal.
    assert!(journals(dir.path()).is_empty());
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("\"00002\""), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_waiting_together_share_one_sync() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(FileCheckpointStore::open(dir.path()).unwrap());
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                put(&store, "m", &format!("shardId-{i}"), None, &seq(i)).await;
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let syncs = store.inner.journal.syncs();
    assert!(syncs <= 16, "{syncs} syncs for 64 commits");
    // Each of them is on disk, in the journal: a crash loses none.
    std::sync::Arc::into_inner(store).unwrap().crash().await;
    let again = FileCheckpointStore::open(dir.path()).unwrap();
    for i in 0..64 {
        assert_eq!(
            again.get("m", &format!("shardId-{i}")).await.unwrap(),
            Some(seq(i))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_commit_wins_across_generations_and_background_flushes() {
    let dir = tempfile::tempdir().unwrap();
    // A flush every few commits: generations come and go while commits go on.
    let store = FileCheckpointStore::with_journal_limit(dir.path(), 400);
    let mut from = [None, None];
    for n in 1..=200u64 {
        let shard = (n % 2) as usize;
        put(
            &store,
            "m",
            &format!("shardId-{shard}"),
            from[shard].as_ref(),
            &seq(n),
        )
        .await;
        from[shard] = Some(seq(n));
    }
    store.crash().await;
    let again = FileCheckpointStore::open(dir.path()).unwrap();
    assert_eq!(again.get("m", "shardId-0").await.unwrap(), Some(seq(200)));
    assert_eq!(again.get("m", "shardId-1").await.unwrap(), Some(seq(199)));
}

#[tokio::test]
async fn a_failed_journal_write_fails_the_commit_and_the_next_one_lands() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileCheckpointStore::open(dir.path()).unwrap();
    put(&store, "m", "shardId-0", None, &seq(1)).await;
    store.inner.journal.fail_writes(true);
    let lease = SingleReplica::token();
    let failed = store
        .commit(
            "m",
            "shardId-0",
            Commit {
                from: Some(&seq(1)),
                to: &seq(2),
                lease: &lease,
            },
        )
        .await;
    assert!(matches!(failed, Err(CommitError::Store(_))), "{failed:?}");
    assert_eq!(store.get("m", "shardId-0").await.unwrap(), Some(seq(1)));
    store.inner.journal.fail_writes(false);
    put(&store, "m", "shardId-0", Some(&seq(1)), &seq(2)).await;
    store.crash().await;
    let again = FileCheckpointStore::open(dir.path()).unwrap();
    assert_eq!(again.get("m", "shardId-0").await.unwrap(), Some(seq(2)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_dropped_while_its_write_runs_stalls_no_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(FileCheckpointStore::open(dir.path()).unwrap());
    store.inner.journal.slow_writes(300);
    let s = store.clone();
    let first = tokio::spawn(async move { put(&s, "m", "shardId-0", None, &seq(1)).await });
    // Dropped while it waits for the write it started.
    while !store.inner.journal.writing() {
        tokio::task::yield_now().await;
    }
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    store.inner.journal.slow_writes(0);
    let next = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        put(&store, "m", "shardId-1", None, &seq(5)).await
    })
    .await;
    assert!(next.is_ok(), "a later commit waited forever");
    assert_eq!(store.get("m", "shardId-1").await.unwrap(), Some(seq(5)));
}

#[tokio::test]
async fn a_journal_past_its_limit_is_flushed_to_the_files_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileCheckpointStore::with_journal_limit(dir.path(), 1024);
    let file = dir.path().join("m").join("shardId-0.json");
    let mut from = None;
    for n in 1..=20 {
        put(&store, "m", "shardId-0", from.as_ref(), &seq(n)).await;
        from = Some(seq(n));
    }
    // About 150 bytes a record: the limit was passed, and a flush started.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let flushed_past_limit = (10..=20).any(|n| text.contains(&format!("\"{n:05}\"")));
        if flushed_past_limit && journals(dir.path()).len() <= 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never flushed: {text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(store.get("m", "shardId-0").await.unwrap(), Some(seq(20)));
    // A clean stop (sluice flushes once its workers stopped) leaves the files current and no
    // journal behind.
    store.flush().await.unwrap();
    drop(store);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("\"00020\""), "{text}");
    assert!(journals(dir.path()).is_empty());
}
