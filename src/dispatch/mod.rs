//! The dispatch seam: a [`Dispatcher`] sends one event payload to the function and classifies what
//! came back, so the retry policy can decide (esm-spec.md §4, DESIGN.md invariant 6):
//! - a function ran and failed → [`Invoked`] with `function_error` set (counts one attempt). For an
//!   HTTP target this includes what Lambda itself reports as a function error: a request past its
//!   timeout (`Sandbox.Timedout`) and a response over 6 MB (`Function.ResponseSizeTooLarge`);
//! - the invoke never reached the function, or was throttled → [`DispatchError`] (no attempt counted);
//! - the payload was too large → [`DispatchError::PayloadTooLarge`] (the batch is split).
//!
//! No invoke can hang: an HTTP request is bounded by `Http.TimeoutSeconds` (body read included), a
//! Lambda Invoke by the function's own timeout plus a margin (a timeout there is a service error:
//! whether the function ran is unknown).

mod http;
mod lambda;
pub mod outcome;
pub mod response;

pub use http::HttpDispatcher;
pub use lambda::LambdaDispatcher;
pub use outcome::{classify, Outcome};

use async_trait::async_trait;
use bytes::Bytes;

/// The function ran: its response, or its error.
#[derive(Debug, Clone)]
pub struct Invoked {
    pub status: u16,
    pub body: Bytes,
    /// `X-Amz-Function-Error` (`Unhandled`, `Handled`), or the HTTP target's equivalent (`Unhandled`
    /// for a failing status, a redirect, a timeout or an oversized response).
    pub function_error: Option<String>,
    pub executed_version: Option<String>,
    pub request_id: Option<String>,
}

/// The invoke did not reach the function, or the function could not take it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DispatchError {
    #[error("throttled (status {status:?}): {message}")]
    Throttled {
        status: Option<u16>,
        message: String,
    },
    #[error("service error (status {status:?}): {message}")]
    Service {
        status: Option<u16>,
        message: String,
    },
    #[error("payload too large: {message}")]
    PayloadTooLarge { message: String },
}

impl DispatchError {
    pub fn status(&self) -> Option<u16> {
        match self {
            DispatchError::Throttled { status, .. } | DispatchError::Service { status, .. } => {
                *status
            }
            DispatchError::PayloadTooLarge { .. } => Some(413),
        }
    }
}

/// Sends one batch's event JSON to the function, synchronously.
#[async_trait]
pub trait Dispatcher: Send + Sync {
    async fn invoke(&self, payload: Bytes) -> Result<Invoked, DispatchError>;
    /// The function's ARN (or URL, for HTTP targets) for failure records.
    fn function_arn(&self) -> &str;
    /// How long the function may run, when known (Lambda: its configured timeout, read once;
    /// HTTP: `Http.TimeoutSeconds`).
    async fn function_timeout(&self) -> Option<std::time::Duration> {
        None
    }
}
