//! The `sluice` binary: `sluice run` and `sluice validate`, the day-2 commands of [`sluice::cli`]
//! (`status`, `checkpoints`, `iam-policy`) and `probe` (a container health check). A bad config
//! exits 2 before any AWS call. `run` stops on SIGTERM/SIGINT and reloads its config on SIGHUP (and,
//! with `--watch-config`, when the file changes): see `app::reload`.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

use sluice::app::reload::{self, ConfigSource};
use sluice::telemetry::{init_logging, LogFormat};

/// The AWS SDKs allocate and free many small objects per call; mimalloc spends less CPU on that
/// than glibc's allocator (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Self-hosted AWS Lambda event source mappings"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every enabled mapping until SIGTERM or SIGINT; SIGHUP reloads the config.
    Run(RunArgs),
    /// Check a config file; print every problem, one per line; exit 2 if there is any.
    Validate(ConfigArg),
    /// Print a running instance's mappings and partitions (its /status) as a table.
    Status(sluice::cli::StatusArgs),
    /// List, set or reset a mapping's checkpoints (stopped, or through the running instance).
    #[command(subcommand)]
    Checkpoints(sluice::cli::checkpoints::Command),
    /// Print the least-privilege IAM policy the config needs.
    IamPolicy(sluice::cli::IamPolicyArgs),
    /// Exit 0 if a URL (by default the local /healthz) answers 2xx: a container health check.
    Probe(sluice::cli::ProbeArgs),
}

#[derive(Args)]
struct ConfigArg {
    /// The YAML config file.
    #[arg(long, env = "SLUICE_CONFIG")]
    config: PathBuf,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Log format.
    #[arg(long, env = "SLUICE_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Overrides `admin_listen`.
    #[arg(long, env = "SLUICE_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
    /// Overrides `checkpoint_dir`.
    #[arg(long, env = "SLUICE_CHECKPOINT_DIR")]
    checkpoint_dir: Option<PathBuf>,
    /// Also reload the config when the file changes, checking every SECONDS (default 5).
    #[arg(long, env = "SLUICE_WATCH_CONFIG", value_name = "SECONDS", num_args = 0..=1, default_missing_value = "5", value_parser = clap::value_parser!(u64).range(1..=3600))]
    watch_config: Option<u64>,
    /// Let the admin server move checkpoints (POST /checkpoints/<mapping>, used by
    /// `sluice checkpoints set|reset --url`). Off by default: the admin port then changes nothing.
    #[arg(long, env = "SLUICE_ADMIN_WRITE")]
    admin_write: bool,
}

fn load(arg: &ConfigArg) -> Result<sluice::config::Config, ExitCode> {
    sluice::config::load(&arg.config).map_err(|errors| {
        for e in &errors.0 {
            eprintln!("{e}");
        }
        eprintln!("{}: {} problem(s)", arg.config.display(), errors.0.len());
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Status(args) => sluice::cli::status(args),
        Command::Checkpoints(command) => sluice::cli::checkpoints::run(command),
        Command::IamPolicy(args) => sluice::cli::iam_policy(args),
        Command::Probe(args) => sluice::cli::probe(args),
        Command::Validate(arg) => match load(&arg) {
            Ok(cfg) => {
                println!(
                    "{}: ok ({} mapping(s))",
                    arg.config.display(),
                    cfg.mappings.len()
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Run(args) => {
            let mut cfg = match load(&args.config) {
                Ok(cfg) => cfg,
                Err(code) => return code,
            };
            let (admin_listen, checkpoint_dir) = (args.admin_listen, args.checkpoint_dir.clone());
            // Applied to the file at start and at every reload.
            let source = ConfigSource::new(args.config.config.clone(), move |cfg| {
                if let Some(a) = admin_listen {
                    cfg.admin_listen = a;
                }
                if let Some(d) = &checkpoint_dir {
                    cfg.checkpoint_dir = d.clone();
                }
            });
            (source.overrides)(&mut cfg);
            init_logging(args.log_format);
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let code = runtime.block_on(async {
                let shutdown = CancellationToken::new();
                tokio::spawn(signal(shutdown.clone()));
                let (requester, requests) = reload::channel();
                #[cfg(unix)]
                match reload::on_sighup(requester.clone()) {
                    Ok(task) => drop(tokio::spawn(task)),
                    Err(e) => tracing::warn!(error = %e, "cannot install the SIGHUP handler; reload by SIGHUP is off"),
                }
                if let Some(every) = args.watch_config {
                    let (path, stop) = (source.path.clone(), shutdown.clone());
                    let every = std::time::Duration::from_secs(every);
                    tokio::spawn(reload::watch(path, every, requester, stop));
                }
                match sluice::app::run_instance(cfg, shutdown, source, requests, args.admin_write).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        tracing::error!(error = format!("{e:#}"), "sluice failed");
                        ExitCode::FAILURE
                    }
                }
            });
            // Whatever is still stuck (a blocking file write, an abandoned call) does not hold the
            // exit: everything that counts is checkpointed already.
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            code
        }
    }
}

/// Exit code when a second signal cuts the drain short (128 + SIGINT, as shells report it).
const EXIT_INTERRUPTED: i32 = 130;

/// Cancels `shutdown` on the first SIGTERM or SIGINT; exits at once on the second (only
/// checkpointed progress counts, so nothing is lost: unfinished batches are read again).
async fn signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    for n in 0.. {
        #[cfg(unix)]
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        if n == 0 {
            tracing::info!("signal received: draining (a second signal exits at once)");
            shutdown.cancel();
        } else {
            tracing::warn!("second signal: exiting now; unfinished batches are read again after the checkpoint on restart");
            std::process::exit(EXIT_INTERRUPTED);
        }
    }
}
