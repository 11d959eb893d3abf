//! The checks of the fleet tests, pure functions over what the sink received: order per partition
//! key by first delivery (a parent's records, every delivery of them, before its children's),
//! delivery counts, the largest silence per shard, and the first request per shard after an
//! instant.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::common::fleet::Fleet;
use crate::common::sink::Request;
use crate::common::{wait_for, Written};

/// `(shard, sequence number)`: a record's identity.
pub fn key(w: &Written) -> (String, String) {
    (w.shard.clone(), w.seq.clone())
}

/// Where a record's deliveries fall in the sink's arrival order: (request arrival, place in the
/// batch), first and last.
#[derive(Debug, Clone, Copy)]
struct Deliveries {
    first: (usize, usize),
    last: (usize, usize),
}

/// The accepted deliveries of each record, by the sink's arrival order.
fn deliveries(accepted: &[Request]) -> HashMap<(String, String), Deliveries> {
    let mut out: HashMap<(String, String), Deliveries> = HashMap::new();
    for req in accepted {
        for (i, w) in req.records.iter().enumerate() {
            let at = (req.arrival, i);
            out.entry(key(w))
                .and_modify(|d| {
                    d.first = d.first.min(at);
                    d.last = d.last.max(at);
                })
                .or_insert(Deliveries {
                    first: at,
                    last: at,
                });
        }
    }
    out
}

/// Per partition key, by the sink's arrival order of accepted requests: each record's first
/// delivery comes after the first delivery of the key's record written before it, and when the
/// key moved to another shard (a child after a reshard), after *every* delivery of the records
/// written before it in other shards (a parent's records, redeliveries included, before any of
/// its children's). Every written record must have been delivered.
pub fn assert_key_order(label: &str, written: &[Written], accepted: &[Request]) {
    let got = deliveries(accepted);
    let mut by_key: BTreeMap<&str, Vec<&Written>> = BTreeMap::new();
    for w in written {
        by_key.entry(&w.key).or_default().push(w);
    }
    for (k, recs) in by_key {
        let mut prev: Option<(&Written, Deliveries)> = None;
        // The last delivery of any record of the key in a shard before the current one.
        let mut barrier: Option<((usize, usize), &Written)> = None;
        let mut latest: Option<((usize, usize), &Written)> = None;
        for w in recs {
            let d = *got
                .get(&key(w))
                .unwrap_or_else(|| panic!("{label}: {} ({}) never delivered", w.data, w.seq));
            if let Some((p, pd)) = prev {
                if p.shard != w.shard {
                    barrier = latest;
                }
                assert!(
                    pd.first < d.first,
                    "{label}: key {k}: {} (shard {}) first delivered at {:?}, before {} (shard {}) written earlier, first delivered at {:?}",
                    w.data, w.shard, d.first, p.data, p.shard, pd.first
                );
            }
            if let Some((at, b)) = barrier {
                assert!(
                    at < d.first,
                    "{label}: key {k}: {} of shard {} delivered at {:?}, before the last delivery ({at:?}) of {} of shard {} written earlier",
                    w.data, w.shard, d.first, b.data, b.shard
                );
            }
            if latest.is_none_or(|(at, _)| at < d.last) {
                latest = Some((d.last, w));
            }
            prev = Some((w, d));
        }
    }
}

/// Asserts each request's records are in sequence order, and each replica's deliveries per shard
/// go forward, except where it starts over from an earlier point: a step back (a replica that lost
/// a lease and took it again re-reads from the checkpoint) must land on records already delivered
/// before, by any replica; never on one not delivered yet.
pub fn assert_ordered_per_replica(label: &str, accepted: &[Request]) {
    let mut last: HashMap<(&str, &str), &str> = HashMap::new();
    let mut delivered: std::collections::HashSet<(String, String)> = Default::default();
    for req in accepted {
        for pair in req.records.windows(2) {
            assert!(
                crate::common::seq_key(&pair[0].seq) < crate::common::seq_key(&pair[1].seq),
                "{label}: a request of {} has {} then {} on shard {}",
                req.run,
                pair[0].seq,
                pair[1].seq,
                pair[0].shard
            );
        }
        for w in &req.records {
            let at = (req.run.as_str(), w.shard.as_str());
            if let Some(prev) = last.get(&at) {
                let back = crate::common::seq_key(&w.seq) <= crate::common::seq_key(prev);
                assert!(
                    !back || delivered.contains(&key(w)),
                    "{label}: replica {} went back on shard {} from {prev} to {}, a record not delivered before",
                    req.run,
                    w.shard,
                    w.seq
                );
            }
            last.insert(at, &w.seq);
        }
        delivered.extend(req.records.iter().map(key));
    }
}

/// How many times each record was delivered (accepted).
pub fn delivery_counts(accepted: &[Request]) -> HashMap<(String, String), usize> {
    let mut out = HashMap::new();
    for req in accepted {
        for w in &req.records {
            *out.entry(key(w)).or_insert(0) += 1;
        }
    }
    out
}

/// The longest silence of a shard: between two consecutive requests for it (any replica).
#[derive(Debug, Clone)]
pub struct Gap {
    pub length: Duration,
    /// When the request before the silence arrived.
    pub after: Instant,
    /// The replicas that sent the requests either side of it.
    pub from: String,
    pub to: String,
}

/// Per shard, the longest time between consecutive requests' arrivals (any replica) among those
/// around `[from, to]`: a pair counts when it ends at or after `from` and starts at or before `to`.
pub fn largest_gaps(received: &[Request], from: Instant, to: Instant) -> BTreeMap<String, Gap> {
    let mut by_shard: BTreeMap<String, Vec<&Request>> = BTreeMap::new();
    for r in received.iter().filter(|r| !r.records.is_empty()) {
        by_shard.entry(r.shard().to_string()).or_default().push(r);
    }
    by_shard
        .into_iter()
        .filter_map(|(shard, reqs)| {
            let worst = reqs
                .windows(2)
                .filter(|p| p[1].arrived_at >= from && p[0].arrived_at <= to)
                .map(|p| Gap {
                    length: p[1].arrived_at - p[0].arrived_at,
                    after: p[0].arrived_at,
                    from: p[0].run.clone(),
                    to: p[1].run.clone(),
                })
                .max_by_key(|g| g.length)?;
            Some((shard, worst))
        })
        .collect()
}

/// Per shard, the first request arriving at or after `since` from a replica other than `except`:
/// when, and from whom.
pub fn first_after(
    received: &[Request],
    since: Instant,
    except: Option<&str>,
) -> BTreeMap<String, (Instant, String)> {
    let mut out: BTreeMap<String, (Instant, String)> = BTreeMap::new();
    for r in received {
        if r.records.is_empty() || r.arrived_at < since || Some(r.run.as_str()) == except {
            continue;
        }
        out.entry(r.shard().to_string())
            .or_insert_with(|| (r.arrived_at, r.run.clone()));
    }
    out
}

/// Pairs of requests for one shard from different replicas whose `[arrived, answered]` spans
/// overlap (an unanswered request counts as still open): a batch dispatched by two replicas at
/// once.
pub fn overlapping(received: &[Request]) -> Vec<(String, &Request, &Request)> {
    let mut per_shard: BTreeMap<&str, Vec<&Request>> = BTreeMap::new();
    for r in received.iter().filter(|r| !r.records.is_empty()) {
        per_shard.entry(r.shard()).or_default().push(r);
    }
    let mut out = Vec::new();
    for (shard, reqs) in per_shard {
        for (i, a) in reqs.iter().enumerate() {
            for b in &reqs[i + 1..] {
                let open = |r: &Request| {
                    r.answered_at
                        .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
                };
                if a.run != b.run && a.arrived_at < open(b) && b.arrived_at < open(a) {
                    out.push((shard.to_string(), *a, *b));
                }
            }
        }
    }
    out
}

/// Waits until each of `shards` got an accepted request that arrived at or after `since`.
pub async fn wait_flowing(fleet: &Fleet, shards: &[String], since: Instant) {
    wait_for(
        "records flowing on every shard",
        Duration::from_secs(30),
        || async {
            let accepted = fleet.sink.accepted.lock().unwrap();
            let seen: BTreeSet<&str> = accepted
                .iter()
                .filter(|r| r.arrived_at >= since)
                .map(|r| r.shard())
                .collect();
            shards
                .iter()
                .all(|s| seen.contains(s.as_str()))
                .then_some(())
        },
    )
    .await
}

/// Nothing lost, order per partition key by first delivery (parents before children), each
/// replica's own deliveries in order per shard.
pub fn assert_complete_and_ordered(label: &str, fleet: &Fleet, written: &[Written]) {
    let accepted = fleet.sink.accepted.lock().unwrap().clone();
    let counts = delivery_counts(&accepted);
    let lost: Vec<&Written> = written
        .iter()
        .filter(|w| !counts.contains_key(&key(w)))
        .collect();
    assert!(lost.is_empty(), "{label}: {} records lost", lost.len());
    assert_key_order(label, written, &accepted);
    assert_ordered_per_replica(label, &accepted);
}

/// The requests `who` sent for a shard after another replica got one for it at or after `since`.
pub fn sent_after_another<'a>(
    received: &'a [Request],
    since: Instant,
    who: &str,
) -> Vec<&'a Request> {
    let first_other = first_after(received, since, Some(who));
    received
        .iter()
        .filter(|r| r.run == who && !r.records.is_empty())
        .filter(|r| {
            first_other
                .get(r.shard())
                .is_some_and(|(at, _)| r.arrived_at > *at)
        })
        .collect()
}

/// One shard handed from one replica to another, as their logs tell it.
#[derive(Debug, Clone)]
pub struct Handoff {
    pub shard: String,
    /// The log line that ended the previous holder's work ("lease released", "lease lost:").
    pub from: String,
    /// The log line of the next start ("starting shard").
    pub to: String,
    pub idle: std::time::Duration,
}

/// The instant a log line was written (its RFC 3339 prefix, ANSI colours already stripped).
fn logged_at(line: &str) -> Option<time::OffsetDateTime> {
    let stamp = line
        .split_whitespace()
        .find(|w| w.starts_with("20") && w.contains('T'))?;
    time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339).ok()
}

fn shard_of(line: &str) -> Option<String> {
    let rest = line.split("shard=").nth(1)?;
    Some(
        rest.trim_start_matches('"')
            .split(|c: char| c == '"' || c.is_whitespace())
            .next()?
            .to_string(),
    )
}

/// Every start of a shard after another replica gave it up, with how long it was idle in between:
/// from the giving up (released at shutdown, or lost to a steal or expiry) to the next start.
/// This is the handoff itself, apart from the caught-up polling cadence a delivery gap includes.
pub fn handoffs(fleet: &Fleet) -> Vec<Handoff> {
    let mut stops: Vec<(time::OffsetDateTime, String, String)> = ["lease released", "lease lost:"]
        .iter()
        .flat_map(|n| fleet.log_lines(n))
        .filter_map(|l| Some((logged_at(&l)?, shard_of(&l)?, l)))
        .collect();
    stops.sort_by_key(|(t, _, _)| *t);
    let mut starts: Vec<(time::OffsetDateTime, String, String)> = fleet
        .log_lines("starting shard")
        .into_iter()
        .filter_map(|l| Some((logged_at(&l)?, shard_of(&l)?, l)))
        .collect();
    starts.sort_by_key(|(t, _, _)| *t);
    let mut out = Vec::new();
    for (at, shard, line) in &starts {
        let Some((stopped, _, stop_line)) =
            stops.iter().rev().find(|(t, s, _)| s == shard && t <= at)
        else {
            continue; // the shard's first start
        };
        // Only the first start after that stop: later starts follow other stops.
        let first = starts
            .iter()
            .find(|(t, s, _)| s == shard && t >= stopped)
            .is_some_and(|(t, _, _)| t == at);
        if first {
            out.push(Handoff {
                shard: shard.clone(),
                from: stop_line.chars().take(200).collect(),
                to: line.chars().take(200).collect(),
                idle: (*at - *stopped).unsigned_abs(),
            });
        }
    }
    out
}
