//! Just enough netlink for the egress path: messages with nested attributes, sent on a
//! `NETLINK_ROUTE` or `NETLINK_NETFILTER` socket, and the kernel's acknowledgements read back.
//! rtnetlink attributes are in host byte order; nf_tables' integers are big-endian, which the
//! callers encode themselves.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::{Error, Result, os};

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
pub(crate) const NLM_F_REQUEST: u16 = 0x1;
pub(crate) const NLM_F_ACK: u16 = 0x4;
pub(crate) const NLM_F_EXCL: u16 = 0x200;
pub(crate) const NLM_F_CREATE: u16 = 0x400;
pub(crate) const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;

/// One netlink message being built: a header, a fixed family header, then attributes.
pub(crate) struct Message {
    buf: Vec<u8>,
    /// Where each open nested attribute starts.
    open: Vec<usize>,
}

impl Message {
    pub(crate) fn new(kind: u16, flags: u16, family_header: &[u8]) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // sequence, set when sent
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
        buf.extend_from_slice(family_header);
        pad(&mut buf);
        Self {
            buf,
            open: Vec::new(),
        }
    }

    pub(crate) fn attr(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        let len = 4 + value.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(value);
        pad(&mut self.buf);
        self
    }

    /// A NUL-terminated string attribute.
    pub(crate) fn str(&mut self, kind: u16, value: &str) -> &mut Self {
        let mut bytes = value.as_bytes().to_vec();
        bytes.push(0);
        self.attr(kind, &bytes)
    }

    pub(crate) fn u32_ne(&mut self, kind: u16, value: u32) -> &mut Self {
        self.attr(kind, &value.to_ne_bytes())
    }

    pub(crate) fn u32_be(&mut self, kind: u16, value: u32) -> &mut Self {
        self.attr(kind, &value.to_be_bytes())
    }

    /// Opens a nested attribute; [`Message::end`] closes it.
    pub(crate) fn begin(&mut self, kind: u16) -> &mut Self {
        self.open.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }

    /// Appends raw bytes inside the open attribute (a family header inside a nest).
    pub(crate) fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        pad(&mut self.buf);
        self
    }

    pub(crate) fn end(&mut self) -> &mut Self {
        if let Some(start) = self.open.pop() {
            let len = (self.buf.len() - start) as u16;
            self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    fn finish(mut self, seq: u32) -> Vec<u8> {
        while !self.open.is_empty() {
            self.end();
        }
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

fn pad(buf: &mut Vec<u8>) {
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

/// A netlink socket of one protocol, in the network namespace of the thread that opened it.
pub(crate) struct Socket {
    fd: OwnedFd,
    seq: u32,
}

impl Socket {
    pub(crate) fn open(protocol: i32) -> Result<Self> {
        // SAFETY: socket has no memory-safety preconditions; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                protocol,
            )
        };
        if fd < 0 {
            return Err(os("opening a netlink socket")(
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: fd was just returned by socket and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd, seq: 1 })
    }

    /// Sends `messages` in one datagram and waits for the kernel's answer to each that asked
    /// for an acknowledgement; the first error fails the whole call, naming `what`.
    pub(crate) fn request(&mut self, what: &str, messages: Vec<Message>) -> Result<()> {
        let mut out = Vec::new();
        let mut expected = Vec::new();
        for m in messages {
            self.seq = self.seq.wrapping_add(1);
            let flags = u16::from_ne_bytes([m.buf[6], m.buf[7]]);
            if flags & NLM_F_ACK != 0 {
                expected.push(self.seq);
            }
            out.extend_from_slice(&m.finish(self.seq));
        }
        // SAFETY: sockaddr_nl is plain old data; zero is a valid value (the kernel's address).
        let mut address: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        address.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: out and address are valid for the lengths passed.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                out.as_ptr().cast(),
                out.len(),
                0,
                (&raw const address).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(os(format!("sending netlink messages ({what})"))(
                std::io::Error::last_os_error(),
            ));
        }
        let mut buf = vec![0u8; 32 * 1024];
        while !expected.is_empty() {
            // SAFETY: buf is valid for its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(os(format!("reading netlink answers ({what})"))(
                    std::io::Error::last_os_error(),
                ));
            }
            let mut at = 0usize;
            let n = n as usize;
            while at + NLMSG_HDRLEN <= n {
                let len =
                    u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap_or_default()) as usize;
                let kind = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
                let seq = u32::from_ne_bytes(buf[at + 8..at + 12].try_into().unwrap_or_default());
                if len < NLMSG_HDRLEN || at + len > n {
                    break;
                }
                if kind == NLMSG_ERROR && len >= NLMSG_HDRLEN + 4 {
                    let code = i32::from_ne_bytes(
                        buf[at + NLMSG_HDRLEN..at + NLMSG_HDRLEN + 4]
                            .try_into()
                            .unwrap_or_default(),
                    );
                    if code != 0 {
                        return Err(Error::Os {
                            what: what.to_owned(),
                            source: std::io::Error::from_raw_os_error(-code),
                        });
                    }
                    expected.retain(|s| *s != seq);
                }
                at += len.next_multiple_of(4);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_carry_their_length_and_padding() {
        let mut m = Message::new(16, NLM_F_REQUEST, &[0u8; 16]);
        m.str(3, "nb-1").begin(18).str(1, "veth").end().u32_be(5, 7);
        let bytes = m.finish(9);
        assert_eq!(
            u32::from_ne_bytes(bytes[0..4].try_into().unwrap()) as usize,
            bytes.len()
        );
        assert_eq!(u32::from_ne_bytes(bytes[8..12].try_into().unwrap()), 9);
        // "nb-1\0" is 5 bytes: a 9-byte attribute padded to 12.
        let first = NLMSG_HDRLEN + 16;
        assert_eq!(u16::from_ne_bytes([bytes[first], bytes[first + 1]]), 9);
        let nest = first + 12;
        assert_eq!(
            u16::from_ne_bytes([bytes[nest + 2], bytes[nest + 3]]),
            18 | NLA_F_NESTED
        );
        // The nest holds one attribute of 4 + "veth\0" = 9 bytes, padded: 4 + 12.
        assert_eq!(u16::from_ne_bytes([bytes[nest], bytes[nest + 1]]), 16);
        assert_eq!(&bytes[bytes.len() - 4..], &7u32.to_be_bytes());
    }
}
