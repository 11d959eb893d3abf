//! The embedded store's journal: group commit for checkpoint writes. A commit appends its file's
//! new content (the same bytes the file will hold) to `<checkpoint_dir>/.journal-<generation>`
//! and returns once an fdatasync covers it; every commit waiting at that moment shares the one
//! fdatasync (the first to wait writes and syncs for all, the others wait for its outcome). The
//! per-shard JSON files are brought up to date from the journal later ([`Journal::rotate`], by the
//! store), and at every open ([`recover`]): a journal is only ever read after a crash.
//!
//! A record is `len: u32 LE, crc32: u32 LE, payload`, the payload being the file's path relative
//! to the checkpoint directory, a NUL, and the file's bytes. Reading stops at the first record
//! that is cut short or fails its CRC: only a write that was never acknowledged can be torn (an
//! acknowledged one was synced, and nothing is written after a failed write: the next write goes
//! to a new generation). Recovery applies every generation in order, the last record of a path
//! winning, which is the last commit made to it (commits to one file are made one at a time).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::write_atomically;
use crate::checkpoint::CheckpointError;

const PREFIX: &str = ".journal-";

fn generation_path(root: &Path, generation: u64) -> PathBuf {
    root.join(format!("{PREFIX}{generation:020}"))
}

/// The journal generations in `root`, oldest first.
fn generations(root: &Path) -> std::io::Result<Vec<u64>> {
    let mut found: Vec<u64> = std::fs::read_dir(root)?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix(PREFIX)?.parse().ok())
        .collect();
    found.sort_unstable();
    Ok(found)
}

/// Appends one record for `path`'s new `bytes` to `out`.
pub(super) fn record(out: &mut Vec<u8>, path: &str, bytes: &[u8]) {
    let len = path.len() + 1 + bytes.len();
    let mut crc = crc32fast::Hasher::new();
    crc.update(path.as_bytes());
    crc.update(&[0]);
    crc.update(bytes);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(path.as_bytes());
    out.push(0);
    out.extend_from_slice(bytes);
}

/// The whole records of one generation's bytes, in order: (relative path, file bytes).
pub(super) fn records(mut data: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    while data.len() >= 8 {
        let len = u32::from_le_bytes(data[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(data[4..8].try_into().expect("4 bytes"));
        let Some(payload) = data.get(8..8 + len) else {
            break; // cut short
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        let Some(nul) = payload.iter().position(|b| *b == 0) else {
            break;
        };
        let Ok(path) = std::str::from_utf8(&payload[..nul]) else {
            break;
        };
        out.push((path.to_string(), payload[nul + 1..].to_vec()));
        data = &data[8 + len..];
    }
    out
}

/// Brings the files in `root` up to date from any journal left by a process that stopped
/// without doing so, then deletes the journal. Returns the next generation to write.
pub(super) fn recover(root: &Path) -> Result<u64, CheckpointError> {
    let io = |what: &Path, e: std::io::Error| {
        CheckpointError(format!("recover the journal {}: {e}", what.display()))
    };
    let found = generations(root).map_err(|e| io(root, e))?;
    let mut latest: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for g in &found {
        let path = generation_path(root, *g);
        let mut data = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut data))
            .map_err(|e| io(&path, e))?;
        latest.extend(records(&data));
    }
    for (rel, bytes) in &latest {
        // A path is always `<escaped mapping>/<escaped shard>.json`: never absolute, never `..`.
        if rel
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
        {
            return Err(CheckpointError(format!(
                "the journal in {} names {rel:?}, which is not a checkpoint file",
                root.display()
            )));
        }
        let path = root.join(rel);
        write_atomically(&path, bytes).map_err(|e| io(&path, e))?;
    }
    for g in &found {
        let path = generation_path(root, *g);
        std::fs::remove_file(&path).map_err(|e| io(&path, e))?;
    }
    if !found.is_empty() {
        File::open(root)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(root, e))?;
    }
    Ok(found.last().map_or(0, |g| g + 1))
}

pub(super) struct Journal {
    root: PathBuf,
    state: Mutex<State>,
    synced: tokio::sync::Notify,
    /// fdatasyncs made, for tests and figures.
    pub(super) syncs: AtomicU64,
}

struct State {
    generation: u64,
    /// The generation's file; `None` until the first write (and after a failed one).
    file: Option<Arc<File>>,
    /// Bytes in the generation's file, written or pending.
    bytes: u64,
    /// Records not yet written, all of round `open_round`.
    pending: Vec<u8>,
    /// The round records appended now join.
    open_round: u64,
    /// Every round up to this one is written and synced, or failed.
    done_round: u64,
    /// Rounds whose write failed (kept bounded: failures are rare).
    failed: Vec<(RangeInclusive<u64>, String)>,
    /// A write is under way.
    writing: bool,
}

impl Journal {
    pub(super) fn new(root: &Path, generation: u64) -> Self {
        Journal {
            root: root.to_path_buf(),
            state: Mutex::new(State {
                generation,
                file: None,
                bytes: 0,
                pending: Vec::new(),
                open_round: 1,
                done_round: 0,
                failed: Vec::new(),
                writing: false,
            }),
            synced: tokio::sync::Notify::new(),
            syncs: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes written to the current generation.
    pub(super) fn len(&self) -> u64 {
        self.lock().bytes
    }

    /// Appends `path`'s new `bytes` and waits until they are synced (or failed to be).
    pub(super) async fn append(&self, path: &str, bytes: &[u8]) -> Result<(), CheckpointError> {
        let round = {
            let mut s = self.lock();
            let before = s.pending.len();
            record(&mut s.pending, path, bytes);
            s.bytes += (s.pending.len() - before) as u64;
            s.open_round
        };
        loop {
            let notified = self.synced.notified();
            let flush = {
                let mut s = self.lock();
                if s.done_round >= round {
                    return match s.failed.iter().find(|(r, _)| r.contains(&round)) {
                        Some((_, e)) => Err(CheckpointError(e.clone())),
                        None => Ok(()),
                    };
                }
                if s.writing {
                    None
                } else {
                    s.writing = true;
                    let flushing = s.open_round;
                    s.open_round += 1;
                    let buf = std::mem::take(&mut s.pending);
                    Some((flushing, buf, s.file.clone(), s.generation))
                }
            };
            match flush {
                None => notified.await,
                Some((flushing, buf, file, generation)) => {
                    let root = self.root.clone();
                    let written = tokio::task::spawn_blocking(move || {
                        write_and_sync(&root, generation, file, &buf)
                    })
                    .await
                    .unwrap_or_else(|e| Err(format!("journal writer failed: {e}")));
                    self.syncs.fetch_add(1, Ordering::Relaxed);
                    let mut s = self.lock();
                    match written {
                        Ok(file) => {
                            if s.generation == generation {
                                s.file = Some(file);
                            }
                        }
                        Err(e) => {
                            // Nothing more goes after a failed write: the next one starts a new
                            // generation, so a torn record can only ever be a file's last.
                            if s.generation == generation {
                                s.generation += 1;
                                s.file = None;
                                s.bytes = s.pending.len() as u64;
                            }
                            let from = s.done_round + 1;
                            if s.failed.len() >= 64 {
                                s.failed.remove(0);
                            }
                            s.failed.push((from..=flushing, e));
                        }
                    }
                    s.done_round = flushing;
                    s.writing = false;
                    drop(s);
                    self.synced.notify_waiters();
                }
            }
        }
    }

    /// Starts a new generation for what is appended from now on; returns the last one before
    /// it: those up to it may be deleted once the files hold everything appended so far.
    pub(super) fn rotate(&self) -> u64 {
        let mut s = self.lock();
        let old = s.generation;
        s.generation += 1;
        s.file = None;
        s.bytes = s.pending.len() as u64;
        old
    }

    /// Deletes every generation up to `upto`.
    pub(super) fn delete(&self, upto: u64) -> std::io::Result<()> {
        let existing = generations(&self.root)?;
        let mut any = false;
        for g in existing.iter().filter(|g| **g <= upto) {
            std::fs::remove_file(generation_path(&self.root, *g))?;
            any = true;
        }
        if any {
            File::open(&self.root)?.sync_all()?;
        }
        Ok(())
    }
}

/// Writes `buf` at the end of `generation`'s file (created on its first write, with the directory
/// synced so the file itself survives) and syncs it.
fn write_and_sync(
    root: &Path,
    generation: u64,
    file: Option<Arc<File>>,
    buf: &[u8],
) -> Result<Arc<File>, String> {
    let path = generation_path(root, generation);
    let io = |e: std::io::Error| format!("journal {}: {e}", path.display());
    let file = match file {
        Some(f) => f,
        None => {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io)?;
            File::open(root).and_then(|d| d.sync_all()).map_err(io)?;
            Arc::new(f)
        }
    };
    (&*file).write_all(buf).map_err(io)?;
    file.sync_data().map_err(io)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_up_to_the_first_torn_or_corrupt_one() {
        let mut data = Vec::new();
        record(&mut data, "a/s.json", b"{\"x\":1}");
        record(&mut data, "b/t.json", b"");
        let whole = data.len();
        record(&mut data, "a/s.json", b"{\"x\":2}");
        assert_eq!(
            records(&data),
            [
                ("a/s.json".to_string(), b"{\"x\":1}".to_vec()),
                ("b/t.json".to_string(), Vec::new()),
                ("a/s.json".to_string(), b"{\"x\":2}".to_vec()),
            ]
        );
        for cut in whole..data.len() {
            assert_eq!(records(&data[..cut]).len(), 2, "cut at {cut}");
        }
        let mut corrupt = data.clone();
        *corrupt.last_mut().unwrap() ^= 1;
        assert_eq!(records(&corrupt).len(), 2);
    }

    #[test]
    fn recovery_refuses_a_path_outside_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = Vec::new();
        record(&mut data, "../evil.json", b"{}");
        std::fs::write(generation_path(dir.path(), 3), &data).unwrap();
        let err = recover(dir.path()).unwrap_err().to_string();
        assert!(err.contains("../evil.json"), "{err}");
        assert!(!dir.path().parent().unwrap().join("evil.json").exists());
    }
}
