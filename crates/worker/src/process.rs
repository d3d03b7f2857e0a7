//! Process sandboxes: a Lambda runtime (a `bootstrap`, or nimbus's Python or Node.js runtime)
//! in a jail, talking to the worker over the Runtime API.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use nimbus_sandbox::{Bind, JailSpec, PreparedJail};
use nimbus_types::identity::{CredentialIssuer, SessionCredentials};
use nimbus_types::{FunctionConfig, FunctionError, InitType, Runtime};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::runtime_api::{Pending, Reply, RuntimeApi, router};
use crate::{Error, Result};

/// How long a runtime may take to initialise before it is given up (Lambda: 10 s).
const INIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Processes and threads one sandbox may have (Lambda: 1024).
const PIDS_MAX: u32 = 1024;
/// Sandboxes run as uids from here on, each its own, so that none can signal another.
const UID_BASE: u32 = 200_000;
const UID_RANGE: u64 = 100_000;

const PYTHON_BOOTSTRAP: &str = include_str!("../runtimes/python/bootstrap.py");
const NODE_BOOTSTRAP: &str = include_str!("../runtimes/node/bootstrap.js");
/// The Node.js runtime's SnapStart hooks module, `require("snapshot-restore-node")`.
const NODE_HOOKS: &str = include_str!("../runtimes/node/snapshot-restore-node.js");
/// The Node.js runtime's SnapStart addon (`runtimes/node/snapshot.rs`, built by `build.rs`).
const NODE_SNAPSHOT_ADDON: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/snapshot.node"));

/// The language runtimes this host can serve, found at start-up.
#[derive(Debug, Clone)]
pub struct HostRuntimes {
    pub python_minor: Option<u8>,
    pub node_major: Option<u8>,
    /// Runtimes this host does not have, each run on one it has, as the operator chose
    /// (`python3.13` → `python3.11`). A function keeps the runtime it asked for.
    pub aliases: std::collections::BTreeMap<String, String>,
}

impl HostRuntimes {
    /// Looks for `/usr/bin/python3` and `/usr/bin/node`: only what lies under `/usr` is visible
    /// inside a sandbox.
    pub fn detect() -> Self {
        let python_minor = std::fs::canonicalize("/usr/bin/python3")
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .and_then(|n| n.strip_prefix("python3.").and_then(|m| m.parse().ok()));
        let node_major = std::process::Command::new("/usr/bin/node")
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|v| {
                v.trim()
                    .trim_start_matches('v')
                    .split('.')
                    .next()
                    .and_then(|m| m.parse().ok())
            });
        Self {
            python_minor,
            node_major,
            aliases: Default::default(),
        }
    }

    /// Whether this host runs `runtime` itself (not through an alias).
    pub fn has(&self, runtime: Runtime) -> bool {
        match runtime {
            Runtime::Python { minor } => Some(minor) == self.python_minor,
            Runtime::Node { major } => Some(major) == self.node_major,
            _ => true,
        }
    }

    /// The runtime that runs functions of `runtime` here: itself, or its alias.
    pub fn effective(&self, runtime: Runtime) -> Runtime {
        if self.has(runtime) {
            return runtime;
        }
        self.aliases
            .get(&runtime.to_string())
            .and_then(|target| Runtime::parse(target).ok())
            .filter(|target| self.has(*target))
            .unwrap_or(runtime)
    }

    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = ["provided", "provided.al2", "provided.al2023"]
            .map(String::from)
            .to_vec();
        if let Some(m) = self.python_minor {
            names.push(format!("python3.{m}"));
        }
        if let Some(m) = self.node_major {
            names.push(format!("nodejs{m}.x"));
        }
        names
    }
}

#[derive(Clone)]
pub struct ProcessConfig {
    /// Where nimbus's runtime bootstraps are written; bound at `/var/runtime`.
    pub runtime_dir: PathBuf,
    /// Parent of the sandboxes' root mount points.
    pub sandbox_dir: PathBuf,
    pub host: HostRuntimes,
    /// Sandboxes prepared ahead of cold starts.
    pub pool: Arc<JailPool>,
    /// The runtime that serves each sandbox's Runtime API and pumps its output, whichever
    /// runtime its cold start ran on: a sandbox started by an asynchronous event must not live
    /// on the one-thread runtime of asynchronous events for the rest of its life.
    pub io: tokio::runtime::Handle,
    /// The node's APIs, served to each sandbox at `127.0.0.1:9002` inside its namespace
    /// (`AWS_ENDPOINT_URL`). Empty until the node's router exists, and on a worker without
    /// one: the port is then closed.
    pub services: ServicesEndpoint,
    /// Issues each sandbox the credentials of its function's role.
    pub credentials: Option<Arc<dyn CredentialIssuer>>,
    /// Which sandboxes reach the internet, and the host's rules once one did.
    pub egress: Arc<EgressPolicy>,
}

/// Outbound internet for process sandboxes: the node's default, which a function's
/// `nimbus:egress` tag overrides, and the host's NAT and rules, set up when the first sandbox
/// that may go out starts (never, on a node where none may).
#[derive(Debug)]
pub struct EgressPolicy {
    default: bool,
    host: std::sync::OnceLock<std::result::Result<Arc<nimbus_sandbox::Egress>, String>>,
}

impl EgressPolicy {
    pub fn new(default: bool) -> Arc<Self> {
        Arc::new(Self {
            default,
            host: std::sync::OnceLock::new(),
        })
    }

    /// Whether `function` may reach the internet.
    pub fn allows(&self, function: &FunctionConfig) -> bool {
        function.egress().unwrap_or(self.default)
    }

    /// The way out for a sandbox of `function`, if it may have one.
    fn for_function(
        &self,
        function: &FunctionConfig,
    ) -> Result<Option<Arc<nimbus_sandbox::Egress>>> {
        if !self.allows(function) {
            return Ok(None);
        }
        self.host
            .get_or_init(|| {
                nimbus_sandbox::Egress::enable().map_err(|e| {
                    tracing::error!(error = %e, "outbound access for sandboxes is unavailable");
                    format!("{e:#}")
                })
            })
            .clone()
            .map(Some)
            .map_err(|e| Error::Internal(format!("the function may reach the internet, but: {e}")))
    }
}

impl std::fmt::Debug for ProcessConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessConfig")
            .field("runtime_dir", &self.runtime_dir)
            .field("sandbox_dir", &self.sandbox_dir)
            .field("host", &self.host)
            .field("pool", &self.pool)
            .field("credentials", &self.credentials.is_some())
            .finish()
    }
}

/// The router a sandbox's services port is served with, set once the node has built it and
/// cleared when the node stops.
pub type ServicesEndpoint = Arc<std::sync::RwLock<Option<axum::Router>>>;

/// Sandboxes whose namespaces, cgroup and helper exist already, so that a cold start only
/// mounts the function's code and executes its runtime.
pub struct JailPool {
    ready: Mutex<Vec<PreparedJail>>,
    target: usize,
    sandbox_dir: PathBuf,
    binds: Vec<Bind>,
    /// The node's own port, served inside every sandbox like the services port.
    alias_ports: Vec<u16>,
    next: std::sync::atomic::AtomicU64,
    refilling: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for JailPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JailPool")
            .field("target", &self.target)
            .finish()
    }
}

/// Runs `work` on `owner` on a thread named `name`, unless the flag `running` picks out says
/// one is at it already; the flag is cleared when it is done.
fn on_one_thread<S: Send + Sync + 'static>(
    owner: &Arc<S>,
    running: fn(&S) -> &std::sync::atomic::AtomicBool,
    name: &str,
    work: fn(&S),
) {
    use std::sync::atomic::Ordering;
    if running(owner).swap(true, Ordering::AcqRel) {
        return;
    }
    let on_thread = owner.clone();
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            work(&on_thread);
            running(&on_thread).store(false, Ordering::Release);
        });
    if spawned.is_err() {
        running(owner).store(false, Ordering::Release);
    }
}

/// Makes things with `make` into `ready` until it holds `target` of them, while `wanted`;
/// stops at the first failure, which it logs (`what` names the things). Blocking.
fn fill<T>(
    ready: &Mutex<Vec<T>>,
    target: usize,
    wanted: impl Fn() -> bool,
    mut make: impl FnMut() -> Result<T>,
    what: &str,
) {
    while wanted() && ready.lock().map(|r| r.len()).unwrap_or(usize::MAX) < target {
        match make() {
            Ok(made) => {
                // Not wanted any more while it was made (its template retired): drop it.
                if let Ok(mut ready) = ready.lock()
                    && wanted()
                {
                    ready.push(made);
                }
            }
            // A version deleted while its copy was being made takes the copy's code with it:
            // that is no failure worth a warning.
            Err(e) if !wanted() => {
                tracing::debug!(error = %e, "stopped preparing {what}: no longer wanted");
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not prepare {what} ahead of need");
                break;
            }
        }
    }
}

/// The SDK directories on the host bound into every sandbox, where installed.
#[derive(Debug, Clone, Default)]
pub struct Sdks {
    pub python: Option<PathBuf>,
    pub node: Option<PathBuf>,
}

/// How many prepared jails a worker keeps ready by default.
pub const DEFAULT_JAIL_POOL: usize = 2;

impl JailPool {
    /// A pool of `target` sandboxes with their roots under `sandbox_dir`, nimbus's runtimes
    /// from `runtime_dir` at `/var/runtime`, and the SDKs (those there are) at
    /// [`crate::sdk::PYTHON_SDK_MOUNT`] and [`crate::sdk::NODE_SDK_MOUNT`]. `alias_ports`
    /// (the node's own port) are served inside each sandbox like the services port, so that
    /// URLs the node hands out work from inside.
    pub fn new(
        target: usize,
        sandbox_dir: PathBuf,
        runtime_dir: PathBuf,
        sdks: Sdks,
        alias_ports: Vec<u16>,
    ) -> Arc<Self> {
        let mut binds = vec![Bind {
            host: runtime_dir,
            sandbox: PathBuf::from("/var/runtime"),
        }];
        for (host, mount) in [
            (sdks.python, crate::sdk::PYTHON_SDK_MOUNT),
            (sdks.node, crate::sdk::NODE_SDK_MOUNT),
        ] {
            if let Some(host) = host {
                binds.push(Bind {
                    host,
                    sandbox: PathBuf::from(mount),
                });
            }
        }
        Arc::new(Self {
            ready: Mutex::new(Vec::new()),
            target,
            sandbox_dir,
            binds,
            alias_ports,
            next: std::sync::atomic::AtomicU64::new(1),
            refilling: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn prepare_one(&self) -> Result<PreparedJail> {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("{}-{n}", std::process::id());
        PreparedJail::prepare(
            &name,
            self.sandbox_dir.join(&name),
            self.binds.clone(),
            &self.alias_ports,
        )
        .map_err(|e| Error::Internal(format!("{e:#}")))
    }

    /// A prepared sandbox: one from the pool, or a new one if the pool is empty. Blocking.
    /// The caller refills the pool once its sandbox has started, so that preparing the next
    /// one does not compete with this cold start for the CPU.
    fn take(self: &Arc<Self>) -> Result<PreparedJail> {
        let ready = self.ready.lock().ok().and_then(|mut r| r.pop());
        match ready {
            Some(jail) => Ok(jail),
            None => self.prepare_one(),
        }
    }

    /// Tops the pool up to its target on a background thread.
    pub fn refill_in_background(self: &Arc<Self>) {
        if self.target == 0 {
            return;
        }
        on_one_thread(
            self,
            |p| &p.refilling,
            "nimbus-jail-pool",
            |pool| {
                fill(
                    &pool.ready,
                    pool.target,
                    || true,
                    || pool.prepare_one(),
                    "a sandbox",
                )
            },
        );
    }

    /// Tears down every prepared sandbox.
    pub fn clear(&self) {
        let jails = self
            .ready
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default();
        drop(jails);
    }
}

impl ProcessConfig {
    /// Writes the bundled runtimes and clears sandbox directories left by an earlier run.
    pub fn install(&self) -> std::io::Result<()> {
        for (dir, file, content) in [
            ("python", "bootstrap.py", PYTHON_BOOTSTRAP),
            ("node", "bootstrap.js", NODE_BOOTSTRAP),
        ] {
            let path = self.runtime_dir.join(dir);
            std::fs::create_dir_all(&path)?;
            std::fs::write(path.join(file), content)?;
        }
        std::fs::write(
            self.runtime_dir.join("snapshot-restore-node.js"),
            NODE_HOOKS,
        )?;
        // Replaced, not rewritten: a runtime of another node on this directory may have the
        // addon mapped.
        let addon = self.runtime_dir.join("node").join("snapshot.node");
        let fresh = addon.with_extension(format!("node.{}", std::process::id()));
        std::fs::write(&fresh, NODE_SNAPSHOT_ADDON)?;
        set_mode(&fresh, 0o644)?;
        std::fs::rename(&fresh, &addon)?;
        // Where the SDKs are bound (empty directories when there are none).
        std::fs::create_dir_all(self.runtime_dir.join("python").join("sdk"))?;
        std::fs::create_dir_all(self.runtime_dir.join("node_modules"))?;
        set_mode(&self.runtime_dir, 0o755)?;
        if self.sandbox_dir.is_dir() {
            for entry in std::fs::read_dir(&self.sandbox_dir)?.flatten() {
                let _ = std::fs::remove_dir(entry.path());
            }
        }
        std::fs::create_dir_all(&self.sandbox_dir)
    }

    /// The program a runtime starts with, or why this node cannot run it.
    fn program(
        &self,
        asked: Runtime,
        code_dir: &Path,
        opt_dirs: &[PathBuf],
    ) -> Result<(PathBuf, Vec<String>)> {
        let runtime = self.host.effective(asked);
        let unavailable = || {
            Error::InvalidCode(format!(
                "The runtime {asked} is not available on this node. Available: wasm32-wasip1, wasi-http, {}{}",
                self.host.names().join(", "),
                if self.host.aliases.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; run on another by the node's [worker] runtime_aliases: {}",
                        self.host
                            .aliases
                            .iter()
                            .map(|(from, to)| format!("{from} on {to}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            ))
        };
        match runtime {
            Runtime::Provided(_) => {
                let executable = |dir: &Path| {
                    std::fs::metadata(dir.join("bootstrap"))
                        .map(|m| {
                            std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
                                && m.is_file()
                        })
                        .unwrap_or(false)
                };
                // The package's own bootstrap, else a layer's (a runtime shipped as a layer),
                // as Lambda looks for them.
                if executable(code_dir) {
                    Ok((PathBuf::from("/var/task/bootstrap"), vec![]))
                } else if opt_dirs.iter().any(|d| executable(d)) {
                    Ok((PathBuf::from("/opt/bootstrap"), vec![]))
                } else {
                    Err(Error::InvalidCode(
                        "a provided runtime needs an executable file named bootstrap at the root of the \
                         code package or of one of its layers"
                            .into(),
                    ))
                }
            }
            Runtime::Python { minor } if Some(minor) == self.host.python_minor => Ok((
                PathBuf::from(format!("/usr/bin/python3.{minor}")),
                vec!["-u".into(), "/var/runtime/python/bootstrap.py".into()],
            )),
            Runtime::Node { major } if Some(major) == self.host.node_major => Ok((
                PathBuf::from("/usr/bin/node"),
                vec!["/var/runtime/node/bootstrap.js".into()],
            )),
            _ => Err(unavailable()),
        }
    }

    /// Checks that a function of this runtime can start here, without starting it.
    pub(crate) fn check(
        &self,
        function: &FunctionConfig,
        code_dir: &Path,
        opt_dirs: &[PathBuf],
    ) -> Result<()> {
        nimbus_sandbox::check_support().map_err(|e| Error::InvalidCode(e.to_string()))?;
        self.program(function.runtime, code_dir, opt_dirs)
            .map(|_| ())
    }
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Lambda's environment for a runtime process, then the function's own variables (which may
/// override `AWS_ENDPOINT_URL`, not the credentials).
fn environment(
    function: &FunctionConfig,
    region: &str,
    log_stream: &str,
    init_type: InitType,
    services: bool,
    credentials: Option<&SessionCredentials>,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("AWS_LAMBDA_RUNTIME_API", format!("127.0.0.1:{}", nimbus_sandbox::RUNTIME_API_PORT)),
        ("_HANDLER", function.handler.clone()),
        ("LAMBDA_TASK_ROOT", "/var/task".to_owned()),
        ("LAMBDA_RUNTIME_DIR", "/var/runtime".to_owned()),
        ("AWS_LAMBDA_FUNCTION_NAME", function.name.clone()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", function.memory_mb.to_string()),
        ("AWS_LAMBDA_FUNCTION_VERSION", function.version.clone()),
        ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{}", function.name)),
        ("AWS_LAMBDA_LOG_STREAM_NAME", log_stream.to_owned()),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", init_type.as_str().to_owned()),
        ("AWS_REGION", region.to_owned()),
        ("AWS_DEFAULT_REGION", region.to_owned()),
        ("AWS_EXECUTION_ENV", format!("AWS_Lambda_{}", function.runtime)),
        ("TZ", ":UTC".to_owned()),
        ("LANG", "en_US.UTF-8".to_owned()),
        ("PATH", "/var/lang/bin:/usr/local/bin:/usr/bin:/bin:/opt/bin".to_owned()),
        (
            "LD_LIBRARY_PATH",
            "/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt/lib"
                .to_owned(),
        ),
        // Layers' packages come before the runtime's, as on Lambda.
        ("PYTHONPATH", match function.runtime {
            Runtime::Python { minor } => format!(
                "/opt/python/lib/python3.{minor}/site-packages:/opt/python:/var/runtime:{}",
                crate::sdk::PYTHON_SDK_MOUNT
            ),
            _ => format!("/var/runtime:{}", crate::sdk::PYTHON_SDK_MOUNT),
        }),
        ("NODE_PATH", match function.runtime {
            Runtime::Node { major } => format!(
                "/opt/nodejs/node{major}/node_modules:/opt/nodejs/node_modules:/var/runtime/node_modules:/var/runtime:/var/task"
            ),
            _ => "/opt/nodejs/node_modules:/var/runtime/node_modules:/var/runtime:/var/task".to_owned(),
        }),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    if services {
        env.push((
            "AWS_ENDPOINT_URL".to_owned(),
            format!("http://127.0.0.1:{}", nimbus_sandbox::SERVICES_PORT),
        ));
    }
    if let Some(c) = credentials {
        env.push(("AWS_ACCESS_KEY_ID".to_owned(), c.access_key_id.clone()));
        env.push((
            "AWS_SECRET_ACCESS_KEY".to_owned(),
            c.secret_access_key.clone(),
        ));
        env.push(("AWS_SESSION_TOKEN".to_owned(), c.session_token.clone()));
    }
    env.extend(
        function
            .environment
            .iter()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    env
}

/// What every start of a sandbox works out first: its log stream, uid, credentials and the
/// services router.
struct Launch {
    function: FunctionConfig,
    region: String,
    log_stream: String,
    uid: u32,
    init_type: InitType,
    credentials: Option<SessionCredentials>,
    services: Option<axum::Router>,
}

impl Launch {
    fn new(
        config: &ProcessConfig,
        function: &FunctionConfig,
        sandbox_id: u64,
        region: &str,
        init_type: InitType,
    ) -> Self {
        let day = nimbus_types::time::lambda_timestamp(nimbus_types::time::now_ms());
        let log_stream = format!(
            "{}/[{}]{sandbox_id:016x}",
            day.get(..10).unwrap_or("1970-01-01").replace('-', "/"),
            function.version
        );
        Self {
            function: function.clone(),
            region: region.to_owned(),
            log_stream,
            uid: UID_BASE + (sandbox_id % UID_RANGE) as u32,
            init_type,
            credentials: config
                .credentials
                .as_ref()
                .and_then(|issuer| issuer.issue(function)),
            services: config
                .services
                .read()
                .ok()
                .and_then(|router| router.clone()),
        }
    }

    /// The jail's spec; a template's (`template`) initialises for a snapshot.
    fn spec(
        &self,
        config: &ProcessConfig,
        code_dir: PathBuf,
        opt_dirs: Vec<PathBuf>,
        template: bool,
    ) -> Result<(JailSpec, Option<axum::Router>)> {
        let function = &self.function;
        let (program, mut args) = config.program(function.runtime, &code_dir, &opt_dirs)?;
        if template && matches!(function.runtime, Runtime::Node { .. }) {
            // A copy of a Node template has its main thread only: V8 must not hand work to
            // background threads (which would never run it). Nor may V8's memory reducer run:
            // its timer, armed in the template and due by the time a copy runs its event loop,
            // would start a full collection of the inherited heap in every copy at once, each
            // writing to (so copying) every page it marks.
            args.splice(
                0..0,
                ["--single-threaded", "--no-memory-reducer"].map(str::to_owned),
            );
        }
        let mut env = environment(
            function,
            &self.region,
            &self.log_stream,
            self.init_type,
            self.services.is_some(),
            self.credentials.as_ref(),
        );
        if function.starts_from_snapshot() {
            // As on Lambda: a SnapStart version's environments say so, from init on.
            for (key, value) in env.iter_mut() {
                if key == "AWS_LAMBDA_INITIALIZATION_TYPE" && self.init_type == InitType::OnDemand {
                    *value = "snap-start".to_owned();
                }
            }
        }
        if template {
            env.push(("_NIMBUS_SNAPSHOT".to_owned(), "template".to_owned()));
        }
        Ok((
            JailSpec {
                code_dir,
                opt_dirs,
                program,
                args,
                env,
                memory_mb: function.memory_mb,
                tmp_mb: function.ephemeral_storage_mb,
                pids_max: PIDS_MAX,
                uid: self.uid,
                gid: self.uid,
                template,
            },
            self.services.clone(),
        ))
    }
}

/// The error that refuses a SnapStart version whose initialisation failed, with what the
/// init printed last.
fn init_refusal(error: Option<FunctionError>, output: &[u8]) -> Error {
    let (kind, message) = error
        .map(|e| (e.error_type, e.error_message))
        .unwrap_or_else(|| ("Runtime.Unknown".into(), "the init failed".into()));
    let message = message.trim_start_matches("RequestId:  Error: ").to_owned();
    let log = String::from_utf8_lossy(output);
    let tail: String = log
        .lines()
        .rev()
        .take(5)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    Error::InvalidCode(if tail.is_empty() {
        format!("The snapshot could not be made: the function's init failed ({kind}): {message}")
    } else {
        format!(
            "The snapshot could not be made: the function's init failed ({kind}): {message}. Its log ended: {tail}"
        )
    })
}

/// What a snapshot depends on: the code, layers, runtime, handler and the settings its init
/// sees. Publishing gives the version a revision of its own, so the revision cannot say
/// whether a template made while publishing is the version's.
pub(crate) fn snapshot_fingerprint(function: &FunctionConfig) -> String {
    serde_json::json!({
        "account": function.account,
        "code": function.code.sha256,
        "layers": function.layers.iter().map(|l| &l.code.sha256).collect::<Vec<_>>(),
        "runtime": function.runtime.to_string(),
        "handler": function.handler,
        "memory": function.memory_mb,
        "tmp": function.ephemeral_storage_mb,
        "timeout": function.timeout_s,
        "environment": function.environment,
        "tags": function.tags.get(nimbus_types::function::EGRESS_TAG),
    })
    .to_string()
}

/// A SnapStart version's snapshot: a runtime that ran the version's initialisation in a jail of
/// its own and now forks a copy of itself into each new environment's jail
/// ([`nimbus_sandbox::restore`]). The copies share the template's pages until they write.
pub(crate) struct SnapshotTemplate {
    sandbox: ProcessSandbox,
    /// The connection the template waits on for fork requests; one request at a time.
    control: Mutex<std::os::unix::net::UnixStream>,
    /// The template's pid as the worker sees it: each copy must be its child.
    pid: u32,
    pub(crate) owner: nimbus_sandbox::restore::Owner,
    /// What it was initialised from ([`snapshot_fingerprint`]).
    pub(crate) fingerprint: String,
    pub(crate) init_duration_us: u64,
    /// What the initialisation printed, given to the first restored environment's log.
    init_log: Mutex<Option<Vec<u8>>>,
    /// The spec of each environment's jail but its uid; its way out, if it has one.
    copy_spec: JailSpec,
    copy_egress: Option<Arc<nimbus_sandbox::Egress>>,
    /// Where jails are made (their directory, the binds, the node's port).
    jails: Arc<JailPool>,
    /// The worker's sandbox ids, from which each copy's uid comes.
    ids: Arc<std::sync::atomic::AtomicU64>,
    /// Copies restored ahead of need: in their jails and confined, without their variables,
    /// credentials or hooks yet.
    ready: Mutex<Vec<PreparedCopy>>,
    refilling: std::sync::atomic::AtomicBool,
    /// Its version is gone: no more copies are made.
    retired: std::sync::atomic::AtomicBool,
}

/// How many copies of a template wait restored ahead of need.
const READY_COPIES: usize = 1;

/// A copy of a template in its own jail, confined, waiting for its environment's variables.
pub(crate) struct PreparedCopy {
    jail: nimbus_sandbox::Jail,
    channel: std::os::unix::net::UnixStream,
}

impl PreparedCopy {
    /// Gives the copy its variables (credentials, log stream and the rest): it re-seeds its
    /// random numbers, runs the after-restore hooks and asks for its first invocation.
    fn claim(self, env: &[(String, String)]) -> Result<nimbus_sandbox::Jail> {
        let env: serde_json::Map<String, serde_json::Value> = env
            .iter()
            .filter(|(k, _)| k != "_NIMBUS_SNAPSHOT")
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        let mut message = serde_json::to_vec(&serde_json::json!({ "env": env }))
            .map_err(|e| Error::Internal(format!("encoding the environment: {e}")))?;
        message.push(b'\n');
        std::io::Write::write_all(&mut &self.channel, &message).map_err(|e| {
            Error::Internal(format!(
                "restoring from the snapshot: the copy is gone: {e}"
            ))
        })?;
        Ok(self.jail)
    }
}

impl SnapshotTemplate {
    /// Whether the template still runs: its end of the control socket is open. (Its jail's
    /// init outlives it, holding its output open, for the environments below it.)
    pub(crate) fn alive(&self) -> bool {
        let Ok(control) = self.control.lock() else {
            return false;
        };
        // The template sends nothing after it is ready: a read sees only its end.
        match std::io::Read::read(&mut &*control, &mut [0u8; 16]) {
            Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
            Ok(n) => n > 0,
        }
    }

    /// Memory the template holds, which its environments share.
    pub(crate) fn memory_bytes(&self) -> u64 {
        self.sandbox.peak_memory_bytes()
    }

    /// What the template's init printed, once.
    pub(crate) fn take_init_log(&self) -> Option<Vec<u8>> {
        self.init_log.lock().ok().and_then(|mut l| l.take())
    }

    /// Stops making copies: the version is gone.
    pub(crate) fn retire(&self) {
        self.retired
            .store(true, std::sync::atomic::Ordering::Release);
        if let Ok(mut ready) = self.ready.lock() {
            ready.clear();
        }
    }

    /// A copy restored ahead of need, or one restored now; and whether it was ready. Blocking.
    fn take_copy(&self) -> Result<(PreparedCopy, bool)> {
        if let Some(copy) = self.ready.lock().ok().and_then(|mut r| r.pop()) {
            return Ok((copy, true));
        }
        self.prepare_copy().map(|copy| (copy, false))
    }

    /// Restores copies ahead of need on a background thread, up to [`READY_COPIES`].
    pub(crate) fn refill_in_background(self: &Arc<Self>) {
        on_one_thread(
            self,
            |t| &t.refilling,
            "nimbus-snapshot-pool",
            |template| {
                fill(
                    &template.ready,
                    READY_COPIES,
                    || {
                        template.alive()
                            && !template.retired.load(std::sync::atomic::Ordering::Acquire)
                    },
                    || template.prepare_copy(),
                    "an environment restored from a snapshot",
                )
            },
        );
    }

    /// Makes a jail for a new environment and forks the template into it. Blocking.
    fn prepare_copy(&self) -> Result<PreparedCopy> {
        let id = self.ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let uid = UID_BASE + (id % UID_RANGE) as u32;
        let spec = JailSpec {
            uid,
            gid: uid,
            ..self.copy_spec.clone()
        };
        let name = format!("{}-r{id}", std::process::id());
        let target = nimbus_sandbox::Jail::for_restore(
            &name,
            self.jails.sandbox_dir.join(&name),
            self.jails.binds.clone(),
            &self.jails.alias_ports,
            &spec,
            self.owner,
            self.copy_egress.as_ref(),
        )
        .map_err(|e| Error::Internal(format!("{e:#}")))?;
        self.fork_into(target, &spec)
    }

    /// Forks the template into `target` and waits until the copy is confined in it. Blocking.
    fn fork_into(
        &self,
        target: nimbus_sandbox::restore::RestoreTarget,
        spec: &JailSpec,
    ) -> Result<PreparedCopy> {
        use nimbus_sandbox::restore::{parent_of, pass_credentials, recv_with_pid, send_with_fds};
        use std::os::fd::AsRawFd;
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            Error::Internal(format!("restoring from the snapshot: {what}: {e}"))
        };
        let (ours, theirs) =
            std::os::unix::net::UnixStream::pair().map_err(|e| failed("socket pair", &e))?;
        pass_credentials(&ours).map_err(|e| failed("socket pair", &e))?;
        ours.set_read_timeout(Some(INIT_TIMEOUT))
            .map_err(|e| failed("socket pair", &e))?;
        {
            let control = self
                .control
                .lock()
                .map_err(|_| Error::Internal("template lock poisoned".into()))?;
            send_with_fds(&control, b"F\n", &[theirs.as_raw_fd()])
                .map_err(|e| failed("asking the template to fork", &e))?;
        }
        drop(theirs);
        let (hello, pid) = recv_with_pid(&ours)
            .map_err(|e| failed("waiting for the copy", &e))?
            .ok_or_else(|| failed("waiting for the copy", &"the template is gone"))?;
        if hello != b"hello\n" || parent_of(pid) != Some(self.pid) {
            return Err(failed(
                "waiting for the copy",
                &format!("process {pid} is not a copy of the template"),
            ));
        }
        target
            .jail
            .adopt(pid)
            .map_err(|e| failed("moving the copy into its cgroup", &e))?;
        let mut message = serde_json::to_vec(&serde_json::json!({
            "uid": spec.uid,
            "gid": spec.gid,
        }))
        .map_err(|e| failed("encoding the environment", &e))?;
        message.push(b'\n');
        send_with_fds(
            &ours,
            &message,
            &[
                target.pidfd.as_raw_fd(),
                target.stdout.as_raw_fd(),
                target.stderr.as_raw_fd(),
            ],
        )
        .map_err(|e| failed("handing the copy its jail", &e))?;
        let jail = target.jail;
        drop((target.pidfd, target.stdout, target.stderr));
        let (ok, _) = recv_with_pid(&ours)
            .map_err(|e| failed("waiting for the copy to enter its jail", &e))?
            .ok_or_else(|| {
                failed(
                    "waiting for the copy to enter its jail",
                    &"it exited before it was in",
                )
            })?;
        if ok != b"ok\n" {
            let said = String::from_utf8_lossy(&ok);
            return Err(failed("entering the jail", &said.trim()));
        }
        jail.verify_restored(spec.uid, spec.gid)
            .map_err(|e| failed("checking the restored environment", &e))?;
        // From here the copy waits for its variables without a deadline.
        ours.set_read_timeout(None)
            .map_err(|e| failed("socket pair", &e))?;
        Ok(PreparedCopy {
            jail,
            channel: ours,
        })
    }
}

impl Drop for SnapshotTemplate {
    fn drop(&mut self) {
        self.sandbox.destroy();
    }
}

/// How an invocation in a process sandbox ended.
pub(crate) enum ProcessResult {
    Response(Bytes),
    Error(Bytes, FunctionError),
    /// The response was over this many bytes.
    TooLarge(usize),
    /// The runtime exited (or was killed by the kernel) before answering.
    Exited {
        status: Option<i32>,
        out_of_memory: bool,
    },
    TimedOut,
    InitFailed(Bytes, FunctionError),
}

pub(crate) struct ProcessSandbox {
    jail: Mutex<Option<nimbus_sandbox::Jail>>,
    api: Arc<RuntimeApi>,
    queue: mpsc::Sender<Pending>,
    output: Arc<Mutex<Vec<u8>>>,
    /// stdout and stderr, read by their pumps and drained by `take_output`.
    pipes: [Pipe; 2],
    exited: watch::Receiver<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// How many of `tasks`, first, serve the Runtime API and the services (the rest pump).
    serving: usize,
    function_arn: String,
    pub(crate) setup_us: u64,
    init_failure: Mutex<Option<(Bytes, FunctionError)>>,
    /// The template a restored sandbox came from: its jail (the parent of this one's pid
    /// namespace) must outlive this sandbox.
    template: Option<Arc<SnapshotTemplate>>,
}

/// A sandbox's stdout or stderr, once its pump has opened it.
type Pipe = Arc<std::sync::OnceLock<tokio::net::unix::pipe::Receiver>>;

/// Moves what `pipe` holds now into `output`, without waiting; false at end of file. The
/// output's lock is held while reading, so that the pump and [`ProcessSandbox::take_output`]
/// never append out of order.
fn drain(pipe: &tokio::net::unix::pipe::Receiver, output: &Mutex<Vec<u8>>) -> bool {
    let mut buf = [0u8; 16 * 1024];
    let Ok(mut out) = output.lock() else {
        return false;
    };
    loop {
        match pipe.try_read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => {
                // Keep the log bounded if a function writes without end.
                if out.len() < nimbus_types::limits::MAX_FUNCTION_LOG_BYTES * 4 {
                    out.extend_from_slice(&buf[..n]);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// Copies a sandbox's stdout or stderr into its output buffer until EOF, on `io`. The pipe is
/// opened inside the task, so that it registers with that runtime's reactor, and published in
/// `slot`, so that whoever takes the output first reads what is already in the pipe: a
/// runtime writes its log lines before it posts the response, but this task may not have run
/// since.
fn pump(
    io: &tokio::runtime::Handle,
    open: impl FnOnce() -> Option<std::os::fd::OwnedFd> + Send + 'static,
    slot: Pipe,
    output: Arc<Mutex<Vec<u8>>>,
    open_streams: Arc<std::sync::atomic::AtomicUsize>,
    exited: Arc<watch::Sender<bool>>,
) -> JoinHandle<()> {
    io.spawn(async move {
        let receiver =
            open().and_then(|fd| tokio::net::unix::pipe::Receiver::from_owned_fd(fd).ok());
        if let Some(receiver) = receiver {
            let pipe = slot.get_or_init(|| receiver);
            while pipe.readable().await.is_ok() && drain(pipe, &output) {}
        }
        if open_streams.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
            let _ = exited.send(true);
        }
    })
}

impl ProcessSandbox {
    /// Starts the runtime and waits for it to ask for its first invocation.
    pub(crate) async fn start(
        config: &ProcessConfig,
        function: &FunctionConfig,
        code_dir: PathBuf,
        opt_dirs: Vec<PathBuf>,
        sandbox_id: u64,
        region: &str,
        init_type: InitType,
    ) -> Result<Self> {
        let launch = Launch::new(config, function, sandbox_id, region, init_type);
        let (spec, services) = launch.spec(config, code_dir, opt_dirs, false)?;
        let pool = config.pool.clone();
        let egress = config.egress.clone();
        let function_for_egress = function.clone();
        let jail = tokio::task::spawn_blocking(move || {
            let way_out = egress.for_function(&function_for_egress)?;
            let started = pool
                .take()?
                .start(spec, way_out.as_ref())
                .map_err(|e| Error::Internal(format!("{e:#}")));
            pool.refill_in_background();
            started
        })
        .await
        .map_err(|e| Error::Internal(format!("starting a sandbox panicked: {e}")))??;
        let sandbox = Self::serve(config, function, jail, services, region)?;
        sandbox.wait_ready().await;
        Ok(sandbox)
    }

    /// Starts the snapshot template of a SnapStart version: its runtime initialises the
    /// function, runs the before-snapshot hooks and connects to the worker, waiting to be
    /// forked. Fails with the init's error as a normal start would report it.
    pub(crate) async fn start_template(
        config: &ProcessConfig,
        function: &FunctionConfig,
        code_dir: PathBuf,
        opt_dirs: Vec<PathBuf>,
        ids: Arc<std::sync::atomic::AtomicU64>,
        region: &str,
    ) -> Result<SnapshotTemplate> {
        let started = Instant::now();
        let sandbox_id = ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let launch = Launch::new(config, function, sandbox_id, region, InitType::OnDemand);
        let (spec, services) = launch.spec(config, code_dir, opt_dirs, true)?;
        let (uid, gid) = (spec.uid, spec.gid);
        // What each environment's jail is made from (its uid and variables are its own).
        let copy_spec = JailSpec {
            env: Vec::new(),
            template: false,
            ..spec.clone()
        };
        let copy_egress = config.egress.for_function(function)?;
        let pool = config.pool.clone();
        let egress = config.egress.clone();
        let function_for_egress = function.clone();
        let (jail, socket) = tokio::task::spawn_blocking(move || {
            let way_out = egress.for_function(&function_for_egress)?;
            let prepared = pool.take()?;
            let socket = prepared
                .bind_template_socket()
                .map_err(|e| Error::Internal(format!("{e:#}")))?;
            let started = prepared
                .start(spec, way_out.as_ref())
                .map_err(|e| Error::Internal(format!("{e:#}")));
            pool.refill_in_background();
            started.map(|jail| (jail, socket))
        })
        .await
        .map_err(|e| Error::Internal(format!("starting a sandbox panicked: {e}")))??;
        let sandbox = Self::serve(config, function, jail, services, region)?;
        socket
            .set_nonblocking(true)
            .map_err(|e| Error::Internal(format!("template socket: {e}")))?;
        let socket = tokio::net::UnixListener::from_std(socket)
            .map_err(|e| Error::Internal(format!("template socket: {e}")))?;
        let mut exited = sandbox.exited.clone();
        let failure = tokio::select! {
            accepted = socket.accept() => match accepted {
                Ok((stream, _)) => Ok(stream),
                Err(e) => Err(Error::Internal(format!("template socket: {e}"))),
            },
            _ = sandbox.api.init_failed.notified() => {
                let error = sandbox.api.init_error.lock().ok().and_then(|mut e| e.take());
                Err(init_refusal(error.map(|(_, e)| e), &sandbox.take_output()))
            }
            () = wait_exit(&mut exited) => {
                let status = sandbox.exit_status().await;
                Err(init_refusal(Some(FunctionError::new(
                    "Runtime.ExitError",
                    format!("Runtime exited with error: {}", describe_exit(status)),
                )), &sandbox.take_output()))
            }
            _ = tokio::time::sleep(INIT_TIMEOUT) => Err(init_refusal(Some(FunctionError::new(
                "Sandbox.Timedout",
                format!("Task timed out after {}.00 seconds during init", INIT_TIMEOUT.as_secs()),
            )), &sandbox.take_output())),
        };
        let stream = match failure {
            Ok(stream) => stream,
            Err(e) => {
                tokio::task::spawn_blocking(move || sandbox.destroy())
                    .await
                    .ok();
                return Err(e);
            }
        };
        // The template says it is ready; the read may wait, so not on the executor.
        let handshake = tokio::task::spawn_blocking(move || {
            let fail = |e: std::io::Error| Error::Internal(format!("template socket: {e}"));
            let control = stream
                .into_std()
                .and_then(|s| s.set_nonblocking(false).map(|()| s))
                .map_err(fail)?;
            let pid = nimbus_sandbox::restore::peer_pid(&control).map_err(fail)?;
            control
                .set_read_timeout(Some(INIT_TIMEOUT))
                .map_err(fail)?;
            let mut ready = [0u8; 6];
            std::io::Read::read_exact(&mut &control, &mut ready).map_err(|e| {
                Error::InvalidCode(format!(
                    "The snapshot could not be made: the runtime did not say it was initialised ({e})"
                ))
            })?;
            if &ready != b"ready\n" {
                return Err(Error::InvalidCode(
                    "The snapshot could not be made: the runtime did not say it was initialised"
                        .into(),
                ));
            }
            // Fork requests are small enough never to block; reads only check that it is
            // alive.
            control.set_nonblocking(true).map_err(fail)?;
            Ok((control, pid))
        })
        .await
        .map_err(|e| Error::Internal(format!("the template's handshake panicked: {e}")))
        .and_then(|r| r);
        let (control, pid) = match handshake {
            Ok(done) => done,
            Err(e) => {
                tokio::task::spawn_blocking(move || sandbox.destroy())
                    .await
                    .ok();
                return Err(e);
            }
        };
        // Initialised: the template has no more use for its Runtime API or the services, and
        // its copies reach their own.
        sandbox.stop_serving();
        let init_log = sandbox.take_output();
        Ok(SnapshotTemplate {
            sandbox,
            control: Mutex::new(control),
            pid,
            owner: nimbus_sandbox::restore::Owner { uid, gid, pid },
            fingerprint: snapshot_fingerprint(function),
            init_duration_us: started.elapsed().as_micros() as u64,
            init_log: Mutex::new(Some(init_log)),
            copy_spec,
            copy_egress,
            jails: config.pool.clone(),
            ids,
            ready: Mutex::new(Vec::new()),
            refilling: std::sync::atomic::AtomicBool::new(false),
            retired: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Starts an environment of a SnapStart version from its template: a jail of its own, into
    /// which a fork of the template moves; it re-seeds, runs the after-restore hooks and asks
    /// for its first invocation.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn start_restored(
        config: &ProcessConfig,
        function: &FunctionConfig,
        template: &Arc<SnapshotTemplate>,
        code_dir: PathBuf,
        opt_dirs: Vec<PathBuf>,
        sandbox_id: u64,
        region: &str,
        init_type: InitType,
    ) -> Result<Self> {
        let launch = Launch::new(config, function, sandbox_id, region, init_type);
        let (spec, services) = launch.spec(config, code_dir, opt_dirs, false)?;
        let started = Instant::now();
        let taken = template.clone();
        let (copy, prepared) = tokio::task::spawn_blocking(move || taken.take_copy())
            .await
            .map_err(|e| Error::Internal(format!("restoring a sandbox panicked: {e}")))??;
        let taken_us = started.elapsed().as_micros() as u64;
        let jail = copy.claim(&spec.env)?;
        let mut sandbox = Self::serve(config, function, jail, services, region)?;
        sandbox.template = Some(template.clone());
        sandbox.wait_ready().await;
        // The next copy is restored once this one is ready, so as not to compete with it for
        // the CPU.
        template.refill_in_background();
        tracing::debug!(
            prepared,
            taken_us,
            ready_us = started.elapsed().as_micros() as u64,
            "restored sandbox ready"
        );
        Ok(sandbox)
    }

    /// Serves a started jail's Runtime API and services, and pumps its output.
    fn serve(
        config: &ProcessConfig,
        function: &FunctionConfig,
        mut jail: nimbus_sandbox::Jail,
        services: Option<axum::Router>,
        region: &str,
    ) -> Result<Self> {
        let setup_us = jail.setup.as_micros() as u64;
        let (api, queue) = RuntimeApi::new();
        let listener = jail
            .take_listener()
            .ok_or_else(|| Error::Internal("the sandbox has no Runtime API listener".into()))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::Internal(format!("runtime api listener: {e}")))?;
        let app = router(api.clone());
        let mut tasks = vec![config.io.spawn(async move {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => {
                    let listener = crate::runtime_api::BoundedListener::new(listener);
                    let _ = axum::serve(listener, app).await;
                }
                Err(e) => tracing::error!(error = %e, "could not serve a sandbox's Runtime API"),
            }
        })];
        // The node's APIs on the services port (and the node's own port), each with the same
        // cap on connections as the Runtime API; without a router the listeners are dropped
        // and the ports refuse connections.
        let listeners = jail.take_services_listeners();
        for (listener, router) in listeners
            .into_iter()
            .filter_map(|l| Some((l, services.clone()?)))
        {
            listener
                .set_nonblocking(true)
                .map_err(|e| Error::Internal(format!("services listener: {e}")))?;
            tasks.push(config.io.spawn(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => {
                        let listener = crate::runtime_api::BoundedListener::new(listener);
                        let _ = axum::serve(listener, router).await;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "could not serve a sandbox's services port")
                    }
                }
            }));
        }
        let output = Arc::new(Mutex::new(Vec::new()));
        let (exited_tx, exited) = watch::channel(false);
        let exited_tx = Arc::new(exited_tx);
        let open = Arc::new(std::sync::atomic::AtomicUsize::new(2));
        let pipes: [Pipe; 2] = Default::default();
        let serving = tasks.len();
        let stdout = jail.take_stdout();
        tasks.push(pump(
            &config.io,
            move || stdout,
            pipes[0].clone(),
            output.clone(),
            open.clone(),
            exited_tx.clone(),
        ));
        let stderr = jail.take_stderr();
        tasks.push(pump(
            &config.io,
            move || stderr,
            pipes[1].clone(),
            output.clone(),
            open.clone(),
            exited_tx.clone(),
        ));
        let sandbox = Self {
            jail: Mutex::new(Some(jail)),
            api,
            queue,
            output,
            pipes,
            exited,
            tasks,
            serving,
            function_arn: function.arn(region),
            setup_us,
            init_failure: Mutex::new(None),
            template: None,
        };
        Ok(sandbox)
    }

    /// Waits until the runtime calls `next`; records why not if it fails or exits first.
    async fn wait_ready(&self) {
        let mut exited = self.exited.clone();
        let failure = tokio::select! {
            _ = self.api.ready.notified() => None,
            _ = self.api.init_failed.notified() => {
                self.api.init_error.lock().ok().and_then(|mut e| e.take())
            }
            () = wait_exit(&mut exited) => {
                let status = self.exit_status().await;
                let error = FunctionError::new(
                    "Runtime.ExitError",
                    format!("RequestId:  Error: Runtime exited with error: {}", describe_exit(status)),
                );
                Some((error.to_json(), error))
            }
            _ = tokio::time::sleep(INIT_TIMEOUT) => {
                let error = FunctionError::new(
                    "Sandbox.Timedout",
                    format!("RequestId:  Error: Task timed out after {}.00 seconds during init", INIT_TIMEOUT.as_secs()),
                );
                Some((error.to_json(), error))
            }
        };
        if let Some(failure) = failure
            && let Ok(mut slot) = self.init_failure.lock()
        {
            *slot = Some(failure);
        }
    }

    async fn exit_status(&self) -> Option<i32> {
        for _ in 0..100 {
            let status = self
                .jail
                .lock()
                .ok()
                .and_then(|mut j| j.as_mut().and_then(|j| j.try_wait()));
            if let Some(status) = status {
                return status.code();
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        None
    }

    pub(crate) fn take_output(&self) -> Vec<u8> {
        for pipe in self.pipes.iter().filter_map(|p| p.get()) {
            drain(pipe, &self.output);
        }
        self.output
            .lock()
            .map(|mut o| std::mem::take(&mut *o))
            .unwrap_or_default()
    }

    pub(crate) fn peak_memory_bytes(&self) -> u64 {
        self.jail
            .lock()
            .ok()
            .and_then(|j| j.as_ref().map(|j| j.peak_memory_bytes()))
            .unwrap_or(0)
    }

    fn out_of_memory(&self) -> bool {
        self.jail
            .lock()
            .ok()
            .and_then(|j| j.as_ref().map(|j| j.stats().oom_kills > 0))
            .unwrap_or(false)
    }

    /// Runs one invocation through the Runtime API.
    pub(crate) async fn invoke(
        &self,
        request_id: &str,
        payload: Bytes,
        client_context: Option<String>,
        stream: Option<nimbus_types::ResponseStream>,
        qualifier: Option<String>,
        timeout: Duration,
    ) -> ProcessResult {
        if let Some((payload, error)) = self.init_failure.lock().ok().and_then(|f| f.clone()) {
            return ProcessResult::InitFailed(payload, error);
        }
        // Max Memory Used is, as on Lambda, the peak of the sandbox so far: no reset per call.
        let deadline = Instant::now() + timeout;
        let deadline_ms = nimbus_types::time::now_ms() + timeout.as_millis() as i64;
        let (reply_tx, reply_rx) = oneshot::channel();
        let pending = Pending {
            request_id: request_id.to_owned(),
            payload,
            deadline_ms,
            function_arn: match qualifier {
                Some(q) => format!("{}:{q}", self.function_arn),
                None => self.function_arn.clone(),
            },
            client_context,
            trace_id: format!(
                "Root=1-{:08x}-{}",
                deadline_ms / 1000,
                &request_id.replace('-', "")[..24.min(request_id.len())]
            ),
            reply: reply_tx,
            stream,
        };
        let mut exited = self.exited.clone();
        if self.queue.send(pending).await.is_err() {
            return ProcessResult::Exited {
                status: None,
                out_of_memory: false,
            };
        }
        let result = tokio::select! {
            reply = reply_rx => match reply {
                Ok(Reply::Response(body)) => ProcessResult::Response(body),
                Ok(Reply::Error(body, error)) => ProcessResult::Error(body, error),
                Ok(Reply::TooLarge(limit)) => ProcessResult::TooLarge(limit),
                Err(_) => ProcessResult::Exited { status: None, out_of_memory: false },
            },
            () = wait_exit(&mut exited) => {
                let status = self.exit_status().await;
                ProcessResult::Exited { status, out_of_memory: self.out_of_memory() }
            }
            _ = tokio::time::sleep_until(deadline.into()) => ProcessResult::TimedOut,
        };
        // Give the output pumps a moment to move what the runtime printed just before it
        // answered into this invocation's log.
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        result
    }

    /// Closes the sandbox's Runtime API and services ports.
    fn stop_serving(&self) {
        for task in self.tasks.iter().take(self.serving) {
            task.abort();
        }
    }

    /// Kills the sandbox and removes what it left on the host. Blocking.
    pub(crate) fn destroy(&self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Some(jail) = self.jail.lock().ok().and_then(|mut j| j.take()) {
            drop(jail);
        }
    }
}

/// Resolves once the sandbox's output streams have closed: its processes are gone.
async fn wait_exit(exited: &mut watch::Receiver<bool>) {
    let _ = exited.wait_for(|e| *e).await;
}

pub(crate) fn describe_exit(status: Option<i32>) -> String {
    match status {
        Some(code) if code > 128 => format!("signal: {}", signal_name(code - 128)),
        Some(code) => format!("exit status {code}"),
        None => "signal: killed".to_owned(),
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        9 => "killed",
        6 => "aborted",
        11 => "segmentation fault",
        15 => "terminated",
        _ => "killed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(n: &str) -> FunctionConfig {
        FunctionConfig {
            name: "f".into(),
            account: nimbus_types::name::DEFAULT_ACCOUNT.into(),
            runtime: Runtime::Python { minor: 11 },
            handler: "app.handler".into(),
            role: String::new(),
            description: String::new(),
            memory_mb: 128,
            timeout_s: 3,
            environment: Default::default(),
            ephemeral_storage_mb: 512,
            code: nimbus_types::function::CodeRef {
                sha256: "00".repeat(32),
                size: 1,
            },
            revision_id: format!("revision-{n}"),
            last_modified_ms: 0,
            version: n.into(),
            event_invoke: None,
            last_published: 0,
            reserved_concurrency: None,
            provisioned: Default::default(),
            tags: Default::default(),
            urls: Default::default(),
            permissions: Vec::new(),
            aliases: Default::default(),
            snap_start: nimbus_types::function::SnapStart::PublishedVersions,
            layers: Vec::new(),
        }
    }

    #[test]
    fn a_snapshot_made_while_publishing_is_the_published_versions() {
        // Publishing gives the version a revision of its own: the snapshot made for the
        // candidate must still count as the version's.
        let candidate = version("1");
        let mut published = candidate.clone();
        published.revision_id = "another".into();
        published.description = "described".into();
        assert_eq!(
            snapshot_fingerprint(&candidate),
            snapshot_fingerprint(&published)
        );
    }

    #[test]
    fn anything_the_init_sees_makes_another_snapshot() {
        let base = snapshot_fingerprint(&version("1"));
        let mut changed = Vec::new();
        let mut f = version("1");
        f.code.sha256 = "11".repeat(32);
        changed.push(f);
        let mut f = version("1");
        f.environment.insert("TABLE".into(), "primes".into());
        changed.push(f);
        let mut f = version("1");
        f.handler = "other.handler".into();
        changed.push(f);
        let mut f = version("1");
        f.memory_mb = 256;
        changed.push(f);
        let mut f = version("1");
        f.account = "111111111111".into();
        changed.push(f);
        for f in changed {
            assert_ne!(snapshot_fingerprint(&f), base, "{f:?}");
        }
    }

    #[test]
    fn a_refused_init_names_its_error_and_the_end_of_its_log() {
        let error = init_refusal(
            Some(FunctionError::new(
                "RuntimeError",
                "RequestId:  Error: no database",
            )),
            b"line 1\nline 2\n",
        );
        let Error::InvalidCode(message) = error else {
            panic!("not the user's error");
        };
        assert!(message.contains("(RuntimeError): no database"), "{message}");
        assert!(message.ends_with("line 1\nline 2"), "{message}");
    }
}
