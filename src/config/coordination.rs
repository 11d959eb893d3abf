//! The process-level `coordination:` section: when present, stream mappings share their shards with
//! the other replicas through a KCL-style lease table in DynamoDB and keep their checkpoints on the
//! lease items; when absent, [`super::Config::coordination`] is `None` and one process owns every
//! shard (the default). This file holds the typed [`Coordination`], its reader (ranges, DynamoDB's
//! table-name rules, the worker id's shape, the scan interval against the lease duration) and the
//! default worker id, the one impure part of parsing: `<hostname>-<8 random hex chars>`.

use super::obj::Obj;
use std::time::Duration;

/// `lease_duration_seconds`: default 10, range 3..=300.
pub(super) const LEASE_DURATION_SECS: (i64, i64, i64) = (3, 300, 10);
/// `lease_scan_interval_millis`: default 1000, range 200..=60000.
pub(super) const SCAN_INTERVAL_MILLIS: (i64, i64, i64) = (200, 60_000, 1000);
/// `worker_id`: at most this many characters (it is stored as `leaseOwner`).
pub(super) const WORKER_ID_MAX_CHARS: usize = 256;
/// The hostname part of a default worker id keeps at most this many characters, so that with
/// `-` and 8 hex characters it stays within [`WORKER_ID_MAX_CHARS`].
const HOST_MAX_CHARS: usize = WORKER_ID_MAX_CHARS - 9;

/// How this replica coordinates with the others through the lease table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coordination {
    /// `lease_table`: DynamoDB table name (created on demand, on-demand billing).
    pub lease_table: String,
    /// `worker_id`: this replica's lease owner name; default `<hostname>-<8 random hex chars>`.
    pub worker_id: String,
    /// `lease_duration_seconds`: default 10, range 3..=300.
    pub lease_duration: Duration,
    /// `lease_scan_interval_millis`: how often the table is scanned for free, expired or stealable
    /// leases; default 1000, range 200..=60000; must be at most half the lease duration.
    pub scan_interval: Duration,
}

/// Reads `coordination` from the top-level object: `None` when the key is absent. Problems go to
/// the shared list with their path (`coordination.lease_table: is required`).
pub(super) fn coordination(top: &mut Obj<'_, '_>) -> Option<Coordination> {
    let path = top.field_path("coordination");
    let value = top.take("coordination")?;
    if value.is_null() {
        top.err(
            "coordination",
            "is empty: give at least lease_table, or remove the section to run a single replica"
                .into(),
        );
        return None;
    }
    let mut c = Obj::new(&path, value, top.errs);
    if !value.is_mapping() {
        return None; // Obj::new reported it.
    }
    let lease_table = c
        .required_string("lease_table")
        .and_then(|t| {
            if table_name_ok(&t) {
                return Some(t);
            }
            c.err(
                "lease_table",
                format!("{t:?} is not a DynamoDB table name: 3..=255 characters of a-z, A-Z, 0-9, '_', '-', '.'"),
            );
            None
        });
    let worker_id = match c.string("worker_id") {
        Some(w) if worker_id_ok(&w) => Some(w),
        Some(w) => {
            c.err(
                "worker_id",
                format!("{w:?} is not a worker id: 1..={WORKER_ID_MAX_CHARS} characters, no whitespace or control characters"),
            );
            None
        }
        None if c.has_error_for("worker_id") => None,
        None => Some(default_worker_id()),
    };
    let (min, max, default) = LEASE_DURATION_SECS;
    let duration_secs = c.int("lease_duration_seconds", min, max, None, default);
    let (min, max, default) = SCAN_INTERVAL_MILLIS;
    let scan_millis = c.int("lease_scan_interval_millis", min, max, None, default);
    let half = duration_secs * 1000 / 2;
    if scan_millis > half
        && !c.has_error_for("lease_duration_seconds")
        && !c.has_error_for("lease_scan_interval_millis")
    {
        c.err(
            "lease_scan_interval_millis",
            format!("{scan_millis} must be at most half of lease_duration_seconds ({duration_secs} s), so in range {min}..={half}"),
        );
    }
    c.finish();
    Some(Coordination {
        lease_table: lease_table?,
        worker_id: worker_id?,
        lease_duration: Duration::from_secs(duration_secs as u64),
        scan_interval: Duration::from_millis(scan_millis as u64),
    })
}

/// DynamoDB's table-name rules: 3 to 255 characters of `[a-zA-Z0-9_.-]`.
fn table_name_ok(name: &str) -> bool {
    (3..=255).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// 1 to [`WORKER_ID_MAX_CHARS`] characters, none of them whitespace or control characters.
fn worker_id_ok(id: &str) -> bool {
    (1..=WORKER_ID_MAX_CHARS).contains(&id.chars().count())
        && !id.chars().any(|ch| ch.is_whitespace() || ch.is_control())
}

/// `<hostname>-<8 random lowercase hex chars>`: unique per pod or task even when two share a
/// hostname (a restarted pod, `hostNetwork`), so a restarted replica never mistakes its
/// predecessor's leases for its own.
pub(super) fn default_worker_id() -> String {
    with_suffix(&hostname(), fastrand::u32(..))
}

/// `host` (cut to [`HOST_MAX_CHARS`] characters), `-`, and `suffix` as 8 lowercase hex chars.
pub(super) fn with_suffix(host: &str, suffix: u32) -> String {
    let host: String = host.chars().take(HOST_MAX_CHARS).collect();
    format!("{host}-{suffix:08x}")
}

/// This machine's name: `HOSTNAME` from the environment (set in every Kubernetes pod and most
/// containers), else `/etc/hostname`, else "sluice". The only I/O of config parsing.
pub(super) fn hostname() -> String {
    pick_hostname(
        std::env::var("HOSTNAME").ok(),
        std::fs::read_to_string("/etc/hostname").ok(),
    )
}

/// The first candidate that, trimmed, is a usable worker-id prefix (non-empty, no whitespace or
/// control characters inside); else "sluice".
pub(super) fn pick_hostname(env: Option<String>, file: Option<String>) -> String {
    [env, file]
        .into_iter()
        .flatten()
        .map(|h| h.trim().to_string())
        .find(|h| !h.is_empty() && worker_id_ok(&with_suffix(h, 0)))
        .unwrap_or_else(|| "sluice".into())
}
