//! One shard's worker: read → batch → dispatch → checkpoint, one batch at a time, so batch N+1 is
//! never sent before batch N succeeded or was given up on (DESIGN.md invariants 1 and 2).
//!
//! A batch is processed as a queue of *pieces* (contiguous runs of records, left to right). A piece
//! that succeeds is checkpointed and dropped; one that fails is retried, bisected, trimmed to the
//! records after a partial batch response's lowest failure, or given up on, as [`RetryPolicy`]
//! decides. Records past `MaximumRecordAgeInSeconds` (or past the stream's retention, whichever
//! comes first) are given up on before any invoke. The records a worker holds are charged to the
//! process-wide byte budget, and the worker waits for room before each read.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

mod settle;

use settle::response_context;

use super::{pause, MappingContext};
use crate::batch::{self, Batcher, MAX_PAYLOAD_BYTES};
use crate::checkpoint::Checkpoint;
use crate::destination::ResponseContext;

use crate::dispatch::{classify, Outcome};
use crate::retry::{Condition, Decision, FailureKind};
use crate::source::{Page, PartitionReader, Record, SourceError};
use crate::telemetry::ShardState;

/// How a worker stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// The shard was closed, read to its end and checkpointed as ended.
    Ended,
    /// Shutdown was requested; every finished batch is checkpointed.
    Cancelled,
}

/// Records being worked on, with their retry history.
struct Piece {
    records: Vec<Record>,
    function_errors: u32,
    consecutive_failures: u32,
    invokes: u32,
    last_response: Option<(Option<String>, ResponseContext)>,
}

impl Piece {
    fn new(records: Vec<Record>) -> Self {
        Piece {
            records,
            function_errors: 0,
            consecutive_failures: 0,
            invokes: 0,
            last_response: None,
        }
    }

    /// A part split off a piece: a fresh retry budget, but the same invocation history, so
    /// `approximateInvokeCount` counts every invocation of its records, bisects included.
    fn split_from(records: Vec<Record>, parent: &Piece) -> Self {
        Piece {
            invokes: parent.invokes,
            last_response: parent.last_response.clone(),
            ..Piece::new(records)
        }
    }
}

fn bytes_of(records: &[Record]) -> u64 {
    records.iter().map(|r| r.event.len() as u64).sum()
}

pub struct ShardWorker {
    ctx: Arc<MappingContext>,
    shard: String,
    reader: Box<dyn PartitionReader>,
    batcher: Batcher,
    ended: bool,
    state: Option<ShardState>,
    batch_info_key: &'static str,
    /// Bytes charged to the budget for the records this worker holds.
    held: u64,
}

impl ShardWorker {
    pub fn new(
        ctx: Arc<MappingContext>,
        shard: String,
        reader: Box<dyn PartitionReader>,
        batch_info_key: &'static str,
    ) -> Self {
        let batcher = Batcher::new(ctx.mapping.batching.batch_size, MAX_PAYLOAD_BYTES);
        ShardWorker {
            ctx,
            shard,
            reader,
            batcher,
            ended: false,
            state: None,
            batch_info_key,
            held: 0,
        }
    }

    fn charge(&mut self, bytes: u64) {
        self.held += bytes;
        self.ctx.hold(bytes);
    }

    fn release(&mut self, bytes: u64) {
        self.held -= bytes;
        self.ctx.unhold(bytes);
    }

    fn set_state(&mut self, state: ShardState) {
        if self.state != Some(state) {
            self.ctx.metrics.shard_state(
                self.ctx.name(),
                self.state.map(ShardState::as_str),
                Some(state.as_str()),
            );
            self.state = Some(state);
        }
        let buffered = self.batcher.len();
        self.ctx.status.update(self.ctx.name(), &self.shard, |s| {
            s.state = state;
            s.buffered_records = buffered;
        });
    }

    /// Runs until the shard ends or `cancel` fires.
    pub async fn run(mut self, cancel: CancellationToken) -> Exit {
        info!(mapping = self.ctx.name(), shard = %self.shard, "shard worker started");
        let exit = loop {
            if !self.fill(&cancel).await {
                break Exit::Cancelled;
            }
            if self.batcher.is_empty() {
                if self.ended {
                    if !self.checkpoint(Checkpoint::ShardEnd, &cancel).await {
                        break Exit::Cancelled;
                    }
                    break Exit::Ended;
                }
                continue;
            }
            let batch = self.batcher.take();
            let bytes = bytes_of(&batch);
            if !self.process(batch, &cancel).await {
                break Exit::Cancelled;
            }
            self.release(bytes);
        };
        if exit == Exit::Ended {
            self.set_state(ShardState::Ended);
            self.ctx.metrics.forget_shard(self.ctx.name(), &self.shard);
            // Counted as ended until the supervisor prunes it (once its children run).
            self.state = None;
        }
        info!(mapping = self.ctx.name(), shard = %self.shard, ?exit, "shard worker stopped");
        exit
    }

    /// Reads until a batch is due: full (count or 6 MB), the window has passed with records
    /// waiting, or the shard ended. The window starts when the previous invocation completed.
    /// Returns false if cancelled.
    async fn fill(&mut self, cancel: &CancellationToken) -> bool {
        let window_end = Instant::now() + self.ctx.mapping.batching.window;
        let mut source_failures = 0u32;
        loop {
            if self.batcher.is_full()
                || self.ended
                || (!self.batcher.is_empty() && Instant::now() >= window_end)
            {
                return true;
            }
            self.set_state(ShardState::Reading);
            let mut at = self.reader.next_read_at();
            if !self.batcher.is_empty() {
                at = at.min(window_end);
            }
            tokio::select! {
                _ = cancel.cancelled() => return false,
                _ = sleep_until(at) => {}
            }
            if !self.batcher.is_empty() && Instant::now() >= window_end {
                return true;
            }
            // Memory is bounded by the budget: wait for room before holding another page (with
            // records waiting, the batch goes out when the window closes instead).
            tokio::select! {
                _ = cancel.cancelled() => return false,
                _ = self.ctx.budget.room() => {}
                _ = sleep_until(window_end), if !self.batcher.is_empty() => return true,
            }
            let page = tokio::select! {
                _ = cancel.cancelled() => return false,
                page = self.reader.read() => page,
            };
            match page {
                Ok(Page::Records {
                    records,
                    caught_up,
                    millis_behind,
                }) => {
                    source_failures = 0;
                    self.ctx.metrics.polled(self.ctx.name(), records.len());
                    if records.is_empty() && caught_up && self.batcher.is_empty() {
                        self.ctx
                            .metrics
                            .iterator_age(self.ctx.name(), &self.shard, 0);
                    }
                    self.ctx.status.update(self.ctx.name(), &self.shard, |s| {
                        s.millis_behind_latest = millis_behind;
                        s.last_error = None;
                    });
                    self.charge(bytes_of(&records));
                    self.batcher.push(records);
                }
                Ok(Page::ShardEnd) => {
                    info!(mapping = self.ctx.name(), shard = %self.shard, "shard closed and fully read");
                    self.ended = true;
                }
                Err(e) => {
                    source_failures += 1;
                    self.ctx.metrics.source_error(self.ctx.name(), e.kind());
                    self.ctx.status.update(self.ctx.name(), &self.shard, |s| {
                        s.last_error = Some(e.to_string())
                    });
                    match e {
                        SourceError::ExpiredIterator => {
                            debug!(mapping = self.ctx.name(), shard = %self.shard, "iterator expired; re-fetching");
                        }
                        SourceError::Trimmed(_) => {
                            warn!(mapping = self.ctx.name(), shard = %self.shard, error = %e,
                                  "position is past the stream's retention; reading on from TRIM_HORIZON");
                        }
                        _ => {
                            let delay = self.ctx.policy.backoff(source_failures);
                            warn!(mapping = self.ctx.name(), shard = %self.shard, error = %e, retry_in_ms = delay.as_millis() as u64, "read failed");
                            if !pause(cancel, delay).await {
                                return false;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Processes one batch to completion (every record succeeded or was given up on).
    /// Returns false if cancelled first.
    async fn process(&mut self, batch: Vec<Record>, cancel: &CancellationToken) -> bool {
        let ctx = self.ctx.clone();
        let name = ctx.name();
        let policy = &ctx.policy;
        let mut pieces = VecDeque::from([Piece::new(batch)]);
        while let Some(piece) = pieces.front_mut() {
            // Records past MaximumRecordAgeInSeconds are given up on without an invoke. Records are
            // in arrival order, so the expired ones are a prefix.
            let now = ctx.clock.now_ms();
            let expired = piece
                .records
                .iter()
                .take_while(|r| ctx.expired(r.arrival_ms, now))
                .count();
            if expired > 0 {
                let gone: Vec<Record> = piece.records.drain(..expired).collect();
                let meta = (piece.invokes, piece.last_response.clone());
                if !self
                    .give_up(gone, Condition::RecordAgeExceeded, meta, cancel)
                    .await
                {
                    return false;
                }
                let piece = pieces.front_mut().expect("piece still queued");
                if piece.records.is_empty() {
                    pieces.pop_front();
                    continue;
                }
            }
            if cancel.is_cancelled() {
                return false;
            }
            self.set_state(ShardState::Dispatching);
            let piece = pieces.front_mut().expect("piece still queued");
            let n = piece.records.len();
            let payload = batch::encode(&piece.records);
            let started = Instant::now();
            let result = ctx.dispatcher.invoke(payload).await;
            let took = started.elapsed();
            let last_arrival = piece.records.last().map(|r| r.arrival_ms).unwrap_or(now);
            ctx.metrics
                .iterator_age(name, &self.shard, ctx.clock.now_ms() - last_arrival);

            let outcome = classify(
                &result,
                ctx.mapping.report_batch_item_failures(),
                piece.records.iter().map(|r| r.sequence.0.as_str()),
            );
            let label = outcome.label();
            if outcome.invoked() {
                piece.invokes += 1;
                ctx.metrics.invoked(name, n, label, took);
            } else {
                ctx.metrics.invoked_not(name, label, took);
            }
            if let Ok(inv) = &result {
                piece.last_response = Some(response_context(inv));
                if inv.function_error.is_some() {
                    // The error's body may echo record data: only its errorType above debug.
                    debug!(mapping = name, shard = %self.shard,
                           body = %String::from_utf8_lossy(&inv.body[..inv.body.len().min(512)]),
                           "function error response");
                }
            }
            let (kind, detail) = match outcome {
                Outcome::Success => {
                    let last = piece
                        .records
                        .last()
                        .expect("non-empty piece")
                        .sequence
                        .clone();
                    debug!(mapping = name, shard = %self.shard, records = n, last = %last, took_ms = took.as_millis() as u64, "batch succeeded");
                    pieces.pop_front();
                    if !self.checkpoint(Checkpoint::Sequence(last), cancel).await {
                        return false;
                    }
                    continue;
                }
                Outcome::PartialFailure(f) if f[0] > 0 => {
                    let i = f[0];
                    ctx.metrics.failed_invoke(name, n);
                    // Everything before the lowest failure is done: checkpoint it and retry
                    // from the failure (with bisect, AWS splits at exactly that point).
                    let done: Vec<Record> = piece.records.drain(..i).collect();
                    let last = done.last().expect("i > 0").sequence.clone();
                    let first_failed = piece.records[0].sequence.clone();
                    piece.function_errors += 1;
                    piece.consecutive_failures += 1;
                    let (errors, consecutive, left) = (
                        piece.function_errors,
                        piece.consecutive_failures,
                        piece.records.len(),
                    );
                    info!(mapping = name, shard = %self.shard, first_failed = %first_failed, retrying = left, "partial batch failure");
                    if !self.checkpoint(Checkpoint::Sequence(last), cancel).await {
                        return false;
                    }
                    // A partial response is a function error for the remaining records,
                    // but they are not bisected again for it.
                    let decision =
                        match policy.decide(FailureKind::Function, 1, errors, consecutive) {
                            Decision::Bisect => Decision::RetryAfter(policy.backoff(consecutive)),
                            d => d,
                        };
                    if !self.follow(decision, &mut pieces, cancel).await {
                        return false;
                    }
                    continue;
                }
                Outcome::PartialFailure(_) => {
                    (FailureKind::Function, "the first record failed".to_string())
                }
                Outcome::FunctionError { detail, .. } => (FailureKind::Function, detail),
                Outcome::PayloadTooLarge(message) if n > 1 => {
                    // Split without consuming the retry budget; left half first keeps the order.
                    debug!(mapping = name, shard = %self.shard, records = n, %message, "payload too large; splitting");
                    let right = piece.records.split_off(n / 2);
                    let right = Piece::split_from(right, piece);
                    pieces.insert(1, right);
                    continue;
                }
                // A single record that is still too large cannot be split: it fails.
                Outcome::PayloadTooLarge(message) => (FailureKind::Function, message),
                Outcome::Throttled(detail) | Outcome::ServiceError(detail) => {
                    (FailureKind::NotInvoked, detail)
                }
            };
            ctx.metrics.failed_invoke(name, n);
            let piece = pieces.front_mut().expect("piece still queued");
            if kind == FailureKind::Function {
                piece.function_errors += 1;
            }
            piece.consecutive_failures += 1;
            let (errors, consecutive) = (piece.function_errors, piece.consecutive_failures);
            warn!(mapping = name, shard = %self.shard, records = n, outcome = label, function_errors = errors, error = %detail, "invocation failed");
            ctx.status.update(name, &self.shard, |s| {
                s.retry_attempt = errors;
                s.last_error = Some(format!("{label}: {detail}"));
            });
            let decision = policy.decide(kind, n, errors, consecutive);
            if !self.follow(decision, &mut pieces, cancel).await {
                return false;
            }
        }
        ctx.status
            .update(name, &self.shard, |s| s.retry_attempt = 0);
        true
    }

    /// Carries out the policy's decision for the front piece. Returns false if cancelled.
    async fn follow(
        &mut self,
        decision: Decision,
        pieces: &mut VecDeque<Piece>,
        cancel: &CancellationToken,
    ) -> bool {
        let piece = pieces.front_mut().expect("piece queued");
        match decision {
            Decision::Bisect => {
                let right = piece.records.split_off(piece.records.len() / 2);
                // Splitting does not consume the retry budget: both halves start afresh.
                let left = std::mem::take(&mut piece.records);
                let parent = pieces.pop_front().expect("piece queued");
                pieces.push_front(Piece::split_from(right, &parent));
                pieces.push_front(Piece::split_from(left, &parent));
                true
            }
            Decision::RetryAfter(mut delay) => {
                // Wake no later than the oldest record's expiry, so age is enforced on time.
                if let Some(first) = piece.records.first() {
                    let left = self
                        .ctx
                        .until_expiry(first.arrival_ms, self.ctx.clock.now_ms());
                    delay = delay.min(left + Duration::from_millis(1));
                }
                self.set_state(ShardState::Retrying);
                pause(cancel, delay).await
            }
            Decision::GiveUp(condition) => {
                let piece = pieces.pop_front().expect("piece queued");
                self.give_up(
                    piece.records,
                    condition,
                    (piece.invokes, piece.last_response),
                    cancel,
                )
                .await
            }
        }
    }
}

/// However the worker ends (a panic included), its bytes go back to the budget and its state
/// leaves the shard gauge.
impl Drop for ShardWorker {
    fn drop(&mut self) {
        if self.held > 0 {
            let held = self.held;
            self.release(held);
        }
        if let Some(s) = self.state.take() {
            self.ctx
                .metrics
                .shard_state(self.ctx.name(), Some(s.as_str()), None);
        }
    }
}
