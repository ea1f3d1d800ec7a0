//! The service's listening sockets, polled by the dispatcher thread itself.
//!
//! Accepting in the loop that dispatches (rather than in a task per listener feeding a
//! channel) saves a wakeup and a channel hop on every connection's path.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::stub::event::Accepted;

/// Listeners and the address each is bound to, when it is one address.
pub struct Listeners {
    all: Vec<(TcpListener, Option<SocketAddr>)>,
}

impl Listeners {
    /// Takes non-blocking listeners.
    pub fn new(listeners: Vec<TcpListener>) -> Listeners {
        let all = listeners
            .into_iter()
            .map(|l| {
                // A listener bound to one address (the usual case in an endpoint's namespace)
                // tells us the local address without a getsockname per connection.
                let bound = l.local_addr().ok().filter(|a| !a.ip().is_unspecified());
                (l, bound)
            })
            .collect();
        Listeners { all }
    }

    pub fn len(&self) -> usize {
        self.all.len()
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    pub fn raw_fd(&self, i: usize) -> RawFd {
        self.all[i].0.as_raw_fd()
    }

    /// Closes every listener: from now on the kernel refuses new clients.
    pub fn close(&mut self) {
        self.all.clear();
    }

    /// Accepts one connection from listener `i` (one `accept4`, close-on-exec, blocking
    /// socket); `Ok(None)` when none is waiting.
    pub fn accept(&self, i: usize) -> io::Result<Option<Accepted>> {
        let Some((listener, bound)) = self.all.get(i) else {
            return Ok(None);
        };
        match listener.accept() {
            Ok((stream, remote)) => {
                let at = Instant::now();
                let at_unix_ns = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0);
                let local = match bound {
                    Some(addr) => *addr,
                    None => stream.local_addr().unwrap_or(remote),
                };
                Ok(Some(Accepted {
                    stream,
                    remote,
                    local,
                    at,
                    at_unix_ns,
                }))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(None),
            // The client gave up between the handshake and our accept: nothing to do.
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => Ok(None),
            Err(e) => Err(e),
        }
    }
}
