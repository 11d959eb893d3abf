//! One shard's worker: read → batch → dispatch → checkpoint, one batch at a time, so batch N+1 is
//! never sent before batch N succeeded or was given up on (DESIGN.md invariants 1 and 2).
//!
//! A batch is processed as a queue of *pieces* (contiguous runs of records, left to right). What
//! happens to them — checkpoint a success, retry, bisect, trim to a partial batch response's lowest
//! failure, give up on expired or exhausted records — is decided by [`pieces::Pieces`], a pure state
//! machine; this loop only reads, invokes, checkpoints, gives up (on-failure destination) and waits,
//! as its [`Step`]s say, and records each event once through its [`PartitionTelemetry`] (log line,
//! metrics and /status row). The records a worker holds
//! are charged to the process-wide byte budget, and the worker waits for room before each read.
//! Cancellation is `Err(Cancelled)`, passed up with `?` from every wait. A mapping's
//! `FilterCriteria` is applied to each batch as it is taken ([`filtered`]). With
//! `TumblingWindowInSeconds`, batches are cut at window boundaries and carry the window fields, and
//! windows are closed by invocations of their own ([`tumbling`], rules in [`window`]).

use std::sync::Arc;
use std::time::Duration;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

mod filtered;
mod lanes;
mod pieces;
mod settle;
mod watermark;

#[cfg(test)]
pub(crate) use lanes::lane_of;
mod tumbling;
mod window;

pub use window::LATE_ARRIVAL_GRACE;

use pieces::{Expiry, Invoke, Pieces, Settled, Step};
use settle::response_context;

use super::{pause_or_cancelled, Cancelled, MappingContext};
use crate::batch::{self, Batcher, MAX_PAYLOAD_BYTES};

/// A tumbling window's `state` as a function answered it.
type WindowStateMap = serde_json::Map<String, serde_json::Value>;
use crate::checkpoint::{Checkpoint, Committer};
use crate::dispatch::outcome::classify_as;
use crate::dispatch::response::IdentifierKind;
use crate::dispatch::DispatchError;
use crate::source::EventFormat;
use crate::source::{Page, PartitionReader, Record, SourceError};
use crate::telemetry::{PartitionTelemetry, ShardState};

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
    /// In a mutex only so that the worker is `Sync` (lanes share it by reference, see [`lanes`]);
    /// always reached through `get_mut`, never locked.
    reader: std::sync::Mutex<Box<dyn PartitionReader>>,
    batcher: Batcher,
    ended: bool,
    /// Logs, metrics and the /status row of this shard, one call per event.
    telemetry: PartitionTelemetry,
    /// How the partition's records become the event and its failure records.
    format: EventFormat,
    /// Bytes charged to the budget for the records this worker holds.
    held: u64,
    /// Where the partition's checkpoint is, and the lease it is moved under.
    committer: Committer,
    /// ParallelizationFactor: above 1, batches go out in that many lanes at once ([`lanes`]).
    lanes: usize,
    /// The shard's tumbling windows, when the mapping has them.
    window: Option<window::Tumbling>,
}

impl ShardWorker {
    pub fn new(
        ctx: Arc<MappingContext>,
        shard: String,
        reader: Box<dyn PartitionReader>,
        format: EventFormat,
        committer: Committer,
    ) -> Self {
        let tumbling = ctx.mapping.tumbling_window();
        let batcher = Batcher::with_envelope(
            format.envelope.clone(),
            ctx.mapping.batching.batch_size,
            tumbling::max_batch_bytes(tumbling, &committer),
        );
        let window =
            tumbling.map(|len| window::Tumbling::new(len, committer.max_window_state_bytes()));
        ShardWorker {
            telemetry: ctx.telemetry.partition(&shard),
            lanes: ctx.mapping.parallelization_factor(),
            ctx,
            reader: std::sync::Mutex::new(reader),
            batcher,
            ended: false,
            format,
            held: 0,
            committer,
            window,
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

    fn reader(&mut self) -> &mut dyn PartitionReader {
        let reader = self.reader.get_mut();
        reader
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_mut()
    }

    fn set_state(&mut self, state: ShardState) {
        self.telemetry.state(state, self.batcher.len());
    }

    /// Runs until the shard ends or `cancel` fires.
    pub async fn run(mut self, cancel: CancellationToken) -> Exit {
        self.telemetry.started();
        let exit = match self.work(&cancel).await {
            Ok(()) => Exit::Ended,
            Err(Stop::Cancelled) => Exit::Cancelled,
            Err(Stop::LeaseLost) => Exit::LeaseLost,
            Err(Stop::Refused) => Exit::Refused,
        };
        if exit == Exit::Ended {
            // Counted as ended until the supervisor prunes it (once its children run).
            self.telemetry.ended();
        }
        self.telemetry.stopped(&exit);
        exit
    }

    /// Reads and processes batches until the shard ended and is checkpointed as ended.
    async fn work(&mut self, cancel: &CancellationToken) -> Result<(), Stop> {
        if self.lanes > 1 {
            return self.work_in_lanes(cancel).await;
        }
        self.resume_window(cancel).await?;
        loop {
            self.fill(cancel).await?;
            if self.window_due() {
                self.close_window(window::Closing::Final, cancel).await?;
                continue;
            }
            if self.batcher.is_empty() {
                if self.ended {
                    return self.checkpoint(Checkpoint::ShardEnd, cancel).await;
                }
                continue;
            }
            let batch = self.take_batch();
            let bytes = bytes_of(&batch);
            self.process_filtered(batch, cancel).await?;
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
                || self.window_due()
            {
                return Ok(());
            }
            self.set_state(ShardState::Reading);
            let mut at = self.reader().next_read_at();
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
            let read_started = self.ctx.clock.now_ms();
            let page = tokio::select! {
                _ = cancel.cancelled() => return Err(Stop::Cancelled),
                page = self.reader().read() => page,
            };
            match page {
                Ok(Page::Records {
                    records,
                    caught_up,
                    millis_behind,
                }) => {
                    source_failures = 0;
                    self.window_read(read_started, caught_up);
                    let idle = records.is_empty() && caught_up && self.batcher.is_empty();
                    self.telemetry.read(records.len(), idle, millis_behind);
                    self.charge(bytes_of(&records));
                    self.batcher.push(records);
                }
                Ok(Page::ShardEnd) => {
                    self.telemetry.read_to_end();
                    self.ended = true;
                }
                Err(e) => {
                    source_failures += 1;
                    // An expired iterator is re-fetched, trimmed data read on from TRIM_HORIZON,
                    // both at once; anything else is backed off.
                    let delay = match e {
                        SourceError::ExpiredIterator | SourceError::Trimmed(_) => None,
                        _ => Some(self.ctx.policy.backoff(source_failures)),
                    };
                    self.telemetry.read_failed(&e, delay);
                    if let Some(delay) = delay {
                        pause_or_cancelled(cancel, delay).await?;
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
                Step::Invoke(call) => {
                    self.set_state(ShardState::Dispatching);
                    let (answered, done) = self.invoke(call, now, cancel).await?;
                    self.window_settled(answered, done, cancel).await?
                }
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
        self.telemetry.batch_done();
        Ok(())
    }

    /// Invokes the front piece and settles it with what happened. `now` is when the step was
    /// asked for. Returns, for a tumbling window, the `state` the function answered and whether
    /// the piece's records (some of them) are done.
    async fn invoke(
        &self,
        call: Invoke<'_>,
        now: i64,
        cancel: &CancellationToken,
    ) -> Result<(Option<WindowStateMap>, bool), Stop> {
        if cancel.is_cancelled() {
            return Err(Stop::Cancelled);
        }
        self.still_leased()?;
        let ctx = self.ctx.clone();
        let records = call.records();
        let n = records.len();
        let payload = batch::encode_with(&self.format.envelope, records, &self.window_fields(None));
        let started = Instant::now();
        // An event over Lambda's limit is never sent (the batcher makes one only of a single
        // record that is too large by itself): the target would refuse it.
        let result = match payload.len() {
            len if len > MAX_PAYLOAD_BYTES => Err(DispatchError::PayloadTooLarge {
                message: format!(
                    "the event is {len} bytes, over the {MAX_PAYLOAD_BYTES}-byte invocation limit"
                ),
            }),
            _ => ctx.dispatcher.invoke(payload).await,
        };
        let took = started.elapsed();
        let last_arrival = records.last().map(|r| r.arrival_ms).unwrap_or(now);
        let outcome = classify_as(
            &result,
            ctx.mapping.report_batch_item_failures(),
            IdentifierKind::of(&self.format),
            records.iter().map(|r| r.sequence.0.as_str()),
        );
        let (outcome, answered) = self.window_response(outcome, &result);
        let label = outcome.label();
        let t = &self.telemetry;
        t.iterator_age(ctx.clock.now_ms() - last_arrival);
        t.invoked(n, outcome.invoked(), label, took);
        let response = result.as_ref().ok().map(|inv| {
            if inv.function_error.is_some() {
                t.function_error_body(&inv.body);
            }
            response_context(inv)
        });
        let settled = call.settle(outcome, response, &ctx.policy);
        let done = matches!(settled, Settled::Succeeded { .. } | Settled::Partial { .. });
        match settled {
            Settled::Succeeded { last } => t.succeeded(n, &last, took),
            Settled::Partial {
                first_failed,
                retrying,
            } => t.partial_failure(n, &first_failed, retrying),
            Settled::Split { message } => t.split_for_size(n, &message),
            Settled::Failed {
                function_errors,
                detail,
            } => t.invocation_failed(n, label, function_errors, &detail),
        }
        Ok((answered, done))
    }
}

/// However the worker ends (a panic included), its bytes go back to the budget (and its state
/// leaves the shard gauge as its telemetry handle drops).
impl Drop for ShardWorker {
    fn drop(&mut self) {
        if self.held > 0 {
            let held = self.held;
            self.release(held);
        }
    }
}
