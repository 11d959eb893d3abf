//! Matching a parsed [`Pattern`] against a record's filter view (EventBridge's semantics as
//! esm-spec.md §7 gives them):
//! - every field of a pattern level must match (AND), and one alternative of its `$or`;
//! - a leaf field matches when one of its match values matches one of the record's values there: an
//!   array in the record is searched element by element (nested arrays flattened);
//! - a nested pattern over an array of objects matches when one element matches all of it;
//! - only leaves are values: `{"exists": true}` holds for a field with a scalar (null included) or
//!   an array holding one, `{"exists": false}` for a missing field, an object, or an empty array;
//! - strings match by exact characters, numbers by their exact text for equality and anything-but
//!   (`300` is not `300.0`) and by value for `numeric`; a value of another type never matches;
//! - a field holding [`Json::Opaque`] (data that is not JSON) matches no pattern at all.

use super::json::Json;
use super::pattern::{Cmp, Field, Matcher, Node, Pattern, Scalar};

impl Pattern {
    /// True when the record's filter view matches this pattern.
    pub fn matches(&self, view: &Json) -> bool {
        node(&self.root, Some(view))
    }
}

/// A pattern level against the value at its place (`None`: nothing there).
fn node(n: &Node, value: Option<&Json>) -> bool {
    match value {
        Some(Json::Opaque) => false,
        Some(Json::Arr(items)) if !items.is_empty() => items.iter().any(|i| node(n, Some(i))),
        Some(Json::Obj(members)) => {
            n.fields.iter().all(|(key, f)| field(f, members.get(key))) && alternatives(n, value)
        }
        // A scalar or nothing: no field below it exists.
        _ => n.fields.iter().all(|(_, f)| field(f, None)) && alternatives(n, None),
    }
}

fn alternatives(n: &Node, value: Option<&Json>) -> bool {
    n.or.is_empty() || n.or.iter().any(|alt| node(alt, value))
}

fn field(f: &Field, value: Option<&Json>) -> bool {
    if matches!(value, Some(Json::Opaque)) {
        return false;
    }
    match f {
        Field::Nested(n) => node(n, value),
        Field::Leaf(matchers) => {
            let mut found = Vec::new();
            if let Some(v) = value {
                leaves(v, &mut found);
            }
            matchers.iter().any(|m| match m {
                Matcher::Exists(wanted) => found.is_empty() != *wanted,
                m => found.iter().any(|v| leaf(m, v)),
            })
        }
    }
}

/// The scalars at a place: the value itself, or an array's scalars (nested arrays flattened);
/// objects are not leaves.
fn leaves<'a>(v: &'a Json, out: &mut Vec<&'a Json>) {
    match v {
        Json::Arr(items) => items.iter().for_each(|i| leaves(i, out)),
        Json::Obj(_) | Json::Opaque => {}
        scalar => out.push(scalar),
    }
}

fn leaf(m: &Matcher, v: &Json) -> bool {
    match m {
        Matcher::Exact(s) => equals(s, v),
        Matcher::Prefix { text, ignore_case } => str_of(v).is_some_and(|s| {
            if *ignore_case {
                s.to_lowercase().starts_with(&text.to_lowercase())
            } else {
                s.starts_with(text.as_str())
            }
        }),
        Matcher::Suffix { text, ignore_case } => str_of(v).is_some_and(|s| {
            if *ignore_case {
                s.to_lowercase().ends_with(&text.to_lowercase())
            } else {
                s.ends_with(text.as_str())
            }
        }),
        Matcher::EqualsIgnoreCase(text) => {
            str_of(v).is_some_and(|s| s.to_lowercase() == text.to_lowercase())
        }
        Matcher::AnythingBut(values) => {
            matches!(v, Json::Str(_) | Json::Num(_)) && !values.iter().any(|s| equals(s, v))
        }
        Matcher::Numeric(cmps) => match v {
            Json::Num(n) => n.parse::<f64>().is_ok_and(|x| {
                cmps.iter().all(|&(c, y)| match c {
                    Cmp::Eq => x == y,
                    Cmp::Lt => x < y,
                    Cmp::Le => x <= y,
                    Cmp::Gt => x > y,
                    Cmp::Ge => x >= y,
                })
            }),
            _ => false,
        },
        Matcher::Exists(_) => false,
    }
}

fn str_of(v: &Json) -> Option<&str> {
    match v {
        Json::Str(s) => Some(s),
        _ => None,
    }
}

fn equals(s: &Scalar, v: &Json) -> bool {
    match (s, v) {
        (Scalar::Null, Json::Null) => true,
        (Scalar::Bool(a), Json::Bool(b)) => a == b,
        (Scalar::Num(a), Json::Num(b)) => a == b,
        (Scalar::Str(a), Json::Str(b)) => a == b,
        _ => false,
    }
}
