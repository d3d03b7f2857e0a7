//! Lambda's event-invoke configuration API (`/2019-09-25/functions/{name}/event-invoke-config`):
//! retries, maximum event age and destinations of asynchronous invocations.

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use nimbus_types::function::EventInvokeConfig;
use nimbus_types::{FunctionConfig, InvalidParameter};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::{FunctionPath, QualifierQuery, Shared, read_body, resolve};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct DestinationInput {
    destination: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct DestinationConfigInput {
    on_success: Option<DestinationInput>,
    on_failure: Option<DestinationInput>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct EventInvokeConfigInput {
    maximum_retry_attempts: Option<i64>,
    maximum_event_age_in_seconds: Option<i64>,
    destination_config: Option<DestinationConfigInput>,
}

fn output(function: &FunctionConfig, config: &EventInvokeConfig, region: &str) -> Value {
    let mut destinations = serde_json::Map::new();
    if let Some(d) = &config.on_success {
        destinations.insert("OnSuccess".into(), json!({ "Destination": d }));
    }
    if let Some(d) = &config.on_failure {
        destinations.insert("OnFailure".into(), json!({ "Destination": d }));
    }
    json!({
        "LastModified": config.last_modified_ms as f64 / 1000.0,
        "FunctionArn": format!("{}:{}", function.arn(region), function.version),
        "MaximumRetryAttempts": config.maximum_retry_attempts,
        "MaximumEventAgeInSeconds": config.maximum_event_age_s,
        "DestinationConfig": Value::Object(destinations),
    })
}

fn not_configured(name: &str) -> ApiError {
    ApiError::not_found(format!(
        "The function {name} doesn't have an EventInvokeConfig"
    ))
}

/// Applies the input on top of `base`, validating as Lambda does.
fn apply(
    f: &Shared,
    account: &str,
    base: EventInvokeConfig,
    input: EventInvokeConfigInput,
) -> Result<EventInvokeConfig, ApiError> {
    let mut config = base;
    if let Some(n) = input.maximum_retry_attempts {
        if !(0..=2).contains(&n) {
            return Err(InvalidParameter::range("maximumRetryAttempts", &n, 0, 2).into());
        }
        config.maximum_retry_attempts = n as u32;
    }
    if let Some(n) = input.maximum_event_age_in_seconds {
        if !(60..=21_600).contains(&n) {
            return Err(InvalidParameter::range("maximumEventAgeInSeconds", &n, 60, 21_600).into());
        }
        config.maximum_event_age_s = n as u32;
    }
    if let Some(destinations) = input.destination_config {
        for (slot, destination) in [
            (&mut config.on_success, destinations.on_success),
            (&mut config.on_failure, destinations.on_failure),
        ] {
            if let Some(d) = destination {
                *slot = match d.destination {
                    Some(arn) if !arn.is_empty() => Some(check_destination(f, account, &arn)?),
                    _ => None,
                };
            }
        }
    }
    config.last_modified_ms = nimbus_types::time::now_ms();
    Ok(config)
}

/// Checks a destination of a function of `account`: a queue or function of the same account
/// that exists.
fn check_destination(f: &Shared, account: &str, arn: &str) -> Result<String, ApiError> {
    use nimbus_types::arn::Destination;
    use nimbus_types::name::scoped;
    let invalid = |why: &str| {
        ApiError::invalid_parameter(format!("The destination ARN {arn} is invalid{why}"))
    };
    let destination = Destination::parse(arn).map_err(|_| invalid(""))?;
    let owner = match &destination {
        Destination::Queue(q) => &q.account,
        Destination::Function(f) => &f.account,
    };
    if owner != account {
        return Err(invalid(": it belongs to another account"));
    }
    match destination {
        Destination::Queue(queue) => {
            if f.queues.queue(&scoped(account, &queue.name)).is_err() {
                return Err(invalid(": the queue does not exist"));
            }
        }
        Destination::Function(function) => {
            if f.control
                .function(&scoped(account, &function.name))
                .is_none()
            {
                return Err(invalid(&format!(
                    ": function {} does not exist",
                    function.name
                )));
            }
        }
    }
    Ok(arn.to_owned())
}

async fn write(
    f: Shared,
    name: FunctionPath,
    qualifier: Option<String>,
    headers: HeaderMap,
    body: Body,
    merge: bool,
) -> Result<Response, ApiError> {
    let function = resolve(&f, &name, qualifier.as_deref())?;
    let body = read_body(&headers, body, 64 * 1024, "PutFunctionEventInvokeConfig").await?;
    let input: EventInvokeConfigInput = serde_json::from_slice(&body).map_err(|e| {
        ApiError::invalid_parameter(format!("could not parse the request body: {e}"))
    })?;
    let base = match (merge, &function.event_invoke) {
        (true, Some(existing)) => existing.clone(),
        (true, None) => return Err(not_configured(&function.name)),
        (false, _) => EventInvokeConfig::default(),
    };
    let config = apply(&f, &function.account, base, input)?;
    let updated = f
        .control
        .set_event_invoke(&function.key(), Some(config.clone()))
        .await?;
    Ok(axum::Json(output(&updated, &config, f.control.region())).into_response())
}

pub(crate) async fn put(
    State(f): State<Shared>,
    name: FunctionPath,
    Query(q): Query<QualifierQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    write(f, name, q.qualifier, headers, body, false).await
}

pub(crate) async fn update(
    State(f): State<Shared>,
    name: FunctionPath,
    Query(q): Query<QualifierQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    write(f, name, q.qualifier, headers, body, true).await
}

pub(crate) async fn get(
    State(f): State<Shared>,
    name: FunctionPath,
    Query(q): Query<QualifierQuery>,
) -> Result<Response, ApiError> {
    let function = resolve(&f, &name, q.qualifier.as_deref())?;
    let config = function
        .event_invoke
        .clone()
        .ok_or_else(|| not_configured(&function.name))?;
    Ok(axum::Json(output(&function, &config, f.control.region())).into_response())
}

pub(crate) async fn delete(
    State(f): State<Shared>,
    name: FunctionPath,
    Query(q): Query<QualifierQuery>,
) -> Result<Response, ApiError> {
    let function = resolve(&f, &name, q.qualifier.as_deref())?;
    if function.event_invoke.is_none() {
        return Err(not_configured(&function.name));
    }
    f.control.set_event_invoke(&function.key(), None).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(crate) async fn list(
    State(f): State<Shared>,
    name: FunctionPath,
) -> Result<Response, ApiError> {
    let function = resolve(&f, &name, None)?;
    let configs: Vec<Value> = function
        .event_invoke
        .iter()
        .map(|c| output(&function, c, f.control.region()))
        .collect();
    Ok(axum::Json(json!({ "FunctionEventInvokeConfigs": configs })).into_response())
}
