//! The service's listening sockets, polled by the dispatcher loop itself.
//!
//! Accepting in the loop that dispatches (rather than in a task per listener feeding a
//! channel) saves a task wakeup and a channel hop on every connection's path.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::io::unix::AsyncFd;

use crate::stub::event::Accepted;

/// Listeners and the address each is bound to, when it is one address.
pub struct Listeners {
    all: Vec<(AsyncFd<TcpListener>, Option<SocketAddr>)>,
    /// Where the next poll starts, so a flood on one address cannot starve the others.
    next: usize,
}

impl Listeners {
    pub fn new(listeners: Vec<AsyncFd<TcpListener>>) -> Listeners {
        let all = listeners
            .into_iter()
            .map(|l| {
                // A listener bound to one address (the usual case in an endpoint's namespace)
                // tells us the local address without a getsockname per connection.
                let bound = l
                    .get_ref()
                    .local_addr()
                    .ok()
                    .filter(|a| !a.ip().is_unspecified());
                (l, bound)
            })
            .collect();
        Listeners { all, next: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// Closes every listener: from now on the kernel refuses new clients.
    pub fn close(&mut self) {
        self.all.clear();
    }

    /// Accepts one connection from whichever listener has one.
    pub async fn accept(&mut self) -> io::Result<Accepted> {
        std::future::poll_fn(|cx| self.poll_accept(cx)).await
    }

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Accepted>> {
        let n = self.all.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            let (listener, bound) = &self.all[i];
            loop {
                let mut guard = match listener.poll_read_ready(cx) {
                    Poll::Ready(Ok(g)) => g,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => break,
                };
                match guard.try_io(|l| l.get_ref().accept()) {
                    Ok(Ok((stream, remote))) => {
                        self.next = (i + 1) % n;
                        let at = Instant::now();
                        let at_unix_ns = SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .map(|d| d.as_nanos() as u64)
                            .unwrap_or(0);
                        let local = match bound {
                            Some(addr) => *addr,
                            None => stream.local_addr().unwrap_or(remote),
                        };
                        return Poll::Ready(Ok(Accepted {
                            stream,
                            remote,
                            local,
                            at,
                            at_unix_ns,
                        }));
                    }
                    Ok(Err(e)) => return Poll::Ready(Err(e)),
                    // Readiness was cleared; polling again registers our waker.
                    Err(_would_block) => continue,
                }
            }
        }
        Poll::Pending
    }
}
