//! WebAssembly sandboxes on wasmtime: the only crate that imports wasmtime.
//!
//! A function of runtime `wasm32-wasip1` is a WASI command module. It is compiled once when it is
//! deployed and the compiled artifact is cached on disk; a [`WasmTemplate`] (a pre-linked
//! `InstancePre`) is the warm state of a sandbox, and every invocation runs in a fresh instance
//! taken from the pooling allocator, so nothing leaks from one invocation to the next. Timeouts
//! use epoch interruption, which also makes long computations yield to the async executor, and
//! linear memory is capped by a resource limiter.
//!
//! A function of runtime `wasi-http` is a component exporting `wasi:http/incoming-handler`
//! ([`http`]): the same engine and pool, one instance per request.

#![deny(unsafe_code)]

mod artifact;
mod http;
mod limits;
mod preinit;

pub use http::{Egress, HttpInput, HttpOutput, HttpTemplate};
pub use preinit::{INIT_EXPORT, has_init_export};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolingAllocationConfig, Store, UpdateDeadline,
};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wasmtime_wasi::{I32Exit, WasiCtxBuilder};

use crate::limits::MemoryLimiter;

/// The largest linear memory a 32-bit module can address.
const MAX_WASM32_MEMORY: u64 = 4 << 30;
/// How often the epoch advances: the granularity of timeouts and of cooperative yielding.
const EPOCH_TICK: Duration = Duration::from_millis(1);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The module was refused; the message is meant for the user.
    #[error("{0}")]
    InvalidModule(String),
    #[error("could not read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not set up the wasm engine: {0}")]
    Engine(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
pub struct WasmConfig {
    /// How many instances may run at once; the pooling allocator reserves this many slots.
    pub max_instances: u32,
    /// Where compiled artifacts are cached.
    pub cache_dir: PathBuf,
    /// Bytes the pre-initialised modules of SnapStart versions may take on disk together; 0
    /// for no bound. The least recently used go first (made again from their version's code
    /// when next needed); one larger than the bound alone is refused.
    pub snapshot_disk_limit: u64,
}

struct StoreState {
    wasi: WasiP1Ctx,
    limiter: MemoryLimiter,
}

/// The engine, its linker and the cache of compiled modules.
pub struct WasmRuntime {
    engine: Engine,
    linker: Linker<StoreState>,
    http_linker: wasmtime::component::Linker<http::HttpState>,
    cache_dir: PathBuf,
    /// [`WasmConfig::snapshot_disk_limit`].
    snapshot_disk_limit: u64,
    /// Compiled modules by the sha256 of their bytes; `Module` is a cheap handle.
    modules: Mutex<HashMap<String, Module>>,
    /// Compiled components, likewise.
    components: Mutex<HashMap<String, wasmtime::component::Component>>,
    /// Templates of pre-initialised modules by their cache name ([`preinit_name`]).
    preinitialized: Mutex<HashMap<String, WasmTemplate>>,
    /// One initialisation at a time: each may hold a function's whole memory.
    initializing: Mutex<()>,
}

/// The start of the cache names of a function's pre-initialised modules (`function` is its
/// key), or of one version's.
fn preinit_prefix(function: &str, version: Option<&str>) -> String {
    let function = &artifact::digest(function.as_bytes())[..32];
    match version {
        Some(v) => {
            let v: String = v.chars().filter(char::is_ascii_alphanumeric).collect();
            format!("preinit-{function}-{v}-")
        }
        None => format!("preinit-{function}-"),
    }
}

/// The cache name of a pre-initialised module of `owner` (`function:version`): its function
/// and version can be found from the name, so that deleting them deletes it, after a restart
/// too.
fn preinit_name(owner: &str, key: &str) -> String {
    let (function, version) = owner.rsplit_once(':').unwrap_or((owner, ""));
    format!("{}{key}.preinit", preinit_prefix(function, Some(version)))
}

/// The pre-initialised modules in `dir`: name, bytes and when last made or read, least
/// recently first. With `migrate`, those cached under an older naming (which could not be told
/// apart by version) are deleted: they are made again when needed.
fn preinit_files(dir: &Path, migrate: bool) -> Vec<(String, u64, std::time::SystemTime)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let preinit = name.ends_with(".preinit") || name.ends_with(".preinit.sha256");
        if migrate && preinit && !name.starts_with("preinit-") {
            let _ = std::fs::remove_file(entry.path());
        } else if name.starts_with("preinit-")
            && name.ends_with(".preinit")
            && let Ok(meta) = entry.metadata()
        {
            let used = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
            files.push((name, meta.len(), used));
        }
    }
    files.sort_by(|a, b| a.2.cmp(&b.2).then_with(|| a.0.cmp(&b.0)));
    files
}

/// Whole megabytes, rounded up, for messages.
fn megabytes(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20)
}

/// A module linked against WASI and ready to instantiate: the warm state of a wasm sandbox.
#[derive(Clone)]
pub struct WasmTemplate {
    pre: InstancePre<StoreState>,
}

/// What one run is given.
pub struct RunInput {
    pub stdin: Bytes,
    pub env: Vec<(String, String)>,
    pub memory_limit_bytes: u64,
    pub timeout: Duration,
    /// Output past this many bytes fails the run with [`RunStatus::OutputTooLarge`].
    pub stdout_limit: usize,
    /// Log output past this many bytes is cut.
    pub stderr_limit: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunStatus {
    /// `_start` returned, or the module called `proc_exit`, with this status.
    Exited(i32),
    Trapped(String),
    TimedOut,
    OutOfMemory,
    OutputTooLarge,
}

#[derive(Debug)]
pub struct RunOutput {
    pub status: RunStatus,
    pub stdout: Bytes,
    pub stderr: Bytes,
    pub peak_memory_bytes: u64,
}

/// Raised from the epoch callback when an invocation runs out of time.
#[derive(Debug)]
struct DeadlineExceeded;

impl std::fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline exceeded")
    }
}

impl std::error::Error for DeadlineExceeded {}

impl WasmRuntime {
    pub fn new(config: &WasmConfig) -> Result<Self> {
        let mut pool = PoolingAllocationConfig::default();
        // A component instance is several core instances (the program and the shims that
        // adapt its imports), so components need more slots than modules.
        let n = config.max_instances;
        pool.total_core_instances(n.saturating_mul(4))
            .total_memories(n.saturating_mul(2))
            .total_tables(n.saturating_mul(4))
            .total_stacks(n)
            .total_component_instances(n)
            .total_gc_heaps(0)
            .max_memory_size(MAX_WASM32_MEMORY as usize)
            // Reset a slot by rewriting only the pages the last instance dirtied (found with
            // the PAGEMAP_SCAN ioctl where the kernel has it) instead of unmapping them: an
            // madvise costs a TLB shootdown on every core, which dominated the profile.
            .pagemap_scan(Enabled::Auto)
            .linear_memory_keep_resident(16 << 20)
            .table_keep_resident(1 << 20);
        let mut wasm = Config::new();
        wasm.epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .async_stack_size(2 << 20)
            .max_wasm_stack(1 << 20);
        let engine = Engine::new(&wasm).map_err(|e| Error::Engine(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s: &mut StoreState| &mut s.wasi)
            .map_err(|e| Error::Engine(format!("{e:#}")))?;
        std::fs::create_dir_all(&config.cache_dir).map_err(|source| Error::Io {
            path: config.cache_dir.clone(),
            source,
        })?;
        let http_linker = http::linker(&engine)?;
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("nimbus-wasm-epoch".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| Error::Engine(format!("could not start the epoch thread: {e}")))?;
        preinit_files(&config.cache_dir, true);
        Ok(Self {
            snapshot_disk_limit: config.snapshot_disk_limit,
            engine,
            linker,
            http_linker,
            cache_dir: config.cache_dir.clone(),
            modules: Mutex::new(HashMap::new()),
            components: Mutex::new(HashMap::new()),
            preinitialized: Mutex::new(HashMap::new()),
            initializing: Mutex::new(()),
        })
    }

    /// Bytes the pre-initialised modules (the snapshots of SnapStart versions) take on disk.
    /// Reads the cache directory: what is there, whatever happened to it.
    pub fn preinitialized_disk_bytes(&self) -> u64 {
        preinit_files(&self.cache_dir, false)
            .iter()
            .map(|f| f.1)
            .sum()
    }

    /// Deletes one pre-initialised module (by its cache name), its checksum and its compiled
    /// form; returns its bytes. Templates made from it before keep working.
    fn delete_preinitialized(&self, name: &str) -> u64 {
        let path = self.cache_dir.join(name);
        let mut freed = 0;
        if let Ok(bytes) = std::fs::read(&path) {
            // Its compiled form is a cache like any other: another version whose
            // initialisation left the same bytes compiles it again if it needs it.
            let compiled = artifact::digest(&bytes);
            for suffix in ["cwasm", "cwasm.sha256"] {
                let _ = std::fs::remove_file(self.cache_dir.join(format!("{compiled}.{suffix}")));
            }
            freed = bytes.len() as u64;
        }
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(self.cache_dir.join(format!("{name}.sha256")));
        freed
    }

    /// Makes room on disk for a new pre-initialised module of `bytes` under `name`, within
    /// [`WasmConfig::snapshot_disk_limit`]: the least recently used others are deleted (each is
    /// made again from its version's code when next needed); a module larger than the limit
    /// alone is refused. Called with `initializing` held, so no two make room at once.
    fn make_room_for(&self, name: &str, bytes: u64) -> Result<()> {
        let limit = self.snapshot_disk_limit;
        if limit == 0 {
            return Ok(());
        }
        if bytes > limit {
            return Err(Error::InvalidModule(format!(
                "the initialised module takes {} MB, more than the {} MB this worker keeps for \
                 snapshots",
                megabytes(bytes),
                megabytes(limit)
            )));
        }
        let files = preinit_files(&self.cache_dir, false);
        let mut total = bytes
            + files
                .iter()
                .filter(|f| f.0 != name)
                .map(|f| f.1)
                .sum::<u64>();
        for (other, size, _) in files {
            if total <= limit {
                break;
            }
            if other == name {
                continue;
            }
            self.delete_preinitialized(&other);
            total = total.saturating_sub(size);
            tracing::info!(
                snapshot = %other,
                bytes = size,
                limit,
                "deleted the least recently used pre-initialised module to stay within the limit"
            );
        }
        Ok(())
    }

    /// Deletes the pre-initialised modules of a function version (`function:version`) or of
    /// every version of a function (`function`), with their checksums and compiled forms.
    /// Returns the bytes freed. Blocking.
    pub fn forget_preinitialized(&self, qualified: &str) -> u64 {
        let prefix = match qualified.rsplit_once(':') {
            Some((function, version)) => preinit_prefix(function, Some(version)),
            None => preinit_prefix(qualified, None),
        };
        if let Ok(mut memo) = self.preinitialized.lock() {
            memo.retain(|name, _| !name.starts_with(&prefix));
        }
        let Ok(entries) = std::fs::read_dir(&self.cache_dir) else {
            return 0;
        };
        let mut freed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with(&prefix) {
                continue;
            }
            if name.ends_with(".preinit") {
                freed += self.delete_preinitialized(&name);
            } else {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        freed
    }

    /// Compiles the module at `path` (or loads its cached artifact) and checks that it is a WASI
    /// command this runtime can link. Compilation is CPU-bound: call it off the async executor.
    pub fn prepare(&self, path: &Path) -> Result<WasmTemplate> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        let module = self.compiled(&self.modules, &bytes)?;
        self.template(&module)
    }

    /// Like [`Self::prepare`], for a module pre-initialised ([`preinit`]): its `wizer.initialize`
    /// runs once with `env`, within `memory_limit_bytes` and `timeout`, and every instance of
    /// the template starts from the state it left. The pre-initialised module is kept in the
    /// artifact cache (with its sha256, checked when it is read back), keyed by `owner` (the
    /// version it is for: no two functions share a snapshot), the module and `env`, so a
    /// restart does not initialise again. Blocking: call it off the async executor, inside a
    /// Tokio runtime.
    pub fn prepare_preinitialized(
        &self,
        owner: &str,
        path: &Path,
        env: &[(String, String)],
        memory_limit_bytes: u64,
        timeout: Duration,
    ) -> Result<WasmTemplate> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        // Each part hashed on its own, so that no choice of bytes in one can pose as another.
        let mut keyed = Vec::new();
        keyed.extend_from_slice(artifact::digest(owner.as_bytes()).as_bytes());
        keyed.extend_from_slice(artifact::digest(&bytes).as_bytes());
        for (k, v) in env {
            keyed.extend_from_slice(artifact::digest(k.as_bytes()).as_bytes());
            keyed.extend_from_slice(artifact::digest(v.as_bytes()).as_bytes());
        }
        let key = preinit_name(owner, &artifact::digest(&keyed));
        if let Some(found) = self
            .preinitialized
            .lock()
            .ok()
            .and_then(|m| m.get(&key).cloned())
        {
            return Ok(found);
        }
        let _one_at_a_time = self
            .initializing
            .lock()
            .map_err(|_| Error::Engine("an earlier initialisation panicked".into()))?;
        let initialized = match artifact::load_bytes(&self.cache_dir, &key) {
            Some(found) => {
                // Used: the last to go when room is made for another.
                let _ = std::fs::File::options()
                    .write(true)
                    .open(self.cache_dir.join(&key))
                    .and_then(|f| f.set_modified(std::time::SystemTime::now()));
                found
            }
            None => {
                let handle = tokio::runtime::Handle::try_current()
                    .map_err(|e| Error::Engine(format!("no runtime to initialise in: {e}")))?;
                let started = Instant::now();
                let made = handle.block_on(self.preinitialize(
                    &bytes,
                    env,
                    memory_limit_bytes,
                    timeout,
                ))?;
                tracing::info!(
                    module = %path.display(),
                    ms = started.elapsed().as_millis() as u64,
                    bytes = made.len(),
                    "module pre-initialised"
                );
                self.make_room_for(&key, made.len() as u64)?;
                artifact::store_bytes(&self.cache_dir, &key, &made);
                made
            }
        };
        let module = self.compiled(&self.modules, &initialized)?;
        let template = self.template(&module)?;
        if let Ok(mut memo) = self.preinitialized.lock() {
            memo.insert(key, template.clone());
        }
        Ok(template)
    }

    /// Runs a module's `wizer.initialize` once in an instance of it and returns the module
    /// with the state that left written in.
    async fn preinitialize(
        &self,
        bytes: &[u8],
        env: &[(String, String)],
        memory_limit_bytes: u64,
        timeout: Duration,
    ) -> Result<Vec<u8>> {
        let instrumented = preinit::instrument(bytes)?;
        let module = Module::new(&self.engine, &instrumented).map_err(|e| {
            Error::InvalidModule(format!("the wasm module failed validation: {e:#}"))
        })?;
        let pre = self.linker.instantiate_pre(&module).map_err(|e| {
            Error::InvalidModule(format!(
                "the wasm module imports something nimbus does not provide: {e:#}"
            ))
        })?;
        let stderr = MemoryOutputPipe::new(64 * 1024);
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdin(MemoryInputPipe::new(Bytes::new()))
            .stderr(stderr.clone())
            .envs(env)
            .arg("function");
        let mut store = Store::new(
            &self.engine,
            StoreState {
                wasi: wasi.build_p1(),
                limiter: MemoryLimiter::new(memory_limit_bytes.min(MAX_WASM32_MEMORY)),
            },
        );
        store.limiter(|s| &mut s.limiter);
        arm_deadline(&mut store, timeout);
        let failed = |what: &str, e: wasmtime::Error, stderr: &MemoryOutputPipe| {
            let log = String::from_utf8_lossy(&stderr.contents()).into_owned();
            let reason = if e.downcast_ref::<DeadlineExceeded>().is_some() {
                "it ran out of time".to_owned()
            } else {
                trap_message(&e)
            };
            Error::InvalidModule(format!(
                "{what} failed: {reason}{}",
                if log.is_empty() {
                    String::new()
                } else {
                    format!("; its output: {log}")
                }
            ))
        };
        let instance = pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| failed("instantiating the module", e, &stderr))?;
        let init = instance
            .get_typed_func::<(), ()>(&mut store, preinit::INIT_EXPORT)
            .map_err(|e| {
                Error::InvalidModule(format!(
                    "`{}` must take and return nothing: {e:#}",
                    preinit::INIT_EXPORT
                ))
            })?;
        init.call_async(&mut store, ())
            .await
            .map_err(|e| failed("the module's initialisation", e, &stderr))?;
        let snapshot = preinit::snapshot_of(&instrumented, &instance, &mut store)?;
        // The instance's memory goes before the module is written.
        drop(store);
        preinit::apply(bytes, &snapshot)
    }

    /// The compiled form of `bytes`: from memory, from the on-disk cache, or compiled now (and
    /// then cached in both).
    fn compiled<A: artifact::Artifact>(
        &self,
        memo: &Mutex<HashMap<String, A>>,
        bytes: &[u8],
    ) -> Result<A> {
        let key = artifact::digest(bytes);
        if let Some(found) = memo.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(found);
        }
        let compiled = match artifact::load::<A>(&self.engine, &self.cache_dir, &key) {
            Some(loaded) => loaded,
            None => {
                let compiled = A::compile(&self.engine, bytes).map_err(|e| {
                    Error::InvalidModule(format!("{} failed validation: {e:#}", A::WHAT))
                })?;
                artifact::store(&self.cache_dir, &key, &compiled);
                compiled
            }
        };
        if let Ok(mut memo) = memo.lock() {
            memo.insert(key, compiled.clone());
        }
        Ok(compiled)
    }

    fn template(&self, module: &Module) -> Result<WasmTemplate> {
        let start = module.get_export("_start");
        let is_command = matches!(
            start,
            Some(wasmtime::ExternType::Func(ref f)) if f.params().len() == 0 && f.results().len() == 0
        );
        if !is_command {
            return Err(Error::InvalidModule(
                "the wasm module is not a WASI command: it must export a `_start` function taking \
                 and returning nothing"
                    .into(),
            ));
        }
        let pre = self.linker.instantiate_pre(module).map_err(|e| {
            Error::InvalidModule(format!(
                "the wasm module imports something nimbus does not provide: {e:#}"
            ))
        })?;
        Ok(WasmTemplate { pre })
    }

    /// Runs one invocation in a fresh instance.
    pub async fn run(&self, template: &WasmTemplate, input: RunInput) -> RunOutput {
        let stdout = MemoryOutputPipe::new(input.stdout_limit.saturating_add(1));
        let stderr = MemoryOutputPipe::new(input.stderr_limit);
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdin(MemoryInputPipe::new(input.stdin))
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .envs(&input.env)
            .arg("function");
        let memory_limit = input.memory_limit_bytes.min(MAX_WASM32_MEMORY);
        let mut store = Store::new(
            &self.engine,
            StoreState {
                wasi: wasi.build_p1(),
                limiter: MemoryLimiter::new(memory_limit),
            },
        );
        store.limiter(|s| &mut s.limiter);
        arm_deadline(&mut store, input.timeout);

        let result = async {
            let instance = template.pre.instantiate_async(&mut store).await?;
            let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
            start.call_async(&mut store, ()).await
        }
        .await;

        let limiter = &store.data().limiter;
        let peak_memory_bytes = limiter.peak_bytes();
        let out_of_memory = limiter.exceeded();
        drop(store);
        let stdout = stdout.contents();
        let status = match result {
            _ if stdout.len() > input.stdout_limit => RunStatus::OutputTooLarge,
            Ok(()) => RunStatus::Exited(0),
            Err(e) => {
                if let Some(exit) = e.downcast_ref::<I32Exit>() {
                    RunStatus::Exited(exit.0)
                } else if e.downcast_ref::<DeadlineExceeded>().is_some() {
                    RunStatus::TimedOut
                } else if out_of_memory {
                    RunStatus::OutOfMemory
                } else {
                    RunStatus::Trapped(trap_message(&e))
                }
            }
        };
        RunOutput {
            status,
            stdout,
            stderr: stderr.contents(),
            peak_memory_bytes,
        }
    }
}

/// Makes the store's guest trap with [`DeadlineExceeded`] once `timeout` has passed, and yield
/// to the executor at every epoch tick until then. Returns the deadline.
fn arm_deadline<T: 'static>(store: &mut Store<T>, timeout: Duration) -> Instant {
    let deadline = Instant::now() + timeout;
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        if Instant::now() >= deadline {
            Err(DeadlineExceeded.into())
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });
    deadline
}

/// The trap's own description without the backtrace wasmtime appends.
fn trap_message(e: &wasmtime::Error) -> String {
    if let Some(trap) = e.downcast_ref::<wasmtime::Trap>() {
        return format!("wasm trap: {trap}");
    }
    let full = format!("{e:#}");
    full.lines().next().unwrap_or("wasm trap").to_owned()
}
