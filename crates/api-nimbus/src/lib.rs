//! nimbus's own API, for the `nimbus` CLI: invocation logs and usage reports.

use axum::Json;
use axum::extract::{Path, Query, State};
use nimbus_types::{FunctionRef, UsageReport};
use serde::Deserialize;

use crate::Shared;
use crate::error::ApiError;

#[derive(Debug, Deserialize)]
pub(crate) struct LogsQuery {
    /// Return entries after this sequence number (a cursor from a previous answer).
    after: Option<u64>,
    limit: Option<usize>,
}

pub(crate) async fn logs(
    State(f): State<Shared>,
    Path(name): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let function = FunctionRef::parse(&name)?;
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    let telemetry = f.telemetry.clone();
    let after = q.after.unwrap_or(0);
    let entries = tokio::task::spawn_blocking(move || telemetry.logs(&function.name, after, limit))
        .await
        .map_err(ApiError::internal)??;
    let next = entries.last().map_or(after, |e| e.seq);
    Ok(Json(
        serde_json::json!({ "entries": entries, "next": next }),
    ))
}

#[derive(Debug, Deserialize)]
pub(crate) struct UsageQuery {
    /// Unix time in milliseconds; records from then on are counted.
    since_ms: Option<i64>,
    /// List this function's individual usage records instead of the report.
    function: Option<String>,
}

pub(crate) async fn usage(
    State(f): State<Shared>,
    Query(q): Query<UsageQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let since_ms = q.since_ms.unwrap_or(0);
    let telemetry = f.telemetry.clone();
    if let Some(function) = q.function {
        let function = FunctionRef::parse(&function)?.name;
        let records = tokio::task::spawn_blocking(move || {
            telemetry.usage_records(&function, since_ms, MAX_USAGE_RECORDS)
        })
        .await
        .map_err(ApiError::internal)??;
        return Ok(Json(serde_json::json!({ "records": records })));
    }
    let totals = tokio::task::spawn_blocking(move || telemetry.usage_totals(since_ms))
        .await
        .map_err(ApiError::internal)??;
    let report = UsageReport::from_totals(since_ms, totals, f.pricing);
    Ok(Json(serde_json::to_value(report).unwrap_or_default()))
}

/// The most individual usage records one answer lists.
const MAX_USAGE_RECORDS: usize = 10_000;

/// A function's asynchronous events: what waits, what is in flight, what was dead-lettered.
pub(crate) async fn events(
    State(f): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let function = FunctionRef::parse(&name)?;
    let invoker = &f.events;
    let queue = invoker.queue();
    let pending = queue.counts(&nimbus_events::async_queue(&function.name))?;
    let dead = queue.counts(&nimbus_events::dead_letter_queue(&function.name))?;
    let letters = invoker.dead_letters(&function.name, 1000)?;
    let letters: Vec<serde_json::Value> = letters
        .into_iter()
        .map(|d| {
            serde_json::json!({
                "id": d.id,
                "request_id": d.meta.get("request_id"),
                "attempts": d.meta.get("attempts"),
                "condition": d.meta.get("condition"),
                "error": d.meta.get("error"),
                "enqueued_ms": d.meta.get("enqueued_ms"),
                "payload": String::from_utf8_lossy(&d.body),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({
        "function": function.name,
        "queued": pending.visible + pending.delayed,
        "in_flight": pending.in_flight,
        "dead_lettered": dead.visible + dead.delayed + dead.in_flight,
        "dead_letters": letters,
    })))
}

/// Sends a dead-lettered event back to its function.
pub(crate) async fn replay(
    State(f): State<Shared>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let function = FunctionRef::parse(&name)?;
    if f.control.function(&function.name).is_none() {
        return Err(ApiError::function_not_found(&f.control.arn(&function.name)));
    }
    if !f.events.replay(&function.name, &id).await? {
        return Err(ApiError::not_found(format!(
            "no dead-lettered event {id} for {}",
            function.name
        )));
    }
    Ok(Json(serde_json::json!({ "replayed": id })))
}

/// Every queue with how many messages are visible, in flight and delayed.
pub(crate) async fn queues(State(f): State<Shared>) -> Result<Json<serde_json::Value>, ApiError> {
    let queues = &f.queues;
    Ok(Json(serde_json::json!({ "queues": queues.depths() })))
}
