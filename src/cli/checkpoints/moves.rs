//! A move of one mapping's checkpoints in an already-open [`Store`], shared by the offline command
//! (`sluice checkpoints set|reset` with the mapping stopped) and the running instance
//! (`POST /checkpoints/<mapping>`, see [`super::live`]). [`prepare`] reads the stream and plans
//! every partition without writing; [`refuse_live`] refuses leases a live worker holds;
//! [`commit`] writes the plan (or, for a dry run, shows it) and returns the [`Report`]: old → new
//! per partition. The running instance stops the mapping between [`prepare`] and [`refuse_live`].

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

use super::position::{last_before, now_ms, show_ms};
use super::store::{self, Change, Store};
use crate::checkpoint::Checkpoint;
use crate::cli::{EXIT_FAILED, EXIT_USAGE};
use crate::config::{Config, Mapping, MappingSource, StartingPosition};
use crate::model::{Partition, SequenceNumber};
use crate::source::shards::{IteratorStart, ShardApi};

/// Where a move puts each selected partition.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
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

/// A move asked for: where to (`None`: the plain reset), which partitions (empty: all), whether
/// live holders are fenced, whether anything is written.
#[derive(Debug, Clone, PartialEq)]
pub struct Move {
    pub target: Option<Target>,
    pub partitions: Vec<String>,
    pub force: bool,
    pub dry_run: bool,
}

/// A failure: the message, and the exit code ([`EXIT_USAGE`]: bad arguments; else
/// [`EXIT_FAILED`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Failed(pub String, pub u8);

impl From<String> for Failed {
    fn from(e: String) -> Self {
        Failed(e, EXIT_FAILED)
    }
}

pub fn usage(e: impl Into<String>) -> Failed {
    Failed(e.into(), EXIT_USAGE)
}

/// One partition moved (or, in a dry run, to be moved).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Moved {
    pub partition: String,
    pub old: String,
    pub new: String,
    /// Why, when it is not plain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What a move did: the answer of `POST /checkpoints/<mapping>`, printed by the CLI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub mapping: String,
    /// Where the checkpoints are (`checkpoint_dir …`, `lease table …`).
    pub store: String,
    pub dry_run: bool,
    /// The mapping's first start, moved back to this instant (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_start: Option<String>,
    pub changes: Vec<Moved>,
    /// How the running instance went about it (stopped and restarted the mapping), if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

impl Report {
    /// As the CLI prints it.
    pub fn text(&self) -> String {
        let mut out = format!(
            "mapping {} ({}){}\n",
            self.mapping,
            self.store,
            if self.dry_run {
                " — dry run, nothing written"
            } else {
                ""
            }
        );
        if self.changes.is_empty() {
            out = format!("mapping {}: no partitions to move\n", self.mapping);
        }
        if let Some(at) = &self.first_start {
            out.push_str(&format!(
                "  first start: moved back to {at} (LATEST: every shard without a checkpoint reads from it)\n"
            ));
        }
        for c in &self.changes {
            let note = c
                .note
                .as_ref()
                .map_or_else(String::new, |n| format!("  ({n})"));
            out.push_str(&format!("  {}: {} → {}{note}\n", c.partition, c.old, c.new));
        }
        if let Some(how) = &self.instance {
            out.push_str(&format!("  {how}\n"));
        }
        out
    }
}

/// The mapping named `name` in `cfg` (`source`: where `cfg` came from, for the message), refusing
/// the kinds that have no checkpoints here. Unknown: [`EXIT_USAGE`], naming the mappings there are.
pub fn find_mapping(cfg: &Config, name: &str, source: &str) -> Result<Mapping, Failed> {
    let Some(mapping) = cfg.mappings.iter().find(|m| m.name == name).cloned() else {
        let names: Vec<&str> = cfg.mappings.iter().map(|m| m.name.as_str()).collect();
        return Err(usage(format!(
            "no mapping named {name:?} in {source}; its mappings are: {}",
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
        _ => Ok(mapping),
    }
}

/// The stream's calls, for the mapping's source, and whether it takes AT_TIMESTAMP iterators.
async fn shard_api(cfg: &Config, mapping: &Mapping) -> Result<(Arc<dyn ShardApi>, bool), Failed> {
    let clients = crate::aws::clients(cfg).await.for_arn(mapping.source_arn());
    match &mapping.source {
        MappingSource::Kinesis(s) => {
            let ctx = crate::source::kinesis::EventContext::new(
                &s.stream.arn,
                &s.stream.region,
                &cfg.invoke_identity_arn,
            );
            let source = crate::source::kinesis::KinesisSource::new(&clients, ctx)
                .map_err(|e| Failed(e, EXIT_FAILED))?;
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
    note: Option<String>,
}

/// A move planned by [`prepare`], not written yet.
pub struct Prepared {
    mapping: String,
    store: String,
    start: StartingPosition,
    /// Every partition the move touches.
    pub partitions: Vec<String>,
    planned: Vec<Planned>,
    new_start: Option<i64>,
}

/// Plans `how` for `mapping` in `store`, reading the stream (no writes).
pub async fn prepare(
    cfg: &Config,
    mapping: &Mapping,
    store: &Store,
    how: &Move,
) -> Result<Prepared, Failed> {
    let start = mapping
        .starting_position()
        .ok_or_else(|| Failed("the mapping has no StartingPosition".into(), EXIT_FAILED))?;
    // The plain reset: where a new mapping starts now.
    let target = how.target.clone().unwrap_or(match start {
        StartingPosition::Latest => Target::Before(now_ms()),
        _ => Target::Clear,
    });
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
        Some(shard_api(cfg, mapping).await?)
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
    let partitions: Vec<String> = if !how.partitions.is_empty() {
        how.partitions.clone()
    } else if api.is_some() {
        listed.keys().cloned().collect()
    } else {
        stored
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
            _ => {
                return Err(Failed(
                    "a stream target without the stream".into(),
                    EXIT_FAILED,
                ))
            }
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
        new_start =
            from_start(store, mapping, start, since, api.as_ref(), *by_ts, &cleared).await?;
    }
    Ok(Prepared {
        mapping: mapping.name.clone(),
        store: store.describe(cfg),
        start,
        partitions,
        planned,
        new_start,
    })
}

/// Refuses the move when live workers hold leases of `partitions` (lease table only), other than
/// `except` (this replica, which stops the mapping itself).
pub async fn refuse_live(
    store: &Store,
    mapping: &str,
    partitions: &[String],
    except: Option<&str>,
) -> Result<(), Failed> {
    let live = store.live(mapping, partitions, except).await?;
    if live.is_empty() {
        return Ok(());
    }
    let held: Vec<String> = live
        .iter()
        .map(|(p, o)| format!("{p} (held by {o})"))
        .collect();
    Err(Failed(
        format!(
            "refused: live workers hold these leases: {}; stop the mapping's replicas first (or give --force: the holder is fenced and the shard re-read from the new checkpoint)",
            held.join(", ")
        ),
        EXIT_FAILED,
    ))
}

/// Writes `plan` to `store` (a dry run: reads what is there and writes nothing).
pub async fn commit(plan: Prepared, store: &Store, dry_run: bool) -> Result<Report, Failed> {
    let mapping = &plan.mapping;
    if let Some(ms) = plan.new_start {
        if !dry_run {
            store.put_mapping_start(mapping, ms).await?;
        }
    }
    let mut changes = Vec::new();
    for p in &plan.planned {
        let (old, new) = if dry_run {
            let new = match &p.change {
                Change::To(cp) => cp.to_string(),
                Change::Clear if store.is_lease_table() => {
                    store::sentinel(plan.start).as_str().to_string()
                }
                Change::Clear => "-".into(),
            };
            (store.shown(mapping, &p.partition).await?, new)
        } else {
            store
                .apply(mapping, &p.partition, &p.change, plan.start, &p.parents)
                .await
                .map_err(|e| Failed(format!("{}: {e}", p.partition), EXIT_FAILED))?
        };
        changes.push(Moved {
            partition: p.partition.clone(),
            old,
            new,
            note: p.note.clone(),
        });
    }
    Ok(Report {
        mapping: mapping.clone(),
        store: plan.store,
        dry_run,
        first_start: plan.new_start.map(show_ms),
        changes,
        instance: None,
    })
}

/// The whole move with the mapping stopped: [`prepare`], [`refuse_live`] (unless `force`),
/// [`commit`].
pub async fn run(
    cfg: &Config,
    mapping: &Mapping,
    store: &Store,
    how: &Move,
) -> Result<Report, Failed> {
    let plan = prepare(cfg, mapping, store, how).await?;
    if !how.force {
        refuse_live(store, &mapping.name, &plan.partitions, None).await?;
    }
    commit(plan, store, how.dry_run).await
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        crate::config::parse_str("region: us-east-1\nmappings:\n  - Name: k\n    EventSourceArn: arn:aws:kinesis:us-east-1:000000000000:stream/s\n    StartingPosition: LATEST\n    FunctionName: f\n  - Name: q\n    EventSourceArn: arn:aws:sqs:us-east-1:000000000000:q\n    FunctionName: f\n").expect("valid")
    }

    #[test]
    fn mappings_are_found_by_name_and_queues_refused() {
        let cfg = cfg();
        assert_eq!(find_mapping(&cfg, "k", "c.yaml").unwrap().name, "k");
        let e = find_mapping(&cfg, "x", "c.yaml").unwrap_err();
        assert_eq!(e.1, EXIT_USAGE);
        assert!(
            e.0.contains("\"x\" in c.yaml") && e.0.contains("k, q"),
            "{}",
            e.0
        );
        let e = find_mapping(&cfg, "q", "c.yaml").unwrap_err();
        assert_eq!(e.1, EXIT_FAILED);
        assert!(e.0.contains("SQS mapping"), "{}", e.0);
    }

    #[test]
    fn a_report_prints_old_to_new_with_notes() {
        let mut r = Report {
            mapping: "k".into(),
            store: "checkpoint_dir /d".into(),
            dry_run: true,
            first_start: Some("2026-11-27T10:00:00Z".into()),
            changes: vec![Moved {
                partition: "shardId-0".into(),
                old: "9".into(),
                new: "5".into(),
                note: Some("why".into()),
            }],
            instance: Some("dry run: the mapping was not stopped".into()),
        };
        assert_eq!(
            r.text(),
            "mapping k (checkpoint_dir /d) — dry run, nothing written\n  first start: moved back to 2026-11-27T10:00:00Z (LATEST: every shard without a checkpoint reads from it)\n  shardId-0: 9 → 5  (why)\n  dry run: the mapping was not stopped\n"
        );
        r.changes.clear();
        r.first_start = None;
        r.instance = None;
        assert_eq!(r.text(), "mapping k: no partitions to move\n");
        let json = serde_json::to_string(&r).unwrap();
        assert!(
            !json.contains("first_start") && !json.contains("instance"),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), r);
    }
}
