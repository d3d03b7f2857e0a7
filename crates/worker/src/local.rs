//! A worker in the node's own process.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use nimbus_runtime_wasm::{
    Egress, HttpInput, HttpTemplate, RunInput, RunStatus, WasmRuntime, WasmTemplate,
};
use nimbus_store::CodeStore;
use nimbus_types::http::{HttpCall, HttpReply};
use nimbus_types::invocation::billed_ms;
use nimbus_types::limits::{MAX_FUNCTION_LOG_BYTES, MAX_SYNC_PAYLOAD_BYTES};
use nimbus_types::{
    FunctionConfig, FunctionError, InitType, InvokeOutcome, InvokeRequest, OutcomeKind, Runtime,
};

use crate::log::{Report, frame};
use crate::process::{
    ProcessConfig, ProcessResult, ProcessSandbox, SnapshotTemplate, describe_exit,
};
use crate::{Error, Result, SandboxId, SandboxInit, Worker, WorkerStatus};

#[derive(Debug, Clone)]
pub struct LocalWorkerConfig {
    pub capacity_mb: u64,
    pub region: String,
    /// Settings for process sandboxes; `None` where they cannot run.
    pub process: Option<ProcessConfig>,
    /// The first sandbox id; ids also pick the sandboxes' uids, so worker processes on one
    /// machine start from different ones.
    pub first_sandbox_id: u64,
}

enum SandboxKind {
    Wasm {
        template: WasmTemplate,
        env: Vec<(String, String)>,
    },
    Http {
        template: HttpTemplate,
        env: Vec<(String, String)>,
        egress: Egress,
    },
    Process(Box<ProcessSandbox>),
}

/// Compiled and linked code of either in-process kind.
enum Template {
    Module(WasmTemplate),
    Component(HttpTemplate),
}

struct Sandbox {
    function: FunctionConfig,
    kind: SandboxKind,
    /// Set until the first invocation has reported the sandbox's init duration.
    init_duration_us: Mutex<Option<u64>>,
    /// It started from its version's snapshot: the init is reported as a restore.
    restored: bool,
    /// Lines for the first invocation's log before the function's own output: a snapshot's
    /// init log, or why a restore fell back to a normal init.
    preface: Mutex<Option<String>>,
    busy: AtomicBool,
}

pub struct LocalWorker {
    config: LocalWorkerConfig,
    code: Arc<dyn CodeStore>,
    wasm: Arc<WasmRuntime>,
    sandboxes: Mutex<HashMap<SandboxId, Arc<Sandbox>>>,
    prepared: Mutex<HashSet<String>>,
    /// The snapshot templates of SnapStart versions of process functions, by qualified name.
    templates: Mutex<HashMap<String, Arc<SnapshotTemplate>>>,
    /// One snapshot is made at a time.
    snapshotting: tokio::sync::Mutex<()>,
    next_id: Arc<AtomicU64>,
    reserved_mb: AtomicU64,
}

impl LocalWorker {
    pub fn new(
        config: LocalWorkerConfig,
        code: Arc<dyn CodeStore>,
        wasm: Arc<WasmRuntime>,
    ) -> Self {
        Self {
            code,
            wasm,
            sandboxes: Mutex::new(HashMap::new()),
            prepared: Mutex::new(HashSet::new()),
            templates: Mutex::new(HashMap::new()),
            snapshotting: tokio::sync::Mutex::new(()),
            next_id: Arc::new(AtomicU64::new(config.first_sandbox_id.max(1))),
            reserved_mb: AtomicU64::new(0),
            config,
        }
    }

    /// Unpacks the code and links the module or component; CPU-bound, so it runs on the
    /// blocking pool.
    async fn template_for(&self, function: &FunctionConfig) -> Result<Template> {
        let code = self.code.clone();
        let wasm = self.wasm.clone();
        // What a SnapStart version's initialisation sees: the variables every environment of
        // the version has (its own and the runtime's), none of those of one environment. A
        // module that keeps what it read (wasi-libc caches the environment) keeps true values.
        let init_env: Vec<(String, String)> = if function.starts_from_snapshot() {
            self.environment(function, 0, InitType::OnDemand)
                .into_iter()
                .filter(|(k, _)| !PER_ENVIRONMENT_VARIABLES.contains(&k.as_str()))
                .collect()
        } else {
            Vec::new()
        };
        let function = function.clone();
        let template = tokio::task::spawn_blocking(move || {
            let root = code.unpacked(&function.code).map_err(|e| match e {
                nimbus_store::Error::InvalidCode(m) => Error::InvalidCode(m),
                other => Error::Internal(format!("{other:#}")),
            })?;
            let path = root.join(&function.handler);
            if !path.is_file() {
                return Err(Error::InvalidCode(format!(
                    "the handler {:?} is not a file in the code package",
                    function.handler
                )));
            }
            let refused = |e| match e {
                nimbus_runtime_wasm::Error::InvalidModule(m) => Error::InvalidCode(m),
                other => Error::Internal(other.to_string()),
            };
            match function.runtime {
                // A published version with SnapStart starts from its initialised state, made
                // once with `init_env`.
                Runtime::Wasm32Wasip1 if function.starts_from_snapshot() => wasm
                    .prepare_preinitialized(
                        &function.qualified_name(),
                        &path,
                        &init_env,
                        u64::from(function.memory_mb) << 20,
                        std::time::Duration::from_secs(u64::from(function.timeout_s)),
                    )
                    .map(Template::Module)
                    .map_err(refused),
                Runtime::Wasm32Wasip1 => wasm.prepare(&path).map(Template::Module).map_err(refused),
                Runtime::WasiHttp => wasm
                    .prepare_http(&path)
                    .map(Template::Component)
                    .map_err(refused),
                _ => Err(Error::Internal("not a wasm function".into())),
            }
        })
        .await
        .map_err(|e| Error::Internal(format!("preparing code panicked: {e}")))??;
        Ok(template)
    }

    /// The running snapshot template of a SnapStart version, made now if there is none (its
    /// version was published before this worker started). One that died is made again if
    /// `remake` (publishing), else forgotten with an error: the cold start that found it falls
    /// back to a normal init rather than wait for a new snapshot.
    async fn template(
        &self,
        function: &FunctionConfig,
        remake: bool,
    ) -> Result<Arc<SnapshotTemplate>> {
        let key = function.qualified_name();
        // A template of this configuration that still runs; one that died is forgotten and
        // this start falls back to a normal init (the next one makes a new snapshot).
        let current = |worker: &Self| -> Result<Option<Arc<SnapshotTemplate>>> {
            let mut templates = worker
                .templates
                .lock()
                .map_err(|_| Error::Internal("template table poisoned".into()))?;
            match templates.get(&key) {
                Some(t) if t.fingerprint != crate::process::snapshot_fingerprint(function) => {
                    Ok(None)
                }
                Some(t) if t.alive() => Ok(Some(t.clone())),
                Some(_) => {
                    if let Some(dead) = templates.remove(&key) {
                        dead.retire();
                        drop_off_executor(dead);
                    }
                    if remake {
                        Ok(None)
                    } else {
                        Err(Error::Internal(
                            "the snapshot's template process exited".into(),
                        ))
                    }
                }
                None => Ok(None),
            }
        };
        if let Some(template) = current(self)? {
            return Ok(template);
        }
        let _one_at_a_time = self.snapshotting.lock().await;
        if let Some(template) = current(self)? {
            return Ok(template);
        }
        let (code_dir, opt_dirs) = self.code_dir_for(function).await?;
        let process = self
            .config
            .process
            .as_ref()
            .ok_or_else(|| Error::Internal("no process config".into()))?;
        let template = Arc::new(
            ProcessSandbox::start_template(
                process,
                function,
                code_dir,
                opt_dirs,
                self.next_id.clone(),
                &self.config.region,
            )
            .await?,
        );
        template.refill_in_background();
        tracing::info!(
            function = %function.name,
            version = %function.version,
            init_us = template.init_duration_us,
            memory_bytes = template.memory_bytes(),
            "snapshot template ready"
        );
        let replaced = self
            .templates
            .lock()
            .map_err(|_| Error::Internal("template table poisoned".into()))?
            .insert(key, template.clone());
        if let Some(old) = replaced {
            old.retire();
            drop_off_executor(old);
        }
        Ok(template)
    }

    /// Starts a process sandbox of a SnapStart version from its snapshot; if that fails, starts
    /// it normally and says why in its first log. Returns the sandbox, whether it was restored
    /// and the log's preface.
    async fn start_process(
        &self,
        function: &FunctionConfig,
        id: SandboxId,
        init_type: InitType,
    ) -> Result<(ProcessSandbox, bool, Option<String>)> {
        let process = self
            .config
            .process
            .as_ref()
            .ok_or_else(|| Error::Internal("no process config".into()))?;
        let (code_dir, opt_dirs) = self.code_dir_for(function).await?;
        let mut preface = None;
        if function.starts_from_snapshot() {
            let restored = match self.template(function, false).await {
                Ok(template) => ProcessSandbox::start_restored(
                    process,
                    function,
                    &template,
                    code_dir.clone(),
                    opt_dirs.clone(),
                    id,
                    &self.config.region,
                    init_type,
                )
                .await
                .map(|sandbox| (sandbox, template)),
                Err(e) => Err(e),
            };
            match restored {
                Ok((sandbox, template)) => {
                    let preface = template.take_init_log().map(|log| {
                        format!(
                            "INIT_START Runtime Version: nimbus:{}\tPhase: snapshot\tInit Duration: {}.{:02} ms\n{}",
                            function.runtime,
                            template.init_duration_us / 1000,
                            (template.init_duration_us % 1000) / 10,
                            String::from_utf8_lossy(&log)
                        )
                    });
                    return Ok((sandbox, true, preface));
                }
                Err(e) => {
                    tracing::warn!(function = %function.name, version = %function.version, error = %e, "restore from snapshot failed; initialising normally");
                    preface = Some(format!(
                        "RESTORE_FAILED The environment could not be restored from the snapshot ({e}); it was initialised normally.\n"
                    ));
                }
            }
        }
        let sandbox = ProcessSandbox::start(
            process,
            function,
            code_dir,
            opt_dirs,
            id,
            &self.config.region,
            init_type,
        )
        .await?;
        Ok((sandbox, false, preface))
    }

    /// Unpacks a process function's code and its layers (bottom first), and checks that its
    /// runtime can start here.
    async fn code_dir_for(
        &self,
        function: &FunctionConfig,
    ) -> Result<(std::path::PathBuf, Vec<std::path::PathBuf>)> {
        let process = self.config.process.clone().ok_or_else(|| {
            Error::InvalidCode(format!(
                "The runtime {} needs process sandboxes, which this node cannot run",
                function.runtime
            ))
        })?;
        let code = self.code.clone();
        let function = function.clone();
        tokio::task::spawn_blocking(move || {
            let root = code.unpacked(&function.code).map_err(|e| match e {
                nimbus_store::Error::InvalidCode(m) => Error::InvalidCode(m),
                other => Error::Internal(format!("{other:#}")),
            })?;
            let layers = function
                .layers
                .iter()
                .map(|l| {
                    code.unpacked(&l.code).map_err(|e| {
                        Error::Internal(format!("unpacking the layer {}: {e:#}", l.arn))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            process.check(&function, &root, &layers)?;
            Ok((root, layers))
        })
        .await
        .map_err(|e| Error::Internal(format!("preparing code panicked: {e}")))?
    }

    async fn invoke_wasm(
        &self,
        function: &FunctionConfig,
        template: &WasmTemplate,
        env: &[(String, String)],
        request: InvokeRequest,
        init_duration_us: Option<u64>,
    ) -> InvokeOutcome {
        let timeout = Duration::from_secs(function.timeout_s as u64);
        let deadline_ms = nimbus_types::time::now_ms() + timeout.as_millis() as i64;
        let mut env = env.to_vec();
        env.push(("NIMBUS_REQUEST_ID".to_owned(), request.request_id.clone()));
        env.push(("NIMBUS_DEADLINE_MS".to_owned(), deadline_ms.to_string()));
        let started = Instant::now();
        let output = self
            .wasm
            .run(
                template,
                RunInput {
                    stdin: request.payload,
                    env,
                    memory_limit_bytes: (function.memory_mb as u64) << 20,
                    timeout,
                    stdout_limit: MAX_SYNC_PAYLOAD_BYTES,
                    stderr_limit: MAX_FUNCTION_LOG_BYTES,
                },
            )
            .await;
        let duration_us = started.elapsed().as_micros() as u64;

        let request_id = request.request_id;
        let (kind, error) = match &output.status {
            RunStatus::Exited(0) => (OutcomeKind::Success, None),
            status => {
                let (kind, error) = sandbox_error(&request_id, status, function);
                (kind, Some(error))
            }
        };
        let payload = match &error {
            Some(e) => e.to_json(),
            None => output.stdout,
        };
        let error_line = error.is_some();
        finish(Measured {
            function,
            request_id,
            kind,
            error,
            payload,
            output: &output.stderr,
            duration_us,
            init_duration_us,
            peak_memory_bytes: output.peak_memory_bytes,
            reusable: true,
            error_line,
            http: None,
            restored: function.starts_from_snapshot(),
        })
    }

    /// Serves one request with a `wasi-http` component: the request as the front door got it,
    /// or the one an Invoke API event describes, whose answer then goes back as a 2.0 result.
    async fn invoke_http(
        &self,
        function: &FunctionConfig,
        template: &HttpTemplate,
        env: &[(String, String)],
        egress: Egress,
        request: InvokeRequest,
        init_duration_us: Option<u64>,
    ) -> InvokeOutcome {
        let request_id = request.request_id;
        let from_event = request.http.is_none();
        let call = match request.http {
            Some(call) => Ok(call),
            None => HttpCall::from_event(&request.payload),
        };
        let started = Instant::now();
        let http_request = call.and_then(to_http_request);
        let http_request = match http_request {
            Ok(r) => r,
            Err(why) => {
                let error = FunctionError::new(
                    "Runtime.InvalidEvent",
                    format!(
                        "RequestId: {request_id} Error: a wasi-http function serves HTTP \
                         requests; this event describes none: {why}"
                    ),
                );
                return finish(Measured {
                    function,
                    request_id,
                    kind: OutcomeKind::Error,
                    payload: error.to_json(),
                    error: Some(error),
                    output: b"",
                    duration_us: started.elapsed().as_micros() as u64,
                    init_duration_us,
                    peak_memory_bytes: 0,
                    reusable: true,
                    error_line: true,
                    http: None,
                    restored: false,
                });
            }
        };
        let timeout = Duration::from_secs(function.timeout_s as u64);
        let deadline_ms = nimbus_types::time::now_ms() + timeout.as_millis() as i64;
        let mut env = env.to_vec();
        env.push(("NIMBUS_REQUEST_ID".to_owned(), request_id.clone()));
        env.push(("NIMBUS_DEADLINE_MS".to_owned(), deadline_ms.to_string()));
        let output = self
            .wasm
            .run_http(
                template,
                HttpInput {
                    request: http_request,
                    env,
                    memory_limit_bytes: (function.memory_mb as u64) << 20,
                    timeout,
                    body_limit: MAX_SYNC_PAYLOAD_BYTES,
                    log_limit: MAX_FUNCTION_LOG_BYTES,
                    egress,
                },
            )
            .await;
        let duration_us = started.elapsed().as_micros() as u64;
        let reply = output.response.map(|response| {
            let (parts, body) = response.into_parts();
            HttpReply {
                status: parts.status.as_u16(),
                headers: parts
                    .headers
                    .iter()
                    .map(|(n, v)| {
                        (
                            n.as_str().to_owned(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect(),
                body,
            }
        });
        let failed = |status: &RunStatus| {
            let (kind, error) = sandbox_error(&request_id, status, function);
            (kind, error.to_json(), Some(error), None)
        };
        let (kind, payload, error, http) = match (reply, &output.status) {
            (Some(reply), RunStatus::Exited(0)) if from_event => {
                let result = serde_json::to_vec(&reply.to_result()).unwrap_or_default();
                if result.len() > MAX_SYNC_PAYLOAD_BYTES {
                    failed(&RunStatus::OutputTooLarge)
                } else {
                    (OutcomeKind::Success, Bytes::from(result), None, None)
                }
            }
            (Some(reply), RunStatus::Exited(0)) => {
                (OutcomeKind::Success, Bytes::new(), None, Some(reply))
            }
            (_, status) => failed(status),
        };
        let error_line = error.is_some();
        finish(Measured {
            function,
            request_id,
            kind,
            error,
            payload,
            output: &output.log,
            duration_us,
            init_duration_us,
            peak_memory_bytes: output.peak_memory_bytes,
            reusable: true,
            error_line,
            http,
            restored: function.starts_from_snapshot(),
        })
    }

    /// The variables every sandbox of a function version has, its own and the runtime's.
    fn environment(
        &self,
        function: &FunctionConfig,
        sandbox: SandboxId,
        init_type: InitType,
    ) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = function
            .environment
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let date = nimbus_types::time::lambda_timestamp(nimbus_types::time::now_ms());
        let day = date.get(..10).unwrap_or("1970-01-01").replace('-', "/");
        let standard = [
            ("AWS_LAMBDA_FUNCTION_NAME", function.name.clone()),
            (
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
                function.memory_mb.to_string(),
            ),
            ("AWS_LAMBDA_FUNCTION_VERSION", function.version.clone()),
            (
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/{}", function.name),
            ),
            (
                "AWS_LAMBDA_LOG_STREAM_NAME",
                format!("{day}/[{}]{sandbox:016x}", function.version),
            ),
            (
                "AWS_LAMBDA_INITIALIZATION_TYPE",
                init_type.as_str().to_owned(),
            ),
            ("AWS_REGION", self.config.region.clone()),
            ("AWS_DEFAULT_REGION", self.config.region.clone()),
            (
                "AWS_EXECUTION_ENV",
                format!("AWS_Lambda_{}", function.runtime),
            ),
            ("_HANDLER", function.handler.clone()),
            ("TZ", ":UTC".to_owned()),
            ("LANG", "en_US.UTF-8".to_owned()),
        ];
        env.extend(standard.into_iter().map(|(k, v)| (k.to_owned(), v)));
        env
    }
}

/// The variables of [`LocalWorker::environment`] that differ between sandboxes of one version.
const PER_ENVIRONMENT_VARIABLES: [&str; 2] = [
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
];

fn sandbox_error(
    request_id: &str,
    status: &RunStatus,
    function: &FunctionConfig,
) -> (OutcomeKind, FunctionError) {
    match status {
        RunStatus::Exited(code) => (
            OutcomeKind::Error,
            FunctionError::new(
                "Runtime.ExitError",
                format!(
                    "RequestId: {request_id} Error: Runtime exited with error: exit status {code}"
                ),
            ),
        ),
        RunStatus::Trapped(message) => (
            OutcomeKind::Error,
            FunctionError::new(
                "Runtime.Trap",
                format!("RequestId: {request_id} Error: {message}"),
            ),
        ),
        RunStatus::TimedOut => (
            OutcomeKind::Timeout,
            FunctionError::new(
                "Sandbox.Timedout",
                format!(
                    "RequestId: {request_id} Error: Task timed out after {}.00 seconds",
                    function.timeout_s
                ),
            ),
        ),
        RunStatus::OutOfMemory => (
            OutcomeKind::OutOfMemory,
            FunctionError::new(
                "Runtime.OutOfMemory",
                format!(
                    "RequestId: {request_id} Error: Runtime exited with error: memory limit of {} MB exceeded",
                    function.memory_mb
                ),
            ),
        ),
        RunStatus::OutputTooLarge => (
            OutcomeKind::Error,
            FunctionError::new(
                "Function.ResponseSizeTooLarge",
                format!(
                    "Response payload size exceeded maximum allowed payload size ({MAX_SYNC_PAYLOAD_BYTES} bytes)."
                ),
            ),
        ),
    }
}

#[async_trait]
impl Worker for LocalWorker {
    fn status(&self) -> WorkerStatus {
        let (templates, memory_bytes) = self
            .templates
            .lock()
            .map(|t| {
                (
                    t.len() as u32,
                    t.values().map(|template| template.memory_bytes()).sum(),
                )
            })
            .unwrap_or_default();
        WorkerStatus {
            capacity_mb: self.config.capacity_mb,
            reserved_mb: self.reserved_mb.load(Ordering::Relaxed),
            sandboxes: self.sandboxes.lock().map(|s| s.len() as u32).unwrap_or(0),
            snapshots: crate::SnapshotUse {
                templates,
                memory_bytes,
                disk_bytes: self.wasm.preinitialized_disk_bytes(),
            },
        }
    }

    fn has_code(&self, sha256: &str) -> bool {
        self.prepared
            .lock()
            .map(|p| p.contains(sha256))
            .unwrap_or(false)
    }

    async fn prepare(&self, function: &FunctionConfig) -> Result<()> {
        if function.runtime.is_process() {
            self.code_dir_for(function).await?;
            if function.starts_from_snapshot() {
                self.template(function, true).await?;
            }
        } else {
            self.template_for(function).await?;
        }
        if let Ok(mut prepared) = self.prepared.lock() {
            prepared.insert(function.code.sha256.clone());
        }
        Ok(())
    }

    async fn init(&self, function: &FunctionConfig, init_type: InitType) -> Result<SandboxInit> {
        let started = Instant::now();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let restored;
        let mut preface = None;
        let kind = if function.runtime.is_process() {
            let (sandbox, from_snapshot, note) =
                self.start_process(function, id, init_type).await?;
            restored = from_snapshot;
            preface = note;
            SandboxKind::Process(Box::new(sandbox))
        } else {
            restored = function.starts_from_snapshot();
            let env = self.environment(function, id, init_type);
            match self.template_for(function).await? {
                Template::Module(template) => SandboxKind::Wasm { template, env },
                Template::Component(template) => {
                    let outgoing = self
                        .config
                        .process
                        .as_ref()
                        .is_some_and(|p| p.egress.allows(function));
                    let egress = if outgoing {
                        Egress::Public
                    } else {
                        Egress::Denied
                    };
                    SandboxKind::Http {
                        template,
                        env,
                        egress,
                    }
                }
            }
        };
        let init_duration_us = started.elapsed().as_micros() as u64;
        let sandbox = Arc::new(Sandbox {
            function: function.clone(),
            kind,
            // Lambda reports an init duration only on the invocation that waited for it.
            init_duration_us: Mutex::new(
                (init_type == InitType::OnDemand).then_some(init_duration_us),
            ),
            restored,
            preface: Mutex::new(preface),
            busy: AtomicBool::new(false),
        });
        self.sandboxes
            .lock()
            .map_err(|_| Error::Internal("sandbox table poisoned".into()))?
            .insert(id, sandbox);
        self.reserved_mb
            .fetch_add(function.memory_mb as u64, Ordering::Relaxed);
        if let Ok(mut prepared) = self.prepared.lock() {
            prepared.insert(function.code.sha256.clone());
        }
        tracing::debug!(function = %function.name, sandbox = id, init_us = init_duration_us, "sandbox ready");
        Ok(SandboxInit {
            sandbox: id,
            init_duration_us,
        })
    }

    async fn invoke(&self, sandbox_id: SandboxId, request: InvokeRequest) -> Result<InvokeOutcome> {
        let sandbox = self
            .sandboxes
            .lock()
            .ok()
            .and_then(|s| s.get(&sandbox_id).cloned())
            .ok_or(Error::UnknownSandbox(sandbox_id))?;
        if sandbox.busy.swap(true, Ordering::Acquire) {
            return Err(Error::Internal(format!(
                "sandbox {sandbox_id} is already busy"
            )));
        }
        let init_duration_us = sandbox
            .init_duration_us
            .lock()
            .ok()
            .and_then(|mut i| i.take());
        let outcome = match &sandbox.kind {
            SandboxKind::Wasm { template, env } => {
                self.invoke_wasm(&sandbox.function, template, env, request, init_duration_us)
                    .await
            }
            SandboxKind::Http {
                template,
                env,
                egress,
            } => {
                self.invoke_http(
                    &sandbox.function,
                    template,
                    env,
                    *egress,
                    request,
                    init_duration_us,
                )
                .await
            }
            SandboxKind::Process(process) => {
                let preface = sandbox.preface.lock().ok().and_then(|mut p| p.take());
                invoke_process(
                    &sandbox.function,
                    process,
                    request,
                    init_duration_us,
                    sandbox.restored,
                    preface,
                )
                .await
            }
        };
        sandbox.busy.store(false, Ordering::Release);
        Ok(outcome)
    }

    async fn forget(&self, qualified: &str) {
        let prefix = format!("{qualified}:");
        let retired: Vec<Arc<SnapshotTemplate>> = self
            .templates
            .lock()
            .map(|mut templates| {
                let keys: Vec<String> = templates
                    .keys()
                    .filter(|k| *k == qualified || k.starts_with(&prefix))
                    .cloned()
                    .collect();
                keys.iter().filter_map(|k| templates.remove(k)).collect()
            })
            .unwrap_or_default();
        for template in retired {
            template.retire();
            drop_off_executor(template);
        }
        // The wasm versions' pre-initialised modules.
        let wasm = self.wasm.clone();
        let qualified = qualified.to_owned();
        let freed =
            tokio::task::spawn_blocking(move || wasm.forget_preinitialized(&qualified)).await;
        if let Ok(freed @ 1..) = freed {
            tracing::info!(bytes = freed, "deleted pre-initialised modules");
        }
    }

    async fn release(&self, sandbox: SandboxId) {
        let removed = self
            .sandboxes
            .lock()
            .ok()
            .and_then(|mut s| s.remove(&sandbox));
        if let Some(sandbox) = removed {
            self.reserved_mb
                .fetch_sub(sandbox.function.memory_mb as u64, Ordering::Relaxed);
            if matches!(sandbox.kind, SandboxKind::Process(_)) {
                // Killing and cleaning up a jail waits on the kernel: keep it off the executor.
                let _ = tokio::task::spawn_blocking(move || {
                    if let SandboxKind::Process(process) = &sandbox.kind {
                        process.destroy();
                    }
                })
                .await;
            }
        }
    }
}

/// Drops a snapshot template (killing its jail waits on the kernel) on the blocking pool.
fn drop_off_executor(template: Arc<SnapshotTemplate>) {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn_blocking(move || drop(template));
        }
        Err(_) => drop(template),
    }
}

/// Runs one invocation in a process sandbox and measures it.
async fn invoke_process(
    function: &FunctionConfig,
    process: &ProcessSandbox,
    request: InvokeRequest,
    init_duration_us: Option<u64>,
    restored: bool,
    preface: Option<String>,
) -> InvokeOutcome {
    let request_id = request.request_id;
    let timeout = Duration::from_secs(function.timeout_s as u64);
    let started = Instant::now();
    let result = process
        .invoke(
            &request_id,
            request.payload,
            request.client_context,
            request.stream,
            request.qualifier,
            timeout,
        )
        .await;
    let duration_us = started.elapsed().as_micros() as u64;
    let (kind, payload, error, reusable) = match result {
        ProcessResult::Response(body) => (OutcomeKind::Success, body, None, true),
        ProcessResult::Error(body, error) => (OutcomeKind::Error, body, Some(error), true),
        ProcessResult::TooLarge(limit) => {
            let error = FunctionError::new(
                "Function.ResponseSizeTooLarge",
                format!(
                    "Response payload size exceeded maximum allowed payload size ({limit} bytes)."
                ),
            );
            (OutcomeKind::Error, error.to_json(), Some(error), true)
        }
        ProcessResult::Exited {
            status,
            out_of_memory,
        } => {
            let (kind, error_type) = if out_of_memory {
                (OutcomeKind::OutOfMemory, "Runtime.OutOfMemory")
            } else {
                (OutcomeKind::Error, "Runtime.ExitError")
            };
            let detail = if out_of_memory {
                format!(
                    "{} (memory limit of {} MB exceeded)",
                    describe_exit(status),
                    function.memory_mb
                )
            } else {
                describe_exit(status)
            };
            let error = FunctionError::new(
                error_type,
                format!("RequestId: {request_id} Error: Runtime exited with error: {detail}"),
            );
            (kind, error.to_json(), Some(error), false)
        }
        ProcessResult::TimedOut => {
            let error = FunctionError::new(
                "Sandbox.Timedout",
                format!(
                    "RequestId: {request_id} Error: Task timed out after {}.00 seconds",
                    function.timeout_s
                ),
            );
            (OutcomeKind::Timeout, error.to_json(), Some(error), false)
        }
        ProcessResult::InitFailed(body, mut error) => {
            // The init failed before any request existed; name the one it failed.
            let unnamed = "RequestId:  Error: ";
            if let Some(rest) = error.error_message.strip_prefix(unnamed) {
                error.error_message = format!("RequestId: {request_id} Error: {rest}");
                (OutcomeKind::Error, error.to_json(), Some(error), false)
            } else {
                (OutcomeKind::Error, body, Some(error), false)
            }
        }
    };
    let mut output = Vec::new();
    if let Some(preface) = preface {
        output.extend_from_slice(preface.as_bytes());
    }
    if init_duration_us.is_some() {
        output.extend_from_slice(
            format!(
                "{} Runtime Version: nimbus:{}\tSandbox Setup: {}.{:02} ms\n",
                if restored {
                    "RESTORE_START"
                } else {
                    "INIT_START"
                },
                function.runtime,
                process.setup_us / 1000,
                (process.setup_us % 1000) / 10
            )
            .as_bytes(),
        );
    }
    output.extend_from_slice(&process.take_output());
    finish(Measured {
        function,
        request_id,
        kind,
        error,
        payload,
        output: &output,
        duration_us,
        init_duration_us,
        peak_memory_bytes: process.peak_memory_bytes(),
        reusable,
        // A killed or crashed runtime gets Lambda's timestamped line; a handled error does not.
        error_line: !reusable,
        http: None,
        restored,
    })
}

/// What either kind of sandbox measured about one invocation.
struct Measured<'a> {
    function: &'a FunctionConfig,
    request_id: String,
    kind: OutcomeKind,
    error: Option<FunctionError>,
    payload: Bytes,
    /// The function's own log output.
    output: &'a [u8],
    duration_us: u64,
    init_duration_us: Option<u64>,
    peak_memory_bytes: u64,
    reusable: bool,
    /// The sandbox started from a snapshot.
    restored: bool,
    /// Whether the error also gets Lambda's timestamped line in the log.
    error_line: bool,
    /// A `wasi-http` function's answer to a request that came as HTTP.
    http: Option<HttpReply>,
}

/// Bills, frames the log with START/END/REPORT and builds the outcome.
fn finish(m: Measured<'_>) -> InvokeOutcome {
    let function = m.function;
    let request_id = m.request_id;
    // Lambda bills a timed-out invocation for the whole timeout.
    let billed = if m.kind == OutcomeKind::Timeout {
        function.timeout_s as u64 * 1000
    } else {
        billed_ms(m.duration_us)
    };
    let max_memory_used_mb = m.peak_memory_bytes.div_ceil(1 << 20) as u32;
    let extra = m.error.as_ref().filter(|_| m.error_line).map(|e| {
        format!(
            "{} {request_id} {}",
            nimbus_types::time::lambda_timestamp(nimbus_types::time::now_ms()),
            e.error_message
                .trim_start_matches(&format!("RequestId: {request_id} Error: "))
        )
    });
    let log = frame(
        &Report {
            request_id: &request_id,
            version: &function.version,
            duration_us: m.duration_us,
            billed_ms: billed,
            memory_mb: function.memory_mb,
            max_memory_used_mb,
            init_duration_us: m.init_duration_us,
            restored: m.restored,
        },
        m.output,
        extra.as_deref(),
    );
    InvokeOutcome {
        request_id,
        kind: m.kind,
        error: m.error,
        payload: m.payload,
        log,
        duration_us: m.duration_us,
        billed_ms: billed,
        init_duration_us: m.init_duration_us,
        memory_mb: function.memory_mb,
        max_memory_used_mb,
        reusable: m.reusable,
        http: m.http,
    }
}

/// The request a component is given: its URI absolute, its headers as they came.
fn to_http_request(call: HttpCall) -> std::result::Result<http::Request<Bytes>, String> {
    let uri = format!(
        "{}://{}{}",
        call.scheme, call.authority, call.path_and_query
    );
    let mut builder = http::Request::builder()
        .method(call.method.as_str())
        .uri(uri.as_str());
    for (name, value) in &call.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    builder
        .body(call.body)
        .map_err(|e| format!("the request is not valid HTTP: {e}"))
}
