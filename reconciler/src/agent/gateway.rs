//! The agent on a gateway chassis (`--gateway NAME`): keeps br-wepoq and the trunk veths in
//! line with the NB ([`crate::gateway::Gateway::sync`], every `interval` and after each
//! tunnel event), and with `--tunnel-listen` runs the tunnel gateway whose client netdevs
//! become access ports. Errors are logged and retried at the next sync; nothing stops it.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::attach::AttachConfig;
use crate::gateway::{Gateway, GatewayConfig};
use crate::ovsdb;
use crate::tunnel::gateway::{TunnelEvent, TunnelGateway, TunnelGatewayConfig};
use crate::tunnel::store::Store;

#[derive(Debug, Clone)]
pub struct GatewayAgentConfig {
    pub gateway: GatewayConfig,
    /// Serve external clients' tunnels on this UDP address.
    pub tunnel_listen: Option<SocketAddr>,
    pub store: Store,
    /// Access ports that are always there (netdev in OVS's namespace → client FQDN): clients
    /// on a plain link rather than a tunnel, and tests.
    pub static_access: Vec<(String, String)>,
}

/// What `run` needs started first (so a port that cannot be bound fails the agent's start).
pub struct Started {
    gateway: Gateway,
    static_access: Vec<(String, String)>,
    tunnel: Option<(Arc<TunnelGateway>, mpsc::UnboundedReceiver<TunnelEvent>)>,
}

pub async fn start(cfg: &GatewayAgentConfig, attach: &AttachConfig) -> Result<Started, String> {
    let gateway = Gateway::connect(attach, cfg.gateway.clone())
        .await
        .map_err(|e| format!("gateway {}: {e}", cfg.gateway.name))?;
    let tunnel = match cfg.tunnel_listen {
        Some(listen) => {
            let started = TunnelGateway::start(TunnelGatewayConfig {
                listen,
                store: cfg.store.clone(),
                host_netns: attach.ovs_netns.clone(),
            })
            .await
            .map_err(|e| format!("tunnel: {e}"))?;
            eprintln!(
                "wepoq agent: gateway {} serves external clients' tunnels on udp {}",
                cfg.gateway.name,
                started.0.listen_addr()
            );
            Some(started)
        }
        None => None,
    };
    Ok(Started {
        gateway,
        static_access: cfg.static_access.clone(),
        tunnel,
    })
}

pub async fn run(started: Started, nb: ovsdb::Client) {
    let Started {
        gateway,
        static_access,
        tunnel,
    } = started;
    // Kept by the gateway from now on (each sync adds them once their netdev and their
    // client in the NB exist); an error here is the first sync's, retried below.
    for (netdev, fqdn) in &static_access {
        if let Err(e) = gateway.ensure_access_port(&nb, netdev, fqdn).await {
            eprintln!("wepoq agent: gateway access port {netdev} for {fqdn}: {e} (retrying)");
        }
    }
    let (tunnel, mut events) = match tunnel {
        Some((t, e)) => (Some(t), Some(e)),
        None => (None, None),
    };
    let mut every = tokio::time::interval(gateway.config().interval);
    let mut last_error = String::new();
    loop {
        let result = tokio::select! {
            _ = every.tick() => gateway.sync(&nb).await,
            Some(event) = async { match events.as_mut() { Some(e) => e.recv().await, None => None } } => {
                eprintln!("wepoq agent: gateway: {event:?}");
                match event {
                    TunnelEvent::Up { netdev, fqdn, .. } => gateway.ensure_access_port(&nb, &netdev, &fqdn).await,
                    TunnelEvent::Down { netdev, .. } => gateway.remove_access_port(&nb, &netdev).await,
                }
            }
        };
        match result {
            Ok(report) => {
                if !report.added.is_empty() || !report.removed.is_empty() {
                    eprintln!(
                        "wepoq agent: gateway {}: {} trunk(s), {} client(s); added {:?}, removed {:?}",
                        gateway.config().name,
                        report.trunks,
                        report.clients,
                        report.added,
                        report.removed
                    );
                }
                last_error.clear();
            }
            Err(e) => {
                let text = e.to_string();
                if text != last_error {
                    eprintln!(
                        "wepoq agent: gateway {}: {text} (retrying)",
                        gateway.config().name
                    );
                    last_error = text;
                }
            }
        }
        if let Some(t) = &tunnel {
            t.set_clients(gateway.client_tags());
        }
    }
}
