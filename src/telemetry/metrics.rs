//! The metrics registry, passed down from `app` (no globals). Names follow DESIGN.md §5
//! (`sluice_<name>_<unit>[_total]`); labels are bounded: mapping, outcome, error kind, shard state.
//! Each mapping resolves its series once ([`Metrics::mapping`] → [`MappingMetrics`]), so the
//! per-record and per-poll paths neither allocate label strings nor share a lock across mappings.
//! The `*_events_total` counters are AWS's ESM event counters (esm-spec.md §10) under our names.
//! The `sluice_lease*` families are registered here but live in [`super::lease_metrics`].

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::kafka_metrics::{KafkaFamilies, KafkaMetrics};
use super::lease_metrics::{LeaseFamilies, LeaseMetrics};
use super::reloads::ReloadFamilies;

mod forget;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct MappingLabel {
    pub(super) mapping: String,
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
    filtered_out: Family<MappingLabel, Counter>,
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
    /// The `sluice_lease*` families ([`super::lease_metrics`]).
    leases: LeaseFamilies,
    /// The `sluice_kafka*` families ([`super::kafka_metrics`]).
    kafka: KafkaFamilies,
    /// The `sluice_config_*` families ([`super::reloads`]).
    pub(super) reloads: ReloadFamilies,
    /// Each mapping's series, resolved once ([`Metrics::mapping`]).
    mappings: Mutex<HashMap<String, Arc<MappingMetrics>>>,
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
            filtered_out: Family::default(),
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
            leases: LeaseFamilies::default(),
            kafka: KafkaFamilies::default(),
            reloads: ReloadFamilies::default(),
            mappings: Mutex::new(HashMap::new()),
            registry: Registry::default(),
        };
        registry.register(
            "sluice_polled_events",
            "Records read from the source (AWS PolledEventCount)",
            m.polled.clone(),
        );
        registry.register("sluice_filtered_out_events", "Records that matched no FilterCriteria pattern: not sent, checkpointed past or deleted (AWS FilteredOutEventCount)", m.filtered_out.clone());
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
        m.leases.register(&mut registry);
        m.kafka.register(&mut registry);
        m.reloads.register(&mut registry);
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

    /// The series of one mapping, resolved once: recording an event through them takes no lock
    /// shared with other mappings and allocates nothing.
    pub fn mapping(&self, mapping: &str) -> Arc<MappingMetrics> {
        let mut all = self.mappings.lock().expect("metrics lock");
        if let Some(m) = all.get(mapping) {
            return m.clone();
        }
        let label = Self::label(mapping);
        let counter = |f: &Family<MappingLabel, Counter>| f.get_or_create(&label).clone();
        let gauge = |f: &Family<MappingLabel, Gauge>| f.get_or_create(&label).clone();
        let m = Arc::new(MappingMetrics {
            name: mapping.to_string(),
            polled: counter(&self.polled),
            filtered_out: counter(&self.filtered_out),
            invoked: counter(&self.invoked),
            failed_invoke: counter(&self.failed_invoke),
            dropped: counter(&self.dropped),
            destination_delivered: counter(&self.destination_delivered),
            destination_failures: counter(&self.destination_failures),
            checkpoints: counter(&self.checkpoints),
            sqs_received: counter(&self.sqs_received),
            sqs_deleted: counter(&self.sqs_deleted),
            sqs_returned: counter(&self.sqs_returned),
            sqs_extensions: counter(&self.sqs_extensions),
            sqs_in_flight: gauge(&self.sqs_in_flight),
            concurrency: gauge(&self.concurrency),
            worker_panics: counter(&self.worker_panics),
            dispatch_duration: self.dispatch_duration.get_or_create(&label).clone(),
            ages: Mutex::new(MappingAges::new(gauge(&self.iterator_age))),
            batches: Lazy::new(
                self.batches.clone(),
                mapping,
                OUTCOMES,
                |mapping, outcome| OutcomeLabels { mapping, outcome },
            ),
            source_errors: Lazy::new(
                self.source_errors.clone(),
                mapping,
                SOURCE_ERRORS,
                |mapping, error| ErrorLabels { mapping, error },
            ),
            shards: Lazy::new(self.shards.clone(), mapping, STATES, |mapping, state| {
                StateLabels { mapping, state }
            }),
        });
        all.insert(mapping.to_string(), m.clone());
        m
    }

    /// One Kafka mapping's lag series.
    pub fn kafka(&self, mapping: &str) -> KafkaMetrics {
        self.kafka.mapping(mapping)
    }

    /// One mapping's lease series (for its [`super::LeaseTelemetry`]).
    pub(super) fn leases(&self, mapping: &str) -> LeaseMetrics {
        self.leases.mapping(mapping)
    }

    /// Bytes charged to the process-wide in-flight budget.
    pub fn in_flight_bytes(&self, bytes: u64) {
        self.in_flight_bytes.set(bytes.min(i64::MAX as u64) as i64);
    }
}

/// The label values of the bounded labels, in the order their series are cached.
const OUTCOMES: &[&str] = &[
    "success",
    "partial_failure",
    "function_error",
    "throttled",
    "service_error",
    "payload_too_large",
];
const SOURCE_ERRORS: &[&str] = &[
    "throttled",
    "expired_iterator",
    "not_found",
    "trimmed",
    "service",
];
const STATES: &[&str] = &[
    "starting",
    "waiting_for_parent",
    "reading",
    "dispatching",
    "retrying",
    "ended",
    "failed",
];

/// One mapping's series of a family with one more bounded label: created on first use (so a
/// value never seen exports nothing), then reached without allocating.
struct Lazy<L, M> {
    family: Family<L, M>,
    mapping: String,
    values: &'static [&'static str],
    series: Vec<OnceLock<M>>,
    labels: fn(String, String) -> L,
}

impl<L, M> Lazy<L, M>
where
    L: Clone + std::hash::Hash + Eq,
    M: Clone + Default + prometheus_client::metrics::TypedMetric,
{
    fn new(
        family: Family<L, M>,
        mapping: &str,
        values: &'static [&'static str],
        labels: fn(String, String) -> L,
    ) -> Self {
        Lazy {
            family,
            mapping: mapping.to_string(),
            values,
            series: values.iter().map(|_| OnceLock::new()).collect(),
            labels,
        }
    }

    fn get(&self, value: &str) -> M {
        let create = || {
            self.family
                .get_or_create(&(self.labels)(self.mapping.clone(), value.to_string()))
                .clone()
        };
        match self.values.iter().position(|v| *v == value) {
            Some(i) => self.series[i].get_or_init(create).clone(),
            None => create(),
        }
    }
}

/// A mapping's series (see [`Metrics::mapping`]), one method per event.
pub struct MappingMetrics {
    name: String,
    polled: Counter,
    filtered_out: Counter,
    invoked: Counter,
    failed_invoke: Counter,
    dropped: Counter,
    destination_delivered: Counter,
    destination_failures: Counter,
    checkpoints: Counter,
    sqs_received: Counter,
    sqs_deleted: Counter,
    sqs_returned: Counter,
    sqs_extensions: Counter,
    sqs_in_flight: Gauge,
    concurrency: Gauge,
    worker_panics: Counter,
    dispatch_duration: Histogram,
    ages: Mutex<MappingAges>,
    batches: Lazy<OutcomeLabels, Counter>,
    source_errors: Lazy<ErrorLabels, Counter>,
    shards: Lazy<StateLabels, Gauge>,
}

impl MappingMetrics {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn polled(&self, n: usize) {
        self.polled.inc_by(n as u64);
    }

    pub fn filtered_out(&self, n: usize) {
        self.filtered_out.inc_by(n as u64);
    }

    /// An invocation reached the function with `n` records (whatever it answered).
    pub fn invoked(&self, n: usize, outcome: &str, took: Duration) {
        self.invoked.inc_by(n as u64);
        self.invoked_not(outcome, took);
    }

    /// An invocation that never reached the function (throttled, service error, too large).
    pub fn invoked_not(&self, outcome: &str, took: Duration) {
        self.batches.get(outcome).inc();
        self.dispatch_duration.observe(took.as_secs_f64());
    }

    pub fn failed_invoke(&self, n: usize) {
        self.failed_invoke.inc_by(n as u64);
    }

    pub fn dropped(&self, n: usize) {
        self.dropped.inc_by(n as u64);
    }

    pub fn destination_delivered(&self, n: usize) {
        self.destination_delivered.inc_by(n as u64);
    }

    pub fn destination_failure(&self) {
        self.destination_failures.inc();
    }

    pub fn source_error(&self, kind: &str) {
        self.source_errors.get(kind).inc();
    }

    pub fn checkpointed(&self) {
        self.checkpoints.inc();
    }

    pub fn sqs_received(&self, n: usize) {
        self.sqs_received.inc_by(n as u64);
        self.sqs_in_flight.inc_by(n as i64);
    }

    /// `deleted` messages succeeded and were deleted; `returned` failed and will reappear.
    pub fn sqs_finished(&self, deleted: usize, returned: usize) {
        self.sqs_deleted.inc_by(deleted as u64);
        self.sqs_returned.inc_by(returned as u64);
    }

    pub fn sqs_settled(&self, n: usize) {
        self.sqs_in_flight.dec_by(n as i64);
    }

    pub fn sqs_extended(&self, n: usize) {
        self.sqs_extensions.inc_by(n as u64);
    }

    pub fn concurrency(&self, n: usize) {
        self.concurrency.set(n as i64);
    }

    pub fn worker_panicked(&self) {
        self.worker_panics.inc();
    }

    /// A partition moved from state `from` (if any) to `to` (if any).
    pub fn shard_state(&self, from: Option<&str>, to: Option<&str>) {
        if let Some(from) = from {
            self.shards.get(from).dec();
        }
        if let Some(to) = to {
            self.shards.get(to).inc();
        }
    }

    /// Records a partition's iterator age and republishes the mapping's maximum. No allocation
    /// once the partition is known; the maximum is recomputed over the mapping's partitions only
    /// when the one that held it goes down.
    pub fn iterator_age(&self, partition: &str, age_ms: i64) {
        self.ages
            .lock()
            .expect("metrics lock")
            .set(partition, age_ms.max(0));
    }

    /// Forgets a partition that is no longer read (closed and drained).
    pub fn forget_partition(&self, partition: &str) {
        self.ages.lock().expect("metrics lock").remove(partition);
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
#[path = "metrics/tests.rs"]
mod tests;
