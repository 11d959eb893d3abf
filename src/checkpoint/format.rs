//! The embedded store's file format, versioned. Version 2 (written now) is
//! `{"version":2,"position":<checkpoint>,"lease":{"owner":…,"counter":…}}`, where `<checkpoint>` is
//! `{"sequence":"<n>"}` or `"shard_end"` and `lease` is the token of the commit that wrote it.
//! Version 1 (releases before commits carried tokens) is the bare checkpoint, `{"sequence":"<n>"}`
//! or `"shard_end"`, with no `version` field: it is read as that checkpoint with no token, so an
//! upgrade loses nothing. Version 3 is version 2 plus `"window":{"start_ms":…,"state":{…}}`, the
//! open tumbling window's state (`TumblingWindowInSeconds`): it is written only while a window is
//! open, so a mapping without windows keeps writing version 2, and a release that does not know
//! windows refuses a file holding state rather than dropping it. A `version` this release does not
//! know is refused, never guessed at.

use serde::{Deserialize, Serialize};

use super::{Checkpoint, WindowState};
use crate::lease::LeaseToken;

/// The version this release writes (without a window open; [`WINDOW_FORMAT_VERSION`] with one).
pub const FORMAT_VERSION: u64 = 2;
/// The version written while a tumbling window is open.
pub const WINDOW_FORMAT_VERSION: u64 = 3;

/// A checkpoint file's content.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Stored {
    pub checkpoint: Checkpoint,
    /// The token the checkpoint was committed under; `None` in a version 1 file.
    pub lease: Option<LeaseToken>,
    /// The open tumbling window's state (version 3 only).
    pub window: Option<WindowState>,
}

#[derive(Serialize, Deserialize)]
struct V2 {
    version: u64,
    position: Checkpoint,
    lease: LeaseToken,
}

#[derive(Serialize, Deserialize)]
struct V3 {
    version: u64,
    position: Checkpoint,
    lease: LeaseToken,
    window: WindowState,
}

/// Why a file could not be read; the caller names the file.
#[derive(Debug, PartialEq)]
pub(super) enum Unreadable {
    /// Not JSON, or not a checkpoint of a known version.
    Malformed(String),
    /// Written by a release that knows a later format.
    Version(serde_json::Value),
}

#[cfg(test)]
pub(super) fn encode(checkpoint: &Checkpoint, lease: &LeaseToken) -> Vec<u8> {
    encode_window(checkpoint, lease, None)
}

/// Version 2, or version 3 with an open window's state.
pub(super) fn encode_window(
    checkpoint: &Checkpoint,
    lease: &LeaseToken,
    window: Option<&WindowState>,
) -> Vec<u8> {
    match window {
        None => serde_json::to_vec(&V2 {
            version: FORMAT_VERSION,
            position: checkpoint.clone(),
            lease: lease.clone(),
        }),
        Some(w) => serde_json::to_vec(&V3 {
            version: WINDOW_FORMAT_VERSION,
            position: checkpoint.clone(),
            lease: lease.clone(),
            window: w.clone(),
        }),
    }
    .expect("checkpoints serialize")
}

pub(super) fn decode(bytes: &[u8]) -> Result<Stored, Unreadable> {
    let malformed = |e: serde_json::Error| Unreadable::Malformed(e.to_string());
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(malformed)?;
    match value.get("version") {
        None => Ok(Stored {
            checkpoint: serde_json::from_value(value).map_err(malformed)?,
            lease: None,
            window: None,
        }),
        Some(v) if v.as_u64() == Some(FORMAT_VERSION) => {
            let v2: V2 = serde_json::from_value(value).map_err(malformed)?;
            Ok(Stored {
                checkpoint: v2.position,
                lease: Some(v2.lease),
                window: None,
            })
        }
        Some(v) if v.as_u64() == Some(WINDOW_FORMAT_VERSION) => {
            let v3: V3 = serde_json::from_value(value).map_err(malformed)?;
            Ok(Stored {
                checkpoint: v3.position,
                lease: Some(v3.lease),
                window: Some(v3.window),
            })
        }
        Some(v) => Err(Unreadable::Version(v.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SequenceNumber;

    fn at(s: &str) -> Checkpoint {
        Checkpoint::Sequence(SequenceNumber(s.into()))
    }

    #[test]
    fn version_1_files_read_without_loss() {
        // Exactly what releases before version 2 wrote (serde of `Checkpoint`, snake_case).
        let seq = "49590338271490256608559692538361571095921575989136588898";
        let old = format!("{{\"sequence\":\"{seq}\"}}");
        assert_eq!(
            decode(old.as_bytes()),
            Ok(Stored {
                checkpoint: at(seq),
                lease: None,
                window: None
            })
        );
        assert_eq!(
            decode(b"\"shard_end\""),
            Ok(Stored {
                checkpoint: Checkpoint::ShardEnd,
                lease: None,
                window: None
            })
        );
    }

    #[test]
    fn version_2_round_trips_and_reads_as_written() {
        let lease = LeaseToken::new("single-replica", 0);
        for cp in [at("123"), Checkpoint::ShardEnd] {
            let bytes = encode(&cp, &lease);
            assert_eq!(
                decode(&bytes),
                Ok(Stored {
                    checkpoint: cp.clone(),
                    lease: Some(lease.clone()),
                    window: None
                })
            );
        }
        assert_eq!(
            String::from_utf8(encode(&at("123"), &lease)).unwrap(),
            r#"{"version":2,"position":{"sequence":"123"},"lease":{"owner":"single-replica","counter":0}}"#
        );
        // The end keeps its version 1 spelling, so tools grepping for it keep working.
        assert!(String::from_utf8(encode(&Checkpoint::ShardEnd, &lease))
            .unwrap()
            .contains("\"position\":\"shard_end\""));
    }

    #[test]
    fn unknown_versions_and_malformed_files_are_refused() {
        assert_eq!(
            decode(br#"{"version":4,"position":"shard_end","lease":{"owner":"x","counter":1}}"#),
            Err(Unreadable::Version(serde_json::json!(4)))
        );
        assert_eq!(
            decode(br#"{"version":"2","position":"shard_end"}"#),
            Err(Unreadable::Version(serde_json::json!("2")))
        );
        for bad in [
            &b"{not json"[..],
            b"{\"sequence\": 12",
            b"{\"sequence\": 12}",
            b"{\"version\":2,\"position\":\"shard_end\"}",
            // Version 3 is written only with a window.
            b"{\"version\":3,\"position\":\"shard_end\",\"lease\":{\"owner\":\"x\",\"counter\":1}}",
            b"\"end\"",
        ] {
            assert!(
                matches!(decode(bad), Err(Unreadable::Malformed(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn version_3_carries_an_open_windows_state() {
        let lease = LeaseToken::new("single-replica", 0);
        let mut state = serde_json::Map::new();
        state.insert("sum".into(), serde_json::json!("42"));
        let window = WindowState {
            start_ms: 1_600_000_020_000,
            state,
        };
        let bytes = encode_window(&at("123"), &lease, Some(&window));
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            r#"{"version":3,"position":{"sequence":"123"},"lease":{"owner":"single-replica","counter":0},"window":{"start_ms":1600000020000,"state":{"sum":"42"}}}"#
        );
        assert_eq!(
            decode(&bytes),
            Ok(Stored {
                checkpoint: at("123"),
                lease: Some(lease.clone()),
                window: Some(window)
            })
        );
        // Without a window, version 2 as before.
        assert!(String::from_utf8(encode_window(&at("1"), &lease, None))
            .unwrap()
            .starts_with(r#"{"version":2,"#));
    }
}
