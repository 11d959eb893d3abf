//! One mapping's wiring: [`Process`] holds what every mapping of the process shares, and
//! [`Process::start`] gives a mapping its region's clients and its dispatcher, then hands it to the
//! builder of its source kind: [`Process::stream_mapping`] (Kinesis, DynamoDB Streams: the
//! supervisor), [`Process::kafka_mapping`] (the consumer and the supervisor) or
//! [`Process::queue_mapping`] (SQS: the pollers), each returning the future its tracker spawns.
//! All build their [`MappingContext`] through [`Process::context`], the one place the on-failure
//! destination is connected and the retry policy chosen.
//!
//! A `Process` value started from is one mapping's view of the process (see
//! [`super::mappings`]): its `tracker` and `shutdown` are that mapping's own, so one mapping can be
//! stopped and awaited without stopping the others.

use anyhow::Context;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, warn};

use crate::aws::Clients;
use crate::budget::ByteBudget;
use crate::checkpoint::CheckpointStore;
use crate::config::{DestinationArn, Mapping, MappingSource, StartingPosition, Target};
use crate::destination::{AwsDestination, Destination, KafkaDestination};
use crate::dispatch::{Dispatcher, HttpDispatcher, LambdaDispatcher};
use crate::lease::coordinator::Coordinator;
use crate::lease::item::LeaseCheckpoint;
use crate::lease::{Leases, SingleReplica};
use crate::retry::RetryPolicy;
use crate::source::dynamodb::DynamoDbSource;
use crate::source::kinesis::{EventContext, FanoutSource, KinesisSource};
use crate::source::Source;
use crate::source::{kafka, sqs};
use crate::telemetry::{LeaseTelemetry, MappingTelemetry, Metrics, Status};
use crate::worker::{queue, supervisor, MappingContext};

/// The Kafka consumers a mapping opened, closed (leaving their groups) once its workers stopped.
pub(super) type KafkaSources = Arc<std::sync::Mutex<Vec<Arc<kafka::KafkaSource>>>>;

/// What every mapping of the process shares; cloned once into each mapping's task.
#[derive(Clone)]
pub(super) struct Process {
    pub(super) metrics: Arc<Metrics>,
    pub(super) status: Arc<Status>,
    pub(super) checkpoints: Arc<dyn CheckpointStore>,
    /// The fleet this replica belongs to (with `coordination`); `None`: this process holds every
    /// shard.
    pub(super) coordinator: Option<Arc<Coordinator>>,
    /// The Kafka consumers of the mapping this view starts.
    pub(super) kafka_sources: KafkaSources,
    /// The process-wide in-flight byte budget.
    pub(super) budget: Arc<ByteBudget>,
    /// The clients of the process region; each mapping takes its source's region from them.
    pub(super) clients: Clients,
    /// The tasks (supervisor, shard workers, pollers) of the mapping this view starts.
    pub(super) tracker: TaskTracker,
    /// Stops the mapping this view starts (a child of the process's shutdown token).
    pub(super) shutdown: CancellationToken,
    pub(super) shard_discovery_interval: Duration,
    pub(super) invoke_identity_arn: String,
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
    pub(super) fn start(&self, mapping: Mapping) -> anyhow::Result<()> {
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
                let ctx =
                    EventContext::new(&s.stream.arn, &s.stream.region, &self.invoke_identity_arn);
                let source: Arc<dyn Source> = match &s.stream.consumer {
                    Some(consumer) => Arc::new(
                        FanoutSource::new(&wiring.clients, ctx, consumer.clone())
                            .map_err(anyhow::Error::msg)?,
                    ),
                    None => Arc::new(
                        KinesisSource::new(&wiring.clients, ctx)
                            .map_err(anyhow::Error::msg)?
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
impl Process {
    /// A process over `checkpoints` with no coordinator and an unlimited byte budget; nothing in
    /// it calls AWS until a mapping runs.
    pub(crate) async fn for_tests(
        cfg: &crate::config::Config,
        checkpoints: Arc<dyn CheckpointStore>,
        metrics: Arc<Metrics>,
        status: Arc<Status>,
        shutdown: CancellationToken,
    ) -> Process {
        Process {
            metrics,
            status,
            checkpoints,
            coordinator: None,
            kafka_sources: Default::default(),
            budget: Arc::new(ByteBudget::unlimited()),
            clients: crate::aws::clients(cfg).await,
            tracker: TaskTracker::new(),
            shutdown,
            shard_discovery_interval: cfg.shard_discovery_interval,
            invoke_identity_arn: cfg.invoke_identity_arn.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::FileCheckpointStore;
    use crate::config::Config;

    /// A process over a temporary checkpoint directory; nothing in it calls AWS until a mapping runs.
    async fn process(cfg: &Config, dir: &std::path::Path) -> Process {
        let store = Arc::new(FileCheckpointStore::open(dir).unwrap());
        Process::for_tests(
            cfg,
            store,
            Arc::new(Metrics::new()),
            Arc::new(Status::new(0)),
            CancellationToken::new(),
        )
        .await
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
