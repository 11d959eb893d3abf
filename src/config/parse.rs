//! The YAML reader behind [`super::parse_str`]: reads a `serde_yaml_ng::Value` field by field, applies
//! AWS's defaults and ranges, rejects unknown fields, and collects *every* problem with its path
//! (`mappings[0].BatchSize: 0 is out of range 1..=10000`) instead of stopping at the first. This file
//! holds the process settings; the `coordination` section is read by [`super::coordination`], each
//! mapping by [`super::mapping`], and names across mappings are checked by [`super::names`].

use super::coordination::coordination;
use super::kafka;
use super::mapping::mapping;
use super::names;
use super::obj::Obj;
use super::*;
use serde_yaml_ng::Value;

/// `max_in_flight_bytes`: default 256 MiB, range 16 MiB..=64 GiB.
pub(super) const MAX_IN_FLIGHT_BYTES: (i64, i64, i64) = (16 << 20, 64 << 30, 256 << 20);

/// Parses `text` as of the current time (which bounds `StartingPositionTimestamp`).
pub(super) fn parse(text: &str) -> Result<Config, ConfigErrors> {
    parse_at(text, SystemTime::now())
}

/// Parses `text` as of `now`; pure.
pub(super) fn parse_at(text: &str, now: SystemTime) -> Result<Config, ConfigErrors> {
    let root: Value = serde_yaml_ng::from_str(text)
        .map_err(|e| ConfigErrors(vec![format!("config: not valid YAML: {e}")]))?;
    let mut errs = Vec::new();
    let cfg = {
        let mut top = Obj::new("", &root, &mut errs);
        let region = top.string("region");
        // Self-managed Kafka mappings' region: `region`, else AWS_REGION / AWS_DEFAULT_REGION.
        let self_managed_region = kafka::self_managed_region(
            region.as_deref(),
            std::env::var("AWS_REGION").ok(),
            std::env::var("AWS_DEFAULT_REGION").ok(),
        );
        let endpoints = top
            .object("endpoints")
            .map(|mut e| {
                let ep = Endpoints {
                    kinesis: e.url("kinesis"),
                    dynamodb: e.url("dynamodb"),
                    dynamodbstreams: e.url("dynamodbstreams"),
                    lambda: e.url("lambda"),
                    sqs: e.url("sqs"),
                    sns: e.url("sns"),
                    s3: e.url("s3"),
                    secretsmanager: e.url("secretsmanager"),
                    kafka: e.url("kafka"),
                };
                e.finish();
                ep
            })
            .unwrap_or_default();
        let checkpoint_dir = top
            .string("checkpoint_dir")
            .unwrap_or_else(|| "sluice-checkpoints".into());
        let admin_listen = top
            .parsed::<SocketAddr>("admin_listen", "a socket address such as 0.0.0.0:9090")
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 9090)));
        let grace = top.int("shutdown_grace_period_seconds", 0, 3600, None, 25);
        let discovery = top.int("shard_discovery_interval_seconds", 1, 3600, None, 30);
        let invoke_identity_arn = top.string("invoke_identity_arn").unwrap_or_default();
        let (min, max, default) = MAX_IN_FLIGHT_BYTES;
        let max_in_flight_bytes = top.int("max_in_flight_bytes", min, max, None, default);
        let coordination = coordination(&mut top);
        let mut parsed = Vec::new();
        match top.take("mappings") {
            None => top.err(
                "mappings",
                "is required (a list of event source mappings)".into(),
            ),
            Some(Value::Sequence(items)) => {
                if items.is_empty() {
                    top.err("mappings", "must list at least one mapping".into());
                }
                for (i, item) in items.iter().enumerate() {
                    let mut m = Obj::new(&format!("mappings[{i}]"), item, top.errs);
                    if let Some(p) = mapping(&mut m, i, now, &self_managed_region) {
                        parsed.push(p);
                    }
                    m.finish();
                }
            }
            Some(_) => top.err("mappings", "must be a list".into()),
        }
        top.finish();
        Config {
            region,
            endpoints,
            checkpoint_dir: checkpoint_dir.into(),
            admin_listen,
            shutdown_grace: Duration::from_secs(grace as u64),
            shard_discovery_interval: Duration::from_secs(discovery as u64),
            invoke_identity_arn,
            max_in_flight_bytes: max_in_flight_bytes as u64,
            coordination,
            mappings: names::resolve(parsed, &mut errs),
        }
    };
    if errs.is_empty() {
        Ok(cfg)
    } else {
        Err(ConfigErrors(errs))
    }
}
