//! The Lambda Runtime API, served by the worker to one sandbox on the listener inside the
//! sandbox's network namespace (`AWS_LAMBDA_RUNTIME_API=127.0.0.1:9001`).
//!
//! One invocation at a time: `next` hands the runtime the pending invocation, `response` or
//! `error` completes it. Requests that do not fit that state machine are refused with the
//! status codes Lambda documents (400 for an unknown request id, 403 for a second answer to
//! the same invocation, 413 for a response over 6 MB).

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use bytes::Bytes;
use nimbus_types::limits::MAX_SYNC_PAYLOAD_BYTES;
use nimbus_types::{FunctionError, ResponseStream, StreamPart};
use tokio::sync::{Notify, mpsc, oneshot};

/// An invocation waiting for the runtime to take it.
pub(crate) struct Pending {
    pub request_id: String,
    pub payload: Bytes,
    pub deadline_ms: i64,
    pub function_arn: String,
    pub trace_id: String,
    pub client_context: Option<String>,
    pub reply: oneshot::Sender<Reply>,
    /// Where a streamed response goes, if the caller takes one.
    pub stream: Option<ResponseStream>,
}

/// How the runtime answered an invocation.
#[derive(Debug)]
pub(crate) enum Reply {
    Response(Bytes),
    Error(Bytes, FunctionError),
    /// The response was over this many bytes.
    TooLarge(usize),
}

struct Current {
    request_id: String,
    reply: Option<oneshot::Sender<Reply>>,
    stream: Option<ResponseStream>,
}

/// State shared between the sandbox's HTTP server and the worker.
pub(crate) struct RuntimeApi {
    next: tokio::sync::Mutex<mpsc::Receiver<Pending>>,
    current: Mutex<Option<Current>>,
    /// Signalled when the runtime first asks for an invocation: its init is done.
    pub ready: Notify,
    pub ready_flag: std::sync::atomic::AtomicBool,
    pub init_error: Mutex<Option<(Bytes, FunctionError)>>,
    pub init_failed: Notify,
}

impl RuntimeApi {
    pub(crate) fn new() -> (Arc<Self>, mpsc::Sender<Pending>) {
        let (tx, rx) = mpsc::channel(1);
        let api = Arc::new(Self {
            next: tokio::sync::Mutex::new(rx),
            current: Mutex::new(None),
            ready: Notify::new(),
            ready_flag: std::sync::atomic::AtomicBool::new(false),
            init_error: Mutex::new(None),
            init_failed: Notify::new(),
        });
        (api, tx)
    }
}

type Shared = Arc<RuntimeApi>;

pub(crate) fn router(api: Shared) -> Router {
    Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(response),
        )
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(init_error))
        // A restored environment's after-restore hooks failed: for this sandbox, as an init
        // failure is.
        .route("/2018-06-01/runtime/restore/error", post(init_error))
        .fallback(|| async {
            runtime_error(StatusCode::NOT_FOUND, "InvalidRequest", "Unknown path")
        })
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(api)
}

fn runtime_error(status: StatusCode, error_type: &str, message: &str) -> Response {
    let body = serde_json::json!({ "errorType": error_type, "errorMessage": message });
    (status, axum::Json(body)).into_response()
}

fn accepted() -> Response {
    (
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({ "status": "OK" })),
    )
        .into_response()
}

async fn next(State(api): State<Shared>) -> Response {
    if !api
        .ready_flag
        .swap(true, std::sync::atomic::Ordering::AcqRel)
    {
        api.ready.notify_waiters();
        api.ready.notify_one();
    }
    let mut queue = api.next.lock().await;
    let Some(pending) = queue.recv().await else {
        return runtime_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Runtime.Shutdown",
            "The sandbox is shutting down",
        );
    };
    drop(queue);
    if let Ok(mut current) = api.current.lock() {
        *current = Some(Current {
            request_id: pending.request_id.clone(),
            reply: Some(pending.reply),
            stream: pending.stream,
        });
    }
    let mut response = Response::new(Body::from(pending.payload));
    let h = response.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    let pairs = [
        ("Lambda-Runtime-Aws-Request-Id", pending.request_id.as_str()),
        (
            "Lambda-Runtime-Invoked-Function-Arn",
            pending.function_arn.as_str(),
        ),
        ("Lambda-Runtime-Trace-Id", pending.trace_id.as_str()),
    ];
    for (name, value) in pairs {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    }
    h.insert(
        "Lambda-Runtime-Deadline-Ms",
        HeaderValue::from(pending.deadline_ms),
    );
    if let Some(v) = pending
        .client_context
        .and_then(|c| HeaderValue::from_str(&c).ok())
    {
        h.insert("Lambda-Runtime-Client-Context", v);
    }
    response
}

/// Takes the reply channel (and the response stream, if any) of the current invocation if
/// `id` names it.
fn take_reply(
    api: &RuntimeApi,
    id: &str,
) -> Result<(oneshot::Sender<Reply>, Option<ResponseStream>), Box<Response>> {
    let mut current = api.current.lock().map_err(|_| {
        Box::new(runtime_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Runtime.Internal",
            "state poisoned",
        ))
    })?;
    match current.as_mut() {
        Some(c) if c.request_id == id => c
            .reply
            .take()
            .map(|reply| (reply, c.stream.take()))
            .ok_or_else(|| {
                Box::new(runtime_error(
                    StatusCode::FORBIDDEN,
                    "InvalidStateTransition",
                    "The invocation already has a response",
                ))
            }),
        _ => Err(Box::new(runtime_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestID",
            "Invalid request ID",
        ))),
    }
}

async fn read_limited(body: Body) -> Result<Bytes, ()> {
    axum::body::to_bytes(body, MAX_SYNC_PAYLOAD_BYTES)
        .await
        .map_err(|_| ())
}

async fn response(
    State(api): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (reply, stream) = match take_reply(&api, &id) {
        Ok(taken) => taken,
        Err(refusal) => return *refusal,
    };
    let streaming = headers
        .get("Lambda-Runtime-Function-Response-Mode")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|m| m.eq_ignore_ascii_case("streaming"));
    if streaming {
        return streamed_response(&headers, body, reply, stream).await;
    }
    match read_limited(body).await {
        Ok(bytes) => {
            let _ = reply.send(Reply::Response(bytes));
            accepted()
        }
        Err(()) => {
            let _ = reply.send(Reply::TooLarge(MAX_SYNC_PAYLOAD_BYTES));
            runtime_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                &format!("Exceeded maximum allowed payload size ({MAX_SYNC_PAYLOAD_BYTES} bytes)."),
            )
        }
    }
}

/// The most a streamed response may carry, as on Lambda (whose buffered limit stays 6 MB).
pub(crate) const MAX_STREAMED_BYTES: usize = 20 << 20;

/// Reads a response the runtime streams (`Lambda-Runtime-Function-Response-Mode: streaming`):
/// each piece goes to the caller's stream as it arrives, or, for a caller that takes the
/// response whole, into one payload under the buffered limit. An error part-way comes in the
/// body's trailers (`Lambda-Runtime-Function-Error-Type`, `…-Error-Body` in base64), as the
/// Runtime API defines them.
async fn streamed_response(
    headers: &HeaderMap,
    mut body: Body,
    reply: oneshot::Sender<Reply>,
    stream: Option<ResponseStream>,
) -> Response {
    use http_body_util::BodyExt;
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // Fixed at the start: a caller that goes away part-way does not turn the rest of the
    // response into a buffered one (it is read, counted and dropped).
    let streaming = stream.is_some();
    let limit = if streaming {
        MAX_STREAMED_BYTES
    } else {
        MAX_SYNC_PAYLOAD_BYTES
    };
    let mut sink = stream.map(|s| s.0);
    if let Some(tx) = &sink
        && tx.send(StreamPart::Head { content_type }).await.is_err()
    {
        sink = None;
    }
    let mut buffered = Vec::new();
    let mut total = 0usize;
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            // The runtime broke the connection off mid-stream (or sent trailers over hyper's
            // limit).
            let error =
                FunctionError::new("Runtime.StreamError", "the response stream was cut off");
            let _ = reply.send(Reply::Error(error.to_json(), error));
            return StatusCode::BAD_REQUEST.into_response();
        };
        let frame = match frame.into_data() {
            Ok(data) => {
                total += data.len();
                if total > limit {
                    let _ = reply.send(Reply::TooLarge(limit));
                    return runtime_error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "RequestEntityTooLarge",
                        &format!("Exceeded maximum allowed payload size ({limit} bytes)."),
                    );
                }
                match &sink {
                    Some(tx) => {
                        if tx.send(StreamPart::Chunk(data)).await.is_err() {
                            sink = None;
                        }
                    }
                    None if streaming => {}
                    None => buffered.extend_from_slice(&data),
                }
                continue;
            }
            Err(frame) => frame,
        };
        if let Ok(t) = frame.into_trailers() {
            trailers = Some(t);
        }
    }
    let failure = trailers.as_ref().and_then(|t| {
        let error_type = t
            .get("Lambda-Runtime-Function-Error-Type")
            .and_then(|v| v.to_str().ok())?;
        let detail = t
            .get("Lambda-Runtime-Function-Error-Body")
            .and_then(|v| v.to_str().ok())
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .map(Bytes::from)
            .unwrap_or_default();
        let mut typed = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(error_type) {
            typed.insert("Lambda-Runtime-Function-Error-Type", v);
        }
        Some(parse_error(&typed, &detail))
    });
    let _ = match failure {
        Some((payload, error)) => reply.send(Reply::Error(payload, error)),
        None => reply.send(Reply::Response(Bytes::from(buffered))),
    };
    accepted()
}

/// Reads a runtime's error report: Lambda's error JSON, or anything, with the type header.
fn parse_error(headers: &HeaderMap, body: &Bytes) -> (Bytes, FunctionError) {
    let header_type = headers
        .get("Lambda-Runtime-Function-Error-Type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let error_type = field("errorType")
        .or(header_type)
        .unwrap_or_else(|| "Unhandled".to_owned());
    let error_message = field("errorMessage").unwrap_or_default();
    let error = FunctionError::new(error_type, error_message);
    let payload = match parsed {
        Some(serde_json::Value::Object(_)) => body.clone(),
        _ => error.to_json(),
    };
    (payload, error)
}

async fn error(
    State(api): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (reply, _) = match take_reply(&api, &id) {
        Ok(taken) => taken,
        Err(refusal) => return *refusal,
    };
    let Ok(bytes) = read_limited(body).await else {
        let _ = reply.send(Reply::TooLarge(MAX_SYNC_PAYLOAD_BYTES));
        return runtime_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            "Error payload too large",
        );
    };
    let (payload, error) = parse_error(&headers, &bytes);
    let _ = reply.send(Reply::Error(payload, error));
    accepted()
}

async fn init_error(State(api): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    if api.ready_flag.load(std::sync::atomic::Ordering::Acquire) {
        return runtime_error(
            StatusCode::FORBIDDEN,
            "InvalidStateTransition",
            "init/error is only allowed before the first invocation",
        );
    }
    let Ok(bytes) = read_limited(body).await else {
        return runtime_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            "Error payload too large",
        );
    };
    let parsed = parse_error(&headers, &bytes);
    if let Ok(mut slot) = api.init_error.lock() {
        *slot = Some(parsed);
    }
    api.init_failed.notify_one();
    accepted()
}

/// How many connections one sandbox may hold open to its Runtime API at once. A runtime uses
/// one or two; a function that opens connections in a loop waits for its own to close (the
/// rest queue in the kernel's backlog) instead of taking the node's descriptors.
pub(crate) const MAX_CONNECTIONS: usize = 32;

/// A sandbox's Runtime API listener that accepts at most [`MAX_CONNECTIONS`] at a time.
pub(crate) struct BoundedListener {
    inner: tokio::net::TcpListener,
    permits: Arc<tokio::sync::Semaphore>,
}

impl BoundedListener {
    pub(crate) fn new(inner: tokio::net::TcpListener) -> Self {
        Self {
            inner,
            permits: Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS)),
        }
    }
}

/// A connection holding one of its listener's permits until it closes.
pub(crate) struct BoundedStream {
    stream: tokio::net::TcpStream,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl axum::serve::Listener for BoundedListener {
    type Io = BoundedStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            // The semaphore is never closed, so acquiring only waits.
            let Ok(permit) = self.permits.clone().acquire_owned().await else {
                std::future::pending::<()>().await;
                continue;
            };
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    return (
                        BoundedStream {
                            stream,
                            _permit: permit,
                        },
                        addr,
                    );
                }
                // Out of descriptors or a connection reset before it was accepted: wait a
                // little rather than spin.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl tokio::io::AsyncRead for BoundedStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for BoundedStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
