//! ParallelizationFactor above 1: one shard's records in N lanes, each processing its own batches,
//! up to N batches in flight at once (docs/parallelization.md).
//!
//! A record goes to lane `lane_key % N` ([`crate::model::Record::lane_key`]: a hash of the Kinesis
//! partition key or the DynamoDB item key), so records with one key stay in one lane, in read order.
//! Each lane batches (BatchSize, 6 MB, its own batching window, which starts when its previous batch
//! completed) and processes one batch at a time with the same rules as a single-lane worker
//! ([`Pieces`]: retries, bisect, partial batch responses, record age, the on-failure destination),
//! so a failing key holds back only its own lane. Lanes do not checkpoint: they mark records done in
//! a [`Watermark`], and this loop commits the watermark (the highest position below which every
//! record is done) through the worker's one [`Committer`](crate::checkpoint::Committer), one commit
//! at a time. The shard's reader keeps reading while every lane holds fewer than
//! [`QUEUED_BATCHES`] batches' worth of records and the byte budget has room. The shard's end is
//! checkpointed once every lane drained.
//!
//! Everything runs in the worker's task: the lanes' batches, the reads and the commits are futures
//! polled together, so lanes share the worker by reference (its invoke, hand-over and checkpoint).
//! On shutdown no new batch starts, batches in flight finish their invocation (as a single lane's
//! does) and the watermark they reach is committed before the worker stops.

use async_trait::async_trait;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use tokio::sync::Notify;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use super::pieces::{Pieces, Step};
use super::watermark::Watermark;
use super::{bytes_of, AgeAt, ShardWorker, Stop};
use crate::batch::{Batcher, MAX_PAYLOAD_BYTES};
use crate::checkpoint::Checkpoint;
use crate::source::{Page, PartitionReader, Record, SequenceNumber, SourceError};
use crate::telemetry::ShardState;
use crate::worker::{pause_or_cancelled, MappingContext};

/// The shard's reader waits while a lane holds this many batches' worth (BatchSize records each)
/// of records not yet in flight: a lane blocked on a failing key lets the others run ahead by that
/// much, no more.
pub const QUEUED_BATCHES: usize = 4;

type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
/// A lane batch in flight: its bytes (charged to the budget) and how it ended.
type LaneBatch<'a> = Boxed<'a, (u64, Result<(), Stop>)>;

/// The lane of a record with `lane_key` among `lanes`.
pub fn lane_of(lane_key: u64, lanes: usize) -> usize {
    (lane_key % lanes.max(1) as u64) as usize
}

struct Lane {
    /// Records routed to the lane, not yet in a batch.
    batcher: Batcher,
    /// One of its batches is in flight.
    busy: bool,
    /// When its batching window ends: its previous batch's completion (or the start) + the window.
    window_end: Instant,
}

/// What the lanes share with the loop: the watermark they mark records done in, and a wake-up.
struct Marks {
    watermark: Mutex<Watermark>,
    changed: Notify,
}

impl Marks {
    fn lock(&self) -> MutexGuard<'_, Watermark> {
        self.watermark
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A lane batch's records, marked done in the watermark left to right.
struct Progress<'a> {
    sequences: Vec<SequenceNumber>,
    next: usize,
    marks: &'a Marks,
}

impl Progress<'_> {
    /// Every record of the batch up to `last` is done.
    fn through(&mut self, last: &SequenceNumber) {
        let mut w = self.marks.lock();
        while let Some(s) = self.sequences.get(self.next).filter(|s| *s <= last) {
            w.done(s);
            self.next += 1;
        }
        drop(w);
        self.marks.changed.notify_one();
    }
}

/// Bytes charged to the budget for the records read into lanes; returned however the worker ends.
struct Held {
    ctx: Arc<MappingContext>,
    bytes: u64,
}

impl Held {
    fn charge(&mut self, bytes: u64) {
        self.bytes += bytes;
        self.ctx.hold(bytes);
    }

    fn release(&mut self, bytes: u64) {
        let bytes = bytes.min(self.bytes);
        self.bytes -= bytes;
        self.ctx.unhold(bytes);
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.ctx.unhold(self.bytes);
        }
    }
}

/// Stands in the worker for its reader once the lanes' loop took it (never read: the worker ends
/// with the loop).
struct Detached;

#[async_trait]
impl PartitionReader for Detached {
    fn next_read_at(&self) -> Instant {
        Instant::now()
    }
    async fn read(&mut self) -> Result<Page, SourceError> {
        Err(SourceError::Service(
            "the shard's reader is in use by its lanes".into(),
        ))
    }
}

/// Keeps the first reason to stop, unless a graver one than shutdown comes after it.
fn note(stop: &mut Option<Stop>, s: Stop) {
    match stop {
        None => *stop = Some(s),
        Some(Stop::Cancelled) if s != Stop::Cancelled => *stop = Some(s),
        Some(_) => {}
    }
}

/// The next lane batch to finish: its lane and its output.
fn next_done<'s, 'f: 's, T>(
    running: &'s mut [Option<Boxed<'f, T>>],
) -> impl Future<Output = (usize, T)> + use<'s, 'f, T> {
    std::future::poll_fn(move |cx| {
        for (i, slot) in running.iter_mut().enumerate() {
            if let Some(f) = slot {
                if let Poll::Ready(v) = f.as_mut().poll(cx) {
                    *slot = None;
                    return Poll::Ready((i, v));
                }
            }
        }
        Poll::Pending
    })
}

impl ShardWorker {
    /// Reads and processes the shard in lanes until it ended and is checkpointed as ended.
    pub(super) async fn work_in_lanes(&mut self, cancel: &CancellationToken) -> Result<(), Stop> {
        let reader = self
            .reader
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        let reader = std::mem::replace(reader, Box::new(Detached));
        // Lanes read and dispatch at once; the row shows the shard as reading throughout.
        self.set_state(ShardState::Reading);
        self.lanes_loop(reader, cancel).await
    }

    async fn lanes_loop(
        &self,
        reader: Box<dyn PartitionReader>,
        cancel: &CancellationToken,
    ) -> Result<(), Stop> {
        let ctx = &self.ctx;
        let n = self.lanes;
        let window = ctx.mapping.batching.window;
        let batch_size = ctx.mapping.batching.batch_size.max(1);
        let cap = batch_size.saturating_mul(QUEUED_BATCHES);
        let filter = crate::filter::RecordFilter::of(&ctx.mapping);
        let start = Instant::now();
        let mut lanes: Vec<Lane> = (0..n)
            .map(|_| Lane {
                batcher: Batcher::with_envelope(
                    self.format.envelope.clone(),
                    batch_size,
                    MAX_PAYLOAD_BYTES,
                ),
                busy: false,
                window_end: start + window,
            })
            .collect();
        let marks = Marks {
            watermark: Mutex::new(Watermark::new()),
            changed: Notify::new(),
        };
        let mut held = Held {
            ctx: ctx.clone(),
            bytes: 0,
        };
        // Stops the lanes at their next safe point when one of them must stop the worker.
        let lanes_cancel = cancel.child_token();
        let (marks, lanes_cancel) = (&marks, &lanes_cancel);
        let mut running: Vec<Option<LaneBatch<'_>>> = (0..n).map(|_| None).collect();
        type Read = (Box<dyn PartitionReader>, Result<Page, SourceError>);
        let mut idle_reader = Some(reader);
        let mut read: Option<Boxed<'static, Read>> = None;
        let mut read_after: Option<Instant> = None;
        let mut source_failures = 0u32;
        let mut commit: Option<Boxed<'_, Result<(), Stop>>> = None;
        let mut target: Option<SequenceNumber> = None;
        let mut ended = false;
        let mut stop: Option<Stop> = None;
        loop {
            if stop.is_none() {
                let now = Instant::now();
                for (i, lane) in lanes.iter_mut().enumerate() {
                    let due = lane.batcher.is_full() || ended || now >= lane.window_end;
                    if lane.busy || lane.batcher.is_empty() || !due {
                        continue;
                    }
                    let batch = lane.batcher.take();
                    let bytes = bytes_of(&batch);
                    lane.busy = true;
                    running[i] = Some(Box::pin(async move {
                        (bytes, self.lane_batch(batch, marks, lanes_cancel).await)
                    }));
                }
            }
            if let Some(to) = marks.lock().advance() {
                target = Some(to);
            }
            if commit.is_none() && stop.is_none() {
                if let Some(to) = target.take() {
                    commit = Some(Box::pin(self.checkpoint(Checkpoint::Sequence(to), cancel)));
                }
            }
            let in_flight = running.iter().any(Option::is_some);
            if let Some(s) = stop {
                if !in_flight && commit.is_none() {
                    // What the batches in flight finished is kept (after shutdown: one attempt).
                    if s == Stop::Cancelled {
                        if let Some(to) = target.take() {
                            self.checkpoint(Checkpoint::Sequence(to), cancel).await?;
                        }
                    }
                    return Err(s);
                }
            } else if ended
                && !in_flight
                && commit.is_none()
                && lanes.iter().all(|l| l.batcher.is_empty())
                && marks.lock().is_empty()
            {
                return self.checkpoint(Checkpoint::ShardEnd, cancel).await;
            }
            let room = lanes.iter().all(|l| l.batcher.len() < cap);
            if read.is_none() && stop.is_none() && !ended && room {
                if let Some(mut reader) = idle_reader.take() {
                    let (budget, after) = (ctx.budget.clone(), read_after.take());
                    read = Some(Box::pin(async move {
                        let at = reader.next_read_at();
                        sleep_until(after.map_or(at, |a| a.max(at))).await;
                        // Memory is bounded by the budget: wait for room before another page.
                        budget.room().await;
                        let page = reader.read().await;
                        (reader, page)
                    }));
                }
            }
            let next_window = lanes
                .iter()
                .filter(|l| !l.busy && !l.batcher.is_empty())
                .map(|l| l.window_end)
                .min();
            tokio::select! {
                (i, (bytes, done)) = next_done(&mut running), if in_flight => {
                    lanes[i].busy = false;
                    lanes[i].window_end = Instant::now() + window;
                    held.release(bytes);
                    if let Err(s) = done {
                        note(&mut stop, s);
                        lanes_cancel.cancel();
                    }
                }
                done = async { commit.as_mut().expect("a commit in flight").await }, if commit.is_some() => {
                    commit = None;
                    if let Err(s) = done {
                        note(&mut stop, s);
                        lanes_cancel.cancel();
                    }
                }
                (reader, page) = async { read.as_mut().expect("a read in flight").await }, if read.is_some() => {
                    read = None;
                    idle_reader = Some(reader);
                    match page {
                        Ok(Page::Records { records, caught_up, millis_behind }) => {
                            source_failures = 0;
                            let idle = records.is_empty()
                                && caught_up
                                && !running.iter().any(Option::is_some)
                                && lanes.iter().all(|l| l.batcher.is_empty());
                            self.telemetry.read(records.len(), idle, millis_behind);
                            let mut routed: Vec<Vec<Record>> = vec![Vec::new(); n];
                            let mut filtered_out = 0;
                            {
                                let mut w = marks.lock();
                                for r in records {
                                    w.read(r.sequence.clone());
                                    // Records no filter matches are done as soon as they are read
                                    // (docs/filtering.md): the watermark passes them.
                                    if filter.as_ref().is_some_and(|f| !f.keeps(&r.event)) {
                                        w.done(&r.sequence);
                                        filtered_out += 1;
                                        continue;
                                    }
                                    routed[lane_of(r.lane_key, n)].push(r);
                                }
                            }
                            if filtered_out > 0 {
                                self.telemetry.filtered_out(filtered_out);
                                marks.changed.notify_one();
                            }
                            held.charge(routed.iter().map(|r| bytes_of(r)).sum());
                            for (lane, records) in lanes.iter_mut().zip(routed) {
                                lane.batcher.push(records);
                            }
                        }
                        Ok(Page::ShardEnd) => {
                            self.telemetry.read_to_end();
                            ended = true;
                        }
                        Err(e) => {
                            source_failures += 1;
                            // As a single lane: an expired iterator or trimmed data is read again at
                            // once, anything else after a backoff.
                            let delay = match e {
                                SourceError::ExpiredIterator | SourceError::Trimmed(_) => None,
                                _ => Some(ctx.policy.backoff(source_failures)),
                            };
                            self.telemetry.read_failed(&e, delay);
                            read_after = delay.map(|d| Instant::now() + d);
                        }
                    }
                }
                _ = marks.changed.notified() => {}
                _ = sleep_until(next_window.unwrap_or(start)), if next_window.is_some() && stop.is_none() => {}
                _ = cancel.cancelled(), if stop.is_none() => {
                    note(&mut stop, Stop::Cancelled);
                    lanes_cancel.cancel();
                }
            }
        }
    }

    /// Processes one lane batch to completion, as [`ShardWorker::process`] does a batch, except that
    /// what is done is marked in the watermark instead of checkpointed.
    async fn lane_batch(
        &self,
        batch: Vec<Record>,
        marks: &Marks,
        cancel: &CancellationToken,
    ) -> Result<(), Stop> {
        let mut progress = Progress {
            sequences: batch.iter().map(|r| r.sequence.clone()).collect(),
            next: 0,
            marks,
        };
        let last = progress.sequences.last().cloned();
        let ctx = &self.ctx;
        let mut pieces = Pieces::new(batch);
        loop {
            let now = ctx.clock.now_ms();
            match pieces.next(&AgeAt { ctx, now_ms: now }) {
                // Lanes never have tumbling windows (refused at validate): no state to keep.
                Step::Invoke(call) => {
                    self.invoke(call, now, cancel).await?;
                }
                Step::Checkpoint(last) => progress.through(&last),
                Step::Wait(delay) => pause_or_cancelled(cancel, delay).await?,
                Step::GiveUp(given) => {
                    let end = self.hand_over(given, cancel).await?;
                    progress.through(&end);
                }
                Step::Done => break,
            }
        }
        if let Some(last) = last {
            progress.through(&last);
        }
        self.telemetry.batch_done();
        Ok(())
    }
}
