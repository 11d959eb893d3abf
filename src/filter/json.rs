//! The JSON tree patterns and records are read into: like `serde_json::Value`, but a number keeps
//! the exact text it was written with (EventBridge matches numbers on their string form: `300`,
//! `300.0` and `3.0e2` differ), and a value can be [`Json::Opaque`]: data that is there but is not
//! JSON (a Kinesis `data` or Kafka `value` that does not parse), which no pattern matches.
//!
//! Parsing goes through `serde_json`'s `RawValue`: the text is validated once (with serde_json's
//! nesting limit), then each object and array is split into the raw text of its members, so number
//! text is never reformatted. A duplicate key keeps its last value.

use serde_json::value::RawValue;
use std::collections::BTreeMap;

/// A JSON value (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    /// A number, as written.
    Num(String),
    Str(String),
    Arr(Vec<Json>),
    Obj(BTreeMap<String, Json>),
    /// Present, but not JSON: no pattern on it matches (not even `exists`).
    Opaque,
}

impl Json {
    /// Parses `text`; `None` when it is not one JSON value.
    pub fn parse(text: &[u8]) -> Option<Json> {
        let raw: &RawValue = serde_json::from_slice(text).ok()?;
        from_raw(raw)
    }

    /// The object's members; `None` for anything else.
    pub fn as_obj_mut(&mut self) -> Option<&mut BTreeMap<String, Json>> {
        match self {
            Json::Obj(m) => Some(m),
            _ => None,
        }
    }
}

/// Reads one validated raw value, splitting objects and arrays into their members' raw text.
fn from_raw(raw: &RawValue) -> Option<Json> {
    let text = raw.get().trim();
    Some(match text.as_bytes().first()? {
        b'{' => {
            let members: BTreeMap<String, &RawValue> = serde_json::from_str(text).ok()?;
            let mut out = BTreeMap::new();
            for (k, v) in members {
                out.insert(k, from_raw(v)?);
            }
            Json::Obj(out)
        }
        b'[' => {
            let items: Vec<&RawValue> = serde_json::from_str(text).ok()?;
            Json::Arr(items.into_iter().map(from_raw).collect::<Option<_>>()?)
        }
        b'"' => Json::Str(serde_json::from_str(text).ok()?),
        b't' => Json::Bool(true),
        b'f' => Json::Bool(false),
        b'n' => Json::Null,
        _ => Json::Num(text.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_their_text_and_strings_are_unescaped() {
        let j = Json::parse(
            br#" {"a": [300, 300.0, 3.0e2, -0], "s": "x\"\u00e9", "n": null, "t": true, "a": 1} "#,
        )
        .unwrap();
        let Json::Obj(m) = j else { panic!() };
        assert_eq!(
            m["a"],
            Json::Num("1".into()),
            "a duplicate key keeps its last value"
        );
        assert_eq!(m["s"], Json::Str("x\"é".into()));
        assert_eq!(m["n"], Json::Null);
        assert_eq!(m["t"], Json::Bool(true));
        let Json::Arr(xs) = Json::parse(b"[300, 300.0, 3.0e2, -0]").unwrap() else {
            panic!()
        };
        let texts: Vec<_> = xs
            .iter()
            .map(|x| match x {
                Json::Num(n) => n.as_str(),
                _ => "?",
            })
            .collect();
        assert_eq!(texts, ["300", "300.0", "3.0e2", "-0"]);
    }

    #[test]
    fn what_is_not_one_json_value_is_refused() {
        for bad in [&b""[..], b"{", b"hello", b"1 2", b"\xff", b"{\"a\":}"] {
            assert_eq!(Json::parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
