//! Moving checkpoints through the running instance: `sluice checkpoints set|reset --url URL` (or
//! `--running`, the config's `admin_listen`) sends the move as `POST /checkpoints/<mapping>` with a
//! JSON [`MoveRequest`] instead of opening the store. The instance (started with
//! `--admin-write`) stops that mapping as a reload does, applies the move with the same code as the
//! offline command ([`super::moves`]) to its own store, starts the mapping again, and answers the
//! [`Report`] (200) or `{"error", "exit"}` (400: a bad request, 409: refused or failed, 403: admin
//! writes are off, 503: shutting down). The admin server hands the move to the task that owns the
//! running mappings as a [`LiveMove`], so a move and a config reload never interleave.

use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

use super::moves::{usage, Failed, Move, Report, Target};
use super::position::{now_ms, parse_timestamp};
use crate::cli::{EXIT_FAILED, EXIT_USAGE};
use crate::model::SequenceNumber;

/// The body of `POST /checkpoints/<mapping>`: exactly one of `sequence` (with exactly one
/// partition), `timestamp` or `to`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    /// Shard ids; empty: every shard.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<String>,
    /// Checkpoint the one partition at this sequence number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<String>,
    /// Resume at the first record at or after this instant: RFC 3339, epoch seconds or ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// `start` (where a new mapping starts: `sluice checkpoints reset`), `trim-horizon` or
    /// `latest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Fence live workers of other replicas holding the mapping's leases.
    #[serde(default)]
    pub force: bool,
    /// Plan and show; write nothing, stop nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// `--sequence`'s target: one partition, digits only.
pub fn sequence_target(seq: &str, partitions: &[String]) -> Result<Target, Failed> {
    if partitions.len() != 1 {
        return Err(usage(
            "--sequence needs exactly one --partition (sequence numbers belong to one shard)",
        ));
    }
    if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return Err(usage(format!(
            "--sequence {seq:?} is not a sequence number (digits only)"
        )));
    }
    Ok(Target::Sequence(SequenceNumber(seq.to_string())))
}

impl MoveRequest {
    /// Parses a request body; the error names what is wrong.
    pub fn parse(body: &[u8]) -> Result<MoveRequest, Failed> {
        serde_json::from_slice(body).map_err(|e| {
            usage(format!(
                "the body is not a checkpoint move ({e}); expected JSON such as {{\"timestamp\": \"2026-11-27T10:00:00Z\"}}, {{\"sequence\": \"4965…\", \"partitions\": [\"shardId-000000000000\"]}} or {{\"to\": \"start|trim-horizon|latest\"}}, with optional \"partitions\", \"force\", \"dry_run\""
            ))
        })
    }

    /// The move asked for, checked as the command line checks it.
    pub fn to_move(&self) -> Result<Move, Failed> {
        if let Some(p) = self.partitions.iter().find(|p| p.trim().is_empty()) {
            return Err(usage(format!("partition {p:?} is empty")));
        }
        let target =
            match (&self.sequence, &self.timestamp, &self.to) {
                (Some(seq), None, None) => Some(sequence_target(seq, &self.partitions)?),
                (None, Some(t), None) => Some(Target::Before(parse_timestamp(t).map_err(usage)?)),
                (None, None, Some(to)) => match to.as_str() {
                    "start" => None,
                    "trim-horizon" => Some(Target::Oldest),
                    "latest" => Some(Target::Before(now_ms())),
                    other => {
                        return Err(usage(format!(
                            "to {other:?} is not one of start, trim-horizon, latest"
                        )))
                    }
                },
                _ => return Err(usage(
                    "give exactly one of sequence, timestamp or to (start, trim-horizon, latest)",
                )),
            };
        Ok(Move {
            target,
            partitions: self.partitions.clone(),
            force: self.force,
            dry_run: self.dry_run,
        })
    }
}

/// A move handed by the admin server to the task that owns the running mappings; the answer goes
/// back on `reply`.
pub struct LiveMove {
    pub mapping: String,
    pub how: Move,
    pub reply: oneshot::Sender<Result<Report, Failed>>,
}

/// Where the admin server sends [`LiveMove`]s.
pub type MoveSender = mpsc::Sender<LiveMove>;

/// The error body of a refused move.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    /// The exit code the CLI exits with.
    pub exit: u8,
}

/// `POST <url>/checkpoints/<mapping>` with `request`: the instance's report, or its error.
pub async fn send(
    url: &str,
    mapping: &str,
    request: &MoveRequest,
    timeout: Duration,
) -> Result<Report, Failed> {
    let base = url.trim_end_matches('/');
    let target = format!("{base}/checkpoints/{}", path_segment(mapping));
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| Failed(format!("cannot build an HTTP client: {e}"), EXIT_FAILED))?;
    let body = serde_json::to_vec(request).map_err(|e| Failed(e.to_string(), EXIT_FAILED))?;
    let resp = client
        .post(&target)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| {
            Failed(
                format!("{target}: no answer ({})", crate::aws::error_chain(&e)),
                EXIT_FAILED,
            )
        })?;
    let status = resp.status();
    let text = resp
        .text()
        .await
        .map_err(|e| Failed(format!("{target}: reading the answer: {e}"), EXIT_FAILED))?;
    if status.is_success() {
        return serde_json::from_str(&text).map_err(|e| {
            Failed(
                format!("{target}: not a checkpoint move report ({e})"),
                EXIT_FAILED,
            )
        });
    }
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(e) => Err(Failed(e.error, e.exit)),
        Err(_) if status.as_u16() == 404 || status.as_u16() == 405 => Err(Failed(
            format!("{target}: HTTP {status}: this sluice does not move checkpoints through its admin server (an older version?)"),
            EXIT_FAILED,
        )),
        Err(_) => Err(Failed(
            format!("{target}: HTTP {status}: {}", text.trim()),
            EXIT_FAILED,
        )),
    }
}

/// `name` percent-encoded for a URL path segment.
fn path_segment(name: &str) -> String {
    let mut out = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The HTTP status of a failed move: 400 for a bad request, 409 for a refusal or failure.
pub fn http_status(f: &Failed) -> u16 {
    if f.1 == EXIT_USAGE {
        400
    } else {
        409
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: &str) -> Result<Move, Failed> {
        MoveRequest::parse(json.as_bytes())?.to_move()
    }

    #[test]
    fn each_kind_of_move_parses() {
        let m = req(r#"{"timestamp": "2026-11-27T10:00:00Z"}"#).unwrap();
        assert_eq!(m.target, Some(Target::Before(1_795_773_600_000)));
        assert!(m.partitions.is_empty() && !m.force && !m.dry_run);
        let m = req(r#"{"sequence": "123", "partitions": ["shardId-1"], "force": true}"#).unwrap();
        assert_eq!(
            m.target,
            Some(Target::Sequence(SequenceNumber("123".into())))
        );
        assert_eq!(m.partitions, ["shardId-1"]);
        assert!(m.force);
        assert_eq!(
            req(r#"{"to": "start", "dry_run": true}"#).unwrap().target,
            None
        );
        assert!(req(r#"{"to": "start", "dry_run": true}"#).unwrap().dry_run);
        assert_eq!(
            req(r#"{"to": "trim-horizon"}"#).unwrap().target,
            Some(Target::Oldest)
        );
        let before = now_ms();
        match req(r#"{"to": "latest"}"#).unwrap().target {
            Some(Target::Before(ms)) => assert!(ms >= before),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_requests_are_refused_as_usage_errors_naming_the_problem() {
        for (body, says) in [
            ("", "not a checkpoint move"),
            ("\"to\"", "not a checkpoint move"),
            (r#"{"timestmp": "1"}"#, "unknown field"),
            (r#"{"force": "yes"}"#, "not a checkpoint move"),
            ("{}", "exactly one of"),
            (r#"{"timestamp": "1", "to": "latest"}"#, "exactly one of"),
            (r#"{"sequence": "1"}"#, "exactly one --partition"),
            (
                r#"{"sequence": "1", "partitions": ["a", "b"]}"#,
                "exactly one --partition",
            ),
            (
                r#"{"sequence": "12ab", "partitions": ["a"]}"#,
                "digits only",
            ),
            (r#"{"timestamp": "yesterday"}"#, "RFC 3339"),
            (r#"{"to": "oldest"}"#, "start, trim-horizon, latest"),
            (r#"{"to": "start", "partitions": [" "]}"#, "is empty"),
        ] {
            let e = req(body).unwrap_err();
            assert_eq!(e.1, EXIT_USAGE, "{body}: {e:?}");
            assert!(e.0.contains(says), "{body}: {}", e.0);
            assert_eq!(http_status(&e), 400);
        }
        assert_eq!(http_status(&Failed("refused".into(), EXIT_FAILED)), 409);
    }

    #[test]
    fn requests_round_trip_and_names_are_escaped_in_the_path() {
        let r = MoveRequest {
            partitions: vec!["shardId-0".into()],
            sequence: Some("42".into()),
            dry_run: true,
            ..Default::default()
        };
        let json = serde_json::to_vec(&r).unwrap();
        assert_eq!(MoveRequest::parse(&json).unwrap(), r);
        assert_eq!(path_segment("orders-v2"), "orders-v2");
        assert_eq!(path_segment("a b/c"), "a%20b%2Fc");
    }
}
