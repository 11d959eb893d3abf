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
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

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

/// The whole records of one generation's bytes, in order: (relative path, file bytes). Reading
/// stops at the first record cut short or failing its CRC, even with bytes after it: a crash can
/// persist the sectors of an unacknowledged write in any order, so a bad record followed by more
/// is what a torn group write looks like, not only corruption.
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

/// One group of records written and synced together, and how that went.
#[derive(Default)]
struct Round {
    result: OnceLock<Result<(), String>>,
}

pub(super) struct Journal {
    shared: Arc<Shared>,
}

/// What appenders and the writer share (the writer outlives a cancelled appender).
struct Shared {
    root: PathBuf,
    state: Mutex<State>,
    done: tokio::sync::Notify,
    /// Writes made (each one fdatasync), for tests and figures.
    syncs: AtomicU64,
    /// Tests: make every write fail.
    #[cfg(test)]
    fail_writes: std::sync::atomic::AtomicBool,
    /// Tests: make every write take this long (ms).
    #[cfg(test)]
    slow_writes: AtomicU64,
}

struct State {
    generation: u64,
    /// The current generation's file; `None` until its first write.
    file: Option<Arc<File>>,
    /// Bytes in the current generation, written or pending.
    bytes: u64,
    /// Records not yet written, all of round `open`.
    pending: Vec<u8>,
    /// The round records appended now join.
    open: Arc<Round>,
    /// A write is under way.
    writing: bool,
}

impl Journal {
    pub(super) fn new(root: &Path, generation: u64) -> Self {
        Journal {
            shared: Arc::new(Shared {
                root: root.to_path_buf(),
                state: Mutex::new(State {
                    generation,
                    file: None,
                    bytes: 0,
                    pending: Vec::new(),
                    open: Arc::default(),
                    writing: false,
                }),
                done: tokio::sync::Notify::new(),
                syncs: AtomicU64::new(0),
                #[cfg(test)]
                fail_writes: std::sync::atomic::AtomicBool::new(false),
                #[cfg(test)]
                slow_writes: AtomicU64::new(0),
            }),
        }
    }

    /// Bytes written to the current generation.
    pub(super) fn len(&self) -> u64 {
        self.shared.lock().bytes
    }

    /// Writes made so far.
    #[cfg(test)]
    pub(super) fn syncs(&self) -> u64 {
        self.shared.syncs.load(Ordering::Relaxed)
    }

    /// Tests: every write fails while `fail` is set.
    #[cfg(test)]
    pub(super) fn fail_writes(&self, fail: bool) {
        self.shared.fail_writes.store(fail, Ordering::Relaxed);
    }

    /// Tests: every write takes `ms` more.
    #[cfg(test)]
    pub(super) fn slow_writes(&self, ms: u64) {
        self.shared.slow_writes.store(ms, Ordering::Relaxed);
    }

    /// Tests: a write is under way.
    #[cfg(test)]
    pub(super) fn writing(&self) -> bool {
        self.shared.lock().writing
    }

    /// Appends `path`'s new `bytes` and waits until they are synced (or failed to be). Dropping
    /// the future never stalls the journal: the write, once started, finishes on its own.
    pub(super) async fn append(&self, path: &str, bytes: &[u8]) -> Result<(), CheckpointError> {
        let round = {
            let mut s = self.shared.lock();
            let before = s.pending.len();
            record(&mut s.pending, path, bytes);
            s.bytes += (s.pending.len() - before) as u64;
            s.open.clone()
        };
        loop {
            let done = self.shared.done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if let Some(result) = round.result.get() {
                return result.clone().map_err(CheckpointError);
            }
            self.shared.clone().write_if_idle();
            done.await;
        }
    }

    /// Starts a new generation for what is appended from now on; returns the last one before
    /// it: those up to it may be deleted once the files hold everything appended so far.
    pub(super) fn rotate(&self) -> u64 {
        let mut s = self.shared.lock();
        let old = s.generation;
        s.generation += 1;
        s.file = None;
        s.bytes = s.pending.len() as u64;
        old
    }

    /// Deletes every generation up to `upto` (never the current one: see [`rotate`](Self::rotate)).
    pub(super) fn delete(&self, upto: u64) -> std::io::Result<()> {
        let root = &self.shared.root;
        let mut any = false;
        for g in generations(root)?.iter().filter(|g| **g <= upto) {
            std::fs::remove_file(generation_path(root, *g))?;
            any = true;
        }
        if any {
            File::open(root)?.sync_all()?;
        }
        Ok(())
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Unless a write is under way, writes and syncs the open round on a blocking thread, which
    /// then records the round's result and wakes its waiters.
    fn write_if_idle(self: Arc<Self>) {
        let (round, buf) = {
            let mut s = self.lock();
            if s.writing {
                return;
            }
            s.writing = true;
            (std::mem::take(&mut s.open), std::mem::take(&mut s.pending))
        };
        tokio::task::spawn_blocking(move || {
            let result = self.write(&buf);
            self.syncs.fetch_add(1, Ordering::Relaxed);
            {
                let mut s = self.lock();
                if result.is_err() {
                    // Nothing more goes after a failed write: the next one starts a new
                    // generation, so a torn record can only ever be a file's last.
                    s.generation += 1;
                    s.file = None;
                    s.bytes = s.pending.len() as u64;
                }
                s.writing = false;
            }
            let _ = round.result.set(result);
            self.done.notify_waiters();
        });
    }

    /// Writes `buf` at the end of the current generation's file and syncs it. The file is the
    /// current generation's, taken under the lock, so a write never creates a generation a flush
    /// deleted (its records, appended before that flush took its snapshot, are in the files).
    fn write(&self, buf: &[u8]) -> Result<(), String> {
        #[cfg(test)]
        {
            let ms = self.slow_writes.load(Ordering::Relaxed);
            std::thread::sleep(std::time::Duration::from_millis(ms));
            if self.fail_writes.load(Ordering::Relaxed) {
                return Err("journal write failed (test)".into());
            }
        }
        let (file, created) = {
            let mut s = self.lock();
            match &s.file {
                Some(f) => (f.clone(), false),
                None => {
                    let path = generation_path(&self.root, s.generation);
                    let f = OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)
                        .map_err(|e| format!("journal {}: {e}", path.display()))?;
                    let f = Arc::new(f);
                    s.file = Some(f.clone());
                    (f, true)
                }
            }
        };
        let io = |e: std::io::Error| format!("journal in {}: {e}", self.root.display());
        if created {
            // The new file's directory entry survives a crash.
            File::open(&self.root)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        (&*file).write_all(buf).map_err(io)?;
        file.sync_data().map_err(io)
    }
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
