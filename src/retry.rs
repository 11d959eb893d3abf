//! The retry policy for stream batches, pure: backoff with full jitter, AWS's attempt budget
//! (`MaximumRetryAttempts`), record age (`MaximumRecordAgeInSeconds`) and bisection
//! (`BisectBatchOnFunctionError`). Throttles and service errors never consume the budget; a split
//! does not either (esm-spec.md §4). The worker asks [`RetryPolicy::decide`] after each failure.

use std::time::Duration;

use crate::config::ErrorHandling;

/// Why a batch was given up on; the `condition` of the on-failure record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    RetryAttemptsExhausted,
    /// Records older than MaximumRecordAgeInSeconds. Named as LocalStack names it; AWS does not
    /// document the string.
    RecordAgeExceeded,
    /// A single record whose event is over the 6 MB invocation limit: it can never be sent, so it
    /// is given up on at once, whatever the retry settings (AWS's Kafka condition; stream records
    /// are far smaller).
    MaximumPayloadSizeExceeded,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::RetryAttemptsExhausted => "RetryAttemptsExhausted",
            Condition::RecordAgeExceeded => "RecordAgeExceeded",
            Condition::MaximumPayloadSizeExceeded => "MaximumPayloadSizeExceeded",
        }
    }
}

/// How an invocation failed, as far as the budget is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The function ran and failed (or reported failed items): counts one attempt.
    Function,
    /// Throttled or the service failed before the function ran: no attempt counted.
    NotInvoked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Try the same records again after this delay.
    RetryAfter(Duration),
    /// Split the records in two and try the left half first, at once.
    Bisect,
    GiveUp(Condition),
}

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub base_delay: Duration,
    pub max_delay: Duration,
    pub max_retry_attempts: Option<u32>,
    pub max_record_age: Option<Duration>,
    pub bisect: bool,
}

impl RetryPolicy {
    pub fn new(cfg: &ErrorHandling) -> Self {
        RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            max_retry_attempts: cfg.max_retry_attempts,
            max_record_age: cfg.max_record_age,
            bisect: cfg.bisect_on_function_error,
        }
    }

    /// After a failure of `len` records that have now failed in the function `function_errors`
    /// times, with `consecutive` failures in a row (any kind) for the backoff.
    pub fn decide(
        &self,
        kind: FailureKind,
        len: usize,
        function_errors: u32,
        consecutive: u32,
    ) -> Decision {
        if kind == FailureKind::Function {
            if self.bisect && len > 1 {
                return Decision::Bisect;
            }
            if self
                .max_retry_attempts
                .is_some_and(|max| function_errors > max)
            {
                return Decision::GiveUp(Condition::RetryAttemptsExhausted);
            }
        }
        Decision::RetryAfter(self.backoff(consecutive))
    }

    /// Full-jitter exponential backoff: uniform in [0, min(max, base * 2^(n-1))], at least 1 ms.
    pub fn backoff(&self, consecutive: u32) -> Duration {
        let exp = consecutive.saturating_sub(1).min(20);
        let ceiling = self.base_delay.saturating_mul(1 << exp).min(self.max_delay);
        let ms = ceiling.as_millis().max(1) as u64;
        Duration::from_millis(fastrand::u64(1..=ms))
    }

    /// True when a record that arrived at `arrival_ms` is past MaximumRecordAgeInSeconds at `now_ms`.
    pub fn expired(&self, arrival_ms: i64, now_ms: i64) -> bool {
        self.max_record_age
            .is_some_and(|age| now_ms.saturating_sub(arrival_ms) > age.as_millis() as i64)
    }

    /// Milliseconds until a record that arrived at `arrival_ms` expires; `None` without an age limit.
    pub fn until_expiry(&self, arrival_ms: i64, now_ms: i64) -> Option<Duration> {
        let age = self.max_record_age?;
        let left = arrival_ms + age.as_millis() as i64 - now_ms;
        Some(Duration::from_millis(left.max(0) as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(attempts: Option<u32>, bisect: bool) -> RetryPolicy {
        RetryPolicy::new(&ErrorHandling {
            max_retry_attempts: attempts,
            max_record_age: Some(Duration::from_secs(60)),
            bisect_on_function_error: bisect,
            ..Default::default()
        })
    }

    #[test]
    fn throttles_never_exhaust_the_budget() {
        let p = policy(Some(0), true);
        for n in 1..50 {
            assert!(matches!(
                p.decide(FailureKind::NotInvoked, 10, 0, n),
                Decision::RetryAfter(_)
            ));
        }
    }

    #[test]
    fn function_errors_count_until_the_budget_is_spent() {
        let p = policy(Some(2), false);
        assert!(matches!(
            p.decide(FailureKind::Function, 5, 1, 1),
            Decision::RetryAfter(_)
        ));
        assert!(matches!(
            p.decide(FailureKind::Function, 5, 2, 2),
            Decision::RetryAfter(_)
        ));
        assert_eq!(
            p.decide(FailureKind::Function, 5, 3, 3),
            Decision::GiveUp(Condition::RetryAttemptsExhausted)
        );
        let infinite = policy(None, false);
        assert!(matches!(
            infinite.decide(FailureKind::Function, 5, 10_000, 9),
            Decision::RetryAfter(_)
        ));
    }

    #[test]
    fn bisect_first_then_budget_on_single_records() {
        let p = policy(Some(0), true);
        assert_eq!(p.decide(FailureKind::Function, 2, 1, 1), Decision::Bisect);
        assert_eq!(
            p.decide(FailureKind::Function, 1, 1, 1),
            Decision::GiveUp(Condition::RetryAttemptsExhausted)
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = policy(None, false);
        for n in 1..40 {
            let d = p.backoff(n);
            let ceiling = Duration::from_millis(100)
                .saturating_mul(1 << (n - 1).min(20))
                .min(Duration::from_secs(10));
            assert!(d <= ceiling && d >= Duration::from_millis(1), "{n}: {d:?}");
        }
    }

    #[test]
    fn age_limit() {
        let p = policy(None, false);
        assert!(!p.expired(0, 60_000));
        assert!(p.expired(0, 60_001));
        assert_eq!(p.until_expiry(0, 59_000), Some(Duration::from_secs(1)));
        assert!(!policy(None, false).expired(0, 0));
    }
}
