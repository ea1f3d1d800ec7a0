//! A SOCK_SEQPACKET unix socket that carries frames and, with a handoff, one file descriptor.
//!
//! Blocking or not is the caller's choice: the stub makes its ends non-blocking and drives
//! them through tokio's `AsyncFd`, workers keep theirs blocking. Every received descriptor is
//! owned at once and arrives close-on-exec, so nothing leaks into a program a shim execs.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::sys::socket::{
    self, AddressFamily, Backlog, SockFlag, SockType, UnixAddr, UnixCredentials, sockopt,
};

/// One end of a SEQPACKET unix socket (listening or connected).
#[derive(Debug)]
pub struct SeqPacket {
    fd: OwnedFd,
}

/// Room for a few descriptors although a frame carries at most one: a peer that sends more
/// must not truncate the control message (the kernel would drop, and we could not close,
/// the ones that did not fit).
const MAX_FDS: usize = 4;

impl SeqPacket {
    /// Binds and listens at `path`, replacing a stale socket file left by a previous run.
    pub fn listen(path: &Path) -> io::Result<SeqPacket> {
        let fd = new_socket(SockFlag::SOCK_NONBLOCK)?;
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let addr = UnixAddr::new(path).map_err(io::Error::from)?;
        socket::bind(fd.as_raw_fd(), &addr).map_err(io::Error::from)?;
        socket::listen(&fd, Backlog::new(1024).map_err(io::Error::from)?)
            .map_err(io::Error::from)?;
        Ok(SeqPacket { fd })
    }

    /// Connects to a listening socket at `path`; the result is blocking.
    pub fn connect(path: &Path) -> io::Result<SeqPacket> {
        let fd = new_socket(SockFlag::empty())?;
        let addr = UnixAddr::new(path).map_err(io::Error::from)?;
        socket::connect(fd.as_raw_fd(), &addr).map_err(io::Error::from)?;
        Ok(SeqPacket { fd })
    }

    /// A connected pair of blocking sockets, for tests.
    #[cfg(test)]
    pub(crate) fn pair() -> io::Result<(SeqPacket, SeqPacket)> {
        let (a, b) = socket::socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        Ok((SeqPacket { fd: a }, SeqPacket { fd: b }))
    }

    /// Accepts one peer; the accepted end is non-blocking.
    pub fn accept(&self) -> io::Result<SeqPacket> {
        let raw = socket::accept4(
            self.fd.as_raw_fd(),
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        )
        .map_err(io::Error::from)?;
        // SAFETY: accept4 just returned this descriptor and nothing else owns it.
        Ok(SeqPacket {
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
        })
    }

    /// The uid, gid and pid of the peer as the kernel saw them at connect time.
    pub fn peer_credentials(&self) -> io::Result<UnixCredentials> {
        socket::getsockopt(&self.fd, sockopt::PeerCredentials).map_err(io::Error::from)
    }

    /// Sends one message, with `fd` attached when given. The caller keeps its copy of `fd`.
    ///
    /// Straight `sendmsg(2)` with the control message on the stack: this runs once per
    /// connection in the stub, so it allocates nothing.
    pub fn send(&self, bytes: &[u8], fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
        let mut iov = libc::iovec {
            iov_base: bytes.as_ptr() as *mut libc::c_void,
            iov_len: bytes.len(),
        };
        let mut control = ControlBuf::new();
        // SAFETY: an all-zero msghdr is a valid empty message.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if let Some(fd) = fd {
            // SAFETY: the buffer is aligned for cmsghdr and has room for CMSG_SPACE of one
            // descriptor; CMSG_FIRSTHDR of a message with that buffer is non-null.
            unsafe {
                let space = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32);
                msg.msg_control = control.as_mut_ptr();
                msg.msg_controllen = space as _;
                let c = libc::CMSG_FIRSTHDR(&msg);
                (*c).cmsg_level = libc::SOL_SOCKET;
                (*c).cmsg_type = libc::SCM_RIGHTS;
                (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<RawFd>(), fd.as_raw_fd());
            }
        }
        // SAFETY: `msg` points at live buffers for the duration of the call.
        let sent = unsafe { libc::sendmsg(self.fd.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        if sent as usize != bytes.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short seqpacket send",
            ));
        }
        Ok(())
    }

    /// Receives one message into `buf`. Returns its length (0 means the peer closed) and the
    /// descriptor it carried, if any. Extra descriptors are closed, not leaked (also when the
    /// control message was truncated: the ones the kernel did install are owned and closed).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut control = ControlBuf::new();
        // SAFETY: an all-zero msghdr is a valid empty message.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr();
        msg.msg_controllen = CONTROL_SPACE as _;
        // SAFETY: `msg` points at live buffers for the duration of the call.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut received: Option<OwnedFd> = None;
        let mut extra = Vec::new();
        // SAFETY: the kernel filled msg_control with msg_controllen bytes of well-formed
        // control messages; CMSG_FIRSTHDR/NXTHDR stay within them.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(c).cast::<RawFd>();
                    let len = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                    for k in 0..len / std::mem::size_of::<RawFd>() {
                        // The kernel installed these descriptors for us just now.
                        let owned = OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(k)));
                        if received.is_none() {
                            received = Some(owned);
                        } else {
                            extra.push(owned);
                        }
                    }
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        drop(extra);
        if msg.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "control message truncated",
            ));
        }
        if msg.msg_flags & libc::MSG_TRUNC != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "message longer than a frame",
            ));
        }
        Ok((n as usize, received))
    }
}

/// Bytes of control buffer for `MAX_FDS` descriptors.
const CONTROL_SPACE: usize = 64;
const _: () = assert!(
    // CMSG_SPACE(4 * MAX_FDS) = 16-byte header + 16 bytes of descriptors, rounded to 8.
    16 + std::mem::size_of::<RawFd>() * MAX_FDS <= CONTROL_SPACE
);

/// A control-message buffer on the stack, aligned for `cmsghdr`.
#[repr(C, align(8))]
struct ControlBuf([u8; CONTROL_SPACE]);

impl ControlBuf {
    fn new() -> ControlBuf {
        ControlBuf([0; CONTROL_SPACE])
    }

    fn as_mut_ptr(&mut self) -> *mut libc::c_void {
        self.0.as_mut_ptr().cast()
    }
}

fn new_socket(flags: SockFlag) -> io::Result<OwnedFd> {
    socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        flags | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io::Error::from)
}

impl AsRawFd for SeqPacket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for SeqPacket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_descriptor_crosses_and_stays_usable() {
        let dir = std::env::temp_dir().join(format!("wepoq-sp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let listener = SeqPacket::listen(&path).unwrap();
        let client = SeqPacket::connect(&path).unwrap();
        let server = loop {
            match listener.accept() {
                Ok(s) => break s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(
            server.peer_credentials().unwrap().pid(),
            std::process::id() as i32
        );

        let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        server.send(b"hi", Some(b.as_fd())).unwrap();
        drop(b);
        let mut buf = [0u8; 16];
        let (n, fd) = client.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hi");
        let mut b = std::os::unix::net::UnixStream::from(fd.expect("an fd"));
        a.write_all(b"x").unwrap();
        let mut one = [0u8; 1];
        b.read_exact(&mut one).unwrap();
        assert_eq!(&one, b"x");

        drop(server);
        assert_eq!(
            client.recv(&mut buf).unwrap().0,
            0,
            "closed peer reads as 0"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
