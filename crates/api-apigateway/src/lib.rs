//! API Gateway's HTTP APIs over HTTP: the control plane the aws CLI, SAM and the Serverless
//! Framework call (`apigatewayv2`'s rest-json: APIs, routes, integrations, stages, quick
//! create), and the serving of an API's requests: the stage, the route (`nimbus_httpapi`), the
//! function integration with payload format 2.0 or 1.0, and API Gateway's own error answers.
//!
//! Not yet: IAM and Lambda authorizers on routes (refused at CreateRoute), deployments of a
//! fixed snapshot (every stage serves the current routes, as `AutoDeploy` does), WebSocket APIs.

#![forbid(unsafe_code)]

mod control;
pub mod jwt;
mod serve;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use nimbus_api_lambda::UrlDomain;
use nimbus_aws_wire::ErrorEnvelope;
use nimbus_control::ControlPlane;
use nimbus_httpapi::registry::HttpApis;
use nimbus_manager::WorkerManager;

pub use control::router;
pub use serve::serve;

/// What the API Gateway handlers reach.
pub struct ApiGateway {
    pub apis: Arc<HttpApis>,
    pub control: Arc<ControlPlane>,
    pub manager: Arc<WorkerManager>,
    pub domain: UrlDomain,
    /// JWT authorizers' issuer keys.
    pub jwt: jwt::Verifier,
}

/// API Gateway's error format: the code in `x-amzn-ErrorType`, `{"message": …}` in the body.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequestException", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFoundException", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "ConflictException", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            axum::Json(serde_json::json!({ "message": self.message })),
        )
            .into_response();
        response.headers_mut().insert(
            "x-amzn-ErrorType",
            axum::http::HeaderValue::from_static(self.code),
        );
        response
    }
}

impl ErrorEnvelope for ApiError {
    fn too_large(limit: u64, operation: &str) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PayloadTooLargeException",
            format!("{operation} accepts at most {limit} bytes"),
        )
    }

    fn malformed(message: String) -> Self {
        Self::bad_request(message)
    }

    fn unknown_operation(operation: &str) -> Self {
        Self::not_found(format!("No operation {operation}"))
    }

    fn unauthenticated(error: &nimbus_aws_wire::sigv4::AuthError) -> Self {
        let (status, code) = nimbus_aws_wire::auth_code(error);
        Self::new(status, code, error.to_string())
    }

    fn access_denied(message: String) -> Self {
        Self::new(StatusCode::FORBIDDEN, "AccessDeniedException", message)
    }
}

impl From<nimbus_httpapi::registry::Error> for ApiError {
    fn from(e: nimbus_httpapi::registry::Error) -> Self {
        use nimbus_httpapi::registry::Error;
        match e {
            Error::NotFound(m) => Self::not_found(m),
            Error::Conflict(m) => Self::conflict(m),
            Error::BadRequest(m) => Self::bad_request(m),
            other => {
                tracing::error!(error = %other, "HTTP API registry failed");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalServerErrorException",
                    "The service encountered an internal error.",
                )
            }
        }
    }
}
