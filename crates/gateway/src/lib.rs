//! The node's HTTP front door. It is built once from [`Subsystems`], a struct that holds every
//! subsystem an API needs, so a missing one is a compile error rather than a failure at request
//! time; it routes each request to one API crate and adds nothing else to the request path.
//!
//! ## How protocols share a port
//!
//! Requests are told apart in this order:
//!
//! 1. **S3.** S3's path-style `/{bucket}/{key}` overlaps Lambda's `/2015-03-31/…` and
//!    nimbus's `/nimbus/v1/…`, so S3 is told apart before any path is looked at: by a `Host`
//!    of `s3.localhost` or `{bucket}.s3.localhost` (any port; browsers and curl send every
//!    `*.localhost` name to loopback without a resolver entry), by a signature scoped to the
//!    `s3` service (an `Authorization` header's credential, or a presigned URL's
//!    `X-Amz-Credential`: every SDK signs S3 requests so, whatever endpoint it is given), by a
//!    browser's form upload (`POST` of `multipart/form-data`), or by a browser's CORS preflight
//!    (`OPTIONS` with `Access-Control-Request-Method`) on a path no other API has. A host naming another
//!    `SERVICE.localhost` that this node does not serve is answered in Lambda's format.
//! 2. **`X-Amz-Target`** on `POST /`: the JSON 1.0/1.1 services (SQS, EventBridge, DynamoDB,
//!    Cognito user pools), by the target's service prefix.
//! 3. **Path**: Lambda's dated paths, nimbus's `/nimbus/v1/…` and `/metrics`, the console's
//!    `/console/…` (which signs its users in itself), a user pool's
//!    `/{pool id}/.well-known/…` documents, and the cluster's routes. Anything else gets
//!    Lambda's `UnknownOperationException`.
//!
//! Every request is authenticated with SigV4 before it reaches its API ([`auth`]), and refused
//! in that API's own format, except the cluster's (signed with the cluster secret), the health
//! check, a user pool's public documents, and the user pool operations an application's users
//! call without credentials (sign-up, sign-in, …: [`nimbus_api_cognito::is_public`]).

#![forbid(unsafe_code)]

mod auth;
mod urls;

use std::sync::Arc;

pub use auth::Auth;
pub use nimbus_api_lambda::UrlDomain;
pub use nimbus_identity::Caller;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use nimbus_api_events::EventsError;
use nimbus_api_lambda::Lambda;
use nimbus_api_nimbus::Nimbus;
use nimbus_aws_wire::ErrorEnvelope;
use nimbus_aws_wire::target::{JsonVersion, Target};
use nimbus_control::ControlPlane;
use nimbus_events::AsyncInvoker;
use nimbus_events::esm::EventSources;
use nimbus_events::scheduler::Scheduler;
use nimbus_identity::Identity;
use nimbus_queue::sqs::SqsQueues;
use nimbus_store::TelemetryStore;
use nimbus_types::Pricing;

/// The service a request to the node is signed for, as the SDKs choose it: `sqs` and `events`
/// for their targets on `POST /`, `iam` for a form on `POST /`, `nimbus` for nimbus's own
/// API, `lambda` for the rest.
pub fn signing_service(method: &str, path: &str, target: Option<&str>) -> &'static str {
    match target {
        Some(t) if method == "POST" && t.starts_with("AmazonSQS.") => "sqs",
        Some(t)
            if method == "POST"
                && (t.starts_with("DynamoDB_20120810.")
                    || t.starts_with("DynamoDBStreams_20120810.")) =>
        {
            "dynamodb"
        }
        Some(t) if method == "POST" && t.starts_with("AWSCognitoIdentityProviderService.") => {
            "cognito-idp"
        }
        Some(_) if method == "POST" => "events",
        None if method == "POST" && path == "/" => "iam",
        _ if path.starts_with("/nimbus/") || path.starts_with("/metrics") => "nimbus",
        _ if path.starts_with("/v2/") => "apigateway",
        _ => "lambda",
    }
}

/// Everything the APIs serve, built before the gateway.
pub struct Subsystems {
    /// How requests are authenticated.
    pub auth: Auth,
    /// Access keys, users, roles and policies.
    pub identity: Arc<Identity>,
    pub control: Arc<ControlPlane>,
    pub telemetry: Arc<dyn TelemetryStore>,
    pub invoker: Arc<AsyncInvoker>,
    pub queues: Arc<SqsQueues>,
    pub event_sources: Arc<EventSources>,
    pub scheduler: Arc<Scheduler>,
    pub pricing: Pricing,
    /// Where function URLs and HTTP APIs are served.
    pub urls: nimbus_api_lambda::UrlDomain,
    /// HTTP APIs (API Gateway v2).
    pub apis: Arc<nimbus_httpapi::registry::HttpApis>,
    /// Object storage (S3).
    pub s3: Arc<nimbus_api_s3::S3Api>,
    /// Tables (DynamoDB).
    pub tables: Arc<nimbus_tables::TableStore>,
    /// User pools (Cognito).
    pub cognito: Arc<nimbus_api_cognito::Cognito>,
    /// Stacks (CloudFormation).
    pub stacks: Arc<nimbus_stacks::Stacks>,
    /// The runtimes the built-in worker runs and its runtime aliases.
    pub runtimes: serde_json::Value,
    /// The web console, at `/console`.
    pub console: Arc<nimbus_console::Console>,
}

/// The JSON-protocol services, by `X-Amz-Target` prefix.
struct JsonServices {
    identity: Arc<Identity>,
    control: Arc<ControlPlane>,
    queues: Arc<SqsQueues>,
    scheduler: Arc<Scheduler>,
    tables: Arc<nimbus_tables::TableStore>,
    cognito: Arc<nimbus_api_cognito::Cognito>,
    stacks: Arc<nimbus_stacks::Stacks>,
}

/// A service named by a `SERVICE.localhost` host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostService {
    /// No service in the host (an IP address, `localhost`, any other name): dispatch by
    /// target and path.
    Any,
    /// `s3.localhost` or `{bucket}.s3.localhost`.
    S3,
    /// `{other}.localhost` for a service this node does not know.
    Unknown,
}

impl HostService {
    /// Classifies a `Host` header's value.
    pub fn of(host: Option<&str>) -> Self {
        let Some(host) = host else {
            return Self::Any;
        };
        // Drop the port; an IPv6 literal is `[…]:port` and names no service.
        if host.starts_with('[') {
            return Self::Any;
        }
        let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let Some(service) = name.strip_suffix(".localhost") else {
            return Self::Any;
        };
        match service.rsplit('.').next() {
            Some("s3") => Self::S3,
            Some(
                "lambda" | "sqs" | "events" | "iam" | "sts" | "api" | "dynamodb" | "cognito-idp",
            ) => Self::Any,
            _ => Self::Unknown,
        }
    }
}

/// Whether a request is for S3 (see the module's documentation).
pub fn is_s3(request: &Request) -> bool {
    if HostService::of(nimbus_aws_wire::host(request.headers())) == HostService::S3 {
        return true;
    }
    let headers = request.headers();
    if let Some(auth) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        // Signature version 2 (`AWS KEY:SIGNATURE`) is S3's alone.
        return auth.starts_with("AWS ")
            || credential_service(auth.split_once("Credential=").map(|(_, c)| c)) == Some("s3");
    }
    if let Some(query) = request.uri().query() {
        for pair in query.split('&') {
            if let Some(credential) = pair.strip_prefix("X-Amz-Credential=") {
                let decoded = credential.replace("%2F", "/").replace("%2f", "/");
                return credential_service(Some(&decoded)) == Some("s3");
            }
            // A presigned URL of signature version 2.
            if pair.starts_with("AWSAccessKeyId=") {
                return true;
            }
        }
    }
    if request.method() == axum::http::Method::OPTIONS {
        // A browser's preflight for a bucket: never signed, and on no other API's path.
        let path = request.uri().path();
        return headers.contains_key("access-control-request-method")
            && ![
                "/20",
                "/nimbus/",
                "/v2/",
                "/lambda-url/",
                "/execute-api/",
                "/metrics",
                "/console",
            ]
            .iter()
            .any(|p| path.starts_with(p));
    }
    request.method() == axum::http::Method::POST
        && !is_console(request.uri().path())
        && headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("multipart/form-data")
            })
}

/// Whether a path is the console's (which signs its users in itself). Its upload form is a
/// browser's `multipart/form-data` POST, which is not S3's there.
pub fn is_console(path: &str) -> bool {
    path == "/console" || path.starts_with("/console/")
}

/// The service of a SigV4 credential (`KEY/DATE/REGION/SERVICE/aws4_request`).
fn credential_service(credential: Option<&str>) -> Option<&str> {
    let mut parts = credential?.split(['/', ',', ' ']);
    parts.nth(3)
}

/// What the front door holds: function URLs and HTTP APIs by host, and S3.
struct FrontDoor {
    urls: Arc<urls::FunctionUrls>,
    s3: Arc<nimbus_api_s3::S3Api>,
}

/// Sends function URL and HTTP API requests to their functions and S3's to S3, and answers
/// requests for a service named by the host that this node does not serve, in that service's
/// error format.
async fn by_host(State(door): State<Arc<FrontDoor>>, request: Request, next: Next) -> Response {
    let urls = &door.urls;
    // What functions and buckets return is served on the console's own origin when it is
    // reached by path on the node's host: such answers are sandboxed (see `sandboxed`).
    let node_host = HostService::of(nimbus_aws_wire::host(request.headers())) == HostService::Any;
    let by_path = node_host
        && [
            nimbus_api_lambda::url::URL_PATH_PREFIX,
            nimbus_api_lambda::url::API_PATH_PREFIX,
        ]
        .iter()
        .any(|p| request.uri().path().starts_with(p));
    if let Some((id, path)) = urls.target_of(&request) {
        let r = urls.serve(&id, &path, request).await;
        return if by_path { sandboxed(r) } else { r };
    }
    if let Some((id, path)) = urls.api_of(&request) {
        let r = nimbus_api_apigateway::serve(&urls.api_gateway, &id, &path, request).await;
        return if by_path { sandboxed(r) } else { r };
    }
    if nimbus_api_cognito::is_preflight(request.method(), request.uri().path(), request.headers()) {
        return nimbus_api_cognito::preflight();
    }
    if is_s3(&request) {
        let (parts, body) = request.into_parts();
        let trust = if urls.authenticator.keys_for(&parts).is_some() {
            nimbus_api_s3::Trust::Signed
        } else {
            nimbus_api_s3::Trust::Open
        };
        let r = door.s3.serve(Request::from_parts(parts, body), trust).await;
        return if node_host { sandboxed(r) } else { r };
    }
    match HostService::of(nimbus_aws_wire::host(request.headers())) {
        HostService::Any | HostService::S3 => next.run(request).await,
        HostService::Unknown => nimbus_api_lambda::unknown_operation(),
    }
}

/// An answer whose body came from a function or a bucket, served on the node's own host and
/// so on the console's origin: the browser is told to give it an origin of its own (CSP
/// `sandbox` without `allow-same-origin`), so a page there can still run its scripts but
/// cannot read the console or send it the signed-in user's cookie. Added to any policy the
/// function set (a browser enforces every policy it gets).
fn sandboxed(mut response: Response) -> Response {
    response.headers_mut().append(
        axum::http::header::CONTENT_SECURITY_POLICY,
        axum::http::HeaderValue::from_static(
            "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads",
        ),
    );
    response
}

/// Whether a request's body is a form (the Query protocol's requests).
pub(crate) fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        })
}

/// `POST /`: the JSON protocols by `X-Amz-Target`, and the Query protocol (IAM, STS) by its
/// form body.
async fn json_protocol(State(services): State<Arc<JsonServices>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    let caller = parts.extensions.get::<Caller>();
    if let Some(target) = Target::parse(&headers)
        && target.service == nimbus_api_cognito::TARGET
    {
        let source = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        let request = nimbus_api_cognito::Request { caller, source };
        return nimbus_api_cognito::handle(
            &services.cognito,
            request,
            target.operation,
            &headers,
            body,
        )
        .await;
    }
    // Every other API's requests were authenticated: the caller is there.
    let Some(caller) = caller.cloned() else {
        return unknown_target(headers.get("x-amz-target").is_some());
    };
    if headers.get("x-amz-target").is_none() && is_form(&headers) {
        // IAM, STS and CloudFormation share the Query protocol; the action tells them apart.
        let limit =
            nimbus_api_cloudformation::MAX_REQUEST_BYTES.max(nimbus_api_iam::MAX_REQUEST_BYTES);
        let bytes = match nimbus_aws_wire::body::read::<nimbus_api_iam::QueryError>(
            &headers, body, limit, "Query",
        )
        .await
        {
            Ok(b) => b,
            Err(e) => return e.into_response(),
        };
        if nimbus_api_cloudformation::is_cloudformation(&bytes) {
            return nimbus_api_cloudformation::handle(
                &services.stacks,
                &caller,
                &headers,
                bytes.into(),
            )
            .await;
        }
        return nimbus_api_iam::handle(&services.identity, &caller, &headers, bytes.into()).await;
    }
    let Some(target) = Target::parse(&headers) else {
        return unknown_target(headers.get("x-amz-target").is_some());
    };
    match target.service {
        "AmazonSQS" => {
            nimbus_api_sqs::handle(&services.queues, &caller, target.operation, &headers, body)
                .await
        }
        "DynamoDB_20120810" => {
            nimbus_api_dynamodb::handle(
                &services.tables,
                &caller,
                nimbus_api_dynamodb::Service::Tables,
                target.operation,
                &headers,
                body,
            )
            .await
        }
        "DynamoDBStreams_20120810" => {
            nimbus_api_dynamodb::handle(
                &services.tables,
                &caller,
                nimbus_api_dynamodb::Service::Streams,
                target.operation,
                &headers,
                body,
            )
            .await
        }
        "AWSEvents" => {
            nimbus_api_events::handle(
                &services.control,
                &services.scheduler,
                &caller,
                target.operation,
                &headers,
                body,
            )
            .await
        }
        _ => unknown_target(true),
    }
}

/// A `POST /` whose target names no service here, in the JSON protocol's generic shape.
fn unknown_target(had_target: bool) -> Response {
    if had_target {
        nimbus_aws_wire::envelope::json(
            JsonVersion::V1_1,
            StatusCode::BAD_REQUEST,
            "UnknownOperationException",
            "The X-Amz-Target header names no service of this node.",
            &[],
        )
    } else {
        // Without a target, `POST /` is no operation of any protocol served here.
        EventsError::unknown_operation("(none)").into_response()
    }
}

/// The node's router: every API, plus `extra` routes (the cluster's).
pub fn router(subsystems: Subsystems, extra: Router) -> Router {
    let Subsystems {
        auth,
        identity,
        control,
        telemetry,
        invoker,
        queues,
        event_sources,
        scheduler,
        pricing,
        urls,
        apis,
        s3,
        tables,
        cognito,
        stacks,
        runtimes,
        console,
    } = subsystems;
    let lambda = Arc::new(Lambda::new(
        control.clone(),
        invoker.clone(),
        queues.clone(),
        event_sources,
        identity.clone(),
        urls.clone(),
    ));
    let authenticator = Arc::new(auth::Authenticator {
        auth,
        identity: identity.clone(),
        sandbox_keys: Default::default(),
    });
    let api_gateway = Arc::new(nimbus_api_apigateway::ApiGateway {
        apis,
        control: control.clone(),
        manager: control.manager().clone(),
        domain: urls.clone(),
        jwt: nimbus_api_apigateway::jwt::Verifier::with_local({
            let cognito = cognito.clone();
            Arc::new(move |issuer: &str| cognito.local_jwks(issuer))
        })
        .with_aliases({
            let cognito = cognito.clone();
            Arc::new(move |issuer: &str| cognito.local_issuer(issuer))
        }),
    });
    let function_urls = Arc::new(urls::FunctionUrls {
        domain: urls,
        lambda: lambda.clone(),
        control: control.clone(),
        authenticator: authenticator.clone(),
        api_gateway: api_gateway.clone(),
    });
    let nimbus = Arc::new(Nimbus {
        control: control.clone(),
        telemetry,
        events: invoker,
        queues: queues.clone(),
        identity: identity.clone(),
        pricing,
        runtimes,
    });
    let json = Arc::new(JsonServices {
        identity: identity.clone(),
        control,
        queues,
        scheduler,
        tables,
        cognito: cognito.clone(),
        stacks,
    });
    Router::new()
        .route("/", post(json_protocol))
        .with_state(json)
        .merge(nimbus_api_lambda::router(lambda))
        .merge(nimbus_api_nimbus::router(nimbus))
        .merge(nimbus_api_apigateway::router(api_gateway))
        .merge(nimbus_api_cognito::router(cognito))
        .merge(nimbus_console::router(console))
        .merge(extra)
        .fallback(|| async { nimbus_api_lambda::unknown_operation() })
        // Each API reads its bodies with its own limits, so that an oversized request gets
        // that protocol's error rather than a bare 413.
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(
            authenticator,
            auth::authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(FrontDoor {
                urls: function_urls,
                s3,
            }),
            by_host,
        ))
}

/// Sends a stack's requests through the node's router, where each carries its caller
/// ([`nimbus_identity::InProcess`]) instead of a signature.
pub struct InProcessDispatch(pub Router);

#[async_trait::async_trait]
impl nimbus_aws_wire::dispatch::Dispatch for InProcessDispatch {
    async fn call(&self, request: Request) -> Response {
        use tower::ServiceExt as _;
        match self.0.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}

/// The router the node serves over TLS, where its workers connect: a request a worker
/// forwards from one of its sandboxes (marked with `x-nimbus-from-sandbox`) is treated as one
/// from a sandbox of the node's own: always authenticated, never a cluster route. Anyone can
/// set the header, which only makes the node stricter with the request.
pub fn for_workers(router: Router) -> Router {
    router.layer(axum::middleware::from_fn(
        |mut request: Request, next: Next| async move {
            if request
                .headers_mut()
                .remove("x-nimbus-from-sandbox")
                .is_none()
            {
                return next.run(request).await;
            }
            as_sandbox(request, next).await
        },
    ))
}

/// The router sandboxes reach (at their services port and their alias of the node's port):
/// the node's router without the cluster's routes, which only workers may call, and with
/// every request authenticated, even where authentication is off for other clients.
pub fn for_sandboxes(router: Router) -> Router {
    router.layer(axum::middleware::from_fn(as_sandbox))
}

/// Serves a request as a sandbox's: never a cluster route or the console, always
/// authenticated.
async fn as_sandbox(mut request: Request, next: Next) -> Response {
    if request.uri().path().starts_with("/nimbus/cluster/") || is_console(request.uri().path()) {
        nimbus_api_lambda::unknown_operation()
    } else {
        request.extensions_mut().insert(auth::FromSandbox);
        next.run(request).await
    }
}

#[cfg(test)]
mod tests {
    use super::HostService;

    #[test]
    fn hosts_under_localhost_name_their_service() {
        for (host, want) in [
            (None, HostService::Any),
            (Some("127.0.0.1:9000"), HostService::Any),
            (Some("localhost:9000"), HostService::Any),
            (Some("[::1]:9000"), HostService::Any),
            (Some("example.com"), HostService::Any),
            (Some("s3.localhost:9000"), HostService::S3),
            (Some("S3.LOCALHOST"), HostService::S3),
            (Some("photos.s3.localhost:9000"), HostService::S3),
            (Some("lambda.localhost:9000"), HostService::Any),
            (Some("sqs.localhost"), HostService::Any),
            (Some("dynamodb.localhost:9000"), HostService::Any),
            (Some("cognito-idp.localhost:9000"), HostService::Any),
            (Some("kinesis.localhost:9000"), HostService::Unknown),
        ] {
            assert_eq!(HostService::of(host), want, "{host:?}");
        }
    }
}
