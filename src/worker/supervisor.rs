//! The supervisor of one stream mapping: reconciles the shards the stream lists with the workers
//! running. Every `shard_discovery_interval` (and at once whenever a shard's worker stops) it reads
//! the stream's retention, lists the shards, asks the [`Leases`] which of them this replica holds,
//! reads their checkpoints, and starts a [`ShardWorker`] for each shard that is listed, leased and
//! ready by [`lineage::plan`] (parents drained, and their workers gone, before children start).
//! A shard that is not leased is still read for its checkpoint, so a parent drained by another
//! replica (`ShardEnd`) frees its children here.
//!
//! Each worker commits through a [`Committer`] holding its lease. A lease that is lost stops its
//! worker at the next safe point (before its next dispatch, at once if idle) without moving the
//! checkpoint, and the shard leaves `/status`; a commit the store refuses stops the worker and the
//! shard is planned again from its checkpoint after a backoff. At shutdown, once a worker has
//! written its last checkpoint, its lease is released.
//!
//! It also makes LATEST durable: before the first shard starts, the mapping's first start time is
//! read from the checkpoint store (or recorded there), and every shard without a checkpoint is read
//! from that instant, so a restart before the first checkpoint loses nothing.
//!
//! A worker that panics is logged, counted and restarted from its checkpoint after a backoff; a
//! shard whose checkpoint cannot be read is shown as down. Either keeps `/readyz` at 503. The
//! mapping is marked started after the first pass; the supervisor stops when the shutdown token fires.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use super::shard::{Exit, ShardWorker};
use super::{until_ok, MappingContext};
use crate::checkpoint::{CheckpointError, Committer};
use crate::config::StartingPosition;
use crate::lease::{Lease, Leases, SingleReplica};
use crate::source::lineage::{self, Finished, Plan};
use crate::source::{Partition, Source};
use crate::telemetry::ShardState;

/// How a worker task ended.
#[derive(Debug)]
enum Stopped {
    Exit(Exit),
    Panicked(String),
}

/// The supervisor's view of its shards.
#[derive(Default)]
struct Shards {
    running: HashSet<String>,
    finished: HashMap<String, Finished>,
    waiting: HashSet<String>,
    /// Shards whose worker panicked or had a commit refused: how often, and when they may start
    /// again.
    restarts: HashMap<String, (u32, Instant)>,
    /// Shards shown as down because their checkpoint could not be read.
    unreadable: HashSet<String>,
}

pub async fn run_mapping(
    ctx: Arc<MappingContext>,
    source: Arc<dyn Source>,
    leases: Arc<dyn Leases>,
    tracker: TaskTracker,
    cancel: CancellationToken,
    discovery_interval: Duration,
) {
    let name = ctx.name().to_string();
    let Some(start) = resolve_start(&ctx, &cancel).await else {
        return;
    };
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<(String, Stopped)>();
    let mut shards = Shards::default();
    let mut ready = false;
    let mut failures = 0;
    let mut retention_read: Option<Instant> = None;
    // The last listing, reused when only the leases changed (a lease taken at a handoff starts its
    // shard without another ListShards round trip).
    let mut last_listing: Option<(Vec<Partition>, Instant)> = None;
    let mut leases_only = false;
    loop {
        // Once per discovery interval, not on every re-list after a shard ends.
        if retention_read.is_none_or(|at| at.elapsed() >= discovery_interval) {
            match source.retention().await {
                Ok(r) => {
                    ctx.set_retention(r);
                    retention_read = Some(Instant::now());
                }
                Err(e) => ctx.telemetry.retention_unknown(&e, ctx.retention()),
            }
        }
        let reuse = leases_only && !source.lists_by_assignment();
        let listing = match &last_listing {
            Some((listed, at)) if reuse && at.elapsed() < discovery_interval => Ok(listed.clone()),
            _ => source.list_partitions().await.inspect(|listed| {
                last_listing = Some((listed.clone(), Instant::now()));
            }),
        };
        leases_only = false;
        let listed = match listing {
            Ok(listed) => match leases.held(&name, &listed).await {
                Ok(held) => Ok((listed, held)),
                Err(e) => {
                    warn!(mapping = %name, error = %e, "cannot read this replica's leases; retrying");
                    Err(())
                }
            },
            Err(e) => {
                ctx.telemetry
                    .source_failed("cannot list shards; retrying", &e, None);
                Err(())
            }
        };
        match listed {
            Ok((listed, held)) => {
                failures = 0;
                let run = Run {
                    ctx: &ctx,
                    source: &source,
                    leases: &leases,
                    tracker: &tracker,
                    cancel: &cancel,
                    ended_tx: &ended_tx,
                    start,
                };
                reconcile(&run, &listed, held, &mut shards).await;
                if !ready {
                    ready = true;
                    ctx.telemetry.running(listed.len(), shards.running.len());
                }
            }
            Err(()) => failures += 1,
        }
        let mut wait = if failures > 0 {
            ctx.policy.backoff(failures).max(Duration::from_millis(500))
        } else {
            discovery_interval
        };
        // Wake for the next restart after a panic (the count stays, for the backoff).
        let now = Instant::now();
        if let Some(at) = shards
            .restarts
            .values()
            .map(|(_, at)| *at)
            .filter(|at| *at > now)
            .min()
        {
            wait = wait.min(at - now);
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            // A lease gained or lost, or a parent ended on another replica: plan again now.
            _ = leases.changed(&name) => leases_only = true,
            Some(first) = ended_rx.recv() => {
                // Take any other endings too, then re-list at once: children may be free to start.
                let mut ended = vec![first];
                while let Ok(more) = ended_rx.try_recv() {
                    ended.push(more);
                }
                for (shard, stopped) in ended {
                    worker_stopped(&ctx, &mut shards, shard, stopped);
                }
            }
        }
    }
}

/// The mapping's starting position, with LATEST resolved to the instant the mapping first started
/// (recorded on the first run). `None` if cancelled first.
async fn resolve_start(
    ctx: &MappingContext,
    cancel: &CancellationToken,
) -> Option<StartingPosition> {
    let position = ctx.mapping.starting_position()?; // a queue mapping has none (never run here)
    if position != StartingPosition::Latest {
        return Some(position);
    }
    let name = ctx.name();
    let ms = until_ok(
        cancel,
        |n| ctx.policy.backoff(n).max(Duration::from_secs(1)),
        |e: &CheckpointError, _, _| error!(mapping = name, error = %e, "cannot read or record the mapping's first start; no shard starts until it can"),
        || async {
            match ctx.checkpoints.mapping_start(name).await? {
                Some(ms) => Ok(ms),
                None => {
                    let now = ctx.clock.now_ms();
                    ctx.checkpoints.set_mapping_start(name, now).await?;
                    // Another replica may have recorded its own first: the stored one stands.
                    Ok(ctx.checkpoints.mapping_start(name).await?.unwrap_or(now))
                }
            }
        },
    )
    .await
    .ok()?;
    info!(
        mapping = name,
        started_at_ms = ms,
        "LATEST: reading every shard without a checkpoint from the mapping's first start"
    );
    Some(StartingPosition::AtTimestamp(
        UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64),
    ))
}

fn worker_stopped(ctx: &MappingContext, shards: &mut Shards, shard: String, stopped: Stopped) {
    shards.running.remove(&shard);
    let name = ctx.name();
    let (why, shown) = match stopped {
        Stopped::Exit(Exit::Ended) => {
            shards.restarts.remove(&shard);
            shards.finished.insert(shard, Finished::Drained);
            return;
        }
        Stopped::Exit(Exit::Cancelled) => return,
        Stopped::Exit(Exit::LeaseLost) => {
            // Another replica has it now (or will): not ours to show or to age.
            info!(mapping = name, shard = %shard, "lease lost; the shard's worker stopped");
            ctx.telemetry.status.remove(name, &shard);
            ctx.telemetry.metrics.forget_partition(&shard);
            return;
        }
        Stopped::Exit(Exit::Refused) => (
            "checkpoint refused",
            ctx.telemetry
                .status
                .get(name, &shard)
                .and_then(|s| s.last_error)
                .unwrap_or_else(|| "checkpoint refused".into()),
        ),
        Stopped::Panicked(message) => {
            ctx.telemetry.metrics.worker_panicked();
            (
                "shard worker panicked",
                format!("worker panicked: {message}"),
            )
        }
    };
    let count = shards.restarts.get(&shard).map_or(1, |(n, _)| n + 1);
    let delay = ctx
        .policy
        .backoff(count)
        .max(Duration::from_secs(1))
        .min(Duration::from_secs(60));
    ctx.telemetry.partition_down(&shard, why, &shown, delay);
    shards
        .restarts
        .insert(shard, (count, Instant::now() + delay));
}

/// What every pass of one mapping's supervisor works with.
struct Run<'a> {
    ctx: &'a Arc<MappingContext>,
    source: &'a Arc<dyn Source>,
    leases: &'a Arc<dyn Leases>,
    tracker: &'a TaskTracker,
    cancel: &'a CancellationToken,
    ended_tx: &'a mpsc::UnboundedSender<(String, Stopped)>,
    /// The mapping's starting position, LATEST resolved.
    start: StartingPosition,
}

/// A shard this replica does not hold: whatever it showed of it goes.
fn not_ours(ctx: &MappingContext, shards: &mut Shards, id: &str) {
    let name = ctx.name();
    if shards.waiting.remove(id) {
        ctx.telemetry
            .metrics
            .shard_state(Some(ShardState::WaitingForParent.as_str()), None);
        ctx.telemetry.status.remove(name, id);
    }
    if shards.unreadable.remove(id) {
        ctx.telemetry.status.remove(name, id);
    }
    // A shard waiting to restart (a refused commit, a panic) that another replica holds now is
    // not down here any more.
    if shards.restarts.remove(id).is_some() {
        ctx.telemetry.status.remove(name, id);
    }
}

async fn reconcile(
    run: &Run<'_>,
    listed_shards: &[Partition],
    held: Vec<Lease>,
    shards: &mut Shards,
) {
    let ctx = run.ctx;
    let name = ctx.name();
    let listed: HashSet<String> = listed_shards.iter().map(|s| s.id.clone()).collect();
    let held: HashMap<String, Lease> = held
        .into_iter()
        .map(|l| (l.partition().to_string(), l))
        .collect();
    // Parents first: a shard's parents were created before it, and shard ids sort by creation.
    let mut order: Vec<&Partition> = listed_shards.iter().collect();
    order.sort_by(|a, b| a.id.cmp(&b.id));
    for shard in order {
        if shards.running.contains(&shard.id) || shards.finished.contains_key(&shard.id) {
            continue;
        }
        if shards.restarts.contains_key(&shard.id) && !held.contains_key(&shard.id) {
            not_ours(ctx, shards, &shard.id);
            continue;
        }
        if shards
            .restarts
            .get(&shard.id)
            .is_some_and(|(_, at)| *at > Instant::now())
        {
            continue;
        }
        let lease = held.get(&shard.id);
        let checkpoint = match ctx.checkpoints.get(name, &shard.id).await {
            Ok(cp) => {
                if lease.is_some() && shards.unreadable.remove(&shard.id) {
                    info!(mapping = name, shard = %shard.id, "checkpoint readable again");
                }
                cp
            }
            Err(_) if lease.is_none() => {
                not_ours(ctx, shards, &shard.id);
                continue;
            }
            Err(e) => {
                // Loud, and on every pass until fixed: the shard (and its children) cannot run.
                ctx.telemetry.checkpoint_unreadable(&shard.id, &e);
                shards.unreadable.insert(shard.id.clone());
                continue;
            }
        };
        let plan = lineage::plan(
            shard,
            checkpoint.as_ref(),
            &listed,
            &shards.running,
            &shards.finished,
            run.start,
        );
        let (reader, lease) = match (plan, lease) {
            (Plan::Finished(how), _) => {
                shards.finished.insert(shard.id.clone(), how);
                if shards.waiting.remove(&shard.id) {
                    ctx.telemetry
                        .metrics
                        .shard_state(Some(ShardState::WaitingForParent.as_str()), None);
                }
                continue;
            }
            (_, None) => {
                not_ours(ctx, shards, &shard.id);
                continue;
            }
            (Plan::WaitForParents(parents), Some(_)) => {
                if shards.waiting.insert(shard.id.clone()) {
                    ctx.telemetry
                        .metrics
                        .shard_state(None, Some(ShardState::WaitingForParent.as_str()));
                    info!(mapping = name, shard = %shard.id, ?parents, "shard waits for its parents");
                }
                ctx.telemetry
                    .status
                    .update(name, &shard.id, |s| s.state = ShardState::WaitingForParent);
                continue;
            }
            (Plan::Start(from), Some(lease)) => {
                if shards.waiting.remove(&shard.id) {
                    ctx.telemetry
                        .metrics
                        .shard_state(Some(ShardState::WaitingForParent.as_str()), None);
                }
                // The parents are done and their child runs: their entries have served.
                for parent in &shard.parents {
                    if let Some(s) = ctx.telemetry.status.get(name, parent) {
                        if s.state == ShardState::Ended {
                            ctx.telemetry
                                .metrics
                                .shard_state(Some(ShardState::Ended.as_str()), None);
                        }
                        ctx.telemetry.status.remove(name, parent);
                    }
                }
                info!(mapping = name, shard = %shard.id, ?from, closed = shard.closed, "starting shard");
                (run.source.open(shard, from), lease.clone())
            }
        };
        start_worker(run, shard, reader, lease, checkpoint);
        shards.running.insert(shard.id.clone());
    }
    // A checkpoint that was not read this pass is not known to be bad any more.
    shards.unreadable.retain(|id| listed.contains(id));
}

/// Runs a worker for `shard` in its own task (so a panic ends only this worker and is seen here),
/// stops it when its lease is lost, releases the lease after a shutdown, and reports how it ended.
fn start_worker(
    run: &Run<'_>,
    shard: &Partition,
    reader: Box<dyn crate::source::PartitionReader>,
    lease: Lease,
    checkpoint: Option<crate::checkpoint::Checkpoint>,
) {
    let ctx = run.ctx;
    if let Some(token) = lease.token().filter(|t| t.owner != SingleReplica::OWNER) {
        ctx.telemetry
            .status
            .set_owner(ctx.name(), &shard.id, &token.owner);
    }
    let committer = Committer::new(
        ctx.checkpoints.clone(),
        ctx.name(),
        lease.clone(),
        checkpoint,
    );
    let worker = ShardWorker::new(
        ctx.clone(),
        shard.id.clone(),
        reader,
        run.source.format(shard),
        committer,
    );
    let (tx, id, shutdown) = (run.ended_tx.clone(), shard.id.clone(), run.cancel.clone());
    let (leases, mapping) = (run.leases.clone(), ctx.name().to_string());
    let stop = shutdown.child_token();
    run.tracker.spawn(async move {
        let mut task = tokio::spawn(worker.run(stop.clone()));
        let joined = tokio::select! {
            joined = &mut task => joined,
            // The worker checks its lease before each dispatch; this stops it when idle too.
            _ = lease.lost() => {
                stop.cancel();
                task.await
            }
        };
        let stopped = match joined {
            Ok(Exit::Cancelled) if !lease.is_held() || lease.is_ending() => {
                Stopped::Exit(Exit::LeaseLost)
            }
            Ok(exit) => Stopped::Exit(exit),
            Err(e) if e.is_panic() => Stopped::Panicked(panic_text(e.into_panic())),
            Err(_) => Stopped::Exit(Exit::Cancelled),
        };
        if matches!(stopped, Stopped::Exit(Exit::Cancelled)) && shutdown.is_cancelled() {
            // Its last checkpoint is written: another replica may take the shard at once.
            if let Err(e) = leases.release(&mapping, &id).await {
                warn!(mapping = %mapping, shard = %id, error = %e, "cannot release the shard's lease; it is free once it expires");
            }
        }
        let _ = tx.send((id, stopped));
    });
}

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}
