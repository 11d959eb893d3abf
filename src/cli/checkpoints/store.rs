//! Where a mapping's checkpoints are, for `sluice checkpoints`: the embedded store under
//! `checkpoint_dir` (opened with its directory lock, so a running sluice on the same directory is
//! refused) or the lease table of `coordination` (each move a conditional write that frees the
//! lease and advances its counter, fencing a holder that still runs). A lease whose owner renews
//! it — its counter moves within `lease_duration` — is held by a live worker: [`Store::live`]
//! names those, and the caller refuses to move them without `--force`.

use std::sync::Arc;
use std::time::Duration;

use crate::checkpoint::{Checkpoint, CheckpointStore, FileCheckpointStore};
use crate::config::{Config, StartingPosition};
use crate::lease::dynamo::{LeaseError, LeaseTable};
use crate::lease::item::{LeaseCheckpoint, LeaseItem};

/// What to do with one partition's checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Checkpoint it here: reading resumes just after.
    To(Checkpoint),
    /// No checkpoint: it starts at the mapping's starting position (a lease keeps the sentinel
    /// of that position, as a new lease has).
    Clear,
}

/// One partition as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub partition: String,
    /// The checkpoint as stored (a sequence number, `SHARD_END`, a lease's start sentinel).
    pub checkpoint: String,
    /// The lease's owner and counter (lease table only).
    pub owner: Option<String>,
    pub counter: Option<u64>,
    /// An open tumbling window's state is stored with it.
    pub window: bool,
}

pub enum Store {
    File(Arc<FileCheckpointStore>),
    Leases {
        table: LeaseTable,
        name: String,
        lease_duration: Duration,
    },
}

/// How long past `lease_duration` a lease is watched before it counts as not renewed.
const WATCH_MARGIN: Duration = Duration::from_millis(500);
/// Attempts of a forced move whose lease keeps moving under it.
const FORCED_ATTEMPTS: usize = 5;

/// The lease sentinel of a starting position.
pub fn sentinel(start: StartingPosition) -> LeaseCheckpoint {
    match start {
        StartingPosition::TrimHorizon => LeaseCheckpoint::TrimHorizon,
        StartingPosition::Latest => LeaseCheckpoint::Latest,
        StartingPosition::AtTimestamp(_) => LeaseCheckpoint::AtTimestamp,
    }
}

fn table_error(e: LeaseError) -> String {
    e.to_string()
}

impl Store {
    /// The store `cfg` keeps checkpoints in; `dynamodb` is the lease table's client when
    /// `cfg.coordination` is set.
    pub fn open(cfg: &Config, dynamodb: Option<aws_sdk_dynamodb::Client>) -> Result<Store, String> {
        match (&cfg.coordination, dynamodb) {
            (Some(c), Some(client)) => Ok(Store::Leases {
                table: LeaseTable::new(client, &c.lease_table),
                name: c.lease_table.clone(),
                lease_duration: c.lease_duration,
            }),
            _ => FileCheckpointStore::open(&cfg.checkpoint_dir)
                .map(|f| Store::File(Arc::new(f)))
                .map_err(|e| e.to_string()),
        }
    }

    /// The embedded store a running sluice already holds open (and locked).
    pub fn file(store: Arc<FileCheckpointStore>) -> Store {
        Store::File(store)
    }

    /// Where the checkpoints are, for messages.
    pub fn describe(&self, cfg: &Config) -> String {
        match self {
            Store::File(_) => format!("checkpoint_dir {}", cfg.checkpoint_dir.display()),
            Store::Leases { name, .. } => format!("lease table {name}"),
        }
    }

    pub fn is_lease_table(&self) -> bool {
        matches!(self, Store::Leases { .. })
    }

    /// Every partition of `mapping` the store holds, by id.
    pub async fn list(&self, mapping: &str) -> Result<Vec<Entry>, String> {
        match self {
            Store::File(f) => {
                let mut out = Vec::new();
                for (partition, cp) in f.list(mapping).await.map_err(|e| e.to_string())? {
                    let window = f
                        .window(mapping, &partition)
                        .await
                        .map_err(|e| e.to_string())?
                        .is_some();
                    out.push(Entry {
                        partition,
                        checkpoint: cp.to_string(),
                        owner: None,
                        counter: None,
                        window,
                    });
                }
                Ok(out)
            }
            Store::Leases { table, .. } => {
                let mut items = table.list(mapping).await.map_err(table_error)?;
                items.sort_by(|a, b| a.shard.cmp(&b.shard));
                Ok(items.into_iter().map(|i| entry(&i)).collect())
            }
        }
    }

    /// When `mapping` first started (LATEST mappings read checkpoint-less shards from then).
    pub async fn mapping_start(&self, mapping: &str) -> Result<Option<i64>, String> {
        match self {
            Store::File(f) => f.mapping_start(mapping).await.map_err(|e| e.to_string()),
            Store::Leases { table, .. } => table.mapping_start(mapping).await.map_err(table_error),
        }
    }

    /// Records `mapping`'s first start as `ms`, replacing any recorded one.
    pub async fn put_mapping_start(&self, mapping: &str, ms: i64) -> Result<(), String> {
        match self {
            Store::File(f) => f
                .set_mapping_start(mapping, ms)
                .await
                .map_err(|e| e.to_string()),
            Store::Leases { table, .. } => table
                .put_mapping_start(mapping, ms)
                .await
                .map_err(table_error),
        }
    }

    /// Of `partitions`, those whose lease a live worker other than `except` holds:
    /// `(partition, owner)`. A lease with an owner is watched for `lease_duration`; if its counter
    /// moves, its owner renews it. Empty for the embedded store (its directory lock keeps a
    /// running sluice out, or it is the running sluice's own).
    pub async fn live(
        &self,
        mapping: &str,
        partitions: &[String],
        except: Option<&str>,
    ) -> Result<Vec<(String, String)>, String> {
        let Store::Leases {
            table,
            lease_duration,
            ..
        } = self
        else {
            return Ok(Vec::new());
        };
        let mut owned = Vec::new();
        for p in partitions {
            if let Some(item) = table.get(mapping, p).await.map_err(table_error)? {
                if item.owner.is_some() && item.owner.as_deref() != except {
                    owned.push(item);
                }
            }
        }
        if owned.is_empty() {
            return Ok(Vec::new());
        }
        let watch = (*lease_duration + WATCH_MARGIN).as_secs_f32();
        if except.is_some() {
            tracing::info!(
                mapping,
                leases = owned.len(),
                watch_s = watch,
                "watching the leases other replicas own to see whether they renew them"
            );
        } else {
            eprintln!(
                "watching {} owned lease(s) for {watch} s to see whether their owners renew them…",
                owned.len(),
            );
        }
        tokio::time::sleep(*lease_duration + WATCH_MARGIN).await;
        let mut live = Vec::new();
        for before in owned {
            let now = table
                .get(mapping, &before.shard)
                .await
                .map_err(table_error)?;
            if let Some(now) = now {
                if now.counter != before.counter {
                    if let Some(owner) = now.owner {
                        live.push((now.shard, owner));
                    }
                }
            }
        }
        Ok(live)
    }

    /// The partition's checkpoint as stored, for "old → new" (`-`: none).
    pub async fn shown(&self, mapping: &str, partition: &str) -> Result<String, String> {
        match self {
            Store::File(f) => Ok(f
                .get(mapping, partition)
                .await
                .map_err(|e| e.to_string())?
                .map_or_else(|| "-".to_string(), |c| c.to_string())),
            Store::Leases { table, .. } => Ok(table
                .get(mapping, partition)
                .await
                .map_err(table_error)?
                .map_or_else(
                    || "- (no lease)".to_string(),
                    |i| i.checkpoint.as_str().to_string(),
                )),
        }
    }

    /// Applies `change` to `partition`; returns the checkpoint as it was and as it is now.
    /// `start` is the mapping's starting position (a cleared lease keeps its sentinel); `parents`
    /// the shard's lineage, for a lease created here.
    pub async fn apply(
        &self,
        mapping: &str,
        partition: &str,
        change: &Change,
        start: StartingPosition,
        parents: &[String],
    ) -> Result<(String, String), String> {
        match self {
            Store::File(f) => {
                let to = match change {
                    Change::To(cp) => Some(cp),
                    Change::Clear => None,
                };
                let old = f
                    .overwrite(mapping, partition, to)
                    .await
                    .map_err(|e| e.to_string())?;
                let show = |c: Option<&Checkpoint>| c.map_or_else(|| "-".into(), |c| c.to_string());
                Ok((show(old.as_ref()), show(to)))
            }
            Store::Leases { table, .. } => {
                let to = match change {
                    Change::To(cp) => LeaseCheckpoint::from(cp),
                    Change::Clear => sentinel(start),
                };
                for _ in 0..FORCED_ATTEMPTS {
                    let Some(observed) =
                        table.get(mapping, partition).await.map_err(table_error)?
                    else {
                        let item = LeaseItem::new(mapping, partition, parents.to_vec(), to.clone());
                        if table.create(&item).await.map_err(table_error)? {
                            return Ok(("- (no lease)".into(), to.as_str().to_string()));
                        }
                        continue; // Created meanwhile: move it.
                    };
                    match table.overwrite_checkpoint(&observed, &to).await {
                        Ok(now) => {
                            return Ok((
                                observed.checkpoint.as_str().to_string(),
                                now.checkpoint.as_str().to_string(),
                            ))
                        }
                        Err(LeaseError::Conflict(_)) => continue,
                        Err(e) => return Err(e.to_string()),
                    }
                }
                Err(format!(
                    "the lease of {partition} kept moving ({FORCED_ATTEMPTS} attempts): a worker is committing to it; stop the mapping first"
                ))
            }
        }
    }
}

fn entry(i: &LeaseItem) -> Entry {
    Entry {
        partition: i.shard.clone(),
        checkpoint: i.checkpoint.as_str().to_string(),
        owner: i.owner.clone(),
        counter: Some(i.counter),
        window: i.window.is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SequenceNumber;

    fn seq(s: &str) -> Checkpoint {
        Checkpoint::Sequence(SequenceNumber(s.into()))
    }

    #[tokio::test]
    async fn the_file_store_moves_back_and_forth_clears_and_keeps_its_token() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::File(Arc::new(FileCheckpointStore::open(dir.path()).unwrap()));
        let tp = StartingPosition::TrimHorizon;
        assert_eq!(
            store
                .apply("m", "shardId-0", &Change::To(seq("50")), tp, &[])
                .await,
            Ok(("-".into(), "50".into()))
        );
        // Backwards: a replay.
        assert_eq!(
            store
                .apply("m", "shardId-0", &Change::To(seq("7")), tp, &[])
                .await,
            Ok(("50".into(), "7".into()))
        );
        assert_eq!(store.shown("m", "shardId-0").await, Ok("7".into()));
        let listed = store.list("m").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].checkpoint, "7");
        assert!(!listed[0].window);
        assert_eq!(
            store.apply("m", "shardId-0", &Change::Clear, tp, &[]).await,
            Ok(("7".into(), "-".into()))
        );
        assert!(store.list("m").await.unwrap().is_empty());
        // Clearing what is not there changes nothing.
        assert_eq!(
            store.apply("m", "shardId-0", &Change::Clear, tp, &[]).await,
            Ok(("-".into(), "-".into()))
        );
        assert!(store
            .live("m", &["shardId-0".into()], None)
            .await
            .unwrap()
            .is_empty());
        store.put_mapping_start("m", 1_000).await.unwrap();
        store.put_mapping_start("m", 5).await.unwrap();
        assert_eq!(store.mapping_start("m").await, Ok(Some(5)));
        drop(store);
        // A worker starting after a move commits on from it: the token chains.
        let file = FileCheckpointStore::open(dir.path()).unwrap();
        file.overwrite("m", "shardId-1", Some(&seq("9")))
            .await
            .unwrap();
        let token = crate::lease::SingleReplica::token();
        file.commit(
            "m",
            "shardId-1",
            crate::checkpoint::Commit {
                from: Some(&seq("9")),
                to: &seq("10"),
                lease: &token,
            },
        )
        .await
        .expect("a commit from the moved checkpoint");
    }

    #[test]
    fn a_running_sluice_on_the_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _running = FileCheckpointStore::open(dir.path()).unwrap();
        let cfg = crate::config::parse_str(&format!(
            "checkpoint_dir: {}\nmappings:\n  - EventSourceArn: arn:aws:kinesis:us-east-1:123456789012:stream/s\n    FunctionName: f\n    StartingPosition: LATEST\n",
            dir.path().display()
        ))
        .expect("valid");
        let err = Store::open(&cfg, None).err().expect("refused");
        assert!(err.contains("in use by another sluice process"), "{err}");
    }
}
