//! Lambda's APIs over HTTP (rest-json, wire-compatible so that the `aws` CLI and SDKs work
//! with `--endpoint-url`): the control plane (functions, versions, concurrency, event-invoke
//! configuration, event source mappings) and Invoke. Handlers parse and validate, call
//! `nimbus-control`, `nimbus-events` and the Worker Manager, and encode; every error leaves in
//! Lambda's format, its code chosen by the error's type.

#![forbid(unsafe_code)]

mod concurrency;
mod error;
mod esm;
mod event_config;
mod invoke;
mod versions;
mod wire;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use nimbus_control::ControlPlane;
use nimbus_events::AsyncInvoker;
use nimbus_events::esm::EventSources;
use nimbus_manager::WorkerManager;
use nimbus_queue::sqs::SqsQueues;
use nimbus_types::limits::MAX_CODE_REQUEST_BYTES;
use nimbus_types::{FunctionRef, Qualifier};
use serde::Deserialize;

pub use error::ApiError;

use crate::wire::{FunctionConfiguration, GetFunctionOutput, ListFunctionsOutput};

/// What Lambda's handlers reach.
pub struct Lambda {
    control: Arc<ControlPlane>,
    events: Arc<AsyncInvoker>,
    queues: Arc<SqsQueues>,
    event_sources: Arc<EventSources>,
    manager: Arc<WorkerManager>,
}

type Shared = Arc<Lambda>;

impl Lambda {
    pub fn new(
        control: Arc<ControlPlane>,
        events: Arc<AsyncInvoker>,
        queues: Arc<SqsQueues>,
        event_sources: Arc<EventSources>,
    ) -> Self {
        Self {
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
        .with_state(lambda)
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

/// Resolves a function named in a path, with an optional `Qualifier` query parameter.
pub(crate) fn resolve(
    frontend: &Lambda,
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
