//! Event source mappings from queues to functions: Lambda's
//! `/2015-03-31/event-source-mappings` API, and the pollers that read each mapped queue in
//! batches, invoke the function with SQS's `{"Records": […]}` event, and delete what succeeded.
//!
//! A failed batch is left alone: its messages come back after the queue's visibility timeout,
//! and after the queue's maxReceiveCount they go to its dead-letter queue. With
//! `ReportBatchItemFailures`, only the messages the function names as failed come back.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use nimbus_store::MappingStore;
use nimbus_types::queue::EventSourceMapping;
use nimbus_types::{InvalidParameter, InvokeRequest};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::{Frontend, Shared, read_body, resolve};

pub struct EventSources {
    store: Arc<dyn MappingStore>,
    mappings: RwLock<HashMap<String, EventSourceMapping>>,
    /// Mappings with a batch in flight: one at a time per mapping.
    busy: Mutex<HashSet<String>>,
}

impl EventSources {
    pub fn load(store: Arc<dyn MappingStore>) -> nimbus_store::Result<Self> {
        let mappings = store
            .mappings()?
            .into_iter()
            .map(|m| (m.uuid.clone(), m))
            .collect();
        Ok(Self {
            store,
            mappings: RwLock::new(mappings),
            busy: Mutex::new(HashSet::new()),
        })
    }

    fn get(&self, uuid: &str) -> Option<EventSourceMapping> {
        self.mappings.read().ok()?.get(uuid).cloned()
    }

    fn save(&self, mapping: EventSourceMapping) -> Result<(), ApiError> {
        self.store.put_mapping(&mapping)?;
        if let Ok(mut all) = self.mappings.write() {
            all.insert(mapping.uuid.clone(), mapping);
        }
        Ok(())
    }
}

fn not_found(uuid: &str) -> ApiError {
    ApiError::not_found(format!(
        "The resource you requested does not exist. (Service: Lambda, UUID: {uuid})"
    ))
}

fn output(f: &Frontend, m: &EventSourceMapping, state: &str) -> Value {
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
    if state == "Enabled" || state == "Disabled" {
        out["State"] = json!(if m.enabled { "Enabled" } else { "Disabled" });
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
}

fn apply(
    f: &Shared,
    mapping: &mut EventSourceMapping,
    input: MappingInput,
) -> Result<(), ApiError> {
    if let Some(name) = input.function_name {
        let function = resolve(f, &name, None)?;
        mapping.function = function.name.clone();
    }
    if let Some(n) = input.batch_size {
        if !(1..=10_000).contains(&n) {
            return Err(InvalidParameter::range("batchSize", &n, 1, 10_000).into());
        }
        mapping.batch_size = n as u32;
    }
    if let Some(n) = input.maximum_batching_window_in_seconds {
        if !(0..=300).contains(&n) {
            return Err(
                InvalidParameter::range("maximumBatchingWindowInSeconds", &n, 0, 300).into(),
            );
        }
        mapping.max_batching_window_s = n as u32;
    }
    if mapping.batch_size > 10 && mapping.max_batching_window_s == 0 {
        return Err(ApiError::invalid_parameter(
            "Maximum batch window in seconds must be greater than 0 if maximum batch size is greater than 10",
        ));
    }
    if let Some(enabled) = input.enabled {
        mapping.enabled = enabled;
    }
    if let Some(types) = input.function_response_types {
        if types.iter().any(|t| t != "ReportBatchItemFailures") {
            return Err(InvalidParameter::constraint(
                "functionResponseTypes",
                Some(&format!("{types:?}")),
                "Member must satisfy enum value set: [ReportBatchItemFailures]",
            )
            .into());
        }
        mapping.report_batch_item_failures = !types.is_empty();
    }
    // As on Lambda: a batch must stay invisible for as long as the function may run.
    if let (Some(queues), Some(function)) = (Some(&f.queues), f.control.function(&mapping.function))
        && let Some(queue) = queues
            .queue_name_of_arn(&mapping.event_source_arn)
            .and_then(|n| queues.queue_config(&n))
        && queue.visibility_timeout_s < function.timeout_s
    {
        return Err(ApiError::invalid_parameter(format!(
            "Queue visibility timeout: {} seconds is less than Function timeout: {} seconds",
            queue.visibility_timeout_s, function.timeout_s
        )));
    }
    mapping.last_modified_ms = nimbus_types::time::now_ms();
    Ok(())
}

pub(crate) async fn create(
    State(f): State<Shared>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(&headers, body, 64 * 1024, "CreateEventSourceMapping").await?;
    let input: MappingInput = serde_json::from_slice(&body).map_err(|e| {
        ApiError::invalid_parameter(format!("could not parse the request body: {e}"))
    })?;
    let arn = input
        .event_source_arn
        .clone()
        .ok_or_else(|| ApiError::invalid_parameter("EventSourceArn is required"))?;
    let queues = &f.queues;
    if queues.queue_name_of_arn(&arn).is_none() {
        return Err(ApiError::invalid_parameter(format!(
            "Invalid EventSourceArn {arn}: only existing queues (arn:aws:sqs:…) are supported as event sources"
        )));
    }
    if input.function_name.is_none() {
        return Err(ApiError::invalid_parameter("FunctionName is required"));
    }
    let mut mapping = EventSourceMapping {
        uuid: uuid::Uuid::new_v4().to_string(),
        function: String::new(),
        event_source_arn: arn,
        batch_size: 10,
        max_batching_window_s: 0,
        enabled: true,
        report_batch_item_failures: false,
        last_modified_ms: 0,
    };
    apply(&f, &mut mapping, input)?;
    f.event_sources.save(mapping.clone())?;
    let state = if mapping.enabled {
        "Enabled"
    } else {
        "Disabled"
    };
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(output(&f, &mapping, state)),
    )
        .into_response())
}

pub(crate) async fn get(
    State(f): State<Shared>,
    Path(uuid): Path<String>,
) -> Result<Response, ApiError> {
    let mapping = f.event_sources.get(&uuid).ok_or_else(|| not_found(&uuid))?;
    Ok(axum::Json(output(&f, &mapping, "Enabled")).into_response())
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
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let function = match &q.function_name {
        Some(name) => Some(nimbus_types::FunctionRef::parse(name)?.name),
        None => None,
    };
    let mut all: Vec<EventSourceMapping> = f
        .event_sources
        .mappings
        .read()
        .map(|m| m.values().cloned().collect())
        .unwrap_or_default();
    all.retain(|m| function.as_ref().is_none_or(|f| &m.function == f));
    all.retain(|m| {
        q.event_source_arn
            .as_ref()
            .is_none_or(|a| &m.event_source_arn == a)
    });
    all.sort_by(|a, b| a.uuid.cmp(&b.uuid));
    let out: Vec<Value> = all.iter().map(|m| output(&f, m, "Enabled")).collect();
    Ok(axum::Json(json!({ "EventSourceMappings": out })).into_response())
}

pub(crate) async fn update(
    State(f): State<Shared>,
    Path(uuid): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(&headers, body, 64 * 1024, "UpdateEventSourceMapping").await?;
    let input: MappingInput = serde_json::from_slice(&body).map_err(|e| {
        ApiError::invalid_parameter(format!("could not parse the request body: {e}"))
    })?;
    let sources = &f.event_sources;
    let mut mapping = sources.get(&uuid).ok_or_else(|| not_found(&uuid))?;
    apply(&f, &mut mapping, input)?;
    sources.save(mapping.clone())?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(output(&f, &mapping, "Enabled")),
    )
        .into_response())
}

pub(crate) async fn delete(
    State(f): State<Shared>,
    Path(uuid): Path<String>,
) -> Result<Response, ApiError> {
    let sources = &f.event_sources;
    let mapping = sources.get(&uuid).ok_or_else(|| not_found(&uuid))?;
    sources.store.delete_mapping(&uuid)?;
    if let Ok(mut all) = sources.mappings.write() {
        all.remove(&uuid);
    }
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(output(&f, &mapping, "Deleting")),
    )
        .into_response())
}

/// SQS's message record in a Lambda event.
fn record(d: &nimbus_queue::Delivery, arn: &str, region: &str) -> Value {
    json!({
        "messageId": d.id,
        "receiptHandle": d.id,
        "body": String::from_utf8_lossy(&d.body),
        "attributes": {
            "ApproximateReceiveCount": d.receive_count.to_string(),
            "SentTimestamp": d.sent_ms.to_string(),
            "SenderId": nimbus_types::name::DEFAULT_ACCOUNT,
            "ApproximateFirstReceiveTimestamp": nimbus_types::time::now_ms().to_string(),
        },
        "messageAttributes": lambda_attributes(d),
        "md5OfBody": crate::sqs::md5_hex(&d.body),
        "eventSource": "aws:sqs",
        "eventSourceARN": arn,
        "awsRegion": region,
    })
}

/// Message attributes in the shape Lambda's SQS records carry them.
fn lambda_attributes(d: &nimbus_queue::Delivery) -> Value {
    let mut out = serde_json::Map::new();
    if let Some(stored) = d.meta.get("attributes").and_then(Value::as_object) {
        for (name, a) in stored {
            out.insert(
                name.clone(),
                json!({
                    "stringValue": a.get("StringValue"),
                    "binaryValue": a.get("BinaryValue"),
                    "stringListValues": [],
                    "binaryListValues": [],
                    "dataType": a.get("DataType"),
                }),
            );
        }
    }
    Value::Object(out)
}

/// How long a mapping's first receive of a batch waits for a message.
const FIRST_RECEIVE_WAIT: Duration = Duration::from_secs(1);

/// Runs one batch of a mapping.
async fn run_batch(f: &Frontend, mapping: &EventSourceMapping) {
    let Some(queues) = Some(&f.queues) else {
        return;
    };
    let Some(queue) = queues
        .queue_name_of_arn(&mapping.event_source_arn)
        .and_then(|name| queues.queue_config(&name))
    else {
        return;
    };
    let Some(function) = f.control.function(&mapping.function) else {
        return;
    };
    let visibility = queue.visibility_timeout_s as u64;
    let window = Duration::from_secs(mapping.max_batching_window_s as u64);
    let mut batch = Vec::new();
    let mut started = std::time::Instant::now();
    while batch.len() < mapping.batch_size as usize {
        let want = (mapping.batch_size as usize - batch.len()).min(10);
        // The first receive is a long poll, woken as soon as a message becomes visible; the
        // mapping counts as busy meanwhile, so the poll loop does not start another batch.
        let wait = if batch.is_empty() {
            FIRST_RECEIVE_WAIT
        } else {
            window.saturating_sub(started.elapsed())
        };
        match queues
            .receive_messages(&queue, want, visibility, wait)
            .await
        {
            Ok(got) if got.is_empty() => break,
            Ok(got) => {
                // The batching window starts with the first message.
                if batch.is_empty() {
                    started = std::time::Instant::now();
                }
                batch.extend(got)
            }
            Err(_) => break,
        }
        if started.elapsed() >= window {
            break;
        }
    }
    if batch.is_empty() {
        return;
    }
    // A mapping disabled or deleted during the long poll runs nothing more; what it leased
    // returns to the queue after the visibility timeout.
    if !f
        .event_sources
        .get(&mapping.uuid)
        .is_some_and(|m| m.enabled)
    {
        return;
    }
    let records: Vec<Value> = batch
        .iter()
        .map(|d| record(d, &mapping.event_source_arn, queues.region()))
        .collect();
    let event = Bytes::from(serde_json::to_vec(&json!({ "Records": records })).unwrap_or_default());
    let request = InvokeRequest {
        request_id: uuid::Uuid::new_v4().to_string(),
        payload: event,
        client_context: None,
        async_attempt: None,
    };
    let outcome = match f.manager.invoke(&function, request).await {
        Ok(outcome) => outcome,
        Err(e) => {
            tracing::warn!(mapping = %mapping.uuid, error = %e, "event source batch could not run");
            return;
        }
    };
    if outcome.error.is_some() {
        // The whole batch returns to the queue after its visibility timeout.
        return;
    }
    let failed: HashSet<String> = if mapping.report_batch_item_failures {
        serde_json::from_slice::<Value>(&outcome.payload)
            .ok()
            .and_then(|v| v.get("batchItemFailures").cloned())
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|f| {
                f.get("itemIdentifier")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .collect()
    } else {
        HashSet::new()
    };
    for d in &batch {
        if !failed.contains(&d.id) && queues.delete_delivery(d).is_err() {
            // The message comes back after its visibility timeout and runs again.
            tracing::error!(mapping = %mapping.uuid, "could not delete a processed message");
        }
    }
}

impl Frontend {
    /// Polls every enabled mapping until `shutdown` resolves.
    pub async fn run_event_sources(
        self: Arc<Self>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        loop {
            {
                let sources = &self.event_sources;
                let enabled: Vec<EventSourceMapping> = sources
                    .mappings
                    .read()
                    .map(|m| m.values().filter(|m| m.enabled).cloned().collect())
                    .unwrap_or_default();
                for mapping in enabled {
                    let claimed = sources
                        .busy
                        .lock()
                        .map(|mut b| b.insert(mapping.uuid.clone()))
                        .unwrap_or(false);
                    if !claimed {
                        continue;
                    }
                    let frontend = self.clone();
                    let sources = sources.clone();
                    tokio::spawn(async move {
                        run_batch(&frontend, &mapping).await;
                        if let Ok(mut busy) = sources.busy.lock() {
                            busy.remove(&mapping.uuid);
                        }
                    });
                }
            }
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    }
}
