//! One shard's worker: read → batch → dispatch → checkpoint, one batch at a time, so batch N+1 is
//! never sent before batch N succeeded or was given up on (DESIGN.md invariants 1 and 2).
//!
//! A batch is processed as a queue of *pieces* (contiguous runs of records, left to right). What
//! happens to them — checkpoint a success, retry, bisect, trim to a partial batch response's lowest
//! failure, give up on expired or exhausted records — is decided by [`pieces::Pieces`], a pure state
//! machine; this loop only reads, invokes, checkpoints, gives up (on-failure destination) and waits,
//! as its [`Step`]s say, and keeps the logs, metrics and /status rows. The records a worker holds
//! are charged to the process-wide byte budget, and the worker waits for room before each read.
//! Cancellation is `Err(Cancelled)`, passed up with `?` from every wait.

use std::sync::Arc;
use std::time::Duration;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

mod pieces;
mod settle;

use pieces::{Expiry, Invoke, Pieces, Settled, Step};
use settle::response_context;

use super::{pause_or_cancelled, Cancelled, MappingContext};
use crate::batch::{self, Batcher, MAX_PAYLOAD_BYTES};
use crate::checkpoint::{Checkpoint, Committer};
use crate::dispatch::classify;
use crate::source::{Page, PartitionReader, Record, SourceError};
use crate::telemetry::ShardState;

/// How a worker stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// The shard was closed, read to its end and checkpointed as ended.
    Ended,
    /// Shutdown was requested; every finished batch is checkpointed.
    Cancelled,
    /// The partition's lease was lost: stopped before the next dispatch, checkpoint not moved.
    LeaseLost,
    /// The checkpoint store refused a commit (it did not chain, or the token was stale).
    Refused,
}

/// Why a worker stops before its shard ends: every step returns it as its error and `?` passes it up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Cancelled,
    LeaseLost,
    Refused,
}

impl From<Cancelled> for Stop {
    fn from(_: Cancelled) -> Self {
        Stop::Cancelled
    }
}

/// Record age as the mapping sees it (MaximumRecordAgeInSeconds, the stream's retention), as of
/// `now_ms`.
struct AgeAt<'a> {
    ctx: &'a MappingContext,
    now_ms: i64,
}

impl Expiry for AgeAt<'_> {
    fn expired(&self, arrival_ms: i64) -> bool {
        self.ctx.expired(arrival_ms, self.now_ms)
    }
    fn left(&self, arrival_ms: i64) -> Duration {
        self.ctx.until_expiry(arrival_ms, self.now_ms)
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
    /// Where the partition's checkpoint is, and the lease it is moved under.
    committer: Committer,
}

impl ShardWorker {
    pub fn new(
        ctx: Arc<MappingContext>,
        shard: String,
        reader: Box<dyn PartitionReader>,
        batch_info_key: &'static str,
        committer: Committer,
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
            committer,
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
        let exit = match self.work(&cancel).await {
            Ok(()) => Exit::Ended,
            Err(Stop::Cancelled) => Exit::Cancelled,
            Err(Stop::LeaseLost) => Exit::LeaseLost,
            Err(Stop::Refused) => Exit::Refused,
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

    /// Reads and processes batches until the shard ended and is checkpointed as ended.
    async fn work(&mut self, cancel: &CancellationToken) -> Result<(), Stop> {
        loop {
            self.fill(cancel).await?;
            if self.batcher.is_empty() {
                if self.ended {
                    return self.checkpoint(Checkpoint::ShardEnd, cancel).await;
                }
                continue;
            }
            let batch = self.batcher.take();
            let bytes = bytes_of(&batch);
            self.process(batch, cancel).await?;
            self.release(bytes);
        }
    }

    /// Reads until a batch is due: full (count or 6 MB), the window has passed with records
    /// waiting, or the shard ended. The window starts when the previous invocation completed.
    async fn fill(&mut self, cancel: &CancellationToken) -> Result<(), Stop> {
        let window_end = Instant::now() + self.ctx.mapping.batching.window;
        let mut source_failures = 0u32;
        loop {
            if self.batcher.is_full()
                || self.ended
                || (!self.batcher.is_empty() && Instant::now() >= window_end)
            {
                return Ok(());
            }
            self.set_state(ShardState::Reading);
            let mut at = self.reader.next_read_at();
            if !self.batcher.is_empty() {
                at = at.min(window_end);
            }
            tokio::select! {
                _ = cancel.cancelled() => return Err(Stop::Cancelled),
                _ = sleep_until(at) => {}
            }
            if !self.batcher.is_empty() && Instant::now() >= window_end {
                return Ok(());
            }
            // Memory is bounded by the budget: wait for room before holding another page (with
            // records waiting, the batch goes out when the window closes instead).
            tokio::select! {
                _ = cancel.cancelled() => return Err(Stop::Cancelled),
                _ = self.ctx.budget.room() => {}
                _ = sleep_until(window_end), if !self.batcher.is_empty() => return Ok(()),
            }
            let page = tokio::select! {
                _ = cancel.cancelled() => return Err(Stop::Cancelled),
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
                            pause_or_cancelled(cancel, delay).await?;
                        }
                    }
                }
            }
        }
    }

    /// Processes one batch to completion (every record succeeded or was given up on), doing what
    /// its pieces' state machine says.
    async fn process(
        &mut self,
        batch: Vec<Record>,
        cancel: &CancellationToken,
    ) -> Result<(), Stop> {
        let ctx = self.ctx.clone();
        let mut pieces = Pieces::new(batch);
        loop {
            let now = ctx.clock.now_ms();
            let step = pieces.next(&AgeAt {
                ctx: &ctx,
                now_ms: now,
            });
            match step {
                Step::Invoke(call) => self.invoke(call, now, cancel).await?,
                Step::Checkpoint(last) => {
                    self.checkpoint(Checkpoint::Sequence(last), cancel).await?
                }
                Step::Wait(delay) => {
                    self.set_state(ShardState::Retrying);
                    pause_or_cancelled(cancel, delay).await?
                }
                Step::GiveUp(given) => self.give_up(given, cancel).await?,
                Step::Done => break,
            }
        }
        ctx.status
            .update(ctx.name(), &self.shard, |s| s.retry_attempt = 0);
        Ok(())
    }

    /// Invokes the front piece and settles it with what happened. `now` is when the step was
    /// asked for.
    async fn invoke(
        &mut self,
        call: Invoke<'_>,
        now: i64,
        cancel: &CancellationToken,
    ) -> Result<(), Stop> {
        if cancel.is_cancelled() {
            return Err(Stop::Cancelled);
        }
        self.still_leased()?;
        let ctx = self.ctx.clone();
        let name = ctx.name();
        self.set_state(ShardState::Dispatching);
        let records = call.records();
        let n = records.len();
        let payload = batch::encode(records);
        let started = Instant::now();
        let result = ctx.dispatcher.invoke(payload).await;
        let took = started.elapsed();
        let last_arrival = records.last().map(|r| r.arrival_ms).unwrap_or(now);
        ctx.metrics
            .iterator_age(name, &self.shard, ctx.clock.now_ms() - last_arrival);

        let outcome = classify(
            &result,
            ctx.mapping.report_batch_item_failures(),
            records.iter().map(|r| r.sequence.0.as_str()),
        );
        let label = outcome.label();
        if outcome.invoked() {
            ctx.metrics.invoked(name, n, label, took);
        } else {
            ctx.metrics.invoked_not(name, label, took);
        }
        let response = result.as_ref().ok().map(|inv| {
            if inv.function_error.is_some() {
                // The error's body may echo record data: only its errorType above debug.
                debug!(mapping = name, shard = %self.shard,
                       body = %String::from_utf8_lossy(&inv.body[..inv.body.len().min(512)]),
                       "function error response");
            }
            response_context(inv)
        });
        match call.settle(outcome, response, &ctx.policy) {
            Settled::Succeeded { last } => {
                debug!(mapping = name, shard = %self.shard, records = n, last = %last, took_ms = took.as_millis() as u64, "batch succeeded");
            }
            Settled::Partial {
                first_failed,
                retrying,
            } => {
                ctx.metrics.failed_invoke(name, n);
                info!(mapping = name, shard = %self.shard, first_failed = %first_failed, retrying, "partial batch failure");
            }
            Settled::Split { message } => {
                debug!(mapping = name, shard = %self.shard, records = n, %message, "payload too large; splitting");
            }
            Settled::Failed {
                function_errors,
                detail,
            } => {
                ctx.metrics.failed_invoke(name, n);
                warn!(mapping = name, shard = %self.shard, records = n, outcome = label, function_errors, error = %detail, "invocation failed");
                ctx.status.update(name, &self.shard, |s| {
                    s.retry_attempt = function_errors;
                    s.last_error = Some(format!("{label}: {detail}"));
                });
            }
        }
        Ok(())
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
