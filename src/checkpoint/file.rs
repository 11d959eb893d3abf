//! The embedded default [`CheckpointStore`]: one small JSON file per (mapping, shard) under the
//! checkpoint directory, replaced atomically (write a temporary file, fsync it, rename it over the
//! old one, fsync the directory), so a kill at any instant leaves either the old or the new
//! checkpoint, never a torn one.

use async_trait::async_trait;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Checkpoint, CheckpointError, CheckpointStore};

pub struct FileCheckpointStore {
    root: PathBuf,
}

impl FileCheckpointStore {
    /// Creates the directory if needed and checks it is writable.
    pub fn open(root: &Path) -> Result<Self, CheckpointError> {
        std::fs::create_dir_all(root)
            .map_err(|e| CheckpointError(format!("create {}: {e}", root.display())))?;
        let probe = root.join(".write-test");
        std::fs::write(&probe, b"ok")
            .and_then(|_| std::fs::remove_file(&probe))
            .map_err(|e| CheckpointError(format!("{} is not writable: {e}", root.display())))?;
        Ok(FileCheckpointStore {
            root: root.to_path_buf(),
        })
    }

    fn path(&self, mapping: &str, shard: &str) -> PathBuf {
        self.root
            .join(escape(mapping))
            .join(format!("{}.json", escape(shard)))
    }
}

/// Keeps file names portable and unambiguous: anything but `[A-Za-z0-9._-]` becomes `%XX`.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.starts_with('.') {
        out.replace_range(0..1, "%2E");
    }
    out
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("checkpoint paths have a parent");
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[async_trait]
impl CheckpointStore for FileCheckpointStore {
    async fn get(&self, mapping: &str, shard: &str) -> Result<Option<Checkpoint>, CheckpointError> {
        let path = self.path(mapping, shard);
        match tokio::fs::read(&path).await {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| CheckpointError(format!("{} is corrupt: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CheckpointError(format!("read {}: {e}", path.display()))),
        }
    }

    async fn put(
        &self,
        mapping: &str,
        shard: &str,
        checkpoint: &Checkpoint,
    ) -> Result<(), CheckpointError> {
        let path = self.path(mapping, shard);
        let bytes = serde_json::to_vec(checkpoint).expect("checkpoints serialize");
        tokio::task::spawn_blocking(move || {
            write_atomically(&path, &bytes)
                .map_err(|e| CheckpointError(format!("write {}: {e}", path.display())))
        })
        .await
        .map_err(|e| CheckpointError(format!("writer task failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SequenceNumber;

    #[tokio::test]
    async fn round_trip_and_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileCheckpointStore::open(dir.path()).unwrap();
        assert_eq!(store.get("m/1", "shardId-0").await.unwrap(), None);
        let a = Checkpoint::Sequence(SequenceNumber("123".into()));
        store.put("m/1", "shardId-0", &a).await.unwrap();
        assert_eq!(store.get("m/1", "shardId-0").await.unwrap(), Some(a));
        store
            .put("m/1", "shardId-0", &Checkpoint::ShardEnd)
            .await
            .unwrap();
        // A fresh store over the same directory sees the last write.
        let again = FileCheckpointStore::open(dir.path()).unwrap();
        assert_eq!(
            again.get("m/1", "shardId-0").await.unwrap(),
            Some(Checkpoint::ShardEnd)
        );
        assert_eq!(again.get("m/2", "shardId-0").await.unwrap(), None);
        assert!(!dir.path().join("m%2F1").join("shardId-0.json.tmp").exists());
    }

    #[test]
    fn escaping_is_injective_enough() {
        assert_eq!(escape("orders-f:live"), "orders-f%3Alive");
        assert_eq!(escape("../x"), "%2E.%2Fx");
    }
}
