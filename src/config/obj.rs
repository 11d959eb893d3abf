//! The YAML object walker under the config parser: reads one `serde_yaml_ng` mapping field by field,
//! records each problem with its full path (`mappings[0].BatchSize: 0 is out of range 1..=10000`),
//! and reports every key no reader took as unknown.

use serde_yaml_ng::{Mapping as YamlMap, Value};
use std::collections::{BTreeMap, HashSet};

/// One YAML object being read: remembers which keys were taken so the rest can be reported unknown.
pub(super) struct Obj<'v, 'e> {
    path: String,
    map: Option<&'v YamlMap>,
    taken: HashSet<String>,
    pub(super) errs: &'e mut Vec<String>,
    start: usize,
}

impl<'v, 'e> Obj<'v, 'e> {
    pub(super) fn new(path: &str, value: &'v Value, errs: &'e mut Vec<String>) -> Self {
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

    pub(super) fn field_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub(super) fn err(&mut self, key: &str, msg: String) {
        let p = self.field_path(key);
        self.errs.push(format!("{p}: {msg}"));
    }

    pub(super) fn has_error_for(&self, key: &str) -> bool {
        let p = format!("{}:", self.field_path(key));
        self.errs[self.start..].iter().any(|e| e.starts_with(&p))
    }

    /// True when the field is given (even as null).
    pub(super) fn has(&self, key: &str) -> bool {
        self.map.is_some_and(|m| m.contains_key(key))
    }

    /// An integer in `min..=max` whose range holds only in some context (`why`, e.g. "for FIFO queues").
    pub(super) fn int_for(
        &mut self,
        key: &str,
        min: i64,
        max: i64,
        default: i64,
        why: &str,
    ) -> i64 {
        match self.map.and_then(|m| m.get(key)).and_then(Value::as_i64) {
            Some(v) if !(min..=max).contains(&v) => {
                self.taken.insert(key.to_string());
                self.err(key, format!("{v} is out of range {min}..={max} {why}"));
                default
            }
            _ => self.int(key, min, max, None, default),
        }
    }

    pub(super) fn take(&mut self, key: &str) -> Option<&'v Value> {
        self.taken.insert(key.to_string());
        self.map?.get(key)
    }

    pub(super) fn string(&mut self, key: &str) -> Option<String> {
        match self.take(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => {
                self.err(key, format!("{} must be a string", show(other)));
                None
            }
        }
    }

    pub(super) fn required_string(&mut self, key: &str) -> Option<String> {
        let v = self.string(key);
        if v.is_none() && !self.has_error_for(key) {
            self.err(key, "is required".into());
        }
        v
    }

    pub(super) fn url(&mut self, key: &str) -> Option<String> {
        let s = self.string(key)?;
        match reqwest::Url::parse(&s) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Some(s),
            _ => {
                self.err(key, format!("{s:?} is not an http:// or https:// URL"));
                None
            }
        }
    }

    pub(super) fn bool(&mut self, key: &str) -> Option<bool> {
        match self.take(key)? {
            Value::Bool(b) => Some(*b),
            Value::Null => None,
            other => {
                self.err(key, format!("{} must be true or false", show(other)));
                None
            }
        }
    }

    /// An integer in `min..=max` (or exactly `sentinel`, AWS's -1), else `default` with an error.
    pub(super) fn int(
        &mut self,
        key: &str,
        min: i64,
        max: i64,
        sentinel: Option<i64>,
        default: i64,
    ) -> i64 {
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

    pub(super) fn parsed<T: std::str::FromStr>(&mut self, key: &str, what: &str) -> Option<T> {
        let s = self.string(key)?;
        match s.parse() {
            Ok(v) => Some(v),
            Err(_) => {
                self.err(key, format!("{s:?} is not {what}"));
                None
            }
        }
    }

    pub(super) fn string_map(&mut self, key: &str) -> BTreeMap<String, String> {
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

    pub(super) fn object<'s>(&'s mut self, key: &str) -> Option<Obj<'v, 's>> {
        let path = self.field_path(key);
        let v = self.take(key)?;
        if v.is_null() {
            return None;
        }
        Some(Obj::new(&path, v, self.errs))
    }

    /// Reports every key that no reader took.
    pub(super) fn finish(self) {
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

pub(super) fn show(v: &Value) -> String {
    serde_yaml_ng::to_string(v)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}
