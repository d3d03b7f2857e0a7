//! Durable state of a nimbus node behind traits: function configuration ([`FunctionStore`]),
//! invocation logs and usage records ([`TelemetryStore`]) and code packages ([`code::CodeStore`]).
//!
//! The embedded implementations here (redb for metadata, segment files for telemetry, a
//! directory for code) serve a single
//! node; a cluster swaps in other implementations of the same traits. Nothing in this crate knows
//! about HTTP or sandboxes.

#![forbid(unsafe_code)]

pub mod code;
pub mod commit;
pub mod embedded;
pub mod telemetry;

use nimbus_types::{FunctionConfig, LogEntry, UsageRecord};

pub use code::{CodeStore, LocalCodeStore};
pub use embedded::EmbeddedStore;
pub use telemetry::{FileTelemetry, Retention, TelemetryWriter};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("function already exists: {0}")]
    Conflict(String),
    /// The code package was refused; the message is meant for the user.
    #[error("{0}")]
    InvalidCode(String),
    #[error("telemetry failure: {0}")]
    Telemetry(String),
    #[error("stored record is corrupt")]
    Corrupt(#[source] serde_json::Error),
    #[error("database error")]
    Database(#[source] Box<redb::Error>),
    #[error("i/o error on {path}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Database(Box::new(e.into()))
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

pub(crate) fn io_err(path: impl Into<std::path::PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}

/// Function configurations, keyed by name.
pub trait FunctionStore: Send + Sync {
    /// Stores a new function; fails with [`Error::Conflict`] if the name is taken.
    fn create_function(&self, function: &FunctionConfig) -> Result<()>;
    /// Replaces an existing function's configuration.
    fn put_function(&self, function: &FunctionConfig) -> Result<()>;
    fn get_function(&self, name: &str) -> Result<Option<FunctionConfig>>;
    /// Functions in name order, starting after `after`.
    fn list_functions(&self, after: Option<&str>, limit: usize) -> Result<Vec<FunctionConfig>>;
    /// Removes a function; returns whether it existed.
    fn delete_function(&self, name: &str) -> Result<Option<FunctionConfig>>;
    /// Stores a published (immutable) version of a function.
    fn put_version(&self, version: &FunctionConfig) -> Result<()>;
    /// Every published version of every function, by name then number.
    fn all_versions(&self) -> Result<Vec<FunctionConfig>>;
    fn delete_version(&self, name: &str, version: &str) -> Result<bool>;
    /// Stores a layer version (new, or with a changed policy).
    fn put_layer_version(&self, layer: &nimbus_types::layer::LayerVersion) -> Result<()>;
    /// Every layer version of every account.
    fn layer_versions(&self) -> Result<Vec<nimbus_types::layer::LayerVersion>>;
    fn delete_layer_version(&self, account: &str, name: &str, version: u64) -> Result<bool>;
}

/// The queues served through the SQS API, by name.
pub trait QueueRegistry: Send + Sync {
    fn put_queue(&self, queue: &nimbus_types::queue::QueueConfig) -> Result<()>;
    fn queues(&self) -> Result<Vec<nimbus_types::queue::QueueConfig>>;
    fn delete_queue(&self, name: &str) -> Result<bool>;
}

/// Access keys, by id.
pub trait KeyStore: Send + Sync {
    fn put_key(&self, key: &nimbus_types::identity::AccessKey) -> Result<()>;
    fn keys(&self) -> Result<Vec<nimbus_types::identity::AccessKey>>;
    fn delete_key(&self, access_key_id: &str) -> Result<bool>;
}

/// Accounts, IAM users and roles (by account and name), and the node's own secrets.
pub trait IamStore: Send + Sync {
    fn put_user(&self, user: &nimbus_types::iam::User) -> Result<()>;
    fn users(&self) -> Result<Vec<nimbus_types::iam::User>>;
    fn delete_user(&self, account: &str, name: &str) -> Result<bool>;
    fn put_role(&self, role: &nimbus_types::iam::Role) -> Result<()>;
    fn roles(&self) -> Result<Vec<nimbus_types::iam::Role>>;
    fn delete_role(&self, account: &str, name: &str) -> Result<bool>;
    fn put_account(&self, account: &nimbus_types::identity::Account) -> Result<()>;
    fn accounts(&self) -> Result<Vec<nimbus_types::identity::Account>>;
    /// The node's secret called `name`, made with `make` and stored the first time it is
    /// asked for.
    fn secret(&self, name: &str, make: &dyn Fn() -> Vec<u8>) -> Result<Vec<u8>>;
}

/// Event source mappings, by UUID.
pub trait MappingStore: Send + Sync {
    fn put_mapping(&self, mapping: &nimbus_types::queue::EventSourceMapping) -> Result<()>;
    fn mappings(&self) -> Result<Vec<nimbus_types::queue::EventSourceMapping>>;
    fn delete_mapping(&self, uuid: &str) -> Result<bool>;
}

/// Scheduled rules, by name.
/// HTTP APIs (API Gateway v2), one record per API.
pub trait ApiStore: Send + Sync {
    fn put_api(&self, api: &nimbus_types::http_api::HttpApi) -> Result<()>;
    fn apis(&self) -> Result<Vec<nimbus_types::http_api::HttpApi>>;
    fn delete_api(&self, api_id: &str) -> Result<bool>;
}

/// Stacks (deployed templates), one JSON record per stack id.
pub trait StackStore: Send + Sync {
    fn put_stack(&self, id: &str, record: &serde_json::Value) -> Result<()>;
    fn stacks(&self) -> Result<Vec<serde_json::Value>>;
    fn delete_stack(&self, id: &str) -> Result<bool>;
}

pub trait RuleStore: Send + Sync {
    fn put_rule(&self, rule: &nimbus_types::queue::ScheduleRule) -> Result<()>;
    fn rules(&self) -> Result<Vec<nimbus_types::queue::ScheduleRule>>;
    fn delete_rule(&self, name: &str) -> Result<bool>;
}

/// A log entry before the store has given it a sequence number.
#[derive(Debug, Clone)]
pub struct NewLogEntry {
    pub time_ms: i64,
    pub function: String,
    pub request_id: String,
    pub text: String,
}

/// Invocation logs and usage records, with bounded retention.
pub trait TelemetryStore: Send + Sync {
    fn append(&self, logs: &[NewLogEntry], usage: &[UsageRecord]) -> Result<()>;
    /// Log entries of one function with a sequence number above `after`, oldest first.
    fn logs(&self, function: &str, after: u64, limit: usize) -> Result<Vec<LogEntry>>;
    /// One function's usage records at or after `since_ms`, oldest first, at most `limit`.
    fn usage_records(
        &self,
        function: &str,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<UsageRecord>>;
    /// Usage totals per function of the invocations from `since_ms` on, whatever retention
    /// has dropped of the raw records.
    fn usage_totals(
        &self,
        since_ms: i64,
    ) -> Result<std::collections::BTreeMap<String, nimbus_types::telemetry::UsageTotals>>;
    /// Drops what the retention policy no longer keeps.
    fn prune(&self, retention: &Retention, now_ms: i64) -> Result<()>;
    /// Makes everything appended so far durable.
    fn sync(&self) -> Result<()>;
}
