//! The mappings running, each on its own: a stop token (a child of the process's shutdown token)
//! and a task tracker of its own, so one mapping can be stopped and awaited while the others keep
//! running (a config reload), and all are stopped together at shutdown.
//!
//! Stopping a mapping is the shutdown of one mapping: its token fires, so its supervisor or queue
//! worker reads nothing more, its shard workers finish their in-flight batch and checkpoint it (and
//! release their leases), its SQS pollers stop receiving and settle what they hold. Once its tracker
//! is empty, [`Mappings::finish`] closes its Kafka consumers (leaving their groups), makes the
//! coordinator forget it (releasing what it still holds) and takes it off `/status`; a mapping
//! stopped for good also leaves `/metrics`.

use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::process::{KafkaSources, Process};
use crate::config::Mapping;
use crate::telemetry::ReloadTelemetry;

/// One mapping running (or draining).
pub(super) struct Running {
    pub(super) mapping: Mapping,
    stop: CancellationToken,
    tracker: TaskTracker,
    kafka: KafkaSources,
}

impl Running {
    /// No new reads: in-flight batches finish and are checkpointed.
    fn stop(&self) {
        self.stop.cancel();
        self.tracker.close();
    }

    /// Every task of the mapping has ended.
    async fn stopped(&self) {
        self.tracker.wait().await
    }

    fn name(&self) -> &str {
        &self.mapping.name
    }
}

/// The running set (see the module docs).
pub(super) struct Mappings {
    /// What every mapping shares; its `shutdown` is the process's.
    base: Process,
    /// In start order.
    running: Vec<Running>,
    /// Stopped by a reload and not yet drained: waited on at shutdown too.
    draining: Vec<Running>,
    pub(super) reloads: Arc<ReloadTelemetry>,
}

impl Mappings {
    pub(super) fn new(base: Process, reloads: Arc<ReloadTelemetry>) -> Self {
        Mappings {
            base,
            running: Vec::new(),
            draining: Vec::new(),
            reloads,
        }
    }

    pub(super) fn process(&self) -> &Process {
        &self.base
    }

    /// Starts `mapping` with its own token and tracker; it is pending on `/readyz` until its
    /// first pass.
    pub(super) fn start(&mut self, mapping: Mapping) -> anyhow::Result<()> {
        let stop = self.base.shutdown.child_token();
        let tracker = TaskTracker::new();
        let kafka = KafkaSources::default();
        let view = Process {
            tracker: tracker.clone(),
            shutdown: stop.clone(),
            kafka_sources: kafka.clone(),
            ..self.base.clone()
        };
        self.base.status.mapping_pending(&mapping.name);
        if let Err(e) = view.start(mapping.clone()) {
            self.base.status.forget_mapping(&mapping.name);
            return Err(e);
        }
        self.reloads.mapping_started(&mapping.name);
        self.running.push(Running {
            mapping,
            stop,
            tracker,
            kafka,
        });
        Ok(())
    }

    /// The mappings running, as they were started.
    pub(super) fn configs(&self) -> Vec<Mapping> {
        self.running.iter().map(|r| r.mapping.clone()).collect()
    }

    /// Stops the mappings named (see [`Running::stop`]); they drain until [`Mappings::drain`] or
    /// the shutdown waits for them.
    pub(super) fn stop(&mut self, names: &[String]) {
        let (stopping, running): (Vec<_>, Vec<_>) = std::mem::take(&mut self.running)
            .into_iter()
            .partition(|r| names.iter().any(|n| n == r.name()));
        self.running = running;
        for r in &stopping {
            info!(mapping = %r.name(), "stopping the mapping: in-flight batches finish and are checkpointed");
            r.stop();
            if let Some(c) = &self.base.coordinator {
                c.retire(r.name());
            }
        }
        self.draining.extend(stopping);
    }

    /// Waits until every draining mapping has stopped, then [`Mappings::finish`]es each; a mapping
    /// in `forget` also leaves `/metrics`. Past `grace`, logs which ones it still waits for (a
    /// mapping's new settings never run beside its old workers). `false` if `shutdown` fired first:
    /// the draining mappings are then left to the shutdown.
    pub(super) async fn drain(
        &mut self,
        grace: Duration,
        forget: &[String],
        shutdown: &CancellationToken,
    ) -> bool {
        let drained = {
            let draining = &self.draining;
            let all = async {
                for r in draining {
                    r.stopped().await;
                }
            };
            tokio::pin!(all);
            let overdue = tokio::time::sleep(grace);
            tokio::pin!(overdue);
            let mut warned = false;
            loop {
                tokio::select! {
                    _ = &mut all => break true,
                    _ = shutdown.cancelled() => break false,
                    _ = &mut overdue, if !warned => {
                        warned = true;
                        for r in draining.iter().filter(|r| !r.tracker.is_empty()) {
                            warn!(mapping = %r.name(), grace_s = grace.as_secs(), "the mapping still has in-flight invocations after the grace period; the reload waits for them (the other mappings keep running)");
                        }
                    }
                }
            }
        };
        if !drained {
            return false;
        }
        for r in std::mem::take(&mut self.draining) {
            let gone = forget.iter().any(|n| n == r.name());
            self.finish(r, gone).await;
        }
        true
    }

    /// After `r`'s tasks ended: its Kafka consumers leave their groups, the coordinator forgets
    /// it, and it leaves `/status` (and `/metrics` when `gone`).
    async fn finish(&self, r: Running, gone: bool) {
        close_kafka(&r.kafka).await;
        if let Some(c) = &self.base.coordinator {
            c.forget(r.name()).await;
        }
        self.base.status.forget_mapping(r.name());
        self.reloads.mapping_stopped(r.name());
        if gone {
            self.base.metrics.forget_mapping(r.name());
        }
        info!(mapping = %r.name(), "mapping stopped; its checkpoints are kept");
    }

    /// The process is shutting down (its token fired, so every mapping's has): waits up to
    /// `grace` for every mapping, then closes their Kafka consumers. `false` if the grace period
    /// ran out first.
    pub(super) async fn shutdown(&mut self, grace: Duration) -> bool {
        let all: Vec<Running> = self
            .running
            .drain(..)
            .chain(self.draining.drain(..))
            .collect();
        for r in &all {
            r.stop();
        }
        let finished = tokio::time::timeout(grace, async {
            for r in &all {
                r.stopped().await;
            }
        })
        .await
        .is_ok();
        for r in &all {
            close_kafka(&r.kafka).await;
        }
        finished
    }
}

async fn close_kafka(sources: &KafkaSources) {
    let leaving: Vec<_> = sources
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain(..)
        .collect();
    for source in leaving {
        source.close(Duration::from_secs(2)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::FileCheckpointStore;
    use crate::telemetry::{Metrics, Status};

    /// Two SQS mappings whose queue endpoint refuses connections: they run (resolving, retrying)
    /// without reaching AWS.
    const CONFIG: &str = "region: us-east-1\nendpoints: { sqs: 'http://127.0.0.1:1' }\nmappings:\n  - Name: a\n    EventSourceArn: arn:aws:sqs:us-east-1:000000000000:a\n    Http: { Url: 'http://127.0.0.1:1/' }\n  - Name: b\n    EventSourceArn: arn:aws:sqs:us-east-1:000000000000:b\n    Http: { Url: 'http://127.0.0.1:1/' }\n";

    async fn mappings(
        dir: &std::path::Path,
        shutdown: &CancellationToken,
    ) -> (Mappings, Vec<Mapping>) {
        let cfg = crate::config::parse_str(CONFIG).unwrap();
        let (metrics, status) = (Arc::new(Metrics::new()), Arc::new(Status::new(0)));
        let store = Arc::new(FileCheckpointStore::open(dir).unwrap());
        let process = Process::for_tests(
            &cfg,
            store,
            metrics.clone(),
            status.clone(),
            shutdown.clone(),
        )
        .await;
        let reloads = Arc::new(ReloadTelemetry::new(&metrics, &status, "f"));
        (Mappings::new(process, reloads), cfg.mappings)
    }

    fn names(m: &Mappings) -> Vec<String> {
        m.configs().into_iter().map(|m| m.name).collect()
    }

    #[tokio::test]
    async fn one_mapping_stops_and_is_forgotten_while_the_other_runs_on() {
        let dir = tempfile::tempdir().unwrap();
        let shutdown = CancellationToken::new();
        let (mut m, all) = mappings(dir.path(), &shutdown).await;
        for mapping in all {
            m.start(mapping).unwrap();
        }
        assert_eq!(names(&m), ["a", "b"]);
        let status = m.process().status.clone();
        let metrics = m.process().metrics.clone();
        // Both appear once their context is built.
        crate::worker::until_ok(
            &shutdown,
            |_| Duration::from_millis(10),
            |_: &String, _, _| {},
            || async {
                let text = metrics.encode();
                (text.contains("mapping=\"a\"") && text.contains("mapping=\"b\""))
                    .then_some(())
                    .ok_or_else(|| "not yet".to_string())
            },
        )
        .await
        .unwrap();
        assert_eq!(status.not_ready_because().as_deref(), Some("starting"));

        m.stop(&["a".to_string()]);
        assert!(
            m.drain(Duration::from_secs(5), &["a".to_string()], &shutdown)
                .await
        );
        assert_eq!(names(&m), ["b"]);
        assert!(!m.running[0].stop.is_cancelled(), "b runs on");
        let text = metrics.encode();
        assert!(!text.contains("mapping=\"a\""), "{text}");
        assert!(text.contains("mapping=\"b\""), "{text}");
        let config = &status.snapshot()["config"]["mappings"];
        assert!(
            config.get("a").is_none() && config.get("b").is_some(),
            "{config}"
        );

        shutdown.cancel();
        assert!(m.shutdown(Duration::from_secs(5)).await);
        assert!(names(&m).is_empty());
    }

    #[tokio::test]
    async fn a_drain_gives_way_to_the_shutdown_which_waits_for_the_draining_mapping() {
        let dir = tempfile::tempdir().unwrap();
        let shutdown = CancellationToken::new();
        let (mut m, all) = mappings(dir.path(), &shutdown).await;
        m.start(all[0].clone()).unwrap();
        // An invocation that is still in flight.
        let release = CancellationToken::new();
        let held = release.clone();
        m.running[0]
            .tracker
            .spawn(async move { held.cancelled().await });
        m.stop(&["a".to_string()]);
        let cancel = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            cancel.cancel();
        });
        assert!(!m.drain(Duration::from_millis(50), &[], &shutdown).await);
        assert_eq!(m.draining.len(), 1, "left to the shutdown");
        release.cancel();
        assert!(m.shutdown(Duration::from_secs(5)).await);
    }
}
