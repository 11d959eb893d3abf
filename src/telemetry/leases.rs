//! Lease telemetry: what a mapping's lease coordinator reports, one call per event, through a
//! [`LeaseTelemetry`] (one per coordinated mapping). Each method records the event everywhere it
//! shows — the log line (with the mapping, this replica's worker id and the shard), the
//! `sluice_lease*` metrics ([`super::lease_metrics`]), and `/status` (the lease view and the
//! shard rows' owners) — mirroring [`super::MappingTelemetry`] for the shard workers.
//!
//! A lost lease is always logged at WARN with why ([`LossReason`]), who holds it now when known,
//! and the last error; never a record.

use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info, warn};

use super::lease_metrics::LeaseMetrics;
use super::metrics::Metrics;
use super::status::Status;

/// Why this replica lost a lease (the `reason` label of `sluice_lease_losses_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossReason {
    /// Another replica took it (it expired as seen there, or was stolen).
    Taken,
    /// It could not be renewed within the lease duration.
    RenewalFailed,
    /// Its lease item disappeared.
    Gone,
}

impl LossReason {
    /// Every reason, in the order of their discriminants.
    pub(super) const ALL: [LossReason; 3] = [
        LossReason::Taken,
        LossReason::RenewalFailed,
        LossReason::Gone,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LossReason::Taken => "taken",
            LossReason::RenewalFailed => "renewal_failed",
            LossReason::Gone => "gone",
        }
    }

    /// The log line's words for it.
    fn why(self) -> &'static str {
        match self {
            LossReason::Taken => "another replica took it",
            LossReason::RenewalFailed => "it could not be renewed within the lease duration",
            LossReason::Gone => "its lease item is gone from the table",
        }
    }
}

/// One lease as last read from the table, for `/status`'s `leases` view.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LeaseView {
    pub shard: String,
    /// The worker id holding it; None when free.
    pub owner: Option<String>,
    /// Its `leaseCounter`.
    pub counter: u64,
    /// Its checkpoint as stored (`SHARD_END` once the shard is done).
    pub checkpoint: String,
}

/// What one coordinated mapping's lease coordinator reports (see the module docs).
pub struct LeaseTelemetry {
    mapping: String,
    worker_id: String,
    metrics: LeaseMetrics,
    status: Arc<Status>,
}

impl LeaseTelemetry {
    /// The handle of `mapping` for this replica, `worker_id`; `/status` shows the worker id.
    pub fn new(
        mapping: &str,
        worker_id: &str,
        metrics: &Arc<Metrics>,
        status: &Arc<Status>,
    ) -> Arc<Self> {
        status.set_worker_id(worker_id);
        Arc::new(LeaseTelemetry {
            mapping: mapping.to_string(),
            worker_id: worker_id.to_string(),
            metrics: metrics.leases(mapping),
            status: status.clone(),
        })
    }

    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// Leases this replica holds now for the mapping (active and ended).
    pub fn held(&self, count: usize) {
        self.metrics.held(count);
    }

    /// A free lease, or one expired (not renewed for the lease duration as seen here), was taken.
    pub fn taken(&self, shard: &str, previous_owner: Option<&str>, expired: bool) {
        self.metrics.taken(expired);
        let kind = if expired { "expired" } else { "free" };
        info!(mapping = %self.mapping, worker = %self.worker_id, shard, kind, previous_owner,
              "lease taken");
    }

    /// A lease was stolen from `from` to balance the fleet.
    pub fn stolen(&self, shard: &str, from: &str) {
        self.metrics.stolen();
        info!(mapping = %self.mapping, worker = %self.worker_id, shard, from,
              "lease stolen to balance the fleet");
    }

    /// This replica lost the lease of `shard` for `reason`; `now_owner` holds it now when known,
    /// `detail` says more (the last renewal error). Logged at WARN; the shard's `/status` row, if
    /// it still has one, shows the new owner and why.
    pub fn lost(&self, shard: &str, reason: LossReason, now_owner: Option<&str>, detail: &str) {
        self.metrics.lost(reason);
        let detail = (!detail.is_empty()).then_some(detail);
        warn!(mapping = %self.mapping, worker = %self.worker_id, shard, reason = reason.as_str(),
              now_owner, detail,
              "lease lost: {}; the shard stops before its next dispatch", reason.why());
        self.status.update_existing(&self.mapping, shard, |s| {
            s.owner = now_owner.map(str::to_string);
            s.last_error = Some(match detail {
                Some(d) => format!("lease lost: {}: {d}", reason.why()),
                None => format!("lease lost: {}", reason.why()),
            });
        });
    }

    /// One successful renewal round-trip.
    pub fn renewed(&self, latency: Duration) {
        self.metrics.renewed(latency);
    }

    /// A renewal of `shard`'s lease failed; it is retried until the lease duration runs out.
    pub fn renewal_failed(&self, shard: &str, error: &str) {
        self.metrics.renewal_failed();
        warn!(mapping = %self.mapping, worker = %self.worker_id, shard, error,
              "lease renewal failed; retrying until the lease duration runs out");
    }

    /// A lease was given up: at shutdown (info), or after its shard ended (debug; known by the
    /// shard's `/status` row showing `ended`, or its lease view's checkpoint `SHARD_END`).
    pub fn released(&self, shard: &str) {
        self.metrics.released();
        let ended = self
            .status
            .get(&self.mapping, shard)
            .is_some_and(|s| s.state == super::ShardState::Ended)
            || self
                .status
                .lease_checkpoint(&self.mapping, shard)
                .as_deref()
                == Some("SHARD_END");
        if ended {
            debug!(mapping = %self.mapping, worker = %self.worker_id, shard,
                   "lease of an ended shard released");
        } else {
            info!(mapping = %self.mapping, worker = %self.worker_id, shard, "lease released");
        }
    }

    /// The mapping's leases as last read from the table: replaces its `/status` lease view.
    pub fn table(&self, leases: Vec<LeaseView>) {
        self.status.set_leases(&self.mapping, leases);
    }
}

#[cfg(test)]
mod tests;
