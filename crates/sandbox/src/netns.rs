//! A network namespace with only loopback, and listeners already bound inside it.

use std::fs::File;
use std::net::TcpListener;
use std::os::fd::{FromRawFd, OwnedFd};

use crate::{Error, Result, os};

/// Creates a fresh network namespace, brings its loopback up and binds `127.0.0.1:PORT` in it
/// for each port. Returns a handle on the namespace (for the sandbox to join) and the
/// listeners, which keep working from the worker's own namespace.
pub(crate) fn create_with_listeners(ports: Vec<u16>) -> Result<(OwnedFd, Vec<TcpListener>)> {
    // Namespaces belong to threads: a short-lived thread enters the new namespace so that the
    // rest of the process never leaves its own.
    std::thread::Builder::new()
        .name("nimbus-netns".into())
        .spawn(move || -> Result<(OwnedFd, Vec<TcpListener>)> {
            // SAFETY: unshare has no memory-safety preconditions; it moves only this thread.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(os("creating a network namespace")(
                    std::io::Error::last_os_error(),
                ));
            }
            loopback_up()?;
            let mut listeners = Vec::with_capacity(ports.len());
            for port in ports {
                listeners.push(
                    TcpListener::bind(("127.0.0.1", port))
                        .map_err(os("binding a listener in the sandbox's namespace"))?,
                );
            }
            let ns = File::open("/proc/thread-self/ns/net")
                .map_err(os("opening the network namespace"))?;
            Ok((OwnedFd::from(ns), listeners))
        })
        .map_err(os("starting the namespace thread"))?
        .join()
        .map_err(|_| Error::Unsupported("the namespace thread panicked".into()))?
}

/// Runs `work` on a short-lived thread inside the network namespace of process `pid`, so that
/// sockets it makes belong to that namespace while the rest of the process stays in its own.
pub(crate) fn within<T: Send + 'static>(
    pid: u32,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let ns = File::open(format!("/proc/{pid}/ns/net"))
        .map_err(os("opening the sandbox's network namespace"))?;
    std::thread::Builder::new()
        .name("nimbus-netns".into())
        .spawn(move || -> Result<T> {
            // SAFETY: setns on a namespace descriptor we own; it moves only this thread.
            if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) } != 0
            {
                return Err(os("entering the sandbox's network namespace")(
                    std::io::Error::last_os_error(),
                ));
            }
            work()
        })
        .map_err(os("starting the namespace thread"))?
        .join()
        .map_err(|_| Error::Unsupported("the namespace thread panicked".into()))?
}

/// Brings loopback up in the network namespace of `pid` and binds `127.0.0.1:PORT` there for
/// each port.
pub(crate) fn listeners_in(pid: u32, ports: Vec<u16>) -> Result<Vec<TcpListener>> {
    within(pid, move || {
        loopback_up()?;
        ports
            .into_iter()
            .map(|port| {
                TcpListener::bind(("127.0.0.1", port))
                    .map_err(os("binding a listener in the sandbox's namespace"))
            })
            .collect()
    })
}

fn loopback_up() -> Result<()> {
    // SAFETY: socket has no preconditions; the result is checked below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(os("opening a socket for loopback")(
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: fd was just returned by socket and is owned by nothing else.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let _ = &socket;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: the request names an interface and has room for the flags the kernel writes.
    if unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut request) } != 0 {
        return Err(os("reading loopback flags")(std::io::Error::last_os_error()));
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe {
        request.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: as above; SIOCSIFFLAGS only reads the request.
    if unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS, &request) } != 0 {
        return Err(os("bringing loopback up")(std::io::Error::last_os_error()));
    }
    Ok(())
}
