//! The node's configuration file: one TOML document, every section optional.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use nimbus_store::Retention;
use nimbus_types::Pricing;
use serde::Deserialize;

/// Environment variables that override the configuration file.
pub const ENV_CONFIG: &str = "NIMBUS_CONFIG";
pub const ENV_LISTEN: &str = "NIMBUS_LISTEN";
pub const ENV_DATA_DIR: &str = "NIMBUS_DATA_DIR";
pub const ENV_ENDPOINT: &str = "NIMBUS_ENDPOINT";

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9000";
pub const DEFAULT_DATA_DIR: &str = "nimbus-data";
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:9000";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub region: String,
    pub pricing: Pricing,
    pub limits: Limits,
    pub sandboxes: Sandboxes,
    pub worker: WorkerSection,
    pub retention: Retention,
    #[serde(rename = "async")]
    pub async_invoke: AsyncSection,
    pub cluster: ClusterSection,
    pub auth: AuthSection,
    pub urls: UrlsSection,
    pub user_pools: UserPoolsSection,
    pub deploy: DeploySection,
}

/// Stacks: how aliases with a `DeploymentPreference` shift traffic to a new version.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeploySection {
    /// How many times faster than the preference's minutes a shift runs (1: as written; a
    /// larger value makes a Canary10Percent5Minutes take seconds, for trying a pipeline out).
    pub traffic_shift_speed: f64,
    /// The share of the new version's invocations that may fail (0 to 1) during a shift
    /// before the alias goes back to the old version and the stack rolls back.
    pub traffic_shift_max_error_rate: f64,
}

impl Default for DeploySection {
    fn default() -> Self {
        Self {
            traffic_shift_speed: 1.0,
            traffic_shift_max_error_rate: 0.1,
        }
    }
}

/// User pools: where their tokens say they come from, and how long codes last.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UserPoolsSection {
    /// The start of every pool's issuer URL (`{issuer_base}/{pool id}`), which must reach this
    /// node for anyone who checks its tokens. Unset: `http://` and the listen address, with
    /// 127.0.0.1 for an unspecified one.
    pub issuer_base: Option<String>,
    /// How long sign-up, password reset and attribute codes stay valid.
    pub code_validity_secs: u64,
    /// Sign-in and code attempts one source address may make: a second, and at once.
    pub source_rate: f64,
    pub source_burst: f64,
}

impl Default for UserPoolsSection {
    fn default() -> Self {
        Self {
            issuer_base: None,
            code_validity_secs: 24 * 3600,
            source_rate: 50.0,
            source_burst: 100.0,
        }
    }
}

/// Where function URLs are served: `http://{url-id}.lambda-url.{region}.{base_domain}:{port}/`.
/// Names under `localhost` reach loopback in browsers and curl without any resolver entry; a
/// real deployment points a wildcard DNS name at the node and names it here.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UrlsSection {
    pub base_domain: String,
    /// The port in the URLs handed out; the node's own port when unset, none with `0` (for a
    /// node behind a proxy on port 80).
    pub port: Option<u16>,
}

impl Default for UrlsSection {
    fn default() -> Self {
        Self {
            base_domain: "localhost".to_owned(),
            port: None,
        }
    }
}

/// Environment variables naming an administrator key the node creates if it is missing (for
/// automation and tests; otherwise the first start makes one and writes it to the data
/// directory).
pub const ENV_ADMIN_KEY_ID: &str = "NIMBUS_ADMIN_ACCESS_KEY_ID";
pub const ENV_ADMIN_SECRET: &str = "NIMBUS_ADMIN_SECRET_ACCESS_KEY";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Every request signed with SigV4 by a known access key.
    Sigv4,
    /// No authentication at all: for development on one's own machine only.
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    pub mode: AuthMode,
    /// Serve without authentication on an address other machines can reach.
    pub allow_unauthenticated_remote: bool,
    /// An administrator key of the default account to create if it is missing (the
    /// environment's `NIMBUS_ADMIN_ACCESS_KEY_ID` / `NIMBUS_ADMIN_SECRET_ACCESS_KEY` win).
    /// Without one, the first start makes a key and writes it to `DATA/admin.credentials`.
    pub admin_access_key_id: Option<String>,
    pub admin_secret_access_key: Option<String>,
}

impl AuthSection {
    /// The administrator key named by the environment or the configuration, if any.
    pub fn admin_key(&self) -> Option<(String, String)> {
        let env = std::env::var(ENV_ADMIN_KEY_ID)
            .ok()
            .zip(std::env::var(ENV_ADMIN_SECRET).ok());
        env.or_else(|| {
            self.admin_access_key_id
                .clone()
                .zip(self.admin_secret_access_key.clone())
        })
    }
}

impl Default for AuthSection {
    fn default() -> Self {
        Self {
            mode: AuthMode::Sigv4,
            allow_unauthenticated_remote: false,
            admin_access_key_id: None,
            admin_secret_access_key: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// Milliseconds between a worker's heartbeats.
    pub heartbeat_ms: u64,
    /// Milliseconds without a heartbeat after which a worker is declared lost.
    pub heartbeat_timeout_ms: u64,
}

/// The defaults are the cluster's own.
impl Default for ClusterSection {
    fn default() -> Self {
        let defaults = nimbus_cluster::node::ClusterConfig::default();
        Self {
            heartbeat_ms: defaults.heartbeat.as_millis() as u64,
            heartbeat_timeout_ms: defaults.heartbeat_timeout.as_millis() as u64,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AsyncSection {
    /// Asynchronous invocations running at once.
    pub concurrency: usize,
    /// Milliseconds before the first retry of a failed event; each further retry doubles it.
    pub retry_base_ms: u64,
}

/// The defaults are the async invoker's own.
impl Default for AsyncSection {
    fn default() -> Self {
        let defaults = nimbus_events::AsyncConfig::default();
        Self {
            concurrency: defaults.concurrency,
            retry_base_ms: defaults.retry_base.as_millis() as u64,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Invocations running at once across all functions.
    pub concurrency: u32,
    /// Concurrency that reservations must leave to functions without one; a tenth of
    /// `concurrency` if unset (Lambda: 100 of 1000).
    pub min_unreserved: Option<u32>,
}

impl Limits {
    pub fn min_unreserved(&self) -> u32 {
        self.min_unreserved.unwrap_or(self.concurrency / 10)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sandboxes {
    /// Seconds an idle sandbox stays warm.
    pub keep_alive_s: u64,
    /// Prepared process jails kept ready ahead of cold starts.
    pub jail_pool: usize,
    /// WebAssembly instances that can exist at once; 0 means `limits.concurrency`.
    pub max_wasm_instances: u32,
    /// Whether this node runs process functions (python, nodejs, provided) when the host can;
    /// wasm functions run either way.
    pub process: bool,
    /// Outbound internet for process sandboxes unless a function's `nimbus:egress` tag says
    /// otherwise: `none` (the default) or `internet`.
    pub egress: Egress,
}

/// Whether process sandboxes reach the internet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Egress {
    #[default]
    None,
    Internet,
}

impl Sandboxes {
    pub fn max_wasm_instances(&self, limits: &Limits) -> u32 {
        match self.max_wasm_instances {
            0 => limits.concurrency,
            n => n,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSection {
    /// Memory the built-in worker offers to sandboxes; 0 means the machine's memory.
    pub capacity_mb: u64,
    /// Disk the built-in worker's snapshots of SnapStart versions (pre-initialised wasm
    /// modules) may take together, in MB; the least recently used are deleted first and made
    /// again when needed. 0: no bound.
    pub snapshot_disk_mb: u64,
    /// Run the node without its built-in worker: only workers that join host sandboxes.
    pub disabled: bool,
    /// Runtimes the host does not have, each run on one it has: `{ "python3.13" =
    /// "python3.11" }`. Templates often name a newer runtime than the host's.
    pub runtime_aliases: std::collections::BTreeMap<String, String>,
}

/// [`WorkerSection::snapshot_disk_mb`] unless configured.
pub const DEFAULT_SNAPSHOT_DISK_MB: u64 = 10_240;

impl Default for WorkerSection {
    fn default() -> Self {
        Self {
            capacity_mb: 0,
            snapshot_disk_mb: DEFAULT_SNAPSHOT_DISK_MB,
            disabled: false,
            runtime_aliases: Default::default(),
        }
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 9000))),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            region: nimbus_types::name::DEFAULT_REGION.to_owned(),
            pricing: Pricing::default(),
            limits: Limits::default(),
            sandboxes: Sandboxes::default(),
            worker: WorkerSection::default(),
            retention: Retention::default(),
            async_invoke: AsyncSection::default(),
            cluster: ClusterSection::default(),
            auth: AuthSection::default(),
            urls: UrlsSection::default(),
            user_pools: UserPoolsSection::default(),
            deploy: DeploySection::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            concurrency: 1000,
            min_unreserved: None,
        }
    }
}

impl Default for Sandboxes {
    fn default() -> Self {
        Self {
            keep_alive_s: 600,
            jail_pool: nimbus_worker::DEFAULT_JAIL_POOL,
            max_wasm_instances: 0,
            process: true,
            egress: Egress::None,
        }
    }
}

impl NodeConfig {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let config: Self = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=100_000).contains(&self.limits.concurrency),
            "limits.concurrency must be between 1 and 100000"
        );
        anyhow::ensure!(
            self.pricing.request_per_million >= 0.0 && self.pricing.gb_second >= 0.0,
            "prices must not be negative"
        );
        anyhow::ensure!(!self.region.is_empty(), "region must not be empty");
        anyhow::ensure!(
            self.sandboxes.jail_pool <= 64,
            "sandboxes.jail_pool must be at most 64"
        );
        anyhow::ensure!(
            self.sandboxes.max_wasm_instances <= 100_000,
            "sandboxes.max_wasm_instances must be at most 100000"
        );
        anyhow::ensure!(
            self.limits.min_unreserved() <= self.limits.concurrency,
            "limits.min_unreserved must not exceed limits.concurrency"
        );
        anyhow::ensure!(
            (50..=60_000).contains(&self.cluster.heartbeat_ms)
                && self.cluster.heartbeat_timeout_ms >= 2 * self.cluster.heartbeat_ms,
            "cluster.heartbeat_ms must be between 50 and 60000 and heartbeat_timeout_ms at least twice it"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let text = include_str!("../../../nimbus.example.toml");
        let config = NodeConfig::parse(text).unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.limits.concurrency, 1000);
        assert!((config.pricing.gb_second - 0.0000166667).abs() < 1e-12);
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(NodeConfig::parse("lsiten = \"127.0.0.1:1\"").is_err());
        assert!(NodeConfig::parse("[pricing]\nfree = true").is_err());
        assert!(NodeConfig::parse("[limits]\nconcurrency = 0").is_err());
    }

    #[test]
    fn sandbox_knobs_are_bounded_and_default_from_their_components() {
        assert!(NodeConfig::parse("[sandboxes]\njail_pool = 65").is_err());
        assert!(NodeConfig::parse("[sandboxes]\nmax_wasm_instances = 100001").is_err());
        assert!(NodeConfig::parse("[sandboxes]\nprocess = \"yes\"").is_err());
        let config = NodeConfig::parse("[sandboxes]\nmax_wasm_instances = 0").unwrap();
        assert_eq!(config.sandboxes.jail_pool, nimbus_worker::DEFAULT_JAIL_POOL);
        assert_eq!(
            config.sandboxes.max_wasm_instances(&config.limits),
            config.limits.concurrency
        );
        // Retention is a space budget now; the old count limits are refused, not ignored.
        assert!(NodeConfig::parse("[retention]\nlogs_per_function = 10").is_err());
        assert!(NodeConfig::parse("[retention]\nlog_max_mb = 16").is_ok());
    }
}
