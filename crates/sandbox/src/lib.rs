//! The Linux jail for process sandboxes, and the only crate with `unsafe` code.
//!
//! A [`Jail`] runs one program (a Lambda runtime's `bootstrap`) with its own mount, pid, ipc, uts
//! and network namespaces; a network namespace with only loopback, in which the worker's Runtime
//! API listener already waits on `127.0.0.1:9001`; a root made of read-only binds of the host's
//! `/usr` and the function's code at `/var/task`; a private size-limited `/tmp`; a cgroup with a
//! memory limit, a pids limit and a CPU weight (cgroup v1 or v2); and, in the process itself, an
//! unprivileged uid, no capabilities, no new privileges and a seccomp filter.
//!
//! Setting up the namespaces happens in a helper: the worker's own executable started with
//! [`HELPER_ARG`] as its first argument, which calls [`helper_main`]. It enters the namespaces,
//! builds the root, forks the namespace's init and then the runtime. This crate does not know
//! about invocations or HTTP.

#![allow(unsafe_code)]

mod cgroup;
pub mod egress;
mod helper;
mod netlink;
mod netns;
pub mod restore;
mod seccomp;

use std::io::Read;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use cgroup::{CgroupStats, CgroupVersion, remove_stale as remove_stale_cgroups};
pub use egress::{Egress, EgressLink, release_if_unused as release_egress_if_unused};
pub use helper::helper_main;

/// The first argument that turns the worker's executable into the sandbox helper.
pub const HELPER_ARG: &str = "__nimbus-sandbox-helper";
/// Where the Runtime API listens inside every sandbox, as on Lambda.
pub const RUNTIME_API_PORT: u16 = 9001;
/// Where a sandbox reaches the node's own APIs (Lambda, SQS, EventBridge, IAM), inside its
/// network namespace: `AWS_ENDPOINT_URL` points here.
pub const SERVICES_PORT: u16 = 9002;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("process sandboxes need root and Linux namespaces: {0}")]
    Unsupported(String),
    #[error("{what}")]
    Os {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the sandbox could not start its program: {0}")]
    Exec(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn os(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Os { what, source }
}

/// A directory bound read-only into the sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bind {
    pub host: PathBuf,
    pub sandbox: PathBuf,
}

/// What a prepared sandbox needs to run one function.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JailSpec {
    /// The unpacked code, mounted read-only at `/var/task`.
    pub code_dir: PathBuf,
    /// The function's layers, unpacked, bottom first: seen at `/opt`, read-only, each on top of
    /// the ones before it.
    #[serde(default)]
    pub opt_dirs: Vec<PathBuf>,
    /// The program to run, as seen inside the sandbox, and its arguments.
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub memory_mb: u32,
    pub tmp_mb: u32,
    pub pids_max: u32,
    pub uid: u32,
    pub gid: u32,
    /// The program is a snapshot template: processes it forks enter jails of their own
    /// ([`restore`]), so its filter lets it call `setns`.
    #[serde(default)]
    pub template: bool,
}

/// Internal: what the helper receives on its command line; the [`JailSpec`] follows on stdin.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct HelperConfig {
    /// An empty directory the helper turns into the sandbox's root.
    pub root_dir: PathBuf,
    /// Read-only binds common to every sandbox, such as the runtimes at `/var/runtime`.
    pub binds: Vec<Bind>,
    pub cgroup_procs: Vec<PathBuf>,
    /// The write end of the exec-report pipe: closed by a successful exec, or given an error.
    pub report_fd: i32,
    /// Set for a jail that a process forked from a snapshot template enters, instead of one
    /// that executes a program: the owner of its user namespace (the template's uid and gid).
    #[serde(default)]
    pub restore: Option<restore::Owner>,
}

/// A sandbox made ahead of need: namespaces, cgroup and helper exist, waiting for a function.
/// Creating these is most of the cost of a sandbox (moving a process into a v1 cgroup waits
/// for an RCU grace period), so the worker keeps a few ready and takes one per cold start.
pub struct PreparedJail {
    /// Taken when the jail is started; whatever is left is torn down on drop.
    parts: Option<PreparedParts>,
    root_dir: PathBuf,
    /// How long preparing took, off the cold path.
    pub prepare: Duration,
}

struct PreparedParts {
    helper: Child,
    cgroup: cgroup::Cgroup,
    listener: TcpListener,
    services: Vec<TcpListener>,
    report: OwnedFd,
}

/// A running sandbox.
pub struct Jail {
    /// Its way out, if it has one (deleted with the jail, after its processes).
    egress: Option<EgressLink>,
    helper: Child,
    cgroup: cgroup::Cgroup,
    listener: Option<TcpListener>,
    services: Vec<TcpListener>,
    /// The read ends of the program's stdout and stderr.
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    root_dir: PathBuf,
    /// How long the cold path took: limits, mounts and the exec of the program.
    pub setup: Duration,
    /// How long preparing the namespaces, cgroup and helper took before that.
    pub prepare: Duration,
    /// A restore jail's init ([`restore`]).
    restore_init: Option<u32>,
}

fn helper_path() -> Result<PathBuf> {
    std::env::current_exe().map_err(os("locating the sandbox helper"))
}

/// In the helper's process before exec: the report pipe survives into the helper (which
/// closes it on its final exec), and the helper dies with the worker. Only async-signal-safe
/// system calls.
pub(crate) fn keep_report_and_parent(report_fd: i32) -> std::io::Result<()> {
    // SAFETY: fcntl and prctl on this process with integer arguments.
    unsafe {
        if libc::fcntl(report_fd, libc::F_SETFD, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The command that starts the sandbox helper with `config`, its spec to come on stdin, and
/// the program's stdout and stderr piped to the worker (`output`) or discarded.
pub(crate) fn helper_command(config: &HelperConfig, output: bool) -> Result<Command> {
    let config = serde_json::to_string(config).map_err(|e| Error::Exec(e.to_string()))?;
    let mut command = Command::new(helper_path()?);
    let out = || {
        if output {
            Stdio::piped()
        } else {
            Stdio::null()
        }
    };
    command
        .arg(HELPER_ARG)
        .arg(config)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(out())
        .stderr(out());
    Ok(command)
}

/// Whether this host can run process sandboxes, with the reason if not.
/// Gives the heap memory the process freed back to the kernel. The C allocator keeps freed
/// memory for reuse; after a burst of traffic that can be tens of megabytes the node no longer
/// needs. Called when the node goes idle.
pub fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks the allocator's own free lists under its locks; it takes
    // no pointers from us and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

pub fn check_support() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Error::Unsupported("the node is not running as root".into()));
    }
    cgroup::Cgroup::detect().map(|_| ())
}

impl PreparedJail {
    /// Creates the namespaces and the cgroup and starts the helper inside them, which builds
    /// the parts of the root that do not depend on the function under `root_dir`. Blocking.
    /// Besides the Runtime API's and [`SERVICES_PORT`]'s listeners, the namespace gets one on
    /// each of `alias_ports` (the node's own port, so that URLs the node hands out, such as
    /// queue URLs, work inside the sandbox too).
    pub fn prepare(
        name: &str,
        root_dir: PathBuf,
        binds: Vec<Bind>,
        alias_ports: &[u16],
    ) -> Result<PreparedJail> {
        let started = Instant::now();
        check_support()?;
        let mut ports = vec![RUNTIME_API_PORT, SERVICES_PORT];
        for port in alias_ports {
            if *port != 0 && !ports.contains(port) {
                ports.push(*port);
            }
        }
        let (netns, mut listeners) = netns::create_with_listeners(ports)?;
        let services = listeners.split_off(1);
        let listener = listeners
            .pop()
            .ok_or_else(|| Error::Unsupported("the Runtime API listener is missing".into()))?;
        let cgroup = cgroup::Cgroup::create(name)?;
        let (report_read, report_write) = pipe()?;
        let config = HelperConfig {
            root_dir: root_dir.clone(),
            binds,
            cgroup_procs: cgroup.procs_files(),
            report_fd: report_write.as_raw_fd(),
            restore: None,
        };
        let mut command = helper_command(&config, true)?;
        let net_fd = netns.as_raw_fd();
        let report_fd = report_write.as_raw_fd();
        // SAFETY: the closure runs in the forked child before exec and only makes system calls
        // (fcntl, prctl, setns, unshare), which are async-signal-safe; it allocates nothing.
        unsafe {
            command.pre_exec(move || {
                keep_report_and_parent(report_fd)?;
                if libc::setns(net_fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let flags = libc::CLONE_NEWNS
                    | libc::CLONE_NEWPID
                    | libc::CLONE_NEWIPC
                    | libc::CLONE_NEWUTS;
                if libc::unshare(flags) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let helper = spawn_from_keeper(command).map_err(os("starting the sandbox helper"))?;
        drop(report_write);
        drop(netns);
        Ok(PreparedJail {
            parts: Some(PreparedParts {
                helper,
                cgroup,
                listener,
                services,
                report: report_read,
            }),
            root_dir,
            prepare: started.elapsed(),
        })
    }

    /// Binds [`restore::TEMPLATE_SOCKET`] in the prepared sandbox's network namespace, before
    /// a snapshot template starts there.
    pub fn bind_template_socket(&self) -> Result<std::os::unix::net::UnixListener> {
        let parts = self
            .parts
            .as_ref()
            .ok_or_else(|| Error::Exec("the prepared sandbox was already used".into()))?;
        restore::bind_template_socket(parts.helper.id())
    }

    /// Gives the prepared sandbox its function and returns once the program was executed;
    /// with `egress`, the sandbox is first connected to the outside through it.
    pub fn start(
        mut self,
        spec: JailSpec,
        egress: Option<&std::sync::Arc<Egress>>,
    ) -> Result<Jail> {
        let started = Instant::now();
        let parts = self
            .parts
            .take()
            .ok_or_else(|| Error::Exec("the prepared sandbox was already used".into()))?;
        let link = match egress {
            Some(e) => match e.attach(parts.helper.id()) {
                Ok(link) => Some(link),
                Err(err) => {
                    let mut parts = parts;
                    parts.cgroup.kill_all();
                    let _ = parts.helper.kill();
                    let _ = parts.helper.wait();
                    parts.cgroup.remove();
                    return Err(err);
                }
            },
            None => None,
        };
        let mut helper = parts.helper;
        let stdout = helper.stdout.take().map(OwnedFd::from);
        let stderr = helper.stderr.take().map(OwnedFd::from);
        let mut jail = Jail {
            egress: link,
            helper,
            stdout,
            stderr,
            cgroup: parts.cgroup,
            listener: Some(parts.listener),
            services: parts.services,
            root_dir: self.root_dir.clone(),
            setup: Duration::ZERO,
            prepare: self.prepare,
            restore_init: None,
        };
        if let Err(e) = jail.cgroup.set_limits(spec.memory_mb, spec.pids_max) {
            jail.kill();
            return Err(e);
        }
        let limits_done = started.elapsed();
        let spec_json = serde_json::to_vec(&spec).map_err(|e| Error::Exec(e.to_string()))?;
        // Closing stdin after the spec tells the helper it has all of it.
        let sent = jail
            .helper
            .stdin
            .take()
            .map(|mut stdin| std::io::Write::write_all(&mut stdin, &spec_json))
            .is_some_and(|r| r.is_ok());
        // EOF means the program was executed; anything else is the reason it was not.
        let mut report = String::new();
        let _ = std::fs::File::from(parts.report).read_to_string(&mut report);
        if !sent && report.is_empty() {
            report = "the sandbox helper exited before it was given its function".into();
        }
        if !report.is_empty() {
            jail.kill();
            return Err(Error::Exec(report));
        }
        jail.setup = started.elapsed();
        tracing::debug!(
            limits_us = limits_done.as_micros() as u64,
            setup_us = jail.setup.as_micros() as u64,
            "sandbox started"
        );
        Ok(jail)
    }
}

impl Drop for PreparedJail {
    fn drop(&mut self) {
        if let Some(mut parts) = self.parts.take() {
            parts.cgroup.kill_all();
            let _ = parts.helper.kill();
            let _ = parts.helper.wait();
            parts.cgroup.remove();
        }
        let _ = std::fs::remove_dir(&self.root_dir);
    }
}

impl Jail {
    /// The listeners for the node's APIs inside the sandbox's network namespace
    /// ([`SERVICES_PORT`] and the aliases); taken once. Dropping them closes the ports.
    pub fn take_services_listeners(&mut self) -> Vec<TcpListener> {
        std::mem::take(&mut self.services)
    }

    /// The Runtime API listener inside the sandbox's network namespace; taken once.
    /// The sandbox's address outside its namespace, if it has a way out.
    pub fn egress_address(&self) -> Option<std::net::Ipv4Addr> {
        self.egress.as_ref().map(EgressLink::address)
    }

    pub fn take_listener(&mut self) -> Option<TcpListener> {
        self.listener.take()
    }

    pub fn take_stdout(&mut self) -> Option<OwnedFd> {
        self.stdout.take()
    }

    pub fn take_stderr(&mut self) -> Option<OwnedFd> {
        self.stderr.take()
    }

    /// The helper's pid; it exits with the program's status (128 + signal if it was killed).
    pub fn pid(&self) -> u32 {
        self.helper.id()
    }

    /// The program's exit status if it has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.helper.try_wait().ok().flatten()
    }

    pub fn stats(&self) -> CgroupStats {
        self.cgroup.stats()
    }

    /// The highest memory use of the sandbox so far; cheaper than [`Jail::stats`].
    pub fn peak_memory_bytes(&self) -> u64 {
        self.cgroup.peak_memory_bytes()
    }

    /// Kills every process of the sandbox.
    pub fn kill(&mut self) {
        self.cgroup.kill_all();
        let _ = self.helper.kill();
        let _ = self.helper.wait();
    }
}

impl Drop for Jail {
    fn drop(&mut self) {
        self.kill();
        self.cgroup.remove();
        let _ = std::fs::remove_dir(&self.root_dir);
    }
}

type SpawnJob = (Command, std::sync::mpsc::SyncSender<std::io::Result<Child>>);

/// Spawns a helper from one long-lived thread. The helper asks to be killed when its parent
/// dies (PR_SET_PDEATHSIG), and Linux means the parent *thread*: spawned from a pool thread
/// that later exits, a healthy sandbox would be killed with it.
pub(crate) fn spawn_from_keeper(command: Command) -> std::io::Result<Child> {
    static KEEPER: std::sync::OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<SpawnJob>>> =
        std::sync::OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<SpawnJob>();
        let started = std::thread::Builder::new()
            .name("nimbus-sandbox-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
            });
        if let Err(e) = started {
            tracing::error!(error = %e, "could not start the sandbox spawner thread");
        }
        std::sync::Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = std::sync::mpsc::sync_channel(1);
    let gone = || std::io::Error::other("the sandbox spawner thread is gone");
    keeper
        .lock()
        .map_err(|_| gone())?
        .send((command, reply_tx))
        .map_err(|_| gone())?;
    reply_rx.recv().map_err(|_| gone())?
}

pub(crate) fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into the array on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(os("creating a pipe")(std::io::Error::last_os_error()));
    }
    // SAFETY: both descriptors were just created and are owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}
