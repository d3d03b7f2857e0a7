//! nimbus's own API under `/nimbus/v1`, for the `nimbus` CLI and operators: invocation logs,
//! usage reports, asynchronous events and their dead letters, queue depths, function code,
//! health, and Prometheus metrics at `/metrics`. Errors use the rest-json shape Lambda's API
//! uses (`X-Amzn-ErrorType` and `{"Type","Message"}`), which the CLI already reads.
//!
//! Every answer is about the caller's account. The node's operator (the default account's
//! administrators) also creates and lists accounts, reads another account's usage, and reads
//! the node-wide metrics.

#![forbid(unsafe_code)]

use std::sync::Arc;

use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use nimbus_control::ControlPlane;
use nimbus_events::{AsyncInvoker, EventMeta};
use nimbus_identity::{Caller, Identity};
use nimbus_queue::sqs::SqsQueues;
use nimbus_store::TelemetryStore;
use nimbus_types::name::{DEFAULT_ACCOUNT, scoped, unscoped};
use nimbus_types::{FunctionRef, Pricing, UsageReport};
use serde::Deserialize;

/// What nimbus's API reaches.
pub struct Nimbus {
    pub control: Arc<ControlPlane>,
    pub telemetry: Arc<dyn TelemetryStore>,
    pub events: Arc<AsyncInvoker>,
    pub queues: Arc<SqsQueues>,
    pub identity: Arc<Identity>,
    pub pricing: Pricing,
    /// `{"available": [runtime…], "aliases": {runtime: runtime it runs on}}`.
    pub runtimes: serde_json::Value,
}

type Shared = Arc<Nimbus>;

/// nimbus's routes.
pub fn router(nimbus: Arc<Nimbus>) -> Router {
    Router::new()
        .route(
            "/nimbus/v1/health",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/nimbus/v1/functions/{name}/logs", get(logs))
        .route("/nimbus/v1/functions/{name}/code", get(download_code))
        .route("/nimbus/v1/functions/{name}/events", get(events))
        .route("/nimbus/v1/functions/{name}/metrics", get(function_metrics))
        .route(
            "/nimbus/v1/functions/{name}/events/{id}/replay",
            post(replay),
        )
        .route("/nimbus/v1/usage", get(usage))
        .route(
            "/nimbus/v1/accounts",
            get(list_accounts).post(create_account),
        )
        .route("/nimbus/v1/queues", get(queues))
        .route("/nimbus/v1/queues/{name}/messages", get(peek_messages))
        .route(
            "/nimbus/v1/runtimes",
            get(|State(f): State<Shared>| async move { Json(f.runtimes.clone()) }),
        )
        .route("/metrics", get(metrics))
        .with_state(nimbus)
}

/// An error of nimbus's API.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "ResourceNotFoundException", message)
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValueException",
            message,
        )
    }

    /// A failure inside the node: logged in full, reported without internals.
    fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ServiceException",
            "The service encountered an internal error.",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        nimbus_aws_wire::envelope::rest_json(self.status, self.code, &self.message, &[])
    }
}

impl nimbus_aws_wire::ErrorEnvelope for ApiError {
    fn too_large(limit: u64, operation: &str) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestTooLargeException",
            format!("Request must be smaller than {limit} bytes for the {operation} operation"),
        )
    }

    fn malformed(message: String) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContentException",
            message,
        )
    }

    fn unknown_operation(_: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "UnknownOperationException",
            "Unknown operation",
        )
    }

    fn unauthenticated(error: &nimbus_aws_wire::sigv4::AuthError) -> Self {
        let (status, code) = nimbus_aws_wire::auth_code(error);
        Self::new(status, code, error.to_string())
    }

    fn access_denied(message: String) -> Self {
        Self::new(StatusCode::FORBIDDEN, "AccessDeniedException", message)
    }
}

impl From<nimbus_types::InvalidParameter> for ApiError {
    fn from(e: nimbus_types::InvalidParameter) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValueException",
            e.to_string(),
        )
    }
}

impl From<nimbus_control::Error> for ApiError {
    fn from(e: nimbus_control::Error) -> Self {
        match e {
            nimbus_control::Error::FunctionNotFound(arn) => {
                Self::not_found(format!("Function not found: {arn}"))
            }
            nimbus_control::Error::Invalid(invalid) => invalid.into(),
            other => Self::internal(nimbus_types::error_chain(&other)),
        }
    }
}

impl From<nimbus_store::Error> for ApiError {
    fn from(e: nimbus_store::Error) -> Self {
        Self::internal(nimbus_types::error_chain(&e))
    }
}

impl From<nimbus_queue::Error> for ApiError {
    fn from(e: nimbus_queue::Error) -> Self {
        Self::internal(nimbus_types::error_chain(&e))
    }
}

impl From<nimbus_queue::sqs::Error> for ApiError {
    fn from(e: nimbus_queue::sqs::Error) -> Self {
        Self::internal(nimbus_types::error_chain(&e))
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        Self::internal(e)
    }
}

#[derive(Debug, Deserialize)]
struct LogsQuery {
    /// Return entries after this sequence number (a cursor from a previous answer).
    after: Option<u64>,
    limit: Option<usize>,
}

/// The key of a function of the caller's account named in a path (by name or ARN).
fn function_key(caller: &Caller, name: &str) -> Result<(String, String), ApiError> {
    let reference = FunctionRef::parse(name)?;
    if reference
        .account
        .as_deref()
        .is_some_and(|a| a != caller.account)
    {
        return Err(ApiError::not_found(format!("Function not found: {name}")));
    }
    Ok((scoped(&caller.account, &reference.name), reference.name))
}

/// Refuses callers other than the node's operator (the default account's).
fn operator_only(caller: &Caller) -> Result<(), ApiError> {
    if caller.account == DEFAULT_ACCOUNT {
        Ok(())
    } else {
        Err(<ApiError as nimbus_aws_wire::ErrorEnvelope>::access_denied(
            format!(
                "User: {} is not authorized to perform this operation: only the node's operator may",
                caller.arn()
            ),
        ))
    }
}

async fn logs(
    State(f): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (key, _) = function_key(&caller, &name)?;
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    let telemetry = f.telemetry.clone();
    let after = q.after.unwrap_or(0);
    let mut entries =
        tokio::task::spawn_blocking(move || telemetry.logs(&key, after, limit)).await??;
    for e in &mut entries {
        e.function = unscoped(&e.function).1.to_owned();
    }
    let next = entries.last().map_or(after, |e| e.seq);
    Ok(Json(
        serde_json::json!({ "entries": entries, "next": next }),
    ))
}

#[derive(Debug, Deserialize)]
struct UsageQuery {
    /// Unix time in milliseconds; records from then on are counted.
    since_ms: Option<i64>,
    /// List this function's individual usage records instead of the report.
    function: Option<String>,
    /// The account to report on (the operator's choice; others get their own).
    account: Option<String>,
}

async fn usage(
    State(f): State<Shared>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<UsageQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let since_ms = q.since_ms.unwrap_or(0);
    let telemetry = f.telemetry.clone();
    if let Some(function) = q.function {
        let (key, _) = function_key(&caller, &function)?;
        let mut records = tokio::task::spawn_blocking(move || {
            telemetry.usage_records(&key, since_ms, MAX_USAGE_RECORDS)
        })
        .await??;
        for r in &mut records {
            r.function = unscoped(&r.function).1.to_owned();
        }
        return Ok(Json(serde_json::json!({ "records": records })));
    }
    let account = match q.account {
        Some(a) if a != caller.account => {
            operator_only(&caller)?;
            if !f.identity.accounts().iter().any(|x| x.id == a) {
                return Err(ApiError::not_found(format!("no account {a}")));
            }
            a
        }
        _ => caller.account.clone(),
    };
    let totals = tokio::task::spawn_blocking(move || telemetry.usage_totals(since_ms)).await??;
    let mine = totals
        .into_iter()
        .filter_map(|(key, t)| {
            let (owner, name) = unscoped(&key);
            (owner == account).then(|| (name.to_owned(), t))
        })
        .collect();
    let mut report = serde_json::to_value(UsageReport::from_totals(since_ms, mine, f.pricing))
        .unwrap_or_default();
    report["account"] = serde_json::Value::from(account);
    Ok(Json(report))
}

/// The most individual usage records one answer lists.
const MAX_USAGE_RECORDS: usize = 10_000;

/// A function's asynchronous events: what waits, what is in flight, what was dead-lettered.
async fn events(
    State(f): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (key, name) = function_key(&caller, &name)?;
    let invoker = &f.events;
    let queue = invoker.queue();
    let pending = queue.counts(&nimbus_events::async_queue(&key))?;
    let dead = queue.counts(&nimbus_events::dead_letter_queue(&key))?;
    let letters = invoker.dead_letters(&key, 1000)?;
    let letters: Vec<serde_json::Value> = letters
        .into_iter()
        .map(|d| {
            let meta = EventMeta::of(&d);
            serde_json::json!({
                "id": d.id,
                "request_id": meta.as_ref().map(|m| &m.request_id),
                "attempts": meta.as_ref().map(|m| m.attempts),
                "condition": meta.as_ref().and_then(|m| m.condition.as_ref()),
                "error": meta.as_ref().and_then(|m| m.error.as_ref()),
                "enqueued_ms": meta.as_ref().map(|m| m.enqueued_ms),
                "payload": String::from_utf8_lossy(&d.body),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({
        "function": name,
        "queued": pending.visible + pending.delayed,
        "in_flight": pending.in_flight,
        "dead_lettered": dead.visible + dead.delayed + dead.in_flight,
        "dead_letters": letters,
    })))
}

/// Sends a dead-lettered event back to its function.
async fn replay(
    State(f): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (key, name) = function_key(&caller, &name)?;
    if f.control.function(&key).is_none() {
        return Err(ApiError::not_found(format!(
            "Function not found: {}",
            f.control.arn(&key)
        )));
    }
    if !f.events.replay(&key, &id).await? {
        return Err(ApiError::not_found(format!(
            "no dead-lettered event {id} for {name}"
        )));
    }
    Ok(Json(serde_json::json!({ "replayed": id })))
}

/// The account's queues with how many messages are visible, in flight and delayed.
async fn queues(
    State(f): State<Shared>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(
        serde_json::json!({ "queues": f.queues.depths(&caller.account)? }),
    ))
}

#[derive(Debug, Deserialize)]
struct PeekQuery {
    limit: Option<usize>,
}

/// A queue's messages, oldest first, read without being received: their receive counts and
/// visibility stay as they were.
async fn peek_messages(
    State(f): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Query(q): Query<PeekQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let limit = q.limit.unwrap_or(10).clamp(1, 100);
    let Some(messages) = f.queues.peek(&caller.account, &name, limit)? else {
        return Err(ApiError::not_found(format!("no queue {name}")));
    };
    let messages: Vec<serde_json::Value> = messages
        .into_iter()
        .map(|d| {
            serde_json::json!({
                "id": d.id,
                "sent_ms": d.sent_ms,
                "receive_count": d.receive_count,
                "body": String::from_utf8_lossy(&d.body),
            })
        })
        .collect();
    Ok(Json(
        serde_json::json!({ "queue": name, "messages": messages }),
    ))
}

#[derive(Debug, Deserialize)]
struct MetricsQuery {
    /// Unix time in milliseconds of the first period (default: an hour ago).
    since_ms: Option<i64>,
    /// Seconds per point (default 60).
    period_s: Option<i64>,
}

/// The most usage records one metrics answer reads; a busier window is cut at this many
/// (oldest first) and says so.
const MAX_METRIC_RECORDS: usize = 200_000;
/// The most points one metrics answer has.
const MAX_METRIC_POINTS: i64 = 1440;

/// A function's invocations, errors, cold starts and durations per period, from its usage
/// records: what charts are drawn from.
async fn function_metrics(
    State(f): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Query(q): Query<MetricsQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (key, name) = function_key(&caller, &name)?;
    if f.control.function(&key).is_none() {
        return Err(ApiError::not_found(format!(
            "Function not found: {}",
            f.control.arn(&key)
        )));
    }
    let now = nimbus_types::time::now_ms();
    let since = q.since_ms.unwrap_or(now - 3_600_000);
    let period_s = q.period_s.unwrap_or(60);
    if !(1..=86_400).contains(&period_s) {
        return Err(ApiError::bad_request("period_s must be 1 to 86400"));
    }
    if since > now || since < 0 {
        return Err(ApiError::bad_request(
            "since_ms must be a time in the past, in milliseconds since 1970",
        ));
    }
    let period_ms = period_s * 1000;
    let points = (now - since) / period_ms + 1;
    if points > MAX_METRIC_POINTS {
        return Err(ApiError::bad_request(format!(
            "{points} points asked for; at most {MAX_METRIC_POINTS}: a longer period_s or a later since_ms"
        )));
    }
    let telemetry = f.telemetry.clone();
    let lookup = key.clone();
    let records = tokio::task::spawn_blocking(move || {
        telemetry.usage_records(&lookup, since, MAX_METRIC_RECORDS)
    })
    .await??;
    let truncated = records.len() >= MAX_METRIC_RECORDS;
    #[derive(Default)]
    struct Period {
        invocations: u64,
        errors: u64,
        cold_starts: u64,
        durations_us: Vec<u64>,
        inits_us: Vec<u64>,
    }
    let mut periods: Vec<Period> = (0..points).map(|_| Period::default()).collect();
    for r in &records {
        let Some(p) = usize::try_from((r.time_ms - since) / period_ms)
            .ok()
            .and_then(|i| periods.get_mut(i))
        else {
            continue;
        };
        p.invocations += 1;
        p.errors += u64::from(r.outcome != nimbus_types::OutcomeKind::Success);
        p.cold_starts += u64::from(r.cold);
        p.durations_us.push(r.duration_us);
        if let Some(init) = r.init_duration_us {
            p.inits_us.push(init);
        }
    }
    let ms = |us: Option<u64>| us.map(|v| v as f64 / 1000.0);
    let points: Vec<serde_json::Value> = periods
        .into_iter()
        .enumerate()
        .map(|(i, mut p)| {
            p.durations_us.sort_unstable();
            p.inits_us.sort_unstable();
            serde_json::json!({
                "time_ms": since + i as i64 * period_ms,
                "invocations": p.invocations,
                "errors": p.errors,
                "cold_starts": p.cold_starts,
                "p50_ms": ms(percentile(&p.durations_us, 50)),
                "p99_ms": ms(percentile(&p.durations_us, 99)),
                "max_ms": ms(p.durations_us.last().copied()),
                "init_p50_ms": ms(percentile(&p.inits_us, 50)),
                "init_max_ms": ms(p.inits_us.last().copied()),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({
        "function": name,
        "since_ms": since,
        "period_s": period_s,
        "points": points,
        "throttles_since_start": f.control.manager().throttles(&key),
        "truncated": truncated,
    })))
}

/// The nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], pct: usize) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (sorted.len() * pct).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

/// The code of `$LATEST` as a zip, where GetFunction's `Code.Location` points.
async fn download_code(
    State(f): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let (key, _) = function_key(&caller, &name)?;
    let function = f.control.resolve(&key, None)?;
    let zip = f.control.code_zip(&function).await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/zip")], zip).into_response())
}

/// The node's accounts (the operator's view).
async fn list_accounts(
    State(f): State<Shared>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<serde_json::Value>, ApiError> {
    operator_only(&caller)?;
    Ok(Json(
        serde_json::json!({ "accounts": f.identity.accounts() }),
    ))
}

#[derive(Debug, Deserialize)]
struct NewAccount {
    name: String,
}

/// Creates an account and its administrator key (the operator's).
async fn create_account(
    State(f): State<Shared>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    operator_only(&caller)?;
    let input: NewAccount = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("expected {{\"name\": \"…\"}}: {e}")))?;
    let identity = f.identity.clone();
    let (account, key) = tokio::task::spawn_blocking(move || identity.create_account(&input.name))
        .await?
        .map_err(|e| match e {
            nimbus_identity::Error::Invalid(m) => ApiError::bad_request(m),
            nimbus_identity::Error::Exists(m) => {
                ApiError::new(StatusCode::CONFLICT, "ResourceConflictException", m)
            }
            other => ApiError::internal(other),
        })?;
    tracing::info!(account = %account.id, name = %account.name, "account created");
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({
            "account": account,
            "access_key_id": key.access_key_id,
            "secret_access_key": key.secret_access_key,
        })),
    )
        .into_response())
}

/// `GET /metrics`: Prometheus's text format, node-wide: the operator's.
async fn metrics(State(f): State<Shared>, Extension(caller): Extension<Caller>) -> Response {
    if let Err(e) = operator_only(&caller) {
        return e.into_response();
    }
    let mut response = f.control.manager().render_metrics().into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_are_nearest_rank() {
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(percentile(&[7], 99), Some(7));
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50), Some(50));
        assert_eq!(percentile(&v, 99), Some(99));
        assert_eq!(percentile(&[1, 2, 3], 50), Some(2));
    }
}
