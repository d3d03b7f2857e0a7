//! Lambda's APIs over HTTP (rest-json, wire-compatible so that the `aws` CLI and SDKs work
//! with `--endpoint-url`): the control plane (functions, versions, concurrency, event-invoke
//! configuration, event source mappings) and Invoke. Handlers parse and validate, call
//! `nimbus-control`, `nimbus-events` and the Worker Manager, and encode; every error leaves in
//! Lambda's format, its code chosen by the error's type.

#![forbid(unsafe_code)]

mod alias;
mod concurrency;
mod error;
mod esm;
mod event_config;
pub mod http_event;
mod invoke;
mod layer;
mod stream;
pub mod url;
mod versions;
mod wire;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use nimbus_aws_wire::ErrorEnvelope;
use nimbus_control::ControlPlane;
use nimbus_events::AsyncInvoker;
use nimbus_events::esm::EventSources;
use nimbus_identity::{Caller, Identity};
use nimbus_manager::WorkerManager;
use nimbus_queue::sqs::SqsQueues;
use nimbus_types::limits::MAX_CODE_REQUEST_BYTES;
use nimbus_types::{FunctionRef, Qualifier};
use serde::Deserialize;

pub use error::ApiError;
pub use url::UrlDomain;

use crate::wire::{FunctionConfiguration, GetFunctionOutput, ListFunctionsOutput};

/// What Lambda's handlers reach.
pub struct Lambda {
    control: Arc<ControlPlane>,
    events: Arc<AsyncInvoker>,
    queues: Arc<SqsQueues>,
    event_sources: Arc<EventSources>,
    manager: Arc<WorkerManager>,
    identity: Arc<Identity>,
    urls: UrlDomain,
}

type Shared = Arc<Lambda>;

impl Lambda {
    pub fn new(
        control: Arc<ControlPlane>,
        events: Arc<AsyncInvoker>,
        queues: Arc<SqsQueues>,
        event_sources: Arc<EventSources>,
        identity: Arc<Identity>,
        urls: UrlDomain,
    ) -> Self {
        Self {
            identity,
            urls,
            manager: control.manager().clone(),
            control,
            events,
            queues,
            event_sources,
        }
    }
}

/// Lambda's routes.
pub fn router(lambda: Arc<Lambda>) -> Router {
    const FUNCTIONS: &str = "/2015-03-31/functions";
    Router::new()
        .route(FUNCTIONS, get(list_functions).post(create_function))
        .route(
            &format!("{FUNCTIONS}/"),
            get(list_functions).post(create_function),
        )
        .route(
            &format!("{FUNCTIONS}/{{name}}"),
            get(get_function).delete(delete_function),
        )
        .route(
            &format!("{FUNCTIONS}/{{name}}/configuration"),
            get(get_function_configuration).put(update_function_configuration),
        )
        .route(
            &format!("{FUNCTIONS}/{{name}}/code"),
            axum::routing::put(update_function_code),
        )
        .route(
            &format!("{FUNCTIONS}/{{name}}/invocations"),
            post(invoke::invoke),
        )
        .route(
            "/2021-11-15/functions/{name}/response-streaming-invocations",
            post(invoke::invoke_streaming),
        )
        .route(
            &format!("{FUNCTIONS}/{{name}}/versions"),
            get(versions::list).post(versions::publish),
        )
        .route(
            &format!("{FUNCTIONS}/{{name}}/aliases"),
            get(alias::list).post(alias::create),
        )
        .route(layer::LAYERS, get(layer::list))
        .route(
            &format!("{}/{{name}}/versions", layer::LAYERS),
            get(layer::list_versions).post(layer::publish),
        )
        .route(
            &format!("{}/{{name}}/versions/{{version}}", layer::LAYERS),
            get(layer::get).delete(layer::delete),
        )
        .route(
            &format!("{}/{{name}}/versions/{{version}}/content", layer::LAYERS),
            get(layer::content),
        )
        .route(
            &format!("{}/{{name}}/versions/{{version}}/policy", layer::LAYERS),
            get(layer::get_policy).post(layer::add_permission),
        )
        .route(
            &format!(
                "{}/{{name}}/versions/{{version}}/policy/{{sid}}",
                layer::LAYERS
            ),
            axum::routing::delete(layer::remove_permission),
        )
        .route(
            &format!("{FUNCTIONS}/{{name}}/aliases/{{alias}}"),
            get(alias::get).put(alias::update).delete(alias::delete),
        )
        .route(
            "/2017-10-31/functions/{name}/concurrency",
            axum::routing::put(concurrency::put_reserved).delete(concurrency::delete_reserved),
        )
        .route(
            "/2019-09-30/functions/{name}/concurrency",
            get(concurrency::get_reserved),
        )
        .route(
            "/2019-09-30/functions/{name}/provisioned-concurrency",
            get(concurrency::get_provisioned)
                .put(concurrency::put_provisioned)
                .delete(concurrency::delete_provisioned),
        )
        .route(
            "/2016-08-19/account-settings",
            get(concurrency::account_settings),
        )
        .route(
            "/2016-08-19/account-settings/",
            get(concurrency::account_settings),
        )
        .route(
            "/2019-09-25/functions/{name}/event-invoke-config",
            get(event_config::get)
                .put(event_config::put)
                .post(event_config::update)
                .delete(event_config::delete),
        )
        .route(
            "/2019-09-25/functions/{name}/event-invoke-config/list",
            get(event_config::list),
        )
        .route(
            "/2017-03-31/tags/{name}",
            get(list_tags).post(tag_resource).delete(untag_resource),
        )
        .route(
            "/2021-10-31/functions/{name}/url",
            get(url::get_url)
                .post(url::create_url)
                .put(url::update_url)
                .delete(url::delete_url),
        )
        .route("/2021-10-31/functions/{name}/urls", get(url::list_urls))
        .route(
            &format!("{FUNCTIONS}/{{name}}/policy"),
            get(url::get_policy).post(url::add_permission),
        )
        .route(
            &format!("{FUNCTIONS}/{{name}}/policy/{{sid}}"),
            axum::routing::delete(url::remove_permission),
        )
        .route(
            "/2015-03-31/event-source-mappings",
            get(esm::list).post(esm::create),
        )
        .route(
            "/2015-03-31/event-source-mappings/",
            get(esm::list).post(esm::create),
        )
        .route(
            "/2015-03-31/event-source-mappings/{uuid}",
            get(esm::get).put(esm::update).delete(esm::delete),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            lambda.clone(),
            authorize,
        ))
        .with_state(lambda)
}

/// What an operation acts on, for its authorization.
enum Resource {
    /// No one resource (lists, account settings, new mappings).
    Any,
    /// The function in the path, with the request's qualifier.
    Function,
    /// The event source mapping in the path.
    Mapping,
    /// Named in the body: the handler authorizes (CreateFunction).
    InBody,
    /// The layer in the path (by name: the caller's; by ARN: anyone's).
    Layer,
    /// The layer version in the path.
    LayerVersion,
}

/// The IAM action of a route and what it acts on.
fn action(method: &Method, route: &str) -> Option<(&'static str, Resource)> {
    use Resource::*;
    let route = route.trim_end_matches('/');
    let (_, tail) = route.split_once("/functions").unwrap_or(("", route));
    let m = method.as_str();
    Some(match (m, route, tail) {
        ("GET", "/2015-03-31/functions", _) => ("ListFunctions", Any),
        ("POST", "/2015-03-31/functions", _) => ("CreateFunction", InBody),
        ("GET", "/2016-08-19/account-settings", _) => ("GetAccountSettings", Any),
        ("GET", "/2015-03-31/event-source-mappings", _) => ("ListEventSourceMappings", Any),
        ("POST", "/2015-03-31/event-source-mappings", _) => ("CreateEventSourceMapping", Any),
        ("GET", "/2015-03-31/event-source-mappings/{uuid}", _) => {
            ("GetEventSourceMapping", Mapping)
        }
        ("PUT", "/2015-03-31/event-source-mappings/{uuid}", _) => {
            ("UpdateEventSourceMapping", Mapping)
        }
        ("DELETE", "/2015-03-31/event-source-mappings/{uuid}", _) => {
            ("DeleteEventSourceMapping", Mapping)
        }
        ("GET", "/2018-10-31/layers", _) => ("ListLayers", Any),
        ("GET", "/2018-10-31/layers/{name}/versions", _) => ("ListLayerVersions", Layer),
        ("POST", "/2018-10-31/layers/{name}/versions", _) => ("PublishLayerVersion", Layer),
        ("GET", "/2018-10-31/layers/{name}/versions/{version}", _)
        | ("GET", "/2018-10-31/layers/{name}/versions/{version}/content", _) => {
            ("GetLayerVersion", LayerVersion)
        }
        ("DELETE", "/2018-10-31/layers/{name}/versions/{version}", _) => {
            ("DeleteLayerVersion", LayerVersion)
        }
        ("GET", "/2018-10-31/layers/{name}/versions/{version}/policy", _) => {
            ("GetLayerVersionPolicy", LayerVersion)
        }
        ("POST", "/2018-10-31/layers/{name}/versions/{version}/policy", _) => {
            ("AddLayerVersionPermission", LayerVersion)
        }
        ("DELETE", "/2018-10-31/layers/{name}/versions/{version}/policy/{sid}", _) => {
            ("RemoveLayerVersionPermission", LayerVersion)
        }
        ("GET", "/2017-03-31/tags/{name}", _) => ("ListTags", Function),
        ("POST", "/2017-03-31/tags/{name}", _) => ("TagResource", Function),
        ("DELETE", "/2017-03-31/tags/{name}", _) => ("UntagResource", Function),
        ("GET", _, "/{name}") => ("GetFunction", Function),
        ("DELETE", _, "/{name}") => ("DeleteFunction", Function),
        ("GET", _, "/{name}/configuration") => ("GetFunctionConfiguration", Function),
        ("PUT", _, "/{name}/configuration") => ("UpdateFunctionConfiguration", Function),
        ("PUT", _, "/{name}/code") => ("UpdateFunctionCode", Function),
        ("POST", _, "/{name}/invocations") => ("InvokeFunction", Function),
        ("POST", _, "/{name}/response-streaming-invocations") => ("InvokeFunction", Function),
        ("GET", _, "/{name}/versions") => ("ListVersionsByFunction", Function),
        ("POST", _, "/{name}/versions") => ("PublishVersion", Function),
        ("GET", _, "/{name}/aliases") => ("ListAliases", Function),
        ("POST", _, "/{name}/aliases") => ("CreateAlias", Function),
        ("GET", _, "/{name}/aliases/{alias}") => ("GetAlias", Function),
        ("PUT", _, "/{name}/aliases/{alias}") => ("UpdateAlias", Function),
        ("DELETE", _, "/{name}/aliases/{alias}") => ("DeleteAlias", Function),
        ("PUT", _, "/{name}/concurrency") => ("PutFunctionConcurrency", Function),
        ("DELETE", _, "/{name}/concurrency") => ("DeleteFunctionConcurrency", Function),
        ("GET", _, "/{name}/concurrency") => ("GetFunctionConcurrency", Function),
        ("GET", _, "/{name}/provisioned-concurrency") => {
            ("GetProvisionedConcurrencyConfig", Function)
        }
        ("PUT", _, "/{name}/provisioned-concurrency") => {
            ("PutProvisionedConcurrencyConfig", Function)
        }
        ("DELETE", _, "/{name}/provisioned-concurrency") => {
            ("DeleteProvisionedConcurrencyConfig", Function)
        }
        ("GET", _, "/{name}/event-invoke-config") => ("GetFunctionEventInvokeConfig", Function),
        ("PUT", _, "/{name}/event-invoke-config") => ("PutFunctionEventInvokeConfig", Function),
        ("POST", _, "/{name}/event-invoke-config") => ("UpdateFunctionEventInvokeConfig", Function),
        ("DELETE", _, "/{name}/event-invoke-config") => {
            ("DeleteFunctionEventInvokeConfig", Function)
        }
        ("GET", _, "/{name}/url") => ("GetFunctionUrlConfig", Function),
        ("POST", _, "/{name}/url") => ("CreateFunctionUrlConfig", Function),
        ("PUT", _, "/{name}/url") => ("UpdateFunctionUrlConfig", Function),
        ("DELETE", _, "/{name}/url") => ("DeleteFunctionUrlConfig", Function),
        ("GET", _, "/{name}/urls") => ("ListFunctionUrlConfigs", Function),
        ("GET", _, "/{name}/policy") => ("GetPolicy", Function),
        ("POST", _, "/{name}/policy") => ("AddPermission", Function),
        ("DELETE", _, "/{name}/policy/{sid}") => ("RemovePermission", Function),
        ("GET", _, "/{name}/event-invoke-config/list") => {
            ("ListFunctionEventInvokeConfigs", Function)
        }
        _ => return None,
    })
}

/// The ARN a function named in a path (by name, partial or full ARN, maybe qualified) is
/// authorized as: in the account the ARN names, or else the caller's.
fn function_resource(
    lambda: &Lambda,
    caller: &Caller,
    name: &str,
    qualifier: Option<&str>,
) -> String {
    let (name, qualifier, account) = match FunctionRef::parse(name) {
        Ok(r) => (
            r.name,
            r.qualifier
                .map(|q| q.as_str().to_owned())
                .or(qualifier.map(str::to_owned)),
            r.account,
        ),
        // A name that does not parse is refused by the handler; authorize it as given.
        Err(_) => (name.to_owned(), qualifier.map(str::to_owned), None),
    };
    let account = account.as_deref().unwrap_or(&caller.account);
    let arn = nimbus_types::name::function_arn(lambda.control.region(), account, &name);
    match qualifier {
        Some(q) => format!("{arn}:{q}"),
        None => arn,
    }
}

/// Authorizes a request as its route's IAM action before the handler runs.
async fn authorize(
    State(lambda): State<Shared>,
    Extension(caller): Extension<Caller>,
    route: MatchedPath,
    request: Request,
    next: Next,
) -> Response {
    // An account's root is refused only what another account owns, which a path can name
    // only by ARN (with a `:`, maybe percent-encoded): its other requests, invocations by
    // name among them, skip building the resource.
    if caller.is_root() && !names_an_arn(request.uri().path()) {
        return next.run(request).await;
    }
    let Some((action, resource)) = action(request.method(), route.as_str()) else {
        if caller.is_root() {
            return next.run(request).await;
        }
        return ApiError::access_denied(format!(
            "User: {} is not authorized to perform this operation",
            caller.arn()
        ))
        .into_response();
    };
    if matches!(resource, Resource::InBody) {
        return next.run(request).await;
    }
    let layer_read = matches!(resource, Resource::LayerVersion) && action == "GetLayerVersion";
    let resource = resource_arn(&lambda, &caller, resource, route.as_str(), request.uri());
    let action = format!("lambda:{action}");
    match caller.authorize(&action, &resource) {
        Ok(()) => next.run(request).await,
        Err(_) if layer_read && layer::shared_with(&lambda, &caller, &resource) => {
            next.run(request).await
        }
        Err(denied) => match granted_by_function_policy(&lambda, &caller, &action, &resource) {
            Some(owner) => {
                let mut request = request;
                request.extensions_mut().insert(owner);
                next.run(request).await
            }
            None => ApiError::access_denied(denied.message).into_response(),
        },
    }
}

/// The account whose function a request acts on, when that function's resource-based policy
/// (AddPermission) is what let the caller in: the handler then finds the function there.
#[derive(Debug, Clone)]
pub(crate) struct OwnerAccount(String);

/// Whether the function `resource` names lets `caller` take `action` by its resource-based
/// policy where the caller's own policies do not: for a caller of the same account, a
/// statement naming it suffices unless its policies deny; for one of another account, its
/// policies must allow too (an account's root always does). Returns the function's account.
fn granted_by_function_policy(
    lambda: &Lambda,
    caller: &Caller,
    action: &str,
    resource: &str,
) -> Option<OwnerAccount> {
    let arn = nimbus_types::arn::FunctionArn::parse(resource).ok()?;
    let key = nimbus_types::name::scoped(&arn.account, &arn.name);
    let function = lambda.control.resolve(&key, None).ok()?;
    let qualifier = arn.qualifier.as_ref().map(Qualifier::as_str);
    let principal = caller.arn();
    let by_resource = function
        .permissions
        .iter()
        .any(|p| p.allows(action, Some((&caller.account, &principal)), qualifier, None));
    (by_resource && caller.authorize_with_resource_policy(action, resource, true))
        .then_some(OwnerAccount(arn.account))
}

/// Whether a request path may hold an ARN (a `:`, as is or percent-encoded).
fn names_an_arn(path: &str) -> bool {
    path.contains(':') || path.contains("%3A") || path.contains("%3a")
}

/// The ARN a request is authorized on, from its route's parameters and query.
fn resource_arn(
    lambda: &Lambda,
    caller: &Caller,
    resource: Resource,
    route: &str,
    uri: &axum::http::Uri,
) -> String {
    // A parameter is the path's segment at the position its `{name}` has in the route (no
    // route here has a greedy parameter).
    let param = |name: &str| -> String {
        let wanted = format!("{{{name}}}");
        let raw = route
            .split('/')
            .position(|segment| segment == wanted)
            .and_then(|i| uri.path().split('/').nth(i))
            .unwrap_or_default();
        percent_decode(raw).unwrap_or_else(|| raw.to_owned())
    };
    match resource {
        Resource::Any | Resource::InBody => "*".to_owned(),
        Resource::Function => {
            let qualifier = uri.query().and_then(|q| {
                q.split('&')
                    .find_map(|kv| kv.strip_prefix("Qualifier="))
                    .map(|v| percent_decode(v).unwrap_or_else(|| v.to_owned()))
            });
            function_resource(lambda, caller, &param("name"), qualifier.as_deref())
        }
        Resource::Mapping => format!(
            "arn:aws:lambda:{}:{}:event-source-mapping:{}",
            lambda.control.region(),
            caller.account,
            param("uuid")
        ),
        Resource::Layer | Resource::LayerVersion => {
            // Rebuilt from its parts, so that however the path spells a layer (by name, by an
            // ARN of any partition or region, a version with leading zeros) a statement about
            // its canonical ARN applies.
            let Ok((owner, name)) = layer::layer_of(caller, &param("name")) else {
                return "*".to_owned();
            };
            let layer = format!(
                "arn:aws:lambda:{}:{owner}:layer:{name}",
                lambda.control.region()
            );
            match resource {
                Resource::LayerVersion => match param("version").parse::<u64>() {
                    Ok(v) => format!("{layer}:{v}"),
                    Err(_) => layer,
                },
                _ => layer,
            }
        }
    }
}

/// Decodes `%XX` escapes of a path segment; `None` if they do not make UTF-8.
fn percent_decode(raw: &str) -> Option<String> {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// Checks that the caller may hand `role` to Lambda (`iam:PassRole`) and that Lambda can
/// assume it, as CreateFunction and a configuration update naming a role require.
fn check_role(lambda: &Lambda, caller: &Caller, role: &str) -> Result<(), ApiError> {
    // A role of another account is one Lambda cannot assume for this one, whoever asks.
    if nimbus_types::iam::RoleArn::parse(role).is_some_and(|r| r.account != caller.account) {
        return lambda
            .identity
            .check_execution_role(&caller.account, role)
            .map_err(ApiError::invalid_parameter);
    }
    caller
        .authorize("iam:PassRole", role)
        .map_err(|d| ApiError::access_denied(d.message))?;
    lambda
        .identity
        .check_execution_role(&caller.account, role)
        .map_err(ApiError::invalid_parameter)
}

/// What Lambda answers a path it has no operation for.
pub fn unknown_operation() -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "UnknownOperationException",
        "Unknown operation",
    )
    .into_response()
}

/// Reads a request body, refusing more than `limit` bytes with Lambda's error.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    operation: &str,
) -> Result<bytes::Bytes, ApiError> {
    nimbus_aws_wire::body::read(headers, body, limit as u64, operation).await
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    nimbus_aws_wire::parse_json(body)
}

/// A function named in a request's path, and the account of the caller it is looked up in.
pub(crate) struct FunctionPath {
    pub name: String,
    pub account: String,
}

impl FunctionPath {
    /// The key of the function the path names, in its account.
    fn key(&self) -> Result<(String, FunctionRef), ApiError> {
        let reference = FunctionRef::parse(&self.name)?;
        Ok((
            nimbus_types::name::scoped(&self.account, &reference.name),
            reference,
        ))
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for FunctionPath {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        // The function's name is the path's `{name}` (a route may hold other parameters).
        let Path(params) =
            Path::<std::collections::HashMap<String, String>>::from_request_parts(parts, state)
                .await
                .map_err(IntoResponse::into_response)?;
        let name = params
            .get("name")
            .cloned()
            .ok_or_else(|| ApiError::internal("a function route without {name}").into_response())?;
        // The caller's account, unless the function's own policy let another account in.
        let account = match parts.extensions.get::<OwnerAccount>() {
            Some(OwnerAccount(owner)) => owner.clone(),
            None => parts
                .extensions
                .get::<Caller>()
                .map(|c| c.account.clone())
                .ok_or_else(|| ApiError::internal("request without a caller").into_response())?,
        };
        Ok(Self { name, account })
    }
}

/// Resolves a function named in a path, with an optional `Qualifier` query parameter, in the
/// caller's account.
pub(crate) fn resolve(
    frontend: &Lambda,
    name: &FunctionPath,
    qualifier: Option<&str>,
) -> Result<Arc<nimbus_types::FunctionConfig>, ApiError> {
    let (key, qualifier) = qualified(name, qualifier)?;
    Ok(frontend.control.resolve(&key, qualifier.as_ref())?)
}

/// The version an invocation runs: as [`resolve`], with a weighted alias's pick.
pub(crate) fn resolve_invocation(
    frontend: &Lambda,
    name: &FunctionPath,
    qualifier: Option<&str>,
) -> Result<Arc<nimbus_types::FunctionConfig>, ApiError> {
    let (key, qualifier) = qualified(name, qualifier)?;
    Ok(frontend
        .control
        .resolve_invocation(&key, qualifier.as_ref())?)
}

/// The function key and qualifier of a path's name and a request's `Qualifier`, which must
/// agree when both are given.
pub(crate) fn qualified(
    name: &FunctionPath,
    qualifier: Option<&str>,
) -> Result<(String, Option<Qualifier>), ApiError> {
    let (key, reference) = name.key()?;
    let from_query = qualifier.map(Qualifier::parse).transpose()?;
    let qualifier = match (reference.qualifier, from_query) {
        (Some(a), Some(b)) if a != b => {
            return Err(ApiError::invalid_parameter(
                "The derived qualifier from the function name does not match the specified qualifier.",
            ));
        }
        (a, b) => a.or(b),
    };
    Ok((key, qualifier))
}

#[derive(Debug, Deserialize)]
pub(crate) struct QualifierQuery {
    #[serde(rename = "Qualifier")]
    pub qualifier: Option<String>,
}

async fn create_function(
    State(f): State<Shared>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(&headers, body, MAX_CODE_REQUEST_BYTES, "CreateFunction").await?;
    let input: wire::CreateFunctionInput = parse_json(&body)?;
    let publish = input.publish == Some(true);
    let new = input.into_domain()?;
    caller
        .authorize(
            "lambda:CreateFunction",
            &nimbus_types::name::function_arn(f.control.region(), &caller.account, &new.name),
        )
        .map_err(|d| ApiError::access_denied(d.message))?;
    check_role(&f, &caller, &new.role)?;
    layer::check_use(&f, &caller, &new.layers)?;
    let mut function = f.control.create(&caller.account, new).await?;
    if publish {
        function = f
            .control
            .publish_version(&function.key(), None, None, None)
            .await?
            .0;
    }
    let out = FunctionConfiguration::from_config(&function, f.control.region());
    Ok((StatusCode::CREATED, axum::Json(out)).into_response())
}

async fn get_function(
    State(f): State<Shared>,
    name: FunctionPath,
    Query(q): Query<QualifierQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let function = resolve(&f, &name, q.qualifier.as_deref())?;
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or("127.0.0.1");
    let out = GetFunctionOutput {
        configuration: FunctionConfiguration::from_config(&function, f.control.region()),
        code: serde_json::json!({
            "RepositoryType": "S3",
            "Location": format!("http://{host}/nimbus/v1/functions/{}/code", function.name),
        }),
        tags: function.tags.clone(),
        concurrency: f
            .control
            .function(&function.key())
            .and_then(|latest| latest.reserved_concurrency)
            .map(|r| serde_json::json!({ "ReservedConcurrentExecutions": r })),
    };
    Ok(axum::Json(out).into_response())
}

async fn get_function_configuration(
    State(f): State<Shared>,
    name: FunctionPath,
    Query(q): Query<QualifierQuery>,
) -> Result<Response, ApiError> {
    let function = resolve(&f, &name, q.qualifier.as_deref())?;
    Ok(axum::Json(FunctionConfiguration::from_config(
        &function,
        f.control.region(),
    ))
    .into_response())
}

async fn update_function_code(
    State(f): State<Shared>,
    name: FunctionPath,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(&headers, body, MAX_CODE_REQUEST_BYTES, "UpdateFunctionCode").await?;
    let input: wire::UpdateCodeInput = parse_json(&body)?;
    let publish = input.publish == Some(true) && input.dry_run != Some(true);
    let current = resolve(&f, &name, None)?;
    let mut function = f
        .control
        .update_code(&current.key(), input.into_domain()?)
        .await?;
    if publish {
        function = f
            .control
            .publish_version(&function.key(), None, None, None)
            .await?
            .0;
    }
    Ok(axum::Json(FunctionConfiguration::from_config(
        &function,
        f.control.region(),
    ))
    .into_response())
}

async fn update_function_configuration(
    State(f): State<Shared>,
    Extension(caller): Extension<Caller>,
    name: FunctionPath,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(&headers, body, 1 << 20, "UpdateFunctionConfiguration").await?;
    let input: wire::UpdateConfigInput = parse_json(&body)?;
    let current = resolve(&f, &name, None)?;
    if let Some(role) = &input.role {
        check_role(&f, &caller, role)?;
    }
    if let Some(layers) = &input.layers {
        // The caller's rights, not the function's owner's: another account allowed to change
        // the function may not give it layers the caller could not read.
        layer::check_use(&f, &caller, layers)?;
    }
    let function = f
        .control
        .update_config(&current.key(), input.into_domain()?)
        .await?;
    Ok(axum::Json(FunctionConfiguration::from_config(
        &function,
        f.control.region(),
    ))
    .into_response())
}

async fn delete_function(
    State(f): State<Shared>,
    name: FunctionPath,
    Query(q): Query<QualifierQuery>,
) -> Result<Response, ApiError> {
    let (key, reference) = name.key()?;
    let qualifier =
        reference
            .qualifier
            .or(q.qualifier.as_deref().map(Qualifier::parse).transpose()?);
    match qualifier {
        None => {}
        Some(Qualifier::Latest) => {
            return Err(ApiError::invalid_parameter(
                "$LATEST version cannot be deleted without deleting the function.",
            ));
        }
        Some(Qualifier::Other(q)) => {
            let Ok(number) = q.parse::<u32>() else {
                return Err(ApiError::function_not_found(&format!(
                    "{}:{q}",
                    f.control.arn(&key)
                )));
            };
            f.control.delete_version(&key, number).await?;
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
    }
    f.control.delete(&key).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `Marker` and `MaxItems` of Lambda's list operations.
#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    #[serde(rename = "Marker")]
    pub marker: Option<String>,
    #[serde(rename = "MaxItems")]
    pub max_items: Option<String>,
}

/// A list operation's `MaxItems`: 1 to 10,000, 50 if absent.
pub(crate) fn max_items(value: Option<&str>) -> Result<usize, ApiError> {
    match value {
        None => Ok(50),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=10_000).contains(&n) => Ok(n),
            _ => Err(nimbus_types::InvalidParameter::range("maxItems", &s, 1, 10_000).into()),
        },
    }
}

async fn list_functions(
    State(f): State<Shared>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = max_items(q.max_items.as_deref())?;
    let (page, more) = f
        .control
        .list(&caller.account, q.marker.as_deref(), limit)?;
    let next_marker = if more {
        page.last().map(|f| f.name.clone())
    } else {
        None
    };
    let out = ListFunctionsOutput {
        functions: page
            .iter()
            .map(|function| FunctionConfiguration::from_config(function, f.control.region()))
            .collect(),
        next_marker,
    };
    Ok(axum::Json(out).into_response())
}

/// ListTags: a function's tags (by ARN, as Lambda's tag operations name it).
async fn list_tags(State(f): State<Shared>, name: FunctionPath) -> Result<Response, ApiError> {
    let function = resolve(&f, &name, None)?;
    Ok(axum::Json(serde_json::json!({ "Tags": function.tags })).into_response())
}

#[derive(Debug, Deserialize)]
struct TagInput {
    #[serde(rename = "Tags")]
    tags: std::collections::BTreeMap<String, String>,
}

/// TagResource: adds or replaces tags. `nimbus:egress` (`internet` or `none`) decides the
/// function's outbound access; changing it gives the function new sandboxes.
async fn tag_resource(
    State(f): State<Shared>,
    name: FunctionPath,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(&headers, body, 1 << 16, "TagResource").await?;
    let input: TagInput = parse_json(&body)?;
    let function = resolve(&f, &name, None)?;
    f.control.tag(&function.key(), input.tags, &[]).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// UntagResource: removes the tags named by `tagKeys`.
async fn untag_resource(
    State(f): State<Shared>,
    name: FunctionPath,
    uri: axum::http::Uri,
) -> Result<Response, ApiError> {
    let keys: Vec<String> = uri
        .query()
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .filter(|(k, _)| k == "tagKeys")
                .map(|(_, v)| v.into_owned())
                .collect()
        })
        .unwrap_or_default();
    let function = resolve(&f, &name, None)?;
    f.control
        .tag(&function.key(), Default::default(), &keys)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
