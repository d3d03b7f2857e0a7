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
}

pub(crate) async fn usage(
    State(f): State<Shared>,
    Query(q): Query<UsageQuery>,
) -> Result<Json<UsageReport>, ApiError> {
    let since_ms = q.since_ms.unwrap_or(0);
    let telemetry = f.telemetry.clone();
    let records = tokio::task::spawn_blocking(move || telemetry.usage(since_ms))
        .await
        .map_err(ApiError::internal)??;
    Ok(Json(UsageReport::build(since_ms, &records, f.pricing)))
}
