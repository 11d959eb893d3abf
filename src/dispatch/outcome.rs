//! One reading of an invocation's result, shared by the shard worker and the queue worker: what
//! happened to the batch ([`Outcome`]), its metric label, and whether it spends a retry attempt
//! (esm-spec.md §4, DESIGN.md invariant 6). The workers decide what to do next; this only says
//! what happened, without I/O.

use super::response::{self, IdentifierKind, ItemFailures};
use super::{DispatchError, Invoked};

/// What one invocation did to its batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every record succeeded.
    Success,
    /// The function reported these records (indices into the batch: sorted, distinct, never
    /// empty) as failed in a partial batch response.
    PartialFailure(Vec<usize>),
    /// The function ran and failed, or its partial batch response failed the whole batch. The
    /// detail never holds the response body (it may echo record data): only the error's type.
    FunctionError { partial: bool, detail: String },
    /// The function was not run: throttled.
    Throttled(String),
    /// The function was not run (or we cannot know): the service failed.
    ServiceError(String),
    /// The payload is over the function's limit: split it.
    PayloadTooLarge(String),
}

impl Outcome {
    /// The bounded `outcome` label of `sluice_batches_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::PartialFailure(_) | Outcome::FunctionError { partial: true, .. } => {
                "partial_failure"
            }
            Outcome::FunctionError { .. } => "function_error",
            Outcome::Throttled(_) => "throttled",
            Outcome::ServiceError(_) => "service_error",
            Outcome::PayloadTooLarge(_) => "payload_too_large",
        }
    }

    /// True when the function ran: the invocation counts one attempt of its records.
    pub fn invoked(&self) -> bool {
        matches!(
            self,
            Outcome::Success | Outcome::PartialFailure(_) | Outcome::FunctionError { .. }
        )
    }
}

/// Reads an invocation's result. With `report_item_failures` (`FunctionResponseTypes:
/// [ReportBatchItemFailures]`) the response body is read against the batch's `identifiers`
/// (sequence numbers or message ids, in batch order), by AWS's rules.
pub fn classify<'a>(
    result: &Result<Invoked, DispatchError>,
    report_item_failures: bool,
    identifiers: impl IntoIterator<Item = &'a str>,
) -> Outcome {
    classify_as(
        result,
        report_item_failures,
        IdentifierKind::Strings,
        identifiers,
    )
}

/// [`classify`], with the response's identifiers named as `kind` says (Kafka's
/// `{partition, offset}` objects: `IdentifierKind::of(&format)`).
pub fn classify_as<'a>(
    result: &Result<Invoked, DispatchError>,
    report_item_failures: bool,
    kind: IdentifierKind<'_>,
    identifiers: impl IntoIterator<Item = &'a str>,
) -> Outcome {
    match result {
        Ok(inv) if inv.function_error.is_none() => {
            if !report_item_failures {
                return Outcome::Success;
            }
            match response::parse_as(&inv.body, kind, identifiers) {
                ItemFailures::None => Outcome::Success,
                ItemFailures::Failed(failed) => Outcome::PartialFailure(failed),
                ItemFailures::All(why) => Outcome::FunctionError {
                    partial: true,
                    detail: format!("complete failure: {why}"),
                },
            }
        }
        Ok(inv) => Outcome::FunctionError {
            partial: false,
            detail: format!(
                "{}: {}",
                inv.function_error.as_deref().unwrap_or_default(),
                error_type(&inv.body).unwrap_or_else(|| "(no errorType)".into())
            ),
        },
        Err(e @ DispatchError::Throttled { .. }) => Outcome::Throttled(e.to_string()),
        Err(e @ DispatchError::Service { .. }) => Outcome::ServiceError(e.to_string()),
        Err(DispatchError::PayloadTooLarge { message }) => {
            Outcome::PayloadTooLarge(message.clone())
        }
    }
}

/// The `errorType` of a function error response (Lambda's `{"errorType", "errorMessage"}`).
fn error_type(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    Some(v.get("errorType")?.as_str()?.chars().take(128).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn ran(body: &str, function_error: Option<&str>) -> Result<Invoked, DispatchError> {
        Ok(Invoked {
            status: 200,
            body: Bytes::from(body.to_string()),
            function_error: function_error.map(str::to_string),
            executed_version: None,
            request_id: None,
        })
    }

    const IDS: [&str; 3] = ["a", "b", "c"];

    #[test]
    fn each_result_is_read_once_the_same_way() {
        let partial = r#"{"batchItemFailures":[{"itemIdentifier":"b"}]}"#;
        assert_eq!(classify(&ran(partial, None), false, IDS), Outcome::Success);
        assert_eq!(
            classify(&ran(partial, None), true, IDS),
            Outcome::PartialFailure(vec![1])
        );
        let bad = r#"{"batchItemFailures":[{"itemIdentifier":"zz"}]}"#;
        let o = classify(&ran(bad, None), true, IDS);
        assert_eq!(o.label(), "partial_failure");
        assert!(o.invoked());
        let o = classify(
            &ran(
                r#"{"errorType":"Boom","errorMessage":"secret record data"}"#,
                Some("Unhandled"),
            ),
            true,
            IDS,
        );
        assert_eq!(
            o,
            Outcome::FunctionError {
                partial: false,
                detail: "Unhandled: Boom".into()
            }
        );
        assert_eq!(o.label(), "function_error");
        let throttled = Err(DispatchError::Throttled {
            status: Some(429),
            message: "slow".into(),
        });
        let o = classify(&throttled, true, IDS);
        assert_eq!(o.label(), "throttled");
        assert!(!o.invoked());
        let o = classify(
            &Err(DispatchError::Service {
                status: None,
                message: "refused".into(),
            }),
            true,
            IDS,
        );
        assert_eq!((o.label(), o.invoked()), ("service_error", false));
        let o = classify(
            &Err(DispatchError::PayloadTooLarge {
                message: "big".into(),
            }),
            true,
            IDS,
        );
        assert_eq!(o, Outcome::PayloadTooLarge("big".into()));
    }

    #[test]
    fn the_detail_of_a_function_error_never_carries_the_body() {
        let o = classify(
            &ran("not json: record 42 data", Some("Handled")),
            false,
            IDS,
        );
        match o {
            Outcome::FunctionError { detail, .. } => {
                assert_eq!(detail, "Handled: (no errorType)")
            }
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn kafka_responses_are_read_as_partition_and_offset_objects() {
        let kind = IdentifierKind::Kafka { partition: "t-0" };
        let offsets = ["7", "8"];
        let object = r#"{"batchItemFailures":[{"itemIdentifier":{"partition":"t-0","offset":8}}]}"#;
        assert_eq!(
            classify_as(&ran(object, None), true, kind, offsets),
            Outcome::PartialFailure(vec![1])
        );
        assert_eq!(
            classify_as(&ran(object, None), false, kind, offsets),
            Outcome::Success
        );
        let string = r#"{"batchItemFailures":[{"itemIdentifier":"8"}]}"#;
        assert!(matches!(
            classify_as(&ran(string, None), true, kind, offsets),
            Outcome::FunctionError { partial: true, .. }
        ));
    }
}
