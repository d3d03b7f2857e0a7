//! The sandboxes of each function version: idle ones waiting for an invocation (on-demand and
//! provisioned), and counts of those out on a lease. Every change to a pool's sandboxes and
//! counters is a method of [`FunctionPool`], and each ends with [`FunctionPool::check`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nimbus_types::FunctionConfig;
use nimbus_worker::SandboxId;

use crate::WorkerManager;
use crate::fleet::{HostedSandbox, WorkerEntry};
use crate::provisioner::Provisioned;

/// How long a sandbox serves before it is replaced: ten minutes less than its role's
/// credentials last, so that a function never holds expired ones.
pub(crate) const MAX_SANDBOX_AGE: Duration =
    Duration::from_secs(nimbus_types::identity::SESSION_LIFETIME_S as u64 - 600);

/// The pools of every function version, by `name:version`.
pub(crate) type Pools = HashMap<String, FunctionPool>;

/// An idle sandbox. Dropped rather than released (see [`HostedSandbox`]), it is still shut
/// down.
pub(crate) struct Sandbox {
    hosted: HostedSandbox,
    /// When it last finished an invocation (or its init).
    pub(crate) since: Instant,
}

impl Sandbox {
    pub(crate) fn worker(&self) -> &Arc<WorkerEntry> {
        self.hosted.worker()
    }

    pub(crate) fn id(&self) -> SandboxId {
        self.hosted.id()
    }

    /// Frees its memory reservation and has its worker shut it down.
    pub(crate) async fn release(self) {
        self.hosted.release().await;
    }
}

/// A sandbox taken for one invocation. Dropped rather than released or put back (see
/// [`HostedSandbox`]), it is shut down, but its pool still counts it: whoever drops it must
/// tell the pool first ([`FunctionPool::forget`]).
pub(crate) struct Lease {
    hosted: HostedSandbox,
    pub(crate) provisioned: bool,
    /// The generation of the pool whose counters include this sandbox, if one does. A pool
    /// that changes revision starts a new generation with its counters at zero, so a sandbox
    /// leased before that must not be subtracted from them when it comes back.
    counted_in: Option<u64>,
}

impl Lease {
    /// A sandbox just started, not yet counted in any pool (see [`WorkerManager::count_new`]).
    pub(crate) fn new(hosted: HostedSandbox) -> Self {
        Self {
            hosted,
            provisioned: false,
            counted_in: None,
        }
    }

    pub(crate) fn worker(&self) -> &Arc<WorkerEntry> {
        self.hosted.worker()
    }

    pub(crate) fn sandbox(&self) -> SandboxId {
        self.hosted.id()
    }

    pub(crate) async fn release(self) {
        self.hosted.release().await;
    }

    fn into_idle(self) -> Sandbox {
        Sandbox {
            hosted: self.hosted,
            since: Instant::now(),
        }
    }
}

/// Generations are unique across pools, so that a pool removed and created again does not
/// take the leases of the old one for its own.
fn next_generation() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The sandboxes of one function version.
pub(crate) struct FunctionPool {
    /// Sandboxes of any other revision are retired, never reused.
    revision: String,
    generation: u64,
    /// On-demand sandboxes, most recently used last, so the warm set stays small under uneven
    /// load.
    idle: Vec<Sandbox>,
    provisioned_idle: Vec<Sandbox>,
    /// Leases of this generation out now: of provisioned sandboxes, and of the others
    /// (on-demand ones, and provisioned ones between their init and joining the pool).
    provisioned_busy: u32,
    on_demand_busy: u32,
    /// Sandboxes of this generation per worker id, idle or busy.
    per_worker: HashMap<u64, u32>,
    provisioned: Option<Provisioned>,
}

impl FunctionPool {
    pub(crate) fn new(function: &FunctionConfig) -> Self {
        Self {
            revision: function.revision_id.clone(),
            generation: next_generation(),
            idle: Vec::new(),
            provisioned_idle: Vec::new(),
            provisioned_busy: 0,
            on_demand_busy: 0,
            per_worker: HashMap::new(),
            provisioned: None,
        }
    }

    // ---- reading ----

    /// Whether the pool holds sandboxes of this function's revision.
    pub(crate) fn serves(&self, function: &FunctionConfig) -> bool {
        self.revision == function.revision_id
    }

    /// Provisioned sandboxes, idle or busy.
    pub(crate) fn allocated(&self) -> u32 {
        self.provisioned_idle.len() as u32 + self.provisioned_busy
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.idle.is_empty()
            && self.provisioned_idle.is_empty()
            && self.provisioned.is_none()
            && self.per_worker.values().all(|c| *c == 0)
    }

    /// Idle sandboxes, on-demand and provisioned.
    pub(crate) fn idle_count(&self) -> usize {
        self.idle.len() + self.provisioned_idle.len()
    }

    /// Sandboxes per worker id, idle or busy.
    pub(crate) fn per_worker(&self) -> &HashMap<u64, u32> {
        &self.per_worker
    }

    pub(crate) fn idle_on(&self, worker: u64) -> u32 {
        self.idle.iter().filter(|s| s.worker().id == worker).count() as u32
    }

    pub(crate) fn provisioned_idle_on(&self, worker: u64) -> u32 {
        self.provisioned_idle
            .iter()
            .filter(|s| s.worker().id == worker)
            .count() as u32
    }

    pub(crate) fn provisioned_busy(&self) -> u32 {
        self.provisioned_busy
    }

    pub(crate) fn provisioned(&self) -> Option<&Provisioned> {
        self.provisioned.as_ref()
    }

    pub(crate) fn provisioned_mut(&mut self) -> Option<&mut Provisioned> {
        self.provisioned.as_mut()
    }

    /// The idle on-demand sandbox unused for longest among those `fits` accepts, as its last
    /// use and its index for [`Self::evict`].
    pub(crate) fn oldest_idle(&self, fits: impl Fn(&Sandbox) -> bool) -> Option<(Instant, usize)> {
        self.idle
            .iter()
            .enumerate()
            .filter(|(_, s)| fits(s))
            .map(|(i, s)| (s.since, i))
            .min()
    }

    // ---- changing ----

    /// Takes an idle sandbox of this function's revision, provisioned ones first. A pool of an
    /// older revision switches to this one: its idle sandboxes are returned, to be released.
    pub(crate) fn take(&mut self, function: &FunctionConfig) -> (Option<Lease>, Vec<Sandbox>) {
        let mut stale = Vec::new();
        if !self.serves(function) {
            stale = std::mem::take(&mut self.idle);
            stale.append(&mut self.provisioned_idle);
            self.revision = function.revision_id.clone();
            self.generation = next_generation();
            self.per_worker.clear();
            self.provisioned_busy = 0;
            self.on_demand_busy = 0;
        }
        let taken = if let Some(s) = self.provisioned_idle.pop() {
            self.provisioned_busy += 1;
            Some((s, true))
        } else if let Some(s) = self.idle.pop() {
            self.on_demand_busy += 1;
            Some((s, false))
        } else {
            None
        };
        // An idle sandbox is counted in this generation, and so is its lease.
        let lease = taken.map(|(s, provisioned)| Lease {
            hosted: s.hosted,
            provisioned,
            counted_in: Some(self.generation),
        });
        self.check();
        (lease, stale)
    }

    /// Counts a sandbox just started for this function, if the pool still serves its revision.
    pub(crate) fn count_new(&mut self, function: &FunctionConfig, lease: &mut Lease) {
        if self.serves(function) && lease.counted_in.is_none() {
            *self.per_worker.entry(lease.worker().id).or_default() += 1;
            self.on_demand_busy += 1;
            lease.counted_in = Some(self.generation);
        }
        self.check();
    }

    /// Takes back a sandbox after an invocation that left it fit to serve again. Returns it if
    /// the pool cannot keep it (its revision is gone, or its worker is lost): release it.
    pub(crate) fn put_back(&mut self, function: &FunctionConfig, lease: Lease) -> Option<Lease> {
        if !self.serves(function) || lease.worker().is_lost() {
            self.forget(&lease);
            return Some(lease);
        }
        self.count_returned(&lease);
        let provisioned = lease.provisioned;
        let sandbox = lease.into_idle();
        let wanted = self.provisioned.as_ref().map_or(0, |p| p.requested);
        if provisioned && self.allocated() < wanted {
            self.provisioned_idle.push(sandbox);
        } else {
            // An on-demand sandbox, or a provisioned one no longer needed because provisioned
            // concurrency was lowered: it serves on demand from now on.
            self.idle.push(sandbox);
        }
        self.check();
        None
    }

    /// Stops counting a leased sandbox that will not come back (its runtime crashed or was
    /// killed, or its worker was lost).
    pub(crate) fn forget(&mut self, lease: &Lease) {
        if self.counts(lease) {
            self.end_lease(lease);
            self.uncount(lease.worker().id);
        }
        self.check();
    }

    /// Adds a sandbox started for provisioned concurrency. Returns it if the pool no longer
    /// wants it (its revision changed, or provisioned concurrency was removed): release it.
    pub(crate) fn add_provisioned(
        &mut self,
        function: &FunctionConfig,
        lease: Lease,
    ) -> Option<Lease> {
        let Some(p) = self
            .provisioned
            .as_mut()
            .filter(|_| self.revision == function.revision_id)
        else {
            self.forget(&lease);
            return Some(lease);
        };
        p.pending = p.pending.saturating_sub(1);
        self.count_returned(&lease);
        self.provisioned_idle.push(lease.into_idle());
        self.check();
        None
    }

    /// Sets or clears (`None`) provisioned concurrency. Returns the idle provisioned sandboxes
    /// beyond the new number, to be released.
    pub(crate) fn set_provisioned(&mut self, provisioned: Option<Provisioned>) -> Vec<Sandbox> {
        let keep = provisioned.as_ref().map_or(0, |p| p.requested) as usize;
        self.provisioned = provisioned;
        let extra = self
            .provisioned_idle
            .len()
            .saturating_sub(keep.saturating_sub(self.provisioned_busy as usize));
        let surplus: Vec<Sandbox> = self.provisioned_idle.drain(..extra).collect();
        for s in &surplus {
            self.uncount(s.worker().id);
        }
        self.check();
        surplus
    }

    /// Forgets the sandboxes on a lost worker; returns how many were idle. Its busy ones are
    /// forgotten as their invocations fail.
    pub(crate) fn forget_worker(&mut self, worker: u64) -> usize {
        let before = self.idle_count();
        self.idle.retain(|s| s.worker().id != worker);
        self.provisioned_idle.retain(|s| s.worker().id != worker);
        let forgotten = before - self.idle_count();
        for _ in 0..forgotten {
            self.uncount(worker);
        }
        self.check();
        forgotten
    }

    /// Takes out the on-demand sandboxes idle for `keep_alive` or longer, and the idle ones
    /// (provisioned too) older than `max_age` (whose credentials are about to expire: see
    /// [`MAX_SANDBOX_AGE`]), to be released. The provisioner replaces provisioned ones.
    pub(crate) fn reap(&mut self, keep_alive: Duration, max_age: Duration) -> Vec<Sandbox> {
        let (mut old, fresh): (Vec<_>, Vec<_>) = self
            .idle
            .drain(..)
            .partition(|s| s.since.elapsed() >= keep_alive || s.hosted.age() >= max_age);
        self.idle = fresh;
        let (expiring, kept): (Vec<_>, Vec<_>) = self
            .provisioned_idle
            .drain(..)
            .partition(|s| s.hosted.age() >= max_age);
        self.provisioned_idle = kept;
        old.extend(expiring);
        for s in &old {
            self.uncount(s.worker().id);
        }
        self.check();
        old
    }

    /// Takes out the idle sandbox at `index` (from [`Self::oldest_idle`]), to be released.
    pub(crate) fn evict(&mut self, index: usize) -> Sandbox {
        let s = self.idle.remove(index);
        self.uncount(s.worker().id);
        self.check();
        s
    }

    /// Retires the pool after a change of its function: takes out every idle sandbox, to be
    /// released, and drops provisioned concurrency. Busy sandboxes are released when they come
    /// back, and the next invocation starts the pool again at its new revision.
    pub(crate) fn retire(&mut self) -> Vec<Sandbox> {
        let mut out = std::mem::take(&mut self.idle);
        out.append(&mut self.provisioned_idle);
        for s in &out {
            self.uncount(s.worker().id);
        }
        self.provisioned = None;
        self.revision = String::new();
        self.check();
        out
    }

    /// Every idle sandbox, for shutting down.
    pub(crate) fn into_idle(self) -> impl Iterator<Item = Sandbox> {
        self.idle.into_iter().chain(self.provisioned_idle)
    }

    /// Whether the pool's counters include this lease.
    fn counts(&self, lease: &Lease) -> bool {
        lease.counted_in == Some(self.generation)
    }

    /// Counts a leased sandbox as idle, about to join the pool. One leased in this generation
    /// is counted on its worker already; one leased before it is not (the counters started
    /// again from zero).
    fn count_returned(&mut self, lease: &Lease) {
        if self.counts(lease) {
            self.end_lease(lease);
        } else {
            *self.per_worker.entry(lease.worker().id).or_default() += 1;
        }
    }

    /// A counted lease is no longer out; its sandbox is still counted on its worker.
    fn end_lease(&mut self, lease: &Lease) {
        let busy = if lease.provisioned {
            &mut self.provisioned_busy
        } else {
            &mut self.on_demand_busy
        };
        *busy = busy.saturating_sub(1);
    }

    /// One sandbox fewer on this worker.
    fn uncount(&mut self, worker: u64) {
        if let Some(count) = self.per_worker.get_mut(&worker) {
            *count = count.saturating_sub(1);
        }
    }

    // ---- consistency ----

    /// Panics if the counters disagree with the sandboxes held, in debug builds and in this
    /// crate's tests (which run in release builds too).
    fn check(&self) {
        if cfg!(any(debug_assertions, test))
            && let Err(problem) = self.verify()
        {
            panic!(
                "the pool of revision {:?} is inconsistent: {problem}",
                self.revision
            );
        }
    }

    /// What [`Self::check`] checks: every idle sandbox is counted on its worker, once; the
    /// counts per worker add up to the idle sandboxes and the leases out; only a pool with
    /// provisioned concurrency holds idle provisioned sandboxes.
    pub(crate) fn verify(&self) -> Result<(), String> {
        let mut held: HashMap<u64, u32> = HashMap::new();
        let mut seen = HashSet::new();
        for s in self.idle.iter().chain(&self.provisioned_idle) {
            if !seen.insert((s.worker().id, s.id())) {
                return Err(format!(
                    "sandbox {} on worker {} is idle twice",
                    s.id(),
                    s.worker().id
                ));
            }
            *held.entry(s.worker().id).or_default() += 1;
        }
        for (worker, n) in &held {
            let counted = self.per_worker.get(worker).copied().unwrap_or(0);
            if counted < *n {
                return Err(format!(
                    "worker {worker} holds {n} idle sandboxes but {counted} are counted"
                ));
            }
        }
        let counted: u64 = self.per_worker.values().map(|c| u64::from(*c)).sum();
        let accounted = self.idle_count() as u64
            + u64::from(self.provisioned_busy)
            + u64::from(self.on_demand_busy);
        if counted != accounted {
            return Err(format!(
                "{counted} sandboxes counted, but {} idle, {} provisioned busy and {} on-demand \
                 busy",
                self.idle_count(),
                self.provisioned_busy,
                self.on_demand_busy
            ));
        }
        if self.provisioned.is_none() && !self.provisioned_idle.is_empty() {
            return Err("idle provisioned sandboxes without provisioned concurrency".to_owned());
        }
        Ok(())
    }
}

impl WorkerManager {
    // Every change to a pool is a method of `FunctionPool` that cannot panic before it is done
    // (apart from `check`, which stops a debug build at once), so a panic elsewhere while the
    // lock was held leaves the pools consistent. They are a cache of sandboxes the workers
    // hold: carry on with them rather than fail every invocation from then on.
    pub(crate) fn pools(&self) -> MutexGuard<'_, Pools> {
        self.pools.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes an idle sandbox of this revision, provisioned ones first; also returns sandboxes of
    /// an older revision, to be released.
    pub(crate) fn take_idle(
        &self,
        key: &str,
        function: &FunctionConfig,
    ) -> (Option<Lease>, Vec<Sandbox>) {
        self.pools()
            .entry(key.to_owned())
            .or_insert_with(|| FunctionPool::new(function))
            .take(function)
    }

    /// Counts a sandbox just started for `key` in its pool, if the pool still serves this
    /// revision.
    pub(crate) fn count_new(
        &self,
        key: &str,
        function: &FunctionConfig,
        mut lease: Lease,
    ) -> Lease {
        if let Some(pool) = self.pools().get_mut(key) {
            pool.count_new(function, &mut lease);
        }
        lease
    }

    /// Returns a sandbox to its pool after an invocation, or releases it if the pool cannot
    /// keep it.
    pub(crate) async fn give_back(&self, key: &str, function: &FunctionConfig, lease: Lease) {
        let rejected = match self.pools().get_mut(key) {
            Some(pool) => pool.put_back(function, lease),
            None => Some(lease),
        };
        if let Some(lease) = rejected {
            lease.release().await;
        }
    }

    /// Shuts down a sandbox that cannot serve again (its runtime crashed or was killed, or its
    /// worker was lost).
    pub(crate) async fn forget(&self, key: &str, lease: Lease) {
        self.stop_counting(key, &lease);
        lease.release().await;
    }

    /// What forgetting a leased sandbox takes besides shutting it down, none of it waiting, so
    /// that a drop guard can do it: its pool stops counting it, and a provisioned one is
    /// re-created.
    pub(crate) fn stop_counting(&self, key: &str, lease: &Lease) {
        if let Some(pool) = self.pools().get_mut(key) {
            pool.forget(lease);
        }
        if lease.provisioned {
            self.provision.notify_one();
        }
    }

    /// Shuts down the idle on-demand sandbox unused for longest, on a worker big enough for
    /// `memory_mb`; returns whether there was one.
    pub(crate) async fn evict_least_recently_used(&self, memory_mb: u64) -> bool {
        let victim = {
            let mut pools = self.pools();
            let oldest = pools
                .iter()
                .filter_map(|(key, pool)| {
                    let (since, i) = pool.oldest_idle(|s| s.worker().capacity_mb() >= memory_mb)?;
                    Some((since, key, i))
                })
                .min()
                .map(|(_, key, i)| (key.clone(), i));
            oldest.and_then(|(key, i)| Some(pools.get_mut(&key)?.evict(i)))
        };
        match victim {
            Some(s) => {
                tracing::debug!(worker = %s.worker().name, "evicting an idle sandbox to make room");
                s.release().await;
                true
            }
            None => false,
        }
    }

    /// Idle sandboxes of a function version (`name:version`), for diagnostics and tests.
    pub fn idle_sandboxes(&self, qualified: &str) -> usize {
        self.pools()
            .get(qualified)
            .map_or(0, FunctionPool::idle_count)
    }
}

/// Releases sandboxes one after the other.
pub(crate) async fn release_all(sandboxes: Vec<Sandbox>) {
    for s in sandboxes {
        s.release().await;
    }
}
