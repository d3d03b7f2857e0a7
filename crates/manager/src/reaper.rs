//! Scaling down: on-demand sandboxes idle for longer than the keep-alive are shut down, and
//! when the node falls quiet the freed memory can be handed back to the system.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::WorkerManager;
use crate::pool::{Sandbox, release_all};

impl WorkerManager {
    /// Shuts down on-demand sandboxes idle for longer than the keep-alive; returns how many.
    pub async fn reap_idle(&self) -> usize {
        let keep_alive = self.config.keep_alive;
        let expired: Vec<Sandbox> = {
            let mut pools = self.pools();
            let expired = pools
                .values_mut()
                .flat_map(|pool| pool.reap(keep_alive, crate::pool::MAX_SANDBOX_AGE))
                .collect();
            pools.retain(|_, p| !p.is_empty());
            expired
        };
        let n = expired.len();
        release_all(expired).await;
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
                        // A panic in `on_idle` is its own; the reaper carries on.
                        let _ = tokio::task::spawn_blocking(move || on_idle()).await;
                    }
                }
            }
        }
    }
}
