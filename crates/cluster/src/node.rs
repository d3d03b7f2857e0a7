//! The node's side of the fleet: workers register and heartbeat here, download code packages
//! by digest, and are declared lost when their heartbeats stop.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use nimbus_manager::WorkerManager;
use nimbus_store::CodeStore;
use nimbus_types::identity::{CredentialIssuer, SessionCredentials};
use nimbus_types::{CodeRef, FunctionConfig, InitType, InvokeOutcome, InvokeRequest};
use nimbus_worker::{Error, Result, SandboxId, SandboxInit, Worker, WorkerStatus};
use serde::{Deserialize, Serialize};

use crate::http::{Client, Failure};
use crate::{AUTH_HEADER, Heartbeat, Registered, Registration, Secret, WireError};

/// Lists the functions whose code a worker that joins should fetch ahead of any cold start.
pub type FunctionList = Arc<dyn Fn() -> Vec<Arc<FunctionConfig>> + Send + Sync>;

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// How often workers heartbeat.
    pub heartbeat: Duration,
    /// A worker silent for this long is lost.
    pub heartbeat_timeout: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_millis(500),
            heartbeat_timeout: Duration::from_secs(3),
        }
    }
}

struct Member {
    incarnation: String,
    worker_id: u64,
    address: String,
    last_seen: Instant,
}

pub struct Cluster {
    config: ClusterConfig,
    secret: Secret,
    manager: Arc<WorkerManager>,
    code: Arc<dyn CodeStore>,
    functions: FunctionList,
    client: Client,
    members: Mutex<HashMap<String, Member>>,
    /// Mints the credentials of a sandbox's role, handed to the worker with the function.
    credentials: Option<Arc<dyn CredentialIssuer>>,
}

type Shared = Arc<Cluster>;

fn refuse(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    let body = WireError {
        kind: kind.to_owned(),
        message: message.into(),
    };
    (status, axum::Json(body)).into_response()
}

impl Cluster {
    pub fn new(
        config: ClusterConfig,
        secret: Secret,
        manager: Arc<WorkerManager>,
        code: Arc<dyn CodeStore>,
        functions: FunctionList,
        credentials: Option<Arc<dyn CredentialIssuer>>,
    ) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            config,
            client: Client::new(secret.clone())?,
            secret,
            manager,
            code,
            functions,
            members: Mutex::new(HashMap::new()),
            credentials,
        }))
    }

    /// The routes workers call, under `/nimbus/cluster/v1`, and the fleet's status.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/nimbus/cluster/v1/workers", post(register))
            .route(
                "/nimbus/cluster/v1/workers/{name}",
                axum::routing::delete(leave),
            )
            .route(
                "/nimbus/cluster/v1/workers/{name}/heartbeat",
                post(heartbeat),
            )
            .route("/nimbus/cluster/v1/code/{sha256}", get(code))
            // Workers' routes: over TLS only.
            .route_layer(axum::middleware::from_fn(crate::tls::require_tls))
            .route("/nimbus/v1/cluster", get(status))
            .with_state(self.clone())
    }

    fn check(&self, headers: &HeaderMap, method: &Method, path: &str) -> Result<(), Box<Response>> {
        let header = headers.get(AUTH_HEADER).and_then(|v| v.to_str().ok());
        self.secret
            .verify(header, method.as_str(), path)
            .map_err(|reason| {
                tracing::warn!(path, reason = %reason, "refused a cluster request");
                Box::new(refuse(StatusCode::UNAUTHORIZED, "unauthorized", reason))
            })
    }

    /// Declares workers lost whose heartbeats stopped, until `shutdown` resolves.
    pub async fn run_monitor(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        let mut tick = tokio::time::interval(self.config.heartbeat_timeout / 6);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tick.tick() => self.expire(),
            }
        }
    }

    fn expire(&self) {
        let timeout = self.config.heartbeat_timeout;
        let lost: Vec<(String, u64)> = match self.members.lock() {
            Ok(mut members) => {
                let lost: Vec<(String, u64)> = members
                    .iter()
                    .filter(|(_, m)| m.last_seen.elapsed() > timeout)
                    .map(|(n, m)| (n.clone(), m.worker_id))
                    .collect();
                for (name, _) in &lost {
                    members.remove(name);
                }
                lost
            }
            Err(_) => Vec::new(),
        };
        for (name, id) in lost {
            let reason = format!("no heartbeat from worker {name} for {timeout:?}");
            self.manager.remove_worker(id, &reason);
        }
    }
}

async fn register(State(c): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = c.check(&headers, &Method::POST, "/nimbus/cluster/v1/workers") {
        return *r;
    }
    let Ok(reg) = serde_json::from_slice::<Registration>(&body) else {
        return refuse(StatusCode::BAD_REQUEST, "invalid", "malformed registration");
    };
    if let Err(m) = crate::validate_worker_name(&reg.name) {
        return refuse(StatusCode::BAD_REQUEST, "invalid", m);
    }
    if reg.address.parse::<std::net::SocketAddr>().is_err() {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!("invalid worker address {:?}", reg.address),
        );
    }
    if !(128..=1 << 24).contains(&reg.capacity_mb) || reg.incarnation.len() > 64 {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid",
            "capacity must be between 128 MB and 16 TB",
        );
    }
    // The same process retrying keeps its place; another process under a live name is refused;
    // a worker that restarted replaces its old self, whose sandboxes are gone.
    let replaced = match c.members.lock() {
        Ok(members) => match members.get(&reg.name) {
            Some(m) if m.incarnation == reg.incarnation => {
                let out = Registered {
                    worker_id: m.worker_id,
                    heartbeat_ms: c.config.heartbeat.as_millis() as u64,
                };
                return axum::Json(out).into_response();
            }
            Some(m) if m.last_seen.elapsed() <= c.config.heartbeat_timeout => {
                return refuse(
                    StatusCode::CONFLICT,
                    "conflict",
                    format!(
                        "a worker named {} is already registered from {} and alive; stop it or \
                         choose another --name",
                        reg.name, m.address
                    ),
                );
            }
            Some(m) => Some(m.worker_id),
            None => None,
        },
        Err(_) => None,
    };
    if let Some(old) = replaced {
        c.manager
            .remove_worker(old, "the worker registered again after a restart");
    }
    let remote = Arc::new(RemoteWorker::new(
        &reg.name,
        &reg.address,
        c.client.clone(),
        c.credentials.clone(),
    ));
    // Call back before accepting it: the worker must answer and accept the node's credentials.
    if let Err(e) = remote.fetch_status().await {
        return refuse(
            StatusCode::BAD_GATEWAY,
            "unreachable",
            format!(
                "the node could not reach the worker at {}: {e}",
                reg.address
            ),
        );
    }
    let id = c
        .manager
        .add_worker(&reg.name, remote, reg.capacity_mb, true);
    if let Ok(mut members) = c.members.lock() {
        members.insert(
            reg.name.clone(),
            Member {
                incarnation: reg.incarnation.clone(),
                worker_id: id,
                address: reg.address.clone(),
                last_seen: Instant::now(),
            },
        );
    }
    c.manager.prepare_on(id, (c.functions)());
    axum::Json(Registered {
        worker_id: id,
        heartbeat_ms: c.config.heartbeat.as_millis() as u64,
    })
    .into_response()
}

async fn heartbeat(
    State(c): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/nimbus/cluster/v1/workers/{name}/heartbeat");
    if let Err(r) = c.check(&headers, &Method::POST, &path) {
        return *r;
    }
    let Ok(beat) = serde_json::from_slice::<Heartbeat>(&body) else {
        return refuse(StatusCode::BAD_REQUEST, "invalid", "malformed heartbeat");
    };
    let known = match c.members.lock() {
        Ok(mut members) => match members.get_mut(&name) {
            Some(m) if m.incarnation == beat.incarnation && c.manager.has_worker(m.worker_id) => {
                m.last_seen = Instant::now();
                Some(m.worker_id)
            }
            _ => None,
        },
        Err(_) => None,
    };
    match known {
        Some(id) => {
            if (128..=1 << 24).contains(&beat.capacity_mb) {
                c.manager.set_capacity(id, beat.capacity_mb);
            }
            c.manager.set_snapshots(id, beat.snapshots);
            StatusCode::NO_CONTENT.into_response()
        }
        // Declared lost meanwhile: it must join again with a clean slate.
        None => refuse(
            StatusCode::GONE,
            "unknown_worker",
            format!("worker {name} is not registered; register again"),
        ),
    }
}

async fn leave(State(c): State<Shared>, Path(name): Path<String>, headers: HeaderMap) -> Response {
    let path = format!("/nimbus/cluster/v1/workers/{name}");
    if let Err(r) = c.check(&headers, &Method::DELETE, &path) {
        return *r;
    }
    let removed = c
        .members
        .lock()
        .ok()
        .and_then(|mut m| m.remove(&name))
        .map(|m| m.worker_id);
    if let Some(id) = removed {
        c.manager.remove_worker(id, "the worker left");
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn code(State(c): State<Shared>, Path(sha): Path<String>, headers: HeaderMap) -> Response {
    let path = format!("/nimbus/cluster/v1/code/{sha}");
    if let Err(r) = c.check(&headers, &Method::GET, &path) {
        return *r;
    }
    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return refuse(StatusCode::BAD_REQUEST, "invalid", "malformed digest");
    }
    let store = c.code.clone();
    let reference = CodeRef {
        sha256: sha.to_ascii_lowercase(),
        size: 0,
    };
    match tokio::task::spawn_blocking(move || store.read_zip(&reference)).await {
        Ok(Ok(zip)) => ([("content-type", "application/zip")], zip).into_response(),
        _ => refuse(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no code package {sha}"),
        ),
    }
}

#[derive(Serialize)]
struct WorkerRow {
    name: String,
    id: u64,
    remote: bool,
    address: Option<String>,
    capacity_mb: u64,
    used_mb: u64,
    free_mb: u64,
    sandboxes: u32,
    invocations: u64,
    last_heartbeat_ms: Option<u64>,
}

#[derive(Serialize)]
struct SandboxRow {
    function: String,
    worker: String,
    idle: u32,
    total: u32,
}

/// The fleet at a glance, for `nimbus status`.
async fn status(State(c): State<Shared>) -> Response {
    let members: HashMap<u64, (String, u64)> = c
        .members
        .lock()
        .map(|m| {
            m.values()
                .map(|m| {
                    (
                        m.worker_id,
                        (m.address.clone(), m.last_seen.elapsed().as_millis() as u64),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let workers: Vec<WorkerRow> = c
        .manager
        .workers()
        .into_iter()
        .map(|w| {
            let member = members.get(&w.id);
            WorkerRow {
                address: member.map(|m| m.0.clone()),
                last_heartbeat_ms: member.map(|m| m.1),
                name: w.name,
                id: w.id,
                remote: w.remote,
                capacity_mb: w.capacity_mb,
                used_mb: w.reserved_mb,
                free_mb: w.capacity_mb.saturating_sub(w.reserved_mb),
                sandboxes: w.sandboxes,
                invocations: w.invocations,
            }
        })
        .collect();
    let sandboxes: Vec<SandboxRow> = c
        .manager
        .sandbox_table()
        .into_iter()
        .map(|(function, worker, idle, total)| SandboxRow {
            function,
            worker,
            idle,
            total,
        })
        .collect();
    let account = c.manager.account();
    axum::Json(serde_json::json!({
        "workers": workers,
        "sandboxes": sandboxes,
        "concurrency": {
            "limit": account.limit,
            "unreserved": account.unreserved,
        },
    }))
    .into_response()
}

/// A worker in another process, reached over HTTP.
pub struct RemoteWorker {
    name: String,
    base: String,
    client: Client,
    credentials: Option<Arc<dyn CredentialIssuer>>,
    code: Mutex<HashSet<String>>,
    sandboxes: AtomicU32,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct InitBody {
    pub function: FunctionConfig,
    pub init_type: InitType,
    /// The credentials of the function's role for the new sandbox (over TLS, like the rest).
    #[serde(default)]
    pub credentials: Option<SessionCredentials>,
}

/// An invocation's answer travels as a 4-byte length, the outcome's JSON without its payload,
/// then the payload.
pub(crate) fn encode_outcome(mut outcome: InvokeOutcome) -> Bytes {
    // An HTTP reply's body travels where the payload would (which is then empty).
    let payload = match &mut outcome.http {
        Some(reply) => std::mem::take(&mut reply.body),
        None => std::mem::take(&mut outcome.payload),
    };
    let meta = serde_json::to_vec(&outcome).unwrap_or_default();
    let mut out = BytesMut::with_capacity(4 + meta.len() + payload.len());
    out.put_u32(meta.len() as u32);
    out.put_slice(&meta);
    out.put_slice(&payload);
    out.freeze()
}

fn decode_outcome(body: Bytes) -> Option<InvokeOutcome> {
    let len = u32::from_be_bytes(body.get(..4)?.try_into().ok()?) as usize;
    let meta = body.get(4..4 + len)?;
    let mut outcome: InvokeOutcome = serde_json::from_slice(meta).ok()?;
    let payload = body.slice(4 + len..);
    match &mut outcome.http {
        Some(reply) => reply.body = payload,
        None => outcome.payload = payload,
    }
    Some(outcome)
}

impl RemoteWorker {
    fn new(
        name: &str,
        address: &str,
        client: Client,
        credentials: Option<Arc<dyn CredentialIssuer>>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            base: format!("https://{address}"),
            client,
            credentials,
            code: Mutex::new(HashSet::new()),
            sandboxes: AtomicU32::new(0),
        }
    }

    fn failure(&self, f: Failure) -> Error {
        match f {
            Failure::TooLarge => Error::Internal(format!("worker {} answered too much", self.name)),
            other => Error::Lost(format!(
                "worker {} at {} was lost ({other})",
                self.name,
                self.base.trim_start_matches("https://")
            )),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Bytes,
        timeout: Option<Duration>,
    ) -> Result<Bytes> {
        let reply = self
            .client
            .send(method, &self.base, path, headers, body, 64 << 20, timeout)
            .await
            .map_err(|f| self.failure(f))?;
        if reply.status.is_success() {
            return Ok(reply.body);
        }
        let error: WireError = serde_json::from_slice(&reply.body).unwrap_or(WireError {
            kind: "internal".into(),
            message: format!("status {}", reply.status),
        });
        Err(match error.kind.as_str() {
            "invalid_code" => Error::InvalidCode(error.message),
            "unknown_sandbox" => Error::UnknownSandbox(0),
            "unauthorized" => Error::Lost(format!(
                "worker {} refused the node's credentials: {}",
                self.name, error.message
            )),
            _ => Error::Internal(format!("worker {}: {}", self.name, error.message)),
        })
    }

    async fn fetch_status(&self) -> Result<WorkerStatus> {
        let body = self
            .call(
                Method::GET,
                "/v1/status",
                &[],
                Bytes::new(),
                Some(Duration::from_secs(3)),
            )
            .await?;
        serde_json::from_slice(&body).map_err(|e| Error::Internal(e.to_string()))
    }

    fn cached(&self, sha: &str) {
        if let Ok(mut code) = self.code.lock() {
            code.insert(sha.to_owned());
        }
    }
}

/// Creating a sandbox includes downloading and compiling its code if the worker lacks it.
const INIT_TIMEOUT: Duration = Duration::from_secs(300);

#[async_trait]
impl Worker for RemoteWorker {
    fn status(&self) -> WorkerStatus {
        WorkerStatus {
            capacity_mb: 0,
            reserved_mb: 0,
            sandboxes: self.sandboxes.load(Ordering::Relaxed),
            // Reported by the worker's heartbeats, kept by the manager.
            snapshots: Default::default(),
        }
    }

    fn has_code(&self, sha256: &str) -> bool {
        self.code.lock().is_ok_and(|c| c.contains(sha256))
    }

    async fn prepare(&self, function: &FunctionConfig) -> Result<()> {
        let body = serde_json::to_vec(function).map_err(|e| Error::Internal(e.to_string()))?;
        self.call(
            Method::POST,
            "/v1/prepare",
            &[("content-type", "application/json".into())],
            Bytes::from(body),
            Some(INIT_TIMEOUT),
        )
        .await?;
        self.cached(&function.code.sha256);
        Ok(())
    }

    async fn init(&self, function: &FunctionConfig, init_type: InitType) -> Result<SandboxInit> {
        let body = serde_json::to_vec(&InitBody {
            function: function.clone(),
            init_type,
            credentials: self.credentials.as_ref().and_then(|c| c.issue(function)),
        })
        .map_err(|e| Error::Internal(e.to_string()))?;
        let reply = self
            .call(
                Method::POST,
                "/v1/sandboxes",
                &[("content-type", "application/json".into())],
                Bytes::from(body),
                Some(INIT_TIMEOUT),
            )
            .await?;
        self.cached(&function.code.sha256);
        self.sandboxes.fetch_add(1, Ordering::Relaxed);
        serde_json::from_slice(&reply).map_err(|e| Error::Internal(e.to_string()))
    }

    async fn invoke(&self, sandbox: SandboxId, request: InvokeRequest) -> Result<InvokeOutcome> {
        let mut headers = vec![("x-nimbus-request-id", request.request_id.clone())];
        if let Some(context) = &request.client_context {
            headers.push((
                "x-nimbus-client-context",
                base64::engine::general_purpose::STANDARD.encode(context),
            ));
        }
        if let Some(attempt) = request.async_attempt {
            headers.push(("x-nimbus-async-attempt", attempt.to_string()));
        }
        if let Some(qualifier) = &request.qualifier {
            headers.push(("x-nimbus-qualifier", qualifier.clone()));
        }
        // A request for a function that serves HTTP: its head in a header, its body as the body.
        let body = match request.http {
            Some(mut call) => {
                let body = std::mem::take(&mut call.body);
                let head = serde_json::to_vec(&call).unwrap_or_default();
                headers.push((
                    "x-nimbus-http",
                    base64::engine::general_purpose::STANDARD.encode(head),
                ));
                body
            }
            None => request.payload,
        };
        // No deadline here: the worker enforces the function's timeout, and a worker that
        // stops answering is declared lost by the heartbeat monitor, which ends the wait.
        let body = self
            .call(
                Method::POST,
                &format!("/v1/sandboxes/{sandbox}/invoke"),
                &headers,
                body,
                None,
            )
            .await
            .map_err(|e| match e {
                Error::UnknownSandbox(_) => Error::UnknownSandbox(sandbox),
                other => other,
            })?;
        decode_outcome(body).ok_or_else(|| {
            Error::Internal(format!("worker {} sent a malformed outcome", self.name))
        })
    }

    async fn forget(&self, qualified: &str) {
        let result = self
            .call(
                Method::POST,
                "/v1/forget",
                &[("content-type", "text/plain".into())],
                Bytes::from(qualified.to_owned()),
                Some(Duration::from_secs(30)),
            )
            .await;
        if let Err(e) = result {
            tracing::debug!(worker = %self.name, qualified, error = %e, "forget failed");
        }
    }

    async fn release(&self, sandbox: SandboxId) {
        let result = self
            .call(
                Method::DELETE,
                &format!("/v1/sandboxes/{sandbox}"),
                &[],
                Bytes::new(),
                Some(Duration::from_secs(30)),
            )
            .await;
        let _ = self
            .sandboxes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                Some(s.saturating_sub(1))
            });
        if let Err(e) = result {
            tracing::debug!(worker = %self.name, sandbox, error = %e, "release failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_survive_the_wire() {
        let outcome = InvokeOutcome {
            request_id: "r".into(),
            kind: nimbus_types::OutcomeKind::Success,
            error: None,
            payload: Bytes::from_static(b"{\"ok\":1}"),
            log: "START\n".into(),
            duration_us: 5,
            billed_ms: 1,
            init_duration_us: Some(7),
            memory_mb: 128,
            max_memory_used_mb: 3,
            reusable: true,
            http: None,
        };
        let decoded = decode_outcome(encode_outcome(outcome.clone())).unwrap();
        assert_eq!(decoded.payload, outcome.payload);
        assert_eq!(decoded.log, outcome.log);
        assert_eq!(decoded.init_duration_us, Some(7));
        let answered = InvokeOutcome {
            payload: Bytes::new(),
            http: Some(nimbus_types::http::HttpReply {
                status: 201,
                headers: vec![("x-a".into(), "1".into())],
                body: Bytes::from_static(&[0xff, 0x00, 0x01]),
            }),
            ..outcome
        };
        let decoded = decode_outcome(encode_outcome(answered.clone())).unwrap();
        assert_eq!(decoded.http, answered.http);
        assert!(decoded.payload.is_empty());
        assert!(decode_outcome(Bytes::from_static(b"\0\0\0\x09{}")).is_none());
        assert!(decode_outcome(Bytes::new()).is_none());
    }
}
