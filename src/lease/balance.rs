//! Which leases a replica takes on one pass over its mapping's lease items: pure, so the spread rules
//! are unit-tested apart from the table. Only active leases count — listed shards not yet read to
//! their end (KCL counts ended parents too and spreads unevenly, amazon-kinesis-client #1247).
//!
//! A lease is *free* with no owner, *expired* when its counter has not moved for a lease duration as
//! observed here (the caller judges that). The live workers are the owners of active leases that are
//! not expired, and this replica. The target is `ceil(active / live workers)`: a replica below it
//! takes free and expired leases (in random order, so replicas starting together collide less) up to
//! it; when there is nothing to take, a replica holding at least two fewer than the most loaded worker
//! steals one lease from it. One steal per pass, so a fleet converges to a spread of ±1 without
//! thrashing.

use std::collections::{BTreeMap, HashSet};

use super::item::{LeaseCheckpoint, LeaseItem};

/// One lease as this pass sees it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Seen<'a> {
    pub item: &'a LeaseItem,
    /// Not renewed for a lease duration, as observed here.
    pub expired: bool,
}

/// What to do with a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Move {
    /// Take a free or expired lease (the previous owner, if any, and whether it expired).
    Take {
        shard: String,
        from: Option<String>,
        expired: bool,
    },
    /// Take a live lease from the most loaded worker.
    Steal { shard: String, from: String },
}

/// The moves of one pass for `me`. `mine` are the shards whose leases this replica holds now
/// (its own view, which may be ahead of the items read); `listed` the shards the stream lists.
/// `shuffle` orders the candidates (random in production, identity in tests).
pub(super) fn plan(
    me: &str,
    seen: &[Seen<'_>],
    mine: &HashSet<String>,
    listed: &HashSet<String>,
    shuffle: impl FnOnce(&mut Vec<Move>),
) -> Vec<Move> {
    let active: Vec<&Seen<'_>> = seen
        .iter()
        .filter(|s| {
            listed.contains(&s.item.shard) && s.item.checkpoint != LeaseCheckpoint::ShardEnd
        })
        .collect();
    if active.is_empty() {
        return Vec::new();
    }
    // Leases per live worker (this replica counts what it holds, whatever the items say).
    let mut load: BTreeMap<&str, usize> = BTreeMap::new();
    load.insert(me, 0);
    for s in &active {
        let held_here = mine.contains(&s.item.shard);
        match s.item.owner.as_deref() {
            _ if held_here => *load.entry(me).or_default() += 1,
            Some(owner) if owner != me && !s.expired => *load.entry(owner).or_default() += 1,
            _ => {}
        }
    }
    let workers = load.len();
    let target = active.len().div_ceil(workers);
    let have = load[me];
    let mut takes: Vec<Move> = active
        .iter()
        .filter(|s| !mine.contains(&s.item.shard))
        .filter(|s| s.item.owner.is_none() || s.expired)
        .map(|s| Move::Take {
            shard: s.item.shard.clone(),
            from: s.item.owner.clone(),
            expired: s.item.owner.is_some(),
        })
        .collect();
    if !takes.is_empty() {
        if have >= target {
            return Vec::new();
        }
        shuffle(&mut takes);
        takes.truncate(target - have);
        return takes;
    }
    // Nothing free: steal one from the most loaded worker if the spread is worse than ±1.
    let Some((&busiest, &most)) = load
        .iter()
        .filter(|(w, _)| **w != me)
        .max_by_key(|(w, n)| (**n, std::cmp::Reverse(**w)))
    else {
        return Vec::new();
    };
    if most < have + 2 {
        return Vec::new();
    }
    let mut theirs: Vec<Move> = active
        .iter()
        .filter(|s| s.item.owner.as_deref() == Some(busiest) && !mine.contains(&s.item.shard))
        .map(|s| Move::Steal {
            shard: s.item.shard.clone(),
            from: busiest.to_string(),
        })
        .collect();
    shuffle(&mut theirs);
    theirs.truncate(1);
    theirs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(shard: &str, owner: Option<&str>) -> LeaseItem {
        let mut i = LeaseItem::new("m", shard, vec![], LeaseCheckpoint::TrimHorizon);
        i.owner = owner.map(str::to_string);
        i
    }

    fn ended(shard: &str, owner: Option<&str>) -> LeaseItem {
        let mut i = item(shard, owner);
        i.checkpoint = LeaseCheckpoint::ShardEnd;
        i
    }

    fn set(ids: &[&str]) -> HashSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    fn all_listed(items: &[LeaseItem]) -> HashSet<String> {
        items.iter().map(|i| i.shard.clone()).collect()
    }

    fn run(me: &str, items: &[LeaseItem], expired: &[&str], mine: &[&str]) -> Vec<Move> {
        let seen: Vec<Seen<'_>> = items
            .iter()
            .map(|item| Seen {
                item,
                expired: expired.contains(&item.shard.as_str()),
            })
            .collect();
        plan(me, &seen, &set(mine), &all_listed(items), |_| {})
    }

    fn shards(moves: &[Move]) -> Vec<&str> {
        moves
            .iter()
            .map(|m| match m {
                Move::Take { shard, .. } | Move::Steal { shard, .. } => shard.as_str(),
            })
            .collect()
    }

    #[test]
    fn a_lone_replica_takes_every_free_lease() {
        let items: Vec<_> = (0..4).map(|i| item(&format!("s{i}"), None)).collect();
        let moves = run("a", &items, &[], &[]);
        assert_eq!(shards(&moves), ["s0", "s1", "s2", "s3"]);
        assert!(moves.iter().all(|m| matches!(
            m,
            Move::Take {
                from: None,
                expired: false,
                ..
            }
        )));
    }

    #[test]
    fn free_leases_are_taken_only_up_to_the_fair_share() {
        // b holds 3 of 8: with two workers the target is 4, and a holds none yet.
        let mut items: Vec<_> = (0..3).map(|i| item(&format!("s{i}"), Some("b"))).collect();
        items.extend((3..8).map(|i| item(&format!("s{i}"), None)));
        assert_eq!(
            shards(&run("a", &items, &[], &[])),
            ["s3", "s4", "s5", "s6"]
        );
        // Already at its share: takes nothing more, even with free leases left.
        assert!(run("a", &items, &[], &["s3", "s4", "s5", "s6"]).is_empty());
    }

    #[test]
    fn expired_leases_are_taken_and_their_owner_is_no_longer_counted() {
        // c died holding 4; b holds 4. Once c's leases expire, a and b share 8: a takes 4.
        let mut items: Vec<_> = (0..4).map(|i| item(&format!("b{i}"), Some("b"))).collect();
        items.extend((0..4).map(|i| item(&format!("c{i}"), Some("c"))));
        assert!(run("a", &items, &[], &[])
            .iter()
            .all(|m| matches!(m, Move::Steal { .. })));
        let moves = run("a", &items, &["c0", "c1", "c2", "c3"], &[]);
        assert_eq!(shards(&moves), ["c0", "c1", "c2", "c3"]);
        assert!(moves
            .iter()
            .all(|m| matches!(m, Move::Take { from: Some(c), expired: true, .. } if c == "c")));
    }

    #[test]
    fn stealing_moves_one_lease_from_the_busiest_and_only_beyond_plus_minus_one() {
        // b holds 5, c holds 3, a none: a steals one from b.
        let mut items: Vec<_> = (0..5).map(|i| item(&format!("b{i}"), Some("b"))).collect();
        items.extend((0..3).map(|i| item(&format!("c{i}"), Some("c"))));
        let moves = run("a", &items, &[], &[]);
        assert_eq!(moves.len(), 1, "one steal per pass");
        assert!(matches!(&moves[0], Move::Steal { from, .. } if from == "b"));
        // 3/3/2 is within ±1: no steal.
        let items: Vec<_> = ["b0", "b1", "b2", "c0", "c1", "c2", "a0", "a1"]
            .iter()
            .map(|s| item(s, Some(&s[..1])))
            .collect();
        assert!(run("a", &items, &[], &["a0", "a1"]).is_empty());
    }

    #[test]
    fn ended_and_unlisted_leases_do_not_count_and_are_never_taken() {
        // b holds 4 active and 6 ended leases; a holds 4 active: balanced, whatever the ended ones.
        let mut items: Vec<_> = (0..4).map(|i| item(&format!("b{i}"), Some("b"))).collect();
        items.extend((0..6).map(|i| ended(&format!("e{i}"), Some("b"))));
        items.extend((0..4).map(|i| item(&format!("a{i}"), Some("a"))));
        items.push(ended("free-ended", None));
        assert!(run("a", &items, &[], &["a0", "a1", "a2", "a3"]).is_empty());
        // A free lease of a shard no longer listed is not taken either.
        let items = [item("gone", None)];
        let seen = [Seen {
            item: &items[0],
            expired: false,
        }];
        assert!(plan("a", &seen, &set(&[]), &set(&["other"]), |_| {}).is_empty());
    }

    #[test]
    fn three_replicas_converge_to_a_spread_of_one() {
        // Simulate passes: a, b, c in turn over 8 leases that a grabbed first.
        let mut items: Vec<_> = (0..8).map(|i| item(&format!("s{i}"), Some("a"))).collect();
        for _ in 0..10 {
            for me in ["b", "c", "a"] {
                let mine: Vec<String> = items
                    .iter()
                    .filter(|i| i.owner.as_deref() == Some(me))
                    .map(|i| i.shard.clone())
                    .collect();
                let mine: Vec<&str> = mine.iter().map(String::as_str).collect();
                for m in run(me, &items, &[], &mine) {
                    let shard = match m {
                        Move::Take { shard, .. } | Move::Steal { shard, .. } => shard,
                    };
                    items.iter_mut().find(|i| i.shard == shard).unwrap().owner = Some(me.into());
                }
            }
        }
        let count = |w: &str| {
            items
                .iter()
                .filter(|i| i.owner.as_deref() == Some(w))
                .count()
        };
        let counts = [count("a"), count("b"), count("c")];
        assert_eq!(counts.iter().sum::<usize>(), 8);
        assert!(
            counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1,
            "{counts:?}"
        );
    }
}
