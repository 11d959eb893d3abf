//! The piece rules without I/O: outcomes in, steps out.

use super::*;

/// Record age as of `now`, with records given up on past `max_age` milliseconds.
struct At {
    now: i64,
    max_age: i64,
}

impl Expiry for At {
    fn expired(&self, arrival_ms: i64) -> bool {
        self.now.saturating_sub(arrival_ms) > self.max_age
    }
    fn left(&self, arrival_ms: i64) -> Duration {
        Duration::from_millis(
            arrival_ms
                .saturating_add(self.max_age)
                .saturating_sub(self.now)
                .max(0) as u64,
        )
    }
}

/// Nothing ever expires.
const FOREVER: At = At {
    now: 0,
    max_age: i64::MAX,
};

fn records(ids: impl IntoIterator<Item = u64>) -> Vec<Record> {
    ids.into_iter()
        .map(|id| Record {
            sequence: SequenceNumber(id.to_string()),
            arrival_ms: id as i64,
            event: vec![],
            lane_key: 0,
        })
        .collect()
}

fn ids(records: &[Record]) -> Vec<u64> {
    records
        .iter()
        .map(|r| r.sequence.0.parse().unwrap())
        .collect()
}

/// A policy whose backoff is always 1 ms.
fn policy(attempts: Option<u32>, bisect: bool) -> RetryPolicy {
    RetryPolicy {
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(1),
        max_retry_attempts: attempts,
        max_record_age: None,
        bisect,
    }
}

fn response(request_id: &str) -> Option<Response> {
    Some((
        Some(request_id.to_string()),
        ResponseContext {
            status_code: 200,
            executed_version: "$LATEST".into(),
            function_error: "Unhandled".into(),
        },
    ))
}

fn function_error() -> Outcome {
    Outcome::FunctionError {
        partial: false,
        detail: "Unhandled: Boom".into(),
    }
}

/// A step, owned, for assertions.
#[derive(Debug, PartialEq)]
enum Plain {
    Invoke(Vec<u64>),
    Checkpoint(u64),
    Wait(Duration),
    GiveUp(Vec<u64>, Condition, u32, Option<String>),
    Done,
}

fn step(p: &mut Pieces, at: &At) -> Plain {
    match p.next(at) {
        Step::Invoke(call) => Plain::Invoke(ids(call.records())),
        Step::Checkpoint(s) => Plain::Checkpoint(s.0.parse().unwrap()),
        Step::Wait(d) => Plain::Wait(d),
        Step::GiveUp(g) => Plain::GiveUp(
            ids(&g.records),
            g.condition,
            g.invokes,
            g.last_response.and_then(|(id, _)| id),
        ),
        Step::Done => Plain::Done,
    }
}

/// Expects an invoke next; settles it. Returns the invoked records and what settling did.
fn invoke(
    p: &mut Pieces,
    outcome: Outcome,
    response: Option<Response>,
    policy: &RetryPolicy,
) -> (Vec<u64>, Settled) {
    match p.next(&FOREVER) {
        Step::Invoke(call) => {
            let invoked = ids(call.records());
            (invoked, call.settle(outcome, response, policy))
        }
        s => panic!("expected an invoke, got {s:?}"),
    }
}

fn seq(id: u64) -> SequenceNumber {
    SequenceNumber(id.to_string())
}

#[test]
fn a_success_checkpoints_the_piece_and_the_batch_is_done() {
    let mut p = Pieces::new(records(1..=3));
    let (invoked, settled) = invoke(&mut p, Outcome::Success, None, &policy(None, false));
    assert_eq!(invoked, [1, 2, 3]);
    assert_eq!(settled, Settled::Succeeded { last: seq(3) });
    assert_eq!(step(&mut p, &FOREVER), Plain::Checkpoint(3));
    assert_eq!(step(&mut p, &FOREVER), Plain::Done);
}

#[test]
fn function_errors_spend_the_budget_then_the_piece_is_given_up() {
    let policy = policy(Some(1), false);
    let mut p = Pieces::new(records(1..=3));
    let (_, settled) = invoke(&mut p, function_error(), response("r1"), &policy);
    assert_eq!(
        settled,
        Settled::Failed {
            function_errors: 1,
            detail: "Unhandled: Boom".into()
        }
    );
    assert_eq!(
        step(&mut p, &FOREVER),
        Plain::Wait(Duration::from_millis(1))
    );
    let (invoked, settled) = invoke(&mut p, function_error(), response("r2"), &policy);
    assert_eq!(invoked, [1, 2, 3]);
    assert!(matches!(
        settled,
        Settled::Failed {
            function_errors: 2,
            ..
        }
    ));
    assert_eq!(
        step(&mut p, &FOREVER),
        Plain::GiveUp(
            vec![1, 2, 3],
            Condition::RetryAttemptsExhausted,
            2,
            Some("r2".into())
        )
    );
    // Giving up leaves nothing to checkpoint here: the loop checkpoints past given-up records.
    assert_eq!(step(&mut p, &FOREVER), Plain::Done);
}

#[test]
fn throttles_and_service_errors_never_spend_the_budget_nor_count_invokes() {
    let policy = policy(Some(0), false);
    let mut p = Pieces::new(records(1..=2));
    for outcome in [
        Outcome::Throttled("slow".into()),
        Outcome::ServiceError("down".into()),
        Outcome::Throttled("slow".into()),
    ] {
        let (_, settled) = invoke(&mut p, outcome, None, &policy);
        assert!(matches!(
            settled,
            Settled::Failed {
                function_errors: 0,
                ..
            }
        ));
        assert!(matches!(step(&mut p, &FOREVER), Plain::Wait(_)));
    }
    invoke(&mut p, function_error(), response("r"), &policy);
    assert_eq!(
        step(&mut p, &FOREVER),
        Plain::GiveUp(
            vec![1, 2],
            Condition::RetryAttemptsExhausted,
            1,
            Some("r".into())
        )
    );
}

#[test]
fn a_partial_failure_checkpoints_the_done_prefix_and_retries_the_rest_without_bisecting() {
    // Bisect is on: the remaining records are still retried whole.
    let policy = policy(None, true);
    let mut p = Pieces::new(records(1..=5));
    let (_, settled) = invoke(
        &mut p,
        Outcome::PartialFailure(vec![2, 4]),
        response("r"),
        &policy,
    );
    assert_eq!(
        settled,
        Settled::Partial {
            first_failed: seq(3),
            retrying: 3
        }
    );
    assert_eq!(step(&mut p, &FOREVER), Plain::Checkpoint(2));
    assert_eq!(
        step(&mut p, &FOREVER),
        Plain::Wait(Duration::from_millis(1))
    );
    let (invoked, _) = invoke(&mut p, Outcome::Success, None, &policy);
    assert_eq!(invoked, [3, 4, 5]);
    assert_eq!(step(&mut p, &FOREVER), Plain::Checkpoint(5));
    assert_eq!(step(&mut p, &FOREVER), Plain::Done);
}

#[test]
fn a_partial_failure_counts_a_function_error_against_the_budget() {
    let policy = policy(Some(0), true);
    let mut p = Pieces::new(records(1..=4));
    invoke(
        &mut p,
        Outcome::PartialFailure(vec![1]),
        response("r"),
        &policy,
    );
    assert_eq!(step(&mut p, &FOREVER), Plain::Checkpoint(1));
    assert_eq!(
        step(&mut p, &FOREVER),
        Plain::GiveUp(
            vec![2, 3, 4],
            Condition::RetryAttemptsExhausted,
            1,
            Some("r".into())
        )
    );
    assert_eq!(step(&mut p, &FOREVER), Plain::Done);
}

#[test]
fn a_partial_failure_of_the_first_record_is_a_function_error_and_bisects() {
    let policy = policy(Some(0), true);
    let mut p = Pieces::new(records(1..=4));
    let (_, settled) = invoke(
        &mut p,
        Outcome::PartialFailure(vec![0, 3]),
        response("r"),
        &policy,
    );
    assert_eq!(
        settled,
        Settled::Failed {
            function_errors: 1,
            detail: "the first record failed".into()
        }
    );
    // Bisected: the left half goes first, at once.
    assert_eq!(step(&mut p, &FOREVER), Plain::Invoke(vec![1, 2]));
}

#[test]
fn bisect_isolates_a_poison_record_and_invoke_counts_carry_across_splits() {
    let policy = policy(Some(0), true);
    let mut p = Pieces::new(records(1..=4));
    let poison = |ids: &[u64]| ids.contains(&2);
    let mut given_up = vec![];
    let mut checkpoints = vec![];
    let mut calls = vec![];
    loop {
        match p.next(&FOREVER) {
            Step::Invoke(call) => {
                let invoked = ids(call.records());
                let outcome = if poison(&invoked) {
                    function_error()
                } else {
                    Outcome::Success
                };
                let id = format!("r{}", calls.len() + 1);
                calls.push(invoked);
                call.settle(outcome, response(&id), &policy);
            }
            Step::Checkpoint(s) => checkpoints.push(s.0.parse::<u64>().unwrap()),
            Step::GiveUp(g) => given_up.push((
                ids(&g.records),
                g.condition,
                g.invokes,
                g.last_response.and_then(|(id, _)| id),
            )),
            Step::Wait(d) => panic!("no wait expected, got {d:?}"),
            Step::Done => break,
        }
    }
    assert_eq!(
        calls,
        [vec![1, 2, 3, 4], vec![1, 2], vec![1], vec![2], vec![3, 4]]
    );
    assert_eq!(checkpoints, [1, 4]);
    // Record 2 was invoked in [1..4], [1, 2] and [2]: three invocations, the last one's response.
    assert_eq!(
        given_up,
        [(
            vec![2],
            Condition::RetryAttemptsExhausted,
            3,
            Some("r4".to_string())
        )]
    );
}

#[test]
fn a_payload_too_large_is_split_without_spending_the_budget() {
    let policy = policy(Some(0), false);
    let mut p = Pieces::new(records(1..=4));
    let too_large = || Outcome::PayloadTooLarge("big".into());
    let (invoked, settled) = invoke(&mut p, too_large(), None, &policy);
    assert_eq!(invoked, [1, 2, 3, 4]);
    assert_eq!(
        settled,
        Settled::Split {
            message: "big".into()
        }
    );
    let (invoked, _) = invoke(&mut p, too_large(), None, &policy);
    assert_eq!(invoked, [1, 2]);
    // A single record still too large can never be sent: it goes at once, as
    // MaximumPayloadSizeExceeded, without a function error counted.
    let (invoked, settled) = invoke(&mut p, too_large(), None, &policy);
    assert_eq!(invoked, [1]);
    assert!(matches!(
        settled,
        Settled::Failed {
            function_errors: 0,
            ..
        }
    ));
    assert_eq!(
        step(&mut p, &FOREVER),
        Plain::GiveUp(vec![1], Condition::MaximumPayloadSizeExceeded, 0, None)
    );
    for expected in [vec![2], vec![3, 4]] {
        let (invoked, _) = invoke(&mut p, Outcome::Success, None, &policy);
        assert_eq!(invoked, expected);
        assert!(matches!(step(&mut p, &FOREVER), Plain::Checkpoint(_)));
    }
    assert_eq!(step(&mut p, &FOREVER), Plain::Done);
}

#[test]
fn a_single_record_too_large_is_given_up_at_once_even_with_unlimited_retries() {
    // Kafka's default: retry forever. A record that can never be sent must not block its
    // partition.
    let policy = policy(None, true);
    let mut p = Pieces::new(records(1..=1));
    let (invoked, _) = invoke(
        &mut p,
        Outcome::PayloadTooLarge("big".into()),
        None,
        &policy,
    );
    assert_eq!(invoked, [1]);
    assert_eq!(
        step(&mut p, &FOREVER),
        Plain::GiveUp(vec![1], Condition::MaximumPayloadSizeExceeded, 0, None)
    );
    assert_eq!(step(&mut p, &FOREVER), Plain::Done);
}

#[test]
fn the_expired_prefix_is_given_up_before_an_invoke_and_the_rest_is_invoked_next() {
    let policy = policy(None, false);
    // Records 1..=5 arrived at 1..=5 ms; at 10 ms with a 6 ms age limit, 1..=3 are expired.
    let mut p = Pieces::new(records(1..=5));
    let at = At {
        now: 10,
        max_age: 6,
    };
    assert_eq!(
        step(&mut p, &at),
        Plain::GiveUp(vec![1, 2, 3], Condition::RecordAgeExceeded, 0, None)
    );
    // The rest goes out next, even if it aged meanwhile (its age is looked at once per round).
    let later = At {
        now: 100,
        max_age: 6,
    };
    let (invoked, _) = match p.next(&later) {
        Step::Invoke(call) => {
            let invoked = ids(call.records());
            (
                invoked,
                call.settle(function_error(), response("r"), &policy),
            )
        }
        s => panic!("{s:?}"),
    };
    assert_eq!(invoked, [4, 5]);
    // The retry waits no longer than the oldest record's expiry (plus 1 ms).
    let slow = RetryPolicy {
        base_delay: Duration::from_secs(10),
        max_delay: Duration::from_secs(10),
        ..policy.clone()
    };
    let mut q = Pieces::new(records(100..=101));
    match q.next(&FOREVER) {
        Step::Invoke(call) => call.settle(function_error(), None, &slow),
        s => panic!("{s:?}"),
    };
    let soon = At {
        now: 100,
        max_age: 5,
    };
    match step(&mut q, &soon) {
        Plain::Wait(d) => assert!(d <= Duration::from_millis(6), "{d:?}"),
        s => panic!("{s:?}"),
    }
    // After the wait, what expired is given up on, with the invocation it had.
    let after = At {
        now: 106,
        max_age: 5,
    };
    assert_eq!(
        step(&mut q, &after),
        Plain::GiveUp(vec![100], Condition::RecordAgeExceeded, 1, None)
    );
    assert_eq!(step(&mut q, &after), Plain::Invoke(vec![101]));
}

#[test]
fn a_batch_wholly_expired_is_given_up_without_an_invoke() {
    let mut p = Pieces::new(records(1..=3));
    let at = At {
        now: 1_000,
        max_age: 10,
    };
    assert_eq!(
        step(&mut p, &at),
        Plain::GiveUp(vec![1, 2, 3], Condition::RecordAgeExceeded, 0, None)
    );
    assert_eq!(step(&mut p, &at), Plain::Done);
}
