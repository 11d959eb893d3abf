//! Checkpoint moves made by the running instance (`POST /checkpoints/<mapping>`, asked for with
//! `sluice checkpoints set|reset --url`): [`apply`] runs in the task that owns the running mappings,
//! between config reloads, so the two never interleave. The move is planned first while the mapping
//! runs (reading the stream), then the mapping is stopped as a reload stops it (in-flight batches
//! finish and are checkpointed, its leases are released), the move is written with the offline
//! command's code ([`crate::cli::checkpoints::moves`]) to the process's own store (the embedded
//! store it holds locked, or the lease table), and the mapping starts again from the new
//! checkpoints; the other mappings are not touched. With a lease table, leases that other replicas
//! hold (or take while this one stops) are refused, naming them, unless `force` (they are fenced,
//! as offline). A dry run stops nothing. A refused or failed move starts the mapping again from
//! its checkpoints as they are.

use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::mappings::Mappings;
use crate::checkpoint::FileCheckpointStore;
use crate::cli::checkpoints::live::LiveMove;
use crate::cli::checkpoints::moves::{self, find_mapping, Failed, Move, Report};
use crate::cli::checkpoints::store::Store;
use crate::cli::EXIT_FAILED;
use crate::config::Config;

/// Makes the move `m` asks for and sends the answer back (see the module docs). Returns when it is
/// done, refused, or cut short by `shutdown`.
pub(super) async fn apply(
    m: LiveMove,
    cfg: &Config,
    mappings: &mut Mappings,
    file: Option<&Arc<FileCheckpointStore>>,
    shutdown: &CancellationToken,
) {
    let LiveMove {
        mapping,
        how,
        reply,
    } = m;
    info!(mapping = %mapping, target = ?how.target, partitions = ?how.partitions, force = how.force, dry_run = how.dry_run, "checkpoint move asked for through the admin server");
    let result = tokio::select! {
        r = make(&mapping, &how, cfg, mappings, file, shutdown) => r,
        _ = shutdown.cancelled() => Err(Failed(
            "sluice is shutting down: the move was abandoned (whatever was written stays; check with sluice checkpoints list)".into(),
            EXIT_FAILED,
        )),
    };
    match &result {
        Ok(r) => {
            for c in &r.changes {
                info!(mapping = %mapping, partition = %c.partition, old = %c.old, new = %c.new, dry_run = r.dry_run, "checkpoint moved");
            }
        }
        Err(f) => warn!(mapping = %mapping, error = %f.0, "checkpoint move refused"),
    }
    let _ = reply.send(result);
}

/// The store the process keeps `cfg`'s checkpoints in.
fn store_of(
    cfg: &Config,
    mappings: &Mappings,
    file: Option<&Arc<FileCheckpointStore>>,
) -> Result<Store, Failed> {
    match (&cfg.coordination, file) {
        (Some(_), _) => Store::open(cfg, Some(mappings.process().clients.dynamodb.clone()))
            .map_err(Failed::from),
        (None, Some(f)) => Ok(Store::file(f.clone())),
        (None, None) => Err(Failed(
            "this process has no checkpoint store open".into(),
            EXIT_FAILED,
        )),
    }
}

async fn make(
    name: &str,
    how: &Move,
    cfg: &Config,
    mappings: &mut Mappings,
    file: Option<&Arc<FileCheckpointStore>>,
    shutdown: &CancellationToken,
) -> Result<Report, Failed> {
    let mapping = find_mapping(cfg, name, "the running config")?;
    let store = store_of(cfg, mappings, file)?;
    let me = cfg.coordination.as_ref().map(|c| c.worker_id.as_str());
    let plan = moves::prepare(cfg, &mapping, &store, how).await?;
    if how.dry_run {
        if !how.force {
            moves::refuse_live(&store, name, &plan.partitions, me).await?;
        }
        let mut report = moves::commit(plan, &store, true).await?;
        report.instance = Some("dry run: the mapping was not stopped".into());
        return Ok(report);
    }
    let running = mappings.configs().into_iter().find(|m| m.name == name);
    if running.is_some() {
        mappings.stop(&[name.to_string()]);
        if !mappings.drain(cfg.shutdown_grace, &[], shutdown).await {
            return Err(Failed(
                "sluice is shutting down: the move was not made".into(),
                EXIT_FAILED,
            ));
        }
    }
    let result = async {
        if !how.force {
            moves::refuse_live(&store, name, &plan.partitions, me).await?;
        }
        moves::commit(plan, &store, false).await
    }
    .await;
    let restarted = match running {
        None => None,
        Some(_) if shutdown.is_cancelled() => Some(Err("sluice is shutting down".to_string())),
        Some(m) => Some(mappings.start(m).map_err(|e| format!("{e:#}"))),
    };
    let how_it_went = match &restarted {
        None => {
            "the mapping was not running here: it reads from the new checkpoints when it starts"
                .to_string()
        }
        Some(Ok(())) => {
            info!(mapping = %name, "mapping started again after the checkpoint move");
            "the mapping was stopped on this instance and started again".to_string()
        }
        Some(Err(e)) => {
            error!(mapping = %name, error = %e, "cannot start the mapping again after the checkpoint move; the others run");
            format!("the mapping was stopped but could not start again: {e}")
        }
    };
    match result {
        Ok(mut report) => {
            report.instance = Some(how_it_went);
            Ok(report)
        }
        Err(Failed(message, code)) if restarted.is_some() => {
            Err(Failed(format!("{message} ({how_it_went})"), code))
        }
        Err(f) => Err(f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::process::Process;
    use crate::cli::checkpoints::moves::Target;
    use crate::cli::EXIT_USAGE;
    use crate::telemetry::{Metrics, ReloadTelemetry, Status};
    use tokio::sync::oneshot;

    /// An SQS mapping (its endpoint refuses connections: it runs without reaching AWS) and a
    /// disabled Kafka one.
    const CONFIG: &str = "region: us-east-1\nendpoints: { sqs: 'http://127.0.0.1:1' }\nmappings:\n  - Name: q\n    EventSourceArn: arn:aws:sqs:us-east-1:000000000000:q\n    Http: { Url: 'http://127.0.0.1:1/' }\n  - Name: kaf\n    Enabled: false\n    SelfManagedEventSource:\n      Endpoints:\n        KAFKA_BOOTSTRAP_SERVERS: ['127.0.0.1:1']\n    Topics: [t]\n    StartingPosition: TRIM_HORIZON\n    Http: { Url: 'http://127.0.0.1:1/' }\n";

    async fn ask(
        name: &str,
        cfg: &Config,
        m: &mut Mappings,
        file: &Arc<FileCheckpointStore>,
    ) -> Result<Report, Failed> {
        let (reply, answer) = oneshot::channel();
        let how = Move {
            target: Some(Target::Oldest),
            partitions: Vec::new(),
            force: false,
            dry_run: false,
        };
        let shutdown = CancellationToken::new();
        let request = LiveMove {
            mapping: name.into(),
            how,
            reply,
        };
        apply(request, cfg, m, Some(file), &shutdown).await;
        answer.await.unwrap()
    }

    #[tokio::test]
    async fn refused_moves_leave_the_running_mappings_alone() {
        let cfg = crate::config::parse_str(CONFIG).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = Arc::new(FileCheckpointStore::open(dir.path()).unwrap());
        let (metrics, status) = (Arc::new(Metrics::new()), Arc::new(Status::new(0)));
        let shutdown = CancellationToken::new();
        let process = Process::for_tests(
            &cfg,
            file.clone(),
            metrics.clone(),
            status.clone(),
            shutdown.clone(),
        )
        .await;
        let reloads = Arc::new(ReloadTelemetry::new(&metrics, &status, "f"));
        let mut m = Mappings::new(process, reloads);
        m.start(cfg.mappings[0].clone()).unwrap();
        let started = status.snapshot()["config"]["mappings"]["q"].clone();

        let e = ask("nope", &cfg, &mut m, &file).await.unwrap_err();
        assert_eq!(e.1, EXIT_USAGE);
        assert!(
            e.0.contains("the running config") && e.0.contains("q, kaf"),
            "{}",
            e.0
        );
        let e = ask("q", &cfg, &mut m, &file).await.unwrap_err();
        assert!(e.0.contains("SQS mapping"), "{}", e.0);
        let e = ask("kaf", &cfg, &mut m, &file).await.unwrap_err();
        assert!(e.0.contains("consumer group"), "{}", e.0);
        assert_eq!(
            m.configs()
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            ["q"]
        );
        assert_eq!(status.snapshot()["config"]["mappings"]["q"], started);
        shutdown.cancel();
        assert!(m.shutdown(std::time::Duration::from_secs(5)).await);
    }
}
