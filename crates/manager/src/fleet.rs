//! The fleet: the workers the manager places sandboxes on, and its own accounting of what it
//! placed on each (memory reserved, sandboxes hosted). A worker's figures go up in
//! [`WorkerEntry::reserve`], which hands out a [`Reservation`], and down when that reservation
//! is given back, nowhere else. It is given back when its sandbox is released, and also when it
//! is dropped without that (a future cancelled mid-init or mid-invocation), so that a worker's
//! figures never keep what nobody holds.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLockReadGuard, RwLockWriteGuard};

use nimbus_worker::{SandboxId, Worker};
use tokio::sync::watch;

use crate::WorkerManager;

/// A worker as the manager knows it: the worker itself and the manager's own accounting of
/// what it placed there.
pub struct WorkerEntry {
    /// Unique for the life of the node; a worker that joins again gets a new one.
    pub id: u64,
    pub name: String,
    pub remote: bool,
    pub(crate) worker: Arc<dyn Worker>,
    capacity_mb: AtomicU64,
    reserved_mb: AtomicU64,
    sandboxes: AtomicU32,
    invocations: AtomicU64,
    /// What a remote worker last reported keeping for SnapStart versions (a local one is
    /// asked).
    snapshots: std::sync::Mutex<Option<nimbus_worker::SnapshotUse>>,
    /// Memory its snapshot templates hold, in MB, as last looked at: they take room that
    /// sandboxes cannot have.
    snapshot_mb: AtomicU64,
    /// When `snapshot_mb` was last looked at, in ms since `joined` (0: never).
    snapshot_checked_ms: AtomicU64,
    joined: std::time::Instant,
    lost: watch::Sender<bool>,
    is_lost: AtomicBool,
}

impl WorkerEntry {
    pub(crate) fn capacity_mb(&self) -> u64 {
        self.capacity_mb.load(Ordering::Relaxed)
    }

    pub(crate) fn reserved_mb(&self) -> u64 {
        self.reserved_mb.load(Ordering::Relaxed)
    }

    fn free_mb(&self) -> u64 {
        self.capacity_mb()
            .saturating_sub(self.reserved_mb())
            .saturating_sub(self.snapshot_mb())
    }

    /// What the worker keeps for SnapStart versions: a remote worker's last heartbeat, or the
    /// local worker's own figures.
    fn snapshots(&self) -> nimbus_worker::SnapshotUse {
        self.snapshots
            .lock()
            .ok()
            .and_then(|s| *s)
            .unwrap_or_else(|| self.worker.status().snapshots)
    }

    /// Memory the worker's snapshot templates hold, in MB, looked at again at most once a
    /// second (placement asks on every cold start).
    pub(crate) fn snapshot_mb(&self) -> u64 {
        let now = self.joined.elapsed().as_millis() as u64 + 1;
        let last = self.snapshot_checked_ms.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= 1000)
            && self
                .snapshot_checked_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let mb = self.snapshots().memory_bytes.div_ceil(1 << 20);
            self.snapshot_mb.store(mb, Ordering::Relaxed);
        }
        self.snapshot_mb.load(Ordering::Relaxed)
    }

    pub(crate) fn is_lost(&self) -> bool {
        self.is_lost.load(Ordering::Relaxed)
    }

    pub(crate) fn count_invocation(&self) {
        self.invocations.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes `mb` and one sandbox on this worker, before the sandbox's init, so that concurrent
    /// cold starts see the memory as taken. They are taken until the reservation is given back.
    pub(crate) fn reserve(self: &Arc<Self>, mb: u64) -> Reservation {
        self.reserved_mb.fetch_add(mb, Ordering::Relaxed);
        self.sandboxes.fetch_add(1, Ordering::Relaxed);
        Reservation {
            worker: self.clone(),
            memory_mb: mb,
            held: true,
        }
    }

    /// Gives back what [`Self::reserve`] took: the one place a worker's figures go down, called
    /// only by [`Reservation::give_back`].
    fn unreserve(&self, mb: u64) {
        // Saturating, so that a mistake elsewhere shows as a figure too low rather than as one
        // that wrapped around to "no room anywhere". fetch_update only fails when the closure
        // returns None, which this one never does.
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
    pub(crate) async fn lost(&self) {
        let mut rx = self.lost.subscribe();
        // An error means the sender is gone, which cannot happen while `self` lives.
        let _ = rx.wait_for(|lost| *lost).await;
    }

    fn summary(&self) -> WorkerSummary {
        WorkerSummary {
            id: self.id,
            name: self.name.clone(),
            remote: self.remote,
            capacity_mb: self.capacity_mb(),
            reserved_mb: self.reserved_mb(),
            sandboxes: self.sandboxes.load(Ordering::Relaxed),
            invocations: self.invocations.load(Ordering::Relaxed),
            snapshots: self.snapshots(),
        }
    }
}

/// Memory and a sandbox slot taken on a worker by [`WorkerEntry::reserve`] for one sandbox,
/// before its init. Dropped, it gives them back: the init failed, or the future waiting for it
/// was dropped. Once the init succeeded, [`Self::started`] makes it the sandbox's.
pub(crate) struct Reservation {
    worker: Arc<WorkerEntry>,
    memory_mb: u64,
    /// Until given back, so that it is given back once.
    held: bool,
}

impl Reservation {
    /// The sandbox `id` now holds what was reserved for it.
    pub(crate) fn started(self, id: SandboxId) -> HostedSandbox {
        HostedSandbox {
            reservation: self,
            id,
            shut_down: false,
            born: std::time::Instant::now(),
        }
    }

    /// Gives the memory and the slot back to the worker's figures, once.
    fn give_back(&mut self) {
        if std::mem::replace(&mut self.held, false) {
            self.worker.unreserve(self.memory_mb);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.give_back();
    }
}

/// A sandbox on a worker with what was reserved for it there. [`Self::release`] gives that
/// back and has the worker shut the sandbox down.
///
/// Dropped before its worker shut it down, because the future holding it was dropped (an
/// invocation whose client went away or that a timeout cut short, or a release cut short the
/// same way), it gives the reservation back at once and has the worker shut the sandbox down in
/// the background, on the current Tokio runtime. With no runtime to do that on, the manager
/// only forgets it, and the worker keeps it until the worker itself goes away.
pub(crate) struct HostedSandbox {
    reservation: Reservation,
    id: SandboxId,
    /// Whether the worker has shut it down. Asking twice is harmless (a worker ignores a
    /// sandbox it does not have), so a release cut short is asked for again.
    shut_down: bool,
    /// When it started: its role's credentials expire a fixed time after that.
    born: std::time::Instant,
}

impl HostedSandbox {
    pub(crate) fn worker(&self) -> &Arc<WorkerEntry> {
        &self.reservation.worker
    }

    pub(crate) fn id(&self) -> SandboxId {
        self.id
    }

    pub(crate) fn age(&self) -> std::time::Duration {
        self.born.elapsed()
    }

    /// Frees the sandbox's reservation and has the worker shut it down (a lost worker's
    /// sandboxes are gone already).
    pub(crate) async fn release(mut self) {
        // Before the wait, so that the memory counts as free at once.
        self.reservation.give_back();
        if !self.worker().is_lost() {
            self.worker().worker.release(self.id).await;
        }
        self.shut_down = true;
    }
}

impl Drop for HostedSandbox {
    fn drop(&mut self) {
        self.reservation.give_back();
        if self.shut_down || self.worker().is_lost() {
            return;
        }
        let (worker, sandbox) = (self.worker().worker.clone(), self.id);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { worker.release(sandbox).await });
            }
            Err(_) => tracing::warn!(
                worker = %self.worker().name,
                sandbox,
                "a sandbox was dropped outside a runtime; the worker keeps it"
            ),
        }
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
    pub snapshots: nimbus_worker::SnapshotUse,
}

impl WorkerManager {
    // The fleet is a list of `Arc`s that is only ever pushed to or filtered, neither of which
    // can panic half-way, so a panic elsewhere while the lock was held leaves it whole: carry on
    // with it rather than lose every worker.
    fn fleet(&self) -> RwLockReadGuard<'_, Vec<Arc<WorkerEntry>>> {
        self.workers.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn fleet_mut(&self) -> RwLockWriteGuard<'_, Vec<Arc<WorkerEntry>>> {
        self.workers.write().unwrap_or_else(PoisonError::into_inner)
    }

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
            snapshots: std::sync::Mutex::new(None),
            snapshot_mb: AtomicU64::new(0),
            snapshot_checked_ms: AtomicU64::new(0),
            joined: std::time::Instant::now(),
            lost: watch::channel(false).0,
            is_lost: AtomicBool::new(false),
        });
        self.fleet_mut().push(entry);
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

    /// Records what a remote worker's heartbeat says it keeps for SnapStart versions.
    pub fn set_snapshots(&self, id: u64, snapshots: nimbus_worker::SnapshotUse) {
        if let Some(w) = self.worker(id)
            && let Ok(mut s) = w.snapshots.lock()
        {
            *s = Some(snapshots);
            w.snapshot_mb
                .store(snapshots.memory_bytes.div_ceil(1 << 20), Ordering::Relaxed);
        }
    }

    /// Whether the worker with this id is part of the fleet (not lost).
    pub fn has_worker(&self, id: u64) -> bool {
        self.worker(id).is_some()
    }

    pub(crate) fn worker(&self, id: u64) -> Option<Arc<WorkerEntry>> {
        self.fleet().iter().find(|w| w.id == id).cloned()
    }

    pub(crate) fn live_workers(&self) -> Vec<Arc<WorkerEntry>> {
        self.fleet().clone()
    }

    /// Removes a lost worker: invocations in flight on it fail, its sandboxes are forgotten
    /// (provisioned ones are re-created elsewhere), and nothing new is placed on it.
    pub fn remove_worker(&self, id: u64, reason: &str) {
        let removed = {
            let mut workers = self.fleet_mut();
            let index = workers.iter().position(|w| w.id == id);
            index.map(|i| workers.remove(i))
        };
        let Some(entry) = removed else { return };
        // Before the pools are pruned, so that a sandbox handed back meanwhile is not kept.
        entry.is_lost.store(true, Ordering::Relaxed);
        // An error means nobody is waiting on the worker, which is fine.
        let _ = entry.lost.send(true);
        let forgotten: usize = self
            .pools()
            .values_mut()
            .map(|pool| pool.forget_worker(id))
            .sum();
        tracing::warn!(worker = %entry.name, id, sandboxes = forgotten, reason, "worker lost");
        self.provision.notify_one();
    }

    pub fn workers(&self) -> Vec<WorkerSummary> {
        self.fleet().iter().map(|w| w.summary()).collect()
    }

    /// Total memory of the fleet and how much of it is free, in MB.
    pub fn capacity_mb(&self) -> (u64, u64) {
        self.fleet()
            .iter()
            .fold((0, 0), |(c, f), w| (c + w.capacity_mb(), f + w.free_mb()))
    }
}
