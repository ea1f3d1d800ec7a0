//! The one task that owns the stub's state: the warm pool, the queue and every decision.
//!
//! Single owner, no locks: every input arrives as an [`Event`], so the pool can never be seen
//! half-updated and the order of decisions is the order of events.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use crate::backend::{ExitNotice, SpawnRequest, Started, Steps, WorkerBackend};
use crate::frame::{Frame, MAX_FRAME, encode_handoff};
use crate::metrics::Metrics;
use crate::record::{Outcome, Record, RecordSink, Tier};
use crate::seqpacket::SeqPacket;
use crate::stub::StubConfig;
use crate::stub::event::{Accepted, Event};
use crate::stub::poller::Poller;
use crate::stub::refusal::{Refusal, refuse};

/// The dispatcher's state.
pub struct Dispatcher {
    config: Arc<StubConfig>,
    backend: Arc<dyn WorkerBackend>,
    events: UnboundedSender<Event>,
    metrics: Arc<Metrics>,
    records: RecordSink,
    /// Few enough (tens) that a scan beats a map; order matters: the first free worker is
    /// picked, so the tail of the list goes idle and gets swept.
    workers: Vec<Slot>,
    queue: VecDeque<Queued>,
    /// Serial of the next spawn request, which names the slot until the backend names it.
    next_spawn: u64,
    next_conn: u64,
    spawn_not_before: Option<Instant>,
    /// Failed starts in a row (spawn errors, workers dying before registering, start
    /// timeouts): the backoff grows with them, and the last one's reason goes in records.
    start_failures: u32,
    last_failure: Option<String>,
    /// Exponentially weighted service time in seconds, for Retry-After.
    service_ewma: f64,
    drain_until: Option<Instant>,
    lingering: Arc<AtomicUsize>,
    frame: Vec<u8>,
    /// Where registered worker sockets are watched (the dispatcher thread's epoll set);
    /// `None` when driven by hand, as in the unit tests.
    poller: Option<Arc<Poller>>,
    next_token: u64,
    /// The service's bound UDP sockets (systemd's `Accept=no`): polled for readability
    /// (never read) while no worker holds them; handed whole to a worker on the first
    /// datagram, and polled again once that worker is gone.
    udp: Vec<(std::net::UdpSocket, SocketAddr)>,
    /// UDP sockets with a datagram waiting and no worker yet, in arrival order.
    udp_waiting: VecDeque<(usize, Instant)>,
    status: Option<super::status::StatusFile>,
}

/// Poller tokens from here to [`WORKER_TOKEN_BASE`] are the service's UDP sockets.
pub const UDP_TOKEN_BASE: u64 = 1 << 31;

/// Longest a served connection's record waits for the backend's step times.
const HOLD_RECORDS: Duration = Duration::from_secs(2);

/// Poller tokens at and above this are worker sockets; below it the run loop's own.
pub const WORKER_TOKEN_BASE: u64 = 1 << 32;

struct Slot {
    /// The worker's id; a placeholder (`named` false) until the backend names a spawn.
    id: String,
    named: bool,
    socket: Option<SeqPacket>,
    /// The poller token of `socket`, unique for the stub's life (never a reused fd number).
    token: u64,
    concurrency: usize,
    in_flight: HashMap<u64, InFlight>,
    asked_at: Instant,
    /// When the backend had it started (its spawn call resolved).
    spawned_at: Option<Instant>,
    registered_at: Option<Instant>,
    /// The backend's steps: of its start (until a connection took it cold), then of its
    /// last resume.
    steps: Steps,
    idle_since: Instant,
    marked_at: Option<Instant>,
    /// Frozen by the backend while idle; a connection for it resumes it.
    paused: bool,
    /// A resume asked and not answered yet.
    resuming: bool,
    /// It registered on its own while a spawn of ours was unanswered: probably that
    /// spawn's worker, whose answer (and start times) `on_spawned` brings.
    maybe_ours: bool,
    /// Connections it served before the backend answered the start or resume that made it
    /// serve them: their records wait for those steps' times (`steps`), with their service
    /// time and since when they wait (at most [`HOLD_RECORDS`]).
    unrecorded: Vec<(u64, InFlight, f64, Instant)>,
    /// It holds the service's UDP socket with this index: it takes no connection more,
    /// is never paused, and is swept like an idle worker (counting from the handoff).
    udp: Option<usize>,
    /// The serial of our spawn request when our backend started it (so ours to stop),
    /// `None` when it registered on its own.
    spawn: Option<u64>,
    stopping: bool,
}

struct InFlight {
    /// Past this the worker is stopped: the stub never trusts a worker to end a connection.
    deadline: Instant,
    timed_out: bool,
    remote: SocketAddr,
    accept_unix_ns: u64,
    handoff_at: Instant,
    handoff_us: f64,
    tier: Tier,
    /// Cold starts: asked to started, asked to registered.
    spawn_us: Option<f64>,
    register_us: Option<f64>,
    /// Cold starts: the backend's steps (create, start); the paused tier: the unpause,
    /// filled in when the backend answers.
    steps: Steps,
}

struct Queued {
    conn: Accepted,
    deadline: Instant,
}

impl Slot {
    fn has_room(&self) -> bool {
        self.socket.is_some()
            && !self.stopping
            && self.udp.is_none()
            && self.in_flight.len() < self.concurrency
    }

    fn stop(&mut self, backend: &Arc<dyn WorkerBackend>) {
        self.stopping = true;
        if let Some(socket) = &self.socket {
            // The worker reads end-of-stream and leaves; its reader task then reports it gone.
            let _ =
                nix::sys::socket::shutdown(socket.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        }
        // Not named yet: stopped when the backend names it (see `on_spawned`).
        if self.spawn.is_some() && self.named {
            let stop = backend.stop(&self.id);
            tokio::spawn(async move {
                if let Err(e) = stop.await {
                    eprintln!("wepoq-stub: {e}");
                }
            });
        }
    }

    /// Thaws a paused worker; a failed resume ends it (`ControlFailed`).
    fn resume(&mut self, backend: &Arc<dyn WorkerBackend>, events: &UnboundedSender<Event>) {
        self.paused = false;
        self.resuming = true;
        let resume = backend.resume(&self.id);
        let events = events.clone();
        let worker_id = self.id.clone();
        tokio::spawn(async move {
            let _ = events.send(match resume.await {
                Ok(steps) => Event::Resumed { worker_id, steps },
                Err(e) => Event::ControlFailed {
                    worker_id,
                    why: e.why(),
                },
            });
        });
    }

    /// Whether it could take a connection now or soon: registered or being started.
    fn can_serve(&self) -> bool {
        !self.stopping
    }
}

/// Writes the records a worker's slot held back, as they are.
fn flush_unrecorded(records: &mut RecordSink, fqdn: &str, slot: &mut Slot) {
    for (conn_id, f, service_us, _) in std::mem::take(&mut slot.unrecorded) {
        write_served(records, fqdn, &slot.id, conn_id, &f, service_us);
    }
}

/// The record of a connection its worker reported done.
fn write_served(
    records: &mut RecordSink,
    fqdn: &str,
    worker: &str,
    conn_id: u64,
    f: &InFlight,
    service_us: f64,
) {
    records.write(&Record {
        conn_id,
        fqdn,
        remote: f.remote,
        accept_unix_ns: f.accept_unix_ns,
        handoff_us: Some(f.handoff_us),
        cold: f.tier == Tier::Cold,
        tier: Some(f.tier),
        spawn_us: f.spawn_us,
        register_us: f.register_us,
        steps: f.steps,
        worker: Some(worker),
        outcome: Outcome::Served,
        service_us: Some(service_us),
        why: None,
    });
}

fn unix_ns_after(now_unix_ns: u64, d: Duration) -> u64 {
    now_unix_ns.saturating_add(d.as_nanos() as u64)
}

impl Dispatcher {
    pub fn new(
        config: Arc<StubConfig>,
        backend: Arc<dyn WorkerBackend>,
        events: UnboundedSender<Event>,
        metrics: Arc<Metrics>,
        records: RecordSink,
    ) -> Dispatcher {
        Dispatcher {
            config,
            backend,
            events,
            metrics,
            records,
            workers: Vec::new(),
            queue: VecDeque::new(),
            next_spawn: 1,
            next_conn: 1,
            spawn_not_before: None,
            start_failures: 0,
            last_failure: None,
            service_ewma: 0.0,
            drain_until: None,
            lingering: Arc::default(),
            frame: Vec::with_capacity(128),
            poller: None,
            next_token: WORKER_TOKEN_BASE,
            udp: Vec::new(),
            udp_waiting: VecDeque::new(),
            status: None,
        }
    }

    /// Keeps `file` up to date with the number of registered workers.
    pub fn set_status_file(&mut self, file: super::status::StatusFile) {
        self.status = Some(file);
    }

    /// Takes the service's bound UDP sockets; the run loop polls them under
    /// `UDP_TOKEN_BASE + index` (see [`Dispatcher::watch_udp`]).
    pub fn set_udp(&mut self, sockets: Vec<std::net::UdpSocket>) {
        self.udp = sockets
            .into_iter()
            .map(|s| {
                let local = s.local_addr().expect("a bound socket");
                (s, local)
            })
            .collect();
    }

    /// Polls UDP socket `i` for a datagram again (no worker holds it any more).
    fn watch_udp(&self, i: usize) {
        if let (Some(poller), Some((socket, _))) = (&self.poller, self.udp.get(i))
            && let Err(e) = poller.add(socket.as_raw_fd(), UDP_TOKEN_BASE + i as u64)
        {
            eprintln!("wepoq-stub: cannot watch udp socket {i}: {e}");
        }
    }

    /// Starts polling every UDP socket; called once by the run loop.
    pub fn watch_all_udp(&self) {
        for i in 0..self.udp.len() {
            self.watch_udp(i);
        }
    }

    /// A datagram waits on UDP socket `i` (`token - UDP_TOKEN_BASE`): stop polling it (the
    /// stub never reads it) and hand the socket to a worker, or wait for one.
    pub fn datagram_ready(&mut self, i: usize) {
        let Some((socket, _)) = self.udp.get(i) else {
            return;
        };
        if let Some(poller) = &self.poller {
            poller.remove(socket.as_raw_fd());
        }
        if !self.udp_waiting.iter().any(|&(j, _)| j == i) {
            self.udp_waiting.push_back((i, Instant::now()));
        }
        self.drain_udp();
    }

    /// Hands waiting UDP sockets to workers with room (each worker takes one whole).
    fn drain_udp(&mut self) {
        while let Some(&(i, _)) = self.udp_waiting.front() {
            let Some(w) = self.pick() else { return };
            let (socket, local) = &self.udp[i];
            let conn_id = self.next_conn;
            let now_ns = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            let unspecified = SocketAddr::new(
                if local.is_ipv4() {
                    std::net::Ipv4Addr::UNSPECIFIED.into()
                } else {
                    std::net::Ipv6Addr::UNSPECIFIED.into()
                },
                0,
            );
            self.frame.clear();
            // No deadline: the worker keeps the socket until it is swept.
            let encoded = encode_handoff(
                &mut self.frame,
                conn_id,
                now_ns,
                u64::MAX,
                unspecified,
                *local,
                &self.config.fqdn,
                true,
            );
            let slot = &mut self.workers[w];
            let sent = encoded.is_ok()
                && match slot
                    .socket
                    .as_ref()
                    .expect("picked workers are ready")
                    .send(&self.frame, Some(socket.as_fd()))
                {
                    Ok(_) => true,
                    Err(e) => {
                        eprintln!("wepoq-stub: udp handoff to {} failed: {e}", slot.id);
                        slot.stop(&self.backend);
                        false
                    }
                };
            if !sent {
                continue;
            }
            self.next_conn += 1;
            let (_, noticed) = self.udp_waiting.pop_front().expect("not empty");
            let tier = match () {
                _ if slot.registered_at.is_some_and(|r| r > noticed) => Tier::Cold,
                _ if slot.paused => Tier::Paused,
                _ => Tier::Warm,
            };
            self.metrics.count_tier(tier);
            if slot.paused {
                slot.resume(&self.backend, &self.events);
            }
            slot.udp = Some(i);
            slot.marked_at = None;
            slot.idle_since = Instant::now();
            self.metrics.udp_handoffs.fetch_add(1, Relaxed);
        }
    }

    /// Watches registered workers' sockets in `poller`; their readiness comes back to
    /// [`Dispatcher::worker_readable`] with the slot's token.
    pub fn set_poller(&mut self, poller: Arc<Poller>) {
        self.poller = Some(poller);
    }

    /// Brings the pool to its minimum; called once before the first event.
    pub fn start(&mut self) {
        self.scale();
        self.update_gauges();
    }

    /// Applies one event. `Break` means the stub is done.
    pub fn handle(&mut self, event: Event) -> ControlFlow<()> {
        self.apply(event);
        self.settle()
    }

    /// Applies one event without the bookkeeping that follows; call [`Dispatcher::settle`]
    /// once after a batch.
    pub fn apply(&mut self, event: Event) {
        match event {
            Event::Accepted(conn) => self.on_accepted(conn),
            Event::WorkerRegistered {
                worker_id,
                concurrency,
                socket,
            } => self.on_registered(worker_id, concurrency, socket),
            Event::WorkerDone { worker_id, conn_id } => self.on_done(&worker_id, conn_id),
            Event::WorkerGone { worker_id, why } => self.on_gone(&worker_id, &why),
            Event::Spawned {
                spawn,
                worker_id,
                steps,
            } => self.on_spawned(spawn, worker_id, steps),
            Event::Resumed { worker_id, steps } => self.on_resumed(&worker_id, steps),
            Event::SpawnFailed { spawn, why } => {
                eprintln!("wepoq-stub: a worker failed to start: {why}");
                self.workers.retain(|w| w.spawn != Some(spawn));
                self.start_failed(why);
            }
            Event::Exited { spawn, why } => {
                if let Some(i) = self.workers.iter().position(|w| w.spawn == Some(spawn)) {
                    self.on_gone_at(i, &why);
                }
            }
            Event::ControlFailed { worker_id, why } => {
                self.on_resumed(&worker_id, Steps::default());
                if let Some(w) = self
                    .workers
                    .iter_mut()
                    .find(|w| w.named && w.id == worker_id)
                {
                    eprintln!("wepoq-stub: worker {worker_id}: {why}");
                    if !w.stopping {
                        self.metrics.workers_lost.fetch_add(1, Relaxed);
                        w.stop(&self.backend);
                    }
                }
            }
            Event::Tick => self.on_tick(),
            Event::Shutdown => {
                // The run loop has closed the listeners: new clients are refused by the kernel.
                if self.drain_until.is_none() {
                    self.drain_until = Some(Instant::now() + self.config.drain_timeout);
                }
            }
        }
    }

    /// Scales the pool, updates the gauges and checks the drain. `Break` means the stub is
    /// done.
    pub fn settle(&mut self) -> ControlFlow<()> {
        self.scale();
        self.update_gauges();
        if let Some(until) = self.drain_until {
            let idle = self.queue.is_empty() && self.workers.iter().all(|w| w.in_flight.is_empty());
            if idle || Instant::now() >= until {
                self.finish();
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }

    fn on_accepted(&mut self, conn: Accepted) {
        self.metrics.accepted.fetch_add(1, Relaxed);
        let conn = match self.dispatch(conn, false) {
            None => return,
            Some(conn) => conn,
        };
        if self.failing() {
            // Starts keep failing and nothing else could serve it: say so now rather than
            // after the queue timeout.
            self.finish_unserved(conn, Outcome::StartFailed, Refusal::Unavailable);
        } else if self.queue.len() < self.config.queue_limit {
            let deadline = conn.at + self.config.queue_timeout;
            self.queue.push_back(Queued { conn, deadline });
        } else {
            self.finish_unserved(conn, Outcome::Refused, Refusal::QueueFull);
        }
    }

    /// Hands `conn` to the first worker with room; gives it back if none could take it.
    fn dispatch(&mut self, mut conn: Accepted, queued: bool) -> Option<Accepted> {
        loop {
            let Some(i) = self.pick() else {
                return Some(conn);
            };
            match self.hand_to(i, conn, queued) {
                Ok(()) => return None,
                Err(back) => conn = back,
            }
        }
    }

    /// The first ready worker with room, preferring running ones not marked for sweeping,
    /// then marked ones, then paused ones (a resume costs more than a handoff).
    fn pick(&self) -> Option<usize> {
        let (mut marked, mut paused) = (None, None);
        for (i, w) in self.workers.iter().enumerate() {
            if w.has_room() {
                if w.paused {
                    paused.get_or_insert(i);
                } else if w.marked_at.is_none() {
                    return Some(i);
                } else {
                    marked.get_or_insert(i);
                }
            }
        }
        marked.or(paused)
    }

    /// Starts keep failing (in backoff) and no worker is registered or being started.
    fn failing(&self) -> bool {
        self.start_failures > 0
            && self.spawn_not_before.is_some_and(|t| Instant::now() < t)
            && !self.workers.iter().any(Slot::can_serve)
    }

    /// A start failed: back off exponentially (100 ms doubling to 10 s), and when nothing
    /// else can serve the queue, refuse it with the reason.
    fn start_failed(&mut self, why: String) {
        self.start_failures += 1;
        let backoff = Duration::from_millis(100) * 2u32.pow((self.start_failures - 1).min(7));
        self.spawn_not_before = Some(Instant::now() + backoff.min(Duration::from_secs(10)));
        self.last_failure = Some(why);
        if !self.workers.iter().any(Slot::can_serve) {
            while let Some(q) = self.queue.pop_front() {
                self.finish_unserved(q.conn, Outcome::StartFailed, Refusal::Unavailable);
            }
        }
    }

    fn hand_to(&mut self, i: usize, conn: Accepted, queued: bool) -> Result<(), Accepted> {
        let conn_id = self.next_conn;
        let now = Instant::now();
        let slot = &mut self.workers[i];
        self.frame.clear();
        if encode_handoff(
            &mut self.frame,
            conn_id,
            conn.at_unix_ns,
            unix_ns_after(conn.at_unix_ns, self.config.conn_timeout),
            conn.remote,
            conn.local,
            &self.config.fqdn,
            false,
        )
        .is_err()
        {
            // Only an over-long fqdn fails, and the config check prevents it.
            return Err(conn);
        }
        let socket = slot.socket.as_ref().expect("picked workers are ready");
        if let Err(e) = socket.send(&self.frame, Some(conn.stream.as_fd())) {
            eprintln!("wepoq-stub: handoff to {} failed: {e}", slot.id);
            slot.stop(&self.backend);
            return Err(conn);
        }
        self.next_conn += 1;
        let cold = queued && slot.registered_at.is_some_and(|r| r > conn.at);
        let tier = match () {
            _ if cold => Tier::Cold,
            _ if slot.paused => Tier::Paused,
            _ => Tier::Warm,
        };
        if slot.paused {
            // The handoff waits in its socket until it runs again.
            slot.resume(&self.backend, &self.events);
        }
        let since_asked = |t: Option<Instant>| {
            t.filter(|_| cold)
                .map(|t| t.duration_since(slot.asked_at).as_secs_f64() * 1e6)
        };
        let (spawn_us, register_us) = (
            since_asked(slot.spawned_at),
            since_asked(slot.registered_at),
        );
        // A start's steps belong to the connection that waited for it; later ones found
        // the worker running.
        let steps = if cold {
            std::mem::take(&mut slot.steps)
        } else {
            Steps::default()
        };
        self.metrics.count_tier(tier);
        let latency = now.duration_since(conn.at);
        self.metrics.handoff_latency.observe(latency);
        slot.marked_at = None;
        slot.in_flight.insert(
            conn_id,
            InFlight {
                deadline: conn.at + self.config.conn_timeout,
                timed_out: false,
                remote: conn.remote,
                accept_unix_ns: conn.at_unix_ns,
                handoff_at: now,
                handoff_us: latency.as_secs_f64() * 1e6,
                tier,
                spawn_us,
                register_us,
                steps,
            },
        );
        // Our copy goes now: the worker holds the only one, so if it dies the client sees
        // the connection end instead of hanging on a socket nobody serves.
        drop(conn);
        Ok(())
    }

    fn drain_queue(&mut self) {
        self.drain_udp();
        while !self.queue.is_empty() && self.pick().is_some() {
            let q = self.queue.pop_front().expect("not empty");
            if let Some(conn) = self.dispatch(q.conn, true) {
                self.queue.push_front(Queued {
                    conn,
                    deadline: q.deadline,
                });
                break;
            }
        }
    }

    fn on_registered(&mut self, id: String, concurrency: u32, socket: SeqPacket) {
        let now = Instant::now();
        let token = self.next_token;
        let concurrency = (concurrency.max(1) as usize).min(self.config.concurrency as usize);
        match self.workers.iter_mut().find(|w| w.named && w.id == id) {
            Some(slot) if slot.socket.is_none() && !slot.stopping => {
                self.metrics
                    .cold_start
                    .observe(now.duration_since(slot.asked_at));
                slot.socket = Some(socket);
                slot.token = token;
                slot.concurrency = concurrency;
                slot.registered_at = Some(now);
                slot.idle_since = now;
            }
            Some(_) => {
                // A second registration under a live id: refuse the newcomer.
                let _ = nix::sys::socket::shutdown(
                    socket.as_raw_fd(),
                    nix::sys::socket::Shutdown::Both,
                );
                return;
            }
            // Registered on its own, or before our backend's answer named it (then
            // `on_spawned` adopts it).
            None => self.workers.push(Slot {
                maybe_ours: self.workers.iter().any(|w| !w.named && w.spawn.is_some()),
                id,
                named: true,
                socket: Some(socket),
                token,
                concurrency,
                in_flight: HashMap::new(),
                asked_at: now,
                spawned_at: None,
                registered_at: Some(now),
                steps: Steps::default(),
                idle_since: now,
                marked_at: None,
                paused: false,
                resuming: false,
                unrecorded: Vec::new(),
                udp: None,
                spawn: None,
                stopping: false,
            }),
        }
        self.start_failures = 0;
        self.last_failure = None;
        self.next_token += 1;
        if let Some(poller) = &self.poller {
            let slot = self
                .workers
                .iter()
                .find(|w| w.token == token)
                .expect("just registered");
            let fd = slot.socket.as_ref().expect("just registered").as_raw_fd();
            if let Err(e) = poller.add(fd, token) {
                eprintln!("wepoq-stub: cannot watch worker {id_}: {e}", id_ = slot.id);
                let i = self.workers.iter().position(|w| w.token == token);
                self.on_gone_at(i.expect("just registered"), "cannot watch its socket");
                return;
            }
        }
        self.drain_queue();
    }

    /// The socket of the worker with poller token `token` is readable: one frame (a done
    /// report) or its end. One receive per readiness report: the poller is level-triggered
    /// and reports it again if more is waiting.
    pub fn worker_readable(&mut self, token: u64) {
        let Some(i) = self.workers.iter().position(|w| w.token == token) else {
            return;
        };
        let Some(socket) = &self.workers[i].socket else {
            return;
        };
        let mut buf = [0u8; MAX_FRAME];
        let why = match socket.recv(&mut buf) {
            Ok((0, _)) => "worker closed its socket".to_owned(),
            // A worker has no business sending descriptors; the stray one is dropped here.
            Ok((n, _)) => match Frame::decode(&buf[..n]) {
                Ok(Frame::Done { conn_id }) => {
                    self.on_done_at(i, conn_id);
                    return;
                }
                Ok(_) => "worker sent an unexpected frame".to_owned(),
                Err(e) => format!("worker sent a bad frame: {e}"),
            },
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return,
            Err(e) => format!("worker socket failed: {e}"),
        };
        let _ = nix::sys::socket::shutdown(socket.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        self.on_gone_at(i, &why);
    }

    /// The backend started spawn request `spawn` and named the worker.
    fn on_spawned(&mut self, spawn: u64, worker_id: String, steps: Steps) {
        let now = Instant::now();
        let Some(i) = self.workers.iter().position(|w| w.spawn == Some(spawn)) else {
            // It ended (exit notice) before the answer came: make sure nothing is left.
            let stop = self.backend.stop(&worker_id);
            tokio::spawn(async move {
                let _ = stop.await;
            });
            return;
        };
        let asked_at = self.workers[i].asked_at;
        self.metrics
            .spawn_time
            .observe(now.duration_since(asked_at));
        if let Some(j) = self
            .workers
            .iter()
            .position(|w| w.named && w.spawn.is_none() && w.id == worker_id)
        {
            // It registered before the answer came: adopt that slot as ours.
            let placeholder = self.workers.remove(i);
            let j = if j > i { j - 1 } else { j };
            let w = &mut self.workers[j];
            w.spawn = Some(spawn);
            w.asked_at = asked_at;
            w.spawned_at = Some(now);
            w.steps = steps;
            w.maybe_ours = false;
            // Connections it took cold before this answer get its start's times.
            let cold = w
                .in_flight
                .values_mut()
                .chain(w.unrecorded.iter_mut().map(|(_, f, _, _)| f))
                .filter(|f| f.tier == Tier::Cold && f.steps == Steps::default());
            for f in cold {
                f.steps = steps;
            }
            flush_unrecorded(&mut self.records, &self.config.fqdn, w);
            if let Some(r) = w.registered_at {
                self.metrics.cold_start.observe(r.duration_since(asked_at));
            }
            if placeholder.stopping {
                w.stop(&self.backend);
            }
            return;
        }
        let w = &mut self.workers[i];
        w.id = worker_id;
        w.named = true;
        w.spawned_at = Some(now);
        w.steps = steps;
        if w.stopping {
            // Given up on (start timeout, drain) before the backend named it.
            w.stop(&self.backend);
        }
    }

    fn on_done(&mut self, id: &str, conn_id: u64) {
        if let Some(i) = self.workers.iter().position(|w| w.id == id) {
            self.on_done_at(i, conn_id);
        }
    }

    fn on_done_at(&mut self, i: usize, conn_id: u64) {
        let now = Instant::now();
        let slot = &mut self.workers[i];
        let Some(done) = slot.in_flight.remove(&conn_id) else {
            return;
        };
        if slot.in_flight.is_empty() {
            slot.idle_since = now;
        }
        let service = now.duration_since(done.handoff_at).as_secs_f64();
        self.service_ewma = if self.service_ewma == 0.0 {
            service
        } else {
            0.9 * self.service_ewma + 0.1 * service
        };
        self.metrics.count_outcome(Outcome::Served);
        let waits = match done.tier {
            Tier::Paused => slot.resuming && done.steps.unpause_us.is_none(),
            Tier::Cold => slot.maybe_ours && done.steps == Steps::default(),
            Tier::Warm => false,
        };
        if waits {
            slot.unrecorded.push((conn_id, done, service * 1e6, now));
        } else {
            write_served(
                &mut self.records,
                &self.config.fqdn,
                &slot.id,
                conn_id,
                &done,
                service * 1e6,
            );
        }
        self.drain_queue();
    }

    /// The backend answered a resume (a failed one with no steps): the connection that woke
    /// the worker gets the thaw's time in its record, written now if it is already served.
    fn on_resumed(&mut self, worker_id: &str, steps: Steps) {
        let Some(w) = self
            .workers
            .iter_mut()
            .find(|w| w.named && w.id == worker_id)
        else {
            return;
        };
        w.resuming = false;
        let woken = w
            .in_flight
            .values_mut()
            .chain(w.unrecorded.iter_mut().map(|(_, f, _, _)| f))
            .filter(|f| f.tier == Tier::Paused && f.steps.unpause_us.is_none());
        for f in woken {
            f.steps.unpause_us = steps.unpause_us;
        }
        flush_unrecorded(&mut self.records, &self.config.fqdn, w);
    }

    fn on_gone(&mut self, id: &str, why: &str) {
        if let Some(i) = self.workers.iter().position(|w| w.named && w.id == id) {
            self.on_gone_at(i, why);
        }
    }

    fn on_gone_at(&mut self, i: usize, why: &str) {
        let mut slot = self.workers.remove(i);
        flush_unrecorded(&mut self.records, &self.config.fqdn, &mut slot);
        if let Some(u) = slot.udp {
            // Its copy of the socket is closed with it: ours is polled again, and the next
            // datagram (queued in the socket meanwhile) starts another worker.
            self.watch_udp(u);
        }
        let id = slot.id.as_str();
        if !slot.stopping {
            self.metrics.workers_lost.fetch_add(1, Relaxed);
            eprintln!("wepoq-stub: worker {id} gone: {why}");
            // Its socket or its process may still linger; make sure both end.
            slot.stop(&self.backend);
            if slot.socket.is_none() {
                // It died before registering: back off, do not respawn in a tight loop.
                self.start_failed(format!("worker ended before registering: {why}"));
            }
        }
        let id = slot.id.as_str();
        for (conn_id, f) in slot.in_flight.drain() {
            let outcome = if f.timed_out {
                Outcome::TimedOut
            } else {
                Outcome::WorkerLost
            };
            self.metrics.count_outcome(outcome);
            self.records.write(&Record {
                conn_id,
                fqdn: &self.config.fqdn,
                remote: f.remote,
                accept_unix_ns: f.accept_unix_ns,
                handoff_us: Some(f.handoff_us),
                cold: f.tier == Tier::Cold,
                tier: Some(f.tier),
                spawn_us: f.spawn_us,
                register_us: f.register_us,
                steps: f.steps,
                worker: Some(id),
                outcome,
                service_us: None,
                why: Some(why),
            });
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        // Records held for step times that did not come (the spawn was not this worker's,
        // or failed): written without them.
        for w in &mut self.workers {
            if w.unrecorded
                .first()
                .is_some_and(|(_, _, _, since)| now.duration_since(*since) >= HOLD_RECORDS)
            {
                w.maybe_ours = false;
                flush_unrecorded(&mut self.records, &self.config.fqdn, w);
            }
        }
        while self.queue.front().is_some_and(|q| q.deadline <= now) {
            let q = self.queue.pop_front().expect("not empty");
            self.finish_unserved(q.conn, Outcome::Expired, Refusal::Expired);
        }
        let live = self.workers.iter().filter(|w| !w.stopping).count();
        let mut removable = live.saturating_sub(self.config.min_workers);
        let mut timed_out_starts = 0;
        for w in &mut self.workers {
            if w.stopping {
                continue;
            }
            if w.socket.is_none() {
                if now.duration_since(w.asked_at) > self.config.start_timeout {
                    eprintln!("wepoq-stub: worker {} did not register in time", w.id);
                    self.metrics.workers_lost.fetch_add(1, Relaxed);
                    w.stop(&self.backend);
                    timed_out_starts += 1;
                }
                continue;
            }
            if !w.in_flight.is_empty() {
                let mut overdue = w
                    .in_flight
                    .values_mut()
                    .filter(|f| f.deadline <= now)
                    .peekable();
                if overdue.peek().is_some() {
                    // Stopping the worker is the only way to end a connection we no longer
                    // hold; its other connections end with it.
                    overdue.for_each(|f| f.timed_out = true);
                    eprintln!(
                        "wepoq-stub: worker {} held a connection past its deadline",
                        w.id
                    );
                    w.stop(&self.backend);
                }
                continue;
            }
            let pause_after = self.config.pause_after;
            if !w.paused
                && w.udp.is_none()
                && !pause_after.is_zero()
                && now.duration_since(w.idle_since) >= pause_after
            {
                w.paused = true;
                self.metrics.workers_paused_total.fetch_add(1, Relaxed);
                let pause = self.backend.pause(&w.id);
                let events = self.events.clone();
                let worker_id = w.id.clone();
                tokio::spawn(async move {
                    if let Err(e) = pause.await {
                        let why = e.why();
                        let _ = events.send(Event::ControlFailed { worker_id, why });
                    }
                });
            }
            match w.marked_at {
                None if now.duration_since(w.idle_since) >= self.config.idle_timeout => {
                    w.marked_at = Some(now);
                }
                Some(at) if now.duration_since(at) >= self.config.sweep_grace && removable > 0 => {
                    removable -= 1;
                    self.metrics.workers_swept.fetch_add(1, Relaxed);
                    w.stop(&self.backend);
                }
                _ => {}
            }
        }
        for _ in 0..timed_out_starts {
            self.start_failed("worker did not register in time".into());
        }
        self.records.flush();
    }

    /// Starts workers for the queue (one per `concurrency` waiting connections) and up to the
    /// minimum, never past the maximum.
    fn scale(&mut self) {
        if self.spawn_not_before.is_some_and(|t| Instant::now() < t) {
            return;
        }
        let conc = self.config.concurrency.max(1) as usize;
        let live = self.workers.iter().filter(|w| !w.stopping).count();
        let starting = self
            .workers
            .iter()
            .filter(|w| !w.stopping && w.socket.is_none())
            .count();
        // A waiting UDP socket takes a worker whole.
        let waiting =
            (self.queue.len() + self.udp_waiting.len() * conc).saturating_sub(starting * conc);
        let for_queue = waiting.div_ceil(conc);
        // While draining, workers are still started for connections already queued, but
        // the pool is no longer kept at its minimum.
        let for_min = match self.drain_until {
            Some(_) => 0,
            None => self.config.min_workers.saturating_sub(live),
        };
        let room = self.config.max_workers.saturating_sub(live);
        for _ in 0..for_queue.max(for_min).min(room) {
            self.spawn_worker();
        }
    }

    fn spawn_worker(&mut self) {
        let spawn = self.next_spawn;
        self.next_spawn += 1;
        let now = Instant::now();
        self.workers.push(Slot {
            id: format!("(spawn {spawn})"),
            named: false,
            socket: None,
            token: 0,
            concurrency: self.config.concurrency as usize,
            in_flight: HashMap::new(),
            asked_at: now,
            spawned_at: None,
            registered_at: None,
            steps: Steps::default(),
            idle_since: now,
            marked_at: None,
            paused: false,
            resuming: false,
            maybe_ours: false,
            unrecorded: Vec::new(),
            udp: None,
            spawn: Some(spawn),
            stopping: false,
        });
        self.metrics.workers_started.fetch_add(1, Relaxed);
        let request = SpawnRequest {
            socket: self.config.socket_path(),
            concurrency: self.config.concurrency,
        };
        let events = self.events.clone();
        let notice = ExitNotice::new(move |why| {
            let _ = events.send(Event::Exited { spawn, why });
        });
        let backend = self.backend.clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            let _ = events.send(match backend.spawn(request, notice).await {
                Ok(Started { worker_id, steps }) => Event::Spawned {
                    spawn,
                    worker_id,
                    steps,
                },
                Err(e) => Event::SpawnFailed {
                    spawn,
                    why: e.why(),
                },
            });
        });
    }

    fn retry_after_secs(&self) -> u64 {
        let capacity: usize = self
            .workers
            .iter()
            .filter(|w| w.socket.is_some())
            .map(|w| w.concurrency)
            .sum();
        let wait = (self.queue.len() + 1) as f64 * self.service_ewma / capacity.max(1) as f64;
        (wait.ceil() as u64).clamp(1, 60)
    }

    fn finish_unserved(&mut self, conn: Accepted, outcome: Outcome, why: Refusal) {
        self.metrics.count_outcome(outcome);
        self.records.write(&Record {
            conn_id: 0,
            fqdn: &self.config.fqdn,
            remote: conn.remote,
            accept_unix_ns: conn.at_unix_ns,
            handoff_us: None,
            cold: false,
            tier: None,
            spawn_us: None,
            register_us: None,
            steps: Steps::default(),
            worker: None,
            outcome,
            service_us: None,
            why: (outcome == Outcome::StartFailed)
                .then_some(self.last_failure.as_deref())
                .flatten(),
        });
        let retry = self.retry_after_secs();
        refuse(
            conn.stream,
            self.config.protocol,
            why,
            retry,
            &self.lingering,
        );
    }

    fn finish(&mut self) {
        while let Some(q) = self.queue.pop_front() {
            self.finish_unserved(q.conn, Outcome::Shutdown, Refusal::Stopping);
        }
        for w in &mut self.workers {
            if !w.stopping {
                w.stop(&self.backend);
            }
        }
        self.records.flush();
    }

    fn update_gauges(&self) {
        let (mut starting, mut idle, mut busy, mut marked, mut paused) = (0, 0, 0, 0, 0);
        for w in self.workers.iter().filter(|w| !w.stopping) {
            match () {
                _ if w.socket.is_none() => starting += 1,
                _ if !w.in_flight.is_empty() => busy += 1,
                _ if w.paused => paused += 1,
                _ if w.marked_at.is_some() => marked += 1,
                _ => idle += 1,
            }
        }
        self.metrics.workers_paused.store(paused, Relaxed);
        self.metrics.workers_starting.store(starting, Relaxed);
        self.metrics.workers_idle.store(idle, Relaxed);
        self.metrics.workers_busy.store(busy, Relaxed);
        self.metrics.workers_marked.store(marked, Relaxed);
        self.metrics
            .queue_depth
            .store(self.queue.len() as u64, Relaxed);
        if let Some(status) = &self.status {
            status.update((idle + busy + paused + marked) as usize);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The pool's decisions with a fake backend: no processes, no timing.

    use super::*;
    use crate::backend::{BackendError, BoxFuture};
    use std::net::{TcpListener, TcpStream};
    use std::sync::Mutex;
    use std::time::SystemTime;
    use tokio::sync::mpsc;

    #[derive(Default)]
    struct FakeBackend {
        calls: Mutex<Vec<String>>,
    }

    impl FakeBackend {
        fn call(&self, op: &str, worker_id: &str) -> BoxFuture<'static, Result<(), BackendError>> {
            self.calls.lock().unwrap().push(format!("{op} {worker_id}"));
            Box::pin(async { Ok(()) })
        }
    }

    impl WorkerBackend for FakeBackend {
        fn spawn(
            &self,
            _request: SpawnRequest,
            _exited: ExitNotice,
        ) -> BoxFuture<'_, Result<Started, BackendError>> {
            let mut calls = self.calls.lock().unwrap();
            let n = calls.iter().filter(|c| c.starts_with("spawn")).count() + 1;
            calls.push(format!("spawn w{n}"));
            Box::pin(async move {
                Ok(Started {
                    worker_id: format!("w{n}"),
                    steps: Steps {
                        start_us: Some(5.0),
                        ..Steps::default()
                    },
                })
            })
        }

        fn stop(&self, worker_id: &str) -> BoxFuture<'static, Result<(), BackendError>> {
            self.call("stop", worker_id)
        }

        fn pause(&self, worker_id: &str) -> BoxFuture<'static, Result<(), BackendError>> {
            self.call("pause", worker_id)
        }

        fn resume(&self, worker_id: &str) -> BoxFuture<'static, Result<Steps, BackendError>> {
            let called = self.call("resume", worker_id);
            Box::pin(async move {
                called.await.map(|()| Steps {
                    unpause_us: Some(7.0),
                    ..Steps::default()
                })
            })
        }
    }

    struct Harness {
        dispatcher: Dispatcher,
        backend: Arc<FakeBackend>,
        metrics: Arc<Metrics>,
        listener: TcpListener,
        clients: Vec<TcpStream>,
        events: mpsc::UnboundedReceiver<Event>,
    }

    impl Harness {
        fn new(config: StubConfig) -> Harness {
            let backend = Arc::new(FakeBackend::default());
            let metrics = Arc::new(Metrics::default());
            // These tests drive the dispatcher by hand; `calls` feeds it the backend's answers.
            let (tx, events) = mpsc::unbounded_channel();
            let dispatcher = Dispatcher::new(
                Arc::new(config),
                backend.clone(),
                tx,
                metrics.clone(),
                RecordSink::none(),
            );
            Harness {
                dispatcher,
                backend,
                metrics,
                listener: TcpListener::bind("127.0.0.1:0").unwrap(),
                clients: Vec::new(),
                events,
            }
        }

        fn accept(&mut self) -> ControlFlow<()> {
            let client = TcpStream::connect(self.listener.local_addr().unwrap()).unwrap();
            let (stream, remote) = self.listener.accept().unwrap();
            self.clients.push(client);
            let local = stream.local_addr().unwrap();
            self.dispatcher.handle(Event::Accepted(Accepted {
                stream,
                remote,
                local,
                at: Instant::now(),
                at_unix_ns: SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64,
            }))
        }

        /// The backend calls so far, after letting the call tasks run and handing their
        /// answers (spawned, failed) to the dispatcher.
        async fn calls(&mut self) -> Vec<String> {
            for _ in 0..10 {
                tokio::task::yield_now().await;
                while let Ok(event) = self.events.try_recv() {
                    assert!(self.dispatcher.handle(event).is_continue());
                }
            }
            self.backend.calls.lock().unwrap().clone()
        }
    }

    fn config() -> StubConfig {
        StubConfig {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            socket_dir: std::env::temp_dir(),
            ..StubConfig::default()
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn queued_connections_start_workers_up_to_the_maximum() {
        let mut h = Harness::new(StubConfig {
            max_workers: 2,
            ..config()
        });
        h.dispatcher.start();
        assert!(h.calls().await.is_empty(), "min 0: nothing at start");
        for _ in 0..3 {
            assert!(h.accept().is_continue());
        }
        assert_eq!(h.calls().await, ["spawn w1", "spawn w2"]);
        assert_eq!(h.metrics.queue_depth.load(Relaxed), 3);
        assert_eq!(h.metrics.workers_starting.load(Relaxed), 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn one_worker_per_concurrency_waiting_connections() {
        let mut h = Harness::new(StubConfig {
            concurrency: 4,
            max_workers: 8,
            ..config()
        });
        for _ in 0..5 {
            assert!(h.accept().is_continue());
        }
        assert_eq!(
            h.calls().await,
            ["spawn w1", "spawn w2"],
            "5 waiting / 4 per worker"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_full_queue_refuses_and_counts() {
        let mut h = Harness::new(StubConfig {
            max_workers: 0,
            queue_limit: 2,
            ..config()
        });
        for _ in 0..5 {
            assert!(h.accept().is_continue());
        }
        assert_eq!(h.metrics.queue_depth.load(Relaxed), 2);
        assert_eq!(h.metrics.outcome(Outcome::Refused), 3);
        assert!(h.calls().await.is_empty(), "max 0: never spawns");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_minimum_is_kept_and_a_worker_that_never_registers_is_stopped() {
        let mut h = Harness::new(StubConfig {
            min_workers: 1,
            start_timeout: Duration::ZERO,
            ..config()
        });
        h.dispatcher.start();
        assert_eq!(h.calls().await, ["spawn w1"]);
        std::thread::sleep(Duration::from_millis(2));
        assert!(h.dispatcher.handle(Event::Tick).is_continue());
        // A start that timed out is a failed start: the replacement waits the first backoff
        // (100 ms), then starts without waiting for the backend to report the end of w1 (a
        // stopping worker no longer counts towards the minimum).
        assert_eq!(h.calls().await, ["spawn w1", "stop w1"]);
        std::thread::sleep(Duration::from_millis(110));
        assert!(h.dispatcher.handle(Event::Tick).is_continue());
        assert_eq!(h.calls().await, ["spawn w1", "stop w1", "spawn w2"]);
        assert_eq!(h.metrics.workers_lost.load(Relaxed), 1);
        let gone = h.dispatcher.handle(Event::WorkerGone {
            worker_id: "w1".into(),
            why: "test".into(),
        });
        assert!(gone.is_continue());
        assert_eq!(
            h.calls().await.len(),
            3,
            "the end of w1 starts nothing more"
        );
    }

    fn register(h: &mut Harness, id: &str) -> SeqPacket {
        let (stub_end, worker_end) = SeqPacket::pair().unwrap();
        let flow = h.dispatcher.handle(Event::WorkerRegistered {
            worker_id: id.into(),
            concurrency: 1,
            socket: stub_end,
        });
        assert!(flow.is_continue());
        worker_end
    }

    /// What the worker at `end` was handed: the connection id, with a socket attached.
    fn handed(end: &SeqPacket) -> u64 {
        let mut buf = [0u8; MAX_FRAME];
        let (n, fd) = end.recv(&mut buf).unwrap();
        assert!(fd.is_some(), "a handoff carries the socket");
        match Frame::decode(&buf[..n]).unwrap() {
            Frame::Handoff(h) => h.conn_id,
            other => panic!("expected a handoff, got {other:?}"),
        }
    }

    /// Records written to memory.
    #[derive(Clone, Default)]
    struct Written(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Written {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Written {
        fn records(&self) -> Vec<serde_json::Value> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_cold_record_waits_for_the_start_times_of_a_worker_that_registered_first() {
        let mut h = Harness::new(config());
        let written = Written::default();
        h.dispatcher.records = RecordSink::new(Box::new(written.clone()));
        assert!(h.accept().is_continue());
        // The backend's answer (with its start time) is still on its way when the worker
        // registers, takes the waiting connection and reports it done.
        let worker = register(&mut h, "w1");
        let conn_id = handed(&worker);
        worker
            .send(&crate::frame::done_bytes(conn_id), None)
            .unwrap();
        h.dispatcher.worker_readable(WORKER_TOKEN_BASE);
        assert!(h.dispatcher.settle().is_continue());
        h.dispatcher.records.flush();
        assert!(written.records().is_empty(), "held for the answer");
        assert_eq!(h.calls().await, ["spawn w1"]);
        h.dispatcher.records.flush();
        let records = written.records();
        assert_eq!(records.len(), 1, "{records:?}");
        assert_eq!(records[0]["tier"], "cold");
        assert_eq!(records[0]["start_us"], 5.0);
        assert!(records[0].get("create_us").is_none());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn done_reports_and_the_end_are_read_from_the_worker_socket() {
        let mut h = Harness::new(config());
        let worker = register(&mut h, "solo");
        assert_eq!(h.metrics.workers_idle.load(Relaxed), 1);
        assert!(h.accept().is_continue());
        assert_eq!(h.metrics.workers_busy.load(Relaxed), 1);
        let conn_id = handed(&worker);
        worker
            .send(&crate::frame::done_bytes(conn_id), None)
            .unwrap();
        // The first registered worker gets the first token.
        h.dispatcher.worker_readable(WORKER_TOKEN_BASE);
        assert!(h.dispatcher.settle().is_continue());
        assert_eq!(h.metrics.outcome(Outcome::Served), 1);
        assert_eq!(h.metrics.workers_idle.load(Relaxed), 1);
        drop(worker);
        h.dispatcher.worker_readable(WORKER_TOKEN_BASE);
        assert!(h.dispatcher.settle().is_continue());
        assert_eq!(h.metrics.workers_lost.load(Relaxed), 1);
        assert_eq!(h.metrics.workers_idle.load(Relaxed), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_second_registration_under_a_live_id_is_refused_and_the_first_stays() {
        let mut h = Harness::new(config());
        let first = register(&mut h, "dup");
        let second = register(&mut h, "dup");
        let mut buf = [0u8; MAX_FRAME];
        assert_eq!(
            second.recv(&mut buf).unwrap().0,
            0,
            "the newcomer is shut out"
        );
        assert_eq!(h.metrics.workers_idle.load(Relaxed), 1);
        assert_eq!(h.metrics.workers_lost.load(Relaxed), 0);
        assert!(h.accept().is_continue());
        handed(&first);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_idle_worker_is_paused_and_a_connection_resumes_it() {
        let mut h = Harness::new(StubConfig {
            pause_after: Duration::from_millis(1),
            ..config()
        });
        let worker = register(&mut h, "p1");
        std::thread::sleep(Duration::from_millis(2));
        assert!(h.dispatcher.handle(Event::Tick).is_continue());
        assert_eq!(h.calls().await, ["pause p1"]);
        assert_eq!(h.metrics.workers_paused.load(Relaxed), 1);
        assert!(h.accept().is_continue());
        handed(&worker);
        assert_eq!(h.calls().await, ["pause p1", "resume p1"]);
        assert_eq!(h.metrics.tier(Tier::Paused), 1);
        assert_eq!(h.metrics.workers_paused.load(Relaxed), 0);
        assert_eq!(h.metrics.workers_busy.load(Relaxed), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn failing_starts_refuse_the_queue_and_back_off() {
        let mut h = Harness::new(config());
        assert!(h.accept().is_continue());
        assert!(h.accept().is_continue());
        assert_eq!(h.calls().await, ["spawn w1", "spawn w2"]);
        for spawn in [1, 2] {
            let flow = h.dispatcher.handle(Event::SpawnFailed {
                spawn,
                why: "no such image".into(),
            });
            assert!(flow.is_continue());
        }
        assert_eq!(h.metrics.outcome(Outcome::StartFailed), 2);
        assert_eq!(h.metrics.queue_depth.load(Relaxed), 0);
        // In the backoff, a new connection is refused at once and nothing is started.
        assert!(h.accept().is_continue());
        assert_eq!(h.metrics.outcome(Outcome::StartFailed), 3);
        assert_eq!(h.calls().await.len(), 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_worker_registering_before_its_spawn_answer_is_adopted() {
        let mut h = Harness::new(StubConfig {
            min_workers: 1,
            ..config()
        });
        h.dispatcher.start();
        // Register as the backend will name it, before the answer is handed over.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let _worker = register(&mut h, "w1");
        assert_eq!(h.calls().await, ["spawn w1"]);
        assert_eq!(h.metrics.workers_idle.load(Relaxed), 1);
        assert_eq!(
            h.metrics.workers_starting.load(Relaxed),
            0,
            "one slot, not two"
        );
        assert_eq!(h.metrics.cold_start.count(), 1);
        // Ours now: the stop on shutdown reaches the backend.
        assert!(h.dispatcher.handle(Event::Shutdown).is_break());
        assert_eq!(h.calls().await, ["spawn w1", "stop w1"]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn shutdown_with_nothing_in_flight_ends_at_once() {
        let mut h = Harness::new(config());
        assert!(h.dispatcher.handle(Event::Shutdown).is_break());
    }
}
