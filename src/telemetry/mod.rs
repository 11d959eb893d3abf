//! Telemetry: log setup ([`init_logging`]), the Prometheus registry with each mapping's series
//! ([`Metrics`], [`MappingMetrics`]), the per-partition status board behind `/status` and
//! `/readyz` ([`Status`]), and the handles workers record events through, one call per event
//! ([`MappingTelemetry`], [`PartitionTelemetry`]), and the lease coordinator's handle with its
//! `sluice_lease*` series and `/status` lease view ([`LeaseTelemetry`]), and config reloads
//! ([`ReloadTelemetry`]).

mod events;
mod kafka_metrics;
mod lease_metrics;
mod leases;
mod metrics;
mod reloads;
mod status;

pub use events::{MappingTelemetry, PartitionTelemetry};
pub use kafka_metrics::KafkaMetrics;
pub use leases::{LeaseTelemetry, LeaseView, LossReason};
pub use metrics::{MappingMetrics, Metrics};
pub use reloads::ReloadTelemetry;
pub use status::{Row, ShardState, ShardStatus, Status};

use tracing_subscriber::EnvFilter;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber. The filter comes from `SLUICE_LOG`, else `RUST_LOG`, else `info`.
pub fn init_logging(format: LogFormat) {
    let filter = std::env::var("SLUICE_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only on a terminal: a log file or a collector gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_target(false).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
    }
}
