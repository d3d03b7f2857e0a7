//! The Frontend: HTTP ingress. It serves Lambda's control-plane and Invoke APIs (wire-compatible,
//! so the `aws` CLI and SDKs work with `--endpoint-url`), SQS's and EventBridge's JSON protocols,
//! and nimbus's own API for logs and usage. It parses and validates requests, calls the domain
//! crates (the registry, the queue, the async invoker) and encodes their answers; it holds no
//! sandbox state. Every error leaves in the format of the protocol that was spoken.

#![forbid(unsafe_code)]

mod concurrency;
mod error;
pub mod esm;
mod event_config;
mod eventbridge;
mod invoke;
mod nimbus_api;
pub mod sqs;
mod versions;
mod wire;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use nimbus_control::ControlPlane;
use nimbus_events::AsyncInvoker;
use nimbus_events::scheduler::Scheduler;
use nimbus_manager::WorkerManager;
use nimbus_store::TelemetryStore;
use nimbus_types::limits::MAX_CODE_REQUEST_BYTES;
use nimbus_types::{FunctionRef, Pricing, Qualifier};
use serde::Deserialize;

pub use error::ApiError;

use crate::wire::{FunctionConfiguration, GetFunctionOutput, ListFunctionsOutput};

/// Everything the HTTP edge serves, built before it: a subsystem missing here is a compile
/// error, not an error at request time.
pub struct Subsystems {
    pub control: Arc<ControlPlane>,
    pub telemetry: Arc<dyn TelemetryStore>,
    pub invoker: Arc<AsyncInvoker>,
    pub queues: Arc<sqs::QueueService>,
    pub event_sources: Arc<esm::EventSources>,
    pub scheduler: Arc<Scheduler>,
    pub pricing: Pricing,
}

/// What every request handler can reach.
pub struct Frontend {
    control: Arc<ControlPlane>,
    events: Arc<AsyncInvoker>,
    queues: Arc<sqs::QueueService>,
    event_sources: Arc<esm::EventSources>,
    scheduler: Arc<Scheduler>,
    manager: Arc<WorkerManager>,
    telemetry: Arc<dyn TelemetryStore>,
    pricing: Pricing,
}

type Shared = Arc<Frontend>;

impl Frontend {
    pub fn new(subsystems: Subsystems) -> Self {
        Self {
            manager: subsystems.control.manager().clone(),
            control: subsystems.control,
            events: subsystems.invoker,
            queues: subsystems.queues,
            event_sources: subsystems.event_sources,
            scheduler: subsystems.scheduler,
            telemetry: subsystems.telemetry,
            pricing: subsystems.pricing,
        }
    }
}

/// All routes of the node's HTTP API.
pub fn router(frontend: Arc<Frontend>) -> Router {
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
            &format!("{FUNCTIONS}/{{name}}/versions"),
            get(versions::list).post(versions::publish),
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
        .route("/metrics", get(concurrency::metrics))
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
            "/nimbus/v1/functions/{name}/events",
            get(nimbus_api::events),
        )
        .route(
            "/nimbus/v1/functions/{name}/events/{id}/replay",
            post(nimbus_api::replay),
        )
        .route(
            "/nimbus/v1/health",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/nimbus/v1/functions/{name}/logs", get(nimbus_api::logs))
        .route("/nimbus/v1/functions/{name}/code", get(download_code))
        .route("/nimbus/v1/usage", get(nimbus_api::usage))
        .route("/nimbus/v1/queues", get(nimbus_api::queues))
        .route("/", post(json_protocol))
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
        .fallback(unknown_operation)
        // Bodies are read with explicit limits in each handler, so that an oversized request
        // gets Lambda's error rather than a bare 413.
        .layer(DefaultBodyLimit::disable())
        .with_state(frontend)
}

/// The JSON-protocol services (`POST /` with an `X-Amz-Target` header): the queue service.
async fn json_protocol(State(f): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = match read_body(&headers, body, 2 << 20, "JSON protocol").await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    match target.split_once('.') {
        Some(("AmazonSQS", operation)) => sqs::handle(&f.queues, operation, &headers, &body).await,
        Some(("AWSEvents", operation)) => eventbridge::handle(&f, &f.scheduler, operation, &body),
        _ => ApiError::new(
            StatusCode::BAD_REQUEST,
            "UnknownOperationException",
            format!("unknown X-Amz-Target {target:?}"),
        )
        .into_response(),
    }
}

async fn unknown_operation() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "UnknownOperationException",
        "Unknown operation",
    )
}

/// Reads a request body, refusing more than `limit` bytes.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    what: &str,
) -> Result<bytes::Bytes, ApiError> {
    let too_large = || {
        ApiError::too_large(format!(
            "Request must be smaller than {limit} bytes for the {what} operation"
        ))
    };
    if let Some(len) = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let is_limit = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if is_limit {
            too_large()
        } else {
            ApiError::bad_content(format!("could not read the request body: {e}"))
        }
    })
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid_parameter(format!("could not parse the request body: {e}")))
}

/// Resolves a function named in a path, with an optional `Qualifier` query parameter.
pub(crate) fn resolve(
    frontend: &Frontend,
    name: &str,
    qualifier: Option<&str>,
) -> Result<Arc<nimbus_types::FunctionConfig>, ApiError> {
    let reference = FunctionRef::parse(name)?;
    let from_query = qualifier.map(Qualifier::parse).transpose()?;
    let qualifier = match (reference.qualifier, from_query) {
        (Some(a), Some(b)) if a != b => {
            return Err(ApiError::invalid_parameter(
                "The derived qualifier from the function name does not match the specified qualifier.",
            ));
        }
        (a, b) => a.or(b),
    };
    Ok(frontend
        .control
        .resolve(&reference.name, qualifier.as_ref())?)
}

#[derive(Debug, Deserialize)]
pub(crate) struct QualifierQuery {
    #[serde(rename = "Qualifier")]
    pub qualifier: Option<String>,
}

async fn create_function(
    State(f): State<Shared>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(&headers, body, MAX_CODE_REQUEST_BYTES, "CreateFunction").await?;
    let input: wire::CreateFunctionInput = parse_json(&body)?;
    let publish = input.publish == Some(true);
    let mut function = f.control.create(input.into_domain()?).await?;
    if publish {
        function = f
            .control
            .publish_version(&function.name, None, None, None)
            .await?
            .0;
    }
    let out = FunctionConfiguration::from_config(&function, f.control.region());
    Ok((StatusCode::CREATED, axum::Json(out)).into_response())
}

async fn get_function(
    State(f): State<Shared>,
    Path(name): Path<String>,
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
        tags: Default::default(),
        concurrency: f
            .control
            .function(&function.name)
            .and_then(|latest| latest.reserved_concurrency)
            .map(|r| serde_json::json!({ "ReservedConcurrentExecutions": r })),
    };
    Ok(axum::Json(out).into_response())
}

async fn get_function_configuration(
    State(f): State<Shared>,
    Path(name): Path<String>,
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
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(&headers, body, MAX_CODE_REQUEST_BYTES, "UpdateFunctionCode").await?;
    let input: wire::UpdateCodeInput = parse_json(&body)?;
    let publish = input.publish == Some(true) && input.dry_run != Some(true);
    let current = resolve(&f, &name, None)?;
    let mut function = f
        .control
        .update_code(&current.name, input.into_domain()?)
        .await?;
    if publish {
        function = f
            .control
            .publish_version(&function.name, None, None, None)
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
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(&headers, body, 1 << 20, "UpdateFunctionConfiguration").await?;
    let input: wire::UpdateConfigInput = parse_json(&body)?;
    let current = resolve(&f, &name, None)?;
    let function = f
        .control
        .update_config(&current.name, input.into_domain()?)
        .await?;
    Ok(axum::Json(FunctionConfiguration::from_config(
        &function,
        f.control.region(),
    ))
    .into_response())
}

async fn delete_function(
    State(f): State<Shared>,
    Path(name): Path<String>,
    Query(q): Query<QualifierQuery>,
) -> Result<Response, ApiError> {
    let reference = FunctionRef::parse(&name)?;
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
                    f.control.arn(&reference.name)
                )));
            };
            f.control.delete_version(&reference.name, number).await?;
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
    }
    f.control.delete(&reference.name).await?;
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
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = max_items(q.max_items.as_deref())?;
    let (page, more) = f.control.list(q.marker.as_deref(), limit)?;
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

async fn download_code(
    State(f): State<Shared>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let function = resolve(&f, &name, None)?;
    let zip = f.control.code_zip(&function).await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/zip")], zip).into_response())
}

/// Serves the API on `listener` until `shutdown` resolves, then lets in-flight requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    frontend: Arc<Frontend>,
    extra: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, extra.merge(router(frontend)))
        .with_graceful_shutdown(shutdown)
        .await
}
