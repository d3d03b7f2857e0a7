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
//!
//! This file holds the manager and the path of an invocation; the rest is split by subject:
//! `fleet` (workers and what is placed on them), `pool` (each version's sandboxes), `provisioner`
//! (provisioned concurrency), `reaper` (idle sandboxes), `concurrency` (limits and reservations)
//! and `metrics`.

#![forbid(unsafe_code)]

pub mod concurrency;
mod fleet;
pub mod metrics;
mod pool;
mod provisioner;
mod reaper;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use nimbus_placement::{PlacementDecision, SandboxRequest, WorkerView, place};
use nimbus_store::{NewLogEntry, TelemetryWriter};
use nimbus_types::invocation::gb_seconds;
use nimbus_types::{FunctionConfig, InitType, InvokeOutcome, InvokeRequest, UsageRecord};
use nimbus_worker::SandboxId;
use tokio::sync::Notify;

use concurrency::Concurrency;
pub use concurrency::{AccountConcurrency, ThrottleReason};
pub use fleet::{WorkerEntry, WorkerSummary};
use metrics::FunctionMetrics;
use pool::{FunctionPool, Lease, release_all};
pub use provisioner::{ProvisionedState, ProvisionedStatus};

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

pub struct WorkerManager {
    config: ManagerConfig,
    workers: RwLock<Vec<Arc<WorkerEntry>>>,
    next_worker_id: AtomicU64,
    pools: Mutex<pool::Pools>,
    concurrency: Concurrency,
    metrics: Mutex<BTreeMap<String, FunctionMetrics>>,
    /// Wakes the provisioner: provisioned concurrency changed, a provisioned sandbox died, or
    /// the fleet changed.
    provision: Notify,
    telemetry: Arc<TelemetryWriter>,
    /// Invocations finished, for noticing when the node is idle.
    finished: AtomicU64,
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
                if entry.is_lost() {
                    break;
                }
                if let Err(e) = entry.worker.prepare(&function).await {
                    tracing::debug!(function = %function.name, error = %e, "pre-download failed");
                }
            }
        });
    }

    // ---- changes to functions ----

    /// Retires the sandboxes of one function version (by `name:version`) after a change.
    pub async fn retire(&self, qualified: &str) {
        let retired = self
            .pools()
            .get_mut(qualified)
            .map(FunctionPool::retire)
            .unwrap_or_default();
        release_all(retired).await;
        self.forget_on_workers(qualified).await;
    }

    /// Tells every worker to drop what it keeps for `qualified` (a version's snapshot).
    async fn forget_on_workers(&self, qualified: &str) {
        for entry in self.live_workers() {
            entry.worker.forget(qualified).await;
        }
    }

    /// Retires every version of a deleted function and forgets its reservation.
    pub async fn remove_function(&self, name: &str) {
        let prefix = format!("{name}:");
        let keys: Vec<String> = self
            .pools()
            .keys()
            .filter(|k| k.starts_with(&prefix))
            .cloned()
            .collect();
        for key in keys {
            self.retire(&key).await;
            self.pools().remove(&key);
        }
        // Versions never invoked have no pool, but may have snapshots.
        self.forget_on_workers(name).await;
        self.concurrency.remove(name);
        self.function_metrics().remove(name);
    }

    // ---- invocations ----

    /// Runs one invocation and records its log, usage and metrics.
    pub async fn invoke(
        &self,
        function: &FunctionConfig,
        request: InvokeRequest,
    ) -> Result<InvokeOutcome> {
        let function_key = function.key();
        let permit = match self.concurrency.acquire(&function_key) {
            Ok(p) => p,
            Err(reason) => {
                self.throttled(&function_key, reason);
                return Err(Error::Throttled(reason));
            }
        };
        let key = function.qualified_name();
        let async_attempt = request.async_attempt;
        let (idle, stale) = self.take_idle(&key, function);
        // From here on, this future may be dropped at any wait (a client that goes away, a
        // timeout around the invocation): a leased sandbox is guarded by `Leased` at once, and
        // everything else releases itself when dropped.
        let idle = idle.map(|lease| Leased::new(self, &key, lease));
        if !stale.is_empty() {
            release_all(stale).await;
        }
        let leased = match idle {
            Some(leased) => leased,
            None => self.cold(&key, function).await?,
        };
        let outcome = match self.run(function, leased, request.clone()).await {
            // The worker lost the sandbox (it restarted, or reaped it): start a fresh one.
            Err(Error::SandboxVanished) => {
                let leased = self.cold(&key, function).await?;
                self.run(function, leased, request).await?
            }
            other => other?,
        };
        drop(permit);
        self.record(function, &outcome, async_attempt);
        Ok(outcome)
    }

    /// Starts a sandbox for an invocation (a cold start) and leases it.
    async fn cold<'a>(&'a self, key: &'a str, function: &FunctionConfig) -> Result<Leased<'a>> {
        match self.new_sandbox(key, function, InitType::OnDemand).await {
            Ok(lease) => Ok(Leased::new(self, key, lease)),
            Err(Error::NoCapacity(mb)) => {
                self.throttled(&function.key(), ThrottleReason::Capacity);
                Err(Error::NoCapacity(mb))
            }
            Err(e) => Err(e),
        }
    }

    /// Picks a worker with Placement and has it create a sandbox.
    async fn new_sandbox(
        &self,
        key: &str,
        function: &FunctionConfig,
        init_type: InitType,
    ) -> Result<Lease> {
        let per_worker = self
            .pools()
            .get(key)
            .map(|p| p.per_worker().clone())
            .unwrap_or_default();
        let memory_mb = function.memory_mb as u64;
        // Idle sandboxes are a cache: when no worker has room, the least recently used idle
        // sandbox of any function gives way, one at a time, until the new one fits.
        let (workers, index) = loop {
            let workers = self.live_workers();
            let views: Vec<WorkerView> = workers
                .iter()
                .map(|w| WorkerView {
                    capacity_mb: w.capacity_mb(),
                    // Snapshot templates take room as sandboxes do.
                    reserved_mb: w.reserved_mb() + w.snapshot_mb(),
                    healthy: !w.is_lost(),
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
        // Reserve before the init so that concurrent cold starts see the memory as taken. The
        // reservation is given back when it is dropped: if the init fails, or if this future is
        // dropped while waiting for it.
        let reservation = entry.reserve(memory_mb);
        let init = tokio::select! {
            init = entry.worker.init(function, init_type) => init,
            _ = entry.lost() => Err(nimbus_worker::Error::Lost(format!(
                "worker {} was lost while starting a sandbox", entry.name
            ))),
        };
        let init = match init {
            Ok(init) => init,
            Err(e) => {
                drop(reservation);
                if let nimbus_worker::Error::Lost(m) = &e {
                    self.remove_worker(entry.id, m);
                }
                return Err(e.into());
            }
        };
        let lease = Lease::new(reservation.started(init.sandbox));
        Ok(self.count_new(key, function, lease))
    }

    /// Runs the invocation in the leased sandbox, then gives the sandbox back or forgets it.
    async fn run(
        &self,
        function: &FunctionConfig,
        leased: Leased<'_>,
        request: InvokeRequest,
    ) -> Result<InvokeOutcome> {
        let worker = leased.worker.clone();
        worker.count_invocation();
        let result = tokio::select! {
            r = worker.worker.invoke(leased.sandbox, request) => r,
            _ = worker.lost() => Err(nimbus_worker::Error::Lost(format!(
                "worker {} was lost during the invocation", worker.name
            ))),
        };
        match result {
            Ok(outcome) => {
                if outcome.reusable {
                    leased.give_back(function).await;
                } else {
                    leased.forget().await;
                }
                Ok(outcome)
            }
            Err(nimbus_worker::Error::UnknownSandbox(_)) => {
                leased.forget().await;
                Err(Error::SandboxVanished)
            }
            Err(e) => {
                if let nimbus_worker::Error::Lost(m) = &e {
                    // Unreachable: stop placing sandboxes there. If it is alive after all, its
                    // next heartbeat is refused and it joins again with a clean slate.
                    self.remove_worker(worker.id, m);
                }
                leased.forget().await;
                Err(e.into())
            }
        }
    }

    fn throttled(&self, function: &str, reason: ThrottleReason) {
        self.function_metrics()
            .entry(function.to_owned())
            .or_default()
            .throttled(reason);
    }

    fn record(
        &self,
        function: &FunctionConfig,
        outcome: &InvokeOutcome,
        async_attempt: Option<u32>,
    ) {
        self.finished.fetch_add(1, Ordering::Relaxed);
        let key = function.key();
        self.function_metrics()
            .entry(key.clone())
            .or_default()
            .record(outcome);
        let now = nimbus_types::time::now_ms();
        self.telemetry.record(
            NewLogEntry {
                time_ms: now,
                function: key.clone(),
                request_id: outcome.request_id.clone(),
                text: outcome.log.clone(),
            },
            UsageRecord {
                time_ms: now,
                function: key,
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

    // ---- telemetry and shutdown ----

    /// Waits until the logs and usage records of finished invocations are on disk.
    pub async fn flush_telemetry(&self) {
        self.flush_telemetry_within(std::time::Duration::ZERO).await;
    }

    /// Waits until every invocation's log and usage record so far is durable, letting the
    /// telemetry writer take up to `within` so that several waiters share one sync.
    pub async fn flush_telemetry_within(&self, within: std::time::Duration) {
        // An error means the writer has stopped, and then there is nothing left to wait for.
        let _ = self.telemetry.durable_within(within).await;
    }

    /// Releases every sandbox and commits the telemetry still queued.
    pub async fn shutdown(&self) {
        let all = self
            .pools()
            .drain()
            .flat_map(|(_, pool)| pool.into_idle())
            .collect();
        release_all(all).await;
        self.telemetry.shutdown();
    }
}

/// A sandbox leased for one invocation, from the moment it is taken or started until the
/// invocation hands it back ([`Self::give_back`]) or forgets it ([`Self::forget`]).
///
/// If the invocation never gets that far because its future was dropped (axum drops a handler's
/// future when its client disconnects, and a timeout around an invocation drops it too),
/// dropping this forgets the sandbox: it may be in the middle of a run, a wasm instance or a
/// runtime process part-way through an invocation, so it must never serve again. Its pool stops
/// counting it, and the lease, dropped, frees its memory on the worker and has the worker shut
/// it down in the background (see `HostedSandbox`). The invocation's concurrency permit is
/// dropped with the future, as ever.
struct Leased<'a> {
    manager: &'a WorkerManager,
    key: &'a str,
    /// Where the invocation runs, read from the lease once, while it is sure to be there.
    worker: Arc<WorkerEntry>,
    sandbox: SandboxId,
    /// Until the invocation ends.
    lease: Option<Lease>,
}

impl<'a> Leased<'a> {
    fn new(manager: &'a WorkerManager, key: &'a str, lease: Lease) -> Self {
        Self {
            manager,
            key,
            worker: lease.worker().clone(),
            sandbox: lease.sandbox(),
            lease: Some(lease),
        }
    }

    /// The invocation left the sandbox fit to serve again: back to its pool.
    async fn give_back(mut self, function: &FunctionConfig) {
        if let Some(lease) = self.lease.take() {
            self.manager.give_back(self.key, function, lease).await;
        }
    }

    /// The sandbox cannot serve again (its runtime crashed or was killed, it vanished, or its
    /// worker was lost): shut it down and wait for that.
    async fn forget(mut self) {
        if let Some(lease) = self.lease.take() {
            self.manager.forget(self.key, lease).await;
        }
    }
}

impl Drop for Leased<'_> {
    fn drop(&mut self) {
        let Some(lease) = self.lease.take() else {
            return;
        };
        tracing::debug!(
            function = self.key,
            worker = %self.worker.name,
            sandbox = self.sandbox,
            "invocation abandoned; its sandbox is shut down"
        );
        self.manager.stop_counting(self.key, &lease);
        drop(lease);
    }
}

#[cfg(test)]
mod tests;
