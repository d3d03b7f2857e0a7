//! Jails for environments restored from a snapshot template (SnapStart for process runtimes).
//!
//! A template is a runtime process that ran a function version's initialisation in a jail of
//! its own and then waits, forking a copy of itself for each new environment: the copy shares
//! every initialised page with the template until it writes to it. The copy cannot stay in the
//! template's jail, and an unprivileged process cannot be moved into another jail from outside.
//! So each restore jail is built around a user namespace owned by the template's uid:
//!
//! 1. The helper (root) builds the root file system as for any sandbox, then takes the
//!    template's uid and creates a user namespace together with fresh mount, network, uts, ipc
//!    and pid namespaces. A root process forked before writes the id maps: the template's uid
//!    is root inside, and the environment's own uid maps to itself.
//! 2. The namespace's init mounts its `/proc` and seals the root. The worker brings loopback up
//!    in the new network namespace, binds the Runtime API's and the services' listeners there
//!    and opens a pidfd of the init.
//! 3. The template forks; the worker moves the copy into the environment's cgroup and hands it
//!    the pidfd and its stdout and stderr over a socket pair. The copy enters every namespace
//!    at once with `setns(pidfd)` (as the namespace's owner it may), takes the environment's uid
//!    (which clears its capabilities), drops its bounding set, adds a seccomp filter that
//!    refuses `setns`, and forks twice so that the runtime is a child of the namespace's init.
//! 4. Before the environment is given a request, the worker checks from outside that every
//!    process in its cgroup has the environment's uid, no capabilities, `no_new_privs` and the
//!    restored filters ([`Jail::verify_restored`]); otherwise the environment is killed.
//!
//! The template's own filter allows `setns` with exactly the flags a copy uses (which only a
//! pidfd takes) and refuses `pidfd_open`: the template cannot enter its environments' jails on
//! its own. The jail's init is open to its uid only between sealing the root and adopting the
//! runtime. Code the function ran at init shares the template's process, though, and could
//! intercept the pidfd the worker hands a copy: as the owner of that environment's user
//! namespace it would then hold capabilities inside that one environment's namespaces (its
//! network namespace among them), not outside them. The check above refuses an environment
//! whose runtime is missing or not confined.

use std::ffi::CString;
use std::io::{IoSlice, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::helper::{Step, errno, mount, mount_function, report, set_hostname, wait_for};
use crate::{
    Bind, Egress, Error, HelperConfig, Jail, JailSpec, RUNTIME_API_PORT, Result, SERVICES_PORT,
    cgroup, check_support, helper_command, keep_report_and_parent, netns, os, pipe,
    spawn_from_keeper,
};

/// The template a restore jail is made for: its uid and gid (which own the jail's user
/// namespace) and its pid as the worker sees it (its pid namespace is the parent of the jail's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

/// The abstract Unix socket a template connects to inside its own network namespace, where
/// only its own processes can reach it.
pub const TEMPLATE_SOCKET: &str = "nimbus-snapshot";

/// The pid, inside an environment's pid namespace, of the runtime restored into it: its init is
/// 1, the process that mounts its `/proc` 2, the copy's first fork 3, and that one's fork,
/// which the init adopts, 4.
const RESTORED_PID: libc::pid_t = 4;

/// How long building a restore jail may take before it is given up (its processes may be
/// stopped by the template, which shares their uid and pid namespace).
const REPORT_DEADLINE: Duration = Duration::from_secs(10);

/// Reads a pipe until its writers close it or `deadline` passes; what came so far.
fn read_until_closed(pipe: OwnedFd, deadline: Duration) -> String {
    let until = Instant::now() + deadline;
    let mut said = Vec::new();
    let mut file = std::fs::File::from(pipe);
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            said.extend_from_slice(b" (given up: the jail was not ready in time)");
            break;
        }
        let mut poll = libc::pollfd {
            fd: file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut poll, 1, left.as_millis().max(1) as i32) };
        if ready < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            break;
        }
        if ready <= 0 {
            continue;
        }
        let mut buf = [0u8; 1024];
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => said.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&said).into_owned()
}

/// A restore jail, ready for a copy of its template.
pub struct RestoreTarget {
    pub jail: Jail,
    /// A pidfd of the jail's init: the copy enters its namespaces through it.
    pub pidfd: OwnedFd,
    /// The write ends of the runtime's stdout and stderr (the jail holds the read ends).
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

impl Jail {
    /// Builds a jail for a process restored from a template that runs as `owner`: namespaces
    /// owned by a user namespace of `owner`, the function's root, a cgroup with its limits,
    /// listeners for the Runtime API and services, and the way out through `egress` if any.
    /// `spec`'s program is not run: the restored process brings its own. Blocking.
    pub fn for_restore(
        name: &str,
        root_dir: PathBuf,
        binds: Vec<Bind>,
        alias_ports: &[u16],
        spec: &JailSpec,
        owner: Owner,
        egress: Option<&Arc<Egress>>,
    ) -> Result<RestoreTarget> {
        let started = Instant::now();
        check_support()?;
        if spec.uid == owner.uid || spec.gid == owner.gid || spec.uid == 0 || owner.uid == 0 {
            return Err(Error::Exec(
                "a restored environment needs a uid of its own, other than its template's".into(),
            ));
        }
        let cgroup = cgroup::Cgroup::create(name)?;
        if let Err(e) = cgroup.set_limits(spec.memory_mb, spec.pids_max) {
            cgroup.remove();
            return Err(e);
        }
        let (report_read, report_write) = match pipe() {
            Ok(p) => p,
            Err(e) => {
                cgroup.remove();
                return Err(e);
            }
        };
        let config = HelperConfig {
            root_dir: root_dir.clone(),
            binds,
            cgroup_procs: cgroup.procs_files(),
            report_fd: report_write.as_raw_fd(),
            restore: Some(owner),
        };
        // The restored runtime's output comes through pipes the worker hands it.
        let mut command = helper_command(&config, false)?;
        let report_fd = report_write.as_raw_fd();
        // SAFETY: the closure runs in the forked child before exec and only makes
        // async-signal-safe system calls; it allocates nothing.
        unsafe {
            command.pre_exec(move || {
                keep_report_and_parent(report_fd)?;
                // The helper builds the root in a mount namespace of its own, as root; the
                // other namespaces come with the user namespace.
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let helper = match spawn_from_keeper(command) {
            Ok(h) => h,
            Err(e) => {
                cgroup.remove();
                return Err(os("starting the sandbox helper")(e));
            }
        };
        drop(report_write);
        let mut jail = Jail {
            egress: None,
            helper,
            cgroup,
            listener: None,
            services: Vec::new(),
            stdout: None,
            stderr: None,
            root_dir,
            setup: Duration::ZERO,
            prepare: Duration::ZERO,
            restore_init: None,
        };
        let spec_json = serde_json::to_vec(spec).map_err(|e| Error::Exec(e.to_string()))?;
        if let Some(mut stdin) = jail.helper.stdin.take() {
            let _ = std::io::Write::write_all(&mut stdin, &spec_json);
        }
        let said = read_until_closed(report_read, REPORT_DEADLINE);
        let init_pid: u32 = match said.strip_prefix("ready ").map(|p| p.trim().parse()) {
            Some(Ok(pid)) => pid,
            _ => {
                let why = if said.is_empty() {
                    "the sandbox helper exited before the jail was ready".to_owned()
                } else {
                    said
                };
                return Err(Error::Exec(why));
            }
        };
        let mut ports = vec![RUNTIME_API_PORT, SERVICES_PORT];
        for port in alias_ports {
            if *port != 0 && !ports.contains(port) {
                ports.push(*port);
            }
        }
        jail.restore_init = Some(init_pid);
        // The namespaces are the init's (the helper itself stays in the host's).
        let mut listeners = netns::listeners_in(init_pid, ports)?;
        jail.services = listeners.split_off(1);
        jail.listener = listeners.pop();
        if let Some(egress) = egress {
            jail.egress = Some(egress.attach(init_pid)?);
        }
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, init_pid as libc::pid_t, 0) };
        if pidfd < 0 {
            return Err(os("opening the restore jail's init")(
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: the descriptor was just returned by pidfd_open and is owned by nothing else.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
        let (stdout_read, stdout) = pipe()?;
        let (stderr_read, stderr) = pipe()?;
        jail.stdout = Some(stdout_read);
        jail.stderr = Some(stderr_read);
        jail.setup = started.elapsed();
        Ok(RestoreTarget {
            jail,
            pidfd,
            stdout,
            stderr,
        })
    }

    /// Moves process `pid` (a copy of the template, still single-threaded) into this jail's
    /// cgroup, so that what it allocates from now on counts against the environment.
    pub fn adopt(&self, pid: u32) -> Result<()> {
        for procs in self.cgroup.procs_files() {
            std::fs::write(&procs, pid.to_string())
                .map_err(os(format!("moving process {pid} into {}", procs.display())))?;
        }
        Ok(())
    }

    /// Checks that every process of a restored environment is confined as a sandbox's program
    /// is: uid and gid `uid`/`gid`, no capabilities (not even in its bounding set),
    /// `no_new_privs`, and the restored seccomp filters.
    pub fn verify_restored(&self, uid: u32, gid: u32) -> Result<()> {
        let pids = self.cgroup.pids();
        if pids.is_empty() {
            return Err(Error::Exec(
                "the restored environment has no process".into(),
            ));
        }
        let helper = self.helper.id() as i32;
        let init = self
            .restore_init
            .ok_or_else(|| Error::Exec("not a restore jail".into()))?;
        let namespaces = |pid: u32| -> Vec<Option<std::path::PathBuf>> {
            ["user", "mnt", "net", "pid", "uts", "ipc"]
                .iter()
                .map(|ns| std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).ok())
                .collect()
        };
        let jail_namespaces = namespaces(init);
        let mut runtime = false;
        for pid in pids {
            let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
                continue; // gone since it was listed
            };
            // The jail's own: its helper, the helper's child that made the namespaces (both
            // outside them) and the namespaces' init; none runs the function's code.
            let parent = status
                .lines()
                .find_map(|l| l.strip_prefix("PPid:"))
                .and_then(|p| p.trim().parse::<i32>().ok());
            if pid == helper || parent == Some(helper) || pid as u32 == init {
                continue;
            }
            // The runtime: adopted by the jail's init, in all of the jail's namespaces.
            if parent == Some(init as i32) && namespaces(pid as u32) == jail_namespaces {
                runtime = true;
            }
            if let Err(what) = confined(&status, uid, gid) {
                return Err(Error::Exec(format!(
                    "process {pid} of the restored environment is not confined: {what}"
                )));
            }
        }
        if !runtime || jail_namespaces.iter().any(Option::is_none) {
            return Err(Error::Exec(
                "the restored environment's runtime is not in its jail".into(),
            ));
        }
        Ok(())
    }
}

/// Checks one `/proc/PID/status` against what a restored process must be.
fn confined(status: &str, uid: u32, gid: u32) -> std::result::Result<(), String> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
            .ok_or_else(|| format!("{name} is missing"))
    };
    for (name, want) in [("Uid", uid), ("Gid", gid)] {
        let ids = field(name)?;
        if ids.split_whitespace().any(|id| id.parse() != Ok(want)) {
            return Err(format!("{name} is {ids}, not {want}"));
        }
    }
    for name in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        let caps = field(name)?;
        if u64::from_str_radix(caps, 16) != Ok(0) {
            return Err(format!("{name} is {caps}"));
        }
    }
    if !field("Groups")?.is_empty() {
        return Err("it has supplementary groups".into());
    }
    if field("NoNewPrivs")? != "1" {
        return Err("no_new_privs is not set".into());
    }
    if field("Seccomp")? != "2" {
        return Err("it has no seccomp filter".into());
    }
    let filters: u32 = field("Seccomp_filters")?.parse().unwrap_or(0);
    if filters < crate::seccomp::RESTORED_FILTERS {
        return Err(format!("it has {filters} seccomp filters"));
    }
    Ok(())
}

// ---- the helper's side ----

/// In the helper (root, in its own mount namespace, in the jail's cgroup, with the base of the
/// root built): finishes the root and has a child create the namespaces owned by `owner`, with
/// their init; then reports `ready PID` (the init's) and exits with the restored runtime's
/// status.
///
/// The pid namespace must descend from the template's (a process may enter only a pid
/// namespace below its own), so the child that creates it is born in the template's. The
/// helper itself stays root outside, and does what needs that: it writes the user namespace's
/// id maps, and mounts the jail's `/proc` through a process born in the jail's pid namespace
/// (from inside a user namespace the kernel allows that only where another `/proc` is fully
/// visible, and the host's must not be). The sandbox directory's parents may be closed to the
/// template's uid: every path the child and the init use is relative to the jail's root, their
/// working directory.
pub(crate) fn run_helper(config: &HelperConfig, spec: &JailSpec, owner: Owner) -> Step<i32> {
    mount_function(config, spec)?;
    let name = config
        .root_dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("the restore jail's directory has no name")?
        .to_owned();
    std::env::set_current_dir(&config.root_dir)
        .map_err(|e| format!("entering {}: {e}", config.root_dir.display()))?;
    let template_pid_ns = std::fs::File::open(format!("/proc/{}/ns/pid", owner.pid))
        .map_err(|e| format!("opening the template's pid namespace: {e}"))?;
    // SAFETY: setns on a namespace descriptor we own; it changes where children are born.
    if unsafe { libc::setns(template_pid_ns.as_raw_fd(), libc::CLONE_NEWPID) } != 0 {
        return Err(errno("entering the template's pid namespace"));
    }
    drop(template_pid_ns);
    let (created_read, created_write) = raw_pipe()?;
    let (go_read, go_write) = raw_pipe()?;
    let (ready_read, ready_write) = raw_pipe()?;
    // SAFETY: fork in a single-threaded process.
    let creator = unsafe { libc::fork() };
    if creator < 0 {
        return Err(errno("fork"));
    }
    if creator == 0 {
        // SAFETY: closing this process's copies of the helper's ends.
        unsafe {
            libc::close(created_read);
            libc::close(go_write);
            libc::close(ready_read);
        }
        let code =
            match create_namespaces(config, owner, &name, created_write, go_read, ready_write) {
                Ok(code) => code,
                Err(e) => {
                    report(config.report_fd, &format!("{e}; "));
                    127
                }
            };
        // SAFETY: leaving the child without the parent's exit handlers.
        unsafe { libc::_exit(code) };
    }
    // SAFETY: closing the ends that belong to the child and the init.
    unsafe {
        libc::close(created_write);
        libc::close(go_read);
        libc::close(ready_write);
    }
    let give_up = |why: String| {
        // SAFETY: closing the pipe wakes the init, which then exits.
        unsafe { libc::close(go_write) };
        why
    };
    let mut said = String::new();
    // SAFETY: the read end is ours; a File takes ownership of it.
    let _ = unsafe { std::fs::File::from_raw_fd(created_read) }.read_to_string(&mut said);
    if said != "n" {
        return Err(give_up(
            "the restore jail's namespaces were not created".into(),
        ));
    }
    let init = std::fs::read_to_string(format!("/proc/{creator}/task/{creator}/children"))
        .ok()
        .and_then(|c| c.split_whitespace().next()?.parse::<libc::pid_t>().ok())
        .ok_or_else(|| give_up("the restore jail's init is missing".into()))?;
    if let Err(e) = outside_work(creator, init, owner, spec, &config.root_dir) {
        return Err(give_up(e));
    }
    // SAFETY: writing to and closing the pipe this process owns.
    unsafe {
        libc::write(go_write, b"g".as_ptr().cast(), 1);
        libc::close(go_write);
    }
    let mut said = String::new();
    // SAFETY: the read end is ours; a File takes ownership of it.
    let _ = unsafe { std::fs::File::from_raw_fd(ready_read) }.read_to_string(&mut said);
    if said != "+" {
        return Err(if said.is_empty() {
            "the restore jail's init exited".into()
        } else {
            said
        });
    }
    report(config.report_fd, &format!("ready {init}\n"));
    Ok(wait_for(creator))
}

/// In the helper's child, born in the template's pid namespace: takes the template's uid,
/// creates the user namespace with the others, forks their init and says so on `created`;
/// then waits for the init and exits with its status.
fn create_namespaces(
    config: &HelperConfig,
    owner: Owner,
    name: &str,
    created: RawFd,
    go: RawFd,
    ready: RawFd,
) -> Step<i32> {
    // SAFETY: plain system calls on this process.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0 {
            return Err(errno("setgroups"));
        }
        if libc::setresgid(owner.gid, owner.gid, owner.gid) != 0 {
            return Err(errno("setresgid"));
        }
        // The user namespace's owner is the effective uid of the process creating it.
        if libc::setresuid(owner.uid, owner.uid, owner.uid) != 0 {
            return Err(errno("setresuid"));
        }
        // Changing credentials cleared the parent-death signal. It also made the process
        // undumpable, which it stays: its root and working directory are still the host's
        // and the template (same uid, same pid namespace) must not reach them through /proc.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::unshare(crate::seccomp::JAIL_NAMESPACES) != 0 {
            return Err(errno("creating the restore jail's namespaces"));
        }
    }
    // SAFETY: fork in a single-threaded process; the child is PID 1 of the new pid namespace.
    let init = unsafe { libc::fork() };
    if init < 0 {
        return Err(errno("fork"));
    }
    if init == 0 {
        // SAFETY: plain system calls on this process and its descriptors.
        let go = unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            libc::close(created);
            libc::close(config.report_fd);
            let mut byte = [0u8; 1];
            libc::read(go, byte.as_mut_ptr().cast(), 1) == 1
        };
        let sealed = if go {
            seal_restore_root(name)
        } else {
            Err("the helper gave up on the jail".into())
        };
        let message = match &sealed {
            Ok(()) => "+".to_owned(),
            Err(e) => e.clone(),
        };
        // SAFETY: writing a valid buffer to the pipe this process owns.
        unsafe {
            libc::write(ready, message.as_ptr().cast(), message.len());
            libc::close(ready);
        }
        // The jail is built: reaping needs no privilege (and the kernel ends every process
        // of the namespace when its init exits). Only now, inside the jail, does the init
        // open itself to the copy (same uid), which enters through a pidfd of it: the kernel
        // asks for ptrace read access. It closes again once it has adopted the runtime.
        let code = if sealed.is_ok() && drop_capabilities().is_ok() {
            // SAFETY: prctl on this process.
            unsafe {
                libc::prctl(libc::PR_SET_DUMPABLE, 1);
            }
            init_restored()
        } else {
            127
        };
        // SAFETY: leaving the child without the parent's exit handlers.
        unsafe { libc::_exit(code) };
    }
    // This process only waits now; the template (same uid, same pid namespace) must not be able
    // to reach into it.
    // SAFETY: prctl on this process.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0);
    }
    drop_capabilities()?;
    // SAFETY: telling the helper, then closing what this process no longer needs.
    unsafe {
        libc::write(created, b"n".as_ptr().cast(), 1);
        libc::close(created);
        libc::close(go);
        libc::close(ready);
        libc::close(config.report_fd);
    }
    Ok(wait_for(init))
}

/// In the helper, root outside the jail's user namespace: writes its id maps (the template's
/// uid is root inside, the environment's uid maps to itself), then mounts the jail's `/proc`
/// from a process born in the jail's pid namespace.
fn outside_work(
    creator: libc::pid_t,
    init: libc::pid_t,
    owner: Owner,
    spec: &JailSpec,
    root: &Path,
) -> Step {
    let maps = [
        (
            "uid_map",
            format!("0 {} 1\n{} {} 1\n", owner.uid, spec.uid, spec.uid),
        ),
        (
            "gid_map",
            format!("0 {} 1\n{} {} 1\n", owner.gid, spec.gid, spec.gid),
        ),
    ];
    for (file, map) in maps {
        std::fs::write(format!("/proc/{creator}/{file}"), map)
            .map_err(|e| format!("writing the {file}: {e}"))?;
    }
    // SAFETY: fork in a single-threaded process.
    let mounter = unsafe { libc::fork() };
    if mounter < 0 {
        return Err(errno("fork"));
    }
    if mounter == 0 {
        let entered = (|| -> Step {
            for (path, flag) in [
                (format!("/proc/{init}/ns/pid"), libc::CLONE_NEWPID),
                (format!("/proc/{creator}/ns/mnt"), libc::CLONE_NEWNS),
            ] {
                let ns = std::fs::File::open(&path).map_err(|e| format!("opening {path}: {e}"))?;
                // SAFETY: setns on a namespace descriptor we own.
                if unsafe { libc::setns(ns.as_raw_fd(), flag) } != 0 {
                    return Err(errno(&format!("entering {path}")));
                }
            }
            Ok(())
        })();
        let code = match entered {
            Err(_) => 1,
            // SAFETY: fork in a single-threaded process; the child is born in the jail's pid
            // namespace, as its /proc must be mounted from.
            Ok(()) => match unsafe { libc::fork() } {
                0 => {
                    let mounted = mount(
                        "proc",
                        &root.join("proc"),
                        "proc",
                        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                        "",
                    );
                    // SAFETY: leaving the child without the parent's exit handlers.
                    unsafe { libc::_exit(i32::from(mounted.is_err())) }
                }
                pid if pid > 0 => wait_for(pid),
                _ => 1,
            },
        };
        // SAFETY: leaving the child without the parent's exit handlers.
        unsafe { libc::_exit(code) };
    }
    if wait_for(mounter) != 0 {
        return Err("mounting the restore jail's /proc failed".into());
    }
    Ok(())
}

/// In a restore jail's init, working directory the jail's root: makes that root the root of
/// the mount namespace, hides the host's and seals it read-only. Its mounts came from the
/// host's namespace and are locked, and `pivot_root` refuses a locked mount: the root is bound
/// onto itself first and entered again through its parent (the only directory above it the
/// init needs to search).
fn seal_restore_root(name: &str) -> Step {
    mount(".", Path::new("."), "", libc::MS_BIND | libc::MS_REC, "")?;
    std::env::set_current_dir("..").map_err(|e| format!("chdir ..: {e}"))?;
    std::env::set_current_dir(name).map_err(|e| format!("chdir {name}: {e}"))?;
    let (here, old) = (
        CString::new(".").unwrap_or_default(),
        CString::new(".old-root").unwrap_or_default(),
    );
    // SAFETY: both arguments are valid paths; pivot_root has no other preconditions.
    if unsafe { libc::syscall(libc::SYS_pivot_root, here.as_ptr(), old.as_ptr()) } != 0 {
        return Err(errno("pivot_root"));
    }
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))?;
    let old_inside = CString::new("/.old-root").unwrap_or_default();
    // SAFETY: a valid path; detaching the old root hides the host's file system.
    if unsafe { libc::umount2(old_inside.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(errno("detaching the host root"));
    }
    mount(
        "",
        Path::new("/"),
        "",
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
        "",
    )?;
    set_hostname()
}

/// Gives up every capability this process holds, in its user namespace (and its bounding set).
fn drop_capabilities() -> Step {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    for cap in 0..64 {
        // SAFETY: prctl with integer arguments; unknown capabilities fail harmlessly.
        unsafe {
            libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
        }
    }
    let mut header = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: the header and the two data words are the layout capset expects for version 3.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } != 0 {
        return Err(errno("capset"));
    }
    Ok(())
}

/// PID 1 of a restore jail: waits for the restored runtime to be adopted, reaps it and every
/// orphan, and ends the namespace with the runtime's status when it exits.
fn init_restored() -> i32 {
    let mut adopted = false;
    loop {
        let mut status = 0;
        // Until the runtime is adopted, look without waiting; then close up and wait.
        let flags = if adopted { 0 } else { libc::WNOHANG };
        // SAFETY: status is a valid out-pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, flags) };
        if pid == 0 {
            adopted = true;
            // SAFETY: prctl on this process.
            unsafe {
                libc::prctl(libc::PR_SET_DUMPABLE, 0);
            }
            continue;
        }
        if pid < 0 {
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => continue,
                // No child yet: the runtime has not been adopted.
                Some(libc::ECHILD) => {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                _ => return 127,
            }
        }
        if pid == RESTORED_PID {
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else if libc::WIFSIGNALED(status) {
                128 + libc::WTERMSIG(status)
            } else {
                127
            };
            // SAFETY: as PID 1, kill(-1) reaches every other process in the namespace.
            unsafe {
                libc::kill(-1, libc::SIGKILL);
            }
            return code;
        }
    }
}

fn raw_pipe() -> Step<(RawFd, RawFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe writes two descriptors into the array on success.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(errno("pipe"));
    }
    Ok((fds[0], fds[1]))
}

// ---- talking to a template and its copies ----

/// Sends `data` with `fds` attached (SCM_RIGHTS) on a Unix stream socket.
pub fn send_with_fds(socket: &UnixStream, data: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    let fd_bytes = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
    let mut control = vec![0u8; space.max(1)];
    let mut iov = [IoSlice::new(data)];
    // SAFETY: msghdr is plain old data; all-zero is valid before the fields are set.
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_iov = iov.as_mut_ptr().cast();
    message.msg_iovlen = 1;
    if !fds.is_empty() {
        message.msg_control = control.as_mut_ptr().cast();
        message.msg_controllen = space;
        // SAFETY: the control buffer has room for one header and the descriptors, as
        // CMSG_SPACE computed; the pointers stay within it.
        unsafe {
            let header = libc::CMSG_FIRSTHDR(&message);
            (*header).cmsg_level = libc::SOL_SOCKET;
            (*header).cmsg_type = libc::SCM_RIGHTS;
            (*header).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as usize;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(header),
                fd_bytes,
            );
        }
    }
    // SAFETY: the message points at buffers that outlive the call.
    let sent = unsafe { libc::sendmsg(socket.as_raw_fd(), &message, libc::MSG_NOSIGNAL) };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if sent as usize != data.len() {
        return Err(std::io::Error::other(
            "a short write on the template's socket",
        ));
    }
    Ok(())
}

/// Asks the kernel to attach the sender's credentials to what `socket` receives.
pub fn pass_credentials(socket: &UnixStream) -> std::io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: the option value is a valid c_int of the size given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PASSCRED,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Receives one short message and the pid of the process that sent it, as this process's pid
/// namespace sees it ([`pass_credentials`] must be on). `None` at end of stream.
pub fn recv_with_pid(socket: &UnixStream) -> std::io::Result<Option<(Vec<u8>, u32)>> {
    let mut buf = vec![0u8; 256];
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::ucred>() as u32) } as usize;
    let mut control = vec![0u8; space];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain old data; all-zero is valid before the fields are set.
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_iov = &mut iov;
    message.msg_iovlen = 1;
    message.msg_control = control.as_mut_ptr().cast();
    message.msg_controllen = space;
    // SAFETY: the message points at buffers that outlive the call; descriptors passed to us
    // would close on exec.
    let got = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut message, libc::MSG_CMSG_CLOEXEC) };
    if got < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if got == 0 {
        return Ok(None);
    }
    buf.truncate(got as usize);
    let mut pid = None;
    // SAFETY: walking the control messages the kernel wrote, within msg_controllen.
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(&message);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET
                && (*header).cmsg_type == libc::SCM_CREDENTIALS
            {
                let cred: libc::ucred = std::ptr::read_unaligned(libc::CMSG_DATA(header).cast());
                pid = u32::try_from(cred.pid).ok().filter(|p| *p != 0);
            } else if (*header).cmsg_level == libc::SOL_SOCKET
                && (*header).cmsg_type == libc::SCM_RIGHTS
            {
                // Nothing is expected here: close whatever was passed.
                let count = ((*header).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    let fd: RawFd =
                        std::ptr::read_unaligned(libc::CMSG_DATA(header).cast::<RawFd>().add(i));
                    libc::close(fd);
                }
            }
            header = libc::CMSG_NXTHDR(&message, header);
        }
    }
    let pid = pid.ok_or_else(|| std::io::Error::other("the message came without credentials"))?;
    Ok(Some((buf, pid)))
}

/// The pid of the process at the other end of a connected Unix socket, when it connected.
pub fn peer_pid(socket: &UnixStream) -> std::io::Result<u32> {
    // SAFETY: ucred is plain old data; the kernel fills it and its length.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: the pointers describe `cred` and its length.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    u32::try_from(cred.pid).map_err(|_| std::io::Error::other("no peer pid"))
}

/// The parent of process `pid`, as this process's pid namespace sees it.
pub fn parent_of(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))?
        .trim()
        .parse()
        .ok()
}

/// Binds the abstract socket [`TEMPLATE_SOCKET`] in the network namespace of process `pid`
/// (a prepared jail's helper), for the template that will run there.
pub fn bind_template_socket(pid: u32) -> Result<std::os::unix::net::UnixListener> {
    netns::within(pid, || {
        use std::os::linux::net::SocketAddrExt;
        let address = std::os::unix::net::SocketAddr::from_abstract_name(TEMPLATE_SOCKET)
            .map_err(os("naming the template socket"))?;
        std::os::unix::net::UnixListener::bind_addr(&address)
            .map_err(os("binding the template socket"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(uid: u32, caps: &str, filters: u32) -> String {
        format!(
            "Name:\tpython3\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\nGid:\t{uid}\t{uid}\t{uid}\t{uid}\nGroups:\t\n\
             CapInh:\t0000000000000000\nCapPrm:\t{caps}\nCapEff:\t{caps}\nCapBnd:\t0000000000000000\n\
             CapAmb:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t{filters}\n"
        )
    }

    #[test]
    fn a_confined_process_passes() {
        assert_eq!(
            confined(&status(200_001, "0000000000000000", 3), 200_001, 200_001),
            Ok(())
        );
    }

    #[test]
    fn capabilities_another_uid_or_too_few_filters_fail() {
        let full = "000001ffffffffff";
        assert!(
            confined(&status(200_001, full, 3), 200_001, 200_001)
                .unwrap_err()
                .contains("CapPrm")
        );
        assert!(
            confined(&status(200_002, "0", 3), 200_001, 200_001)
                .unwrap_err()
                .contains("Uid")
        );
        assert!(
            confined(&status(200_001, "0", 2), 200_001, 200_001)
                .unwrap_err()
                .contains("seccomp")
        );
        let no_nnp = status(200_001, "0", 3).replace("NoNewPrivs:\t1", "NoNewPrivs:\t0");
        assert!(confined(&no_nnp, 200_001, 200_001).is_err());
        let missing = status(200_001, "0", 3).replace("CapAmb:\t0000000000000000\n", "");
        assert!(
            confined(&missing, 200_001, 200_001)
                .unwrap_err()
                .contains("missing")
        );
    }
}
