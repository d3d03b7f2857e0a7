//! The Worker Manager: owns the sandboxes of each function version. It hands an invocation an
//! idle warm sandbox, or asks Placement for a worker and has that worker init a new one (a cold
//! start); it enforces the concurrency limit, returns sandboxes to their pool afterwards, retires
//! them when their function changes, and reaps those idle longer than the keep-alive.
//!
//! Its state is soft: it can be rebuilt from the workers. It records each invocation's log and
//! usage through the telemetry writer but holds no durable state itself.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nimbus_placement::{PlacementDecision, SandboxRequest, WorkerView, place};
use nimbus_store::{NewLogEntry, TelemetryWriter};
use nimbus_types::invocation::gb_seconds;
use nimbus_types::{FunctionConfig, InvokeOutcome, InvokeRequest, UsageRecord};
use nimbus_worker::{SandboxId, Worker};
use tokio::sync::Semaphore;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Rate Exceeded.")]
    Throttled,
    #[error("no worker has room for a sandbox of {0} MB")]
    NoCapacity(u32),
    /// The function's code cannot run; the message is meant for the user.
    #[error("{0}")]
    InvalidCode(String),
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<nimbus_worker::Error> for Error {
    fn from(e: nimbus_worker::Error) -> Self {
        match e {
            nimbus_worker::Error::InvalidCode(m) => Error::InvalidCode(m),
            other => Error::Internal(other.to_string()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Invocations that may run at once across all functions (Lambda's account concurrency).
    pub concurrency_limit: u32,
    /// How long an idle sandbox is kept warm.
    pub keep_alive: Duration,
}

struct IdleSandbox {
    worker: usize,
    sandbox: SandboxId,
    since: Instant,
}

/// The sandboxes of one function.
struct FunctionPool {
    /// Sandboxes of any other revision are retired, never reused.
    revision: String,
    /// Most recently used last, so the warm set stays small under uneven load.
    idle: Vec<IdleSandbox>,
    /// Sandboxes of this revision per worker, idle or busy.
    per_worker: Vec<u32>,
}

pub struct WorkerManager {
    config: ManagerConfig,
    workers: Vec<Arc<dyn Worker>>,
    pools: Mutex<HashMap<String, FunctionPool>>,
    concurrency: Semaphore,
    telemetry: Arc<TelemetryWriter>,
}

impl WorkerManager {
    pub fn new(
        config: ManagerConfig,
        workers: Vec<Arc<dyn Worker>>,
        telemetry: Arc<TelemetryWriter>,
    ) -> Self {
        Self {
            concurrency: Semaphore::new(config.concurrency_limit as usize),
            config,
            workers,
            pools: Mutex::new(HashMap::new()),
            telemetry,
        }
    }

    /// Checks that a function's code can run and puts it on the workers ahead of its first
    /// invocation, so that a cold start does not wait for unpacking or compilation.
    pub async fn prepare(&self, function: &FunctionConfig) -> Result<()> {
        let worker = self
            .workers
            .first()
            .ok_or(Error::NoCapacity(function.memory_mb))?;
        worker.prepare(function).await?;
        for other in self.workers.iter().skip(1) {
            if let Err(e) = other.prepare(function).await {
                tracing::warn!(function = %function.name, error = %e, "pre-download to a worker failed");
            }
        }
        Ok(())
    }

    /// Retires the sandboxes of a function that was updated or deleted.
    pub async fn retire(&self, name: &str) {
        let retired = match self.pools.lock() {
            Ok(mut pools) => pools.remove(name).map(|p| p.idle).unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        self.release_all(retired).await;
    }

    async fn release_all(&self, sandboxes: Vec<IdleSandbox>) {
        for s in sandboxes {
            if let Some(worker) = self.workers.get(s.worker) {
                worker.release(s.sandbox).await;
            }
        }
    }

    fn take_idle(&self, function: &FunctionConfig) -> (Option<IdleSandbox>, Vec<IdleSandbox>) {
        let Ok(mut pools) = self.pools.lock() else {
            return (None, Vec::new());
        };
        let pool = pools
            .entry(function.name.clone())
            .or_insert_with(|| FunctionPool {
                revision: function.revision_id.clone(),
                idle: Vec::new(),
                per_worker: vec![0; self.workers.len()],
            });
        let mut stale = Vec::new();
        if pool.revision != function.revision_id {
            stale = std::mem::take(&mut pool.idle);
            pool.revision = function.revision_id.clone();
            pool.per_worker = vec![0; self.workers.len()];
        }
        (pool.idle.pop(), stale)
    }

    async fn cold_start(&self, function: &FunctionConfig) -> Result<(usize, SandboxId)> {
        let per_worker = self
            .pools
            .lock()
            .ok()
            .and_then(|p| p.get(&function.name).map(|p| p.per_worker.clone()))
            .unwrap_or_default();
        let views: Vec<WorkerView> = self
            .workers
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let status = w.status();
                WorkerView {
                    capacity_mb: status.capacity_mb,
                    reserved_mb: status.reserved_mb,
                    healthy: true,
                    has_code: w.has_code(&function.code.sha256),
                    sandboxes_of_function: per_worker.get(i).copied().unwrap_or(0),
                }
            })
            .collect();
        let request = SandboxRequest {
            memory_mb: function.memory_mb as u64,
        };
        let PlacementDecision::Place(index) = place(&views, &request) else {
            return Err(Error::NoCapacity(function.memory_mb));
        };
        let init = self.workers[index].init(function).await?;
        if let Ok(mut pools) = self.pools.lock()
            && let Some(pool) = pools.get_mut(&function.name)
            && pool.revision == function.revision_id
            && let Some(count) = pool.per_worker.get_mut(index)
        {
            *count += 1;
        }
        Ok((index, init.sandbox))
    }

    /// Runs one synchronous invocation and records its log and usage.
    pub async fn invoke(
        &self,
        function: &FunctionConfig,
        request: InvokeRequest,
    ) -> Result<InvokeOutcome> {
        let _permit = self
            .concurrency
            .try_acquire()
            .map_err(|_| Error::Throttled)?;
        let async_attempt = request.async_attempt;
        let (idle, stale) = self.take_idle(function);
        if !stale.is_empty() {
            self.release_all(stale).await;
        }
        let (worker, sandbox) = match idle {
            Some(s) => (s.worker, s.sandbox),
            None => self.cold_start(function).await?,
        };
        let outcome = match self.workers[worker].invoke(sandbox, request.clone()).await {
            Ok(outcome) => outcome,
            // The worker lost the sandbox (it was restarted or reaped it): start a fresh one.
            Err(nimbus_worker::Error::UnknownSandbox(_)) => {
                let (worker, sandbox) = self.cold_start(function).await?;
                let outcome = self.workers[worker].invoke(sandbox, request).await?;
                if outcome.reusable {
                    self.give_back(function, worker, sandbox).await;
                } else {
                    self.forget(function, worker, sandbox).await;
                }
                self.record(function, &outcome, async_attempt);
                return Ok(outcome);
            }
            Err(e) => return Err(e.into()),
        };
        if outcome.reusable {
            self.give_back(function, worker, sandbox).await;
        } else {
            self.forget(function, worker, sandbox).await;
        }
        self.record(function, &outcome, async_attempt);
        Ok(outcome)
    }

    /// Shuts down a sandbox that cannot serve again (its runtime crashed or was killed).
    async fn forget(&self, function: &FunctionConfig, worker: usize, sandbox: SandboxId) {
        if let Ok(mut pools) = self.pools.lock()
            && let Some(pool) = pools.get_mut(&function.name)
            && pool.revision == function.revision_id
            && let Some(count) = pool.per_worker.get_mut(worker)
        {
            *count = count.saturating_sub(1);
        }
        self.workers[worker].release(sandbox).await;
    }

    async fn give_back(&self, function: &FunctionConfig, worker: usize, sandbox: SandboxId) {
        let kept = match self.pools.lock() {
            Ok(mut pools) => match pools.get_mut(&function.name) {
                Some(pool) if pool.revision == function.revision_id => {
                    pool.idle.push(IdleSandbox {
                        worker,
                        sandbox,
                        since: Instant::now(),
                    });
                    true
                }
                _ => false,
            },
            Err(_) => false,
        };
        if !kept {
            self.workers[worker].release(sandbox).await;
        }
    }

    fn record(
        &self,
        function: &FunctionConfig,
        outcome: &InvokeOutcome,
        async_attempt: Option<u32>,
    ) {
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

    /// Shuts down sandboxes idle for longer than the keep-alive; returns how many.
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
                    if let Some(count) = pool.per_worker.get_mut(s.worker) {
                        *count = count.saturating_sub(1);
                    }
                }
                expired.extend(old);
            }
            pools.retain(|_, p| !p.idle.is_empty() || p.per_worker.iter().any(|c| *c > 0));
        }
        let n = expired.len();
        self.release_all(expired).await;
        n
    }

    /// Reaps idle sandboxes until `shutdown` resolves.
    pub async fn run_reaper(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        let period =
            (self.config.keep_alive / 4).clamp(Duration::from_millis(100), Duration::from_secs(10));
        let mut tick = tokio::time::interval(period);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tick.tick() => {
                    let n = self.reap_idle().await;
                    if n > 0 {
                        tracing::debug!(sandboxes = n, "reaped idle sandboxes");
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

    /// Idle sandboxes per function, for diagnostics and tests.
    pub fn idle_sandboxes(&self, name: &str) -> usize {
        self.pools
            .lock()
            .ok()
            .and_then(|p| p.get(name).map(|p| p.idle.len()))
            .unwrap_or(0)
    }

    /// Releases every sandbox and commits the telemetry still queued.
    pub async fn shutdown(&self) {
        let all: Vec<IdleSandbox> = match self.pools.lock() {
            Ok(mut pools) => pools.drain().flat_map(|(_, p)| p.idle).collect(),
            Err(_) => Vec::new(),
        };
        self.release_all(all).await;
        self.telemetry.shutdown();
    }
}
