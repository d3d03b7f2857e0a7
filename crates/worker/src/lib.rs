//! The Worker: hosts sandboxes. Init fetches a function's code package by digest from the code
//! store, unpacks and prepares it for its runtime; Invoke runs one invocation in a sandbox with
//! the function's timeout and memory limit, captures its log and measures it.
//!
//! A worker knows nothing about HTTP, pools or concurrency limits: the Worker Manager decides
//! which sandbox serves which invocation. [`Worker`] is the seam where a worker in another
//! process plugs in.

#![forbid(unsafe_code)]

mod local;
mod log;
mod process;
mod runtime_api;
pub mod sdk;

use async_trait::async_trait;
use nimbus_types::{FunctionConfig, InitType, InvokeOutcome, InvokeRequest};
use serde::{Deserialize, Serialize};

pub use local::{LocalWorker, LocalWorkerConfig};
pub use process::{
    DEFAULT_JAIL_POOL, EgressPolicy, HostRuntimes, JailPool, ProcessConfig, Sdks, ServicesEndpoint,
};

/// Identifies a sandbox on its worker.
pub type SandboxId = u64;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The function's code cannot run; the message is meant for the user.
    #[error("{0}")]
    InvalidCode(String),
    #[error("sandbox {0} does not exist on this worker")]
    UnknownSandbox(SandboxId),
    /// The worker stopped answering or was cut off; what it was doing is unknown.
    #[error("{0}")]
    Lost(String),
    #[error("worker failure: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A new sandbox, ready for its first invocation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxInit {
    pub sandbox: SandboxId,
    pub init_duration_us: u64,
}

/// What a worker reports about itself to the Worker Manager.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub capacity_mb: u64,
    pub reserved_mb: u64,
    pub sandboxes: u32,
    /// What it keeps for SnapStart versions.
    #[serde(default)]
    pub snapshots: SnapshotUse,
}

/// What a worker keeps for SnapStart versions beyond their sandboxes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotUse {
    /// Snapshot templates of process functions (one running process each).
    pub templates: u32,
    /// Memory those templates hold, which their environments share.
    pub memory_bytes: u64,
    /// Pre-initialised WebAssembly modules on disk.
    pub disk_bytes: u64,
}

#[async_trait]
pub trait Worker: Send + Sync {
    fn status(&self) -> WorkerStatus;
    /// Whether the worker holds the code package with this digest, prepared.
    fn has_code(&self, sha256: &str) -> bool;
    /// Fetches and prepares a function's code ahead of any sandbox, failing if it cannot run.
    async fn prepare(&self, function: &FunctionConfig) -> Result<()>;
    /// Creates a sandbox for the function: a cold start, or one made ahead of time for
    /// provisioned concurrency.
    async fn init(&self, function: &FunctionConfig, init_type: InitType) -> Result<SandboxInit>;
    /// Runs one invocation in a sandbox; one at a time per sandbox.
    async fn invoke(&self, sandbox: SandboxId, request: InvokeRequest) -> Result<InvokeOutcome>;
    /// Shuts a sandbox down and frees what it reserved.
    async fn release(&self, sandbox: SandboxId);
    /// Drops what the worker keeps for a function version (`name:version`) or for every version
    /// of a function (`name`) beyond its sandboxes: the snapshots of SnapStart versions.
    async fn forget(&self, _qualified: &str) {}
}
