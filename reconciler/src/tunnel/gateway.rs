//! The gateway end, run inside `wepoq agent --gateway NAME --tunnel-listen ADDR`: one UDP
//! port for every client; a client whose credential the store accepts and whose FQDN the
//! NB gives a tag on this gateway becomes a WireGuard peer; once its handshake completes it
//! gets a VXLAN netdev (VNI = its tag) in the host's (ovs-vswitchd's) namespace, reported as
//! [`TunnelEvent::Up`] for the caller to put on its trunk's bridge with that tag; the
//! handshake's answer waits for the caller's [`TunnelGateway::release`] (see
//! [`Engine::release`]). Revocation (its key deleted from the store) is picked up within
//! a second and ends the session.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use boringtun::x25519::PublicKey;

use tokio::sync::mpsc;

use super::engine::{self, Change, Engine, Peer};
use super::links::{self, VxlanSpec};
use super::store::Store;
use super::tun;
use crate::attach::netns::{Netns, NsLink};
use crate::gateway::access_ifname;

#[derive(Debug, Clone)]
pub struct TunnelGatewayConfig {
    /// The UDP address clients connect to (on the routed network).
    pub listen: SocketAddr,
    pub store: Store,
    /// Where client netdevs go: ovs-vswitchd's namespace (`None`: ours).
    pub host_netns: Option<PathBuf>,
}

/// A client's netdev appeared (put it on the bridge, then [`TunnelGateway::release`] the
/// client) or went away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelEvent {
    Up {
        netdev: String,
        fqdn: String,
        tag: u16,
    },
    Down {
        netdev: String,
        fqdn: String,
    },
}

/// The store's client keys as read: its change stamp then, when, and the keys.
type KeysRead = (SystemTime, Instant, BTreeMap<String, PublicKey>);

/// The store is read in full at least this often, whatever its change stamp says.
const REREAD: Duration = Duration::from_secs(10);

pub struct TunnelGateway {
    engine: Arc<Engine>,
    store: Store,
    /// Client FQDN → tag, from the NB ([`TunnelGateway::set_clients`]).
    tags: Mutex<BTreeMap<String, u16>>,
    /// The store's client keys as last read, with the store's change stamp then.
    keys: Mutex<Option<KeysRead>>,
    listen: SocketAddr,
}

impl TunnelGateway {
    /// Binds the UDP port, makes the private namespace and its TUN, and starts the engine.
    pub async fn start(
        cfg: TunnelGatewayConfig,
    ) -> Result<(Arc<TunnelGateway>, mpsc::UnboundedReceiver<TunnelEvent>), String> {
        let secret = cfg.store.gateway_secret()?;
        let host_ns = Netns::open(
            &cfg.host_netns
                .clone()
                .unwrap_or_else(|| "/proc/self/ns/net".into()),
        )
        .map_err(|e| format!("host namespace: {e}"))?;
        // The chassis' own network stack: where clients reach it and where OVS runs.
        let listen_at = cfg.listen;
        let socket = host_ns
            .run_inside(move || UdpSocket::bind(listen_at))
            .map_err(|e| format!("listen on {}: {e}", cfg.listen))?;
        let listen = socket.local_addr().map_err(|e| e.to_string())?;
        let (private_ns, tun_file) = tun::private_namespace_with_tun("wqg0")
            .map_err(|e| format!("tunnel namespace: {e}"))?;
        let private = NsLink::open(Some(&private_ns))
            .await
            .map_err(|e| format!("netlink in the tunnel namespace: {e}"))?;
        links::configure_tun(
            &private,
            "wqg0",
            engine::GATEWAY_INNER,
            &[engine::CLIENTS_INNER],
        )
        .await
        .map_err(|e| e.to_string())?;
        let host = NsLink::open(cfg.host_netns.as_ref().map(|_| &host_ns))
            .await
            .map_err(|e| format!("netlink in the host namespace: {e}"))?;

        let (changes_tx, mut changes) = mpsc::unbounded_channel();
        let engine = Engine::new(
            socket,
            tun_file,
            secret,
            false,
            Box::new(move |c| {
                let _ = changes_tx.send(c);
            }),
        )
        .map_err(|e| e.to_string())?;
        engine.spawn().map_err(|e| e.to_string())?;
        let gateway = Arc::new(TunnelGateway {
            engine,
            store: cfg.store.clone(),
            tags: Mutex::new(BTreeMap::new()),
            keys: Mutex::new(None),
            listen,
        });

        let (events_tx, events) = mpsc::unbounded_channel();
        // Devices follow sessions. The namespaces are held by this task for the gateway's life.
        tokio::spawn(async move {
            let _keep = &private_ns;
            while let Some(change) = changes.recv().await {
                let event = match change {
                    Change::Up { fqdn, tag } => {
                        let netdev = access_ifname(&fqdn);
                        let spec = VxlanSpec {
                            name: &netdev,
                            vni: u32::from(tag),
                            local: engine::GATEWAY_INNER,
                            remote: engine::client_inner(tag),
                            mac: None,
                        };
                        match links::add_vxlan(&private, &host, &host_ns, &spec).await {
                            Ok(_) => TunnelEvent::Up { netdev, fqdn, tag },
                            Err(e) => {
                                eprintln!("wepoq gateway: client {fqdn}: {e}");
                                continue;
                            }
                        }
                    }
                    Change::Down { fqdn, .. } => {
                        let netdev = access_ifname(&fqdn);
                        if let Ok(Some(index)) = host.link_index(&netdev).await {
                            let _ = host.delete_link(index).await;
                        }
                        TunnelEvent::Down { netdev, fqdn }
                    }
                };
                if events_tx.send(event).is_err() {
                    break;
                }
            }
        });
        // A handshake from a key not yet loaded: load the store now, not at the next second.
        let weak = Arc::downgrade(&gateway);
        gateway.engine.on_unknown_key(Box::new(move || {
            if let Some(g) = weak.upgrade() {
                g.reload();
            }
        }));
        let reloader = gateway.clone();
        tokio::spawn(async move {
            loop {
                reloader.reload();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Ok((gateway, events))
    }

    /// The client with `tag` can be answered: its port carries frames.
    pub fn release(&self, tag: u16) {
        self.engine.release(tag);
    }

    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// The clients the NB gives this gateway, with their tags. Applied at once.
    pub fn set_clients(&self, tags: BTreeMap<String, u16>) {
        *self.tags.lock().unwrap_or_else(|p| p.into_inner()) = tags;
        self.reload();
    }

    /// The store's client keys, read again only when its clients directory changed (or
    /// every [`REREAD`]): reload runs every second and after every sync, and a store of
    /// thousands of clients should not be read that often (nor a broken file logged).
    fn client_keys(&self) -> BTreeMap<String, PublicKey> {
        let stamp = self.store.clients_changed();
        let mut cache = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if let (Some(stamp), Some((seen, read_at, keys))) = (stamp, cache.as_ref())
            && stamp == *seen
            && read_at.elapsed() < REREAD
        {
            return keys.clone();
        }
        let (keys, problems) = self.store.clients();
        for p in problems {
            eprintln!("wepoq gateway: {p}");
        }
        // A stamp from the last moments may yet be shared by a change still to come (file
        // times tick coarsely): such a read is not trusted to stand, as git does with
        // racily clean files.
        let settled = |s: SystemTime| s.elapsed().is_ok_and(|age| age > Duration::from_secs(2));
        *cache = stamp
            .filter(|s| settled(*s))
            .map(|s| (s, Instant::now(), keys.clone()));
        keys
    }

    /// Peers = clients with both a key in the store and a tag in the NB.
    pub fn reload(&self) {
        let keys = self.client_keys();
        let tags = self.tags.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let wanted: BTreeMap<u16, (String, [u8; 32])> = keys
            .iter()
            .filter_map(|(fqdn, key)| Some((*tags.get(fqdn)?, (fqdn.clone(), *key.as_bytes()))))
            .collect();
        let have = self.engine.peer_list();
        for (fqdn, tag, key) in &have {
            if wanted.get(tag) != Some(&(fqdn.clone(), *key)) {
                self.engine.remove_peer(*tag);
            }
        }
        for (tag, (fqdn, key)) in wanted {
            if !have
                .iter()
                .any(|(f, t, k)| *t == tag && *f == fqdn && *k == key)
            {
                let public = PublicKey::from(key);
                self.engine.add_peer(Peer::new(
                    &fqdn,
                    tag,
                    engine::client_inner(tag),
                    public,
                    self.engine.secret(),
                    None,
                ));
            }
        }
    }

    pub fn counters(&self) -> Arc<engine::Counters> {
        self.engine.counters.clone()
    }
}

impl Drop for TunnelGateway {
    fn drop(&mut self) {
        self.engine.stop();
    }
}
