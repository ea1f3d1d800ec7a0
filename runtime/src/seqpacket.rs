//! A SOCK_SEQPACKET unix socket that carries frames and, with a handoff, one file descriptor.
//!
//! Blocking or not is the caller's choice: the stub makes its ends non-blocking and drives
//! them through tokio's `AsyncFd`, workers keep theirs blocking. Every received descriptor is
//! owned at once and arrives close-on-exec, so nothing leaks into a program a shim execs.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::sys::socket::{
    self, AddressFamily, Backlog, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag,
    SockType, UnixAddr, UnixCredentials, sockopt,
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
    pub fn send(&self, bytes: &[u8], fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
        let iov = [IoSlice::new(bytes)];
        let raw: [RawFd; 1];
        let cmsgs: &[ControlMessage] = match fd {
            Some(fd) => {
                raw = [fd.as_raw_fd()];
                &[ControlMessage::ScmRights(&raw)]
            }
            None => &[],
        };
        let sent = socket::sendmsg::<()>(
            self.fd.as_raw_fd(),
            &iov,
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map_err(io::Error::from)?;
        if sent != bytes.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short seqpacket send",
            ));
        }
        Ok(())
    }

    /// Receives one message into `buf`. Returns its length (0 means the peer closed) and the
    /// descriptor it carried, if any. Extra descriptors are closed, not leaked.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
        let mut iov = [IoSliceMut::new(buf)];
        let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
        let msg = socket::recvmsg::<()>(
            self.fd.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        let mut received: Option<OwnedFd> = None;
        let mut extra = Vec::new();
        let truncated_data = msg.flags.contains(MsgFlags::MSG_TRUNC);
        let cmsgs = msg.cmsgs();
        let truncated_cmsg = cmsgs.is_err();
        if let Ok(cmsgs) = cmsgs {
            for c in cmsgs {
                if let ControlMessageOwned::ScmRights(fds) = c {
                    for raw in fds {
                        // SAFETY: the kernel installed these descriptors for us just now.
                        let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                        if received.is_none() {
                            received = Some(owned);
                        } else {
                            extra.push(owned);
                        }
                    }
                }
            }
        }
        let bytes = msg.bytes;
        drop(extra);
        if truncated_cmsg {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "control message truncated",
            ));
        }
        if truncated_data {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "message longer than a frame",
            ));
        }
        Ok((bytes, received))
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
