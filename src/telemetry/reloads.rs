//! Config reloads as one call per event ([`ReloadTelemetry`]): the log lines, the
//! `sluice_config_reloads_total{result}` counter and `sluice_config_generation` gauge
//! ([`ReloadFamilies`], registered in [`super::Metrics::new`]), and the `config` section of
//! `/status`: the running config's generation (1 at start, one more per reload that changed it),
//! its fingerprint, when each running mapping was started (at which generation), and the last
//! reload's result with its problems.
//!
//! A refused config's problems are logged at ERROR one per line, as `sluice validate` prints them
//! (field path first); they name fields and values, never record data.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tracing::{error, info};

use super::{Metrics, Status};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

/// The reload families, registered once.
#[derive(Default)]
pub(super) struct ReloadFamilies {
    reloads: Family<ResultLabel, Counter>,
    generation: Gauge,
}

impl ReloadFamilies {
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "sluice_config_reloads",
            "Config reloads (SIGHUP or a changed file) by result: ok (applied, or nothing changed) or refused (the running config stays)",
            self.reloads.clone(),
        );
        registry.register(
            "sluice_config_generation",
            "The running config's generation: 1 at start, one more per reload that changed it",
            self.generation.clone(),
        );
    }

    fn reloaded(&self, result: &str) {
        self.reloads
            .get_or_create(&ResultLabel {
                result: result.to_string(),
            })
            .inc();
    }
}

/// One running mapping in `config.mappings`.
#[derive(Debug, Clone, Serialize)]
struct MappingView {
    /// The config generation that started it (1: with the process).
    generation: u64,
    started_at: String,
}

/// The last reload in `config.last_reload`.
#[derive(Debug, Clone, Serialize)]
struct LastReload {
    /// `applying` (stopping and starting mappings now), then `applied`; or `unchanged`, or
    /// `refused`.
    result: &'static str,
    at: String,
    /// What asked for it: `signal` (SIGHUP) or `file` (the watched file changed).
    trigger: String,
    /// Why it was refused, one line per problem.
    problems: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
struct ConfigView {
    generation: u64,
    fingerprint: String,
    loaded_at: String,
    mappings: BTreeMap<String, MappingView>,
    last_reload: Option<LastReload>,
}

/// The process's reload events (see the module docs).
pub struct ReloadTelemetry {
    metrics: Arc<Metrics>,
    status: Arc<Status>,
    view: Mutex<ConfigView>,
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl ReloadTelemetry {
    /// The config the process started with: generation 1.
    pub fn new(metrics: &Arc<Metrics>, status: &Arc<Status>, fingerprint: &str) -> Self {
        let t = ReloadTelemetry {
            metrics: metrics.clone(),
            status: status.clone(),
            view: Mutex::new(ConfigView {
                generation: 1,
                fingerprint: fingerprint.to_string(),
                loaded_at: now(),
                mappings: BTreeMap::new(),
                last_reload: None,
            }),
        };
        metrics.reloads.generation.set(1);
        t.publish(&t.view.lock().expect("reload view"));
        t
    }

    fn publish(&self, view: &ConfigView) {
        self.status
            .set_config(serde_json::to_value(view).unwrap_or_default());
    }

    fn update(&self, f: impl FnOnce(&mut ConfigView)) {
        let mut view = self.view.lock().expect("reload view");
        f(&mut view);
        self.publish(&view);
    }

    /// The running config's generation.
    pub fn generation(&self) -> u64 {
        self.view.lock().expect("reload view").generation
    }

    /// The running config's fingerprint.
    pub fn fingerprint(&self) -> String {
        self.view.lock().expect("reload view").fingerprint.clone()
    }

    /// A reload was asked for while one runs: it runs after it (requests meanwhile fold into one).
    pub fn queued(&self, trigger: &str) {
        info!(
            trigger,
            "config reload asked for while another is in progress; it runs next"
        );
    }

    /// A reload started.
    pub fn reloading(&self, trigger: &str, path: &str) {
        info!(trigger, config = path, "reloading the config");
    }

    /// The new config was refused; the running one stays. Every problem is logged at ERROR.
    pub fn refused(&self, trigger: &str, path: &str, problems: &[String]) {
        for p in problems {
            error!(config = path, "{p}");
        }
        error!(
            trigger,
            config = path,
            problems = problems.len(),
            generation = self.generation(),
            "config reload refused; the running config stays"
        );
        self.metrics.reloads.reloaded("refused");
        self.update(|v| {
            v.last_reload = Some(LastReload {
                result: "refused",
                at: now(),
                trigger: trigger.to_string(),
                problems: problems.to_vec(),
            })
        });
    }

    /// The new config is the running one (comments or layout aside): nothing to do.
    pub fn unchanged(&self, trigger: &str) {
        info!(
            trigger,
            generation = self.generation(),
            "config reloaded: nothing changed"
        );
        self.metrics.reloads.reloaded("ok");
        self.update(|v| {
            v.last_reload = Some(LastReload {
                result: "unchanged",
                at: now(),
                trigger: trigger.to_string(),
                problems: Vec::new(),
            })
        });
    }

    /// A reload is being applied: the generation moves on now, so the mappings it starts show
    /// it.
    pub fn applying(&self, trigger: &str, fingerprint: &str, plan: &str) {
        self.update(|v| {
            v.generation += 1;
            v.fingerprint = fingerprint.to_string();
            v.loaded_at = now();
            v.last_reload = Some(LastReload {
                result: "applying",
                at: now(),
                trigger: trigger.to_string(),
                problems: Vec::new(),
            });
            info!(
                trigger,
                generation = v.generation,
                "applying the new config: {plan}"
            );
        });
        self.metrics
            .reloads
            .generation
            .set(self.generation().min(i64::MAX as u64) as i64);
    }

    /// The reload applied so far is complete: every stopped mapping drained, every new one
    /// started.
    pub fn applied(&self, trigger: &str) {
        self.metrics.reloads.reloaded("ok");
        self.update(|v| {
            info!(trigger, generation = v.generation, "config reloaded");
            v.last_reload = Some(LastReload {
                result: "applied",
                at: now(),
                trigger: trigger.to_string(),
                problems: Vec::new(),
            })
        });
    }

    /// `mapping` was started under the running generation.
    pub fn mapping_started(&self, mapping: &str) {
        self.update(|v| {
            let view = MappingView {
                generation: v.generation,
                started_at: now(),
            };
            v.mappings.insert(mapping.to_string(), view);
        });
    }

    /// `mapping` stopped (removed, disabled, or about to restart).
    pub fn mapping_stopped(&self, mapping: &str) {
        self.update(|v| {
            v.mappings.remove(mapping);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reloads_show_in_the_metrics_and_the_status_config_section() {
        let (metrics, status) = (Arc::new(Metrics::new()), Arc::new(Status::new(0)));
        let t = ReloadTelemetry::new(&metrics, &status, "aaaa");
        t.mapping_started("orders");
        let snap = status.snapshot();
        assert_eq!(snap["config"]["generation"], 1);
        assert_eq!(snap["config"]["fingerprint"], "aaaa");
        assert_eq!(snap["config"]["mappings"]["orders"]["generation"], 1);
        t.refused("signal", "c.yaml", &["mappings[0].BatchSize: bad".into()]);
        let snap = status.snapshot();
        assert_eq!(snap["config"]["last_reload"]["result"], "refused");
        assert_eq!(
            snap["config"]["last_reload"]["problems"][0],
            "mappings[0].BatchSize: bad"
        );
        assert_eq!(snap["config"]["generation"], 1);
        t.applying("file", "bbbb", "start [\"payments\"]");
        assert_eq!(
            status.snapshot()["config"]["last_reload"]["result"],
            "applying"
        );
        t.mapping_started("payments");
        t.mapping_stopped("orders");
        t.applied("file");
        let snap = status.snapshot();
        assert_eq!(snap["config"]["generation"], 2);
        assert_eq!(snap["config"]["fingerprint"], "bbbb");
        assert_eq!(snap["config"]["last_reload"]["result"], "applied");
        assert_eq!(snap["config"]["mappings"]["payments"]["generation"], 2);
        assert!(snap["config"]["mappings"].get("orders").is_none());
        let text = metrics.encode();
        assert!(
            text.contains("sluice_config_reloads_total{result=\"refused\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("sluice_config_reloads_total{result=\"ok\"} 1"),
            "{text}"
        );
        assert!(text.contains("sluice_config_generation 2"), "{text}");
    }
}
