//! What a reload changes, decided without I/O: [`plan`] compares the mappings running with the
//! mappings of the new config (by name, as typed values) and says which start, stop, restart or
//! stay; [`restart_only_changes`] lists the process settings that differ and cannot change without a
//! restart (a reload that changes one is refused); [`fingerprint`] names a config's content.
//!
//! A mapping is identified by its `name` (its checkpoint key). Only enabled mappings run, so a
//! mapping disabled in the new config (`Enabled: false`) stops and one enabled again starts. A
//! mapping whose typed value differs in any field restarts: it stops, then starts again from its
//! checkpoints with the new settings.

use crate::config::{Config, Mapping};

/// The changes of one reload.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    /// Enabled in the new config and not running: they start (new config order).
    pub start: Vec<Mapping>,
    /// Running and gone from the new config, or disabled there: they drain and stop (names, in
    /// the running order).
    pub stop: Vec<String>,
    /// Running and changed: they drain and stop, then start from their checkpoints with these
    /// settings (new config order).
    pub restart: Vec<Mapping>,
    /// Running and identical in the new config: untouched (names, new config order).
    pub keep: Vec<String>,
}

impl Plan {
    /// Nothing starts, stops or restarts.
    pub fn is_empty(&self) -> bool {
        self.start.is_empty() && self.stop.is_empty() && self.restart.is_empty()
    }

    /// One line for the log: the names in each set.
    pub fn summary(&self) -> String {
        fn names(v: &[Mapping]) -> Vec<&str> {
            v.iter().map(|m| m.name.as_str()).collect()
        }
        format!(
            "start {:?}, stop {:?}, restart {:?}, keep {:?}",
            names(&self.start),
            self.stop,
            names(&self.restart),
            self.keep
        )
    }
}

/// The changes that take the enabled mappings of `old` (those running) to the enabled mappings of
/// `new`. Disabled entries on either side are not running.
pub fn plan(old: &[Mapping], new: &[Mapping]) -> Plan {
    let running = |name: &str| old.iter().find(|m| m.enabled && m.name == name);
    let wanted = |name: &str| new.iter().any(|m| m.enabled && m.name == name);
    let mut out = Plan::default();
    for m in new.iter().filter(|m| m.enabled) {
        match running(&m.name) {
            None => out.start.push(m.clone()),
            Some(was) if was == m => out.keep.push(m.name.clone()),
            Some(_) => out.restart.push(m.clone()),
        }
    }
    out.stop = old
        .iter()
        .filter(|m| m.enabled && !wanted(&m.name))
        .map(|m| m.name.clone())
        .collect();
    out
}

/// Why a reload from `old` to `new` is refused: one line per process setting that differs and
/// takes a restart to change, naming the key. Empty when only reloadable things changed (the
/// `mappings` list and `shutdown_grace_period_seconds`).
pub fn restart_only_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |key: &str, was: String, now: String| {
        if was != now {
            out.push(format!(
                "{key}: changed from {was} to {now}; this setting takes a restart to change"
            ));
        }
    };
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "(unset)".into());
    check("region", opt(&old.region), opt(&new.region));
    let (a, b) = (&old.endpoints, &new.endpoints);
    for (key, was, now) in [
        ("kinesis", &a.kinesis, &b.kinesis),
        ("dynamodb", &a.dynamodb, &b.dynamodb),
        ("dynamodbstreams", &a.dynamodbstreams, &b.dynamodbstreams),
        ("lambda", &a.lambda, &b.lambda),
        ("sqs", &a.sqs, &b.sqs),
        ("sns", &a.sns, &b.sns),
        ("s3", &a.s3, &b.s3),
        ("secretsmanager", &a.secretsmanager, &b.secretsmanager),
        ("kafka", &a.kafka, &b.kafka),
    ] {
        check(&format!("endpoints.{key}"), opt(was), opt(now));
    }
    check(
        "checkpoint_dir",
        old.checkpoint_dir.display().to_string(),
        new.checkpoint_dir.display().to_string(),
    );
    check(
        "admin_listen",
        old.admin_listen.to_string(),
        new.admin_listen.to_string(),
    );
    check(
        "shard_discovery_interval_seconds",
        old.shard_discovery_interval.as_secs().to_string(),
        new.shard_discovery_interval.as_secs().to_string(),
    );
    check(
        "invoke_identity_arn",
        format!("{:?}", old.invoke_identity_arn),
        format!("{:?}", new.invoke_identity_arn),
    );
    check(
        "max_in_flight_bytes",
        old.max_in_flight_bytes.to_string(),
        new.max_in_flight_bytes.to_string(),
    );
    if old.coordination != new.coordination {
        let shown = |c: &Option<crate::config::Coordination>| match c {
            None => "(unset: one replica)".to_string(),
            Some(c) => format!("lease table {} as {}", c.lease_table, c.worker_id),
        };
        let (was, now) = (shown(&old.coordination), shown(&new.coordination));
        out.push(if was == now {
            "coordination: its settings changed; this setting takes a restart to change".to_string()
        } else {
            format!(
                "coordination: changed from {was} to {now}; this setting takes a restart to change"
            )
        });
    }
    out
}

/// A short name for a config's content (16 hex digits): equal configs, after the command line's
/// overrides, have equal fingerprints whatever their comments and layout. FNV-1a over the typed
/// value's debug form; stable within one build, not a security hash.
pub fn fingerprint(cfg: &Config) -> String {
    let text = format!("{cfg:?}");
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str;

    const HEAD: &str = "region: us-east-1\nmappings:\n";

    fn kinesis(name: &str, extra: &str) -> String {
        format!("  - Name: {name}\n    EventSourceArn: arn:aws:kinesis:us-east-1:000000000000:stream/{name}\n    StartingPosition: TRIM_HORIZON\n    Http: {{ Url: 'http://127.0.0.1:1/' }}\n{extra}")
    }

    fn queue(name: &str, extra: &str) -> String {
        format!("  - Name: {name}\n    EventSourceArn: arn:aws:sqs:us-east-1:000000000000:{name}\n    FunctionName: f\n{extra}")
    }

    fn cfg(items: &[String]) -> Config {
        parse_str(&format!("{HEAD}{}", items.concat())).expect("test config")
    }

    fn names(v: &[Mapping]) -> Vec<&str> {
        v.iter().map(|m| m.name.as_str()).collect()
    }

    #[test]
    fn the_same_mappings_plan_nothing() {
        let a = cfg(&[kinesis("k", ""), queue("q", "")]);
        let p = plan(
            &a.mappings,
            &cfg(&[kinesis("k", ""), queue("q", "")]).mappings,
        );
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(p.keep, ["k", "q"]);
    }

    #[test]
    fn added_removed_and_changed_mappings_start_stop_and_restart() {
        let old = cfg(&[kinesis("k", ""), queue("q", ""), queue("gone", "")]);
        let new = cfg(&[
            queue("added", ""),
            kinesis("k", "    BatchSize: 7\n"),
            queue("q", ""),
        ]);
        let p = plan(&old.mappings, &new.mappings);
        assert_eq!(names(&p.start), ["added"]);
        assert_eq!(p.stop, ["gone"]);
        assert_eq!(names(&p.restart), ["k"]);
        assert_eq!(
            p.restart[0].batching.batch_size, 7,
            "restarts with the new settings"
        );
        assert_eq!(p.keep, ["q"]);
        assert!(!p.is_empty());
        assert_eq!(
            p.summary(),
            r#"start ["added"], stop ["gone"], restart ["k"], keep ["q"]"#
        );
    }

    #[test]
    fn disabling_stops_and_enabling_starts() {
        let on = cfg(&[kinesis("k", ""), queue("q", "")]);
        let off = cfg(&[kinesis("k", "    Enabled: false\n"), queue("q", "")]);
        let p = plan(&on.mappings, &off.mappings);
        assert_eq!(p.stop, ["k"]);
        assert!(p.start.is_empty() && p.restart.is_empty());
        assert_eq!(p.keep, ["q"]);
        let p = plan(&off.mappings, &on.mappings);
        assert_eq!(names(&p.start), ["k"], "a disabled mapping was not running");
        assert!(p.stop.is_empty() && p.restart.is_empty());
        // Disabled on both sides, whatever else changed: nothing runs, nothing to do.
        let off2 = cfg(&[
            kinesis("k", "    Enabled: false\n    BatchSize: 9\n"),
            queue("q", ""),
        ]);
        assert!(plan(&off.mappings, &off2.mappings).is_empty());
    }

    #[test]
    fn any_field_that_differs_restarts_the_mapping() {
        let base = cfg(&[queue("q", "")]);
        for extra in [
            "    BatchSize: 3\n",
            "    MaximumBatchingWindowInSeconds: 2\n",
            "    ScalingConfig: { MaximumConcurrency: 4 }\n",
            "    FunctionResponseTypes: [ReportBatchItemFailures]\n",
            "    FilterCriteria: { Filters: [ { Pattern: '{\"body\": {\"a\": [1]}}' } ] }\n",
            "    PreviousNames: [old-q]\n",
        ] {
            let p = plan(&base.mappings, &cfg(&[queue("q", extra)]).mappings);
            assert_eq!(names(&p.restart), ["q"], "{extra}");
            assert!(p.start.is_empty() && p.stop.is_empty(), "{extra}");
        }
        // The target: a function name instead of another.
        let other = parse_str(&format!(
            "{HEAD}{}",
            queue("q", "").replace("FunctionName: f", "FunctionName: g")
        ))
        .unwrap();
        assert_eq!(names(&plan(&base.mappings, &other.mappings).restart), ["q"]);
    }

    #[test]
    fn a_renamed_mapping_stops_under_its_old_name_and_starts_under_the_new() {
        let old = cfg(&[queue("q", "")]);
        let new = parse_str(&format!(
            "{HEAD}  - Name: q2\n    PreviousNames: [q]\n    EventSourceArn: arn:aws:sqs:us-east-1:000000000000:q\n    FunctionName: f\n"
        ))
        .unwrap();
        let p = plan(&old.mappings, &new.mappings);
        assert_eq!(p.stop, ["q"]);
        assert_eq!(names(&p.start), ["q2"]);
    }

    #[test]
    fn process_settings_that_take_a_restart_are_named() {
        let base = "region: us-east-1\nadmin_listen: 127.0.0.1:9090\nmappings:\n";
        let a = parse_str(&format!("{base}{}", queue("q", ""))).unwrap();
        let same = parse_str(&format!(
            "# a comment\n{base}{}\nshutdown_grace_period_seconds: 3\n",
            queue("q", "    BatchSize: 2\n")
        ))
        .unwrap();
        assert!(
            restart_only_changes(&a, &same).is_empty(),
            "mappings and the grace period reload"
        );
        let b = parse_str(&format!(
            "region: us-west-2\nadmin_listen: 127.0.0.1:9091\nendpoints: {{ sqs: 'http://127.0.0.1:5000' }}\nmax_in_flight_bytes: 33554432\ncoordination: {{ lease_table: leases, worker_id: w }}\nmappings:\n{}",
            queue("q", "")
        ))
        .unwrap();
        let why = restart_only_changes(&a, &b);
        let keys: Vec<&str> = why.iter().map(|l| l.split(':').next().unwrap()).collect();
        assert_eq!(
            keys,
            [
                "region",
                "endpoints.sqs",
                "admin_listen",
                "max_in_flight_bytes",
                "coordination"
            ],
            "{why:#?}"
        );
        assert!(
            why[2].contains("from 127.0.0.1:9090 to 127.0.0.1:9091"),
            "{}",
            why[2]
        );
        assert!(why.iter().all(|l| l.ends_with("takes a restart to change")));
    }

    #[test]
    fn the_fingerprint_follows_the_content_not_the_layout() {
        let a = cfg(&[queue("q", "")]);
        let b = parse_str(&format!("# comment\n\n{HEAD}{}", queue("q", ""))).unwrap();
        let c = cfg(&[queue("q", "    BatchSize: 2\n")]);
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&c));
        assert_eq!(fingerprint(&a).len(), 16);
    }
}
