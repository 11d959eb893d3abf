//! A Kafka mapping's membership in its consumer group, seen through the engine's seams: the
//! partitions the group assigned to this consumer are its leases ([`KafkaLeases`]), and the
//! group's committed offsets are its checkpoints ([`KafkaCheckpoints`]).
//!
//! The group protocol moves partitions; [`GroupContext`] follows it. On an assignment each
//! partition gets a fresh [`Lease`] and an empty buffer, and the supervisor is woken. On a
//! revocation the partitions' leases are lost at once — their workers stop before their next
//! dispatch, an invocation in flight finishes but its batch is not committed — and the rebalance
//! waits (bounded) until those workers have stopped, so a partition is never dispatched by two
//! members at once. Commits are fenced locally: a checkpoint moves only while this consumer holds
//! the partition under the same assignment, since the broker accepts a commit for any partition
//! from any live member.
//!
//! A committed offset `X` is the next record to read: checkpoint `Sequence(X-1)` for `X > 0`; an
//! offset of 0 is "nothing done yet" (no checkpoint), and the reader starts there rather than at
//! the mapping's `StartingPosition` (AWS ignores StartingPosition once the group has offsets).

use async_trait::async_trait;
use rdkafka::consumer::{Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tracing::{info, warn};

use super::buffer::PartitionBuffer;
use super::consumer::KafkaConsumer;
use crate::checkpoint::{
    check, Checkpoint, CheckpointError, CheckpointStore, Commit, CommitError, Verdict,
};
use crate::lease::{Held, Lease, LeaseError, LeaseToken, Leases};
use crate::model::{Partition, SequenceNumber};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub use crate::model::kafka_partition_id as partition_id;

/// The partition number of an id of `topic`.
pub fn partition_number(topic: &str, id: &str) -> Option<i32> {
    id.strip_prefix(topic)?.strip_prefix('-')?.parse().ok()
}

/// One assigned partition.
pub(super) struct Assigned {
    pub state: watch::Sender<Option<Held>>,
    pub buffer: Arc<PartitionBuffer>,
}

/// What this consumer holds of the group now.
pub struct Group {
    pub topic: String,
    /// The owner written on this consumer's lease tokens.
    owner: String,
    assigned: Mutex<HashMap<i32, Assigned>>,
    /// The offsets this consumer committed (or read as committed), by partition.
    committed: Mutex<HashMap<i32, i64>>,
    /// Per partition, (offset, timestamp ms) of each record handed to its worker and not yet
    /// committed, in offset order: the oldest is the oldest record not yet processed.
    pending: Mutex<HashMap<i32, std::collections::VecDeque<(i64, i64)>>>,
    grants: AtomicU64,
    /// Wakes the supervisor: the assignment changed.
    pub changed: Notify,
    /// How long a revocation waits for its partitions' workers to stop.
    revoke_wait: Duration,
    /// Per-partition buffer limit in bytes.
    buffer_bytes: usize,
}

impl Group {
    pub fn new(topic: &str, group_id: &str, revoke_wait: Duration, buffer_bytes: usize) -> Self {
        Group {
            topic: topic.to_string(),
            owner: format!("kafka-group:{group_id}"),
            assigned: Mutex::new(HashMap::new()),
            committed: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            grants: AtomicU64::new(0),
            changed: Notify::new(),
            revoke_wait,
            buffer_bytes,
        }
    }

    /// The buffer of an assigned partition.
    pub(super) fn buffer(&self, partition: i32) -> Option<Arc<PartitionBuffer>> {
        lock(&self.assigned)
            .get(&partition)
            .map(|a| a.buffer.clone())
    }

    /// The partitions assigned now, in order.
    pub fn partitions(&self) -> Vec<i32> {
        let mut v: Vec<i32> = lock(&self.assigned).keys().copied().collect();
        v.sort_unstable();
        v
    }

    fn assign(&self, partitions: &[i32]) {
        let mut assigned = lock(&self.assigned);
        for &p in partitions {
            let counter = self.grants.fetch_add(1, Ordering::SeqCst) + 1;
            let held = Held::from(LeaseToken::new(self.owner.clone(), counter));
            assigned.insert(
                p,
                Assigned {
                    state: watch::Sender::new(Some(held)),
                    buffer: Arc::new(PartitionBuffer::new(self.buffer_bytes)),
                },
            );
        }
        drop(assigned);
        // Offsets are read again from the group: another member may have moved them.
        let mut committed = lock(&self.committed);
        for p in partitions {
            committed.remove(p);
        }
        drop(committed);
        let mut pending = lock(&self.pending);
        for p in partitions {
            pending.remove(p);
        }
        drop(pending);
        info!(topic = %self.topic, ?partitions, "partitions assigned");
        self.changed.notify_one();
    }

    /// Gives `partitions` up as the group asks: their leases end ([`Held::ending`]), so each
    /// worker finishes and commits its batch in flight and dispatches nothing more; once they have
    /// stopped (bounded by the revoke wait) the leases are lost and the partitions forgotten, and
    /// the group may hand them to another member, which resumes from those commits.
    fn revoke(&self, partitions: &[i32]) {
        let ending: Vec<i32> = {
            let assigned = lock(&self.assigned);
            partitions
                .iter()
                .filter(|p| {
                    assigned.get(p).is_some_and(|a| {
                        a.state.send_modify(|h| {
                            if let Some(h) = h {
                                h.ending = true;
                            }
                        });
                        true
                    })
                })
                .copied()
                .collect()
        };
        self.changed.notify_one();
        let busy = |ps: &[i32]| -> Vec<i32> {
            let assigned = lock(&self.assigned);
            ps.iter()
                .filter(|p| {
                    assigned
                        .get(p)
                        .is_some_and(|a| a.state.receiver_count() > 0)
                })
                .copied()
                .collect()
        };
        let deadline = std::time::Instant::now() + self.revoke_wait;
        // Called on the consumer's poll, outside any async context: a plain wait.
        loop {
            let still = busy(&ending);
            if still.is_empty() {
                break;
            }
            if std::time::Instant::now() >= deadline {
                warn!(topic = %self.topic, partitions = ?still, wait_s = self.revoke_wait.as_secs(), "revoked partitions still have a batch in flight; giving them up (their batch is not committed and will be delivered again)");
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let revoked: Vec<(i32, watch::Sender<Option<Held>>)> = {
            let mut assigned = lock(&self.assigned);
            ending
                .iter()
                .filter_map(|p| assigned.remove(p).map(|a| (*p, a.state)))
                .collect()
        };
        for (_, state) in &revoked {
            state.send_replace(None);
        }
        let mut committed = lock(&self.committed);
        for (p, _) in &revoked {
            committed.remove(p);
        }
        drop(committed);
        let mut pending = lock(&self.pending);
        for (p, _) in &revoked {
            pending.remove(p);
        }
        drop(pending);
        info!(topic = %self.topic, partitions = ?partitions, "partitions revoked");
    }

    /// Records of `partition` handed to its worker: (offset, timestamp ms) each.
    pub(super) fn handed_out(&self, partition: i32, records: impl IntoIterator<Item = (i64, i64)>) {
        lock(&self.pending)
            .entry(partition)
            .or_default()
            .extend(records);
    }

    /// Everything below `next` of `partition` is committed.
    fn done_below(&self, partition: i32, next: i64) {
        if let Some(q) = lock(&self.pending).get_mut(&partition) {
            while q.front().is_some_and(|(o, _)| *o < next) {
                q.pop_front();
            }
        }
    }

    /// The timestamp of the oldest record handed out or buffered and not yet committed.
    pub(super) fn oldest_unprocessed_ms(&self) -> Option<i64> {
        let handed = lock(&self.pending)
            .values()
            .filter_map(|q| q.front().map(|(_, t)| *t))
            .min();
        let buffered = lock(&self.assigned)
            .values()
            .filter_map(|a| a.buffer.first_timestamp())
            .min();
        handed.into_iter().chain(buffered).min()
    }

    /// The committed offset of `partition` as last known here.
    pub(super) fn known_committed(&self, partition: i32) -> Option<i64> {
        lock(&self.committed).get(&partition).copied()
    }

    /// The partition's live lease, if assigned.
    fn lease(&self, partition: i32) -> Option<Lease> {
        let assigned = lock(&self.assigned);
        // A partition being revoked gets no new worker.
        let a = assigned
            .get(&partition)
            .filter(|a| a.state.borrow().as_ref().is_some_and(|h| !h.ending))?;
        Some(Lease::new(
            partition_id(&self.topic, partition),
            a.state.subscribe(),
        ))
    }

    /// True while `token` is the current grant of `partition`.
    fn holds(&self, partition: i32, token: &LeaseToken) -> bool {
        lock(&self.assigned)
            .get(&partition)
            .and_then(|a| a.state.borrow().as_ref().map(|h| &h.token == token))
            .unwrap_or(false)
    }
}

/// Consumer errors, each distinct text at most once per quiet period, to the mapping's handler.
/// librdkafka repeats a broken connection's errors many times a second; an operator needs one line
/// naming the mapping, and the next if it is still broken.
pub struct ErrorReport {
    on_error: Box<dyn Fn(&str) + Send + Sync>,
    last: Mutex<HashMap<String, std::time::Instant>>,
    quiet: Duration,
}

impl ErrorReport {
    pub fn new(on_error: impl Fn(&str) + Send + Sync + 'static, quiet: Duration) -> Self {
        ErrorReport {
            on_error: Box::new(on_error),
            last: Mutex::new(HashMap::new()),
            quiet,
        }
    }

    pub fn report(&self, text: &str) {
        let now = std::time::Instant::now();
        let mut last = lock(&self.last);
        if last
            .get(text)
            .is_some_and(|at| now.duration_since(*at) < self.quiet)
        {
            return;
        }
        last.retain(|_, at| now.duration_since(*at) < self.quiet);
        last.insert(text.to_string(), now);
        drop(last);
        (self.on_error)(text);
    }
}

/// The consumer's context: follows rebalances into the [`Group`], and sends the client's errors
/// through the mapping's [`ErrorReport`] (its log lines go to debug).
pub struct GroupContext {
    pub group: Arc<Group>,
    pub errors: Arc<ErrorReport>,
    /// MSK IAM tokens.
    pub auth: super::iam::AuthContext,
}

impl ClientContext for GroupContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(
        &self,
        _config: Option<&str>,
    ) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        self.auth.oauth_token()
    }

    fn log(&self, _level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        tracing::debug!(topic = %self.group.topic, facility = fac, "librdkafka: {message}");
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.errors.report(&format!("{error}: {reason}"));
    }
}

fn ours(topic: &str, tpl: &TopicPartitionList) -> Vec<i32> {
    tpl.elements()
        .iter()
        .filter(|e| e.topic() == topic)
        .map(|e| e.partition())
        .collect()
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => self.group.revoke(&ours(&self.group.topic, tpl)),
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => warn!(topic = %self.group.topic, error = %e, "rebalance failed"),
        }
    }

    fn post_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            self.group.assign(&ours(&self.group.topic, tpl));
        }
    }
}

/// The assigned partitions as leases.
pub struct KafkaLeases {
    pub group: Arc<Group>,
}

#[async_trait]
impl Leases for KafkaLeases {
    async fn held(&self, _mapping: &str, listed: &[Partition]) -> Result<Vec<Lease>, LeaseError> {
        Ok(listed
            .iter()
            .filter_map(|p| partition_number(&self.group.topic, &p.id))
            .filter_map(|p| self.group.lease(p))
            .collect())
    }

    /// Nothing to do: the group moves a partition when this member leaves or a rebalance says so.
    async fn release(&self, _mapping: &str, _partition: &str) -> Result<(), LeaseError> {
        Ok(())
    }

    async fn changed(&self, _mapping: &str) {
        self.group.changed.notified().await
    }
}

/// The group's committed offsets as checkpoints.
pub struct KafkaCheckpoints {
    pub consumer: Arc<KafkaConsumer>,
    pub group: Arc<Group>,
}

/// How long a commit or an offset read may take.
const CALL: Duration = Duration::from_secs(10);

impl KafkaCheckpoints {
    fn number(&self, id: &str) -> Result<i32, CheckpointError> {
        partition_number(&self.group.topic, id).ok_or_else(|| {
            CheckpointError(format!("{id} is not a partition of {}", self.group.topic))
        })
    }

    /// The committed offset of `partition` (`None`: the group has none).
    pub(super) async fn committed(&self, partition: i32) -> Result<Option<i64>, CheckpointError> {
        if let Some(x) = lock(&self.group.committed).get(&partition) {
            return Ok(Some(*x));
        }
        let (consumer, topic) = (self.consumer.clone(), self.group.topic.clone());
        let read = tokio::task::spawn_blocking(move || {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&topic, partition);
            consumer.committed_offsets(tpl, CALL)
        })
        .await
        .map_err(|e| CheckpointError(format!("offset read task failed: {e}")))?
        .map_err(|e| CheckpointError(format!("reading the group's committed offset: {e}")))?;
        let offset = read
            .find_partition(&self.group.topic, partition)
            .and_then(|e| match e.offset() {
                Offset::Offset(x) if x >= 0 => Some(x),
                _ => None,
            });
        if let Some(x) = offset {
            lock(&self.group.committed).insert(partition, x);
        }
        Ok(offset)
    }
}

impl KafkaCheckpoints {
    /// The reader committed where a partition without offsets starts.
    pub(super) fn started_at(&self, partition: i32, offset: i64) {
        lock(&self.group.committed).insert(partition, offset);
    }
}

fn checkpoint_of(offset: Option<i64>) -> Option<Checkpoint> {
    offset
        .filter(|x| *x > 0)
        .map(|x| Checkpoint::Sequence(SequenceNumber((x - 1).to_string())))
}

#[async_trait]
impl CheckpointStore for KafkaCheckpoints {
    async fn get(
        &self,
        _mapping: &str,
        partition: &str,
    ) -> Result<Option<Checkpoint>, CheckpointError> {
        let p = self.number(partition)?;
        Ok(checkpoint_of(self.committed(p).await?))
    }

    async fn commit(
        &self,
        _mapping: &str,
        partition: &str,
        commit: Commit<'_>,
    ) -> Result<(), CommitError> {
        let p = self.number(partition)?;
        if !self.group.holds(p, commit.lease) {
            return Err(CommitError::LeaseLost);
        }
        // A worker planned before the reader recorded where its partition starts commits first
        // from nothing: that start is no progress to chain from.
        let stored = match commit.from {
            None => None,
            Some(_) => checkpoint_of(self.committed(p).await?),
        };
        if check(stored.as_ref(), None, &commit)? == Verdict::AlreadyThere {
            return Ok(());
        }
        let next = match commit.to {
            Checkpoint::Sequence(s) => s.0.parse::<i64>().map(|x| x + 1).map_err(|_| {
                CommitError::Store(CheckpointError(format!("{s} is not a Kafka offset")))
            })?,
            Checkpoint::ShardEnd => {
                return Err(CommitError::Store(CheckpointError(
                    "a Kafka partition has no end".into(),
                )))
            }
        };
        let (consumer, topic) = (self.consumer.clone(), self.group.topic.clone());
        tokio::task::spawn_blocking(move || {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&topic, p, Offset::Offset(next))
                .and_then(|_| consumer.commit(&tpl, rdkafka::consumer::CommitMode::Sync))
        })
        .await
        .map_err(|e| CheckpointError(format!("commit task failed: {e}")))?
        .map_err(|e| CheckpointError(format!("committing offset {next}: {e}")))?;
        if !self.group.holds(p, commit.lease) {
            // Revoked while committing: the offset stands (every record before it is done), but
            // this worker is to stop.
            return Err(CommitError::LeaseLost);
        }
        lock(&self.group.committed).insert(p, next);
        self.group.done_below(p, next);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_ids_are_topic_dash_number() {
        assert_eq!(partition_id("orders.v1-eu", 7), "orders.v1-eu-7");
        assert_eq!(partition_number("orders.v1-eu", "orders.v1-eu-7"), Some(7));
        assert_eq!(partition_number("orders", "orders-x"), None);
        assert_eq!(partition_number("orders", "other-1"), None);
    }

    #[test]
    fn each_error_text_is_reported_once_per_quiet_period() {
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let s = seen.clone();
        let report = ErrorReport::new(
            move |t| s.lock().unwrap().push(t.to_string()),
            Duration::from_secs(3600),
        );
        for _ in 0..50 {
            report.report("AllBrokersDown");
            report.report("BrokerTransportFailure");
        }
        assert_eq!(
            *seen.lock().unwrap(),
            ["AllBrokersDown", "BrokerTransportFailure"]
        );
        let quick = ErrorReport::new(|_| {}, Duration::ZERO);
        quick.report("x");
        quick.report("x");
    }

    #[test]
    fn committed_offsets_are_the_next_record_to_read() {
        assert_eq!(checkpoint_of(None), None);
        assert_eq!(checkpoint_of(Some(0)), None, "nothing done yet");
        assert_eq!(
            checkpoint_of(Some(10)),
            Some(Checkpoint::Sequence(SequenceNumber("9".into())))
        );
    }

    #[tokio::test]
    async fn an_assignment_is_a_lease_and_a_revocation_loses_it() {
        let group = Arc::new(Group::new("t", "g", Duration::from_millis(50), 1 << 20));
        let leases = KafkaLeases {
            group: group.clone(),
        };
        let listed: Vec<Partition> = (0..3)
            .map(|p| Partition {
                id: partition_id("t", p),
                parents: vec![],
                closed: false,
            })
            .collect();
        assert!(leases.held("m", &listed).await.unwrap().is_empty());
        group.assign(&[0, 2]);
        let held = leases.held("m", &listed).await.unwrap();
        let ids: Vec<&str> = held.iter().map(Lease::partition).collect();
        assert_eq!(ids, ["t-0", "t-2"]);
        let token = held[0].token().unwrap();
        assert!(group.holds(0, &token));
        // A worker still holds the lease: the revocation waits, then gives up after its bound.
        group.revoke(&[0]);
        assert!(!held[0].is_held());
        assert!(!group.holds(0, &token));
        assert!(held[1].is_held());
        // Assigned again, it is a new grant: the old token no longer commits.
        group.assign(&[0]);
        let again = leases.held("m", &listed).await.unwrap();
        assert!(!group.holds(0, &token));
        assert!(group.holds(0, &again[0].token().unwrap()));
    }

    #[tokio::test]
    async fn a_revoked_partition_keeps_its_grant_for_the_batch_in_flight_then_loses_it() {
        let group = Arc::new(Group::new("t", "g", Duration::from_secs(5), 1 << 20));
        let leases = KafkaLeases {
            group: group.clone(),
        };
        let listed = vec![Partition {
            id: partition_id("t", 0),
            parents: vec![],
            closed: false,
        }];
        group.assign(&[0]);
        let lease = leases.held("m", &listed).await.unwrap().remove(0);
        let token = lease.token().unwrap();
        // The group's revocation runs on the consumer's thread and waits for the worker.
        let revoking = std::thread::spawn({
            let group = group.clone();
            move || group.revoke(&[0])
        });
        tokio::time::timeout(Duration::from_secs(5), lease.lost())
            .await
            .expect("an ending lease stops its worker");
        assert!(lease.is_ending());
        assert!(group.holds(0, &token), "the batch in flight still commits");
        assert!(
            leases.held("m", &listed).await.unwrap().is_empty(),
            "no new worker for a partition being revoked"
        );
        assert!(
            !revoking.is_finished(),
            "the revocation waits for the worker"
        );
        drop(lease);
        revoking.join().unwrap();
        assert!(!group.holds(0, &token), "then the grant is gone");
    }
}
