//! Hot reload: on SIGHUP ([`on_sighup`]) or when the watched config file changes ([`watch`]) the
//! file is read and validated again and the difference applied to the running mappings
//! ([`reload`]), one reload at a time: a request while one runs is queued (several fold into one).
//!
//! A reload is refused, and the running config stays, when the new file has any problem (each
//! logged at ERROR as `sluice validate` prints it) or changes a process setting that takes a
//! restart ([`super::plan::restart_only_changes`]). Otherwise [`super::plan::plan`] decides:
//! removed, disabled and changed mappings stop (their in-flight batches finish and are
//! checkpointed), then added and changed ones start (from their checkpoints); the others are not
//! touched. SIGTERM during a reload abandons the rest of it and shuts down with the grace period.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::mappings::Mappings;
use super::plan::{fingerprint, plan, restart_only_changes};
use crate::config::{Config, ConfigErrors};

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// SIGHUP.
    Signal,
    /// The watched config file changed.
    File,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Signal => "signal",
            Trigger::File => "file",
        }
    }
}

/// Where the config is read again from: the file, and the command line's overrides applied to
/// every reading (as at start).
#[derive(Clone)]
pub struct ConfigSource {
    pub path: PathBuf,
    pub overrides: Arc<dyn Fn(&mut Config) + Send + Sync>,
}

impl ConfigSource {
    pub fn new(path: PathBuf, overrides: impl Fn(&mut Config) + Send + Sync + 'static) -> Self {
        ConfigSource {
            path,
            overrides: Arc::new(overrides),
        }
    }

    /// Reads and validates the file, then applies the overrides.
    pub fn read(&self) -> Result<Config, ConfigErrors> {
        let mut cfg = crate::config::load(&self.path)?;
        (self.overrides)(&mut cfg);
        Ok(cfg)
    }
}

/// Asks for reloads; cheap to clone.
#[derive(Clone)]
pub struct Requester {
    tx: mpsc::Sender<Trigger>,
    busy: Arc<AtomicBool>,
}

/// The reloads asked for, taken one at a time by the app.
pub struct Requests {
    rx: mpsc::Receiver<Trigger>,
    busy: Arc<AtomicBool>,
}

/// A reload queue of one: a request while one is queued folds into it.
pub fn channel() -> (Requester, Requests) {
    let (tx, rx) = mpsc::channel(1);
    let busy = Arc::new(AtomicBool::new(false));
    (
        Requester {
            tx,
            busy: busy.clone(),
        },
        Requests { rx, busy },
    )
}

impl Requester {
    pub fn request(&self, trigger: Trigger) {
        let busy = self.busy.load(Ordering::SeqCst);
        match self.tx.try_send(trigger) {
            Ok(()) if busy => info!(
                trigger = trigger.as_str(),
                "config reload asked for while another is in progress; it runs next"
            ),
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => info!(
                trigger = trigger.as_str(),
                "a config reload is already queued; this request folds into it"
            ),
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

impl Requests {
    /// The next reload asked for; never, once every [`Requester`] is gone.
    pub(super) async fn next(&mut self) -> Trigger {
        match self.rx.recv().await {
            Some(t) => {
                self.busy.store(true, Ordering::SeqCst);
                t
            }
            None => std::future::pending().await,
        }
    }

    pub(super) fn done(&self) {
        self.busy.store(false, Ordering::SeqCst);
    }
}

/// Installs the SIGHUP handler now (from then on SIGHUP no longer ends the process) and returns
/// the task that asks for a reload on each one.
#[cfg(unix)]
pub fn on_sighup(
    requests: Requester,
) -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    Ok(async move {
        while hup.recv().await.is_some() {
            info!("SIGHUP: reloading the config");
            requests.request(Trigger::Signal);
        }
    })
}

/// The file's modification time and length; `None` while it cannot be read (a ConfigMap's
/// symlinks being swapped).
fn stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Polls `path` every `every` until `stop`; asks for a reload when its modification time or length
/// changes. A change to the content alone is what a reload acts on: one that leaves the config as
/// it is (a comment) reloads nothing.
pub async fn watch(path: PathBuf, every: Duration, requests: Requester, stop: CancellationToken) {
    info!(config = %path.display(), every_s = every.as_secs_f64(), "watching the config file for changes");
    let mut last = stamp(&path);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let now = stamp(&path);
        if now.is_some() && now != last {
            info!(config = %path.display(), "the config file changed: reloading it");
            requests.request(Trigger::File);
            last = now;
        }
    }
}

/// Applies the file's config to `mappings` if it can (see the module docs); `current` becomes
/// the new config once applied. Returns when the reload is done, refused, or cut short by
/// `shutdown`.
pub(super) async fn reload(
    trigger: Trigger,
    source: &ConfigSource,
    current: &mut Config,
    mappings: &mut Mappings,
    shutdown: &CancellationToken,
) {
    let t = mappings.reloads.clone();
    let (trigger, path) = (trigger.as_str(), source.path.display().to_string());
    t.reloading(trigger, &path);
    let new = match source.read() {
        Ok(cfg) => cfg,
        Err(errors) => return t.refused(trigger, &path, &errors.0),
    };
    let problems = restart_only_changes(current, &new);
    if !problems.is_empty() {
        return t.refused(trigger, &path, &problems);
    }
    let print = fingerprint(&new);
    if print == t.fingerprint() {
        return t.unchanged(trigger);
    }
    // What runs, not what the last file said: a mapping that could not start is started again.
    let plan = plan(&mappings.configs(), &new.mappings);
    t.applying(trigger, &print, &plan.summary());
    let stopping: Vec<String> = plan
        .stop
        .iter()
        .cloned()
        .chain(plan.restart.iter().map(|m| m.name.clone()))
        .collect();
    mappings.stop(&stopping);
    if !mappings
        .drain(new.shutdown_grace, &plan.stop, shutdown)
        .await
    {
        warn!("shutdown during the config reload: the rest of it is abandoned");
        return;
    }
    let process = mappings.process().clone();
    for m in plan.start.iter().chain(&plan.restart) {
        if shutdown.is_cancelled() {
            return;
        }
        let restarted = plan.restart.iter().any(|r| r.name == m.name);
        if !restarted {
            carry_over(&process, m).await;
        }
        match mappings.start(m.clone()) {
            Ok(()) => info!(mapping = %m.name, restarted, "mapping started by the config reload"),
            Err(e) => {
                error!(mapping = %m.name, error = format!("{e:#}"), "cannot start the mapping; the others run")
            }
        }
    }
    *current = new;
    t.applied(trigger);
}

/// A mapping a reload adds takes over the checkpoints of a name it was renamed from, as at start
/// (the embedded store only; the lease table keeps leases under the current name).
async fn carry_over(process: &super::process::Process, m: &crate::config::Mapping) {
    if m.legacy_names.is_empty() {
        return;
    }
    if process.coordinator.is_some() {
        if m.source.has_shards() {
            warn!(mapping = %m.name, "renamed-mapping carry-over applies to the embedded store only; the lease table keeps leases under the current name");
        }
        return;
    }
    match process.checkpoints.adopt(&m.name, &m.legacy_names).await {
        Ok(Some(from)) => {
            info!(mapping = %m.name, from = %from, "took over the checkpoints written under an earlier name")
        }
        Ok(None) => {}
        Err(e) => {
            error!(mapping = %m.name, error = %e, "cannot carry checkpoints over to the renamed mapping; it starts from its own")
        }
    }
}
