//! The day-2 subcommands of the `sluice` binary (docs/cli.md): `status` (a running instance's
//! `/status` as a table), `checkpoints list|set|reset` (read and move a mapping's checkpoints where
//! the config keeps them: with the mapping stopped, or through the running instance, which stops
//! and restarts only that mapping), `iam-policy` (the least-privilege policy a config needs) and
//! `probe` (an HTTP health check for container runtimes whose image has no shell or curl: ECS).
//! Each has its clap arguments and a `run` returning the process's exit code; `main.rs` only
//! dispatches. Exit codes: 0 done, 1 failed (no answer, an AWS or store error, a refusal), 2 a bad
//! config or bad arguments.

pub mod checkpoints;
pub mod iam;
pub mod status;

use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::config::Config;

/// Exit code of a refusal or a failed call.
pub const EXIT_FAILED: u8 = 1;
/// Exit code of a bad config or bad arguments.
pub const EXIT_USAGE: u8 = 2;

/// Reads and validates the config, printing every problem (exit 2) as `sluice validate` does.
pub fn load_config(path: &Path) -> Result<Config, ExitCode> {
    crate::config::load(path).map_err(|errors| {
        for e in &errors.0 {
            eprintln!("{e}");
        }
        eprintln!("{}: {} problem(s)", path.display(), errors.0.len());
        ExitCode::from(EXIT_USAGE)
    })
}

/// Writes `text` to stdout; a closed pipe (`| head`) is not an error.
pub fn print_out(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
}

/// A current-thread runtime for a subcommand's calls.
pub fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("cannot start the runtime: {e}");
            ExitCode::from(EXIT_FAILED)
        })
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The instance's admin URL.
    #[arg(long, conflicts_with = "config")]
    pub url: Option<String>,
    /// Take the admin URL from this config's `admin_listen` (0.0.0.0 is asked on 127.0.0.1).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print the raw /status JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// How long to wait for the answer, in seconds.
    #[arg(long, default_value_t = 5)]
    pub timeout_seconds: u64,
}

/// The default admin URL (`admin_listen`'s default, asked on the loopback).
pub const DEFAULT_ADMIN_URL: &str = "http://127.0.0.1:9090";

/// `sluice status`.
pub fn status(args: StatusArgs) -> ExitCode {
    let url = match (&args.url, &args.config) {
        (Some(url), _) => url.clone(),
        (None, Some(path)) => match load_config(path) {
            Ok(cfg) => status::url_of(cfg.admin_listen),
            Err(code) => return code,
        },
        (None, None) => DEFAULT_ADMIN_URL.to_string(),
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(status::fetch(
        &url,
        Duration::from_secs(args.timeout_seconds),
    )) {
        Ok(json) if args.json => {
            print_out(&format!("{json:#}\n"));
            ExitCode::SUCCESS
        }
        Ok(json) => {
            print_out(&status::render(&json));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sluice status: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

#[derive(Args, Debug)]
pub struct IamPolicyArgs {
    /// The YAML config file.
    #[arg(long, env = "SLUICE_CONFIG")]
    pub config: PathBuf,
    /// The account for resources the config does not tell it for (default: the mappings' ARNs').
    #[arg(long)]
    pub account: Option<String>,
    /// The lease table's region when the config has no `region` (default: the mappings' ARNs').
    #[arg(long)]
    pub region: Option<String>,
}

/// `sluice iam-policy`: the policy on stdout; placeholders left in it are named on stderr.
pub fn iam_policy(args: IamPolicyArgs) -> ExitCode {
    let cfg = match load_config(&args.config) {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    let policy = iam::policy(
        &cfg,
        &iam::Overrides {
            account: args.account,
            region: args.region,
        },
    );
    print_out(&format!("{}\n", policy.document.to_json()));
    for p in &policy.placeholders {
        eprintln!("note: placeholder {p}");
    }
    ExitCode::SUCCESS
}

#[derive(Args, Debug)]
pub struct ProbeArgs {
    /// The URL to ask, e.g. the admin server's /healthz.
    #[arg(long, default_value = "http://127.0.0.1:9090/healthz")]
    pub url: String,
    /// How long to wait for the answer, in seconds.
    #[arg(long, default_value_t = 3)]
    pub timeout_seconds: u64,
}

/// `sluice probe`: exit 0 when `url` answers 2xx within the timeout, else 1 (ECS's container
/// health check runs it: the distroless image has no shell or curl).
pub fn probe(args: ProbeArgs) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let timeout = Duration::from_secs(args.timeout_seconds);
    let answer = rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| e.to_string())?;
        let resp = client
            .get(&args.url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        Ok::<u16, String>(resp.status().as_u16())
    });
    match answer {
        Ok(status) if (200..300).contains(&status) => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("{}: {status}", args.url);
            ExitCode::from(EXIT_FAILED)
        }
        Err(e) => {
            eprintln!("{}: {e}", args.url);
            ExitCode::from(EXIT_FAILED)
        }
    }
}
