//! How a shard worker settles records: checkpoints (committed through its
//! [`Committer`](crate::checkpoint::Committer), retried until the store takes them, never when
//! refused; the one place that writes them) and the records it gives up on (described to the
//! on-failure destination, retried until they expire from the stream, or dropped and counted). Also
//! reads what a function's response says for the failure record. An open tumbling window's state
//! is committed with each checkpoint. The worker's lease is checked here
//! before each dispatch and each hand-over to the destination.

use std::time::Duration;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::super::{until_ok, until_ok_by};
use super::pieces::GiveUp;
use super::{ShardWorker, Stop};
use crate::batch;
use crate::checkpoint::{Checkpoint, CommitError};
use crate::destination::{FailureInfo, FailureRecord, ResponseContext};
use crate::dispatch::Invoked;
use crate::source::SequenceNumber;

impl ShardWorker {
    /// Records are given up on: describe them to the on-failure destination (retrying until it
    /// takes the record) or count them dropped, then checkpoint past them.
    pub(super) async fn give_up(
        &mut self,
        given: GiveUp,
        cancel: &CancellationToken,
    ) -> Result<(), Stop> {
        let end = self.hand_over(given, cancel).await?;
        self.checkpoint(Checkpoint::Sequence(end), cancel).await
    }

    /// Describes records given up on to the on-failure destination (or counts them dropped);
    /// returns the last one's sequence number, past which the shard may be checkpointed.
    pub(super) async fn hand_over(
        &self,
        given: GiveUp,
        cancel: &CancellationToken,
    ) -> Result<SequenceNumber, Stop> {
        // Handing records to the destination is a dispatch too: not once the lease is gone.
        self.still_leased()?;
        let GiveUp {
            records,
            condition,
            invokes,
            last_response: last,
        } = given;
        let ctx = self.ctx.clone();
        let name = ctx.name();
        let (first, last_rec) = (
            records.first().expect("non-empty"),
            records.last().expect("non-empty"),
        );
        let end = last_rec.sequence.clone();
        let t = &self.telemetry;
        t.giving_up(condition.as_str(), records.len(), &first.sequence, &end);
        match &ctx.destination {
            Some(dest) => {
                let (request_id, response) = match last {
                    Some((id, r)) => (id, Some(r)),
                    None => (None, None),
                };
                let record = FailureRecord::new(
                    name,
                    request_id,
                    ctx.dispatcher.function_arn(),
                    condition.as_str(),
                    invokes,
                    response,
                    FailureInfo::of(
                        &self.format,
                        self.telemetry.id(),
                        &records,
                        ctx.mapping.source.arn(),
                    )
                    .expect("a batch given up is not empty"),
                    batch::encode_in(&self.format.envelope, &records),
                    OffsetDateTime::now_utc(),
                );
                // The destination is retried until the records leave the stream (their retention);
                // past that, holding the shard back saves nothing, so they are dropped.
                let gone_at = first.arrival_ms + ctx.retention().as_millis() as i64;
                let sent = until_ok_by(
                    cancel,
                    || Duration::from_millis((gone_at - ctx.clock.now_ms()).max(0) as u64),
                    |n| ctx.policy.backoff(n),
                    |e: &String, _, delay| t.destination_failed(e, delay),
                    || dest.send(&record),
                )
                .await?;
                match sent {
                    Ok(()) => t.delivered(records.len()),
                    Err(e) => t.destination_gave_out(&e, records.len(), &first.sequence, &end),
                }
            }
            None => t.dropped(records.len()),
        }
        Ok(end)
    }

    /// Commits a checkpoint, retrying until the store takes it (or shutdown comes first). The only
    /// place a shard worker writes checkpoints. A refused commit or a lost lease stops the worker.
    pub(super) async fn checkpoint(
        &self,
        cp: Checkpoint,
        cancel: &CancellationToken,
    ) -> Result<(), Stop> {
        let ctx = self.ctx.clone();
        let window = self.window_to_store();
        let (t, committer) = (&self.telemetry, &self.committer);
        let written = until_ok(
            cancel,
            |n| ctx.policy.backoff(n),
            |e: &CommitError, _, _| t.checkpoint_failed(e),
            // A refusal is never retried: it comes out as `Ok(Err(_))`.
            || async {
                match committer.commit_window(&cp, window.as_ref()).await {
                    Err(e) if !e.is_refusal() => Err(e),
                    done => Ok(done),
                }
            },
        )
        .await?;
        if let Err(refused) = written {
            return Err(self.stop_for(refused));
        }
        self.telemetry.checkpointed(cp.to_string());
        Ok(())
    }

    /// `Ok` while the partition's lease is held; otherwise the worker is to stop (before its next
    /// dispatch).
    pub(super) fn still_leased(&self) -> Result<(), Stop> {
        if self.committer.lease().is_held() {
            return Ok(());
        }
        Err(self.stop_for(CommitError::LeaseLost))
    }

    pub(super) fn stop_for(&self, why: CommitError) -> Stop {
        if why == CommitError::LeaseLost {
            self.telemetry.lease_lost();
            Stop::LeaseLost
        } else {
            self.telemetry.commit_refused(&why);
            Stop::Refused
        }
    }
}

pub(super) fn response_context(inv: &Invoked) -> (Option<String>, ResponseContext) {
    (
        inv.request_id.clone(),
        ResponseContext {
            status_code: inv.status,
            executed_version: inv
                .executed_version
                .clone()
                .unwrap_or_else(|| "$LATEST".into()),
            function_error: inv.function_error.clone().unwrap_or_default(),
        },
    )
}
