//! The retry/bisect/partial/give-up rules over one batch, pure: [`Pieces`] owns the batch's queue
//! of pieces (contiguous runs of records, left to right, each with its retry history), is told what
//! each invocation did (an [`Outcome`]) and the [`RetryPolicy`]'s answer, and says what the worker
//! must do next as a [`Step`]: invoke the front piece, checkpoint, wait, give records up, or stop.
//! It does no I/O and reads no clock: record age comes in through [`Expiry`], as of one instant.

use std::collections::VecDeque;
use std::time::Duration;

use crate::destination::ResponseContext;
use crate::dispatch::Outcome;
use crate::retry::{Condition, Decision, FailureKind, RetryPolicy};
use crate::source::{Record, SequenceNumber};

/// The request id and response context of an invocation, for the on-failure record.
pub type Response = (Option<String>, ResponseContext);

/// Record age as of one instant: which records are to be given up on for their age, and how long
/// the others have left.
pub trait Expiry {
    /// True when a record that arrived at `arrival_ms` is to be given up on.
    fn expired(&self, arrival_ms: i64) -> bool;
    /// How long until [`Expiry::expired`] holds for a record that arrived at `arrival_ms`.
    fn left(&self, arrival_ms: i64) -> Duration;
}

/// Records being worked on, with their retry history.
#[derive(Debug)]
struct Piece {
    records: Vec<Record>,
    function_errors: u32,
    consecutive_failures: u32,
    invokes: u32,
    last_response: Option<Response>,
}

impl Piece {
    fn new(records: Vec<Record>) -> Self {
        Piece {
            records,
            function_errors: 0,
            consecutive_failures: 0,
            invokes: 0,
            last_response: None,
        }
    }

    /// A part split off a piece: a fresh retry budget, but the same invocation history, so
    /// `approximateInvokeCount` counts every invocation of its records, bisects included.
    fn split_from(records: Vec<Record>, parent: &Piece) -> Self {
        Piece {
            invokes: parent.invokes,
            last_response: parent.last_response.clone(),
            ..Piece::new(records)
        }
    }
}

/// Records given up on, with what the on-failure record says about them.
#[derive(Debug)]
pub struct GiveUp {
    /// Never empty, in order.
    pub records: Vec<Record>,
    pub condition: Condition,
    /// Invocations of these records so far (`approximateInvokeCount`).
    pub invokes: u32,
    /// The last invocation's response, if the function answered.
    pub last_response: Option<Response>,
}

/// What the worker must do next.
#[derive(Debug)]
pub enum Step<'a> {
    /// Invoke the front piece's records, then [`Invoke::settle`] with what happened.
    Invoke(Invoke<'a>),
    /// Write this checkpoint (the records up to it are done).
    Checkpoint(SequenceNumber),
    /// Wait before retrying the front piece; never past its oldest record's expiry.
    Wait(Duration),
    /// Hand these records to the on-failure destination (or drop them), then checkpoint past them.
    GiveUp(GiveUp),
    /// Every record of the batch succeeded or was given up on.
    Done,
}

/// What [`Invoke::settle`] did with an outcome, for the worker's logs and metrics.
#[derive(Debug, PartialEq, Eq)]
pub enum Settled {
    /// The piece succeeded; a checkpoint at `last` follows.
    Succeeded { last: SequenceNumber },
    /// A partial batch response failed the records from `first_failed` on (`retrying` of them):
    /// the records before are checkpointed, the rest is retried (or given up on).
    Partial {
        first_failed: SequenceNumber,
        retrying: usize,
    },
    /// The payload was too large: the piece was split in two, without spending an attempt.
    Split { message: String },
    /// The invocation failed; the piece has now failed in the function `function_errors` times.
    Failed {
        function_errors: u32,
        detail: String,
    },
}

/// The front piece is being invoked: settle it with the outcome.
#[derive(Debug)]
pub struct Invoke<'a> {
    pieces: &'a mut Pieces,
}

impl Invoke<'_> {
    /// The records to invoke: never empty, in order.
    pub fn records(&self) -> &[Record] {
        self.pieces
            .queue
            .front()
            .map_or(&[][..], |p| p.records.as_slice())
    }

    /// Applies what the invocation did: `response` is the function's answer (if it answered) and
    /// `policy` decides what follows a failure. The steps it leads to come from [`Pieces::next`].
    pub fn settle(
        self,
        outcome: Outcome,
        response: Option<Response>,
        policy: &RetryPolicy,
    ) -> Settled {
        self.pieces.settle(outcome, response, policy)
    }
}

/// One batch's pieces and what is left to do for them. Drive it with [`Pieces::next`] until it
/// says [`Step::Done`].
#[derive(Debug)]
pub struct Pieces {
    queue: VecDeque<Piece>,
    /// A checkpoint the last outcome calls for, before anything else.
    checkpoint: Option<SequenceNumber>,
    /// The policy's decision for the front piece, followed after that checkpoint.
    decision: Option<Decision>,
    /// The front piece's expired prefix was just given up on: it is invoked next without a second
    /// look at its records' age.
    aged: bool,
}

impl Pieces {
    pub fn new(batch: Vec<Record>) -> Self {
        Pieces {
            queue: VecDeque::from([Piece::new(batch)]),
            checkpoint: None,
            decision: None,
            aged: false,
        }
    }

    /// What to do next, with record age as of now.
    pub fn next(&mut self, expiry: &impl Expiry) -> Step<'_> {
        if let Some(last) = self.checkpoint.take() {
            return Step::Checkpoint(last);
        }
        match self.decision.take() {
            Some(Decision::Bisect) => self.bisect(),
            Some(Decision::RetryAfter(delay)) => {
                // Wake no later than the oldest record's expiry, so age is enforced on time.
                let oldest = self.queue.front().and_then(|p| p.records.first());
                return Step::Wait(oldest.map_or(delay, |first| {
                    delay.min(expiry.left(first.arrival_ms) + Duration::from_millis(1))
                }));
            }
            Some(Decision::GiveUp(condition)) => {
                if let Some(piece) = self.queue.pop_front() {
                    return Step::GiveUp(GiveUp {
                        records: piece.records,
                        condition,
                        invokes: piece.invokes,
                        last_response: piece.last_response,
                    });
                }
            }
            None => {}
        }
        // Pieces are never empty; one that is would be dropped rather than invoked.
        while self.queue.front().is_some_and(|p| p.records.is_empty()) {
            self.queue.pop_front();
            self.aged = false;
        }
        let Some(piece) = self.queue.front_mut() else {
            return Step::Done;
        };
        if !std::mem::take(&mut self.aged) {
            // Records past their age are given up on without an invoke. Records are in arrival
            // order, so the expired ones are a prefix.
            let expired = piece
                .records
                .iter()
                .take_while(|r| expiry.expired(r.arrival_ms))
                .count();
            if expired > 0 {
                let records: Vec<Record> = piece.records.drain(..expired).collect();
                let (invokes, last_response) = (piece.invokes, piece.last_response.clone());
                // What is left of the piece is invoked next, without a second look at its age;
                // an emptied piece goes.
                if piece.records.is_empty() {
                    self.queue.pop_front();
                } else {
                    self.aged = true;
                }
                return Step::GiveUp(GiveUp {
                    records,
                    condition: Condition::RecordAgeExceeded,
                    invokes,
                    last_response,
                });
            }
        }
        Step::Invoke(Invoke { pieces: self })
    }

    /// Splits the front piece in two, left first; both halves start a fresh retry budget.
    fn bisect(&mut self) {
        let Some(mut parent) = self.queue.pop_front() else {
            return;
        };
        let right = parent.records.split_off(parent.records.len() / 2);
        let left = std::mem::take(&mut parent.records);
        self.queue.push_front(Piece::split_from(right, &parent));
        self.queue.push_front(Piece::split_from(left, &parent));
    }

    fn settle(
        &mut self,
        outcome: Outcome,
        response: Option<Response>,
        policy: &RetryPolicy,
    ) -> Settled {
        let piece = self
            .queue
            .front_mut()
            .expect("an Invoke step has a front piece");
        let n = piece.records.len();
        if outcome.invoked() {
            piece.invokes += 1;
        }
        if response.is_some() {
            piece.last_response = response;
        }
        let (kind, detail) = match outcome {
            Outcome::Success => {
                let piece = self
                    .queue
                    .pop_front()
                    .expect("an Invoke step has a front piece");
                let last = piece.records.last().expect("pieces are never empty");
                let last = last.sequence.clone();
                self.checkpoint = Some(last.clone());
                return Settled::Succeeded { last };
            }
            Outcome::PartialFailure(f) if f.first().is_some_and(|&i| i > 0 && i < n) => {
                // Everything before the lowest failure is done: checkpoint it and retry from the
                // failure (with bisect, AWS splits at exactly that point).
                let done: Vec<Record> = piece.records.drain(..f[0]).collect();
                let last = done.last().expect("f[0] > 0").sequence.clone();
                piece.function_errors += 1;
                piece.consecutive_failures += 1;
                let (errors, consecutive) = (piece.function_errors, piece.consecutive_failures);
                self.checkpoint = Some(last);
                // A partial response is a function error for the remaining records, but they are
                // not bisected again for it.
                self.decision = Some(
                    match policy.decide(FailureKind::Function, 1, errors, consecutive) {
                        Decision::Bisect => Decision::RetryAfter(policy.backoff(consecutive)),
                        d => d,
                    },
                );
                return Settled::Partial {
                    first_failed: piece.records[0].sequence.clone(),
                    retrying: piece.records.len(),
                };
            }
            Outcome::PartialFailure(_) => {
                (FailureKind::Function, "the first record failed".to_string())
            }
            Outcome::FunctionError { detail, .. } => (FailureKind::Function, detail),
            Outcome::PayloadTooLarge(message) if n > 1 => {
                // Split without consuming the retry budget; left half first keeps the order.
                let right = piece.records.split_off(n / 2);
                let right = Piece::split_from(right, piece);
                self.queue.insert(1, right);
                return Settled::Split { message };
            }
            // A single record that is still too large can never be sent: it is given up on at
            // once, without spending the retry budget (AWS's MaximumPayloadSizeExceeded).
            Outcome::PayloadTooLarge(detail) => {
                piece.consecutive_failures += 1;
                self.decision = Some(Decision::GiveUp(Condition::MaximumPayloadSizeExceeded));
                return Settled::Failed {
                    function_errors: piece.function_errors,
                    detail,
                };
            }
            Outcome::Throttled(detail) | Outcome::ServiceError(detail) => {
                (FailureKind::NotInvoked, detail)
            }
        };
        if kind == FailureKind::Function {
            piece.function_errors += 1;
        }
        piece.consecutive_failures += 1;
        let (errors, consecutive) = (piece.function_errors, piece.consecutive_failures);
        self.decision = Some(policy.decide(kind, n, errors, consecutive));
        Settled::Failed {
            function_errors: errors,
            detail,
        }
    }
}

#[cfg(test)]
#[path = "pieces_tests.rs"]
mod tests;
