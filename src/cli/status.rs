//! `sluice status`: a running instance's `/status` as a table. [`render`] is pure (the JSON in,
//! the text out); [`fetch`] asks the instance. The table has one row per partition: mapping,
//! partition, state, checkpoint, lease owner, how far behind the tip it is (`millis_behind_latest`,
//! the iterator age) and the last error, truncated to one short line. With coordination, a second
//! table shows every lease of the coordinated mappings as this instance last read the table.

use serde_json::Value;
use std::fmt::Write as _;
use std::time::Duration;

/// The longest last error shown, in characters.
pub const ERROR_CHARS: usize = 60;

/// The admin URL of a config's `admin_listen`: an unspecified address (`0.0.0.0`, `::`) is asked
/// on the loopback.
pub fn url_of(listen: std::net::SocketAddr) -> String {
    let ip = match listen.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_string(),
        ip if ip.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        ip => ip.to_string(),
    };
    format!("http://{ip}:{}", listen.port())
}

/// `GET <url>/status` as JSON; the error says what failed, naming the URL.
pub async fn fetch(url: &str, timeout: Duration) -> Result<Value, String> {
    let url = format!("{}/status", url.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    let resp = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("{url}: no answer ({})", crate::aws::error_chain(&e)))?;
    let status = resp.status();
    let body = resp
        .text()
        .await
        .map_err(|e| format!("{url}: reading the answer: {e}"))?;
    if !status.is_success() {
        return Err(format!("{url}: HTTP {status}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("{url}: not sluice's /status JSON ({e})"))
}

/// A cell: strings as they are, null as `-`, anything else as JSON.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `text` on one line, at most `max` characters (an ellipsis marks a cut).
pub fn truncate(text: &str, max: usize) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

fn behind(row: &Value) -> String {
    match row["millis_behind_latest"].as_i64() {
        None => "-".into(),
        Some(ms) if ms < 1_000 => format!("{ms}ms"),
        Some(ms) if ms < 120_000 => format!("{:.1}s", ms as f64 / 1000.0),
        Some(ms) if ms < 7_200_000 => format!("{}m", ms / 60_000),
        Some(ms) => format!("{}h", ms / 3_600_000),
    }
}

/// Lays `rows` out under `header`, columns padded to their widest cell (the last is not padded).
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        let mut line = String::new();
        for (i, (c, w)) in row.iter().zip(&widths).enumerate() {
            if i == last {
                line.push_str(c);
            } else {
                let _ = write!(line, "{c:<w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The table for a `/status` answer.
pub fn render(status: &Value) -> String {
    let mut out = String::new();
    let ready = status["ready"].as_bool().unwrap_or(false);
    let _ = write!(out, "ready: {}", if ready { "yes" } else { "no" });
    if let Some(why) = status["not_ready_because"].as_str() {
        let _ = write!(out, " ({why})");
    }
    if let Some(w) = status["worker_id"].as_str() {
        let _ = write!(out, "   worker: {w}");
    }
    if let Some(b) = status["in_flight_bytes"].as_u64() {
        let _ = write!(out, "   in flight: {b} bytes");
    }
    out.push_str("\n\n");
    let mut rows = Vec::new();
    if let Some(mappings) = status["mappings"].as_object() {
        for (mapping, partitions) in mappings {
            let Some(partitions) = partitions.as_object() else {
                continue;
            };
            for (partition, row) in partitions {
                let mut state = cell(&row["state"]);
                if let Some(n) = row["retry_attempt"].as_u64().filter(|n| *n > 0) {
                    let _ = write!(state, " ({n})");
                }
                rows.push(vec![
                    mapping.clone(),
                    partition.clone(),
                    state,
                    cell(&row["checkpoint"]),
                    cell(&row["owner"]),
                    behind(row),
                    row["last_error"]
                        .as_str()
                        .map_or_else(|| "-".into(), |e| truncate(e, ERROR_CHARS)),
                ]);
            }
        }
    }
    if rows.is_empty() {
        out.push_str("no partitions running\n");
    } else {
        out.push_str(&table(
            &[
                "MAPPING",
                "PARTITION",
                "STATE",
                "CHECKPOINT",
                "OWNER",
                "BEHIND",
                "LAST ERROR",
            ],
            &rows,
        ));
    }
    let mut leases = Vec::new();
    if let Some(mappings) = status["leases"].as_object() {
        for (mapping, shards) in mappings {
            for (shard, lease) in shards.as_object().into_iter().flatten() {
                leases.push(vec![
                    mapping.clone(),
                    shard.clone(),
                    cell(&lease["owner"]),
                    cell(&lease["counter"]),
                    cell(&lease["checkpoint"]),
                ]);
            }
        }
    }
    if !leases.is_empty() {
        out.push_str("\nleases (as last read from the table):\n");
        out.push_str(&table(
            &["MAPPING", "SHARD", "OWNER", "COUNTER", "CHECKPOINT"],
            &leases,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Value {
        serde_json::json!({
            "ready": false,
            "not_ready_because": "shards down: orders/shardId-000000000001",
            "in_flight_bytes": 2048,
            "worker_id": "pod-a",
            "leases": {
                "orders": {
                    "shardId-000000000000": {"owner": "pod-a", "counter": 12, "checkpoint": "4959"},
                    "shardId-000000000001": {"owner": null, "counter": 3, "checkpoint": "TRIM_HORIZON"}
                }
            },
            "mappings": {
                "orders": {
                    "shardId-000000000000": {
                        "state": "reading", "owner": "pod-a", "checkpoint": "4959",
                        "retry_attempt": 0, "last_error": null,
                        "millis_behind_latest": 1500, "buffered_records": 0
                    },
                    "shardId-000000000001": {
                        "state": "failed", "owner": "pod-a", "checkpoint": null,
                        "retry_attempt": 2,
                        "last_error": "checkpoint store: /var/lib/sluice/orders/shardId-000000000001.json does not parse (expected value at line 1)\nmore",
                        "millis_behind_latest": null, "buffered_records": 0
                    }
                }
            }
        })
    }

    #[test]
    fn renders_one_row_per_partition_with_truncated_errors_and_the_leases() {
        let text = render(&sample());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "ready: no (shards down: orders/shardId-000000000001)   worker: pod-a   in flight: 2048 bytes"
        );
        assert_eq!(
            lines[2],
            "MAPPING  PARTITION             STATE       CHECKPOINT  OWNER  BEHIND  LAST ERROR"
        );
        assert_eq!(
            lines[3],
            "orders   shardId-000000000000  reading     4959        pod-a  1.5s    -"
        );
        let failed = lines[4];
        assert!(failed.starts_with("orders   shardId-000000000001  failed (2)  -           pod-a  -       checkpoint store: "), "{failed}");
        let error = &failed[failed.find("checkpoint store").unwrap()..];
        assert_eq!(error.chars().count(), ERROR_CHARS);
        assert!(error.ends_with('…'));
        assert!(!text.contains("more"), "one line per error");
        assert_eq!(lines[6], "leases (as last read from the table):");
        assert_eq!(
            lines[7],
            "MAPPING  SHARD                 OWNER  COUNTER  CHECKPOINT"
        );
        assert_eq!(
            lines[9],
            "orders   shardId-000000000001  -      3        TRIM_HORIZON"
        );
    }

    #[test]
    fn single_replica_and_empty_answers() {
        let text = render(&serde_json::json!({
            "ready": true, "not_ready_because": null, "in_flight_bytes": 0,
            "worker_id": null, "leases": {}, "mappings": {}
        }));
        assert_eq!(
            text,
            "ready: yes   in flight: 0 bytes\n\nno partitions running\n"
        );
        // Not even JSON of the right shape: rendered, not panicked on.
        assert!(render(&serde_json::json!([1, 2])).contains("no partitions running"));
    }

    #[test]
    fn behind_reads_as_a_duration_and_urls_come_from_admin_listen() {
        let b = |ms: i64| behind(&serde_json::json!({ "millis_behind_latest": ms }));
        assert_eq!(
            [b(0), b(999), b(61_000), b(600_000), b(10_800_000)],
            ["0ms", "999ms", "61.0s", "10m", "3h"]
        );
        assert_eq!(
            url_of("0.0.0.0:9090".parse().unwrap()),
            "http://127.0.0.1:9090"
        );
        assert_eq!(url_of("[::]:9090".parse().unwrap()), "http://[::1]:9090");
        assert_eq!(url_of("10.0.0.5:80".parse().unwrap()), "http://10.0.0.5:80");
    }
}
