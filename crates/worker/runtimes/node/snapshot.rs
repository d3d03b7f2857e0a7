//! The native part of SnapStart for nimbus's Node.js runtime, a Node-API addon
//! (`/var/runtime/node/snapshot.node`). Node has no `fork`: a template process (a runtime that
//! ran a version's initialisation) calls `serve`, which forks a copy of the process for every
//! environment the worker restores; the copy enters the jail the worker made for it with
//! `enterJail` and continues in JavaScript. The protocol is the Python runtime's
//! (`serve_snapshot` there, `SnapshotTemplate` in the worker).
//!
//! Built by the worker's build script as a `cdylib` with no dependencies: the C library's and
//! Node-API's functions are declared here and resolved when Node loads the addon.

#![allow(non_camel_case_types, clippy::missing_safety_doc)]

use std::ffi::{c_char, c_int, c_ulong, c_void, CString};
use std::ptr::null_mut;

type napi_env = *mut c_void;
type napi_value = *mut c_void;
type napi_callback_info = *mut c_void;
type napi_status = c_int;
type napi_callback = unsafe extern "C" fn(napi_env, napi_callback_info) -> napi_value;

extern "C" {
    fn napi_create_function(
        env: napi_env,
        name: *const c_char,
        length: usize,
        cb: napi_callback,
        data: *mut c_void,
        result: *mut napi_value,
    ) -> napi_status;
    fn napi_set_named_property(
        env: napi_env,
        object: napi_value,
        name: *const c_char,
        value: napi_value,
    ) -> napi_status;
    fn napi_get_cb_info(
        env: napi_env,
        info: napi_callback_info,
        argc: *mut usize,
        argv: *mut napi_value,
        this: *mut napi_value,
        data: *mut *mut c_void,
    ) -> napi_status;
    fn napi_get_value_int32(env: napi_env, value: napi_value, result: *mut i32) -> napi_status;
    fn napi_get_value_string_utf8(
        env: napi_env,
        value: napi_value,
        buf: *mut c_char,
        size: usize,
        result: *mut usize,
    ) -> napi_status;
    fn napi_get_buffer_info(
        env: napi_env,
        value: napi_value,
        data: *mut *mut c_void,
        length: *mut usize,
    ) -> napi_status;
    fn napi_create_int32(env: napi_env, value: i32, result: *mut napi_value) -> napi_status;
    fn napi_create_buffer_copy(
        env: napi_env,
        length: usize,
        data: *const c_void,
        result_data: *mut *mut c_void,
        result: *mut napi_value,
    ) -> napi_status;
    fn napi_create_array_with_length(
        env: napi_env,
        length: usize,
        result: *mut napi_value,
    ) -> napi_status;
    fn napi_set_element(
        env: napi_env,
        object: napi_value,
        index: u32,
        value: napi_value,
    ) -> napi_status;
    fn napi_create_object(env: napi_env, result: *mut napi_value) -> napi_status;
    fn napi_get_undefined(env: napi_env, result: *mut napi_value) -> napi_status;
    fn napi_throw_error(env: napi_env, code: *const c_char, msg: *const c_char) -> napi_status;
    fn napi_get_uv_event_loop(env: napi_env, uv_loop: *mut *mut c_void) -> napi_status;
    fn uv_loop_fork(uv_loop: *mut c_void) -> c_int;

    fn socket(domain: c_int, kind: c_int, protocol: c_int) -> c_int;
    fn socketpair(domain: c_int, kind: c_int, protocol: c_int, fds: *mut c_int) -> c_int;
    fn connect(fd: c_int, address: *const c_void, len: u32) -> c_int;
    fn recvmsg(fd: c_int, message: *mut MsgHdr, flags: c_int) -> isize;
    fn write(fd: c_int, buf: *const c_void, count: usize) -> isize;
    fn close(fd: c_int) -> c_int;
    fn dup2(from: c_int, to: c_int) -> c_int;
    fn fcntl(fd: c_int, command: c_int, arg: c_int) -> c_int;
    fn fork() -> c_int;
    fn _exit(status: c_int) -> !;
    fn waitpid(pid: c_int, status: *mut c_int, options: c_int) -> c_int;
    fn getppid() -> c_int;
    fn setsid() -> c_int;
    fn setns(fd: c_int, nstype: c_int) -> c_int;
    fn setgroups(size: usize, list: *const u32) -> c_int;
    fn setresgid(r: u32, e: u32, s: u32) -> c_int;
    fn setresuid(r: u32, e: u32, s: u32) -> c_int;
    fn prctl(option: c_int, a: c_ulong, b: c_ulong, c: c_ulong, d: c_ulong) -> c_int;
    fn sigaction(signal: c_int, new: *const SigAction, old: *mut SigAction) -> c_int;
    fn usleep(micros: u32) -> c_int;
    fn getpid() -> c_int;
    fn setsockopt(fd: c_int, level: c_int, name: c_int, value: *const c_void, len: u32) -> c_int;
    fn madvise(address: *mut c_void, length: usize, advice: c_int) -> c_int;
}

#[repr(C)]
struct IoVec {
    base: *mut c_void,
    len: usize,
}

#[repr(C)]
struct MsgHdr {
    name: *mut c_void,
    name_len: u32,
    iov: *mut IoVec,
    iov_len: usize,
    control: *mut c_void,
    control_len: usize,
    flags: c_int,
}

/// glibc's `struct sigaction` on 64-bit Linux: the handler, a 1024-bit mask, the flags and the
/// restorer. Only the handler is set here; the rest is kept as it came.
#[repr(C)]
#[derive(Clone, Copy)]
struct SigAction {
    handler: usize,
    rest: [u64; 18],
}

const AF_UNIX: c_int = 1;
const AF_INET: c_int = 2;
const IPPROTO_TCP: c_int = 6;
const TCP_NODELAY: c_int = 1;
const SOCK_STREAM: c_int = 1;
const SOCK_CLOEXEC: c_int = 0o2000000;
const SOL_SOCKET: c_int = 1;
const SCM_RIGHTS: c_int = 1;
const MADV_DOFORK: c_int = 11;
const MSG_CMSG_CLOEXEC: c_int = 0x40000000;
const SIGCHLD: c_int = 17;
const SIGKILL: c_ulong = 9;
const SIG_IGN: usize = 1;
const F_GETFL: c_int = 3;
const F_SETFL: c_int = 4;
const O_NONBLOCK: c_int = 0o4000;
const PR_SET_PDEATHSIG: c_int = 1;
const PR_SET_SECCOMP: c_int = 22;
const PR_CAPBSET_DROP: c_int = 24;
const PR_CAP_AMBIENT: c_int = 47;
const PR_CAP_AMBIENT_CLEAR_ALL: c_ulong = 4;
const SECCOMP_MODE_FILTER: c_ulong = 2;
/// The namespaces a copy enters through its jail's pidfd: mount, uts, ipc, user, pid, net.
const JAIL_NAMESPACES: c_int =
    0x00020000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "x86_64")]
const SYS_SETNS: u32 = 308;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;
#[cfg(target_arch = "aarch64")]
const SYS_SETNS: u32 = 268;

fn os_error(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// Reads what one `recvmsg` brings, with up to `max_fds` descriptors (close-on-exec). Retries
/// when interrupted.
fn receive(fd: c_int, size: usize, max_fds: usize) -> Result<(Vec<u8>, Vec<c_int>), String> {
    let mut data = vec![0u8; size];
    // CMSG_SPACE of max_fds ints: a 16-byte header and the ints, rounded up to 8 bytes.
    let mut control = vec![0u64; 2 + (max_fds * 4).div_ceil(8)];
    loop {
        let mut iov = IoVec {
            base: data.as_mut_ptr().cast(),
            len: data.len(),
        };
        let mut message = MsgHdr {
            name: null_mut(),
            name_len: 0,
            iov: &mut iov,
            iov_len: 1,
            control: control.as_mut_ptr().cast(),
            control_len: control.len() * 8,
            flags: 0,
        };
        let n = unsafe { recvmsg(fd, &mut message, MSG_CMSG_CLOEXEC) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(os_error("receiving"));
        }
        let mut fds = Vec::new();
        let mut offset = 0usize;
        let bytes: &[u8] =
            unsafe { std::slice::from_raw_parts(control.as_ptr().cast(), message.control_len) };
        while offset + 16 <= bytes.len() {
            let len = usize::from_ne_bytes(bytes[offset..offset + 8].try_into().unwrap());
            let level = c_int::from_ne_bytes(bytes[offset + 8..offset + 12].try_into().unwrap());
            let kind = c_int::from_ne_bytes(bytes[offset + 12..offset + 16].try_into().unwrap());
            if len < 16 || offset + len > bytes.len() {
                break;
            }
            if level == SOL_SOCKET && kind == SCM_RIGHTS {
                for chunk in bytes[offset + 16..offset + len].chunks_exact(4) {
                    fds.push(c_int::from_ne_bytes(chunk.try_into().unwrap()));
                }
            }
            offset += len.div_ceil(8) * 8;
        }
        data.truncate(n as usize);
        return Ok((data, fds));
    }
}

fn write_all(fd: c_int, mut data: &[u8]) -> Result<(), String> {
    while !data.is_empty() {
        let n = unsafe { write(fd, data.as_ptr().cast(), data.len()) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(os_error("writing"));
        }
        data = &data[n as usize..];
    }
    Ok(())
}

/// V8 keeps its heap's pages out of forked children (`MADV_DONTFORK`, "dc" in smaps): the
/// copies need all of them.
fn inherit_all_memory() -> Result<(), String> {
    let smaps = std::fs::read_to_string("/proc/self/smaps")
        .map_err(|e| format!("/proc/self/smaps: {e}"))?;
    let mut range = None;
    for line in smaps.lines() {
        let first = line.split(' ').next().unwrap_or("");
        if let Some((start, end)) = first.split_once('-') {
            if let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            ) {
                range = Some((start, end));
                continue;
            }
        }
        if let (Some(flags), Some((start, end))) = (line.strip_prefix("VmFlags:"), range) {
            if flags.split_whitespace().any(|f| f == "dc")
                && unsafe { madvise(start as *mut c_void, end - start, MADV_DOFORK) } != 0
            {
                return Err(os_error("madvise"));
            }
        }
    }
    Ok(())
}

/// The template's loop: connects to the worker's control socket (abstract, in the template's
/// network namespace), says it is ready and forks once for every channel the worker sends.
/// Returns the channel's descriptor in the copy; the template itself exits when the worker
/// closes the control socket.
fn serve(name: &str) -> Result<c_int, String> {
    let control = unsafe { socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0) };
    if control < 0 {
        return Err(os_error("control socket"));
    }
    // sockaddr_un with an abstract name: family, a NUL, the name.
    let mut address = [0u8; 110];
    address[..2].copy_from_slice(&(AF_UNIX as u16).to_ne_bytes());
    if name.len() > 100 {
        return Err("control socket name too long".into());
    }
    address[3..3 + name.len()].copy_from_slice(name.as_bytes());
    if unsafe { connect(control, address.as_ptr().cast(), (3 + name.len()) as u32) } != 0 {
        return Err(os_error("connecting to the worker"));
    }
    // Copies exit on their own: the template never waits for them.
    let ignore = SigAction {
        handler: SIG_IGN,
        rest: [0; 18],
    };
    let mut previous = ignore;
    if unsafe { sigaction(SIGCHLD, &ignore, &mut previous) } != 0 {
        return Err(os_error("ignoring SIGCHLD"));
    }
    inherit_all_memory()?;
    write_all(control, b"ready\n")?;
    loop {
        let (data, fds) = match receive(control, 16, 1) {
            Ok(got) => got,
            Err(_) => unsafe { _exit(70) },
        };
        if data.is_empty() {
            unsafe { _exit(0) } // the worker retired the snapshot
        }
        let [channel] = fds[..] else {
            for fd in fds {
                unsafe { close(fd) };
            }
            continue;
        };
        let pid = unsafe { fork() };
        if pid != 0 {
            unsafe { close(channel) };
            continue;
        }
        unsafe {
            close(control);
            sigaction(SIGCHLD, &previous, null_mut());
        }
        return Ok(channel);
    }
}

/// A seccomp filter refusing `setns` with EPERM, added to the template's filters in a copy
/// (which allow it only for entering the jail).
fn refuse_setns() -> Result<(), String> {
    #[repr(C)]
    struct Insn(u16, u8, u8, u32);
    #[repr(C)]
    struct Program {
        len: u16,
        filter: *const Insn,
    }
    let program = [
        Insn(0x20, 0, 0, 4),               // load the architecture
        Insn(0x15, 0, 3, AUDIT_ARCH),      // another one: allow (the template's filter decides)
        Insn(0x20, 0, 0, 0),               // load the system call number
        Insn(0x15, 0, 1, SYS_SETNS),       // setns?
        Insn(0x06, 0, 0, 0x0005_0000 | 1), // fail it with EPERM
        Insn(0x06, 0, 0, 0x7FFF_0000),     // allow
    ];
    let prog = Program {
        len: program.len() as u16,
        filter: program.as_ptr(),
    };
    if unsafe {
        prctl(
            PR_SET_SECCOMP,
            SECCOMP_MODE_FILTER,
            &prog as *const Program as c_ulong,
            0,
            0,
        )
    } != 0
    {
        return Err(os_error("installing the restored seccomp filter"));
    }
    Ok(())
}

/// Gives `to` the non-blocking flag `from` has, so that Node's handle for `from`'s number
/// keeps working as it did once `to` is moved there.
fn same_blocking(from: c_int, to: c_int) {
    unsafe {
        let was = fcntl(from, F_GETFL, 0);
        let flags = fcntl(to, F_GETFL, 0);
        if was >= 0 && flags >= 0 {
            fcntl(to, F_SETFL, (flags & !O_NONBLOCK) | (was & O_NONBLOCK));
        }
    }
}

/// In a copy: enters the jail (`pidfd` is its init's), gives up every privilege, takes `uid`
/// and `gid`, refuses further `setns`, and forks twice so that the runtime is a child of the
/// jail's init (entering a pid namespace places one's children in it, not oneself). Returns in
/// the runtime's process, with `out` and `err` as its stdout and stderr and a fresh event loop;
/// the intermediate processes exit.
fn enter_jail(
    env: napi_env,
    pidfd: c_int,
    uid: u32,
    gid: u32,
    out: c_int,
    err: c_int,
) -> Result<(), String> {
    unsafe {
        if setns(pidfd, JAIL_NAMESPACES) != 0 {
            return Err(os_error("entering the jail"));
        }
        close(pidfd);
        for cap in 0..64 {
            prctl(PR_CAPBSET_DROP, cap, 0, 0, 0);
        }
        prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
        if setgroups(0, std::ptr::null()) != 0 {
            return Err(os_error("setgroups"));
        }
        if setresgid(gid, gid, gid) != 0 {
            return Err(os_error("setresgid"));
        }
        // From root inside the namespace to another uid: the capabilities go too.
        if setresuid(uid, uid, uid) != 0 {
            return Err(os_error("setresuid"));
        }
        refuse_setns()?;
        let child = fork();
        if child < 0 {
            return Err(os_error("fork"));
        }
        if child > 0 {
            close(out);
            close(err);
            let mut status = 0;
            waitpid(child, &mut status, 0);
            _exit(0);
        }
        let grandchild = fork();
        if grandchild < 0 {
            _exit(71);
        }
        if grandchild > 0 {
            _exit(0);
        }
        // The runtime: adopted by the jail's init once its parent exits.
        while getppid() != 1 {
            usleep(200);
        }
        prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
        setsid();
        same_blocking(1, out);
        same_blocking(2, err);
        if dup2(out, 1) < 0 || dup2(err, 2) < 0 {
            return Err(os_error("dup2"));
        }
        close(out);
        close(err);
        let mut uv_loop = null_mut();
        if napi_get_uv_event_loop(env, &mut uv_loop) != 0 || uv_loop_fork(uv_loop) != 0 {
            return Err("renewing the event loop after fork".into());
        }
    }
    Ok(())
}

/// Connections made at init belong to the template's network namespace: each socket but
/// `keep` (and 0–2) is replaced by one whose peer has closed, so that the handle Node keeps
/// for it ends (as a connection the server closed does: its reader sees the end, a write
/// fails) instead of reaching a socket the environment must not share, and its number is not
/// reused by another connection while Node still holds it.
fn drop_sockets(keep: c_int) -> Result<(), String> {
    let entries = std::fs::read_dir("/proc/self/fd").map_err(|e| format!("/proc/self/fd: {e}"))?;
    let fds: Vec<c_int> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .filter(|&fd| fd > 2 && fd != keep)
        .collect();
    for fd in fds {
        let is_socket = std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .map(|target| target.to_string_lossy().starts_with("socket:"))
            .unwrap_or(false);
        if !is_socket {
            continue;
        }
        unsafe {
            let mut pair = [0 as c_int; 2];
            if socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair.as_mut_ptr()) != 0 {
                return Err(os_error("socketpair"));
            }
            let [fresh, peer] = pair;
            close(peer);
            same_blocking(fd, fresh);
            if dup2(fresh, fd) < 0 {
                return Err(os_error("dup2"));
            }
            close(fresh);
        }
    }
    Ok(())
}

/// A TCP connection to `port` on 127.0.0.1 (the Runtime API, in the copy's network
/// namespace), made without Node's event loop.
fn connect_local(port: u16) -> Result<c_int, String> {
    unsafe {
        let fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(os_error("socket"));
        }
        // sockaddr_in: family, port (network order), address, padding.
        let mut address = [0u8; 16];
        address[..2].copy_from_slice(&(AF_INET as u16).to_ne_bytes());
        address[2..4].copy_from_slice(&port.to_be_bytes());
        address[4..8].copy_from_slice(&[127, 0, 0, 1]);
        if connect(fd, address.as_ptr().cast(), 16) != 0 {
            let e = os_error("connecting to the Runtime API");
            close(fd);
            return Err(e);
        }
        let one: c_int = 1;
        setsockopt(
            fd,
            IPPROTO_TCP,
            TCP_NODELAY,
            (&one as *const c_int).cast(),
            4,
        );
        Ok(fd)
    }
}

/// `/proc/PID/environ` shows the block of variables a process started with: in a copy, the
/// template's (its init's credentials among them). Overwrites it with as many of `block`'s
/// NUL-terminated entries as fit, NULs after them. Nothing points into the block any more
/// once every variable was unset and set again, as the runtime does first.
fn rewrite_environ_block(block: &[u8]) -> Result<(), String> {
    let stat =
        std::fs::read_to_string("/proc/self/stat").map_err(|e| format!("/proc/self/stat: {e}"))?;
    // After the command's closing parenthesis, the fields from the third on: env_start and
    // env_end are the 50th and 51st.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let (Some(Ok(start)), Some(Ok(end))) = (
        fields.get(47).map(|f| f.parse::<usize>()),
        fields.get(48).map(|f| f.parse::<usize>()),
    ) else {
        return Err("no environment block in /proc/self/stat".into());
    };
    if end <= start || end - start > 1 << 20 {
        return Err("an implausible environment block".into());
    }
    let size = end - start;
    let fits = block[..block.len().min(size)]
        .iter()
        .rposition(|&b| b == 0)
        .map_or(0, |last| last + 1);
    let mut data = block[..fits].to_vec();
    data.resize(size, 0);
    // SAFETY: [start, end) is this process's environment block, in its stack mapping, which is
    // writable; `data` is exactly its size.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), start as *mut u8, size) };
    Ok(())
}

// ---- Node-API glue ----

unsafe fn args<const N: usize>(env: napi_env, info: napi_callback_info) -> [napi_value; N] {
    let mut argv = [null_mut(); N];
    let mut argc = N;
    napi_get_cb_info(
        env,
        info,
        &mut argc,
        argv.as_mut_ptr(),
        null_mut(),
        null_mut(),
    );
    argv
}

unsafe fn int(env: napi_env, value: napi_value) -> Result<i32, String> {
    let mut n = 0;
    if napi_get_value_int32(env, value, &mut n) != 0 {
        return Err("expected a number".into());
    }
    Ok(n)
}

unsafe fn string(env: napi_env, value: napi_value) -> Result<String, String> {
    let mut buf = [0u8; 256];
    let mut len = 0;
    if napi_get_value_string_utf8(env, value, buf.as_mut_ptr().cast(), buf.len(), &mut len) != 0 {
        return Err("expected a string".into());
    }
    Ok(String::from_utf8_lossy(&buf[..len]).into_owned())
}

unsafe fn number(env: napi_env, n: i32) -> napi_value {
    let mut v = null_mut();
    napi_create_int32(env, n, &mut v);
    v
}

unsafe fn undefined(env: napi_env) -> napi_value {
    let mut v = null_mut();
    napi_get_undefined(env, &mut v);
    v
}

unsafe fn answer(env: napi_env, result: Result<napi_value, String>) -> napi_value {
    match result {
        Ok(v) => v,
        Err(message) => {
            let message = CString::new(message.replace('\0', " ")).unwrap_or_default();
            napi_throw_error(env, std::ptr::null(), message.as_ptr());
            null_mut()
        }
    }
}

unsafe extern "C" fn js_serve(env: napi_env, info: napi_callback_info) -> napi_value {
    let [name] = args::<1>(env, info);
    let result = string(env, name)
        .and_then(|n| serve(&n))
        .map(|fd| number(env, fd));
    answer(env, result)
}

unsafe extern "C" fn js_receive(env: napi_env, info: napi_callback_info) -> napi_value {
    let [fd, size, max_fds] = args::<3>(env, info);
    let result = (|| {
        let (data, fds) = receive(
            int(env, fd)?,
            int(env, size)?.clamp(1, 1 << 20) as usize,
            int(env, max_fds)?.clamp(0, 8) as usize,
        )?;
        let mut object = null_mut();
        napi_create_object(env, &mut object);
        let mut buffer = null_mut();
        napi_create_buffer_copy(
            env,
            data.len(),
            data.as_ptr().cast(),
            null_mut(),
            &mut buffer,
        );
        let mut list = null_mut();
        napi_create_array_with_length(env, fds.len(), &mut list);
        for (i, fd) in fds.iter().enumerate() {
            napi_set_element(env, list, i as u32, number(env, *fd));
        }
        napi_set_named_property(env, object, c"data".as_ptr(), buffer);
        napi_set_named_property(env, object, c"fds".as_ptr(), list);
        Ok(object)
    })();
    answer(env, result)
}

unsafe extern "C" fn js_send(env: napi_env, info: napi_callback_info) -> napi_value {
    let [fd, buffer] = args::<2>(env, info);
    let result = (|| {
        let mut data = null_mut();
        let mut len = 0;
        if napi_get_buffer_info(env, buffer, &mut data, &mut len) != 0 {
            return Err("expected a Buffer".to_owned());
        }
        let bytes = if len == 0 {
            &[][..]
        } else {
            std::slice::from_raw_parts(data.cast::<u8>(), len)
        };
        write_all(int(env, fd)?, bytes)?;
        Ok(undefined(env))
    })();
    answer(env, result)
}

unsafe extern "C" fn js_close(env: napi_env, info: napi_callback_info) -> napi_value {
    let [fd] = args::<1>(env, info);
    let result = int(env, fd).map(|fd| {
        close(fd);
        undefined(env)
    });
    answer(env, result)
}

unsafe extern "C" fn js_enter_jail(env: napi_env, info: napi_callback_info) -> napi_value {
    let [pidfd, uid, gid, out, err] = args::<5>(env, info);
    let result = (|| {
        enter_jail(
            env,
            int(env, pidfd)?,
            u32::try_from(int(env, uid)?).map_err(|_| "bad uid")?,
            u32::try_from(int(env, gid)?).map_err(|_| "bad gid")?,
            int(env, out)?,
            int(env, err)?,
        )?;
        Ok(undefined(env))
    })();
    answer(env, result)
}

unsafe extern "C" fn js_drop_sockets(env: napi_env, info: napi_callback_info) -> napi_value {
    let [keep] = args::<1>(env, info);
    let result = int(env, keep)
        .and_then(drop_sockets)
        .map(|()| undefined(env));
    answer(env, result)
}

unsafe extern "C" fn js_connect(env: napi_env, info: napi_callback_info) -> napi_value {
    let [port] = args::<1>(env, info);
    let result = int(env, port)
        .and_then(|p| u16::try_from(p).map_err(|_| "bad port".to_owned()))
        .and_then(connect_local)
        .map(|fd| number(env, fd));
    answer(env, result)
}

unsafe extern "C" fn js_rewrite_environ(env: napi_env, info: napi_callback_info) -> napi_value {
    let [buffer] = args::<1>(env, info);
    let mut data = null_mut();
    let mut len = 0;
    let result = if napi_get_buffer_info(env, buffer, &mut data, &mut len) != 0 {
        Err("expected a Buffer".to_owned())
    } else {
        let block = if len == 0 {
            &[][..]
        } else {
            std::slice::from_raw_parts(data.cast::<u8>(), len)
        };
        rewrite_environ_block(block).map(|()| undefined(env))
    };
    answer(env, result)
}

unsafe extern "C" fn js_exit(env: napi_env, info: napi_callback_info) -> napi_value {
    let [code] = args::<1>(env, info);
    _exit(int(env, code).unwrap_or(1))
}

unsafe extern "C" fn js_getpid(env: napi_env, _info: napi_callback_info) -> napi_value {
    // The pid in the process's own pid namespace (Node's `process.pid` is fixed at start).
    number(env, getpid())
}

/// The addon's entry point, found by Node when it loads the file.
#[no_mangle]
pub unsafe extern "C" fn napi_register_module_v1(env: napi_env, exports: napi_value) -> napi_value {
    let functions: [(&std::ffi::CStr, napi_callback); 10] = [
        (c"rewriteEnviron", js_rewrite_environ),
        (c"connect", js_connect),
        (c"exit", js_exit),
        (c"serve", js_serve),
        (c"receive", js_receive),
        (c"send", js_send),
        (c"close", js_close),
        (c"enterJail", js_enter_jail),
        (c"dropSockets", js_drop_sockets),
        (c"getpid", js_getpid),
    ];
    for (name, cb) in functions {
        let mut f = null_mut();
        napi_create_function(env, name.as_ptr(), usize::MAX, cb, null_mut(), &mut f);
        napi_set_named_property(env, exports, name.as_ptr(), f);
    }
    exports
}
