//! The lease families of the registry (`sluice_lease*`), kept apart from [`super::metrics`] so each
//! file stays small: [`LeaseFamilies`] registers them once in [`super::Metrics::new`], and
//! [`LeaseFamilies::mapping`] resolves one mapping's series ([`LeaseMetrics`]) for its
//! [`super::LeaseTelemetry`], so recording a lease event allocates nothing.
//!
//! Labels stay bounded: `mapping`, plus `kind` (`free`, `expired`) on takes and `reason`
//! ([`LossReason`]) on losses, never a shard id or a worker id. The `kind` and `reason` series of a
//! mapping are created at 0 when its lease telemetry is made (only in coordinated mode), so an
//! alert on their increase sees the first event.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Duration;

use super::leases::LossReason;
use super::metrics::MappingLabel;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    mapping: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    mapping: String,
    reason: String,
}

/// Renewal round-trips: 1 ms to 10 s (a lease duration is typically 10 s).
fn renewal_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

/// The lease families, registered once.
pub(super) struct LeaseFamilies {
    held: Family<MappingLabel, Gauge>,
    takes: Family<KindLabels, Counter>,
    steals: Family<MappingLabel, Counter>,
    losses: Family<ReasonLabels, Counter>,
    renewal: Family<MappingLabel, Histogram, fn() -> Histogram>,
    renewal_failures: Family<MappingLabel, Counter>,
    releases: Family<MappingLabel, Counter>,
}

impl Default for LeaseFamilies {
    fn default() -> Self {
        LeaseFamilies {
            held: Family::default(),
            takes: Family::default(),
            steals: Family::default(),
            losses: Family::default(),
            renewal: Family::new_with_constructor(renewal_histogram),
            renewal_failures: Family::default(),
            releases: Family::default(),
        }
    }
}

impl LeaseFamilies {
    /// Adds the families to `registry` (they share their series with `self`).
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "sluice_leases_held",
            "Leases this replica holds for the mapping (active and ended)",
            self.held.clone(),
        );
        registry.register(
            "sluice_lease_takes",
            "Leases taken by this replica: kind=free (no owner) or expired (not renewed within the lease duration)",
            self.takes.clone(),
        );
        registry.register(
            "sluice_lease_steals",
            "Leases this replica stole from another to balance the fleet",
            self.steals.clone(),
        );
        registry.register(
            "sluice_lease_losses",
            "Leases this replica lost: reason=taken, renewal_failed or gone",
            self.losses.clone(),
        );
        registry.register(
            "sluice_lease_renewal_seconds",
            "Round-trip of one successful lease renewal",
            self.renewal.clone(),
        );
        registry.register(
            "sluice_lease_renewal_failures",
            "Lease renewals that failed (retried until the lease duration runs out)",
            self.renewal_failures.clone(),
        );
        registry.register(
            "sluice_lease_releases",
            "Leases this replica gave up (at shutdown, or after the shard ended)",
            self.releases.clone(),
        );
    }

    /// One mapping's series, resolved now; resolving a mapping twice shares its series.
    pub(super) fn mapping(&self, mapping: &str) -> LeaseMetrics {
        let label = MappingLabel {
            mapping: mapping.to_string(),
        };
        let take = |kind: &str| {
            self.takes
                .get_or_create(&KindLabels {
                    mapping: mapping.to_string(),
                    kind: kind.to_string(),
                })
                .clone()
        };
        let loss = |reason: LossReason| {
            self.losses
                .get_or_create(&ReasonLabels {
                    mapping: mapping.to_string(),
                    reason: reason.as_str().to_string(),
                })
                .clone()
        };
        LeaseMetrics {
            held: self.held.get_or_create(&label).clone(),
            takes_free: take("free"),
            takes_expired: take("expired"),
            steals: self.steals.get_or_create(&label).clone(),
            losses: LossReason::ALL.map(loss),
            renewal: self.renewal.get_or_create(&label).clone(),
            renewal_failures: self.renewal_failures.get_or_create(&label).clone(),
            releases: self.releases.get_or_create(&label).clone(),
        }
    }
}

impl LeaseFamilies {
    /// Removes every series of `mapping` (a mapping a reload stopped).
    pub(super) fn forget(&self, mapping: &str) {
        let label = MappingLabel {
            mapping: mapping.to_string(),
        };
        self.held.remove(&label);
        self.steals.remove(&label);
        self.renewal.remove(&label);
        self.renewal_failures.remove(&label);
        self.releases.remove(&label);
        for kind in ["free", "expired"] {
            self.takes.remove(&KindLabels {
                mapping: mapping.to_string(),
                kind: kind.to_string(),
            });
        }
        for reason in LossReason::ALL {
            self.losses.remove(&ReasonLabels {
                mapping: mapping.to_string(),
                reason: reason.as_str().to_string(),
            });
        }
    }
}

/// One mapping's lease series, one method per event.
pub(super) struct LeaseMetrics {
    held: Gauge,
    takes_free: Counter,
    takes_expired: Counter,
    steals: Counter,
    /// Indexed like [`LossReason::ALL`].
    losses: [Counter; 3],
    renewal: Histogram,
    renewal_failures: Counter,
    releases: Counter,
}

impl LeaseMetrics {
    pub(super) fn held(&self, count: usize) {
        self.held.set(count.min(i64::MAX as usize) as i64);
    }

    pub(super) fn taken(&self, expired: bool) {
        if expired {
            self.takes_expired.inc();
        } else {
            self.takes_free.inc();
        }
    }

    pub(super) fn stolen(&self) {
        self.steals.inc();
    }

    pub(super) fn lost(&self, reason: LossReason) {
        self.losses[reason as usize].inc();
    }

    pub(super) fn renewed(&self, latency: Duration) {
        self.renewal.observe(latency.as_secs_f64());
    }

    pub(super) fn renewal_failed(&self) {
        self.renewal_failures.inc();
    }

    pub(super) fn released(&self) {
        self.releases.inc();
    }
}
