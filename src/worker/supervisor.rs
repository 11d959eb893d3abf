//! The supervisor of one mapping: reconciles the shards the stream lists with the workers running.
//! Every `shard_discovery_interval` (and at once whenever a shard ends) it lists the shards, reads
//! their checkpoints, and starts a [`ShardWorker`] for each shard that [`lineage::plan`] says may
//! run, so parents are drained before their children start. It marks the mapping ready after the
//! first pass, and stops when the shutdown token fires.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use super::shard::{Exit, ShardWorker};
use super::MappingContext;
use crate::source::lineage::{self, Finished, Plan};
use crate::source::{ShardInfo, StreamSource};
use crate::telemetry::ShardState;

pub async fn run_mapping(
    ctx: Arc<MappingContext>,
    source: Arc<dyn StreamSource>,
    tracker: TaskTracker,
    cancel: CancellationToken,
    discovery_interval: Duration,
) {
    let name = ctx.name().to_string();
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<(String, Exit)>();
    let mut running: HashSet<String> = HashSet::new();
    let mut finished: HashMap<String, Finished> = HashMap::new();
    let mut waiting: HashSet<String> = HashSet::new();
    let mut ready = false;
    let mut failures = 0;
    loop {
        match source.list_shards().await {
            Ok(shards) => {
                failures = 0;
                reconcile(
                    &ctx,
                    &source,
                    &tracker,
                    &cancel,
                    &ended_tx,
                    &shards,
                    &mut running,
                    &mut finished,
                    &mut waiting,
                )
                .await;
                if !ready {
                    ready = true;
                    ctx.status.mapping_started();
                    info!(mapping = %name, shards = shards.len(), running = running.len(), "mapping running");
                }
            }
            Err(e) => {
                failures += 1;
                ctx.metrics.source_error(&name, e.kind());
                warn!(mapping = %name, error = %e, "cannot list shards; retrying");
            }
        }
        let wait = if failures > 0 {
            ctx.policy.backoff(failures).max(Duration::from_millis(500))
        } else {
            discovery_interval
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            Some((shard, exit)) = ended_rx.recv() => {
                running.remove(&shard);
                if exit == Exit::Ended {
                    finished.insert(shard, Finished::Drained);
                }
                // Drain any other endings, then re-list at once: children may be free to start.
                while let Ok((shard, exit)) = ended_rx.try_recv() {
                    running.remove(&shard);
                    if exit == Exit::Ended {
                        finished.insert(shard, Finished::Drained);
                    }
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn reconcile(
    ctx: &Arc<MappingContext>,
    source: &Arc<dyn StreamSource>,
    tracker: &TaskTracker,
    cancel: &CancellationToken,
    ended_tx: &mpsc::UnboundedSender<(String, Exit)>,
    shards: &[ShardInfo],
    running: &mut HashSet<String>,
    finished: &mut HashMap<String, Finished>,
    waiting: &mut HashSet<String>,
) {
    let name = ctx.name();
    let listed: HashSet<String> = shards.iter().map(|s| s.id.clone()).collect();
    // Parents first: a shard's parents were created before it, and shard ids sort by creation.
    let mut order: Vec<&ShardInfo> = shards.iter().collect();
    order.sort_by(|a, b| a.id.cmp(&b.id));
    for shard in order {
        if running.contains(&shard.id) || finished.contains_key(&shard.id) {
            continue;
        }
        let checkpoint = match ctx.checkpoints.get(name, &shard.id).await {
            Ok(cp) => cp,
            Err(e) => {
                error!(mapping = name, shard = %shard.id, error = %e, "cannot read checkpoint; shard not started");
                continue;
            }
        };
        match lineage::plan(
            shard,
            checkpoint.as_ref(),
            &listed,
            finished,
            ctx.mapping.starting_position,
        ) {
            Plan::Finished(how) => {
                finished.insert(shard.id.clone(), how);
                if waiting.remove(&shard.id) {
                    ctx.metrics.shard_state(
                        name,
                        Some(ShardState::WaitingForParent.as_str()),
                        None,
                    );
                }
            }
            Plan::WaitForParents(parents) => {
                if waiting.insert(shard.id.clone()) {
                    ctx.metrics.shard_state(
                        name,
                        None,
                        Some(ShardState::WaitingForParent.as_str()),
                    );
                    info!(mapping = name, shard = %shard.id, ?parents, "shard waits for its parents");
                }
                ctx.status
                    .update(name, &shard.id, |s| s.state = ShardState::WaitingForParent);
            }
            Plan::Start(from) => {
                if waiting.remove(&shard.id) {
                    ctx.metrics.shard_state(
                        name,
                        Some(ShardState::WaitingForParent.as_str()),
                        None,
                    );
                }
                info!(mapping = name, shard = %shard.id, ?from, closed = shard.closed, "starting shard");
                let reader = source.open(shard, from);
                let worker = ShardWorker::new(
                    ctx.clone(),
                    shard.id.clone(),
                    reader,
                    source.batch_info_key(),
                );
                let (tx, id, cancel) = (ended_tx.clone(), shard.id.clone(), cancel.clone());
                tracker.spawn(async move {
                    let exit = worker.run(cancel).await;
                    let _ = tx.send((id, exit));
                });
                running.insert(shard.id.clone());
            }
        }
    }
}
