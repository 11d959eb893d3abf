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
//! Every receive goes through [`Shared::receive`]. Messages that match none of the mapping's
//! `FilterCriteria` are deleted without a dispatch ([`filtered`]).
//!
//! The worker runs against the [`Queue`] seam, never SQS itself: [`run_queue`] is handed a resolve
//! step (for SQS, `source::sqs::resolver`: GetQueueUrl and GetQueueAttributes), retries it until
//! the queue answers, and polls the `Arc<dyn Queue>` it yields. Its unit tests (`tests`) run it on
//! a paused clock against `source::sqs::memory::MemoryQueue`.

mod filtered;
mod heartbeat;
mod settle;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, warn};

use super::{doubling, pause, until_ok, MappingContext};
use crate::batch::MAX_PAYLOAD_BYTES;
use crate::source::sqs::{Message, Queue};
use crate::source::SourceError;
use crate::telemetry::PartitionTelemetry;

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
/// Resolving the queue backs off from 2 s, doubling, to 30 s.
const RESOLVE_FIRST_BACKOFF: Duration = Duration::from_secs(2);
const RESOLVE_MAX_BACKOFF: Duration = Duration::from_secs(30);

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
    queue: Arc<dyn Queue>,
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
    /// The mapping's lane: its logs, metrics and `/status` row, one call per event.
    lane: PartitionTelemetry,
}

/// FIFO receives while this mapping has batches in flight: short, since the groups those batches
/// lock become free as soon as they settle, and the other pollers wait for their turn.
const BUSY_FIFO_POLL: Duration = Duration::from_secs(1);

impl Shared {
    /// A mapping's pollers on `queue`, at most `cap` invocations at once, starting with
    /// [`INITIAL_POLLERS`] (at most `cap`) desired.
    fn new(ctx: Arc<MappingContext>, queue: Arc<dyn Queue>, cap: usize) -> Self {
        Shared {
            lane: ctx.telemetry.partition(STATUS_KEY),
            desired: AtomicUsize::new(INITIAL_POLLERS.min(cap)),
            stats: Stats::default(),
            invocations: Semaphore::new(cap),
            alive: Mutex::new(HashSet::new()),
            receiving: tokio::sync::Mutex::new(()),
            batches_in_flight: AtomicUsize::new(0),
            visibility: heartbeat::in_flight_visibility(queue.visibility_timeout()),
            queue,
            ctx,
        }
    }

    /// The one place messages are received: up to `max`, long-polling up to `wait`, each made
    /// invisible for the in-flight visibility.
    /// Waits for room in the byte budget first, and charges what it returns to it (the poller
    /// gives it back once the batch is settled). A receive filling a batch waits for room only
    /// until `room_by` (the end of its window) and returns nothing without it: the batch it fills
    /// holds budget that only its settle gives back. Cancel-safe.
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        room_by: Option<Instant>,
    ) -> Result<Vec<Message>, SourceError> {
        match room_by {
            None => self.ctx.budget.room().await,
            Some(by) => {
                if tokio::time::timeout_at(by, self.ctx.budget.room())
                    .await
                    .is_err()
                {
                    return Ok(Vec::new());
                }
            }
        }
        let received = if !self.queue.fifo() {
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

/// Runs an SQS mapping until `cancel` fires: resolves its queue with `resolve`, retried (backing off
/// to 30 s) until the queue answers, then scales pollers on it. `app.rs` passes
/// `source::sqs::resolver`; tests pass a closure that hands out an in-memory queue.
pub async fn run_queue<R, F>(
    ctx: Arc<MappingContext>,
    resolve: R,
    tracker: TaskTracker,
    cancel: CancellationToken,
) where
    R: FnMut() -> F + Send,
    F: Future<Output = Result<Arc<dyn Queue>, SourceError>> + Send,
{
    let name = ctx.name().to_string();
    let Some(settings) = ctx.mapping.queue() else {
        error!(mapping = %name, "not an SQS mapping");
        return;
    };
    let resolving = ctx.telemetry.partition(STATUS_KEY);
    let report = |e: &SourceError, _: u32, delay: Duration| {
        resolving.queue_unresolved(&settings.queue.arn, e, delay)
    };
    let backoff = doubling(RESOLVE_FIRST_BACKOFF, RESOLVE_MAX_BACKOFF);
    let Ok(queue) = until_ok(&cancel, backoff, report, resolve).await else {
        return;
    };
    let target_timeout = ctx.dispatcher.function_timeout().await;
    if let Some(timeout) = target_timeout.filter(|t| queue.visibility_timeout() < *t) {
        warn!(mapping = %name, visibility_timeout_s = queue.visibility_timeout().as_secs(), target_timeout_s = timeout.as_secs(),
              "the queue's visibility timeout is shorter than the target's timeout; sluice's heartbeat keeps in-flight messages hidden, but AWS recommends at least 6 times the function timeout");
    }
    let cap = settings
        .max_concurrency
        .map(|c| c as usize)
        .unwrap_or(DEFAULT_MAX_CONCURRENCY);
    let shared = Arc::new(Shared::new(ctx.clone(), queue, cap));
    let queue = &shared.queue;
    shared.lane.queue_running(
        queue.url(),
        queue.fifo(),
        queue.visibility_timeout(),
        shared.visibility,
    );
    loop {
        let desired = shared.desired.load(Ordering::SeqCst);
        shared.lane.pollers(desired);
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

/// A batch's first messages: receives until one returns messages (counting empty receives for
/// scaling), retrying failed receives with the mapping's backoff (counted as errors or throttles
/// for scaling) until one succeeds. None once the poller is no longer wanted (its id is at or above
/// the desired concurrency) or `cancel` fires.
async fn first_messages(
    shared: &Shared,
    id: usize,
    cancel: &CancellationToken,
) -> Option<Vec<Message>> {
    let ctx = &shared.ctx;
    let report = |e: &SourceError, _: u32, delay: Duration| {
        shared.lane.receive_failed(e, Some(delay));
        let counter = if matches!(e, SourceError::Throttled(_)) {
            &shared.stats.throttles
        } else {
            &shared.stats.errors
        };
        counter.fetch_add(1, Ordering::Relaxed);
    };
    let receive = || async {
        while id < shared.desired.load(Ordering::SeqCst) && !cancel.is_cancelled() {
            let received = tokio::select! {
                _ = cancel.cancelled() => return Ok(None),
                r = shared.receive(ctx.mapping.batching.batch_size.min(10), LONG_POLL, None) => r,
            };
            match received? {
                m if m.is_empty() => {
                    shared.stats.empty_receives.fetch_add(1, Ordering::Relaxed);
                }
                m => return Ok(Some(m)),
            }
        }
        Ok(None)
    };
    until_ok(cancel, |n| ctx.policy.backoff(n), report, receive)
        .await
        .ok()
        .flatten()
}

/// One poller: receive, fill, dispatch, settle, while its id is below the desired concurrency.
async fn poller(shared: Arc<Shared>, id: usize, cancel: CancellationToken) {
    let ctx = shared.ctx.clone();
    let name = ctx.name().to_string();
    while let Some(mut messages) = first_messages(&shared, id, &cancel).await {
        let batch_size = ctx.mapping.batching.batch_size;
        shared.batches_in_flight.fetch_add(1, Ordering::SeqCst);
        shared.lane.received(messages.len());
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
                r = shared.receive((batch_size - messages.len()).min(10), left.min(LONG_POLL), Some(window_end)) => r,
            };
            match more {
                Ok(more) if !more.is_empty() => {
                    shared.lane.received(more.len());
                    in_flight.add(&more).await;
                    bytes += more.iter().map(|m| m.event.len()).sum::<usize>();
                    messages.extend(more);
                }
                Ok(_) => {}
                Err(e) => {
                    shared.lane.receive_failed(&e, None);
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
