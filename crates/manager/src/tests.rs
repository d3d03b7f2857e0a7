//! The manager against fake workers: placement across the fleet, lost workers, provisioned
//! concurrency and scaling to zero.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64};

use async_trait::async_trait;
use bytes::Bytes;
use nimbus_store::{FileTelemetry, Retention};
use nimbus_types::{CodeRef, OutcomeKind, Runtime};
use nimbus_worker::{SandboxId, SandboxInit, Worker, WorkerStatus};

use super::*;
use crate::pool::{FunctionPool, Lease, MAX_SANDBOX_AGE};
use crate::provisioner::Provisioned;

/// A worker whose invocations take `delay` and whose sandboxes are counted. An invocation
/// whose payload is [`HANG`] never ends, and while `hold_inits` is set neither does an init:
/// the tests that drop an invocation part-way wait on `invoking` or `initing` to know it got
/// that far.
struct FakeWorker {
    next: AtomicU64,
    live: Mutex<HashMap<SandboxId, InitType>>,
    delay: Duration,
    hold_inits: AtomicBool,
    invoking: Notify,
    initing: Notify,
    /// Memory its snapshot templates hold, as its status reports it.
    template_mb: AtomicU64,
}

const HANG: &[u8] = b"\"hang\"";

impl FakeWorker {
    fn new(delay_ms: u64) -> Arc<Self> {
        Arc::new(Self {
            next: AtomicU64::new(1),
            live: Mutex::new(HashMap::new()),
            delay: Duration::from_millis(delay_ms),
            hold_inits: AtomicBool::new(false),
            invoking: Notify::new(),
            initing: Notify::new(),
            template_mb: AtomicU64::new(0),
        })
    }

    fn live(&self) -> usize {
        self.live.lock().unwrap().len()
    }

    fn provisioned(&self) -> usize {
        self.live
            .lock()
            .unwrap()
            .values()
            .filter(|t| **t == InitType::ProvisionedConcurrency)
            .count()
    }
}

#[async_trait]
impl Worker for FakeWorker {
    fn status(&self) -> WorkerStatus {
        WorkerStatus {
            capacity_mb: 0,
            reserved_mb: 0,
            sandboxes: self.live() as u32,
            snapshots: nimbus_worker::SnapshotUse {
                templates: 1,
                memory_bytes: self.template_mb.load(Ordering::Relaxed) << 20,
                disk_bytes: 0,
            },
        }
    }
    fn has_code(&self, _: &str) -> bool {
        false
    }
    async fn prepare(&self, _: &FunctionConfig) -> nimbus_worker::Result<()> {
        Ok(())
    }
    async fn init(
        &self,
        _: &FunctionConfig,
        init_type: InitType,
    ) -> nimbus_worker::Result<SandboxInit> {
        if self.hold_inits.load(Ordering::Relaxed) {
            self.initing.notify_one();
            std::future::pending::<()>().await;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.live.lock().unwrap().insert(id, init_type);
        Ok(SandboxInit {
            sandbox: id,
            init_duration_us: 10,
        })
    }
    async fn invoke(
        &self,
        sandbox: SandboxId,
        request: InvokeRequest,
    ) -> nimbus_worker::Result<InvokeOutcome> {
        if !self.live.lock().unwrap().contains_key(&sandbox) {
            return Err(nimbus_worker::Error::UnknownSandbox(sandbox));
        }
        if request.payload == HANG {
            self.invoking.notify_one();
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(self.delay).await;
        Ok(InvokeOutcome {
            request_id: request.request_id,
            kind: OutcomeKind::Success,
            error: None,
            payload: request.payload,
            log: String::new(),
            duration_us: 1,
            billed_ms: 1,
            init_duration_us: None,
            memory_mb: 128,
            max_memory_used_mb: 1,
            reusable: true,
            http: None,
        })
    }
    async fn release(&self, sandbox: SandboxId) {
        self.live.lock().unwrap().remove(&sandbox);
    }
}

fn function(name: &str, version: &str) -> FunctionConfig {
    FunctionConfig {
        name: name.to_owned(),
        account: nimbus_types::name::DEFAULT_ACCOUNT.to_owned(),
        runtime: Runtime::Wasm32Wasip1,
        handler: "f.wasm".to_owned(),
        role: String::new(),
        description: String::new(),
        memory_mb: 128,
        timeout_s: 3,
        environment: Default::default(),
        ephemeral_storage_mb: 512,
        code: CodeRef {
            sha256: "00".repeat(32),
            size: 1,
        },
        revision_id: format!("{name}-{version}"),
        last_modified_ms: 0,
        version: version.to_owned(),
        event_invoke: None,
        last_published: 0,
        reserved_concurrency: None,
        provisioned: Default::default(),
        tags: Default::default(),
        urls: Default::default(),
        permissions: Vec::new(),
        aliases: Default::default(),
        snap_start: Default::default(),
        layers: Vec::new(),
    }
}

fn manager(dir: &tempfile::TempDir, limit: u32) -> Arc<WorkerManager> {
    let retention = Retention {
        log_max_age_s: 3600,
        log_max_mb: 1,
        usage_max_age_s: 3600,
        usage_max_mb: 1,
    };
    let store = Arc::new(FileTelemetry::open(&dir.path().join("telemetry"), &retention).unwrap());
    let telemetry = Arc::new(TelemetryWriter::start(store, retention));
    Arc::new(WorkerManager::new(
        ManagerConfig {
            concurrency_limit: limit,
            min_unreserved: 0,
            keep_alive: Duration::from_millis(50),
        },
        telemetry,
    ))
}

fn request(id: &str) -> InvokeRequest {
    InvokeRequest {
        request_id: id.to_owned(),
        payload: Bytes::from_static(b"{}"),
        client_context: None,
        async_attempt: None,
        http: None,
        stream: None,
        qualifier: None,
    }
}

/// A request whose invocation never ends on a [`FakeWorker`].
fn hanging(id: &str) -> InvokeRequest {
    InvokeRequest {
        payload: Bytes::from_static(HANG),
        ..request(id)
    }
}

#[tokio::test]
async fn concurrent_invocations_spread_over_workers_within_capacity() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(&dir, 100);
    let (a, b) = (FakeWorker::new(50), FakeWorker::new(50));
    m.add_worker("a", a.clone(), 256, false);
    m.add_worker("b", b.clone(), 256, true);
    let f = function("f", "$LATEST");
    let calls = (0..5).map(|i| {
        let (m, f) = (m.clone(), f.clone());
        tokio::spawn(async move { m.invoke(&f, request(&i.to_string())).await })
    });
    let results: Vec<_> = futures_join(calls).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let no_capacity = results
        .iter()
        .filter(|r| matches!(r, Err(Error::NoCapacity(128))))
        .count();
    // Two sandboxes of 128 MB fit on each worker; the fifth has no room and is refused at once.
    assert_eq!((ok, no_capacity), (4, 1));
    assert_eq!((a.live(), b.live()), (2, 2));
    assert!(
        m.render_metrics()
            .contains("nimbus_throttles_total{function=\"f\",reason=\"CapacityExhausted\"} 1")
    );
}

#[tokio::test]
async fn snapshot_templates_take_room_on_their_worker() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(&dir, 100);
    let w = FakeWorker::new(0);
    w.template_mb.store(300, Ordering::Relaxed);
    m.add_worker("w", w.clone(), 512, false);
    let f = FunctionConfig {
        memory_mb: 256,
        ..function("f", "$LATEST")
    };
    // 512 MB, of which templates hold 300: no room for 256 more.
    assert!(matches!(
        m.invoke(&f, request("1")).await,
        Err(Error::NoCapacity(256))
    ));
    let metrics = m.render_metrics();
    assert!(
        metrics.contains("nimbus_worker_free_mb{worker=\"w\"} 212"),
        "{metrics}"
    );
    assert!(metrics.contains("nimbus_worker_snapshot_memory_bytes{worker=\"w\"} 314572800"));
    // The templates went (their versions were deleted): the figure is looked at again.
    w.template_mb.store(0, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(m.invoke(&f, request("2")).await.is_ok());
    assert_eq!(w.live(), 1);
}

async fn futures_join<T: Send + 'static>(
    handles: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    let mut out = Vec::new();
    for h in handles.collect::<Vec<_>>() {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn a_lost_worker_fails_its_invocations_and_is_not_used_again() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(&dir, 100);
    let (slow, other) = (FakeWorker::new(5_000), FakeWorker::new(0));
    let id = m.add_worker("slow", slow.clone(), 1024, true);
    let f = function("f", "$LATEST");
    let call = {
        let (m, f) = (m.clone(), f.clone());
        tokio::spawn(async move { m.invoke(&f, request("1")).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    m.add_worker("other", other.clone(), 128, true);
    m.remove_worker(id, "test");
    let result = tokio::time::timeout(Duration::from_secs(1), call)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(result, Err(Error::WorkerLost(_))), "{result:?}");
    m.invoke(&f, request("2")).await.unwrap();
    assert_eq!(other.live(), 1);
    assert_eq!(m.workers().len(), 1);
}

#[tokio::test]
async fn provisioned_sandboxes_are_made_ahead_served_first_and_recreated() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(&dir, 100);
    let w = FakeWorker::new(0);
    m.add_worker("w", w.clone(), 1024, false);
    let v1 = Arc::new(function("f", "1"));
    m.set_provisioned(v1.clone(), 3).await;
    assert_eq!(
        m.provisioned("f:1").unwrap().status,
        ProvisionedState::InProgress
    );
    m.provision_once().await;
    let status = m.provisioned("f:1").unwrap();
    assert_eq!(
        (status.status, status.allocated),
        (ProvisionedState::Ready, 3)
    );
    assert_eq!(w.provisioned(), 3);
    // Served by a provisioned sandbox: no new sandbox, no cold start.
    let outcome = m.invoke(&v1, request("a")).await.unwrap();
    assert!(outcome.init_duration_us.is_none());
    assert_eq!(w.live(), 3);
    // The worker loses one behind the manager's back: the manager notices and re-creates it.
    let lost = *w.live.lock().unwrap().keys().next().unwrap();
    w.release(lost).await;
    for i in 0..3 {
        m.invoke(&v1, request(&format!("b{i}"))).await.unwrap();
    }
    m.provision_once().await;
    assert_eq!(m.provisioned("f:1").unwrap().allocated, 3);
    // Lowering it releases the surplus.
    m.set_provisioned(v1.clone(), 1).await;
    assert_eq!(w.provisioned(), 1);
    m.set_provisioned(v1, 0).await;
    assert!(m.provisioned("f:1").is_none());
}

#[tokio::test]
async fn provisioned_beyond_capacity_is_reported_failed() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(&dir, 100);
    m.add_worker("w", FakeWorker::new(0), 256, false);
    m.set_provisioned(Arc::new(function("f", "1")), 3).await;
    m.provision_once().await;
    let status = m.provisioned("f:1").unwrap();
    assert_eq!(
        (status.status, status.allocated),
        (ProvisionedState::Failed, 2)
    );
    assert!(
        status
            .reason
            .as_deref()
            .unwrap()
            .contains("Insufficient capacity"),
        "{status:?}"
    );
}

#[tokio::test]
async fn idle_sandboxes_are_reaped_to_zero() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(&dir, 100);
    let w = FakeWorker::new(0);
    m.add_worker("w", w.clone(), 1024, false);
    m.invoke(&function("f", "$LATEST"), request("1"))
        .await
        .unwrap();
    assert_eq!(w.live(), 1);
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(m.reap_idle().await, 1);
    assert_eq!(w.live(), 0);
    assert_eq!(m.workers()[0].reserved_mb, 0);
    assert_eq!(m.workers()[0].sandboxes, 0);
}

#[tokio::test]
async fn reserved_concurrency_zero_throttles_the_function() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(&dir, 10);
    m.add_worker("w", FakeWorker::new(0), 1024, false);
    m.set_reserved("f", Some(0)).unwrap();
    let result = m.invoke(&function("f", "$LATEST"), request("1")).await;
    assert!(matches!(
        result,
        Err(Error::Throttled(ThrottleReason::ReservedFunction))
    ));
    assert!(m.set_reserved("g", Some(11)).is_err());
}

#[tokio::test]
async fn idle_sandboxes_of_other_functions_make_room() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(&dir, 100);
    let w = FakeWorker::new(0);
    m.add_worker("w", w.clone(), 256, false);
    m.invoke(&function("a", "$LATEST"), request("1"))
        .await
        .unwrap();
    m.invoke(&function("b", "$LATEST"), request("2"))
        .await
        .unwrap();
    // Full of idle sandboxes: the least recently used one ("a") gives way.
    m.invoke(&function("c", "$LATEST"), request("3"))
        .await
        .unwrap();
    assert_eq!(w.live(), 2);
    assert_eq!(m.idle_sandboxes("a:$LATEST"), 0);
    assert_eq!(m.idle_sandboxes("b:$LATEST"), 1);
    assert_eq!(m.idle_sandboxes("c:$LATEST"), 1);
}

// ---- a pool on its own ----
//
// Every change to a pool checks its counters (`FunctionPool::check`, on in these tests even in
// release builds); these tests also say what the counts must be.

/// A manager with two workers, `a` and `b`, whose entries the pool tests lease sandboxes on.
fn two_workers() -> (
    tempfile::TempDir,
    Arc<WorkerManager>,
    Arc<WorkerEntry>,
    Arc<WorkerEntry>,
) {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(&dir, 100);
    let a = m.add_worker("a", FakeWorker::new(0), 1024, false);
    let b = m.add_worker("b", FakeWorker::new(0), 1024, false);
    let (a, b) = (m.worker(a).unwrap(), m.worker(b).unwrap());
    (dir, m, a, b)
}

/// A sandbox just started on `worker` and counted in `pool`, as a cold start leaves it.
fn started(
    pool: &mut FunctionPool,
    function: &FunctionConfig,
    worker: &Arc<WorkerEntry>,
    id: SandboxId,
) -> Lease {
    let mut lease = Lease::new(worker.reserve(128).started(id));
    pool.count_new(function, &mut lease);
    lease
}

/// The pool's sandboxes per worker id (idle or busy), without zeros, in id order.
fn counts(pool: &FunctionPool) -> Vec<(u64, u32)> {
    let mut counts: Vec<(u64, u32)> = pool
        .per_worker()
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(w, n)| (*w, *n))
        .collect();
    counts.sort();
    counts
}

fn provisioned(function: &FunctionConfig, requested: u32) -> Option<Provisioned> {
    Some(Provisioned {
        function: Arc::new(function.clone()),
        requested,
        pending: 0,
        failed: None,
        ready_once: false,
    })
}

#[test]
fn take_put_back_forget_and_evict_keep_the_counts() {
    let (_dir, _m, a, b) = two_workers();
    let f = function("f", "1");
    let mut pool = FunctionPool::new(&f);
    let leases = [
        started(&mut pool, &f, &a, 1),
        started(&mut pool, &f, &a, 2),
        started(&mut pool, &f, &b, 3),
    ];
    assert_eq!(counts(&pool), [(a.id, 2), (b.id, 1)]);
    for lease in leases {
        assert!(pool.put_back(&f, lease).is_none());
    }
    // Idle now, and still counted.
    assert_eq!(pool.idle_count(), 3);
    assert_eq!(counts(&pool), [(a.id, 2), (b.id, 1)]);
    // The most recently used one serves next.
    let (lease, stale) = pool.take(&f);
    let lease = lease.unwrap();
    assert!(stale.is_empty());
    assert_eq!((lease.worker().id, lease.sandbox()), (b.id, 3));
    assert_eq!(counts(&pool), [(a.id, 2), (b.id, 1)]);
    // Its runtime crashed: forgotten.
    pool.forget(&lease);
    assert_eq!(counts(&pool), [(a.id, 2)]);
    // The least recently used one gives way to make room.
    let (_, index) = pool.oldest_idle(|_| true).unwrap();
    assert_eq!(pool.evict(index).id(), 1);
    assert_eq!((pool.idle_count(), counts(&pool)), (1, vec![(a.id, 1)]));
    // The last one outlives the keep-alive.
    assert_eq!(pool.reap(Duration::ZERO, MAX_SANDBOX_AGE).len(), 1);
    assert!(pool.is_empty());
    pool.verify().unwrap();
}

#[test]
fn sandboxes_near_their_credentials_expiry_are_retired_provisioned_ones_too() {
    let (_dir, _m, a, _b) = two_workers();
    let f = function("f", "1");
    let mut pool = FunctionPool::new(&f);
    assert!(pool.set_provisioned(provisioned(&f, 1)).is_empty());
    let on_demand = started(&mut pool, &f, &a, 1);
    assert!(pool.put_back(&f, on_demand).is_none());
    let made = Lease::new(a.reserve(128).started(2));
    assert!(pool.add_provisioned(&f, made).is_none());
    assert_eq!((pool.idle_count(), pool.allocated()), (2, 1));
    // Young sandboxes within their keep-alive stay.
    assert!(
        pool.reap(Duration::from_secs(3600), MAX_SANDBOX_AGE)
            .is_empty()
    );
    // Past the age limit both go, and the provisioned one leaves room to be replaced.
    let retired = pool.reap(Duration::from_secs(3600), Duration::ZERO);
    assert_eq!(retired.len(), 2);
    assert_eq!((pool.idle_count(), pool.allocated()), (0, 0));
    assert!(counts(&pool).is_empty());
    pool.verify().unwrap();
}

#[test]
fn a_new_revision_starts_the_counts_again() {
    let (_dir, _m, a, _b) = two_workers();
    let v1 = function("f", "$LATEST");
    let v2 = FunctionConfig {
        revision_id: "updated".to_owned(),
        ..v1.clone()
    };
    let mut pool = FunctionPool::new(&v1);
    let busy = started(&mut pool, &v1, &a, 1);
    let idle = started(&mut pool, &v1, &a, 2);
    assert!(pool.put_back(&v1, idle).is_none());
    // The first invocation of the new revision finds the old sandbox stale.
    let (lease, stale) = pool.take(&v2);
    assert!(lease.is_none());
    assert_eq!(stale.len(), 1);
    assert!(counts(&pool).is_empty());
    // The old revision's busy sandbox comes back: released, and not subtracted from the new
    // revision's counts.
    let fresh = started(&mut pool, &v2, &a, 3);
    assert!(pool.put_back(&v1, busy).is_some());
    assert_eq!(counts(&pool), [(a.id, 1)]);
    assert!(pool.put_back(&v2, fresh).is_none());
    assert_eq!((pool.idle_count(), counts(&pool)), (1, vec![(a.id, 1)]));
    pool.verify().unwrap();
}

// Regression: a pool switched to a new revision and back (an invocation that read the old
// configuration just before an update) took back a sandbox leased before the first switch
// without counting it, so it sat idle on a worker the counts said had none.
#[test]
fn a_sandbox_leased_before_its_pool_switched_revision_and_back_is_counted_once() {
    let (_dir, _m, a, _b) = two_workers();
    let v1 = function("f", "$LATEST");
    let v2 = FunctionConfig {
        revision_id: "updated".to_owned(),
        ..v1.clone()
    };
    let mut pool = FunctionPool::new(&v1);
    let busy = started(&mut pool, &v1, &a, 1);
    assert!(pool.take(&v2).0.is_none());
    assert!(pool.take(&v1).0.is_none());
    assert!(pool.put_back(&v1, busy).is_none());
    assert_eq!((pool.idle_count(), counts(&pool)), (1, vec![(a.id, 1)]));
    pool.verify().unwrap();
}

#[test]
fn provisioned_sandboxes_are_counted_until_provisioned_concurrency_is_removed() {
    let (_dir, _m, a, b) = two_workers();
    let f = function("f", "1");
    let mut pool = FunctionPool::new(&f);
    assert!(pool.set_provisioned(provisioned(&f, 2)).is_empty());
    for (worker, id) in [(&a, 1), (&b, 2)] {
        let lease = started(&mut pool, &f, worker, id);
        assert!(pool.add_provisioned(&f, lease).is_none());
    }
    assert_eq!(pool.allocated(), 2);
    assert_eq!(counts(&pool), [(a.id, 1), (b.id, 1)]);
    let (lease, _) = pool.take(&f);
    let lease = lease.unwrap();
    assert!(lease.provisioned);
    assert_eq!((pool.allocated(), pool.provisioned_busy()), (2, 1));
    // Lowered to one while a provisioned sandbox is busy: the idle one is surplus.
    let surplus = pool.set_provisioned(provisioned(&f, 1));
    assert_eq!(surplus.len(), 1);
    assert_eq!(pool.allocated(), 1);
    assert_eq!(counts(&pool), [(lease.worker().id, 1)]);
    // The busy one comes back and stays provisioned.
    let worker = lease.worker().id;
    assert!(pool.put_back(&f, lease).is_none());
    assert_eq!((pool.allocated(), pool.provisioned_busy()), (1, 0));
    assert_eq!(pool.provisioned_idle_on(worker), 1);
    // Removed: nothing is left.
    assert_eq!(pool.set_provisioned(None).len(), 1);
    assert!(pool.is_empty());
    pool.verify().unwrap();
}

// Regression: a sandbox started for provisioned concurrency that was removed during its init
// was released but stayed counted on its worker, as a busy sandbox that did not exist.
#[test]
fn a_provisioned_sandbox_refused_after_its_init_is_not_counted() {
    let (_dir, _m, a, _b) = two_workers();
    let f = function("f", "1");
    let mut pool = FunctionPool::new(&f);
    assert!(pool.set_provisioned(provisioned(&f, 1)).is_empty());
    let lease = started(&mut pool, &f, &a, 1);
    assert!(pool.set_provisioned(None).is_empty());
    assert!(pool.add_provisioned(&f, lease).is_some());
    assert!(counts(&pool).is_empty());
    assert!(pool.is_empty());
}

#[test]
fn retiring_a_pool_uncounts_its_idle_sandboxes_and_then_its_busy_ones() {
    let (_dir, _m, a, _b) = two_workers();
    let f = function("f", "$LATEST");
    let mut pool = FunctionPool::new(&f);
    let busy = started(&mut pool, &f, &a, 1);
    let idle = started(&mut pool, &f, &a, 2);
    assert!(pool.put_back(&f, idle).is_none());
    assert_eq!(pool.retire().len(), 1);
    assert_eq!(counts(&pool), [(a.id, 1)]);
    // The revision is gone: the busy one is released when it comes back.
    assert!(pool.put_back(&f, busy).is_some());
    assert!(pool.is_empty());
}

#[test]
fn a_lost_workers_sandboxes_are_forgotten_idle_at_once_busy_as_they_end() {
    let (_dir, m, a, b) = two_workers();
    let f = function("f", "$LATEST");
    let mut pool = FunctionPool::new(&f);
    let busy = started(&mut pool, &f, &a, 1);
    for (worker, id) in [(&a, 2), (&b, 3)] {
        let lease = started(&mut pool, &f, worker, id);
        assert!(pool.put_back(&f, lease).is_none());
    }
    m.remove_worker(a.id, "test");
    assert_eq!(pool.forget_worker(a.id), 1);
    assert_eq!(counts(&pool), [(a.id, 1), (b.id, 1)]);
    // Its invocation ended (the worker was lost): not kept.
    assert!(pool.put_back(&f, busy).is_some());
    assert_eq!(counts(&pool), [(b.id, 1)]);
    assert_eq!(pool.idle_count(), 1);
    pool.verify().unwrap();
}

// Regression: retiring a version released its idle sandboxes but left them counted, so
// `nimbus status` and the metrics showed them as busy until the next invocation.
#[tokio::test]
async fn a_retired_version_shows_no_sandboxes() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(&dir, 100);
    let w = FakeWorker::new(0);
    m.add_worker("w", w.clone(), 1024, false);
    m.invoke(&function("f", "$LATEST"), request("1"))
        .await
        .unwrap();
    assert_eq!(
        m.sandbox_table(),
        [("f:$LATEST".to_owned(), "w".to_owned(), 1, 1)]
    );
    m.retire("f:$LATEST").await;
    assert_eq!(w.live(), 0);
    assert!(m.sandbox_table().is_empty());
    let labels = "function=\"f\",version=\"$LATEST\",worker=\"w\"";
    assert!(
        m.render_metrics()
            .contains(&format!("nimbus_sandboxes{{{labels},state=\"busy\"}} 0\n"))
    );
    // Nothing is left in the pool, so the reaper drops it.
    m.reap_idle().await;
    assert!(
        !m.render_metrics()
            .contains("nimbus_sandboxes{function=\"f\"")
    );
}

// ---- invocations dropped part-way ----
//
// axum drops a handler's future when its client disconnects, and a timeout around an
// invocation drops it too. Whatever the invocation held must be given back then.

/// Polls the invocation `call` until the worker says, through `reached`, that it got that far,
/// and hands it back unfinished, for the test to drop as a disconnecting client would.
async fn run_until<F>(mut call: Pin<Box<F>>, reached: &Notify) -> Pin<Box<F>>
where
    F: Future<Output = Result<InvokeOutcome>>,
{
    tokio::select! {
        r = &mut call => panic!("the invocation ended: {r:?}"),
        () = reached.notified() => call,
    }
}

/// Lets the tasks spawned to shut sandboxes down run, until the worker holds `live` sandboxes.
async fn until_live(w: &FakeWorker, live: usize) {
    for _ in 0..100 {
        if w.live() == live {
            return;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(w.live(), live, "sandboxes the worker still holds");
}

/// Checks the counters of the pool of `key` (see `FunctionPool::verify`) and returns its rows
/// of the sandbox table: (worker, idle, idle or busy).
fn sandboxes_of(m: &WorkerManager, key: &str) -> Vec<(String, u32, u32)> {
    if let Some(pool) = m.pools().get(key) {
        pool.verify().unwrap();
    }
    m.sandbox_table()
        .into_iter()
        .filter(|(k, ..)| k == key)
        .map(|(_, worker, idle, total)| (worker, idle, total))
        .collect()
}

// Regression: an invocation dropped while its function ran left its sandbox counted busy for
// good and its memory reserved on the worker; the sandbox, mid-run, must not serve again.
#[tokio::test]
async fn an_invocation_dropped_mid_run_forgets_its_sandbox_and_frees_what_it_held() {
    let dir = tempfile::tempdir().unwrap();
    // One invocation at a time: the next one runs only if the dropped one gave its permit back.
    let m = manager(&dir, 1);
    let w = FakeWorker::new(0);
    m.add_worker("w", w.clone(), 1024, false);
    // Another function's idle sandbox stays reserved throughout, so that memory given back
    // twice would show.
    m.invoke(&function("other", "$LATEST"), request("0"))
        .await
        .unwrap();
    let f = function("f", "$LATEST");
    m.invoke(&f, request("1")).await.unwrap();
    assert_eq!(m.workers()[0].reserved_mb, 256);

    // Served by the warm sandbox, and dropped while it runs.
    let call = run_until(Box::pin(m.invoke(&f, hanging("2"))), &w.invoking).await;
    assert_eq!(sandboxes_of(&m, "f:$LATEST"), [("w".to_owned(), 0, 1)]);
    drop(call);

    assert!(sandboxes_of(&m, "f:$LATEST").is_empty());
    assert_eq!(m.idle_sandboxes("f:$LATEST"), 0);
    assert_eq!(
        (m.workers()[0].reserved_mb, m.workers()[0].sandboxes),
        (128, 1)
    );
    assert!(m.concurrency.in_flight().is_empty());
    until_live(&w, 1).await;

    // The next invocation starts a fresh sandbox and succeeds.
    m.invoke(&f, request("3")).await.unwrap();
    assert_eq!(sandboxes_of(&m, "f:$LATEST"), [("w".to_owned(), 1, 1)]);
    assert_eq!(
        (m.workers()[0].reserved_mb, m.workers()[0].sandboxes),
        (256, 2)
    );
    assert_eq!(w.live(), 2);
}

#[tokio::test]
async fn an_invocation_dropped_during_its_cold_start_frees_what_it_reserved() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(&dir, 1);
    let w = FakeWorker::new(0);
    m.add_worker("w", w.clone(), 1024, false);
    let f = function("f", "$LATEST");
    w.hold_inits.store(true, Ordering::Relaxed);
    let call = run_until(Box::pin(m.invoke(&f, request("1"))), &w.initing).await;
    // Reserved for the sandbox being started.
    assert_eq!(m.workers()[0].reserved_mb, 128);
    drop(call);

    assert_eq!(
        (m.workers()[0].reserved_mb, m.workers()[0].sandboxes),
        (0, 0)
    );
    assert!(sandboxes_of(&m, "f:$LATEST").is_empty());
    assert!(m.concurrency.in_flight().is_empty());
    w.hold_inits.store(false, Ordering::Relaxed);
    m.invoke(&f, request("2")).await.unwrap();
    assert_eq!(sandboxes_of(&m, "f:$LATEST"), [("w".to_owned(), 1, 1)]);
    assert_eq!(m.workers()[0].reserved_mb, 128);
    assert_eq!(w.live(), 1);
}

#[tokio::test]
async fn a_provisioned_sandbox_whose_invocation_was_dropped_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(&dir, 10);
    let w = FakeWorker::new(0);
    m.add_worker("w", w.clone(), 1024, false);
    let v1 = Arc::new(function("f", "1"));
    m.set_provisioned(v1.clone(), 1).await;
    m.provision_once().await;
    assert_eq!(m.provisioned("f:1").unwrap().allocated, 1);

    let call = run_until(Box::pin(m.invoke(&v1, hanging("1"))), &w.invoking).await;
    assert_eq!(sandboxes_of(&m, "f:1"), [("w".to_owned(), 0, 1)]);
    drop(call);
    assert!(sandboxes_of(&m, "f:1").is_empty());
    let status = m.provisioned("f:1").unwrap();
    assert_eq!(
        (status.status, status.allocated),
        (ProvisionedState::InProgress, 0)
    );
    assert_eq!(m.workers()[0].reserved_mb, 0);
    until_live(&w, 0).await;

    assert_eq!(m.provision_once().await, 1);
    assert_eq!(w.provisioned(), 1);
    m.invoke(&v1, request("2")).await.unwrap();
    assert_eq!(w.live(), 1);
    assert_eq!(sandboxes_of(&m, "f:1"), [("w".to_owned(), 1, 1)]);
    assert_eq!(m.workers()[0].reserved_mb, 128);
}
