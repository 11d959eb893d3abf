//! How a shard worker settles records: checkpoints (committed through its
//! [`Committer`](crate::checkpoint::Committer), retried until the store takes them, never when
//! refused) and the records it gives up on (described to the on-failure destination, retried until
//! they expire from the stream, or dropped and counted). Also reads what a function's response says
//! for the failure record. The worker's lease is checked here before each dispatch.

use std::time::Duration;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::super::{pause, until_ok, Cancelled};
use super::{Exit, ShardWorker};
use crate::batch;
use crate::checkpoint::{Checkpoint, CommitError};
use crate::destination::{BatchInfo, FailureRecord, ResponseContext};
use crate::dispatch::Invoked;
use crate::retry::Condition;
use crate::source::Record;

impl ShardWorker {
    /// Records are given up on: describe them to the on-failure destination (retrying until it
    /// takes the record) or count them dropped, then checkpoint past them.
    pub(super) async fn give_up(
        &mut self,
        records: Vec<Record>,
        condition: Condition,
        (invokes, last): (u32, Option<(Option<String>, ResponseContext)>),
        cancel: &CancellationToken,
    ) -> bool {
        // Handing records to the destination is a dispatch too: not once the lease is gone.
        if !self.still_leased() {
            return false;
        }
        let ctx = self.ctx.clone();
        let name = ctx.name();
        let (first, last_rec) = (
            records.first().expect("non-empty"),
            records.last().expect("non-empty"),
        );
        let end = last_rec.sequence.clone();
        warn!(mapping = name, shard = %self.shard, condition = condition.as_str(), records = records.len(),
              start = %first.sequence, end = %end, "giving up on records");
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
                    BatchInfo {
                        key: self.batch_info_key,
                        shard_id: self.shard.clone(),
                        start_sequence_number: first.sequence.0.clone(),
                        end_sequence_number: end.0.clone(),
                        first_arrival_ms: first.arrival_ms,
                        last_arrival_ms: last_rec.arrival_ms,
                        batch_size: records.len(),
                        stream_arn: ctx.mapping.source.arn().to_string(),
                    },
                    batch::encode(&records),
                    OffsetDateTime::now_utc(),
                );
                // The destination is retried until the records leave the stream (their retention);
                // past that, holding the shard back saves nothing, so they are dropped.
                let gone_at = first.arrival_ms + ctx.retention().as_millis() as i64;
                let mut failures = 0;
                loop {
                    match dest.send(&record).await {
                        Ok(()) => {
                            ctx.metrics.destination_delivered(name, records.len());
                            break;
                        }
                        Err(e) => {
                            failures += 1;
                            ctx.metrics.destination_failure(name);
                            ctx.status.update(name, &self.shard, |s| {
                                s.last_error = Some(format!("destination: {e}"))
                            });
                            let left = gone_at - ctx.clock.now_ms();
                            if left <= 0 {
                                error!(mapping = name, shard = %self.shard, error = %e, records = records.len(),
                                       start = %first.sequence, end = %end,
                                       "on-failure destination kept failing until the records expired from the stream; dropping them");
                                ctx.metrics.dropped(name, records.len());
                                break;
                            }
                            let delay = ctx
                                .policy
                                .backoff(failures)
                                .min(Duration::from_millis(left as u64));
                            warn!(mapping = name, shard = %self.shard, error = %e, retry_in_ms = delay.as_millis() as u64,
                                  "on-failure destination rejected the record; retrying (the shard waits)");
                            if !pause(cancel, delay).await {
                                return false;
                            }
                        }
                    }
                }
            }
            None => ctx.metrics.dropped(name, records.len()),
        }
        self.checkpoint(Checkpoint::Sequence(end), cancel).await
    }

    /// Commits a checkpoint, retrying until the store takes it. Returns false if cancelled first,
    /// or if the commit is refused or the lease lost (the reason is kept for [`Self::run`]).
    pub(super) async fn checkpoint(&mut self, cp: Checkpoint, cancel: &CancellationToken) -> bool {
        let ctx = self.ctx.clone();
        let (shard, committer) = (&self.shard, &self.committer);
        let written = until_ok(
            cancel,
            |n| ctx.policy.backoff(n),
            |e: &CommitError, _, _| warn!(mapping = ctx.name(), shard = %shard, error = %e, "checkpoint write failed; retrying"),
            // A refusal is never retried: it comes out as `Ok(Err(_))`.
            || async {
                match committer.commit(&cp).await {
                    Err(e) if !e.is_refusal() => Err(e),
                    done => Ok(done),
                }
            },
        )
        .await;
        match written {
            Err(Cancelled) => return false,
            Ok(Err(refused)) => {
                self.stop_for(refused);
                return false;
            }
            Ok(Ok(())) => {}
        }
        ctx.metrics.checkpointed(ctx.name());
        ctx.status.update(ctx.name(), &self.shard, |s| {
            s.checkpoint = Some(cp.to_string())
        });
        true
    }

    /// True while the partition's lease is held; otherwise the worker is to stop (before its next
    /// dispatch) and the reason is kept.
    pub(super) fn still_leased(&mut self) -> bool {
        if self.committer.lease().is_held() {
            return true;
        }
        self.stop_for(CommitError::LeaseLost);
        false
    }

    fn stop_for(&mut self, why: CommitError) {
        let exit = if why == CommitError::LeaseLost {
            warn!(mapping = self.ctx.name(), shard = %self.shard,
                  "lease lost; the shard stops here, its checkpoint where it was");
            Exit::LeaseLost
        } else {
            error!(mapping = self.ctx.name(), shard = %self.shard, error = %why,
                   "checkpoint refused; the shard stops and is planned again from its checkpoint");
            self.ctx.status.update(self.ctx.name(), &self.shard, |s| {
                s.last_error = Some(why.to_string())
            });
            Exit::Refused
        };
        self.stopped = Some(exit);
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
