//! The sluice binary as a child process with a generated config, a private checkpoint directory
//! and its own admin port.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

use super::{wait_for, TestBed};

pub struct Sluice {
    pub child: Child,
    pub admin: String,
    pub log: PathBuf,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The global part of a config for the test bed; `mappings` is YAML for the list's items.
pub fn config(tb: &TestBed, checkpoints: &Path, port: u16, mappings: &str) -> String {
    format!(
        "region: us-east-1\nendpoints:\n  kinesis: {}\n  lambda: {}\n  dynamodbstreams: {moto}\n  sqs: {moto}\n  sns: {moto}\n  s3: {moto}\n  secretsmanager: {moto}\n  kafka: {moto}\ncheckpoint_dir: {}\nadmin_listen: 127.0.0.1:{port}\nshutdown_grace_period_seconds: 10\ninvoke_identity_arn: arn:aws:iam::000000000000:role/sluice-test\nmappings:\n{mappings}",
        tb.kinesis,
        tb.lambda,
        checkpoints.display(),
        moto = tb.moto,
    )
}

/// How a replica of a fleet takes part in it: its `coordination` section.
pub struct Coordination<'a> {
    /// `endpoints.dynamodb`: moto, or a proxy in front of it.
    pub dynamodb: &'a str,
    pub lease_table: &'a str,
    pub worker_id: &'a str,
    pub lease_duration_seconds: u64,
    pub lease_scan_interval_millis: u64,
}

/// [`config`] for one replica of several sharing a lease table: `endpoints.dynamodb` and a
/// `coordination` section added. `checkpoints` should not exist (with coordination, checkpoints
/// live on the lease items; an existing directory is imported once).
pub fn coordinated_config(
    tb: &TestBed,
    checkpoints: &Path,
    port: u16,
    coordination: &Coordination<'_>,
    mappings: &str,
) -> String {
    let c = coordination;
    config(tb, checkpoints, port, mappings)
        .replacen(
            "endpoints:\n",
            &format!("endpoints:\n  dynamodb: {}\n", c.dynamodb),
            1,
        )
        .replacen(
            "\nmappings:\n",
            &format!(
                "\ncoordination:\n  lease_table: {}\n  worker_id: {}\n  lease_duration_seconds: {}\n  lease_scan_interval_millis: {}\nmappings:\n",
                c.lease_table, c.worker_id, c.lease_duration_seconds, c.lease_scan_interval_millis
            ),
            1,
        )
}

impl Sluice {
    /// Starts sluice on `mappings` (YAML list items) with a fresh checkpoint directory and admin
    /// port; the directory lives as long as the returned guard.
    pub async fn run(tb: &TestBed, mappings: &str) -> (Sluice, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let sluice = Sluice::start(
            dir.path(),
            "run",
            &config(tb, &dir.path().join("cp"), free_port(), mappings),
        )
        .await;
        (sluice, dir)
    }

    /// Writes `config` to `dir/<name>.yaml` and starts `sluice run` on it.
    pub async fn start(dir: &Path, name: &str, config: &str) -> Sluice {
        Sluice::start_with(dir, name, config, &[]).await
    }

    /// [`Sluice::start`] with more `sluice run` arguments (`--watch-config 1`, `--admin-write`).
    pub async fn start_with(dir: &Path, name: &str, config: &str, run_args: &[&str]) -> Sluice {
        let port: u16 = config
            .lines()
            .find_map(|l| l.strip_prefix("admin_listen: 127.0.0.1:"))
            .and_then(|p| p.parse().ok())
            .expect("config has admin_listen");
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, config).unwrap();
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("run")
            .args(run_args)
            .arg("--config")
            .arg(&path)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("SLUICE_LOG", "info,sluice=debug")
            .stdout(Stdio::null())
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .expect("spawning sluice");
        Sluice {
            child,
            admin: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let resp = reqwest::get(format!("{}{path}", self.admin)).await.ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.text().await.ok()?))
    }

    pub async fn wait_ready(&self) {
        wait_for("sluice /readyz", Duration::from_secs(60), || async {
            matches!(self.get("/readyz").await, Some((200, _))).then_some(())
        })
        .await
    }

    /// `/status` as JSON; `None` while sluice does not answer.
    pub async fn status(&self) -> Option<serde_json::Value> {
        let (_, body) = self.get("/status").await?;
        serde_json::from_str(&body).ok()
    }

    /// `mapping`'s `shard` in `/status`; `None` while sluice does not answer or does not list it.
    pub async fn shard_status(&self, mapping: &str, shard: &str) -> Option<serde_json::Value> {
        let status = self.status().await?;
        Some(status["mappings"][mapping][shard].clone()).filter(|s| !s.is_null())
    }

    /// Waits (up to 60 s) until `/status` shows `seq` as the checkpoint of `mapping`'s `shard`.
    pub async fn wait_checkpoint(&self, what: &str, mapping: &str, shard: &str, seq: &str) {
        wait_for(what, Duration::from_secs(60), || async {
            let s = self.shard_status(mapping, shard).await?;
            (s["checkpoint"] == seq).then_some(())
        })
        .await
    }

    /// A counter's value for a mapping, from /metrics (0 when absent).
    pub async fn metric(&self, name: &str, labels: &str) -> f64 {
        let (_, text) = self.get("/metrics").await.expect("metrics answer");
        let prefix = format!("{name}{{{labels}}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// kill -9.
    pub async fn kill9(&mut self) {
        self.child.kill().await.expect("SIGKILL");
    }

    /// SIGHUP: sluice reloads its config file.
    pub fn hup(&self) {
        let pid = self.child.id().expect("running");
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap();
        assert!(ok.success(), "kill -HUP {pid}");
    }

    /// SIGTERM, then the exit code.
    pub async fn terminate(&mut self) -> i32 {
        let pid = self.child.id().expect("running");
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("sluice exits within the grace period")
            .unwrap();
        status.code().unwrap_or(-1)
    }
}

/// A test that fails shows the end of each sluice process's log beside its panic, so a failure in
/// CI (where the temporary directory is gone afterwards) can be read from the test output alone.
impl Drop for Sluice {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = super::kafka::plain(&self.log_text());
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(80)..];
            eprintln!(
                "--- last {} lines of {} ---\n{}\n--- end of log ---",
                tail.len(),
                self.log.display(),
                tail.join("\n")
            );
        }
    }
}
