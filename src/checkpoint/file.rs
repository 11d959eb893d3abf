//! The embedded default [`CheckpointStore`]: one small JSON file per (mapping, shard) under the
//! checkpoint directory, replaced atomically (write a uniquely named temporary file, fsync it,
//! rename it over the old one, fsync the directory), so a kill at any instant leaves either the old
//! or the new checkpoint, never a torn one. The directory has one writer: [`FileCheckpointStore::open`]
//! takes an exclusive lock on `<dir>/.lock` (holding the PID) for the life of the store, so a second
//! process on the same directory (a rolling update with surge) is refused instead of dispatching
//! everything twice and moving checkpoints backwards. Each mapping's first start time is kept in
//! `<dir>/<mapping>/.start.json` (a name no escaped shard id can take).
//!
//! Each file is in the versioned format of [`super::format`] and records the lease token of the
//! commit that wrote it. A commit reads the checkpoint, applies [`check`] and writes, under a lock
//! per file (the directory lock keeps other processes out), so the read and the write are one step.
//!
//! Commits do not write the files themselves: they go through the [`journal`] (group commit: one
//! fdatasync for every commit waiting at that moment, whatever their shard or mapping), and the
//! store keeps each committed file's content in memory until the files are brought up to date
//! ([`FileCheckpointStore::flush`]): in the background once the journal passes
//! [`JOURNAL_LIMIT`], when the store is dropped, and from the journal at the next open after a
//! crash. Reads see the committed content either way.

use async_trait::async_trait;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
#[cfg(test)]
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

mod disk;
mod journal;
use disk::{escape, holds_anything, lock_dir, unescape, write_atomically};
use journal::Journal;

use super::format::{self, Stored, Unreadable};
use super::{
    check_window, Checkpoint, CheckpointError, CheckpointStore, Commit, CommitError, Verdict,
    WindowState,
};

/// The journal's size at which the files are brought up to date in the background.
pub const JOURNAL_LIMIT: u64 = 4 << 20;

pub struct FileCheckpointStore {
    root: PathBuf,
    /// One per checkpoint file: a commit's read, check and write are one step.
    commits: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
    inner: Arc<Inner>,
    /// Holds the directory's exclusive lock while the store lives (dropped last).
    _lock: File,
}

/// Checkpoint files' contents, by path.
type Files = Vec<(PathBuf, Arc<Vec<u8>>)>;

/// What commits and the background flush share.
struct Inner {
    journal: Journal,
    /// Committed file contents the files do not hold yet.
    unflushed: Mutex<HashMap<PathBuf, Arc<Vec<u8>>>>,
    /// One flush at a time.
    flushing: tokio::sync::Mutex<()>,
    journal_limit: u64,
    /// Tests: the store "crashed"; nothing more reaches the files.
    #[cfg(test)]
    crashed: std::sync::atomic::AtomicBool,
}

impl Inner {
    fn unflushed(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Arc<Vec<u8>>>> {
        self.unflushed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// [`Self::flush_now`] on a blocking thread. The caller holds `flushing`.
    async fn flush(self: &Arc<Self>) -> Result<(), CheckpointError> {
        let inner = self.clone();
        tokio::task::spawn_blocking(move || inner.flush_now())
            .await
            .map_err(|e| CheckpointError(format!("flush task failed: {e}")))?
    }

    /// Writes every unflushed file, then deletes the journal written before. The caller holds
    /// `flushing`. The new generation starts before the snapshot is taken: whatever lands in an
    /// older one was in memory by then (see the commit), so the files written hold it.
    fn flush_now(&self) -> Result<(), CheckpointError> {
        #[cfg(test)]
        if self.crashed.load(Ordering::Relaxed) {
            return Ok(());
        }
        let upto = self.journal.rotate();
        let files: Files = self
            .unflushed()
            .iter()
            .map(|(p, b)| (p.clone(), b.clone()))
            .collect();
        for (path, bytes) in &files {
            write_atomically(path, bytes)
                .map_err(|e| CheckpointError(format!("write {}: {e}", path.display())))?;
        }
        self.journal
            .delete(upto)
            .map_err(|e| CheckpointError(format!("delete the flushed journal: {e}")))?;
        // What a commit changed since stays unflushed.
        self.unflushed()
            .retain(|p, b| !files.iter().any(|(q, c)| p == q && Arc::ptr_eq(b, c)));
        Ok(())
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct MappingStart {
    started_at_ms: i64,
}

impl FileCheckpointStore {
    /// Creates the directory if needed, checks it is writable and takes its lock. Fails if another
    /// process holds the lock, naming the directory and that process's PID.
    pub fn open(root: &Path) -> Result<Self, CheckpointError> {
        std::fs::create_dir_all(root)
            .map_err(|e| CheckpointError(format!("create {}: {e}", root.display())))?;
        let lock = lock_dir(root)?;
        let probe = root.join(format!(".write-test-{}", std::process::id()));
        std::fs::write(&probe, b"ok")
            .and_then(|_| std::fs::remove_file(&probe))
            .map_err(|e| CheckpointError(format!("{} is not writable: {e}", root.display())))?;
        let generation = journal::recover(root)?;
        Ok(FileCheckpointStore {
            root: root.to_path_buf(),
            commits: Mutex::new(HashMap::new()),
            inner: Arc::new(Inner {
                journal: Journal::new(root, generation),
                unflushed: Mutex::new(HashMap::new()),
                flushing: tokio::sync::Mutex::new(()),
                journal_limit: JOURNAL_LIMIT,
                #[cfg(test)]
                crashed: std::sync::atomic::AtomicBool::new(false),
            }),
            _lock: lock,
        })
    }

    /// A store whose journal is flushed past `limit` bytes (tests).
    #[cfg(test)]
    fn with_journal_limit(root: &Path, limit: u64) -> Self {
        let mut store = Self::open(root).unwrap();
        Arc::get_mut(&mut store.inner).unwrap().journal_limit = limit;
        store
    }

    /// Stops as a killed process does: nothing more reaches the files (tests).
    #[cfg(test)]
    async fn crash(self) {
        self.inner.crashed.store(true, Ordering::Relaxed);
        // A flush under way finishes (a killed process's would just stop; either way the journal
        // and the files agree on every acknowledged commit).
        let _ = self.inner.flushing.lock().await;
    }

    /// Brings every checkpoint file up to date with what was committed (see the module docs).
    pub async fn flush(&self) -> Result<(), CheckpointError> {
        let _one = self.inner.flushing.lock().await;
        self.inner.flush().await
    }

    /// Flushes in the background once the journal is past its limit.
    fn flush_when_due(&self) {
        if self.inner.journal.len() < self.inner.journal_limit {
            return;
        }
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let Ok(_one) = inner.flushing.try_lock() else {
                return; // one is under way
            };
            if let Err(e) = inner.flush().await {
                tracing::warn!(error = %e, "could not bring the checkpoint files up to date from the journal; will try again");
            }
        });
    }

    /// The lock that makes one commit to `path` at a time.
    fn commit_lock(&self, path: &Path) -> Arc<tokio::sync::Mutex<()>> {
        self.commits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(path.to_path_buf())
            .or_default()
            .clone()
    }

    /// The checkpoint file's content as committed: unflushed, else the file's.
    async fn stored(&self, path: &Path) -> Result<Option<Stored>, CheckpointError> {
        let unflushed = self.inner.unflushed().get(path).cloned();
        match unflushed {
            Some(bytes) => Self::decoded(path, &bytes).map(Some),
            None => Self::read_checkpoint(path).await,
        }
    }

    fn path(&self, mapping: &str, shard: &str) -> PathBuf {
        self.root
            .join(escape(mapping))
            .join(format!("{}.json", escape(shard)))
    }

    /// Every shard checkpoint stored for `mapping`, by shard id (for an import into the lease
    /// table).
    pub async fn list(&self, mapping: &str) -> Result<Vec<(String, Checkpoint)>, CheckpointError> {
        self.flush().await?;
        let dir = self.root.join(escape(mapping));
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(CheckpointError(format!("read {}: {e}", dir.display()))),
        };
        let mut found = Vec::new();
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| CheckpointError(format!("read {}: {e}", dir.display())))?
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(".json") else {
                continue;
            };
            if stem.starts_with('.') || stem.contains(".tmp-") {
                continue; // the start marker, temporary files
            }
            let Some(shard) = unescape(stem) else {
                continue;
            };
            if let Some(stored) = Self::read_checkpoint(&entry.path()).await? {
                found.push((shard, stored.checkpoint));
            }
        }
        found.sort();
        Ok(found)
    }

    /// Replaces `shard`'s checkpoint by `to` (`None`: deletes it, so the shard starts from the
    /// mapping's starting position), whatever it was: an operator's move (`sluice checkpoints`),
    /// made with the process stopped (the directory's lock keeps a running one out), or by the
    /// running process itself for a mapping it has stopped and drained (`--running`). Backwards
    /// moves are allowed; an open tumbling window's state is dropped, since it belonged to the
    /// old checkpoint. The file keeps the token it was written under, so the next process's
    /// commits chain from `to`. Returns the checkpoint replaced.
    pub async fn overwrite(
        &self,
        mapping: &str,
        shard: &str,
        to: Option<&Checkpoint>,
    ) -> Result<Option<Checkpoint>, CheckpointError> {
        self.flush().await?;
        let path = self.path(mapping, shard);
        let lock = self.commit_lock(&path);
        let _one_at_a_time = lock.lock().await;
        // What a commit since the flush left in memory is replaced, like the file.
        self.inner.unflushed().remove(&path);
        let old = Self::read_checkpoint(&path).await?;
        match to {
            Some(to) => {
                let token = old
                    .as_ref()
                    .and_then(|s| s.lease.clone())
                    .unwrap_or_else(crate::lease::SingleReplica::token);
                Self::write_json(path, format::encode_window(to, &token, None)).await?;
            }
            None if old.is_some() => {
                tokio::task::spawn_blocking(move || {
                    std::fs::remove_file(&path)
                        .and_then(|_| match path.parent() {
                            Some(dir) => File::open(dir)?.sync_all(),
                            None => Ok(()),
                        })
                        .map_err(|e| CheckpointError(format!("delete {}: {e}", path.display())))
                })
                .await
                .map_err(|e| CheckpointError(format!("delete task failed: {e}")))??;
            }
            None => {}
        }
        Ok(old.map(|s| s.checkpoint))
    }

    /// Whether `mapping`'s checkpoints were imported into a lease table already.
    pub fn imported(&self, mapping: &str) -> bool {
        self.imported_path(mapping).exists()
    }

    /// Marks `mapping`'s checkpoints as imported, so a later start does not import them again
    /// (over leases the table has moved on, or cleaned up, since).
    pub async fn mark_imported(&self, mapping: &str, table: &str) -> Result<(), CheckpointError> {
        let bytes = serde_json::to_vec(&serde_json::json!({ "lease_table": table }))
            .expect("markers serialize");
        Self::write_json(self.imported_path(mapping), bytes).await
    }

    fn imported_path(&self, mapping: &str) -> PathBuf {
        self.root.join(escape(mapping)).join(".imported")
    }

    fn start_path(&self, mapping: &str) -> PathBuf {
        self.root.join(escape(mapping)).join(".start.json")
    }

    async fn read(path: &Path) -> Result<Option<Vec<u8>>, CheckpointError> {
        match tokio::fs::read(path).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CheckpointError(format!("read {}: {e}", path.display()))),
        }
    }

    fn does_not_parse(path: &Path, e: impl std::fmt::Display) -> CheckpointError {
        CheckpointError(format!(
            "{} does not parse ({e}); sluice will not guess where this shard got to: \
             restore the file from a backup, or delete it to start the shard again from \
             the mapping's StartingPosition",
            path.display()
        ))
    }

    async fn read_json<T: serde::de::DeserializeOwned>(
        path: &Path,
    ) -> Result<Option<T>, CheckpointError> {
        match Self::read(path).await? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Self::does_not_parse(path, e)),
            None => Ok(None),
        }
    }

    /// A checkpoint file, in any format this release reads.
    async fn read_checkpoint(path: &Path) -> Result<Option<Stored>, CheckpointError> {
        match Self::read(path).await? {
            Some(bytes) => Self::decoded(path, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// A checkpoint file's bytes, in any format this release reads.
    fn decoded(path: &Path, bytes: &[u8]) -> Result<Stored, CheckpointError> {
        match format::decode(bytes) {
            Ok(stored) => Ok(stored),
            Err(Unreadable::Malformed(e)) => Err(Self::does_not_parse(path, e)),
            Err(Unreadable::Version(v)) => Err(CheckpointError(format!(
                "{} is in checkpoint format version {v}, which this release does not know (it \
                 reads versions 1 to {}); it was written by a newer sluice: run that release \
                 again (do not delete the file, or the shard starts over)",
                path.display(),
                format::WINDOW_FORMAT_VERSION
            ))),
        }
    }

    async fn write_json(path: PathBuf, bytes: Vec<u8>) -> Result<(), CheckpointError> {
        tokio::task::spawn_blocking(move || {
            write_atomically(&path, &bytes)
                .map_err(|e| CheckpointError(format!("write {}: {e}", path.display())))
        })
        .await
        .map_err(|e| CheckpointError(format!("writer task failed: {e}")))?
    }
}

#[async_trait]
impl CheckpointStore for FileCheckpointStore {
    async fn get(&self, mapping: &str, shard: &str) -> Result<Option<Checkpoint>, CheckpointError> {
        Ok(self
            .stored(&self.path(mapping, shard))
            .await?
            .map(|s| s.checkpoint))
    }

    async fn commit(
        &self,
        mapping: &str,
        shard: &str,
        commit: Commit<'_>,
    ) -> Result<(), CommitError> {
        self.commit_window(mapping, shard, commit, None).await
    }

    async fn window(
        &self,
        mapping: &str,
        shard: &str,
    ) -> Result<Option<(Checkpoint, WindowState)>, CheckpointError> {
        Ok(self
            .stored(&self.path(mapping, shard))
            .await?
            .and_then(|s| Some((s.checkpoint, s.window?))))
    }

    async fn commit_window(
        &self,
        mapping: &str,
        shard: &str,
        commit: Commit<'_>,
        window: Option<&WindowState>,
    ) -> Result<(), CommitError> {
        let path = self.path(mapping, shard);
        let lock = self.commit_lock(&path);
        let _one_at_a_time = lock.lock().await;
        let stored = self.stored(&path).await?;
        let (checkpoint, stored_window, lease) = match &stored {
            Some(s) => (Some(&s.checkpoint), s.window.as_ref(), s.lease.as_ref()),
            None => (None, None, None),
        };
        match check_window(checkpoint, stored_window, lease, &commit, window)? {
            Verdict::AlreadyThere => Ok(()),
            Verdict::Write => {
                let bytes = Arc::new(format::encode_window(commit.to, commit.lease, window));
                let rel = path
                    .strip_prefix(&self.root)
                    .ok()
                    .and_then(|p| p.to_str())
                    .expect("checkpoint paths are escaped names under the root")
                    .to_string();
                // In memory before the journal: a flush that deletes the generation this lands in
                // took its snapshot after this, so the files then hold it (or newer).
                let before = self.inner.unflushed().insert(path.clone(), bytes.clone());
                if let Err(e) = self.inner.journal.append(&rel, &bytes).await {
                    // Not committed: reads see what was (a flush in between may have written the
                    // new content already, which is harmless: a commit is only ever made for
                    // records that succeeded, and the committer retries the same move). A commit
                    // whose future is dropped mid-append leaves its content here, to the same
                    // effect.
                    let mut unflushed = self.inner.unflushed();
                    match before {
                        Some(b) => unflushed.insert(path, b),
                        None => unflushed.remove(&path),
                    };
                    return Err(e.into());
                }
                self.flush_when_due();
                Ok(())
            }
        }
    }

    async fn adopt(
        &self,
        mapping: &str,
        previous: &[String],
    ) -> Result<Option<String>, CheckpointError> {
        self.flush().await?;
        let target = self.root.join(escape(mapping));
        let root = self.root.clone();
        let candidates: Vec<(String, PathBuf)> = previous
            .iter()
            .map(|p| (p.clone(), self.root.join(escape(p))))
            .collect();
        tokio::task::spawn_blocking(move || {
            let io = |what: &Path, e: std::io::Error| {
                CheckpointError(format!(
                    "carry over into {}: {}: {e}",
                    target.display(),
                    what.display()
                ))
            };
            if holds_anything(&target).map_err(|e| io(&target, e))? {
                return Ok(None);
            }
            for (name, dir) in candidates {
                if !holds_anything(&dir).map_err(|e| io(&dir, e))? {
                    continue;
                }
                if target.exists() {
                    std::fs::remove_dir_all(&target).map_err(|e| io(&target, e))?;
                }
                // One rename: the progress is under exactly one of the two names at any instant.
                std::fs::rename(&dir, &target).map_err(|e| io(&dir, e))?;
                File::open(&root)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| io(&root, e))?;
                return Ok(Some(name));
            }
            Ok(None)
        })
        .await
        .map_err(|e| CheckpointError(format!("carry-over task failed: {e}")))?
    }

    async fn mapping_start(&self, mapping: &str) -> Result<Option<i64>, CheckpointError> {
        Ok(Self::read_json::<MappingStart>(&self.start_path(mapping))
            .await?
            .map(|s| s.started_at_ms))
    }

    async fn set_mapping_start(&self, mapping: &str, epoch_ms: i64) -> Result<(), CheckpointError> {
        let bytes = serde_json::to_vec(&MappingStart {
            started_at_ms: epoch_ms,
        })
        .expect("start markers serialize");
        Self::write_json(self.start_path(mapping), bytes).await
    }
}

impl Drop for FileCheckpointStore {
    /// Leaves the files up to date (a clean stop needs no recovery), unless a background flush is
    /// under way: the next open then recovers from the journal.
    fn drop(&mut self) {
        let Ok(_one) = self.inner.flushing.try_lock() else {
            return;
        };
        if self.inner.unflushed().is_empty() {
            return;
        }
        if let Err(e) = self.inner.flush_now() {
            tracing::warn!(error = %e, "could not bring the checkpoint files up to date; the next start recovers them from the journal");
        }
    }
}

#[cfg(test)]
mod journal_tests;
#[cfg(test)]
mod tests;
