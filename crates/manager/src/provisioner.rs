//! Provisioned concurrency: sandboxes of a published version started ahead of its invocations
//! (init type `provisioned-concurrency`) and kept at their requested number by a loop that
//! replaces those that die or could not be placed.

use std::sync::Arc;
use std::time::Duration;

use nimbus_types::{FunctionConfig, InitType};

use crate::pool::{FunctionPool, release_all};
use crate::{Error, WorkerManager};

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

/// A version's provisioned concurrency as its pool keeps it.
pub(crate) struct Provisioned {
    pub(crate) function: Arc<FunctionConfig>,
    pub(crate) requested: u32,
    /// Inits under way.
    pub(crate) pending: u32,
    pub(crate) failed: Option<String>,
    pub(crate) ready_once: bool,
}

impl WorkerManager {
    /// Asks for `requested` sandboxes of a published version to be kept initialised (0 removes
    /// the configuration). Allocation happens in the background; see [`Self::provisioned`].
    pub async fn set_provisioned(&self, function: Arc<FunctionConfig>, requested: u32) {
        let key = function.qualified_name();
        let surplus = {
            let mut pools = self.pools();
            let pool = pools
                .entry(key)
                .or_insert_with(|| FunctionPool::new(&function));
            let provisioned = (requested > 0).then(|| Provisioned {
                function: function.clone(),
                requested,
                pending: pool.provisioned().map_or(0, |p| p.pending),
                failed: None,
                ready_once: false,
            });
            pool.set_provisioned(provisioned)
        };
        release_all(surplus).await;
        self.provision.notify_one();
    }

    /// The state of a version's provisioned concurrency, if it has any.
    pub fn provisioned(&self, qualified: &str) -> Option<ProvisionedStatus> {
        let pools = self.pools();
        let pool = pools.get(qualified)?;
        let p = pool.provisioned()?;
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
        let wanted: Vec<(String, Arc<FunctionConfig>, u32)> = self
            .pools()
            .iter_mut()
            .filter_map(|(key, pool)| {
                let allocated = pool.allocated();
                let current = pool.provisioned().is_some_and(|p| pool.serves(&p.function));
                let p = pool.provisioned_mut()?;
                if !current {
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
            .collect();
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
                        let rejected = match self.pools().get_mut(&key) {
                            Some(pool) => pool.add_provisioned(&function, lease),
                            None => Some(lease),
                        };
                        if let Some(lease) = rejected {
                            lease.release().await;
                        }
                    }
                    Err(e) => {
                        failure = Some(self.failure_reason(&key, missing, e));
                        break;
                    }
                }
            }
            started += made;
            if let Some(pool) = self.pools().get_mut(&key) {
                let allocated = pool.allocated();
                if let Some(p) = pool.provisioned_mut() {
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

    /// Why a provisioned sandbox could not be started, as GetProvisionedConcurrencyConfig's
    /// `StatusReason` says it.
    fn failure_reason(&self, key: &str, missing: u32, error: Error) -> String {
        match error {
            Error::NoCapacity(mb) => {
                let (total, free) = self.capacity_mb();
                let allocated = self.provisioned(key).map_or(0, |p| p.allocated);
                format!(
                    "Insufficient capacity: {} of {} provisioned sandboxes of {mb} MB could be \
                     started; the fleet has {free} MB free of {total} MB",
                    allocated,
                    missing + allocated,
                )
            }
            other => format!("A provisioned sandbox failed to start: {other}"),
        }
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
}
