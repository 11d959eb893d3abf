//! A mapping's target: AWS's `FunctionName` (a name, `name:alias` or function ARN) or sluice's
//! `Http` endpoint; exactly one of them.

use super::obj::Obj;
use super::*;

/// `FunctionName` or `Http`; `None` when neither or both are given, or the one given is invalid
/// (the problem is recorded).
pub(super) fn target(m: &mut Obj<'_, '_>) -> Option<Target> {
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
