//! Telemetry as one call per event. A worker holds a [`PartitionTelemetry`] for its partition (a
//! supervisor or queue worker a [`MappingTelemetry`] for its mapping); each method records one
//! event everywhere it shows — the log line (with the mapping and partition fields), the metrics,
//! and the partition's `/status` row — so the three never disagree and no call site repeats them.
//!
//! The handles resolve everything once: the mapping's metric series ([`MappingMetrics`]) and the
//! partition's status row, so recording an event allocates nothing and locks nothing shared with
//! other mappings (the row's own lock, and the mapping's iterator-age lock).
//!
//! Payloads never reach a log line above debug: a function error's body (which may echo record
//! data) is logged at debug only.

use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, error, info, warn};

use super::metrics::{MappingMetrics, Metrics};
use super::status::{Row, ShardState, ShardStatus, Status};
use crate::source::SourceError;

/// What a mapping's supervisor or queue worker reports.
pub struct MappingTelemetry {
    pub metrics: Arc<MappingMetrics>,
    pub status: Arc<Status>,
    /// The process's registry, for process-wide figures (the in-flight byte budget).
    process: Arc<Metrics>,
}

impl MappingTelemetry {
    pub fn new(mapping: &str, metrics: &Arc<Metrics>, status: &Arc<Status>) -> Arc<Self> {
        Arc::new(MappingTelemetry {
            metrics: metrics.mapping(mapping),
            status: status.clone(),
            process: metrics.clone(),
        })
    }

    /// Bytes charged to the process-wide in-flight budget, as last seen.
    pub fn in_flight_bytes(&self, used: u64) {
        self.process.in_flight_bytes(used);
        self.status.set_in_flight_bytes(used);
    }

    pub fn name(&self) -> &str {
        self.metrics.name()
    }

    /// A handle for one partition of this mapping (its status row is created if missing).
    pub fn partition(self: &Arc<Self>, id: &str) -> PartitionTelemetry {
        PartitionTelemetry {
            row: self.status.row(self.name(), id),
            id: Arc::from(id),
            mapping: self.clone(),
            state: None,
        }
    }

    /// The mapping made its first pass: every partition it may run is running.
    pub fn running(&self, partitions: usize, running: usize) {
        self.status.mapping_started(self.name());
        info!(
            mapping = self.name(),
            shards = partitions,
            running,
            "mapping running"
        );
    }

    /// The stream's retention could not be read; `kept` is what records are kept for meanwhile.
    pub fn retention_unknown(&self, e: &SourceError, kept: Duration) {
        self.metrics.source_error(e.kind());
        warn!(mapping = self.name(), error = %e, retention_h = kept.as_secs() / 3600,
              "cannot read the stream's retention; keeping the last known (until known, records are kept as long as Kinesis allows: 365 days)");
    }

    /// A partition's worker stopped for `why` (a panic, a refused commit; `error` says more) and
    /// is restarted from its checkpoint after `restart_in`; meanwhile it shows failed.
    pub fn partition_down(&self, partition: &str, why: &str, error: &str, restart_in: Duration) {
        error!(mapping = self.name(), shard = %partition, error, restart_in_ms = restart_in.as_millis() as u64,
               "{why}; restarting it from its checkpoint");
        self.status.update(self.name(), partition, |s| {
            s.state = ShardState::Failed;
            s.last_error = Some(format!("{error}; restarting from the checkpoint"));
        });
    }

    /// A partition's checkpoint cannot be read: it (and its children) cannot run; loud on every
    /// discovery pass until fixed.
    pub fn checkpoint_unreadable(&self, partition: &str, e: &dyn std::fmt::Display) {
        error!(mapping = self.name(), shard = %partition, error = %e,
               "cannot read the shard's checkpoint; the shard is down");
        self.status.update(self.name(), partition, |s| {
            s.state = ShardState::Failed;
            s.last_error = Some(e.to_string());
        });
    }

    /// A call to the source that is not one partition's read failed (listing, retention,
    /// resolving a queue); `what` says which, in the words of the log line.
    pub fn source_failed(&self, what: &str, e: &SourceError, retry_in: Option<Duration>) {
        self.metrics.source_error(e.kind());
        match retry_in {
            Some(d) => {
                warn!(mapping = self.name(), error = %e, retry_in_ms = d.as_millis() as u64, "{what}")
            }
            None => warn!(mapping = self.name(), error = %e, "{what}"),
        }
    }
}

/// What one partition's worker reports (see the module docs). Its state counts in the
/// `sluice_shards` gauge while the handle lives.
pub struct PartitionTelemetry {
    mapping: Arc<MappingTelemetry>,
    id: Arc<str>,
    row: Row,
    state: Option<ShardState>,
}

impl PartitionTelemetry {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn mapping(&self) -> &str {
        self.mapping.name()
    }

    pub fn metrics(&self) -> &MappingMetrics {
        &self.mapping.metrics
    }

    fn update(&self, f: impl FnOnce(&mut ShardStatus)) {
        f(&mut self.row.lock().expect("status row"));
    }

    /// The worker is now `state`, holding `buffered` records not yet in a batch.
    pub fn state(&mut self, state: ShardState, buffered: usize) {
        if self.state != Some(state) {
            self.mapping
                .metrics
                .shard_state(self.state.map(ShardState::as_str), Some(state.as_str()));
            self.state = Some(state);
        }
        self.update(|s| {
            s.state = state;
            s.buffered_records = buffered;
        });
    }

    pub fn started(&self) {
        info!(mapping = self.mapping(), shard = %self.id, "shard worker started");
    }

    pub fn stopped(&self, exit: &dyn std::fmt::Debug) {
        info!(mapping = self.mapping(), shard = %self.id, ?exit, "shard worker stopped");
    }

    /// The partition was read to its end and checkpointed: it leaves the iterator age, and counts
    /// as ended until the supervisor prunes it.
    pub fn ended(&mut self) {
        self.state(ShardState::Ended, 0);
        self.mapping.metrics.forget_partition(&self.id);
        self.state = None;
    }

    /// A read returned `records`; `idle` when it was empty with nothing buffered and the reader
    /// caught up (the iterator age is then 0, as Lambda reports).
    pub fn read(&self, records: usize, idle: bool, millis_behind: Option<i64>) {
        self.mapping.metrics.polled(records);
        if idle {
            self.mapping.metrics.iterator_age(&self.id, 0);
        }
        self.update(|s| {
            s.millis_behind_latest = millis_behind;
            s.last_error = None;
        });
    }

    pub fn read_to_end(&self) {
        info!(mapping = self.mapping(), shard = %self.id, "shard closed and fully read");
    }

    /// A read failed; `retry_in` is the backoff before the next one, if any.
    pub fn read_failed(&self, e: &SourceError, retry_in: Option<Duration>) {
        self.mapping.metrics.source_error(e.kind());
        self.update(|s| s.last_error = Some(e.to_string()));
        match (e, retry_in) {
            (SourceError::ExpiredIterator, _) => {
                debug!(mapping = self.mapping(), shard = %self.id, "iterator expired; re-fetching")
            }
            (SourceError::Trimmed(_), _) => {
                warn!(mapping = self.mapping(), shard = %self.id, error = %e,
                      "position is past the stream's retention; reading on from TRIM_HORIZON")
            }
            (_, Some(d)) => {
                warn!(mapping = self.mapping(), shard = %self.id, error = %e, retry_in_ms = d.as_millis() as u64, "read failed")
            }
            (_, None) => {
                warn!(mapping = self.mapping(), shard = %self.id, error = %e, "read failed")
            }
        }
    }

    /// `n` records matched none of the mapping's filters: they are not sent (a stream checkpoints
    /// past them, a queue deletes them).
    pub fn filtered_out(&self, n: usize) {
        self.mapping.metrics.filtered_out(n);
        debug!(mapping = self.mapping(), shard = %self.id, records = n, "filtered out");
    }

    /// The age of the last record of the invocation just made (AWS's IteratorAge).
    pub fn iterator_age(&self, age_ms: i64) {
        self.mapping.metrics.iterator_age(&self.id, age_ms);
    }

    /// An invocation of `n` records returned after `took`: `reached` when it reached the function
    /// (whatever it answered), `outcome` its label.
    pub fn invoked(&self, n: usize, reached: bool, outcome: &str, took: Duration) {
        if reached {
            self.mapping.metrics.invoked(n, outcome, took);
        } else {
            self.mapping.metrics.invoked_not(outcome, took);
        }
    }

    /// The start of a function error's response body, at debug only (it may echo record data).
    pub fn function_error_body(&self, body: &[u8]) {
        debug!(mapping = self.mapping(), shard = %self.id,
               body = %String::from_utf8_lossy(&body[..body.len().min(512)]),
               "function error response");
    }

    pub fn succeeded(&self, n: usize, last: &dyn std::fmt::Display, took: Duration) {
        debug!(mapping = self.mapping(), shard = %self.id, records = n, last = %last,
               took_ms = took.as_millis() as u64, "batch succeeded");
    }

    /// A partial batch response: the records before `first_failed` are done, `retrying` are not.
    pub fn partial_failure(&self, n: usize, first_failed: &dyn std::fmt::Display, retrying: usize) {
        self.mapping.metrics.failed_invoke(n);
        info!(mapping = self.mapping(), shard = %self.id, first_failed = %first_failed, retrying,
              "partial batch failure");
    }

    pub fn split_for_size(&self, n: usize, message: &str) {
        debug!(mapping = self.mapping(), shard = %self.id, records = n, %message,
               "payload too large; splitting");
    }

    /// An invocation of `n` records failed (`outcome`); `function_errors` so far for them.
    pub fn invocation_failed(&self, n: usize, outcome: &str, function_errors: u32, detail: &str) {
        self.mapping.metrics.failed_invoke(n);
        warn!(mapping = self.mapping(), shard = %self.id, records = n, outcome, function_errors,
              error = %detail, "invocation failed");
        self.update(|s| {
            s.retry_attempt = function_errors;
            s.last_error = Some(format!("{outcome}: {detail}"));
        });
    }

    /// Every record of the batch succeeded or was given up on.
    pub fn batch_done(&self) {
        self.update(|s| s.retry_attempt = 0);
    }

    pub fn giving_up(
        &self,
        condition: &str,
        n: usize,
        start: &dyn std::fmt::Display,
        end: &dyn std::fmt::Display,
    ) {
        warn!(mapping = self.mapping(), shard = %self.id, condition, records = n, start = %start,
              end = %end, "giving up on records");
    }

    pub fn delivered(&self, n: usize) {
        self.mapping.metrics.destination_delivered(n);
    }

    pub fn destination_failed(&self, e: &dyn std::fmt::Display, retry_in: Duration) {
        self.mapping.metrics.destination_failure();
        self.update(|s| s.last_error = Some(format!("destination: {e}")));
        warn!(mapping = self.mapping(), shard = %self.id, error = %e, retry_in_ms = retry_in.as_millis() as u64,
              "on-failure destination rejected the record; retrying (the shard waits)");
    }

    /// The destination kept failing until the records expired from the stream.
    pub fn destination_gave_out(
        &self,
        e: &dyn std::fmt::Display,
        n: usize,
        start: &dyn std::fmt::Display,
        end: &dyn std::fmt::Display,
    ) {
        self.mapping.metrics.destination_failure();
        self.mapping.metrics.dropped(n);
        self.update(|s| s.last_error = Some(format!("destination: {e}")));
        error!(mapping = self.mapping(), shard = %self.id, error = %e, records = n, start = %start, end = %end,
               "on-failure destination kept failing until the records expired from the stream; dropping them");
    }

    /// Records given up on with no destination configured.
    pub fn dropped(&self, n: usize) {
        self.mapping.metrics.dropped(n);
    }

    pub fn checkpoint_failed(&self, e: &dyn std::fmt::Display) {
        warn!(mapping = self.mapping(), shard = %self.id, error = %e, "checkpoint write failed; retrying");
    }

    /// The partition's lease is gone: the worker stops before its next dispatch.
    pub fn lease_lost(&self) {
        warn!(mapping = self.mapping(), shard = %self.id,
              "lease lost; the shard stops here, its checkpoint where it was");
    }

    /// The store refused a commit (not chained, backwards, or a stale token): the worker stops
    /// and the supervisor plans the shard again from its stored checkpoint.
    pub fn commit_refused(&self, why: &dyn std::fmt::Display) {
        error!(mapping = self.mapping(), shard = %self.id, error = %why,
               "checkpoint refused; the shard stops and is planned again from its checkpoint");
        self.update(|s| s.last_error = Some(why.to_string()));
    }

    /// A checkpoint was written; `shown` is how `/status` shows it.
    pub fn checkpointed(&self, shown: String) {
        self.mapping.metrics.checkpointed();
        self.update(|s| s.checkpoint = Some(shown));
    }
}

/// The events of an SQS mapping's lane (its one `/status` row, `queue`): the queue worker's
/// pollers share one handle.
impl PartitionTelemetry {
    /// The queue could not be resolved; the mapping waits, the others run.
    pub fn queue_unresolved(&self, queue: &str, e: &SourceError, retry_in: Duration) {
        self.mapping.metrics.source_error(e.kind());
        let what = if matches!(e, SourceError::NotFound(_)) {
            "the queue does not exist"
        } else {
            "cannot reach the queue"
        };
        error!(mapping = self.mapping(), queue, error = %e, retry_in_s = retry_in.as_secs(),
               "{what}; this mapping waits, the others run");
        self.update(|s| s.last_error = Some(format!("{what}: {e}")));
    }

    /// The queue is resolved and its pollers start: the mapping counts as started.
    pub fn queue_running(&self, url: &str, fifo: bool, visibility: Duration, in_flight: Duration) {
        info!(mapping = self.mapping(), queue = %url, fifo, visibility_timeout_s = visibility.as_secs(),
              in_flight_visibility_s = in_flight.as_secs(), "queue mapping running");
        self.mapping.status.mapping_started(self.mapping());
        self.update(|s| {
            s.state = ShardState::Reading;
            s.last_error = None;
        });
    }

    /// The pollers now wanted (AWS's concurrency).
    pub fn pollers(&self, n: usize) {
        self.mapping.metrics.concurrency(n);
    }

    pub fn received(&self, n: usize) {
        self.mapping.metrics.sqs_received(n);
        self.mapping.metrics.polled(n);
    }

    /// A receive failed; `retry_in` when the poller backs off before the next (a receive filling a
    /// batch is not retried: the batch goes as it is).
    pub fn receive_failed(&self, e: &SourceError, retry_in: Option<Duration>) {
        self.mapping.metrics.source_error(e.kind());
        if let Some(d) = retry_in {
            warn!(mapping = self.mapping(), error = %e, retry_in_ms = d.as_millis() as u64, "receive failed");
            self.update(|s| s.last_error = Some(e.to_string()));
        }
    }

    /// `n` messages of an invocation failed (reported in a partial batch response, or all of them).
    pub fn messages_failed(&self, n: usize) {
        self.mapping.metrics.failed_invoke(n);
    }

    /// A whole batch of `n` messages failed (`outcome`): they reappear after their visibility
    /// timeout.
    pub fn queue_batch_failed(&self, n: usize, outcome: &str, detail: &str) {
        warn!(mapping = self.mapping(), messages = n, outcome, error = %detail,
              "batch failed; its messages will reappear after their visibility timeout");
        self.update(|s| s.last_error = Some(format!("{outcome}: {detail}")));
    }

    /// A group settled: `deleted` succeeded and were deleted, `returned` failed, of `n` received.
    pub fn settled(&self, n: usize, deleted: usize, returned: usize) {
        self.mapping.metrics.sqs_finished(deleted, returned);
        self.mapping.metrics.sqs_settled(n);
    }

    /// The heartbeat extended the visibility of `n` in-flight messages.
    pub fn extended(&self, n: usize) {
        self.mapping.metrics.sqs_extended(n);
    }
}

/// However the worker ends (a panic included), its state leaves the `sluice_shards` gauge.
impl Drop for PartitionTelemetry {
    fn drop(&mut self) {
        if let Some(s) = self.state.take() {
            self.mapping.metrics.shard_state(Some(s.as_str()), None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_call_shows_in_the_metrics_and_the_status_row() {
        let metrics = Arc::new(Metrics::new());
        let status = Arc::new(Status::new(1));
        let mapping = MappingTelemetry::new("orders", &metrics, &status);
        let mut p = mapping.partition("shard-0");
        p.state(ShardState::Reading, 3);
        p.read(3, false, Some(1200));
        p.invoked(3, true, "function_error", Duration::from_millis(5));
        p.iterator_age(700);
        p.invocation_failed(3, "function_error", 2, "boom");
        p.checkpointed("42".into());
        let row = status.get("orders", "shard-0").expect("row");
        assert_eq!(row.state, ShardState::Reading);
        assert_eq!(row.buffered_records, 3);
        assert_eq!(row.millis_behind_latest, Some(1200));
        assert_eq!(row.retry_attempt, 2);
        assert_eq!(row.last_error.as_deref(), Some("function_error: boom"));
        assert_eq!(row.checkpoint.as_deref(), Some("42"));
        let text = metrics.encode();
        for line in [
            "sluice_polled_events_total{mapping=\"orders\"} 3",
            "sluice_invoked_events_total{mapping=\"orders\"} 3",
            "sluice_failed_invoke_events_total{mapping=\"orders\"} 3",
            "sluice_batches_total{mapping=\"orders\",outcome=\"function_error\"} 1",
            "sluice_iterator_age_milliseconds{mapping=\"orders\"} 700",
            "sluice_checkpoints_total{mapping=\"orders\"} 1",
            "sluice_shards{mapping=\"orders\",state=\"reading\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from {text}");
        }
        // The handle going away (a worker ending, or panicking) takes its state off the gauge.
        drop(p);
        assert!(metrics
            .encode()
            .contains("sluice_shards{mapping=\"orders\",state=\"reading\"} 0"));
    }

    #[test]
    fn an_ended_partition_leaves_the_iterator_age_and_the_gauge() {
        let metrics = Arc::new(Metrics::new());
        let mapping = MappingTelemetry::new("orders", &metrics, &Arc::new(Status::new(1)));
        let mut p = mapping.partition("shard-0");
        p.state(ShardState::Dispatching, 0);
        p.invoked(1, true, "success", Duration::from_millis(1));
        p.iterator_age(9000);
        p.ended();
        let text = metrics.encode();
        assert!(
            text.contains("sluice_iterator_age_milliseconds{mapping=\"orders\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("sluice_shards{mapping=\"orders\",state=\"ended\"} 1"),
            "{text}"
        );
        drop(p);
        assert!(metrics
            .encode()
            .contains("sluice_shards{mapping=\"orders\",state=\"ended\"} 1"));
    }
}
