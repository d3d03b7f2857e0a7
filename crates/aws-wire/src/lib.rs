//! What every AWS protocol nimbus speaks has in common, in one place, so that each API crate
//! only parses, validates, calls its domain crate and encodes:
//!
//! - [`ErrorEnvelope`]: each protocol's error type says how it answers the failures that
//!   happen before an operation runs (an oversized or unreadable body, an unknown operation),
//!   so that an oversized SQS request gets SQS's error and not Lambda's. [`envelope`] renders
//!   the three error shapes (rest-json, JSON 1.0/1.1, rest-xml).
//! - [`body`]: request bodies read whole under a limit, or streamed under a limit without
//!   buffering (object uploads).
//! - [`target`]: JSON 1.0/1.1 `X-Amz-Target` parsing and responses.
//! - [`xml`]: a small writer for rest-xml responses.
//! - [`arn`]: typed ARNs (re-exported from `nimbus-types`, where the domain crates use them).

#![forbid(unsafe_code)]

pub mod body;
pub mod dispatch;
pub mod envelope;
pub mod eventstream;
pub mod query;
pub mod sigv4;
pub mod target;
pub mod xml;

pub use nimbus_types::arn;

use axum::http::HeaderMap;
use axum::response::IntoResponse;

/// How a protocol answers the failures every protocol has.
pub trait ErrorEnvelope: IntoResponse + Sized {
    /// The request body is larger than `limit` bytes, which `operation` accepts at most.
    fn too_large(limit: u64, operation: &str) -> Self;
    /// The request body could not be read or does not parse.
    fn malformed(message: String) -> Self;
    /// The protocol has no operation of this name.
    fn unknown_operation(operation: &str) -> Self;
    /// The request is not authenticated (see [`sigv4::AuthError`]).
    fn unauthenticated(error: &sigv4::AuthError) -> Self;
    /// The caller's policies do not allow the request; `message` names the principal, the
    /// action and the resource.
    fn access_denied(message: String) -> Self;
}

/// The status and code most AWS services answer an authentication failure with (Lambda,
/// EventBridge, DynamoDB, …); SQS and S3 have their own.
pub fn auth_code(error: &sigv4::AuthError) -> (axum::http::StatusCode, &'static str) {
    use axum::http::StatusCode;
    use sigv4::AuthError;
    match error {
        AuthError::Missing => (StatusCode::FORBIDDEN, "MissingAuthenticationTokenException"),
        AuthError::Malformed(_) => (StatusCode::BAD_REQUEST, "IncompleteSignatureException"),
        AuthError::UnknownKey(_) | AuthError::BadToken => {
            (StatusCode::FORBIDDEN, "UnrecognizedClientException")
        }
        AuthError::BadSignature | AuthError::Expired { .. } => {
            (StatusCode::FORBIDDEN, "InvalidSignatureException")
        }
    }
}

/// The status and code the Query-protocol services (SQS, IAM, STS) answer an authentication
/// failure with.
pub fn query_auth_code(error: &sigv4::AuthError) -> (axum::http::StatusCode, &'static str) {
    use axum::http::StatusCode;
    use sigv4::AuthError;
    match error {
        AuthError::Missing => (StatusCode::FORBIDDEN, "MissingAuthenticationToken"),
        AuthError::Malformed(_) => (StatusCode::BAD_REQUEST, "IncompleteSignature"),
        AuthError::UnknownKey(_) | AuthError::BadToken => {
            (StatusCode::FORBIDDEN, "InvalidClientTokenId")
        }
        AuthError::BadSignature => (StatusCode::FORBIDDEN, "SignatureDoesNotMatch"),
        AuthError::Expired { .. } => (StatusCode::BAD_REQUEST, "RequestExpired"),
    }
}

/// The request's `Host`, if it is printable ASCII (it ends up in URLs the node hands out).
pub fn host(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.len() <= 255 && h.bytes().all(|b| b.is_ascii_graphic()))
}

/// Parses a JSON request body into the operation's input shape; a body that does not parse
/// is the protocol's malformed-request error.
pub fn parse_json<T: serde::de::DeserializeOwned, E: ErrorEnvelope>(body: &[u8]) -> Result<T, E> {
    serde_json::from_slice(body)
        .map_err(|e| E::malformed(format!("could not parse the request body: {e}")))
}
