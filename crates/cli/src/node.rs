//! `nimbus up`: wires the components of an all-in-one node and runs it until a signal.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use nimbus_control::ControlPlane;
use nimbus_gateway::Subsystems;
use nimbus_manager::{ManagerConfig, WorkerManager};
use nimbus_runtime_wasm::{WasmConfig, WasmRuntime};
use nimbus_store::{EmbeddedStore, FileTelemetry, LocalCodeStore, TelemetryWriter};
use nimbus_worker::{
    HostRuntimes, JailPool, LocalWorker, LocalWorkerConfig, ProcessConfig, Worker,
};
use tokio::sync::watch;

use crate::config::NodeConfig;

pub fn machine_memory_mb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(4096, |kb| kb / 1024)
}

pub fn private_dir(path: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {}", path.display()))?;
    }
    Ok(())
}

/// Registers for SIGINT and SIGTERM now, so that a signal arriving right after the node
/// announces itself is handled gracefully too; the future resolves on the first of them.
pub fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

/// Lets `host` run functions of runtimes it does not have on ones it has, as configured.
fn apply_runtime_aliases(
    host: &mut HostRuntimes,
    aliases: &std::collections::BTreeMap<String, String>,
) {
    for (from, to) in aliases {
        match (
            nimbus_types::Runtime::parse(from),
            nimbus_types::Runtime::parse(to),
        ) {
            (Ok(_), Ok(target)) if host.has(target) => {
                tracing::info!(runtime = %from, runs_on = %to, "runtime alias");
                host.aliases.insert(from.clone(), to.clone());
            }
            _ => tracing::warn!(
                runtime = %from, runs_on = %to,
                "ignoring a runtime alias: both must be runtime names, and the second one this host has"
            ),
        }
    }
}

/// Sets up process sandboxes if this host can run them; wasm functions work either way. Their
/// I/O runs on `io`.
pub fn process_sandboxes(
    data: &std::path::Path,
    jail_pool: usize,
    io: tokio::runtime::Handle,
    services: nimbus_worker::ServicesEndpoint,
    credentials: Option<Arc<dyn nimbus_types::identity::CredentialIssuer>>,
    node_port: Option<u16>,
    egress: bool,
) -> Option<ProcessConfig> {
    if let Err(e) = nimbus_sandbox::check_support() {
        tracing::warn!(reason = %e, "process runtimes are disabled");
        return None;
    }
    if nimbus_sandbox::release_egress_if_unused() {
        tracing::info!("removed egress rules left by an earlier node");
    }
    let stale = nimbus_sandbox::remove_stale_cgroups();
    if stale > 0 {
        tracing::info!(cgroups = stale, "removed cgroups left by an earlier node");
    }
    let (runtime_dir, sandbox_dir) = (data.join("runtime"), data.join("sandboxes"));
    let host = HostRuntimes::detect();
    let cache = nimbus_worker::sdk::cache_root();
    let started = std::time::Instant::now();
    let python = host
        .python_minor
        .map(|minor| nimbus_worker::sdk::ensure_python_sdk(&cache, minor));
    let node = host
        .node_major
        .map(|_| nimbus_worker::sdk::ensure_node_sdk(&cache));
    let mut sdks = nimbus_worker::Sdks::default();
    for (language, installed, slot) in [
        ("Python", python, &mut sdks.python),
        ("Node.js", node, &mut sdks.node),
    ] {
        match installed {
            Some(Ok(dir)) => *slot = Some(dir),
            Some(Err(e)) => tracing::warn!(
                error = %e,
                "{language} functions get no AWS SDK: it could not be installed"
            ),
            None => {}
        }
    }
    tracing::info!(
        python = ?sdks.python,
        node = ?sdks.node,
        ms = started.elapsed().as_millis() as u64,
        "AWS SDKs for functions"
    );
    let config = ProcessConfig {
        pool: JailPool::new(
            jail_pool,
            sandbox_dir.clone(),
            runtime_dir.clone(),
            sdks,
            node_port.into_iter().collect(),
        ),
        runtime_dir,
        sandbox_dir,
        host,
        io,
        services,
        credentials,
        egress: nimbus_worker::EgressPolicy::new(egress),
    };
    match config.install() {
        Ok(()) => {
            tracing::info!(runtimes = ?config.host.names(), "process runtimes enabled");
            config.pool.refill_in_background();
            Some(config)
        }
        Err(e) => {
            tracing::warn!(error = %e, "process runtimes are disabled: could not install the runtimes");
            None
        }
    }
}

/// Runs a node on `config.listen` until SIGINT or SIGTERM, announcing its address on stdout.
pub async fn run(config: NodeConfig) -> anyhow::Result<()> {
    // Registered before anything else, so that a signal right after the announcement counts.
    let signal = shutdown_signal()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    serve(config, listener, signal, |address| {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "nimbus listening on http://{address}")?;
        out.flush()?;
        Ok(())
    })
    .await
}

/// Runs a node on `listener` until `shutdown` resolves, then lets in-flight requests finish
/// and stops every component. `ready` is called with the address once the node serves.
pub async fn serve(
    config: NodeConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(std::net::SocketAddr) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let data = &config.data_dir;
    private_dir(data)?;
    let store = Arc::new(
        EmbeddedStore::open(&data.join("nimbus.redb")).with_context(|| {
            format!(
                "opening the store in {} (is another node using it?)",
                data.display()
            )
        })?,
    );
    let code =
        Arc::new(LocalCodeStore::open(&data.join("code")).context("opening the code store")?);
    let identity =
        Arc::new(nimbus_identity::Identity::load(store.clone()).context("loading identities")?);
    // Sandboxes reach the node's APIs through this router once it is built.
    let services = nimbus_worker::ServicesEndpoint::default();
    let wasm = Arc::new(
        WasmRuntime::new(&WasmConfig {
            max_instances: config.sandboxes.max_wasm_instances(&config.limits),
            cache_dir: data.join("cache").join("wasm"),
            snapshot_disk_limit: config.worker.snapshot_disk_mb.saturating_mul(1 << 20),
        })
        .context("starting the wasm runtime")?,
    );
    let capacity_mb = match config.worker.capacity_mb {
        0 => machine_memory_mb(),
        n => n,
    };
    let telemetry_store = Arc::new(
        FileTelemetry::open(&data.join("telemetry"), &config.retention)
            .context("opening the telemetry store")?,
    );
    let telemetry = Arc::new(TelemetryWriter::start(
        telemetry_store.clone(),
        config.retention.clone(),
    ));
    let manager = Arc::new(WorkerManager::new(
        ManagerConfig {
            concurrency_limit: config.limits.concurrency,
            min_unreserved: config.limits.min_unreserved(),
            keep_alive: Duration::from_secs(config.sandboxes.keep_alive_s),
        },
        telemetry,
    ));
    let mut pool = None;
    // What the built-in worker runs, for `GET /nimbus/v1/runtimes`.
    let mut runtimes =
        serde_json::json!({"available": ["wasm32-wasip1", "wasi-http"], "aliases": {}});
    if !config.worker.disabled {
        let process = match config.sandboxes.process {
            // serve runs on the main runtime: sandboxes' I/O stays there.
            true => process_sandboxes(
                data,
                config.sandboxes.jail_pool,
                tokio::runtime::Handle::current(),
                services.clone(),
                Some(identity.clone()),
                // The node's port inside sandboxes too, where clients reach it on loopback.
                listener
                    .local_addr()
                    .ok()
                    .filter(|a| a.ip().is_loopback() || a.ip().is_unspecified())
                    .map(|a| a.port()),
                config.sandboxes.egress == crate::config::Egress::Internet,
            ),
            false => None,
        };
        let mut process = process;
        if let Some(p) = &mut process {
            apply_runtime_aliases(&mut p.host, &config.worker.runtime_aliases);
            let mut available = vec!["wasm32-wasip1".to_owned(), "wasi-http".to_owned()];
            available.extend(p.host.names());
            runtimes = serde_json::json!({"available": available, "aliases": p.host.aliases});
        }
        pool = process.as_ref().map(|p| p.pool.clone());
        let worker: Arc<dyn Worker> = Arc::new(LocalWorker::new(
            LocalWorkerConfig {
                capacity_mb,
                region: config.region.clone(),
                process,
                first_sandbox_id: 1,
            },
            code.clone(),
            wasm,
        ));
        manager.add_worker("local", worker, capacity_mb, false);
    }
    let control = Arc::new(
        ControlPlane::load(
            config.region.clone(),
            store.clone(),
            code.clone(),
            manager.clone(),
        )
        .context("loading functions")?,
    );
    control
        .restore()
        .await
        .context("restoring concurrency settings")?;
    let secret = nimbus_cluster::Secret::load_or_create(&data.join("cluster.secret"))
        .context("preparing the cluster secret")?;
    // Workers reach the node over TLS with the certificate the secret derives; the cluster's
    // routes are refused in plaintext.
    let cluster_tls = nimbus_cluster::tls::Identity::derive(&secret)
        .and_then(|i| i.acceptor())
        .context("deriving the cluster's TLS certificate")?;
    let cluster = {
        let control = control.clone();
        nimbus_cluster::node::Cluster::new(
            nimbus_cluster::node::ClusterConfig {
                heartbeat: Duration::from_millis(config.cluster.heartbeat_ms),
                heartbeat_timeout: Duration::from_millis(config.cluster.heartbeat_timeout_ms),
            },
            secret,
            manager.clone(),
            code.clone(),
            Arc::new(move || control.functions_to_prepare()),
            Some(identity.clone() as Arc<dyn nimbus_types::identity::CredentialIssuer>),
        )
        .context("preparing the cluster's client")?
    };

    let queue = Arc::new(
        nimbus_queue::DurableQueue::open(&data.join("queue.log"))
            .context("opening the event queue")?,
    );
    let invoker = nimbus_events::AsyncInvoker::new(
        nimbus_events::AsyncConfig {
            concurrency: config.async_invoke.concurrency.max(1),
            retry_base: Duration::from_millis(config.async_invoke.retry_base_ms),
            ..Default::default()
        },
        queue.clone(),
        manager.clone(),
        control.clone(),
        config.region.clone(),
    );
    let registry: Arc<dyn nimbus_store::QueueRegistry> = store.clone();
    let rules: Arc<dyn nimbus_store::RuleStore> = store.clone();
    let scheduler =
        nimbus_events::scheduler::Scheduler::load(rules, invoker.clone(), config.region.clone())
            .context("loading schedules")?;
    let mappings: Arc<dyn nimbus_store::MappingStore> = store.clone();
    let queue: Arc<dyn nimbus_queue::MessageQueue> = queue;
    let queues = Arc::new(
        nimbus_queue::sqs::SqsQueues::load(config.region.clone(), registry, queue.clone())
            .context("loading queues")?,
    );
    let tables = Arc::new(
        nimbus_tables::TableStore::open(&data.join("tables"), &config.region)
            .context("opening the table store")?,
    );
    let event_sources = Arc::new(
        nimbus_events::esm::EventSources::load(
            mappings,
            control.clone(),
            queues.clone(),
            tables.clone(),
        )
        .context("loading event source mappings")?,
    );
    {
        let control = control.clone();
        identity.set_function_roles(Arc::new(move |account: &str, function: &str| {
            control
                .function(&nimbus_types::name::scoped(account, function))
                .map(|f| f.role.clone())
        }));
    }
    let auth = authentication(&config, &identity, listener.local_addr()?)?;
    let user_pools = Arc::new(
        nimbus_userpools::UserPools::open(&data.join("userpools"), &config.region)
            .context("opening the user pool store")?,
    );
    let cognito = Arc::new(nimbus_api_cognito::Cognito {
        pools: user_pools.clone(),
        issuer_base: issuer_base(&config, listener.local_addr()?),
        triggers: nimbus_api_cognito::Triggers {
            control: Some(control.clone()),
        },
        limiter: nimbus_api_cognito::Limiter::new(
            config.user_pools.source_rate,
            config.user_pools.source_burst,
        ),
        code_validity_ms: i64::try_from(config.user_pools.code_validity_secs)
            .unwrap_or(i64::MAX / 1000)
            .saturating_mul(1000),
        srp: Default::default(),
    });
    let objects = Arc::new(
        nimbus_objects::Objects::open(&data.join("objects")).context("opening the object store")?,
    );
    let s3 = Arc::new(nimbus_api_s3::S3Api::new(
        objects.clone(),
        identity.clone(),
        Arc::new(nimbus_events::objects::NotificationTargets {
            control: control.clone(),
            queues: queues.clone(),
        }),
        nimbus_api_s3::S3Config {
            region: config.region.clone(),
            domain: "s3.localhost".into(),
        },
    ));
    let own_address = {
        let mut a = listener.local_addr()?;
        if a.ip().is_unspecified() {
            a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        a
    };
    let shifts = nimbus_stacks::providers::Shifts {
        telemetry: Some(telemetry_store.clone()),
        max_error_rate: config.deploy.traffic_shift_max_error_rate.clamp(0.0, 1.0),
        speed: config.deploy.traffic_shift_speed.max(0.001),
    };
    let stacks = nimbus_stacks::Stacks::open(
        store.clone(),
        &config.region,
        &own_address.to_string(),
        shifts,
    )
    .map_err(|e| anyhow::anyhow!("loading the stacks: {e}"))?;
    let console = nimbus_console::Console::new(
        identity.clone(),
        matches!(auth, nimbus_gateway::Auth::Disabled),
        own_address.to_string(),
    );
    let router = nimbus_gateway::router(
        Subsystems {
            console: console.clone(),
            stacks: stacks.clone(),
            runtimes,
            auth,
            identity,
            s3,
            tables: tables.clone(),
            cognito,
            control: control.clone(),
            telemetry: telemetry_store,
            invoker: invoker.clone(),
            queues,
            event_sources: event_sources.clone(),
            scheduler: scheduler.clone(),
            pricing: config.pricing,
            apis: Arc::new(
                nimbus_httpapi::registry::HttpApis::load(store.clone())
                    .context("loading the HTTP APIs")?,
            ),
            urls: nimbus_gateway::UrlDomain {
                base: config
                    .urls
                    .base_domain
                    .trim_matches('.')
                    .to_ascii_lowercase(),
                region: config.region.clone(),
                port: match config.urls.port {
                    Some(0) => None,
                    Some(port) => Some(port),
                    None => Some(listener.local_addr()?.port()),
                },
            },
        },
        cluster.router(),
    );
    if let Ok(mut slot) = services.write() {
        *slot = Some(nimbus_gateway::for_sandboxes(router.clone()));
    }
    // Held here for as long as the node serves: the stacks hold it weakly (it holds them).
    let in_process: Arc<dyn nimbus_stacks::Dispatch> =
        Arc::new(nimbus_gateway::InProcessDispatch(router.clone()));
    stacks.connect(&in_process);
    console.connect(&in_process);

    let address = listener.local_addr()?;
    ready(address)?;
    tracing::info!(%address, data_dir = %data.display(), built_in_worker = !config.worker.disabled, "node started");

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let reaper = tokio::spawn(
        manager
            .clone()
            .run_reaper(stopped(stop_rx.clone()), nimbus_sandbox::trim_heap),
    );
    let provisioner = tokio::spawn(manager.clone().run_provisioner(stopped(stop_rx.clone())));
    let monitor = tokio::spawn(cluster.clone().run_monitor(stopped(stop_rx.clone())));
    // Asynchronous events run on a runtime of their own with one thread: they can take at most
    // one core from the threads that accept requests and answer synchronous ones, and the
    // queue absorbs the difference. (A lower nice value for this thread was tried: it starves
    // it while it holds locks the request threads need, and p99 went from 4 to 140 ms.)
    let background = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("nimbus-async")
        .enable_all()
        .build()
        .context("starting the asynchronous invocation threads")?;
    let pollers = background.spawn(invoker.clone().run(stopped(stop_rx.clone())));
    let event_sources = tokio::spawn(event_sources.run(stopped(stop_rx.clone())));
    let schedules = tokio::spawn(scheduler.run(stopped(stop_rx.clone())));
    // Time to live: expired items are deleted within about a second; stream records go after
    // their 24 hours.
    let sweeper = {
        let tables = tables.clone();
        let user_pools = user_pools.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            let mut ticks = 0u64;
            loop {
                tick.tick().await;
                let now = nimbus_types::time::now_ms().div_euclid(1000).max(0) as u64;
                if let Err(e) = tables.sweep(now, 1000).await {
                    tracing::warn!(error = %e, "expired items could not be removed");
                }
                if let Err(e) = tables
                    .trim_streams(nimbus_types::time::now_ms(), 10_000)
                    .await
                {
                    tracing::warn!(error = %e, "old stream records could not be removed");
                }
                if let Err(e) = tables.trim_tokens(nimbus_types::time::now_ms()).await {
                    tracing::warn!(error = %e, "old request tokens could not be removed");
                }
                ticks += 1;
                if ticks.is_multiple_of(60)
                    && let Err(e) = user_pools.sweep().await
                {
                    tracing::warn!(error = %e, "expired refresh sessions could not be removed");
                }
            }
        })
    };
    let notifications = tokio::spawn(nimbus_events::objects::dispatch(
        objects.clone(),
        invoker.clone(),
        stopped(stop_rx.clone()),
    ));
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("stopping: finishing in-flight requests");
        let _ = stop_tx.send(true);
    });
    let served = nimbus_cluster::tls::Served {
        tls: Some((cluster_tls, nimbus_gateway::for_workers(router.clone()))),
        plain: Some(router),
    };
    nimbus_cluster::tls::serve(listener, served, stopped(stop_rx)).await?;
    // The sandboxes' router holds the whole node; let it go.
    if let Ok(mut slot) = services.write() {
        *slot = None;
    }
    let _ = reaper.await;
    let _ = provisioner.await;
    let _ = monitor.await;
    let _ = pollers.await;
    background.shutdown_background();
    let _ = event_sources.await;
    let _ = schedules.await;
    let _ = notifications.await;
    sweeper.abort();
    let _ = sweeper.await;
    objects.shutdown();
    tables.shutdown();
    user_pools.close();
    if let Err(e) = queue.sync().await {
        tracing::error!(error = %e, "could not make the event queue durable at shutdown");
    }
    manager.shutdown().await;
    if let Some(pool) = pool {
        let _ = tokio::task::spawn_blocking(move || pool.clear()).await;
        // The sandboxes are gone: the host's egress rules too, unless another node's use them.
        let _ = tokio::task::spawn_blocking(nimbus_sandbox::release_egress_if_unused).await;
    }
    tracing::info!("node stopped");
    Ok(())
}

/// Sets up request authentication: SigV4 with the node's keys (an administrator key made on
/// the first start, or named in the environment), or none, which is refused on an address
/// other machines can reach unless the configuration insists.
/// Where the node's user pools say their tokens come from.
fn issuer_base(config: &NodeConfig, local: std::net::SocketAddr) -> String {
    if let Some(base) = &config.user_pools.issuer_base {
        return base.trim_end_matches('/').to_owned();
    }
    let ip = if local.ip().is_unspecified() {
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        local.ip()
    };
    format!("http://{}", std::net::SocketAddr::new(ip, local.port()))
}

fn authentication(
    config: &NodeConfig,
    identity: &nimbus_identity::Identity,
    listen: std::net::SocketAddr,
) -> anyhow::Result<nimbus_gateway::Auth> {
    use crate::config::AuthMode;
    if config.auth.mode == AuthMode::None {
        if !listen.ip().is_loopback() && !config.auth.allow_unauthenticated_remote {
            anyhow::bail!(
                "[auth] mode = \"none\" on {listen}, which other machines can reach: anyone \
                 could deploy and run code. Listen on 127.0.0.1, or set \
                 allow_unauthenticated_remote = true if you mean it."
            );
        }
        tracing::warn!(
            %listen,
            "AUTHENTICATION IS OFF ([auth] mode = \"none\"): every request is the administrator's"
        );
        return Ok(nimbus_gateway::Auth::Disabled);
    }
    match config.auth.admin_key() {
        Some((id, secret)) => {
            if identity.key(&id).is_none() {
                identity
                    .put(nimbus_types::identity::AccessKey {
                        access_key_id: id,
                        secret_access_key: secret,
                        account: nimbus_types::name::DEFAULT_ACCOUNT.to_owned(),
                        user: "admin".to_owned(),
                        root: true,
                        created_ms: nimbus_types::time::now_ms(),
                    })
                    .context("adding the configured administrator key")?;
            }
        }
        None => {
            if let Some(key) = identity
                .bootstrap(&config.data_dir)
                .context("creating the administrator key")?
            {
                let path = config.data_dir.join(nimbus_identity::ADMIN_CREDENTIALS);
                tracing::info!(
                    access_key_id = %key.access_key_id,
                    credentials = %path.display(),
                    "created the administrator key; the nimbus CLI run from this directory \
                     uses it, and it is an aws CLI credentials file: \
                     AWS_SHARED_CREDENTIALS_FILE=<that file> aws --endpoint-url …"
                );
            }
        }
    }
    Ok(nimbus_gateway::Auth::SigV4(
        nimbus_aws_wire::sigv4::KeyCache::default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AuthMode;

    #[test]
    fn no_authentication_is_refused_where_others_can_reach_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(&dir.path().join("n.redb")).unwrap());
        let identity = nimbus_identity::Identity::load(store).unwrap();
        let mut config = NodeConfig {
            data_dir: dir.path().to_owned(),
            ..Default::default()
        };
        config.auth.mode = AuthMode::None;
        let remote: std::net::SocketAddr = "0.0.0.0:9000".parse().unwrap();
        let local: std::net::SocketAddr = "127.0.0.1:9000".parse().unwrap();
        let refused = authentication(&config, &identity, remote).err().unwrap();
        assert!(refused.to_string().contains("allow_unauthenticated_remote"));
        assert!(matches!(
            authentication(&config, &identity, local),
            Ok(nimbus_gateway::Auth::Disabled)
        ));
        config.auth.allow_unauthenticated_remote = true;
        assert!(authentication(&config, &identity, remote).is_ok());
        // With authentication on, the first start writes the administrator key.
        config.auth.mode = AuthMode::Sigv4;
        assert!(matches!(
            authentication(&config, &identity, remote),
            Ok(nimbus_gateway::Auth::SigV4(..))
        ));
        assert!(
            dir.path()
                .join(nimbus_identity::ADMIN_CREDENTIALS)
                .is_file()
        );
    }
}
