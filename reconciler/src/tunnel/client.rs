//! The client end, `wepoq connect`: this host gets the client endpoint's interface (its MAC,
//! address, a route to the namespace via the side's router, OVN's DNS as resolver); its
//! frames travel in VXLAN inside WireGuard to the gateway agent.

use std::net::UdpSocket;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use super::credential::Credential;
use super::engine::{self, Engine, Peer};
use super::links::{self, VxlanSpec};
use super::tun;
use crate::attach::netns::{Netns, NsLink};

#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// The interface this host gets, `wq0`.
    pub ifname: String,
    /// Write `nameserver <gateway>` here (e.g. /etc/resolv.conf); the old file is put back
    /// on close.
    pub resolv_conf: Option<PathBuf>,
}

pub struct Connection {
    engine: Arc<Engine>,
    threads: Vec<JoinHandle<()>>,
    ifname: String,
    _private: Netns,
    resolv: Option<(PathBuf, Option<Vec<u8>>)>,
    up: tokio::sync::watch::Receiver<bool>,
}

impl Connection {
    /// Whether the WireGuard session with the gateway is established, as it changes.
    pub fn up(&self) -> tokio::sync::watch::Receiver<bool> {
        self.up.clone()
    }

    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Stops the engine and removes the interface; puts the resolver file back.
    pub async fn close(mut self) {
        self.engine.stop();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Ok(host) = NsLink::open(None).await
            && let Ok(Some(index)) = host.link_index(&self.ifname).await
        {
            let _ = host.delete_link(index).await;
        }
        if let Some((path, old)) = self.resolv.take() {
            let _ = match old {
                Some(bytes) => std::fs::write(&path, bytes),
                None => std::fs::remove_file(&path),
            };
        }
    }
}

/// Brings the interface up and starts the tunnel to `cred.endpoint`.
pub async fn connect(cred: &Credential, opts: &ConnectOptions) -> Result<Connection, String> {
    let mac = links::parse_mac(&cred.mac).ok_or_else(|| format!("bad MAC {}", cred.mac))?;
    let inner = engine::client_inner(cred.tag);
    let (private_ns, tun_file) =
        tun::private_namespace_with_tun("wqc0").map_err(|e| format!("tunnel namespace: {e}"))?;
    let private = NsLink::open(Some(&private_ns))
        .await
        .map_err(|e| format!("netlink in the tunnel namespace: {e}"))?;
    links::configure_tun(&private, "wqc0", inner, &[(engine::GATEWAY_INNER, 32)])
        .await
        .map_err(|e| e.to_string())?;
    let host_ns =
        Netns::open(std::path::Path::new("/proc/self/ns/net")).map_err(|e| e.to_string())?;
    let host = NsLink::open(None).await.map_err(|e| e.to_string())?;
    let spec = VxlanSpec {
        name: &opts.ifname,
        vni: u32::from(cred.tag),
        local: inner,
        remote: engine::GATEWAY_INNER,
        mac: Some(mac),
    };
    let index = links::add_vxlan(&private, &host, &host_ns, &spec)
        .await
        .map_err(|e| e.to_string())?;
    links::address_and_routes(
        &host,
        index,
        &opts.ifname,
        cred.ip,
        cred.prefix,
        cred.gateway,
        &cred.routes,
    )
    .await
    .map_err(|e| e.to_string())?;
    // ARP for the router is asked again every 100 ms rather than every second, should a
    // request be lost (the gateway answers only once this client's port exists, so the
    // first one normally is not).
    let _ = std::fs::write(
        format!("/proc/sys/net/ipv4/neigh/{}/retrans_time_ms", opts.ifname),
        "100",
    );
    let resolv = match &opts.resolv_conf {
        Some(path) => {
            let old = std::fs::read(path).ok();
            std::fs::write(
                path,
                format!(
                    "# written by wepoq connect {}\nnameserver {}\n",
                    cred.fqdn, cred.gateway
                ),
            )
            .map_err(|e| format!("{}: {e}", path.display()))?;
            Some((path.clone(), old))
        }
        None => None,
    };

    let socket =
        UdpSocket::bind(engine::unspecified_for(cred.endpoint)).map_err(|e| e.to_string())?;
    let (report, up) = tokio::sync::watch::channel(false);
    let engine = Engine::new(
        socket,
        tun_file,
        cred.private_key.clone(),
        true,
        Box::new(move |c| {
            let _ = report.send(matches!(c, engine::Change::Up { .. }));
        }),
    )
    .map_err(|e| e.to_string())?;
    engine.add_peer(Peer::new(
        "gateway",
        cred.tag,
        engine::GATEWAY_INNER,
        cred.gateway_key,
        engine.secret(),
        Some(cred.endpoint),
    ));
    let threads = engine.spawn().map_err(|e| e.to_string())?;
    Ok(Connection {
        engine,
        threads,
        ifname: opts.ifname.clone(),
        _private: private_ns,
        resolv,
        up,
    })
}
