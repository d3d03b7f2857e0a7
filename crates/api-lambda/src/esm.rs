//! Lambda's `/2015-03-31/event-source-mappings` API over [`nimbus_events::esm`].

use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use nimbus_events::esm::{Error, MappingChange};
use nimbus_types::queue::EventSourceMapping;
use serde::Deserialize;
use serde_json::{Value, json};

use nimbus_identity::Caller;

use crate::error::ApiError;
use crate::{Lambda, Shared, parse_json, read_body};

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::NotFound(_) => ApiError::not_found(e.to_string()),
            Error::Invalid(invalid) => invalid.into(),
            Error::Control(e) => e.into(),
            Error::Store(e) => e.into(),
            Error::Poisoned => ApiError::internal(e),
        }
    }
}

fn output(f: &Lambda, m: &EventSourceMapping, state: Option<&str>) -> Value {
    let state = state.unwrap_or(if m.enabled { "Enabled" } else { "Disabled" });
    let mut out = json!({
        "UUID": m.uuid,
        "EventSourceArn": m.event_source_arn,
        "FunctionArn": f.control.arn(&m.function),
        "BatchSize": m.batch_size,
        "MaximumBatchingWindowInSeconds": m.max_batching_window_s,
        "LastModified": m.last_modified_ms as f64 / 1000.0,
        "State": state,
        "StateTransitionReason": "USER_INITIATED",
        "FunctionResponseTypes": if m.report_batch_item_failures { vec!["ReportBatchItemFailures"] } else { vec![] },
    });
    if let Some(s) = &m.stream {
        out["StartingPosition"] = json!(s.starting_position);
        out["MaximumRetryAttempts"] = json!(s.maximum_retry_attempts);
        out["MaximumRecordAgeInSeconds"] = json!(s.maximum_record_age_s);
        out["BisectBatchOnFunctionError"] = json!(s.bisect_batch_on_function_error);
        out["ParallelizationFactor"] = json!(1);
        out["DestinationConfig"] = json!({
            "OnFailure": s.on_failure.as_ref().map_or_else(|| json!({}), |d| json!({ "Destination": d })),
        });
    }
    out
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct MappingInput {
    event_source_arn: Option<String>,
    function_name: Option<String>,
    enabled: Option<bool>,
    batch_size: Option<i64>,
    maximum_batching_window_in_seconds: Option<i64>,
    function_response_types: Option<Vec<String>>,
    starting_position: Option<String>,
    maximum_retry_attempts: Option<i64>,
    maximum_record_age_in_seconds: Option<i64>,
    bisect_batch_on_function_error: Option<bool>,
    destination_config: Option<Value>,
}

impl MappingInput {
    fn change(self) -> MappingChange {
        MappingChange {
            function_name: self.function_name,
            enabled: self.enabled,
            batch_size: self.batch_size,
            maximum_batching_window_s: self.maximum_batching_window_in_seconds,
            function_response_types: self.function_response_types,
            starting_position: self.starting_position,
            maximum_retry_attempts: self.maximum_retry_attempts,
            maximum_record_age_s: self.maximum_record_age_in_seconds,
            bisect_batch_on_function_error: self.bisect_batch_on_function_error,
            on_failure: self.destination_config.map(|d| {
                d.get("OnFailure")
                    .and_then(|f| f.get("Destination"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            }),
        }
    }
}

const MAX_MAPPING_REQUEST_BYTES: usize = 64 * 1024;

pub(crate) async fn create(
    State(f): State<Shared>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(
        &headers,
        body,
        MAX_MAPPING_REQUEST_BYTES,
        "CreateEventSourceMapping",
    )
    .await?;
    let mut input: MappingInput = parse_json(&body)?;
    let arn = input
        .event_source_arn
        .take()
        .ok_or_else(|| ApiError::invalid_parameter("EventSourceArn is required"))?;
    let mapping = f
        .event_sources
        .create(&caller.account, &arn, input.change())?;
    Ok((StatusCode::ACCEPTED, axum::Json(output(&f, &mapping, None))).into_response())
}

pub(crate) async fn get(
    State(f): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(uuid): Path<String>,
) -> Result<Response, ApiError> {
    let mapping = f.event_sources.get(&caller.account, &uuid)?;
    Ok(axum::Json(output(&f, &mapping, None)).into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    #[serde(rename = "FunctionName")]
    function_name: Option<String>,
    #[serde(rename = "EventSourceArn")]
    event_source_arn: Option<String>,
}

pub(crate) async fn list(
    State(f): State<Shared>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let function = match &q.function_name {
        Some(name) => {
            let reference = nimbus_types::FunctionRef::parse(name)?;
            let key = nimbus_types::name::scoped(&caller.account, &reference.name);
            // `name:qualifier` lists that version's or alias's mappings only.
            Some(match reference.qualifier {
                Some(nimbus_types::Qualifier::Other(q)) => format!("{key}:{q}"),
                _ => key,
            })
        }
        None => None,
    };
    let all = f.event_sources.list(
        &caller.account,
        function.as_deref(),
        q.event_source_arn.as_deref(),
    )?;
    let out: Vec<Value> = all.iter().map(|m| output(&f, m, None)).collect();
    Ok(axum::Json(json!({ "EventSourceMappings": out })).into_response())
}

pub(crate) async fn update(
    State(f): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(uuid): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(
        &headers,
        body,
        MAX_MAPPING_REQUEST_BYTES,
        "UpdateEventSourceMapping",
    )
    .await?;
    let input: MappingInput = parse_json(&body)?;
    let mapping = f
        .event_sources
        .update(&caller.account, &uuid, input.change())?;
    Ok((StatusCode::ACCEPTED, axum::Json(output(&f, &mapping, None))).into_response())
}

pub(crate) async fn delete(
    State(f): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(uuid): Path<String>,
) -> Result<Response, ApiError> {
    let mapping = f.event_sources.delete(&caller.account, &uuid)?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(output(&f, &mapping, Some("Deleting"))),
    )
        .into_response())
}
