//! `sluice checkpoints list|set|reset`: read and move one mapping's checkpoints where its config
//! keeps them ([`store`]), with the mapping stopped, or through the running instance ([`live`]:
//! `--url` / `--running`). `set --sequence N` checkpoints one partition at N (reading resumes
//! after N); `set --timestamp T` checkpoints each shard at its last record before T ([`position`]),
//! so reading resumes at the first record at or after T; `reset` puts each partition where a new
//! mapping would start now (TRIM_HORIZON and AT_TIMESTAMP: no checkpoint; LATEST: the shard's last
//! record now), or `--to trim-horizon|latest`. Moves go backwards (replay) or forwards (skip); the
//! planning and writing is [`moves`], shared with the running instance. Kafka mappings (their
//! progress is the consumer group's) and SQS mappings (no checkpoints) are refused, saying what to
//! do instead.

pub mod live;
pub mod moves;
pub mod position;
pub mod store;

use clap::{Args, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use self::live::MoveRequest;
use self::moves::{find_mapping, usage, Failed, Move};
use self::position::show_ms;
use self::store::Store;
use super::{load_config, runtime, EXIT_USAGE};
use crate::config::{Config, Mapping};

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print a mapping's checkpoints as its store holds them.
    List(Select),
    /// Move checkpoints to a sequence number (one partition) or to a point in time.
    Set(SetArgs),
    /// Put partitions back where a new mapping would start (or --to trim-horizon|latest).
    Reset(ResetArgs),
}

/// Which mapping, and which of its partitions (default: all).
#[derive(Args, Debug)]
pub struct Select {
    /// The YAML config file (needed unless --url is given).
    #[arg(long, env = "SLUICE_CONFIG")]
    pub config: Option<PathBuf>,
    /// The mapping's `Name` (as `/status` shows it).
    #[arg(long)]
    pub mapping: String,
    /// A partition (shard id); repeat for several. Default: every partition.
    #[arg(long = "partition", value_name = "ID")]
    pub partitions: Vec<String>,
    /// Overrides `checkpoint_dir` (as `sluice run --checkpoint-dir`).
    #[arg(long, env = "SLUICE_CHECKPOINT_DIR")]
    pub checkpoint_dir: Option<PathBuf>,
}

/// How a move is made.
#[derive(Args, Debug)]
pub struct Moves {
    /// Move leases a live worker holds too (it is fenced: its next renewal or commit fails).
    #[arg(long)]
    pub force: bool,
    /// Print what would change; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Send the move to the running instance at this admin URL (started with --admin-write): it
    /// stops the mapping, moves its checkpoints and starts it again.
    #[arg(long, conflicts_with = "running")]
    pub url: Option<String>,
    /// Send the move to the running instance at the config's admin_listen (as --url).
    #[arg(long)]
    pub running: bool,
    /// With --url or --running: how long to wait for the instance's answer, in seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout_seconds: u64,
}

#[derive(Args, Debug)]
pub struct SetArgs {
    #[command(flatten)]
    pub select: Select,
    /// Checkpoint the one --partition at this sequence number: reading resumes after it.
    #[arg(
        long,
        conflicts_with = "timestamp",
        required_unless_present = "timestamp"
    )]
    pub sequence: Option<String>,
    /// Replay (or skip) to this instant: RFC 3339, epoch seconds or epoch milliseconds.
    #[arg(long)]
    pub timestamp: Option<String>,
    #[command(flatten)]
    pub moves: Moves,
}

#[derive(Args, Debug)]
pub struct ResetArgs {
    #[command(flatten)]
    pub select: Select,
    /// Where to start instead of the mapping's StartingPosition.
    #[arg(long, value_enum)]
    pub to: Option<ResetTo>,
    #[command(flatten)]
    pub moves: Moves,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ResetTo {
    TrimHorizon,
    Latest,
}

/// `sluice checkpoints …`.
pub fn run(command: Command) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let result = rt.block_on(async {
        match command {
            Command::List(select) => list(select).await,
            Command::Set(args) => {
                let request = MoveRequest {
                    partitions: args.select.partitions.clone(),
                    sequence: args.sequence.clone(),
                    timestamp: args.timestamp.clone(),
                    to: None,
                    force: args.moves.force,
                    dry_run: args.moves.dry_run,
                };
                make(args.select, request, args.moves).await
            }
            Command::Reset(args) => {
                let to = match args.to {
                    None => "start",
                    Some(ResetTo::TrimHorizon) => "trim-horizon",
                    Some(ResetTo::Latest) => "latest",
                };
                let request = MoveRequest {
                    partitions: args.select.partitions.clone(),
                    to: Some(to.into()),
                    force: args.moves.force,
                    dry_run: args.moves.dry_run,
                    ..Default::default()
                };
                make(args.select, request, args.moves).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failed(message, code)) => {
            eprintln!("sluice checkpoints: {message}");
            ExitCode::from(code)
        }
    }
}

/// The config (with `--checkpoint-dir` applied).
fn config_of(select: &Select) -> Result<(Config, PathBuf), Failed> {
    let Some(path) = &select.config else {
        return Err(usage("give --config FILE (or SLUICE_CONFIG)"));
    };
    let mut cfg = load_config(path)
        .map_err(|_| Failed(format!("{}: invalid config", path.display()), EXIT_USAGE))?;
    if let Some(dir) = &select.checkpoint_dir {
        cfg.checkpoint_dir = dir.clone();
    }
    Ok((cfg, path.clone()))
}

/// The config, the mapping, and the refusal of the kinds that have no checkpoints here.
fn mapping_of(select: &Select) -> Result<(Config, Mapping), Failed> {
    let (cfg, path) = config_of(select)?;
    let mapping = find_mapping(&cfg, &select.mapping, &path.display().to_string())?;
    Ok((cfg, mapping))
}

async fn open_store(cfg: &Config) -> Result<Store, Failed> {
    let dynamodb = match &cfg.coordination {
        Some(_) => Some(crate::aws::clients(cfg).await.dynamodb),
        None => None,
    };
    Store::open(cfg, dynamodb).map_err(Failed::from)
}

/// A move: checked here, then made on the store (the mapping stopped) or sent to the instance.
async fn make(select: Select, request: MoveRequest, how: Moves) -> Result<(), Failed> {
    let mv: Move = request.to_move()?;
    let url = match (&how.url, how.running) {
        (Some(url), _) => Some(url.clone()),
        (None, true) => Some(super::status::url_of(config_of(&select)?.0.admin_listen)),
        (None, false) => None,
    };
    let report = match url {
        Some(url) => {
            let timeout = Duration::from_secs(how.timeout_seconds.max(1));
            live::send(&url, &select.mapping, &request, timeout).await?
        }
        None => {
            let (cfg, mapping) = mapping_of(&select)?;
            let store = open_store(&cfg).await?;
            moves::run(&cfg, &mapping, &store, &mv).await?
        }
    };
    super::print_out(&report.text());
    Ok(())
}

async fn list(select: Select) -> Result<(), Failed> {
    let (cfg, mapping) = mapping_of(&select)?;
    let store = open_store(&cfg).await?;
    let entries: Vec<_> = store
        .list(&mapping.name)
        .await?
        .into_iter()
        .filter(|e| select.partitions.is_empty() || select.partitions.contains(&e.partition))
        .collect();
    println!("mapping {} ({})", mapping.name, store.describe(&cfg));
    if let Some(ms) = store.mapping_start(&mapping.name).await? {
        println!("first started: {}", show_ms(ms));
    }
    if entries.is_empty() {
        println!("no checkpoints");
        return Ok(());
    }
    let mut rows = Vec::new();
    for e in &entries {
        let mut row = vec![e.partition.clone(), e.checkpoint.clone()];
        if store.is_lease_table() {
            row.push(e.owner.clone().unwrap_or_else(|| "-".into()));
            row.push(e.counter.map_or_else(|| "-".into(), |c| c.to_string()));
        }
        row.push(if e.window { "open" } else { "-" }.into());
        rows.push(row);
    }
    let header: &[&str] = if store.is_lease_table() {
        &["PARTITION", "CHECKPOINT", "OWNER", "COUNTER", "WINDOW"]
    } else {
        &["PARTITION", "CHECKPOINT", "WINDOW"]
    };
    print!("{}", super::status::table(header, &rows));
    Ok(())
}
