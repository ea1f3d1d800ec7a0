//! The packet engine of one tunnel end: WireGuard (boringtun's `Tunn`, one per peer) between
//! the TUN device of the private namespace and the UDP socket on the routed network.
//!
//! Three plain threads, no async runtime on the packet path: one moves datagrams from the
//! socket into the TUN (decrypt, then the inner filter), one moves packets from the TUN to
//! the socket (encrypt), one drives WireGuard's timers (handshake retries, keepalives,
//! rekeying) every 100 ms and reports peers whose session came up or went away.
//!
//! Peers are found the way WireGuard's own implementations find them: a handshake
//! initiation by the initiator's static key (decrypted with ours), every other message by
//! its receiver index, whose upper 24 bits are the peer's index (here its tag).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};

use super::batch::{self, Outgoing, Received, SLOT};
use super::inner;

/// The gateway's inner address; a client's is [`client_inner`] of its tag.
pub const GATEWAY_INNER: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
/// Every client's inner address is in 100.65.0.0/16.
pub const CLIENTS_INNER: (Ipv4Addr, u8) = (Ipv4Addr::new(100, 65, 0, 0), 16);
const KEEPALIVE_SECONDS: u16 = 5;
/// A client that heard nothing for this long starts a new handshake (the gateway restarted,
/// or the path changed): keepalives come every 5 s while all is well.
const SILENCE: Duration = Duration::from_secs(7);
/// A gateway forgets a client's device after this long without an authentic packet.
const GONE: Duration = Duration::from_secs(180);
const HANDSHAKE_INITIATION: u8 = 1;
const HANDSHAKE_RESPONSE: u8 = 2;
const DATA: u8 = 4;
/// How often a gateway may start a handshake with a client whose session it does not have.
const ASK_AGAIN: Duration = Duration::from_secs(1);
const BUFFER: usize = 65_536;
const POLL: Duration = Duration::from_millis(200);
/// How often an unknown key's handshake may make the engine look for new peers: bounded, as
/// anyone can send handshakes.
const LOOK_AGAIN: Duration = Duration::from_millis(100);
/// How long a gateway holds a new client's answer (see [`Engine::release`]) waiting for its
/// device and port before it answers anyway.
const HOLD_AT_MOST: Duration = Duration::from_millis(500);

pub fn client_inner(tag: u16) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(CLIENTS_INNER.0) | u32::from(tag))
}

/// One WireGuard peer: a client (at the gateway) or the gateway (at a client).
pub struct Peer {
    pub fqdn: String,
    pub tag: u16,
    /// Where its packets come from inside the tunnel (what the inner filter checks).
    pub inner: Ipv4Addr,
    pub public: [u8; 32],
    tunn: Mutex<Tunn>,
    endpoint: Mutex<Option<SocketAddr>>,
    last_rx: Mutex<Instant>,
    last_forced: Mutex<Instant>,
    up: AtomicBool,
    /// At a gateway: whether this client's port carries frames ([`Engine::release`]). Until then the answer to its latest handshake (and what was
    /// queued behind it) is held.
    ready: AtomicBool,
    held: Mutex<Option<Held>>,
}

struct Held {
    datagrams: Vec<Vec<u8>>,
    to: SocketAddr,
    since: Instant,
}

impl Peer {
    pub fn new(
        fqdn: &str,
        tag: u16,
        inner: Ipv4Addr,
        public: PublicKey,
        secret: &StaticSecret,
        endpoint: Option<SocketAddr>,
    ) -> Peer {
        let tunn = Tunn::new(
            secret.clone(),
            public,
            None,
            Some(KEEPALIVE_SECONDS),
            u32::from(tag),
            None,
        );
        let long_ago = Instant::now() - Duration::from_secs(60);
        Peer {
            fqdn: fqdn.to_owned(),
            tag,
            inner,
            public: *public.as_bytes(),
            tunn: Mutex::new(tunn),
            endpoint: Mutex::new(endpoint),
            last_rx: Mutex::new(long_ago),
            last_forced: Mutex::new(long_ago),
            up: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            held: Mutex::new(None),
        }
    }

    pub fn endpoint(&self) -> Option<SocketAddr> {
        *lock(&self.endpoint)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A peer's session came up or went away (seen by the timer thread).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Up { fqdn: String, tag: u16 },
    Down { fqdn: String, tag: u16 },
}

/// What the packet threads count; the agent exports them (`/metrics`).
#[derive(Debug, Default)]
pub struct Counters {
    pub rx_packets: AtomicU64,
    pub tx_packets: AtomicU64,
    /// Datagrams from no known peer (unknown key or index, or not WireGuard at all).
    pub refused: AtomicU64,
    /// Decrypted packets the inner filter dropped.
    pub filtered: AtomicU64,
}

#[derive(Default)]
struct Peers {
    by_tag: HashMap<u16, Arc<Peer>>,
    by_key: HashMap<[u8; 32], u16>,
}

pub struct Engine {
    socket: UdpSocket,
    tun: File,
    secret: StaticSecret,
    public: PublicKey,
    peers: RwLock<Peers>,
    stop: AtomicBool,
    /// At a client: the one peer takes every packet, and keeps its handshake fresh.
    is_client: bool,
    pub counters: Arc<Counters>,
    on_change: Box<dyn Fn(Change) + Send + Sync>,
    /// Asked to look for new peers when a handshake comes from an unknown key (a client
    /// whose credential was issued since the last look), at most every [`LOOK_AGAIN`].
    on_unknown: Mutex<Option<Box<dyn Fn() + Send + Sync>>>,
    last_look: Mutex<Instant>,
}

impl Engine {
    pub fn new(
        socket: UdpSocket,
        tun: File,
        secret: StaticSecret,
        is_client: bool,
        on_change: Box<dyn Fn(Change) + Send + Sync>,
    ) -> std::io::Result<Arc<Engine>> {
        socket.set_read_timeout(Some(POLL))?;
        batch::accept_coalesced(&socket);
        // The TUN is drained until it has nothing (EAGAIN), then polled: one wake-up per
        // burst rather than per packet.
        // SAFETY: F_GETFL/F_SETFL on a file descriptor this File owns.
        unsafe {
            let flags = libc::fcntl(tun.as_raw_fd(), libc::F_GETFL);
            if flags < 0
                || libc::fcntl(tun.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
        }
        let public = PublicKey::from(&secret);
        Ok(Arc::new(Engine {
            socket,
            tun,
            secret,
            public,
            peers: RwLock::new(Peers::default()),
            stop: AtomicBool::new(false),
            is_client,
            counters: Arc::default(),
            on_change,
            on_unknown: Mutex::new(None),
            last_look: Mutex::new(Instant::now() - LOOK_AGAIN),
        }))
    }

    /// Sets what looks for new peers (see `on_unknown`); it may call [`Engine::add_peer`].
    pub fn on_unknown_key(&self, look: Box<dyn Fn() + Send + Sync>) {
        *lock(&self.on_unknown) = Some(look);
    }

    /// At a gateway, the client with `tag` can be answered from now on (until its session
    /// goes away); sends its held answer, if any. A client that comes up is answered only
    /// once this says its device and port are made (or after [`HOLD_AT_MOST`]), and is sent
    /// nothing before: a client sends its first frames the moment it has the answer, and
    /// frames that arrive before the port exists are lost (its first ARP, so everything
    /// waited for the retry).
    pub fn release(&self, tag: u16) {
        if let Some(peer) = self.by_tag(tag) {
            self.send_held(&peer);
        }
    }

    /// Whether answers to `peer` are held (a gateway's client whose port is not ready).
    fn holds_for(&self, peer: &Peer) -> bool {
        !self.is_client && !peer.ready.load(Ordering::SeqCst)
    }

    fn send_held(&self, peer: &Peer) {
        peer.ready.store(true, Ordering::SeqCst);
        if let Some(held) = lock(&peer.held).take() {
            for datagram in &held.datagrams {
                let _ = self.socket.send_to(datagram, held.to);
            }
        }
    }

    pub fn secret(&self) -> &StaticSecret {
        &self.secret
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Adds `peer` (replacing one of the same tag).
    pub fn add_peer(&self, peer: Peer) {
        let mut peers = self.peers.write().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = peers.by_tag.remove(&peer.tag) {
            peers.by_key.remove(&old.public);
        }
        peers.by_key.insert(peer.public, peer.tag);
        peers.by_tag.insert(peer.tag, Arc::new(peer));
    }

    /// Removes the peer with `tag`; reports it down if it was up.
    pub fn remove_peer(&self, tag: u16) {
        let removed = {
            let mut peers = self.peers.write().unwrap_or_else(|p| p.into_inner());
            let old = peers.by_tag.remove(&tag);
            if let Some(old) = &old {
                peers.by_key.remove(&old.public);
            }
            old
        };
        if let Some(old) = removed
            && old.up.swap(false, Ordering::SeqCst)
        {
            (self.on_change)(Change::Down {
                fqdn: old.fqdn.clone(),
                tag,
            });
        }
    }

    /// (FQDN, tag, public key) of every peer.
    pub fn peer_list(&self) -> Vec<(String, u16, [u8; 32])> {
        let peers = self.peers.read().unwrap_or_else(|p| p.into_inner());
        peers
            .by_tag
            .values()
            .map(|p| (p.fqdn.clone(), p.tag, p.public))
            .collect()
    }

    fn by_tag(&self, tag: u16) -> Option<Arc<Peer>> {
        self.peers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_tag
            .get(&tag)
            .cloned()
    }

    fn by_key(&self, key: &[u8; 32]) -> Option<Arc<Peer>> {
        let peers = self.peers.read().unwrap_or_else(|p| p.into_inner());
        peers
            .by_key
            .get(key)
            .and_then(|t| peers.by_tag.get(t))
            .cloned()
    }

    fn only_peer(&self) -> Option<Arc<Peer>> {
        self.peers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_tag
            .values()
            .next()
            .cloned()
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Starts the three threads; they end after [`Engine::stop`].
    pub fn spawn(self: &Arc<Engine>) -> std::io::Result<Vec<JoinHandle<()>>> {
        let mut threads = Vec::new();
        for (name, run) in [
            ("wepoq-tunnel-rx", Engine::network_to_tun as fn(&Engine)),
            ("wepoq-tunnel-tx", Engine::tun_to_network),
            ("wepoq-tunnel-timers", Engine::timers),
        ] {
            let engine = self.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(name.into())
                    .spawn(move || run(&engine))?,
            );
        }
        Ok(threads)
    }

    fn send(&self, packet: &[u8], to: Option<SocketAddr>) {
        if let Some(to) = to {
            // A lost datagram is WireGuard's to recover (it is UDP); nothing to do here.
            let _ = self.socket.send_to(packet, to);
        }
    }

    fn peer_of(&self, datagram: &[u8]) -> Option<Arc<Peer>> {
        match Tunn::parse_incoming_packet(datagram).ok()? {
            Packet::HandshakeInit(init) => {
                let half = parse_handshake_anon(&self.secret, &self.public, &init).ok()?;
                self.by_key(&half.peer_static_public)
            }
            Packet::HandshakeResponse(p) => self.by_tag(u16::try_from(p.receiver_idx >> 8).ok()?),
            Packet::PacketCookieReply(p) => self.by_tag(u16::try_from(p.receiver_idx >> 8).ok()?),
            Packet::PacketData(p) => self.by_tag(u16::try_from(p.receiver_idx >> 8).ok()?),
        }
    }

    fn network_to_tun(&self) {
        let mut batch = Received::new();
        let mut out = vec![0u8; BUFFER];
        while !self.stop.load(Ordering::Relaxed) {
            let Ok(count) = batch.recv(&self.socket) else {
                continue;
            };
            for i in 0..count {
                match batch.get(i) {
                    Some((datagrams, from)) => {
                        for datagram in datagrams {
                            self.receive(datagram, from, &mut out);
                        }
                    }
                    None => {
                        self.counters.refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    /// One datagram from the network: a handshake to answer, or a packet for the TUN.
    fn receive(&self, datagram: &[u8], from: SocketAddr, out: &mut [u8]) {
        let mut tun = &self.tun;
        let Some(peer) = self.peer_of(datagram).or_else(|| self.look_again(datagram)) else {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let mut tunn = lock(&peer.tunn);
        let mut authentic = true;
        // A session begins with an initiation the gateway answers, or (after a restart of
        // the gateway, see below) with the client's response to the gateway's own.
        let handshake = matches!(datagram[0], HANDSHAKE_INITIATION | HANDSHAKE_RESPONSE);
        match tunn.decapsulate(Some(from.ip()), datagram, out) {
            TunnResult::WriteToNetwork(reply) => {
                // The client is connected. Its device and port are made now.
                let first = handshake && !self.is_client && !peer.up.swap(true, Ordering::SeqCst);
                if self.holds_for(&peer) {
                    // A client may send a second handshake before the first is answered
                    // (its timers and its first packet both start one): only the answer to
                    // the latest is any use to it, held from the time the first came.
                    let mut datagrams = vec![reply.to_vec()];
                    while let TunnResult::WriteToNetwork(queued) = tunn.decapsulate(None, &[], out)
                    {
                        datagrams.push(queued.to_vec());
                    }
                    let mut held = lock(&peer.held);
                    let since = held.as_ref().map_or_else(Instant::now, |h| h.since);
                    *held = Some(Held {
                        datagrams,
                        to: from,
                        since,
                    });
                } else {
                    let _ = self.socket.send_to(reply, from);
                    // Packets queued while the handshake was on go out now.
                    while let TunnResult::WriteToNetwork(queued) = tunn.decapsulate(None, &[], out)
                    {
                        let _ = self.socket.send_to(queued, from);
                    }
                }
                if first {
                    (self.on_change)(Change::Up {
                        fqdn: peer.fqdn.clone(),
                        tag: peer.tag,
                    });
                }
            }
            TunnResult::WriteToTunnelV4(packet, src) => {
                if src == peer.inner
                    && inner::check(packet, peer.inner, u32::from(peer.tag)).is_ok()
                {
                    let _ = tun.write(packet);
                    self.counters.rx_packets.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.counters.filtered.fetch_add(1, Ordering::Relaxed);
                }
            }
            TunnResult::WriteToTunnelV6(..) => {
                self.counters.filtered.fetch_add(1, Ordering::Relaxed);
            }
            TunnResult::Done => {}
            TunnResult::Err(_) => {
                authentic = false;
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                if datagram[0] == DATA && !self.is_client {
                    self.ask_for_handshake(&peer, &mut tunn, from, out);
                }
            }
        }
        drop(tunn);
        if authentic
            && self.is_client
            && datagram[0] == HANDSHAKE_RESPONSE
            && !peer.up.swap(true, Ordering::SeqCst)
        {
            // Up as it happens, not at the timers' next round (up to 100 ms later).
            (self.on_change)(Change::Up {
                fqdn: peer.fqdn.clone(),
                tag: peer.tag,
            });
        }
        if authentic {
            *lock(&peer.last_rx) = Instant::now();
            if !self.is_client {
                // Roaming: a client is wherever its last authentic datagram came from.
                *lock(&peer.endpoint) = Some(from);
            }
        }
    }

    /// A data packet for a client the gateway knows (its index names the tag) but has no
    /// session with: the gateway restarted, and the client still uses the session it had.
    /// Rather than leave it until its silence makes it start again (seconds), the gateway
    /// starts a handshake with wherever the packet came from. The packet proves nothing (it
    /// cannot be decrypted), so this costs at most one handshake a second per client, the
    /// endpoint is not learnt from it, and only the holder of the client's key can answer.
    fn ask_for_handshake(&self, peer: &Peer, tunn: &mut Tunn, from: SocketAddr, out: &mut [u8]) {
        if tunn.time_since_last_handshake().is_some() {
            return;
        }
        {
            let mut last = lock(&peer.last_forced);
            if last.elapsed() < ASK_AGAIN {
                return;
            }
            *last = Instant::now();
        }
        if let TunnResult::WriteToNetwork(init) = tunn.format_handshake_initiation(out, false) {
            let _ = self.socket.send_to(init, from);
        }
    }

    /// A handshake from no known peer: once the bound allows, looks for new peers and tries
    /// again, so a client issued a credential a moment ago is answered at its first try.
    fn look_again(&self, datagram: &[u8]) -> Option<Arc<Peer>> {
        if datagram.first() != Some(&HANDSHAKE_INITIATION) {
            return None;
        }
        {
            let mut last = lock(&self.last_look);
            if last.elapsed() < LOOK_AGAIN {
                return None;
            }
            *last = Instant::now();
        }
        (lock(&self.on_unknown).as_ref()?)();
        self.peer_of(datagram)
    }

    fn tun_to_network(&self) {
        let mut packet = vec![0u8; BUFFER];
        let mut batch = Outgoing::new();
        let mut tun = &self.tun;
        let mut fds = [libc::pollfd {
            fd: self.tun.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        while !self.stop.load(Ordering::Relaxed) {
            let n = match tun.read(&mut packet) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    // Drained: send the burst, then sleep until the next packet.
                    batch.flush(&self.socket);
                    // SAFETY: `fds` is a valid array of one pollfd for the call.
                    unsafe { libc::poll(fds.as_mut_ptr(), 1, POLL.as_millis() as i32) };
                    continue;
                }
                Err(_) => continue,
            };
            // Shorter than an IPv4 header, or too long to seal into a slot (the TUN's MTU
            // keeps packets far below): not ours to send.
            if n < 20 || n + 32 > SLOT {
                continue;
            }
            let peer = if self.is_client {
                self.only_peer()
            } else {
                let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
                u16::try_from(u32::from(dst) & 0xffff)
                    .ok()
                    .and_then(|t| self.by_tag(t))
            };
            let Some(peer) = peer else { continue };
            let Some(endpoint) = peer.endpoint() else {
                continue;
            };
            // Nothing goes to a client whose port is not ready yet: a packet would make the
            // gateway start a handshake of its own, and that session would let the client
            // send before its port exists.
            if self.holds_for(&peer) {
                continue;
            }
            let mut tunn = lock(&peer.tunn);
            batch.push_with(|slot| match tunn.encapsulate(&packet[..n], slot) {
                TunnResult::WriteToNetwork(datagram) => {
                    self.counters.tx_packets.fetch_add(1, Ordering::Relaxed);
                    Some((datagram.len(), endpoint))
                }
                _ => None,
            });
            drop(tunn);
            if batch.is_full() {
                batch.flush(&self.socket);
            }
        }
    }

    fn timers(&self) {
        let mut out = vec![0u8; BUFFER];
        // The first round at once: a client's first handshake goes out as it starts.
        let mut first_round = true;
        while !self.stop.load(Ordering::Relaxed) {
            if !first_round {
                std::thread::sleep(Duration::from_millis(100));
            }
            let peers: Vec<Arc<Peer>> = self
                .peers
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .by_tag
                .values()
                .cloned()
                .collect();
            for peer in peers {
                if lock(&peer.held)
                    .as_ref()
                    .is_some_and(|h| h.since.elapsed() > HOLD_AT_MOST)
                {
                    self.send_held(&peer);
                }
                let endpoint = peer.endpoint();
                let mut tunn = lock(&peer.tunn);
                if let TunnResult::WriteToNetwork(datagram) = tunn.update_timers(&mut out) {
                    self.send(datagram, endpoint);
                }
                if self.is_client {
                    // Not (or no longer) heard from: ask again, every second until a first
                    // session (the gateway may only just have learnt of this client), then
                    // every 5 s, WireGuard's own retry interval.
                    let established = tunn.time_since_last_handshake().is_some();
                    let silent = !established || lock(&peer.last_rx).elapsed() > SILENCE;
                    let every = if established {
                        Duration::from_secs(5)
                    } else {
                        Duration::from_secs(1)
                    };
                    let mut forced = lock(&peer.last_forced);
                    if silent && forced.elapsed() > every {
                        *forced = Instant::now();
                        // In the first round a handshake its first packet started is fresh:
                        // not sent twice.
                        if let TunnResult::WriteToNetwork(init) =
                            tunn.format_handshake_initiation(&mut out, !first_round)
                        {
                            self.send(init, endpoint);
                        }
                    }
                }
                // A client is up once its session is; at the gateway a peer is up from its
                // answered handshake until it has been silent for REJECT_AFTER_TIME
                // (keepalives come every 5 s).
                let established = if self.is_client {
                    tunn.time_since_last_handshake().is_some()
                } else {
                    peer.up.load(Ordering::SeqCst) && lock(&peer.last_rx).elapsed() < GONE
                };
                drop(tunn);
                if established != peer.up.load(Ordering::SeqCst) {
                    peer.up.store(established, Ordering::SeqCst);
                    if !established {
                        // Its port goes with it: a new session waits for a new one.
                        peer.ready.store(false, Ordering::SeqCst);
                    }
                    let (fqdn, tag) = (peer.fqdn.clone(), peer.tag);
                    (self.on_change)(if established {
                        Change::Up { fqdn, tag }
                    } else {
                        Change::Down { fqdn, tag }
                    });
                }
            }
            first_round = false;
        }
    }
}

/// The address a datagram socket for `endpoint`'s family binds to (any port).
pub fn unspecified_for(endpoint: SocketAddr) -> SocketAddr {
    match endpoint.ip() {
        IpAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        IpAddr::V6(_) => SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)),
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixDatagram;
    use std::sync::mpsc;

    use super::*;
    use crate::tunnel::keys;

    /// An engine on `at`, its changes, and its "TUN": one end of a datagram socket pair
    /// (packet boundaries kept, as a TUN keeps them).
    fn engine_at(
        is_client: bool,
        secret: StaticSecret,
        at: SocketAddr,
    ) -> (Arc<Engine>, mpsc::Receiver<Change>, UnixDatagram) {
        let (tun, other_end) = UnixDatagram::pair().unwrap();
        let (tx, rx) = mpsc::channel();
        let engine = Engine::new(
            UdpSocket::bind(at).unwrap(),
            File::from(OwnedFd::from(tun)),
            secret,
            is_client,
            Box::new(move |c| {
                let _ = tx.send(c);
            }),
        )
        .unwrap();
        (engine, rx, other_end)
    }

    fn loopback() -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
    }

    fn gateway() -> (Arc<Engine>, mpsc::Receiver<Change>, UnixDatagram) {
        engine_at(false, keys::generate(), loopback())
    }

    /// A packet as the client's TUN gives one (an IPv4 header to the gateway, no more).
    fn packet() -> [u8; 28] {
        let mut packet = [0u8; 28];
        packet[0] = 0x45;
        packet[16..20].copy_from_slice(&GATEWAY_INNER.octets());
        packet
    }

    fn stop(engine: &Engine, threads: Vec<JoinHandle<()>>) {
        engine.stop();
        for t in threads {
            t.join().unwrap();
        }
    }

    /// A client of `gateway` with `tag`: boringtun's own `Tunn`, driven by hand, and its
    /// socket. Its first handshake is sent `times` times (a client's timers and its first
    /// packet may each start one); returns once the gateway reports it up.
    fn client(
        gateway: &Engine,
        changes: &mpsc::Receiver<Change>,
        tag: u16,
        times: usize,
    ) -> (Tunn, UdpSocket) {
        let secret = keys::generate();
        gateway.add_peer(Peer::new(
            "c",
            tag,
            client_inner(tag),
            PublicKey::from(&secret),
            gateway.secret(),
            None,
        ));
        let mut tunn = Tunn::new(
            secret,
            PublicKey::from(gateway.secret()),
            None,
            None,
            1,
            None,
        );
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut buf = vec![0u8; 2048];
        for _ in 0..times {
            match tunn.format_handshake_initiation(&mut buf, true) {
                TunnResult::WriteToNetwork(init) => {
                    socket.send_to(init, gateway.local_addr().unwrap()).unwrap();
                }
                other => panic!("no handshake: {other:?}"),
            }
            // Its timestamp must be newer than the last one's to be taken.
            std::thread::sleep(Duration::from_millis(5));
        }
        let change = changes.recv_timeout(Duration::from_secs(5)).expect("Up");
        assert_eq!(
            change,
            Change::Up {
                fqdn: "c".into(),
                tag
            }
        );
        (tunn, socket)
    }

    /// Waits for the gateway's answer; true if it completes `tunn`'s latest handshake.
    fn answered(tunn: &mut Tunn, socket: &UdpSocket, within: Duration) -> bool {
        let mut buf = vec![0u8; 2048];
        let mut out = vec![0u8; 2048];
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(n) = socket.recv(&mut buf) {
                let _ = tunn.decapsulate(None, &buf[..n], &mut out);
                if tunn.time_since_last_handshake().is_some() {
                    return true;
                }
            }
        }
        false
    }

    #[test]
    fn a_new_client_is_answered_once_its_port_is_released_and_to_its_latest_handshake() {
        let (gateway, changes, _tun) = gateway();
        let threads = gateway.spawn().unwrap();
        let (mut tunn, socket) = client(&gateway, &changes, 7, 2);
        let mut buf = vec![0u8; 2048];
        assert!(
            socket.recv(&mut buf).is_err(),
            "answered before its port was released"
        );
        gateway.release(7);
        assert!(
            answered(&mut tunn, &socket, Duration::from_millis(300)),
            "released, but its latest handshake was not answered"
        );

        // Never released (its port could not be made): answered anyway, after the bound.
        let (mut tunn, socket) = client(&gateway, &changes, 8, 1);
        let held = Instant::now();
        assert!(answered(&mut tunn, &socket, Duration::from_secs(3)));
        assert!(
            held.elapsed() >= HOLD_AT_MOST - Duration::from_millis(50),
            "answered after {:?}, before the bound",
            held.elapsed()
        );
        stop(&gateway, threads);
    }

    #[test]
    fn a_restarted_gateway_asks_a_client_still_on_the_old_session_for_a_new_one() {
        let wait = Duration::from_secs(5);
        let secret = keys::generate();
        let (old, old_changes, _old_tun) = engine_at(false, secret.clone(), loopback());
        let at = old.local_addr().unwrap();
        let (client, client_changes, client_tun) = engine_at(true, keys::generate(), loopback());
        let tag = 9;
        let the_client = |gateway: &Engine| {
            gateway.add_peer(Peer::new(
                "c",
                tag,
                client_inner(tag),
                PublicKey::from(client.secret()),
                gateway.secret(),
                None,
            ))
        };
        the_client(&old);
        client.add_peer(Peer::new(
            "gateway",
            tag,
            GATEWAY_INNER,
            PublicKey::from(&secret),
            client.secret(),
            Some(at),
        ));
        let old_threads = old.spawn().unwrap();
        let client_threads = client.spawn().unwrap();
        old_changes.recv_timeout(wait).expect("Up at the gateway");
        old.release(tag);
        client_changes.recv_timeout(wait).expect("Up at the client");

        // The gateway restarts: the same key and port, no session.
        stop(&old, old_threads);
        drop(old);
        let (new, new_changes, _new_tun) = engine_at(false, secret, at);
        the_client(&new);
        let new_threads = new.spawn().unwrap();
        // The client sends on the session it had; the new gateway cannot read it, and asks.
        let sent = Instant::now();
        client_tun.send(&packet()).unwrap();
        let change = new_changes
            .recv_timeout(wait)
            .expect("Up at the new gateway");
        assert_eq!(
            change,
            Change::Up {
                fqdn: "c".into(),
                tag
            }
        );
        assert!(
            sent.elapsed() < SILENCE / 2,
            "a new session only after {:?}: the client's silence started it, not the gateway",
            sent.elapsed()
        );
        // Released, the client moves to the new session: its packets are read there.
        new.release(tag);
        let read = || {
            new.counters.rx_packets.load(Ordering::Relaxed)
                + new.counters.filtered.load(Ordering::Relaxed)
        };
        let deadline = Instant::now() + wait;
        while read() == 0 {
            assert!(
                Instant::now() < deadline,
                "the client never used the new session"
            );
            client_tun.send(&packet()).unwrap();
            std::thread::sleep(Duration::from_millis(50));
        }
        stop(&new, new_threads);
        stop(&client, client_threads);
    }
}
