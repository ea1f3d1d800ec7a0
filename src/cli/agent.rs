//! `wepoq agent`: the host agent. Keeps every running container labelled
//! `wepoq.net/endpoint=FQDN` attached to that endpoint's OVN logical port, until SIGINT or
//! SIGTERM (attachments stay when it stops), and serves stub containers' control sockets
//! with worker containers. Logic: `wepoq_reconciler::agent`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use wepoq_reconciler::agent::{self, AgentConfig, Metrics};
use wepoq_runtime::stub::admin;

use super::containers::{AttachArgs, DockerArgs};
use super::live::{self, DbArgs};

#[derive(Debug, Args)]
pub struct AgentArgs {
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub docker: DockerArgs,
    #[command(flatten)]
    pub attach: AttachArgs,
    /// Serve GET /metrics (Prometheus) and GET /healthz on this address
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,
    /// Containers attached at once
    #[arg(long, default_value_t = 8)]
    pub parallel: usize,
    /// Only containers that also carry this label, KEY=VALUE (several agents, each for its
    /// own OVS, on one Docker engine)
    #[arg(long, value_name = "KEY=VALUE")]
    pub only_label: Option<String>,
    /// The static wepoq-runtime binary mounted read-only into workers of unmodified images
    /// (runtime label "shim": "systemd" or "inetd")
    #[arg(long, value_name = "PATH")]
    pub shim_binary: Option<std::path::PathBuf>,
    /// This host is gateway NAME for external clients: it binds the trunk ports marked
    /// `wepoq-trunk=NAME` and keeps a --gateway-bridge per trunk
    #[arg(long, value_name = "NAME")]
    pub gateway: Option<String>,
    /// The bridges of external clients' access ports are named BASE-<4 hex digits>, one per
    /// trunk (namespace)
    #[arg(long, default_value = "br-wepoq", value_name = "BASE", value_parser = bridge_base)]
    pub gateway_bridge: String,
    /// How often the gateway compares the NB with its bridge
    #[arg(long, default_value = "2s", value_parser = live::parse_duration)]
    pub gateway_interval: Duration,
    /// Serve external clients' tunnels (WireGuard, UDP) on this address; keys in
    /// $WEPOQ_TUNNEL_STORE (default /var/lib/wepoq/tunnel)
    #[arg(long, value_name = "IP:PORT", requires = "gateway")]
    pub tunnel_listen: Option<SocketAddr>,
    /// An access port the gateway keeps on its bridge: the existing netdev NETDEV (in OVS's
    /// network namespace) carries external client FQDN, with the tag the NB gives it
    /// (repeatable; clients on a plain link rather than a tunnel, and tests)
    #[arg(long, value_name = "NETDEV=FQDN", value_parser = netdev_for_client, requires = "gateway")]
    pub gateway_access: Vec<(String, String)>,
}

fn bridge_base(text: &str) -> Result<String, String> {
    let max = wepoq_reconciler::gateway::MAX_BRIDGE_BASE;
    if text.is_empty() || text.len() > max {
        return Err(format!(
            "`{text}`: a bridge base name has 1 to {max} bytes (with `-` and 4 hex digits, \
             the bridge's name must fit the kernel's 15)"
        ));
    }
    Ok(text.to_owned())
}

fn netdev_for_client(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((netdev, fqdn)) if !netdev.is_empty() && !fqdn.is_empty() => {
            Ok((netdev.to_owned(), fqdn.to_owned()))
        }
        _ => Err(format!("`{text}` is not NETDEV=FQDN")),
    }
}

pub fn run(args: &AgentArgs) -> ExitCode {
    let Some(nb) = args.db.remotes_text() else {
        eprintln!("error: wepoq agent needs the NB: pass --db URL or set WEPOQ_DB (or OVN_NB_DB)");
        return ExitCode::FAILURE;
    };
    let nb_tls = match wepoq_reconciler::ovsdb::Remotes::parse(&nb).and_then(|r| args.db.tls(&r)) {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cfg = AgentConfig {
        docker: args.docker.docker.clone(),
        nb,
        nb_tls,
        nb_timeouts: args.db.timeouts(),
        attach: args.attach.config(),
        parallel: args.parallel,
        only_label: args.only_label.clone(),
        workers: Some(agent::workers::WorkersConfig {
            docker: args.docker.docker.clone(),
            run_dir: args.attach.run_dir.clone(),
            shim_binary: args.shim_binary.clone(),
            only_label: args.only_label.clone(),
        }),
        gateway: args
            .gateway
            .as_ref()
            .map(|name| agent::gateway::GatewayAgentConfig {
                gateway: wepoq_reconciler::gateway::GatewayConfig {
                    name: name.clone(),
                    bridge: args.gateway_bridge.clone(),
                    interval: args.gateway_interval,
                },
                tunnel_listen: args.tunnel_listen,
                store: wepoq_reconciler::tunnel::store::Store::from_env(),
                static_access: args.gateway_access.clone(),
            }),
    };
    live::runtime().block_on(async {
        let metrics = Arc::new(Metrics::default());
        if let Some(addr) = args.admin {
            let listener = match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("error: cannot listen on {addr} for --admin: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let m = metrics.clone();
            tokio::spawn(admin::serve_routes(
                listener,
                Arc::new(move |path: &str| match path {
                    "/metrics" => Some((200, m.render())),
                    "/healthz" if m.healthy() => Some((200, "ok\n".into())),
                    "/healthz" => Some((503, "docker or OVS not connected\n".into())),
                    _ => None,
                }),
            ));
        }
        let Some(shutdown) = live::stop_signal() else {
            return ExitCode::FAILURE;
        };
        eprintln!("wepoq agent: started");
        match agent::run(cfg, metrics, shutdown).await {
            Ok(()) => {
                eprintln!("wepoq agent: stopped (attachments left in place)");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
