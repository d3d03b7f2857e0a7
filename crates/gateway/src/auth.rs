//! SigV4 authentication of every request before it reaches its API. The body is read here
//! (within the API's own limit) because the signature covers its hash; the API then reads it
//! again from memory. A refusal uses the error format of the API the request was for.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use nimbus_aws_wire::ErrorEnvelope;
use nimbus_aws_wire::sigv4::{self, AuthError};
use nimbus_identity::{Caller, Identity, Refused};

/// How the gateway authenticates requests.
pub enum Auth {
    /// Every request signed with SigV4 by a known key (or a role session's credentials).
    SigV4(sigv4::KeyCache),
    /// No authentication: anyone who reaches the port is the default account's administrator.
    Disabled,
}

/// What the authentication layer holds.
pub(crate) struct Authenticator {
    pub auth: Auth,
    pub identity: Arc<Identity>,
    /// Derived keys for requests from sandboxes when authentication is otherwise off.
    pub sandbox_keys: sigv4::KeyCache,
}

/// Marks a request that came in through a sandbox's door to the node's APIs. Function code is
/// never trusted: such a request is authenticated (with the function role's credentials) even
/// when authentication is off for everyone else.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FromSandbox;

/// Which API a request is for, as far as authentication is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Lambda,
    Sqs,
    Events,
    Dynamo,
    /// Cognito user pools; the operations an application's users call go through unsigned.
    Cognito,
    /// IAM and STS: the Query protocol, a form on `POST /` without a target.
    Iam,
    /// API Gateway's control plane (`/v2/…`).
    Gateway,
    Nimbus,
    /// The cluster's routes (signed with the cluster secret), the health check, and the
    /// console (whose sessions are its own).
    Open,
}

impl Api {
    fn of(method: &Method, path: &str, headers: &HeaderMap) -> Self {
        if path.starts_with("/nimbus/cluster/")
            || path == "/nimbus/v1/health"
            || crate::is_console(path)
        {
            return Self::Open;
        }
        if method == Method::GET && nimbus_api_cognito::is_issuer_document(path) {
            return Self::Open;
        }
        if method == Method::POST && path == "/" {
            let target = headers
                .get("x-amz-target")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            return if target.starts_with("AmazonSQS.") {
                Self::Sqs
            } else if target.starts_with("DynamoDB_20120810.")
                || target.starts_with("DynamoDBStreams_20120810.")
            {
                Self::Dynamo
            } else if let Some(operation) = target
                .strip_prefix(nimbus_api_cognito::TARGET)
                .and_then(|o| o.strip_prefix('.'))
            {
                if nimbus_api_cognito::is_public(operation) {
                    Self::Open
                } else {
                    Self::Cognito
                }
            } else if target.is_empty() && crate::is_form(headers) {
                Self::Iam
            } else {
                Self::Events
            };
        }
        if path.starts_with("/nimbus/") || path == "/metrics" {
            return Self::Nimbus;
        }
        if path.starts_with("/v2/") {
            return Self::Gateway;
        }
        Self::Lambda
    }

    /// Whether a credential scope's service fits this API (`None`: the service it must be).
    fn scoped(self, service: &str) -> Result<(), &'static str> {
        let (ok, want) = match self {
            Self::Lambda => (service == "lambda", "lambda"),
            Self::Sqs => (service == "sqs", "sqs"),
            Self::Events => (service == "events", "events"),
            Self::Dynamo => (service == "dynamodb", "dynamodb"),
            Self::Cognito => (service == "cognito-idp", "cognito-idp"),
            Self::Iam => (
                service == "iam" || service == "sts" || service == "cloudformation",
                "iam",
            ),
            Self::Gateway => (service == "apigateway", "apigateway"),
            Self::Nimbus | Self::Open => (true, ""),
        };
        if ok { Ok(()) } else { Err(want) }
    }

    /// The most a request body may hold, which the API checks again with its own limit.
    fn max_body(self) -> u64 {
        match self {
            Self::Lambda => nimbus_types::limits::MAX_CODE_REQUEST_BYTES as u64,
            Self::Sqs => nimbus_api_sqs::MAX_REQUEST_BYTES,
            Self::Events => nimbus_api_events::MAX_REQUEST_BYTES,
            Self::Dynamo => nimbus_api_dynamodb::MAX_REQUEST_BYTES,
            Self::Cognito => nimbus_api_cognito::MAX_REQUEST_BYTES,
            Self::Iam => {
                nimbus_api_iam::MAX_REQUEST_BYTES.max(nimbus_api_cloudformation::MAX_REQUEST_BYTES)
            }
            Self::Gateway => 1 << 20,
            Self::Nimbus | Self::Open => 1 << 20,
        }
    }

    fn refuse(self, error: &AuthError) -> Response {
        if let AuthError::UnknownKey(key) = error {
            tracing::info!(access_key_id = %key, "request with an unknown access key");
        }
        match self {
            Self::Lambda => nimbus_api_lambda::ApiError::unauthenticated(error).into_response(),
            Self::Sqs => nimbus_api_sqs::SqsError::unauthenticated(error).into_response(),
            Self::Dynamo => {
                nimbus_api_dynamodb::DynamoError::unauthenticated(error).into_response()
            }
            Self::Cognito => {
                nimbus_api_cognito::CognitoError::unauthenticated(error).into_response()
            }
            Self::Iam => nimbus_api_iam::QueryError::unauthenticated(error).into_response(),
            Self::Gateway => {
                nimbus_api_apigateway::ApiError::unauthenticated(error).into_response()
            }
            Self::Events | Self::Open => {
                nimbus_api_events::EventsError::unauthenticated(error).into_response()
            }
            Self::Nimbus => nimbus_api_nimbus::ApiError::unauthenticated(error).into_response(),
        }
    }

    fn too_large(self) -> Response {
        let limit = self.max_body();
        match self {
            Self::Lambda => {
                <nimbus_api_lambda::ApiError as ErrorEnvelope>::too_large(limit, "request")
                    .into_response()
            }
            Self::Sqs => nimbus_api_sqs::SqsError::too_large(limit, "request").into_response(),
            Self::Dynamo => {
                nimbus_api_dynamodb::DynamoError::too_large(limit, "request").into_response()
            }
            Self::Cognito => {
                nimbus_api_cognito::CognitoError::too_large(limit, "request").into_response()
            }
            Self::Iam => nimbus_api_iam::QueryError::too_large(limit, "request").into_response(),
            Self::Gateway => {
                nimbus_api_apigateway::ApiError::too_large(limit, "request").into_response()
            }
            Self::Events | Self::Open => {
                nimbus_api_events::EventsError::too_large(limit, "request").into_response()
            }
            Self::Nimbus => {
                nimbus_api_nimbus::ApiError::too_large(limit, "request").into_response()
            }
        }
    }
}

/// Why a signed request is refused.
pub(crate) enum Refusal {
    Auth(AuthError),
    TooLarge,
    /// Authenticated, but the credential is scoped to another service (the one named).
    WrongService(&'static str),
}

/// Verifies a request signed with SigV4 against `cache`'s keys: the header's form and time,
/// the key (or session credentials), the body (read here, within `limit`, because the
/// signature covers its hash) and the signature. `scoped` checks the credential's service.
/// Returns the caller and the body.
pub(crate) async fn verify_signed(
    authenticator: &Authenticator,
    cache: &sigv4::KeyCache,
    parts: &axum::http::request::Parts,
    body: Body,
    limit: u64,
    scoped: impl FnOnce(&str) -> Result<(), &'static str>,
) -> Result<(Caller, axum::body::Bytes), Refusal> {
    if !parts
        .headers
        .contains_key(axum::http::header::AUTHORIZATION)
    {
        return Err(Refusal::Auth(AuthError::Missing));
    }
    if nimbus_aws_wire::body::declared_length(&parts.headers).is_some_and(|len| len > limit) {
        return Err(Refusal::TooLarge);
    }
    let mut signed = sigv4::Request {
        method: parts.method.as_str(),
        raw_path: parts.uri.path(),
        raw_query: parts.uri.query(),
        headers: parts
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
            .collect(),
        payload_hash: String::new(),
    };
    // Refuse what can be refused without the body (form, time, key) before reading it, so
    // that nobody without a key makes the node hold a body.
    let now = nimbus_types::time::now_ms().div_euclid(1000);
    let token = parts
        .headers
        .get("x-amz-security-token")
        .and_then(|v| v.to_str().ok());
    let authorization = sigv4::check_header(&signed, now).map_err(Refusal::Auth)?;
    let (secret, caller) =
        match authenticator
            .identity
            .resolve(authorization.access_key_id, token, now)
        {
            Ok(found) => found,
            Err(Refused::UnknownKey) => {
                return Err(Refusal::Auth(AuthError::UnknownKey(
                    authorization.access_key_id.to_owned(),
                )));
            }
            Err(Refused::BadToken) => return Err(Refusal::Auth(AuthError::BadToken)),
        };
    let bytes = axum::body::to_bytes(body, usize::try_from(limit).unwrap_or(usize::MAX))
        .await
        .map_err(|_| Refusal::TooLarge)?;
    signed.payload_hash = match parts
        .headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
    {
        // An unsigned body is S3's option only (none of the APIs here has it): the body
        // must be covered by the signature.
        Some("UNSIGNED-PAYLOAD") => {
            return Err(Refusal::Auth(AuthError::Malformed(
                "UNSIGNED-PAYLOAD is not accepted by this API".into(),
            )));
        }
        Some(hash) => {
            if !hash.eq_ignore_ascii_case(&sigv4::payload_hash(&bytes)) {
                return Err(Refusal::Auth(AuthError::BadSignature));
            }
            hash.to_owned()
        }
        None => sigv4::payload_hash(&bytes),
    };
    sigv4::verify_checked(&signed, &authorization, &secret, Some(cache)).map_err(Refusal::Auth)?;
    scoped(authorization.service).map_err(Refusal::WrongService)?;
    Ok((caller, bytes))
}

impl Authenticator {
    /// The key cache a request is verified with, or `None` when authentication is off for it
    /// (then its caller is the default account's root).
    pub(crate) fn keys_for(&self, parts: &axum::http::request::Parts) -> Option<&sigv4::KeyCache> {
        match &self.auth {
            Auth::SigV4(cache) => Some(cache),
            Auth::Disabled if parts.extensions.get::<FromSandbox>().is_some() => {
                Some(&self.sandbox_keys)
            }
            Auth::Disabled => None,
        }
    }
}

/// Whether a caller may use nimbus's own API at `path`: `nimbus:Admin` of its account, and for
/// the fleet's status (every account's sandboxes, the node's capacity) the node's operator.
fn nimbus_allowed(caller: &Caller, path: &str) -> Result<(), String> {
    caller
        .authorize("nimbus:Admin", "*")
        .map_err(|d| d.message)?;
    if path == "/nimbus/v1/cluster" && caller.account != nimbus_types::name::DEFAULT_ACCOUNT {
        return Err(format!(
            "User: {} is not authorized to read the fleet's status: only the node's operator may",
            caller.arn()
        ));
    }
    Ok(())
}

/// Checks a request's signature, then passes it on with its [`Caller`].
pub(crate) async fn authenticate(
    State(authenticator): State<Arc<Authenticator>>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    if let Some(nimbus_identity::InProcess(caller)) = parts.extensions.get().cloned() {
        // Made in the node for a caller: the caller's own rights, as if signed.
        if Api::of(&parts.method, parts.uri.path(), &parts.headers) == Api::Nimbus
            && let Err(denied) = nimbus_allowed(&caller, parts.uri.path())
        {
            return nimbus_api_nimbus::ApiError::access_denied(denied).into_response();
        }
        parts.extensions.insert(caller);
        return next.run(Request::from_parts(parts, body)).await;
    }
    let Some(cache) = authenticator.keys_for(&parts) else {
        parts
            .extensions
            .insert(Caller::root(nimbus_types::name::DEFAULT_ACCOUNT));
        return next.run(Request::from_parts(parts, body)).await;
    };
    let api = Api::of(&parts.method, parts.uri.path(), &parts.headers);
    if api == Api::Open {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let verified = verify_signed(&authenticator, cache, &parts, body, api.max_body(), |s| {
        api.scoped(s)
    })
    .await;
    let (caller, bytes) = match verified {
        Ok(v) => v,
        Err(Refusal::Auth(e)) => return api.refuse(&e),
        Err(Refusal::TooLarge) => return api.too_large(),
        Err(Refusal::WrongService(service)) => {
            return api.refuse(&AuthError::Malformed(format!(
                "Credential should be scoped to correct service: '{service}'."
            )));
        }
    };
    if api == Api::Nimbus
        && let Err(denied) = nimbus_allowed(&caller, parts.uri.path())
    {
        return nimbus_api_nimbus::ApiError::access_denied(denied).into_response();
    }
    parts.extensions.insert(caller);
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// What the middleware costs a request in-process, without sockets or the scheduler in the
/// way (`auth::cost::middleware_cost`), and over loopback with a trivial handler
/// (`middleware_cost_over_loopback`): run each alone with `cargo test --release -p
/// nimbus-gateway --lib NAME -- --ignored --exact --nocapture` (BENCHMARKS.md). A measurement, not a check: it prints, and asserts only that every
/// request got through.
#[cfg(test)]
mod cost {
    use super::*;
    use axum::Router;
    use axum::routing::post;
    use tower::ServiceExt;

    fn router(auth: Auth, identity: Arc<Identity>) -> Router {
        Router::new()
            .route(
                "/2015-03-31/functions/{name}/invocations",
                post(|body: axum::body::Bytes| async move { body }),
            )
            .layer(axum::middleware::from_fn_with_state(
                Arc::new(Authenticator {
                    auth,
                    identity,
                    sandbox_keys: Default::default(),
                }),
                authenticate,
            ))
    }

    const BODY: &str = "{\"hello\":\"world\"}";
    const PATH: &str = "/2015-03-31/functions/echo/invocations";

    /// An identity store with one administrator key, and the `X-Amz-Date` and `Authorization`
    /// headers of an invoke request signed with it (valid for five minutes).
    fn setup(name: &str) -> (Arc<Identity>, (String, String), std::path::PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("nimbus-auth-cost-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Arc::new(nimbus_store::EmbeddedStore::open(&dir.join("db")).unwrap());
        let identity = Arc::new(Identity::load(store).unwrap());
        let key = identity
            .create_key(nimbus_types::name::DEFAULT_ACCOUNT)
            .unwrap();
        let base = sigv4::Request {
            method: "POST",
            raw_path: PATH,
            raw_query: None,
            headers: vec![("host", "127.0.0.1:9000")],
            payload_hash: sigv4::payload_hash(BODY.as_bytes()),
        };
        let signed = sigv4::sign(
            &base,
            &key.access_key_id,
            &key.secret_access_key,
            "us-east-1",
            "lambda",
            nimbus_types::time::now_ms() / 1000,
        );
        (identity, signed, dir)
    }

    #[tokio::test(flavor = "current_thread")]
    #[ignore]
    async fn middleware_cost() {
        let (identity, (date, authz), dir) = setup("inproc");
        let body = BODY.as_bytes();
        let path = PATH;
        let make = || {
            axum::http::Request::post(path)
                .header("host", "127.0.0.1:9000")
                .header("user-agent", "wrk")
                .header("content-length", "17")
                .header("x-amz-date", &date)
                .header("authorization", &authz)
                .body(Body::from(body))
                .unwrap()
        };
        let on = router(Auth::SigV4(Default::default()), identity.clone());
        let off = router(Auth::Disabled, identity.clone());
        let n = 100_000u32;
        for round in 0..3 {
            for (name, r) in [("sigv4", &on), ("none", &off)] {
                let t = std::time::Instant::now();
                for _ in 0..n {
                    let resp = r.clone().oneshot(make()).await.unwrap();
                    assert_eq!(resp.status(), 200);
                    let _ = axum::body::to_bytes(resp.into_body(), 1 << 20)
                        .await
                        .unwrap();
                }
                eprintln!("round {round}, {name}: {:?} per request", t.elapsed() / n);
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// CPU time of this process so far, in seconds (user + system, clock ticks of 10 ms).
    fn cpu_s() -> f64 {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        ticks / 100.0
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore]
    async fn middleware_cost_over_loopback() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (identity, (date, authz), dir) = setup("tcp");
        let (body, path) = (BODY, PATH);
        let request: Arc<[u8]> = format!(
            "POST {path} HTTP/1.1\r\nhost: 127.0.0.1:9000\r\nuser-agent: wrk\r\n\
             content-length: {}\r\nx-amz-date: {date}\r\nauthorization: {authz}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
        .into();
        let mut ports = Vec::new();
        for auth in [Auth::SigV4(Default::default()), Auth::Disabled] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            ports.push(listener.local_addr().unwrap().port());
            let app = router(auth, identity.clone());
            tokio::spawn(async move { axum::serve(listener, app).await });
        }
        let per_connection = 4_000usize;
        for round in 0..5 {
            for (name, port) in [("sigv4", ports[0]), ("none", ports[1])] {
                let (cpu, t) = (cpu_s(), std::time::Instant::now());
                let mut clients = Vec::new();
                for _ in 0..32 {
                    let request = request.clone();
                    clients.push(tokio::spawn(async move {
                        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
                            .await
                            .unwrap();
                        conn.set_nodelay(true).unwrap();
                        let mut buf = vec![0u8; 4096];
                        for _ in 0..per_connection {
                            conn.write_all(&request).await.unwrap();
                            // The response ends with the echoed body.
                            let mut seen = Vec::new();
                            while !seen.ends_with(b"}") {
                                let n = conn.read(&mut buf).await.unwrap();
                                assert!(n > 0, "connection closed");
                                seen.extend_from_slice(&buf[..n]);
                            }
                            assert!(seen.starts_with(b"HTTP/1.1 200"));
                        }
                    }));
                }
                for c in clients {
                    c.await.unwrap();
                }
                let requests = (32 * per_connection) as f64;
                let elapsed = t.elapsed().as_secs_f64();
                eprintln!(
                    "round {round}, {name}: {:.0}/s, {:.2} µs of CPU per request (server and client)",
                    requests / elapsed,
                    (cpu_s() - cpu) * 1e6 / requests
                );
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
