//! `sluice checkpoints list|set|reset`: read and move one mapping's checkpoints where its config
//! keeps them ([`store`]), with the mapping stopped. `set --sequence N` checkpoints one partition
//! at N (reading resumes after N); `set --timestamp T` checkpoints each shard at its last record
//! before T ([`position`]), so reading resumes at the first record at or after T; `reset` puts each
//! partition where a new mapping would start now (TRIM_HORIZON and AT_TIMESTAMP: no checkpoint;
//! LATEST: the shard's last record now), or `--to trim-horizon|latest`. Moves go backwards
//! (replay) or forwards (skip). A shard with no record before the instant is cleared so that it
//! starts at its oldest record; for that to hold, a LATEST mapping's recorded first start may be
//! moved back ([`from_start`]). Kafka mappings (their progress is the consumer group's) and SQS
//! mappings (no checkpoints) are refused, saying what to do instead.

pub mod position;
pub mod store;

use clap::{Args, Subcommand, ValueEnum};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use self::position::{last_before, now_ms, parse_timestamp, show_ms};
use self::store::{Change, Store};
use super::{load_config, runtime, EXIT_FAILED, EXIT_USAGE};
use crate::checkpoint::Checkpoint;
use crate::config::{Config, Mapping, MappingSource, StartingPosition};
use crate::model::{Partition, SequenceNumber};
use crate::source::shards::{IteratorStart, ShardApi};

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
    /// The YAML config file.
    #[arg(long, env = "SLUICE_CONFIG")]
    pub config: PathBuf,
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

/// Where a move puts each selected partition.
#[derive(Debug, Clone, PartialEq)]
enum Target {
    /// `--sequence`.
    Sequence(SequenceNumber),
    /// Resume at the first record at or after this instant (epoch ms): `--timestamp`,
    /// `--to latest` (now), and LATEST's reset.
    Before(i64),
    /// Resume at the oldest record.
    Oldest,
    /// No checkpoint (TRIM_HORIZON's and AT_TIMESTAMP's reset).
    Clear,
}

/// A failure: the message, and the exit code.
struct Failed(String, u8);

impl From<String> for Failed {
    fn from(e: String) -> Self {
        Failed(e, EXIT_FAILED)
    }
}

fn usage(e: impl Into<String>) -> Failed {
    Failed(e.into(), EXIT_USAGE)
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
                let target = match (&args.sequence, &args.timestamp) {
                    (Some(seq), _) => sequence_target(seq, &args.select.partitions),
                    (None, Some(t)) => parse_timestamp(t).map(Target::Before).map_err(usage),
                    (None, None) => Err(usage("give --sequence or --timestamp")),
                };
                match target {
                    Ok(target) => moves(args.select, Some(target), args.moves).await,
                    Err(e) => Err(e),
                }
            }
            Command::Reset(args) => {
                let target = args.to.map(|to| match to {
                    ResetTo::TrimHorizon => Target::Oldest,
                    ResetTo::Latest => Target::Before(now_ms()),
                });
                moves(args.select, target, args.moves).await
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

fn sequence_target(seq: &str, partitions: &[String]) -> Result<Target, Failed> {
    if partitions.len() != 1 {
        return Err(usage(
            "--sequence needs exactly one --partition (sequence numbers belong to one shard)",
        ));
    }
    if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return Err(usage(format!(
            "--sequence {seq:?} is not a sequence number (digits only)"
        )));
    }
    Ok(Target::Sequence(SequenceNumber(seq.to_string())))
}

/// The config, the mapping, and the refusal of the kinds that have no checkpoints here.
fn mapping_of(select: &Select) -> Result<(Config, Mapping), Failed> {
    let mut cfg = load_config(&select.config).map_err(|_| {
        Failed(
            format!("{}: invalid config", select.config.display()),
            EXIT_USAGE,
        )
    })?;
    if let Some(dir) = &select.checkpoint_dir {
        cfg.checkpoint_dir = dir.clone();
    }
    let Some(mapping) = cfg
        .mappings
        .iter()
        .find(|m| m.name == select.mapping)
        .cloned()
    else {
        let names: Vec<&str> = cfg.mappings.iter().map(|m| m.name.as_str()).collect();
        return Err(usage(format!(
            "no mapping named {:?} in {}; its mappings are: {}",
            select.mapping,
            select.config.display(),
            names.join(", ")
        )));
    };
    match &mapping.source {
        MappingSource::Kafka(k) => Err(Failed(
            format!(
                "{} is a Kafka mapping: its progress is the committed offsets of consumer group {:?} on the cluster, not sluice's checkpoints. With the mapping stopped, move them with Kafka's own tool, e.g. kafka-consumer-groups.sh --bootstrap-server <broker> --group {} --topic {} --reset-offsets --to-datetime 2026-11-27T10:00:00.000 --execute (or --to-offset, --to-earliest, --to-latest)",
                mapping.name, k.consumer_group_id, k.consumer_group_id, k.topic
            ),
            EXIT_FAILED,
        )),
        MappingSource::Sqs(_) => Err(Failed(
            format!(
                "{} is an SQS mapping: a queue has no checkpoints (messages are deleted once processed); to replay, send the messages again (or redrive them from the dead-letter queue)",
                mapping.name
            ),
            EXIT_FAILED,
        )),
        _ => Ok((cfg, mapping)),
    }
}

async fn open_store(cfg: &Config) -> Result<Store, Failed> {
    let dynamodb = match &cfg.coordination {
        Some(_) => Some(crate::aws::clients(cfg).await.dynamodb),
        None => None,
    };
    Store::open(cfg, dynamodb).map_err(Failed::from)
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

/// The stream's calls, for the mapping's source.
async fn shard_api(cfg: &Config, mapping: &Mapping) -> Result<(Arc<dyn ShardApi>, bool), Failed> {
    let clients = crate::aws::clients(cfg).await.for_arn(mapping.source_arn());
    match &mapping.source {
        MappingSource::Kinesis(s) => {
            let ctx = crate::source::kinesis::EventContext {
                stream_arn: s.stream.arn.clone(),
                region: s.stream.region.clone(),
                invoke_identity_arn: cfg.invoke_identity_arn.clone(),
            };
            let source = crate::source::kinesis::KinesisSource::new(clients.kinesis, ctx);
            let api: Arc<dyn ShardApi> = source.api().clone();
            Ok((api, true))
        }
        MappingSource::DynamoDbStream(s) => {
            let source = crate::source::dynamodb::DynamoDbSource::new(
                clients.dynamodbstreams,
                s.stream.arn.clone(),
            );
            let api: Arc<dyn ShardApi> = source.api().clone();
            Ok((api, false))
        }
        _ => Err(Failed("not a stream mapping".into(), EXIT_FAILED)),
    }
}

/// One partition's planned move.
struct Planned {
    partition: String,
    change: Change,
    parents: Vec<String>,
    /// Why, when it is not plain.
    note: Option<String>,
}

async fn moves(select: Select, target: Option<Target>, how: Moves) -> Result<(), Failed> {
    let (cfg, mapping) = mapping_of(&select)?;
    let start = mapping
        .starting_position()
        .ok_or_else(|| Failed("the mapping has no StartingPosition".into(), EXIT_FAILED))?;
    // The plain reset: where a new mapping starts now.
    let target = target.unwrap_or(match start {
        StartingPosition::Latest => Target::Before(now_ms()),
        _ => Target::Clear,
    });
    let store = open_store(&cfg).await?;
    let stored: Vec<String> = store
        .list(&mapping.name)
        .await?
        .into_iter()
        .map(|e| e.partition)
        .collect();
    // Shards as the stream lists them (a plain clear needs no AWS call).
    let api = if target == Target::Clear {
        None
    } else {
        Some(shard_api(&cfg, &mapping).await?)
    };
    let listed: BTreeMap<String, Partition> = match &api {
        Some((api, _)) => crate::source::shards::list(api.as_ref())
            .await
            .map_err(|e| Failed(format!("listing the shards: {e}"), EXIT_FAILED))?
            .into_iter()
            .map(|p| (p.id.clone(), p))
            .collect(),
        None => BTreeMap::new(),
    };
    let partitions: Vec<String> = if !select.partitions.is_empty() {
        select.partitions.clone()
    } else if api.is_some() {
        listed.keys().cloned().collect()
    } else {
        stored.clone()
    };
    if let Some(unknown) = partitions
        .iter()
        .find(|p| api.is_some() && !listed.contains_key(*p))
    {
        return Err(usage(format!(
            "the stream does not list shard {unknown:?} (its shards: {})",
            listed.keys().cloned().collect::<Vec<_>>().join(", ")
        )));
    }
    if partitions.is_empty() {
        println!("mapping {}: no partitions to move", mapping.name);
        return Ok(());
    }
    // Plan every partition before writing anything.
    let mut planned = Vec::new();
    let mut from_start_at: Option<i64> = None;
    for p in &partitions {
        let parents = listed.get(p).map(|s| s.parents.clone()).unwrap_or_default();
        let (change, note, oldest_from) = match (&target, &api) {
            (Target::Clear, _) => (Change::Clear, None, None),
            (Target::Sequence(seq), Some((api, _))) => {
                // The stream must take it: a typo or another shard's number is refused here.
                api.get_iterator(p, IteratorStart::After(seq))
                    .await
                    .map_err(|e| {
                        Failed(
                            format!("{p}: the stream refuses sequence number {}: {e}", seq.0),
                            EXIT_FAILED,
                        )
                    })?;
                (Change::To(Checkpoint::Sequence(seq.clone())), None, None)
            }
            (Target::Before(ms), Some((api, by_ts))) => {
                match last_before(api.as_ref(), p, *ms, *by_ts)
                    .await
                    .map_err(|e| Failed(format!("{p}: {e}"), EXIT_FAILED))?
                {
                    Some(found) => (
                        Change::To(Checkpoint::Sequence(found.sequence)),
                        Some(format!(
                            "its last record before {} arrived {}",
                            show_ms(*ms),
                            show_ms(found.arrival_ms)
                        )),
                        None,
                    ),
                    None => (
                        Change::Clear,
                        Some(format!(
                            "no record before {}: from its oldest",
                            show_ms(*ms)
                        )),
                        Some(*ms),
                    ),
                }
            }
            (Target::Oldest, Some(_)) => (
                Change::Clear,
                Some("from its oldest record".into()),
                Some(0),
            ),
            _ => unreachable!("a stream target has the stream's calls"),
        };
        if let Some(ms) = oldest_from {
            from_start_at = Some(from_start_at.map_or(ms, |m| m.min(ms)));
        }
        planned.push(Planned {
            partition: p.clone(),
            change,
            parents,
            note,
        });
    }
    // A cleared shard must start at its oldest record: check the mapping's start allows it.
    let mut new_start = None;
    if let (Some(since), Some((api, by_ts))) = (from_start_at, &api) {
        let cleared: Vec<&str> = planned
            .iter()
            .filter(|p| p.change == Change::Clear)
            .map(|p| p.partition.as_str())
            .collect();
        new_start = from_start(
            &store,
            &mapping,
            start,
            since,
            api.as_ref(),
            *by_ts,
            &cleared,
        )
        .await?;
    }
    let live = if how.force {
        Vec::new()
    } else {
        store.live(&mapping.name, &partitions).await?
    };
    if !live.is_empty() {
        let held: Vec<String> = live
            .iter()
            .map(|(p, o)| format!("{p} (held by {o})"))
            .collect();
        return Err(Failed(
            format!(
                "refused: live workers hold these leases: {}; stop the mapping's replicas first (or give --force: the holder is fenced and the shard re-read from the new checkpoint)",
                held.join(", ")
            ),
            EXIT_FAILED,
        ));
    }
    println!(
        "mapping {} ({}){}",
        mapping.name,
        store.describe(&cfg),
        if how.dry_run {
            " — dry run, nothing written"
        } else {
            ""
        }
    );
    if let Some(ms) = new_start {
        println!(
            "  first start: moved back to {} (LATEST: every shard without a checkpoint reads from it)",
            show_ms(ms)
        );
        if !how.dry_run {
            store.put_mapping_start(&mapping.name, ms).await?;
        }
    }
    for p in &planned {
        let (old, new) = if how.dry_run {
            let new = match &p.change {
                Change::To(cp) => cp.to_string(),
                Change::Clear if store.is_lease_table() => {
                    store::sentinel(start).as_str().to_string()
                }
                Change::Clear => "-".into(),
            };
            (store.shown(&mapping.name, &p.partition).await?, new)
        } else {
            store
                .apply(&mapping.name, &p.partition, &p.change, start, &p.parents)
                .await
                .map_err(|e| Failed(format!("{}: {e}", p.partition), EXIT_FAILED))?
        };
        let note = p
            .note
            .as_ref()
            .map_or_else(String::new, |n| format!("  ({n})"));
        println!("  {}: {old} → {new}{note}", p.partition);
    }
    Ok(())
}

/// Checks that shards without a checkpoint start at or before `since` (epoch ms), so that a
/// cleared shard is read from its oldest record. TRIM_HORIZON: always. AT_TIMESTAMP(T0): when
/// T0 ≤ `since`, or the cleared shards hold no record before T0; else refused. LATEST reads such
/// shards from the mapping's recorded first start S: fine when S ≤ `since` or the cleared shards
/// hold nothing before S; else S must move back to `since` (returned), which makes every other
/// checkpoint-less shard of the mapping read from `since` too.
async fn from_start(
    store: &Store,
    mapping: &Mapping,
    start: StartingPosition,
    since: i64,
    api: &dyn ShardApi,
    by_ts: bool,
    cleared: &[&str],
) -> Result<Option<i64>, Failed> {
    let begins = match start {
        StartingPosition::TrimHorizon => return Ok(None),
        StartingPosition::AtTimestamp(t) => t
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
        StartingPosition::Latest => match store.mapping_start(&mapping.name).await? {
            Some(s) => s,
            // Never started: it would record "now" on its first start.
            None => now_ms(),
        },
    };
    if begins <= since {
        return Ok(None);
    }
    let mut skipped = Vec::new();
    for shard in cleared {
        if last_before(api, shard, begins, by_ts)
            .await
            .map_err(|e| Failed(format!("{shard}: {e}"), EXIT_FAILED))?
            .is_some()
        {
            skipped.push(*shard);
        }
    }
    if skipped.is_empty() {
        return Ok(None);
    }
    match start {
        StartingPosition::Latest => Ok(Some(since.max(1_000))),
        _ => Err(Failed(
            format!(
                "refused: {} would start at the mapping's StartingPositionTimestamp {} and skip records before it; replay them with --sequence per shard, or change StartingPositionTimestamp",
                skipped.join(", "),
                show_ms(begins)
            ),
            EXIT_FAILED,
        )),
    }
}
