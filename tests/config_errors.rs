//! A bad config is refused with exit code 2 and one line per problem naming the field, by both
//! `validate` and `run`, before anything touches AWS.

use std::process::Command;

fn sluice(args: &[&str], config: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .arg("--config")
        .arg(&path)
        // Nothing listens here: touching AWS would hang or fail differently.
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const BAD: &str = "mappings:\n  - EventSourceArn: arn:aws:kinesis:us-east-1:000000000000:stream/s\n    FunctionName: f\n    StartingPosition: LATEST\n    BatchSize: 0\n    Colour: blue\n";

#[test]
fn validate_lists_every_problem_and_exits_2() {
    let (code, stderr) = sluice(&["validate"], BAD);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("mappings[0].BatchSize: 0 is out of range 1..=10000"),
        "{stderr}"
    );
    assert!(
        stderr.contains("mappings[0].Colour: unknown field"),
        "{stderr}"
    );
}

#[test]
fn run_refuses_a_bad_config_with_exit_2() {
    let started = std::time::Instant::now();
    let (code, stderr) = sluice(&["run"], BAD);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("mappings[0].BatchSize: 0 is out of range 1..=10000"),
        "{stderr}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[test]
fn validate_accepts_the_example_configs() {
    for file in ["config/example.yaml", "config/demo.yaml"] {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/").to_string() + file;
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["validate", "--config", &path])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn at_timestamp(ts: &str) -> String {
    format!(
        "mappings:\n  - EventSourceArn: arn:aws:kinesis:us-east-1:000000000000:stream/s\n    FunctionName: f\n    StartingPosition: AT_TIMESTAMP\n    StartingPositionTimestamp: {ts}\n"
    )
}

#[test]
fn absurd_starting_timestamps_are_refused_not_a_panic() {
    for ts in [
        "1e20",
        "1e19",
        ".inf",
        "-.inf",
        ".nan",
        "-1",
        "-0.5",
        "4102444800",
    ] {
        let (code, stderr) = sluice(&["validate"], &at_timestamp(ts));
        assert_eq!(code, 2, "StartingPositionTimestamp {ts}: {stderr}");
        assert!(
            stderr.contains("mappings[0].StartingPositionTimestamp: ")
                && stderr.contains("is out of range 0..=")
                && !stderr.contains("panicked"),
            "StartingPositionTimestamp {ts}: {stderr}"
        );
    }
}

#[test]
fn a_timestamp_in_the_past_or_now_is_accepted() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for ts in [
        "0".to_string(),
        "1700000000.25".to_string(),
        now.to_string(),
    ] {
        let (code, stderr) = sluice(&["validate"], &at_timestamp(&ts));
        assert_eq!(code, 0, "StartingPositionTimestamp {ts}: {stderr}");
    }
}

#[test]
fn a_fifo_queue_is_refused_as_a_stream_destination() {
    let config = "mappings:\n  - EventSourceArn: arn:aws:kinesis:us-east-1:000000000000:stream/s\n    FunctionName: f\n    StartingPosition: LATEST\n    DestinationConfig: { OnFailure: { Destination: 'arn:aws:sqs:us-east-1:000000000000:dlq.fifo' } }\n";
    let (code, stderr) = sluice(&["validate"], config);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("mappings[0].DestinationConfig.OnFailure.Destination: \"arn:aws:sqs:us-east-1:000000000000:dlq.fifo\" is a FIFO queue"),
        "{stderr}"
    );
}

#[test]
fn two_mappings_on_one_source_must_be_named() {
    let config = "mappings:\n  - EventSourceArn: arn:aws:kinesis:us-east-1:000000000000:stream/s\n    FunctionName: f\n    StartingPosition: LATEST\n  - EventSourceArn: arn:aws:kinesis:us-east-1:000000000000:stream/s\n    FunctionName: g\n    StartingPosition: LATEST\n";
    let (code, stderr) = sluice(&["validate"], config);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("mappings[0] and mappings[1] read the same EventSourceArn"),
        "{stderr}"
    );
}
