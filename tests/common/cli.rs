//! The sluice binary's subcommands as a test runs them: exit code, stdout and stderr, with the test
//! credentials and none of the environment's sluice settings; `sluice checkpoints` invocations
//! built from what differs ([`checkpoints`]); and the lease-table config the CLI tests move
//! checkpoints on ([`lease_table_config`]).

use super::sluice::{coordinated_config, Coordination};
use super::TestBed;
use std::path::Path;

/// Runs the sluice binary with `args`: (exit code, stdout, stderr).
pub async fn cli(args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env_remove("SLUICE_CHECKPOINT_DIR")
        .env_remove("SLUICE_CONFIG")
        .output()
        .await
        .expect("running sluice");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`cli`], which must succeed; its stdout.
pub async fn ok(args: &[&str]) -> String {
    let (code, out, err) = cli(args).await;
    assert_eq!(code, 0, "sluice {args:?} failed:\n{out}\n{err}");
    out
}

/// `sluice checkpoints <command> --mapping <mapping>`; name where (`config`, `url`, `running`),
/// the target and the flags, then [`Checkpoints::run`] or [`Checkpoints::ok`].
pub fn checkpoints(command: &str, mapping: &str) -> Checkpoints {
    Checkpoints {
        args: ["checkpoints", command, "--mapping", mapping]
            .map(String::from)
            .to_vec(),
    }
}

/// A `sluice checkpoints` command line being built (see [`checkpoints`]).
#[derive(Clone, Debug)]
pub struct Checkpoints {
    args: Vec<String>,
}

impl Checkpoints {
    fn arg(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// `--config <path>`: the store (or lease table) the config names.
    pub fn config(self, path: &str) -> Self {
        self.arg(&["--config", path])
    }

    /// `--url <admin>`: through the running instance at `admin`.
    pub fn url(self, admin: &str) -> Self {
        self.arg(&["--url", admin])
    }

    /// `--running --config <path>`: through the instance at the config's `admin_listen`.
    pub fn running(self, path: &str) -> Self {
        self.arg(&["--running", "--config", path])
    }

    /// `--partition <partition> --sequence <sequence>`.
    pub fn sequence(self, partition: &str, sequence: &str) -> Self {
        self.arg(&["--partition", partition, "--sequence", sequence])
    }

    /// `--timestamp <at>`.
    pub fn timestamp(self, at: &str) -> Self {
        self.arg(&["--timestamp", at])
    }

    /// `--to <position>` (`trim-horizon`, `latest`).
    pub fn to(self, position: &str) -> Self {
        self.arg(&["--to", position])
    }

    /// `--force`.
    pub fn force(self) -> Self {
        self.arg(&["--force"])
    }

    /// `--dry-run`.
    pub fn dry_run(self) -> Self {
        self.arg(&["--dry-run"])
    }

    /// Runs it: (exit code, stdout, stderr).
    pub async fn run(&self) -> (i32, String, String) {
        cli(&self.args()).await
    }

    /// Runs it, which must succeed; its stdout.
    pub async fn ok(&self) -> String {
        ok(&self.args()).await
    }

    fn args(&self) -> Vec<&str> {
        self.args.iter().map(String::as_str).collect()
    }
}

/// [`coordinated_config`] for a replica on moto's DynamoDB with lease table `table` as worker
/// `worker_id`, 3 s leases scanned every 500 ms: the lease table the CLI tests move checkpoints on.
pub fn lease_table_config(
    tb: &TestBed,
    checkpoints: &Path,
    port: u16,
    table: &str,
    worker_id: &str,
    mappings: &str,
) -> String {
    coordinated_config(
        tb,
        checkpoints,
        port,
        &Coordination {
            dynamodb: &tb.moto,
            lease_table: table,
            worker_id,
            lease_duration_seconds: 3,
            lease_scan_interval_millis: 500,
        },
        mappings,
    )
}
