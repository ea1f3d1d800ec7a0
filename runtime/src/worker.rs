//! The worker side of the contract: register with the stub, receive connections, report done.
//!
//! Deliberately synchronous (std threads, blocking sockets): a worker is a small program
//! that should start in a millisecond and not need a runtime to take one connection.

use std::io;
use std::net::{TcpStream, UdpSocket};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::frame::{Frame, FrameError, Handoff, MAX_FRAME};
use crate::seqpacket::SeqPacket;

/// Environment variable naming the stub's worker socket; set by the backend that starts us.
pub const ENV_SOCKET: &str = "WEPOQ_STUB_SOCKET";
/// Environment variable carrying the id the stub expects this worker to register with.
pub const ENV_WORKER_ID: &str = "WEPOQ_WORKER_ID";
/// Environment variable carrying the per-worker concurrency limit.
pub const ENV_CONCURRENCY: &str = "WEPOQ_CONCURRENCY";

/// Why a worker could not register or receive.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("environment variable {var} is not set")]
    Env { var: &'static str },
    #[error("cannot connect to stub socket {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("stub socket i/o failed")]
    Io(#[from] io::Error),
    #[error("bad frame from stub")]
    Frame(#[from] FrameError),
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
}

/// A registered worker.
#[derive(Debug, Clone)]
pub struct Worker {
    socket: Arc<SeqPacket>,
    id: String,
    concurrency: u32,
}

/// One connection handed to this worker. Dropping it closes the socket and reports done.
/// For a datagram handoff (`handoff().datagram`) it is the service's bound UDP socket
/// instead ([`Connection::datagram`]): serve it until the stub stops the worker.
#[derive(Debug)]
pub struct Connection {
    stream: Option<TcpStream>,
    datagram: Option<UdpSocket>,
    handoff: Handoff,
    socket: Arc<SeqPacket>,
}

impl Worker {
    /// Registers using the environment a backend sets: socket path, worker id, concurrency.
    pub fn from_env() -> Result<Worker, WorkerError> {
        let path = std::env::var_os(ENV_SOCKET).ok_or(WorkerError::Env { var: ENV_SOCKET })?;
        let id =
            std::env::var(ENV_WORKER_ID).unwrap_or_else(|_| format!("pid-{}", std::process::id()));
        let concurrency = std::env::var(ENV_CONCURRENCY)
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(1);
        Worker::connect(Path::new(&path), &id, concurrency)
    }

    /// Connects to the stub at `path` and registers as `id`, taking `concurrency` connections.
    pub fn connect(path: &Path, id: &str, concurrency: u32) -> Result<Worker, WorkerError> {
        let socket = SeqPacket::connect(path).map_err(|source| WorkerError::Connect {
            path: path.to_owned(),
            source,
        })?;
        let hello = Frame::Hello {
            worker_id: id.to_owned(),
            concurrency,
        };
        socket.send(&hello.to_bytes()?, None)?;
        Ok(Worker {
            socket: Arc::new(socket),
            id: id.to_owned(),
            concurrency,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn concurrency(&self) -> u32 {
        self.concurrency
    }

    /// Waits for the next connection; `None` once the stub closed the socket (stop or exit).
    pub fn accept(&self) -> Result<Option<Connection>, WorkerError> {
        let mut buf = [0u8; MAX_FRAME];
        let (n, fd) = match self.socket.recv(&mut buf) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return Ok(None);
        }
        let Frame::Handoff(handoff) = Frame::decode(&buf[..n])? else {
            return Err(WorkerError::Protocol("expected a handoff"));
        };
        let fd: OwnedFd = fd.ok_or(WorkerError::Protocol("handoff without a socket"))?;
        // The stub hands blocking sockets (it accepts without SOCK_NONBLOCK), so no fcntl here:
        // one syscall less on every connection's path.
        let (stream, datagram) = match handoff.datagram {
            false => (Some(TcpStream::from(fd)), None),
            true => (None, Some(UdpSocket::from(fd))),
        };
        Ok(Some(Connection {
            stream,
            datagram,
            handoff,
            socket: self.socket.clone(),
        }))
    }

    /// Serves connections until the stub goes away: inline when concurrency is 1, otherwise
    /// one thread per connection (the stub, not this loop, enforces the limit).
    pub fn serve<F>(self, handler: F) -> Result<(), WorkerError>
    where
        F: Fn(&mut Connection) + Send + Sync + 'static,
    {
        let handler = Arc::new(handler);
        while let Some(mut conn) = self.accept()? {
            if self.concurrency <= 1 {
                handler(&mut conn);
            } else {
                let handler = handler.clone();
                std::thread::spawn(move || handler(&mut conn));
            }
        }
        Ok(())
    }

    /// The control socket, for callers that multiplex it themselves.
    pub fn socket(&self) -> &SeqPacket {
        &self.socket
    }
}

impl Connection {
    pub fn handoff(&self) -> &Handoff {
        &self.handoff
    }

    /// The TCP connection. Panics for a datagram handoff or after `take_stream`.
    pub fn stream(&mut self) -> &mut TcpStream {
        self.stream
            .as_mut()
            .expect("a TCP handoff, stream not taken")
    }

    /// The service's UDP socket, for a datagram handoff.
    pub fn datagram(&self) -> Option<&UdpSocket> {
        self.datagram.as_ref()
    }

    /// Takes the socket out whatever its kind, e.g. to pass it to a child.
    pub fn take_fd(&mut self) -> Option<OwnedFd> {
        match (self.stream.take(), self.datagram.take()) {
            (Some(s), _) => Some(s.into()),
            (None, Some(d)) => Some(d.into()),
            (None, None) => None,
        }
    }

    /// Takes the socket out, e.g. to pass it to a child; done is still reported on drop.
    pub fn take_stream(&mut self) -> Option<TcpStream> {
        self.stream.take()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Report before closing: a client that sees the close may connect again at once, and
        // the stub should know by then that we have room, or it would start a needless worker.
        // A failed send means the stub is gone; it no longer counts our capacity anyway.
        let _ = self
            .socket
            .send(&crate::frame::done_bytes(self.handoff.conn_id), None);
        drop(self.stream.take());
    }
}

impl AsFd for Worker {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.socket.as_fd()
    }
}
