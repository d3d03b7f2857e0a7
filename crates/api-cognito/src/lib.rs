//! Cognito user pools' JSON 1.1 protocol (`POST /` with
//! `X-Amz-Target: AWSCognitoIdentityProviderService.<Operation>`) over [`nimbus_userpools`],
//! and each pool's OpenID discovery document and key set under its issuer URL.
//!
//! Two kinds of caller: administrators (pools, clients, `Admin*` operations), whose requests
//! are signed and authorized with IAM like every other API's; and an application's users,
//! whose operations (sign-up, sign-in, their own profile) are not signed — they prove who they
//! are with a client id, a password, a code or a token. The gateway lets only those
//! operations ([`is_public`]) through unsigned.

#![forbid(unsafe_code)]

mod auth;
mod limits;
mod pools;
mod render;
mod triggers;
mod users;

use std::net::IpAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use nimbus_aws_wire::ErrorEnvelope;
use nimbus_aws_wire::target::JsonVersion;
use nimbus_identity::Caller;
use nimbus_userpools::{Kind, UserPools};
use serde_json::{Value, json};

pub use auth::SrpAttempts;
pub use limits::Limiter;
pub use triggers::Triggers;

/// The largest request Cognito takes.
pub const MAX_REQUEST_BYTES: u64 = 1 << 20;

/// The `X-Amz-Target` service prefix.
pub const TARGET: &str = "AWSCognitoIdentityProviderService";

/// The service.
pub struct Cognito {
    pub pools: Arc<UserPools>,
    /// What issuer URLs start with: a pool's issuer is `{issuer_base}/{pool id}`.
    pub issuer_base: String,
    pub triggers: Triggers,
    pub limiter: Limiter,
    /// How long confirmation and attribute codes stay valid.
    pub code_validity_ms: i64,
    /// SRP sign-ins between their two calls.
    pub srp: auth::SrpAttempts,
}

impl Cognito {
    /// A pool's issuer URL.
    pub fn issuer(&self, pool_id: &str) -> String {
        format!("{}/{pool_id}", self.issuer_base)
    }

    /// This node's issuer URL for a pool named by Cognito's own issuer URL
    /// (`https://cognito-idp.{region}.amazonaws.com/{pool id}`, as templates write it), if the
    /// pool is one of this node's: an authorizer configured with either accepts its tokens.
    pub fn local_issuer(&self, issuer: &str) -> Option<String> {
        let rest = issuer.strip_prefix("https://cognito-idp.")?;
        let (host, id) = rest.split_once('/')?;
        if !host.ends_with(".amazonaws.com") || id.contains('/') {
            return None;
        }
        self.pools.pool(id)?;
        Some(self.issuer(id))
    }

    /// The key set of the pool whose issuer is `issuer`, if this node is that issuer.
    pub fn local_jwks(&self, issuer: &str) -> Option<Value> {
        let id = issuer
            .strip_prefix(self.issuer_base.as_str())?
            .strip_prefix('/')?;
        let pool = self.pools.pool(id)?;
        Some(nimbus_userpools::tokens::jwks(&pool))
    }
}

/// An error in Cognito's JSON 1.1 shape.
#[derive(Debug)]
pub struct CognitoError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

type Result<T, E = CognitoError> = std::result::Result<T, E>;

impl CognitoError {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> Self {
        let status = match code {
            "InternalErrorException" => StatusCode::INTERNAL_SERVER_ERROR,
            "TooManyRequestsException" => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::BAD_REQUEST,
        };
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

/// An `InvalidParameterException`.
pub(crate) fn invalid(message: impl Into<String>) -> CognitoError {
    CognitoError::new("InvalidParameterException", message)
}

impl From<nimbus_userpools::Error> for CognitoError {
    fn from(e: nimbus_userpools::Error) -> Self {
        let code = match e.kind {
            Kind::ResourceNotFound => "ResourceNotFoundException",
            Kind::UserNotFound => "UserNotFoundException",
            Kind::UsernameExists => "UsernameExistsException",
            Kind::AliasExists => "AliasExistsException",
            Kind::GroupExists => "GroupExistsException",
            Kind::InvalidParameter => "InvalidParameterException",
            Kind::InvalidPassword => "InvalidPasswordException",
            Kind::CodeMismatch => "CodeMismatchException",
            Kind::ExpiredCode => "ExpiredCodeException",
            Kind::NotAuthorized => "NotAuthorizedException",
            Kind::UserNotConfirmed => "UserNotConfirmedException",
            Kind::PasswordResetRequired => "PasswordResetRequiredException",
            Kind::TooManyRequests => "TooManyRequestsException",
            Kind::TooManyFailedAttempts => "TooManyFailedAttemptsException",
            Kind::LimitExceeded => "LimitExceededException",
            Kind::UserLambdaValidation => "UserLambdaValidationException",
            Kind::Storage => {
                tracing::error!(error = %e.message, "user pool store failure");
                return CognitoError::new("InternalErrorException", "Internal server error");
            }
        };
        CognitoError::new(code, e.message)
    }
}

impl IntoResponse for CognitoError {
    fn into_response(self) -> Response {
        let body = json!({ "__type": self.code, "message": self.message });
        (
            self.status,
            [
                ("content-type", "application/x-amz-json-1.1"),
                ("x-amzn-errortype", self.code),
            ],
            body.to_string(),
        )
            .into_response()
    }
}

impl ErrorEnvelope for CognitoError {
    fn too_large(limit: u64, _operation: &str) -> Self {
        invalid(format!("The request must be smaller than {limit} bytes."))
    }

    fn malformed(message: String) -> Self {
        CognitoError::new("SerializationException", message)
    }

    fn unknown_operation(operation: &str) -> Self {
        CognitoError::new(
            "UnknownOperationException",
            format!("The operation {operation} is not supported."),
        )
    }

    fn unauthenticated(error: &nimbus_aws_wire::sigv4::AuthError) -> Self {
        let (_, code) = nimbus_aws_wire::auth_code(error);
        let code = match code {
            "InvalidSignatureException" => "InvalidSignatureException",
            "ExpiredTokenException" => "ExpiredTokenException",
            "IncompleteSignatureException" => "IncompleteSignatureException",
            "MissingAuthenticationTokenException" => "MissingAuthenticationTokenException",
            _ => "UnrecognizedClientException",
        };
        let mut e = CognitoError::new(code, error.to_string());
        e.status = StatusCode::BAD_REQUEST;
        e
    }

    fn access_denied(message: String) -> Self {
        CognitoError::new("AccessDeniedException", message)
    }
}

/// The operations an application's users call without a signature.
pub fn is_public(operation: &str) -> bool {
    matches!(
        operation,
        "SignUp"
            | "ConfirmSignUp"
            | "ResendConfirmationCode"
            | "InitiateAuth"
            | "RespondToAuthChallenge"
            | "GetUser"
            | "UpdateUserAttributes"
            | "DeleteUser"
            | "ChangePassword"
            | "ForgotPassword"
            | "ConfirmForgotPassword"
            | "GlobalSignOut"
            | "RevokeToken"
            | "GetUserAttributeVerificationCode"
            | "VerifyUserAttribute"
    )
}

// ---- reading input ----

pub(crate) use nimbus_aws_wire::target::field;

/// A string member.
pub(crate) fn string<'a>(input: &'a Value, name: &str) -> Result<Option<&'a str>> {
    nimbus_aws_wire::target::string::<CognitoError>(input, name)
}

/// A required string member, with Cognito's validation message.
pub(crate) fn required<'a>(input: &'a Value, name: &str) -> Result<&'a str> {
    match string(input, name)? {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(invalid(format!(
            "1 validation error detected: Value at '{}' failed to satisfy constraint: Member must not be null",
            lower_first(name)
        ))),
    }
}

fn lower_first(name: &str) -> String {
    let mut c = name.chars();
    c.next()
        .map(|f| f.to_lowercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

/// A boolean member.
pub(crate) fn boolean(input: &Value, name: &str) -> Result<Option<bool>> {
    match field(input, name) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(CognitoError::malformed(format!("{name} must be a boolean"))),
    }
}

/// An integer member.
pub(crate) fn integer(input: &Value, name: &str) -> Result<Option<i64>> {
    match field(input, name) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| CognitoError::malformed(format!("{name} must be an integer"))),
    }
}

/// A list of strings.
pub(crate) fn strings(input: &Value, name: &str) -> Result<Option<Vec<String>>> {
    match field(input, name) {
        None => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str().map(str::to_owned).ok_or_else(|| {
                    CognitoError::malformed(format!("{name} must be a list of strings"))
                })
            })
            .collect::<Result<Vec<_>>>()
            .map(Some),
        Some(_) => Err(CognitoError::malformed(format!("{name} must be a list"))),
    }
}

/// A map of strings to strings (`ClientMetadata`, `AuthParameters`).
pub(crate) fn string_map(
    input: &Value,
    name: &str,
) -> Result<std::collections::BTreeMap<String, String>> {
    match field(input, name) {
        None => Ok(Default::default()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| {
                v.as_str()
                    .map(|s| (k.clone(), s.to_owned()))
                    .ok_or_else(|| {
                        CognitoError::malformed(format!("{name} values must be strings"))
                    })
            })
            .collect(),
        Some(_) => Err(CognitoError::malformed(format!("{name} must be a map"))),
    }
}

/// A list of `{Name, Value}` attributes.
pub(crate) fn attribute_list(input: &Value, name: &str) -> Result<Vec<(String, String)>> {
    match field(input, name) {
        None => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                let n = v.get("Name").and_then(Value::as_str);
                let val = v.get("Value").and_then(Value::as_str).unwrap_or("");
                n.map(|n| (n.to_owned(), val.to_owned()))
                    .ok_or_else(|| invalid(format!("{name}: every attribute needs a Name")))
            })
            .collect(),
        Some(_) => Err(CognitoError::malformed(format!("{name} must be a list"))),
    }
}

// ---- dispatch ----

/// The IAM action and resource an administrator's request needs.
fn resource(cognito: &Cognito, caller: &Caller, input: &Value) -> String {
    match field(input, "UserPoolId").and_then(Value::as_str) {
        Some(id) => format!(
            "arn:aws:cognito-idp:{}:{}:userpool/{id}",
            cognito.pools.region(),
            caller.account
        ),
        None => "*".to_owned(),
    }
}

/// Who is asking: an administrator with a signed request, or an application's user.
pub struct Request<'a> {
    /// The signed caller; `None` for an unsigned request.
    pub caller: Option<&'a Caller>,
    /// Where the request came from, for the sign-in limits.
    pub source: Option<IpAddr>,
}

/// Serves one request.
pub async fn handle(
    cognito: &Cognito,
    request: Request<'_>,
    operation: &str,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let input = match nimbus_aws_wire::target::read_input::<CognitoError>(
        headers,
        body,
        MAX_REQUEST_BYTES,
        operation,
    )
    .await
    {
        Ok(input) => input,
        Err(e) => return e.into_response(),
    };
    let output = if is_public(operation) {
        auth::dispatch(cognito, request.source, operation, &input).await
    } else {
        let Some(caller) = request.caller else {
            return CognitoError::new(
                "MissingAuthenticationTokenException",
                "Missing Authentication Token",
            )
            .into_response();
        };
        let action = format!("cognito-idp:{operation}");
        if let Err(denied) = caller.authorize(&action, &resource(cognito, caller, &input)) {
            return CognitoError::access_denied(denied.message).into_response();
        }
        admin(cognito, caller, request.source, operation, &input).await
    };
    let mut response = match output {
        Ok(output) => nimbus_aws_wire::target::ok(JsonVersion::V1_1, &output),
        Err(e) => e.into_response(),
    };
    allow_browsers(response.headers_mut());
    response
}

/// Lets a web page of any origin read the answer, as Cognito does: a browser application
/// (Amplify, amazon-cognito-identity-js) calls the API directly.
fn allow_browsers(headers: &mut HeaderMap) {
    use axum::http::HeaderValue;
    headers.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    headers.insert(
        "access-control-expose-headers",
        HeaderValue::from_static("x-amzn-requestid, x-amzn-errortype, x-amzn-errormessage, date"),
    );
}

/// Whether a request is a browser's CORS preflight for this API: `OPTIONS /` asking to send
/// `X-Amz-Target` (S3's preflights never do).
pub fn is_preflight(method: &axum::http::Method, path: &str, headers: &HeaderMap) -> bool {
    method == axum::http::Method::OPTIONS
        && path == "/"
        && headers
            .get("access-control-request-headers")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("x-amz-target"))
}

/// The answer to a preflight: any origin, `POST`, the headers the SDKs send.
pub fn preflight() -> Response {
    use axum::http::HeaderValue;
    let mut response = StatusCode::OK.into_response();
    let headers = response.headers_mut();
    allow_browsers(headers);
    headers.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("POST, OPTIONS"),
    );
    headers.insert(
        "access-control-allow-headers",
        HeaderValue::from_static(
            "content-type, x-amz-target, x-amz-user-agent, x-amz-date, x-amz-security-token, \
             x-amz-content-sha256, authorization, amz-sdk-invocation-id, amz-sdk-request, \
             cache-control",
        ),
    );
    headers.insert("access-control-max-age", HeaderValue::from_static("86400"));
    response
}

async fn admin(
    cognito: &Cognito,
    caller: &Caller,
    source: Option<IpAddr>,
    operation: &str,
    input: &Value,
) -> Result<Value> {
    let account = caller.account.as_str();
    match operation {
        "CreateUserPool" => pools::create(cognito, account, input).await,
        "DescribeUserPool" => pools::describe(cognito, account, input),
        "ListUserPools" => pools::list(cognito, account, input),
        "UpdateUserPool" => pools::update(cognito, account, input).await,
        "DeleteUserPool" => pools::delete(cognito, account, input).await,
        "CreateUserPoolClient" => pools::create_client(cognito, account, input).await,
        "DescribeUserPoolClient" => pools::describe_client(cognito, account, input),
        "ListUserPoolClients" => pools::list_clients(cognito, account, input),
        "UpdateUserPoolClient" => pools::update_client(cognito, account, input).await,
        "DeleteUserPoolClient" => pools::delete_client(cognito, account, input).await,
        "GetSigningCertificate" => Err(invalid(
            "nimbus publishes a pool's keys at its issuer's /.well-known/jwks.json, not as a certificate",
        )),
        "CreateGroup" => users::create_group(cognito, account, input).await,
        "GetGroup" => users::get_group(cognito, account, input),
        "UpdateGroup" => users::update_group(cognito, account, input).await,
        "ListGroups" => users::list_groups(cognito, account, input),
        "DeleteGroup" => users::delete_group(cognito, account, input).await,
        "AdminAddUserToGroup" => users::membership(cognito, account, input, true).await,
        "AdminRemoveUserFromGroup" => users::membership(cognito, account, input, false).await,
        "AdminListGroupsForUser" => users::groups_for_user(cognito, account, input),
        "ListUsersInGroup" => users::users_in_group(cognito, account, input),
        "AdminCreateUser" => users::create(cognito, account, input).await,
        "AdminGetUser" => users::get(cognito, account, input),
        "AdminDeleteUser" => users::delete(cognito, account, input).await,
        "AdminConfirmSignUp" => users::confirm(cognito, account, input).await,
        "AdminSetUserPassword" => users::set_password(cognito, account, input).await,
        "AdminUpdateUserAttributes" => users::update_attributes(cognito, account, input).await,
        "AdminDeleteUserAttributes" => users::delete_attributes(cognito, account, input).await,
        "AdminDisableUser" => users::enable(cognito, account, input, false).await,
        "AdminEnableUser" => users::enable(cognito, account, input, true).await,
        "AdminResetUserPassword" => users::reset_password(cognito, account, input).await,
        "AdminUserGlobalSignOut" => users::sign_out(cognito, account, input).await,
        "ListUsers" => users::list(cognito, account, input),
        "AdminInitiateAuth" => auth::admin_initiate(cognito, account, source, input).await,
        "AdminRespondToAuthChallenge" => auth::admin_respond(cognito, account, input).await,
        other => Err(CognitoError::unknown_operation(other)),
    }
}

// ---- the issuer's documents ----

/// `GET /{pool}/.well-known/jwks.json` and `/.well-known/openid-configuration`: open to
/// anyone, as on AWS. And the operator's routes under nimbus's API (authenticated and
/// authorized as the rest of it): a user's outstanding codes, since nimbus sends no mail, and
/// the rotation of a pool's signing key.
pub fn router(cognito: Arc<Cognito>) -> Router {
    Router::new()
        .route("/{pool}/.well-known/jwks.json", get(jwks))
        .route("/{pool}/.well-known/openid-configuration", get(discovery))
        .route(
            "/nimbus/v1/user-pools/{pool}/users/{username}/codes",
            get(codes),
        )
        .route(
            "/nimbus/v1/user-pools/{pool}/signing-keys",
            axum::routing::post(rotate),
        )
        .with_state(cognito)
}

fn operator_error(status: StatusCode, code: &'static str, message: &str) -> Response {
    nimbus_aws_wire::envelope::rest_json(status, code, message, &[])
}

async fn codes(
    State(cognito): State<Arc<Cognito>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path((pool, username)): Path<(String, String)>,
) -> Response {
    let Ok(pool) = cognito.pools.pool_of(&caller.account, &pool) else {
        return operator_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            "User pool not found.",
        );
    };
    match cognito.pools.user(&pool, &username) {
        Ok(Some(user)) => (
            [("content-type", "application/json")],
            users::codes(&user).to_string(),
        )
            .into_response(),
        Ok(None) => operator_error(
            StatusCode::NOT_FOUND,
            "UserNotFoundException",
            "User does not exist.",
        ),
        Err(e) => CognitoError::from(e).into_response(),
    }
}

async fn rotate(
    State(cognito): State<Arc<Cognito>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(pool): Path<String>,
) -> Response {
    let Ok(pool) = cognito.pools.pool_of(&caller.account, &pool) else {
        return operator_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            "User pool not found.",
        );
    };
    match cognito.pools.rotate_key(&pool.id).await {
        Ok(pool) => {
            let kid = pool.active_key().map(|k| k.kid.clone()).unwrap_or_default();
            let mut body = nimbus_userpools::tokens::jwks(&pool);
            body["activeKid"] = json!(kid);
            ([("content-type", "application/json")], body.to_string()).into_response()
        }
        Err(e) => CognitoError::from(e).into_response(),
    }
}

/// Whether a path is one of a pool's public documents (the gateway serves these unsigned).
pub fn is_issuer_document(path: &str) -> bool {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (Some(pool), Some(rest)) = (parts.next(), parts.next()) else {
        return false;
    };
    pool.contains('_')
        && matches!(
            rest,
            ".well-known/jwks.json" | ".well-known/openid-configuration"
        )
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [("content-type", "application/json")],
        json!({ "message": "User pool not found" }).to_string(),
    )
        .into_response()
}

async fn jwks(State(cognito): State<Arc<Cognito>>, Path(pool): Path<String>) -> Response {
    match cognito.pools.pool(&pool) {
        Some(p) => (
            [("content-type", "application/json")],
            nimbus_userpools::tokens::jwks(&p).to_string(),
        )
            .into_response(),
        None => not_found(),
    }
}

async fn discovery(State(cognito): State<Arc<Cognito>>, Path(pool): Path<String>) -> Response {
    if cognito.pools.pool(&pool).is_none() {
        return not_found();
    }
    let issuer = cognito.issuer(&pool);
    let doc = json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "id_token_signing_alg_values_supported": ["RS256"],
        "subject_types_supported": ["public"],
        "response_types_supported": ["code", "token"],
        "scopes_supported": ["openid", "email", "phone", "profile"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "token_use",
            "cognito:username", "cognito:groups", "email", "email_verified", "phone_number",
            "phone_number_verified"],
    });
    ([("content-type", "application/json")], doc.to_string()).into_response()
}

#[cfg(test)]
mod tests;
