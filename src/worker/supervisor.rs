//! The supervisor of one mapping: lists the stream's shards (retrying until the stream answers),
//! reads each shard's checkpoint and starts a [`ShardWorker`] per open shard, from just after its
//! checkpoint or, with none, from the mapping's StartingPosition. It marks the mapping ready once
//! every worker is running. (Shard lineage and periodic discovery belong to the next step.)

use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use super::shard::ShardWorker;
use super::MappingContext;
use crate::checkpoint::Checkpoint;
use crate::source::{StartFrom, StreamSource};

pub async fn run_mapping(
    ctx: Arc<MappingContext>,
    source: Arc<dyn StreamSource>,
    tracker: TaskTracker,
    cancel: CancellationToken,
) {
    let name = ctx.name().to_string();
    let mut failures = 0;
    let shards = loop {
        match source.list_shards().await {
            Ok(shards) => break shards,
            Err(e) => {
                failures += 1;
                ctx.metrics.source_error(&name, e.kind());
                let delay = ctx
                    .policy
                    .backoff(failures)
                    .max(std::time::Duration::from_millis(500));
                warn!(mapping = %name, error = %e, retry_in_ms = delay.as_millis() as u64, "cannot list shards; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    };
    let open: Vec<_> = shards.into_iter().filter(|s| !s.closed).collect();
    let mut started = 0;
    for shard in &open {
        let from = match ctx.checkpoints.get(&name, &shard.id).await {
            Ok(Some(Checkpoint::Sequence(seq))) => StartFrom::After(seq),
            Ok(Some(Checkpoint::ShardEnd)) => continue,
            Ok(None) => StartFrom::Position(ctx.mapping.starting_position),
            Err(e) => {
                error!(mapping = %name, shard = %shard.id, error = %e, "cannot read checkpoint; shard not started");
                continue;
            }
        };
        info!(mapping = %name, shard = %shard.id, from = ?from, "starting shard");
        let reader = source.open(shard, from);
        let worker = ShardWorker::new(
            ctx.clone(),
            shard.id.clone(),
            reader,
            source.batch_info_key(),
        );
        tracker.spawn(worker.run(cancel.clone()));
        started += 1;
    }
    if started == open.len() {
        ctx.status.mapping_started();
    }
    info!(mapping = %name, shards = started, "mapping running");
}
