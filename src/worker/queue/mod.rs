//! SQS mappings (esm-spec.md §3.3, §5): pollers long-poll the queue, fill a batch within the
//! batching window, keep its messages invisible with a heartbeat while it is in flight
//! ([`heartbeat`]), dispatch it, delete what succeeded and return what failed to reappear after the
//! queue's visibility timeout (so the queue's redrive policy moves poison messages to its DLQ)
//! ([`settle`]).
//!
//! Scaling follows AWS's poller scaling: 5 pollers to start, more while full batches keep coming
//! and the function keeps up, fewer on throttles and errors and when the queue is empty, never more
//! than `ScalingConfig.MaximumConcurrency` invocations at once.
//!
//! FIFO: a batch is split by MessageGroupId and each group's part is dispatched on its own, in
//! order, and settled as soon as it is done, so a failing or slow group never fails or holds back
//! the others. SQS itself holds back a group's later messages while earlier ones are in flight;
//! when a message of a group fails, sluice also returns that group's later messages of the batch,
//! so nothing of the group overtakes it. Receives from a FIFO queue are made one at a time per
//! mapping, so the queue's group lock is never raced by two concurrent receives (dispatches of
//! different groups still run concurrently).
//!
//! Every receive goes through [`Shared::receive`].

mod heartbeat;
mod settle;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use super::{pause, MappingContext};
use crate::batch::MAX_PAYLOAD_BYTES;
use crate::config::QueueArn;
use crate::source::sqs::{Message, SqsQueue};
use crate::source::SourceError;
use crate::telemetry::ShardState;

/// AWS starts an SQS mapping with 5 concurrent pollers.
const INITIAL_POLLERS: usize = 5;
/// AWS's ceiling without MaximumConcurrency.
const DEFAULT_MAX_CONCURRENCY: usize = 1000;
/// Pollers added per scaling step (one step a second: 300 a minute, AWS's rate).
const SCALE_UP_STEP: usize = 5;
const SCALE_INTERVAL: Duration = Duration::from_secs(1);
/// The longest long poll SQS allows.
const LONG_POLL: Duration = Duration::from_secs(20);
/// The key of the mapping's entry in `/status`.
const STATUS_KEY: &str = "queue";

/// What the pollers saw since the last scaling step.
#[derive(Default)]
struct Stats {
    full_batches: AtomicU64,
    empty_receives: AtomicU64,
    errors: AtomicU64,
    throttles: AtomicU64,
}

impl Stats {
    fn take(&self) -> (u64, u64, u64, u64) {
        (
            self.full_batches.swap(0, Ordering::Relaxed),
            self.empty_receives.swap(0, Ordering::Relaxed),
            self.errors.swap(0, Ordering::Relaxed),
            self.throttles.swap(0, Ordering::Relaxed),
        )
    }
}

struct Shared {
    ctx: Arc<MappingContext>,
    queue: SqsQueue,
    /// The visibility every receive asks for and the heartbeat renews (see [`heartbeat`]).
    visibility: Duration,
    desired: AtomicUsize,
    stats: Stats,
    invocations: Semaphore,
    alive: Mutex<HashSet<usize>>,
    /// FIFO queues: one ReceiveMessage at a time.
    receiving: tokio::sync::Mutex<()>,
    /// Batches received and not yet settled.
    batches_in_flight: AtomicUsize,
}

/// FIFO receives while this mapping has batches in flight: short, since the groups those batches
/// lock become free as soon as they settle, and the other pollers wait for their turn.
const BUSY_FIFO_POLL: Duration = Duration::from_secs(1);

impl Shared {
    /// The one place messages are received: up to `max`, long-polling up to `wait`, each made
    /// invisible for the in-flight visibility.
    /// Waits for room in the byte budget first, and charges what it returns to it (the poller
    /// gives it back once the batch is settled). Cancel-safe.
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Message>, SourceError> {
        self.ctx.budget.room().await;
        let received = if !self.queue.fifo {
            self.queue.receive(max, wait, self.visibility).await
        } else {
            let _turn = self.receiving.lock().await;
            let busy = self.batches_in_flight.load(Ordering::SeqCst) > 0;
            let wait = if busy { wait.min(BUSY_FIFO_POLL) } else { wait };
            self.queue.receive(max, wait, self.visibility).await
        };
        if let Ok(messages) = &received {
            self.ctx.hold(bytes_of(messages));
        }
        received
    }
}

fn bytes_of(messages: &[Message]) -> u64 {
    messages.iter().map(|m| m.event.len() as u64).sum()
}

/// The next concurrency from the last interval's observations: halve on throttles, step down on
/// function errors (unless partial batch responses report them, as AWS does) and when receives
/// come back empty, step up while full batches keep coming without failures.
fn next_concurrency(
    current: usize,
    cap: usize,
    stats: (u64, u64, u64, u64),
    report_failures: bool,
) -> usize {
    let (full, empty, errors, throttles) = stats;
    let next = if throttles > 0 {
        current / 2
    } else if errors > 0 && !report_failures {
        current.saturating_sub(1)
    } else if full > 0 && empty == 0 {
        current + SCALE_UP_STEP
    } else if full == 0 && empty > 0 {
        current.saturating_sub(1)
    } else {
        current
    };
    next.clamp(1, cap)
}

pub async fn run_queue(
    ctx: Arc<MappingContext>,
    client: aws_sdk_sqs::Client,
    tracker: TaskTracker,
    cancel: CancellationToken,
) {
    let name = ctx.name().to_string();
    let Some(QueueArn {
        arn,
        region,
        account,
        queue,
        ..
    }) = ctx.mapping.queue().map(|q| &q.queue)
    else {
        error!(mapping = %name, "not an SQS mapping");
        return;
    };
    let mut failures = 0;
    let queue = loop {
        match SqsQueue::resolve(client.clone(), arn, region, account, queue).await {
            Ok(q) => break q,
            Err(e) => {
                failures += 1;
                ctx.metrics.source_error(&name, e.kind());
                let delay = Duration::from_secs(30).min(Duration::from_secs(1 << failures.min(5)));
                let what = if matches!(e, SourceError::NotFound(_)) {
                    "the queue does not exist"
                } else {
                    "cannot reach the queue"
                };
                error!(mapping = %name, queue = %arn, error = %e, retry_in_s = delay.as_secs(), "{what}; this mapping waits, the others run");
                ctx.status.update(&name, STATUS_KEY, |s| {
                    s.last_error = Some(format!("{what}: {e}"))
                });
                if !pause(&cancel, delay).await {
                    return;
                }
            }
        }
    };
    let target_timeout = ctx.dispatcher.function_timeout().await;
    if let Some(timeout) = target_timeout.filter(|t| queue.visibility_timeout < *t) {
        warn!(mapping = %name, visibility_timeout_s = queue.visibility_timeout.as_secs(), target_timeout_s = timeout.as_secs(),
              "the queue's visibility timeout is shorter than the target's timeout; sluice's heartbeat keeps in-flight messages hidden, but AWS recommends at least 6 times the function timeout");
    }
    let visibility = heartbeat::in_flight_visibility(queue.visibility_timeout);
    info!(mapping = %name, queue = %queue.url, fifo = queue.fifo, visibility_timeout_s = queue.visibility_timeout.as_secs(),
          in_flight_visibility_s = visibility.as_secs(), "queue mapping running");
    let cap = ctx
        .mapping
        .queue()
        .and_then(|q| q.max_concurrency)
        .map(|c| c as usize)
        .unwrap_or(DEFAULT_MAX_CONCURRENCY);
    let shared = Arc::new(Shared {
        desired: AtomicUsize::new(INITIAL_POLLERS.min(cap)),
        stats: Stats::default(),
        invocations: Semaphore::new(cap),
        alive: Mutex::new(HashSet::new()),
        receiving: tokio::sync::Mutex::new(()),
        batches_in_flight: AtomicUsize::new(0),
        visibility,
        queue,
        ctx: ctx.clone(),
    });
    ctx.status.mapping_started();
    ctx.status.update(&name, STATUS_KEY, |s| {
        s.state = ShardState::Reading;
        s.last_error = None;
    });
    loop {
        let desired = shared.desired.load(Ordering::SeqCst);
        ctx.metrics.concurrency(&name, desired);
        for id in 0..desired {
            if shared.alive.lock().expect("alive lock").insert(id) {
                tracker.spawn(poller(shared.clone(), id, cancel.clone()));
            }
        }
        if !pause(&cancel, SCALE_INTERVAL).await {
            return;
        }
        let next = next_concurrency(
            desired,
            cap,
            shared.stats.take(),
            ctx.mapping.report_batch_item_failures(),
        );
        if next != desired {
            debug!(mapping = %name, from = desired, to = next, "scaling pollers");
            shared.desired.store(next, Ordering::SeqCst);
        }
    }
}

/// One poller: receive, fill, dispatch, settle, while its id is below the desired concurrency.
async fn poller(shared: Arc<Shared>, id: usize, cancel: CancellationToken) {
    let ctx = shared.ctx.clone();
    let name = ctx.name().to_string();
    let mut failures = 0u32;
    while id < shared.desired.load(Ordering::SeqCst) && !cancel.is_cancelled() {
        let batch_size = ctx.mapping.batching.batch_size;
        let first = tokio::select! {
            _ = cancel.cancelled() => break,
            r = shared.receive(batch_size.min(10), LONG_POLL) => r,
        };
        let mut messages = match first {
            Ok(m) if m.is_empty() => {
                shared.stats.empty_receives.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Ok(m) => m,
            Err(e) => {
                failures += 1;
                ctx.metrics.source_error(&name, e.kind());
                let counter = if matches!(e, SourceError::Throttled(_)) {
                    &shared.stats.throttles
                } else {
                    &shared.stats.errors
                };
                counter.fetch_add(1, Ordering::Relaxed);
                let delay = ctx.policy.backoff(failures);
                warn!(mapping = %name, error = %e, retry_in_ms = delay.as_millis() as u64, "receive failed");
                ctx.status
                    .update(&name, STATUS_KEY, |s| s.last_error = Some(e.to_string()));
                if !pause(&cancel, delay).await {
                    break;
                }
                continue;
            }
        };
        failures = 0;
        shared.batches_in_flight.fetch_add(1, Ordering::SeqCst);
        ctx.metrics.sqs_received(&name, messages.len());
        ctx.metrics.polled(&name, messages.len());
        let in_flight = Arc::new(heartbeat::InFlight::default());
        in_flight.add(&messages).await;
        let stop_heartbeat = CancellationToken::new();
        let beating = tokio::spawn(heartbeat::heartbeat(
            shared.clone(),
            in_flight.clone(),
            stop_heartbeat.clone(),
        ));

        // Fill the batch within the window (AWS: BatchSize, the window or 6 MB, whichever first).
        let window_end = Instant::now() + ctx.mapping.batching.window;
        let mut bytes: usize = messages.iter().map(|m| m.event.len()).sum();
        while messages.len() < batch_size && bytes < MAX_PAYLOAD_BYTES && !cancel.is_cancelled() {
            let left = window_end.saturating_duration_since(Instant::now());
            if left < Duration::from_secs(1) {
                break;
            }
            let more = tokio::select! {
                _ = cancel.cancelled() => break,
                r = shared.receive((batch_size - messages.len()).min(10), left.min(LONG_POLL)) => r,
            };
            match more {
                Ok(more) if !more.is_empty() => {
                    ctx.metrics.sqs_received(&name, more.len());
                    ctx.metrics.polled(&name, more.len());
                    in_flight.add(&more).await;
                    bytes += more.iter().map(|m| m.event.len()).sum::<usize>();
                    messages.extend(more);
                }
                Ok(_) => {}
                Err(e) => {
                    ctx.metrics.source_error(&name, e.kind());
                    break;
                }
            }
        }
        if messages.len() >= batch_size {
            shared.stats.full_batches.fetch_add(1, Ordering::Relaxed);
        }

        let total = messages.len();
        let held = bytes_of(&messages);
        let (deleted, returned) = settle::process(&shared, messages, &in_flight).await;
        ctx.unhold(held);
        stop_heartbeat.cancel();
        let _ = beating.await;
        shared.batches_in_flight.fetch_sub(1, Ordering::SeqCst);
        debug!(mapping = %name, poller = id, messages = total, deleted, returned, "batch settled");
    }
    shared.alive.lock().expect("alive lock").remove(&id);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_follows_aws() {
        // Full batches and no failures: grow by 5 a second, up to the cap.
        assert_eq!(next_concurrency(5, 1000, (3, 0, 0, 0), false), 10);
        assert_eq!(next_concurrency(8, 10, (3, 0, 0, 0), false), 10);
        // Throttles halve; function errors step down, unless partial batch responses report them.
        assert_eq!(next_concurrency(10, 1000, (3, 0, 1, 2), false), 5);
        assert_eq!(next_concurrency(10, 1000, (3, 0, 1, 0), false), 9);
        assert_eq!(next_concurrency(10, 1000, (3, 0, 1, 0), true), 15);
        // An empty queue shrinks to a single long-polling poller.
        assert_eq!(next_concurrency(2, 1000, (0, 4, 0, 0), false), 1);
        assert_eq!(next_concurrency(1, 1000, (0, 4, 0, 0), false), 1);
    }
}
