//! Plain data shared by every nimbus component: function configuration, invocation requests and
//! outcomes, usage records, and the limits Lambda documents. Everything here is a serde type so
//! that a call between components can become a network call without changing either side.
//!
//! This crate performs no I/O.

#![forbid(unsafe_code)]

pub mod alias;
pub mod arn;
pub mod function;
pub mod hex;
pub mod http;
pub mod http_api;
pub mod iam;
pub mod identity;
pub mod invocation;
pub mod layer;
pub mod limits;
pub mod name;
pub mod net;
pub mod queue;
pub mod telemetry;
pub mod time;
pub mod url;

pub use function::{CodeRef, FunctionConfig, ProvidedFlavor, Runtime};
pub use invocation::{
    FunctionError, InitType, InvokeOutcome, InvokeRequest, OutcomeKind, ResponseStream, StreamPart,
};
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

/// A validation failure of user-supplied input, worded for the user.
///
/// AWS APIs tell two kinds apart, and clients see the difference in the error code: a value
/// that breaks a constraint of the API's model (a pattern, a range, an enum) is a
/// `ValidationException`, any other unacceptable value an `InvalidParameterValueException`
/// (or the API's own equivalent).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidParameter {
    #[error(
        "1 validation error detected: Value {} at '{field}' failed to satisfy constraint: {constraint}",
        value.as_deref().map_or_else(|| "null".to_owned(), |v| format!("'{v}'"))
    )]
    Constraint {
        /// The member's name as the API model spells it (`memorySize`).
        field: String,
        /// What was sent; `None` when the member was missing or null.
        value: Option<String>,
        /// The constraint, as AWS words it (`Member must have value between 1 and 10000`).
        constraint: String,
    },
    #[error("{0}")]
    Value(String),
}

impl InvalidParameter {
    /// Any other invalid value.
    pub fn new(message: impl Into<String>) -> Self {
        Self::Value(message.into())
    }

    /// A value outside a constraint of the API's model.
    pub fn constraint(
        field: impl Into<String>,
        value: Option<&dyn std::fmt::Display>,
        constraint: impl Into<String>,
    ) -> Self {
        Self::Constraint {
            field: field.into(),
            value: value.map(|v| v.to_string()),
            constraint: constraint.into(),
        }
    }

    /// A number outside `min..=max`.
    pub fn range(field: &str, value: &dyn std::fmt::Display, min: i64, max: i64) -> Self {
        Self::constraint(
            field,
            Some(value),
            format!("Member must have value between {min} and {max}"),
        )
    }
}
