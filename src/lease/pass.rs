//! The coordinator's two tasks per mapping: the *taker* ([`taker`]) scans the mapping's lease items
//! every scan interval (and when kicked) and acts on what it sees; the *renewer* ([`renewer`])
//! renews every held lease three times per lease duration. See [`super::coordinator`] for the
//! protocol; this file is its moving part.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::balance::{self, Move, Seen};
use super::coordinator::{Coordinator, Grant, MappingLeases, Sighting};
use super::dynamo::LeaseError as TableError;
use super::item::{LeaseCheckpoint, LeaseItem};
use super::{Held, LeaseToken};
use crate::model::Partition;
use crate::telemetry::{LeaseView, LossReason};

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Scans and acts every scan interval until shutdown (then nothing more is taken).
pub(super) async fn taker(co: Arc<Coordinator>, m: Arc<MappingLeases>) {
    loop {
        if let Err(e) = one_pass(&co, &m).await {
            warn!(mapping = %m.name, error = %e, "cannot scan the lease table; retrying");
        }
        tokio::select! {
            _ = co.shutdown.cancelled() => return,
            _ = m.retired.cancelled() => return,
            _ = tokio::time::sleep(co.member.scan_interval) => {}
            _ = m.kick.notified() => {}
        }
    }
}

/// Renews every held lease every renew interval until the coordinator stops.
pub(super) async fn renewer(co: Arc<Coordinator>, m: Arc<MappingLeases>) {
    let mut tick = tokio::time::interval(co.member.renew_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = co.stopped.cancelled() => return,
            _ = m.forgotten.cancelled() => return,
            _ = tick.tick() => {}
        }
        let grants: Vec<(String, Arc<Grant>)> = lock(&m.held)
            .iter()
            .map(|(s, g)| (s.clone(), g.clone()))
            .collect();
        let mut renewals = JoinSet::new();
        for (shard, grant) in grants {
            renewals.spawn(renew(co.clone(), m.clone(), shard, grant));
        }
        while renewals.join_next().await.is_some() {}
    }
}

/// One renewal of one lease: the counter moves on and the grant is usable for another span from
/// this call's send time. A grant that runs out before a renewal succeeds is lost; if the table is
/// reachable it is also released there, so the shard runs again at the next scan rather than after
/// a lease duration.
async fn renew(co: Arc<Coordinator>, m: Arc<MappingLeases>, shard: String, grant: Arc<Grant>) {
    let me = co.member.worker_id.as_str();
    let interval = co.member.renew_interval();
    // A checkpoint write holds the item; it is bounded by the same interval.
    let Ok(mut item) = tokio::time::timeout(interval, grant.item.lock()).await else {
        m.telemetry.renewal_failed(
            &shard,
            "a checkpoint write held the lease past the renew interval",
        );
        if grant.is_lost() {
            m.lose(
                &shard,
                &grant,
                LossReason::RenewalFailed,
                None,
                "not renewed within the lease duration: a checkpoint write did not finish",
            );
        }
        return;
    };
    if grant.state.borrow().is_none() {
        return;
    }
    if grant.is_lost() {
        give_up(
            &co,
            &m,
            &shard,
            &grant,
            &item,
            "the grant ran out before a renewal",
        )
        .await;
        return;
    }
    let sent = Instant::now();
    // A handoff its previous holder never finished is over once the grant is usable.
    let end_handoff = item.checkpoint_owner.is_some() && grant.is_usable(sent);
    let call = tokio::time::timeout(interval, co.table.renew(&item, me, end_handoff)).await;
    let failure = match call {
        Ok(Ok(renewed)) => {
            m.telemetry.renewed(sent.elapsed());
            *item = renewed;
            if grant.is_lost() {
                // It ran out while the call was in flight: its worker may have stopped on it,
                // and a lost grant stays lost.
                give_up(
                    &co,
                    &m,
                    &shard,
                    &grant,
                    &item,
                    "the grant ran out during a renewal",
                )
                .await;
            } else {
                grant.state.send_replace(Some(Held {
                    token: LeaseToken::new(me, item.counter),
                    until: Some(sent + co.member.grant_span()),
                    ending: false,
                }));
            }
            return;
        }
        Ok(Err(TableError::Conflict(Some(now)))) if now.owner.as_deref() == Some(me) => {
            // An earlier renewal landed after it seemed to fail, or the counter moved otherwise:
            // still ours; the next renewal starts from here.
            *item = *now;
            return;
        }
        Ok(Err(TableError::Conflict(now))) => {
            drop(item);
            co.lose(&m, &shard, &grant, now.as_deref(), "found at renewal");
            return;
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {} ms", interval.as_millis()),
    };
    m.telemetry.renewal_failed(&shard, &failure);
    if grant.is_lost() {
        drop(item);
        m.lose(
            &shard,
            &grant,
            LossReason::RenewalFailed,
            None,
            &format!("not renewed within the lease duration: {failure}"),
        );
    }
}

/// Loses a grant that ran out although the lease is still ours in the table, and releases it there
/// (best effort) so it is free at once.
async fn give_up(
    co: &Coordinator,
    m: &MappingLeases,
    shard: &str,
    grant: &Arc<Grant>,
    item: &LeaseItem,
    why: &str,
) {
    m.lose(shard, grant, LossReason::RenewalFailed, None, why);
    let release = co.table.release(item, &co.member.worker_id);
    if let Ok(Ok(_)) = tokio::time::timeout(co.member.renew_interval(), release).await {
        m.telemetry.released(shard);
    }
}

/// One scan of the mapping's leases and what follows from it.
async fn one_pass(co: &Coordinator, m: &Arc<MappingLeases>) -> Result<(), TableError> {
    let Some(listed) = lock(&m.listed).clone() else {
        return Ok(()); // the supervisor has not listed the shards yet
    };
    let mut items = co.table.list(&m.name).await?;
    let now = Instant::now();
    let me = co.member.worker_id.as_str();

    // New shards get their lease items (not a parent cleaned up after its children ran).
    let known: HashSet<String> = items.iter().map(|i| i.shard.clone()).collect();
    for shard in &listed {
        if known.contains(&shard.id) || cleaned_up(shard, &listed, &items) {
            continue;
        }
        let item = LeaseItem::new(&m.name, &shard.id, shard.parents.clone(), m.start.clone());
        if co.table.create(&item).await? {
            debug!(mapping = %m.name, shard = %shard.id, "lease created");
            items.push(item);
        }
    }

    let ended_before: HashSet<String> = lock(&m.items).as_ref().map_or_else(HashSet::new, |i| {
        i.values()
            .filter(|i| i.checkpoint == LeaseCheckpoint::ShardEnd)
            .map(|i| i.shard.clone())
            .collect()
    });
    let expired = observe(co, m, &items, now);
    check_held(co, m, &items, me);
    let mut changed = handed_over(m, &items, me, now);
    release_ended(co, m).await;
    clean_up_parents(co, m, &listed, &items).await;

    if !co.shutdown.is_cancelled() {
        changed |= balance_leases(co, m, &items, &expired, &listed).await;
    }
    let by_shard: HashMap<String, LeaseItem> =
        items.into_iter().map(|i| (i.shard.clone(), i)).collect();
    changed |= by_shard
        .values()
        .any(|i| i.checkpoint == LeaseCheckpoint::ShardEnd && !ended_before.contains(&i.shard));
    m.telemetry.table(
        by_shard
            .values()
            .map(|i| LeaseView {
                shard: i.shard.clone(),
                owner: i.owner.clone(),
                counter: i.counter,
                checkpoint: i.checkpoint.as_str().to_string(),
            })
            .collect(),
    );
    *lock(&m.items) = Some(by_shard);
    if changed {
        m.changed.notify_one();
    }
    Ok(())
}

/// Records when each (owner, counter) pair was first seen here; returns the leases expired by that
/// clock: owned, and unchanged for a lease duration.
fn observe(
    co: &Coordinator,
    m: &MappingLeases,
    items: &[LeaseItem],
    now: Instant,
) -> HashSet<String> {
    let mut seen = lock(&m.seen);
    seen.retain(|shard, _| items.iter().any(|i| &i.shard == shard));
    let mut expired = HashSet::new();
    for i in items {
        let sighting = || Sighting {
            owner: i.owner.clone(),
            counter: i.counter,
            since: now,
        };
        let entry = seen.entry(i.shard.clone()).or_insert_with(sighting);
        if entry.owner != i.owner || entry.counter != i.counter {
            *entry = sighting();
        }
        if i.owner.is_some() && now.duration_since(entry.since) >= co.member.lease_duration {
            expired.insert(i.shard.clone());
        }
    }
    expired
}

/// Stolen leases whose previous holder has handed them over become usable now; true if any did.
fn handed_over(m: &MappingLeases, items: &[LeaseItem], me: &str, now: Instant) -> bool {
    let held = lock(&m.held);
    let mut any = false;
    for item in items {
        if item.owner.as_deref() != Some(me) || item.checkpoint_owner.is_some() {
            continue;
        }
        if let Some(grant) = held.get(&item.shard).filter(|g| !g.is_usable(now)) {
            *lock(&grant.usable_from) = now;
            debug!(mapping = %m.name, shard = %item.shard, "handed over by its previous holder");
            any = true;
        }
    }
    any
}

/// A held lease the table shows with another owner at a later counter was taken from us.
fn check_held(co: &Coordinator, m: &MappingLeases, items: &[LeaseItem], me: &str) {
    let held: Vec<(String, Arc<Grant>)> = lock(&m.held)
        .iter()
        .map(|(s, g)| (s.clone(), g.clone()))
        .collect();
    for (shard, grant) in held {
        let Some(item) = items.iter().find(|i| i.shard == shard) else {
            continue; // created after the scan began, or about to be noticed by the renewer
        };
        if item.owner.as_deref() != Some(me) && item.counter > grant.taken_at {
            co.lose(m, &shard, &grant, Some(item), "seen in the lease table");
        }
    }
}

/// Held leases whose shard ended are given up: nothing is left to read, and they no longer count.
async fn release_ended(co: &Coordinator, m: &MappingLeases) {
    let held: Vec<(String, Arc<Grant>)> = lock(&m.held)
        .iter()
        .map(|(s, g)| (s.clone(), g.clone()))
        .collect();
    for (shard, grant) in held {
        if grant.item.lock().await.checkpoint == LeaseCheckpoint::ShardEnd {
            co.release_one(m, &shard).await;
        }
    }
}

/// A closed shard with no item, some of whose children have committed progress: its lease was
/// deleted after it ended, and must not come back.
fn cleaned_up(shard: &Partition, listed: &[Partition], items: &[LeaseItem]) -> bool {
    shard.closed
        && listed
            .iter()
            .filter(|c| c.parents.contains(&shard.id))
            .any(|c| {
                items
                    .iter()
                    .any(|i| i.shard == c.id && i.checkpoint.committed().is_some())
            })
}

/// Deletes ended leases once every child has committed progress (or the shard is gone from the
/// stream with no child listed).
async fn clean_up_parents(
    co: &Coordinator,
    m: &MappingLeases,
    listed: &[Partition],
    items: &[LeaseItem],
) {
    for parent in items
        .iter()
        .filter(|i| i.checkpoint == LeaseCheckpoint::ShardEnd)
    {
        let children: Vec<&Partition> = listed
            .iter()
            .filter(|c| c.parents.contains(&parent.shard))
            .collect();
        let still_listed = listed.iter().any(|p| p.id == parent.shard);
        let done = if children.is_empty() {
            !still_listed
        } else {
            children.iter().all(|c| {
                items
                    .iter()
                    .any(|i| i.shard == c.id && i.checkpoint.committed().is_some())
            })
        };
        if done {
            match co.table.delete_ended(&m.name, &parent.shard).await {
                Ok(true) => {
                    debug!(mapping = %m.name, shard = %parent.shard, "ended lease cleaned up")
                }
                Ok(false) => {}
                Err(e) => {
                    warn!(mapping = %m.name, shard = %parent.shard, error = %e, "cannot delete an ended lease; retrying next pass")
                }
            }
        }
    }
}

/// Takes and steals as [`balance::plan`] says; true if anything was gained.
async fn balance_leases(
    co: &Coordinator,
    m: &Arc<MappingLeases>,
    items: &[LeaseItem],
    expired: &HashSet<String>,
    listed: &[Partition],
) -> bool {
    let me = co.member.worker_id.as_str();
    let mine: HashSet<String> = lock(&m.held).keys().cloned().collect();
    let listed: HashSet<String> = listed.iter().map(|p| p.id.clone()).collect();
    let seen: Vec<Seen<'_>> = items
        .iter()
        .map(|item| Seen {
            item,
            expired: expired.contains(&item.shard),
        })
        .collect();
    let moves = balance::plan(me, &seen, &mine, &listed, |v| fastrand::shuffle(v));
    let mut gained = false;
    for mv in moves {
        let (shard, stolen) = match &mv {
            Move::Take { shard, .. } => (shard, false),
            Move::Steal { shard, .. } => (shard, true),
        };
        let Some(observed) = items.iter().find(|i| &i.shard == shard) else {
            continue;
        };
        let sent = Instant::now();
        let taken = if stolen {
            co.table.steal(observed, me).await
        } else {
            co.table.take(observed, me).await
        };
        match taken {
            Ok(taken) => {
                match &mv {
                    Move::Take { from, expired, .. } => {
                        m.telemetry.taken(shard, from.as_deref(), *expired)
                    }
                    Move::Steal { from, .. } => m.telemetry.stolen(shard, from),
                }
                // A stolen lease waits for its previous holder's handoff, at most for as long
                // as that holder may still use it.
                let usable_from = if stolen {
                    sent + co.member.lease_duration
                } else {
                    sent
                };
                let state = watch::Sender::new(Some(Held {
                    token: LeaseToken::new(me, taken.counter),
                    until: Some(sent + co.member.grant_span()),
                    ending: false,
                }));
                let grant = Arc::new(Grant {
                    taken_at: taken.counter,
                    item: tokio::sync::Mutex::new(taken),
                    state,
                    usable_from: std::sync::Mutex::new(usable_from),
                });
                let count = {
                    let mut held = lock(&m.held);
                    held.insert(shard.clone(), grant);
                    held.len()
                };
                m.telemetry.held(count);
                if stolen {
                    wake_at(m, usable_from);
                } else {
                    gained = true;
                }
            }
            Err(TableError::Conflict(_)) => {
                debug!(mapping = %m.name, shard = %shard, "another replica moved the lease first")
            }
            Err(e) => {
                warn!(mapping = %m.name, shard = %shard, error = %e, "cannot take the lease; retrying next pass")
            }
        }
    }
    gained
}

/// Re-plans the mapping's supervisor at `at` (when a stolen lease becomes usable).
fn wake_at(m: &Arc<MappingLeases>, at: Instant) {
    let m = m.clone();
    tokio::spawn(async move {
        tokio::time::sleep_until(at).await;
        m.changed.notify_one();
    });
}
