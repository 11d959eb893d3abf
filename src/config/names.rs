//! Mapping names across the whole config. A mapping's `Name` keys its checkpoints, so it must be
//! unique and must not change when the target does: the default comes from the source alone, two
//! mappings on one source must each be named, and `PreviousNames` plus the default name of earlier releases
//! (`<resource>-<target>`) become [`Mapping::legacy_names`], under which earlier progress is found.
//! A Kafka mapping's name keys its default consumer group instead; it has no legacy names.

use super::*;
use std::collections::HashMap;

/// One mapping as read, before names are checked across mappings.
pub(super) struct Parsed {
    /// Its position in `mappings`, for messages.
    pub index: usize,
    /// `name` is the given `Name`, not the default.
    pub explicit_name: bool,
    /// `PreviousNames`, each with its position in that list.
    pub previous: Vec<(usize, String)>,
    /// The default name earlier releases gave it; `None` for a kind they did not have (Kafka).
    pub old_default: Option<String>,
    /// Which source it reads, for "two mappings read one source".
    pub source: SourceId,
    /// A Kafka mapping's `ConsumerGroupId` is given, not the default.
    pub explicit_group: bool,
    /// `legacy_names` is left empty; [`resolve`] fills it.
    pub mapping: Mapping,
}

/// A mapping's source as the name checks see it.
pub(super) struct SourceId {
    /// Equal for two mappings that read one source.
    pub key: String,
    /// How messages name the source (`EventSourceArn "arn:..."`).
    pub shown: String,
    /// What the name keys for this kind of source.
    pub name_keys: &'static str,
    /// Where the default name comes from.
    pub default_from: &'static str,
}

impl SourceId {
    /// A source named by its `EventSourceArn` alone (Kinesis, DynamoDB Streams, SQS).
    pub fn arn(arn: &str) -> SourceId {
        SourceId {
            key: arn.to_string(),
            shown: format!("EventSourceArn {arn:?}"),
            name_keys: "their checkpoints",
            default_from: "EventSourceArn",
        }
    }
}

/// Checks names across mappings (recording each problem in `errs`) and fills `legacy_names`.
pub(super) fn resolve(parsed: Vec<Parsed>, errs: &mut Vec<String>) -> Vec<Mapping> {
    let mut reported = vec![false; parsed.len()];
    // Mappings on one source: each needs a Name, or their defaults would collide.
    for (p, a) in parsed.iter().enumerate() {
        if a.explicit_name {
            continue;
        }
        let source = &a.source;
        if let Some(b) = parsed
            .iter()
            .find(|b| b.index != a.index && b.source.key == source.key)
        {
            let (lo, hi) = (a.index.min(b.index), a.index.max(b.index));
            errs.push(format!(
                "mappings[{}].Name: is required: mappings[{lo}] and mappings[{hi}] read the same {}; give each of them a distinct Name (it keys {})",
                a.index, source.shown, source.name_keys
            ));
            reported[p] = true;
        }
    }
    // Names are unique (the same stream name in two regions has one default name).
    for (p, b) in parsed.iter().enumerate() {
        let Some((q, a)) = parsed[..p]
            .iter()
            .enumerate()
            .find(|(_, a)| a.mapping.name == b.mapping.name)
        else {
            continue;
        };
        if reported[p] || reported[q] {
            continue;
        }
        let whose = |x: &Parsed| {
            if x.explicit_name {
                String::new()
            } else {
                format!(" (the default name, from {})", x.source.default_from)
            }
        };
        errs.push(format!(
            "mappings[{}].Name: {:?}{} is also the name of mappings[{}]{}; names must be unique: set a distinct Name",
            b.index,
            b.mapping.name,
            whose(b),
            a.index,
            whose(a)
        ));
        reported[p] = true;
    }
    // PreviousNames: not in use, and claimed by one mapping only.
    let current: HashMap<&str, usize> = parsed
        .iter()
        .rev()
        .map(|x| (x.mapping.name.as_str(), x.index))
        .collect();
    let mut claimed: HashMap<&str, usize> = HashMap::new();
    for x in &parsed {
        for (k, prev) in &x.previous {
            let at = format!("mappings[{}].PreviousNames[{k}]", x.index);
            match (current.get(prev.as_str()), claimed.get(prev.as_str())) {
                (Some(&i), _) if i == x.index => {
                    errs.push(format!("{at}: {prev:?} is this mapping's own Name"))
                }
                (Some(&i), _) => errs.push(format!(
                    "{at}: {prev:?} is the name of mappings[{i}]; a previous name must not be in use"
                )),
                (None, Some(&i)) if i != x.index => errs.push(format!(
                    "{at}: {prev:?} is also a previous name of mappings[{i}]; progress can carry over to one mapping only"
                )),
                _ => {
                    claimed.insert(prev, x.index);
                }
            }
        }
    }
    // Kafka consumer groups: one mapping each per cluster.
    super::kafka_parse::check_groups(&parsed, errs);
    // Earlier releases' default names, where they are unambiguous.
    let mut old_defaults: HashMap<&str, usize> = HashMap::new();
    for x in parsed.iter().filter(|x| !x.explicit_name) {
        if let Some(old) = &x.old_default {
            *old_defaults.entry(old.as_str()).or_default() += 1;
        }
    }
    let keep_old = |x: &Parsed| {
        x.old_default.as_deref().is_some_and(|old| {
            !x.explicit_name
                && old_defaults.get(old) == Some(&1)
                && !current.contains_key(old)
                && !claimed.contains_key(old)
        })
    };
    let keep: Vec<bool> = parsed.iter().map(keep_old).collect();
    parsed
        .into_iter()
        .zip(keep)
        .map(|(x, keep)| {
            let mut m = x.mapping;
            for (_, prev) in x.previous {
                if !m.legacy_names.contains(&prev) {
                    m.legacy_names.push(prev);
                }
            }
            if let (true, Some(old)) = (keep, x.old_default) {
                m.legacy_names.push(old);
            }
            m
        })
        .collect()
}
