//! SQS mappings (esm-spec.md §3.3, §5): pollers long-poll the queue, fill a batch within the
//! batching window, keep its messages invisible with a heartbeat while it is in flight, dispatch it,
//! delete what succeeded and leave what failed to reappear after its visibility timeout (so the
//! queue's redrive policy moves poison messages to its DLQ).
//!
//! Scaling follows AWS's poller scaling: 5 pollers to start, more while full batches keep coming
//! and the function keeps up, fewer on throttles and errors and when the queue is empty, never more
//! than `ScalingConfig.MaximumConcurrency` invocations at once.
//!
//! FIFO: a batch is split by MessageGroupId and each group's part is dispatched on its own, in
//! order, so a failing group never fails the others. SQS itself holds back a group's later messages
//! while earlier ones are in flight; when a message of a group fails, sluice also returns that
//! group's later messages of the batch, so nothing of the group overtakes it. Receives from a FIFO
//! queue are made one at a time per mapping, so the queue's group lock is never raced by two
//! concurrent receives (dispatches of different groups still run concurrently).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use super::{pause, MappingContext};
use crate::batch::{self, MAX_PAYLOAD_BYTES};
use crate::config::{SourceArn, Target};
use crate::dispatch::response::{self, ItemFailures};
use crate::dispatch::DispatchError;
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
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Message>, SourceError> {
        if !self.queue.fifo {
            return self.queue.receive(max, wait).await;
        }
        let _turn = self.receiving.lock().await;
        let busy = self.batches_in_flight.load(Ordering::SeqCst) > 0;
        self.queue
            .receive(max, if busy { wait.min(BUSY_FIFO_POLL) } else { wait })
            .await
    }
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

/// The function's configured timeout, if the Lambda API will tell (emulators may not).
async fn lambda_timeout(client: &aws_sdk_lambda::Client, function: &str) -> Option<Duration> {
    match client
        .get_function_configuration()
        .function_name(function)
        .send()
        .await
    {
        Ok(out) => out.timeout().map(|t| Duration::from_secs(t.max(0) as u64)),
        Err(e) => {
            debug!(function, error = %crate::aws::error_text(&e), "cannot read the function's timeout");
            None
        }
    }
}

/// Runs an SQS mapping until `cancel` fires.
pub async fn run_queue(
    ctx: Arc<MappingContext>,
    client: aws_sdk_sqs::Client,
    lambda: aws_sdk_lambda::Client,
    tracker: TaskTracker,
    cancel: CancellationToken,
) {
    let name = ctx.name().to_string();
    let SourceArn::Sqs {
        arn,
        region,
        account,
        queue,
        ..
    } = &ctx.mapping.source
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
    let target_timeout = match &ctx.mapping.target {
        Target::Http(h) => Some(h.timeout),
        Target::Lambda { function_name } => lambda_timeout(&lambda, function_name).await,
    };
    if let Some(timeout) = target_timeout.filter(|t| queue.visibility_timeout < *t) {
        warn!(mapping = %name, visibility_timeout_s = queue.visibility_timeout.as_secs(), target_timeout_s = timeout.as_secs(),
              "the queue's visibility timeout is shorter than the target's timeout; sluice's heartbeat keeps in-flight messages hidden, but AWS recommends at least 6 times the function timeout");
    }
    info!(mapping = %name, queue = %queue.url, fifo = queue.fifo, visibility_timeout_s = queue.visibility_timeout.as_secs(), "queue mapping running");
    let cap = ctx
        .mapping
        .max_concurrency
        .map(|c| c as usize)
        .unwrap_or(DEFAULT_MAX_CONCURRENCY);
    let shared = Arc::new(Shared {
        desired: AtomicUsize::new(INITIAL_POLLERS.min(cap)),
        stats: Stats::default(),
        invocations: Semaphore::new(cap),
        alive: Mutex::new(HashSet::new()),
        receiving: tokio::sync::Mutex::new(()),
        batches_in_flight: AtomicUsize::new(0),
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
            ctx.mapping.errors.report_batch_item_failures,
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
        let batch_size = ctx.mapping.batch_size;
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
        let in_flight: Arc<Mutex<Vec<(String, String)>>> = Arc::new(Mutex::new(
            messages
                .iter()
                .map(|m| (m.id.clone(), m.receipt_handle.clone()))
                .collect(),
        ));
        let stop_heartbeat = CancellationToken::new();
        let heartbeat = tokio::spawn(heartbeat(
            shared.clone(),
            in_flight.clone(),
            stop_heartbeat.clone(),
        ));

        // Fill the batch within the window (AWS: BatchSize, the window or 6 MB, whichever first).
        let window_end = Instant::now() + ctx.mapping.batching_window;
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
                    in_flight.lock().expect("in-flight lock").extend(
                        more.iter()
                            .map(|m| (m.id.clone(), m.receipt_handle.clone())),
                    );
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
        let (succeeded, failed) = process(&shared, messages).await;
        stop_heartbeat.cancel();
        let _ = heartbeat.await;
        let refs: Vec<&Message> = succeeded.iter().collect();
        let deleted = shared.queue.delete(&refs).await;
        ctx.metrics.sqs_finished(&name, deleted, failed);
        ctx.metrics.sqs_settled(&name, total);
        shared.batches_in_flight.fetch_sub(1, Ordering::SeqCst);
        debug!(mapping = %name, poller = id, messages = total, deleted, returned = failed, "batch settled");
    }
    shared.alive.lock().expect("alive lock").remove(&id);
}

/// Keeps in-flight messages invisible: every half visibility timeout, extends them by one.
async fn heartbeat(
    shared: Arc<Shared>,
    in_flight: Arc<Mutex<Vec<(String, String)>>>,
    stop: CancellationToken,
) {
    let vt = shared.queue.visibility_timeout.max(Duration::from_secs(1));
    let period = (vt / 2).max(Duration::from_millis(500));
    loop {
        if !pause(&stop, period).await {
            return;
        }
        let list = in_flight.lock().expect("in-flight lock").clone();
        let n = shared.queue.extend(&list, vt).await;
        shared.ctx.metrics.sqs_extended(shared.ctx.name(), n);
    }
}

/// Dispatches a batch (per message group for FIFO, concurrently); returns the messages that
/// succeeded and how many failed.
async fn process(shared: &Arc<Shared>, messages: Vec<Message>) -> (Vec<Message>, usize) {
    let groups: Vec<Vec<Message>> = if shared.queue.fifo {
        let mut order: Vec<Option<String>> = Vec::new();
        let mut parts: Vec<Vec<Message>> = Vec::new();
        for m in messages {
            match order.iter().position(|g| *g == m.group) {
                Some(i) => parts[i].push(m),
                None => {
                    order.push(m.group.clone());
                    parts.push(vec![m]);
                }
            }
        }
        parts
    } else {
        vec![messages]
    };
    let mut set = JoinSet::new();
    for group in groups {
        let shared = shared.clone();
        set.spawn(async move { dispatch_group(&shared, group).await });
    }
    let mut succeeded = Vec::new();
    let mut failed = 0;
    while let Some(result) = set.join_next().await {
        match result {
            Ok((ok, bad)) => {
                succeeded.extend(ok);
                failed += bad;
            }
            Err(e) => error!(error = %e, "dispatch task failed; its messages will reappear"),
        }
    }
    (succeeded, failed)
}

/// Dispatches one group's messages in order (split further only by the 6 MB limit). For FIFO, once
/// a message fails every later one of the group is returned too.
async fn dispatch_group(shared: &Arc<Shared>, messages: Vec<Message>) -> (Vec<Message>, usize) {
    let ctx = &shared.ctx;
    let name = ctx.name();
    let fifo = shared.queue.fifo;
    let mut succeeded = Vec::new();
    let mut failed = 0;
    let mut group_failed = false;
    for chunk in batch::split_by_size(messages, |m| m.event.len(), MAX_PAYLOAD_BYTES) {
        if group_failed {
            failed += chunk.len();
            continue;
        }
        let n = chunk.len();
        let Ok(_permit) = shared.invocations.acquire().await else {
            return (succeeded, failed + n);
        };
        let payload = batch::encode_entries(chunk.iter().map(|m| m.event.as_slice()));
        let started = Instant::now();
        let result = ctx.dispatcher.invoke(payload).await;
        let took = started.elapsed();
        let failed_idx: Vec<usize> = match result {
            Ok(inv) if inv.function_error.is_none() => {
                let verdict = if ctx.mapping.errors.report_batch_item_failures {
                    response::parse(&inv.body, chunk.iter().map(|m| m.id.as_str()))
                } else {
                    ItemFailures::None
                };
                match verdict {
                    ItemFailures::None => {
                        ctx.metrics.invoked(name, n, "success", took);
                        vec![]
                    }
                    ItemFailures::Failed(f) => {
                        ctx.metrics.invoked(name, n, "partial_failure", took);
                        // FIFO: nothing after a failed message of the group may be deleted before it.
                        if fifo {
                            (f[0]..n).collect()
                        } else {
                            f
                        }
                    }
                    ItemFailures::All(why) => {
                        ctx.metrics.invoked(name, n, "partial_failure", took);
                        warn!(mapping = name, %why, "batch item failures name an invalid identifier: the whole batch failed");
                        (0..n).collect()
                    }
                }
            }
            Ok(inv) => {
                ctx.metrics.invoked(name, n, "function_error", took);
                shared.stats.errors.fetch_add(1, Ordering::Relaxed);
                let body =
                    String::from_utf8_lossy(&inv.body[..inv.body.len().min(512)]).into_owned();
                warn!(mapping = name, messages = n, error = %body, "function error; the messages will reappear after their visibility timeout");
                ctx.status.update(name, STATUS_KEY, |s| {
                    s.last_error = Some(format!("function_error: {body}"))
                });
                (0..n).collect()
            }
            Err(e) => {
                let outcome = match &e {
                    DispatchError::Throttled { .. } => {
                        shared.stats.throttles.fetch_add(1, Ordering::Relaxed);
                        "throttled"
                    }
                    DispatchError::Service { .. } => {
                        shared.stats.errors.fetch_add(1, Ordering::Relaxed);
                        "service_error"
                    }
                    DispatchError::PayloadTooLarge { .. } => "payload_too_large",
                };
                ctx.metrics.invoked_not(name, outcome, took);
                warn!(mapping = name, messages = n, error = %e, "invoke failed; the messages will reappear after their visibility timeout");
                ctx.status.update(name, STATUS_KEY, |s| {
                    s.last_error = Some(format!("{outcome}: {e}"))
                });
                (0..n).collect()
            }
        };
        if !failed_idx.is_empty() {
            ctx.metrics.failed_invoke(name, failed_idx.len());
            failed += failed_idx.len();
            group_failed = fifo;
        }
        succeeded.extend(
            chunk
                .into_iter()
                .enumerate()
                .filter(|(i, _)| !failed_idx.contains(i))
                .map(|(_, m)| m),
        );
    }
    (succeeded, failed)
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
