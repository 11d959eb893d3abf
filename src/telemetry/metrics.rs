//! The metrics registry, passed down from `app` (no globals). Names follow DESIGN.md §5
//! (`sluice_<name>_<unit>[_total]`); labels are bounded: mapping, outcome, error kind, shard state.
//! The `*_events_total` counters are AWS's ESM event counters (esm-spec.md §10) under our names.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MappingLabel {
    mapping: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    mapping: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    mapping: String,
    error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    mapping: String,
    state: String,
}

type Histograms = Family<MappingLabel, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    polled: Family<MappingLabel, Counter>,
    invoked: Family<MappingLabel, Counter>,
    failed_invoke: Family<MappingLabel, Counter>,
    dropped: Family<MappingLabel, Counter>,
    destination_delivered: Family<MappingLabel, Counter>,
    destination_failures: Family<MappingLabel, Counter>,
    batches: Family<OutcomeLabels, Counter>,
    dispatch_duration: Histograms,
    iterator_age: Family<MappingLabel, Gauge>,
    source_errors: Family<ErrorLabels, Counter>,
    shards: Family<StateLabels, Gauge>,
    checkpoints: Family<MappingLabel, Counter>,
    sqs_received: Family<MappingLabel, Counter>,
    sqs_deleted: Family<MappingLabel, Counter>,
    sqs_returned: Family<MappingLabel, Counter>,
    sqs_extensions: Family<MappingLabel, Counter>,
    sqs_in_flight: Family<MappingLabel, Gauge>,
    concurrency: Family<MappingLabel, Gauge>,
    worker_panics: Family<MappingLabel, Counter>,
    in_flight_bytes: Gauge,
    /// Latest iterator age per shard, by mapping; each mapping's gauge shows the max over its
    /// shards. Readers share the outer lock; a mapping's shards lock only that mapping.
    ages: RwLock<HashMap<String, Mutex<MappingAges>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Metrics {
            polled: Family::default(),
            invoked: Family::default(),
            failed_invoke: Family::default(),
            dropped: Family::default(),
            destination_delivered: Family::default(),
            destination_failures: Family::default(),
            batches: Family::default(),
            dispatch_duration: Family::new_with_constructor(|| {
                Histogram::new([
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    300.0,
                ])
            }),
            iterator_age: Family::default(),
            source_errors: Family::default(),
            shards: Family::default(),
            checkpoints: Family::default(),
            sqs_received: Family::default(),
            sqs_deleted: Family::default(),
            sqs_returned: Family::default(),
            sqs_extensions: Family::default(),
            sqs_in_flight: Family::default(),
            concurrency: Family::default(),
            worker_panics: Family::default(),
            in_flight_bytes: Gauge::default(),
            ages: RwLock::new(HashMap::new()),
            registry: Registry::default(),
        };
        registry.register(
            "sluice_polled_events",
            "Records read from the source (AWS PolledEventCount)",
            m.polled.clone(),
        );
        registry.register(
            "sluice_invoked_events",
            "Records sent to the function; retries count again (AWS InvokedEventCount)",
            m.invoked.clone(),
        );
        registry.register("sluice_failed_invoke_events", "Records in invocations that failed or reported failed items (AWS FailedInvokeEventCount)", m.failed_invoke.clone());
        registry.register(
            "sluice_dropped_events",
            "Records given up on and recorded nowhere (AWS DroppedEventCount)",
            m.dropped.clone(),
        );
        registry.register(
            "sluice_on_failure_destination_delivered_events",
            "Records given up on and described to the on-failure destination (AWS OnFailureDestinationDeliveredEventCount)",
            m.destination_delivered.clone(),
        );
        registry.register(
            "sluice_destination_delivery_failures",
            "Failed sends to the on-failure destination (retried)",
            m.destination_failures.clone(),
        );
        registry.register("sluice_batches", "Invocations by outcome: success, partial_failure, function_error, throttled, service_error, payload_too_large", m.batches.clone());
        registry.register(
            "sluice_dispatch_duration_seconds",
            "Duration of one invocation",
            m.dispatch_duration.clone(),
        );
        registry.register(
            "sluice_iterator_age_milliseconds",
            "Age of the last record of the last invocation when it was sent, max over the mapping's shards (AWS IteratorAge)",
            m.iterator_age.clone(),
        );
        registry.register(
            "sluice_source_errors",
            "Source read errors by kind",
            m.source_errors.clone(),
        );
        registry.register("sluice_shards", "Shards by worker state", m.shards.clone());
        registry.register(
            "sluice_checkpoints",
            "Checkpoints written",
            m.checkpoints.clone(),
        );
        registry.register(
            "sluice_sqs_messages_received",
            "SQS messages received",
            m.sqs_received.clone(),
        );
        registry.register(
            "sluice_sqs_messages_deleted",
            "SQS messages deleted after success (AWS DeletedEventCount)",
            m.sqs_deleted.clone(),
        );
        registry.register(
            "sluice_sqs_messages_returned",
            "SQS messages left to reappear after their visibility timeout because they failed",
            m.sqs_returned.clone(),
        );
        registry.register(
            "sluice_sqs_visibility_extensions",
            "In-flight SQS messages whose visibility the heartbeat extended",
            m.sqs_extensions.clone(),
        );
        registry.register(
            "sluice_sqs_messages_in_flight",
            "SQS messages received and not yet deleted or returned",
            m.sqs_in_flight.clone(),
        );
        registry.register(
            "sluice_concurrency",
            "Concurrent pollers of an SQS mapping (scaled like AWS's)",
            m.concurrency.clone(),
        );
        registry.register(
            "sluice_worker_panics",
            "Workers that panicked and were restarted from their checkpoint",
            m.worker_panics.clone(),
        );
        registry.register(
            "sluice_in_flight_bytes",
            "Bytes of records held in memory, charged to max_in_flight_bytes",
            m.in_flight_bytes.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    fn label(mapping: &str) -> MappingLabel {
        MappingLabel {
            mapping: mapping.to_string(),
        }
    }

    pub fn polled(&self, mapping: &str, n: usize) {
        self.polled
            .get_or_create(&Self::label(mapping))
            .inc_by(n as u64);
    }

    pub fn invoked(&self, mapping: &str, n: usize, outcome: &str, took: Duration) {
        self.invoked
            .get_or_create(&Self::label(mapping))
            .inc_by(n as u64);
        self.batches
            .get_or_create(&OutcomeLabels {
                mapping: mapping.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
        self.dispatch_duration
            .get_or_create(&Self::label(mapping))
            .observe(took.as_secs_f64());
    }

    /// An invocation that never reached the function (throttled, service error, too large).
    pub fn invoked_not(&self, mapping: &str, outcome: &str, took: Duration) {
        self.batches
            .get_or_create(&OutcomeLabels {
                mapping: mapping.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
        self.dispatch_duration
            .get_or_create(&Self::label(mapping))
            .observe(took.as_secs_f64());
    }

    pub fn failed_invoke(&self, mapping: &str, n: usize) {
        self.failed_invoke
            .get_or_create(&Self::label(mapping))
            .inc_by(n as u64);
    }

    pub fn dropped(&self, mapping: &str, n: usize) {
        self.dropped
            .get_or_create(&Self::label(mapping))
            .inc_by(n as u64);
    }

    pub fn destination_delivered(&self, mapping: &str, n: usize) {
        self.destination_delivered
            .get_or_create(&Self::label(mapping))
            .inc_by(n as u64);
    }

    pub fn destination_failure(&self, mapping: &str) {
        self.destination_failures
            .get_or_create(&Self::label(mapping))
            .inc();
    }

    pub fn source_error(&self, mapping: &str, kind: &str) {
        self.source_errors
            .get_or_create(&ErrorLabels {
                mapping: mapping.to_string(),
                error: kind.to_string(),
            })
            .inc();
    }

    pub fn checkpointed(&self, mapping: &str) {
        self.checkpoints.get_or_create(&Self::label(mapping)).inc();
    }

    pub fn sqs_received(&self, mapping: &str, n: usize) {
        self.sqs_received
            .get_or_create(&Self::label(mapping))
            .inc_by(n as u64);
        self.sqs_in_flight
            .get_or_create(&Self::label(mapping))
            .inc_by(n as i64);
    }

    /// `deleted` messages succeeded and were deleted; `returned` failed and will reappear.
    pub fn sqs_finished(&self, mapping: &str, deleted: usize, returned: usize) {
        self.sqs_deleted
            .get_or_create(&Self::label(mapping))
            .inc_by(deleted as u64);
        self.sqs_returned
            .get_or_create(&Self::label(mapping))
            .inc_by(returned as u64);
    }

    pub fn sqs_settled(&self, mapping: &str, n: usize) {
        self.sqs_in_flight
            .get_or_create(&Self::label(mapping))
            .dec_by(n as i64);
    }

    pub fn sqs_extended(&self, mapping: &str, n: usize) {
        self.sqs_extensions
            .get_or_create(&Self::label(mapping))
            .inc_by(n as u64);
    }

    pub fn concurrency(&self, mapping: &str, n: usize) {
        self.concurrency
            .get_or_create(&Self::label(mapping))
            .set(n as i64);
    }

    pub fn worker_panicked(&self, mapping: &str) {
        self.worker_panics
            .get_or_create(&Self::label(mapping))
            .inc();
    }

    pub fn in_flight_bytes(&self, bytes: u64) {
        self.in_flight_bytes.set(bytes.min(i64::MAX as u64) as i64);
    }

    /// A shard moved from state `from` (if any) to `to` (if any).
    pub fn shard_state(&self, mapping: &str, from: Option<&str>, to: Option<&str>) {
        let labels = |state: &str| StateLabels {
            mapping: mapping.to_string(),
            state: state.to_string(),
        };
        if let Some(from) = from {
            self.shards.get_or_create(&labels(from)).dec();
        }
        if let Some(to) = to {
            self.shards.get_or_create(&labels(to)).inc();
        }
    }

    /// Records a shard's iterator age and republishes the mapping's maximum. No allocation once
    /// the shard is known; the maximum is recomputed over the mapping's shards only when the
    /// shard that held it goes down.
    pub fn iterator_age(&self, mapping: &str, shard: &str, age_ms: i64) {
        self.with_ages(mapping, |ages| ages.set(shard, age_ms.max(0)));
    }

    /// Forgets a shard that is no longer read (closed and drained).
    pub fn forget_shard(&self, mapping: &str, shard: &str) {
        self.with_ages(mapping, |ages| ages.remove(shard));
    }

    fn with_ages(&self, mapping: &str, f: impl FnOnce(&mut MappingAges)) {
        {
            let all = self.ages.read().expect("metrics lock");
            if let Some(ages) = all.get(mapping) {
                return f(&mut ages.lock().expect("metrics lock"));
            }
        }
        let gauge = self
            .iterator_age
            .get_or_create(&Self::label(mapping))
            .clone();
        let mut all = self.ages.write().expect("metrics lock");
        let ages = all
            .entry(mapping.to_string())
            .or_insert_with(|| Mutex::new(MappingAges::new(gauge)));
        f(ages.get_mut().expect("metrics lock"));
    }
}

/// One mapping's iterator ages and the gauge that shows their maximum.
struct MappingAges {
    shards: HashMap<String, i64>,
    max: i64,
    gauge: Gauge,
}

impl MappingAges {
    fn new(gauge: Gauge) -> Self {
        MappingAges {
            shards: HashMap::new(),
            max: 0,
            gauge,
        }
    }

    fn set(&mut self, shard: &str, age_ms: i64) {
        let before = match self.shards.get_mut(shard) {
            Some(v) => std::mem::replace(v, age_ms),
            None => {
                self.shards.insert(shard.to_string(), age_ms);
                0
            }
        };
        if age_ms >= self.max {
            self.max = age_ms;
        } else if before == self.max {
            self.recompute();
        }
        self.gauge.set(self.max);
    }

    fn remove(&mut self, shard: &str) {
        if self.shards.remove(shard) == Some(self.max) {
            self.recompute();
        }
        self.gauge.set(self.max);
    }

    fn recompute(&mut self) {
        self.max = self.shards.values().copied().max().unwrap_or(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iterator_age_is_the_max_over_shards() {
        let m = Metrics::new();
        m.iterator_age("orders", "s0", 500);
        m.iterator_age("orders", "s1", 1500);
        m.iterator_age("orders", "s1", 100);
        m.polled("orders", 3);
        m.invoked("orders", 3, "success", Duration::from_millis(20));
        let text = m.encode();
        assert!(
            text.contains("sluice_iterator_age_milliseconds{mapping=\"orders\"} 500"),
            "{text}"
        );
        // The shard holding the max ends: the next one shows; the last one gone shows 0.
        m.iterator_age("orders", "s1", 900);
        m.iterator_age("payments", "s0", 7000);
        m.forget_shard("orders", "s1");
        assert!(m
            .encode()
            .contains("sluice_iterator_age_milliseconds{mapping=\"orders\"} 500"));
        m.forget_shard("orders", "s0");
        let text = m.encode();
        assert!(
            text.contains("sluice_iterator_age_milliseconds{mapping=\"orders\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("sluice_iterator_age_milliseconds{mapping=\"payments\"} 7000"),
            "{text}"
        );
        assert!(
            text.contains("sluice_polled_events_total{mapping=\"orders\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("sluice_batches_total{mapping=\"orders\",outcome=\"success\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("sluice_dispatch_duration_seconds_count{mapping=\"orders\"} 1"),
            "{text}"
        );
    }
}
