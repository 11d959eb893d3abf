//! Tests of [`LeaseTelemetry`]: each call moves its metric, `/status` shows owners and the lease
//! view, and a lost lease is logged at WARN with why.

use super::*;
use crate::telemetry::{MappingTelemetry, ShardState};
use std::sync::Mutex;

fn setup(mapping: &str) -> (Arc<Metrics>, Arc<Status>, Arc<LeaseTelemetry>) {
    let metrics = Arc::new(Metrics::new());
    let status = Arc::new(Status::new(1));
    let leases = LeaseTelemetry::new(mapping, "worker-a", &metrics, &status);
    (metrics, status, leases)
}

fn assert_lines(text: &str, lines: &[&str]) {
    for line in lines {
        assert!(
            text.lines().any(|l| l == *line),
            "{line} missing from {text}"
        );
    }
}

/// The log lines written while `f` runs, at debug and above, without colours.
fn logs(f: impl FnOnce()) -> String {
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }
    let buf = Buf::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(buf.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let out = buf.0.lock().unwrap().clone();
    String::from_utf8(out).unwrap()
}

#[test]
fn the_handle_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<LeaseTelemetry>();
    check::<Arc<LeaseTelemetry>>();
}

#[test]
fn loss_reasons_have_their_labels() {
    assert_eq!(LossReason::Taken.as_str(), "taken");
    assert_eq!(LossReason::RenewalFailed.as_str(), "renewal_failed");
    assert_eq!(LossReason::Gone.as_str(), "gone");
    for (i, r) in LossReason::ALL.iter().enumerate() {
        assert_eq!(*r as usize, i, "ALL is in discriminant order");
    }
}

#[test]
fn a_new_handle_shows_zeros_for_every_kind_and_reason() {
    let (metrics, _, leases) = setup("orders");
    assert_eq!(leases.worker_id(), "worker-a");
    assert_lines(
        &metrics.encode(),
        &[
            "sluice_leases_held{mapping=\"orders\"} 0",
            "sluice_lease_takes_total{mapping=\"orders\",kind=\"free\"} 0",
            "sluice_lease_takes_total{mapping=\"orders\",kind=\"expired\"} 0",
            "sluice_lease_steals_total{mapping=\"orders\"} 0",
            "sluice_lease_losses_total{mapping=\"orders\",reason=\"taken\"} 0",
            "sluice_lease_losses_total{mapping=\"orders\",reason=\"renewal_failed\"} 0",
            "sluice_lease_losses_total{mapping=\"orders\",reason=\"gone\"} 0",
            "sluice_lease_renewal_seconds_count{mapping=\"orders\"} 0",
            "sluice_lease_renewal_failures_total{mapping=\"orders\"} 0",
            "sluice_lease_releases_total{mapping=\"orders\"} 0",
        ],
    );
    // A registry with no coordinated mapping exports no lease series.
    assert!(!Metrics::new().encode().contains("{mapping="));
}

#[test]
fn each_call_moves_its_metric() {
    let (metrics, _, leases) = setup("orders");
    leases.held(3);
    leases.taken("shardId-0", None, false);
    leases.taken("shardId-1", Some("worker-b"), true);
    leases.taken("shardId-2", Some("worker-b"), true);
    leases.stolen("shardId-3", "worker-c");
    leases.lost("shardId-4", LossReason::Taken, Some("worker-c"), "");
    leases.lost("shardId-5", LossReason::RenewalFailed, None, "timeout");
    leases.lost("shardId-5", LossReason::RenewalFailed, None, "timeout");
    leases.lost("shardId-6", LossReason::Gone, None, "");
    leases.renewed(Duration::from_millis(3));
    leases.renewed(Duration::from_millis(700));
    leases.renewal_failed("shardId-5", "timeout");
    leases.released("shardId-0");
    assert_lines(
        &metrics.encode(),
        &[
            "sluice_leases_held{mapping=\"orders\"} 3",
            "sluice_lease_takes_total{mapping=\"orders\",kind=\"free\"} 1",
            "sluice_lease_takes_total{mapping=\"orders\",kind=\"expired\"} 2",
            "sluice_lease_steals_total{mapping=\"orders\"} 1",
            "sluice_lease_losses_total{mapping=\"orders\",reason=\"taken\"} 1",
            "sluice_lease_losses_total{mapping=\"orders\",reason=\"renewal_failed\"} 2",
            "sluice_lease_losses_total{mapping=\"orders\",reason=\"gone\"} 1",
            "sluice_lease_renewal_seconds_count{mapping=\"orders\"} 2",
            "sluice_lease_renewal_seconds_bucket{le=\"0.001\",mapping=\"orders\"} 0",
            "sluice_lease_renewal_seconds_bucket{le=\"0.005\",mapping=\"orders\"} 1",
            "sluice_lease_renewal_seconds_bucket{le=\"0.5\",mapping=\"orders\"} 1",
            "sluice_lease_renewal_seconds_bucket{le=\"1.0\",mapping=\"orders\"} 2",
            "sluice_lease_renewal_seconds_bucket{le=\"10.0\",mapping=\"orders\"} 2",
            "sluice_lease_renewal_failures_total{mapping=\"orders\"} 1",
            "sluice_lease_releases_total{mapping=\"orders\"} 1",
        ],
    );
    leases.held(1);
    assert_lines(
        &metrics.encode(),
        &["sluice_leases_held{mapping=\"orders\"} 1"],
    );
}

#[test]
fn mappings_keep_their_own_series_and_a_second_handle_shares_them() {
    let metrics = Arc::new(Metrics::new());
    let status = Arc::new(Status::new(2));
    let orders = LeaseTelemetry::new("orders", "w", &metrics, &status);
    let again = LeaseTelemetry::new("orders", "w", &metrics, &status);
    let payments = LeaseTelemetry::new("payments", "w", &metrics, &status);
    orders.stolen("s0", "x");
    again.stolen("s1", "x");
    payments.held(5);
    assert_lines(
        &metrics.encode(),
        &[
            "sluice_lease_steals_total{mapping=\"orders\"} 2",
            "sluice_lease_steals_total{mapping=\"payments\"} 0",
            "sluice_leases_held{mapping=\"orders\"} 0",
            "sluice_leases_held{mapping=\"payments\"} 5",
        ],
    );
}

#[test]
fn status_shows_the_worker_id_each_shards_owner_and_the_lease_view() {
    let (metrics, status, leases) = setup("orders");
    let mapping = MappingTelemetry::new("orders", &metrics, &status);
    let mut p = mapping.partition("shardId-0");
    p.state(ShardState::Reading, 0);
    status.set_owner("orders", "shardId-0", leases.worker_id());
    leases.table(vec![
        LeaseView {
            shard: "shardId-0".into(),
            owner: Some("worker-a".into()),
            counter: 7,
            checkpoint: "4960".into(),
        },
        LeaseView {
            shard: "shardId-1".into(),
            owner: None,
            counter: 2,
            checkpoint: "TRIM_HORIZON".into(),
        },
    ]);
    let snap = status.snapshot();
    assert_eq!(snap["worker_id"], "worker-a");
    // `mappings` keeps its shape: mappings[m][shard] is the row, now with its owner.
    assert_eq!(snap["mappings"]["orders"]["shardId-0"]["owner"], "worker-a");
    assert_eq!(snap["mappings"]["orders"]["shardId-0"]["state"], "reading");
    assert_eq!(
        snap["leases"],
        serde_json::json!({"orders": {
            "shardId-0": {"owner": "worker-a", "counter": 7, "checkpoint": "4960"},
            "shardId-1": {"owner": null, "counter": 2, "checkpoint": "TRIM_HORIZON"},
        }})
    );
    // A newer read replaces the mapping's view.
    leases.table(vec![LeaseView {
        shard: "shardId-1".into(),
        owner: Some("worker-b".into()),
        counter: 3,
        checkpoint: "TRIM_HORIZON".into(),
    }]);
    assert_eq!(
        status.snapshot()["leases"]["orders"],
        serde_json::json!({"shardId-1": {"owner": "worker-b", "counter": 3, "checkpoint": "TRIM_HORIZON"}})
    );
}

#[test]
fn a_lost_lease_is_logged_at_warn_with_why_and_shows_on_the_row() {
    let (_, status, leases) = setup("orders");
    status.set_owner("orders", "shardId-0", "worker-a");
    let out = logs(|| {
        leases.lost("shardId-0", LossReason::Taken, Some("worker-b"), "");
        leases.lost("shardId-9", LossReason::RenewalFailed, None, "throttled");
        leases.lost("shardId-8", LossReason::Gone, None, "");
    });
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    for (line, (shard, why)) in lines.iter().zip([
        ("shardId-0", "another replica took it"),
        (
            "shardId-9",
            "could not be renewed within the lease duration",
        ),
        ("shardId-8", "lease item is gone"),
    ]) {
        assert!(line.contains(" WARN "), "{line}");
        assert!(line.contains(why), "{line}");
        assert!(line.contains(&format!("shard=\"{shard}\"")), "{line}");
        assert!(line.contains("worker=worker-a"), "{line}");
        assert!(line.contains("mapping=orders"), "{line}");
    }
    assert!(lines[0].contains("reason=\"taken\""), "{}", lines[0]);
    assert!(lines[0].contains("now_owner=\"worker-b\""), "{}", lines[0]);
    assert!(lines[1].contains("detail=\"throttled\""), "{}", lines[1]);
    // The row that was running shows who has it now; no row is made for a shard not running.
    let row = status.get("orders", "shardId-0").expect("row");
    assert_eq!(row.owner.as_deref(), Some("worker-b"));
    assert_eq!(
        row.last_error.as_deref(),
        Some("lease lost: another replica took it")
    );
    assert!(status.get("orders", "shardId-9").is_none());
}

#[test]
fn takes_steals_and_renewal_failures_are_logged() {
    let (_, _, leases) = setup("orders");
    let out = logs(|| {
        leases.taken("shardId-1", Some("worker-b"), true);
        leases.taken("shardId-2", None, false);
        leases.stolen("shardId-3", "worker-c");
        leases.renewal_failed("shardId-4", "connection reset");
    });
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(lines[0].contains(" INFO ") && lines[0].contains("kind=\"expired\""));
    assert!(
        lines[0].contains("previous_owner=\"worker-b\""),
        "{}",
        lines[0]
    );
    assert!(lines[1].contains("kind=\"free\"") && !lines[1].contains("previous_owner"));
    assert!(lines[2].contains(" INFO ") && lines[2].contains("from=\"worker-c\""));
    assert!(lines[3].contains(" WARN ") && lines[3].contains("error=\"connection reset\""));
}

#[test]
fn a_release_is_info_at_shutdown_and_debug_once_the_shard_ended() {
    let (metrics, status, leases) = setup("orders");
    let mapping = MappingTelemetry::new("orders", &metrics, &status);
    let mut ended = mapping.partition("shardId-0");
    ended.ended();
    let mut running = mapping.partition("shardId-1");
    running.state(ShardState::Reading, 0);
    leases.table(vec![LeaseView {
        shard: "shardId-2".into(),
        owner: Some("worker-a".into()),
        counter: 4,
        checkpoint: "SHARD_END".into(),
    }]);
    let out = logs(|| {
        leases.released("shardId-0");
        leases.released("shardId-1");
        leases.released("shardId-2");
    });
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].contains(" DEBUG ") && lines[0].contains("shardId-0"));
    assert!(lines[1].contains(" INFO ") && lines[1].contains("shardId-1"));
    assert!(lines[2].contains(" DEBUG ") && lines[2].contains("shardId-2"));
    assert_lines(
        &metrics.encode(),
        &["sluice_lease_releases_total{mapping=\"orders\"} 3"],
    );
}
