//! Wiring: builds the checkpoint store, the admin server, the AWS clients and, per enabled mapping,
//! its source, dispatcher and destination; runs the mappings until `shutdown` fires, then gives
//! in-flight work the grace period to finish (each finished batch is checkpointed as it completes).
//! Meanwhile it applies the config reloads asked for ([`reload`]), one at a time.
//!
//! The process-wide parts live in one [`process::Process`], from which each mapping is started
//! by the builder of its source kind ([`process`]). Each mapping runs with its own stop token and
//! task tracker ([`mappings`]), so a reload can stop one and wait for it while the others run;
//! which mappings a reload starts, stops and restarts is decided by [`plan`] (pure). With
//! `--admin-write`, the same loop applies the checkpoint moves the admin server receives
//! ([`checkpoints`]), between reloads.

mod checkpoints;
mod mappings;
pub mod plan;
mod process;
pub mod reload;

use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::aws::Clients;
use crate::budget::ByteBudget;
use crate::checkpoint::{CheckpointStore, FileCheckpointStore};
use crate::cli::checkpoints::live::LiveMove;
use crate::config::{Config, Coordination, Mapping};
use crate::lease::coordinator::{Coordinator, Membership};
use crate::lease::dynamo::LeaseTable;
use crate::server::{self, AdminState};
use crate::telemetry::{Metrics, ReloadTelemetry, Status};
use mappings::Mappings;
use process::Process;
use reload::{ConfigSource, Requests};

/// Runs sluice until `shutdown` is cancelled, on `cfg` as given (no reloads).
pub async fn run(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    run_with(cfg, shutdown, None, false).await
}

/// Runs sluice until `shutdown` is cancelled, reloading the config from `source` whenever
/// `requests` asks ([`reload::channel`]: SIGHUP, a watched file).
pub async fn run_reloading(
    cfg: Config,
    shutdown: CancellationToken,
    source: ConfigSource,
    requests: Requests,
) -> anyhow::Result<()> {
    run_with(cfg, shutdown, Some((source, requests)), false).await
}

/// [`run_reloading`]; with `admin_write`, the admin server also takes checkpoint moves
/// (`POST /checkpoints/<mapping>`, see [`checkpoints`]), applied between reloads.
pub async fn run_instance(
    cfg: Config,
    shutdown: CancellationToken,
    source: ConfigSource,
    requests: Requests,
    admin_write: bool,
) -> anyhow::Result<()> {
    run_with(cfg, shutdown, Some((source, requests)), admin_write).await
}

async fn run_with(
    mut cfg: Config,
    shutdown: CancellationToken,
    mut reloads: Option<(ConfigSource, Requests)>,
    admin_write: bool,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let enabled: Vec<_> = cfg.mappings.iter().filter(|m| m.enabled).cloned().collect();
    let status = Arc::new(Status::new(0));
    let clients = crate::aws::clients(&cfg).await;
    let (checkpoints, coordinator, file_store) = match &cfg.coordination {
        None => {
            let file = single_replica_store(&cfg, &enabled).await?;
            (file.clone() as Arc<dyn CheckpointStore>, None, Some(file))
        }
        Some(c) => {
            let coordinator = join_fleet(&cfg, c, &clients, &enabled, &shutdown).await?;
            status.set_worker_id(coordinator.worker_id());
            (
                coordinator.clone() as Arc<dyn CheckpointStore>,
                Some(coordinator),
                None,
            )
        }
    };
    let (move_tx, mut move_rx) = if admin_write {
        let (tx, rx) = mpsc::channel::<LiveMove>(4);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };

    let listener = tokio::net::TcpListener::bind(cfg.admin_listen)
        .await
        .with_context(|| format!("binding the admin server to {}", cfg.admin_listen))?;
    info!(address = %listener.local_addr()?, admin_write, "admin server listening");
    if admin_write {
        warn!(address = %cfg.admin_listen, "admin writes are on: POST /checkpoints/<mapping> moves checkpoints; keep the admin port off untrusted networks");
    }
    let server_stop = CancellationToken::new();
    let app = server::router(AdminState {
        metrics: metrics.clone(),
        status: status.clone(),
        moves: move_tx,
    });
    let stop = server_stop.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
    });

    let process = Process {
        metrics: metrics.clone(),
        status: status.clone(),
        checkpoints,
        coordinator: coordinator.clone(),
        kafka_sources: Default::default(),
        budget: Arc::new(ByteBudget::new(cfg.max_in_flight_bytes)),
        clients,
        tracker: TaskTracker::new(),
        shutdown: shutdown.clone(),
        shard_discovery_interval: cfg.shard_discovery_interval,
        invoke_identity_arn: cfg.invoke_identity_arn.clone(),
    };
    let telemetry = ReloadTelemetry::new(&metrics, &status, &plan::fingerprint(&cfg));
    let mut mappings = Mappings::new(process, Arc::new(telemetry));
    for mapping in &cfg.mappings {
        if !mapping.enabled {
            info!(mapping = %mapping.name, "mapping disabled");
        }
    }
    for mapping in enabled {
        mappings.start(mapping)?;
    }

    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            trigger = next_reload(&mut reloads) => {
                if let Some((source, requests)) = &reloads {
                    reload::reload(trigger, source, &mut cfg, &mut mappings, &shutdown).await;
                    requests.done();
                }
            }
            Some(m) = next_move(&mut move_rx) => {
                checkpoints::apply(m, &cfg, &mut mappings, file_store.as_ref(), &shutdown).await;
            }
        }
    }
    // Moves still queued are answered 503 (their reply is dropped).
    drop(move_rx);
    status.set_draining();
    info!(
        grace_s = cfg.shutdown_grace.as_secs(),
        "shutting down: no new reads; waiting for in-flight invocations"
    );
    if mappings.shutdown(cfg.shutdown_grace).await {
        info!("all workers stopped; checkpoints written");
    } else {
        warn!("grace period over: abandoning in-flight invocations (their records are re-read after the checkpoint on restart)");
    }
    if let Some(file) = &file_store {
        // The files hold every checkpoint after a clean stop (the journal is only for crashes).
        if let Err(e) = file.flush().await {
            warn!(error = %e, "could not bring the checkpoint files up to date; the next start recovers them from the journal");
        }
    }
    if let Some(coordinator) = coordinator {
        // Whatever is still held (shards waiting for parents, workers abandoned): free it now.
        coordinator.stop().await;
    }
    server_stop.cancel();
    // A scraper holding a connection open does not hold the exit.
    match tokio::time::timeout(Duration::from_secs(2), server).await {
        Ok(Ok(Err(e))) => error!(error = %e, "admin server failed"),
        Ok(Err(e)) => error!(error = %e, "admin server task failed"),
        Ok(Ok(Ok(()))) => {}
        Err(_) => warn!("admin server did not stop within 2 s; leaving it"),
    }
    Ok(())
}

/// The next reload asked for; never without reloads.
async fn next_reload(reloads: &mut Option<(ConfigSource, Requests)>) -> reload::Trigger {
    match reloads {
        Some((_, requests)) => requests.next().await,
        None => std::future::pending().await,
    }
}

/// The next checkpoint move the admin server received; never without admin writes.
async fn next_move(moves: &mut Option<mpsc::Receiver<LiveMove>>) -> Option<LiveMove> {
    match moves {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The embedded store (one replica), with progress carried over to renamed mappings.
async fn single_replica_store(
    cfg: &Config,
    enabled: &[Mapping],
) -> anyhow::Result<Arc<FileCheckpointStore>> {
    let store = FileCheckpointStore::open(&cfg.checkpoint_dir)
        .context("opening the checkpoint directory")?;
    for mapping in enabled {
        if let Some(from) = store
            .adopt(&mapping.name, &mapping.legacy_names)
            .await
            .context("carrying checkpoints over to a renamed mapping")?
        {
            info!(mapping = %mapping.name, from = %from, "took over the checkpoints written under an earlier name");
        }
    }
    Ok(Arc::new(store))
}

/// Joins the fleet through the lease table (created if missing) and, the first time, imports the
/// progress of an embedded store left in `checkpoint_dir` by a single-replica deployment.
async fn join_fleet(
    cfg: &Config,
    c: &Coordination,
    clients: &Clients,
    enabled: &[Mapping],
    shutdown: &CancellationToken,
) -> anyhow::Result<Arc<Coordinator>> {
    let table = LeaseTable::new(clients.dynamodb.clone(), &c.lease_table);
    let member = Membership {
        worker_id: c.worker_id.clone(),
        lease_duration: c.lease_duration,
        scan_interval: c.scan_interval,
    };
    let coordinator = Coordinator::start(table, member, shutdown.clone())
        .await
        .with_context(|| format!("opening the lease table {}", c.lease_table))?;
    info!(lease_table = %c.lease_table, worker_id = %c.worker_id, lease_duration_s = c.lease_duration.as_secs(), "coordinating through the lease table");
    let streams = enabled.iter().filter(|m| m.source.has_shards());
    if cfg.checkpoint_dir.is_dir() {
        let file = FileCheckpointStore::open(&cfg.checkpoint_dir)
            .context("opening the checkpoint directory to import it")?;
        for mapping in streams {
            let created = coordinator
                .import(&file, &mapping.name, &c.lease_table)
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "importing the embedded checkpoints of {}: {e}",
                        mapping.name
                    )
                })?;
            if created > 0 {
                info!(mapping = %mapping.name, leases = created, "imported the embedded store's checkpoints into the lease table");
            }
        }
    } else {
        for mapping in streams.filter(|m| !m.legacy_names.is_empty()) {
            warn!(mapping = %mapping.name, "renamed-mapping carry-over applies to the embedded store only; the lease table keeps leases under the current name");
        }
    }
    Ok(coordinator)
}
