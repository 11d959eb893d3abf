//! The embedded store's file-system steps: the directory's lock, escaped file names, and the
//! atomic replacement of one file (write a uniquely named temporary file, fsync it, rename it over
//! the old one, fsync the directory).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::checkpoint::CheckpointError;

/// Distinguishes the temporary files of concurrent writes within this process.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// True if `dir` holds a checkpoint or a start marker.
pub(super) fn holds_anything(dir: &Path) -> std::io::Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries {
                let name = e?.file_name();
                let name = name.to_string_lossy();
                if name.ends_with(".json") && !name.contains(".tmp-") {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Takes the exclusive lock on `<root>/.lock` and writes this process's PID into it.
pub(super) fn lock_dir(root: &Path) -> Result<File, CheckpointError> {
    let path = root.join(".lock");
    let io = |e: std::io::Error| CheckpointError(format!("lock {}: {e}", path.display()));
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let holder = if holder.is_empty() { "unknown" } else { holder };
            return Err(CheckpointError(format!(
                "checkpoint directory {} is in use by another sluice process (PID {holder}); \
                 one process per checkpoint_dir: stop the other one (or give this one its own \
                 checkpoint_dir)",
                root.display()
            )));
        }
        Err(TryLockError::Error(e)) => return Err(io(e)),
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(file)
}

/// Keeps file names portable and unambiguous: anything but `[A-Za-z0-9._-]` becomes `%XX`.
/// The inverse of [`escape`]; `None` for a name it cannot have made.
pub(super) fn unescape(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

pub(super) fn escape(s: &str) -> String {
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

pub(super) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("checkpoint paths have a parent");
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().expect("checkpoint paths name a file");
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    File::open(dir)?.sync_all()
}
