//! Wiring: builds the checkpoint store, the admin server, the AWS clients and, per enabled mapping,
//! its source, dispatcher and destination; runs the mappings until `shutdown` fires, then gives
//! in-flight work the grace period to finish (each finished batch is checkpointed as it completes).
//!
//! The process-wide parts live in one [`Process`]. [`Process::start`] gives each mapping its
//! region's clients and its dispatcher, then hands it to the builder of its source kind:
//! [`Process::stream_mapping`] (Kinesis, DynamoDB Streams: the supervisor) or
//! [`Process::queue_mapping`] (SQS: the pollers), each returning the future the tracker spawns.
//! Both build their [`MappingContext`] through [`Process::context`], the one place the on-failure
//! destination is connected and the retry policy chosen.

use anyhow::Context;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::aws::Clients;
use crate::budget::ByteBudget;
use crate::checkpoint::{CheckpointStore, FileCheckpointStore};
use crate::config::{
    Config, Coordination, DestinationArn, Mapping, MappingSource, StartingPosition, Target,
};
use crate::destination::{AwsDestination, Destination, KafkaDestination};
use crate::dispatch::{Dispatcher, HttpDispatcher, LambdaDispatcher};
use crate::lease::coordinator::{Coordinator, Membership};
use crate::lease::dynamo::LeaseTable;
use crate::lease::item::LeaseCheckpoint;
use crate::lease::{Leases, SingleReplica};
use crate::retry::RetryPolicy;
use crate::server::{self, AdminState};
use crate::source::dynamodb::DynamoDbSource;
use crate::source::kinesis::{EventContext, FanoutSource, KinesisSource};
use crate::source::Source;
use crate::source::{kafka, sqs};
use crate::telemetry::{LeaseTelemetry, MappingTelemetry, Metrics, Status};
use crate::worker::{queue, supervisor, MappingContext};

/// Runs sluice until `shutdown` is cancelled.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let enabled: Vec<_> = cfg.mappings.iter().filter(|m| m.enabled).cloned().collect();
    let status = Arc::new(Status::new(enabled.len()));
    let clients = crate::aws::clients(&cfg).await;
    let (checkpoints, coordinator) = match &cfg.coordination {
        None => (single_replica_store(&cfg, &enabled).await?, None),
        Some(c) => {
            let coordinator = join_fleet(&cfg, c, &clients, &enabled, &shutdown).await?;
            status.set_worker_id(coordinator.worker_id());
            (
                coordinator.clone() as Arc<dyn CheckpointStore>,
                Some(coordinator),
            )
        }
    };

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

    let process = Process {
        metrics,
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
    for mapping in &cfg.mappings {
        if !mapping.enabled {
            info!(mapping = %mapping.name, "mapping disabled");
        }
    }
    for mapping in enabled {
        process.start(mapping)?;
    }
    let tracker = process.tracker;
    let kafka_sources = process.kafka_sources;

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
    let leaving: Vec<_> = kafka_sources
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain(..)
        .collect();
    for source in leaving {
        source.close(Duration::from_secs(2)).await;
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

/// The embedded store (one replica), with progress carried over to renamed mappings.
async fn single_replica_store(
    cfg: &Config,
    enabled: &[Mapping],
) -> anyhow::Result<Arc<dyn CheckpointStore>> {
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

/// What every mapping of the process shares; cloned once into each mapping's task.
#[derive(Clone)]
struct Process {
    metrics: Arc<Metrics>,
    status: Arc<Status>,
    checkpoints: Arc<dyn CheckpointStore>,
    /// The fleet this replica belongs to (with `coordination`); `None`: this process holds every
    /// shard.
    coordinator: Option<Arc<Coordinator>>,
    /// Kafka mappings' consumers, closed (leaving their groups) once every worker has stopped.
    kafka_sources: Arc<std::sync::Mutex<Vec<Arc<kafka::KafkaSource>>>>,
    /// The process-wide in-flight byte budget.
    budget: Arc<ByteBudget>,
    /// The clients of the process region; each mapping takes its source's region from them.
    clients: Clients,
    /// Every mapping's tasks (supervisors, shard workers, pollers), waited on at shutdown.
    tracker: TaskTracker,
    shutdown: CancellationToken,
    shard_discovery_interval: Duration,
    invoke_identity_arn: String,
}

/// One mapping being started: what its kind's builder needs besides its settings.
struct Wiring {
    mapping: Mapping,
    /// The clients of the source's region.
    clients: Clients,
    dispatcher: Arc<dyn Dispatcher>,
}

impl Process {
    /// Starts `mapping` on the tracker through the builder of its source kind.
    fn start(&self, mapping: Mapping) -> anyhow::Result<()> {
        // The source ARN's region serves the mapping; a function or destination ARN naming another
        // region is called there (a bare function name: the source's region).
        let clients = self.clients.for_region(mapping.source.region());
        let wiring = Wiring {
            dispatcher: dispatcher(&mapping, &clients)?,
            clients,
            mapping,
        };
        match &wiring.mapping.source {
            MappingSource::Kinesis(s) => {
                let client = wiring.clients.kinesis.clone();
                let ctx = EventContext {
                    stream_arn: s.stream.arn.clone(),
                    region: s.stream.region.clone(),
                    invoke_identity_arn: self.invoke_identity_arn.clone(),
                };
                let source: Arc<dyn Source> = match &s.stream.consumer {
                    Some(consumer) => Arc::new(FanoutSource::new(client, ctx, consumer.clone())),
                    None => Arc::new(
                        KinesisSource::new(client, ctx)
                            .with_caught_up_interval(s.caught_up_interval),
                    ),
                };
                self.tracker.spawn(self.stream_mapping(wiring, source))
            }
            MappingSource::DynamoDbStream(s) => {
                let source = Arc::new(
                    DynamoDbSource::new(
                        wiring.clients.dynamodbstreams.clone(),
                        s.stream.arn.clone(),
                    )
                    .with_caught_up_interval(s.caught_up_interval),
                );
                self.tracker.spawn(self.stream_mapping(wiring, source))
            }
            MappingSource::Sqs(_) => self.tracker.spawn(self.queue_mapping(wiring)),
            MappingSource::Kafka(_) => self.tracker.spawn(self.kafka_mapping(wiring)),
        };
        Ok(())
    }

    /// A stream mapping (Kinesis, DynamoDB Streams): its shards under the supervisor.
    fn stream_mapping(
        &self,
        wiring: Wiring,
        source: Arc<dyn Source>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let process = self.clone();
        async move {
            let Some(ctx) = process.context(wiring).await else {
                return;
            };
            let leases: Arc<dyn Leases> = match &process.coordinator {
                Some(c) => c.mapping(
                    ctx.name(),
                    new_lease_start(&ctx.mapping),
                    LeaseTelemetry::new(
                        ctx.name(),
                        c.worker_id(),
                        &process.metrics,
                        &process.status,
                    ),
                ),
                None => Arc::new(SingleReplica::new()),
            };
            supervisor::run_mapping(
                ctx,
                source,
                leases,
                process.tracker,
                process.shutdown,
                process.shard_discovery_interval,
            )
            .await
        }
    }

    /// A Kafka mapping: its consumer in its group, and the assigned partitions under the
    /// supervisor. A mapping that cannot be set up (a secret that cannot be read) logs why and does
    /// not run; the others do. A broker that is down or unreachable is logged while the consumer
    /// keeps trying.
    fn kafka_mapping(&self, wiring: Wiring) -> impl Future<Output = ()> + Send + 'static {
        let process = self.clone();
        async move {
            let Some(kafka) = wiring.mapping.kafka().cloned() else {
                return;
            };
            let name = wiring.mapping.name.clone();
            let settings = match kafka::connect::client_settings(&kafka, &wiring.clients).await {
                Ok(s) => s,
                Err(e) => {
                    error!(mapping = %name, error = %e, "cannot set up the Kafka mapping; it does not run");
                    return;
                }
            };
            let log_name = name.clone();
            let connected = kafka::KafkaSource::connect(
                &settings,
                kafka::connect::encoder(),
                settings.cluster.clone(),
                wiring.mapping.batching.batch_size,
                kafka::DEFAULT_RETENTION,
                move |e| error!(mapping = %log_name, error = %e, "Kafka consumer error; it keeps retrying"),
            );
            let connected = match connected {
                Ok(c) => c,
                Err(e) => {
                    error!(mapping = %name, error = %e, "cannot start the Kafka consumer; the mapping does not run");
                    return;
                }
            };
            let Some(ctx) = process
                .context_with(wiring, connected.checkpoints.clone(), Some(&settings))
                .await
            else {
                return;
            };
            connected.source.watch_lag(
                process.metrics.kafka(&name),
                Duration::from_secs(5),
                process.shutdown.clone(),
            );
            process
                .kafka_sources
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(connected.source.clone());
            supervisor::run_mapping(
                ctx,
                connected.source.clone(),
                connected.leases.clone(),
                process.tracker,
                process.shutdown,
                process.shard_discovery_interval,
            )
            .await;
        }
    }

    /// An SQS mapping: its pollers.
    fn queue_mapping(&self, wiring: Wiring) -> impl Future<Output = ()> + Send + 'static {
        let process = self.clone();
        async move {
            let Some(queue) = wiring.mapping.queue() else {
                return;
            };
            let resolve = sqs::resolver(wiring.clients.sqs.clone(), &queue.queue);
            let Some(ctx) = process.context(wiring).await else {
                return;
            };
            queue::run_queue(ctx, resolve, process.tracker, process.shutdown).await
        }
    }

    /// The one place a mapping's [`MappingContext`] is built. A stream mapping retries under its
    /// error handling and first connects its on-failure destination, retrying until it answers
    /// (the mapping waits meanwhile); a queue mapping has neither (failed messages return to the
    /// queue), so its policy only paces retries of the queue's own calls. `None` if shutdown came
    /// first.
    async fn context(&self, wiring: Wiring) -> Option<Arc<MappingContext>> {
        let checkpoints = self.checkpoints.clone();
        self.context_with(wiring, checkpoints, None).await
    }

    /// [`Process::context`] over the mapping's own checkpoint store (Kafka: its group's offsets);
    /// a Kafka mapping passes its client settings, which a `kafka://` destination produces with.
    async fn context_with(
        &self,
        wiring: Wiring,
        checkpoints: Arc<dyn CheckpointStore>,
        kafka: Option<&kafka::ClientSettings>,
    ) -> Option<Arc<MappingContext>> {
        let errors = wiring.mapping.stream_errors().cloned().unwrap_or_default();
        let destination = match (&errors.on_failure, kafka) {
            (None, _) => None,
            (Some(DestinationArn::Kafka { uri, topic }), Some(settings)) => {
                match KafkaDestination::connect(settings, topic) {
                    Ok(d) => Some(Arc::new(d) as Arc<dyn Destination>),
                    Err(e) => {
                        error!(mapping = %wiring.mapping.name, destination = %uri, error = %e, "cannot set up the on-failure destination; the mapping does not run");
                        return None;
                    }
                }
            }
            (Some(arn), _) => {
                Some(connect_destination(arn, &wiring.clients, &self.shutdown).await?)
            }
        };
        Some(Arc::new(MappingContext {
            policy: RetryPolicy::new(&errors),
            clock: crate::worker::Clock::new(),
            budget: self.budget.clone(),
            retention_ms: Default::default(),
            telemetry: MappingTelemetry::new(&wiring.mapping.name, &self.metrics, &self.status),
            mapping: wiring.mapping,
            dispatcher: wiring.dispatcher,
            checkpoints,
            destination,
        }))
    }
}

/// The `checkpoint` sentinel of a new lease: where the mapping starts reading.
fn new_lease_start(mapping: &Mapping) -> LeaseCheckpoint {
    match mapping.starting_position() {
        Some(StartingPosition::Latest) => LeaseCheckpoint::Latest,
        Some(StartingPosition::AtTimestamp(_)) => LeaseCheckpoint::AtTimestamp,
        _ => LeaseCheckpoint::TrimHorizon,
    }
}

/// The mapping's target: a Lambda function (invoked in its ARN's region, else the source's) or an
/// HTTP endpoint.
fn dispatcher(mapping: &Mapping, clients: &Clients) -> anyhow::Result<Arc<dyn Dispatcher>> {
    Ok(match &mapping.target {
        Target::Lambda { function_name } => Arc::new(LambdaDispatcher::new(
            clients.for_arn(function_name).lambda,
            function_name.clone(),
            mapping.source.region(),
            mapping.source.account(),
        )),
        Target::Http(h) => Arc::new(HttpDispatcher::new(h).context("building the HTTP client")?),
    })
}

/// Resolves an on-failure destination, retrying until it answers (the mapping waits meanwhile).
async fn connect_destination(
    arn: &DestinationArn,
    clients: &Clients,
    cancel: &CancellationToken,
) -> Option<Arc<dyn Destination>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A process over a temporary checkpoint directory; nothing in it calls AWS until a mapping runs.
    async fn process(cfg: &Config, dir: &std::path::Path) -> Process {
        Process {
            metrics: Arc::new(Metrics::new()),
            status: Arc::new(Status::new(cfg.mappings.len())),
            checkpoints: Arc::new(FileCheckpointStore::open(dir).unwrap()),
            coordinator: None,
            kafka_sources: Default::default(),
            budget: Arc::new(ByteBudget::unlimited()),
            clients: crate::aws::clients(cfg).await,
            tracker: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            shard_discovery_interval: cfg.shard_discovery_interval,
            invoke_identity_arn: cfg.invoke_identity_arn.clone(),
        }
    }

    async fn context_of(yaml: &str) -> Arc<MappingContext> {
        let cfg = crate::config::parse_str(yaml).expect("test config");
        let dir = tempfile::tempdir().unwrap();
        let process = process(&cfg, dir.path()).await;
        let mapping = cfg.mappings[0].clone();
        let clients = process.clients.for_region(mapping.source.region());
        let wiring = Wiring {
            dispatcher: dispatcher(&mapping, &clients).unwrap(),
            clients,
            mapping,
        };
        process.context(wiring).await.expect("not shut down")
    }

    #[tokio::test]
    async fn a_stream_mapping_retries_under_its_error_handling_and_has_its_destination() {
        let ctx = context_of("region: us-east-1\nmappings:\n  - EventSourceArn: arn:aws:kinesis:us-east-1:000000000000:stream/s\n    StartingPosition: LATEST\n    Http: { Url: 'http://127.0.0.1:1/' }\n    MaximumRetryAttempts: 3\n    MaximumRecordAgeInSeconds: 60\n    BisectBatchOnFunctionError: true\n    DestinationConfig: { OnFailure: { Destination: 'arn:aws:sns:us-east-1:000000000000:failed' } }\n").await;
        assert_eq!(ctx.name(), "s");
        assert_eq!(ctx.policy.max_retry_attempts, Some(3));
        assert_eq!(ctx.policy.max_record_age, Some(Duration::from_secs(60)));
        assert!(ctx.policy.bisect);
        assert!(
            ctx.destination.is_some(),
            "the SNS destination is connected"
        );
    }

    #[tokio::test]
    async fn a_queue_mapping_has_no_destination_and_no_retry_budget() {
        let ctx = context_of("region: us-east-1\nmappings:\n  - EventSourceArn: arn:aws:sqs:us-east-1:000000000000:q\n    FunctionName: f\n    FunctionResponseTypes: [ReportBatchItemFailures]\n").await;
        assert_eq!(ctx.name(), "q");
        assert!(ctx.mapping.report_batch_item_failures());
        assert_eq!(ctx.policy.max_retry_attempts, None);
        assert_eq!(ctx.policy.max_record_age, None);
        assert!(!ctx.policy.bisect);
        assert!(ctx.destination.is_none());
        assert_eq!(
            ctx.dispatcher.function_arn(),
            "arn:aws:lambda:us-east-1:000000000000:function:f",
            "a bare function name is the source's region and account"
        );
    }
}
