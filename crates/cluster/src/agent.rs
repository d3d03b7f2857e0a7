//! The worker's side: `nimbus worker --join URL`. It serves the node's calls (prepare, init,
//! invoke, release) with the worker it hosts, fetches code packages from the node by digest
//! into its own code store, registers, and heartbeats.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use base64::Engine;
use bytes::Bytes;
use nimbus_store::{CodeStore, LocalCodeStore};
use nimbus_types::identity::{CredentialIssuer, SessionCredentials};
use nimbus_types::{FunctionConfig, InvokeRequest};
use nimbus_worker::{Error, SandboxId, Worker};

use crate::http::{Client, Failure};
use crate::node::{InitBody, encode_outcome};
use crate::{AUTH_HEADER, Heartbeat, Registered, Registration, Secret, WireError};

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub name: String,
    /// The node's URL, e.g. `http://127.0.0.1:9000`.
    pub join: String,
    pub capacity_mb: u64,
    pub secret: Secret,
}

pub struct Agent {
    config: AgentConfig,
    worker: Arc<dyn Worker>,
    code: Arc<LocalCodeStore>,
    client: Client,
    /// Forwards sandboxes' requests for the node's APIs (unsigned: they carry their own).
    proxy: crate::http::Proxy,
    credentials: Arc<HandedCredentials>,
    sandboxes: Mutex<HashSet<SandboxId>>,
    /// One download at a time; a second request for the same package then finds it stored.
    downloads: tokio::sync::Mutex<()>,
}

type Shared = Arc<Agent>;

/// The credentials the node hands with each sandbox it asks for, kept for the sandbox's start
/// (which asks its worker's [`CredentialIssuer`]), by function version and revision.
#[derive(Default)]
pub struct HandedCredentials {
    by_function: Mutex<HashMap<String, SessionCredentials>>,
}

impl HandedCredentials {
    fn key(function: &FunctionConfig) -> String {
        format!("{}@{}", function.qualified_name(), function.revision_id)
    }

    fn hand(&self, function: &FunctionConfig, credentials: SessionCredentials) {
        if let Ok(mut all) = self.by_function.lock() {
            let now = nimbus_types::time::now_ms();
            all.retain(|_, c| c.expiration_ms > now);
            all.insert(Self::key(function), credentials);
        }
    }
}

impl CredentialIssuer for HandedCredentials {
    fn issue(&self, function: &FunctionConfig) -> Option<SessionCredentials> {
        self.by_function
            .lock()
            .ok()?
            .get(&Self::key(function))
            .cloned()
    }
}

/// How long a worker waits for its name to be released by a predecessor that died.
const NAME_TAKEN_PATIENCE: Duration = Duration::from_secs(10);

fn wire_error(e: &Error) -> Response {
    let (status, kind) = match e {
        Error::InvalidCode(_) => (StatusCode::BAD_REQUEST, "invalid_code"),
        Error::UnknownSandbox(_) => (StatusCode::NOT_FOUND, "unknown_sandbox"),
        Error::Lost(_) | Error::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    let body = WireError {
        kind: kind.to_owned(),
        message: e.to_string(),
    };
    (status, axum::Json(body)).into_response()
}

/// What a heartbeat's answer means.
enum Beat {
    /// The node declared this worker lost: join again with no sandboxes.
    Forgotten,
    /// The node refuses the secret.
    Refused,
    Failed(String),
}

/// Why joining failed for good.
#[derive(Debug)]
enum JoinError {
    /// The node answered no; retrying will not help.
    Refused(String),
    /// Another live worker has the name.
    Conflict(String),
    /// The node could not be reached or failed; try again.
    Retry(String),
}

impl Agent {
    pub fn new(
        config: AgentConfig,
        worker: Arc<dyn Worker>,
        code: Arc<LocalCodeStore>,
        credentials: Arc<HandedCredentials>,
    ) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            client: Client::new(config.secret.clone())?,
            proxy: crate::http::Proxy::new(&config.secret)?,
            credentials,
            config,
            worker,
            code,
            sandboxes: Mutex::new(HashSet::new()),
            downloads: tokio::sync::Mutex::new(()),
        }))
    }

    /// What this worker's sandboxes reach at their services port (and at their alias of the
    /// node's port): the node's APIs, to which each request is forwarded over the TLS link,
    /// marked as a sandbox's so that the node authenticates it whatever its own settings. The
    /// cluster's routes are not forwarded.
    pub fn services(self: &Arc<Self>) -> Router {
        Router::new()
            .fallback(forward_to_node)
            .with_state(self.clone())
    }

    fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/v1/status", get(status))
            .route("/v1/prepare", post(prepare))
            .route("/v1/forget", post(forget))
            .route("/v1/sandboxes", post(init))
            .route("/v1/sandboxes/{id}/invoke", post(invoke))
            .route("/v1/sandboxes/{id}", delete(release))
            .layer(axum::extract::DefaultBodyLimit::max(16 << 20))
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                authenticate,
            ))
            .with_state(self.clone())
    }

    /// Puts the function's code package and its layers' in the local store, downloading them
    /// from the node.
    async fn ensure_code(&self, function: &FunctionConfig) -> Result<(), Error> {
        self.ensure_package(&function.code.sha256).await?;
        for layer in &function.layers {
            self.ensure_package(&layer.code.sha256).await?;
        }
        Ok(())
    }

    async fn ensure_package(&self, sha: &str) -> Result<(), Error> {
        if self.code.contains(sha) {
            return Ok(());
        }
        let _one = self.downloads.lock().await;
        if self.code.contains(sha) {
            return Ok(());
        }
        let reply = self
            .client
            .send(
                Method::GET,
                &self.config.join,
                &format!("/nimbus/cluster/v1/code/{sha}"),
                &[],
                Bytes::new(),
                nimbus_types::limits::MAX_ZIP_BYTES + 1,
                Some(Duration::from_secs(120)),
            )
            .await
            .map_err(|e| Error::Internal(format!("downloading code {sha}: {e}")))?;
        if !reply.status.is_success() {
            return Err(Error::Internal(format!(
                "downloading code {sha}: the node answered {}",
                reply.status
            )));
        }
        let code = self.code.clone();
        let stored = tokio::task::spawn_blocking(move || code.put_zip(&reply.body))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(|e| match e {
                nimbus_store::Error::InvalidCode(m) => Error::InvalidCode(m),
                other => Error::Internal(other.to_string()),
            })?;
        if stored.sha256 != sha {
            let _ = self.code.remove(&stored.sha256);
            return Err(Error::Internal(format!(
                "the package downloaded for {sha} has digest {}",
                stored.sha256
            )));
        }
        tracing::info!(code = %sha, bytes = stored.size, "code package downloaded");
        Ok(())
    }

    async fn join(&self, incarnation: &str, address: &str) -> Result<Registered, JoinError> {
        let body = serde_json::to_vec(&Registration {
            name: self.config.name.clone(),
            incarnation: incarnation.to_owned(),
            address: address.to_owned(),
            capacity_mb: self.config.capacity_mb,
        })
        .map_err(|e| JoinError::Refused(e.to_string()))?;
        let reply = self
            .client
            .send(
                Method::POST,
                &self.config.join,
                "/nimbus/cluster/v1/workers",
                &[("content-type", "application/json".into())],
                Bytes::from(body),
                1 << 20,
                Some(Duration::from_secs(10)),
            )
            .await
            .map_err(|e| match e {
                Failure::WrongPeer => JoinError::Refused(e.to_string()),
                e => JoinError::Retry(e.to_string()),
            })?;
        if reply.status.is_success() {
            return serde_json::from_slice(&reply.body)
                .map_err(|e| JoinError::Retry(format!("malformed answer: {e}")));
        }
        let message = serde_json::from_slice::<WireError>(&reply.body)
            .map(|e| e.message)
            .unwrap_or_else(|_| format!("status {}", reply.status));
        if reply.status == StatusCode::CONFLICT {
            Err(JoinError::Conflict(message))
        } else if reply.status.is_client_error() {
            Err(JoinError::Refused(message))
        } else {
            Err(JoinError::Retry(message))
        }
    }

    /// Registers, retrying while the node is unreachable; fails if the node refuses. A name
    /// still held by a worker that just died is retried for a while: the node frees it once
    /// that worker's heartbeats are overdue.
    async fn join_until_accepted(&self, address: &str) -> anyhow::Result<(String, Registered)> {
        let incarnation = uuid::Uuid::new_v4().to_string();
        let mut warned = false;
        let started = std::time::Instant::now();
        loop {
            match self.join(&incarnation, address).await {
                Ok(r) => return Ok((incarnation, r)),
                Err(JoinError::Conflict(m)) if started.elapsed() < NAME_TAKEN_PATIENCE => {
                    if !warned {
                        tracing::warn!(error = %m, "the name is taken; waiting for the node to release it");
                        warned = true;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(JoinError::Refused(m) | JoinError::Conflict(m)) => {
                    anyhow::bail!("the node at {} refused this worker: {m}", self.config.join)
                }
                Err(JoinError::Retry(m)) => {
                    if !warned {
                        tracing::warn!(node = %self.config.join, error = %m, "cannot join yet; retrying");
                        warned = true;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    async fn heartbeat(&self, incarnation: &str) -> Result<(), Beat> {
        let status = self.worker.status();
        let body = serde_json::to_vec(&Heartbeat {
            incarnation: incarnation.to_owned(),
            capacity_mb: self.config.capacity_mb,
            sandboxes: status.sandboxes,
            snapshots: status.snapshots,
        })
        .unwrap_or_default();
        let reply = self
            .client
            .send(
                Method::POST,
                &self.config.join,
                &format!("/nimbus/cluster/v1/workers/{}/heartbeat", self.config.name),
                &[("content-type", "application/json".into())],
                Bytes::from(body),
                1 << 16,
                Some(Duration::from_secs(2)),
            )
            .await
            .map_err(|e| Beat::Failed(e.to_string()))?;
        match reply.status {
            s if s.is_success() => Ok(()),
            StatusCode::GONE => Err(Beat::Forgotten),
            StatusCode::UNAUTHORIZED => Err(Beat::Refused),
            s => Err(Beat::Failed(format!("status {s}"))),
        }
    }

    /// Shuts down every sandbox: the node forgot them.
    async fn drop_sandboxes(&self) {
        let all: Vec<SandboxId> = self
            .sandboxes
            .lock()
            .map(|mut s| s.drain().collect())
            .unwrap_or_default();
        for id in all {
            self.worker.release(id).await;
        }
    }

    /// Serves the node and stays registered until `shutdown` resolves. `on_joined` runs once
    /// the node has accepted the worker.
    pub async fn run(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
        on_joined: impl FnOnce(&Registered),
    ) -> anyhow::Result<()> {
        let address = listener.local_addr()?.to_string();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        // TLS only: the node never talks to a worker in plaintext.
        let acceptor = crate::tls::Identity::derive(&self.config.secret)?.acceptor()?;
        let served = crate::tls::Served {
            tls: Some((acceptor, self.router())),
            plain: None,
        };
        let server = tokio::spawn(crate::tls::serve(
            listener,
            served,
            stopped(stop_rx.clone()),
        ));
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let result = self
            .stay_joined(&address, stopped(stop_rx.clone()), on_joined)
            .await;
        self.drop_sandboxes().await;
        if result.is_err() {
            server.abort();
        } else {
            let _ = server.await;
        }
        result
    }

    async fn stay_joined(
        &self,
        address: &str,
        stop: impl std::future::Future<Output = ()>,
        on_joined: impl FnOnce(&Registered),
    ) -> anyhow::Result<()> {
        tokio::pin!(stop);
        let (mut incarnation, registered) = tokio::select! {
            r = self.join_until_accepted(address) => r?,
            _ = &mut stop => return Ok(()),
        };
        on_joined(&registered);
        let period = Duration::from_millis(registered.heartbeat_ms.clamp(100, 10_000));
        let mut tick = tokio::time::interval(period);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = tick.tick() => {}
            }
            match self.heartbeat(&incarnation).await {
                Ok(()) => {
                    if failing {
                        tracing::info!("heartbeats reach the node again");
                        failing = false;
                    }
                }
                Err(Beat::Refused) => {
                    anyhow::bail!("the node no longer accepts this worker's cluster secret")
                }
                Err(Beat::Forgotten) => {
                    tracing::warn!("the node declared this worker lost; joining again");
                    self.drop_sandboxes().await;
                    let (fresh, _) = tokio::select! {
                        r = self.join_until_accepted(address) => r?,
                        _ = &mut stop => break,
                    };
                    incarnation = fresh;
                }
                Err(Beat::Failed(e)) => {
                    if !failing {
                        tracing::warn!(error = %e, "heartbeat failed");
                        failing = true;
                    }
                }
            }
        }
        // Leave, so the node stops placing sandboxes here at once.
        let _ = self
            .client
            .send(
                Method::DELETE,
                &self.config.join,
                &format!("/nimbus/cluster/v1/workers/{}", self.config.name),
                &[],
                Bytes::new(),
                1 << 16,
                Some(Duration::from_secs(2)),
            )
            .await;
        Ok(())
    }
}

async fn authenticate(State(a): State<Shared>, request: Request, next: Next) -> Response {
    let header = request
        .headers()
        .get(AUTH_HEADER)
        .and_then(|v| v.to_str().ok());
    match a
        .config
        .secret
        .verify(header, request.method().as_str(), request.uri().path())
    {
        Ok(()) => next.run(request).await,
        Err(reason) => {
            tracing::warn!(path = %request.uri().path(), reason = %reason, "refused a request");
            let body = WireError {
                kind: "unauthorized".into(),
                message: reason,
            };
            (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response()
        }
    }
}

async fn status(State(a): State<Shared>) -> Response {
    axum::Json(a.worker.status()).into_response()
}

/// A request the node should never have sent: 400, and nothing done.
fn malformed(what: impl std::fmt::Display) -> Response {
    let body = WireError {
        kind: "malformed".to_owned(),
        message: format!("malformed request from the node: {what}"),
    };
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| Box::new(malformed(e)))
}

async fn prepare(State(a): State<Shared>, body: Bytes) -> Response {
    let function: FunctionConfig = match parse(&body) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let result = match a.ensure_code(&function).await {
        Ok(()) => a.worker.prepare(&function).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => wire_error(&e),
    }
}

/// Drops what the worker keeps for a version or a function (its snapshots).
async fn forget(State(a): State<Shared>, body: Bytes) -> Response {
    match std::str::from_utf8(&body) {
        Ok(qualified) if !qualified.is_empty() && qualified.len() <= 512 => {
            a.worker.forget(qualified).await;
            StatusCode::NO_CONTENT.into_response()
        }
        _ => malformed("expected a function or version name of 1 to 512 bytes of UTF-8"),
    }
}

async fn init(State(a): State<Shared>, body: Bytes) -> Response {
    let body: InitBody = match parse(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    if let Some(credentials) = body.credentials {
        a.credentials.hand(&body.function, credentials);
    }
    let result = match a.ensure_code(&body.function).await {
        Ok(()) => a.worker.init(&body.function, body.init_type).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(init) => {
            if let Ok(mut s) = a.sandboxes.lock() {
                s.insert(init.sandbox);
            }
            axum::Json(init).into_response()
        }
        Err(e) => wire_error(&e),
    }
}

async fn invoke(
    State(a): State<Shared>,
    Path(id): Path<SandboxId>,
    headers: HeaderMap,
    payload: Bytes,
) -> Response {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let Some(request_id) = text("x-nimbus-request-id") else {
        return malformed("no x-nimbus-request-id");
    };
    let client_context = text("x-nimbus-client-context")
        .and_then(|c| base64::engine::general_purpose::STANDARD.decode(c).ok())
        .and_then(|c| String::from_utf8(c).ok());
    let async_attempt = text("x-nimbus-async-attempt").and_then(|a| a.parse().ok());
    let http = match text("x-nimbus-http") {
        None => None,
        Some(head) => {
            let call = base64::engine::general_purpose::STANDARD
                .decode(head)
                .ok()
                .and_then(|h| serde_json::from_slice::<nimbus_types::http::HttpCall>(&h).ok());
            match call {
                Some(call) => Some(call),
                None => return malformed("an x-nimbus-http that is not a call"),
            }
        }
    };
    let (payload, http) = match http {
        Some(call) => (
            Bytes::new(),
            Some(nimbus_types::http::HttpCall {
                body: payload,
                ..call
            }),
        ),
        None => (payload, None),
    };
    let request = InvokeRequest {
        request_id,
        payload,
        client_context,
        async_attempt,
        http,
        stream: None,
        // Checked as a qualifier: it becomes part of the ARN the function is told.
        qualifier: text("x-nimbus-qualifier").filter(|q| nimbus_types::Qualifier::parse(q).is_ok()),
    };
    match a.worker.invoke(id, request).await {
        Ok(outcome) => encode_outcome(outcome).into_response(),
        Err(e) => wire_error(&e),
    }
}

async fn release(State(a): State<Shared>, Path(id): Path<SandboxId>) -> Response {
    let known = a.sandboxes.lock().is_ok_and(|mut s| s.remove(&id));
    if known {
        a.worker.release(id).await;
    }
    StatusCode::NO_CONTENT.into_response()
}

/// Reads the cluster secret for a worker: from a file, or the environment variable's text.
pub fn secret_from(file: Option<&std::path::Path>, env: Option<&str>) -> anyhow::Result<Secret> {
    match (file, env) {
        (Some(path), _) => Secret::read(path),
        (None, Some(text)) => Secret::from_text(text).context("in NIMBUS_CLUSTER_SECRET"),
        (None, None) => anyhow::bail!(
            "no cluster secret: pass --secret-file (the node's DATA/cluster.secret) or set \
             NIMBUS_CLUSTER_SECRET"
        ),
    }
}

async fn forward_to_node(State(a): State<Shared>, request: Request) -> Response {
    if request.uri().path().starts_with("/nimbus/cluster/") {
        return (
            StatusCode::NOT_FOUND,
            [("x-amzn-errortype", "UnknownOperationException")],
            axum::Json(serde_json::json!({
                "Type": "User", "Message": "Unknown operation",
            })),
        )
            .into_response();
    }
    match a.proxy.forward(&a.config.join, request).await {
        Ok(response) => response,
        Err(e) => {
            tracing::warn!(error = %e, "could not forward a sandbox's request to the node");
            (
                StatusCode::BAD_GATEWAY,
                axum::Json(serde_json::json!({
                    "Type": "Service", "Message": "the node could not be reached",
                })),
            )
                .into_response()
        }
    }
}
