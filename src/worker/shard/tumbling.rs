//! The shard worker's side of tumbling windows (the rules are in [`super::window`]): the window
//! state is resumed from the checkpoint store when the worker starts, batches are cut at window
//! boundaries, every invocation carries the window fields, a response must carry `state` (else it
//! is a failed invocation), and a window is closed by an invocation without records: the final
//! one once the window is over (its state is then dropped, with the checkpoint), or an early one
//! when the state grew past the limit (the window goes on with `{}`). Closing invocations are
//! retried like batches: function errors spend `MaximumRetryAttempts`, throttles do not; given up
//! on, the window's state is dropped without one.

use serde_json::{Map, Value};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::super::{pause_or_cancelled, until_ok};
use super::window::{Closing, FIELDS_RESERVE};
use super::{ShardWorker, Stop};
use crate::batch::{self, MAX_PAYLOAD_BYTES};
use crate::checkpoint::{CommitError, Committer, WindowState};
use crate::dispatch::outcome::classify_as;
use crate::dispatch::response::{window_state, IdentifierKind};
use crate::dispatch::{DispatchError, Invoked, Outcome};
use crate::retry::{Decision, FailureKind};
use crate::source::Record;

/// The largest event of records a worker batches: all of Lambda's 6 MB, or with windows what the
/// window fields (the state up to the store's limit) leave.
pub(super) fn max_batch_bytes(window: Option<Duration>, committer: &Committer) -> usize {
    match window {
        None => MAX_PAYLOAD_BYTES,
        Some(_) => MAX_PAYLOAD_BYTES - committer.max_window_state_bytes() - FIELDS_RESERVE,
    }
}

impl ShardWorker {
    /// The window fields of an invocation (empty without windows).
    pub(super) fn window_fields(&self, closing: Option<Closing>) -> Vec<u8> {
        match &self.window {
            Some(w) => w.fields(self.telemetry.id(), self.ctx.mapping.source.arn(), closing),
            None => Vec::new(),
        }
    }

    /// With windows, a response must carry its `state` object: one that does not is a failed
    /// invocation (a function error). The state is held until the records are settled.
    pub(super) fn window_response(
        &self,
        outcome: Outcome,
        result: &Result<Invoked, DispatchError>,
    ) -> (Outcome, Option<Map<String, Value>>) {
        let (Some(_), Ok(inv)) = (&self.window, result) else {
            return (outcome, None);
        };
        if !matches!(outcome, Outcome::Success | Outcome::PartialFailure(_)) {
            return (outcome, None);
        }
        match window_state(&inv.body) {
            Ok(state) => (outcome, Some(state)),
            Err(why) => (
                Outcome::FunctionError {
                    partial: false,
                    detail: format!("tumbling window: {why}"),
                },
                None,
            ),
        }
    }

    /// After an invocation was settled: the `state` it answered becomes the window's if its
    /// records (some of them) are done, and a state over the limit ends the window early.
    pub(super) async fn window_settled(
        &mut self,
        answered: Option<Map<String, Value>>,
        done: bool,
        cancel: &CancellationToken,
    ) -> Result<(), Stop> {
        let Some(w) = &mut self.window else {
            return Ok(());
        };
        if let Some(state) = answered {
            w.responded(state);
        }
        if !done {
            w.unsettled();
            return Ok(());
        }
        if w.settled() {
            self.close_window(Closing::Early, cancel).await?;
        }
        Ok(())
    }

    /// Reads the window state stored with the checkpoint the worker was planned from.
    pub(super) async fn resume_window(&mut self, cancel: &CancellationToken) -> Result<(), Stop> {
        if self.window.is_none() {
            return Ok(());
        }
        let ctx = self.ctx.clone();
        let (t, committer) = (&self.telemetry, &self.committer);
        let stored = until_ok(
            cancel,
            |n| ctx.policy.backoff(n),
            |e: &CommitError, _, _| t.checkpoint_failed(e),
            || async {
                match committer.stored_window().await {
                    Err(e) if !e.is_refusal() => Err(e),
                    read => Ok(read),
                }
            },
        )
        .await?;
        match stored {
            Ok(stored) => {
                if let Some(s) = &stored {
                    tracing::info!(
                        mapping = ctx.name(),
                        shard = self.telemetry.id(),
                        window_start_ms = s.start_ms,
                        state_bytes = s.state_bytes(),
                        "resuming a tumbling window's state"
                    );
                }
                if let Some(w) = &mut self.window {
                    w.resume(stored);
                }
                Ok(())
            }
            Err(refused) => Err(self.stop_for(refused)),
        }
    }

    /// The next batch: with windows, only records of one window (and that window opened).
    pub(super) fn take_batch(&mut self) -> Vec<Record> {
        let Some(w) = &mut self.window else {
            return self.batcher.take();
        };
        let n = w.run_len(self.batcher.iter());
        let batch = self.batcher.take_upto(n);
        w.begin(&batch);
        batch
    }

    /// True when the open window's final invocation is due.
    pub(super) fn window_due(&self) -> bool {
        self.window.as_ref().is_some_and(|w| {
            w.final_due(
                self.ctx.clock.now_ms(),
                self.batcher.iter().next(),
                self.ended,
            )
        })
    }

    /// A read began at `started_ms` and found the reader `caught_up` (or not).
    pub(super) fn window_read(&mut self, started_ms: i64, caught_up: bool) {
        if let Some(w) = &mut self.window {
            w.read(started_ms, caught_up);
        }
    }

    /// The state to store with a checkpoint: the open window's.
    pub(super) fn window_to_store(&self) -> Option<WindowState> {
        self.window.as_ref().and_then(|w| w.open().cloned())
    }

    /// Makes a closing invocation (no records) until it succeeds or is given up on, then closes
    /// the window: a final one is committed at once (the state dropped, the checkpoint where it
    /// is); an early one's fresh state goes with the next checkpoint.
    pub(super) async fn close_window(
        &mut self,
        closing: Closing,
        cancel: &CancellationToken,
    ) -> Result<(), Stop> {
        let ctx = self.ctx.clone();
        let (mut function_errors, mut consecutive) = (0u32, 0u32);
        loop {
            if cancel.is_cancelled() {
                return Err(Stop::Cancelled);
            }
            self.still_leased()?;
            let payload = batch::encode_with(
                &self.format.envelope,
                &[],
                &self.window_fields(Some(closing)),
            );
            let started = Instant::now();
            let result = ctx.dispatcher.invoke(payload).await;
            let took = started.elapsed();
            let outcome = classify_as(
                &result,
                ctx.mapping.report_batch_item_failures(),
                IdentifierKind::of(&self.format),
                std::iter::empty(),
            );
            let (outcome, answered) = self.window_response(outcome, &result);
            if let (Some(w), Some(state)) = (&mut self.window, answered) {
                w.responded(state);
            }
            let label = outcome.label();
            self.telemetry.invoked(0, outcome.invoked(), label, took);
            let kind = match outcome {
                Outcome::Success => break,
                Outcome::Throttled(_) | Outcome::ServiceError(_) => FailureKind::NotInvoked,
                _ => FailureKind::Function,
            };
            if let Ok(inv) = &result {
                if inv.function_error.is_some() {
                    self.telemetry.function_error_body(&inv.body);
                }
            }
            if kind == FailureKind::Function {
                function_errors += 1;
            }
            consecutive += 1;
            let detail = match &outcome {
                Outcome::FunctionError { detail, .. } => detail.clone(),
                Outcome::Throttled(d) | Outcome::ServiceError(d) | Outcome::PayloadTooLarge(d) => {
                    d.clone()
                }
                _ => String::new(),
            };
            self.telemetry
                .invocation_failed(0, label, function_errors, &detail);
            match ctx.policy.decide(kind, 0, function_errors, consecutive) {
                Decision::GiveUp(condition) => {
                    tracing::warn!(
                        mapping = ctx.name(),
                        shard = self.telemetry.id(),
                        condition = condition.as_str(),
                        ?closing,
                        "giving up a tumbling window's closing invocation: its state is dropped"
                    );
                    break;
                }
                Decision::RetryAfter(delay) => pause_or_cancelled(cancel, delay).await?,
                Decision::Bisect => {
                    pause_or_cancelled(cancel, ctx.policy.backoff(consecutive)).await?
                }
            }
        }
        tracing::info!(
            mapping = ctx.name(),
            shard = self.telemetry.id(),
            ?closing,
            "tumbling window closed"
        );
        if let Some(w) = &mut self.window {
            w.closed(closing);
        }
        if closing == Closing::Final {
            if let Some(at) = self.committer.committed() {
                self.checkpoint(at, cancel).await?;
            }
        }
        Ok(())
    }
}
