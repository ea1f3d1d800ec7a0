//! The socket-activation stub: accept on the service's addresses, hand each connection to a
//! warm worker over SCM_RIGHTS, start and sweep workers through a backend.
//!
//! Architecture invariant: the stub never reads or writes a client's payload; the only bytes
//! it ever writes to a client are its own refusals.

pub mod admin;
pub mod control;
pub mod dispatcher;
pub mod event;
pub mod listeners;
pub mod poller;
pub mod refusal;
pub mod status;

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use crate::backend::WorkerBackend;
use crate::metrics::Metrics;
use crate::record::RecordSink;
use crate::seqpacket::SeqPacket;
use control::CredentialPolicy;
use dispatcher::Dispatcher;
use event::Event;
use listeners::Listeners;
use poller::{Poller, Ticker, Waker};

/// What the service speaks, which decides how the stub refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// Refuse with an HTTP status (429 or 503) and Retry-After.
    Http,
    /// Refuse by closing the connection.
    Tcp,
}

/// Everything the stub is told.
#[derive(Debug, Clone)]
pub struct StubConfig {
    /// TCP addresses to accept on.
    pub listen: Vec<SocketAddr>,
    /// UDP addresses to bind and hand whole to a worker on the first datagram.
    pub udp: Vec<SocketAddr>,
    pub fqdn: String,
    pub protocol: Protocol,
    /// Directory for the worker socket; created 0700.
    pub socket_dir: PathBuf,
    pub policy: CredentialPolicy,
    /// Connections one worker takes at a time.
    pub concurrency: u32,
    /// Connections waiting for a worker before the stub refuses.
    pub queue_limit: usize,
    pub min_workers: usize,
    pub max_workers: usize,
    /// Idle this long, a worker is marked; marked and still idle `sweep_grace` later, stopped.
    pub idle_timeout: Duration,
    pub sweep_grace: Duration,
    /// Idle this long, a worker is paused through the backend (no CPU until a connection
    /// comes for it); zero never pauses.
    pub pause_after: Duration,
    /// Longest wait in the queue.
    pub queue_timeout: Duration,
    /// The deadline given to the worker, counted from accept.
    pub conn_timeout: Duration,
    /// Longest time from asking for a worker to its registration.
    pub start_timeout: Duration,
    /// Longest graceful drain on shutdown.
    pub drain_timeout: Duration,
    pub admin: Option<SocketAddr>,
    /// Where per-connection records go; `-` is stdout.
    pub records: Option<PathBuf>,
    /// Kept up to date with whether the stub listens and how many workers are registered,
    /// for whoever waits for it to be ready (`wepoq apply`, from the host).
    pub status_file: Option<PathBuf>,
}

impl Default for StubConfig {
    fn default() -> StubConfig {
        StubConfig {
            listen: Vec::new(),
            udp: Vec::new(),
            fqdn: "service.local".into(),
            protocol: Protocol::Tcp,
            socket_dir: PathBuf::from("/run/wepoq"),
            policy: CredentialPolicy {
                uids: vec![nix::unistd::geteuid().as_raw()],
                gids: Vec::new(),
            },
            concurrency: 1,
            queue_limit: 1024,
            min_workers: 0,
            max_workers: 8,
            idle_timeout: Duration::from_secs(60),
            sweep_grace: Duration::from_secs(5),
            pause_after: Duration::ZERO,
            queue_timeout: Duration::from_secs(10),
            conn_timeout: Duration::from_secs(60),
            start_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
            admin: None,
            records: None,
            status_file: None,
        }
    }
}

impl StubConfig {
    pub fn socket_path(&self) -> PathBuf {
        self.socket_dir.join("stub.sock")
    }

    /// How often timers are looked at: fine enough for the shortest configured timeout.
    fn tick(&self) -> Duration {
        let pause = match self.pause_after {
            d if d.is_zero() => self.idle_timeout,
            d => d,
        };
        (self.idle_timeout.min(self.sweep_grace).min(pause) / 4)
            .clamp(Duration::from_millis(5), Duration::from_millis(100))
    }
}

/// What the stub bound, for whoever started it (tests bind port 0).
#[derive(Debug, Clone)]
pub struct Ready {
    pub listen: Vec<SocketAddr>,
    pub udp: Vec<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub socket: PathBuf,
}

/// Why the stub could not start.
#[derive(Debug, thiserror::Error)]
pub enum StubError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot prepare socket directory {path}")]
    SocketDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot listen on worker socket {path}")]
    WorkerSocket {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot listen on admin address {addr}")]
    Admin {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("dispatcher failed")]
    Dispatch(#[source] io::Error),
    #[error("cannot open records file {path}")]
    Records {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Runs the stub until a shutdown signal and a drain. Call inside a tokio runtime (a
/// current-thread one is enough). The hot path (accept, handoff, done reports) runs on a
/// dedicated thread with a plain level-triggered epoll loop; the runtime keeps the rest
/// (worker registration, backend calls, signals, the admin endpoint, lingering refusals).
pub async fn run(
    config: StubConfig,
    backend: Arc<dyn WorkerBackend>,
    ready: impl FnOnce(&Ready),
) -> Result<(), StubError> {
    if config.listen.is_empty() && config.udp.is_empty() {
        return Err(StubError::Config("no listen address".into()));
    }
    if config.fqdn.len() > 255 {
        return Err(StubError::Config("fqdn is longer than 255 bytes".into()));
    }
    // Handoffs queue in the worker's socket, which holds at most net.unix.max_dgram_qlen
    // (512 by default) messages; stay well below so a send never meets a full queue.
    if !(1..=256).contains(&config.concurrency) {
        return Err(StubError::Config(
            "concurrency must be between 1 and 256".into(),
        ));
    }
    raise_fd_limit();
    let dir_err = |source| StubError::SocketDir {
        path: config.socket_dir.clone(),
        source,
    };
    std::fs::create_dir_all(&config.socket_dir).map_err(dir_err)?;
    // Workers of our own uid: 0700, only the owner may even reach the socket. Workers of
    // another uid (containers as 65534 behind a root stub): 0711 and a 0777 socket, so they
    // can reach it, and SO_PEERCRED alone decides who registers. Either way SO_PEERCRED
    // then checks who connected.
    let shared = config.policy.admits_others();
    let dir_mode = if shared { 0o711 } else { 0o700 };
    std::fs::set_permissions(
        &config.socket_dir,
        std::fs::Permissions::from_mode(dir_mode),
    )
    .map_err(dir_err)?;
    let socket_path = config.socket_path();
    let worker_listener = SeqPacket::listen(&socket_path)
        .and_then(|l| {
            if shared {
                std::fs::set_permissions(&socket_path, std::fs::Permissions::from_mode(0o777))?;
            }
            Ok(l)
        })
        .and_then(register)
        .map_err(|source| StubError::WorkerSocket {
            path: socket_path.clone(),
            source,
        })?;

    let mut listeners = Vec::new();
    let mut bound = Vec::new();
    let mut bound_udp = Vec::new();
    for addr in &config.listen {
        let listener = bind(*addr).map_err(|source| StubError::Listen {
            addr: *addr,
            source,
        })?;
        bound.push(listener.local_addr().unwrap_or(*addr));
        listeners.push(listener);
    }
    let mut udp = Vec::new();
    for addr in &config.udp {
        // Blocking, as the worker wants it (the flag is shared with its copy); the stub only
        // polls it and never reads.
        let socket = bind_udp(*addr).map_err(|source| StubError::Listen {
            addr: *addr,
            source,
        })?;
        bound_udp.push(socket.local_addr().unwrap_or(*addr));
        udp.push(socket);
    }
    let admin = match config.admin {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| StubError::Admin { addr, source })?,
        ),
        None => None,
    };
    let records = match &config.records {
        None => RecordSink::none(),
        Some(p) if p.as_os_str() == "-" => RecordSink::new(Box::new(io::stdout())),
        Some(p) => RecordSink::new(Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|source| StubError::Records {
                    path: p.clone(),
                    source,
                })?,
        )),
    };

    let metrics = Arc::new(Metrics::default());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(control::accept_workers(
        worker_listener,
        config.policy.clone(),
        tx.clone(),
        metrics.clone(),
    ));
    let admin_addr = admin.as_ref().and_then(|a| a.local_addr().ok());
    if let Some(admin) = admin {
        tasks.spawn(admin::serve(admin, metrics.clone()));
    }
    tasks.spawn(signals(tx.clone()));

    let first = config
        .listen
        .first()
        .or(config.udp.first())
        .copied()
        .expect("checked above");
    let io_err = |source| StubError::Listen {
        addr: first,
        source,
    };
    let poller = Arc::new(Poller::new().map_err(io_err)?);
    let waker = Arc::new(Waker::new().map_err(io_err)?);
    let ticker = Ticker::new(config.tick()).map_err(io_err)?;
    poller.add(waker.as_raw_fd(), TOKEN_WAKER).map_err(io_err)?;
    poller.add(ticker.as_raw_fd(), TOKEN_TICK).map_err(io_err)?;
    let listeners = Listeners::new(listeners);
    for i in 0..listeners.len() {
        poller
            .add(listeners.raw_fd(i), TOKEN_LISTENER + i as u64)
            .map_err(io_err)?;
    }
    // Rare events (registrations, backend reports, shutdown) come from the runtime's tasks
    // through this channel; the eventfd wakes the dispatcher thread for them.
    let (thread_tx, thread_rx) = std::sync::mpsc::channel();
    {
        let waker = waker.clone();
        tasks.spawn(async move {
            while let Some(event) = rx.recv().await {
                if thread_tx.send(event).is_err() {
                    return;
                }
                while let Ok(event) = rx.try_recv() {
                    let _ = thread_tx.send(event);
                }
                waker.wake();
            }
        });
    }

    let config = Arc::new(config);
    let mut dispatcher = Dispatcher::new(config.clone(), backend, tx, metrics, records);
    dispatcher.set_poller(poller.clone());
    dispatcher.set_udp(udp);
    dispatcher.watch_all_udp();
    if let Some(path) = &config.status_file {
        dispatcher.set_status_file(status::StatusFile::new(path.clone()));
    }
    dispatcher.start();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let runtime = tokio::runtime::Handle::current();
    let thread = std::thread::Builder::new()
        .name("wepoq-dispatch".into())
        .spawn(move || {
            // Spawns (backend calls, lingering refusals) go to the caller's runtime.
            let _enter = runtime.enter();
            let result = dispatch_loop(dispatcher, listeners, &poller, &waker, &ticker, thread_rx);
            let _ = done_tx.send(result);
        })
        .map_err(io_err)?;
    ready(&Ready {
        listen: bound,
        udp: bound_udp,
        admin: admin_addr,
        socket: socket_path.clone(),
    });
    let result = done_rx.await;
    let _ = thread.join();
    // Let the stop requests the dispatcher just spawned reach the backend.
    tokio::time::sleep(Duration::from_millis(20)).await;
    tasks.abort_all();
    let _ = std::fs::remove_file(&socket_path);
    match result {
        Ok(Err(e)) => Err(StubError::Dispatch(e)),
        _ => Ok(()),
    }
}

const TOKEN_WAKER: u64 = 0;
const TOKEN_TICK: u64 = 1;
const TOKEN_LISTENER: u64 = 2;

/// The dispatcher thread: one blocking `epoll_wait` per wakeup, then one accept per ready
/// listener and one receive per ready worker socket, done reports before new clients (they
/// free capacity the new clients can use).
fn dispatch_loop(
    mut dispatcher: Dispatcher,
    mut listeners: Listeners,
    poller: &Poller,
    waker: &Waker,
    ticker: &Ticker,
    events: std::sync::mpsc::Receiver<Event>,
) -> io::Result<()> {
    let mut ready = Vec::with_capacity(64);
    let mut accept_from = Vec::new();
    // Set after an accept error such as EMFILE, so a listener that stays ready cannot spin us.
    let mut accept_pause: Option<std::time::Instant> = None;
    loop {
        let timeout = accept_pause.map(|until| {
            until
                .saturating_duration_since(std::time::Instant::now())
                .max(Duration::from_millis(1))
        });
        poller.wait(&mut ready, timeout)?;
        if let Some(until) = accept_pause
            && std::time::Instant::now() >= until
        {
            accept_pause = None;
            for i in 0..listeners.len() {
                let _ = poller.add(listeners.raw_fd(i), TOKEN_LISTENER + i as u64);
            }
        }
        accept_from.clear();
        for &token in &ready {
            match token {
                TOKEN_WAKER => {
                    waker.reset();
                    while let Ok(event) = events.try_recv() {
                        if matches!(event, Event::Shutdown) {
                            // Closing removes them from the poller too.
                            listeners.close();
                        }
                        dispatcher.apply(event);
                    }
                }
                TOKEN_TICK => {
                    ticker.reset();
                    dispatcher.apply(Event::Tick);
                }
                t if t >= dispatcher::WORKER_TOKEN_BASE => dispatcher.worker_readable(t),
                t if t >= dispatcher::UDP_TOKEN_BASE => {
                    dispatcher.datagram_ready((t - dispatcher::UDP_TOKEN_BASE) as usize)
                }
                t => accept_from.push((t - TOKEN_LISTENER) as usize),
            }
        }
        if accept_pause.is_none() {
            for &i in &accept_from {
                match listeners.accept(i) {
                    Ok(Some(conn)) => dispatcher.apply(Event::Accepted(conn)),
                    Ok(None) => {}
                    Err(e) => {
                        eprintln!("wepoq-stub: accept failed: {e}");
                        for i in 0..listeners.len() {
                            poller.remove(listeners.raw_fd(i));
                        }
                        accept_pause = Some(std::time::Instant::now() + Duration::from_millis(10));
                        break;
                    }
                }
            }
        }
        if dispatcher.settle().is_break() {
            return Ok(());
        }
    }
}

/// Registers a descriptor-owning value with the reactor.
pub(crate) fn register<T: std::os::fd::AsRawFd>(inner: T) -> io::Result<AsyncFd<T>> {
    // SAFETY: every caller passes a type that owns its descriptor (OwnedFd inside), so the
    // descriptor stays open and the same for the AsyncFd's whole life.
    unsafe { AsyncFd::register(inner) }.map_err(|e| e.into_parts().1)
}

fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    freebind(&socket, addr)?;
    socket.bind(addr)?;
    // A deep kernel backlog: bursts wait there for the accept loop, not in SYN retries.
    let listener = socket.listen(4096)?.into_std()?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// A stub container starts before the agent gives it its interface: binding the endpoint's
/// address must not wait for the address to exist (the kernel delivers once it does).
fn freebind(socket: &impl std::os::fd::AsFd, addr: SocketAddr) -> io::Result<()> {
    if addr.is_ipv4() {
        nix::sys::socket::setsockopt(socket, nix::sys::socket::sockopt::IpFreebind, &true)?;
    }
    Ok(())
}

fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrStorage};
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = nix::sys::socket::socket(family, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
    freebind(&fd, addr)?;
    nix::sys::socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    Ok(std::net::UdpSocket::from(fd))
}

async fn signals(events: mpsc::UnboundedSender<Event>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    let _ = events.send(Event::Shutdown);
}

/// Queued connections are open descriptors: allow as many as the hard limit does.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}
