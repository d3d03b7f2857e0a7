//! The sandbox helper: a short-lived process started in fresh mount, uts, ipc and network
//! namespaces (and a fresh pid namespace for its children). It joins the sandbox's cgroups,
//! builds the root file system, then forks the pid namespace's init, which forks the program
//! with every privilege dropped. The helper waits and exits with the program's status.
//!
//! It is single-threaded, so allocating between fork and exec is safe here.

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::{HelperConfig, JailSpec};

pub(crate) type Step<T = ()> = std::result::Result<T, String>;

pub(crate) fn cstr(path: &Path) -> Step<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| format!("path {} contains NUL", path.display()))
}

pub(crate) fn errno(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

pub(crate) fn mount(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> Step {
    let source = CString::new(source).map_err(|e| e.to_string())?;
    let fstype = CString::new(fstype).map_err(|e| e.to_string())?;
    let data = CString::new(data).map_err(|e| e.to_string())?;
    let target_c = cstr(target)?;
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target_c.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(errno(&format!("mounting {}", target.display())));
    }
    Ok(())
}

/// Binds `host` at `target` read-only, without devices or set-uid programs.
fn bind_readonly(host: &Path, target: &Path) -> Step {
    let host_s = host
        .to_str()
        .ok_or_else(|| format!("path {} is not UTF-8", host.display()))?;
    mount(host_s, target, "", libc::MS_BIND | libc::MS_REC, "")?;
    mount(
        "",
        target,
        "",
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
        "",
    )
}

/// The function's layers at `/opt`: one is bound; more are stacked read-only with overlayfs,
/// a later layer's files over an earlier one's, as Lambda extracts them in order.
fn mount_layers(dirs: &[std::path::PathBuf], target: &Path) -> Step {
    match dirs {
        [] => Ok(()),
        [one] => bind_readonly(one, target),
        many => {
            let mut lower: Vec<&str> = Vec::with_capacity(many.len());
            // overlayfs lists the top layer first, and refuses a directory twice (two layers
            // with the same package): the topmost copy is the one that counts.
            for dir in many.iter().rev() {
                let s = dir
                    .to_str()
                    .ok_or_else(|| format!("path {} is not UTF-8", dir.display()))?;
                if s.contains([':', ',', '\\']) {
                    return Err(format!(
                        "layer path {s} has a character overlayfs cannot take"
                    ));
                }
                if !lower.contains(&s) {
                    lower.push(s);
                }
            }
            if let [one] = lower.as_slice() {
                return bind_readonly(Path::new(one), target);
            }
            mount(
                "overlay",
                target,
                "overlay",
                libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
                &format!("lowerdir={}", lower.join(":")),
            )
        }
    }
}

fn make_dir(path: &Path) -> Step {
    fs::create_dir_all(path).map_err(|e| format!("creating {}: {e}", path.display()))
}

/// Replicates a host top-level entry: a symlink stays a symlink (merged /usr), a directory is
/// bound read-only.
fn mirror(root: &Path, name: &str) -> Step {
    let host = Path::new("/").join(name);
    let target = root.join(name);
    match fs::symlink_metadata(&host) {
        Ok(meta) if meta.file_type().is_symlink() => {
            let link = fs::read_link(&host).map_err(|e| e.to_string())?;
            std::os::unix::fs::symlink(link, &target).map_err(|e| format!("linking {name}: {e}"))
        }
        Ok(meta) if meta.is_dir() => {
            make_dir(&target)?;
            bind_readonly(&host, &target)
        }
        _ => Ok(()),
    }
}

fn bind_file_if_present(host: &str, target: &Path) -> Step {
    let host = Path::new(host);
    if !host.exists() {
        return Ok(());
    }
    if host.is_dir() {
        make_dir(target)?;
    } else {
        fs::write(target, b"").map_err(|e| format!("creating {}: {e}", target.display()))?;
    }
    bind_readonly(host, target)
}

/// The parts of /etc that do not depend on the function; left writable until [`finish_etc`].
fn build_etc(root: &Path) -> Step {
    let etc = root.join("etc");
    make_dir(&etc)?;
    mount(
        "tmpfs",
        &etc,
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        "size=1m,mode=755",
    )?;
    let files = [
        ("hosts", "127.0.0.1 localhost sandbox\n::1 localhost\n"),
        (
            "nsswitch.conf",
            "passwd: files\ngroup: files\nhosts: files\n",
        ),
    ];
    for (name, content) in files {
        fs::write(etc.join(name), content).map_err(|e| format!("writing /etc/{name}: {e}"))?;
    }
    // The host's name servers, which a sandbox with egress may reach (and no other can).
    let resolv: String = crate::egress::nameservers()
        .iter()
        .map(|a| format!("nameserver {a}\n"))
        .collect();
    fs::write(etc.join("resolv.conf"), resolv)
        .map_err(|e| format!("writing /etc/resolv.conf: {e}"))?;
    for shared in [
        "ld.so.cache",
        "localtime",
        "ssl",
        "ca-certificates",
        "mime.types",
    ] {
        bind_file_if_present(&format!("/etc/{shared}"), &etc.join(shared))?;
    }
    Ok(())
}

/// The sandbox user's entries, then /etc becomes read-only.
fn finish_etc(root: &Path, uid: u32, gid: u32) -> Step {
    let etc = root.join("etc");
    let passwd = format!(
        "root:x:0:0:root:/root:/sbin/nologin\nsbx_user:x:{uid}:{gid}::/tmp:/sbin/nologin\n"
    );
    fs::write(etc.join("passwd"), passwd).map_err(|e| format!("writing /etc/passwd: {e}"))?;
    fs::write(etc.join("group"), format!("root:x:0:\nsbx_user:x:{gid}:\n"))
        .map_err(|e| format!("writing /etc/group: {e}"))?;
    mount(
        "",
        &etc,
        "",
        libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
        "",
    )
}

fn build_dev(root: &Path) -> Step {
    let dev = root.join("dev");
    make_dir(&dev)?;
    mount(
        "tmpfs",
        &dev,
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        "size=64k,mode=755",
    )?;
    for node in ["null", "zero", "full", "random", "urandom"] {
        let target = dev.join(node);
        fs::write(&target, b"").map_err(|e| format!("creating /dev/{node}: {e}"))?;
        let host = format!("/dev/{node}");
        mount(&host, &target, "", libc::MS_BIND, "")?;
    }
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(to, dev.join(link))
            .map_err(|e| format!("linking /dev/{link}: {e}"))?;
    }
    let shm = dev.join("shm");
    make_dir(&shm)?;
    mount(
        "tmpfs",
        &shm,
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        "size=64m,mode=1777",
    )?;
    mount(
        "",
        &dev,
        "",
        libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NOEXEC,
        "size=64k,mode=755",
    )
}

/// Everything that does not depend on the function, done while the sandbox waits for one:
/// the root, the host's /usr, /etc, /dev and the runtime binds.
fn build_base(config: &HelperConfig) -> Step {
    let root = &config.root_dir;
    // Nothing mounted from here on may propagate back to the host.
    mount("", Path::new("/"), "", libc::MS_REC | libc::MS_PRIVATE, "")?;
    make_dir(root)?;
    mount(
        "tmpfs",
        root,
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        "size=1m,mode=755",
    )?;
    for name in ["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        mirror(root, name)?;
    }
    build_etc(root)?;
    build_dev(root)?;
    for bind in &config.binds {
        let inside = bind.sandbox.strip_prefix("/").unwrap_or(&bind.sandbox);
        let target = root.join(inside);
        make_dir(&target)?;
        bind_readonly(&bind.host, &target)?;
    }
    for dir in ["var/task", "opt", "tmp", "proc", ".old-root"] {
        make_dir(&root.join(dir))?;
    }
    Ok(())
}

/// The function's part: its code, its layers, its /tmp, its user.
pub(crate) fn mount_function(config: &HelperConfig, spec: &JailSpec) -> Step {
    let root = &config.root_dir;
    finish_etc(root, spec.uid, spec.gid)?;
    bind_readonly(&spec.code_dir, &root.join("var/task"))?;
    mount_layers(&spec.opt_dirs, &root.join("opt"))?;
    mount(
        "tmpfs",
        &root.join("tmp"),
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        &format!("size={}m,mode=1777", spec.tmp_mb),
    )
}

/// Makes `root` the root of the mount namespace, hides the host's and seals it read-only.
fn seal_root(root: &Path) -> Step {
    let old = root.join(".old-root");
    let (root_c, old_c) = (cstr(root)?, cstr(&old)?);
    // SAFETY: both arguments are valid paths; pivot_root has no other preconditions.
    if unsafe { libc::syscall(libc::SYS_pivot_root, root_c.as_ptr(), old_c.as_ptr()) } != 0 {
        return Err(errno("pivot_root"));
    }
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))?;
    let old_inside = CString::new("/.old-root").map_err(|e| e.to_string())?;
    // SAFETY: a valid path; detaching the old root hides the host's file system.
    if unsafe { libc::umount2(old_inside.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(errno("detaching the host root"));
    }
    let _ = fs::remove_dir("/.old-root");
    mount(
        "",
        Path::new("/"),
        "",
        libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
        "size=1m,mode=755",
    )?;
    set_hostname()
}

/// Every sandbox is called `sandbox` in its own uts namespace.
pub(crate) fn set_hostname() -> Step {
    let hostname = b"sandbox";
    // SAFETY: the pointer and length describe a valid buffer.
    if unsafe { libc::sethostname(hostname.as_ptr().cast(), hostname.len()) } != 0 {
        return Err(errno("sethostname"));
    }
    Ok(())
}

/// In the program's process: drop every privilege, filter system calls, exec.
/// The most descriptors a function's processes may hold open.
const MAX_OPEN_FILES: libc::rlim_t = 1024;

fn exec_program(
    config: &HelperConfig,
    spec: &JailSpec,
    filters: &[seccompiler::BpfProgram],
) -> String {
    let program = match cstr(&spec.program) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let mut argv: Vec<CString> = vec![program.clone()];
    for a in &spec.args {
        match CString::new(a.as_bytes()) {
            Ok(c) => argv.push(c),
            Err(_) => return "an argument contains NUL".into(),
        }
    }
    let mut envp: Vec<CString> = Vec::new();
    for (k, v) in &spec.env {
        match CString::new(format!("{k}={v}")) {
            Ok(c) => envp.push(c),
            Err(_) => return format!("environment variable {k} contains NUL"),
        }
    }
    let argv_ptrs: Vec<*const libc::c_char> = argv
        .iter()
        .map(|c| c.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp_ptrs: Vec<*const libc::c_char> = envp
        .iter()
        .map(|c| c.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();

    // SAFETY: plain system calls on this process with valid arguments.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        libc::setsid();
        for cap in 0..64 {
            libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
        }
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
        if libc::setgroups(0, std::ptr::null()) != 0 {
            return errno("setgroups");
        }
        if libc::setresgid(spec.gid, spec.gid, spec.gid) != 0 {
            return errno("setresgid");
        }
        // Changing every uid away from 0 clears the permitted and effective capabilities.
        if libc::setresuid(spec.uid, spec.uid, spec.uid) != 0 {
            return errno("setresuid");
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return errno("no_new_privs");
        }
        // As on Lambda: 1,024 open descriptors per function, which it cannot raise.
        let files = libc::rlimit {
            rlim_cur: MAX_OPEN_FILES,
            rlim_max: MAX_OPEN_FILES,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &files) != 0 {
            return errno("setrlimit");
        }
    }
    if let Err(e) = crate::seccomp::apply(filters) {
        return e;
    }
    // The helper's stdin carried the spec; the program reads nothing from it.
    // SAFETY: open and dup2 on paths and descriptors this process owns.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::close(null);
        }
    }
    if std::env::set_current_dir("/var/task").is_err() {
        let _ = std::env::set_current_dir("/");
    }
    // The report pipe closes on a successful exec: that is how the worker learns of it.
    // SAFETY: fcntl on a descriptor this process owns.
    unsafe {
        libc::fcntl(config.report_fd, libc::F_SETFD, libc::FD_CLOEXEC);
    }
    // SAFETY: argv and envp are NUL-terminated arrays of valid C strings that outlive the call.
    unsafe {
        libc::execve(program.as_ptr(), argv_ptrs.as_ptr(), envp_ptrs.as_ptr());
    }
    errno(&format!("executing {}", spec.program.display()))
}

pub(crate) fn report(fd: i32, message: &str) {
    // SAFETY: fd is the inherited write end of the report pipe; a File takes ownership of it.
    let mut file = unsafe { <fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let _ = file.write_all(message.as_bytes());
}

pub(crate) fn wait_for(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    loop {
        // SAFETY: status is a valid out-pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            break;
        }
        if rc < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return 127;
        }
    }
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        127
    }
}

/// PID 1 of the sandbox: mounts /proc, starts the program, reaps orphans, and ends the
/// namespace (killing every process left) when the program exits.
fn init(config: &HelperConfig, spec: &JailSpec, filters: &[seccompiler::BpfProgram]) -> i32 {
    if let Err(e) = mount(
        "proc",
        Path::new("/proc"),
        "proc",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        "",
    ) {
        report(config.report_fd, &e);
        return 127;
    }
    // SAFETY: fork in a single-threaded process.
    let child = unsafe { libc::fork() };
    if child < 0 {
        report(config.report_fd, &errno("fork"));
        return 127;
    }
    if child == 0 {
        let error = exec_program(config, spec, filters);
        report(config.report_fd, &error);
        // SAFETY: leaving the child without running the parent's exit handlers.
        unsafe { libc::_exit(127) };
    }
    // SAFETY: closing this process's copy of the report pipe.
    unsafe {
        libc::close(config.report_fd);
    }
    let mut result = 127;
    loop {
        let mut status = 0;
        // SAFETY: status is a valid out-pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            break;
        }
        if pid == child {
            result = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else if libc::WIFSIGNALED(status) {
                128 + libc::WTERMSIG(status)
            } else {
                127
            };
            if spec.template {
                // The environments restored from a template live in pid namespaces below this
                // one, which the kernel ends with it: they outlive their template, and the
                // worker ends this jail once the last of them is gone. Until then, reap.
                loop {
                    // SAFETY: status is a valid out-pointer.
                    if unsafe { libc::waitpid(-1, &mut status, 0) } < 0
                        && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD)
                    {
                        std::thread::sleep(std::time::Duration::from_millis(100));
                    }
                }
            }
            // SAFETY: as PID 1, kill(-1) reaches every other process in the namespace.
            unsafe {
                libc::kill(-1, libc::SIGKILL);
            }
            break;
        }
    }
    result
}

fn read_spec() -> Step<Option<JailSpec>> {
    let mut spec_json = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin(), &mut spec_json)
        .map_err(|e| format!("reading the sandbox spec: {e}"))?;
    if spec_json.is_empty() {
        return Ok(None);
    }
    serde_json::from_slice(&spec_json)
        .map(Some)
        .map_err(|e| format!("parsing the sandbox spec: {e}"))
}

fn run(config: &HelperConfig) -> Step<i32> {
    let pid = std::process::id().to_string();
    for procs in &config.cgroup_procs {
        fs::write(procs, &pid).map_err(|e| format!("joining cgroup {}: {e}", procs.display()))?;
    }
    build_base(config)?;
    if let Some(owner) = config.restore {
        let spec = read_spec()?.ok_or("the restore jail was given no spec")?;
        return crate::restore::run_helper(config, &spec, owner);
    }
    let filters = crate::seccomp::filters(false)?;
    // Prepared ahead of need: wait here for the function this sandbox will run.
    let Some(spec) = read_spec()? else {
        // The worker let the prepared sandbox go unused.
        return Ok(0);
    };
    // A template's processes enter the jails of the environments restored from it.
    let filters = if spec.template {
        crate::seccomp::filters(true)?
    } else {
        filters
    };
    mount_function(config, &spec)?;
    seal_root(&config.root_dir)?;
    // SAFETY: fork in a single-threaded process; the child is PID 1 of the new pid namespace.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(errno("fork"));
    }
    if child == 0 {
        // SAFETY: plain system calls.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            libc::_exit(init(config, &spec, &filters));
        }
    }
    // SAFETY: closing this process's copy of the report pipe.
    unsafe {
        libc::close(config.report_fd);
    }
    Ok(wait_for(child))
}

/// Entry point of the helper process. Never returns.
pub fn helper_main() -> ! {
    let config: Option<HelperConfig> = std::env::args()
        .nth(2)
        .and_then(|c| serde_json::from_str(&c).ok());
    let Some(config) = config else {
        eprintln!("the sandbox helper is started by nimbus, not by hand");
        std::process::exit(127);
    };
    match run(&config) {
        Ok(code) => std::process::exit(code),
        Err(message) => {
            report(config.report_fd, &message);
            std::process::exit(127);
        }
    }
}
