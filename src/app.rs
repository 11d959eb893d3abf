//! Wiring: builds the checkpoint store, the admin server, the AWS clients and, per enabled mapping,
//! its source, dispatcher and destination; runs the supervisors until `shutdown` fires, then gives
//! in-flight work the grace period to finish (each finished batch is checkpointed as it completes).

use anyhow::Context;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::budget::ByteBudget;
use crate::checkpoint::{CheckpointStore, FileCheckpointStore};
use crate::config::{Config, MappingSource, Target};
use crate::destination::{AwsDestination, Destination};
use crate::dispatch::{Dispatcher, HttpDispatcher, LambdaDispatcher};
use crate::retry::RetryPolicy;
use crate::server::{self, AdminState};
use crate::source::dynamodb::DynamoDbSource;
use crate::source::kinesis::{EventContext, KinesisSource};
use crate::source::Source;
use crate::telemetry::{Metrics, Status};
use crate::worker::{queue, supervisor, MappingContext};

/// Runs sluice until `shutdown` is cancelled.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let enabled: Vec<_> = cfg.mappings.iter().filter(|m| m.enabled).cloned().collect();
    let status = Arc::new(Status::new(enabled.len()));
    let checkpoints: Arc<dyn CheckpointStore> = Arc::new(
        FileCheckpointStore::open(&cfg.checkpoint_dir)
            .context("opening the checkpoint directory")?,
    );

    for mapping in &enabled {
        if let Some(from) = checkpoints
            .adopt(&mapping.name, &mapping.legacy_names)
            .await
            .context("carrying checkpoints over to a renamed mapping")?
        {
            info!(mapping = %mapping.name, from = %from, "took over the checkpoints written under an earlier name");
        }
    }

    let listener = tokio::net::TcpListener::bind(cfg.admin_listen)
        .await
        .with_context(|| format!("binding the admin server to {}", cfg.admin_listen))?;
    info!(address = %listener.local_addr()?, "admin server listening");
    let server_stop = CancellationToken::new();
    let app = server::router(AdminState {
        metrics: metrics.clone(),
        status: status.clone(),
    });
    let stop = server_stop.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
    });

    let clients = crate::aws::clients(&cfg).await;
    let budget = Arc::new(ByteBudget::new(cfg.max_in_flight_bytes));
    let tracker = TaskTracker::new();
    for mapping in &cfg.mappings {
        if !mapping.enabled {
            info!(mapping = %mapping.name, "mapping disabled");
        }
    }
    for mapping in enabled {
        // The source ARN's region serves the mapping; a function or destination ARN naming another
        // region is called there (a bare function name: the source's region).
        let clients = clients.for_region(mapping.source.region());
        let dispatcher: Arc<dyn Dispatcher> = match &mapping.target {
            Target::Lambda { function_name } => Arc::new(LambdaDispatcher::new(
                clients.for_arn(function_name).lambda,
                function_name.clone(),
                mapping.source.region(),
                mapping.source.account(),
            )),
            Target::Http(h) => {
                Arc::new(HttpDispatcher::new(h).context("building the HTTP client")?)
            }
        };
        let source: Option<Arc<dyn Source>> = match &mapping.source {
            MappingSource::Kinesis(s) => Some(Arc::new(KinesisSource::new(
                clients.kinesis.clone(),
                EventContext {
                    stream_arn: s.stream.arn.clone(),
                    region: s.stream.region.clone(),
                    invoke_identity_arn: cfg.invoke_identity_arn.clone(),
                },
            ))),
            MappingSource::DynamoDbStream(s) => Some(Arc::new(DynamoDbSource::new(
                clients.dynamodbstreams.clone(),
                s.stream.arn.clone(),
            ))),
            // Queues are not sharded: `worker::queue` runs them.
            MappingSource::Sqs(_) => None,
        };
        let budget = budget.clone();
        let (metrics, status, checkpoints, clients) = (
            metrics.clone(),
            status.clone(),
            checkpoints.clone(),
            clients.clone(),
        );
        let (tracker2, cancel, discovery) = (
            tracker.clone(),
            shutdown.clone(),
            cfg.shard_discovery_interval,
        );
        tracker.spawn(async move {
            let errors = mapping.stream_errors().cloned().unwrap_or_default();
            let destination = match &errors.on_failure {
                None => None,
                Some(arn) => match connect_destination(arn, &clients, &cancel).await {
                    Some(d) => Some(d),
                    None => return,
                },
            };
            let ctx = Arc::new(MappingContext {
                policy: RetryPolicy::new(&errors),
                clock: crate::worker::Clock::new(),
                budget: budget.clone(),
                retention_ms: Default::default(),
                mapping,
                dispatcher,
                checkpoints,
                destination,
                metrics,
                status,
            });
            match source {
                Some(source) => {
                    supervisor::run_mapping(ctx, source, tracker2, cancel, discovery).await
                }
                None => queue::run_queue(ctx, clients.sqs.clone(), tracker2, cancel).await,
            }
        });
    }

    shutdown.cancelled().await;
    status.set_draining();
    info!(
        grace_s = cfg.shutdown_grace.as_secs(),
        "shutting down: no new reads; waiting for in-flight invocations"
    );
    tracker.close();
    if tokio::time::timeout(cfg.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        warn!("grace period over: abandoning in-flight invocations (their records are re-read after the checkpoint on restart)");
    } else {
        info!("all workers stopped; checkpoints written");
    }
    server_stop.cancel();
    // A scraper holding a connection open does not hold the exit.
    match tokio::time::timeout(std::time::Duration::from_secs(2), server).await {
        Ok(Ok(Err(e))) => error!(error = %e, "admin server failed"),
        Ok(Err(e)) => error!(error = %e, "admin server task failed"),
        Ok(Ok(Ok(()))) => {}
        Err(_) => warn!("admin server did not stop within 2 s; leaving it"),
    }
    Ok(())
}

/// Resolves an on-failure destination, retrying until it answers (the mapping waits meanwhile).
async fn connect_destination(
    arn: &crate::config::DestinationArn,
    clients: &crate::aws::Clients,
    cancel: &CancellationToken,
) -> Option<Arc<dyn Destination>> {
    use std::time::Duration;
    crate::worker::until_ok(
        cancel,
        crate::worker::doubling(Duration::from_millis(500), Duration::from_secs(30)),
        |e: &String, _, _| warn!(destination = %arn, error = %e, "cannot resolve the on-failure destination; retrying"),
        || AwsDestination::connect(arn, clients),
    )
    .await
    .ok()
    .map(|d| Arc::new(d) as Arc<dyn Destination>)
}
