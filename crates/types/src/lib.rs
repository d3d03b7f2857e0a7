//! Plain data shared by every nimbus component: function configuration, invocation requests and
//! outcomes, usage records, and the limits Lambda documents. Everything here is a serde type so
//! that a call between components can become a network call without changing either side.
//!
//! This crate performs no I/O.

#![forbid(unsafe_code)]

pub mod function;
pub mod invocation;
pub mod limits;
pub mod name;
pub mod queue;
pub mod telemetry;
pub mod time;

pub use function::{CodeRef, FunctionConfig, ProvidedFlavor, Runtime};
pub use invocation::{FunctionError, InitType, InvokeOutcome, InvokeRequest, OutcomeKind};
pub use name::{FunctionRef, Qualifier};
pub use telemetry::{LogEntry, Pricing, UsageRecord, UsageReport};

/// An error with its sources, `outer: inner: innermost`, for logs and messages.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// A validation failure of user-supplied configuration, worded for the user.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct InvalidParameter(pub String);

impl InvalidParameter {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}
