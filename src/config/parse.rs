//! The YAML walker behind [`super::parse_str`]: reads a `serde_yaml_ng::Value` field by field, applies
//! AWS's defaults and ranges, rejects unknown fields, and collects *every* problem with its path
//! (`mappings[0].BatchSize: 0 is out of range 1..=10000`) instead of stopping at the first.

use super::*;
use serde_yaml_ng::{Mapping as YamlMap, Value};
use std::collections::HashSet;
use std::time::UNIX_EPOCH;

pub(super) fn parse(text: &str) -> Result<Config, ConfigErrors> {
    let root: Value = serde_yaml_ng::from_str(text)
        .map_err(|e| ConfigErrors(vec![format!("config: not valid YAML: {e}")]))?;
    let mut errs = Vec::new();
    let cfg = {
        let mut top = Obj::new("", &root, &mut errs);
        let region = top.string("region");
        let endpoints = top
            .object("endpoints")
            .map(|mut e| {
                let ep = Endpoints {
                    kinesis: e.url("kinesis"),
                    dynamodbstreams: e.url("dynamodbstreams"),
                    lambda: e.url("lambda"),
                    sqs: e.url("sqs"),
                    sns: e.url("sns"),
                    s3: e.url("s3"),
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
        let mut mappings = Vec::new();
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
                    if let Some(mapping) = mapping(&mut m) {
                        mappings.push(mapping);
                    }
                    m.finish();
                }
            }
            Some(_) => top.err("mappings", "must be a list".into()),
        }
        top.finish();
        let mut seen = HashSet::new();
        for (i, m) in mappings.iter().enumerate() {
            if !seen.insert(m.name.clone()) {
                errs.push(format!(
                    "mappings[{i}].Name: {:?} is used by another mapping; names must be unique",
                    m.name
                ));
            }
        }
        Config {
            region,
            endpoints,
            checkpoint_dir: checkpoint_dir.into(),
            admin_listen,
            shutdown_grace: Duration::from_secs(grace as u64),
            shard_discovery_interval: Duration::from_secs(discovery as u64),
            invoke_identity_arn,
            mappings,
        }
    };
    if errs.is_empty() {
        Ok(cfg)
    } else {
        Err(ConfigErrors(errs))
    }
}

fn mapping(m: &mut Obj<'_, '_>) -> Option<Mapping> {
    let name = m.string("Name");
    let source = m
        .required_string("EventSourceArn")
        .and_then(|s| match SourceArn::parse(&s) {
            Ok(a) => Some(a),
            Err(e) => {
                m.err("EventSourceArn", e);
                None
            }
        });
    let target = target(m);
    let queue = source.as_ref().is_some_and(SourceArn::is_queue);
    let fifo = source.as_ref().is_some_and(SourceArn::is_fifo);
    let batch_size = if fifo {
        m.int_for("BatchSize", 1, 10, 10, "for FIFO queues")
    } else {
        m.int("BatchSize", 1, 10_000, None, if queue { 10 } else { 100 })
    } as usize;
    if fifo && m.has("MaximumBatchingWindowInSeconds") {
        m.err(
            "MaximumBatchingWindowInSeconds",
            "is not supported for FIFO queues".into(),
        );
    }
    let window = m.int("MaximumBatchingWindowInSeconds", 0, 300, None, 0);
    if queue && batch_size > 10 && window < 1 && !m.has_error_for("MaximumBatchingWindowInSeconds")
    {
        m.err(
            "BatchSize",
            format!("{batch_size} needs MaximumBatchingWindowInSeconds of at least 1 (AWS's rule for batches over 10)"),
        );
    }
    let max_concurrency = m.object("ScalingConfig").and_then(|mut sc| {
        let v = sc.int("MaximumConcurrency", 2, 1000, None, 0);
        sc.finish();
        (v > 0).then_some(v as u32)
    });
    if !queue && max_concurrency.is_some() {
        m.err("ScalingConfig", "is only supported for SQS sources".into());
    }
    let starting_position = if queue {
        for field in [
            "StartingPosition",
            "StartingPositionTimestamp",
            "MaximumRetryAttempts",
            "MaximumRecordAgeInSeconds",
            "BisectBatchOnFunctionError",
            "DestinationConfig",
        ] {
            if m.has(field) {
                m.take(field);
                m.err(
                    field,
                    "is not supported for SQS sources (failed messages return to the queue: use its redrive policy)".into(),
                );
            }
        }
        Some(StartingPosition::TrimHorizon)
    } else {
        stream_starting_position(m, source.as_ref())
    };
    let enabled = m.bool("Enabled").unwrap_or(true);
    let errors = if queue {
        ErrorHandling {
            report_batch_item_failures: response_types(m),
            ..Default::default()
        }
    } else {
        error_handling(m)
    };
    let (source, target, starting_position) = (source?, target?, starting_position?);
    let name = name.unwrap_or_else(|| format!("{}-{}", source.resource_name(), target.label()));
    Some(Mapping {
        name,
        source,
        target,
        batch_size,
        batching_window: Duration::from_secs(window as u64),
        starting_position,
        max_concurrency,
        enabled,
        errors,
    })
}

/// StartingPosition (+ StartingPositionTimestamp) for a stream source.
fn stream_starting_position(
    m: &mut Obj<'_, '_>,
    source: Option<&SourceArn>,
) -> Option<StartingPosition> {
    let timestamp = m.number("StartingPositionTimestamp");
    let position = match m.string("StartingPosition").as_deref() {
        None => {
            m.err(
                "StartingPosition",
                "is required for stream sources (TRIM_HORIZON | LATEST | AT_TIMESTAMP)".into(),
            );
            None
        }
        Some("TRIM_HORIZON") => Some(StartingPosition::TrimHorizon),
        Some("LATEST") => Some(StartingPosition::Latest),
        Some("AT_TIMESTAMP") if matches!(source, Some(SourceArn::DynamoDb { .. })) => {
            m.err(
                "StartingPosition",
                "AT_TIMESTAMP is not supported for DynamoDB Streams (use TRIM_HORIZON or LATEST)"
                    .into(),
            );
            None
        }
        Some("AT_TIMESTAMP") => match timestamp {
            Some(ts) if ts >= 0.0 => Some(StartingPosition::AtTimestamp(
                UNIX_EPOCH + Duration::from_secs_f64(ts),
            )),
            Some(ts) => {
                m.err(
                    "StartingPositionTimestamp",
                    format!("{ts} must be epoch seconds >= 0"),
                );
                None
            }
            None => {
                m.err(
                    "StartingPositionTimestamp",
                    "is required when StartingPosition is AT_TIMESTAMP".into(),
                );
                None
            }
        },
        Some(other) => {
            m.err(
                "StartingPosition",
                format!("{other:?} is not one of TRIM_HORIZON, LATEST, AT_TIMESTAMP"),
            );
            None
        }
    };
    if timestamp.is_some()
        && !matches!(position, Some(StartingPosition::AtTimestamp(_)))
        && !m.has_error_for("StartingPosition")
    {
        m.err(
            "StartingPositionTimestamp",
            "is only allowed with StartingPosition AT_TIMESTAMP".into(),
        );
    }
    position
}

fn target(m: &mut Obj<'_, '_>) -> Option<Target> {
    let function = m.string("FunctionName");
    let http = m.object("Http").map(|mut h| {
        let url = h.url("Url");
        if url.is_none() && !h.has_error_for("Url") {
            h.err("Url", "is required".into());
        }
        let headers = h.string_map("Headers");
        let timeout = h.int("TimeoutSeconds", 1, 900, None, 30);
        h.finish();
        url.map(|url| HttpTarget {
            url,
            headers,
            timeout: Duration::from_secs(timeout as u64),
        })
    });
    match (function, http) {
        (Some(_), Some(_)) => {
            m.err(
                "FunctionName",
                "and Http are mutually exclusive: give one target".into(),
            );
            None
        }
        (Some(f), None) => {
            let valid = !f.is_empty()
                && f.len() <= 140
                && f.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_:$.".contains(c));
            if valid {
                Some(Target::Lambda { function_name: f })
            } else {
                m.err(
                    "FunctionName",
                    format!("{f:?} is not a function name, name:alias or function ARN"),
                );
                None
            }
        }
        (None, Some(h)) => h.map(Target::Http),
        (None, None) => {
            m.err(
                "FunctionName",
                "is required (or give an Http target)".into(),
            );
            None
        }
    }
}

fn error_handling(m: &mut Obj<'_, '_>) -> ErrorHandling {
    let attempts = m.int("MaximumRetryAttempts", 0, 10_000, Some(-1), -1);
    let age = m.int("MaximumRecordAgeInSeconds", 60, 604_800, Some(-1), -1);
    let bisect = m.bool("BisectBatchOnFunctionError").unwrap_or(false);
    let report = response_types(m);
    let on_failure = m.object("DestinationConfig").and_then(|mut d| {
        let dest = d.object("OnFailure").and_then(|mut o| {
            let arn =
                o.required_string("Destination")
                    .and_then(|s| match DestinationArn::parse(&s) {
                        Ok(a) => Some(a),
                        Err(e) => {
                            o.err("Destination", e);
                            None
                        }
                    });
            o.finish();
            arn
        });
        d.finish();
        dest
    });
    ErrorHandling {
        max_retry_attempts: (attempts >= 0).then_some(attempts as u32),
        max_record_age: (age >= 0).then(|| Duration::from_secs(age as u64)),
        bisect_on_function_error: bisect,
        report_batch_item_failures: report,
        on_failure,
    }
}

/// `FunctionResponseTypes`: true when it lists ReportBatchItemFailures.
fn response_types(m: &mut Obj<'_, '_>) -> bool {
    let mut report = false;
    match m.take("FunctionResponseTypes") {
        None | Some(Value::Null) => {}
        Some(Value::Sequence(items)) => {
            if items.len() > 1 {
                m.err("FunctionResponseTypes", "takes at most one item".into());
            }
            for item in items {
                match item.as_str() {
                    Some("ReportBatchItemFailures") => report = true,
                    _ => m.err(
                        "FunctionResponseTypes",
                        format!("{} is not ReportBatchItemFailures", show(item)),
                    ),
                }
            }
        }
        Some(v) => m.err(
            "FunctionResponseTypes",
            format!("{} must be a list", show(v)),
        ),
    }
    report
}

/// One YAML object being read: remembers which keys were taken so the rest can be reported unknown.
struct Obj<'v, 'e> {
    path: String,
    map: Option<&'v YamlMap>,
    taken: HashSet<String>,
    errs: &'e mut Vec<String>,
    start: usize,
}

impl<'v, 'e> Obj<'v, 'e> {
    fn new(path: &str, value: &'v Value, errs: &'e mut Vec<String>) -> Self {
        let map = match value {
            Value::Mapping(m) => Some(m),
            Value::Null if path.is_empty() => None,
            other => {
                let at = if path.is_empty() { "config" } else { path };
                errs.push(format!("{at}: {} must be a mapping of fields", show(other)));
                None
            }
        };
        let start = errs.len();
        Obj {
            path: path.to_string(),
            map,
            taken: HashSet::new(),
            errs,
            start,
        }
    }

    fn field_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn err(&mut self, key: &str, msg: String) {
        let p = self.field_path(key);
        self.errs.push(format!("{p}: {msg}"));
    }

    fn has_error_for(&self, key: &str) -> bool {
        let p = format!("{}:", self.field_path(key));
        self.errs[self.start..].iter().any(|e| e.starts_with(&p))
    }

    /// True when the field is given (even as null).
    fn has(&self, key: &str) -> bool {
        self.map.is_some_and(|m| m.contains_key(key))
    }

    /// An integer in `min..=max` whose range holds only in some context (`why`, e.g. "for FIFO queues").
    fn int_for(&mut self, key: &str, min: i64, max: i64, default: i64, why: &str) -> i64 {
        match self.map.and_then(|m| m.get(key)).and_then(Value::as_i64) {
            Some(v) if !(min..=max).contains(&v) => {
                self.taken.insert(key.to_string());
                self.err(key, format!("{v} is out of range {min}..={max} {why}"));
                default
            }
            _ => self.int(key, min, max, None, default),
        }
    }

    fn take(&mut self, key: &str) -> Option<&'v Value> {
        self.taken.insert(key.to_string());
        self.map?.get(key)
    }

    fn string(&mut self, key: &str) -> Option<String> {
        match self.take(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => {
                self.err(key, format!("{} must be a string", show(other)));
                None
            }
        }
    }

    fn required_string(&mut self, key: &str) -> Option<String> {
        let v = self.string(key);
        if v.is_none() && !self.has_error_for(key) {
            self.err(key, "is required".into());
        }
        v
    }

    fn url(&mut self, key: &str) -> Option<String> {
        let s = self.string(key)?;
        match reqwest::Url::parse(&s) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Some(s),
            _ => {
                self.err(key, format!("{s:?} is not an http:// or https:// URL"));
                None
            }
        }
    }

    fn bool(&mut self, key: &str) -> Option<bool> {
        match self.take(key)? {
            Value::Bool(b) => Some(*b),
            Value::Null => None,
            other => {
                self.err(key, format!("{} must be true or false", show(other)));
                None
            }
        }
    }

    fn number(&mut self, key: &str) -> Option<f64> {
        match self.take(key)? {
            Value::Number(n) => n.as_f64(),
            Value::Null => None,
            other => {
                self.err(key, format!("{} must be a number", show(other)));
                None
            }
        }
    }

    /// An integer in `min..=max` (or exactly `sentinel`, AWS's -1), else `default` with an error.
    fn int(&mut self, key: &str, min: i64, max: i64, sentinel: Option<i64>, default: i64) -> i64 {
        let range = match sentinel {
            Some(s) => format!("{s} or {min}..={max}"),
            None => format!("{min}..={max}"),
        };
        match self.take(key) {
            None | Some(Value::Null) => default,
            Some(Value::Number(n)) => match n.as_i64() {
                Some(v) if Some(v) == sentinel || (min..=max).contains(&v) => v,
                Some(v) => {
                    self.err(key, format!("{v} is out of range {range}"));
                    default
                }
                None => {
                    self.err(key, format!("{n} is not a whole number in range {range}"));
                    default
                }
            },
            Some(other) => {
                self.err(
                    key,
                    format!("{} must be a whole number in range {range}", show(other)),
                );
                default
            }
        }
    }

    fn parsed<T: std::str::FromStr>(&mut self, key: &str, what: &str) -> Option<T> {
        let s = self.string(key)?;
        match s.parse() {
            Ok(v) => Some(v),
            Err(_) => {
                self.err(key, format!("{s:?} is not {what}"));
                None
            }
        }
    }

    fn string_map(&mut self, key: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        match self.take(key) {
            None | Some(Value::Null) => {}
            Some(Value::Mapping(m)) => {
                for (k, v) in m {
                    match (k.as_str(), v.as_str()) {
                        (Some(k), Some(v))
                            if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_ok()
                                && reqwest::header::HeaderValue::from_str(v).is_ok() =>
                        {
                            out.insert(k.to_string(), v.to_string());
                        }
                        _ => self.err(
                            key,
                            format!(
                                "{}: {} is not a valid header name and string value",
                                show(k),
                                show(v)
                            ),
                        ),
                    }
                }
            }
            Some(other) => self.err(
                key,
                format!(
                    "{} must be a mapping of header names to values",
                    show(other)
                ),
            ),
        }
        out
    }

    fn object<'s>(&'s mut self, key: &str) -> Option<Obj<'v, 's>> {
        let path = self.field_path(key);
        let v = self.take(key)?;
        if v.is_null() {
            return None;
        }
        Some(Obj::new(&path, v, self.errs))
    }

    /// Reports every key that no reader took.
    fn finish(self) {
        let Some(map) = self.map else { return };
        for k in map.keys() {
            let name = k.as_str().map(str::to_string).unwrap_or_else(|| show(k));
            if !self.taken.contains(&name) {
                let p = if self.path.is_empty() {
                    name
                } else {
                    format!("{}.{name}", self.path)
                };
                self.errs.push(format!("{p}: unknown field"));
            }
        }
    }
}

fn show(v: &Value) -> String {
    serde_yaml_ng::to_string(v)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:kinesis:us-east-1:000000000000:stream/orders";

    fn errors(yaml: &str) -> Vec<String> {
        parse(yaml).expect_err("config should be rejected").0
    }

    #[test]
    fn defaults_follow_aws() {
        let c = parse(&format!(
            "mappings:\n  - EventSourceArn: {ARN}\n    FunctionName: f\n    StartingPosition: LATEST\n"
        ))
        .unwrap();
        let m = &c.mappings[0];
        assert_eq!(m.batch_size, 100);
        assert_eq!(m.batching_window, Duration::ZERO);
        assert!(m.enabled);
        assert_eq!(m.name, "orders-f");
        assert_eq!(m.errors.max_retry_attempts, None);
        assert_eq!(m.errors.max_record_age, None);
        assert!(!m.errors.bisect_on_function_error);
        assert_eq!(c.shutdown_grace, Duration::from_secs(25));
        assert_eq!(c.admin_listen.port(), 9090);
    }

    #[test]
    fn every_problem_is_listed_with_its_path() {
        let errs = errors(&format!(
            "bogus: 1\nmappings:\n  - EventSourceArn: {ARN}\n    FunctionName: f\n    StartingPosition: LATEST\n    BatchSize: 0\n    MaximumBatchingWindowInSeconds: 301\n    Extra: x\n  - EventSourceArn: nope\n    Http: {{ Url: 'ftp://x', TimeoutSeconds: 0 }}\n    StartingPosition: EARLIEST\n    MaximumRecordAgeInSeconds: 59\n"
        ));
        for want in [
            "bogus: unknown field",
            "mappings[0].BatchSize: 0 is out of range 1..=10000",
            "mappings[0].MaximumBatchingWindowInSeconds: 301 is out of range 0..=300",
            "mappings[0].Extra: unknown field",
            "mappings[1].EventSourceArn: \"nope\" is not an ARN",
            "mappings[1].Http.Url: \"ftp://x\" is not an http:// or https:// URL",
            "mappings[1].Http.TimeoutSeconds: 0 is out of range 1..=900",
            "mappings[1].StartingPosition: \"EARLIEST\" is not one of",
            "mappings[1].MaximumRecordAgeInSeconds: 59 is out of range -1 or 60..=604800",
        ] {
            assert!(
                errs.iter().any(|e| e.starts_with(want)),
                "missing {want:?} in {errs:#?}"
            );
        }
        assert_eq!(errs.len(), 9, "{errs:#?}");
    }

    #[test]
    fn error_handling_fields() {
        let c = parse(&format!(
            "mappings:\n  - EventSourceArn: {ARN}\n    FunctionName: arn:aws:lambda:us-east-1:1:function:f:live\n    StartingPosition: AT_TIMESTAMP\n    StartingPositionTimestamp: 1700000000.5\n    MaximumRetryAttempts: 2\n    MaximumRecordAgeInSeconds: 60\n    BisectBatchOnFunctionError: true\n    FunctionResponseTypes: [ReportBatchItemFailures]\n    DestinationConfig: {{ OnFailure: {{ Destination: 'arn:aws:sqs:us-east-1:1:dlq' }} }}\n"
        ))
        .unwrap();
        let e = &c.mappings[0].errors;
        assert_eq!(e.max_retry_attempts, Some(2));
        assert_eq!(e.max_record_age, Some(Duration::from_secs(60)));
        assert!(e.bisect_on_function_error && e.report_batch_item_failures);
        assert!(matches!(e.on_failure, Some(DestinationArn::Sqs { .. })));
        assert_eq!(c.mappings[0].name, "orders-f:live");
    }

    #[test]
    fn dynamodb_streams_reject_at_timestamp() {
        let errs = errors("mappings:\n  - EventSourceArn: arn:aws:dynamodb:us-east-1:1:table/t/stream/2020-01-01T00:00:00.000\n    FunctionName: f\n    StartingPosition: AT_TIMESTAMP\n    StartingPositionTimestamp: 1\n");
        assert_eq!(errs, vec!["mappings[0].StartingPosition: AT_TIMESTAMP is not supported for DynamoDB Streams (use TRIM_HORIZON or LATEST)"]);
    }

    #[test]
    fn sqs_rules() {
        let q = "arn:aws:sqs:us-east-1:1:q";
        let c = parse(&format!("mappings:\n  - EventSourceArn: {q}\n    FunctionName: f\n    ScalingConfig: {{ MaximumConcurrency: 50 }}\n")).unwrap();
        assert_eq!(c.mappings[0].batch_size, 10, "SQS's default BatchSize");
        assert_eq!(c.mappings[0].max_concurrency, Some(50));
        let errs = errors(&format!(
            "mappings:\n  - EventSourceArn: {q}\n    FunctionName: f\n    BatchSize: 20\n  - EventSourceArn: {q}.fifo\n    FunctionName: f\n    BatchSize: 11\n    MaximumBatchingWindowInSeconds: 1\n  - EventSourceArn: {q}\n    Name: other\n    FunctionName: f\n    StartingPosition: LATEST\n    MaximumRetryAttempts: 1\n    ScalingConfig: {{ MaximumConcurrency: 1 }}\n  - EventSourceArn: {ARN}\n    FunctionName: f\n    StartingPosition: LATEST\n    ScalingConfig: {{ MaximumConcurrency: 5 }}\n"
        ));
        for want in [
            "mappings[0].BatchSize: 20 needs MaximumBatchingWindowInSeconds of at least 1",
            "mappings[1].BatchSize: 11 is out of range 1..=10 for FIFO queues",
            "mappings[1].MaximumBatchingWindowInSeconds: is not supported for FIFO queues",
            "mappings[2].StartingPosition: is not supported for SQS sources",
            "mappings[2].MaximumRetryAttempts: is not supported for SQS sources",
            "mappings[2].ScalingConfig.MaximumConcurrency: 1 is out of range 2..=1000",
            "mappings[3].ScalingConfig: is only supported for SQS sources",
        ] {
            assert!(
                errs.iter().any(|e| e.starts_with(want)),
                "missing {want:?} in {errs:#?}"
            );
        }
        assert_eq!(errs.len(), 7, "{errs:#?}");
        // A window of 1 s allows batches over 10 on a standard queue.
        assert!(parse(&format!("mappings:\n  - {{ EventSourceArn: {q}, FunctionName: f, BatchSize: 100, MaximumBatchingWindowInSeconds: 1 }}\n")).is_ok());
    }

    #[test]
    fn targets_are_exclusive_and_required() {
        let errs = errors(&format!(
            "mappings:\n  - EventSourceArn: {ARN}\n    StartingPosition: LATEST\n  - EventSourceArn: {ARN}\n    StartingPosition: LATEST\n    FunctionName: f\n    Http: {{ Url: 'http://x' }}\n"
        ));
        assert!(
            errs[0].starts_with("mappings[0].FunctionName: is required"),
            "{errs:?}"
        );
        assert!(
            errs[1].starts_with("mappings[1].FunctionName: and Http are mutually exclusive"),
            "{errs:?}"
        );
    }

    #[test]
    fn duplicate_names_and_missing_mappings() {
        assert_eq!(
            errors("region: x\n"),
            vec!["mappings: is required (a list of event source mappings)"]
        );
        let errs = errors(&format!(
            "mappings:\n  - {{ Name: a, EventSourceArn: {ARN}, FunctionName: f, StartingPosition: LATEST }}\n  - {{ Name: a, EventSourceArn: {ARN}, FunctionName: g, StartingPosition: LATEST }}\n"
        ));
        assert_eq!(
            errs,
            vec!["mappings[1].Name: \"a\" is used by another mapping; names must be unique"]
        );
    }
}
