//! `nimbus worker --join URL`: a worker in its own process that hosts sandboxes for a node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use nimbus_cluster::agent::{Agent, AgentConfig, secret_from};
use nimbus_runtime_wasm::{WasmConfig, WasmRuntime};
use nimbus_store::LocalCodeStore;
use nimbus_worker::{LocalWorker, LocalWorkerConfig};

use nimbus::node::{machine_memory_mb, private_dir, process_sandboxes, shutdown_signal};

#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// URL of the node to join, e.g. http://127.0.0.1:9000.
    #[arg(long, env = "NIMBUS_JOIN")]
    join: String,
    /// Memory in MB this worker offers to sandboxes [default: the machine's memory].
    #[arg(long)]
    capacity_mb: Option<u64>,
    /// Disk in MB this worker's snapshots of SnapStart versions may take together (the least
    /// recently used go first); 0 for no bound.
    #[arg(long, default_value_t = nimbus::config::DEFAULT_SNAPSHOT_DISK_MB)]
    snapshot_disk_mb: u64,
    /// The worker's name in the fleet [default: worker-PID].
    #[arg(long)]
    name: Option<String>,
    /// Address the worker serves the node on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Directory for the worker's code cache and sandboxes [default: ./nimbus-worker-NAME].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// File holding the cluster secret (the node's DATA/cluster.secret); or set
    /// NIMBUS_CLUSTER_SECRET.
    #[arg(long)]
    secret_file: Option<PathBuf>,
    /// Region reported to functions.
    #[arg(long, default_value = nimbus_types::name::DEFAULT_REGION)]
    region: String,
}

pub fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let env_secret = std::env::var("NIMBUS_CLUSTER_SECRET").ok();
    let secret = secret_from(args.secret_file.as_deref(), env_secret.as_deref())?;
    let name = args
        .name
        .unwrap_or_else(|| format!("worker-{}", std::process::id()));
    nimbus_cluster::validate_worker_name(&name).map_err(anyhow::Error::msg)?;
    let join = args.join.trim_end_matches('/').to_owned();
    anyhow::ensure!(
        join.starts_with("http://") || join.starts_with("https://"),
        "--join must be an http:// or https:// URL of a node (the worker speaks TLS to it either way)"
    );
    let capacity_mb = args.capacity_mb.unwrap_or_else(machine_memory_mb);
    anyhow::ensure!(
        capacity_mb >= 128,
        "--capacity-mb must be at least 128 (one sandbox of the smallest size)"
    );
    let data = args
        .data_dir
        .unwrap_or_else(|| PathBuf::from(format!("nimbus-worker-{name}")));
    crate::init_tracing();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("nimbus-worker")
        .build()?;
    runtime.block_on(async move {
        private_dir(&data)?;
        let code =
            Arc::new(LocalCodeStore::open(&data.join("code")).context("opening the code cache")?);
        let wasm = Arc::new(
            WasmRuntime::new(&WasmConfig {
                max_instances: 1000,
                cache_dir: data.join("cache").join("wasm"),
                snapshot_disk_limit: args.snapshot_disk_mb.saturating_mul(1 << 20),
            })
            .context("starting the wasm runtime")?,
        );
        // Sandboxes here reach the node's APIs through the agent, which forwards their requests
        // over the TLS link, with the role credentials the node hands with each sandbox.
        let services = nimbus_worker::ServicesEndpoint::default();
        let credentials = Arc::new(nimbus_cluster::agent::HandedCredentials::default());
        let node_port = join
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse::<u16>().ok());
        let process = process_sandboxes(
            &data,
            nimbus_worker::DEFAULT_JAIL_POOL,
            tokio::runtime::Handle::current(),
            services.clone(),
            Some(credentials.clone()),
            // The node's port inside sandboxes too, as on the node, for the URLs it hands out.
            node_port,
            // A function's `nimbus:egress` tag still gives its sandboxes a way out here.
            false,
        );
        let pool = process.as_ref().map(|p| p.pool.clone());
        let worker = Arc::new(LocalWorker::new(
            LocalWorkerConfig {
                capacity_mb,
                region: args.region,
                process,
                // Sandbox ids pick uids: keep this process's apart from the node's and others'.
                first_sandbox_id: 1 + (std::process::id() as u64 % 9 + 1) * 10_000,
            },
            code.clone(),
            wasm,
        ));
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        let address = listener.local_addr()?;
        let agent = Agent::new(
            AgentConfig {
                name: name.clone(),
                join: join.clone(),
                capacity_mb,
                secret,
            },
            worker,
            code,
            credentials,
        )?;
        if let Ok(mut slot) = services.write() {
            *slot = Some(agent.services());
        }
        let signal = shutdown_signal()?;
        let result = agent
            .run(listener, signal, |registered| {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                let _ = writeln!(
                    out,
                    "nimbus worker {name} joined {join} as worker {} (serving on {address}, {capacity_mb} MB)",
                    registered.worker_id
                );
                let _ = out.flush();
            })
            .await;
        if let Some(pool) = pool {
            let _ = tokio::task::spawn_blocking(move || pool.clear()).await;
            let _ = tokio::task::spawn_blocking(nimbus_sandbox::release_egress_if_unused).await;
        }
        result
    })
}
