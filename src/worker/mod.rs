//! Workers: the [`supervisor`] of a stream mapping runs one [`shard`] worker per partition it may
//! run; a shard worker reads, batches, dispatches under the retry policy, hands what it gives up on
//! to the on-failure destination and commits its checkpoint, strictly in order within its shard.
//! An SQS mapping runs the [`queue`] worker's pollers. Also here: what a mapping's workers share
//! ([`MappingContext`]), and the one way infrastructure calls are retried ([`until_ok`],
//! [`until_ok_by`], [`doubling`]).

#[cfg(test)]
mod lineage_tests;
pub mod queue;
pub mod shard;
pub mod supervisor;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::budget::ByteBudget;
use crate::checkpoint::CheckpointStore;
use crate::config::Mapping;
use crate::destination::Destination;
use crate::dispatch::Dispatcher;
use crate::retry::RetryPolicy;
use crate::telemetry::MappingTelemetry;

/// Sleeps for `duration` unless `cancel` fires first; false when cancelled.
pub(crate) async fn pause(
    cancel: &tokio_util::sync::CancellationToken,
    duration: std::time::Duration,
) -> bool {
    tokio::select! {
        _ = cancel.cancelled() => false,
        _ = tokio::time::sleep(duration) => true,
    }
}

/// [`pause`] for `?`: sleeps for `duration` unless `cancel` fires first.
pub(crate) async fn pause_or_cancelled(
    cancel: &tokio_util::sync::CancellationToken,
    duration: Duration,
) -> Result<(), Cancelled> {
    if pause(cancel, duration).await {
        Ok(())
    } else {
        Err(Cancelled)
    }
}

/// Shutdown came first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancelled;

/// The one way infrastructure calls are retried (checkpoint writes, start markers, destination
/// look-ups): `op` until it succeeds, with `report(error, failures so far, delay)` and a wait of
/// `backoff(failures)` after each failure, unless `cancel` fires first.
pub(crate) async fn until_ok<T, E, Op, Fut>(
    cancel: &tokio_util::sync::CancellationToken,
    backoff: impl Fn(u32) -> Duration,
    mut report: impl FnMut(&E, u32, Duration),
    mut op: Op,
) -> Result<T, Cancelled>
where
    Op: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    loop {
        // With all the time in the world, only success or shutdown ends the retries.
        if let Ok(v) = until_ok_by(cancel, || Duration::MAX, &backoff, &mut report, &mut op).await?
        {
            return Ok(v);
        }
    }
}

/// [`until_ok`] with a deadline: `left()` is the time left (zero once it has passed). After a
/// failure with no time left, the retries stop and the last error comes back as `Ok(Err(e))`;
/// otherwise the wait after a failure is `backoff(failures)` capped by the time left. `op` is
/// always tried at least once.
pub(crate) async fn until_ok_by<T, E, Op, Fut>(
    cancel: &tokio_util::sync::CancellationToken,
    left: impl Fn() -> Duration,
    backoff: impl Fn(u32) -> Duration,
    mut report: impl FnMut(&E, u32, Duration),
    mut op: Op,
) -> Result<Result<T, E>, Cancelled>
where
    Op: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut failures = 0u32;
    loop {
        match op().await {
            Ok(v) => return Ok(Ok(v)),
            Err(e) => {
                failures = failures.saturating_add(1);
                let left = left();
                if left.is_zero() {
                    return Ok(Err(e));
                }
                let delay = backoff(failures).min(left);
                report(&e, failures, delay);
                pause_or_cancelled(cancel, delay).await?;
            }
        }
    }
}

/// Doubling from `first` up to `cap`: the backoff of calls that are not the function's.
pub(crate) fn doubling(first: Duration, cap: Duration) -> impl Fn(u32) -> Duration {
    move |failures| {
        first
            .saturating_mul(1 << failures.saturating_sub(1).min(16))
            .min(cap)
    }
}

/// What every shard worker of one mapping shares.
pub struct MappingContext {
    pub mapping: Mapping,
    pub dispatcher: Arc<dyn Dispatcher>,
    pub checkpoints: Arc<dyn CheckpointStore>,
    pub destination: Option<Arc<dyn Destination>>,
    /// The mapping's logs, metrics and /status rows (a worker takes a handle per partition).
    pub telemetry: Arc<MappingTelemetry>,
    pub policy: RetryPolicy,
    pub clock: Clock,
    /// The process-wide in-flight byte budget.
    pub budget: Arc<ByteBudget>,
    /// The stream's retention in milliseconds, as last read from the source (0: not known yet).
    pub retention_ms: AtomicI64,
}

/// Wall-clock epoch milliseconds advanced by tokio's clock, so record age follows `tokio::time`
/// (and tests on a paused clock see records age without real waiting).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch_ms: i64,
    at: tokio::time::Instant,
}

impl Clock {
    pub fn new() -> Self {
        let epoch_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        Clock {
            epoch_ms,
            at: tokio::time::Instant::now(),
        }
    }

    pub fn now_ms(&self) -> i64 {
        self.epoch_ms + self.at.elapsed().as_millis() as i64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Until the stream says how long it keeps records (DescribeStreamSummary may be denied or
/// failing), they are assumed to live as long as Kinesis allows: a record is never given up on for
/// a retention sluice only guessed.
pub const UNKNOWN_RETENTION: Duration = Duration::from_secs(365 * 24 * 3600);

impl MappingContext {
    pub fn name(&self) -> &str {
        &self.mapping.name
    }

    /// Charges `bytes` of records now held in memory to the byte budget.
    pub fn hold(&self, bytes: u64) {
        self.budget.charge(bytes);
        self.report_budget();
    }

    /// Returns `bytes` charged with [`Self::hold`].
    pub fn unhold(&self, bytes: u64) {
        self.budget.release(bytes);
        self.report_budget();
    }

    fn report_budget(&self) {
        self.telemetry.in_flight_bytes(self.budget.used());
    }

    /// How long the stream keeps records.
    pub fn retention(&self) -> Duration {
        match self.retention_ms.load(Ordering::Relaxed) {
            ms if ms > 0 => Duration::from_millis(ms as u64),
            _ => UNKNOWN_RETENTION,
        }
    }

    pub fn set_retention(&self, retention: Duration) {
        self.retention_ms
            .store(retention.as_millis() as i64, Ordering::Relaxed);
    }

    /// True when a record that arrived at `arrival_ms` is to be given up on for its age: past
    /// MaximumRecordAgeInSeconds (the retry policy's rule), or past the stream's retention (with
    /// AWS's defaults of -1, a record is retried until it expires from the stream).
    pub fn expired(&self, arrival_ms: i64, now_ms: i64) -> bool {
        self.policy.expired(arrival_ms, now_ms)
            || now_ms.saturating_sub(arrival_ms) > self.retention().as_millis() as i64
    }

    /// How long until [`Self::expired`] holds for a record that arrived at `arrival_ms`.
    pub fn until_expiry(&self, arrival_ms: i64, now_ms: i64) -> Duration {
        let left = arrival_ms + self.retention().as_millis() as i64 - now_ms;
        let by_retention = Duration::from_millis(left.max(0) as u64);
        self.policy
            .until_expiry(arrival_ms, now_ms)
            .map_or(by_retention, |by_age| by_age.min(by_retention))
    }
}

#[cfg(test)]
mod retry_tests {
    use super::*;
    use tokio_util::sync::CancellationToken;

    #[tokio::test(start_paused = true)]
    async fn until_ok_retries_with_the_backoff_and_stops_when_cancelled() {
        let cancel = CancellationToken::new();
        let started = tokio::time::Instant::now();
        let mut calls = 0;
        let mut seen = Vec::new();
        let got = until_ok(
            &cancel,
            doubling(Duration::from_secs(1), Duration::from_secs(3)),
            |e: &&str, n, delay| seen.push((e.to_string(), n, delay)),
            || {
                calls += 1;
                let n = calls;
                async move {
                    if n < 4 {
                        Err("down")
                    } else {
                        Ok(n)
                    }
                }
            },
        )
        .await;
        assert_eq!(got, Ok(4));
        assert_eq!(started.elapsed(), Duration::from_secs(1 + 2 + 3));
        assert_eq!(
            seen.last(),
            Some(&("down".to_string(), 3, Duration::from_secs(3)))
        );
        cancel.cancel();
        let never: Result<(), Cancelled> = until_ok(
            &cancel,
            |_| Duration::from_secs(1),
            |_: &&str, _, _| {},
            || async { Err("down") },
        )
        .await;
        assert_eq!(never, Err(Cancelled));
    }

    #[tokio::test(start_paused = true)]
    async fn until_ok_by_caps_each_wait_by_the_time_left_and_stops_at_the_deadline() {
        let cancel = CancellationToken::new();
        let started = tokio::time::Instant::now();
        let deadline = started + Duration::from_millis(2_500);
        let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
        let mut seen = Vec::new();
        let mut calls = 0;
        let got: Result<Result<(), String>, Cancelled> = until_ok_by(
            &cancel,
            left,
            |_| Duration::from_secs(1),
            |_: &String, n, delay| seen.push((n, delay)),
            || {
                calls += 1;
                let n = calls;
                async move { Err(format!("down {n}")) }
            },
        )
        .await;
        // Tried at 0 s, 1 s, 2 s and 2.5 s (the last wait cut to the 0.5 s left); the last
        // failure comes back once no time is left, without a wait.
        assert_eq!(got, Ok(Err("down 4".to_string())));
        assert_eq!(started.elapsed(), Duration::from_millis(2_500));
        assert_eq!(
            seen,
            [
                (1, Duration::from_secs(1)),
                (2, Duration::from_secs(1)),
                (3, Duration::from_millis(500))
            ]
        );

        // Success before the deadline; and an op past its deadline is still tried once.
        let mut calls = 0;
        let got: Result<Result<u32, &str>, Cancelled> = until_ok_by(
            &cancel,
            || Duration::ZERO,
            |_| Duration::from_secs(1),
            |_: &&str, _, _| {},
            || {
                calls += 1;
                async { Ok(7) }
            },
        )
        .await;
        assert_eq!((got, calls), (Ok(Ok(7)), 1));

        // Shutdown during a wait ends it.
        let stop = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            stop.cancel();
        });
        let at = tokio::time::Instant::now();
        let got: Result<Result<(), &str>, Cancelled> = until_ok_by(
            &cancel,
            || Duration::from_secs(60),
            |_| Duration::from_secs(1),
            |_: &&str, _, _| {},
            || async { Err("down") },
        )
        .await;
        assert_eq!(got, Err(Cancelled));
        assert_eq!(at.elapsed(), Duration::from_millis(300));
    }
}
