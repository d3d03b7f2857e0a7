//! The manager against fake workers: placement across the fleet, lost workers, provisioned
//! concurrency and scaling to zero.

use std::sync::atomic::AtomicU64;

use async_trait::async_trait;
use bytes::Bytes;
use nimbus_store::{FileTelemetry, Retention};
use nimbus_types::{CodeRef, OutcomeKind, Runtime};
use nimbus_worker::{SandboxInit, WorkerStatus};

use super::*;

/// A worker whose invocations take `delay` and whose sandboxes are counted.
struct FakeWorker {
    next: AtomicU64,
    live: Mutex<HashMap<SandboxId, InitType>>,
    delay: Duration,
}

impl FakeWorker {
    fn new(delay_ms: u64) -> Arc<Self> {
        Arc::new(Self {
            next: AtomicU64::new(1),
            live: Mutex::new(HashMap::new()),
            delay: Duration::from_millis(delay_ms),
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
        })
    }
    async fn release(&self, sandbox: SandboxId) {
        self.live.lock().unwrap().remove(&sandbox);
    }
}

fn function(name: &str, version: &str) -> FunctionConfig {
    FunctionConfig {
        name: name.to_owned(),
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
