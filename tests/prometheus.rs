//! The deploy kit's dashboard and alert rules against a real Prometheus (Debian's `prometheus`
//! package, found on PATH) scraping a running sluice every second: one sluice, coordinated through
//! a lease table on moto, runs Kinesis mappings (one whose records are partly filtered out, one
//! whose function always fails with an SQS on-failure destination, one that fails with none, read
//! through the fault proxy so some reads are throttled), an SQS mapping and a Kafka mapping. Every
//! query of every panel of `deploy/grafana/sluice.json` must return data (with `$mapping` as All
//! and as the mapping that drives the panel), the `mapping` variable must list every mapping, the
//! rules of `deploy/prometheus/sluice-rules.yaml` must load with health "ok", and the records given
//! up on must fire `SluiceRecordsDropped` and `SluiceDestinationDeliveries`.
//!
//! Panels whose events this test cannot cause cheaply (lease steals and losses, renewal failures,
//! worker panics, failed destination sends, throttled or too-large invocations) still return data:
//! those series are created at 0 when a mapping starts, so their queries are checked as valid and
//! non-empty, not as non-zero.

mod common;

use common::kafka::{bootstrap, create_topic, mapping as kafka_mapping, produce, Target};
use common::sink::Sink;
use common::sluice::{coordinated_config, free_port, Coordination, Sluice};
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/sluice.json");
const RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/prometheus/sluice-rules.yaml"
);
/// What the test puts for Grafana's `$__rate_interval` (at least 4 scrapes at 1 s).
const RATE_INTERVAL: &str = "30s";

/// A `prometheus` server run by the test, killed when dropped.
struct Prometheus {
    child: Child,
    base: String,
    log: PathBuf,
    http: reqwest::Client,
}

/// The `prometheus` binary on PATH; fails the test saying how to install it.
fn prometheus_binary() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("prometheus"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the `prometheus` binary is not on PATH: install Debian's package \
                 (`apt-get install -y prometheus`; .ci/run installs it in CI)"
            )
        })
}

/// Percent-encodes a query parameter value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Prometheus {
    /// Starts Prometheus in `dir` on a free port, scraping `target` (`host:port`) every second as
    /// job `sluice` and evaluating the rules file every second.
    async fn start(dir: &Path, target: &str) -> Prometheus {
        let binary = prometheus_binary();
        let port = free_port();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {RULES}\n\
             scrape_configs:\n  - job_name: sluice\n    static_configs:\n      - targets: ['{target}']\n"
        );
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = dir.join("prometheus.log");
        let child = Command::new(&binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let prometheus = Prometheus {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
            http: reqwest::Client::new(),
        };
        wait_for("Prometheus /-/ready", Duration::from_secs(60), || async {
            let resp = prometheus
                .http
                .get(format!("{}/-/ready", prometheus.base))
                .send()
                .await
                .ok()?;
            resp.status().is_success().then_some(())
        })
        .await;
        prometheus
    }

    /// Kills the server and reaps it (dropping it kills it too, without waiting).
    async fn stop(mut self) {
        self.child.kill().await.expect("killing prometheus");
    }

    /// GET `path` of the HTTP API; the `data` of a `success` answer. Panics on an `error` answer
    /// (a query Prometheus refuses), naming it.
    async fn api(&self, path: &str) -> Option<Value> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .ok()?;
        let body: Value = serde_json::from_str(&resp.text().await.ok()?).ok()?;
        if body["status"] != "success" {
            panic!("Prometheus refused {path}: {body}");
        }
        Some(body["data"].clone())
    }

    /// An instant query's result vector.
    async fn query(&self, expr: &str) -> Vec<Value> {
        let data = self
            .api(&format!("/api/v1/query?query={}", encode(expr)))
            .await
            .unwrap_or_else(|| panic!("Prometheus did not answer the query {expr}"));
        data["result"].as_array().cloned().unwrap_or_default()
    }

    /// Waits (up to `timeout`) until `expr` returns at least one series.
    async fn wait_data(&self, what: &str, expr: &str, timeout: Duration) -> Vec<Value> {
        let found = tokio::time::timeout(timeout, async {
            loop {
                let result = self.query(expr).await;
                if !result.is_empty() {
                    return result;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
        .await;
        found.unwrap_or_else(|_| {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let mut start = log.len().saturating_sub(2000);
            while !log.is_char_boundary(start) {
                start += 1;
            }
            let tail = &log[start..];
            panic!("{what}: no data from `{expr}` after {timeout:?}\nPrometheus log (end):\n{tail}")
        })
    }

    /// Waits until the scalar value of `expr` (one series) is above 0.
    async fn wait_positive(&self, what: &str, expr: &str) {
        let expr = format!("({expr}) > 0");
        self.wait_data(what, &expr, Duration::from_secs(90)).await;
    }
}

/// One query of a dashboard panel.
struct PanelQuery {
    panel: String,
    expr: String,
}

/// Every query of every panel of the dashboard (rows hold none), nested rows included.
fn panel_queries(dashboard: &Value) -> Vec<PanelQuery> {
    fn walk(panels: &[Value], out: &mut Vec<PanelQuery>) {
        for p in panels {
            let title = p["title"].as_str().unwrap_or("?").to_string();
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("panel {title:?} has a target without an expr: {t}"));
                out.push(PanelQuery {
                    panel: title.clone(),
                    expr: expr.to_string(),
                });
            }
            walk(p["panels"].as_array().map_or(&[], |v| v), out);
        }
    }
    let mut out = Vec::new();
    walk(dashboard["panels"].as_array().expect("panels"), &mut out);
    out
}

/// `expr` with Grafana's variables as Grafana would render them: `$mapping` as `value` (a regex,
/// `.*` for All), `$__rate_interval` as [`RATE_INTERVAL`].
fn substitute(expr: &str, mapping: &str) -> String {
    expr.replace("${mapping}", mapping)
        .replace("$mapping", mapping)
        .replace("${__rate_interval}", RATE_INTERVAL)
        .replace("$__rate_interval", RATE_INTERVAL)
}

/// The mapping whose traffic gives each panel data in this test (`None`: not per mapping).
fn driving_mapping(panel: &str) -> Option<&'static str> {
    let p = panel.to_lowercase();
    if p.contains("kafka") {
        Some("kafka")
    } else if p.contains("sqs") {
        Some("queue")
    } else if p.contains("dropped") {
        Some("drop|fail")
    } else if p.contains("errors") || p.contains("outcome") {
        Some("fail")
    } else if p.contains("in-flight bytes") || p.contains("instances") {
        None
    } else {
        Some("ok")
    }
}

/// The function: succeeds for run `ok`, fails with an unhandled function error otherwise.
async fn function() -> Sink {
    Sink::start(|req, _| {
        if req.run == "ok" {
            (200, vec![], "{}".into())
        } else {
            (
                200,
                vec![("X-Amz-Function-Error", "Unhandled".to_string())],
                r#"{"errorType":"Boom","errorMessage":"always fails"}"#.into(),
            )
        }
    })
    .await
}

fn kinesis_mapping(name: &str, arn: &str, url: &str, extra: &str) -> String {
    format!(
        "  - Name: {name}\n    EventSourceArn: {arn}\n    StartingPosition: TRIM_HORIZON\n    BatchSize: 10\n    Http:\n      Url: {url}\n      Headers: {{ X-Run: \"{run}\" }}\n{extra}",
        run = if name == "ok" { "ok" } else { "fail" },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_panel_has_data_and_the_rules_load_against_a_real_prometheus() {
    let binary = prometheus_binary();
    let mut tb = testbed();
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).expect("the dashboard"))
            .expect("the dashboard is JSON");
    let queries = panel_queries(&dashboard);
    assert!(queries.len() >= 15, "only {} panel queries", queries.len());

    // Sources: a Kinesis stream read through the fault proxy (2 throttled reads), an SQS queue and
    // its on-failure destination queue, a Kafka topic.
    let kinesis = kinesis(&tb).await;
    let stream = unique("obs");
    let arn = create_stream(&kinesis, &stream, 1).await;
    let faults = unique("obs");
    std::fs::write(
        tb.faults_dir.join(format!("{faults}.json")),
        r#"{"GetRecords": {"throttle": 2}}"#,
    )
    .unwrap();
    tb.kinesis = format!("{}/fault-{faults}", tb.kinesis_faults);
    let sqs = sqs(&tb);
    let (queue_url, queue_arn) = create_queue(&sqs, &unique("obs-src"), &[]).await;
    let (_dest_url, dest_arn) = create_queue(&sqs, &unique("obs-dest"), &[]).await;
    let topic = unique("obs");
    create_topic(&tb, &topic, 1).await;

    let sink = function().await;
    let filter = "    FilterCriteria:\n      Filters:\n        - Pattern: '{\"data\": {\"kind\": [\"keep\"]}}'\n";
    let give_up = "    MaximumRetryAttempts: 0\n";
    let mappings = [
        kinesis_mapping("ok", &arn, &sink.url, filter),
        kinesis_mapping(
            "fail",
            &arn,
            &sink.url,
            &format!("{give_up}    DestinationConfig: {{ OnFailure: {{ Destination: '{dest_arn}' }} }}\n"),
        ),
        kinesis_mapping("drop", &arn, &sink.url, give_up),
        format!(
            "  - Name: queue\n    EventSourceArn: {queue_arn}\n    Http:\n      Url: {}\n      Headers: {{ X-Run: \"ok\" }}\n",
            sink.url
        ),
        kafka_mapping(
            bootstrap(&tb),
            "kafka",
            &topic,
            &unique("obs-group"),
            10,
            Target::http(&sink.url, "ok"),
            "",
        ),
    ]
    .concat();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let table = unique("obs-leases");
    let coordination = Coordination {
        dynamodb: &tb.moto,
        lease_table: &table,
        worker_id: "obs-1",
        lease_duration_seconds: 10,
        lease_scan_interval_millis: 1000,
    };
    let config = coordinated_config(&tb, &dir.path().join("cp"), port, &coordination, &mappings);
    let sluice = Sluice::start(dir.path(), "run", &config).await;
    sluice.wait_ready().await;

    // Prometheus scrapes before any record exists, so every counter's increase is seen.
    let prometheus = Prometheus::start(dir.path(), &format!("127.0.0.1:{port}")).await;
    eprintln!("prometheus: {} at {}", binary.display(), prometheus.base);
    prometheus
        .wait_data(
            "the first scrape of sluice",
            "sluice_polled_events_total",
            Duration::from_secs(60),
        )
        .await;
    let up = prometheus.query(r#"up{job="sluice"}"#).await;
    assert_eq!(up[0]["value"][1], "1", "the scrape is healthy: {up:?}");

    // Traffic: Kinesis records, some filtered out by `ok` and failed by `fail` and `drop`.
    let kinds = ["keep", "skip"];
    let records: Vec<(String, String)> = (0..20)
        .map(|i| {
            (
                format!("key-{i}"),
                format!(r#"{{"kind":"{}","i":{i}}}"#, kinds[i % 2]),
            )
        })
        .collect();
    put_records(&kinesis, &stream, records).await;
    sqs_support_send(&sqs, &queue_url, 5).await;
    produce(&tb, &topic, &common::records("k", 5, 5)).await;

    // The events the event-driven panels show, seen through Prometheus.
    let events = [
        (
            "records filtered out",
            r#"sum(sluice_filtered_out_events_total{mapping="ok"})"#,
        ),
        (
            "function errors",
            r#"sum(sluice_batches_total{mapping="fail",outcome="function_error"})"#,
        ),
        (
            "successful invocations",
            r#"sum(sluice_batches_total{mapping="ok",outcome="success"})"#,
        ),
        (
            "throttled reads",
            r#"sum(sluice_source_errors_total{error="throttled"})"#,
        ),
        (
            "dropped records",
            r#"sum(sluice_dropped_events_total{mapping="drop"})"#,
        ),
        (
            "destination deliveries",
            r#"sum(sluice_on_failure_destination_delivered_events_total{mapping="fail"})"#,
        ),
        ("leases held", r#"sum(sluice_leases_held{mapping="ok"})"#),
        (
            "free leases taken",
            r#"sum(sluice_lease_takes_total{mapping="ok",kind="free"})"#,
        ),
        (
            "lease renewals",
            r#"sum(sluice_lease_renewal_seconds_count{mapping="ok"})"#,
        ),
        (
            "SQS messages deleted",
            r#"sum(sluice_sqs_messages_deleted_total{mapping="queue"})"#,
        ),
        ("SQS pollers", r#"sum(sluice_concurrency{mapping="queue"})"#),
        (
            "Kafka records invoked",
            r#"sum(sluice_invoked_events_total{mapping="kafka"})"#,
        ),
    ];
    for (what, expr) in events {
        prometheus.wait_positive(what, expr).await;
    }
    // The Kafka lag series appear at the first 5 s sample.
    prometheus
        .wait_data(
            "Kafka lag sampled",
            r#"sluice_kafka_offset_lag{mapping="kafka"}"#,
            Duration::from_secs(60),
        )
        .await;

    // The `mapping` variable's query lists every mapping.
    let values = prometheus
        .api(&format!(
            "/api/v1/label/mapping/values?match[]={}",
            encode("sluice_polled_events_total")
        ))
        .await
        .expect("label values");
    for name in ["ok", "fail", "drop", "queue", "kafka"] {
        assert!(
            values.as_array().unwrap().iter().any(|v| v == name),
            "the mapping variable lists {name}: {values}"
        );
    }

    // Every panel query returns data: for All, and for the mapping that drives the panel.
    for q in &queries {
        let all = substitute(&q.expr, ".*");
        let what = format!("panel {:?} with $mapping = All", q.panel);
        prometheus
            .wait_data(&what, &all, Duration::from_secs(30))
            .await;
    }
    let mut by_panel: Vec<(&str, Vec<&str>)> = Vec::new();
    for q in &queries {
        match by_panel.iter_mut().find(|(p, _)| *p == q.panel) {
            Some((_, exprs)) => exprs.push(&q.expr),
            None => by_panel.push((&q.panel, vec![&q.expr])),
        }
    }
    for (panel, exprs) in by_panel {
        let Some(mapping) = driving_mapping(panel) else {
            continue;
        };
        // Grafana renders a multi-value selection as a regex group.
        let value = format!("({mapping})");
        let union = exprs
            .iter()
            .map(|e| format!("({})", substitute(e, &value)))
            .collect::<Vec<_>>()
            .join(" or ");
        let what = format!("panel {panel:?} with $mapping = {value}");
        prometheus
            .wait_data(&what, &union, Duration::from_secs(30))
            .await;
    }

    // The rules loaded, each evaluated without error.
    let rules = wait_for("the rules evaluated", Duration::from_secs(30), || async {
        let data = prometheus.api("/api/v1/rules").await?;
        let rules: Vec<Value> = data["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let evaluated = rules.iter().all(|r| {
            r["lastEvaluation"]
                .as_str()
                .is_some_and(|t| !t.starts_with("0001"))
        });
        (!rules.is_empty() && evaluated).then_some(rules)
    })
    .await;
    let in_file = std::fs::read_to_string(RULES)
        .unwrap()
        .matches("- alert: ")
        .count();
    assert_eq!(rules.len(), in_file, "every rule of the file is loaded");
    for r in &rules {
        assert_eq!(r["health"], "ok", "rule {} is unhealthy: {r}", r["name"]);
        assert_eq!(r["type"], "alerting", "{r}");
    }

    // The records given up on fire their alerts (they have `for: 0m`).
    for (alert, mapping) in [
        ("SluiceRecordsDropped", "drop"),
        ("SluiceDestinationDeliveries", "fail"),
    ] {
        wait_for(
            &format!("{alert} firing for {mapping}"),
            Duration::from_secs(30),
            || async {
                let data = prometheus.api("/api/v1/alerts").await?;
                data["alerts"]
                    .as_array()?
                    .iter()
                    .any(|a| {
                        a["labels"]["alertname"] == alert
                            && a["labels"]["mapping"] == mapping
                            && a["state"] == "firing"
                    })
                    .then_some(())
            },
        )
        .await;
    }
    // Nothing is down, and only `drop` dropped records.
    let data = prometheus.api("/api/v1/alerts").await.unwrap();
    for a in data["alerts"].as_array().unwrap() {
        let (name, mapping) = (&a["labels"]["alertname"], &a["labels"]["mapping"]);
        assert!(
            name != "SluiceDown" && name != "SluiceShardFailed",
            "unexpected alert: {a}"
        );
        assert!(
            name != "SluiceRecordsDropped" || mapping == "drop",
            "unexpected alert: {a}"
        );
    }
    prometheus.stop().await;
    drop(sluice);
}

/// Sends `n` small messages to the queue.
async fn sqs_support_send(client: &aws_sdk_sqs::Client, url: &str, n: usize) {
    for i in 0..n {
        client
            .send_message()
            .queue_url(url)
            .message_body(format!(r#"{{"i":{i}}}"#))
            .send()
            .await
            .expect("SendMessage");
    }
}
