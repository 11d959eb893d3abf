//! One filter pattern, parsed and checked: the EventBridge pattern grammar as Lambda event
//! filtering supports it (esm-spec.md §7). A pattern is a JSON object whose fields are either
//! objects (a nested pattern) or arrays of match values (the field matches when any of them does);
//! `$or` lists alternative patterns at any level. [`Pattern::parse`] refuses everything else with
//! the place in the pattern and what is wrong, so a bad pattern never reaches a worker.

use std::collections::BTreeMap;

use super::json::Json;

/// A parsed pattern; match records with [`super::FilterCriteria`].
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    pub(super) root: Node,
}

/// One object level of a pattern: every field must match, and one alternative of each `$or`.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct Node {
    pub(super) fields: Vec<(String, Field)>,
    /// The alternatives of this level's `$or` (empty: none).
    pub(super) or: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Field {
    /// `{"field": {…}}`: the field is an object (or an array of objects) matching this.
    Nested(Node),
    /// `{"field": [m, …]}`: the field matches when one of these does.
    Leaf(Vec<Matcher>),
}

/// A scalar written in a pattern, compared with a record's value by type and exact text.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Scalar {
    Null,
    Bool(bool),
    /// As written: `300` and `300.0` differ.
    Num(String),
    Str(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Cmp {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Matcher {
    /// `"x"`, `300`, `true`, `null` (`""` is the empty-string match).
    Exact(Scalar),
    /// `{"prefix": "x"}`; `ignore_case` for `{"prefix": {"equals-ignore-case": "x"}}`.
    Prefix {
        text: String,
        ignore_case: bool,
    },
    Suffix {
        text: String,
        ignore_case: bool,
    },
    /// `{"equals-ignore-case": "x"}`.
    EqualsIgnoreCase(String),
    /// `{"anything-but": v}` or `{"anything-but": [v, …]}` (strings and numbers).
    AnythingBut(Vec<Scalar>),
    /// `{"numeric": ["=", 5]}`, `[">", 0, "<=", 5]`, …: every comparison holds.
    Numeric(Vec<(Cmp, f64)>),
    /// `{"exists": true|false}`.
    Exists(bool),
}

/// Operators EventBridge has that Lambda (EventBridge Pipes) does not support.
const UNSUPPORTED: [&str; 2] = ["wildcard", "cidr"];

impl Pattern {
    /// Parses and checks a pattern's text; `Err` says where in the pattern and what is wrong.
    pub fn parse(text: &str) -> Result<Pattern, String> {
        let json = Json::parse(text.as_bytes()).ok_or("is not valid JSON")?;
        match json {
            Json::Obj(m) => Ok(Pattern {
                root: node(&m, "")?,
            }),
            other => Err(format!(
                "must be a JSON object of fields, not {}",
                kind(&other)
            )),
        }
    }

    /// True for `{}`, which matches every record.
    pub fn is_empty(&self) -> bool {
        self.root.fields.is_empty() && self.root.or.is_empty()
    }
}

fn kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Num(_) => "a number",
        Json::Str(_) => "a string",
        Json::Arr(_) => "an array",
        Json::Obj(_) => "an object",
        Json::Opaque => "data",
    }
}

/// `at` is the dotted path of the object being read ("" at the top).
fn node(m: &BTreeMap<String, Json>, at: &str) -> Result<Node, String> {
    let mut out = Node::default();
    for (key, value) in m {
        if key == "$or" {
            out.or = or(value, at)?;
            continue;
        }
        let path = if at.is_empty() {
            key.clone()
        } else {
            format!("{at}.{key}")
        };
        let field = match value {
            Json::Obj(inner) => Field::Nested(node(inner, &path)?),
            Json::Arr(items) if items.is_empty() => {
                return Err(format!("at {path:?}: an empty array matches nothing; list at least one value"))
            }
            Json::Arr(items) => Field::Leaf(
                items
                    .iter()
                    .map(|i| matcher(i, &path))
                    .collect::<Result<_, _>>()?,
            ),
            other => {
                return Err(format!(
                    "at {path:?}: {} must be an array of values to match (e.g. [{}]) or an object of fields",
                    kind(other),
                    shown(other)
                ))
            }
        };
        out.fields.push((key.clone(), field));
    }
    Ok(out)
}

fn or(value: &Json, at: &str) -> Result<Vec<Node>, String> {
    let place = if at.is_empty() {
        "\"$or\"".to_string()
    } else {
        format!("\"{at}.$or\"")
    };
    let Json::Arr(items) = value else {
        return Err(format!(
            "at {place}: must be an array of at least two patterns, not {}",
            kind(value)
        ));
    };
    if items.len() < 2 {
        return Err(format!(
            "at {place}: must list at least two patterns, not {}",
            items.len()
        ));
    }
    items
        .iter()
        .map(|item| match item {
            Json::Obj(m) if !m.is_empty() => node(m, at),
            Json::Obj(_) => Err(format!("at {place}: an alternative must not be empty")),
            other => Err(format!(
                "at {place}: each alternative must be a pattern object, not {}",
                kind(other)
            )),
        })
        .collect()
}

/// A value's text in a message (short).
fn shown(v: &Json) -> String {
    match v {
        Json::Null => "null".into(),
        Json::Bool(b) => b.to_string(),
        Json::Num(n) => n.clone(),
        Json::Str(s) => format!("{s:?}"),
        Json::Arr(_) => "[…]".into(),
        Json::Obj(_) => "{…}".into(),
        Json::Opaque => "?".into(),
    }
}

fn matcher(item: &Json, path: &str) -> Result<Matcher, String> {
    let at = |msg: String| format!("at {path:?}: {msg}");
    Ok(match item {
        Json::Null => Matcher::Exact(Scalar::Null),
        Json::Bool(b) => Matcher::Exact(Scalar::Bool(*b)),
        Json::Num(n) => Matcher::Exact(Scalar::Num(n.clone())),
        Json::Str(s) => Matcher::Exact(Scalar::Str(s.clone())),
        Json::Arr(_) => return Err(at("a match value must not be an array".into())),
        Json::Opaque => return Err(at("not JSON".into())),
        Json::Obj(m) => {
            let mut ops = m.iter();
            let (Some((op, arg)), None) = (ops.next(), ops.next()) else {
                return Err(at(format!(
                    "an operator object must have exactly one key, not {}",
                    m.len()
                )));
            };
            operator(op, arg).map_err(at)?
        }
    })
}

fn operator(op: &str, arg: &Json) -> Result<Matcher, String> {
    Ok(match op {
        "prefix" | "suffix" => {
            let (text, ignore_case) = match arg {
                Json::Str(s) => (s.clone(), false),
                Json::Obj(m) => match (m.len(), m.get("equals-ignore-case")) {
                    (1, Some(Json::Str(s))) => (s.clone(), true),
                    _ => {
                        return Err(format!(
                            "\"{op}\" takes a string or {{\"equals-ignore-case\": \"…\"}}"
                        ))
                    }
                },
                other => {
                    return Err(format!(
                        "\"{op}\" takes a string, not {}",
                        kind(other)
                    ))
                }
            };
            if op == "prefix" {
                Matcher::Prefix { text, ignore_case }
            } else {
                Matcher::Suffix { text, ignore_case }
            }
        }
        "equals-ignore-case" => match arg {
            Json::Str(s) => Matcher::EqualsIgnoreCase(s.clone()),
            other => {
                return Err(format!(
                    "\"equals-ignore-case\" takes a string, not {}",
                    kind(other)
                ))
            }
        },
        "anything-but" => Matcher::AnythingBut(anything_but(arg)?),
        "numeric" => Matcher::Numeric(numeric(arg)?),
        "exists" => match arg {
            Json::Bool(b) => Matcher::Exists(*b),
            other => {
                return Err(format!(
                    "\"exists\" takes true or false, not {}",
                    kind(other)
                ))
            }
        },
        op if UNSUPPORTED.contains(&op) => {
            return Err(format!(
                "\"{op}\" is not supported by Lambda event filtering (EventBridge has it, Lambda and Pipes do not)"
            ))
        }
        op => return Err(format!("{op:?} is not a known operator (known: prefix, suffix, equals-ignore-case, anything-but, numeric, exists)")),
    })
}

fn anything_but(arg: &Json) -> Result<Vec<Scalar>, String> {
    let one = |v: &Json| match v {
        Json::Str(s) => Ok(Scalar::Str(s.clone())),
        Json::Num(n) => Ok(Scalar::Num(n.clone())),
        other => Err(format!(
            "\"anything-but\" takes strings and numbers, not {}",
            kind(other)
        )),
    };
    match arg {
        Json::Arr(items) if items.is_empty() => {
            Err("\"anything-but\" must list at least one value".into())
        }
        Json::Arr(items) => items.iter().map(one).collect(),
        Json::Obj(m) => {
            let ops: Vec<&str> = m.keys().map(String::as_str).collect();
            Err(format!(
                "\"anything-but\" with {} is not supported by Lambda event filtering (only a value or a list of values)",
                ops.join(", ")
            ))
        }
        other => Ok(vec![one(other)?]),
    }
}

fn numeric(arg: &Json) -> Result<Vec<(Cmp, f64)>, String> {
    const SHAPE: &str = "\"numeric\" takes [\"=\", n], [op, n] or [lower-op, n, upper-op, n] with ops =, <, <=, >, >=";
    let Json::Arr(items) = arg else {
        return Err(SHAPE.into());
    };
    if items.len() != 2 && items.len() != 4 {
        return Err(SHAPE.into());
    }
    let mut out = Vec::new();
    for pair in items.chunks(2) {
        let cmp = match &pair[0] {
            Json::Str(s) => match s.as_str() {
                "=" => Cmp::Eq,
                "<" => Cmp::Lt,
                "<=" => Cmp::Le,
                ">" => Cmp::Gt,
                ">=" => Cmp::Ge,
                other => return Err(format!("{other:?} is not a numeric operator; {SHAPE}")),
            },
            other => {
                return Err(format!(
                    "{} is not a numeric operator; {SHAPE}",
                    shown(other)
                ))
            }
        };
        let n = match &pair[1] {
            Json::Num(n) => n.parse::<f64>().ok().filter(|f| f.is_finite()),
            _ => None,
        };
        let Some(n) = n else {
            return Err(format!(
                "{} after {:?} is not a number; {SHAPE}",
                shown(&pair[1]),
                shown(&pair[0])
            ));
        };
        out.push((cmp, n));
    }
    if let [(a, x), (b, y)] = out[..] {
        let lower = |c| matches!(c, Cmp::Gt | Cmp::Ge);
        let upper = |c| matches!(c, Cmp::Lt | Cmp::Le);
        let (lo, hi) = match (lower(a) && upper(b), upper(a) && lower(b)) {
            (true, _) => (x, y),
            (_, true) => (y, x),
            _ => {
                return Err(format!(
                    "a numeric range needs one lower bound (>, >=) and one upper bound (<, <=); {SHAPE}"
                ))
            }
        };
        if lo >= hi {
            return Err(format!(
                "the numeric range's lower bound {lo} is not below its upper bound {hi}"
            ));
        }
    }
    Ok(out)
}
