//! Several sluice processes sharing one Kinesis stream through a DynamoDB lease table (moto): a
//! [`Fleet`] starts, stops and kills replicas (each with its own worker id, admin port, config and
//! log, and an `X-Run` header naming it on every request it sends the [`Sink`]), reads their
//! `/status` to tell who owns which shard, and keeps their logs when a test fails. A [`Writer`]
//! puts records in the background with explicit hash keys, so every shard gets its share of the
//! partition keys on every put. The checks shared by the tests read the sink's arrival order: order
//! per partition key (a parent's records before its children's), nothing lost, and the largest
//! idle gap per shard.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod checks;
mod stall;
mod waits;
mod writer;

#[allow(unused_imports)]
pub use checks::*;
#[allow(unused_imports)]
pub use stall::StallProxy;
#[allow(unused_imports)]
pub use waits::*;
pub use writer::*;

use super::proxy::Proxy;
use super::sink::Sink;
use super::sluice::{coordinated_config, free_port, Coordination, Sluice};
use super::{create_stream, kinesis, unique, wait_for, TestBed, Written};

/// How many fleets run at once in a test binary (`SLUICE_TEST_FLEETS`, default 2): each is three
/// sluice processes with their reads, renewals and scans, and the tests measure takeover times and
/// silences of a few seconds, which a loaded 2-core machine stretches (a moto answer slower than a
/// renewal's 1 s timeout alone loses leases). A test that measures silences of a second or two
/// takes every slot ([`Fleet::alone`]).
fn fleet_slots() -> (Arc<tokio::sync::Semaphore>, u32) {
    static SLOTS: std::sync::OnceLock<(Arc<tokio::sync::Semaphore>, u32)> =
        std::sync::OnceLock::new();
    SLOTS
        .get_or_init(|| {
            let n = std::env::var("SLUICE_TEST_FLEETS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(2u32)
                .max(1);
            (Arc::new(tokio::sync::Semaphore::new(n as usize)), n)
        })
        .clone()
}

/// The mapping every replica runs.
pub const MAPPING: &str = "fleet";
/// `coordination.lease_duration_seconds` of every replica.
pub const LEASE_SECONDS: u64 = 3;
/// `coordination.lease_scan_interval_millis` of every replica.
pub const SCAN_MILLIS: u64 = 250;

/// How a replica reaches the lease table.
pub enum Link {
    /// moto directly.
    Direct,
    /// Through a [`Proxy`] the test can cut.
    Proxy,
    /// Through a [`StallProxy`] the test can make slow.
    Stall,
}

/// One sluice process of the fleet.
pub struct Replica {
    pub id: String,
    pub sluice: Sluice,
    /// The proxy in front of moto this replica's lease-table calls go through, if any.
    pub proxy: Option<Proxy>,
    /// The slowing proxy in front of moto this replica's lease-table calls go through, if any.
    pub stall: Option<StallProxy>,
}

/// A stream, a lease table, a sink, and the replicas sharing them (see the module docs).
pub struct Fleet {
    pub tb: TestBed,
    pub kinesis: aws_sdk_kinesis::Client,
    pub stream: String,
    pub arn: String,
    pub table: String,
    pub sink: Sink,
    /// `shard_discovery_interval_seconds: 1` in every replica's config.
    pub fast_discovery: bool,
    pub batch_size: usize,
    /// Running replicas.
    pub replicas: BTreeMap<String, Replica>,
    /// Stopped or killed replicas, kept for their logs.
    pub gone: Vec<Replica>,
    dir: tempfile::TempDir,
    /// One of the [`fleet_slots`], held while the fleet lives.
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl Fleet {
    /// A new stream of `shards` shards and a fresh lease table name, both starting with `prefix`.
    pub async fn new(prefix: &str, shards: i32, sink: Sink) -> Fleet {
        Fleet::with_slots(prefix, shards, sink, 1).await
    }

    /// As [`Fleet::new`], but with no other fleet of this test binary running beside it: for
    /// assertions on silences short enough that another fleet's load on two cores (three more
    /// processes, and moto and kinesis-local answering them) would stretch them. Waiting fleets
    /// queue behind it (the semaphore is fair).
    pub async fn alone(prefix: &str, shards: i32, sink: Sink) -> Fleet {
        let (_, all) = fleet_slots();
        Fleet::with_slots(prefix, shards, sink, all).await
    }

    async fn with_slots(prefix: &str, shards: i32, sink: Sink, permits: u32) -> Fleet {
        let slot = fleet_slots()
            .0
            .acquire_many_owned(permits)
            .await
            .expect("fleet slots");
        let tb = super::testbed();
        let kinesis = kinesis(&tb).await;
        let stream = unique(prefix);
        let arn = create_stream(&kinesis, &stream, shards).await;
        Fleet {
            table: format!("{stream}-leases"),
            tb,
            kinesis,
            stream,
            arn,
            sink,
            fast_discovery: false,
            batch_size: 100,
            replicas: BTreeMap::new(),
            gone: Vec::new(),
            dir: tempfile::tempdir().unwrap(),
            _slot: slot,
        }
    }

    /// A new stream of `shards` shards with replicas `replica-a`, `-b` and `-c` on it, all ready.
    pub async fn three(prefix: &str, shards: i32, sink: Sink) -> Fleet {
        let mut fleet = Fleet::new(prefix, shards, sink).await;
        fleet.start_three(Link::Direct).await;
        fleet
    }

    /// Starts replicas `replica-a` (its lease-table calls going through `first`), `-b` and `-c`
    /// (on moto directly), in that order, and waits until all are ready.
    pub async fn start_three(&mut self, first: Link) {
        match first {
            Link::Direct => self.start("replica-a").await,
            Link::Proxy => self.start_behind_proxy("replica-a").await,
            Link::Stall => self.start_behind_stall("replica-a").await,
        }
        self.start("replica-b").await;
        self.start("replica-c").await;
        self.wait_ready().await;
    }

    /// A background [`Writer`] on the stream as the tests use it: 16 records every 50 ms over 32
    /// partition keys, data `"<tag>-<i>"`.
    pub fn writer(&self, tag: &str) -> Writer {
        Writer::start(
            &self.kinesis,
            &self.stream,
            tag,
            32,
            16,
            Duration::from_millis(50),
        )
    }

    /// Waits (60 s) until the shards are spread, starts a [`Fleet::writer`] with `tag`, and waits
    /// until every shard got a request. Returns `shard → owner`, the shards and the writer.
    pub async fn spread_and_flowing(
        &self,
        tag: &str,
    ) -> (BTreeMap<String, String>, Vec<String>, Writer) {
        let owners = self.wait_spread(Duration::from_secs(60)).await;
        let shards: Vec<String> = owners.keys().cloned().collect();
        let writer = self.writer(tag);
        wait_flowing(self, &shards, Instant::now()).await;
        (owners, shards, writer)
    }

    /// Stops `writer` and waits (up to `timeout`) until everything it wrote was delivered; returns
    /// what it wrote.
    pub async fn stop_and_deliver(&self, writer: Writer, timeout: Duration) -> Vec<Written> {
        let written = writer.stop().await;
        self.wait_delivered(&written, timeout).await;
        written
    }

    /// Waits until every one of `shards` got a request at or after `since`, then stops `writer` and
    /// waits (up to `timeout`) until everything it wrote was delivered; returns what it wrote.
    pub async fn flow_and_deliver(
        &self,
        shards: &[String],
        since: Instant,
        writer: Writer,
        timeout: Duration,
    ) -> Vec<Written> {
        wait_flowing(self, shards, since).await;
        self.stop_and_deliver(writer, timeout).await
    }

    /// Asserts every running replica is ready; `who` says when and which (for the message).
    pub async fn assert_ready(&self, who: &str) {
        let not_ready = self.not_ready().await;
        assert!(not_ready.is_empty(), "{who} not ready: {not_ready:#?}");
    }

    /// Starts replica `id` on moto directly.
    pub async fn start(&mut self, id: &str) {
        let moto = self.tb.moto.clone();
        self.start_on(id, &moto, None, None).await
    }

    /// Starts replica `id` with its lease-table calls going through a proxy in front of moto.
    pub async fn start_behind_proxy(&mut self, id: &str) {
        let proxy = Proxy::start(&self.tb.moto).await;
        let url = proxy.url.clone();
        self.start_on(id, &url, Some(proxy), None).await
    }

    /// Starts replica `id` with its lease-table calls going through a proxy that can make moto
    /// slow ([`StallProxy`]).
    pub async fn start_behind_stall(&mut self, id: &str) {
        let stall = StallProxy::start(&self.tb.moto).await;
        let url = stall.url.clone();
        self.start_on(id, &url, None, Some(stall)).await
    }

    async fn start_on(
        &mut self,
        id: &str,
        dynamodb: &str,
        proxy: Option<Proxy>,
        stall: Option<StallProxy>,
    ) {
        let mapping = format!(
            "  - Name: {MAPPING}\n    EventSourceArn: {}\n    StartingPosition: TRIM_HORIZON\n    BatchSize: {}\n    Http:\n      Url: {}\n      Headers: {{ X-Run: \"{id}\" }}\n",
            self.arn, self.batch_size, self.sink.url
        );
        let mut cfg = coordinated_config(
            &self.tb,
            &self.dir.path().join(format!("{id}-cp")),
            free_port(),
            &Coordination {
                dynamodb,
                lease_table: &self.table,
                worker_id: id,
                lease_duration_seconds: LEASE_SECONDS,
                lease_scan_interval_millis: SCAN_MILLIS,
            },
            &mapping,
        );
        if self.fast_discovery {
            cfg = cfg.replacen(
                "\nmappings:\n",
                "\nshard_discovery_interval_seconds: 1\nmappings:\n",
                1,
            );
        }
        let sluice = Sluice::start(self.dir.path(), id, &cfg).await;
        self.replicas.insert(
            id.to_string(),
            Replica {
                id: id.to_string(),
                sluice,
                proxy,
                stall,
            },
        );
    }

    pub fn replica(&self, id: &str) -> &Replica {
        self.replicas
            .get(id)
            .unwrap_or_else(|| panic!("no running replica {id}"))
    }

    pub fn ids(&self) -> Vec<String> {
        self.replicas.keys().cloned().collect()
    }

    /// Waits until every running replica answers `/readyz`.
    pub async fn wait_ready(&self) {
        for r in self.replicas.values() {
            r.sluice.wait_ready().await;
        }
    }

    /// kill -9 of `id`; returns the instant of the kill.
    pub async fn kill9(&mut self, id: &str) -> Instant {
        let mut r = self.replicas.remove(id).expect("running replica");
        let at = Instant::now();
        r.sluice.kill9().await;
        self.gone.push(r);
        at
    }

    /// SIGTERM to `id`, then its exit code once it exited.
    pub async fn terminate(&mut self, id: &str) -> i32 {
        let mut r = self.replicas.remove(id).expect("running replica");
        let code = r.sluice.terminate().await;
        self.gone.push(r);
        code
    }

    /// Every shard of the stream (one ListShards page).
    async fn shards(&self) -> Vec<aws_sdk_kinesis::types::Shard> {
        self.kinesis
            .list_shards()
            .stream_name(&self.stream)
            .send()
            .await
            .expect("ListShards")
            .shards()
            .to_vec()
    }

    /// The open shards of the stream.
    pub async fn open_shards(&self) -> Vec<String> {
        self.shards()
            .await
            .iter()
            .filter(|s| {
                s.sequence_number_range()
                    .is_some_and(|r| r.ending_sequence_number().is_none())
            })
            .map(|s| s.shard_id().to_string())
            .collect()
    }

    /// Every shard of the stream (open and closed) with its parents.
    pub async fn lineage(&self) -> BTreeMap<String, Vec<String>> {
        self.shards()
            .await
            .iter()
            .map(|s| {
                let parents = [s.parent_shard_id(), s.adjacent_parent_shard_id()]
                    .into_iter()
                    .flatten()
                    .map(str::to_string)
                    .collect();
                (s.shard_id().to_string(), parents)
            })
            .collect()
    }

    /// Who runs which of `shards` now, by the running replicas' `/status`: `shard → owner` when
    /// each shard runs on exactly one replica, with the owner its lease names in every replica's
    /// view of the table. `None` otherwise (or while a replica does not answer).
    pub async fn owners(&self, shards: &[String]) -> Option<BTreeMap<String, String>> {
        let mut running: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut views = Vec::new();
        for (id, r) in &self.replicas {
            let status = r.sluice.status().await?;
            if status["worker_id"] != id.as_str() {
                return None;
            }
            if let Some(rows) = status["mappings"][MAPPING].as_object() {
                for (shard, row) in rows {
                    if row["owner"] == id.as_str() && row["state"] != "ended" {
                        running.entry(shard.clone()).or_default().push(id.clone());
                    }
                }
            }
            views.push(status["leases"][MAPPING].clone());
        }
        let mut owners = BTreeMap::new();
        for shard in shards {
            let [owner] = running.get(shard)?.as_slice() else {
                return None;
            };
            if views.iter().any(|v| v[shard]["owner"] != owner.as_str()) {
                return None;
            }
            owners.insert(shard.clone(), owner.clone());
        }
        Some(owners)
    }

    /// `replica → shards it runs`, every running replica listed (possibly with none).
    pub fn by_owner(&self, owners: &BTreeMap<String, String>) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> =
            self.ids().into_iter().map(|id| (id, Vec::new())).collect();
        for (shard, owner) in owners {
            out.entry(owner.clone()).or_default().push(shard.clone());
        }
        out
    }

    /// Waits (up to `timeout`) until the open shards are spread over the running replicas: each
    /// shard runs on exactly one, the counts differ by at most one, and that has held unchanged for
    /// one second. Returns `shard → owner`.
    pub async fn wait_spread(&self, timeout: Duration) -> BTreeMap<String, String> {
        let shards = self.open_shards().await;
        let deadline = Instant::now() + timeout;
        let mut stable: Option<(BTreeMap<String, String>, Instant)> = None;
        let mut last_seen = None;
        loop {
            let now = self.owners(&shards).await.filter(|owners| {
                let counts: Vec<usize> = self.by_owner(owners).values().map(Vec::len).collect();
                counts.iter().max().unwrap_or(&0) - counts.iter().min().unwrap_or(&0) <= 1
            });
            match (&now, &stable) {
                (Some(o), Some((s, since))) if o == s => {
                    if since.elapsed() >= Duration::from_secs(1) {
                        return o.clone();
                    }
                }
                (Some(o), _) => stable = Some((o.clone(), Instant::now())),
                (None, _) => stable = None,
            }
            if now.is_none() {
                last_seen = Some(self.status_summary().await);
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {} shards spread ±1 over {:?}; last: {}\n{}",
                    shards.len(),
                    self.ids(),
                    last_seen.unwrap_or_default(),
                    self.log_tails(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The running replicas whose `/readyz` does not answer 200, with its answer and the rows of
    /// their `/status` that are not running normally (`failed`).
    pub async fn not_ready(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (id, r) in &self.replicas {
            let ready = r.sluice.get("/readyz").await;
            if matches!(ready, Some((200, _))) {
                continue;
            }
            let failed: Vec<String> = match r.sluice.status().await {
                Some(s) => s["mappings"][MAPPING]
                    .as_object()
                    .map(|rows| {
                        rows.iter()
                            .filter(|(_, v)| v["state"] == "failed")
                            .map(|(k, v)| format!("{k}: {v}"))
                            .collect()
                    })
                    .unwrap_or_default(),
                None => vec![],
            };
            out.push(format!("{id}: /readyz {ready:?}; failed rows {failed:?}"));
        }
        out
    }

    /// One line per running replica: the shards it runs and its view of the lease table.
    pub async fn status_summary(&self) -> String {
        let mut out = String::new();
        for (id, r) in &self.replicas {
            match r.sluice.status().await {
                Some(s) => {
                    let running: Vec<String> = s["mappings"][MAPPING]
                        .as_object()
                        .map(|rows| {
                            rows.iter()
                                .map(|(k, v)| format!("{k}:{}:{}", v["owner"], v["state"]))
                                .collect()
                        })
                        .unwrap_or_default();
                    let leases: Vec<String> = s["leases"][MAPPING]
                        .as_object()
                        .map(|rows| {
                            rows.iter()
                                .map(|(k, v)| format!("{k}:{}#{}", v["owner"], v["counter"]))
                                .collect()
                        })
                        .unwrap_or_default();
                    out += &format!("\n  {id}: running {running:?}; table {leases:?}");
                }
                None => out += &format!("\n  {id}: no /status"),
            }
        }
        out
    }

    /// The last `n` lines of every replica's log, running or gone.
    pub fn log_tails(&self, n: usize) -> String {
        let mut out = String::new();
        for r in self.replicas.values().chain(self.gone.iter()) {
            let text = r.sluice.log_text();
            let lines: Vec<&str> = text.lines().collect();
            out += &format!("---- {} (last {n} lines) ----\n", r.id);
            for l in &lines[lines.len().saturating_sub(n)..] {
                out += l;
                out.push('\n');
            }
        }
        out
    }

    /// The lines of every replica's log (running or gone) containing `needle`, colours stripped,
    /// each prefixed by the replica.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        let mut out = Vec::new();
        for r in self.replicas.values().chain(self.gone.iter()) {
            for line in r.sluice.log_text().lines().filter(|l| l.contains(needle)) {
                let mut plain = String::with_capacity(line.len());
                let mut chars = line.chars();
                while let Some(c) = chars.next() {
                    if c == '\u{1b}' {
                        for c in chars.by_ref() {
                            if c == 'm' {
                                break;
                            }
                        }
                    } else {
                        plain.push(c);
                    }
                }
                out.push(format!("{}: {plain}", r.id));
            }
        }
        out.sort_by(|a, b| {
            let at = |s: &str| s.split_once(": ").map(|(_, l)| l.to_string());
            at(a).cmp(&at(b))
        });
        out
    }

    /// Every take, steal, release and loss of a lease in the replicas' logs, in time order.
    pub fn lease_moves(&self) -> Vec<String> {
        let mut moves: Vec<String> = [
            "lease stolen",
            "lease taken",
            "lease released",
            "lease lost:",
        ]
        .iter()
        .flat_map(|n| self.log_lines(n))
        .map(|l| l.chars().take(260).collect())
        .collect();
        moves.sort_by_key(|l: &String| l.split_once(": ").map(|(_, rest)| rest.to_string()));
        moves
    }

    /// Waits until every record of `written` was delivered (accepted) at least once.
    pub async fn wait_delivered(&self, written: &[Written], timeout: Duration) {
        let want: BTreeSet<(String, String)> = written.iter().map(key).collect();
        let deadline = Instant::now() + timeout;
        loop {
            let got: BTreeSet<(String, String)> = self.sink.delivered().iter().map(key).collect();
            let missing = want.difference(&got).count();
            if missing == 0 {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?}: {missing} of {} records not delivered; status:{}\n{}",
                    want.len(),
                    self.status_summary().await,
                    self.log_tails(60)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn delete_stream(&self) {
        let _ = self
            .kinesis
            .delete_stream()
            .stream_name(&self.stream)
            .enforce_consumer_deletion(true)
            .send()
            .await;
    }
}

impl Drop for Fleet {
    /// A failed test keeps every replica's config and log under the temp dir for the report.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let keep = std::env::temp_dir().join(format!("sluice-fleet-{}", self.stream));
            let _ = std::fs::create_dir_all(&keep);
            if let Ok(entries) = std::fs::read_dir(self.dir.path()) {
                for e in entries.flatten() {
                    if e.path().is_file() {
                        let _ = std::fs::copy(e.path(), keep.join(e.file_name()));
                    }
                }
            }
            eprintln!("replica configs and logs kept in {}", keep.display());
        }
    }
}
