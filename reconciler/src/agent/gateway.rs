//! The agent on a gateway chassis (`--gateway NAME`): keeps the trunks' bridges and patch
//! ports in line with the NB ([`crate::gateway::Gateway::sync`]: as soon as the NB's trunk
//! or child ports change, seen through a monitor; after each tunnel event; and every
//! `interval` as the safety net), and with `--tunnel-listen` runs the tunnel gateway whose client netdevs
//! become access ports. Errors are logged and retried at the next sync; nothing stops it.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::attach::AttachConfig;
use crate::gateway::{Gateway, GatewayConfig};
use crate::ovsdb::{self, Condition, Monitor, MonitorSpec, NB_DB, Value};
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

/// A monitor of this gateway's trunk ports and of every child port (`parent_name` set):
/// whatever the gateway derives from the NB. `None` if the NB refused it (the interval
/// then carries on alone, and it is asked again at the next tick).
async fn watch_trunks(nb: &ovsdb::Client, gateway: &str) -> Option<Monitor> {
    let spec = MonitorSpec::new().table_where(
        "Logical_Switch_Port",
        &[
            "name",
            "parent_name",
            "tag",
            "tag_request",
            "addresses",
            "external_ids",
        ],
        vec![
            Condition::includes(
                "external_ids",
                Value::map([(wepoq_compiler::emit::TRUNK_KEY, gateway)]),
            ),
            Condition::ne("parent_name", Value::empty()),
        ],
    );
    match nb.monitor(NB_DB, spec).await {
        Ok(m) => Some(m),
        Err(e) => {
            eprintln!("wepoq agent: gateway: watching the NB: {e} (syncing every interval)");
            None
        }
    }
}

impl Started {
    /// The tunnel's packet counters, when this gateway serves tunnels.
    pub fn tunnel_counters(&self) -> Option<Arc<crate::tunnel::engine::Counters>> {
        self.tunnel.as_ref().map(|(t, _)| t.counters())
    }
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
    let mut watch = watch_trunks(&nb, &gateway.config().name).await;
    let mut every = tokio::time::interval(gateway.config().interval);
    let mut last_error = String::new();
    loop {
        let result = tokio::select! {
            _ = every.tick() => {
                if watch.is_none() {
                    watch = watch_trunks(&nb, &gateway.config().name).await;
                }
                gateway.sync(&nb).await
            }
            changed = async { match watch.as_mut() { Some(m) => m.changed().await, None => std::future::pending().await } } => {
                if changed.is_err() {
                    watch = None;
                }
                gateway.sync(&nb).await
            }
            Some(event) = async { match events.as_mut() { Some(e) => e.recv().await, None => None } } => {
                eprintln!("wepoq agent: gateway: {event:?}");
                match event {
                    TunnelEvent::Up { netdev, fqdn, tag } => {
                        let made = gateway.ensure_access_port(&nb, &netdev, &fqdn).await;
                        // Answered now, so that its first frames find the port there.
                        if let Some(t) = &tunnel {
                            t.release(tag);
                        }
                        made
                    }
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
