//! One lease as the DynamoDB lease table stores it, in the Kinesis Client Library's schema so KCL's
//! runbooks and tooling read sluice's table (issue 10; facts in
//! ../shared/reference/coordination-and-kafka.md): the attribute names and types of KCL's
//! `DynamoDBLeaseSerializer`, and KCL's multi-stream key form `<stream identifier>:<shardId>`, with
//! the mapping's name as the stream identifier. Pure: [`LeaseItem::to_item`] and
//! [`LeaseItem::from_item`] convert to and from the SDK's attribute maps; the conditional writes
//! that take, renew, release and checkpoint a lease are built on them by the table client.
//!
//! Sluice adds one attribute of its own, `sluiceWindow`: an open tumbling window's state, the JSON
//! `{"start_ms":…,"state":{…}}`, written with the checkpoint it belongs to (absent: none open).
//!
//! A name sluice does not write (`pendingCheckpoint…`, `throughputKBps`, `checkpointOwner`, …) is
//! kept as read, so a round trip through sluice never drops what KCL put there.

use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::HashMap;

use crate::checkpoint::{Checkpoint, WindowState};
use crate::model::SequenceNumber;

/// KCL's attribute names.
pub mod attr {
    pub const LEASE_KEY: &str = "leaseKey";
    pub const LEASE_OWNER: &str = "leaseOwner";
    pub const LEASE_COUNTER: &str = "leaseCounter";
    pub const OWNER_SWITCHES: &str = "ownerSwitchesSinceCheckpoint";
    pub const CHECKPOINT: &str = "checkpoint";
    pub const CHECKPOINT_SUB_SEQUENCE: &str = "checkpointSubSequenceNumber";
    /// A string set, despite the singular name (KCL's).
    pub const PARENT_SHARD_IDS: &str = "parentShardId";
    pub const CHILD_SHARD_IDS: &str = "childShardIds";
    pub const STARTING_HASH_KEY: &str = "startingHashKey";
    pub const ENDING_HASH_KEY: &str = "endingHashKey";
    pub const STREAM_NAME: &str = "streamName";
    pub const SHARD_ID: &str = "shardId";
    /// KCL 3's graceful handoff: the previous holder, still finishing, while `leaseOwner` names
    /// the next.
    pub const CHECKPOINT_OWNER: &str = "checkpointOwner";
    /// Sluice's own: the open tumbling window's state, as JSON, beside `checkpoint`.
    pub const WINDOW: &str = "sluiceWindow";
}

/// A lease's `checkpoint`: a sequence number, or one of KCL's sentinels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseCheckpoint {
    /// Nothing read yet; start at the oldest record.
    TrimHorizon,
    /// Nothing read yet; start at the tip.
    Latest,
    /// Nothing read yet; start at the mapping's `StartingPositionTimestamp` (KCL keeps the
    /// timestamp in its configuration, not on the item).
    AtTimestamp,
    /// Everything up to and including this record is done.
    Sequence(SequenceNumber),
    /// The shard was closed and read to its end.
    ShardEnd,
}

impl LeaseCheckpoint {
    /// As stored in `checkpoint`.
    pub fn as_str(&self) -> &str {
        match self {
            LeaseCheckpoint::TrimHorizon => "TRIM_HORIZON",
            LeaseCheckpoint::Latest => "LATEST",
            LeaseCheckpoint::AtTimestamp => "AT_TIMESTAMP",
            LeaseCheckpoint::Sequence(s) => &s.0,
            LeaseCheckpoint::ShardEnd => "SHARD_END",
        }
    }

    fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "TRIM_HORIZON" => LeaseCheckpoint::TrimHorizon,
            "LATEST" => LeaseCheckpoint::Latest,
            "AT_TIMESTAMP" => LeaseCheckpoint::AtTimestamp,
            "SHARD_END" => LeaseCheckpoint::ShardEnd,
            digits if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
                LeaseCheckpoint::Sequence(SequenceNumber(digits.to_string()))
            }
            other => {
                return Err(format!(
                    "{} {other:?} is neither a sequence number nor TRIM_HORIZON, LATEST, AT_TIMESTAMP or SHARD_END",
                    attr::CHECKPOINT
                ))
            }
        })
    }

    /// The committed checkpoint this is, if any (a start sentinel is none).
    pub fn committed(&self) -> Option<Checkpoint> {
        match self {
            LeaseCheckpoint::Sequence(s) => Some(Checkpoint::Sequence(s.clone())),
            LeaseCheckpoint::ShardEnd => Some(Checkpoint::ShardEnd),
            _ => None,
        }
    }
}

impl From<&Checkpoint> for LeaseCheckpoint {
    fn from(cp: &Checkpoint) -> Self {
        match cp {
            Checkpoint::Sequence(s) => LeaseCheckpoint::Sequence(s.clone()),
            Checkpoint::ShardEnd => LeaseCheckpoint::ShardEnd,
        }
    }
}

/// The lease key of `shard` of `mapping`: KCL's multi-stream form.
pub fn lease_key(mapping: &str, shard: &str) -> String {
    format!("{mapping}:{shard}")
}

/// The `(mapping, shard)` of a lease key. Shard ids have no `:`, mapping names may (a DynamoDB
/// stream's label is a timestamp), so the key splits at its last `:`.
pub fn split_lease_key(key: &str) -> Option<(&str, &str)> {
    key.rsplit_once(':')
        .filter(|(mapping, shard)| !mapping.is_empty() && !shard.is_empty())
}

/// One lease item.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseItem {
    pub mapping: String,
    pub shard: String,
    /// `None`: the lease is free.
    pub owner: Option<String>,
    pub counter: u64,
    pub owner_switches_since_checkpoint: u64,
    pub checkpoint: LeaseCheckpoint,
    /// Always 0: sluice does not de-aggregate KPL records.
    pub checkpoint_sub_sequence_number: u64,
    pub parents: Vec<String>,
    pub children: Vec<String>,
    pub hash_range: Option<(String, String)>,
    /// During a handoff, the previous holder that has not yet stopped (`checkpointOwner`).
    pub checkpoint_owner: Option<String>,
    /// The open tumbling window's state stored with `checkpoint` (`sluiceWindow`).
    pub window: Option<WindowState>,
    /// Attributes sluice does not interpret, kept as read.
    pub other: HashMap<String, AttributeValue>,
}

impl LeaseItem {
    /// A new, free lease for `shard` of `mapping`, to be read from `start`.
    pub fn new(mapping: &str, shard: &str, parents: Vec<String>, start: LeaseCheckpoint) -> Self {
        LeaseItem {
            mapping: mapping.to_string(),
            shard: shard.to_string(),
            owner: None,
            counter: 0,
            owner_switches_since_checkpoint: 0,
            checkpoint: start,
            checkpoint_sub_sequence_number: 0,
            parents,
            children: Vec::new(),
            hash_range: None,
            checkpoint_owner: None,
            window: None,
            other: HashMap::new(),
        }
    }

    pub fn key(&self) -> String {
        lease_key(&self.mapping, &self.shard)
    }

    /// The item as stored. Empty sets are left out (DynamoDB has no empty string set).
    pub fn to_item(&self) -> HashMap<String, AttributeValue> {
        let mut item = self.other.clone();
        item.insert(attr::LEASE_KEY.into(), s(&self.key()));
        if let Some(owner) = &self.owner {
            item.insert(attr::LEASE_OWNER.into(), s(owner));
        }
        item.insert(attr::LEASE_COUNTER.into(), n(self.counter));
        item.insert(
            attr::OWNER_SWITCHES.into(),
            n(self.owner_switches_since_checkpoint),
        );
        item.insert(attr::CHECKPOINT.into(), s(self.checkpoint.as_str()));
        item.insert(
            attr::CHECKPOINT_SUB_SEQUENCE.into(),
            n(self.checkpoint_sub_sequence_number),
        );
        for (name, set) in [
            (attr::PARENT_SHARD_IDS, &self.parents),
            (attr::CHILD_SHARD_IDS, &self.children),
        ] {
            if !set.is_empty() {
                item.insert(name.into(), AttributeValue::Ss(set.clone()));
            }
        }
        if let Some((start, end)) = &self.hash_range {
            item.insert(attr::STARTING_HASH_KEY.into(), s(start));
            item.insert(attr::ENDING_HASH_KEY.into(), s(end));
        }
        if let Some(previous) = &self.checkpoint_owner {
            item.insert(attr::CHECKPOINT_OWNER.into(), s(previous));
        }
        if let Some(window) = &self.window {
            item.insert(attr::WINDOW.into(), s(&window_json(window)));
        }
        item.insert(attr::STREAM_NAME.into(), s(&self.mapping));
        item.insert(attr::SHARD_ID.into(), s(&self.shard));
        item
    }

    /// Reads a stored item; the error names the attribute and what is wrong with it.
    pub fn from_item(item: &HashMap<String, AttributeValue>) -> Result<Self, String> {
        let mut rest = item.clone();
        let key = take_s(&mut rest, attr::LEASE_KEY)?
            .ok_or_else(|| format!("{} is missing", attr::LEASE_KEY))?;
        let (mapping, shard) = split_lease_key(&key).ok_or_else(|| {
            format!(
                "{} {key:?} is not of the form <mapping>:<shardId>",
                attr::LEASE_KEY
            )
        })?;
        let (mapping, shard) = (mapping.to_string(), shard.to_string());
        let owner = take_s(&mut rest, attr::LEASE_OWNER)?;
        let counter = take_n(&mut rest, attr::LEASE_COUNTER)?.unwrap_or(0);
        let owner_switches_since_checkpoint = take_n(&mut rest, attr::OWNER_SWITCHES)?.unwrap_or(0);
        let checkpoint = match take_s(&mut rest, attr::CHECKPOINT)? {
            Some(c) => LeaseCheckpoint::parse(&c)?,
            None => LeaseCheckpoint::TrimHorizon,
        };
        let checkpoint_sub_sequence_number =
            take_n(&mut rest, attr::CHECKPOINT_SUB_SEQUENCE)?.unwrap_or(0);
        let parents = take_ss(&mut rest, attr::PARENT_SHARD_IDS)?;
        let children = take_ss(&mut rest, attr::CHILD_SHARD_IDS)?;
        let hash_range = match (
            take_s(&mut rest, attr::STARTING_HASH_KEY)?,
            take_s(&mut rest, attr::ENDING_HASH_KEY)?,
        ) {
            (Some(a), Some(b)) => Some((a, b)),
            _ => None,
        };
        let checkpoint_owner = take_s(&mut rest, attr::CHECKPOINT_OWNER)?;
        let window = match take_s(&mut rest, attr::WINDOW)? {
            Some(json) => Some(
                serde_json::from_str(&json)
                    .map_err(|e| format!("{} is not a window state: {e}", attr::WINDOW))?,
            ),
            None => None,
        };
        // Derived from the key; never trusted over it.
        rest.remove(attr::STREAM_NAME);
        rest.remove(attr::SHARD_ID);
        Ok(LeaseItem {
            mapping,
            shard,
            owner,
            counter,
            owner_switches_since_checkpoint,
            checkpoint,
            checkpoint_sub_sequence_number,
            parents,
            children,
            hash_range,
            checkpoint_owner,
            window,
            other: rest,
        })
    }
}

/// A window state as the `sluiceWindow` attribute holds it.
pub(super) fn window_json(window: &WindowState) -> String {
    serde_json::to_string(window).expect("window states serialize")
}

/// A string attribute.
pub(super) fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

/// A number attribute.
pub(super) fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn take_s(
    item: &mut HashMap<String, AttributeValue>,
    name: &str,
) -> Result<Option<String>, String> {
    match item.remove(name) {
        None => Ok(None),
        Some(AttributeValue::S(v)) => Ok(Some(v)),
        Some(other) => Err(format!("{name} must be a string (S), not {other:?}")),
    }
}

fn take_n(item: &mut HashMap<String, AttributeValue>, name: &str) -> Result<Option<u64>, String> {
    match item.remove(name) {
        None => Ok(None),
        Some(AttributeValue::N(v)) => v
            .parse()
            .map(Some)
            .map_err(|_| format!("{name} {v:?} is not a non-negative whole number")),
        Some(other) => Err(format!("{name} must be a number (N), not {other:?}")),
    }
}

fn take_ss(item: &mut HashMap<String, AttributeValue>, name: &str) -> Result<Vec<String>, String> {
    match item.remove(name) {
        None => Ok(Vec::new()),
        Some(AttributeValue::Ss(mut v)) => {
            v.sort();
            Ok(v)
        }
        Some(other) => Err(format!("{name} must be a string set (SS), not {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A multi-stream lease as KCL 2.x writes it (attribute names and types from its serializer).
    fn kcl_item() -> HashMap<String, AttributeValue> {
        HashMap::from([
            ("leaseKey".into(), s("orders:shardId-000000000002")),
            ("leaseOwner".into(), s("worker-a")),
            ("leaseCounter".into(), n(17)),
            ("ownerSwitchesSinceCheckpoint".into(), n(1)),
            (
                "checkpoint".into(),
                s("49590338271490256608559692538361571095921575989136588898"),
            ),
            ("checkpointSubSequenceNumber".into(), n(0)),
            (
                "parentShardId".into(),
                AttributeValue::Ss(vec![
                    "shardId-000000000001".into(),
                    "shardId-000000000000".into(),
                ]),
            ),
            ("startingHashKey".into(), s("0")),
            (
                "endingHashKey".into(),
                s("170141183460469231731687303715884105727"),
            ),
            ("streamName".into(), s("orders")),
            ("shardId".into(), s("shardId-000000000002")),
            ("throughputKBps".into(), n(12)),
        ])
    }

    #[test]
    fn a_kcl_item_reads_with_its_meaning_and_round_trips_unchanged() {
        let item = LeaseItem::from_item(&kcl_item()).expect("KCL's item reads");
        assert_eq!(item.mapping, "orders");
        assert_eq!(item.shard, "shardId-000000000002");
        assert_eq!(item.owner.as_deref(), Some("worker-a"));
        assert_eq!(item.counter, 17);
        assert_eq!(item.owner_switches_since_checkpoint, 1);
        assert_eq!(
            item.checkpoint.committed(),
            Some(Checkpoint::Sequence(SequenceNumber(
                "49590338271490256608559692538361571095921575989136588898".into()
            )))
        );
        assert_eq!(
            item.parents,
            ["shardId-000000000000", "shardId-000000000001"]
        );
        assert_eq!(
            item.hash_range,
            Some(("0".into(), "170141183460469231731687303715884105727".into()))
        );
        // What sluice does not interpret survives a round trip; the SS order is not significant.
        let mut expected = kcl_item();
        expected.insert(
            "parentShardId".into(),
            AttributeValue::Ss(vec![
                "shardId-000000000000".into(),
                "shardId-000000000001".into(),
            ]),
        );
        assert_eq!(item.to_item(), expected);
    }

    #[test]
    fn a_new_lease_is_free_at_counter_zero_and_has_no_empty_sets() {
        let lease = LeaseItem::new("orders", "shardId-0", vec![], LeaseCheckpoint::Latest);
        let item = lease.to_item();
        assert_eq!(item.get("leaseKey"), Some(&s("orders:shardId-0")));
        assert_eq!(item.get("leaseOwner"), None);
        assert_eq!(item.get("leaseCounter"), Some(&n(0)));
        assert_eq!(item.get("checkpoint"), Some(&s("LATEST")));
        assert!(!item.contains_key("parentShardId"));
        assert!(!item.contains_key("childShardIds"));
        assert_eq!(LeaseItem::from_item(&item), Ok(lease));
    }

    #[test]
    fn an_open_windows_state_round_trips_in_its_own_attribute() {
        let mut lease = LeaseItem::new("m", "shardId-0", vec![], LeaseCheckpoint::TrimHorizon);
        lease.window = Some(WindowState {
            start_ms: 60_000,
            state: serde_json::from_str(r#"{"sum":"3"}"#).unwrap(),
        });
        let item = lease.to_item();
        assert_eq!(
            item.get(attr::WINDOW),
            Some(&s(r#"{"start_ms":60000,"state":{"sum":"3"}}"#))
        );
        assert_eq!(LeaseItem::from_item(&item).unwrap(), lease);
        let mut bad = item.clone();
        bad.insert(attr::WINDOW.into(), s("{"));
        let err = LeaseItem::from_item(&bad).unwrap_err();
        assert!(err.contains("sluiceWindow"), "{err}");
    }

    #[test]
    fn checkpoints_map_to_kcls_sentinels() {
        for (text, cp) in [
            ("TRIM_HORIZON", LeaseCheckpoint::TrimHorizon),
            ("LATEST", LeaseCheckpoint::Latest),
            ("AT_TIMESTAMP", LeaseCheckpoint::AtTimestamp),
            ("SHARD_END", LeaseCheckpoint::ShardEnd),
            (
                "123",
                LeaseCheckpoint::Sequence(SequenceNumber("123".into())),
            ),
        ] {
            assert_eq!(LeaseCheckpoint::parse(text), Ok(cp.clone()));
            assert_eq!(cp.as_str(), text);
        }
        assert_eq!(
            LeaseCheckpoint::from(&Checkpoint::ShardEnd).committed(),
            Some(Checkpoint::ShardEnd)
        );
        assert_eq!(LeaseCheckpoint::Latest.committed(), None);
    }

    #[test]
    fn keys_split_at_the_last_colon_since_mapping_names_may_hold_one() {
        let mapping = "orders/stream/2024-01-01T00:00:00.000";
        let key = lease_key(mapping, "shardId-00000001700000000000-abcdef01");
        assert_eq!(
            split_lease_key(&key),
            Some((mapping, "shardId-00000001700000000000-abcdef01"))
        );
        assert_eq!(split_lease_key("no-colon"), None);
        assert_eq!(split_lease_key(":shard"), None);
        assert_eq!(split_lease_key("mapping:"), None);
    }

    #[test]
    fn a_malformed_item_is_refused_naming_the_attribute() {
        let mut item = kcl_item();
        item.insert("leaseCounter".into(), s("seventeen"));
        let err = LeaseItem::from_item(&item).unwrap_err();
        assert!(err.contains("leaseCounter must be a number (N)"), "{err}");

        let mut item = kcl_item();
        item.insert("checkpoint".into(), s("12ab"));
        let err = LeaseItem::from_item(&item).unwrap_err();
        assert!(err.contains("checkpoint \"12ab\""), "{err}");

        let mut item = kcl_item();
        item.insert("leaseKey".into(), s("shardId-000000000002"));
        let err = LeaseItem::from_item(&item).unwrap_err();
        assert!(err.contains("<mapping>:<shardId>"), "{err}");

        let mut item = kcl_item();
        item.remove("leaseKey");
        assert_eq!(
            LeaseItem::from_item(&item).unwrap_err(),
            "leaseKey is missing"
        );
    }
}
