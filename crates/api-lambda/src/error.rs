//! Lambda's error wire format: `x-amzn-ErrorType` header and a `{"Type","Message"}` body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Lambda's `Reason` field of a throttle.
    pub reason: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            reason: None,
        }
    }

    pub fn with_reason(mut self, reason: &'static str) -> Self {
        self.reason = Some(reason);
        self
    }

    /// A bad parameter that is not a violation of the API model's constraints (those are
    /// [`nimbus_types::InvalidParameter::Constraint`], answered as `ValidationException`).
    pub fn invalid_parameter(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValueException",
            message,
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "ResourceNotFoundException", message)
    }

    pub fn function_not_found(arn: &str) -> Self {
        Self::not_found(format!("Function not found: {arn}"))
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "ResourceConflictException", message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestTooLargeException",
            message,
        )
    }

    pub fn bad_content(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContentException",
            message,
        )
    }

    /// A failure inside the node: logged in full, reported to the client without internals.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ServiceException",
            "The service encountered an internal error.",
        )
    }
}

impl From<nimbus_types::InvalidParameter> for ApiError {
    /// Lambda answers violations of its API model's constraints (patterns, ranges, enums) with
    /// `ValidationException`, and other bad values with `InvalidParameterValueException`.
    fn from(e: nimbus_types::InvalidParameter) -> Self {
        match e {
            nimbus_types::InvalidParameter::Constraint { .. } => Self::new(
                StatusCode::BAD_REQUEST,
                "ValidationException",
                e.to_string(),
            ),
            nimbus_types::InvalidParameter::Value(message) => Self::invalid_parameter(message),
        }
    }
}

impl From<nimbus_store::Error> for ApiError {
    fn from(e: nimbus_store::Error) -> Self {
        match e {
            nimbus_store::Error::InvalidCode(m) => Self::invalid_parameter(m),
            nimbus_store::Error::Conflict(name) => {
                Self::conflict(format!("Function already exist: {name}"))
            }
            other => Self::internal(nimbus_types::error_chain(&other)),
        }
    }
}

impl From<nimbus_queue::Error> for ApiError {
    fn from(e: nimbus_queue::Error) -> Self {
        Self::internal(nimbus_types::error_chain(&e))
    }
}

impl From<nimbus_control::Error> for ApiError {
    fn from(e: nimbus_control::Error) -> Self {
        use nimbus_control::Error;
        match e {
            Error::Invalid(invalid) => invalid.into(),
            Error::FunctionNotFound(arn) => Self::function_not_found(&arn),
            Error::AlreadyExists(name) => Self::conflict(format!("Function already exist: {name}")),
            Error::RevisionMismatch => Self::new(
                StatusCode::PRECONDITION_FAILED,
                "PreconditionFailedException",
                "The Revision Id provided does not match the latest Revision Id. Call the \
                 GetFunction/GetAlias API to retrieve the latest Revision Id",
            ),
            Error::Conflict(message) => Self::conflict(message),
            Error::NotFound(message) => Self::not_found(message),
            Error::Denied(message) => {
                <Self as nimbus_aws_wire::ErrorEnvelope>::access_denied(message)
            }
            Error::Store(e) => e.into(),
            Error::Manager(e) => e.into(),
            other => Self::internal(nimbus_types::error_chain(&other)),
        }
    }
}

impl From<nimbus_manager::Error> for ApiError {
    fn from(e: nimbus_manager::Error) -> Self {
        match e {
            nimbus_manager::Error::Throttled(reason) => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequestsException",
                "Rate Exceeded.",
            )
            .with_reason(reason.as_str()),
            nimbus_manager::Error::NoCapacity(mb) => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequestsException",
                format!(
                    "No worker has room for another sandbox of {mb} MB: the capacity of every \
                     worker is in use. Retry later, or add workers."
                ),
            )
            .with_reason(nimbus_manager::ThrottleReason::Capacity.as_str()),
            nimbus_manager::Error::WorkerLost(m) => Self::new(
                StatusCode::BAD_GATEWAY,
                "ServiceException",
                format!("{m}; the function may or may not have run."),
            ),
            nimbus_manager::Error::InvalidCode(m) => Self::invalid_parameter(m),
            nimbus_manager::Error::InvalidSetting(m) => Self::invalid_parameter(m),
            nimbus_manager::Error::SandboxVanished => Self::internal("a sandbox vanished twice"),
            nimbus_manager::Error::Internal(m) => Self::internal(m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let reason = self.reason.map(|r| ("Reason", serde_json::Value::from(r)));
        nimbus_aws_wire::envelope::rest_json(
            self.status,
            self.code,
            &self.message,
            reason.as_slice(),
        )
    }
}

impl nimbus_aws_wire::ErrorEnvelope for ApiError {
    fn too_large(limit: u64, operation: &str) -> Self {
        Self::too_large(format!(
            "Request must be smaller than {limit} bytes for the {operation} operation"
        ))
    }

    fn malformed(message: String) -> Self {
        // Lambda answers a body it cannot parse as a bad parameter value.
        Self::invalid_parameter(message)
    }

    fn unknown_operation(_: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "UnknownOperationException",
            "Unknown operation",
        )
    }

    fn unauthenticated(error: &nimbus_aws_wire::sigv4::AuthError) -> Self {
        let (status, code) = nimbus_aws_wire::auth_code(error);
        Self::new(status, code, error.to_string())
    }

    fn access_denied(message: String) -> Self {
        Self::new(StatusCode::FORBIDDEN, "AccessDeniedException", message)
    }
}
