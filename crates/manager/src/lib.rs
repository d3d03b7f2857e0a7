//! The Worker Manager: owns the sandboxes of each function version across the workers of the
//! fleet. It hands an invocation an idle warm sandbox (a provisioned one first), or asks
//! Placement for a worker and has that worker init a new one (a cold start); it enforces the
//! account's and functions' concurrency limits, returns sandboxes to their pool afterwards,
//! retires them when their function changes, reaps those idle longer than the keep-alive, keeps
//! provisioned sandboxes at their requested number, and forgets the sandboxes of a worker that
//! is lost.
//!
//! Its state is soft: it can be rebuilt from the workers. It records each invocation's log and
//! usage through the telemetry writer and keeps the metrics, but holds no durable state itself.

#![forbid(unsafe_code)]

pub mod concurrency;
pub mod metrics;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use nimbus_placement::{PlacementDecision, SandboxRequest, WorkerView, place};
use nimbus_store::{NewLogEntry, TelemetryWriter};
use nimbus_types::invocation::gb_seconds;
use nimbus_types::{FunctionConfig, InitType, InvokeOutcome, InvokeRequest, UsageRecord};
use nimbus_worker::{SandboxId, Worker};
use tokio::sync::{Notify, watch};

use concurrency::Concurrency;
pub use concurrency::{AccountConcurrency, ThrottleReason};
use metrics::FunctionMetrics;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Rate Exceeded.")]
    Throttled(ThrottleReason),
    #[error("no worker has room for a sandbox of {0} MB")]
    NoCapacity(u32),
    /// The worker running the invocation was lost; whether the function ran is unknown.
    #[error("{0}")]
    WorkerLost(String),
    /// The function's code cannot run; the message is meant for the user.
    #[error("{0}")]
    InvalidCode(String),
    /// A setting was refused; the message is meant for the user.
    #[error("{0}")]
    InvalidSetting(String),
    /// The worker no longer has the sandbox (it restarted, or reaped it): a fresh one is
    /// started and the invocation runs there.
    #[error("the worker no longer has the sandbox")]
    SandboxVanished,
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<nimbus_worker::Error> for Error {
    fn from(e: nimbus_worker::Error) -> Self {
        match e {
            nimbus_worker::Error::InvalidCode(m) => Error::InvalidCode(m),
            nimbus_worker::Error::Lost(m) => Error::WorkerLost(m),
            other => Error::Internal(other.to_string()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Invocations that may run at once across all functions (Lambda's account concurrency).
    pub concurrency_limit: u32,
    /// What reservations must leave to functions without one.
    pub min_unreserved: u32,
    /// How long an idle sandbox is kept warm.
    pub keep_alive: Duration,
}

/// A worker as the manager knows it: the worker itself and the manager's own accounting of
/// what it placed there.
pub struct WorkerEntry {
    /// Unique for the life of the node; a worker that joins again gets a new one.
    pub id: u64,
    pub name: String,
    pub remote: bool,
    worker: Arc<dyn Worker>,
    capacity_mb: AtomicU64,
    reserved_mb: AtomicU64,
    sandboxes: AtomicU32,
    invocations: AtomicU64,
    lost: watch::Sender<bool>,
    is_lost: AtomicBool,
}

impl WorkerEntry {
    fn free_mb(&self) -> u64 {
        self.capacity_mb
            .load(Ordering::Relaxed)
            .saturating_sub(self.reserved_mb.load(Ordering::Relaxed))
    }

    fn reserve(&self, mb: u64) {
        self.reserved_mb.fetch_add(mb, Ordering::Relaxed);
        self.sandboxes.fetch_add(1, Ordering::Relaxed);
    }

    fn unreserve(&self, mb: u64) {
        let _ = self
            .reserved_mb
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
                Some(r.saturating_sub(mb))
            });
        let _ = self
            .sandboxes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                Some(s.saturating_sub(1))
            });
    }

    /// Resolves when the worker is declared lost.
    async fn lost(&self) {
        let mut rx = self.lost.subscribe();
        let _ = rx.wait_for(|lost| *lost).await;
    }
}

/// A worker's figures for `nimbus status` and the metrics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WorkerSummary {
    pub id: u64,
    pub name: String,
    pub remote: bool,
    pub capacity_mb: u64,
    pub reserved_mb: u64,
    pub sandboxes: u32,
    pub invocations: u64,
}

struct Sandbox {
    worker: Arc<WorkerEntry>,
    id: SandboxId,
    since: Instant,
    memory_mb: u64,
}

/// Provisioned concurrency of one function version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProvisionedStatus {
    pub requested: u32,
    /// Sandboxes initialised and serving (idle or busy).
    pub allocated: u32,
    pub status: ProvisionedState,
    pub reason: Option<String>,
}

/// Where a version's provisioned concurrency stands, as Lambda names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProvisionedState {
    /// Fewer sandboxes than requested are ready, and more are being started.
    InProgress,
    /// As many sandboxes as requested are ready.
    Ready,
    /// They could not be started (no capacity, or the code fails to init) and never were.
    Failed,
}

impl ProvisionedState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "IN_PROGRESS",
            Self::Ready => "READY",
            Self::Failed => "FAILED",
        }
    }
}

struct Provisioned {
    function: Arc<FunctionConfig>,
    requested: u32,
    /// Inits under way.
    pending: u32,
    failed: Option<String>,
    ready_once: bool,
}

/// The sandboxes of one function version.
struct FunctionPool {
    /// Sandboxes of any other revision are retired, never reused.
    revision: String,
    /// On-demand sandboxes, most recently used last, so the warm set stays small under uneven
    /// load.
    idle: Vec<Sandbox>,
    provisioned_idle: Vec<Sandbox>,
    provisioned_busy: u32,
    /// Sandboxes of this revision per worker id, idle or busy.
    per_worker: HashMap<u64, u32>,
    provisioned: Option<Provisioned>,
}

impl FunctionPool {
    fn new(function: &FunctionConfig) -> Self {
        Self {
            revision: function.revision_id.clone(),
            idle: Vec::new(),
            provisioned_idle: Vec::new(),
            provisioned_busy: 0,
            per_worker: HashMap::new(),
            provisioned: None,
        }
    }

    fn allocated(&self) -> u32 {
        self.provisioned_idle.len() as u32 + self.provisioned_busy
    }

    fn is_empty(&self) -> bool {
        self.idle.is_empty()
            && self.provisioned_idle.is_empty()
            && self.provisioned.is_none()
            && self.per_worker.values().all(|c| *c == 0)
    }
}

pub struct WorkerManager {
    config: ManagerConfig,
    workers: RwLock<Vec<Arc<WorkerEntry>>>,
    next_worker_id: AtomicU64,
    pools: Mutex<HashMap<String, FunctionPool>>,
    concurrency: Concurrency,
    metrics: Mutex<BTreeMap<String, FunctionMetrics>>,
    provision: Notify,
    telemetry: Arc<TelemetryWriter>,
    /// Invocations finished, for noticing when the node is idle.
    finished: AtomicU64,
}

/// A sandbox taken for one invocation.
struct Lease {
    worker: Arc<WorkerEntry>,
    sandbox: SandboxId,
    provisioned: bool,
    memory_mb: u64,
}

impl WorkerManager {
    pub fn new(config: ManagerConfig, telemetry: Arc<TelemetryWriter>) -> Self {
        Self {
            concurrency: Concurrency::new(config.concurrency_limit, config.min_unreserved),
            config,
            workers: RwLock::new(Vec::new()),
            next_worker_id: AtomicU64::new(1),
            pools: Mutex::new(HashMap::new()),
            metrics: Mutex::new(BTreeMap::new()),
            provision: Notify::new(),
            telemetry,
            finished: AtomicU64::new(0),
        }
    }

    // ---- the fleet ----

    /// Adds a worker to the fleet; returns its id.
    pub fn add_worker(
        &self,
        name: &str,
        worker: Arc<dyn Worker>,
        capacity_mb: u64,
        remote: bool,
    ) -> u64 {
        let id = self.next_worker_id.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(WorkerEntry {
            id,
            name: name.to_owned(),
            remote,
            worker,
            capacity_mb: AtomicU64::new(capacity_mb),
            reserved_mb: AtomicU64::new(0),
            sandboxes: AtomicU32::new(0),
            invocations: AtomicU64::new(0),
            lost: watch::channel(false).0,
            is_lost: AtomicBool::new(false),
        });
        if let Ok(mut workers) = self.workers.write() {
            workers.push(entry);
        }
        tracing::info!(worker = name, id, capacity_mb, "worker joined");
        // Provisioned concurrency that could not be placed may fit now.
        self.provision.notify_one();
        id
    }

    pub fn set_capacity(&self, id: u64, capacity_mb: u64) {
        if let Some(w) = self.worker(id) {
            w.capacity_mb.store(capacity_mb, Ordering::Relaxed);
        }
    }

    /// Whether the worker with this id is part of the fleet (not lost).
    pub fn has_worker(&self, id: u64) -> bool {
        self.worker(id).is_some()
    }

    fn worker(&self, id: u64) -> Option<Arc<WorkerEntry>> {
        self.workers
            .read()
            .ok()?
            .iter()
            .find(|w| w.id == id)
            .cloned()
    }

    fn live_workers(&self) -> Vec<Arc<WorkerEntry>> {
        self.workers.read().map(|w| w.clone()).unwrap_or_default()
    }

    /// Removes a lost worker: invocations in flight on it fail, its sandboxes are forgotten
    /// (provisioned ones are re-created elsewhere), and nothing new is placed on it.
    pub fn remove_worker(&self, id: u64, reason: &str) {
        let removed = match self.workers.write() {
            Ok(mut workers) => {
                let before = workers.len();
                let mut removed = None;
                workers.retain(|w| {
                    if w.id == id {
                        removed = Some(w.clone());
                        false
                    } else {
                        true
                    }
                });
                debug_assert!(workers.len() + removed.iter().count() == before);
                removed
            }
            Err(_) => None,
        };
        let Some(entry) = removed else { return };
        entry.is_lost.store(true, Ordering::Relaxed);
        let _ = entry.lost.send(true);
        let mut forgotten = 0;
        if let Ok(mut pools) = self.pools.lock() {
            for pool in pools.values_mut() {
                let before = pool.idle.len() + pool.provisioned_idle.len();
                pool.idle.retain(|s| s.worker.id != id);
                pool.provisioned_idle.retain(|s| s.worker.id != id);
                forgotten += before - pool.idle.len() - pool.provisioned_idle.len();
                pool.per_worker.remove(&id);
            }
        }
        tracing::warn!(worker = %entry.name, id, sandboxes = forgotten, reason, "worker lost");
        self.provision.notify_one();
    }

    pub fn workers(&self) -> Vec<WorkerSummary> {
        self.live_workers()
            .iter()
            .map(|w| WorkerSummary {
                id: w.id,
                name: w.name.clone(),
                remote: w.remote,
                capacity_mb: w.capacity_mb.load(Ordering::Relaxed),
                reserved_mb: w.reserved_mb.load(Ordering::Relaxed),
                sandboxes: w.sandboxes.load(Ordering::Relaxed),
                invocations: w.invocations.load(Ordering::Relaxed),
            })
            .collect()
    }

    // ---- concurrency settings ----

    pub fn account(&self) -> AccountConcurrency {
        self.concurrency.account()
    }

    /// Sets or clears a function's reserved concurrency.
    pub fn set_reserved(&self, function: &str, reserved: Option<u32>) -> Result<()> {
        self.concurrency
            .set_reserved(function, reserved)
            .map_err(Error::InvalidSetting)
    }

    pub fn reserved(&self, function: &str) -> Option<u32> {
        self.concurrency.reserved(function)
    }

    /// Total memory of the fleet and how much of it is free, in MB.
    pub fn capacity_mb(&self) -> (u64, u64) {
        self.live_workers().iter().fold((0, 0), |(c, f), w| {
            (c + w.capacity_mb.load(Ordering::Relaxed), f + w.free_mb())
        })
    }

    // ---- code ----

    /// Checks that a function's code can run and puts it on the workers ahead of its first
    /// invocation, so that a cold start waits neither for a transfer nor for compilation. The
    /// first worker checks it (an error is the user's); the others fetch it in the background.
    pub async fn prepare(self: &Arc<Self>, function: &FunctionConfig) -> Result<()> {
        let workers = self.live_workers();
        let Some((first, rest)) = workers.split_first() else {
            tracing::warn!(function = %function.name, "no worker to check the code on; it is checked at its first cold start");
            return Ok(());
        };
        first.worker.prepare(function).await?;
        for other in rest {
            let (worker, function) = (other.worker.clone(), function.clone());
            tokio::spawn(async move {
                if let Err(e) = worker.prepare(&function).await {
                    tracing::warn!(function = %function.name, error = %e, "pre-download to a worker failed");
                }
            });
        }
        Ok(())
    }

    /// Puts the code of these functions on one worker, in the background (a worker that just
    /// joined).
    pub fn prepare_on(&self, id: u64, functions: Vec<Arc<FunctionConfig>>) {
        let Some(entry) = self.worker(id) else { return };
        tokio::spawn(async move {
            for function in functions {
                if entry.is_lost.load(Ordering::Relaxed) {
                    break;
                }
                if let Err(e) = entry.worker.prepare(&function).await {
                    tracing::debug!(function = %function.name, error = %e, "pre-download failed");
                }
            }
        });
    }

    // ---- pools ----

    /// Retires the sandboxes of one function version (by `name:version`) after a change.
    pub async fn retire(&self, qualified: &str) {
        let retired = match self.pools.lock() {
            Ok(mut pools) => match pools.get_mut(qualified) {
                Some(pool) => {
                    let mut out = std::mem::take(&mut pool.idle);
                    out.append(&mut pool.provisioned_idle);
                    pool.provisioned = None;
                    pool.revision = String::new();
                    out
                }
                None => Vec::new(),
            },
            Err(_) => Vec::new(),
        };
        self.release_all(retired).await;
    }

    /// Retires every version of a deleted function and forgets its reservation.
    pub async fn remove_function(&self, name: &str) {
        let prefix = format!("{name}:");
        let keys: Vec<String> = self
            .pools
            .lock()
            .map(|p| {
                p.keys()
                    .filter(|k| k.starts_with(&prefix))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for key in keys {
            self.retire(&key).await;
            if let Ok(mut pools) = self.pools.lock() {
                pools.remove(&key);
            }
        }
        self.concurrency.remove(name);
        if let Ok(mut m) = self.metrics.lock() {
            m.remove(name);
        }
    }

    async fn release_all(&self, sandboxes: Vec<Sandbox>) {
        for s in sandboxes {
            self.free(&s.worker, s.id, s.memory_mb).await;
        }
    }

    /// Takes an idle sandbox of this revision, provisioned ones first; also returns sandboxes of
    /// an older revision, to be released.
    fn take_idle(&self, key: &str, function: &FunctionConfig) -> (Option<Lease>, Vec<Sandbox>) {
        let Ok(mut pools) = self.pools.lock() else {
            return (None, Vec::new());
        };
        if !pools.contains_key(key) {
            pools.insert(key.to_owned(), FunctionPool::new(function));
        }
        let Some(pool) = pools.get_mut(key) else {
            return (None, Vec::new());
        };
        let mut stale = Vec::new();
        if pool.revision != function.revision_id {
            stale = std::mem::take(&mut pool.idle);
            stale.append(&mut pool.provisioned_idle);
            pool.revision = function.revision_id.clone();
            pool.per_worker.clear();
            pool.provisioned_busy = 0;
        }
        if let Some(s) = pool.provisioned_idle.pop() {
            pool.provisioned_busy += 1;
            return (
                Some(Lease {
                    worker: s.worker,
                    sandbox: s.id,
                    provisioned: true,
                    memory_mb: s.memory_mb,
                }),
                stale,
            );
        }
        let lease = pool.idle.pop().map(|s| Lease {
            worker: s.worker,
            sandbox: s.id,
            provisioned: false,
            memory_mb: s.memory_mb,
        });
        (lease, stale)
    }

    /// Picks a worker with Placement and has it create a sandbox.
    async fn new_sandbox(
        &self,
        key: &str,
        function: &FunctionConfig,
        init_type: InitType,
    ) -> Result<Lease> {
        let per_worker = self
            .pools
            .lock()
            .ok()
            .and_then(|p| p.get(key).map(|p| p.per_worker.clone()))
            .unwrap_or_default();
        let memory_mb = function.memory_mb as u64;
        // Idle sandboxes are a cache: when no worker has room, the least recently used idle
        // sandbox of any function gives way, one at a time, until the new one fits.
        let (workers, index) = loop {
            let workers = self.live_workers();
            let views: Vec<WorkerView> = workers
                .iter()
                .map(|w| WorkerView {
                    capacity_mb: w.capacity_mb.load(Ordering::Relaxed),
                    reserved_mb: w.reserved_mb.load(Ordering::Relaxed),
                    healthy: !w.is_lost.load(Ordering::Relaxed),
                    has_code: w.worker.has_code(&function.code.sha256),
                    sandboxes_of_function: per_worker.get(&w.id).copied().unwrap_or(0),
                })
                .collect();
            match place(&views, &SandboxRequest { memory_mb }) {
                PlacementDecision::Place(index) => break (workers, index),
                PlacementDecision::NoCapacity => {
                    if !self.evict_least_recently_used(memory_mb).await {
                        return Err(Error::NoCapacity(function.memory_mb));
                    }
                }
            }
        };
        let entry = workers[index].clone();
        // Reserve before the init so that concurrent cold starts see the memory as taken.
        entry.reserve(memory_mb);
        let init = tokio::select! {
            init = entry.worker.init(function, init_type) => init,
            _ = entry.lost() => Err(nimbus_worker::Error::Lost(format!(
                "worker {} was lost while starting a sandbox", entry.name
            ))),
        };
        let init = match init {
            Ok(init) => init,
            Err(e) => {
                entry.unreserve(memory_mb);
                if let nimbus_worker::Error::Lost(m) = &e {
                    self.remove_worker(entry.id, m);
                }
                return Err(e.into());
            }
        };
        if let Ok(mut pools) = self.pools.lock()
            && let Some(pool) = pools.get_mut(key)
            && pool.revision == function.revision_id
        {
            *pool.per_worker.entry(entry.id).or_default() += 1;
        }
        Ok(Lease {
            worker: entry,
            sandbox: init.sandbox,
            provisioned: false,
            memory_mb,
        })
    }

    /// Shuts down the idle on-demand sandbox unused for longest, on a worker big enough for
    /// `memory_mb`; returns whether there was one.
    async fn evict_least_recently_used(&self, memory_mb: u64) -> bool {
        let victim = match self.pools.lock() {
            Ok(mut pools) => {
                let oldest = pools
                    .iter()
                    .flat_map(|(key, pool)| {
                        pool.idle
                            .iter()
                            .enumerate()
                            .filter(|(_, s)| {
                                s.worker.capacity_mb.load(Ordering::Relaxed) >= memory_mb
                            })
                            .map(move |(i, s)| (s.since, key.clone(), i))
                    })
                    .min();
                oldest.and_then(|(_, key, i)| {
                    let pool = pools.get_mut(&key)?;
                    let s = pool.idle.remove(i);
                    if let Some(c) = pool.per_worker.get_mut(&s.worker.id) {
                        *c = c.saturating_sub(1);
                    }
                    Some(s)
                })
            }
            Err(_) => None,
        };
        match victim {
            Some(s) => {
                tracing::debug!(worker = %s.worker.name, "evicting an idle sandbox to make room");
                self.free(&s.worker, s.id, s.memory_mb).await;
                true
            }
            None => false,
        }
    }

    // ---- invocations ----

    /// Runs one invocation and records its log, usage and metrics.
    pub async fn invoke(
        &self,
        function: &FunctionConfig,
        request: InvokeRequest,
    ) -> Result<InvokeOutcome> {
        let permit = match self.concurrency.acquire(&function.name) {
            Ok(p) => p,
            Err(reason) => {
                self.throttled(&function.name, reason);
                return Err(Error::Throttled(reason));
            }
        };
        let key = function.qualified_name();
        let async_attempt = request.async_attempt;
        let (idle, stale) = self.take_idle(&key, function);
        if !stale.is_empty() {
            self.release_all(stale).await;
        }
        let lease = match idle {
            Some(lease) => lease,
            None => self.cold(&key, function).await?,
        };
        let outcome = match self.run(&key, function, lease, request.clone()).await {
            // The worker lost the sandbox (it restarted, or reaped it): start a fresh one.
            Err(Error::SandboxVanished) => {
                let lease = self.cold(&key, function).await?;
                self.run(&key, function, lease, request).await?
            }
            other => other?,
        };
        drop(permit);
        self.record(function, &outcome, async_attempt);
        Ok(outcome)
    }

    async fn cold(&self, key: &str, function: &FunctionConfig) -> Result<Lease> {
        match self.new_sandbox(key, function, InitType::OnDemand).await {
            Err(Error::NoCapacity(mb)) => {
                self.throttled(&function.name, ThrottleReason::Capacity);
                Err(Error::NoCapacity(mb))
            }
            other => other,
        }
    }

    /// Runs the invocation in the leased sandbox, then gives the sandbox back or forgets it.
    async fn run(
        &self,
        key: &str,
        function: &FunctionConfig,
        lease: Lease,
        request: InvokeRequest,
    ) -> Result<InvokeOutcome> {
        let worker = lease.worker.clone();
        worker.invocations.fetch_add(1, Ordering::Relaxed);
        let result = tokio::select! {
            r = worker.worker.invoke(lease.sandbox, request) => r,
            _ = worker.lost() => Err(nimbus_worker::Error::Lost(format!(
                "worker {} was lost during the invocation", worker.name
            ))),
        };
        match result {
            Ok(outcome) => {
                if outcome.reusable {
                    self.give_back(key, function, lease).await;
                } else {
                    self.forget(key, function, lease).await;
                }
                Ok(outcome)
            }
            Err(nimbus_worker::Error::UnknownSandbox(_)) => {
                self.forget(key, function, lease).await;
                Err(Error::SandboxVanished)
            }
            Err(e) => {
                if let nimbus_worker::Error::Lost(m) = &e {
                    // Unreachable: stop placing sandboxes there. If it is alive after all, its
                    // next heartbeat is refused and it joins again with a clean slate.
                    self.remove_worker(worker.id, m);
                }
                self.forget(key, function, lease).await;
                Err(e.into())
            }
        }
    }

    fn throttled(&self, function: &str, reason: ThrottleReason) {
        if let Ok(mut m) = self.metrics.lock() {
            m.entry(function.to_owned()).or_default().throttled(reason);
        }
    }

    /// Frees a sandbox's memory reservation and has its worker shut it down (a lost worker's
    /// sandboxes are gone already).
    async fn free(&self, worker: &Arc<WorkerEntry>, sandbox: SandboxId, memory_mb: u64) {
        worker.unreserve(memory_mb);
        if !worker.is_lost.load(Ordering::Relaxed) {
            worker.worker.release(sandbox).await;
        }
    }

    /// Shuts down a sandbox that cannot serve again (its runtime crashed or was killed, or its
    /// worker was lost).
    async fn forget(&self, key: &str, function: &FunctionConfig, lease: Lease) {
        if let Ok(mut pools) = self.pools.lock()
            && let Some(pool) = pools.get_mut(key)
            && pool.revision == function.revision_id
        {
            if let Some(count) = pool.per_worker.get_mut(&lease.worker.id) {
                *count = count.saturating_sub(1);
            }
            if lease.provisioned {
                pool.provisioned_busy = pool.provisioned_busy.saturating_sub(1);
            }
        }
        if lease.provisioned {
            // Re-create it.
            self.provision.notify_one();
        }
        self.free(&lease.worker, lease.sandbox, lease.memory_mb)
            .await;
    }

    async fn give_back(&self, key: &str, function: &FunctionConfig, lease: Lease) {
        let kept = match self.pools.lock() {
            Ok(mut pools) => match pools.get_mut(key) {
                Some(pool)
                    if pool.revision == function.revision_id
                        && !lease.worker.is_lost.load(Ordering::Relaxed) =>
                {
                    let sandbox = Sandbox {
                        worker: lease.worker.clone(),
                        id: lease.sandbox,
                        since: Instant::now(),
                        memory_mb: lease.memory_mb,
                    };
                    if lease.provisioned {
                        pool.provisioned_busy = pool.provisioned_busy.saturating_sub(1);
                        let wanted = pool.provisioned.as_ref().map_or(0, |p| p.requested);
                        if pool.allocated() < wanted {
                            pool.provisioned_idle.push(sandbox);
                        } else {
                            // Provisioned concurrency was lowered: keep it as an on-demand one.
                            pool.idle.push(sandbox);
                        }
                    } else {
                        pool.idle.push(sandbox);
                    }
                    true
                }
                _ => false,
            },
            Err(_) => false,
        };
        if !kept {
            self.free(&lease.worker, lease.sandbox, lease.memory_mb)
                .await;
        }
    }

    fn record(
        &self,
        function: &FunctionConfig,
        outcome: &InvokeOutcome,
        async_attempt: Option<u32>,
    ) {
        self.finished.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.metrics.lock() {
            m.entry(function.name.clone()).or_default().record(outcome);
        }
        let now = nimbus_types::time::now_ms();
        self.telemetry.record(
            NewLogEntry {
                time_ms: now,
                function: function.name.clone(),
                request_id: outcome.request_id.clone(),
                text: outcome.log.clone(),
            },
            UsageRecord {
                time_ms: now,
                function: function.name.clone(),
                version: function.version.clone(),
                request_id: outcome.request_id.clone(),
                duration_us: outcome.duration_us,
                billed_ms: outcome.billed_ms,
                memory_mb: outcome.memory_mb,
                gb_seconds: gb_seconds(outcome.memory_mb, outcome.billed_ms),
                cold: outcome.init_duration_us.is_some(),
                init_duration_us: outcome.init_duration_us,
                outcome: outcome.kind,
                async_attempt,
            },
        );
    }

    // ---- provisioned concurrency ----

    /// Asks for `requested` sandboxes of a published version to be kept initialised (0 removes
    /// the configuration). Allocation happens in the background; see [`Self::provisioned`].
    pub async fn set_provisioned(&self, function: Arc<FunctionConfig>, requested: u32) {
        let key = function.qualified_name();
        let surplus = match self.pools.lock() {
            Ok(mut pools) => {
                let pool = pools
                    .entry(key.clone())
                    .or_insert_with(|| FunctionPool::new(&function));
                if requested == 0 {
                    pool.provisioned = None;
                } else {
                    let pending = pool.provisioned.as_ref().map_or(0, |p| p.pending);
                    pool.provisioned = Some(Provisioned {
                        function: function.clone(),
                        requested,
                        pending,
                        failed: None,
                        ready_once: false,
                    });
                }
                let keep = requested as usize;
                let extra = pool
                    .provisioned_idle
                    .len()
                    .saturating_sub(keep.saturating_sub(pool.provisioned_busy as usize));
                let surplus: Vec<Sandbox> = pool.provisioned_idle.drain(..extra).collect();
                for s in &surplus {
                    if let Some(c) = pool.per_worker.get_mut(&s.worker.id) {
                        *c = c.saturating_sub(1);
                    }
                }
                surplus
            }
            Err(_) => Vec::new(),
        };
        self.release_all(surplus).await;
        self.provision.notify_one();
    }

    /// The state of a version's provisioned concurrency, if it has any.
    pub fn provisioned(&self, qualified: &str) -> Option<ProvisionedStatus> {
        let pools = self.pools.lock().ok()?;
        let pool = pools.get(qualified)?;
        let p = pool.provisioned.as_ref()?;
        let allocated = pool.allocated().min(p.requested);
        let status = if allocated >= p.requested {
            ProvisionedState::Ready
        } else if p.failed.is_some() && !p.ready_once {
            ProvisionedState::Failed
        } else {
            ProvisionedState::InProgress
        };
        Some(ProvisionedStatus {
            requested: p.requested,
            allocated,
            status,
            reason: (status != ProvisionedState::Ready)
                .then(|| p.failed.clone())
                .flatten(),
        })
    }

    /// One round of provisioning: starts the sandboxes each version still lacks. Returns how
    /// many were started.
    pub async fn provision_once(&self) -> usize {
        let wanted: Vec<(String, Arc<FunctionConfig>, u32)> = match self.pools.lock() {
            Ok(mut pools) => pools
                .iter_mut()
                .filter_map(|(key, pool)| {
                    let allocated = pool.allocated();
                    let p = pool.provisioned.as_mut()?;
                    if p.function.revision_id != pool.revision {
                        return None;
                    }
                    let missing = p.requested.saturating_sub(allocated + p.pending);
                    if missing == 0 {
                        if allocated >= p.requested {
                            p.ready_once = true;
                            p.failed = None;
                        }
                        return None;
                    }
                    p.pending += missing;
                    Some((key.clone(), p.function.clone(), missing))
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        let mut started = 0;
        for (key, function, missing) in wanted {
            let mut made = 0;
            let mut failure = None;
            for _ in 0..missing {
                match self
                    .new_sandbox(&key, &function, InitType::ProvisionedConcurrency)
                    .await
                {
                    Ok(lease) => {
                        made += 1;
                        let sandbox = Sandbox {
                            worker: lease.worker,
                            id: lease.sandbox,
                            since: Instant::now(),
                            memory_mb: lease.memory_mb,
                        };
                        let rejected = match self.pools.lock() {
                            Ok(mut pools) => match pools.get_mut(&key) {
                                Some(pool)
                                    if pool.revision == function.revision_id
                                        && pool.provisioned.is_some() =>
                                {
                                    if let Some(p) = pool.provisioned.as_mut() {
                                        p.pending = p.pending.saturating_sub(1);
                                    }
                                    pool.provisioned_idle.push(sandbox);
                                    None
                                }
                                _ => Some(sandbox),
                            },
                            Err(_) => Some(sandbox),
                        };
                        if let Some(s) = rejected {
                            self.free(&s.worker, s.id, s.memory_mb).await;
                        }
                    }
                    Err(e) => {
                        failure = Some(match e {
                            Error::NoCapacity(mb) => {
                                let (total, free) = self.capacity_mb();
                                format!(
                                    "Insufficient capacity: {} of {} provisioned sandboxes of {mb} MB \
                                     could be started; the fleet has {free} MB free of {total} MB",
                                    self.provisioned(&key).map_or(0, |p| p.allocated),
                                    missing + self.provisioned(&key).map_or(0, |p| p.allocated),
                                )
                            }
                            other => format!("A provisioned sandbox failed to start: {other}"),
                        });
                        break;
                    }
                }
            }
            started += made;
            if let Ok(mut pools) = self.pools.lock()
                && let Some(pool) = pools.get_mut(&key)
            {
                let allocated = pool.allocated();
                if let Some(p) = pool.provisioned.as_mut() {
                    p.pending = p.pending.saturating_sub(missing - made);
                    if allocated >= p.requested {
                        p.ready_once = true;
                        p.failed = None;
                    } else if let Some(f) = failure {
                        p.failed = Some(f);
                    }
                }
            }
        }
        started as usize
    }

    /// Keeps provisioned concurrency at its requested level until `shutdown` resolves: on every
    /// change and every second (sandboxes that died, workers that joined).
    pub async fn run_provisioner(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            self.provision_once().await;
            tokio::select! {
                _ = &mut shutdown => break,
                _ = self.provision.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    // ---- scaling down ----

    /// Shuts down on-demand sandboxes idle for longer than the keep-alive; returns how many.
    pub async fn reap_idle(&self) -> usize {
        let keep_alive = self.config.keep_alive;
        let mut expired = Vec::new();
        if let Ok(mut pools) = self.pools.lock() {
            for pool in pools.values_mut() {
                let (old, fresh): (Vec<_>, Vec<_>) = pool
                    .idle
                    .drain(..)
                    .partition(|s| s.since.elapsed() >= keep_alive);
                pool.idle = fresh;
                for s in &old {
                    if let Some(count) = pool.per_worker.get_mut(&s.worker.id) {
                        *count = count.saturating_sub(1);
                    }
                }
                expired.extend(old);
            }
            pools.retain(|_, p| !p.is_empty());
        }
        let n = expired.len();
        self.release_all(expired).await;
        n
    }

    /// Reaps idle sandboxes until `shutdown` resolves. `on_idle` runs once each time the node
    /// falls quiet (no invocation finished for a whole period after some did, or sandboxes were
    /// reaped): the place to hand freed memory back to the system.
    pub async fn run_reaper(
        self: Arc<Self>,
        shutdown: impl std::future::Future<Output = ()>,
        on_idle: impl Fn() + Send + Sync + 'static,
    ) {
        let period =
            (self.config.keep_alive / 4).clamp(Duration::from_millis(100), Duration::from_secs(10));
        let mut tick = tokio::time::interval(period);
        let on_idle = Arc::new(on_idle);
        let mut seen = self.finished.load(Ordering::Relaxed);
        let mut active = false;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tick.tick() => {
                    let n = self.reap_idle().await;
                    if n > 0 {
                        tracing::debug!(sandboxes = n, "reaped idle sandboxes");
                    }
                    let now = self.finished.load(Ordering::Relaxed);
                    if now != seen {
                        seen = now;
                        active = true;
                    } else if active || n > 0 {
                        active = false;
                        let on_idle = on_idle.clone();
                        let _ = tokio::task::spawn_blocking(move || on_idle()).await;
                    }
                }
            }
        }
    }

    /// Waits until the logs and usage records of finished invocations are on disk.
    pub async fn flush_telemetry(&self) {
        let telemetry = self.telemetry.clone();
        let _ = tokio::task::spawn_blocking(move || telemetry.flush()).await;
    }

    /// Idle sandboxes of a function version (`name:version`), for diagnostics and tests.
    pub fn idle_sandboxes(&self, qualified: &str) -> usize {
        self.pools
            .lock()
            .ok()
            .and_then(|p| {
                p.get(qualified)
                    .map(|p| p.idle.len() + p.provisioned_idle.len())
            })
            .unwrap_or(0)
    }

    // ---- metrics ----

    /// Everything in Prometheus's text format.
    pub fn render_metrics(&self) -> String {
        let mut out = String::new();
        if let Ok(m) = self.metrics.lock() {
            metrics::render_functions(&mut out, &m);
        }
        metrics::family(
            &mut out,
            "nimbus_concurrent_executions",
            "gauge",
            "Invocations running now, by function.",
        );
        let mut running = self.concurrency.in_flight();
        running.sort();
        for (f, n) in running {
            let _ = writeln!(out, "nimbus_concurrent_executions{{function=\"{f}\"}} {n}");
        }
        metrics::family(
            &mut out,
            "nimbus_sandboxes",
            "gauge",
            "Sandboxes by function version, worker and state (idle, busy, provisioned_idle, provisioned_busy).",
        );
        let workers = self.live_workers();
        let names: HashMap<u64, &str> = workers.iter().map(|w| (w.id, w.name.as_str())).collect();
        if let Ok(pools) = self.pools.lock() {
            let mut keys: Vec<&String> = pools.keys().collect();
            keys.sort();
            for key in keys {
                let pool = &pools[key];
                let (function, version) = key.rsplit_once(':').unwrap_or((key, ""));
                let mut ids: Vec<u64> = pool.per_worker.keys().copied().collect();
                ids.sort();
                let mut busy_provisioned_left = pool.provisioned_busy;
                for id in ids {
                    let Some(worker) = names.get(&id) else {
                        continue;
                    };
                    let total = pool.per_worker[&id];
                    let idle = pool.idle.iter().filter(|s| s.worker.id == id).count() as u32;
                    let pidle = pool
                        .provisioned_idle
                        .iter()
                        .filter(|s| s.worker.id == id)
                        .count() as u32;
                    let busy_all = total.saturating_sub(idle + pidle);
                    let pbusy = busy_provisioned_left.min(busy_all);
                    busy_provisioned_left -= pbusy;
                    for (state, n) in [
                        ("idle", idle),
                        ("busy", busy_all - pbusy),
                        ("provisioned_idle", pidle),
                        ("provisioned_busy", pbusy),
                    ] {
                        let _ = writeln!(
                            out,
                            "nimbus_sandboxes{{function=\"{function}\",version=\"{version}\",worker=\"{worker}\",state=\"{state}\"}} {n}"
                        );
                    }
                }
            }
            metrics::family(
                &mut out,
                "nimbus_provisioned_concurrency",
                "gauge",
                "Provisioned concurrency requested and allocated, by function version.",
            );
            let mut keys: Vec<&String> = pools
                .iter()
                .filter(|(_, p)| p.provisioned.is_some())
                .map(|(k, _)| k)
                .collect();
            keys.sort();
            for key in keys {
                let pool = &pools[key];
                let (function, version) = key.rsplit_once(':').unwrap_or((key, ""));
                if let Some(p) = &pool.provisioned {
                    let _ = writeln!(
                        out,
                        "nimbus_provisioned_concurrency{{function=\"{function}\",version=\"{version}\",kind=\"requested\"}} {}",
                        p.requested
                    );
                    let _ = writeln!(
                        out,
                        "nimbus_provisioned_concurrency{{function=\"{function}\",version=\"{version}\",kind=\"allocated\"}} {}",
                        pool.allocated()
                    );
                }
            }
        }
        let summaries = self.workers();
        for (name, help, get) in [
            (
                "nimbus_worker_capacity_mb",
                "Memory a worker offers for sandboxes.",
                (|w: &WorkerSummary| w.capacity_mb) as fn(&WorkerSummary) -> u64,
            ),
            (
                "nimbus_worker_used_mb",
                "Memory reserved by a worker's sandboxes.",
                |w| w.reserved_mb,
            ),
            (
                "nimbus_worker_free_mb",
                "Memory a worker has left for new sandboxes.",
                |w| w.capacity_mb.saturating_sub(w.reserved_mb),
            ),
            (
                "nimbus_worker_sandboxes",
                "Sandboxes a worker hosts.",
                |w| w.sandboxes as u64,
            ),
        ] {
            metrics::family(&mut out, name, "gauge", help);
            for w in &summaries {
                let _ = writeln!(out, "{name}{{worker=\"{}\"}} {}", w.name, get(w));
            }
        }
        metrics::family(
            &mut out,
            "nimbus_worker_invocations_total",
            "counter",
            "Invocations run on a worker.",
        );
        for w in &summaries {
            let _ = writeln!(
                out,
                "nimbus_worker_invocations_total{{worker=\"{}\"}} {}",
                w.name, w.invocations
            );
        }
        let account = self.account();
        metrics::family(
            &mut out,
            "nimbus_account_concurrency_limit",
            "gauge",
            "The account's concurrency limit.",
        );
        let _ = writeln!(out, "nimbus_account_concurrency_limit {}", account.limit);
        metrics::family(
            &mut out,
            "nimbus_unreserved_concurrency",
            "gauge",
            "Concurrency left to functions without a reservation.",
        );
        let _ = writeln!(out, "nimbus_unreserved_concurrency {}", account.unreserved);
        out
    }

    /// Sandboxes per function version, for `nimbus status`: (key, worker name, idle, total).
    pub fn sandbox_table(&self) -> Vec<(String, String, u32, u32)> {
        let names: HashMap<u64, String> = self
            .live_workers()
            .iter()
            .map(|w| (w.id, w.name.clone()))
            .collect();
        let mut rows = Vec::new();
        if let Ok(pools) = self.pools.lock() {
            for (key, pool) in pools.iter() {
                for (id, total) in &pool.per_worker {
                    if *total == 0 {
                        continue;
                    }
                    let idle = pool
                        .idle
                        .iter()
                        .chain(pool.provisioned_idle.iter())
                        .filter(|s| s.worker.id == *id)
                        .count() as u32;
                    if let Some(name) = names.get(id) {
                        rows.push((key.clone(), name.clone(), idle, *total));
                    }
                }
            }
        }
        rows.sort();
        rows
    }

    /// Releases every sandbox and commits the telemetry still queued.
    pub async fn shutdown(&self) {
        let all: Vec<Sandbox> = match self.pools.lock() {
            Ok(mut pools) => pools
                .drain()
                .flat_map(|(_, p)| p.idle.into_iter().chain(p.provisioned_idle))
                .collect(),
            Err(_) => Vec::new(),
        };
        self.release_all(all).await;
        self.telemetry.shutdown();
    }
}

#[cfg(test)]
mod tests;
